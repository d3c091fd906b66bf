"""Which ops the steps of a run compute with: the package's one door to the CPU kernels.

``--train_path`` and the device count decide whether the sparse steps use the CPU kernels
(``deepae_jax.kernels.cpu_ops``: on the CPU platform only, chosen when the step is lowered) or
the XLA ops everywhere (``core.ops.XLA``); ``--matmul_precision`` sets the matmuls of training,
evaluation and inference alike. Nothing else in the package imports ``deepae_jax.kernels``.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable

import jax

from deepae_jax import kernels
from deepae_jax.config import Config
from deepae_jax.core import optim
from deepae_jax.core.ops import XLA, StepOps
from deepae_jax.evaluation import protocol

log = logging.getLogger("deepae_jax")


def resolve_train_path(requested: str, n_devices: int = 1) -> str:
    """``--train_path`` made explicit: ``auto`` is ``cpu_kernels`` where the kernels are built
    and the run is on one CPU device, else ``sparse``. Raises ValueError for ``cpu_kernels`` on
    several devices (the kernels are custom calls XLA cannot split across devices)."""
    if requested == "cpu_kernels" and n_devices > 1:
        raise ValueError(f"--train_path=cpu_kernels runs on one device, not {n_devices}; use "
                         "--train_path=sparse (or auto) for several devices")
    if requested != "auto":
        return requested
    on_cpu = jax.default_backend() == "cpu"
    return "cpu_kernels" if n_devices == 1 and on_cpu and kernels.available() else "sparse"


def train_ops(path: str, cfg: Config, updates_per_epoch: int) -> StepOps:
    """The training step's ops on the CPU platform for the resolved ``path``: the CPU kernels'
    (with the fused momentum updates when ``cfg``'s optimiser is plain SGD with momentum,
    ``optim.plain_momentum``) for ``cpu_kernels``, else the XLA ops."""
    if path != "cpu_kernels":
        return XLA
    plain = optim.plain_momentum(cfg.optimizer, cfg.lr, cfg.weight_decay, updates_per_epoch,
                                 l2_weights=cfg.l2_weights, schedule=cfg.lr_schedule,
                                 num_epochs=cfg.num_epochs)
    return kernels.cpu_ops(*(plain or ())) or XLA


def eval_ops(n_devices: int = 1) -> StepOps:
    """The evaluation's gather-sum on the CPU platform: the CPU kernels' on one device where
    they are built, else the XLA one."""
    return (kernels.cpu_ops() if n_devices == 1 else None) or XLA


def predict_fn(cfg: Config, par=None) -> Callable:
    """``protocol.predict_eval_ratings`` (all devices of ``par`` when given) with the run's
    evaluation ops and ``--matmul_precision``."""
    if par is not None:
        return functools.partial(par.predict_eval_ratings, precision=cfg.precision)
    return functools.partial(protocol.predict_eval_ratings, ops=eval_ops(),
                             precision=cfg.precision)


def evaluate_fn(cfg: Config, par=None) -> Callable:
    """``protocol.evaluate`` (all devices of ``par`` when given) with the run's evaluation ops
    and ``--matmul_precision``."""
    if par is not None:
        return functools.partial(par.evaluate, precision=cfg.precision)
    return functools.partial(protocol.evaluate, ops=eval_ops(), precision=cfg.precision)
