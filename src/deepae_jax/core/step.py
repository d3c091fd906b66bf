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
from deepae_jax.core.losses import mmse, mmse_sums
from deepae_jax.core.ops import XLA, StepOps
from deepae_jax.core.optim import apply_gradients

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


PATHS = ("dense", "sparse")
"""The training step's variants: the dense reference computation; the sparse path (gather-sum
first layer, output at the observed items: any backend, GPU-shaped; its ops on the CPU platform
may be another backend's, :class:`~deepae_jax.core.ops.StepOps`)."""

LAYERS = ("auto", "sparse", "dense")
"""How the sparse XLA path computes the n-wide first and output layers (``make_train_step``)."""


def make_train_step(model_cfg: model.ModelConfig, optimizer: optax.GradientTransformation,
                    aug_step: int = 0, noise_prob: float = 0.0, *, path: str = "dense",
                    layers: str = "auto", precision: str = "float32",
                    noisy_target: bool = False, input_drop_prob: float = 0.0,
                    input_shift: float = 0.0, ops: StepOps = XLA
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
    shape) on every path. ``ops`` (the sparse path): the sparse layers' ops on the CPU platform
    (e.g. ``deepae_jax.kernels.cpu_ops``, whose fused updates, when given, must be those of
    ``optimizer``), in the CPU branch of ``jax.lax.platform_dependent``: chosen when the step is
    lowered, the XLA ops (:data:`~deepae_jax.core.ops.XLA`) on other platforms.

    The step is written for the whole batch; on several devices it runs under ``jax.jit`` with
    the batch sharded along its rows and the state replicated
    (``deepae_jax.training.parallel``), and XLA inserts the sums across devices, so every
    update is that of the global batch.

    ``noise_prob`` drops entries of the re-fed input; the re-feeding target stays the clean
    output (PAPER.md). ``noisy_target=True`` uses the noised input as the target too, as the
    published DeepRecommender run.py does. ``input_drop_prob`` (beyond the paper): inverted
    dropout on the INPUT ratings of the update on the sparse batch (targets complete), drawn
    from ``fold_in(rng, 1)`` of that update; ``input_shift``: added to every observed input
    value (not the targets). ``precision``: of the matmuls (``model.PRECISIONS``; parameters
    and loss stay float32).

    ``metrics``: ``loss`` (MMSE of the update on the sparse batch) and ``refeed_loss`` (MMSE of
    each re-feeding update, (aug_step,)).
    """
    if aug_step < 0:
        raise ValueError(f"aug_step must be >= 0, got {aug_step}")
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if layers not in LAYERS:
        raise ValueError(f"layers must be one of {LAYERS}, got {layers!r}")
    kernels_on_cpu = path == "sparse" and not ops.is_xla
    fused = (kernels_on_cpu and ops.sparse_update is not None and precision == "float32"
             and not input_drop_prob and not input_shift)
    spec = _StepSpec(model_cfg, optimizer, aug_step, noise_prob, path, layers,
                     model.make_dot(precision), noisy_target, input_drop_prob, input_shift, ops,
                     kernels_on_cpu, fused)
    return functools.partial(_train_step, spec)


@dataclasses.dataclass(frozen=True)
class _StepSpec:
    """The settings of a training step (:func:`make_train_step`'s arguments, made explicit)."""

    model_cfg: model.ModelConfig
    optimizer: optax.GradientTransformation
    aug_step: int
    noise_prob: float
    path: str
    layers: str
    dot: model.Dot
    noisy_target: bool
    input_drop_prob: float
    input_shift: float
    ops: StepOps
    kernels_on_cpu: bool  # the sparse layers on ``ops`` in the CPU branch
    fused: bool  # the update on the sparse batch as ``ops.sparse_update`` (one kernel pass)


def _train_step(spec: _StepSpec, state: TrainState, batch) -> tuple[TrainState, dict]:
    """One iteration: the update on the sparse batch, then ``aug_step`` re-feeding updates."""
    keys = jax.random.split(jax.random.fold_in(state.rng, state.step), 1 + 2 * spec.aug_step)
    on_cpu, elsewhere = _layouts(spec.path, spec.layers, spec.kernels_on_cpu, batch,
                                 spec.model_cfg.layer_sizes)
    first = functools.partial(_first_update, spec)
    params, opt_state, loss, y = _on_platform(
        first, {"kernels": spec.kernels_on_cpu, "layout": on_cpu},
        {"kernels": False, "layout": elsewhere}, state.params, state.opt_state, batch, keys[0])
    refeed_losses = []
    for t in range(spec.aug_step):  # the dense re-feeding updates: y <- f(y)
        params, opt_state, refeed_loss, y = _on_platform(
            functools.partial(_refeed_update, spec), {"kernels": spec.kernels_on_cpu},
            {"kernels": False}, params, opt_state, y, keys[1 + 2 * t], keys[2 + 2 * t])
        refeed_losses.append(refeed_loss)
    metrics = {"loss": loss, "refeed_loss": jnp.stack(refeed_losses) if refeed_losses
               else jnp.zeros((0,))}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def _update(spec: _StepSpec, params, opt_state, loss_fn: Callable, args: tuple, kernels: bool):
    """One optimiser update on ``loss_fn(params, *args) -> (loss, outputs)``:
    (params, opt_state, loss, outputs)."""
    (loss, outputs), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, *args)
    if kernels and spec.ops.momentum_update is not None:
        # the first layer's weight gradient comes last: every weight has been read by then
        params, opt_state = spec.ops.momentum_update(grads, opt_state, params,
                                                     (grads["encoder"][0]["w"],))
    else:
        params, opt_state = apply_gradients(spec.optimizer, grads, opt_state, params,
                                            value=loss)
    return params, opt_state, loss, outputs


def _first_update(spec: _StepSpec, params, opt_state, batch, rng: jax.Array,
                  kernels: bool = False, layout: str = "sparse"):
    """The update on the sparse batch: (params, opt_state, loss, re-feeding input)."""
    key = jax.random.fold_in(rng, 1)
    dense_loss = functools.partial(_dense_loss, spec.model_cfg, spec.dot)
    if spec.path == "dense":
        x = jnp.where(batch != 0, batch + spec.input_shift, 0.0) if spec.input_shift else batch
        x = model.dropout(x, spec.input_drop_prob, key) if spec.input_drop_prob else x
        return _update(spec, params, opt_state, dense_loss, (x, batch, rng), kernels)
    slots = sparse.Slots.from_batch(batch)
    if kernels and spec.fused:
        return spec.ops.sparse_update(params, opt_state, slots, rng, spec.model_cfg,
                                      spec.aug_step > 0, spec.dot)
    in_slots = slots.with_vals(_input_vals(slots, spec.input_shift, spec.input_drop_prob, key))
    sparse_loss = functools.partial(_sparse_loss, spec.model_cfg, spec.dot, spec.aug_step > 0,
                                    spec.ops if spec.kernels_on_cpu else XLA)
    loss = lambda p: sparse_loss(p, slots, in_slots, rng, kernels, layout)  # noqa: E731
    return _update(spec, params, opt_state, loss, (), kernels)


def _refeed_update(spec: _StepSpec, params, opt_state, y: jax.Array, rng: jax.Array,
                   noise_rng: jax.Array, kernels: bool = False):
    """One dense re-feeding update on the previous output y (PAPER.md)."""
    target = jax.lax.stop_gradient(y)
    inputs = model.dropout(target, spec.noise_prob, noise_rng) if spec.noise_prob else target
    dense_loss = functools.partial(_dense_loss, spec.model_cfg, spec.dot)
    return _update(spec, params, opt_state, dense_loss,
                   (inputs, inputs if spec.noisy_target else target, rng), kernels)


def _layouts(path: str, layers: str, kernels_on_cpu: bool, batch, layer_sizes
             ) -> tuple[str, str]:
    """The formulation of the n-wide layers (on the CPU platform, elsewhere) for ``batch``:
    ``layers`` made explicit (another backend's ops on the CPU compute the sparse one)."""
    if path == "dense":
        return "sparse", "sparse"  # unused
    if layers != "auto":
        return ("sparse" if kernels_on_cpu else layers), layers
    slots = sparse.Slots.from_batch(batch)
    picked = sparse.n_wide_layers(slots.n_rows, slots.cols.size, *layer_sizes[:2])
    log.debug("n-wide layers (layers=auto): sparse on the CPU platform, %s elsewhere, for "
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


def _sparse_loss(cfg: model.ModelConfig, dot: model.Dot, refeed: bool, ops: StepOps,
                 params: model.Params,
                 slots: sparse.Slots, in_slots: sparse.Slots, rng: jax.Array,
                 kernels: bool = False, layout: str = "sparse") -> tuple:
    """(MMSE at the observed items of ``slots`` of f(in_slots), the re-feeding input or None).

    ``layout="sparse"``: the first layer a gather-sum, the output at the observed items only
    (``kernels``: both by ``ops``); ``"dense"``: in_slots densified, dense first and
    output layers, the output read at the observed items. The re-feeding input is the dense
    output, computed only when ``refeed`` and with no gradient through it."""
    gather, pre_at = (ops.gather_sum, ops.output_pre_at) if kernels else (
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
                progress: bool = False, desc: str = "", n_iterations: int = 0
                ) -> tuple[TrainState, np.ndarray]:
    """Runs ``step_fn`` over ``n_batches`` batches of one epoch; returns (state, losses).

    ``losses[i]`` is the MMSE of iteration i's update on the sparse batch. A call of ``step_fn``
    may run several iterations (e.g. :class:`ResidentEpochs`): its ``metrics["loss"]`` is then a
    vector with one loss per iteration, of which only the first ``metrics["steps"]`` count
    when given. Every ``summary_frequency`` iterations the recent losses
    are fetched (so the device runs ahead of the host in between; the copies to the host start
    as soon as each call is dispatched), checked for NaN/inf and passed to
    ``on_summary(iteration, rmse)``. The progress bar counts iterations (batches) when
    ``n_iterations`` (their number) is given, else calls.
    """
    pending, fetched = [], []
    done = 0  # iterations dispatched
    next_summary = summary_frequency

    def check():
        values = [np.atleast_1d(np.asarray(v, np.float64))[:n]
                  for v, n in jax.device_get(pending)]
        pending.clear()
        values = np.concatenate(values) if values else np.zeros((0,))
        fetched.extend(values.tolist())
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            step = len(fetched) - len(values) + int(bad[0])
            raise TrainingDivergedError(
                f"training loss is {values[bad[0]]} at epoch {epoch + 1}, step {step}")
        return values

    bar = tqdm.tqdm(total=n_iterations or n_batches, desc=desc, unit="batch", leave=False,
                    disable=not progress, dynamic_ncols=True)
    try:
        for batch in itertools.islice(batches, n_batches):
            state, metrics = step_fn(state, batch)
            loss = metrics["loss"]
            if hasattr(loss, "copy_to_host_async"):
                loss.copy_to_host_async()
            n = metrics.get("steps", int(np.prod(np.shape(loss))))
            pending.append((loss, n))
            done += n
            if done >= next_summary:
                since = len(fetched)
                check()
                rmse = float(np.sqrt(np.mean(fetched[since:])))
                bar.set_postfix(rmse=f"{rmse:.4f}")
                while next_summary <= done:
                    if on_summary is not None:
                        on_summary(next_summary, rmse)
                    next_summary += summary_frequency
            bar.update(n if n_iterations else 1)
        check()
    finally:
        bar.close()
    return state, np.asarray(fetched)
