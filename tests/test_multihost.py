"""A real multi-process run on JAX's distributed runtime: two processes on 127.0.0.1 (gloo CPU
collectives), each with 2 forced host devices, against one process with 4 devices.

Both runs go through the command line (``python -m deepae_jax.main``) with the same flags apart
from the distributed ones; only process 0 may write files.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from deepae_jax.run import checkpoint as ckpt
from deepae_jax.data.datasets import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 150
TINY = synthetic.SyntheticSpec(n_users=160, n_items=48, rank=3, mean_ratings_per_user=10.0,
                               seed=4)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], devices: int, log_path: str) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "deepae_jax.main", *args], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc


def wait_all(procs: dict[str, subprocess.Popen], logs: dict[str, str]) -> None:
    """Waits for every process (shared deadline); kills all that are left on a failure."""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for name, proc in procs.items():
            try:
                rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} still running after {TIMEOUT_S} s:\n" + tail(logs[name]))
            assert rc == 0, f"{name} exited with {rc}:\n" + tail(logs[name])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def tail(path: str, n: int = 3000) -> str:
    with open(path, errors="replace") as fh:
        return fh.read()[-n:]


def params_of(logdir: str) -> list[np.ndarray]:
    payload = ckpt.read_checkpoint(ckpt.latest_checkpoint(logdir))
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(payload["state"]["params"])]


def epoch_record(logdir: str) -> dict:
    with open(os.path.join(logdir, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh if '"epoch"' in line][-1]


def test_two_processes_match_one_process_with_four_devices(tmp_path):
    train, valid = str(tmp_path / "train"), str(tmp_path / "valid")
    synthetic.ensure_dataset(train, valid, TINY)
    common = [f"--path_to_train_data={train}", f"--path_to_eval_data={valid}",
              "--hidden_layers=16,8", "--non_linearity_type=selu", "--drop_prob=0",
              "--optimizer=momentum", "--lr=0.05", "--batch_size=16", "--aug_step=1",
              "--num_epochs=1", "--seed=11", "--noprogress", "--summary_frequency=5"]
    port = free_port()
    logdirs = {"p0": str(tmp_path / "p0"), "p1": str(tmp_path / "p1"),
               "single": str(tmp_path / "single")}
    logs = {name: str(tmp_path / f"{name}.log") for name in logdirs}
    procs = {}
    try:
        for pid in (0, 1):
            procs[f"p{pid}"] = launch(
                common + [f"--logdir={logdirs[f'p{pid}']}", "--num_processes=2",
                          f"--process_id={pid}", f"--coordinator_address=127.0.0.1:{port}"],
                devices=2, log_path=logs[f"p{pid}"])
        procs["single"] = launch(common + [f"--logdir={logdirs['single']}"], devices=4,
                                 log_path=logs["single"])
    finally:
        wait_all(procs, logs)

    # Process 0 wrote the run's files; process 1 wrote nothing and printed no epoch line.
    assert ckpt.latest_checkpoint(logdirs["p0"])
    assert not os.path.exists(logdirs["p1"]) or not os.listdir(logdirs["p1"])
    assert "epoch 1/1" in tail(logs["p0"]) and "epoch 1/1" not in tail(logs["p1"])

    multi, single = params_of(logdirs["p0"]), params_of(logdirs["single"])
    assert len(multi) == len(single)
    for a, b in zip(multi, single):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    changed = max(float(np.max(np.abs(a - b))) for a, b in
                  zip(single, params_of_initial(logdirs["single"])))
    assert changed > 1e-3, "training did not move the parameters; the comparison is vacuous"

    rec_multi, rec_single = epoch_record(logdirs["p0"]), epoch_record(logdirs["single"])
    assert rec_multi["train_rmse"] == pytest.approx(rec_single["train_rmse"], abs=1e-5)
    assert rec_multi["eval_rmse"] == pytest.approx(rec_single["eval_rmse"], abs=1e-5)


def params_of_initial(logdir: str) -> list[np.ndarray]:
    """The parameters the run started from (same seed and layer sizes as its checkpoint)."""
    from deepae_jax.core import model
    from deepae_jax.core.optim import make_optimizer
    from deepae_jax.core.step import create_train_state
    meta = ckpt.read_checkpoint(ckpt.latest_checkpoint(logdir))["meta"]
    model_cfg = model.ModelConfig(tuple(meta["layer_sizes"]), constrained=meta["constrained"])
    state = create_train_state(jax.random.PRNGKey(11), model_cfg,
                               make_optimizer("momentum", 0.05, 0.0, 10))
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)]
