"""A rating matrix resident on the devices, and sparse batches gathered there.

:class:`DeviceRatings` is a CSR matrix copied to the devices once; :func:`gather_packed` builds a
packed sparse batch (``deepae_jax.core.sparse``'s layout, ``batching.packed_rows`` on the host)
of given rows on the device, so a training run sends no batch from the host.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


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
        """On ``device`` (a device, or a sharding: e.g. replicated on every device of a mesh,
        any number of processes, each passing the same matrix)."""
        if csr.nnz >= 2 ** 31:
            raise ValueError("more than 2^31 ratings: int32 indices overflow")
        if isinstance(device, jax.sharding.Sharding):
            put = lambda a: jax.make_array_from_callback(  # noqa: E731
                a.shape, device, lambda idx: a[idx])
        else:
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
