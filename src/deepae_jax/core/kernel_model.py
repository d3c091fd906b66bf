"""Kernelised autoencoders (beyond the paper): the sparse kernel layer and GLocal-K.

**Sparse kernel layer** (Muller, Martel & Indiveri, "Kernelized Synaptic Weight Matrices", ICML
2018): a dense layer ``act(x @ (W * K) + b)`` whose weight matrix W (n_in, n_out) is multiplied
entry by entry by a kernel K[i, j] = k(u_i, v_j) between learned low-dimensional embeddings u_i
of the inputs (n_in, d) and v_j of the outputs (n_out, d). The paper's (and its public code's)
kernel has compact support, ``k(u, v) = max(0, 1 - |u - v|^2)``: pairs whose embeddings drift
more than 1 apart are disconnected, so the layer learns its own sparsity. Regularised by
``lambda_2/2 * sum W^2 + lambda_s/2 * sum K^2`` (the "l2" and "sparsity" terms). Stacked as an
autoencoder n -> h1 -> ... -> hk -> n (sigmoid hidden layers, identity output) this is their
"Sparse FC" recommender, and GLocal-K's "local kernel".

**GLocal-K** (Han, Long, Poon et al., "GLocal-K: Global and Local Kernels for Recommender
Systems", CIKM 2021) fine-tunes that local-kernel autoencoder with a *global kernel*: the
pre-trained reconstruction of the whole rating matrix (rows: items, columns: users) is averaged
over each row (one number per item), the item vector times a learned (n_rows, g*g) matrix gives
a g x g convolution kernel (times ``dot_scale``), and ``relu(conv2d(R, kernel, 'SAME'))`` of the
training matrix R is what the local-kernel autoencoder then reconstructs.

Parameters: ``[{"w": (in, out), "u": (in, d), "v": (out, d), "b": (out,)}, ...]``, one dict per
layer (the hidden layers, then the output layer back to n); the global kernel's matrix is a
separate ``{"conv": (n_rows, g*g)}``. Initialisation follows the public code: W Glorot-uniform,
u and v truncated normal with standard deviation 1e-3 (so that K starts close to 1 everywhere:
a dense layer), b uniform in +-sqrt(3/out), the global matrix truncated normal with 0.1.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

Params = list[dict[str, jax.Array]]

KERNELS = ("compact", "gaussian")
KERNEL_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu, "tanh": jnp.tanh, "selu": jax.nn.selu,
    "none": lambda x: x}


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Architecture and regularisation of a kernelised autoencoder (hashable: jit-static).

    Attributes:
      layer_sizes: (n, h1, ..., hk): the input width, then the hidden sizes; an output layer
        maps hk back to n.
      kernel_dim: d, the size of the embeddings u and v.
      kernel: "compact" (max(0, 1 - |u-v|^2), both papers) or "gaussian" (exp(-|u-v|^2)).
      activation: of the hidden layers (the output layer is linear).
      lambda_2: L2 weight of sum W^2 / 2.
      lambda_s: sparsity weight of sum K^2 / 2.
      gk_size: g, the global convolution kernel is g x g.
      dot_scale: factor of the global kernel (GLocal-K's "scaled dot product").
    """

    layer_sizes: tuple[int, ...]
    kernel_dim: int = 5
    kernel: str = "compact"
    activation: str = "sigmoid"
    lambda_2: float = 20.0
    lambda_s: float = 0.006
    gk_size: int = 3
    dot_scale: float = 1.0

    def __post_init__(self):
        if len(self.layer_sizes) < 2 or any(int(s) < 1 for s in self.layer_sizes):
            raise ValueError(f"layer_sizes must be at least (n, h1) of positive ints, "
                             f"got {self.layer_sizes}")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        if self.activation not in KERNEL_ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(KERNEL_ACTIVATIONS)}, "
                             f"got {self.activation!r}")
        if self.kernel_dim < 1 or self.gk_size < 1 or self.gk_size % 2 == 0:
            raise ValueError(f"kernel_dim must be >= 1 and gk_size odd and >= 1, got "
                             f"{self.kernel_dim}, {self.gk_size}")
        if self.lambda_2 < 0 or self.lambda_s < 0:
            raise ValueError(f"lambdas must be >= 0, got {self.lambda_2}, {self.lambda_s}")

    @property
    def widths(self) -> tuple[int, ...]:
        """Every layer's (input) width and the output width: (n, h1, ..., hk, n)."""
        return tuple(int(s) for s in self.layer_sizes) + (int(self.layer_sizes[0]),)


def _init_layer(rng: jax.Array, n_in: int, n_out: int, dim: int) -> dict[str, jax.Array]:
    k_w, k_u, k_v, k_b = jax.random.split(rng, 4)
    limit = (6.0 / (n_in + n_out)) ** 0.5
    bias_limit = (3.0 / n_out) ** 0.5
    return {"w": jax.random.uniform(k_w, (n_in, n_out), jnp.float32, -limit, limit),
            "u": 1e-3 * jax.random.truncated_normal(k_u, -2.0, 2.0, (n_in, dim), jnp.float32),
            "v": 1e-3 * jax.random.truncated_normal(k_v, -2.0, 2.0, (n_out, dim), jnp.float32),
            "b": jax.random.uniform(k_b, (n_out,), jnp.float32, -bias_limit, bias_limit)}


def init(rng: jax.Array, cfg: KernelConfig) -> Params:
    """Parameters of every kernel layer: n -> h1 -> ... -> hk -> n."""
    widths = cfg.widths
    keys = jax.random.split(rng, len(widths) - 1)
    return [_init_layer(keys[i], widths[i], widths[i + 1], cfg.kernel_dim)
            for i in range(len(widths) - 1)]


def init_global(rng: jax.Array, n_rows: int, gk_size: int = 3) -> dict[str, jax.Array]:
    """The global kernel's (n_rows, g*g) matrix: truncated normal, standard deviation 0.1."""
    return {"conv": 0.1 * jax.random.truncated_normal(rng, -2.0, 2.0, (n_rows, gk_size ** 2),
                                                      jnp.float32)}


def kernel_matrix(u: jax.Array, v: jax.Array, kernel: str = "compact") -> jax.Array:
    """K[i, j] = k(u_i, v_j) of (n_in, d) and (n_out, d) embeddings: (n_in, n_out)."""
    sq_dist = jnp.sum((u[:, None, :] - v[None, :, :]) ** 2, axis=-1)
    if kernel == "compact":
        return jnp.maximum(0.0, 1.0 - sq_dist)
    if kernel == "gaussian":
        return jnp.exp(-sq_dist)
    raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")


def effective_weights(layer: dict[str, jax.Array], kernel: str = "compact") -> jax.Array:
    """The layer's weight matrix W * K(u, v) (n_in, n_out)."""
    return layer["w"] * kernel_matrix(layer["u"], layer["v"], kernel)


def kernel_layer(layer: dict[str, jax.Array], x: jax.Array, kernel: str = "compact",
                 activation: Callable[[jax.Array], jax.Array] = jax.nn.sigmoid) -> jax.Array:
    """One sparse kernel layer: act(x @ (W * K(u, v)) + b)."""
    return activation(x @ effective_weights(layer, kernel) + layer["b"])


def apply(params: Params, x: jax.Array, cfg: KernelConfig) -> jax.Array:
    """The local-kernel autoencoder's reconstruction (batch, n) of rating vectors x (batch, n)."""
    act = KERNEL_ACTIVATIONS[cfg.activation]
    for layer in params[:-1]:
        x = kernel_layer(layer, x, cfg.kernel, act)
    return kernel_layer(params[-1], x, cfg.kernel, KERNEL_ACTIVATIONS["none"])


def regulariser(params: Params, cfg: KernelConfig) -> jax.Array:
    """lambda_2/2 * sum of W^2 + lambda_s/2 * sum of K^2 over every layer."""
    total = jnp.zeros((), params[0]["w"].dtype)
    for layer in params:
        k = kernel_matrix(layer["u"], layer["v"], cfg.kernel)
        total = total + 0.5 * cfg.lambda_2 * jnp.sum(layer["w"] ** 2) \
            + 0.5 * cfg.lambda_s * jnp.sum(k ** 2)
    return total


def global_kernel(conv: jax.Array, reconstruction: jax.Array, gk_size: int,
                  dot_scale: float = 1.0) -> jax.Array:
    """The g x g convolution kernel: the row means of the (n_rows, n_cols) reconstruction (one
    per item) times the (n_rows, g*g) matrix ``conv``, times ``dot_scale``."""
    pooled = jnp.mean(reconstruction, axis=1)
    return (pooled @ conv * dot_scale).reshape(gk_size, gk_size)


def global_conv(ratings: jax.Array, kernel: jax.Array) -> jax.Array:
    """relu of the 2-D cross-correlation of the (n_rows, n_cols) matrix with an odd g x g
    kernel, zero-padded to the same size ('SAME'): out[i, j] = relu(sum_ab k[a, b] *
    R[i + a - g//2, j + b - g//2]). Written as g*g shifted sums, which XLA on CPU runs (and
    differentiates) several times faster than a one-channel convolution."""
    g = kernel.shape[0]
    n_rows, n_cols = ratings.shape
    padded = jnp.pad(ratings, g // 2)
    out = jnp.zeros_like(ratings)
    for a in range(g):
        for b in range(g):
            out = out + kernel[a, b].astype(ratings.dtype) * padded[a:a + n_rows, b:b + n_cols]
    return jax.nn.relu(out)


def apply_glocal(params: Params, global_params: dict[str, jax.Array], ratings: jax.Array,
                 cfg: KernelConfig) -> jax.Array:
    """GLocal-K's reconstruction of the whole (n_rows, n) rating matrix: the local-kernel
    autoencoder on the global-kernel convolution of the ratings, the kernel built from the
    autoencoder's own reconstruction of the ratings."""
    kernel = global_kernel(global_params["conv"], apply(params, ratings, cfg), cfg.gk_size,
                           cfg.dot_scale)
    return apply(params, global_conv(ratings, kernel), cfg)


def objective(predictions: jax.Array, ratings: jax.Array, mask: jax.Array,
              params: Params, cfg: KernelConfig) -> jax.Array:
    """The training objective of both stages: 1/2 * the sum of squared errors over the observed
    ratings (``mask``), plus :func:`regulariser`."""
    return 0.5 * jnp.sum((mask * (ratings - predictions)) ** 2) + regulariser(params, cfg)


def count_params(*trees: Any) -> int:
    """Number of scalar parameters of the given pytrees."""
    return int(sum(x.size for t in trees for x in jax.tree_util.tree_leaves(t)))
