"""Command line: ``python -m deepae_jax.main --flagfile=FILE`` (flags named as the reference's run.py).

Modes: ``--mode=train`` (default), ``--mode=evaluate`` (RMSE of a saved model on
``--path_to_eval_data``) and ``--mode=infer`` (the reference's predictions file).
"""
from __future__ import annotations

import logging
import sys

from absl import app, flags

from deepae_jax import config as config_lib

FLAGS = flags.FLAGS
_D = config_lib.defaults()

flags.DEFINE_enum("mode", _D.mode, list(config_lib.MODES),
                  "train, evaluate, infer or recommend.")
flags.DEFINE_float("lr", _D.lr, "Learning rate.")
flags.DEFINE_float("weight_decay", _D.weight_decay, "L2 weight decay (PyTorch style).")
flags.DEFINE_float("drop_prob", _D.drop_prob, "Dropout probability on the code layer.")
flags.DEFINE_float("noise_prob", _D.noise_prob, "Dropout noise on the re-fed input.")
flags.DEFINE_integer("batch_size", _D.batch_size, "Mini-batch size (rows).")
flags.DEFINE_integer("summary_frequency", _D.summary_frequency,
                     "Iterations between training-RMSE summaries.")
flags.DEFINE_integer("aug_step", _D.aug_step, "Dense re-feeding steps per iteration (0: off).")
flags.DEFINE_boolean("constrained", _D.constrained, "Tie decoder weights to the encoder's.")
flags.DEFINE_boolean("skip_last_layer_nl", _D.skip_last_layer_nl,
                     "Linear last decoder layer (no activation).")
flags.DEFINE_integer("num_epochs", _D.num_epochs, "Epochs to train.")
flags.DEFINE_integer("save_every", _D.save_every,
                     "Checkpoint after 0-based epochs divisible by this, and after the last.")
flags.DEFINE_string("optimizer", _D.optimizer, "momentum, adam, adagrad or rmsprop.")
flags.DEFINE_string("hidden_layers", ",".join(map(str, _D.hidden_layers)),
                    "Encoder hidden sizes, e.g. 512,512,1024 (the decoder mirrors them).")
flags.DEFINE_string("path_to_train_data", _D.path_to_train_data,
                    "Training ratings: a file, a directory of files, or a .npz cache.")
flags.DEFINE_string("path_to_eval_data", _D.path_to_eval_data,
                    "Evaluation ratings (same formats).")
flags.DEFINE_string("non_linearity_type", _D.non_linearity_type,
                    "selu, relu, relu6, sigmoid, tanh, elu, lrelu, swish or none.")
flags.DEFINE_string("logdir", _D.logdir, "Checkpoints, metrics.jsonl and TensorBoard events.")
flags.DEFINE_integer("seed", _D.seed, "Seed of initialisation, shuffling and dropout.")
flags.DEFINE_enum("major", _D.major, ["users", "items"],
                  "Rows are users (U-AutoRec, default) or items (I-AutoRec).")
flags.DEFINE_string("delimiter", _D.delimiter, "Field separator of text rating files.")
flags.DEFINE_enum("column_order", _D.column_order, ["user,item,rating", "item,user,rating"],
                  "Column order of text rating files.")
flags.DEFINE_boolean("resume", _D.resume, "Continue from the latest checkpoint in --logdir.")
flags.DEFINE_string("save_path", _D.save_path,
                    "Checkpoint for evaluate/infer (default: the latest in --logdir).")
flags.DEFINE_string("predictions_path", _D.predictions_path, "Output file of --mode=infer.")
flags.DEFINE_integer("eval_batch_size", _D.eval_batch_size, "Rows per evaluation batch.")
flags.DEFINE_boolean("progress", _D.progress, "Show a progress bar per epoch.")
flags.DEFINE_boolean("make_synthetic_data", _D.make_synthetic_data,
                     "Write the deterministic synthetic data set to --path_to_train_data and "
                     "--path_to_eval_data first if they do not exist (the quickstart).")

flags.DEFINE_integer("num_devices", _D.num_devices,
                     "Devices per process for data-parallel training, evaluation and inference "
                     "(0: all local devices; 1: the plain single-device step). --batch_size is the "
                     "GLOBAL batch and must divide among all devices of all processes.")
flags.DEFINE_integer("num_processes", _D.num_processes,
                     "Processes (usually nodes) of a multi-host run on jax.distributed (1: no "
                     "distributed runtime; 0: detect from the cluster, e.g. SLURM).")
flags.DEFINE_string("coordinator_address", _D.coordinator_address,
                    "host:port of process 0's coordinator for a multi-host run (empty: detect "
                    "from the cluster when --num_processes is not 1).")
flags.DEFINE_integer("process_id", _D.process_id,
                     "This process's rank 0..num_processes-1 (-1: detect from the cluster).")

flags.DEFINE_string("ratings_file", _D.ratings_file,
                    "--mode=recommend: score the users of this ratings file (user<TAB>item<TAB>"
                    "rating, any user ids) from these ratings alone: new users, no retraining.")
flags.DEFINE_integer("top_k", _D.top_k, "--mode=recommend: items to recommend per user.")
flags.DEFINE_string("users", _D.users,
                    "--mode=recommend: comma-separated ORIGINAL user ids (default: all users).")
flags.DEFINE_string("recommendations_path", _D.recommendations_path,
                    "--mode=recommend: output file (user<TAB>item<TAB>prediction<TAB>rank); "
                    "default: standard output.")


flags.DEFINE_enum("dtype", _D.dtype, ["float32", "bfloat16"],
                  "Matmul operands of the training step: float32 (exact, default) or bfloat16 "
                  "with float32 accumulation and float32 master weights (for GPUs).")
flags.DEFINE_boolean("noisy_refeed_target", _D.noisy_refeed_target,
                     "With --noise_prob: use the noised re-fed input as the target too, as the "
                     "published run.py does (default: the clean output, as PAPER.md states).")


def config_from_flags() -> config_lib.Config:
    """Translates the parsed flags into a validated Config (errors name the flag)."""
    names = [f.name for f in config_lib.dataclasses.fields(config_lib.Config)]
    values = {name: FLAGS[name].value for name in names}
    values["hidden_layers"] = config_lib.parse_hidden_layers(values["hidden_layers"])
    return config_lib.Config(**values)


def main(argv):
    del argv
    from absl import logging as absl_logging
    absl_logging.get_absl_handler().setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    from deepae_jax import runner  # heavy imports (jax) after flag parsing: fast --help
    from deepae_jax.checkpoint import CheckpointError
    from deepae_jax.data.ratings import RatingsFormatError
    from deepae_jax.train import TrainingDivergedError
    from deepae_jax.sparse import keep_host_memory_mapped
    # Host malloc setting as in benchmarks/throughput.py (no page faults on XLA:CPU's per-step
    # buffers; harmless elsewhere). No JAX call here: jax.distributed must start first.
    keep_host_memory_mapped()
    try:
        cfg = config_from_flags()
        if cfg.make_synthetic_data:
            from deepae_jax.data import synthetic
            synthetic.ensure_dataset(cfg.path_to_train_data, cfg.path_to_eval_data)
        if cfg.mode == "train":
            runner.train_and_evaluate(cfg)
        elif cfg.mode == "evaluate":
            runner.run_evaluate(cfg)
        elif cfg.mode == "recommend":
            from deepae_jax import recommend
            recommend.run_recommend(cfg)
        else:
            runner.run_infer(cfg)
    except (config_lib.ConfigError, RatingsFormatError, CheckpointError, TrainingDivergedError,
            FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def run():
    """Console-script entry point."""
    app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
    run()
