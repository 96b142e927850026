r"""Two independent oracles (issue 11): a depth-2 tanh net where Ż matters, and the
NTK limit of a linear net in closed form.

Equation references are to docs/z-recursions.md ("§2 forward", "§2 backward", "§2 Ż",
"§3 sampling"). The references below use their own numpy tanh and Gauss–Hermite
rules; they share nothing with the engine except the maths contract.

1. Depth 2, tanh, m = M = 1, T = 2, with and without Ż
======================================================

Setup. L = 2 (one hidden matrix W²), one training input ξ ∈ R^d, q := ξ·ξ/d, target y,
ℓ = (f − y)²/2, full batch, so r = 1 for either reduction and χ_t = f̊_t − y (§1).
σ_1, σ_2, σ_3 and η_1, η_2, η_3 are ``model.sigma`` and ``model.eta``; φ = tanh.
Base Gaussians (§2): Z^{h^1_0} = a := σ_1 √q z, Z^{Ŵ_0} = σ_3 ω; the forward process
of W² is written with standard normals g_1, g_2, g_3 and the backward process of W^{2T}
with γ_1, γ_2 (all independent). S_ij := E[x^1_i x^1_j], P_ij := E[dh^2_i dh^2_j].

Step 0, forward (§2 forward; Ż vanishes in the first forward pass).
    x^1_0 = φ(a);  Z^{h^2_0} = Ẑ_0 := Ẑ^{W² x^1_0} ~ N(0, σ_2² S_00);
    f̊_0 = E[Ŵ_0 φ(Ẑ_0)] = 0 (Ŵ_0 independent and centred), χ_0 = −y.
Step 0, backward (§2 backward).
    dh^2_0 = Ŵ_0 φ'(Ẑ_0);  dx^1_0 = V_0 + Ż^{W^{2T} dh^2_0}, V_0 := Ẑ^{W^{2T} dh^2_0}.
    §2 Ż: Ż^{W^{2T} dh^2_0} = σ_2² x^1_0 E[∂dh^2_0/∂Ẑ_0] = σ_2² x^1_0 E[Ŵ_0] E[φ''(Ẑ_0)] = 0.
    V_0 ~ N(0, σ_2² P_00), P_00 = σ_3² E[φ'(Ẑ_0)²], independent of (z, ω, g).
    dh^1_0 = V_0 φ'(a);  Ŵ_1 = Ŵ_0 − η_3 χ_0 φ(Ẑ_0).
Step 1, forward (§2 forward, first layer and hidden layer).
    h^1_1 = a − η_1 χ_0 q dh^1_0 = a − η_1 χ_0 q V_0 φ'(a);  x^1_1 = φ(h^1_1).
    h^2_1 = Ẑ_1 + Ż^{W² x^1_1} − η_2 χ_0 S_01 dh^2_0,  Ẑ_1 := Ẑ^{W² x^1_1}.
    §2 Ż, with x^1_1 read as a function of V_0 (the only backward Ẑ of steps < 1):
        Ż^{W² x^1_1} = σ_2² dh^2_0 E[∂x^1_1/∂V_0] = σ_2² D_1 dh^2_0,
        D_1 := −η_1 χ_0 q E[φ'(h^1_1) φ'(a)].
    So h^2_1 = Ẑ_1 + c_1 Ŵ_0 φ'(Ẑ_0) with c_1 := σ_2² D_1 − η_2 χ_0 S_01, and
        f̊_1 = E[Ŵ_1 φ(h^2_1)],  χ_1 = f̊_1 − y.
    (Ẑ_0, Ẑ_1) has covariance σ_2² S (§2); its Cholesky factor L is §3's Gram–Schmidt:
    Ẑ_0 = L_00 g_1, Ẑ_1 = L_10 g_1 + L_11 g_2 (g_2 is the direction step 1 adds).
Step 1, backward (§2 backward).
    dh^2_1 = Ŵ_1 φ'(h^2_1);  dx^1_1 = V_1 + Ż^{W^{2T} dh^2_1} − η_2 χ_0 P_01 x^1_0,
    V_1 := Ẑ^{W^{2T} dh^2_1};  (V_0, V_1) has covariance σ_2² P:
    V_0 = M_00 γ_1, V_1 = M_10 γ_1 + M_11 γ_2 (M the Cholesky factor).
    §2 Ż over the forward vectors of steps ≤ 1, dh^2_1 read as a function of (Ŵ_0, Ẑ_0, Ẑ_1):
        Ż^{W^{2T} dh^2_1} = σ_2² (A_0 x^1_0 + A_1 x^1_1),  A_k := E[∂dh^2_1/∂Ẑ_k],
        A_0 = E[−η_3 χ_0 φ'(Ẑ_0) φ'(h^2_1) + c_1 Ŵ_1 φ''(h^2_1) Ŵ_0 φ''(Ẑ_0)],
        A_1 = E[Ŵ_1 φ''(h^2_1)].
    dh^1_1 = dx^1_1 φ'(h^1_1);  Ŵ_2 = Ŵ_1 − η_3 χ_1 φ(h^2_1).
Step 2, forward.
    h^1_2 = a − η_1 q (χ_0 dh^1_0 + χ_1 dh^1_1),  x^1_2 = φ(h^1_2)   [a function of (z, γ_1, γ_2)]
    h^2_2 = Ẑ_2 + Ż^{W² x^1_2} − η_2 (χ_0 S_02 dh^2_0 + χ_1 S_12 dh^2_1),
    Ẑ_2 = L_20 g_1 + L_21 g_2 + L_22 g_3 (L now the 3×3 Cholesky factor of σ_2² S).
    §2 Ż over the backward vectors of steps < 2, x^1_2 read as a function of (z, V_0, V_1):
        Ż^{W² x^1_2} = σ_2² (B_0 dh^2_0 + B_1 dh^2_1),  B_k := E[φ'(h^1_2) ∂h^1_2/∂V_k],
        ∂h^1_1/∂V_0 = e := −η_1 χ_0 q φ'(a),
        ∂dh^1_1/∂V_0 = σ_2² A_1 φ'(h^1_1)² e + dx^1_1 φ''(h^1_1) e,
        ∂h^1_2/∂V_0 = −η_1 q (χ_0 φ'(a) + χ_1 ∂dh^1_1/∂V_0),  ∂h^1_2/∂V_1 = −η_1 q χ_1 φ'(h^1_1).
    f̊_2 = E[Ŵ_2 φ(h^2_2)].

Every layer-1 quantity is a function of (z, γ_1, γ_2) and every layer-2 quantity of
(ω, g_1, g_2, g_3): the two families are independent (the forward and backward
processes of W² are independent of each other and of z, ω), and couple only through
the deterministic scalars χ_t, S, P, D_1, A, B. So every expectation above is a 3-d or
4-d Gaussian integral, evaluated by tensor Gauss–Hermite rules (orders checked for
convergence, far below the Monte Carlo error). The layer kernels E[(Z^{h^l_t})²] come
out of the same grids. "Gradient independence" sets D_1 = A_0 = A_1 = B_0 = B_1 = 0
and changes nothing else; it is what ``gradient_independence=True`` should compute.

2. NTK limit of a linear net
============================

NTP (§5, with σ_l and η_l = η c_l): W^1 ~ N(0, σ_1²/d) with SGD rate η_1/d, W^l ~
N(0, σ_l²/n) with rate η_l/n (2 ≤ l ≤ L+1), plain gradients. For f = W^{L+1} x^L, one SGD
step changes f(ξ_a) to first order by −Σ_i χ_{t,i} Θ(ξ_a, ξ_i), Θ(ξ, ξ') = Σ_p rate_p ∂f/∂p(ξ)·∂f/∂p(ξ').
With δ^l := ∂f/∂h^l: ∂f/∂W^{L+1} = x^L, ∂f/∂W^l = δ^l x^{l−1 T}, ∂f/∂W^1 = δ^1 ξᵀ, so
    Θ = (η_{L+1}/n) x^L·x^L' + Σ_{l=2}^{L} (η_l/n) (δ^l·δ^l')(x^{l−1}·x^{l−1}') + (η_1/d)(δ^1·δ^1')(ξ·ξ').
For φ(x) = x: x^l = h^l, δ^L = W^{L+1 T}, δ^l = W^{l+1 T} δ^{l+1}. At initialisation, as
n → ∞ (Θ stays at its initial value in NTP), h^l·h^l'/n → (Π_{k≤l} σ_k²) K with
K := ξ·ξ'/d, and δ^l·δ^l' → Π^l := Π_{k>l} σ_k². Writing P := Π_{k=1}^{L+1} σ_k²,
every one of the L+1 terms is P K times η_l/σ_l²:
    Θ = P (Σ_{l=1}^{L+1} η_l / σ_l²) K.
Mean-reduced mse on the full batch of m inputs: χ_t = (f_t,tr − y)/m, and from f_0 = 0
(the mean over initialisations), with A := I − Θ_tr,tr/m,
    f_t,tr = y − A^t y,    f_t,ev = (Θ_ev,tr/m) Σ_{s<t} A^s y.
The engine estimates E[h^l h^l'] from particles, so f_t carries Monte Carlo error;
the features (kernels) must not move at all.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss

import zlimit

from tolerance import assert_within_se, t_threshold as _t_threshold
from zlimit._stats import group_se


def _crit(dof: int, n: int, alpha: float = 1e-3) -> float:
    return float(_t_threshold(dof, n, alpha))


# ---------------------------------------------------------------- 1. depth-2 tanh oracle

def _phi(x):
    return np.tanh(x)


def _dphi(x):
    return 1.0 / np.cosh(x) ** 2


def _ddphi(x):
    return -2.0 * np.tanh(x) / np.cosh(x) ** 2


def _grid(dim: int, order: int):
    """Standard normals as broadcastable Gauss–Hermite axes, and tensor weights (Σ = 1)."""
    x, w = hermegauss(order)
    w = w / np.sqrt(2.0 * np.pi)
    axes, weight = [], 1.0
    for k in range(dim):
        shape = [1] * dim
        shape[k] = order
        axes.append(x.reshape(shape))
        weight = weight * w.reshape(shape)
    return axes, weight


def depth2_oracle(sigma, eta, q: float, y: float, *, stein: bool = True, order1: int = 120,
                  order2: int = 40) -> dict:
    """f̊_0..2 and the kernels E[(Z^{h^l_t})²] of the module docstring, by quadrature.

    ``order1`` nodes per axis over (z, γ_1, γ_2), ``order2`` over (ω, g_1, g_2, g_3).
    ``stein=False`` drops every Ż (D_1 = A_k = B_k = 0).
    """
    s1, s2, s3 = sigma
    e1, e2, e3 = eta
    (z, ga1, ga2), wt1 = _grid(3, order1)
    (om, g1, g2, g3), wt2 = _grid(4, order2)
    E1 = lambda f: float(np.sum(wt1 * f))  # noqa: E731  layer 1: (z, γ_1, γ_2)
    E2 = lambda f: float(np.sum(wt2 * f))  # noqa: E731  layer 2: (ω, g_1, g_2, g_3)

    # step 0
    a = s1 * np.sqrt(q) * z
    x0 = _phi(a)
    S00 = E1(x0 ** 2)
    W0 = s3 * om
    Zh0 = s2 * np.sqrt(S00) * g1
    dh2_0 = W0 * _dphi(Zh0)
    f0 = E2(W0 * _phi(Zh0))
    chi0 = f0 - y
    P00 = E2(dh2_0 ** 2)
    V0 = s2 * np.sqrt(P00) * ga1
    dh1_0 = V0 * _dphi(a)
    W1 = W0 - e3 * chi0 * _phi(Zh0)

    # step 1 forward
    h1_1 = a - e1 * chi0 * q * dh1_0
    x1 = _phi(h1_1)
    S01, S11 = E1(x0 * x1), E1(x1 ** 2)
    L2 = np.linalg.cholesky(s2 ** 2 * np.array([[S00, S01], [S01, S11]]))
    Zh1 = L2[1, 0] * g1 + L2[1, 1] * g2
    D1 = -e1 * chi0 * q * E1(_dphi(h1_1) * _dphi(a)) if stein else 0.0
    c1 = s2 ** 2 * D1 - e2 * chi0 * S01
    h2_1 = Zh1 + c1 * dh2_0
    f1 = E2(W1 * _phi(h2_1))
    chi1 = f1 - y

    # step 1 backward
    dh2_1 = W1 * _dphi(h2_1)
    if stein:
        A0 = E2(-e3 * chi0 * _dphi(Zh0) * _dphi(h2_1) + c1 * W1 * _ddphi(h2_1) * W0 * _ddphi(Zh0))
        A1 = E2(W1 * _ddphi(h2_1))
    else:
        A0 = A1 = 0.0
    P01, P11 = E2(dh2_0 * dh2_1), E2(dh2_1 ** 2)
    M = np.linalg.cholesky(s2 ** 2 * np.array([[P00, P01], [P01, P11]]))
    V1 = M[1, 0] * ga1 + M[1, 1] * ga2
    dx1_1 = V1 + s2 ** 2 * (A0 * x0 + A1 * x1) - e2 * chi0 * P01 * x0
    dh1_1 = dx1_1 * _dphi(h1_1)
    W2 = W1 - e3 * chi1 * _phi(h2_1)

    # step 2 forward
    h1_2 = a - e1 * q * (chi0 * dh1_0 + chi1 * dh1_1)
    x2 = _phi(h1_2)
    if stein:
        e = -e1 * chi0 * q * _dphi(a)
        ddh1_1 = s2 ** 2 * A1 * _dphi(h1_1) ** 2 * e + dx1_1 * _ddphi(h1_1) * e
        B0 = E1(_dphi(h1_2) * (-e1 * q * (chi0 * _dphi(a) + chi1 * ddh1_1)))
        B1 = E1(_dphi(h1_2) * (-e1 * q * chi1 * _dphi(h1_1)))
    else:
        B0 = B1 = 0.0
    S02, S12, S22 = E1(x0 * x2), E1(x1 * x2), E1(x2 ** 2)
    L3 = np.linalg.cholesky(s2 ** 2 * np.array([[S00, S01, S02], [S01, S11, S12], [S02, S12, S22]]))
    Zh2 = L3[2, 0] * g1 + L3[2, 1] * g2 + L3[2, 2] * g3
    h2_2 = Zh2 + s2 ** 2 * (B0 * dh2_0 + B1 * dh2_1) - e2 * (chi0 * S02 * dh2_0 + chi1 * S12 * dh2_1)
    f2 = E2(W2 * _phi(h2_2))

    return {
        "outputs": np.array([f0, f1, f2]),
        "k1": np.array([E1(a ** 2), E1(h1_1 ** 2), E1(h1_2 ** 2)]),
        "k2": np.array([s2 ** 2 * S00, E2(h2_1 ** 2), E2(h2_2 ** 2)]),
        "stein_coefficients": {"D1": D1, "A0": A0, "A1": A1, "B0": B0, "B1": B1},
    }


XI = np.array([[1.2, -0.4]])  # q = ξ·ξ/d = 0.8
Y = np.array([1.0])
DEPTH2 = dict(depth=2, activation="tanh", lr=1.0, init_std=(1.5, 1.0, 1.0))
PARTICLES, GROUPS, SEED = 240_000, 16, 3


def _observed(run) -> tuple[np.ndarray, np.ndarray]:
    """(f̊_1, f̊_2, E[(h^1_1)²], E[(h^1_2)²], E[(h^2_1)²], E[(h^2_2)²]) and their standard errors."""
    per_group = np.concatenate([run.outputs_groups[:, 1:, 0]]
                               + [run.kernel_groups(l, "h")[:, 1:, 0, 0] for l in (1, 2)], axis=1)
    return per_group.mean(axis=0), group_se(per_group)


def _reference(ref: dict) -> np.ndarray:
    return np.concatenate([ref["outputs"][1:], ref["k1"][1:], ref["k2"][1:]])


@functools.lru_cache(maxsize=None)
def _depth2_references():
    model = zlimit.MLP(**DEPTH2)
    q = float(XI[0] @ XI[0] / XI.shape[1])
    refs = {stein: depth2_oracle(model.sigma, model.eta, q, float(Y[0]), stein=stein) for stein in (True, False)}
    coarse = {stein: depth2_oracle(model.sigma, model.eta, q, float(Y[0]), stein=stein, order1=90, order2=32)
              for stein in (True, False)}
    return model, refs, coarse


@functools.lru_cache(maxsize=None)
def _depth2_runs():
    model = zlimit.MLP(**DEPTH2)
    return {gi: zlimit.simulate(model, XI, Y, steps=2, particles=PARTICLES, groups=GROUPS, seed=SEED,
                                progress=False, gradient_independence=gi) for gi in (False, True)}


def test_depth2_tanh_oracle_needs_zdot():
    model, refs, coarse = _depth2_references()
    runs = _depth2_runs()
    full, ablation = (_observed(runs[gi]) for gi in (False, True))
    dof, n = GROUPS - 1, 6
    ref, ref_gi = _reference(refs[True]), _reference(refs[False])

    # the oracle itself: f̊_0 = 0, E[(h^1_0)²] = σ_1² q, and quadrature converged far below the MC error
    assert refs[True]["outputs"][0] == pytest.approx(0.0, abs=1e-12)
    assert refs[True]["k1"][0] == pytest.approx(model.sigma[0] ** 2 * 0.8, rel=1e-12)
    for stein in (True, False):
        drift = np.abs(_reference(refs[stein]) - _reference(coarse[stein]))
        assert np.all(drift < 0.05 * full[1]), (stein, drift / full[1])

    # Ż matters: dropping it moves f̊_1, f̊_2 and the layer-2 kernels by many standard errors
    effect = np.abs(ref - ref_gi) / full[1]
    assert effect[[0, 1, 4, 5]].min() > 30, effect

    # the engine matches the oracle; its ablation matches the Ż-free oracle
    assert_within_se(full[0], ref, full[1], dof=dof, n_comparisons=n)
    assert_within_se(ablation[0], ref_gi, ablation[1], dof=dof, n_comparisons=n)
    # ... and neither matches the other one (f̊_1, f̊_2 and the layer-2 kernels)
    crit = _crit(dof, n)
    for (est, se), other in ((full, ref_gi), (ablation, ref)):
        gap = np.abs(est - other) / se
        assert gap[[0, 1, 4, 5]].min() > 3 * crit, gap


# ---------------------------------------------------------------- 2. NTK limit, linear net

def ntk_linear_reference(sigma, eta, X_all: np.ndarray, y: np.ndarray, steps: int) -> np.ndarray:
    """f_t, t = 0..T, on all M inputs (training first) from Θ = P Σ_l η_l/σ_l² · ξ·ξ'/d."""
    m, d = y.shape[0], X_all.shape[1]
    K = X_all @ X_all.T / d
    theta = np.prod(np.square(sigma)) * sum(e / s ** 2 for e, s in zip(eta, sigma)) * K
    A = np.eye(m) - theta[:m, :m] / m
    out = np.zeros((steps + 1, X_all.shape[0]))
    geometric = np.zeros((m, m))  # Σ_{s<t} A^s
    for t in range(steps + 1):
        At = np.linalg.matrix_power(A, t)
        out[t, :m] = y - At @ y
        out[t, m:] = theta[m:, :m] @ geometric @ y / m
        geometric = geometric + At
    return out


NTK_MODEL = dict(depth=3, activation="linear", lr=0.3, init_std=(1.2, 0.9, 1.1, 0.8), lr_mult=(1.0, 0.5, 2.0, 1.5))
NTK_STEPS = 6


def _ntk_data():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(4, 3))
    X_eval = rng.normal(size=(2, 3))
    y = np.array([1.0, -0.5, 0.8, -1.2])
    return X, X_eval, y


def test_ntk_linear_closed_form():
    model = zlimit.MLP(**NTK_MODEL)
    X, X_eval, y = _ntk_data()
    X_all = np.vstack([X, X_eval])
    m, M, d, L = X.shape[0], X_all.shape[0], X.shape[1], model.depth
    run = zlimit.simulate(model, X, y, steps=NTK_STEPS, X_eval=X_eval, particles=400_000, groups=16, seed=5,
                          parametrization="ntk", progress=False)
    dof = run.groups - 1
    ref = ntk_linear_reference(model.sigma, model.eta, X_all, y, NTK_STEPS)
    # a useful regime: training moves f by O(1) but has not converged after T steps
    assert 0.05 < np.linalg.norm(ref[-1, :m] - y) / np.linalg.norm(y) < 0.8
    assert np.all(run.outputs[0] == 0.0)
    se = run.outputs_se[1:]
    assert_within_se(run.outputs[1:], ref[1:], se, dof=dof, n_comparisons=NTK_STEPS * M)
    # the MC error is small against the dynamics: a Θ without its W^1 term is rejected
    sig = np.array(model.sigma)
    wrong = ntk_linear_reference(sig, (0.0,) + model.eta[1:], X_all, y, NTK_STEPS)
    assert (np.abs(run.outputs[1:] - wrong[1:]) / se).max() > 3 * _crit(dof, NTK_STEPS * M)

    K = X_all @ X_all.T / d
    for l in range(1, L + 1):
        for kind in ("h", "x"):
            k = run.kernel(l, kind)
            np.testing.assert_array_equal(k, np.broadcast_to(k[0], k.shape))  # features frozen
            kg = run.kernel_groups(l, kind)[:, 0]
            expected = np.prod(sig[:l] ** 2) * K  # E[h^l h^l'] = Π_{k<=l} σ_k² ξ·ξ'/d
            assert_within_se(kg.mean(0), expected, group_se(kg), dof=dof,
                             n_comparisons=M * (M + 1) // 2 * 2 * L)
        # backward kernel Π^l = Π_{k>l} σ_k², exact for φ' = 1 (no sampling in it)
        np.testing.assert_allclose(run.kernel(l, "dh"), np.prod(sig[l:] ** 2), rtol=1e-12)
