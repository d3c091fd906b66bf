"""Run outputs a user reads: the per-epoch line, metrics.jsonl and TensorBoard event files."""
from __future__ import annotations

import json
import math
import os
from typing import Any


class MetricsLogger:
    """Writes scalars to ``logdir/metrics.jsonl`` and TensorBoard event files (tensorboardX).

    Only the process that should write (process 0 of a multi-host run) passes ``enabled=True``.
    """

    def __init__(self, logdir: str, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        os.makedirs(logdir, exist_ok=True)
        self._jsonl = open(os.path.join(logdir, "metrics.jsonl"), "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(logdir=logdir, flush_secs=10)

    def scalar(self, name: str, value: float, step: int) -> None:
        if self._tb is not None and math.isfinite(value):
            self._tb.add_scalar(name, value, step)

    def record(self, kind: str, values: dict[str, Any], step: int) -> None:
        """One jsonl line ``{"kind", "step", **values}`` plus a TensorBoard scalar per number."""
        if not self.enabled:
            return
        row = {"kind": kind, "step": int(step), **values}
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.scalar(f"{kind}/{key}", float(value), step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def format_epoch_line(epoch: int, num_epochs: int, values: dict[str, Any]) -> str:
    """``epoch 3/12  train RMSE 0.9412  eval RMSE 0.9567  time 12.3 s  4,321 users/s``."""
    parts = [f"epoch {epoch + 1}/{num_epochs}"]
    if "train_rmse" in values:
        parts.append(f"train RMSE {values['train_rmse']:.4f}")
    if values.get("eval_rmse") is not None:
        count = values.get("eval_count")
        parts.append(f"eval RMSE {values['eval_rmse']:.4f}"
                     + (f" ({count:,} ratings)" if count is not None else ""))
    parts.append(f"time {values['epoch_time_s']:.1f} s")
    parts.append(f"{values['rows_per_s']:,.0f} {values.get('row_name', 'users')}/s")
    return "  ".join(parts)
