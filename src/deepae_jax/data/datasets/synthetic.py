"""A deterministic synthetic rating set for the quickstart, tests and benchmarks.

Ratings follow a low-rank model with biases plus noise, rounded to integers 1..5:
``r = clip(round(mu + b_user + b_item + <p_user, q_item> + noise), 1, 5)``. The number of ratings
per user is heavy-tailed (log-normal) and items are chosen with Zipf-like popularity, so the data
has the shape of real rating data (most users rate few items, a few rate many). Evaluation ratings
are a random share of the ratings of a random half of the users, as in a held-out split.
"""
from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from deepae_jax.settings import bad_setting, setting
from deepae_jax.data.ratings import Triples, write_ratings_text


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """Size and shape of the synthetic set (the defaults train in well under a minute on a CPU)."""

    n_users: int = 3000
    n_items: int = 1000
    rank: int = 8
    mean_ratings_per_user: float = 60.0
    eval_user_share: float = 0.5
    eval_rating_share: float = 0.2
    noise: float = 0.5
    seed: int = 0


def generate(spec: SyntheticSpec = SyntheticSpec()) -> tuple[Triples, Triples]:
    """(training triples, evaluation triples), deterministic for a given spec; ids start at 1."""
    rng = np.random.default_rng(spec.seed)
    user_f = rng.normal(0, 1, (spec.n_users, spec.rank)) / np.sqrt(spec.rank)
    item_f = rng.normal(0, 1, (spec.n_items, spec.rank))
    user_b = rng.normal(0, 0.4, spec.n_users)
    item_b = rng.normal(0, 0.5, spec.n_items)
    popularity = 1.0 / np.arange(1, spec.n_items + 1) ** 0.8
    log_pop = np.log(popularity[rng.permutation(spec.n_items)])
    sigma = 1.0
    mu_log = np.log(spec.mean_ratings_per_user) - sigma ** 2 / 2
    counts = np.clip(rng.lognormal(mu_log, sigma, spec.n_users).astype(int), 3, spec.n_items // 2)
    users, items, values, held = [], [], [], []
    chunk = max(1, 2_000_000 // spec.n_items)
    for start in range(0, spec.n_users, chunk):
        stop = min(spec.n_users, start + chunk)
        keys = log_pop[None, :] + rng.gumbel(size=(stop - start, spec.n_items))
        order = np.argsort(-keys, axis=1)
        for u in range(start, stop):
            chosen = np.sort(order[u - start, :counts[u]])
            score = 3.6 + user_b[u] + item_b[chosen] + item_f[chosen] @ user_f[u]
            score += rng.normal(0, spec.noise, chosen.size)
            r = np.clip(np.rint(score), 1, 5)
            is_eval = np.zeros(chosen.size, bool)
            if rng.random() < spec.eval_user_share:
                n_eval = max(1, int(round(spec.eval_rating_share * chosen.size)))
                is_eval[rng.choice(chosen.size, n_eval, replace=False)] = True
            users.append(np.full(chosen.size, u + 1))
            items.append(chosen + 1)
            values.append(r)
            held.append(is_eval)
    u, i, r, h = (np.concatenate(a) for a in (users, items, values, held))
    make = lambda m: Triples(u[m].astype(np.int64), i[m].astype(np.int64), r[m].astype(np.float32))
    return make(~h), make(h)


def ensure_dataset(train_path: str, eval_path: str, spec: SyntheticSpec = SyntheticSpec()) -> None:
    """Writes the synthetic set as ``ratings.tsv`` in the two folders unless both exist."""
    if os.path.exists(train_path) and (not eval_path or os.path.exists(eval_path)):
        return
    train, held_out = generate(spec)
    write_ratings_text(os.path.join(train_path, "ratings.tsv"), train)
    if eval_path:
        write_ratings_text(os.path.join(eval_path, "ratings.tsv"), held_out)
    logging.getLogger("deepae_jax").info(
        "wrote synthetic data: %d training ratings to %s, %d evaluation ratings to %s",
        len(train), train_path, len(held_out), eval_path)


def write_csv(path: str, spec: SyntheticSpec = SyntheticSpec()) -> int:
    """Writes every synthetic rating (training and held-out) as a MovieLens-style
    ``ratings.csv``: a header ``userId,movieId,rating,timestamp``, string user ids ``u1, u2,
    ...``, and a seeded random timestamp within one year (each user's lines in time order),
    for trying the "your own data"
    walk-through without a download. Returns the number of ratings written."""
    from deepae_jax.run.files import atomic_write_text
    train, held_out = generate(spec)
    users = np.concatenate([train.users, held_out.users])
    items = np.concatenate([train.items, held_out.items])
    values = np.concatenate([train.ratings, held_out.ratings])
    when = np.random.default_rng(spec.seed + 1).integers(0, 365 * 86400, len(users))
    order = np.lexsort((when, users))  # by user, each user's ratings in time order
    stamps = 1_000_000_000 + when[order]  # a year of seeded random times
    lines = [f"u{u},{i},{r:g},{t}" for u, i, r, t in
             zip(users[order], items[order], values[order], stamps)]
    atomic_write_text(path, "userId,movieId,rating,timestamp\n" + "\n".join(lines) + "\n")
    return len(lines)


@dataclasses.dataclass(frozen=True)
class CsvSettings:
    """The flags of ``deepae synthetic --out=OUT.csv`` (also ``python -m
    deepae_jax.data.datasets.synthetic``)."""

    out: str = setting("", "The CSV file to write; required.")
    users: int = setting(SyntheticSpec.n_users, "Number of users.")
    items: int = setting(SyntheticSpec.n_items, "Number of items.")

    def __post_init__(self):
        if not self.out:
            bad_setting(self, "out", "required: the CSV file to write")
        if self.users < 2:
            bad_setting(self, "users", "must be >= 2")
        if self.items < 6:
            bad_setting(self, "items", "must be >= 6")


if __name__ == "__main__":  # the command line lives in deepae_jax.cli (deepae synthetic)
    from deepae_jax.cli import data as cli_data
    raise SystemExit(cli_data.main(cli_data.SYNTHETIC))
