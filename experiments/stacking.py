"""The stacking step of the ensembles (``experiments/beyond.py``): least-squares weights on VALID.

A stacked prediction is ``b + sum_g w_g (p_g - b)``: b the bias baseline, p_g the mean prediction
of group g (item-based runs, user-based runs, GLocal-K runs). The weights may depend on how
active the rating's item (or user) is: with ``item_bins``, one weight per group and per tercile
of the item's number of training ratings (cut at the terciles of the training items' counts;
``user_bins`` likewise). Which form is used is chosen on VALID alone, by 10-fold
cross-validation of the fit on VALID (:func:`choose_form`). Every form contains w = 0, the
baseline, so its VALID fit is never worse than the baseline's (before clipping).
"""
from __future__ import annotations

import numpy as np

from deepae_jax.data import ratings

FORMS = ("plain", "item_bins", "user_bins")
N_BINS = 3
FOLDS = 10


def activity_bins(ids: np.ndarray, train_ids: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """The bin (0..n_bins-1) of each id's number of ratings in ``train_ids`` (0 for an id not
    there), the bins cut at the quantiles of the counts of the ids in ``train_ids``."""
    ids, train_ids = ratings.unify_ids(np.asarray(ids), np.asarray(train_ids))
    known_ids, counts = np.unique(train_ids, return_counts=True)
    pos = np.minimum(np.searchsorted(known_ids, ids), len(known_ids) - 1)
    count = np.where(known_ids[pos] == ids, counts[pos], 0)
    edges = np.quantile(counts, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.digitize(count, edges)


def features(base: np.ndarray, groups: list[np.ndarray], bins: np.ndarray | None = None
             ) -> np.ndarray:
    """The regressors: each group's residual ``p_g - b``, split by bin when ``bins`` is given."""
    x = np.stack([g - base for g in groups], axis=1)
    if bins is None:
        return x
    return np.concatenate([x * (bins == k)[:, None] for k in range(N_BINS)], axis=1)


def fit(y: np.ndarray, base: np.ndarray, groups: list[np.ndarray],
        bins: np.ndarray | None = None) -> np.ndarray:
    """Least-squares weights of ``y - b`` on :func:`features`."""
    return np.linalg.lstsq(features(base, groups, bins), y - base, rcond=None)[0]


def predict(w: np.ndarray, base: np.ndarray, groups: list[np.ndarray],
            bins: np.ndarray | None, bounds: tuple[float, float]) -> np.ndarray:
    """The stacked prediction, clipped to the training ratings' range."""
    return np.clip(base + features(base, groups, bins) @ w, *bounds)


def cv_rmse(y: np.ndarray, base: np.ndarray, groups: list[np.ndarray],
            bins: np.ndarray | None, bounds: tuple[float, float], folds: int = FOLDS,
            seed: int = 0) -> float:
    """RMSE of the stacking fitted on the other folds of VALID, over every VALID rating."""
    fold = np.random.default_rng(seed).integers(0, folds, len(y))
    x = features(base, groups, bins)
    sse = 0.0
    for k in range(folds):
        out = fold == k
        w = np.linalg.lstsq(x[~out], (y - base)[~out], rcond=None)[0]
        sse += float(np.sum((np.clip(base[out] + x[out] @ w, *bounds) - y[out]) ** 2))
    return float(np.sqrt(sse / len(y)))


def choose_form(y: np.ndarray, base: np.ndarray, groups: list[np.ndarray],
                bins: dict[str, np.ndarray | None], bounds: tuple[float, float]
                ) -> tuple[str, dict[str, float]]:
    """(the form of lowest cross-validated VALID RMSE, every form's), forms as in ``bins``."""
    scores = {form: cv_rmse(y, base, groups, b, bounds) for form, b in bins.items()}
    return min(scores, key=scores.get), scores
