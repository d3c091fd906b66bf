"""settings.py: flags generated from any settings dataclass, parsed back with one error format."""
from __future__ import annotations

import dataclasses
import re

import pytest
from absl import flags

from deepae_jax import settings
from deepae_jax.cli.flags import Command, run_command
from deepae_jax.settings import ConfigError


@dataclasses.dataclass(frozen=True)
class ToolConfig:
    """A small tool's settings, declared as Config's are."""

    name: str = settings.setting("", "A name; required.")
    count: int = settings.setting(3, "How many.")
    ratio: float = settings.setting(0.5, "A share.")
    loud: bool = settings.setting(False, "Say more.")
    level: str = settings.setting("low", "A level.", ("low", "high"))

    def __post_init__(self):
        settings.check_choices(self)
        if not self.name:
            settings.bad_setting(self, "name", "required")


TOOL = Command("tool", ToolConfig, lambda cfg, args: 0, "The tool.")


def test_flags_of_any_dataclass_in_a_private_flag_values():
    fv = flags.FlagValues()
    settings.define_flags(ToolConfig, fv)
    assert set(fv) >= {"name", "count", "ratio", "loud", "level"} and "mode" not in fv
    fv(["tool", "--name=a", "--count", "7", "--loud", "--level=high"])
    assert settings.config_from_flags(ToolConfig, fv) == ToolConfig("a", 7, 0.5, True, "high")
    assert "lr" not in fv  # never Config's flags: no clash with main.py's


@pytest.mark.parametrize("argv,needle", [
    ([], "--name='': required"),
    (["--name=a", "--level=mid"], "--level='mid': choose one of ['low', 'high']"),
    (["--name=a", "--count=many"], "flag --count=many: invalid literal"),
    (["--name=a", "--cuont=1"], "Unknown command line flag 'cuont'"),
    (["--name=a", "extra"], "unexpected argument(s) ['extra']"),
])
def test_tool_flags_errors_are_one_line_naming_the_flag(argv, needle, capsys):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        settings.parse_tool_flags(ToolConfig, argv)
    assert run_command(TOOL, argv, "tool") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err


def test_tool_help_lists_the_flags(capsys):
    assert run_command(TOOL, ["--help"], "tool") == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tool [flags]\n\nThe tool.") and "--count: How many." in out
    assert "--[no]loud" in out
    assert settings.parse_tool_flags(ToolConfig, ["--name", "x"]) == ToolConfig("x")


def test_parse_flags_returns_positional_arguments_and_fixed_settings():
    cfg, args = settings.parse_flags(ToolConfig, ["in.csv", "--name=a", "out"], "tool",
                                     fixed={"level": "high"})
    assert cfg == ToolConfig("a", level="high") and args == ["in.csv", "out"]
    with pytest.raises(ConfigError, match=re.escape("--level='low': tool sets --level=high")):
        settings.parse_flags(ToolConfig, ["--name=a", "--level=low"], "tool", {"level": "high"})
