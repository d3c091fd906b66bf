"""Training runs built from a :class:`Config` (what ``--mode=train`` calls); evaluate, infer and
the other uses of a trained model are in :mod:`deepae_jax.inference`."""
from __future__ import annotations

import dataclasses
import logging
import time

import jax
import numpy as np

from deepae_jax import baseline as baseline_lib
from deepae_jax.run import checkpoint as ckpt
from deepae_jax.evaluation import metrics as metrics_lib
from deepae_jax.run import logdir as logdir_lib
from deepae_jax import devices
from deepae_jax.core import memory
from deepae_jax.training import backend, parallel
from deepae_jax.evaluation import blend, predictions
from deepae_jax.training import refit, report, selection
from deepae_jax.training.run_data import (Data, centre, evaluate_split, load_data, load_targets,
                                          run_meta, uses_predictions)
from deepae_jax.config import Config
from deepae_jax.data.batching import dense_batches, num_batches
from deepae_jax.run.run_config import save_run_config
from deepae_jax.run.log import (MetricsLogger, compiled_since, format_epoch_line, results,
                                watch_compilations)
from deepae_jax.core.optim import learning_rate_at_epoch, make_optimizer
from deepae_jax.training.resident import ResidentEpochs
from deepae_jax.core.step import (TrainingDivergedError, create_train_state, jit_train_step,
    make_train_step, train_epoch)

log = logging.getLogger("deepae_jax")


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
            ckpt.check_training_data(cfg.logdir, data.train, cfg.path_to_train_data)
            state, start_epoch, _ = ckpt.restore_checkpoint(path, state, meta, payload)
            log.info("resumed from %s after %d epochs (run %s)", path, start_epoch, run.run_id)
            if start_epoch >= cfg.num_epochs:
                log.warning("warning: %s: the run has already trained %d epochs (--num_epochs="
                            "%d): nothing to train; raise --num_epochs to continue it",
                            cfg.logdir, start_epoch, cfg.num_epochs)
        if main:
            ckpt.save_vocab(cfg.logdir, data.train.row_ids, data.train.col_ids, cfg.major,
                            run.run_id, data.train.fingerprint())
            save_run_config(cfg.logdir, cfg, run.run_id)
        return run, state, start_epoch, meta
    except BaseException:
        run.release()
        raise


def _training_path(cfg: Config, model_cfg, optimizer, train_csr, par, input_shift: float = 0.0,
                   epochs: range = range(1)):
    """(step_fn, epoch_batches) of ``--train_path``; ``epoch_batches(epoch)`` gives (the epoch's
    batches or multi-step calls, how many).

    The sparse paths keep the ratings on the devices (one or several, any number of processes)
    and gather the batches there (:class:`~deepae_jax.training.resident.ResidentEpochs`); the dense path
    takes host-built dense batches, sharded over the devices with ``par``.
    """
    n_devices = par.num_devices if par else 1
    path = backend.resolve_train_path(cfg.train_path, n_devices)
    log.info("training step: %s path (--train_path=%s) on %d %s device(s), matmul precision "
             "%s: %s", path, cfg.train_path, n_devices, jax.default_backend(), cfg.precision,
             PATH_WORDS[path])
    n = num_batches(train_csr.shape[0], cfg.batch_size)
    step = make_train_step(model_cfg, optimizer, cfg.refeed_steps, cfg.noise_prob,
                           path="dense" if path == "dense" else "sparse",
                           layers=cfg.train_layers, precision=cfg.precision,
                           noisy_target=cfg.noisy_refeed_target,
                           input_drop_prob=cfg.input_drop_prob, input_shift=input_shift,
                           ops=backend.train_ops(path, cfg, n * (1 + cfg.refeed_steps)))
    if path == "dense" and par:
        return par.train_step(step), lambda epoch: (
            par.batches(train_csr, cfg.batch_size, cfg.seed, epoch, builder="dense"), n)
    if path == "dense":
        return jit_train_step(step), lambda epoch: (
            dense_batches(train_csr, cfg.batch_size, cfg.seed, epoch), n)
    if par:
        par.check_same_data(train_csr, cfg.seed)
    resident = ResidentEpochs(step, train_csr, cfg.batch_size, cfg.seed,
                              mesh=par.mesh if par else None, epochs=epochs)
    return resident.step_fn, lambda epoch: (resident.batches(epoch), resident.num_calls(epoch))


PATH_WORDS = {
    "dense": "every item of a batch's rows goes through the n-wide first and output layers, as in "
             "the reference",
    "sparse": "the n-wide first and output layers are computed only at the items each batch's "
              "rows rated",
    "cpu_kernels": "the n-wide first and output layers are computed only at the items each "
                   "batch's rows rated, by the CPU kernels"}


def _optimizer(cfg: Config, n_rows: int):
    """(iterations per epoch, the optax optimiser of the run's settings)."""
    steps_per_epoch = num_batches(n_rows, cfg.batch_size)
    if steps_per_epoch == 0:
        raise ValueError(f"--batch_size={cfg.batch_size}: larger than the {n_rows} training "
                         f"rows in {cfg.path_to_train_data}; no full batch to train on")
    return steps_per_epoch, make_optimizer(
        cfg.optimizer, cfg.lr, cfg.weight_decay, steps_per_epoch * (1 + cfg.refeed_steps),
        l2_weights=cfg.l2_weights, schedule=cfg.lr_schedule, num_epochs=cfg.num_epochs)


def _centre_for_run(cfg: Config, data: Data, main: bool):
    """(data, baseline or None): with any option beyond the paper's protocol, the model learns
    residuals of --baseline (fitted now, or the resumed run's), saved as baseline.npz."""
    if not uses_predictions(cfg):
        return data, None
    resumed = baseline_lib.load(cfg.logdir) if cfg.resume else None
    data, base = centre(cfg, data, resumed.unblended() if resumed else None)
    if main:
        baseline_lib.save(cfg.logdir, base)
    return data, base


def _epoch_result(cfg: Config, epoch: int, losses, evaluation, extra: dict,
                  epoch_time: float, rows: int, base: baseline_lib.Baseline | None) -> dict:
    """What an epoch records in metrics.jsonl (and returns): 1-based epoch, train and eval RMSE
    in rating units (with a baseline, the training loss is on residuals divided by
    ``base.scale``: its RMSE times the scale; ``train_residual_rmse`` keeps the loss's own),
    the count of scored ratings, speed, learning rate and the ``--metrics``."""
    residual = float(np.sqrt(np.mean(losses)))
    return {"epoch": epoch + 1, "train_rmse": residual * (base.scale if base else 1.0),
            **({"train_residual_rmse": residual} if base else {}),
            "eval_rmse": evaluation.rmse if evaluation else None,
            "eval_count": evaluation.count if evaluation else None,
            "epoch_time_s": epoch_time, "rows_per_s": rows / max(epoch_time, 1e-9),
            "lr": learning_rate_at_epoch(cfg.lr, cfg.optimizer, epoch, cfg.lr_schedule,
                                         cfg.num_epochs),
            **{f"eval_{k}": v for k, v in extra.items()}}


def _selector(cfg: Config, data: Data) -> selection.Selector | None:
    """Model selection (the best epoch on the evaluation data, selection.py) when the run asks
    for it (--path_to_test_data or --early_stopping_patience); a resumed run's knows its best."""
    if data.eval is None or not (cfg.path_to_test_data or cfg.early_stopping_patience
                                 or cfg.final_predictor != "model"):
        return None
    if cfg.resume:
        return selection.resumed_selector(cfg.logdir, cfg.early_stopping_patience,
                                          cfg.selection_metric)
    return selection.Selector(cfg.early_stopping_patience)


def _train_epoch(cfg: Config, state, step_fn, epoch_batches, epoch: int, steps_per_epoch: int,
                 logger: MetricsLogger):
    """(state, per-iteration losses) after one epoch, its parameters computed (not queued)."""
    batches, n_calls = epoch_batches(epoch)
    base_step = epoch * steps_per_epoch
    state, losses = train_epoch(
        state, step_fn, batches, n_calls, epoch, cfg.summary_frequency,
        on_summary=lambda i, r: logger.scalar("train/rmse_recent", r, base_step + i),
        progress=cfg.progress, desc=f"epoch {epoch + 1}/{cfg.num_epochs}",
        n_iterations=steps_per_epoch)
    jax.block_until_ready(state.params)
    return state, losses


def train_and_evaluate(cfg: Config) -> dict:
    """Trains for ``--num_epochs`` (resuming from ``--logdir`` with ``--resume``); returns the
    last epoch's metrics. Writes checkpoints, ``vocab.npz``, ``metrics.jsonl``, TensorBoard
    events and at the end ``curves.png`` and ``report.md`` to ``--logdir``."""
    par = parallel.setup_from_config(cfg)  # None: one device; else all devices, all processes
    main = devices.is_main_process()  # only process 0 writes files and logs
    refit.check_refit(cfg, jax.process_count())
    cfg = cfg if main else dataclasses.replace(cfg, progress=False)
    record = report.RunRecord(cfg.logdir)
    data = load_data(cfg)
    raw = data  # before the baseline is subtracted: what a refit trains on
    record.baselines = _baseline_scores(cfg, data) if main else {}
    model_cfg = cfg.model_config(data.train.shape[1])
    steps_per_epoch, optimizer = _optimizer(cfg, data.train.shape[0])
    memory.check_fits(model_cfg, optimizer, cfg.optimizer)
    state = create_train_state(jax.random.PRNGKey(cfg.seed), model_cfg, optimizer)
    extras = {"baseline": cfg.baseline} if uses_predictions(cfg) else {}
    run, state, start_epoch, meta = _begin_run(cfg, data, state, run_meta(cfg, data, extras),
                                               main)
    record.checkpoint = run.resume_from[0] if run.resume_from else None
    record.data = report.describe_data(cfg, data)
    state = par.replicate(state) if par else state
    try:
        data, base = _centre_for_run(cfg, data, main)
    except BaseException:
        run.release()
        raise
    step_fn, epoch_batches = _training_path(cfg, model_cfg, optimizer, data.train.csr, par,
                                            base.input_shift if base else 0.0,
                                            range(start_epoch, cfg.num_epochs))
    logger = MetricsLogger(cfg.logdir, enabled=main, run_id=run.run_id)
    report.record_baselines(logger, record.baselines, resumed=cfg.resume)
    selector = _selector(cfg, data)
    ctx = _EpochContext(cfg, model_cfg, data, par, base, meta, logger, steps_per_epoch, main)
    try:
        for epoch in range(start_epoch, cfg.num_epochs):
            t0, compiles = time.time(), len(watch_compilations())
            try:
                state, losses = _train_epoch(cfg, state, step_fn, epoch_batches, epoch,
                                             steps_per_epoch, logger)
            except TrainingDivergedError as e:
                raise TrainingDivergedError(
                    f"{e}; stopped. Last good checkpoint: {record.checkpoint or 'none written yet'}"
                ) from None
            record.last, evaluation = _end_epoch(ctx, state, epoch, losses, time.time() - t0,
                                                 record, compiles)
            if selector is not None and _select(cfg, selector, state, epoch, meta, evaluation,
                                                main):
                break
        if selector is not None and main:
            record.last["summary"] = record.summary = _finish_selection(
                cfg, data, model_cfg, base, selector, logger)
    finally:
        logger.close()
        run.release()
    if main:
        _finish_run(cfg, record, raw)
    return record.last


def _baseline_scores(cfg: Config, data: Data) -> dict:
    """The baselines' scores on the evaluation data, printed at the start of a run."""
    if data.eval is None:
        log.info("no --path_to_eval_data: nothing will be evaluated (no eval RMSE, no selection)")
        return {}
    return report.baseline_scores(cfg, data.train.csr, data.targets, data.eval.csr)


def _finish_run(cfg: Config, record: report.RunRecord, raw: Data) -> None:
    """The refit (--refit, when a best epoch was kept), then curves.png and report.md."""
    if cfg.refit and record.summary and record.summary.get("best_epoch"):
        record.last["summary"] = record.summary = _refit(cfg, raw, record.summary)
    report.finish_run(cfg, record)


def _refit(cfg: Config, raw: Data, summary: dict) -> dict:
    """Trains the refit run (training.refit) in LOGDIR/refit, scores it on the test data and
    adds what it did to summary.json; returns the summary."""
    unchanged = refit.kept_as_is(cfg, summary)
    if unchanged is not None:
        results.info("no refit: %s", unchanged["refit_skipped"])
        summary = {**summary, **unchanged}
        selection.write_summary(cfg.logdir, summary)
        return summary
    base = baseline_lib.load(cfg.logdir)
    train_path = refit.write_train_valid(cfg, raw.train, raw.targets.triples)
    refit_cfg = refit.refit_config(cfg, summary, base, train_path)
    results.info("refit on the training + validation ratings for %d epochs, in %s",
                 refit_cfg.num_epochs, refit_cfg.logdir)
    train_and_evaluate(refit_cfg)
    base = refit.keep_final_predictor(refit_cfg.logdir, summary)
    scores = refit.score_test(cfg, refit_cfg, base) if cfg.path_to_test_data else None
    if scores is not None:
        results.info("test after the refit: %s", scores.describe())
    summary = {**summary, **refit.record(refit_cfg, scores, base)}
    selection.write_summary(cfg.logdir, summary)
    return summary


@dataclasses.dataclass(frozen=True)
class _EpochContext:
    """What the end of every epoch needs (:func:`_end_epoch`)."""

    cfg: Config
    model_cfg: object
    data: Data
    par: object
    base: baseline_lib.Baseline | None
    meta: dict
    logger: MetricsLogger
    steps_per_epoch: int
    main: bool


def _end_epoch(ctx: _EpochContext, state, epoch: int, losses, epoch_time: float,
               record: report.RunRecord, compiles: int) -> tuple[dict, predictions.Scores | None]:
    """Evaluates the epoch's model, logs the epoch line (both RMSEs in rating units), records
    metrics.jsonl and saves the checkpoint when due (keeping ``--keep_checkpoints``); returns
    (the epoch's metrics, its evaluation scores)."""
    cfg, par = ctx.cfg, ctx.par
    evaluation = evaluate_split(state.params, ctx.model_cfg, cfg, ctx.data, par, ctx.base)
    extra = metrics_lib.evaluate_metrics(devices.to_host(state.params) if par else
                                         state.params, ctx.model_cfg, ctx.data, cfg,
                                         evaluation, ctx.base) if cfg.metrics else {}
    result = _epoch_result(cfg, epoch, losses, evaluation, extra, epoch_time,
                           ctx.steps_per_epoch * cfg.batch_size, ctx.base)
    if ctx.main:
        results.info(format_epoch_line(epoch, cfg.num_epochs, {
            **result, **compiled_since(compiles), "row_name": cfg.major,
            "eval_metrics": metrics_lib.format_metrics(extra)}))
    ctx.logger.record("epoch", {k: v for k, v in result.items() if v is not None}, epoch + 1)
    if ctx.main and (epoch % cfg.save_every == 0 or epoch == cfg.num_epochs - 1):
        record.checkpoint = ckpt.save_checkpoint(cfg.logdir, devices.to_host(state),
                                                 epoch + 1, ctx.meta)
        ckpt.keep_latest(cfg.logdir, cfg.keep_checkpoints)
    return result, evaluation


def _select(cfg: Config, selector: selection.Selector, state, epoch: int, meta: dict,
            evaluation: predictions.Scores, main: bool) -> bool:
    """Keeps the best epoch's state (``best.msgpack``); True when training should stop."""
    value = getattr(evaluation, cfg.selection_metric)
    if selector.update(epoch + 1, value) and main:
        selection.save_best(cfg.logdir, devices.to_host(state), epoch + 1, meta, value,
                            cfg.selection_metric)
    if selector.should_stop:
        log.info("early stopping after epoch %d: no better validation %s than epoch %d's %.4f "
                 "for %d epochs", epoch + 1, cfg.selection_metric, selector.best_epoch,
                 selector.best_value, selector.since_best)
    return selector.should_stop


def _finish_selection(cfg: Config, data: Data, model_cfg, base, selector: selection.Selector,
                      logger: MetricsLogger) -> dict:
    """Scores the best checkpoint once on ``--path_to_test_data``; writes ``summary.json``."""
    metric = cfg.selection_metric
    summary = {"best_epoch": selector.best_epoch, "selection_metric": metric,
               f"valid_{metric}": selector.best_value, "stopped_early": selector.should_stop,
               "best_checkpoint": selection.best_checkpoint(cfg.logdir)}
    params = (ckpt.restore(cfg.logdir, summary["best_checkpoint"]).params
              if summary["best_checkpoint"] else None)
    if params is not None and base is not None and cfg.final_predictor != "model":
        base, choice = blend.choose_final(params, model_cfg, data.inputs, base, data.targets,
                                          data.train.csr, cfg.final_predictor,
                                          cfg.clip_predictions, cfg.eval_batch_size)
        baseline_lib.save(cfg.logdir, base)  # evaluate/infer/recommend/serve use the choice
        summary.update(choice)
    if cfg.path_to_test_data and params is not None:
        targets = load_targets(cfg, data.train, cfg.path_to_test_data)
        test = Data(data.train, targets.split, targets, data.inputs)
        scores = evaluate_split(params, model_cfg, cfg, test, None, base)
        summary.update(test_rmse=scores.rmse, test_mae=scores.mae, test_count=scores.count,
                       test_total=scores.total)
        if base is not None:
            b = predictions.baseline_scores(base, targets, cfg.clip_predictions, cfg.unknown)
            summary.update(test_baseline_rmse=b.rmse, baseline=base.kind)
        logger.record("test", {k: summary[k] for k in ("test_rmse", "test_count")},
                      selector.best_epoch)
        results.info("test (best epoch %d): %s", selector.best_epoch, scores.describe())
    selection.write_summary(cfg.logdir, summary)
    return summary
