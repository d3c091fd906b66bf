"""deepae_jax: deep autoencoders for collaborative filtering (Kuchaiev & Ginsburg, 2017) in JAX."""

__version__ = "0.1.0"
