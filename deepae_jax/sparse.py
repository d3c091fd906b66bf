"""The sparse fast path: the autoencoder evaluated on a user's observed items only.

A user rates ~1% of the items, so the dense n-wide first and last layers are mostly wasted work:

* first layer: ``x @ W1`` for a sparse row x is a gather-sum of the rows of W1 at the row's
  observed items, weighted by the ratings (:func:`first_layer_fn`);
* output layer: the masked loss only looks at the observed items, so the update on the sparse
  batch needs the decoder's output, and its gradient, only at those columns (:func:`output_at`).

Sparse batches are pytrees whose leaves have a leading batch dimension (pmap can split them along
axis 0). Two layouts, both handled by :class:`Slots`:

* padded rows ``{"cols": (B, L) int32, "vals": (B, L) float32}``: slot (b, j) belongs to row b;
  padding has value 0 (and column 0);
* packed ``{"cols": (B, K), "vals": (B, K), "rows": (B, K) int32}``: the batch's ratings laid out
  row after row in the flattened (B*K,) slots; ``rows`` names the row (0..B-1) of each slot. The
  leading dimension is still the number of rows in the batch, but K ~ mean ratings per row instead
  of the maximum, which matters for heavy-tailed data. See ``batching.packed_rows``.

Matmuls can run in bfloat16 with float32 accumulation (``dtype="bfloat16"``); parameters, the
gather-sums and the loss stay float32.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from deepae_jax import cpu_kernels, model

DTYPES = ("float32", "bfloat16")


def make_dot(dtype: str = "float32") -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``a @ b`` in float32, or with bfloat16 operands and float32 accumulation."""
    if dtype == "float32":
        return lambda a, b: a @ b
    if dtype == "bfloat16":
        return lambda a, b: jnp.dot(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16),
                                    preferred_element_type=jnp.float32)
    raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")


@dataclasses.dataclass(frozen=True)
class Slots:
    """A sparse batch flattened to T = B*L slots: column, value and row of each slot."""

    cols: jax.Array  # (T,) int32
    vals: jax.Array  # (T,) float32; 0 marks padding
    rows: jax.Array  # (T,) int32 in [0, B)
    n_rows: int  # B

    @staticmethod
    def from_batch(batch: dict) -> "Slots":
        cols, vals = batch["cols"], batch["vals"]
        b, length = cols.shape
        if "rows" in batch:
            rows = batch["rows"].reshape(-1)
        else:
            rows = jnp.repeat(jnp.arange(b, dtype=jnp.int32), length)
        return Slots(cols.reshape(-1), vals.reshape(-1).astype(jnp.float32), rows, b)

    @property
    def mask(self) -> jax.Array:
        return self.vals != 0

    def first_layer(self, w: jax.Array) -> jax.Array:
        """``x @ w`` (B, out) for the sparse rows x, as a gather-sum of the rows of ``w``."""
        return gather_sum(w, self.cols, self.vals, self.rows, self.n_rows)

    def dense(self, n_cols: int) -> jax.Array:
        """The batch as a dense (B, n_cols) float32 matrix (zero where unrated)."""
        return jnp.zeros((self.n_rows, n_cols), jnp.float32).at[self.rows, self.cols].add(self.vals)


CHUNK = 1024  # slots per loop iteration: keeps the gathered (CHUNK, h) block in cache


def _chunked(t: int, chunk: int = CHUNK) -> tuple[int, int]:
    """(chunk, number of chunks) covering t slots; the last chunk is padded."""
    chunk = min(chunk, max(t, 1))
    return chunk, -(-t // chunk)


def _pad(x: jax.Array, total: int, value=0) -> jax.Array:
    return x if x.shape[0] == total else jnp.pad(x, (0, total - x.shape[0]), constant_values=value)


def _slices(chunk: int, n_chunks: int, *arrays):
    total = chunk * n_chunks
    padded = [_pad(a, total) for a in arrays]
    return lambda i: [jax.lax.dynamic_slice_in_dim(a, i * chunk, chunk) for a in padded]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def gather_sum(w: jax.Array, cols: jax.Array, vals: jax.Array, rows: jax.Array,
               n_rows: int) -> jax.Array:
    """out[r] = sum over slots t with rows[t] == r of vals[t] * w[cols[t]]: (n_rows, w.shape[1]).

    The sparse-times-dense product x @ w, slot chunk by slot chunk (cache-sized blocks, no
    (T, h) intermediate). Differentiable in ``w`` (the gradient is a scatter-add into w's shape).
    On the CPU both directions run as ``cpu_kernels.scatter_axpy`` where available.
    """
    return _gather_sum_fwd(w, cols, vals, rows, n_rows)[0]


def _gather_sum_fwd(w, cols, vals, rows, n_rows):
    if cpu_kernels.enabled() and w.dtype == jnp.float32:
        return cpu_kernels.scatter_axpy(w, cols, rows, vals, n_rows), (w.shape, cols, vals, rows)
    chunk, n_chunks = _chunked(cols.shape[0])
    get = _slices(chunk, n_chunks, cols, vals, rows)

    def body(i, acc):
        c, v, r = get(i)
        return acc + jax.ops.segment_sum(jnp.take(w, c, axis=0) * v[:, None].astype(w.dtype), r,
                                         n_rows)
    out = jax.lax.fori_loop(0, n_chunks, body, jnp.zeros((n_rows, w.shape[1]), w.dtype))
    return out, (w.shape, cols, vals, rows)


def _gather_sum_bwd(n_rows, res, g):
    shape, cols, vals, rows = res
    if cpu_kernels.enabled() and g.dtype == jnp.float32:
        return cpu_kernels.scatter_axpy(g, rows, cols, vals, shape[0]), None, None, None
    chunk, n_chunks = _chunked(cols.shape[0])
    get = _slices(chunk, n_chunks, cols, vals, rows)

    def body(i, dw):
        c, v, r = get(i)
        return dw.at[c].add(jnp.take(g, r, axis=0) * v[:, None])
    dw = jax.lax.fori_loop(0, n_chunks, body, jnp.zeros(shape, g.dtype))
    return dw, None, None, None


gather_sum.defvjp(_gather_sum_fwd, _gather_sum_bwd)


@jax.custom_vjp
def rowdot(w_rows: jax.Array, b: jax.Array, h: jax.Array, cols: jax.Array, rows: jax.Array,
           active: jax.Array) -> jax.Array:
    """out[t] = h[rows[t]] . w_rows[cols[t]] + b[cols[t]] where ``active[t]``, else 0 (T,): a
    linear layer evaluated at chosen outputs only.

    Chunked like :func:`gather_sum` (``cpu_kernels`` on the CPU); differentiable in ``w_rows``,
    ``b`` and ``h``.
    """
    return _rowdot_fwd(w_rows, b, h, cols, rows, active)[0]


def _rowdot_fwd(w_rows, b, h, cols, rows, active):
    res = (w_rows, h, cols, rows, active)
    bias = jnp.where(active, jnp.take(b, cols), 0.0)
    if cpu_kernels.enabled() and w_rows.dtype == jnp.float32 and h.dtype == jnp.float32:
        return cpu_kernels.rowdot(w_rows, h, cols, rows, active) + bias, res
    t = cols.shape[0]
    chunk, n_chunks = _chunked(t)
    get = _slices(chunk, n_chunks, cols, rows)

    def body(i, out):
        c, r = get(i)
        part = jnp.sum(jnp.take(h, r, axis=0) * jnp.take(w_rows, c, axis=0), axis=-1)
        return jax.lax.dynamic_update_slice_in_dim(out, part, i * chunk, 0)
    out = jax.lax.fori_loop(0, n_chunks, body, jnp.zeros((chunk * n_chunks,), h.dtype))
    return jnp.where(active, out[:t], 0.0) + bias, res


def _rowdot_bwd(res, g):
    w_rows, h, cols, rows, active = res
    g = jnp.where(active, g, 0.0)
    db = jax.ops.segment_sum(g, cols, w_rows.shape[0])
    if cpu_kernels.enabled() and w_rows.dtype == jnp.float32 and h.dtype == jnp.float32:
        dw = cpu_kernels.scatter_axpy(h, rows, cols, g, w_rows.shape[0])
        dh = cpu_kernels.scatter_axpy(w_rows, cols, rows, g, h.shape[0])
        return dw, db, dh, None, None, None
    chunk, n_chunks = _chunked(cols.shape[0])
    get = _slices(chunk, n_chunks, cols, rows, g)

    def body(i, carry):
        dw, dh = carry
        c, r, gi = get(i)
        dw = dw.at[c].add(jnp.take(h, r, axis=0) * gi[:, None])
        dh = dh.at[r].add(jnp.take(w_rows, c, axis=0) * gi[:, None])
        return dw, dh
    dw, dh = jax.lax.fori_loop(0, n_chunks, body, (jnp.zeros_like(w_rows), jnp.zeros_like(h)))
    return dw, db, dh, None, None, None


rowdot.defvjp(_rowdot_fwd, _rowdot_bwd)


def decoder_out_layer(params: model.Params) -> tuple[jax.Array, jax.Array]:
    """(W_out as (n, h) rows per output column, b_out (n,)) of the decoder's last layer."""
    return model.output_rows(params), params["decoder"][-1]["b"]


def output_at(params: model.Params, h: jax.Array, slots: Slots,
              cfg: model.ModelConfig) -> jax.Array:
    """The decoder's output at the batch's observed items, f[slots.rows, slots.cols] (T,), from
    the output layer's input h (B, h); 0 at padding slots."""
    w_rows, b = decoder_out_layer(params)
    pre = rowdot(w_rows, b, h, slots.cols, slots.rows, slots.mask)
    return jnp.where(slots.mask, model.output_activation(cfg)(pre), 0.0)


def encode(params: model.Params, cfg: model.ModelConfig, first_pre: Callable[[jax.Array], jax.Array],
           dot: Callable, train: bool = False, rng: jax.Array | None = None) -> jax.Array:
    """model.encode with a given first-layer pre-activation and matmul (same dropout draw)."""
    act = model.ACTIVATIONS[cfg.activation]
    x = None
    for i, layer in enumerate(params["encoder"]):
        pre = first_pre(layer["w"]) if i == 0 else dot(x, layer["w"])
        x = act(pre + layer["b"])
    if train and cfg.drop_prob > 0.0:
        if rng is None:
            raise ValueError("training with drop_prob > 0 needs an rng")
        x = model.dropout(x, cfg.drop_prob, rng)
    return x


def decode_hidden(params: model.Params, z: jax.Array, cfg: model.ModelConfig,
                  dot: Callable) -> jax.Array:
    """model.decode_hidden with a given matmul."""
    act = model.ACTIVATIONS[cfg.activation]
    ws = model.decoder_weights(params)
    for w, layer in zip(ws[:-1], params["decoder"][:-1]):
        z = act(dot(z, w) + layer["b"])
    return z


def dense_output(params: model.Params, h: jax.Array, cfg: model.ModelConfig,
                 dot: Callable) -> jax.Array:
    """The full (B, n) output from the output layer's input h."""
    w_out = model.decoder_weights(params)[-1]
    return model.output_activation(cfg)(dot(h, w_out) + params["decoder"][-1]["b"])


def apply_dense(params: model.Params, x: jax.Array, cfg: model.ModelConfig, dot: Callable,
                train: bool = False, rng: jax.Array | None = None) -> jax.Array:
    """model.apply with a given matmul (bfloat16 option)."""
    code = encode(params, cfg, lambda w: dot(x, w), dot, train, rng)
    return dense_output(params, decode_hidden(params, code, cfg, dot), cfg, dot)


def hidden_sparse(params: model.Params, slots: Slots, cfg: model.ModelConfig, dot: Callable,
                  train: bool = False, rng: jax.Array | None = None) -> jax.Array:
    """The output layer's input (B, h) for sparse input rows."""
    code = encode(params, cfg, slots.first_layer, dot, train, rng)
    return decode_hidden(params, code, cfg, dot)


@jax.tree_util.register_pytree_node_class
class DeviceRatings:
    """A CSR rating matrix resident on the device: batches are gathered there by row index.

    ``indptr`` (n_rows+1,) int32, ``indices`` (nnz,) int32, ``data`` (nnz,) float32 are device
    arrays; ``counts`` (host numpy) are the ratings per row, used to size batches.
    """

    def __init__(self, indptr, indices, data, n_cols: int, counts: np.ndarray | None = None):
        self.indptr, self.indices, self.data = indptr, indices, data
        self.n_cols = int(n_cols)
        self.counts = counts

    @staticmethod
    def from_csr(csr, device=None) -> "DeviceRatings":
        if csr.nnz >= 2 ** 31:
            raise ValueError("more than 2^31 ratings: int32 indices overflow")
        put = (lambda a: jax.device_put(a, device)) if device is not None else jnp.asarray
        return DeviceRatings(put(np.asarray(csr.indptr, np.int32)),
                             put(np.asarray(csr.indices, np.int32)),
                             put(np.asarray(csr.data, np.float32)), csr.shape[1],
                             np.diff(csr.indptr))

    def tree_flatten(self):
        return (self.indptr, self.indices, self.data), (self.n_cols,)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, aux[0])


def gather_packed(data: DeviceRatings, rows: jax.Array, width: int) -> dict:
    """On the device: the packed batch (``batching.packed_rows``'s layout) of ``rows`` (B,).

    ``width`` (static) is K; the batch's ratings must fit in B*K slots (extra ones are dropped,
    so size K on the host from ``data.counts``).
    """
    b = rows.shape[0]
    starts = data.indptr[rows]
    counts = data.indptr[rows + 1] - starts
    ends = jnp.cumsum(counts)
    slot = jnp.arange(b * width, dtype=jnp.int32)
    # seg[s] = #{rows whose ratings end at or before slot s} (= searchsorted(ends, s, "right"),
    # without a binary search per slot)
    seg = jnp.cumsum(jnp.zeros(b * width, jnp.int32).at[ends].add(1, mode="drop"),
                     dtype=jnp.int32)
    valid = seg < b
    seg = jnp.minimum(seg, b - 1)
    src = starts[seg] + slot - (ends[seg] - counts[seg])
    src = jnp.where(valid, src, 0)
    cols = jnp.where(valid, data.indices[src], 0)
    vals = jnp.where(valid, data.data[src], 0.0)
    return {"cols": cols.reshape(b, width), "vals": vals.reshape(b, width),
            "rows": seg.reshape(b, width)}


def keep_host_memory_mapped() -> bool:
    """CPU only, optional: stop glibc from returning large freed blocks to the OS.

    XLA:CPU allocates each step's large temporaries (e.g. 36 MB gradients) afresh; above glibc's
    mmap threshold every allocation is a new mapping whose pages fault in again on every step.
    Serving them from the heap instead (``mallopt(M_MMAP_MAX=0)``, no trimming) removes those
    page faults. Process-wide; returns False where glibc is not available.
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-4, 0) and libc.mallopt(-1, 2 ** 30))  # M_MMAP_MAX, M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False
