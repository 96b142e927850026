"""The Monte Carlo engine against independent references (maths §4).

* L = 1: tensor Gauss–Hermite quadrature of the same recursion (tests/oracles.py).
* φ = identity, any depth: the exact coefficient algebra (``method="exact"``).
* Finite μP nets of growing width (``train_finite``).

Tolerances are in units of the standard errors the runs report (independent particle
groups, and the spread of finite-width seeds), at the Bonferroni-corrected Student-t
threshold of tests/tolerance.py (family-wise false-failure rate 1e-3); nothing is
compared with numbers printed by the code under test.
"""
from __future__ import annotations

import functools
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, strategies as st

import zlimit
from zlimit import simulate, train_finite
from zlimit._errors import DivergenceError, ResourceError
from oracles import quadrature_l1
from tolerance import RTOL, assert_close, assert_coverage, assert_within_se, t_threshold
from zlimit._stats import group_se

#: round-off slack of assert_within_se for entries whose se is 0 (exact in every group)
ROUND_OFF = RTOL[np.dtype(np.float64)]


def _inputs(m: int, d: int, seed: int, m_eval: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m + m_eval, d))
    y = np.sign(rng.standard_normal(m))
    return X[:m], y, X[m:]


# --------------------------------------------------------------------------- oracles
@pytest.mark.parametrize(
    "activation, loss, batches",
    [("tanh", "mse", None), ("sigmoid", "mse", None), ("tanh", "logistic", ([[0, 1], [2], [1, 2]] * 3)[:8])],
)
def test_depth1_matches_quadrature(activation, loss, batches):
    """L = 1, 2-d inputs, 8 steps: within the t threshold (31 dof, 32 comparisons: 4.9 se),
    and those standard errors below 2e-3."""
    X, y, X_eval = _inputs(3, 2, seed=1, m_eval=1)
    model = zlimit.MLP(depth=1, activation=activation, loss=loss, lr=1.0, init_std=[1.2, 1.0])
    T = 8
    run = simulate(model, X, y, steps=T, particles=400_000, groups=32, X_eval=X_eval, batches=batches,
                   progress=False, seed=3)
    ref = quadrature_l1(model, X, y, steps=T, X_eval=X_eval, batches=batches, order=48)["outputs"]
    se = run.outputs_se
    assert np.all(run.outputs[0] == 0.0)
    assert se[1:].max() < 2e-3
    assert np.abs(ref[1:]).max() > 50 * se.max()  # the trajectory moves far beyond the noise
    assert_within_se(run.outputs[1:], ref[1:], se[1:], dof=run.groups - 1)


def test_depth1_qmc_matches_quadrature_with_smaller_errors():
    """Randomised QMC for the input and readout Gaussians: still within the t threshold of its
    own, smaller standard errors of the quadrature oracle (32 independently randomised groups),
    and those errors are several times below i.i.d."""
    X, y, _ = _inputs(3, 2, seed=1)
    model = zlimit.MLP(depth=1, activation="tanh", lr=1.0)
    ref = quadrature_l1(model, X, y, steps=6, order=48)["outputs"]
    kw = dict(steps=6, particles=2**17, groups=32, progress=False, seed=5)
    iid, qmc = simulate(model, X, y, **kw), simulate(model, X, y, qmc=True, **kw)
    assert_within_se(qmc.outputs[1:], ref[1:], qmc.outputs_se[1:], dof=qmc.groups - 1)
    assert np.median(iid.outputs_se[1:] / qmc.outputs_se[1:]) > 3


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_linear_matches_exact(depth):
    """φ(x) = x: Monte Carlo within the t threshold of the exact limit at every step (one
    Bonferroni family: the outputs and every layer's last-step kernel)."""
    X, y, X_eval = _inputs(3, 3, seed=depth, m_eval=1)
    model = zlimit.MLP(depth=depth, activation="linear", lr=0.3, init_std=0.9)
    T = 6
    run = simulate(model, X, y, steps=T, particles=128_000, groups=32, X_eval=X_eval, progress=False)
    exact = simulate(model, X, y, steps=T, X_eval=X_eval, method="exact")
    assert np.all(exact.outputs_se == 0)
    assert np.abs(exact.outputs[1:]).max() > 20 * run.outputs_se.max()
    G, M = run.groups, run.outputs.shape[1]
    family = run.outputs[1:].size + depth * M * M
    assert_within_se(run.outputs[1:], exact.outputs[1:], run.outputs_se[1:], dof=G - 1, n_comparisons=family)
    # feature kernels too: E[Z^{h^l} Z^{h^l'}] at the last step, within the same threshold
    for l in range(1, depth + 1):
        kg = run.kernel_groups(l, "h")[:, -1]
        k_se = group_se(kg)
        ref = exact.kernel(l, "h")[-1]
        assert_within_se(kg.mean(0), ref, k_se, dof=G - 1, n_comparisons=family, atol=ROUND_OFF * np.abs(ref).max())


def test_float32_storage_matches_exact():
    """dtype="float32" (default basis_tol 1e-2): still within the t threshold of the exact limit."""
    X, y, X_eval = _inputs(3, 3, seed=3, m_eval=1)
    model = zlimit.MLP(depth=3, activation="linear", lr=0.3, init_std=0.9)
    run = simulate(model, X, y, steps=6, particles=128_000, groups=32, X_eval=X_eval, progress=False,
                   dtype="float32")
    exact = simulate(model, X, y, steps=6, X_eval=X_eval, method="exact")
    assert run.meta["dtype"] == "float32" and run.meta["basis_tol"] == 1e-2
    assert np.abs(exact.outputs[1:]).max() > 20 * run.outputs_se.max()
    assert_within_se(run.outputs[1:], exact.outputs[1:], run.outputs_se[1:], dof=run.groups - 1)


def test_cross_step_kernels_match_exact_and_eval_rows_are_withheld():
    """E[Z_0(ξ_a) Z_T(ξ_b)] matches the exact limit for training ξ_a; rows of evaluation
    inputs at layers >= 2 are NaN (their fresh per-step directions make them inexact)."""
    X, y, X_eval = _inputs(3, 5, seed=12, m_eval=2)
    model = zlimit.MLP(depth=3, activation="linear", lr=0.3)
    run = simulate(model, X, y, steps=4, particles=96_000, groups=32, X_eval=X_eval, progress=False)
    exact = simulate(model, X, y, steps=4, X_eval=X_eval, method="exact")
    family = 5 * 5 + 2 * 3 * 5  # layer 1: all rows; layers 2, 3: the 3 training rows
    for l in (1, 2, 3):
        c = run.cross_kernel_groups(l, "h", 0)[:, -1]
        ref = exact.cross_kernel_groups(l, "h", 0)[0, -1]
        se = group_se(c)
        rows = slice(None) if l == 1 else slice(0, 3)
        assert_within_se(c.mean(0)[rows], ref[rows], se[rows], dof=run.groups - 1, n_comparisons=family,
                         atol=ROUND_OFF * np.abs(ref[rows]).max())
        assert np.all(np.isnan(c[:, 3:])) == (l >= 2)


HONEST_LEVEL = 0.6827  # the ±1 sd level; with G = 8 the t-interval is ±1.08 se
HONEST_RUNS = 100


@functools.lru_cache(maxsize=None)
def _honesty_trials(oracle: str):
    """(f̊ − oracle, se, G) for HONEST_RUNS independent runs, one (step, input) per run.

    The pair rotates over all steps t >= 1 and inputs. Only one pair per run is used:
    within a run the errors of different steps are strongly correlated (|corr| up to
    0.99), so the runs, not the pairs, are the independent trials.
    """
    if oracle == "quadrature":
        X, y, _ = _inputs(3, 2, seed=5)
        model = zlimit.MLP(depth=1, activation="tanh", lr=1.0)
        ref = quadrature_l1(model, X, y, steps=5, order=40)["outputs"]
    else:
        X, y, _ = _inputs(3, 3, seed=6)
        model = zlimit.MLP(depth=3, activation="linear", lr=0.3)
        ref = simulate(model, X, y, steps=5, method="exact").outputs
    diff, se = [], []
    for seed in range(HONEST_RUNS):
        run = simulate(model, X, y, steps=5, particles=16_000, groups=8, seed=seed, progress=False)
        t, a = np.unravel_index(seed % ref[1:].size, ref[1:].shape)
        diff.append(run.outputs[1 + t, a] - ref[1 + t, a])
        se.append(run.outputs_se[1 + t, a])
    return np.array(diff), np.array(se), run.groups


@pytest.mark.parametrize("oracle", ["quadrature", "exact"])
def test_standard_errors_are_honest(oracle):
    """Over 100 independent runs the 68.27% t-interval (G − 1 = 7 dof) covers the oracle
    as often as Binomial(100, 0.6827) allows: a two-sided band at alpha = 1e-3, 52..83.

    The level is 68%, not 95%: with 100 trials a 95% band cannot tell 2x inflated
    standard errors (coverage 99.8%) from honest ones, while the 68% band rejects them
    with probability 0.9996, and 2x deflated ones with 0.993 (see the next test).
    """
    diff, se, G = _honesty_trials(oracle)
    q = t_threshold(G - 1, alpha=1 - HONEST_LEVEL)  # two-sided HONEST_LEVEL quantile of t_7
    assert_coverage(int(np.sum(np.abs(diff) <= q * se)), diff.size, HONEST_LEVEL)


@pytest.mark.parametrize("oracle", ["quadrature", "exact"])
def test_coverage_band_rejects_wrong_standard_errors(oracle):
    """The band above has power: the same runs with 2x inflated (or 2x deflated)
    standard errors fail it."""
    diff, se, G = _honesty_trials(oracle)
    q = t_threshold(G - 1, alpha=1 - HONEST_LEVEL)
    for factor, verdict in ((2.0, "too wide"), (0.5, "too narrow")):
        with pytest.raises(AssertionError, match=verdict):
            assert_coverage(int(np.sum(np.abs(diff) <= q * factor * se)), diff.size, HONEST_LEVEL)


# ------------------------------------------------------------------ finite width
def _finite_study(model, X, y, batches, widths, seeds, steps, particles, groups=8):
    """Deviation of width-n nets from the limit per width, and seed-mean z-scores at the largest.

    The deviation is the RMS over seeds, steps >= 1 and inputs of f_t − f̊_t: its square
    is spread² + bias² (~ 1/n + 1/n², maths §4) plus the limit's own se², and it is
    stable because it averages every net. (The RMS of the *seed-mean* deviation has
    only a few independent components, since each net's initial offset persists
    through training, and its fitted slope scatters by more than the allowed band.)
    """
    limit = simulate(model, X, y, steps=steps, particles=particles, groups=groups, batches=batches,
                     progress=False, seed=11)
    devs, diff, se = [], None, None
    for n in widths:
        f = np.stack([train_finite(model, X, y, width=n, steps=steps, seed=s, batches=batches).outputs
                      for s in range(seeds)])
        devs.append(np.sqrt(np.mean((f[:, 1:] - limit.outputs[1:]) ** 2)))
        diff = f.mean(0)[1:] - limit.outputs[1:]
        se = np.sqrt(f.std(0, ddof=1)[1:] ** 2 / seeds + limit.outputs_se[1:] ** 2)
    slope = np.polyfit(np.log(widths), np.log(devs), 1)[0]
    # seed-mean minus limit at the largest width; its se combines S seeds and G groups,
    # for which min(S, G) − 1 degrees of freedom are conservative (Welch's are more)
    return limit, np.array(devs), slope, (diff, se, min(seeds, limit.groups) - 1)


DEPTH3 = dict(depth=3, activation="tanh", lr=0.5)


def test_finite_width_converges_depth3_tanh():
    """Nets at widths 256..4096 approach the limit: slope in [-1.3, -0.3], seed means within
    the t threshold of the limit at the largest width (16 seeds and 16 groups: 15 dof, 20
    comparisons, 5.6 se). (The 512..8192 version of the issue is the slow test below.)"""
    X, y, _ = _inputs(4, 3, seed=0)
    model = zlimit.MLP(**DEPTH3)
    _, devs, slope, (diff, se, dof) = _finite_study(model, X, y, None, [256, 512, 1024, 2048, 4096],
                                                    seeds=16, steps=5, particles=200_000, groups=16)
    assert dof == 15
    assert -1.3 <= slope <= -0.3, (slope, devs)
    assert_within_se(diff, 0.0, se, dof=dof)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kw, batch_size",
    [(dict(depth=3, activation="tanh", lr=0.5), None),
     (dict(depth=3, activation="silu", lr=0.5), None),
     (dict(depth=3, activation="tanh", loss="logistic", lr=0.5), None),
     (dict(depth=3, activation="tanh", lr=0.5), 2)],
    ids=["tanh", "silu", "logistic", "minibatch"],
)
def test_finite_width_converges_512_to_8192(kw, batch_size):
    X, y, _ = _inputs(4, 3, seed=2)
    model = zlimit.MLP(**kw)
    batches = None if batch_size is None else zlimit.batch_schedule(4, batch_size, 5, seed=0)
    _, devs, slope, (diff, se, dof) = _finite_study(model, X, y, batches, [512, 1024, 2048, 4096, 8192],
                                                    seeds=12, steps=5, particles=400_000)
    assert -1.3 <= slope <= -0.3, (slope, devs)
    assert_within_se(diff, 0.0, se, dof=dof)


def test_gradient_independence_is_wrong_after_first_step():
    """Dropping Ż disagrees with width-2048 nets beyond the t threshold at every step from the
    second on, while the full engine agrees within it (seed means of 16 nets against 16
    particle groups: min(16, 16) − 1 = 15 degrees of freedom, conservative for the combined
    se; 12 comparisons: 5.3 se).

    Width 2048, not 4096, buys the seeds at a quarter of the cost each: the full engine's
    largest |z| is ~1.4 there (the 1/n bias is still far below the 5.3 se), and the
    ablation's smallest per-step maximum ~27."""
    X, y, _ = _inputs(4, 3, seed=0)
    model = zlimit.MLP(**DEPTH3)
    T, seeds, groups = 4, 16, 16
    f = np.stack([train_finite(model, X, y, width=2048, steps=T, seed=s).outputs for s in range(seeds)])
    mean, spread = f.mean(0), f.std(0, ddof=1) / np.sqrt(seeds)
    for ablate in (False, True):
        run = simulate(model, X, y, steps=T, particles=200_000, groups=groups, progress=False,
                       gradient_independence=ablate)
        se = np.sqrt(spread[2:] ** 2 + run.outputs_se[2:] ** 2)
        dof = min(seeds, run.groups) - 1
        if not ablate:
            assert_within_se(run.outputs[2:], mean[2:], se, dof=dof)
        else:
            z = np.abs(run.outputs - mean)[2:] / se
            assert np.all(z.max(1) > t_threshold(dof, z.size)), z


# ------------------------------------------------------------------ properties
def test_full_schedule_equals_full_batch_and_eval_inputs_do_not_train():
    X, y, X_eval = _inputs(3, 3, seed=4, m_eval=2)
    model = zlimit.MLP(depth=3, activation="silu", lr=0.5)
    kw = dict(steps=3, particles=4_000, groups=2, progress=False, seed=9)
    base = simulate(model, X, y, **kw)
    same = simulate(model, X, y, batches=[np.arange(3)] * 3, **kw)
    with_eval = simulate(model, X, y, X_eval=X_eval, **kw)
    assert np.array_equal(base.outputs_groups, same.outputs_groups)
    # Evaluation rows change only the shapes of the BLAS calls and of the input QR, so
    # training numbers agree to round-off; leakage through the Gaussian bases would
    # show at the Monte Carlo scale (~1e-2 here), eight orders of magnitude above RTOL.
    assert_close(with_eval.outputs_groups[:, :, :3], base.outputs_groups)
    assert_close(with_eval.kernel_groups(2, "h")[:, :, :3, :3], base.kernel_groups(2, "h"))


def test_kernels_and_novelty_shapes_and_first_layer_law():
    """E[Z^{h^1_0} Z^{h^1_0}'] = σ_1² ξ·ξ'/d within Monte Carlo error (the t threshold)."""
    X, y, X_eval = _inputs(3, 4, seed=8, m_eval=1)
    model = zlimit.MLP(depth=2, activation="tanh", lr=0.5, init_std=[1.5, 1.0, 1.0])
    run = simulate(model, X, y, steps=2, particles=96_000, groups=32, X_eval=X_eval, progress=False)
    X_all = np.vstack([X, X_eval])
    k0 = run.kernel_groups(1, "h")[:, 0]
    assert_within_se(k0.mean(0), 1.5 ** 2 * X_all @ X_all.T / 4, group_se(k0), dof=run.groups - 1)
    assert run.novelty["fwd2"].shape == (32, 3, 4)
    assert np.all(np.isnan(run.novelty["bwd2"][:, -1]))  # no backward pass at the last step
    assert np.all(run.novelty["fwd2"][:, 0] > 0)


def test_same_seed_same_bits_across_thread_counts(tmp_path):
    """One seed gives identical bits with 1 and 2 numba threads (counter-based streams)."""
    script = textwrap.dedent("""
        import sys, numpy as np, zlimit
        rng = np.random.default_rng(0)
        X = rng.standard_normal((3, 3)); y = np.array([1.0, -1.0, 1.0])
        run = zlimit.simulate(zlimit.MLP(depth=3, activation="gelu", lr=0.5), X, y, steps=3,
                              particles=6000, groups=2, seed=4, progress=False, X_eval=X[:1] + 0.5)
        np.save(sys.argv[1], np.concatenate([run.outputs_groups.ravel(), run.kernel_groups(3, "h").ravel()]))
    """)
    out = {}
    for threads in ("1", "2"):
        path = tmp_path / f"t{threads}.npy"
        env = {"NUMBA_NUM_THREADS": threads, "PATH": "/usr/bin:/bin"}
        subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=env)
        out[threads] = np.load(path)
    assert out["1"].tobytes() == out["2"].tobytes()


# ------------------------------------------------------------------ bad input
MODEL = zlimit.MLP(depth=2, activation="tanh", lr=0.5)


@given(m=st.integers(1, 4), d=st.integers(1, 4), bad=st.sampled_from(["y_len", "x_ndim", "eval_d", "nan", "inf_eval"]))
def test_bad_data_raises_value_error(m, d, bad):
    X, y, X_eval = np.ones((m, d)), np.ones(m), np.ones((1, d))
    if bad == "y_len":
        y = np.ones(m + 1)
    elif bad == "x_ndim":
        X = np.ones(m)
    elif bad == "eval_d":
        X_eval = np.ones((1, d + 1))
    elif bad == "nan":
        X = X.copy(); X[0, 0] = np.nan
    else:
        X_eval = X_eval.copy(); X_eval[0, -1] = np.inf
    with pytest.raises(ValueError):
        simulate(MODEL, X, y, X_eval=X_eval, steps=1, particles=100, groups=2, progress=False)


@pytest.mark.parametrize("kw, field", [
    (dict(particles=1), "particles"), (dict(groups=0), "groups"), (dict(particles=10, groups=8), "particles"),
    (dict(dtype="float16"), "dtype"), (dict(method="quadrature"), "method"),
    (dict(parametrization="sp"), "parametrization"), (dict(record_steps=(5,)), "record_steps"),
    (dict(basis_tol=2.0), "basis_tol"), (dict(steps=-1), "steps"), (dict(batches=[[0, 7]]), "batches"),
])
def test_bad_settings_name_the_field(kw, field):
    args = dict(steps=1, particles=100, groups=2, progress=False) | kw
    with pytest.raises(ValueError, match=field):
        simulate(MODEL, np.ones((2, 2)), np.ones(2), **args)


def test_exact_method_needs_linear_activation():
    with pytest.raises(ValueError, match="linear"):
        simulate(MODEL, np.ones((2, 2)), np.ones(2), steps=1, method="exact")


def test_divergence_names_the_step():
    model = zlimit.MLP(depth=2, activation="linear", lr=1e6)
    with pytest.raises(DivergenceError, match=r"step \d+.*smaller lr"):
        simulate(model, np.ones((2, 2)), np.array([1.0, -1.0]), steps=20, particles=200, groups=2,
                 progress=False)


def test_memory_estimate_refuses_impossible_runs():
    with pytest.raises(ResourceError, match="particles"):
        simulate(MODEL, np.ones((10, 2)), np.ones(10), steps=10_000, particles=10**9, groups=1,
                 progress=False)
