"""Fuzzing the public API: every argument of every entry point from a hostile strategy.

Each call of ``zlimit.MLP``, ``zlimit.simulate`` (methods "mc" and "exact",
parametrization "ntk"), ``zlimit.train_finite``, ``zlimit.estimate_memory`` and
``zlimit.batch_schedule`` follows a plan drawn first: all arguments valid (a third of
the calls), one or two named arguments bad (wrong type: str, bytes, bool, float,
complex, None, list, dict, set, NumPy scalars, 0-d and n-d arrays, arrays of odd
dtypes, masked and object arrays; out of range: negatives, 2**64, NaN, ±inf; empty,
ragged or mismatched data; targets y of the wrong shape, class labels out of range or
not integers), or one huge but valid value (inputs of 1e200, a learning rate of 1e5,
an init or bias std of 1e100, 2**64 steps, 2**70 particles). Valid values vary too:
NumPy scalars, 0-d arrays, lists and tuples, float32 and integer arrays, arguments
left out. The MLP takes the extensions of maths §6 (``outputs``, ``bias_std``,
``bias_lr_mult``, ``momentum``, ``weight_decay``), and the models given to simulate,
train_finite and estimate_memory have them in some calls (k <= 4 outputs with softmax
cross-entropy or "mse", biases, momentum, weight decay), with targets of the matching
shape: class labels in [0, k), or (m, k) arrays. Sizes are tiny (at most 2000
particles, 3 steps, width 16, 4 outputs). The oracle knows which arguments it drew
bad, and which valid ones break a rule between arguments: loss and outputs, lr·lr_mult,
lr·bias_lr_mult, bias_lr_mult without bias_std, lr·weight_decay >= 1 (both arguments
are bad then), and what an entry refuses of a valid MLP (a random output bias in the
limits: ``bias_std``; weight decay in the NTK limit: ``weight_decay``). It classifies
the outcome:

* ``ok``: no argument was bad; a result came back whose recorded arrays are finite
  wherever they are defined, of the documented shapes (a class axis with k > 1
  outputs), whose settings are those passed (nothing coerced: the seed, particles,
  dtype, basis_tol, ... in ``Run.meta``; the fields of an MLP and its ``describe()``);
* ``refused``: some argument was bad, and a ``ValueError`` with a one-line message
  naming one of the bad arguments came back;
* ``diverged``: a ``DivergenceError`` from a call with a huge value;
* ``resource``: a ``ResourceError`` (one line) from a call with a huge size;
* anything else is a failure: another exception, a message that names no bad argument,
  a bad argument accepted, a valid call refused, a non-finite number returned.

``COUNTS`` tallies the outcomes; with ``ZLIMIT_FUZZ_REPORT=path`` they are written as
JSON under the key "api" of that file (other keys are kept), with the outcomes of the
calls with each extension under "extensions". NumPy ``RuntimeWarning`` that leak to
the user (e.g. overflow in a diverging run) are failures too, counted in
``runtime_warning_leaks``: every non-finite value is reported by zlimit's own checks.
"""
from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zlimit
from mpi4py import MPI  # the test extra brings mpi4py: simulate(comm=...) is fuzzed too

COUNTS: Counter = Counter()
#: per entry, the outcomes of calls whose model has each extension of maths §6 ("entry:feature:outcome")
EXTENSION_COUNTS: Counter = Counter()

#: examples per entry point, sized for about a minute in all on one shared core
EXAMPLES = {"MLP": 500, "batch_schedule": 200, "estimate_memory": 300, "mc": 250, "ntk": 150, "exact": 250,
            "finite": 200}
FUZZ = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module", autouse=True)
def _report():
    """Write ``COUNTS`` under "api" of the JSON file named by ZLIMIT_FUZZ_REPORT."""
    yield
    path = os.environ.get("ZLIMIT_FUZZ_REPORT")
    if not path:
        return
    report = {}
    if os.path.exists(path):
        with open(path) as fh:
            report = json.load(fh)
    outcomes = ("ok", "refused", "diverged", "resource", "failure")
    report["api"] = {
        "inputs": sum(v for k, v in COUNTS.items() if k.split(":")[1] in outcomes),
        **{o: sum(v for k, v in COUNTS.items() if k.endswith(":" + o)) for o in outcomes},
        "runtime_warning_leaks": COUNTS["all:runtime_warning_leaks"],
        "by_entry": {k: v for k, v in sorted(COUNTS.items()) if not k.startswith("all:")},
        "extensions": dict(sorted(EXTENSION_COUNTS.items())),
    }
    with open(path, "w") as fh:
        json.dump(report, fh, indent=1, sort_keys=True)


# ------------------------------------------------------------------ drawing arguments
VALID, BAD, HUGE = "valid", "bad", "huge"


@dataclass
class Call:
    """The arguments of one call, the plan they were drawn to (argument -> BAD or
    HUGE; the others VALID), and which of them were bad or huge once drawn (a valid
    particles and groups can make a bad pair)."""

    plan: dict
    kwargs: dict = field(default_factory=dict)
    bad: set = field(default_factory=set)
    huge: set = field(default_factory=set)


@st.composite
def plans(draw, names, huge_names=()) -> Call:
    """A call with nothing bad (a third), one or two bad arguments, or one huge value.

    Choosing the arguments to spoil by name, rather than tossing a coin for each, gives
    every argument its share of bad values however many arguments there are.
    """
    mode = draw(st.sampled_from(["valid", "valid", "bad", "bad", "two bad"] + ["huge"] * bool(huge_names)))
    if mode == "valid":
        return Call({})
    if mode == "huge":
        return Call({draw(st.sampled_from(huge_names)): HUGE})
    spoilt = draw(st.lists(st.sampled_from(names), min_size=1 + (mode == "two bad"), max_size=1 + (mode == "two bad"),
                           unique=True))
    return Call({name: BAD for name in spoilt})


#: a valid draw that leaves the argument out of the call (its default applies)
OMIT = object()


def put(draw, call: Call, name: str, valid, bad, huge=None) -> object:
    """Draw argument ``name`` from the strategy its plan names, and record its kind
    (``OMIT``, a valid draw, leaves the argument out)."""
    kind = call.plan.get(name, VALID)
    if kind == HUGE and huge is None:
        kind = VALID
    value = draw({VALID: valid, BAD: bad, HUGE: huge}[kind], label=name)
    if value is OMIT:  # left out: the call takes the default
        return value
    call.kwargs[name] = value
    if kind == BAD:
        call.bad.add(name)
    elif kind == HUGE:
        call.huge.add(name)
    return value


class Opaque:
    """An object with a long, multi-line repr."""

    def __repr__(self):
        return "Opaque(\n" + "z" * 300 + "\n)"


#: values that are never an integer, a real number, a bool, a name or an array of numbers
JUNK = ["3", b"3", "", [1], (1,), {"a": 1}, {1}, 1 + 2j, np.complex64(1), Opaque(), np.array([1, 2]),
        np.array("x"), np.str_("1"), math.nan, math.inf, -math.inf]
BOOLS = [True, False, np.True_, np.False_]


def ints(lo: int, hi: int) -> st.SearchStrategy:
    """Valid integers in [lo, hi], as Python ints, NumPy scalars or 0-d arrays."""
    return st.integers(lo, hi).flatmap(lambda v: st.sampled_from(
        [v, np.int64(v), np.int32(v), np.array(v)] + ([np.uint16(v)] if 0 <= v < 2**16 else [])))


def not_ints(lo: int, none_ok: bool = False) -> st.SearchStrategy:
    """Values an integer argument >= lo refuses (None too unless it means the default)."""
    return st.one_of(st.sampled_from(JUNK + BOOLS + [2.0, 2.5, np.float64(3.0), np.float32(1.0)]
                                     + ([] if none_ok else [None])),
                     st.integers(max_value=lo - 1), st.sampled_from([lo - 1, -2**64, np.int64(lo - 1)]))


SEEDS = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 2**64 - 1, np.uint64(2**64 - 1), np.int64(7)]))


def not_seeds(none_ok: bool = False) -> st.SearchStrategy:
    return st.one_of(not_ints(0, none_ok), st.sampled_from([2**64, 2**64 + 5, 2**70]), st.integers(min_value=2**64))


def not_bools(none_ok: bool = False) -> st.SearchStrategy:
    return st.sampled_from([0, 1, 1.0, "True", "false", np.int64(1), [True], np.array([True])] + JUNK[:6]
                           + ([] if none_ok else [None]))


def not_choices(choices, none_ok: bool = False) -> st.SearchStrategy:
    return st.one_of(st.sampled_from([c.upper() for c in choices] + [c.encode() for c in choices]
                                     + [[c] for c in choices] + [" " + choices[0], 1, 0.5, True, np.array(choices[0])]
                                     + JUNK[:6] + ([] if none_ok else [None])),
                     st.text(max_size=6).filter(lambda s: s not in choices))


DTYPES_OK = st.sampled_from(["float64", "float32", np.float32, np.float64, np.dtype("float32"), float, "f8"])


def not_dtypes(none_ok: bool = False) -> st.SearchStrategy:
    return st.sampled_from(["float16", np.float16, "int64", int, bool, complex, ">f8", np.dtype(">f4"), "double!",
                            "", 64, 2.5, True] + JUNK[:6] + ([] if none_ok else [None]))


def positive_floats(lo: float, hi: float) -> st.SearchStrategy:
    """Floats in [lo, hi], as Python floats, NumPy scalars (float32 within its range) or 0-d arrays."""
    return st.floats(lo, hi).flatmap(lambda v: st.sampled_from(
        [v, np.float64(v), np.array(v)] + ([np.float32(v)] if v < 1e38 else [])))


NOT_FLOATS = st.sampled_from(JUNK[:-3] + BOOLS + [None, math.nan, math.inf, -math.inf, np.float64("nan"), 10**400])


def names_any(message: str, names) -> bool:
    """Whether ``message`` names one of ``names`` as a word (``X`` is not in ``X_eval``)."""
    return any(re.search(rf"(?<![\w.]){re.escape(n)}(?![\w])", message) for n in names)


def one_line(message: str) -> bool:
    return "\n" not in message and 0 < len(message) < 400


# ------------------------------------------------------------------ the oracle
def outcome(entry: str, fn, call: Call, check) -> str:
    """Call ``fn(**call.kwargs)`` and classify what happens; assert it is no failure."""
    def failed(why: str):
        COUNTS[f"{entry}:failure"] += 1
        pytest.fail(f"{entry}: {why}\n  bad={sorted(call.bad)} huge={sorted(call.huge)}\n  kwargs={call.kwargs!r}",
                    pytrace=False)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fn(**call.kwargs)
        except ValueError as exc:
            msg = str(exc)
            if not call.bad:
                failed(f"a valid call was refused: {type(exc).__name__}: {msg}")
            if not one_line(msg) or not names_any(msg, call.bad):
                failed(f"the message does not name a bad argument on one line: {msg!r}")
            category = "refused"
        except zlimit.DivergenceError as exc:
            if not call.huge:
                failed(f"DivergenceError without a huge argument: {exc}")
            if call.bad:
                failed(f"DivergenceError before the bad arguments were refused: {exc}")
            category = "diverged"
        except zlimit.ResourceError as exc:
            if not call.huge or not one_line(str(exc)):
                failed(f"ResourceError without a huge argument, or not one line: {exc}")
            category = "resource"
        except Exception as exc:  # noqa: BLE001 - any other exception is the failure to report
            failed(f"{type(exc).__name__}: {exc}")
        else:
            if call.bad:
                failed(f"bad arguments {sorted(call.bad)} were accepted")
            try:
                check(result)
            except AssertionError as exc:
                failed(f"the result is wrong: {exc}")
            category = "ok"
    leaks = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught if issubclass(w.category, RuntimeWarning)]
    if leaks:  # every non-finite value is reported by the checks; NumPy's own warnings are noise
        COUNTS["all:runtime_warning_leaks"] += 1
        failed(f"NumPy warnings leaked to the user: {leaks[:3]}")
    COUNTS[f"{entry}:{category}"] += 1
    return category


# ------------------------------------------------------------------ MLP
ACTIVATIONS = ("tanh", "sigmoid", "silu", "gelu", "softplus", "relu", "linear")


@st.composite
def per_layer(draw, depth: int, lo: float, hi: float):
    """init_std / lr_mult: a number >= 0 or a list, tuple or 1-d array of depth+1 of them."""
    form = draw(st.sampled_from(["scalar", "list", "tuple", "array"]))
    if form == "scalar":
        return draw(st.one_of(positive_floats(lo, hi), st.just(0.0), st.just(1)))
    values = draw(st.lists(st.one_of(st.floats(lo, hi), st.just(0.0)), min_size=depth + 1, max_size=depth + 1))
    return {"list": values, "tuple": tuple(values), "array": np.array(values)}[form]


@st.composite
def not_per_layer(draw, depth: int):
    form = draw(st.integers(0, 3))
    if form == 0:
        return draw(NOT_FLOATS.filter(lambda v: v is not None) | st.sampled_from([-1.0, -1e-300, {0: 1.0}]))
    if form == 1:  # the wrong length
        n = draw(st.integers(0, depth + 3).filter(lambda n: n != depth + 1))
        return [1.0] * n
    if form == 2:  # one bad entry
        values = [1.0] * (depth + 1)
        values[draw(st.integers(0, depth))] = draw(st.sampled_from([-1.0, math.nan, math.inf, True, "1", None, [1.0],
                                                                    1j]))
        return values
    return draw(st.sampled_from([np.ones((depth + 1, 1)), np.ones((1, depth + 1)), (v for v in [1.0]),
                                 np.array([1.0] * (depth + 1), dtype=object)[:0], {1.0}]))


MLP_ARGS = ("depth", "activation", "loss", "reduction", "lr", "init_std", "lr_mult", "outputs", "bias_std",
            "bias_lr_mult", "momentum", "weight_decay")
MLP_HUGE = ("lr", "init_std", "bias_std")
LOSSES = ("mse", "logistic", "xent")
def _flat(value) -> list[float]:
    """A number or a sequence of numbers as a list of floats."""
    return [float(v) for v in value] if np.ndim(value) else [float(value)]


def _rates_bad(lr: float, mult) -> bool:
    """Whether some lr * mult[l] overflows, or underflows to 0 where mult[l] > 0."""
    return any(not math.isfinite(lr * c) or (c > 0 and lr * c == 0) for c in _flat(mult))


@st.composite
def outputs_for(draw, loss, rules: bool):
    """k: any in [1, 4], or (``rules``) one the loss takes; OMIT (k = 1) sometimes."""
    if rules and loss == "xent":
        k = draw(st.integers(2, 4))
    elif rules and loss == "logistic":
        k = 1
    else:
        k = draw(st.sampled_from([1, 1, 1, 2, 3, 4]))
    return draw(ints(k, k) | (st.just(OMIT) if k == 1 else st.nothing()))


@st.composite
def bias_stds(draw, depth: int, hi: float):
    """None or left out (no biases), one σ_b in [0, hi] (hidden biases; the output bias
    starts at 0), or depth+1 of them, the last (the output bias's init std) 0 or not."""
    form = draw(st.sampled_from(["omit", "omit", "omit", "none", "scalar", "scalar", "hidden", "output"]))
    if form == "omit":
        return OMIT
    if form == "none":
        return None
    if form == "scalar":
        return draw(st.one_of(positive_floats(0.0, hi), st.sampled_from([0.0, 1, np.int64(1)])))
    values = draw(st.lists(st.one_of(st.floats(0.0, hi), st.just(0.0)), min_size=depth, max_size=depth))
    values.append(draw(st.floats(1e-3, hi)) if form == "output" else 0.0)
    return draw(st.sampled_from([values, tuple(values), np.array(values)]))


@st.composite
def mlp_calls(draw, activations=ACTIVATIONS, plan: dict | None = None, coherent: bool = False) -> Call:
    """The keyword arguments of ``zlimit.MLP`` (to ``plan``, or a plan drawn here).

    Each argument is drawn valid or bad on its own; the rules between arguments (loss and
    outputs, lr·lr_mult, lr·bias_lr_mult, bias_lr_mult without bias_std, lr·weight_decay)
    then mark both arguments of a broken rule bad. Valid draws keep those rules in three calls
    of four, and always with ``coherent`` (the models of simulate and train_finite), whose
    biases and momentum also stay mild (σ_b, c_b <= 1, β <= 0.9) so that no valid model
    diverges within 3 steps."""
    call = Call(plan) if plan is not None else draw(plans(MLP_ARGS, MLP_HUGE))
    rules = coherent or draw(st.sampled_from([True, True, True, False]))  # valid draws that keep the rules
    depth = draw(st.integers(1, 3))
    put(draw, call, "depth", ints(depth, depth), st.one_of(not_ints(1), st.sampled_from([10_001, 2**64, 2**40])))
    put(draw, call, "activation", st.sampled_from(activations).flatmap(lambda a: st.sampled_from([a, np.str_(a)])),
        not_choices(ACTIVATIONS))
    loss = put(draw, call, "loss", st.sampled_from(LOSSES), not_choices(LOSSES))
    put(draw, call, "reduction", st.sampled_from(["mean", "sum"]), not_choices(("mean", "sum")))
    lr = put(draw, call, "lr", positive_floats(1e-3, 1.0) | st.just(1),
             st.one_of(NOT_FLOATS, st.sampled_from([0.0, -0.1, -1])), positive_floats(1e4, 1e6))
    put(draw, call, "init_std", per_layer(depth, 0.1, 2.0),
        not_per_layer(depth) | st.sampled_from([1e200, 1.3407807929942597e154, [1.0] * depth + [1e300]]),
        per_layer(depth, 1e100, 1e150))
    put(draw, call, "lr_mult", per_layer(depth, 0.0, 2.0), not_per_layer(depth))
    # maths §6: k outputs, biases, momentum, decoupled weight decay
    too_many = st.sampled_from([0, 100_001, 2**64, 2**31])
    put(draw, call, "outputs", outputs_for(loss, rules), st.one_of(not_ints(1), too_many))
    bias_std = put(draw, call, "bias_std", bias_stds(depth, 1.0 if coherent else 2.0),
                   not_per_layer(depth) | st.sampled_from([1e200, [1.0] * depth + [1e300], -0.5, "none"]),
                   positive_floats(1e100, 1e150))
    no_bias = bias_std is OMIT or bias_std is None
    ones = st.sampled_from([OMIT, 1.0, 1, np.float64(1.0), [1.0] * (depth + 1), np.ones(depth + 1)])
    put(draw, call, "bias_lr_mult",
        ones if rules and no_bias else st.one_of(ones, per_layer(depth, 0.0, 2 - coherent)),
        not_per_layer(depth))
    edge = [] if coherent else [np.nextafter(1.0, 0.0)]
    put(draw, call, "momentum", st.one_of(st.just(OMIT), positive_floats(0.0, 0.9), st.sampled_from([0, 0.9] + edge)),
        st.one_of(NOT_FLOATS, st.sampled_from([1.0, 1, 1.5, -0.1, -1e-300, np.float64(1.0)])))
    # λ relative to lr: lr·λ = u, below 1 by the rules, on either side of 1 otherwise
    u = draw(st.one_of(st.floats(0.0, 0.9), st.sampled_from([0.0, 0.5]) if rules else
                       st.one_of(st.floats(0.5, 1.5), st.just(1.0))))
    lr_value = float(lr) if "lr" not in call.bad else 1.0
    put(draw, call, "weight_decay",
        st.one_of(st.just(OMIT), st.sampled_from([0, 0.0]), st.just(u / lr_value).flatmap(
            lambda v: st.sampled_from([v, np.float64(v), np.array(v)]))),
        st.one_of(NOT_FLOATS, st.sampled_from([-0.1, -1, -1e-300])))
    _cross_rules(call)
    return call


def _cross_rules(call: Call) -> None:
    """Mark bad both arguments of each rule between valid arguments that the values break."""
    kw, bad = call.kwargs, set(call.bad)

    def valid(*names):
        return not bad & set(names)

    lr = float(kw["lr"]) if valid("lr") else None
    if lr is not None and valid("lr_mult") and _rates_bad(lr, kw["lr_mult"]):
        call.bad |= {"lr", "lr_mult"}
    if valid("loss", "outputs"):
        loss, k = str(kw["loss"]), int(kw.get("outputs", 1))
        if (loss == "xent" and k < 2) or (loss == "logistic" and k != 1):
            call.bad |= {"loss", "outputs"}
    if valid("bias_std", "bias_lr_mult"):
        if kw.get("bias_std") is None:
            if any(c != 1.0 for c in _flat(kw.get("bias_lr_mult", 1.0))):
                call.bad |= {"bias_std", "bias_lr_mult"}
        elif lr is not None and _rates_bad(lr, kw.get("bias_lr_mult", 1.0)):
            call.bad |= {"lr", "bias_lr_mult"}
    if lr is not None and valid("weight_decay") and not lr * float(kw.get("weight_decay", 0.0)) < 1:
        call.bad |= {"lr", "weight_decay"}


def check_mlp(call: Call):
    kw = call.kwargs

    def check(model):
        L = int(kw["depth"])

        def broadcast(v):
            return tuple(float(x) for x in v) if np.ndim(v) else (float(v),) * (L + 1)

        assert type(model.depth) is int and model.depth == L
        assert model.activation.name == str(kw["activation"]) and model.loss.name == str(kw["loss"])
        assert model.reduction == str(kw["reduction"]) and type(model.reduction) is str
        assert type(model.lr) is float and model.lr == float(kw["lr"])
        assert model.sigma == broadcast(kw["init_std"]) == model.init_std
        assert model.lr_mult == broadcast(kw["lr_mult"])
        assert model.eta == tuple(model.lr * c for c in model.lr_mult)
        assert all(math.isfinite(e) for e in model.eta + model.sigma)
        # maths §6
        assert type(model.outputs) is int and model.outputs == int(kw.get("outputs", 1))
        bias_std, zeros = kw.get("bias_std"), (0.0,) * (L + 1)
        assert model.bias_lr_mult == broadcast(kw.get("bias_lr_mult", 1.0))
        if bias_std is None:
            assert model.bias_std is None and not model.has_bias
            assert model.bias_sigma == zeros and model.bias_eta == zeros
        else:
            # one number sets the hidden biases, the output bias starts at 0
            sigma_b = broadcast(bias_std) if np.ndim(bias_std) else (float(bias_std),) * L + (0.0,)
            assert model.has_bias and model.bias_std == model.bias_sigma == sigma_b, (model.bias_sigma, sigma_b)
            assert model.bias_eta == tuple(model.lr * c for c in model.bias_lr_mult)
            assert all(math.isfinite(v) for v in model.bias_eta + model.bias_sigma)
        assert type(model.momentum) is float and model.momentum == float(kw.get("momentum", 0.0)) < 1
        assert type(model.weight_decay) is float and model.weight_decay == float(kw.get("weight_decay", 0.0))
        assert type(model.decay) is float and model.decay == 1.0 - model.lr * model.weight_decay
        assert 0 < model.decay <= 1
        described = model.describe()
        assert described["lr_mult"] == list(model.lr_mult) and zlimit.MLP(**described) == model
        assert described["bias_std"] == (None if bias_std is None else list(model.bias_sigma))
        assert (described["outputs"], described["momentum"], described["weight_decay"]) == (
            model.outputs, model.momentum, model.weight_decay)
        assert json.loads(json.dumps(described)) == described  # plain data, as saved in result files
    return check


@settings(max_examples=EXAMPLES["MLP"], **FUZZ)
@given(call=mlp_calls())
def test_fuzz_mlp(call):
    category = outcome("MLP", zlimit.MLP, call, check_mlp(call))
    for name in MLP_ARGS[7:]:  # the arguments of maths §6, given (valid or bad)
        if name in call.kwargs:
            EXTENSION_COUNTS[f"MLP:{name}{' (bad)' if name in call.bad else ''}:{category}"] += 1


# ------------------------------------------------------------------ batch_schedule
@st.composite
def schedule_calls(draw) -> Call:
    call = draw(plans(("m", "batch_size", "steps", "seed"), ("m", "steps")))
    m = draw(st.integers(1, 6))
    put(draw, call, "m", ints(m, m), not_ints(1), st.just(2**62))
    size = draw(st.integers(1, m))
    put(draw, call, "batch_size", ints(size, size), st.one_of(not_ints(1), st.just(m + 1)))
    put(draw, call, "steps", ints(0, 4), not_ints(0), st.sampled_from([2**64, 10**15]))
    put(draw, call, "seed", SEEDS, not_seeds())
    return call


def check_schedule(call: Call):
    kw = call.kwargs

    def check(out):
        m, size, steps = int(kw["m"]), int(kw["batch_size"]), int(kw["steps"])
        assert isinstance(out, list) and len(out) == steps
        for b in out:
            assert b.dtype == np.int64 and b.shape == (size,) and np.all(np.diff(b) > 0)
            assert b.min() >= 0 and b.max() < m
        again = zlimit.batch_schedule(m, size, steps, seed=int(kw["seed"]))
        assert all(np.array_equal(a, b) for a, b in zip(out, again))  # the seed is the seed given
    return check


@settings(max_examples=EXAMPLES["batch_schedule"], **FUZZ)
@given(call=schedule_calls())
def test_fuzz_batch_schedule(call):
    outcome("batch_schedule", zlimit.batch_schedule, call, check_schedule(call))


# ------------------------------------------------------------------ data
@st.composite
def batches_for(draw, m: int, T: int):
    """A valid schedule of T index sets in [0, m), in some container."""
    sets = [sorted(draw(st.sets(st.integers(0, m - 1), min_size=1))) for _ in range(T)]
    form = draw(st.sampled_from(["list", "tuple", "array", "uint8", "mixed"]))
    if form == "array":
        return [np.array(s, dtype=np.int64) for s in sets]
    if form == "uint8":
        return [np.array(s, dtype=np.uint8) for s in sets]
    if form == "tuple":
        return tuple(tuple(s) for s in sets)
    if form == "mixed":
        return [s[::-1] if t % 2 else np.array(s, dtype=np.int32) for t, s in enumerate(sets)]
    return sets


@st.composite
def not_batches_for(draw, m: int, T: int):
    form = draw(st.integers(0, 2))
    if form == 0 or T == 0:  # a bad container, or the wrong number of batches
        return draw(st.sampled_from(["0", b"0", 5, 2.5, True, {0: [0]}, {(0,)}, np.array(0), [[0]] * (T + 1),
                                     [[0]] * (T + 2)] + ([[[0]] * (T - 1)] if T else [])))
    good = draw(batches_for(m, T))
    good = [list(b) for b in good]
    bad = draw(st.sampled_from([[m], [-1], [0, 0], [], [0.0], [True], [0, True], [[0]], "0", {0: 1}, {0}, None, 0,
                                np.array([0.5]), np.array([m]), np.array([True]), np.array([0, 0]), np.array([[0]]),
                                np.array([0], dtype=object), np.ma.masked_array([0], mask=[1]), [2**64]]))
    good[draw(st.integers(0, T - 1))] = bad
    return good


_MATRIX = {"f64": lambda v: v, "f32": lambda v: v.astype(np.float32), "list": lambda v: v.tolist(),
           "int": lambda v: np.round(v).astype(np.int64), "tuple": lambda v: tuple(map(tuple, v.tolist())),
           "fortran": np.asfortranarray, "strided": lambda v: np.repeat(v, 2, axis=0)[::2]}


def _matrix(values: np.ndarray, form: str):
    """``values`` (m, d) as an array of another dtype or layout, or as nested sequences."""
    return _MATRIX[form](values)


MATRIX_FORMS = st.sampled_from(["f64", "f32", "list", "int", "tuple", "fortran", "strided"])


@st.composite
def not_matrix(draw, m: int, d: int, evaluation: bool = False):
    """What X (m, d) or, with ``evaluation``, X_eval (m, d) must refuse."""
    good = np.ones((m, d))
    nan = good.copy()
    nan[draw(st.integers(0, m - 1)), draw(st.integers(0, d - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    wrong_d = [np.ones((m, d + 1)), np.zeros((0, d + 1)), [], np.zeros(0)] if evaluation else [np.zeros((0, d))]
    return draw(st.sampled_from([
        nan, nan.tolist(), np.ones(d), np.ones((m, d, 1)), np.array(1.0), *wrong_d,
        good.astype(bool), good.astype(complex), good.astype(object), good.astype(str), good.astype("datetime64[s]"),
        np.ma.masked_array(good, mask=good > 0), [[1.0] * d, [1.0] * (d + 1)], [[True] + [1.0] * (d - 1)] * m,
        "abc", {"a": 1}, 3.0, [[None] * d] * m, [[1 + 1j] * d] * m, [[1.0] * d, ["1"] * d],
    ]))


@st.composite
def data_calls(draw, call: Call, model) -> tuple[int, int]:
    """X, y, X_eval into ``call``, y as ``model`` takes it (``None``: a bad model); returns (m, M)."""
    m, d = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    X = rng.standard_normal((m, d))
    form = draw(MATRIX_FORMS)
    scale = draw(st.sampled_from([1e150, 1e200, 1e300]))
    put(draw, call, "X", st.just(_matrix(X, form)), not_matrix(m, d), st.just(_matrix(X * scale, "f64")))
    loss, k = (None, 1) if model is None else (model.loss.name, model.outputs)
    if loss == "logistic":
        y = np.where(rng.standard_normal(m) > 0, 1.0, -1.0)
        bad_labels = [np.zeros(m), np.full(m, 2.0)]
        huge_y = st.just(y)  # labels are ±1: nothing huge
        y_forms = [y, y.tolist(), tuple(y.tolist()), y.astype(np.float32), y.astype(np.int64)]
    elif loss == "xent":  # class labels in [0, k), shape (m,)
        y = rng.integers(0, k, m)
        one_hot = np.eye(k)[y]
        bad_labels = [np.full(m, k), np.full(m, -1), y + 0.5, np.full(m, 2.0**70), one_hot, one_hot.tolist(),
                      y[:, None]]
        huge_y = st.just(y)  # labels: nothing huge
        y_forms = [y, y.tolist(), tuple(y.tolist()), y.astype(np.float64), y.astype(np.uint8), y.astype(np.float32)]
    elif k > 1:  # "mse" with k outputs: targets (m, k)
        y = rng.standard_normal((m, k))
        nan = y.copy()
        nan[draw(st.integers(0, m - 1)), draw(st.integers(0, k - 1))] = draw(st.sampled_from([np.nan, np.inf]))
        bad_labels = [y[:, 0], y[:, :-1], np.ones((m, k + 1)), y[..., None], np.ones((m + 1, k)), nan, nan.tolist(),
                      y.T if m != k else y[:, :, None]]
        huge_y = st.just(y * 1e300)
        y_forms = [y, y.tolist(), tuple(map(tuple, y.tolist())), y.astype(np.float32), np.asfortranarray(y)]
    else:
        y = rng.standard_normal(m)
        bad_labels = []
        huge_y = st.just(y * 1e300)
        y_forms = [y, y.tolist(), tuple(y.tolist()), y.astype(np.float32)]
    y_bad = [np.ones(m + 1), np.ones((m, 1)), np.full(m, np.nan), np.full(m, np.inf), y.astype(str), y.astype(complex),
             y > 0, y.tolist()[:-1] if m > 1 else [], [True] * m, "y", None, 1.0, np.ma.masked_array(y), *bad_labels]
    put(draw, call, "y", st.sampled_from(y_forms), st.sampled_from(y_bad), huge_y)
    m_eval = draw(st.integers(0, 2))
    X_eval = rng.standard_normal((m_eval, d))
    put(draw, call, "X_eval", st.sampled_from([None, X_eval, X_eval.tolist() if m_eval else np.zeros((0, d))]),
        not_matrix(max(m_eval, 1), d, evaluation=True),
        st.just(X_eval * 1e250 if m_eval else np.full((1, d), 1e250)))
    if "X_eval" in call.huge and m_eval == 0:
        m_eval = 1
    M = m + (0 if call.kwargs["X_eval"] is None else m_eval)
    return m, M


@st.composite
def steps_and_friends(draw, call: Call, m: int) -> int:
    """steps, then batches and record_steps for that many steps; returns T."""
    T = draw(st.integers(0, 3))
    put(draw, call, "steps", ints(T, T), not_ints(0), st.sampled_from([2**64, 10**15]))
    if "steps" in call.huge:
        call.kwargs["batches"] = None  # a schedule of 2**64 steps cannot be written down
        call.kwargs["record_steps"] = (0,)
        return T
    put(draw, call, "batches", st.one_of(st.none(), batches_for(m, T)), not_batches_for(m, T))
    put(draw, call, "record_steps",
        st.one_of(st.lists(st.integers(0, T), max_size=3).flatmap(
            lambda r: st.sampled_from([r, tuple(r), np.array(r, dtype=np.int64), set(r)])), st.integers(0, T),
            st.just(())),
        st.one_of(st.sampled_from([(T + 1,), [-1], (1.5,), (True,), ("1",), "1", None, 2.5, [None], [2**64], T + 1,
                                   (np.float64(0.0),), np.ones((2, 2), int), [[0]]])))
    return T


def _fine(a: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(a)))


def check_run(call: Call, model, m: int, M: int, T: int, meta: dict):
    """A Run with finite numbers where they are defined, and the settings passed."""
    kw = call.kwargs

    def check(run):
        assert run.model == model
        classes = () if model.outputs == 1 else (model.outputs,)  # the class axis of k > 1 outputs
        assert run.outputs_groups.shape[1:] == (T + 1, M, *classes), run.outputs_groups.shape
        assert run.error_signals_groups.shape[1:] == (T, m, *classes), run.error_signals_groups.shape
        assert run.outputs.shape == (T + 1, M, *classes) and run.loss.shape == (T + 1,)
        assert _fine(run.outputs_groups), "non-finite outputs"
        assert _fine(run.loss_groups), "non-finite loss"
        assert _fine(run.error_signals_groups), "non-finite error signals"
        batches = [np.arange(m)] * T if kw["batches"] is None else [np.asarray(b, dtype=np.int64) for b in
                                                                     kw["batches"]]
        for k, K in run.kernels.items():
            if k.startswith("dh"):
                for t, b in enumerate(batches):
                    assert _fine(K[:, t][:, b][:, :, b]), f"non-finite {k} at step {t}"
            else:
                assert _fine(K), f"non-finite kernel {k}"
        for k, C in run.cross.items():
            for r, s in enumerate(run.record_steps):
                assert _fine(C[:, r, s:, :m, :m]), f"non-finite cross kernel {k} against step {s}"
        for k, v in run.bases.items():  # orthogonality is measured at check steps only, NaN between
            assert _fine(v) or k.startswith("orthogonality"), f"non-finite {k}"
        expected = {"steps": T, "m": m, "m_eval": M - m, **meta}
        got = {k: run.meta.get(k) for k in expected}
        assert got == expected, f"meta {got} != {expected}"
        for k, v in got.items():
            assert type(v) is type(expected[k]), f"meta {k} is a {type(v).__name__}"
        record = kw["record_steps"]
        record = {record} if isinstance(record, int) else {int(s) for s in record}
        assert run.record_steps == tuple(sorted(record | {0}))
    return check


def _dtype_name(value) -> str:
    return np.dtype(value).name


# ------------------------------------------------------------------ simulate and train_finite
BAD_MODELS = st.sampled_from([None, "mlp", 3, {"depth": 2}, zlimit.MLP, [zlimit.MLP(depth=1)]])


@st.composite
def model_for(draw, call: Call, entry: str, activations=ACTIVATIONS):
    """A valid MLP (with a huge learning rate, init or bias when the plan has ``model``
    huge), or a bad model (None returned then). What the MLP accepts but the entry
    refuses is marked bad by the MLP argument to name: a random output bias in the limits
    (``bias_std``), weight decay in the NTK limit (``weight_decay``)."""
    kind = call.plan.get("model", VALID)
    inner_plan = {draw(st.sampled_from(MLP_HUGE)): HUGE} if kind == HUGE else {}
    model = zlimit.MLP(**draw(mlp_calls(activations, inner_plan, coherent=True)
                              .filter(lambda c: not c.bad)).kwargs)
    if kind == BAD:
        call.kwargs["model"] = draw(BAD_MODELS)
        call.bad.add("model")
        return None
    call.kwargs["model"] = model
    if kind == HUGE:
        call.huge.add("model")
    if entry in ("mc", "ntk", "exact") and model.bias_sigma[-1] != 0:
        call.bad.add("bias_std")
    if entry == "ntk" and model.weight_decay > 0:
        call.bad.add("weight_decay")
    return model


def tally_extensions(entry: str, call: Call, category: str) -> None:
    """Count ``category`` under each maths §6 extension the call's model has."""
    model = call.kwargs.get("model")
    if not isinstance(model, zlimit.MLP):
        return
    features = {"outputs>1": model.outputs > 1, "xent": model.loss.name == "xent", "bias": model.has_bias,
                "output_bias_random": model.bias_sigma[-1] != 0, "momentum": model.momentum > 0,
                "weight_decay": model.weight_decay > 0}
    for name, present in features.items():
        if present:
            EXTENSION_COUNTS[f"{entry}:{name}:{category}"] += 1
            if category == "refused" and call.bad == {"y"}:
                EXTENSION_COUNTS[f"{entry}:{name}:y refused"] += 1


def on_step_values(call: Call, draw):
    put(draw, call, "on_step", st.sampled_from([None, lambda g, t: None]), st.sampled_from([5, "print", [print]]))


_COMMON = ("model", "X", "y", "X_eval", "steps", "batches", "record_steps", "on_step", "progress", "parametrization",
           "method")
_MC_OPTIONS = ("particles", "groups", "seed", "dtype", "threads", "qmc", "gradient_independence", "basis_tol", "comm")
#: what is never a communicator (COMM_NULL included); COMM_WORLD in a plain process is one rank, and valid
NOT_COMMS = st.sampled_from(JUNK + BOOLS + [0, 1, "COMM_WORLD", MPI.COMM_NULL, MPI.COMM_WORLD.Get_group(), MPI,
                                            MPI.COMM_WORLD.Create_cart([1]).Get_topology()])
#: y spoilt four times as often as another argument: its bad values depend on the model's loss and outputs
Y_WEIGHT = ("y",) * 3
#: the arguments of simulate per entry (for "exact" and "ntk", an option given at all is bad)
LIMIT_ARGS = {"mc": _COMMON + _MC_OPTIONS + ("comm",) * 2, "ntk": _COMMON + _MC_OPTIONS,
              "exact": _COMMON + _MC_OPTIONS}


@st.composite
def limit_calls(draw, entry: str):
    """The arguments of ``zlimit.simulate`` for ``entry`` "mc", "ntk" or "exact", and
    what the Run must say."""
    call = draw(plans(LIMIT_ARGS[entry] + Y_WEIGHT,
                      ("model", "X", "y", "X_eval", "steps") + ("particles",) * (entry != "exact")))
    model = draw(model_for(call, entry, ("linear",) if entry == "exact" else ACTIVATIONS))
    m, M = draw(data_calls(call, model))
    T = draw(steps_and_friends(call, m))
    on_step_values(call, draw)
    put(draw, call, "progress", st.sampled_from([False, np.False_, None]), not_bools(none_ok=True))
    call.kwargs["method"] = "exact" if entry == "exact" else "mc"
    if entry == "ntk":
        call.kwargs["parametrization"] = "ntk"
    put(draw, call, "parametrization", st.just(call.kwargs.get("parametrization", "mup")),
        st.one_of(not_choices(("mup", "ntk")), st.just("ntk") if entry == "exact" else st.nothing()))
    put(draw, call, "method", st.just(call.kwargs["method"]), not_choices(("mc", "exact")))
    if entry == "exact":
        for name in ("particles", "groups", "seed", "dtype", "threads", "qmc", "gradient_independence", "basis_tol"):
            if call.plan.get(name) == BAD:  # given at all: refused by the exact method, whatever its value
                call.kwargs[name] = draw(st.sampled_from([1000, 2, 0, "float64", False, 1e-3]))
                call.bad.add(name)
        if call.plan.get("comm") == BAD:  # a communicator: the exact limit has no particles to split
            call.kwargs["comm"] = MPI.COMM_WORLD
            call.bad.add("comm")
        return call, model, m, M, T, {}
    N = draw(st.integers(16, 2000))
    G = draw(st.integers(1, 4))
    # 3 particles are too few for more than one group: the combination is checked below
    put(draw, call, "particles", st.sampled_from([None, N, np.int64(N), N, N, 3]), not_ints(2, none_ok=True),
        st.sampled_from([2**70, 10**13]))
    put(draw, call, "groups", st.sampled_from([None, G, np.int32(G)]), not_ints(1, none_ok=True))
    if call.kwargs["particles"] is None:  # the default 100 000 particles: too slow for a fuzz run
        call.kwargs["particles"] = N
    N = call.kwargs["particles"]
    G = 8 if call.kwargs["groups"] is None else call.kwargs["groups"]
    if not {"particles", "groups"} & call.bad and int(N) // int(G) < 2:
        call.bad |= {"particles", "groups"}
    seed = put(draw, call, "seed", st.one_of(st.none(), SEEDS), not_seeds(none_ok=True))
    dtype = put(draw, call, "dtype", st.one_of(st.none(), DTYPES_OK), not_dtypes(none_ok=True))
    put(draw, call, "threads", st.sampled_from([None, 1, 2, np.int64(2), 2**70]), not_ints(1, none_ok=True))
    qmc = put(draw, call, "qmc", st.sampled_from([None, False, True, np.True_]), not_bools(none_ok=True))
    dtype = np.dtype("float64" if dtype is None else dtype) if "dtype" not in call.bad else None
    meta = {"seed": 0 if seed is None else int(seed) if "seed" not in call.bad else None,
            "groups": int(G) if "groups" not in call.bad else None,
            "particles": int(N) // int(G) * int(G) if not {"particles", "groups"} & call.bad else None,
            "dtype": dtype.name if dtype is not None else None,
            "qmc": None if "qmc" in call.bad else bool(qmc or False)}
    if entry == "ntk":
        for name in ("gradient_independence", "basis_tol"):
            if call.plan.get(name) == BAD:  # given at all: refused by the NTK limit, whatever its value
                call.kwargs[name] = draw(st.sampled_from([False, True, 1e-3]))
                call.bad.add(name)
        if call.plan.get("comm") == BAD:  # a communicator: the NTK limit has no particles to split
            call.kwargs["comm"] = MPI.COMM_WORLD
            call.bad.add("comm")
        return call, model, m, M, T, meta
    comm = put(draw, call, "comm", st.sampled_from([OMIT, None, MPI.COMM_WORLD]), NOT_COMMS)
    if comm is MPI.COMM_WORLD:
        meta["ranks"] = 1
    gi = put(draw, call, "gradient_independence", st.sampled_from([None, False, True]), not_bools(none_ok=True))
    tol = put(draw, call, "basis_tol", st.one_of(st.none(), st.floats(1e-12, 0.5), st.just(np.float32(1e-3))),
              st.one_of(NOT_FLOATS.filter(lambda v: v is not None), st.floats(max_value=0.0),
                        st.sampled_from([0.0, 1.0, -1e-3, 2.0, 1e-3 + 0j]), st.floats(min_value=1.0)))
    default_tol = 1e-2 if dtype is not None and dtype == np.float32 else 1e-3
    meta |= {"gradient_independence": None if "gradient_independence" in call.bad else bool(gi or False),
             "basis_tol": None if "basis_tol" in call.bad else default_tol if tol is None else float(tol)}
    return call, model, m, M, T, meta


#: Run.meta's method and parametrization per entry; the NTK limit labels its runs method "ntk"
_LABELS = {"mc": {"method": "mc", "parametrization": "mup"}, "ntk": {"method": "ntk", "parametrization": "ntk"},
           "exact": {"method": "exact"}}


def _limit_test(entry: str, drawn):
    call, model, m, M, T, meta = drawn
    meta = {k: v for k, v in meta.items() if v is not None} | _LABELS[entry]
    tally_extensions(entry, call, outcome(entry, zlimit.simulate, call, check_run(call, model, m, M, T, meta)))


@settings(max_examples=EXAMPLES["mc"], **FUZZ)
@given(drawn=limit_calls("mc"))
def test_fuzz_simulate_mc(drawn):
    _limit_test("mc", drawn)


@settings(max_examples=EXAMPLES["ntk"], **FUZZ)
@given(drawn=limit_calls("ntk"))
def test_fuzz_simulate_ntk(drawn):
    _limit_test("ntk", drawn)


@settings(max_examples=EXAMPLES["exact"], **FUZZ)
@given(drawn=limit_calls("exact"))
def test_fuzz_simulate_exact(drawn):
    _limit_test("exact", drawn)


FINITE_ARGS = ("model", "X", "y", "X_eval", "steps", "batches", "record_steps", "on_step", "width", "seed",
               "parametrization", "dtype")


@st.composite
def finite_calls(draw):
    call = draw(plans(FINITE_ARGS + Y_WEIGHT, ("model", "X", "y", "X_eval", "steps", "width")))
    model = draw(model_for(call, "finite"))
    m, M = draw(data_calls(call, model))
    T = draw(steps_and_friends(call, m))
    on_step_values(call, draw)
    width = put(draw, call, "width", ints(1, 16), not_ints(1), st.sampled_from([2**40, 2**64]))
    seed = put(draw, call, "seed", SEEDS, not_seeds())
    param = put(draw, call, "parametrization", st.sampled_from(["mup", "sp", "ntp", "ip"]),
                not_choices(("mup", "sp", "ntp", "ip")))
    dtype = put(draw, call, "dtype", DTYPES_OK, not_dtypes())
    meta = {"width": int(width) if "width" not in call.bad else None,
            "seed": int(seed) if "seed" not in call.bad else None,
            "parametrization": str(param) if "parametrization" not in call.bad else None,
            "dtype": _dtype_name(dtype) if "dtype" not in call.bad else None}
    return call, model, m, M, T, {k: v for k, v in meta.items() if v is not None}


@settings(max_examples=EXAMPLES["finite"], **FUZZ)
@given(drawn=finite_calls())
def test_fuzz_train_finite(drawn):
    call, model, m, M, T, meta = drawn
    category = outcome("finite", zlimit.train_finite, call, check_run(call, model, m, M, T, meta))
    tally_extensions("finite", call, category)


# ------------------------------------------------------------------ estimate_memory
@st.composite
def estimate_calls(draw):
    call = draw(plans(("model", "m", "M", "steps", "batches", "particles", "groups", "dtype", "record_steps",
                       "threads"), ("m", "M", "steps", "particles")))
    draw(model_for(call, "estimate_memory"))
    m = draw(st.integers(1, 5))
    put(draw, call, "m", ints(m, m), not_ints(1), st.sampled_from([10**12, 2**64]))
    m = int(call.kwargs["m"]) if "m" not in call.bad else 1
    put(draw, call, "M", st.integers(m, m + 3), st.one_of(not_ints(0), st.integers(-3, m - 1)),
        st.just(m + 2**70))
    T = draw(st.integers(0, 3))
    put(draw, call, "steps", ints(T, T), not_ints(0), st.sampled_from([2**64, 10**15]))
    if call.huge & {"m", "steps"}:
        call.kwargs["batches"] = None
    else:
        put(draw, call, "batches", st.one_of(st.none(), batches_for(m, T)), not_batches_for(m, T))
    N, G = draw(st.integers(4, 10**6)), draw(st.integers(1, 4))
    put(draw, call, "particles", ints(N, N), not_ints(2), st.just(2**70))
    put(draw, call, "groups", ints(G, G), not_ints(1))
    if not {"particles", "groups"} & call.bad and int(call.kwargs["particles"]) // int(call.kwargs["groups"]) < 2:
        call.bad |= {"particles", "groups"}
    put(draw, call, "dtype", DTYPES_OK, not_dtypes())
    put(draw, call, "record_steps", st.lists(st.integers(0, T), max_size=3), st.sampled_from([(T + 1,), (1.5,), None]))
    put(draw, call, "threads", st.sampled_from([None, 1, 2, 2**70]), not_ints(1, none_ok=True))
    return call


@settings(max_examples=EXAMPLES["estimate_memory"], **FUZZ)
@given(call=estimate_calls())
def test_fuzz_estimate_memory(call):
    from zlimit._memory import BASELINE_BYTES

    def check(need):
        assert type(need) is int and need > BASELINE_BYTES

    outcome("estimate_memory", zlimit.estimate_memory, call, check)
