"""Start-up of multi-device and multi-process runs: ``jax.distributed`` and the device mesh.

See :mod:`deepae_jax.training.parallel` for what a data-parallel run does with them.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

import jax
import numpy as np
from jax.sharding import Mesh

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
