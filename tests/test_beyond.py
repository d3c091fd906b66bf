"""experiments/beyond.py at smoke scale: baselines, recipe runs, an ensemble, the tables."""
from __future__ import annotations

import json

from experiments import beyond


def test_beyond_smoke(shared_data, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    assert beyond.main(["--data_dir", str(shared_data / "movielens-100k"), "--splits", "u1",
                        "--seeds", "1", "--ensemble_items", "1", "--ensemble_users", "1",
                        "--smoke", "--refit", "--out", str(out), "--work_dir", str(work)]) == 0
    rows = [json.loads(line) for line in (out / "u1" / "results.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["baseline", "baseline", "recipe", "refit", "ensemble",
                                         "ensemble_refit"]
    n_test = rows[0]["test_count"]
    assert all(r["test_count"] == n_test for r in rows)  # every rating, every method
    assert set(rows[4]["weights"]) == {"items", "users"} and rows[5]["test_rmse"] > 0
    bias = rows[1] if rows[1]["name"] == "bias" else rows[0]
    assert rows[4]["valid_rmse"] <= bias["valid_rmse"] + 1e-9  # stacked with the baseline
    assert rows[3]["epochs"] == rows[2]["best_epoch"]
    table = (out / "u1" / "table.md").read_text()
    assert "recipe (rating_prediction.flags)" in table and "GLocal-K (published)" in table
    summary = json.loads((work / "u1" / "recipe_seed1" / "summary.json").read_text())
    assert summary["test_rmse"] == rows[2]["test_rmse"]
