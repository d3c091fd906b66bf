"""experiments/small_bench.py: the small-data sets (sizes, rating scales, disjoint parts)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from deepae_jax.data import ratings
from experiments import small_bench


@pytest.mark.parametrize("name, values", [
    ("s5k", {1, 2, 3, 4, 5}),
    ("s5k_100", {1.0, 25.75, 50.5, 75.25, 100.0}),
    ("s5k_half", {0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5})])
def test_the_sets_have_their_size_and_scale(shared_data, tmp_path, name, values):
    split = small_bench.bench_split(name, str(shared_data / "movielens-100k"), str(tmp_path))
    parts = [ratings.load_triples(p) for p in (split.train, split.valid, split.test)]
    assert [len(p) for p in parts] == [4000, 500, 500]
    got = set(np.concatenate([p.ratings for p in parts]).astype(float).round(4))
    assert got == {float(v) for v in values}
    keys = [set(zip(p.users.tolist(), p.items.tolist())) for p in parts]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])


def test_the_same_draw_on_every_scale(shared_data, tmp_path):
    a = ratings.load_triples(small_bench.bench_split(
        "s5k", str(shared_data / "movielens-100k"), str(tmp_path)).train)
    b = ratings.load_triples(small_bench.bench_split(
        "s5k_100", str(shared_data / "movielens-100k"), str(tmp_path)).train)
    np.testing.assert_array_equal(a.users, b.users)
    np.testing.assert_allclose(1 + (a.ratings - 1) * 99 / 4, b.ratings, rtol=1e-6)


def test_bench_smoke_scores_the_chosen_predictor_everywhere(shared_data, tmp_path):
    from experiments import beyond
    recipe = tmp_path / "short.flags"  # the recipe, 3 epochs
    recipe.write_text(open(beyond.RECIPE).read() + "--num_epochs=3\n")
    out = tmp_path / "out"
    assert small_bench.main(["--data_dir", str(shared_data / "movielens-100k"), "--sets", "s5k",
                             "--seeds", "1", "--recipe", str(recipe), "--out", str(out),
                             "--work_dir", str(tmp_path / "work")]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    run = next(r for r in rows if r["kind"] == "recipe")
    # the trainer's TEST score and inference's re-scoring of the chosen candidate agree
    assert run["candidates_test_rmse"][run["final_predictor"]] == pytest.approx(run["test_rmse"])
    assert set(run["candidates_test_rmse"]) == {"model", "baseline", "blend"}
    assert "| s5k | 4000 |" in (out / "table.md").read_text()
