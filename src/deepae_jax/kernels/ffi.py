"""The XLA FFI custom calls of the CPU kernels (``csrc/sparse_cpu.cc``) and their build.

XLA:CPU lowers the row gathers and scatter-adds of the sparse first and last layers to
single-threaded element-by-element loops; these kernels do the same sums row by row, vectorised,
on XLA's intra-op thread pool. The C++ source ships with the package and is compiled with the
system C++ compiler (``$CXX``, else g++ / c++ / clang++) on first use (a few seconds), then cached
as ``$DEEPAE_JAX_CACHE/kernels/sparse_cpu_<hash>.so`` (default ``~/.cache/deepae_jax``) keyed by
the source, jaxlib version, compiler, flags and CPU. ``DEEPAE_JAX_CPU_KERNELS=0`` turns them off.
:func:`available` says whether they are built and registered; where they are not (no compiler,
a failed build, switched off) one warning names the reason and ``--train_path=auto`` takes the
sparse XLA path instead (same results up to float rounding; the tests compare the two).

    scatter_axpy(src, idx, key, scale, m)   # out (m, h); out[key[t]] += scale[t] * src[idx[t]]
    rowdot(w, h, cols, rows, active)        # out (T,); h[rows[t]] . w[cols[t]] where active
    momentum(p, trace, g, lr, mu)           # SGD with momentum on one parameter array
    sparse_momentum(p, trace, src, idx, key, scale, lr, mu)  # the same, g given as a scatter
    sparse_momentum_grad(...)  # the same, plus the gradient with respect to src (old p)
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
SOURCE = os.path.join(CSRC, "sparse_cpu.cc")
HEADERS = (os.path.join(CSRC, "sparse_kernels.h"),)
ENV_SWITCH = "DEEPAE_JAX_CPU_KERNELS"
_TARGETS = {"deepae_scatter_axpy": "DeepaeScatterAxpy", "deepae_rowdot": "DeepaeRowDot",
            "deepae_momentum": "DeepaeMomentum", "deepae_sparse_momentum": "DeepaeSparseMomentum",
            "deepae_sparse_momentum_grad": "DeepaeSparseMomentumGrad"}
_FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC", "-w"]

log = logging.getLogger(__name__)


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU model and its feature flags."""
    try:
        with open("/proc/cpuinfo") as fh:
            lines = [ln for ln in fh if ln.startswith(("model name", "flags"))][:2]
        return "".join(lines)
    except OSError:
        return platform.processor() or platform.machine()


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which(
        "clang++")


def build(cache_dir: str | None = None) -> str:
    """Compiles the kernels (or finds them in the cache); returns the shared library's path."""
    import jaxlib
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX)")
    source = b""
    for path in (SOURCE, *HEADERS):  # the cache key covers every file the build reads
        with open(path, "rb") as fh:
            source += fh.read() + b"\0"
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(b"\0".join([source, jaxlib.__version__.encode(), version.encode(),
                                     _cpu_signature().encode(), " ".join(_FLAGS).encode()]))
    cache_dir = cache_dir or os.path.join(
        os.environ.get("DEEPAE_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache",
                                                        "deepae_jax")), "kernels")
    path = os.path.join(cache_dir, f"sparse_cpu_{key.hexdigest()[:16]}.so")
    if os.path.exists(path):
        return path
    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache_dir)
    os.close(fd)
    try:  # build to a temporary name, then rename: concurrent builds never see half a library
        cmd = [cxx, *_FLAGS, "-I", jax.ffi.include_dir(), SOURCE, "-o", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """True where the kernels are built and registered with XLA for the CPU platform (builds
    them on the first call). Says nothing about the backend: the step picks the kernel branch at
    lowering time, for the CPU platform only (``jax.lax.platform_dependent``)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        log.info("deepae_jax CPU kernels switched off (%s=0)", ENV_SWITCH)
        return False
    try:
        lib = ctypes.CDLL(build())
        for target, symbol in _TARGETS.items():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)),
                                        platform="cpu")
        return True
    except Exception as exc:  # any failure means: use the XLA operations instead
        log.warning("deepae_jax CPU kernels unavailable (the sparse XLA path is used instead, "
                    "slower on the CPU): %s", exc)
        return False


def scatter_axpy(src: jax.Array, idx: jax.Array, key: jax.Array, scale: jax.Array,
                 m: int) -> jax.Array:
    """out (m, h) float32 with out[key[t]] += scale[t] * src[idx[t]] over slots with scale != 0."""
    out = jax.ShapeDtypeStruct((int(m), src.shape[1]), jnp.float32)
    return jax.ffi.ffi_call("deepae_scatter_axpy", out)(
        src.astype(jnp.float32), idx.astype(jnp.int32), key.astype(jnp.int32),
        scale.astype(jnp.float32))


def rowdot(w: jax.Array, h: jax.Array, cols: jax.Array, rows: jax.Array,
           active: jax.Array) -> jax.Array:
    """out (T,) float32: h[rows[t]] . w[cols[t]] where active[t] != 0, else 0."""
    out = jax.ShapeDtypeStruct(cols.shape, jnp.float32)
    return jax.ffi.ffi_call("deepae_rowdot", out)(
        w.astype(jnp.float32), h.astype(jnp.float32), cols.astype(jnp.int32),
        rows.astype(jnp.int32), active.astype(jnp.float32))


def momentum(p: jax.Array, trace: jax.Array, g: jax.Array, lr: jax.Array, mu: float,
             after: Sequence[jax.Array] = ()) -> tuple[jax.Array, jax.Array]:
    """(p - lr * t, t) with t = g + mu * trace: one SGD-with-momentum update (optax.sgd's and
    PyTorch's formula) of a float32 array, in place where the buffers can be reused.

    ``after``: arrays the update waits for (the kernel does not read them). An in-place update
    of p that XLA cannot order after every other reader of p makes XLA copy p first; passing an
    array that those readers feed (e.g. the backward pass's last gradient) removes the copy.
    """
    shape = jax.ShapeDtypeStruct(p.shape, jnp.float32)
    return jax.ffi.ffi_call("deepae_momentum", (shape, shape),
                            input_output_aliases={0: 0, 1: 1})(
        p, trace, g.astype(jnp.float32), jnp.asarray(lr, jnp.float32), *after,
        momentum=np.float32(mu))


def sparse_momentum(p: jax.Array, trace: jax.Array, src: jax.Array, idx: jax.Array,
                    key: jax.Array, scale: jax.Array, lr: jax.Array, mu: float,
                    after: Sequence[jax.Array] = ()) -> tuple[jax.Array, jax.Array]:
    """:func:`momentum` with g = scatter_axpy(src, idx, key, scale, p.shape[0]), g never stored."""
    return _sparse_momentum("deepae_sparse_momentum", (), p, trace, src, idx, key, scale, lr, mu,
                            after)


def _sparse_momentum(target, extra_results, p, trace, src, idx, key, scale, lr, mu, after):
    shape = jax.ShapeDtypeStruct(p.shape, jnp.float32)
    return jax.ffi.ffi_call(target, (shape, shape, *extra_results),
                            input_output_aliases={0: 0, 1: 1})(
        p, trace, src.astype(jnp.float32), idx.astype(jnp.int32), key.astype(jnp.int32),
        scale.astype(jnp.float32), jnp.asarray(lr, jnp.float32), *after,
        momentum=np.float32(mu))


def sparse_momentum_grad(p: jax.Array, trace: jax.Array, src: jax.Array, idx: jax.Array,
                         key: jax.Array, scale: jax.Array, lr: jax.Array, mu: float,
                         after: Sequence[jax.Array] = ()) -> tuple[jax.Array, jax.Array,
                                                                   jax.Array]:
    """:func:`sparse_momentum`, plus d_src (R, h) with d_src[idx[t]] += scale[t] * p[key[t]] at
    the p before the update (the gradient of sum_t scale[t] <src[idx[t]], p[key[t]]> with
    respect to src), summed while the update streams through p."""
    d_src = jax.ShapeDtypeStruct(src.shape, jnp.float32)
    return _sparse_momentum("deepae_sparse_momentum_grad", (d_src,), p, trace, src, idx, key,
                            scale, lr, mu, after)
