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


@pytest.mark.parametrize("flag, value, match", [
    ("aug_step", 100000, "--aug_step=100000: must be in 0..32"),
    ("seed", 2 ** 64, "--seed=18446744073709551616: must be an integer in 0"),
    ("seed", -1, "--seed=-1: must be an integer in 0"),
    ("eval_batch_size", 10 ** 9, "--eval_batch_size=1000000000: must be <= 65536"),
    ("metrics", "ndcg@99999999999", "--metrics='ndcg@99999999999': K of NAME@K"),
    ("top_k", 10 ** 9, "--top_k=1000000000: must be in 1.."),
    ("coordinator_address", "node0", "--coordinator_address='node0': expected host:port"),
    ("coordinator_address", "node0:99999", "expected host:port"),
    ("coordinator_address", "a b:12", "expected host:port"),
])
def test_settings_out_of_range_are_refused_before_any_data(flag, value, match):
    """Classes 6 and 7: every setting is checked when the Config is made (before data is read
    or a step compiled), naming the flag and the value."""
    with pytest.raises(ConfigError, match=match.replace("(", r"\(")):
        Config(path_to_train_data="x", **{flag: value})


def test_good_coordinator_addresses_pass():
    for address in ("node0:1234", "10.0.0.1:1", "[::1]:65535"):
        Config(path_to_train_data="x", coordinator_address=address)


def test_output_paths_never_overwrite_an_input(tmp_path):
    """Class 2: --predictions_path (and the other outputs) equal to an input is refused."""
    data = tmp_path / "eval.tsv"
    data.write_text("1\t2\t3\n")
    with pytest.raises(ConfigError, match="--predictions_path=.*is the input "
                       "--path_to_eval_data"):
        Config(mode="infer", path_to_train_data="t", path_to_eval_data=str(data),
               predictions_path=str(tmp_path / "." / "eval.tsv"))
    with pytest.raises(ConfigError, match="--metrics_path=.*path_to_train_data"):
        Config(path_to_train_data=str(data), metrics_path=str(data))


@pytest.mark.parametrize("key, value, match", [
    ("clip_predictions", "yes", "clip_predictions='yes': expected true or false"),
    ("clip_predictions", "no", "clip_predictions='no': expected true or false"),
    ("hidden_layers", 32, "hidden_layers=32: expected a sequence"),
    ("hidden_layers", [8, "4"], "hidden_layers=\\[8, '4'\\]"),
    ("num_epochs", "3", "num_epochs='3': expected an integer"),
    ("lr", None, "lr=None: expected a number"),
    ("major", 1, "major=1: expected a string"),
])
def test_config_json_values_are_type_checked(key, value, match):
    """Class 3: a hand-edited config.json ("clip_predictions": "yes") is refused, not read as
    true; JSON lists still become tuples and ints floats."""
    good = Config(path_to_train_data="x", lr=0.5).to_dict()
    assert Config.from_dict(good) == Config(path_to_train_data="x", lr=0.5)
    assert Config.from_dict({**good, "lr": 1}).lr == 1.0
    with pytest.raises(ConfigError, match=match):
        Config.from_dict({**good, key: value})


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
