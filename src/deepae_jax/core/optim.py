"""Optimisers of the reference's run.py, as optax transformations.

* ``momentum``: SGD with momentum 0.9 and the multi-step schedule that halves the learning rate at
  epochs 24, 36, 48, 66 and 72 (PyTorch ``MultiStepLR`` stepped at the start of each epoch, so the
  first halving applies from 0-based epoch 23).
* ``adam``, ``adagrad``: constant learning rate, PyTorch's defaults.
* ``rmsprop``: momentum 0.9, smoothing 0.99, eps outside the square root (PyTorch's RMSprop).

``weight_decay`` is PyTorch-style L2: ``decay * w`` is added to the gradient before the optimiser.

:func:`apply_gradients` applies an optimiser's step to the parameters. :func:`plain_momentum`
says when an optimiser is exactly ``optax.sgd(schedule, momentum)``, and with which schedule: what
a fused momentum update (e.g. the CPU kernels') needs to compute the same update.
"""
from __future__ import annotations

import inspect
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

OPTIMIZERS = ("momentum", "adam", "adagrad", "rmsprop")
MOMENTUM = 0.9  # of --optimizer=momentum (the reference's)
MILESTONES = (24, 36, 48, 66, 72)


def multistep_lr(base_lr: float, updates_per_epoch: int,
                 milestones: Sequence[int] = MILESTONES, gamma: float = 0.5) -> optax.Schedule:
    """Learning rate as a function of the optimiser's update count.

    0-based epoch e = count // updates_per_epoch trains at ``base_lr * gamma**k`` where k is the
    number of milestones m with m <= e + 1 (the reference steps its scheduler before each epoch).
    """
    if updates_per_epoch < 1:
        raise ValueError(f"updates_per_epoch must be >= 1, got {updates_per_epoch}")
    bounds = jnp.asarray([(m - 1) * updates_per_epoch for m in milestones])

    def schedule(count):
        return base_lr * gamma ** jnp.sum(count >= bounds)
    return schedule


def learning_rate_at_epoch(base_lr: float, optimizer: str, epoch: int,
                           schedule: str = "reference", num_epochs: int = 100) -> float:
    """The learning rate at the start of 0-based ``epoch`` (for logs; ``plateau``: the base
    rate, before the plateau's scaling)."""
    if schedule == "multistep" or (schedule == "reference" and optimizer == "momentum"):
        return base_lr * 0.5 ** sum(epoch + 1 >= m for m in MILESTONES)
    if schedule == "cosine":
        return float(base_lr * 0.5 * (1 + np.cos(np.pi * min(epoch, num_epochs) / num_epochs)))
    if schedule == "exponential":
        return float(base_lr * EXPONENTIAL_RATE ** epoch)
    return base_lr


def _torch_rmsprop(lr: float) -> optax.GradientTransformation:
    kwargs = dict(decay=0.99, eps=1e-8, momentum=0.9)
    if "eps_in_sqrt" in inspect.signature(optax.rmsprop).parameters:
        kwargs["eps_in_sqrt"] = False
    return optax.rmsprop(lr, **kwargs)


def _torch_adagrad(lr: float, eps: float = 1e-10) -> optax.GradientTransformation:
    """PyTorch's Adagrad: sum += g^2; update = -lr * g / (sqrt(sum) + eps).

    ``optax.adagrad`` adds eps inside the square root (g / sqrt(sum + eps)), which shrinks the
    steps of gradients below ~1e-4 by orders of magnitude; the state is optax's, unchanged.
    """
    def init_fn(params):
        return optax.ScaleByRssState(sum_of_squares=jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        sums = jax.tree.map(lambda g, s: s + g * g, updates, state.sum_of_squares)
        updates = jax.tree.map(lambda g, s: g / (jnp.sqrt(s) + eps), updates, sums)
        return updates, optax.ScaleByRssState(sum_of_squares=sums)

    return optax.chain(optax.GradientTransformation(init_fn, update_fn),
                       optax.scale_by_learning_rate(lr))


SCHEDULES = ("reference", "multistep", "constant", "cosine", "exponential", "plateau")
EXPONENTIAL_RATE = 0.95  # --lr_schedule=exponential: lr * 0.95**epoch (smoothly)
PLATEAU = dict(factor=0.5, patience=3, cooldown=0)  # in epochs; the value: the epoch's loss


class PlateauOptimizer(optax.GradientTransformationExtraArgs):
    """An optimiser whose update needs ``value=`` (the loss) for reduce-on-plateau."""


def lr_schedule(schedule: str, optimizer: str, lr: float, updates_per_epoch: int,
                num_epochs: int = 100):
    """The learning rate (a float or an optax schedule of the update count) of
    ``--lr_schedule``: ``reference`` = the reference's (multistep for momentum, else constant);
    ``multistep``: MultiStepLR for any optimiser; ``cosine``: cosine decay to 0 over
    ``num_epochs``; ``exponential``: x0.95 per epoch; ``constant`` and ``plateau``: ``lr``
    (plateau scales the updates itself)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; choose one of {SCHEDULES}")
    if schedule == "multistep" or (schedule == "reference" and optimizer == "momentum"):
        return multistep_lr(lr, updates_per_epoch)
    if schedule == "cosine":
        return optax.cosine_decay_schedule(lr, max(1, num_epochs * updates_per_epoch))
    if schedule == "exponential":
        return optax.exponential_decay(lr, max(1, updates_per_epoch), EXPONENTIAL_RATE)
    return lr


def weights_mask(params):
    """True at weight matrices ("w"), False at biases: what ``--l2_weights`` decays."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "w", params)


def make_optimizer(name: str, lr: float, weight_decay: float = 0.0,
                   updates_per_epoch: int = 1, *, l2_weights: float = 0.0,
                   schedule: str = "reference", num_epochs: int = 100
                   ) -> optax.GradientTransformation:
    """The optax transformation for ``--optimizer name``.

    ``updates_per_epoch`` counts optimiser updates (iterations × (1 + aug_step)); it sets the
    epoch length of the schedules. ``l2_weights`` (beyond the paper): L2 on the weight matrices
    only, ``l2_weights * w`` added to their gradients (biases excluded), beside the reference's
    ``weight_decay`` on every parameter.
    """
    plain = plain_momentum(name, lr, weight_decay, updates_per_epoch, l2_weights=l2_weights,
                           schedule=schedule, num_epochs=num_epochs)
    if plain is not None:
        return optax.sgd(*plain)
    rate = lr_schedule(schedule, name, lr, updates_per_epoch, num_epochs)
    if name == "momentum":
        opt = optax.sgd(rate, momentum=MOMENTUM)
    elif name == "adam":
        opt = optax.adam(rate, b1=0.9, b2=0.999, eps=1e-8)
    elif name == "adagrad":
        opt = _torch_adagrad(rate)
    elif name == "rmsprop":
        opt = _torch_rmsprop(rate)
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
    if l2_weights:
        opt = optax.chain(optax.add_decayed_weights(l2_weights, mask=weights_mask), opt)
    if weight_decay:
        opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
    if schedule == "plateau":
        plateau = optax.contrib.reduce_on_plateau(
            accumulation_size=max(1, updates_per_epoch), **PLATEAU)
        chained = optax.chain(opt, plateau)
        opt = PlateauOptimizer(chained.init, chained.update)
    return opt


def plain_momentum(name: str, lr: float, weight_decay: float = 0.0,
                   updates_per_epoch: int = 1, *, l2_weights: float = 0.0,
                   schedule: str = "reference", num_epochs: int = 100
                   ) -> tuple[optax.Schedule, float] | None:
    """(learning-rate schedule of the update count, momentum) when :func:`make_optimizer` with
    the same arguments is exactly ``optax.sgd(schedule, momentum)`` (SGD with momentum, no
    decay, no plateau), else None. The schedule is always a function, so the state keeps its
    update count (as every checkpoint of such a run has)."""
    if name != "momentum" or weight_decay or l2_weights or schedule == "plateau":
        return None
    rate = lr_schedule(schedule, name, lr, updates_per_epoch, num_epochs)
    return (rate if callable(rate) else optax.constant_schedule(rate)), MOMENTUM


def apply_gradients(optimizer: optax.GradientTransformation, grads, opt_state, params,
                    value: jax.Array | None = None):
    """(new params, new optimiser state) after one step of ``optimizer`` on ``grads``:
    ``optimizer.update`` followed by ``optax.apply_updates``. ``value``: the loss, for
    :class:`PlateauOptimizer`."""
    extra = {"value": value} if isinstance(optimizer, PlateauOptimizer) else {}
    updates, opt_state = optimizer.update(grads, opt_state, params, **extra)
    return optax.apply_updates(params, updates), opt_state
