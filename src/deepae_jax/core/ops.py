"""The sparse operations a training or evaluation step is built from, as one value.

:class:`StepOps` names the two n-wide layers on a sparse batch (the first layer's gather-sum,
the output layer at the observed items) and, optionally, fused updates that replace the
optimiser's. :data:`XLA` is the plain XLA formulation (``core.sparse``), the same on every
backend. Another set (the CPU kernels, ``deepae_jax.kernels.cpu_ops``) is used in the CPU branch
of ``jax.lax.platform_dependent`` only: chosen when the step is lowered, so one step function
runs on any platform.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax

from deepae_jax.core import sparse


class StepOps(NamedTuple):
    """What a step computes its sparse layers (and maybe its updates) with.

    * ``gather_sum(w, slots) -> (B, h)``: ``x @ w`` for the sparse rows (``sparse.gather_sum``);
    * ``output_pre_at(w_rows, b, h, slots) -> (G, T)``: the output layer's pre-activation at the
      observed items (``sparse.output_pre_at``);
    * ``sparse_update(params, opt_state, slots, rng, cfg, refeed, dot) -> (params, opt_state,
      loss, re-feeding input or None)``: the whole update on the sparse batch, or None;
    * ``momentum_update(grads, opt_state, params, after) -> (params, opt_state)``: the
      optimiser's update (SGD with momentum, optax.sgd's state), or None for ``optimizer.update``.
      ``after``: arrays each in-place update waits for.
    """

    gather_sum: Callable = sparse.gather_sum
    output_pre_at: Callable = sparse.output_pre_at
    sparse_update: Callable | None = None
    momentum_update: Callable | None = None

    @property
    def is_xla(self) -> bool:
        """True for the plain XLA ops (no platform choice needed)."""
        return self == XLA


XLA = StepOps()


def gather_sum_on_platform(ops: StepOps, w: jax.Array, slots: sparse.Slots) -> jax.Array:
    """``ops.gather_sum(w, slots)`` when lowered for the CPU platform, ``sparse.gather_sum``
    elsewhere (the same numbers up to float rounding)."""
    if ops.gather_sum is sparse.gather_sum:
        return sparse.gather_sum(w, slots)

    def branch(fn):
        return lambda w, c, v, r: fn(w, sparse.Slots(c, v, r, slots.rows_per_group))
    return jax.lax.platform_dependent(w, slots.cols, slots.vals, slots.rows,
                                      cpu=branch(ops.gather_sum),
                                      default=branch(sparse.gather_sum))
