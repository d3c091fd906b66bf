"""CPU kernels of the sparse training step: one small interface.

XLA:CPU lowers the row gathers and scatter-adds of the sparse first and last layers to
single-threaded element-by-element loops; these kernels (XLA FFI custom calls, ``csrc/``) do the
same sums row by row, vectorised, on XLA's intra-op thread pool, and fuse the momentum update
of the item-sized weight matrices with the gradient's scatter.

Interface:

* :func:`available` -- built and registered (the build: :mod:`deepae_jax.kernels.ffi`; cached
  under ``$DEEPAE_JAX_CACHE/kernels``, default ``~/.cache/deepae_jax``; off with
  ``DEEPAE_JAX_CPU_KERNELS=0``; one warning with the reason when unavailable);
* :func:`gather_sum`, :func:`output_pre_at` -- drop-in replacements of ``sparse.gather_sum`` and
  ``sparse.output_pre_at`` (same arguments, same results up to float rounding);
* :func:`deepae_jax.kernels.update.fused_sparse_update` -- the update on the sparse batch with
  the item-sized gradients summed inside the optimiser's kernels (SGD with momentum).

They run on the CPU platform only: ``train.make_train_step(path="cpu_kernels")`` places them in
the CPU branch of ``jax.lax.platform_dependent``, so the same step lowers to the XLA path on any
other platform.
"""
from deepae_jax.kernels.ffi import ENV_SWITCH, available, build  # noqa: F401
from deepae_jax.kernels.ops import gather_sum, output_pre_at  # noqa: F401
