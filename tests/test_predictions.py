"""A prediction for every rating asked for: alignment with unknown rows/columns, the baseline
added back to the model's output, clipping, and the scores (against plain numpy)."""
from __future__ import annotations

import numpy as np
import pytest

from deepae_jax import baseline as bl
from deepae_jax.evaluation import predictions
from deepae_jax.data import ratings


def _train():
    t = ratings.Triples(np.array([1, 1, 2, 5, 5]), np.array([10, 20, 10, 20, 30]),
                        np.array([4.0, 2.0, 5.0, 3.0, 1.0], np.float32))
    return ratings.build_matrix(t, "users")


def _targets(train):
    # user 9 and item 99 are unknown to training
    t = ratings.Triples(np.array([5, 9, 1, 2, 2]), np.array([10, 10, 30, 99, 20]),
                        np.array([2.0, 4.0, 5.0, 1.0, 3.0], np.float32))
    return predictions.align_targets(train, t)


def constant_model(value):
    """A stand-in for ``evaluate.predict_eval_ratings``: output ``value`` at every rating."""
    def run(params, model_cfg, train_csr, eval_csr, rows, batch_size):
        coo = eval_csr.tocoo()
        yield coo.row, coo.col, np.full(coo.nnz, value, np.float32), coo.data
    return run


def test_align_marks_unknown_rows_and_columns():
    t = _targets(_train())
    np.testing.assert_array_equal(t.rows, [2, -1, 0, 1, 1])
    np.testing.assert_array_equal(t.cols, [0, 0, 2, -1, 1])
    assert t.n_unknown == 2 and t.split.nnz == 3


def test_zero_residual_model_gives_the_bias_prediction_and_unknowns_the_baseline():
    train = _train()
    t = _targets(train)
    base = bl.fit(train.csr, "bias", 1.0, 1.0)
    pred = predictions.predict_all(None, None, train.csr, base, t, unknown="baseline",
                               predict_fn=constant_model(0.0))
    mu, rb, cb = base.mu, base.row_bias, base.col_bias
    want = [mu + rb[2] + cb[0], mu + cb[0], mu + rb[0] + cb[2], mu + rb[1], mu + rb[1] + cb[1]]
    np.testing.assert_allclose(pred, want)
    dropped = predictions.predict_all(None, None, train.csr, base, t, unknown="drop",
                                  predict_fn=constant_model(0.0))
    assert np.isnan(dropped[[1, 3]]).all()
    np.testing.assert_allclose(dropped[[0, 2, 4]], np.asarray(want)[[0, 2, 4]])


def test_outputs_are_scaled_added_back_and_clipped():
    train = _train()
    t = _targets(train)
    base = bl.fit(train.csr, "global")
    pred = predictions.predict_all(None, None, train.csr, base, t, unknown="baseline",
                               predict_fn=constant_model(10.0))
    known = t.known
    np.testing.assert_allclose(pred[known], base.mean + 10.0 * base.scale)
    np.testing.assert_allclose(pred[~known], base.mean)
    clipped = predictions.predict_all(None, None, train.csr, base, t, clip=True,
                                  unknown="baseline", predict_fn=constant_model(10.0))
    np.testing.assert_allclose(clipped[known], 5.0)


def test_no_baseline_passes_the_output_through_and_unknowns_get_the_mean():
    train = _train()
    t = _targets(train)
    base = bl.fit(train.csr, "none")
    pred = predictions.predict_all(None, None, train.csr, base, t, unknown="baseline",
                               predict_fn=constant_model(4.5))
    np.testing.assert_allclose(pred[t.known], 4.5)
    np.testing.assert_allclose(pred[~t.known], train.csr.data.mean(), rtol=1e-6)


def test_scores_count_every_predicted_rating():
    pred = np.array([1.0, np.nan, 3.0, 5.0])
    actual = np.array([2.0, 4.0, 3.0, 3.0])
    s = predictions.score(pred, actual)
    assert (s.count, s.total) == (3, 4)
    assert s.rmse == pytest.approx(np.sqrt((1 + 0 + 4) / 3))
    assert s.mae == pytest.approx(1.0)
    assert "over 3 ratings (1 dropped" in s.describe()


def test_baseline_scores():
    train = _train()
    t = _targets(train)
    base = bl.fit(train.csr, "global")
    s = predictions.baseline_scores(base, t)
    assert s.count == 5
    assert s.rmse == pytest.approx(np.sqrt(np.mean((t.actual - base.mean) ** 2)))
    assert predictions.baseline_scores(base, t, unknown="drop").count == 3
