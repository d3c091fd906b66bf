"""The JSON service (python -m deepae_jax.serve): good and bad requests, and a bounded load test."""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import http.client
import importlib.util
import json
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from deepae_jax.recommend import Recommender
from deepae_jax.run.run_config import save_run_config
from conftest import TINY_SPEC as SPEC

MISSING = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"the serve extra is not installed "
                                f"(missing {', '.join(MISSING)}): pip install 'deepae_jax[serve]'")



@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    root, cfg = tiny_model
    logdir = tmp_path_factory.mktemp("serve") / "run"
    shutil.copytree(cfg.logdir, logdir)
    cfg = dataclasses.replace(cfg, logdir=str(logdir))
    save_run_config(cfg.logdir, cfg)  # the service finds the training data through config.json
    return cfg


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    """The service on 127.0.0.1 and a free port (--port 0: the OS picks; the service prints it)."""
    log = open(tmp_path_factory.mktemp("log") / "stderr.txt", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "deepae_jax.serve", "--checkpoint",
                             trained.logdir, "--port", "0", "--max_body_bytes", "20000"],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    port, deadline = None, time.time() + 90
    while port is None and time.time() < deadline and proc.poll() is None:
        if select.select([proc.stdout], [], [], 0.5)[0]:
            m = re.search(r"http://127\.0\.0\.1:(\d+)", proc.stdout.readline())
            port = int(m.group(1)) if m else None
    if port is None:
        proc.kill()
        log.seek(0)
        pytest.fail(f"the service did not start: {log.read()[-3000:]}")
    yield proc, port
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture(scope="module")
def rec(trained):
    return Recommender.from_logdir(trained.logdir, batch_size=1)  # the service's default


def request(port, method, path, body=None, headers=None, conn=None):
    """(status, parsed JSON) of one request; ``body``: an object (sent as JSON) or raw bytes."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    if isinstance(body, (dict, list)):
        body = json.dumps(body)  # bytes, str or an iterator of chunks go as they are
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    try:
        conn.request(method, path, body=body, headers=hdrs,
                     encode_chunked="Transfer-Encoding" in hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data)
    finally:
        if own:
            conn.close()


def test_healthz(server, rec):
    _, port = server
    status, body = request(port, "GET", "/healthz")
    assert status == 200 and body["status"] == "ok"
    assert body["users"] == SPEC.n_users and body["items"] == rec.n_items
    assert body["rating_range"] == [1.0, 5.0]
    assert body["major"] == "users" and body["new_users"] is True
    assert body["ids"] == {"user": "int", "item": "int"}


def test_recommend_known_and_new_user_and_predict(server, rec):
    _, port = server
    user = int(rec.user_ids[7])
    status, body = request(port, "POST", "/recommend", {"user": user, "k": 4})
    assert status == 200 and body["user"] == user and body["k"] == 4
    expected = rec.recommend_users([user], 4).for_user(0)
    assert [r["item"] for r in body["recommendations"]] == [i for i, _ in expected]
    np.testing.assert_allclose([r["rating"] for r in body["recommendations"]],
                               [s for _, s in expected], atol=1e-6)

    # a training user's ratings sent as a new user: the same recommendations
    x = rec.training_vector(user)[0]
    cols = np.flatnonzero(x)
    ratings = [{"item": int(rec.item_ids[c]), "rating": float(x[c])} for c in cols]
    status, new = request(port, "POST", "/recommend", {"ratings": ratings, "k": 4})
    assert status == 200 and new["user"] is None
    assert new["recommendations"] == body["recommendations"]
    assert not {r["item"] for r in new["recommendations"]} & {r["item"] for r in ratings}

    items = [int(i) for i in rec.item_ids[[0, 5, 5, 39]]]
    status, pred = request(port, "POST", "/predict", {"user": user, "items": items})
    assert status == 200 and [p["item"] for p in pred["predictions"]] == items
    out = rec.predict_dense(rec.training_vector(user))[0, rec.item_columns(items)]
    np.testing.assert_allclose([p["rating"] for p in pred["predictions"]], out, atol=1e-6)
    status, default_k = request(port, "POST", "/recommend", {"user": user})
    assert status == 200 and len(default_k["recommendations"]) == 10


BAD = [
    ("POST", "/recommend", b'{"user": 1,', {}, 400, "malformed JSON"),
    ("POST", "/recommend", b"\xff\xfe not json", {}, 400, "malformed JSON"),
    ("POST", "/recommend", {"user": 123456789}, {}, 404, "unknown user"),
    ("POST", "/recommend", {"user": "1"}, {}, 422,
     "user: this model's user ids are integers: send 1 (a JSON number), not the string"),
    ("POST", "/recommend", {"user": 2.0}, {}, 422, "user: an id must be a JSON integer or "
     "string, got a float"),
    ("POST", "/recommend", {"user": False}, {}, 422, "got a boolean"),
    ("POST", "/recommend", {"user": ""}, {}, 422, "must not be empty"),
    ("POST", "/recommend", {"ratings": [{"item": "1", "rating": 4}]}, {}, 422,
     "ratings.0.item: this model's item ids are integers"),
    ("POST", "/predict", {"user": 1, "items": [1, 2.5]}, {}, 422, "items.1: an id must be"),
    ("POST", "/recommend", {"user": 2 ** 70}, {}, 422, "user"),
    ("POST", "/recommend", {"user": None, "k": 3}, {}, 422, "exactly one"),
    ("POST", "/recommend", {"user": 1, "ratings": []}, {}, 422, "exactly one"),
    ("POST", "/recommend", {"user": 1, "k": 0}, {}, 422, "out of range"),
    ("POST", "/recommend", {"user": 1, "k": 100000}, {}, 422, "out of range"),
    ("POST", "/recommend", {"user": 1, "k": 2.5}, {}, 422, "k"),
    ("POST", "/recommend", {"ratings": [{"item": 987654, "rating": 4}]}, {}, 422,
     "unknown item id(s): 987654"),
    ("POST", "/recommend", {"ratings": [{"item": 1, "rating": 0}]}, {}, 422, "non-zero"),
    ("POST", "/recommend", b'{"ratings": [{"item": 1, "rating": NaN}]}', {}, 422, "finite"),
    ("POST", "/recommend", {"ratings": [{"item": 1, "rating": 4}, {"item": 1, "rating": 2}]},
     {}, 422, "more than once"),
    ("POST", "/recommend", {"ratings": [{"item": 1}]}, {}, 422, "rating"),
    ("POST", "/recommend", {"ratings": [{"item": 1, "rating": "5"}]}, {}, 422, "valid number"),
    ("POST", "/recommend", {"ratings": [{"item": 1, "rating": True}]}, {}, 422, "valid number"),
    ("POST", "/recommend", {"ratings": [{"item": 1, "rating": 3e38}]}, {}, 422,
     "outside the model's rating scale 1..5"),
    ("POST", "/predict", {"ratings": [{"item": 1, "rating": -1e30}], "items": [1]}, {}, 422,
     "outside the model's rating scale 1..5"),
    ("POST", "/recommend", [1, 2], {}, 422, "JSON object"),
    ("POST", "/recommend", b'{"user": 1}', {"Content-Type": "text/plain"}, 422, "JSON object"),
    ("POST", "/predict", {"user": 1, "items": [1, 987654]}, {}, 422, "987654"),
    ("POST", "/predict", {"user": 1, "items": []}, {}, 422, "items"),
    ("POST", "/predict", {"user": 1}, {}, 422, "items"),
    ("POST", "/recommend", {"user": 1, "pad": "x" * 30000}, {}, 413, "limit"),
    ("POST", "/recommend", iter([b'{"user": 1, "pad": "', b"x" * 30000, b'"}']),
     {"Transfer-Encoding": "chunked"}, 413, "limit"),
    ("GET", "/recommend", None, {}, 405, ""),
    ("GET", "/nope", None, {}, 404, "no such path"),
]


@pytest.mark.parametrize("method,path,body,headers,status,message", BAD,
                         ids=[f"{i}-{b[4]}" for i, b in enumerate(BAD)])
def test_bad_requests_get_4xx_json_and_the_service_goes_on(server, rec, method, path, body,
                                                          headers, status, message):
    proc, port = server
    if isinstance(body, dict) and body.get("user") == 1:  # a real user id
        body = {**body, "user": int(rec.user_ids[0])}
    got, answer = request(port, method, path, body, headers)
    assert got == status, answer
    assert isinstance(answer.get("error"), str) and message in answer["error"]
    assert proc.poll() is None
    assert request(port, "GET", "/healthz")[0] == 200


def test_load_2000_requests_from_8_clients(server, rec):
    """Bounded load: every answer is a 200 with the right content."""
    _, port = server
    users = [int(u) for u in rec.user_ids]
    expected = {u: [i for i, _ in rec.recommend_users([u], 5).for_user(0)] for u in users}
    total, clients = 2000, 8

    def client(c):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        wrong, latencies = [], []
        try:
            for j in range(c, total, clients):
                u = users[j % len(users)]
                t0 = time.perf_counter()
                if j % 4 == 3:
                    status, body = request(port, "POST", "/predict",
                                           {"user": u, "items": expected[u][:2]}, conn=conn)
                    got = [p["item"] for p in body.get("predictions", [])]
                    ok = status == 200 and got == expected[u][:2]
                else:
                    status, body = request(port, "POST", "/recommend", {"user": u, "k": 5},
                                           conn=conn)
                    got = [r["item"] for r in body.get("recommendations", [])]
                    ok = status == 200 and got == expected[u]
                latencies.append(time.perf_counter() - t0)
                if not ok:
                    wrong.append((j, status, body))
        finally:
            conn.close()
        return wrong, latencies

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients)))
    elapsed = time.perf_counter() - t0
    wrong = [w for r in results for w in r[0]]
    latencies = np.array([x for r in results for x in r[1]])
    assert len(latencies) == total and not wrong, wrong[:3]
    print(f"\n{total} requests, {clients} clients: {total / elapsed:.0f} req/s, "
          f"p50 {1e3 * np.percentile(latencies, 50):.1f} ms, "
          f"p99 {1e3 * np.percentile(latencies, 99):.1f} ms")


@contextlib.contextmanager
def app_server(rec):
    """create_app(rec) served by uvicorn in a thread on a free port (models built in the test)."""
    import uvicorn
    from deepae_jax.serve.app import create_app
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(create_app(rec), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and thread.is_alive() and time.time() < deadline:
        time.sleep(0.02)
    assert server.started, "the in-process service did not start"
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def small_recommender(triples, major="users"):
    """A Recommender over ``triples`` with an untrained network (the ids are what matter)."""
    import jax
    from deepae_jax.core import model
    from deepae_jax.data import ratings
    train = ratings.build_matrix(triples, major)
    cfg = model.ModelConfig(layer_sizes=(len(train.col_ids), 3), activation="selu")
    params = model.init(jax.random.PRNGKey(0), cfg.layer_sizes)
    item_ids = train.col_ids if major == "users" else train.row_ids
    return Recommender(params, cfg, item_ids, train, batch_size=2, major=major,
                       rating_range=(1.0, 5.0))


BIG = "12345678901234567890"  # beyond int64: the readers keep such ids as strings


def test_string_ids_in_and_out():
    from deepae_jax.data.ratings import Triples
    t = Triples(np.array(["u_1", "u_1", "u_2", "u_2", "u_3", "u_4"]),
                np.array(["a", "b", "c", BIG, "a", "d"]),
                np.array([4, 2, 5, 3, 1, 4], np.float32))
    rec = small_recommender(t)
    with app_server(rec) as port:
        assert request(port, "GET", "/healthz")[1]["ids"] == {"user": "str", "item": "str"}
        status, body = request(port, "POST", "/recommend", {"user": "u_1", "k": 3})
        assert status == 200 and body["user"] == "u_1", body
        expected = rec.recommend_users(np.array(["u_1"]), 3).for_user(0)
        assert [(r["item"], r["rating"]) for r in body["recommendations"]] == expected
        assert all(isinstance(r["item"], str) for r in body["recommendations"])

        status, new = request(port, "POST", "/recommend",
                              {"ratings": [{"item": BIG, "rating": 5}], "k": 2})
        assert status == 200 and new["user"] is None
        expected = rec.recommend_vector(rec.vector([BIG], [5.0]), 2)
        assert [(r["item"], r["rating"]) for r in new["recommendations"]] == expected
        assert BIG not in [r["item"] for r in new["recommendations"]]

        status, pred = request(port, "POST", "/predict", {"user": "u_2", "items": [BIG, "a"]})
        assert status == 200 and [p["item"] for p in pred["predictions"]] == [BIG, "a"]
        scores = rec.user_scores(np.array(["u_2"]))[0, rec.item_columns([BIG, "a"])]
        np.testing.assert_allclose([p["rating"] for p in pred["predictions"]], scores)

        for body, status, needle in [
                ({"user": 17}, 422, 'user: this model\'s user ids are strings: send "17"'),
                ({"ratings": [{"item": 5, "rating": 4}]}, 422,
                 "ratings.0.item: this model's item ids are strings"),
                ({"user": "u_1", "items": ["a", 12345678901234567890]}, 422,
                 "outside the 64-bit range"),
                ({"user": 1.5}, 422, "got a float"),
                ({"user": "u_9"}, 404, "unknown user id(s): u_9"),
                ({"user": "u" * 5000}, 404, "unknown user id(s): \"uuuu"),
                ({"user": "u_1", "items": ["zz"]}, 422, "unknown item id(s): zz")]:
            path, body = ("/predict", body) if "items" in body else ("/recommend",
                                                                     {**body, "k": 2})
            got, answer = request(port, "POST", path, body)
            assert got == status and needle in answer["error"], answer
            assert len(answer["error"]) < 300


def test_item_based_model_serves_training_users_and_refuses_new_ones():
    from deepae_jax.data.ratings import Triples
    t = Triples(np.array([1, 1, 2, 3, 3, 4, 4], np.int64), np.array(list("xyxyzzw")),
                np.array([4, 2, 5, 3, 1, 4, 2], np.float32))
    rec = small_recommender(t, major="items")
    with app_server(rec) as port:
        health = request(port, "GET", "/healthz")[1]
        assert (health["major"], health["new_users"], health["users"]) == ("items", False, 4)
        assert health["ids"] == {"user": "int", "item": "str"}
        status, body = request(port, "POST", "/recommend", {"user": 3, "k": 2})
        assert status == 200, body
        expected = rec.recommend_users(np.array([3]), 2).for_user(0)
        assert [(r["item"], r["rating"]) for r in body["recommendations"]] == expected
        status, pred = request(port, "POST", "/predict", {"user": 1, "items": ["z", "w"]})
        assert status == 200, pred
        scores = rec.user_scores(np.array([1]))[0, rec.item_columns(["z", "w"])]
        np.testing.assert_allclose([p["rating"] for p in pred["predictions"]], scores)
        for path, extra in (("/recommend", {"k": 2}), ("/predict", {"items": ["x"]})):
            status, err = request(port, "POST", path,
                                  {"ratings": [{"item": "x", "rating": 4}], **extra})
            assert status == 422 and "item-based model (--major=items)" in err["error"]
        assert request(port, "POST", "/recommend", {"user": 9, "k": 2})[0] == 404


@pytest.mark.parametrize("argv,needle", [
    ([], "--checkpoint='': required"),
    (["--checkpoint=x", "--port=70000"], "--port=70000: must be in 0..65535"),
    (["--checkpoint=x", "--column_order=a,b,c"], "--column_order='a,b,c': choose one of"),
    (["--checkpoint=x", "--log_level=loud"], "--log_level='loud': choose one of"),
    (["--checkpoint=x", "--max_k=0"], "--max_k=0: must be >= 1"),
    (["--checkpoint", "x", "--port", "many"], "flag --port=many"),
    (["--checkpoint=x", "--prot=1"], "Unknown command line flag 'prot'"),
])
def test_bad_flags_are_one_error_line_naming_the_flag(argv, needle, capsys):
    from deepae_jax.cli import serve as serve_cli
    assert serve_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err


def test_help_lists_the_flags_generated_from_serve_config():
    from deepae_jax.serve.app import ServeConfig
    proc = subprocess.run([sys.executable, "-m", "deepae_jax", "serve", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for f in dataclasses.fields(ServeConfig):
        assert f"--{f.name}: " in proc.stdout, f.name
    assert "--mode" not in proc.stdout


def test_flags_from_a_flagfile(tmp_path, capsys):
    from deepae_jax.cli import serve as serve_cli
    path = tmp_path / "app.flags"
    path.write_text(f"--checkpoint={tmp_path / 'no_run'}\n--port=0\n--max_k=5\n")
    assert serve_cli.main([f"--flagfile={path}"]) == 2  # parsed, validated, then the run is missing
    err = capsys.readouterr().err
    assert err.startswith("error: no checkpoint in") and "no_run" in err and err.count("\n") == 1


def test_nul_surrogate_and_empty_ratings_are_refused_by_name():
    """Class 8: "u_1\\u0000" is not "u_1"; a lone surrogate is a 422, not a 500; an empty
    ratings list says so."""
    from deepae_jax.data.ratings import Triples
    t = Triples(np.array(["u_1", "u_1", "u_2"]), np.array(["a", "b", "c"]),
                np.array([4, 2, 5], np.float32))
    with app_server(small_recommender(t)) as port:
        for raw, needle in [
                (b'{"user": "u_1\\u0000", "k": 2}', "user: id \"u_1\\u0000\" holds a NUL"),
                (b'{"user": "\\ud800", "k": 2}', "not valid Unicode"),
                (b'{"ratings": [{"item": "a\\u0000", "rating": 4}]}', "holds a NUL"),
                (b'{"ratings": [{"item": "\\udfff", "rating": 4}]}', "not valid Unicode"),
                (b'{"ratings": [], "k": 2}', "ratings: the list is empty")]:
            got, answer = request(port, "POST", "/recommend", raw)
            assert got == 422 and needle in answer["error"], (raw, answer)
        got, answer = request(port, "POST", "/predict", b'{"ratings": [], "items": ["a"]}')
        assert got == 422 and "the list is empty" in answer["error"]
        assert request(port, "GET", "/healthz")[0] == 200


@contextlib.contextmanager
def guarded_server(header_timeout=0.5, max_connections=1000, body_timeout=30.0):
    """A trivial app behind the service's uvicorn settings (serve.guard), on 127.0.0.1."""
    import uvicorn
    from fastapi import FastAPI
    from starlette.responses import PlainTextResponse
    from deepae_jax.serve import guard
    from deepae_jax.serve.app import _BodyLimit
    app = FastAPI()
    app.add_middleware(_BodyLimit, max_bytes=1 << 20, timeout=body_timeout)  # as create_app

    @app.get("/")
    def hello():
        return "ok"

    async def echo(request):  # a Starlette route: the request object, no annotations needed
        return PlainTextResponse(str(len(await request.body())))
    app.router.add_route("/", echo, methods=["POST"])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(guard.uvicorn_config(app, "critical", header_timeout,
                                                 max_connections, 16 * 1024))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and thread.is_alive() and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def closed_within(conn: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing ``conn`` within ``seconds``; None if still open."""
    conn.settimeout(seconds)
    data = b""
    try:
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                return data
            data += chunk
    except socket.timeout:
        return None


def test_slow_headers_are_cut_off_and_good_clients_still_served():
    """Class 8: a client that never finishes its headers (or sends none) loses its connection
    after --header_timeout; a complete request is answered."""
    with guarded_server(header_timeout=0.5) as port:
        silent = socket.create_connection(("127.0.0.1", port), timeout=5)
        slow = socket.create_connection(("127.0.0.1", port), timeout=5)
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        started = time.time()
        assert closed_within(silent, 5) == b"" and closed_within(slow, 5) == b""
        assert time.time() - started < 4
        good = socket.create_connection(("127.0.0.1", port), timeout=5)
        good.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert good.recv(4096).startswith(b"HTTP/1.1 200")
        for s in (silent, slow, good):
            s.close()


def test_slow_body_gets_408_and_connections_are_capped():
    with guarded_server(body_timeout=0.5, max_connections=2) as port:
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12")
        started = time.time()
        answer = closed_within(conn, 5) or b""
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"connection: close" in answer.lower() and time.time() - started < 4  # not kept
        conn.close()
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", port), timeout=5)
        extra.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert extra.recv(4096).startswith(b"HTTP/1.1 503")
        for s in held + [extra]:
            s.close()
