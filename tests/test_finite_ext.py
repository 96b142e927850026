"""Finite-width networks with the maths §6 extensions: biases, k outputs, momentum, weight decay.

Every reference here is written from maths §5–§6 alone, in plain numpy, with inputs
as rows: a forward pass with biases and a (k, n) readout, the per-sample losses
("mse" summed over outputs, softmax cross-entropy), the batch loss
L = r·Σ_{i∈B} ℓ(f(ξ_i), y_i), central finite differences of L, a hand-written
backpropagation (itself checked against the finite differences), the learning-rate
tables, and torch.optim.SGD's heavy ball (dampening 0) with decoupled decay:
v ← βv + ∇L, p ← ρp − η_p v, ρ = 1 − ηλ. Only the initial parameters come from
zlimit (``init_parameters``), and their draw order is checked separately.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import zlimit
from zlimit._driver import Recorder, run_sgd
from zlimit._finite import FiniteState, bias_scales, init_parameters, init_weights
from zlimit._model import batch_schedule
from tolerance import assert_close

PARAMETRIZATIONS = ["mup", "sp", "ntp", "ip"]


# ------------------------------------------------------------------ references
def weight_lrs(p, eta, n, d):
    """Learning rates of W^1..W^{L+1}, maths §5 (per-layer η_l = η c_l)."""
    L = len(eta) - 1
    if p in ("mup", "ip"):
        return [eta[0] * n / d] + list(eta[1:L]) + [eta[L] / n]
    if p == "sp":
        return [e / n for e in eta]
    return [eta[0] / d] + [e / n for e in eta[1:L]] + [eta[L] / n]  # ntp


def bias_lrs(p, eta_b, n):
    """Learning rates of b^1..b^{L+1}, maths §6: a hidden bias takes W^1's rate with d = 1
    (SP η/n, NTP η, IP η·n, μP η·n), the output bias SP η/n, NTP η, IP η, μP η."""
    L = len(eta_b) - 1
    hidden = {"mup": n, "ip": n, "ntp": 1.0, "sp": 1.0 / n}[p]
    out = 1.0 / n if p == "sp" else 1.0
    return [e * hidden for e in eta_b[:L]] + [eta_b[L] * out]


def ref_forward(Ws, bs, Xi, perturb=None):
    """h^1 = W^1 ξ + b^1, x = tanh(h), h^{l+1} = W^{l+1} x^l + b^{l+1}, f = W^{L+1} x^L + b^{L+1}.

    ``perturb = (l, a, j, eps)`` adds eps to coordinate j of h^l of row a.
    Returns lists hs, xs of (M, n) arrays and f of shape (M, k).
    """
    hs, xs, x = [], [], Xi
    for l, (W, b) in enumerate(zip(Ws[:-1], bs[:-1]), start=1):
        h = x @ W.T + b
        if perturb is not None and perturb[0] == l:
            h[perturb[1], perturb[2]] += perturb[3]
        x = np.tanh(h)
        hs.append(h), xs.append(x)
    return hs, xs, x @ Ws[-1].T + bs[-1]


def per_sample_loss(loss, f, y):
    """ℓ per row of f (b, k): "mse" ‖f − y‖²/2, "xent" logsumexp(f) − f_y."""
    if loss == "mse":
        return 0.5 * np.sum((f - y.reshape(f.shape)) ** 2, axis=1)
    top = f.max(axis=1)
    return top + np.log(np.exp(f - top[:, None]).sum(axis=1)) - f[np.arange(len(f)), y.astype(int)]


def loss_grad(loss, f, y):
    """∂ℓ/∂f per row: f − y, or softmax(f) − onehot(y)."""
    if loss == "mse":
        return f - y.reshape(f.shape)
    e = np.exp(f - f.max(axis=1, keepdims=True))
    out = e / e.sum(axis=1, keepdims=True)
    out[np.arange(len(f)), y.astype(int)] -= 1.0
    return out


def reduction(batch, how):
    return 1.0 / len(batch) if how == "mean" else 1.0


def batch_loss(Ws, bs, X, y, batch, loss, how, perturb=None):
    f = ref_forward(Ws, bs, X[batch], perturb)[2]
    return reduction(batch, how) * per_sample_loss(loss, f, y[batch]).sum()


def central_difference(fun, P, h=1e-5):
    """(fun(P + h e_j) − fun(P − h e_j)) / 2h in every entry j of P (modified in place)."""
    G = np.empty_like(P)
    for idx in np.ndindex(P.shape):
        p0 = P[idx]
        P[idx] = p0 + h
        up = fun()
        P[idx] = p0 - h
        down = fun()
        P[idx] = p0
        G[idx] = (up - down) / (2 * h)
    return G


def backprop(Ws, bs, X, y, batch, loss, how):
    """∇L for every W^l and b^l by the chain rule, written out (rows are batch inputs)."""
    L = len(Ws) - 1
    hs, xs, f = ref_forward(Ws, bs, X[batch])
    df = reduction(batch, how) * loss_grad(loss, f, y[batch])  # (b, k): ∂L/∂f
    gW, gb = [None] * (L + 1), [None] * (L + 1)
    gW[L], gb[L] = df.T @ xs[L - 1], df.sum(axis=0)
    delta = (df @ Ws[L]) * (1 - np.tanh(hs[L - 1]) ** 2)  # ∂L/∂h^L
    for l in range(L - 1, -1, -1):
        below = X[batch] if l == 0 else xs[l - 1]
        gW[l], gb[l] = delta.T @ below, delta.sum(axis=0)
        if l:
            delta = (delta @ Ws[l]) * (1 - np.tanh(hs[l - 1]) ** 2)
    return gW, gb


def unit_rows(rng, m, d):
    X = rng.standard_normal((m, d))
    return X * np.sqrt(d) / np.linalg.norm(X, axis=1, keepdims=True)


def targets(rng, loss, m, k):
    if loss == "xent":
        return np.arange(m) % k  # every class present when m >= k
    return rng.uniform(-1.5, 1.5, size=(m, k) if k > 1 else m)


def start(model, d, n, p, seed):
    """The drawn initial parameters as float64 copies, W^{L+1} as (k, n), zero biases without them."""
    weights, biases = init_parameters(model, d, n, p, seed)
    Ws = [W.copy() for W in weights]
    if biases:
        return Ws, [b.copy() for b in biases]
    return Ws, [np.zeros(n) for _ in range(model.depth)] + [np.zeros(model.outputs)]


CASES = {  # name: (outputs, loss, biases)
    "bias": (1, "mse", True),
    "k3-mse": (3, "mse", True),
    "k3-xent": (3, "xent", True),
    "k3-nobias": (3, "xent", False),
}


def case_model(case, depth=3, lr=0.3, **kw):
    k, loss, bias = CASES[case]
    extra = dict(bias_std=[0.6, 0.9, 1.1, 0.4][:depth] + [0.4], bias_lr_mult=[1.5, 0.5, 2.0, 0.7][:depth] + [1.3]) \
        if bias else {}
    return zlimit.MLP(depth=depth, activation="tanh", loss=loss, reduction="mean", lr=lr, outputs=k,
                      init_std=[1.2, 0.8, 1.1, 0.9][:depth] + [0.9], lr_mult=[1.0, 1.5, 0.7, 1.3][:depth] + [1.3],
                      **extra, **kw)


# ---------------------------------------------------------------- tables, draws
def test_bias_scales_follow_section6_table():
    model = zlimit.MLP(depth=3, lr=0.3, bias_std=[0.7, 1.3, 0.9, 0.2], bias_lr_mult=[2.0, 0.5, 1.0, 3.0])
    for p in PARAMETRIZATIONS:
        stds, lrs = bias_scales(model, 40, p)
        assert_close(stds, [0.7, 1.3, 0.9, 0.2])
        assert_close(lrs, bias_lrs(p, [0.6, 0.15, 0.3, 0.9], 40))
    stds, lrs = bias_scales(zlimit.MLP(depth=2, bias_std=0.5), 10)
    assert stds == (0.5, 0.5, 0.0)  # one σ_b: hidden biases only, the output bias starts at 0
    assert bias_scales(zlimit.MLP(depth=2), 10) == ((0.0,) * 3, (0.0,) * 3)


@pytest.mark.parametrize("p", PARAMETRIZATIONS)
def test_parameters_are_drawn_weights_first_then_biases(p):
    """One generator draws W^1..W^{L+1} exactly as before (init_weights), then b^1..b^{L+1},
    each standard normals times its init std (maths §6, the std is the same in every
    parametrization); k outputs give a (k, n) readout and a (k,) output bias."""
    model = zlimit.MLP(depth=3, outputs=4, loss="xent", bias_std=[0.7, 1.3, 0.9, 0.25])
    n, d = 12, 5
    weights, biases = init_parameters(model, d, n, p, seed=9)
    plain = zlimit.MLP(depth=3, outputs=4, loss="xent")
    assert all(np.array_equal(a, b) for a, b in zip(weights, init_weights(plain, d, n, p, seed=9)))
    assert [W.shape for W in weights] == [(n, d), (n, n), (n, n), (4, n)]
    rng = np.random.default_rng(9)
    for W in weights:
        rng.standard_normal(W.shape)
    expected = [rng.standard_normal(shape) * s for shape, s in zip([(n,)] * 3 + [(4,)], [0.7, 1.3, 0.9, 0.25])]
    assert all(np.array_equal(a, b) for a, b in zip(biases, expected))
    assert init_parameters(plain, d, n, p, seed=9)[1] == []
    f32 = init_parameters(model, d, n, p, seed=9, dtype="float32")[1]
    assert all(a.dtype == np.float32 and np.array_equal(a, b.astype(np.float32)) for a, b in zip(f32, biases))


# ------------------------------------------------------- one SGD step vs FD
@pytest.mark.parametrize("p", PARAMETRIZATIONS)
@pytest.mark.parametrize("case", ["bias", "k3-mse", "k3-xent", "k3-nobias"])
def test_one_step_equals_finite_difference_gradient_step(p, case):
    """From the drawn parameters, one step (β = 0, λ = 0) moves every parameter by
    −η_p · ∂L/∂p, L the batch loss, with the §5/§6 learning rates: the step each parameter
    took, divided by the reference η_p, equals the central finite difference of L. The
    recorded dh kernels are n·∂·∂' of the backward vectors: ∂f/∂h^l for k = 1, and the
    error-weighted ∂L/∂h^l for k > 1 (maths §6), also by central differences.

    Central differences with h = 1e-5 on an O(1) loss: truncation h²·L'''/6 ~ 1e-11 and
    round-off eps·L/h ~ 1e-11 per entry, so the gradients agree to ~1e-10 absolute;
    rtol 1e-6 and atol 1e-8 leave margin and stay far below any wrong factor."""
    model = case_model(case)
    k, loss, _ = CASES[case]
    n, d, m, L = 8, 3, 3, model.depth
    rng = np.random.default_rng(1)
    X, y = unit_rows(rng, m, d), targets(rng, loss, m, k)
    batch = np.array([0, 2])
    state = FiniteState(model, X, np.zeros((0, d)), width=n, seed=4, parametrization=p)
    rec = run_sgd(state, model, y, [batch], 1, Recorder(L, 1, m, m, (0,), outputs=k))

    Ws, bs = start(model, d, n, p, seed=4)
    fun = lambda: batch_loss(Ws, bs, X, y, batch, loss, "mean")
    lrs_W = weight_lrs(p, model.eta, n, d)
    after_W = [state.W1] + [W.dense() for W in state.hidden] + [state.w_out.reshape(k, n)]
    for W, W1, lr in zip(Ws, after_W, lrs_W):
        before = W.copy()
        np.testing.assert_allclose((before - W1) / lr, central_difference(fun, W), rtol=1e-6, atol=1e-8)
    if model.has_bias:
        for b, b1, lr in zip(bs, state.biases, bias_lrs(p, model.bias_eta, n)):
            before = b.copy()
            np.testing.assert_allclose((before - b1) / lr, central_difference(fun, b), rtol=1e-6, atol=1e-8)
    else:
        assert state.biases == []

    _, _, f0 = ref_forward(Ws, bs, X)
    np.testing.assert_allclose(rec.outputs[0], f0 if k > 1 else f0[:, 0], rtol=1e-12, atol=1e-12)
    for l in range(1, L + 1):
        dh = np.empty((len(batch), n))
        for a, i in enumerate(batch):
            for j in range(n):
                if k == 1:  # ∂f(ξ_i)/∂h^l(ξ_i), f alone
                    out = lambda eps: ref_forward(Ws, bs, X[[i]], (l, 0, j, eps))[2][0, 0]
                else:  # ∂L/∂h^l(ξ_i), the batch loss
                    out = lambda eps: batch_loss(Ws, bs, X, y, batch, loss, "mean", (l, a, j, eps))
                dh[a, j] = n * (out(1e-5) - out(-1e-5)) / 2e-5
        K = rec.kernels[f"dh{l}"][0][np.ix_(batch, batch)]
        np.testing.assert_allclose(K, dh @ dh.T / n, rtol=1e-6, atol=1e-8)


def test_reference_backprop_matches_finite_differences():
    """The hand-written backprop of the momentum reference below is ∇L (tolerance as above)."""
    for case in ("bias", "k3-xent"):
        model = case_model(case)
        k, loss, _ = CASES[case]
        rng = np.random.default_rng(3)
        X, y = unit_rows(rng, 4, 3), targets(rng, loss, 4, k)
        Ws, bs = start(model, 3, 6, "sp", seed=2)
        batch = np.array([1, 2, 3])
        gW, gb = backprop(Ws, bs, X, y, batch, loss, "mean")
        fun = lambda: batch_loss(Ws, bs, X, y, batch, loss, "mean")
        for P, G in zip(Ws + bs, gW + gb):
            np.testing.assert_allclose(G, central_difference(fun, P), rtol=1e-6, atol=1e-8)


# ---------------------------------------------------- momentum and weight decay
@pytest.mark.parametrize("p", PARAMETRIZATIONS)
@pytest.mark.parametrize("beta, lam", [(0.9, 0.0), (0.0, 0.2), (0.9, 0.2), (0.0, 0.0)])
@pytest.mark.parametrize("case", ["plain", "k3-xent", "bias"])
def test_momentum_and_weight_decay_match_torch_sgd_reference(p, beta, lam, case):
    """train_finite equals, to round-off, torch.optim.SGD(momentum=β, dampening=0) with decoupled
    decay on every parameter: v_p ← β v_p + ∇_p L, p ← (1 − ηλ) p − η_p v_p, velocities from 0
    and never decayed (maths §6), with the §5/§6 learning rates and hand-written gradients.
    Outputs on training and evaluation inputs at every step are compared (rtol 1e-10:
    both sides are exact float64 arithmetic in different orders)."""
    if case == "plain":
        model = zlimit.MLP(depth=3, activation="tanh", lr=0.3, init_std=[1.2, 0.8, 1.1, 0.9],
                           lr_mult=[1.0, 1.5, 0.7, 1.3], momentum=beta, weight_decay=lam)
        k, loss = 1, "mse"
    else:
        model = case_model(case, momentum=beta, weight_decay=lam)
        k, loss, _ = CASES[case]
    n, d, m, T = 10, 3, 4, 4
    rng = np.random.default_rng(5)
    X, X_eval, y = unit_rows(rng, m, d), unit_rows(rng, 2, d), targets(rng, loss, m, k)
    batches = batch_schedule(m, 2, T, seed=3)
    run = zlimit.train_finite(model, X, y, width=n, steps=T, seed=6, X_eval=X_eval, batches=batches,
                              parametrization=p)

    Ws, bs = start(model, d, n, p, seed=6)
    params = Ws + bs
    lrs = weight_lrs(p, model.eta, n, d) + bias_lrs(p, model.bias_eta, n)
    velocity = [np.zeros_like(q) for q in params]
    rho = 1.0 - model.lr * lam
    Xi = np.vstack([X, X_eval])
    for t in range(T + 1):
        f = ref_forward(Ws, bs, Xi)[2]
        assert_close(run.outputs[t], f if k > 1 else f[:, 0])
        if t == T:
            break
        gW, gb = backprop(Ws, bs, X, y, batches[t], loss, "mean")
        for q, v, g, lr in zip(params, velocity, gW + gb, lrs):
            v[...] = beta * v + g
            q[...] = rho * q - lr * v
    assert run.outputs.shape == ((T + 1, m + 2, k) if k > 1 else (T + 1, m + 2))


def test_zero_biases_leave_plain_run_bit_identical():
    """Biases drawn with std 0 and never trained (bias_lr_mult 0) add zeros: the run is the
    run without biases bit for bit, so the bias draws come after the weights' and leave
    the weights' arithmetic alone. Likewise momentum = 0 and weight_decay = 0 spelled out
    are plain SGD."""
    rng = np.random.default_rng(2)
    X, y = unit_rows(rng, 5, 3), rng.uniform(-1, 1, 5)
    kw = dict(width=24, steps=6, seed=3, X_eval=unit_rows(rng, 2, 3), batches=batch_schedule(5, 2, 6, seed=0),
              record_steps=(0, 3))
    for p in PARAMETRIZATIONS:
        plain = zlimit.train_finite(zlimit.MLP(depth=3, lr=0.4), X, y, parametrization=p, **kw)
        zero = zlimit.train_finite(zlimit.MLP(depth=3, lr=0.4, bias_std=0.0, bias_lr_mult=0.0, momentum=0.0,
                                              weight_decay=0.0), X, y, parametrization=p, **kw)
        assert_identical(zero, plain)


def test_float32_run_with_extensions_tracks_float64_run():
    """Biases, k = 3 outputs, momentum and decay in float32 follow the float64 run to float32 round-off."""
    model = case_model("k3-mse", momentum=0.9, weight_decay=0.1)
    rng = np.random.default_rng(4)
    X, y = unit_rows(rng, 5, 3), targets(rng, "mse", 5, 3)
    r64 = zlimit.train_finite(model, X, y, width=64, steps=4, seed=1)
    r32 = zlimit.train_finite(model, X, y, width=64, steps=4, seed=1, dtype="float32")
    assert r32.outputs.dtype == np.float64 and r32.outputs.shape == (5, 5, 3)
    assert_close(r32.outputs, r64.outputs, np.float32)
    assert_close(r32.kernel(2, "dh"), r64.kernel(2, "dh"), np.float32)


# ------------------------------------------------------------------ checkpoints
class Boom(Exception):
    pass


def assert_identical(a: zlimit.Run, b: zlimit.Run) -> None:
    """Every array bit for bit (NaN where NaN) and the same meta."""
    for name in ("outputs_groups", "loss_groups", "error_signals_groups"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), name
    for part in ("kernels", "cross"):
        A, B = getattr(a, part), getattr(b, part)
        assert A.keys() == B.keys(), part
        for key in A:
            assert np.array_equal(A[key], B[key], equal_nan=True), (part, key)
    assert a.meta == b.meta


@pytest.mark.parametrize("beta", [0.9, 0.0])
def test_resume_with_momentum_decay_biases_and_k_outputs_is_bit_identical(tmp_path, beta):
    """A run with momentum (or, β = 0, decay alone: the dense matrices without velocity),
    weight decay, biases (a random output bias too) and k = 3 outputs, stopped after step s
    and resumed from its checkpoint, is the uninterrupted run bit for bit: the checkpoint
    holds the biases and every velocity."""
    model = zlimit.MLP(depth=3, activation="tanh", loss="xent", outputs=3, lr=0.4, bias_std=[0.5, 0.5, 0.5, 0.3],
                       momentum=beta, weight_decay=0.1)
    rng = np.random.default_rng(8)
    X, y = unit_rows(rng, 6, 2), np.arange(6) % 3
    kw = dict(width=32, steps=10, X_eval=unit_rows(rng, 1, 2), record_steps=(0, 4),
              batches=batch_schedule(6, 3, 10, seed=1), parametrization="sp")
    reference = zlimit.train_finite(model, X, y, **kw)
    for step in (0, 4, 9):
        path = tmp_path / f"net{step}.ckpt"

        def stop(g, t):
            if t == step:
                raise Boom

        with pytest.raises(Boom):
            zlimit.train_finite(model, X, y, checkpoint=path, checkpoint_every=0, on_step=stop, **kw)
        with np.load(path) as f:
            assert json.loads(str(f["__checkpoint__"][()]))["steps"] == {"0": step}
            stored = set(f.files)
        assert {"0/state/b1", "0/state/b4", "0/state/W2/W"} <= stored
        assert ({"0/state/V/W1", "0/state/V/w_out", "0/state/V/b2", "0/state/W3/U"} <= stored) == (beta > 0)
        assert_identical(zlimit.train_finite(model, X, y, checkpoint=path, **kw), reference)
