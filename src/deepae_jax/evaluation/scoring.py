"""A user's scores over all items, for user-based and item-based models alike.

- ``--major=users`` (rows are users): a user's scores are f(the user's training vector), one
  forward pass per user, in fixed-size batches.
- ``--major=items`` (rows are items, columns users): a user's scores over all items are the
  user's COLUMN of the reconstructed item matrix. :func:`item_major_scores` reconstructs every
  item row (in batches) and transposes: an (n_users, n_items) float32 array, i.e.
  n_users x n_items x 4 bytes (6.3 MB for MovieLens-100K, 0.5 GB for MovieLens-20M; too much for
  Netflix-size data, 480k x 17.8k = 34 GB).

Both give the same interface: :func:`user_score_batches` yields (dense user indices, scores,
training-rated mask) per batch, so ranking and top-N code do not depend on the major.
"""
from __future__ import annotations

import functools
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from deepae_jax.core import model
from deepae_jax.baseline import Baseline, output_offsets
from deepae_jax.data.batching import bucket_length, dense_rows
from deepae_jax.evaluation.ranking import top_k_masked


@functools.partial(jax.jit, static_argnames=("model_cfg",))
def reconstruct(params: model.Params, x: jax.Array, model_cfg: model.ModelConfig) -> jax.Array:
    """f(x) in evaluation mode (batch, n_inputs)."""
    return model.apply(params, x, model_cfg, train=False)


def padded_chunks(rows: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """(chunk of ``rows`` padded to batch_size with its first row, number of real rows)."""
    rows = np.asarray(rows, np.int64)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        real = len(chunk)
        yield np.concatenate([chunk, np.full(batch_size - real, chunk[0])]), real


def rating_scores(params: model.Params, x: np.ndarray, model_cfg: model.ModelConfig,
                  base: Baseline | None = None, row_index: np.ndarray | None = None
                  ) -> jax.Array:
    """Predicted ratings (batch, n) of model inputs ``x`` (batch, n): f(x), plus the run's
    baseline (:mod:`deepae_jax.baseline`) when the model learned residuals; ``row_index``: the
    training row of each row of x (-1: unknown to training), for the row biases."""
    out = reconstruct(params, x, model_cfg)
    offsets = output_offsets(base, row_index if row_index is not None
                             else np.full(x.shape[0], -1))
    if offsets is None:
        return out
    scale, row, col = offsets
    return jnp.asarray(row)[:, None] + jnp.asarray(col)[None, :] + scale * out


def item_major_scores(params: model.Params, model_cfg: model.ModelConfig,
                      train_csr: sp.csr_matrix, batch_size: int = 256,
                      base: Baseline | None = None) -> jax.Array:
    """(n_users, n_items) scores of an item-based model: its reconstruction of every item row of
    ``train_csr`` (items x users; the model's input), transposed."""
    n_items = train_csr.shape[0]
    if n_items == 0:
        return jnp.zeros((train_csr.shape[1], 0), jnp.float32)
    outs = [rating_scores(params, dense_rows(train_csr, chunk), model_cfg, base, chunk)[:real]
            for chunk, real in padded_chunks(np.arange(n_items), batch_size)]
    return jnp.concatenate(outs).T


def users_by_items(train_csr: sp.csr_matrix, major: str) -> sp.csr_matrix:
    """The training ratings as users x items, whatever the model's major."""
    return train_csr if major == "users" else train_csr.T.tocsr()


def user_score_batches(params: model.Params, model_cfg: model.ModelConfig,
                       train_csr: sp.csr_matrix, major: str, users: np.ndarray,
                       batch_size: int = 256, full: jax.Array | None = None,
                       base: Baseline | None = None
                       ) -> Iterator[tuple[np.ndarray, jax.Array, np.ndarray, int]]:
    """Yields (padded chunk of dense user indices, scores (batch_size, n_items) on the device,
    rated (batch_size, n_items) bool = the user's training items, number of real rows).

    ``train_csr`` is the model's input in its layout (rows = ``major``; with a baseline: the
    encoded residuals, :func:`baseline.model_input`); ``users`` are dense user indices (rows for
    ``major="users"``, columns for ``major="items"``). ``full``: a precomputed
    :func:`item_major_scores` (item-based models only). ``base``: the run's baseline, added back
    to the scores.
    """
    if major not in ("users", "items"):
        raise ValueError(f"major must be 'users' or 'items', got {major!r}")
    by_user = users_by_items(train_csr, major)
    if major == "items" and full is None:
        full = item_major_scores(params, model_cfg, train_csr, batch_size, base)
    for chunk, real in padded_chunks(users, batch_size):
        x = dense_rows(by_user, chunk)
        scores = (rating_scores(params, x, model_cfg, base, chunk) if major == "users"
                  else full[chunk])
        yield chunk, scores, x != 0, real


def user_scores(params: model.Params, model_cfg: model.ModelConfig, train_csr: sp.csr_matrix,
                major: str, users: np.ndarray, batch_size: int = 256,
                full: jax.Array | None = None, base: Baseline | None = None) -> np.ndarray:
    """(len(users), n_items) float32 scores of the given dense users (see
    :func:`user_score_batches`), on the host."""
    n_items = train_csr.shape[1] if major == "users" else train_csr.shape[0]
    parts = [np.asarray(s)[:real] for _, s, _, real in user_score_batches(
        params, model_cfg, train_csr, major, users, batch_size, full, base)]
    return np.concatenate(parts) if parts else np.zeros((0, n_items), np.float32)


def top_k_unrated(params: model.Params, model_cfg: model.ModelConfig, train_csr: sp.csr_matrix,
                  major: str, users: np.ndarray, k: int, batch_size: int = 256,
                  full: jax.Array | None = None, base: Baseline | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(item indices, scores), each (len(users), k), best first: the users' k best items among
    those they did not rate in training (-inf scores where fewer remain). ``k`` <= n_items."""
    n_items = train_csr.shape[1] if major == "users" else train_csr.shape[0]
    static_k = min(n_items, bucket_length(k))  # few compiled shapes for many k
    idx, scores = [np.zeros((0, k), np.int64)], [np.zeros((0, k), np.float32)]
    for _, s, rated, real in user_score_batches(params, model_cfg, train_csr, major, users,
                                                batch_size, full, base):
        top_s, top_i = top_k_masked(s, jnp.asarray(rated), static_k)
        idx.append(np.asarray(top_i)[:real, :k])
        scores.append(np.asarray(top_s)[:real, :k])
    return np.concatenate(idx), np.concatenate(scores)


def clip_finite(scores, rating_range: tuple[float, float] | None):
    """``scores`` clipped to ``rating_range`` (None: unchanged), as ``--clip_predictions``
    clips predictions; -inf (no item left to recommend) stays -inf."""
    if rating_range is None:
        return scores
    scores = np.asarray(scores)
    return np.where(np.isfinite(scores), np.clip(scores, *rating_range), scores)
