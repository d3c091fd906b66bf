"""Splits any rating data into TRAIN / VALID / TEST folders (text + ``.npz`` + stats.md).

Usage (``deepae split --help`` lists every flag; ``python -m deepae_jax.data.split`` is the same)::

    deepae split INPUT OUT_DIR --method=M [--seed=S] [--test_share=0.1]
        [--valid_share=0.1] [--folds=5] [--delimiter=auto] [--header=auto] [--columns=...]
        [--timestamp_column=...] [--name=PREFIX]
        [--duplicates=error|last] [--overwrite]

M is one of random, user_random, temporal, user_temporal, leave_one_out, kfold (defined in
:mod:`deepae_jax.data.split_methods`). INPUT is a MovieLens ratings file or folder (``u.data``,
``ratings.dat``, ``ratings.csv``), a ``.npz`` rating matrix, or any ratings table read with the
trainer's reading flags (:mod:`deepae_jax.data.readers.table`: header, delimiter, columns by name or
position, string ids); unless ``--timestamp_column`` names it, the timestamp is a header column
named ``timestamp``, ``time`` or ``ts``, or a headerless table's 4th column. Writes
``OUT_DIR/TRAIN/train.txt`` (+ ``VALID``, ``TEST``) in the reference's text format,
``OUT_DIR/TRAIN.npz`` ..., and ``OUT_DIR/stats.md``; ``kfold`` writes the same into
``OUT_DIR/fold_0`` .. ``fold_{K-1}``. Staged in a temporary folder, renamed at the end.
Held-out ratings of users or items that have no TRAIN rating are kept (training drops and counts
them at evaluation); stats.md counts them.
"""
from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np

from deepae_jax.data.datasets import movielens
from deepae_jax.data import split_io
from deepae_jax.data.ratings import RatingMatrix, Triples, build_matrix
from deepae_jax.data.split_methods import split_indices
from deepae_jax.data.readers.table import TableFormat, read_table
from deepae_jax.data.readers.table import layout as table_layout

HEADER = ("part", "users", "ratings", "items", "min rating", "max rating", "share",
          "held-out of users/items not in TRAIN")


@dataclasses.dataclass(frozen=True)
class SplitInput:
    """Ratings to split: triples, their timestamps (None if the data has none), the source."""

    triples: Triples
    timestamps: np.ndarray | None
    source: str


TIMESTAMP_NAMES = ("timestamp", "time", "ts", "unix_time")


def _read_table(path: str, fmt: TableFormat) -> SplitInput:
    """Any ratings table (:mod:`deepae_jax.data.readers.table`). Without ``--timestamp_column``, the
    timestamp is a header column named like one (``timestamp``, ``time``, ``ts``), or the 4th
    column of a headerless file, as in MovieLens's ``u.data``."""
    if not fmt.timestamp_column and os.path.isfile(path):
        guess = _timestamp_guess(path, fmt)
        if guess:
            fmt = dataclasses.replace(fmt, timestamp_column=guess)
    triples = read_table(path, fmt)
    return SplitInput(Triples(triples.users, triples.items, triples.ratings),
                      triples.timestamps, path)


def _timestamp_guess(path: str, fmt: TableFormat) -> str:
    """The timestamp column of one file when its layout tells it, else ""."""
    lay = table_layout(path, fmt)
    if lay is None:
        return ""
    with open(path, encoding="utf-8", errors="replace") as fh:
        first = next((ln for ln in fh if ln.strip()), "").rstrip("\r\n").lstrip("\ufeff")
    fields = first.split() if lay.delimiter == " " else first.split(lay.delimiter)
    if not lay.header:
        return "3" if len(fields) >= 4 else ""
    names = [f.strip().strip('"').strip() for f in fields]
    used = set(lay.cols.values())
    for i, name in enumerate(names):
        if name.lower() in TIMESTAMP_NAMES and i not in used:
            return str(i)
    return ""


def _read_input(path: str, fmt: TableFormat = TableFormat(),
                duplicates: str = "error") -> SplitInput:
    """The ratings of INPUT (see the module docstring), with the duplicate policy applied."""
    if (os.path.isdir(path) and any(f in movielens.RATING_FILES for f in os.listdir(path))
            or path.endswith((".base", ".test"))):
        data = movielens.check_duplicates(movielens.read_movielens(path), duplicates)
        return SplitInput(data.triples, data.timestamps, data.source)
    if path.endswith(".npz") and os.path.isfile(path):
        return _dedup(SplitInput(RatingMatrix.load(path).to_triples(), None, path), duplicates)
    if not os.path.exists(path):
        raise FileNotFoundError(f"rating data not found: {path!r}")
    return _dedup(_read_table(path, fmt), duplicates)


def _dedup(data: SplitInput, duplicates: str) -> SplitInput:
    ts = data.timestamps if data.timestamps is not None else np.zeros(len(data.triples), np.int64)
    lines = np.arange(1, len(data.triples) + 1, dtype=np.int64)
    kept = movielens.check_duplicates(
        movielens.MovieLensRatings(data.triples, ts, data.source, lines), duplicates)
    return SplitInput(kept.triples, kept.timestamps if data.timestamps is not None else None,
                      data.source)


def _row(part: str, t: Triples, n_all: int, train: Triples | None) -> list:
    s = movielens.stats(t)
    unknown = "-"
    if train is not None:
        unknown = int((~np.isin(t.users, train.users) | ~np.isin(t.items, train.items)).sum())
    return [part, s["users"], s["ratings"], s["items"], s["min"], s["max"],
            f"{len(t) / max(n_all, 1):.2%}", unknown]


def convert(input_path: str, out_dir: str, method: str, seed: int = 0, test_share: float = 0.1,
            valid_share: float = 0.1, folds: int = 5, fmt: TableFormat = TableFormat(),
            name: str = "", duplicates: str = "error", overwrite: bool = False) -> str:
    """Writes one split of INPUT (read as ``fmt`` says) into ``out_dir``; returns the stats
    table."""
    split_io.check_out_dir(out_dir, overwrite)
    data = _read_input(input_path, fmt, duplicates)
    t = data.triples
    parts = split_indices(t.users, method, data.timestamps, test_share, valid_share, seed, folds)
    rows = []
    with split_io.staged_dir(out_dir, overwrite) as stage:
        for key, idx in parts.items():
            folder, _, part = key.rpartition("/")
            part_name = f"{name}_{part}" if name else part
            triples = movielens.subset(t, idx)
            matrix = build_matrix(triples, source=f"{key}") if len(triples) else None
            split_io.write_part(os.path.join(stage, folder), part_name, triples, matrix)
            train_key = f"{folder}/TRAIN" if folder else "TRAIN"
            train = None if part == "TRAIN" else movielens.subset(t, parts[train_key])
            rows.append(_row(f"{folder}/{part_name}" if folder else part_name, triples, len(t),
                             train))
        table = split_io.markdown_table(HEADER, rows)
        timing = ("by timestamp" if data.timestamps is not None else
                  "no timestamps: random order")
        notes = [f"method {method}, seed {seed}, test_share {test_share}, valid_share "
                 f"{valid_share}" + (f", {folds} folds" if method == "kfold" else ""),
                 f"source {data.source}, {len(t):,} ratings; {timing}",
                 "VALID is carved from the training part by the same method (kfold: random); "
                 "see deepae_jax/data/split_methods.py"]
        split_io.write_stats(stage, f"Split {method}", table, notes)
    return table


if __name__ == "__main__":  # the command line lives in deepae_jax.cli (deepae split)
    from deepae_jax.cli import data as cli_data
    sys.exit(cli_data.main(cli_data.SPLIT))
