"""The experiments' flagfiles (``experiments/flags/``): where they are, and settings written back
as flagfile lines. Reading one: :func:`parse_flagfile` (``deepae_jax.settings.read_flagfile``
with the run's :class:`~deepae_jax.config.Config`)."""
from __future__ import annotations

import os

from deepae_jax.config import Config
from deepae_jax.settings import read_flagfile

FLAGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flags")


def parse_flagfile(path: str) -> dict:
    """Config keyword arguments of a flagfile (errors name the line)."""
    return read_flagfile(Config, path)


def flagfile(*parts: str) -> str:
    """The path of ``experiments/flags/<parts...>``."""
    return os.path.join(FLAGS_DIR, *parts)


def format_flags(settings: dict) -> str:
    """``settings`` back as flagfile lines (for the record of what ran)."""
    lines = []
    for name, value in settings.items():
        if isinstance(value, bool):
            lines.append(f"--{name}" if value else f"--no{name}")
        elif isinstance(value, tuple):
            lines.append(f"--{name}={','.join(map(str, value))}")
        else:
            lines.append(f"--{name}={value}")
    return "\n".join(lines) + "\n"
