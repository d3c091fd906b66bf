"""The general path of :mod:`deepae_jax.data.readers.table`: pyarrow's CSV reader, exact id typing.

pyarrow (multi-threaded C++) reads every needed column as strings; ids are then typed exactly
(:func:`typed_ids`) and ratings and timestamps converted with pyarrow's strict number parsers
(``1_0`` is not a number there, unlike Python's ``float``). A multi-character delimiter (``::``)
is replaced by a control byte absent from the file first, as pyarrow takes one character; with
a space delimiter, runs of blanks are collapsed first.
"""
from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from deepae_jax.data.readers.diagnostics import check_ratings, data_line_numbers, explain
from deepae_jax.data.readers.text_format import RatingsFormatError, Triples

_SUBSTITUTES = (b"\x1f", b"\x1e", b"\x1d", b"\x1c")


def _source(path: str, delimiter: str):
    """(what pyarrow reads, its one-character delimiter)."""
    if len(delimiter) == 1 and delimiter != " ":
        return path, delimiter
    with open(path, "rb") as fh:
        raw = fh.read()
    if delimiter == " ":  # runs of blanks separate fields; none at line ends
        raw = re.sub(rb"[ \t]+", b" ", raw)
        raw = re.sub(rb"(?m)^ | (?=\r?$)", b"", raw)
        return pa.BufferReader(raw), " "
    sub = next((s for s in _SUBSTITUTES if s not in raw), None)
    if sub is None:
        raise RatingsFormatError(f"{path}: the delimiter {delimiter!r} cannot be read (the file "
                                 "holds every substitute control byte)")
    return pa.BufferReader(raw.replace(delimiter.encode(), sub)), sub.decode()


def read_arrow(path: str, delimiter: str, header: bool, cols: dict[str, int]) -> Triples:
    """The ratings of one file through pyarrow; errors name the file and line."""
    names = {role: f"f{k}" for role, k in cols.items()}
    try:
        source, d = _source(path, delimiter)
        table = pacsv.read_csv(
            source,
            pacsv.ReadOptions(autogenerate_column_names=True, skip_rows=int(header),
                              block_size=1 << 26),
            pacsv.ParseOptions(delimiter=d, quote_char='"', ignore_empty_lines=True),
            pacsv.ConvertOptions(column_types={n: pa.string() for n in names.values()},
                                 include_columns=list(names.values()),
                                 strings_can_be_null=False, quoted_strings_can_be_null=False))
        columns = {role: pc.utf8_trim_whitespace(table[n]) for role, n in names.items()}
        rating = pc.cast(columns["rating"], pa.float64()).to_numpy()
        stamps = (pc.cast(columns["timestamp"], pa.int64()).to_numpy()
                  if "timestamp" in columns else None)
    except (pa.ArrowInvalid, KeyError) as e:
        raise explain(path, delimiter, header, cols, str(e).splitlines()[0]) from None
    lines = _LineMap(path, header)
    check_ratings(path, rating, lines)
    users = typed_ids(columns["user"], "user", path, lines)
    items = typed_ids(columns["item"], "item", path, lines)
    return Triples(users, items, rating.astype(np.float32), stamps)


class _LineMap:
    """Data row -> file line, computed once and only when an error needs it."""

    def __init__(self, path: str, header: bool):
        self.path, self.header, self.lines = path, header, None

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        if self.lines is None:
            self.lines = data_line_numbers(self.path, self.header)
        return self.lines[rows]


def typed_ids(ids: pa.ChunkedArray | pa.Array, role: str, source: str, line_of,
              unit: str = ":") -> np.ndarray:
    """Exact ids: int64 when every id is ASCII digits fitting int64, else the strings ('U').

    Refuses empty ids and negative integer ids (naming ``source``, ``unit`` and the line
    ``line_of(rows)``).
    """
    if len(ids) == 0:
        return np.zeros(0, np.int64)
    where = lambda mask: int(np.flatnonzero(np.asarray(mask))[0])  # noqa: E731
    empty = pc.equal(pc.utf8_length(ids), 0).to_numpy(zero_copy_only=False)
    if empty.any():
        raise RatingsFormatError(f"{source}{unit}{int(line_of(np.array([where(empty)]))[0])}: "
                                 f"empty {role} id")
    if pc.all(pc.match_substring_regex(ids, r"^[0-9]{1,19}$")).as_py():
        try:
            return pc.cast(ids, pa.int64()).to_numpy()
        except pa.ArrowInvalid:
            pass  # beyond int64: kept as the strings
    elif pc.all(pc.match_substring_regex(ids, r"^-?[0-9]+$")).as_py():
        negative = pc.starts_with(ids, "-").to_numpy(zero_copy_only=False)
        if negative.any():
            k = where(negative)
            raise RatingsFormatError(f"{source}{unit}{int(line_of(np.array([k]))[0])}: negative "
                                     f"{role} id {ids[k].as_py()} (ids must be >= 0, or not "
                                     "integers)")
    return np.asarray(ids.to_numpy(zero_copy_only=False), dtype=str)


def triples_from_dataframe(df, user_col, item_col, rating_col, timestamp_col=None,
                           source: str = "DataFrame") -> Triples:
    """Triples of a pandas DataFrame's columns, ids typed as :func:`typed_ids` does (integer
    columns stay int64); errors name the DataFrame row (0-based position)."""
    for c in (user_col, item_col, rating_col) + ((timestamp_col,) if timestamp_col else ()):
        if c not in df.columns:
            raise RatingsFormatError(f"{source}: no column {c!r} (columns: {list(df.columns)})")
    rows = lambda k: k  # noqa: E731  (0-based row positions stand in for lines)
    src = source

    def ids(col, role):
        values = df[col].to_numpy()
        if values.dtype.kind in "iu":
            if values.size and values.min() < 0:
                k = int(np.flatnonzero(values < 0)[0])
                raise RatingsFormatError(f"{src} row {k}: negative {role} id {values[k]}")
            return values.astype(np.int64)
        missing = df[col].isna().to_numpy()
        if missing.any():
            raise RatingsFormatError(f"{src} row {int(np.flatnonzero(missing)[0])}: missing "
                                     f"{role} id")
        if values.dtype.kind == "f":
            raise RatingsFormatError(f"{source}: column {col!r} holds {values.dtype} {role} "
                                     "ids; give integers or strings")
        return typed_ids(pc.utf8_trim_whitespace(pa.array(values.astype(str))), role, src, rows,
                         " row ")
    try:
        rating = np.asarray(df[rating_col].to_numpy(), np.float64)
    except (TypeError, ValueError) as e:
        raise RatingsFormatError(f"{source}: column {rating_col!r} is not numeric ({e})") from None
    check_ratings(src, rating, rows, " row ")
    stamps = (np.asarray(df[timestamp_col].to_numpy(), np.int64) if timestamp_col else None)
    return Triples(ids(user_col, "user"), ids(item_col, "item"), rating.astype(np.float32),
                   stamps)
