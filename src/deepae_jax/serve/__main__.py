"""``python -m deepae_jax.serve``: the same as ``deepae serve`` (:mod:`deepae_jax.cli.serve`)."""
from deepae_jax.cli.serve import run

run()
