"""Rating data: a CSR rating matrix with id maps, its binary cache, and evaluation alignment.

Ratings come from any delimited ratings table (:func:`read_table` of
:mod:`deepae_jax.data.readers.table`, re-exported here), a pandas DataFrame (:func:`from_dataframe`) or
the ``.npz`` cache (validated when loaded). A :class:`RatingMatrix` holds the ratings as a
``scipy.sparse.csr_matrix`` whose rows are users (``major="users"``, the default, U-AutoRec
style) or items (``major="items"``, I-AutoRec style), with dense ids ``0..n-1`` mapped to the
ORIGINAL ids by the sorted arrays ``row_ids``/``col_ids`` (int64, or strings: a ``'U'`` array).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import zipfile

import numpy as np
import scipy.sparse as sp

from deepae_jax.data.readers.table import TableFormat, read_ratings_text, read_table
from deepae_jax.data.readers.text_format import (COLUMN_ORDERS, RatingsFormatError, Triples,
    concat_triples, format_ratings_lines, list_rating_files, unify_ids, write_ratings_text)
from deepae_jax.run.files import atomic_write

MAJORS = ("users", "items")

__all__ = ["MAJORS", "COLUMN_ORDERS", "RatingsFormatError", "Triples", "RatingMatrix", "EvalSplit",
           "TableFormat", "build_matrix", "align_eval", "check_csr_parts", "dense_ids",
           "lookup_ids", "load_matrix", "load_triples", "from_dataframe", "read_table", "read_ratings_text", "write_ratings_text",
           "format_ratings_lines", "list_rating_files", "unify_ids", "concat_triples"]


@dataclasses.dataclass(frozen=True)
class RatingMatrix:
    """A sparse rating matrix: rows are the autoencoder's input vectors.

    Attributes:
      csr: float32 CSR matrix of shape (n_rows, n_cols); stored entries are the ratings.
      row_ids: int64 or 'U' array (n_rows,), the ORIGINAL id of each row (sorted ascending).
      col_ids: int64 or 'U' array (n_cols,), the ORIGINAL id of each column (sorted ascending).
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
        return Triples(users, items, coo.data.astype(np.float32))

    def fingerprint(self) -> str:
        """sha256 of the ids and the ratings (canonical CSR): which training matrix a model's
        input vectors came from, recorded in vocab.npz and checked by inference."""
        csr = self.csr.tocsr(copy=True)
        csr.sum_duplicates()
        csr.sort_indices()
        h = hashlib.sha256(f"{self.major}{csr.shape}".encode())
        for ids in (self.row_ids, self.col_ids):
            h.update(ids.astype(np.int64).tobytes() if ids.dtype.kind in "iu"
                     else "\x00".join(map(str, ids.tolist())).encode("utf-8", "surrogatepass"))
        for part, dtype in ((csr.indptr, np.int64), (csr.indices, np.int64),
                            (csr.data, np.float32)):
            h.update(np.ascontiguousarray(part, dtype).tobytes())
        return h.hexdigest()

    def save(self, path: str) -> None:
        """Writes the matrix as an uncompressed ``.npz`` (atomically: temp file, then rename)."""
        def write(fh):
            np.savez(fh, indptr=self.csr.indptr.astype(np.int64), indices=self.csr.indices,
                     data=self.csr.data, shape=np.asarray(self.csr.shape, np.int64),
                     row_ids=self.row_ids, col_ids=self.col_ids, major=np.asarray(self.major))
        atomic_write(path, write)

    def validate(self, source: str = "rating matrix") -> "RatingMatrix":
        """Returns self when the matrix is consistent, else raises RatingsFormatError naming
        ``source``: see :func:`check_csr_parts`."""
        m = self.csr
        check_csr_parts(source, m.indptr, m.indices, m.data, m.shape, self.row_ids,
                        self.col_ids, self.major)
        return self

    @staticmethod
    def load(path: str) -> "RatingMatrix":
        """Reads and validates a matrix written by :meth:`save`; errors name the file."""
        try:
            with np.load(path, allow_pickle=False) as z:
                parts = {k: z[k] for k in ("indptr", "indices", "data", "shape", "row_ids",
                                           "col_ids", "major")}
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise RatingsFormatError(f"{path}: not a rating matrix written by deepae_jax "
                                     f"({type(e).__name__}: {e})") from None
        shape = parts["shape"]
        if shape.shape != (2,) or shape.dtype.kind not in "iu" or shape.min() < 0:
            raise RatingsFormatError(f"{path}: shape {shape.tolist()} is not two sizes >= 0")
        shape = (int(shape[0]), int(shape[1]))
        check_csr_parts(path, parts["indptr"], parts["indices"], parts["data"], shape,
                        parts["row_ids"], parts["col_ids"], str(parts["major"]))
        csr = sp.csr_matrix((parts["data"], parts["indices"], parts["indptr"]), shape=shape)
        return RatingMatrix(csr, parts["row_ids"], parts["col_ids"], str(parts["major"]))


def check_csr_parts(source: str, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                    shape: tuple[int, int], row_ids: np.ndarray, col_ids: np.ndarray,
                    major: str) -> None:
    """Raises RatingsFormatError naming ``source`` unless: ``major`` is users or items; indptr
    has n_rows+1 integer entries from 0, non-decreasing, ending at the number of entries; the
    column indices are integers in 0..n_cols-1, strictly increasing within each row; the values
    are finite, non-zero floats; the id maps are int or string arrays of the right lengths,
    strictly increasing (sorted and unique)."""
    def bad(why):
        raise RatingsFormatError(f"{source}: corrupt rating matrix: {why}")
    n_rows, n_cols = shape
    if major not in MAJORS:
        bad(f"major {major!r} is not one of {MAJORS}")
    if indptr.ndim != 1 or indptr.dtype.kind not in "iu" or indptr.size != n_rows + 1:
        bad(f"indptr has {indptr.size} {indptr.dtype} entries, expected {n_rows + 1} integers")
    if indices.ndim != 1 or indices.dtype.kind not in "iu" or data.ndim != 1 \
            or data.dtype.kind != "f" or indices.size != data.size:
        bad(f"{indices.size} column indices ({indices.dtype}) and {data.size} values "
            f"({data.dtype}): expected as many integers as floats")
    if indptr[0] != 0 or indptr[-1] != data.size or (np.diff(indptr) < 0).any():
        bad(f"indptr must rise from 0 to the {data.size} entries")
    if indices.size and (indices.min() < 0 or indices.max() >= n_cols):
        bad(f"column index {int(indices.max() if indices.max() >= n_cols else indices.min())} "
            f"outside 0..{n_cols - 1}")
    step = np.diff(indices.astype(np.int64))
    row_start = np.zeros(max(indices.size - 1, 0), bool)
    starts = indptr[1:-1][(indptr[1:-1] > 0) & (indptr[1:-1] < indices.size)] - 1
    row_start[starts] = True
    if (step[~row_start] <= 0).any():
        bad("column indices are not strictly increasing within a row (unsorted or duplicate)")
    if not np.isfinite(data).all() or (data == 0).any():
        bad("values must be finite and non-zero (0 means 'unrated')")
    for name, ids, n in (("row_ids", row_ids, n_rows), ("col_ids", col_ids, n_cols)):
        if ids.ndim != 1 or ids.dtype.kind not in "iuU" or ids.size != n:
            bad(f"{name} holds {ids.size} {ids.dtype} ids, expected {n} integers or strings")
        if ids.size > 1 and not (ids[1:] > ids[:-1]).all():
            bad(f"{name} are not sorted and unique")


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
                f"{source}: user {triples.users[i]} rated item {triples.items[i]} more "
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
    but in linear time (a presence table) when the ids are non-negative integers, not too sparse.
    String ids ('U') keep their dtype; integer ids come back as int64."""
    if ids.dtype.kind == "U":
        unique, inverse = np.unique(ids, return_inverse=True)
        return unique, inverse.reshape(-1)
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
    return RatingMatrix(csr, row_ids, col_ids, major)


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
    are dropped and counted. Integer and string ids are compared as decimal strings.
    """
    _check_policy(train.major, duplicates)
    rows, cols = ((triples.users, triples.items) if train.major == "users"
                  else (triples.items, triples.users))
    r, known_r = lookup_ids(train.row_ids, rows)
    c, known_c = lookup_ids(train.col_ids, cols)
    keep = known_r & known_c
    where = np.flatnonzero(keep)
    csr = _to_csr(r[keep], c[keep], triples.ratings[keep], train.shape, duplicates, source,
                  triples, where)
    rows_with = np.flatnonzero(np.diff(csr.indptr) > 0)
    return EvalSplit(csr, rows_with,
                     int((~known_r).sum()), int((known_r & ~known_c).sum()))


def lookup_ids(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position of each id in the sorted id map, whether it is there); integer and string ids
    are compared as decimal strings."""
    sorted_ids, ids = np.asarray(sorted_ids), np.asarray(ids)
    if len(sorted_ids) == 0:
        return np.zeros(ids.shape, np.int64), np.zeros(ids.shape, bool)
    order = None
    if sorted_ids.dtype.kind != "U" and ids.dtype.kind == "U":  # decimal strings sort otherwise
        sorted_ids = sorted_ids.astype(str)
        order = np.argsort(sorted_ids, kind="stable")
        sorted_ids = sorted_ids[order]
    sorted_ids, ids = unify_ids(sorted_ids, ids)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    known = sorted_ids[pos] == ids
    return (pos if order is None else order[pos]), known


def load_triples(path: str, delimiter: str = "auto", column_order: str = "user,item,rating",
                 **options) -> Triples:
    """Reads ratings from a ``.npz`` written by :meth:`RatingMatrix.save` or from a ratings
    table (``options``: header, columns, timestamp_column of :class:`TableFormat`)."""
    if path.endswith(".npz") and os.path.isfile(path):
        return RatingMatrix.load(path).to_triples()
    return read_table(path, TableFormat(delimiter, column_order=column_order, **options))


def load_matrix(path: str, major: str = "users", delimiter: str = "auto",
                column_order: str = "user,item,rating", **options) -> RatingMatrix:
    """Loads a training matrix from a ``.npz`` cache (fast path) or from a ratings table
    (``options``: header, columns, timestamp_column of :class:`TableFormat`)."""
    if path.endswith(".npz") and os.path.isfile(path):
        m = RatingMatrix.load(path)
        if m.major == major:
            return m
        return build_matrix(m.to_triples(), major, source=path)
    triples = read_table(path, TableFormat(delimiter, column_order=column_order, **options))
    return build_matrix(triples, major, source=path)


def from_dataframe(df, user_col: str = "userId", item_col: str = "movieId",
                   rating_col: str = "rating", major: str = "users",
                   duplicates: str = "error") -> RatingMatrix:
    """A :class:`RatingMatrix` from a pandas DataFrame's user, item and rating columns (ids
    typed exactly as the file readers do; errors name the column or the 0-based row)."""
    from deepae_jax.data.readers.arrow import triples_from_dataframe
    return build_matrix(triples_from_dataframe(df, user_col, item_col, rating_col), major,
                        duplicates, source="DataFrame")
