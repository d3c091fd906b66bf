"""The JSON service over a trained model (:mod:`deepae_jax.serve.app`; request and id rules:
:mod:`deepae_jax.serve.schema`). ``python -m deepae_jax.serve --checkpoint=LOGDIR``."""
from deepae_jax.serve.app import ServeConfig, cli, create_app, main  # noqa: F401
