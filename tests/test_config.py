"""config.py: one definition of every setting; the absl flags are generated from it."""
from __future__ import annotations

import dataclasses
import re

import pytest
from absl import flags

from deepae_jax import config as config_lib
from deepae_jax.config import Config, ConfigError


def fresh_flags(*argv):
    fv = flags.FlagValues()
    config_lib.define_flags(fv)
    fv(["prog", *argv])
    return fv


def test_every_field_is_a_flag_with_its_default_and_help():
    fv = fresh_flags("--path_to_train_data=x")
    for f in dataclasses.fields(Config):
        assert f.name in fv, f.name
        assert fv[f.name].help.startswith(f.metadata["help"][:20])
    cfg = config_lib.config_from_flags(fv)
    expected = Config(path_to_train_data="x")
    assert cfg == expected


def test_flags_parse_into_typed_fields():
    fv = fresh_flags("--path_to_train_data=x", "--hidden_layers=8,4", "--lr=0.5",
                     "--noprogress", "--batch_size=3", "--major=items")
    cfg = config_lib.config_from_flags(fv)
    assert cfg.hidden_layers == (8, 4) and cfg.lr == 0.5 and cfg.progress is False
    assert cfg.batch_size == 3 and cfg.major == "items"


def test_reading_flags_parse():
    fv = fresh_flags("--path_to_train_data=x", "--delimiter=comma", "--header=true",
                     "--columns=userId,movieId,rating", "--timestamp_column=timestamp")
    cfg = config_lib.config_from_flags(fv)
    assert (cfg.delimiter, cfg.header, cfg.columns, cfg.timestamp_column) == (
        "comma", "true", "userId,movieId,rating", "timestamp")
    assert config_lib.defaults().delimiter == "auto"


@pytest.mark.parametrize("argv,needle", [
    (["--major=columns"], "--major='columns': choose one of"),
    (["--hidden_layers=3,,x"], "--hidden_layers='3,,x'"),
    (["--non_linearity_type=gelu"], "unknown activation"),
    (["--header=maybe"], "--header='maybe': choose one of"),
    (["--delimiter="], "--delimiter='': expected auto, tab"),
    (["--columns=userId,movieId"], "--columns='userId,movieId': expected the user, item"),
    (["--columns=0,1,2", "--column_order=item,user,rating"], "leave --column_order"),
    (["--header=false", "--columns=userId,movieId,rating"], "column names need a header"),
    (["--timestamp_column=2"], "a column is used twice"),
    (["--mode=recommend", "--users=1,,2"], "--users='1,,2'"),
    (["--train_path=gpu"], "--train_path='gpu': choose one of"),
])
def test_bad_values_name_the_flag(argv, needle):
    fv = fresh_flags("--path_to_train_data=x", *argv)
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        config_lib.config_from_flags(fv)


def test_dict_round_trip_ignores_unknown_keys():
    cfg = Config(path_to_train_data="x", hidden_layers=(5, 3), seed=7)
    again = Config.from_dict({**cfg.to_dict(), "from_a_newer_version": 1})
    assert again == cfg
    assert Config.from_dict(cfg.to_dict(), seed=8).seed == 8


@dataclasses.dataclass(frozen=True)
class ToolConfig:
    """A small tool's settings, declared as Config's are."""

    name: str = config_lib.setting("", "A name; required.")
    count: int = config_lib.setting(3, "How many.")
    ratio: float = config_lib.setting(0.5, "A share.")
    loud: bool = config_lib.setting(False, "Say more.")
    level: str = config_lib.setting("low", "A level.", ("low", "high"))

    def __post_init__(self):
        config_lib.check_choices(self)
        if not self.name:
            config_lib.bad_setting(self, "name", "required")


def test_flags_of_any_dataclass_in_a_private_flag_values():
    fv = flags.FlagValues()
    config_lib.define_flags(fv, cls=ToolConfig)
    assert set(fv) >= {"name", "count", "ratio", "loud", "level"} and "mode" not in fv
    fv(["tool", "--name=a", "--count", "7", "--loud", "--level=high"])
    assert config_lib.config_from_flags(fv, cls=ToolConfig) == ToolConfig("a", 7, 0.5, True,
                                                                           "high")
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
        config_lib.parse_tool_flags(ToolConfig, argv)
    assert config_lib.tool_config(ToolConfig, argv, "doc", "tool") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err


def test_tool_help_lists_the_flags(capsys):
    assert config_lib.tool_config(ToolConfig, ["--help"], "The tool.", "tool") == 0
    out = capsys.readouterr().out
    assert out.startswith("The tool.") and "--count: How many." in out and "--[no]loud" in out
    assert config_lib.tool_config(ToolConfig, ["--name", "x"], "", "tool") == ToolConfig("x")


@pytest.mark.parametrize("argv,needle", [
    (["--relevance_threshold=nan"], "--relevance_threshold=nan: must be a finite number"),
    (["--weight_decay=inf"], "--weight_decay=inf: must be a finite number"),
    (["--baseline_reg_user=-5"], "--baseline_reg_user=-5.0: must be >= 0, or -1"),
])
def test_non_finite_and_out_of_range_numbers_are_refused(argv, needle):
    fv = fresh_flags("--path_to_train_data=x", *argv)
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        config_lib.config_from_flags(fv)
