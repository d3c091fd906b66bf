"""Reading any delimited ratings table: the one entry point is :func:`read_table`.

A table is a file, or a directory of files, with one rating per line. What it may look like:

- a header line or not (``header="auto"`` detects one: no field of the first line at the user,
  item or rating position is a number, and the second line's rating is);
- any delimiter: tab, ``,``, ``;``, ``|``, space or a multi-character one such as MovieLens-1M's
  ``::`` (``delimiter="auto"`` picks the first of :data:`AUTO_DELIMITERS` that splits the first
  line into >= 3 fields and at least half of the first lines into as many);
- CRLF line ends, blank lines, ``"quoted"`` fields; with ``delimiter=" "`` any run of blanks
  (spaces, tabs) separates fields and blanks at line ends are ignored;
- the user, item and rating columns (and optionally a timestamp column) named by header name or
  0-based position (``columns="userId,movieId,rating"`` or ``"0,1,2"``; default: the first three
  columns in ``column_order``);
- ids of any length. A column whose ids are all plain decimal integers (ASCII digits, leading
  zeros allowed: ``007`` is 7) that fit int64 is read as int64, exactly; any other id column
  (``u_17``, 20-digit ids, ``1_0``) is kept as the exact strings (a numpy ``'U'`` array),
  trimmed of surrounding blanks. Negative integer ids are refused;
- any real ratings: non-finite (NaN, inf) and 0 (indistinguishable from "unrated") are refused;
  negative ratings are read as they are, with a warning naming the first such line.

Headerless, integer-only files whose first three columns are user, item, rating (the reference's
``user<TAB>item<TAB>rating`` format, also ``::`` or ``,``) take the vectorised parser of
:mod:`deepae_jax.data.readers.text_format`; everything else is read by pyarrow's CSV reader. Every error
is a :class:`RatingsFormatError` naming the file and line (found on the failure path).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from deepae_jax.data.readers.diagnostics import check_ratings, is_number, split_fields
from deepae_jax.data.readers.text_format import (COLUMN_ORDERS, RatingsFormatError, Triples,
    concat_triples, list_rating_files, parse_fast_file)


AUTO_DELIMITERS = ("\t", "::", ",", ";", "|", " ")
DELIMITER_NAMES = {"auto": "auto", "tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";",
                   "pipe": "|", "space": " "}
HEADERS = ("auto", "true", "false")
ROLES = ("user", "item", "rating")
SNIFF_BYTES = 1 << 16


def normalize_delimiter(text: str) -> str:
    """The delimiter a flag value names: ``auto``, a name (``tab``, ``\\t``, ``comma``, ...) or
    the characters themselves; ValueError for an empty one or one holding a quote or newline."""
    d = DELIMITER_NAMES.get(text, text)
    if not d or any(c in d for c in "\"\r\n"):
        raise ValueError(f"--delimiter={text!r}: expected auto, tab, comma, semicolon, pipe, "
                         "space or the separator itself (e.g. , or ::)")
    return d


@dataclasses.dataclass(frozen=True)
class TableFormat:
    """How to read a ratings table (the Config fields of the same names; see the module doc)."""

    delimiter: str = "auto"
    header: str = "auto"
    columns: str = ""
    timestamp_column: str = ""
    column_order: str = "user,item,rating"

    def __post_init__(self):
        normalize_delimiter(self.delimiter)
        if self.header not in HEADERS:
            raise ValueError(f"--header={self.header!r}: choose one of {list(HEADERS)}")
        if self.column_order not in COLUMN_ORDERS:
            raise ValueError(f"--column_order={self.column_order!r}: choose one of "
                             f"{list(COLUMN_ORDERS)}")
        specs = self.specs()
        if self.columns and self.column_order != COLUMN_ORDERS[0]:
            raise ValueError(f"--columns={self.columns!r} names the user, item and rating "
                             "columns in that order; leave --column_order at its default")
        if len(set(specs.values())) != len(specs):
            raise ValueError(f"--columns={self.columns!r}, --timestamp_column="
                             f"{self.timestamp_column!r}: a column is used twice")
        if self.header == "false" and any(isinstance(s, str) for s in specs.values()):
            raise ValueError(f"--columns={self.columns!r}, --timestamp_column="
                             f"{self.timestamp_column!r}: column names need a header line "
                             "(--header=auto or true), or give 0-based positions")

    @classmethod
    def from_config(cls, cfg) -> "TableFormat":
        """The reading settings of a Config (or anything with those attributes)."""
        return cls(**{f.name: getattr(cfg, f.name, f.default) for f in dataclasses.fields(cls)})

    def specs(self) -> dict[str, int | str]:
        """Role (user, item, rating[, timestamp]) -> 0-based position or header name."""
        if self.columns:
            tokens = [t.strip() for t in self.columns.split(",")]
            if len(tokens) != 3 or not all(tokens):
                raise ValueError(f"--columns={self.columns!r}: expected the user, item and "
                                 "rating columns, e.g. userId,movieId,rating or 0,1,2")
        else:
            tokens = ["0", "1", "2"] if self.column_order == COLUMN_ORDERS[0] else ["1", "0", "2"]
        specs = dict(zip(ROLES, tokens))
        if self.timestamp_column.strip():
            specs["timestamp"] = self.timestamp_column.strip()
        return {r: int(t) if t.isdigit() else t for r, t in specs.items()}


def _head_lines(path: str) -> list[str]:
    """The first non-blank lines of a file (its first 64 KiB, undecodable bytes replaced)."""
    with open(path, "rb") as fh:
        raw = fh.read(SNIFF_BYTES)
    lines = raw.decode("utf-8", errors="replace").splitlines()
    if len(raw) == SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut
    return [ln for ln in lines if ln.strip()][:50]


def detect_delimiter(path: str, lines: list[str]) -> str:
    """The first of :data:`AUTO_DELIMITERS` that splits the first line into >= 3 fields and at
    least half of the first 20 lines into as many (a bad line among them is then reported by
    the reader with its line number); RatingsFormatError when none does."""
    for d in AUTO_DELIMITERS:
        counts = [len(split_fields(ln, d)) for ln in lines[:20]]
        if counts[0] >= 3 and 2 * counts.count(counts[0]) >= len(counts):
            return d
    raise RatingsFormatError(f"{path}: cannot detect the delimiter (none of tab, ::, comma, "
                             "semicolon, pipe, space splits the first lines into the same number "
                             f"of >= 3 fields); give --delimiter. First line: {lines[0][:80]!r}")


def detect_header(lines: list[str], delimiter: str, specs: dict) -> bool:
    """True when the first line is a header (see the module docstring)."""
    if any(isinstance(s, str) for s in specs.values()):
        return True
    first = split_fields(lines[0], delimiter)
    cells = [first[specs[r]] for r in ROLES if specs[r] < len(first)]
    if not cells or any(is_number(c) for c in cells):
        return False
    if len(lines) < 2:
        return True
    second = split_fields(lines[1], delimiter)
    return specs["rating"] < len(second) and is_number(second[specs["rating"]])


def _positions(path: str, specs: dict, header_fields: list[str] | None) -> dict[str, int]:
    """Role -> 0-based position, names looked up in the header; errors name the file."""
    names = [h.strip().lstrip("\ufeff") for h in header_fields] if header_fields else []
    out = {}
    for role, spec in specs.items():
        if isinstance(spec, int):
            out[role] = spec
        elif spec in names:
            out[role] = names.index(spec)
        else:
            raise RatingsFormatError(f"{path}:1: no column {spec!r} (the {role} column) in the "
                                     f"header {names}")
    return out


def read_table(path: str, fmt: TableFormat = TableFormat()) -> Triples:
    """The ratings of a file or directory of files (see the module docstring), with timestamps
    when ``fmt.timestamp_column`` is set. Errors name the file and line."""
    return concat_triples([_read_file(f, fmt) for f in list_rating_files(path)])


def read_ratings_text(path: str, delimiter: str = "auto", column_order: str = "user,item,rating",
                      **options) -> Triples:
    """:func:`read_table` with the historical signature (``options``: header, columns,
    timestamp_column)."""
    return read_table(path, TableFormat(delimiter, column_order=column_order, **options))


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one file is read: its delimiter, whether it has a header, role -> column position."""

    delimiter: str
    header: bool
    cols: dict


def layout(path: str, fmt: TableFormat) -> Layout | None:
    """The layout of one file under ``fmt`` (auto settings detected); None for an empty file."""
    lines = _head_lines(path)
    if not lines:
        return None
    d = normalize_delimiter(fmt.delimiter)
    d = detect_delimiter(path, lines) if d == "auto" else d
    specs = fmt.specs()
    header = detect_header(lines, d, specs) if fmt.header == "auto" else fmt.header == "true"
    return Layout(d, header, _positions(path, specs, split_fields(lines[0], d) if header else None))


def _read_file(path: str, fmt: TableFormat) -> Triples:
    lay = layout(path, fmt)
    if lay is None:
        return Triples(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    d, header, cols = lay.delimiter, lay.header, lay.cols
    if not header and "timestamp" not in cols and cols["rating"] == 2 and cols["user"] < 2:
        values = parse_fast_file(path, d)
        if values is not None:  # ids of at most 9 digits, ratings plain decimals >= 0
            lines_of = np.arange(1, values.shape[0] + 1)
            check_ratings(path, values[:, 2], lambda rows: lines_of[rows])
            a, b = values[:, 0].astype(np.int64), values[:, 1].astype(np.int64)
            users, items = (a, b) if cols["user"] == 0 else (b, a)
            return Triples(users, items, values[:, 2].astype(np.float32))
    from deepae_jax.data.readers import arrow  # pyarrow is imported only when needed
    return arrow.read_arrow(path, d, header, cols)
