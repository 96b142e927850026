"""Test tolerances in one place.

Two kinds of comparison appear in the tests:

* deterministic ones (two computations of the same number that differ only by
  floating-point round-off): :func:`assert_close`, relative tolerance ``RTOL[dtype]``
  of the array's scale;
* Monte Carlo ones (an estimate with a standard error from G independent groups
  against a reference): :func:`assert_within_se`, a Student-t test with G − 1
  degrees of freedom whose family-wise false-failure rate is ``alpha`` however many
  numbers are compared (Bonferroni), so a test does not pass "for its seed only".

Coverage of confidence intervals over independent trials is judged by
:func:`coverage_band`, a two-sided band from the binomial law of the coverage count.

Quantiles come from scipy here, never from the code under test.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["RTOL", "assert_close", "DEFAULT_ALPHA", "t_threshold", "assert_within_se", "within_se_fraction",
           "coverage_band", "assert_coverage"]

#: Relative tolerance of deterministic comparisons, per floating-point dtype.
#: float64: eps = 2.2e-16; the quantities compared go through O(10) steps of
#: recursions with sums over up to ~1e6 terms (pairwise summation: error ~ log2(N)·eps
#: per sum) and Gram/QR algebra whose conditioning costs a few more digits, so
#: agreements of 1e-13..1e-12 are observed; 1e-10 leaves two orders of headroom and
#: still sits six orders below the smallest Monte Carlo error any test resolves (~1e-4).
#: float32: eps = 1.2e-7, and the same reasoning gives 1e-4 (~840 ulps) — a float32
#: result that agrees to less than that has lost more than round-off.
RTOL = {np.dtype("float64"): 1e-10, np.dtype("float32"): 1e-4}


def assert_close(actual, expected, dtype=np.float64, *, scale=None, err_msg="") -> None:
    """Assert a deterministic result equals its reference up to round-off in ``dtype``.

    |actual − expected| <= RTOL[dtype]·(|expected| + scale) elementwise; NaN must sit
    where the reference has NaN.

    There is no separate absolute-tolerance table: round-off in an entry is
    proportional to the size of the numbers it was computed from, not to the entry,
    so an entry that cancels to (nearly) zero carries an error of RTOL·scale, where
    ``scale`` is the size of its inputs. ``scale`` defaults to max|expected| over its
    finite entries, which is that size when the reference is not all small; pass it
    where it is not (a reference of zeros: the size of the quantities that cancel;
    ``scale=0`` for a purely relative comparison entry by entry).
    """
    rtol = RTOL[np.dtype(dtype)]
    if scale is None:
        e = np.abs(np.asarray(expected, dtype=np.float64))
        e = e[np.isfinite(e)]
        scale = float(e.max()) if e.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=err_msg)

#: Family-wise false-failure probability of one :func:`assert_within_se` call.
DEFAULT_ALPHA = 1e-3


def t_threshold(dof, n_comparisons: int = 1, alpha: float = DEFAULT_ALPHA) -> float:
    """q with P(max over n of |t_dof| > q) <= alpha for n comparisons (Bonferroni).

    q = t_dof(1 − alpha / (2 n)); ``dof = math.inf`` gives the normal quantile.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if n_comparisons < 1:
        raise ValueError(f"n_comparisons must be >= 1, got {n_comparisons!r}")
    if not dof >= 1:
        raise ValueError(f"dof must be >= 1 (two groups or more), got {dof!r}")
    p = alpha / (2 * n_comparisons)
    return float(stats.norm.isf(p) if math.isinf(dof) else stats.t.isf(p, dof))


def assert_within_se(actual, expected, se, *, dof, n_comparisons=None, alpha=DEFAULT_ALPHA, atol=0.0):
    """Assert |actual − expected| <= q·se + atol elementwise.

    q = :func:`t_threshold` (dof, n, alpha) with n = ``n_comparisons`` or the number of
    elements compared (after broadcasting): with an honest ``se`` from G groups
    (dof = G − 1) the assertion fails with probability <= alpha, whatever n.
    NaN anywhere fails. On failure the message names the worst |z| = |Δ| / se and
    where it is.

    Parameters
    ----------
    actual, expected, se : array_like, broadcastable to one shape
    dof : int or float
        Degrees of freedom of the standard errors (G − 1 for G groups; ``math.inf``
        for a normal z-test).
    n_comparisons : int, optional
        Size of the family for the Bonferroni correction when it is larger than
        this call (several calls in one test) or smaller (repeated entries such as
        both halves of a symmetric matrix).
    alpha : float
        Family-wise false-failure probability (default 1e-3).
    atol : float
        Absolute slack for entries whose se may be 0 (round-off of exact entries).
    """
    if se is None:
        raise AssertionError("no standard error to compare with (a single group has none)")
    a, e, s = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (actual, expected, se)))
    if a.size == 0:
        raise ValueError("nothing to compare")
    n = a.size if n_comparisons is None else int(n_comparisons)
    q = t_threshold(dof, n, alpha)
    diff = np.abs(a - e)
    bound = q * s + atol
    ok = diff <= bound  # False where anything is NaN
    if np.all(ok):
        return
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(s > 0, diff / s, np.where(diff > atol, np.inf, 0.0))
    z = np.where(np.isnan(diff) | np.isnan(s), np.inf, z)
    worst = np.unravel_index(int(np.argmax(np.where(ok, -1.0, z))), a.shape) if a.ndim else ()
    raise AssertionError(
        f"{np.count_nonzero(~ok)} of {a.size} entries beyond q·se + atol "
        f"(q = {q:.3g}: t_{dof} quantile, alpha = {alpha:g} over {n} comparisons; atol = {atol:g}); "
        f"worst |z| = {z[worst]:.3g} at index {tuple(int(i) for i in worst)}: "
        f"actual {a[worst]!r}, expected {e[worst]!r}, se {s[worst]!r}"
    )


def within_se_fraction(actual, expected, se, q: float) -> float:
    """Fraction of elements with |actual − expected| <= q·se (a coverage rate)."""
    a, e, s = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (actual, expected, se)))
    return float(np.mean(np.abs(a - e) <= q * s))


def coverage_band(trials: int, level: float, alpha: float = DEFAULT_ALPHA) -> tuple[int, int]:
    """Two-sided acceptance band [lo, hi] for the number of intervals covering the truth.

    With ``trials`` independent intervals of nominal coverage ``level`` the count is
    Binomial(trials, level); the band is its central 1 − alpha interval
    (``scipy.stats.binom.interval``), so honest intervals fall outside it with
    probability <= alpha, while intervals that are too wide (count too high) or too
    narrow (too low) fall outside it once ``trials`` is large enough.
    """
    lo, hi = stats.binom.interval(1 - alpha, trials, level)
    return int(lo), int(hi)


def assert_coverage(covered: int, trials: int, level: float, alpha: float = DEFAULT_ALPHA) -> None:
    """Assert a coverage count lies in :func:`coverage_band` (trials, level, alpha)."""
    lo, hi = coverage_band(trials, level, alpha)
    if not lo <= covered <= hi:
        raise AssertionError(
            f"{covered} of {trials} intervals covered the truth ({covered / trials:.3f}); a nominal "
            f"{level:.4g} coverage gives {lo}..{hi} with probability {1 - alpha:g} "
            f"({'too wide: standard errors inflated' if covered > hi else 'too narrow: standard errors too small'})"
        )
