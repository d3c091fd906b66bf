"""experiments/beyond.py at smoke scale: baselines, recipe runs, an ensemble, the tables."""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from experiments import beyond


def test_beyond_smoke(shared_data, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    assert beyond.main(["--data_dir", str(shared_data / "movielens-100k"), "--splits", "u1",
                        "--seeds", "1", "--ensemble_items", "1", "--ensemble_users", "1",
                        "--smoke", "--refit", "--glocal", "--glocal_members", "1", "--neighbours",
                        "--out", str(out), "--work_dir", str(work)]) == 0
    rows = [json.loads(line) for line in (out / "u1" / "results.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["baseline", "baseline", "recipe", "refit", "ensemble",
                                         "ensemble_refit"]
    n_test = rows[0]["test_count"]
    assert all(r["test_count"] == n_test for r in rows)  # every rating, every method
    groups = {w.split(":")[0] for w in rows[4]["weights"]}
    assert groups == {"items", "users", "glocal", "item_knn", "user_knn"}
    assert set(rows[4]["neighbours"]) == {"item_knn", "user_knn"}
    assert rows[4]["stack_form"] in ("plain", "item_bins", "user_bins", "baseline")
    bias = rows[1] if rows[1]["name"] == "bias" else rows[0]
    if rows[4]["stack_form"] == "baseline":  # the floor, exactly, refit or not
        assert rows[4]["test_rmse"] == rows[5]["test_rmse"] == bias["test_rmse"]
        assert set(rows[4]["weights"].values()) == {0.0}
    else:
        assert rows[5]["test_rmse"] > 0 and rows[5]["test_rmse"] != rows[4]["test_rmse"]
    assert min(rows[4]["stack_cv_rmse"].values()) == rows[4]["stack_cv_rmse"][rows[4]["stack_form"]]
    assert "+ 1 GLocal-K + item-knn + user-knn" in rows[4]["name"]
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


def test_neighbour_members_refit_on_train_and_valid(tmp_path):
    """Chosen on VALID; the refit is the same choice fitted on TRAIN + VALID."""
    from deepae_jax import baseline as baseline_lib
    from deepae_jax.data import ratings
    from deepae_jax.data.datasets import synthetic
    from deepae_jax.evaluation import predictions
    from experiments import data as data_lib, neighbours
    spec = synthetic.SyntheticSpec(n_users=120, n_items=40, mean_ratings_per_user=15, seed=5)
    synthetic.ensure_dataset(str(tmp_path / "train"), str(tmp_path / "valid"), spec)
    spec = dataclasses.replace(spec, seed=6)
    synthetic.ensure_dataset(str(tmp_path / "x"), str(tmp_path / "test"), spec)
    split = data_lib.Split("mine", str(tmp_path / "train"), str(tmp_path / "valid"),
                           str(tmp_path / "test"), "mine")
    members = beyond.neighbour_members(split)
    assert set(members) == {"item_knn", "user_knn"}
    test = ratings.load_triples(split.test)
    both = ratings.build_matrix(ratings.concat_triples([ratings.load_triples(split.train),
                                                        ratings.load_triples(split.valid)]),
                                duplicates="last")
    for group, side in (("item_knn", "items"), ("user_knn", "users")):
        m = members[group]
        assert m["k"] in neighbours.K_GRID and m["shrink"] in neighbours.SHRINK_GRID
        assert min(m["valid_grid"].values()) == m["valid_grid"][
            f"k={m['k']} shrink={m['shrink']:g}"]
        np.testing.assert_array_equal(m["test_actual"], test.ratings)
        train = ratings.load_matrix(split.train)
        valid = predictions.align_targets(train, ratings.load_triples(split.valid))
        base = baseline_lib.fit(train.csr, "bias", eval_csr=valid.split.csr)
        again = neighbours.fit(both, baseline_lib.fit(both.csr, "bias", base.reg_row,
                                                      base.reg_col), side, m["k"], m["shrink"])
        t = predictions.align_targets(both, test)
        want = np.clip(neighbours.predict(again, t.rows, t.cols), base.rating_min,
                       base.rating_max)
        np.testing.assert_allclose(m["refit"], want)
        assert not np.allclose(m["refit"], m["test"])
