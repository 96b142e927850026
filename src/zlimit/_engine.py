"""The infinite-width μP engine: the Z recursions of maths §2, sampled as in §3.

Each Z random variable is a vector of N i.i.d. particles. The particles are split
into G independent groups, each a complete simulation of N/G particles; estimates
are group means and standard errors come from the spread between groups.

Groups run on worker threads (``threads``, default ``NUMBA_NUM_THREADS``), each
with single-threaded BLAS and serial numba kernels. A group's numbers depend only
on the seed and the group index, so the result is the same bits for any thread count.

Memory per group is O(N/G · K) for K Gaussian directions: the update terms of §2
are kept as a small coefficient matrix A_l on the bases (see :class:`_HiddenLayer`),
with no history of particles.
"""
from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
import scipy.special
import scipy.stats.qmc
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from ._errors import DivergenceError, MonteCarloWarning, NumericalError, ResourceError
from ._gaussian import ORTHOGONALITY_LIMIT, GaussianBasis, MemoryBudget
from ._kernels import apply_pair, fill_normals, stream_key
from ._model import MLP, check_batches, check_data, error_signal, total_loss
from ._results import Run

__all__ = ["simulate", "estimate_memory"]

#: warn when the groups' feature norms vary this many times more than sampling allows
DRIFT_LIMIT = 1000.0

_EVAL_LABEL = 1 << 40  # stream labels of temporary (evaluation) directions
_INPUT, _READOUT, _QMC = 2, 3, 4  # stream labels of the input-layer and readout normals


@dataclass(frozen=True)
class _Config:
    particles: int  # per group
    groups: int
    seed: int
    tol: float
    dtype: np.dtype
    gradient_independence: bool
    record_steps: tuple[int, ...]
    qmc: bool = False


#: steps between checks of the bases' orthogonality (and the last step is checked)
CHECK_EVERY = 25
#: directions allocated per basis up front, per training input; bases grow by half when full
_INITIAL_PER_INPUT = 8


class _HiddenLayer:
    """The two Gaussian processes of a hidden matrix W^l and its update operator.

    The §3 operator D_l = Σ_{s,i} χ_{s,i} Z^{dh^l_s(ξ_i)} ⊗ coords(x^{l-1}_s(ξ_i))
    factors as V A_l, with V the backward basis and A_l (J×K) accumulating
    χ_{s,i} coords_V(dh^l_s(ξ_i)) coords_U(x^{l-1}_s(ξ_i))ᵀ. Then the update terms
    of §2 are −η_l V (A_l c) forward and −η_l U (A_lᵀ b) backward, for c = E[Z^U Z^x]
    and b = E[Z^V Z^y].

    Stein estimates with a control variate (maths §3). A normal is independent of
    every vector computed before it was drawn: γ_j (backward, drawn in the backward
    pass of step s_j) of the forward directions u_k opened in forward passes t_k <= s_j,
    and g_k (forward, step t_k) of the backward directions v_j with s_j < t_k. So
    E[γ_j Z^x] = E[γ_j (Z^x − Σ_{k: t_k <= s_j} c_k Z^{u_k})] exactly in the limit
    (c = coords of x on U), and the Monte Carlo noise of the estimate falls from
    ‖x‖/√N to the norm of the part of x that is new since γ_j was drawn: late in
    training, almost nothing. Without it the noise of J estimates adds a random
    component of relative variance ~J/N to every Ż, biasing feature kernels upwards,
    and the next basis takes that noise for novelty and opens directions whose
    estimates add more. ``S_bf`` (J×K) holds E_N[γ_j Z^{u_k}] for the independent
    pairs and ``S_fb`` (K×J) holds E_N[g_k Z^{v_j}], zero elsewhere; each pair is
    computed once, when the newer of its two directions opens.
    """

    def __init__(self, layer: int, model: MLP, cfg: _Config, group: int, caps: tuple[int, int, int],
                 budget: MemoryBudget):
        self.layer = layer
        self.sigma = model.sigma[layer - 1]
        self.eta = model.eta[layer - 1]
        key = (cfg.seed, group, layer)
        k_cap, j_cap, initial = caps
        basis = lambda cap, side: GaussianBasis(cfg.particles, cap, self.sigma, cfg.tol, cfg.dtype, key + (side,),
                                                budget, initial)
        self.fwd, self.bwd = basis(k_cap, 0), basis(j_cap, 1)
        self.A = np.zeros((0, 0))
        self.S_bf, self.S_fb = np.zeros((0, 0)), np.zeros((0, 0))
        self.stein = not cfg.gradient_independence
        self.coords_x: np.ndarray | None = None  # (K, m) coords of this step's x^{l-1}(train)
        self.coords_dh: np.ndarray | None = None  # (J, b) coords of this step's dh^l(batch)

    def forward(self, x: np.ndarray, m: int, eval_labels) -> tuple[np.ndarray, np.ndarray]:
        """Z^{h^l_t(ξ_a)} = Ẑ^{W^l x} + Ż^{W^l x} − η_l Σ χ Z^{dh^l_s} E[Z^{x_s} Z^x] (maths §2).

        Parameters
        ----------
        x : (M, N) Z^{x^{l-1}_t(ξ_a)}, training rows first.
        m : number of training rows; only they enter the basis.

        Returns
        -------
        h : (M, N)
        rho : (M,) novelty ‖ρ‖ of each row against the basis (maths §3)
        dropped : (m,) (‖ρ‖/‖x‖)² of training rows whose residual got no direction, else 0
        """
        K0 = self.fwd.size
        h, C, rho, dropped = self.fwd.add(x, m, eval_labels)
        self._opened_forward(K0)
        self.coords_x = C[:, :m]
        J = self.bwd.size
        D = -self.eta * _padded_product(self.A, C, J)  # update term, on the backward basis
        if self.stein:  # Ż^{W x} = σ Σ_j Z^{v_j} E[γ_j Z^x], backward vectors of steps < t
            D += self.sigma * (self.bwd.stein(x) - _padded_product(self.S_bf, C, J))
        if self.bwd.size:
            h += self.bwd.combine(D)
        return h, rho, dropped

    def backward(self, dh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Z^{dx^{l-1}_t(ξ_i)} = Ẑ^{W^{lT} dh} + Ż^{W^{lT} dh} − η_l Σ χ Z^{x_s} E[Z^{dh_s} Z^{dh}] (maths §2).

        Parameters
        ----------
        dh : (b, N) Z^{dh^l_t(ξ_i)} for i in the batch.

        Returns
        -------
        dx : (b, N)
        rho : (b,) novelty of each row against the backward basis
        dropped : (b,) (‖ρ‖/‖x‖)² of rows whose residual got no direction, else 0
        """
        J0 = self.bwd.size
        Zhat, Cb, rho, dropped = self.bwd.add(dh)
        self._opened_backward(J0)
        self.coords_dh = Cb
        K = self.fwd.size
        E = -self.eta * _padded_product(self.A.T, Cb, K)  # update term, on the forward basis
        if self.stein:  # Ż^{W^T y} = σ Σ_k Z^{u_k} E[g_k Z^y], forward vectors of steps <= t
            E += self.sigma * (self.fwd.stein(dh) - _padded_product(self.S_fb, Cb, K))
        dx = Zhat + self.fwd.combine(E)
        return dx, rho, dropped

    def _opened_forward(self, K0: int) -> None:
        """New forward directions K0..K: rows E_N[g_k Z^{v_j}] of S_fb (every v_j is older);
        S_bf gets zero columns (each γ_j is older than them, so not independent)."""
        if not self.stein or self.fwd.size == K0:
            return
        new = (self.fwd.g[K0:] @ self.bwd.u.T).astype(np.float64) / self.fwd.n
        self.S_fb = np.vstack([np.pad(self.S_fb, ((0, 0), (0, self.bwd.size - self.S_fb.shape[1]))), new])
        self.S_bf = np.pad(self.S_bf, ((0, self.bwd.size - self.S_bf.shape[0]), (0, self.fwd.size - self.S_bf.shape[1])))

    def _opened_backward(self, J0: int) -> None:
        """New backward directions J0..J: rows E_N[γ_j Z^{u_k}] of S_bf (every u_k is as old
        or older); S_fb gets zero columns."""
        if not self.stein or self.bwd.size == J0:
            return
        new = (self.bwd.g[J0:] @ self.fwd.u.T).astype(np.float64) / self.bwd.n
        self.S_bf = np.vstack([np.pad(self.S_bf, ((0, 0), (0, self.fwd.size - self.S_bf.shape[1]))), new])
        self.S_fb = np.pad(self.S_fb, ((0, self.fwd.size - self.S_fb.shape[0]), (0, self.bwd.size - self.S_fb.shape[1])))

    def accumulate(self, chi_batch: np.ndarray, batch: np.ndarray) -> None:
        """A_l += Σ_{i∈B_t} χ_{t,i} coords(dh^l_t(ξ_i)) coords(x^{l-1}_t(ξ_i))ᵀ.

        Maths §3's operator D_l = Σ χ Z^{dh_s} ⊗ coords(x_s), stored factored as
        D_l = V A_l (V the backward basis, (J, N)): A_l is (J, K), not (N, K).
        """
        Cb, Cx = self.coords_dh, self.coords_x[:, batch]
        J, K = Cb.shape[0], Cx.shape[0]
        if self.A.shape != (J, K):  # the bases grew: pad A with zeros
            self.A = np.pad(self.A, ((0, J - self.A.shape[0]), (0, K - self.A.shape[1])))
        self.A += (Cb * chi_batch) @ Cx.T

    @property
    def nbytes(self) -> int:
        return self.fwd.nbytes + self.bwd.nbytes


def _padded_product(A: np.ndarray, C: np.ndarray, rows: int) -> np.ndarray:
    """A C[:A.shape[1]], padded with zero rows to ``rows``: directions newer than A's
    last update have no entry in it. A (J', K'), C (K, b) with K >= K'; returns (rows, b)."""
    out = np.zeros((rows, C.shape[1]))
    out[: A.shape[0]] = A @ C[: A.shape[1]]
    return out


def _base_normals(rows: int, n: int, dtype, cfg: _Config, group: int) -> np.ndarray:
    """The normals behind Z^{h^1_0} and Z^{Ŵ_0}, shape (rows, n) (maths §2, base randomness).

    Rows 0..rows−2 become Z^{h^1_0(ξ_a)} (Cov = σ_1² ξ_a·ξ_b/d, through the QR factor
    of Ξᵀ); the last row becomes Z^{Ŵ_0} ~ N(0, σ_{L+1}²), independent of the rest.
    Counter-based by default; with ``cfg.qmc`` a scrambled Sobol sequence mapped by the
    normal quantile (randomised quasi-Monte Carlo: unbiased, with one independent
    scramble per group, so the groups stay independent and the standard errors honest).
    """
    if cfg.qmc:
        rng = np.random.default_rng(int(stream_key(cfg.seed, group, 0, _INPUT, _QMC)))
        sobol = scipy.stats.qmc.Sobol(d=rows, scramble=True, seed=rng)
        u = sobol.random_base2(int(np.ceil(np.log2(n))))[:n]  # first n of 2^k balanced points
        return scipy.special.ndtri(np.clip(u, 1e-300, 1 - 1e-16)).T.astype(dtype)
    g = np.empty((rows, n), dtype=dtype)
    for j, row in enumerate(g[:-1]):
        fill_normals(row, stream_key(cfg.seed, group, 0, _INPUT, j))
    fill_normals(g[-1], stream_key(cfg.seed, group, 0, _READOUT))
    return g


class _Group:
    """One independent simulation of N/G particles: maths §2 for every step."""

    def __init__(self, model: MLP, X: np.ndarray, X_all: np.ndarray, cfg: _Config, group: int,
                 caps: tuple[int, int, int], budget: MemoryBudget):
        self.model, self.cfg = model, cfg
        self.m, self.M = X.shape[0], X_all.shape[0]
        n, dt = cfg.particles, cfg.dtype
        d = X.shape[1]
        # Z^{h^1_0(ξ_a)}: Cov = σ_1² ξ_a·ξ_b/d. QR of Ξᵀ with training columns first,
        # so training inputs use only the leading normals.
        R = np.linalg.qr(X_all.T, mode="r")
        g = _base_normals(R.shape[0] + 1, n, dt, cfg, group)  # input-layer normals, then Ŵ_0's
        self.h1_0 = ((model.sigma[0] / np.sqrt(d)) * R.T.astype(dt)) @ g[:-1]  # (M, N)
        self.K1 = X @ X_all.T / d  # (m, M): ξ_i·ξ_a/d
        self.P1 = np.zeros((self.m, n), dtype=dt)  # Σ_s χ_{s,i} Z^{dh^1_s(ξ_i)}
        self.w = model.sigma[-1] * g[-1]  # Z^{Ŵ_0} ~ N(0, σ_{L+1}²)
        self.hidden = [_HiddenLayer(l, model, cfg, group, caps, budget) for l in range(2, model.depth + 1)]
        self.readout_0: np.ndarray | None = None  # E_N[Ŵ_0 x^L_0], the control variate of §3

    def forward(self, t: int) -> tuple[list, list, list, dict]:
        """Forward pass at step t for all M inputs (maths §2, "Forward pass").

        Z^{h^1_t(ξ_a)} = Z^{h^1_0(ξ_a)} − η_1 Σ_{s<t} Σ_i χ_{s,i} (ξ_i·ξ_a/d) Z^{dh^1_s(ξ_i)},
        Z^{x^l_t} = φ(Z^{h^l_t}), and Z^{h^l_t} for l ≥ 2 by :meth:`_HiddenLayer.forward`.

        Returns
        -------
        hs, xs, dxs : lists of L arrays (M, N): Z^{h^l_t}, Z^{x^l_t}, φ'(Z^{h^l_t})
        novelty : {"fwd<l>": (M,)} residual norms against the forward bases
        dropped : {"fwd<l>": (m,)} (‖ρ‖/‖x‖)² of training rows whose residual got no direction

        Raises
        ------
        DivergenceError
            When a feature becomes non-finite (relu(NaN) = 0 would hide it from f̊).
        """
        phi, dphi = self.model.activation.phi, self.model.activation.dphi
        # Z^{h^1_t} = Z^{h^1_0} − η_1 Σ_{s<t} Σ_i χ_{s,i} (ξ_i·ξ_a/d) Z^{dh^1_s(ξ_i)}
        h = self.h1_0 - (self.model.eta[0] * self.K1.T).astype(self.cfg.dtype) @ self.P1
        hs, xs, dxs, novelty, dropped = [], [], [], {}, {}
        for layer in [None] + self.hidden:
            if layer is not None:
                labels = [_EVAL_LABEL + t * self.M + j for j in range(self.M)]
                key = f"fwd{layer.layer}"
                h, novelty[key], dropped[key] = layer.forward(xs[-1], self.m, labels)
            if not np.isfinite(h).all():
                raise DivergenceError(f"layer-{len(hs) + 1} features became non-finite at step {t}; the run "
                                      f"diverges: use a smaller lr (now {self.model.lr}) or lr_mult")
            x, dx = np.empty_like(h), np.empty_like(h)
            apply_pair(phi, dphi, h, x, dx)  # Z^{x^l_t} = φ(Z^{h^l_t})
            hs.append(h), xs.append(x), dxs.append(dx)
        return hs, xs, dxs, novelty, dropped

    def readout(self, xL: np.ndarray) -> np.ndarray:
        """f̊_t(ξ_a) = E[Z^{Ŵ_t} Z^{x^L_t(ξ_a)}] − E_N[Ŵ_0 x^L_0] (the §3 control variate)."""
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported by the caller
            raw = (xL @ self.w).astype(np.float64) / self.cfg.particles
        if self.readout_0 is None:
            self.readout_0 = raw.copy()
        return raw - self.readout_0

    def backward(self, batch: np.ndarray, dxs: list) -> tuple[list, dict]:
        """Backward pass for i ∈ B_t (maths §2, "Backward pass").

        Z^{dx^L_t(ξ_i)} = Z^{Ŵ_t}, Z^{dh^l_t} = Z^{dx^l_t} φ'(Z^{h^l_t}), and Z^{dx^{l−1}_t}
        for l ≥ 2 by :meth:`_HiddenLayer.backward`.

        Returns
        -------
        dhs : list of L arrays (b, N), Z^{dh^l_t(ξ_i)} for the batch rows
        novelty : {"bwd<l>": (b,)} residual norms against the backward bases
        dropped : {"bwd<l>": (b,)} (‖ρ‖/‖x‖)² of rows whose residual got no direction
        """
        dx = np.broadcast_to(self.w, (len(batch), self.w.size))  # Z^{dx^L_t} = Z^{Ŵ_t}
        dhs, novelty, dropped = [None] * self.model.depth, {}, {}
        for l in range(self.model.depth, 0, -1):
            dh = dx * dxs[l - 1][batch]  # Z^{dh^l} = Z^{dx^l} φ'(Z^{h^l})
            dhs[l - 1] = dh
            if l >= 2:
                dx, novelty[f"bwd{l}"], dropped[f"bwd{l}"] = self.hidden[l - 2].backward(dh)
        return dhs, novelty, dropped

    def update(self, batch: np.ndarray, chi: np.ndarray, xL: np.ndarray, dh1: np.ndarray) -> None:
        """Fold step t into the operators: Ŵ, the first-layer sum P1 and each A_l.

        Z^{Ŵ_{t+1}} = Z^{Ŵ_t} − η_{L+1} Σ_i χ_{t,i} Z^{x^L_t(ξ_i)} (maths §2, backward pass);
        P1 += Σ_i χ_{t,i} Z^{dh^1_t(ξ_i)}, the sum the first-layer forward equation reads;
        A_l as in :meth:`_HiddenLayer.accumulate` (maths §3, the operator D_l).
        """
        chi_b = chi[batch]
        self.w -= (self.model.eta[-1] * chi_b).astype(self.w.dtype) @ xL[batch]  # Z^{Ŵ_{t+1}}
        self.P1[batch] += chi_b[:, None].astype(self.P1.dtype) * dh1
        for layer in self.hidden:
            layer.accumulate(chi_b, batch)


class _Recorder:
    """Collects one group's trajectory into the arrays of :class:`~zlimit.Run`.

    Evaluation inputs get fresh Gaussian directions at every step, so their Ẑ at
    step s has the exact joint law with every training Z up to step s, but not with
    later steps. Cross-step entries E[Z_s(ξ_e) Z_t(·)], t > s, of an evaluation
    input ξ_e in layers l >= 2 are therefore left NaN rather than reported wrong
    (same-step kernels, outputs and layer 1 are exact; ``method="exact"`` has all).

    ``bases`` holds, per Gaussian process ``{side}{l}`` and step: ``size_`` (directions
    held after the step), ``dropped_`` (vectors whose nonzero residual got no
    direction), ``dropped_mass_`` (their Σ(‖ρ‖/‖x‖)²) and ``orthogonality_`` (max|UUᵀ/N − I|
    where it was checked, NaN elsewhere). ``spread`` holds, per layer and step, the
    per-particle variance of the mean over training inputs of (Z^{h^l_t})², for the
    drift check.
    """

    def __init__(self, depth: int, steps: int, m: int, M: int, record_steps: tuple[int, ...]):
        self.record_steps, self.m = record_steps, m
        nan = np.nan
        self.outputs = np.full((steps + 1, M), nan)
        self.loss = np.full(steps + 1, nan)
        self.chi = np.zeros((steps, m))
        self.kernels, self.cross, self.novelty, self.kept, self.bases = {}, {}, {}, {}, {}
        self.spread = np.full((depth, steps + 1), nan)
        for l in range(1, depth + 1):
            for kind in ("h", "x"):
                self.kernels[f"{kind}{l}"] = np.full((steps + 1, M, M), nan)
                self.cross[f"{kind}{l}"] = np.full((len(record_steps), steps + 1, M, M), nan)
            self.kernels[f"dh{l}"] = np.full((steps, m, m), nan)
            if l >= 2:
                self.novelty[f"fwd{l}"] = np.full((steps + 1, M), nan)
                self.novelty[f"bwd{l}"] = np.full((steps + 1, M), nan)
                for side in ("fwd", "bwd"):
                    for stat in ("size", "dropped", "dropped_mass"):
                        self.bases[f"{stat}_{side}{l}"] = np.zeros(steps + 1)
                    self.bases[f"orthogonality_{side}{l}"] = np.full(steps + 1, nan)

    @staticmethod
    def _gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T).astype(np.float64) / a.shape[1]

    def features(self, t: int, hs: list, xs: list) -> None:
        """E[Z Z'] at step t, and against the kept steps s <= t."""
        for l, h in enumerate(hs):
            self.spread[l, t] = np.var((h[: self.m] ** 2).mean(axis=0))
        for l, (h, x) in enumerate(zip(hs, xs), start=1):
            for kind, v in (("h", h), ("x", x)):
                key = f"{kind}{l}"
                self.kernels[key][t] = self._gram(v, v)
                if t in self.record_steps:
                    self.kept[(key, t)] = v.copy()
                for r, s in enumerate(self.record_steps):
                    if s <= t:
                        self.cross[key][r, t] = self._gram(self.kept[(key, s)], v)
                        if t > s and l >= 2:  # see the class docstring
                            self.cross[key][r, t, self.m:] = np.nan

    def gradients(self, t: int, batch: np.ndarray, dhs: list) -> None:
        for l, dh in enumerate(dhs, start=1):
            self.kernels[f"dh{l}"][t][np.ix_(batch, batch)] = self._gram(dh, dh)

    def novel(self, t: int, novelty: dict, dropped: dict, batch: np.ndarray | None = None) -> None:
        """Residual norms of the vectors added at step t, and what truncation dropped."""
        for key, rho in novelty.items():
            if batch is None:
                self.novelty[key][t] = rho
            else:
                self.novelty[key][t, batch] = rho
        for key, mass in dropped.items():
            self.bases[f"dropped_{key}"][t] += np.count_nonzero(mass)
            self.bases[f"dropped_mass_{key}"][t] += mass.sum()

    def check_bases(self, t: int, hidden: list, check: bool) -> None:
        """Basis sizes after step t; every ``CHECK_EVERY`` steps, the orthogonality invariant.

        Raises
        ------
        NumericalError
            When max|UUᵀ/N − I| on the newest directions exceeds ``ORTHOGONALITY_LIMIT``.
        """
        for layer in hidden:
            for side, basis in (("fwd", layer.fwd), ("bwd", layer.bwd)):
                key = f"{side}{layer.layer}"
                self.bases[f"size_{key}"][t] = basis.size
                if check:
                    err = basis.orthogonality_error()
                    self.bases[f"orthogonality_{key}"][t] = err
                    limit = ORTHOGONALITY_LIMIT[basis.basis.dtype]
                    if not err <= limit:
                        raise NumericalError(
                            f"the {side} Gaussian basis of W^{layer.layer} lost orthogonality at step {t}: "
                            f"max|UUᵀ/N − I| = {err:.2g} > {limit:g}; this is a bug, please report it")


def _capacities(m: int, batches: list, steps: int, particles: int) -> tuple[int, int, int]:
    """Basis sizes: the largest (m per forward pass, |B_t| per backward pass, at most N),
    and the initial allocation of each basis (it grows by half when full)."""
    k_cap = min(m * (steps + 1), particles)
    j_cap = min(max(int(sum(len(b) for b in batches)), 1), particles)
    return k_cap, j_cap, min(max(k_cap, j_cap), _INITIAL_PER_INPUT * m)


def _memory_parts(model: MLP, m: int, M: int, steps: int, particles: int, groups: int, batches: list,
                  dtype, record_steps) -> tuple[int, int, int]:
    """(bases at their initial size, other arrays) of one group, and the records of all groups."""
    n = particles // groups
    item = np.dtype(dtype).itemsize
    k_cap, j_cap, initial = _capacities(m, batches, steps, n)
    bases = (model.depth - 1) * 2 * (min(k_cap, initial) + min(j_cap, initial)) * n * item
    features = (4 * model.depth + 6) * M * n * item + 2 * model.depth * len(record_steps) * M * n * item
    records = 8 * (steps + 1) * M * M * model.depth * (3 + 2 * len(record_steps))
    return bases, features, groups * records


def estimate_memory(model: MLP, m: int, M: int, steps: int, particles: int, groups: int,
                    batches: list, dtype="float64", record_steps=(0,), threads: int = 1) -> int:
    """Bytes a run needs at its start: one group's simulation times the groups run at once.

    Counts the bases and normals of every hidden matrix (2 (K + J) N/G values each) at
    their initial size, the per-step feature arrays, the kept features and the records.
    The bases grow as the run adds Gaussian directions (a run whose features have
    converged adds none), and :func:`simulate` checks each growth against the memory
    the machine had at the start, stopping with :class:`ResourceError` before it runs out.
    The most a run could need, m(T+1) forward and Σ|B_t| backward directions, is
    rarely approached: ``Run.bases`` reports the sizes reached.
    """
    bases, features, records = _memory_parts(model, m, M, steps, particles, groups, batches, dtype, record_steps)
    return int(min(threads, groups) * (bases + features) + records)


def _available_memory() -> int:
    """MemAvailable from /proc/meminfo, or total physical memory elsewhere."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _check_settings(particles, groups, tol, dtype, record_steps, steps) -> tuple[np.dtype, tuple[int, ...]]:
    for name, v, lo in (("particles", particles, 2), ("groups", groups, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if particles // groups < 2:
        raise ValueError(f"particles = {particles} is too few for groups = {groups}; give each group >= 2")
    if isinstance(tol, bool) or not (isinstance(tol, (float, int)) and 0 <= tol < 1):
        raise ValueError(f"basis_tol must be a number in [0, 1), got {tol!r}")
    if dtype not in ("float64", "float32", np.float64, np.float32):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    steps_list = sorted({0, *[int(s) for s in record_steps]})
    if steps_list[-1] > steps or steps_list[0] < 0:
        raise ValueError(f"record_steps must lie in [0, steps = {steps}], got {tuple(record_steps)}")
    return np.dtype(dtype), tuple(steps_list)


def simulate(model: MLP, X, y, *, steps: int, particles: int = 100_000, seed: int = 0, X_eval=None,
             batches=None, groups: int = 8, dtype: str = "float64", progress: bool = True,
             method: str = "mc", gradient_independence: bool = False, basis_tol: float | None = None,
             record_steps=(0,), parametrization: str = "mup", threads: int | None = None,
             qmc: bool = False, on_step=None) -> Run:
    """The infinite-width μP limit of ``model`` trained by SGD on (X, y).

    Parameters
    ----------
    model : MLP
    X : array_like (m, d), y : array_like (m,)
        Training inputs and targets.
    steps : int
        T, the number of SGD steps.
    particles : int
        N, the total number of Monte Carlo particles.
    seed : int
        Same seed, same bits, whatever the thread count.
    X_eval : array_like (m_eval, d), optional
        Evaluation inputs: observed at every step, never trained on.
    batches : list of index arrays, optional
        One per step (see :func:`zlimit.batch_schedule`); None is full batch.
    groups : int
        G independent particle groups of N/G particles; standard errors come from
        their spread (G >= 2 for error bars).
    dtype : {"float64", "float32"}
        Storage and arithmetic of particle arrays. float32 halves memory but is not
        faster here (its reductions need the larger default ``basis_tol``).
    progress : bool
        Show a progress bar.
    method : {"mc", "exact"}
        "exact" runs the deterministic linear-network limit (activation "linear").
    gradient_independence : bool
        Ablation: drop every Ż term (maths §2), i.e. assume gradient independence.
    basis_tol : float, optional
        A vector whose residual ‖ρ‖ is at most basis_tol·‖x‖ adds no Gaussian
        direction (its ρ is dropped from Ẑ; ``Run.bases`` reports how many vectors
        and their Σ(‖ρ‖/‖x‖)² per basis and step). Default 1e-3 for float64 and 1e-2
        for float32, whose round-off otherwise enters as spurious directions. Once
        training converges the features stop moving and no directions are added, so
        the cost of a step stops growing. Measured on the paper's problem (digits,
        depth-3 SiLU, lr 0.1, docs/performance.md): at 1e-3 the bases hold at most 270
        directions after 1000 steps, and λ_min of the layer-2 space-time Gram is within
        1 % of the untruncated value (1e-6) at T = 100; 1e-2 halves the directions and
        lowers that λ_min by 5 %.
    record_steps : sequence of int
        Steps whose features are kept to give cross-step kernels (0 is always kept).
    threads : int, optional
        Groups simulated at once, on worker threads (default ``NUMBA_NUM_THREADS``).
        Memory grows with it; the numbers do not change.
    qmc : bool
        Draw the input-layer and readout Gaussians (Z^{h^1_0}, Z^{Ŵ_0}) by scrambled
        Sobol points (randomised QMC) instead of i.i.d.; a variance reduction that
        matters most for shallow nets (``docs/performance.md``).
    on_step : callable, optional
        Called as ``on_step(group, t)`` after step t of each group (from the thread
        that runs the group): for timing, logging or custom progress.
    parametrization : {"mup", "ntk"}
        "ntk" gives the kernel limit of the same model for contrast (:mod:`zlimit.ntk`):
        features frozen at initialisation, f moved by kernel gradient descent.

    Returns
    -------
    Run
        ``outputs`` (T+1, M) f̊_t with ``outputs_se``, ``loss``, ``error_signals``,
        ``kernel(l, kind)``, ``novelty`` and ``bases`` (maths §3); ``meta`` has
        ``peak_basis_bytes``.

    Raises
    ------
    ValueError
        For invalid data or settings.
    ResourceError
        When the run would need more memory than the machine has: at the start, or
        when the growing bases would pass 80 % of the memory available at the start
        (the message names the group and step).
    DivergenceError
        When f̊, the loss or a feature becomes non-finite.
    NumericalError
        When a basis loses orthogonality (checked every ``CHECK_EVERY`` steps).

    Warns
    -----
    MonteCarloWarning
        When a basis holds more than a tenth as many directions as a group has
        particles, or when the groups' feature norms drift apart much faster than
        sampling noise allows (each names the step and what to change).

    Examples
    --------
    >>> import numpy as np, zlimit
    >>> X = np.array([[1.0, 0.0], [0.6, 0.8]]); y = np.array([1.0, -1.0])
    >>> model = zlimit.MLP(depth=2, activation="tanh", lr=0.5)
    >>> run = zlimit.simulate(model, X, y, steps=3, particles=20_000, progress=False)
    >>> run.outputs.shape
    (4, 2)
    """
    if method == "exact":
        from ._exact import simulate_exact

        return simulate_exact(model, X, y, steps=steps, X_eval=X_eval, batches=batches,
                              record_steps=record_steps)
    if method != "mc":
        raise ValueError(f"method must be 'mc' or 'exact', got {method!r}")
    if parametrization not in ("mup", "ntk"):
        raise ValueError(f"parametrization must be 'mup' (the feature-learning limit) or 'ntk', got {parametrization!r}")
    X, y, X_eval = check_data(model, X, y, X_eval)
    batches = check_batches(batches, X.shape[0], steps)
    if basis_tol is None:
        basis_tol = 1e-2 if dtype in ("float32", np.float32) else 1e-3
    dt, record_steps = _check_settings(particles, groups, basis_tol, dtype, record_steps, steps)
    m, M = X.shape[0], X.shape[0] + X_eval.shape[0]
    cfg = _Config(particles // groups, groups, int(seed), float(basis_tol), dt,
                  bool(gradient_independence), record_steps, bool(qmc))
    threads = numba.config.NUMBA_NUM_THREADS if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    bases, features, records = _memory_parts(model, m, M, steps, particles, groups, batches, dt, record_steps)
    live = min(threads, groups)
    need, have = live * (bases + features) + records, _available_memory()
    if need > 0.8 * have:
        raise ResourceError(
            f"this run needs about {need / 2**30:.1f} GiB at its start but {have / 2**30:.1f} GiB is available; "
            "use fewer particles, more groups (memory is per group), threads=1, fewer steps, or dtype='float32'"
        )
    budget = MemoryBudget(0.8 * have - live * features - records)
    caps = _capacities(m, batches, steps, cfg.particles)
    X_all = np.vstack([X, X_eval])
    if parametrization == "ntk":
        from ._ntk import simulate_ntk

        return simulate_ntk(model, X, X_all, y, batches, steps, cfg, progress)
    run_group = lambda g: _run_group(model, X, X_all, y, batches, cfg, g, caps, budget, steps, bar, on_step)
    with tqdm(total=groups * (steps + 1), disable=not progress, desc="zlimit.simulate", unit="step") as bar, \
            threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(min(threads, groups)) as pool:
        recs = list(pool.map(run_group, range(groups)))
    meta = {"kind": "limit", "method": "mc", "seed": int(seed), "steps": int(steps), "m": m,
            "m_eval": M - m, "particles": int(particles), "groups": int(groups), "dtype": dt.name,
            "gradient_independence": bool(gradient_independence), "basis_tol": float(basis_tol),
            "qmc": bool(qmc),
            "peak_basis_bytes": int(budget.peak)}
    stack = lambda name: {k: np.stack([getattr(r, name)[k] for r in recs]) for k in getattr(recs[0], name)}
    run = Run(model=model, meta=meta,
              outputs_groups=np.stack([r.outputs for r in recs]),
              loss_groups=np.stack([r.loss for r in recs]),
              error_signals_groups=np.stack([r.chi for r in recs]),
              kernels=stack("kernels"), cross=stack("cross"), record_steps=record_steps,
              novelty=stack("novelty"), bases=stack("bases"))
    drift = _drift_ratios(run, np.stack([r.spread for r in recs]), cfg.particles)
    run.meta["drift_ratio"] = [float(np.nanmax(r)) if r.size else math.nan for r in drift]
    for message in _monte_carlo_warnings(run, drift, cfg.particles):
        warnings.warn(message, MonteCarloWarning, stacklevel=2)
    return run


def _drift_ratios(run: Run, spread: np.ndarray, n: int) -> np.ndarray:
    """Per layer and step, the variance between groups of the mean over training inputs
    of E_N[(Z^{h^l_t})²], over the sampling variance of one group's estimate, spread/n.

    About 1 at step 0; errors carried through training raise it. (L, T+1); empty
    with fewer than 2 groups.

    Parameters
    ----------
    spread : (G, L, T+1) per-particle variance of the mean over training inputs of (Z^{h^l_t})².
    """
    if run.groups < 2:
        return np.zeros((run.model.depth, 0))
    m = run.m
    norms = np.stack([np.einsum("gtaa->gta", run.kernels[f"h{l}"][:, :, :m, :m]).mean(axis=2)
                      for l in range(1, run.model.depth + 1)], axis=1)  # (G, L, T+1)
    return norms.var(axis=0, ddof=1) / (spread.mean(axis=0) / n)


def _monte_carlo_warnings(run: Run, drift: np.ndarray, n: int) -> list[str]:
    """Warnings for Monte Carlo trouble (maths §3), each naming the step and what to change.

    * Directions: a basis of K directions for n particles per group makes Stein
      estimates noisy once K/n is not small; warn past K > n/10.
    * Drift: at step t, the groups' estimates of E[(Z^{h^l_t})²] (mean over training
      inputs) should differ by sampling noise propagated through training. Warn when
      their variance exceeds ``DRIFT_LIMIT`` times the sampling variance of one group
      (:func:`_drift_ratios`): the groups then follow different trajectories.
    """
    out = []
    for key in sorted(k for k in run.bases if k.startswith("size_")):
        size = run.bases[key]
        over = np.argwhere(size > n / 10)
        if over.size:
            out.append(f"the {key[5:8]} Gaussian basis of W^{key[8:]} held {int(size.max())} directions for {n} "
                       f"particles per group (from step {int(over[:, 1].min())}): Stein estimates are noisy unless "
                       "particles/groups >> directions; use more particles, fewer groups or a larger basis_tol")
    for l, ratio in enumerate(drift, start=1):
        bad = np.flatnonzero(ratio > DRIFT_LIMIT)
        if bad.size:
            out.append(f"the groups' layer-{l} feature norms drift apart from step {int(bad[0])} "
                       f"({ratio[bad[0]]:.0f}x the sampling variance): Monte Carlo errors grow through training; "
                       "use more particles per group")
    return out


def _run_group(model, X, X_all, y, batches, cfg, g, caps, budget, steps, bar, on_step=None) -> _Recorder:
    """Simulate group g over all steps and record its trajectory."""
    m, M = X.shape[0], X_all.shape[0]
    state = _Group(model, X, X_all, cfg, g, caps, budget)
    rec = _Recorder(model.depth, steps, m, M, cfg.record_steps)
    try:
        for t in range(steps + 1):
            _step(state, rec, t, steps, model, y, batches, cfg, g)
            bar.update(1)
            if on_step is not None:
                on_step(g, t)
    except ResourceError as exc:
        raise ResourceError(f"{exc} (group {g}, step {t})") from None
    finally:
        budget.release(sum(layer.nbytes for layer in state.hidden))
    return rec


def _step(state: _Group, rec: _Recorder, t: int, steps: int, model: MLP, y, batches, cfg: _Config,
          g: int) -> None:
    """Step t of one group: forward pass and f̊_t, then (t < T) backward pass and update."""
    m = state.m
    hs, xs, dxs, novelty, dropped = state.forward(t)
    f = state.readout(xs[-1])
    with np.errstate(over="ignore", invalid="ignore"):  # reported just below
        loss = total_loss(model, f[:m], y)
    if not (np.all(np.isfinite(f)) and np.isfinite(loss)):
        raise DivergenceError(
            f"f̊ or the loss became non-finite at step {t} (group {g}); the run diverges: use a smaller lr "
            f"(now {model.lr}) or lr_mult"
        )
    rec.outputs[t], rec.loss[t] = f, loss
    rec.features(t, hs, xs)
    rec.novel(t, novelty, dropped)
    if t < steps:
        batch = batches[t]
        chi = error_signal(model, f[:m], y, batch)  # χ̊_{t,i}
        rec.chi[t] = chi
        dhs, bnovelty, bdropped = state.backward(batch, dxs)
        rec.gradients(t, batch, dhs)
        rec.novel(t, bnovelty, bdropped, batch)
        state.update(batch, chi, xs[-1], dhs[0])
    rec.check_bases(t, state.hidden, t % CHECK_EVERY == 0 or t == steps)
