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

import dataclasses
import json
import math
import os
import sys
import warnings

import numpy as np
import pytest
from scipy import stats

import zlimit
from zlimit import datasets
from zlimit.compare import TABLE_COLUMNS, Comparison, DeviationFit, compare, deviation_fit
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
    with pytest.warns(zlimit.MonteCarloWarning, match="no reliable slope"):
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
    panels = {ax.get_label(): ax for ax in fig.axes if ax.get_visible()}
    assert isinstance(fig, Figure) and {"outputs 0", f"outputs {M_TRAIN}"} <= set(panels)
    ax = panels[f"outputs {M_TRAIN}"]
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["n = ∞"].get_ydata(), lim.outputs[:, M_TRAIN])
    np.testing.assert_allclose(lines["n = 4096"].get_ydata(), comparison.outputs(4096)[:, :, M_TRAIN].mean(axis=0))

    fig = plot.deviation(comparison)
    ax = fig.axes[0]
    points = [line for line in ax.get_lines() if line.get_marker() == "o"]
    filled = [line for line in points if line.get_markerfacecolor() != "none"]
    above = comparison.fit.above_floor
    np.testing.assert_allclose(filled[0].get_ydata(), comparison.fit.deviations[above])
    hollow = [line for line in points if line.get_markerfacecolor() == "none"]
    np.testing.assert_allclose(np.concatenate([line.get_ydata() for line in hollow]) if hollow else [],
                               comparison.fit.deviations[~above])

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

    ests = [diagnostics.min_eigenvalue(diagnostics.gram_per_group(lim, 2, "h", step=t)) for t in range(STEPS + 1)]
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


# ---------------------------------------------------------------------- fit reliability
def _floor_problem(devs, seeds=2, e=0.01):
    """A limit of two groups base ± e (standard error exactly e at every entry, so the noise
    floor is e) and, per width, identical seeds at base + dev·(±1) (RMS offset dev)."""
    rng = np.random.default_rng(3)
    T1, M = 4, 3
    base = rng.standard_normal((T1, M))
    limit = _fake_limit(np.stack([base + e, base - e]))
    sign = np.where(rng.random((T1, M)) < 0.5, -1.0, 1.0)
    widths = [16 * 4 ** k for k in range(len(devs))]
    finite = {w: np.repeat((base + d * sign)[None], seeds, axis=0) for w, d in zip(widths, devs)}
    return limit, finite


def test_fit_warns_on_two_widths():
    """The issue's test: two widths never give a headline rate, even both above the floor."""
    limit, finite = _floor_problem([0.2, 0.05])
    with pytest.warns(zlimit.MonteCarloWarning, match=r"^no reliable slope: 2 of 2 widths lie above the Monte "
                                                      r"Carlo noise floor, and a rate needs 3;") as record:
        fit = deviation_fit(limit, finite)
    assert len(record) == 1 and str(record[0].message) == str(fit)
    assert record[0].filename == __file__  # the warning points at the caller
    np.testing.assert_allclose(fit.noise_floor, 0.01, rtol=1e-12)
    np.testing.assert_allclose(fit.deviations, [0.2, 0.05], rtol=1e-12)
    assert fit.above_floor.tolist() == [True, True] and fit.reliable is False
    assert str(fit).startswith("no reliable slope") and "is not a convergence rate" in str(fit)
    d = fit.to_dict()
    assert d["above_floor"] == [True, True] and d["reliable"] is False
    assert json.loads(json.dumps(d))["reliable"] is False


def test_fit_warns_on_four_widths_with_two_above_the_floor():
    limit, finite = _floor_problem([0.1, 0.03, 0.005, 0.002])
    with pytest.warns(zlimit.MonteCarloWarning, match="2 of 4 widths lie above the Monte Carlo noise floor"):
        fit = deviation_fit(limit, finite)
    assert fit.above_floor.tolist() == [True, True, False, False] and not fit.reliable
    assert fit.to_dict()["above_floor"] == [True, True, False, False]


def test_fit_with_three_widths_above_the_floor_is_a_rate():
    devs = np.array([0.2, 0.09, 0.06])  # not an exact power law: the slope has an error
    limit, finite = _floor_problem(devs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = deviation_fit(limit, finite)
    assert fit.reliable and fit.above_floor.tolist() == [True, True, True]
    reg = stats.linregress(np.log(fit.widths), np.log(devs))
    q = stats.t.ppf(0.975, 1)  # 95% Student-t, k − 2 = 1 dof
    low, high = fit.slope_interval()
    assert (low, high) == pytest.approx((reg.slope - q * reg.stderr, reg.slope + q * reg.stderr), rel=1e-10)
    assert str(fit) == (f"deviation ~ n^{reg.slope:.2f} ({low:.2f}..{high:.2f}, 95% t-interval, k−2 = 1 dof) "
                        f"over widths 16..256, 3 of 3 above the noise floor, 2 seed(s) per width")
    assert fit.to_dict()["reliable"] is True


# ---------------------------------------------------------------------- repr
def _fake_run(kind, T, M, G=1, width=None, seed=0, rng=None):
    rng = rng or np.random.default_rng(0)
    meta = {"kind": kind, "steps": T, "m": M, "m_eval": 0, "seed": seed}
    meta.update({"width": width, "parametrization": "mup"} if kind == "finite" else
                {"method": "mc", "particles": 4000 * G, "groups": G})
    return Run(model=zlimit.MLP(depth=3, activation="relu", lr=0.25), meta=meta,
               outputs_groups=rng.standard_normal((G, T + 1, M)), loss_groups=rng.random((G, T + 1)),
               error_signals_groups=np.zeros((G, T, M)))


def _fake_comparison(widths, seeds, T=100, M=5):
    from zlimit.compare import _assemble
    rng = np.random.default_rng(1)
    limit = _fake_run("limit", T, M, G=8, rng=rng)
    finite = {(w, s): _fake_run("finite", T, M, width=w, seed=s, rng=rng) for w in widths for s in seeds}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zlimit.MonteCarloWarning)
        return _assemble(limit, finite, list(widths), list(seeds), "mup", stacklevel=1)


def test_repr_is_one_screen():
    cmp = _fake_comparison([64, 128, 256, 512], [0, 1, 2])
    text = repr(cmp)
    assert len(text) < 2000 and text.count("\n") < 15, text
    for part in ("μP", "depth L = 3", "relu", "lr η = 0.25", "n = 64, 128, 256, 512", "0, 1, 2 (3 per width)",
                 "T = 100", "M = 5", "N = 32,000", "G = 8", "95% t-interval, G−1 = 7 dof", str(cmp.fit)):
        assert part in text, part
    html = cmp._repr_html_()
    assert html.startswith("<div>") and "<table>" in html and "G = 8" in html and len(html) < 4000
    many = _fake_comparison(list(range(8, 20)), list(range(15)), T=3, M=2)
    assert len(repr(many)) < 2000 and "…" in repr(many)


def test_repr_never_raises():
    broken = Comparison(limit=None, finite={}, table=None, fit=None)
    assert repr(broken).startswith("Comparison") and "unavailable" in repr(broken)
    assert "unavailable" in broken._repr_html_()


# ---------------------------------------------------------------------- progress
def test_progress_is_off_by_default_when_stderr_is_not_a_terminal(problem, capsys):
    model, X, y, _ = problem
    args = dict(widths=[8, 16], seeds=1, steps=1, particles=200, groups=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zlimit.MonteCarloWarning)
        compare(model, X[:2], y[:2], **args)
        assert "zlimit.compare" not in capsys.readouterr().err
        compare(model, X[:2], y[:2], progress=True, **args)
        err = capsys.readouterr().err
        assert "zlimit.compare (finite nets)" in err and "zlimit.train_finite" not in err  # one bar over the nets
    with pytest.raises(ValueError, match="progress must be True, False or None"):
        compare(model, X[:2], y[:2], progress="yes", **args)


# ---------------------------------------------------------------------- save / load
@pytest.fixture(scope="module")
def small(problem):
    model, X, y, X_eval = problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zlimit.MonteCarloWarning)
        return compare(model, X[:3], y[:3], X_eval=X_eval[:2], widths=[8, 16, 24], seeds=[4, 2], steps=2,
                       particles=400, groups=2, progress=False)


def _assert_runs_equal(a: Run, b: Run):
    for f in dataclasses.fields(Run):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, dict) and f.name != "meta":
            assert sorted(x) == sorted(y), f.name
            for k in x:
                np.testing.assert_array_equal(x[k], y[k], err_msg=f"{f.name}[{k}]")
        elif isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=f.name)
        else:
            assert x == y, f.name


def _load_quietly(path):
    from zlimit.compare import load
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zlimit.MonteCarloWarning)
        return load(path)


def test_save_load_round_trip(small, tmp_path):
    assert small.limit.moments and all(run.moments for run in small.finite.values())
    path = small.save(tmp_path / "cmp")
    assert path == tmp_path / "cmp" and sorted(p.name for p in tmp_path.iterdir()) == ["cmp"]
    with pytest.warns(zlimit.MonteCarloWarning) as record:  # the fit is rebuilt, and warns again
        Comparison.load(path)
    assert record[0].filename == __file__
    back = _load_quietly(path)
    assert back.widths == small.widths and back.seeds == small.seeds and back.parametrization == "mup"
    _assert_runs_equal(back.limit, small.limit)
    assert sorted(back.finite) == sorted(small.finite)
    for k, run in small.finite.items():
        _assert_runs_equal(back.finite[k], run)
    assert back.table.equals(small.table)
    for f in dataclasses.fields(type(small.fit)):
        np.testing.assert_array_equal(getattr(back.fit, f.name), getattr(small.fit, f.name), err_msg=f.name)
    assert back.coord_data().equals(small.coord_data())
    assert Comparison.load(str(path)).table.equals(small.table)


def test_save_replaces_a_saved_comparison_and_refuses_anything_else(small, tmp_path):
    other = _fake_comparison([8, 16], [0], T=2, M=5)
    path = tmp_path / "cmp"
    other.save(path)
    small.save(path)                                   # a saved comparison is replaced
    assert _load_quietly(path).widths == [8, 16, 24]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp"]
    (tmp_path / "empty").mkdir()
    small.save(tmp_path / "empty")                     # so is an empty folder
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match=r"mine is a folder that does not hold a saved Comparison; refusing"):
        small.save(mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        small.save(tmp_path / "f")
    with pytest.raises(ValueError, match="path must be a str or os.PathLike"):
        small.save(3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp", "empty", "f", "mine"]


def test_a_failed_save_keeps_the_old_comparison(small, tmp_path, monkeypatch):
    path = tmp_path / "cmp"
    small.save(path)
    before = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    calls = []

    def failing(run, target):
        calls.append(target)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return zlimit.io.save(run, target)

    monkeypatch.setattr(Run, "save", failing)
    with pytest.raises(OSError, match="No space"):
        _fake_comparison([8, 16], [0], T=2, M=5).save(path)
    assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp"]  # no temporary folder left


def test_load_refuses_what_is_not_a_saved_comparison(small, tmp_path):
    from zlimit.compare import load
    with pytest.raises(ValueError, match=r"is not a saved zlimit Comparison \(a folder with comparison.json"):
        load(tmp_path)
    with pytest.raises(ValueError, match="is not a saved zlimit Comparison"):
        load(tmp_path / "nothing")
    path = small.save(tmp_path / "cmp")
    info = path / "comparison.json"
    good = info.read_text()
    for text, match in (("{", "not a readable saved Comparison"),
                        (good.replace('"zlimit-comparison"', '"other"'), "does not declare format"),
                        (good.replace('"format_version": 1', '"format_version": 9'), "upgrade zlimit"),
                        (good.replace('"parametrization": "mup"', '"parametrization": "sp"'), "parametrization")):
        info.write_text(text)
        with pytest.raises(ValueError, match=match) as exc:
            load(path)
        assert "\n" not in str(exc.value)
    info.write_text(good)
    (path / "finite" / "w16_s2.npz").rename(path / "finite" / "w16_s9.npz")
    with pytest.raises(ValueError, match=r"w16_s2.npz is missing: the saved Comparison is incomplete"):
        load(path)
    (path / "finite" / "w16_s9.npz").rename(path / "finite" / "w16_s2.npz")
    (path / "finite" / "w8_s4.npz").write_bytes((path / "finite" / "w24_s4.npz").read_bytes())
    with pytest.raises(ValueError, match=r"w8_s4.npz does not hold the net of width 8 and seed 4 but n = 24"):
        load(path)


def test_a_failed_rename_puts_the_old_comparison_back(small, tmp_path, monkeypatch):
    import zlimit.compare as zc
    path = small.save(tmp_path / "cmp")
    before = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    real = os.rename

    def rename(src, dst):
        if str(src).endswith(".tmp"):  # the new folder into place
            raise OSError(18, "Invalid cross-device link")
        return real(src, dst)

    monkeypatch.setattr(zc.os, "rename", rename)
    with pytest.raises(OSError, match="cross-device"):
        _fake_comparison([8, 16], [0], T=2, M=5).save(path)
    assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp"]


def test_to_dataframe_is_a_copy_of_the_table():
    cmp = _fake_comparison([8, 16], [0, 1], T=2, M=3)
    df = cmp.to_dataframe()
    assert df.equals(cmp.table) and tuple(df.columns) == TABLE_COLUMNS
    df.loc[:, "value"] = 0.0
    assert not cmp.table["value"].eq(0.0).all()


def test_one_seed_never_gives_a_reliable_rate():
    """With one seed the noise floor lacks the seed-to-seed spread, so pure seed noise lies
    above it at every width: the fit must not read as a convergence rate."""
    n = np.array([16, 64, 256, 1024])
    one = DeviationFit(-0.5, 0.01, 0.0, n, n ** -0.5, np.full(4, 1e-4), np.full(4, np.nan), np.full(4, 1e-4), 1)
    assert one.above_floor.all() and not one.reliable
    assert str(one).startswith("no reliable slope: one seed per width")
    two = dataclasses.replace(one, seeds=2)
    assert two.reliable and str(two).startswith("deviation ~ n^-0.50")
