"""The kernel (NTK) limit of the same model, for contrast with μP.

In the neural-tangent parametrization (maths §5, row NTP, with σ_l and η_l = η c_l)
the features stay at initialisation as n → ∞ and the mean output over
initialisations follows kernel gradient descent from f_0 = 0:

    f_{t+1}(ξ_a) = f_t(ξ_a) − Σ_i Θ(ξ_a, ξ_i) χ_{t,i},

    Θ = η_{L+1} E[x^L x^L'] + Σ_{l=2}^{L} η_l Π^l ⊙ E[x^{l-1} x^{l-1}'] + η_1 Π^1 ⊙ ξ·ξ'/d,

    Π^L = σ_{L+1}² E[φ'(h^L) φ'(h^L)'],   Π^l = σ_{l+1}² Π^{l+1} ⊙ E[φ'(h^l) φ'(h^l)'].

The expectations are over the initial features, which the engine's first forward
pass samples exactly; each particle group estimates Θ on its own, so the standard
errors are again the spread between groups. For a loss that is not quadratic, the
kernel dynamics from f_0 = 0 describe the network whose initial output is zero, not
the mean over initialisations.
"""
from __future__ import annotations

import math

import numpy as np
from tqdm.auto import tqdm

from ._model import MLP, error_signal, total_loss
from ._results import Run

__all__ = ["ntk_gram", "kernel_trajectory"]


def _gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T).astype(np.float64) / a.shape[1]


def ntk_gram(model: MLP, K1: np.ndarray, xs: list, dxs: list) -> tuple[np.ndarray, list]:
    """Θ over all inputs, and the backward kernels Π^l, from initial features.

    Parameters
    ----------
    K1 : (M, M) ξ_a·ξ_b/d
    xs, dxs : per layer l = 1..L, (M, N) arrays of Z^{x^l_0} and φ'(Z^{h^l_0}).

    Returns
    -------
    theta : (M, M)
    pis : list of (M, M), Π^l for l = 1..L
    """
    L = model.depth
    pis = [None] * L
    pi = model.sigma[L] ** 2 * _gram(dxs[L - 1], dxs[L - 1])  # Π^L
    for l in range(L, 0, -1):
        if l < L:
            pi = model.sigma[l] ** 2 * pi * _gram(dxs[l - 1], dxs[l - 1])  # Π^l = σ_{l+1}² Π^{l+1} ⊙ E[φ'φ']
        pis[l - 1] = pi
    theta = model.eta[L] * _gram(xs[L - 1], xs[L - 1]) + model.eta[0] * pis[0] * K1
    for l in range(2, L + 1):
        theta += model.eta[l - 1] * pis[l - 1] * _gram(xs[l - 2], xs[l - 2])
    return theta, pis


def kernel_trajectory(model: MLP, theta: np.ndarray, y: np.ndarray, batches: list, steps: int):
    """Kernel gradient descent from f_0 = 0 on the training inputs' error signals.

    Returns
    -------
    outputs : (T+1, M), loss : (T+1,), chi : (T, m)
    """
    m, M = y.shape[0], theta.shape[0]
    f = np.zeros(M)
    outputs, loss, chi = np.zeros((steps + 1, M)), np.zeros(steps + 1), np.zeros((steps, m))
    for t in range(steps + 1):
        if not np.all(np.isfinite(f)):
            from ._errors import DivergenceError

            raise DivergenceError(f"the NTK limit diverged at step {t}; use a smaller lr (now {model.lr})")
        outputs[t], loss[t] = f, total_loss(model, f[:m], y)
        if t == steps:
            break
        chi[t] = error_signal(model, f[:m], y, batches[t])
        f = f - theta[:, :m] @ chi[t]
    return outputs, loss, chi


def simulate_ntk(model: MLP, X: np.ndarray, X_all: np.ndarray, y: np.ndarray, batches: list, steps: int,
                 cfg, progress: bool) -> Run:
    """Run the NTK limit group by group (called by :func:`zlimit.simulate`)."""
    from ._engine import _Group
    from ._gaussian import MemoryBudget

    m, M, T = X.shape[0], X_all.shape[0], steps
    K1 = X_all @ X_all.T / X.shape[1]
    R = len(cfg.record_steps)
    per_group = []
    for g in tqdm(range(cfg.groups), disable=not progress, desc="zlimit.simulate (ntk)", unit="group"):
        state = _Group(model, X, X_all, cfg, g, caps=(M, 1, M), budget=MemoryBudget(math.inf))
        hs, xs, dxs, _, _ = state.forward(0)
        theta, pis = ntk_gram(model, K1, xs, dxs)
        outputs, loss, chi = kernel_trajectory(model, theta, y, batches, T)
        kernels, cross = {}, {}
        for l in range(1, model.depth + 1):
            for kind, v in (("h", hs[l - 1]), ("x", xs[l - 1])):
                k0 = _gram(v, v)  # features frozen at initialisation
                kernels[f"{kind}{l}"] = np.broadcast_to(k0, (T + 1, M, M)).copy()
                cross[f"{kind}{l}"] = np.broadcast_to(k0, (R, T + 1, M, M)).copy()
            dh = np.full((T, m, m), np.nan)
            for t, b in enumerate(batches):
                dh[t][np.ix_(b, b)] = pis[l - 1][np.ix_(b, b)]
            kernels[f"dh{l}"] = dh
        per_group.append((outputs, loss, chi, kernels, cross))
    stack = lambda i: np.stack([p[i] for p in per_group])
    stack_dict = lambda i: {k: np.stack([p[i][k] for p in per_group]) for k in per_group[0][i]}
    meta = {"kind": "limit", "method": "ntk", "parametrization": "ntk", "seed": cfg.seed, "steps": T, "m": m,
            "m_eval": M - m, "particles": cfg.particles * cfg.groups, "groups": cfg.groups,
            "dtype": cfg.dtype.name}
    return Run(model=model, meta=meta, outputs_groups=stack(0), loss_groups=stack(1),
               error_signals_groups=stack(2), kernels=stack_dict(3), cross=stack_dict(4),
               record_steps=cfg.record_steps, novelty={})
