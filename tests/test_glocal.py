"""GLocal-K's trainer (training/glocal.py): one L-BFGS-B epoch against a closed-form minimum, a
short two-stage run lowers the objective and the training RMSE and keeps the VALID-best epoch,
predictions of ratings unknown to training come from the baseline, the schedule's checks; the
I-AutoRec recipe is a valid configuration; and (real data) ``experiments/glocal.py --smoke
--refit`` writes predictions whose RMSE is the one it reports."""
from __future__ import annotations

import json
import os
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from deepae_jax import baseline as baseline_lib
from deepae_jax.config import Config
from deepae_jax.core import kernel_model as km
from deepae_jax.data import ratings
from deepae_jax.data.datasets import synthetic
from deepae_jax.evaluation import predictions
from deepae_jax.training import glocal

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_lbfgs_epoch_reaches_the_minimum_of_a_quadratic():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    h = a @ a.T + 6 * np.eye(6)  # positive definite
    c = rng.normal(size=6)
    h32, c32 = jnp.asarray(h, jnp.float32), jnp.asarray(c, jnp.float32)

    def value_and_grad(p):
        x = p["x"]
        return 0.5 * x @ h32 @ x - c32 @ x, {"x": h32 @ x - c32}

    params, value = glocal.lbfgs_epoch(value_and_grad, {"x": jnp.zeros(6, jnp.float32)}, 50)
    want = np.linalg.solve(h, c)
    np.testing.assert_allclose(np.asarray(params["x"]), want, rtol=1e-3, atol=1e-4)
    assert value == pytest.approx(-0.5 * c @ want, rel=1e-4)


def _tiny():
    spec = synthetic.SyntheticSpec(n_users=60, n_items=30, mean_ratings_per_user=12, seed=3)
    train, held = synthetic.generate(spec)
    m = ratings.build_matrix(train, major="items")
    return m, predictions.align_targets(m, held)


def test_training_lowers_the_objective_and_keeps_the_best_valid_epoch():
    m, valid = _tiny()
    base = baseline_lib.fit(m.csr, "bias", scale=False)
    cfg = km.KernelConfig((m.shape[1], 16, 16), kernel_dim=3, lambda_2=1.0, lambda_s=0.01)
    seen = []

    def score(pred):
        seen.append(predictions.score(glocal.predict_targets(pred, valid, base),
                                      valid.actual).rmse)
        return seen[-1]

    res = glocal.train(m, cfg, glocal.GlocalSchedule(4, 3, 3, 3), seed=1, score_fn=score)
    pre = [h for h in res.history if h["stage"] == "pre"]
    fine = [h for h in res.history if h["stage"] == "fine"]
    assert len(pre) == 4 and len(fine) == 3 and len(seen) == 7
    assert pre[-1]["loss"] < pre[0]["loss"] and fine[-1]["loss"] < pre[0]["loss"]
    assert pre[-1]["train_rmse"] < pre[0]["train_rmse"]
    best = min(range(3), key=lambda i: fine[i]["valid_rmse"])
    assert (res.stage, res.epoch, res.valid_rmse) == ("fine", best + 1, fine[best]["valid_rmse"])
    assert res.predictions.shape == m.shape
    lo, hi = m.csr.data.min(), m.csr.data.max()
    assert res.predictions.min() >= lo and res.predictions.max() <= hi
    assert predictions.score(glocal.predict_targets(res.predictions, valid, base),
                             valid.actual).rmse == pytest.approx(res.valid_rmse)


def test_local_kernel_alone_chooses_among_pretraining_epochs():
    m, _ = _tiny()
    cfg = km.KernelConfig((m.shape[1], 8), kernel_dim=2)
    res = glocal.train(m, cfg, glocal.GlocalSchedule(2, 2, 0, 1), seed=0)
    assert res.stage == "pre" and res.epoch == 2  # no VALID: the last epoch
    with pytest.raises(ValueError, match="columns"):
        glocal.train(m, km.KernelConfig((m.shape[1] + 1, 8)), glocal.GlocalSchedule(1, 1, 0, 1))


def test_predict_targets_uses_the_baseline_for_unknown_rows_and_columns():
    train = ratings.Triples(np.array([1, 1, 2]), np.array([10, 11, 10]),
                            np.array([4.0, 2.0, 5.0], np.float32))
    m = ratings.build_matrix(train, major="items")  # rows: items 10, 11; columns: users 1, 2
    held = ratings.Triples(np.array([2, 3, 1]), np.array([11, 10, 12]),
                           np.array([3.0, 1.0, 5.0], np.float32))
    targets = predictions.align_targets(m, held)
    base = baseline_lib.fit(m.csr, "bias", 1.0, 1.0, scale=False)
    pred = np.array([[4.1, 4.2], [2.5, 3.3]], np.float32)
    got = glocal.predict_targets(pred, targets, base)
    assert got[0] == pytest.approx(3.3)  # item 11 (row 1), user 2 (column 1)
    fallback = np.clip(base.fallback(targets.rows[1:], targets.cols[1:]), 2.0, 5.0)
    np.testing.assert_allclose(got[1:], fallback)


@pytest.mark.parametrize("bad", [dict(pre_iters=0), dict(fine_epochs=-1), dict(patience=-2),
                                 dict(pre_epochs=0, fine_epochs=0)])
def test_schedule_rejects(bad):
    with pytest.raises(ValueError):
        glocal.GlocalSchedule(**bad)


def test_i_autorec_recipe_is_one_hidden_item_based_layer():
    from experiments import flagfiles
    settings = flagfiles.parse_flagfile(str(REPO_ROOT / "experiments" / "recipes" /
                                            "i_autorec.flags"))
    cfg = Config(path_to_train_data="x", path_to_eval_data="y", **settings)  # validated
    assert (cfg.major, cfg.hidden_layers, cfg.non_linearity_type) == ("items", (500,), "sigmoid")
    assert cfg.skip_last_layer_nl and cfg.l2_weights > 0 and cfg.drop_prob == 0
    assert cfg.baseline == "none"


def test_experiment_smoke_writes_the_predictions_it_scores(shared_data, tmp_path):
    from experiments import glocal as experiment
    args = experiment.parse_flags(["--data_dir", str(shared_data / "movielens-100k"), "--smoke",
                              "--out", str(tmp_path), "--seed", "3", "--refit"])
    s = experiment.run(args)
    with open(os.path.join(s["folder"], "summary.json"), encoding="utf-8") as fh:
        assert json.load(fh)["test_rmse"] == s["test_rmse"]
    for part, name in (("valid", "valid_predictions"), ("test", "test_predictions"),
                       ("test", "test_predictions_refit")):
        path = os.path.join(s["folder"], f"{name}.tsv")
        with open(path, encoding="utf-8") as fh:
            assert fh.readline() == "user\titem\trating\tprediction\n"
        table = np.loadtxt(path, skiprows=1)
        rmse = float(np.sqrt(np.mean((table[:, 3] - table[:, 2]) ** 2)))
        assert rmse == pytest.approx(s[f"{'refit_' if 'refit' in name else ''}{part}_rmse"],
                                     abs=1e-5)
        written = ratings.load_triples(os.path.join(tmp_path, "data", "smoke_ml100k_u1_seed0",
                                                    part.upper()))
        np.testing.assert_array_equal(table[:, 0], written.users)  # the split file's order
        np.testing.assert_array_equal(table[:, 1], written.items)
    assert s["test_count"] == len(np.loadtxt(os.path.join(s["folder"], "test_predictions.tsv"),
                                             skiprows=1))


def test_experiment_table_averages_the_seeds(tmp_path):
    from experiments import glocal as experiment
    for seed, (v, t) in enumerate([(0.90, 0.91), (0.92, 0.95)]):
        (tmp_path / f"u1_seed{seed}").mkdir()
        (tmp_path / f"u1_seed{seed}" / "summary.json").write_text(json.dumps(
            {"seed": seed, "chosen": ["fine", 3 + seed], "valid_rmse": v, "test_rmse": t,
             "wall_s": 120.0}))
    (tmp_path / "u1_seed9_smoke").mkdir()  # smoke runs are not counted
    (tmp_path / "u1_seed9_smoke" / "summary.json").write_text("{}")
    text = experiment.table(str(tmp_path))
    assert "| 1 | fine 4 | 0.9200 | 0.9500 | - | 2 |" in text
    assert f"| mean ± sd of 2 | test_rmse | 0.9300 ± {np.std([0.91, 0.95], ddof=1):.4f}" in text
    assert "refit_test_rmse" not in text
