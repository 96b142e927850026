"""Diagnostics on hand-built runs whose kernels come from explicit feature vectors.

References are computed in the tests directly from the vectors (or from closed
forms), never from the code under test.
"""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest

import zlimit
from zlimit import diagnostics as dg
from zlimit._results import Run
from tolerance import assert_coverage

# Student t quantiles from printed tables (t_{p, df}).
T_0975_DF4 = 2.776445105
T_095_DF4 = 2.131846786


def vectors_run(rng, G=3, T=4, M=5, m=3, n=40, depth=2, record_steps=(0, 2), kind="limit"):
    """A Run whose kernels are the Grams of explicit per-group feature vectors.

    Returns (run, V) with V[key] of shape (G, T+1, M, n) for keys "h1", "x1", ...
    and V["dh{l}"] of shape (G, T, m, n).
    """
    V = {}
    for l in range(1, depth + 1):
        for k in ("h", "x"):
            base = rng.standard_normal((G, 1, M, n))
            drift = np.cumsum(0.3 * rng.standard_normal((G, T + 1, M, n)), axis=1)
            drift[:, 0] = 0.0
            V[f"{k}{l}"] = base + drift
        V[f"dh{l}"] = rng.standard_normal((G, T, m, n))
    kernels, cross = {}, {}
    for key, v in V.items():
        kernels[key] = np.einsum("gtan,gtbn->gtab", v, v) / n
        if key.startswith("dh"):
            continue
        c = np.full((G, len(record_steps), T + 1, M, M), np.nan)
        for r, s in enumerate(record_steps):
            for t in range(s, T + 1):
                c[:, r, t] = np.einsum("gan,gbn->gab", v[:, s], v[:, t]) / n
        cross[key] = c
    run = Run(
        model=zlimit.MLP(depth=depth),
        meta={"kind": kind, "steps": T, "m": m, "m_eval": M - m},
        outputs_groups=rng.standard_normal((G, T + 1, M)),
        loss_groups=rng.random((G, T + 1)),
        error_signals_groups=rng.standard_normal((G, T, m)),
        kernels=kernels,
        cross=cross,
        record_steps=tuple(record_steps),
        error_model="exact" if kind == "exact" else "groups",
    )
    return run, V


def gram_of(vectors):
    """Per-group Gram of stacked vectors: (G, P, n) -> (G, P, P)."""
    return np.einsum("gpn,gqn->gpq", vectors, vectors) / vectors.shape[-1]


# ---------------------------------------------------------------------- Grams
def test_gram_matches_direct_inner_products():
    rng = np.random.default_rng(1)
    run, V = vectors_run(rng)
    T = run.steps
    for key, layer, kind in (("h1", 1, "h"), ("x2", 2, "x")):
        v = V[key]
        for step, t in ((-1, T), (0, 0), (2, 2)):
            direct = gram_of(v[:, t])
            np.testing.assert_allclose(dg.gram_per_group(run, layer, kind, step=step), direct, rtol=1e-12)
            np.testing.assert_allclose(dg.pooled_gram(run, layer, kind, step=step), direct.mean(axis=0), rtol=1e-12)
    # dh: T steps over the m training inputs
    direct = gram_of(V["dh2"][:, T - 1])
    got = dg.pooled_gram(run, 2, "dh")
    assert got.shape == (run.m, run.m)
    np.testing.assert_allclose(got, direct.mean(axis=0), rtol=1e-12)
    # subset of inputs
    idx = [4, 0]
    np.testing.assert_allclose(dg.pooled_gram(run, 1, "h", step=1, inputs=idx), gram_of(V["h1"][:, 1, idx]).mean(0),
                               rtol=1e-12)


def test_gram_rejects_bad_step_and_inputs():
    run, _ = vectors_run(np.random.default_rng(2), T=3)
    with pytest.raises(ValueError, match="out of range"):
        dg.gram_per_group(run, 1, "h", step=4)
    with pytest.raises(ValueError, match="out of range"):
        dg.gram_per_group(run, 1, "h", step=-5)
    with pytest.raises(ValueError, match="out of range"):
        dg.gram_per_group(run, 1, "dh", step=3)  # dh has steps 0..T-1
    with pytest.raises(ValueError, match="inputs"):
        dg.gram_per_group(run, 1, "h", inputs=[0, 7])
    with pytest.raises(ValueError, match="layer"):
        dg.gram_per_group(run, 3, "h")


def eig2(a):
    """Eigenvalues of a symmetric 2×2 matrix, ascending, in closed form."""
    mid, half = (a[0, 0] + a[1, 1]) / 2, math.hypot((a[0, 0] - a[1, 1]) / 2, a[0, 1])
    return np.array([mid - half, mid + half])


def test_pooled_gram_of_several_groups_warns_and_keeps_its_numbers():
    """min_eigenvalue(pooled_gram(run)) once dropped the Monte Carlo error silently: every
    spectral function now warns for a pooled Gram of G = 3 groups, and its numbers are
    those of the group-mean Gram, against the closed-form 2×2 eigenvalues."""
    run, V = vectors_run(np.random.default_rng(21), G=3)
    P = dg.pooled_gram(run, 1, "h", step=2, inputs=[0, 1])
    mean = gram_of(V["h1"][:, 2, :2]).mean(axis=0)
    assert isinstance(P, dg.PooledGram) and P.groups == 3
    np.testing.assert_allclose(np.asarray(P), mean, rtol=1e-12)
    expected = eig2(mean)
    for fn, check in [
        (dg.min_eigenvalue, lambda r: r.value == pytest.approx(expected[0], rel=1e-12) and math.isnan(r.se)),
        (dg.condition_number, lambda r: r.value == pytest.approx(expected[1] / expected[0], rel=1e-12)),
        (dg.eigenvalues, lambda r: np.allclose(r[0], expected, rtol=1e-12)),
        (dg.independence, lambda r: np.allclose(r.eigenvalues, expected, rtol=1e-12) and r.groups == 1),
    ]:
        with pytest.warns(zlimit.MonteCarloWarning, match=r"mean of 3 groups, so its Monte Carlo error is lost; "
                                                         r"pass gram_per_group\(...\) or space_time_gram") as w:
            result = fn(P)
        assert check(result), fn.__name__
        assert len(w) == 1 and w[0].filename == __file__  # attributed to the caller, one line
        assert "\n" not in str(w[0].message)
    # slices and arithmetic keep the count; pickling too
    import pickle
    assert P[:1, :1].groups == 3 and (2 * P).groups == 3
    assert pickle.loads(pickle.dumps(P)).groups == 3


def test_per_group_plain_and_single_group_grams_do_not_warn():
    run, V = vectors_run(np.random.default_rng(22), G=3)
    finite, W = vectors_run(np.random.default_rng(23), G=1, kind="finite")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        K = dg.gram_per_group(run, 1, "h", step=2, inputs=[0, 1])
        est = dg.min_eigenvalue(K)
        P1 = dg.pooled_gram(finite, 1, "h", step=2, inputs=[0, 1])  # a finite run: G = 1, nothing lost
        assert P1.groups == 1
        single = dg.min_eigenvalue(P1)
        plain = dg.min_eigenvalue(np.asarray(dg.pooled_gram(run, 1, "h", step=2, inputs=[0, 1])))
    per = np.array([eig2(k)[0] for k in gram_of(V["h1"][:, 2, :2])])
    assert est.value == pytest.approx(eig2(gram_of(V["h1"][:, 2, :2]).mean(0))[0], rel=1e-12)
    assert est.se == pytest.approx(per.std(ddof=1) / math.sqrt(3), rel=1e-10)
    assert single.value == pytest.approx(eig2(gram_of(W["h1"][:, 2, :2])[0])[0], rel=1e-12)
    assert plain.groups == 1 and plain.value == pytest.approx(est.value, rel=1e-12)  # plain 2-d: one group


def test_deprecated_gram_names_warn_and_return_the_new_results():
    run, _ = vectors_run(np.random.default_rng(24), G=2)
    with pytest.warns(DeprecationWarning, match="gram_groups is deprecated; use diagnostics.gram_per_group"):
        old = dg.gram_groups(run, 2, "x", step=1)
    np.testing.assert_array_equal(old, dg.gram_per_group(run, 2, "x", step=1))
    with pytest.warns(DeprecationWarning, match="gram is deprecated; use diagnostics.pooled_gram"):
        old = dg.gram(run, 2, "x", step=1)
    assert old.groups == 2
    np.testing.assert_array_equal(old, dg.pooled_gram(run, 2, "x", step=1))
    with pytest.raises(ValueError, match="groups"):
        dg.PooledGram(np.eye(2), groups=0)


@pytest.fixture(scope="module")
def mc_run_with_eval():
    """A Monte Carlo μP limit with two training and one evaluation input, steps 0..2."""
    X, y = zlimit.datasets.gaussian(3, 4, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zlimit.MonteCarloWarning)
        return zlimit.simulate(zlimit.MLP(depth=2), X[:2], y[:2], X_eval=X[2:], steps=2, particles=2000,
                               groups=2, progress=False)


def test_space_time_gram_refuses_evaluation_inputs_across_steps_in_the_mc_limit(mc_run_with_eval):
    """The rule: in a Monte Carlo limit, E[Z_s(ξ_e) Z_t(·)], t > s, is NaN for an
    evaluation input ξ_e in layers >= 2. space_time_gram says so instead of returning
    NaN blocks; what it suggests instead works."""
    run = mc_run_with_eval
    assert np.all(np.isnan(run.cross_kernel_groups(2, "h", 0)[:, 2, 2]))  # the rule holds in the data
    for kind in ("h", "x"):
        with pytest.raises(ValueError, match=r"^inputs \[2\] are evaluation inputs \(index >= m = 2\); in a Monte "
                                             r"Carlo limit .* layers >= 2 .*NaN by design.*use training inputs "
                                             r"\(indices < 2\), layer 1, one step, or .*method='exact'.*train_finite"):
            dg.space_time_gram(run, 2, kind, steps=(0, -1), inputs=[0, 2])
    for ok in (dict(layer=2, inputs=[0, 1]), dict(layer=1, inputs=[0, 2]), dict(layer=2, inputs=[2], steps=(2, 2))):
        args = {"steps": (0, -1), **ok}
        assert np.all(np.isfinite(dg.space_time_gram(run, args.pop("layer"), "h", **args))), ok
    # the generic message of a NaN Gram names the rule as a likely cause
    raw = run.cross_kernel_groups(2, "h", 0)[:, 2]
    with pytest.raises(ValueError, match="NaN or inf .*Monte Carlo limit, cross-step kernels of evaluation inputs "
                                         "in layers >= 2"):
        dg.min_eigenvalue(raw)


def test_space_time_gram_keeps_evaluation_inputs_where_they_are_exact():
    """Finite nets (and other producers with exact cross-step kernels) are not refused."""
    X, y = zlimit.datasets.gaussian(3, 3, seed=25)
    net = zlimit.train_finite(zlimit.MLP(depth=2), X[:2], y[:2], X_eval=X[2:], width=16, steps=2)
    G = dg.space_time_gram(net, 2, "h", steps=(0, -1), inputs=[0, 2])
    assert G.shape == (1, 4, 4) and np.all(np.isfinite(G))


def test_space_time_gram_default_matches_stacked_vectors():
    rng = np.random.default_rng(3)
    run, V = vectors_run(rng, G=2, T=4, M=5, m=3)
    v = V["h1"]
    stacked = np.concatenate([v[:, 0, :3], v[:, 4, :3]], axis=1)  # step-major, training inputs
    got = dg.space_time_gram(run, 1, "h")
    assert got.shape == (2, 6, 6)
    np.testing.assert_allclose(got, gram_of(stacked), rtol=1e-12, atol=1e-14)


def test_space_time_gram_unsorted_steps_and_eval_inputs():
    rng = np.random.default_rng(4)
    run, V = vectors_run(rng, G=3, T=4, M=5, m=2, record_steps=(0, 2))
    steps, inputs = (3, 0, -3), [4, 1, 3]  # -3 is step 2
    v = V["x2"]
    stacked = np.concatenate([v[:, t][:, inputs] for t in (3, 0, 2)], axis=1)
    got = dg.space_time_gram(run, 2, "x", steps=steps, inputs=inputs)
    assert got.shape == (3, 9, 9)
    np.testing.assert_allclose(got, gram_of(stacked), rtol=1e-12, atol=1e-14)
    assert np.all(np.isfinite(got))
    # one step only: the ordinary Gram, no cross kernels needed
    np.testing.assert_allclose(
        dg.space_time_gram(run, 2, "x", steps=(1,), inputs=inputs), gram_of(v[:, 1][:, inputs]), rtol=1e-12
    )


def test_space_time_gram_needs_earlier_step_recorded():
    run, _ = vectors_run(np.random.default_rng(5), T=4, record_steps=(0, 2))
    with pytest.raises(ValueError, match="record_steps"):
        dg.space_time_gram(run, 1, "h", steps=(1, 3))
    with pytest.raises(ValueError, match="record_steps"):
        dg.space_time_gram(run, 1, "h", steps=(4, 3))  # 3 < 4, 3 not recorded
    with pytest.raises(ValueError, match="out of range"):
        dg.space_time_gram(run, 1, "h", steps=(0, 5))


# ---------------------------------------------------------------------- spectra
def orthonormal_grams(rng, G, K, n):
    out = []
    for _ in range(G):
        q, _ = np.linalg.qr(rng.standard_normal((n, K)))
        v = math.sqrt(n) * q.T  # K feature vectors with v_a·v_b / n = δ_ab
        out.append(v @ v.T / n)
    return np.array(out)


@pytest.mark.parametrize("normalize", [False, True])
def test_orthonormal_features(normalize):
    grams = orthonormal_grams(np.random.default_rng(6), G=5, K=4, n=30)
    est = dg.min_eigenvalue(grams, normalize=normalize)
    assert est.value == pytest.approx(1.0, abs=1e-12)
    assert est.se == pytest.approx(0.0, abs=1e-12)
    assert est.low <= est.value <= est.high
    assert est.groups == 5
    cond = dg.condition_number(grams, normalize=normalize)
    assert cond.value == pytest.approx(1.0, abs=1e-12)
    v = dg.independence(grams)
    assert (v.rank, v.size, v.independent, v.label) == (4, 4, True, "independent")
    assert "independent: rank 4 of 4 at 95% confidence" in v.text
    assert "tol" in v.text


def test_exactly_dependent_features():
    rng = np.random.default_rng(7)
    G, n = 6, 50
    grams = []
    for _ in range(G):
        v1, v2, v4 = rng.standard_normal((3, n))
        v = np.stack([v1, v2, v1 + v2, v4])  # feature 3 = feature 1 + feature 2
        grams.append(v @ v.T / n)
    grams = np.array(grams)
    lam_max = np.linalg.eigvalsh(grams.mean(0))[-1]
    est = dg.min_eigenvalue(grams)
    assert abs(est.value) < 1e-12 * lam_max
    assert est.low < 1e-10 * lam_max
    assert est.se < 1e-12 * lam_max
    verdict = dg.independence(grams)
    assert (verdict.rank, verdict.size, verdict.label) == (3, 4, "dependent")
    assert verdict.text.startswith("dependent: rank 3 of 4 at 95% confidence")
    assert verdict.tol == pytest.approx(1e-8 * lam_max, rel=1e-12)
    assert dg.condition_number(grams).value > 1e10
    # a finite run (one group) of the same structure
    single = dg.independence(grams[:1])
    assert (single.rank, single.label, single.groups) == (3, "dependent", 1)
    assert "single group" in single.text


def test_confidence_interval_covers_zero_for_noisy_singular_gram():
    """A Gram singular in the limit, estimated with noise: the CI for λ_min covers 0
    at about the nominal rate, and the verdict is "dependent" about as often.

    To first order λ_min of a group is uᵀE_g u, Gaussian, so the interval is an exact
    95% t-interval and the coverage count of 400 independent trials is
    Binomial(400, 0.95): accepted in its central 1 − 1e-3 band, 364..393. The band is
    two-sided and has power: the same trials with 2x inflated standard errors cover
    ~99.8% of the time and fail it.
    """
    rng = np.random.default_rng(8)
    u = np.array([1.0, 1.0, -1.0]) / math.sqrt(3)  # null vector of A
    b = rng.standard_normal((3, 3))
    b -= np.outer(b @ u, u)  # rows orthogonal to u
    A = b.T @ b  # PSD, A u = 0, other eigenvalues O(1)
    G, trials, eps = 8, 400, 1e-4
    covered = covered_inflated = dependent = 0
    for _ in range(trials):
        e = eps * rng.standard_normal((G, 3, 3))
        grams = A + 0.5 * (e + np.swapaxes(e, 1, 2))
        est = dg.min_eigenvalue(grams)
        covered += est.low <= 0.0 <= est.high
        covered_inflated += abs(est.value) <= 2 * (est.high - est.value)
        dependent += dg.independence(grams).label == "dependent"
    assert_coverage(covered, trials, est.level)
    with pytest.raises(AssertionError, match="too wide"):
        assert_coverage(covered_inflated, trials, est.level)
    # "dependent" <=> the lower bound λ − q·se is <= tol (~0): one-sided, 97.5% of trials
    assert_coverage(dependent, trials, 1 - (1 - est.level) / 2)


def test_se_and_t_interval_from_known_spread():
    delta = np.array([0.01, -0.02, 0.03, 0.0, -0.005])
    grams = np.array([np.diag([1.0 + d, 2.0, 3.0]) for d in delta])
    lam = 1.0 + delta
    mean = sum(lam) / 5
    se = math.sqrt(sum((x - mean) ** 2 for x in lam) / 4) / math.sqrt(5)
    est = dg.min_eigenvalue(grams)
    assert est.value == pytest.approx(1.0 + delta.mean(), rel=1e-14)
    assert est.se == pytest.approx(se, rel=1e-12)
    assert est.low == pytest.approx(est.value - T_0975_DF4 * se, rel=1e-9)
    assert est.high == pytest.approx(est.value + T_0975_DF4 * se, rel=1e-9)
    v = 1.0 + delta.mean()
    assert str(est) == f"{v:.6g} ± {se:.2g} (95% t-interval [{v - T_0975_DF4 * se:.6g}, {v + T_0975_DF4 * se:.6g}], G−1 = 4 dof)"
    est90 = dg.min_eigenvalue(grams, level=0.9)
    assert est90.high - est90.value == pytest.approx(T_095_DF4 * se, rel=1e-8)
    assert est90.level == 0.9

    cond = 3.0 / lam
    cmean = sum(cond) / 5
    cse = math.sqrt(sum((x - cmean) ** 2 for x in cond) / 4) / math.sqrt(5)
    c = dg.condition_number(grams)
    assert c.value == pytest.approx(3.0 / (1.0 + delta.mean()), rel=1e-14)
    assert c.se == pytest.approx(cse, rel=1e-12)
    assert c.high - c.value == pytest.approx(T_0975_DF4 * cse, rel=1e-8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        est.value = 0.0


def test_single_group_has_no_mc_error():
    g = np.array([[2.0, 1.0], [1.0, 2.0]])  # eigenvalues 1 and 3
    for arg in (g, g[None]):
        est = dg.min_eigenvalue(arg)
        assert est.value == pytest.approx(1.0, rel=1e-14)
        assert math.isnan(est.se)
        assert est.low == est.high == est.value
        assert est.groups == 1
        assert dg.condition_number(arg).value == pytest.approx(3.0, rel=1e-14)
        assert "single group" in str(est)
    for bad in (0.0, 1.0, 95, True):
        with pytest.raises(ValueError, match="level"):
            dg.min_eigenvalue(g, level=bad)


def test_normalize_uses_unit_diagonal():
    g = np.array([[4.0, 3.0], [3.0, 9.0]])  # correlation 3/(2·3) = 0.5
    assert dg.min_eigenvalue(g).value == pytest.approx((13 - math.sqrt(61)) / 2, rel=1e-13)
    assert dg.min_eigenvalue(g, normalize=True).value == pytest.approx(0.5, rel=1e-13)
    assert dg.condition_number(g, normalize=True).value == pytest.approx(3.0, rel=1e-13)
    with pytest.raises(ValueError, match="diagonal"):
        dg.min_eigenvalue(np.zeros((2, 2)), normalize=True)


def test_independence_explicit_tol_and_singular_condition():
    g = np.diag([1.0, 1e-3])
    assert dg.independence(g, tol=1e-2).rank == 1
    v = dg.independence(g, tol=0.0)
    assert v.independent and "tol = 0" in v.text
    assert dg.condition_number(np.diag([1.0, 0.0])).value == math.inf
    with pytest.raises(ValueError, match="tol"):
        dg.independence(g, tol=-1.0)


def test_nan_gram_is_rejected():
    g = np.eye(3)
    g[0, 1] = g[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dg.min_eigenvalue(g)
    with pytest.raises(ValueError, match="shape"):
        dg.min_eigenvalue(np.ones((2, 3)))


# ---------------------------------------------------------------------- feature change
def test_feature_change_matches_vectors():
    rng = np.random.default_rng(9)
    run, V = vectors_run(rng, G=4, T=3, M=5, n=60)
    v = V["h2"]
    diff = ((v - v[:, :1]) ** 2).sum(-1)  # (G, T+1, M)
    base = (v[:, :1] ** 2).sum(-1)
    pooled = np.sqrt(diff.sum(0) / base.sum(0))  # all particles pooled (equal group sizes)
    per = np.sqrt(diff / base)
    se = per.std(axis=0, ddof=1) / 2.0
    value, got_se = dg.feature_change(run, 2, "h")
    np.testing.assert_allclose(value, pooled, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got_se, se, rtol=1e-8, atol=1e-12)
    assert np.all(value[0] == 0.0)


def test_feature_change_single_group_and_exact():
    run, V = vectors_run(np.random.default_rng(10), G=1, T=2)
    v = V["x1"][0]
    value, se = dg.feature_change(run, 1, "x")
    expected = np.linalg.norm(v - v[:1], axis=-1) / np.linalg.norm(v[:1], axis=-1)
    np.testing.assert_allclose(value, expected, rtol=1e-10, atol=1e-12)
    assert se is None
    exact, _ = vectors_run(np.random.default_rng(10), G=1, T=2, kind="exact")
    assert np.array_equal(dg.feature_change(exact, 1, "x")[1], np.zeros((3, 5)))


# ---------------------------------------------------------------------- novelty
def test_novelty_summary_nan_aware():
    run, _ = vectors_run(np.random.default_rng(11), G=2, T=2, M=3)
    nan = np.nan
    fwd = np.array([
        [[nan, nan, nan], [0.5, nan, 0.2], [nan, 0.1, 0.4]],
        [[nan, nan, nan], [0.7, nan, nan], [nan, 0.3, 0.6]],
    ])
    bwd = np.array([[[1.0, 2.0, 4.0]] * 3, [[3.0, 2.0, 8.0]] * 3])
    run.novelty = {"fwd2": fwd, "bwd2": bwd}
    s = dg.novelty_summary(run)
    assert set(s) == {"fwd2", "bwd2"}
    # fwd: per-input group means step1 [0.6, -, 0.2], step2 [-, 0.2, 0.5]
    assert math.isnan(s["fwd2"]["min"][0]) and math.isnan(s["fwd2"]["median"][0])
    np.testing.assert_allclose(s["fwd2"]["min"][1:], [0.2, 0.2], rtol=1e-14)
    np.testing.assert_allclose(s["fwd2"]["median"][1:], [0.4, 0.35], rtol=1e-14)
    assert s["fwd2"]["count"].tolist() == [0, 2, 2]
    np.testing.assert_allclose(s["bwd2"]["min"], [2.0] * 3)
    np.testing.assert_allclose(s["bwd2"]["median"], [2.0] * 3)  # means 2, 2, 6
    assert s["bwd2"]["count"].tolist() == [3, 3, 3]
    run.novelty = {}
    assert dg.novelty_summary(run) == {}
