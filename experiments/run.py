"""Reproduces the paper's tables and figures: one command per experiment.

    python -m experiments.run --experiment NAME --scale paper|small|smoke --data_dir DIR
        [--split SPLIT] [--out DIR] [--work_dir DIR] [--seed S] [--split_seed S] [--sweep_k K]

NAME is one of splits (Table 1), activations (Figure 2), overfitting (Figure 3), depth (Table 2),
dropout (Figure 4), refeeding (Figure 5), comparison (Tables 3-4), or ``all``.

* ``--scale paper``: the paper's Netflix runs (for a GPU), with the exact settings of
  ``experiments/flags/paper/<experiment>/<setting>.flags``; DIR is the output folder of
  ``python -m deepae_jax.data.datasets.netflix_convert`` (NF_TRAIN/NF_VALID/NF_TEST, N3M_*, N6M_*, N1Y_*).
  The comparison trains on every split named by ``--split`` (default: all four); the other
  experiments on NF.
* ``--scale small``: the same designs on MovieLens-100K (DIR holds u.data, u1.base, u1.test) on a
  CPU, in the setting ``--split time70`` (the reference's per-user time split) or ``--split u1``
  (u1.base/u1.test with VALID carved from u1.base); ``experiments/flags/small/scale.flags``
  replaces the batch size and epoch count.
* ``--scale smoke``: every setting for one epoch with tiny layers on a tiny corner of the data
  (or on synthetic data when DIR holds no MovieLens-100K): proves that each command works.

Every run trains on TRAIN, evaluates on VALID after each epoch, and the epoch with the best VALID
RMSE is scored on TEST. Each experiment writes to ``OUT/<experiment>/``: ``metrics/<setting>.jsonl``
(the raw per-epoch metrics), ``results.jsonl`` (one summary per setting, with the per-epoch rows
and the training-RMSE curve), ``table.md``, ``<experiment>.png`` and ``meta.json`` (machine,
date, commit, seed, wall time). Finished runs are reused when the command is repeated.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT_NAMES = ("splits", "activations", "overfitting", "depth", "dropout", "refeeding",
                    "comparison")

# (setting file stem, label, the paper's figure or statement) per experiment, in plot order.
SETTINGS = {
    "activations": [(a, a + (" (linear last layer)" if a in ("sigmoid", "tanh") else ""),
                     "much better" if a in ("elu", "selu", "lrelu") else "worse")
                    for a in ("sigmoid", "relu", "relu6", "tanh", "elu", "lrelu", "selu")],
    "overfitting": [("h128", "n,128,n", "-"),
                    ("h256", "n,256,n", "eval RMSE > 1.0 (9,115,240 params)"),
                    ("h512", "n,512,n", "over-fits"), ("h1024", "n,1024,n", "over-fits")],
    "depth": [(f"layers{2 * k:02d}", f"{2 * k} layers", v) for k, v in
              zip(range(1, 7), ("1.146", "0.9615", "0.9378", "0.9364", "0.9340", "0.9328"))],
    "dropout": [("dp00", "drop 0.0", "over-fits"), ("dp05", "drop 0.5", "over-fits"),
                ("dp065", "drop 0.65", "0.9192"), ("dp08", "drop 0.8", "0.9183")],
    "refeeding": [("lr001_aug0", "lr 0.001", "0.9183 (= dropout 0.8)"),
                  ("lr001_aug1", "lr 0.001 + re-feeding", "no better than without"),
                  ("lr005_aug0", "lr 0.005", "diverges"),
                  ("lr005_aug1", "lr 0.005 + re-feeding", "0.9100 (TEST 0.9099)")],
}
TITLES = {
    "splits": "Table 1: data splits",
    "activations": "Figure 2: activation functions (n,128,128,n)",
    "overfitting": "Figure 3: over-fitting of wide shallow models (n,h,n)",
    "depth": "Table 2: going deeper (128-unit layers)",
    "dropout": "Figure 4: dropout on the code layer of n,512,512,1024,512,512,n",
    "refeeding": "Figure 5: dense re-feeding (n,512,512,1024,dp(0.8),512,512,n)",
    "comparison": "Tables 3-4: comparison",
}
PAPER_TABLE1 = {  # PAPER.md: train users, ratings, items; test users, ratings, items
    "NF": (477412, 98074901, 17768, 173482, 2250481, 17305),
    "N3M": (311315, 13675402, 17736, 160906, 2082559, 17261),
    "N6M": (390795, 29179009, 17757, 169541, 2175535, 17290),
    "N1Y": (345855, 41451832, 16907, 197951, 3888684, 16506),
}
PAPER_COMPARISON = {  # test RMSE: DeepRec, I-AR, U-AR, RRN
    "N3M": {"DeepRec (paper)": 0.9373, "I-AR (paper)": 0.9778, "U-AR (paper)": 0.9836,
            "RRN (paper)": 0.9427},
    "N6M": {"DeepRec (paper)": 0.9207},
    "N1Y": {"DeepRec (paper)": 0.9225},
    "NF": {"DeepRec (paper)": 0.9099, "I-AR (paper)": 0.9364, "U-AR (paper)": 0.9647,
           "RRN (paper)": 0.9224},
}
PUBLISHED_U1 = {"GC-MC": 0.910, "IGMC": 0.905, "GLocal-K": 0.889}
SMOKE_SHRINK = 32

log = logging.getLogger("experiments")


def say(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------
# Settings

def paper_spec(experiment: str, stem: str, label: str, overrides: dict, shrink: int = 1):
    from experiments.flagfiles import flagfile, parse_flagfile
    from experiments.protocol import RunSpec
    path = flagfile("paper", experiment, stem + ".flags")
    settings = parse_flagfile(path)
    settings.update(overrides)
    if shrink > 1:
        settings["hidden_layers"] = tuple(max(2, h // shrink) for h in settings["hidden_layers"])
    return RunSpec(stem, label, settings, os.path.relpath(path, REPO_ROOT))


def scale_overrides(scale: str) -> dict:
    from experiments.flagfiles import flagfile, parse_flagfile
    return {} if scale == "paper" else parse_flagfile(flagfile(scale, "scale.flags"))


# ---------------------------------------------------------------------------------------------
# Provenance

def _git(*args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict:
    import jax
    devices = jax.devices()
    return {"host": platform.node(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "jax": jax.__version__, "backend": jax.default_backend(),
            "devices": f"{len(devices)} x {devices[0].device_kind}",
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def commit() -> str:
    head = _git("rev-parse", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return head + (" (with uncommitted changes)" if dirty else "")


def meta_block(meta: dict) -> str:
    m = meta["machine"]
    return (f"- machine: {m['host']}, {m['platform']}, {m['cpu_count']} CPUs, JAX {m['jax']} on "
            f"{m['backend']} ({m['devices']})\n"
            f"- date (UTC): {meta['started']} .. {meta['finished']}; wall time "
            f"{meta['wall_s']:.0f} s; {meta['runs']} training runs, "
            f"{meta['runs_train_s']:.0f} s of training and scoring in all"
            + (f" ({meta['runs_reused']} finished earlier and reused)" if meta['runs_reused']
               else "") + "\n"
            f"- commit: {meta['commit']}\n"
            f"- seed: {meta['seed']} (training), {meta['split_seed']} (data split)\n"
            f"- scale: {meta['scale']}; data: {meta['data']}\n"
            f"- command: `{meta['command']}`\n")


# ---------------------------------------------------------------------------------------------
# Tables

def fmt(v, digits=4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if v == v else "nan"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def md_table(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


RUN_HEADER = ("setting", "params", "best epoch", "VALID RMSE (best)", "TEST RMSE (best epoch)",
              "train RMSE (best epoch)", "last VALID RMSE", "epochs run", "paper", "time (s)")


def run_row(r: dict, paper: str = "-") -> list:
    best = r.get("best_epoch")
    diverged = f"diverged at epoch {r['epochs_run'] + 1}" if r.get("diverged") else None
    return [r["label"], r.get("n_params"), best, r.get("best_valid_rmse"), r.get("test_rmse"),
            r.get("train_rmse_at_best"), r.get("last_valid_rmse"),
            diverged or r.get("epochs_run"), paper, round(r.get("wall_s", 0.0))]


# ---------------------------------------------------------------------------------------------
# Experiments

class Context:
    """Everything an experiment needs: arguments, data, folders, provenance."""

    def __init__(self, args):
        self.args = args
        self.scale = args.scale
        self.seed = args.seed
        self.overrides = scale_overrides(args.scale)
        self.epoch_override = {"num_epochs": args.epochs} if args.epochs else {}
        self.overrides.update(self.epoch_override)
        self.shrink = SMOKE_SHRINK if args.scale == "smoke" else 1
        self._splits = {}

    def split(self, name: str):
        from experiments import data
        if name not in self._splits:
            a = self.args
            if self.scale == "paper":
                self._splits[name] = data.paper_split(a.data_dir, name)
            elif self.scale == "smoke" and not os.path.isfile(os.path.join(a.data_dir or "",
                                                                          "u.data")):
                self._splits[name] = data.synthetic_split(name, a.work_dir, a.split_seed)
            else:
                self._splits[name] = data.movielens_split(a.data_dir, name, a.work_dir,
                                                          a.split_seed, self.scale == "smoke")
        return self._splits[name]

    @property
    def main_split(self) -> str:
        return "NF" if self.scale == "paper" else self.args.split

    def run(self, experiment: str, spec, split_name: str | None = None) -> dict:
        from experiments.protocol import run_one
        split_name = split_name or self.main_split
        run_dir = os.path.join(self.args.work_dir, "runs", split_name, experiment, spec.name)
        return run_one(spec, self.split(split_name), run_dir, self.seed,
                       reuse=not self.args.no_reuse, log=say)


def save_runs(folder: str, results: list[dict]) -> None:
    os.makedirs(os.path.join(folder, "metrics"), exist_ok=True)
    with open(os.path.join(folder, "results.jsonl"), "w", encoding="utf-8") as fh:
        for r in results:
            fh.write(json.dumps({k: v for k, v in r.items() if k != "identity"}) + "\n")
    for r in results:
        with open(os.path.join(folder, "metrics", r["name"] + ".jsonl"), "w",
                  encoding="utf-8") as fh:
            for row in r["epochs"]:
                fh.write(json.dumps(row) + "\n")


def write_table(folder: str, title: str, meta: dict, body: str) -> None:
    with open(os.path.join(folder, "table.md"), "w", encoding="utf-8") as fh:
        fh.write(f"# {title}\n\n{meta_block(meta)}\n{body}")


def protocol_note(ctx: Context) -> str:
    over = ", ".join(f"{k}={v}" for k, v in ctx.overrides.items())
    shrink = (f" Hidden layer sizes divided by {ctx.shrink} (at least 2)." if ctx.shrink > 1
              else "")
    return ("Each setting trains on TRAIN and is evaluated on VALID after every epoch; the epoch "
            "with the best VALID RMSE is scored on TEST (TEST plays no part in the choice). "
            "Settings: `experiments/flags/paper/<experiment>/<setting>.flags`"
            + (f", with {over} for this scale." if over else ".") + shrink + "\n")


def exp_training(ctx: Context, experiment: str, folder: str) -> tuple[str, list]:
    from experiments import plots
    results, rows = [], []
    settings = SETTINGS[experiment]
    if ctx.args.max_settings and len(settings) > ctx.args.max_settings:
        k = ctx.args.max_settings  # the first k-1 and the last: the extremes of the design
        settings = settings[:k - 1] + settings[-1:]
    for stem, label, paper in settings:
        spec = paper_spec(experiment, stem, label, ctx.overrides, ctx.shrink)
        r = dict(ctx.run(experiment, spec), label=label)  # a reused run keeps this label
        results.append(r)
        rows.append(run_row(r, paper))
    save_runs(folder, results)
    png = os.path.join(folder, f"{experiment}.png")
    title = f"{TITLES[experiment]} - {ctx.describe_data()}"
    if experiment == "overfitting":
        plots.train_and_eval(results, png, title)
    elif experiment == "depth":
        layers = [int(s[0][6:]) for s in settings]
        plots.versus(layers, [r["best_valid_rmse"] for r in results],
                     [float(s[2]) for s in settings], png, title, "number of layers")
    else:
        plots.curves(results, png, title, train_per_batch=(experiment == "activations"))
    body = protocol_note(ctx) + "\n" + md_table(RUN_HEADER, rows)
    if experiment == "activations":
        body += ("\nThe figure's left panel is the training RMSE per mini-batch as logged every "
                 "`summary_frequency` iterations (TensorBoard tag `train/rmse_recent`, the RMSE "
                 "of the iterations since the previous summary), as in the paper's Figure 2.\n")
    return body, results


def exp_splits(ctx: Context, folder: str) -> tuple[str, list]:
    """Table 1: users, ratings and items of each part."""
    from experiments import plots
    from deepae_jax.data.ratings import load_triples
    import numpy as np
    names = list(ctx.args.split_list) if ctx.scale == "paper" else [ctx.main_split]
    rows, results, labels, counts = [], [], [], []
    for name in names:
        s = ctx.split(name)
        parts = {p: load_triples(getattr(s, p.lower())) for p in ("TRAIN", "VALID", "TEST")}
        held_users = np.concatenate([parts["VALID"].users, parts["TEST"].users])
        held_items = np.concatenate([parts["VALID"].items, parts["TEST"].items])
        stats = {p: (int(np.unique(t.users).size), len(t), int(np.unique(t.items).size))
                 for p, t in parts.items()}
        stats["VALID+TEST"] = (int(np.unique(held_users).size), int(held_users.size),
                               int(np.unique(held_items).size))
        paper = PAPER_TABLE1.get(name)
        for p, (u, n, i) in stats.items():
            ref = "-"
            if paper and p == "TRAIN":
                ref = f"{paper[0]:,} / {paper[1]:,} / {paper[2]:,}"
            elif paper and p == "VALID+TEST":
                ref = f"{paper[3]:,} / {paper[4]:,} / {paper[5]:,}"
            rows.append([name, p, u, n, i, ref])
            labels.append(f"{name} {p}")
            counts.append(float(n))
        results.append({"name": name, "description": s.description, "stats": stats})
    header = ("split", "part", "users", "ratings", "items", "paper (users / ratings / items)")
    body = "".join(f"- {r['name']}: {r['description']}\n" for r in results)
    body += "\n" + md_table(header, rows)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "results.jsonl"), "w", encoding="utf-8") as fh:
        for r in results:
            fh.write(json.dumps(r) + "\n")
    plots.bars(labels, counts, os.path.join(folder, "splits.png"),
               f"{TITLES['splits']} - {ctx.describe_data()}", "ratings")
    return body, results


def exp_comparison(ctx: Context, folder: str) -> tuple[str, list]:
    from experiments import baselines, plots, sweep
    from experiments.flagfiles import flagfile, parse_flagfile
    from experiments.protocol import RunSpec
    results = []
    body = ("Every model trains on TRAIN, is evaluated on VALID after every epoch, and the epoch "
            "with the best VALID RMSE is scored on TEST; the baselines choose their "
            "regularisation on VALID. TEST plays no part in any choice. The note column names "
            "each model's flagfile or sweep setting"
            + (f" (with {', '.join(f'{k}={v}' for k, v in ctx.overrides.items())} for the "
               f"paper's DeepRec at this scale)" if ctx.overrides else "") + ".\n")
    header = ("method", "rows", "VALID RMSE (selected)", "TEST RMSE", "TEST ratings",
              "best epoch", "note")
    names = list(ctx.args.split_list) if ctx.scale == "paper" else [ctx.main_split]
    for name in names:
        s = ctx.split(name)
        rows, entries = [], []
        for b in baselines.run_baselines(s.train, s.valid, s.test):
            b["kind"] = "baseline"
            entries.append(b)
            rows.append([b["label"], "-", b["best_valid_rmse"], b["test_rmse"], b["test_count"],
                         "-", b["note"]])
        if ctx.scale == "paper":
            specs = [("DeepRec (ours)", paper_spec("comparison", name, f"DeepRec {name}", {}))]
        else:
            specs = []
            for stem, label in (("u_autorec", "U-AutoRec"), ("i_autorec", "I-AutoRec")):
                path = flagfile("small", "comparison", stem + ".flags")
                settings = parse_flagfile(path)
                settings.update(ctx.epoch_override)
                if ctx.scale == "smoke":
                    settings.update(ctx.overrides)
                    settings["hidden_layers"] = tuple(max(2, h // ctx.shrink)
                                                      for h in settings["hidden_layers"])
                specs.append((label, RunSpec(stem, label, settings,
                                             os.path.relpath(path, REPO_ROOT))))
            deeprec = paper_spec("refeeding", "lr005_aug1",
                                 "DeepRec, paper's best (n,512,512,1024,dp(0.8), lr 0.005, "
                                 "re-feeding)", ctx.overrides, ctx.shrink)
            specs.append(("DeepRec, paper's best", deeprec))
        for method, spec in specs:
            exp = "refeeding" if spec.name == "lr005_aug1" else "comparison"
            r = ctx.run(exp, spec, name)
            r = dict(r, kind="model", method=method)
            entries.append(r)
            rows.append([method, r["identity"]["settings"]["major"], r["best_valid_rmse"],
                         r["test_rmse"], r["test_count"], r["best_epoch"],
                         spec.source])
        sweep_rows = []
        if ctx.scale != "paper":
            over = dict(ctx.epoch_override)
            if ctx.scale == "smoke":
                over = dict(ctx.overrides)
            specs = sweep.sample(ctx.args.sweep_k, ctx.seed, over)
            sweep_results = []

            def run_sweep(spec, stage):
                settings = dict(spec.settings)
                if ctx.shrink > 1:
                    settings["hidden_layers"] = tuple(max(2, h // ctx.shrink)
                                                      for h in settings["hidden_layers"])
                r = dict(ctx.run("sweep", RunSpec(spec.name, spec.label, settings, spec.source),
                                 name), kind="sweep", stage=stage, grid_settings=spec.settings)
                sweep_results.append(r)
                sweep_rows.append([stage, r["label"], r["best_valid_rmse"], r["test_rmse"],
                                   r["best_epoch"], round(r["wall_s"])])
                return r

            def score(r):
                v = r["best_valid_rmse"]
                return v if v is not None else float("inf")

            run_sweep(sweep.calibrated(over), "0 (calibration)")
            for spec in specs:
                run_sweep(spec, "1 (random)")
            if sweep_results and ctx.args.sweep_refine:
                import numpy as np
                rng = np.random.default_rng([ctx.seed, 99])
                current = min(sweep_results, key=score)
                tried = {sweep.key(r["grid_settings"]) for r in sweep_results}
                for step in range(ctx.args.sweep_refine):
                    cand = sweep.neighbour(current["grid_settings"], rng, tried)
                    if cand is None:
                        break
                    tried.add(sweep.key(cand))
                    r = run_sweep(sweep._spec(cand, f"sweep_refine_{step:02d}"), "2 (local)")
                    if score(r) < score(current):
                        current = r
            entries.extend(sweep_results)
            for cell in sweep.CELLS:
                cell_runs = [r for r in sweep_results
                             if (r["identity"]["settings"]["major"],
                                 r["identity"]["settings"]["aug_step"]) == cell]
                finite = [r for r in cell_runs if r["best_valid_rmse"] is not None]
                if finite:
                    b = min(finite, key=lambda r: r["best_valid_rmse"])
                    rows.append([f"best of sweep, {cell[0][:-1]}-based"
                                 + (", re-feeding" if cell[1] else ""), cell[0],
                                 b["best_valid_rmse"], b["test_rmse"], b["test_count"],
                                 b["best_epoch"], b["label"]])
            finite = [r for r in sweep_results if r["best_valid_rmse"] is not None]
            if finite:
                b = min(finite, key=lambda r: r["best_valid_rmse"])
                rows.append(["**best of sweep (all cells, chosen on VALID)**",
                             b["identity"]["settings"]["major"], b["best_valid_rmse"],
                             b["test_rmse"], b["test_count"], b["best_epoch"], b["label"]])
        published = (PAPER_COMPARISON.get(name, {}) if ctx.scale == "paper"
                     else PUBLISHED_U1 if name == "u1" else {})
        for method, v in published.items():
            rows.append([method + (" (published)" if ctx.scale != "paper" else ""), "-", "-",
                         v, "-", "-", "published figure (PAPER.md), not run here"])
        models = [r for r in entries if r.get("kind") in ("model", "baseline")]
        sel = [r for r in entries if r.get("kind") == "sweep" and r["best_valid_rmse"] is not None]
        labels = [r.get("method", r["label"]) for r in models]
        values = [r["test_rmse"] for r in models]
        if sel:
            b = min(sel, key=lambda r: r["best_valid_rmse"])
            labels.append("best of sweep")
            values.append(b["test_rmse"])
        plots.bars(labels, values, os.path.join(folder, f"comparison_{name}.png"),
                   f"{TITLES['comparison']} - {ctx.describe_data(name)}: TEST RMSE",
                   "TEST RMSE", {k: v for k, v in published.items()} or None)
        body += f"\n## {name}: {ctx.split(name).description}\n\n" + md_table(header, rows)
        if sweep_rows:
            body += (f"\n### Sweep ({len(sweep_rows)} settings)\n\n{sweep.describe()}\n\n"
                     + md_table(("stage", "setting", "VALID RMSE (best epoch)", "TEST RMSE",
                                 "best epoch", "time (s)"), sweep_rows))
        results.extend(dict(e, split=name) for e in entries)
    os.makedirs(folder, exist_ok=True)
    save_runs(folder, [r for r in results if r.get("kind") != "baseline"])
    with open(os.path.join(folder, "baselines.jsonl"), "w", encoding="utf-8") as fh:
        for r in results:
            if r.get("kind") == "baseline":
                fh.write(json.dumps(r) + "\n")
    return body, results


def run_experiment(ctx: Context, experiment: str) -> None:
    folder = os.path.join(ctx.args.out, experiment)
    os.makedirs(folder, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.time()
    say(f"== {experiment} ({TITLES[experiment]}), scale {ctx.scale}, out {folder}")
    if experiment == "splits":
        body, results = exp_splits(ctx, folder)
    elif experiment == "comparison":
        body, results = exp_comparison(ctx, folder)
    else:
        body, results = exp_training(ctx, experiment, folder)
    trained = [r for r in results if "wall_s" in r and "epochs" in r]
    meta = {"experiment": experiment, "scale": ctx.scale,
            "data": ctx.describe_data(), "seed": ctx.seed, "split_seed": ctx.args.split_seed,
            "started": started.strftime("%Y-%m-%d %H:%M:%S"),
            "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            "wall_s": time.time() - t0,
            "runs": len(trained), "runs_reused": sum(bool(r.get("reused")) for r in trained),
            "runs_train_s": sum(r["wall_s"] for r in trained), "commit": ctx.commit, "machine": ctx.machine,
            "command": ctx.command}
    with open(os.path.join(folder, "meta.json"), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2)
    write_table(folder, f"{TITLES[experiment]} ({ctx.describe_data()})", meta, body)
    say(f"   wrote {folder}/table.md ({meta['wall_s']:.0f} s)")


def default_tag(args) -> str:
    if args.scale == "paper":
        return "netflix"
    return f"{'smoke_' if args.scale == 'smoke' else ''}ml100k_{args.split}"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m experiments.run",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--experiment", required=True, choices=EXPERIMENT_NAMES + ("all",))
    p.add_argument("--scale", required=True, choices=("paper", "small", "smoke"))
    p.add_argument("--data_dir", default="",
                   help="paper: the netflix_convert output; small/smoke: the MovieLens-100K "
                        "folder (smoke falls back to synthetic data when it is absent)")
    p.add_argument("--split", default="",
                   help="small/smoke: time70 (default) or u1; paper: comma-separated Netflix "
                        "splits for the comparison (default NF,N3M,N6M,N1Y)")
    p.add_argument("--out", default="", help="default: experiments/results/<tag> for small, "
                   "runs/experiments/<tag> for paper and smoke")
    p.add_argument("--work_dir", default="",
                   help="data splits and run folders (default runs/experiments/work/<tag>)")
    p.add_argument("--seed", type=int, default=1, help="training seed (init, batches, dropout)")
    p.add_argument("--split_seed", type=int, default=0, help="seed of the data split's coin")
    p.add_argument("--sweep_k", type=int, default=0,
                   help="settings per sweep cell (default: 3 small, 1 smoke)")
    p.add_argument("--sweep_refine", type=int, default=-1,
                   help="local-search steps after the random stage (default: 5 small, 1 smoke)")
    p.add_argument("--epochs", type=int, default=0,
                   help="replace every setting's number of epochs (default: the scale's)")
    p.add_argument("--max_settings", type=int, default=-1,
                   help="run only the first k-1 and the last setting of each experiment "
                        "(default: all; smoke: 2)")
    p.add_argument("--no_reuse", action="store_true", help="retrain runs that already finished")
    a = p.parse_args(argv)
    if a.scale == "paper":
        from experiments.data import PAPER_SPLITS
        a.split_list = [s for s in (a.split or ",".join(PAPER_SPLITS)).split(",") if s]
        bad = [s for s in a.split_list if s not in PAPER_SPLITS]
        if bad:
            p.error(f"--split: unknown Netflix split(s) {bad}; choose from {PAPER_SPLITS}")
        if not a.data_dir:
            p.error("--data_dir: the folder written by deepae_jax.data.datasets.netflix_convert")
    else:
        from experiments.data import SMALL_SPLITS
        a.split = a.split or "time70"
        if a.split not in SMALL_SPLITS:
            p.error(f"--split={a.split!r}: choose from {SMALL_SPLITS}")
        a.split_list = [a.split]
        if a.scale == "small" and not os.path.isfile(os.path.join(a.data_dir, "u.data")):
            p.error(f"--data_dir={a.data_dir!r}: no MovieLens-100K u.data there")
    a.sweep_k = a.sweep_k or (1 if a.scale == "smoke" else 3)
    if a.sweep_refine < 0:
        a.sweep_refine = 1 if a.scale == "smoke" else 5
    if a.max_settings < 0:
        a.max_settings = 2 if a.scale == "smoke" else 0
    tag = default_tag(a)
    if not a.out:
        base = (os.path.join(REPO_ROOT, "experiments", "results") if a.scale == "small"
                else os.path.join(REPO_ROOT, "runs", "experiments"))
        a.out = os.path.join(base, tag)
    a.out = os.path.abspath(a.out)
    a.work_dir = os.path.abspath(a.work_dir or os.path.join(REPO_ROOT, "runs", "experiments",
                                                            "work", tag))
    return a


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
    ctx = Context(args)
    ctx.commit = commit()
    ctx.machine = machine()
    ctx.command = "python -m experiments.run " + " ".join(
        sys.argv[1:] if argv is None else argv)

    def describe_data(name=None):
        name = name or (",".join(args.split_list) if args.scale == "paper" else args.split)
        if args.scale == "paper":
            return f"Netflix {name}"
        if not os.path.isfile(os.path.join(args.data_dir or "", "u.data")):
            return f"SMOKE synthetic data (MovieLens-100K not found; setting {name})"
        return f"{'SMOKE ' if args.scale == 'smoke' else ''}MovieLens-100K {name}"
    ctx.describe_data = describe_data
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.work_dir, exist_ok=True)
    t0 = time.time()
    todo = EXPERIMENT_NAMES if args.experiment == "all" else (args.experiment,)
    for experiment in todo:
        run_experiment(ctx, experiment)
    say(f"done: {', '.join(todo)} in {time.time() - t0:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
