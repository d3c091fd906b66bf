"""Mini-batches from a CSR rating matrix: seeded epoch permutations, dense and padded-sparse rows."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import scipy.sparse as sp


def epoch_permutation(n_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The row order of one epoch: a permutation that depends only on (seed, epoch).

    Deterministic per epoch so that a resumed run sees exactly the batches of an unbroken one.
    """
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n_rows)


def num_batches(n_rows: int, batch_size: int) -> int:
    """Full batches per epoch: the final partial batch is dropped, as in the reference."""
    return n_rows // batch_size


def dense_batches(csr: sp.csr_matrix, batch_size: int, seed: int, epoch: int
                  ) -> Iterator[np.ndarray]:
    """The training batches of one epoch: dense (batch_size, n_cols) float32 row blocks in the
    order of :func:`epoch_permutation`, final partial batch dropped."""
    perm = epoch_permutation(csr.shape[0], seed, epoch)
    for i in range(num_batches(csr.shape[0], batch_size)):
        yield dense_rows(csr, perm[i * batch_size:(i + 1) * batch_size])


def dense_rows(csr: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """Rows of ``csr`` as a dense float32 array (len(rows), n_cols), zero where unrated."""
    return csr[rows].toarray().astype(np.float32, copy=False)


def bucket_length(n: int, minimum: int = 8) -> int:
    """The next power of two >= max(n, minimum): few distinct shapes, so few recompilations."""
    return max(minimum, 1 << max(0, int(n) - 1).bit_length())


def padded_rows(csr: sp.csr_matrix, rows: np.ndarray, length: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``csr`` as (columns, values), each (len(rows), length), right-padded with 0.

    A padded slot has column 0 and value 0; value 0 marks it as unobserved everywhere.
    """
    counts = np.diff(csr.indptr)[rows]
    length = bucket_length(int(counts.max(initial=0))) if length is None else length
    cols = np.zeros((len(rows), length), np.int32)
    vals = np.zeros((len(rows), length), np.float32)
    starts = csr.indptr[rows]
    slot = np.arange(length)
    take = slot[None, :] < counts[:, None]
    src = (starts[:, None] + slot[None, :])[take]
    cols[take] = csr.indices[src]
    vals[take] = csr.data[src]
    return cols, vals


def bucket_fine(n: int, minimum: int = 8, steps_per_octave: int = 4) -> int:
    """The smallest of minimum·2^(k/steps_per_octave), rounded up to a multiple of 8, that is >= n:
    at most ~19% padding (4 steps per octave) with still few distinct shapes."""
    n = max(int(n), int(minimum))
    size = int(minimum)
    step = 0
    while True:
        cand = -(-int(round(minimum * 2 ** (step / steps_per_octave))) // 8) * 8
        if cand >= n:
            return max(cand, size)
        step += 1


def packed_width(counts: np.ndarray, batch_size: int, num_shards: int = 1) -> int:
    """The slot width K a packed batch with these per-row ``counts`` needs (bucketed)."""
    per_shard = np.asarray(counts).reshape(num_shards, -1).sum(axis=1).max(initial=0)
    return bucket_fine(-(-int(per_shard) // (batch_size // num_shards)))


def epoch_packed_width(csr: sp.csr_matrix, batch_size: int, seed: int, epoch: int,
                       num_shards: int = 1) -> int:
    """One K for every batch of an epoch (one compiled shape): the largest batch's need."""
    counts = np.diff(csr.indptr)[epoch_permutation(csr.shape[0], seed, epoch)]
    nb = num_batches(csr.shape[0], batch_size)
    if nb == 0:
        return 8
    per = counts[:nb * batch_size].reshape(nb * num_shards, batch_size // num_shards).sum(axis=1)
    return bucket_fine(-(-int(per.max()) // (batch_size // num_shards)))


def run_packed_width(csr: sp.csr_matrix, batch_size: int, seed: int, epochs: range,
                     num_shards: int = 1) -> int:
    """One K for every batch of every epoch in ``epochs`` (one compiled shape for the run)."""
    return max((epoch_packed_width(csr, batch_size, seed, e, num_shards) for e in epochs),
               default=8)


def packed_rows(csr: sp.csr_matrix, rows: np.ndarray, width: int | None = None,
                num_shards: int = 1) -> dict[str, np.ndarray]:
    """Rows of ``csr`` packed: {"cols", "vals", "rows"}, each (len(rows), width).

    The ratings of the batch, row after row, fill the flattened slots; ``rows`` gives the row
    (0..len(rows)-1) of each slot, and padding (value 0, column 0) sits at the end with the last
    row's index. With ``num_shards`` > 1 every block of len(rows)/num_shards leading rows is packed
    on its own with shard-local row indices, so that splitting the arrays along axis 0 (pmap)
    gives each device whole rows. The leading dimension is always the number of rows.
    """
    rows = np.asarray(rows)
    b = len(rows)
    if b % num_shards:
        raise ValueError(f"{b} rows do not split into {num_shards} shards")
    per = b // num_shards
    counts = np.diff(csr.indptr)[rows]
    if width is None:
        width = packed_width(counts, b, num_shards)
    out = {"cols": np.zeros((b, width), np.int32), "vals": np.zeros((b, width), np.float32),
           "rows": np.zeros((b, width), np.int32)}
    cap = per * width
    for s in range(num_shards):
        r, c = rows[s * per:(s + 1) * per], counts[s * per:(s + 1) * per]
        total = int(c.sum())
        if total > cap:
            raise ValueError(f"{total} ratings do not fit in {per}x{width} slots")
        starts = csr.indptr[r]
        local = np.repeat(np.arange(per, dtype=np.int32), c)
        offs = np.arange(total) - np.repeat(np.cumsum(c) - c, c)
        src = np.repeat(starts, c) + offs
        flat_cols = out["cols"][s * per:(s + 1) * per].reshape(-1)
        flat_vals = out["vals"][s * per:(s + 1) * per].reshape(-1)
        flat_rows = out["rows"][s * per:(s + 1) * per].reshape(-1)
        flat_cols[:total] = csr.indices[src]
        flat_vals[:total] = csr.data[src]
        flat_rows[:total] = local
        flat_rows[total:] = per - 1
    return out


def sparse_batches(csr: sp.csr_matrix, batch_size: int, seed: int, epoch: int,
                   layout: str = "packed", num_shards: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """The training batches of one epoch as sparse pytrees (same rows and order as
    :func:`dense_batches`, final partial batch dropped).

    ``layout="packed"``: :func:`packed_rows` with one width K for the whole epoch;
    ``layout="padded"``: {"cols", "vals"} from :func:`padded_rows`, L bucketed per batch.
    """
    perm = epoch_permutation(csr.shape[0], seed, epoch)
    nb = num_batches(csr.shape[0], batch_size)
    if layout == "packed":
        width = epoch_packed_width(csr, batch_size, seed, epoch, num_shards)
        for i in range(nb):
            yield packed_rows(csr, perm[i * batch_size:(i + 1) * batch_size], width, num_shards)
    elif layout == "padded":
        for i in range(nb):
            cols, vals = padded_rows(csr, perm[i * batch_size:(i + 1) * batch_size])
            yield {"cols": cols, "vals": vals}
    else:
        raise ValueError(f"layout must be 'packed' or 'padded', got {layout!r}")
