"""Model selection in the trainer (beyond the paper's loop): best epoch, early stopping, TEST once.

The paper trains a fixed number of epochs, evaluates on VALID and scores the best checkpoint on
TEST. Here the trainer does it itself: after every epoch the VALID metric goes to
:class:`Selector`; the best epoch's training state is written to ``best.msgpack`` (the checkpoint
format of :mod:`deepae_jax.run.checkpoint`, so ``restore_params`` reads it) with ``best.json``; after
``patience`` epochs without improvement training stops; at the end the best checkpoint is
scored once on TEST and ``summary.json`` is written.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

from deepae_jax.run import files
from deepae_jax.run.files import OutputError, atomic_write, atomic_write_text

METRICS = ("rmse", "mae")


@dataclasses.dataclass
class Selector:
    """Tracks the best (lowest) VALID metric over epochs and the epochs since it improved."""

    patience: int = 0  # 0: never stop early
    best_value: float = math.inf
    best_epoch: int = 0
    since_best: int = 0

    def update(self, epoch: int, value: float) -> bool:
        """Records 1-based ``epoch``'s metric; True when it is a new best (NaN never is)."""
        if math.isfinite(value) and value < self.best_value:
            self.best_value, self.best_epoch, self.since_best = float(value), int(epoch), 0
            return True
        self.since_best += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience


def save_best(directory: str, state: Any, epoch: int, meta: dict, value: float,
              metric: str) -> str:
    """Writes the best epoch's state to ``best.msgpack`` (a checksummed checkpoint file, see
    :mod:`deepae_jax.run.checkpoint`) and its record to ``best.json``."""
    from deepae_jax.run import checkpoint as ckpt
    path = os.path.join(directory, files.BEST_FILE)
    data = ckpt.encode_checkpoint(state, epoch, meta)
    try:
        atomic_write(path, lambda fh: fh.write(data))
    except OutputError as e:
        raise ckpt.CheckpointError(f"{e}; the previous best checkpoint is kept") from None
    atomic_write_text(os.path.join(directory, files.BEST_INFO_FILE),
                      json.dumps({"epoch": int(epoch), "metric": metric,
                                  f"valid_{metric}": float(value)}, indent=2) + "\n")
    return path


def resumed_selector(directory: str, patience: int, metric: str) -> Selector:
    """A Selector that knows the best epoch recorded in ``best.json`` (a resumed run keeps a
    better earlier best; the epochs since it are not recorded and restart at 0)."""
    try:
        with open(os.path.join(directory, files.BEST_INFO_FILE), encoding="utf-8") as fh:
            info = json.load(fh)
    except (FileNotFoundError, ValueError):
        return Selector(patience)
    if info.get("metric") != metric or best_checkpoint(directory) is None:
        return Selector(patience)
    return Selector(patience, float(info[f"valid_{metric}"]), int(info["epoch"]))


def best_checkpoint(directory: str) -> str | None:
    """``directory/best.msgpack`` when training kept one, else None."""
    path = os.path.join(directory, files.BEST_FILE)
    return path if os.path.isfile(path) else None


def write_summary(directory: str, summary: dict) -> str:
    """Writes ``summary.json`` (atomically); returns its path."""
    path = os.path.join(directory, files.SUMMARY_FILE)
    atomic_write_text(path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return path
