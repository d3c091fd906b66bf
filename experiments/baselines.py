"""Non-neural baselines on the same splits and under the same evaluation rule as the autoencoder
(ratings of users or items unknown to TRAIN are excluded):

* global mean: every rating predicted as the TRAIN mean;
* user/item biases: ``r = mu + b_u + b_i``, fitted by alternating regularised least squares
  (``b_u = sum(r - mu - b_i) / (lambda + n_u)``, then the same for items, 20 sweeps); lambda is
  chosen on VALID from a fixed grid and the chosen model is scored on TEST.
"""
from __future__ import annotations

import numpy as np

from deepae_jax.data.ratings import load_triples

LAMBDAS = (0.0, 1.0, 3.0, 10.0, 25.0, 50.0)


def _known(train, t):
    ku, ki = np.isin(t.users, train.users), np.isin(t.items, train.items)
    m = ku & ki
    return t.users[m], t.items[m], t.ratings[m].astype(np.float64)


def fit_biases(users, items, r, lam: float, sweeps: int = 20):
    """(mu, {user: b_u}, {item: b_i}) as arrays over the sorted unique ids."""
    mu = float(r.mean())
    uids, u = np.unique(users, return_inverse=True)
    iids, i = np.unique(items, return_inverse=True)
    bu, bi = np.zeros(len(uids)), np.zeros(len(iids))
    nu, ni = np.bincount(u, minlength=len(uids)), np.bincount(i, minlength=len(iids))
    for _ in range(sweeps):
        bu = np.bincount(u, r - mu - bi[i], len(uids)) / (lam + nu)
        bi = np.bincount(i, r - mu - bu[u], len(iids)) / (lam + ni)
    return mu, (uids, bu), (iids, bi)


def predict_biases(model, users, items):
    mu, (uids, bu), (iids, bi) = model
    return mu + bu[np.searchsorted(uids, users)] + bi[np.searchsorted(iids, items)]


def rmse(pred, actual) -> float:
    return float(np.sqrt(np.mean((pred - actual) ** 2))) if actual.size else float("nan")


def run_baselines(train_path: str, valid_path: str, test_path: str) -> list[dict]:
    """Rows {name, label, best_valid_rmse, test_rmse, test_count, note} of both baselines."""
    train, valid, test = (load_triples(p) for p in (train_path, valid_path, test_path))
    tr_r = train.ratings.astype(np.float64)
    vu, vi, vr = _known(train, valid)
    su, si, sr = _known(train, test)
    mu = float(tr_r.mean())
    rows = [{"name": "global_mean", "label": "global mean", "best_valid_rmse": rmse(mu, vr),
             "test_rmse": rmse(mu, sr), "test_count": int(sr.size),
             "note": f"mean TRAIN rating {mu:.4f}"}]
    scores = []
    for lam in LAMBDAS:
        model = fit_biases(train.users, train.items, tr_r, lam)
        scores.append((rmse(predict_biases(model, vu, vi), vr), lam, model))
    v, lam, model = min(scores, key=lambda s: s[0])
    rows.append({"name": "biases", "label": "user + item biases", "best_valid_rmse": v,
                 "test_rmse": rmse(predict_biases(model, su, si), sr), "test_count": int(sr.size),
                 "note": f"lambda={lam:g} chosen on VALID from {list(LAMBDAS)}"})
    return rows
