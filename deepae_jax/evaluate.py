"""Evaluation (PAPER.md's protocol, batched) and per-rating predictions.

For each evaluation row: input = the row's TRAINING vector, targets = its evaluation ratings.
RMSE = sqrt(sum of squared errors over all evaluation ratings / their number). Batching only
groups rows; every row is reconstructed independently, so the figure equals the reference's
one-row-at-a-time loop.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from deepae_jax import model
from deepae_jax.data.batching import bucket_length, dense_rows, padded_rows
from deepae_jax.losses import rmse_from_sums


@functools.partial(jax.jit, static_argnames=("model_cfg",))
def predict_at(params: model.Params, x: jax.Array, cols: jax.Array,
               model_cfg: model.ModelConfig) -> jax.Array:
    """f(x)[b, cols[b, j]]: predictions (batch, L) at the given columns, in evaluation mode."""
    outputs = model.apply(params, x, model_cfg, train=False)
    return jnp.take_along_axis(outputs, cols, axis=1)


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Sum of squared errors, number of evaluation ratings, and their RMSE."""

    sse: float
    count: int

    @property
    def rmse(self) -> float:
        return rmse_from_sums(self.sse, self.count)


def _eval_batches(train_csr: sp.csr_matrix, eval_csr: sp.csr_matrix, rows: np.ndarray,
                  batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """(dense train inputs, eval columns, eval values, number of real rows), padded to batch_size."""
    length = bucket_length(int(np.diff(eval_csr.indptr)[rows].max(initial=0)))
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        real = len(chunk)
        if real < batch_size:  # pad with copies of a real row whose targets are masked out
            chunk = np.concatenate([chunk, np.full(batch_size - real, chunk[0])])
        cols, vals = padded_rows(eval_csr, chunk, length)
        vals[real:] = 0.0
        yield dense_rows(train_csr, chunk), cols, vals, real


def predict_eval_ratings(params: model.Params, model_cfg: model.ModelConfig,
                         train_csr: sp.csr_matrix, eval_csr: sp.csr_matrix,
                         rows: np.ndarray | None = None, batch_size: int = 256
                         ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Yields (rows, cols, predictions, actual) arrays for every stored rating of ``eval_csr``.

    Dense row/column indices; the predictions are f(training vector of the row) at the column.
    """
    if rows is None:
        rows = np.flatnonzero(np.diff(eval_csr.indptr) > 0)
    for start, (x, cols, vals, real) in zip(
            range(0, len(rows), batch_size),
            _eval_batches(train_csr, eval_csr, rows, batch_size)):
        pred = np.asarray(predict_at(params, x, cols, model_cfg))
        observed = vals[:real] != 0
        row_idx = np.broadcast_to(rows[start:start + real, None], observed.shape)
        yield row_idx[observed], cols[:real][observed], pred[:real][observed], vals[:real][observed]


def evaluate(params: model.Params, model_cfg: model.ModelConfig, train_csr: sp.csr_matrix,
             eval_csr: sp.csr_matrix, rows: np.ndarray | None = None,
             batch_size: int = 256) -> EvalResult:
    """RMSE of the model on the evaluation ratings (PAPER.md's protocol), batched."""
    sse, count = 0.0, 0
    for _, _, pred, actual in predict_eval_ratings(params, model_cfg, train_csr, eval_csr,
                                                   rows, batch_size):
        sse += float(np.sum((pred.astype(np.float64) - actual) ** 2))
        count += actual.size
    return EvalResult(sse, count)
