"""The final predictor, chosen on VALID (beyond the paper): never worse there than the baseline.

After training (the best epoch kept), ``--final_predictor`` picks among

* ``model``: the autoencoder as trained, ``b + scale * f(x)`` (the default; nothing is fitted);
* ``baseline``: the user + item bias baseline ``b`` alone;
* ``blend``: ``b + s(r, c) * (ae - b)``, the autoencoder's residual shrunk towards the baseline by
  ``s(r, c) = a * n_r / (n_r + k_r) * n_c / (n_c + k_c)`` (n: the training ratings of the row and
  the column; k = 0: no shrinkage by count). For each (k_r, k_c) of K_GRID x K_GRID the factor a
  is the least-squares fit on VALID; the pair with the lowest VALID RMSE is kept.

``auto`` takes the one of the three with the lowest VALID RMSE (clipping and unknown ratings as
the run predicts them), unless its gain over the baseline is within noise: the mean per-rating
drop of the squared error below MIN_Z standard errors of it (small VALID sets: a few hundred
ratings choose a blend that TEST does not confirm), when the baseline is kept. ``baseline`` is
among the candidates, so the chosen predictor's VALID RMSE is at most the baseline's, by
construction. The choice is folded into the run's
:class:`~deepae_jax.baseline.Baseline` (its gains) and saved in ``baseline.npz``, so every later
use of the run predicts with it.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import scipy.sparse as sp

from deepae_jax import baseline as baseline_lib
from deepae_jax.evaluation import predictions

log = logging.getLogger("deepae_jax.evaluation.blend")

CHOICES = ("model", "auto", "blend", "baseline")
K_GRID = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0)  # the k of the gains n / (n + k) tried on VALID
MIN_Z = 1.0  # auto: a candidate replaces the baseline only when its VALID gain is this many SEs


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A final predictor: ``b + shrink * g_r(k_row) * g_c(k_col) * (ae - b)``, its VALID RMSE."""

    name: str
    shrink: float
    k_row: float
    k_col: float
    valid_rmse: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Residuals:
    """VALID as the blend sees it: each rating's baseline prediction ``base``, the autoencoder's
    unclipped residual ``z = ae - base`` (0 where the autoencoder cannot predict), the actual
    rating, the dense row and column (-1: unknown to training) and the clipping range."""

    base: np.ndarray
    z: np.ndarray
    actual: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    clip: tuple[float, float] | None


def count_gains(counts: np.ndarray, k: float) -> np.ndarray:
    """n / (n + k) per row (or column) of ``counts`` training ratings; 1 everywhere for k = 0."""
    counts = np.asarray(counts, np.float64)
    return np.ones_like(counts) if k == 0 else counts / (counts + k)


def training_counts(csr: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(ratings per row, ratings per column) of the training matrix."""
    return np.diff(csr.indptr), np.bincount(csr.indices, minlength=csr.shape[1])


def fit_shrink(y: np.ndarray, x: np.ndarray) -> float:
    """argmin_a sum (y - a x)^2 = sum(x y) / sum(x^2) (0 when x is all 0)."""
    denom = float(np.dot(x, x))
    return float(np.dot(x, y)) / denom if denom > 0 else 0.0


def _lookup(gains: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.where(index >= 0, gains[np.maximum(index, 0)], 1.0)


def squared_errors(r: Residuals, factor: np.ndarray | float) -> np.ndarray:
    """Per-rating squared VALID errors of ``base + factor * z`` (clipped like the run's)."""
    pred = r.base + factor * r.z
    if r.clip is not None:
        pred = np.clip(pred, *r.clip)
    return (pred - r.actual) ** 2


def rmse_of(r: Residuals, factor: np.ndarray | float) -> float:
    """VALID RMSE of ``base + factor * z``."""
    return float(np.sqrt(np.mean(squared_errors(r, factor))))


def gain_z(r: Residuals, factor: np.ndarray | float) -> float:
    """The mean drop of the squared error from the baseline to ``base + factor * z``, in
    standard errors of that mean (paired over the VALID ratings; +inf for an exact gain)."""
    return paired_z(squared_errors(r, 0.0) - squared_errors(r, factor))


def paired_z(d: np.ndarray) -> float:
    """The mean of the per-rating drops ``d`` in standard errors of that mean (+inf for an
    exact gain, 0 for none)."""
    se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    mean = float(np.mean(d)) if len(d) else 0.0
    return mean / se if se > 0 else (np.inf if mean > 0 else 0.0)


def best_blend(r: Residuals, row_counts: np.ndarray, col_counts: np.ndarray,
               grid: tuple[float, ...] = K_GRID) -> Candidate:
    """The blend of lowest VALID RMSE over ``grid`` x ``grid``, its factor a least squares."""
    best = None
    for k_row in grid:
        g_row = _lookup(count_gains(row_counts, k_row), r.rows)
        for k_col in grid:
            g = g_row * _lookup(count_gains(col_counts, k_col), r.cols)
            a = fit_shrink(r.actual - r.base, g * r.z)
            cand = Candidate("blend", a, k_row, k_col, rmse_of(r, a * g))
            best = cand if best is None or cand.valid_rmse < best.valid_rmse else best
    return best


def choose(r: Residuals, row_counts: np.ndarray, col_counts: np.ndarray, mode: str
           ) -> tuple[Candidate, list[Candidate]]:
    """(the chosen predictor, every candidate scored) for ``--final_predictor=mode``."""
    if mode not in CHOICES:
        raise ValueError(f"final predictor must be one of {CHOICES}, got {mode!r}")
    scored = [Candidate("model", 1.0, 0.0, 0.0, rmse_of(r, 1.0)),
              Candidate("baseline", 0.0, 0.0, 0.0, rmse_of(r, 0.0)),
              best_blend(r, row_counts, col_counts)]
    allowed = [c for c in scored if mode == "auto" or c.name == mode]
    best = min(allowed, key=lambda c: c.valid_rmse)
    if mode == "auto" and best.name != "baseline" and gain_z(r, factor_of(
            best, r, row_counts, col_counts)) < MIN_Z:
        return scored[1], scored
    return best, scored


def factor_of(c: Candidate, r: Residuals, row_counts: np.ndarray, col_counts: np.ndarray
              ) -> np.ndarray:
    """The factor s(r, c) of candidate ``c`` at each VALID rating."""
    return (c.shrink * _lookup(count_gains(row_counts, c.k_row), r.rows)
            * _lookup(count_gains(col_counts, c.k_col), r.cols))


def apply(base: baseline_lib.Baseline, chosen: Candidate, row_counts: np.ndarray,
          col_counts: np.ndarray) -> baseline_lib.Baseline:
    """The run's baseline carrying the chosen predictor's gains (see baseline.add_back)."""
    base = base.unblended()
    if chosen.name == "model":
        return base
    return dataclasses.replace(base, shrink=chosen.shrink,
                               row_gain=count_gains(row_counts, chosen.k_row),
                               col_gain=count_gains(col_counts, chosen.k_col),
                               blend_k=(chosen.k_row, chosen.k_col))


def residuals(params, model_cfg, inputs: sp.csr_matrix, base: baseline_lib.Baseline,
              targets: predictions.EvalTargets, clip: bool, batch_size: int = 256
              ) -> Residuals:
    """VALID's :class:`Residuals` under the trained model (``inputs``: its input matrix)."""
    base = base.unblended()
    ae = predictions.predict_all(params, model_cfg, inputs, base, targets, batch_size,
                                 clip=False, unknown="drop")
    b = base.fallback(targets.rows, targets.cols)
    z = np.where(np.isfinite(ae), ae - b, 0.0)
    return Residuals(b, z, targets.actual, targets.rows, targets.cols,
                     (base.rating_min, base.rating_max) if clip else None)


def choose_final(params, model_cfg, inputs: sp.csr_matrix, base: baseline_lib.Baseline,
                 targets: predictions.EvalTargets, train_csr: sp.csr_matrix, mode: str,
                 clip: bool, batch_size: int = 256) -> tuple[baseline_lib.Baseline, dict]:
    """Chooses the final predictor on VALID (``targets``), logs why; returns (the baseline with
    the choice folded in, a record for summary.json)."""
    r = residuals(params, model_cfg, inputs, base, targets, clip, batch_size)
    counts = training_counts(train_csr)
    chosen, scored = choose(r, *counts, mode)
    log.info("final predictor (--final_predictor=%s): %s; VALID RMSE %s", mode, chosen.name,
             ", ".join(f"{c.name} {c.valid_rmse:.4f}" + (
                 f" (a={c.shrink:.3f}, k_row={c.k_row:g}, k_col={c.k_col:g})"
                 if c.name == "blend" else "") for c in scored))
    record = {"final_predictor": chosen.name, "final_predictor_mode": mode,
              "final_predictor_valid_rmse": chosen.valid_rmse,
              "final_predictor_candidates": [c.to_dict() for c in scored]}
    return apply(base, chosen, *counts), record

