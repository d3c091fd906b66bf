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
