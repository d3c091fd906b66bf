"""Fetches a GroupLens MovieLens archive, verifies its checksum, unpacks and converts it.

Usage (``deepae download --help`` lists every flag)::

    deepae download NAME [--cache_dir=DIR] [--base_url=URL] [--sha256=HEX]
        [--split=time70] [--seed=0] [--out_dir=DIR] [--no_convert]

NAME is one of 100k, 1m, 10m, 20m, 25m, 32m, latest-small. The archive is fetched from
``BASE_URL/<archive>`` (default https://files.grouplens.org/datasets/movielens/, or the
``DEEPAE_MOVIELENS_URL`` environment variable) into ``DIR`` (default ``$DEEPAE_CACHE`` or
``~/.cache/deepae_jax``), then unpacked there and converted with
:mod:`deepae_jax.data.datasets.movielens_convert` into ``DIR/<NAME>-<split>`` unless ``--out_dir``.

Checksums: the download's SHA-256 is checked against ``--sha256`` or the table below. The table's
entries are empty (None) where the value was not known when this was written (no internet access
then): the tool then prints the computed SHA-256 and says the archive could NOT be verified. A
mismatch deletes the download and fails. Every file is written under a temporary name and renamed
when complete, so a failed or corrupted download leaves nothing half-written.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from typing import Callable

from deepae_jax.data.datasets import movielens_convert
from deepae_jax.data.ratings import RatingsFormatError

DEFAULT_BASE_URL = "https://files.grouplens.org/datasets/movielens/"


@dataclasses.dataclass(frozen=True)
class Archive:
    """A GroupLens archive: its file name, the folder it unpacks to, its SHA-256 (None: unknown)."""

    file: str
    folder: str
    sha256: str | None = None


ARCHIVES: dict[str, Archive] = {
    "100k": Archive("ml-100k.zip", "ml-100k"),
    "1m": Archive("ml-1m.zip", "ml-1m"),
    "10m": Archive("ml-10m.zip", "ml-10M100K"),
    "20m": Archive("ml-20m.zip", "ml-20m"),
    "25m": Archive("ml-25m.zip", "ml-25m"),
    "32m": Archive("ml-32m.zip", "ml-32m"),
    "latest-small": Archive("ml-latest-small.zip", "ml-latest-small"),
}


class ChecksumError(RuntimeError):
    """The downloaded archive's SHA-256 differs from the expected one."""


def default_cache_dir() -> str:
    return os.environ.get("DEEPAE_CACHE", os.path.expanduser("~/.cache/deepae_jax"))


def archive_url(name: str, base_url: str | None = None) -> str:
    """The URL of archive NAME under ``base_url`` (or $DEEPAE_MOVIELENS_URL, or GroupLens)."""
    base = base_url or os.environ.get("DEEPAE_MOVIELENS_URL") or DEFAULT_BASE_URL
    return base.rstrip("/") + "/" + ARCHIVES[name].file


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(name: str, cache_dir: str, base_url: str | None = None, sha256: str | None = None,
          log: Callable[[str], None] | None = None) -> str:
    """Downloads archive NAME into ``cache_dir`` (or reuses a verified copy); returns its path.

    Raises :class:`ChecksumError` (and deletes the download) when the SHA-256 differs from
    ``sha256`` or the table entry.
    """
    if name not in ARCHIVES:
        raise ValueError(f"unknown data set {name!r}; choose from {list(ARCHIVES)}")
    log = log or logging.getLogger("deepae_jax").info
    expected = (sha256 or ARCHIVES[name].sha256 or "").lower() or None
    url = archive_url(name, base_url)
    final = os.path.join(cache_dir, ARCHIVES[name].file)
    os.makedirs(cache_dir, exist_ok=True)
    if os.path.isfile(final) and expected and sha256_of(final) == expected:
        log(f"{final}: cached copy, sha256 verified")
        return final
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{ARCHIVES[name].file}.", suffix=".part")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                h.update(block)
                out.write(block)
        got = h.hexdigest()
        if expected and got != expected:
            raise ChecksumError(f"{url}: sha256 mismatch: expected {expected}, got {got}; the "
                                "download was deleted (corrupted or a different file)")
        os.replace(tmp, final)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if expected:
        log(f"{url}: sha256 {got} verified")
    else:
        log(f"{url}: sha256 {got} -- no known checksum for '{name}', so the archive could NOT be "
            "verified (pass --sha256 to check it)")
    return final


def unpack(archive: str, cache_dir: str, folder: str) -> str:
    """Unpacks ``archive`` into ``cache_dir/folder`` (staged, then renamed); returns that path."""
    target = os.path.join(cache_dir, folder)
    tmp = tempfile.mkdtemp(dir=cache_dir, prefix=f".{folder}.unpack-")
    try:
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():
                parts = member.replace("\\", "/").split("/")
                if member.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
                    raise RatingsFormatError(f"{archive}: unsafe path {member!r} in archive")
            z.extractall(tmp)
        inner = os.path.join(tmp, folder)
        if not os.path.isdir(inner):
            raise RatingsFormatError(f"{archive}: expected a top-level folder {folder!r}")
        if os.path.exists(target):
            shutil.rmtree(target)
        os.rename(inner, target)
    except zipfile.BadZipFile as e:
        raise RatingsFormatError(f"{archive}: not a valid zip archive ({e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def download(name: str, cache_dir: str | None = None, base_url: str | None = None,
             sha256: str | None = None, split: str | None = "time70", seed: int = 0,
             out_dir: str | None = None, log: Callable[[str], None] | None = None) -> str:
    """Fetch, verify, unpack and (when ``split``) convert; returns the output or unpacked folder."""
    log = log or logging.getLogger("deepae_jax").info
    cache_dir = cache_dir or default_cache_dir()
    archive = fetch(name, cache_dir, base_url, sha256, log)
    folder = unpack(archive, cache_dir, ARCHIVES[name].folder)
    log(f"unpacked into {folder}")
    if not split:
        return folder
    out_dir = out_dir or os.path.join(cache_dir, f"{ARCHIVES[name].folder}-{split}")
    table = movielens_convert.convert(folder, out_dir, split, seed, overwrite=True)
    log(f"converted ({split}) into {out_dir}\n{table}")
    return out_dir


if __name__ == "__main__":  # the command line lives in deepae_jax.cli
    from deepae_jax.cli import data as cli_data
    sys.exit(cli_data.main(cli_data.DOWNLOAD))
