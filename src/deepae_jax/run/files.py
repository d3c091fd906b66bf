"""Crash-safe file output (write to a temporary file in the target's folder, then rename) and
the name of every file a run's folder holds."""
from __future__ import annotations

import errno
import os
import re
import tempfile
from typing import BinaryIO, Callable

TEMP_NAME = re.compile(r"^\..+\.tmp$")
"""Names of :func:`atomic_write`'s temporary files (``.NAME.RANDOM.tmp``)."""

# What a run's folder (--logdir) holds, named once.
CONFIG_FILE = "config.json"  # the run's settings (deepae_jax.run.run_config)
METRICS_FILE = "metrics.jsonl"  # one row per epoch (deepae_jax.run.log)
VOCAB_FILE = "vocab.npz"  # the original row and column ids (deepae_jax.run.checkpoint)
BASELINE_FILE = "baseline.npz"  # the baseline the model learned residuals of
BEST_FILE = "best.msgpack"  # the best epoch's checkpoint (deepae_jax.training.selection)
BEST_INFO_FILE = "best.json"  # which epoch that is, and its validation score
SUMMARY_FILE = "summary.json"  # the run's outcome: best epoch, TEST scores
CURVES_FILE = "curves.png"  # learning curves drawn at the end (deepae_jax.run.curves)
REPORT_FILE = "report.md"  # the run in words, written at the end (deepae_jax.training.report)
LOCK_FILE = ".lock"  # held by the process that writes the folder (deepae_jax.run.logdir)
REFIT_DIR = "refit"  # the --refit run on TRAIN + VALID (deepae_jax.training.refit)
TRAIN_VALID_FILE = "train_valid.npz"  # that run's training ratings
CHECKPOINT_NAME = re.compile(r"^checkpoint_(\d+)\.msgpack$")  # one per saved epoch


class OutputError(OSError):
    """A file that could not be written (disk full, permissions, ...); the message names it."""

    def __init__(self, path: str, cause: OSError):
        super().__init__(describe_os_error(path, cause))
        self.path, self.cause = path, cause  # (setting errno would change str(self))


def _umask() -> int:
    """The process's umask, read without changing it where Linux reports it (setting it, the
    fallback, briefly affects files other threads create)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def describe_os_error(path: str, e: OSError) -> str:
    """``PATH: cannot write (no space left on device)``: an OSError in words, naming the file."""
    why = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
    return f"{path}: cannot write ({why})"


def atomic_write(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Calls ``write(fh)`` on a temp file beside ``path`` and renames it to ``path``.

    A crash or kill mid-write leaves any previous ``path`` untouched and no partial file under
    the final name (a kill can leave the temp file; :func:`remove_temp_files` removes it). The
    file gets the usual permissions (0666 minus the umask), not mkstemp's 0600. An OSError
    (e.g. disk full) is raised as :class:`OutputError` naming ``path``.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                                   suffix=".tmp")
    except OSError as e:
        raise OutputError(path, e) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and not isinstance(e, OutputError):
            raise OutputError(path, e) from None
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def remove_temp_files(folder: str) -> list[str]:
    """Removes the temp files a killed :func:`atomic_write` left in ``folder``; returns their
    paths. Call it only while no other process writes there (e.g. holding the logdir lock)."""
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if TEMP_NAME.match(name) and os.path.isfile(path):
            os.unlink(path)
            removed.append(path)
    return removed
