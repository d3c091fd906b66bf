"""Fault injection: a training run killed with SIGKILL at seeded random moments (during saves and
between them), resumed each time with --resume, ends exactly like an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from deepae_jax.run import checkpoint as ckpt
from deepae_jax.training import trainer
from deepae_jax.config import Config
from deepae_jax.data.datasets import synthetic

SPEC = synthetic.SyntheticSpec(n_users=80, n_items=30, mean_ratings_per_user=8, seed=4)
EPOCHS = 5

# Runs deepae_jax.main; with FAULT_KILL_AT_WRITE=N the process SIGKILLs itself in the middle of
# its N-th atomic_write (after part of the file is written): a kill during a save.
WRAPPER = """
import os, signal, sys
from deepae_jax.run import checkpoint, files as io_utils
kill_at, count, real = int(os.environ.get("FAULT_KILL_AT_WRITE", "0")), [0], io_utils.atomic_write
def write(path, fn):
    count[0] += 1
    if count[0] != kill_at:
        return real(path, fn)
    def partial(fh):
        fh.write(b"partial data")
        fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, partial)
io_utils.atomic_write = checkpoint.atomic_write = write
from deepae_jax import main
sys.argv = ["deepae_jax.main", *sys.argv[1:]]
main.run()
"""


def settings(root, logdir):
    return dict(path_to_train_data=str(root / "train"), path_to_eval_data=str(root / "valid"),
                logdir=str(logdir), hidden_layers=(8,), lr=0.01, batch_size=16,
                num_epochs=EPOCHS, save_every=1, seed=3, progress=False, aug_step=1,
                drop_prob=0.2)


def flags(values):
    out = []
    for k, v in values.items():
        v = ",".join(map(str, v)) if isinstance(v, tuple) else v
        out.append(f"--{k}" if v is True else f"--no{k}" if v is False else f"--{k}={v}")
    return out


def attempt(argv, kill_at_write=0, kill_after_epoch_line=0, delay=0.0):
    """One training process; returns its exit code (-9: killed)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "FAULT_KILL_AT_WRITE": str(kill_at_write)}
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        if kill_after_epoch_line:
            seen = 0
            for line in proc.stdout:
                seen += line.startswith("epoch ")
                if seen == kill_after_epoch_line:
                    time.sleep(delay)
                    proc.send_signal(signal.SIGKILL)
                    break
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, -signal.SIGKILL), err[-2000:]
    return proc.returncode


def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    synthetic.ensure_dataset(str(tmp_path / "train"), str(tmp_path / "valid"), SPEC)
    logdir = tmp_path / "killed"
    argv = flags({**settings(tmp_path, logdir), "resume": True})
    rng = np.random.default_rng(12)
    # writes of a start: vocab.npz (1), config.json (2), then a checkpoint per epoch (3, 4, ...;
    # a resumed start that drops metrics rows rewrites metrics.jsonl first)
    kills = [dict(kill_at_write=int(rng.integers(1, 3))),
             dict(kill_at_write=int(rng.integers(4, 6))),
             dict(kill_after_epoch_line=int(rng.integers(1, 3)), delay=float(rng.uniform(0, .05))),
             dict(kill_at_write=int(rng.integers(3, 6)))]
    codes, saved = [], []
    for kill in kills:
        codes.append(attempt(argv, **kill))
        saved.append(max([e for e, _ in ckpt.list_checkpoints(str(logdir))], default=0))
    assert codes.count(-signal.SIGKILL) >= 3, codes
    assert any(saved[i - 1] >= 1 and codes[i] == -signal.SIGKILL
               for i in range(1, len(kills))), (codes, saved)  # a resumed run was killed too
    for _ in range(3):  # resumed until it finishes (at most one epoch lost per kill above)
        if attempt(argv) == 0 and ckpt.list_checkpoints(str(logdir))[-1][0] == EPOCHS:
            break
    trainer.train_and_evaluate(Config(**settings(tmp_path, tmp_path / "whole")))

    killed = ckpt.restore(str(logdir))
    whole = ckpt.restore(str(tmp_path / "whole"))
    assert killed.epoch == whole.epoch == EPOCHS
    for a, b in zip(jax.tree_util.tree_leaves(whole.params),
                    jax.tree_util.tree_leaves(killed.params)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert not [f for f in os.listdir(logdir) if f.endswith(".tmp")]
    rows = [json.loads(line) for line in open(logdir / "metrics.jsonl")]
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == list(range(1, EPOCHS + 1))
    assert {r["run_id"] for r in rows} == {killed.run_id}
