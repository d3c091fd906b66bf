"""The training step with dense re-feeding (PAPER.md, "Training step") against an independent
numpy implementation (forward pass, masked MSE, hand-written backprop, PyTorch SGD momentum), and
the epoch loop (batches, determinism, divergence)."""
from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from deepae_jax.core import model, optim
from deepae_jax.core import step as core_step
from deepae_jax.data.batching import dense_batches, dense_rows, epoch_permutation, num_batches

N, HIDDEN, BATCH = 12, (5, 3), 4
LR, MOMENTUM = 0.02, 0.9
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


# ---------------------------------------------------------------- the numpy reference

def np_selu(z):
    """SELU with its standard constants, float64."""
    return SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * (np.exp(np.minimum(z, 0.0)) - 1.0))


def np_selu_grad(z):
    """d selu / dz: scale for z > 0, scale * alpha * e^z otherwise."""
    return SELU_SCALE * np.where(z > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(z, 0.0)))


def np_layers(params, constrained):
    """The 2k layers in forward order as (W, b, where): ``where`` names the parameter that W
    comes from, (part, index, transposed): ("encoder", i, False), ("decoder", j, False), the last
    untied decoder layer ("decoder", k-1, True) (stored as (out, in)) or, tied, ("encoder", i, True)
    for the transpose of encoder layer i; b is always the layer's own bias."""
    k = len(params["encoder"])
    layers = [(l["w"], l["b"], ("encoder", i, False)) for i, l in enumerate(params["encoder"])]
    for j, l in enumerate(params["decoder"]):
        if constrained:
            i = k - 1 - j
            layers.append((params["encoder"][i]["w"].T, l["b"], ("encoder", i, True)))
        else:
            last = j == len(params["decoder"]) - 1  # stored as (out, in)
            layers.append((l["w"].T if last else l["w"], l["b"], ("decoder", j, last)))
    return layers


def np_loss_and_grads(params, inputs, targets, constrained):
    """MMSE(f(inputs), targets) (mask targets != 0), the output f(inputs) and the gradient of the
    loss w.r.t. every parameter, by backpropagation written out layer by layer (selu on every
    layer, no dropout). All float64."""
    layers = np_layers(params, constrained)
    acts, pres = [inputs], []
    for w, b, _ in layers:
        pres.append(acts[-1] @ w + b)
        acts.append(np_selu(pres[-1]))
    y = acts[-1]
    mask = (targets != 0).astype(np.float64)
    count = max(mask.sum(), 1.0)
    loss = np.sum(mask * (y - targets) ** 2) / count
    grads = jax.tree.map(np.zeros_like, params)
    d_act = 2.0 * mask * (y - targets) / count
    for l in reversed(range(len(layers))):
        w, _, (part, idx, transposed) = layers[l]
        d_pre = d_act * np_selu_grad(pres[l])
        d_w = acts[l].T @ d_pre
        if transposed:  # W is the transpose of the stored weight
            grads[part][idx]["w"] += d_w.T
        else:
            grads[part][idx]["w"] += d_w
        own_bias = grads["encoder"][l] if l < len(params["encoder"]) else \
            grads["decoder"][l - len(params["encoder"])]
        own_bias["b"] += d_pre.sum(axis=0)
        d_act = d_pre @ w.T
    return loss, y, grads


def np_sgd_momentum(params, buf, grads, lr=LR, momentum=MOMENTUM):
    """One torch.optim.SGD(momentum) update: buf = g on the first call (buf None), else
    m*buf + g; p -= lr*buf. Returns (params, buf)."""
    buf = jax.tree.map(np.copy, grads) if buf is None else jax.tree.map(
        lambda b_, g: momentum * b_ + g, buf, grads)
    return jax.tree.map(lambda p, b_: p - lr * b_, params, buf), buf


def np_iteration(params, buf, x, aug_step, constrained, refeed_after_update=False):
    """One reference training iteration on the sparse batch x; returns (params, buf, losses).

    Update on x (target x); then ``aug_step`` rounds, each re-feeding the previous output y as
    input and target with its own update. As in the reference, y is the output computed in the
    previous update's forward pass, i.e. BEFORE that update. ``refeed_after_update=True`` is the
    wrong order (y recomputed with the updated parameters), used to show the test can tell.
    """
    loss, y, grads = np_loss_and_grads(params, x, x, constrained)
    params, buf = np_sgd_momentum(params, buf, grads)
    losses = [loss]
    for _ in range(aug_step):
        if refeed_after_update:
            y = np_loss_and_grads(params, x, x, constrained)[1]
        loss, y, grads = np_loss_and_grads(params, y, y, constrained)
        params, buf = np_sgd_momentum(params, buf, grads)
        losses.append(loss)
    return params, buf, losses


# ---------------------------------------------------------------- fixtures and helpers

def init_params(constrained, seed=0):
    """Float32 numpy parameters in model.init's layout for (N, *HIDDEN): Xavier-scale weights and
    non-zero biases (so that bias gradients matter from the first step)."""
    rng = np.random.default_rng(seed)
    sizes = (N, *HIDDEN)
    rev = sizes[::-1]

    def layer(fan_in, fan_out, with_w=True):
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        out = {"b": rng.normal(0.0, 0.1, fan_out).astype(np.float32)}
        if with_w:
            out["w"] = rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32)
        return out

    params = {"encoder": [layer(sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1)],
              "decoder": [layer(rev[i], rev[i + 1], not constrained) for i in range(len(rev) - 1)]}
    if not constrained:  # model.init's layout: the last decoder weight as (n, h1)
        params["decoder"][-1]["w"] = np.ascontiguousarray(params["decoder"][-1]["w"].T)
    return params


def rating_batches(n_batches, seed=0):
    """Sparse integer ratings 1..5 as dense float32 (BATCH, N) batches; every row rates >= 2."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        x = rng.integers(1, 6, size=(BATCH, N)).astype(np.float32)
        x[rng.random((BATCH, N)) > 0.35] = 0.0
        x[:, 0] = rng.integers(1, 6, size=BATCH)
        x[:, 7] = rng.integers(1, 6, size=BATCH)
        out.append(x)
    return out


def make_cfg(constrained=False, drop_prob=0.0):
    """The tiny selu model of these tests."""
    return model.ModelConfig((N, *HIDDEN), activation="selu", drop_prob=drop_prob,
                             constrained=constrained)


def make_optimizer(lr=LR):
    """SGD momentum 0.9 at a constant rate for the few updates of a test."""
    return optim.make_optimizer("momentum", lr, updates_per_epoch=1000)


def jitted_step(constrained=False, aug_step=0, noise_prob=0.0, drop_prob=0.0):
    """core_step.jit_train_step(core_step.make_train_step(...)) for the tiny model, built (and so
    compiled) once per distinct configuration in the test session."""
    return _jitted_step(bool(constrained), int(aug_step), float(noise_prob), float(drop_prob))


@functools.lru_cache(maxsize=None)
def _jitted_step(constrained, aug_step, noise_prob, drop_prob):
    """The cached builder behind jitted_step (arguments normalised so that keys match)."""
    step = core_step.make_train_step(make_cfg(constrained, drop_prob), make_optimizer(),
                                 aug_step=aug_step, noise_prob=noise_prob)
    return core_step.jit_train_step(step)


def make_state(params, rng_seed=0, step=0):
    """A TrainState holding copies of the numpy ``params`` (fresh buffers: the step donates)."""
    p = jax.tree.map(lambda a: jnp.array(a, jnp.float32), params)
    return core_step.TrainState(step=jnp.asarray(step, jnp.int32), params=p,
                            opt_state=make_optimizer().init(p),
                            rng=jax.random.PRNGKey(rng_seed))


def as_numpy(tree):
    """A pytree of arrays as float64 numpy."""
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def max_abs_diff(a, b):
    """Largest absolute difference between two pytrees of the same structure."""
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


# ---------------------------------------------------------------- the key test

@pytest.mark.parametrize("constrained", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("aug_step", [0, 1, 2])
def test_train_step_matches_numpy_reference(aug_step, constrained):
    params0 = init_params(constrained, seed=3)
    batches = rating_batches(2, seed=4)
    step = jitted_step(constrained, aug_step)

    state = make_state(params0)
    ref_params, ref_buf = as_numpy(params0), None
    for it, x in enumerate(batches):
        state, metrics = step(state, jnp.asarray(x))
        ref_params, ref_buf, ref_losses = np_iteration(ref_params, ref_buf, x.astype(np.float64),
                                                       aug_step, constrained)
        got = as_numpy(state.params)
        assert jax.tree.structure(got) == jax.tree.structure(ref_params)
        for g_leaf, r_leaf in zip(jax.tree_util.tree_leaves(got),
                                  jax.tree_util.tree_leaves(ref_params)):
            np.testing.assert_allclose(g_leaf, r_leaf, rtol=0, atol=1e-5,
                                       err_msg=f"iteration {it + 1}")
        assert int(state.step) == it + 1
        assert float(metrics["loss"]) == pytest.approx(ref_losses[0], rel=1e-5)
        assert metrics["refeed_loss"].shape == (aug_step,)
        np.testing.assert_allclose(np.asarray(metrics["refeed_loss"]), ref_losses[1:],
                                   rtol=1e-5, atol=1e-7)

    # The comparison is sensitive: the parameters did move, and (with re-feeding) the wrong
    # order of operations would have given different parameters.
    assert max_abs_diff(ref_params, as_numpy(params0)) > 1e-2
    if aug_step:
        wrong, buf = as_numpy(params0), None
        for x in batches:
            wrong, buf, _ = np_iteration(wrong, buf, x.astype(np.float64), aug_step, constrained,
                                         refeed_after_update=True)
        assert max_abs_diff(wrong, ref_params) > 1e-3


def test_numpy_reference_gradient_is_right():
    """The hand-written backprop of the reference agrees with finite differences."""
    params = as_numpy(init_params(True, seed=5))
    x = rating_batches(1, seed=6)[0].astype(np.float64)
    _, _, grads = np_loss_and_grads(params, x, x, True)
    eps = 1e-6
    for path in [("encoder", 0, "w", (3, 1)), ("encoder", 1, "b", (2,)),
                 ("decoder", 1, "b", (4,)), ("encoder", 1, "w", (4, 0))]:
        part, i, name, idx = path
        plus, minus = jax.tree.map(np.copy, params), jax.tree.map(np.copy, params)
        plus[part][i][name][idx] += eps
        minus[part][i][name][idx] -= eps
        numeric = (np_loss_and_grads(plus, x, x, True)[0]
                   - np_loss_and_grads(minus, x, x, True)[0]) / (2 * eps)
        assert grads[part][i][name][idx] == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_create_train_state():
    """Layout of a fresh state (traced with eval_shape: structure and shapes, no compile)."""
    cfg = make_cfg(constrained=True)
    opt = make_optimizer()
    state = jax.eval_shape(lambda r: core_step.create_train_state(r, cfg, opt), jax.random.PRNGKey(0))
    assert state.step.shape == () and state.step.dtype == jnp.int32
    assert [l["w"].shape for l in state.params["encoder"]] == [(N, 5), (5, 3)]
    assert [l["b"].shape for l in state.params["decoder"]] == [(5,), (N,)]
    assert all("w" not in l for l in state.params["decoder"])
    assert jax.tree.structure(state.opt_state) == jax.tree.structure(
        jax.eval_shape(opt.init, state.params))


def test_negative_aug_step_raises():
    with pytest.raises(ValueError):
        core_step.make_train_step(make_cfg(), make_optimizer(), aug_step=-1)


# ---------------------------------------------------------------- noise and dropout

def test_refeed_noise_runs_and_changes_the_update():
    params0 = init_params(False, seed=7)
    x = jnp.asarray(rating_batches(1, seed=8)[0])
    noisy, metrics = jitted_step(False, 1, noise_prob=0.5)(make_state(params0), x)
    clean, clean_metrics = jitted_step(False, 1)(make_state(params0), x)
    assert metrics["refeed_loss"].shape == (1,)
    assert np.all(np.isfinite(np.asarray(metrics["refeed_loss"])))
    assert all(np.all(np.isfinite(a)) for a in jax.tree_util.tree_leaves(as_numpy(noisy.params)))
    # The update on the sparse batch is the same; the re-feeding one sees the noisy input.
    assert float(metrics["loss"]) == pytest.approx(float(clean_metrics["loss"]), rel=1e-6)
    assert max_abs_diff(noisy.params, clean.params) > 1e-6


def test_dropout_step_is_deterministic_per_state():
    params0 = init_params(False, seed=9)
    x = jnp.asarray(rating_batches(1, seed=10)[0])
    step = jitted_step(False, 0, drop_prob=0.5)
    a, ma = step(make_state(params0, rng_seed=1), x)
    b, mb = step(make_state(params0, rng_seed=1), x)
    c, _ = step(make_state(params0, rng_seed=2), x)
    d, _ = step(make_state(params0, rng_seed=1, step=5), x)
    for la, lb in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))
    assert float(ma["loss"]) == float(mb["loss"])
    assert max_abs_diff(a.params, c.params) > 1e-6      # another base rng: another mask
    assert max_abs_diff(a.params, d.params) > 1e-6      # another iteration: another mask
    # Dropout is active in training: the loss differs from the no-dropout step's.
    _, m0 = jitted_step(False, 0)(make_state(params0), x)
    assert float(ma["loss"]) != pytest.approx(float(m0["loss"]), rel=1e-4)


# ---------------------------------------------------------------- the epoch loop

def rating_csr(n_rows=22, seed=11, inf_row=None):
    """A (n_rows, N) CSR matrix of ratings 1..5, every row with >= 2 ratings; optionally one row
    with an infinite rating."""
    dense = np.concatenate(rating_batches(-(-n_rows // BATCH), seed=seed))[:n_rows]
    if inf_row is not None:
        dense[inf_row, 0] = np.inf
    return sp.csr_matrix(dense)


def recording(step_fn, seen):
    """Wraps a step function so that every batch it receives is appended to ``seen``."""
    def wrapped(state, batch):
        seen.append(np.array(batch))
        return step_fn(state, batch)
    return wrapped


def test_train_epoch_full_batches_and_order():
    csr = rating_csr(22)
    params0 = init_params(False, seed=12)
    seen, summaries = [], []
    n_b = num_batches(22, BATCH)
    assert n_b == 5
    state, losses = core_step.train_epoch(
        make_state(params0), recording(jitted_step(), seen),
        dense_batches(csr, BATCH, seed=1, epoch=3), n_b, epoch=3, summary_frequency=2,
        on_summary=lambda i, r: summaries.append((i, r)))
    assert losses.shape == (22 // BATCH,)
    assert np.all(np.isfinite(losses)) and np.all(losses > 0)
    assert int(state.step) == 5
    assert [b.shape for b in seen] == [(BATCH, N)] * 5
    perm = epoch_permutation(22, 1, 3)
    for i, b in enumerate(seen):
        np.testing.assert_array_equal(b, dense_rows(csr, perm[i * BATCH:(i + 1) * BATCH]))
    assert len({tuple(r) for b in seen for r in b}) == 20      # 20 distinct rows, 2 left out
    assert [i for i, _ in summaries] == [2, 4]
    assert summaries[0][1] == pytest.approx(np.sqrt(np.mean(losses[:2])), rel=1e-6)
    assert summaries[1][1] == pytest.approx(np.sqrt(np.mean(losses[2:4])), rel=1e-6)

    # Same seed and epoch: same batches, same losses; another epoch: another order.
    seen2, seen3 = [], []
    _, losses2 = core_step.train_epoch(make_state(params0), recording(jitted_step(), seen2),
                                   dense_batches(csr, BATCH, seed=1, epoch=3), n_b, epoch=3)
    np.testing.assert_array_equal(np.stack(seen), np.stack(seen2))
    np.testing.assert_array_equal(losses, losses2)
    core_step.train_epoch(make_state(params0), recording(jitted_step(), seen3),
                      dense_batches(csr, BATCH, seed=1, epoch=4), n_b, epoch=4)
    assert not np.array_equal(np.stack(seen), np.stack(seen3))


def test_train_epoch_stops_after_n_batches():
    batches = rating_batches(7, seed=13)
    seen = []
    _, losses = core_step.train_epoch(make_state(init_params(False)), recording(jitted_step(), seen),
                                  iter(batches), 5, epoch=0)
    assert len(losses) == 5 and len(seen) == 5


def test_train_epoch_nan_raises_with_epoch_and_step():
    seed, epoch = 2, 6
    perm = epoch_permutation(22, seed, epoch)
    bad_batch = 3                                     # the iteration whose batch holds the inf
    csr = rating_csr(22, inf_row=int(perm[bad_batch * BATCH + 1]))
    with pytest.raises(core_step.TrainingDivergedError) as err:
        core_step.train_epoch(make_state(init_params(False)), jitted_step(),
                          dense_batches(csr, BATCH, seed=seed, epoch=epoch),
                          num_batches(22, BATCH), epoch=epoch, summary_frequency=2)
    message = str(err.value)
    # Epochs are named 1-based as in the training log; the step is the 0-based iteration.
    assert re.search(rf"\bepoch {epoch + 1}\b", message), message
    assert re.search(rf"\bstep {bad_batch}\b", message), message


def test_noisy_refeed_target_option():
    """noisy_target=True (the published run.py) uses the noised input as the re-feed target;
    without noise it is the same step as the default."""
    params0 = init_params(False, seed=7)
    x = jnp.asarray(rating_batches(1, seed=8)[0])

    def run(noise_prob, noisy_target):
        step = core_step.jit_train_step(core_step.make_train_step(
            make_cfg(), make_optimizer(), aug_step=1, noise_prob=noise_prob,
            noisy_target=noisy_target))
        return step(make_state(params0), x)
    clean_state, clean = run(0.0, False)
    same_state, same = run(0.0, True)
    assert max_abs_diff(same_state.params, clean_state.params) == 0.0
    _, paper = run(0.5, False)
    _, published = run(0.5, True)
    assert float(published["loss"]) == pytest.approx(float(paper["loss"]), rel=1e-6)
    assert abs(float(published["refeed_loss"][0]) - float(paper["refeed_loss"][0])) > 1e-4


# ---------------------------------------------------------------- beyond the paper (issue 13)

def _mmse(params, inputs, targets):
    out = np.asarray(model.apply(jax.tree.map(jnp.asarray, params), jnp.asarray(inputs),
                                 make_cfg()), np.float64)
    mask = targets != 0
    return float(np.sum((out - targets)[mask] ** 2) / mask.sum())


def test_input_dropout_drops_inputs_only_in_the_dense_step():
    """The loss is MMSE(f(x * keep / (1-p)), x): the mask is bernoulli(fold_in(key, 1)) of the
    iteration's first key, and the targets stay the whole batch."""
    params0 = init_params(False, seed=21)
    x = rating_batches(1, seed=22)[0]
    p = 0.4
    step = core_step.make_train_step(make_cfg(), make_optimizer(), input_drop_prob=p)
    state = make_state(params0, rng_seed=3, step=2)
    _, metrics = jax.jit(step)(state, jnp.asarray(x))
    key0 = jax.random.split(jax.random.fold_in(state.rng, state.step), 1)[0]
    keep = np.asarray(jax.random.bernoulli(jax.random.fold_in(key0, 1), 1 - p, x.shape))
    want = _mmse(params0, np.where(keep, x / (1 - p), 0.0), x)
    assert float(metrics["loss"]) == pytest.approx(want, rel=1e-5)
    assert want != pytest.approx(_mmse(params0, x, x), rel=1e-3)


def _sparse_batch(x):
    from deepae_jax.data.batching import padded_rows
    cols, vals = padded_rows(sp.csr_matrix(x), np.arange(x.shape[0]))
    return {"cols": jnp.asarray(cols), "vals": jnp.asarray(vals)}


def test_input_options_off_leave_the_sparse_step_unchanged_and_on_change_it():
    params0 = init_params(False, seed=23)
    x = rating_batches(1, seed=24)[0]
    batch = _sparse_batch(x)

    def run(**kw):
        step = core_step.make_train_step(make_cfg(drop_prob=0.5), make_optimizer(),
                                     path="sparse", **kw)
        return jax.jit(step)(make_state(params0, rng_seed=5), batch)
    ref, m_ref = run()
    same, m_same = run(input_drop_prob=0.0, input_shift=0.0)
    for a, b in zip(jax.tree_util.tree_leaves(ref.params), jax.tree_util.tree_leaves(same.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    _, m_drop = run(input_drop_prob=0.3)
    assert float(m_drop["loss"]) != pytest.approx(float(m_ref["loss"]), rel=1e-4)


def test_input_shift_is_added_to_rated_inputs_not_to_targets():
    params0 = init_params(False, seed=25)
    x = rating_batches(1, seed=26)[0] - 3.0  # residual-like, with exact zeros among the rated
    x[x == 0] = 1e-6
    x[rating_batches(1, seed=26)[0] == 0] = 0.0
    step = core_step.make_train_step(make_cfg(), make_optimizer(), path="sparse",
                                 input_shift=2.5)
    _, metrics = jax.jit(step)(make_state(params0), _sparse_batch(x))
    want = _mmse(params0, np.where(x != 0, x + 2.5, 0.0), x)
    assert float(metrics["loss"]) == pytest.approx(want, rel=1e-5)
