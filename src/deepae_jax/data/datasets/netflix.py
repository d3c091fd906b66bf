"""Netflix Prize raw data: a vectorised reader and the paper's time splits (PAPER.md, Data).

Raw format: ``training_set/mv_*.txt``, one file per movie; line 1 is ``MovieID:``, then one
``CustomerID,Rating,YYYY-MM-DD`` line per rating. Files are read in large batches and parsed with
numpy (no Python object per rating): every line ends in a fixed-width ``,R,YYYY-MM-DD`` tail, so
rating and date are read at fixed offsets from the newline and the customer id digit by digit
leftwards. Dates become day numbers (days since 1970-01-01).

Split rules (the reference's ``create_NETFLIX_data_timesplit``, seeded): windows are inclusive;
a test-window rating is kept only if its user has a rating in the split's train window; each kept
rating goes to VALID or TEST by a fair coin (``numpy.random.default_rng((seed, split index))``,
flipped in (user, movie) order); VALID and TEST then lose ratings of movies absent from the train
window. Output ids are the ORIGINAL Netflix ids (the reference renumbers them; we keep the
originals because inference must report them).
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import re
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from deepae_jax.data.ratings import RatingMatrix, RatingsFormatError, Triples
from deepae_jax.data.readers.text_format import lf_line_ends

#: name -> (train first day, train last day, test first day, test last day), all inclusive.
SPLITS: dict[str, tuple[str, str, str, str]] = {
    "NF": ("1999-12-01", "2005-11-30", "2005-12-01", "2005-12-31"),
    "N3M": ("2005-09-01", "2005-11-30", "2005-12-01", "2005-12-31"),
    "N6M": ("2005-06-01", "2005-11-30", "2005-12-01", "2005-12-31"),
    "N1Y": ("2004-06-01", "2005-05-31", "2005-06-01", "2005-06-30"),
}
RATING_SCALE = (1, 5)
_HEADER = re.compile(rb"^\s*(\d+)\s*:\s*$")
_LINE = re.compile(r"^(\d+),(-?\d+),(\d{4})-(\d{2})-(\d{2})$")
_BATCH_BYTES = 48 << 20


def days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Day numbers (days since 1970-01-01) of proleptic Gregorian dates, vectorised (int64)."""
    y = np.asarray(y, np.int64) - (np.asarray(m) <= 2)
    m = np.asarray(m, np.int64)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + np.asarray(d, np.int64) - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def day_number(iso: str) -> int:
    """The day number of a ``YYYY-MM-DD`` date."""
    return (datetime.date.fromisoformat(iso) - datetime.date(1970, 1, 1)).days


def iso_date(day: int) -> str:
    """The ``YYYY-MM-DD`` date of a day number."""
    return (datetime.date(1970, 1, 1) + datetime.timedelta(days=int(day))).isoformat()


@dataclasses.dataclass(frozen=True)
class NetflixRatings:
    """All ratings, sorted by (user, movie), with dense ids into ``user_ids``/``item_ids``.

    ``user``/``item`` are int32 dense ids (``user_ids[user]`` is the original CustomerID;
    ``user_ids``/``item_ids`` are int32 too, as ids have at most 9 digits),
    ``rating`` uint8 stars, ``day`` int32 day numbers. ``skipped_blank`` counts blank lines and
    ``dropped_duplicates`` the earlier ratings replaced under ``duplicates="last"``.
    """

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    day: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    n_files: int
    skipped_blank: int = 0
    dropped_duplicates: int = 0

    def __len__(self) -> int:
        return int(self.rating.shape[0])


def list_movie_files(folder: str) -> list[str]:
    """The ``mv_*.txt`` files of a Netflix ``training_set`` folder, sorted by name."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Netflix training_set folder not found: {folder!r}")
    files = sorted(f for f in os.listdir(folder) if f.startswith("mv_") and f.endswith(".txt"))
    if not files:
        raise RatingsFormatError(f"{folder}: no mv_*.txt files (expected the Netflix Prize "
                                 "training_set folder)")
    return [os.path.join(folder, f) for f in files]


def _explain(path: str, lineno: int, raw_line: bytes) -> str:
    """A precise message for one bad rating line (the slow path, only after a failure)."""
    where = f"{path}:{lineno}"
    try:
        line = raw_line.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"{where}: not valid UTF-8 text ({e.reason}): {raw_line[:60]!r}"
    m = _LINE.match(line.strip())
    if not m:
        return f"{where}: expected 'CustomerID,Rating,YYYY-MM-DD', got {line[:80]!r}"
    if not RATING_SCALE[0] <= int(m.group(2)) <= RATING_SCALE[1]:
        return f"{where}: rating {m.group(2)} outside the Netflix scale 1..5"
    if len(m.group(1)) > 9:
        return f"{where}: CustomerID {m.group(1)} has more than 9 digits"
    try:
        datetime.date(int(m.group(3)), int(m.group(4)), int(m.group(5)))
    except ValueError as e:
        return f"{where}: malformed date {line.split(',')[-1]!r} ({e})"
    return f"{where}: malformed line {line[:80]!r}"


def _read_header(path: str, raw: bytes) -> tuple[int, bytes]:
    """Splits a movie file into its MovieID and the rating lines (bytes, LF-terminated)."""
    raw = lf_line_ends(raw)
    nl = raw.find(b"\n")
    head = raw if nl < 0 else raw[:nl]
    m = _HEADER.match(head)
    if not m:
        what = "empty file" if not raw.strip() else f"first line is {head[:60]!r}"
        raise RatingsFormatError(f"{path}:1: missing 'MovieID:' line ({what})")
    body = b"" if nl < 0 else raw[nl + 1:]
    if body and not body.endswith(b"\n"):
        body += b"\n"
    movie = int(m.group(1))
    if movie >= 2 ** 31:
        raise RatingsFormatError(f"{path}:1: MovieID {movie} is too large")
    return movie, body


_PAD = 32  # bytes before the first line, so that fixed-offset windows never start below 0


def _month_tables(y: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(first year, day number of each month's 1st, each month's length) for years of ``y``."""
    y0, y1 = (int(y.min()), int(y.max())) if y.size else (1970, 1970)
    years = np.repeat(np.arange(y0, y1 + 2), 12)
    months = np.tile(np.arange(1, 13), y1 - y0 + 2)
    first = days_from_civil(years, months, np.ones_like(years))
    return y0, first[:-12], np.diff(first)[:(y1 - y0 + 1) * 12]


def _parse_batch(paths: Sequence[str], bodies: Sequence[bytes], movie_ids: Sequence[int]):
    """Parses concatenated rating lines of several files; raises naming the first bad line.

    Returns (user ids, movie ids, stars, day numbers, rating lines per file, blank lines).
    """
    raw = b"".join([b" " * _PAD, *bodies])
    buf = np.frombuffer(raw, np.uint8)
    ends = np.flatnonzero(buf == 10)
    starts = np.empty_like(ends)
    starts[:1] = _PAD
    starts[1:] = ends[:-1] + 1
    bounds = np.cumsum([_PAD] + [len(b) for b in bodies])
    lines_per_file = np.diff(np.searchsorted(ends, bounds))
    items = np.repeat(np.asarray(movie_ids, np.int32), lines_per_file)
    length = ends - starts
    line_idx = np.arange(ends.size)  # index among all lines of the batch, blank ones included
    blank = length == 0
    n_blank = int(blank.sum())
    if n_blank:
        keep = ~blank
        ends, starts, length, items, line_idx = (
            ends[keep], starts[keep], length[keep], items[keep], line_idx[keep])
    idlen = length - 13
    # The 22 bytes before each newline: the CustomerID right-aligned in the first 9 (bytes left
    # of it masked to 0 below), then ",R,YYYY-MM-DD". Everything is shifted by '0' (wrapping).
    win = np.lib.stride_tricks.sliding_window_view(buf, 22)[ends - 22] - np.uint8(48)
    ok = ((idlen >= 1) & (idlen <= 9) & (win[:, 9] == 252) & (win[:, 11] == 252)
          & (win[:, 16] == 253) & (win[:, 19] == 253))  # ',' - 48 and '-' - 48, wrapped
    win[:, [9, 11, 16, 19]] = 0
    win[:, :9][np.arange(9) < (9 - idlen)[:, None]] = 0
    ok &= win.max(axis=1) <= 9  # every other byte is a digit
    rating = win[:, 10].copy()
    ok &= (rating >= RATING_SCALE[0]) & (rating <= RATING_SCALE[1])
    y = win[:, 12].astype(np.int32) * 1000 + win[:, 13].astype(np.int32) * 100 + win[:, 14] * 10
    y += win[:, 15]
    y[~ok] = 1970
    m = win[:, 17].astype(np.int32) * 10 + win[:, 18]
    d = win[:, 20].astype(np.int32) * 10 + win[:, 21]
    ok &= (m >= 1) & (m <= 12) & (d >= 1)
    y0, month_first, month_len = _month_tables(y)
    month = np.where(ok, (y - y0) * 12 + m - 1, 0)
    ok &= d <= month_len[month]
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        first_line = np.cumsum(lines_per_file) - lines_per_file
        f = int(np.searchsorted(first_line, line_idx[bad], side="right") - 1)
        lineno = int(line_idx[bad] - first_line[f]) + 2  # line 1 is the MovieID line
        raise RatingsFormatError(_explain(paths[f], lineno, bytes(buf[starts[bad]:ends[bad]])))
    user = np.zeros(ends.size, np.int32)
    for j in range(9):
        user *= 10
        user += win[:, j]
    day = (month_first[month] + d - 1).astype(np.int32)
    counts = lines_per_file if not n_blank else np.diff(np.searchsorted(line_idx, np.cumsum(
        np.concatenate([[0], lines_per_file]))))
    return user, items, rating, day, counts, n_blank


def read_netflix(folder: str, duplicates: str = "error", batch_bytes: int = _BATCH_BYTES,
                 files: Sequence[str] | None = None) -> NetflixRatings:
    """Reads a Netflix ``training_set`` folder into :class:`NetflixRatings` (sorted by user).

    Bad input raises :class:`RatingsFormatError` naming the file and line: a file without its
    ``MovieID:`` line, a malformed line or date, a rating outside 1..5, non-UTF-8 bytes. Blank
    lines are skipped and counted. A (user, movie) pair rated twice raises (``duplicates="error"``,
    naming both places) or keeps the rating read last (``duplicates="last"``, counted).
    """
    if duplicates not in ("error", "last"):
        raise ValueError(f"duplicates must be 'error' or 'last', got {duplicates!r}")
    paths = list(files) if files is not None else list_movie_files(folder)
    parts, batch, size = [], ([], [], []), 0
    file_counts = []
    n_blank = 0
    for i, path in enumerate(paths):
        with open(path, "rb") as fh:
            movie, body = _read_header(path, fh.read())
        batch[0].append(path), batch[1].append(body), batch[2].append(movie)
        size += len(body)
        if size >= batch_bytes or i == len(paths) - 1:
            u, it, r, dy, counts, nb = _parse_batch(*batch)
            parts.append((u, it, r, dy))
            n_blank += nb
            file_counts.extend(counts.tolist())
            batch, size = ([], [], []), 0
    columns = [[p[j] for p in parts] for j in range(4)]
    del parts
    cols = []
    for j in range(4):  # one column at a time keeps the peak at total + one column
        cols.append(np.concatenate(columns[j]))
        columns[j] = None
    return _user_major(*cols, paths, np.asarray(file_counts, np.int64), duplicates, n_blank)


def _dense(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct ids, dense int32 index of every entry) without sorting the entries."""
    if int(ids.max()) > 64 * ids.size + (1 << 24):  # sparse huge ids: sort instead of a bitmap
        distinct, inverse = np.unique(ids, return_inverse=True)
        return distinct, inverse.astype(np.int32)
    present = np.zeros(int(ids.max()) + 1, bool)
    present[ids] = True
    distinct = np.flatnonzero(present)
    lookup = np.cumsum(present, dtype=np.int32) - 1
    return distinct, lookup[ids]


def _user_major(users, items, ratings, days, paths, file_counts, duplicates, n_blank
                ) -> NetflixRatings:
    """Re-orders the ratings by (user, movie) with a linear-time sparse transpose."""
    if users.size == 0:
        raise RatingsFormatError(f"{os.path.dirname(paths[0]) or '.'}: no ratings in "
                                 f"{len(paths)} movie file(s)")
    item_ids, item = _dense(items)
    user_ids, user = _dense(users)
    del users, items
    if np.any(np.diff(item) < 0):  # movie files out of MovieID order: sort by movie first
        order = np.argsort(item, kind="stable").astype(np.int32)
        col = user[order]
    else:
        order, col = np.arange(item.size, dtype=np.int32), user
    indptr = np.zeros(item_ids.size + 1, np.int64)
    np.cumsum(np.bincount(item, minlength=item_ids.size), out=indptr[1:])
    by_item = sp.csr_matrix((order, col, indptr), shape=(item_ids.size, user_ids.size))
    del order, col
    by_user = by_item.tocsc()  # stable counting sort by user: movies ascending within a user
    del by_item
    perm = by_user.data
    item_sorted = by_user.indices.astype(np.int32)
    user_sorted = np.repeat(np.arange(user_ids.size, dtype=np.int32), np.diff(by_user.indptr))
    del by_user
    rating, day = ratings[perm], days[perm]
    del ratings, days
    same = (user_sorted[1:] == user_sorted[:-1]) & (item_sorted[1:] == item_sorted[:-1])
    dropped = 0
    if same.any():
        if duplicates == "error":
            k = int(np.flatnonzero(same)[0])
            first, second = (_where(int(perm[k]), paths, file_counts),
                             _where(int(perm[k + 1]), paths, file_counts))
            raise RatingsFormatError(
                f"{second}: user {int(user_ids[user_sorted[k]])} rated movie "
                f"{int(item_ids[item_sorted[k]])} again (first at {first}); pass "
                "duplicates='last' (--duplicates=last) to keep the last rating")
        keep = np.append(~same, True)
        dropped = int((~keep).sum())
        user_sorted, item_sorted = user_sorted[keep], item_sorted[keep]
        rating, day = rating[keep], day[keep]
    return NetflixRatings(user_sorted, item_sorted, rating, day, user_ids.astype(np.int32),
                          item_ids.astype(np.int32), len(paths), n_blank, dropped)


def _where(index: int, paths: Sequence[str], file_counts: np.ndarray) -> str:
    """``file:line`` of the index-th rating read (re-scans that one file for blank lines)."""
    first = np.cumsum(file_counts) - file_counts
    f = int(np.searchsorted(first, index, side="right") - 1)
    k = index - int(first[f])
    with open(paths[f], "rb") as fh:
        lines = fh.read().split(b"\n")
    seen = -1
    for lineno, line in enumerate(lines[1:], start=2):
        if line.strip():
            seen += 1
            if seen == k:
                return f"{paths[f]}:{lineno}"
    return f"{paths[f]}:?"


@dataclasses.dataclass(frozen=True)
class TimeSplit:
    """Boolean masks over :class:`NetflixRatings` for one split's TRAIN, VALID and TEST."""

    name: str
    window: tuple[str, str, str, str]
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def time_split(data: NetflixRatings, name: str, window: tuple[str, str, str, str],
               seed: int, split_index: int = 0) -> TimeSplit:
    """The reference's time split of ``data`` for one window (rules in the module docstring)."""
    a, b, c, d = (day_number(s) for s in window)
    train = (data.day >= a) & (data.day <= b)
    user_seen = np.zeros(data.user_ids.size, bool)
    user_seen[data.user[train]] = True
    item_seen = np.zeros(data.item_ids.size, bool)
    item_seen[data.item[train]] = True
    held = (data.day >= c) & (data.day <= d) & ~train & user_seen[data.user]
    idx = np.flatnonzero(held)
    heads = np.random.default_rng((seed, split_index)).random(idx.size) < 0.5
    keep = item_seen[data.item[idx]]
    valid = np.zeros(len(data), bool)
    test = np.zeros(len(data), bool)
    valid[idx[heads & keep]] = True
    test[idx[~heads & keep]] = True
    return TimeSplit(name, window, train, valid, test)


def split_matrix(data: NetflixRatings, mask: np.ndarray) -> RatingMatrix:
    """The user-major :class:`RatingMatrix` of the masked ratings, built without sorting."""
    user, item = data.user[mask], data.item[mask]
    if user.size == 0:
        raise RatingsFormatError("no ratings in this part of the split")
    counts = np.bincount(user, minlength=data.user_ids.size)
    rows = counts > 0
    indptr = np.zeros(int(rows.sum()) + 1, np.int64)
    np.cumsum(counts[rows], out=indptr[1:])
    cols = np.zeros(data.item_ids.size, bool)
    cols[item] = True
    col_of = (np.cumsum(cols, dtype=np.int32) - 1)[item]
    csr = sp.csr_matrix((data.rating[mask].astype(np.float32), col_of, indptr),
                        shape=(indptr.size - 1, int(cols.sum())))
    return RatingMatrix(csr, data.user_ids[rows].astype(np.int64),
                        data.item_ids[cols].astype(np.int64), "users")


def part_triples(data: NetflixRatings, mask: np.ndarray) -> Triples:
    """The masked ratings with ORIGINAL ids, in (user, movie) order (int32 ids, uint8 stars)."""
    return Triples(data.user_ids[data.user[mask]], data.item_ids[data.item[mask]],
                   data.rating[mask])


def part_stats(data: NetflixRatings, mask: np.ndarray) -> dict:
    """Users, ratings, items and first/last date of the masked ratings (PAPER.md's table)."""
    n = int(mask.sum())
    if n == 0:
        return {"users": 0, "ratings": 0, "items": 0, "first": "-", "last": "-"}
    users = np.zeros(data.user_ids.size, bool)
    users[data.user[mask]] = True
    items = np.zeros(data.item_ids.size, bool)
    items[data.item[mask]] = True
    days = data.day[mask]
    return {"users": int(users.sum()), "ratings": n, "items": int(items.sum()),
            "first": iso_date(int(days.min())), "last": iso_date(int(days.max()))}
