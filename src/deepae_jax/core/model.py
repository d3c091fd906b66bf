"""The deep autoencoder of Kuchaiev & Ginsburg (2017) as pure functions over a parameter pytree.

Layout for ``layer_sizes = [n, h1, ..., hk]``: the encoder maps n→h1→…→hk, each layer
``act(x @ W + b)``; dropout (inverted, probability ``drop_prob``) acts on the code layer only; the
decoder mirrors the encoder back to n. A constrained (tied) decoder reuses the transposed encoder
weights with biases of its own. The same activation is used on every layer, including the last,
unless ``last_layer_linear`` (the reference's ``--skip_last_layer_nl``).

Parameters are ``{"encoder": [{"w": (in, out), "b": (out,)}, ...],
"decoder": [{"w": (in, out), "b": (out,)}, ..., {"w": (n, h1), "b": (n,)}]}``: the decoder's last
weight is stored as (out, in), so that the weights of item i are a contiguous row both in the first
layer (``encoder[0]["w"][i]``) and in the last (``decoder[-1]["w"][i]``); the sparse fast path
gathers and scatters those rows. A constrained decoder has only ``"b"`` (its last weight is then
``encoder[0]["w"]`` itself). :func:`decoder_weights` gives every decoder weight as (in, out).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

Params = dict[str, Any]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "selu": jax.nn.selu,
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "elu": jax.nn.elu,
    "lrelu": lambda x: jax.nn.leaky_relu(x, negative_slope=0.01),
    "swish": lambda x: x * jax.nn.sigmoid(x),
    "none": lambda x: x,
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and regularisation of the autoencoder (hashable: a static jit argument).

    Attributes:
      layer_sizes: (n, h1, ..., hk): the input width followed by the encoder's hidden sizes.
      activation: a key of ACTIVATIONS.
      drop_prob: dropout probability on the code layer (0 disables it).
      constrained: tie decoder weights to the transposed encoder weights.
      last_layer_linear: no activation on the decoder's last layer.
    """

    layer_sizes: tuple[int, ...]
    activation: str = "selu"
    drop_prob: float = 0.0
    constrained: bool = False
    last_layer_linear: bool = False

    def __post_init__(self):
        if len(self.layer_sizes) < 2 or any(int(s) < 1 for s in self.layer_sizes):
            raise ValueError(f"layer_sizes must be at least (n, h1) of positive ints, "
                             f"got {self.layer_sizes}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; "
                             f"choose one of {sorted(ACTIVATIONS)}")
        if not 0.0 <= self.drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {self.drop_prob}")


def xavier_uniform(rng: jax.Array, fan_in: int, fan_out: int, dtype=jnp.float32) -> jax.Array:
    """Glorot/Xavier uniform matrix of shape (fan_in, fan_out): U(-a, a), a = sqrt(6/(in+out))."""
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    return jax.random.uniform(rng, (fan_in, fan_out), dtype, -limit, limit)


def init(rng: jax.Array, layer_sizes: Sequence[int], constrained: bool = False) -> Params:
    """Xavier-uniform weights and zero biases for the encoder and its mirrored decoder."""
    sizes = [int(s) for s in layer_sizes]
    dec_sizes = sizes[::-1]
    n_layers = len(sizes) - 1
    keys = jax.random.split(rng, 2 * n_layers)
    encoder = [{"w": xavier_uniform(keys[i], sizes[i], sizes[i + 1]),
                "b": jnp.zeros((sizes[i + 1],), jnp.float32)} for i in range(n_layers)]
    decoder = []
    for i in range(n_layers):
        layer = {"b": jnp.zeros((dec_sizes[i + 1],), jnp.float32)}
        if not constrained:
            w = xavier_uniform(keys[n_layers + i], dec_sizes[i], dec_sizes[i + 1])
            layer["w"] = w.T if i == n_layers - 1 else w  # the last one as (n, h1): item rows
        decoder.append(layer)
    return {"encoder": encoder, "decoder": decoder}


def count_params(params: Params) -> int:
    """Number of scalar parameters."""
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def decoder_weights(params: Params) -> list[jax.Array]:
    """The decoder's weight matrices, (in, out) each; transposed encoder weights when tied."""
    if "w" in params["decoder"][0]:
        return [layer["w"] for layer in params["decoder"][:-1]] + [params["decoder"][-1]["w"].T]
    return [layer["w"].T for layer in reversed(params["encoder"])]


def output_rows(params: Params) -> jax.Array:
    """The output layer's weight as (n, h1): row i holds the weights of item i's output."""
    if "w" in params["decoder"][-1]:
        return params["decoder"][-1]["w"]
    return params["encoder"][0]["w"]


def dropout(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
    """Inverted dropout: zero each entry with probability ``rate``, scale the rest by 1/(1-rate)."""
    if rate <= 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


Dot = Callable[[jax.Array, jax.Array], jax.Array]
PRECISIONS = ("float32", "tf32", "bfloat16")
"""Matmul precisions (``--matmul_precision``): ``float32``, strict float32 on every backend (the
reference's PyTorch keeps TF32 off for matmuls); ``tf32``, float32 operands rounded to TF32 on
GPUs' tensor cores (the default of jax on NVIDIA GPUs; float32 elsewhere); ``bfloat16``,
bfloat16 operands with float32 accumulation. Parameters, optimiser state and loss stay float32."""
DTYPES = ("float32", "bfloat16")  # --dtype, the older name of two of the precisions


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """The strict float32 matmul ``a @ b`` (the default of every forward pass, on any backend:
    not jax's default precision, which is TF32 on NVIDIA GPUs)."""
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def tf32_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` with float32 operands at TF32 precision where the hardware has it."""
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGH)


def bf16_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` with bfloat16 operands and float32 accumulation."""
    return jnp.dot(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16),
                   preferred_element_type=jnp.float32)


def make_dot(precision: str = "float32") -> Dot:
    """The matmul of one of :data:`PRECISIONS`."""
    dots = {"float32": matmul, "tf32": tf32_matmul, "bfloat16": bf16_matmul}
    if precision not in dots:
        raise ValueError(f"matmul precision must be one of {PRECISIONS}, got {precision!r}")
    return dots[precision]


def encode(params: Params, x: jax.Array | None, cfg: ModelConfig, train: bool = False,
           rng: jax.Array | None = None, first_layer: Callable | None = None,
           dot: Dot = matmul) -> jax.Array:
    """The code layer: encoder layers, then dropout when training.

    ``first_layer``, if given, replaces ``x @ W1`` (e.g. by a sparse gather-sum; ``x`` is then
    unused); ``dot`` is the matmul of every other layer (see :func:`make_dot`).
    """
    act = ACTIVATIONS[cfg.activation]
    for i, layer in enumerate(params["encoder"]):
        pre = first_layer(layer["w"]) if (i == 0 and first_layer is not None) else dot(
            x, layer["w"])
        x = act(pre + layer["b"])
    if train and cfg.drop_prob > 0.0:
        if rng is None:
            raise ValueError("training with drop_prob > 0 needs an rng")
        x = dropout(x, cfg.drop_prob, rng)
    return x


def decode_hidden(params: Params, z: jax.Array, cfg: ModelConfig, dot: Dot = matmul) -> jax.Array:
    """Every decoder layer but the last: the input of the output layer."""
    act = ACTIVATIONS[cfg.activation]
    ws = decoder_weights(params)
    for w, layer in zip(ws[:-1], params["decoder"][:-1]):
        z = act(dot(z, w) + layer["b"])
    return z


def output_activation(cfg: ModelConfig) -> Callable[[jax.Array], jax.Array]:
    """The activation of the decoder's last layer."""
    return ACTIVATIONS["none" if cfg.last_layer_linear else cfg.activation]


def dense_output(params: Params, h: jax.Array, cfg: ModelConfig, dot: Dot = matmul) -> jax.Array:
    """The full (batch, n) output from the output layer's input h."""
    w_out = decoder_weights(params)[-1]
    return output_activation(cfg)(dot(h, w_out) + params["decoder"][-1]["b"])


def apply(params: Params, x: jax.Array, cfg: ModelConfig, train: bool = False,
          rng: jax.Array | None = None, dot: Dot = matmul) -> jax.Array:
    """f(x): the dense reconstruction (batch, n) of rating vectors x (batch, n)."""
    h = decode_hidden(params, encode(params, x, cfg, train, rng, dot=dot), cfg, dot)
    return dense_output(params, h, cfg, dot)
