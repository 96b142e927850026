"""The model description (zlimit._model, _activations, _losses) against independent references."""
from __future__ import annotations

import decimal
import math

import numba
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.special import erf, expit

import zlimit
from zlimit._activations import ACTIVATIONS, Activation, apply, get_activation
from zlimit._losses import LOSSES, Loss, get_loss
from zlimit._model import MLP, batch_schedule, error_signal, total_loss
from zlimit._validate import check_batches
from tolerance import assert_close

REFERENCE_PHI = {
    "tanh": np.tanh,
    "sigmoid": expit,
    "silu": lambda x: x * expit(x),
    "gelu": lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2))),
    "softplus": lambda x: np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0),
    "relu": lambda x: np.maximum(x, 0.0),
    "linear": lambda x: x,
}


# ------------------------------------------------------------------ MLP checks
@pytest.mark.parametrize("kw, msg", [
    (dict(activation="swish"), "activation must be one of"),
    (dict(activation=None), "activation must be one of"),
    (dict(loss="hinge"), "loss must be one of"),
    (dict(loss=3), "loss must be one of"),
    (dict(reduction="avg"), "reduction must be one of"),
    (dict(depth=0), "depth"),
    (dict(depth=-2), "depth"),
    (dict(depth=1.5), "depth"),
    (dict(depth=True), "depth"),
    (dict(depth="2"), "depth"),
    (dict(lr=0.0), "lr must be a positive finite number"),
    (dict(lr=-0.1), "lr must be a positive finite number"),
    (dict(lr=float("nan")), "lr must be a positive finite number"),
    (dict(lr=float("inf")), "lr must be a positive finite number"),
    (dict(lr="fast"), "lr must be a positive finite number"),
    (dict(init_std=[1.0, 1.0]), "depth\\+1 = 3"),
    (dict(lr_mult=[1.0] * 4), "depth\\+1 = 3"),
    (dict(init_std=[1.0, float("nan"), 1.0]), r"init_std\[1\] must be a finite number >= 0, got nan \(not finite\)"),
    (dict(init_std=float("inf")), r"init_std must be a finite number >= 0, got inf \(not finite\)"),
    (dict(lr_mult=[1.0, -1.0, 1.0]), r"lr_mult\[1\] must be a finite number >= 0, got -1.0 \(out of range\)"),
    (dict(init_std=[1.0, "a", 1.0]), r"init_std\[1\] must be a finite number >= 0, got 'a' \(not a number\)"),
])
def test_mlp_validation(kw, msg):
    base = dict(depth=2)
    base.update(kw)
    with pytest.raises(ValueError, match=msg):
        MLP(**base)


@settings(max_examples=30)
@given(depth=st.integers(1, 6), lr=st.floats(1e-4, 10), std=st.floats(0, 5),
       mults=st.lists(st.floats(0, 5), min_size=1, max_size=7))
def test_mlp_per_layer_broadcast(depth, lr, std, mults):
    m = MLP(depth=depth, lr=lr, init_std=std, lr_mult=2.0)
    assert m.sigma == (std,) * (depth + 1)
    assert m.eta == (lr * 2.0,) * (depth + 1)
    if len(mults) == depth + 1:
        m2 = MLP(depth=depth, lr=lr, lr_mult=mults, init_std=np.array(mults))
        assert m2.eta == tuple(lr * c for c in mults)
        assert m2.sigma == tuple(mults)
        d = m2.describe()
        again = MLP(**d)
        assert again.sigma == m2.sigma
        assert_close(again.eta, m2.eta)
    else:
        with pytest.raises(ValueError, match="depth\\+1"):
            MLP(depth=depth, lr=lr, lr_mult=mults)


def test_mlp_names_resolve_and_reduction_factor():
    m = MLP(depth=1, activation="gelu", loss="logistic", reduction="sum")
    assert m.activation is ACTIVATIONS["gelu"] and m.loss is LOSSES["logistic"]
    assert m.reduction_factor(7) == 1.0
    assert MLP(depth=1).reduction_factor(4) == 0.25
    assert get_activation(m.activation) is m.activation and get_loss(m.loss) is m.loss


# ------------------------------------------------------------------ activations
def _cube(x):
    return x * x * x


def _dcube(x):
    return 3.0 * x * x


def test_custom_activation_is_compiled_and_usable():
    act = Activation("cube", _cube, _dcube)
    assert isinstance(act.phi, numba.core.registry.CPUDispatcher)
    assert act.phi(2.0) == 8.0 and act.dphi(2.0) == 12.0
    m = MLP(depth=2, activation=act)
    assert m.activation is act and m.describe()["activation"] == "cube"
    x = np.linspace(-2, 2, 12).reshape(3, 4)
    np.testing.assert_array_equal(apply(act.phi, x), x ** 3)
    jitted = numba.njit(_cube)
    assert Activation("cube2", jitted, _dcube).phi is jitted  # already jitted: used as is


def _uses_decimal(x):
    return float(decimal.Decimal(x))


def _reciprocal(x):
    return 1.0 / x


def _infinite(x):
    return math.inf


@pytest.mark.parametrize("phi, dphi", [
    (_uses_decimal, _dcube),          # numba cannot type decimal
    (_cube, _uses_decimal),
    (_reciprocal, _dcube),            # division by zero at x = 0
    (_infinite, _dcube),              # non-finite value
    (lambda x: (x, x), _dcube),       # returns a tuple, not a float
])
def test_uncompilable_or_bad_activation_is_value_error(phi, dphi):
    with pytest.raises(ValueError, match="numba"):
        Activation("bad", phi, dphi)


def test_non_callable_activation():
    with pytest.raises(ValueError, match="callable"):
        Activation("bad", 3.0, _dcube)


@settings(max_examples=60)
@given(name=st.sampled_from(sorted(ACTIVATIONS)), x=st.floats(-6, 6))
def test_activation_values_and_derivatives(name, x):
    """φ matches an independent scipy/numpy formula; φ' matches a 4th-order central
    difference of φ (relu away from its kink)."""
    act = ACTIVATIONS[name]
    # scale 1 + |x|: φ(x) is a difference of terms of that size (gelu, silu at x << 0)
    assert_close(act.phi(x), REFERENCE_PHI[name](np.float64(x)), scale=1.0 + abs(x))
    h = 1e-3
    if name == "relu":
        assume(abs(x) > 3 * h)
    fd = (-act.phi(x + 2 * h) + 8 * act.phi(x + h) - 8 * act.phi(x - h) + act.phi(x - 2 * h)) / (12 * h)
    # truncation error h⁴|φ⁽⁵⁾|/30 < 1e-12 and round-off ~ 1e-16 / h for these φ
    np.testing.assert_allclose(act.dphi(x), fd, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_apply_is_elementwise(name, dtype):
    x = np.linspace(-5, 5, 30, dtype=dtype).reshape(5, 6)
    out = apply(ACTIVATIONS[name].phi, x)
    assert out.dtype == dtype and out.shape == x.shape
    ref = REFERENCE_PHI[name](x.astype(np.float64))
    assert_close(out, ref, dtype, scale=1.0 + np.abs(x).max())
    np.testing.assert_array_equal(apply(ACTIVATIONS[name].phi, x[:, ::2]), out[:, ::2])  # non-contiguous input


# ----------------------------------------------------------------------- losses
@settings(max_examples=60)
@given(name=st.sampled_from(["mse", "logistic"]), f=st.floats(-15, 15), yr=st.floats(-3, 3), sign=st.sampled_from([-1.0, 1.0]))
def test_loss_grad_matches_finite_differences(name, f, yr, sign):
    loss = LOSSES[name]
    y = np.array([sign if loss.labels == "pm1" else yr])
    fa = np.array([f])
    h = 1e-3
    fd = (-loss.value(fa + 2 * h, y) + 8 * loss.value(fa + h, y) - 8 * loss.value(fa - h, y)
          + loss.value(fa - 2 * h, y)) / (12 * h)
    # a finite difference, not round-off: truncation ~h⁴|ℓ⁽⁵⁾| and round-off ~eps·|ℓ|/h
    np.testing.assert_allclose(loss.grad(fa, y), fd, rtol=1e-8, atol=1e-10)
    ref = 0.5 * (f - y[0]) ** 2 if name == "mse" else math.log1p(math.exp(-y[0] * f))
    # purely relative (scale 0): small losses at large margins must keep their digits
    assert_close(loss.value(fa, y)[0], ref, scale=0.0)


@settings(max_examples=60)
@given(f=st.lists(st.floats(-30, 30), min_size=2, max_size=5), pick=st.integers(0, 4))
def test_xent_grad_matches_finite_differences_and_closed_form(f, pick):
    # ℓ = −log softmax(f)_y; ∂ℓ/∂f^c = softmax_c − 1{c = y} (maths §6)
    loss, k = LOSSES["xent"], len(f)
    fa, y = np.array([f]), np.array([float(pick % k)])
    h = 1e-3
    for c in range(k):
        e = np.zeros((1, k)); e[0, c] = h
        fd = (-loss.value(fa + 2 * e, y) + 8 * loss.value(fa + e, y) - 8 * loss.value(fa - e, y)
              + loss.value(fa - 2 * e, y)) / (12 * h)
        # a finite difference: truncation ~h⁴|ℓ⁽⁵⁾| (≤ 1 for softmax) and round-off ~eps·|ℓ|/h
        np.testing.assert_allclose(loss.grad(fa, y)[0, c], fd[0], rtol=1e-8, atol=1e-9)
    shifted = np.array(f) - max(f)  # closed form, in the stable shifted form
    ref = -(shifted[pick % k] - math.log(sum(math.exp(v) for v in shifted)))
    assert_close(loss.value(fa, y)[0], ref, scale=1.0)


def test_logistic_loss_is_stable_for_large_margins():
    loss = LOSSES["logistic"]
    f = np.array([800.0, -800.0, 800.0])
    y = np.array([-1.0, -1.0, 1.0])
    # log1p(e^{-800}) and 1/(1 + e^{800}) underflow to exactly 0: purely relative (scale 0)
    assert_close(loss.value(f, y), [800.0, 0.0, 0.0], scale=0.0)
    assert_close(loss.grad(f, y), [1.0, 0.0, 0.0], scale=0.0)


def test_custom_loss_drives_error_signal_and_total_loss():
    def value(f, y):
        return np.abs(f - y) ** 3 / 3

    def grad(f, y):
        return np.abs(f - y) * (f - y)

    cubic = Loss("cubic", value, grad)
    f = np.array([0.5, -1.0, 2.0, 0.0])
    y = np.array([1.0, 1.0, -1.0, 0.5])
    batch = np.array([1, 3])
    for reduction, r in (("mean", 0.5), ("sum", 1.0)):
        m = MLP(depth=1, loss=cubic, reduction=reduction)
        assert m.loss is cubic
        chi = error_signal(m, f, y, batch)
        assert_close(chi, [0.0, r * (-4.0), 0.0, r * (-0.25)])
        values = np.array([0.125, 8.0, 27.0, 0.125]) / 3
        assert_close(total_loss(m, f, y), values.mean() if reduction == "mean" else values.sum())


# ---------------------------------------------------------------- batch schedule
@settings(max_examples=60)
@given(m=st.integers(1, 20), data=st.data(), steps=st.integers(0, 30), seed=st.integers(0, 2**31))
def test_batch_schedule_properties(m, data, steps, seed):
    b = data.draw(st.integers(1, m))
    sched = batch_schedule(m, b, steps, seed=seed)
    assert len(sched) == steps
    for batch in sched:
        assert batch.dtype == np.int64 and batch.size == b
        assert np.all(np.diff(batch) > 0) and batch.min() >= 0 and batch.max() < m
    per_epoch = m // b
    for start in range(0, steps, per_epoch):
        epoch = np.concatenate(sched[start:start + per_epoch])
        assert np.unique(epoch).size == epoch.size  # distinct indices within an epoch
        if m % b == 0 and start + per_epoch <= steps:
            assert np.array_equal(np.sort(epoch), np.arange(m))  # covers every input
    again = batch_schedule(m, b, steps, seed=seed)
    assert all(np.array_equal(x, z) for x, z in zip(sched, again))
    checked = check_batches(sched, m, steps)
    assert all(np.array_equal(x, z) for x, z in zip(sched, checked))


def test_batch_schedule_seeds_differ_and_validation():
    a = batch_schedule(10, 3, 20, seed=0)
    b = batch_schedule(10, 3, 20, seed=1)
    assert any(not np.array_equal(x, z) for x, z in zip(a, b))
    for args, msg in [((3, 4, 2), "exceeds"), ((0, 1, 2), "m must"), ((3, 0, 2), "batch_size must"),
                      ((3, 1, -1), "steps must"), ((3, True, 2), "batch_size must"), ((3.0, 1, 2), "m must")]:
        with pytest.raises(ValueError, match=msg):
            batch_schedule(*args)


def test_check_batches_default_is_full_batch():
    full = check_batches(None, 4, 3)
    assert len(full) == 3 and all(np.array_equal(b, np.arange(4)) for b in full)
    assert check_batches([np.array([2, 0]), [1]], 3, 2)[0].tolist() == [0, 2]


def test_error_signal_is_zero_outside_batch():
    m = MLP(depth=1, loss="logistic", reduction="mean")
    f = np.array([0.3, -2.0, 1.0, 0.0])
    y = np.array([1.0, -1.0, -1.0, 1.0])
    chi = error_signal(m, f, y, np.array([0, 2, 3]))
    ref = -y / (1 + np.exp(y * f)) / 3
    assert_close(chi, [ref[0], 0.0, ref[2], ref[3]])
    assert_close(total_loss(m, f, y), np.mean(np.log1p(np.exp(-y * f))))


def test_top_level_exports():
    assert zlimit.MLP is MLP and zlimit.batch_schedule is batch_schedule
