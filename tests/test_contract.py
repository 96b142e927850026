"""The Run layout contract, checked once for every producer of a :class:`zlimit.Run` (issue 11).

Four producers go through the one SGD driver (``zlimit._driver``): the Monte Carlo μP
limit (``simulate``), the exact linear limit (``method="exact"``), the NTK limit
(``parametrization="ntk"``) and a finite network (``train_finite``). Each test below
runs on every producer, on a small problem with minibatches, evaluation inputs and a
recorded step s = 2: the linear variant (depth 3) for all four, a nonlinear one
(tanh, depth 2, with the logistic loss or the "sum" reduction) for the three that take
it, T = 0, and k = 3 outputs with the other extensions of maths §6 each producer takes
(softmax cross-entropy or "mse" with (m, 3) targets; biases, momentum, weight decay, a
random output bias in the finite net only), where outputs and error signals gain a
class axis.

The layout is the one of ``zlimit._results.Run`` and ``zlimit._driver.Recorder``; keys
are written with ``zlimit._results.key`` and read with ``parse_key``. Expected losses and
error signals are written here in numpy from maths §1, not taken from the package.
Facts of one producer stay in its own test file: the values of novelty and bases of
the limit runs (here only their keys and shapes), the withheld cross-step entries of
evaluation inputs in the Monte Carlo engine (NaN in layers >= 2 for t > s;
test_engine.py; here only the other three producers must report them), and the frozen
features of the NTK limit.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pytest

import zlimit
from zlimit._results import key, parse_key
from tolerance import assert_close

M_TRAIN, D = 3, 3
RECORD = (0, 2)
STEPS = 4


@dataclass(frozen=True)
class Case:
    """One producer on one problem, and what its run must report."""

    producer: str  # "mc", "exact", "ntk" or "finite"
    activation: str
    L: int  # depth
    G: int  # groups
    T: int  # steps
    m_eval: int
    loss: str = "mse"
    reduction: str = "mean"
    # maths §6
    outputs: int = 1
    bias_std: float | tuple[float, ...] | None = None
    momentum: float = 0.0
    weight_decay: float = 0.0

    @property
    def classes(self) -> tuple[int, ...]:
        """The class axis of outputs and error signals: () for k = 1, (k,) for k > 1."""
        return () if self.outputs == 1 else (self.outputs,)

    @property
    def M(self) -> int:
        return M_TRAIN + self.m_eval

    @property
    def record(self) -> tuple[int, ...]:
        return tuple(s for s in RECORD if s <= self.T)


CASES = {
    "mc-linear": Case("mc", "linear", 3, 3, STEPS, 2),
    "exact-linear": Case("exact", "linear", 3, 1, STEPS, 2),
    "ntk-linear": Case("ntk", "linear", 3, 2, STEPS, 2),
    "finite-linear": Case("finite", "linear", 3, 1, STEPS, 2),
    "mc-tanh": Case("mc", "tanh", 2, 1, STEPS, 2, loss="logistic"),
    "ntk-tanh": Case("ntk", "tanh", 2, 1, STEPS, 2, loss="logistic", reduction="sum"),
    "finite-tanh": Case("finite", "tanh", 2, 1, STEPS, 2, reduction="sum"),
    # T = 0 (no step, empty error signals and dh kernels) without evaluation inputs (M = m)
    "mc-T0": Case("mc", "tanh", 2, 2, 0, 0),
    "exact-T0": Case("exact", "linear", 2, 1, 0, 0),
    "ntk-T0": Case("ntk", "tanh", 2, 2, 0, 0),
    "finite-T0": Case("finite", "tanh", 2, 1, 0, 0),
    # k = 3 outputs (maths §6), with biases and momentum; weight decay where the producer takes it
    "mc-k3": Case("mc", "tanh", 2, 2, STEPS, 2, loss="xent", outputs=3, bias_std=0.5, momentum=0.5,
                  weight_decay=0.1),
    "exact-k3": Case("exact", "linear", 3, 1, STEPS, 2, outputs=3, bias_std=0.5, momentum=0.5, weight_decay=0.1),
    "ntk-k3": Case("ntk", "tanh", 2, 2, STEPS, 2, loss="xent", reduction="sum", outputs=3, bias_std=0.5,
                   momentum=0.5),
    "finite-k3": Case("finite", "tanh", 2, 1, STEPS, 2, outputs=3, bias_std=(0.5, 0.5, 0.3), momentum=0.5,
                      weight_decay=0.1),
}
IDS = list(CASES)


@functools.lru_cache(maxsize=None)
def produce(case: str):
    """(run, model, y, batches) of one case, computed once per session."""
    c = CASES[case]
    rng = np.random.default_rng(2026)
    X, X_eval = rng.standard_normal((M_TRAIN, D)), rng.standard_normal((c.m_eval, D))
    y = rng.uniform(-1.0, 1.0, (M_TRAIN, *c.classes))
    if c.loss == "logistic":
        y = np.sign(y)
    elif c.loss == "xent":
        y = np.array([2, 0, 1])  # class labels in [0, k), one per input
    extensions = dict(outputs=c.outputs, bias_std=c.bias_std, momentum=c.momentum, weight_decay=c.weight_decay)
    model = zlimit.MLP(depth=c.L, activation=c.activation, loss=c.loss, reduction=c.reduction, lr=0.3,
                       **extensions)
    batches = zlimit.batch_schedule(M_TRAIN, 2, c.T, seed=3)  # every input sits out a step
    common = dict(steps=c.T, X_eval=X_eval if c.m_eval else None, batches=batches, record_steps=c.record)
    if c.producer == "finite":
        run = zlimit.train_finite(model, X, y, width=64, seed=1, **common)
    elif c.producer == "exact":
        run = zlimit.simulate(model, X, y, method="exact", progress=False, **common)
    else:
        run = zlimit.simulate(model, X, y, particles=3000, groups=c.G, seed=1, progress=False,
                              parametrization="ntk" if c.producer == "ntk" else "mup", **common)
    return run, model, y, batches


@pytest.fixture(params=IDS)
def case(request):
    return request.param


def _in_batch(batch) -> np.ndarray:
    inside = np.zeros(M_TRAIN, bool)
    inside[batch] = True
    return inside


# --------------------------------------------------------------------------- shapes
def test_output_loss_and_error_signal_shapes(case):
    run, model, _, _ = produce(case)
    c = CASES[case]
    G, T, M, k = c.G, c.T, c.M, c.classes
    assert run.outputs_groups.shape == (G, T + 1, M, *k)
    assert run.loss_groups.shape == (G, T + 1)
    assert run.error_signals_groups.shape == (G, T, M_TRAIN, *k)
    assert (run.groups, run.steps, run.m) == (G, T, M_TRAIN)
    assert run.outputs.shape == (T + 1, M, *k) and run.loss.shape == (T + 1,)
    assert run.error_signals.shape == (T, M_TRAIN, *k)
    for a in (run.outputs_groups, run.loss_groups, run.error_signals_groups):
        assert a.dtype == np.float64 and np.all(np.isfinite(a))
    assert run.model is model


def test_meta_names_the_run(case):
    run, _, _, _ = produce(case)
    c = CASES[case]
    meta = run.meta
    assert (meta["steps"], meta["m"], meta["m_eval"]) == (c.T, M_TRAIN, c.m_eval)
    assert meta["kind"] == {"mc": "limit", "ntk": "limit", "exact": "exact", "finite": "finite"}[c.producer]
    assert meta["seed"] == (None if c.producer == "exact" else 1)


def test_error_signals_are_zero_outside_the_batch(case):
    run, _, _, batches = produce(case)
    chi = run.error_signals_groups
    for t, b in enumerate(batches):
        inside = _in_batch(b)
        assert np.all(chi[:, t, ~inside] == 0.0), (t, b, chi[:, t])
        assert np.all(chi[:, t, inside] != 0.0), (t, b, chi[:, t])  # f_t ≠ y on this problem


def test_kernel_keys_shapes_and_nan_pattern(case):
    run, _, _, batches = produce(case)
    c = CASES[case]
    G, T, M = c.G, c.T, c.M
    layers = range(1, c.L + 1)
    assert set(run.kernels) == {key(k, l) for k in ("h", "x", "dh") for l in layers}
    for l in layers:
        for kind in ("h", "x"):
            K = run.kernels[key(kind, l)]
            assert K.shape == (G, T + 1, M, M) and K.dtype == np.float64
            assert np.all(np.isfinite(K)), (kind, l)
        dh = run.kernels[key("dh", l)]
        assert dh.shape == (G, T, M_TRAIN, M_TRAIN) and dh.dtype == np.float64
        for t, b in enumerate(batches):
            inside = np.outer(_in_batch(b), _in_batch(b))
            # NaN exactly in the rows and columns of inputs outside B_t
            np.testing.assert_array_equal(np.isnan(dh[:, t]), np.broadcast_to(~inside, dh[:, t].shape),
                                          err_msg=f"{key('dh', l)} step {t} batch {b}")
            assert np.all(np.isfinite(dh[:, t][:, inside])), (l, t)


def test_kernels_are_symmetric(case):
    run, _, _, _ = produce(case)
    for k, K in run.kernels.items():
        KT = np.swapaxes(K, -1, -2)
        np.testing.assert_array_equal(np.isnan(K), np.isnan(KT), err_msg=k)
        assert_close(K, KT, err_msg=k)


def test_cross_keys_shapes_and_nan_before_s(case):
    run, _, _, _ = produce(case)
    c = CASES[case]
    G, T, M, record = c.G, c.T, c.M, c.record
    assert run.record_steps == record
    assert set(run.cross) == {key(k, l) for k in ("h", "x") for l in range(1, c.L + 1)}
    for k, C in run.cross.items():
        _, l, _ = parse_key(k)
        assert C.shape == (G, len(record), T + 1, M, M) and C.dtype == np.float64, k
        for r, s in enumerate(record):
            assert np.all(np.isnan(C[:, r, :s])), (k, s)  # t < s: nothing to report
            after = C[:, r, s:]
            # t >= s: rows of training inputs are always there
            assert np.all(np.isfinite(after[:, :, :M_TRAIN])), (k, s)
            # rows of evaluation inputs: at t = s and in layer 1 for every producer; at t > s in
            # layers >= 2 for all but the Monte Carlo engine (its withheld entries: test_engine.py)
            assert np.all(np.isfinite(C[:, r, s])), (k, s)
            if l == 1 or c.producer != "mc":
                assert np.all(np.isfinite(after)), (k, s)


def test_cross_at_s_equals_the_step_s_kernel(case):
    run, _, _, _ = produce(case)
    for k, C in run.cross.items():
        for r, s in enumerate(run.record_steps):
            K = run.kernels[k][:, s]
            assert_close(C[:, r, s], K, err_msg=f"{k} s={s}")


@pytest.mark.parametrize("linear_case", [c for c in IDS if CASES[c].activation == "linear"])
def test_linear_features_x_equal_h(linear_case):
    run, L = produce(linear_case)[0], CASES[linear_case].L
    for l in range(1, L + 1):
        h, x = run.kernels[key("h", l)], run.kernels[key("x", l)]
        assert_close(x, h)


def test_limit_outputs_start_at_zero(case):
    """f̊_0 = 0 in every group of a limit run, for every class: the output bias starts at 0
    (maths §6). A finite net starts wherever its draw puts it."""
    run = produce(case)[0]
    if CASES[case].producer == "finite":
        assert np.all(run.outputs_groups[:, 0] != 0.0)
    else:
        np.testing.assert_array_equal(run.outputs_groups[:, 0], 0.0)


@pytest.mark.parametrize("k_case", [c for c in IDS if CASES[c].outputs > 1])
def test_classes_are_outputs_of_their_own(k_case):
    """With k > 1 outputs, each class has its own output and error signal: from step 1 on,
    no two classes agree at any input (at step 0 the limit's f̊_0 = 0 gives the classes
    other than the label equal softmax error signals)."""
    run = produce(k_case)[0]
    f, chi = run.outputs_groups[:, 1:], run.error_signals_groups[:, 1:]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert np.all(f[..., a] != f[..., b]), (a, b)
        inside = chi[..., 0] != 0.0
        assert np.all(chi[..., a][inside] != chi[..., b][inside]), (a, b)


# ------------------------------------------------------------------ estimates
def test_error_model_and_standard_errors(case):
    run, _, _, _ = produce(case)
    c = CASES[case]
    G, T, M = c.G, c.T, c.M
    if c.producer == "exact":
        assert run.error_model == "exact"
        np.testing.assert_array_equal(run.outputs_se, np.zeros((T + 1, M, *c.classes)))
        np.testing.assert_array_equal(run.loss_se, np.zeros(T + 1))
    elif G == 1:
        assert run.error_model == "groups"
        assert run.outputs_se is None and run.loss_se is None
    else:
        assert run.error_model == "groups"
        se = run.outputs_se
        assert se.shape == (T + 1, M, *c.classes) and run.loss_se.shape == (T + 1,)
        # f̊_0 = 0 in every group of a limit run; from step 1 on the groups differ
        assert np.all(se[0] == 0.0) and np.all(se[1:] > 0.0), se
        assert np.all(run.loss_se[1:] > 0.0)


def test_estimates_are_group_means(case):
    run = produce(case)[0]
    L = CASES[case].L
    np.testing.assert_array_equal(run.outputs, run.outputs_groups.mean(axis=0))
    np.testing.assert_array_equal(run.loss, run.loss_groups.mean(axis=0))
    np.testing.assert_array_equal(run.error_signals, run.error_signals_groups.mean(axis=0))
    for l in range(1, L + 1):
        for kind in ("h", "x", "dh"):
            np.testing.assert_array_equal(run.kernel(l, kind), run.kernels[key(kind, l)].mean(axis=0))
            assert run.kernel_groups(l, kind) is run.kernels[key(kind, l)]
        for kind in ("h", "x"):
            for r, s in enumerate(run.record_steps):
                np.testing.assert_array_equal(run.cross_kernel_groups(l, kind, s), run.cross[key(kind, l)][:, r])


def _np_loss(loss: str, f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ℓ(f, y) per input, of maths §1 and §6: (f − y)²/2 (summed over k > 1 outputs, the
    last axis), log(1 + e^{−yf}), or −log softmax(f)_y for class labels y."""
    if loss == "xent":
        f_y = np.take_along_axis(f, np.broadcast_to(y[:, None], f.shape[:-1] + (1,)), axis=-1)[..., 0]
        return np.log(np.exp(f).sum(-1)) - f_y
    ell = 0.5 * (f - y) ** 2 if loss == "mse" else np.log1p(np.exp(-y * f))
    return ell.sum(-1) if ell.ndim == f.ndim and y.ndim == 2 else ell


def _np_loss_grad(loss: str, f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """∂ℓ/∂f: f − y, −y/(1 + e^{yf}), or softmax(f) − onehot(y)."""
    if loss == "xent":
        return np.exp(f) / np.exp(f).sum(-1, keepdims=True) - np.eye(f.shape[-1])[y]
    return f - y if loss == "mse" else -y / (1.0 + np.exp(y * f))


def test_loss_and_error_signals_are_the_models_of_the_outputs(case):
    """Full loss = mean or sum over the m training inputs of ℓ(f_t(ξ_i), y_i);
    χ_{t,i} = r ∂ℓ/∂f(f_t(ξ_i), y_i) for i in B_t and 0 elsewhere, r = 1/|B_t| ("mean") or 1."""
    run, _, y, batches = produce(case)
    c = CASES[case]
    f = run.outputs_groups[:, :, :M_TRAIN]  # (G, T+1, m) or (G, T+1, m, k)
    ell = _np_loss(c.loss, f, y)  # (G, T+1, m)
    assert ell.shape == (c.G, c.T + 1, M_TRAIN)
    assert_close(run.loss_groups, ell.mean(-1) if c.reduction == "mean" else ell.sum(-1))
    chi = np.zeros((c.G, c.T, M_TRAIN, *c.classes))
    for t, b in enumerate(batches[: c.T]):
        r = 1.0 / len(b) if c.reduction == "mean" else 1.0
        chi[:, t, b] = r * _np_loss_grad(c.loss, f[:, t, b], y[b])
    assert_close(run.error_signals_groups, chi)


# ------------------------------------------------------------ novelty and bases
BASIS_STATS = ("size", "dropped", "dropped_mass", "orthogonality")


def test_novelty_and_bases_keys_and_shapes(case):
    """Novelty: one (G, T+1, M) array per Gaussian process fwd/bwd of W^l, l = 2..L, in the
    Monte Carlo and exact limits (also at T = 0); basis statistics (G, T+1) per process in
    the Monte Carlo limit. The NTK limit and finite nets have neither."""
    run = produce(case)[0]
    c = CASES[case]
    G, T, M = c.G, c.T, c.M
    processes = [(side, l) for side in ("fwd", "bwd") for l in range(2, c.L + 1)]
    if c.producer in ("mc", "exact"):
        assert set(run.novelty) == {key(side, l) for side, l in processes}
        for k, v in run.novelty.items():
            assert v.shape == (G, T + 1, M) and v.dtype == np.float64, k
            assert np.all(np.isnan(v) | (v >= 0.0)), k  # residual norms, NaN where none was added
    else:
        assert run.novelty == {}
    if c.producer == "mc":
        assert set(run.bases) == {key(side, l, stat) for side, l in processes for stat in BASIS_STATS}
        for k, v in run.bases.items():
            assert v.shape == (G, T + 1), k
            assert np.all(np.isnan(v) | (v >= 0.0)), k
            if parse_key(k)[2] != "orthogonality":  # NaN where not checked
                assert np.all(np.isfinite(v)), k
    elif c.producer != "exact":  # the exact limit has no Monte Carlo bases to report on
        assert run.bases == {}


# ------------------------------------------------------------------ save / load
def _same_meta(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_meta(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same_meta(u, v) for u, v in zip(a, b))
    return type(a) is type(b) and a == b


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_save_load_round_trip_is_bit_exact(case, tmp_path):
    run, _, _, _ = produce(case)
    path = tmp_path / f"{case}.npz"
    zlimit.save(run, path)
    back = zlimit.load(path)
    assert back.error_model == run.error_model
    assert back.record_steps == run.record_steps
    assert back.model.describe() == run.model.describe()
    assert _same_meta(back.meta, run.meta), (back.meta, run.meta)
    for name in ("outputs_groups", "loss_groups", "error_signals_groups"):
        assert _bits_equal(getattr(back, name), getattr(run, name)), name
    for group in ("kernels", "cross", "novelty", "bases"):
        saved, loaded = getattr(run, group), getattr(back, group)
        assert loaded.keys() == saved.keys(), group
        for k in saved:
            assert _bits_equal(loaded[k], saved[k]), f"{group}/{k}"
