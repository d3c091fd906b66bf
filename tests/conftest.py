"""Shared test fixtures: the real data sets beside the repository (skipped when absent)."""
from __future__ import annotations

import os
import pathlib

import jax
import pytest

from deepae_jax.data.datasets import synthetic

TEST_PRECISION = os.environ.get("DEEPAE_TEST_MATMUL_PRECISION", "highest")
"""jax's default matmul precision in the tests (``jax_default_matmul_precision``): strict float32
unless asked otherwise, so that the tests' own matmuls (the independent computations the library
is compared with) are float32 on every backend; jax's default on NVIDIA GPUs is TF32."""
jax.config.update("jax_default_matmul_precision", TEST_PRECISION)

_RTOL = {"float32": 1e-5, "highest": 1e-5, "tf32": 3e-3, "tensorfloat32": 3e-3, "high": 3e-3,
         "bfloat16": 3e-2}


def matmul_rtol(precision: str | None = None) -> float:
    """The relative tolerance of a float32 result computed at a matmul ``precision`` (one of
    ``model.PRECISIONS`` or jax's names; default: the tests' own, :data:`TEST_PRECISION`):
    1e-5 at float32, 3e-3 at TF32 (10-bit mantissa), 3e-2 at bfloat16 (7-bit). jax's
    ``default`` is TF32 on GPUs and float32 on the CPU."""
    precision = (precision or TEST_PRECISION).lower()
    if precision in ("default", "fastest"):
        precision = "tf32" if jax.default_backend() == "gpu" else "float32"
    return _RTOL[precision]

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


SMALL_SPEC = synthetic.SyntheticSpec(n_users=120, n_items=40, mean_ratings_per_user=15, seed=5)
"""The synthetic ratings of :func:`bias_run_config`."""


def bias_run_config(tmp_path, **settings):
    """The Config of a small run learning residuals of the bias baseline on SMALL_SPEC's TRAIN
    and VALID (written under ``tmp_path/data``; VALID is also the test data), logdir
    ``tmp_path/run``; ``settings`` replace or add to the defaults below."""
    from deepae_jax.config import Config
    root = tmp_path / "data"
    synthetic.ensure_dataset(str(root / "train"), str(root / "valid"), SMALL_SPEC)
    values = dict(path_to_train_data=str(root / "train"), path_to_eval_data=str(root / "valid"),
                  path_to_test_data=str(root / "valid"), logdir=str(tmp_path / "run"),
                  optimizer="adam", batch_size=8, seed=1, progress=False, baseline="bias",
                  unknown="baseline", save_every=100)
    return Config(**{**values, **settings})


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
