"""``python -m deepae_jax.main --flagfile=FILE``: the reference's command line (train, evaluate,
infer, recommend), kept where its users look for it; the code is :mod:`deepae_jax.cli.main`."""
from deepae_jax.cli.main import main, run  # noqa: F401

if __name__ == "__main__":
    run()
