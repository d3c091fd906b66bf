"""Training GLocal-K (beyond the paper): local-kernel pre-training, global-kernel fine-tuning.

The schedule of the public GLocal-K code (Han et al., CIKM 2021): the whole rating matrix is one
batch (rows: items, columns: users, 0 = unrated); each *epoch* is one call of SciPy's L-BFGS-B
(``maxiter`` iterations, ``maxcor`` = 10 correction pairs, its memory restarted every epoch) on
the objective of :func:`deepae_jax.core.kernel_model.objective`; first ``pre_epochs`` epochs of
the local-kernel autoencoder alone (:func:`kernel_model.apply`: Muller et al.'s "Sparse FC"),
then ``fine_epochs`` epochs of the whole model (:func:`kernel_model.apply_glocal`), every
parameter trained. Their ML-100K settings are the defaults here and in
:class:`kernel_model.KernelConfig`: 2 hidden layers of 500, d = 5, lambda_2 = 20, lambda_s =
0.006, a 3 x 3 global kernel, dot_scale 1, 30 pre-training and 60 fine-tuning epochs of 5
iterations.

Model selection differs from the public code, which reports the best TEST RMSE over the
fine-tuning epochs: here the epoch is chosen on VALID (``score_fn``), TEST is scored once by the
caller on the chosen epoch's predictions. Predictions are clipped to the training ratings' range
(the public code clips to 1..5).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jax.flatten_util import ravel_pytree

from deepae_jax import baseline as baseline_lib
from deepae_jax.core import kernel_model
from deepae_jax.data.ratings import RatingMatrix
from deepae_jax.evaluation import predictions

log = logging.getLogger("deepae_jax.training.glocal")


@dataclasses.dataclass(frozen=True)
class GlocalSchedule:
    """The optimisation schedule (defaults: the public code's ML-100K settings).

    Attributes:
      pre_epochs, pre_iters: local-kernel pre-training epochs, L-BFGS-B iterations each.
      fine_epochs, fine_iters: global-kernel fine-tuning epochs, iterations each (0 epochs:
        the local-kernel "Sparse FC" model alone, its epoch chosen on VALID).
      maxcor: L-BFGS-B's number of stored corrections.
      patience: stop the selected stage after this many epochs without a better VALID RMSE
        (0: run every epoch).
    """

    pre_epochs: int = 30
    pre_iters: int = 5
    fine_epochs: int = 60
    fine_iters: int = 5
    maxcor: int = 10
    patience: int = 0

    def __post_init__(self):
        if min(self.pre_epochs, self.fine_epochs, self.patience) < 0 or \
                min(self.pre_iters, self.fine_iters, self.maxcor) < 1:
            raise ValueError(f"epochs and patience must be >= 0, iterations and maxcor >= 1: "
                             f"{self}")
        if self.pre_epochs + self.fine_epochs == 0:
            raise ValueError("nothing to train: pre_epochs and fine_epochs are both 0")


@dataclasses.dataclass
class GlocalResult:
    """A trained model and its chosen epoch.

    Attributes:
      predictions: (n_rows, n_cols) float32 reconstruction of the chosen epoch, clipped.
      stage, epoch: the chosen epoch ("pre" or "fine", 1-based).
      valid_rmse: its VALID RMSE (NaN without ``score_fn``: the last epoch is kept).
      history: one dict per epoch: stage, epoch, loss, train_rmse, valid_rmse, seconds.
      local, global_: the parameters after the last epoch run.
    """

    predictions: np.ndarray
    stage: str
    epoch: int
    valid_rmse: float
    history: list[dict]
    local: kernel_model.Params
    global_: dict


def dense_ratings(matrix: RatingMatrix) -> tuple[np.ndarray, np.ndarray]:
    """(ratings, mask): the matrix as dense float32 arrays, mask 1 where rated."""
    r = np.asarray(matrix.csr.toarray(), np.float32)
    return r, (r != 0).astype(np.float32)


def lbfgs_epoch(value_and_grad: Callable, params, maxiter: int, maxcor: int = 10):
    """One SciPy L-BFGS-B call of at most ``maxiter`` iterations from ``params`` (a pytree of
    float32 arrays); ``value_and_grad(params)`` gives the objective and its gradient pytree
    (e.g. ``jax.jit(jax.value_and_grad(loss))``). Returns (params, final objective)."""
    flat, unravel = ravel_pytree(params)

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = value_and_grad(unravel(jnp.asarray(x, jnp.float32)))
        return float(value), np.asarray(ravel_pytree(grad)[0], np.float64)

    res = scipy.optimize.minimize(fun, np.asarray(flat, np.float64), jac=True,
                                  method="L-BFGS-B",
                                  options={"maxiter": maxiter, "maxcor": maxcor})
    return unravel(jnp.asarray(res.x, jnp.float32)), float(res.fun)


def _rmse(pred: np.ndarray, r: np.ndarray, mask: np.ndarray) -> float:
    return float(np.sqrt(np.sum(mask * (pred - r) ** 2) / max(mask.sum(), 1.0)))


def _stage_fns(cfg: kernel_model.KernelConfig, r: jax.Array, mask: jax.Array):
    """(jitted value_and_grad of the objective, jitted predict) of each stage over the whole
    matrix; the parameters are the local ones (pre), or (local, global) (fine)."""
    def pre_predict(p):
        return kernel_model.apply(p, r, cfg)

    def fine_predict(p):
        return kernel_model.apply_glocal(p[0], p[1], r, cfg)

    def pre_loss(p):
        return kernel_model.objective(pre_predict(p), r, mask, p, cfg)

    def fine_loss(p):
        return kernel_model.objective(fine_predict(p), r, mask, p[0], cfg)

    return {"pre": (jax.jit(jax.value_and_grad(pre_loss)), jax.jit(pre_predict)),
            "fine": (jax.jit(jax.value_and_grad(fine_loss)), jax.jit(fine_predict))}


def _run_stage(name: str, params, epochs: int, iters: int, fns, r: np.ndarray,
               mask: np.ndarray, clip: tuple[float, float], schedule: GlocalSchedule,
               score_fn: Callable | None, selected: bool, history: list[dict]):
    """Runs one stage's epochs; returns (params, best (valid, epoch, predictions) or None)."""
    value_and_grad, predict = fns[name]
    best, since = None, 0
    for epoch in range(1, epochs + 1):
        t0 = time.time()
        params, value = lbfgs_epoch(value_and_grad, params, iters, schedule.maxcor)
        pred = np.clip(np.asarray(predict(params)), *clip)
        valid = float(score_fn(pred)) if score_fn is not None else float("nan")
        row = {"stage": name, "epoch": epoch, "loss": value, "train_rmse": _rmse(pred, r, mask),
               "valid_rmse": valid, "seconds": time.time() - t0}
        history.append(row)
        log.info("%s epoch %d: loss %.1f train RMSE %.4f VALID RMSE %.4f (%.1f s)", name, epoch,
                 value, row["train_rmse"], valid, row["seconds"])
        if not selected:
            continue
        if best is None or not valid >= best[0]:  # NaN (no VALID): keep the latest
            best, since = (valid, epoch, pred), 0
        else:
            since += 1
            if schedule.patience and since >= schedule.patience:
                break
    return params, best


def train(train_matrix: RatingMatrix, cfg: kernel_model.KernelConfig,
          schedule: GlocalSchedule = GlocalSchedule(), seed: int = 0,
          score_fn: Callable[[np.ndarray], float] | None = None) -> GlocalResult:
    """Pre-trains and fine-tunes GLocal-K on the training matrix (``cfg.layer_sizes[0]`` must
    be its number of columns); ``score_fn`` maps a clipped (n_rows, n_cols) prediction matrix
    to its VALID RMSE, used to choose the epoch of the last stage run."""
    r, mask = dense_ratings(train_matrix)
    if cfg.layer_sizes[0] != r.shape[1]:
        raise ValueError(f"layer_sizes[0] = {cfg.layer_sizes[0]} but the matrix has "
                         f"{r.shape[1]} columns")
    clip = (float(train_matrix.csr.data.min()), float(train_matrix.csr.data.max()))
    fns = _stage_fns(cfg, jnp.asarray(r), jnp.asarray(mask))
    k_local, k_global = jax.random.split(jax.random.PRNGKey(seed))
    local = kernel_model.init(k_local, cfg)
    glob = kernel_model.init_global(k_global, r.shape[0], cfg.gk_size)
    history: list[dict] = []
    fine = schedule.fine_epochs > 0
    local, best = _run_stage("pre", local, schedule.pre_epochs, schedule.pre_iters, fns, r,
                             mask, clip, schedule, score_fn, not fine, history)
    stage = "pre"
    if fine:
        (local, glob), best = _run_stage("fine", (local, glob), schedule.fine_epochs,
                                         schedule.fine_iters, fns, r, mask, clip, schedule,
                                         score_fn, True, history)
        stage = "fine"
    valid, epoch, pred = best
    return GlocalResult(pred.astype(np.float32), stage, epoch, valid, history, local, glob)


def predict_targets(pred: np.ndarray, targets: predictions.EvalTargets,
                    base: baseline_lib.Baseline) -> np.ndarray:
    """The prediction of every evaluation rating (float64, in the triples' order): the model's
    (n_rows, n_cols) matrix where row and column are known to training, else the baseline's
    fallback clipped to the training range (as ``--unknown=baseline --clip_predictions``)."""
    out = np.clip(base.fallback(targets.rows, targets.cols), base.rating_min, base.rating_max)
    known = targets.known
    out[known] = pred[targets.rows[known], targets.cols[known]]
    return out
