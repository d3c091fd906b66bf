"""Rating data: a CSR rating matrix with id maps, its binary cache, and evaluation alignment.

Ratings come from the reference's text format (:mod:`deepae_jax.data.text_format`, re-exported
here) or from the ``.npz`` cache. A :class:`RatingMatrix` holds the ratings as a
``scipy.sparse.csr_matrix`` whose rows are users (``major="users"``, the default, U-AutoRec
style) or items (``major="items"``, I-AutoRec style), with dense ids ``0..n-1`` mapped to the ORIGINAL ids by the sorted arrays ``row_ids``/``col_ids``.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import scipy.sparse as sp

from deepae_jax.data.text_format import (COLUMN_ORDERS, RatingsFormatError, Triples,
                                         format_ratings_lines, list_rating_files,
                                         read_ratings_text, write_ratings_text)
from deepae_jax.io_utils import atomic_write

MAJORS = ("users", "items")

__all__ = ["MAJORS", "COLUMN_ORDERS", "RatingsFormatError", "Triples", "RatingMatrix", "EvalSplit",
           "build_matrix", "align_eval", "dense_ids", "load_matrix", "load_triples",
           "read_ratings_text", "write_ratings_text", "format_ratings_lines", "list_rating_files"]


@dataclasses.dataclass(frozen=True)
class RatingMatrix:
    """A sparse rating matrix: rows are the autoencoder's input vectors.

    Attributes:
      csr: float32 CSR matrix of shape (n_rows, n_cols); stored entries are the ratings.
      row_ids: int64 array (n_rows,), the ORIGINAL id of each row (sorted ascending).
      col_ids: int64 array (n_cols,), the ORIGINAL id of each column (sorted ascending).
      major: "users" when rows are users, "items" when rows are items.
    """

    csr: sp.csr_matrix
    row_ids: np.ndarray
    col_ids: np.ndarray
    major: str = "users"

    @property
    def shape(self) -> tuple[int, int]:
        return self.csr.shape

    @property
    def nnz(self) -> int:
        return int(self.csr.nnz)

    def to_triples(self) -> Triples:
        coo = self.csr.tocoo()
        rows, cols = self.row_ids[coo.row], self.col_ids[coo.col]
        users, items = (rows, cols) if self.major == "users" else (cols, rows)
        return Triples(users.astype(np.int64), items.astype(np.int64), coo.data.astype(np.float32))

    def save(self, path: str) -> None:
        """Writes the matrix as an uncompressed ``.npz`` (atomically: temp file, then rename)."""
        def write(fh):
            np.savez(fh, indptr=self.csr.indptr.astype(np.int64), indices=self.csr.indices,
                     data=self.csr.data, shape=np.asarray(self.csr.shape, np.int64),
                     row_ids=self.row_ids, col_ids=self.col_ids, major=np.asarray(self.major))
        atomic_write(path, write)

    @staticmethod
    def load(path: str) -> "RatingMatrix":
        """Reads a matrix written by :meth:`save`."""
        try:
            with np.load(path, allow_pickle=False) as z:
                shape = tuple(int(s) for s in z["shape"])
                csr = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
                return RatingMatrix(csr, z["row_ids"], z["col_ids"], str(z["major"]))
        except (KeyError, ValueError, OSError) as e:
            raise RatingsFormatError(f"{path}: not a rating matrix written by deepae_jax ({e})")


def _to_csr(r: np.ndarray, c: np.ndarray, values: np.ndarray, shape: tuple[int, int],
            duplicates: str, source: str, triples: Triples, where: np.ndarray | None = None
            ) -> sp.csr_matrix:
    """CSR from dense (row, col) indices, applying the duplicate policy of :func:`build_matrix`."""
    key = r.astype(np.int64) * shape[1] + c
    if key.size < 2 or bool(np.all(key[1:] > key[:-1])):  # already in row-major order
        order, key_sorted = np.arange(key.size), key
    else:
        order = np.argsort(key, kind="stable")
        key_sorted = key[order]
    dup = np.diff(key_sorted) == 0
    if dup.any():
        if duplicates == "error":
            i = order[np.flatnonzero(dup)[0]]
            i = where[i] if where is not None else i
            raise RatingsFormatError(
                f"{source}: user {int(triples.users[i])} rated item {int(triples.items[i])} more "
                "than once (duplicates='last' keeps the last rating)")
        keep = np.append(~dup, True)  # the last of each run of equal keys, in data order
        order, key_sorted = order[keep], key_sorted[keep]
    rows = key_sorted // shape[1]
    indptr = np.zeros(shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
    return sp.csr_matrix((values[order].astype(np.float32), (key_sorted % shape[1]).astype(np.int32),
                          indptr), shape=shape)


def dense_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique ids, index of each id in them), like ``np.unique(..., return_inverse=True)``
    but in linear time (a presence table) when the ids are non-negative and not too sparse."""
    if ids.size and ids.min() >= 0 and ids.max() < max(8 * ids.size, 1 << 20):
        present = np.zeros(int(ids.max()) + 1, bool)
        present[ids] = True
        unique = np.flatnonzero(present)
        position = np.cumsum(present) - 1
        return unique.astype(np.int64), position[ids]
    unique, inverse = np.unique(ids, return_inverse=True)
    return unique.astype(np.int64), inverse.reshape(-1)


def _check_policy(major: str, duplicates: str) -> None:
    if major not in MAJORS:
        raise ValueError(f"major must be one of {MAJORS}, got {major!r}")
    if duplicates not in ("error", "last"):
        raise ValueError(f"duplicates must be 'error' or 'last', got {duplicates!r}")


def build_matrix(triples: Triples, major: str = "users", duplicates: str = "error",
                 source: str = "ratings") -> RatingMatrix:
    """Builds a :class:`RatingMatrix` with dense, sorted id maps from ORIGINAL-id triples.

    ``duplicates`` is the policy for a (user, item) pair rated more than once: ``"error"``
    (default) raises naming the pair, ``"last"`` keeps the rating that comes last in the data.
    """
    _check_policy(major, duplicates)
    if len(triples) == 0:
        raise RatingsFormatError(f"{source}: no ratings (empty training set)")
    rows, cols = ((triples.users, triples.items) if major == "users"
                  else (triples.items, triples.users))
    row_ids, r = dense_ids(rows)
    col_ids, c = dense_ids(cols)
    csr = _to_csr(r, c, triples.ratings, (len(row_ids), len(col_ids)), duplicates, source, triples)
    return RatingMatrix(csr, row_ids.astype(np.int64), col_ids.astype(np.int64), major)


@dataclasses.dataclass(frozen=True)
class EvalSplit:
    """Evaluation ratings aligned to a training matrix.

    ``csr`` has the training matrix's shape and holds only evaluation ratings; ``rows`` are the
    training rows with at least one evaluation rating. The ``dropped_*`` counts say how many
    evaluation ratings were excluded because their row or column is unknown to training.
    """

    csr: sp.csr_matrix
    rows: np.ndarray
    dropped_unknown_rows: int
    dropped_unknown_cols: int

    @property
    def nnz(self) -> int:
        return int(self.csr.nnz)


def align_eval(train: RatingMatrix, triples: Triples, duplicates: str = "error",
               source: str = "evaluation data") -> EvalSplit:
    """Maps evaluation triples through the training id maps (PAPER.md's evaluation protocol).

    Ratings whose row (user, or item when ``major="items"``) or column is unknown to training
    are dropped and counted.
    """
    _check_policy(train.major, duplicates)
    rows, cols = ((triples.users, triples.items) if train.major == "users"
                  else (triples.items, triples.users))
    r = np.searchsorted(train.row_ids, rows)
    c = np.searchsorted(train.col_ids, cols)
    known_r = (r < len(train.row_ids)) & (train.row_ids[np.minimum(r, len(train.row_ids) - 1)] == rows)
    known_c = (c < len(train.col_ids)) & (train.col_ids[np.minimum(c, len(train.col_ids) - 1)] == cols)
    keep = known_r & known_c
    where = np.flatnonzero(keep)
    csr = _to_csr(r[keep], c[keep], triples.ratings[keep], train.shape, duplicates, source,
                  triples, where)
    rows_with = np.flatnonzero(np.diff(csr.indptr) > 0)
    return EvalSplit(csr, rows_with,
                     int((~known_r).sum()), int((known_r & ~known_c).sum()))


def load_triples(path: str, delimiter: str = "\t",
                 column_order: str = "user,item,rating") -> Triples:
    """Reads ratings from a ``.npz`` written by :meth:`RatingMatrix.save` or from text."""
    if path.endswith(".npz") and os.path.isfile(path):
        return RatingMatrix.load(path).to_triples()
    return read_ratings_text(path, delimiter, column_order)


def load_matrix(path: str, major: str = "users", delimiter: str = "\t",
                column_order: str = "user,item,rating") -> RatingMatrix:
    """Loads a training matrix from a ``.npz`` cache (fast path) or from text."""
    if path.endswith(".npz") and os.path.isfile(path):
        m = RatingMatrix.load(path)
        if m.major == major:
            return m
        return build_matrix(m.to_triples(), major, source=path)
    return build_matrix(read_ratings_text(path, delimiter, column_order), major, source=path)
