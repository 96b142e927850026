"""The argument checks of zlimit._validate, and zlimit._memory.available_memory.

Every checker accepts its whole valid domain and refuses hostile input (bools, NaN,
±inf, strings, floats for integers, values out of range, odd objects) with a
ValueError whose message is one line naming the argument.
"""
from __future__ import annotations

import math
import sys
import types
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zlimit import _memory
from zlimit._errors import DataWarning
from zlimit._validate import (DTYPES, check_batches, check_bool, check_choice, check_data, check_dtype, check_float,
                              check_int, check_int_list, check_record_steps, check_seed, is_int)

BIG = 2 ** 70


def refused(name: str, check, *args, **kw) -> str:
    """Call ``check``; it must raise a one-line ValueError that names ``name``."""
    with pytest.raises(ValueError) as info:
        check(*args, **kw)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert msg.startswith(name), msg
    assert "got " in msg, msg
    return msg


class Weird:
    """An object with a hostile repr (several lines, very long)."""

    def __repr__(self):
        return "Weird(\n" + "x" * 500 + "\n)"


class Broken:
    def __repr__(self):
        raise RuntimeError("no repr")

    def __index__(self):
        raise TypeError("not an index")


# values that are never numbers of any kind
NOT_NUMBERS = ["3", "2.5", "", b"3", None, [1], (1,), {1}, {"a": 1}, np.array([1, 2]), object(), Weird(), Broken(),
               1 + 2j, np.complex128(1)]
BOOLS = [True, False, np.True_, np.False_]
NON_FINITE = [math.nan, math.inf, -math.inf, np.float32("nan"), np.float64("inf")]


# ---------------------------------------------------------------------- check_int
@settings(max_examples=200)
@given(lo=st.integers(-50, 50), span=st.integers(0, 100), data=st.data())
def test_check_int_accepts_its_domain(lo, span, data):
    hi = lo + span
    v = data.draw(st.integers(lo, hi))
    for given_ in (v, np.int64(v), np.int32(v), np.array(v)):
        out = check_int("n", given_, lo, hi)
        assert out == v and type(out) is int
    assert check_int("n", v, lo) == v
    assert check_int("n", v, None) == v
    assert check_int("n", BIG, 0) == BIG


@settings(max_examples=200)
@given(lo=st.integers(-50, 50), span=st.integers(0, 100), v=st.integers(-500, 500))
def test_check_int_refuses_out_of_range(lo, span, v):
    hi = lo + span
    if lo <= v <= hi:
        assert check_int("count", v, lo, hi) == v
    else:
        msg = refused("count", check_int, "count", v, lo, hi)
        assert f"[{lo}, {hi}]" in msg and "out of range" in msg


@settings(max_examples=100)
@given(x=st.floats(allow_nan=True, allow_infinity=True))
def test_check_int_refuses_every_float(x):
    """Floats are refused even when integral (2.0): never truncated."""
    msg = refused("steps", check_int, "steps", x, 0)
    assert "not an integer" in msg
    refused("steps", check_int, "steps", np.float64(x), 0)


@pytest.mark.parametrize("value", BOOLS + NOT_NUMBERS + NON_FINITE + [2.5, 2.0, Fraction(2, 1)])
def test_check_int_refuses_hostile_input(value):
    msg = refused("width", check_int, "width", value, 1)
    assert "width must be an integer >= 1" in msg
    assert len(msg) < 250  # a long or multi-line repr is shortened to one line


def test_check_int_message_and_hint():
    assert str(pytest.raises(ValueError, check_int, "depth", 0, 1, hint=" (hidden layers)").value) == \
        "depth must be an integer >= 1 (hidden layers), got 0 (out of range)"
    assert "got True (a bool)" in str(pytest.raises(ValueError, check_int, "seed", True, 0).value)
    assert "in [0, 3]" in str(pytest.raises(ValueError, check_int, "k", 4, 0, 3).value)


# ---------------------------------------------------------------------- check_seed
@pytest.mark.parametrize("value", [0, 1, 2**63, 2**64 - 1, np.uint64(2**64 - 1), np.int8(5)])
def test_check_seed_accepts_64_bit_seeds(value):
    out = check_seed("seed", value)
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value", [2**64, 2**64 + 5, 2**70, -1, np.int64(-3)])
def test_check_seed_refuses_out_of_range_not_wraps(value):
    """The issue: simulate(seed=2**64 + 5) ran with a seed wrapped to 5."""
    assert str(pytest.raises(ValueError, check_seed, "seed", value).value) == \
        f"seed must be an integer in [0, 2**64), got {value!r} (out of range)"


@pytest.mark.parametrize("value", BOOLS + NOT_NUMBERS + NON_FINITE + [2.0, 2.5])
def test_check_seed_refuses_what_is_not_an_integer(value):
    msg = refused("seed", check_seed, "seed", value)
    assert "seed must be an integer >= 0 below 2**64" in msg


def test_is_int():
    assert is_int(3) and is_int(np.int8(-1)) and is_int(np.uint64(7)) and is_int(BIG)
    assert not any(is_int(v) for v in BOOLS + NOT_NUMBERS + NON_FINITE + [2.0, 2.5])


# ---------------------------------------------------------------------- check_float
@settings(max_examples=200)
@given(x=st.floats(-1e6, 1e6, allow_nan=False))
def test_check_float_accepts_finite_numbers(x):
    for given_ in (x, np.float64(x), np.array(x)):
        out = check_float("x", given_)
        assert out == x and type(out) is float
    assert check_float("x", np.float32(x)) == float(np.float32(x))
    lo, hi = min(x, 0.0), max(x, 0.0)
    assert check_float("x", x, lo, hi) == x


@settings(max_examples=200)
@given(x=st.floats(-10, 10, allow_nan=False), lo=st.floats(-5, 0), hi=st.floats(0, 5),
       lo_open=st.booleans(), hi_open=st.booleans())
def test_check_float_bounds(x, lo, hi, lo_open, hi_open):
    inside = (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)
    if inside:
        assert check_float("tol", x, lo, hi, lo_open=lo_open, hi_open=hi_open) == x
    else:
        msg = refused("tol", check_float, "tol", x, lo, hi, lo_open=lo_open, hi_open=hi_open)
        assert "out of range" in msg
        assert msg.startswith(f"tol must be a finite number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}")


@pytest.mark.parametrize("value", BOOLS + NOT_NUMBERS + NON_FINITE + [10 ** 400])
def test_check_float_refuses_hostile_input(value):
    msg = refused("lr", check_float, "lr", value, 0, lo_open=True)
    assert msg.startswith("lr must be a positive finite number, got ")


def test_check_float_accepts_ints_and_positive_wording():
    assert check_float("lr", 1, 0, lo_open=True) == 1.0
    assert check_float("lr", np.int64(3)) == 3.0
    assert str(pytest.raises(ValueError, check_float, "lr", 0.0, 0, lo_open=True).value) == \
        "lr must be a positive finite number, got 0.0 (out of range)"
    assert str(pytest.raises(ValueError, check_float, "lr", -1, 0).value) == \
        "lr must be a finite number >= 0, got -1 (out of range)"
    assert "(not finite)" in str(pytest.raises(ValueError, check_float, "lr", math.nan).value)
    assert "(a bool)" in str(pytest.raises(ValueError, check_float, "lr", True).value)
    assert "(not a number)" in str(pytest.raises(ValueError, check_float, "lr", "0.1").value)


# ---------------------------------------------------------------------- check_choice
@settings(max_examples=100)
@given(choices=st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=5, unique=True), data=st.data())
def test_check_choice_accepts_each_choice(choices, data):
    c = data.draw(st.sampled_from(choices))
    assert check_choice("kind", c, choices) == c
    assert check_choice("kind", np.str_(c), choices) == c
    other = data.draw(st.text(max_size=6))
    if other not in choices:
        msg = refused("kind", check_choice, "kind", other, choices)
        assert repr(tuple(choices)) in msg


@pytest.mark.parametrize("value", BOOLS + NOT_NUMBERS + NON_FINITE + [1.0, 2.5, "MUP", " mup"])
def test_check_choice_refuses_hostile_input(value):
    refused("parametrization", check_choice, "parametrization", value, ("mup", "ntk", 1, 2))


def test_check_choice_like_with_like():
    assert check_choice("k", 1, (0, 1)) == 1 and check_choice("k", np.int64(1), (0, 1)) == 1
    for v in (True, 1.0, np.float64(1.0), "1"):  # True == 1 and 1.0 == 1 in Python; refused here
        refused("k", check_choice, "k", v, (0, 1))
    assert check_choice("flag", True, (True, False)) is True
    refused("flag", check_choice, "flag", 1, (True, False))
    assert str(pytest.raises(ValueError, check_choice, "reduction", "avg", ("mean", "sum"), hint=" (r)").value) == \
        "reduction must be one of ('mean', 'sum') (r), got 'avg'"


# ---------------------------------------------------------------------- check_bool / check_dtype
@pytest.mark.parametrize("value", [True, False, np.True_, np.False_])
def test_check_bool_accepts(value):
    assert check_bool("progress", value) is bool(value)


@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0, "True", "false", None, math.nan, [True], np.array([True])])
def test_check_bool_refuses(value):
    refused("progress", check_bool, "progress", value)


@pytest.mark.parametrize("value, name", [("float64", "float64"), ("float32", "float32"), (np.float64, "float64"),
                                         (np.float32, "float32"), (float, "float64"), ("f4", "float32"),
                                         ("double", "float64"), (np.dtype("float32"), "float32")])
def test_check_dtype_accepts(value, name):
    dt = check_dtype(value)
    assert isinstance(dt, np.dtype) and dt.name == name and dt.name in DTYPES


@pytest.mark.parametrize("value", [None, "float16", np.float16, "int64", int, bool, True, complex, "complex128",
                                   "double precision", "", 64, 2.5, math.nan, object(), Weird(), [np.float64]])
def test_check_dtype_refuses(value):
    msg = refused("dtype", check_dtype, value)
    assert "('float64', 'float32')" in msg


# ---------------------------------------------------------------------- check_int_list
@settings(max_examples=100)
@given(values=st.lists(st.integers(1, 10 ** 6), max_size=8))
def test_check_int_list_accepts(values):
    assert check_int_list("widths", values, 1, allow_empty=True) == values
    assert check_int_list("widths", np.array(values, dtype=np.int64), 1, allow_empty=True) == values
    assert check_int_list("widths", tuple(values), 1, allow_empty=True) == values
    if values and len(set(values)) == len(values):
        assert check_int_list("widths", iter(values), 1, unique=True) == values


@pytest.mark.parametrize("values, fragment", [
    ([], "(empty)"), ([8, 0], "widths[1] must be an integer >= 1"), ([8, 2.5], "widths[1]"),
    ([8.0], "widths[0]"), ([True], "widths[0]"), (["8"], "widths[0]"), ([math.nan], "widths[0]"),
    ("8,64", "sequence of integers"), (8, "sequence of integers"), (None, "sequence of integers"),
    (np.ones((2, 2), int), "sequence of integers"), ([8, 8], "repeated: [8]"),
])
def test_check_int_list_refuses(values, fragment):
    msg = refused("widths", check_int_list, "widths", values, 1, unique=True)
    assert fragment in msg, msg


# ---------------------------------------------------------------------- check_record_steps
@settings(max_examples=200)
@given(steps=st.integers(0, 50), data=st.data())
def test_check_record_steps_property(steps, data):
    rs = data.draw(st.lists(st.integers(0, steps), max_size=6))
    out = check_record_steps(rs, steps)
    assert out == tuple(sorted({0, *rs}))
    assert all(type(s) is int for s in out)
    assert check_record_steps(np.array(rs, dtype=np.int64), steps) == out
    assert check_record_steps(tuple(np.int32(s) for s in rs), np.int64(steps)) == out
    assert check_record_steps(set(rs), steps) == out


@pytest.mark.parametrize("record_steps", [
    (2.5,), [0, 2.5], (2.0,), [np.float64(1.0)], (True,), [0, np.True_], (-1,), (6,), [0, 1, 99],
    ("2",), "2", b"2", None, 2.5, math.nan, [math.nan], [math.inf], np.ones((2, 2), int), [[1]], [None], Weird(),
])
def test_check_record_steps_refuses(record_steps):
    msg = refused("record_steps", check_record_steps, record_steps, 5)
    assert "[0, 5]" in msg


def test_record_steps_2_5_is_refused_not_rounded():
    """The issue: simulate(record_steps=(2.5,)) used to keep step 2 silently."""
    assert str(pytest.raises(ValueError, check_record_steps, (2.5,), 5).value) == \
        "record_steps[0] must be an integer in [0, 5] (steps to keep; steps = 5), got 2.5 (not an integer)"


def test_check_record_steps_scalar_and_empty():
    assert check_record_steps(3, 5) == (0, 3)
    assert check_record_steps(np.int64(5), 5) == (0, 5)
    assert check_record_steps(np.array(4), 5) == (0, 4)
    assert check_record_steps((), 5) == (0,)
    assert check_record_steps((0,), 0) == (0,)
    refused("record_steps", check_record_steps, 6, 5)
    for steps in (-1, 2.0, True, None):
        refused("steps", check_record_steps, (0,), steps)


# ---------------------------------------------------------------------- data and batches
@pytest.mark.parametrize("steps", [-1, 1.5, 2.0, "2", True, None])
def test_check_batches_refuses_bad_steps(steps):
    refused("steps", check_batches, None, 3, steps)


def test_check_batches_message_is_one_line():
    bad = [np.arange(100).reshape(10, 10)]
    msg = refused("batches[0]", check_batches, bad, 100, 1)
    assert "1-d array" in msg


@pytest.mark.parametrize("n, steps", [(3, 1), (0, 2), (1, 2), (5, 0)])
def test_check_batches_needs_one_batch_per_step(n, steps):
    """More batches than steps used to be ignored unchecked; fewer were refused."""
    with pytest.raises(ValueError) as info:
        check_batches([[0]] * n, 4, steps)
    assert str(info.value) == f"batches has {n} entries but steps = {steps}: give one index array per step"


@settings(max_examples=100)
@given(m=st.integers(1, 8), data=st.data())
def test_check_batches_accepts_index_sets(m, data):
    """Lists, tuples, ranges and integer arrays of any integer dtype; sorted int64 out."""
    sets = data.draw(st.lists(st.sets(st.integers(0, m - 1), min_size=1), max_size=4))
    dtype = data.draw(st.sampled_from([np.int8, np.uint8, np.int32, np.uint64, np.int64]))
    given_ = [data.draw(st.sampled_from([list(b), tuple(b), np.array(list(b), dtype=dtype)])) for b in sets]
    out = check_batches(given_, m, len(sets))
    assert [b.tolist() for b in out] == [sorted(b) for b in sets]
    assert all(b.dtype == np.int64 for b in out)
    assert [b.tolist() for b in check_batches([range(m)], m, 1)] == [list(range(m))]


@pytest.mark.parametrize("batches, name, fragment", [
    ([[0, True]], "batches[0][1]", "(a bool)"),  # NumPy would read True as index 1
    ([[0.0]], "batches[0][0]", "(not an integer)"), ([[0, [1]]], "batches[0]", "got [0, [1]] (nested: not 1-d)"),
    ([[0, 4]], "batches[0]", "indices in [0, 4) (m = number of training inputs), got [0, 4] (4 is outside)"),
    ([[-1]], "batches[0]", "(-1 is outside)"), ([[2**64]], "batches[0]", "(18446744073709551616 is outside)"),
    ([[]], "batches[0]", "got [] (empty)"), ([[1, 0, 1]], "batches[0]", "got [1, 0, 1] (it repeats 1)"),
    ([np.array([0, 4])], "batches[0]", "indices in [0, 4) (m = number of training inputs), got array([0, 4]) (4 is"),
    ([np.array([True])], "batches[0]", "integer indices"),
    ([np.array([0.0])], "batches[0]", "integer indices"), ([np.array([0], dtype=object)], "batches[0]", "integer"),
    ([np.array([], dtype=int)], "batches[0]", "non-empty"), ([np.array(1)], "batches[0]", "1-d"),
    ([np.ma.masked_array([0, 1], mask=[0, 1])], "batches[0]", "integer indices"), (["01"], "batches[0]", "got '01'"),
    ([{0: 1}], "batches[0]", "got {0: 1}"), ([{0, 1}], "batches[0]", "got {0, 1}"), ([5], "batches[0]", "got 5"),
    ({0: [0]}, "batches", "one per step"), ("0", "batches", "one per step"), ({(0,)}, "batches", "one per step"),
    (np.array(0), "batches", "one per step"), (5, "batches", "one per step"),
])
def test_check_batches_refuses_hostile_batches(batches, name, fragment):
    msg = refused(name, check_batches, batches, 4, 1)
    assert fragment in msg, msg


def test_check_data_refuses_what_numpy_would_coerce():
    """Masked entries, and bools among the numbers of nested lists, are not data."""
    import zlimit

    model = zlimit.MLP(depth=1)
    X = np.ma.masked_array([[1.0, 2.0]], mask=[[0, 1]])
    assert "masked array" in refused("X", check_data, model, X, [1.0])
    assert "a bool among its entries" in refused("X", check_data, model, [[1.0, True]], [1.0])
    assert "a bool among its entries" in refused("y", check_data, model, [[1.0], [2.0]], (1.0, np.True_))
    assert "a bool among its entries" in refused("X_eval", check_data, model, [[1.0, 2.0]], [1.0], [[0.5, False]])
    X, y, X_eval = check_data(model, [[1, 2.5]], (np.float32(1.5),), [np.array([1.0, 2.0])])
    assert X.tolist() == [[1.0, 2.5]] and y.tolist() == [1.5] and X_eval.tolist() == [[1.0, 2.0]]


def test_logistic_labels_message_names_y():
    import zlimit

    msg = refused("y", check_data, zlimit.MLP(depth=1, loss="logistic"), [[1.0], [2.0]], [1.0, 0.0])
    assert msg == "y must hold labels in {-1, +1} for loss 'logistic', got values [0. 1.]"


@pytest.mark.parametrize("value", [np.dtype(">f8"), ">f4", np.dtype("float64").newbyteorder()])
def test_check_dtype_refuses_a_foreign_byte_order(value):
    """dtype('>f8').name is 'float64', but the numba kernels take native arrays only."""
    refused("dtype", check_dtype, value)


# ---------------------------------------------------------------------- consumers
@pytest.mark.parametrize("kw, fragment", [
    (dict(depth=2.0), "depth must be an integer in [1, 10000]"), (dict(depth=np.True_), "depth must be an integer"),
    (dict(lr=True), "lr must be a positive finite number"), (dict(lr="0.1"), "lr must be a positive finite number"),
    (dict(init_std=[1.0, True, 1.0]), "init_std[1] must be a finite number >= 0"),
    (dict(lr_mult="2"), "lr_mult must be a finite number >= 0"),
    (dict(reduction=["mean"]), "reduction must be one of ('mean', 'sum')"),
    (dict(activation=["tanh"]), "activation must be one of"), (dict(loss=np.array(["mse"])), "loss must be one of"),
])
def test_mlp_refuses_through_validate(kw, fragment):
    import zlimit

    with pytest.raises(ValueError) as info:
        zlimit.MLP(**{"depth": 2, **kw})
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("kw, message", [
    (dict(depth=10_001), "depth must be an integer in [1, 10000] (hidden layers), got 10001 (out of range)"),
    (dict(depth=2**64), "depth must be an integer in [1, 10000] (hidden layers), got 18446744073709551616 "
                        "(out of range)"),
    (dict(init_std=[1.0, [1.0, 2.0], 1.0]), "init_std[1] must be a finite number >= 0, got [1.0, 2.0] (not a number)"),
    (dict(init_std=np.ones((1, 3))), "init_std must be a finite number >= 0 or a sequence of depth+1 = 3 of them "
                                     "(one per weight matrix W^1..W^3), got an array of shape (1, 3)"),
    (dict(lr_mult={1.0, 2.0, 3.0}), "lr_mult must be a finite number >= 0 or a sequence of depth+1 = 3 of them "
                                    "(one per weight matrix W^1..W^3), got {1.0, 2.0, 3.0} (not a number)"),
    (dict(lr_mult=[1.0] * 2), "lr_mult must be a finite number >= 0 or a sequence of depth+1 = 3 of them "
                              "(one per weight matrix W^1..W^3), got 2 entries"),
    (dict(lr=1e300, lr_mult=[1.0, 1e10, 1.0]), "lr * lr_mult[1] must be a finite positive learning rate (or 0 "
                                               "where lr_mult is 0), got 1e+300 * 10000000000.0 = inf; scale lr or "
                                               "lr_mult"),
    (dict(lr=5e-324, lr_mult=0.5), "lr * lr_mult[0] must be a finite positive learning rate (or 0 where lr_mult "
                                   "is 0), got 5e-324 * 0.5 = 0.0; scale lr or lr_mult"),
])
def test_mlp_refuses_exactly(kw, message):
    import zlimit

    with pytest.raises(ValueError) as info:
        zlimit.MLP(**{"depth": 2, **kw})
    assert str(info.value) == message


@pytest.mark.parametrize("value", [{0: 1.0, 1: 1.0, 2: 1.0}, (v for v in (1.0, 1.0, 1.0)), "1.0", b"1", None])
def test_mlp_per_layer_values_name_sequences_when_not_numbers(value):
    import zlimit

    for name in ("init_std", "lr_mult"):
        with pytest.raises(ValueError, match=rf"^{name} must be a finite number >= 0 or a sequence of depth\+1 = 3"):
            zlimit.MLP(depth=2, **{name: value})


def test_mlp_init_std_has_a_finite_variance():
    """σ = 1.34e154 squares to inf: the NTK limit crashed with OverflowError (fuzz)."""
    import zlimit
    from zlimit._model import MAX_INIT_STD

    model = zlimit.MLP(depth=1, init_std=MAX_INIT_STD)
    assert math.isfinite(model.sigma[0] ** 2)
    too_big = np.nextafter(MAX_INIT_STD, math.inf)
    for value, name in ((too_big, "init_std"), ([1.0, too_big], "init_std[1]"), (1e200, "init_std")):
        with pytest.raises(ValueError) as info:
            zlimit.MLP(depth=1, init_std=value)
        assert str(info.value) == (f"{name} must be at most 1.3407807929942596e+154 (its square σ² must be a finite "
                                   f"float), got {float(np.max(value))!r} (out of range)")


def test_mlp_describes_what_it_was_given():
    """describe() is what is saved and reloaded: lr_mult used to come back as η/lr,
    3.0000000000000004 for lr = 0.1 and lr_mult = 3."""
    import zlimit

    model = zlimit.MLP(depth=2, lr=0.1, lr_mult=[3.0, 0.0, 7.0], init_std=np.array([0.5, 1.0, 2.0]))
    d = model.describe()
    assert d["lr_mult"] == [3.0, 0.0, 7.0] and d["init_std"] == [0.5, 1.0, 2.0] and d["lr"] == 0.1
    assert zlimit.MLP(**d) == model
    assert model.eta == (0.1 * 3.0, 0.0, 0.1 * 7.0)
    assert zlimit.MLP(depth=10_000).depth == 10_000


def test_batch_schedule_refuses_seeds_beyond_64_bits():
    import zlimit

    for seed in (2**64, 2**70, -1):
        assert "seed must be an integer in [0, 2**64)" in refused("seed", zlimit.batch_schedule, 4, 2, 3, seed=seed)
    assert len(zlimit.batch_schedule(4, 2, 3, seed=2**64 - 1)) == 3


def test_mlp_accepts_numpy_scalars():
    import zlimit

    m = zlimit.MLP(depth=np.int64(2), lr=np.float32(0.5), init_std=np.array(1.5), reduction=np.str_("sum"))
    assert (m.depth, m.lr, m.sigma, m.reduction) == (2, 0.5, (1.5,) * 3, "sum")
    assert type(m.depth) is int and type(m.reduction) is str


def test_simulate_and_train_finite_refuse_record_steps_2_5():
    """The acceptance test of the issue, end to end: both entry points refuse, neither rounds."""
    import zlimit

    model = zlimit.MLP(depth=1, activation="tanh", lr=0.1)
    X, y = np.eye(2) * math.sqrt(2), np.array([1.0, -1.0])
    with pytest.raises(ValueError, match="record_steps"):
        zlimit.simulate(model, X, y, steps=3, particles=64, groups=2, record_steps=(2.5,), progress=False)
    with pytest.raises(ValueError, match="record_steps"):
        zlimit.train_finite(model, X, y, width=8, steps=3, record_steps=(2.5,))


# ---------------------------------------------------------------------- available_memory
def test_available_memory_is_a_positive_int():
    got = _memory.available_memory()
    assert type(got) is int and got > 0


def _fake_psutil(available: int) -> types.ModuleType:
    mod = types.ModuleType("psutil")
    mod.virtual_memory = lambda: types.SimpleNamespace(available=available, total=2 * available)
    return mod


def _no_caps(monkeypatch):
    monkeypatch.setattr(_memory, "_cgroup_headroom", lambda *a: None)
    monkeypatch.setattr(_memory, "_address_space_headroom", lambda: None)


def test_available_memory_prefers_psutil(monkeypatch):
    _no_caps(monkeypatch)
    monkeypatch.setitem(sys.modules, "psutil", _fake_psutil(123 * 2 ** 20))
    assert _memory.available_memory() == 123 * 2 ** 20


def test_available_memory_without_psutil_reads_meminfo(monkeypatch, tmp_path):
    _no_caps(monkeypatch)
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil raises ImportError
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    4000000 kB\n")
    monkeypatch.setattr(_memory._from_meminfo, "__defaults__", (str(meminfo),))
    assert _memory.available_memory() == 4000000 * 1024


def test_available_memory_falls_back_to_sysconf(monkeypatch, tmp_path):
    _no_caps(monkeypatch)
    monkeypatch.setitem(sys.modules, "psutil", None)
    monkeypatch.setattr(_memory._from_meminfo, "__defaults__", (str(tmp_path / "missing"),))
    pages = {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 5000}
    monkeypatch.setattr(_memory.os, "sysconf", lambda name: pages[name])
    assert _memory.available_memory() == 1000 * 4096


def test_available_memory_is_capped_by_the_cgroup(monkeypatch, tmp_path):
    monkeypatch.setattr(_memory, "_address_space_headroom", lambda: None)
    monkeypatch.setitem(sys.modules, "psutil", _fake_psutil(8 * 2 ** 30))
    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text(f"{2 * 2 ** 30}\n")
    usage.write_text(f"{2 ** 30}\n")
    monkeypatch.setattr(_memory._cgroup_headroom, "__defaults__", (((str(limit), str(usage)),),))
    assert _memory.available_memory() == 2 ** 30
    limit.write_text("max\n")  # cgroup v2 without a limit
    assert _memory.available_memory() == 8 * 2 ** 30
    limit.write_text(f"{2 ** 62}\n")  # cgroup v1 "unlimited"
    assert _memory.available_memory() == 8 * 2 ** 30


def test_available_memory_without_any_source_is_zero(monkeypatch, tmp_path):
    _no_caps(monkeypatch)
    monkeypatch.setitem(sys.modules, "psutil", None)
    monkeypatch.setattr(_memory._from_meminfo, "__defaults__", (str(tmp_path / "missing"),))

    def no_sysconf(name):
        raise ValueError(name)

    monkeypatch.setattr(_memory.os, "sysconf", no_sysconf)
    assert _memory.available_memory() == 0


# ------------------------------------------------------------------ the assumptions on the inputs (DataWarning)
def _directions(seed: int, m: int, d: int) -> np.ndarray:
    """m rows with ‖ξ‖² = d and pairwise |cos| < 1 − 1e-6, far from parallel (Gaussian, redrawn until so)."""
    rng = np.random.default_rng(seed)
    while True:
        X = rng.standard_normal((m, d))
        X *= np.sqrt(d) / np.sqrt((X ** 2).sum(axis=1, keepdims=True))
        cos = X @ X.T / d
        if np.max(np.abs(np.triu(cos, 1)), initial=0.0) < 1 - 1e-6:
            return X


def _data_warnings(X, X_eval=None) -> list[str]:
    """The DataWarning messages of check_data (any other warning, a RuntimeWarning included, fails)."""
    import warnings

    import zlimit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_data(zlimit.MLP(depth=1), X, np.zeros(len(X)), X_eval)
    assert all(w.category is DataWarning for w in caught), [(w.category, str(w.message)) for w in caught]
    assert all("\n" not in str(w.message) for w in caught)
    return [str(w.message) for w in caught]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), m=st.integers(1, 5), m_eval=st.integers(0, 3), d=st.integers(2, 9),
       scales=st.lists(st.floats(0.16, 6.0), min_size=8, max_size=8))
def test_inputs_near_the_unit_scale_do_not_warn(seed, m, m_eval, d, scales):
    """‖ξ‖²/d = c² with c² in [0.16, 6], inside [0.1, 10]: no warning."""
    A = _directions(seed, m + m_eval, d) * np.sqrt(np.array(scales[:m + m_eval]))[:, None]
    assert _data_warnings(A[:m], A[m:] if m_eval else None) == []


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), m=st.integers(1, 4), m_eval=st.integers(0, 3), d=st.integers(2, 9),
       where=st.integers(0, 6), c2=st.one_of(st.floats(1e-300, 0.09), st.floats(11.0, 1e300)))
def test_an_input_far_from_the_unit_scale_warns_and_names_its_row(seed, m, m_eval, d, where, c2):
    """One row scaled to ‖ξ‖²/d = c² outside [0.1, 10] (down to 1e-300, up to 1e300:
    no overflow warning): the warning names that row and the normaliser."""
    A = _directions(seed, m + m_eval, d)
    i = where % (m + m_eval)
    A[i] *= math.sqrt(c2)
    (msg,) = _data_warnings(A[:m], A[m:] if m_eval else None)
    row = f"X[{i}]" if i < m else f"X_eval[{i - m}]"
    assert msg.startswith(f"{row} has ‖ξ‖²/d = {c2:.3g}, far from 1 (outside [0.1, 10])"), msg
    assert "zlimit.datasets.normalise(X)" in msg


def test_the_scale_warning_counts_the_other_rows_and_survives_overflow():
    X = np.array([[1e300, 1e300], [1.0, -0.5], [0.0, 0.0]])
    (msg,) = _data_warnings(X)
    assert msg.startswith("X[0] (and 1 more) has ‖ξ‖²/d = inf, far from 1"), msg  # the zero row is the other one
    # rows whose ‖ξ‖² over- or underflows still have directions: X[1] = -2 X[0]
    for c in (1e300, 1e-200):
        scale, parallel = _data_warnings(np.array([[c, 0.5 * c], [-2 * c, -c]]))
        assert parallel.startswith("inputs X[0] and X[1] are antiparallel (cos = -1)"), parallel


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), m=st.integers(2, 5), m_eval=st.integers(0, 2), d=st.integers(2, 6),
       pair=st.tuples(st.integers(0, 6), st.integers(0, 6)), k=st.sampled_from([1.0, 2.0, -1.0, -0.5]))
def test_parallel_inputs_warn_and_name_the_pair(seed, m, m_eval, d, pair, k):
    """Row j set to k · row i (k > 0 parallel, k < 0 antiparallel), training or evaluation
    inputs: the warning names both rows. At cos = 1 − 1e-7 the pair is not parallel."""
    M = m + m_eval
    A = _directions(seed, M, d)
    i, j = pair[0] % M, pair[1] % M
    i, j = sorted((i, j if j != i else (i + 1) % M))
    name = lambda r: f"X[{r}]" if r < m else f"X_eval[{r - m}]"  # noqa: E731
    u = A[i] / math.sqrt(d)
    w = np.roll(u, 1) - (np.roll(u, 1) @ u) * u  # a direction orthogonal to u
    theta = math.acos(1 - 1e-7)
    A[j] = math.sqrt(d) * (math.cos(theta) * u + math.sin(theta) * w / np.linalg.norm(w))
    if np.linalg.norm(w) > 1e-3 and np.max(np.abs(np.triu(A @ A.T / d, 1))) < 1 - 1e-8:  # only that pair is close
        assert _data_warnings(A[:m], A[m:] if m_eval else None) == []
    A[j] = k * A[i]
    (msg,) = _data_warnings(A[:m], A[m:] if m_eval else None)
    how = "parallel" if k > 0 else "antiparallel"
    assert msg.startswith(f"inputs {name(i)} and {name(j)} are {how} (cos = {1 if k > 0 else -1}); Assumption 4.1"), msg


def test_data_warnings_point_at_the_callers_line():
    """Raised deep inside simulate/train_finite, attributed to the user's call."""
    import zlimit
    X = np.array([[10.0, 0.0], [0.0, 1.0]])
    with pytest.warns(DataWarning, match=r"^X\[0\] has ‖ξ‖²/d = 50, far from 1") as w:
        zlimit.train_finite(zlimit.MLP(depth=1), X, np.array([1.0, -1.0]), width=4, steps=1)
    assert [x.filename for x in w if x.category is DataWarning] == [__file__]
