"""Batched evaluation equals the reference's one-row-at-a-time protocol."""
from __future__ import annotations

import jax
import numpy as np
import pytest
import scipy.sparse as sp

from deepae_jax.core import model
from deepae_jax.evaluation.protocol import evaluate, predict_eval_ratings


def random_split(seed=0, rows=23, cols=17):
    rng = np.random.default_rng(seed)
    train = sp.random(rows, cols, density=0.3, random_state=seed, format="csr",
                      data_rvs=lambda k: rng.integers(1, 6, k)).astype(np.float32)
    held = sp.random(rows, cols, density=0.15, random_state=seed + 1, format="csr",
                     data_rvs=lambda k: rng.integers(1, 6, k)).astype(np.float32)
    held = held - held.multiply(train != 0)  # evaluation ratings are of unrated items
    held.eliminate_zeros()
    return train.tocsr(), held.tocsr()


def one_row_at_a_time(params, cfg, train, held):
    """The reference's do_eval: per row, dense input = training row, target = eval row."""
    sse, count = 0.0, 0
    for r in range(train.shape[0]):
        target = held[r].toarray()
        if not target.any():
            continue
        out = np.asarray(model.apply(params, train[r].toarray(), cfg, train=False))
        mask = target != 0
        sse += float(np.sum(((out - target) * mask).astype(np.float64) ** 2))
        count += int(mask.sum())
    return np.sqrt(sse / count), count


@pytest.mark.parametrize("batch_size", [1, 4, 256])
@pytest.mark.parametrize("constrained", [False, True])
def test_batched_equals_one_row_at_a_time(batch_size, constrained):
    train, held = random_split()
    cfg = model.ModelConfig((17, 6, 3), "selu", drop_prob=0.8, constrained=constrained)
    params = model.init(jax.random.PRNGKey(3), cfg.layer_sizes, constrained)
    expected, count = one_row_at_a_time(params, cfg, train, held)
    got = evaluate(params, cfg, train, held, batch_size=batch_size)
    assert got.count == count
    np.testing.assert_allclose(got.rmse, expected, rtol=1e-6)


def test_predictions_cover_every_eval_rating_once():
    train, held = random_split(seed=5)
    cfg = model.ModelConfig((17, 4), "elu")
    params = model.init(jax.random.PRNGKey(0), cfg.layer_sizes)
    parts = list(predict_eval_ratings(params, cfg, train, held, batch_size=5))
    rows = np.concatenate([p[0] for p in parts])
    cols = np.concatenate([p[1] for p in parts])
    actual = np.concatenate([p[3] for p in parts])
    coo = held.tocoo()
    assert sorted(zip(rows.tolist(), cols.tolist(), actual.tolist())) == sorted(
        zip(coo.row.tolist(), coo.col.tolist(), coo.data.tolist()))
    dense = np.asarray(model.apply(params, train.toarray(), cfg))
    pred = np.concatenate([p[2] for p in parts])
    np.testing.assert_allclose(pred, dense[rows, cols], rtol=1e-5, atol=1e-6)
