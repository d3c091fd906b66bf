"""CPU kernels of the sparse training step, reached through one function: :func:`cpu_ops`.

XLA:CPU lowers the row gathers and scatter-adds of the sparse first and last layers to
single-threaded element-by-element loops; these kernels (XLA FFI custom calls, ``csrc/``) do the
same sums row by row, vectorised, on XLA's intra-op thread pool, and fuse the momentum update
of the item-sized weight matrices with the gradient's scatter.

:func:`cpu_ops` returns them as a ``core.ops.StepOps`` (None where they are not built: the
build, :mod:`deepae_jax.kernels.ffi`, is cached under ``$DEEPAE_JAX_CACHE/kernels``, default
``~/.cache/deepae_jax``; off with ``DEEPAE_JAX_CPU_KERNELS=0``; one warning with the reason when
unavailable). A step or an evaluation given them uses them in the CPU branch of
``jax.lax.platform_dependent`` only, so the same function lowers to the XLA path on any other
platform.
"""
from __future__ import annotations

import functools

import optax

from deepae_jax.core.ops import StepOps
from deepae_jax.kernels import ops, update
from deepae_jax.kernels.ffi import ENV_SWITCH, available, build  # noqa: F401


def cpu_ops(schedule: optax.Schedule | None = None, momentum: float | None = None
            ) -> StepOps | None:
    """The CPU kernels' ops for a step, or None where the kernels are unavailable.

    Always the gather-sum and the output at the observed items (drop-in replacements of
    ``sparse.gather_sum`` and ``sparse.output_pre_at``: same arguments, same results up to float
    rounding). With ``schedule`` and ``momentum`` (the optimiser is exactly
    ``optax.sgd(schedule, momentum)``: ``core.optim.plain_momentum``), also the fused updates:
    the update on the sparse batch with the item-sized gradients summed inside the optimiser's
    kernels, and the momentum update in one pass per array."""
    if not available():
        return None
    if schedule is None or momentum is None:
        return _layer_ops()
    return StepOps(ops.gather_sum, ops.output_pre_at,
                   functools.partial(update.fused_sparse_update, schedule=schedule,
                                     momentum=float(momentum)),
                   functools.partial(update.apply_momentum, schedule, float(momentum)))


@functools.cache
def _layer_ops() -> StepOps:
    """The kernels' layers only (one value per process: a static argument compiles once)."""
    return StepOps(ops.gather_sum, ops.output_pre_at)
