"""Ratings relative to a baseline: the bias fit against a direct least-squares solve, residuals,
add-back, the lambda grid, and the baseline.npz round trip."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from deepae_jax import baseline as bl


def _ratings(seed=0, n_rows=9, n_cols=7, density=0.5, lo=1.0, hi=5.0):
    rng = np.random.default_rng(seed)
    mask = rng.random((n_rows, n_cols)) < density
    mask[np.arange(n_rows), rng.integers(0, n_cols, n_rows)] = True  # every row rated
    mask[rng.integers(0, n_rows, n_cols), np.arange(n_cols)] = True  # every column rated
    r, c = np.nonzero(mask)
    v = rng.integers(int(lo), int(hi) + 1, r.size).astype(np.float32)
    return sp.csr_matrix((v, (r, c)), shape=(n_rows, n_cols))


def _lstsq_biases(csr, mu, reg_r, reg_c):
    """argmin sum (r - mu - a_i - b_j)^2 + reg_r |a|^2 + reg_c |b|^2 as one stacked lstsq."""
    coo = csr.tocoo()
    n_r, n_c = csr.shape
    a = np.zeros((coo.nnz + n_r + n_c, n_r + n_c))
    a[np.arange(coo.nnz), coo.row] = 1.0
    a[np.arange(coo.nnz), n_r + coo.col] = 1.0
    a[coo.nnz + np.arange(n_r + n_c), np.arange(n_r + n_c)] = np.sqrt(
        np.r_[np.full(n_r, reg_r), np.full(n_c, reg_c)])
    y = np.r_[coo.data - mu, np.zeros(n_r + n_c)]
    x = np.linalg.lstsq(a, y, rcond=None)[0]
    return x[:n_r], x[n_r:]


def test_bias_als_converges_to_the_regularised_least_squares_solution():
    csr = _ratings()
    mu = float(csr.data.mean())
    rb, cb = bl.bias_als(csr, mu, 2.0, 3.0, sweeps=300)
    want_r, want_c = _lstsq_biases(csr, mu, 2.0, 3.0)
    np.testing.assert_allclose(rb, want_r, atol=1e-6)
    np.testing.assert_allclose(cb, want_c, atol=1e-6)


def test_fit_kinds():
    csr = _ratings(1)
    none = bl.fit(csr, "none")
    assert none.mu == 0 and none.scale == 1 and not none.row_bias.any()
    assert none.mean == pytest.approx(csr.data.mean())
    glob = bl.fit(csr, "global", scale=False)
    assert glob.mu == pytest.approx(csr.data.mean()) and not glob.col_bias.any()
    bias = bl.fit(csr, "bias", 2.0, 3.0, scale=False)
    np.testing.assert_allclose(bias.row_bias, _lstsq_biases(csr, bias.mu, 2.0, 3.0)[0],
                               atol=1e-3)
    assert (bias.rating_min, bias.rating_max) == (csr.data.min(), csr.data.max())
    with pytest.raises(ValueError, match="baseline kind"):
        bl.fit(csr, "median")


def test_residuals_are_scaled_by_their_rms_and_add_back_inverts_them():
    csr = _ratings(2, lo=1, hi=100)  # a 1..100 scale
    b = bl.fit(csr, "bias", 1.0, 1.0)
    coo = csr.tocoo()
    raw = coo.data - (b.mu + b.row_bias[coo.row] + b.col_bias[coo.col])
    assert b.scale == pytest.approx(np.sqrt(np.mean(raw ** 2)))
    res = bl.residual_csr(b, csr)
    assert (res.indptr == csr.indptr).all() and (res.indices == csr.indices).all()
    np.testing.assert_allclose(res.tocoo().data, raw / b.scale, rtol=1e-5, atol=1e-6)
    assert np.sqrt(np.mean(res.data.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-5)
    back = bl.add_back(b, coo.row, coo.col, res.tocoo().data)
    np.testing.assert_allclose(back, coo.data, rtol=1e-5)


def test_a_model_predicting_zero_residual_gives_exactly_the_bias_prediction():
    csr = _ratings(3)
    b = bl.fit(csr, "bias", 2.0, 5.0)
    rows, cols = np.array([0, 3, 8]), np.array([6, 0, 2])
    got = bl.add_back(b, rows, cols, np.zeros(3, np.float32))
    np.testing.assert_array_equal(got, b.mu + b.row_bias[rows] + b.col_bias[cols])


def test_zero_residuals_stay_stored():
    csr = sp.csr_matrix(np.array([[3.0, 3.0], [3.0, 0.0]], np.float32))
    res = bl.residual_csr(bl.fit(csr, "global", scale=False), csr)
    assert res.nnz == 3 and (res.data == bl.ZERO_RESIDUAL).all()


def test_unknown_rows_and_columns_have_zero_bias():
    b = bl.Baseline("bias", 3.0, np.array([0.5, -0.5]), np.array([0.25]), 1.0, 3.0, 1.0, 5.0)
    np.testing.assert_allclose(b.fallback(np.array([-1, 1, -1]), np.array([0, -1, -1])),
                               [3.25, 2.5, 3.0])
    none = bl.Baseline("none", 0.0, np.zeros(2), np.zeros(1), 1.0, 3.7, 1.0, 5.0)
    np.testing.assert_allclose(none.fallback(np.array([-1]), np.array([0])), [3.7])


def test_clip_to_the_training_range():
    b = bl.Baseline("global", 3.0, np.zeros(1), np.zeros(1), 2.0, 3.0, 1.0, 5.0)
    got = bl.add_back(b, np.zeros(3, int), np.zeros(3, int), np.array([-5.0, 0.5, 9.0]),
                      clip=True)
    np.testing.assert_allclose(got, [1.0, 4.0, 5.0])
    assert bl.add_back(b, np.zeros(1, int), np.zeros(1, int), np.array([9.0]))[0] == 21.0


def test_auto_lambdas_are_the_grid_point_best_on_validation():
    csr, valid = _ratings(4, n_rows=30, n_cols=20), _ratings(5, n_rows=30, n_cols=20, density=0.2)
    auto = bl.fit(csr, "bias", -1.0, -1.0, eval_csr=valid, scale=False)
    coo = valid.tocoo()

    def rmse(b):
        return np.sqrt(np.mean((b.offset(coo.row, coo.col) - coo.data) ** 2))
    best = min(rmse(bl.fit(csr, "bias", a, c, scale=False))
               for a in bl.REG_GRID for c in bl.REG_GRID)
    assert rmse(auto) == pytest.approx(best)
    assert auto.reg_row in bl.REG_GRID and auto.reg_col in bl.REG_GRID
    assert rmse(bl.fit(csr, "bias", auto.reg_row, auto.reg_col, scale=False)) == rmse(auto)
    default = bl.fit(csr, "bias", -1.0, -1.0, scale=False)  # no validation data
    np.testing.assert_allclose(default.row_bias, bl.fit(csr, "bias", *bl.DEFAULT_REG,
                                                        scale=False).row_bias)


def test_save_and_load_round_trip(tmp_path):
    b = bl.fit(_ratings(6), "bias", 1.0, 2.0)
    bl.save(str(tmp_path), b)
    got = bl.load(str(tmp_path))
    assert got.kind == "bias" and got.scale == b.scale and got.mean == b.mean
    assert (got.reg_row, got.reg_col) == (1.0, 2.0)
    np.testing.assert_array_equal(got.row_bias, b.row_bias)
    np.testing.assert_array_equal(got.col_bias, b.col_bias)
    assert bl.load(str(tmp_path / "nothing")) is None
