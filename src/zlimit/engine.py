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

from .errors import DivergenceError, ResourceError
from .gaussian import GaussianBasis
from .kernels import apply_pair, fill_normals, stream_key
from .model import MLP, check_batches, check_data, error_signal, total_loss
from .results import Run

__all__ = ["simulate", "estimate_memory"]

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


class _HiddenLayer:
    """The two Gaussian processes of a hidden matrix W^l and its update operator.

    The §3 operator D_l = Σ_{s,i} χ_{s,i} Z^{dh^l_s(ξ_i)} ⊗ coords(x^{l-1}_s(ξ_i))
    factors as V A_l, with V the backward basis and A_l (J×K) accumulating
    χ_{s,i} coords_V(dh^l_s(ξ_i)) coords_U(x^{l-1}_s(ξ_i))ᵀ. Then the update terms
    of §2 are −η_l V (A_l c) forward and −η_l U (A_lᵀ b) backward, for c = E[Z^U Z^x]
    and b = E[Z^V Z^y].
    """

    def __init__(self, layer: int, model: MLP, cfg: _Config, group: int, k_cap: int, j_cap: int):
        self.layer = layer
        self.sigma = model.sigma[layer - 1]
        self.eta = model.eta[layer - 1]
        key = (cfg.seed, group, layer)
        self.fwd = GaussianBasis(cfg.particles, k_cap, self.sigma, cfg.tol, cfg.dtype, key + (0,))
        self.bwd = GaussianBasis(cfg.particles, j_cap, self.sigma, cfg.tol, cfg.dtype, key + (1,))
        self.A = np.zeros((j_cap, k_cap))
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
        """
        C_train, rho_train = self.fwd.add(x[:m])
        parts, coords, rho = [self.fwd.sample(C_train)], [C_train], [rho_train]
        if x.shape[0] > m:
            K = self.fwd.size
            Zhat, C_eval, rho_eval = self.fwd.sample_detached(x[m:], eval_labels)
            parts.append(Zhat)
            coords.append(C_eval[:K])
            rho.append(rho_eval)
        C = np.hstack(coords)
        self.coords_x = C_train
        J, K = self.bwd.size, self.fwd.size
        D = -self.eta * (self.A[:J, :K] @ C)  # update term, on the backward basis
        if self.stein:  # Ż^{W x} = σ Σ_j Z^{v_j} E[γ_j Z^x], backward vectors of steps < t
            D += self.sigma * self.bwd.stein(x)
        h = np.vstack(parts)
        if J:
            h += self.bwd.combine(D)
        return h, np.concatenate(rho)

    def backward(self, dh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Z^{dx^{l-1}_t(ξ_i)} = Ẑ^{W^{lT} dh} + Ż^{W^{lT} dh} − η_l Σ χ Z^{x_s} E[Z^{dh_s} Z^{dh}] (maths §2).

        Parameters
        ----------
        dh : (b, N) Z^{dh^l_t(ξ_i)} for i in the batch.

        Returns
        -------
        dx : (b, N)
        rho : (b,) novelty of each row against the backward basis
        """
        Cb, rho = self.bwd.add(dh)
        self.coords_dh = Cb
        J, K = self.bwd.size, self.fwd.size
        E = -self.eta * (self.A[:J, :K].T @ Cb)
        if self.stein:  # Ż^{W^T y} = σ Σ_k Z^{u_k} E[g_k Z^y], forward vectors of steps <= t
            E += self.sigma * self.fwd.stein(dh)
        dx = self.bwd.sample(Cb) + self.fwd.combine(E)
        return dx, rho

    def accumulate(self, chi_batch: np.ndarray, batch: np.ndarray) -> None:
        """A_l += Σ_{i∈B_t} χ_{t,i} coords(dh^l_t(ξ_i)) coords(x^{l-1}_t(ξ_i))ᵀ.

        Maths §3's operator D_l = Σ χ Z^{dh_s} ⊗ coords(x_s), stored factored as
        D_l = V A_l (V the backward basis, (J, N)): A_l is (J, K), not (N, K).
        """
        Cb, Cx = self.coords_dh, self.coords_x[:, batch]
        self.A[: Cb.shape[0], : Cx.shape[0]] += (Cb * chi_batch) @ Cx.T


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
                 k_cap: int, j_cap: int):
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
        self.hidden = [_HiddenLayer(l, model, cfg, group, k_cap, j_cap) for l in range(2, model.depth + 1)]
        self.readout_0: np.ndarray | None = None  # E_N[Ŵ_0 x^L_0], the control variate of §3

    def forward(self, t: int) -> tuple[list, list, list, dict]:
        """Forward pass at step t for all M inputs (maths §2, "Forward pass").

        Z^{h^1_t(ξ_a)} = Z^{h^1_0(ξ_a)} − η_1 Σ_{s<t} Σ_i χ_{s,i} (ξ_i·ξ_a/d) Z^{dh^1_s(ξ_i)},
        Z^{x^l_t} = φ(Z^{h^l_t}), and Z^{h^l_t} for l ≥ 2 by :meth:`_HiddenLayer.forward`.

        Returns
        -------
        hs, xs, dxs : lists of L arrays (M, N): Z^{h^l_t}, Z^{x^l_t}, φ'(Z^{h^l_t})
        novelty : {"fwd<l>": (M,)} residual norms against the forward bases
        """
        phi, dphi = self.model.activation.phi, self.model.activation.dphi
        # Z^{h^1_t} = Z^{h^1_0} − η_1 Σ_{s<t} Σ_i χ_{s,i} (ξ_i·ξ_a/d) Z^{dh^1_s(ξ_i)}
        h = self.h1_0 - (self.model.eta[0] * self.K1.T).astype(self.cfg.dtype) @ self.P1
        hs, xs, dxs, novelty = [], [], [], {}
        for layer in [None] + self.hidden:
            if layer is not None:
                labels = [_EVAL_LABEL + t * self.M + j for j in range(self.M)]
                h, novelty[f"fwd{layer.layer}"] = layer.forward(xs[-1], self.m, labels)
            x, dx = np.empty_like(h), np.empty_like(h)
            apply_pair(phi, dphi, h, x, dx)  # Z^{x^l_t} = φ(Z^{h^l_t})
            hs.append(h), xs.append(x), dxs.append(dx)
        return hs, xs, dxs, novelty

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
        """
        dx = np.broadcast_to(self.w, (len(batch), self.w.size))  # Z^{dx^L_t} = Z^{Ŵ_t}
        dhs, novelty = [None] * self.model.depth, {}
        for l in range(self.model.depth, 0, -1):
            dh = dx * dxs[l - 1][batch]  # Z^{dh^l} = Z^{dx^l} φ'(Z^{h^l})
            dhs[l - 1] = dh
            if l >= 2:
                dx, novelty[f"bwd{l}"] = self.hidden[l - 2].backward(dh)
        return dhs, novelty

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
    """

    def __init__(self, depth: int, steps: int, m: int, M: int, record_steps: tuple[int, ...]):
        self.record_steps, self.m = record_steps, m
        nan = np.nan
        self.outputs = np.full((steps + 1, M), nan)
        self.loss = np.full(steps + 1, nan)
        self.chi = np.zeros((steps, m))
        self.kernels, self.cross, self.novelty, self.kept = {}, {}, {}, {}
        for l in range(1, depth + 1):
            for kind in ("h", "x"):
                self.kernels[f"{kind}{l}"] = np.full((steps + 1, M, M), nan)
                self.cross[f"{kind}{l}"] = np.full((len(record_steps), steps + 1, M, M), nan)
            self.kernels[f"dh{l}"] = np.full((steps, m, m), nan)
            if l >= 2:
                self.novelty[f"fwd{l}"] = np.full((steps + 1, M), nan)
                self.novelty[f"bwd{l}"] = np.full((steps + 1, M), nan)

    @staticmethod
    def _gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T).astype(np.float64) / a.shape[1]

    def features(self, t: int, hs: list, xs: list) -> None:
        """E[Z Z'] at step t, and against the kept steps s <= t."""
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

    def novel(self, t: int, novelty: dict, batch: np.ndarray | None = None) -> None:
        for key, rho in novelty.items():
            if batch is None:
                self.novelty[key][t] = rho
            else:
                self.novelty[key][t, batch] = rho


def _capacities(m: int, batches: list, steps: int, particles: int) -> tuple[int, int]:
    """Largest basis sizes: m directions per forward pass, |B_t| per backward pass."""
    k_cap = m * (steps + 1)
    j_cap = int(sum(len(b) for b in batches))
    return min(k_cap, particles), min(max(j_cap, 1), particles)


def estimate_memory(model: MLP, m: int, M: int, steps: int, particles: int, groups: int,
                    batches: list, dtype="float64", record_steps=(0,), threads: int = 1) -> int:
    """Peak bytes of a run: one group's simulation times the groups run at once.

    Counts the bases and normals of every hidden matrix (2 (K + J) N/G values each),
    the operators A_l, the per-step feature arrays and the kept features.
    """
    n = particles // groups
    item = np.dtype(dtype).itemsize
    k_cap, j_cap = _capacities(m, batches, steps, n)
    bases = (model.depth - 1) * 2 * (k_cap + j_cap) * n * item
    operators = (model.depth - 1) * k_cap * j_cap * 8
    features = (4 * model.depth + 6) * M * n * item + 2 * model.depth * len(record_steps) * M * n * item
    records = 8 * (steps + 1) * M * M * model.depth * (3 + 2 * len(record_steps))
    return int(min(threads, groups) * (bases + operators + features) + groups * records)


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
    if not (isinstance(tol, (float, int)) and 0 <= tol < 1):
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
             qmc: bool = False) -> Run:
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
        A vector whose residual ‖ρ‖ is below basis_tol·‖x‖ adds no Gaussian direction.
        Default 1e-6 for float64 and 1e-2 for float32, whose round-off otherwise
        enters as spurious directions (measured on S1-like runs: float32 at 1e-6 is
        6 se off float64, at 1e-2 within 1 se). Larger values trade a small bias for
        speed: at 1e-3, float64 keeps 142 instead of 310 forward directions over 30
        steps, runs 1.8x faster, and moves f̊ by 0.4 se (``benchmarks/options.py``).
    record_steps : sequence of int
        Steps whose features are kept to give cross-step kernels (0 is always kept).
    threads : int, optional
        Groups simulated at once, on worker threads (default ``NUMBA_NUM_THREADS``).
        Memory grows with it; the numbers do not change.
    qmc : bool
        Draw the input-layer and readout Gaussians (Z^{h^1_0}, Z^{Ŵ_0}) by scrambled
        Sobol points (randomised QMC) instead of i.i.d.; a variance reduction that
        matters most for shallow nets (``docs/performance.md``).
    parametrization : {"mup", "ntk"}
        "ntk" gives the kernel limit of the same model for contrast (:mod:`zlimit.ntk`):
        features frozen at initialisation, f moved by kernel gradient descent.

    Returns
    -------
    Run
        ``outputs`` (T+1, M) f̊_t with ``outputs_se``, ``loss``, ``error_signals``,
        ``kernel(l, kind)`` and ``novelty`` (maths §3).

    Raises
    ------
    ValueError
        For invalid data or settings.
    ResourceError
        When the run would need more memory than the machine has.
    DivergenceError
        When f̊ becomes non-finite.

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
        from .exact import simulate_exact

        return simulate_exact(model, X, y, steps=steps, X_eval=X_eval, batches=batches,
                              record_steps=record_steps)
    if method != "mc":
        raise ValueError(f"method must be 'mc' or 'exact', got {method!r}")
    if parametrization not in ("mup", "ntk"):
        raise ValueError(f"parametrization must be 'mup' (the feature-learning limit) or 'ntk', got {parametrization!r}")
    X, y, X_eval = check_data(model, X, y, X_eval)
    batches = check_batches(batches, X.shape[0], steps)
    if basis_tol is None:
        basis_tol = 1e-2 if dtype in ("float32", np.float32) else 1e-6
    dt, record_steps = _check_settings(particles, groups, basis_tol, dtype, record_steps, steps)
    m, M = X.shape[0], X.shape[0] + X_eval.shape[0]
    cfg = _Config(particles // groups, groups, int(seed), float(basis_tol), dt,
                  bool(gradient_independence), record_steps, bool(qmc))
    threads = numba.config.NUMBA_NUM_THREADS if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    need = estimate_memory(model, m, M, steps, particles, groups, batches, dtype, record_steps, threads)
    have = _available_memory()
    if need > 0.8 * have:
        raise ResourceError(
            f"this run needs about {need / 2**30:.1f} GiB but {have / 2**30:.1f} GiB is available; "
            "use fewer particles, more groups (memory is per group), threads=1, fewer steps, or dtype='float32'"
        )
    k_cap, j_cap = _capacities(m, batches, steps, cfg.particles)
    if model.depth > 1 and max(k_cap, j_cap) > cfg.particles // 10:
        warnings.warn(
            f"up to {max(k_cap, j_cap)} Gaussian directions for {cfg.particles} particles per group: "
            "the Stein estimates of Ż are noisy unless particles/groups >> directions (maths §3)",
            stacklevel=2,
        )
    X_all = np.vstack([X, X_eval])
    if parametrization == "ntk":
        from .ntk import simulate_ntk

        return simulate_ntk(model, X, X_all, y, batches, steps, cfg, progress)
    run_group = lambda g: _run_group(model, X, X_all, y, batches, cfg, g, k_cap, j_cap, steps, bar)
    with tqdm(total=groups * (steps + 1), disable=not progress, desc="zlimit.simulate", unit="step") as bar, \
            threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(min(threads, groups)) as pool:
        recs = list(pool.map(run_group, range(groups)))
    meta = {"kind": "limit", "method": "mc", "seed": int(seed), "steps": int(steps), "m": m,
            "m_eval": M - m, "particles": int(particles), "groups": int(groups), "dtype": dt.name,
            "gradient_independence": bool(gradient_independence), "basis_tol": float(basis_tol),
            "qmc": bool(qmc)}
    stack = lambda name: {k: np.stack([getattr(r, name)[k] for r in recs]) for k in getattr(recs[0], name)}
    return Run(model=model, meta=meta,
               outputs_groups=np.stack([r.outputs for r in recs]),
               loss_groups=np.stack([r.loss for r in recs]),
               error_signals_groups=np.stack([r.chi for r in recs]),
               kernels=stack("kernels"), cross=stack("cross"), record_steps=record_steps,
               novelty=stack("novelty"))


def _run_group(model, X, X_all, y, batches, cfg, g, k_cap, j_cap, steps, bar) -> _Recorder:
    """Simulate group g over all steps and record its trajectory."""
    m, M = X.shape[0], X_all.shape[0]
    state = _Group(model, X, X_all, cfg, g, k_cap, j_cap)
    rec = _Recorder(model.depth, steps, m, M, cfg.record_steps)
    for t in range(steps + 1):
        hs, xs, dxs, novelty = state.forward(t)
        f = state.readout(xs[-1])
        if not np.all(np.isfinite(f)):
            raise DivergenceError(
                f"f̊ became non-finite at step {t} (group {g}); the run diverges: use a smaller lr "
                f"(now {model.lr}) or lr_mult"
            )
        rec.outputs[t], rec.loss[t] = f, total_loss(model, f[:m], y)
        rec.features(t, hs, xs)
        rec.novel(t, novelty)
        bar.update(1)
        if t == steps:
            break
        batch = batches[t]
        chi = error_signal(model, f[:m], y, batch)  # χ̊_{t,i}
        rec.chi[t] = chi
        dhs, bnovelty = state.backward(batch, dxs)
        rec.gradients(t, batch, dhs)
        rec.novel(t, bnovelty, batch)
        state.update(batch, chi, xs[-1], dhs[0])
    return rec
