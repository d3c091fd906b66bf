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

from deepae_jax import model, sparse
from deepae_jax.data.batching import (bucket_fine, bucket_length, packed_rows,
                                        padded_rows)
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


@functools.partial(jax.jit, static_argnames=("model_cfg", "dtype"))
def predict_sparse_at(params: model.Params, batch: dict, cols: jax.Array,
                      model_cfg: model.ModelConfig, dtype: str = "float32") -> jax.Array:
    """Like :func:`predict_at` for a sparse input batch (``deepae_jax.sparse`` layouts): the
    first layer is a gather-sum over the observed items and the output layer is evaluated only
    at ``cols`` (B, L). Same numbers as the dense path up to float rounding."""
    dot = sparse.make_dot(dtype)
    slots = sparse.Slots.from_batch(batch)
    h = sparse.hidden_sparse(params, slots, model_cfg, dot)  # (B, h)
    w_rows = model.output_rows(params)  # (n, h)
    b, length = cols.shape
    w_at = jnp.take(w_rows, cols.reshape(-1), axis=0).reshape(b, length, w_rows.shape[1])
    pre = jnp.einsum("bh,blh->bl", h, w_at) + jnp.take(params["decoder"][-1]["b"], cols)
    return model.output_activation(model_cfg)(pre)


def _eval_batches(train_csr: sp.csr_matrix, eval_csr: sp.csr_matrix, rows: np.ndarray,
                  batch_size: int) -> Iterator[tuple[dict, np.ndarray, np.ndarray, int]]:
    """(packed sparse train inputs, eval columns, eval values, number of real rows), each batch
    padded to batch_size rows; one input width and one eval width for all batches (one
    compiled shape)."""
    if len(rows) == 0:
        return
    n_batches = -(-len(rows) // batch_size)
    padded = np.concatenate([rows, np.full(n_batches * batch_size - len(rows), rows[0])])
    counts = np.diff(train_csr.indptr)[padded].reshape(n_batches, batch_size)
    width = bucket_fine(-(-int(counts.sum(axis=1).max()) // batch_size))
    length = bucket_length(int(np.diff(eval_csr.indptr)[rows].max(initial=0)))
    for i in range(n_batches):
        chunk = padded[i * batch_size:(i + 1) * batch_size]
        real = min(batch_size, len(rows) - i * batch_size)
        cols, vals = padded_rows(eval_csr, chunk, length)
        vals[real:] = 0.0  # padding rows: copies of a real row whose targets are masked out
        yield packed_rows(train_csr, chunk, width), cols, vals, real


def predict_eval_ratings(params: model.Params, model_cfg: model.ModelConfig,
                         train_csr: sp.csr_matrix, eval_csr: sp.csr_matrix,
                         rows: np.ndarray | None = None, batch_size: int = 256
                         ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Yields (rows, cols, predictions, actual) arrays for every stored rating of ``eval_csr``.

    Dense row/column indices; the predictions are f(training vector of the row) at the column,
    computed on the sparse fast path (:func:`predict_sparse_at`), batched; the next batch is
    dispatched before the previous one is fetched.
    """
    if rows is None:
        rows = np.flatnonzero(np.diff(eval_csr.indptr) > 0)
    rows = np.asarray(rows)
    pending = None
    for start, (x, cols, vals, real) in zip(
            range(0, len(rows), batch_size),
            _eval_batches(train_csr, eval_csr, rows, batch_size)):
        pred = predict_sparse_at(params, x, cols, model_cfg)
        if pending is not None:
            yield _collect(*pending)
        pending = (pred, rows[start:start + real], cols, vals, real)
    if pending is not None:
        yield _collect(*pending)


def _collect(pred, rows, cols, vals, real):
    pred = np.asarray(pred)
    observed = vals[:real] != 0
    row_idx = np.broadcast_to(rows[:, None], observed.shape)
    return row_idx[observed], cols[:real][observed], pred[:real][observed], vals[:real][observed]


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
