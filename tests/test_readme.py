"""The README's "Your own data" walk-through runs as written (fewer users and epochs)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()
SMALLER = {  # what the test changes in the commands: smaller data, fewer epochs
    "deepae_jax.data.datasets.synthetic": " --users=200 --items=60",
    "--flagfile=experiments/recipes/rating_prediction.flags": " --num_epochs=2",
}


def block(name: str) -> str:
    """The fenced code between ``<!-- name -->`` and ``<!-- /name -->``."""
    m = re.search(rf"<!-- {name} -->\n```\w+\n(.*?)```\n<!-- /{name} -->", README, re.S)
    assert m, f"README.md has no {name} block"
    return m.group(1)


def commands(text: str) -> list[str]:
    """Shell commands of a block, continuation lines joined."""
    return [c.strip() for c in text.replace("\\\n", " ").splitlines() if c.strip()]


def test_own_data_walk_through(tmp_path):
    os.symlink(REPO_ROOT / "experiments", tmp_path / "experiments")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu"}
    outputs = []
    for cmd in commands(block("own-data-cli")):
        cmd += "".join(extra for key, extra in SMALLER.items() if key in cmd)
        cmd = cmd.replace("python -m", f"{sys.executable} -m", 1)
        proc = subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, f"{cmd}\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout)
    assert "test (best epoch" in outputs[2] and "ranked" in outputs[3]
    top = [line.split("\t") for line in outputs[4].splitlines()]
    assert len(top) == 10 and {t[0] for t in top} == {"u17"}
    assert (tmp_path / "runs/own/test_metrics.json").is_file()

    code = block("own-data-python").replace(
        'flagfile="experiments/recipes/rating_prediction.flags")',
        'flagfile="experiments/recipes/rating_prediction.flags", num_epochs=2)')
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'ranking_users'" in proc.stdout and "u17" in proc.stdout
    assert (tmp_path / "models/own/config.json").is_file()
