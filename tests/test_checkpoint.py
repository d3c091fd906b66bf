"""Checkpoint files: checksum, fallback past damaged ones, permissions, disk full, one restore."""
from __future__ import annotations

import errno
import logging
import os
import stat

import jax
import numpy as np
import pytest

from deepae_jax.run import checkpoint as ckpt
from deepae_jax.run import files
from deepae_jax.core import model
from deepae_jax.core.optim import make_optimizer
from deepae_jax.core.step import create_train_state

MODEL = model.ModelConfig((10, 4), activation="elu", last_layer_linear=True, constrained=True)


def write_run(folder, epochs=(1, 2, 3), run_id="run-a", spec=None):
    """Checkpoints of a tiny model (no training) and their vocab, like a training run's."""
    spec = spec or ckpt.ModelSpec(MODEL, "users", (1.0, 5.0), {"baseline": {"mean": 3.5}})
    state = create_train_state(jax.random.PRNGKey(0), spec.model, make_optimizer("adam", 0.01))
    meta = {**spec.to_meta(), "optimizer": "adam", "weight_decay_on": False, "run_id": run_id}
    paths = [ckpt.save_checkpoint(str(folder), state.replace(step=state.step + e), e, meta)
             for e in epochs]
    ckpt.save_vocab(str(folder), np.arange(1, 8), np.arange(1, spec.model.layer_sizes[0] + 1),
                    spec.major, run_id)
    return state, paths


def damage(path, offset_from_end=200, n=8):
    data = bytearray(open(path, "rb").read())
    data[-offset_from_end:-offset_from_end + n] = bytes(n)
    open(path, "wb").write(bytes(data))


def test_zeroed_bytes_fail_the_checksum(tmp_path):
    _, paths = write_run(tmp_path, epochs=(1,))
    ckpt.read_checkpoint(paths[0])
    damage(paths[0])
    with pytest.raises(ckpt.CheckpointError, match="checksum mismatch"):
        ckpt.read_checkpoint(paths[0])


def test_restore_falls_back_past_a_damaged_latest_checkpoint(tmp_path, caplog):
    _, paths = write_run(tmp_path)
    damage(paths[-1])
    with caplog.at_level(logging.WARNING, logger="deepae_jax"):
        restored = ckpt.restore(str(tmp_path))
    assert restored.path == paths[1] and restored.epoch == 2
    assert "checkpoint_00003.msgpack" in caplog.text and "damaged" in caplog.text
    with pytest.raises(ckpt.CheckpointError, match="checksum"):  # an explicit file: no fallback
        ckpt.restore(str(tmp_path), save_path=paths[-1])


def test_restore_gives_the_stored_model_and_extras(tmp_path):
    state, paths = write_run(tmp_path)
    restored = ckpt.restore(paths[0])  # a file works as well as a log directory
    assert restored.model_cfg == MODEL and restored.major == "users"
    assert restored.spec.rating_range == (1.0, 5.0)
    assert restored.spec.extras == {"baseline": {"mean": 3.5}} and restored.run_id == "run-a"
    for a, b in zip(jax.tree_util.tree_leaves(state.params),
                    jax.tree_util.tree_leaves(restored.params)):
        np.testing.assert_array_equal(a, b)


def test_vocab_of_another_run_is_refused(tmp_path):
    write_run(tmp_path)
    ckpt.save_vocab(str(tmp_path), np.arange(1, 8), np.arange(1, 11), "users", "run-b")
    with pytest.raises(ckpt.CheckpointError, match="run-a.*run-b.*another run"):
        ckpt.restore(str(tmp_path))


def test_old_checkpoint_without_the_new_fields_is_read(tmp_path):
    """Format 1: no checksum wrapper, flat architecture keys, no run id, no rating range."""
    import flax.serialization
    import json
    state = create_train_state(jax.random.PRNGKey(0), MODEL, make_optimizer("adam", 0.01))
    meta = {"layer_sizes": [10, 4], "constrained": True, "activation": "elu",
            "last_layer_linear": True, "drop_prob": 0.0, "major": "users"}
    payload = {"state": flax.serialization.to_state_dict(state), "epoch": 1,
               "meta": json.dumps(meta)}
    path = ckpt.checkpoint_path(str(tmp_path), 1)
    open(path, "wb").write(flax.serialization.msgpack_serialize(payload))
    np.savez(tmp_path / "vocab.npz", row_ids=np.arange(3), col_ids=np.arange(10),
             major=np.asarray("users"))
    restored = ckpt.restore(str(tmp_path))
    assert restored.model_cfg == MODEL and restored.spec.rating_range is None
    assert restored.run_id == ""


def test_checkpoint_of_a_newer_version_is_a_clear_error(tmp_path):
    meta = {**ckpt.ModelSpec(MODEL).to_meta()}
    meta["model"] = {**meta["model"], "centring": "user"}
    with pytest.raises(ckpt.CheckpointError, match="does not know.*centring"):
        ckpt.ModelSpec.from_meta("x.msgpack", meta)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_files_get_umask_permissions_not_0600(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        _, paths = write_run(tmp_path, epochs=(1,))
        files.atomic_write_text(str(tmp_path / "a.txt"), "x")
    finally:
        os.umask(old)
    for path in (paths[0], tmp_path / "vocab.npz", tmp_path / "a.txt"):
        assert stat.S_IMODE(os.stat(path).st_mode) == mode, path


def test_disk_full_is_a_clear_error_naming_the_file(tmp_path, monkeypatch):
    _, paths = write_run(tmp_path, epochs=(1,))
    before = open(paths[0], "rb").read()
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(ckpt.CheckpointError,
                       match=r"checkpoint_00002\.msgpack: cannot write \(no space left"):
        write_run(tmp_path, epochs=(2,))
    with pytest.raises(files.OutputError, match=r"b\.txt: cannot write \(no space left"):
        files.atomic_write_text(str(tmp_path / "b.txt"), "x")
    monkeypatch.setattr(files.os, "fsync", real_fsync)
    assert open(paths[0], "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_00001.msgpack", "vocab.npz"]


def test_remove_temp_files_removes_only_atomic_write_leftovers(tmp_path):
    for name in (".checkpoint_00002.msgpack.abc123.tmp", ".vocab.npz.x.tmp", "keep.tmp",
                 "checkpoint_00001.msgpack"):
        (tmp_path / name).write_text("x")
    removed = files.remove_temp_files(str(tmp_path))
    assert sorted(os.path.basename(p) for p in removed) == [
        ".checkpoint_00002.msgpack.abc123.tmp", ".vocab.npz.x.tmp"]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_00001.msgpack", "keep.tmp"]


def test_disk_full_in_a_run_is_an_error_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    from deepae_jax.data.datasets import synthetic
    from test_cli import main_in_process
    spec = synthetic.SyntheticSpec(n_users=30, n_items=20, mean_ratings_per_user=5, seed=1)
    synthetic.ensure_dataset(str(tmp_path / "train"), "", spec)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files.os, "fsync", full)
    assert main_in_process(f"--path_to_train_data={tmp_path / 'train'}", "--batch_size=8",
                           f"--logdir={tmp_path / 'logs'}", "--noprogress") == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'logs'}" in err and "no space left on device" in err
    assert "Traceback" not in err


def test_keep_latest_removes_only_older_numbered_checkpoints(tmp_path):
    for e in (1, 2, 3, 10):
        (tmp_path / f"checkpoint_{e:05d}.msgpack").write_bytes(b"x")
    (tmp_path / "best.msgpack").write_bytes(b"x")
    removed = ckpt.keep_latest(str(tmp_path), 2)
    assert [os.path.basename(p) for p in removed] == ["checkpoint_00001.msgpack",
                                                      "checkpoint_00002.msgpack"]
    assert sorted(os.listdir(tmp_path)) == ["best.msgpack", "checkpoint_00003.msgpack",
                                            "checkpoint_00010.msgpack"]
    assert ckpt.keep_latest(str(tmp_path), 0) == [] and len(os.listdir(tmp_path)) == 3
