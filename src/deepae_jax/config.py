"""Every setting of a run, defined once: a frozen dataclass whose fields carry the flag's help.

The absl flags of ``python -m deepae_jax.main`` (names, help, defaults, choices) are generated
from :class:`Config` by ``settings.define_flags``, and validated by ``Config.__post_init__``: the
command line, the Python API, ``config.json`` and the checkpoint metadata share one definition.
To add a setting, add a field with ``settings.setting`` and, if needed, a check in
``__post_init__``. The other tools (``deepae_jax.serve``, ``deepae_jax.export``) declare theirs
the same way (``deepae_jax.settings``).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import types

from deepae_jax.data.ratings import COLUMN_ORDERS, MAJORS, TableFormat
from deepae_jax.core.model import ACTIVATIONS, PRECISIONS, ModelConfig
from deepae_jax.core.optim import OPTIMIZERS
from deepae_jax.evaluation.ranking import parse_metrics
from deepae_jax.settings import (ConfigError, bad_setting, check_choices, check_types,
                                 parse_int_list, setting)

MODES = ("train", "evaluate", "infer", "recommend")
MAX_SEED = 2 ** 63 - 1  # jax.random.PRNGKey and numpy's generators take int64 seeds
# --aug_step unrolls its re-feeding loop into the compiled step (core/step.py): compile time
# grows linearly (aug_step 200 took 38 s to compile on the 2-core VM, 100000 never finished).
# The paper's runs use 1; 32 compiles in seconds and is far past any reported use.
MAX_AUG_STEP = 32
# Rows of one evaluation/scoring batch: a batch holds (rows x items) float32 scores on the
# device; 65536 rows of Netflix's 17,770 items are already 4.7 GB.
MAX_EVAL_BATCH = 65536
MAX_K = 100_000  # NAME@K and --top_k: a (users x K) ranking per batch; K past the items is moot
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})$")


def parse_hidden_layers(text: str) -> tuple[int, ...]:
    """``"512,512,1024"`` -> (512, 512, 1024); raises ConfigError on anything else."""
    return parse_int_list(text, "hidden_layers")


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting, named after the reference's run.py flags where it has one."""

    mode: str = setting("train", "What to do: train, evaluate (metrics of a saved model on "
                        "--path_to_eval_data), infer (a predictions file) or recommend (top-K "
                        "unrated items per user).", MODES)
    path_to_train_data: str = setting(
        "", "Training ratings: a file, a directory of files, or a .npz cache.")
    path_to_eval_data: str = setting(
        "", "Evaluation ratings (same formats); empty: nothing is evaluated.")
    logdir: str = setting("runs/default", "Checkpoints, metrics.jsonl, TensorBoard events, "
                          "curves.png and report.md of ONE run.")
    hidden_layers: tuple[int, ...] = setting(
        (1024, 512, 512, 128),
        "Encoder hidden sizes, e.g. 512,512,1024 (the decoder mirrors them).")
    non_linearity_type: str = setting("selu", "Activation of every layer.", sorted(ACTIVATIONS))
    drop_prob: float = setting(0.0, "Dropout probability on the code layer.")
    constrained: bool = setting(False, "Tie decoder weights to the encoder's.")
    skip_last_layer_nl: bool = setting(False, "Linear last decoder layer (no activation).")
    optimizer: str = setting("momentum", "Optimiser (the reference's four).", OPTIMIZERS)
    lr: float = setting(0.00001, "Learning rate.")
    weight_decay: float = setting(0.0, "L2 weight decay (PyTorch style: on every parameter).")
    batch_size: int = setting(64, "Mini-batch size (rows); the GLOBAL batch on several devices.")
    num_epochs: int = setting(50, "Epochs to train.")
    aug_step: int = setting(0, "Dense re-feeding steps per iteration (0: off; -1 means 0).")
    noise_prob: float = setting(0.0, "Dropout noise on the re-fed input.")
    summary_frequency: int = setting(100, "Iterations between training-RMSE summaries.")
    save_every: int = setting(
        3, "Checkpoint after 0-based epochs divisible by this, and after the last.")
    keep_checkpoints: int = setting(
        2, "Numbered checkpoints kept in --logdir: the newest N (0: all); best.msgpack, the "
        "best validation epoch, is always kept.")
    seed: int = setting(0, "Seed of initialisation, shuffling and dropout.")
    major: str = setting("users", "Rows are users (U-AutoRec, default) or items (I-AutoRec).",
                         MAJORS)
    delimiter: str = setting(
        "auto", "Field separator of rating tables: auto (detect: tab, ::, comma, semicolon, "
        "pipe or space), a name (tab, comma, semicolon, pipe, space) or the characters (e.g. "
        ", or ::).")
    column_order: str = setting(
        "user,item,rating", "Column order of rating tables without --columns (the first three "
        "columns).", COLUMN_ORDERS)
    resume: bool = setting(False, "Continue from the latest checkpoint in --logdir.")
    save_path: str = setting(
        "", "Checkpoint for evaluate/infer/recommend (default: the latest in --logdir).")
    predictions_path: str = setting("", "Output file of --mode=infer.")
    eval_batch_size: int = setting(256, "Rows per evaluation batch.")
    progress: bool = setting(True, "Show a progress bar per epoch.")
    make_synthetic_data: bool = setting(
        False, "Write the deterministic synthetic data set to --path_to_train_data and "
        "--path_to_eval_data first if they do not exist (the quickstart).")
    dtype: str = setting(
        "float32", "Older name of --matmul_precision for its float32 and bfloat16 values "
        "(bfloat16 here sets --matmul_precision=bfloat16).", ("float32", "bfloat16"))
    matmul_precision: str = setting(
        "float32", "Precision of the model's matmuls in training, evaluation and inference: "
        "float32 (strict float32 on every backend, as the reference computes; the default), "
        "tf32 (TF32 tensor cores on NVIDIA GPUs; float32 elsewhere) or bfloat16 (bfloat16 "
        "operands, float32 accumulation). Weights, optimiser state and loss stay float32.",
        PRECISIONS)
    noisy_refeed_target: bool = setting(
        False, "With --noise_prob: use the noised re-fed input as the target too, as the "
        "published run.py does (default: the clean output, as PAPER.md states).")
    num_devices: int = setting(
        0, "Devices per process for data-parallel training, evaluation and inference (0: all "
        "local devices; 1: the plain single-device step). --batch_size is the GLOBAL batch and "
        "must divide among all devices of all processes.")
    num_processes: int = setting(
        1, "Processes (usually nodes) of a multi-host run on jax.distributed (1: no distributed "
        "runtime; 0: detect from the cluster, e.g. SLURM).")
    coordinator_address: str = setting(
        "", "host:port of process 0's coordinator for a multi-host run (empty: detect from the "
        "cluster when --num_processes is not 1).")
    process_id: int = setting(
        -1, "This process's rank 0..num_processes-1 (-1: detect from the cluster).")
    ratings_file: str = setting(
        "", "--mode=recommend: score the users of this ratings file (user<TAB>item<TAB>rating, "
        "any user ids) from these ratings alone: new users, no retraining.")
    top_k: int = setting(10, "--mode=recommend: items to recommend per user.")
    users: str = setting(
        "", "--mode=recommend: comma-separated ORIGINAL user ids (default: all users).")
    recommendations_path: str = setting(
        "", "--mode=recommend: output file (user<TAB>item<TAB>prediction<TAB>rank); default: "
        "standard output.")
    # ranking metrics
    metrics: str = setting(
        "", "Extra metrics on --path_to_eval_data, every epoch and in --mode=evaluate: "
        "comma-separated rmse, mae and NAME@K with NAME one of precision, recall, ndcg, map, "
        "hit, coverage (any K, several Ks), e.g. mae,ndcg@10,recall@20. Ranking: for every user, "
        "the items not rated in training ranked by the model; relevant = held-out items rated "
        ">= --relevance_threshold. Empty: only the eval RMSE.")
    relevance_threshold: float = setting(
        0.0, "Ranking metrics: held-out items rated at least this are relevant (0: every "
        "held-out item is relevant).")
    metrics_path: str = setting(
        "", "--mode=evaluate: also write every metric as one JSON object to this file.")
    # reading ratings tables
    header: str = setting(
        "auto", "Whether rating tables start with a header line: auto (detected: no field of the "
        "first line at the user, item or rating column is a number), true or false.",
        ("auto", "true", "false"))
    columns: str = setting(
        "", "The user, item and rating columns of rating tables, in that order: header names "
        "(e.g. userId,movieId,rating) or 0-based positions (e.g. 0,1,2); empty: the first three "
        "columns in --column_order.")
    timestamp_column: str = setting(
        "", "The timestamp column (header name or 0-based position) of rating tables, read "
        "along for splitting; empty: none.")
    # runs and checkpoints
    overwrite: bool = setting(
        False, "Train into a --logdir that holds another run's files (checkpoints, vocab.npz, "
        "metrics.jsonl, config.json, events) by removing them first. Without it such a "
        "--logdir is refused unless --resume continues that run (with --resume: removes them "
        "only when no checkpoint there loads).")
    # beyond the paper: predictions relative to a baseline, model selection, AutoRec-family
    # regularisation and schedules (issue 13; all off by default: the paper's run is unchanged)
    baseline: str = setting(
        "none", "Learn ratings relative to a baseline: none (the paper), global (the training "
        "mean) or bias (mean + regularised user and item biases); predictions add it back.",
        ("none", "global", "bias"))
    baseline_reg_user: float = setting(
        -1.0, "--baseline=bias: L2 lambda of the user biases (-1: chosen on "
        "--path_to_eval_data from a small grid).")
    baseline_reg_item: float = setting(
        -1.0, "--baseline=bias: L2 lambda of the item biases (-1: chosen on validation).")
    baseline_input: str = setting(
        "residual", "With a baseline, the model's input at rated entries: residual, or shifted "
        "(residual + mean/scale: a bias-corrected rating, distinct from unrated 0; the targets "
        "stay residuals).", ("residual", "shifted"))
    baseline_scale: bool = setting(
        True, "With a baseline: divide the residuals by their RMS for training (any rating "
        "scale trains like 1..5).")
    unknown: str = setting(
        "drop", "Evaluation ratings of rows or columns unknown to training: drop (the paper's "
        "protocol) or baseline (predicted by the baseline; the training mean with "
        "--baseline=none).", ("drop", "baseline"))
    clip_predictions: bool = setting(
        False, "Clip predictions to the training ratings' range.")
    path_to_test_data: str = setting(
        "", "Test ratings: with them, the best epoch on --path_to_eval_data is kept as "
        "best.msgpack and scored once on this data at the end (summary.json).")
    selection_metric: str = setting(
        "rmse", "Validation metric that picks the best epoch.", ("rmse", "mae"))
    early_stopping_patience: int = setting(
        0, "Stop after this many epochs without a better validation metric (0: off).")
    l2_weights: float = setting(
        0.0, "L2 on the weight matrices only (biases excluded), added to their gradients.")
    input_drop_prob: float = setting(
        0.0, "Dropout on the input ratings while training (denoising); targets stay whole.")
    lr_schedule: str = setting(
        "reference", "Learning-rate schedule: reference (multistep for momentum, constant "
        "otherwise, as the reference), multistep (MultiStepLR for any optimiser), constant, "
        "cosine (to 0 over --num_epochs), exponential (x0.95 per epoch), plateau (halved after "
        "3 epochs without a lower training loss).",
        ("reference", "multistep", "constant", "cosine", "exponential", "plateau"))
    final_predictor: str = setting(
        "model", "After training, the predictor kept (beyond the paper; needs --baseline=bias "
        "and --path_to_eval_data): model (the autoencoder, as the paper), baseline (the bias "
        "baseline alone), blend (baseline + shrink x (autoencoder - baseline), the shrinkage by "
        "the user's and item's rating counts fitted on validation) or auto (the one of the three "
        "with the lowest validation RMSE: never worse there than the baseline). Saved with the "
        "run (baseline.npz, summary.json): evaluate, infer, recommend, serve and the API use it.",
        ("model", "auto", "blend", "baseline"))
    refit: bool = setting(
        False, "After training, train again on the training and validation ratings together "
        "(beyond the paper): the best epoch count, the baseline's lambdas and the final "
        "predictor chosen on validation, nothing chosen again; in LOGDIR/refit, scored once on "
        "--path_to_test_data (summary.json: refit_test_rmse). Needs --path_to_eval_data.")
    time_budget: float = setting(
        0.0, "Seconds for a search on validation before the run (beyond the paper; 0: none): "
        "trials of settings drawn around the given ones (hidden widths, lr, L2, dropouts), "
        "each trained without the test data in LOGDIR/search; the lowest validation RMSE wins "
        "and is trained as the run (search.json lists the trials). Needs "
        "--path_to_eval_data.")
    # training step
    train_path: str = setting(
        "auto", "The training step's variant, fixed once per run and logged: dense (the dense "
        "reference computation), sparse (the sparse XLA path: gather-sum first layer, output "
        "at the observed items; any backend and device count), cpu_kernels (the sparse path "
        "on the CPU kernels, CPU platform and one device only). auto: cpu_kernels where they "
        "are built and the run is on one CPU device, else sparse.",
        ("auto", "dense", "sparse", "cpu_kernels"))
    train_layers: str = setting(
        "auto", "How the sparse XLA path computes the n-wide first and output layers: sparse "
        "(gather-sum over the observed items, output at those items only), dense (the batch "
        "densified on the device, dense matmuls, loss at the observed items), auto (sparse on "
        "the CPU platform, elsewhere the one that moves fewer bytes for the batch's shape; "
        "logged). The CPU kernels always compute the sparse one.", ("auto", "sparse", "dense"))

    def __post_init__(self):
        check_types(self)
        bad = functools.partial(bad_setting, self)
        check_choices(self, {"non_linearity_type": "unknown activation; ",
                             "optimizer": "unknown optimizer; "})
        for flag in ("drop_prob", "noise_prob", "input_drop_prob"):
            if not 0.0 <= getattr(self, flag) < 1.0:
                bad(flag, "must be in [0, 1)")
        if not self.lr > 0:
            bad("lr", "must be positive")
        for flag in ("batch_size", "num_epochs", "summary_frequency", "save_every",
                     "eval_batch_size", "top_k"):
            if getattr(self, flag) < 1:
                bad(flag, "must be >= 1")
        for flag in ("weight_decay", "l2_weights", "keep_checkpoints"):
            if getattr(self, flag) < 0:
                bad(flag, "must be >= 0")
        self._check_bounds()  # and the outputs
        if not self.hidden_layers or any(s < 1 for s in self.hidden_layers):
            bad("hidden_layers", "expected positive layer sizes")
        self._check_devices()
        if self.mode == "train" and not self.path_to_train_data:
            bad("path_to_train_data", "a training data path is required")
        if self.mode in ("evaluate", "infer") and not self.path_to_eval_data:
            bad("path_to_eval_data", f"--mode={self.mode} needs evaluation data")
        if self.mode == "infer" and not self.predictions_path:
            bad("predictions_path", "--mode=infer needs a file to write the predictions to")
        for f in dataclasses.fields(self):  # no NaN or infinite setting anywhere
            if isinstance(f.default, float) and not math.isfinite(getattr(self, f.name)):
                bad(f.name, "must be a finite number")
        for flag in ("baseline_reg_user", "baseline_reg_item"):
            if getattr(self, flag) < 0 and getattr(self, flag) != -1:
                bad(flag, "must be >= 0, or -1 to choose it on the evaluation data")
        if self.early_stopping_patience < 0:
            bad("early_stopping_patience", "must be >= 0 (0: off)")
        if (self.path_to_test_data or self.early_stopping_patience) and (
                self.mode == "train" and not self.path_to_eval_data):
            bad("path_to_eval_data", "model selection (--path_to_test_data, "
                "--early_stopping_patience) needs validation data")
        self._check_final_predictor()
        for flag in ("refit", "time_budget"):  # what they keep is chosen on validation
            if getattr(self, flag) and self.mode == "train" and not self.path_to_eval_data:
                bad(flag, "needs --path_to_eval_data (its choices are made there)")
        if self.time_budget < 0:
            bad("time_budget", "must be >= 0 seconds (0: no search)")
        if self.dtype == "bfloat16" and self.matmul_precision not in ("float32", "bfloat16"):
            bad("dtype", f"--dtype=bfloat16 contradicts --matmul_precision="
                f"{self.matmul_precision}; give only --matmul_precision")
        try:
            names = parse_metrics(self.metrics)
        except ValueError as e:
            bad("metrics", str(e))
        if any(int(n.split("@")[1]) > MAX_K for n in names if "@" in n):
            bad("metrics", f"K of NAME@K must be in 1..{MAX_K}")
        if self.users.strip() and not all(t.strip() for t in self.users.split(",")):
            bad("users", "expected comma-separated user ids, e.g. 17,42 or u_17,u_42")
        try:
            TableFormat.from_config(self)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def _check_devices(self) -> None:
        """The device and process settings of multi-device and multi-host runs."""
        bad = functools.partial(bad_setting, self)
        if self.num_devices < 0:
            bad("num_devices", "must be >= 0 (0: all local devices, 1: one device)")
        if self.num_processes < 0:
            bad("num_processes", "must be >= 1, or 0 to detect it from the cluster (SLURM, ...)")
        if self.process_id < -1 or 0 < self.num_processes <= self.process_id:
            bad("process_id", f"must be in 0..{max(0, self.num_processes - 1)} "
                "(or -1 to detect it from the cluster)")

    def _check_bounds(self) -> None:
        """The limits past which a setting would hang, overflow or exhaust memory (the
        MAX_* constants above say why each)."""
        bad = functools.partial(bad_setting, self)
        if not -1 <= self.aug_step <= MAX_AUG_STEP:
            bad("aug_step", f"must be in 0..{MAX_AUG_STEP} (-1, the reference's default, means "
                "0): each re-feeding step is unrolled into the compiled training step, so its "
                "compile time grows with it")
        if not 0 <= self.seed <= MAX_SEED:
            bad("seed", f"must be an integer in 0..{MAX_SEED} (2**63 - 1)")
        if self.eval_batch_size > MAX_EVAL_BATCH:
            bad("eval_batch_size", f"must be <= {MAX_EVAL_BATCH}: a batch holds rows x items "
                "float32 scores on the device")
        if self.coordinator_address and not _address_ok(self.coordinator_address):
            bad("coordinator_address", "expected host:port with a port in 1..65535, e.g. "
                "node0:1234 or [::1]:1234")
        if not 1 <= self.top_k <= MAX_K:
            bad("top_k", f"must be in 1..{MAX_K}")
        self._check_outputs()

    def _check_outputs(self) -> None:
        """An output file (--predictions_path, --recommendations_path, --metrics_path) must not
        be one of the inputs it would overwrite."""
        inputs = {os.path.realpath(p): flag for flag, p in (
            ("path_to_train_data", self.path_to_train_data),
            ("path_to_eval_data", self.path_to_eval_data),
            ("path_to_test_data", self.path_to_test_data),
            ("ratings_file", self.ratings_file)) if p}
        for flag in ("predictions_path", "recommendations_path", "metrics_path"):
            path = getattr(self, flag)
            if path and os.path.realpath(path) in inputs:
                bad_setting(self, flag, f"is the input --{inputs[os.path.realpath(path)]}; "
                            "writing there would overwrite it: choose another file")

    @property
    def precision(self) -> str:
        """The matmul precision (``--matmul_precision``, or ``--dtype=bfloat16``)."""
        return "bfloat16" if self.dtype == "bfloat16" else self.matmul_precision

    def _check_final_predictor(self) -> None:
        """--final_predictor other than model is chosen on validation against the bias baseline."""
        if self.final_predictor != "model" and self.mode == "train" and (
                self.baseline != "bias" or not self.path_to_eval_data):
            bad_setting(self, "final_predictor", "needs --baseline=bias and --path_to_eval_data "
                        "(the predictor is chosen against the bias baseline on validation data)")

    @property
    def refeed_steps(self) -> int:
        return max(0, self.aug_step)

    def model_config(self, n_inputs: int) -> ModelConfig:
        return ModelConfig(layer_sizes=(int(n_inputs),) + tuple(self.hidden_layers),
                           activation=self.non_linearity_type, drop_prob=self.drop_prob,
                           constrained=self.constrained,
                           last_layer_linear=self.skip_last_layer_nl)

    def to_dict(self) -> dict:
        """Every setting as JSON-ready values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict, **overrides) -> "Config":
        """A Config from :meth:`to_dict`'s output (unknown keys are ignored: another version
        may have written them); ``overrides`` replace stored values."""
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in {**values, **overrides}.items() if k in names}
        return cls(**kept)  # lists become tuples, and every value is type-checked, there


def _address_ok(text: str) -> bool:
    match = _ADDRESS.match(text)
    return bool(match) and 1 <= int(match.group(2)) <= 65535


def defaults() -> types.SimpleNamespace:
    """The default of every setting (a namespace; a default Config would fail validation)."""
    return types.SimpleNamespace(**{f.name: f.default for f in dataclasses.fields(Config)})
