"""A log directory belongs to one run: the lock, the ownership rules, stale temp files."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from deepae_jax.run import files
from deepae_jax.run import logdir as logdir_lib
from test_checkpoint import damage, write_run

HOLD = ("import sys, time; from deepae_jax.run.logdir import LogdirLock; "
        "lock = LogdirLock(sys.argv[1]); print('locked', flush=True); time.sleep(120)")


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of ``tmp_path/run`` (killed with SIGKILL at the end)."""
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.stdout.readline().strip() == "locked"
    yield folder, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def test_a_second_trainer_is_refused_and_a_killed_ones_lock_does_not_block(holder):
    folder, proc = holder
    with pytest.raises(logdir_lib.LogdirError,
                       match=rf"--logdir='{folder}' is in use by another training run "
                             rf"\(process {proc.pid}\)"):
        logdir_lib.open_run(str(folder), resume=False, overwrite=False)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert (folder / files.LOCK_FILE).exists()  # stale lock file of a dead process
    run = logdir_lib.open_run(str(folder), resume=False, overwrite=False)
    try:
        with pytest.raises(logdir_lib.LogdirError, match="in use"):  # held until released
            logdir_lib.open_run(str(folder), resume=False, overwrite=False)
    finally:
        run.release()
    logdir_lib.open_run(str(folder), resume=False, overwrite=False).release()


def test_a_fresh_run_refuses_another_runs_files_unless_overwrite(tmp_path):
    write_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"kind": "epoch", "step": 1}\n')
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(logdir_lib.LogdirError, match="holds the files of another run.*"
                       "checkpoint_00001.msgpack.*--resume.*--overwrite"):
        logdir_lib.open_run(str(tmp_path), resume=False, overwrite=False)
    run = logdir_lib.open_run(str(tmp_path), resume=False, overwrite=True)
    run.release()
    assert sorted(os.listdir(tmp_path)) == [".lock", "notes.txt"]  # only the run's files go
    assert run.resume_from is None and run.run_id


def test_resume_continues_the_run_from_the_newest_good_checkpoint(tmp_path):
    _, paths = write_run(tmp_path, run_id="run-a")
    damage(paths[-1])
    rows = [{"kind": "epoch", "step": e, "epoch": e, "run_id": "run-a"} for e in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + '{"kind": "ep')  # a kill mid-line
    (tmp_path / ".checkpoint_00004.msgpack.k1l2.tmp").write_bytes(b"partial")
    run = logdir_lib.open_run(str(tmp_path), resume=True, overwrite=False)
    run.release()
    assert run.resume_from[0] == paths[1] and run.run_id == "run-a"
    assert os.path.exists(paths[-1] + ".corrupt") and not os.path.exists(paths[-1])
    kept = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["epoch"] for r in kept] == [1, 2]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_run_ids_are_unique():
    assert len({logdir_lib.new_run_id() for _ in range(50)}) == 50


def test_training_into_a_locked_logdir_is_refused(holder, tmp_path):
    from deepae_jax.training import trainer
    from deepae_jax.config import Config
    from deepae_jax.data.datasets import synthetic
    folder, proc = holder
    spec = synthetic.SyntheticSpec(n_users=30, n_items=20, mean_ratings_per_user=5, seed=1)
    synthetic.ensure_dataset(str(tmp_path / "train"), "", spec)
    cfg = Config(path_to_train_data=str(tmp_path / "train"), logdir=str(folder),
                 hidden_layers=(4,), batch_size=8, num_epochs=1, progress=False)
    with pytest.raises(logdir_lib.LogdirError, match=f"--logdir='{folder}' is in use"):
        trainer.train_and_evaluate(cfg)
    assert logdir_lib.run_artefacts(str(folder)) == []  # nothing written beside the holder


def test_resume_with_no_loadable_checkpoint_is_refused_unless_overwrite(tmp_path):
    _, paths = write_run(tmp_path, epochs=(1,))
    damage(paths[0])
    with pytest.raises(logdir_lib.LogdirError, match="no checkpoint there loads"):
        logdir_lib.open_run(str(tmp_path), resume=True, overwrite=False)
    run = logdir_lib.open_run(str(tmp_path), resume=True, overwrite=True)
    run.release()
    assert run.resume_from is None and logdir_lib.run_artefacts(str(tmp_path)) == []
