"""The package's statistics, in one place.

Monte Carlo errors in zlimit come from the spread between G independent groups
(the particle groups of a limit run, or the seeds of finite nets): the standard
error of a mean over groups is ``std(ddof=1) / sqrt(G)``, and a confidence interval
uses Student's t with G − 1 degrees of freedom. Convergence rates n^{-rate} are read
off a least-squares line through (log n, log y).

Every function here wraps :mod:`scipy.stats`; nothing else in the package computes a
standard error, a t quantile or a log-log slope by hand.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np
from scipy import stats

__all__ = ["group_se", "t_interval", "t_quantile", "interval", "interval_label", "Interval", "BAND", "loglog_fit",
           "LogLogFit"]

#: What every error bar and band of the package means (legends, tables, docs).
BAND = "95% t-interval, G−1 dof"


def group_se(a, axis: int = 0, *, single=None):
    """Standard error of the mean over independent groups.

    ``scipy.stats.sem`` with ddof = 1: the sample standard deviation of the groups
    over sqrt(G).

    Parameters
    ----------
    a : array_like, shape (..., G, ...)
        Per-group values; ``axis`` is the group axis.
    axis : int
        The group axis (default 0).
    single : None or float
        Returned when there are fewer than two groups (a finite run, one seed), where
        the spread is undefined: None (default, the convention of ``Run.outputs_se``)
        or a fill value such as ``math.nan`` or ``0.0``, broadcast to the shape of the
        result.

    Returns
    -------
    ndarray, shape of ``a`` without ``axis``, or float for 1-d input, or ``single``
        Non-finite group values (an infinite condition number) give NaN there,
        without a warning.

    Examples
    --------
    >>> import numpy as np
    >>> from zlimit._stats import group_se
    >>> group_se(np.array([[1.0, 2.0], [3.0, 2.0]]))  # two groups, two quantities
    array([1., 0.])
    >>> group_se(np.array([[1.0, 2.0]])) is None  # one group: no spread
    True
    >>> group_se(np.array([[1.0, 2.0]]), single=np.nan)
    array([nan, nan])
    """
    a = np.asarray(a, dtype=np.float64)
    g = a.shape[axis]
    if g < 2:
        if single is None:
            return None
        shape = np.delete(np.array(a.shape, dtype=int), axis)
        out = np.full(tuple(shape), float(single))
        return float(out) if out.ndim == 0 else out
    with np.errstate(invalid="ignore", over="ignore"):
        se = stats.sem(a, axis=axis, ddof=1)
    return float(se) if np.ndim(se) == 0 else np.asarray(se)


def _check_level(level) -> float:
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be a number in (0, 1), got {level!r}")
    return float(level)


def t_quantile(level: float, dof):
    """Half-width factor q of a two-sided Student-t interval: P(|t_dof| <= q) = level.

    Parameters
    ----------
    level : float in (0, 1)
    dof : int or array_like of int, each >= 1

    Returns
    -------
    float, or ndarray of the shape of ``dof``

    Examples
    --------
    >>> from zlimit._stats import t_quantile
    >>> round(t_quantile(0.95, 4), 6)
    2.776445
    """
    level = _check_level(level)
    dof_arr = np.asarray(dof, dtype=np.float64)
    if np.any(~(dof_arr >= 1)):
        raise ValueError(f"dof must be >= 1 (two groups or more), got {dof!r}")
    q = stats.t.interval(level, dof_arr)[1]
    return float(q) if np.ndim(q) == 0 else np.asarray(q)


def t_interval(mean, se, dof, level: float = 0.95):
    """Student-t confidence interval ``mean ± q·se``, q from ``scipy.stats.t.interval``.

    Parameters
    ----------
    mean : array_like, shape S
    se : array_like, broadcastable to S, or None
        Standard errors, e.g. from :func:`group_se`. ``se == 0`` (a deterministic
        value) gives a zero-width interval. None (a single group: no Monte Carlo
        error is known) collapses the interval to ``mean``, as for finite runs.
    dof : int or array_like of int, broadcastable to S
        Degrees of freedom, G − 1 for G groups; each >= 1 (ignored when ``se`` is
        None).
    level : float in (0, 1)
        Confidence level (default 0.95).

    Returns
    -------
    low, high : float or ndarray, shape S (broadcast of the inputs)

    Examples
    --------
    >>> import numpy as np
    >>> from zlimit._stats import t_interval
    >>> low, high = t_interval(np.array([1.0, 2.0]), np.array([0.1, 0.0]), dof=4)
    >>> np.round(low, 4), high[1]
    (array([0.7224, 2.    ]), np.float64(2.0))
    >>> t_interval(1.0, None, dof=0)  # one group: no error, the interval is the value
    (1.0, 1.0)
    """
    level = _check_level(level)
    m = np.asarray(mean, dtype=np.float64)
    if se is None:
        lo, hi = m.copy(), m.copy()
    else:
        half = t_quantile(level, dof) * np.asarray(se, dtype=np.float64)
        lo, hi = m - half, m + half
    if np.ndim(lo) == 0:
        return float(lo), float(hi)
    return lo, hi


def interval_label(level: float = 0.95, groups: int | None = None) -> str:
    """How an interval is described in legends and tables.

    Examples
    --------
    >>> from zlimit._stats import interval_label
    >>> interval_label()
    '95% t-interval, G−1 dof'
    >>> interval_label(0.9, groups=8)
    '90% t-interval, G−1 = 7 dof'
    >>> interval_label(groups=1)
    'no interval (one group)'
    """
    level = _check_level(level)
    if groups is not None and groups < 2:
        return "no interval (one group)"
    dof = "G−1 dof" if groups is None else f"G−1 = {groups - 1} dof"
    return f"{100 * level:g}% t-interval, {dof}"


class Interval(NamedTuple):
    """An estimate with its Student-t confidence interval over G independent groups."""

    value: float | np.ndarray
    #: standard error, std over groups (ddof = 1) / sqrt(G); NaN with one group, 0 for an exact value
    se: float | np.ndarray
    low: float | np.ndarray
    high: float | np.ndarray
    groups: int
    level: float

    @property
    def label(self) -> str:
        """E.g. ``"95% t-interval, G−1 = 7 dof"`` (:func:`interval_label`)."""
        return interval_label(self.level, self.groups)


def interval(per_group, value=None, *, axis: int = 0, level: float = 0.95, exact: bool = False) -> Interval:
    """The package's one error bar: ``value ± q·se``, q the two-sided Student-t quantile
    at ``level`` with G − 1 degrees of freedom, se = :func:`group_se` of ``per_group``.

    Every band, error bar and confidence interval zlimit reports (plots, tables,
    :class:`zlimit.diagnostics.Estimate`) comes from here, and is labelled with
    :func:`interval_label`.

    Parameters
    ----------
    per_group : array_like, shape (..., G, ...)
        The quantity per independent group (particle group or seed); ``axis`` is G.
    value : array_like, optional
        The estimate, shape of ``per_group`` without ``axis``. Default: the mean over
        groups. For a nonlinear function of pooled data (an eigenvalue of the pooled
        Gram) pass the pooled value; the per-group spread is then its delta-method proxy.
    axis : int
        The group axis.
    level : float in (0, 1)
    exact : bool
        A deterministic value (the exact limit): se = 0 and a zero-width interval.

    Returns
    -------
    Interval
        ``value, se, low, high, groups, level``; floats for a scalar quantity. With one
        group se is NaN and the interval collapses to the value.

    Examples
    --------
    >>> import numpy as np
    >>> from zlimit._stats import interval
    >>> iv = interval(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    >>> iv.value, round(iv.se, 6), round(iv.low, 4), round(iv.high, 4), iv.label
    (3.0, 0.707107, 1.0368, 4.9632, '95% t-interval, G−1 = 4 dof')
    >>> interval(np.array([[1.0, 2.0]])).se  # one group: no error
    array([nan, nan])
    """
    a = np.asarray(per_group, dtype=np.float64)
    if a.ndim == 0:
        raise ValueError("per_group needs a group axis, got a scalar")
    g = a.shape[axis]
    v = a.mean(axis=axis) if value is None else np.asarray(value, dtype=np.float64)
    if exact:
        se = np.zeros(np.shape(v))
    else:
        se = group_se(a, axis=axis)
    low, high = t_interval(v, se, max(g - 1, 1), level)
    se = np.full(np.shape(v), np.nan) if se is None else np.asarray(se, dtype=np.float64)
    if np.ndim(v) == 0:
        return Interval(float(v), float(se), float(low), float(high), g, _check_level(level))
    return Interval(v, se, np.asarray(low), np.asarray(high), g, _check_level(level))


class LogLogFit(NamedTuple):
    """Least-squares line log y = intercept + slope · log x."""

    slope: float
    #: Standard error of the slope from the residuals, sqrt(s² / Σ(log x − mean)²) with
    #: s² = RSS / (k − 2); NaN with only k = 2 points (a line through two points has no
    #: residual to judge it by).
    slope_se: float
    intercept: float


def loglog_fit(x, y) -> LogLogFit:
    """Fit log y = intercept + slope · log x (``scipy.stats.linregress``).

    A convergence rate y ~ n^{-rate} is ``-slope``.

    Parameters
    ----------
    x, y : array_like, shape (k,)
        Positive values, k >= 2 points with at least two distinct x.

    Returns
    -------
    LogLogFit
        ``(slope, slope_se, intercept)``; ``slope_se`` is NaN when k = 2.

    Examples
    --------
    >>> import numpy as np
    >>> from zlimit._stats import loglog_fit
    >>> n = np.array([64.0, 256.0, 1024.0])
    >>> fit = loglog_fit(n, 3.0 / np.sqrt(n))
    >>> round(fit.slope, 12), round(fit.slope_se, 12), round(float(np.exp(fit.intercept)), 12)
    (-0.5, 0.0, 3.0)
    >>> loglog_fit([1.0, 2.0], [1.0, 0.5]).slope_se
    nan
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    if x.size < 2:
        raise ValueError(f"a line needs at least 2 points, got {x.size}")
    if not (np.all(x > 0) and np.all(y > 0)):
        raise ValueError("loglog_fit needs positive x and y")
    res = stats.linregress(np.log(x), np.log(y))
    se = float(res.stderr) if x.size > 2 else math.nan
    return LogLogFit(float(res.slope), se, float(res.intercept))
