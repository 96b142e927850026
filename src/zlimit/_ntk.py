"""The kernel (NTK) limit of the same model, for contrast with μP.

In the neural-tangent parametrization (maths §5, row NTP, with σ_l and η_l = η c_l)
the features stay at initialisation as n → ∞ and the mean output over
initialisations follows kernel gradient descent from f_0 = 0:

    f_{t+1}(ξ_a) = f_t(ξ_a) − Σ_i Θ(ξ_a, ξ_i) χ_{t,i},

    Θ = η_{L+1} E[x^L x^L'] + Σ_{l=2}^{L} η_l Π^l ⊙ E[x^{l-1} x^{l-1}'] + η_1 Π^1 ⊙ ξ·ξ'/d,

    Π^L = σ_{L+1}² E[φ'(h^L) φ'(h^L)'],   Π^l = σ_{l+1}² Π^{l+1} ⊙ E[φ'(h^l) φ'(h^l)'].

With the extensions of maths §6: biases add their parameter-gradient products
Σ_{l=1}^{L} η c_{b,l} Π^l + η c_{b,L+1} to Θ (a bias is a weight of fan-in 1 on the
input 1), and enter the initial features; the k outputs' Ŵ^c are independent, so Θ is
the same for every output and each output moves by its own χ^c; momentum is heavy ball
on the kernel dynamics, V ← β V + χ_t, f ← f − Θ V. Weight decay has no kernel limit of
this form and is refused by :func:`zlimit.simulate`.

The expectations are over the initial features, which the engine's first forward
pass samples exactly; each particle group estimates Θ on its own, so the standard
errors are again the spread between groups. For a loss that is not quadratic, the
kernel dynamics from f_0 = 0 describe the network whose initial output is zero, not
the mean over initialisations.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from ._driver import Backward, Forward, Recorder, assemble, moment_sums, run_sgd
from ._engine import _Config, initial_features, preflight
from ._gaussian import empirical_gram as _gram
from ._model import MLP
from ._progress import bar as progress_bar
from ._results import Run

__all__ = ["ntk_gram", "NtkState", "simulate_ntk"]


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
    if model.has_bias:  # b^l: Π^l times the input 1, with b^l's rate; b^{L+1}: ∂f/∂b = 1 (maths §6)
        theta += sum(eta_b * pi for eta_b, pi in zip(model.bias_eta, pis)) + model.bias_eta[L]
    return theta, pis


class NtkState:
    """The NTK limit of one particle group as a :class:`zlimit._driver.State`.

    Features are the initial ones, sampled by the μP engine's first forward pass
    (:func:`zlimit._engine.initial_features`); f starts at 0 and moves by
    f_{t+1} = f_t − Θ[:, B_t] χ_t (kernel gradient descent). Cross-step kernels are
    the step-0 kernels, for evaluation inputs too. With k > 1 outputs f is (M, k) and
    the dh kernels are of the error-weighted vectors Σ_c χ_{t,i,c} dh^{l,c}, (χχᵀ) ⊙ Π^l;
    with momentum, ``velocity`` holds V of the heavy ball (maths §6).
    """

    exact_eval_cross = True

    def __init__(self, model: MLP, data, cfg: _Config, group: int):
        self.label = f" (group {group})"
        X_all = data.X_all
        self.hs, self.xs, dxs = initial_features(model, X_all, cfg, group)
        self.moments = moment_sums(self.hs, self.xs) / self.hs[0].shape[1]  # of the frozen features, once
        self.theta, self.pis = ntk_gram(model, X_all @ X_all.T / X_all.shape[1], self.xs, dxs)
        k = model.outputs
        self.m, self.f = data.m, np.zeros(data.M if k == 1 else (data.M, k))
        self.beta = model.momentum
        self.velocity = np.zeros(self.f[: self.m].shape)
        self._grams: dict = {}  # the features never change: each product is computed once

    def gram(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """E_N[Z^a Z^b'], computed once per pair of arrays (kept alive here, so ids stay unique)."""
        k = (id(a), id(b))
        if k not in self._grams:
            self._grams[k] = (a, b, _gram(a, b))
        return self._grams[k][2]

    def forward(self, t: int) -> Forward:
        return Forward(self.hs, self.xs, self.f.copy(), moments=self.moments)

    def backward(self, batch: np.ndarray, chi: np.ndarray) -> Backward:
        """Π^l on the batch: E[Z^{dh^l_0(ξ_i)} Z^{dh^l_0(ξ_j)}]; with k > 1 outputs, of the
        error-weighted vectors: Σ_c χ_{t,i,c} χ_{t,j,c} Π^l(ξ_i, ξ_j)."""
        block = np.ix_(batch, batch)
        if chi.ndim == 1:
            return Backward([pi[block] for pi in self.pis])
        weights = chi[batch] @ chi[batch].T
        return Backward([weights * pi[block] for pi in self.pis])

    def update(self, batch: np.ndarray, chi: np.ndarray) -> None:
        """f_{t+1}(ξ_a) = f_t(ξ_a) − Σ_i Θ(ξ_a, ξ_i) V_{t,i}, V_t = β V_{t−1} + χ_t (V = χ without
        momentum), for each output."""
        if self.beta:
            self.velocity = self.beta * self.velocity + chi
            chi = self.velocity
        self.f = self.f - self.theta[:, : self.m] @ chi


def simulate_ntk(model: MLP, data, settings, on_step=None) -> Run:
    """The NTK limit, G independent groups on ``settings.threads`` worker threads (called by
    :func:`zlimit.simulate` with ``parametrization="ntk"``); ``Run.ntk`` holds each group's
    Θ over all M inputs, (G, M, M)."""
    cfg, T = _Config.of(settings), settings.steps
    preflight(model, data, settings)  # an NTK group holds at most what a μP group holds at step 0

    def run_group(g):
        hook = None if on_step is None else (lambda t, state, rec: on_step(g, t))
        rec = Recorder(model.depth, T, data.m, data.M, cfg.record_steps, outputs=model.outputs)
        state = NtkState(model, data, cfg, g)
        run_sgd(state, model, data.y, list(data.batches), T, rec, hook)
        bar.update(1)
        return rec, state.theta

    with progress_bar(total=cfg.groups, progress=settings.progress, desc="zlimit.simulate (ntk)", unit="group") as bar, \
            threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(min(settings.threads, cfg.groups)) as pool:
        recs, thetas = zip(*pool.map(run_group, range(cfg.groups)))
    meta = {"kind": "limit", "method": "ntk", "parametrization": "ntk", "seed": cfg.seed, "steps": T, "m": data.m,
            "m_eval": data.M - data.m, "particles": cfg.particles * cfg.groups, "groups": cfg.groups,
            "dtype": cfg.dtype.name, "qmc": cfg.qmc}
    run = assemble(model, meta, list(recs))
    run.ntk = np.stack(thetas)  # Θ of each group, (G, M, M)
    return run
