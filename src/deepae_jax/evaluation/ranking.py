"""Ranking metrics of top-K recommendations (the field's protocol), batched in jnp.

For each evaluated user, the candidates are all items the user did NOT rate in training; the
model's K best-scored candidates (``jax.lax.top_k``, ties to the smaller item index) are compared
with the user's RELEVANT held-out items: those rated at least ``--relevance_threshold`` (0, the
default: every held-out item). Users with held-out ratings but no relevant one are skipped (and
counted). With ``hits[r] = 1`` when the item at rank ``r`` (1-based) is relevant and
``R = #relevant``:

- ``precision@K`` = sum(hits) / K
- ``recall@K`` = sum(hits) / R
- ``hit@K`` = 1 if sum(hits) > 0 else 0
- ``ndcg@K`` = DCG / IDCG, DCG = sum_r hits[r] / log2(r + 1) (rank 1 has discount 1/log2(2) = 1),
  IDCG = sum_{r=1..min(K, R)} 1 / log2(r + 1)
- ``map@K`` = sum_r hits[r] * precision@r / min(K, R)
- ``coverage@K`` = distinct items in any evaluated user's top-K / number of items (one figure for
  the whole evaluation, not an average over users)

Every per-user metric is averaged over the evaluated users. A user with fewer than K candidates
gets only that many recommendations (the empty ranks are no hits; precision still divides by K).
"""
from __future__ import annotations

import functools
import re
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

POINTWISE = ("rmse", "mae")
RANKING = ("precision", "recall", "ndcg", "map", "hit", "coverage")
PER_USER = ("precision", "recall", "ndcg", "map", "hit")
_AT_K = re.compile(r"^([a-z]+)@([0-9]+)$")


def parse_metrics(text: str) -> tuple[str, ...]:
    """``"rmse,ndcg@10,recall@20"`` -> ("rmse", "ndcg@10", "recall@20") (order kept, duplicates
    dropped); raises ValueError naming the bad entry."""
    names: list[str] = []
    for raw in str(text).split(","):
        name = raw.strip().lower()
        if not name:
            continue
        match = _AT_K.match(name)
        if match:
            ok = match.group(1) in RANKING and int(match.group(2)) >= 1
        else:
            ok = name in POINTWISE
        if not ok:
            raise ValueError(f"{raw.strip()!r}: expected one of {', '.join(POINTWISE)} or "
                             f"NAME@K with NAME in {', '.join(RANKING)} and K >= 1, e.g. ndcg@10")
        if name not in names:
            names.append(name)
    return tuple(names)


def ranking_ks(names: Sequence[str]) -> tuple[int, ...]:
    """The sorted distinct K of the NAME@K entries."""
    return tuple(sorted({int(n.split("@")[1]) for n in names if "@" in n}))


@functools.partial(jax.jit, static_argnames=("k",))
def top_k_masked(scores: jax.Array, rated: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """(scores, item indices), each (batch, k), best first: the k best of ``scores`` (batch,
    n_items) among the items where ``rated`` is False; -inf scores where fewer remain."""
    return jax.lax.top_k(jnp.where(rated, -jnp.inf, scores), k)


def discounts(k: int) -> jax.Array:
    """1 / log2(r + 1) for ranks r = 1..k."""
    return 1.0 / jnp.log2(jnp.arange(2, k + 2, dtype=jnp.float32))


def per_user_at_k(hits: jax.Array, n_relevant: jax.Array, k: int) -> dict[str, jax.Array]:
    """precision, recall, hit, ndcg and map at ``k`` per user (batch,), from ``hits`` (batch,
    >= k) bool of ranks 1.. and the users' numbers of relevant items (> 0).

    Ranks past ``k`` are masked rather than sliced off: with slices, one batch of 256 x 1,680
    with K = 10 and 100 took 60 ms instead of 7 ms on XLA:CPU (benchmarks/ranking_speed.py)."""
    width = hits.shape[1]
    in_k = jnp.arange(width) < k
    h = (hits & in_k[None, :]).astype(jnp.float32)
    n_rel = n_relevant.astype(jnp.float32)
    n_hits = h.sum(axis=1)
    disc = discounts(width)
    ideal_len = jnp.minimum(n_rel, k)
    idcg = jnp.where(jnp.arange(width)[None, :] < ideal_len[:, None], disc[None, :], 0.0).sum(axis=1)
    precision_at_r = jnp.cumsum(h, axis=1) / jnp.arange(1, width + 1, dtype=jnp.float32)
    return {"precision": n_hits / k, "recall": n_hits / n_rel,
            "hit": (n_hits > 0).astype(jnp.float32),
            "ndcg": (h * disc[None, :]).sum(axis=1) / idcg,
            "map": (h * precision_at_r).sum(axis=1) / ideal_len}


@functools.partial(jax.jit, static_argnames=("ks",))
def batch_sums(scores: jax.Array, rated: jax.Array, relevant: jax.Array, weight: jax.Array,
               ks: tuple[int, ...]) -> tuple[dict[str, jax.Array], jax.Array]:
    """One batch of users: ({"precision@K": sum over the batch, ...} for every K in ``ks``,
    (len(ks), n_items) bool of the items in some user's top-K).

    ``scores`` (B, n_items) are the model's, ``rated`` (B, n_items) the training items (never
    recommended), ``relevant`` (B, n_items) the relevant held-out items; ``weight`` (B,) is 1 for
    the users that count (at least one relevant item) and 0 for skipped and padding rows.
    """
    top_scores, top_items = top_k_masked(scores, rated, min(max(ks), scores.shape[1]))
    real = jnp.isfinite(top_scores)
    hits = jnp.take_along_axis(relevant, top_items, axis=1) & real
    hits = jnp.pad(hits, ((0, 0), (0, max(ks) - hits.shape[1])))  # K > n_items: no more hits
    n_rel = jnp.maximum(relevant.sum(axis=1), 1)
    sums, shown = {}, []
    for k in ks:
        for name, values in per_user_at_k(hits, n_rel, k).items():
            sums[f"{name}@{k}"] = jnp.sum(values * weight)
        used = real & (jnp.arange(real.shape[1]) < k)[None, :] & (weight[:, None] > 0)
        seen = jnp.zeros(scores.shape[1], jnp.int32).at[top_items].add(used.astype(jnp.int32))
        shown.append(seen > 0)
    return sums, jnp.stack(shown)


def finish(sums: dict[str, float], shown: np.ndarray, n_users: int, ks: Sequence[int],
           names: Sequence[str]) -> dict[str, float]:
    """The requested NAME@K figures: per-user sums / n_users, coverage from ``shown``
    (len(ks), n_items)."""
    out = {}
    for name in names:
        if "@" not in name:
            continue
        metric, k = name.split("@")
        if metric == "coverage":
            out[name] = float(shown[list(ks).index(int(k))].mean())
        else:
            out[name] = float(sums[name]) / n_users if n_users else float("nan")
    return out
