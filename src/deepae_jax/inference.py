"""Using a trained run (``--mode=evaluate`` and ``--mode=infer``, the Python API, ensembles):
the run's settings completed from its ``config.json``, its model restored with its baseline,
and predictions or metrics of evaluation data."""
from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from deepae_jax.run import files
from deepae_jax import baseline as baseline_lib
from deepae_jax import devices
from deepae_jax.run import checkpoint as ckpt
from deepae_jax.evaluation import metrics as metrics_lib
from deepae_jax.training import backend, parallel
from deepae_jax.evaluation import predictions
from deepae_jax.config import Config
from deepae_jax.run.files import atomic_write
from deepae_jax.run.log import results
from deepae_jax.run.run_config import ignored_flags
from deepae_jax.training.run_data import (DEFAULTS, centre, evaluate_split, load_data,
    uses_predictions)

log = logging.getLogger("deepae_jax")

INHERITED = ("header", "columns", "delimiter", "column_order", "clip_predictions", "unknown")
"""Settings that inference takes from the run's config.json when left at their defaults."""


def inference_config(cfg: Config) -> Config:
    """``cfg`` completed by the trained run's config.json: the model's --major, the training
    data when not given, and the :data:`INHERITED` settings left at their defaults (how the
    data was read, how predictions were clipped and unknown ratings predicted)."""
    from deepae_jax.run.run_config import load_run_config
    folder = os.path.dirname(os.path.abspath(cfg.save_path)) if cfg.save_path else cfg.logdir
    try:
        recorded = load_run_config(folder) or {}
    except ValueError as e:
        log.warning("warning: %s", e)
        recorded = {}
    major = recorded.get("major", cfg.major)  # the model's layout, whatever --major says
    if major != cfg.major and cfg.major != DEFAULTS.major:
        log.warning("warning: --major=%s ignored: the model in %s was trained with --major=%s",
                    cfg.major, folder, major)
    return dataclasses.replace(
        cfg, major=major,
        path_to_train_data=cfg.path_to_train_data or recorded.get("path_to_train_data", ""),
        **{k: recorded[k] for k in INHERITED
           if k in recorded and getattr(cfg, k) == getattr(DEFAULTS, k)})


def restore_for_inference(cfg: Config):
    """(Data laid out on the trained model's ids, model config, params, baseline or None) for
    evaluate/infer: the best checkpoint when training kept one, else the newest that loads
    (``--save_path``: that file). Pass ``cfg`` through :func:`inference_config` first.

    The architecture and --major come from the checkpoint (checkpoint.restore); an
    architecture flag set to another value than the checkpoint's is ignored with a warning. A
    model trained on residuals of a baseline is evaluated with that baseline, whatever
    --baseline says.
    """
    restored = ckpt.restore(cfg.logdir, cfg.save_path)
    for line in ignored_flags(cfg, restored.spec, restored.path):
        log.warning("warning: %s", line)
    inference_cfg = dataclasses.replace(cfg, major=restored.major)
    if not inference_cfg.path_to_train_data:
        raise ValueError(f"--path_to_train_data: needed (the model's input vectors are the "
                         f"training ratings) and not recorded in {cfg.logdir}/config.json")
    data = load_data(inference_cfg, vocab=(restored.row_ids, restored.col_ids))
    base = baseline_lib.load(os.path.dirname(os.path.abspath(restored.path)))
    if restored.spec.extras.get("baseline", "none") != "none" and base is None:
        raise ckpt.CheckpointError(f"{restored.path}: the model learned residuals of a "
                                   f"--baseline={restored.spec.extras['baseline']} but "
                                   f"{files.BASELINE_FILE} is missing beside it")
    if base is not None or uses_predictions(cfg):
        data, base = centre(cfg, data, base)
    return data, restored.model_cfg, restored.params, base


def predict_ratings(cfg: Config) -> tuple[predictions.EvalTargets, np.ndarray]:
    """(every rating of ``--path_to_eval_data``, its prediction by the saved model, in the
    file's order): the model's baseline added back, ``--unknown`` and ``--clip_predictions``
    applied. Models of any layout predict the same ratings in the same order (ensembles)."""
    cfg = inference_config(cfg)
    data, model_cfg, params, base = restore_for_inference(cfg)
    if base is None:
        data, base = centre(dataclasses.replace(cfg, baseline="none"), data)
    pred = predictions.predict_all(params, model_cfg, data.inputs, base, data.targets,
                               cfg.eval_batch_size, cfg.clip_predictions, cfg.unknown)
    return data.targets, pred


def evaluate_saved(cfg: Config, par=None) -> tuple[predictions.Scores, dict]:
    """(scores, every metric as one dict) of a saved model on ``--path_to_eval_data``: rmse
    (None without scored ratings), eval_ratings, eval_ratings_dropped and the ``--metrics``."""
    cfg = inference_config(cfg)
    data, model_cfg, params, base = restore_for_inference(cfg)
    result = evaluate_split(params, model_cfg, cfg, data, par, base)
    extra = metrics_lib.evaluate_metrics(params, model_cfg, data, cfg, result, base)
    return result, {"rmse": result.rmse if result.count else None, "eval_ratings": result.count,
                    "eval_ratings_dropped": result.total - result.count, **extra}


def run_evaluate(cfg: Config) -> predictions.Scores:
    """RMSE (and ``--metrics``) of a saved model on ``--path_to_eval_data``, printed; the
    metrics also go to ``--metrics_path`` as one JSON object."""
    par = parallel.setup_from_config(cfg, train=False)
    result, values = evaluate_saved(cfg, par)
    if devices.is_main_process():
        dropped = values["eval_ratings_dropped"]
        if result.count == 0:
            results.info("evaluation RMSE n/a: no evaluation ratings of known rows in %s",
                         cfg.path_to_eval_data)
        else:
            results.info(f"evaluation RMSE {result.rmse:.6f} over {result.count} ratings"
                         + (f" ({dropped} not scored: unknown to training, --unknown=drop)"
                            if dropped else ""))
        extra = {k: v for k, v in values.items() if k not in
                 ("rmse", "eval_ratings", "eval_ratings_dropped")}
        if extra:
            results.info(metrics_lib.format_metrics(extra))
        if cfg.metrics_path:
            metrics_lib.write_metrics_json(cfg.metrics_path, values)
    return result


def run_infer(cfg: Config) -> int:
    """Writes ``user<TAB>item<TAB>prediction<TAB>actual`` (ORIGINAL ids) for every evaluation
    rating to ``--predictions_path``; returns the number of lines."""
    par = parallel.setup_from_config(cfg, train=False)
    cfg = inference_config(cfg)
    data, model_cfg, params, base = restore_for_inference(cfg)
    run = backend.predict_fn(cfg, par)
    chunks = []
    if base is not None:  # every rating asked for, in the file's order (--unknown=drop: known)
        t = data.targets
        pred = predictions.predict_all(params, model_cfg, data.inputs, base, t,
                                   cfg.eval_batch_size, cfg.clip_predictions, cfg.unknown, run)
        ok = np.isfinite(pred)
        chunks.append("".join(f"{u}\t{i}\t{p:.6f}\t{a:g}\n" for u, i, p, a in zip(
            t.triples.users[ok], t.triples.items[ok], pred[ok], t.actual[ok])))
    for rows, cols, pred, actual in (run(params, model_cfg, data.train.csr, data.eval.csr,
                                         data.eval.rows, cfg.eval_batch_size)
                                     if base is None else ()):
        r_ids, c_ids = data.train.row_ids[rows], data.train.col_ids[cols]
        users, items = (r_ids, c_ids) if data.train.major == "users" else (c_ids, r_ids)
        chunks.append("".join(f"{u}\t{i}\t{p:.6f}\t{a:g}\n"
                              for u, i, p, a in zip(users, items, pred, actual)))
    text = "".join(chunks)
    if not devices.is_main_process():
        return text.count("\n")
    atomic_write(cfg.predictions_path, lambda fh: fh.write(text.encode()))
    lines = text.count("\n")
    results.info("wrote %d predictions to %s", lines, cfg.predictions_path)
    return lines
