"""Activation functions φ and their derivatives φ', compiled with numba.

Every activation is a pair of scalar functions ``phi(x)`` and ``dphi(x)`` that numba
can compile. The engine applies them per particle inside its own kernels, and the
finite-width networks apply them elementwise through :func:`apply`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numba
import numpy as np

from ._validate import check_choice

__all__ = ["Activation", "ACTIVATIONS", "get_activation", "apply"]


@dataclass(frozen=True)
class Activation:
    """A scalar nonlinearity φ with derivative φ'.

    Parameters
    ----------
    name : str
        Label used in reports and saved files.
    phi, dphi : callable
        Scalar functions ``float -> float``. Plain Python functions are compiled
        with ``numba.njit``; already-jitted functions are used as they are.

    Examples
    --------
    A custom φ for :class:`zlimit.MLP` (its name is what saved runs record):

    >>> import math, zlimit
    >>> softsign = zlimit.Activation("softsign", lambda x: x / (1.0 + abs(x)), lambda x: 1.0 / (1.0 + abs(x)) ** 2)
    >>> softsign.phi(1.0), softsign.dphi(1.0)
    (0.5, 0.25)
    >>> zlimit.MLP(depth=2, activation=softsign).activation.name
    'softsign'
    >>> zlimit.Activation("bad", lambda x: math.log(x), lambda x: 1.0 / x)
    Traceback (most recent call last):
    ...
    ValueError: activation 'bad': phi and dphi must be scalar functions numba can compile (float -> float); calling them failed: ...
    """

    name: str
    phi: Callable[[float], float] = field(repr=False, compare=False)
    dphi: Callable[[float], float] = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        for field in ("phi", "dphi"):
            fn = getattr(self, field)
            if not callable(fn):
                raise ValueError(f"activation.{field} must be callable, got {fn!r}")
            if not isinstance(fn, numba.core.registry.CPUDispatcher):
                object.__setattr__(self, field, numba.njit(fn))
        try:
            for x in (-1.5, 0.0, 0.7):
                value, slope = float(self.phi(x)), float(self.dphi(x))
                if not (math.isfinite(value) and math.isfinite(slope)):
                    raise ValueError(f"non-finite value at x={x}")
        except Exception as exc:  # numba typing errors, bad return types
            raise ValueError(
                f"activation {self.name!r}: phi and dphi must be scalar functions numba "
                f"can compile (float -> float); calling them failed: {exc}"
            ) from exc


@numba.njit(cache=True)
def _sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@numba.njit(cache=True)
def _tanh(x):
    return math.tanh(x)


@numba.njit(cache=True)
def _dtanh(x):
    t = math.tanh(x)
    return 1.0 - t * t


@numba.njit(cache=True)
def _dsigmoid(x):
    s = _sigmoid(x)
    return s * (1.0 - s)


@numba.njit(cache=True)
def _silu(x):
    return x * _sigmoid(x)


@numba.njit(cache=True)
def _dsilu(x):
    s = _sigmoid(x)
    return s + x * s * (1.0 - s)


_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


@numba.njit(cache=True)
def _gelu(x):
    return 0.5 * x * (1.0 + math.erf(x * _INV_SQRT2))


@numba.njit(cache=True)
def _dgelu(x):
    return 0.5 * (1.0 + math.erf(x * _INV_SQRT2)) + x * _INV_SQRT2PI * math.exp(-0.5 * x * x)


@numba.njit(cache=True)
def _softplus(x):
    if x > 0.0:
        return x + math.log1p(math.exp(-x))
    return math.log1p(math.exp(x))


@numba.njit(cache=True)
def _relu(x):
    return x if x > 0.0 else 0.0


@numba.njit(cache=True)
def _drelu(x):
    return 1.0 if x > 0.0 else 0.0


@numba.njit(cache=True)
def _linear(x):
    return x


@numba.njit(cache=True)
def _one(x):
    return 1.0


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation("tanh", _tanh, _dtanh),
    "sigmoid": Activation("sigmoid", _sigmoid, _dsigmoid),
    "silu": Activation("silu", _silu, _dsilu),
    "gelu": Activation("gelu", _gelu, _dgelu),
    "softplus": Activation("softplus", _softplus, _sigmoid),
    "relu": Activation("relu", _relu, _drelu),
    "linear": Activation("linear", _linear, _one),
}


def get_activation(spec: str | Activation) -> Activation:
    """Return the :class:`Activation` named by ``spec`` (or ``spec`` itself)."""
    if isinstance(spec, Activation):
        return spec
    return ACTIVATIONS[check_choice("activation", spec, sorted(ACTIVATIONS), hint=" or a zlimit.Activation")]


@numba.njit(nogil=True)
def _apply(fn, x, out):
    # serial: the arrays are small next to the BLAS work around them, and a parallel
    # region here would compete with BLAS threads for the cores
    flat_in = x.reshape(-1)
    flat_out = out.reshape(-1)
    for i in range(flat_in.size):
        flat_out[i] = fn(flat_in[i])
    return out


def apply(fn: Callable[[float], float], x: np.ndarray) -> np.ndarray:
    """Apply a jitted scalar function elementwise; returns a new array like ``x``.

    Parameters
    ----------
    fn : numba dispatcher
        ``Activation.phi`` or ``Activation.dphi``.
    x : ndarray, any shape, float32 or float64, C-contiguous.
    """
    x = np.ascontiguousarray(x)
    return _apply(fn, x, np.empty_like(x))
