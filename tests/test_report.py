"""training/report.py: what a run tells its user (baselines, the epoch line in rating units,
the end-of-run summary, curves.png, report.md) and --keep_checkpoints, on a tiny real run."""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

from deepae_jax import baseline as baseline_lib
from deepae_jax.config import Config
from deepae_jax.data.datasets import synthetic
from deepae_jax.training import trainer

SPEC = synthetic.SyntheticSpec(n_users=150, n_items=50, mean_ratings_per_user=12, seed=4)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(logdir, config, the results log lines) of a 3-epoch run with a bias baseline, a test
    set and --keep_checkpoints=1."""
    root = tmp_path_factory.mktemp("report")
    synthetic.ensure_dataset(str(root / "train"), str(root / "valid"), SPEC)
    cfg = Config(path_to_train_data=str(root / "train"), path_to_eval_data=str(root / "valid"),
                 path_to_test_data=str(root / "valid"), logdir=str(root / "run"),
                 hidden_layers=(8,), batch_size=16, lr=0.01, num_epochs=3, save_every=1,
                 baseline="bias", keep_checkpoints=1, progress=False, seed=2)
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    results = logging.getLogger("deepae_jax.results")
    results.addHandler(handler)
    results.setLevel(logging.INFO)
    try:
        trainer.train_and_evaluate(cfg)
    finally:
        results.removeHandler(handler)
    return cfg.logdir, cfg, seen


def epochs(logdir):
    rows = [json.loads(line) for line in open(os.path.join(logdir, "metrics.jsonl"))]
    return [r for r in rows if r["kind"] == "epoch"], [r for r in rows if r["kind"] == "baseline"]


def test_train_rmse_is_in_rating_units(run):
    logdir, _, _ = run
    rows, _ = epochs(logdir)
    scale = baseline_lib.load(logdir).scale
    assert scale != pytest.approx(1.0, abs=1e-3)  # else this test could not tell the units
    for r in rows:
        assert r["train_rmse"] == pytest.approx(r["train_residual_rmse"] * scale)


def test_epoch_lines_and_summary_go_to_the_results_log(run):
    logdir, _, seen = run
    rows, baselines = epochs(logdir)
    lines = [s for s in seen if s.startswith("epoch ")]
    assert len(lines) == 3 and f"train RMSE {rows[-1]['train_rmse']:.4f}" in lines[-1]
    summary = json.load(open(os.path.join(logdir, "summary.json")))
    assert f"model: {summary['best_checkpoint']} (epoch {summary['best_epoch']}, the best " \
           "validation rmse)" in seen
    test = [s for s in seen if s.startswith("test RMSE ")]
    assert test and f"{summary['test_rmse']:.4f}" in test[0]
    assert f"{summary['test_baseline_rmse']:.4f}" in test[0]
    assert any(s.startswith("total time ") for s in seen)
    assert baselines and baselines[0]["bias_rmse"] > 0


def test_report_and_curves_are_written(run):
    logdir, _, _ = run
    report = open(os.path.join(logdir, "report.md")).read()
    summary = json.load(open(os.path.join(logdir, "summary.json")))
    assert f"kept: epoch {summary['best_epoch']}" in report
    assert f"test_rmse: {summary['test_rmse']:.4f}" in report and "## Baselines" in report
    pytest.importorskip("matplotlib")
    assert open(os.path.join(logdir, "curves.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_keep_checkpoints_keeps_the_newest_and_the_best(run):
    logdir, _, _ = run
    files = sorted(f for f in os.listdir(logdir) if f.endswith(".msgpack"))
    assert files == ["best.msgpack", "checkpoint_00003.msgpack"]
