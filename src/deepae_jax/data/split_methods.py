"""Splits of any rating data into TRAIN / VALID / TEST: pure functions over index arrays.

:func:`split_indices` takes the ratings' user ids (or just their number, for the methods that
need no users) and, where needed, their timestamps, and returns the positions of each part:

- ``random``: a seeded random ``test_share`` of all ratings is TEST.
- ``user_random``: the same share of EACH user's ratings (round(share * n_u)), chosen at random.
- ``temporal``: a global time cut: the latest ``test_share`` of the ratings is TEST; ratings tied
  with the last TRAIN rating's timestamp stay in TRAIN, so every TEST rating is strictly later
  than every TRAIN rating (TEST may be a little smaller than the share).
- ``user_temporal``: each user's latest share (round(share * n_u)) is TEST, with the same tie rule
  per user: every TEST rating of a user is strictly later than that user's TRAIN ratings.
- ``leave_one_out``: each user's latest rating is TEST (ties: the last in file order); without
  timestamps a random one.
- ``kfold``: the ratings are dealt at random into ``folds`` folds of equal size (+-1); fold i is
  the TEST part of split ``fold_i`` and the other folds are its TRAIN (``test_share`` unused).

The user-wise methods keep at least one TRAIN rating per user (a user with one rating is never
held out). VALID, when ``valid_share > 0``, is carved from the TRAINING part, never from TEST,
by the same method (``valid_share`` is then a share of the training part; ``leave_one_out``:
each user's latest remaining rating; ``kfold``: a random share). Same arguments and seed, same
split. Parts are sorted position arrays, disjoint, and cover every rating.
"""
from __future__ import annotations

import numpy as np

METHODS = ("random", "user_random", "temporal", "user_temporal", "leave_one_out", "kfold")
NEEDS_TIME = ("temporal", "user_temporal")
PER_USER = ("user_random", "user_temporal", "leave_one_out")


def _count(share: float, n: np.ndarray | int) -> np.ndarray:
    """round(share * n), halves rounded up (not to even)."""
    return np.floor(share * np.asarray(n, np.float64) + 0.5).astype(np.int64)


def _user_ranks(users: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, rank within user, user's count) of positions sorted by (user, key)."""
    order = np.lexsort((key, users))
    u = users[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    counts = np.diff(np.r_[starts, len(u)])
    rank = np.arange(len(u)) - np.repeat(starts, counts)
    return order, rank, np.repeat(counts, counts)


def _hold_out(method: str, idx: np.ndarray, users: np.ndarray | None, ts: np.ndarray | None,
              share: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask over ``idx`` (positions of the part being split) of the held-out ones."""
    n = len(idx)
    held = np.zeros(n, bool)
    if n == 0:
        return held
    if method in ("random", "kfold"):
        held[rng.permutation(n)[:int(_count(share, n))]] = True
        return held
    if method == "temporal":
        t = ts[idx]
        order = np.lexsort((np.arange(n), t))
        n_keep = max(1, n - int(_count(share, n)))
        return t > t[order[n_keep - 1]]
    u = users[idx]
    if method == "user_random":
        order, rank, count = _user_ranks(u, rng.random(n))
        held[order] = rank < np.minimum(_count(share, count), count - 1)
        return held
    # by time within a user (lexsort is stable: ties keep file order); no timestamps: random
    order, rank, count = _user_ranks(u, ts[idx] if ts is not None else rng.random(n))
    if method == "leave_one_out":
        held[order] = (rank == count - 1) & (count >= 2)
        return held
    # user_temporal: the last round(share * n_u) by time, ties with the last kept one kept
    n_keep = count - np.minimum(_count(share, count), count - 1)
    t_sorted = ts[idx][order]
    last_kept = np.flatnonzero(rank == n_keep - 1)  # one per user (n_keep >= 1), in user order
    cut = np.repeat(t_sorted[last_kept], np.diff(np.r_[np.flatnonzero(rank == 0), n]))
    held[order] = (rank >= n_keep) & (t_sorted > cut)
    return held


def _check(n: int, method: str, users, timestamps, test_share, valid_share, folds) -> None:
    if method not in METHODS:
        raise ValueError(f"--method={method!r}: choose one of {list(METHODS)}")
    if method in NEEDS_TIME and timestamps is None:
        raise ValueError(f"--method={method} needs timestamps (a 4th column user item rating "
                         "timestamp); this data has none (leave_one_out and the random methods "
                         "do not need them)")
    if method in PER_USER and users is None:
        raise ValueError(f"--method={method} needs the ratings' user ids, not only their number")
    if method != "kfold" and not 0 < test_share < 1:
        raise ValueError(f"--test_share={test_share}: must be in (0, 1)")
    if not 0 <= valid_share < 1:
        raise ValueError(f"--valid_share={valid_share}: must be in [0, 1)")
    if method == "kfold" and not 2 <= folds <= max(2, n):
        raise ValueError(f"--folds={folds}: must be in 2..{max(2, n)} (the number of ratings)")
    for name, arr in (("users", users), ("timestamps", timestamps)):
        if arr is not None and len(arr) != n:
            raise ValueError(f"{name}: {len(arr)} values for {n} ratings")


def split_indices(users: np.ndarray | int, method: str, timestamps: np.ndarray | None = None,
                  test_share: float = 0.1, valid_share: float = 0.0, seed: int = 0,
                  folds: int = 5) -> dict[str, np.ndarray]:
    """{part: sorted positions} of one split (see the module docstring): parts ``TRAIN``,
    ``TEST`` and, with ``valid_share > 0``, ``VALID``; for ``kfold`` the parts of every fold,
    keyed ``fold_0/TRAIN``, ``fold_0/TEST``, (``fold_0/VALID``), ``fold_1/TRAIN``, ...

    ``users``: the ratings' user ids (any integers) or, for ``random``, ``temporal`` and
    ``kfold``, just the number of ratings. Raises ValueError naming the flag of a bad argument.
    """
    n = int(users) if np.ndim(users) == 0 else len(users)
    users = None if np.ndim(users) == 0 else np.asarray(users)
    ts = None if timestamps is None else np.asarray(timestamps, np.int64)
    _check(n, method, users, ts, test_share, valid_share, folds)
    rng_test, rng_valid = (np.random.default_rng([seed, k]) for k in (0, 1))
    everything = np.arange(n)
    if method == "kfold":
        fold_of = np.empty(n, np.int64)
        fold_of[rng_test.permutation(n)] = everything % folds
        out = {}
        for f in range(folds):
            parts = _with_valid("random", everything[fold_of != f], everything[fold_of == f],
                                users, ts, valid_share, rng_valid)
            out.update({f"fold_{f}/{k}": v for k, v in parts.items()})
        return out
    held = _hold_out(method, everything, users, ts, test_share, rng_test)
    return _with_valid(method, everything[~held], everything[held], users, ts, valid_share,
                       rng_valid)


def _with_valid(method: str, train: np.ndarray, test: np.ndarray, users, ts, valid_share: float,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """{"TRAIN", "VALID", "TEST"}: VALID carved from ``train`` by ``method`` (if valid_share)."""
    if valid_share <= 0:
        return {"TRAIN": train, "TEST": test}
    held = _hold_out(method, train, users, ts, valid_share, rng)
    return {"TRAIN": train[~held], "VALID": train[held], "TEST": test}
