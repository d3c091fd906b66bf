"""``deepae train|evaluate|infer|recommend``: the run commands, flags named as the reference's
run.py (every field of :class:`deepae_jax.config.Config`, its help and validation there).

``python -m deepae_jax.main --mode=MODE --flagfile=FILE`` (and the ``deepae-train`` script) is the
same with the mode given by ``--mode`` (default train).
"""
from __future__ import annotations

import sys
from typing import Sequence

from deepae_jax import config as config_lib
from deepae_jax.cli.flags import Command, error, run_command

DOCS = {
    "train": """Trains a model on --path_to_train_data, evaluates every epoch on
--path_to_eval_data and writes checkpoints, metrics.jsonl, curves.png and report.md to --logdir.""",
    "evaluate": """Scores a saved model (the latest checkpoint in --logdir, or --save_path) on
--path_to_eval_data: the RMSE and any --metrics.""",
    "infer": """Writes the saved model's prediction of every rating of --path_to_eval_data to
--predictions_path (user, item, prediction, actual; the reference's format).""",
    "recommend": """Writes the --top_k best unrated items of --users (default: every training
user), or of the new users of --ratings_file, to --recommendations_path (default: standard
output).""",
}


def run_mode(cfg: config_lib.Config, args: Sequence[str] = ()) -> int:
    """Does what ``cfg.mode`` says; returns the exit code (2 after one ``error:`` line for bad
    settings, data, checkpoints or files)."""
    del args
    from deepae_jax import inference
    from deepae_jax.training import search  # heavy imports (jax) after flag parsing
    from deepae_jax.run.checkpoint import CheckpointError
    from deepae_jax.data.ratings import RatingsFormatError
    from deepae_jax.core.step import TrainingDivergedError
    from deepae_jax.devices import keep_host_memory_mapped
    # Host malloc setting as in benchmarks/throughput.py (no page faults on XLA:CPU's per-step
    # buffers; harmless elsewhere). No JAX call here: jax.distributed must start first.
    keep_host_memory_mapped()
    try:
        if cfg.make_synthetic_data:
            from deepae_jax.data.datasets import synthetic
            synthetic.ensure_dataset(cfg.path_to_train_data, cfg.path_to_eval_data)
        if cfg.mode == "train":
            search.train(cfg)
        elif cfg.mode == "evaluate":
            inference.run_evaluate(cfg)
        elif cfg.mode == "recommend":
            from deepae_jax.cli import recommend_run
            recommend_run.run_recommend(cfg)
        else:
            inference.run_infer(cfg)
    except (config_lib.ConfigError, RatingsFormatError, CheckpointError, TrainingDivergedError,
            OSError, ValueError) as e:  # OSError: e.g. disk full (the message names the file)
        error(e)
        return 2
    return 0


SUMMARIES = {"train": "train a model (checkpoints, metrics, curves.png, report.md)",
             "evaluate": "score a saved model on evaluation data",
             "infer": "write a saved model's predictions of evaluation ratings",
             "recommend": "write top-K unrated items per user"}


def command(mode: str) -> Command:
    """``deepae MODE``: Config's flags with ``--mode`` set by the command."""
    return Command(mode, config_lib.Config, run_mode, SUMMARIES[mode], DOCS[mode],
                   fixed={"mode": mode}, recipes=True)


TRAIN, EVALUATE, INFER, RECOMMEND = (command(m) for m in config_lib.MODES)
LEGACY = Command("deepae_jax.main", config_lib.Config, run_mode,
                 "Train, evaluate, infer or recommend, as --mode says.", __doc__, recipes=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deepae_jax.main [flags]``: the run of ``--mode``; returns the exit code."""
    return run_command(LEGACY, list(sys.argv[1:] if argv is None else argv),
                       "python -m deepae_jax.main")


def run() -> None:
    """Console-script entry point (``deepae-train``)."""
    sys.exit(main())


if __name__ == "__main__":
    run()
