"""experiments/peers.py: the grids, the rule for ratings TRAIN does not hold, and (with the peers
extra installed) a run on a small synthetic split."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from experiments import peers


def test_settings_are_every_combination_of_the_grid():
    grid = {"k": (10, 50), "reg": (0.1, 0.2, 0.3)}
    got = peers.settings(grid)
    assert len(got) == 6 and {"k": 50, "reg": 0.3} in got
    assert len({json.dumps(s, sort_keys=True) for s in got}) == 6


def test_unknown_ratings_get_the_bias_model_and_every_prediction_is_clipped():
    asked = []

    def fit(users, items):
        asked.append((users.copy(), items.copy()))
        return np.array([9.0, 2.5])
    users, items = np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])
    known = np.array([True, False, True, False])
    pred = peers.predict_all(fit, users, items, known, np.array([0.0, 3.0, 0.0, -1.0]),
                             (1.0, 5.0))
    np.testing.assert_array_equal(pred, [5.0, 3.0, 2.5, 1.0])
    np.testing.assert_array_equal(asked[0][0], [1, 3])  # the peer sees known pairs only


def test_unknown_models_are_refused():
    with pytest.raises(SystemExit):
        peers.main(["--train", "x", "--valid", "y", "--test", "z", "--models", "Surprise BPR"])


def test_peers_on_a_small_split(tmp_path):
    pytest.importorskip("surprise", reason="the peers extra is not installed "
                        "(pip install -e \".[peers]\")")
    pytest.importorskip("cornac", reason="the peers extra is not installed")
    from deepae_jax.data.datasets import synthetic
    spec = synthetic.SyntheticSpec(n_users=80, n_items=30, mean_ratings_per_user=12, seed=5)
    synthetic.ensure_dataset(str(tmp_path / "train"), str(tmp_path / "valid"), spec)
    synthetic.ensure_dataset(str(tmp_path / "x"), str(tmp_path / "test"),
                             dataclasses.replace(spec, seed=6))
    out = tmp_path / "out"
    assert peers.main(["--train", str(tmp_path / "train"), "--valid", str(tmp_path / "valid"),
                       "--test", str(tmp_path / "test"), "--name", "mine", "--seeds", "1,2",
                       "--models", "Surprise KNNBaseline,Cornac MF", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "mine" / "results.jsonl").read_text().splitlines()]
    assert [(r["name"], r["seed"]) for r in rows] == [("Surprise KNNBaseline", None),
                                                       ("Cornac MF", 1), ("Cornac MF", 2)]
    for r in rows:
        assert r["settings_tried"] == len(peers.settings(peers.GRIDS[r["name"]][2]))
        assert np.isfinite(r["test_rmse"]) and r["test_count"] > 0
    assert "Cornac MF" in (out / "mine" / "table.md").read_text()
