"""A run's settings beside its checkpoints: ``config.json`` in ``--logdir``.

Training writes it (:func:`save_run_config`) so that tools that only get the log directory (the
recommender, the JSON service, export) can find the data the model was trained on.
"""
from __future__ import annotations

import dataclasses
import json
import os

from deepae_jax.run import files
from deepae_jax.run.files import atomic_write_text

_PATH_FIELDS = ("path_to_train_data", "path_to_eval_data", "logdir", "save_path",
                "predictions_path")


def save_run_config(logdir: str, cfg, run_id: str = "") -> str:
    """Writes every field of ``cfg`` (a :class:`~deepae_jax.config.Config`) and the run's id to
    ``logdir/config.json``, atomically; non-empty paths are made absolute so that the file works
    from any working directory. Returns the file's path."""
    values = dataclasses.asdict(cfg)
    if run_id:
        values["run_id"] = run_id
    for name in _PATH_FIELDS:
        if values.get(name):
            values[name] = os.path.abspath(values[name])
    path = os.path.join(logdir, files.CONFIG_FILE)
    atomic_write_text(path, json.dumps(values, indent=2, sort_keys=True) + "\n")
    return path


def load_run_config(logdir: str) -> dict | None:
    """The settings saved by :func:`save_run_config` as a dict, or None when ``logdir`` has none.

    A dict rather than a Config: the file may come from another version with other fields.
    Raises ValueError when the file exists but is not a JSON object.
    """
    path = os.path.join(logdir, files.CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            values = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable run configuration ({e})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: not a run configuration (expected a JSON object)")
    return values


def ignored_flags(cfg, spec, path: str) -> list[str]:
    """Inference takes the architecture from the checkpoint: one line per architecture flag of
    ``cfg`` that was set (differs from its default) to another value than the checkpoint's
    ``spec`` (a :class:`~deepae_jax.run.checkpoint.ModelSpec`) records, saying it is ignored."""
    from deepae_jax.config import defaults
    default = defaults()
    stored = {"hidden_layers": tuple(spec.model.layer_sizes[1:]),
              "non_linearity_type": spec.model.activation, "drop_prob": spec.model.drop_prob,
              "constrained": spec.model.constrained,
              "skip_last_layer_nl": spec.model.last_layer_linear, "major": spec.major}
    return [f"--{flag}={getattr(cfg, flag)!r} ignored: {path} was trained with "
            f"--{flag}={value!r} (inference uses the checkpoint's architecture)"
            for flag, value in stored.items()
            if getattr(cfg, flag) != value and getattr(cfg, flag) != getattr(default, flag)]
