"""The update on the sparse batch with the item-sized gradients inside the optimiser's kernels.

Differentiating through zero offsets e1 (on x W1) and e2 (on the output at the observed items)
gives dL/d(x W1) and dL/d(output) there, from which the kernels sum the gradient rows of the
first and last layers themselves (``optim.SparseRows``): those (n, h) gradients are never stored.
Untied, the output layer is updated first, and its kernel also returns the output layer's input
gradient (it reads every old weight row anyway); the backward pass through the other layers then
starts from there. SGD with momentum (``optim.SGDMomentum``), float32 only.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from deepae_jax import model, sparse
from deepae_jax.kernels import ffi, ops
from deepae_jax.optim import SparseRows, Updated, apply_gradients, momentum_lr, momentum_trace


def fused_sparse_update(params: model.Params, opt_state: Any, slots: sparse.Slots,
                        rng: jax.Array, cfg: model.ModelConfig, optimizer, refeed: bool,
                        dot: Callable = model.matmul) -> tuple:
    """(params, opt_state, loss, re-feeding input or None) of one update on the sparse batch:
    the same numbers as the XLA path's update up to float rounding."""
    stop = jax.lax.stop_gradient
    cols, vals, rows = ops.flat(slots)
    active = slots.mask.reshape(-1)

    def hidden(p, e1):  # the output layer's input
        first = lambda w: ops.gather_sum(stop(w), slots) + e1  # noqa: E731
        return model.decode_hidden(p, model.encode(p, None, cfg, True, rng, first, dot), cfg, dot)

    def head(w_rows, b, h, e2):  # MMSE of the output at the observed items
        pre = ops.rowdot(w_rows, b, h, cols, rows, active) + e2
        return sparse.masked_mse(model.output_activation(cfg)(pre), vals)

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
            momentum_lr(optimizer, opt_state), optimizer.momentum,
            after=() if outputs is None else (outputs,))
        grads, g_first = backward(dh)
        grads["encoder"][0]["w"] = SparseRows(g_first, rows, cols, vals)
        grads["decoder"][-1] = {"w": Updated(w_new, trace_new), "b": g_b}
    # g_first is the backward pass's last result: after it (and after the re-feeding input),
    # every weight has been read
    after = (g_first,) if outputs is None else (g_first, outputs)
    params, opt_state = apply_gradients(optimizer, grads, opt_state, params, after=after,
                                        kernels=True)
    return params, opt_state, loss, outputs
