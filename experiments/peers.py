"""The peer libraries on our splits (issue 21's records): Surprise and Cornac, tuned on VALID.

    pip install -e ".[peers]"    # scikit-surprise and cornac
    python -m experiments.peers --data_dir ../shared/data/movielens-100k [--splits u1]
        [--seeds 1,2,3] [--out experiments/results/peers]
    python -m experiments.peers --train TRAIN --valid VALID --test TEST --name NAME

The same TRAIN / VALID / TEST as ``experiments/beyond.py`` (``experiments/data.py``'s MovieLens
settings, or your files). Every setting of a model's grid (:data:`GRIDS`) is trained on TRAIN;
the one of lowest VALID RMSE is scored once on TEST, over ALL its ratings: a rating whose user
or item TRAIN does not hold gets the user + item bias model's prediction (lambdas on VALID), as
our models' do, and every prediction is clipped to TRAIN's rating range. Seeded models run once
per seed (mean ± std in ``table.md``). Writes ``results.jsonl``, ``table.md`` and ``meta.json``
to ``--out/<split>``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from typing import Callable

import numpy as np

from deepae_jax import baseline as baseline_lib
from deepae_jax.data import ratings
from deepae_jax.evaluation import predictions
from experiments import beyond
from experiments import data as data_lib
from experiments.run import commit, machine

# model: (library, class name, {parameter: values tried}, seeded). The grids were widened once
# where a first run on ML-100K u1 chose a value at their edge (on VALID).
GRIDS: dict[str, tuple[str, str, dict[str, tuple], bool]] = {
    "Surprise SVD": ("surprise", "SVD", {"n_factors": (100, 200, 400),
                                         "reg_all": (0.05, 0.1, 0.2),
                                         "lr_all": (0.005, 0.01, 0.02)}, True),
    "Surprise SVD++": ("surprise", "SVDpp", {"n_factors": (5, 10, 50),
                                             "reg_all": (0.01, 0.02, 0.05)}, True),
    "Surprise KNNBaseline": ("surprise", "KNNBaseline", {"k": (20, 40, 80),
                                                         "user_based": (False, True)}, False),
    "Cornac MF": ("cornac", "MF", {"k": (50, 100, 200), "lambda_reg": (0.05, 0.1, 0.2),
                                   "max_iter": (100,), "learning_rate": (0.01,)}, True),
    "Cornac PMF": ("cornac", "PMF", {"k": (2, 5, 10), "lambda_reg": (0.0001, 0.001, 0.01),
                                     "max_iter": (100,), "learning_rate": (0.001,)}, True),
    "Cornac NMF": ("cornac", "NMF", {"k": (5, 15, 50), "lambda_u": (0.06, 0.2, 0.6),
                                     "use_bias": (True,), "max_iter": (50,)}, True),
    "Cornac ItemKNN": ("cornac", "ItemKNN", {"k": (100, 200, 400),
                                             "similarity": ("cosine", "pearson")}, False),
}

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (users, items) -> ratings


def settings(grid: dict[str, tuple]) -> list[dict]:
    """Every combination of the grid's values."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*grid.values())]


def fit_surprise(name: str, params: dict, seed: int, train: ratings.Triples,
                 bounds: tuple[float, float]) -> Predictor:
    import pandas as pd
    import surprise
    frame = pd.DataFrame({"user": train.users.astype(str), "item": train.items.astype(str),
                          "rating": train.ratings.astype(np.float64)})
    data = surprise.Dataset.load_from_df(frame, surprise.Reader(rating_scale=bounds))
    params = dict(params)
    if name == "KNNBaseline":
        params = {"k": params["k"], "verbose": False, "sim_options": {
            "name": "pearson_baseline", "user_based": params["user_based"]}}
    else:
        params["random_state"] = seed
    algo = getattr(surprise, name)(**params)
    algo.fit(data.build_full_trainset())
    return lambda users, items: np.array([algo.predict(str(u), str(i)).est
                                          for u, i in zip(users, items)])


def fit_cornac(name: str, params: dict, seed: int, train: ratings.Triples,
               bounds: tuple[float, float]) -> Predictor:
    import cornac
    data = cornac.data.Dataset.from_uir(list(zip(train.users.astype(str),
                                                 train.items.astype(str),
                                                 train.ratings.astype(np.float64))), seed=seed)
    params = {**params, "verbose": False}
    if name == "NMF":
        params["lambda_v"] = params["lambda_u"]
    if name != "ItemKNN":
        params["seed"] = seed
    else:
        params["mean_centered"] = True
    model = getattr(cornac.models, name)(**params)
    model.fit(data)

    def predict(users, items):
        out = np.full(len(users), data.global_mean)
        rows = [data.uid_map.get(str(u)) for u in users]
        cols = [data.iid_map.get(str(i)) for i in items]
        for q, (r, c) in enumerate(zip(rows, cols)):
            if r is not None and c is not None:
                out[q] = float(model.score(r, c))
        return out
    return predict


def predict_all(fit: Predictor, users: np.ndarray, items: np.ndarray, known: np.ndarray,
                fallback: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """The peer's prediction where TRAIN holds the user and the item (``known``), the bias
    model's (``fallback``) elsewhere, clipped to ``bounds``."""
    pred = fallback.copy()
    pred[known] = fit(users[known], items[known])
    return np.clip(pred, *bounds)


def run_split(split: data_lib.Split, seeds: list[int], models: list[str]) -> list[dict]:
    """One row per model and seed: its chosen setting, VALID and TEST RMSE."""
    train_t = ratings.load_triples(split.train)
    train = ratings.build_matrix(train_t)
    parts = {"valid": ratings.load_triples(split.valid), "test": ratings.load_triples(split.test)}
    targets = {p: predictions.align_targets(train, t) for p, t in parts.items()}
    base = baseline_lib.fit(train.csr, "bias", eval_csr=targets["valid"].split.csr)
    bounds = (base.rating_min, base.rating_max)

    def scored(pred: Predictor, part: str) -> predictions.Scores:
        t = targets[part]
        return predictions.score(predict_all(pred, parts[part].users, parts[part].items,
                                             t.known, base.fallback(t.rows, t.cols), bounds),
                                 t.actual)
    rows = []
    for model in models:
        library, name, grid, seeded = GRIDS[model]
        fit = fit_surprise if library == "surprise" else fit_cornac
        for seed in seeds if seeded else seeds[:1]:
            t0, tried = time.time(), []
            for params in settings(grid):
                pred = fit(name, params, seed, train_t, bounds)
                tried.append((scored(pred, "valid").rmse, params, pred))
            valid_rmse, params, pred = min(tried, key=lambda t: t[0])
            s = scored(pred, "test")
            rows.append({"kind": "peer", "name": model, "seed": seed if seeded else None,
                         "params": params, "valid_rmse": valid_rmse, "test_rmse": s.rmse,
                         "test_count": s.count, "settings_tried": len(tried),
                         "wall_s": time.time() - t0})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def write_outputs(folder: str, rows: list[dict], meta: dict) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "results.jsonl"), "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    lines = ["# Peer libraries: the setting of lowest VALID RMSE, TEST over all its ratings", "",
             "| model | chosen setting (first seed) | VALID RMSE | TEST RMSE | TEST ratings "
             "| seeds | wall (grid, per seed) |", "|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["name"] for r in rows):
        mine = [r for r in rows if r["name"] == model]
        t = np.array([r["test_rmse"] for r in mine])
        spread = f" ± {t.std(ddof=1):.4f}" if len(t) > 1 else ""
        seeds = ",".join(str(r["seed"]) for r in mine if r["seed"] is not None) or "-"
        lines.append(f"| {model} | `{json.dumps(mine[0]['params'])}` | "
                     f"{np.mean([r['valid_rmse'] for r in mine]):.4f} | **{t.mean():.4f}**"
                     f"{spread} | {mine[0]['test_count']} | {seeds} | "
                     f"{np.mean([r['wall_s'] for r in mine]):.0f} s |")
    beyond.write_table(folder, lines, meta)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data_dir", help="the MovieLens-100K folder (its --splits)")
    ap.add_argument("--splits", default="u1")
    ap.add_argument("--train", default="", help="your own TRAIN, --valid and --test instead")
    ap.add_argument("--valid", default="")
    ap.add_argument("--test", default="")
    ap.add_argument("--name", default="custom")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--models", default=",".join(GRIDS), help="a comma-separated subset of: "
                    + ", ".join(GRIDS))
    ap.add_argument("--out", default="experiments/results/peers")
    ap.add_argument("--work_dir", default="runs/beyond", help="where the splits are written")
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",")]
    unknown = [m for m in models if m not in GRIDS]
    if unknown:
        ap.error(f"--models: unknown {unknown}; choose from {list(GRIDS)}")
    if args.train and not (args.valid and args.test):
        ap.error("--train needs --valid and --test")
    if not args.train and not args.data_dir:
        ap.error("give --data_dir (MovieLens-100K) or --train, --valid and --test")
    libraries = {GRIDS[m][0] for m in models}
    for library in sorted(libraries):
        try:
            __import__(library)
        except ImportError:
            ap.error(f"{library} is not installed: pip install -e \".[peers]\"")
    seeds = [int(s) for s in args.seeds.split(",")]
    started = commit()
    for split_name in ([args.name] if args.train else args.splits.split(",")):
        t0 = time.time()
        split = (data_lib.Split(split_name, args.train, args.valid, args.test, split_name)
                 if args.train else data_lib.movielens_split(
                     args.data_dir, split_name, os.path.join(args.work_dir, "data")))
        rows = run_split(split, seeds, models)
        meta = {"command": "python -m experiments.peers " + " ".join(argv or sys.argv[1:]),
                "split": split.description, "machine": machine(), "commit": started,
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "wall_s": round(time.time() - t0, 1)}
        write_outputs(os.path.join(args.out, split_name), rows, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
