"""One frozen dataclass with every setting of a run, validated once with the flag's name."""
from __future__ import annotations

import dataclasses

from deepae_jax.data.ratings import COLUMN_ORDERS, MAJORS
from deepae_jax.model import ACTIVATIONS, ModelConfig
from deepae_jax.optim import OPTIMIZERS

MODES = ("train", "evaluate", "infer", "recommend")


class ConfigError(ValueError):
    """A setting with a bad value; the message names the flag and the value."""


def parse_hidden_layers(text: str) -> tuple[int, ...]:
    """``"512,512,1024"`` -> (512, 512, 1024); raises ConfigError on anything else."""
    try:
        sizes = tuple(int(s) for s in str(text).split(","))
    except ValueError:
        sizes = ()
    if not sizes or any(s < 1 for s in sizes):
        raise ConfigError(f"--hidden_layers={text!r}: expected comma-separated positive "
                          "integers, e.g. 512,512,1024")
    return sizes


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting, named after the reference's run.py flags where it has one."""

    path_to_train_data: str = ""
    path_to_eval_data: str = ""
    logdir: str = "logs"
    mode: str = "train"
    hidden_layers: tuple[int, ...] = (1024, 512, 512, 128)
    non_linearity_type: str = "selu"
    drop_prob: float = 0.0
    constrained: bool = False
    skip_last_layer_nl: bool = False
    optimizer: str = "momentum"
    lr: float = 0.00001
    weight_decay: float = 0.0
    batch_size: int = 64
    num_epochs: int = 50
    aug_step: int = 0
    noise_prob: float = 0.0
    summary_frequency: int = 100
    save_every: int = 3
    seed: int = 0
    major: str = "users"
    delimiter: str = "\t"
    column_order: str = "user,item,rating"
    resume: bool = False
    save_path: str = ""
    predictions_path: str = ""
    eval_batch_size: int = 256
    progress: bool = True
    make_synthetic_data: bool = False
    dtype: str = "float32"
    noisy_refeed_target: bool = False
    num_devices: int = 0
    num_processes: int = 1
    coordinator_address: str = ""
    process_id: int = -1
    ratings_file: str = ""
    top_k: int = 10
    users: str = ""
    recommendations_path: str = ""

    def __post_init__(self):
        def bad(flag, why):
            raise ConfigError(f"--{flag}={getattr(self, flag)!r}: {why}")
        if self.mode not in MODES:
            bad("mode", f"choose one of {MODES}")
        if self.non_linearity_type not in ACTIVATIONS:
            bad("non_linearity_type", f"unknown activation; choose one of {sorted(ACTIVATIONS)}")
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"unknown optimizer; choose one of {OPTIMIZERS}")
        if self.major not in MAJORS:
            bad("major", f"choose one of {MAJORS}")
        if self.column_order not in COLUMN_ORDERS:
            bad("column_order", f"choose one of {COLUMN_ORDERS}")
        if self.dtype not in ("float32", "bfloat16"):
            bad("dtype", "choose float32 or bfloat16")
        if not 0.0 <= self.drop_prob < 1.0:
            bad("drop_prob", "must be in [0, 1)")
        if not 0.0 <= self.noise_prob < 1.0:
            bad("noise_prob", "must be in [0, 1)")
        if not self.lr > 0:
            bad("lr", "must be positive")
        if self.weight_decay < 0:
            bad("weight_decay", "must be >= 0")
        for flag in ("batch_size", "num_epochs", "summary_frequency", "save_every",
                     "eval_batch_size"):
            if getattr(self, flag) < 1:
                bad(flag, "must be >= 1")
        if self.aug_step < -1:
            bad("aug_step", "must be >= 0 (-1, the reference's default, means 0)")
        if not self.hidden_layers or any(s < 1 for s in self.hidden_layers):
            bad("hidden_layers", "expected positive layer sizes")
        if self.num_devices < 0:
            bad("num_devices", "must be >= 0 (0: all local devices, 1: one device)")
        if self.num_processes < 0:
            bad("num_processes", "must be >= 1, or 0 to detect it from the cluster (SLURM, ...)")
        if self.process_id < -1 or 0 < self.num_processes <= self.process_id:
            bad("process_id", f"must be in 0..{max(0, self.num_processes - 1)} "
                "(or -1 to detect it from the cluster)")
        if self.mode == "train" and not self.path_to_train_data:
            bad("path_to_train_data", "a training data path is required")
        if self.mode in ("evaluate", "infer") and not self.path_to_eval_data:
            bad("path_to_eval_data", f"--mode={self.mode} needs evaluation data")
        if self.mode == "infer" and not self.predictions_path:
            bad("predictions_path", "--mode=infer needs a file to write the predictions to")
        if self.top_k < 1:
            bad("top_k", "must be >= 1")
        if self.users.strip() and not all(t.strip().lstrip("-").isdigit()
                                          for t in self.users.split(",")):
            bad("users", "expected comma-separated integer user ids, e.g. 17,42")

    @property
    def refeed_steps(self) -> int:
        return max(0, self.aug_step)

    def model_config(self, n_inputs: int) -> ModelConfig:
        return ModelConfig(layer_sizes=(int(n_inputs),) + tuple(self.hidden_layers),
                           activation=self.non_linearity_type, drop_prob=self.drop_prob,
                           constrained=self.constrained,
                           last_layer_linear=self.skip_last_layer_nl)


def defaults():
    """The default of every setting (a namespace; a default Config would fail validation)."""
    import types
    return types.SimpleNamespace(**{f.name: f.default for f in dataclasses.fields(Config)})
