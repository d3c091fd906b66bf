"""``deepae COMMAND [flags] [ARGS]``: every command of the package in one program (also
``python -m deepae_jax``). ``deepae --help`` lists the commands, ``deepae COMMAND --help`` the
flags of one; flags are generated from each command's settings dataclass (:mod:`.flags`).
"""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

from deepae_jax.cli.flags import HELP_ARGS, Command, error, run_command
from deepae_jax.extras import MissingExtraError

# name -> (module, attribute: a Command or a function returning one, one-line summary);
# modules are imported only for the command that runs (--help stays fast).
COMMANDS = {
    "train": ("deepae_jax.cli.main", "TRAIN", "train a model (checkpoints, metrics, curves.png, "
              "report.md)"),
    "evaluate": ("deepae_jax.cli.main", "EVALUATE", "score a saved model on evaluation data"),
    "infer": ("deepae_jax.cli.main", "INFER", "write a saved model's predictions of evaluation "
              "ratings"),
    "recommend": ("deepae_jax.cli.main", "RECOMMEND", "write top-K unrated items per user"),
    "split": ("deepae_jax.cli.data", "SPLIT", "split any rating data into TRAIN/VALID/TEST"),
    "convert movielens": ("deepae_jax.cli.data", "MOVIELENS", "MovieLens ratings into the "
                          "paper's splits"),
    "convert netflix": ("deepae_jax.cli.data", "NETFLIX", "the Netflix Prize training_set into "
                        "the paper's four time splits"),
    "download": ("deepae_jax.cli.data", "DOWNLOAD", "fetch, verify, unpack and convert a "
                 "MovieLens archive"),
    "synthetic": ("deepae_jax.cli.data", "SYNTHETIC", "write the synthetic ratings as a CSV"),
    "export": ("deepae_jax.cli.export", "COMMAND", "the model as ONNX and jax.export files"),
    "serve": ("deepae_jax.cli.serve", "command", "a JSON service over a trained model (the "
              "serve extra)"),
    "plot": ("deepae_jax.cli.plot", "COMMAND", "learning curves of runs as a PNG or SVG (the "
             "plots extra)"),
    "compute-rmse": ("deepae_jax.cli.compute_rmse", "COMMAND", "RMSE of a predictions file"),
}


def usage() -> str:
    """The top-level help: the commands, one line each."""
    width = max(map(len, COMMANDS)) + 2
    lines = [f"  {name:<{width}}{summary}" for name, (_, _, summary) in COMMANDS.items()]
    return ("usage: deepae COMMAND [flags] [ARGS]   (python -m deepae_jax is the same)\n\n"
            "Deep autoencoders for collaborative filtering (Kuchaiev & Ginsburg, 2017).\n\n"
            "commands:\n" + "\n".join(lines) + "\n\n"
            "deepae COMMAND --help lists the flags of one command. Flags are --name=value, "
            "--name value or --flagfile=FILE; train, evaluate, infer and recommend also take "
            "--recipe=NAME. Flags without a command run --mode (default train), as python -m "
            "deepae_jax.main does.\n")


def resolve(name: str) -> Command:
    """The Command of ``name`` (its module imported now)."""
    module, attr, _ = COMMANDS[name]
    found = getattr(importlib.import_module(module), attr)
    return found if isinstance(found, Command) else found()


def split_name(argv: Sequence[str]) -> tuple[str, list[str]]:
    """(command name, its arguments): ``convert movielens`` is a two-word name."""
    name, rest = argv[0], list(argv[1:])
    if name == "convert" and rest and f"convert {rest[0]}" in COMMANDS:
        name, rest = f"convert {rest[0]}", rest[1:]
    return name, rest


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``deepae ARGV`` (default ``sys.argv[1:]``); returns the exit code (0 done or help,
    2 a bad command, flag or argument, else the command's)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in HELP_ARGS or argv[0] == "help":
        print(usage(), end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0].startswith("--"):  # deepae --mode=infer --flagfile=F: as python -m deepae_jax.main
        from deepae_jax.cli.main import LEGACY
        return run_command(LEGACY, argv, "deepae")
    name, rest = split_name(argv)
    if name not in COMMANDS:
        error(f"unknown command {' '.join(argv[:2]) if name == 'convert' else name!r}; "
              f"choose one of: {', '.join(COMMANDS)} (see deepae --help)")
        return 2
    try:
        command = resolve(name)
    except MissingExtraError as e:
        error(e)
        return 2
    return run_command(command, rest, f"deepae {name}")


def run() -> None:
    """Console-script entry point (``deepae``)."""
    sys.exit(main())
