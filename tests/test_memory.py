"""The memory check before training allocates anything."""
from __future__ import annotations

import pytest

from deepae_jax.core import memory, model
from deepae_jax.core.optim import make_optimizer


def test_training_bytes_counts_params_gradients_and_optimizer_state():
    cfg = model.ModelConfig((10, 4))
    n = 10 * 4 + 4 + 4 * 10 + 10
    assert model.count_params(memory.param_shapes(cfg)) == n
    assert memory.training_bytes(cfg, make_optimizer("adam", 0.1)) >= 4 * 4 * n  # p, g, m, v
    assert model.count_params(memory.param_shapes(model.ModelConfig((10, 4), constrained=True))) == 10 * 4 + 4 + 10


def test_a_model_too_large_is_refused_with_the_memory_it_needs():
    cfg = model.ModelConfig((1000, 99999999999))
    with pytest.raises(ValueError, match=r"--hidden_layers=99999999999: the model has "
                       r"[\d,]+ parameters .* needs at least 2\.\d PiB"):
        memory.check_fits(cfg, make_optimizer("momentum", 0.1), "momentum")
    memory.check_fits(model.ModelConfig((10, 4)), make_optimizer("adam", 0.1), "adam")


def test_main_refuses_it_without_a_traceback(tmp_path, capsys):
    from deepae_jax.data.datasets import synthetic
    from test_cli import main_in_process
    spec = synthetic.SyntheticSpec(n_users=30, n_items=20, mean_ratings_per_user=5, seed=1)
    synthetic.ensure_dataset(str(tmp_path / "train"), "", spec)
    assert main_in_process(f"--path_to_train_data={tmp_path / 'train'}",
                           f"--logdir={tmp_path / 'logs'}", "--hidden_layers=99999999999",
                           "--noprogress", "--batch_size=8") == 2
    err = capsys.readouterr().err
    assert "error: --hidden_layers=99999999999" in err and "Traceback" not in err
