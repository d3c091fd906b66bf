"""MovieLens rating files and splits (PAPER.md, Data: MovieLens).

Formats, picked by file name:

- ML-100K ``u.data`` and the predefined ``u1..u5``/``ua``/``ub`` ``.base``/``.test`` pairs:
  ``user<TAB>item<TAB>rating<TAB>timestamp``, no header.
- ML-1M and ML-10M ``ratings.dat``: ``user::item::rating::timestamp``.
- ML-20M/25M/32M/latest ``ratings.csv``: header ``userId,movieId,rating,timestamp``; CRLF accepted.

Ratings must lie on the half-star scale 0.5, 1.0, …, 5.0 (ML-100K/1M use whole stars only).
Splits: the reference's per-user time split (users with at least 2 ratings; per user, by time,
the first floor(70%) go to TRAIN and the rest, as a block, to VALID or TEST by one fair coin per
user; items absent from TRAIN are then removed from VALID and TEST), a seeded random 90/10 split of
ratings, and the ML-100K predefined pairs. The random and predefined splits have one held-out set
(the one the literature reports on): it is TEST, and VALID is carved from the training part by a
seeded random split (``movielens_convert --valid_share``), so that model selection never sees TEST.
"""
from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np

from deepae_jax.data.readers import diagnostics, table
from deepae_jax.data.ratings import RatingsFormatError, TableFormat, Triples, read_table

PREDEFINED = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
SPLITS = ("time70", "random90") + PREDEFINED
RATING_FILES = ("ratings.csv", "ratings.dat", "u.data")


@dataclasses.dataclass(frozen=True)
class MovieLensRatings:
    """Ratings with their unix timestamps (int64) and 1-based line numbers, in file order."""

    triples: Triples
    timestamps: np.ndarray
    source: str
    lines: np.ndarray

    def __len__(self) -> int:
        return len(self.triples)


def find_ratings_file(path: str) -> str:
    """``path`` itself, or the MovieLens ratings file inside folder ``path`` (searched 1 level)."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"MovieLens data not found: {path!r}")
    for folder in [path] + sorted(os.path.join(path, d) for d in os.listdir(path)
                                  if os.path.isdir(os.path.join(path, d))):
        for name in RATING_FILES:
            if os.path.isfile(os.path.join(folder, name)):
                return os.path.join(folder, name)
    raise RatingsFormatError(f"{path}: no {' / '.join(RATING_FILES)} found")


def file_format(path: str) -> tuple[str, bool]:
    """(delimiter, has_header) of a MovieLens ratings file, from its name."""
    name = os.path.basename(path)
    if name.endswith(".csv"):
        return ",", True
    if name.endswith(".dat"):
        return "::", False
    return "\t", False


def _check_line(path: str, lineno: int, line: str, delimiter: str) -> tuple[int, int, float, int]:
    """Parses one line exactly; raises naming the file and line."""
    parts = line.split(delimiter)
    if len(parts) != 4:
        raise RatingsFormatError(f"{path}:{lineno}: expected 4 fields user{delimiter}item"
                                 f"{delimiter}rating{delimiter}timestamp, got {line[:80]!r}")
    try:
        u, i, ts = int(parts[0]), int(parts[1]), int(parts[3])
    except ValueError:
        raise RatingsFormatError(f"{path}:{lineno}: user, item and timestamp must be integers: "
                                 f"{line[:80]!r}") from None
    try:
        r = float(parts[2])
    except ValueError:
        raise RatingsFormatError(f"{path}:{lineno}: rating {parts[2]!r} is not a number") from None
    return u, i, r, ts


def _parse_slow(path: str, raw: bytes, delimiter: str, header: bool) -> np.ndarray:
    """Line-by-line parse (after the fast one failed): names the first bad line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise RatingsFormatError(f"{path}:{line}: not valid UTF-8 text ({e.reason})") from None
    rows = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if (header and lineno == 1) or not line.strip():
            continue
        rows.append(_check_line(path, lineno, line, delimiter))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def _parse_fast(raw: bytes, delimiter: str, header: bool) -> tuple[np.ndarray, int] | None:
    """Vectorised parse of a well-formed file: (rows, lines before row 0); None if not clean."""
    data = raw.replace(b"\r", b"")
    skip = 0
    if header:
        nl = data.find(b"\n")
        data, skip = (b"" if nl < 0 else data[nl + 1:]), 1
    if not data.endswith(b"\n"):
        data += b"\n"
    n = data.count(b"\n")
    d = delimiter.encode()
    if data.count(d) != 3 * n or b"\n\n" in data or data.startswith(b"\n"):
        return None
    if any(c in data for c in (b"n", b"N", b" ", b"e", b"E")):  # nan/inf/blanks: explain slowly
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            values = np.fromstring(data.replace(d, b" "), dtype=np.float64, sep=" ")  # noqa
        except (DeprecationWarning, ValueError):
            return None
    if values.size != 4 * n:
        return None
    values = values.reshape(n, 4)
    ints = values[:, [0, 1, 3]]
    if not np.array_equal(ints, np.floor(ints)):
        return None
    return values, skip


def read_movielens(path: str) -> MovieLensRatings:
    """Reads a MovieLens ratings file (format by name, see the module docstring).

    Raises :class:`RatingsFormatError` naming the file and line for malformed lines, non-UTF-8
    bytes, negative ids, and ratings off the half-star scale 0.5..5.0.
    """
    path = find_ratings_file(path)
    delimiter, header = file_format(path)
    with open(path, "rb") as fh:
        raw = fh.read()
    fast = _parse_fast(raw, delimiter, header)
    if fast is None:
        values = _parse_slow(path, raw, delimiter, header)
        text_lines = raw.replace(b"\r", b"").split(b"\n")
        line_of = np.array([k + 1 for k, ln in enumerate(text_lines)
                            if ln.strip() and not (header and k == 0)], np.int64)
    else:
        values, skip = fast
        line_of = np.arange(values.shape[0]) + 1 + skip
    if values.shape[0] == 0:
        raise RatingsFormatError(f"{path}: no ratings")
    r = values[:, 2]
    bad = ~((r * 2 == np.round(r * 2)) & (r >= 0.5) & (r <= 5.0))
    bad |= (values[:, 0] < 0) | (values[:, 1] < 0)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        what = (f"rating {r[k]:g} is off the MovieLens scale 0.5..5.0 (half stars)"
                if (values[k, 0] >= 0 and values[k, 1] >= 0) else "negative id")
        raise RatingsFormatError(f"{path}:{int(line_of[k])}: {what}")
    triples = Triples(values[:, 0].astype(np.int64), values[:, 1].astype(np.int64),
                      r.astype(np.float32))
    return MovieLensRatings(triples, values[:, 3].astype(np.int64), path, line_of.astype(np.int32))


def read_table_ratings(path: str, fmt: TableFormat) -> MovieLensRatings:
    """Any ratings table (one file; see :mod:`deepae_jax.data.readers.table`) as MovieLensRatings: any
    rating scale and ids; timestamps from ``fmt.timestamp_column`` (all 0 without one)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ratings table not found (a file is needed): {path!r}")
    t = read_table(path, fmt)
    lay = table.layout(path, fmt)
    lines = (diagnostics.data_line_numbers(path, lay.header) if lay is not None
             else np.zeros(0, np.int64))
    if len(t) == 0:
        raise RatingsFormatError(f"{path}: no ratings")
    stamps = t.timestamps if t.timestamps is not None else np.zeros(len(t), np.int64)
    return MovieLensRatings(Triples(t.users, t.items, t.ratings), stamps, path,
                            lines.astype(np.int32))


def check_duplicates(data: MovieLensRatings, duplicates: str = "error") -> MovieLensRatings:
    """Applies the duplicate policy: ``"error"`` names both lines, ``"last"`` keeps the last."""
    if duplicates not in ("error", "last"):
        raise ValueError(f"duplicates must be 'error' or 'last', got {duplicates!r}")
    t = data.triples
    order = np.lexsort((t.items, t.users))  # stable: file order within a (user, item) pair
    u, i = t.users[order], t.items[order]
    same = (u[1:] == u[:-1]) & (i[1:] == i[:-1])  # ints or strings
    if not same.any():
        return data
    if duplicates == "error":
        k = int(np.flatnonzero(same)[0])
        a, b = int(order[k]), int(order[k + 1])
        raise RatingsFormatError(
            f"{data.source}:{int(data.lines[b])}: user {t.users[b]} rated item "
            f"{t.items[b]} again (first at line {int(data.lines[a])}); pass "
            "--duplicates=last to keep the last rating")
    drop = np.zeros(len(t), bool)
    drop[order[:-1][same]] = True
    keep = ~drop
    return MovieLensRatings(subset(t, keep), data.timestamps[keep], data.source,
                            data.lines[keep])


def subset(t: Triples, mask: np.ndarray) -> Triples:
    """The ratings selected by a boolean mask or index array."""
    return Triples(t.users[mask], t.items[mask], t.ratings[mask])


def drop_unknown_items(train: Triples, held: Triples) -> Triples:
    """``held`` without ratings of items that have no TRAIN rating."""
    return subset(held, np.isin(held.items, np.unique(train.items)))


def time_split(data: MovieLensRatings, seed: int = 0, train_fraction: float = 0.7
               ) -> tuple[Triples, Triples, Triples]:
    """The reference's per-user time split: (TRAIN, VALID, TEST); see the module docstring.

    Ratings of a user are ordered by timestamp (ties keep file order); the coin is flipped once
    per kept user, in ascending user id order.
    """
    t = data.triples
    order = np.lexsort((np.arange(len(t)), data.timestamps, t.users))
    users = t.users[order]
    distinct, first, counts = np.unique(users, return_index=True, return_counts=True)
    rank = np.arange(users.size) - np.repeat(first, counts)
    n_train = np.floor(train_fraction * counts).astype(np.int64)
    kept = counts >= 2
    valid_user = np.random.default_rng(seed).random(int(kept.sum())) < 0.5
    to_valid = np.zeros(distinct.size, bool)
    to_valid[np.flatnonzero(kept)[valid_user]] = True
    k_user = np.repeat(np.arange(distinct.size), counts)
    in_train = kept[k_user] & (rank < n_train[k_user])
    held = kept[k_user] & ~in_train
    train = subset(t, order[in_train])
    valid = drop_unknown_items(train, subset(t, order[held & to_valid[k_user]]))
    test = drop_unknown_items(train, subset(t, order[held & ~to_valid[k_user]]))
    return train, valid, test


def random_split(data: MovieLensRatings, seed: int = 0, test_fraction: float = 0.1
                 ) -> tuple[Triples, Triples]:
    """A seeded random split of ratings: (TRAIN, held-out), round(10%) of ratings held out."""
    return split_off(data.triples, test_fraction, seed)


def split_off(t: Triples, fraction: float, seed: int = 0) -> tuple[Triples, Triples]:
    """(the rest, a seeded random round(fraction) share of the ratings of ``t``)."""
    perm = np.random.default_rng(seed).permutation(len(t))
    n_held = int(round(fraction * len(t)))
    held = np.zeros(len(t), bool)
    held[perm[:n_held]] = True
    return subset(t, ~held), subset(t, held)


def predefined_split(folder: str, name: str) -> tuple[Triples, Triples]:
    """ML-100K's ``NAME.base`` / ``NAME.test`` pair (e.g. ``u1``): (TRAIN, TEST)."""
    if name not in PREDEFINED:
        raise ValueError(f"predefined splits are {PREDEFINED}, got {name!r}")
    folder = predefined_folder(folder, name)
    return (read_movielens(os.path.join(folder, name + ".base")).triples,
            read_movielens(os.path.join(folder, name + ".test")).triples)


def predefined_folder(path: str, name: str) -> str:
    """The folder holding ``NAME.base`` and ``NAME.test``: ``path`` (or the folder of file
    ``path``) or one of its subfolders (an unpacked ``ml-100k.zip``). Errors name the path given
    and the folders searched."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"MovieLens data not found: {path!r}")
    top = os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else path
    candidates = [top] + sorted(os.path.join(top, d) for d in os.listdir(top)
                                if os.path.isdir(os.path.join(top, d)))
    for folder in candidates:
        if all(os.path.isfile(os.path.join(folder, name + ext)) for ext in (".base", ".test")):
            return folder
    raise RatingsFormatError(
        f"{path}: no {name}.base and {name}.test in {os.path.abspath(top)!r} or its subfolders; "
        "the predefined splits need the unpacked ML-100K folder (ml-100k/)")


def stats(t: Triples) -> dict:
    """Users, ratings, items and the rating range of a part."""
    if len(t) == 0:
        return {"users": 0, "ratings": 0, "items": 0, "min": "-", "max": "-"}
    return {"users": int(np.unique(t.users).size), "ratings": len(t),
            "items": int(np.unique(t.items).size), "min": f"{float(t.ratings.min()):g}",
            "max": f"{float(t.ratings.max()):g}"}
