"""The exact deep linear limit (maths §4) against independent references.

References used here, none of them the code under test:

* closed forms derived by hand in the comments (one step from initialisation, the
  kernels at initialisation, the L = 1 covariance recursion);
* the Gauss–Hermite quadrature oracle of ``tests/oracles.py`` for L = 1;
* finite-width μP linear networks written below in plain numpy (maths §1 table),
  averaged over seeds, at growing width;
* exact symmetries of linear networks, derived in the comments.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

import zlimit
from zlimit._errors import DivergenceError
from zlimit._results import key, parse_key
from oracles import quadrature_l1
from tolerance import assert_close, assert_within_se


def exact_limit(model, X, y, **kwargs):
    """The exact linear limit through the public entry point (``zlimit._exact.simulate_exact`` behind it)."""
    return zlimit.simulate(model, X, y, method="exact", **kwargs)


def linear_model(depth, lr=0.3, sigma=None, mult=None, **kw):
    sigma = [1.0, 1.2, 0.8, 1.1, 0.9][: depth + 1] if sigma is None else sigma
    mult = [1.0, 0.7, 1.3, 0.9, 1.1][: depth + 1] if mult is None else mult
    return zlimit.MLP(depth=depth, activation="linear", lr=lr, init_std=sigma, lr_mult=mult, **kw)


def data(seed, m=3, d=2, m_eval=2, labels="real"):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    y = rng.standard_normal(m) if labels == "real" else rng.choice([-1.0, 1.0], size=m)
    return X, y, rng.standard_normal((m_eval, d))


def loss_grad(model, f, y):
    """∂ℓ/∂f written here: f − y (mse) or −y/(1 + e^{yf}) (logistic)."""
    if model.loss.name == "mse":
        return f - y
    return -y / (1.0 + np.exp(y * f))


def chi_of(model, f, y, batch):
    """χ_i = r ∂ℓ/∂f 1{i ∈ B} (maths §1), r = 1/|B| for "mean"."""
    chi = np.zeros_like(f)
    r = 1.0 / len(batch) if model.reduction == "mean" else 1.0
    chi[batch] = r * loss_grad(model, f[batch], y[batch])
    return chi


# ----------------------------------------------------------------- L = 1 closed forms
def l1_moments(model, X, y, X_eval, batches, steps):
    """L = 1, φ(x) = x: the covariance recursion of v_t = (Ŵ_t, h_t(ξ_1), ..., h_t(ξ_M)).

    Derivation from maths §2 with L = 1: Z^{dh^1_t} = Z^{dx^1_t} φ' = Z^{Ŵ_t}, so

        h_{t+1}(ξ_a) = h_t(ξ_a) − η_1 Σ_i χ_{t,i} (ξ_i·ξ_a/d) Ŵ_t
        Ŵ_{t+1}      = Ŵ_t − η_2 Σ_i χ_{t,i} h_t(ξ_i),

    i.e. v_{t+1} = A_t v_t with deterministic A_t. v_0 is centred Gaussian with
    Cov blockdiag(σ_2², σ_1² ΞΞᵀ/d). Hence Σ_{t+1} = A_t Σ_t A_tᵀ,
    f̊_t(ξ_a) = E[Ŵ_t h_t(ξ_a)] = Σ_t[0, 1+a], and Cov(v_s, v_t) = Σ_s (A_{t−1}⋯A_s)ᵀ.

    Returns outputs (T+1, M), the h kernels (T+1, M, M) and cross[s][t] (M, M).
    """
    X_all = np.vstack([X, X_eval])
    m, d = X.shape
    M = X_all.shape[0]
    K = X_all @ X_all.T / d
    s1, s2 = model.sigma
    e1, e2 = model.eta
    S = np.zeros((M + 1, M + 1))
    S[0, 0] = s2**2
    S[1:, 1:] = s1**2 * K
    covs, mats, outputs = [S], [], []
    for t in range(steps + 1):
        outputs.append(S[0, 1:].copy())
        if t == steps:
            break
        chi = chi_of(model, S[0, 1:m + 1], y, batches[t])
        A = np.eye(M + 1)
        A[0, 1:m + 1] = -e2 * chi
        A[1:, 0] = -e1 * (K[:m].T @ chi)
        S = A @ S @ A.T
        covs.append(S)
        mats.append(A)
    cross = {}
    for s in range(steps + 1):
        P = np.eye(M + 1)
        cross[s] = {}
        for t in range(s, steps + 1):
            cross[s][t] = (covs[s] @ P.T)[1:, 1:]
            if t < steps:
                P = mats[t] @ P
    return np.array(outputs), np.array([c[1:, 1:] for c in covs]), cross


def test_oracle_linear_one_step_closed_form():
    # L = 1, φ(x) = x, mse, full batch, one step. f̊_0 = E[Ŵ_0 h_0] = 0, so
    # χ_0,i = r(0 − y_i) = −r y_i. With dh_0 = Ŵ_0:
    #   h_1(ξ_a) = h_0(ξ_a) − η_1 Σ_i χ_i K_ia Ŵ_0,   Ŵ_1 = Ŵ_0 − η_2 Σ_i χ_i h_0(ξ_i)
    #   f̊_1(ξ_a) = E[Ŵ_1 h_1(ξ_a)]
    #            = E[Ŵ_0 h_0] − η_1 Σ χ_i K_ia E[Ŵ_0²] − η_2 Σ χ_i E[h_0(ξ_i) h_0(ξ_a)]
    #              + η_1 η_2 Σ χ_i χ_j K_ja E[h_0(ξ_i) Ŵ_0]
    #            = r (η_1 σ_2² + η_2 σ_1²) Σ_i y_i K_ia,     K_ia = ξ_i·ξ_a/d.
    X, y, X_eval = data(0, m=3, d=2, m_eval=2)
    model = linear_model(1, lr=0.4, sigma=[1.3, 0.7], mult=[1.2, 0.8])
    out = quadrature_l1(model, X, y, steps=1, X_eval=X_eval, order=6)
    X_all = np.vstack([X, X_eval])
    K = X @ X_all.T / 2
    e1, e2 = 0.4 * 1.2, 0.4 * 0.8
    expected = (1 / 3) * (e1 * 0.7**2 + e2 * 1.3**2) * (y @ K)
    assert_close(out["outputs"][0], 0.0, scale=np.abs(expected).max())  # f̊_0 = 0: the cancelling terms are O(f̊_1)
    assert_close(out["outputs"][1], expected)
    assert_close(out["error_signals"][0], -y / 3)
    assert_close(out["loss"][0], np.mean(0.5 * y**2))


@pytest.mark.parametrize("loss,reduction", [("mse", "mean"), ("mse", "sum"), ("logistic", "mean")])
def test_oracle_linear_matches_moment_recursion(loss, reduction):
    X, y, X_eval = data(1, m=3, d=2, m_eval=1, labels="real" if loss == "mse" else "pm1")
    model = linear_model(1, lr=0.35, sigma=[0.9, 1.4], mult=[1.1, 0.6], loss=loss, reduction=reduction)
    batches = [np.array([0, 2]), np.array([1]), np.array([0, 1, 2]), np.array([2]), np.array([0, 1])]
    ref, _, _ = l1_moments(model, X, y, X_eval, batches, 5)
    out = quadrature_l1(model, X, y, steps=5, X_eval=X_eval, batches=batches, order=8)
    assert_close(out["outputs"], ref)


@pytest.mark.parametrize("activation,lr,steps,tol", [
    ("sigmoid", 0.5, 2, 1e-11), ("silu", 0.5, 2, 1e-9), ("softplus", 0.5, 2, 1e-11), ("tanh", 0.1, 1, 1e-9),
])
def test_oracle_quadrature_converges_in_order(activation, lr, steps, tol):
    # Order 40 against 60: the tolerances are the quadrature's truncation error, not
    # round-off, hence per activation and not RTOL. tanh converges more slowly than the others: the
    # integrand's singularities (poles of tanh and sech² composed with h_0 − c Ŵ_0 ...)
    # approach the real axis as |Ŵ_0| grows, so it is checked at a small lr.
    X = np.array([[1.0, 0.0], [0.6, 0.8]])
    y = np.array([1.0, -1.0])
    model = zlimit.MLP(depth=1, activation=activation, lr=lr)
    a = quadrature_l1(model, X, y, steps=steps, X_eval=np.array([[0.0, 1.0]]), order=40)
    b = quadrature_l1(model, X, y, steps=steps, X_eval=np.array([[0.0, 1.0]]), order=60)
    np.testing.assert_allclose(a["outputs"], b["outputs"], rtol=0, atol=tol)
    assert np.abs(b["outputs"][-1]).max() > 1e-2  # the comparison is not between zeros


# ----------------------------------------------------------- exact vs the L = 1 oracle
@pytest.mark.parametrize("loss,reduction,minibatch,m_eval", [
    ("mse", "mean", False, 0), ("mse", "sum", True, 2), ("logistic", "mean", True, 1), ("logistic", "sum", False, 2),
])
def test_exact_matches_quadrature_l1(loss, reduction, minibatch, m_eval):
    X, y, X_eval = data(2, m=4, d=2, m_eval=m_eval, labels="real" if loss == "mse" else "pm1")
    model = linear_model(1, lr=0.3, sigma=[1.2, 0.8], mult=[0.9, 1.4], loss=loss, reduction=reduction)
    steps = 8
    batches = zlimit.batch_schedule(4, 2, steps, seed=3) if minibatch else None
    run = exact_limit(model, X, y, steps=steps, X_eval=X_eval, batches=batches)
    ref = quadrature_l1(model, X, y, steps=steps, X_eval=X_eval, batches=batches, order=8)
    assert_close(run.outputs, ref["outputs"])
    assert_close(run.loss, ref["loss"])
    assert_close(run.error_signals, ref["error_signals"])
    assert np.abs(run.outputs[-1]).max() > 0.05


def test_exact_l1_kernels_match_moment_recursion():
    X, y, X_eval = data(4, m=3, d=3, m_eval=2)
    model = linear_model(1, lr=0.4, sigma=[1.1, 0.9], mult=[1.3, 0.8])
    batches = zlimit.batch_schedule(3, 2, 6, seed=1)
    run = exact_limit(model, X, y, steps=6, X_eval=X_eval, batches=batches, record_steps=(2, 0, 5))
    outputs, kernels, cross = l1_moments(model, X, y, X_eval, batches, 6)
    assert_close(run.outputs, outputs)
    assert_close(run.kernel(1, "h"), kernels)
    for s in (0, 2, 5):
        got = run.cross_kernel_groups(1, "h", s)[0]
        assert np.all(np.isnan(got[:s]))
        assert_close(got[s:], np.array([cross[s][t] for t in range(s, 7)]))


# ---------------------------------------------------- one step from init, any depth
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_exact_one_step_closed_form(depth):
    # One SGD step from init in a deep linear net, any L, in the limit:
    #   f̊_1(ξ_a) = −(Σ_{l=1}^{L+1} η_l Π_{k≠l} σ_k²) Σ_i χ_{0,i} K_ia,   K_ia = ξ_i·ξ_a/d.
    # Derivation (maths §2, φ = id). At step 0 the backward world (Ŵ_0 and the
    # backward normals γ) is independent of the forward world (input and forward
    # normals), E[(dh^l_0)²] = Π_{k>l} σ_k² and E[x^{l-1}_0(ξ_i) x^{l-1}_0(ξ_a)] =
    # Π_{k<l} σ_k² K_ia. Write x^l_1 = x^l_0 + Δ^l. Δ^1 = −η_1 Σ χ_i K_ia dh^1_0; Δ^l is
    # the update term −η_l Σ χ_i dh^l_0 E[x^{l-1}_0(ξ_i) x^{l-1}_1(ξ_a)], plus
    # Ż = σ_l v E[γ Δ^{l-1}] along v = dh^l_0/‖dh^l_0‖ (dh^{l-1}_0 = σ_l ‖dh^l_0‖ γ), plus
    # Ẑ^{W^l Δ^{l-1}} on new normals. By induction E[x^l_0 Δ^l] = 0 and
    # e_l := E[dh^l_0 Δ^l] = −η_l Π_{k≠l, k<=L+1} σ_k² Σ χ_i K_ia + e_{l-1}.
    # Finally f̊_1 = E[Ŵ_0 x^L_1] − η_{L+1} Σ χ_i E[x^L_0(ξ_i) x^L_1(ξ_a)]
    #             = e_L − η_{L+1} Π_{k<=L} σ_k² Σ χ_i K_ia.
    # Without the Ż terms ("gradient independence") the η_1..η_{L-1} terms would be lost.
    X, y, X_eval = data(5, m=3, d=4, m_eval=2)
    model = linear_model(depth, lr=0.37)
    batch = np.array([0, 2])
    run = exact_limit(model, X, y, steps=1, X_eval=X_eval, batches=[batch])
    chi = chi_of(model, np.zeros(3), y, batch)
    X_all = np.vstack([X, X_eval])
    sig2 = np.array(model.sigma) ** 2
    ntk = sum(model.eta[l] * np.prod(np.delete(sig2, l)) for l in range(depth + 1))
    expected = -ntk * (chi @ (X @ X_all.T / 4))
    assert_close(run.outputs[0], 0.0, scale=np.abs(expected).max())
    assert_close(run.outputs[1], expected)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_exact_kernels_at_init(depth):
    # At step 0 (φ = id): Z^{h^1_0} has Cov σ_1² K, and Z^{h^l_0} = Ẑ^{W^l x^{l-1}_0}
    # (no Ż in the first forward pass, no update yet) has Cov σ_l² E[x x'], so
    # E[h^l_0 h^l_0'] = Π_{k<=l} σ_k² K. Backward: dh^L_0 = Ŵ_0, dh^{l-1}_0 =
    # Ẑ^{W^{lT} dh^l_0} (Ż is zero in the first backward pass), so E[dh^l_0 dh^l_0'] =
    # Π_{k>l} σ_k² for every pair in the batch.
    X, y, X_eval = data(6, m=3, d=4, m_eval=2)
    model = linear_model(depth)
    batch = np.array([0, 1])
    run = exact_limit(model, X, y, steps=1, X_eval=X_eval, batches=[batch])
    X_all = np.vstack([X, X_eval])
    K = X_all @ X_all.T / 4
    sig2 = np.array(model.sigma) ** 2
    for l in range(1, depth + 1):
        assert_close(run.kernel(l, "h")[0], np.prod(sig2[:l]) * K)
        dh = run.kernel(l, "dh")[0]
        assert_close(dh[np.ix_(batch, batch)], np.prod(sig2[l:]))
        assert np.all(np.isnan(dh[2])) and np.all(np.isnan(dh[:, 2]))


def test_frozen_network_cross_kernels_are_constant():
    # With every c_l = 0 nothing moves: Z_t = Z_0 for every input, so the cross kernel
    # E[Z_0(ξ_a) Z_t(ξ_b)] equals Π_{k<=l} σ_k² K_ab at every t, for evaluation inputs
    # too. The evaluation inputs here lie outside the span of the training inputs
    # (d > m), so their features have components no training vector has; a Ẑ drawn
    # with fresh directions at every step would decorrelate them across steps.
    X, y, X_eval = data(7, m=2, d=5, m_eval=2)
    model = linear_model(3, mult=[0.0, 0.0, 0.0, 0.0])
    run = exact_limit(model, X, y, steps=3, X_eval=X_eval)
    X_all = np.vstack([X, X_eval])
    K = X_all @ X_all.T / 5
    sig2 = np.array(model.sigma) ** 2
    for l in range(1, 4):
        c = run.cross_kernel_groups(l, "h", 0)[0]
        for t in range(4):
            assert_close(c[t], np.prod(sig2[:l]) * K)


# ------------------------------------------------------------- finite-width networks
class _LowRankMatrix:
    """W = W_0 − Σ U Vᵀ: a hidden matrix after SGD steps, without forming the updates."""

    def __init__(self, W0):
        self.W0 = W0  # float32, to keep the n×n draws and products cheap
        self.U = np.zeros((W0.shape[0], 0))
        self.V = np.zeros((W0.shape[1], 0))

    def dot(self, A):
        return (self.W0 @ A.astype(np.float32)).astype(np.float64) - self.U @ (self.V.T @ A)

    def tdot(self, D):
        return (self.W0.T @ D.astype(np.float32)).astype(np.float64) - self.V @ (self.U.T @ D)

    def subtract(self, U, V):
        self.U = np.hstack([self.U, U])
        self.V = np.hstack([self.V, V])


def finite_linear_mup(model, X, y, X_eval, batches, steps, n, seed):
    """A width-n μP linear MLP trained by SGD (maths §1 table), plain weights and gradients.

    W^1 ~ N(0, σ_1²/d), W^l ~ N(0, σ_l²/n), W^{L+1} ~ N(0, σ_{L+1}²/n²); learning rates
    η_1 n/d, η_l, η_{L+1}/n; the gradient of Σ_{i∈B} r ℓ(f(ξ_i), y_i) by backprop.

    Returns
    -------
    outputs (T+1, M); the last-layer kernel h^L_T·h^L_T/n (M, M); and the cross kernel
    h^L_0·h^L_T/n (M, M).
    """
    rng = np.random.default_rng(seed)
    L, d = model.depth, X.shape[1]
    sig, eta = model.sigma, model.eta
    X_all = np.vstack([X, X_eval]).T  # (d, M)
    W1 = rng.standard_normal((n, d)) * (sig[0] / math.sqrt(d))
    hidden = [_LowRankMatrix(rng.standard_normal((n, n), dtype=np.float32) * np.float32(sig[l] / math.sqrt(n)))
              for l in range(1, L)]
    w = rng.standard_normal(n) * (sig[L] / n)
    outputs = []
    for t in range(steps + 1):
        acts = [X_all, W1 @ X_all]  # x^0 = ξ, x^l = h^l (φ = id)
        for W in hidden:
            acts.append(W.dot(acts[-1]))
        f = w @ acts[-1]
        outputs.append(f)
        if t == 0:
            first = acts[-1]
        if t == steps:
            break
        b = batches[t]
        chi = chi_of(model, f[: X.shape[0]], y, b)[b]  # ∂(loss)/∂f(ξ_i), i ∈ B
        delta = w[:, None] * chi[None, :]  # ∂/∂h^L
        grad_w = acts[-1][:, b] @ chi
        for k in range(L - 1, 0, -1):  # hidden[k-1] is W^{k+1}
            below = hidden[k - 1].tdot(delta)  # ∂/∂h^k with the weights before the step
            hidden[k - 1].subtract(eta[k] * delta, acts[k][:, b])  # W ← W − η_l δ xᵀ
            delta = below
        W1 -= (eta[0] * n / d) * (delta @ acts[0][:, b].T)
        w -= (eta[L] / n) * grad_w
    last = acts[-1]
    return np.array(outputs), last.T @ last / n, first.T @ last / n


@pytest.mark.parametrize("depth,lr,widths", [
    (2, 0.2, (128, 512, 2048)), (3, 0.1, (128, 512, 2048)), (4, 0.1, (128, 512, 2048)),
])
def test_exact_is_the_limit_of_finite_width_nets(depth, lr, widths):
    # Maths §4: finite μP nets converge to the limit; the seed spread shrinks like
    # n^{-1/2} and the bias of the seed mean like n^{-1}. Checked on the outputs (all
    # steps, training and evaluation inputs), the last-layer kernel at the last step
    # and its cross kernel against step 0. The evaluation inputs lie outside the span
    # of the training inputs (d > m).
    X, y, X_eval = data(10 + depth, m=2, d=4, m_eval=2)
    model = linear_model(depth, lr=lr)
    steps = 4
    batches = [np.array([0, 1]), np.array([0]), np.array([1]), np.array([0, 1])]
    run = exact_limit(model, X, y, steps=steps, X_eval=X_eval, batches=batches)
    limit = [run.outputs[1:], run.kernel(depth, "h")[steps], run.cross_kernel_groups(depth, "h", 0)[0, steps]]
    seeds = 12
    rms = []
    for n in widths:
        with threadpool_limits(limits=1, user_api="blas"):  # matrix-vector work: one thread is faster here
            res = [finite_linear_mup(model, X, y, X_eval, batches, steps, n, seed=1000 * depth + s)
                   for s in range(seeds)]
        finite = [np.array([r[0][1:] for r in res]), np.array([r[1] for r in res]), np.array([r[2] for r in res])]
        dev = [F - ref for F, ref in zip(finite, limit)]
        rms.append(math.sqrt(np.mean(dev[0] ** 2)))  # seed-to-seed deviation of the outputs
    assert rms[-1] < 0.5 * rms[0], f"deviation does not fall with width: {rms}"
    # the seed means at the largest width sit on the limit: a t-test with seeds − 1 degrees
    # of freedom over all the outputs, kernel and cross-kernel entries (one Bonferroni family)
    family = sum(D[0].size for D in dev)
    for D in dev:
        assert_within_se(D.mean(0), 0.0, D.std(0, ddof=1) / math.sqrt(seeds), dof=seeds - 1, n_comparisons=family)
    assert np.abs(run.outputs[-1]).max() > 0.1  # the outputs moved: the test is not about zeros


# ------------------------------------------------------------------ properties
small = dict(max_examples=25)


@st.composite
def problems(draw, max_depth=4):
    depth = draw(st.integers(1, max_depth))
    m = draw(st.integers(1, 4))
    d = draw(st.integers(1, 4))
    m_eval = draw(st.integers(0, 2))
    steps = draw(st.integers(0, 4))
    seed = draw(st.integers(0, 2**16))
    X, y, X_eval = data(seed, m=m, d=d, m_eval=m_eval)
    rng = np.random.default_rng(seed + 1)
    sigma = rng.uniform(0.5, 1.5, depth + 1)
    mult = rng.uniform(0.5, 1.5, depth + 1)
    lr = draw(st.floats(0.05, 0.4))
    return depth, X, y, X_eval, steps, sigma, mult, lr, seed


@given(problems())
@settings(**small)
def test_all_index_batches_equal_full_batch(p):
    depth, X, y, X_eval, steps, sigma, mult, lr, seed = p
    model = linear_model(depth, lr=lr, sigma=sigma, mult=mult)
    m = X.shape[0]
    perm = np.random.default_rng(seed).permutation(m)
    a = exact_limit(model, X, y, steps=steps, X_eval=X_eval)
    b = exact_limit(model, X, y, steps=steps, X_eval=X_eval, batches=[perm] * steps)
    assert np.array_equal(a.outputs, b.outputs) and np.array_equal(a.loss, b.loss)
    for k in a.kernels:
        assert np.array_equal(a.kernels[k], b.kernels[k], equal_nan=True)


@given(problems())
@settings(**small)
def test_eval_inputs_do_not_change_training(p):
    depth, X, y, X_eval, steps, sigma, mult, lr, seed = p
    model = linear_model(depth, lr=lr, sigma=sigma, mult=mult)
    m = X.shape[0]
    extra = np.vstack([X_eval, np.random.default_rng(seed).standard_normal((2, X.shape[1]))])
    batches = zlimit.batch_schedule(m, max(1, m // 2), steps, seed=seed)
    a = exact_limit(model, X, y, steps=steps, batches=batches)
    b = exact_limit(model, X, y, steps=steps, batches=batches, X_eval=extra)
    assert np.array_equal(a.outputs, b.outputs[:, :m])
    assert np.array_equal(a.loss, b.loss) and np.array_equal(a.error_signals, b.error_signals)
    for k in a.kernels:
        ka, kb = a.kernels[k], b.kernels[k]
        kb = kb if parse_key(k)[0] == "dh" else kb[..., :m, :m]
        assert np.array_equal(ka, kb, equal_nan=True)
    for k in a.novelty:
        assert np.array_equal(a.novelty[k], b.novelty[k][..., :m], equal_nan=True)


@given(problems())
@settings(**small)
def test_eval_copy_of_training_input_follows_it(p):
    # An evaluation input equal to training input j has the same Z at every step and
    # layer, so its output and kernel rows equal those of ξ_j.
    depth, X, y, X_eval, steps, sigma, mult, lr, seed = p
    model = linear_model(depth, lr=lr, sigma=sigma, mult=mult)
    m = X.shape[0]
    j = seed % m
    run = exact_limit(model, X, y, steps=steps, X_eval=np.vstack([X[j], X_eval]))
    # scales 1 + max|·|: the outputs and kernels start at 0 or O(1) and may stay small
    assert_close(run.outputs[:, m], run.outputs[:, j], scale=1.0 + np.abs(run.outputs).max())
    for l in range(1, depth + 1):
        K = run.kernel(l, "h")
        assert_close(K[:, m], K[:, j], scale=1.0 + np.abs(K).max())
        C = run.cross_kernel_groups(l, "h", 0)[0]
        assert_close(C[:, m, :], C[:, j, :], scale=1.0 + np.nanmax(np.abs(C)))


@given(problems(), st.floats(0.5, 2.0), st.data())
@settings(**small)
def test_layer_rebalancing_symmetry(p, a, draw):
    # Linear nets: W^l → a W^l, W^k → W^k / a (l ≠ k) leaves f unchanged, and the
    # gradients transform as G^l → G^l / a, G^k → a G^k. SGD commutes with the map iff
    # the learning rates become a² η_l and η_k / a². In μP terms: σ_l → a σ_l,
    # c_l → a² c_l, σ_k → σ_k / a, c_k → c_k / a². The initial laws match, so at every
    # width (hence in the limit) the outputs are the same at every step.
    depth, X, y, X_eval, steps, sigma, mult, lr, seed = p
    l, k = draw.draw(st.lists(st.integers(0, depth), min_size=2, max_size=2, unique=True))
    s2, c2 = sigma.copy(), mult.copy()
    s2[l], c2[l], s2[k], c2[k] = a * s2[l], a * a * c2[l], s2[k] / a, c2[k] / (a * a)
    r1 = exact_limit(linear_model(depth, lr=lr, sigma=sigma, mult=mult), X, y, steps=steps, X_eval=X_eval)
    r2 = exact_limit(linear_model(depth, lr=lr, sigma=s2, mult=c2), X, y, steps=steps, X_eval=X_eval)
    assert_close(r2.outputs, r1.outputs, scale=1.0 + np.abs(r1.outputs).max())


@given(problems(), st.floats(0.3, 3.0))
@settings(**small)
def test_target_scaling_symmetry(p, c):
    # Linear nets, mse: with a = c^{1/(L+1)}, W^l → a W^l for every l gives f → c f, and
    # with y → c y the loss becomes c² ℓ. Its gradient in the scaled weights is
    # (c²/a) G^l, so SGD commutes with the map iff η_l → a² η_l / c² = c^{−2L/(L+1)} η_l.
    # In μP terms: y → c y, σ_l → a σ_l, lr → c^{−2L/(L+1)} lr  ⇒  f̊_t → c f̊_t.
    depth, X, y, X_eval, steps, sigma, mult, lr, seed = p
    a = c ** (1.0 / (depth + 1))
    r1 = exact_limit(linear_model(depth, lr=lr, sigma=sigma, mult=mult), X, y, steps=steps, X_eval=X_eval)
    model2 = linear_model(depth, lr=lr * c ** (-2.0 * depth / (depth + 1)), sigma=a * sigma, mult=mult)
    r2 = exact_limit(model2, X, c * y, steps=steps, X_eval=X_eval)
    scale = 1.0 + np.abs(c * r1.outputs).max()
    assert_close(r2.outputs, c * r1.outputs, scale=scale)
    # the loss ½(f − y)² inherits the outputs' round-off times |f − y| <= scale + max|c y|
    assert_close(r2.loss, c * c * r1.loss, scale=scale * (scale + np.abs(c * y).max()))


@given(problems())
@settings(**small)
def test_rotation_of_inputs_changes_nothing(p):
    # Maths §2 sees the inputs only through ξ_a·ξ_b/d, which an orthogonal map keeps.
    depth, X, y, X_eval, steps, sigma, mult, lr, seed = p
    d = X.shape[1]
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    model = linear_model(depth, lr=lr, sigma=sigma, mult=mult)
    r1 = exact_limit(model, X, y, steps=steps, X_eval=X_eval)
    r2 = exact_limit(model, X @ Q, y, steps=steps, X_eval=X_eval @ Q)
    assert_close(r2.outputs, r1.outputs, scale=1.0 + np.abs(r1.outputs).max())
    K1, K2 = r1.kernel(depth, "h"), r2.kernel(depth, "h")
    assert_close(K2, K1, scale=1.0 + np.abs(K1).max())


@given(problems())
@settings(**small)
def test_first_layer_kernel_at_init(p):
    depth, X, y, X_eval, steps, sigma, mult, lr, seed = p
    run = exact_limit(linear_model(depth, lr=lr, sigma=sigma, mult=mult), X, y, steps=steps, X_eval=X_eval)
    X_all = np.vstack([X, X_eval])
    expected = sigma[0] ** 2 * X_all @ X_all.T / X.shape[1]
    assert_close(run.kernel(1, "h")[0], expected)
    assert_close(run.kernel(1, "x")[0], expected)
    assert np.all(run.outputs[0] == 0.0)


# ------------------------------------------------------------------ run layout
def test_run_layout():
    X, y, X_eval = data(8, m=3, d=2, m_eval=2)
    model = linear_model(3)
    steps = 4
    batches = [np.array([0, 1]), np.array([2]), np.array([0, 2]), np.array([1])]
    run = exact_limit(model, X, y, steps=steps, X_eval=X_eval, batches=batches, record_steps=(3, 1))
    M = 5
    assert run.meta == {"kind": "exact", "method": "exact", "steps": 4, "m": 3, "m_eval": 2, "seed": None}
    assert run.groups == 1 and run.record_steps == (0, 1, 3)
    assert set(run.novelty) == {key(side, l) for side in ("fwd", "bwd") for l in (2, 3)}
    for l in (2, 3):
        fwd, bwd = run.novelty[key("fwd", l)][0], run.novelty[key("bwd", l)][0]
        assert fwd.shape == bwd.shape == (steps + 1, M)
        assert np.all(np.isfinite(fwd)) and np.all(fwd >= 0)
        for t in range(steps + 1):
            b = batches[t] if t < steps else np.array([], int)
            assert np.all(np.isfinite(bwd[t, b])) and np.all(np.isnan(np.delete(bwd[t], b)))
    assert exact_limit(linear_model(1), X, y, steps=2).novelty == {}


def test_result_does_not_depend_on_the_first_allocation(monkeypatch):
    # The run allocates few base normals first and reruns with twice as many when
    # short; the rerun must reproduce the same trajectory.
    import zlimit._exact as exact

    X, y, X_eval = data(12, m=3, d=4, m_eval=2)
    model = linear_model(3, lr=0.2)
    batches = zlimit.batch_schedule(3, 2, 6, seed=2)
    ref = exact_limit(model, X, y, steps=6, X_eval=X_eval, batches=batches, record_steps=(0, 3))
    monkeypatch.setattr(exact, "_FIRST_WIDTH", 2)
    run = exact_limit(model, X, y, steps=6, X_eval=X_eval, batches=batches, record_steps=(0, 3))
    assert_close(run.outputs, ref.outputs)
    for k in ref.cross:
        assert_close(run.cross[k], ref.cross[k])


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu"])
def test_nonlinear_activation_is_refused(activation):
    X, y, _ = data(0)
    with pytest.raises(ValueError, match='activation="linear"'):
        exact_limit(zlimit.MLP(depth=2, activation=activation), X, y, steps=1)


def test_custom_activation_named_linear_is_refused():
    fake = zlimit.Activation("linear", lambda x: 2.0 * x, lambda x: 2.0)
    X, y, _ = data(0)
    with pytest.raises(ValueError, match='activation="linear"'):
        exact_limit(zlimit.MLP(depth=2, activation=fake), X, y, steps=1)


@pytest.mark.parametrize("record_steps", [(5,), (-1,), ("a",)])
def test_bad_record_steps(record_steps):
    X, y, _ = data(0)
    with pytest.raises(ValueError, match="record_steps"):
        exact_limit(linear_model(2), X, y, steps=3, record_steps=record_steps)


def test_bad_data_and_batches():
    X, y, _ = data(0)
    with pytest.raises(ValueError, match="y must have shape"):
        exact_limit(linear_model(2), X, y[:2], steps=1)
    with pytest.raises(ValueError, match="batches"):
        exact_limit(linear_model(2), X, y, steps=2, batches=[np.array([0])])


def test_divergence_is_reported():
    X, y, _ = data(0)
    with pytest.raises(DivergenceError, match="non-finite"):
        exact_limit(linear_model(3, lr=50.0), X, 10 * y, steps=40)
