"""The sparse layers on the CPU kernels: ``sparse.gather_sum`` and ``sparse.output_pre_at`` with
the row gathers and scatter-adds (forward and backward) done by ``ffi.scatter_axpy`` and
``ffi.rowdot`` over the batch's flattened slots."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from deepae_jax.kernels import ffi
from deepae_jax.core.sparse import Slots


def flat(slots: Slots) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(cols, vals, batch rows), each (G*T,): the slots of every group in one list."""
    return (slots.cols.reshape(-1), slots.vals.reshape(-1),
            slots.batch_rows().reshape(-1))


def gather_sum(w: jax.Array, slots: Slots) -> jax.Array:
    """:func:`deepae_jax.core.sparse.gather_sum` on the kernels."""
    cols, vals, rows = flat(slots)
    return _gather_sum(w, cols, vals, rows, slots.n_rows)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _gather_sum(w, cols, vals, rows, n_rows):
    return ffi.scatter_axpy(w, cols, rows, vals, n_rows)


def _gather_sum_fwd(w, cols, vals, rows, n_rows):
    return ffi.scatter_axpy(w, cols, rows, vals, n_rows), (w.shape[0], cols, vals, rows)


def _gather_sum_bwd(n_rows, res, g):
    m, cols, vals, rows = res
    return ffi.scatter_axpy(g, rows, cols, vals, m), None, None, None


_gather_sum.defvjp(_gather_sum_fwd, _gather_sum_bwd)


def output_pre_at(w_rows: jax.Array, b: jax.Array, h: jax.Array, slots: Slots) -> jax.Array:
    """:func:`deepae_jax.core.sparse.output_pre_at` on the kernels."""
    cols, _, rows = flat(slots)
    return rowdot(w_rows, b, h, cols, rows, slots.mask.reshape(-1)).reshape(slots.cols.shape)


@jax.custom_vjp
def rowdot(w_rows: jax.Array, b: jax.Array, h: jax.Array, cols: jax.Array, rows: jax.Array,
           active: jax.Array) -> jax.Array:
    """out[t] = h[rows[t]] . w_rows[cols[t]] + b[cols[t]] where ``active[t]``, else 0 (T,);
    differentiable in ``w_rows``, ``b`` and ``h``."""
    return _rowdot_fwd(w_rows, b, h, cols, rows, active)[0]


def _rowdot_fwd(w_rows, b, h, cols, rows, active):
    bias = jnp.where(active, jnp.take(b, cols), 0.0)
    return (ffi.rowdot(w_rows, h, cols, rows, active) + bias,
            (w_rows, h, cols, rows, active))


def _rowdot_bwd(res, g):
    w_rows, h, cols, rows, active = res
    g = jnp.where(active, g, 0.0)
    db = jax.ops.segment_sum(g, cols, w_rows.shape[0])
    dw = ffi.scatter_axpy(h, rows, cols, g, w_rows.shape[0])
    dh = ffi.scatter_axpy(w_rows, cols, rows, g, h.shape[0])
    return dw, db, dh, None, None, None


rowdot.defvjp(_rowdot_fwd, _rowdot_bwd)
