"""The autoencoder (PAPER.md, "Model"): layout and parameter counts, activations, initialisation,
dropout on the code layer, the linear last layer, tied weights, and config validation."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepae_jax.core import model

N_NETFLIX = 17768
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _np_sigmoid(x):
    """Logistic sigmoid 1 / (1 + e^-x), in float64."""
    return 1.0 / (1.0 + np.exp(-x))


NUMPY_ACTIVATIONS = {
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * (np.exp(x) - 1.0)),
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.minimum(np.maximum(x, 0.0), 6.0),
    "sigmoid": _np_sigmoid,
    "tanh": np.tanh,
    "elu": lambda x: np.where(x > 0, x, np.exp(x) - 1.0),
    "lrelu": lambda x: np.where(x > 0, x, 0.01 * x),
    "swish": lambda x: x * _np_sigmoid(x),
    "none": lambda x: x,
}


def _to_numpy(params):
    """The parameter pytree as float64 numpy arrays."""
    return jax.tree.map(lambda a: np.asarray(a, np.float64), params)


def numpy_forward(params, x, activation, constrained, last_layer_linear=False, code_fn=None):
    """f(x) written out layer by layer in float64 numpy.

    Encoder: a = act(a @ W_i + b_i) for each encoder layer; ``code_fn`` (if given) replaces the code
    layer (e.g. by a dropped-out one). Decoder: layer j uses its own W, or, when constrained, the
    transpose of encoder layer (k-1-j)'s W; the last decoder layer is linear if asked.
    """
    p = _to_numpy(params)
    act = NUMPY_ACTIVATIONS[activation]
    a = np.asarray(x, np.float64)
    for layer in p["encoder"]:
        a = act(a @ layer["w"] + layer["b"])
    if code_fn is not None:
        a = code_fn(a)
    k = len(p["encoder"])
    for j, layer in enumerate(p["decoder"]):
        w = p["encoder"][k - 1 - j]["w"].T if constrained else (
            layer["w"].T if j == k - 1 else layer["w"])  # the last one is stored (out, in)
        z = a @ w + layer["b"]
        a = z if (last_layer_linear and j == k - 1) else act(z)
    return a


apply_jit = jax.jit(model.apply, static_argnames=("cfg", "train"))
encode_jit = jax.jit(model.encode, static_argnames=("cfg", "train"))


def random_params(layer_sizes, constrained=False, seed=0):
    """A float32 parameter pytree in model.init's layout, drawn with numpy: weights N(0, 1/fan_in)
    and non-zero biases (so that bias handling is exercised, unlike at initialisation)."""
    rng = np.random.default_rng(seed)
    sizes = list(layer_sizes)

    def layer(fan_in, fan_out, with_w=True):
        out = {"b": jnp.asarray(rng.normal(0.0, 0.1, fan_out).astype(np.float32))}
        if with_w:
            out["w"] = jnp.asarray(
                (rng.normal(size=(fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32))
        return out

    rev = sizes[::-1]
    params = {"encoder": [layer(sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1)],
              "decoder": [layer(rev[i], rev[i + 1], not constrained) for i in range(len(rev) - 1)]}
    if not constrained:  # model.init's layout: the last decoder weight as (n, h1)
        params["decoder"][-1]["w"] = params["decoder"][-1]["w"].T
    return params


def _shapes(layer_sizes, constrained=False):
    """model.init's output as ShapeDtypeStructs (traced, no arrays materialised)."""
    return jax.eval_shape(lambda r: model.init(r, layer_sizes, constrained), jax.random.PRNGKey(0))


def _shape_count(layer_sizes, constrained=False):
    """Number of scalars of model.init's output, summed from the shapes independently of
    model.count_params."""
    return int(sum(np.prod(s.shape) for s in jax.tree_util.tree_leaves(
        _shapes(layer_sizes, constrained))))


# ---------------------------------------------------------------- layout and parameter counts

def test_param_count_n_128_n_paper_figure():
    shapes = _shapes((N_NETFLIX, 128))
    assert model.count_params(shapes) == 4_566_504
    assert _shape_count((N_NETFLIX, 128)) == 4_566_504


def test_param_count_n_256_n_paper_figure():
    assert model.count_params(_shapes((N_NETFLIX, 256))) == 9_115_240


@pytest.mark.parametrize("extra_pairs", [1, 2, 5])
def test_each_extra_pair_of_128_layers_adds_33024(extra_pairs):
    hidden = (128,) * (1 + extra_pairs)
    assert model.count_params(_shapes((N_NETFLIX, *hidden))) == 4_566_504 + 33_024 * extra_pairs


def test_count_params_on_real_arrays():
    params = random_params((9, 5, 3))
    # encoder 9*5+5 + 5*3+3, decoder 3*5+5 + 5*9+9
    assert model.count_params(params) == (45 + 5) + (15 + 3) + (15 + 5) + (45 + 9)


def test_layout_shapes_mirror_the_encoder():
    params = _shapes((30, 8, 5, 3))
    assert [l["w"].shape for l in params["encoder"]] == [(30, 8), (8, 5), (5, 3)]
    assert [l["b"].shape for l in params["encoder"]] == [(8,), (5,), (3,)]
    assert [l["w"].shape for l in params["decoder"]] == [(3, 5), (5, 8), (30, 8)]
    assert [l["b"].shape for l in params["decoder"]] == [(5,), (8,), (30,)]


def test_constrained_has_no_decoder_weights_and_right_count():
    params = _shapes((N_NETFLIX, 128), constrained=True)
    assert all("w" not in layer for layer in params["decoder"])
    assert [l["b"].shape for l in params["decoder"]] == [(N_NETFLIX,)]
    # encoder W and b, then the decoder's own bias only.
    assert model.count_params(params) == N_NETFLIX * 128 + 128 + N_NETFLIX
    sizes = (N_NETFLIX, 128, 64)
    expected = (N_NETFLIX * 128 + 128) + (128 * 64 + 64) + 128 + N_NETFLIX
    assert model.count_params(_shapes(sizes, constrained=True)) == expected
    assert _shape_count(sizes, constrained=True) == expected


# ---------------------------------------------------------------- activations

def test_activation_table_covers_the_paper_list():
    assert set(model.ACTIVATIONS) == set(NUMPY_ACTIVATIONS)


@pytest.mark.parametrize("name", sorted(NUMPY_ACTIVATIONS))
def test_activation_matches_numpy_formula(name):
    x = np.concatenate([np.linspace(-8.0, 8.0, 161), [-1e-3, 0.0, 1e-3, 5.99, 6.0, 6.01, 30.0]])
    x = x.astype(np.float32)
    got = np.asarray(model.ACTIVATIONS[name](jnp.asarray(x)), np.float64)
    want = NUMPY_ACTIVATIONS[name](x.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


def test_lrelu_slope_is_one_hundredth():
    got = float(model.ACTIVATIONS["lrelu"](jnp.float32(-3.0)))
    assert got == pytest.approx(-0.03, rel=1e-6)


# ---------------------------------------------------------------- initialisation

def test_xavier_uniform_bounds_spread_and_zero_biases():
    sizes = (300, 150, 60)
    params = jax.jit(model.init, static_argnums=(1, 2))(jax.random.PRNGKey(3), sizes, False)
    for layer in params["encoder"] + params["decoder"]:
        w = np.asarray(layer["w"], np.float64)
        fan_in, fan_out = w.shape
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        assert np.all(np.abs(w) <= bound + 1e-7)
        assert np.abs(w).max() > 0.98 * bound
        # U(-a, a): std a/sqrt(3), mean 0.
        assert w.std() == pytest.approx(bound / np.sqrt(3.0), rel=0.03)
        assert abs(w.mean()) < 0.02 * bound
        np.testing.assert_array_equal(np.asarray(layer["b"]), 0.0)
        assert layer["w"].dtype == jnp.float32 and layer["b"].dtype == jnp.float32
    # Every layer is its own draw (no key reuse), the tied variant has the same encoder layout.
    ws = [np.asarray(l["w"]) for l in params["encoder"] + params["decoder"]]
    assert len({w.ravel()[:8].tobytes() for w in ws}) == len(ws)


# ---------------------------------------------------------------- forward pass

def _ratings(rng, batch, n, density=0.4):
    """A (batch, n) float32 matrix of integer ratings 1..5, zero where unrated."""
    x = rng.integers(1, 6, size=(batch, n)).astype(np.float32)
    x[rng.random((batch, n)) > density] = 0.0
    return x


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize("hidden", [(7, 4), (9, 6, 3)])
def test_apply_matches_numpy_forward(constrained, hidden):
    n = 15
    cfg = model.ModelConfig((n, *hidden), activation="selu", constrained=constrained)
    params = random_params(cfg.layer_sizes, constrained, seed=5)
    x = _ratings(np.random.default_rng(0), 6, n)
    got = np.asarray(apply_jit(params, jnp.asarray(x), cfg))
    want = numpy_forward(params, x, "selu", constrained)
    assert got.shape == (6, n)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_constrained_decoder_uses_transposed_encoder_weights():
    """Changing an encoder weight changes the decoder of a tied model in the mirrored position."""
    cfg = model.ModelConfig((10, 6, 4), activation="elu", constrained=True)
    params = random_params(cfg.layer_sizes, True, seed=2)
    dec_ws = model.decoder_weights(params)
    np.testing.assert_array_equal(np.asarray(dec_ws[0]), np.asarray(params["encoder"][1]["w"]).T)
    np.testing.assert_array_equal(np.asarray(dec_ws[1]), np.asarray(params["encoder"][0]["w"]).T)
    x = _ratings(np.random.default_rng(1), 3, 10)
    # Forward with the tied weights equals an untied forward whose decoder holds the transposes
    # (the last one stored (out, in): the encoder's first weight as is).
    untied = {"encoder": params["encoder"],
              "decoder": [{"w": params["encoder"][1]["w"].T, "b": params["decoder"][0]["b"] + 0.1},
                          {"w": params["encoder"][0]["w"], "b": params["decoder"][1]["b"] - 0.2}]}
    tied = {"encoder": params["encoder"],
            "decoder": [{"b": untied["decoder"][0]["b"]}, {"b": untied["decoder"][1]["b"]}]}
    cfg_untied = model.ModelConfig((10, 6, 4), activation="elu")
    np.testing.assert_allclose(np.asarray(apply_jit(tied, jnp.asarray(x), cfg)),
                               np.asarray(apply_jit(untied, jnp.asarray(x), cfg_untied)),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_last_layer_linear(activation):
    n = 12
    cfg_lin = model.ModelConfig((n, 8, 4), activation=activation, last_layer_linear=True)
    cfg_act = model.ModelConfig((n, 8, 4), activation=activation)
    params = random_params(cfg_lin.layer_sizes, seed=7)
    x = _ratings(np.random.default_rng(2), 32, n)
    lin = np.asarray(apply_jit(params, jnp.asarray(x), cfg_lin))
    act = np.asarray(apply_jit(params, jnp.asarray(x), cfg_act))
    np.testing.assert_allclose(lin, numpy_forward(params, x, activation, False, True),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(act, numpy_forward(params, x, activation, False, False),
                               rtol=1e-5, atol=1e-5)
    if activation == "relu":
        assert act.min() >= 0.0
        assert lin.min() < 0.0
    if activation == "sigmoid":
        assert act.min() >= 0.0 and act.max() <= 1.0
        assert lin.min() < 0.0 or lin.max() > 1.0


# ---------------------------------------------------------------- dropout

DROP_CFG = model.ModelConfig((20, 64, 128), activation="selu", drop_prob=0.5)


@pytest.fixture(scope="module")
def drop_setup():
    """Parameters of DROP_CFG and a rating batch for the dropout tests."""
    params = random_params(DROP_CFG.layer_sizes, seed=11)
    x = jnp.asarray(_ratings(np.random.default_rng(3), 16, 20, density=0.6))
    return params, x


def test_dropout_train_depends_on_rng(drop_setup):
    params, x = drop_setup
    a = np.asarray(apply_jit(params, x, DROP_CFG, train=True, rng=jax.random.PRNGKey(0)))
    b = np.asarray(apply_jit(params, x, DROP_CFG, train=True, rng=jax.random.PRNGKey(1)))
    a2 = np.asarray(apply_jit(params, x, DROP_CFG, train=True, rng=jax.random.PRNGKey(0)))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, a2)


def test_dropout_off_at_evaluation(drop_setup):
    params, x = drop_setup
    no_drop = model.ModelConfig(DROP_CFG.layer_sizes, activation="selu", drop_prob=0.0)
    e1 = np.asarray(apply_jit(params, x, DROP_CFG, train=False))
    e2 = np.asarray(apply_jit(params, x, DROP_CFG, train=False, rng=jax.random.PRNGKey(4)))
    ref = np.asarray(apply_jit(params, x, no_drop, train=True, rng=jax.random.PRNGKey(4)))
    np.testing.assert_array_equal(e1, e2)
    np.testing.assert_allclose(e1, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(e1, numpy_forward(params, x, "selu", False), rtol=1e-5, atol=1e-5)


def test_dropout_is_inverted_and_on_the_code_layer_only(drop_setup):
    params, x = drop_setup
    p = DROP_CFG.drop_prob
    rng = jax.random.PRNGKey(21)
    code_eval = np.asarray(encode_jit(params, x, DROP_CFG, train=False), np.float64)
    code_train = np.asarray(encode_jit(params, x, DROP_CFG, train=True, rng=rng), np.float64)
    assert code_train.shape == (16, 128)
    np.testing.assert_allclose(code_eval, numpy_forward(
        {"encoder": params["encoder"], "decoder": []}, x, "selu", False), rtol=1e-5, atol=1e-5)
    assert np.all(code_eval != 0.0)
    dropped = code_train == 0.0
    # Kept units: exactly the evaluation code scaled by 1/(1-p) (so the input was not dropped).
    np.testing.assert_allclose(code_train[~dropped], code_eval[~dropped] / (1.0 - p),
                               rtol=1e-5, atol=1e-6)
    assert abs(dropped.mean() - p) < 0.06          # 2048 Bernoulli(0.5) draws
    # The decoder itself has no dropout: f(x) in training is the plain decoder of that code.
    out = np.asarray(apply_jit(params, x, DROP_CFG, train=True, rng=rng))
    want = numpy_forward(params, x, "selu", False, code_fn=lambda _: code_train)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_dropout_rate_follows_drop_prob():
    cfg = model.ModelConfig((10, 256), activation="selu", drop_prob=0.8)
    params = random_params(cfg.layer_sizes, seed=12)
    x = jnp.ones((32, 10), jnp.float32)
    code = np.asarray(encode_jit(params, x, cfg, train=True, rng=jax.random.PRNGKey(9)))
    code_eval = np.asarray(encode_jit(params, x, cfg, train=False))
    kept = code != 0
    assert abs((~kept).mean() - 0.8) < 0.03        # 8192 draws
    np.testing.assert_allclose(code[kept], code_eval[kept] * 5.0, rtol=1e-5)


# ---------------------------------------------------------------- config validation

@pytest.mark.parametrize("kwargs", [
    dict(layer_sizes=(10, 4), activation="gelu"),
    dict(layer_sizes=(10, 4), activation="SELU"),
    dict(layer_sizes=(10, 4), drop_prob=1.0),
    dict(layer_sizes=(10, 4), drop_prob=-0.1),
    dict(layer_sizes=()),
    dict(layer_sizes=(10,)),
    dict(layer_sizes=(10, 0)),
])
def test_bad_model_config_raises(kwargs):
    with pytest.raises(ValueError):
        model.ModelConfig(**kwargs)


def test_good_model_config_accepted():
    cfg = model.ModelConfig((10, 4, 2), activation="lrelu", drop_prob=0.0, constrained=True,
                            last_layer_linear=True)
    assert hash(cfg) == hash(model.ModelConfig((10, 4, 2), "lrelu", 0.0, True, True))


def dot_precisions(fn, *args) -> set[str]:
    """The precision attributes of every dot_general of ``fn`` lowered under jax's default
    matmul precision (so only precisions the code states itself show up as non-DEFAULT)."""
    import re
    with jax.default_matmul_precision("bfloat16"):  # jax's name of precision DEFAULT
        text = jax.jit(fn).lower(*args).as_text()
    dots = [l for l in text.splitlines() if "dot_general" in l]
    assert dots
    return {(re.search(r"precision = \[(\w+)", l) or [None, "DEFAULT"])[1] +
            (":bf16" if "xbf16>" in l else "") for l in dots}


@pytest.mark.parametrize("precision,want", [("float32", {"HIGHEST"}), ("tf32", {"HIGH"}),
                                            ("bfloat16", {"DEFAULT:bf16"})])
def test_matmul_precision_is_stated_in_every_dot(precision, want):
    """--matmul_precision reaches every matmul of the forward pass explicitly (float32: strict
    HIGHEST, not jax's backend-dependent default, which is TF32 on NVIDIA GPUs); the model's
    default forward pass is the strict float32 one."""
    cfg = model.ModelConfig((30, 8, 4), "selu", 0.0)
    params = model.init(jax.random.PRNGKey(0), cfg.layer_sizes)
    x = jnp.ones((3, 30))
    dot = model.make_dot(precision)
    assert dot_precisions(lambda p, x: model.apply(p, x, cfg, dot=dot), params, x) == want
    assert dot_precisions(lambda p, x: model.apply(p, x, cfg), params, x) == {"HIGHEST"}
    with pytest.raises(ValueError, match="matmul precision"):
        model.make_dot("float16")
