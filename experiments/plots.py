"""PNG figures mirroring the paper's (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _finite(xs, ys):
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
    return [p[0] for p in pts], [p[1] for p in pts]


def _epoch_series(result, key):
    return _finite([e["epoch"] for e in result["epochs"]], [e[key] for e in result["epochs"]])


def _finish(fig, path, title):
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves(results: list[dict], path: str, title: str, train_per_batch: bool = False,
           show_train: bool = True) -> None:
    """Left: training RMSE (per summary of mini-batches, or per epoch); right: VALID RMSE per
    epoch; one colour per setting (Figures 2-5)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, r in enumerate(results):
        color = f"C{k % 10}"
        if train_per_batch and r.get("train_curve"):
            xs, ys = _finite([p[0] for p in r["train_curve"]], [p[1] for p in r["train_curve"]])
            ax1.plot(xs, ys, color=color, lw=1, label=r["label"])
        elif show_train:
            xs, ys = _epoch_series(r, "train_rmse")
            ax1.plot(xs, ys, color=color, lw=1.2, label=r["label"])
        xs, ys = _epoch_series(r, "eval_rmse")
        tag = " (diverged)" if r.get("diverged") else ""
        ax2.plot(xs, ys, color=color, lw=1.2, label=r["label"] + tag)
        if r.get("best_epoch"):
            ax2.plot([r["best_epoch"]], [r["best_valid_rmse"]], "o", color=color, ms=3)
    ax1.set_xlabel("iteration (mini-batch)" if train_per_batch else "epoch")
    ax1.set_ylabel("training RMSE")
    ax1.set_title("training RMSE" + (" per mini-batch (mean of each summary window)"
                                     if train_per_batch else " per epoch"), fontsize=9)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("evaluation (VALID) RMSE")
    ax2.set_title("evaluation RMSE per epoch (dot: best epoch)", fontsize=9)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        _clip_y(ax)
    ax2.legend(fontsize=7)
    _finish(fig, path, title)


def _clip_y(ax):
    """Keeps the interesting range: early epochs of untrained models start far above."""
    ys = [y for line in ax.get_lines() for y in line.get_ydata() if math.isfinite(y)]
    if ys:
        lo = min(ys)
        hi = sorted(ys)[int(0.9 * (len(ys) - 1))]
        ax.set_ylim(lo - 0.02, max(hi, lo + 0.1) + 0.05)


def train_and_eval(results: list[dict], path: str, title: str) -> None:
    """Figure 3: training (solid) and evaluation (dashed) RMSE per epoch, one colour per width."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for k, r in enumerate(results):
        color = f"C{k % 10}"
        ax.plot(*_epoch_series(r, "train_rmse"), color=color, lw=1.2, label=f"{r['label']} train")
        ax.plot(*_epoch_series(r, "eval_rmse"), color=color, lw=1.2, ls="--",
                label=f"{r['label']} eval")
    ax.set_xlabel("epoch")
    ax.set_ylabel("RMSE")
    ax.grid(alpha=0.3)
    _clip_y(ax)
    ax.legend(fontsize=7, ncol=2)
    _finish(fig, path, title)


def versus(xs, ours, paper, path: str, title: str, xlabel: str,
           ylabel: str = "best evaluation RMSE") -> None:
    """Table 2 as a figure: our best VALID RMSE and the paper's figure against depth."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(*_finite(xs, ours), "o-", color="C0", label="ours (VALID, best epoch)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel + " (ours)", color="C0")
    ax.grid(alpha=0.3)
    if any(p is not None for p in paper):
        ax2 = ax.twinx()
        ax2.plot(*_finite(xs, paper), "s--", color="C3", label="paper (Netflix Full)")
        ax2.set_ylabel("paper's evaluation RMSE (Netflix)", color="C3")
        lines = ax.get_lines() + ax2.get_lines()
        ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8)
    _finish(fig, path, title)


def bars(labels, values, path: str, title: str, ylabel: str, reference: dict | None = None
         ) -> None:
    """Tables 1, 3-4 as bars; ``reference`` adds horizontal lines (published figures)."""
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(labels) + 3), 4.8))
    vals = [v if v is not None and math.isfinite(v) else 0.0 for v in values]
    ax.bar(range(len(vals)), vals, color=[f"C{k % 10}" for k in range(len(vals))])
    for k, v in enumerate(values):
        if v is not None and math.isfinite(v):
            ax.text(k, v, f"{v:.4f}" if v < 100 else f"{v:,.0f}", ha="center", va="bottom",
                    fontsize=7)
    for j, (name, v) in enumerate((reference or {}).items()):
        ax.axhline(v, color=f"C{(j + 5) % 10}", ls="--", lw=1, label=f"{name} {v}")
    if reference:
        ax.legend(fontsize=7, loc="lower right")
    finite = [v for v in vals if v > 0] + list((reference or {}).values())
    if finite and max(finite) < 100:
        ax.set_ylim(min(finite) - 0.08, max(finite) + 0.05)
    ax.set_xticks(range(len(vals)))
    ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    _finish(fig, path, title)
