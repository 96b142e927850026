"""zlimit.plot and the figures and tables of zlimit._demo: what is drawn, and what it is called.

References, independent of the code under test:
* every band and error bar is the 95% Student-t interval of a mean over G groups with
  G − 1 dof: recomputed here as mean ± scipy.stats.t.ppf(0.975, G − 1) · std(ddof=1)/sqrt(G)
  from the runs' own per-seed or per-group arrays;
* plotted lines against the run arrays they show (seed means, limit outputs, losses,
  residuals = seed mean − limit);
* the hollow deviation points against dev <= floor on a hand-built DeviationFit.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from matplotlib.text import Text
from scipy import stats

import zlimit
from zlimit import datasets, plot
from zlimit.compare import DeviationFit, compare

M_TRAIN, M_EVAL, STEPS, WIDTHS, SEEDS, GROUPS = 3, 1, 3, [16, 64], 3, 4


@pytest.fixture(scope="module")
def problem():
    X, y = datasets.gaussian(M_TRAIN + M_EVAL, 4, seed=3)
    return zlimit.MLP(depth=2, activation="tanh", lr=0.5), X[:M_TRAIN], y[:M_TRAIN], X[M_TRAIN:]


@pytest.fixture(scope="module")
def cmp(problem):
    model, X, y, X_eval = problem
    with pytest.warns(zlimit.MonteCarloWarning):  # two widths: no reliable slope
        return compare(model, X, y, X_eval=X_eval, widths=WIDTHS, seeds=SEEDS, steps=STEPS, particles=800,
                       groups=GROUPS, progress=False)


def t_half(per_group: np.ndarray) -> np.ndarray:
    """Half-width of the 95% t-interval of the mean over axis 0 (G − 1 dof), by hand."""
    g = per_group.shape[0]
    return stats.t.ppf(0.975, g - 1) * per_group.std(axis=0, ddof=1) / math.sqrt(g)


def texts(fig) -> list[str]:
    """Every text of the figure: titles, labels, tick labels, legends, notes."""
    return [t.get_text() for t in fig.findobj(Text)]


def legend_texts(fig) -> list[str]:
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [t.get_text() for leg in legends for t in [leg.get_title(), *leg.get_texts()]]


def axes_by_label(fig) -> dict:
    return {ax.get_label(): ax for ax in fig.axes}


def line(ax, label: str):
    (found,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return found


def band_edges(collection, x) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of a fill_between polygon at each x."""
    v = collection.get_paths()[0].vertices
    low = np.array([v[np.isclose(v[:, 0], xi), 1].min() for xi in x])
    high = np.array([v[np.isclose(v[:, 0], xi), 1].max() for xi in x])
    return low, high


def has_band(ax, x, low, high) -> bool:
    return any(np.allclose(band_edges(c, x), (low, high), rtol=1e-10, atol=1e-12) for c in ax.collections)


# ---------------------------------------------------------------------- trajectories
def test_trajectories_panels_hold_the_run_arrays(cmp, problem):
    """Outputs, residuals and loss per width against the runs; every band is the t-interval."""
    y = problem[2]
    lim = cmp.limit
    fig = plot.trajectories(cmp, y=y)
    inputs = list(range(M_TRAIN + M_EVAL))
    assert list(axes_by_label(fig)) == ([f"outputs {i}" for i in inputs] + [f"residuals {i}" for i in inputs]
                                        + ["loss"])
    axes, steps = axes_by_label(fig), np.arange(STEPS + 1)
    for i in inputs:
        out, res = axes[f"outputs {i}"], axes[f"residuals {i}"]
        f_lim = lim.outputs_groups[:, :, i]  # (G, T+1)
        np.testing.assert_allclose(line(out, "n = ∞").get_ydata(), f_lim.mean(axis=0), rtol=1e-13)
        assert has_band(out, steps, f_lim.mean(axis=0) - t_half(f_lim), f_lim.mean(axis=0) + t_half(f_lim))
        assert has_band(res, steps, -t_half(f_lim), t_half(f_lim))  # the limit's band, around 0
        for w in WIDTHS:
            per_seed = np.array([cmp.finite[(w, s)].outputs[:, i] for s in cmp.seeds])  # (S, T+1)
            mean = per_seed.mean(axis=0)
            np.testing.assert_allclose(line(out, f"n = {w}").get_ydata(), mean, rtol=1e-13)
            assert has_band(out, steps, mean - t_half(per_seed), mean + t_half(per_seed))
            np.testing.assert_allclose(line(res, f"n = {w}").get_ydata(), mean - f_lim.mean(axis=0),
                                       rtol=1e-12, atol=1e-15)
        targets = [ln for ln in out.get_lines() if ln.get_label() == "target $y$"]
        if i < M_TRAIN:
            assert len(targets) == 1 and np.all(np.asarray(targets[0].get_ydata()) == y[i])
        else:
            assert targets == []  # no target is known for an evaluation input
    loss = axes["loss"]
    np.testing.assert_allclose(line(loss, "n = ∞").get_ydata(), lim.loss_groups.mean(axis=0), rtol=1e-13)
    lg = lim.loss_groups
    assert has_band(loss, steps, lg.mean(axis=0) - t_half(lg), lg.mean(axis=0) + t_half(lg))
    for w in WIDTHS:
        per_seed = np.array([cmp.finite[(w, s)].loss for s in cmp.seeds])
        np.testing.assert_allclose(line(loss, f"n = {w}").get_ydata(), per_seed.mean(axis=0), rtol=1e-13)
        assert has_band(loss, steps, per_seed.mean(axis=0) - t_half(per_seed),
                        per_seed.mean(axis=0) + t_half(per_seed))
    assert loss.get_yscale() == "log"  # a positive loss


def test_trajectories_panels_can_be_left_out(cmp):
    fig = plot.trajectories(cmp, inputs=[1], residuals=False, loss=False)
    assert list(axes_by_label(fig)) == ["outputs 1"]
    assert list(axes_by_label(plot.trajectories(cmp.limit, inputs=[0]))) == ["outputs 0", "loss"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(residuals=True), r"residuals=True needs finite widths and their limit"),
    (dict(residuals="yes"), r"residuals must be True or False, got 'yes'"),
    (dict(loss=None), r"loss must be True or False, got None"),
    (dict(y=[1.0, 2.0]), r"y must have shape \(m,\) = \(3,\)"),
    (dict(y=[1.0, "a", 2.0]), r"y must be an array of real numbers"),
])
def test_trajectories_bad_arguments(cmp, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot.trajectories(cmp.limit, **kwargs)


def test_trajectories_no_targets_for_class_labels(problem):
    model = zlimit.MLP(depth=1, lr=0.5, outputs=2, loss="xent")
    X = problem[1]
    run = zlimit.train_finite(model, X, np.array([0, 1, 0]), width=8, steps=1)
    with pytest.raises(ValueError, match=r"^y: targets are drawn for real-valued targets; loss 'xent'"):
        plot.trajectories(run, y=[0, 1, 0])


@settings(max_examples=6)
@given(width=st.integers(1, 3000))
def test_a_finite_run_is_labelled_by_its_width_never_infinity(problem, width):
    model, X, y, X_eval = problem
    run = zlimit.train_finite(model, X, y, width=width, steps=1, X_eval=X_eval)
    fig = plot.trajectories(run)
    assert not any("∞" in t for t in texts(fig)), [t for t in texts(fig) if "∞" in t]
    assert f"n = {width}" in legend_texts(fig)
    for ax in fig.axes:  # one seed: a line per panel, no band
        assert [ln.get_label() for ln in ax.get_lines()] == [f"n = {width}"] and len(ax.collections) == 0


def test_only_the_limit_is_labelled_infinity(cmp):
    for ax in plot.trajectories(cmp).axes:
        labels = {ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")}
        finite = {f"n = {w}" for w in WIDTHS}
        assert labels == (finite if ax.get_label().startswith("residuals") else finite | {"n = ∞"})


# ---------------------------------------------------------------------- band wording
def test_legends_say_what_the_bands_are(cmp):
    runs = {w: [cmp.finite[(w, s)] for s in cmp.seeds] for w in WIDTHS}
    figures = {"trajectories": plot.trajectories(cmp), "coord_check": plot.coord_check(runs, limit=cmp.limit),
               "vs_width": plot.vs_width({"a": {"x": [16, math.inf], "value": [1.0, 2.0], "low": [0.5, 1.5],
                                               "high": [1.5, 2.5]}}, ylabel="v")}
    for name, fig in figures.items():
        words = " | ".join(texts(fig))
        assert "95% t-interval" in " ".join(legend_texts(fig)), name
        assert "95% t-interval, G−1 dof" in words, name
        for wrong in ("± 2 se", "± 1 se", "2 se", "± sd", "sd)"):
            assert wrong not in words, (name, wrong)
    legend = legend_texts(figures["trajectories"])
    assert f"seed-mean band: 95% t-interval, G−1 = {SEEDS - 1} dof (G = {SEEDS} seeds)" in legend
    assert f"n = ∞ band: 95% t-interval, G−1 = {GROUPS - 1} dof (G = {GROUPS} particle groups)" in legend


# ---------------------------------------------------------------------- deviation
def _fit(above: list[bool]) -> DeviationFit:
    """A power law dev = n^-1/2 with floors set so that exactly the ``above`` widths lie
    above them: the others alternate between a floor equal to the deviation and above it."""
    w = 16 * 4 ** np.arange(len(above))
    dev = w ** -0.5
    floor = np.array([d / 2 if up else (d if k % 2 else 2 * d) for k, (d, up) in enumerate(zip(dev, above))])
    return DeviationFit(-0.5, 0.01, 0.0, w, dev, floor, np.zeros(len(w)), floor, seeds=4)


@settings(max_examples=25)
@given(above=st.lists(st.booleans(), min_size=2, max_size=6))
def test_deviation_points_at_or_below_the_floor_are_hollow(above):
    fit = _fit(above)
    fig = plot.deviation(fit)
    ax = fig.axes[0]
    points = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
    drawn = {}
    for ln in points:
        for x, v in zip(ln.get_xdata(), ln.get_ydata()):
            drawn[int(x)] = (v, ln.get_markerfacecolor() == "none")
    assert sorted(drawn) == fit.widths.tolist()
    for w, d, f in zip(fit.widths, fit.deviations, fit.noise_floor):
        assert drawn[int(w)] == (d, bool(d <= f))
    assert ("at or below the noise floor" in legend_texts(fig)) == (not all(above))
    fits = [ln for ln in ax.get_lines() if ln.get_label().startswith("fit: slope")]
    notes = [t.get_text() for t in ax.texts]
    if sum(above) >= 3:
        (fl,) = fits
        np.testing.assert_allclose(fl.get_ydata(), fit.widths ** -0.5, rtol=1e-12)
        q = stats.t.ppf(0.975, len(above) - 2) * 0.01
        assert fl.get_label() == (f"fit: slope -0.50 ({-0.5 - q:.2f}..{-0.5 + q:.2f}, 95% t-interval, "
                                  f"k−2 = {len(above) - 2} dof)")
        assert notes == []
    else:
        assert fits == []
        verb = "lies" if sum(above) == 1 else "lie"
        assert notes == [f"slope not reliable: {sum(above)} of {len(above)} widths {verb} above the Monte Carlo "
                         "noise floor, and a rate needs 3"]


# ---------------------------------------------------------------------- coord check
def test_coord_check_log_axis_and_limit_interval(cmp):
    runs = {w: [cmp.finite[(w, s)] for s in cmp.seeds] for w in WIDTHS}
    fig = plot.coord_check(runs, limit=cmp.limit, layer_kinds=["h1"], steps=[0, -1])
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "RMS coordinate $\\sqrt{E[Z^2]}$"
    # the limit at step 0: the pooled size, with the t-interval of the per-group sizes
    (bar,) = [c for c in ax.containers if c.get_label() == f"n = ∞: 95% t-interval, G−1 = {GROUPS - 1} dof"]
    kg = cmp.limit.kernel_groups(1, "h")[:, 0]  # (G, M, M)
    per_group, value = np.sqrt(np.einsum("gaa->ga", kg).mean(axis=1)), np.sqrt(np.diag(kg.mean(axis=0)).mean())
    assert bar.lines[0].get_ydata()[0] == pytest.approx(value, rel=1e-12)
    ((_, lo), (_, hi)) = bar.lines[2][0].get_segments()[0]
    assert (lo, hi) == pytest.approx((value - t_half(per_group), value + t_half(per_group)), rel=1e-12)
    # width 16: the t-intervals over its seeds at steps 0 and T
    sizes = np.array([[np.sqrt(np.diag(cmp.finite[(16, s)].kernel(1, "h")[t]).mean()) for t in (0, STEPS)]
                      for s in cmp.seeds])  # (S, 2)
    halves = [(seg[1, 1] - seg[0, 1]) / 2 for c in ax.containers if c.lines[0] is None
              for seg in c.lines[2][0].get_segments() if np.isclose(seg[0, 0], 16)]
    assert sorted(halves) == pytest.approx(sorted(t_half(sizes)), rel=1e-10)


# ---------------------------------------------------------------------- demo tables and the paper figure
def test_coord_table_plus_minus_is_the_t_half_width(cmp):
    from zlimit._demo import coord_table

    lines = coord_table(cmp).splitlines()
    assert lines[0] == (f"± = half-width of the 95% t-interval, G−1 dof (G = {SEEDS} seeds per finite width, "
                        f"{GROUPS} particle groups at ∞)")
    f = cmp.limit.outputs_groups[:, STEPS, 0]
    assert f"{f.mean(): .4f} ± {t_half(f):.4f}" in lines[-1] and lines[-1].strip().startswith("∞")
    per_seed = np.array([[cmp.finite[(16, s)].loss[STEPS]] for s in cmp.seeds])
    row = [ln for ln in lines if ln.strip().startswith("16 ")][0]
    assert f"{per_seed.mean(): .4f} ± {t_half(per_seed)[0]:.4f}" in row


def _records():
    """Hand records of a paper figure: μP at widths 8, 64 and the limit (every quantity)."""
    from zlimit._demo import _QUANTITIES

    records = []
    for k, (p, w) in enumerate([("mup", 8.0), ("mup", 64.0), ("mup-limit", math.inf)]):
        for j, (q, layer) in enumerate(_QUANTITIES):
            v = 0.1 * (k + 1) * (j + 1)
            records.append({"parametrization": p, "width": w, "layer": layer, "quantity": q, "value": v,
                            "se": v / 10, "low": v - v / 4, "high": v + v / 4, "seeds": 3 if w < 100 else 0})
    settings = {"data": "digits", "m": 10, "m_eval": 10, "d": 64, "depth": 3, "activation": "silu", "lr": 0.1,
                "steps": 5, "widths": [8, 64], "seeds": 3, "parametrizations": ["mup"], "particles": 1000,
                "groups": 4, "timings": {"finite_s": 1.0, "limit_s": 2.0}}
    return records, settings


def test_paper_figure_bands_are_the_records_intervals():
    from zlimit._demo import PaperFigure, _paper_plots

    records, settings = _records()
    result = PaperFigure(records, settings, limit=None)
    figures = _paper_plots(result)
    ax = figures["heldout_mse.png"].axes[0]
    rs = result.select("heldout_mse", None, "mup")
    poly = [c for c in ax.collections if c.get_paths() and len(c.get_paths()[0].vertices) > 2][0]
    low, high = band_edges(poly, [8.0, 64.0])
    assert low == pytest.approx([r["low"] for r in rs]) and high == pytest.approx([r["high"] for r in rs])
    for fig in figures.values():
        words = " | ".join(texts(fig))
        assert "bands: 95% t-interval, G−1 dof" in words and "± 1 se" not in words


def test_paper_figure_repr_is_one_screen():
    from zlimit._demo import PaperFigure

    records, settings = _records()
    result = PaperFigure(records, settings, limit=None, files=["out/a.png", "out/b.csv"])
    text = repr(result)
    assert len(text.splitlines()) <= 7 and max(map(len, text.splitlines())) < 400 and len(text) < 1500
    assert text.startswith("PaperFigure: digits, 10 samples (10 held out), depth-3 silu, lr 0.1, T = 5")
    assert "n = ∞ (± = half-width of the 95% t-interval, G−1 = 3 dof)" in text
    assert "held-out MSE 1.5 ± 0.38" in text  # value 0.1·3·5, half-width high − value = value / 4
    assert "files: 2 written (out)" in text
    page = result._repr_html_()
    assert page.count("<tr>") == 1 + 3 and "95% t-interval, G−1 dof" in page and "<caption>" in page
    summary = result.summary().splitlines()
    assert summary[0].startswith("± = half-width of the 95% t-interval, G−1 dof")


def test_paper_figure_records_are_t_intervals():
    """Finite values over seeds (S − 1 dof), the limit's over particle groups (G − 1 dof)."""
    X, y = datasets.digits(per_class=5)
    X_eval, y_eval = datasets.digits(per_class=5, exclude=X)
    result = zlimit.paper_figure(steps=1, widths=[8], seeds=3, particles=400, groups=2, parametrizations=["mup"],
                                 progress=False)
    model = zlimit.MLP(depth=3, activation="silu", lr=0.1, init_std=math.sqrt(2))
    change = np.array([[zlimit.train_finite(model, X, y, width=8, steps=1, seed=s, X_eval=X_eval,
                                            record_steps=(0, 1)).feature_change(1, "h")[1, :10].mean()]
                       for s in range(3)])
    (r,) = result.select("feature_change", 1, "mup")
    assert (r["value"], r["low"], r["high"]) == pytest.approx(
        (change.mean(), change.mean() - t_half(change)[0], change.mean() + t_half(change)[0]), rel=1e-10)
    (r,) = result.select("heldout_mse", None, "mup-limit")
    f = result.limit.outputs_groups[:, 1, 10:]  # (G, m_eval)
    per_group = ((f - y_eval) ** 2).mean(axis=1)[:, None]
    value = np.mean((f.mean(axis=0) - y_eval) ** 2)
    assert (r["value"], r["low"], r["high"]) == pytest.approx(
        (value, value - t_half(per_group)[0], value + t_half(per_group)[0]), rel=1e-10)


def test_a_paper_figure_with_missing_settings_still_displays():
    """repr and the HTML view never raise, and a figure without limit records says so."""
    from zlimit._demo import PaperFigure

    records, settings = _records()
    assert "unavailable: KeyError" in repr(PaperFigure(records, {}, limit=None))
    assert "unavailable: KeyError" in PaperFigure(records, {}, limit=None)._repr_html_()
    finite_only = [r for r in records if r["parametrization"] != "mup-limit"]
    assert "(no limit records)" in repr(PaperFigure(finite_only, settings, limit=None))
