"""Recommending with a model that learned residuals of a baseline (--baseline=bias): scores are
ratings again (the baseline added back), the same as the trainer's own predictions."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from deepae_jax import baseline as baseline_lib
from deepae_jax import inference
from deepae_jax.core import model
from deepae_jax.training import trainer
from deepae_jax.config import Config
from deepae_jax.data import ratings
from deepae_jax.data.datasets import synthetic
from deepae_jax.recommend import Recommender

SPEC = synthetic.SyntheticSpec(n_users=90, n_items=30, mean_ratings_per_user=10, seed=8)


@pytest.fixture(scope="module", params=["users", "items"])
def trained(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"baseline_{request.param}")
    cfg = Config(path_to_train_data=str(root / "train"), path_to_eval_data=str(root / "valid"),
                 logdir=str(root / "run"), hidden_layers=(8,), non_linearity_type="sigmoid",
                 skip_last_layer_nl=True, optimizer="adam", lr=0.01, batch_size=8,
                 num_epochs=2, progress=False, seed=3, major=request.param, baseline="bias",
                 baseline_input="shifted", unknown="baseline")
    synthetic.ensure_dataset(cfg.path_to_train_data, cfg.path_to_eval_data, SPEC)
    trainer.train_and_evaluate(cfg)
    return cfg


def test_user_scores_are_the_trainers_predictions(trained):
    """Recommender.user_scores at (user, item) = inference.predict_ratings (predict.py: the
    evaluation path with baseline.add_back), an independent route to the same numbers."""
    targets, pred = inference.predict_ratings(dataclasses.replace(trained, mode="evaluate"))
    rec = Recommender.from_logdir(trained.logdir, batch_size=16)
    assert rec.base is not None and rec.base.kind == "bias"
    t = targets.triples
    known = np.isin(t.users, rec.user_ids) & np.isin(t.items, rec.item_ids)
    users, items, expected = t.users[known], t.items[known], pred[known]
    scores = rec.user_scores(users)
    got = scores[np.arange(len(users)), rec.item_columns(items)]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    assert np.all((expected > 0.0) & (expected < 6.5))  # ratings, not residuals


def test_new_user_vector_adds_the_baseline_back(trained):
    if trained.major != "users":
        pytest.skip("item-based models score only their training users")
    rec = Recommender.from_logdir(trained.logdir, batch_size=4)
    b = rec.base
    items = rec.item_ids[[0, 3, 5]]
    x = rec.vector(items, [5.0, 1.0, 4.0])
    cols = rec.item_columns(items)
    x_in = np.zeros_like(x)
    x_in[0, cols] = (x[0, cols] - b.mu - b.col_bias[cols]) / b.scale + b.input_shift
    by_hand = b.mu + b.col_bias + b.scale * np.asarray(
        model.apply(rec.params, x_in, rec.model_cfg))[0]
    np.testing.assert_allclose(rec.predict_dense(x)[0], by_hand, rtol=1e-5, atol=1e-5)
    top = rec.recommend_vector(x, 3)
    unrated = np.setdiff1d(np.arange(rec.n_items), cols)
    best = unrated[np.argsort(-by_hand[unrated], kind="stable")[:3]]
    assert [i for i, _ in top] == list(rec.item_ids[best])


def test_model_input_matches_its_dense_form():
    csr = ratings.build_matrix(synthetic.generate(SPEC)[0]).csr
    b = baseline_lib.fit(csr, "bias", 5.0, 5.0, shifted_input=True)
    sparse = baseline_lib.model_input(b, csr).toarray()
    dense = baseline_lib.encode_dense(b, csr.toarray(), np.arange(csr.shape[0]))
    np.testing.assert_allclose(sparse, dense, rtol=1e-6, atol=1e-6)
