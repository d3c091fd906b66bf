"""``deepae split``, ``deepae convert movielens|netflix`` and ``deepae download``: rating data
into TRAIN / VALID / TEST folders. The work is :mod:`deepae_jax.data.split`,
:mod:`deepae_jax.data.datasets.movielens_convert`, ``netflix_convert`` and ``download``; this module
declares their flags and prints their tables.

Exit codes: 0 done, 1 bad input data (an ``error:`` line naming the file), 2 a bad flag.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Callable, Sequence

from deepae_jax.cli.flags import Command, error, run_command
from deepae_jax.config import Config
from deepae_jax.data import split
from deepae_jax.data.datasets import download as download_lib
from deepae_jax.data.datasets import (movielens, movielens_convert, netflix, netflix_convert,
                                     synthetic)
from deepae_jax.data.split_methods import METHODS
from deepae_jax.settings import check_choices, setting

log = logging.getLogger("deepae_jax")
READING_FLAGS = ("delimiter", "header", "columns", "timestamp_column", "column_order")


def config_setting(name: str, help_prefix: str = ""):
    """The field ``name`` of :class:`Config` (default, help, choices) for another command."""
    f = next(f for f in dataclasses.fields(Config) if f.name == name)
    return setting(f.default, help_prefix + f.metadata["help"], f.metadata["choices"])


@dataclasses.dataclass(frozen=True)
class SplitSettings:
    """The flags of ``deepae split INPUT OUT_DIR``."""

    method: str = setting("random", "How to split.", METHODS)
    seed: int = setting(0, "Seed of every random choice.")
    test_share: float = setting(0.1, "Share of the ratings in TEST (per user for the user_* "
                                "methods; unused by leave_one_out and kfold).")
    valid_share: float = setting(0.1, "Share of the TRAINING part set aside as VALID by the same "
                                 "method (0: no VALID; leave_one_out: any value > 0 takes each "
                                 "user's latest remaining rating; kfold: a random share).")
    folds: int = setting(5, "kfold: number of folds.")
    delimiter: str = config_setting("delimiter")
    header: str = config_setting("header")
    columns: str = config_setting("columns")
    timestamp_column: str = config_setting("timestamp_column")
    column_order: str = config_setting("column_order")
    name: str = setting("", "Prefix of the part folders (NAME_TRAIN, ...).")
    duplicates: str = setting("error", "A (user, item) pair rated twice: fail naming it, or keep "
                              "the last rating.", ("error", "last"))
    overwrite: bool = setting(False, "Replace a non-empty OUT_DIR.")

    def __post_init__(self):
        check_choices(self)


@dataclasses.dataclass(frozen=True)
class MovieLensSettings:
    """The flags of ``deepae convert movielens INPUT OUT_DIR``."""

    split: str = setting("time70", "Which split.", movielens.SPLITS)
    seed: int = setting(0, "Seed of the random choices.")
    valid_share: float = setting(0.1, "random90 and u1..ub: share of the training ratings set "
                                 "aside as VALID (0: VALID is a copy of TEST).")
    name: str = setting("ML", "Prefix of the part folders (ML_TRAIN, ...).")
    duplicates: str = setting("error", "A (user, item) pair rated twice: fail naming file and "
                              "line, or keep the rating that comes last.", ("error", "last"))
    overwrite: bool = setting(False, "Replace a non-empty OUT_DIR.")
    delimiter: str = config_setting("delimiter", "Other ratings tables: ")
    header: str = config_setting("header", "Other ratings tables: ")
    columns: str = config_setting("columns", "Other ratings tables: ")
    timestamp_column: str = config_setting("timestamp_column", "Other ratings tables (needed by "
                                           "--split=time70): ")

    def __post_init__(self):
        check_choices(self)


@dataclasses.dataclass(frozen=True)
class NetflixSettings:
    """The flags of ``deepae convert netflix TRAINING_SET_DIR OUT_DIR``."""

    seed: int = setting(0, "Seed of the VALID/TEST coin.")
    splits: str = setting(",".join(netflix.SPLITS), "Comma-separated subset of "
                          f"{','.join(netflix.SPLITS)}.")
    duplicates: str = setting("error", "A (user, movie) pair rated twice: fail naming file and "
                              "line, or keep the rating read last (counted).", ("error", "last"))
    no_text: bool = setting(False, "Write only the .npz files.")
    overwrite: bool = setting(False, "Replace a non-empty OUT_DIR.")

    def __post_init__(self):
        check_choices(self)


@dataclasses.dataclass(frozen=True)
class DownloadSettings:
    """The flags of ``deepae download NAME``."""

    cache_dir: str = setting("", "Where archives are kept (default $DEEPAE_CACHE or "
                             "~/.cache/deepae_jax).")
    base_url: str = setting("", "Where archives are fetched from (default "
                            f"$DEEPAE_MOVIELENS_URL or {download_lib.DEFAULT_BASE_URL}).")
    sha256: str = setting("", "Expected SHA-256 of the archive.")
    split: str = setting("time70", "The split to convert into.", movielens.SPLITS)
    seed: int = setting(0, "Seed of the split.")
    out_dir: str = setting("", "Output folder (default CACHE_DIR/<archive>-<split>).")
    no_convert: bool = setting(False, "Only fetch and unpack.")

    def __post_init__(self):
        check_choices(self)


def run_converter(convert_call: Callable[[], str]) -> int:
    """Runs a converter's work: prints its table (exit 0), or one ``error:`` line naming the bad
    input (exit 1) instead of a traceback."""
    from deepae_jax.data.ratings import RatingsFormatError
    try:
        table = convert_call()
    except (RatingsFormatError, FileNotFoundError, FileExistsError, ValueError) as e:
        error(e)
        return 1
    print(table)
    return 0


def run_split(cfg: SplitSettings, args: Sequence[str]) -> int:
    """``deepae split INPUT OUT_DIR``."""
    from deepae_jax.data.readers.table import TableFormat
    try:
        fmt = TableFormat.from_config(cfg)
        fmt.specs()
    except ValueError as e:
        error(e)
        return 2
    return run_converter(lambda: split.convert(
        args[0], args[1], cfg.method, cfg.seed, cfg.test_share, cfg.valid_share, cfg.folds,
        fmt, cfg.name, cfg.duplicates, cfg.overwrite))


def run_movielens(cfg: MovieLensSettings, args: Sequence[str]) -> int:
    """``deepae convert movielens INPUT OUT_DIR``."""
    from deepae_jax.data.readers.table import TableFormat

    def convert():
        fmt = TableFormat(cfg.delimiter, cfg.header, cfg.columns, cfg.timestamp_column)
        return movielens_convert.convert(args[0], args[1], cfg.split, cfg.seed, cfg.name,
                                         cfg.duplicates, cfg.overwrite, cfg.valid_share, fmt)
    return run_converter(convert)


def run_netflix(cfg: NetflixSettings, args: Sequence[str]) -> int:
    """``deepae convert netflix TRAINING_SET_DIR OUT_DIR``."""
    return run_converter(lambda: netflix_convert.convert(
        args[0], args[1], cfg.seed, cfg.splits.split(","), cfg.duplicates, not cfg.no_text,
        cfg.overwrite, log=log.info))


def run_download(cfg: DownloadSettings, args: Sequence[str]) -> int:
    """``deepae download NAME``: 1 after one ``error:`` line when it fails."""
    import urllib.error
    from deepae_jax.data.ratings import RatingsFormatError
    if args[0] not in download_lib.ARCHIVES:
        error(f"NAME={args[0]!r}: choose one of {list(download_lib.ARCHIVES)}")
        return 2
    try:
        download_lib.download(args[0], cfg.cache_dir or None, cfg.base_url or None,
                              cfg.sha256 or None, None if cfg.no_convert else cfg.split,
                              cfg.seed, cfg.out_dir or None, log=print)
    except (download_lib.ChecksumError, RatingsFormatError, urllib.error.URLError, OSError,
            ValueError) as e:
        error(e)
        return 1
    return 0


SPLIT = Command("split", SplitSettings, run_split, "split any rating data into TRAIN/VALID/TEST",
                split.__doc__, "INPUT OUT_DIR", 2, 2)
MOVIELENS = Command("convert movielens", MovieLensSettings, run_movielens,
                    "MovieLens ratings into the paper's splits", movielens_convert.__doc__,
                    "INPUT OUT_DIR", 2, 2)
NETFLIX = Command("convert netflix", NetflixSettings, run_netflix,
                  "the Netflix Prize training_set into the paper's four time splits",
                  netflix_convert.__doc__, "TRAINING_SET_DIR OUT_DIR", 2, 2)
DOWNLOAD = Command("download", DownloadSettings, run_download,
                   "fetch, verify, unpack and convert a MovieLens archive", download_lib.__doc__,
                   f"NAME (one of {', '.join(download_lib.ARCHIVES)})", 1, 1)


def run_synthetic(cfg: synthetic.CsvSettings, args: Sequence[str] = ()) -> int:
    """``deepae synthetic --out=OUT.csv``: the synthetic ratings as a MovieLens-style CSV."""
    n = synthetic.write_csv(cfg.out, synthetic.SyntheticSpec(n_users=cfg.users,
                                                             n_items=cfg.items))
    print(f"wrote {n} ratings to {cfg.out}")
    return 0


SYNTHETIC = Command("synthetic", synthetic.CsvSettings, run_synthetic,
                    "write the synthetic ratings as a MovieLens-style ratings.csv",
                    synthetic.write_csv.__doc__)


def main(command: Command, argv: Sequence[str] | None = None) -> int:
    """``deepae COMMAND ARGS`` (``argv`` without the program name; default ``sys.argv[1:]``),
    also what ``python -m deepae_jax.data.split`` and the converters' modules run."""
    return run_command(command, list(sys.argv[1:] if argv is None else argv),
                       f"deepae {command.name}")
