"""The reference's text format: one rating per line, ``user<TAB>item<TAB>rating``.

Extra columns (such as a timestamp) are ignored; a data set is a file or a directory of such
files. Well-formed files are parsed vectorised (:func:`_parse_fast`); anything unusual falls back
to an exact line-by-line parser whose errors name the file and line. Writing is vectorised too.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Iterable, Sequence

import numpy as np

from deepae_jax.io_utils import atomic_write

COLUMN_ORDERS = ("user,item,rating", "item,user,rating")


class RatingsFormatError(ValueError):
    """Malformed rating data; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class Triples:
    """Ratings as parallel arrays of ORIGINAL user ids, item ids and rating values."""

    users: np.ndarray  # int64
    items: np.ndarray  # int64
    ratings: np.ndarray  # float32

    def __len__(self) -> int:
        return int(self.ratings.shape[0])


def list_rating_files(path: str) -> list[str]:
    """The files of a data set: ``path`` itself, or the visible files of directory ``path``."""
    if os.path.isdir(path):
        files = sorted(
            os.path.join(path, f) for f in os.listdir(path)
            if not f.startswith((".", "_")) and os.path.isfile(os.path.join(path, f)))
        if not files:
            raise RatingsFormatError(f"{path}: directory holds no rating files")
        return files
    if not os.path.exists(path):
        raise FileNotFoundError(f"rating data not found: {path!r}")
    return [path]


def _check_values(path: str, users, items, ratings, line_numbers=None) -> None:
    """Raises RatingsFormatError naming the first line whose rating is 0 or not finite."""
    bad = ~np.isfinite(ratings) | (ratings == 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        line = int(line_numbers[i]) if line_numbers is not None else i + 1
        what = "0 (indistinguishable from 'unrated')" if ratings[i] == 0 else repr(float(ratings[i]))
        raise RatingsFormatError(f"{path}:{line}: rating {what} is not allowed")
    for name, ids in (("user", users), ("item", items)):
        if ids.size and (ids.min() < 0):
            i = int(np.flatnonzero(ids < 0)[0])
            line = int(line_numbers[i]) if line_numbers is not None else i + 1
            raise RatingsFormatError(f"{path}:{line}: negative {name} id {int(ids[i])}")


def _parse_slow(path: str, text: str, delimiter: str) -> np.ndarray:
    """Line-by-line parser: exact, and names the file and line of the first bad line."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = line.split(delimiter) if delimiter.strip() else line.split()
        if len(parts) < 3:
            raise RatingsFormatError(
                f"{path}:{lineno}: expected 3 fields (user, item, rating) separated by "
                f"{delimiter!r}, got {len(parts)}: {line[:80]!r}")
        try:
            u, i = int(parts[0]), int(parts[1])
        except ValueError:
            raise RatingsFormatError(
                f"{path}:{lineno}: user and item ids must be integers: {line[:80]!r}") from None
        try:
            r = float(parts[2])
        except ValueError:
            raise RatingsFormatError(
                f"{path}:{lineno}: rating {parts[2]!r} is not a number") from None
        if not np.isfinite(r) or r == 0:
            what = "0 (indistinguishable from 'unrated')" if r == 0 else repr(parts[2])
            raise RatingsFormatError(f"{path}:{lineno}: rating {what} is not allowed")
        rows.append((u, i, r))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


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
    """Vectorised parser for well-formed files; None when the file needs the exact parser."""
    if not raw or raw.isspace():
        return np.zeros((0, 3))
    data = raw.replace(b"\r", b"") if b"\r" in raw else raw
    if not data.endswith(b"\n"):
        data += b"\n"
    delim = delimiter.encode()
    buf = np.frombuffer(data, dtype=np.uint8)
    if len(delim) == 1:
        bounds = np.flatnonzero((buf == delim[0]) | (buf == 10))  # every field's end
        line_ends = np.flatnonzero(buf[bounds] == 10)
        per_line = np.diff(line_ends, prepend=-1) - 1  # delimiters per line
        if per_line.size == 0 or per_line.min() != per_line.max() or per_line[0] < 2:
            return None  # ragged, blank or short lines: let the exact parser explain
        fields = int(per_line[0]) + 1
        starts = np.empty_like(bounds)
        starts[0], starts[1:] = 0, bounds[:-1] + 1
        first3 = lambda a: a.reshape(-1, fields)[:, :3]  # noqa: E731
        values = _parse_ints(buf, first3(starts), first3(bounds))
        if values is not None:
            return values
        values = _parse_decimals(buf, first3(starts).reshape(-1), first3(bounds).reshape(-1))
        if values is not None:  # plain decimal digits: parsed without text conversion
            values = values.reshape(-1, 3)
            if np.array_equal(values[:, :2], np.floor(values[:, :2])):
                return values
        data = data.replace(delim, b" ")
    elif delim:
        count = data.count(delim)
        if count % data.count(b"\n"):
            return None
        fields = count // data.count(b"\n") + 1
        data = data.replace(delim, b" ")
    else:
        return None
    if b"nan" in data.lower() or b"inf" in data.lower():
        return None
    newlines = data.count(b"\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            values = np.fromstring(data, dtype=np.float64, sep=" ")  # noqa: NPY201 (text mode)
        except (DeprecationWarning, ValueError):
            return None
    if values.size != fields * newlines:
        return None
    values = values.reshape(newlines, fields)[:, :3]
    ids = values[:, :2]
    if not np.array_equal(ids, np.floor(ids)):
        return None
    return values


CHUNK_BYTES = 1 << 27  # text parsed per vectorised pass: bounds the parser's temporaries


def _parse_fast_file(path: str, delimiter: str,
                     chunk_bytes: int = CHUNK_BYTES) -> np.ndarray | None:
    """:func:`_parse_fast` over a file read in blocks of whole lines (peak memory: the values
    plus one block's temporaries, not the whole text's); None as soon as a block needs the
    exact parser."""
    parts, tail = [], b""
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk_bytes)
            if not block:
                break
            data = tail + block
            cut = data.rfind(b"\n") + 1
            data, tail = data[:cut], data[cut:]
            if data.isspace():  # blank lines: the exact parser keeps line numbers right
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


def read_ratings_text(path: str, delimiter: str = "\t",
                      column_order: str = "user,item,rating") -> Triples:
    """Reads a rating file or directory of files in the reference's text format.

    ``column_order`` is ``"user,item,rating"`` (the reference's default) or ``"item,user,rating"``
    (e.g. DeepRecommender's ``testData_iRec``). Raises :class:`RatingsFormatError` naming the file
    and line for lines with fewer than three fields, non-integer ids, non-numeric, non-finite or
    zero ratings.
    """
    if column_order not in COLUMN_ORDERS:
        raise ValueError(f"column_order must be one of {COLUMN_ORDERS}, got {column_order!r}")
    parts = []
    for f in list_rating_files(path):
        values = _parse_fast_file(f, delimiter)
        if values is None:
            with open(f, "rb") as fh:
                raw = fh.read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                line = raw[:e.start].count(b"\n") + 1
                raise RatingsFormatError(f"{f}:{line}: not valid UTF-8 text ({e.reason})") from None
            values = _parse_slow(f, text, delimiter)
        else:
            _check_values(f, values[:, 0], values[:, 1], values[:, 2])
        parts.append(values)
    values = np.concatenate(parts) if parts else np.zeros((0, 3))
    a, b = values[:, 0].astype(np.int64), values[:, 1].astype(np.int64)
    users, items = (a, b) if column_order == "user,item,rating" else (b, a)
    return Triples(users, items, values[:, 2].astype(np.float32))


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

    :class:`Triples` with non-negative ids are formatted vectorised, ``chunk`` lines at a time.
    """
    if isinstance(triples, Triples) and (len(triples) == 0 or (
            int(np.min(triples.users)) >= 0 and int(np.min(triples.items)) >= 0)):
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
        lines = [f"{int(u)}{delimiter}{int(i)}{delimiter}{float(r):g}\n" for u, i, r in zip(*arr)]
        fh.write("".join(lines).encode())
    atomic_write(path, write)
