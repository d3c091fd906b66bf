"""A prediction for every rating asked for (beyond the paper), and its scores.

The paper's protocol (``evaluate.py``) scores only the evaluation ratings whose row and column are
known to training. Here every evaluation rating gets a prediction: known ones from the
autoencoder (plus the run's baseline, :mod:`deepae_jax.baseline`, optionally clipped to the
training range), unknown ones from the baseline alone (``unknown="baseline"``) or none
(``unknown="drop"``: the paper's protocol, NaN in the prediction array). Predictions come back in
the order of the evaluation triples, so models trained on other layouts (users or items as rows,
other seeds) can be averaged rating by rating (ensembles).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from deepae_jax import baseline as baseline_lib
from deepae_jax.data import ratings
from deepae_jax.evaluation.protocol import Scores, predict_eval_ratings

UNKNOWN = ("drop", "baseline")


@dataclasses.dataclass(frozen=True)
class EvalTargets:
    """Evaluation triples aligned to a training matrix.

    ``rows``/``cols``: dense training index of each triple (-1: unknown to training);
    ``actual``: the ratings; ``split``: the known ratings as the paper's :class:`EvalSplit`;
    ``triples``: the ratings with their ORIGINAL ids.
    """

    split: ratings.EvalSplit
    rows: np.ndarray
    cols: np.ndarray
    actual: np.ndarray
    triples: ratings.Triples

    @property
    def known(self) -> np.ndarray:
        return (self.rows >= 0) & (self.cols >= 0)

    @property
    def n_unknown(self) -> int:
        return int((~self.known).sum())


def _lookup(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Index of each id in ``sorted_ids``, -1 where absent (int or string ids alike)."""
    at, known = ratings.lookup_ids(sorted_ids, ids)
    return np.where(known, at, -1)


def align_targets(train: ratings.RatingMatrix, triples: ratings.Triples,
                  source: str = "evaluation data") -> EvalTargets:
    """Maps ORIGINAL-id evaluation triples onto the training matrix's dense ids."""
    rows, cols = ((triples.users, triples.items) if train.major == "users"
                  else (triples.items, triples.users))
    split = ratings.align_eval(train, triples, source=source)
    return EvalTargets(split, _lookup(train.row_ids, rows), _lookup(train.col_ids, cols),
                       np.asarray(triples.ratings, np.float64), triples)


def predict_all(params, model_cfg, model_input_csr, base: baseline_lib.Baseline,
                targets: EvalTargets, batch_size: int = 256, clip: bool = False,
                unknown: str = "drop", predict_fn: Callable = predict_eval_ratings
                ) -> np.ndarray:
    """Predicted rating of every evaluation triple (float64, triple order).

    ``model_input_csr``: the training matrix as the model sees it (residuals when the baseline
    is not ``none``). Known ratings: ``base.add_back`` of the model's output; unknown ones:
    ``base.fallback`` (clipped too) with ``unknown="baseline"``, NaN with ``"drop"``.
    """
    if unknown not in UNKNOWN:
        raise ValueError(f"unknown must be one of {UNKNOWN}, got {unknown!r}")
    pred = np.full(len(targets.actual), np.nan)
    keys, values = [], []
    for rows, cols, out, _ in predict_fn(params, model_cfg, model_input_csr, targets.split.csr,
                                        targets.split.rows, batch_size):
        keys.append(rows.astype(np.int64) * model_input_csr.shape[1] + cols)
        values.append(baseline_lib.add_back(base, rows, cols, out, clip))
    known = np.flatnonzero(targets.known)
    if keys:
        keys, values = np.concatenate(keys), np.concatenate(values)
        order = np.argsort(keys, kind="stable")
        keys, values = keys[order], values[order]
        want = targets.rows[known].astype(np.int64) * model_input_csr.shape[1] + targets.cols[known]
        at = np.minimum(np.searchsorted(keys, want), max(len(keys) - 1, 0))
        hit = keys[at] == want if len(keys) else np.zeros(len(want), bool)
        pred[known[hit]] = values[at[hit]]
    if unknown == "baseline":
        rest = np.flatnonzero(np.isnan(pred))
        fb = base.fallback(targets.rows[rest], targets.cols[rest])
        pred[rest] = np.clip(fb, base.rating_min, base.rating_max) if clip else fb
    return pred


def score(pred: np.ndarray, actual: np.ndarray) -> Scores:
    """Scores of the finite predictions (NaN = not predicted)."""
    ok = np.isfinite(pred)
    err = pred[ok] - np.asarray(actual, np.float64)[ok]
    return Scores(float(np.sum(err ** 2)), float(np.sum(np.abs(err))), int(ok.sum()), len(pred))


def baseline_scores(base: baseline_lib.Baseline, targets: EvalTargets,
                    clip: bool = False, unknown: str = "baseline") -> Scores:
    """Scores of the baseline alone (the autoencoder predicting 0 everywhere) on every rating
    (``unknown="drop"``: on the ratings known to training only)."""
    pred = base.fallback(targets.rows, targets.cols)
    pred = np.clip(pred, base.rating_min, base.rating_max) if clip else pred
    if unknown == "drop":
        pred = np.where(targets.known, pred, np.nan)
    return score(pred, targets.actual)
