"""The recipes that ship with the package: flagfiles found by name, from any folder.

``deepae train --recipe=rating_prediction --path_to_train_data=...`` reads
``deepae_jax/recipes/rating_prediction.flags`` first, then the flags after it;
``api.fit(..., recipe="rating_prediction")`` the same. ``quickstart`` trains on the synthetic
data set (written on first use) into ``runs/quickstart``.
"""
from __future__ import annotations

import os

from deepae_jax.settings import ConfigError

FOLDER = os.path.dirname(os.path.abspath(__file__))
SUFFIX = ".flags"


def names() -> tuple[str, ...]:
    """The names of the shipped recipes, sorted."""
    return tuple(sorted(f[:-len(SUFFIX)] for f in os.listdir(FOLDER) if f.endswith(SUFFIX)))


def path(name: str) -> str:
    """The flagfile of the recipe ``name``; ConfigError naming ``--recipe`` and the choices for
    a name that is not shipped."""
    if name not in names():
        raise ConfigError(f"--recipe={name!r}: no such recipe; choose one of {list(names())}")
    return os.path.join(FOLDER, name + SUFFIX)
