"""Why the autoencoder overfits at once on small sets: the recipe's capacity x L2 grid on VALID.

    python -m experiments.small_grid --data_dir ../shared/data/movielens-100k [--sets s5k,s20k]

For each set of ``experiments/small_bench.py``, the recipe with hidden 50 / 150 / 500 units and
``--l2_weights`` 0.003 / 0.03 / 0.3 (the rest unchanged), seed 1; prints one JSON line per run:
the best epoch, the VALID RMSE of the autoencoder alone, of the baseline and of the blend
(``--final_predictor`` candidates), the TEST RMSE of the final predictor (recorded, not used).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

from experiments import beyond, small_bench

GRID = list(itertools.product((50, 150, 500), (0.003, 0.03, 0.3)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data_dir", required=True)
    ap.add_argument("--sets", default="s5k,s20k")
    ap.add_argument("--work_dir", default="runs/small_grid")
    args = ap.parse_args(argv)
    for name in args.sets.split(","):
        split = small_bench.bench_split(name, args.data_dir, os.path.join(args.work_dir, "data"))
        for h, l2 in GRID:
            cfg = beyond.member_config(split, os.path.join(args.work_dir, f"{name}_h{h}_l{l2}"),
                                       1, beyond.RECIPE, hidden_layers=(h,), l2_weights=l2)
            s = beyond.train_member(cfg)
            c = {x["name"]: round(x["valid_rmse"], 4) for x in s["final_predictor_candidates"]}
            print(json.dumps({"set": name, "h": h, "l2": l2, "best_epoch": s["best_epoch"], **c,
                              "test": round(s["test_rmse"], 4),
                              "wall": round(s["wall_s"], 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
