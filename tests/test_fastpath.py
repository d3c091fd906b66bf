"""The sparse fast path computes what the plain dense path computes (loss, gradients, updates)."""
from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.sparse as sp

from deepae_jax.core import model, sparse
from deepae_jax.core import step as core_step
from deepae_jax.training import resident
from deepae_jax.data import batching, device_csr
from deepae_jax.evaluation.protocol import (evaluate, predict_at, predict_eval_ratings,
                                            predict_sparse_at)
from deepae_jax.core.optim import make_optimizer, plain_momentum
from deepae_jax.core.ops import XLA
from deepae_jax import kernels
from conftest import matmul_rtol

N_ROWS, N_COLS, BATCH = 40, 60, 8


def random_csr(seed=0, n_rows=N_ROWS, n_cols=N_COLS, heavy=True):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 12, n_rows)
    if heavy:
        counts[rng.integers(0, n_rows, 3)] = rng.integers(30, n_cols, 3)  # a heavy tail
    rows, cols = [], []
    for r, c in enumerate(counts):
        rows += [r] * int(c)
        cols += sorted(rng.choice(n_cols, int(c), replace=False).tolist())
    vals = rng.integers(1, 6, len(rows)).astype(np.float32)
    return sp.csr_matrix((vals, (rows, cols)), shape=(n_rows, n_cols), dtype=np.float32)


def recorder(n_updates, lr=0.01):
    """An optimiser that applies plain SGD and keeps every gradient it was given."""
    def init(params):
        return (jnp.zeros((), jnp.int32),
                jax.tree_util.tree_map(lambda p: jnp.zeros((n_updates,) + p.shape), params))

    def update(grads, state, params=None):
        i, buf = state
        buf = jax.tree_util.tree_map(lambda b, g: b.at[i].set(g), buf, grads)
        return jax.tree_util.tree_map(lambda g: -lr * g, grads), (i + 1, buf)
    return optax.GradientTransformation(init, update)


def assert_trees_close(a, b, tol=1e-5):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        scale = max(1.0, float(np.abs(y).max(initial=0)))
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol * scale)


def batch_rows(csr, epoch=0, i=0):
    perm = batching.epoch_permutation(csr.shape[0], 3, epoch)
    return perm[i * BATCH:(i + 1) * BATCH]


@functools.lru_cache(maxsize=None)
def steps(aug_step, drop_prob, constrained, layers):
    cfg = model.ModelConfig((N_COLS, 16, 12), "selu", drop_prob, constrained)
    opt = recorder(1 + aug_step)
    dense = jax.jit(core_step.make_train_step(cfg, opt, aug_step, 0.0))
    fast = jax.jit(core_step.make_train_step(cfg, opt, aug_step, 0.0, path="sparse",
                                         layers=layers))
    state = core_step.create_train_state(jax.random.PRNGKey(1), cfg, opt)
    return dense, fast, state


# aug_step 0, 1, 2 x dropout off/on, each with the tied and the untied decoder, both batch
# layouts and both formulations of the n-wide layers spread over the cases (compiles are the
# cost here).
CASES = [  # (aug_step, drop_prob, constrained, layout, layers)
    (0, 0.0, False, "packed", "sparse"), (0, 0.5, True, "padded", "sparse"),
    (0, 0.5, False, "packed", "dense"), (1, 0.0, True, "packed", "sparse"),
    (1, 0.5, False, "padded", "dense"), (1, 0.5, True, "packed", "dense"),
    (2, 0.0, False, "packed", "dense"), (2, 0.5, True, "packed", "sparse"),
]


@pytest.mark.parametrize("aug_step,drop_prob,constrained,layout,layers", CASES)
def test_same_loss_and_gradients(aug_step, drop_prob, constrained, layout, layers):
    csr = random_csr()
    rows = batch_rows(csr)
    x = batching.dense_rows(csr, rows)
    if layout == "packed":
        batch = batching.packed_rows(csr, rows)
    else:
        cols, vals = batching.padded_rows(csr, rows)
        batch = {"cols": cols, "vals": vals}
    dense, fast, state = steps(aug_step, drop_prob, constrained, layers)
    s1, m1 = dense(state, x)
    s2, m2 = fast(state, batch)
    np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-5)
    np.testing.assert_allclose(m2["refeed_loss"], m1["refeed_loss"], rtol=1e-5)
    assert_trees_close(s2.opt_state[1], s1.opt_state[1])  # every gradient of the step
    assert_trees_close(s2.params, s1.params)


def test_same_parameters_after_several_steps():
    csr = random_csr(1)
    cfg = model.ModelConfig((N_COLS, 16, 12), "selu", 0.5)
    opt = optax.sgd(0.01, momentum=0.9)
    dense = jax.jit(core_step.make_train_step(cfg, opt, 1))
    fast = jax.jit(core_step.make_train_step(cfg, opt, 1, path="sparse"))
    s1 = s2 = core_step.create_train_state(jax.random.PRNGKey(2), cfg, opt)
    losses1, losses2 = [], []
    for x, b in zip(batching.dense_batches(csr, BATCH, 5, 0),
                    batching.sparse_batches(csr, BATCH, 5, 0)):
        s1, m1 = dense(s1, x)
        s2, m2 = fast(s2, b)
        losses1.append(m1["loss"])
        losses2.append(m2["loss"])
    assert len(losses1) == N_ROWS // BATCH
    np.testing.assert_allclose(losses2, losses1, rtol=1e-5)
    assert_trees_close(s2.params, s1.params)


def test_resident_epoch_matches_host_batches():
    csr = random_csr(2)
    cfg = model.ModelConfig((N_COLS, 16, 12), "selu", 0.5)
    opt = optax.sgd(0.01, momentum=0.9)
    step = core_step.make_train_step(cfg, opt, 1, path="sparse")
    s0 = core_step.create_train_state(jax.random.PRNGKey(2), cfg, opt)
    s1 = s0
    for b in batching.sparse_batches(csr, BATCH, 5, 1):
        s1, _ = jax.jit(step)(s1, b)
    runner = resident.ResidentEpochs(step, csr, BATCH, seed=5, steps_per_call=2)
    s2, losses = core_step.train_epoch(s0, runner.step_fn, runner.batches(1), runner.num_calls(1),
                                   epoch=1)
    assert losses.shape == (N_ROWS // BATCH,)
    assert_trees_close(s2.params, s1.params)
    # full calls and the shorter remainder: one program (a fresh, uncommitted state must not
    # make the second call compile again)
    assert runner._multi._cache_size() == 1


def test_packed_layout_and_sharding():
    csr = random_csr(3)
    rows = batch_rows(csr)
    b = batching.packed_rows(csr, rows, num_shards=2)
    dense = batching.dense_rows(csr, rows)
    for s in range(2):
        part = {k: jnp.asarray(v[s * 4:(s + 1) * 4]) for k, v in b.items()}
        got = sparse.Slots.from_batch(part).dense(N_COLS)
        np.testing.assert_array_equal(got, dense[s * 4:(s + 1) * 4])
    data = device_csr.DeviceRatings.from_csr(csr)
    width = batching.packed_width(np.diff(csr.indptr)[rows], BATCH)
    on_device = device_csr.gather_packed(data, jnp.asarray(rows, jnp.int32), width)
    host = batching.packed_rows(csr, rows, width)
    for k in host:
        np.testing.assert_array_equal(np.asarray(on_device[k]), host[k])


@pytest.mark.parametrize("constrained", [False, True])
def test_sparse_evaluation_matches_dense(constrained):
    train_csr, eval_csr = random_csr(4), random_csr(5, heavy=False)
    cfg = model.ModelConfig((N_COLS, 16, 12), "selu", 0.5, constrained)
    params = model.init(jax.random.PRNGKey(3), cfg.layer_sizes, constrained)
    rows = np.flatnonzero(np.diff(eval_csr.indptr))
    sse = count = 0.0
    for r in rows:
        lo, hi = eval_csr.indptr[r], eval_csr.indptr[r + 1]
        cols = eval_csr.indices[lo:hi][None]
        pred = predict_at(params, batching.dense_rows(train_csr, [r]), cols, cfg)
        sse += float(np.sum((np.asarray(pred)[0] - eval_csr.data[lo:hi]) ** 2))
        count += hi - lo
    got = evaluate(params, cfg, train_csr, eval_csr, batch_size=16)
    assert got.count == count
    np.testing.assert_allclose(got.sse, sse, rtol=1e-5)
    seen = sum(len(p) for _, _, p, _ in predict_eval_ratings(params, cfg, train_csr, eval_csr,
                                                              batch_size=7))
    assert seen == count


def test_bfloat16_option_is_close():
    csr = random_csr(6)
    rows = batch_rows(csr)
    cfg = model.ModelConfig((N_COLS, 16, 12), "selu", 0.0)
    opt = optax.sgd(0.01)
    state = core_step.create_train_state(jax.random.PRNGKey(1), cfg, opt)
    _, m32 = jax.jit(core_step.make_train_step(cfg, opt, 1, path="sparse"))(
        state, batching.packed_rows(csr, rows))
    _, m16 = jax.jit(core_step.make_train_step(cfg, opt, 1, path="sparse", precision="bfloat16"))(
        state, batching.packed_rows(csr, rows))
    np.testing.assert_allclose(m16["loss"], m32["loss"], rtol=matmul_rtol("bfloat16"))
    with pytest.raises(ValueError):
        core_step.make_train_step(cfg, opt, 1, path="sparse", precision="float16")


def test_gather_packed_with_empty_rows_and_overflow():
    """Rows without ratings, and a width too small for the batch (the excess is dropped), give
    the host layout's slots: rows filled in order, row ids as a binary search would find."""
    rng = np.random.default_rng(7)
    counts = np.array([0, 3, 0, 0, 5, 1, 0, 4])
    indptr = np.concatenate([[0], np.cumsum(counts)])
    csr = sp.csr_matrix((rng.integers(1, 6, indptr[-1]).astype(np.float32),
                         rng.integers(0, N_COLS, indptr[-1]), indptr), shape=(8, N_COLS))
    data = device_csr.DeviceRatings.from_csr(csr)
    rows = jnp.arange(8, dtype=jnp.int32)
    for width in (2, 1):  # 16 slots for 13 ratings; 8 slots: the last 5 are dropped
        got = device_csr.gather_packed(data, rows, width)
        slot = np.arange(8 * width)
        ends = np.cumsum(counts)
        seg = np.minimum(np.searchsorted(ends, slot, side="right"), 7)
        valid = slot < ends[-1]
        np.testing.assert_array_equal(np.asarray(got["rows"]).ravel(), seg)
        src = np.where(valid, indptr[seg] + slot - (ends[seg] - counts[seg]), 0)
        np.testing.assert_array_equal(np.asarray(got["cols"]).ravel(),
                                      np.where(valid, csr.indices[src], 0))
        np.testing.assert_array_equal(np.asarray(got["vals"]).ravel(),
                                      np.where(valid, csr.data[src], 0.0))


def lowered_for_cuda(path, layers="auto", aug_step=1, step_only=False):
    """The MLIR text of a 2-iteration call of the resident runner (``step_only``: of one
    training step), lowered for CUDA."""
    csr = random_csr(3)
    cfg = model.ModelConfig((N_COLS, 16, 12), "selu", 0.5)
    opt = make_optimizer("momentum", 0.01, 0.0, 10)
    ops = XLA
    if path == "cpu_kernels":  # the CPU kernels' ops with their fused momentum updates
        path, ops = "sparse", kernels.cpu_ops(*plain_momentum("momentum", 0.01, 0.0, 10)) or XLA
    step = core_step.make_train_step(cfg, opt, aug_step, path=path, layers=layers, ops=ops)
    runner = resident.ResidentEpochs(step,
                                  csr, BATCH, seed=0, steps_per_call=2)
    rows, n, width = next(iter(runner.batches(0)))
    state = core_step.create_train_state(jax.random.PRNGKey(0), cfg, opt)
    if step_only:  # one iteration on a batch gathered beforehand: the step's own program
        batch = jax.vmap(device_csr.gather_packed, in_axes=(None, 0, None))(runner.data,
                                                                            rows[0], width)
        return jax.export.export(jax.jit(step), platforms=["cuda"])(state,
                                                                    batch).mlir_module()
    exported = jax.export.export(jax.jit(functools.partial(runner.scan, width=width)),
                                 platforms=["cuda"])(state, runner.data, rows, n)
    return exported.mlir_module()


def n_wide_dots(text):
    """How many matmuls take the (batch, N_COLS) input or output as an operand."""
    return len(re.findall(rf"stablehlo.dot_general[^\n]*tensor<{BATCH}x{N_COLS}xf32>", text))


@pytest.mark.parametrize("path,layers", [("sparse", "sparse"), ("sparse", "dense"),
                                         ("cpu_kernels", "auto")])
def test_step_lowered_for_a_gpu_has_no_loop(path, layers):
    """The XLA path lowered for CUDA (jax.export, no GPU needed): the training step (the
    gather-sums, the output at the observed items) has no loop, such as a chunk loop over the
    slots (the call's loop over its iterations, and whatever loops jax lowers the on-device
    batch gathering to, are outside it), and the cpu_kernels path lowers to that same XLA path
    off the CPU: its kernel branch is chosen at lowering time, for the CPU platform only (no
    custom call)."""
    assert "stablehlo.while" not in lowered_for_cuda(path, layers, step_only=True)
    assert "custom_call" not in lowered_for_cuda(path, layers)


def test_layers_auto_lowers_the_formulation_the_rule_picks():
    """``layers="auto"`` off the CPU is the formulation ``sparse.n_wide_layers`` picks for the
    batch's shape (here dense: 8 rows of a 60-item matrix, 16 units): without re-feeding, the
    dense one's matmuls with the n-wide batch appear in the step lowered for CUDA, and not in
    the sparse one's."""
    assert n_wide_dots(lowered_for_cuda("sparse", "sparse", aug_step=0)) == 0
    dense = n_wide_dots(lowered_for_cuda("sparse", "dense", aug_step=0))
    assert dense > 0
    assert n_wide_dots(lowered_for_cuda("sparse", "auto", aug_step=0)) == dense


def test_n_wide_layers_rule():
    """Dense for Netflix-shaped batches (128 rows, 512 slots each, 17,768 items, 512 units);
    sparse for very wide, very sparse rows (200,000 items, 16 ratings a row)."""
    assert sparse.n_wide_layers(128, 128 * 512, 17_768, 512) == "dense"
    assert sparse.n_wide_layers(128, 128 * 16, 200_000, 512) == "sparse"


@pytest.mark.parametrize("layers", ["sparse", "dense"])
def test_float32_step_and_evaluation_are_strict_float32_in_every_dot(layers):
    """The training step (forward, gradients, re-feeding) and the evaluation at the default
    precision state HIGHEST in every matmul (the result does not depend on jax's default
    precision of the backend)."""
    from test_model import dot_precisions
    csr = random_csr(8)
    cfg = model.ModelConfig((N_COLS, 16, 12), "selu", 0.5)
    opt = optax.sgd(0.01, momentum=0.9)
    state = core_step.create_train_state(jax.random.PRNGKey(0), cfg, opt)
    step = core_step.make_train_step(cfg, opt, 1, path="sparse", layers=layers)
    assert dot_precisions(step, state, batching.packed_rows(csr, batch_rows(csr))) == {
        "HIGHEST"}
    batch = batching.packed_rows(csr, batch_rows(csr))
    cols = jnp.zeros((BATCH, 4), jnp.int32)
    assert dot_precisions(lambda p, b, c: predict_sparse_at(p, b, c, cfg), state.params,
                          batch, cols) == {"HIGHEST"}
