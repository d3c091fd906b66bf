"""Data-parallel training, evaluation and inference on all devices of a node, and on several
nodes (``jax.distributed``).

What it does
------------
The training step is the single-device step itself (:func:`~deepae_jax.core.step.make_train_step`,
written for the whole batch), compiled with ``jax.jit`` over a 1-D :class:`jax.sharding.Mesh`
(axis ``"batch"``): the parameters and optimiser state are replicated
(``NamedSharding(mesh, P())``), each global batch (``--batch_size`` is always the GLOBAL batch)
is sharded along its rows, device ``d`` of ``D`` holding rows ``[d*B/D, (d+1)*B/D)`` of the batch
in the order of :func:`~deepae_jax.data.batching.epoch_permutation`, and XLA's SPMD partitioner
inserts the collectives (the sums of squared errors, counts and gradients across devices). Every
update (the sparse update and each dense re-feeding update) is therefore exactly the update of
the global batch; only the order of floating-point summation differs from one device, so results
agree with a single device to rounding. Dropout draws follow the global batch (one key per
iteration, JAX's partitionable threefry), so they are the same for any device count.

On the sparse paths the training matrix is resident on every device and the batches are gathered
there (:class:`~deepae_jax.training.resident.ResidentEpochs` with this mesh): each device packs its own rows
(group-local row indices), with a packed width that follows the real ratings of the epoch's
groups, so the gather-sums stay on their device. The dense path (``--train_path=dense``) takes
host-built dense batches (:meth:`DataParallel.batches`).

Several processes (nodes)
-------------------------
:func:`~deepae_jax.devices.initialize_distributed` starts JAX's distributed runtime
(``jax.distributed.initialize``: coordinator address, number of processes, process id, or
detection from SLURM / Open MPI / ...), with gloo as the CPU collectives. The mesh lists the
devices process by process (see :func:`make_mesh`), so process ``p`` with ``L`` devices owns the
contiguous rows ``[p*B/P, (p+1)*B/P)`` of every global batch (``P`` processes). Every process
reads the training CSR matrix (ids, shuffling and evaluation need it; it is the compact form of
the data, never densified) and computes the same ``epoch_permutation(seed, epoch)``, so all
agree on the batches without communicating; :meth:`DataParallel.check_same_data` verifies that
they do. Global arrays are assembled from the host values every process holds
(``jax.make_array_from_callback``: each process supplies its own devices' shards).

Only process 0 writes checkpoints, ``vocab.npz``, metrics and the per-epoch line
(:func:`is_main_process`); all processes take part in every step and in evaluation.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Any, Callable, Iterator

import jax
import numpy as np
import scipy.sparse as sp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from deepae_jax.core import model
from deepae_jax.data.batching import dense_rows, epoch_permutation, num_batches
from deepae_jax.devices import (check_batch_size, global_batch, initialize_distributed,
                                local_view, make_mesh, process_rows, replicate, replicated_on,
                                to_host)
from deepae_jax.core.step import TrainState

log = logging.getLogger("deepae_jax")


# --------------------------------------------------------------------------- batch builders


def dense_builder(csr: sp.csr_matrix, rows: np.ndarray, global_rows: np.ndarray) -> np.ndarray:
    """This process's rows of a dense batch: (len(rows), n_cols) float32."""
    del global_rows
    return dense_rows(csr, rows)


BUILDERS: dict[str, Callable] = {"dense": dense_builder}


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

    def train_step(self, step_fn: Callable) -> Callable:
        """``step_fn`` (``train.make_train_step``'s pure step) over all devices: jitted, state
        donated.

        ``state`` is replicated (:meth:`replicate`); ``batch`` is a pytree of global arrays with
        leading axis = global batch, sharded along it (:meth:`batches`); ``metrics`` are this
        process's copies of the (replicated) global-batch metrics.
        """
        replicated = NamedSharding(self.mesh, P())
        jitted = jax.jit(step_fn, donate_argnums=(0,), out_shardings=replicated)

        def step(state: TrainState, batch: Any):
            state, metrics = jitted(replicated_on(state, replicated), batch)
            return state, local_view(metrics)
        return step

    def check_same_data(self, csr: sp.csr_matrix, seed: int) -> None:
        """Raises ValueError unless every process holds the same training data and seed (a
        collective in a multi-process run; nothing to check in one process)."""
        if jax.process_count() > 1:
            agree(_fingerprint([np.asarray(csr.shape), csr.indptr, csr.indices, csr.data,
                                np.asarray([seed])]),
                  "the processes hold different training data or shuffling: every process must "
                  "be given the same data and flags")

    def batches(self, csr: sp.csr_matrix, batch_size: int, seed: int, epoch: int,
                builder: str | Callable = "dense") -> Iterator[Any]:
        """The global batches of one epoch (same order as the single-device run), as sharded
        global arrays. This process builds only its own rows of each batch
        (:func:`process_rows`) with ``builder(csr, rows, global_rows)``."""
        check_batch_size(batch_size, self.num_devices)
        build = BUILDERS[builder] if isinstance(builder, str) else builder
        perm = epoch_permutation(csr.shape[0], seed, epoch)
        self.check_same_data(csr, seed)
        own = process_rows(self.mesh, batch_size)
        for i in range(num_batches(csr.shape[0], batch_size)):
            rows = perm[i * batch_size:(i + 1) * batch_size]
            yield global_batch(build(csr, rows[own], rows), self.mesh, batch_size)

    def predict_eval_ratings(self, params, model_cfg: model.ModelConfig,
                             train_csr: sp.csr_matrix, eval_csr: sp.csr_matrix,
                             rows: np.ndarray | None = None, batch_size: int = 256,
                             precision: str = "float32"
                             ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """:func:`deepae_jax.evaluation.protocol.predict_eval_ratings` on all devices (every process gets
        every prediction). ``batch_size`` is rounded up to a multiple of the device count (the
        extra rows are padding whose targets are masked out)."""
        from deepae_jax.evaluation.protocol import predict_eval_ratings
        return predict_eval_ratings(params, model_cfg, train_csr, eval_csr, rows, batch_size,
                                    self.mesh, precision=precision)

    def evaluate(self, params, model_cfg: model.ModelConfig, train_csr: sp.csr_matrix,
                 eval_csr: sp.csr_matrix, rows: np.ndarray | None = None,
                 batch_size: int = 256, precision: str = "float32"):
        """:func:`deepae_jax.evaluation.protocol.evaluate` on all devices (the same number on every
        process)."""
        from deepae_jax.evaluation.protocol import evaluate
        return evaluate(params, model_cfg, train_csr, eval_csr, rows, batch_size, self.mesh,
                        precision=precision)


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
