"""``--metrics``: error and ranking metrics of a model on the evaluation data.

Error metrics follow PAPER.md's protocol (input = a row's TRAINING vector, targets = its held-out
ratings): ``rmse`` and ``mae`` over all held-out ratings. Ranking metrics (``NAME@K``, defined
in :mod:`deepae_jax.evaluation.ranking`) rank, for every user with held-out ratings, the items the user did
not rate in training, by the model's scores (:mod:`deepae_jax.evaluation.scoring`, both majors). The
result also says how many users were ranked (``ranking_users``) and how many were skipped for
having no relevant held-out item (``ranking_users_skipped``).
"""
from __future__ import annotations

import json
import math

import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from deepae_jax.core import model
from deepae_jax.evaluation import ranking, scoring
from deepae_jax.baseline import Baseline
from deepae_jax.evaluation.protocol import evaluate
from deepae_jax.run.files import atomic_write_text


def pointwise(params: model.Params, model_cfg: model.ModelConfig, train_csr: sp.csr_matrix,
              eval_csr: sp.csr_matrix, rows: np.ndarray, batch_size: int = 256
              ) -> dict[str, float]:
    """{"rmse", "mae", "eval_ratings"} over every held-out rating (PAPER.md's protocol)."""
    s = evaluate(params, model_cfg, train_csr, eval_csr, rows, batch_size)
    return {"rmse": s.rmse, "mae": s.mae, "eval_ratings": s.count}


def ranking_metrics(params: model.Params, model_cfg: model.ModelConfig,
                    train_csr: sp.csr_matrix, eval_csr: sp.csr_matrix, major: str,
                    names: tuple[str, ...], relevance_threshold: float = 0.0,
                    batch_size: int = 256, base: Baseline | None = None) -> dict[str, float]:
    """The NAME@K entries of ``names`` averaged over the users with a relevant held-out item,
    plus ``ranking_users`` and ``ranking_users_skipped``.

    ``train_csr`` (the model's input) and ``eval_csr`` are in the model's layout (rows =
    ``major``). A held-out item is relevant when its rating is >= ``relevance_threshold`` (0:
    every held-out item). ``base``: the run's baseline, added back to the scores.
    """
    ks = ranking.ranking_ks(names)
    if not ks:
        return {}
    held = scoring.users_by_items(eval_csr, major)
    relevant_csr = held.copy()
    relevant_csr.data = (relevant_csr.data >= relevance_threshold
                         if relevance_threshold != 0 else np.ones_like(relevant_csr.data))
    relevant_csr.eliminate_zeros()
    n_rel = np.diff(relevant_csr.indptr)
    with_held = np.flatnonzero(np.diff(held.indptr) > 0)
    users = with_held[n_rel[with_held] > 0]
    n_items = held.shape[1]
    sums = {f"{m}@{k}": 0.0 for m in ranking.PER_USER for k in ks}
    shown = np.zeros((len(ks), n_items), bool)
    pending = []
    for chunk, scores, rated, real in scoring.user_score_batches(
            params, model_cfg, train_csr, major, users, batch_size, base=base):
        relevant = relevant_csr[chunk].toarray() != 0
        weight = (np.arange(len(chunk)) < real).astype(np.float32)
        pending.append(ranking.batch_sums(scores, jnp.asarray(rated), jnp.asarray(relevant),
                                          jnp.asarray(weight), ks))
    for batch_sums, batch_shown in pending:  # fetch after all batches are dispatched
        for key, value in batch_sums.items():
            sums[key] += float(value)
        shown |= np.asarray(batch_shown)
    out = ranking.finish(sums, shown, len(users), ks, names)
    out.update(ranking_users=int(len(users)), ranking_users_skipped=int(len(with_held) - len(users)))
    return out


def evaluate_metrics(params: model.Params, model_cfg: model.ModelConfig, data, cfg,
                     evaluation=None, base: Baseline | None = None) -> dict[str, float]:
    """Every ``--metrics`` entry on ``data.eval`` (a runner.Data), keyed by name (e.g.
    ``ndcg@10``), plus ranking_users / ranking_users_skipped when a ranking metric is asked for.

    ``evaluation``: the scores already computed by the caller (a Scores or
    predict.Scores; reused for ``rmse``, and for ``mae`` when it has one). ``base``: the run's
    baseline (then ``data.inputs`` is the model's input and the scores add it back)."""
    names = ranking.parse_metrics(cfg.metrics)
    if data.eval is None or not names:
        return {}
    out: dict[str, float] = {}
    known_mae = math.isfinite(getattr(evaluation, "mae", math.nan))
    if ("mae" in names and not known_mae) or ("rmse" in names and evaluation is None):
        point = pointwise(params, model_cfg, data.train.csr, data.eval.csr, data.eval.rows,
                          cfg.eval_batch_size)
        out.update({n: point[n] for n in ("rmse", "mae") if n in names})
    else:
        out.update({n: getattr(evaluation, n) for n in ("rmse", "mae") if n in names})
    inputs = data.inputs if getattr(data, "inputs", None) is not None else data.train.csr
    out.update(ranking_metrics(params, model_cfg, inputs, data.eval.csr, cfg.major,
                               names, cfg.relevance_threshold, cfg.eval_batch_size, base))
    return out


def format_metrics(values: dict[str, float]) -> str:
    """``mae 0.7312  ndcg@10 0.0412  (ranked 940 users, skipped 3)``."""
    shown = [f"{k} {v:.4f}" for k, v in values.items() if not k.startswith("ranking_users")]
    if "ranking_users" in values:
        shown.append(f"(ranked {values['ranking_users']} users, skipped "
                     f"{values['ranking_users_skipped']})")
    return "  ".join(shown)


def write_metrics_json(path: str, values: dict) -> None:
    """``values`` as one JSON object (atomically; NaN written as null)."""
    clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in values.items()}
    atomic_write_text(path, json.dumps(clean, indent=1, sort_keys=False) + "\n")
