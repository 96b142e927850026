"""The façade ``zlimit.simulate`` / ``zlimit.train_finite`` (``zlimit._api``, issue 11).

* An option that does not apply to the chosen method is refused, naming it.
* Hostile arguments (bools, floats for ints, NaN, negatives, strings, record steps
  out of range, ...) are refused by a one-line ``ValueError`` that names the
  argument: never coerced, never turned into a silent NaN (hypothesis).
* ``on_step`` is called once per (group, step).
* The same seed gives the same bits for any number of worker threads.
"""
from __future__ import annotations

import itertools
import re
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import zlimit

T = 2
MODEL = zlimit.MLP(depth=2, activation="linear", lr=0.3)  # linear: every method applies
_rng = np.random.default_rng(7)
X, X_EVAL = (zlimit.datasets.normalise(_rng.standard_normal(shape)) for shape in ((3, 2), (1, 2)))
Y = np.array([0.5, -0.3, 0.8])

#: the entry points and their smallest valid call (each a fraction of a second)
BASE = {
    "mc": dict(steps=T, particles=200, groups=2, progress=False),
    "ntk": dict(steps=T, particles=200, groups=2, progress=False, parametrization="ntk"),
    "exact": dict(steps=T, method="exact", progress=False),
    "finite": dict(steps=T, width=8),
}
ENTRIES = tuple(BASE)


def call(entry: str, model=MODEL, X=X, y=Y, **overrides):
    kw = BASE[entry] | overrides
    fn = zlimit.train_finite if entry == "finite" else zlimit.simulate
    return fn(model, X, y, **kw)


def assert_refused(fn, name: str, *, first: bool = True) -> str:
    """``fn()`` raises a one-line ValueError that names ``name`` (at its start when ``first``)."""
    with pytest.raises(ValueError) as info:
        fn()
    msg = str(info.value)
    assert len(msg.splitlines()) == 1, msg
    pattern = rf"^{re.escape(name)}\b" if first else rf"(?<![\w.]){re.escape(name)}\b"
    assert re.search(pattern, msg), f"message does not name {name!r}: {msg}"
    return msg


def test_base_calls_are_valid():
    """The hostile tests below change one argument of calls that succeed."""
    for entry in ENTRIES:
        run = call(entry, X_eval=X_EVAL, record_steps=(0, 1))
        assert run.outputs.shape == (T + 1, 4)


# --------------------------------------------------------------- options that do not apply
EXACT_REFUSES = dict(particles=1000, groups=2, seed=0, dtype="float64", threads=1, qmc=False,
                     gradient_independence=False, basis_tol=1e-3)


def test_monte_carlo_options_are_valid_for_mc():
    """The values the exact method refuses are accepted by Monte Carlo: the refusal is
    about the method, not the value."""
    run = call("mc", **EXACT_REFUSES)
    assert run.groups == 2


@pytest.mark.parametrize("option", sorted(EXACT_REFUSES))
def test_exact_refuses_monte_carlo_options(option):
    """Each Monte Carlo option, even at its default value, is refused by method="exact"."""
    msg = assert_refused(lambda: call("exact", **{option: EXACT_REFUSES[option]}), option)
    assert "exact" in msg


@pytest.mark.parametrize("option, value", [("gradient_independence", False), ("gradient_independence", True),
                                           ("basis_tol", 1e-3)])
def test_ntk_refuses_mu_p_only_options(option, value):
    msg = assert_refused(lambda: call("ntk", **{option: value}), option)
    assert "ntk" in msg


def test_ntk_accepts_the_other_monte_carlo_options():
    run = call("ntk", seed=3, dtype="float64", threads=1, qmc=True)
    assert run.meta["parametrization"] == "ntk" and run.meta["qmc"] is True


def test_exact_refuses_ntk():
    msg = assert_refused(lambda: call("exact", parametrization="ntk"), "parametrization", first=False)
    assert "method" in msg


# --------------------------------------------------------------- hostile arguments
def _not_an_int(lo: int, none: bool) -> st.SearchStrategy:
    """Values an integer argument >= lo must refuse (``none``: None is not its default)."""
    options = [
        st.booleans(), st.sampled_from([np.True_, np.False_]),
        st.floats(allow_nan=True, allow_infinity=True),  # 2.5, 2.0, nan, inf: never truncated
        st.sampled_from([np.float64(3.0), np.float32(2.0), 3 + 0j, "3", b"3", [3], (3,), np.array([3]),
                         np.nan]),
        st.text(max_size=4),
        st.integers(max_value=lo - 1),
    ]
    if none:
        options.append(st.none())
    return st.one_of(*options)


def _not_a_seed(none: bool) -> st.SearchStrategy:
    """What a seed must refuse: what is not an integer >= 0, and integers from 2**64 (never wrapped)."""
    return st.one_of(_not_an_int(0, none), st.integers(min_value=2**64))


def _not_a_bool(none: bool) -> st.SearchStrategy:
    options = [st.integers(), st.floats(allow_nan=True), st.text(max_size=4),
               st.sampled_from(["True", "false", 1, 0, np.int64(1), np.float64(1.0), [True]])]
    if none:
        options.append(st.none())
    return st.one_of(*options)


def _not_a_dtype(none: bool) -> st.SearchStrategy:
    def numpy_refuses(s) -> bool:
        try:
            return np.dtype(s).name not in ("float64", "float32")
        except (TypeError, ValueError, SyntaxError):
            return True

    options = [st.text(max_size=8).filter(numpy_refuses), st.booleans(), st.floats(allow_nan=True),
               st.integers(), st.sampled_from(["float16", "int64", "complex128", "float128", np.float16, complex])]
    if none:
        options.append(st.none())
    return st.one_of(*options)


def _not_a_choice(choices) -> st.SearchStrategy:
    return st.one_of(st.text(max_size=8).filter(lambda s: s not in choices), st.booleans(), st.integers(),
                     st.floats(allow_nan=True), st.none(), st.sampled_from([c.upper() for c in choices]),
                     st.sampled_from([[c] for c in choices]), st.sampled_from([c.encode() for c in choices]))


_BAD_RECORD_ENTRY = st.one_of(st.floats(allow_nan=True), st.booleans(), st.text(max_size=3),
                              st.integers(max_value=-1), st.integers(min_value=T + 1), st.none())


@st.composite
def _bad_record_steps(draw):
    """A sequence with at least one bad entry among valid ones, or a bad scalar."""
    if draw(st.booleans()):
        return draw(st.one_of(st.floats(allow_nan=True), st.booleans(), st.text(max_size=3),
                              st.integers(max_value=-1), st.integers(min_value=T + 1)))
    good = draw(st.lists(st.integers(0, T), max_size=3))
    bad = draw(_BAD_RECORD_ENTRY)
    items = draw(st.permutations([*good, bad]))
    return draw(st.sampled_from([tuple(items), list(items)]))


def _hostile(entry: str) -> dict:
    """argument -> strategy of values ``entry`` must refuse with a ValueError naming it."""
    limit = entry in ("mc", "ntk")
    out = {"steps": _not_an_int(0, none=True), "record_steps": _bad_record_steps(), "progress": _not_a_bool(none=False)}
    if entry == "finite":
        out |= {"width": _not_an_int(1, none=True), "seed": _not_a_seed(none=True),
                "dtype": _not_a_dtype(none=True), "parametrization": _not_a_choice(("mup", "sp", "ntp", "ip"))}
        return out
    out |= {"method": _not_a_choice(("mc", "exact"))}
    if entry != "exact":
        out["parametrization"] = _not_a_choice(("mup", "ntk"))
    if limit:
        out |= {"particles": _not_an_int(2, none=False), "groups": _not_an_int(1, none=False),
                "seed": _not_a_seed(none=False), "threads": _not_an_int(1, none=False),
                "qmc": _not_a_bool(none=False), "dtype": _not_a_dtype(none=False)}
    if entry == "mc":
        out |= {"gradient_independence": _not_a_bool(none=False),
                "basis_tol": st.one_of(st.booleans(), st.floats(max_value=0.0),
                                       st.floats(min_value=1.0), st.sampled_from([np.nan, np.inf, -np.inf, 1.0]),
                                       st.text(max_size=4), st.sampled_from([1e-3 + 0j, "1e-3", [1e-3]]))}
    return out


_CASES = st.sampled_from([(e, a) for e in ENTRIES for a in _hostile(e)])


@settings(max_examples=300)
@given(case=_CASES, data=st.data())
def test_hostile_arguments_are_refused_naming_them(case, data):
    entry, name = case
    value = data.draw(_hostile(entry)[name], label=name)
    assert_refused(lambda: call(entry, **{name: value}), name)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("record_steps", [(2.5,), 2.5, (T + 1,), T + 1, (0, -1), (True,), ("1",), (np.nan,),
                                          (1.0,), [1, 2, 1.5], "1", None])
def test_bad_record_steps_are_refused(entry, record_steps):
    assert_refused(lambda: call(entry, record_steps=record_steps), "record_steps")


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("steps", [2.5, 2.0, np.float64(2.0), True, np.nan, -1, "2", None])
def test_bad_steps_are_refused(entry, steps):
    assert_refused(lambda: call(entry, steps=steps), "steps")


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("model", ["mlp", None, 3, {"depth": 2}])
def test_a_model_that_is_not_an_mlp_is_refused(entry, model):
    assert_refused(lambda: call(entry, model=model), "model")


def _hostile_data():
    nan_X = X.copy()
    nan_X[1, 0] = np.nan
    inf_eval = X_EVAL.copy()
    inf_eval[0, 1] = -np.inf
    cases = {
        "X-nan": ("X", dict(X=nan_X)), "X_eval-inf": ("X_eval", dict(X_eval=inf_eval)),
        "y-nan": ("y", dict(y=np.array([0.5, np.nan, 1.0]))),
        "X-string": ("X", dict(X="abc")), "X-strings": ("X", dict(X=[["1", "a"], ["2", "3"], ["4", "5"]])),
        "X-complex": ("X", dict(X=X + 1j)),  # must not silently drop the imaginary part
        "X-ragged": ("X", dict(X=[[1.0, 2.0], [3.0], [4.0, 5.0]])), "X-dict": ("X", dict(X={"a": 1})),
        "y-strings": ("y", dict(y=["a", "b", "c"])), "y-complex": ("y", dict(y=Y + 1j)),
        "X_eval-string": ("X_eval", dict(X_eval="ab")), "X_eval-complex": ("X_eval", dict(X_eval=X_EVAL + 1j)),
        "batches-int": ("batches", dict(batches=5)), "batches-floats": ("batches", dict(batches=[[0.5], [1]])),
        "batches-bools": ("batches", dict(batches=[[True], [False]])),
        "batches-out-of-range": ("batches", dict(batches=[[0, 3], [1]])),
        "batches-too-few": ("batches", dict(batches=[[0]])),
        "batches-too-many": ("batches", dict(batches=[[0], [1], [2]])),
        "batches-bool-index": ("batches", dict(batches=[[0, True], [1]])),
        "batches-ragged": ("batches", dict(batches=[[0, [1]], [1]])),
        "X-masked": ("X", dict(X=np.ma.masked_array(X, mask=X > 0))),
        "X-bool-entry": ("X", dict(X=[[1.0, True], [0.5, 0.5], [0.2, 0.1]])),
    }
    return [pytest.param(name, kw, id=i) for i, (name, kw) in cases.items()]


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("name, kw", _hostile_data())
def test_hostile_data_is_refused_naming_it(entry, name, kw):
    assert_refused(lambda: call(entry, **kw), name)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("on_step", [5, "print", [print]])
def test_a_callback_that_is_not_callable_is_refused_before_running(entry, on_step):
    assert_refused(lambda: call(entry, on_step=on_step), "on_step")


# --------------------------------------------------------------------------- on_step
def _recording():
    calls, lock = [], threading.Lock()

    def on_step(group, t):
        with lock:
            calls.append((group, t))

    return calls, on_step


@pytest.mark.parametrize("entry", ["mc", "ntk"])
def test_on_step_once_per_group_and_step(entry):
    G, steps = 3, 3
    calls, on_step = _recording()
    call(entry, steps=steps, particles=600, groups=G, threads=2, on_step=on_step)
    assert len(calls) == G * (steps + 1)
    assert sorted(calls) == list(itertools.product(range(G), range(steps + 1)))
    for g in range(G):  # in step order within each group
        assert [t for h, t in calls if h == g] == list(range(steps + 1))


@pytest.mark.parametrize("entry", ["exact", "finite"])
def test_on_step_once_per_step(entry):
    calls, on_step = _recording()
    call(entry, steps=4, X_eval=X_EVAL, on_step=on_step)
    assert calls == [(0, t) for t in range(5)]


def test_on_step_once_per_step_for_an_exact_run_that_needs_many_directions():
    """m = 20 inputs in d = 20, depth 4, 30 minibatch steps: more base normals than the
    exact limit allocates at first, so it grows its allocation during the run. The
    callback still sees each step once."""
    rng = np.random.default_rng(0)
    Xb, yb = rng.standard_normal((20, 20)), rng.uniform(-1, 1, 20)
    model = zlimit.MLP(depth=4, activation="linear", lr=0.05)
    steps = 30
    calls, on_step = _recording()
    zlimit.simulate(model, Xb, yb, steps=steps, method="exact", batches=zlimit.batch_schedule(20, 3, steps, seed=0),
                    on_step=on_step)
    assert len(calls) == steps + 1, calls
    assert calls == [(0, t) for t in range(steps + 1)]


# --------------------------------------------------------------------------- threads
def _arrays(run) -> dict:
    out = {"outputs": run.outputs_groups, "loss": run.loss_groups, "chi": run.error_signals_groups}
    for group in ("kernels", "cross", "novelty", "bases"):
        out |= {f"{group}/{k}": v for k, v in getattr(run, group).items()}
    return out


@pytest.mark.parametrize("parametrization", ["mup", "ntk"])
def test_same_seed_same_bits_for_one_and_two_threads(parametrization):
    model = zlimit.MLP(depth=3, activation="tanh", lr=0.5)
    batches = zlimit.batch_schedule(3, 2, 4, seed=2)
    kw = dict(steps=4, particles=8000, groups=4, seed=11, progress=False, X_eval=X_EVAL, batches=batches,
              record_steps=(0, 2), parametrization=parametrization)
    one, two = (zlimit.simulate(model, X, Y, threads=n, **kw) for n in (1, 2))
    a, b = _arrays(one), _arrays(two)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
    other = zlimit.simulate(model, X, Y, threads=2, **kw | {"seed": 12})
    assert not np.array_equal(other.outputs_groups, one.outputs_groups)  # the seed matters


# ---------------------------------------------------------------- review fixes
def test_estimate_memory_validates_and_defaults_to_simulates_threads():
    import numba

    model = zlimit.MLP(depth=3)
    batches = [np.arange(4)] * 5
    for kw, name in ((dict(groups=0), "groups"), (dict(particles=2.5), "particles"), (dict(steps=-1), "steps"),
                     (dict(dtype="float16"), "dtype"), (dict(m=0), "m"), (dict(M=3), "M")):
        args = dict(model=model, m=4, M=4, steps=5, particles=4000, groups=4, batches=batches) | kw
        with pytest.raises(ValueError, match=rf"^{name}\b"):
            zlimit.estimate_memory(**args)
    threads = numba.config.NUMBA_NUM_THREADS
    same = zlimit.estimate_memory(model, 4, 4, 5, 4000, 4, batches, threads=threads)
    assert zlimit.estimate_memory(model, 4, 4, 5, 4000, 4, batches) == same


@pytest.mark.parametrize("entry", ["mc", "ntk", "finite"])
@pytest.mark.parametrize("seed", [2**64, 2**64 + 5, 2**70, -1])
def test_seeds_beyond_64_bits_are_refused_not_wrapped(entry, seed):
    """The issue: simulate(seed=2**64 + 5) ran as seed 5, train_finite(seed=2**70) ran."""
    msg = assert_refused(lambda: call(entry, seed=seed), "seed")
    assert msg == f"seed must be an integer in [0, 2**64), got {seed} (out of range)"


@pytest.mark.parametrize("entry", ["mc", "ntk", "finite"])
def test_the_largest_seed_runs_and_is_recorded(entry):
    run = call(entry, seed=np.uint64(2**64 - 1))
    assert run.meta["seed"] == 2**64 - 1 and type(run.meta["seed"]) is int


@pytest.mark.parametrize("entry", ENTRIES)
def test_more_batches_than_steps_are_refused(entry):
    msg = assert_refused(lambda: call(entry, steps=1, batches=[[0], [1], [2]]), "batches")
    assert msg == "batches has 3 entries but steps = 1: give one index array per step"


@pytest.mark.parametrize("kw, message", [
    (dict(m=2, M=1), "M must be an integer >= 2 (all inputs: m training plus the evaluation inputs), got 1 "
                     "(out of range)"),
    (dict(batches=[[0]] * 6), "batches has 6 entries but steps = 5: give one index array per step"),
    (dict(batches=[[4]] * 5), "batches[0] must hold indices in [0, 4) (m = number of training inputs), got [4] "
                              "(4 is outside)"),
    (dict(record_steps=(6,)), "record_steps[0] must be an integer in [0, 5] (steps to keep; steps = 5), got 6 "
                              "(out of range)"),
    (dict(threads=0), "threads must be an integer >= 1, got 0 (out of range)"),
    (dict(m=True), "m must be an integer >= 1, got True (a bool)"),
    (dict(model="mlp"), "model must be a zlimit.MLP (e.g. zlimit.MLP(depth=3)), got str"),
    # None is no default here (it used to stand for simulate's 100 000 particles, 8 groups, float64)
    (dict(particles=None), "particles must be an integer >= 2, got None (not an integer)"),
    (dict(groups=None), "groups must be an integer >= 1, got None (not an integer)"),
    (dict(dtype=None), "dtype must be one of ('float64', 'float32'), got None"),
])
def test_estimate_memory_refuses_naming_the_argument(kw, message):
    args = dict(model=zlimit.MLP(depth=3), m=4, M=4, steps=5, particles=4000, groups=4) | kw
    with pytest.raises(ValueError) as info:
        zlimit.estimate_memory(**args)
    assert str(info.value) == message


@pytest.mark.filterwarnings("ignore::zlimit._errors.DataWarning")  # the fuzz suite's input, |ξ|² = 0.016
def test_basis_tol_0_is_refused():
    """Found by the fuzz suite: with basis_tol = 0 a residual of pure round-off became a
    direction, and a run whose features do not move (lr_mult 0) crashed with "basis
    capacity exceeded" (2 particles per group) or lost orthogonality (4 or 8)."""
    model = zlimit.MLP(depth=2, lr=1.0, init_std=0.75, lr_mult=0.0)
    for particles in (16, 32, 64):
        msg = assert_refused(lambda: zlimit.simulate(model, [[0.12573022]], [-0.13210486], steps=2,
                                                     particles=particles, basis_tol=0.0, progress=False), "basis_tol")
        assert msg == "basis_tol must be a finite number in (0.0, 1.0), got 0.0 (out of range)"
    run = zlimit.simulate(model, [[0.12573022]], [-0.13210486], steps=2, particles=64, groups=2, basis_tol=1e-12,
                          progress=False)
    assert run.meta["basis_tol"] == 1e-12


def test_ntk_limit_checks_memory_first(monkeypatch):
    from zlimit import _engine

    monkeypatch.setattr(_engine, "available_memory", lambda: 2**20)
    X, y = zlimit.datasets.gaussian(3, 4, seed=0)
    with pytest.raises(zlimit.ResourceError, match="GiB"):
        zlimit.simulate(zlimit.MLP(depth=2), X, y, steps=2, particles=100_000, groups=4,
                        parametrization="ntk", progress=False)


@pytest.mark.filterwarnings("ignore::zlimit._errors.DataWarning")  # an input of 1e200, on purpose
def test_exact_limit_names_the_step_of_a_diverging_evaluation_input():
    X, y = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1.0, -1.0])
    X_eval = np.array([[1e200, 1e200]])
    with pytest.raises(zlimit.DivergenceError, match=r"evaluation input (became|is) non-finite at step 0"):
        zlimit.simulate(zlimit.MLP(depth=3, activation="linear", lr=0.1), X, y, steps=2, X_eval=X_eval,
                        method="exact", progress=False)
