"""The stacking step of the ensembles (``experiments/beyond.py``): least-squares weights on VALID.

A stacked prediction is ``b + sum_g w_g (p_g - b)``: b the bias baseline, p_g the mean prediction
of group g (item-based runs, user-based runs, GLocal-K runs). The weights may depend on how
active the rating's item (or user) is: with ``item_bins``, one weight per group and per tercile
of the item's number of training ratings (cut at the terciles of the training items' counts;
``user_bins`` likewise). Which form is used is chosen on VALID alone, by 10-fold
cross-validation of the fit on VALID (:func:`choose_form`), the baseline alone (w = 0) among
the forms: a stacked form replaces it only when its cross-validated gain is at least
``blend.MIN_Z`` standard errors (the rule of the recipe's final predictor), so that on a small
or noisy VALID the ensemble keeps the floor the baseline gives.
"""
from __future__ import annotations

import numpy as np

from deepae_jax.data import ratings
from deepae_jax.evaluation import blend

FORMS = ("plain", "item_bins", "user_bins")
BASELINE = "baseline"  # the form without groups: w = 0
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


def fit_form(form: str, y: np.ndarray, base: np.ndarray, groups: list[np.ndarray],
             bins: np.ndarray | None) -> np.ndarray:
    """:func:`fit` of ``form`` (``bins``: its bins); zeros for :data:`BASELINE`."""
    if form == BASELINE:
        return np.zeros(len(groups))
    return fit(y, base, groups, bins)


def predict(w: np.ndarray, base: np.ndarray, groups: list[np.ndarray],
            bins: np.ndarray | None, bounds: tuple[float, float]) -> np.ndarray:
    """The stacked prediction, clipped to the training ratings' range."""
    return np.clip(base + features(base, groups, bins) @ w, *bounds)


def cv_predictions(y: np.ndarray, base: np.ndarray, groups: list[np.ndarray],
                   bins: np.ndarray | None, bounds: tuple[float, float], folds: int = FOLDS,
                   seed: int = 0) -> np.ndarray:
    """Each VALID rating's stacked prediction with the weights fitted on the other folds."""
    fold = np.random.default_rng(seed).integers(0, folds, len(y))
    x = features(base, groups, bins)
    out = np.empty(len(y))
    for k in range(folds):
        held = fold == k
        w = np.linalg.lstsq(x[~held], (y - base)[~held], rcond=None)[0]
        out[held] = np.clip(base[held] + x[held] @ w, *bounds)
    return out


def cv_rmse(y: np.ndarray, base: np.ndarray, groups: list[np.ndarray],
            bins: np.ndarray | None, bounds: tuple[float, float], folds: int = FOLDS,
            seed: int = 0) -> float:
    """RMSE of the stacking fitted on the other folds of VALID, over every VALID rating."""
    pred = cv_predictions(y, base, groups, bins, bounds, folds, seed)
    return float(np.sqrt(np.mean((pred - y) ** 2)))


def choose_form(y: np.ndarray, base: np.ndarray, groups: list[np.ndarray],
                bins: dict[str, np.ndarray | None], bounds: tuple[float, float]
                ) -> tuple[str, dict[str, float]]:
    """(the chosen form, every form's cross-validated VALID RMSE), forms as in ``bins`` and
    :data:`BASELINE`: the stacked form of lowest RMSE unless its per-rating gain over the
    baseline is under ``blend.MIN_Z`` standard errors, then the baseline."""
    floor = np.clip(base, *bounds)
    cv = {form: cv_predictions(y, base, groups, b, bounds) for form, b in bins.items()}
    scores = {form: float(np.sqrt(np.mean((p - y) ** 2))) for form, p in cv.items()}
    scores[BASELINE] = float(np.sqrt(np.mean((floor - y) ** 2)))
    best = min(cv, key=scores.get)
    if blend.paired_z((floor - y) ** 2 - (cv[best] - y) ** 2) < blend.MIN_Z:
        return BASELINE, scores
    return best, scores
