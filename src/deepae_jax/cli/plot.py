"""``deepae plot RUN [RUN ...] --out=FILE.png|.svg``: the learning curves of training runs
(their --logdir folders), overlaid: train RMSE dashed, eval RMSE solid, both in rating units, the
best epoch of each run marked, the baselines as dotted horizontal lines. Needs matplotlib: pip
install 'deepae_jax[plots]'."""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Sequence

from deepae_jax.cli.flags import Command, error, run_command
from deepae_jax.extras import MissingExtraError
from deepae_jax.run import curves
from deepae_jax.settings import bad_setting, setting


@dataclasses.dataclass(frozen=True)
class PlotSettings:
    """The flags of ``deepae plot``."""

    out: str = setting("", "The picture to write: a .png or .svg file; required.")
    labels: str = setting("", "Comma-separated names of the runs in the legend (default: the "
                          "folder names).")
    title: str = setting("", "Title of the picture.")

    def __post_init__(self):
        if not self.out:
            bad_setting(self, "out", "required: the .png or .svg file to write")
        if os.path.splitext(self.out)[1].lower().lstrip(".") not in curves.FORMATS:
            bad_setting(self, "out", "expected a file name ending in .png or .svg")


def run_plot(cfg: PlotSettings, runs: Sequence[str]) -> int:
    """Draws the runs; 2 after one ``error:`` line for a run without metrics.jsonl, labels that
    do not match the runs, or missing matplotlib."""
    labels = [t.strip() for t in cfg.labels.split(",")] if cfg.labels else None
    if labels is not None and len(labels) != len(runs):
        error(f"--labels={cfg.labels!r}: {len(labels)} label(s) for {len(runs)} run(s)")
        return 2
    missing = [r for r in runs if not os.path.isfile(os.path.join(r, curves.METRICS_FILE))]
    if missing:
        error(f"{missing[0]}: no {curves.METRICS_FILE} (not the --logdir of a training run)")
        return 2
    try:
        fig = curves.plot_runs(runs, labels, cfg.title)
        curves.save_figure(fig, cfg.out)
    except (MissingExtraError, OSError) as e:
        error(e)
        return 2
    print(f"wrote {cfg.out} ({len(runs)} run(s))")
    return 0


COMMAND = Command("plot", PlotSettings, run_plot, "learning curves of runs as a PNG or SVG",
                  __doc__, "RUN [RUN ...]", 1, None)


def main(argv: Sequence[str] | None = None) -> int:
    """``deepae plot RUN ... --out=FILE``; returns the exit code."""
    return run_command(COMMAND, list(sys.argv[1:] if argv is None else argv), "deepae plot")
