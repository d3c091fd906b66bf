"""Writes a synthetic data set in the Netflix Prize raw format, of the real size and date range.

Not a test (the full size takes minutes and ~2 GB of disk). Usage::

    python benchmarks/make_netflix_like.py OUT_DIR [--scale 1.0] [--seed 0]

``OUT_DIR/mv_0000001.txt`` … ``mv_0017770.txt``: ``MovieID:`` then ``CustomerID,Rating,YYYY-MM-DD``
lines. ``--scale`` multiplies the number of ratings (100,480,507 at 1.0) and keeps the 17,770
movies, 480,189 users (ids spread over 1..2,649,429), the 1999-11-11 .. 2005-12-31 date range and
a heavy-tailed ratings-per-movie distribution. Each user rates a movie at most once.
"""
from __future__ import annotations

import argparse
import datetime
import os
import time

import numpy as np

N_MOVIES, N_RATINGS, N_USERS, MAX_USER_ID = 17_770, 100_480_507, 480_189, 2_649_429
FIRST_DAY, LAST_DAY = datetime.date(1999, 11, 11), datetime.date(2005, 12, 31)


def ratings_per_movie(rng: np.random.Generator, total: int) -> np.ndarray:
    """Heavy-tailed counts (lognormal) summing to ``total``, each in 1..N_USERS."""
    w = rng.lognormal(0.0, 1.6, N_MOVIES)
    counts = np.clip(np.floor(w / w.sum() * total), 1, N_USERS).astype(np.int64)
    short = total - int(counts.sum())
    order = np.argsort(-counts)
    i = 0
    while short != 0:  # hand out the rounding remainder one rating at a time
        j = order[i % N_MOVIES]
        step = 1 if short > 0 else -1
        if 1 <= counts[j] + step <= N_USERS:
            counts[j] += step
            short -= step
        i += 1
    return counts


def date_table() -> np.ndarray:
    """``YYYY-MM-DD`` bytes of every day of the range, shape (n_days, 10)."""
    n = (LAST_DAY - FIRST_DAY).days + 1
    text = "".join((FIRST_DAY + datetime.timedelta(days=k)).isoformat() for k in range(n))
    return np.frombuffer(text.encode(), np.uint8).reshape(n, 10)


def movie_file(users: np.ndarray, stars: np.ndarray, days: np.ndarray, dates: np.ndarray) -> bytes:
    """The rating lines ``user,stars,date`` as bytes (fixed-width rows, zero padding squeezed)."""
    mat = np.zeros((users.size, 7 + 1 + 1 + 1 + 10 + 1), np.uint8)
    q = users.astype(np.int64)
    for k in range(7):
        d = (q % 10 + 48).astype(np.uint8)
        if k:
            d[q == 0] = 0
        mat[:, 6 - k] = d
        q //= 10
    mat[:, 7], mat[:, 8], mat[:, 9] = 44, stars + 48, 44
    mat[:, 10:20] = dates[days]
    mat[:, 20] = 10
    return mat[mat != 0].tobytes()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the real rating count")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    os.makedirs(a.out_dir, exist_ok=True)
    total = int(round(N_RATINGS * a.scale))
    counts = ratings_per_movie(rng, total)
    user_ids = np.sort(rng.choice(np.arange(1, MAX_USER_ID + 1), N_USERS, replace=False))
    dates = date_table()
    n_days = dates.shape[0]
    star_p = np.array([0.046, 0.101, 0.287, 0.336, 0.230])
    t0, written = time.time(), 0
    for movie in range(1, N_MOVIES + 1):
        k = int(counts[movie - 1])
        # k distinct users: a random window of a random permutation stride (cheap, no sort)
        start, stride = rng.integers(N_USERS), int(rng.choice([1, 7, 11, 13, 17, 19]))
        users = user_ids[(start + stride * np.arange(k)) % N_USERS]
        days = np.minimum((n_days * rng.beta(4.0, 1.2, k)).astype(np.int64), n_days - 1)
        stars = rng.choice(5, k, p=star_p).astype(np.uint8) + 1
        body = movie_file(users, stars, days, dates)
        with open(os.path.join(a.out_dir, f"mv_{movie:07d}.txt"), "wb") as fh:
            fh.write(f"{movie}:\n".encode() + body)
        written += k
        if movie % 2000 == 0:
            print(f"{movie:,} movies, {written:,} ratings, {time.time() - t0:.0f} s", flush=True)
    print(f"wrote {N_MOVIES:,} files, {written:,} ratings to {a.out_dir} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
