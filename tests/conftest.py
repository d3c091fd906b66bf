"""Shared test fixtures: the real data sets beside the repository (skipped when absent)."""
from __future__ import annotations

import os
import pathlib

import pytest

from deepae_jax.data.datasets import synthetic

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("DEEPAE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> pathlib.Path:
    """``../shared/data`` (MovieLens-100K, Netflix samples); skips the test when it is absent."""
    if not (SHARED_DATA / "movielens-100k" / "u.data").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (it lies beside the repository only "
                    "in the project's workspace and CI; set DEEPAE_SHARED_DATA to point to it)")
    return SHARED_DATA


TINY_SPEC = synthetic.SyntheticSpec(n_users=120, n_items=40, mean_ratings_per_user=12, seed=5)
"""The synthetic ratings of :func:`tiny_model`."""


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """(root, Config) of a tiny model trained once per test session on TINY_SPEC (tied decoder,
    linear last layer: the variants recommend, export and serve must handle)."""
    from deepae_jax.training import trainer
    from deepae_jax.config import Config
    root = tmp_path_factory.mktemp("deepae_tiny_model")
    cfg = Config(path_to_train_data=str(root / "train"), logdir=str(root / "run"),
                 hidden_layers=(12, 6), non_linearity_type="elu", constrained=True,
                 skip_last_layer_nl=True, optimizer="adam", lr=0.01, batch_size=16,
                 num_epochs=1, progress=False, seed=1)
    synthetic.ensure_dataset(cfg.path_to_train_data, "", TINY_SPEC)
    trainer.train_and_evaluate(cfg)
    return root, cfg
