"""The update on the sparse batch with the item-sized gradients inside the optimiser's kernels.

Differentiating through zero offsets e1 (on x W1) and e2 (on the output at the observed items)
gives dL/d(x W1) and dL/d(output) there, from which the kernels sum the gradient rows of the
first and last layers themselves (``optim.SparseRows``): those (n, h) gradients are never stored.
Untied, the output layer is updated first, and its kernel also returns the output layer's input
gradient (it reads every old weight row anyway); the backward pass through the other layers then
starts from there. SGD with momentum (``optax.sgd(schedule, momentum)``'s update and state),
float32 only.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from deepae_jax.core import losses, model, sparse
from deepae_jax.kernels import ffi, ops

FUSED_MIN_SIZE = 1 << 22  # arrays this large use the kernel (smaller: XLA fuses them well)
_increment = getattr(optax, "safe_increment", None) or optax.safe_int32_increment


@dataclasses.dataclass(frozen=True)
class SparseRows:
    """A gradient given as a scatter: g[key[t]] += scale[t] * src[idx[t]] over slots t, zero
    elsewhere (e.g. the sparse first layer's: src = dL/d(x W1) (B, h), idx = batch row,
    key = item, scale = rating). :func:`apply_momentum` takes it in place of a dense leaf."""

    src: jax.Array  # (R, h)
    idx: jax.Array  # (T,) int32 rows of src
    key: jax.Array  # (T,) int32 rows of the gradient
    scale: jax.Array  # (T,) float32

    def dense(self, shape) -> jax.Array:
        rows = self.src[self.idx] * self.scale[:, None]
        return jnp.zeros(shape, self.src.dtype).at[self.key].add(rows)

    @staticmethod
    def concat(*parts: "SparseRows") -> "SparseRows":
        """One scatter holding every part's slots (their sum)."""
        offsets = [0]
        for part in parts[:-1]:
            offsets.append(offsets[-1] + part.src.shape[0])
        return SparseRows(jnp.concatenate([p.src for p in parts]),
                          jnp.concatenate([p.idx + o for p, o in zip(parts, offsets)]),
                          jnp.concatenate([p.key for p in parts]),
                          jnp.concatenate([p.scale for p in parts]))


@dataclasses.dataclass(frozen=True)
class Updated:
    """A gradient leaf saying that the caller has already updated this parameter (e.g. in a
    kernel that also computes something else): :func:`apply_momentum` takes the new value and
    momentum trace as they are."""

    param: jax.Array
    trace: jax.Array


def momentum_lr(schedule: optax.Schedule, opt_state) -> jax.Array:
    """The learning rate of the next update (float32): the schedule at optax's update count."""
    return jnp.asarray(schedule(optax.tree_utils.tree_get(opt_state, "count")), jnp.float32)


def momentum_trace(opt_state):
    """The momentum traces (a pytree like the parameters) of optax.sgd's state."""
    return optax.tree_utils.tree_get(opt_state, "trace")


def apply_momentum(schedule: optax.Schedule, momentum: float, grads, opt_state, params,
                   after: Sequence[jax.Array] = ()):
    """``optax.sgd(schedule, momentum)``'s update (trace = g + m * trace; p = p - lr * trace)
    on its state ``opt_state``, in one pass per array,
    large float32 arrays by the multi-threaded kernel; a gradient leaf may be a
    :class:`SparseRows` (summed inside the update, never stored densely) or :class:`Updated`.

    ``after``: arrays every weight matrix's in-place update waits for, such as the backward
    pass's last gradient. XLA cannot always tell that the backward pass has read a weight before
    its update; it then copies the weight first (measured: ~15% of a sparse training step).
    """
    lr, mu = momentum_lr(schedule, opt_state), momentum

    def leaf(p, t, g):
        if isinstance(g, Updated):
            return g.param, g.trace
        if isinstance(g, SparseRows):
            if p.dtype == jnp.float32 and p.ndim == 2:
                return ffi.sparse_momentum(p, t, g.src, g.idx, g.key, g.scale, lr, mu, after)
            g = g.dense(p.shape)
        if p.dtype == jnp.float32 and (p.size >= FUSED_MIN_SIZE or (after and p.ndim == 2)):
            return ffi.momentum(p, t, g, lr, mu, after)
        t = g + mu * t
        return p + (-lr).astype(p.dtype) * t, t
    pairs = jax.tree.map(leaf, params, momentum_trace(opt_state), grads)
    is_pair = lambda x: isinstance(x, tuple)  # noqa: E731
    new_params = jax.tree.map(lambda x: x[0], pairs, is_leaf=is_pair)
    new_trace = jax.tree.map(lambda x: x[1], pairs, is_leaf=is_pair)
    count = optax.tree_utils.tree_get(opt_state, "count")
    return new_params, optax.tree_utils.tree_set(opt_state, trace=new_trace,
                                                 count=_increment(count))


def fused_sparse_update(params: model.Params, opt_state: Any, slots: sparse.Slots,
                        rng: jax.Array, cfg: model.ModelConfig, refeed: bool,
                        dot: Callable = model.matmul, *, schedule: optax.Schedule,
                        momentum: float) -> tuple:
    """(params, opt_state, loss, re-feeding input or None) of one update on the sparse batch
    with ``optax.sgd(schedule, momentum)``: the same numbers as the XLA path's update up to
    float rounding."""
    stop = jax.lax.stop_gradient
    cols, vals, rows = ops.flat(slots)
    active = slots.mask.reshape(-1)

    def hidden(p, e1):  # the output layer's input
        first = lambda w: ops.gather_sum(stop(w), slots) + e1  # noqa: E731
        return model.decode_hidden(p, model.encode(p, None, cfg, True, rng, first, dot), cfg, dot)

    def head(w_rows, b, h, e2):  # MMSE of the output at the observed items
        pre = ops.rowdot(w_rows, b, h, cols, rows, active) + e2
        return losses.mmse(model.output_activation(cfg)(pre), vals)

    def refeed_input(h):
        return model.dense_output(stop(params), h, cfg, dot) if refeed else None

    e1 = jnp.zeros((slots.n_rows, params["encoder"][0]["w"].shape[1]), jnp.float32)
    e2 = jnp.zeros(cols.shape, jnp.float32)
    if "w" not in params["decoder"][-1]:  # tied: W1 is the output layer's weight too
        def loss_fn(p, e1, e2):
            h = hidden(p, e1)
            return head(stop(sparse.decoder_out_layer(p)[0]), p["decoder"][-1]["b"], h, e2), h
        (loss, h), (grads, g_first, g_out) = jax.value_and_grad(
            loss_fn, argnums=(0, 1, 2), has_aux=True)(params, e1, e2)
        outputs = refeed_input(stop(h))
        grads["encoder"][0]["w"] = SparseRows.concat(SparseRows(g_first, rows, cols, vals),
                                                     SparseRows(stop(h), rows, cols, g_out))
    else:
        w_rows, b_out = sparse.decoder_out_layer(params)
        h, backward = jax.vjp(hidden, params, e1)
        loss, (g_b, g_out) = jax.value_and_grad(head, argnums=(1, 3))(stop(w_rows), b_out, h, e2)
        outputs = refeed_input(h)
        # the output layer's update waits for the re-feeding input, which reads its weight
        w_new, trace_new, dh = ffi.sparse_momentum_grad(
            w_rows, momentum_trace(opt_state)["decoder"][-1]["w"], h, rows, cols, g_out,
            momentum_lr(schedule, opt_state), momentum,
            after=() if outputs is None else (outputs,))
        grads, g_first = backward(dh)
        grads["encoder"][0]["w"] = SparseRows(g_first, rows, cols, vals)
        grads["decoder"][-1] = {"w": Updated(w_new, trace_new), "b": g_b}
    # g_first is the backward pass's last result: after it (and after the re-feeding input),
    # every weight has been read
    after = (g_first,) if outputs is None else (g_first, outputs)
    params, opt_state = apply_momentum(schedule, momentum, grads, opt_state, params, after)
    return params, opt_state, loss, outputs
