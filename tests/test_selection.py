"""Model selection: the best epoch and early stopping on constructed metric sequences, the best
checkpoint's files, and (end to end) TEST scored once into summary.json."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from deepae_jax.run import files
from deepae_jax import baseline as bl
from deepae_jax.run import checkpoint as ckpt
from deepae_jax import inference
from deepae_jax.training import run_data, selection, trainer
from deepae_jax.config import Config
from deepae_jax.data.datasets import synthetic
from deepae_jax.core.step import TrainingDivergedError


def run_selector(values, patience):
    """(best epoch, epochs run) of a Selector fed ``values`` until it says stop."""
    s = selection.Selector(patience)
    for epoch, v in enumerate(values, start=1):
        s.update(epoch, v)
        if s.should_stop:
            return s.best_epoch, epoch
    return s.best_epoch, len(values)


def test_best_epoch_and_early_stopping():
    seq = [1.0, 0.9, 0.95, 0.85, 0.86, 0.87, 0.88, 0.80]
    assert run_selector(seq, 0) == (8, 8)  # off: runs to the end
    assert run_selector(seq, 3) == (4, 7)  # 3 epochs without a better value after epoch 4
    assert run_selector(seq, 4) == (8, 8)
    assert run_selector([1.0, 1.0, 1.0], 2) == (1, 3)  # a tie is no improvement
    assert run_selector([math.nan, 2.0, math.nan], 2) == (2, 3)  # NaN is never a best


def test_save_best_is_a_readable_checkpoint(tmp_path):
    state = {"params": {"w": np.ones((2, 3), np.float32)}}
    path = selection.save_best(str(tmp_path), state, 5, {"layer_sizes": [3, 2]}, 0.91, "rmse")
    assert selection.best_checkpoint(str(tmp_path)) == path
    assert ckpt.latest_checkpoint(str(tmp_path)) is None  # not an epoch checkpoint
    assert ckpt.read_checkpoint(path)["epoch"] == 5
    info = json.load(open(tmp_path / files.BEST_INFO_FILE))
    assert info == {"epoch": 5, "metric": "rmse", "valid_rmse": 0.91}
    assert selection.best_checkpoint(str(tmp_path / "none")) is None


SPEC = synthetic.SyntheticSpec(n_users=120, n_items=40, mean_ratings_per_user=15, seed=5)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    synthetic.ensure_dataset(str(root / "train"), str(root / "valid"), SPEC)
    synthetic.ensure_dataset(str(root / "train2"), str(root / "test"),
                             synthetic.SyntheticSpec(n_users=130, n_items=45,
                                                     mean_ratings_per_user=15, seed=5))
    return root


def test_training_keeps_the_best_epoch_and_scores_test_once(data_dir, tmp_path):
    cfg = Config(path_to_train_data=str(data_dir / "train"),
                 path_to_eval_data=str(data_dir / "valid"),
                 path_to_test_data=str(data_dir / "test"), logdir=str(tmp_path),
                 hidden_layers=(8,), optimizer="adam", lr=0.01, batch_size=16, num_epochs=4,
                 seed=1, progress=False, baseline="bias", unknown="baseline",
                 clip_predictions=True, early_stopping_patience=2, save_every=100)
    result = trainer.train_and_evaluate(cfg)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    best = min(epochs, key=lambda r: r["eval_rmse"])
    summary = json.load(open(tmp_path / files.SUMMARY_FILE))
    assert summary["best_epoch"] == best["epoch"] == result["summary"]["best_epoch"]
    assert summary["valid_rmse"] == pytest.approx(best["eval_rmse"])
    test_lines = [r for r in rows if r["kind"] == "test"]
    assert len(test_lines) == 1 and test_lines[0]["test_rmse"] == summary["test_rmse"]
    n_test = sum(1 for _ in open(next((data_dir / "test").iterdir())))
    assert summary["test_count"] == summary["test_total"] == n_test  # unknowns predicted too
    assert bl.load(str(tmp_path)).kind == "bias"
    # evaluate defaults to the best checkpoint and the saved baseline
    evaluated = inference.run_evaluate(Config(**{**cfg.__dict__, "mode": "evaluate",
                                              "path_to_eval_data": str(data_dir / "test")}))
    assert evaluated.rmse == pytest.approx(summary["test_rmse"], rel=1e-6)
    assert evaluated.count == n_test
    # ... and takes the training data, clipping and unknown-rating settings from the run
    bare = inference.run_evaluate(Config(mode="evaluate", logdir=str(tmp_path),
                                      path_to_eval_data=str(data_dir / "test")))
    assert bare.rmse == pytest.approx(summary["test_rmse"], rel=1e-6) and bare.count == n_test


def _scaled_copy(src, dst, factor):
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        lines = [line.split("\t") for line in f.read_text().splitlines() if line]
        dst.joinpath(f.name).write_text("".join(
            f"{u}\t{i}\t{float(r) * factor:g}\n" for u, i, r, *_ in lines))


def test_a_1_to_100_scale_trains_with_a_baseline(data_dir, tmp_path):
    """The paper's momentum recipe (lr 0.005, re-feeding) on ratings x20 diverges on the raw
    ratings and trains on the scaled residuals of a bias baseline."""
    for part in ("train", "valid"):
        _scaled_copy(data_dir / part, tmp_path / f"{part}20", 20.0)
    cfg = Config(path_to_train_data=str(tmp_path / "train20"),
                 path_to_eval_data=str(tmp_path / "valid20"), logdir=str(tmp_path / "run"),
                 hidden_layers=(16, 8), optimizer="momentum", lr=0.005, aug_step=1,
                 drop_prob=0.5, batch_size=16, num_epochs=3, seed=2, progress=False,
                 baseline="bias", unknown="baseline", clip_predictions=True)
    with pytest.raises(TrainingDivergedError):
        trainer.train_and_evaluate(dataclasses.replace(cfg, baseline="none",
                                                      logdir=str(tmp_path / "raw")))
    result = trainer.train_and_evaluate(cfg)
    base = bl.load(str(tmp_path / "run"))
    assert (base.rating_min, base.rating_max) == (20.0, 100.0) and base.scale > 10
    valid = run_data.load_targets(cfg, run_data.load_data(cfg).train, cfg.path_to_eval_data)
    mean_rmse = float(np.sqrt(np.mean((valid.actual - base.mean) ** 2)))
    assert np.isfinite(result["eval_rmse"]) and result["eval_rmse"] < 1.1 * mean_rmse


def test_a_resumed_selector_knows_the_earlier_best(tmp_path):
    assert selection.resumed_selector(str(tmp_path), 3, "rmse").best_epoch == 0
    selection.save_best(str(tmp_path), {"w": np.zeros(1)}, 4, {}, 0.9, "rmse")
    s = selection.resumed_selector(str(tmp_path), 3, "rmse")
    assert (s.best_epoch, s.best_value, s.patience) == (4, 0.9, 3)
    assert not s.update(5, 0.95) and s.update(6, 0.85)
    assert selection.resumed_selector(str(tmp_path), 3, "mae").best_epoch == 0
