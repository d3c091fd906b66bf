"""config.py: one definition of every setting; the absl flags are generated from it."""
from __future__ import annotations

import dataclasses

import pytest
from absl import flags

from deepae_jax import config as config_lib
from deepae_jax import settings
from deepae_jax.config import Config
from deepae_jax.settings import ConfigError


def fresh_flags(*argv):
    fv = flags.FlagValues()
    settings.define_flags(Config, fv)
    fv(["prog", *argv])
    return fv


def test_every_field_is_a_flag_with_its_default_and_help():
    fv = fresh_flags("--path_to_train_data=x")
    for f in dataclasses.fields(Config):
        assert f.name in fv, f.name
        assert fv[f.name].help.startswith(f.metadata["help"][:20])
    cfg = settings.config_from_flags(Config, fv)
    expected = Config(path_to_train_data="x")
    assert cfg == expected


def test_flags_parse_into_typed_fields():
    fv = fresh_flags("--path_to_train_data=x", "--hidden_layers=8,4", "--lr=0.5",
                     "--noprogress", "--batch_size=3", "--major=items")
    cfg = settings.config_from_flags(Config, fv)
    assert cfg.hidden_layers == (8, 4) and cfg.lr == 0.5 and cfg.progress is False
    assert cfg.batch_size == 3 and cfg.major == "items"


def test_reading_flags_parse():
    fv = fresh_flags("--path_to_train_data=x", "--delimiter=comma", "--header=true",
                     "--columns=userId,movieId,rating", "--timestamp_column=timestamp")
    cfg = settings.config_from_flags(Config, fv)
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
        settings.config_from_flags(Config, fv)


def test_dict_round_trip_ignores_unknown_keys():
    cfg = Config(path_to_train_data="x", hidden_layers=(5, 3), seed=7)
    again = Config.from_dict({**cfg.to_dict(), "from_a_newer_version": 1})
    assert again == cfg
    assert Config.from_dict(cfg.to_dict(), seed=8).seed == 8


@pytest.mark.parametrize("argv,needle", [
    (["--relevance_threshold=nan"], "--relevance_threshold=nan: must be a finite number"),
    (["--weight_decay=inf"], "--weight_decay=inf: must be a finite number"),
    (["--baseline_reg_user=-5"], "--baseline_reg_user=-5.0: must be >= 0, or -1"),
])
def test_non_finite_and_out_of_range_numbers_are_refused(argv, needle):
    fv = fresh_flags("--path_to_train_data=x", *argv)
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        settings.config_from_flags(Config, fv)


def test_matmul_precision_setting():
    """--matmul_precision (default strict float32); --dtype=bfloat16, its older name, means
    bfloat16 and contradicts any other precision given with it."""
    assert Config(path_to_train_data="x").precision == "float32"
    assert Config(path_to_train_data="x", matmul_precision="tf32").precision == "tf32"
    assert Config(path_to_train_data="x", dtype="bfloat16").precision == "bfloat16"
    with pytest.raises(ConfigError, match="--dtype='bfloat16'.*matmul_precision=tf32"):
        Config(path_to_train_data="x", dtype="bfloat16", matmul_precision="tf32")
    with pytest.raises(ConfigError, match="matmul_precision"):
        Config(path_to_train_data="x", matmul_precision="float16")
