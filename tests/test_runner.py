"""End-to-end runs through the library: training, resume, checkpoints, divergence, inference."""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from deepae_jax import checkpoint as ckpt
from deepae_jax import runner
from deepae_jax.compute_rmse import rmse_of_predictions
from deepae_jax.config import Config
from deepae_jax.data import synthetic

SPEC = synthetic.SyntheticSpec(n_users=300, n_items=80, mean_ratings_per_user=20, seed=3)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    synthetic.ensure_dataset(str(root / "train"), str(root / "valid"), SPEC)
    return root


def make_cfg(data_dir, logdir, **kw):
    base = dict(path_to_train_data=str(data_dir / "train"),
                path_to_eval_data=str(data_dir / "valid"), logdir=str(logdir),
                hidden_layers=(16, 8), drop_prob=0.5, lr=0.01, batch_size=32, num_epochs=4,
                aug_step=1, save_every=1, seed=7, progress=False, summary_frequency=3)
    base.update(kw)
    return Config(**base)


def params_of(logdir):
    payload = ckpt.read_checkpoint(ckpt.latest_checkpoint(str(logdir)))
    return payload["epoch"], jax.tree_util.tree_leaves(payload["state"]["params"])


def test_train_writes_outputs_and_learns(data_dir, tmp_path):
    result = runner.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=3))
    assert result["epoch"] == 3 and np.isfinite(result["eval_rmse"])
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert [l["step"] for l in lines if l["kind"] == "epoch"] == [1, 2, 3]
    assert lines[-1]["eval_rmse"] == pytest.approx(result["eval_rmse"])
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))
    assert sorted(f for f in os.listdir(tmp_path) if f.startswith("checkpoint_")) == [
        "checkpoint_00001.msgpack", "checkpoint_00002.msgpack", "checkpoint_00003.msgpack"]
    assert (tmp_path / "vocab.npz").is_file()


def test_resume_gives_the_same_parameters(data_dir, tmp_path):
    runner.train_and_evaluate(make_cfg(data_dir, tmp_path / "full"))
    runner.train_and_evaluate(make_cfg(data_dir, tmp_path / "split", num_epochs=2))
    runner.train_and_evaluate(make_cfg(data_dir, tmp_path / "split", resume=True))
    epoch_a, full = params_of(tmp_path / "full")
    epoch_b, resumed = params_of(tmp_path / "split")
    assert epoch_a == epoch_b == 4
    for a, b in zip(full, resumed):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_interrupted_save_keeps_previous_checkpoint(data_dir, tmp_path, monkeypatch):
    runner.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=1))
    before = open(ckpt.latest_checkpoint(str(tmp_path)), "rb").read()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")
    monkeypatch.setattr(ckpt.flax.serialization, "msgpack_serialize", killed)
    with pytest.raises(KeyboardInterrupt):
        runner.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=2, resume=True))
    assert open(ckpt.latest_checkpoint(str(tmp_path)), "rb").read() == before
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_divergence_stops_and_keeps_last_good_checkpoint(data_dir, tmp_path):
    runner.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=1, lr=1e-3))
    good = ckpt.latest_checkpoint(str(tmp_path))
    with pytest.raises(runner.TrainingDivergedError, match=r"at epoch 2, step \d+.*Last good "
                       r"checkpoint: .*checkpoint_00001"):
        runner.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=3, lr=1e12,
                                           resume=True))
    assert ckpt.latest_checkpoint(str(tmp_path)) == good
    epoch, params = params_of(tmp_path)
    assert epoch == 1 and all(np.isfinite(p).all() for p in params)


def test_checkpoint_of_another_architecture_is_refused(data_dir, tmp_path):
    runner.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=1))
    with pytest.raises(ckpt.CheckpointError, match="different architecture"):
        runner.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=2, resume=True,
                                           hidden_layers=(16, 4)))
    with pytest.raises(ckpt.CheckpointError, match="different architecture"):
        runner.run_evaluate(make_cfg(data_dir, tmp_path, mode="evaluate", constrained=True))
    with pytest.raises(ckpt.CheckpointError, match="optimizer=momentum.*optimizer=adam"):
        runner.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=2, resume=True,
                                           optimizer="adam"))


def test_infer_writes_reference_predictions_and_compute_rmse_reads_them(data_dir, tmp_path):
    cfg = make_cfg(data_dir, tmp_path, num_epochs=2)
    result = runner.train_and_evaluate(cfg)
    out = tmp_path / "predictions.tsv"
    lines = runner.run_infer(dataclasses.replace(cfg, mode="infer", predictions_path=str(out)))
    rmse, n = rmse_of_predictions(str(out))
    assert n == lines > 0
    assert rmse == pytest.approx(result["eval_rmse"], rel=1e-4)
    evaluated = runner.run_evaluate(dataclasses.replace(cfg, mode="evaluate"))
    assert evaluated.rmse == pytest.approx(result["eval_rmse"], rel=1e-6)
    user, item, pred, actual = open(out).readline().rstrip("\n").split("\t")
    held = synthetic.generate(SPEC)[1]
    pairs = set(zip(held.users.tolist(), held.items.tolist()))
    assert (int(user), int(item)) in pairs and 1 <= float(actual) <= 5
    rounded, _ = rmse_of_predictions(str(out), round_predictions=True)
    assert rounded != rmse


def test_item_based_run(data_dir, tmp_path):
    result = runner.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=1, major="items",
                                                batch_size=16))
    assert np.isfinite(result["eval_rmse"])
    _, col_ids, major = ckpt.load_vocab(str(tmp_path))
    assert major == "items" and len(col_ids) == SPEC.n_users


def test_movielens_100k_u1_learns(shared_data, tmp_path):
    ml = shared_data / "movielens-100k"
    cfg = Config(path_to_train_data=str(ml / "u1.base"), path_to_eval_data=str(ml / "u1.test"),
                 logdir=str(tmp_path), hidden_layers=(500,), non_linearity_type="sigmoid",
                 skip_last_layer_nl=True, optimizer="adam", lr=1e-3, weight_decay=1e-3,
                 batch_size=32, num_epochs=8, save_every=100, progress=False, major="items")
    result = runner.train_and_evaluate(cfg)
    assert result["eval_rmse"] < 1.0
