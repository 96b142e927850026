"""Short displays: Run and MLP reprs fit one screen, say what the run is, and never raise."""
from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

import zlimit
from zlimit._results import Run

SCREEN = 2000


def _data(m=3, m_eval=0, k=1, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    y = rng.integers(0, k, m) if k > 1 else rng.standard_normal(m)
    return X, y, (rng.standard_normal((m_eval, d)) if m_eval else None)


def assert_displays(run_or_model):
    """repr within one screen, lines within ~one terminal line of text, and HTML that IPython shows."""
    from IPython.core.formatters import DisplayFormatter

    text = repr(run_or_model)
    assert len(text) < SCREEN, text
    assert max(len(line) for line in text.splitlines()) <= 260
    shown, _ = DisplayFormatter().format(run_or_model)
    assert shown["text/plain"] == text
    page = shown["text/html"]
    assert page.startswith("<div><strong>") and page.count("<tr>") == page.count("</tr>") >= 1
    return text


def half_width(per_group):
    """95% Student-t half-width over G groups, from scipy (not the package)."""
    g = len(per_group)
    return stats.t.ppf(0.975, g - 1) * np.std(per_group, ddof=1) / math.sqrt(g)


# ------------------------------------------------------------------ Run
def test_a_100_step_monte_carlo_run_fits_one_screen_and_says_what_it_is():
    X, y, X_eval = _data(m=3, m_eval=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zlimit.MonteCarloWarning)
        run = zlimit.simulate(zlimit.MLP(depth=2), X, y, steps=100, X_eval=X_eval, particles=256, groups=4,
                              record_steps=tuple(range(0, 101, 4)), progress=False)
    text = assert_displays(run)
    final = run.loss_groups[:, -1]
    assert f"final loss  {final.mean():.4g} ± {half_width(final):.2g} at t = 100 (95% t-interval, G−1 = 3 dof)" in text
    for part in ("Monte Carlo limit (method 'mc', μP)", "N = 256 particles in G = 4 groups", "T = 100 SGD steps",
                 "M = 5: m = 3 training + 2 evaluation; k = 1 output", "MLP(depth=2, activation='tanh'",
                 "kernels h, x, dh of layers 1..2", "cross-step kernels against s = 0, 4, 8, …, 92, 96, 100 "
                 "(26 values)", "novelty", "basis statistics"):
        assert part in text, part
    assert "array(" not in text  # not the dataclass repr of every array


def test_depth_6_runs_of_100_steps_fit_one_screen():
    X, y, _ = _data()
    finite = zlimit.train_finite(zlimit.MLP(depth=6, init_std=2**0.5, lr_mult=[1, 2, 3, 4, 5, 6, 7]), X, y,
                                 width=8, steps=100, record_steps=tuple(range(101)))
    text = assert_displays(finite)
    assert text.startswith("Run (n = 8)\n") and "finite net, width n = 8, μP" in text and "seed 0" in text
    assert f"final loss  {finite.loss[-1]:.4g} at t = 100 (no interval (one group))" in text and "±" not in text
    assert "lr_mult=(1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)" in text and "init_std=1.4142135623730951" in text
    ntk = zlimit.simulate(zlimit.MLP(depth=6), X, y, steps=100, particles=256, groups=2, parametrization="ntk",
                          progress=False)
    text = assert_displays(ntk)
    assert "NTK limit (method 'ntk', NTP)" in text and "Θ (.ntk)" in text and "G−1 = 1 dof" in text


def test_the_exact_limit_has_no_interval():
    X, y, X_eval = _data(m_eval=1)
    run = zlimit.simulate(zlimit.MLP(depth=2, activation="linear"), X, y, steps=3, X_eval=X_eval, method="exact",
                          progress=False)
    text = assert_displays(run)
    assert "exact limit (method 'exact', μP)" in text and "no Monte Carlo error" in text
    assert f"final loss  {run.loss[-1]:.4g} at t = 3 (exact)" in text and "±" not in text


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(depth=st.integers(1, 7), steps=st.integers(0, 100), m=st.integers(1, 4), m_eval=st.integers(0, 2),
       k=st.sampled_from([1, 3]), bias=st.booleans(), every_step=st.booleans())
def test_finite_runs_of_any_shape_fit_one_screen(depth, steps, m, m_eval, k, bias, every_step):
    X, y, X_eval = _data(m, m_eval, k)
    model = zlimit.MLP(depth=depth, loss="xent" if k > 1 else "mse", outputs=k, bias_std=0.5 if bias else None,
                       lr_mult=tuple(1.0 + i for i in range(depth + 1)))
    run = zlimit.train_finite(model, X, y, width=4, steps=steps, X_eval=X_eval,
                              record_steps=tuple(range(steps + 1)) if every_step else (0,))
    text = assert_displays(run)
    assert f"T = {steps} SGD steps" in text and f"m = {m} training + {m_eval} evaluation" in text
    assert f"k = {k} output{'s' if k > 1 else ''}" in text and f"depth={depth}" in text
    assert ("bias_std=" in text) == bias and (f"outputs={k}" in text) == (k > 1)


def _hand_made(**change):
    base = dict(model=zlimit.MLP(depth=2), meta={"kind": "limit"}, outputs_groups=np.zeros((2, 3, 2)),
                loss_groups=np.array([[1.0, np.nan, np.nan], [1.0, 0.5, np.nan]]),
                error_signals_groups=np.zeros((2, 2, 2)))
    return Run(**{**base, **change})


def test_a_run_with_nan_loss_and_no_kernels_displays():
    text = assert_displays(_hand_made())
    assert "final loss  nan at t = 2 (95% t-interval, G−1 = 1 dof)" in text
    assert "recorded    outputs and loss only" in text and "limit run" in text


@pytest.mark.parametrize("broken", [dict(outputs_groups=None), dict(meta=None), dict(loss_groups=np.zeros(0)),
                                    dict(meta={"kind": "finite", "width": "x" * 10_000}),
                                    dict(record_steps=tuple(range(10**5)), cross={"h1": np.zeros(1)})])
def test_a_display_never_raises_and_stays_short(broken):
    run = _hand_made(**broken)
    text = assert_displays(run)
    assert text.startswith("Run")


def test_a_broken_run_says_its_summary_is_unavailable():
    text = repr(_hand_made(outputs_groups=None))
    assert re.fullmatch(r"Run\n  summary  unavailable \(\w+Error: .*\)", text), text


# ------------------------------------------------------------------ MLP
def test_mlp_repr_shows_depth_activation_loss_lr_and_what_differs():
    assert repr(zlimit.MLP(depth=3)) == "MLP(depth=3, activation='tanh', loss='mse', lr=0.1)"
    model = zlimit.MLP(depth=2, activation="relu", loss="xent", outputs=4, reduction="sum", lr=0.5,
                       init_std=[1.0, 2.0, 3.0], bias_std=0.5, momentum=0.9, weight_decay=0.01)
    assert repr(model) == ("MLP(depth=2, activation='relu', loss='xent', lr=0.5, reduction='sum', "
                           "init_std=(1.0, 2.0, 3.0), outputs=4, bias_std=(0.5, 0.5, 0.0), momentum=0.9, "
                           "weight_decay=0.01)")
    assert_displays(model)


@settings(max_examples=40, deadline=None)
@given(depth=st.integers(1, 7), activation=st.sampled_from(["tanh", "relu", "linear"]),
       init_std=st.one_of(st.floats(0.1, 3.0), st.lists(st.floats(0.1, 3.0), min_size=8, max_size=8)),
       lr=st.floats(0.01, 1.0), reduction=st.sampled_from(["mean", "sum"]), momentum=st.sampled_from([0.0, 0.5]),
       bias=st.booleans())
def test_mlp_repr_rebuilds_the_model(depth, activation, init_std, lr, reduction, momentum, bias):
    """For up to 8 layers the repr is valid Python that rebuilds an equal model."""
    init_std = init_std[:depth + 1] if isinstance(init_std, list) else init_std
    model = zlimit.MLP(depth=depth, activation=activation, lr=lr, init_std=init_std, reduction=reduction,
                       momentum=momentum, bias_std=[0.5] * (depth + 1) if bias else None)
    assert eval(repr(model), {"MLP": zlimit.MLP}) == model  # noqa: S307 (the repr of our own object)


def test_a_deep_mlp_repr_elides_its_layers():
    model = zlimit.MLP(depth=5000, lr_mult=np.linspace(1.0, 2.0, 5001))
    text = assert_displays(model)
    assert "lr_mult=(1.0, 1.0002, 1.0004, …, 1.9996, 1.9998, 2.0 (5001 values))" in text


def test_mlp_docs_say_the_default_init_is_not_the_papers():
    doc = " ".join(zlimit.MLP.__doc__.split())
    assert "σ = √2 of the paper (arXiv:2503.09565); pass ``init_std=2**0.5`` to match it" in doc
    assert zlimit.MLP(depth=1).init_std == (1.0, 1.0) and zlimit.MLP(depth=1, init_std=2**0.5).sigma[0] == 2**0.5


def test_a_finite_run_without_a_width_says_so():
    """A hand-built finite run whose meta lacks its width: a ValueError naming meta['width']
    (not a KeyError), and a display that says why it cannot summarise."""
    run = _hand_made(meta={"kind": "finite"})
    with pytest.raises(ValueError, match=r"meta\['width'\] = None"):
        run.width
    assert "meta['width']" in assert_displays(run)
    assert _hand_made(meta={"kind": "finite", "width": 64}).label == "n = 64"
