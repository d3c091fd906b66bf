"""Converts MovieLens ratings into TRAIN / VALID / TEST folders (text + ``.npz``).

Usage (``deepae convert movielens --help`` lists every flag)::

    deepae convert movielens INPUT OUT_DIR --split=time70|random90|u1..u5|ua|ub
        [--seed=S] [--valid_share=F] [--name=ML] [--duplicates=error|last] [--overwrite]

INPUT is a ratings file (``u.data``, ``ratings.dat``, ``ratings.csv``) or an unpacked MovieLens
folder; the predefined ``u1``..``ub`` splits need the ML-100K folder. With any of ``--delimiter
--header --columns --timestamp_column`` given, INPUT is any ratings table, read by
:func:`deepae_jax.data.readers.table.read_table` (any ids and rating scale; ``time70`` needs
``--timestamp_column``). Writes
``OUT_DIR/ML_TRAIN/ml.train.txt`` (+ ``ML_VALID``, ``ML_TEST``), ``OUT_DIR/ML_*.npz`` and
``OUT_DIR/stats.md``, staged in a temporary folder beside OUT_DIR and renamed at the end.
``random90`` and the predefined splits have a single held-out set, TEST; their VALID is a seeded
random ``--valid_share`` (default 10%) of the training ratings, taken out of TRAIN, so that model
selection never sees TEST (``--valid_share 0`` keeps TRAIN whole and writes TEST as VALID too).
"""
from __future__ import annotations

import sys

from deepae_jax.data.datasets import movielens
from deepae_jax.data import split_io
from deepae_jax.data.ratings import TableFormat, Triples, build_matrix

HEADER = ("part", "users", "ratings", "items", "min rating", "max rating")


def _with_valid(train: Triples, test: Triples, valid_share: float, seed: int
                ) -> tuple[dict[str, Triples], str]:
    """TRAIN / VALID / TEST with VALID a seeded share of the training ratings (or TEST's copy)."""
    if valid_share <= 0:
        return {"TRAIN": train, "VALID": test, "TEST": test}, "VALID is a copy of TEST"
    rest, valid = movielens.split_off(train, valid_share, seed + 1)
    return {"TRAIN": rest, "VALID": valid, "TEST": test}, (
        f"VALID is a random {valid_share:.0%} of the training ratings (seed {seed + 1})")


def read_input(input_path: str, fmt: TableFormat | None = None) -> movielens.MovieLensRatings:
    """A MovieLens ratings file or folder, read strictly (format by file name), when ``fmt`` is
    None or the default; else the ratings table ``input_path`` read with ``fmt``."""
    if fmt is None or fmt == TableFormat():
        return movielens.read_movielens(input_path)
    return movielens.read_table_ratings(input_path, fmt)


def make_split(input_path: str, split: str, seed: int = 0, duplicates: str = "error",
               valid_share: float = 0.1, fmt: TableFormat | None = None
               ) -> tuple[dict[str, Triples], str]:
    """(parts TRAIN/VALID/TEST, note) of one split of a MovieLens data set (or, with ``fmt``,
    of any ratings table: see :func:`read_input`)."""
    if not 0 <= valid_share < 1:
        raise ValueError(f"--valid_share={valid_share}: must be in [0, 1)")
    if split in movielens.PREDEFINED:
        parts, note = _with_valid(*movielens.predefined_split(input_path, split), valid_share,
                                  seed)
        return parts, f"predefined ML-100K split {split}.base / {split}.test; {note}"
    data = movielens.check_duplicates(read_input(input_path, fmt), duplicates)
    if split == "time70":
        if fmt is not None and fmt != TableFormat() and not fmt.timestamp_column:
            raise ValueError("--split time70 orders each user's ratings by time: give "
                             "--timestamp_column")
        train, valid, test = movielens.time_split(data, seed)
        return {"TRAIN": train, "VALID": valid, "TEST": test}, (
            f"per-user time split 70% (reference), seed {seed}, source {data.source}")
    if split == "random90":
        parts, note = _with_valid(*movielens.random_split(data, seed), valid_share, seed)
        return parts, f"random 90/10 split of ratings, seed {seed}, source {data.source}; {note}"
    raise ValueError(f"unknown split {split!r}; choose from {movielens.SPLITS}")


def convert(input_path: str, out_dir: str, split: str, seed: int = 0, name: str = "ML",
            duplicates: str = "error", overwrite: bool = False, valid_share: float = 0.1,
            fmt: TableFormat | None = None) -> str:
    """Writes one split of a MovieLens data set (or ratings table) into ``out_dir``; returns
    the stats table."""
    split_io.check_out_dir(out_dir, overwrite)
    parts, note = make_split(input_path, split, seed, duplicates, valid_share, fmt)
    rows = []
    with split_io.staged_dir(out_dir, overwrite) as stage:
        for part, triples in parts.items():
            matrix = build_matrix(triples, source=f"{name}_{part}") if len(triples) else None
            split_io.write_part(stage, f"{name}_{part}", triples, matrix)
            s = movielens.stats(triples)
            rows.append([f"{name}_{part}", s["users"], s["ratings"], s["items"], s["min"],
                         s["max"]])
        table = split_io.markdown_table(HEADER, rows)
        split_io.write_stats(stage, f"MovieLens split {split}", table, [note])
    return table


if __name__ == "__main__":  # the command line lives in deepae_jax.cli
    from deepae_jax.cli import data as cli_data
    sys.exit(cli_data.main(cli_data.MOVIELENS))
