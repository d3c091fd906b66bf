"""What a training run tells its user: the baselines to beat at the start, and at the end a
summary (where the model is, which epoch was kept, the test score next to the baseline's, the
time), ``curves.png`` and ``report.md`` in the logdir."""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

from deepae_jax import baseline as baseline_lib
from deepae_jax.evaluation import predictions
from deepae_jax.extras import MissingExtraError
from deepae_jax.run import curves
from deepae_jax.run.files import CURVES_FILE, REPORT_FILE, atomic_write_text
from deepae_jax.run.log import results

log = logging.getLogger("deepae_jax")
AUTO_LOG_MAX_RATINGS = 5_000_000  # larger: the logged bias baseline uses fixed lambdas
SETTINGS_SHOWN = ("hidden_layers", "non_linearity_type", "drop_prob", "optimizer", "lr",
                  "batch_size", "num_epochs", "aug_step", "major", "baseline", "train_path",
                  "seed")


def baseline_scores(cfg, train_csr, targets, eval_csr) -> dict[str, predictions.Scores]:
    """The evaluation scores of the global mean and of the user + item bias baseline (lambdas
    chosen on the evaluation data up to AUTO_LOG_MAX_RATINGS training ratings, else
    baseline.DEFAULT_REG), logged: the numbers a model has to beat."""
    regs = ((-1.0, -1.0) if train_csr.nnz <= AUTO_LOG_MAX_RATINGS else
            baseline_lib.row_col_regs(cfg.major, *baseline_lib.DEFAULT_REG))
    found = {}
    for kind in ("global", "bias"):
        base = baseline_lib.fit(train_csr, kind, *regs, eval_csr=eval_csr)
        found[kind] = s = predictions.baseline_scores(base, targets, cfg.clip_predictions,
                                                      cfg.unknown)
        log.info("baseline: %s gives eval %s (unknown rows/columns: mean + known bias)",
                 "the global mean %.4f" % base.mean if kind == "global"
                 else "user + item biases", s.describe())
    return found


@dataclasses.dataclass
class RunRecord:
    """What the end-of-run summary and report.md say, gathered while the run goes."""

    logdir: str
    started: float = dataclasses.field(default_factory=time.time)
    data: list[str] = dataclasses.field(default_factory=list)
    baselines: dict[str, predictions.Scores] = dataclasses.field(default_factory=dict)
    last: dict = dataclasses.field(default_factory=dict)
    checkpoint: str | None = None
    summary: dict | None = None


def kept_epoch(record: RunRecord) -> tuple[int | None, str]:
    """(the kept epoch, the file that holds it): the best validation epoch's best.msgpack
    with model selection, else the last checkpoint written."""
    s = record.summary or {}
    if s.get("best_checkpoint"):
        return s.get("best_epoch"), s["best_checkpoint"]
    return record.last.get("epoch"), record.checkpoint or "none written"


def kept_words(record: RunRecord) -> str:
    """Why that epoch: ``best validation rmse`` or ``the last``."""
    s = record.summary or {}
    return (f"the best validation {s.get('selection_metric', 'rmse')}"
            if s.get("best_checkpoint") else "the last")


def summary_lines(record: RunRecord, seconds: float) -> list[str]:
    """The end-of-run block: model file, kept epoch, scores next to the baselines', time."""
    epoch, path = kept_epoch(record)
    lines = [f"model: {path} (epoch {epoch}, {kept_words(record)})"]
    s = record.summary or {}
    base = record.baselines.get("bias")
    if "test_rmse" in s:
        lines.append(f"test RMSE {s['test_rmse']:.4f} over {s['test_count']} ratings"
                     + (f" (the model's own baseline: {s['test_baseline_rmse']:.4f})"
                        if s.get("test_baseline_rmse") is not None else ""))
    if "refit_skipped" in s:
        lines.append(f"no refit: {s['refit_skipped']}")
    elif "refit_logdir" in s:
        lines.append(f"refit on training + validation ratings ({s['refit_epochs']} epochs): "
                     f"{s['refit_logdir']}" + (f", test RMSE {s['refit_test_rmse']:.4f}"
                                               if "refit_test_rmse" in s else ""))
    if record.last.get("eval_rmse") is not None:
        lines.append(f"last eval RMSE {record.last['eval_rmse']:.4f}"
                     + (f" (user + item bias baseline: {base.rmse:.4f})" if base else ""))
    lines.append(f"total time {seconds:.1f} s; curves.png, report.md, metrics.jsonl in "
                 f"{record.logdir}")
    return lines


def report_text(cfg, record: RunRecord, seconds: float) -> str:
    """report.md: settings, data, baselines, best epoch, test scores, metrics, time, files."""
    epoch, path = kept_epoch(record)
    values = cfg.to_dict()
    out = ["# Training run", "", f"logdir `{record.logdir}`, {seconds:.1f} s in all", "",
           "## Settings", ""]
    out += [f"- {k}: `{values[k]}`" for k in SETTINGS_SHOWN if k in values]
    out += ["", "(every setting: config.json)", "", "## Data", ""] + [f"- {d}" for d in
                                                                   record.data]
    out += ["", "## Baselines (evaluation data)", ""]
    out += [f"- {k}: {s.describe()}" for k, s in record.baselines.items()] or ["- none"]
    out += ["", "## Result", "", f"- kept: epoch {epoch} ({kept_words(record)}), `{path}`"]
    last = record.last
    out += [f"- last epoch {last.get('epoch')}: train RMSE {last.get('train_rmse', float('nan')):.4f}"
            + (f", eval RMSE {last['eval_rmse']:.4f}" if last.get("eval_rmse") is not None
               else "")]
    out += [f"- {k[5:]}: {v:.4f}" for k, v in last.items()
            if k.startswith("eval_") and k not in ("eval_rmse", "eval_count")
            and isinstance(v, float)]
    for k, v in (record.summary or {}).items():
        if k.startswith(("test_", "refit_")) and isinstance(v, (int, float)):
            out.append(f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}")
    out += ["", "## Files", "", f"- checkpoints: the newest {cfg.keep_checkpoints or 'all'} "
            "`checkpoint_*.msgpack`" + (", `best.msgpack`" if record.summary else ""),
            "- per-epoch metrics: `metrics.jsonl` (and TensorBoard events)",
            "- learning curves: `curves.png`", "- settings: `config.json`"]
    return "\n".join(out) + "\n"


def finish_run(cfg, record: RunRecord) -> None:
    """At the end of a run: curves.png (when matplotlib is installed; else a log line saying
    so), report.md, and the summary block on the results log."""
    seconds = time.time() - record.started
    try:
        curves.save_figure(curves.plot_runs([record.logdir]),
                           os.path.join(record.logdir, CURVES_FILE))
    except MissingExtraError as e:
        log.info("no curves.png: %s", e)
    atomic_write_text(os.path.join(record.logdir, REPORT_FILE), report_text(cfg, record, seconds))
    for line in summary_lines(record, seconds):
        results.info(line)


def describe_data(cfg, data) -> list[str]:
    """One line per data set of the run: path, shape, ratings."""
    lines = [f"training: `{cfg.path_to_train_data}`: {data.train.shape[0]} {cfg.major} x "
             f"{data.train.shape[1]} columns, {data.train.nnz} ratings"]
    if data.targets is not None:
        lines.append(f"evaluation: `{cfg.path_to_eval_data}`: {len(data.targets.actual)} "
                     f"ratings, {data.eval.nnz} of them of {cfg.major} and columns known to "
                     f"training (--unknown={cfg.unknown})")
    if cfg.path_to_test_data:
        lines.append(f"test: `{cfg.path_to_test_data}` (scored once, with the kept epoch)")
    return lines


def record_baselines(logger, scores: dict[str, Any], resumed: bool) -> None:
    """The baselines' row of metrics.jsonl (kind ``baseline``), for ``deepae plot``; a resumed
    run has it already."""
    if as_row(scores) and not resumed:
        logger.record("baseline", as_row(scores), 0)


def as_row(scores: dict[str, Any]) -> dict[str, float]:
    """The baselines' scores as a metrics.jsonl row (``global_rmse``, ``bias_rmse``; empty
    when nothing was scored)."""
    return {f"{k}_rmse": s.rmse for k, s in scores.items() if s.count}
