"""--metrics on trained models of both majors: plain-Python recomputation, runner wiring."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from deepae_jax.evaluation import metrics
from deepae_jax import inference
from deepae_jax.core import model
from deepae_jax.training import trainer
from deepae_jax.config import Config
from deepae_jax.data.datasets import synthetic
from deepae_jax.evaluation.protocol import evaluate
from test_ranking import plain_metrics

SPEC = synthetic.SyntheticSpec(n_users=90, n_items=30, mean_ratings_per_user=10, seed=4)
METRICS = "rmse,mae,precision@3,recall@3,ndcg@3,map@3,hit@3,coverage@3,ndcg@40"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{major: (cfg, train_result)} of a 1-epoch run per major, with --metrics."""
    root = tmp_path_factory.mktemp("metrics")
    synthetic.ensure_dataset(str(root / "train"), str(root / "valid"), SPEC)
    out = {}
    for major in ("users", "items"):
        cfg = Config(path_to_train_data=str(root / "train"), path_to_eval_data=str(root / "valid"),
                     logdir=str(root / major), hidden_layers=(8,), lr=0.01, optimizer="adam",
                     batch_size=8, num_epochs=1, progress=False, major=major, metrics=METRICS,
                     eval_batch_size=16)
        out[major] = (cfg, trainer.train_and_evaluate(cfg))
    return out


def plain(cfg, threshold=0.0):
    """Every metric recomputed from the dense user x item matrices with plain Python."""
    data, model_cfg, params, _ = inference.restore_for_inference(
        dataclasses.replace(cfg, mode="evaluate"))
    train, held = data.train.csr.toarray(), data.eval.csr.toarray()
    out = np.asarray(model.apply(params, train, model_cfg))
    errors = (out - held)[held != 0]
    if cfg.major == "items":  # a user's scores = the user's column of the reconstruction
        train, held, out = train.T, held.T, out.T
    users = [u for u in range(held.shape[0]) if (held[u] != 0).any()]
    relevant = held >= threshold if threshold else held != 0
    kept = [u for u in users if relevant[u].any()]
    result = {"rmse": float(np.sqrt(np.mean(errors ** 2))), "mae": float(np.abs(errors).mean()),
              "ranking_users": len(kept), "ranking_users_skipped": len(users) - len(kept)}
    for k in (3, 40):
        sums, shown = plain_metrics(out[kept].tolist(), (train[kept] != 0).tolist(),
                                    relevant[kept].tolist(), k)
        result.update({f"{m}@{k}": v / len(kept) for m, v in sums.items()})
        result[f"coverage@{k}"] = len(shown) / train.shape[1]
    return data, model_cfg, params, result


@pytest.mark.parametrize("major", ["users", "items"])
def test_metrics_match_plain_python(runs, major):
    cfg, result = runs[major]
    data, model_cfg, params, expected = plain(cfg)
    got = metrics.evaluate_metrics(params, model_cfg, data, cfg)
    assert list(got)[:9] == METRICS.split(",")
    for name, value in got.items():
        if name in expected:
            assert value == pytest.approx(expected[name], rel=1e-4, abs=1e-6), name
    assert got["ranking_users"] == expected["ranking_users"] > 0
    assert got["rmse"] == pytest.approx(evaluate(params, model_cfg, data.train.csr,
                                                 data.eval.csr).rmse, rel=1e-6)
    # the epoch loop recorded the same figures for the (only) epoch
    assert result["eval_ndcg@3"] == pytest.approx(got["ndcg@3"], rel=1e-5)
    rows = [json.loads(line) for line in open(f"{cfg.logdir}/metrics.jsonl")]
    epoch = [r for r in rows if r["kind"] == "epoch"][-1]
    assert epoch["eval_map@3"] == pytest.approx(got["map@3"], rel=1e-5)
    assert epoch["eval_ranking_users_skipped"] == 0


def test_relevance_threshold_skips_and_counts_users(runs):
    cfg, _ = runs["users"]
    cfg = dataclasses.replace(cfg, relevance_threshold=5.0)
    data, model_cfg, params, expected = plain(cfg, threshold=5.0)
    got = metrics.evaluate_metrics(params, model_cfg, data, cfg)
    assert got["ranking_users_skipped"] == expected["ranking_users_skipped"] > 0
    for name in ("recall@3", "ndcg@3", "map@3", "coverage@3"):
        assert got[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-6), name


def test_evaluate_mode_prints_and_writes_json(runs, tmp_path, caplog):
    cfg, _ = runs["items"]
    path = tmp_path / "m.json"
    ev = dataclasses.replace(cfg, mode="evaluate", metrics="mae,hit@3", metrics_path=str(path))
    with caplog.at_level("INFO", logger="deepae_jax.results"):  # standard output in the CLI
        result = inference.run_evaluate(ev)
    saved = json.loads(path.read_text())
    assert list(saved) == ["rmse", "eval_ratings", "eval_ratings_dropped", "mae", "hit@3",
                           "ranking_users", "ranking_users_skipped"]
    assert saved["rmse"] == pytest.approx(result.rmse) and saved["eval_ratings"] == result.count
    out = caplog.text
    assert f"hit@3 {saved['hit@3']:.4f}" in out and "ranked" in out


def test_epoch_line_shows_the_metrics(runs, caplog):
    cfg, _ = runs["users"]
    with caplog.at_level("INFO", logger="deepae_jax.results"):  # standard output in the CLI
        trainer.train_and_evaluate(dataclasses.replace(cfg, num_epochs=2, resume=True,
                                                      metrics="mae,recall@3"))
    line = [r.getMessage() for r in caplog.records
            if r.getMessage().startswith("epoch 2/2")][0]
    assert "eval RMSE" in line and " mae " in line and "recall@3 " in line
    assert "(ranked" in line


def test_evaluate_takes_the_major_and_data_from_the_run(runs, tmp_path):
    """A bare --mode=evaluate (no --major, no training data) of an item-based model ranks
    every user with held-out ratings, as the run itself did."""
    cfg, _ = runs["items"]
    path = tmp_path / "bare.json"
    inference.run_evaluate(Config(mode="evaluate", logdir=cfg.logdir,
                               path_to_eval_data=cfg.path_to_eval_data, metrics="hit@3",
                               metrics_path=str(path)))
    full = inference.evaluate_saved(dataclasses.replace(cfg, mode="evaluate", metrics="hit@3"))[1]
    bare = json.loads(path.read_text())
    assert bare["ranking_users"] == full["ranking_users"] > SPEC.n_items
    assert bare["hit@3"] == pytest.approx(full["hit@3"])
