"""Per-sample losses ℓ(f, y) and their derivatives ∂ℓ/∂f (maths §1).

The error signal of the maths is χ_{t,i} = r · ∂ℓ/∂f(f_t(ξ_i), y_i) · 1{i ∈ B_t}; the
reduction factor r and the batch indicator are applied by the caller
(:func:`zlimit._model.error_signal`). With k > 1 outputs (maths §6) f has shape (b, k):
"mse" is summed over the outputs, and "xent" (softmax cross-entropy) takes class labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.special

from ._validate import check_choice

__all__ = ["Loss", "LOSSES", "get_loss"]


@dataclass(frozen=True)
class Loss:
    """A per-sample loss with vectorised value and derivative.

    Parameters
    ----------
    name : str
    value : callable ``(f, y) -> ℓ``, elementwise on arrays of equal shape (a loss of
        k > 1 outputs, f (b, k), is summed over the outputs by the caller), or per sample,
        (b,), for ``labels == "class"``.
    grad : callable ``(f, y) -> ∂ℓ/∂f``, the shape of f.
    labels : {"real", "pm1", "class"}
        What :func:`zlimit._validate.check_data` requires of y: reals (shape (m,), or
        (m, k) with k > 1 outputs), labels in {-1, +1} (k = 1), or class indices in
        [0, k) of shape (m,) (k >= 2).

    Examples
    --------
    The built-in losses are named in :class:`zlimit.MLP` (``loss="mse"``); a custom one,
    here the Huber loss with threshold 1:

    >>> import numpy as np, zlimit
    >>> huber = zlimit.Loss("huber", lambda f, y: np.where(abs(f - y) < 1, 0.5 * (f - y) ** 2, abs(f - y) - 0.5),
    ...                     lambda f, y: np.clip(f - y, -1.0, 1.0))
    >>> huber.grad(np.array([0.5, 3.0]), np.zeros(2))
    array([0.5, 1. ])
    >>> zlimit.MLP(depth=2, loss=huber).loss.name
    'huber'
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


def _xent_value(f, y):
    # −log softmax(f)_y = logsumexp(f) − f_y, per sample; f (b, k), y (b,) class indices
    return scipy.special.logsumexp(f, axis=-1) - np.take_along_axis(f, _classes(y)[:, None], axis=-1)[:, 0]


def _xent_grad(f, y):
    # ∂ℓ/∂f^c = softmax(f)_c − 1{c = y} (maths §6)
    g = scipy.special.softmax(f, axis=-1)
    g[np.arange(f.shape[0]), _classes(y)] -= 1.0
    return g


def _classes(y: np.ndarray) -> np.ndarray:
    return np.asarray(y).astype(np.int64)


LOSSES: dict[str, Loss] = {
    "mse": Loss("mse", _mse_value, _mse_grad, "real"),
    "logistic": Loss("logistic", _logistic_value, _logistic_grad, "pm1"),
    "xent": Loss("xent", _xent_value, _xent_grad, "class"),
}


def get_loss(spec: str | Loss) -> Loss:
    """Return the :class:`Loss` named by ``spec`` (or ``spec`` itself)."""
    if isinstance(spec, Loss):
        return spec
    return LOSSES[check_choice("loss", spec, sorted(LOSSES), hint=" or a zlimit.Loss")]
