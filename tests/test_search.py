"""--time_budget (training/search.py): trials around the given settings, chosen on validation,
the winner trained as the run."""
from __future__ import annotations

import json

import numpy as np
import pytest

from deepae_jax.config import Config
from deepae_jax.run import files
from deepae_jax.run.logdir import LogdirError
from deepae_jax.settings import ConfigError
from deepae_jax.training import search
from conftest import bias_run_config

def base_config(tmp_path, **kw) -> Config:
    return bias_run_config(tmp_path, **{**dict(hidden_layers=(16,), lr=0.01, num_epochs=3,
                                               l2_weights=0.003, drop_prob=0.5,
                                               final_predictor="auto"), **kw})


def test_trials_start_with_the_given_settings_and_stay_in_their_neighbourhood(tmp_path):
    cfg = Config(path_to_train_data="t", path_to_eval_data="v", hidden_layers=(100, 50),
                 lr=0.01, l2_weights=0.0, drop_prob=0.1, input_drop_prob=0.0, seed=3)
    trials = search.trial_settings(cfg, 30)
    assert trials[0] == {"hidden_layers": (100, 50), "lr": 0.01, "l2_weights": 0.0,
                         "drop_prob": 0.1, "input_drop_prob": 0.0}
    assert len({json.dumps(t, sort_keys=True) for t in trials}) == 30  # no two alike
    for t in trials:
        assert t["hidden_layers"] in [(50, 25), (100, 50), (200, 100)]
        assert min(abs(t["lr"] - v) for v in (0.01 / 3, 0.01, 0.03)) < 1e-12
        assert t["l2_weights"] in (0.0, 1e-3) and t["input_drop_prob"] in (0.0, 0.2)
        assert t["drop_prob"] in (0.0, 0.1, 0.3)
    assert search.trial_settings(cfg, 30) == trials  # seeded
    other = search.trial_settings(Config(**{**cfg.__dict__, "seed": 4}), 30)
    assert other[0] == trials[0] and other != trials
    # every combination at most once, however many are asked for: 3 * 3 * 2 * 3 * 2
    assert len(search.trial_settings(cfg, 1000)) == 108


def test_the_winner_on_validation_is_trained_as_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(search, "MAX_TRIALS", 3)
    cfg = base_config(tmp_path, time_budget=1e6)
    search.train_with_search(cfg)
    record = json.loads((tmp_path / "run" / search.SEARCH_FILE).read_text())
    trials = record["trials"]
    assert [t["trial"] for t in trials] == [0, 1, 2]
    valid = [t["valid_rmse"] for t in trials]
    assert record["winner"] == int(np.argmin(valid))
    for t in trials:  # trials never see the test data and never refit
        recorded = json.loads((tmp_path / "run" / "search" / f"trial_{t['trial']:02d}" /
                               files.CONFIG_FILE).read_text())
        assert recorded["path_to_test_data"] == "" and not recorded["refit"]
    summary = json.loads((tmp_path / "run" / files.SUMMARY_FILE).read_text())
    # the same settings and seed: the run is its trial again
    assert summary["final_predictor_valid_rmse"] == pytest.approx(min(valid), rel=1e-6)
    assert "test_rmse" in summary
    run_cfg = json.loads((tmp_path / "run" / files.CONFIG_FILE).read_text())
    winner = trials[record["winner"]]["settings"]
    assert run_cfg["hidden_layers"] == winner["hidden_layers"]


def test_the_budget_bounds_the_trials(tmp_path):
    cfg = base_config(tmp_path, time_budget=0.001)
    records = search.run_trials(cfg)
    assert len(records) == 1 and records[0]["settings"]["hidden_layers"] == [16]


def test_a_refused_logdir_is_refused_before_any_trial(tmp_path):
    cfg = base_config(tmp_path, time_budget=10)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / files.CONFIG_FILE).write_text("{}")
    with pytest.raises(LogdirError):
        search.train_with_search(cfg)
    assert not (tmp_path / "run" / "search").exists()


def test_time_budget_settings_are_checked():
    with pytest.raises(ConfigError, match="--time_budget"):
        Config(path_to_train_data="t", time_budget=60)
    with pytest.raises(ConfigError, match="--time_budget"):
        Config(path_to_train_data="t", path_to_eval_data="v", time_budget=-1)
