"""Diagnostics of a :class:`~zlimit.Run`: feature Grams, their spectra, feature change
and the residual norms ("novelty") of maths §3.

Every function works on any run, finite or limit. Monte Carlo errors come from the
spread between the run's G independent groups (see :class:`zlimit.Run`):

* a *value* is always computed from the group-mean quantity (all particles pooled);
* its standard error is ``std(per-group values, ddof=1) / sqrt(G)``;
* a confidence interval at level ``level`` is ``value ± q · se`` with q the
  ``(1 + level) / 2`` quantile of Student's t with G − 1 degrees of freedom.

A finite-width run (G = 1) has no Monte Carlo error: its standard error is reported
as NaN and its interval collapses to the value. A nonlinear function of a mean
(an eigenvalue, a ratio) is not the mean of the per-group functions; the standard
error uses the per-group spread as the delta-method proxy for the error of the
pooled value, which is accurate once the per-group estimates are close to each
other (N/G particles per group large).

Theorem 4.5 of Chen et al. (2025) states that the features of distinct inputs and
steps stay linearly independent; :func:`space_time_gram`, :func:`min_eigenvalue`
and :func:`independence` check this numerically.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ._results import Run
from ._stats import group_se, t_interval
from ._validate import check_float, check_int

__all__ = [
    "Estimate",
    "Verdict",
    "gram",
    "gram_groups",
    "space_time_gram",
    "min_eigenvalue",
    "condition_number",
    "eigenvalues",
    "feature_change",
    "independence",
    "novelty_summary",
    "DEFAULT_RTOL",
]

#: Default relative tolerance of :func:`independence`: an eigenvalue counts as
#: nonzero only above ``DEFAULT_RTOL · λ_max``. Far above float64 round-off of a
#: K×K eigenproblem (~K·1e-16·λ_max), far below any Monte Carlo resolution.
DEFAULT_RTOL = 1e-8


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class Estimate:
    """A scalar estimate with its Monte Carlo error.

    Attributes
    ----------
    value : float
        Computed from the group-mean (pooled) Gram.
    se : float
        Standard error, std of the per-group values (ddof = 1) / sqrt(G); NaN when
        G = 1 (a finite run has no Monte Carlo error).
    low, high : float
        Confidence interval ``value ± q·se``, q the Student t quantile at ``level``
        with G − 1 degrees of freedom; both equal ``value`` when G = 1.
    groups : int
        G, the number of groups the estimate came from.
    level : float
        Confidence level of ``[low, high]``.
    """

    value: float
    se: float
    low: float
    high: float
    groups: int
    level: float = 0.95

    def __str__(self) -> str:
        if self.groups < 2:
            return f"{self.value:.6g} (single group, no Monte Carlo error)"
        return (
            f"{self.value:.6g} ± {self.se:.2g} "
            f"({self.level:.0%} CI [{self.low:.6g}, {self.high:.6g}], G = {self.groups})"
        )


@dataclass(frozen=True, eq=False)
class Verdict:
    """Numerical rank of a Gram matrix at a confidence level (see :func:`independence`).

    Attributes
    ----------
    rank : int
        k, the number of eigenvalues counted as nonzero.
    size : int
        K, the size of the Gram matrix.
    tol : float
        Absolute threshold the eigenvalues (their lower confidence bounds) must exceed.
    level : float
    groups : int
    eigenvalues : ndarray, shape (K,)
        Eigenvalues of the group-mean Gram, ascending.
    se : ndarray, shape (K,)
        Their standard errors (per-group spread of the i-th smallest eigenvalue);
        NaN when G = 1.
    lower : ndarray, shape (K,)
        Lower confidence bounds; equal to ``eigenvalues`` when G = 1.
    text : str
        E.g. ``"independent: rank 4 of 4 at 95% confidence (...)"``.
    """

    rank: int
    size: int
    tol: float
    level: float
    groups: int
    eigenvalues: np.ndarray
    se: np.ndarray
    lower: np.ndarray
    text: str

    @property
    def independent(self) -> bool:
        """True when the Gram has full rank (rank == size)."""
        return self.rank == self.size

    @property
    def label(self) -> str:
        """``"independent"`` or ``"dependent"``."""
        return "independent" if self.independent else "dependent"

    def __str__(self) -> str:
        return self.text


# ---------------------------------------------------------------------- helpers
def _step_index(step: int, count: int, what: str = "step") -> int:
    s = check_int(what, step, -count, count - 1,
                  hint=f" (this array has {count} steps, 0..{count - 1}; negative ones count from the end)")
    return s % count


def _input_index(inputs, count: int, default) -> np.ndarray:
    idx = np.asarray(default if inputs is None else inputs)
    if idx.ndim == 0:
        idx = idx.reshape(1)
    if idx.ndim != 1 or idx.size == 0 or not (np.issubdtype(idx.dtype, np.integer)):
        raise ValueError(f"inputs must be a non-empty 1-d sequence of integer input indices, got {inputs!r}")
    if idx.min() < -count or idx.max() >= count:
        raise ValueError(f"inputs has indices outside [0, {count}) (this kernel covers {count} inputs)")
    return idx % count


def _as_groups(grams) -> np.ndarray:
    """(K, K) or (G, K, K) -> float (G, K, K), symmetrised, finite."""
    a = np.asarray(grams, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"expected Gram matrices of shape (K, K) or (G, K, K), got shape {np.shape(grams)}")
    if not np.all(np.isfinite(a)):
        raise ValueError(
            "Gram matrices contain NaN or inf (e.g. 'dh' kernels outside the batch, or "
            "cross-step entries that were not recorded); restrict the inputs/steps"
        )
    return 0.5 * (a + np.swapaxes(a, 1, 2))


def _normalize(a: np.ndarray) -> np.ndarray:
    """Scale each (…, K, K) Gram to unit diagonal (a correlation matrix)."""
    d = np.einsum("...ii->...i", a)
    if np.any(d <= 0):
        raise ValueError("cannot normalize: a Gram matrix has a diagonal entry <= 0 (a zero feature)")
    s = 1.0 / np.sqrt(d)
    return a * s[..., :, None] * s[..., None, :]


def _estimate(value: float, per_group: np.ndarray, level: float) -> Estimate:
    g = per_group.shape[0]
    se = group_se(per_group)  # None when g = 1: the interval collapses to the value
    low, high = t_interval(float(value), se, g - 1, level)
    return Estimate(float(value), math.nan if se is None else se, low, high, g, float(level))


def _spectra(grams, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Ascending eigenvalues of the group-mean Gram (K,) and of each group (G, K)."""
    a = _as_groups(grams)
    mean = a.mean(axis=0)
    if normalize:
        a, mean = _normalize(a), _normalize(mean)
    return np.linalg.eigvalsh(mean), np.linalg.eigvalsh(a)


# ---------------------------------------------------------------------- Grams
def gram_groups(run: Run, layer: int, kind: str = "h", step: int = -1, inputs=None) -> np.ndarray:
    """Per-group Gram over inputs at one step.

    Parameters
    ----------
    run : Run
    layer : int
        Hidden layer l in 1..L.
    kind : {"h", "x", "dh"}
    step : int
        Step t; negative values index from the end (-1 = the last step). Kinds "h"
        and "x" have steps 0..T, kind "dh" steps 0..T-1.
    inputs : sequence of int, optional
        Input indices (default: all; M for "h"/"x", the m training inputs for "dh").

    Returns
    -------
    ndarray, shape (G, M, M)
        E[Z^{v_t(ξ_a)} Z^{v_t(ξ_b)}] per group (vᵀv'/n for a finite run). Kind "dh"
        is NaN for inputs outside the batch of that step.
    """
    k = run.kernel_groups(layer, kind)
    t = _step_index(step, k.shape[1])
    idx = _input_index(inputs, k.shape[2], np.arange(k.shape[2]))
    return k[:, t][:, idx][:, :, idx]


def gram(run: Run, layer: int, kind: str = "h", step: int = -1, inputs=None) -> np.ndarray:
    """Group-mean Gram over inputs at one step, shape (M, M).

    Same parameters as :func:`gram_groups`; the mean over the G groups (all
    particles pooled).
    """
    return gram_groups(run, layer, kind, step, inputs).mean(axis=0)


def space_time_gram(
    run: Run,
    layer: int,
    kind: str = "h",
    steps: Sequence[int] = (0, -1),
    inputs=None,
) -> np.ndarray:
    """Per-group Gram of the features over (step, input) pairs.

    Entry ``[g, p, q]`` with ``p = i·len(inputs) + a`` (step-major) is
    E[Z^{v_{s_i}(ξ_a)} Z^{v_{s_j}(ξ_b)}] in group g, for ``q = j·len(inputs) + b``.
    Blocks of equal steps come from ``run.kernel_groups``; a block of two different
    steps s < t comes from ``run.cross_kernel_groups(layer, kind, s)``, so the
    earlier step of every pair must be in ``run.record_steps`` (set by the
    ``record_steps=`` argument of the run).

    Parameters
    ----------
    run : Run
    layer : int
        Hidden layer l in 1..L.
    kind : {"h", "x", "dh"}
        "dh" has no cross-step kernels: only one distinct step is then allowed.
    steps : sequence of int
        Steps 0..T (negative values index from the end), in the order wanted.
    inputs : sequence of int, optional
        Input indices; default: the training inputs ``range(run.m)``.

    Returns
    -------
    ndarray, shape (G, P, P), P = len(steps) · len(inputs)

    Raises
    ------
    ValueError
        When a pair of different steps has its earlier step not recorded.
    """
    equal = run.kernel_groups(layer, kind)
    g, nsteps, count = equal.shape[:3]
    steps = [_step_index(s, nsteps) for s in (steps if np.ndim(steps) else [steps])]
    if not steps:
        raise ValueError("steps must name at least one step")
    idx = _input_index(inputs, count, np.arange(min(run.m, count)))
    for s in sorted(set(steps))[:-1]:
        if s not in run.record_steps:
            later = sorted(t for t in set(steps) if t > s)
            raise ValueError(
                f"the Gram between steps {s} and {later} needs the features of step {s}, "
                f"but this run kept only steps {tuple(run.record_steps)}; rerun with "
                f"record_steps= containing {s} (E[Z_s Z_t] is kept for s in record_steps, t >= s)"
            )
    cross = {s: run.cross_kernel_groups(layer, kind, s) for s in sorted(set(steps))[:-1]}
    n = len(idx)
    out = np.empty((g, len(steps) * n, len(steps) * n), dtype=np.result_type(equal.dtype, np.float64))
    for i, s in enumerate(steps):
        for j, t in enumerate(steps):
            if s == t:
                block = equal[:, s][:, idx][:, :, idx]
            elif s < t:
                block = cross[s][:, t][:, idx][:, :, idx]
            else:  # E[Z_s(a) Z_t(b)] = E[Z_t(b) Z_s(a)], t < s recorded
                block = np.swapaxes(cross[t][:, s][:, idx][:, :, idx], 1, 2)
            out[:, i * n:(i + 1) * n, j * n:(j + 1) * n] = block
    return out


# ---------------------------------------------------------------------- spectra
def eigenvalues(G_groups, normalize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues of the group-mean Gram and of each group's Gram.

    Parameters
    ----------
    G_groups : array_like, shape (G, K, K) or (K, K)
        Per-group Gram matrices (a 2-d array is one group).
    normalize : bool
        Scale every Gram to unit diagonal first (see :func:`min_eigenvalue`).

    Returns
    -------
    pooled : ndarray, shape (K,)
        Ascending eigenvalues of the group-mean Gram.
    per_group : ndarray, shape (G, K)
        Ascending eigenvalues of each group's Gram.
    """
    return _spectra(G_groups, normalize)


def min_eigenvalue(G_groups, level: float = 0.95, normalize: bool = False) -> Estimate:
    """Smallest eigenvalue of a Gram matrix, with its Monte Carlo error.

    Parameters
    ----------
    G_groups : array_like, shape (G, K, K) or (K, K)
        Per-group Gram matrices, e.g. from :func:`gram_groups` or
        :func:`space_time_gram`. A 2-d array is treated as one group (G = 1).
    level : float
        Confidence level of the interval.
    normalize : bool
        False (default): the Gram as it is, E[Z^a Z^b], so the eigenvalue is in the
        units of the features (it scales with their size). True: scale to unit
        diagonal, C_ab = G_ab / sqrt(G_aa G_bb), a correlation matrix; the
        eigenvalue is then scale-free, in [0, 1], and 1 exactly for orthogonal
        features. Each group's Gram and the group-mean Gram are normalised by their
        own diagonals.

    Returns
    -------
    Estimate
        ``value`` = λ_min of the group-mean Gram; ``se`` = std of the per-group
        λ_min (ddof = 1) / sqrt(G); ``[low, high]`` = value ± t_{(1+level)/2, G−1}·se.
        G = 1 (finite runs): se is NaN and low = high = value.
    """
    pooled, per_group = _spectra(G_groups, normalize)
    return _estimate(pooled[0], per_group[:, 0], level)


def condition_number(G_groups, level: float = 0.95, normalize: bool = False) -> Estimate:
    """Condition number λ_max / λ_min of a Gram matrix, with its Monte Carlo error.

    Parameters and error conventions as in :func:`min_eigenvalue`. The value is
    ``inf`` when λ_min <= 0 (numerically singular); the standard error is then NaN
    (likewise when any group's Gram is singular).

    Returns
    -------
    Estimate
    """
    pooled, per_group = _spectra(G_groups, normalize)

    def cond(ev):
        lo, hi = ev[..., 0], ev[..., -1]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(lo > 0, hi / np.where(lo > 0, lo, 1.0), np.inf)

    value = float(cond(pooled))
    per = cond(per_group)
    est = _estimate(value, per, level)
    if not (math.isfinite(value) and np.all(np.isfinite(per))):
        if est.groups < 2:
            return est
        return Estimate(value, math.nan, math.nan, math.nan, est.groups, est.level)
    return est


def independence(G_groups, level: float = 0.95, tol: float | None = None, normalize: bool = False) -> Verdict:
    """Numerical rank of a Gram matrix, judged with confidence bounds.

    The i-th smallest eigenvalue λ_i of the group-mean Gram counts as nonzero when
    its lower confidence bound ``λ_i − q·se_i`` exceeds ``tol``, where se_i is the
    spread of the i-th smallest per-group eigenvalue (std/sqrt(G)) and q the
    Student t quantile at ``level`` with G − 1 degrees of freedom. The features are
    "independent" when every eigenvalue counts (rank = K), otherwise "dependent".
    With G = 1 (finite runs, no Monte Carlo error) the eigenvalue itself must exceed
    ``tol``.

    Parameters
    ----------
    G_groups : array_like, shape (G, K, K) or (K, K)
    level : float
        Confidence level of the lower bounds.
    tol : float, optional
        Absolute threshold. Default ``DEFAULT_RTOL · λ_max = 1e-8 · λ_max`` (of the
        group-mean Gram, after normalisation if asked): the confidence bound does
        the statistical work, ``tol`` only keeps float64 round-off of exactly
        singular Grams (~K·1e-16·λ_max) from counting as rank. The same default is
        used for G = 1.
    normalize : bool
        Work on the unit-diagonal (correlation) Gram; see :func:`min_eigenvalue`.

    Returns
    -------
    Verdict
        ``rank``, ``size``, ``tol``, the eigenvalues with their errors, and ``text``
        such as ``"dependent: rank 3 of 4 at 95% confidence (...)"``.
    """
    pooled, per_group = _spectra(G_groups, normalize)
    g, k = per_group.shape
    if tol is None:
        tol = DEFAULT_RTOL * max(float(pooled[-1]), 0.0)
        how = f"tol = {DEFAULT_RTOL:g}·λ_max = {tol:.3g}"
    else:
        tol = check_float("tol", tol, 0)
        how = f"tol = {tol:.3g}"
    se = group_se(per_group, single=np.nan)
    lower, _ = t_interval(pooled, None if g < 2 else se, g - 1, level)
    rank = int(np.count_nonzero(lower > tol))
    label = "independent" if rank == k else "dependent"
    if g < 2:
        text = (
            f"{label}: rank {rank} of {k} (single group, no Monte Carlo error; "
            f"eigenvalues > {how} count as nonzero; smallest {pooled[0]:.3g})"
        )
    else:
        text = (
            f"{label}: rank {rank} of {k} at {level:.0%} confidence "
            f"(eigenvalues whose {level:.0%} lower bound exceeds {how} count as nonzero; "
            f"smallest {pooled[0]:.3g} ± {se[0]:.2g}, G = {g})"
        )
    return Verdict(rank, k, tol, float(level), g, pooled, se, lower, text)


# ---------------------------------------------------------------------- features
def feature_change(run: Run, layer: int, kind: str = "h") -> tuple[np.ndarray, np.ndarray | None]:
    """Relative feature change ‖v_t − v_0‖ / ‖v_0‖ per step and input, with its error.

    Parameters
    ----------
    run : Run
        Needs cross-step kernels from step 0 (always recorded).
    layer : int
    kind : {"h", "x"}

    Returns
    -------
    value : ndarray, shape (T+1, M)
        ``run.feature_change(layer, kind)``: sqrt(E[(Z_t − Z_0)²] / E[Z_0²]) from
        the group-mean kernels.
    se : ndarray, shape (T+1, M), or None
        Standard error from the spread of the per-group ratios (std, ddof = 1, over
        sqrt(G)); None when G = 1, as ``Run.outputs_se``; zeros for an exact run
        (``run.error_model == "exact"``).
    """
    value = run.feature_change(layer, kind)
    if run.error_model == "exact":
        return value, np.zeros_like(value)
    return value, group_se(run.feature_change_groups(layer, kind))


_SUMMARY_DTYPE = np.dtype([("min", np.float64), ("median", np.float64), ("count", np.int64)])


def novelty_summary(run: Run) -> dict[str, np.ndarray]:
    """Per-step summary of the residual norms ‖ρ‖ of maths §3.

    For each side of each hidden matrix (``"fwd2"``, ``"bwd2"``, …, the keys of
    ``run.novelty``) the residual norm per (step, input) is estimated by its mean
    over groups (NaN-aware: groups that added no vector there are left out), then
    summarised over inputs.

    Parameters
    ----------
    run : Run

    Returns
    -------
    dict
        key -> structured ndarray of shape (T+1,) with fields ``"min"`` and
        ``"median"`` (float; NaN at steps where no vector was added) and
        ``"count"`` (int; the number of inputs whose vector was added), e.g.
        ``summary["fwd2"]["min"]``. Empty for runs without novelty (finite runs).
    """
    out: dict[str, np.ndarray] = {}
    for key in sorted(run.novelty):
        a = np.asarray(run.novelty[key], dtype=np.float64)
        if a.ndim != 3:
            raise ValueError(f"run.novelty[{key!r}] must have shape (G, T+1, M), got {a.shape}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices -> NaN
            per = np.nanmean(a, axis=0)
            s = np.empty(a.shape[1], dtype=_SUMMARY_DTYPE)
            s["min"] = np.nanmin(per, axis=1) if per.shape[1] else np.nan
            s["median"] = np.nanmedian(per, axis=1) if per.shape[1] else np.nan
        s["count"] = np.count_nonzero(~np.isnan(per), axis=1)
        out[key] = s
    return out
