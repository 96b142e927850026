"""The SGD driver's checks (issue 12): every recorded quantity is checked at every step.

A scripted :class:`zlimit._driver.State` produces finite values except for one
quantity at one step, where it puts NaN or ±inf; the driver must raise
``DivergenceError`` naming that quantity, its layer and the step — including the
quantities that f̊ and the loss do not see (relu(NaN) = 0 hides a bad feature from
f̊). The loss-growth warning is checked against a closed form.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import zlimit
from zlimit._driver import LOSS_GROWTH, Backward, Forward, Recorder, assemble, loss_growth, run_sgd

M, N, L, T = 2, 16, 2, 4
#: quantity -> (words the error must contain, its layer or None): the cross-step kernels have their own test
QUANTITIES = {
    "f": ("output f", None), "h": ("layer-2 features h", 2), "x": ("layer-1 features x", 1),
    "fwd_novelty": ("layer-2 forward novelty", 2), "dh": ("layer-1 backward features dh", 1),
    "bwd_novelty": ("layer-2 backward novelty", 2),
}
MODEL = zlimit.MLP(depth=L, activation="linear", lr=0.1)


class Scripted:
    """Finite features that stay put; ``bad`` = (quantity, step, value) spoils one of them."""

    label = " (scripted)"
    exact_eval_cross = True

    def __init__(self, bad):
        self.bad = bad
        self.rng = np.random.default_rng(0)
        self.t = -1

    def _spoil(self, what: str, array: np.ndarray) -> np.ndarray:
        quantity, step, value = self.bad
        if quantity == what and self.t == step:
            array = array.copy()
            array.flat[0] = value
        return array

    def forward(self, t):
        self.t = t
        hs = [self.rng.standard_normal((M, N)) for _ in range(L)]
        xs = [h.copy() for h in hs]
        hs[1] = self._spoil("h", hs[1])
        xs[0] = self._spoil("x", xs[0])
        f = self._spoil("f", np.full(M, 0.1))
        return Forward(hs, xs, f, novelty={2: self._spoil("fwd_novelty", np.ones(M))})

    def backward(self, batch, chi):
        dh = [self._spoil("dh", np.eye(len(batch))) if l == 1 else np.eye(len(batch)) for l in (1, 2)]
        return Backward(dh, novelty={2: self._spoil("bwd_novelty", np.ones(len(batch)))})

    def update(self, batch, chi):
        pass

    def gram(self, a, b):
        return a @ b.T / N


def _run(state, record_steps=(0,)):
    rec = Recorder(L, T, M, M, record_steps, processes=True)
    batches = [np.arange(M)] * T
    return run_sgd(state, MODEL, np.array([1.0, -1.0]), batches, T, rec)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(quantity=st.sampled_from(sorted(QUANTITIES)), step=st.integers(0, T),
       value=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_every_recorded_quantity_is_checked(quantity, step, value):
    words, _ = QUANTITIES[quantity]
    if quantity in ("dh", "bwd_novelty") and step == T:  # no backward pass at the last step
        _run(Scripted((quantity, step, value)))
        return
    with pytest.raises(zlimit.DivergenceError, match=rf"the {words} \(scripted\).* at step {step}"):
        _run(Scripted((quantity, step, value)))


def test_cross_step_kernels_are_checked():
    """A NaN reaching E[Z_1 Z_t'] only (the step-t kernel itself finite)."""
    class Spoilt(Scripted):
        def forward(self, t):
            fw = super().forward(t)
            if t == 3:
                rec.kept[("h2", 1)][0, 0] = np.nan
            return fw

    rec = Recorder(L, T, M, M, (0, 1), processes=True)
    with pytest.raises(zlimit.DivergenceError, match=r"layer-2 cross-step kernel h \(against step 1\).* at step 3"):
        run_sgd(Spoilt(("none", -1, 0.0)), MODEL, np.array([1.0, -1.0]), [np.arange(M)] * T, T, rec)


def test_error_signals_are_checked():
    """χ overflows although f and y are finite: f = 1e308, y = −1e308, squared loss."""
    class Huge(Scripted):
        def forward(self, t):
            fw = super().forward(t)
            fw.f = np.full(M, 1e308)
            return fw

    model = zlimit.MLP(depth=L, activation="linear", lr=0.1, reduction="sum")
    rec = Recorder(L, T, M, M, (0,), processes=True)
    with pytest.raises(zlimit.DivergenceError, match="training loss|error signal"):
        run_sgd(Huge(("none", -1, 0.0)), model, np.full(M, -1e308), [np.arange(M)] * T, T, rec)


def test_non_finite_at_step_zero_blames_the_data_not_the_learning_rate():
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(zlimit.DivergenceError, match="non-finite at step 0, before any training: the inputs or targets"):
        zlimit.train_finite(MODEL, X, np.array([1e300, -1e300]), width=8, steps=2)


def test_a_clean_run_passes():
    rec = _run(Scripted(("none", -1, 0.0)), record_steps=(0, 1))
    assert np.isfinite(rec.loss).all() and np.isfinite(rec.kernels["h2"]).all()


# ------------------------------------------------------------------ loss growth
def test_loss_growth_threshold_and_message():
    assert loss_growth(np.array([1.0, 50.0, LOSS_GROWTH]), MODEL) == ""  # not past the factor
    message = loss_growth(np.array([2.0, 1.0, 2.0 * LOSS_GROWTH * 1.5, 1e9]), MODEL)
    assert message.startswith(f"the training loss grew {LOSS_GROWTH * 1.5:.3g}x, from 2 at step 0 to 300 at step 2")
    assert loss_growth(np.array([0.0, 5.0]), MODEL) == ""  # nothing to compare with


def test_a_diverging_finite_net_warns_and_a_converging_one_does_not():
    """Depth-1 linear μP net on one input: at lr 1.6 the first step overshoots the target
    (the effective step η(|ξ|²/d + E[x²]) > 2) and the error grows each step, while lr 0.2
    converges. Four steps pass LOSS_GROWTH and stay finite. The warning names the first
    step past the factor."""
    X, y = np.array([[1.0, 1.0]]), np.array([1.0])
    with pytest.warns(zlimit.DivergenceWarning, match=r"training loss grew .* use a smaller lr \(now 1.6\)") as w:
        run = zlimit.train_finite(zlimit.MLP(depth=1, activation="linear", lr=1.6), X, y, width=4096, steps=4)
    first = int(np.flatnonzero(run.loss > LOSS_GROWTH * run.loss[0])[0])
    assert f"at step {first}:" in str(w[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = zlimit.train_finite(zlimit.MLP(depth=1, activation="linear", lr=0.2), X, y, width=4096, steps=12)
    assert run.loss[-1] < run.loss[0]


def test_assemble_warns_once_per_run():
    rec = _run(Scripted(("none", -1, 0.0)))
    rec.loss[:] = [1.0, 2.0, 500.0, 1e4, 1e5]
    with pytest.warns(zlimit.DivergenceWarning) as record:
        assemble(MODEL, {}, [rec, rec])
    assert len(record) == 1
