"""experiments/beyond.py at smoke scale: baselines, recipe runs, an ensemble, the tables."""
from __future__ import annotations

import json

import numpy as np

from experiments import beyond


def test_beyond_smoke(shared_data, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    assert beyond.main(["--data_dir", str(shared_data / "movielens-100k"), "--splits", "u1",
                        "--seeds", "1", "--ensemble_items", "1", "--ensemble_users", "1",
                        "--smoke", "--refit", "--glocal", "--glocal_members", "1", "--out", str(out), "--work_dir", str(work)]) == 0
    rows = [json.loads(line) for line in (out / "u1" / "results.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["baseline", "baseline", "recipe", "refit", "ensemble",
                                         "ensemble_refit"]
    n_test = rows[0]["test_count"]
    assert all(r["test_count"] == n_test for r in rows)  # every rating, every method
    groups = {w.split(":")[0] for w in rows[4]["weights"]}
    assert groups == {"items", "users", "glocal"} and rows[5]["test_rmse"] > 0
    assert rows[4]["stack_form"] in ("plain", "item_bins", "user_bins")
    assert min(rows[4]["stack_cv_rmse"].values()) == rows[4]["stack_cv_rmse"][rows[4]["stack_form"]]
    assert "+ 1 GLocal-K" in rows[4]["name"]
    bias = rows[1] if rows[1]["name"] == "bias" else rows[0]
    assert rows[4]["valid_rmse"] <= bias["valid_rmse"] + 1e-9  # stacked with the baseline
    if rows[2]["final_predictor"] == "baseline":  # kept as it is: not refit
        assert rows[3]["epochs"] == 0 and rows[3]["test_rmse"] == rows[2]["test_rmse"]
    else:
        assert rows[3]["epochs"] == rows[2]["best_epoch"]
    table = (out / "u1" / "table.md").read_text()
    assert "recipe (rating_prediction.flags)" in table and "GLocal-K (published)" in table
    summary = json.loads((work / "u1" / "recipe_seed1" / "summary.json").read_text())
    assert summary["test_rmse"] == rows[2]["test_rmse"]


def test_beyond_on_your_own_files(tmp_path):
    """--train/--valid/--test: the recipe and its refit on any data set, no MovieLens folder."""
    from deepae_jax.data.datasets import synthetic
    spec = synthetic.SyntheticSpec(n_users=120, n_items=40, mean_ratings_per_user=15, seed=5)
    synthetic.ensure_dataset(str(tmp_path / "train"), str(tmp_path / "valid"), spec)
    recipe = tmp_path / "short.flags"  # the recipe, 2 epochs
    recipe.write_text(open(beyond.RECIPE).read() + "--num_epochs=2\n--batch_size=8\n")
    out = tmp_path / "out"
    assert beyond.main(["--train", str(tmp_path / "train"), "--valid", str(tmp_path / "valid"),
                        "--test", str(tmp_path / "valid"), "--name", "mine", "--seeds", "1",
                        "--no_ensemble", "--refit", "--recipe", str(recipe), "--out", str(out),
                        "--work_dir", str(tmp_path / "work")]) == 0
    rows = [json.loads(line)
            for line in (out / "mine_short" / "results.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["baseline", "baseline", "recipe", "refit"]
    assert "mine: TRAIN" in json.loads((out / "mine_short" / "meta.json").read_text())["split"]
