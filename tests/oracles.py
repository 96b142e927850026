"""Independent references for the infinite-width limit (maths §4).

:func:`quadrature_l1` is the L = 1 limit by tensor Gauss–Hermite quadrature. It uses
its own numpy activations (not the package's numba ones) and shares with the package
only the error signal χ (``zlimit._model.error_signal``), which is a convention of §1.
"""
from __future__ import annotations

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import erf

from zlimit._model import error_signal
from zlimit._validate import check_batches

__all__ = ["ACTIVATIONS", "quadrature_l1"]


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _softplus(x):
    return np.logaddexp(0.0, x)


#: name -> (φ, φ'), numpy versions written here, independent of zlimit.activations
ACTIVATIONS = {
    "linear": (lambda x: x, lambda x: np.ones_like(x)),
    "tanh": (np.tanh, lambda x: 1.0 / np.cosh(x) ** 2),
    "sigmoid": (_sigmoid, lambda x: _sigmoid(x) * (1.0 - _sigmoid(x))),
    "silu": (lambda x: x * _sigmoid(x), lambda x: _sigmoid(x) * (1.0 + x * (1.0 - _sigmoid(x)))),
    "gelu": (lambda x: 0.5 * x * (1.0 + erf(x / np.sqrt(2.0))),
             lambda x: 0.5 * (1.0 + erf(x / np.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)),
    "softplus": (_softplus, _sigmoid),
}


def _gram_factor(X_all: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """A (r, M) with Aᵀ A = X_all X_allᵀ / d, r = numerical rank (eigen-factorisation)."""
    d = X_all.shape[1]
    G = X_all @ X_all.T / d
    lam, V = np.linalg.eigh(G)
    keep = lam > tol * max(lam.max(), 1e-300)
    return np.sqrt(lam[keep])[:, None] * V[:, keep].T


def _nodes(dim: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Tensor Gauss–Hermite nodes (Q, dim) and weights (Q,) for N(0, I_dim), Σ w = 1."""
    x, w = hermegauss(order)
    w = w / np.sqrt(2.0 * np.pi)
    grids = np.meshgrid(*([x] * dim), indexing="ij")
    wgrids = np.meshgrid(*([w] * dim), indexing="ij")
    nodes = np.stack([g.ravel() for g in grids], axis=1)
    weights = np.prod(np.stack([g.ravel() for g in wgrids], axis=1), axis=1)
    return nodes, weights


def quadrature_l1(model, X, y, *, steps, X_eval=None, batches=None, order=40) -> dict:
    """The L = 1 limit of maths §2 by Gauss–Hermite quadrature (maths §4).

    With h_0(ξ_a) = σ_1 gᵀA_a (g ~ N(0, I_r), AᵀA = ΞΞᵀ/d) and Ŵ_0 = σ_2 w, every
    quantity is a deterministic function of (g, w):

        h_t(ξ_a)  = h_0(ξ_a) − η_1 Σ_{s<t} Σ_i χ_{s,i} (ξ_i·ξ_a/d) Ŵ_s φ'(h_s(ξ_i))
        Ŵ_{t+1}   = Ŵ_t − η_2 Σ_i χ_{t,i} φ(h_t(ξ_i))
        f̊_t(ξ_a) = E[Ŵ_t φ(h_t(ξ_a))]

    and E is a tensor Gauss–Hermite rule of ``order`` points per dimension over the
    r + 1 <= 4 dimensions.

    Returns
    -------
    dict with "outputs" (T+1, M), "loss" (T+1,), "error_signals" (T, m)
    """
    if model.depth != 1:
        raise ValueError(f"quadrature_l1 is the L = 1 oracle, got depth {model.depth}")
    if model.activation.name not in ACTIVATIONS:
        raise ValueError(f"no oracle activation for {model.activation.name!r}")
    phi, dphi = ACTIVATIONS[model.activation.name]
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    X_eval = np.zeros((0, X.shape[1])) if X_eval is None else np.asarray(X_eval, dtype=float)
    m, d = X.shape
    X_all = np.vstack([X, X_eval])
    batches = check_batches(batches, m, steps)
    A = _gram_factor(X_all)
    r = A.shape[0]
    if r + 1 > 4:
        raise ValueError(f"input Gram rank {r} is too large for tensor quadrature (r + 1 <= 4)")
    nodes, weights = _nodes(r + 1, order)
    s1, s2 = model.sigma
    e1, e2 = model.eta
    h0 = s1 * nodes[:, :r] @ A  # (Q, M)
    w_hat = s2 * nodes[:, r]  # (Q,)
    K = X @ X_all.T / d  # (m, M): ξ_i·ξ_a/d
    P = np.zeros((nodes.shape[0], m))  # Σ_{s<t} χ_{s,i} Ŵ_s φ'(h_s(ξ_i))
    outputs = np.zeros((steps + 1, X_all.shape[0]))
    loss = np.zeros(steps + 1)
    chis = np.zeros((steps, m))
    for t in range(steps + 1):
        h = h0 - e1 * P @ K
        x = phi(h)
        f = weights @ (w_hat[:, None] * x)
        outputs[t] = f
        values = model.loss.value(f[:m], y)
        loss[t] = values.mean() if model.reduction == "mean" else values.sum()
        if t == steps:
            break
        chi = error_signal(model, f[:m], y, batches[t])
        chis[t] = chi
        P = P + chi[None, :] * w_hat[:, None] * dphi(h[:, :m])
        w_hat = w_hat - e2 * x[:, :m] @ chi
    return {"outputs": outputs, "loss": loss, "error_signals": chis}
