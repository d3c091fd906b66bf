"""Times the ranking metrics (deepae_jax.evaluation.metrics.ranking_metrics) on MovieLens-100K.

Usage::

    python benchmarks/ranking_speed.py [--data ../shared/data/movielens-100k] [--hidden 512,512,1024]
        [--metrics precision@10,recall@10,ndcg@10,map@10,hit@10,coverage@10,ndcg@100] [--repeats 5]

Uses the predefined ``ua.base`` (training) / ``ua.test`` (10 held-out ratings of EVERY user)
pair: all 943 users ranked over the 1,680 items of ua.base.
The model has the paper's shape (random weights: the speed does not depend on training). For
each major it prints the first call (with compilation) and the best of ``--repeats`` warm calls
of the whole computation: scores of every evaluated user over all items, top-K of the unrated
items, hits and metrics; ``--major=items`` includes the full reconstruction (items x users) and
its transpose. "metrics only" times the top-K and metric part alone (scores precomputed).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import jax

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deepae_jax.evaluation import metrics, ranking
from deepae_jax.core import model  # noqa: E402
from deepae_jax.data.datasets import movielens
from deepae_jax.data import ratings  # noqa: E402


def metrics_only(params, cfg, train_csr, held_csr, major, names, batch_size, repeats) -> float:
    """Best time of top-K + metrics over precomputed scores of every evaluated user."""
    import jax.numpy as jnp
    import numpy as np
    from deepae_jax.evaluation import scoring
    by_user, held = (scoring.users_by_items(m, major) for m in (train_csr, held_csr))
    users = np.flatnonzero(np.diff(held.indptr) > 0)
    batches = [(jnp.asarray(s), jnp.asarray(r), jnp.asarray(held[c].toarray() != 0),
                jnp.asarray((np.arange(len(c)) < real).astype(np.float32)))
               for c, s, r, real in scoring.user_score_batches(
                   params, cfg, train_csr, major, users, batch_size)]
    ks = ranking.ranking_ks(names)
    best = float("inf")
    for _ in range(repeats + 1):  # the first includes compilation
        t = time.perf_counter()
        jax.block_until_ready([ranking.batch_sums(*b, ks) for b in batches])
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "movielens-100k"))
    p.add_argument("--hidden", default="512,512,1024")
    p.add_argument("--metrics", default="precision@10,recall@10,ndcg@10,map@10,hit@10,"
                   "coverage@10,ndcg@100")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    if not os.path.isfile(os.path.join(a.data, "ua.base")):
        sys.exit(f"{a.data}: no ua.base / ua.test (MovieLens-100K); pass --data")
    base, test = movielens.predefined_split(a.data, "ua")
    names = ranking.parse_metrics(a.metrics)
    hidden = tuple(int(h) for h in a.hidden.split(","))
    print(f"backend {jax.default_backend()}, {os.cpu_count()} CPUs; metrics {','.join(names)}")
    for major in ("users", "items"):
        train = ratings.build_matrix(base, major)
        held = ratings.align_eval(train, test)
        cfg = model.ModelConfig(layer_sizes=(train.shape[1],) + hidden, activation="selu")
        params = model.init(jax.random.PRNGKey(0), cfg.layer_sizes, cfg.constrained)

        def run():
            return metrics.ranking_metrics(params, cfg, train.csr, held.csr, major, names,
                                                batch_size=a.batch_size)
        t = time.perf_counter()
        out = run()
        first = time.perf_counter() - t
        warm = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            run()
            warm.append(time.perf_counter() - t)
        only = metrics_only(params, cfg, train.csr, held.csr, major, names, a.batch_size,
                            a.repeats)
        n_users = train.shape[0] if major == "users" else train.shape[1]
        print(f"--major={major}: {out['ranking_users']} of {n_users} users ranked over "
              f"{held.csr.shape[1] if major == 'users' else held.csr.shape[0]} items: first "
              f"call {first:.3f} s (with compilation), warm {min(warm) * 1e3:.1f} ms (best of "
              f"{a.repeats}), metrics only {only * 1e3:.1f} ms; ndcg@10 {out.get('ndcg@10', float('nan')):.4f}")


if __name__ == "__main__":
    main()
