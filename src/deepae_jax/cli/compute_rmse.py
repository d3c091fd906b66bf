"""RMSE of a predictions file (``user<TAB>item<TAB>prediction<TAB>actual``), as the reference's
compute_RMSE.py: ``deepae compute-rmse --path_to_predictions=FILE [--round]`` (also
``python -m deepae_jax.cli.compute_rmse`` and the ``deepae-compute-rmse`` script)."""
from __future__ import annotations

import dataclasses
import sys
from typing import Sequence

import numpy as np

from deepae_jax.cli.flags import Command, error, run_command
from deepae_jax.data.ratings import RatingsFormatError
from deepae_jax.data.readers.diagnostics import read_utf8
from deepae_jax.settings import bad_setting, setting


@dataclasses.dataclass(frozen=True)
class ComputeRmseSettings:
    """The flags of ``deepae compute-rmse`` (the reference's compute_RMSE.py's names)."""

    path_to_predictions: str = setting("", "Predictions file written by deepae infer.")
    round: bool = setting(False, "Round predictions to the nearest integer first.")

    def __post_init__(self):
        if not self.path_to_predictions:
            bad_setting(self, "path_to_predictions", "a predictions file is required")


def rmse_of_predictions(path: str, round_predictions: bool = False) -> tuple[float, int]:
    """(RMSE, number of lines) of a predictions file; errors name the file and line: bytes that
    are not UTF-8 text, short lines, and predictions or actual ratings that are not finite
    numbers (a NaN prediction would make the RMSE nan)."""
    text = read_utf8(path, "; expected the predictions file of --mode=infer")
    predictions, actual = [], []
    for lineno, line in enumerate(text.split("\n"), start=1):
        parts = line.rstrip("\r").split("\t")
        if not line.strip():
            continue
        if len(parts) < 4:
            raise RatingsFormatError(f"{path}:{lineno}: expected 4 tab-separated fields "
                                     f"(user, item, prediction, actual), got {len(parts)}")
        try:
            p, a = float(parts[2]), float(parts[3])
        except ValueError:
            raise RatingsFormatError(f"{path}:{lineno}: prediction and actual rating must "
                                     "be numbers") from None
        if not (np.isfinite(p) and np.isfinite(a)):
            raise RatingsFormatError(f"{path}:{lineno}: prediction {parts[2]!r} and actual "
                                     f"rating {parts[3].strip()!r} must be finite numbers")
        predictions.append(p)
        actual.append(a)
    if not actual:
        raise RatingsFormatError(f"{path}: no predictions")
    p = np.asarray(predictions)
    if round_predictions:
        p = np.round(p)  # half to even, like the reference's Python round()
    return float(np.sqrt(np.mean((p - np.asarray(actual)) ** 2))), len(actual)


def run_rmse(cfg: ComputeRmseSettings, args: Sequence[str] = ()) -> int:
    """Prints ``RMSE: X over N predictions``; 2 after one ``error:`` line for a bad file."""
    try:
        value, n = rmse_of_predictions(cfg.path_to_predictions, cfg.round)
    except (OSError, RatingsFormatError) as e:
        error(e)
        return 2
    print(f"RMSE: {value:.6f} over {n} predictions")
    return 0


COMMAND = Command("compute-rmse", ComputeRmseSettings, run_rmse,
                  "RMSE of a predictions file (the reference's compute_RMSE.py)", __doc__)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deepae_jax.cli.compute_rmse [flags]``; returns the exit code."""
    return run_command(COMMAND, list(sys.argv[1:] if argv is None else argv),
                       "deepae compute-rmse")


def run() -> None:
    """Console-script entry point (``deepae-compute-rmse``)."""
    sys.exit(main())


if __name__ == "__main__":
    run()
