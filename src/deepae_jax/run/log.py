"""Run outputs a user reads: the per-epoch line, metrics.jsonl and TensorBoard event files."""
from __future__ import annotations

import functools
import json
import logging
import math
import os
from typing import Any

import jax

from deepae_jax.run import files
from deepae_jax.run.files import OutputError, atomic_write_text

log = logging.getLogger("deepae_jax")
RESULTS_LOGGER = "deepae_jax.results"
results = logging.getLogger(RESULTS_LOGGER)
"""The lines that are a run's output (epoch lines, scores, files written): the command line
shows them on standard output, the other log lines on standard error."""



def json_ready(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (JSON has no NaN: null instead)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def _row_epoch(row: dict) -> int | None:
    if "epoch" in row:
        return int(row["epoch"])
    return int(row["step"]) if row.get("kind") == "epoch" and "step" in row else None


def drop_epochs_after(logdir: str, epoch: int) -> int:
    """Rewrites ``logdir/metrics.jsonl`` (atomically) without the rows of epochs after
    ``epoch`` and without damaged lines (a kill mid-write); returns how many were dropped. A
    resumed run calls it so that every epoch appears once."""
    path = os.path.join(logdir, files.METRICS_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return 0
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        row_epoch = _row_epoch(row) if isinstance(row, dict) else None
        if isinstance(row, dict) and (row_epoch is None or row_epoch <= epoch):
            kept.append(line)
    dropped = len(lines) - len(kept)
    if dropped:
        atomic_write_text(path, "".join(line + "\n" for line in kept))
        log.info("%s: dropped %d rows of epochs after %d (resumed there)", path, dropped, epoch)
    return dropped


class MetricsLogger:
    """Writes scalars to ``logdir/metrics.jsonl`` and TensorBoard event files (tensorboardX).

    Only the process that should write (process 0 of a multi-host run) passes ``enabled=True``.
    """

    def __init__(self, logdir: str, enabled: bool = True, tensorboard: bool = True,
                 run_id: str = ""):
        self.enabled = enabled
        self.run_id = run_id
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        os.makedirs(logdir, exist_ok=True)
        self._jsonl = open(os.path.join(logdir, files.METRICS_FILE), "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(logdir=logdir, flush_secs=10)

    def scalar(self, name: str, value: float, step: int) -> None:
        """A TensorBoard scalar; ``@`` (as in ndcg@10, not allowed in tags) becomes ``_at_``."""
        if self._tb is not None and math.isfinite(value):
            self._tb.add_scalar(name.replace("@", "_at_"), value, step)

    def record(self, kind: str, values: dict[str, Any], step: int) -> None:
        """One jsonl line ``{"kind", "step", "run_id", **values}`` (NaN written as null) plus a
        TensorBoard scalar per finite number."""
        if not self.enabled:
            return
        row = {"kind": kind, "step": int(step), **({"run_id": self.run_id} if self.run_id else {}),
               **values}
        try:
            self._jsonl.write(json.dumps(json_ready(row), allow_nan=False) + "\n")
            self._jsonl.flush()
        except OSError as e:  # e.g. disk full: an error naming the file, not a traceback
            raise OutputError(self._jsonl.name, e) from None
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
        rmse, count = values["eval_rmse"], values.get("eval_count")
        parts.append((f"eval RMSE {rmse:.4f}" if math.isfinite(rmse) else
                      "eval RMSE n/a (no evaluation ratings of known rows)")
                     + (f" ({count:,} ratings)" if count is not None else ""))
    if values.get("eval_metrics"):
        parts.append(values["eval_metrics"])
    parts.append(f"time {values['epoch_time_s']:.1f} s")
    parts.append(f"{values['rows_per_s']:,.0f} {values.get('row_name', 'users')}/s")
    if values.get("compiled"):
        parts.append(f"compiled {values['compiled']} program(s) in {values['compile_s']:.1f} s")
    return "  ".join(parts)


_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_compiles: list[tuple[str, float]] = []  # (function name, seconds) of every XLA compilation


@functools.cache
def watch_compilations() -> list[tuple[str, float]]:
    """The process's list of (function name, seconds) of every XLA compilation from now on
    (``jax.monitoring``'s compile events; the listener is registered once)."""
    def listen(event: str, duration: float, **kwargs) -> None:
        if event == _COMPILE_EVENT:
            _compiles.append((str(kwargs.get("fun_name", "")), float(duration)))
    jax.monitoring.register_event_duration_secs_listener(listen)
    return _compiles


def compiled_since(start: int) -> dict[str, Any]:
    """{"compiled": programs compiled since ``start`` (an earlier ``len(watch_compilations())``),
    "compile_s": their seconds}: what the epoch line reports."""
    new = watch_compilations()[start:]
    return {"compiled": len(new), "compile_s": sum(s for _, s in new)}
