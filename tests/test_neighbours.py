"""experiments/neighbours.py against a loop over the formula, and on a planted structure."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from deepae_jax import baseline as baseline_lib
from deepae_jax.data import ratings
from experiments import neighbours


def random_matrix(seed: int = 0, n_users: int = 30, n_items: int = 12, density: float = 0.5
                  ) -> ratings.RatingMatrix:
    rng = np.random.default_rng(seed)
    dense = rng.integers(1, 6, (n_users, n_items)).astype(np.float32)
    mask = rng.random((n_users, n_items)) < density
    mask[np.arange(n_users), rng.integers(0, n_items, n_users)] = True  # every user rates
    mask[rng.integers(0, n_users, n_items), np.arange(n_items)] = True  # every item is rated
    u, i = np.nonzero(mask)
    return ratings.build_matrix(ratings.Triples(u, i, dense[u, i]))


def loop_similarity(dense_e: np.ndarray, rated: np.ndarray, shrink: float) -> np.ndarray:
    """s between columns, one pair at a time over their common rows."""
    n = dense_e.shape[1]
    s = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            common = rated[:, i] & rated[:, j]
            if i == j or not common.any():
                continue
            a, b = dense_e[common, i], dense_e[common, j]
            norm = np.sqrt(np.sum(a * a) * np.sum(b * b))
            m = common.sum()
            s[i, j] = (np.sum(a * b) / norm if norm > 0 else 0.0) * (m - 1) / (m - 1 + shrink)
    return s


def loop_predict(base, dense_e, rated, s, k, user, item, side):
    """b(u, i) + the k most similar rated neighbours' residuals, weighted by s > 0."""
    b = base.fallback(np.array([user]), np.array([item]))[0]
    if side == "users":
        dense_e, rated, user, item = dense_e.T, rated.T, item, user
    cand = np.flatnonzero(rated[user])
    order = cand[np.argsort(-s[item, cand], kind="stable")][:k]
    w = np.array([s[item, j] for j in order if s[item, j] > 0])
    r = np.array([dense_e[user, j] for j in order if s[item, j] > 0])
    return b + (np.sum(w * r) / np.sum(w) if len(w) else 0.0)


@pytest.mark.parametrize("side", neighbours.SIDES)
def test_similarity_and_prediction_follow_the_formula(side):
    train = random_matrix()
    base = baseline_lib.fit(train.csr, "bias", 3.0, 2.0)
    model = neighbours.fit(train, base, side, k=4, shrink=5.0)
    dense = train.csr.toarray()
    rated = dense > 0
    rows, cols = np.nonzero(rated)
    dense_e = np.zeros_like(dense, dtype=np.float64)
    dense_e[rows, cols] = dense[rows, cols] - base.offset(rows, cols)
    e_side, rated_side = (dense_e, rated) if side == "items" else (dense_e.T, rated.T)
    s = loop_similarity(e_side, rated_side, 5.0)
    np.testing.assert_allclose(model.similarity, s, atol=1e-6)
    np.testing.assert_array_equal(neighbours.similarity(model.residuals, 5.0, block=5),
                                  model.similarity)  # blocks that do not divide the columns

    users = np.array([0, 0, 3, 7, 29, -1, 5])
    items = np.array([0, 5, 11, 2, 4, 3, -1])
    got = neighbours.predict(model, users, items)
    want = [loop_predict(base, dense_e, rated, model.similarity.astype(np.float64), 4, u, i,
                         side) if u >= 0 and i >= 0 else base.fallback(np.array([u]),
                                                                        np.array([i]))[0]
            for u, i in zip(users, items)]
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_k_bounds_the_neighbours():
    train = random_matrix(1)
    base = baseline_lib.fit(train.csr, "bias", 3.0, 2.0)
    model = neighbours.fit(train, base, "items", k=1, shrink=0.0)
    users, items = np.array([2, 4]), np.array([1, 6])
    one = neighbours.predict(model, users, items)
    for q, (u, i) in enumerate(zip(users, items)):  # the single most similar rated item
        lo, hi = model.residuals.indptr[u], model.residuals.indptr[u + 1]
        rated, res = model.residuals.indices[lo:hi], model.residuals.data[lo:hi]
        j = np.argmax(model.similarity[i, rated])
        extra = res[j] if model.similarity[i, rated[j]] > 0 else 0.0
        assert one[q] == pytest.approx(base.fallback(np.array([u]), np.array([i]))[0] + extra)
    many = neighbours.predict(dataclasses.replace(model, k=100), users, items)
    assert not np.allclose(one, many)


def test_neighbours_learn_a_planted_taste_the_biases_cannot():
    """Two kinds of items; each user likes one kind: the biases see nothing of it."""
    rng = np.random.default_rng(3)
    n_users, n_items = 200, 40
    kind, taste = np.arange(n_items) % 2, rng.integers(0, 2, n_users)
    full = np.where(taste[:, None] == kind[None, :], 4.5, 1.5) + rng.normal(0, 0.3,
                                                                            (n_users, n_items))
    mask = rng.random((n_users, n_items)) < 0.3
    hold = mask & (rng.random((n_users, n_items)) < 0.2)
    u, i = np.nonzero(mask & ~hold)
    train = ratings.build_matrix(ratings.Triples(u, i, full[u, i].astype(np.float32)))
    vu, vi = np.nonzero(hold)
    base = baseline_lib.fit(train.csr, "bias", 5.0, 5.0)
    model, grid = neighbours.choose(train, base, "items", vu, vi, full[vu, vi])
    rmse_knn = min(grid.values())
    rmse_bias = np.sqrt(np.mean((np.clip(base.fallback(vu, vi), 1, 5) - full[vu, vi]) ** 2))
    assert rmse_knn < 0.5 * rmse_bias
    assert grid[f"k={model.k} shrink={model.shrink:g}"] == rmse_knn
    assert len(grid) == len(neighbours.K_GRID) * len(neighbours.SHRINK_GRID)


def test_fit_refuses_what_it_cannot_do(monkeypatch):
    train = random_matrix()
    base = baseline_lib.fit(train.csr, "bias", 3.0, 2.0)
    with pytest.raises(ValueError, match="side must be"):
        neighbours.fit(train, base, "movies", 4, 5.0)
    monkeypatch.setattr(neighbours, "MAX_NEIGHBOURS", 10)
    with pytest.raises(ValueError, match="30 users is more than MAX_NEIGHBOURS=10"):
        neighbours.fit(train, base, "users", 4, 5.0)
    by_items = ratings.build_matrix(train.to_triples(), major="items")
    with pytest.raises(ValueError, match="users as rows"):
        neighbours.fit(by_items, base, "items", 4, 5.0)
