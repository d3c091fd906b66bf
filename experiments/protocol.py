"""One training run under the paper's protocol: train with ``trainer.train_and_evaluate``
(evaluating on VALID after every epoch, a checkpoint per epoch), select the epoch with the best
VALID RMSE, and score that checkpoint on TEST with ``inference.run_evaluate``. TEST never takes
part in the selection. Checkpoints other than the best so far and the latest are deleted while
training runs (a background thread), and all of them when the run is scored.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import io
import json
import math
import os
import re
import shutil
import struct
import threading
import time

from deepae_jax.core import memory, model
from deepae_jax.run import checkpoint as ckpt
from deepae_jax import inference
from deepae_jax.training import trainer
from deepae_jax.config import Config
from deepae_jax.core.step import TrainingDivergedError

from experiments.data import Split

RESULT = "result.json"
_CKPT = re.compile(r"^checkpoint_(\d+)\.msgpack$")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """A named setting: Config keyword arguments without data paths, logdir or seed."""

    name: str
    label: str
    settings: dict
    source: str = ""  # the flagfile(s) it came from


def count_params(n_inputs: int, hidden: tuple[int, ...], constrained: bool = False) -> int:
    """Parameters of the autoencoder n,h1..hk,...,n (PAPER.md's layout), from its shapes."""
    cfg = model.ModelConfig((n_inputs, *hidden), constrained=constrained)
    return model.count_params(memory.param_shapes(cfg))


def read_epochs(logdir: str) -> list[dict]:
    """The ``kind == "epoch"`` rows of ``logdir/metrics.jsonl``."""
    path = os.path.join(logdir, "metrics.jsonl")
    rows = []
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    row = json.loads(line)
                    if row.get("kind") == "epoch":
                        rows.append(row)
    return rows


def best_epoch(rows: list[dict]) -> dict | None:
    """The epoch row with the lowest finite VALID RMSE (the earliest on ties)."""
    good = [r for r in rows if r.get("eval_rmse") is not None and math.isfinite(r["eval_rmse"])]
    return min(good, key=lambda r: (r["eval_rmse"], r["epoch"])) if good else None


def read_scalars(logdir: str, tag: str = "train/rmse_recent") -> list[tuple[int, float]]:
    """(step, value) of a TensorBoard scalar from the event files in ``logdir``.

    The files are TFRecords of ``Event`` protos (tensorboardX's own proto classes decode them).
    """
    from tensorboardX.proto import event_pb2
    out = []
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        with open(path, "rb") as fh:
            data = fh.read()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            start = pos + 12
            if start + length + 4 > len(data):
                break
            event = event_pb2.Event.FromString(data[start:start + length])
            pos = start + length + 4
            for v in event.summary.value:
                if v.tag == tag:
                    out.append((int(event.step), float(v.simple_value)))
    return sorted(out)


def _checkpoints(logdir: str) -> dict[int, str]:
    if not os.path.isdir(logdir):
        return {}
    return {int(m.group(1)): os.path.join(logdir, f)
            for f in os.listdir(logdir) if (m := _CKPT.match(f))}


def prune_checkpoints(logdir: str, keep_latest: bool = True) -> None:
    """Deletes every checkpoint but the best-VALID epoch's (and the latest, for --resume)."""
    best = best_epoch(read_epochs(logdir))
    found = _checkpoints(logdir)
    keep = {best["epoch"]} if best else set()
    if keep_latest and found:
        keep.add(max(found))
    for epoch, path in found.items():
        if epoch not in keep:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


class _Pruner(threading.Thread):
    def __init__(self, logdir: str, period: float = 2.0):
        super().__init__(daemon=True)
        self.logdir, self.period, self.stop = logdir, period, threading.Event()

    def run(self):
        while not self.stop.wait(self.period):
            with contextlib.suppress(Exception):
                prune_checkpoints(self.logdir)


def run_one(spec: RunSpec, split: Split, run_dir: str, seed: int, reuse: bool = True,
            keep_checkpoint: bool = False, log=print) -> dict:
    """Trains ``spec`` on ``split`` in ``run_dir``, selects on VALID, scores on TEST.

    With ``reuse``, a finished run with the same settings and data in ``run_dir`` is not
    repeated (its ``result.json`` is returned), so that an interrupted suite can continue.
    """
    settings = dict(spec.settings, save_every=1, keep_checkpoints=0, progress=False)  # pruned here
    identity = {"settings": {k: list(v) if isinstance(v, tuple) else v
                             for k, v in sorted(settings.items())},
                "train": split.train, "valid": split.valid, "test": split.test, "seed": seed}
    result_path = os.path.join(run_dir, RESULT)
    if reuse and os.path.isfile(result_path):
        with open(result_path, encoding="utf-8") as fh:
            old = json.load(fh)
        if old.get("identity") == identity:
            log(f"  {spec.name}: reusing the finished run in {run_dir}")
            return dict(old, reused=True)
    if os.path.isdir(run_dir):
        shutil.rmtree(run_dir)
    os.makedirs(run_dir)
    cfg = Config(path_to_train_data=split.train, path_to_eval_data=split.valid, logdir=run_dir,
                 seed=seed, **settings)
    pruner = _Pruner(run_dir)
    pruner.start()
    t0 = time.time()
    diverged = None
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            trainer.train_and_evaluate(cfg)
    except TrainingDivergedError as e:
        diverged = str(e).split("; stopped")[0]
    finally:
        pruner.stop.set()
        pruner.join()
    train_s = time.time() - t0
    epochs = read_epochs(run_dir)
    best = best_epoch(epochs)
    test = None
    if best is not None and split.test:
        path = ckpt.checkpoint_path(run_dir, best["epoch"])
        eval_cfg = dataclasses.replace(cfg, mode="evaluate", path_to_eval_data=split.test,
                                       save_path=path)
        with contextlib.redirect_stdout(io.StringIO()):
            res = inference.run_evaluate(eval_cfg)
        test = {"rmse": res.rmse, "count": res.count}
    for epoch, path in _checkpoints(run_dir).items():
        if not (keep_checkpoint and best and epoch == best["epoch"]):
            os.remove(path)
    vocab = ckpt.load_vocab(run_dir)
    n_inputs = len(vocab[1])
    last = epochs[-1] if epochs else {}
    result = {
        "name": spec.name, "label": spec.label, "source": spec.source, "identity": identity,
        "n_params": count_params(n_inputs, tuple(settings["hidden_layers"]),
                                 settings.get("constrained", False)),
        "n_rows": len(vocab[0]), "n_inputs": n_inputs,
        "epochs_run": len(epochs), "diverged": diverged,
        "best_epoch": best["epoch"] if best else None,
        "best_valid_rmse": best["eval_rmse"] if best else None,
        "train_rmse_at_best": best["train_rmse"] if best else None,
        "test_rmse": test["rmse"] if test else None,
        "test_count": test["count"] if test else None,
        "last_train_rmse": last.get("train_rmse"), "last_valid_rmse": last.get("eval_rmse"),
        "train_wall_s": train_s, "wall_s": time.time() - t0,
        "epochs": [{k: r.get(k) for k in ("epoch", "train_rmse", "eval_rmse", "lr",
                                          "epoch_time_s")} for r in epochs],
        "train_curve": read_scalars(run_dir),
    }
    with open(result_path, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    msg = (f"best VALID {result['best_valid_rmse']:.4f} @ epoch {result['best_epoch']}, "
           f"TEST {result['test_rmse']:.4f}" if best and test else "no finite VALID RMSE")
    log(f"  {spec.name}: {msg}{' (diverged: ' + diverged + ')' if diverged else ''} "
        f"[{result['wall_s']:.0f} s]")
    return result
