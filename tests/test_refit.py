"""--refit (training/refit.py): the choices made on VALID retrained on TRAIN + VALID, in
LOGDIR/refit, scored once on TEST the way every later use of the refit run scores it."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from deepae_jax import baseline as bl
from deepae_jax import inference
from deepae_jax.config import Config
from deepae_jax.data import ratings
from deepae_jax.run import files
from deepae_jax.settings import ConfigError
from deepae_jax.training import refit, trainer
from conftest import bias_run_config

def triples_set(t: ratings.Triples) -> set:
    return {(str(u), str(i), float(r)) for u, i, r in zip(t.users, t.items, t.ratings)}


@pytest.fixture(scope="module")
def refitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refit")
    cfg = bias_run_config(tmp, hidden_layers=(16,), lr=0.01, num_epochs=4, major="items",
                          clip_predictions=True, final_predictor="blend", refit=True)
    trainer.train_and_evaluate(cfg)
    summary = json.loads((tmp / "run" / files.SUMMARY_FILE).read_text())
    return cfg, summary


def test_the_refit_trains_on_train_and_valid_for_the_best_epoch_count(refitted):
    cfg, summary = refitted
    folder = refit.refit_folder(cfg.logdir)
    assert summary["refit_logdir"] == folder
    matrix = ratings.RatingMatrix.load(f"{folder}/{files.TRAIN_VALID_FILE}")
    train = ratings.load_triples(cfg.path_to_train_data)
    valid = ratings.load_triples(cfg.path_to_eval_data)
    assert triples_set(matrix.to_triples()) == triples_set(train) | triples_set(valid)
    assert matrix.nnz == len(train) + len(valid) and matrix.major == "items"
    recorded = json.loads(open(f"{folder}/{files.CONFIG_FILE}").read())
    assert recorded["num_epochs"] == summary["best_epoch"] == summary["refit_epochs"]
    assert recorded["path_to_eval_data"] == "" and not recorded["refit"]
    metrics = [json.loads(line) for line in open(f"{folder}/{files.METRICS_FILE}")]
    assert max(m["epoch"] for m in metrics if m.get("kind", "epoch") == "epoch") == \
        summary["best_epoch"]


def test_the_refit_keeps_the_lambdas_and_the_final_predictor_chosen_on_valid(refitted):
    cfg, summary = refitted
    chosen = bl.load(cfg.logdir)
    again = bl.load(refit.refit_folder(cfg.logdir))
    assert (again.reg_row, again.reg_col) == (chosen.reg_row, chosen.reg_col)
    assert summary["refit_baseline_lambdas"] == [chosen.reg_row, chosen.reg_col]
    assert summary["final_predictor"] == "blend"
    assert again.shrink == pytest.approx(chosen.shrink) and again.blend_k == chosen.blend_k
    # the gains come from the refit's own counts: n / (n + k) of TRAIN + VALID
    matrix = ratings.RatingMatrix.load(f"{refit.refit_folder(cfg.logdir)}/"
                                       f"{files.TRAIN_VALID_FILE}")
    n_rows = np.diff(matrix.csr.indptr)
    np.testing.assert_allclose(again.row_gain, n_rows / (n_rows + again.blend_k[0]))


def test_the_refit_test_score_is_what_evaluate_gives_on_the_refit_folder(refitted):
    cfg, summary = refitted
    ev = Config(mode="evaluate", path_to_eval_data=cfg.path_to_test_data,
                logdir=summary["refit_logdir"], progress=False)
    scores = inference.run_evaluate(ev)
    assert scores.rmse == pytest.approx(summary["refit_test_rmse"], rel=1e-6)
    assert summary["refit_test_count"] == scores.count
    # TEST = VALID here, and VALID is now training data: the refit fits it better
    assert summary["refit_test_rmse"] < summary["test_rmse"]
    report = open(f"{cfg.logdir}/{files.REPORT_FILE}").read()
    assert "refit_test_rmse" in report


def test_a_pair_in_train_and_valid_keeps_its_validation_rating(tmp_path, caplog):
    (tmp_path / "valid.csv").write_text("1,10,2\n3,30,5\n")
    train = ratings.build_matrix(ratings.Triples(np.array([1, 2]), np.array([10, 20]),
                                                 np.array([4.0, 3.0], np.float32)))
    cfg = Config(path_to_train_data="t", path_to_eval_data=str(tmp_path / "valid.csv"),
                 logdir=str(tmp_path / "run"), refit=True)
    with caplog.at_level(logging.WARNING, logger="deepae_jax"):
        path = refit.write_train_valid(cfg, train, ratings.load_triples(cfg.path_to_eval_data))
    assert "1 (user, item) pairs are rated in both" in caplog.text
    got = triples_set(ratings.RatingMatrix.load(path).to_triples())
    assert got == {("1", "10", 2.0), ("2", "20", 3.0), ("3", "30", 5.0)}


def test_refit_needs_validation_data_and_one_process():
    with pytest.raises(ConfigError, match="--refit"):
        Config(path_to_train_data="t", refit=True)
    cfg = Config(path_to_train_data="t", path_to_eval_data="v", refit=True)
    refit.check_refit(cfg, 1)
    with pytest.raises(ValueError, match="--refit: runs in one process"):
        refit.check_refit(cfg, 2)


def test_a_run_that_keeps_the_baseline_is_not_refit(tmp_path):
    """The floor stays exact: the answer is the baseline the run printed, not one refit."""
    cfg = bias_run_config(tmp_path, hidden_layers=(8,), lr=0.01, num_epochs=2,
                          final_predictor="baseline", refit=True)
    trainer.train_and_evaluate(cfg)
    summary = json.loads((tmp_path / "run" / files.SUMMARY_FILE).read_text())
    assert summary["refit_logdir"] == cfg.logdir and summary["refit_epochs"] == 0
    assert summary["refit_test_rmse"] == summary["test_rmse"] == pytest.approx(
        summary["test_baseline_rmse"])
    assert not (tmp_path / "run" / files.REFIT_DIR).exists()
