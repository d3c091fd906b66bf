"""Checkpoints: msgpack (flax.serialization, no pickle), written atomically, one file per epoch.

A checkpoint holds the :class:`~deepae_jax.train.TrainState` (parameters, optimiser state,
iteration count, rng), the number of finished epochs, and the run's metadata (architecture,
optimiser, data shape), which is checked on restore so that a checkpoint of another architecture
fails with a clear message. The id maps live beside the checkpoints in ``vocab.npz``.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any

import flax.serialization
import jax
import numpy as np

from deepae_jax.io_utils import atomic_write

_NAME = re.compile(r"^checkpoint_(\d+)\.msgpack$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


def checkpoint_path(directory: str, epoch: int) -> str:
    return os.path.join(directory, f"checkpoint_{epoch:05d}.msgpack")


def save_checkpoint(directory: str, state: Any, epoch: int, meta: dict) -> str:
    """Writes ``state`` after ``epoch`` finished epochs; returns the file's path."""
    payload = {"state": flax.serialization.to_state_dict(jax.device_get(state)),
               "epoch": int(epoch), "meta": json.dumps(meta, sort_keys=True)}
    path = checkpoint_path(directory, epoch)
    data = flax.serialization.msgpack_serialize(payload)
    atomic_write(path, lambda fh: fh.write(data))
    return path


def latest_checkpoint(directory: str) -> str | None:
    """The checkpoint with the most finished epochs in ``directory``, or None."""
    if not os.path.isdir(directory):
        return None
    found = [(int(m.group(1)), f) for f in os.listdir(directory) if (m := _NAME.match(f))]
    return os.path.join(directory, max(found)[1]) if found else None


def read_checkpoint(path: str) -> dict:
    """The raw payload {"state", "epoch", "meta"} of a checkpoint file."""
    try:
        with open(path, "rb") as fh:
            payload = flax.serialization.msgpack_restore(fh.read())
        payload["meta"] = json.loads(payload["meta"])
        return payload
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except Exception as e:  # msgpack raises several unrelated types on damaged files
        raise CheckpointError(f"{path}: not a readable deepae_jax checkpoint ({e})") from None


def _shapes(tree) -> list:
    return [tuple(np.shape(x)) for x in jax.tree_util.tree_leaves(tree)]


ARCHITECTURE_KEYS = ("layer_sizes", "constrained")
OPTIMIZER_KEYS = ("optimizer", "weight_decay_on")


def _check_meta(path: str, stored: dict, meta: dict | None, keys: tuple[str, ...]) -> None:
    for key in keys if meta is not None else ():
        if key in meta and stored.get(key) != meta[key]:
            what = ("a checkpoint from a different architecture" if key in ARCHITECTURE_KEYS
                    else "resume with the optimizer settings it was trained with")
            raise CheckpointError(f"{path}: checkpoint has {key}={stored.get(key)}, but the run "
                                  f"asks for {key}={meta[key]} ({what})")


def restore_checkpoint(path: str, target: Any, meta: dict | None = None,
                       check_keys: tuple[str, ...] = ARCHITECTURE_KEYS + OPTIMIZER_KEYS
                       ) -> tuple[Any, int, dict]:
    """Loads the whole training state of ``path`` into the structure of ``target``.

    Returns (state, epoch, stored meta). Raises CheckpointError when the stored architecture or
    optimiser differs from ``meta`` or the stored shapes differ from ``target``'s.
    """
    payload = read_checkpoint(path)
    stored = payload["meta"]
    _check_meta(path, stored, meta, check_keys)
    state = _from_state_dict(path, target, payload["state"])
    return state, int(payload["epoch"]), stored


def restore_params(path: str, target_params: Any, meta: dict | None = None) -> tuple[Any, dict]:
    """Loads only the model parameters of ``path`` (for evaluation, inference, export)."""
    payload = read_checkpoint(path)
    _check_meta(path, payload["meta"], meta, ARCHITECTURE_KEYS)
    return _from_state_dict(path, target_params, payload["state"]["params"]), payload["meta"]


def _from_state_dict(path: str, target: Any, state_dict: dict) -> Any:
    try:
        state = flax.serialization.from_state_dict(target, state_dict)
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: checkpoint does not fit the model ({e})") from None
    if _shapes(state) != _shapes(target):
        raise CheckpointError(f"{path}: parameter shapes differ from the model's "
                              "(a checkpoint from a different architecture)")
    return state


def save_vocab(directory: str, row_ids: np.ndarray, col_ids: np.ndarray, major: str) -> None:
    """The ORIGINAL ids of the rows and columns, needed to write predictions and recommendations."""
    def write(fh):
        np.savez(fh, row_ids=row_ids, col_ids=col_ids, major=np.asarray(major))
    atomic_write(os.path.join(directory, "vocab.npz"), write)


def load_vocab(directory: str) -> tuple[np.ndarray, np.ndarray, str]:
    path = os.path.join(directory, "vocab.npz")
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["row_ids"], z["col_ids"], str(z["major"])
    except FileNotFoundError:
        raise CheckpointError(f"no id maps ({path}) beside the checkpoints") from None
