"""Times the Netflix conversion and the loading of a converted TRAIN split; prints peak memory.

Usage (after ``benchmarks/make_netflix_like.py RAW_DIR [--scale S]``)::

    python benchmarks/convert_speed.py RAW_DIR OUT_DIR [--splits NF,N3M,N6M,N1Y] [--no_text]

Runs ``python -m deepae_jax.data.datasets.netflix_convert RAW_DIR OUT_DIR --overwrite`` in a child process
(wall time, peak RSS of the child), then loads ``OUT_DIR/NF_TRAIN.npz`` the way the trainer does
(``ratings.load_matrix``) in a fresh child process (wall time of the load, peak RSS).
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time

LOAD = """
import resource, sys, time
t = time.perf_counter()
from deepae_jax.data import ratings
m = ratings.load_matrix(sys.argv[1])
dt = time.perf_counter() - t
print(f"{dt:.2f} {m.shape[0]} {m.shape[1]} {m.nnz} "
      f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f}")
"""


def child(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS GiB, stdout) of a child process; raises when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 2**20
    return wall, peak, r.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("raw_dir")
    p.add_argument("out_dir")
    p.add_argument("--splits", default="NF,N3M,N6M,N1Y")
    p.add_argument("--no_text", action="store_true")
    a = p.parse_args()
    n_bytes = sum(e.stat().st_size for e in os.scandir(a.raw_dir))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM")
    print(f"raw data: {a.raw_dir}, {n_bytes / 2**30:.2f} GiB")
    cmd = [sys.executable, "-m", "deepae_jax.data.datasets.netflix_convert", a.raw_dir, a.out_dir,
           "--overwrite", "--splits", a.splits] + (["--no_text"] if a.no_text else [])
    wall, peak, out = child(cmd)
    print(out.split("|")[0].strip())
    print(f"CONVERT: {wall:.1f} s wall, peak RSS {peak:.2f} GiB")
    train = os.path.join(a.out_dir, a.splits.split(",")[0] + "_TRAIN.npz")
    wall, _, out = child([sys.executable, "-c", LOAD, train])
    dt, rows, cols, nnz, rss = out.split()
    print(f"LOAD {train}: {float(dt):.2f} s (process {wall:.1f} s incl. imports), {int(rows):,} x "
          f"{int(cols):,}, {int(nnz):,} ratings, peak RSS {float(rss):.2f} GiB")


if __name__ == "__main__":
    main()
