"""The data of a run as its settings say: the training matrix, the evaluation ratings aligned to
it, the baseline the model learns the residuals of, the scores on the evaluation data, and what a
checkpoint records about them. Used by training (:mod:`deepae_jax.training.trainer`) and by every
use of a trained model (:mod:`deepae_jax.inference`, :mod:`deepae_jax.recommend`)."""
from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import scipy.sparse as sp

from deepae_jax import baseline as baseline_lib
from deepae_jax.config import Config, defaults
from deepae_jax.data import ratings
from deepae_jax.evaluation import predictions
from deepae_jax.run import checkpoint as ckpt
from deepae_jax.training import backend

log = logging.getLogger("deepae_jax")
DEFAULTS = defaults()


@dataclasses.dataclass(frozen=True)
class Data:
    """The training matrix and, when given, the evaluation ratings aligned to it (``targets``:
    every evaluation rating, known to training or not). ``train`` is the model's input: with a
    baseline (:func:`centre`) its ratings are residuals."""

    train: ratings.RatingMatrix
    eval: ratings.EvalSplit | None
    targets: predictions.EvalTargets | None = None
    inputs: sp.csr_matrix | None = None  # the model's input at evaluation (default: train.csr)


def load_data(cfg: Config, vocab: tuple[np.ndarray, np.ndarray] | None = None) -> Data:
    """Loads ``--path_to_train_data`` (and ``--path_to_eval_data``) as PAPER.md prescribes.

    With ``vocab`` (a trained model's row and column ids) the training matrix is re-indexed to
    those ids, so that a model is always fed vectors in the layout it was trained on.
    """
    t0 = time.time()
    train = ratings.load_matrix(cfg.path_to_train_data, cfg.major, **table_options(cfg))
    if vocab is not None:
        train = reindex(train, *vocab)
    log.info("training data %s: %d %s x %d columns, %d ratings (%.2f s)",
             cfg.path_to_train_data, train.shape[0], cfg.major, train.shape[1], train.nnz,
             time.time() - t0)
    split = targets = None
    if cfg.path_to_eval_data:
        targets = load_targets(cfg, train, cfg.path_to_eval_data)
        split = targets.split
        if split.nnz == 0:
            log.warning("warning: %s: no evaluation ratings of known rows (every rating's "
                        "user or item is unknown to the training data)", cfg.path_to_eval_data)
        unknown = split.dropped_unknown_rows + split.dropped_unknown_cols
        log.info("evaluation data %s: %d ratings of %d %s known to training%s",
                 cfg.path_to_eval_data, split.nnz, len(split.rows), cfg.major, "" if not unknown
                 else f"; {unknown} of unknown {cfg.major} or columns are " + (
                     "predicted by the baseline (--unknown=baseline)" if cfg.unknown ==
                     "baseline" else "not scored (--unknown=drop, the paper's protocol)"))
    return Data(train, split, targets)


def load_targets(cfg: Config, train: ratings.RatingMatrix, path: str) -> predictions.EvalTargets:
    """The ratings of ``path`` aligned to the training matrix (known or not)."""
    triples = ratings.load_triples(path, **table_options(cfg))
    return predictions.align_targets(train, triples, source=path)


def centre(cfg: Config, data: Data, fitted: baseline_lib.Baseline | None = None
           ) -> tuple[Data, baseline_lib.Baseline]:
    """(data whose training ratings are residuals of ``--baseline``, the baseline): the given
    ``fitted`` one, or one fitted on the training ratings (lambdas chosen on the evaluation
    data when -1)."""
    regs = baseline_lib.row_col_regs(cfg.major, cfg.baseline_reg_user, cfg.baseline_reg_item)
    base = fitted or baseline_lib.fit(data.train.csr, cfg.baseline, *regs,
                                      eval_csr=data.eval.csr if data.eval else None,
                                      scale=cfg.baseline_scale,
                                      shifted_input=cfg.baseline_input == "shifted")
    train = dataclasses.replace(data.train, csr=baseline_lib.residual_csr(base, data.train.csr))
    return dataclasses.replace(data, train=train,
                               inputs=baseline_lib.input_csr(base, train.csr)), base


def table_options(cfg: Config) -> dict:
    """The reading settings of ``cfg`` as keywords of load_matrix / load_triples."""
    return dataclasses.asdict(ratings.TableFormat.from_config(cfg))


def reindex(matrix: ratings.RatingMatrix, row_ids: np.ndarray, col_ids: np.ndarray
            ) -> ratings.RatingMatrix:
    """The same ratings laid out on the given id maps; ratings of other ids are dropped."""
    if np.array_equal(matrix.row_ids, row_ids) and np.array_equal(matrix.col_ids, col_ids):
        return matrix
    template = ratings.RatingMatrix(
        sp.csr_matrix((len(row_ids), len(col_ids)), dtype=np.float32), row_ids, col_ids,
        matrix.major)
    split = ratings.align_eval(template, matrix.to_triples(), source="training data")
    return dataclasses.replace(template, csr=split.csr)


def run_meta(cfg: Config, data: Data, extras: dict | None = None) -> dict:
    """What a checkpoint records about the run: the :class:`~deepae_jax.run.checkpoint.ModelSpec`
    (model, major, training rating range, ``extras``), the optimiser and the data shape."""
    values = data.train.csr.data
    spec = ckpt.ModelSpec(cfg.model_config(data.train.shape[1]), cfg.major,
                          (float(values.min()), float(values.max())) if values.size else None,
                          dict(extras or {}))
    return {**spec.to_meta(), "optimizer": cfg.optimizer,
            "weight_decay_on": cfg.weight_decay > 0, "n_rows": data.train.shape[0]}


def evaluate_split(params, model_cfg, cfg: Config, data: Data, par=None,
                    base: baseline_lib.Baseline | None = None) -> predictions.Scores | None:
    """Scores on the evaluation data: the paper's (known ratings, no baseline) or, with
    ``base``, every rating per ``--unknown``, the baseline added back, ``--clip_predictions``."""
    if data.eval is None:
        return None
    if base is None:
        run = backend.evaluate_fn(cfg, par)  # par: all devices (parallel.DataParallel)
        r = run(params, model_cfg, data.train.csr, data.eval.csr, data.eval.rows,
                cfg.eval_batch_size)
        return dataclasses.replace(r, total=len(data.targets.actual))
    inputs = data.inputs if data.inputs is not None else data.train.csr
    pred = predictions.predict_all(params, model_cfg, inputs, base, data.targets,
                               cfg.eval_batch_size, cfg.clip_predictions, cfg.unknown,
                               backend.predict_fn(cfg, par))
    return predictions.score(pred, data.targets.actual)


def uses_predictions(cfg: Config) -> bool:
    """Whether evaluation goes through :mod:`deepae_jax.evaluation.predictions` (any option beyond the paper's
    protocol); otherwise the paper's ``evaluate`` path, unchanged."""
    return (cfg.baseline != "none" or cfg.unknown != "drop" or cfg.clip_predictions
            or bool(cfg.path_to_test_data) or cfg.selection_metric != "rmse")
