"""The MovieLens downloader against a local HTTP server (127.0.0.1, free port) started here."""
from __future__ import annotations

import functools
import hashlib
import http.server
import os
import threading
import zipfile

import pytest

from deepae_jax.data.datasets import download
from deepae_jax.data.ratings import RatingMatrix
from deepae_jax.cli import data as cli_data

def download_main(argv):
    """``deepae download`` in process (the command line of :mod:`download`)."""
    return cli_data.main(cli_data.DOWNLOAD, argv)


U_DATA = "".join(f"{u}\t{i}\t{(u * i) % 5 + 1}\t{1000 + 7 * i + u}\n"
                 for u in range(1, 21) for i in range(1, 16) if (u + i) % 3)


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www on http://127.0.0.1:<free port>/ holding a small ml-100k.zip."""
    www = tmp_path / "www"
    www.mkdir()
    with zipfile.ZipFile(www / "ml-100k.zip", "w") as z:
        z.writestr("ml-100k/u.data", U_DATA)
        z.writestr("ml-100k/README", "test archive\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    sha = hashlib.sha256((www / "ml-100k.zip").read_bytes()).hexdigest()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", sha
    httpd.shutdown()
    httpd.server_close()


def test_download_verify_unpack_convert(server, tmp_path, capsys):
    url, sha = server
    cache = tmp_path / "cache"
    assert download_main(["100k", "--cache_dir", str(cache), "--base_url", url,
                          "--sha256", sha, "--split", "random90"]) == 0
    assert f"sha256 {sha} verified" in capsys.readouterr().out
    out = cache / "ml-100k-random90"
    n = U_DATA.count("\n")
    train_part = n - round(0.1 * n)  # 90% train, of which 10% become VALID
    assert RatingMatrix.load(str(out / "ML_TRAIN.npz")).nnz == train_part - round(0.1 * train_part)
    assert RatingMatrix.load(str(out / "ML_TEST.npz")).nnz == round(0.1 * n)
    assert (cache / "ml-100k" / "u.data").read_text() == U_DATA
    assert not [f for f in os.listdir(cache) if f.startswith(".")]


def test_unknown_checksum_is_reported_not_verified(server, tmp_path, caplog, monkeypatch):
    url, sha = server
    monkeypatch.setenv("DEEPAE_MOVIELENS_URL", url)  # the env override of the base URL
    with caplog.at_level("INFO", logger="deepae_jax"):  # the library logs, the CLI prints
        folder = download.download("100k", str(tmp_path / "c"), split=None)
    out = caplog.text
    assert f"sha256 {sha}" in out and "could NOT be verified" in out
    assert os.path.isfile(os.path.join(folder, "u.data"))


def test_corrupted_download_fails_and_leaves_nothing(server, tmp_path, capsys):
    url, sha = server
    cache = tmp_path / "cache"
    wrong = "0" * 64
    with pytest.raises(download.ChecksumError, match=f"expected {wrong}, got {sha}"):
        download.fetch("100k", str(cache), url, wrong, log=lambda *_: None)
    assert os.listdir(cache) == []
    assert download_main(["100k", "--cache_dir", str(cache), "--base_url", url,
                          "--sha256", wrong]) == 1
    assert "sha256 mismatch" in capsys.readouterr().err
    assert os.listdir(cache) == []


def test_missing_archive_fails_cleanly(server, tmp_path, capsys):
    url, _ = server
    cache = tmp_path / "cache"
    assert download_main(["1m", "--cache_dir", str(cache), "--base_url", url]) == 1
    assert "404" in capsys.readouterr().err
    assert os.listdir(cache) == []


def test_corrupted_zip_fails_and_leaves_no_unpacked_folder(server, tmp_path):
    url, _ = server
    cache = tmp_path / "cache"
    cache.mkdir()
    bad = cache / "ml-100k.zip"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(download.RatingsFormatError, match="not a valid zip"):
        download.unpack(str(bad), str(cache), "ml-100k")
    assert sorted(os.listdir(cache)) == ["ml-100k.zip"]
