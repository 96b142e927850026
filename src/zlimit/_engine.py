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

import concurrent.futures
import contextlib
import dataclasses
import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.special
import scipy.stats.qmc
from threadpoolctl import threadpool_limits

from ._checkpoint import Session, Stopped, hook_step, restore_into, resume, stop_on_sigint
from ._errors import DivergenceError, MonteCarloWarning, NumericalError, ResourceError
from ._gaussian import ORTHOGONALITY_LIMIT, GaussianBasis, MemoryBudget
from ._kernels import apply_pair, fill_normals, stream_key
from ._memory import BASELINE_BYTES, available_memory, process_rss, record_bytes
from ._driver import Backward, Forward, Recorder, assemble, diverged, moment_sums, run_sgd
from ._model import MLP, accumulate
from ._progress import bar as progress_bar
from ._mpi import Shard, abort, agree_arguments, group_comms, node_ranks, split, threads_allowed
from ._keys import key
from ._results import Run

__all__ = ["simulate_mc", "memory_need", "preflight", "initial_features"]

#: warn when the groups' feature norms vary this many times more than sampling allows
DRIFT_LIMIT = 1000.0

_EVAL_LABEL = 1 << 40  # stream labels of temporary (evaluation) directions
_INPUT, _READOUT, _QMC, _BIAS = 2, 3, 4, 5  # stream labels of the input-layer, readout and bias normals


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

    @classmethod
    def of(cls, s) -> _Config:
        """The per-group view of :class:`zlimit._api.LimitSettings` ``s``."""
        return cls(s.particles // s.groups, s.groups, s.seed, s.basis_tol, s.dtype, s.gradient_independence,
                   s.record_steps, s.qmc)


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

    Momentum and weight decay (maths §6): W^l_t = ρ^t W^l_0 − (η_l/n) A_l, so the W^l_0
    part of both passes, Ẑ + Ż, is scaled by ρ^t (``decay_t``), and A_l is an
    accumulator with a velocity ``VA`` (:func:`zlimit._model.accumulate`).
    """

    def __init__(self, layer: int, model: MLP, cfg: _Config, group: int, caps: tuple[int, int, int],
                 budget: MemoryBudget, shard: Shard):
        self.layer = layer
        self.sigma = model.sigma[layer - 1]
        self.eta = model.eta[layer - 1]
        self.beta, self.rho = model.momentum, model.decay
        self.VA = np.zeros((0, 0)) if self.beta else None  # the velocity of A_l
        key = (cfg.seed, group, layer)
        k_cap, j_cap, initial = caps
        basis = lambda cap, side: GaussianBasis(shard, cap, self.sigma, cfg.tol, cfg.dtype, key + (side,), budget,
                                                initial)
        self.fwd, self.bwd = basis(k_cap, 0), basis(j_cap, 1)
        self.A = np.zeros((0, 0))
        self.S_bf, self.S_fb = np.zeros((0, 0)), np.zeros((0, 0))
        self.stein = not cfg.gradient_independence
        self.coords_x: np.ndarray | None = None  # (K, m) coords of this step's x^{l-1}(train)
        self.coords_dh: np.ndarray | None = None  # (J, b) coords of this step's dh^l(batch)

    def forward(self, x: np.ndarray, m: int, eval_labels, decay_t: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Z^{h^l_t(ξ_a)} = ρ^t (Ẑ^{W^l x} + Ż^{W^l x}) − η_l Σ χ Z^{dh^l_s} E[Z^{x_s} Z^x] (maths §2, §6).

        Parameters
        ----------
        x : (M, N) Z^{x^{l-1}_t(ξ_a)}, training rows first.
        m : number of training rows; only they enter the basis.
        decay_t : ρ^t (1 without weight decay).

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
            D += (decay_t * self.sigma) * (self.bwd.stein(x) - _padded_product(self.S_bf, C, J))
        if decay_t != 1.0:
            h *= decay_t
        if self.bwd.size:
            h += self.bwd.combine(D)
        return h, rho, dropped

    def backward(self, dh: np.ndarray, decay_t: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Z^{dx^{l-1}_t(ξ_i)} = ρ^t (Ẑ^{W^{lT} dh} + Ż^{W^{lT} dh}) − η_l Σ χ Z^{x_s} E[Z^{dh_s} Z^{dh}] (maths §2, §6).

        Parameters
        ----------
        dh : (b, N) Z^{dh^l_t(ξ_i)} for i in the batch (error-weighted with k > 1 outputs).
        decay_t : ρ^t (1 without weight decay).

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
            E += (decay_t * self.sigma) * (self.fwd.stein(dh) - _padded_product(self.S_fb, Cb, K))
        if decay_t != 1.0:
            Zhat *= decay_t
        dx = Zhat + self.fwd.combine(E)
        return dx, rho, dropped

    def _opened_forward(self, K0: int) -> None:
        """New forward directions K0..K: rows E_N[g_k Z^{v_j}] of S_fb (every v_j is older);
        S_bf gets zero columns (each γ_j is older than them, so not independent)."""
        if not self.stein or self.fwd.size == K0:
            return
        new = self.fwd.shard.gram(self.fwd.g[K0:], self.bwd.u)
        self.S_fb = np.vstack([np.pad(self.S_fb, ((0, 0), (0, self.bwd.size - self.S_fb.shape[1]))), new])
        self.S_bf = np.pad(self.S_bf, ((0, self.bwd.size - self.S_bf.shape[0]), (0, self.fwd.size - self.S_bf.shape[1])))

    def _opened_backward(self, J0: int) -> None:
        """New backward directions J0..J: rows E_N[γ_j Z^{u_k}] of S_bf (every u_k is as old
        or older); S_fb gets zero columns."""
        if not self.stein or self.bwd.size == J0:
            return
        new = self.bwd.shard.gram(self.bwd.g[J0:], self.fwd.u)
        self.S_bf = np.vstack([np.pad(self.S_bf, ((0, 0), (0, self.fwd.size - self.S_bf.shape[1]))), new])
        self.S_fb = np.pad(self.S_fb, ((0, self.fwd.size - self.S_fb.shape[0]), (0, self.bwd.size - self.S_fb.shape[1])))

    def accumulate(self, weights: np.ndarray, batch: np.ndarray) -> None:
        """A_l += Σ_{i∈B_t} χ_{t,i} coords(dh^l_t(ξ_i)) coords(x^{l-1}_t(ξ_i))ᵀ, with momentum
        and decay V_A ← β V_A + that term, A_l ← ρ A_l + V_A (maths §6).

        Maths §3's operator D_l = Σ χ Z^{dh_s} ⊗ coords(x_s), stored factored as
        D_l = V A_l (V the backward basis, (J, N)): A_l is (J, K), not (N, K).
        ``weights`` (b,) are χ_{t,i} (k = 1), or ones for the error-weighted dh of k > 1.
        """
        Cb, Cx = self.coords_dh, self.coords_x[:, batch]
        J, K = Cb.shape[0], Cx.shape[0]
        if self.A.shape != (J, K):  # the bases grew: pad A (and its velocity) with zeros
            pad = lambda a: np.pad(a, ((0, J - a.shape[0]), (0, K - a.shape[1])))
            self.A = pad(self.A)
            self.VA = None if self.VA is None else pad(self.VA)
        accumulate(self.A, self.VA, (Cb * weights) @ Cx.T, self.beta, self.rho)

    @property
    def nbytes(self) -> int:
        return self.fwd.nbytes + self.bwd.nbytes

    def snapshot(self) -> dict[str, np.ndarray]:
        """The layer's state between steps: both bases (their normals are redrawn on
        restore), their storage sizes, A_l and the Stein cross moments."""
        out = {"A": self.A, "S_bf": self.S_bf, "S_fb": self.S_fb}
        if self.VA is not None:
            out["VA"] = self.VA
        for side, basis in (("fwd", self.fwd), ("bwd", self.bwd)):
            out[side], out[f"{side}_rows"] = basis.u, np.array(basis.basis.shape[0])
        return out

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Take back a :meth:`snapshot` of the same run."""
        for side in ("fwd", "bwd"):
            getattr(self, side).restore(arrays[side], int(arrays[f"{side}_rows"]))
        self.A, self.S_bf, self.S_fb = (np.array(arrays[k], dtype=np.float64) for k in ("A", "S_bf", "S_fb"))
        if self.VA is not None:
            self.VA = np.array(arrays["VA"], dtype=np.float64)


def _padded_product(A: np.ndarray, C: np.ndarray, rows: int) -> np.ndarray:
    """A C[:A.shape[1]], padded with zero rows to ``rows``: directions newer than A's
    last update have no entry in it. A (J', K'), C (K, b) with K >= K'; returns (rows, b)."""
    out = np.zeros((rows, C.shape[1]))
    out[: A.shape[0]] = A @ C[: A.shape[1]]
    return out


def _base_normals(rows: int, k: int, shard: Shard, dtype, cfg: _Config, group: int) -> np.ndarray:
    """The normals behind Z^{h^1_0} and Z^{Ŵ^c_0} of this shard's particles, shape
    (rows + k, shard.local) (maths §2, §6).

    Rows 0..rows−1 become Z^{h^1_0(ξ_a)} (Cov = σ_1² ξ_a·ξ_b/d, through the QR factor
    of Ξᵀ); the last k rows become Z^{Ŵ^c_0} ~ N(0, σ_{L+1}²), c = 1..k, independent of
    the rest and of each other.
    Counter-based by default; with ``cfg.qmc`` a scrambled Sobol sequence mapped by the
    normal quantile (randomised quasi-Monte Carlo: unbiased, with one independent
    scramble per group, so the groups stay independent and the standard errors honest).
    Either way particle p gets the same numbers whichever process holds it.
    """
    if cfg.qmc:
        rng = np.random.default_rng(int(stream_key(cfg.seed, group, 0, _INPUT, _QMC)))
        sobol = scipy.stats.qmc.Sobol(d=rows + k, scramble=True, seed=rng)
        if shard.lo:  # points lo..hi−1 of the group's sequence (another MPI rank drew the first lo)
            sobol.fast_forward(shard.lo)
            u = sobol.random(shard.local)
        else:  # the first of 2^⌈log2 n⌉ balanced points (scipy warns when a sequence starts otherwise)
            u = sobol.random_base2(int(np.ceil(np.log2(shard.local))))[: shard.local]
        return scipy.special.ndtri(np.clip(u, 1e-300, 1 - 1e-16)).T.astype(dtype)
    g = np.empty((rows + k, shard.local), dtype=dtype)
    for j, row in enumerate(g[:rows]):
        fill_normals(row, stream_key(cfg.seed, group, 0, _INPUT, j), shard.lo)
    for c, row in enumerate(g[rows:]):  # class 0 keeps the stream of a single output
        fill_normals(row, stream_key(cfg.seed, group, 0, _READOUT, *((c,) if c else ())), shard.lo)
    return g


def _bias_normals(model: MLP, shard: Shard, dtype, cfg: _Config, group: int) -> list[np.ndarray]:
    """Z^{b^l_0} ~ N(0, σ_{b,l}²), l = 1..L, each from its own stream (maths §6); [] without biases."""
    if not model.has_bias:
        return []
    out = []
    for l in range(1, model.depth + 1):
        b = np.empty(shard.local, dtype=dtype)
        fill_normals(b, stream_key(cfg.seed, group, 0, _BIAS, l), shard.lo)
        b *= model.bias_sigma[l - 1]
        out.append(b)
    return out


class _Group:
    """One independent simulation of N/G particles: maths §2 for every step.

    A :class:`zlimit._driver.State`: :func:`zlimit._driver.run_sgd` calls
    :meth:`forward`, :meth:`backward` and :meth:`update` in turn. Features are
    particle arrays, one input per row, and E[Z Z'] is the particle mean.

    The extensions of maths §6: hidden biases Z^{b^l_t} (``b``, (N,) each) and the
    output bias (``b_out``, k numbers) are updated in place, b ← ρ b − η_b V_B, as is
    Ŵ (``w``, (N,), or (k, N) with k > 1 outputs); P1 and each A_l are accumulators
    whose init parts are scaled by ρ^t in the forward and backward passes. Velocities
    (``v``) exist only with momentum.

    Over MPI (``comm``, the group's communicator) this process holds the particles of
    its :class:`zlimit._mpi.Shard`: N above is ``shard.local``, and every E_N is summed
    over the ranks.
    """

    exact_eval_cross = False  # evaluation directions are fresh at every step (see Recorder)

    def __init__(self, model: MLP, X: np.ndarray, X_all: np.ndarray, cfg: _Config, group: int,
                 caps: tuple[int, int, int], budget: MemoryBudget, comm=None):
        self.model, self.cfg = model, cfg
        self.label = f" (group {group})"
        self.m, self.M = X.shape[0], X_all.shape[0]
        self.shard = shard = Shard.of(cfg.particles, comm)
        n, dt = shard.local, cfg.dtype
        d = X.shape[1]
        # Z^{h^1_0(ξ_a)}: Cov = σ_1² ξ_a·ξ_b/d. QR of Ξᵀ with training columns first,
        # so training inputs use only the leading normals.
        R = np.linalg.qr(X_all.T, mode="r")
        k = model.outputs
        g = _base_normals(R.shape[0], k, shard, dt, cfg, group)  # input-layer normals, then Ŵ^c_0's
        with np.errstate(over="ignore", invalid="ignore"):  # huge inputs: DivergenceError at step 0 or 1
            self.h1_0 = ((model.sigma[0] / np.sqrt(d)) * R.T.astype(dt)) @ g[:-k]  # (M, N)
            self.K1 = X @ X_all.T / d  # (m, M): ξ_i·ξ_a/d
            self.w = model.sigma[-1] * (g[-1] if k == 1 else g[-k:])  # Z^{Ŵ^c_0} ~ N(0, σ_{L+1}²)
            self.b = _bias_normals(model, shard, dt, cfg, group)  # Z^{b^l_t}, l = 1..L (maths §6)
        self.P1 = np.zeros((self.m, n), dtype=dt)  # Σ_s χ_{s,i} Z^{dh^1_s(ξ_i)}
        self.b_out = np.zeros(k) if model.has_bias else None  # b^{L+1}_t, deterministic, from 0
        momentum = model.momentum > 0
        self.v = {name: np.zeros_like(a) for name, a in (("P1", self.P1), ("w", self.w), ("b_out", self.b_out),
                                                         *((f"b{l}", b) for l, b in enumerate(self.b, start=1)))
                  if momentum and a is not None}
        self.hidden = [_HiddenLayer(l, model, cfg, group, caps, budget, shard) for l in range(2, model.depth + 1)]
        self.readout_0: np.ndarray | None = None  # E_N[Ŵ_0 x^L_0], the control variate of §3
        self.decay_t = 1.0  # ρ^t of the step being run
        self.t = -1
        self.hs = self.xs = self.dxs = self.dhs = None  # this step's features, for backward and update

    def gram(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """E_N[Z^a Z^b'] over the group's particles (all ranks'), (r, s)."""
        return self.shard.gram(a, b)

    def forward(self, t: int) -> Forward:
        """Forward pass at step t for all M inputs (maths §2, "Forward pass").

        Z^{h^1_t(ξ_a)} = Z^{h^1_0(ξ_a)} − η_1 Σ_{s<t} Σ_i χ_{s,i} (ξ_i·ξ_a/d) Z^{dh^1_s(ξ_i)},
        Z^{x^l_t} = φ(Z^{h^l_t}), Z^{h^l_t} for l ≥ 2 by :meth:`_HiddenLayer.forward`, and
        f̊_t by :meth:`readout`. Keeps φ'(Z^{h^l_t}) for the backward pass.

        Returns
        -------
        Forward
            hs, xs (M, N) per layer; f (M,); novelty {l: (M,)} residual norms against
            the forward basis of W^l; dropped {l: (m,)} (‖ρ‖/‖x‖)² of training rows
            whose residual got no direction; moments (L, 2, M, 2), E_N[Z] and E_N|Z| of
            every h and x over the group's particles (all ranks': one reduction).

        Raises
        ------
        DivergenceError
            When a feature becomes non-finite (relu(NaN) = 0 would hide it from f̊).
        """
        phi, dphi = self.model.activation.phi, self.model.activation.dphi
        self.decay_t = decay_t = self.model.decay ** t  # ρ^t, the weight decay of the init parts (maths §6)
        # Z^{h^1_t} = ρ^t Z^{h^1_0} − η_1 Σ_{s<t} Σ_i χ_{s,i} (ξ_i·ξ_a/d) Z^{dh^1_s(ξ_i)} (+ Z^{b^1_t})
        h0 = self.h1_0 if decay_t == 1.0 else decay_t * self.h1_0
        h = h0 - (self.model.eta[0] * self.K1.T).astype(self.cfg.dtype) @ self.P1
        hs, xs, dxs, novelty, dropped = [], [], [], {}, {}
        for layer in [None] + self.hidden:
            if layer is not None:
                labels = [_EVAL_LABEL + t * self.M + j for j in range(self.M)]
                l = layer.layer
                h, novelty[l], dropped[l] = layer.forward(xs[-1], self.m, labels, decay_t)
            if self.b:
                h += self.b[len(hs)]  # Z^{h^l_t} gains Z^{b^l_t} (maths §6)
            if self.shard.any(not np.isfinite(h).all()):
                raise diverged(f"layer-{len(hs) + 1} features h", t, self, self.model)
            x, dx = np.empty_like(h), np.empty_like(h)
            apply_pair(phi, dphi, h, x, dx)  # Z^{x^l_t} = φ(Z^{h^l_t})
            hs.append(h), xs.append(x), dxs.append(dx)
        self.t, self.hs, self.xs, self.dxs = t, hs, xs, dxs
        moments = self.shard.sum(moment_sums(hs, xs)) / self.shard.n  # E_N[Z], E_N|Z|
        return Forward(hs, xs, self.readout(xs[-1]), novelty, dropped, moments)

    def readout(self, xL: np.ndarray) -> np.ndarray:
        """f̊^c_t(ξ_a) = E[Z^{Ŵ^c_t} Z^{x^L_t(ξ_a)}] − E_N[Ŵ^c_0 x^L_0] (the §3 control variate)
        + b^{L+1}_{t,c} (maths §6); (M,), or (M, k) with k > 1 outputs."""
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported by the driver
            raw = self.gram(xL, self.w)
        if self.readout_0 is None:
            self.readout_0 = raw.copy()
        f = raw - self.readout_0
        return f if self.b_out is None else f + (self.b_out[0] if self.model.outputs == 1 else self.b_out)

    def backward(self, batch: np.ndarray, chi: np.ndarray) -> Backward:
        """Backward pass for i ∈ B_t (maths §2, "Backward pass").

        Z^{dx^L_t(ξ_i)} = Z^{Ŵ_t} (k = 1), or the error-weighted Σ_c χ_{t,i,c} Z^{Ŵ^c_t}
        with k > 1 outputs (maths §6); Z^{dh^l_t} = Z^{dx^l_t} φ'(Z^{h^l_t}), and
        Z^{dx^{l−1}_t} for l ≥ 2 by :meth:`_HiddenLayer.backward`.

        Returns
        -------
        Backward
            dh kernels (b, b) per layer; novelty {l: (b,)} residual norms against the
            backward basis of W^l; dropped {l: (b,)} as in :meth:`forward`.
        """
        if self.model.outputs == 1:
            dx = np.broadcast_to(self.w, (len(batch), self.w.size))  # Z^{dx^L_t} = Z^{Ŵ_t}
        else:
            dx = chi[batch].astype(self.w.dtype) @ self.w  # Σ_c χ_{t,i,c} Z^{Ŵ^c_t}
        dhs, novelty, dropped = [None] * self.model.depth, {}, {}
        for l in range(self.model.depth, 0, -1):
            dh = dx * self.dxs[l - 1][batch]  # Z^{dh^l} = Z^{dx^l} φ'(Z^{h^l})
            dhs[l - 1] = dh
            if l >= 2:
                dx, novelty[l], dropped[l] = self.hidden[l - 2].backward(dh, self.decay_t)
        self.dhs = dhs
        return Backward([self.gram(dh, dh) for dh in dhs], novelty, dropped)

    def update(self, batch: np.ndarray, chi: np.ndarray) -> None:
        """Fold step t into the operators: Ŵ, the first-layer sum P1, each A_l and the biases.

        Z^{Ŵ_{t+1}} = Z^{Ŵ_t} − η_{L+1} Σ_i χ_{t,i} Z^{x^L_t(ξ_i)} (maths §2, backward pass);
        P1 += Σ_i χ_{t,i} Z^{dh^1_t(ξ_i)}, the sum the first-layer forward equation reads;
        A_l as in :meth:`_HiddenLayer.accumulate` (maths §3, the operator D_l = V A_l);
        Z^{b^l_{t+1}} = Z^{b^l_t} − η c_{b,l} Σ_i χ_{t,i} Z^{dh^l_t(ξ_i)} and
        b^{L+1}_{t+1,c} = b^{L+1}_{t,c} − η c_{b,L+1} Σ_i χ_{t,i,c} (maths §6). Each with
        momentum and decay by :func:`zlimit._model.accumulate`; with k > 1 outputs, χ ≡ 1
        in all but the readout and the output bias (it is inside dh).
        """
        beta, rho, eta_b = self.model.momentum, self.model.decay, self.model.bias_eta
        chi_b = chi[batch]
        weights = chi_b if self.model.outputs == 1 else np.ones(len(batch))
        step = lambda name, X, G, rows=slice(None): accumulate(X, self.v.get(name), G, beta, rho, rows)
        # Z^{Ŵ_{t+1}}, in place: Ŵ ← ρ Ŵ − η_{L+1} V_S
        step("w", self.w, -((self.model.eta[-1] * chi_b).T.astype(self.w.dtype) @ self.xs[-1][batch]))
        step("P1", self.P1, weights[:, None].astype(self.P1.dtype) * self.dhs[0], batch)
        for layer in self.hidden:
            layer.accumulate(weights, batch)
        for l, b in enumerate(self.b, start=1):  # Z^{b^l} ← ρ Z^{b^l} − η_b V_B
            step(f"b{l}", b, -(eta_b[l - 1] * weights).astype(b.dtype) @ self.dhs[l - 1])
        if self.b_out is not None:
            step("b_out", self.b_out, -eta_b[-1] * chi_b.sum(axis=0))

    @property
    def nbytes(self) -> int:
        """Bytes held by the Gaussian bases of this group's hidden matrices."""
        return sum(layer.nbytes for layer in self.hidden)

    def snapshot(self) -> dict[str, np.ndarray]:
        """The group's state after a step: Ŵ, the first-layer sum P1, the readout's
        control variate and each hidden layer's (:meth:`_HiddenLayer.snapshot`).
        Z^{h^1_0} and the input-layer normals are drawn again from the seed."""
        out = {"P1": self.P1, "w": self.w, "readout_0": self.readout_0}
        out.update((f"b{l}", b) for l, b in enumerate(self.b, start=1))
        if self.b_out is not None:
            out["b_out"] = self.b_out
        out.update((f"v/{name}", v) for name, v in self.v.items())
        for layer in self.hidden:
            out.update((f"W{layer.layer}/{k}", v) for k, v in layer.snapshot().items())
        return out

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Take back a :meth:`snapshot` of the same run (bit for bit)."""
        mine = {"P1": self.P1, "w": self.w, **{f"b{l}": b for l, b in enumerate(self.b, start=1)},
                **{f"v/{name}": v for name, v in self.v.items()}}
        if self.b_out is not None:
            mine["b_out"] = self.b_out
        restore_into(arrays, mine, "state")
        self.readout_0 = np.array(arrays["readout_0"], dtype=np.float64)
        for layer in self.hidden:
            prefix = f"W{layer.layer}/"
            layer.restore({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})


def initial_features(model: MLP, X_all: np.ndarray, cfg: _Config, group: int) -> tuple[list, list, list]:
    """Z^{h^l_0}, Z^{x^l_0} and φ'(Z^{h^l_0}) of group ``group`` for all inputs, (M, N) per layer.

    Step 0 of the μP limit is the initialisation, shared by every parametrization of
    maths §5 at n → ∞; the NTK limit (:mod:`zlimit._ntk`) reads its kernels from it.
    """
    M = X_all.shape[0]
    state = _Group(model, X_all, X_all, cfg, group, caps=(M, 1, M), budget=MemoryBudget(math.inf))
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite features raise DivergenceError
        fw = state.forward(0)
    return fw.hs, fw.xs, state.dxs


class _Monitor:
    """The engine's hook after each step of a group (``run_sgd``'s ``on_step``).

    Records the basis statistics of maths §3 into ``recorder.bases`` — ``size_``
    (directions held after the step), ``dropped_`` and ``dropped_mass_`` (filled by the
    recorder from each pass), ``orthogonality_`` (max|UUᵀ/N − I| where checked, NaN
    elsewhere) — and ``extras["spread"]``, per layer and step the per-particle variance
    of the mean over training inputs of (Z^{h^l_t})², for the drift check, and
    ``extras["peak_basis_bytes"]``. Every ``CHECK_EVERY`` steps and at the last it
    checks the bases' orthogonality. Then it advances the progress bar, calls the
    user's ``on_step(group, t)`` and meets the session at the step boundary
    (checkpoint and stop flag, :class:`zlimit._checkpoint.Session`).
    """

    def __init__(self, rec: Recorder, state: _Group, group: int, steps: int, bar, on_step, session: Session):
        self.group, self.steps, self.bar, self.on_step, self.session = group, steps, bar, on_step, session
        self.done = -1  # last completed step
        rec.extras["spread"] = np.full((state.model.depth, steps + 1), np.nan)
        rec.extras["peak_basis_bytes"] = np.zeros((), dtype=np.int64)
        for layer in state.hidden:
            for side in ("fwd", "bwd"):
                for stat in ("size", "dropped", "dropped_mass"):
                    rec.bases[key(side, layer.layer, stat)] = np.zeros(steps + 1)
                rec.bases[key(side, layer.layer, "orthogonality")] = np.full(steps + 1, np.nan)

    def __call__(self, t: int, state: _Group, rec: Recorder) -> None:
        for l, h in enumerate(state.hs):
            rec.extras["spread"][l, t] = state.shard.variance((h[: state.m] ** 2).mean(axis=0))
        self.check_bases(t, state.hidden, rec, t % CHECK_EVERY == 0 or t == self.steps)
        rec.extras["peak_basis_bytes"][()] = max(int(rec.extras["peak_basis_bytes"]), state.nbytes)
        self.done = t
        self.bar.update(1)
        hook_step(self.session, self.group, t, self.on_step)

    @staticmethod
    def check_bases(t: int, hidden: list, rec: Recorder, check: bool) -> None:
        """Basis sizes after step t and, when ``check``, the orthogonality invariant.

        Raises
        ------
        NumericalError
            When max|UUᵀ/N − I| on the newest directions exceeds ``ORTHOGONALITY_LIMIT``.
        """
        for layer in hidden:
            for side, basis in (("fwd", layer.fwd), ("bwd", layer.bwd)):
                rec.bases[key(side, layer.layer, "size")][t] = basis.size
                if check:
                    err = basis.orthogonality_error()
                    rec.bases[key(side, layer.layer, "orthogonality")][t] = err
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


def _memory_parts(model: MLP, m: int, M: int, steps: int, particles: int, groups: int, batch_total: int,
                  dtype, record_steps, ranks: int = 1) -> tuple[int, int, int]:
    """(bases at their initial size, other arrays) of one group on one of ``ranks`` MPI
    ranks, and the records of all groups (every rank keeps them).

    ``batch_total`` is Σ_t |B_t|. The basis capacities are those of :func:`_capacities`,
    computed from that total so that no index array need exist (any T and m).
    """
    n = particles // groups
    local = n if ranks == 1 else max(hi - lo for lo, hi in (split(n, r, ranks) for r in range(ranks)))
    item = np.dtype(dtype).itemsize
    k_cap, j_cap = min(m * (steps + 1), n), min(max(batch_total, 1), n)
    initial = min(max(k_cap, j_cap), _INITIAL_PER_INPUT * m)
    bases = (model.depth - 1) * 2 * (min(k_cap, initial) + min(j_cap, initial)) * local * item
    features = (4 * model.depth + 6) * M * local * item + 2 * model.depth * len(record_steps) * M * local * item
    features += _extension_rows(model, m) * local * item
    return bases, features, groups * record_bytes(model.depth, steps, M, len(record_steps))


def _extension_rows(model: MLP, m: int) -> int:
    """Particle rows the extensions of maths §6 add to a group: Ŵ^c beyond the first, the
    hidden biases, and with momentum the velocities of P1, Ŵ and the biases."""
    biases = model.depth if model.has_bias else 0
    velocities = m + model.outputs + biases if model.momentum else 0
    return model.outputs - 1 + biases + velocities


def memory_need(model: MLP, m: int, M: int, settings, batch_total: int, ranks: int = 1) -> tuple[int, int]:
    """Bytes a run needs at its start in a fresh process, and the part of them outside the growing bases.

    One group's simulation — the bases and normals of every hidden matrix (2 (K + J) N/G
    values each) at their initial size, the per-step feature arrays and the kept
    features — times the groups run at once, plus the records of all groups, plus
    :data:`zlimit._memory.BASELINE_BYTES` (interpreter, libraries and compiled kernels)
    in both numbers. ``batch_total`` is Σ_t |B_t|. Over ``ranks`` MPI ranks it is the
    need of one rank: its share N/(G R) of each group's particles, and all the records.
    """
    s = settings
    bases, features, records = _memory_parts(model, m, M, s.steps, s.particles, s.groups, batch_total, s.dtype,
                                             s.record_steps, ranks)
    live = min(s.threads, s.groups)
    fixed = live * features + records + BASELINE_BYTES
    return int(live * bases + fixed), int(fixed)


def preflight(model: MLP, data, settings, comm=None) -> tuple[float, int]:
    """Refuse a run that would not fit in memory; (bytes available, bytes outside the bases).

    The need of :func:`memory_need` is for a fresh process. This process already holds
    its resident size (:func:`zlimit._memory.process_rss`), which
    :func:`zlimit._memory.available_memory` does not count as available; the part of
    the baseline it covers is not needed again, so it is taken off both numbers (all of
    the baseline once the process holds at least that much).

    Over MPI (``comm``) the need is one rank's, the memory available to a rank is its
    machine's divided among the ranks on that machine, and the verdict is collective:
    when any rank is short, every rank raises, naming the rank with the least to spare.

    Raises
    ------
    ResourceError
        When the run needs more than 80 % of the memory available now.
    """
    ranks = 1 if comm is None else comm.Get_size()
    need, fixed = memory_need(model, data.m, data.M, settings, sum(len(b) for b in data.batches), ranks)
    resident = min(process_rss() or 0, BASELINE_BYTES)
    need, fixed = need - resident, fixed - resident
    have = available_memory() / node_ranks(comm)
    verdict = (need / max(have, 1.0), need, have)
    verdicts = [verdict] if comm is None else comm.allgather(verdict)
    rank = int(np.argmax([v[0] for v in verdicts]))
    ratio, worst_need, worst_have = verdicts[rank]
    if ratio > 0.8:
        where = "" if comm is None else f" on MPI rank {rank} of {ranks} (memory is per rank)"
        raise ResourceError(
            f"this run needs about {worst_need / 2**30:.1f} GiB at its start but {worst_have / 2**30:.1f} GiB is "
            f"available{where}; use fewer particles{', more ranks' if comm is not None else ''}, more groups "
            "(memory is per group), threads=1, fewer steps, or dtype='float32'"
        )
    return have, fixed


def simulate_mc(model: MLP, data, settings, on_step=None, checkpoint=None, comm=None) -> Run | None:
    """The Monte Carlo μP limit (maths §2–§3): G independent groups on worker threads.

    Called by :func:`zlimit.simulate` with validated ``data`` (:class:`zlimit._api.Data`),
    ``settings`` (:class:`zlimit._api.LimitSettings`), ``checkpoint``
    (:class:`zlimit._checkpoint.Checkpoint` or None) and ``comm`` (a checked mpi4py
    communicator or None); see it for the parameters, the errors and the warnings.
    Over MPI each group's particles are split over the ranks (:mod:`zlimit._mpi`):
    rank 0 returns the Run, with the progress bar and the warnings, and the other
    ranks return None.
    """
    s = settings
    m, M, steps, batches = data.m, data.M, s.steps, list(data.batches)
    cfg = _Config.of(s)
    if comm is not None:  # threads and progress may differ between ranks: they change no number
        agree_arguments(comm, model.describe(), dataclasses.replace(s, threads=1, progress=False), data.X, data.y,
                        data.X_eval, *data.batches)
        if not threads_allowed(comm):
            s = dataclasses.replace(s, threads=1)
    lead = comm is None or comm.Get_rank() == 0
    have, fixed = preflight(model, data, s, comm)
    budget = MemoryBudget(0.8 * have - fixed)
    live = min(s.threads, s.groups)
    caps = _capacities(m, batches, steps, cfg.particles)
    X_all = data.X_all
    session = Session(checkpoint)
    comms = group_comms(comm, s.groups)
    run_group = lambda g: _run_group(model, data.X, X_all, data.y, batches, cfg, g, caps, budget, steps, bar, on_step,
                                     session, comms[g])
    try:
        with progress_bar(total=s.groups * (steps + 1), progress=s.progress and lead, desc="zlimit.simulate",
                          unit="step") as bar, threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(live) as pool, \
                stop_on_sigint(session) if comm is None else contextlib.nullcontext():
            futures = [pool.submit(run_group, g) for g in range(s.groups)]
            try:
                concurrent.futures.wait(futures)
            except BaseException as exc:  # Ctrl-C over MPI: the other ranks cannot be stopped between steps
                if comm is not None:
                    abort(comm, exc, 130 if isinstance(exc, KeyboardInterrupt) else 1)
                raise
        recs = session.results(futures)
    finally:
        for c in comms:
            if c is not None:
                c.Free()
    if not lead:
        return None
    meta = {"kind": "limit", "method": "mc", "parametrization": "mup", "seed": s.seed, "steps": steps, "m": m,
            "m_eval": M - m, "particles": cfg.particles * s.groups, "groups": s.groups, "dtype": s.dtype.name,
            "gradient_independence": s.gradient_independence, "basis_tol": s.basis_tol, "qmc": s.qmc,
            "peak_basis_bytes": max(int(r.extras["peak_basis_bytes"]) for r in recs)}
    if comm is not None:
        meta["ranks"] = comm.Get_size()
    run = assemble(model, meta, recs)
    with np.errstate(all="ignore"):  # features near the float range overflow their squares: NaN ratios
        drift = _drift_ratios(run, np.stack([r.extras["spread"] for r in recs]), cfg.particles)
    run.meta["drift_ratio"] = [float(np.nanmax(r)) if np.isfinite(r).any() else math.nan for r in drift]
    for message in _monte_carlo_warnings(run, drift, cfg.particles):
        warnings.warn(message, MonteCarloWarning, stacklevel=3)
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
    norms = np.stack([np.einsum("gtaa->gta", run.kernel_groups(l, "h")[:, :, :m, :m]).mean(axis=2)
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
    for l, side in ((l, side) for l in range(2, run.model.depth + 1) for side in ("fwd", "bwd")):
        size = run.bases[key(side, l, "size")]
        over = np.argwhere(size > n / 10)
        if over.size:
            out.append(f"the {side} Gaussian basis of W^{l} held {int(size.max())} directions for {n} "
                       f"particles per group (from step {int(over[:, 1].min())}): Stein estimates are noisy unless "
                       "particles/groups >> directions; use more particles, fewer groups or a larger basis_tol")
    for l, ratio in enumerate(drift, start=1):
        bad = np.flatnonzero(ratio > DRIFT_LIMIT)
        if bad.size:
            out.append(f"the groups' layer-{l} feature norms drift apart from step {int(bad[0])} "
                       f"({ratio[bad[0]]:.0f}x the sampling variance): Monte Carlo errors grow through training; "
                       "use more particles per group")
    return out


#: errors that every rank of an MPI run raises at the same point: they are decided on
#: reduced numbers (:mod:`zlimit._mpi`), so no rank is left waiting in a collective
_COLLECTIVE = (DivergenceError, NumericalError, ResourceError)


def _run_group(model, X, X_all, y, batches, cfg, g, caps, budget, steps, bar, on_step, session,
               comm=None) -> Recorder:
    """Simulate group g over all steps with :func:`zlimit._driver.run_sgd` and record its
    trajectory, resuming from the session's checkpoint where it has the group.

    Over MPI (``comm``, the group's communicator) an error that every rank raises
    together propagates, and the other groups go on (stopping them here and not on
    another rank would leave that rank waiting); any other error ends every rank
    (:func:`zlimit._mpi.abort`).
    """
    rec = Recorder(model.depth, steps, X.shape[0], X_all.shape[0], cfg.record_steps, processes=True,
                   outputs=model.outputs)
    state = monitor = None
    try:
        stored = session.begin(g)
        if stored is not None and stored[0] == steps:  # completed before: its record is final
            session.running(g, None, rec, resume(session, g, None, rec, stored))
            bar.update(steps + 1)
        else:
            state = _Group(model, X, X_all, cfg, g, caps, budget, comm)
            monitor = _Monitor(rec, state, g, steps, bar, on_step, session)
            if stored is not None:
                monitor.done = resume(session, g, state, rec, stored)
            session.running(g, state, rec, monitor.done)
            bar.update(monitor.done + 1)
            with np.errstate(over="ignore", invalid="ignore"):  # every recorded quantity is checked
                run_sgd(state, model, y, batches, steps, rec, monitor, start=monitor.done + 1)
        session.finish(g)
        return rec
    except Stopped:
        raise
    except ResourceError as exc:
        if comm is None:
            session.fail(g)
        raise ResourceError(f"{exc} (group {g}, step {monitor.done + 1 if monitor else 0})") from None
    except _COLLECTIVE:
        if comm is None:
            session.fail(g)
        raise
    except BaseException as exc:
        if comm is not None:
            abort(comm, exc)
        session.fail(g)
        raise
    finally:
        if state is not None:
            budget.release(state.nbytes)
