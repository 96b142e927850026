"""The model description shared by the infinite-width engine and finite networks.

:class:`MLP` fixes everything of maths §1 except the width: depth L, activation φ,
loss ℓ and reduction r, base learning rate η, and the per-layer multipliers σ_l
(init) and c_l (learning rate), l = 1..L+1. Data checks and batch schedules live
here too, so that every consumer validates input the same way.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ._activations import Activation, get_activation
from ._losses import Loss, get_loss

__all__ = ["MLP", "batch_schedule", "check_data", "check_batches", "error_signal", "total_loss"]

REDUCTIONS = ("mean", "sum")


def check_int(name: str, value, lo: int) -> int:
    """``value`` as an int >= ``lo``, or a ValueError naming ``name`` (bools are refused)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}") from None
    if value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def _per_layer(name: str, value, depth: int) -> tuple[float, ...]:
    """Broadcast a float or a sequence of L+1 floats to a tuple of L+1 floats."""
    if np.ndim(value) == 0:
        values = (value,) * (depth + 1)
    else:
        values = tuple(value)
        if len(values) != depth + 1:
            raise ValueError(
                f"{name} must be one float or a sequence of depth+1 = {depth + 1} floats "
                f"(one per weight matrix W^1..W^{depth + 1}), got {len(values)}"
            )
    out = []
    for v in values:
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name} entries must be numbers, got {v!r}") from None
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} entries must be finite and >= 0, got {v}")
        out.append(v)
    return tuple(out)


@dataclass(frozen=True)
class MLP:
    """An L-hidden-layer MLP trained by SGD, described independently of its width.

    Parameters
    ----------
    depth : int
        L >= 1, the number of hidden layers (weight matrices W^1..W^{L+1}).
    activation : str or Activation
        One of ``tanh, sigmoid, silu, gelu, softplus, relu, linear``, or an
        :class:`~zlimit.Activation`.
    loss : str or Loss
        ``"mse"`` (ℓ = (f-y)²/2) or ``"logistic"`` (ℓ = log(1+e^{-yf}), labels ±1).
    reduction : {"mean", "sum"}
        r = 1/|B_t| or 1 in the error signal χ (maths §1).
    lr : float
        Base learning rate η > 0.
    init_std : float or sequence of L+1 floats
        σ_l, l = 1..L+1.
    lr_mult : float or sequence of L+1 floats
        c_l; the layer learning rates are η_l = η c_l.

    Examples
    --------
    >>> import zlimit
    >>> model = zlimit.MLP(depth=3, activation="tanh", lr=0.1)
    >>> model.sigma, model.eta
    ((1.0, 1.0, 1.0, 1.0), (0.1, 0.1, 0.1, 0.1))
    """

    depth: int
    activation: str | Activation = "tanh"
    loss: str | Loss = "mse"
    reduction: str = "mean"
    lr: float = 0.1
    init_std: float | Sequence[float] = 1.0
    lr_mult: float | Sequence[float] = 1.0
    sigma: tuple[float, ...] = field(init=False, repr=False)
    eta: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.depth, bool) or not isinstance(self.depth, (int, np.integer)) or self.depth < 1:
            raise ValueError(f"depth must be an integer >= 1 (hidden layers), got {self.depth!r}")
        object.__setattr__(self, "depth", int(self.depth))
        object.__setattr__(self, "activation", get_activation(self.activation))
        object.__setattr__(self, "loss", get_loss(self.loss))
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        try:
            lr = float(self.lr)
        except (TypeError, ValueError):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}") from None
        if not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        object.__setattr__(self, "lr", lr)
        sigma = _per_layer("init_std", self.init_std, self.depth)
        mult = _per_layer("lr_mult", self.lr_mult, self.depth)
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "eta", tuple(lr * c for c in mult))
        # store the broadcast values, so equal models compare equal however they were written
        object.__setattr__(self, "init_std", sigma)
        object.__setattr__(self, "lr_mult", mult)

    def describe(self) -> dict:
        """Plain-data description (names and numbers), as saved in result files."""
        return {
            "depth": self.depth,
            "activation": self.activation.name,
            "loss": self.loss.name,
            "reduction": self.reduction,
            "lr": self.lr,
            "init_std": list(self.sigma),
            "lr_mult": [e / self.lr for e in self.eta],
        }

    def reduction_factor(self, batch_size: int) -> float:
        """r of maths §1: 1 for "sum", 1/|B_t| for "mean"."""
        return 1.0 / batch_size if self.reduction == "mean" else 1.0


def check_data(model: MLP, X, y, X_eval=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and convert training and evaluation data.

    Parameters
    ----------
    X : array_like, shape (m, d)
    y : array_like, shape (m,)
    X_eval : array_like, shape (m_eval, d), optional

    Returns
    -------
    X, y, X_eval : float64 arrays; ``X_eval`` has shape (0, d) when not given.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"X must have shape (m, d) with m, d >= 1, got shape {X.shape}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape (m,) = ({X.shape[0]},) to match X, got {y.shape}")
    if X_eval is None:
        X_eval = np.zeros((0, X.shape[1]))
    X_eval = np.asarray(X_eval, dtype=np.float64)
    if X_eval.ndim != 2 or X_eval.shape[1] != X.shape[1]:
        raise ValueError(
            f"X_eval must have shape (m_eval, d) with d = {X.shape[1]} as in X, got {X_eval.shape}"
        )
    for name, arr in (("X", X), ("y", y), ("X_eval", X_eval)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or inf; clean or drop those entries")
    if model.loss.labels == "pm1" and not np.all(np.isin(y, (-1.0, 1.0))):
        raise ValueError(f"loss {model.loss.name!r} needs labels in {{-1, +1}}; got values {np.unique(y)[:5]}")
    return X, y, X_eval


def check_batches(batches, m: int, steps: int) -> list[np.ndarray]:
    """Validate a batch schedule; ``None`` means full batch at every step.

    Returns
    -------
    list of ``steps`` sorted int64 arrays of distinct indices in [0, m).
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if batches is None:
        return [np.arange(m)] * int(steps)
    batches = list(batches)
    if len(batches) < steps:
        raise ValueError(f"batches has {len(batches)} entries but steps = {steps}; give one index array per step")
    out = []
    for t, b in enumerate(batches[:steps]):
        b = np.asarray(b)
        if b.ndim != 1 or b.size == 0 or not np.issubdtype(b.dtype, np.integer):
            raise ValueError(f"batches[{t}] must be a non-empty 1-d array of integer indices, got {b!r}")
        if b.min() < 0 or b.max() >= m:
            raise ValueError(f"batches[{t}] has indices outside [0, {m}) (m = number of training inputs)")
        if np.unique(b).size != b.size:
            raise ValueError(f"batches[{t}] repeats an index; a batch is a set of training inputs")
        out.append(np.sort(b).astype(np.int64))
    return out


def batch_schedule(m: int, batch_size: int, steps: int, seed: int = 0) -> list[np.ndarray]:
    """Shuffled epochs of minibatches, one index array per step.

    Each epoch is a fresh random permutation of 0..m-1 cut into consecutive batches
    of ``batch_size``; a last short batch of an epoch is dropped unless
    ``batch_size`` divides m. The same list drives :func:`zlimit.train_finite` and
    :func:`zlimit.simulate`.

    Examples
    --------
    >>> import zlimit
    >>> [b.tolist() for b in zlimit.batch_schedule(4, 2, 3, seed=0)]  # doctest: +SKIP
    [[1, 3], [0, 2], [0, 1]]
    """
    for name, v, lo in (("m", m, 1), ("batch_size", batch_size, 1), ("steps", steps, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if batch_size > m:
        raise ValueError(f"batch_size = {batch_size} exceeds the number of training inputs m = {m}")
    rng = np.random.default_rng(seed)
    per_epoch = m // batch_size
    out: list[np.ndarray] = []
    while len(out) < steps:
        perm = rng.permutation(m)
        for k in range(per_epoch):
            out.append(np.sort(perm[k * batch_size:(k + 1) * batch_size]).astype(np.int64))
    return out[:steps]


def error_signal(model: MLP, f_train: np.ndarray, y: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """χ_{t,i} = r ∂ℓ/∂f(f_t(ξ_i), y_i) 1{i ∈ B_t} (maths §1), shape (m,)."""
    chi = np.zeros_like(f_train)
    chi[batch] = model.reduction_factor(len(batch)) * model.loss.grad(f_train[batch], y[batch])
    return chi


def total_loss(model: MLP, f_train: np.ndarray, y: np.ndarray) -> float:
    """Full training loss: mean (or sum, per ``reduction``) of ℓ over all m inputs."""
    values = model.loss.value(f_train, y)
    return float(values.mean() if model.reduction == "mean" else values.sum())
