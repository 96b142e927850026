"""Diagnostics of a :class:`~zlimit.Run`: feature Grams, their spectra, feature change
and the residual norms ("novelty") of maths §3.

Every function works on any run, finite or limit. Monte Carlo errors come from the
spread between the run's G independent groups (see :class:`zlimit.Run`), with the
package's one error bar (:func:`zlimit._stats.interval`, "95% t-interval, G−1 dof"):

* a *value* is always computed from the group-mean quantity (all particles pooled);
* its standard error is ``std(per-group values, ddof=1) / sqrt(G)``;
* its interval is ``value ± q · se`` with q the ``(1 + level) / 2`` quantile of
  Student's t with G − 1 degrees of freedom.

A finite-width run (G = 1) has no Monte Carlo error: its standard error is reported
as NaN and its interval collapses to the value. A nonlinear function of a mean
(an eigenvalue, a ratio) is not the mean of the per-group functions; the standard
error uses the per-group spread as the delta-method proxy for the error of the
pooled value, which is accurate once the per-group estimates are close to each
other (N/G particles per group large).

**Per-group, not pooled, Grams.** The spectral functions (:func:`min_eigenvalue`,
:func:`condition_number`, :func:`eigenvalues`, :func:`independence`) take the
per-group Grams (G, K, K) of :func:`gram_per_group` or :func:`space_time_gram`. The
pooled Gram of :func:`pooled_gram` has lost the spread between groups, so they warn
(:class:`zlimit.MonteCarloWarning`) when given one of G > 1 groups; a plain 2-d
array is taken as one group.

**Evaluation inputs across steps (Monte Carlo limit).** The Monte Carlo engine draws
fresh Gaussian directions for the evaluation inputs at every step, so an evaluation
input's Z at step s has the exact joint law with every training input's Z up to step
s, but not with later steps. Its cross-step kernels E[Z_s(ξ_e) Z_t(·)], t > s, in
layers l >= 2 are therefore NaN by design (layer 1, where Z^{h^1} = W^1 ξ is exact,
and equal steps are always recorded). :func:`space_time_gram` refuses such a Gram
with a ValueError, and ``Run.feature_change`` is NaN there. Use training inputs,
layer 1 or one step, or compute them exactly: ``method="exact"`` (linear nets) or
finite nets (:func:`zlimit.train_finite`) record every cross-step kernel.

Theorem 4.5 of Chen et al. (2025) states that the features of distinct inputs and
steps stay linearly independent; :func:`space_time_gram`, :func:`min_eigenvalue`
and :func:`independence` check this numerically.

Examples
--------
>>> import zlimit
>>> from zlimit import diagnostics
>>> X, y = zlimit.datasets.gaussian(3, 4, seed=0)
>>> run = zlimit.simulate(zlimit.MLP(depth=2), X, y, steps=2, particles=4000, groups=4, progress=False)
>>> G = diagnostics.space_time_gram(run, 2, "h", steps=(0, -1))  # (groups, 2 steps x 3 inputs, 6)
>>> G.shape
(4, 6, 6)
>>> print(diagnostics.independence(G, normalize=True).label)
independent
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ._errors import MonteCarloWarning
from ._results import Run
from ._stats import group_se, interval, interval_label
from ._validate import check_float, check_int

__all__ = [
    "Estimate",
    "Verdict",
    "PooledGram",
    "gram_per_group",
    "pooled_gram",
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
    """A scalar estimate with its Monte Carlo error: the package's 95% Student-t
    interval over G groups with G − 1 dof (:func:`zlimit._stats.interval`).

    Attributes
    ----------
    value : float
        Computed from the group-mean (pooled) Gram.
    se : float
        Standard error, std of the per-group values (ddof = 1) / sqrt(G); NaN when
        G = 1 (a finite run has no Monte Carlo error).
    low, high : float
        Interval ``value ± q·se``, q the two-sided Student t quantile at ``level``
        with G − 1 degrees of freedom; both equal ``value`` when G = 1.
    groups : int
        G, the number of groups the estimate came from.
    level : float
        Confidence level of ``[low, high]``.

    Examples
    --------
    >>> import numpy as np
    >>> from zlimit import diagnostics
    >>> grams = np.array([np.diag([1.0, 2.0]), np.diag([1.2, 2.0])])  # two groups
    >>> est = diagnostics.min_eigenvalue(grams)  # λ_min 1.0 and 1.2: value 1.1, se 0.1
    >>> print(est)
    1.1 ± 0.1 (95% t-interval [-0.17062, 2.37062], G−1 = 1 dof)
    >>> est.label
    '95% t-interval, G−1 = 1 dof'
    >>> print(diagnostics.min_eigenvalue(grams[0]))  # one group (a finite run)
    1 (single group, no Monte Carlo error)
    """

    value: float
    se: float
    low: float
    high: float
    groups: int
    level: float = 0.95

    @property
    def label(self) -> str:
        """What ``[low, high]`` is, e.g. ``"95% t-interval, G−1 = 7 dof"``."""
        return interval_label(self.level, self.groups)

    def __str__(self) -> str:
        if self.groups < 2:
            return f"{self.value:.6g} (single group, no Monte Carlo error)"
        band, dof = self.label.split(", ")  # "95% t-interval", "G−1 = 7 dof"
        return f"{self.value:.6g} ± {self.se:.2g} ({band} [{self.low:.6g}, {self.high:.6g}], {dof})"


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

    Examples
    --------
    >>> import numpy as np
    >>> from zlimit import diagnostics
    >>> v = diagnostics.independence(np.array([np.diag([1.0, 0.0]), np.diag([1.1, 0.0])]))
    >>> v.rank, v.size, v.independent, v.label
    (1, 2, False, 'dependent')
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


class PooledGram(np.ndarray):
    """A group-mean Gram (K, K) that remembers how many groups it pooled.

    Returned by :func:`pooled_gram`; an ordinary float64 ndarray otherwise (slices,
    copies and arithmetic keep ``groups``; ``np.asarray`` drops it). The spectral
    functions warn (:class:`zlimit.MonteCarloWarning`) when given one of G > 1
    groups: the spread between groups, from which Monte Carlo errors come, is gone.

    Attributes
    ----------
    groups : int
        G, the number of groups averaged.

    Examples
    --------
    >>> import numpy as np
    >>> from zlimit.diagnostics import PooledGram
    >>> P = PooledGram(np.eye(2), groups=8)
    >>> P.groups, P[:1, :1].groups, (2 * P).groups
    (8, 8, 8)
    """

    groups: int

    def __new__(cls, array, groups: int) -> PooledGram:
        obj = np.asarray(array, dtype=np.float64).view(cls)
        obj.groups = check_int("groups", groups, 1)
        return obj

    def __array_finalize__(self, obj) -> None:
        self.groups = getattr(obj, "groups", 1)

    def __reduce__(self):
        fn, args, state = super().__reduce__()
        return fn, args, (state, self.groups)

    def __setstate__(self, state) -> None:
        base, self.groups = state
        super().__setstate__(base)


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
            "Gram matrices contain NaN or inf (e.g. 'dh' kernels outside the batch, cross-step entries that "
            "were not recorded, or, in a Monte Carlo limit, cross-step kernels of evaluation inputs in layers "
            ">= 2, NaN by design: see zlimit.diagnostics); restrict the inputs/steps"
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
    iv = interval(per_group, value, level=level)
    return Estimate(iv.value, iv.se, iv.low, iv.high, iv.groups, iv.level)


def _spectra(grams, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Ascending eigenvalues of the group-mean Gram (K,) and of each group (G, K); warns
    (for the caller's caller) when ``grams`` is a :class:`PooledGram` of G > 1 groups."""
    if isinstance(grams, PooledGram) and grams.groups > 1:
        warnings.warn(f"this Gram is the mean of {grams.groups} groups, so its Monte Carlo error is lost; pass "
                      "gram_per_group(...) or space_time_gram(...) instead", MonteCarloWarning, stacklevel=3)
    a = _as_groups(grams)
    mean = a.mean(axis=0)
    if normalize:
        a, mean = _normalize(a), _normalize(mean)
    return np.linalg.eigvalsh(mean), np.linalg.eigvalsh(a)


# ---------------------------------------------------------------------- Grams
def gram_per_group(run: Run, layer: int, kind: str = "h", step: int = -1, inputs=None) -> np.ndarray:
    """Per-group Gram over inputs at one step, E[Z^{v_t(ξ_a)} Z^{v_t(ξ_b)}] in each group.

    What the spectral functions (:func:`min_eigenvalue`, :func:`independence`, ...)
    take: the spread between the G groups gives their Monte Carlo error.

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
        E[Z^{v_t(ξ_a)} Z^{v_t(ξ_b)}] per group (vᵀv'/n for a finite run, G = 1).
        Kind "dh" is NaN for inputs outside the batch of that step.

    Examples
    --------
    >>> import zlimit
    >>> from zlimit import diagnostics
    >>> X, y = zlimit.datasets.gaussian(3, 4, seed=0)
    >>> run = zlimit.simulate(zlimit.MLP(depth=2), X, y, steps=2, particles=4000, groups=4, progress=False)
    >>> K = diagnostics.gram_per_group(run, 1, "h", step=0)
    >>> K.shape  # (groups, inputs, inputs)
    (4, 3, 3)
    >>> print(diagnostics.min_eigenvalue(K).label)
    95% t-interval, G−1 = 3 dof
    """
    k = run.kernel_groups(layer, kind)
    t = _step_index(step, k.shape[1])
    idx = _input_index(inputs, k.shape[2], np.arange(k.shape[2]))
    return k[:, t][:, idx][:, :, idx]


def pooled_gram(run: Run, layer: int, kind: str = "h", step: int = -1, inputs=None) -> PooledGram:
    """Group-mean Gram over inputs at one step (all particles pooled), shape (M, M).

    Same parameters as :func:`gram_per_group`; the mean of its G Grams. The best
    single estimate of the limit Gram, but without its Monte Carlo error: the
    spectral functions warn when given it for G > 1 groups; pass them
    :func:`gram_per_group` instead.

    Returns
    -------
    PooledGram, shape (M, M)
        A float64 ndarray with ``groups`` = G.

    Examples
    --------
    >>> import warnings, zlimit
    >>> from zlimit import diagnostics
    >>> X, y = zlimit.datasets.gaussian(3, 4, seed=0)
    >>> run = zlimit.simulate(zlimit.MLP(depth=2), X, y, steps=2, particles=4000, groups=4, progress=False)
    >>> P = diagnostics.pooled_gram(run, 1, "h", step=0)
    >>> P.shape, P.groups
    ((3, 3), 4)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = diagnostics.min_eigenvalue(P)
    >>> print(caught[0].category.__name__, caught[0].message)
    MonteCarloWarning this Gram is the mean of 4 groups, so its Monte Carlo error is lost;
    pass gram_per_group(...) or space_time_gram(...) instead
    """
    per_group = gram_per_group(run, layer, kind, step, inputs)
    return PooledGram(per_group.mean(axis=0), groups=per_group.shape[0])


def gram_groups(run: Run, layer: int, kind: str = "h", step: int = -1, inputs=None) -> np.ndarray:
    """Deprecated name of :func:`gram_per_group` (warns DeprecationWarning).

    Examples
    --------
    >>> import warnings, zlimit
    >>> from zlimit import diagnostics
    >>> X, y = zlimit.datasets.gaussian(2, 4, seed=0)
    >>> run = zlimit.train_finite(zlimit.MLP(depth=1), X, y, width=8, steps=1)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     K = diagnostics.gram_groups(run, 1)
    >>> K.shape, caught[0].category.__name__
    ((1, 2, 2), 'DeprecationWarning')
    """
    warnings.warn("diagnostics.gram_groups is deprecated; use diagnostics.gram_per_group", DeprecationWarning,
                  stacklevel=2)
    return gram_per_group(run, layer, kind, step, inputs)


def gram(run: Run, layer: int, kind: str = "h", step: int = -1, inputs=None) -> PooledGram:
    """Deprecated name of :func:`pooled_gram` (warns DeprecationWarning).

    Examples
    --------
    >>> import warnings, zlimit
    >>> from zlimit import diagnostics
    >>> X, y = zlimit.datasets.gaussian(2, 4, seed=0)
    >>> run = zlimit.train_finite(zlimit.MLP(depth=1), X, y, width=8, steps=1)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     P = diagnostics.gram(run, 1)
    >>> P.shape, caught[0].category.__name__
    ((2, 2), 'DeprecationWarning')
    """
    warnings.warn("diagnostics.gram is deprecated; use diagnostics.pooled_gram (or gram_per_group, which keeps "
                  "the Monte Carlo error)", DeprecationWarning, stacklevel=2)
    return pooled_gram(run, layer, kind, step, inputs)


def _check_eval_rule(run: Run, layer: int, steps: list[int], idx: np.ndarray) -> None:
    """ValueError when a Monte Carlo limit's cross-step kernels of evaluation inputs in
    layers >= 2 would be needed (NaN by design; module docstring)."""
    evaluation = sorted({int(i) for i in idx if i >= run.m})
    if run.meta.get("method") != "mc" or layer < 2 or len(set(steps)) < 2 or not evaluation:
        return
    raise ValueError(
        f"inputs {evaluation} are evaluation inputs (index >= m = {run.m}); in a Monte Carlo limit their "
        f"cross-step kernels E[Z_s(ξ_e) Z_t(·)], s < t, in layers >= 2 are not computed (NaN by design: fresh "
        f"Gaussian directions at every step), so the space-time Gram of layer {layer} over steps "
        f"{sorted(set(steps))} cannot include them; use training inputs (indices < {run.m}), layer 1, one step, "
        "or compute them exactly with method='exact' (linear nets) or finite nets (train_finite)"
    )


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
        Input indices; default: the training inputs ``range(run.m)``. Evaluation
        inputs (indices >= m) over two or more steps are refused in layers >= 2 of a
        Monte Carlo limit (module docstring).

    Returns
    -------
    ndarray, shape (G, P, P), P = len(steps) · len(inputs)

    Raises
    ------
    ValueError
        When a pair of different steps has its earlier step not recorded, or when
        the Gram would need a Monte Carlo limit's cross-step kernels of evaluation
        inputs in a layer >= 2.

    Examples
    --------
    >>> import zlimit
    >>> from zlimit import diagnostics
    >>> X, y = zlimit.datasets.gaussian(3, 4, seed=0)
    >>> run = zlimit.simulate(zlimit.MLP(depth=2), X[:2], y[:2], X_eval=X[2:], steps=2, particles=4000,
    ...                       groups=4, progress=False)
    >>> diagnostics.space_time_gram(run, 2, "h", steps=(0, -1)).shape  # the 2 training inputs at steps 0, 2
    (4, 4, 4)
    >>> diagnostics.space_time_gram(run, 2, "h", steps=(0, -1), inputs=[0, 2])
    Traceback (most recent call last):
    ...
    ValueError: inputs [2] are evaluation inputs (index >= m = 2); in a Monte Carlo limit their cross-step ...
    """
    equal = run.kernel_groups(layer, kind)
    g, nsteps, count = equal.shape[:3]
    steps = [_step_index(s, nsteps) for s in (steps if np.ndim(steps) else [steps])]
    if not steps:
        raise ValueError("steps must name at least one step")
    idx = _input_index(inputs, count, np.arange(min(run.m, count)))
    _check_eval_rule(run, layer, steps, idx)
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

    Warns
    -----
    MonteCarloWarning
        When ``G_groups`` is a :func:`pooled_gram` of G > 1 groups.

    Examples
    --------
    >>> import numpy as np
    >>> from zlimit import diagnostics
    >>> grams = np.array([[[2.0, 1.0], [1.0, 2.0]], [[2.0, 0.0], [0.0, 2.0]]])  # eigenvalues {1, 3} and {2, 2}
    >>> pooled, per_group = diagnostics.eigenvalues(grams)
    >>> pooled.round(12).tolist(), per_group.round(12).tolist()  # the mean [[2, .5], [.5, 2]]: 1.5 and 2.5
    ([1.5, 2.5], [[1.0, 3.0], [2.0, 2.0]])
    """
    return _spectra(G_groups, normalize)


def min_eigenvalue(G_groups, level: float = 0.95, normalize: bool = False) -> Estimate:
    """Smallest eigenvalue of a Gram matrix, with its Monte Carlo error.

    Parameters
    ----------
    G_groups : array_like, shape (G, K, K) or (K, K)
        Per-group Gram matrices, e.g. from :func:`gram_per_group` or
        :func:`space_time_gram`. A 2-d array is treated as one group (G = 1); a
        :func:`pooled_gram` of G > 1 groups warns.
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

    Warns
    -----
    MonteCarloWarning
        When ``G_groups`` is a :func:`pooled_gram` of G > 1 groups: its Monte Carlo
        error is lost.

    Examples
    --------
    >>> import zlimit
    >>> from zlimit import diagnostics
    >>> X, y = zlimit.datasets.gaussian(3, 4, seed=0)
    >>> run = zlimit.simulate(zlimit.MLP(depth=2), X, y, steps=2, particles=4000, groups=4, progress=False)
    >>> est = diagnostics.min_eigenvalue(diagnostics.space_time_gram(run, 2, steps=(0, -1)), normalize=True)
    >>> est.groups, est.low <= est.value <= est.high, 0 < est.value <= 1
    (4, True, True)
    >>> print("λ_min =", est)
    λ_min = ... ± ... (95% t-interval [..., ...], G−1 = 3 dof)
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

    Warns
    -----
    MonteCarloWarning
        When ``G_groups`` is a :func:`pooled_gram` of G > 1 groups.

    Examples
    --------
    >>> import numpy as np
    >>> from zlimit import diagnostics
    >>> grams = np.array([np.diag([1.0, 4.0]), np.diag([1.0, 6.0])])  # conditions 4 and 6
    >>> est = diagnostics.condition_number(grams)  # of the mean diag(1, 5)
    >>> est.value, round(est.se, 12)
    (5.0, 1.0)
    >>> diagnostics.condition_number(np.diag([1.0, 0.0])).value  # singular
    inf
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

    Warns
    -----
    MonteCarloWarning
        When ``G_groups`` is a :func:`pooled_gram` of G > 1 groups.

    Examples
    --------
    Features v_1, v_2 and v_3 = v_1 + v_2 in each of eight groups: rank 2 of 3.

    >>> import numpy as np
    >>> from zlimit import diagnostics
    >>> rng = np.random.default_rng(0)
    >>> v = rng.standard_normal((8, 2, 50))  # (groups, features, n)
    >>> v = np.concatenate([v, v.sum(axis=1, keepdims=True)], axis=1)
    >>> verdict = diagnostics.independence(v @ v.transpose(0, 2, 1) / 50)
    >>> verdict.rank, verdict.label
    (2, 'dependent')
    >>> print(verdict)  # doctest: +ELLIPSIS
    dependent: rank 2 of 3 at 95% confidence (...; 95% t-interval, G−1 = 7 dof)
    """
    pooled, per_group = _spectra(G_groups, normalize)
    g, k = per_group.shape
    if tol is None:
        tol = DEFAULT_RTOL * max(float(pooled[-1]), 0.0)
        how = f"tol = {DEFAULT_RTOL:g}·λ_max = {tol:.3g}"
    else:
        tol = check_float("tol", tol, 0)
        how = f"tol = {tol:.3g}"
    iv = interval(per_group, pooled, level=level)
    se, lower = iv.se, iv.low
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
            f"smallest {pooled[0]:.3g} ± {se[0]:.2g}; {iv.label})"
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
        (``run.error_model == "exact"``). Both are NaN for the evaluation inputs in
        layers >= 2 of a Monte Carlo limit (module docstring).

    Examples
    --------
    >>> import zlimit
    >>> from zlimit import diagnostics
    >>> X, y = zlimit.datasets.gaussian(3, 4, seed=0)
    >>> run = zlimit.simulate(zlimit.MLP(depth=2), X, y, steps=2, particles=4000, groups=4, progress=False)
    >>> value, se = diagnostics.feature_change(run, 2)
    >>> value.shape, se.shape, bool(value[0].max() < 1e-6)  # (T+1, M); no change at step 0
    ((3, 3), (3, 3), True)
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

    Examples
    --------
    >>> import zlimit
    >>> from zlimit import diagnostics
    >>> X, y = zlimit.datasets.gaussian(3, 4, seed=0)
    >>> run = zlimit.simulate(zlimit.MLP(depth=2), X, y, steps=2, particles=4000, groups=4, progress=False)
    >>> summary = diagnostics.novelty_summary(run)
    >>> sorted(summary), summary["fwd2"].dtype.names, summary["fwd2"].shape
    (['bwd2', 'fwd2'], ('min', 'median', 'count'), (3,))
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
