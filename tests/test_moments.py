"""The first moments of the features, ``Run.moments`` (issue 15: mup-style coordinate checks).

``moments["{h,x}{l}"][g, t, a]`` = (E[Z], E|Z|) of Z^{h^l_t(ξ_a)} or Z^{x^l_t(ξ_a)}; for a
finite net the mean and the mean absolute value over the n coordinates. Each producer
is checked against a reference that does not use it:

* a finite net against a numpy forward pass of its initial weights (``init_parameters``)
  at step 0, and after one full-batch SGD step computed by hand (backpropagation and
  the μP learning rates of maths §5 and §6 written out);
* the Monte Carlo limit at step 0 against the Gaussian laws of maths §2: Z^{h^1_0} is
  N(0, σ_1² ‖ξ‖²/d + σ_b²), Z^{h^2_0} is N(0, σ_2² E[φ(Z^{h^1_0})²] + σ_b²), with
  E|Z| = sqrt(2/π)·sd, E[silu(Z)] and E[silu(Z)²] by Gauss–Hermite quadrature, and
  E|silu(Z)| = E[|Z| sigmoid(Z)] = E|Z|/2 (sigmoid(z) + sigmoid(−z) = 1) exactly;
* the Monte Carlo limit of a linear net at step 200 against the exact limit, whose
  features are centred Gaussians: E[Z] = 0 and E|Z| = sqrt(2/π)·sqrt(K_aa);
* the exact limit's own moments against its kernel diagonal, biases and momentum on.

Monte Carlo comparisons use the spread of the G groups (Student t, G − 1 dof) with a
Bonferroni correction over every entry compared (``tests/tolerance.py``). Resumed runs
and MPI runs are compared with their moments in tests/test_checkpoint.py and
tests/test_mpi.py.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss

import zlimit
from zlimit._keys import key
from tolerance import assert_close, assert_within_se

SQRT_2_PI = math.sqrt(2.0 / math.pi)


def _coordinate_moments(v: np.ndarray) -> np.ndarray:
    """(mean, mean |·|) over the n coordinates of each column of v (n, M): (M, 2)."""
    return np.stack([v.mean(axis=0), np.abs(v).mean(axis=0)], axis=-1)


def _group_estimate(run: zlimit.Run, k: str, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean over groups and its standard error (spread of the G groups), (M, 2) each."""
    per = run.moments[k][:, t]
    return per.mean(axis=0), per.std(axis=0, ddof=1) / math.sqrt(run.groups)


# ----------------------------------------------------------------------------- finite nets
def _hand_forward(W: list, b: list, XiT: np.ndarray) -> tuple[list, list]:
    """h^l = W^l x^{l-1} + b^l, x^l = tanh(h^l), x^0 = ξ, one input per column."""
    hs, xs, v = [], [], XiT
    for l in range(len(W) - 1):
        hs.append(W[l] @ v + b[l][:, None])
        v = np.tanh(hs[-1])
        xs.append(v)
    return hs, xs


def _check_finite_moments(run: zlimit.Run, t: int, hs: list, xs: list) -> None:
    for l, (h, x) in enumerate(zip(hs, xs), start=1):
        for kind, v in (("h", h), ("x", x)):
            assert_close(run.moments[key(kind, l)][0, t], _coordinate_moments(v), err_msg=f"{kind}{l} step {t}")


def test_finite_moments_at_init_and_after_one_step_by_hand():
    """Depth 2, tanh, biases, width 64, two training inputs and one evaluation input.

    Step 1 by hand: full batch, mse with mean reduction, χ_i = (f_i − y_i)/m;
    ∂f/∂h^2 = W^3 ⊙ tanh'(h^2), ∂f/∂h^1 = (W^{2ᵀ} ∂f/∂h^2) ⊙ tanh'(h^1); μP rates
    η n/d, η, η/n for W^1, W^2, W^3 and η n, η n, η for b^1, b^2, b^3.
    """
    n, d, lr = 64, 3, 0.5
    X = np.array([[1.0, 0.5, -0.5], [-0.3, 1.2, 0.4]])
    y = np.array([1.0, -1.0])
    X_eval = np.array([[0.7, -0.7, 1.0]])
    model = zlimit.MLP(depth=2, activation="tanh", lr=lr, bias_std=0.5)
    run = zlimit.train_finite(model, X, y, width=n, steps=1, X_eval=X_eval, seed=5, batches=[np.arange(2)])
    W, b = zlimit.init_parameters(model, d, n, seed=5)
    XiT = np.concatenate([X, X_eval]).T
    hs, xs = _hand_forward(W, b, XiT)
    _check_finite_moments(run, 0, hs, xs)
    # one SGD step on the training columns
    f = W[2] @ xs[1] + b[2][:, None]  # (1, M)
    chi = (f[0, :2] - y) / 2
    g2 = W[2][0][:, None] * (1 - np.tanh(hs[1][:, :2]) ** 2)
    g1 = (W[1].T @ g2) * (1 - np.tanh(hs[0][:, :2]) ** 2)
    e1, e2 = g1 * chi, g2 * chi
    W = [W[0] - (lr * n / d) * e1 @ X, W[1] - lr * e2 @ xs[0][:, :2].T, W[2] - (lr / n) * (xs[1][:, :2] @ chi)[None]]
    b = [b[0] - lr * n * e1.sum(axis=1), b[1] - lr * n * e2.sum(axis=1), b[2] - lr * chi.sum()]
    hs1, xs1 = _hand_forward(W, b, XiT)
    _check_finite_moments(run, 1, hs1, xs1)
    assert np.abs(run.moments["h1"][0, 1] - run.moments["h1"][0, 0]).max() > 1e-3  # the step moved them


# ------------------------------------------------------------------ Monte Carlo at step 0
def _gauss(fn, sd: float, nodes: int = 80) -> float:
    """E[fn(Z)] for Z ~ N(0, sd²) by Gauss–Hermite quadrature (probabilists' weight e^{−z²/2})."""
    z, w = hermegauss(nodes)
    return float(w @ fn(sd * z)) / math.sqrt(2 * math.pi)


def _silu(z):
    return z / (1 + np.exp(-z))


def test_monte_carlo_moments_at_step_0_match_the_gaussian_laws():
    """Depth-2 SiLU with biases, 8 groups of 2000 particles, 2 training and 1 evaluation
    input: every (E[Z], E|Z|) of h and x in both layers against the law of maths §2 (24
    numbers, family-wise false-failure rate 1e-3)."""
    sigma, sigma_b, d = (1.3, 0.8, 1.0), 0.4, 4
    X, y = zlimit.datasets.gaussian(2, d, seed=0)
    X_eval = 1.7 * zlimit.datasets.gaussian(1, d, seed=1)[0]
    model = zlimit.MLP(depth=2, activation="silu", init_std=sigma, bias_std=sigma_b)
    run = zlimit.simulate(model, X, y, steps=0, particles=16_000, groups=8, X_eval=X_eval, seed=2, progress=False)
    norms = (np.concatenate([X, X_eval]) ** 2).sum(axis=1) / d  # ‖ξ_a‖²/d
    want = {}
    sd1 = np.sqrt(sigma[0] ** 2 * norms + sigma_b ** 2)
    sd2 = np.sqrt([sigma[1] ** 2 * _gauss(lambda z: _silu(z) ** 2, s) + sigma_b ** 2 for s in sd1])
    for l, sd in ((1, sd1), (2, sd2)):
        want[key("h", l)] = np.stack([np.zeros_like(sd), SQRT_2_PI * sd], axis=-1)
        mean_x = [_gauss(_silu, s) for s in sd]
        want[key("x", l)] = np.stack([mean_x, SQRT_2_PI * sd / 2], axis=-1)
    assert set(run.moments) == set(want)
    for k, expected in want.items():
        got, se = _group_estimate(run, k, 0)
        assert_within_se(got, expected, se, dof=run.groups - 1, n_comparisons=24)


# --------------------------------------------------------------- long horizon: linear nets
_T = 200


def test_linear_monte_carlo_moments_match_the_exact_limit_at_200_steps():
    """Depth-2 linear net, 200 steps of full-batch SGD on 2 inputs (+1 evaluation input):
    the Monte Carlo moments of h and x in both layers at T against the exact limit's
    centred Gaussians, E[Z] = 0 and E|Z| = sqrt(2/π)·sqrt(K_aa) (24 numbers). The
    targets ±3 move the features' sd by 33 % (layer 1) and 114 % (layer 2) from their
    initial law (checked), so the moments of step 0 would fail."""
    X = zlimit.datasets.gaussian(2, 4, seed=3)[0]
    y = np.array([3.0, -3.0])
    X_eval = zlimit.datasets.gaussian(1, 4, seed=4)[0]
    model = zlimit.MLP(depth=2, activation="linear", lr=0.1)
    kw = dict(steps=_T, X_eval=X_eval, progress=False)
    exact = zlimit.simulate(model, X, y, method="exact", **kw)
    run = zlimit.simulate(model, X, y, particles=8000, groups=8, seed=1, **kw)
    for l in (1, 2):
        sd = np.sqrt(np.diag(exact.kernel(l, "h")[_T]))
        sd0 = np.sqrt(np.diag(exact.kernel(l, "h")[0]))
        assert np.abs(sd / sd0 - 1).max() > 0.25, "the features barely moved: the test would not see step 0"
        expected = np.stack([np.zeros_like(sd), SQRT_2_PI * sd], axis=-1)
        for kind in ("h", "x"):
            got, se = _group_estimate(run, key(kind, l), _T)
            assert_within_se(got, expected, se, dof=run.groups - 1, n_comparisons=24)


def test_exact_moments_are_those_of_centred_gaussians():
    """The exact limit with biases and momentum, evaluation inputs too: E[Z] = 0 and
    E|Z| = sqrt(2/π)·sqrt(K_aa) of its own kernel at every step and layer, h and x alike."""
    X, y = zlimit.datasets.gaussian(3, 4, seed=0)
    X_eval = zlimit.datasets.gaussian(2, 4, seed=1)[0]
    model = zlimit.MLP(depth=3, activation="linear", lr=0.2, bias_std=0.5, momentum=0.5)
    run = zlimit.simulate(model, X, y, steps=8, method="exact", X_eval=X_eval, progress=False)
    for l in (1, 2, 3):
        diag = np.einsum("taa->ta", run.kernel(l, "h"))
        for kind in ("h", "x"):
            got = run.moments[key(kind, l)][0]
            assert np.array_equal(got[..., 0], np.zeros_like(diag))
            assert_close(got[..., 1], SQRT_2_PI * np.sqrt(diag))


@pytest.mark.parametrize("parametrization", ["mup", "ntk"])
def test_moments_are_recorded_for_every_step_and_input(parametrization):
    """The Monte Carlo and NTK limits fill every entry (no NaN left). The NTK limit's
    moments are those of its frozen initial features at every step; for the training
    inputs and for layer 1 these are the μP limit's at step 0 (the same particles; an
    evaluation input of the μP limit gets other directions in W^2 than the NTK limit,
    which enters every input into the bases)."""
    X, y = zlimit.datasets.gaussian(2, 3, seed=0)
    X_eval = zlimit.datasets.gaussian(1, 3, seed=1)[0]
    model = zlimit.MLP(depth=2, activation="tanh", lr=0.2)
    kw = dict(steps=3, particles=400, groups=2, X_eval=X_eval, seed=4, progress=False)
    run = zlimit.simulate(model, X, y, parametrization=parametrization, **kw)
    assert all(v.shape == (2, 4, 3, 2) and np.isfinite(v).all() for v in run.moments.values())
    if parametrization == "ntk":
        mup = zlimit.simulate(model, X, y, **kw)
        for k, v in run.moments.items():
            assert np.array_equal(v, np.broadcast_to(v[:, :1], v.shape)), k
            rows = slice(None) if k.endswith("1") else slice(0, 2)
            assert np.array_equal(v[:, 0, rows], mup.moments[k][:, 0, rows]), k
