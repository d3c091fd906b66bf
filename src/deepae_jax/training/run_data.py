"""The data of a training run: the training matrix (re-indexed to a trained model's ids when
given), the evaluation ratings aligned to it, and their residuals of a ``--baseline``."""
from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import scipy.sparse as sp

from deepae_jax import baseline as baseline_lib
from deepae_jax.config import Config
from deepae_jax.data import ratings
from deepae_jax.evaluation import predictions

log = logging.getLogger("deepae_jax")


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
