"""Learning curves of runs: train and eval RMSE per epoch (rating units), the baselines as
horizontal lines, the kept epoch marked; one run (``LOGDIR/curves.png``) or several overlaid
(``deepae plot``). Read from what a logdir holds (metrics.jsonl, summary.json); drawn with
matplotlib's object API (no pyplot, no display: the Agg renderer), the plots extra.
"""
from __future__ import annotations

import json
import math
import os
from typing import Sequence

from deepae_jax.extras import require
from deepae_jax.run.files import METRICS_FILE, SUMMARY_FILE, atomic_write
FORMATS = ("png", "svg")
BASELINE_NAMES = {"global_rmse": "global mean", "bias_rmse": "user + item biases"}


def read_rows(logdir: str) -> list[dict]:
    """The JSON rows of ``logdir/metrics.jsonl`` (damaged lines skipped); FileNotFoundError
    naming the file when the folder holds none."""
    path = os.path.join(logdir, METRICS_FILE)
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def epoch_rows(rows: Sequence[dict]) -> list[dict]:
    """The epoch rows, one per epoch (the last written wins), in epoch order."""
    by_epoch = {int(r["epoch"]): r for r in rows if r.get("kind") == "epoch" and "epoch" in r}
    return [by_epoch[e] for e in sorted(by_epoch)]


def baselines(rows: Sequence[dict]) -> dict[str, float]:
    """The baselines' eval RMSE recorded by the run (``kind: baseline``), by name."""
    found = {}
    for r in rows:
        if r.get("kind") == "baseline":
            found.update({BASELINE_NAMES[k]: float(v) for k, v in r.items()
                          if k in BASELINE_NAMES and v is not None})
    return found


def best_epoch(logdir: str, epochs: Sequence[dict]) -> int | None:
    """The kept epoch: summary.json's ``best_epoch`` (model selection), else the epoch of the
    lowest eval RMSE, else None (nothing evaluated)."""
    try:
        with open(os.path.join(logdir, SUMMARY_FILE), encoding="utf-8") as fh:
            return int(json.load(fh)["best_epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    scored = [r for r in epochs if _finite(r.get("eval_rmse"))]
    return int(min(scored, key=lambda r: r["eval_rmse"])["epoch"]) if scored else None


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def plot_runs(logdirs: Sequence[str], labels: Sequence[str] | None = None, title: str = ""):
    """A matplotlib Figure of the runs in ``logdirs``: per run, train RMSE (dashed) and eval
    RMSE (solid) against the epoch in one colour, its best epoch marked with a dot, its
    baselines as dotted horizontal lines. Lines carry their label (``RUN train``, ``RUN eval``,
    ``RUN baseline: NAME``) so that a caller can read the data back."""
    figure_mod = require("matplotlib.figure", "plots", "drawing learning curves")
    fig = figure_mod.Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    colours = [f"C{i % 10}" for i in range(len(logdirs))]
    for logdir, label, colour in zip(logdirs, labels or [_name(d) for d in logdirs], colours):
        rows = read_rows(logdir)
        epochs = epoch_rows(rows)
        xs = [r["epoch"] for r in epochs]
        ax.plot(xs, [_nan(r.get("train_rmse")) for r in epochs], "--", color=colour,
                label=f"{label} train")
        if any(_finite(r.get("eval_rmse")) for r in epochs):
            ax.plot(xs, [_nan(r.get("eval_rmse")) for r in epochs], "-", color=colour,
                    label=f"{label} eval")
            best = best_epoch(logdir, epochs)
            kept = [r for r in epochs if r["epoch"] == best]
            if kept and _finite(kept[0].get("eval_rmse")):
                ax.plot([best], [kept[0]["eval_rmse"]], "o", color=colour,
                        label=f"{label} best epoch {best}")
        for i, (name, value) in enumerate(baselines(rows).items()):
            ax.axhline(value, color=colour, linestyle=":", alpha=0.8 - 0.3 * i,
                       label=f"{label} baseline: {name}")
    ax.xaxis.set_major_locator(require("matplotlib.ticker", "plots", "").MaxNLocator(
        integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("RMSE (rating units)")
    ax.set_title(title or "train (dashed) and eval (solid) RMSE")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def _name(logdir: str) -> str:
    return os.path.basename(os.path.normpath(logdir)) or logdir


def _nan(value) -> float:
    return float(value) if _finite(value) else float("nan")


def save_figure(fig, path: str) -> str:
    """Writes ``fig`` to ``path`` (PNG or SVG by its extension) atomically; returns ``path``."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in FORMATS:
        raise ValueError(f"{path}: expected a .png or .svg file name")
    atomic_write(path, lambda fh: fig.savefig(fh, format=ext, dpi=110))
    return path
