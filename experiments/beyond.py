"""Beyond the paper (issue 13): the rating-prediction recipe and ensembles vs the bias baseline.

    python -m experiments.beyond --data_dir ../shared/data/movielens-100k [--splits u1,time70]
        [--seeds 1,2,3] [--ensemble_items 4 --ensemble_users 2] [--out experiments/results/beyond]
    python -m experiments.beyond --train TRAIN --valid VALID --test TEST --name NAME --best

For each MovieLens-100K setting of ``experiments/data.py`` (VALID carved from the training part),
or for your own TRAIN / VALID / TEST files (``--train``, any format the library reads), TEST
scored once, over ALL its ratings (unknown users/items get the baseline's prediction):

* the baselines: global mean, and user + item biases (lambdas chosen on VALID);
* the recipe ``experiments/recipes/rating_prediction.flags`` unchanged, once per seed (the
  trainer itself picks the best epoch on VALID, stops early and scores TEST: ``summary.json``);
* an ensemble per seed s: ``--ensemble_items`` item-based recipe runs and ``--ensemble_users``
  user-based ones (``--major=users``), each with its own training seed, stacked on VALID with
  the bias baseline b: prediction = b + w_i * (mean(item-based) - b) + w_u * (mean(user-based)
  - b), (w_i, w_u) the least-squares fit on VALID, so that the ensemble's VALID error is at
  most the baseline's and each group's (before clipping); the weights may also differ by the
  item's (user's) activity tercile, the form chosen by cross-validation on VALID
  (``experiments/stacking.py``; ``inference.predict_ratings`` gives every member's prediction
  of every rating).
* with ``--refit``: each recipe run and each ensemble member again, trained on TRAIN + VALID
  for its best epoch count with the bias lambdas and the final predictor (shrinkage) it chose
  on VALID (no choice made on the larger set), scored once on TEST; refit ensembles keep the
  weights chosen on VALID, with the baseline refit on TRAIN + VALID (same lambdas).
* ``--glocal``: each ensemble also stacks ``--glocal_members`` GLocal-K members (default 2;
  ``experiments/glocal.py`` on the same files, each epoch chosen on VALID, refit included),
  averaged into a third group, its weight fitted on VALID.
* ``--neighbours``: each ensemble also stacks the item- and user-based neighbourhood models
  (``experiments/neighbours.py``: k nearest neighbours on the bias model's residuals, k and
  shrinkage chosen on VALID, refit on TRAIN + VALID), one group each: a family unlike the
  autoencoders (seconds to fit).
* ``--best``: the best recipe in one command: ``--refit``, ``--glocal`` and ``--neighbours``
  with the ensembles (5 item- and 2 user-based members and 2 GLocal-K members per seed unless
  told otherwise; about 16 minutes per seed on an idle 2-core CPU, GLocal-K taking most of it).

Writes ``results.jsonl`` (one row per run and per ensemble), ``table.md`` and ``meta.json`` to
``--out``; runs go to ``--work_dir`` (reused when their ``summary.json`` exists).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import sys
import time

import numpy as np

from deepae_jax import baseline as baseline_lib
from deepae_jax import inference
from deepae_jax.evaluation import predictions
from deepae_jax.training import search
from deepae_jax.config import Config
from deepae_jax.data import ratings
from deepae_jax.run import files
from experiments import data as data_lib
from experiments import stacking
from experiments.flagfiles import parse_flagfile
from experiments.run import commit, machine

RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recipes",
                      "rating_prediction.flags")
PUBLISHED = {"GC-MC": 0.910, "IGMC": 0.905, "Sparse FC": 0.895, "GLocal-K": 0.889}


def scaled_split(split: data_lib.Split, factor: float, folder: str) -> data_lib.Split:
    """The same split with every rating multiplied by ``factor`` (e.g. 20: a 20..100 scale)."""
    paths = {}
    for part, path in (("TRAIN", split.train), ("VALID", split.valid), ("TEST", split.test)):
        t = ratings.load_triples(path)
        fname = os.path.join(folder, part, "ratings.tsv")
        if not os.path.isfile(fname):
            ratings.write_ratings_text(fname, ratings.Triples(t.users, t.items,
                                                              t.ratings * np.float32(factor)))
        paths[part] = os.path.dirname(fname)
    return data_lib.Split(f"{split.name}_x{factor:g}", paths["TRAIN"], paths["VALID"],
                          paths["TEST"], f"{split.description}; every rating x{factor:g}")


def baselines(split: data_lib.Split) -> list[dict]:
    """Global mean and user + item biases (lambdas on VALID), scored on every TEST rating."""
    train = ratings.load_matrix(split.train)
    valid = predictions.align_targets(train, ratings.load_triples(split.valid))
    test = predictions.align_targets(train, ratings.load_triples(split.test))
    rows = []
    for kind in ("global", "bias"):
        base = baseline_lib.fit(train.csr, kind, eval_csr=valid.split.csr)
        v, t = predictions.baseline_scores(base, valid), predictions.baseline_scores(base, test)
        rows.append({"kind": "baseline", "name": kind, "valid_rmse": v.rmse,
                     "test_rmse": t.rmse, "test_count": t.count})
    return rows


SMOKE: dict = {}  # --smoke: settings replaced in every run


def member_config(split: data_lib.Split, logdir: str, seed: int, recipe: str = RECIPE,
                  **overrides) -> Config:
    """The recipe, unchanged but for the data paths, the logdir, the seed and ``overrides``."""
    values = {**parse_flagfile(recipe), **overrides, **SMOKE}
    return Config(**{**values, "path_to_train_data": split.train,
                     "path_to_eval_data": split.valid, "path_to_test_data": split.test,
                     "logdir": logdir, "seed": seed})


def train_member(cfg: Config) -> dict:
    """Trains one run (or reuses its summary.json); the summary plus wall time."""
    path = os.path.join(cfg.logdir, "summary.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            summary = json.load(fh)
        if not cfg.refit or "refit_logdir" in summary:
            return summary
        cfg = dataclasses.replace(cfg, overwrite=True)  # trained before without its refit
    os.makedirs(cfg.logdir, exist_ok=True)
    t0 = time.time()
    with open(os.path.join(cfg.logdir, "train.log"), "w", encoding="utf-8") as log, \
            contextlib.redirect_stdout(log):
        search.train(cfg)
    with open(path, encoding="utf-8") as fh:
        summary = json.load(fh)
    summary["wall_s"] = time.time() - t0
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2, sort_keys=True)
    return summary


def member_predictions(cfg: Config, path: str) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, actual ratings) of a trained run on every rating of ``path``."""
    with contextlib.redirect_stdout(io.StringIO()):
        targets, pred = inference.predict_ratings(dataclasses.replace(
            cfg, mode="evaluate", path_to_eval_data=path, save_path=""))
    return pred, targets.actual


def refit(summary: dict, first: Config) -> tuple[dict, Config]:
    """The row of a recipe run's ``--refit`` (the library's: training/refit.py, trained by
    :func:`train_member` with the run) and the Config that predicts with the refit model."""
    row = {"kind": "refit", "name": "recipe, refit on TRAIN+VALID for its best epoch count",
           "seed": first.seed, "valid_rmse": float("nan"), "epochs": summary["refit_epochs"],
           "test_rmse": summary["refit_test_rmse"], "test_count": summary["refit_test_count"],
           "wall_s": None}
    if summary.get("refit_skipped"):  # the run kept its baseline: it is its own refit
        return row, first
    return row, dataclasses.replace(first, logdir=summary["refit_logdir"], refit=False,
                                    path_to_train_data=os.path.join(summary["refit_logdir"],
                                                                    files.TRAIN_VALID_FILE))


def baseline_predictions(split: data_lib.Split, paths: dict, train_path: str = "",
                         regs: tuple[float, float] | None = None) -> tuple[dict, tuple, tuple]:
    """({part: bias-baseline prediction of every rating of paths[part]}, (reg_user, reg_item),
    the training range): lambdas chosen on VALID unless ``regs``; trained on ``train_path``
    (default TRAIN)."""
    train = ratings.load_matrix(train_path or split.train)
    valid = predictions.align_targets(train, ratings.load_triples(split.valid))
    base = baseline_lib.fit(train.csr, "bias", *(regs or (-1.0, -1.0)),
                            eval_csr=valid.split.csr)
    out = {}
    for part, path in paths.items():
        t = predictions.align_targets(train, ratings.load_triples(path))
        out[part] = np.clip(base.fallback(t.rows, t.cols), base.rating_min, base.rating_max)
    return out, (base.reg_row, base.reg_col), (base.rating_min, base.rating_max)


def glocal_member(split: data_lib.Split, seed: int, work: str, smoke: bool = False
                  ) -> dict[str, np.ndarray]:
    """GLocal-K (``experiments/glocal.py``: its fine-tuning epoch chosen on VALID, then refit on
    TRAIN + VALID) with ``seed`` on the split's own files: its predictions of every rating of
    VALID, TEST and, after the refit, TEST again, in the files' order (and those ratings)."""
    from experiments import glocal
    argv = ["--train", split.train, "--valid", split.valid, "--test", split.test, "--name",
            "split", "--seed", str(seed), "--refit", "--out", os.path.join(work, "glocal")]
    argv += ["--smoke"] if smoke else []
    folder = os.path.join(work, "glocal", f"split_seed{seed}" + ("_smoke" if smoke else ""))
    names = {"valid": "valid_predictions.tsv", "test": "test_predictions.tsv",
             "refit": "test_predictions_refit.tsv"}
    if not all(os.path.isfile(os.path.join(folder, f)) for f in names.values()):
        with contextlib.redirect_stdout(io.StringIO()):
            glocal.run(glocal.parse_flags(argv))
    out = {}
    for part, f in names.items():  # columns: user, item, rating, prediction
        table = np.loadtxt(os.path.join(folder, f), delimiter="\t", skiprows=1, usecols=(2, 3),
                           ndmin=2)
        out[part], out[part + "_actual"] = table[:, 1], table[:, 0]
    return out


def neighbour_members(split: data_lib.Split) -> dict[str, dict[str, np.ndarray]]:
    """{"item_knn": ..., "user_knn": ...}: the item- and user-based neighbourhood models
    (``experiments/neighbours.py``; bias lambdas, k and shrink chosen on VALID), their
    predictions of every rating of VALID and TEST and, refit on TRAIN + VALID with the same
    choices, of TEST again, in the files' order (and those ratings). A side with more than
    ``neighbours.MAX_NEIGHBOURS`` ids is left out (logged)."""
    from experiments import neighbours
    train = ratings.load_matrix(split.train)
    valid_t, test_t = ratings.load_triples(split.valid), ratings.load_triples(split.test)
    valid, test = (predictions.align_targets(train, t) for t in (valid_t, test_t))
    base = baseline_lib.fit(train.csr, "bias", eval_csr=valid.split.csr)
    both = ratings.build_matrix(ratings.concat_triples([train.to_triples(), valid_t]),
                                duplicates="last", source="TRAIN + VALID")
    base_both = baseline_lib.fit(both.csr, "bias", base.reg_row, base.reg_col)
    test_both = predictions.align_targets(both, test_t)
    bounds = (base.rating_min, base.rating_max)
    out = {}
    for side in neighbours.SIDES:
        n = len(train.col_ids if side == "items" else train.row_ids)
        if n > neighbours.MAX_NEIGHBOURS:
            print(f"neighbours: {n} {side}: no {side[:-1]}-based member", file=sys.stderr)
            continue
        model, grid = neighbours.choose(train, base, side, valid.rows, valid.cols,
                                        valid.actual)
        again = neighbours.fit(both, base_both, side, model.k, model.shrink)
        out[f"{side[:-1]}_knn"] = {
            "valid": np.clip(neighbours.predict(model, valid.rows, valid.cols), *bounds),
            "test": np.clip(neighbours.predict(model, test.rows, test.cols), *bounds),
            "refit": np.clip(neighbours.predict(again, test_both.rows, test_both.cols),
                             *bounds),
            "valid_actual": valid.actual, "test_actual": test.actual,
            "refit_actual": test.actual, "k": model.k, "shrink": model.shrink,
            "valid_grid": grid}
    return out


def stacking_bins(split: data_lib.Split) -> dict[str, dict[str, np.ndarray | None]]:
    """{form: {part: bins}} for :mod:`experiments.stacking`: VALID and TEST binned by their
    item's (user's) activity in TRAIN, the refit's TEST by its activity in TRAIN + VALID."""
    train, valid, test = (ratings.load_triples(p) for p in (split.train, split.valid,
                                                            split.test))
    out: dict = {"plain": {"valid": None, "test": None, "refit": None}}
    for form, of in (("item_bins", lambda t: t.items), ("user_bins", lambda t: t.users)):
        both = np.concatenate(ratings.unify_ids(of(train), of(valid)))
        out[form] = {"valid": stacking.activity_bins(of(valid), of(train)),
                     "test": stacking.activity_bins(of(test), of(train)),
                     "refit": stacking.activity_bins(of(test), both)}
    return out


def ensemble(split: data_lib.Split, work: str, seed: int, n_items: int, n_users: int,
             recipe: str = RECIPE, with_refit: bool = False,
             others: dict[str, list[dict[str, np.ndarray]]] | None = None) -> list[dict]:
    """Trains the members of ensemble ``seed`` and scores their stacked predictions;
    ``others``: {group: members' predictions} of the other families (GLocal-K:
    :func:`glocal_member`; neighbours: :func:`neighbour_members`), each group's members
    averaged."""
    members = [("items", seed * 100 + j) for j in range(n_items)]
    members += [("users", seed * 100 + 50 + j) for j in range(n_users)]
    preds = {(part, major): [] for part in ("valid", "test", "refit")
             for major in ("items", "users")}
    actual, wall, both = {}, 0.0, ""
    for major, s in members:
        cfg = member_config(split, os.path.join(work, f"{major}_seed{s}"), s, recipe,
                            major=major, refit=with_refit)
        summary = train_member(cfg)
        wall += summary.get("wall_s", 0.0)
        for part, path in (("valid", split.valid), ("test", split.test)):
            p, actual[part] = member_predictions(cfg, path)
            preds[part, major].append(p)
        if with_refit:  # the member retrained on TRAIN + VALID, scored on TEST
            _, again = refit(summary, cfg)
            preds["refit", major].append(member_predictions(again, split.test)[0])
            if not summary.get("refit_skipped"):
                both = os.path.join(summary["refit_logdir"], files.TRAIN_VALID_FILE)

    base, regs, bounds = baseline_predictions(split, {"valid": split.valid, "test": split.test})
    if with_refit:  # the baseline refit as the members were (none refit: the run's own)
        base["refit"] = (baseline_predictions(split, {"refit": split.test}, both,
                                              regs)[0]["refit"] if both else base["test"])
    others = others or {}
    for group, members_of in others.items():
        for member in members_of:
            for part in ("valid", "test", "refit"):
                if not np.allclose(member[part + "_actual"],
                                   actual["test" if part == "refit" else part]):
                    raise ValueError(f"{group}'s {part} ratings are not this split's, in order")
                preds.setdefault((part, group), []).append(member[part])
    groups = [g for g in ("items", "users", *others) if preds.get(("valid", g))]

    means = {part: [np.mean(preds[part, g], axis=0) for g in groups]
             for part in ("valid", "test", "refit") if preds.get((part, groups[0]))}
    bins = stacking_bins(split)
    form, cv = stacking.choose_form(actual["valid"], base["valid"], means["valid"],
                                    {f: b["valid"] for f, b in bins.items()}, bounds)
    bins[stacking.BASELINE] = bins["plain"]
    if form == stacking.BASELINE and with_refit:  # kept as it is, as a recipe run would be
        base["refit"], means["refit"] = base["test"], means["test"]
    w = stacking.fit_form(form, actual["valid"], base["valid"], means["valid"],
                          bins[form]["valid"])

    def stacked(part):  # b + sum_g w_g (mean of group g - b), clipped to the rating range
        return stacking.predict(w, base[part], means[part], bins[form][part], bounds)
    scores = {part: predictions.score(stacked(part), actual[part]) for part in ("valid", "test")}
    kernels = others.get("glocal", [])
    knn = [g for g in others if g.endswith("_knn") and others[g]]
    name = (f"ensemble {n_items} items + {n_users} users"
            + (f" + {len(kernels)} GLocal-K" if kernels else "")
            + (f" + {' + '.join(g.replace('_', '-') for g in knn)}" if knn else "")
            + ", stacked with the baseline")
    plain = form in ("plain", stacking.BASELINE)
    labels = [g if plain else f"{g}:{form[:4]}{k}" for k in
              range(1 if plain else stacking.N_BINS) for g in groups]
    weights = dict(zip(labels, (float(x) for x in w)))
    rows = [{"kind": "ensemble", "name": name,
             "seed": seed, "members": [f"{m}:{s}" for m, s in members], "weights": weights,
             "neighbours": {g: {"k": others[g][0]["k"], "shrink": others[g][0]["shrink"]}
                            for g in knn},
             "stack_form": form, "stack_cv_rmse": cv,
             "valid_rmse": scores["valid"].rmse, "test_rmse": scores["test"].rmse,
             "test_count": scores["test"].count, "wall_s": wall}]
    if with_refit:
        s = predictions.score(stacked("refit"), actual["test"])
        rows.append({**rows[0], "kind": "ensemble_refit", "valid_rmse": float("nan"),
                     "name": name + ", each refit on TRAIN+VALID (weights from VALID)",
                     "test_rmse": s.rmse, "test_count": s.count, "wall_s": None})
    return rows


def summarise(rows: list[dict], kind: str, name: str) -> str:
    vals = [r for r in rows if r["kind"] == kind and r["name"] == name]
    if not vals:
        return ""
    t = np.array([r["test_rmse"] for r in vals])
    v = np.array([r["valid_rmse"] for r in vals])
    spread = f" ± {t.std(ddof=1):.4f}" if len(t) > 1 else ""
    seeds = ",".join(str(r["seed"]) for r in vals if "seed" in r)
    walls = [r.get("wall_s") for r in vals if r.get("wall_s")]
    wall = f"{np.mean(walls):.0f} s" if walls else "-"
    extra = f" (min {t.min():.4f}, max {t.max():.4f})" if len(t) > 1 else ""
    valid = f"{v.mean():.4f}" if np.isfinite(v).all() else "-"
    return (f"| {name} | {valid} | **{t.mean():.4f}**{spread}{extra} | "
            f"{vals[0]['test_count']} | {seeds or '-'} | {wall} |")


def write_outputs(out: str, split: str, rows: list[dict], meta: dict) -> None:
    folder = os.path.join(out, split)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "results.jsonl"), "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    lines = [f"# {split}: TEST RMSE over all its ratings (mean ± sample std over seeds)", "",
             "| method | VALID RMSE | TEST RMSE | TEST ratings | seeds "
             "| training wall (per run; ensemble: all members) |",
             "|---|---|---|---|---|---|"]
    names = sorted({(r["kind"], r["name"]) for r in rows},
                   key=lambda k: ["baseline", "recipe", "refit", "ensemble",
                                  "ensemble_refit"].index(k[0]))
    lines += [summarise(rows, k, n) for k, n in names]
    if split.startswith("u1") and "_x" not in split:
        lines += [f"| {k} (published) | | {v:.3f} | | | |" for k, v in PUBLISHED.items()]
    write_table(folder, lines, meta)


def write_table(folder: str, lines: list[str], meta: dict) -> None:
    """``table.md`` (``lines``, then ``meta``) and ``meta.json`` in ``folder``."""
    lines = lines + ["", "```", json.dumps(meta, indent=2), "```", ""]
    with open(os.path.join(folder, "table.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    with open(os.path.join(folder, "meta.json"), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data_dir", help="the MovieLens-100K folder (its --splits)")
    ap.add_argument("--splits", default="u1,time70")
    ap.add_argument("--train", default="", help="your own data instead: TRAIN, --valid and "
                    "--test ratings (any format the library reads), the split named --name")
    ap.add_argument("--valid", default="")
    ap.add_argument("--test", default="")
    ap.add_argument("--name", default="custom")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--ensemble_items", type=int, default=5)
    ap.add_argument("--ensemble_users", type=int, default=2)
    ap.add_argument("--no_ensemble", action="store_true")
    ap.add_argument("--refit", action="store_true",
                    help="also retrain each recipe run on TRAIN+VALID for its best epoch count")
    ap.add_argument("--recipe", default=RECIPE, help="the flagfile of every run")
    ap.add_argument("--best", action="store_true",
                    help="the best recipe: ensembles stacked on VALID, every run refit")
    ap.add_argument("--glocal", action="store_true",
                    help="add a GLocal-K member (experiments/glocal.py, refit included) to each "
                    "ensemble, stacked as a group of its own (with --best: on)")
    ap.add_argument("--no_glocal", action="store_true", help="--best without GLocal-K")
    ap.add_argument("--glocal_members", type=int, default=2,
                    help="GLocal-K members per ensemble (seeds: the ensemble's, then "
                    "100 x it + 90 + j), averaged")
    ap.add_argument("--neighbours", action="store_true",
                    help="add the item- and user-based neighbourhood models "
                    "(experiments/neighbours.py, refit included) to each ensemble, one group "
                    "each (with --best: on)")
    ap.add_argument("--no_neighbours", action="store_true", help="--best without them")
    ap.add_argument("--smoke", action="store_true",
                    help="CI: a corner of MovieLens-100K and 2 epochs per run")
    ap.add_argument("--rating_factor", type=float, default=1.0,
                    help="multiply every rating (e.g. 20: the 1..5 stars as 20..100)")
    ap.add_argument("--out", default="experiments/results/beyond")
    ap.add_argument("--work_dir", default="runs/beyond")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.train and not (args.valid and args.test):
        ap.error("--train needs --valid and --test")
    if not args.train and not args.data_dir:
        ap.error("give --data_dir (MovieLens-100K) or --train, --valid and --test")
    if args.train:
        args.splits = args.name
    if args.best:
        args.refit, args.no_ensemble, args.glocal = True, False, not args.no_glocal
        args.neighbours = not args.no_neighbours
    if args.glocal and args.rating_factor != 1:
        ap.error("--glocal: GLocal-K runs on the split's own ratings (no --rating_factor)")
    SMOKE.clear()
    SMOKE.update({"num_epochs": 2} if args.smoke else {})
    started = commit()  # the code that runs (HEAD may move while the runs go)
    for split_name in args.splits.split(","):
        t0 = time.time()
        if args.train:
            split = data_lib.Split(split_name, args.train, args.valid, args.test,
                                   f"{split_name}: TRAIN {args.train}, VALID {args.valid}, "
                                   f"TEST {args.test}")
        else:
            split = data_lib.movielens_split(args.data_dir, split_name, os.path.join(
                args.work_dir, "data"), smoke=args.smoke)
        if args.rating_factor != 1:
            split_name = f"{split_name}_x{args.rating_factor:g}"
            split = scaled_split(split, args.rating_factor,
                                 os.path.join(args.work_dir, "data", split_name))
        if os.path.abspath(args.recipe) != RECIPE:
            split_name += "_" + os.path.splitext(os.path.basename(args.recipe))[0]
        work = os.path.join(args.work_dir, split_name)
        rows = baselines(split)
        for seed in seeds:
            cfg = member_config(split, os.path.join(work, f"recipe_seed{seed}"), seed,
                                args.recipe, refit=args.refit)
            s = train_member(cfg)
            rows.append({"kind": "recipe", "name": f"recipe ({os.path.basename(args.recipe)})",
                         "seed": seed, "valid_rmse": s["valid_rmse"], "test_rmse": s["test_rmse"],
                         "test_count": s["test_count"], "best_epoch": s["best_epoch"],
                         "final_predictor": s.get("final_predictor", "model"),
                         "wall_s": s.get("wall_s")})
            print(json.dumps(rows[-1]), flush=True)
            if args.refit:
                rows.append(refit(s, cfg)[0])
                print(json.dumps(rows[-1]), flush=True)
        if not args.no_ensemble:
            knn = neighbour_members(split) if args.neighbours else {}  # no seed: computed once
            for seed in seeds:
                kernel_seeds = [seed] + [seed * 100 + 90 + j
                                         for j in range(1, args.glocal_members)]
                others = {"glocal": [glocal_member(split, s, work, args.smoke)
                                     for s in kernel_seeds] if args.glocal else []}
                others.update({g: [m] for g, m in knn.items()})
                rows += ensemble(split, os.path.join(work, f"ensemble{seed}"), seed,
                                 args.ensemble_items, args.ensemble_users, args.recipe,
                                 args.refit, others)
                print(json.dumps(rows[-1]), flush=True)
        meta = {"command": "python -m experiments.beyond " + " ".join(argv or sys.argv[1:]),
                "split": split.description, "machine": machine(), "commit": started,
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "wall_s": round(time.time() - t0, 1)}
        write_outputs(args.out, split_name, rows, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
