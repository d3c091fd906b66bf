"""End-to-end runs through the library: training, resume, checkpoints, divergence, inference."""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from deepae_jax.run import checkpoint as ckpt
from deepae_jax import inference
from deepae_jax import kernels
from deepae_jax.training import backend, trainer
from deepae_jax.cli.compute_rmse import rmse_of_predictions
from deepae_jax.config import Config
from deepae_jax.run.log import watch_compilations
from deepae_jax.data.datasets import synthetic

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
    result = trainer.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=3,
                                                 keep_checkpoints=0))
    assert result["epoch"] == 3 and np.isfinite(result["eval_rmse"])
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert [l["step"] for l in lines if l["kind"] == "epoch"] == [1, 2, 3]
    assert lines[-1]["eval_rmse"] == pytest.approx(result["eval_rmse"])
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))
    assert sorted(f for f in os.listdir(tmp_path) if f.startswith("checkpoint_")) == [
        "checkpoint_00001.msgpack", "checkpoint_00002.msgpack", "checkpoint_00003.msgpack"]
    assert (tmp_path / "vocab.npz").is_file()


def test_resume_gives_the_same_parameters(data_dir, tmp_path):
    trainer.train_and_evaluate(make_cfg(data_dir, tmp_path / "full"))
    trainer.train_and_evaluate(make_cfg(data_dir, tmp_path / "split", num_epochs=2))
    trainer.train_and_evaluate(make_cfg(data_dir, tmp_path / "split", resume=True))
    epoch_a, full = params_of(tmp_path / "full")
    epoch_b, resumed = params_of(tmp_path / "split")
    assert epoch_a == epoch_b == 4
    for a, b in zip(full, resumed):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_interrupted_save_keeps_previous_checkpoint(data_dir, tmp_path, monkeypatch):
    trainer.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=1))
    before = open(ckpt.latest_checkpoint(str(tmp_path)), "rb").read()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")
    monkeypatch.setattr(ckpt.flax.serialization, "msgpack_serialize", killed)
    with pytest.raises(KeyboardInterrupt):
        trainer.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=2, resume=True))
    assert open(ckpt.latest_checkpoint(str(tmp_path)), "rb").read() == before
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_divergence_stops_and_keeps_last_good_checkpoint(data_dir, tmp_path):
    trainer.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=1, lr=1e-3))
    good = ckpt.latest_checkpoint(str(tmp_path))
    with pytest.raises(trainer.TrainingDivergedError, match=r"at epoch 2, step \d+.*Last good "
                       r"checkpoint: .*checkpoint_00001"):
        trainer.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=3, lr=1e12,
                                           resume=True))
    assert ckpt.latest_checkpoint(str(tmp_path)) == good
    epoch, params = params_of(tmp_path)
    assert epoch == 1 and all(np.isfinite(p).all() for p in params)


def test_checkpoint_of_another_architecture_is_refused(data_dir, tmp_path):
    trainer.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=1))
    with pytest.raises(ckpt.CheckpointError, match="different architecture"):
        trainer.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=2, resume=True,
                                           hidden_layers=(16, 4)))
    with pytest.raises(ckpt.CheckpointError, match="optimizer=momentum.*optimizer=adam"):
        trainer.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=2, resume=True,
                                           optimizer="adam"))
    for flag, value, stored in (("non_linearity_type", "relu", "selu"),
                                ("skip_last_layer_nl", True, False), ("drop_prob", 0.1, 0.5),
                                ("major", "items", "users")):
        with pytest.raises(ckpt.CheckpointError, match=f"--{flag}.*{stored}.*{value}"):
            trainer.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=2, resume=True,
                                               **{flag: value}))


def test_inference_takes_the_architecture_from_the_checkpoint(data_dir, tmp_path, caplog):
    """evaluate with other architecture flags used to run the wrong function silently."""
    cfg = make_cfg(data_dir, tmp_path, num_epochs=1, skip_last_layer_nl=True)
    trained = trainer.train_and_evaluate(cfg)
    for wrong in (dict(non_linearity_type="relu"), dict(skip_last_layer_nl=False),
                  dict(constrained=True)):
        result = inference.run_evaluate(dataclasses.replace(cfg, mode="evaluate", **wrong))
        assert result.rmse == pytest.approx(trained["eval_rmse"], rel=1e-6)
    assert "--non_linearity_type='relu' ignored" in caplog.text
    assert "--constrained=True ignored" in caplog.text


def test_infer_writes_reference_predictions_and_compute_rmse_reads_them(data_dir, tmp_path):
    cfg = make_cfg(data_dir, tmp_path, num_epochs=2)
    result = trainer.train_and_evaluate(cfg)
    out = tmp_path / "predictions.tsv"
    lines = inference.run_infer(dataclasses.replace(cfg, mode="infer", predictions_path=str(out)))
    rmse, n = rmse_of_predictions(str(out))
    assert n == lines > 0
    assert rmse == pytest.approx(result["eval_rmse"], rel=1e-4)
    evaluated = inference.run_evaluate(dataclasses.replace(cfg, mode="evaluate"))
    assert evaluated.rmse == pytest.approx(result["eval_rmse"], rel=1e-6)
    user, item, pred, actual = open(out).readline().rstrip("\n").split("\t")
    held = synthetic.generate(SPEC)[1]
    pairs = set(zip(held.users.tolist(), held.items.tolist()))
    assert (int(user), int(item)) in pairs and 1 <= float(actual) <= 5
    rounded, _ = rmse_of_predictions(str(out), round_predictions=True)
    assert rounded != rmse


def test_item_based_run(data_dir, tmp_path):
    result = trainer.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=1, major="items",
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
    result = trainer.train_and_evaluate(cfg)
    assert result["eval_rmse"] < 1.0


def test_a_used_logdir_belongs_to_its_run(data_dir, tmp_path):
    """A fresh run used to write checkpoints 1.. beside an older run's higher ones."""
    trainer.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=3))
    with pytest.raises(ValueError, match="holds the files of another run"):
        trainer.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=1))
    assert ckpt.latest_checkpoint(str(tmp_path)).endswith("checkpoint_00003.msgpack")
    trainer.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=1, overwrite=True))
    assert [os.path.basename(p) for _, p in ckpt.list_checkpoints(str(tmp_path))] == [
        "checkpoint_00001.msgpack"]
    run_id = json.load(open(tmp_path / "config.json"))["run_id"]
    rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert [r["run_id"] for r in rows if r["kind"] == "epoch"] == [run_id]
    assert {r["run_id"] for r in rows} == {run_id}  # and the baselines' row
    assert ckpt.read_vocab(str(tmp_path))["run_id"] == run_id
    assert ckpt.restore(str(tmp_path)).run_id == run_id
    assert len([f for f in os.listdir(tmp_path) if f.startswith("events.out")]) == 1


def test_eval_set_without_known_rows_writes_null_not_nan(data_dir, tmp_path, caplog):
    unknown = tmp_path / "unknown.tsv"
    unknown.write_text("999999\t1\t4\n999998\t2\t3\n")
    cfg = make_cfg(data_dir, tmp_path / "run", num_epochs=1, path_to_eval_data=str(unknown))
    with caplog.at_level("INFO", logger="deepae_jax.results"):  # the epoch line: stdout in the CLI
        trainer.train_and_evaluate(cfg)
    assert "eval RMSE n/a (no evaluation ratings of known rows)" in caplog.text
    text = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "NaN" not in text and json.loads(text)["eval_rmse"] is None
    caplog.clear()
    with caplog.at_level("INFO", logger="deepae_jax.results"):
        inference.run_evaluate(dataclasses.replace(cfg, mode="evaluate"))
    assert "evaluation RMSE n/a: no evaluation ratings of known rows" in caplog.text


def test_every_train_path_trains_to_the_same_parameters(data_dir, tmp_path, caplog):
    """--train_path fixes the step's variant once (logged); dense, sparse and cpu_kernels reach
    the same parameters (one epoch, dropout 0)."""
    import logging
    caplog.set_level(logging.INFO, logger="deepae_jax")
    params = {}
    for path in ("dense", "sparse", "cpu_kernels", "auto"):
        if path == "cpu_kernels" and not kernels.available():
            continue
        trainer.train_and_evaluate(make_cfg(data_dir, tmp_path / path, train_path=path,
                                           num_epochs=1, drop_prob=0.0))
        assert f"training step: {backend.resolve_train_path(path)} path" in caplog.text
        params[path] = params_of(tmp_path / path)[1]
    for path, leaves in params.items():
        for a, b in zip(leaves, params["dense"]):
            np.testing.assert_allclose(a, b, atol=1e-5, err_msg=path)


def test_resolve_train_path():
    assert backend.resolve_train_path("sparse", 4) == "sparse"
    assert backend.resolve_train_path("auto", 4) == "sparse"
    want = "cpu_kernels" if kernels.available() else "sparse"
    assert backend.resolve_train_path("auto", 1) == want
    with pytest.raises(ValueError, match="--train_path=cpu_kernels runs on one device"):
        backend.resolve_train_path("cpu_kernels", 2)


def test_a_run_compiles_each_step_once(data_dir, tmp_path, capsys):
    """Four epochs (shuffled batches of varying packed width, 9 iterations an epoch: calls of 8
    and a remainder of 1) compile the training call and the evaluation step once each, all in
    the first epoch, whose line says so; later epochs compile nothing."""
    compiles = watch_compilations()
    jax.clear_caches()  # nothing compiled by earlier tests
    start = len(compiles)
    trainer.train_and_evaluate(make_cfg(data_dir, tmp_path, num_epochs=4, train_path="sparse"))
    names = [name for name, _ in compiles[start:]]
    assert names.count("jit(multi)") == 1, names
    assert names.count("jit(predict_sparse_at)") == 1, names
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("epoch ")]
    assert len(lines) == 4 and "compiled" in lines[0], lines
    assert not any("compiled" in l for l in lines[1:]), lines
