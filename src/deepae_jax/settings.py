"""Settings declared as frozen dataclasses, and the absl flags generated from them.

A field made with :func:`setting` carries its default, the flag's help and, for enums, the
allowed values; :func:`define_flags` turns a dataclass into absl flags and
:func:`config_from_flags` parses them back into a validated instance (``__post_init__`` checks,
raising :class:`ConfigError` with the flag and the value). ``deepae_jax.config.Config`` is the
run's settings; the other commands (serve, export, split, ...) declare theirs the same way.
Every command parses its flags with :func:`parse_flags` in a private FlagValues (no global
flags); :mod:`deepae_jax.cli` prints the help and the errors.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting with a bad value; the message names the flag and the value."""


def setting(default: Any, help: str, choices: Sequence[str] | None = None):
    """A field of a settings dataclass: its default, the flag's help text and, for enums, the
    allowed values."""
    return dataclasses.field(default=default,
                             metadata={"help": help, "choices": tuple(choices or ())})


def parse_int_list(text: str, flag: str) -> tuple[int, ...]:
    """``"512,512,1024"`` -> (512, 512, 1024); raises ConfigError naming ``--flag``."""
    try:
        sizes = tuple(int(s) for s in str(text).split(","))
    except ValueError:
        sizes = ()
    if not sizes or any(s < 1 for s in sizes):
        raise ConfigError(f"--{flag}={text!r}: expected comma-separated positive "
                          "integers, e.g. 512,512,1024")
    return sizes


def _flag_value(f: dataclasses.Field, text: str | None, where: str) -> Any:
    """The value of a flagfile line ``--name[=text]`` for the field ``f``."""
    name, default = f.name, f.default
    if isinstance(default, bool):
        if text is None or text.lower() in ("true", "1"):
            return True
        if text.lower() in ("false", "0"):
            return False
        raise ConfigError(f"{where}: --{name} takes no value or true/false, got {text!r}")
    if text is None:
        raise ConfigError(f"{where}: --{name} needs a value")
    if isinstance(default, tuple):
        return parse_int_list(text, name)
    try:
        return type(default)(text)
    except ValueError:
        raise ConfigError(f"{where}: --{name}={text!r} is not a {type(default).__name__}"
                          ) from None


def read_flagfile(cls: type, path: str) -> dict[str, Any]:
    """The fields of the dataclass ``cls`` that the flagfile ``path`` sets (``--name=value`` per
    line, ``--name``/``--noname`` for booleans, ``#`` comments), as keyword arguments of ``cls``.
    ``--flagfile=OTHER`` lines are read in place, OTHER relative to the including file. Errors
    (ConfigError) name the file and line."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--flagfile={path}: cannot be read ({e})") from None
    for lineno, line in enumerate(lines, start=1):
        line, where = line.strip(), f"{path}:{lineno}"
        if not line or line.startswith("#"):
            continue
        if not line.startswith("--"):
            raise ConfigError(f"{where}: expected --name=value, got {line!r}")
        name, eq, text = line[2:].partition("=")
        value = text if eq else None
        if name == "flagfile":
            values.update(read_flagfile(cls, os.path.join(os.path.dirname(path), value or "")))
            continue
        if name not in fields and name.startswith("no") and name[2:] in fields and not eq:
            name, value = name[2:], "false"
            if not isinstance(fields[name].default, bool):
                raise ConfigError(f"{where}: --no{name}: --{name} is not a boolean flag")
        if name not in fields:
            raise ConfigError(f"{where}: unknown flag --{name}")
        values[name] = _flag_value(fields[name], value, where)
    return values


def bad_setting(cfg, flag: str, why: str):
    """Raises ConfigError ``--flag='value': why`` for the field ``flag`` of ``cfg``."""
    raise ConfigError(f"--{flag}={getattr(cfg, flag)!r}: {why}")


def check_choices(cfg, prefixes: Mapping[str, str] | None = None) -> None:
    """Raises ConfigError naming the first field of the dataclass ``cfg`` whose value is not
    one of its :func:`setting` choices (``prefixes``: text before "choose one of" per field)."""
    for f in dataclasses.fields(cfg):
        choices = f.metadata.get("choices")
        if choices and getattr(cfg, f.name) not in choices:
            what = (prefixes or {}).get(f.name, "")
            bad_setting(cfg, f.name, f"{what}choose one of {list(choices)}")


def define_flags(cls: type, flag_values=None, module_name: str | None = None) -> None:
    """Defines one absl flag per field of the dataclass ``cls`` in ``flag_values`` (default:
    absl's global FLAGS): booleans, integers, floats and strings; integer tuples are
    comma-separated strings. Choices are listed in the help and checked by the dataclass (one
    error format for every flag). ``module_name``: the heading of the flags in the help
    (default: the module that declares ``cls``)."""
    from absl import flags
    fv = flag_values if flag_values is not None else flags.FLAGS
    kw = {"flag_values": fv, "module_name": module_name or cls.__module__}
    for f in dataclasses.fields(cls):
        default, help_text = f.default, f.metadata["help"]
        choices = f.metadata.get("choices")
        if choices:
            help_text += f" One of: {', '.join(choices)}."
        if isinstance(default, bool):
            flags.DEFINE_boolean(f.name, default, help_text, **kw)
        elif isinstance(default, int):
            flags.DEFINE_integer(f.name, default, help_text, **kw)
        elif isinstance(default, float):
            flags.DEFINE_float(f.name, default, help_text, **kw)
        elif isinstance(default, tuple):
            flags.DEFINE_string(f.name, ",".join(map(str, default)), help_text, **kw)
        else:
            flags.DEFINE_string(f.name, default, help_text, **kw)


def config_from_flags(cls: type[T], flag_values=None) -> T:
    """The parsed flags as a validated ``cls`` (errors name the flag)."""
    from absl import flags
    fv = flag_values if flag_values is not None else flags.FLAGS
    values = {}
    for f in dataclasses.fields(cls):
        value = fv[f.name].value
        if isinstance(f.default, tuple):
            value = parse_int_list(value, f.name)
        values[f.name] = value
    return cls(**values)


# ---- the other command-line tools (serve, export): private flags from their own dataclass ----
def tool_flags(cls: type, prog: str = "deepae_jax"):
    """A private absl FlagValues with the flags of ``cls`` (never clashes with main.py's),
    listed under ``prog`` in the help."""
    from absl import flags
    fv = flags.FlagValues()
    define_flags(cls, fv, prog)
    return fv


def parse_flags(cls: type[T], argv: Sequence[str], prog: str = "deepae_jax",
                fixed: Mapping[str, Any] | None = None) -> tuple[T, list[str]]:
    """Parses ``argv`` (without the program name; ``--flag=value``, ``--flag value`` and
    ``--flagfile=FILE``, flags and positional arguments in any order) into (a validated
    ``cls``, the positional arguments). ``fixed``: settings the caller decides (e.g. the mode of
    ``deepae train``); a flag that sets one of them to another value is an error. Raises
    ConfigError (one line, naming the flag) for an unknown flag or a bad value."""
    from absl import flags
    fv = tool_flags(cls, prog)
    try:
        rest = fv([prog, *argv])[1:]
    except flags.Error as e:
        raise ConfigError(" ".join(str(e).split())) from None
    for name, value in (fixed or {}).items():
        if fv[name].present and fv[name].value != value:
            raise ConfigError(f"--{name}={fv[name].value!r}: {prog} sets --{name}={value}")
        fv[name].value = value
    return config_from_flags(cls, fv), list(rest)


def parse_tool_flags(cls: type[T], argv: Sequence[str], prog: str = "deepae_jax") -> T:
    """:func:`parse_flags` for a tool without positional arguments (one is a ConfigError)."""
    cfg, rest = parse_flags(cls, argv, prog)
    if rest:
        raise ConfigError(f"unexpected argument(s) {rest}: every setting is a --flag "
                          "(see --help)")
    return cfg
