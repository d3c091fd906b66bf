from deepae_jax.serve.app import cli

cli()
