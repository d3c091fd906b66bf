"""Neighbourhood members of the best recipe's ensembles (``experiments/beyond.py``).

The k-nearest-neighbours model on the residuals of the user + item bias model (Koren, KDD 2008,
section 2.2), a family unlike the autoencoders, which is what a stacked ensemble gains from.
With b(u, i) the bias model (lambdas chosen on VALID) and e_uj = r_uj - b(u, j) the training
residuals, the item-based prediction of user u's rating of item i is

    b(u, i) + sum_j s_ij e_uj / sum_j s_ij,   j over N_k(i; u),

N_k(i; u) the (at most) k items rated by u that are most similar to i, those with s_ij > 0
(none: b(u, i)). s_ij is the correlation of the residuals of i and j over the n_ij users who
rated both, shrunk towards 0 when they are few:

    s_ij = (n_ij - 1) / (n_ij - 1 + shrink) * sum_u e_ui e_uj / sqrt(sum_u e_ui^2 sum_u e_uj^2).

User-based: the same with users and items swapped. k and shrink are chosen on VALID
(:func:`choose`); a refit keeps them and the lambdas (:func:`fit` on TRAIN + VALID).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from deepae_jax import baseline as baseline_lib
from deepae_jax.data import ratings

SIDES = ("items", "users")
K_GRID = (20, 40, 80)
SHRINK_GRID = (25.0, 100.0, 400.0)
MAX_NEIGHBOURS = 20_000  # a dense similarity over more users (items) than this is not built
BLOCK = 1024  # columns of the similarity computed at a time


@dataclasses.dataclass(frozen=True)
class Neighbours:
    """A fitted neighbourhood model over a users x items training matrix.

    Attributes:
      side: "items" (neighbours are items: item-based) or "users".
      k, shrink: as in the module's formula.
      base: the bias model b (rows users, columns items).
      residuals: e, one row per user ("items") or per item ("users"), one column per neighbour.
      similarity: s, float32, neighbours x neighbours, zero on the diagonal.
    """

    side: str
    k: int
    shrink: float
    base: baseline_lib.Baseline
    residuals: sp.csr_matrix
    similarity: np.ndarray


def similarity(residuals: sp.csr_matrix, shrink: float, block: int = BLOCK) -> np.ndarray:
    """s between the columns of ``residuals`` (its stored entries are the observed ratings'
    residuals), float32, zero on the diagonal; ``block`` columns at a time (memory)."""
    e = residuals.tocsc().astype(np.float64)
    rated = e.copy()
    rated.data = np.ones_like(rated.data)
    e2 = e.multiply(e).tocsc()
    n_cols = e.shape[1]
    s = np.empty((n_cols, n_cols), np.float32)
    for lo in range(0, n_cols, block):
        cols = slice(lo, min(lo + block, n_cols))
        cross = (e[:, cols].T @ e).toarray()
        n = (rated[:, cols].T @ rated).toarray()
        # sums of e_ui^2 (i in the block) and of e_uj^2 (every j) over the users who rated both
        own = (e2[:, cols].T @ rated).toarray()
        other = (rated[:, cols].T @ e2).toarray()
        norm = np.sqrt(own * other)
        corr = np.divide(cross, norm, out=np.zeros_like(cross), where=norm > 0)
        s[cols] = corr * np.maximum(n - 1, 0) / np.maximum(n - 1 + shrink, 1e-12)
    np.fill_diagonal(s, 0.0)
    return s


def fit(train: ratings.RatingMatrix, base: baseline_lib.Baseline, side: str, k: int,
        shrink: float) -> Neighbours:
    """The model of ``side`` on ``train`` (users x items) with the bias model ``base``."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if train.major != "users":
        raise ValueError("neighbours: the training matrix must have users as rows")
    csr = train.csr.tocsr()
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    e = sp.csr_matrix((csr.data - base.offset(rows, csr.indices), csr.indices, csr.indptr),
                      shape=csr.shape)
    residuals = e if side == "items" else e.T.tocsr()
    if residuals.shape[1] > MAX_NEIGHBOURS:
        raise ValueError(f"neighbours: {residuals.shape[1]} {side} is more than "
                         f"MAX_NEIGHBOURS={MAX_NEIGHBOURS} (a dense similarity)")
    return Neighbours(side, int(k), float(shrink), base, residuals, similarity(residuals, shrink))


def predict(model: Neighbours, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The prediction of each (users[q], items[q]) (dense training indices, -1: unknown to
    training, predicted by the bias model), not clipped."""
    users, items = np.asarray(users), np.asarray(items)
    out = model.base.fallback(users, items).astype(np.float64)
    owners, targets = (users, items) if model.side == "items" else (items, users)
    known = np.flatnonzero((owners >= 0) & (targets >= 0))
    order = known[np.argsort(owners[known], kind="stable")]
    starts = np.flatnonzero(np.r_[True, np.diff(owners[order]) != 0])
    e = model.residuals
    for group in np.split(order, starts[1:]) if len(order) else []:
        a = owners[group[0]]
        lo, hi = e.indptr[a], e.indptr[a + 1]
        if lo == hi:
            continue
        rated, res = e.indices[lo:hi], e.data[lo:hi]
        w = model.similarity[np.ix_(targets[group], rated)]
        if w.shape[1] > model.k:  # keep each query's k largest
            keep = np.argpartition(-w, model.k - 1, axis=1)[:, :model.k]
            mask = np.zeros(w.shape, bool)
            np.put_along_axis(mask, keep, True, axis=1)
            w = np.where(mask, w, 0.0)
        w = np.maximum(w, 0.0)
        total = w.sum(axis=1)
        has = total > 0
        out[group[has]] += (w[has] @ res) / total[has]
    return out


def choose(train: ratings.RatingMatrix, base: baseline_lib.Baseline, side: str,
           valid_users: np.ndarray, valid_items: np.ndarray, valid_actual: np.ndarray,
           k_grid: tuple[int, ...] = K_GRID, shrink_grid: tuple[float, ...] = SHRINK_GRID
           ) -> tuple[Neighbours, dict[str, float]]:
    """(the model of lowest VALID RMSE over the grid, {"k=K shrink=S": VALID RMSE}); the
    predictions clipped to the training ratings' range as they are scored."""
    scores, best = {}, None
    for shrink in shrink_grid:
        model = fit(train, base, side, k_grid[0], shrink)
        for k in k_grid:
            model = dataclasses.replace(model, k=int(k))
            pred = np.clip(predict(model, valid_users, valid_items), base.rating_min,
                           base.rating_max)
            rmse = float(np.sqrt(np.mean((pred - valid_actual) ** 2)))
            scores[f"k={k} shrink={shrink:g}"] = rmse
            if best is None or rmse < best[0]:
                best = (rmse, model)
    return best[1], scores
