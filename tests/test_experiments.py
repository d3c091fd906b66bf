"""experiments/: the flagfiles hold the paper's settings, and every experiment runs end to end at
the smoke scale and writes its files (MovieLens-100K from ../shared/data when present, else a
tiny synthetic set, so that these tests never skip)."""
from __future__ import annotations

import glob
import json
import os
import pathlib
import subprocess
import sys

import pytest

from deepae_jax.config import Config
from experiments import flagfiles, protocol, run, sweep

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

SHARED = pathlib.Path(os.environ.get("DEEPAE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
ML100K = SHARED / "movielens-100k"
HAVE_ML100K = (ML100K / "u.data").is_file()
ALL_FLAGFILES = sorted(glob.glob(str(REPO_ROOT / "experiments" / "flags" / "**" / "*.flags"),
                             recursive=True))


@pytest.mark.parametrize("path", ALL_FLAGFILES, ids=lambda p: os.path.relpath(p, REPO_ROOT))
def test_flagfiles_parse_into_valid_configs(path):
    settings = flagfiles.parse_flagfile(path)
    Config(path_to_train_data="x", **settings)  # validates every value
    import dataclasses
    names = {f.name for f in dataclasses.fields(Config)}  # the CLI's flags are Config's fields
    for name in settings:
        assert name in names, f"{path}: --{name} is not a flag of deepae train"


def test_paper_flagfiles_hold_the_papers_settings():
    read = lambda *p: flagfiles.parse_flagfile(flagfiles.flagfile("paper", *p))  # noqa: E731
    for exp in ("activations", "overfitting", "depth", "dropout", "refeeding", "comparison"):
        for path in glob.glob(flagfiles.flagfile("paper", exp, "*.flags")):
            s = flagfiles.parse_flagfile(path)
            assert (s["optimizer"], s["batch_size"], s["major"]) == ("momentum", 128, "users")
            assert s["num_epochs"] == 100
    assert len(glob.glob(flagfiles.flagfile("paper", "activations", "*.flags"))) == 7
    assert read("activations", "tanh.flags")["skip_last_layer_nl"]
    assert not read("activations", "elu.flags")["skip_last_layer_nl"]
    assert read("activations", "lrelu.flags")["hidden_layers"] == (128, 128)
    assert [read("depth", f"layers{2 * k:02d}.flags")["hidden_layers"] for k in (1, 6)] == [
        (128,), (128,) * 6]
    d = read("dropout", "dp065.flags")
    assert (d["hidden_layers"], d["drop_prob"], d["lr"], d["aug_step"]) == (
        (512, 512, 1024), 0.65, 0.001, 0)
    r = read("refeeding", "lr005_aug1.flags")
    assert (r["drop_prob"], r["lr"], r["aug_step"]) == (0.8, 0.005, 1)
    assert read("refeeding", "lr005_aug0.flags")["aug_step"] == 0
    n3m = read("comparison", "N3M.flags")
    assert (n3m["hidden_layers"], n3m["drop_prob"], n3m["aug_step"]) == ((128, 256, 256), 0.65, 1)
    nf = read("comparison", "NF.flags")
    assert (nf["hidden_layers"], nf["drop_prob"]) == ((512, 512, 1024), 0.8)
    # PAPER.md's parameter counts (n = 17,768, untied decoder)
    assert protocol.count_params(17768, (128,)) == 4_566_504
    assert protocol.count_params(17768, (128, 128)) - 4_566_504 == 33_024
    assert protocol.count_params(17768, (256,)) == 9_115_240
    for exp, settings in run.SETTINGS.items():  # every listed setting has its flagfile
        for stem, _, _ in settings:
            assert os.path.isfile(flagfiles.flagfile("paper", exp, stem + ".flags"))


def test_flagfile_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.flags"
    bad.write_text("# c\n--lr=0.1\n--no_such_flag=3\n")
    with pytest.raises(ValueError, match=r"bad.flags:3: unknown flag --no_such_flag"):
        flagfiles.parse_flagfile(str(bad))
    bad.write_text("--nolr\n")
    with pytest.raises(ValueError, match="not a boolean"):
        flagfiles.parse_flagfile(str(bad))
    inc = tmp_path / "inc.flags"
    inc.write_text("--flagfile=base.flags\n--noconstrained\n")
    (tmp_path / "base.flags").write_text("--hidden_layers=4,2\n--constrained\n")
    assert flagfiles.parse_flagfile(str(inc)) == {"hidden_layers": (4, 2), "constrained": False}


def test_selection_and_pruning_use_valid_only(tmp_path):
    rows = [{"kind": "epoch", "epoch": e, "eval_rmse": v, "train_rmse": 1.0}
            for e, v in ((1, 1.2), (2, 0.9), (3, float("nan")), (4, 0.95))]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert protocol.best_epoch(protocol.read_epochs(str(tmp_path)))["epoch"] == 2
    for e in range(1, 5):
        (tmp_path / f"checkpoint_{e:05d}.msgpack").write_bytes(b"x")
    protocol.prune_checkpoints(str(tmp_path))
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*")) == [
        "checkpoint_00002.msgpack", "checkpoint_00004.msgpack"]


def test_sweep_is_seeded_and_local_search_moves_one_coordinate():
    a, b = sweep.sample(3, seed=5), sweep.sample(3, seed=5)
    assert [s.settings for s in a] == [s.settings for s in b]
    assert len(a) == 3 * len(sweep.CELLS)
    assert {(s.settings["major"], s.settings["aug_step"]) for s in a} == set(sweep.CELLS)
    import numpy as np
    base = a[0].settings
    n = sweep.neighbour(base, np.random.default_rng(0), set())
    assert sum(n[k] != base[k] for k in sweep.GRID) == 1


def _check_outputs(out: pathlib.Path, experiment: str):
    folder = out / experiment
    assert (folder / "table.md").is_file(), f"{experiment}: no table.md"
    assert list(folder.glob("*.png")), f"{experiment}: no plot"
    for png in folder.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((folder / "meta.json").read_text())
    for key in ("machine", "started", "finished", "commit", "seed", "wall_s"):
        assert key in meta
    table = (folder / "table.md").read_text()
    assert "commit:" in table and "seed:" in table and "wall time" in table
    if experiment != "splits":
        jsonl = list((folder / "metrics").glob("*.jsonl"))
        assert jsonl, f"{experiment}: no per-epoch metrics"
        for path in jsonl:
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            assert rows and all("eval_rmse" in r and "train_rmse" in r for r in rows)
        for line in (folder / "results.jsonl").read_text().splitlines():
            r = json.loads(line)
            assert r["best_epoch"] is not None and r["test_rmse"] > 0
    return table


def test_every_experiment_runs_at_smoke_scale(tmp_path):
    """The whole suite, in-process (one JAX start), on MovieLens-100K u1 (or synthetic)."""
    out, work = tmp_path / "out", tmp_path / "work"
    data_dir = str(ML100K) if HAVE_ML100K else str(tmp_path / "absent")
    assert run.main(["--experiment", "all", "--scale", "smoke", "--data_dir", data_dir,
                     "--split", "u1", "--out", str(out), "--work_dir", str(work)]) == 0
    for experiment in run.EXPERIMENT_NAMES:
        table = _check_outputs(out, experiment)
    assert "best of sweep (all cells, chosen on VALID)" in table
    if HAVE_ML100K:
        assert "GLocal-K (published)" in table
    act = [json.loads(line) for line in (out / "activations" / "results.jsonl").read_text()
           .splitlines()]
    assert all(r["train_curve"] for r in act)  # per-mini-batch training RMSE (TensorBoard)
    assert not list(work.rglob("checkpoint_*.msgpack"))  # checkpoints are cleaned up
    # a repeated command reuses the finished runs
    assert run.main(["--experiment", "depth", "--scale", "smoke", "--data_dir", data_dir,
                     "--split", "u1", "--out", str(out), "--work_dir", str(work)]) == 0


def test_command_line_on_synthetic_data(tmp_path):
    """``python -m experiments.run`` as a user types it (synthetic data: no MovieLens here)."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "experiments.run", "--experiment", "refeeding", "--scale",
           "smoke", "--data_dir", str(tmp_path / "none"), "--split", "time70", "--out", str(out),
           "--work_dir", str(tmp_path / "work")]
    p = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "synthetic" in _check_outputs(out, "refeeding")
    bad = subprocess.run(cmd[:3] + ["--experiment", "depth", "--scale", "small", "--data_dir",
                                    str(tmp_path)], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "no MovieLens-100K u.data" in bad.stderr


def test_paper_scale_names_missing_netflix_data(tmp_path):
    from experiments import data
    with pytest.raises(FileNotFoundError, match="netflix_convert"):
        data.paper_split(str(tmp_path), "N3M")
    for part in ("TRAIN", "VALID", "TEST"):
        (tmp_path / f"N3M_{part}.npz").write_bytes(b"")
    s = data.paper_split(str(tmp_path), "N3M")
    assert s.train.endswith("N3M_TRAIN.npz") and s.test.endswith("N3M_TEST.npz")
