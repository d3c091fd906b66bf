"""The S1 benchmark data: a seeded synthetic rating set with Netflix Full's shape.

Users rate a heavy-tailed (log-normal, median about half the mean, as in Netflix) number of items
chosen by Zipf-like popularity; integer ratings 1..5 from a low-rank model with biases and noise.
An evaluation set holds a few ratings of ``eval_users`` of the users (removed from training).
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from deepae_jax.data import ratings


def generate(users: int, items: int, mean_ratings: float, eval_users: int, seed: int = 0,
             rank: int = 8) -> tuple[ratings.Triples, ratings.Triples]:
    """(training triples, evaluation triples); ids start at 1; vectorised (seconds at S1 size)."""
    rng = np.random.default_rng(seed)
    sigma = 1.25  # Netflix Full: mean ~209, median ~96 ratings per user
    mu = np.log(mean_ratings) - sigma ** 2 / 2
    counts = np.clip(rng.lognormal(mu, sigma, users).astype(np.int64), 3, max(3, items // 2))
    pop = 1.0 / np.arange(1, items + 1) ** 0.8
    pop = pop[rng.permutation(items)]
    cdf = np.cumsum(pop) / pop.sum()
    draws = (counts * 1.4 + 16).astype(np.int64)
    u = np.repeat(np.arange(users), draws)
    it = np.minimum(np.searchsorted(cdf, rng.random(u.size)), items - 1)
    key = np.sort(u * items + it)  # distinct (user, item) pairs, sorted: np.unique's result
    key = key[np.concatenate([[True], key[1:] != key[:-1]])]  # (its hash path is far slower)
    u, it = key // items, key % items
    order = np.lexsort((rng.random(u.size), u))  # random priority within each user
    u, it = u[order], it[order]
    first = np.searchsorted(u, np.arange(users))
    rank_in_user = np.arange(u.size) - first[u]
    keep = rank_in_user < counts[u]
    u, it = u[keep], it[keep]
    o = np.argsort(u * items + it)  # by (user, item): the keys are distinct, so = lexsort
    u, it = u[o], it[o]
    pu = rng.normal(0, 1, (users, rank)) / np.sqrt(rank)
    qi = rng.normal(0, 1, (items, rank))
    bu, bi = rng.normal(0, 0.4, users), rng.normal(0, 0.5, items)
    score = 3.6 + bu[u] + bi[it] + np.einsum("ij,ij->i", pu[u], qi[it]) + rng.normal(0, 0.5, u.size)
    r = np.clip(np.rint(score), 1, 5).astype(np.float32)
    # evaluation: a few ratings (1 + Poisson(4), leaving >= 2 in training) of eval_users users
    n_per = np.bincount(u, minlength=users)
    ev_users = rng.choice(users, min(eval_users, users), replace=False)
    k = np.minimum(1 + rng.poisson(4, ev_users.size), np.maximum(n_per[ev_users] - 2, 0))
    is_eval = np.zeros(u.size, bool)
    starts = np.concatenate([[0], np.cumsum(n_per)])
    for user, kk in zip(ev_users, k):
        if kk > 0:
            s = starts[user]
            is_eval[s + rng.choice(n_per[user], kk, replace=False)] = True
    mk = lambda m: ratings.Triples(u[m] + 1, it[m] + 1, r[m])
    return mk(~is_eval), mk(is_eval)


def cache_dir() -> str:
    return os.environ.get("DEEPAE_BENCH_DATA", "/work/bench_data" if os.path.isdir("/work")
                          else os.path.expanduser("~/.cache/deepae_jax_bench"))


def ensure(users: int, items: int, mean_ratings: float, eval_users: int, seed: int = 0,
           root: str | None = None, text: bool = True) -> dict[str, str]:
    """Writes (once) train.tsv, eval.tsv and train.npz under a folder named by the spec;
    ``text=False`` skips train.tsv (its path is then None) unless it is there already."""
    spec = dict(users=int(users), items=int(items), mean_ratings=float(mean_ratings),
                eval_users=int(eval_users),
                seed=seed, version=1)
    tag = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    folder = os.path.join(root or cache_dir(), f"s1_{users}x{items}_{tag}")
    paths = {"train": os.path.join(folder, "train.tsv"), "eval": os.path.join(folder, "eval.tsv"),
             "npz": os.path.join(folder, "train.npz")}
    if not text and not os.path.exists(paths["train"]):
        paths["train"] = None
    if all(p is None or os.path.exists(p) for p in paths.values()):
        return paths
    os.makedirs(folder, exist_ok=True)
    train, held = generate(users, items, mean_ratings, eval_users, seed)
    ratings.write_ratings_text(paths["eval"], held)
    if paths["train"] is not None:
        ratings.write_ratings_text(paths["train"], train)
    ratings.build_matrix(train).save(paths["npz"])
    with open(os.path.join(folder, "spec.json"), "w") as fh:
        json.dump(spec, fh)
    return paths
