"""Converts the Netflix Prize ``training_set`` into the paper's four time splits.

Usage (``deepae convert netflix --help`` lists every flag)::

    deepae convert netflix TRAINING_SET_DIR OUT_DIR [--seed=S]
        [--splits=NF,N3M,N6M,N1Y] [--duplicates=error|last] [--no_text] [--overwrite]

Writes ``OUT_DIR/{NF,N3M,N6M,N1Y}_{TRAIN,VALID,TEST}/`` in the reference's text format
(``nf.train.txt`` …, original ids) plus ``OUT_DIR/<PART>.npz`` (a :class:`RatingMatrix` the trainer
loads directly: ``--path_to_train_data OUT_DIR/NF_TRAIN.npz``), and ``OUT_DIR/stats.md``, the
table of PAPER.md (users, ratings, items, dates of TRAIN and of the held-out VALID+TEST ratings).
The conversion is staged in a temporary folder beside OUT_DIR and renamed at the end.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Callable, Sequence

from deepae_jax.data.datasets import netflix
from deepae_jax.data import split_io

HEADER = ("split", "train window", "test window", "train users", "train ratings", "train items",
          "train dates", "test users", "test ratings", "test items", "test dates",
          "VALID ratings", "TEST ratings")


def split_row(data: netflix.NetflixRatings, split: netflix.TimeSplit) -> list:
    """One row of the stats table; "test" columns count VALID and TEST together, as in PAPER.md."""
    tr = netflix.part_stats(data, split.train)
    te = netflix.part_stats(data, split.valid | split.test)
    a, b, c, d = split.window
    return [split.name, f"{a} .. {b}", f"{c} .. {d}", tr["users"], tr["ratings"], tr["items"],
            f"{tr['first']} .. {tr['last']}", te["users"], te["ratings"], te["items"],
            f"{te['first']} .. {te['last']}", int(split.valid.sum()), int(split.test.sum())]


def write_split(folder: str, data: netflix.NetflixRatings, split: netflix.TimeSplit,
                write_text: bool = True) -> None:
    """Writes the TRAIN, VALID and TEST parts of one split (text and .npz)."""
    for part, mask in (("TRAIN", split.train), ("VALID", split.valid), ("TEST", split.test)):
        name = f"{split.name}_{part}"
        matrix = netflix.split_matrix(data, mask) if mask.any() else None
        if write_text:
            split_io.write_part(folder, name, netflix.part_triples(data, mask), matrix)
        elif matrix is not None:
            matrix.save(f"{folder}/{name}.npz")


def convert(training_dir: str, out_dir: str, seed: int = 0,
            splits: Sequence[str] = tuple(netflix.SPLITS), duplicates: str = "error",
            write_text: bool = True, overwrite: bool = False, log: Callable[[str], None] | None = None) -> str:
    """Reads ``training_dir``, writes every requested split into ``out_dir``; returns the table.
    ``log``: where the progress lines go (default: the package's logger)."""
    log = log or logging.getLogger("deepae_jax").info
    unknown = [s for s in splits if s not in netflix.SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; choose from {list(netflix.SPLITS)}")
    split_io.check_out_dir(out_dir, overwrite)
    t0 = time.time()
    data = netflix.read_netflix(training_dir, duplicates=duplicates)
    log(f"read {len(data):,} ratings of {data.user_ids.size:,} users and {data.item_ids.size:,} "
        f"movies from {data.n_files:,} files in {time.time() - t0:.1f} s "
        f"({data.skipped_blank} blank lines skipped, {data.dropped_duplicates} duplicates "
        "replaced by a later rating)")
    rows = []
    with split_io.staged_dir(out_dir, overwrite) as stage:
        for index, name in enumerate(netflix.SPLITS):
            if name not in splits:
                continue
            t1 = time.time()
            split = netflix.time_split(data, name, netflix.SPLITS[name], seed, index)
            write_split(stage, data, split, write_text)
            rows.append(split_row(data, split))
            log(f"{name}: TRAIN {rows[-1][4]:,}, VALID {rows[-1][11]:,}, TEST {rows[-1][12]:,} "
                f"ratings written in {time.time() - t1:.1f} s")
        table = split_io.markdown_table(HEADER, rows)
        split_io.write_stats(stage, "Netflix Prize time splits", table, [
            f"source: {training_dir} ({data.n_files:,} files, {len(data):,} ratings, "
            f"{data.user_ids.size:,} users, {data.item_ids.size:,} movies)",
            f"seed {seed}; duplicates policy '{duplicates}' ({data.dropped_duplicates} replaced); "
            f"{data.skipped_blank} blank lines skipped",
            "windows inclusive; test columns count VALID and TEST together (as PAPER.md)"])
    log(f"total {time.time() - t0:.1f} s")
    return table


if __name__ == "__main__":  # the command line lives in deepae_jax.cli
    from deepae_jax.cli import data as cli_data
    sys.exit(cli_data.main(cli_data.NETFLIX))
