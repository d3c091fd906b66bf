"""The JSON service over a trained model (:mod:`deepae_jax.serve.app`; request and id rules:
:mod:`deepae_jax.serve.schema`). ``deepae serve --checkpoint=LOGDIR`` (or ``python -m
deepae_jax.serve``) runs it: :mod:`deepae_jax.cli.serve`."""
from deepae_jax.serve.app import ServeConfig, create_app  # noqa: F401
