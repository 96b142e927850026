r"""The NTK limit with the extensions of maths §6, against its closed form (linear nets).

NTP (§5 with the bias rows of §6): W^1 ~ N(0, σ_1²/d) at rate η_1/d, W^l ~ N(0, σ_l²/n)
at rate η_l/n, hidden biases b^l ~ N(0, σ_{b,l}²) at rate η c_{b,l} (W^1's rate with d = 1),
the output bias from 0 at rate η c_{b,L+1}. Θ(ξ, ξ') = Σ_p rate_p ∂f/∂p(ξ)·∂f/∂p(ξ') with
δ^l := ∂f/∂h^l:

    ∂f/∂W^{L+1} = x^L,  ∂f/∂W^l = δ^l x^{l−1 T},  ∂f/∂W^1 = δ^1 ξᵀ,  ∂f/∂b^l = δ^l,  ∂f/∂b^{L+1} = 1.

For φ(x) = x at n → ∞: δ^l·δ^l' → Π^l := Π_{j>l} σ_j² (independent of the inputs), and
the feature kernels follow K^1 = σ_1² ξ·ξ'/d + σ_{b,1}², K^l = σ_l² K^{l−1} + σ_{b,l}², so

    Θ = η_{L+1} K^L + Σ_{l=2}^{L} η_l Π^l K^{l−1} + η_1 Π^1 ξ·ξ'/d + Σ_{l=1}^{L} η c_{b,l} Π^l + η c_{b,L+1}.

Each of the k outputs has its own independent row of W^{L+1}, so Θ is the same kernel
for every output and the outputs decouple. Heavy-ball momentum (torch's convention,
dampening 0) moves the parameters by −rate·v with v ← β v + ∇L; to first order in the
parameter change, f moves by −Θ V with V_t = β V_{t−1} + χ_t. Mean-reduced mse on the
full batch: χ_t = (f_t,tr − y)/m per output, f_0 = 0.
"""
from __future__ import annotations

import numpy as np
import pytest

import zlimit

from tolerance import assert_within_se, t_threshold


def theta_reference(model: zlimit.MLP, X_all: np.ndarray) -> np.ndarray:
    """Θ over all M inputs from the closed form in the module docstring."""
    L, d = model.depth, X_all.shape[1]
    s2, sb2 = np.square(model.sigma), np.square(model.bias_sigma)
    xi = X_all @ X_all.T / d
    pi = [np.prod(s2[l:]) for l in range(1, L + 1)]  # Π^l = Π_{j>l} σ_j², l = 1..L
    K = [s2[0] * xi + sb2[0]]
    for l in range(2, L + 1):
        K.append(s2[l - 1] * K[-1] + sb2[l - 1])
    theta = model.eta[L] * K[L - 1] + model.eta[0] * pi[0] * xi
    for l in range(2, L + 1):
        theta = theta + model.eta[l - 1] * pi[l - 1] * K[l - 2]
    return theta + sum(model.bias_eta[l] * pi[l] for l in range(L)) + model.bias_eta[L]


def trajectory_reference(theta: np.ndarray, y: np.ndarray, m: int, steps: int, beta: float) -> np.ndarray:
    """f_t on all inputs, (T+1, M, k): f ← f − Θ V, V ← β V + (f_tr − y)/m."""
    f = np.zeros((theta.shape[0], y.shape[1]))
    V = np.zeros_like(y)
    out = [f]
    for _ in range(steps):
        V = beta * V + (f[:m] - y) / m
        f = f - theta[:, :m] @ V
        out.append(f)
    return np.stack(out)


MODEL = dict(depth=2, activation="linear", lr=0.2, init_std=(1.1, 0.9, 1.2), lr_mult=(1.0, 1.5, 0.5), outputs=2,
             bias_std=(0.7, 0.6, 0.0), bias_lr_mult=(1.5, 0.5, 2.0), momentum=0.6)
STEPS = 6


def _data():
    rng = np.random.default_rng(3)
    X, X_eval = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    y = np.array([[1.0, -0.4], [-0.5, 0.9], [0.8, 0.3]])
    return X, X_eval, y


@pytest.fixture(scope="module")
def ntk_run():
    X, X_eval, y = _data()
    return zlimit.simulate(zlimit.MLP(**MODEL), X, y, steps=STEPS, X_eval=X_eval, particles=200_000, groups=16,
                           seed=2, parametrization="ntk", progress=False)


def test_ntk_with_biases_outputs_and_momentum_matches_closed_form(ntk_run):
    model = zlimit.MLP(**MODEL)
    X, X_eval, y = _data()
    X_all, m = np.vstack([X, X_eval]), X.shape[0]
    ref = trajectory_reference(theta_reference(model, X_all), y, m, STEPS, model.momentum)
    # a useful regime: f moves by O(1) and has not converged
    assert 0.05 < np.linalg.norm(ref[-1, :m] - y) / np.linalg.norm(y) < 0.9
    assert ntk_run.outputs.shape == (STEPS + 1, X_all.shape[0], 2)
    se, dof, n = ntk_run.outputs_se[1:], ntk_run.groups - 1, ref[1:].size
    assert_within_se(ntk_run.outputs[1:], ref[1:], se, dof=dof, n_comparisons=n)
    # each extension moves f by many standard errors: dropping it is rejected
    crit = t_threshold(dof, n)
    for wrong in (dict(bias_lr_mult=(0.0, 0.0, 0.0)), dict(momentum=0.0), dict(bias_std=(0.0, 0.0, 0.0))):
        other = zlimit.MLP(**{**MODEL, **wrong})
        alt = trajectory_reference(theta_reference(other, X_all), y, m, STEPS, other.momentum)
        assert (np.abs(ntk_run.outputs[1:] - alt[1:]) / se).max() > 3 * crit, wrong


def test_ntk_initial_kernels_include_the_biases(ntk_run):
    # K^1 = σ_1² ξ·ξ'/d + σ_{b,1}², K^2 = σ_2² K^1 + σ_{b,2}² at step 0 (module docstring)
    model = zlimit.MLP(**MODEL)
    X, X_eval, _ = _data()
    X_all = np.vstack([X, X_eval])
    s2, sb2 = np.square(model.sigma), np.square(model.bias_sigma)
    K1 = s2[0] * X_all @ X_all.T / X_all.shape[1] + sb2[0]
    for l, K in ((1, K1), (2, s2[1] * K1 + sb2[1])):
        est, se = ntk_run.kernel(l, "h")[0], np.std(ntk_run.kernel_groups(l, "h")[:, 0], axis=0, ddof=1) / np.sqrt(ntk_run.groups)
        assert_within_se(est, K, se, dof=ntk_run.groups - 1, n_comparisons=2 * K.size)


def test_ntk_refuses_weight_decay():
    X, _, y = _data()
    model = zlimit.MLP(**{**MODEL, "weight_decay": 0.1})
    with pytest.raises(ValueError, match="weight_decay .* has no NTK limit"):
        zlimit.simulate(model, X, y, steps=1, parametrization="ntk", particles=100, progress=False)


def test_limits_refuse_a_random_output_bias():
    X, _, y = _data()
    model = zlimit.MLP(**{**MODEL, "bias_std": (0.7, 0.6, 0.5)})
    for kw in (dict(parametrization="ntk"), dict(method="exact"), dict()):
        with pytest.raises(ValueError, match="output bias must start at 0"):
            zlimit.simulate(model, X, y, steps=1, progress=False, **({"particles": 100} if not kw.get("method")
                                                                      else {}), **kw)
