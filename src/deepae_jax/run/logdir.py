"""A log directory belongs to ONE run: its lock, its ownership rules and its run id.

* Lock: a training run holds an exclusive ``fcntl.flock`` on ``LOGDIR/.lock`` for its whole
  life; a second trainer on the same directory is refused. The OS releases the lock when the
  process ends in any way (kill included), so a lock file left by a dead process never blocks.
* Ownership: without ``--resume`` a directory holding another run's files (checkpoints,
  ``vocab.npz``, ``metrics.jsonl``, ``config.json``, TensorBoard events) is refused, unless
  ``--overwrite`` removes them first. With ``--resume`` the run continues from the newest
  checkpoint that loads (damaged newer ones are renamed ``*.corrupt``) under the same run id,
  and ``metrics.jsonl`` rows of later epochs are dropped.
* Temp files a killed writer left (``.NAME.RANDOM.tmp``) are removed when a run starts.
"""
from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import re
import time
import uuid

from deepae_jax.run import files
from deepae_jax.run import checkpoint as ckpt
from deepae_jax.run.files import remove_temp_files
from deepae_jax.run.log import drop_epochs_after
from deepae_jax.run.run_config import load_run_config

log = logging.getLogger("deepae_jax")

_ARTEFACT = re.compile(r"^(checkpoint_\d+\.msgpack(\.corrupt)?|best\.msgpack|"
                       r"events\.out\.tfevents\..*)$")
_ARTEFACT_NAMES = (files.VOCAB_FILE, files.METRICS_FILE, files.CONFIG_FILE, files.BASELINE_FILE,
                   files.BEST_INFO_FILE, files.SUMMARY_FILE)


class LogdirError(ValueError):
    """A log directory this run may not use (in use, or holding another run); names it."""


def new_run_id() -> str:
    """A unique id of a run: its UTC start time and a random suffix, e.g.
    ``20260102T030405Z-1a2b3c4d5e6f``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:12]


def run_artefacts(logdir: str) -> list[str]:
    """The names of the files in ``logdir`` that belong to a training run, sorted."""
    if not os.path.isdir(logdir):
        return []
    return sorted(f for f in os.listdir(logdir)
                  if f in _ARTEFACT_NAMES or _ARTEFACT.match(f))


class LogdirLock:
    """An exclusive flock on ``logdir/.lock``; :meth:`release` (or process exit) frees it."""

    def __init__(self, logdir: str):
        os.makedirs(logdir, exist_ok=True)
        self.path = os.path.join(logdir, files.LOCK_FILE)
        self._fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "unknown"
            self._fh.close()
            raise LogdirError(f"--logdir={logdir!r} is in use by another training run "
                              f"(process {holder}); wait for it to end or choose another "
                              "--logdir") from None
        self._fh.truncate(0)
        self._fh.write(f"{os.getpid()}\n")
        self._fh.flush()

    def release(self) -> None:
        if not self._fh.closed:
            self._fh.close()  # closing the file releases the flock


@dataclasses.dataclass
class Run:
    """A started run: its id, the checkpoint it resumes from (path, payload) or None, and the
    lock it holds (None in processes that write nothing)."""

    run_id: str
    resume_from: tuple[str, dict] | None
    lock: LogdirLock | None

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def _refuse_or_clear(logdir: str, overwrite: bool) -> None:
    found = run_artefacts(logdir)
    if not found:
        return
    if not overwrite:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise LogdirError(f"--logdir={logdir!r} holds the files of another run ({shown}): "
                          "continue that run with --resume, remove its files with --overwrite, "
                          "or choose another --logdir")
    for name in found:
        os.unlink(os.path.join(logdir, name))
    log.warning("--overwrite: removed %d files of the previous run in %s", len(found), logdir)


def _resume_point(logdir: str) -> tuple[str, dict] | None:
    """The newest checkpoint that loads; newer damaged ones are renamed ``*.corrupt``."""
    found = ckpt.latest_valid_checkpoint(logdir)
    good_epoch = int(found[1]["epoch"]) if found else -1
    for epoch, path in ckpt.list_checkpoints(logdir):
        if found and path != found[0] and epoch > good_epoch:
            os.replace(path, path + ".corrupt")
            log.warning("warning: renamed the damaged %s to %s.corrupt", path, path)
    return found


def open_run(logdir: str, resume: bool, overwrite: bool, writer: bool = True) -> Run:
    """Starts a training run in ``logdir``: takes the lock, removes stale temp files, applies
    the ownership rules (module docstring) and picks the run id. ``writer=False`` (processes of
    a multi-host run other than process 0): no lock and no changes, only the resume point."""
    if not writer:
        found = ckpt.latest_valid_checkpoint(logdir) if resume else None
        return Run("", found, None)
    lock = LogdirLock(logdir)
    try:
        for path in remove_temp_files(logdir):
            log.info("removed %s (left by an interrupted write)", path)
        found = None
        if resume:
            found = _resume_point(logdir)
            if found is None and ckpt.list_checkpoints(logdir) and not overwrite:
                raise LogdirError(f"--logdir={logdir!r}: no checkpoint there loads; nothing "
                                  "to resume (--overwrite starts again)")
            if found is None:
                log.info("%s: no checkpoint to resume; training from the start", logdir)
                if overwrite:
                    _refuse_or_clear(logdir, overwrite=True)
            drop_epochs_after(logdir, int(found[1]["epoch"]) if found else 0)
        else:
            _refuse_or_clear(logdir, overwrite)
        run_id = _stored_run_id(logdir, found) if found else new_run_id()
        return Run(run_id, found, lock)
    except BaseException:
        lock.release()
        raise


def _stored_run_id(logdir: str, found: tuple[str, dict]) -> str:
    """The id of the run a checkpoint belongs to (config.json's for old checkpoints)."""
    run_id = found[1]["meta"].get("run_id")
    if not run_id:
        run_id = (load_run_config(logdir) or {}).get("run_id") or new_run_id()
    return str(run_id)
