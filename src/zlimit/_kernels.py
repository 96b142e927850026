"""Numba kernels for the per-particle work of the engine.

Random normals come from a counter-based generator: the value for particle p of
stream k is a pure function of (seed, k, p). Nothing depends on which thread
computes what, so one seed gives the same bits for any ``NUMBA_NUM_THREADS``.

The kernels are serial and release the GIL: the engine runs independent particle
groups on worker threads (coarse parallelism, no per-call thread launches).
"""
from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["stream_key", "fill_normals", "apply_pair"]

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix_py(z: int) -> int:
    """splitmix64 finaliser on Python ints (used to derive stream keys)."""
    z = (z + _GOLDEN) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def stream_key(seed: int, *labels: int) -> np.uint64:
    """A 64-bit key for the random stream named by ``labels`` under ``seed``.

    Distinct label tuples give unrelated streams (each label is mixed in turn).
    """
    key = _mix_py(int(seed) & _MASK)
    for label in labels:
        key = _mix_py(key ^ (int(label) & _MASK))
    return np.uint64(key)


@numba.njit(inline="always")
def _mix(z):
    z = z + np.uint64(_GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(inline="always")
def _uniform(key, counter):
    # 53 random bits -> (0, 1), never exactly 0
    bits = _mix(key ^ _mix(np.uint64(counter)))
    return (float(bits >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


@numba.njit(nogil=True, cache=True)
def fill_normals(out, key, offset=0):
    """Fill the 1-d array ``out`` with the standard normals of stream ``key`` for the
    particles offset, offset + 1, …, offset + len(out) − 1 (``offset`` even).

    Marsaglia's polar method on counter-based uniforms: pair q (particles 2q, 2q+1)
    tries the points (u, v) at counters (q, attempt) until u² + v² < 1, so entry p is
    a function of (key, p) alone, whoever computes it: an MPI rank that holds
    particles lo..hi−1 of a group (:class:`zlimit._mpi.Shard`) draws exactly the
    numbers a single process draws for them.
    """
    n = out.shape[0]
    first = offset // 2
    for q in range((n + 1) // 2):
        attempt = 0
        while True:
            c = np.uint64(first + q) * np.uint64(64) + np.uint64(2 * attempt)
            u = 2.0 * _uniform(key, c) - 1.0
            v = 2.0 * _uniform(key, c + np.uint64(1)) - 1.0
            s = u * u + v * v
            attempt += 1
            if 0.0 < s < 1.0 or attempt == 32:
                break
        f = math.sqrt(-2.0 * math.log(s) / s)
        out[2 * q] = u * f
        if 2 * q + 1 < n:
            out[2 * q + 1] = v * f


@numba.njit(nogil=True)
def apply_pair(phi, dphi, h, x, dx):
    """Z^{x^l_t} = φ(Z^{h^l_t}) and φ'(Z^{h^l_t}) (maths §2) in one pass over an (M, N) array."""
    rows, n = h.shape
    for i in range(rows):
        for p in range(n):
            v = h[i, p]
            x[i, p] = phi(v)
            dx[i, p] = dphi(v)
