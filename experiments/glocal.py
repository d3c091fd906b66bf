"""GLocal-K (Han et al., CIKM 2021) on a MovieLens-100K setting, chosen on VALID, TEST once.

    python -m experiments.glocal --data_dir ../shared/data/movielens-100k [--split u1]
        [--seed 0] [--split_seed 0] [--out runs/glocal] [--fine_epochs 60] [--smoke]

The split is ``experiments/data.py``'s (``u1``: TRAIN = 90% of u1.base, VALID = the other 10%,
carved with ``--split_seed``, the same VALID as ``experiments/beyond.py``; TEST = u1.test). The
model (``deepae_jax.core.kernel_model``, trained by ``deepae_jax.training.glocal``) is item-based:
rows are items, columns users. Its fine-tuning epoch is chosen on VALID; TEST is scored once,
over ALL its ratings (users or items unknown to training get the user + item bias baseline's
prediction, its lambdas chosen on VALID). ``--fine_epochs 0`` trains the local-kernel
autoencoder alone (Muller et al.'s Sparse FC), its epoch chosen on VALID.

Writes to ``--out``/``<split>_seed<seed>``: ``valid_predictions.tsv`` and
``test_predictions.tsv`` (``user<TAB>item<TAB>rating<TAB>prediction`` with a header line, one
row per rating in the order of the split's VALID / TEST ``ratings.tsv``, ORIGINAL ids), and
``summary.json`` (RMSEs, the chosen epoch, every epoch's history, the settings, machine, time).
With ``--refit``, the model is then trained again on TRAIN+VALID (80,000 ratings for u1: the
published setting) for the chosen number of epochs, with the bias lambdas chosen on VALID, and
scored once on TEST (``test_predictions_refit.tsv``, ``refit_test_rmse``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time

import numpy as np

from deepae_jax import baseline as baseline_lib
from deepae_jax.core import kernel_model
from deepae_jax.data import ratings
from deepae_jax.evaluation import predictions
from deepae_jax.run.files import atomic_write_text
from deepae_jax.training import glocal
from experiments import data as data_lib
from experiments.run import commit, machine

PUBLISHED_ML100K = 0.8889  # GLocal-K, Han et al. 2021, Table 2 (ML-100K u1)


def write_predictions(path: str, targets: predictions.EvalTargets, pred: np.ndarray) -> None:
    """``user<TAB>item<TAB>rating<TAB>prediction`` per rating, header first (atomically)."""
    t = targets.triples
    lines = ["user\titem\trating\tprediction\n"] + [
        f"{u}\t{i}\t{r:g}\t{p:.6f}\n" for u, i, r, p in zip(t.users, t.items, t.ratings, pred)]
    atomic_write_text(path, "".join(lines))


def parse_flags(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data_dir", default="../shared/data/movielens-100k")
    ap.add_argument("--split", default="u1", choices=data_lib.SMALL_SPLITS)
    ap.add_argument("--seed", type=int, default=0, help="seed of the initialisation")
    ap.add_argument("--split_seed", type=int, default=0, help="seed of the VALID carve")
    ap.add_argument("--train", default="", help="your own split instead of MovieLens-100K's: "
                    "TRAIN ratings (any format the library reads); with --valid and --test")
    ap.add_argument("--valid", default="")
    ap.add_argument("--test", default="")
    ap.add_argument("--name", default="custom", help="the name of that split (output folders)")
    ap.add_argument("--out", default="runs/glocal")
    ap.add_argument("--hidden", default="500,500")
    ap.add_argument("--kernel_dim", type=int, default=5)
    ap.add_argument("--kernel", default="compact", choices=kernel_model.KERNELS)
    ap.add_argument("--lambda_2", type=float, default=20.0)
    ap.add_argument("--lambda_s", type=float, default=0.006)
    ap.add_argument("--gk_size", type=int, default=3)
    ap.add_argument("--dot_scale", type=float, default=1.0)
    ap.add_argument("--pre_epochs", type=int, default=30)
    ap.add_argument("--pre_iters", type=int, default=5)
    ap.add_argument("--fine_epochs", type=int, default=60)
    ap.add_argument("--fine_iters", type=int, default=5)
    ap.add_argument("--patience", type=int, default=0)
    ap.add_argument("--refit", action="store_true",
                    help="then train again on TRAIN+VALID for the epochs chosen on VALID (the "
                    "bias lambdas too), score TEST once: test_predictions_refit.tsv")
    ap.add_argument("--refit_only", action="store_true",
                    help="only the --refit step, the epochs read from an earlier run's "
                    "summary.json in the same folder")
    ap.add_argument("--table", action="store_true",
                    help="only print the Markdown table of the runs' summary.json under --out")
    ap.add_argument("--smoke", action="store_true", help="a tiny corner of the data, 2+2 epochs")
    return ap.parse_args(argv)


def refit(split: data_lib.Split, cfg: kernel_model.KernelConfig,
          schedule: glocal.GlocalSchedule, chosen: tuple[str, int],
          base: baseline_lib.Baseline, seed: int, folder: str) -> float:
    """Trains on TRAIN+VALID for the chosen epochs (no choice made on the larger set), writes
    ``test_predictions_refit.tsv``; returns its TEST RMSE over every rating."""
    t_train, t_valid = ratings.load_triples(split.train), ratings.load_triples(split.valid)
    both = ratings.build_matrix(ratings.Triples(
        np.concatenate([t_train.users, t_valid.users]), np.concatenate([t_train.items,
                                                                        t_valid.items]),
        np.concatenate([t_train.ratings, t_valid.ratings])), major="items")
    test = predictions.align_targets(both, ratings.load_triples(split.test))
    both_base = baseline_lib.fit(both.csr, "bias", base.reg_row, base.reg_col, scale=False)
    stage, epoch = chosen
    fine = epoch if stage == "fine" else 0
    pre = schedule.pre_epochs if stage == "fine" else epoch
    cfg = dataclasses.replace(cfg, layer_sizes=(both.shape[1],) + cfg.layer_sizes[1:])
    again = glocal.train(both, cfg, dataclasses.replace(schedule, pre_epochs=pre,
                                                        fine_epochs=fine, patience=0), seed)
    pred = glocal.predict_targets(again.predictions, test, both_base)
    write_predictions(os.path.join(folder, "test_predictions_refit.tsv"), test, pred)
    return predictions.score(pred, test.actual).rmse


def _setup(args):
    """(split, TRAIN matrix (rows: items), VALID and TEST targets, bias baseline, model
    config, schedule, output folder)."""
    if args.train:
        split = data_lib.Split(args.name, args.train, args.valid, args.test,
                               f"{args.name}: TRAIN {args.train}, VALID {args.valid}, TEST "
                               f"{args.test}")
        args.split = args.name
    else:
        split = data_lib.movielens_split(args.data_dir, args.split, os.path.join(
            args.out, "data"), args.split_seed, args.smoke)
    train_m = ratings.load_matrix(split.train, major="items")
    valid = predictions.align_targets(train_m, ratings.load_triples(split.valid))
    test = predictions.align_targets(train_m, ratings.load_triples(split.test))
    base = baseline_lib.fit(train_m.csr, "bias", eval_csr=valid.split.csr, scale=False)
    cfg = kernel_model.KernelConfig(
        (train_m.shape[1],) + tuple(int(h) for h in args.hidden.split(",")), args.kernel_dim,
        args.kernel, "sigmoid", args.lambda_2, args.lambda_s, args.gk_size, args.dot_scale)
    schedule = glocal.GlocalSchedule(args.pre_epochs, args.pre_iters, args.fine_epochs,
                                     args.fine_iters, patience=args.patience)
    if args.smoke:
        schedule = glocal.GlocalSchedule(2, 2, 2, 2)
    folder = os.path.join(args.out, f"{args.split}_seed{args.seed}"
                          + ("_smoke" if args.smoke else ""))
    return split, train_m, valid, test, base, cfg, schedule, folder


def run(args) -> dict:
    """Trains, chooses on VALID, scores TEST once, writes the predictions; returns the summary."""
    t0 = time.time()
    split, train_m, valid, test, base, cfg, schedule, folder = _setup(args)
    path = os.path.join(folder, "summary.json")
    if args.refit_only:
        with open(path, encoding="utf-8") as fh:
            summary = json.load(fh)
        summary["refit_test_rmse"] = refit(split, cfg, schedule, tuple(summary["chosen"]), base,
                                           args.seed, folder)
        summary["refit_wall_s"] = time.time() - t0
        atomic_write_text(path, json.dumps(summary, indent=1))
        return dict(summary, folder=folder)

    def valid_rmse(pred: np.ndarray) -> float:
        return predictions.score(glocal.predict_targets(pred, valid, base), valid.actual).rmse

    result = glocal.train(train_m, cfg, schedule, args.seed, valid_rmse)
    pred_valid = glocal.predict_targets(result.predictions, valid, base)
    pred_test = glocal.predict_targets(result.predictions, test, base)  # TEST: once
    os.makedirs(folder, exist_ok=True)
    write_predictions(os.path.join(folder, "valid_predictions.tsv"), valid, pred_valid)
    write_predictions(os.path.join(folder, "test_predictions.tsv"), test, pred_test)
    s_valid, s_test = (predictions.score(pred_valid, valid.actual),
                       predictions.score(pred_test, test.actual))
    summary = {"model": "glocal_k" if schedule.fine_epochs else "sparse_fc",
               "split": split.name, "split_description": split.description, "seed": args.seed,
               "split_seed": args.split_seed, "valid_rmse": s_valid.rmse,
               "test_rmse": s_test.rmse, "test_count": s_test.count,
               "test_unknown": test.n_unknown, "chosen": [result.stage, result.epoch],
               "published_test_rmse": PUBLISHED_ML100K, "config": vars(args),
               "params": kernel_model.count_params(result.local, result.global_),
               "wall_s": time.time() - t0, "commit": commit(), "machine": machine(),
               "history": result.history}
    if args.refit:
        summary["refit_test_rmse"] = refit(split, cfg, schedule, (result.stage, result.epoch),
                                           base, args.seed, folder)
        summary["refit_wall_s"] = time.time() - t0 - summary["wall_s"]
    atomic_write_text(path, json.dumps(summary, indent=1))
    return dict(summary, folder=folder)


def table(out: str, split: str = "u1") -> str:
    """Markdown: one row per run's summary.json in ``out`` (seed order), then mean +- sample
    standard deviation over the seeds."""
    runs = []
    for name in sorted(os.listdir(out)):
        path = os.path.join(out, name, "summary.json")
        if name.startswith(f"{split}_seed") and not name.endswith("_smoke") \
                and os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                runs.append(json.load(fh))
    runs.sort(key=lambda r: r["seed"])
    cell = lambda r, k: f"{r[k]:.4f}" if k in r else "-"  # noqa: E731
    lines = ["| seed | chosen epoch | VALID RMSE | TEST RMSE | refit TEST RMSE | minutes |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['chosen'][0]} {r['chosen'][1]} | {cell(r, 'valid_rmse')} | "
              f"{cell(r, 'test_rmse')} | {cell(r, 'refit_test_rmse')} | "
              f"{r['wall_s'] / 60:.0f} |" for r in runs]
    for key in ("valid_rmse", "test_rmse", "refit_test_rmse"):
        vals = [r[key] for r in runs if key in r]
        if vals:
            sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")
            lines.append(f"| mean ± sd of {len(vals)} | {key} | {np.mean(vals):.4f} ± {sd:.4f} "
                         "| | | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_flags(argv)
    if args.train and not (args.valid and args.test):
        print("error: --train needs --valid and --test", file=sys.stderr)
        return 2
    if args.table:
        print(table(args.out, args.split))
        return 0
    s = run(args)
    print(f"{s['model']} {s['split']} seed {s['seed']}: VALID RMSE {s['valid_rmse']:.4f}  "
          f"TEST RMSE {s['test_rmse']:.4f} over {s['test_count']} ratings "
          f"({s['test_unknown']} unknown to training: baseline)  chosen {s['chosen']}  "
          f"{s['wall_s']:.0f} s  -> {s['folder']}")
    if "refit_test_rmse" in s:
        print(f"refit on TRAIN+VALID for the chosen epochs: TEST RMSE {s['refit_test_rmse']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
