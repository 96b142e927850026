"""Finite-width training (zlimit._finite) against independent references.

The reference network below is written from maths §1 and §5 alone: a plain numpy
forward pass, the batch loss r·Σ_{i∈B} ℓ, gradients by fourth-order central
differences and the per-layer learning rates of the §5 table. Nothing in it calls
zlimit code except ``init_weights`` (whose draws are checked against the §5 init
table separately).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import erf

import zlimit
from zlimit._activations import Activation
from zlimit import DivergenceError, init_weights, layer_scales, train_finite
from zlimit._model import batch_schedule
from tolerance import assert_close, assert_within_se

# ------------------------------------------------------------------ references
NP_ACTIVATIONS = {
    "tanh": np.tanh,
    "sigmoid": lambda x: 0.5 * (1.0 + np.tanh(0.5 * x)),
    "silu": lambda x: x * 0.5 * (1.0 + np.tanh(0.5 * x)),
    "gelu": lambda x: 0.5 * x * (1.0 + erf(x / math.sqrt(2.0))),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
}
SMOOTH = ["tanh", "sigmoid", "silu", "gelu", "softplus", "linear"]
NP_LOSSES = {
    "mse": lambda f, y: 0.5 * (f - y) ** 2,
    "logistic": lambda f, y: np.logaddexp(0.0, -y * f),
}
NP_LOSS_GRADS = {
    "mse": lambda f, y: f - y,
    "logistic": lambda f, y: -y / (1.0 + np.exp(y * f)),
}


def table_scales(p, sigma, eta, n, d):
    """The §5 table, generalised with per-layer σ_l and η_l (written out again here)."""
    L = len(sigma) - 1
    if p == "mup":
        std = [sigma[0] / d ** 0.5] + [s / n ** 0.5 for s in sigma[1:L]] + [sigma[L] / n]
        lr = [eta[0] * n / d] + list(eta[1:L]) + [eta[L] / n]
    elif p == "sp":
        std = [sigma[0] / d ** 0.5] + [s / n ** 0.5 for s in sigma[1:L]] + [sigma[L] / n ** 0.5]
        lr = [e / n for e in eta]
    elif p == "ntp":
        std = [sigma[0] / d ** 0.5] + [s / n ** 0.5 for s in sigma[1:L]] + [sigma[L] / n ** 0.5]
        lr = [eta[0] / d] + [e / n for e in eta[1:L]] + [eta[L] / n]
    elif p == "ip":
        std = [sigma[0] / d ** 0.5] + [s / n for s in sigma[1:L]] + [sigma[L] / n]
        lr = [eta[0] * n / d] + list(eta[1:L]) + [eta[L] / n]
    return std, lr


def ref_forward(Ws, Xi, act, perturb=None):
    """h^1 = W^1 ξ, x = φ(h), h^{l+1} = W^{l+1} x^l, f = W^{L+1} x^L, inputs as rows.

    ``perturb = (l, i, k, eps)`` adds eps to coordinate k of h^l(ξ_i).
    Returns lists hs, xs of (M, n) arrays and f of shape (M,).
    """
    L = len(Ws) - 1
    hs, xs = [], []
    h = Xi @ Ws[0].T
    for l in range(1, L + 1):
        if l > 1:
            h = xs[-1] @ Ws[l - 1].T
        if perturb is not None and perturb[0] == l:
            h = h.copy()
            h[perturb[1], perturb[2]] += perturb[3]
        hs.append(h)
        xs.append(act(h))
    return hs, xs, xs[-1] @ Ws[L][0]


def batch_loss(Ws, X, y, batch, act, loss, reduction):
    f = ref_forward(Ws, X[batch], act)[2]
    r = 1.0 / len(batch) if reduction == "mean" else 1.0
    return r * np.sum(NP_LOSSES[loss](f, y[batch]))


def fd_gradient(fun, W, h=1e-3):
    """Fourth-order central differences of fun() in every entry of W (modified in place)."""
    G = np.empty_like(W)
    for idx in np.ndindex(W.shape):
        w0 = W[idx]
        vals = []
        for s in (2, 1, -1, -2):
            W[idx] = w0 + s * h
            vals.append(fun())
        W[idx] = w0
        G[idx] = (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * h)
    return G


def unit_rows(rng, m, d):
    X = rng.standard_normal((m, d))
    return X * np.sqrt(d) / np.linalg.norm(X, axis=1, keepdims=True)


# ------------------------------------------------------- one SGD step vs FD GD
@st.composite
def configs(draw):
    depth = draw(st.integers(1, 3))
    m = draw(st.integers(1, 4))
    steps = draw(st.integers(1, 2))
    batches = [np.array(sorted(draw(st.sets(st.integers(0, m - 1), min_size=1))), dtype=np.int64)
               for _ in range(steps)]
    return dict(
        depth=depth,
        activation=draw(st.sampled_from(SMOOTH)),
        loss=draw(st.sampled_from(["mse", "logistic"])),
        reduction=draw(st.sampled_from(["mean", "sum"])),
        parametrization=draw(st.sampled_from(["mup", "sp", "ntp", "ip"])),
        width=draw(st.integers(3, 6)),
        d=draw(st.integers(1, 3)),
        m=m,
        m_eval=draw(st.integers(0, 2)),
        steps=steps,
        batches=batches,
        lr=draw(st.floats(0.02, 0.3)),
        init_std=[draw(st.floats(0.5, 1.5)) for _ in range(depth + 1)],
        lr_mult=[draw(st.floats(0.5, 2.0)) for _ in range(depth + 1)],
        seed=draw(st.integers(0, 2**16)),
    )


@settings(max_examples=40)
@given(cfg=configs())
def test_sgd_steps_match_finite_difference_gradient_descent(cfg):
    """Every recorded quantity of a short run equals the independent reference:
    outputs, loss, χ, feature kernels and cross kernels from the numpy forward,
    the weights moved by W^l -= lr_l · (FD gradient of the batch loss) with the §5
    learning rates, and dh kernels from FD derivatives n ∂f/∂h^l."""
    _check_against_reference(cfg)


@pytest.mark.parametrize("parametrization", ["mup", "sp", "ntp", "ip"])
@pytest.mark.parametrize("activation", SMOOTH)
def test_every_parametrization_and_activation_against_reference(parametrization, activation):
    """The same check on a fixed depth-3 configuration, so that every pair is covered."""
    _check_against_reference(dict(
        depth=3, activation=activation, loss="mse", reduction="mean", parametrization=parametrization,
        width=4, d=2, m=3, m_eval=1, steps=2, batches=[np.array([0, 2]), np.array([1])], lr=0.2,
        init_std=[1.2, 0.8, 1.1, 0.9], lr_mult=[1.0, 1.5, 0.7, 1.3], seed=5))


def _check_against_reference(cfg):
    L, n, d, m, T = cfg["depth"], cfg["width"], cfg["d"], cfg["m"], cfg["steps"]
    model = zlimit.MLP(depth=L, activation=cfg["activation"], loss=cfg["loss"], reduction=cfg["reduction"],
                       lr=cfg["lr"], init_std=cfg["init_std"], lr_mult=cfg["lr_mult"])
    rng = np.random.default_rng(cfg["seed"])
    X = unit_rows(rng, m, d)
    X_eval = unit_rows(rng, cfg["m_eval"], d)
    y = rng.choice([-1.0, 1.0], size=m) if cfg["loss"] == "logistic" else rng.uniform(-1.5, 1.5, size=m)
    p, act = cfg["parametrization"], NP_ACTIVATIONS[cfg["activation"]]
    run = train_finite(model, X, y, width=n, steps=T, seed=cfg["seed"], X_eval=X_eval,
                       batches=cfg["batches"], parametrization=p, record_steps=range(T + 1))

    Ws = [W.copy() for W in init_weights(model, d, n, p, seed=cfg["seed"])]
    eta = [cfg["lr"] * c for c in cfg["lr_mult"]]
    _, lrs = table_scales(p, cfg["init_std"], eta, n, d)
    Xi = np.vstack([X, X_eval])
    # Not round-off (RTOL): the reference's weights follow finite-difference gradients
    # (step 1e-4, fourth order: truncation ~h⁴ and round-off ~eps/h ~ 1e-12 relative per
    # gradient entry, carried through the steps), so the trajectories part by more.
    tol = dict(rtol=1e-7, atol=1e-9)
    feats_at = []
    for t in range(T + 1):
        hs, xs, f = ref_forward(Ws, Xi, act)
        feats_at.append((hs, xs))
        np.testing.assert_allclose(run.outputs[t], f, **tol)
        full = np.mean(NP_LOSSES[cfg["loss"]](f[:m], y)) if cfg["reduction"] == "mean" \
            else np.sum(NP_LOSSES[cfg["loss"]](f[:m], y))
        np.testing.assert_allclose(run.loss[t], full, **tol)
        for l in range(1, L + 1):
            for kind, v in (("h", hs[l - 1]), ("x", xs[l - 1])):
                np.testing.assert_allclose(run.kernel(l, kind)[t], v @ v.T / n, **tol)
                for s in range(t + 1):
                    vs = feats_at[s][0 if kind == "h" else 1][l - 1]
                    np.testing.assert_allclose(run.cross_kernel_groups(l, kind, s)[0, t], vs @ v.T / n, **tol)
                for s in range(t + 1, T + 1):
                    assert np.all(np.isnan(run.cross_kernel_groups(l, kind, s)[0, t]))
        if t == T:
            break
        batch = cfg["batches"][t]
        r = 1.0 / len(batch) if cfg["reduction"] == "mean" else 1.0
        chi = np.zeros(m)
        chi[batch] = r * NP_LOSS_GRADS[cfg["loss"]](f[batch], y[batch])
        np.testing.assert_allclose(run.error_signals[t], chi, rtol=tol["rtol"], atol=1e-12)

        # dh^l(ξ_i) = n ∂f(ξ_i)/∂h^l(ξ_i) by central differences in each coordinate.
        for l in range(1, L + 1):
            dh = np.empty((len(batch), n))
            for a, i in enumerate(batch):
                for k in range(n):
                    fp = ref_forward(Ws, Xi, act, (l, i, k, 1e-4))[2][i]
                    fm = ref_forward(Ws, Xi, act, (l, i, k, -1e-4))[2][i]
                    fp2 = ref_forward(Ws, Xi, act, (l, i, k, 2e-4))[2][i]
                    fm2 = ref_forward(Ws, Xi, act, (l, i, k, -2e-4))[2][i]
                    dh[a, k] = n * (-fp2 + 8 * fp - 8 * fm + fm2) / (12e-4)
            K = run.kernel(l, "dh")[t]
            # dh itself by central differences (round-off ~eps·n/h per entry): looser still
            np.testing.assert_allclose(K[np.ix_(batch, batch)], dh @ dh.T / n, rtol=1e-6, atol=1e-8)
            outside = np.setdiff1d(np.arange(m), batch)
            assert np.all(np.isnan(K[outside, :])) and np.all(np.isnan(K[:, outside]))

        grads = [fd_gradient(lambda: batch_loss(Ws, X, y, batch, act, cfg["loss"], cfg["reduction"]), W)
                 for W in Ws]
        Ws = [W - lr * G for W, lr, G in zip(Ws, lrs, grads)]


def test_layer_scales_match_section5_table():
    model = zlimit.MLP(depth=3, lr=0.3, init_std=[0.7, 1.3, 0.9, 1.1], lr_mult=[2.0, 0.5, 1.0, 3.0])
    for p in ("mup", "sp", "ntp", "ip"):
        stds, lrs = layer_scales(model, 5, 40, p)
        std_ref, lr_ref = table_scales(p, [0.7, 1.3, 0.9, 1.1], [0.6, 0.15, 0.3, 0.9], 40, 5)
        assert_close(stds, std_ref)
        assert_close(lrs, lr_ref)


@pytest.mark.parametrize("p", ["mup", "sp", "ntp", "ip"])
def test_init_weights_follow_section5_table(p):
    """Empirical std and mean of every weight matrix match the §5 init (std, 0) within the
    normal Bonferroni threshold for 8 comparisons (3.84 se; the std of a sample std of N
    normals is ≈ σ/sqrt(2N), of a sample mean σ/sqrt(N))."""
    sigma = [0.7, 1.3, 0.9, 1.1]
    model = zlimit.MLP(depth=3, init_std=sigma)
    n, d = 300, 50
    Ws = init_weights(model, d, n, p, seed=3)
    std_ref, _ = table_scales(p, sigma, [0.1] * 4, n, d)
    assert [W.shape for W in Ws] == [(n, d), (n, n), (n, n), (1, n)]
    for W, s in zip(Ws, std_ref):
        N = W.size
        assert_within_se([W.std() / s, W.mean() / s], [1.0, 0.0], [1 / math.sqrt(2 * N), 1 / math.sqrt(N)],
                         dof=math.inf, n_comparisons=2 * len(Ws))
    again = init_weights(model, d, n, p, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(Ws, again))
    other = init_weights(model, d, n, p, seed=4)
    assert not np.array_equal(Ws[0], other[0])
    f32 = init_weights(model, d, n, p, seed=3, dtype="float32")
    assert all(a.dtype == np.float32 and np.array_equal(a, b.astype(np.float32)) for a, b in zip(f32, Ws))


def test_float32_run_tracks_float64_run():
    model = zlimit.MLP(depth=3, activation="gelu", lr=0.2)
    rng = np.random.default_rng(1)
    X, y = unit_rows(rng, 6, 4), rng.uniform(-1, 1, 6)
    r64 = train_finite(model, X, y, width=128, steps=5, seed=2)
    r32 = train_finite(model, X, y, width=128, steps=5, seed=2, dtype="float32")
    assert r32.meta["dtype"] == "float32" and r64.meta["dtype"] == "float64"
    assert r32.outputs.dtype == np.float64
    assert_close(r32.outputs, r64.outputs, np.float32)
    assert_close(r32.kernel(2, "x"), r64.kernel(2, "x"), np.float32)


def test_custom_activation_equals_named_one():
    def py_tanh(x):
        return math.tanh(x)

    def py_dtanh(x):
        return 1.0 - math.tanh(x) ** 2

    rng = np.random.default_rng(0)
    X, y = unit_rows(rng, 3, 3), rng.uniform(-1, 1, 3)
    a = train_finite(zlimit.MLP(depth=2, activation="tanh"), X, y, width=32, steps=3)
    b = train_finite(zlimit.MLP(depth=2, activation=Activation("mytanh", py_tanh, py_dtanh)), X, y, width=32, steps=3)
    assert_close(a.outputs, b.outputs)


# ---------------------------------------------------------------- width scaling
def _one_step_sizes(p, widths, seeds, depth=3):
    """Per-coordinate RMS sizes, averaged over seeds (mean of squares), per width.

    Returns dict name -> array over widths: "h{l}", "x{l}" (step 0), "dh{l}"
    (step 0), "Dh{l}", "Dx{l}" (change after one step, from ‖v_1−v_0‖² / n
    = K_1 − 2 C_{0,1} + K_0 on the diagonal).
    """
    model = zlimit.MLP(depth=depth, activation="tanh", lr=0.5)
    rng = np.random.default_rng(11)
    X, y = unit_rows(rng, 4, 8), np.array([4.0, -4.0, 3.0, -3.0])
    out: dict[str, list] = {}
    for n in widths:
        acc: dict[str, float] = {}
        for seed in seeds:
            run = train_finite(model, X, y, width=n, steps=1, seed=seed, parametrization=p)
            for l in range(1, depth + 1):
                for kind in ("h", "x"):
                    K = np.diagonal(run.kernel(l, kind), axis1=1, axis2=2)
                    C = np.diagonal(run.cross_kernel_groups(l, kind, 0)[0], axis1=1, axis2=2)
                    acc[f"{kind}{l}"] = acc.get(f"{kind}{l}", 0) + K[0].mean()
                    acc[f"D{kind}{l}"] = acc.get(f"D{kind}{l}", 0) + (K[1] - 2 * C[1] + K[0]).mean()
                acc[f"dh{l}"] = acc.get(f"dh{l}", 0) + np.diagonal(run.kernel(l, "dh")[0]).mean()
        for k, v in acc.items():
            out.setdefault(k, []).append(math.sqrt(v / len(seeds)))
    return {k: np.array(v) for k, v in out.items()}


WIDTHS = [256, 512, 1024, 2048, 4096]


def test_mup_sizes_are_width_independent_and_sp_updates_shrink():
    """μP (maths §1): features, backward vectors dh = n ∂f/∂h and their one-step
    changes all have Θ(1) coordinates, so over n = 256..4096 their RMS sizes stay in
    a narrow band.

    SP (§5: std 1/√n, lr η/n for every layer). At init g^l = ∂f/∂h^l has coordinates
    Θ(n^{-1/2}) (W^{L+1} has std n^{-1/2} and W^{lᵀ} preserves coordinate size). Then
      Δh^1 = ΔW^1 ξ = −(η/n) Σ χ g^1 (ξ·ξ)        → Θ(n^{-1} · n^{-1/2}) = n^{-3/2},
      Δh^l ≈ ΔW^l x^{l-1} = −(η/n) Σ χ g^l (x^{l-1}·x^{l-1}) → Θ(n^{-1} n^{-1/2} n) = n^{-1/2}
    (the term W^l Δx^{l-1} is only O(n^{-3/2})), and Δx^l = φ'(h^l) Δh^l + ... scales
    the same. Hence log-log slopes −3/2 for layer 1 and −1/2 for layers 2..L, as in
    Yang & Hu's Table 1 (SP with lr ∝ 1/n has no feature learning), while the init
    sizes stay flat, and dh = n ∂f/∂h^l grows like n · n^{-1/2} (slope +1/2).
    Targets of size 3-4 make χ ≈ −y/m insensitive to the random f_0 = Θ(1) of SP.
    """
    seeds = [0, 1]
    logn = np.log(WIDTHS)
    mup = _one_step_sizes("mup", WIDTHS, seeds)
    assert len(mup) == 15  # h, x, dh, Δh, Δx for 3 layers
    for key, v in mup.items():
        assert v.max() / v.min() < 1.5, (key, v)
        assert abs(np.polyfit(logn, np.log(v), 1)[0]) < 0.1, (key, v)

    sp = _one_step_sizes("sp", WIDTHS, seeds)
    for l in (1, 2, 3):
        for kind in ("h", "x"):
            assert sp[f"{kind}{l}"].max() / sp[f"{kind}{l}"].min() < 1.5
            slope = np.polyfit(logn, np.log(sp[f"D{kind}{l}"]), 1)[0]
            expected = -1.5 if l == 1 else -0.5
            assert abs(slope - expected) < 0.15, (kind, l, slope)
        # dh = n ∂f/∂h^l has coordinates n · n^{-1/2}: slope +1/2.
        assert abs(np.polyfit(logn, np.log(sp[f"dh{l}"]), 1)[0] - 0.5) < 0.15


# --------------------------------------------------------------------- batches
def _data(rng, m, d, loss="mse"):
    X = unit_rows(rng, m, d)
    y = rng.choice([-1.0, 1.0], size=m) if loss == "logistic" else rng.uniform(-1, 1, m)
    return X, y


def test_explicit_full_batches_equal_default_bit_for_bit():
    model = zlimit.MLP(depth=3, activation="silu", lr=0.3)
    rng = np.random.default_rng(5)
    X, y = _data(rng, 5, 3)
    X_eval = unit_rows(rng, 2, 3)
    a = train_finite(model, X, y, width=48, steps=6, seed=1, X_eval=X_eval, record_steps=(0, 3))
    b = train_finite(model, X, y, width=48, steps=6, seed=1, X_eval=X_eval, record_steps=(0, 3),
                     batches=[np.arange(5)] * 6)
    c = train_finite(model, X, y, width=48, steps=6, seed=1, X_eval=X_eval, record_steps=(0, 3),
                     batches=[list(range(4, -1, -1))] * 6)  # same sets, other order
    for other in (b, c):
        assert np.array_equal(a.outputs_groups, other.outputs_groups)
        assert np.array_equal(a.loss_groups, other.loss_groups)
        assert np.array_equal(a.error_signals_groups, other.error_signals_groups)
        for k in a.kernels:
            assert np.array_equal(a.kernels[k], other.kernels[k], equal_nan=True)
        for k in a.cross:
            assert np.array_equal(a.cross[k], other.cross[k], equal_nan=True)


@settings(max_examples=15)
@given(m=st.integers(2, 5), data=st.data(), loss=st.sampled_from(["mse", "logistic"]),
       reduction=st.sampled_from(["mean", "sum"]), p=st.sampled_from(["mup", "sp"]))
def test_minibatch_run_only_sees_its_batch(m, data, loss, reduction, p):
    """Training with the fixed batch S on all m inputs is the same trajectory as
    full-batch training on the inputs S alone with every other input moved to the
    evaluation set: inputs outside the batch (and eval inputs) have no influence."""
    S = np.array(sorted(data.draw(st.sets(st.integers(0, m - 1), min_size=1, max_size=m - 1))))
    rest = np.setdiff1d(np.arange(m), S)
    rng = np.random.default_rng(m)
    X, y = _data(rng, m, 3, loss)
    X_eval = unit_rows(rng, 1, 3)
    model = zlimit.MLP(depth=2, activation="tanh", loss=loss, reduction=reduction, lr=0.4)
    T = 3
    a = train_finite(model, X, y, width=40, steps=T, seed=7, X_eval=X_eval, batches=[S] * T, parametrization=p)
    b = train_finite(model, X[S], y[S], width=40, steps=T, seed=7, X_eval=np.vstack([X[rest], X_eval]),
                     parametrization=p)
    order = np.concatenate([S, rest, [m]])  # positions in a of b's inputs
    assert_close(a.outputs[:, order], b.outputs)
    assert_close(a.kernel(2, "x")[:, order][:, :, order], b.kernel(2, "x"))
    assert_close(a.error_signals[:, S], b.error_signals)
    assert np.all(a.error_signals[:, rest] == 0.0)
    assert_close(a.kernel(1, "dh")[:, S][:, :, S], b.kernel(1, "dh"))


def test_batch_schedule_drives_error_signals():
    model = zlimit.MLP(depth=1, activation="tanh", loss="logistic", reduction="mean", lr=0.5)
    rng = np.random.default_rng(2)
    X, y = _data(rng, 6, 4, "logistic")
    sched = batch_schedule(6, 2, 7, seed=3)
    run = train_finite(model, X, y, width=30, steps=7, batches=sched)
    for t, b in enumerate(sched):
        f = run.outputs[t, :6]
        expected = np.zeros(6)
        expected[b] = NP_LOSS_GRADS["logistic"](f[b], y[b]) / 2
        assert_close(run.error_signals[t], expected)


# ------------------------------------------------------------- result layout
def test_run_layout_and_meta():
    model = zlimit.MLP(depth=2, lr=0.1)
    rng = np.random.default_rng(0)
    X, y = _data(rng, 3, 2)
    run = train_finite(model, X, y, width=16, steps=4, seed=9, X_eval=unit_rows(rng, 2, 2),
                       parametrization="ntp", record_steps=[3, 1, 3])
    assert run.meta == {"kind": "finite", "width": 16, "parametrization": "ntp", "seed": 9, "steps": 4,
                        "m": 3, "m_eval": 2, "dtype": "float64"}
    assert run.record_steps == (0, 1, 3)


def test_fold_of_low_rank_updates_matches_dense_reference():
    """Widths large enough that pending updates are folded into W_0 mid-run (more than
    width/8 update columns) agree with plain dense gradient descent."""
    model = zlimit.MLP(depth=2, activation="softplus", lr=0.2)
    rng = np.random.default_rng(4)
    X, y = _data(rng, 5, 3)
    n, T = 16, 4  # cap = max(5, 16 // 8) = 5 columns: a fold at every step after the first
    run = train_finite(model, X, y, width=n, steps=T, seed=0)
    W1, W2, w3 = [W.copy() for W in init_weights(model, 3, n, seed=0)]
    act = NP_ACTIVATIONS["softplus"]
    lr1, lr2, lr3 = 0.2 * n / 3, 0.2, 0.2 / n
    for t in range(T + 1):
        hs, xs, f = ref_forward([W1, W2, w3], X, act)
        assert_close(run.outputs[t], f)
        # analytic backprop of the mean mse loss (independent of the FD test above)
        chi = (f - y) / 5
        g2 = w3[0] * (1 / (1 + np.exp(-hs[1])))                # (m, n): ∂f/∂h^2
        g1 = (g2 @ W2) * (1 / (1 + np.exp(-hs[0])))             # ∂f/∂h^1
        w3 = w3 - lr3 * (chi @ xs[1])[None]
        W2 = W2 - lr2 * (g2 * chi[:, None]).T @ xs[0]
        W1 = W1 - lr1 * (g1 * chi[:, None]).T @ X


# ----------------------------------------------------------------- bad input
MODEL = zlimit.MLP(depth=2)


def _ok(**kw):
    base = dict(X=np.eye(3) * np.sqrt(3), y=np.array([1.0, -1.0, 0.5]), width=4, steps=2)
    base.update(kw)
    X, y = base.pop("X"), base.pop("y")
    return train_finite(base.pop("model", MODEL), X, y, **base)


def test_ok_call_works():
    assert _ok().outputs.shape == (3, 3)


@settings(max_examples=25)
@given(which=st.sampled_from(["X", "y", "X_eval"]), pos=st.integers(0, 100),
       bad=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_non_finite_data_rejected(which, pos, bad):
    X, y, X_eval = np.eye(3), np.array([1.0, -1.0, 0.5]), np.ones((2, 3))
    arr = {"X": X, "y": y, "X_eval": X_eval}[which]
    arr.flat[pos % arr.size] = bad
    with pytest.raises(ValueError, match=f"{which} contains NaN or inf"):
        train_finite(MODEL, X, y, X_eval=X_eval, width=4, steps=1)


@settings(max_examples=25)
@given(m=st.integers(1, 4), d=st.integers(1, 4), dm=st.integers(-2, 2).filter(lambda v: v != 0),
       dd=st.integers(-2, 2).filter(lambda v: v != 0))
def test_shape_mismatches_rejected(m, d, dm, dd):
    X, y = np.ones((m, d)), np.ones(m)
    if m + dm >= 0:
        with pytest.raises(ValueError, match="y must have shape"):
            train_finite(MODEL, X, np.ones(m + dm), width=4, steps=1)
    if d + dd >= 0:
        with pytest.raises(ValueError, match="X_eval must have shape"):
            train_finite(MODEL, X, y, X_eval=np.ones((2, d + dd)), width=4, steps=1)
    with pytest.raises(ValueError, match="X must have shape"):
        train_finite(MODEL, np.ones(m * d), y, width=4, steps=1)
    with pytest.raises(ValueError, match="X_eval must have shape"):
        train_finite(MODEL, X, y, X_eval=np.ones(d), width=4, steps=1)


@settings(max_examples=20)
@given(label=st.floats(-3, 3).filter(lambda v: v not in (-1.0, 1.0)))
def test_logistic_needs_pm1_labels(label):
    model = zlimit.MLP(depth=1, loss="logistic")
    with pytest.raises(ValueError, match="labels in"):
        train_finite(model, np.eye(2), np.array([1.0, label]), width=4, steps=1)


@settings(max_examples=20)
@given(width=st.one_of(st.integers(-5, 0), st.floats(0.5, 10), st.just(True), st.text(max_size=3), st.none()))
def test_bad_width(width):
    with pytest.raises(ValueError, match="width"):
        _ok(width=width)


@settings(max_examples=20)
@given(p=st.text(max_size=6).filter(lambda s: s not in ("mup", "sp", "ntp", "ip")))
def test_unknown_parametrization(p):
    with pytest.raises(ValueError, match=r"parametrization must be one of \('mup', 'sp', 'ntp', 'ip'\)"):
        _ok(parametrization=p)


@pytest.mark.parametrize("batches, msg", [
    ([[0, 1]], "batches has 1 entries"),
    ([[0, 3], [1]], "outside"),
    ([[0], [-1]], "outside"),
    ([[0, 0], [1]], "repeats"),
    ([[], [1]], "non-empty"),
    ([[0.0], [1]], "integer"),
    ([[[0, 1]], [1]], "1-d"),
])
def test_bad_batches(batches, msg):
    with pytest.raises(ValueError, match=msg):
        _ok(batches=batches)


@pytest.mark.parametrize("steps", [-1, 1.5, "2", True])
def test_bad_steps(steps):
    with pytest.raises(ValueError, match="steps"):
        _ok(steps=steps)


@settings(max_examples=20)
@given(rs=st.lists(st.one_of(st.integers(-5, -1), st.integers(3, 9), st.floats(0, 2), st.just(True)),
                   min_size=1, max_size=3))
def test_bad_record_steps(rs):
    with pytest.raises(ValueError, match="record_steps"):
        _ok(record_steps=[0, 1] + rs)  # steps = 2: valid entries are 0, 1, 2


@pytest.mark.parametrize("dtype", ["float16", "int64", "double precision", None, complex])
def test_bad_dtype(dtype):
    with pytest.raises(ValueError, match="dtype must be one of"):
        _ok(dtype=dtype)


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        _ok(seed=seed)


def test_bad_model():
    with pytest.raises(ValueError, match="model must be a zlimit.MLP"):
        _ok(model="mlp")


@pytest.mark.parametrize("depth", [1, 3])
def test_divergence_error_names_step_and_learning_rate(depth):
    model = zlimit.MLP(depth=depth, activation="linear", loss="mse", lr=50.0)
    X = np.array([[1.0, 0.0], [0.6, 0.8]]) * np.sqrt(2)
    with pytest.raises(DivergenceError, match=r"non-finite at step \d+.*smaller lr") as info:
        train_finite(model, X, np.array([3.0, -2.0]), width=64, steps=100)
    assert isinstance(info.value, FloatingPointError) and isinstance(info.value, ArithmeticError)
    assert DivergenceError is zlimit.DivergenceError  # one class for finite and limit runs
    step = int(info.value.args[0].split("step ")[1].split(":")[0])
    assert 1 <= step <= 100
    # Up to the step before, the same run is finite.
    ok = train_finite(model, X, np.array([3.0, -2.0]), width=64, steps=step - 1)
    assert np.all(np.isfinite(ok.outputs))


def test_init_weights_seeds_are_bounded_like_every_seed():
    model = zlimit.MLP(depth=2)
    assert len(zlimit.init_weights(model, 2, 4, seed=2**64 - 1)) == 3
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        zlimit.init_weights(model, 2, 4, seed=2**64)  # numpy would take it
