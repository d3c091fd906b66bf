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
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from deepae_jax.core import model, sparse
from deepae_jax.core.ops import XLA, StepOps, gather_sum_on_platform
from deepae_jax.devices import AXIS, put_global, replicated_on
from deepae_jax.data.batching import bucket_fine, bucket_length, packed_rows, padded_rows
from deepae_jax.core.losses import rmse_from_sums


@functools.partial(jax.jit, static_argnames=("model_cfg",))
def predict_at(params: model.Params, x: jax.Array, cols: jax.Array,
               model_cfg: model.ModelConfig) -> jax.Array:
    """f(x)[b, cols[b, j]]: predictions (batch, L) at the given columns, in evaluation mode."""
    outputs = model.apply(params, x, model_cfg, train=False)
    return jnp.take_along_axis(outputs, cols, axis=1)


@dataclasses.dataclass(frozen=True)
class Scores:
    """The scores of predictions of evaluation ratings: sums of squared and absolute errors over
    the ``count`` ratings predicted, of ``total`` asked for; RMSE and MAE from them. The one
    result type of evaluation (the paper's protocol, every rating with a baseline, TEST)."""

    sse: float
    sae: float
    count: int
    total: int

    @property
    def rmse(self) -> float:
        return rmse_from_sums(self.sse, self.count)

    @property
    def mae(self) -> float:
        return self.sae / self.count if self.count else float("nan")

    def describe(self) -> str:
        unscored = self.total - self.count
        return (f"RMSE {self.rmse:.4f} over {self.count} ratings"
                + (f" ({unscored} dropped: unknown to training)" if unscored else ""))


@functools.partial(jax.jit, static_argnames=("model_cfg", "precision", "ops"))
def predict_sparse_at(params: model.Params, batch: dict, cols: jax.Array,
                      model_cfg: model.ModelConfig, precision: str = "float32",
                      ops: StepOps = XLA) -> jax.Array:
    """Like :func:`predict_at` for a sparse input batch (``deepae_jax.core.sparse`` layouts): the
    first layer is a gather-sum over the observed items and the output layer is evaluated only
    at ``cols`` (B, L). Same numbers as the dense path up to float rounding. ``ops``: the
    gather-sum's on the CPU platform (one device only; e.g. the CPU kernels'), chosen when
    lowered; ``precision``: of the matmuls (``model.PRECISIONS``)."""
    dot = model.make_dot(precision)
    slots = sparse.Slots.from_batch(batch)
    h = sparse.hidden_sparse(params, slots, model_cfg, dot,  # (B, h)
                             first_layer=lambda w: gather_sum_on_platform(ops, w, slots))
    w_rows = model.output_rows(params)  # (n, h)
    b, length = cols.shape
    w_at = jnp.take(w_rows, cols.reshape(-1), axis=0).reshape(b, length, w_rows.shape[1])
    pre = jnp.einsum("bh,blh->bl", h, w_at, precision=jax.lax.Precision.HIGHEST)
    pre = pre + jnp.take(params["decoder"][-1]["b"], cols)
    return model.output_activation(model_cfg)(pre)


def _eval_batches(train_csr: sp.csr_matrix, eval_csr: sp.csr_matrix, rows: np.ndarray,
                  batch_size: int, groups: int = 1
                  ) -> Iterator[tuple[dict, np.ndarray, np.ndarray, int]]:
    """(grouped packed sparse train inputs (G, B/G, K), eval columns, eval values, number of real
    rows), each batch padded to batch_size rows; one input width (the largest group's need) and
    one eval width for all batches (one compiled shape)."""
    if len(rows) == 0:
        return
    n_batches = -(-len(rows) // batch_size)
    per = batch_size // groups
    padded = np.concatenate([rows, np.full(n_batches * batch_size - len(rows), rows[0])])
    counts = np.diff(train_csr.indptr)[padded].reshape(n_batches * groups, per)
    width = bucket_fine(-(-int(counts.sum(axis=1).max()) // per))
    length = bucket_length(int(np.diff(eval_csr.indptr)[rows].max(initial=0)))
    for i in range(n_batches):
        chunk = padded[i * batch_size:(i + 1) * batch_size]
        real = min(batch_size, len(rows) - i * batch_size)
        cols, vals = padded_rows(eval_csr, chunk, length)
        vals[real:] = 0.0  # padding rows: copies of a real row whose targets are masked out
        packed = packed_rows(train_csr, chunk, width, num_shards=groups)
        yield ({k: v.reshape(groups, per, width) for k, v in packed.items()}, cols, vals, real)


def predict_eval_ratings(params: model.Params, model_cfg: model.ModelConfig,
                         train_csr: sp.csr_matrix, eval_csr: sp.csr_matrix,
                         rows: np.ndarray | None = None, batch_size: int = 256,
                         mesh: Mesh | None = None, *, ops: StepOps = XLA,
                         precision: str = "float32"
                         ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Yields (rows, cols, predictions, actual) arrays for every stored rating of ``eval_csr``.

    Dense row/column indices; the predictions are f(training vector of the row) at the column,
    computed on the sparse fast path (:func:`predict_sparse_at`), batched; the next batch is
    dispatched before the previous one is fetched. With ``mesh`` (several devices, any number of
    processes), the same function runs under ``jax.jit`` with each batch split along its rows
    over the mesh's devices and the parameters replicated; ``batch_size`` is then rounded up to
    a multiple of the device count (the extra rows are padding whose targets are masked out) and
    every process gets every prediction. ``ops``, ``precision``: see
    :func:`predict_sparse_at` (``ops`` on one device only).
    """
    if rows is None:
        rows = np.flatnonzero(np.diff(eval_csr.indptr) > 0)
    rows = np.asarray(rows)
    groups = mesh.size if mesh is not None else 1
    batch_size = -(-batch_size // groups) * groups
    put = lambda tree: tree  # noqa: E731
    if mesh is not None:
        params = replicated_on(params, NamedSharding(mesh, P()))
        by_rows = NamedSharding(mesh, P(AXIS))
        put = lambda tree: jax.tree_util.tree_map(lambda a: put_global(a, by_rows), tree)  # noqa
    pending = None
    for start, (x, cols, vals, real) in zip(
            range(0, len(rows), batch_size),
            _eval_batches(train_csr, eval_csr, rows, batch_size, groups)):
        pred = predict_sparse_at(params, put(x), put(cols), model_cfg, precision,
                                 ops if groups == 1 else XLA)
        if pending is not None:
            yield _collect(*pending)
        pending = (pred, rows[start:start + real], cols, vals, real)
    if pending is not None:
        yield _collect(*pending)


def _collect(pred, rows, cols, vals, real):
    pred = gather(pred)
    observed = vals[:real] != 0
    row_idx = np.broadcast_to(rows[:, None], observed.shape)
    return row_idx[observed], cols[:real][observed], pred[:real][observed], vals[:real][observed]


def gather(x: jax.Array) -> np.ndarray:
    """The whole of a (possibly batch-sharded, multi-process) array as numpy, on every
    process."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def evaluate(params: model.Params, model_cfg: model.ModelConfig, train_csr: sp.csr_matrix,
             eval_csr: sp.csr_matrix, rows: np.ndarray | None = None,
             batch_size: int = 256, mesh: Mesh | None = None, *, ops: StepOps = XLA,
             precision: str = "float32") -> Scores:
    """RMSE (and MAE) of the model on the evaluation ratings (PAPER.md's protocol), batched (on
    every device of ``mesh``, with ``ops`` and ``precision``: see :func:`predict_eval_ratings`)."""
    sse, sae, count = 0.0, 0.0, 0
    for _, _, pred, actual in predict_eval_ratings(params, model_cfg, train_csr, eval_csr,
                                                   rows, batch_size, mesh, ops=ops,
                                                   precision=precision):
        err = pred.astype(np.float64) - actual
        sse += float(np.sum(err ** 2))
        sae += float(np.sum(np.abs(err)))
        count += actual.size
    return Scores(sse, sae, count, count)
