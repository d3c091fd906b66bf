"""Flagfiles (``--name=value`` per line, ``#`` comments) read into :class:`deepae_jax.config.Config`
keyword arguments, with the same names and meanings as ``python -m deepae_jax.main``."""
from __future__ import annotations

import dataclasses
import os

from deepae_jax.config import Config, parse_hidden_layers

FLAGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flags")
_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _convert(name: str, text: str | None, where: str):
    field = _FIELDS[name]
    default = field.default
    if isinstance(default, bool):
        if text is None:
            return True
        if text.lower() in ("true", "1"):
            return True
        if text.lower() in ("false", "0"):
            return False
        raise ValueError(f"{where}: --{name} takes no value or true/false, got {text!r}")
    if text is None:
        raise ValueError(f"{where}: --{name} needs a value")
    if name == "hidden_layers":
        return parse_hidden_layers(text)
    try:
        return type(default)(text)
    except ValueError:
        raise ValueError(f"{where}: --{name}={text!r} is not a {type(default).__name__}") from None


def parse_flagfile(path: str) -> dict:
    """Config keyword arguments of a flagfile; ``--flagfile=OTHER`` lines are read in place
    (OTHER relative to the including file). Unknown flags raise ValueError naming the line."""
    values: dict = {}
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    for lineno, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{lineno}"
        if not line.startswith("--"):
            raise ValueError(f"{where}: expected --name=value, got {line!r}")
        name, eq, text = line[2:].partition("=")
        value = text if eq else None
        if name == "flagfile":
            values.update(parse_flagfile(os.path.join(os.path.dirname(path), value or "")))
            continue
        if name not in _FIELDS and name.startswith("no") and name[2:] in _FIELDS and not eq:
            name, value = name[2:], "false"
            if not isinstance(_FIELDS[name].default, bool):
                raise ValueError(f"{where}: --no{name}: --{name} is not a boolean flag")
        if name not in _FIELDS:
            raise ValueError(f"{where}: unknown flag --{name}")
        values[name] = _convert(name, value, where)
    return values


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
