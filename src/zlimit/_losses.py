"""Per-sample losses ℓ(f, y) and their derivatives ∂ℓ/∂f (maths §1).

The error signal of the maths is χ_{t,i} = r · ∂ℓ/∂f(f_t(ξ_i), y_i) · 1{i ∈ B_t}; the
reduction factor r and the batch indicator are applied by the caller
(:func:`zlimit._model.error_signal`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ._validate import check_choice

__all__ = ["Loss", "LOSSES", "get_loss"]


@dataclass(frozen=True)
class Loss:
    """A per-sample loss with vectorised value and derivative.

    Parameters
    ----------
    name : str
    value : callable ``(f, y) -> ℓ``, elementwise on arrays of equal shape.
    grad : callable ``(f, y) -> ∂ℓ/∂f``, elementwise.
    labels : {"real", "pm1"}
        ``"pm1"`` makes :func:`zlimit._validate.check_data` require labels in {-1, +1}.
    """

    name: str
    value: Callable[[np.ndarray, np.ndarray], np.ndarray] = field(repr=False, compare=False)
    grad: Callable[[np.ndarray, np.ndarray], np.ndarray] = field(repr=False, compare=False)
    labels: str = "real"


def _mse_value(f, y):
    return 0.5 * (f - y) ** 2


def _mse_grad(f, y):
    return f - y


def _logistic_value(f, y):
    # log(1 + exp(-y f)), computed without overflow
    return np.logaddexp(0.0, -y * f)


def _logistic_grad(f, y):
    # d/df log(1 + e^{-yf}) = -y σ(-y f)
    return -y * 0.5 * (1.0 - np.tanh(0.5 * y * f))


LOSSES: dict[str, Loss] = {
    "mse": Loss("mse", _mse_value, _mse_grad, "real"),
    "logistic": Loss("logistic", _logistic_value, _logistic_grad, "pm1"),
}


def get_loss(spec: str | Loss) -> Loss:
    """Return the :class:`Loss` named by ``spec`` (or ``spec`` itself)."""
    if isinstance(spec, Loss):
        return spec
    return LOSSES[check_choice("loss", spec, sorted(LOSSES), hint=" or a zlimit.Loss")]
