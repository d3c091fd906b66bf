"""Load benchmark of the JSON service: requests/s and p50/p99 latency.

    python benchmarks/serve_load.py --checkpoint LOGDIR [--url http://127.0.0.1:8000]
    python benchmarks/serve_load.py --synthetic   # trains a small model on synthetic data first

Without ``--url`` it starts ``python -m deepae_jax.serve --checkpoint LOGDIR --port 0`` itself and
stops it afterwards. ``--kind`` picks the requests: ``recommend`` (known users), ``new`` (new users
given by the ratings of training users), ``predict``, or ``mix`` (all three in turn). Each client
keeps one HTTP/1.1 connection open. Prints one human line and one JSON line.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import platform
import re
import select
import subprocess
import sys
import tempfile
import time
import urllib.parse

import numpy as np


def start_server(checkpoint: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "deepae_jax.serve", "--checkpoint", checkpoint,
                             "--port", "0", *extra], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if select.select([proc.stdout], [], [], 0.5)[0]:
            m = re.search(r"(http://[^\s]+:\d+)", proc.stdout.readline())
            if m:
                return proc, m.group(1)
    proc.kill()
    raise SystemExit("the service did not start")


def synthetic_checkpoint(root: str, n_users: int, n_items: int) -> str:
    from deepae_jax.training import trainer
    from deepae_jax.config import Config
    from deepae_jax.data.datasets import synthetic
    from deepae_jax.run.run_config import save_run_config
    spec = synthetic.SyntheticSpec(n_users=n_users, n_items=n_items, seed=0)
    synthetic.ensure_dataset(os.path.join(root, "train"), "", spec)
    cfg = Config(path_to_train_data=os.path.join(root, "train"), logdir=os.path.join(root, "run"),
                 hidden_layers=(128, 128), optimizer="adam", lr=0.001, batch_size=64,
                 num_epochs=2, progress=False)
    trainer.train_and_evaluate(cfg)
    save_run_config(cfg.logdir, cfg)
    return cfg.logdir


def make_bodies(checkpoint: str, train_data: str | None, kind: str, k: int, n: int
                ) -> list[tuple[str, bytes]]:
    """(path, JSON body) of ``n`` requests over the training users."""
    from deepae_jax.recommend import Recommender
    rec = Recommender.from_logdir(checkpoint, train_data)
    users = rec.user_ids
    if len(users) == 0:
        raise SystemExit("no training data: give --path_to_train_data (or use a run whose "
                         "logdir has config.json)")
    rng = np.random.default_rng(0)
    picked = users[rng.integers(0, len(users), n)]
    kinds = ["recommend", "new", "predict"] if kind == "mix" else [kind]
    out = []
    for j, u in enumerate(picked):
        what = kinds[j % len(kinds)]
        if what == "recommend":
            out.append(("/recommend", {"user": int(u), "k": k}))
        elif what == "predict":
            items = rec.item_ids[rng.integers(0, rec.n_items, k)]
            out.append(("/predict", {"user": int(u), "items": [int(i) for i in items]}))
        else:
            x = rec.training_vector(int(u))[0]
            cols = np.flatnonzero(x)
            out.append(("/recommend", {"k": k, "ratings": [
                {"item": int(rec.item_ids[c]), "rating": float(x[c])} for c in cols]}))
    return [(p, json.dumps(b).encode()) for p, b in out]


def run_load(url: str, bodies: list[tuple[str, bytes]], clients: int) -> dict:
    parsed = urllib.parse.urlparse(url)

    def client(c):
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        lat, errors = [], 0
        for path, body in bodies[c::clients]:
            t0 = time.perf_counter()
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            lat.append(time.perf_counter() - t0)
            errors += resp.status != 200
        conn.close()
        return lat, errors

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients)))
    elapsed = time.perf_counter() - t0
    lat = np.array([x for r in results for x in r[0]])
    return {"requests": len(lat), "clients": clients, "errors": sum(r[1] for r in results),
            "seconds": round(elapsed, 3), "requests_per_s": round(len(lat) / elapsed, 1),
            "p50_ms": round(1e3 * float(np.percentile(lat, 50)), 2),
            "p99_ms": round(1e3 * float(np.percentile(lat, 99)), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="the --logdir of a training run")
    parser.add_argument("--synthetic", action="store_true",
                        help="train a small model on synthetic data first (3,000 users)")
    parser.add_argument("--path_to_train_data", default=None,
                        help="the run's training ratings (default: from LOGDIR/config.json)")
    parser.add_argument("--url", help="a running service (default: start one)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=100, help="requests before measuring")
    parser.add_argument("--kind", default="mix", choices=["recommend", "new", "predict", "mix"])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--serve_args", default="", help="extra arguments for the service")
    args = parser.parse_args()
    tmp = None
    if args.synthetic and not args.checkpoint:
        tmp = tempfile.TemporaryDirectory()
        args.checkpoint = synthetic_checkpoint(tmp.name, 3000, 1000)
    if not args.checkpoint:
        parser.error("give --checkpoint LOGDIR or --synthetic")
    bodies = make_bodies(args.checkpoint, args.path_to_train_data, args.kind, args.k,
                         args.requests + args.warmup)
    proc = None
    try:
        if not args.url:
            extra = args.serve_args.split()
            if args.path_to_train_data:
                extra += ["--path_to_train_data", args.path_to_train_data]
            proc, args.url = start_server(args.checkpoint, extra)
        run_load(args.url, bodies[:args.warmup], args.clients)
        result = run_load(args.url, bodies[args.warmup:], args.clients)
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=30)
        if tmp:
            tmp.cleanup()
    result.update(kind=args.kind, k=args.k, machine=f"{platform.node()} "
                  f"({os.cpu_count()} CPUs, {platform.processor() or platform.machine()})")
    print(f"{result['requests']} {args.kind} requests from {args.clients} clients: "
          f"{result['requests_per_s']:.0f} req/s, p50 {result['p50_ms']:.1f} ms, "
          f"p99 {result['p99_ms']:.1f} ms, {result['errors']} errors")
    print(json.dumps(result))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
