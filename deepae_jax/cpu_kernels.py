"""Former home of the CPU kernels' custom calls: see :mod:`deepae_jax.kernels` (kept so that
``from deepae_jax import cpu_kernels`` still works)."""
from deepae_jax.kernels.ffi import *  # noqa: F401,F403
from deepae_jax.kernels.ffi import _compiler, available, build  # noqa: F401
