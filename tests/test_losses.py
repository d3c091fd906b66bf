"""Masked MSE (PAPER.md, "Loss: masked MMSE") against sums written out by hand."""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from deepae_jax.core import losses

# Two users, four items; 0 = unrated. Observed targets: (0,0)=5, (0,2)=3, (1,1)=1, (1,3)=4.
TARGETS = np.array([[5.0, 0.0, 3.0, 0.0],
                    [0.0, 1.0, 0.0, 4.0]], np.float32)
PREDICTIONS = np.array([[4.0, 2.5, 3.5, -1.0],
                        [9.0, 2.0, 0.0, 1.0]], np.float32)
# Squared errors on the observed entries only: (4-5)^2 + (3.5-3)^2 + (2-1)^2 + (1-4)^2.
HAND_SSE = 1.0 + 0.25 + 1.0 + 9.0
HAND_COUNT = 4.0


def test_mmse_sums_hand_computed():
    sse, count = losses.mmse_sums(jnp.asarray(PREDICTIONS), jnp.asarray(TARGETS))
    assert float(sse) == pytest.approx(HAND_SSE, rel=1e-6)
    assert float(count) == HAND_COUNT


def test_mmse_hand_computed():
    value = losses.mmse(jnp.asarray(PREDICTIONS), jnp.asarray(TARGETS))
    assert float(value) == pytest.approx(HAND_SSE / HAND_COUNT, rel=1e-6)


def test_mmse_ignores_predictions_on_unrated_entries():
    """Changing predictions where the target is 0 leaves the loss unchanged."""
    changed = PREDICTIONS.copy()
    changed[TARGETS == 0] += 100.0
    a = losses.mmse(jnp.asarray(PREDICTIONS), jnp.asarray(TARGETS))
    b = losses.mmse(jnp.asarray(changed), jnp.asarray(TARGETS))
    assert float(a) == float(b)


def test_mmse_mask_is_target_nonzero_not_positive():
    """A negative target (e.g. a re-fed dense output) counts as observed: the mask is r != 0."""
    targets = np.array([[-2.0, 0.0, 0.5]], np.float32)
    preds = np.array([[1.0, 7.0, 0.0]], np.float32)
    sse, count = losses.mmse_sums(jnp.asarray(preds), jnp.asarray(targets))
    assert float(count) == 2.0
    assert float(sse) == pytest.approx(9.0 + 0.25, rel=1e-6)
    assert float(losses.mmse(jnp.asarray(preds), jnp.asarray(targets))) == pytest.approx(
        9.25 / 2, rel=1e-6)


def test_mmse_is_batch_mean_not_mean_of_row_means():
    """The reference divides the batch's total squared error by the batch's total count."""
    targets = np.array([[1.0, 0.0, 0.0, 0.0],
                        [2.0, 2.0, 2.0, 2.0]], np.float32)
    preds = np.array([[3.0, 0.0, 0.0, 0.0],     # one error of 2 -> 4
                      [2.0, 2.0, 2.0, 3.0]], np.float32)   # one error of 1 -> 1
    value = float(losses.mmse(jnp.asarray(preds), jnp.asarray(targets)))
    assert value == pytest.approx((4.0 + 1.0) / 5.0, rel=1e-6)
    assert value != pytest.approx((4.0 / 1 + 1.0 / 4) / 2, rel=1e-3)


def test_mmse_nothing_observed_is_zero():
    preds = jnp.ones((2, 3), jnp.float32)
    targets = jnp.zeros((2, 3), jnp.float32)
    sse, count = losses.mmse_sums(preds, targets)
    assert float(sse) == 0.0 and float(count) == 0.0
    assert float(losses.mmse(preds, targets)) == 0.0


def test_mmse_random_against_numpy():
    rng = np.random.default_rng(0)
    targets = rng.integers(1, 6, size=(7, 11)).astype(np.float32)
    targets[rng.random(targets.shape) < 0.7] = 0.0
    preds = rng.normal(3.0, 1.5, size=targets.shape).astype(np.float32)
    mask = targets != 0
    expected_sse = float(np.sum((preds.astype(np.float64) - targets)[mask] ** 2))
    sse, count = losses.mmse_sums(jnp.asarray(preds), jnp.asarray(targets))
    assert float(count) == mask.sum()
    assert float(sse) == pytest.approx(expected_sse, rel=1e-5)
    assert float(losses.mmse(jnp.asarray(preds), jnp.asarray(targets))) == pytest.approx(
        expected_sse / mask.sum(), rel=1e-5)


def test_rmse_from_sums():
    assert losses.rmse_from_sums(HAND_SSE, HAND_COUNT) == pytest.approx(
        math.sqrt(11.25 / 4), rel=1e-12)
    assert losses.rmse_from_sums(8.0, 2) == pytest.approx(2.0, rel=1e-12)
    assert losses.rmse_from_sums(0.0, 5) == 0.0
    assert isinstance(losses.rmse_from_sums(np.float32(8.0), np.int64(2)), float)
    assert math.isnan(losses.rmse_from_sums(0.0, 0))
