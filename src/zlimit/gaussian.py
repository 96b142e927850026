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

import numpy as np

from .kernels import fill_normals, stream_key

__all__ = ["GaussianBasis", "orthonormalise"]


#: rows whose residual is below this fraction of their norm get a second projection
REORTHOGONALISE_BELOW = 1e-4


def _cgs2(basis: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project the rows of X off the span of orthonormal ``basis`` rows.

    Classical Gram–Schmidt, with a second projection ("twice is enough") for the rows
    that cancelled heavily. One pass leaves a residual ρ whose direction is off
    orthogonal by about ε‖x‖/‖ρ‖; below ‖ρ‖/‖x‖ = 1e-4 that exceeds 1e-12 and the row
    is projected again, which brings it back to round-off.

    Returns
    -------
    C : (K, b) coordinates E_N[u_k x]
    R : (b, N) residuals x − Σ_k C_k u_k
    """
    n = X.shape[1]
    if basis.shape[0] == 0:
        return np.zeros((0, X.shape[0]), dtype=X.dtype), X.copy()
    C = (basis @ X.T) / n
    R = X - C.T @ basis
    ratio2 = np.einsum("ip,ip->i", R, R) / np.maximum(np.einsum("ip,ip->i", X, X), np.finfo(float).tiny)
    again = np.flatnonzero(ratio2 < REORTHOGONALISE_BELOW ** 2)
    if again.size:
        C2 = (basis @ R[again].T) / n
        R[again] -= C2.T @ basis
        C[:, again] += C2
    return C, R


def orthonormalise(R: np.ndarray, tol: float, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Modified Gram–Schmidt of the rows of R among themselves, in order.

    Row j gets a new direction when its residual norm exceeds ``tol * scale[j]``.

    Parameters
    ----------
    R : (b, N) rows already orthogonal to any earlier basis.
    tol : relative tolerance on ‖ρ‖ = E_N[ρ²]^{1/2}.
    scale : (b,) the norms ‖x_j‖ of the original vectors.

    Returns
    -------
    Q : (k, N) new orthonormal directions, k <= b
    C : (k, b) coordinates of each row of R on Q (upper triangular in the kept rows)
    rho : (b,) residual norm ‖ρ_j‖ of each row before normalisation (maths §3)
    """
    b, n = R.shape
    R = R.copy()
    Q = np.empty_like(R)
    C = np.zeros((b, b), dtype=np.float64)
    rho = np.zeros(b)
    k = 0
    for j in range(b):
        r = R[j]
        for _ in range(2):  # reorthogonalise against this batch's directions
            if k:
                c = (Q[:k] @ r) / n
                r -= c @ Q[:k]
                C[:k, j] += c
        rho[j] = np.sqrt(np.dot(r, r) / n)
        if rho[j] > tol * scale[j] and rho[j] > 0.0:
            Q[k] = r / rho[j]
            C[k, j] = rho[j]
            k += 1
    return Q[:k], C[:k], rho


class GaussianBasis:
    """One Gaussian process of a hidden matrix, with its Gram–Schmidt basis.

    Parameters
    ----------
    particles : int
        N.
    capacity : int
        Largest number of directions K this run can add.
    sigma : float
        σ_l, so that Cov(Ẑ^{Wx}, Ẑ^{Wx'}) = σ_l² E[Z^x Z^{x'}].
    tol : float
        Relative residual ‖ρ‖/‖x‖ below which a vector adds no direction.
    dtype : numpy dtype of the stored basis and normals.
    key : tuple of int
        Labels of this process's random streams (seed, group, layer, side).
    """

    def __init__(self, particles: int, capacity: int, sigma: float, tol: float, dtype, key: tuple[int, ...]):
        self.n = particles
        self.sigma = sigma
        self.tol = tol
        self.key = key
        self.basis = np.empty((capacity, particles), dtype=dtype)
        self.normals = np.empty((capacity, particles), dtype=dtype)
        self.size = 0

    # ----------------------------------------------------------------- views
    @property
    def u(self) -> np.ndarray:
        """Z^{u_k}, shape (K, N)."""
        return self.basis[: self.size]

    @property
    def g(self) -> np.ndarray:
        """g_k, shape (K, N)."""
        return self.normals[: self.size]

    def _fresh_normals(self, out: np.ndarray, labels) -> None:
        for row, label in zip(out, labels):
            fill_normals(row, stream_key(*self.key, label))

    # ---------------------------------------------------------------- adding
    def add(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add the rows of X to the process; return their coordinates and novelty.

        Implements the sampling step of maths §3: c_k = E[Z^x Z^{u_k}],
        ρ = Z^x − Σ c_k Z^{u_k}, and a new direction u_{K+1} = ρ/‖ρ‖ with a fresh
        normal when ‖ρ‖ exceeds the tolerance.

        Parameters
        ----------
        X : (b, N) vectors Z^x.

        Returns
        -------
        C : (K', b) coordinates of every row on the updated basis u_1..u_K'
        rho : (b,) residual norms ‖ρ‖
        """
        b = X.shape[0]
        K = self.size
        scale = np.sqrt(np.einsum("ip,ip->i", X, X) / self.n)
        C_old, R = _cgs2(self.u, X)
        Q, C_new, rho = orthonormalise(R, self.tol, scale)
        k = Q.shape[0]
        if K + k > self.basis.shape[0]:
            raise RuntimeError("Gaussian basis capacity exceeded; this is a bug in the capacity estimate")
        self.basis[K:K + k] = Q
        self._fresh_normals(self.normals[K:K + k], range(K, K + k))
        self.size = K + k
        return np.vstack([C_old, C_new]), rho

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
        return (self.g @ Y.T) / self.n

    def combine(self, D: np.ndarray) -> np.ndarray:
        """Σ_k D_kj Z^{u_k} for D of shape (K, b); returns (b, N), in the storage dtype."""
        return D.T.astype(self.basis.dtype, copy=False) @ self.u

    def sample_detached(self, X: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray]:
        """Ẑ for vectors that must not enter the basis (evaluation inputs).

        The rows of X are projected on the basis; their residuals get temporary
        directions with fresh normals drawn from the streams ``labels``. The law of
        (Ẑ of these rows, Ẑ of every basis vector) is the exact joint law, while
        nothing later reads the temporary normals.

        Returns
        -------
        Zhat : (b, N)
        C : (K, b) coordinates on the basis (for the update operator)
        rho : (b,) residual norms against the basis and the earlier rows
        """
        scale = np.sqrt(np.einsum("ip,ip->i", X, X) / self.n)
        C, R = _cgs2(self.u, X)
        Q, C_new, rho = orthonormalise(R, self.tol, scale)
        Zhat = self.sample(C)
        if Q.shape[0]:
            extra = np.empty_like(Q)
            self._fresh_normals(extra, labels[: Q.shape[0]])
            Zhat += self.sigma * (C_new.T @ extra)
        return Zhat, C, rho
