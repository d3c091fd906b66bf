"""Command line: ``python -m deepae_jax.main --flagfile=FILE`` (flags named as the reference's run.py).

Modes: ``--mode=train`` (default), ``--mode=evaluate`` (metrics of a saved model on
``--path_to_eval_data``), ``--mode=infer`` (the reference's predictions file) and
``--mode=recommend`` (top-K unrated items per user). Every flag is a field of
:class:`deepae_jax.config.Config`, where its help and validation live.
"""
from __future__ import annotations

import logging
import sys

from absl import app, flags

from deepae_jax import config as config_lib
from deepae_jax import settings

FLAGS = flags.FLAGS
settings.define_flags(config_lib.Config, FLAGS)
flags.adopt_module_key_flags(config_lib)  # --help lists them as this program's flags


def config_from_flags() -> config_lib.Config:
    """Translates the parsed flags into a validated Config (errors name the flag)."""
    return settings.config_from_flags(config_lib.Config, FLAGS)


def main(argv):
    del argv
    from absl import logging as absl_logging
    absl_logging.get_absl_handler().setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    from deepae_jax import inference
    from deepae_jax.training import trainer  # heavy imports (jax) after flag parsing
    from deepae_jax.run.checkpoint import CheckpointError
    from deepae_jax.data.ratings import RatingsFormatError
    from deepae_jax.core.step import TrainingDivergedError
    from deepae_jax.devices import keep_host_memory_mapped
    # Host malloc setting as in benchmarks/throughput.py (no page faults on XLA:CPU's per-step
    # buffers; harmless elsewhere). No JAX call here: jax.distributed must start first.
    keep_host_memory_mapped()
    try:
        cfg = config_from_flags()
        if cfg.make_synthetic_data:
            from deepae_jax.data.datasets import synthetic
            synthetic.ensure_dataset(cfg.path_to_train_data, cfg.path_to_eval_data)
        if cfg.mode == "train":
            trainer.train_and_evaluate(cfg)
        elif cfg.mode == "evaluate":
            inference.run_evaluate(cfg)
        elif cfg.mode == "recommend":
            from deepae_jax.cli import recommend_run
            recommend_run.run_recommend(cfg)
        else:
            inference.run_infer(cfg)
    except (config_lib.ConfigError, RatingsFormatError, CheckpointError, TrainingDivergedError,
            OSError, ValueError) as e:  # OSError: e.g. disk full (the message names the file)
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def run():
    """Console-script entry point."""
    app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
    run()
