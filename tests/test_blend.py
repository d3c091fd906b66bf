"""The final predictor chosen on VALID (evaluation/blend.py): the least-squares shrinkage against
a plain computation, the floor (never worse on VALID than the baseline, by construction, also
when the autoencoder is deliberately bad), and every use of the run predicting with the choice."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from deepae_jax import baseline as bl
from deepae_jax import inference
from deepae_jax.config import Config
from deepae_jax.evaluation import blend, scoring
from deepae_jax.run import checkpoint as ckpt
from deepae_jax.settings import ConfigError
from deepae_jax.run import files
from deepae_jax.training import trainer
from conftest import bias_run_config


def residuals(n=400, noise=1.0, signal=0.5, seed=0, n_rows=30, n_cols=20):
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(0, n_rows, n), rng.integers(0, n_cols, n)
    base = 3.5 + rng.normal(0, 0.3, n)
    truth = rng.normal(0, 1, n)
    actual = base + signal * truth + rng.normal(0, 0.3, n)
    z = truth + rng.normal(0, noise, n)  # the autoencoder's residual: signal plus noise
    return blend.Residuals(base, z, actual, rows, cols, None)


def test_the_shrinkage_is_the_plain_least_squares_fit():
    r = residuals()
    counts_r, counts_c = np.arange(1, 31), np.arange(5, 25)
    for k_row, k_col in [(0.0, 0.0), (3.0, 10.0)]:
        g = (counts_r[r.rows] / (counts_r[r.rows] + k_row)) * (
            counts_c[r.cols] / (counts_c[r.cols] + k_col))
        x = (g * r.z)[:, None]
        a_plain = np.linalg.lstsq(x, r.actual - r.base, rcond=None)[0][0]
        best = blend.best_blend(r, counts_r, counts_c, grid=(k_row,))
        if k_row == k_col:
            assert best.shrink == pytest.approx(a_plain, rel=1e-10)
            pred = r.base + a_plain * g * r.z
            assert best.valid_rmse == pytest.approx(np.sqrt(np.mean((pred - r.actual) ** 2)))
        assert blend.fit_shrink(r.actual - r.base, x[:, 0]) == pytest.approx(a_plain, rel=1e-10)
    assert blend.fit_shrink(np.ones(3), np.zeros(3)) == 0.0


@pytest.mark.parametrize("noise", [0.0, 1.0, 20.0])
def test_the_chosen_predictor_is_never_worse_on_valid_than_the_baseline_or_the_model(noise):
    r = residuals(noise=noise)
    chosen, scored = blend.choose(r, np.full(30, 5), np.full(20, 7), "auto")
    by_name = {c.name: c for c in scored}
    assert chosen.valid_rmse <= by_name["baseline"].valid_rmse
    assert chosen.valid_rmse <= by_name["model"].valid_rmse
    if noise == 20.0:  # a useless autoencoder: the blend shrinks it nearly away
        assert abs(by_name["blend"].shrink) < 0.1
        assert by_name["model"].valid_rmse > 2 * by_name["baseline"].valid_rmse
    for mode in ("model", "baseline", "blend"):
        assert blend.choose(r, np.full(30, 5), np.full(20, 7), mode)[0].name == mode
    with pytest.raises(ValueError, match="final predictor"):
        blend.choose(r, np.ones(30), np.ones(20), "best")


def fitted_baseline():
    rng = np.random.default_rng(1)
    dense = rng.integers(1, 6, (6, 5)).astype(np.float32) * (rng.random((6, 5)) < 0.7)
    csr = sp.csr_matrix(dense)
    return csr, bl.fit(csr, "bias", 2.0, 2.0, shifted_input=True)


def test_the_choice_is_folded_into_the_baseline_and_saved(tmp_path):
    csr, base = fitted_baseline()
    n_r, n_c = blend.training_counts(csr)
    chosen = blend.Candidate("blend", 0.7, 3.0, 10.0, 0.0)
    mixed = blend.apply(base, chosen, n_r, n_c)
    rows, cols = np.array([0, 2, 5, -1]), np.array([1, 4, 0, 2])
    out = np.array([0.3, -1.2, 0.5, 0.9])
    expected = base.offset(rows, cols) + base.scale * out * 0.7 * np.where(
        rows >= 0, n_r[np.maximum(rows, 0)] / (n_r[np.maximum(rows, 0)] + 3.0), 1.0) * (
        n_c[cols] / (n_c[cols] + 10.0))
    np.testing.assert_allclose(bl.add_back(mixed, rows, cols, out), expected)
    np.testing.assert_allclose(bl.add_back(mixed.unblended(), rows, cols, out),
                               bl.add_back(base, rows, cols, out))
    bl.save(str(tmp_path), mixed)
    again = bl.load(str(tmp_path))
    np.testing.assert_allclose(bl.add_back(again, rows, cols, out), expected)
    assert again.blend_k == (3.0, 10.0) and again.shrink == 0.7
    only = blend.apply(base, blend.Candidate("baseline", 0.0, 0, 0, 0), n_r, n_c)
    np.testing.assert_allclose(bl.add_back(only, rows, cols, out), base.offset(rows, cols))
    assert blend.apply(mixed, blend.Candidate("model", 1, 0, 0, 0), n_r, n_c).row_gain is None


def test_recommend_scores_use_the_same_gains(tiny_model):
    root, cfg = tiny_model
    restored = ckpt.restore(cfg.logdir)
    train = trainer.load_data(cfg, vocab=(restored.row_ids, restored.col_ids)).train
    base = bl.fit(train.csr, "bias", 2.0, 2.0)
    n_r, n_c = blend.training_counts(train.csr)
    mixed = blend.apply(base, blend.Candidate("blend", 0.6, 1.0, 3.0, 0.0), n_r, n_c)
    rows = np.array([0, 3, 7])
    x = np.asarray(bl.model_input(base, train.csr[rows]).todense(), np.float32)
    got = np.asarray(scoring.rating_scores(restored.params, x, restored.model_cfg, mixed, rows))
    out = np.asarray(scoring.reconstruct(restored.params, x, restored.model_cfg))
    r, c = np.repeat(rows, x.shape[1]), np.tile(np.arange(x.shape[1]), len(rows))
    want = bl.add_back(mixed, r, c, out.reshape(-1)).reshape(got.shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_final_predictor_needs_the_bias_baseline_and_validation():
    with pytest.raises(ConfigError, match="--final_predictor='auto'"):
        Config(path_to_train_data="t", path_to_eval_data="v", final_predictor="auto")
    with pytest.raises(ConfigError, match="final_predictor"):
        Config(path_to_train_data="t", baseline="bias", final_predictor="blend")
    with pytest.raises(ConfigError, match="choose one of"):
        Config(path_to_train_data="t", final_predictor="best")
    Config(path_to_train_data="t", path_to_eval_data="v", baseline="bias",
           final_predictor="auto")


def test_a_bad_autoencoder_ends_no_worse_than_the_baseline_everywhere(tmp_path):
    cfg = bias_run_config(tmp_path, hidden_layers=(64,), lr=0.3, num_epochs=2,
                          clip_predictions=True, final_predictor="auto")
    trainer.train_and_evaluate(cfg)  # lr 0.3: an autoencoder far worse than the biases
    summary = json.load(open(tmp_path / "run" / files.SUMMARY_FILE))
    cands = {c["name"]: c["valid_rmse"] for c in summary["final_predictor_candidates"]}
    assert cands["model"] > cands["baseline"]  # the autoencoder is bad indeed
    assert summary["final_predictor"] != "model"
    assert summary["final_predictor_valid_rmse"] <= cands["baseline"]
    # TEST = VALID here: the trainer scored the chosen predictor, and so does --mode=evaluate
    assert summary["test_rmse"] == pytest.approx(summary["final_predictor_valid_rmse"])
    assert summary["test_rmse"] <= summary["test_baseline_rmse"] + 1e-12
    ev = Config(mode="evaluate", path_to_eval_data=cfg.path_to_eval_data, logdir=cfg.logdir,
                progress=False)
    assert inference.run_evaluate(ev).rmse == pytest.approx(summary["test_rmse"])


def test_auto_keeps_the_baseline_when_the_gain_on_valid_is_within_noise():
    r = residuals(n=60, noise=30.0, signal=0.0, seed=3)  # an autoencoder of pure noise
    chosen, scored = blend.choose(r, np.full(30, 5), np.full(20, 7), "auto")
    by_name = {c.name: c for c in scored}
    assert by_name["blend"].valid_rmse <= by_name["baseline"].valid_rmse  # fits some noise
    assert chosen.name == "baseline"
    strong = residuals(n=2000, noise=0.2, signal=1.0, seed=3)
    assert blend.choose(strong, np.full(30, 5), np.full(20, 7), "auto")[0].name != "baseline"
    d = (strong.actual - strong.base) ** 2 - (strong.actual - strong.base - strong.z) ** 2
    assert blend.gain_z(strong, 1.0) == pytest.approx(d.mean() / (d.std(ddof=1) / np.sqrt(2000)))
