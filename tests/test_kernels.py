"""The counter-based normal generator and the fused activation kernel."""
import math

import numpy as np
from hypothesis import given, strategies as st
from scipy import stats

from zlimit._activations import ACTIVATIONS
from zlimit._kernels import apply_pair, fill_normals, stream_key
from tolerance import assert_within_se


def test_normals_are_standard_normal_and_streams_independent():
    a, b = np.empty(400_001), np.empty(400_001)
    fill_normals(a, stream_key(3, 1))
    fill_normals(b, stream_key(3, 2))
    n = a.size
    # mean, variance, cross- and lag-1 correlation against N(0, 1) and independence, with
    # their large-n standard errors 1/sqrt(n), sqrt(2/n), 1/sqrt(n), 1/sqrt(n): one
    # Bonferroni family of 4 normal (dof = inf) comparisons
    got = [a.mean(), a.var(), np.corrcoef(a, b)[0, 1], np.corrcoef(a[:-1], a[1:])[0, 1]]
    se = np.array([1.0, math.sqrt(2.0), 1.0, 1.0]) / math.sqrt(n)
    assert_within_se(got, [0.0, 1.0, 0.0, 0.0], se, dof=math.inf)
    assert stats.kstest(a, "norm").pvalue > 1e-3


@given(n=st.integers(1, 300), extra=st.integers(1, 50), seed=st.integers(0, 2**63))
def test_each_particle_depends_only_on_key_and_index(n, extra, seed):
    """A longer array extends a shorter one: no dependence on N or on who computes it."""
    short, long = np.empty(n), np.empty(n + extra)
    fill_normals(short, stream_key(seed))
    fill_normals(long, stream_key(seed))
    even = n - (n % 2)  # the last odd particle shares its pair with the next one
    assert np.array_equal(short[:even], long[:even])
    assert np.all(np.isfinite(long))


def test_apply_pair_matches_activation():
    h = np.linspace(-5, 5, 201).reshape(3, 67)
    for act in ACTIVATIONS.values():
        x, dx = np.empty_like(h), np.empty_like(h)
        apply_pair(act.phi, act.dphi, h, x, dx)
        assert np.array_equal(x, np.vectorize(act.phi)(h)) and np.array_equal(dx, np.vectorize(act.dphi)(h))
