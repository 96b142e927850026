"""The argument checks of the package, in one place.

Every public entry point validates its arguments with these small pure functions, so
that the same kind of argument is accepted and refused the same way everywhere. Each
checker returns the value in canonical form (a Python ``int``, ``float``, ...) or
raises a :class:`ValueError` whose message is one line naming the argument, the
values it accepts and what was given, with the reason in parentheses::

    steps must be an integer >= 0, got 2.5 (not an integer)

Conventions shared by all checkers:

* bools (``True``, ``np.True_``) are never numbers: ``steps=True`` is refused;
* integers are Python or NumPy integers (anything with ``__index__``); floats with an
  integral value such as ``2.0`` are refused, never truncated;
* floats are finite real numbers (NaN and ±inf are refused); strings are refused;
* seeds are integers in [0, 2**64), the range of the 64-bit seeds they become.
"""
from __future__ import annotations

import math
import numbers
import operator
import os
import sys
import warnings
from collections.abc import Mapping, Set
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ._errors import DataWarning

if TYPE_CHECKING:  # pragma: no cover
    from ._model import MLP

__all__ = [
    "is_int", "check_int", "check_seed", "check_float", "check_choice", "check_bool", "check_dtype",
    "check_int_list", "check_record_steps", "check_data", "check_batches", "check_seeds", "DTYPES", "SEED_LIMIT",
    "unit_rows", "warn_inputs", "warn_if_parallel", "warn_user", "INPUT_SCALE", "PARALLEL_COS",
]

#: the storage dtypes a run accepts
DTYPES = ("float64", "float32")
#: seeds are integers in [0, SEED_LIMIT): the 64-bit words of the random streams
SEED_LIMIT = 2 ** 64

_SHOW_CHARS = 80


def _show(value) -> str:
    """``repr(value)`` on one line, shortened to about 80 characters."""
    try:
        text = " ".join(repr(value).split())
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _SHOW_CHARS else text[:_SHOW_CHARS - 3] + "..."


def _bounds(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    """' >= lo', ' in [lo, hi)', ... (empty without bounds)."""
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f" > {lo}" if lo_open else f" >= {lo}"
    if lo is None:
        return f" < {hi}" if hi_open else f" <= {hi}"
    return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_))


def is_int(value) -> bool:
    """Whether ``value`` is an integer in the sense of :func:`check_int` (bools are not).

    Examples
    --------
    >>> import numpy as np
    >>> is_int(3), is_int(np.int64(3)), is_int(3.0), is_int(True)
    (True, True, False, False)
    """
    if _is_bool(value):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def check_int(name: str, value, lo: int | None, hi: int | None = None, *, hint: str = "") -> int:
    """``value`` as a Python int in [lo, hi], or a one-line ValueError naming ``name``.

    Parameters
    ----------
    name : str
        The argument's name, as the caller wrote it.
    value
        A Python or NumPy integer; bools and floats (even ``2.0``) are refused.
    lo, hi : int or None
        Inclusive bounds; None for none.
    hint : str
        Appended to the description of the accepted values, e.g. ``" (hidden layers)"``.

    Returns
    -------
    int

    Examples
    --------
    >>> import numpy as np
    >>> check_int("steps", np.int64(3), 0)
    3
    >>> check_int("steps", 2.5, 0)
    Traceback (most recent call last):
    ...
    ValueError: steps must be an integer >= 0, got 2.5 (not an integer)
    """
    accepted = f"an integer{_bounds(lo, hi)}{hint}"
    if _is_bool(value):
        raise ValueError(f"{name} must be {accepted}, got {_show(value)} (a bool)")
    try:
        v = int(operator.index(value))
    except TypeError:
        raise ValueError(f"{name} must be {accepted}, got {_show(value)} (not an integer)") from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name} must be {accepted}, got {_show(value)} (out of range)")
    return v


def check_seed(name: str, value) -> int:
    """A seed: an integer in [0, 2**64), refused beyond rather than wrapped or hashed.

    Examples
    --------
    >>> check_seed("seed", 2**64 - 1) == 2**64 - 1
    True
    >>> check_seed("seed", 2**64 + 5)
    Traceback (most recent call last):
    ...
    ValueError: seed must be an integer in [0, 2**64), got 18446744073709551621 (out of range)
    """
    if is_int(value) and not 0 <= operator.index(value) < SEED_LIMIT:
        raise ValueError(f"{name} must be an integer in [0, 2**64), got {_show(value)} (out of range)")
    return check_int(name, value, 0, hint=" below 2**64")


#: most finite networks per width a count of ``seeds`` may ask for (compare)
MAX_SEEDS = 10_000
#: compare's result table holds seeds as int64
TABLE_SEED_LIMIT = 2 ** 63


def check_seeds(name: str, value, base: int = 0) -> list[int]:
    """compare's ``seeds``: a count S in [1, MAX_SEEDS] (the seeds base, ..., base + S − 1)
    or a list of distinct seeds, each below 2**63 (its result table holds int64).

    Examples
    --------
    >>> check_seeds("seeds", 3, base=5)
    [5, 6, 7]
    >>> check_seeds("seeds", [4, 0])
    [4, 0]
    """
    hi = TABLE_SEED_LIMIT - 1
    if is_int(value) or _is_bool(value):
        count = check_int(name, value, 1, MAX_SEEDS, hint=" (a count) or a list of seeds")
        check_int("seed + seeds - 1", base + count - 1, 0, hi, hint=" (compare's table holds int64 seeds)")
        return [base + k for k in range(count)]
    return check_int_list(name, value, 0, hi, unique=True, hint=" (compare's table holds int64 seeds)")


def check_float(name: str, value, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False, hint: str = "") -> float:
    """``value`` as a finite Python float within the bounds, or a one-line ValueError.

    Parameters
    ----------
    name : str
    value
        A real number (Python or NumPy int or float, or a 0-d real array); bools,
        strings, complex numbers, NaN and ±inf are refused.
    lo, hi : float or None
        Bounds; None for none.
    lo_open, hi_open : bool
        Exclude the bound itself (``lo=0, lo_open=True``: positive numbers).
    hint : str
        Appended to the description of the accepted values.

    Returns
    -------
    float

    Examples
    --------
    >>> check_float("lr", 0.5, 0, lo_open=True)
    0.5
    >>> check_float("lr", float("nan"), 0, lo_open=True)
    Traceback (most recent call last):
    ...
    ValueError: lr must be a positive finite number, got nan (not finite)
    """
    if lo is not None and lo == 0 and lo_open and hi is None:
        accepted = f"a positive finite number{hint}"
    else:
        accepted = f"a finite number{_bounds(lo, hi, lo_open, hi_open)}{hint}"
    if _is_bool(value):
        raise ValueError(f"{name} must be {accepted}, got {_show(value)} (a bool)")
    real = isinstance(value, numbers.Real) or (
        isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf")
    if not real:
        raise ValueError(f"{name} must be {accepted}, got {_show(value)} (not a number)")
    try:
        v = float(value)
    except OverflowError:  # an int beyond the float range
        v = math.inf
    if not math.isfinite(v):
        raise ValueError(f"{name} must be {accepted}, got {_show(value)} (not finite)")
    if lo is not None and (v < lo or (lo_open and v == lo)) or hi is not None and (v > hi or (hi_open and v == hi)):
        raise ValueError(f"{name} must be {accepted}, got {_show(value)} (out of range)")
    return v


def _kind(value) -> str:
    if _is_bool(value):
        return "bool"
    if is_int(value):
        return "int"
    if isinstance(value, numbers.Real):
        return "real"
    if isinstance(value, str):
        return "str"
    if isinstance(value, bytes):
        return "bytes"
    return "other"


def check_choice(name: str, value, choices: Sequence, *, hint: str = ""):
    """The entry of ``choices`` equal to ``value``, or a one-line ValueError.

    Equality is of like with like: ``True`` does not match ``1``, nor ``1.0`` match
    ``1``; unhashable or array values are refused, not an error of their own.

    Parameters
    ----------
    name : str
    value
    choices : sequence
        The accepted values, listed in the message.
    hint : str
        Appended to the list of accepted values.

    Returns
    -------
    The matching entry of ``choices`` (so ``np.str_("mup")`` comes back as ``"mup"``).

    Examples
    --------
    >>> check_choice("reduction", "sum", ("mean", "sum"))
    'sum'
    >>> check_choice("reduction", "avg", ("mean", "sum"))
    Traceback (most recent call last):
    ...
    ValueError: reduction must be one of ('mean', 'sum'), got 'avg'
    """
    choices = tuple(choices)
    kind = _kind(value)
    for c in choices:
        if _kind(c) != kind:
            continue
        try:
            equal = value == c
        except Exception:
            continue
        if isinstance(equal, (bool, np.bool_)) and equal:
            return c
    raise ValueError(f"{name} must be one of {choices!r}{hint}, got {_show(value)}")


def check_bool(name: str, value) -> bool:
    """``value`` as a Python bool; only ``True``/``False`` (or NumPy bools) are accepted.

    Examples
    --------
    >>> check_bool("progress", False)
    False
    >>> check_bool("progress", 0)
    Traceback (most recent call last):
    ...
    ValueError: progress must be True or False, got 0
    """
    if not _is_bool(value):
        raise ValueError(f"{name} must be True or False, got {_show(value)}")
    return bool(value)


def check_dtype(value) -> np.dtype:
    """The storage dtype float64 or float32, from a name or a NumPy type.

    ``None`` is refused (``np.dtype(None)`` would silently mean float64).

    Examples
    --------
    >>> import numpy as np
    >>> check_dtype("float32"), check_dtype(np.float64)
    (dtype('float32'), dtype('float64'))
    >>> check_dtype("float16")
    Traceback (most recent call last):
    ...
    ValueError: dtype must be one of ('float64', 'float32'), got 'float16'
    """
    dt = None
    if value is not None and not _is_bool(value):
        try:
            dt = np.dtype(value)
        except (TypeError, ValueError):
            dt = None
    if dt is None or dt not in [np.dtype(name) for name in DTYPES]:  # a non-native byte order is refused too
        raise ValueError(f"dtype must be one of {DTYPES!r}, got {_show(value)}")
    return dt


def check_int_list(name: str, values, lo: int | None, hi: int | None = None, *, allow_empty: bool = False,
                   unique: bool = False, hint: str = "") -> list[int]:
    """A sequence of integers in [lo, hi] as a list of Python ints (order kept).

    Parameters
    ----------
    name : str
    values : iterable of int
        Strings and single numbers are refused; entries are checked by
        :func:`check_int` as ``name[k]``.
    lo, hi : int or None
        Inclusive bounds of every entry.
    allow_empty : bool
        Accept an empty sequence.
    unique : bool
        Refuse repeated entries.
    hint : str
        Appended to the description of the accepted values.

    Examples
    --------
    >>> check_int_list("widths", (64, 256), 1)
    [64, 256]
    >>> check_int_list("widths", [64, 0], 1)
    Traceback (most recent call last):
    ...
    ValueError: widths[1] must be an integer >= 1, got 0 (out of range)
    """
    accepted = f"a {'' if allow_empty else 'non-empty '}sequence of integers{_bounds(lo, hi)}{hint}"
    if isinstance(values, (str, bytes)) or (isinstance(values, np.ndarray) and values.ndim != 1):
        raise ValueError(f"{name} must be {accepted}, got {_show(values)}")
    try:
        items = list(values)
    except TypeError:
        raise ValueError(f"{name} must be {accepted}, got {_show(values)}") from None
    if not items and not allow_empty:
        raise ValueError(f"{name} must be {accepted}, got {_show(values)} (empty)")
    out = [check_int(f"{name}[{k}]", v, lo, hi, hint=hint) for k, v in enumerate(items)]
    if unique and len(set(out)) != len(out):
        repeated = sorted({v for v in out if out.count(v) > 1})
        raise ValueError(f"{name} must not repeat entries, got {_show(out)} (repeated: {repeated})")
    return out


def check_record_steps(record_steps, steps: int) -> tuple[int, ...]:
    """The steps whose features a run keeps: sorted, unique, always with step 0.

    Parameters
    ----------
    record_steps : int or iterable of int
        Steps in [0, steps]; a single integer means that one step. Non-integers
        (``2.5``, ``2.0``), bools and steps outside [0, steps] are refused.
    steps : int
        T >= 0, the number of SGD steps.

    Returns
    -------
    tuple of int

    Examples
    --------
    >>> check_record_steps((5, 2, 5), steps=5)
    (0, 2, 5)
    >>> check_record_steps((2.5,), steps=5)
    Traceback (most recent call last):
    ...
    ValueError: record_steps[0] must be an integer in [0, 5] (steps to keep; steps = 5), got 2.5 (not an integer)
    """
    steps = check_int("steps", steps, 0)
    hint = f" (steps to keep; steps = {steps})"
    if is_int(record_steps):
        return tuple(sorted({0, check_int("record_steps", record_steps, 0, steps, hint=hint)}))
    if isinstance(record_steps, np.ndarray) and record_steps.ndim == 0:
        record_steps = record_steps.reshape(1)
    values = check_int_list("record_steps", record_steps, 0, steps, allow_empty=True, hint=hint)
    return tuple(sorted({0, *values}))


def _real_array(name: str, value) -> np.ndarray:
    """``value`` as a float64 array, refusing what is not an array of real numbers (strings,
    ragged nesting, objects, complex or bool entries, masked arrays) with a message naming ``name``.

    A bool among the numbers of nested lists, which NumPy would turn into 0 or 1, is
    refused like an array of bools.
    """
    if isinstance(value, np.ma.MaskedArray):
        raise ValueError(f"{name} must be an array of real numbers, got a masked array; fill or drop the masked "
                         "entries first")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        raise ValueError(f"{name} must be an array of real numbers, got {_show(value)} (ragged or not numeric)") from None
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be an array of real numbers, got dtype {arr.dtype} ({_show(value)})")
    if isinstance(value, (list, tuple)) and any(_is_bool(v) for v in np.array(value, dtype=object).flat):
        raise ValueError(f"{name} must be an array of real numbers, got a bool among its entries ({_show(value)})")
    return arr.astype(np.float64)


def check_data(model: MLP, X, y, X_eval=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and convert training and evaluation data, and warn (:func:`warn_inputs`)
    when the inputs break the assumptions of the theory.

    Parameters
    ----------
    model : MLP
        Only its loss is read: a loss with ``labels == "pm1"`` needs y in {-1, +1}.
    X : array_like, shape (m, d)
    y : array_like, shape (m,), or (m, k) for loss "mse" with k = ``model.outputs`` > 1
        (loss "xent": class labels in [0, k), shape (m,))
    X_eval : array_like, shape (m_eval, d), optional

    Returns
    -------
    X, y, X_eval : float64 arrays; ``X_eval`` has shape (0, d) when not given.

    Warns
    -----
    DataWarning
        An input far from ‖ξ‖²/d = 1, or two parallel inputs (:func:`warn_inputs`).

    Examples
    --------
    >>> import zlimit
    >>> X, y, X_eval = check_data(zlimit.MLP(depth=1), [[1.0, 0.0]], [0.5])
    >>> X.shape, y.dtype, X_eval.shape
    ((1, 2), dtype('float64'), (0, 2))
    """
    X, y = _real_array("X", X), _real_array("y", y)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"X must have shape (m, d) with m, d >= 1, got shape {X.shape}")
    _check_targets(model, y, X.shape[0])
    if X_eval is None:
        X_eval = np.zeros((0, X.shape[1]))
    X_eval = _real_array("X_eval", X_eval)
    if X_eval.ndim != 2 or X_eval.shape[1] != X.shape[1]:
        raise ValueError(
            f"X_eval must have shape (m_eval, d) with d = {X.shape[1]} as in X, got {X_eval.shape}"
        )
    for name, arr in (("X", X), ("y", y), ("X_eval", X_eval)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or inf; clean or drop those entries")
    if model.loss.labels == "pm1" and not np.all(np.isin(y, (-1.0, 1.0))):
        raise ValueError(f"y must hold labels in {{-1, +1}} for loss {model.loss.name!r}, got values "
                         f"{np.unique(y)[:5]}")
    k = model.outputs
    if model.loss.labels == "class" and not np.all((y == np.floor(y)) & (y >= 0) & (y < k)):
        raise ValueError(f"y must hold class labels, integers in [0, {k}) (outputs = {k}), for loss "
                         f"{model.loss.name!r}, got values {np.unique(y)[:5]}")
    warn_inputs(X, X_eval)
    return X, y, X_eval


# ------------------------------------------------------------------ the assumptions on the inputs
#: an input warns (DataWarning) when its ‖ξ‖²/d lies outside this range: the μP scalings of
#: maths §1 (the 1/d of the first layer) assume ‖ξ‖²/d ≈ 1
INPUT_SCALE = (0.1, 10.0)
#: two inputs whose |cos| exceeds this are parallel (or antiparallel), against Assumption 4.1
PARALLEL_COS = 1.0 - 1e-9
#: rows of cosines computed at once by :func:`warn_if_parallel` (memory 8·_BLOCK·M bytes)
_BLOCK = 1024
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_user(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` attributed to the first caller outside the zlimit package, so
    the warning points at the user's line (and is shown once per line) however deep in
    the package it is raised.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_user("look", UserWarning)
    >>> caught[0].filename.endswith("_validate.py")  # this doctest's caller is not the package
    False
    """
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def unit_rows(X) -> tuple[np.ndarray, np.ndarray]:
    """Each row of X over its Euclidean norm, and the norms, without overflow or underflow.

    Parameters
    ----------
    X : array_like, shape (r, d), finite

    Returns
    -------
    U : ndarray, shape (r, d)
        ξ / ‖ξ‖ for each row ξ (a zero row stays zero).
    norms : ndarray, shape (r,)
        ‖ξ‖ (inf when it exceeds the float64 range although every entry is finite).

    Examples
    --------
    >>> import numpy as np
    >>> U, norms = unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    >>> U.tolist(), norms.tolist()
    ([[0.6, 0.8], [0.0, 0.0]], [5.0, 0.0])
    >>> unit_rows(np.array([[3e300, 4e300]]))[0].tolist()  # no overflow in ‖ξ‖²
    [[0.6, 0.8]]
    """
    X = np.asarray(X, dtype=np.float64)
    with np.errstate(over="ignore", under="ignore"):
        norms = np.linalg.norm(X, axis=1)
    U = X / np.where(norms > 0, norms, 1.0)[:, None]
    odd = ~(norms > 1e-150) | np.isinf(norms)  # ‖ξ‖² under- or overflowed (or ξ = 0): scale by the peak first
    if odd.any():
        peak = np.max(np.abs(X[odd]), axis=1, keepdims=True)
        scaled = X[odd] / np.where(peak > 0, peak, 1.0)
        n = np.linalg.norm(scaled, axis=1, keepdims=True)
        U[odd] = scaled / np.where(n > 0, n, 1.0)
        with np.errstate(over="ignore"):
            norms[odd] = (peak * n)[:, 0]
    return U, norms


def _row(i: int, m: int) -> str:
    """Row i of the inputs stacked as [X; X_eval] (m training inputs), as the user names it."""
    return f"X[{i}]" if i < m else f"X_eval[{i - m}]"


def warn_if_parallel(X, m: int | None = None) -> None:
    """Warn (:class:`~zlimit.DataWarning`) when two rows of X are parallel or antiparallel,
    |cos| > ``PARALLEL_COS`` = 1 − 1e-9: Assumption 4.1 of the convergence theory (Chen,
    Yang, Zhao & Gu 2025) asks that no two inputs be parallel. The first such pair is named.

    Parameters
    ----------
    X : array_like, shape (M, d), finite
        The inputs; zero rows are left out (:func:`warn_inputs` reports them).
    m : int, optional
        Rows 0..m−1 are named ``X[i]``, the rest ``X_eval[i − m]`` (default: all ``X``).

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_if_parallel([[1.0, 0.0], [0.0, 1.0], [-2.0, 0.0]])
    >>> print(caught[0].message)
    inputs X[0] and X[2] are antiparallel (cos = -1); Assumption 4.1 of the convergence theory
    (no two inputs parallel) does not hold; drop one of them
    """
    U, _ = unit_rows(X)
    m = len(U) if m is None else m
    later = np.arange(len(U))
    for start in range(0, len(U), _BLOCK):
        cos = U[start:start + _BLOCK] @ U.T
        hits = np.argwhere((np.abs(cos) > PARALLEL_COS) & (later > (start + later[:len(cos), None])))
        if hits.size:
            i, j = int(hits[0, 0]), int(hits[0, 1])
            c = cos[i, j]
            i += start
            how = "parallel" if c > 0 else "antiparallel"
            warn_user(f"inputs {_row(i, m)} and {_row(j, m)} are {how} (cos = {c:.12g}); Assumption 4.1 of the "
                      "convergence theory (no two inputs parallel) does not hold; drop one of them", DataWarning)
            return


def warn_inputs(X: np.ndarray, X_eval: np.ndarray) -> None:
    """Warn (:class:`~zlimit.DataWarning`) when the inputs break what the theory assumes:
    an input with ‖ξ‖²/d outside ``INPUT_SCALE`` = [0.1, 10] (the μP scalings assume
    ‖ξ‖²/d ≈ 1; the first such row is named), or two parallel inputs, training or
    evaluation (:func:`warn_if_parallel`).

    Parameters
    ----------
    X : ndarray, shape (m, d), finite
    X_eval : ndarray, shape (m_eval, d), finite

    Examples
    --------
    >>> import warnings, numpy as np
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_inputs(np.array([[1.0, 1.0], [30.0, 0.0]]), np.zeros((0, 2)))
    >>> print(caught[0].message)
    X[1] has ‖ξ‖²/d = 450, far from 1 (outside [0.1, 10]): the μP scalings assume inputs with ‖ξ‖²/d ≈ 1;
    rescale them, e.g. X = zlimit.datasets.normalise(X) (and X_eval likewise)
    """
    inputs, m, d = np.vstack([X, X_eval]), X.shape[0], X.shape[1]
    _, norms = unit_rows(inputs)
    with np.errstate(over="ignore"):
        ratio = norms ** 2 / d
    lo, hi = INPUT_SCALE
    far = np.flatnonzero((ratio < lo) | (ratio > hi))
    if far.size:
        i = int(far[0])
        more = f" (and {far.size - 1} more)" if far.size > 1 else ""
        warn_user(f"{_row(i, m)}{more} has ‖ξ‖²/d = {ratio[i]:.3g}, far from 1 (outside [{lo:g}, {hi:g}]): "
                  "the μP scalings assume inputs with ‖ξ‖²/d ≈ 1; rescale them, e.g. X = zlimit.datasets.normalise(X) "
                  "(and X_eval likewise)", DataWarning)
    warn_if_parallel(inputs, m)


def _check_targets(model: MLP, y: np.ndarray, m: int) -> None:
    """y has shape (m,), or (m, k) for an elementwise loss of k > 1 outputs (maths §6)."""
    k = model.outputs
    if k > 1 and model.loss.labels != "class":
        if y.shape != (m, k):
            raise ValueError(f"y must have shape (m, k) = ({m}, {k}) (one target per output) for loss "
                             f"{model.loss.name!r} with outputs = {k}, got {y.shape}")
    elif y.shape != (m,):
        what = "one class label per input" if model.loss.labels == "class" else "one target per input"
        raise ValueError(f"y must have shape (m,) = ({m},) ({what}) to match X, got {y.shape}")


def _index_array(name: str, b, m: int) -> np.ndarray:
    """One batch, sorted: a non-empty 1-d integer array or sequence of distinct indices in [0, m)."""
    accepted = "a non-empty 1-d array of distinct integer indices"
    if isinstance(b, np.ndarray) and not isinstance(b, np.ma.MaskedArray):
        if b.ndim != 1 or b.dtype.kind not in "iu":
            raise ValueError(f"{name} must be {accepted}, got {_show(b)}")
        values = b
    elif isinstance(b, (str, bytes, Mapping, Set, np.ma.MaskedArray)):
        raise ValueError(f"{name} must be {accepted}, got {_show(b)}")
    else:
        try:
            items = list(b)
        except TypeError:
            raise ValueError(f"{name} must be {accepted}, got {_show(b)}") from None
        if any(isinstance(v, (list, tuple)) or (isinstance(v, np.ndarray) and v.ndim) for v in items):
            raise ValueError(f"{name} must be {accepted}, got {_show(b)} (nested: not 1-d)")
        values = [check_int(f"{name}[{k}]", v, None) for k, v in enumerate(items)]  # bools, floats refused
    if len(values) == 0:
        raise ValueError(f"{name} must be {accepted}, got {_show(b)} (empty)")
    outside = values[(values < 0) | (values >= m)] if isinstance(values, np.ndarray) else [
        v for v in values if not 0 <= v < m]
    if len(outside):
        raise ValueError(f"{name} must hold indices in [0, {m}) (m = number of training inputs), got {_show(b)} "
                         f"({int(outside[0])} is outside)")
    out = np.sort(np.asarray(values, dtype=np.int64))
    repeated = out[1:][out[1:] == out[:-1]]
    if repeated.size:
        raise ValueError(f"{name} must hold distinct indices (a batch is a set of training inputs), got {_show(b)} "
                         f"(it repeats {int(repeated[0])})")
    return out


def check_batches(batches, m: int, steps: int) -> list[np.ndarray]:
    """Validate a batch schedule; ``None`` means full batch at every step.

    Parameters
    ----------
    batches : sequence of index arrays, or None
        Exactly ``steps`` entries, one per step; each a non-empty 1-d integer array
        (or a sequence of integers; bools and floats are refused) of distinct indices
        in [0, m).
    m : int
        Number of training inputs.
    steps : int
        T >= 0.

    Returns
    -------
    list of ``steps`` sorted int64 arrays of distinct indices in [0, m).

    Examples
    --------
    >>> [b.tolist() for b in check_batches([[2, 0], [1]], m=3, steps=2)]
    [[0, 2], [1]]
    """
    steps = check_int("steps", steps, 0)
    if batches is None:
        return [np.arange(m)] * steps
    accepted = "a sequence of index arrays (one per step) or None"
    if isinstance(batches, (str, bytes, Mapping, Set)) or (isinstance(batches, np.ndarray) and batches.ndim == 0):
        raise ValueError(f"batches must be {accepted}, got {_show(batches)}")
    try:
        batches = list(batches)
    except TypeError:
        raise ValueError(f"batches must be {accepted}, got {_show(batches)}") from None
    if len(batches) != steps:
        raise ValueError(f"batches has {len(batches)} entries but steps = {steps}: give one index array per step")
    return [_index_array(f"batches[{t}]", b, m) for t, b in enumerate(batches)]
