"""Ranking metric definitions (deepae_jax.evaluation.ranking): hand-worked examples and plain Python."""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from deepae_jax.evaluation import ranking
from deepae_jax.config import Config, ConfigError


def run(scores, rated, relevant, ks, weight=None):
    scores = jnp.asarray(scores, jnp.float32)
    weight = jnp.ones(scores.shape[0]) if weight is None else jnp.asarray(weight, jnp.float32)
    sums, shown = ranking.batch_sums(scores, jnp.asarray(rated), jnp.asarray(relevant), weight,
                                     tuple(ks))
    return {k: float(v) for k, v in sums.items()}, np.asarray(shown)


def test_hand_worked_example():
    # items 0..5; item 0 rated in training, so the top 3 of the rest are items 1, 2, 3;
    # relevant held-out items {2, 4, 5}: hits at ranks [0, 1, 0]
    sums, shown = run([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]], [[1, 0, 0, 0, 0, 0]],
                      [[0, 0, 1, 0, 1, 1]], (1, 3))
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # min(K=3, R=3) ideal ranks
    expected = {"precision@3": 1 / 3, "recall@3": 1 / 3, "hit@3": 1.0,
                "ndcg@3": (1 / math.log2(3)) / idcg,
                "map@3": (1 / 2) / 3,  # one hit, at rank 2: precision@2 = 1/2; / min(3, 3)
                "precision@1": 0.0, "recall@1": 0.0, "hit@1": 0.0, "ndcg@1": 0.0, "map@1": 0.0}
    assert sums == pytest.approx(expected, abs=1e-6)
    assert shown[0].tolist() == [False, True, False, False, False, False]
    assert shown[1].tolist() == [False, True, True, True, False, False]


def test_hand_worked_few_relevant_and_few_candidates():
    # user 1: one relevant item at rank 1: perfect ndcg and map although K = 2 > R = 1;
    # user 2: items 0, 1 rated, so its top 2 are items 2, 3, no hit;
    # row 3 is padding (weight 0): its top item 4 must count nowhere, not even in coverage
    scores = [[5, 4, 3, 2, 1], [5, 4, 3, 2, 1], [0, 0, 0, 1, 9]]
    rated = [[0, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]]
    relevant = [[1, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 1]]
    sums, shown = run(scores, rated, relevant, (2,), weight=[1, 1, 0])
    assert sums["ndcg@2"] == pytest.approx(1.0) and sums["map@2"] == pytest.approx(1.0)
    assert sums["precision@2"] == pytest.approx(0.5) and sums["recall@2"] == 1.0
    assert sums["hit@2"] == 1.0
    assert shown[0].tolist() == [True, True, True, True, False]
    # 5 candidates at most: K = 7 keeps precision's denominator 7 and finds the same hit
    sums, _ = run(scores, rated, relevant, (7,), weight=[1, 0, 0])
    assert sums["precision@7"] == pytest.approx(1 / 7) and sums["ndcg@7"] == pytest.approx(1.0)


def plain_metrics(scores, rated, relevant, k):
    """Independent per-user computation from a sorted Python list."""
    out = {m: [] for m in ranking.PER_USER}
    shown = set()
    for s, r, rel in zip(scores, rated, relevant):
        cand = sorted((i for i in range(len(s)) if not r[i]), key=lambda i: (-s[i], i))[:k]
        shown.update(cand)
        relevant_items = {i for i in range(len(s)) if rel[i]}
        hits = [1 if i in relevant_items else 0 for i in cand]
        n_rel = len(relevant_items)
        dcg = sum(h / math.log2(rank + 2) for rank, h in enumerate(hits))
        idcg = sum(1 / math.log2(rank + 2) for rank in range(min(k, n_rel)))
        ap = sum(sum(hits[:rank + 1]) / (rank + 1) for rank, h in enumerate(hits) if h)
        out["precision"].append(sum(hits) / k)
        out["recall"].append(sum(hits) / n_rel)
        out["hit"].append(float(any(hits)))
        out["ndcg"].append(dcg / idcg)
        out["map"].append(ap / min(k, n_rel))
    return {m: sum(v) for m, v in out.items()}, shown


@pytest.mark.parametrize("seed", [0, 1])
def test_random_data_matches_plain_python(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items = 37, 50
    scores = rng.normal(size=(n_users, n_items)).astype(np.float32)
    rated = rng.random((n_users, n_items)) < 0.3
    relevant = (rng.random((n_users, n_items)) < 0.15) & ~rated
    relevant[np.arange(n_users), rng.integers(0, n_items, n_users)] = True  # R >= 1 for all
    ks = (1, 5, 10, 60)  # 60 > candidates of every user
    sums, shown = run(scores, rated, relevant, ks)
    for j, k in enumerate(ks):
        expected, items = plain_metrics(scores.tolist(), rated.tolist(), relevant.tolist(), k)
        for m in ranking.PER_USER:
            assert sums[f"{m}@{k}"] == pytest.approx(expected[m], rel=1e-5), (m, k)
        assert set(np.flatnonzero(shown[j])) == items


def test_finish_averages_and_coverage():
    sums = {"ndcg@2": 1.5, "hit@2": 2.0}
    shown = np.array([[True, False, True, False]])
    out = ranking.finish(sums, shown, 3, (2,), ("rmse", "ndcg@2", "coverage@2", "hit@2"))
    assert out == {"ndcg@2": 0.5, "coverage@2": 0.5, "hit@2": pytest.approx(2 / 3)}


def test_parse_metrics():
    assert ranking.parse_metrics(" rmse, NDCG@10,recall@20,ndcg@10,") == (
        "rmse", "ndcg@10", "recall@20")
    assert ranking.ranking_ks(("rmse", "ndcg@10", "map@5", "hit@10")) == (5, 10)
    for bad in ("ndcg", "ndcg@0", "auc@5", "rmse@3", "precision@x"):
        with pytest.raises(ValueError, match="NAME@K"):
            ranking.parse_metrics(bad)
    with pytest.raises(ConfigError, match=r"--metrics='mae,ndgc@10'.*'ndgc@10'"):
        Config(mode="recommend", metrics="mae,ndgc@10")
