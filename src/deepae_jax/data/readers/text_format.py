"""The reference's text format: one rating per line, ``user<TAB>item<TAB>rating``.

The :class:`Triples` type, the vectorised fast parser of clean integer files
(:func:`parse_fast_file`, used by :func:`deepae_jax.data.readers.table.read_table`, which reads
everything else exactly and names the line of any error) and the vectorised writer.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Sequence

import numpy as np

from deepae_jax.run.files import atomic_write

COLUMN_ORDERS = ("user,item,rating", "item,user,rating")


class RatingsFormatError(ValueError):
    """Malformed rating data; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class Triples:
    """Ratings as parallel arrays of ORIGINAL user ids, item ids and rating values.

    Ids are int64, or strings (a numpy ``'U'`` array) where a file's ids are not all integers
    that fit int64; ``timestamps`` (int64) rides along when a timestamp column was read.
    """

    users: np.ndarray  # int64 or 'U'
    items: np.ndarray  # int64 or 'U'
    ratings: np.ndarray  # float32
    timestamps: np.ndarray | None = None  # int64

    def __len__(self) -> int:
        return int(self.ratings.shape[0])


def unify_ids(*arrays: np.ndarray) -> list[np.ndarray]:
    """The id arrays in one dtype: unchanged when all are integers, else all as strings
    (integers written in decimal), so that ids of different files compare exactly."""
    if all(a.dtype.kind in "iu" for a in arrays):
        return [a.astype(np.int64, copy=False) for a in arrays]
    return [a if a.dtype.kind == "U" else a.astype(str) for a in arrays]


def concat_triples(parts: Sequence[Triples]) -> Triples:
    """The ratings of several files in order (timestamps kept only when every part has them)."""
    if not parts:
        return Triples(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if len(parts) == 1:
        return parts[0]
    users = np.concatenate(unify_ids(*[p.users for p in parts]))
    items = np.concatenate(unify_ids(*[p.items for p in parts]))
    stamps = (np.concatenate([p.timestamps for p in parts])
              if all(p.timestamps is not None for p in parts) else None)
    return Triples(users, items, np.concatenate([p.ratings for p in parts]), stamps)


def list_rating_files(path: str) -> list[str]:
    """The files of a data set: ``path`` itself, or the visible files of directory ``path``."""
    if os.path.isdir(path):
        visible = sorted(f for f in os.listdir(path) if not f.startswith((".", "_")))
        files = [os.path.join(path, f) for f in visible if os.path.isfile(os.path.join(path, f))]
        others = [f for f in visible if not os.path.isfile(os.path.join(path, f))]
        if others:  # a sub-folder's ratings would otherwise be left out without a word
            raise RatingsFormatError(f"{path}: holds {others[0]!r}, not a file: a data folder "
                                     "holds rating files only (the folders of a split are read "
                                     "one at a time); move it or name its files' folder")
        if not files:
            raise RatingsFormatError(f"{path}: directory holds no rating files")
        return files
    if not os.path.exists(path):
        raise FileNotFoundError(f"rating data not found: {path!r}")
    if not os.path.isfile(path):  # a pipe or device: read twice (sniffing, then parsing)
        raise RatingsFormatError(f"{path}: not a regular file (a pipe or a device); the "
                                 "readers need a file they can read twice: write it out first")
    return [path]


def lf_line_ends(raw: bytes) -> bytes:
    """``raw`` with CRLF and lone CR (old Mac) line ends made LF: ``5\r1`` is two lines, never
    the number 51."""
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if b"\r" in raw else raw


_POW10 = 10 ** np.arange(16, dtype=np.int64)


def _parse_decimals(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                    chunk: int = 1 << 19) -> np.ndarray | None:
    """Values of the fields ``buf[starts[i]:ends[i]]`` written as plain decimals (digits with at
    most one '.', at most 15 digits), exactly as ``float()`` reads them; None for anything else
    (signs, exponents, blanks, empty fields), which the callers parse the general way.

    All fields of a chunk at once, character position by character position: the integer of the
    digits, then one division by a power of ten (both exact in float64, so the quotient is the
    correctly rounded value).
    """
    lens = ends - starts
    if lens.size == 0:
        return np.zeros((0,))
    if lens.min() < 1 or lens.max() > 16:
        return None
    width = int(lens.max())
    last = buf.size - 1
    out = np.empty(lens.size, np.float64)
    for lo in range(0, lens.size, chunk):
        n, start = lens[lo:lo + chunk], starts[lo:lo + chunk]
        value = np.zeros(n.size, np.int64)
        frac = np.zeros(n.size, np.int64)
        n_digits = np.zeros(n.size, np.int64)
        seen_dot = np.zeros(n.size, bool)
        for k in range(width):  # Horner's rule, one character position of every field at a time
            inside = n > k
            chars = buf[np.minimum(start + k, last)]
            digit = chars - np.uint8(48)  # wraps around for bytes below '0'
            is_digit = inside & (digit <= 9)
            is_dot = inside & (chars == 46)
            if (inside & ~is_digit & ~is_dot).any() or (is_dot & seen_dot).any():
                return None
            value = np.where(is_digit, value * 10 + digit, value)
            frac += is_digit & seen_dot
            n_digits += is_digit
            seen_dot |= is_dot
        if n_digits.min() < 1 or n_digits.max() > 15:
            return None
        out[lo:lo + chunk] = value / _POW10[frac]
    return out


def _parse_ints(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                chunk: int = 1 << 18) -> np.ndarray | None:
    """Values of the (lines, columns) fields ``buf[starts:ends]`` when every one is 1 to 9 plain
    digits (the usual rating file: integer ids and ratings), as float64; None otherwise.

    Column by column and chunk by chunk (cache-sized), digit position by digit position from
    the right: one gather and one multiply-add per position, in int32.
    """
    lens = ends - starts
    if lens.size == 0:
        return np.zeros(lens.shape)
    if lens.min() < 1 or lens.max() > 9:
        return None
    out = np.empty(lens.shape, np.float64)
    for col in range(lens.shape[1]):
        width = int(lens[:, col].max())
        for lo in range(0, lens.shape[0], chunk):
            n = lens[lo:lo + chunk, col]
            end = ends[lo:lo + chunk, col]
            value = np.zeros(n.size, np.int32)
            bad = np.zeros(n.size, bool)
            for k in range(width):
                digit = buf[end - (k + 1)] - np.uint8(48)  # wraps around below '0'
                if k:  # position k exists only in fields longer than k
                    digit = np.where(n > k, digit, np.uint8(0))
                bad |= digit > 9
                value += digit.astype(np.int32) * np.int32(10 ** k)
            if bad.any():
                return None
            out[lo:lo + chunk, col] = value
    return out


def _parse_fast(raw: bytes, delimiter: str) -> np.ndarray | None:
    """Vectorised parser of a well-formed block: (lines, 3) values of the first three fields when
    every line has the same number (>= 3) of fields, the first two are integers of 1 to 9 digits
    and the third a plain decimal; None when the file needs the general reader (which is exact
    for everything else and names the line of any error)."""
    if not raw or raw.isspace():
        return np.zeros((0, 3))
    # CRLF ends become LF; a lone CR (an old Mac line end) is left in place: no digit, so the
    # general reader, which takes CR as a line end, reads the file
    data = raw.replace(b"\r\n", b"\n") if b"\r" in raw else raw
    if not data.endswith(b"\n"):
        data += b"\n"
    delim = delimiter.encode()
    if len(delim) > 1:  # e.g. MovieLens-1M's '::': a tab stands in when the text holds none
        if b"\t" in data:
            return None
        data, delim = data.replace(delim, b"\t"), b"\t"
    if len(delim) != 1:
        return None
    buf = np.frombuffer(data, dtype=np.uint8)
    bounds = np.flatnonzero((buf == delim[0]) | (buf == 10))  # every field's end
    line_ends = np.flatnonzero(buf[bounds] == 10)
    per_line = np.diff(line_ends, prepend=-1) - 1  # delimiters per line
    if per_line.size == 0 or per_line.min() != per_line.max() or per_line[0] < 2:
        return None  # ragged, blank or short lines
    fields = int(per_line[0]) + 1
    starts = np.empty_like(bounds)
    starts[0], starts[1:] = 0, bounds[:-1] + 1
    starts, bounds = starts.reshape(-1, fields), bounds.reshape(-1, fields)
    ids = _parse_ints(buf, starts[:, :2], bounds[:, :2])  # exact: at most 9 digits
    if ids is None:
        return None
    ratings = _parse_ints(buf, starts[:, 2:3], bounds[:, 2:3])
    if ratings is None:
        ratings = _parse_decimals(buf, starts[:, 2], bounds[:, 2])
        if ratings is None:
            return None
        ratings = ratings.reshape(-1, 1)
    return np.concatenate([ids, ratings], axis=1)


CHUNK_BYTES = 1 << 27  # text parsed per vectorised pass: bounds the parser's temporaries


def parse_fast_file(path: str, delimiter: str,
                    chunk_bytes: int = CHUNK_BYTES) -> np.ndarray | None:
    """:func:`_parse_fast` over a file read in blocks of whole lines (peak memory: the values
    plus one block's temporaries, not the whole text's); None as soon as a block needs the
    general reader."""
    parts, tail = [], b""
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk_bytes)
            if not block:
                break
            data = tail + block
            cut = data.rfind(b"\n") + 1
            data, tail = data[:cut], data[cut:]
            if data.isspace():  # blank lines: the general reader keeps line numbers right
                return None
            if data:
                values = _parse_fast(data, delimiter)
                if values is None:
                    return None
                parts.append(values)
    if tail:
        values = _parse_fast(tail, delimiter)
        if values is None:
            return None
        parts.append(values)
    return np.concatenate(parts) if parts else np.zeros((0, 3))


def _put_digits(mat: np.ndarray, last_col: int, values: np.ndarray, width: int) -> None:
    """Writes non-negative ``values`` right-aligned in ``mat[:, last_col-width+1:last_col+1]``.

    Leading positions stay 0 (padding that :func:`format_ratings_lines` squeezes out).
    """
    q = values.astype(np.uint64 if width > 9 else np.uint32)
    for k in range(width):
        nq = q // 10
        d = (q - nq * 10).astype(np.uint8) + 48
        if k > 0:
            d[q == 0] = 0
        mat[:, last_col - k] = d
        q = nq


def format_ratings_lines(users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
                         delimiter: str = "\t") -> bytes:
    """Vectorised ``f"{user}{d}{item}{d}{float(rating):g}\\n"`` for every rating (same bytes).

    Ids must be non-negative integers. Each line is laid out in a fixed-width byte row with zero
    padding, and the padding is then squeezed out. Used by :func:`write_ratings_text`.
    """
    r = np.asarray(ratings, np.float32)
    if r.size == 0:
        return b""
    halves = r.astype(np.float64) * 2
    if np.all((halves == np.round(halves)) & (halves >= 1) & (halves <= 20)):
        codes = halves.astype(np.intp)  # half-star scales: a fixed table, no sort
        table = [""] + [f"{float(np.float32(k / 2)):g}" for k in range(1, 21)]
    else:
        values, codes = np.unique(r, return_inverse=True)
        table = [f"{float(v):g}" for v in values]
    wr = max(len(t) for t in table)
    table_bytes = np.zeros((len(table), wr), np.uint8)
    for k, t in enumerate(table):
        table_bytes[k, :len(t)] = np.frombuffer(t.encode(), np.uint8)
    d = np.frombuffer(delimiter.encode(), np.uint8)
    wu, wi = len(str(int(np.max(users)))), len(str(int(np.max(items))))
    mat = np.zeros((r.size, wu + wi + wr + 2 * d.size + 1), np.uint8)
    _put_digits(mat, wu - 1, np.asarray(users), wu)
    mat[:, wu:wu + d.size] = d
    c = wu + d.size
    _put_digits(mat, c + wi - 1, np.asarray(items), wi)
    c += wi
    mat[:, c:c + d.size] = d
    c += d.size
    mat[:, c:c + wr] = table_bytes[codes]
    mat[:, -1] = 10
    return mat[mat != 0].tobytes()


def write_ratings_text(path: str, triples: Triples | Iterable[Sequence], delimiter: str = "\t",
                       chunk: int = 2_000_000) -> None:
    """Writes ratings in the reference's text format (atomically).

    :class:`Triples` with non-negative integer ids are formatted vectorised, ``chunk`` lines at
    a time; string ids are written as they are (ValueError for one holding the delimiter, a
    quote or a line end, which could not be read back).
    """
    if isinstance(triples, Triples):
        for ids in (triples.users, triples.items):
            if ids.dtype.kind == "U" and ids.size:
                bad = np.zeros(ids.shape, bool)
                for c in (delimiter, '"', "\n", "\r"):
                    bad |= np.char.find(ids, c) >= 0
                if bad.any():
                    raise ValueError(f"{path}: id {str(ids[bad][0])!r} holds the delimiter, a "
                                     "quote or a line end")
    if isinstance(triples, Triples) and (len(triples) == 0 or (
            triples.users.dtype.kind in "iu" and triples.items.dtype.kind in "iu"
            and int(np.min(triples.users)) >= 0 and int(np.min(triples.items)) >= 0)):
        def write_fast(fh):
            for s in range(0, len(triples), chunk):
                fh.write(format_ratings_lines(triples.users[s:s + chunk], triples.items[s:s + chunk],
                                              triples.ratings[s:s + chunk], delimiter))
        atomic_write(path, write_fast)
        return
    if isinstance(triples, Triples):
        arr = (triples.users, triples.items, triples.ratings)
    else:
        t = list(triples)
        arr = ([x[0] for x in t], [x[1] for x in t], [x[2] for x in t])
    def write(fh):
        text = lambda x: x if isinstance(x, str) else int(x)  # noqa: E731
        lines = [f"{text(u)}{delimiter}{text(i)}{delimiter}{float(r):g}\n"
                 for u, i, r in zip(*arr)]
        fh.write("".join(lines).encode())
    atomic_write(path, write)
