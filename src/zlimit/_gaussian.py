"""The Gaussian processes Ẑ of a hidden matrix and their Stein Ż terms (maths §3).

A hidden matrix W^l carries two independent Gaussian processes: the forward one
Ẑ^{W^l x} over the vectors x it multiplies, and the backward one Ẑ^{W^{lT} y}.
:class:`GaussianBasis` is one of them. It keeps an orthonormal basis u_1..u_K of
the span of the vectors seen so far, in the empirical inner product
E_N[a b] = a·b / N, with one i.i.d. standard normal g_k per direction and particle.

Particle arrays are stored one vector per row: shape (K, N) for the basis and
normals, (b, N) for a batch of b vectors.
"""
from __future__ import annotations

import math
import threading

import numpy as np

from ._errors import ResourceError
from ._kernels import fill_normals, stream_key
from ._mpi import Shard

__all__ = ["GaussianBasis", "MemoryBudget", "empirical_gram", "project", "orthonormalise"]


#: Kahan–Parlett test (maths §3): a row is projected again unless ‖ρ‖ > ‖x‖/√2
REORTHOGONALISE_BELOW = 1 / math.sqrt(2)

#: the largest orthogonality error max|UUᵀ/N − I| a run accepts, by storage dtype
ORTHOGONALITY_LIMIT = {np.dtype(np.float64): 1e-8, np.dtype(np.float32): 1e-4}


def empirical_gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """E_N[Z^a Z^b'] = a bᵀ/N in float64 for particle rows a (r, N) and b (s, N): (r, s),
    all N particles in this process (:meth:`zlimit._mpi.Shard.gram` for a shard of them).

    >>> empirical_gram(np.ones((1, 4)), np.full((2, 4), 2.0)).tolist()
    [[2.0, 2.0]]
    """
    return Shard(a.shape[1]).gram(a, b)


def project(basis: np.ndarray, X: np.ndarray, mean: Shard | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Project the rows of X off the span of orthonormal ``basis`` rows (maths §3).

    Classical Gram–Schmidt with the Kahan–Parlett test ("twice is enough", maths §3):
    one pass leaves an orthogonality error of about E‖x‖/‖ρ‖ for a basis error E, so
    a row is projected a second time unless ‖ρ‖ > ‖x‖/√2. Late in training nearly
    every row cancels heavily and gets both passes; skipping the second one lets E
    compound by ‖x‖/‖ρ‖ per vector (the basis of W² lost orthogonality within 20 steps
    on the paper's problem with a 1e-4 threshold).

    The inner product is E[a b] = a·b/n, summed over the ranks that share the
    particles (``mean``, a :class:`zlimit._mpi.Shard`): the particle mean for particle
    rows (all N = X.shape[1] particles here, the default) and the dot product for the
    coefficient vectors of the exact linear engine (``Shard(1)``, :mod:`zlimit._exact`).
    ``basis`` may be narrower than X (its vectors are zero beyond its width w).

    Parameters
    ----------
    basis : (K, w) orthonormal rows u_k.
    X : (b, W) rows x, W >= w.
    mean : the inner product; ``Shard(X.shape[1])`` by default.

    Returns
    -------
    C : (K, b) coordinates E[u_k x]
    R : (b, W) residuals x − Σ_k C_k u_k

    Examples
    --------
    >>> U = np.array([[1.0, 0.0, 0.0]])
    >>> C, R = project(U, np.array([[2.0, 3.0, 0.0]]), Shard(1))
    >>> C.tolist(), R.tolist()
    ([[2.0]], [[0.0, 3.0, 0.0]])
    """
    mean = Shard(X.shape[1]) if mean is None else mean
    K, w = basis.shape
    R = X.copy()
    if K == 0:
        return np.zeros((0, X.shape[0]), dtype=X.dtype), R
    C = mean.sum(basis @ X[:, :w].T) / mean.n
    R[:, :w] -= C.T @ basis
    sq = mean.sum(np.stack([np.einsum("ip,ip->i", R, R), np.einsum("ip,ip->i", X, X)]))
    ratio2 = sq[0] / np.maximum(sq[1], np.finfo(float).tiny)
    again = np.flatnonzero(ratio2 < REORTHOGONALISE_BELOW ** 2)
    if again.size:
        C2 = mean.sum(basis @ R[again, :w].T) / mean.n
        R[again, :w] -= C2.T @ basis
        C[:, again] += C2
    return C, R


def orthonormalise(R: np.ndarray, tol: float, scale: np.ndarray,
                   mean: Shard | None = None) -> tuple[np.ndarray, ...]:
    """Modified Gram–Schmidt of the rows of R among themselves, in order (maths §3).

    Row j gets a new direction u = ρ_j/‖ρ_j‖ when its residual norm exceeds
    ``tol * scale[j]``. The inner product is ``mean`` as in :func:`project`.

    Parameters
    ----------
    R : (b, W) rows already orthogonal to any earlier basis.
    tol : relative tolerance on ‖ρ‖ = E[ρ²]^{1/2}.
    scale : (b,) the norms ‖x_j‖ of the original vectors.
    mean : the inner product; ``Shard(R.shape[1])`` by default.

    Returns
    -------
    Q : (k, W) new orthonormal directions, k <= b
    C : (k, b) coordinates of each row of R on Q (upper triangular in the kept rows)
    rho : (b,) residual norm ‖ρ_j‖ of each row before normalisation (maths §3)
    opened : (b,) bool, the rows that opened a direction

    Examples
    --------
    >>> Q, C, rho, opened = orthonormalise(np.array([[3.0, 0.0], [6.0, 0.0]]), 1e-10, np.array([3.0, 6.0]),
    ...                                    Shard(1))
    >>> Q.tolist(), rho.tolist(), opened.tolist()  # the second row is in the span of the first
    ([[1.0, 0.0]], [3.0, 0.0], [True, False])
    """
    b, width = R.shape
    mean = Shard(width) if mean is None else mean
    R = R.copy()
    Q = np.empty_like(R)
    C = np.zeros((b, b), dtype=np.float64)
    rho = np.zeros(b)
    opened = np.zeros(b, dtype=bool)
    k = 0
    for j in range(b):
        r = R[j]
        for _ in range(2):  # reorthogonalise against this batch's directions
            if k:
                c = mean.sum(Q[:k] @ r) / mean.n
                r -= c @ Q[:k]
                C[:k, j] += c
        rho[j] = np.sqrt(mean.sum(np.dot(r, r)) / mean.n)
        if rho[j] > tol * scale[j] and rho[j] > 0.0:
            Q[k] = r / rho[j]
            C[k, j] = rho[j]
            opened[j] = True
            k += 1
    return Q[:k], C[:k], rho, opened


class MemoryBudget:
    """Bytes that the growing bases of a run may hold together, shared by its threads.

    Bases start small and grow as directions are added (a converged run stops adding
    them), so the memory a run needs is known only as it runs. Every growth reserves
    its bytes here first; past ``limit`` the run stops with :class:`ResourceError`
    before the machine runs out. ``used`` and ``peak`` are in bytes.
    """

    def __init__(self, limit: float):
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._lock = threading.Lock()

    def reserve(self, nbytes: int, agree=bool) -> None:
        """Reserve ``nbytes``, or raise when they pass the limit. ``agree(over)`` turns this
        process's verdict into the shared one (over MPI: over on any rank, :meth:`Shard.any`)."""
        with self._lock:
            over = self.used + nbytes > self.limit
            if not over:
                self.used += nbytes
                self.peak = max(self.peak, self.used)
        if agree(over):
            if not over:
                self.release(nbytes)
            raise ResourceError(
                f"the Gaussian bases outgrew the memory this run may use ({self.limit / 2**30:.1f} GiB): "
                "use fewer particles per group, threads=1, fewer steps, a larger basis_tol or dtype='float32'")

    def release(self, nbytes: int) -> None:
        with self._lock:
            self.used -= nbytes


class GaussianBasis:
    """One Gaussian process of a hidden matrix, with its Gram–Schmidt basis.

    Parameters
    ----------
    shard : Shard
        The group's N particles, of which this process holds ``shard.local``
        (:class:`zlimit._mpi.Shard`; all N in a single process). Every array here is
        (·, shard.local), and every E_N is summed over the ranks.
    capacity : int
        Largest number of directions K this run can add.
    sigma : float
        σ_l, so that Cov(Ẑ^{Wx}, Ẑ^{Wx'}) = σ_l² E[Z^x Z^{x'}].
    tol : float
        Relative residual ‖ρ‖/‖x‖ below which a vector adds no direction.
    dtype : numpy dtype of the stored basis and normals.
    key : tuple of int
        Labels of this process's random streams (seed, group, layer, side).
    budget : MemoryBudget, optional
        Where storage growth is reserved (unlimited when None).
    initial : int
        Directions allocated up front; storage grows by half when they run out.
    """

    def __init__(self, shard: Shard, capacity: int, sigma: float, tol: float, dtype, key: tuple[int, ...],
                 budget: MemoryBudget | None = None, initial: int = 64):
        self.shard = shard
        self.n = shard.local  # particles stored here
        self.capacity = capacity
        self.sigma = sigma
        self.tol = tol
        self.key = key
        self.budget = budget if budget is not None else MemoryBudget(math.inf)
        rows = min(capacity, initial)
        self._reserve(2 * rows * self.n * np.dtype(dtype).itemsize)
        self.basis = np.empty((rows, self.n), dtype=dtype)
        self.normals = np.empty((rows, self.n), dtype=dtype)
        self.size = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the basis and its normals."""
        return self.basis.nbytes + self.normals.nbytes

    def _grow(self, rows: int) -> None:
        """Make room for ``rows`` directions: storage grows by half, within the budget."""
        if rows > self.capacity:
            raise RuntimeError("Gaussian basis capacity exceeded; this is a bug in the capacity estimate")
        if rows <= self.basis.shape[0]:
            return
        new = min(self.capacity, max(rows, self.basis.shape[0] * 3 // 2))
        self._reserve(2 * (new - self.basis.shape[0]) * self.n * self.basis.itemsize)
        for name in ("basis", "normals"):
            old = getattr(self, name)
            grown = np.empty((new, self.n), dtype=old.dtype)
            grown[: self.size] = old[: self.size]
            setattr(self, name, grown)

    def restore(self, u: np.ndarray, rows: int) -> None:
        """Take back the directions ``u`` (K, N) of a checkpoint, in storage of ``rows``
        directions as the run had. Their normals are drawn again from their streams:
        the same bits, without storing them."""
        K = u.shape[0]
        if not K <= rows <= self.capacity or u.shape[1] != self.n:
            raise ValueError(f"the checkpoint's basis of shape {u.shape} (storage {rows}) does not belong to this run")
        extra = rows - self.basis.shape[0]
        if extra > 0:
            self._reserve(2 * extra * self.n * self.basis.itemsize)
            self.basis = np.empty((rows, self.n), dtype=self.basis.dtype)
            self.normals = np.empty((rows, self.n), dtype=self.normals.dtype)
        self.basis[:K] = u
        self._fresh_normals(self.normals[:K], range(K))
        self.size = K

    # ----------------------------------------------------------------- views
    @property
    def u(self) -> np.ndarray:
        """Z^{u_k}, shape (K, N)."""
        return self.basis[: self.size]

    @property
    def g(self) -> np.ndarray:
        """g_k, shape (K, N)."""
        return self.normals[: self.size]

    def _reserve(self, nbytes: int) -> None:
        """Reserve storage in the budget; over MPI every rank raises when one is over."""
        self.budget.reserve(nbytes, self.shard.any)

    def _fresh_normals(self, out: np.ndarray, labels) -> None:
        for row, label in zip(out, labels):
            fill_normals(row, stream_key(*self.key, label), self.shard.lo)

    # ---------------------------------------------------------------- adding
    def add(self, X: np.ndarray, m: int | None = None, labels=None) -> tuple[np.ndarray, ...]:
        """Add the first m rows of X to the process and sample Ẑ for all rows.

        Implements the sampling step of maths §3: c_k = E[Z^x Z^{u_k}],
        ρ = Z^x − Σ c_k Z^{u_k}, and a new direction u_{K+1} = ρ/‖ρ‖ with a fresh
        normal when ‖ρ‖ exceeds the tolerance; Ẑ = σ (Σ_k c_k g_k + ‖ρ‖ g_{K+1}).
        Rows after the first m (evaluation inputs) are observed, not added: their
        residuals get temporary directions with fresh normals from the streams
        ``labels``, so their Ẑ has the exact joint law with every basis vector while
        nothing later reads the temporary normals. All rows share one projection
        on the existing basis (the costly pass over it).

        Parameters
        ----------
        X : (b, N) vectors Z^x.
        m : rows to add (default all).
        labels : stream labels of the temporary directions (b − m of them at most).

        Returns
        -------
        Zhat : (b, N) Ẑ of every row
        C : (K', b) coordinates of every row on the updated basis u_1..u_K'
        rho : (b,) residual norms ‖ρ‖ (observed rows: against the basis and the
            observed rows before them)
        dropped : (m,) (‖ρ‖/‖x‖)² of the added rows whose nonzero residual got no
            direction (their ρ is left out of Ẑ: the truncation of ``tol``), 0 for the others
        """
        b = X.shape[0]
        m = b if m is None else m
        K0 = self.size
        mean = self.shard
        scale = np.sqrt(mean.sum(np.einsum("ip,ip->i", X, X)) / mean.n)
        C_old, R = project(self.u, X, mean)
        Q, C_new, rho, opened = orthonormalise(R[:m], self.tol, scale[:m], mean)
        self._append(Q)
        with np.errstate(invalid="ignore", divide="ignore"):
            dropped = np.where((rho > 0) & ~opened, (rho / scale[:m]) ** 2, 0.0)
        C = np.vstack([C_old, np.zeros((Q.shape[0], b))])
        C[K0:, :m] = C_new
        if b == m:
            return self.sample(C), C, rho, dropped
        C[K0:, m:], R_obs = project(Q, R[m:], mean)  # the observed rows against the new directions
        Zhat = self.sample(C)
        residual, rho_obs = self._observe(R_obs, scale[m:], labels)
        Zhat[m:] += residual
        return Zhat, C, np.concatenate([rho, rho_obs]), dropped

    def _append(self, Q: np.ndarray) -> None:
        """New directions u_{K+1..K+k} = rows of Q, each with a fresh normal."""
        K0, k = self.size, Q.shape[0]
        self._grow(K0 + k)
        self.basis[K0:K0 + k] = Q
        self._fresh_normals(self.normals[K0:K0 + k], range(K0, K0 + k))
        self.size = K0 + k

    def _observe(self, R: np.ndarray, scale: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray]:
        """The part of Ẑ of observed rows that lies off the basis, from their residuals
        R (b, N): σ times their own Gram–Schmidt factor times temporary normals drawn
        from the streams ``labels``. Returns it (b, N) and the residual norms (b,)."""
        Q, C_tmp, rho, _ = orthonormalise(R, self.tol, scale, self.shard)
        out = np.zeros_like(R)
        if Q.shape[0]:
            extra = np.empty_like(Q)
            self._fresh_normals(extra, labels[: Q.shape[0]])
            out += self.sigma * (C_tmp.T @ extra)
        return out, rho

    def orthogonality_error(self, rows: int = 16) -> float:
        """max |U_S Uᵀ/N − I_S| over the ``rows`` newest directions S (maths §3 invariant).

        Costs ``rows``·K·N flops; the newest rows are the ones a loss of orthogonality
        reaches first.
        """
        if self.size == 0:
            return 0.0
        S = self.u[max(0, self.size - rows):]
        E = self.shard.gram(S, self.u)
        E[:, self.size - S.shape[0]:] -= np.eye(S.shape[0])
        return float(np.abs(E).max())

    def sample(self, C: np.ndarray) -> np.ndarray:
        """Ẑ = σ Σ_k c_k g_k for coordinates C of shape (K, b); returns (b, N).

        C is cast to the storage dtype first: a float64 C against float32 normals would
        make numpy upcast (copy) the whole (K, N) array.
        """
        return self.sigma * (C.T.astype(self.normals.dtype, copy=False) @ self.g)

    def stein(self, Y: np.ndarray) -> np.ndarray:
        """E_N[g_k Z^y] for the rows of Y (b, N); returns (K, b).

        By Stein's lemma this estimates E[∂Z^y/∂g_k] (maths §3).
        """
        return self.shard.sum(self.g @ Y.T) / self.shard.n

    def combine(self, D: np.ndarray) -> np.ndarray:
        """Σ_k D_kj Z^{u_k} for D of shape (K, b); returns (b, N), in the storage dtype."""
        return D.T.astype(self.basis.dtype, copy=False) @ self.u
