"""extras.py: an optional dependency that is missing is one error naming the extra."""
from __future__ import annotations

import numpy as np
import pytest

from deepae_jax.extras import MissingExtraError, require
from deepae_jax.recommend import TopK


def test_require_imports_or_names_the_extra(monkeypatch):
    assert require("json", "x", "y").dumps(1) == "1"
    monkeypatch.setitem(__import__("sys").modules, "pandas", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"TopK.to_frame needs pandas, which is not "
                       r"installed: pip install 'deepae_jax\[pandas\]'"):
        TopK(np.array([1]), np.array([[2]]), np.array([[4.5]])).to_frame()


def test_plots_name_their_extra(monkeypatch, tmp_path):
    from deepae_jax.run import curves
    monkeypatch.setitem(__import__("sys").modules, "matplotlib.figure", None)
    with pytest.raises(MissingExtraError, match=r"deepae_jax\[plots\]"):
        curves.plot_runs([str(tmp_path)])
