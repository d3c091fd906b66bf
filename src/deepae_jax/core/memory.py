"""Will the model fit? Training memory from the parameter and optimiser-state shapes, checked
before anything is allocated (a model too large for the device ends in a clear message, not in
an allocator's RESOURCE_EXHAUSTED traceback)."""
from __future__ import annotations

import os

import jax
import numpy as np
import optax

from deepae_jax.core import model


def tree_bytes(tree) -> int:
    """Bytes of the arrays (or shape structs) of a pytree."""
    return int(sum(int(np.prod(x.shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize
                   for x in jax.tree_util.tree_leaves(tree)))


def param_shapes(model_cfg: model.ModelConfig):
    """The autoencoder's parameters as shape structs (nothing allocated); their number is
    ``model.count_params(param_shapes(cfg))``."""
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), model_cfg.layer_sizes,
                                             model_cfg.constrained))


def training_bytes(model_cfg: model.ModelConfig, optimizer: optax.GradientTransformation
                   ) -> int:
    """Device memory training needs at least: parameters, their gradients and the optimiser
    state (activations, which are much smaller for these models, not counted)."""
    shapes = param_shapes(model_cfg)
    return 2 * tree_bytes(shapes) + tree_bytes(jax.eval_shape(optimizer.init, shapes))


def device_bytes(device=None) -> int:
    """Memory of ``device`` (default: the first): its allocator limit where JAX reports one
    (GPUs), else the host's physical memory."""
    device = device or jax.local_devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001 (not every backend implements it)
        stats = {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def human_bytes(n: float) -> str:
    """``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PiB"


def check_fits(model_cfg: model.ModelConfig, optimizer: optax.GradientTransformation,
               optimizer_name: str, available: int | None = None) -> None:
    """Raises ValueError naming --hidden_layers and the memory needed when training the model
    cannot fit in ``available`` bytes (default: :func:`device_bytes`)."""
    need = training_bytes(model_cfg, optimizer)
    available = device_bytes() if available is None else available
    if need > available:
        hidden = ",".join(map(str, model_cfg.layer_sizes[1:]))
        raise ValueError(
            f"--hidden_layers={hidden}: the model has {model.count_params(param_shapes(model_cfg)):,} parameters and "
            f"training it needs at least {human_bytes(need)} (parameters, gradients and "
            f"--optimizer={optimizer_name} state, float32), more than the "
            f"{human_bytes(available)} of the device; choose smaller layers")
