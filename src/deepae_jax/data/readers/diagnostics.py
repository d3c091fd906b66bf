"""What the table readers share: the splitting of a line into fields, the checks of the ratings
read (finite, non-zero), the UTF-8 text of a file and the error of the first bad line, all naming
the file and line (used by :mod:`deepae_jax.data.readers.table` and
:mod:`deepae_jax.data.readers.arrow`)."""
from __future__ import annotations

import csv
import logging
import re

import numpy as np

from deepae_jax.data.readers.text_format import RatingsFormatError

log = logging.getLogger("deepae_jax")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(nan|inf|infinity)$", re.I)
_INTEGER = re.compile(r"^-?\d+$")  # as pyarrow casts to int64 (no "+")


def split_fields(line: str, delimiter: str) -> list[str]:
    """The fields of one line (quotes honoured for one-character delimiters; with a space,
    runs of blanks separate fields, as in ``str.split()``)."""
    if delimiter == " ":
        return line.split()
    if len(delimiter) > 1:
        return line.split(delimiter)
    return next(csv.reader([line], delimiter=delimiter, quotechar='"'), [])


def is_number(text: str) -> bool:
    return bool(_NUMBER.match(text.strip()))


def check_ratings(path: str, ratings: np.ndarray, line_of, unit: str = ":") -> None:
    """Refuses non-finite and zero ratings naming the line (``line_of(rows)`` maps data rows to
    file lines; ``unit`` separates path and line); warns once, naming the line, when some are
    negative."""
    bad = ~np.isfinite(ratings) | (ratings == 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = ("0 (indistinguishable from 'unrated')" if ratings[i] == 0
                else repr(float(ratings[i])))
        raise RatingsFormatError(f"{path}{unit}{int(line_of(np.array([i]))[0])}: rating {what} "
                                 "is not allowed")
    if ratings.size and ratings.min() < 0:
        i = int(np.flatnonzero(ratings < 0)[0])
        log.warning("%s%s%d: negative rating %g: %d negative ratings read as they are (0 means "
                    "'unrated'; any other real value is a rating)", path, unit,
                    int(line_of(np.array([i]))[0]), float(ratings[i]), int((ratings < 0).sum()))


def read_utf8(path: str, hint: str = "") -> str:
    """The text of ``path``; bytes that are not UTF-8 raise RatingsFormatError naming the
    file and line (``hint`` is appended to the message)."""
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise RatingsFormatError(f"{path}:{line}: not valid UTF-8 text ({e.reason}){hint}"
                                 ) from None


def explain(path: str, delimiter: str, header: bool, cols: dict[str, int],
            arrow_message: str = "") -> RatingsFormatError:
    """The error of the first bad line of a file that the fast readers refused: bytes that are
    not UTF-8, a line with another number of fields than the first, a rating that is not a
    number or a timestamp that is not an integer. Falls back to ``arrow_message``."""
    try:
        text = read_utf8(path)
    except RatingsFormatError as e:
        return e
    expected, seen_header = None, not header
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not seen_header:
            seen_header = True
            continue
        if not line:
            continue
        fields = split_fields(line, delimiter)
        expected = expected or max(len(fields), 1 + max(cols.values()))
        if len(fields) != expected:
            return RatingsFormatError(
                f"{path}:{lineno}: expected {expected} fields separated by {delimiter!r} "
                f"(user, item, rating at positions {cols['user']}, {cols['item']}, "
                f"{cols['rating']}), got {len(fields)}: {line[:80]!r}")
        rating = fields[cols["rating"]].strip()
        if not is_number(rating):
            return RatingsFormatError(f"{path}:{lineno}: rating {rating!r} is not a number")
        if "timestamp" in cols and not _INTEGER.match(fields[cols["timestamp"]].strip()):
            return RatingsFormatError(f"{path}:{lineno}: timestamp "
                                      f"{fields[cols['timestamp']].strip()!r} is not an integer")
        for role in ("user", "item"):
            if not fields[cols[role]].strip():
                return RatingsFormatError(f"{path}:{lineno}: empty {role} id")
    return RatingsFormatError(f"{path}: {arrow_message or 'not a ratings table'}")


def data_line_numbers(path: str, header: bool) -> np.ndarray:
    """The 1-based file line of every data row (blank lines and the header skipped), for error
    messages (vectorised: line ends, then non-empty lines)."""
    with open(path, "rb") as fh:
        buf = np.frombuffer(fh.read(), np.uint8)
    ends = np.flatnonzero(buf == 10)
    if buf.size and buf[-1] != 10:
        ends = np.append(ends, buf.size)
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    length = ends - starts
    length -= (length > 0) & (buf[np.maximum(ends - 1, 0)] == 13)  # CRLF
    keep = np.flatnonzero(length > 0) + 1
    return keep[1:] if header else keep
