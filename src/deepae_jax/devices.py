"""Devices: ``jax.distributed`` start-up, the 1-D device mesh, and host <-> device transfers of
global arrays (placing host values on a mesh, fetching replicated values, assembling each
process's rows into a global batch).

See :mod:`deepae_jax.training.parallel` for what a data-parallel run does with them.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger("deepae_jax")

AXIS = "batch"
"""The name of the device axis of the 1-D mesh (the batch is sharded along it)."""


def initialize_distributed(coordinator_address: str = "", num_processes: int = 1,
                           process_id: int = -1, initialization_timeout: int = 300) -> bool:
    """Starts ``jax.distributed`` for a multi-process run; returns whether it did.

    Nothing happens for a single-process run (``num_processes == 1`` and no coordinator).
    ``num_processes=0`` means "detect": ``jax.distributed.initialize`` then takes whatever is not
    given (coordinator, process count, process id) from the cluster environment (SLURM, Open MPI,
    Kubernetes, Cloud TPU). ``process_id=-1`` and an empty address likewise mean "detect".
    Must run before anything touches a JAX device. Calling it twice is harmless.
    """
    if num_processes == 1 and not coordinator_address:
        return False
    if _distributed_is_initialized():
        return True
    try:  # CPU collectives for CPU multi-process runs (the default in recent JAX; no-op on GPU)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError, KeyError):  # option renamed or gone in a later JAX
        pass
    jax.distributed.initialize(
        coordinator_address=coordinator_address or None,
        num_processes=num_processes if num_processes > 0 else None,
        process_id=process_id if process_id >= 0 else None,
        initialization_timeout=initialization_timeout)
    log.info("jax.distributed: process %d of %d, %d local / %d global devices",
             jax.process_index(), jax.process_count(), jax.local_device_count(),
             jax.device_count())
    return True


def _distributed_is_initialized() -> bool:
    is_init = getattr(jax.distributed, "is_initialized", None)
    if is_init is not None:
        return bool(is_init())
    from jax._src import distributed  # older JAX: no public query
    return distributed.global_state.client is not None


def is_main_process() -> bool:
    """True on the process that writes files (process 0); always True for a single process."""
    return jax.process_index() == 0


def make_mesh(num_devices: int = 0) -> Mesh:
    """A 1-D mesh (axis ``"batch"``) over ``num_devices`` devices of EVERY process (0: all local).

    Devices are listed process by process (process 0's first, ...), each process's in id order,
    so the devices of process ``p`` are the contiguous positions ``[p*L, (p+1)*L)``. Raises
    ValueError when a process has fewer than ``num_devices`` devices.
    """
    local = jax.local_device_count()
    n = int(num_devices) or local
    if n < 1 or n > local:
        raise ValueError(f"--num_devices={num_devices}: this process has {local} "
                         f"{jax.default_backend()} device(s) "
                         f"({', '.join(str(d) for d in jax.local_devices())}); "
                         f"choose 1..{local}, or 0 for all")
    by_process: dict[int, list] = {}
    for d in jax.devices():
        by_process.setdefault(d.process_index, []).append(d)
    devices = []
    for p in sorted(by_process):
        own = sorted(by_process[p], key=lambda d: d.id)
        if len(own) < n:
            raise ValueError(f"--num_devices={n}: process {p} has only {len(own)} device(s)")
        devices.extend(own[:n])
    return Mesh(np.asarray(devices), (AXIS,))


def check_batch_size(batch_size: int, n_devices: int, flag: str = "batch_size") -> None:
    """Raises ValueError unless the global batch divides evenly among the devices."""
    if batch_size % n_devices:
        lower = max(n_devices, batch_size - batch_size % n_devices)
        raise ValueError(f"--{flag}={batch_size} does not divide among {n_devices} devices "
                         f"(the global batch is split evenly); use a multiple of {n_devices}, "
                         f"e.g. {lower} or {lower + n_devices}, or change --num_devices")


def keep_host_memory_mapped() -> bool:
    """CPU only, optional: stop glibc from returning large freed blocks to the OS.

    XLA:CPU allocates each step's large temporaries (e.g. 36 MB gradients) afresh; above glibc's
    mmap threshold every allocation is a new mapping whose pages fault in again on every step.
    Serving them from the heap instead (``mallopt(M_MMAP_MAX=0)``, no trimming) removes those
    page faults. Process-wide; returns False where glibc is not available.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-4, 0) and libc.mallopt(-1, 2 ** 30))  # M_MMAP_MAX, M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


# --------------------------------------------------------------------------- host <-> devices


def put_global(x: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
    """A host array (the same on every process) as a global array laid out by ``sharding``."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def replicated_on(tree: Any, sharding: NamedSharding) -> Any:
    """``tree`` with every leaf a global array replicated by ``sharding`` (leaves that already
    are stay as they are; host values must be the same on every process)."""
    def put(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
            return jax.device_put(x, sharding)  # the same buffers, relabelled
        return put_global(np.asarray(jax.device_get(x)), sharding)
    return jax.tree_util.tree_map(put, tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """A host (or single-device) pytree copied onto every device of ``mesh`` (all processes must
    pass the same values): :func:`replicated_on` the mesh's replicated sharding."""
    return replicated_on(tree, NamedSharding(mesh, P()))


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


def one_device_mesh(device=None) -> Mesh:
    """The 1-D mesh (axis ``distributed.AXIS``) of one device (default: the first)."""
    return Mesh(np.asarray([device or jax.devices()[0]]), (AXIS,))


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
