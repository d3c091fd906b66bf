"""A search on validation under a time budget (``--time_budget``, beyond the paper).

Trial 0 trains the settings as given; every further trial draws, at random (seeded by
``--seed``), one value per dimension of :data:`NEIGHBOURS` around them: the hidden widths
halved or doubled, the learning rate and the L2 on the weights / 3 .. x 3, the dropouts -0.2 ..
+0.2. Trials train in ``LOGDIR/search/trial_NN`` without the test data and without a refit; a
new trial starts only while the time spent plus the mean trial's time fits in the budget. The
trial with the lowest validation RMSE of its final predictor (``--final_predictor``) wins, and
its settings are trained again in ``--logdir`` as the run proper: best epoch, final predictor,
test score and ``--refit`` as they would be without a search (the same seed: the same model as
its trial). ``search.json`` in ``--logdir`` lists every trial.

Why a plain random search and not a model-based one (Optuna's TPE, ...): a budget of minutes
holds 5-20 trials, too few for a model of the response surface to pay off, and random search
spends them well over a few dimensions that matter unequally (Bergstra & Bengio, JMLR 2012); it
also needs no new dependency.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time

import jax
import numpy as np

from deepae_jax.config import Config
from deepae_jax.core.step import TrainingDivergedError
from deepae_jax.run import files
from deepae_jax.run.log import results
from deepae_jax.run.logdir import check_logdir
from deepae_jax.training import trainer

log = logging.getLogger("deepae_jax")

SEARCH_DIR = "search"
SEARCH_FILE = "search.json"
MAX_TRIALS = 100


def _widths(cfg: Config, factor: float) -> tuple[int, ...]:
    return tuple(max(1, int(round(h * factor))) for h in cfg.hidden_layers)


def _dropout(p: float, delta: float) -> float:
    return float(min(0.9, max(0.0, round(p + delta, 3))))


def _l2(cfg: Config, factor: float) -> float:
    return cfg.l2_weights * factor if cfg.l2_weights > 0 else (0.0 if factor <= 1 else 1e-3)


NEIGHBOURS = {  # dimension: the settings a trial may take, from the given ones
    "hidden_layers": lambda cfg: [_widths(cfg, f) for f in (0.5, 1.0, 2.0)],
    "lr": lambda cfg: [cfg.lr * f for f in (1 / 3, 1.0, 3.0)],
    "l2_weights": lambda cfg: [_l2(cfg, f) for f in (1 / 3, 1.0, 3.0)],
    "drop_prob": lambda cfg: [_dropout(cfg.drop_prob, d) for d in (-0.2, 0.0, 0.2)],
    "input_drop_prob": lambda cfg: [_dropout(cfg.input_drop_prob, d) for d in (-0.2, 0.0, 0.2)],
}


def trial_settings(cfg: Config, n: int) -> list[dict]:
    """The settings of trials 0..n-1 (0: as given; no two alike), drawn with ``cfg.seed``."""
    rng = np.random.default_rng([cfg.seed, 20211])
    options = {k: list(dict.fromkeys(f(cfg))) for k, f in NEIGHBOURS.items()}
    given = {k: getattr(cfg, k) for k in NEIGHBOURS}
    trials, seen = [given], {json.dumps(given, sort_keys=True, default=list)}
    total = math.prod(len(v) for v in options.values())
    while len(trials) < min(n, total):
        draw = {k: v[rng.integers(len(v))] for k, v in options.items()}
        key = json.dumps(draw, sort_keys=True, default=list)
        if key not in seen:
            seen.add(key)
            trials.append(draw)
    return trials


def _trial_config(cfg: Config, index: int, settings: dict) -> Config:
    """A trial: the settings, no test data, no refit, selection on validation kept."""
    return dataclasses.replace(
        cfg, **settings, path_to_test_data="", refit=False, time_budget=0.0, resume=False,
        overwrite=True, make_synthetic_data=False,
        early_stopping_patience=cfg.early_stopping_patience or cfg.num_epochs,
        logdir=os.path.join(cfg.logdir, SEARCH_DIR, f"trial_{index:02d}"))


def _valid_score(summary: dict) -> float:
    return float(summary.get("final_predictor_valid_rmse", summary.get("valid_rmse", math.nan)))


def run_trials(cfg: Config) -> list[dict]:
    """Trains trials until the budget is spent; one record per trial (settings, validation
    RMSE, best epoch, seconds, error)."""
    started, records = time.monotonic(), []
    for index, settings in enumerate(trial_settings(cfg, MAX_TRIALS)):
        spent = time.monotonic() - started
        mean = spent / len(records) if records else 0.0
        if records and spent + mean > cfg.time_budget:
            break
        t0 = time.monotonic()
        record = {"trial": index, "settings": {k: list(v) if isinstance(v, tuple) else v
                                               for k, v in settings.items()}}
        try:
            last = trainer.train_and_evaluate(_trial_config(cfg, index, settings))
            summary = last.get("summary") or {}
            record.update(valid_rmse=_valid_score(summary), best_epoch=summary.get("best_epoch"))
        except TrainingDivergedError as e:
            record.update(valid_rmse=math.nan, error=str(e))
        record["seconds"] = time.monotonic() - t0
        records.append(record)
        results.info("search trial %d: validation RMSE %.4f (%s) in %.0f s", index,
                     record["valid_rmse"], ", ".join(f"{k}={v}" for k, v in
                                                     record["settings"].items()),
                     record["seconds"])
    return records


def train_with_search(cfg: Config) -> dict:
    """``--time_budget`` seconds of trials on validation, then the winner trained as the run
    (module docstring); returns the run's last metrics."""
    if cfg.resume:
        raise ValueError("--time_budget: a search starts afresh; it cannot --resume")
    if jax.process_count() > 1:
        raise ValueError("--time_budget: the search runs in one process only")
    check_logdir(cfg.logdir, False, cfg.overwrite)  # refused before any trial is trained
    records = run_trials(cfg)
    scored = [r for r in records if np.isfinite(r["valid_rmse"])]
    if not scored:
        raise TrainingDivergedError("--time_budget: every trial diverged; lower --lr")
    best = min(scored, key=lambda r: r["valid_rmse"])
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in best["settings"].items()}
    results.info("search: trial %d of %d wins (validation RMSE %.4f; trial 0, the settings as "
                 "given: %.4f); training it as the run", best["trial"], len(records),
                 best["valid_rmse"], records[0]["valid_rmse"])
    files.atomic_write_text(os.path.join(cfg.logdir, SEARCH_FILE), json.dumps(
        {"time_budget_s": cfg.time_budget, "winner": best["trial"], "trials": records},
        indent=2))  # before the winner's run: the trials stay on record if it fails
    return trainer.train_and_evaluate(dataclasses.replace(cfg, **settings, time_budget=0.0))


def train(cfg: Config) -> dict:
    """Trains the run ``cfg`` describes (the CLI's, the API's and the experiments' one way):
    the search first with ``--time_budget``; returns the run's last metrics."""
    return train_with_search(cfg) if cfg.time_budget else trainer.train_and_evaluate(cfg)
