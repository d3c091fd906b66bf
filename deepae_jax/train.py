"""Training: the jit-compiled step with dense re-feeding, and the epoch loop.

One iteration on a sparse mini-batch x (PAPER.md, "Training step with dense re-feeding"):
  1. y = f(x) with dropout; loss = MMSE(y, x); gradient; optimiser update.
  2. ``aug_step`` times: the previous output y (no gradient through it) is the target and, after
     optional dropout noise with probability ``noise_prob``, the input: y' = f(y) with the
     parameters updated so far; loss = MMSE(y', y); a separate optimiser update; y <- y'.
The first re-fed y is the output computed BEFORE step 1's update, as in the reference.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable, Iterable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from deepae_jax import cpu_kernels, model, sparse
from deepae_jax.losses import mmse_sums
from deepae_jax.optim import (SGDMomentum, SparseRows, Updated, apply_gradients, momentum_lr,
                              momentum_trace)


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training: iteration count, parameters, optimiser state,
    and the base rng (the dropout rng of iteration t is ``fold_in(rng, t)``)."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def create_train_state(rng: jax.Array, model_cfg: model.ModelConfig,
                       optimizer: optax.GradientTransformation) -> TrainState:
    """Fresh parameters (Xavier uniform, zero biases) and optimiser state."""
    init_rng, dropout_rng = jax.random.split(rng)
    params = model.init(init_rng, model_cfg.layer_sizes, model_cfg.constrained)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params), rng=dropout_rng)


def make_train_step(model_cfg: model.ModelConfig, optimizer: optax.GradientTransformation,
                    aug_step: int = 0, noise_prob: float = 0.0,
                    axis_name: str | None = None, *, sparse_input: bool = False,
                    dtype: str = "float32", sparse_output: bool | None = None,
                    noisy_target: bool = False, input_drop_prob: float = 0.0,
                    input_shift: float = 0.0) -> Callable[[TrainState, Any], tuple]:
    """Builds ``train_step(state, x) -> (state, metrics)`` (not yet jitted).

    ``x`` is a dense (batch, n) float32 rating batch, or with ``sparse_input`` a sparse batch
    pytree (``deepae_jax.sparse``: padded ``{"cols", "vals"}`` (B, L) or packed ``{"cols", "vals",
    "rows"}`` (B, K)). The sparse fast path computes the same loss and gradients (up to float
    rounding): the first layer is a gather-sum over the observed items; with ``sparse_output``
    the update on the sparse batch also evaluates the output layer and its gradient only at the
    observed items (default: on where ``cpu_kernels`` run, where it measured faster; plain XLA:CPU
    was faster with the dense output matmul). Dropout draws the same mask (same rng, same
    code-layer shape) in both paths. On the CPU with the kernels, the sparse path with
    ``optim.SGDMomentum`` hands the first and last layers' gradients to the optimiser as
    ``optim.SparseRows`` (summed inside the update; see ``fused_sparse_update``).

    ``noise_prob`` drops entries of the re-fed input; the re-feeding target stays the clean
    output (PAPER.md). ``noisy_target=True`` uses the noised input as the target too, as the
    published DeepRecommender run.py does.

    ``metrics`` holds ``loss`` (MMSE of the update on the sparse batch) and ``refeed_loss`` (MMSE
    of each re-feeding update, (aug_step,)).

    With ``axis_name`` (inside pmap), each device holds a slice of the global batch: squared
    errors and counts are summed across devices so that the loss and gradient are exactly those
    of the global batch.

    ``input_drop_prob`` (beyond the paper; denoising, as in AutoRec-style models): inverted
    dropout on the INPUT ratings of the update on the sparse batch (the targets stay complete),
    drawn from ``fold_in(rng, 1)`` of the iteration, in training only; 0 leaves the paper's
    step (and its random numbers) unchanged. It runs on the plain (unfused) sparse path.
    ``input_shift`` (beyond the paper, with a baseline): added to every observed INPUT value
    (not the targets; see ``baseline.Baseline.input_shift``), also on the plain path.

    ``dtype="bfloat16"`` runs the matmuls with bfloat16 operands and float32 accumulation
    (parameters, optimiser state and loss stay float32); ``"float32"`` (default) is exact.
    """
    if aug_step < 0:
        raise ValueError(f"aug_step must be >= 0, got {aug_step}")
    dot = sparse.make_dot(dtype)
    if sparse_output is None:  # measured on XLA:CPU: faster with the CPU kernels, slower without
        sparse_output = cpu_kernels.enabled()

    def forward(params, inputs, rng):
        if dtype == "float32":
            return model.apply(params, inputs, model_cfg, train=True, rng=rng)
        return sparse.apply_dense(params, inputs, model_cfg, dot, train=True, rng=rng)

    def finish(sse, count):
        if axis_name is not None:
            count = jax.lax.psum(count, axis_name)
        return sse / jnp.maximum(count, 1.0)

    def input_key(rng):
        return jax.random.fold_in(rng, 1)

    def loss_fn(params, inputs, targets, rng, drop_input=False):
        if drop_input and input_shift:
            inputs = jnp.where(inputs != 0, inputs + input_shift, 0.0)
        if drop_input and input_drop_prob > 0:
            inputs = model.dropout(inputs, input_drop_prob, input_key(rng))
        outputs = forward(params, inputs, rng)
        sse, count = mmse_sums(outputs, targets)
        return finish(sse, count), outputs

    def slots_loss(pred, slots):
        """MMSE of the predictions at the batch's slots (padding slots masked out)."""
        err = jnp.where(slots.mask, pred - slots.vals, 0.0)
        return finish(jnp.sum(err * err), jnp.sum(slots.mask.astype(jnp.float32)))

    def sparse_loss_fn(params, batch, rng):
        slots = sparse.Slots.from_batch(batch)
        in_slots = slots
        if input_shift:
            in_slots = dataclasses.replace(
                slots, vals=jnp.where(slots.mask, slots.vals + input_shift, 0.0))
        if input_drop_prob > 0:
            keep = jax.random.bernoulli(input_key(rng), 1.0 - input_drop_prob, slots.vals.shape)
            in_slots = dataclasses.replace(
                in_slots, vals=jnp.where(keep, in_slots.vals / (1.0 - input_drop_prob), 0.0))
        h = sparse.hidden_sparse(params, in_slots, model_cfg, dot, train=True, rng=rng)
        if sparse_output:
            pred = sparse.output_at(params, h, slots, model_cfg)
            dense = None
        else:
            dense = sparse.dense_output(params, h, model_cfg, dot)
            pred = dense[slots.rows, slots.cols]
        loss = slots_loss(pred, slots)
        outputs = None
        if aug_step > 0:  # the re-feeding input: the dense output, no gradient through it
            outputs = jax.lax.stop_gradient(dense) if dense is not None else (
                sparse.dense_output(jax.lax.stop_gradient(params), jax.lax.stop_gradient(h),
                                    model_cfg, dot))
        return loss, outputs

    def update(params, opt_state, inputs, targets, rng, loss=loss_fn):
        (loss, outputs), grads = jax.value_and_grad(loss, has_aux=True)(
            params, inputs, targets, rng)
        if axis_name is not None:
            grads = jax.lax.psum(grads, axis_name)
            loss = jax.lax.psum(loss, axis_name)
        # the first layer's weight gradient comes last: every weight has been read by then
        params, opt_state = apply_gradients(optimizer, grads, opt_state, params,
                                            after=(grads["encoder"][0]["w"],), value=loss)
        return params, opt_state, loss, outputs

    def fused_sparse_update(params, opt_state, batch, rng):
        """The update on the sparse batch with the item-sized gradients (first layer, output
        layer) summed inside the optimiser's kernels: differentiating through zero offsets e1
        (on x W1) and e2 (on the output at the observed items) gives dL/d(x W1) and
        dL/d(output) there, from which the kernels sum the gradient rows themselves
        (:class:`SparseRows`). Untied, the output layer is updated first, and its kernel also
        returns the output layer's input gradient (it reads every old weight row anyway); the
        backward pass through the other layers then starts from there."""
        slots = sparse.Slots.from_batch(batch)
        stop = jax.lax.stop_gradient

        def hidden(p, e1):  # the output layer's input
            first = lambda w: slots.first_layer(stop(w)) + e1  # noqa: E731
            code = sparse.encode(p, model_cfg, first, dot, train=True, rng=rng)
            return sparse.decode_hidden(p, code, model_cfg, dot)

        def head(w_rows, b, h, e2):  # MMSE of the output at the observed items
            pre = sparse.rowdot(w_rows, b, h, slots.cols, slots.rows, slots.mask) + e2
            return slots_loss(model.output_activation(model_cfg)(pre), slots)

        def refeed_input(h):
            return (sparse.dense_output(stop(params), h, model_cfg, dot) if aug_step > 0
                    else None)

        e1 = jnp.zeros((slots.n_rows, params["encoder"][0]["w"].shape[1]), jnp.float32)
        e2 = jnp.zeros(slots.cols.shape, jnp.float32)
        if "w" not in params["decoder"][-1]:  # tied: W1 is the output layer's weight too
            def loss_fn(p, e1, e2):
                h = hidden(p, e1)
                return head(stop(sparse.decoder_out_layer(p)[0]), p["decoder"][-1]["b"], h,
                            e2), h
            (loss, h), (grads, g_first, g_out) = jax.value_and_grad(
                loss_fn, argnums=(0, 1, 2), has_aux=True)(params, e1, e2)
            h = stop(h)
            outputs = refeed_input(h)
            grads["encoder"][0]["w"] = SparseRows.concat(
                SparseRows(g_first, slots.rows, slots.cols, slots.vals),
                SparseRows(h, slots.rows, slots.cols, g_out))
        else:
            w_rows, b_out = sparse.decoder_out_layer(params)
            h, backward = jax.vjp(hidden, params, e1)
            loss, (g_b, g_out) = jax.value_and_grad(head, argnums=(1, 3))(
                stop(w_rows), b_out, h, e2)
            outputs = refeed_input(h)
            # the output layer's update waits for the re-feeding input, which reads its weight
            w_new, trace_new, dh = cpu_kernels.sparse_momentum_grad(
                w_rows, momentum_trace(opt_state)["decoder"][-1]["w"], h, slots.rows,
                slots.cols, g_out, momentum_lr(optimizer, opt_state), optimizer.momentum,
                after=() if outputs is None else (outputs,))
            grads, g_first = backward(dh)
            grads["encoder"][0]["w"] = SparseRows(g_first, slots.rows, slots.cols, slots.vals)
            grads["decoder"][-1] = {"w": Updated(w_new, trace_new), "b": g_b}
        # g_first is the backward pass's last result: after it (and after the re-feeding
        # input), every weight has been read
        after = (g_first,) if outputs is None else (g_first, outputs)
        params, opt_state = apply_gradients(optimizer, grads, opt_state, params, after=after)
        return params, opt_state, loss, outputs

    fused = (sparse_input and sparse_output and axis_name is None and dtype == "float32"
             and isinstance(optimizer, SGDMomentum) and cpu_kernels.enabled()
             and input_drop_prob == 0 and not input_shift)

    def first_update(params, opt_state, x, rng):
        if fused:
            return fused_sparse_update(params, opt_state, x, rng)
        if sparse_input:
            return update(params, opt_state, x, None, rng,
                          loss=lambda p, b, _, r: sparse_loss_fn(p, b, r))
        if input_drop_prob > 0 or input_shift:
            return update(params, opt_state, x, x, rng,
                          loss=lambda p, i, t, r: loss_fn(p, i, t, r, drop_input=True))
        return update(params, opt_state, x, x, rng)

    def train_step(state: TrainState, x):
        rng = jax.random.fold_in(state.rng, state.step)
        if axis_name is not None:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        keys = jax.random.split(rng, 1 + 2 * aug_step)
        params, opt_state, loss, y = first_update(state.params, state.opt_state, x, keys[0])
        refeed_losses = []
        for t in range(aug_step):
            target = jax.lax.stop_gradient(y)
            inputs = (model.dropout(target, noise_prob, keys[2 + 2 * t]) if noise_prob > 0
                      else target)
            params, opt_state, refeed_loss, y = update(
                params, opt_state, inputs, inputs if noisy_target else target, keys[1 + 2 * t])
            refeed_losses.append(refeed_loss)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        metrics = {"loss": loss,
                   "refeed_loss": jnp.stack(refeed_losses) if refeed_losses else jnp.zeros((0,))}
        return new_state, metrics

    return train_step


def jit_train_step(step_fn: Callable) -> Callable:
    """jit with the state's buffers donated (updated in place on accelerators)."""
    return jax.jit(step_fn, donate_argnums=(0,))


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


def train_epoch(state: TrainState, step_fn: Callable, batches: Iterable, n_batches: int,
                epoch: int, summary_frequency: int = 100, on_summary: Callable | None = None,
                progress: bool = False, desc: str = "") -> tuple[TrainState, np.ndarray]:
    """Runs ``step_fn`` over ``n_batches`` batches of one epoch; returns (state, losses).

    ``losses[i]`` is the MMSE of iteration i's update on the sparse batch. A call of ``step_fn``
    may run several iterations (e.g. :class:`ResidentEpochs`): its ``metrics["loss"]`` is then a
    vector with one loss per iteration. Every ``summary_frequency`` iterations the recent losses
    are fetched (so the device runs ahead of the host in between; the copies to the host start
    as soon as each call is dispatched), checked for NaN/inf and passed to
    ``on_summary(iteration, rmse)``.
    """
    pending, fetched = [], []
    done = 0  # iterations dispatched
    next_summary = summary_frequency

    def check():
        values = [np.atleast_1d(np.asarray(v, np.float64)) for v in jax.device_get(pending)]
        pending.clear()
        values = np.concatenate(values) if values else np.zeros((0,))
        fetched.extend(values.tolist())
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            step = len(fetched) - len(values) + int(bad[0])
            raise TrainingDivergedError(
                f"training loss is {values[bad[0]]} at epoch {epoch + 1}, step {step}")
        return values

    bar = tqdm.tqdm(total=n_batches, desc=desc, unit="batch", leave=False,
                    disable=not progress, dynamic_ncols=True)
    try:
        for batch in itertools.islice(batches, n_batches):
            state, metrics = step_fn(state, batch)
            loss = metrics["loss"]
            if hasattr(loss, "copy_to_host_async"):
                loss.copy_to_host_async()
            pending.append(loss)
            done += int(np.prod(np.shape(loss)))
            if done >= next_summary:
                since = len(fetched)
                check()
                rmse = float(np.sqrt(np.mean(fetched[since:])))
                bar.set_postfix(rmse=f"{rmse:.4f}")
                while next_summary <= done:
                    if on_summary is not None:
                        on_summary(next_summary, rmse)
                    next_summary += summary_frequency
            bar.update(1)
        check()
    finally:
        bar.close()
    return state, np.asarray(fetched)


class ResidentEpochs:
    """Training with the rating matrix resident on the device (sparse fast path).

    The CSR matrix is copied to the device once; each call of :meth:`step_fn` gathers the packed
    batches of ``steps_per_call`` iterations on the device from the epoch's shuffled permutation
    and runs them in one ``lax.scan`` (one dispatch, no host-to-device batch copies, state
    buffers donated). Batches, their order and the dropped final partial batch are exactly those
    of ``batching.sparse_batches`` / ``dense_batches``; every batch of an epoch has the same
    packed width (the largest ``batching.epoch_packed_width`` so far), so an epoch compiles at
    most two programs (full calls and the remainder), and later epochs mostly none.

    Use with :func:`train_epoch`::

        runner = ResidentEpochs(make_train_step(..., sparse_input=True), csr, batch_size, seed)
        state, losses = train_epoch(state, runner.step_fn, runner.batches(epoch),
                                    runner.num_calls(epoch), epoch)
    """

    def __init__(self, step: Callable, csr, batch_size: int, seed: int,
                 steps_per_call: int = 8, device=None):
        from deepae_jax.data import batching
        self._batching = batching
        self.csr, self.batch_size, self.seed = csr, int(batch_size), int(seed)
        self.steps_per_call = max(1, int(steps_per_call))
        self.data = sparse.DeviceRatings.from_csr(csr, device)
        self.n_batches = batching.num_batches(csr.shape[0], self.batch_size)
        self.width = 0
        self.device = next(iter(self.data.indptr.devices()))

        def multi(state, data, rows, width):
            def body(st, r):
                return step(st, sparse.gather_packed(data, r, width))
            return jax.lax.scan(body, state, rows)
        self._multi = jax.jit(multi, static_argnums=(3,), donate_argnums=(0,))

    def num_calls(self, epoch: int) -> int:
        """Calls of :meth:`step_fn` per epoch."""
        return -(-self.n_batches // self.steps_per_call)

    def batches(self, epoch: int):
        """The items to pass to :meth:`step_fn`: (rows (S, B) on the device, packed width)."""
        b = self.batch_size
        # never narrower than before: a width once compiled is reused by later epochs
        self.width = max(self.width, self._batching.epoch_packed_width(self.csr, b, self.seed,
                                                                       epoch))
        width = self.width
        perm = self._batching.epoch_permutation(self.csr.shape[0], self.seed, epoch)
        rows = perm[:self.n_batches * b].astype(np.int32).reshape(self.n_batches, b)
        rows = jax.device_put(rows, self.device)
        for start in range(0, self.n_batches, self.steps_per_call):
            yield rows[start:start + self.steps_per_call], width

    def step_fn(self, state: TrainState, item) -> tuple[TrainState, dict]:
        rows, width = item
        # committed to the data's device like the outputs will be: a fresh (uncommitted) state
        # would otherwise compile the step a second time on the next call
        state = jax.device_put(state, self.device)
        return self._multi(state, self.data, rows, width)
