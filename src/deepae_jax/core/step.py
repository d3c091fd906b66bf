"""Training: the jit-compiled step with dense re-feeding, and the epoch loop.

One iteration on a sparse mini-batch x (PAPER.md, "Training step with dense re-feeding"):
  1. y = f(x) with dropout; loss = MMSE(y, x); gradient; optimiser update.
  2. ``aug_step`` times: the previous output y (no gradient through it) is the target and, after
     optional dropout noise with probability ``noise_prob``, the input: y' = f(y) with the
     parameters updated so far; loss = MMSE(y', y); a separate optimiser update; y <- y'.
The first re-fed y is the output computed BEFORE step 1's update, as in the reference.
"""
from __future__ import annotations

import functools
import itertools
import logging
from typing import Any, Callable, Iterable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from deepae_jax.core import model, sparse
from deepae_jax.kernels import ops as kernel_ops
from deepae_jax.kernels.update import fused_sparse_update
from deepae_jax.core.losses import mmse, mmse_sums
from deepae_jax.core.optim import SGDMomentum, apply_gradients

log = logging.getLogger("deepae_jax")


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


PATHS = ("dense", "sparse", "cpu_kernels")
"""The training step's variants (``--train_path``): the dense reference computation; the sparse
XLA path (gather-sum first layer, output at the observed items: any backend, GPU-shaped); the
sparse path on the CPU kernels (CPU platform only; the XLA path elsewhere)."""

LAYERS = ("auto", "sparse", "dense")
"""How the sparse XLA path computes the n-wide first and output layers (``make_train_step``)."""


def make_train_step(model_cfg: model.ModelConfig, optimizer: optax.GradientTransformation,
                    aug_step: int = 0, noise_prob: float = 0.0, *, path: str = "dense",
                    layers: str = "auto", dtype: str = "float32", noisy_target: bool = False,
                    input_drop_prob: float = 0.0, input_shift: float = 0.0
                    ) -> Callable[[TrainState, Any], tuple]:
    """Builds the pure ``train_step(state, batch) -> (state, metrics)`` (not yet jitted).

    ``path`` (one of :data:`PATHS`) fixes the variant once. ``"dense"`` takes a dense (B, n)
    rating batch; the sparse paths take a sparse batch pytree (``deepae_jax.core.sparse``: padded,
    packed or grouped packed). All compute the same loss and updates up to float rounding.
    ``layers`` (one of :data:`LAYERS`) is how the sparse XLA path computes the n-wide first and
    output layers: ``"sparse"``, a gather-sum over the observed items and the output (and its
    gradient) at those items only; ``"dense"``, the batch densified on the device and dense
    matmuls, the loss still at the observed items; ``"auto"``, the sparse formulation on the CPU
    platform and, elsewhere, the one that moves fewer bytes for the batch's shape
    (:func:`sparse.n_wide_layers`). Dropout draws the same mask (same rng, same code-layer
    shape) on every path. ``"cpu_kernels"`` runs the sparse formulation on the CPU kernels
    (``deepae_jax.kernels``; with ``optim.SGDMomentum`` the item-sized gradients are summed
    inside the optimiser's kernels) in the CPU branch of ``jax.lax.platform_dependent``: chosen
    when the step is lowered, the XLA path on other platforms.

    The step is written for the whole batch; on several devices it runs under ``jax.jit`` with
    the batch sharded along its rows and the state replicated (``deepae_jax.training.parallel``), and XLA
    inserts the sums across devices, so every update is that of the global batch.

    ``noise_prob`` drops entries of the re-fed input; the re-feeding target stays the clean
    output (PAPER.md). ``noisy_target=True`` uses the noised input as the target too, as the
    published DeepRecommender run.py does. ``input_drop_prob`` (beyond the paper): inverted
    dropout on the INPUT ratings of the update on the sparse batch (targets complete), drawn
    from ``fold_in(rng, 1)`` of that update; ``input_shift``: added to every observed input
    value (not the targets). ``dtype="bfloat16"``: bfloat16 matmul operands, float32
    accumulation, parameters and loss.

    ``metrics``: ``loss`` (MMSE of the update on the sparse batch) and ``refeed_loss`` (MMSE of
    each re-feeding update, (aug_step,)).
    """
    if aug_step < 0:
        raise ValueError(f"aug_step must be >= 0, got {aug_step}")
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if layers not in LAYERS:
        raise ValueError(f"layers must be one of {LAYERS}, got {layers!r}")
    dot = model.make_dot(dtype)
    kernels_on_cpu = path == "cpu_kernels"
    fused = (kernels_on_cpu and dtype == "float32" and not input_drop_prob and not input_shift
             and isinstance(optimizer, SGDMomentum))

    def update(params, opt_state, loss_fn, args, kernels):
        (loss, outputs), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, *args)
        # the first layer's weight gradient comes last: every weight has been read by then
        params, opt_state = apply_gradients(optimizer, grads, opt_state, params,
                                            after=(grads["encoder"][0]["w"],), value=loss,
                                            kernels=kernels)
        return params, opt_state, loss, outputs

    dense_loss = functools.partial(_dense_loss, model_cfg, dot)
    sparse_loss = functools.partial(_sparse_loss, model_cfg, dot, aug_step > 0)

    def first_update(params, opt_state, batch, rng, kernels=False, layout="sparse"):
        """The update on the sparse batch: (params, opt_state, loss, re-feeding input)."""
        key = jax.random.fold_in(rng, 1)
        if path == "dense":
            x = jnp.where(batch != 0, batch + input_shift, 0.0) if input_shift else batch
            x = model.dropout(x, input_drop_prob, key) if input_drop_prob else x
            return update(params, opt_state, dense_loss, (x, batch, rng), kernels)
        slots = sparse.Slots.from_batch(batch)
        if kernels and fused:
            return fused_sparse_update(params, opt_state, slots, rng, model_cfg, optimizer,
                                       aug_step > 0, dot)
        in_slots = slots.with_vals(_input_vals(slots, input_shift, input_drop_prob, key))
        loss = lambda p: sparse_loss(p, slots, in_slots, rng, kernels, layout)  # noqa: E731
        return update(params, opt_state, loss, (), kernels)

    def refeed_update(params, opt_state, y, rng, noise_rng, kernels=False):
        """One dense re-feeding update on the previous output y."""
        target = jax.lax.stop_gradient(y)
        inputs = model.dropout(target, noise_prob, noise_rng) if noise_prob else target
        return update(params, opt_state, dense_loss,
                      (inputs, inputs if noisy_target else target, rng), kernels)

    def train_step(state: TrainState, batch) -> tuple[TrainState, dict]:
        keys = jax.random.split(jax.random.fold_in(state.rng, state.step), 1 + 2 * aug_step)
        on_cpu, elsewhere = _layouts(path, layers, batch, model_cfg.layer_sizes)
        params, opt_state, loss, y = _on_platform(
            first_update, {"kernels": kernels_on_cpu, "layout": on_cpu},
            {"kernels": False, "layout": elsewhere}, state.params, state.opt_state, batch,
            keys[0])
        refeed_losses = []
        for t in range(aug_step):  # the dense re-feeding updates: y <- f(y)
            params, opt_state, refeed_loss, y = _on_platform(
                refeed_update, {"kernels": kernels_on_cpu}, {"kernels": False}, params,
                opt_state, y, keys[1 + 2 * t], keys[2 + 2 * t])
            refeed_losses.append(refeed_loss)
        metrics = {"loss": loss, "refeed_loss": jnp.stack(refeed_losses) if refeed_losses
                   else jnp.zeros((0,))}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def _layouts(path: str, layers: str, batch, layer_sizes) -> tuple[str, str]:
    """The formulation of the n-wide layers (on the CPU platform, elsewhere) for ``batch``:
    ``layers`` made explicit (the CPU kernels compute the sparse one)."""
    if path == "dense":
        return "sparse", "sparse"  # unused
    if layers != "auto":
        return ("sparse" if path == "cpu_kernels" else layers), layers
    slots = sparse.Slots.from_batch(batch)
    picked = sparse.n_wide_layers(slots.n_rows, slots.cols.size, *layer_sizes[:2])
    log.info("n-wide layers (layers=auto): sparse on the CPU platform, %s elsewhere, for "
             "batches of %d rows in %d slots", picked, slots.n_rows, slots.cols.size)
    return "sparse", picked


def _on_platform(fn: Callable, cpu: dict, default: dict, *args):
    """fn(*args, **cpu) on the CPU platform, fn(*args, **default) elsewhere (chosen when the
    step is lowered, ``jax.lax.platform_dependent``)."""
    if cpu == default:
        return fn(*args, **cpu)
    return jax.lax.platform_dependent(*args, cpu=functools.partial(fn, **cpu),
                                      default=functools.partial(fn, **default))


def _dense_loss(cfg: model.ModelConfig, dot: model.Dot, params: model.Params,
                inputs: jax.Array, targets: jax.Array, rng: jax.Array) -> tuple:
    """(MMSE of f(inputs) against the observed targets, f(inputs)): the dense computation."""
    outputs = model.apply(params, inputs, cfg, train=True, rng=rng, dot=dot)
    sse, count = mmse_sums(outputs, targets)
    return sse / jnp.maximum(count, 1.0), outputs


def _sparse_loss(cfg: model.ModelConfig, dot: model.Dot, refeed: bool, params: model.Params,
                 slots: sparse.Slots, in_slots: sparse.Slots, rng: jax.Array,
                 kernels: bool = False, layout: str = "sparse") -> tuple:
    """(MMSE at the observed items of ``slots`` of f(in_slots), the re-feeding input or None).

    ``layout="sparse"``: the first layer a gather-sum, the output at the observed items only
    (``kernels``: both on the CPU kernels); ``"dense"``: in_slots densified, dense first and
    output layers, the output read at the observed items. The re-feeding input is the dense
    output, computed only when ``refeed`` and with no gradient through it."""
    gather, pre_at = (kernel_ops.gather_sum, kernel_ops.output_pre_at) if kernels else (
        sparse.gather_sum, sparse.output_pre_at)
    first = ((lambda w: dot(in_slots.dense(w.shape[0]), w)) if layout == "dense" else
             (lambda w: gather(w, in_slots)))
    h = sparse.hidden_sparse(params, in_slots, cfg, dot, True, rng, first)
    dense = model.dense_output(params, h, cfg, dot) if layout == "dense" else None
    pred = (slots.at(dense) if layout == "dense" else
            sparse.output_at(params, h, slots, cfg, pre_at))
    y = None
    if refeed:
        stop = jax.lax.stop_gradient
        y = stop(dense) if dense is not None else model.dense_output(stop(params), stop(h), cfg,
                                                                     dot)
    return mmse(pred, slots.vals), y


def _input_vals(slots: sparse.Slots, shift: float, drop_prob: float, key: jax.Array
                ) -> jax.Array:
    """The input values of the update on the sparse batch: shifted by ``shift`` where observed,
    then inverted dropout with ``drop_prob`` (beyond the paper; 0 and 0: the ratings)."""
    vals = jnp.where(slots.mask, slots.vals + shift, 0.0) if shift else slots.vals
    if drop_prob:
        keep = jax.random.bernoulli(key, 1.0 - drop_prob, vals.shape)
        vals = jnp.where(keep, vals / (1.0 - drop_prob), 0.0)
    return vals


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
