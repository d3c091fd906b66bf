"""The kernelised autoencoders (core/kernel_model.py): the sparse kernel layer (Muller et al. 2018)
and GLocal-K's global kernel (Han et al. 2021) against plainly written float64 numpy loops, the
gradient of the training objective against central finite differences (float64), the
initialisation of the public code, and config validation."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepae_jax.core import kernel_model as km


def np_kernel(u, v, kind="compact"):
    """K[i, j] by a loop over the pairs of embeddings."""
    k = np.zeros((u.shape[0], v.shape[0]))
    for i in range(u.shape[0]):
        for j in range(v.shape[0]):
            d2 = float(np.sum((u[i] - v[j]) ** 2))
            k[i, j] = max(0.0, 1.0 - d2) if kind == "compact" else np.exp(-d2)
    return k


def np_forward(params, x, kind="compact"):
    """The autoencoder, layer by layer, unit by unit: sigmoid hidden layers, linear output."""
    h = np.asarray(x, np.float64)
    for n, layer in enumerate(params):
        w = np.asarray(layer["w"], np.float64) * np_kernel(
            np.asarray(layer["u"], np.float64), np.asarray(layer["v"], np.float64), kind)
        out = np.zeros((h.shape[0], w.shape[1]))
        for r in range(h.shape[0]):
            for j in range(w.shape[1]):
                out[r, j] = sum(h[r, i] * w[i, j] for i in range(w.shape[0])) + layer["b"][j]
        h = out if n == len(params) - 1 else 1.0 / (1.0 + np.exp(-out))
    return h


def np_global_conv(r, k):
    """relu of the 'SAME' cross-correlation, pixel by pixel, zeros outside the matrix."""
    g, (n, m) = k.shape[0], r.shape
    out = np.zeros((n, m))
    for i in range(n):
        for j in range(m):
            s = 0.0
            for a in range(g):
                for b in range(g):
                    ii, jj = i + a - g // 2, j + b - g // 2
                    if 0 <= ii < n and 0 <= jj < m:
                        s += k[a, b] * r[ii, jj]
            out[i, j] = max(s, 0.0)
    return out


def _spread(params, rng, scale=0.4):
    """Embeddings spread out so that some kernel entries are exactly 0 (the sparse regime)."""
    return [dict(p, u=jnp.asarray(rng.normal(0, scale, p["u"].shape), jnp.float32),
                 v=jnp.asarray(rng.normal(0, scale, p["v"].shape), jnp.float32))
            for p in params]


def _ratings(rng, n_rows, n_cols, density=0.4):
    r = rng.integers(1, 6, (n_rows, n_cols)).astype(np.float32)
    return r * (rng.random((n_rows, n_cols)) < density)


CFG = km.KernelConfig((7, 5, 4), kernel_dim=3, lambda_2=0.3, lambda_s=0.2)


@pytest.mark.parametrize("kind", km.KERNELS)
def test_forward_matches_numpy(kind):
    cfg = km.KernelConfig((7, 5, 4), kernel_dim=3, kernel=kind)
    rng = np.random.default_rng(0)
    params = _spread(km.init(jax.random.PRNGKey(1), cfg), rng)
    x = _ratings(rng, 6, 7)
    want = np_forward(params, x, kind)
    np.testing.assert_allclose(np.asarray(km.apply(params, jnp.asarray(x), cfg)), want,
                               rtol=1e-5, atol=1e-5)
    if kind == "compact":  # the spread embeddings disconnect some pairs: a sparse layer
        assert (np_kernel(np.asarray(params[0]["u"]), np.asarray(params[0]["v"])) == 0).any()


def test_layer_shapes_and_initialisation():
    shapes = jax.eval_shape(lambda k: km.init(k, km.KernelConfig((943, 500, 500))),
                            jax.random.PRNGKey(0))
    assert [p["w"].shape for p in shapes] == [(943, 500), (500, 500), (500, 943)]
    assert [(p["u"].shape, p["v"].shape) for p in shapes][0] == ((943, 5), (500, 5))
    params = km.init(jax.random.PRNGKey(0), km.KernelConfig((94, 50, 50), kernel_dim=5))
    for p in params:
        n_in, n_out = p["w"].shape
        assert np.abs(p["w"]).max() <= (6 / (n_in + n_out)) ** 0.5
        assert np.abs(p["b"]).max() <= (3 / n_out) ** 0.5
        assert 0.0 < np.abs(p["u"]).max() <= 2e-3 and np.abs(p["v"]).max() <= 2e-3
        k = np_kernel(np.asarray(p["u"], np.float64), np.asarray(p["v"], np.float64))
        assert k.min() > 0.9999  # the layer starts dense: K close to 1 everywhere
    conv = km.init_global(jax.random.PRNGKey(0), 1682, 3)["conv"]
    assert conv.shape == (1682, 9) and np.abs(conv).max() <= 0.2
    assert abs(float(conv.std()) - 0.088) < 0.01  # a normal with sd 0.1 cut at 2 sd


def test_regulariser_matches_numpy():
    rng = np.random.default_rng(2)
    params = _spread(km.init(jax.random.PRNGKey(3), CFG), rng)
    want = sum(0.5 * CFG.lambda_2 * np.sum(np.asarray(p["w"], np.float64) ** 2)
               + 0.5 * CFG.lambda_s * np.sum(np_kernel(np.asarray(p["u"], np.float64),
                                                       np.asarray(p["v"], np.float64)) ** 2)
               for p in params)
    assert float(km.regulariser(params, CFG)) == pytest.approx(want, rel=1e-5)


def test_global_conv_matches_numpy_and_lax_conv():
    rng = np.random.default_rng(4)
    r = _ratings(rng, 9, 6)
    for g in (1, 3, 5):
        k = rng.normal(0, 1, (g, g))
        got = np.asarray(km.global_conv(jnp.asarray(r), jnp.asarray(k, jnp.float32)))
        np.testing.assert_allclose(got, np_global_conv(r, k), rtol=1e-5, atol=1e-5)
        lax = jax.lax.conv_general_dilated(jnp.asarray(r)[None, None],
                                           jnp.asarray(k, jnp.float32)[None, None], (1, 1),
                                           "SAME")[0, 0]
        np.testing.assert_allclose(got, np.maximum(np.asarray(lax), 0), rtol=1e-5, atol=1e-5)


def test_glocal_forward_matches_numpy():
    rng = np.random.default_rng(5)
    cfg = km.KernelConfig((7, 5, 4), kernel_dim=3, gk_size=3, dot_scale=0.7)
    params = _spread(km.init(jax.random.PRNGKey(6), cfg), rng)
    glob = km.init_global(jax.random.PRNGKey(7), 8, 3)
    r = _ratings(rng, 8, 7)
    local = np_forward(params, r)
    kernel = (local.mean(axis=1) @ np.asarray(glob["conv"], np.float64) * 0.7).reshape(3, 3)
    want = np_forward(params, np_global_conv(r, kernel))
    got = km.apply_glocal(params, glob, jnp.asarray(r), cfg)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def _fd_check(f, params, seed, eps=1e-6, n_dirs=4):
    """grad . d against (f(p + eps d) - f(p - eps d)) / (2 eps) along random directions d."""
    f = jax.jit(f)
    grad = jax.jit(jax.grad(f))(params)
    rng = np.random.default_rng(seed)
    for _ in range(n_dirs):
        d = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.normal(size=x.shape)), params)
        step = lambda s: jax.tree_util.tree_map(lambda p, dd: p + s * dd, params, d)
        fd = (float(f(step(eps))) - float(f(step(-eps)))) / (2 * eps)
        an = sum(float(jnp.sum(g * dd)) for g, dd in zip(jax.tree_util.tree_leaves(grad),
                                                         jax.tree_util.tree_leaves(d)))
        assert an == pytest.approx(fd, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("stage", ["local", "glocal"])
def test_objective_gradient_by_finite_differences(stage):
    with jax.enable_x64(True):
        rng = np.random.default_rng(8)
        to64 = lambda t: jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), t)
        params = to64(_spread(km.init(jax.random.PRNGKey(9), CFG), rng, 0.3))
        glob = to64(km.init_global(jax.random.PRNGKey(10), 6, 3))
        r = jnp.asarray(_ratings(rng, 6, 7), jnp.float64)
        mask = (r != 0).astype(jnp.float64)
        if stage == "local":
            f = lambda p: km.objective(km.apply(p, r, CFG), r, mask, p, CFG)
            _fd_check(f, params, 11)
        else:
            f = lambda p: km.objective(km.apply_glocal(p[0], p[1], r, CFG), r, mask, p[0], CFG)
            _fd_check(f, (params, glob), 12)


def test_objective_is_half_the_masked_sse_plus_regulariser():
    rng = np.random.default_rng(13)
    params = km.init(jax.random.PRNGKey(14), CFG)
    r = _ratings(rng, 5, 7)
    pred = rng.normal(3, 1, r.shape).astype(np.float32)
    mask = (r != 0).astype(np.float32)
    sse = sum((pred[i, j] - r[i, j]) ** 2 for i in range(5) for j in range(7) if r[i, j])
    got = km.objective(jnp.asarray(pred), jnp.asarray(r), jnp.asarray(mask), params, CFG)
    assert float(got) == pytest.approx(0.5 * sse + float(km.regulariser(params, CFG)), rel=1e-5)


@pytest.mark.parametrize("bad", [dict(layer_sizes=(5,)), dict(kernel="rbf"),
                                 dict(activation="softmax"), dict(gk_size=2),
                                 dict(kernel_dim=0), dict(lambda_s=-1.0)])
def test_config_rejects(bad):
    with pytest.raises(ValueError):
        km.KernelConfig(**{"layer_sizes": (5, 3), **bad})
