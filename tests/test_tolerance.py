"""The tolerances of tests/tolerance.py: they pass what they should and fail what they should."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tolerance import (RTOL, assert_close, assert_coverage, assert_within_se, coverage_band, t_threshold,
                       within_se_fraction)


def test_rtol_table_is_per_dtype_and_above_round_off():
    for dt in (np.float64, np.float32):
        assert 100 * np.finfo(dt).eps < RTOL[np.dtype(dt)] < 1e-3


def test_assert_close_is_relative_to_the_scale_of_the_array():
    e = np.array([2.0, -1.0, 1e-9, 0.0, np.nan])
    assert_close(e * (1 + 0.4 * RTOL[np.dtype("float64")]), e)  # round-off: passes
    assert_close(e + 0.9 * RTOL[np.dtype("float64")] * 2.0, e)  # near-zero entries: RTOL·max|e| absolute
    assert_close(e.astype(np.float32), e, np.float32)
    for bad in (e * (1 + 1e-8), np.where(np.isnan(e), 0.0, e)):  # beyond round-off; NaN moved
        with pytest.raises(AssertionError):
            assert_close(bad, e)
    with pytest.raises(AssertionError):
        assert_close(np.array([1e-12]), np.array([0.0]))  # a reference of zeros needs its scale
    assert_close(np.array([1e-12]), np.array([0.0]), scale=1.0)
    with pytest.raises(AssertionError):
        assert_close(np.array([1e-9 * (1 + 1e-6)]), np.array([1e-9]), scale=0.0)  # purely relative


def test_t_threshold_is_the_bonferroni_t_quantile():
    assert t_threshold(7) == pytest.approx(stats.t.ppf(1 - 5e-4, 7), rel=1e-12)
    assert t_threshold(7, 32) == pytest.approx(stats.t.ppf(1 - 1e-3 / 64, 7), rel=1e-12)
    assert t_threshold(math.inf, 4) == pytest.approx(stats.norm.ppf(1 - 1e-3 / 8), rel=1e-12)
    assert t_threshold(7, 32) > t_threshold(7, 1) > t_threshold(70, 1)
    with pytest.raises(ValueError, match="dof"):
        t_threshold(0)


def test_within_se_passes_exact_equality_and_honest_noise():
    x = np.linspace(-1, 1, 12).reshape(3, 4)
    assert_within_se(x, x, np.zeros_like(x), dof=7)  # se = 0: equality is required and enough
    assert_within_se(x, x + 1e-14, 0.0, dof=7, atol=1e-12)
    # honest t_7 statistics: 1000 entries pass at the Bonferroni threshold
    rng = np.random.default_rng(0)
    t = rng.standard_t(7, size=1000)
    assert_within_se(t, 0.0, 1.0, dof=7)


def test_within_se_fails_on_a_shifted_mean_and_reports_the_worst_entry():
    x = np.zeros((3, 4))
    se = np.full((3, 4), 0.01)
    shifted = x.copy()
    shifted[1, 2] = 10 * 0.01  # 10 se: beyond t_7(1 − 1e-3/24) ≈ 8.0
    with pytest.raises(AssertionError, match=r"worst \|z\| = 10 at index \(1, 2\)"):
        assert_within_se(shifted, x, se, dof=7)
    with pytest.raises(AssertionError, match=r"at index \(0, 0\)"):  # a uniform shift
        assert_within_se(x + 0.2, x, se, dof=7)
    with pytest.raises(AssertionError, match="1 of 12"):
        assert_within_se(x + np.where(np.arange(12).reshape(3, 4) == 5, np.nan, 0.0), x, se, dof=7)
    with pytest.raises(AssertionError, match="inf"):  # se = 0 but different
        assert_within_se(x + 1e-9, x, 0.0, dof=7)
    with pytest.raises(AssertionError, match="single group"):
        assert_within_se(x, x, None, dof=7)


def test_bonferroni_count_is_what_decides():
    # a deviation between the single-comparison and the 100-comparison thresholds
    # fails alone and passes as one of a family of 100
    q1, q100 = t_threshold(7, 1), t_threshold(7, 100)
    z = 0.5 * (q1 + q100)
    with pytest.raises(AssertionError):
        assert_within_se(z, 0.0, 1.0, dof=7)
    assert_within_se(z, 0.0, 1.0, dof=7, n_comparisons=100)


def test_coverage_band_rejects_inflated_and_deflated_intervals():
    """Independent t_7 statistics, 100 trials at the 68.27% interval: honest standard
    errors land in the band, 2x inflated and 2x deflated ones do not."""
    level, n = 0.6827, 100
    q = stats.t.interval(level, 7)[1]
    lo, hi = coverage_band(n, level)
    assert (lo, hi) == tuple(int(v) for v in stats.binom.interval(1 - 1e-3, n, level))
    t = np.random.default_rng(1).standard_t(7, size=n)
    assert_coverage(int(np.sum(np.abs(t) <= q)), n, level)
    with pytest.raises(AssertionError, match="too wide"):
        assert_coverage(int(np.sum(np.abs(t) <= 2 * q)), n, level)
    with pytest.raises(AssertionError, match="too narrow"):
        assert_coverage(int(np.sum(np.abs(t) <= 0.5 * q)), n, level)
    assert within_se_fraction(t, 0.0, 1.0, q) == np.mean(np.abs(t) <= q)
