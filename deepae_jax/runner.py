"""What ``main.py`` calls: train, evaluate and infer runs built from a :class:`Config`."""
from __future__ import annotations

import dataclasses
import logging
import time

import jax
import numpy as np
import scipy.sparse as sp

from deepae_jax import checkpoint as ckpt
from deepae_jax import eval_metrics as metrics_lib
from deepae_jax import logdir as logdir_lib
from deepae_jax import kernels, memory
from deepae_jax import parallel
from deepae_jax.config import Config
from deepae_jax.data import ratings
from deepae_jax.data.batching import dense_batches, num_batches
from deepae_jax.evaluate import EvalResult, evaluate, predict_eval_ratings
from deepae_jax.io_utils import atomic_write
from deepae_jax.run_config import ignored_flags, save_run_config
from deepae_jax.metrics import MetricsLogger, format_epoch_line
from deepae_jax.optim import learning_rate_at_epoch, make_optimizer
from deepae_jax.train import (ResidentEpochs, TrainingDivergedError, create_train_state,
                              jit_train_step, make_train_step, train_epoch)

log = logging.getLogger("deepae_jax")


@dataclasses.dataclass(frozen=True)
class Data:
    """The training matrix and, when given, the evaluation ratings aligned to it."""

    train: ratings.RatingMatrix
    eval: ratings.EvalSplit | None


def load_data(cfg: Config, vocab: tuple[np.ndarray, np.ndarray] | None = None) -> Data:
    """Loads ``--path_to_train_data`` (and ``--path_to_eval_data``) as PAPER.md prescribes.

    With ``vocab`` (a trained model's row and column ids) the training matrix is re-indexed to
    those ids, so that a model is always fed vectors in the layout it was trained on.
    """
    t0 = time.time()
    train = ratings.load_matrix(cfg.path_to_train_data, cfg.major, **table_options(cfg))
    if vocab is not None:
        train = reindex(train, *vocab)
    log.info("training data %s: %d %s x %d columns, %d ratings (%.2f s)",
             cfg.path_to_train_data, train.shape[0], cfg.major, train.shape[1], train.nnz,
             time.time() - t0)
    split = None
    if cfg.path_to_eval_data:
        triples = ratings.load_triples(cfg.path_to_eval_data, **table_options(cfg))
        split = ratings.align_eval(train, triples, source=cfg.path_to_eval_data)
        if split.nnz == 0:
            log.warning("warning: %s: no evaluation ratings of known rows (every rating is of a "
                        "%s or column unknown to the training data)", cfg.path_to_eval_data,
                        cfg.major[:-1])
        log.info("evaluation data %s: %d ratings of %d rows kept; dropped %d ratings of rows and "
                 "%d of columns unknown to training", cfg.path_to_eval_data, split.nnz,
                 len(split.rows), split.dropped_unknown_rows, split.dropped_unknown_cols)
    return Data(train, split)


def table_options(cfg: Config) -> dict:
    """The reading settings of ``cfg`` as keywords of load_matrix / load_triples."""
    return dataclasses.asdict(ratings.TableFormat.from_config(cfg))


def reindex(matrix: ratings.RatingMatrix, row_ids: np.ndarray, col_ids: np.ndarray
            ) -> ratings.RatingMatrix:
    """The same ratings laid out on the given id maps; ratings of other ids are dropped."""
    if np.array_equal(matrix.row_ids, row_ids) and np.array_equal(matrix.col_ids, col_ids):
        return matrix
    template = ratings.RatingMatrix(
        sp.csr_matrix((len(row_ids), len(col_ids)), dtype=np.float32), row_ids, col_ids,
        matrix.major)
    split = ratings.align_eval(template, matrix.to_triples(), source="training data")
    return dataclasses.replace(template, csr=split.csr)


def run_meta(cfg: Config, data: Data, extras: dict | None = None) -> dict:
    """What a checkpoint records about the run: the :class:`~deepae_jax.checkpoint.ModelSpec`
    (model, major, training rating range, ``extras``), the optimiser and the data shape."""
    values = data.train.csr.data
    spec = ckpt.ModelSpec(cfg.model_config(data.train.shape[1]), cfg.major,
                          (float(values.min()), float(values.max())) if values.size else None,
                          dict(extras or {}))
    return {**spec.to_meta(), "optimizer": cfg.optimizer,
            "weight_decay_on": cfg.weight_decay > 0, "n_rows": data.train.shape[0]}


def _begin_run(cfg: Config, data: Data, state, meta: dict, main: bool):
    """Takes ``--logdir`` for this run (lock, ownership, stale temp files: logdir.open_run),
    restores the resumed checkpoint and writes vocab.npz and config.json. Returns (run, state,
    start epoch, meta with the run id); the caller releases ``run`` when training ends."""
    run = logdir_lib.open_run(cfg.logdir, cfg.resume, cfg.overwrite, writer=main)
    try:
        meta = {**meta, "run_id": run.run_id} if run.run_id else meta
        start_epoch = 0
        if run.resume_from:
            path, payload = run.resume_from
            ckpt.check_resume_meta(path, payload["meta"], meta)
            vocab = ckpt.read_vocab(cfg.logdir)
            if not (np.array_equal(vocab["row_ids"], data.train.row_ids)
                    and np.array_equal(vocab["col_ids"], data.train.col_ids)):
                raise ckpt.CheckpointError(f"{cfg.logdir}: the checkpoints were trained on "
                                           "other data (row or column ids differ)")
            state, start_epoch, _ = ckpt.restore_checkpoint(path, state, meta, payload)
            log.info("resumed from %s after %d epochs (run %s)", path, start_epoch, run.run_id)
        if main:
            ckpt.save_vocab(cfg.logdir, data.train.row_ids, data.train.col_ids, cfg.major,
                            run.run_id)
            save_run_config(cfg.logdir, cfg, run.run_id)
        return run, state, start_epoch, meta
    except BaseException:
        run.release()
        raise


def _evaluate_split(params, model_cfg, cfg: Config, data: Data, par=None) -> EvalResult | None:
    if data.eval is None:
        return None
    run = par.evaluate if par else evaluate  # par: all devices (parallel.DataParallel)
    return run(params, model_cfg, data.train.csr, data.eval.csr, data.eval.rows,
               cfg.eval_batch_size)


def _training_path(cfg: Config, model_cfg, optimizer, train_csr, par, input_shift: float = 0.0):
    """(step_fn, epoch_batches) of ``--train_path``; ``epoch_batches(epoch)`` gives (the epoch's
    batches or multi-step calls, how many).

    The sparse paths keep the ratings on the devices (one or several, any number of processes)
    and gather the batches there (:class:`~deepae_jax.train.ResidentEpochs`); the dense path
    takes host-built dense batches, sharded over the devices with ``par``.
    """
    n_devices = par.num_devices if par else 1
    path = resolve_train_path(cfg.train_path, n_devices)
    log.info("training step: %s path (--train_path=%s) on %d %s device(s)", path,
             cfg.train_path, n_devices, jax.default_backend())
    step_kwargs = dict(path=path, dtype=cfg.dtype, noisy_target=cfg.noisy_refeed_target,
                       input_shift=input_shift)
    step = make_train_step(model_cfg, optimizer, cfg.refeed_steps, cfg.noise_prob,
                           **step_kwargs)
    n = num_batches(train_csr.shape[0], cfg.batch_size)
    if path == "dense" and par:
        step_fn = par.train_step(model_cfg, optimizer, cfg.refeed_steps, cfg.noise_prob,
                                 **step_kwargs)
        return step_fn, lambda epoch: (
            par.batches(train_csr, cfg.batch_size, cfg.seed, epoch, builder="dense"), n)
    if path == "dense":
        return jit_train_step(step), lambda epoch: (
            dense_batches(train_csr, cfg.batch_size, cfg.seed, epoch), n)
    if par:
        par.check_same_data(train_csr, cfg.seed)
    resident = ResidentEpochs(step, train_csr, cfg.batch_size, cfg.seed,
                              mesh=par.mesh if par else None)
    return resident.step_fn, lambda epoch: (resident.batches(epoch), resident.num_calls(epoch))


def resolve_train_path(requested: str, n_devices: int = 1) -> str:
    """``--train_path`` made explicit: ``auto`` is ``cpu_kernels`` where the kernels are built
    and the run is on one CPU device, else ``sparse``. Raises ValueError for ``cpu_kernels`` on
    several devices (the kernels are custom calls XLA cannot split across devices)."""
    if requested == "cpu_kernels" and n_devices > 1:
        raise ValueError(f"--train_path=cpu_kernels runs on one device, not {n_devices}; use "
                         "--train_path=sparse (or auto) for several devices")
    if requested != "auto":
        return requested
    on_cpu = jax.default_backend() == "cpu"
    return "cpu_kernels" if n_devices == 1 and on_cpu and kernels.available() else "sparse"


def train_and_evaluate(cfg: Config) -> dict:
    """Trains for ``--num_epochs`` (resuming from ``--logdir`` with ``--resume``); returns the
    last epoch's metrics. Writes checkpoints, ``vocab.npz``, ``metrics.jsonl`` and TensorBoard
    events to ``--logdir``."""
    par = parallel.setup_from_config(cfg)  # None: one device; else all devices, all processes
    main = parallel.is_main_process()  # only process 0 writes files and logs
    cfg = cfg if main else dataclasses.replace(cfg, progress=False)
    data = load_data(cfg)
    model_cfg = cfg.model_config(data.train.shape[1])
    n_rows = data.train.shape[0]
    steps_per_epoch = num_batches(n_rows, cfg.batch_size)
    if steps_per_epoch == 0:
        raise ValueError(f"--batch_size={cfg.batch_size}: larger than the {n_rows} training "
                         f"rows in {cfg.path_to_train_data}; no full batch to train on")
    optimizer = make_optimizer(cfg.optimizer, cfg.lr, cfg.weight_decay,
                               steps_per_epoch * (1 + cfg.refeed_steps))
    memory.check_fits(model_cfg, optimizer, cfg.optimizer)
    state = create_train_state(jax.random.PRNGKey(cfg.seed), model_cfg, optimizer)
    run, state, start_epoch, meta = _begin_run(cfg, data, state, run_meta(cfg, data), main)
    latest = run.resume_from[0] if run.resume_from else None
    state = par.replicate(state) if par else state
    if data.eval is not None and data.eval.nnz:
        mean = float(data.train.csr.data.mean())
        baseline = float(np.sqrt(np.mean((data.eval.csr.data - mean) ** 2)))
        log.info("baseline: predicting the global mean rating %.4f gives eval RMSE %.4f",
                 mean, baseline)

    step_fn, epoch_batches = _training_path(cfg, model_cfg, optimizer, data.train.csr, par)
    logger = MetricsLogger(cfg.logdir, enabled=main, run_id=run.run_id)
    last_good = latest if cfg.resume else None
    result: dict = {}
    try:
        for epoch in range(start_epoch, cfg.num_epochs):
            t0 = time.time()
            base_step = epoch * steps_per_epoch
            try:
                batches, n_calls = epoch_batches(epoch)
                state, losses = train_epoch(
                    state, step_fn, batches, n_calls, epoch, cfg.summary_frequency,
                    on_summary=lambda i, r: logger.scalar("train/rmse_recent", r, base_step + i),
                    progress=cfg.progress, desc=f"epoch {epoch + 1}/{cfg.num_epochs}")
            except TrainingDivergedError as e:
                raise TrainingDivergedError(
                    f"{e}; stopped. Last good checkpoint: {last_good or 'none written yet'}"
                ) from None
            jax.block_until_ready(state.params)
            epoch_time = time.time() - t0
            evaluation = _evaluate_split(state.params, model_cfg, cfg, data, par)
            extra = metrics_lib.evaluate_metrics(parallel.to_host(state.params) if par else
                                                 state.params, model_cfg, data, cfg,
                                                 evaluation) if cfg.metrics else {}
            result = {"epoch": epoch + 1, "train_rmse": float(np.sqrt(np.mean(losses))),
                      "eval_rmse": evaluation.rmse if evaluation else None,
                      "epoch_time_s": epoch_time,
                      "rows_per_s": steps_per_epoch * cfg.batch_size / max(epoch_time, 1e-9),
                      "lr": learning_rate_at_epoch(cfg.lr, cfg.optimizer, epoch),
                      **{f"eval_{k}": v for k, v in extra.items()}}
            if main:
                print(format_epoch_line(epoch, cfg.num_epochs,
                                        {**result, "row_name": cfg.major,
                                         "eval_metrics": metrics_lib.format_metrics(extra)}),
                      flush=True)
            logger.record("epoch", {k: v for k, v in result.items() if v is not None}, epoch + 1)
            if main and (epoch % cfg.save_every == 0 or epoch == cfg.num_epochs - 1):
                last_good = ckpt.save_checkpoint(cfg.logdir, parallel.to_host(state), epoch + 1,
                                                 meta)
    finally:
        logger.close()
        run.release()
    return result


def restore_for_inference(cfg: Config):
    """(Data laid out on the trained model's ids, model config, params) for evaluate/infer.

    The architecture and --major come from the checkpoint (checkpoint.restore); an
    architecture flag set to another value than the checkpoint's is ignored with a warning.
    """
    restored = ckpt.restore(cfg.logdir, cfg.save_path)
    for line in ignored_flags(cfg, restored.spec, restored.path):
        log.warning("warning: %s", line)
    data = load_data(dataclasses.replace(cfg, major=restored.major),
                     vocab=(restored.row_ids, restored.col_ids))
    return data, restored.model_cfg, restored.params


def run_evaluate(cfg: Config) -> EvalResult:
    """RMSE (and ``--metrics``) of a saved model on ``--path_to_eval_data``; the metrics also go
    to ``--metrics_path`` as one JSON object."""
    par = parallel.setup_from_config(cfg, train=False)
    data, model_cfg, params = restore_for_inference(cfg)
    result = _evaluate_split(params, model_cfg, cfg, data, par)
    extra = metrics_lib.evaluate_metrics(params, model_cfg, data, cfg, result)
    if parallel.is_main_process():
        if result.count == 0:
            print(f"evaluation RMSE n/a: no evaluation ratings of known rows in "
                  f"{cfg.path_to_eval_data}", flush=True)
        else:
            print(f"evaluation RMSE {result.rmse:.6f} over {result.count} ratings", flush=True)
        if extra:
            print(metrics_lib.format_metrics(extra), flush=True)
        if cfg.metrics_path:
            metrics_lib.write_metrics_json(cfg.metrics_path, {
                "rmse": result.rmse if result.count else None, "eval_ratings": result.count,
                **extra})
    return result


def run_infer(cfg: Config) -> int:
    """Writes ``user<TAB>item<TAB>prediction<TAB>actual`` (ORIGINAL ids) for every evaluation
    rating to ``--predictions_path``; returns the number of lines."""
    par = parallel.setup_from_config(cfg, train=False)
    data, model_cfg, params = restore_for_inference(cfg)
    predict = par.predict_eval_ratings if par else predict_eval_ratings
    chunks = []
    for rows, cols, pred, actual in predict(
            params, model_cfg, data.train.csr, data.eval.csr, data.eval.rows,
            cfg.eval_batch_size):
        r_ids, c_ids = data.train.row_ids[rows], data.train.col_ids[cols]
        users, items = (r_ids, c_ids) if data.train.major == "users" else (c_ids, r_ids)
        chunks.append("".join(f"{u}\t{i}\t{p:.6f}\t{a:g}\n"
                              for u, i, p, a in zip(users, items, pred, actual)))
    text = "".join(chunks)
    if not parallel.is_main_process():
        return text.count("\n")
    atomic_write(cfg.predictions_path, lambda fh: fh.write(text.encode()))
    lines = text.count("\n")
    print(f"wrote {lines} predictions to {cfg.predictions_path}", flush=True)
    return lines
