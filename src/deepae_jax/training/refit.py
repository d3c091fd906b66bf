"""Refit on TRAIN + VALID (``--refit``, beyond the paper): the choices a run made on validation,
retrained with the validation ratings added, then scored once on the test data.

Validation chooses the number of epochs (the best epoch), the bias baseline's lambdas and the
final predictor (:mod:`deepae_jax.evaluation.blend`); none of them is chosen again on the larger
set. The refit run is a complete run folder, ``LOGDIR/refit``: its training ratings
(``train_valid.npz``: the training ratings, then the validation ratings), checkpoint, baseline
with the final predictor's gains folded in (their counts from the refit's own training data),
config.json and report. Point evaluate, infer, recommend, serve or export at it to use it.
When validation chose the bias baseline alone, nothing is refit: the answer stays the baseline
the run printed, the floor exactly (:func:`kept_as_is`).
:func:`deepae_jax.training.trainer.train_and_evaluate` trains it after the selected run.
"""
from __future__ import annotations

import dataclasses
import logging
import os

from deepae_jax import baseline as baseline_lib
from deepae_jax.config import Config
from deepae_jax.data import ratings
from deepae_jax.evaluation import blend, predictions
from deepae_jax.run import checkpoint as ckpt
from deepae_jax.run import files
from deepae_jax.training.run_data import Data, centre, evaluate_split, load_data

log = logging.getLogger("deepae_jax")


def refit_folder(logdir: str) -> str:
    """Where the refit run of the run in ``logdir`` lives."""
    return os.path.join(logdir, files.REFIT_DIR)


def write_train_valid(cfg: Config, train: ratings.RatingMatrix, valid: ratings.Triples) -> str:
    """Writes the training ratings followed by the validation ones (as the run read them) as the
    refit's training matrix (``.npz``, original ids kept); returns its path. A (user, item) pair
    in both keeps its validation rating (logged)."""
    both = ratings.concat_triples([train.to_triples(), valid])
    matrix = ratings.build_matrix(both, cfg.major, duplicates="last", source="TRAIN + VALID")
    if len(both) > matrix.nnz:
        log.warning("warning: --refit: %d (user, item) pairs are rated in both %s and %s; the "
                    "refit keeps their validation rating", len(both) - matrix.nnz,
                    cfg.path_to_train_data, cfg.path_to_eval_data)
    folder = refit_folder(cfg.logdir)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, files.TRAIN_VALID_FILE)
    matrix.save(path)
    return path


def refit_config(cfg: Config, summary: dict, base: baseline_lib.Baseline | None,
                 train_path: str) -> Config:
    """The run's settings for the refit: ``train_path`` (TRAIN + VALID), the best epoch count,
    the lambdas the baseline chose on validation, no validation, selection or test data."""
    user, item = (baseline_lib.row_col_regs(cfg.major, base.reg_row, base.reg_col) if base
                  else (cfg.baseline_reg_user, cfg.baseline_reg_item))
    return dataclasses.replace(
        cfg, path_to_train_data=train_path, path_to_eval_data="", path_to_test_data="",
        make_synthetic_data=False, num_epochs=int(summary["best_epoch"]),
        early_stopping_patience=0, final_predictor="model", baseline_reg_user=user,
        baseline_reg_item=item, refit=False, resume=False, overwrite=True,
        logdir=refit_folder(cfg.logdir), metrics="")


def keep_final_predictor(refit_logdir: str, summary: dict) -> baseline_lib.Baseline | None:
    """Folds the final predictor chosen on validation (``summary``'s) into the refit run's
    baseline, the count gains from the refit's training data; returns that baseline."""
    base = baseline_lib.load(refit_logdir)
    chosen = [c for c in summary.get("final_predictor_candidates", [])
              if c["name"] == summary.get("final_predictor")]
    if base is None or not chosen:
        return base
    train = ratings.RatingMatrix.load(os.path.join(refit_logdir, files.TRAIN_VALID_FILE))
    base = blend.apply(base, blend.Candidate(**chosen[0]), *blend.training_counts(train.csr))
    baseline_lib.save(refit_logdir, base)
    return base


def score_test(cfg: Config, refit_cfg: Config, base: baseline_lib.Baseline | None
               ) -> predictions.Scores:
    """The refit model's scores on every rating of ``cfg.path_to_test_data``, predicted as the
    selected run predicts (``--unknown``, ``--clip_predictions``, the final predictor)."""
    restored = ckpt.restore(refit_cfg.logdir)
    scoring = dataclasses.replace(refit_cfg, path_to_eval_data=cfg.path_to_test_data)
    data = load_data(scoring, vocab=(restored.row_ids, restored.col_ids))
    if base is not None:
        data, _ = centre(scoring, data, base.unblended())
    else:
        data = Data(data.train, data.eval, data.targets)
    model_cfg = refit_cfg.model_config(data.train.shape[1])
    return evaluate_split(restored.params, model_cfg, scoring, data, None, base)


def record(refit_cfg: Config, scores: predictions.Scores | None,
           base: baseline_lib.Baseline | None) -> dict:
    """What summary.json says of the refit: where it is, its epochs and its TEST scores."""
    out: dict = {"refit_logdir": refit_cfg.logdir, "refit_epochs": refit_cfg.num_epochs}
    if scores is not None:
        out.update(refit_test_rmse=scores.rmse, refit_test_mae=scores.mae,
                   refit_test_count=scores.count)
    if base is not None:
        out["refit_baseline_lambdas"] = [base.reg_row, base.reg_col]  # (rows, columns)
    return out


def kept_as_is(cfg: Config, summary: dict) -> dict | None:
    """What summary.json says when there is nothing to refit (else None): validation chose the
    bias baseline alone as the final predictor, so the answer stays the baseline the run printed
    (fitted on the training ratings; the floor, exactly), not one refit on more ratings."""
    if summary.get("final_predictor") != "baseline":
        return None
    out = {"refit_logdir": cfg.logdir, "refit_epochs": 0,
           "refit_skipped": "the final predictor is the run's bias baseline: kept as it is"}
    if "test_rmse" in summary:
        out.update(refit_test_rmse=summary["test_rmse"], refit_test_mae=summary["test_mae"],
                   refit_test_count=summary["test_count"])
    return out


def check_refit(cfg: Config, process_count: int) -> None:
    """Refuses ``--refit`` where it cannot run (before anything is written)."""
    if cfg.refit and process_count > 1:
        raise ValueError("--refit: runs in one process only (the TRAIN + VALID matrix is "
                         "written into --logdir); refit a multi-host run's choices by training "
                         "again on the two files with --num_epochs set to its best epoch")

