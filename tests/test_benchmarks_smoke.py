"""benchmarks/throughput.py runs end to end at a tiny size and prints its table."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_throughput_benchmark_tiny(tmp_path):
    cmd = [sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--users", "300",
           "--items", "120", "--mean-ratings", "15", "--eval-users", "40", "--hidden", "16",
           "--steps", "2", "--steps-per-call", "2", "--aug-steps", "0,1", "--device-report",
           "--data-dir", str(tmp_path)]
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    for row in ("text load (s)", "binary load (s)", "train users/s, aug_step 0",
                "train users/s, aug_step 1", "eval users/s", "peak host memory", "backend cpu"):
        assert row in out.stdout, out.stdout
