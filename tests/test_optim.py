"""Optimisers (PAPER.md, "Optimisers and schedule") against PyTorch's update formulas written out
in numpy, and the momentum multi-step learning-rate schedule."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from deepae_jax.core import optim

MILESTONES = (24, 36, 48, 66, 72)


# ---------------------------------------------------------------- PyTorch formulas in numpy

class TorchSGDMomentum:
    """torch.optim.SGD(momentum=m, dampening=0, nesterov=False, weight_decay=wd):
    g += wd*p; buf = g on the first step, else m*buf + g; p -= lr(step)*buf."""

    def __init__(self, lr, weight_decay=0.0, momentum=0.9, lr_of_step=None):
        self.lr, self.wd, self.m = lr, weight_decay, momentum
        self.lr_of_step = lr_of_step or (lambda t: lr)
        self.buf, self.t = None, 0

    def step(self, p, g):
        g = g + self.wd * p
        self.buf = g.copy() if self.buf is None else self.m * self.buf + g
        p = p - self.lr_of_step(self.t) * self.buf
        self.t += 1
        return p


class TorchAdam:
    """torch.optim.Adam(betas=(0.9, 0.999), eps=1e-8, weight_decay=wd, amsgrad=False):
    g += wd*p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)."""

    def __init__(self, lr, weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8):
        self.lr, self.wd, self.b1, self.b2, self.eps = lr, weight_decay, b1, b2, eps
        self.m = self.v = None
        self.t = 0

    def step(self, p, g):
        g = g + self.wd * p
        if self.m is None:
            self.m, self.v = np.zeros_like(p), np.zeros_like(p)
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        m_hat = self.m / (1 - self.b1 ** self.t)
        v_hat = self.v / (1 - self.b2 ** self.t)
        return p - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class TorchAdagrad:
    """torch.optim.Adagrad(lr_decay=0, initial_accumulator_value=0, eps=1e-10, weight_decay=wd):
    g += wd*p; sum += g^2; p -= lr * g / (sqrt(sum) + eps)."""

    def __init__(self, lr, weight_decay=0.0, eps=1e-10):
        self.lr, self.wd, self.eps = lr, weight_decay, eps
        self.sum = None

    def step(self, p, g):
        g = g + self.wd * p
        if self.sum is None:
            self.sum = np.zeros_like(p)
        self.sum = self.sum + g * g
        return p - self.lr * g / (np.sqrt(self.sum) + self.eps)


class TorchRMSprop:
    """torch.optim.RMSprop(alpha=0.99, eps=1e-8, momentum=0.9, centered=False, weight_decay=wd):
    g += wd*p; v = a v + (1-a) g^2; buf = m buf + g / (sqrt(v) + eps); p -= lr * buf."""

    def __init__(self, lr, weight_decay=0.0, alpha=0.99, eps=1e-8, momentum=0.9):
        self.lr, self.wd, self.a, self.eps, self.m = lr, weight_decay, alpha, eps, momentum
        self.v = self.buf = None

    def step(self, p, g):
        g = g + self.wd * p
        if self.v is None:
            self.v, self.buf = np.zeros_like(p), np.zeros_like(p)
        self.v = self.a * self.v + (1 - self.a) * g * g
        self.buf = self.m * self.buf + g / (np.sqrt(self.v) + self.eps)
        return p - self.lr * self.buf


TORCH = {"momentum": TorchSGDMomentum, "adam": TorchAdam, "adagrad": TorchAdagrad,
         "rmsprop": TorchRMSprop}


def _problem(seed=0, n_steps=6):
    """Initial float32 parameters {"w": (5, 4), "b": (4,)} and a list of gradient pytrees whose
    entries span magnitudes from 1e-6 to 1 (tiny gradients expose where eps is added)."""
    rng = np.random.default_rng(seed)
    params = {"w": rng.normal(size=(5, 4)).astype(np.float32),
              "b": rng.normal(size=(4,)).astype(np.float32)}
    grads = []
    for _ in range(n_steps):
        g = {}
        for k, v in params.items():
            scale = 10.0 ** rng.integers(-6, 1, size=v.shape)
            g[k] = (rng.normal(size=v.shape) * scale).astype(np.float32)
        grads.append(g)
    return params, grads


def run_optax(opt, params, grads):
    """Applies ``opt`` to the gradient sequence; returns the parameters after each step (numpy)."""
    p = jax.tree.map(jnp.asarray, params)
    state = opt.init(p)
    update = jax.jit(opt.update)
    out = []
    for g in grads:
        updates, state = update(jax.tree.map(jnp.asarray, g), state, p)
        p = optax.apply_updates(p, updates)
        out.append(jax.tree.map(np.asarray, p))
    return out


def run_torch_formula(make, params, grads):
    """Runs one numpy PyTorch-formula optimiser per leaf (float64); parameters after each step."""
    opts = {k: make() for k in params}
    p = {k: v.astype(np.float64) for k, v in params.items()}
    out = []
    for g in grads:
        p = {k: opts[k].step(p[k], g[k].astype(np.float64)) for k in p}
        out.append(dict(p))
    return out


OPTIMIZER_SEEDS = {"momentum": 10, "adam": 11, "adagrad": 12, "rmsprop": 13}


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("name,lr", [("momentum", 0.05), ("adam", 0.01), ("adagrad", 0.05),
                                     ("rmsprop", 0.001)])
def test_optimizer_matches_pytorch_formula(name, lr, weight_decay):
    params, grads = _problem(seed=OPTIMIZER_SEEDS[name])
    opt = optim.make_optimizer(name, lr, weight_decay=weight_decay, updates_per_epoch=100)
    got = run_optax(opt, params, grads)
    want = run_torch_formula(lambda: TORCH[name](lr, weight_decay), params, grads)
    for step, (g_p, w_p) in enumerate(zip(got, want)):
        for k in params:
            moved = np.abs(w_p[k] - params[k]).max()
            assert moved > 1e-4, "the test problem must move the parameters"
            np.testing.assert_allclose(g_p[k], w_p[k], rtol=1e-6, atol=1e-6,
                                       err_msg=f"{name} wd={weight_decay} step {step} {k}")


def test_weight_decay_changes_the_trajectory():
    params, grads = _problem(seed=1)
    plain = run_optax(optim.make_optimizer("momentum", 0.05), params, grads)[-1]
    decayed = run_optax(optim.make_optimizer("momentum", 0.05, weight_decay=0.1), params, grads)[-1]
    assert np.abs(plain["w"] - decayed["w"]).max() > 1e-3


def test_momentum_schedule_inside_the_optimizer():
    """30 updates at 1 update per epoch: the first halving applies from update 23 (epoch 23)."""
    params, grads = _problem(seed=2, n_steps=30)
    upe = 1

    def lr_of_step(t):
        epoch = t // upe
        return 0.05 * 0.5 ** sum(m <= epoch + 1 for m in MILESTONES)

    opt = optim.make_optimizer("momentum", 0.05, updates_per_epoch=upe)
    got = run_optax(opt, params, grads)
    want = run_torch_formula(lambda: TorchSGDMomentum(0.05, lr_of_step=lr_of_step), params, grads)
    for g_p, w_p in zip(got, want):
        for k in params:
            np.testing.assert_allclose(g_p[k], w_p[k], rtol=1e-5, atol=1e-5)
    # Without the halving the last steps would differ: the schedule is really in use.
    flat = run_torch_formula(lambda: TorchSGDMomentum(0.05), params, grads)[-1]
    assert np.abs(flat["w"] - got[-1]["w"]).max() > 1e-4


# ---------------------------------------------------------------- the schedule itself

def _expected_lr(base, count, upe):
    """base * 0.5**k, k = #milestones m with m <= e + 1, e = count // upe (0-based epoch)."""
    epoch = count // upe
    return base * 0.5 ** sum(m <= epoch + 1 for m in MILESTONES)


def test_multistep_lr_at_epoch_boundaries():
    upe, base = 10, 0.004
    sched = optim.multistep_lr(base, upe)
    # Explicit boundaries: 0-based epoch 23 (updates 230..239) is the first at half the rate.
    assert float(sched(0)) == pytest.approx(base)
    assert float(sched(229)) == pytest.approx(base)
    assert float(sched(230)) == pytest.approx(base / 2)
    assert float(sched(349)) == pytest.approx(base / 2)
    assert float(sched(350)) == pytest.approx(base / 4)
    assert float(sched(469)) == pytest.approx(base / 4)
    assert float(sched(470)) == pytest.approx(base / 8)
    assert float(sched(650)) == pytest.approx(base / 16)
    assert float(sched(710)) == pytest.approx(base / 32)
    assert float(sched(10 ** 6)) == pytest.approx(base / 32)
    # First and last update of every epoch 0..99, traced inside jit (as optax uses it).
    counts = np.sort(np.concatenate([np.arange(100) * upe, np.arange(100) * upe + upe - 1]))
    got = np.asarray(jax.jit(jax.vmap(sched))(jnp.asarray(counts)))
    want = [_expected_lr(base, int(c), upe) for c in counts]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_multistep_lr_custom_milestones_and_gamma():
    sched = optim.multistep_lr(1.0, 3, milestones=(2, 4), gamma=0.1)
    assert float(sched(2)) == pytest.approx(1.0)        # epoch 0
    assert float(sched(3)) == pytest.approx(0.1)        # epoch 1: milestone 2 <= 2
    assert float(sched(8)) == pytest.approx(0.1)        # epoch 2
    assert float(sched(9)) == pytest.approx(0.01)       # epoch 3


def test_multistep_lr_rejects_bad_updates_per_epoch():
    with pytest.raises(ValueError):
        optim.multistep_lr(0.1, 0)


def test_learning_rate_at_epoch():
    base = 0.005
    assert optim.learning_rate_at_epoch(base, "momentum", 0) == pytest.approx(base)
    assert optim.learning_rate_at_epoch(base, "momentum", 22) == pytest.approx(base)
    assert optim.learning_rate_at_epoch(base, "momentum", 23) == pytest.approx(base / 2)
    assert optim.learning_rate_at_epoch(base, "momentum", 71) == pytest.approx(base / 32)
    sched = jax.jit(jax.vmap(optim.multistep_lr(base, 10)))
    in_optimizer = np.asarray(sched(jnp.arange(100) * 10 + 5))
    for epoch in range(100):
        want = _expected_lr(base, epoch, 1)
        assert optim.learning_rate_at_epoch(base, "momentum", epoch) == pytest.approx(want)
        assert float(in_optimizer[epoch]) == pytest.approx(want)
        for name in ("adam", "adagrad", "rmsprop"):
            assert optim.learning_rate_at_epoch(base, name, epoch) == base


@pytest.mark.parametrize("name,lr", [("adam", 0.01), ("adagrad", 0.05), ("rmsprop", 0.001)])
def test_other_optimizers_have_constant_lr(name, lr):
    """30 updates at 1 update per epoch (past the first momentum milestone): still the
    constant-rate PyTorch formula."""
    params, grads = _problem(seed=3, n_steps=30)
    got = run_optax(optim.make_optimizer(name, lr, updates_per_epoch=1), params, grads)
    want = run_torch_formula(lambda: TORCH[name](lr), params, grads)
    for k in params:
        np.testing.assert_allclose(got[-1][k], want[-1][k], rtol=1e-5, atol=1e-5)


def test_unknown_optimizer_raises():
    with pytest.raises(ValueError):
        optim.make_optimizer("sgd_nesterov", 0.1)
    with pytest.raises(ValueError):
        optim.make_optimizer("Adam", 0.1)


def test_optimizer_names():
    assert set(optim.OPTIMIZERS) == {"momentum", "adam", "adagrad", "rmsprop"}
    for name in optim.OPTIMIZERS:
        assert isinstance(optim.make_optimizer(name, 0.1), optax.GradientTransformation)


# ---------------------------------------------------------------- beyond the paper (issue 13)

def _model_like_params():
    rng = np.random.default_rng(3)
    return {"encoder": [{"w": rng.normal(size=(4, 3)).astype(np.float32),
                         "b": rng.normal(size=(3,)).astype(np.float32)}],
            "decoder": [{"w": rng.normal(size=(4, 3)).astype(np.float32),
                         "b": rng.normal(size=(4,)).astype(np.float32)}]}


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_l2_weights_decays_weight_matrices_only(name):
    """One step by hand: the weights' gradient gets + l2 * w, the biases' does not."""
    params = _model_like_params()
    grads = jax.tree.map(lambda x: np.full_like(x, 0.5), params)
    lr, l2 = 0.1, 0.3
    opt = optim.make_optimizer(name, lr, l2_weights=l2, schedule="constant")
    assert optim.plain_momentum(name, lr, l2_weights=l2, schedule="constant") is None
    got = run_optax(opt, params, [grads])[0]
    for part in ("encoder", "decoder"):
        w, b = params[part][0]["w"], params[part][0]["b"]
        g_w = 0.5 + l2 * w.astype(np.float64)
        if name == "momentum":  # first step: trace = g; p -= lr * trace
            want_w, want_b = w - lr * g_w, b - lr * 0.5
        else:  # Adam's first step: lr * m_hat / (sqrt(v_hat) + eps) = lr * sign(g)
            want_w, want_b = w - lr * g_w / (np.abs(g_w) + 1e-8), b - lr * 1.0
        np.testing.assert_allclose(got[part][0]["w"], want_w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[part][0]["b"], want_b, rtol=1e-5, atol=1e-6)


def test_weights_mask():
    mask = optim.weights_mask(_model_like_params())
    assert mask["encoder"][0] == {"w": True, "b": False}
    assert mask["decoder"][0] == {"w": True, "b": False}


def _schedule_lrs(schedule, optimizer="adam", lr=0.1, upe=10, epochs=4):
    """The learning rate of the first update of each epoch, read off one-parameter SGD-like
    steps: with momentum, gradient 1 and a fresh trace per epoch the step is exactly lr."""
    rate = optim.lr_schedule(schedule, optimizer, lr, upe, epochs)
    return [float(rate(e * upe)) if callable(rate) else rate for e in range(epochs)]


def test_schedules_learning_rates():
    assert _schedule_lrs("reference", "adam") == [0.1] * 4  # the reference: adam constant
    assert _schedule_lrs("constant", "momentum") == [0.1] * 4
    ref = _schedule_lrs("reference", "momentum", epochs=30)
    assert ref[22] == pytest.approx(0.1) and ref[23] == pytest.approx(0.05)  # MultiStepLR
    assert _schedule_lrs("multistep", "adam", epochs=30) == pytest.approx(ref)
    cos = _schedule_lrs("cosine", epochs=4)
    np.testing.assert_allclose(cos, [0.1 * 0.5 * (1 + np.cos(np.pi * e / 4)) for e in range(4)],
                               rtol=1e-5)
    np.testing.assert_allclose(_schedule_lrs("exponential"), [0.1 * 0.95 ** e for e in range(4)],
                               rtol=1e-5)
    for s in ("cosine", "exponential", "multistep"):
        want = _schedule_lrs(s, "adam", epochs=30)
        got = [optim.learning_rate_at_epoch(0.1, "adam", e, s, 30) for e in range(30)]
        np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=s)
    with pytest.raises(ValueError, match="lr schedule"):
        optim.lr_schedule("linear", "adam", 0.1, 10)


def test_plateau_halves_the_step_after_epochs_without_a_lower_loss():
    """Adam's step on a constant gradient is lr, so the steps show the plateau's scale: the
    loss never improves after epoch 1, so the rate halves as epoch 4 ends (3 epochs of
    patience, the epoch's mean loss), again as epoch 7 ends."""
    upe = 2
    opt = optim.make_optimizer("adam", 0.1, updates_per_epoch=upe, schedule="plateau")
    assert isinstance(opt, optim.PlateauOptimizer)
    p = {"w": jnp.zeros((1,))}
    state = opt.init(p)
    steps = []
    for _ in range(9 * upe):
        upd, state = opt.update({"w": jnp.ones((1,))}, state, p, value=jnp.asarray(1.0))
        steps.append(float(-upd["w"][0]))
    np.testing.assert_allclose(steps, [0.1] * 7 + [0.05] * 6 + [0.025] * 5, rtol=1e-4)
