"""The CPU kernels (deepae_jax.kernels: csrc/sparse_cpu.cc) against plain jax/numpy, the
kernel branch of the step against the XLA path, and the fused sparse update."""
from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from deepae_jax import kernels
from deepae_jax.core import model, optim
from deepae_jax.core import step as core_step
from deepae_jax.core.ops import XLA
from deepae_jax import devices
from deepae_jax.training import resident
from deepae_jax.kernels import ffi, update
from deepae_jax.data import batching
from tests.test_fastpath import N_COLS, assert_trees_close, batch_rows, random_csr

needs_kernels = pytest.mark.skipif(not kernels.available(),
                                   reason="CPU kernels not built here (no C++ compiler?)")


def scatter_reference(src, idx, key, scale, m):
    out = np.zeros((m, src.shape[1]), np.float64)
    for i, k, a in zip(idx, key, scale):
        if a != 0 and 0 <= k < m and 0 <= i < src.shape[0]:
            out[k] += a * np.asarray(src[i], np.float64)
    return out


@needs_kernels
@pytest.mark.parametrize("m", [1, 7, 200])
def test_scatter_axpy_matches_loop(m):
    rng = np.random.default_rng(m)
    src = rng.normal(size=(30, 33)).astype(np.float32)
    t = 500
    idx = rng.integers(0, 30, t).astype(np.int32)
    key = rng.integers(0, m, t).astype(np.int32)  # many duplicates: sums
    scale = rng.normal(size=t).astype(np.float32)
    scale[::7] = 0.0  # skipped
    key[3], idx[5] = m + 4, -1  # out of range: skipped, like XLA's dropped scatter updates
    got = jax.jit(ffi.scatter_axpy, static_argnums=4)(src, idx, key, scale, m)
    np.testing.assert_allclose(np.asarray(got), scatter_reference(src, idx, key, scale, m),
                               rtol=1e-5, atol=1e-5)


@needs_kernels
def test_rowdot_and_momentum_match_formulas():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(50, 70)).astype(np.float32)
    h = rng.normal(size=(6, 70)).astype(np.float32)
    cols = rng.integers(0, 50, 40).astype(np.int32)
    rows = rng.integers(0, 6, 40).astype(np.int32)
    active = (rng.random(40) > 0.3).astype(np.float32)
    got = np.asarray(jax.jit(ffi.rowdot)(w, h, cols, rows, active))
    want = np.where(active != 0, np.einsum("th,th->t", h[rows], w[cols]), 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    cols[0], rows[1], active[:2] = 50, -1, 1.0  # out of range: 0
    got = np.asarray(jax.jit(ffi.rowdot)(w, h, cols, rows, active))
    assert got[0] == 0.0 and got[1] == 0.0
    np.testing.assert_allclose(got[2:], want[2:], rtol=1e-5, atol=1e-5)

    p, tr, g = (rng.normal(size=(300, 400)).astype(np.float32) for _ in range(3))
    p2, t2 = jax.jit(ffi.momentum, static_argnums=4)(p, tr, g, 0.01, 0.9)
    t_want = g + np.float32(0.9) * tr
    np.testing.assert_allclose(np.asarray(t2), t_want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(p2), p - np.float32(0.01) * t_want, rtol=1e-6,
                               atol=1e-6)
    after = jax.jit(lambda *a: ffi.momentum(*a, 0.9, after=(h, cols)))(p, tr, g, 0.01)
    for a, b in zip(after, (p2, t2)):  # operands to wait for change nothing
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    src = rng.normal(size=(6, 400)).astype(np.float32)
    idx = rng.integers(0, 6, 90).astype(np.int32)
    key = rng.integers(0, 300, 90).astype(np.int32)
    scale = rng.normal(size=90).astype(np.float32)
    fused = jax.jit(ffi.sparse_momentum, static_argnums=7)(p, tr, src, idx, key, scale,
                                                                   0.01, 0.9)
    dense_g = ffi.scatter_axpy(src, idx, key, scale, 300)
    plain = jax.jit(ffi.momentum, static_argnums=4)(p, tr, dense_g, 0.01, 0.9)
    for a, b in zip(fused, plain):  # the same sums in the same order: identical
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    key[:3] = 299  # several slots on one row, and rows in every task
    with_grad = jax.jit(ffi.sparse_momentum_grad, static_argnums=7)(
        p, tr, src, idx, key, scale, 0.01, 0.9)
    fused = jax.jit(ffi.sparse_momentum, static_argnums=7)(p, tr, src, idx, key, scale,
                                                                   0.01, 0.9)
    for a, b in zip(with_grad[:2], fused):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    d_src = np.zeros(src.shape)
    np.add.at(d_src, idx, scale[:, None].astype(np.float64) * p[key])  # at the old p
    np.testing.assert_allclose(np.asarray(with_grad[2]), d_src, rtol=1e-5, atol=1e-5)


@needs_kernels
def test_sparse_path_same_with_and_without_kernels():
    csr = random_csr(4)
    rows = batch_rows(csr)
    batch = batching.packed_rows(csr, rows)
    cfg = model.ModelConfig((N_COLS, 16, 12), "selu", 0.5)
    opt = optax.sgd(0.01, momentum=0.9)
    state = core_step.create_train_state(jax.random.PRNGKey(0), cfg, opt)

    def run(ops):
        return jax.jit(core_step.make_train_step(cfg, opt, 1, path="sparse", ops=ops))(state,
                                                                                     batch)
    s_kernels, m_kernels = run(kernels.cpu_ops())
    s_xla, m_xla = run(XLA)
    np.testing.assert_allclose(m_kernels["loss"], m_xla["loss"], rtol=1e-6)
    assert_trees_close(s_kernels.params, s_xla.params, tol=1e-6)


@needs_kernels
@pytest.mark.parametrize("aug_step,drop_prob,constrained",
                         [(0, 0.5, False), (0, 0.0, True), (1, 0.5, True), (1, 0.5, False),
                          (2, 0.0, False)])
def test_fused_momentum_step_matches_dense_optax_step(aug_step, drop_prob, constrained):
    """make_optimizer("momentum") on the sparse path (gradients of the item-sized layers as
    SparseRows, fused update kernels) == optax.sgd on the dense path, over three steps with
    the learning-rate schedule stepping in between."""
    csr = random_csr(5)
    cfg = model.ModelConfig((N_COLS, 16, 12), "selu", drop_prob, constrained)
    fused_opt = optim.make_optimizer("momentum", 0.02, 0.0, updates_per_epoch=1)
    plain_opt = optax.sgd(optim.multistep_lr(0.02, 1), momentum=0.9)
    ops = kernels.cpu_ops(*optim.plain_momentum("momentum", 0.02, 0.0, updates_per_epoch=1))
    assert ops.sparse_update is not None and ops.momentum_update is not None
    fused = jax.jit(core_step.make_train_step(cfg, fused_opt, aug_step, path="sparse", ops=ops))
    dense = jax.jit(core_step.make_train_step(cfg, plain_opt, aug_step))
    s1 = s2 = core_step.create_train_state(jax.random.PRNGKey(3), cfg, plain_opt)
    for i in range(3):
        rows = batch_rows(csr, i=i)
        s1, m1 = dense(s1, batching.dense_rows(csr, rows))
        s2, m2 = fused(s2, batching.packed_rows(csr, rows))
        np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-5)
    assert_trees_close(s2.params, s1.params)
    assert_trees_close(s2.opt_state, s1.opt_state)


@needs_kernels
@pytest.mark.parametrize("aug_step", [0, 1])
def test_fused_step_updates_weights_without_copies(aug_step):
    """The compiled sparse momentum step updates every weight matrix in place: XLA puts no copy
    of one in front of its update (the momentum update's ``after``; a copy of the two item-sized
    matrices cost ~15% of the step at the paper's sizes)."""
    csr = random_csr(6)
    cfg = model.ModelConfig((N_COLS, 16, 12), "selu", 0.5)
    opt = optim.make_optimizer("momentum", 0.02, 0.0, updates_per_epoch=1)
    ops = kernels.cpu_ops(*optim.plain_momentum("momentum", 0.02, 0.0, updates_per_epoch=1))
    step = core_step.make_train_step(cfg, opt, aug_step, path="sparse", ops=ops)
    runner = resident.ResidentEpochs(step, csr, 8, seed=0, steps_per_call=2)
    state = devices.replicated_on(core_step.create_train_state(jax.random.PRNGKey(0), cfg, opt),
                                runner.replicated)
    rows, n, width = next(iter(runner.batches(0)))
    hlo = runner._multi.lower(state, runner.data, rows, n, width).compile().as_text()
    shapes = {f"f32[{a},{b}]" for a, b in [(N_COLS, 16), (16, N_COLS), (16, 12), (12, 16)]}
    copies = [line for line in hlo.splitlines()
              if " copy(" in line and line.split("=")[1].split("{")[0].strip() in shapes]
    assert not copies, copies


def test_sparse_rows_and_the_fused_update_match_optax():
    """A SparseRows gradient is the scatter it stands for, and apply_momentum with it (kernel
    summing it inside the update) is optax.sgd's update with the dense gradient."""
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.normal(size=(9, 4)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}
    src = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    g = update.SparseRows(src, jnp.asarray([0, 2, 2]), jnp.asarray([8, 1, 8]),
                          jnp.asarray([1.0, -2.0, 0.5], jnp.float32))
    dense = np.zeros((9, 4), np.float32)
    dense[8] = src[0] + 0.5 * src[2]
    dense[1] = -2.0 * src[2]
    np.testing.assert_allclose(np.asarray(g.dense((9, 4))), dense, rtol=1e-6)
    opt = optim.make_optimizer("momentum", 0.1, 0.0, updates_per_epoch=1)
    schedule, momentum = optim.plain_momentum("momentum", 0.1, 0.0, updates_per_epoch=1)
    state = opt.init(params)
    g_b = params["b"] * 2.0
    for _ in range(2):  # the second update reads the first's trace
        want, want_state = optim.apply_gradients(opt, {"w": jnp.asarray(dense), "b": g_b},
                                                 state, params)
        got, got_state = jax.jit(lambda s, p: update.apply_momentum(
            schedule, momentum, {"w": g, "b": g_b}, s, p))(state, params)
        assert_trees_close(got, want, tol=1e-6)
        assert_trees_close(got_state, want_state, tol=1e-6)
        params, state = want, want_state


def test_build_is_cached_and_a_missing_compiler_falls_back(tmp_path):
    if ffi._compiler() is None:
        pytest.skip("no C++ compiler here")
    first = kernels.build(str(tmp_path))
    assert os.path.exists(first) and kernels.build(str(tmp_path)) == first
    assert [f for f in os.listdir(tmp_path) if f.endswith(".so")] == [os.path.basename(first)]
    code = ("import logging, jax; logging.basicConfig();"
            "from deepae_jax import kernels; print('enabled', kernels.available())")
    env = dict(os.environ, CXX="/bin/false", DEEPAE_JAX_CACHE=str(tmp_path / "empty"),
               JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert "enabled False" in done.stdout, done.stderr
    assert "CPU kernels unavailable" in done.stderr
    env = dict(os.environ, DEEPAE_JAX_CPU_KERNELS="0", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert "enabled False" in done.stdout, done.stderr
