"""The command line as a user runs it: python -m deepae_jax.main / deepae_jax.cli.compute_rmse."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from deepae_jax.data.datasets import synthetic

SPEC = synthetic.SyntheticSpec(n_users=200, n_items=60, mean_ratings_per_user=15, seed=11)


def run(*args, cwd=None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def flagfile(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    synthetic.ensure_dataset(str(root / "train"), str(root / "valid"), SPEC)
    path = root / "run.flags"
    path.write_text("\n".join([
        f"--path_to_train_data={root / 'train'}", f"--path_to_eval_data={root / 'valid'}",
        f"--logdir={root / 'logs'}", "--hidden_layers=16,8", "--batch_size=32", "--lr=0.005",
        "--num_epochs=2", "--aug_step=1", "--drop_prob=0.2", "--save_every=1",
        "--optimizer=momentum", "--noprogress"]) + "\n")
    return root, path


def test_train_infer_evaluate_compute_rmse(flagfile):
    root, flags = flagfile
    train = run("-m", "deepae_jax.main", f"--flagfile={flags}")
    assert train.returncode == 0, train.stderr
    assert "epoch 2/2" in train.stdout and "eval RMSE" in train.stdout
    preds = root / "preds.tsv"
    infer = run("-m", "deepae_jax.main", f"--flagfile={flags}", "--mode=infer",
                f"--predictions_path={preds}")
    assert infer.returncode == 0, infer.stderr
    assert preds.read_text().count("\n") > 0
    rmse = run("-m", "deepae_jax.cli.compute_rmse", f"--path_to_predictions={preds}")
    assert rmse.returncode == 0 and rmse.stdout.startswith("RMSE: ")
    last_epoch = [l for l in train.stdout.splitlines() if l.startswith("epoch 2/2")][0]
    eval_rmse = float(last_epoch.split("eval RMSE ")[1].split()[0])
    assert abs(float(rmse.stdout.split()[1]) - eval_rmse) < 1e-3
    evaluate = run("-m", "deepae_jax.main", f"--flagfile={flags}", "--mode=evaluate")
    assert evaluate.returncode == 0 and "evaluation RMSE" in evaluate.stdout


@pytest.mark.parametrize("flag,needle", [
    ("--hidden_layers=512,,x", "--hidden_layers='512,,x'"),
    ("--non_linearity_type=gelu", "--non_linearity_type='gelu': unknown activation"),
    ("--optimizer=lamb", "--optimizer='lamb': unknown optimizer"),
    ("--drop_prob=1.5", "--drop_prob=1.5"),
    ("--batch_size=0", "--batch_size=0"),
])
def test_bad_flags_name_the_flag(flagfile, flag, needle, capsys):
    _, flags = flagfile
    assert main_in_process(f"--flagfile={flags}", flag) == 2
    assert needle in capsys.readouterr().err


def test_bad_data_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\t2\t3\n1\t3\n")
    proc = run("-m", "deepae_jax.main", f"--path_to_train_data={bad}", f"--logdir={tmp_path}")
    assert proc.returncode == 2
    assert f"{bad}:2: expected 3 fields" in proc.stderr and "Traceback" not in proc.stderr


def main_in_process(*argv) -> int:
    """``python -m deepae_jax.main ARGV`` in this process; returns its exit code."""
    from deepae_jax.cli import main
    return main.main(list(argv))


def test_compute_rmse_round(tmp_path):
    preds = tmp_path / "p.tsv"
    preds.write_text("1\t2\t3.4\t3\n1\t3\t4.6\t4\n")
    plain = run("-m", "deepae_jax.cli.compute_rmse", f"--path_to_predictions={preds}")
    rounded = run("-m", "deepae_jax.cli.compute_rmse", f"--path_to_predictions={preds}", "--round")
    assert plain.stdout.split()[1] == f"{((0.4**2 + 0.6**2) / 2) ** 0.5:.6f}"
    assert rounded.stdout.split()[1] == f"{(1 / 2) ** 0.5:.6f}"


@pytest.mark.parametrize("content,needle", [
    (b"1\t2\t3.5\t3\n\x89PNG\r\n\x1a\n\x00\x00", ":2: not valid UTF-8"),
    (b"1\t2\t3.5\t3\n1\t3\tnan\t4\n", ":2: prediction 'nan' and actual rating '4' must be finite"),
    (b"1\t2\tinf\t3\n", ":1: prediction 'inf'"),
])
def test_compute_rmse_refuses_binary_and_non_finite_input(tmp_path, content, needle):
    preds = tmp_path / "p.tsv"
    preds.write_bytes(content)
    proc = run("-m", "deepae_jax.cli.compute_rmse", f"--path_to_predictions={preds}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{preds}{needle}" in proc.stderr and "RMSE: nan" not in proc.stdout


def test_train_on_a_movielens_csv_with_header_and_string_ids(tmp_path):
    """ratings.csv (header userId,movieId,rating,timestamp, CRLF, half stars) trains with just
    --path_to_train_data; string user ids come back in the predictions."""
    rng = np.random.default_rng(0)
    pairs = {(int(u), int(i)): int(r) for u, i, r in zip(
        rng.integers(0, 40, 600), rng.integers(0, 30, 600), rng.integers(1, 11, 600))}
    lines = ["userId,movieId,rating,timestamp"] + [
        f"u_{u},{i},{r / 2:g},{1260759144 + k}" for k, ((u, i), r) in enumerate(pairs.items())]
    path = tmp_path / "ratings.csv"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    common = [f"--path_to_train_data={path}", f"--logdir={tmp_path / 'logs'}",
              "--hidden_layers=8", "--batch_size=8", "--num_epochs=1", "--noprogress"]
    train = run("-m", "deepae_jax.main", *common)
    assert train.returncode == 0, train.stderr
    preds = tmp_path / "preds.tsv"
    infer = run("-m", "deepae_jax.main", *common, "--mode=infer", f"--path_to_eval_data={path}",
                f"--predictions_path={preds}")
    assert infer.returncode == 0, infer.stderr
    first = preds.read_text().splitlines()[0].split("\t")
    assert first[0].startswith("u_") and len(first) == 4
