"""Shared test fixtures: the real data sets beside the repository (skipped when absent)."""
from __future__ import annotations

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("DEEPAE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> pathlib.Path:
    """``../shared/data`` (MovieLens-100K, Netflix samples); skips the test when it is absent."""
    if not (SHARED_DATA / "movielens-100k" / "u.data").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (it lies beside the repository only "
                    "in the project's workspace and CI; set DEEPAE_SHARED_DATA to point to it)")
    return SHARED_DATA
