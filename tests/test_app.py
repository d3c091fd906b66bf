"""cli/app.py and cli/flags.py: the one ``deepae`` command, its help and its one error style."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deepae_jax import recipes
from deepae_jax.cli import app
from deepae_jax.cli.flags import expand_recipes, plain_text


def run(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_deepae_help_lists_every_command_and_exits_0():
    proc = run("-m", "deepae_jax", "--help")
    assert proc.returncode == 0, proc.stderr
    for name in app.COMMANDS:
        assert f"  {name} " in proc.stdout
    assert run("-m", "deepae_jax").returncode == 2  # no command: the usage on stderr


@pytest.mark.parametrize("name", list(app.COMMANDS))
def test_every_command_has_plain_text_help(name, capsys):
    assert app.main([*name.split(), "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: deepae {name} [flags]") and "\nflags:\n" in out
    assert "``" not in out and ":mod:`" not in out and ":class:`" not in out  # no reST
    assert out.count("  --") >= 2  # the flags of its settings dataclass


def test_train_help_exits_0_in_a_subprocess_and_lists_config_flags():
    proc = run("-m", "deepae_jax", "train", "--help")
    assert proc.returncode == 0 and "--hidden_layers:" in proc.stdout
    assert "--recipe=NAME" in proc.stdout and "rating_prediction" in proc.stdout
    legacy = run("-m", "deepae_jax.main", "--help")  # the reference's entry point
    assert legacy.returncode == 0 and "--mode:" in legacy.stdout


@pytest.mark.parametrize("argv,needle", [
    (["train", "--batch_size=abc"], "error: flag --batch_size=abc: invalid literal"),
    (["train", "--path_to_train_data=x", "--batch_size=0"], "error: --batch_size=0: must be >= 1"),
    (["train", "--path_to_train_data=x", "--mode=infer"],
     "error: --mode='infer': deepae train sets --mode=train"),
    (["train", "--hiden_layers=8"], "error: Unknown command line flag 'hiden_layers'"),
    (["train", "--recipe=nope"], "error: --recipe='nope': no such recipe"),
    (["split", "only_one_arg"], "error: expected INPUT OUT_DIR, got ['only_one_arg']"),
    (["plot", "run", "--out=x.jpg"], "error: --out='x.jpg': expected a file name ending in"),
    (["compute-rmse"], "error: --path_to_predictions='': a predictions file is required"),
    (["convert", "spotify", "a", "b"], "error: unknown command 'convert spotify'"),
    (["trian"], "error: unknown command 'trian'"),
    (["--mode=infer", "--path_to_eval_data=v"], "error: --predictions_path='': --mode=infer"),
])
def test_bad_flags_are_one_error_line_and_exit_2(argv, needle, capsys):
    assert app.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(needle) and err.count("\n") == 1, err


def test_a_bad_flag_in_a_subprocess_is_not_an_absl_fatal():
    proc = run("-m", "deepae_jax", "train", "--path_to_train_data=x", "--drop_prob=1.5")
    assert proc.returncode == 2 and proc.stderr == "error: --drop_prob=1.5: must be in [0, 1)\n"
    assert "FATAL" not in proc.stderr and proc.stdout == ""


def test_recipes_are_found_by_name_from_any_folder(tmp_path):
    assert set(recipes.names()) >= {"quickstart", "rating_prediction"}
    path = recipes.path("rating_prediction")
    assert os.path.isabs(path) and "--major=items" in open(path).read()
    assert expand_recipes(["--recipe", "quickstart", "--lr=1"]) == [
        f"--flagfile={recipes.path('quickstart')}", "--lr=1"]
    # the clone's old paths read the packaged files
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert open(os.path.join(root, "experiments/recipes/rating_prediction.flags")).read() == \
        open(path).read()
    assert open(os.path.join(root, "experiments/quickstart.flags")).read() == \
        open(recipes.path("quickstart")).read()


def test_recipe_settings_are_overridden_by_later_flags(capsys):
    from deepae_jax.cli import flags
    from deepae_jax.cli.main import TRAIN
    cfg, _ = flags.parse(TRAIN, ["--recipe=rating_prediction", "--path_to_train_data=t",
                                 "--path_to_eval_data=v", "--num_epochs=3"], "deepae train")
    assert cfg.major == "items" and cfg.baseline == "bias" and cfg.num_epochs == 3
    assert cfg.mode == "train"


def test_plain_text_drops_rest_markup():
    assert plain_text("see :mod:`deepae_jax.x` and ``--flag``::") == "see deepae_jax.x and --flag:"


def test_every_console_script_points_at_a_function():
    import importlib
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads TOML")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as fh:
        project = tomllib.load(fh)["project"]
    scripts = project["scripts"]
    assert scripts["deepae"] == "deepae_jax.cli.app:run"
    assert {"deepae-train", "deepae-serve", "deepae-export", "deepae-compute-rmse"} <= set(scripts)
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target
    assert any(d.startswith("tensorboard>=") for d in project["optional-dependencies"]["tensorboard"])


def test_train_plot_and_recommend_through_deepae(tmp_path):
    from deepae_jax.data.datasets import synthetic
    spec = synthetic.SyntheticSpec(n_users=120, n_items=40, mean_ratings_per_user=12, seed=9)
    synthetic.ensure_dataset(str(tmp_path / "train"), str(tmp_path / "valid"), spec)
    logdir = tmp_path / "runs" / "one"
    common = [f"--path_to_train_data={tmp_path / 'train'}", f"--logdir={logdir}"]
    train = run("-m", "deepae_jax", "train", *common, f"--path_to_eval_data={tmp_path / 'valid'}",
                "--hidden_layers=8", "--batch_size=16", "--num_epochs=2", "--save_every=1",
                "--keep_checkpoints=1", "--noprogress")
    assert train.returncode == 0, train.stderr
    out = train.stdout.splitlines()
    assert [l.split("  ")[0] for l in out if l.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]
    assert f"model: {logdir / 'checkpoint_00002.msgpack'} (epoch 2, the last)" in out
    assert any(l.startswith("total time ") for l in out)
    assert "training data" in train.stderr and "training data" not in train.stdout  # logs
    assert sorted(p.name for p in logdir.glob("checkpoint_*")) == ["checkpoint_00002.msgpack"]
    assert (logdir / "report.md").is_file() and (logdir / "curves.png").is_file()
    rec = run("-m", "deepae_jax", "recommend", *common, "--top_k=3", "--users=1,2")
    assert rec.returncode == 0, rec.stderr
    assert len(rec.stdout.splitlines()) == 6


@pytest.mark.parametrize("module,needle", [
    ("deepae_jax.data.split", "usage: deepae split [flags] INPUT OUT_DIR"),
    ("deepae_jax.data.datasets.movielens_convert", "usage: deepae convert movielens"),
    ("deepae_jax.export", "usage: deepae export"),
    ("deepae_jax.serve", "usage: deepae serve"),
    ("deepae_jax.cli.compute_rmse", "usage: deepae compute-rmse"),
])
def test_the_earlier_module_entry_points_are_the_same_commands(module, needle):
    proc = run("-m", module, "--help")
    assert proc.returncode == 0 and proc.stdout.startswith(needle), proc.stderr[-2000:]


def test_the_search_recipe_is_the_recipe_plus_a_time_budget():
    from deepae_jax.config import Config
    from deepae_jax.settings import read_flagfile
    plain = read_flagfile(Config, recipes.path("rating_prediction"))
    search = read_flagfile(Config, recipes.path("rating_prediction_search"))
    assert search.pop("time_budget") > 0 and plain.pop("logdir") != search.pop("logdir")
    assert search == plain
