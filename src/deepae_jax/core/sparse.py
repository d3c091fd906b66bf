"""The sparse fast path: the autoencoder evaluated on a user's observed items only.

A user rates ~1% of the items, so the dense n-wide first and last layers are mostly wasted work:

* first layer: ``x @ W1`` for a sparse row x is a gather-sum of the rows of W1 at the row's
  observed items, weighted by the ratings (:func:`gather_sum`);
* output layer: the masked loss only looks at the observed items, so the update on the sparse
  batch needs the decoder's output, and its gradient, only at those columns (:func:`output_at`).

Both are written as one gather plus one segment sum (no loop): the shape GPUs want, and what
XLA's SPMD partitioner splits along the batch. The CPU kernels (``deepae_jax.kernels``) replace
them on the CPU platform only.

Sparse batches are pytrees of arrays. Layouts, all read by :meth:`Slots.from_batch`:

* padded rows ``{"cols": (B, L) int32, "vals": (B, L) float32}``: slot (b, j) belongs to row b;
  padding has value 0 (and column 0);
* packed ``{"cols", "vals", "rows"}`` (B, K): the batch's ratings laid out row after row in the
  flattened (B*K,) slots; ``rows`` names the row (0..B-1) of each slot. K ~ mean ratings per row
  instead of the maximum, which matters for heavy-tailed data. See ``batching.packed_rows``;
* grouped packed ``{"cols", "vals", "rows"}`` (G, R, K): G groups of R rows, each packed on its
  own with group-local row indices (the batch split over G devices: group g is rows
  [g*R, (g+1)*R) of the batch, and only its own slots refer to them).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from deepae_jax.core import model


@dataclasses.dataclass(frozen=True)
class Slots:
    """A sparse batch as G groups of T slots: column, value and group-local row of each slot.

    Row r of group g is row ``g * rows_per_group + r`` of the batch (``n_rows`` in all)."""

    cols: jax.Array  # (G, T) int32
    vals: jax.Array  # (G, T) float32; 0 marks padding
    rows: jax.Array  # (G, T) int32 in [0, rows_per_group)
    rows_per_group: int

    @staticmethod
    def from_batch(batch: dict) -> "Slots":
        cols, vals = batch["cols"], batch["vals"].astype(jnp.float32)
        if "rows" not in batch:  # padded: every row is a group of its own
            return Slots(cols, vals, jnp.zeros(cols.shape, jnp.int32), 1)
        rows = batch["rows"]
        if cols.ndim == 2:  # packed: one group
            return Slots(cols.reshape(1, -1), vals.reshape(1, -1), rows.reshape(1, -1),
                         cols.shape[0])
        g, r, k = cols.shape
        return Slots(cols.reshape(g, r * k), vals.reshape(g, r * k), rows.reshape(g, r * k), r)

    @property
    def n_groups(self) -> int:
        return self.cols.shape[0]

    @property
    def n_rows(self) -> int:
        return self.n_groups * self.rows_per_group

    @property
    def mask(self) -> jax.Array:
        return self.vals != 0

    def batch_rows(self) -> jax.Array:
        """(G, T): the row of the batch (0..n_rows-1) of every slot."""
        offsets = jnp.arange(self.n_groups, dtype=jnp.int32)[:, None] * self.rows_per_group
        return self.rows + offsets

    def with_vals(self, vals: jax.Array) -> "Slots":
        return dataclasses.replace(self, vals=vals)

    def first_layer(self, w: jax.Array) -> jax.Array:
        """``x @ w`` (B, out) for the sparse rows x, as a gather-sum of the rows of ``w``."""
        return gather_sum(w, self)

    def dense(self, n_cols: int) -> jax.Array:
        """The batch as a dense (B, n_cols) float32 matrix (zero where unrated), each group
        scattered on its own (so it stays on its device when the groups are sharded)."""
        def one(cols, vals, rows):
            return jnp.zeros((self.rows_per_group, n_cols), vals.dtype).at[rows, cols].add(vals)
        return jax.vmap(one)(self.cols, self.vals, self.rows).reshape(self.n_rows, n_cols)

    def at(self, dense: jax.Array) -> jax.Array:
        """(G, T): ``dense`` (B, n) read at every slot's (row, column), 0 at padding."""
        groups = dense.reshape(self.n_groups, self.rows_per_group, dense.shape[-1])
        out = jax.vmap(lambda d, r, c: d[r, c])(groups, self.rows, self.cols)
        return jnp.where(self.mask, out, 0.0)


def gather_sum(w: jax.Array, slots: Slots) -> jax.Array:
    """out[b] = sum over the slots t of row b of vals[t] * w[cols[t]]: (n_rows, w.shape[1]).

    The sparse-times-dense product x @ w as one gather of w's rows and one (sorted) segment sum
    per group; differentiable in ``w`` (its gradient is the scatter-add of the transposed
    gather)."""
    def one(cols, vals, rows):
        rows_w = jnp.take(w, cols, axis=0) * vals[:, None].astype(w.dtype)
        return jax.ops.segment_sum(rows_w, rows, slots.rows_per_group, indices_are_sorted=True)
    out = jax.vmap(one)(slots.cols, slots.vals, slots.rows)
    return out.reshape(slots.n_rows, w.shape[1])


def n_wide_layers(n_rows: int, n_slots: int, n_cols: int, hidden: int) -> str:
    """``"sparse"`` or ``"dense"``: the formulation of the n-wide first and output layers that
    moves fewer bytes for a batch of ``n_rows`` rows in ``n_slots`` slots, ``n_cols`` items and
    ``hidden`` units next to them (an accelerator's step is bound by memory traffic there).

    The sparse one gathers and scatter-adds a ``hidden``-wide weight row per slot, several times
    per step (forward, both gradients, the output's two gathers): ~10 * n_slots * hidden
    elements. The dense one reads the (B, n) batch, output and their gradients and the
    (n, hidden) weights a few times: ~4 * n_rows * n_cols + 2 * n_cols * hidden. Fitted to the
    compiled step's ``cost_analysis()``: ``python benchmarks/gpu_estimate.py --layers-table``
    (the rule picks the smaller of the two on 16 of 18 shapes, the others cost 1% and 15% more).
    On Netflix-shaped batches (128 rows x 512 slots, 17,768 items) dense moves 2.3x less; for
    very wide, very sparse rows the gather wins."""
    sparse_elems = 10 * n_slots * hidden
    dense_elems = 4 * n_rows * n_cols + 2 * n_cols * hidden
    return "dense" if dense_elems < sparse_elems else "sparse"


def output_pre_at(w_rows: jax.Array, b: jax.Array, h: jax.Array, slots: Slots) -> jax.Array:
    """(G, T): h[row] . w_rows[col] + b[col] at every slot, 0 at padding: the output layer's
    pre-activation at the observed items only, as two gathers and a row-wise dot product."""
    h_groups = h.reshape(slots.n_groups, slots.rows_per_group, h.shape[-1])
    h_at = jax.vmap(lambda hg, r: jnp.take(hg, r, axis=0))(h_groups, slots.rows)
    pre = jnp.einsum("gth,gth->gt", h_at, jnp.take(w_rows, slots.cols, axis=0),
                     precision=jax.lax.Precision.HIGHEST)
    return jnp.where(slots.mask, pre + jnp.take(b, slots.cols), 0.0)


def decoder_out_layer(params: model.Params) -> tuple[jax.Array, jax.Array]:
    """(W_out as (n, h) rows per output column, b_out (n,)) of the decoder's last layer."""
    return model.output_rows(params), params["decoder"][-1]["b"]


def output_at(params: model.Params, h: jax.Array, slots: Slots, cfg: model.ModelConfig,
              pre_at=output_pre_at) -> jax.Array:
    """The decoder's output at the batch's observed items (G, T), from the output layer's
    input h (B, h); 0 at padding slots. ``pre_at``: :func:`output_pre_at` or a kernel's."""
    w_rows, b = decoder_out_layer(params)
    return jnp.where(slots.mask, model.output_activation(cfg)(pre_at(w_rows, b, h, slots)), 0.0)


def hidden_sparse(params: model.Params, slots: Slots, cfg: model.ModelConfig,
                  dot: model.Dot = model.matmul, train: bool = False,
                  rng: jax.Array | None = None, first_layer=None) -> jax.Array:
    """The output layer's input (B, h) for sparse input rows (``first_layer``: the gather-sum,
    :meth:`Slots.first_layer` by default)."""
    code = model.encode(params, None, cfg, train, rng, first_layer or slots.first_layer, dot)
    return model.decode_hidden(params, code, cfg, dot)


