"""RMSE of a predictions file (``user<TAB>item<TAB>prediction<TAB>actual``), as the reference's
compute_RMSE.py: ``python -m deepae_jax.cli.compute_rmse --path_to_predictions=FILE [--round]``."""
from __future__ import annotations

import sys

import numpy as np
from absl import app, flags

from deepae_jax.data.ratings import RatingsFormatError
from deepae_jax.data.readers.diagnostics import read_utf8

flags.DEFINE_string("path_to_predictions", "", "Predictions file written by --mode=infer.")
flags.DEFINE_boolean("round", False, "Round predictions to the nearest integer first.")


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


def main(argv):
    del argv
    try:
        value, n = rmse_of_predictions(flags.FLAGS.path_to_predictions, flags.FLAGS.round)
    except (OSError, RatingsFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"RMSE: {value:.6f} over {n} predictions")
    return 0


def run():
    app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
    run()
