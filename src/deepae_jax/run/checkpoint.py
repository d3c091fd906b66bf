"""Checkpoints: msgpack (flax.serialization, no pickle), checksummed, written atomically, one file
per epoch.

A checkpoint holds the :class:`~deepae_jax.core.step.TrainState` (parameters, optimiser state,
iteration count, rng), the number of finished epochs, and the run's metadata: its run id, the
optimiser, and the :class:`ModelSpec` (everything that decides the function the parameters
compute: the full ModelConfig, the row major, the training ratings' range, and ``extras`` for
later options such as fitted baselines). File layout: a msgpack map ``{"format": 2, "sha256":
HEX, "body": BYTES}`` whose body is the msgpack payload ``{"state", "epoch", "meta"}``; flipped
or zeroed bytes fail the checksum. Files without a checksum (older versions) are still read.

The id maps live beside the checkpoints in ``vocab.npz`` (with the run id). :func:`restore`
is the one way from a checkpoint (file or log directory) to what inference needs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from typing import Any

import flax.serialization
import jax
import numpy as np

from deepae_jax.run import files
from deepae_jax.core import model
from deepae_jax.run.files import OutputError, atomic_write

log = logging.getLogger("deepae_jax")

FORMAT = 2


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


def checkpoint_path(directory: str, epoch: int) -> str:
    return os.path.join(directory, f"checkpoint_{epoch:05d}.msgpack")


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    """(epoch, path) of every checkpoint file in ``directory``, oldest first (not validated)."""
    if not os.path.isdir(directory):
        return []
    found = [(int(m.group(1)), os.path.join(directory, f))
             for f in os.listdir(directory) if (m := files.CHECKPOINT_NAME.match(f))]
    return sorted(found)


def keep_latest(directory: str, keep: int) -> list[str]:
    """Removes all but the ``keep`` newest numbered checkpoints (0: keeps every one); call it
    after a save, which is complete (renamed) by then. ``best.msgpack`` is not a numbered
    checkpoint: the best epoch is always kept. Returns the removed paths."""
    found = list_checkpoints(directory)
    removed = [path for _, path in found[:-keep]] if keep > 0 else []
    for path in removed:
        os.unlink(path)
    return removed


def latest_checkpoint(directory: str) -> str | None:
    """The checkpoint file with the most finished epochs in ``directory`` (by name), or None."""
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def encode_checkpoint(state: Any, epoch: int, meta: dict) -> bytes:
    """The bytes of a checkpoint file: the payload and its sha256 (see the module docstring)."""
    payload = {"state": flax.serialization.to_state_dict(jax.device_get(state)),
               "epoch": int(epoch), "meta": json.dumps(meta, sort_keys=True)}
    body = flax.serialization.msgpack_serialize(payload)
    return flax.serialization.msgpack_serialize(
        {"format": FORMAT, "sha256": hashlib.sha256(body).hexdigest(), "body": body})


def save_checkpoint(directory: str, state: Any, epoch: int, meta: dict) -> str:
    """Writes ``state`` after ``epoch`` finished epochs; returns the file's path. A failed write
    (e.g. disk full) raises CheckpointError naming the file and leaves no partial file."""
    path = checkpoint_path(directory, epoch)
    data = encode_checkpoint(state, epoch, meta)
    try:
        atomic_write(path, lambda fh: fh.write(data))
    except OutputError as e:
        raise CheckpointError(f"{e}; the previous checkpoints are kept") from None
    return path


def decode_checkpoint(path: str, raw: bytes) -> dict:
    """The payload {"state", "epoch", "meta" (a dict)} of a checkpoint file's bytes; raises
    CheckpointError (naming ``path``) on a damaged file or a wrong checksum."""
    try:
        outer = flax.serialization.msgpack_restore(raw)
        if isinstance(outer, dict) and "sha256" in outer:
            body = outer["body"]
            if hashlib.sha256(body).hexdigest() != outer["sha256"]:
                raise CheckpointError(f"{path}: checksum mismatch (the file is damaged)")
            outer = flax.serialization.msgpack_restore(body)
        payload = {"state": outer["state"], "epoch": int(outer["epoch"]),
                   "meta": json.loads(outer["meta"])}
    except CheckpointError:
        raise
    except Exception as e:  # msgpack raises several unrelated types on damaged files
        raise CheckpointError(f"{path}: not a readable deepae_jax checkpoint ({e})") from None
    if not isinstance(payload["meta"], dict) or "params" not in payload["state"]:
        raise CheckpointError(f"{path}: not a deepae_jax checkpoint (no parameters or metadata)")
    return payload


def read_checkpoint(path: str) -> dict:
    """The verified payload {"state", "epoch", "meta"} of a checkpoint file."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({e.strerror})") from None
    return decode_checkpoint(path, raw)


def latest_valid_checkpoint(directory: str) -> tuple[str, dict] | None:
    """(path, payload) of the newest checkpoint in ``directory`` that loads, or None; every
    newer one that does not load is named in a warning (and skipped)."""
    for _, path in reversed(list_checkpoints(directory)):
        try:
            return path, read_checkpoint(path)
        except CheckpointError as e:
            log.warning("warning: skipping a damaged checkpoint: %s", e)
    return None


# ---- what the parameters compute ------------------------------------------------------------

_FLAG_OF = {"layer_sizes": "hidden_layers", "activation": "non_linearity_type",
            "drop_prob": "drop_prob", "constrained": "constrained",
            "last_layer_linear": "skip_last_layer_nl", "major": "major", "optimizer": "optimizer",
            "weight_decay_on": "weight_decay"}


def flag_of(key: str) -> str:
    """The command-line flag that sets a stored model or optimiser field."""
    return _FLAG_OF.get(key, key)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything a checkpoint needs to compute what it was trained to compute.

    ``model``: the full ModelConfig; ``major``: rows are users or items; ``rating_range``:
    (min, max) of the training ratings (None in old checkpoints); ``extras``: JSON-ready values
    of later options that change the function (e.g. a fitted rating baseline), by option name.
    """

    model: model.ModelConfig
    major: str = "users"
    rating_range: tuple[float, float] | None = None
    extras: dict = dataclasses.field(default_factory=dict)

    def to_meta(self) -> dict:
        """The checkpoint metadata entries (plus the flat keys older readers look up)."""
        m = dataclasses.asdict(self.model)
        m["layer_sizes"] = [int(s) for s in m["layer_sizes"]]
        return {"model": m, "major": self.major, "extras": dict(self.extras),
                "rating_range": list(self.rating_range) if self.rating_range else None,
                **{k: m[k] for k in ("layer_sizes", "constrained", "activation",
                                     "last_layer_linear", "drop_prob")}}

    @classmethod
    def from_meta(cls, path: str, meta: dict) -> "ModelSpec":
        """The spec a checkpoint's metadata records; old checkpoints (flat keys, no "model")
        are read too. Raises CheckpointError when the architecture is not recorded."""
        stored = meta.get("model") or {k: meta[k] for k in (
            "layer_sizes", "activation", "drop_prob", "constrained", "last_layer_linear")
            if k in meta}
        known = {f.name for f in dataclasses.fields(model.ModelConfig)}
        unknown = sorted(set(stored) - known)
        if unknown:
            raise CheckpointError(f"{path}: the checkpoint's model has settings this version "
                                  f"does not know ({', '.join(unknown)}); use a newer deepae_jax")
        try:
            cfg = model.ModelConfig(**{**stored, "layer_sizes": tuple(
                int(s) for s in stored["layer_sizes"])})
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: the checkpoint does not record its architecture "
                                  f"({e})") from None
        rng = meta.get("rating_range")
        return cls(cfg, str(meta.get("major", "users")),
                   (float(rng[0]), float(rng[1])) if rng else None, dict(meta.get("extras") or {}))


def check_resume_meta(path: str, stored: dict, meta: dict) -> None:
    """Raises CheckpointError naming the flag and both values when the run asks for another
    model, row major or optimiser than ``path`` was trained with."""
    have = {**stored.get("model", {}), **{k: stored.get(k) for k in (
        "major", "optimizer", "weight_decay_on", "layer_sizes", "constrained", "activation",
        "last_layer_linear", "drop_prob") if k in stored}}
    want = {**meta.get("model", {}), **{k: v for k, v in meta.items() if k in have}}
    first = ("major", "optimizer", "weight_decay_on", "activation", "last_layer_linear",
             "drop_prob", "constrained", "layer_sizes")  # the flags a user sets come first
    common = set(have) & set(want)
    for key in [k for k in first if k in common] + sorted(common - set(first)):
        if list(np.atleast_1d(have[key])) != list(np.atleast_1d(want[key])):
            what = ("a checkpoint from a different architecture" if key in
                    ("layer_sizes", "constrained") else "resume with the settings it was "
                    "trained with, or train into a new --logdir")
            name = key if key == "layer_sizes" else f"--{flag_of(key)}"
            raise CheckpointError(f"{path}: checkpoint was trained with {name}={have[key]}, "
                                  f"but the run asks for {name}={want[key]} ({what})")


# ---- restoring -------------------------------------------------------------------------------

def _shapes(tree) -> list:
    return [tuple(getattr(x, "shape", np.shape(x))) for x in jax.tree_util.tree_leaves(tree)]


def _from_state_dict(path: str, target: Any, state_dict: dict) -> Any:
    try:
        state = flax.serialization.from_state_dict(target, state_dict)
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: checkpoint does not fit the model ({e})") from None
    if _shapes(state) != _shapes(target):
        raise CheckpointError(f"{path}: parameter shapes differ from the model's "
                              "(a checkpoint from a different architecture)")
    return state


def restore_checkpoint(path: str, target: Any, meta: dict | None = None,
                       payload: dict | None = None) -> tuple[Any, int, dict]:
    """Loads the whole training state of ``path`` (or its already read ``payload``) into the
    structure of ``target``, for resuming. Returns (state, epoch, stored meta). Raises
    CheckpointError when the stored model or optimiser differs from ``meta``
    (:func:`check_resume_meta`) or the stored shapes differ from ``target``'s."""
    payload = payload or read_checkpoint(path)
    stored = payload["meta"]
    if meta is not None:
        check_resume_meta(path, stored, meta)
    state = _from_state_dict(path, target, payload["state"])
    return state, int(payload["epoch"]), stored


def params_target(model_cfg: model.ModelConfig) -> Any:
    """The parameter tree's structure and shapes (nothing allocated)."""
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), model_cfg.layer_sizes,
                                             model_cfg.constrained))


def save_vocab(directory: str, row_ids: np.ndarray, col_ids: np.ndarray, major: str,
               run_id: str = "") -> None:
    """The ORIGINAL ids of the rows and columns, needed to write predictions and recommendations,
    and the id of the run that wrote them."""
    def write(fh):
        np.savez(fh, row_ids=row_ids, col_ids=col_ids, major=np.asarray(major),
                 run_id=np.asarray(run_id))
    try:
        atomic_write(os.path.join(directory, files.VOCAB_FILE), write)
    except OutputError as e:
        raise CheckpointError(str(e)) from None


def read_vocab(directory: str) -> dict:
    """{"row_ids", "col_ids", "major", "run_id" ("" in old files)} of ``directory/vocab.npz``."""
    path = os.path.join(directory, files.VOCAB_FILE)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {"row_ids": z["row_ids"], "col_ids": z["col_ids"], "major": str(z["major"]),
                    "run_id": str(z["run_id"]) if "run_id" in z.files else ""}
    except FileNotFoundError:
        raise CheckpointError(f"no id maps ({path}) beside the checkpoints") from None
    except Exception as e:  # a damaged zip raises several types
        raise CheckpointError(f"{path}: not readable id maps ({e})") from None


def load_vocab(directory: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(row ids, column ids, major) of ``directory/vocab.npz``."""
    v = read_vocab(directory)
    return v["row_ids"], v["col_ids"], v["major"]


@dataclasses.dataclass(frozen=True)
class Restored:
    """A trained model as inference needs it: parameters, what they compute, the id maps, and
    where they came from (checkpoint path, finished epochs, metadata, run id, config.json)."""

    params: Any
    spec: ModelSpec
    row_ids: np.ndarray
    col_ids: np.ndarray
    path: str
    epoch: int
    meta: dict
    run_config: dict | None

    @property
    def model_cfg(self) -> model.ModelConfig:
        return self.spec.model

    @property
    def major(self) -> str:
        return self.spec.major

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id", ""))




def _pick(source: str, save_path: str) -> tuple[str, dict]:
    """The file inference uses: ``save_path`` or a file ``source``; else, in the log directory
    ``source``, the best epoch's checkpoint when training kept one (and it loads), else the
    newest checkpoint that loads."""
    explicit = save_path or (source if os.path.isfile(source) else "")
    if explicit:
        return explicit, read_checkpoint(explicit)
    best = os.path.join(source, files.BEST_FILE)
    if os.path.isfile(best):
        try:
            return best, read_checkpoint(best)
        except CheckpointError as e:
            log.warning("warning: skipping a damaged best checkpoint: %s", e)
    found = latest_valid_checkpoint(source)
    if found is None:
        what = "no checkpoint that loads" if list_checkpoints(source) else "no checkpoint"
        raise CheckpointError(f"{what} in {source!r}; train first or name one with --save_path")
    return found


def restore(source: str, save_path: str = "") -> Restored:
    """The one restore for evaluate, infer, recommend, export and serve.

    ``source``: a checkpoint file or a log directory (its best epoch's checkpoint when training
    kept one, else its newest checkpoint that loads: damaged ones are skipped with a warning);
    ``save_path``, when given, names the file instead.
    The architecture comes from the checkpoint; ``vocab.npz`` beside it must be of the same run
    (same run id, when both record one) and fit the model's input width.
    """
    from deepae_jax.run.run_config import load_run_config
    path, payload = _pick(source, save_path)
    folder = os.path.dirname(os.path.abspath(path))
    meta = payload["meta"]
    spec = ModelSpec.from_meta(path, meta)
    vocab = read_vocab(folder)
    if vocab["run_id"] and meta.get("run_id") and vocab["run_id"] != meta["run_id"]:
        raise CheckpointError(f"{path}: the checkpoint is of run {meta['run_id']} but "
                              f"{os.path.join(folder, files.VOCAB_FILE)} of run {vocab['run_id']}: "
                              "the id maps belong to another run")
    if len(vocab["col_ids"]) != spec.model.layer_sizes[0]:
        raise CheckpointError(f"{path}: the model has {spec.model.layer_sizes[0]} inputs but "
                              f"{os.path.join(folder, files.VOCAB_FILE)} has {len(vocab['col_ids'])} "
                              "column ids (id maps of another run)")
    if "major" not in meta:
        spec = dataclasses.replace(spec, major=vocab["major"])
    elif vocab["major"] != spec.major:
        raise CheckpointError(f"{path}: the checkpoint's rows are {spec.major} but "
                              f"{os.path.join(folder, files.VOCAB_FILE)} is of {vocab['major']} "
                              "(id maps of another run)")
    params = _from_state_dict(path, params_target(spec.model), payload["state"]["params"])
    try:
        run_config = load_run_config(folder)
    except ValueError as e:
        log.warning("warning: %s", e)
        run_config = None
    return Restored(params, spec, vocab["row_ids"], vocab["col_ids"], path,
                    int(payload["epoch"]), meta, run_config)
