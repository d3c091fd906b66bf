"""Ratings relative to a baseline (beyond the paper): the autoencoder learns residuals.

A baseline predicts ``b(r, c) = mu + row_bias[r] + col_bias[c]`` for row r and column c of the
training matrix (rows are users or items, by ``--major``):

* ``none``: mu = 0, no biases (the paper's model: the autoencoder sees the raw ratings);
* ``global``: mu = the training mean;
* ``bias``: mu = the training mean plus regularised user and item biases, fitted by alternating
  least squares on ``sum (r - mu - b_u - b_i)^2 + reg_user |b_u|^2 + reg_item |b_i|^2``.

Training replaces each stored rating by ``(r - b(r, c)) / scale`` (:func:`residual_csr`), so an
unrated entry (0) means "the baseline's prediction"; ``scale`` is the residuals' RMS, which makes
the autoencoder see unit-sized numbers whatever the rating scale (0.5..5, 1..5, 1..100). A
prediction is ``b(r, c) + scale * f(x)[c]`` (:func:`add_back`). Rows or columns unknown to
training have zero bias (their prediction is mu plus the known side's bias; with ``none``, the
training mean). The fitted values are saved beside the checkpoints in ``baseline.npz``.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import scipy.sparse as sp

from deepae_jax.run import files
from deepae_jax.run.files import atomic_write

KINDS = ("none", "global", "bias")
REG_GRID = (0.5, 2.0, 5.0, 10.0, 25.0, 50.0)  # the lambdas tried by ``auto`` (-1)
DEFAULT_REG = (15.0, 10.0)  # (user, item): ``auto`` without evaluation data
ZERO_RESIDUAL = 1e-6  # a residual of exactly 0 would read as "unrated"; stored as this instead


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A fitted baseline in the model's id layout (rows/cols of the training matrix).

    Attributes:
      kind: one of KINDS.
      mu: global offset (0 for ``none``).
      row_bias, col_bias: float64 biases per training row / column (zeros unless ``bias``).
      scale: residuals are divided by it for training (1 for ``none``).
      mean: the training mean (the prediction for a rating whose row and column are unknown).
      rating_min, rating_max: the training ratings' range (for clipping predictions).
      input_shift: added to every observed input residual (not to the targets): ``mu / scale``
        with ``shifted`` input, so that a rated entry reads as a (bias-corrected) rating and
        stays distinguishable from an unrated 0; 0 otherwise.
      reg_row, reg_col: the lambdas the biases were fitted with (-1: no biases).
    """

    kind: str
    mu: float
    row_bias: np.ndarray
    col_bias: np.ndarray
    scale: float
    mean: float
    rating_min: float
    rating_max: float
    input_shift: float = 0.0
    reg_row: float = -1.0
    reg_col: float = -1.0

    def offset(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """b(r, c) for dense indices; an index of -1 (unknown to training) has zero bias."""
        rows, cols = np.asarray(rows), np.asarray(cols)
        rb = np.where(rows >= 0, self.row_bias[np.maximum(rows, 0)], 0.0)
        cb = np.where(cols >= 0, self.col_bias[np.maximum(cols, 0)], 0.0)
        return self.mu + rb + cb

    def fallback(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The prediction for ratings the autoencoder cannot score (row or column unknown)."""
        base = self.offset(rows, cols)
        return base if self.kind != "none" else base + self.mean


def bias_als(csr: sp.csr_matrix, mu: float, reg_row: float, reg_col: float,
             sweeps: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """(row_bias, col_bias) by ``sweeps`` alternating exact minimisations: each row's bias is
    sum(r - mu - col_bias) / (reg_row + n_row), then each column's likewise."""
    coo = csr.tocoo()
    r, c, v = coo.row, coo.col, coo.data.astype(np.float64) - mu
    n_rows, n_cols = csr.shape
    cnt_r = np.bincount(r, minlength=n_rows)
    cnt_c = np.bincount(c, minlength=n_cols)
    row_b, col_b = np.zeros(n_rows), np.zeros(n_cols)
    for _ in range(sweeps):
        row_b = np.bincount(r, v - col_b[c], minlength=n_rows) / (reg_row + cnt_r)
        col_b = np.bincount(c, v - row_b[r], minlength=n_cols) / (reg_col + cnt_c)
    return row_b, col_b


def _rmse(b: Baseline, eval_csr: sp.csr_matrix) -> float:
    coo = eval_csr.tocoo()
    return float(np.sqrt(np.mean((b.offset(coo.row, coo.col) - coo.data) ** 2)))


def fit(csr: sp.csr_matrix, kind: str, reg_row: float = -1.0, reg_col: float = -1.0,
        eval_csr: sp.csr_matrix | None = None, scale: bool = True,
        shifted_input: bool = False) -> Baseline:
    """Fits ``kind`` on the training ratings ``csr``. A negative lambda is chosen from REG_GRID
    by RMSE on ``eval_csr`` (evaluation ratings aligned to ``csr``; DEFAULT_REG without it).
    ``reg_row``/``reg_col`` are the lambdas of the matrix's rows and columns."""
    if kind not in KINDS:
        raise ValueError(f"baseline kind must be one of {KINDS}, got {kind!r}")
    data = csr.data.astype(np.float64)
    mean = float(data.mean())
    zeros_r, zeros_c = np.zeros(csr.shape[0]), np.zeros(csr.shape[1])
    base = Baseline(kind, 0.0 if kind == "none" else mean, zeros_r, zeros_c, 1.0, mean,
                    float(data.min()), float(data.max()))
    if kind == "bias":
        base = dataclasses.replace(base, **_fit_biases(csr, mean, reg_row, reg_col, eval_csr))
    if kind != "none" and scale:
        coo = csr.tocoo()
        rms = float(np.sqrt(np.mean((data - base.offset(coo.row, coo.col)) ** 2)))
        base = dataclasses.replace(base, scale=rms if rms > 0 else 1.0)
    if kind != "none" and shifted_input:
        base = dataclasses.replace(base, input_shift=base.mu / base.scale)
    return base


def _fit_biases(csr, mean, reg_row, reg_col, eval_csr) -> dict:
    def biases(lr, lc):
        rb, cb = bias_als(csr, mean, lr, lc)
        return {"row_bias": rb, "col_bias": cb, "reg_row": float(lr), "reg_col": float(lc)}
    if reg_row >= 0 and reg_col >= 0:
        return biases(reg_row, reg_col)
    if eval_csr is None or eval_csr.nnz == 0:
        return biases(reg_row if reg_row >= 0 else DEFAULT_REG[0],
                      reg_col if reg_col >= 0 else DEFAULT_REG[1])
    grid_r = [reg_row] if reg_row >= 0 else REG_GRID
    grid_c = [reg_col] if reg_col >= 0 else REG_GRID
    empty = Baseline("bias", mean, None, None, 1.0, mean, 0.0, 0.0)
    scored = [(_rmse(dataclasses.replace(empty, **biases(a, b)), eval_csr), a, b)
              for a in grid_r for b in grid_c]
    _, a, b = min(scored)
    return biases(a, b)


def row_col_regs(major: str, reg_user: float, reg_item: float) -> tuple[float, float]:
    """(reg of the matrix's rows, reg of its columns) for ``--major``."""
    return (reg_user, reg_item) if major == "users" else (reg_item, reg_user)


def residual_csr(b: Baseline, csr: sp.csr_matrix, row_index: np.ndarray | None = None
                 ) -> sp.csr_matrix:
    """The training matrix as the autoencoder sees it: (r - b(r, c)) / scale at every stored
    rating (same sparsity; exact zeros stored as ZERO_RESIDUAL). ``none``: ``csr`` itself.
    ``row_index``: the training row of each row of ``csr`` (-1: a row unknown to training, e.g.
    a new user, whose bias is 0); default: row i is training row i."""
    if b.kind == "none":
        return csr
    index = np.arange(csr.shape[0]) if row_index is None else np.asarray(row_index)
    rows = np.repeat(index, np.diff(csr.indptr))
    res = ((csr.data - b.offset(rows, csr.indices)) / b.scale).astype(np.float32)
    res[res == 0] = ZERO_RESIDUAL
    return sp.csr_matrix((res, csr.indices.copy(), csr.indptr.copy()), shape=csr.shape)


def input_csr(b: Baseline, residuals: sp.csr_matrix) -> sp.csr_matrix:
    """The model's input at evaluation: the residuals plus ``input_shift`` where rated."""
    if b.input_shift == 0:
        return residuals
    return sp.csr_matrix(((residuals.data + np.float32(b.input_shift)).astype(np.float32),
                          residuals.indices, residuals.indptr), shape=residuals.shape)


def model_input(b: Baseline, csr: sp.csr_matrix, row_index: np.ndarray | None = None
                ) -> sp.csr_matrix:
    """Raw ratings ``csr`` (rows in the model's layout) as the model's input: the residuals
    plus ``input_shift`` where rated (``row_index`` as in :func:`residual_csr`)."""
    return input_csr(b, residual_csr(b, csr, row_index))


def encode_dense(b: Baseline | None, x: np.ndarray, row_index: np.ndarray) -> np.ndarray:
    """Dense raw rating rows x (batch, n; 0 = unrated) as the model's input, the dense form of
    :func:`model_input` (same values): residual / scale + input_shift where rated."""
    if b is None or b.kind == "none":
        return x
    index = np.asarray(row_index)
    rb = np.where(index >= 0, b.row_bias[np.maximum(index, 0)], 0.0)
    res = ((x - (b.mu + rb[:, None] + b.col_bias[None, :])) / b.scale).astype(np.float32)
    res[res == 0] = ZERO_RESIDUAL
    if b.input_shift:
        res = (res + np.float32(b.input_shift)).astype(np.float32)
    return np.where(x != 0, res, np.float32(0)).astype(np.float32)


def output_offsets(b: Baseline | None, row_index: np.ndarray
                   ) -> tuple[float, np.ndarray, np.ndarray] | None:
    """(scale, per-row offset (len(row_index),), per-column offset (n_cols,)) such that the
    predicted ratings of rows ``row_index`` (-1: unknown to training) are
    ``row_offset[:, None] + col_offset[None, :] + scale * f(x)``; None for no baseline."""
    if b is None or b.kind == "none":
        return None
    index = np.asarray(row_index)
    row = np.where(index >= 0, b.row_bias[np.maximum(index, 0)], 0.0) + b.mu
    return float(b.scale), row.astype(np.float32), np.asarray(b.col_bias, np.float32)


def add_back(b: Baseline, rows: np.ndarray, cols: np.ndarray, outputs: np.ndarray,
             clip: bool = False) -> np.ndarray:
    """Predicted ratings b(r, c) + scale * f(x)[c], clipped to the training range if ``clip``."""
    pred = np.asarray(outputs, np.float64)
    if b.kind != "none":
        pred = b.offset(rows, cols) + b.scale * pred
    return np.clip(pred, b.rating_min, b.rating_max) if clip else pred


def save(directory: str, b: Baseline) -> str:
    """Writes ``directory/baseline.npz`` atomically; returns its path."""
    path = os.path.join(directory, files.BASELINE_FILE)

    def write(fh):
        np.savez(fh, kind=np.asarray(b.kind), row_bias=b.row_bias, col_bias=b.col_bias,
                 scalars=np.asarray([b.mu, b.scale, b.mean, b.rating_min, b.rating_max,
                                     b.input_shift, b.reg_row, b.reg_col]))
    atomic_write(path, write)
    return path


def load(directory: str) -> Baseline | None:
    """The baseline saved by :func:`save` in ``directory``, or None when there is none."""
    path = os.path.join(directory, files.BASELINE_FILE)
    if not os.path.isfile(path):
        return None
    with np.load(path, allow_pickle=False) as z:
        scalars = [float(x) for x in z["scalars"]] + [0.0, -1.0, -1.0][len(z["scalars"]) - 5:]
        mu, scale, mean, lo, hi, shift, reg_row, reg_col = scalars
        return Baseline(str(z["kind"]), mu, z["row_bias"], z["col_bias"], scale, mean, lo, hi,
                        shift, reg_row, reg_col)
