"""Data-parallel training on all devices of a node, and on several nodes (``jax.distributed``).

What it does
------------
The parameters and optimiser state are replicated on every device; each global batch
(``--batch_size`` is always the GLOBAL batch) is split across the devices, device ``d`` of ``D``
taking rows ``[d*B/D, (d+1)*B/D)`` of the batch in the order of
:func:`~deepae_jax.data.batching.epoch_permutation`. The step is the single-device step of
:func:`~deepae_jax.train.make_train_step` built with ``axis_name="batch"``: squared errors,
observed counts and gradients are summed across devices with ``psum``, so every update (the
sparse update and each dense re-feeding update, all inside the same step) is exactly the update
of the global batch. Only the order of floating-point summation differs from one device, so for
the same global batch, seed and data the results agree to rounding. Dropout draws differ: device
``d`` uses ``fold_in(fold_in(rng, step), d)``, distinct per device and reproducible for a given
device count.

Why ``jax.jit(jax.shard_map(...))`` and not ``jax.pmap``
------------------------------------------------------
The step is written pmap-style (per-device code with explicit ``psum``/``axis_index`` over the
axis ``"batch"``), but it is mapped with ``jax.shard_map`` over a 1-D :class:`jax.sharding.Mesh`
and compiled with ``jax.jit``. Since JAX 0.8 ``jax.pmap`` is itself implemented on
``jit``+``shard_map`` and is in maintenance mode (``jax.device_put_replicated``/``_sharded`` are
deprecated); shard_map is the documented successor, behaves the same on jax 0.10 and 0.11, and
keeps the state one global array (replicated ``NamedSharding``) instead of a stacked copy per
device, so checkpoints, evaluation and resuming see the same TrainState as a single-device run.
``check_vma=False`` gives pmap's semantics: gradients inside the map are per-device and are summed
by the explicit ``psum`` of ``make_train_step`` (with ``check_vma=True`` JAX would already sum the
gradient of replicated parameters, and the explicit psum would count it twice). Both plain
``jax.pmap`` and this step were checked to run multi-process on CPU with gloo under jax 0.10.

Several processes (nodes)
-------------------------
:func:`~deepae_jax.distributed.initialize_distributed` starts JAX's distributed runtime (``jax.distributed.initialize``:
coordinator address, number of processes, process id, or detection from SLURM / Open MPI / ...),
with gloo as the CPU collectives. The mesh lists the devices process by process (see
:func:`make_mesh`), so process ``p`` with ``L`` devices owns the contiguous rows
``[p*B/P, (p+1)*B/P)`` of every global batch (``P`` processes). What each process holds:

* the training CSR matrix (every process reads the rating file: ids, shuffling and evaluation
  inputs need the whole sparse matrix; it is the compact form of the data, never densified);
* per step, ONLY its own rows of the global batch, densified (or padded) on the host and
  transferred to its own devices (:func:`DataParallel.batches`); it never builds other processes'
  rows. Every process computes the same ``epoch_permutation(seed, epoch)``, so all agree on the
  shuffling without communicating;
* a replica of the parameters and optimiser state on each of its devices;
* in evaluation and inference, its own rows of each evaluation batch (densified), plus the
  evaluation targets' columns of the whole batch and, gathered from all processes, every
  prediction (needed to compute the RMSE and write the predictions file).

Only process 0 writes checkpoints, ``vocab.npz``, metrics and the per-epoch line
(:func:`is_main_process`); all processes take part in every step and in evaluation.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from deepae_jax import model
from deepae_jax.data.batching import (bucket_length, dense_rows, epoch_permutation, num_batches,
                                      padded_rows)
from deepae_jax.distributed import (AXIS, check_batch_size, initialize_distributed,
                                    is_main_process, make_mesh)
from deepae_jax.train import TrainState, make_train_step

__all__ = ["AXIS", "DataParallel", "check_batch_size", "initialize_distributed",
           "is_main_process", "make_mesh", "replicate", "setup", "setup_from_config", "to_host"]

log = logging.getLogger("deepae_jax")


# --------------------------------------------------------------------------- arrays


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Copies a host (or single-device) pytree onto every device of ``mesh`` (all processes must
    pass the same values)."""
    sharding = NamedSharding(mesh, P())
    host = jax.device_get(tree)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
    return jax.tree_util.tree_map(put, host)


def to_host(tree: Any) -> Any:
    """A replicated (possibly multi-process) pytree as numpy arrays on this host.

    For arrays that span other processes' devices, this process's first shard is the value.
    """
    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(jax.device_get(x))
    return jax.tree_util.tree_map(get, tree)


def local_view(tree: Any) -> Any:
    """This process's copy of replicated arrays (no host transfer, no wait): a value that
    ``jax.device_get`` can fetch even when the array spans several processes."""
    return jax.tree_util.tree_map(
        lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)


def process_rows(mesh: Mesh, batch_size: int) -> slice:
    """The rows ``[start, stop)`` of every global batch that this process's devices hold."""
    sharding = NamedSharding(mesh, P(AXIS))
    spans = sorted((idx[0].start or 0, idx[0].stop if idx[0].stop is not None else batch_size)
                   for idx in sharding.addressable_devices_indices_map((batch_size,)).values())
    for (_, stop), (start, _) in zip(spans, spans[1:]):
        if stop != start:
            raise RuntimeError(f"this process's devices hold non-contiguous rows {spans}")
    return slice(spans[0][0], spans[-1][1])


def global_batch(local: Any, mesh: Mesh, batch_size: int) -> Any:
    """Assembles each process's rows (leaves with leading axis ``batch_size / P``) into global
    arrays of leading axis ``batch_size``, sharded along the device axis."""
    sharding = NamedSharding(mesh, P(AXIS))
    return jax.tree_util.tree_map(
        lambda a: jax.make_array_from_process_local_data(
            sharding, np.asarray(a), (batch_size,) + np.shape(a)[1:]), local)


def gather(x: jax.Array) -> np.ndarray:
    """The whole of a batch-sharded array as numpy, on every process."""
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


# --------------------------------------------------------------------------- batch builders


def dense_builder(csr: sp.csr_matrix, rows: np.ndarray, global_rows: np.ndarray) -> np.ndarray:
    """This process's rows of a dense batch: (len(rows), n_cols) float32."""
    del global_rows
    return dense_rows(csr, rows)


def padded_builder(csr: sp.csr_matrix, rows: np.ndarray, global_rows: np.ndarray) -> dict:
    """This process's rows of a padded sparse batch ``{"cols", "vals"}``; the padded length is
    the bucket of the longest row of the GLOBAL batch, so that every process agrees on the
    shape."""
    length = bucket_length(int(np.diff(csr.indptr)[global_rows].max(initial=0)))
    cols, vals = padded_rows(csr, rows, length)
    return {"cols": cols, "vals": vals}


BUILDERS: dict[str, Callable] = {"dense": dense_builder, "padded": padded_builder}


# --------------------------------------------------------------------------- the runtime


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """Data-parallel training, evaluation and inference over a 1-D device mesh.

    Attributes:
      mesh: the devices (all processes), axis ``"batch"``.
    """

    mesh: Mesh

    @property
    def num_devices(self) -> int:
        """Devices over all processes."""
        return self.mesh.size

    @property
    def num_processes(self) -> int:
        return len({d.process_index for d in self.mesh.devices.flat})

    def replicate(self, tree: Any) -> Any:
        """:func:`replicate`; in a multi-process run it first checks that every process holds
        the same values (e.g. all resumed from the same checkpoint), else raises."""
        if jax.process_count() > 1:
            agree(_fingerprint(tree), "the processes start from different states: were they "
                  "given different flags (e.g. --seed), or did --resume find different "
                  "checkpoints (--logdir must be on a filesystem shared by all processes)?")
        return replicate(tree, self.mesh)

    def train_step(self, model_cfg: model.ModelConfig, optimizer, aug_step: int = 0,
                   noise_prob: float = 0.0, **step_kwargs) -> Callable:
        """``step(state, batch) -> (state, metrics)`` over all devices, jitted, state donated.

        ``state`` is replicated (:meth:`replicate`); ``batch`` is a pytree of global arrays with
        leading axis = global batch (:meth:`batches`); ``metrics`` are this process's copies of
        the (replicated) global-batch metrics. ``step_kwargs`` go to ``make_train_step`` (e.g.
        ``sparse_input=True`` for the padded ``{"cols", "vals"}`` batches of
        :func:`padded_builder`). Every leaf of a batch is split along its leading axis, so a
        batch must not carry indices into the whole batch (each device sees a batch of
        ``B / D`` rows of its own).
        """
        per_device = make_train_step(model_cfg, optimizer, aug_step, noise_prob,
                                     axis_name=AXIS, **step_kwargs)
        mapped = jax.shard_map(per_device, mesh=self.mesh, in_specs=(P(), P(AXIS)),
                               out_specs=(P(), P()), check_vma=False)
        jitted = jax.jit(mapped, donate_argnums=(0,))

        def step(state: TrainState, batch: Any):
            state, metrics = jitted(state, batch)
            return state, local_view(metrics)
        return step

    def batches(self, csr: sp.csr_matrix, batch_size: int, seed: int, epoch: int,
                builder: str | Callable = "dense") -> Iterator[Any]:
        """The global batches of one epoch (same order as the single-device run), as sharded
        global arrays. This process builds only its own rows of each batch
        (:func:`process_rows`) with ``builder(csr, rows, global_rows)``."""
        check_batch_size(batch_size, self.num_devices)
        build = BUILDERS[builder] if isinstance(builder, str) else builder
        perm = epoch_permutation(csr.shape[0], seed, epoch)
        if jax.process_count() > 1:  # a collective: all processes must agree
            agree(_fingerprint([np.asarray(csr.shape), csr.indptr, csr.indices, csr.data, perm]),
                  "the processes hold different training data or shuffling: every process must "
                  "be given the same data and flags")
        own = process_rows(self.mesh, batch_size)
        for i in range(num_batches(csr.shape[0], batch_size)):
            rows = perm[i * batch_size:(i + 1) * batch_size]
            yield global_batch(build(csr, rows[own], rows), self.mesh, batch_size)

    @functools.cached_property
    def _predict(self) -> Callable:
        def per_device(params, x, cols, model_cfg):
            outputs = model.apply(params, x, model_cfg, train=False)
            return jnp.take_along_axis(outputs, cols, axis=1)

        @functools.partial(jax.jit, static_argnames=("model_cfg",))
        def predict(params, x, cols, model_cfg):
            return jax.shard_map(functools.partial(per_device, model_cfg=model_cfg),
                                 mesh=self.mesh, in_specs=(P(), P(AXIS), P(AXIS)),
                                 out_specs=P(AXIS), check_vma=False)(params, x, cols)
        return predict

    def predict_eval_ratings(self, params, model_cfg: model.ModelConfig,
                             train_csr: sp.csr_matrix, eval_csr: sp.csr_matrix,
                             rows: np.ndarray | None = None, batch_size: int = 256
                             ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """:func:`deepae_jax.evaluate.predict_eval_ratings` on all devices (every process gets
        every prediction). ``batch_size`` is rounded up to a multiple of the device count (the
        extra rows are padding whose targets are masked out)."""
        if rows is None:
            rows = np.flatnonzero(np.diff(eval_csr.indptr) > 0)
        batch_size = -(-batch_size // self.num_devices) * self.num_devices
        params = self.replicate(params) if _needs_replication(params, self.mesh) else params
        own = process_rows(self.mesh, batch_size)
        length = bucket_length(int(np.diff(eval_csr.indptr)[rows].max(initial=0)))
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            real = len(chunk)
            if real < batch_size:  # pad with copies of a real row whose targets are masked out
                chunk = np.concatenate([chunk, np.full(batch_size - real, chunk[0])])
            cols, vals = padded_rows(eval_csr, chunk, length)  # (batch, L): small
            vals[real:] = 0.0
            x = dense_rows(train_csr, chunk[own])  # only this process's rows are densified
            x_g, cols_g = global_batch((x, cols[own]), self.mesh, batch_size)
            pred = gather(self._predict(params, x_g, cols_g, model_cfg))
            observed = vals[:real] != 0
            row_idx = np.broadcast_to(rows[start:start + real, None], observed.shape)
            yield (row_idx[observed], cols[:real][observed], pred[:real][observed],
                   vals[:real][observed])

    def evaluate(self, params, model_cfg: model.ModelConfig, train_csr: sp.csr_matrix,
                 eval_csr: sp.csr_matrix, rows: np.ndarray | None = None,
                 batch_size: int = 256):
        """:func:`deepae_jax.evaluate.evaluate` on all devices (the same number on every
        process)."""
        from deepae_jax.evaluate import EvalResult
        sse, count = 0.0, 0
        for _, _, pred, actual in self.predict_eval_ratings(params, model_cfg, train_csr,
                                                            eval_csr, rows, batch_size):
            sse += float(np.sum((pred.astype(np.float64) - actual) ** 2))
            count += actual.size
        return EvalResult(sse, count)


def agree(value: np.ndarray, what: str) -> None:
    """Raises ValueError(``what``) unless ``value`` is the same on every process (a collective:
    every process must call it)."""
    from jax.experimental import multihost_utils
    try:
        multihost_utils.assert_equal(np.asarray(value), what)
    except AssertionError:
        raise ValueError(f"process {jax.process_index()}: {what}") from None


def _fingerprint(tree: Any) -> np.ndarray:
    """SHA-256 of the host values of ``tree`` (shapes, dtypes, bytes) as 8 int32 words."""
    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(to_host(tree)):
        x = np.ascontiguousarray(leaf)
        digest.update(f"{x.shape}{x.dtype}".encode())
        digest.update(x.tobytes())
    return np.frombuffer(digest.digest(), np.int32).copy()


def _needs_replication(tree: Any, mesh: Mesh) -> bool:
    want = NamedSharding(mesh, P())
    return not all(isinstance(x, jax.Array) and x.sharding.is_equivalent_to(want, x.ndim)
                   for x in jax.tree_util.tree_leaves(tree))


def setup(num_devices: int = 0, num_processes: int = 1, coordinator_address: str = "",
          process_id: int = -1, batch_size: int | None = None) -> DataParallel | None:
    """Starts the distributed runtime if asked and picks the devices.

    Returns None for a plain single-device run (one process, one device used), else a
    :class:`DataParallel` over ``num_devices`` devices of every process (0: all local devices).
    Raises ValueError when more devices are asked for than exist, or when ``batch_size`` (the
    global batch) does not divide among the devices.
    """
    initialize_distributed(coordinator_address, num_processes, process_id)
    mesh = make_mesh(num_devices)
    if mesh.size == 1:
        return None
    if batch_size is not None:
        check_batch_size(batch_size, mesh.size)
    log.info("data parallel over %d device(s) in %d process(es); this is process %d",
             mesh.size, jax.process_count(), jax.process_index())
    return DataParallel(mesh)


def setup_from_config(cfg, train: bool = True) -> DataParallel | None:
    """:func:`setup` with the run's flags (``--num_devices``, ``--num_processes``,
    ``--coordinator_address``, ``--process_id``; ``--batch_size`` is checked when training)."""
    return setup(cfg.num_devices, cfg.num_processes, cfg.coordinator_address, cfg.process_id,
                 cfg.batch_size if train else None)
