"""Small and sparse data (issue 21): the recipe against the bias model on sets built from what we have.

    python -m experiments.small_bench --data_dir ../shared/data/movielens-100k [--seeds 1,2,3]
        [--sets s5k,s20k,s5k_100,s20k_100,s5k_half,s20k_half,synth3k] [--jobs 1]
        [--recipe experiments/recipes/rating_prediction.flags] [--out experiments/results/small_bench]

The sets (each split at random into TRAIN 80% / VALID 10% / TEST 10%, seed 0):

* ``s5k``, ``s20k``: 5,000 and 20,000 ratings drawn at random from MovieLens-100K's u.data;
* ``*_100``: the same ratings mapped linearly from 1..5 onto 1..100 (1, 25.75, 50.5, 75.25, 100);
* ``*_half``: the same in half stars (each rating lowered by 0.5 on a seeded fair coin: 0.5..5);
* ``synth3k``: a 3,000 x 3,000 synthetic set, 1% dense (``deepae_jax.data.datasets.synthetic``).

For each set: the bias model (lambdas chosen on VALID) and the recipe, once per seed. The recipe's
run chooses its best epoch and its final predictor on VALID (``--final_predictor``) and scores TEST
once; for the record, TEST is also scored for each final-predictor candidate (the autoencoder
alone, the baseline, the blend), none of which takes part in any choice. Writes
``results.jsonl``, ``table.md`` and ``meta.json`` to ``--out``.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import multiprocessing
import os
import sys
import time

import numpy as np

from experiments import beyond
from experiments import data as data_lib

SETS = ("s5k", "s20k", "s5k_100", "s20k_100", "s5k_half", "s20k_half", "synth3k")


def _rescaled(t, how: str, seed: int):
    from deepae_jax.data.ratings import Triples
    r = np.asarray(t.ratings, np.float64)
    if how == "100":
        r = 1.0 + (r - 1.0) * 99.0 / 4.0
    elif how == "half":
        r = r - 0.5 * (np.random.default_rng(seed + 7).random(len(r)) < 0.5)
    return Triples(t.users, t.items, r.astype(np.float32))


def bench_split(name: str, data_dir: str, work: str, seed: int = 0) -> data_lib.Split:
    """The set ``name`` of SETS as TRAIN / VALID / TEST text folders under ``work``."""
    from deepae_jax.data.datasets import movielens, synthetic
    from deepae_jax.data.ratings import Triples
    if name == "synth3k":
        spec = synthetic.SyntheticSpec(n_users=3000, n_items=3000, mean_ratings_per_user=30,
                                       seed=seed)
        a, b = synthetic.generate(spec)
        t = Triples(np.concatenate([a.users, b.users]), np.concatenate([a.items, b.items]),
                    np.concatenate([a.ratings, b.ratings]))
        desc = "synthetic 3000 users x 3000 items, 1% dense (low rank + biases + noise, 1..5)"
    else:
        size, _, how = name[1:].partition("_")
        n = int(size.rstrip("k")) * 1000
        full = movielens.read_movielens(os.path.join(data_dir, "u.data")).triples
        pick = np.sort(np.random.default_rng(seed).permutation(len(full))[:n])
        t = _rescaled(movielens.subset(full, np.isin(np.arange(len(full)), pick)), how, seed)
        desc = (f"{n} ratings drawn at random (seed {seed}) from MovieLens-100K u.data"
                + {"": "", "100": ", mapped linearly onto 1..100",
                   "half": ", in half stars (minus 0.5 on a fair coin)"}[how])
    perm = np.random.default_rng(seed + 1).permutation(len(t))
    cut = (int(0.8 * len(t)), int(0.9 * len(t)))
    parts = {part: movielens.subset(t, np.isin(np.arange(len(t)), idx)) for part, idx in
             (("TRAIN", perm[:cut[0]]), ("VALID", perm[cut[0]:cut[1]]),
              ("TEST", perm[cut[1]:]))}
    folder = os.path.join(work, name)
    os.makedirs(folder, exist_ok=True)
    return data_lib._write(folder, name, parts, desc + "; TRAIN 80% / VALID 10% / TEST 10% at "
                           f"random (seed {seed + 1})")


def candidate_tests(cfg, split: data_lib.Split, summary: dict) -> dict:
    """TEST RMSE of each final-predictor candidate of a trained run (a record, not a choice)."""
    from deepae_jax import inference
    from deepae_jax.evaluation import blend, predictions
    ev = inference.inference_config(dataclasses.replace(
        cfg, mode="evaluate", path_to_eval_data=split.test, save_path=""))
    data, model_cfg, params, base = inference.restore_for_inference(ev)
    counts = blend.training_counts(data.train.csr)
    out = {}
    for c in summary.get("final_predictor_candidates", []):
        b = blend.apply(base, blend.Candidate(**c), *counts)
        pred = predictions.predict_all(params, model_cfg, data.inputs, b, data.targets,
                                       ev.eval_batch_size, ev.clip_predictions, ev.unknown)
        out[c["name"]] = predictions.score(pred, data.targets.actual).rmse
    return out


def run_one(job: tuple) -> dict:
    """Trains the recipe on one set with one seed; its row."""
    split, recipe, seed, logdir = job
    cfg = beyond.member_config(split, logdir, seed, recipe)
    s = beyond.train_member(cfg)
    row = {"kind": "recipe", "name": f"recipe ({os.path.basename(recipe)})", "set": split.name,
           "seed": seed, "valid_rmse": s.get("final_predictor_valid_rmse", s["valid_rmse"]),
           "test_rmse": s["test_rmse"], "test_count": s["test_count"],
           "best_epoch": s["best_epoch"], "final_predictor": s.get("final_predictor", "model"),
           "refit_test_rmse": s.get("refit_test_rmse"), "wall_s": s.get("wall_s")}
    row["candidates_test_rmse"] = candidate_tests(cfg, split, s)
    row["candidates_valid_rmse"] = {c["name"]: c["valid_rmse"]
                                    for c in s.get("final_predictor_candidates", [])}
    return row


def table(rows: list[dict], sets: list[str]) -> list[str]:
    lines = ["| set | TRAIN ratings | bias model TEST | recipe TEST (mean ± sd) | recipe - bias "
             "| refit TEST (mean ± sd) | refit - bias | autoencoder alone TEST | chosen (per "
             "seed) | seeds |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name in sets:
        base = next(r for r in rows if r["set"] == name and r["name"] == "bias")
        runs = [r for r in rows if r["set"] == name and r["kind"] == "recipe"]
        if not runs:
            continue
        t = np.array([r["test_rmse"] for r in runs])
        ae = np.array([r["candidates_test_rmse"].get("model", np.nan) for r in runs])
        sd = f" ± {t.std(ddof=1):.4f}" if len(t) > 1 else ""
        refit = [r["refit_test_rmse"] for r in runs if r.get("refit_test_rmse") is not None]
        r_sd = f" ± {np.std(refit, ddof=1):.4f}" if len(refit) > 1 else ""
        refit_cells = (f"**{np.mean(refit):.4f}**{r_sd} | {np.mean(refit) - base['test_rmse']:+.4f}"
                       if len(refit) == len(runs) else "- | -")
        lines.append(f"| {name} | {base['train_ratings']} | {base['test_rmse']:.4f} | "
                     f"**{t.mean():.4f}**{sd} | {t.mean() - base['test_rmse']:+.4f} | "
                     f"{refit_cells} | {np.nanmean(ae):.4f} | {', '.join(r['final_predictor'] for r in runs)} | "
                     f"{','.join(str(r['seed']) for r in runs)} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data_dir", required=True)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--recipe", default=beyond.RECIPE)
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    ap.add_argument("--out", default="experiments/results/small_bench")
    ap.add_argument("--work_dir", default="runs/small_bench")
    args = ap.parse_args(argv)
    from experiments.run import commit, machine
    t0, started = time.time(), commit()
    sets, seeds = args.sets.split(","), [int(s) for s in args.seeds.split(",")]
    tag = os.path.splitext(os.path.basename(args.recipe))[0]
    rows, jobs = [], []
    for name in sets:
        split = bench_split(name, args.data_dir, os.path.join(args.work_dir, "data"))
        for r in beyond.baselines(split):
            rows.append({**r, "set": name, "train_ratings": split.stats["TRAIN"]["ratings"]})
        jobs += [(split, args.recipe, s, os.path.join(args.work_dir, tag, name, f"seed{s}"))
                 for s in seeds]
    if args.jobs > 1:
        with cf.ProcessPoolExecutor(args.jobs, multiprocessing.get_context("spawn")) as pool:
            rows += list(pool.map(run_one, jobs))
    else:
        rows += [run_one(j) for j in jobs]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.jsonl"), "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    meta = {"command": "python -m experiments.small_bench " + " ".join(argv or sys.argv[1:]),
            "machine": machine(), "commit": started, "wall_s": round(time.time() - t0, 1),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    lines = [f"# Small-data bench: TEST RMSE ({tag})", ""] + table(rows, sets)
    lines += ["", "```", json.dumps(meta, indent=2), "```", ""]
    with open(os.path.join(args.out, "table.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    with open(os.path.join(args.out, "meta.json"), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
