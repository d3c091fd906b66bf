"""Data-parallel training (deepae_jax.training.parallel).

The multi-device checks run once, in a subprocess with XLA_FLAGS=--xla_force_host_platform_
device_count=4 (tests/parallel_checks.py), because the device count is fixed when JAX starts;
the remaining tests run in this process on its single CPU device.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import scipy.sparse as sp

from deepae_jax import devices
from deepae_jax.training import parallel
from deepae_jax.config import Config, ConfigError
from deepae_jax.data.batching import dense_batches

TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory) -> dict:
    """Results of tests/parallel_checks.py, run on 4 forced CPU devices."""
    workdir = tmp_path_factory.mktemp("parallel")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    try:
        done = subprocess.run([sys.executable, os.path.join(TESTS, "parallel_checks.py"),
                               str(workdir)], env=env, capture_output=True, text=True,
                              timeout=170)
    except subprocess.TimeoutExpired as e:  # subprocess.run kills the child before raising
        pytest.fail(f"parallel_checks.py timed out:\n{(e.stdout or '')[-3000:]}")
    lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    assert done.returncode == 0 and lines, (done.stdout[-3000:], done.stderr[-3000:])
    return json.loads(lines[-1][len("RESULT "):])


def test_subprocess_really_has_four_devices(four_devices):
    assert four_devices["device_count"] == 4


def test_four_devices_reach_the_same_parameters_as_one(four_devices):
    """Two epochs, same global batch (16), seed and data, dropout 0, one re-feeding step."""
    assert four_devices["param_max_abs_diff"] < 1e-4
    assert four_devices["param_max_abs"] > 0.1  # real, trained parameters were compared


def test_four_devices_reach_the_same_eval_rmse_as_one(four_devices):
    rmse = four_devices["eval_rmse"]
    assert np.isfinite(rmse["1"])
    assert abs(rmse["4"] - rmse["1"]) < 1e-5
    assert abs(four_devices["train_rmse"]["4"] - four_devices["train_rmse"]["1"]) < 1e-5


def test_evaluate_and_infer_on_four_devices_give_the_same_numbers(four_devices):
    assert abs(four_devices["evaluate_rmse_4"] - four_devices["evaluate_rmse_1"]) < 1e-6
    assert four_devices["infer_lines_4"] == four_devices["infer_lines_1"] > 0
    assert four_devices["infer_same_rows"]
    assert four_devices["infer_max_abs_diff"] < 1e-5


def test_dropout_draws_follow_the_global_batch_not_the_device_count(four_devices):
    assert four_devices["dropout_rerun_same_params"]
    assert four_devices["dropout_max_abs_diff_4_vs_1"] < 1e-5


def test_batch_that_does_not_divide_among_devices_is_a_clear_error(four_devices):
    for key in ("error_batch", "error_runner_batch"):
        msg = four_devices[key]
        assert "--batch_size=18" in msg and "4 devices" in msg and "multiple of 4" in msg


def test_more_devices_than_available_is_a_clear_error(four_devices):
    msg = four_devices["error_devices"]
    assert "--num_devices=5" in msg and "4 cpu device" in msg


# ----------------------------------------------------------------- in this (1-device) process


def test_check_batch_size():
    devices.check_batch_size(64, 8)
    with pytest.raises(ValueError, match=r"--batch_size=30 does not divide among 8 devices"):
        devices.check_batch_size(30, 8)


def test_single_device_needs_no_parallel_runtime():
    assert parallel.setup(num_devices=0, batch_size=7) is None  # one CPU device here
    assert parallel.setup(num_devices=1) is None
    assert devices.is_main_process()
    with pytest.raises(ValueError, match=r"--num_devices=2: this process has 1"):
        parallel.setup(num_devices=2)


def test_config_validates_the_distributed_flags(tmp_path):
    ok = dict(path_to_train_data=str(tmp_path))
    Config(**ok, num_devices=0, num_processes=0, process_id=-1)
    Config(**ok, num_processes=2, process_id=1, coordinator_address="10.0.0.1:1234")
    for flag, bad in (("num_devices", dict(num_devices=-1)),
                      ("num_processes", dict(num_processes=-1)),
                      ("process_id", dict(num_processes=2, process_id=2)),
                      ("process_id", dict(process_id=-2))):
        with pytest.raises(ConfigError, match=f"--{flag}="):
            Config(**ok, **bad)


def _csr(seed=0, rows=37, cols=11):
    rng = np.random.default_rng(seed)
    dense = np.where(rng.random((rows, cols)) < 0.3, rng.integers(1, 6, (rows, cols)), 0)
    return sp.csr_matrix(dense.astype(np.float32))


def test_batches_on_one_device_mesh_are_the_single_device_batches():
    csr = _csr()
    par = parallel.DataParallel(devices.make_mesh(1))
    assert devices.process_rows(par.mesh, 8) == slice(0, 8)
    got = [np.asarray(b) for b in par.batches(csr, 8, seed=3, epoch=2)]
    want = list(dense_batches(csr, 8, seed=3, epoch=2))
    assert len(got) == len(want) == 4
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_to_host_and_replicate_round_trip():
    mesh = devices.make_mesh(1)
    tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.int32(4)}
    back = devices.to_host(devices.replicate(tree, mesh))
    np.testing.assert_array_equal(back["a"], tree["a"])
    assert int(back["s"]) == 4 and isinstance(back["a"], np.ndarray)
    assert isinstance(jax.device_get(devices.local_view(devices.replicate(tree, mesh))["a"]),
                      np.ndarray)


def test_resident_sparse_path_on_four_devices_matches_the_dense_step(four_devices):
    """The sparse XLA path, ratings resident on the 4 devices, batches gathered there."""
    assert four_devices["resident_param_max_abs_diff"] < 1e-4


def test_resident_width_follows_the_real_slots_not_the_longest_row(four_devices):
    """Each device's packed width: its group's ratings (4 rows) rounded up a little, not the
    longest row of the batch."""
    width, most = four_devices["resident_width"], four_devices["resident_group_max_ratings"]
    assert most <= 4 * width <= 1.2 * most + 32
    assert four_devices["resident_hlo_has_all_reduce"]  # the sums across devices: XLA's
