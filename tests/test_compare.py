"""zlimit.compare: finite networks against the limit, the tidy table and the deviation fit;
and the figures of zlimit.plot drawn from a comparison.

References used here, independent of the code under test:
* maths §4: the seed mean of finite μP networks approaches the limit with a spread
  ~ n^{-1/2} and a bias ~ n^{-1}, so the log-log slope of the deviation lies in
  [−1.3, −0.3] (the interval leaves room for the noise floors);
* the deviation recomputed from the table with pandas, the slope from numpy.polyfit
  and its standard error from scipy.stats.linregress;
* synthetic outputs with an exactly known power law.
"""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from scipy import stats

import zlimit
from zlimit import datasets
from zlimit.compare import TABLE_COLUMNS, Comparison, compare, deviation_fit
from zlimit._results import Run

WIDTHS = [64, 128, 256, 512, 1024, 2048, 4096]
SEEDS = 8
STEPS = 4
M_TRAIN, M_EVAL = 6, 18
# Many evaluation inputs in d = 16 make the RMS deviation average over many nearly
# independent output directions, so its width-to-width fluctuation (and the slope's) is
# small; 400k particles keep the limit's own Monte Carlo error below the n = 4096 spread.


@pytest.fixture(scope="module")
def problem():
    X, y = datasets.gaussian(M_TRAIN + M_EVAL, 16, seed=1)
    model = zlimit.MLP(depth=2, activation="tanh", lr=0.5)
    return model, X[:M_TRAIN], y[:M_TRAIN], X[M_TRAIN:]


@pytest.fixture(scope="module")
def comparison(problem) -> Comparison:
    model, X, y, X_eval = problem
    return compare(model, X, y, X_eval=X_eval, widths=WIDTHS, seeds=SEEDS, steps=STEPS,
                   particles=400_000, groups=8, seed=0, progress=False)


# ---------------------------------------------------------------------- table
def test_table_shape_and_columns(comparison):
    t = comparison.table
    assert tuple(t.columns) == TABLE_COLUMNS
    M, T1 = M_TRAIN + M_EVAL, STEPS + 1
    per_finite = T1 * M + T1                       # outputs, loss
    per_limit = 2 * T1 * M + 2 * T1                # outputs, output_se, loss, loss_se
    assert len(t) == per_limit + len(WIDTHS) * SEEDS * per_finite
    lim = t[np.isinf(t["width"])]
    assert len(lim) == per_limit and set(lim["seed"]) == {-1}
    assert set(lim["quantity"]) == {"output", "output_se", "loss", "loss_se"}
    fin = t[np.isfinite(t["width"])]
    assert sorted(set(fin["width"])) == WIDTHS
    assert sorted(set(fin["seed"])) == list(range(SEEDS))
    assert set(fin["quantity"]) == {"output", "loss"}
    assert set(t.loc[t["quantity"].isin(["loss", "loss_se"]), "input"]) == {-1}
    assert sorted(comparison.finite) == sorted((w, s) for w in WIDTHS for s in range(SEEDS))
    assert comparison.widths == WIDTHS and comparison.seeds == list(range(SEEDS))


def _pivot(t, width, seed, quantity):
    sel = t[(t["width"] == width) & (t["seed"] == seed) & (t["quantity"] == quantity)]
    if quantity.startswith("loss"):
        return sel.sort_values("step")["value"].to_numpy()
    return sel.pivot(index="step", columns="input", values="value").to_numpy()


def test_table_values_equal_runs(comparison):
    t, lim = comparison.table, comparison.limit
    np.testing.assert_array_equal(_pivot(t, math.inf, -1, "output"), lim.outputs)
    np.testing.assert_array_equal(_pivot(t, math.inf, -1, "output_se"), lim.outputs_se)
    np.testing.assert_array_equal(_pivot(t, math.inf, -1, "loss"), lim.loss)
    np.testing.assert_array_equal(_pivot(t, math.inf, -1, "loss_se"), lim.loss_se)
    for (w, s) in [(64, 0), (1024, 3), (4096, 7)]:
        run = comparison.finite[(w, s)]
        assert run.meta["width"] == w and run.meta["seed"] == s and run.meta["parametrization"] == "mup"
        np.testing.assert_array_equal(_pivot(t, w, s, "output"), run.outputs)
        np.testing.assert_array_equal(_pivot(t, w, s, "loss"), run.loss)
    assert lim.meta["kind"] == "limit" and lim.groups == 8


# ---------------------------------------------------------------------- fit
def test_deviation_recomputed_from_table(comparison):
    t = comparison.table
    out = t[(t["quantity"] == "output") & (t["step"] >= 1)]
    limit = out[np.isinf(out["width"])].set_index(["step", "input"])["value"]
    fin = out[np.isfinite(out["width"])]
    seed_mean = fin.groupby(["width", "step", "input"])["value"].mean()
    dev = [float(np.sqrt(((seed_mean.loc[w] - limit) ** 2).mean())) for w in WIDTHS]
    fit = comparison.fit
    np.testing.assert_allclose(fit.deviations, dev, rtol=1e-12)
    np.testing.assert_array_equal(fit.widths, WIDTHS)
    slope, intercept = np.polyfit(np.log(WIDTHS), np.log(dev), 1)
    assert fit.slope == pytest.approx(slope, rel=1e-10)
    assert fit.intercept == pytest.approx(intercept, rel=1e-10)
    assert fit.slope_se == pytest.approx(stats.linregress(np.log(WIDTHS), np.log(dev)).stderr, rel=1e-10)
    # noise floors: limit se RMS over (t >= 1, inputs), seed-mean se from the seed spread
    lse = t[(t["quantity"] == "output_se") & (t["step"] >= 1)]["value"].to_numpy()
    np.testing.assert_allclose(fit.limit_se, np.sqrt(np.mean(lse ** 2)), rtol=1e-12)
    var = fin.groupby(["width", "step", "input"])["value"].var(ddof=1)
    smse = [float(np.sqrt((var.loc[w] / SEEDS).mean())) for w in WIDTHS]
    np.testing.assert_allclose(fit.seed_mean_se, smse, rtol=1e-10)
    np.testing.assert_allclose(fit.noise_floor, np.hypot(fit.limit_se, fit.seed_mean_se), rtol=1e-12)


def test_deviation_exponent_matches_maths_section_4(comparison):
    fit = comparison.fit
    assert -1.3 <= fit.slope <= -0.3, str(fit)
    # the widest networks are closer to the limit than the narrowest
    assert fit.deviations[-1] < fit.deviations[0] / 3


def _fake_limit(outputs_groups: np.ndarray) -> Run:
    G, T1, M = outputs_groups.shape
    model = zlimit.MLP(depth=1)
    return Run(model=model, meta={"kind": "limit"}, outputs_groups=outputs_groups,
               loss_groups=np.zeros((G, T1)), error_signals_groups=np.zeros((G, T1 - 1, M)))


def test_deviation_fit_exact_power_law():
    rng = np.random.default_rng(0)
    T1, M, G = 5, 3, 4
    base = rng.standard_normal((T1, M))
    offsets = rng.standard_normal((G, T1, M)) * 1e-3
    offsets -= offsets.mean(axis=0)                 # group mean = base exactly
    limit = _fake_limit(base + offsets)
    direction = rng.standard_normal((T1, M))
    widths = [16, 64, 256, 1024]
    # every seed identical: seed mean = limit + 3 n^{-1} direction, exactly
    finite = {w: np.repeat((base + 3.0 / w * direction)[None], 2, axis=0) for w in widths}
    fit = deviation_fit(limit, finite)
    rms = float(np.sqrt(np.mean(direction[1:] ** 2)))
    np.testing.assert_allclose(fit.deviations, [3.0 / w * rms for w in widths], rtol=1e-9)
    assert fit.slope == pytest.approx(-1.0, abs=1e-9)
    assert fit.slope_se == pytest.approx(0.0, abs=1e-8)
    assert fit.intercept == pytest.approx(math.log(3.0 * rms), abs=1e-9)
    np.testing.assert_allclose(fit.predict(widths), fit.deviations, rtol=1e-8)
    np.testing.assert_array_equal(fit.seed_mean_se, 0.0)
    se = (base + offsets)[:, 1:].std(axis=0, ddof=1) / math.sqrt(G)
    np.testing.assert_allclose(fit.limit_se, np.sqrt(np.mean(se ** 2)), rtol=1e-12)
    assert fit.seeds == 2
    d = fit.to_dict()
    assert d["widths"] == widths and d["slope"] == fit.slope


def test_deviation_fit_two_widths_has_no_slope_error():
    limit = _fake_limit(np.zeros((2, 3, 2)))
    finite = {w: np.full((1, 3, 2), 1.0 / w) for w in (10, 100)}
    fit = deviation_fit(limit, finite)
    assert fit.slope == pytest.approx(-1.0) and math.isnan(fit.slope_se)
    assert np.all(np.isnan(fit.seed_mean_se))       # one seed: no seed spread


# ---------------------------------------------------------------------- options
def test_seed_list_and_ntk(problem):
    model, X, y, _ = problem
    cmp = compare(model, X[:3], y[:3], widths=[16, 32], seeds=[5, 9], steps=2, particles=400, groups=2,
                  parametrization="ntk", progress=False)
    assert cmp.seeds == [5, 9] and cmp.parametrization == "ntp"
    assert cmp.limit.meta.get("parametrization") == "ntk"
    assert {r.meta["parametrization"] for r in cmp.finite.values()} == {"ntp"}
    assert {r.meta["seed"] for r in cmp.finite.values()} == {5, 9}
    # the kernel limit starts at f_0 = 0 and its features never move
    np.testing.assert_array_equal(cmp.limit.outputs[0], 0.0)
    k = cmp.limit.kernel(1, "h")
    np.testing.assert_array_equal(k, np.broadcast_to(k[0], k.shape))


def test_shared_batches(problem):
    model, X, y, _ = problem
    batches = zlimit.batch_schedule(M_TRAIN, 2, 3, seed=1)
    cmp = compare(model, X, y, widths=[16, 32], seeds=1, steps=3, particles=1000, groups=2, batches=batches,
                  progress=False)
    for run in [cmp.limit, *cmp.finite.values()]:
        chi = run.error_signals
        for t, b in enumerate(batches):
            outside = np.setdiff1d(np.arange(M_TRAIN), b)
            assert np.all(chi[t, outside] == 0) and np.all(chi[t, b] != 0)


@pytest.mark.parametrize("kwargs, match", [
    ({"parametrization": "sp"}, "parametrization"),
    ({"widths": []}, "widths"),
    ({"widths": [16, 16]}, "repeated"),
    ({"widths": [0]}, "widths"),
    ({"seeds": 0}, "seeds"),
    ({"seeds": [1.5]}, "seeds"),
    ({"seed": -1}, "seed"),
])
def test_invalid_arguments(problem, kwargs, match):
    model, X, y, _ = problem
    args = dict(widths=[16, 32], seeds=1, steps=1, particles=100, groups=2, progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        compare(model, X, y, **args)


def test_pandas_missing_is_a_clear_import_error(problem, monkeypatch):
    model, X, y, _ = problem
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        compare(model, X, y, widths=[16], seeds=1, steps=1, particles=100, groups=2, progress=False)


# ---------------------------------------------------------------------- plots
def test_plots_draw_the_comparison(comparison, tmp_path):
    from matplotlib.figure import Figure

    from zlimit import plot

    lim = comparison.limit
    fig = plot.trajectories(comparison, inputs=[0, M_TRAIN])
    assert isinstance(fig, Figure) and len([a for a in fig.axes if a.get_visible()]) == 2
    ax = fig.axes[1]
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["n = ∞"].get_ydata(), lim.outputs[:, M_TRAIN])
    np.testing.assert_allclose(lines["n = 4096"].get_ydata(), comparison.outputs(4096)[:, :, M_TRAIN].mean(axis=0))

    fig = plot.deviation(comparison)
    ax = fig.axes[0]
    points = [line for line in ax.get_lines() if line.get_marker() == "o"][0]
    np.testing.assert_allclose(points.get_ydata(), comparison.fit.deviations)

    runs = {w: [comparison.finite[(w, s)] for s in comparison.seeds] for w in (64, 4096)}
    fig = plot.coord_check(runs, limit=lim, layer_kinds=["h2", ("x", 1)], steps=[0, -1])
    ax = fig.axes[0]
    t0 = [line for line in ax.get_lines() if line.get_label() == "t = 0"][0]
    expect = [np.mean([np.sqrt(np.diag(comparison.finite[(w, s)].kernel(2, "h")[0]).mean())
                       for s in comparison.seeds]) for w in (64, 4096)]
    np.testing.assert_allclose(t0.get_ydata(), expect, rtol=1e-12)
    hlines = [line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert hlines[0] == pytest.approx(np.sqrt(np.diag(lim.kernel(2, "h")[0]).mean()), rel=1e-12)

    from zlimit import diagnostics

    ests = [diagnostics.min_eigenvalue(diagnostics.gram_groups(lim, 2, "h", step=t)) for t in range(STEPS + 1)]
    fig = plot.min_eigenvalue({"limit": (np.arange(STEPS + 1), ests)}, xlabel="step t")
    line = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), [e.value for e in ests])
    fig = plot.min_eigenvalue({"μP": ([64, 4096, math.inf], [0.1, 0.2, 0.25])})
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[-1] == "∞"
    for name, f in {"a.png": fig, "b.png": plot.trajectories(lim)}.items():
        f.savefig(tmp_path / name)
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_coord_check_takes_every_kind_of_key_string():
    """Keys as strings are parsed by the one key parser: "dh1" is layer 1 of kind "dh"
    (it used to be read as int("h1") and crash)."""
    from zlimit import plot

    X, y = zlimit.datasets.gaussian(3, 4, seed=0)
    model = zlimit.MLP(depth=2, lr=0.5)
    run = zlimit.train_finite(model, X, y, width=64, steps=3)
    fig = plot.coord_check({64: run}, layer_kinds=["dh1", "x2"], steps=[0, 2])
    ax = fig.axes[0]
    t0 = [line for line in ax.get_lines() if line.get_label() == "t = 0"][0]
    np.testing.assert_allclose(t0.get_ydata(), [np.sqrt(np.diag(run.kernel(1, "dh")[0]).mean())], rtol=1e-12)
    with pytest.raises(ValueError, match="not a zlimit Run key"):
        plot.coord_check({64: run}, layer_kinds=["q1"])


@pytest.mark.parametrize("seeds, seed, message", [
    (2**62, 0, r"seeds must be an integer in \[1, 10000\]"),  # used to build a list until memory ran out
    (2, 2**63 - 1, r"seed \+ seeds - 1 must be an integer in \[0, 9223372036854775807\]"),  # int64 overflow
    ([0, 2**63], 0, r"seeds\[1\] must be an integer in \[0, 9223372036854775807\]"),
])
def test_seed_counts_and_values_are_bounded(seeds, seed, message):
    """compare trains a net per seed and keeps seeds in an int64 column of its table."""
    from zlimit._validate import check_seeds
    with pytest.raises(ValueError, match=message):
        check_seeds("seeds", seeds, seed)
    assert check_seeds("seeds", 2, 2**63 - 2) == [2**63 - 2, 2**63 - 1]
