"""``python -m deepae_jax COMMAND ...``: the ``deepae`` command (:mod:`deepae_jax.cli.app`)."""
from deepae_jax.cli.app import run

run()
