"""Masked mean squared error (MMSE) of the paper: errors only where the target is observed."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def mmse_sums(predictions: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum of squared errors over observed targets, number of observed targets).

    A target is observed where it is non-zero (0 means "unrated"), as in the reference.
    """
    mask = (targets != 0).astype(predictions.dtype)
    return jnp.sum(mask * (predictions - targets) ** 2), jnp.sum(mask)


def mmse(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """MMSE = sum_i m_i (r_i - y_i)^2 / sum_i m_i over the whole batch (0 when nothing observed)."""
    sse, count = mmse_sums(predictions, targets)
    return sse / jnp.maximum(count, 1.0)


def rmse_from_sums(sse: float, count: float) -> float:
    """RMSE = sqrt(total squared error / total count); NaN when count is 0."""
    return float("nan") if count == 0 else float((sse / count) ** 0.5)
