"""The Monte Carlo μP limit with the extensions of maths §6 (biases, k outputs, momentum,
weight decay), against independent references:

* finite μP networks of growing width (maths §4): the seed mean approaches the limit,
  the deviation falls with a log-log slope in [−1.3, −0.3], and at the widest width the
  seed means agree with the limit within the Bonferroni-corrected t threshold — and
  disagree with the limit of the same model with any one extension removed;
* the exact linear limit (``method="exact"``, tested against closed forms in
  tests/test_exact_ext.py), feature by feature, within the t threshold;
* an uninterrupted run, for checkpoint and resume with every extension on.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import zlimit
from zlimit import simulate

from test_checkpoint import Boom, _raise_at, assert_identical
from test_engine import _finite_study, _inputs
from tolerance import assert_within_se, t_threshold

# a diverging run would pass a comparison within its (then huge) standard errors
pytestmark = pytest.mark.filterwarnings("error::zlimit.DivergenceWarning")


def _targets(model: zlimit.MLP, y: np.ndarray) -> np.ndarray:
    """y (m,) of ±1 turned into the targets ``model`` takes: class labels for "xent",
    k columns for "mse" with k > 1."""
    m, k = y.shape[0], model.outputs
    if model.loss.name == "xent":
        return np.arange(m) % k
    if k > 1:
        return np.stack([y * (-1) ** c / (1 + c) for c in range(k)], axis=1)
    return y


# ------------------------------------------------------------- against finite nets
#: every extension at once, each strong enough to move f by many standard errors
ALL = dict(depth=3, activation="tanh", loss="xent", outputs=3, lr=0.5, bias_std=0.8, momentum=0.5,
           weight_decay=0.2)
#: the same model with one extension removed
WITHOUT = {"biases": dict(bias_std=None), "momentum": dict(momentum=0.0), "weight decay": dict(weight_decay=0.0),
           "hidden-bias rate": dict(bias_lr_mult=(0.0, 0.0, 0.0, 1.0))}


def test_finite_width_converges_with_every_extension():
    """Nets at widths 256..2048 approach the limit with biases, 3 classes (softmax
    cross-entropy), momentum 0.5 and weight decay 0.2 (ρ = 0.9) together: slope in
    [−1.3, −0.3], seed means within the t threshold at width 2048 (16 seeds and 16
    groups: 15 dof), and every limit with one extension removed is rejected there.
    (Momentum and decay keep the hidden matrices dense at finite width, so the widths
    stop at 2048 here; the slow tests below go to 8192, one extension at a time.)"""
    X, y, _ = _inputs(4, 3, seed=0)
    model = zlimit.MLP(**ALL)
    Y = _targets(model, y)
    steps = 5
    limit, devs, slope, (diff, se, dof) = _finite_study(model, X, Y, None, [256, 512, 1024, 2048],
                                                        seeds=16, steps=steps, particles=200_000, groups=16)
    assert limit.outputs.shape == (steps + 1, 4, 3)
    assert -1.3 <= slope <= -0.3, (slope, devs)
    assert_within_se(diff, 0.0, se, dof=dof)
    finite_mean = diff + limit.outputs[1:]
    crit = t_threshold(dof, diff.size)
    for name, change in WITHOUT.items():
        other = simulate(zlimit.MLP(**{**ALL, **change}), X, Y, steps=steps, particles=100_000, groups=16,
                         progress=False, seed=11)
        z = np.abs(finite_mean - other.outputs[1:]) / np.hypot(se, other.outputs_se[1:])
        assert z.max() > crit, (name, z.max(), crit)


@pytest.mark.slow
@pytest.mark.parametrize("kw", [
    dict(depth=3, activation="tanh", lr=0.5, bias_std=1.0),
    dict(depth=3, activation="silu", lr=0.5, loss="xent", outputs=3),
    dict(depth=3, activation="tanh", lr=0.1, momentum=0.9),
    dict(depth=3, activation="tanh", lr=0.5, weight_decay=1e-2),
], ids=["tanh-biases", "silu-xent-k3", "momentum-0.9", "weight-decay-1e-2"])
def test_finite_width_converges_512_to_8192_per_extension(kw, request):
    """Slope in [−1.3, −0.3] and seed means within the t threshold at width 8192 (12
    seeds, 16 groups: 11 dof; 20 comparisons, 60 with k = 3: 6.4 and 7.2 se). With
    ZLIMIT_CONVERGENCE_REPORT=path the figures are written as JSON under the test's id
    (other keys of the file are kept)."""
    X, y, _ = _inputs(4, 3, seed=2)
    model = zlimit.MLP(**kw)
    widths = [512, 1024, 2048, 4096, 8192]
    _, devs, slope, (diff, se, dof) = _finite_study(model, X, _targets(model, y), None, widths, seeds=12,
                                                    steps=5, particles=400_000, groups=16)
    _report(request.node.callspec.id, widths=widths, deviations=devs.tolist(), slope=float(slope),
            max_abs_z=float(np.max(np.abs(diff) / se)), threshold=t_threshold(dof, diff.size), dof=dof)
    assert -1.3 <= slope <= -0.3, (slope, devs)
    assert_within_se(diff, 0.0, se, dof=dof)


def _report(name: str, **figures) -> None:
    path = os.environ.get("ZLIMIT_CONVERGENCE_REPORT")
    if path:
        report = json.loads(Path(path).read_text()) if Path(path).exists() else {}
        report[name] = figures
        Path(path).write_text(json.dumps(report, indent=1))


# ------------------------------------------------------------ against the exact limit
LINEAR = dict(depth=3, activation="linear", lr=0.3)


@pytest.mark.parametrize("kw", [
    dict(bias_std=0.7, bias_lr_mult=(1.0, 0.5, 0.5, 1.0)),
    dict(outputs=3),
    dict(momentum=0.7),
    dict(weight_decay=0.5),
    dict(outputs=2, bias_std=0.7, momentum=0.5, weight_decay=0.3),
], ids=["biases", "k3", "momentum", "decay", "all"])
def test_monte_carlo_matches_exact_linear_limit(kw):
    """f̊_t of every step and input, with a minibatch schedule and an evaluation input,
    within the t threshold (32 groups: 31 dof, Bonferroni over all entries)."""
    X, y, X_eval = _inputs(3, 4, seed=5, m_eval=1)
    model = zlimit.MLP(**LINEAR, **kw)
    Y = _targets(model, y)
    steps = 6
    batches = zlimit.batch_schedule(3, 2, steps, seed=4)
    exact = simulate(model, X, Y, steps=steps, X_eval=X_eval, batches=batches, method="exact", progress=False)
    run = simulate(model, X, Y, steps=steps, X_eval=X_eval, batches=batches, particles=192_000, groups=32,
                   seed=6, progress=False)
    assert run.outputs.shape == exact.outputs.shape
    assert np.all(run.outputs[0] == 0.0) and np.all(exact.outputs[0] == 0.0)  # f̊_0 = 0 (output bias from 0)
    assert_within_se(run.outputs[1:], exact.outputs[1:], run.outputs_se[1:], dof=run.groups - 1,
                     n_comparisons=run.outputs[1:].size)
    # the feature moved f by far more than the Monte Carlo error: the plain model is rejected
    plain = simulate(zlimit.MLP(**LINEAR, outputs=model.outputs), X, Y, steps=steps, X_eval=X_eval,
                     batches=batches, method="exact", progress=False)
    z = np.abs(run.outputs[1:] - plain.outputs[1:]) / run.outputs_se[1:]
    if kw != dict(outputs=3):  # k = 3 is its own plain model
        assert z.max() > t_threshold(run.groups - 1, z.size), z.max()


# ----------------------------------------------------------------------- mechanics
def test_zero_error_signal_adds_no_direction_and_no_nan():
    """With k > 1 the backward vector Σ_c χ_c Ŵ^c of an input whose error signal is
    exactly zero is zero (maths §6): Gram–Schmidt adds no direction for it."""
    X, y, _ = _inputs(3, 4, seed=1)
    model = zlimit.MLP(depth=2, activation="tanh", lr=0.5, outputs=2)
    Y = np.array([[1.0, -1.0], [0.0, 0.0], [0.5, 0.2]])  # f̊_0 = 0: χ_0 = 0 for input 1
    run = simulate(model, X, Y, steps=3, particles=4000, groups=2, progress=False)
    assert np.all(run.error_signals_groups[:, 0, 1] == 0.0)
    assert np.all(np.isfinite(run.outputs_groups))
    assert np.all(run.bases["size_bwd2"][:, 0] == 2)  # two nonzero backward vectors at step 0
    assert np.all(run.novelty["bwd2"][:, 0, 1] == 0.0)


def test_resume_with_every_extension_is_bit_identical(tmp_path):
    X, y, X_eval = _inputs(3, 2, seed=3, m_eval=1)
    model = zlimit.MLP(depth=3, activation="silu", lr=0.3, loss="mse", outputs=2, bias_std=0.5, momentum=0.8,
                       weight_decay=0.1)
    Y = _targets(model, y)
    kw = dict(steps=8, particles=2000, groups=3, X_eval=X_eval, record_steps=(0, 3), progress=False)
    reference = simulate(model, X, Y, threads=2, **kw)
    path = tmp_path / "run.ckpt"
    with pytest.raises(Boom):
        simulate(model, X, Y, threads=1, checkpoint=path, checkpoint_every=0, on_step=_raise_at(1, 5), **kw)
    assert_identical(simulate(model, X, Y, threads=2, checkpoint=path, **kw), reference)


# ----------------------------------------------------------------------- long horizons
def _gap_check(limit, limit_se, nets_wide, nets_half, q) -> np.ndarray:
    """|limit − seed mean of the widest nets| over what the errors allow: the combined
    standard errors plus the half-to-widest change of the seed mean (the O(1/n) bias
    still left, with its own errors). Entries > 1 fail."""
    wide, half = nets_wide.mean(axis=0), nets_half.mean(axis=0)
    se_w, se_h = (nets.std(axis=0, ddof=1) / np.sqrt(len(nets)) for nets in (nets_wide, nets_half))
    allowed = q * np.hypot(limit_se, se_w) + np.abs(half - wide) + q * np.hypot(se_h, se_w)
    return np.abs(limit - wide) / allowed


def test_every_extension_matches_exact_linear_limit_at_200_steps():
    """Depth-3 linear net, k = 2 outputs, biases, momentum 0.5 and weight decay 0.2 (ρ^200
    = 0.13: most of the initial weights have decayed, and decay holds the fit 22 % from
    the targets), 200 steps: outputs every 25 steps and the layer-2/3 kernels at T within
    the t threshold of the exact limit (16 groups)."""
    X, y = zlimit.datasets.gaussian(m=8, d=16, seed=0)
    model = zlimit.MLP(depth=3, activation="linear", lr=0.05, outputs=2, bias_std=0.5, momentum=0.5,
                       weight_decay=0.2)
    Y, T, steps = _targets(model, y), 200, slice(25, 201, 25)
    exact = simulate(model, X, Y, steps=T, method="exact", progress=False)
    run = simulate(model, X, Y, steps=T, particles=64_000, groups=16, progress=False, seed=1)
    assert np.linalg.norm(exact.outputs[T] - Y) < 0.5 * np.linalg.norm(Y)  # it trains
    q = t_threshold(run.groups - 1, run.outputs[steps].size + 2)
    assert_within_se(run.outputs[steps], exact.outputs[steps], run.outputs_se[steps], dof=run.groups - 1,
                     n_comparisons=run.outputs[steps].size + 2)
    for l in (2, 3):
        per_group = np.einsum("gaa->ga", run.kernel_groups(l, "h")[:, T]).mean(axis=1)
        want = np.diag(exact.kernel(l, "h")[T]).mean()
        assert abs(per_group.mean() - want) <= q * per_group.std(ddof=1) / np.sqrt(run.groups), (l, want)


def test_every_extension_matches_finite_nets_at_150_steps():
    """Depth-3 SiLU, 3 classes (softmax cross-entropy), biases, momentum 0.5 and weight
    decay 1e-2, 150 steps: outputs every 25 steps and the mean layer-2 kernel at T of
    width-1024 nets (12 seeds) agree with the limit within the t threshold plus the
    width-512-to-1024 change (:func:`_gap_check`)."""
    X, y = zlimit.datasets.gaussian(m=4, d=8, seed=3)
    model = zlimit.MLP(depth=3, activation="silu", lr=0.1, init_std=1.4, loss="xent", outputs=3, bias_std=0.5,
                       momentum=0.5, weight_decay=1e-2)
    Y, T, steps = _targets(model, y), 150, slice(25, 151, 25)

    def summary(run):  # per group: outputs every 25 steps, then the mean diagonal of the layer-2 kernel at T
        k2 = np.einsum("gaa->ga", run.kernel_groups(2, "h")[:, T]).mean(axis=1)
        return np.concatenate([run.outputs_groups[:, steps].reshape(run.groups, -1), k2[:, None]], axis=1)

    limit = summary(simulate(model, X, Y, steps=T, particles=64_000, groups=8, progress=False, seed=2))
    nets = {n: np.concatenate([summary(zlimit.train_finite(model, X, Y, width=n, steps=T, seed=s))
                               for s in range(12)]) for n in (512, 1024)}
    q = t_threshold(min(12, limit.shape[0]) - 1, limit.shape[1])
    ratio = _gap_check(limit.mean(axis=0), limit.std(axis=0, ddof=1) / np.sqrt(limit.shape[0]), nets[1024],
                       nets[512], q)
    assert np.all(ratio <= 1), ratio.max()
