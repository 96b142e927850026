"""The model description shared by the infinite-width engine and finite networks.

:class:`MLP` fixes everything of maths §1 except the width: depth L, activation φ,
loss ℓ and reduction r, base learning rate η, and the per-layer multipliers σ_l
(init) and c_l (learning rate), l = 1..L+1; and the extensions of maths §6: k outputs,
biases (σ_{b,l}, c_{b,l}), heavy-ball momentum β and decoupled weight decay λ. Batch schedules live here too; the
argument and data checks every consumer shares are in :mod:`zlimit._validate`.
"""
from __future__ import annotations

import html
import math
import numbers
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from ._activations import Activation, get_activation
from ._losses import Loss, get_loss
from ._memory import require_memory
from ._validate import check_choice, check_float, check_int, check_seed

__all__ = ["MLP", "check_model", "batch_schedule", "error_signal", "total_loss", "accumulate", "MAX_DEPTH",
           "MAX_INIT_STD", "MAX_OUTPUTS"]

REDUCTIONS = ("mean", "sum")
#: the deepest model accepted: every layer costs a weight matrix and features per step,
#: and far deeper nets are beyond what a finite net or the limit can train
MAX_DEPTH = 10_000
#: the most outputs (classes) accepted
MAX_OUTPUTS = 100_000
#: the largest init_std whose square, the initial variance σ², is a finite float
MAX_INIT_STD = math.sqrt(sys.float_info.max)


def _per_layer(name: str, value, depth: int, hi: float = math.inf, why: str = "", of: str = "weight matrix W"
               ) -> tuple[float, ...]:
    """Broadcast a number in [0, hi], or check a sequence (list, tuple, 1-d array) of L+1
    of them, into a tuple of L+1 floats; ``why`` says what the upper bound is for and
    ``of`` names the parameters ("weight matrix W", "bias b")."""
    per_layer = f" or a sequence of depth+1 = {depth + 1} of them (one per {of}^1..{of[-1]}^{depth + 1})"
    sequence = isinstance(value, np.ndarray) and value.ndim == 1 or (
        isinstance(value, Sequence) and not isinstance(value, (str, bytes)))
    if isinstance(value, np.ndarray) and value.ndim > 1:
        raise ValueError(f"{name} must be a finite number >= 0{per_layer}, got an array of shape {value.shape}")
    if not sequence:  # a number (NaN, bools, ... refused as such) or something else, told about sequences
        number = isinstance(value, (numbers.Real, np.ndarray))
        return (_at_most(name, check_float(name, value, 0, hint="" if number else per_layer), hi, why),) * (depth + 1)
    values = list(value)
    if len(values) != depth + 1:
        raise ValueError(f"{name} must be a finite number >= 0{per_layer}, got {len(values)} entries")
    return tuple(_at_most(f"{name}[{k}]", check_float(f"{name}[{k}]", v, 0), hi, why) for k, v in enumerate(values))


def _at_most(name: str, value: float, hi: float, why: str) -> float:
    if value > hi:
        raise ValueError(f"{name} must be at most {hi!r} ({why}), got {value!r} (out of range)")
    return value


def _layer_rates(lr: float, mult: tuple[float, ...], name: str = "lr_mult") -> tuple[float, ...]:
    """η_l = lr · lr_mult[l], refused when the product overflows or underflows to 0."""
    eta = tuple(lr * c for c in mult)
    for k, (c, e) in enumerate(zip(mult, eta)):
        if not math.isfinite(e) or (c > 0 and e == 0):
            raise ValueError(f"lr * {name}[{k}] must be a finite positive learning rate (or 0 where {name} is "
                             f"0), got {lr!r} * {c!r} = {e!r}; scale lr or {name}")
    return eta


def _check_outputs(loss: Loss, k: int) -> None:
    """The loss and the number of outputs agree (maths §6)."""
    if loss.labels == "class" and k < 2:
        raise ValueError(f"loss {loss.name!r} (softmax cross-entropy) needs outputs >= 2 classes, got outputs = {k}")
    if loss.labels == "pm1" and k != 1:
        raise ValueError(f"loss {loss.name!r} takes one output (labels ±1), got outputs = {k}; "
                         'use loss="xent" for several classes')


def _check_optimiser(lr: float, momentum, weight_decay) -> tuple[float, float]:
    """β in [0, 1) and λ >= 0 with lr·λ < 1 (maths §6); returns (β, ρ = 1 − lr·λ)."""
    beta = check_float("momentum", momentum, 0)
    if beta >= 1:
        raise ValueError(f"momentum must be in [0, 1) (the heavy-ball β), got {beta!r}")
    lam = check_float("weight_decay", weight_decay, 0)
    if not lr * lam < 1:
        raise ValueError(f"lr * weight_decay must be below 1 (the decay factor 1 − lr·weight_decay must stay "
                         f"positive), got {lr!r} * {lam!r} = {lr * lam!r}; lower weight_decay")
    return beta, 1.0 - lr * lam


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
        ``"mse"`` (ℓ = (f-y)²/2, summed over k outputs), ``"logistic"`` (ℓ = log(1+e^{-yf}),
        labels ±1, one output) or ``"xent"`` (softmax cross-entropy ℓ = −log softmax(f)_y,
        class labels in [0, k), k >= 2 outputs).
    reduction : {"mean", "sum"}
        r = 1/|B_t| or 1 in the error signal χ (maths §1).
    lr : float
        Base learning rate η > 0.
    init_std : float or sequence of L+1 floats
        σ_l >= 0, l = 1..L+1 (a list, tuple or 1-d array), at most 1.34e154 so that
        σ_l² is a finite float. The default σ_l = 1 is *not* the σ = √2 of the paper
        (arXiv:2503.09565); pass ``init_std=2**0.5`` to match it.
    lr_mult : float or sequence of L+1 floats
        c_l >= 0; the layer learning rates are η_l = η c_l, each of which must be a
        finite float (positive where c_l > 0).
    outputs : int
        k >= 1 outputs (maths §6). With k > 1, outputs f have shape (M, k); "mse"
        takes targets of shape (m, k) and "xent" class labels in [0, k) of shape (m,).
    bias_std : None, float or sequence of L+1 floats
        None: no biases. A float σ_b: hidden biases b^1..b^L start N(0, σ_b²) and the
        output bias b^{L+1} starts at 0. L+1 floats: the last is the output bias's
        init std, which only finite nets accept (the limit needs 0, maths §6).
    bias_lr_mult : float or sequence of L+1 floats
        c_{b,l} >= 0, the biases' learning-rate multipliers (needs ``bias_std``).
    momentum : float
        Heavy-ball β in [0, 1), torch.optim.SGD's convention (dampening 0).
    weight_decay : float
        Decoupled weight decay λ >= 0: every parameter p ← (1 − η λ) p each step, with
        the base learning rate η; η λ < 1.

    Raises
    ------
    ValueError
        One line naming the argument. Every argument is checked, none converted:
        ``depth`` is an integer in [1, 10 000] (``MAX_DEPTH``), numbers are finite
        reals (bools and strings are refused) and names are from the lists above.

    Examples
    --------
    >>> import zlimit
    >>> model = zlimit.MLP(depth=3, activation="tanh", lr=0.1)
    >>> model.sigma, model.eta
    ((1.0, 1.0, 1.0, 1.0), (0.1, 0.1, 0.1, 0.1))
    >>> clf = zlimit.MLP(depth=2, activation="silu", loss="xent", outputs=10, bias_std=0.5, momentum=0.9)
    >>> clf.bias_sigma, clf.decay
    ((0.5, 0.5, 0.0), 1.0)

    The repr shows depth, activation, loss and lr, and the arguments that differ from
    their defaults (here the paper's σ = √2):

    >>> zlimit.MLP(depth=3, init_std=2**0.5, lr_mult=[1.0, 2.0, 2.0, 1.0])
    MLP(depth=3, activation='tanh', loss='mse', lr=0.1, init_std=1.4142135623730951, lr_mult=(1.0, 2.0, 2.0, 1.0))
    """

    depth: int
    activation: str | Activation = "tanh"
    loss: str | Loss = "mse"
    reduction: str = "mean"
    lr: float = 0.1
    init_std: float | Sequence[float] = 1.0
    lr_mult: float | Sequence[float] = 1.0
    outputs: int = 1
    bias_std: float | Sequence[float] | None = None
    bias_lr_mult: float | Sequence[float] = 1.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    sigma: tuple[float, ...] = field(init=False, repr=False)
    eta: tuple[float, ...] = field(init=False, repr=False)
    #: σ_{b,l}, l = 1..L+1 (zeros without biases)
    bias_sigma: tuple[float, ...] = field(init=False, repr=False)
    #: η c_{b,l}, l = 1..L+1 (zeros without biases)
    bias_eta: tuple[float, ...] = field(init=False, repr=False)
    #: ρ = 1 − η λ, the per-step decay factor of every parameter (maths §6)
    decay: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "depth", check_int("depth", self.depth, 1, MAX_DEPTH, hint=" (hidden layers)"))
        object.__setattr__(self, "activation", get_activation(self.activation))
        object.__setattr__(self, "loss", get_loss(self.loss))
        object.__setattr__(self, "reduction", check_choice("reduction", self.reduction, REDUCTIONS))
        lr = check_float("lr", self.lr, 0, lo_open=True)
        object.__setattr__(self, "lr", lr)
        sigma = _per_layer("init_std", self.init_std, self.depth, MAX_INIT_STD,
                           "its square σ² must be a finite float")
        mult = _per_layer("lr_mult", self.lr_mult, self.depth)
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "eta", _layer_rates(lr, mult))
        # store the broadcast values, so equal models compare equal however they were written
        object.__setattr__(self, "init_std", sigma)
        object.__setattr__(self, "lr_mult", mult)
        self._extensions(lr)

    def _extensions(self, lr: float) -> None:
        """Check and store the maths §6 arguments: outputs, biases, momentum, weight decay."""
        k = check_int("outputs", self.outputs, 1, MAX_OUTPUTS, hint=" (classes)")
        _check_outputs(self.loss, k)
        L = self.depth
        bias_mult = _per_layer("bias_lr_mult", self.bias_lr_mult, L, of="bias b")
        if self.bias_std is None:
            if any(c != 1.0 for c in bias_mult):
                raise ValueError("bias_lr_mult applies only with biases; give bias_std (e.g. bias_std=1.0) or "
                                 "remove bias_lr_mult")
            bias_sigma, bias_eta = (0.0,) * (L + 1), (0.0,) * (L + 1)
        else:
            bias_sigma = _per_layer("bias_std", self.bias_std, L, MAX_INIT_STD, "its square must be a finite "
                                    "float", of="bias b")
            if np.ndim(self.bias_std) == 0:  # one σ_b: the hidden biases; the output bias starts at 0 (maths §6)
                bias_sigma = bias_sigma[:L] + (0.0,)
            bias_eta = _layer_rates(lr, bias_mult, "bias_lr_mult")
            object.__setattr__(self, "bias_std", bias_sigma)
        beta, rho = _check_optimiser(lr, self.momentum, self.weight_decay)
        for name, value in (("outputs", k), ("bias_lr_mult", bias_mult), ("momentum", beta),
                            ("weight_decay", float(self.weight_decay)), ("bias_sigma", bias_sigma),
                            ("bias_eta", bias_eta), ("decay", rho)):
            object.__setattr__(self, name, value)

    def _differences(self) -> list[tuple[str, object]]:
        """(name, value) of depth, activation, loss, lr and every other argument that differs
        from its default; per-layer values as one number when they are all equal."""
        shown: list[tuple[str, object]] = [("depth", self.depth), ("activation", self.activation.name),
                                           ("loss", self.loss.name), ("lr", self.lr)]
        for f in fields(self):
            if not f.init or f.name in ("depth", "activation", "loss", "lr"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, tuple) and len(set(value)) == 1 and f.name != "bias_std":
                value = value[0]
            if value != f.default:
                shown.append((f.name, value))
        return shown

    def __repr__(self) -> str:
        """``MLP(depth=..., activation=..., loss=..., lr=..., <arguments that differ from the
        defaults>)``; per-layer sequences longer than 8 are elided, so it stays one line."""
        return "MLP(" + ", ".join(f"{name}={brief(value)}" for name, value in self._differences()) + ")"

    def _repr_html_(self) -> str:
        """A small HTML table of every argument (Jupyter's display of the model).

        Examples
        --------
        >>> print(MLP(depth=2, momentum=0.9)._repr_html_())  # doctest: +ELLIPSIS
        <div><strong>MLP</strong><table><tr><th ...>depth L</th><td ...>2</td></tr>...momentum β...0.9...</table></div>
        """
        rows = [("depth L", self.depth), ("activation φ", self.activation.name),
                ("loss ℓ", f"{self.loss.name} ({self.reduction})"), ("lr η", self.lr),
                ("init_std σ_l", self.init_std), ("lr_mult c_l", self.lr_mult), ("outputs k", self.outputs),
                ("bias_std σ_b,l", "no biases" if self.bias_std is None else self.bias_std),
                ("bias_lr_mult c_b,l", self.bias_lr_mult), ("momentum β", self.momentum),
                ("weight_decay λ", self.weight_decay)]
        return html_table("MLP", [(label, brief(value, quote=False)) for label, value in rows])

    @property
    def has_bias(self) -> bool:
        """Whether the model has biases (``bias_std`` is not None).

        Examples
        --------
        >>> MLP(depth=2).has_bias, MLP(depth=2, bias_std=0.5).has_bias
        (False, True)
        """
        return self.bias_std is not None

    def describe(self) -> dict:
        """Plain-data description (names and numbers), as saved in result files.

        Examples
        --------
        >>> MLP(depth=1, activation="relu", lr=0.5).describe()  # doctest: +NORMALIZE_WHITESPACE
        {'depth': 1, 'activation': 'relu', 'loss': 'mse', 'reduction': 'mean', 'lr': 0.5, 'init_std': [1.0, 1.0],
         'lr_mult': [1.0, 1.0], 'outputs': 1, 'bias_std': None, 'bias_lr_mult': [1.0, 1.0], 'momentum': 0.0,
         'weight_decay': 0.0}
        """
        return {
            "depth": self.depth,
            "activation": self.activation.name,
            "loss": self.loss.name,
            "reduction": self.reduction,
            "lr": self.lr,
            "init_std": list(self.init_std),
            "lr_mult": list(self.lr_mult),
            "outputs": self.outputs,
            "bias_std": None if self.bias_std is None else list(self.bias_std),
            "bias_lr_mult": list(self.bias_lr_mult),
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
        }

    def reduction_factor(self, batch_size: int) -> float:
        """r of maths §1: 1 for "sum", 1/|B_t| for "mean".

        Examples
        --------
        >>> MLP(depth=1).reduction_factor(4), MLP(depth=1, reduction="sum").reduction_factor(4)
        (0.25, 1.0)
        """
        return 1.0 / batch_size if self.reduction == "mean" else 1.0


def elide(values: Sequence, most: int = 8) -> str:
    """The entries' reprs joined by commas; more than ``most`` of them lose their middle,
    and the count follows.

    >>> elide([0, 5]), elide(range(20))
    ('0, 5', '0, 1, 2, …, 17, 18, 19 (20 values)')
    """
    shown = [repr(v) for v in values]
    if len(shown) <= most:
        return ", ".join(shown)
    return f"{', '.join(shown[:3])}, …, {', '.join(shown[-3:])} ({len(shown)} values)"


def brief(value, most: int = 8, quote: bool = True) -> str:
    """``repr`` of a value (``str`` when not ``quote``); a tuple or list as a tuple,
    :func:`elide`d when it has more than ``most`` entries.

    >>> brief((1.0,) * 3), brief(tuple(range(20))), brief("tanh"), brief("tanh", quote=False)
    ('(1.0, 1.0, 1.0)', '(0, 1, 2, …, 17, 18, 19 (20 values))', "'tanh'", 'tanh')
    """
    if isinstance(value, (tuple, list)):
        return repr(tuple(value)) if len(value) <= most else f"({elide(value, most)})"
    return repr(value) if quote else str(value)


def summary_text(title: str, rows: list[tuple[str, str]]) -> str:
    """``title`` above the (label, text) rows, labels aligned: the ``__repr__`` of the
    package's results.

    >>> print(summary_text("A", [("x", "1"), ("long", "2")]))
    A
      x     1
      long  2
    """
    width = max((len(label) for label, _ in rows), default=0)
    return "\n".join([title] + [f"  {label:<{width}}  {text}" for label, text in rows])


def safe_summary(summary, name: str) -> tuple[str, list[tuple[str, str]]]:
    """``summary()``, or a title and one line saying why it failed: a display never raises.

    >>> safe_summary(lambda: 1 / 0, "Run")
    ('Run', [('summary', 'unavailable (ZeroDivisionError: division by zero)')])
    """
    try:
        return summary()
    except Exception as exc:  # noqa: BLE001 (a repr must not raise, whatever the fields hold)
        return name, [("summary", f"unavailable ({type(exc).__name__}: {exc})"[:200])]


def html_table(title: str, rows: list[tuple[str, str]]) -> str:
    """``title`` in bold above a two-column table of (label, text), escaped: the
    ``_repr_html_`` of the package's objects.

    >>> html_table("A", [("x", "1 < 2")])
    "<div><strong>A</strong><table><tr><th style='text-align:left'>x</th><td style='text-align:left'>1 &lt; 2</td></tr></table></div>"
    """
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(label)}</th>"
                   f"<td style='text-align:left'>{html.escape(text)}</td></tr>" for label, text in rows)
    return f"<div><strong>{html.escape(title)}</strong><table>{body}</table></div>"


def check_model(model) -> MLP:
    """``model`` if it is an :class:`MLP`, else a ValueError saying what to pass."""
    if not isinstance(model, MLP):
        raise ValueError(f"model must be a zlimit.MLP (e.g. zlimit.MLP(depth=3)), got {type(model).__name__}")
    return model


def batch_schedule(m: int, batch_size: int, steps: int, seed: int = 0) -> list[np.ndarray]:
    """Shuffled epochs of minibatches, one index array per step.

    Each epoch is a fresh random permutation of 0..m-1 cut into consecutive batches
    of ``batch_size``; a last short batch of an epoch is dropped unless
    ``batch_size`` divides m. The same list drives :func:`zlimit.train_finite` and
    :func:`zlimit.simulate`.

    Parameters
    ----------
    m : int
        Training inputs, m >= 1.
    batch_size : int
        Inputs per batch, in [1, m].
    steps : int
        Batches to draw, >= 0.
    seed : int
        Seed of ``np.random.default_rng``, in [0, 2**64).

    Returns
    -------
    list of ``steps`` sorted int64 arrays of ``batch_size`` distinct indices in [0, m).

    Raises
    ------
    ValueError
        An argument of the wrong type or out of range, naming it.
    ResourceError
        When the list (and a permutation of m) would not fit in the memory available.

    Examples
    --------
    >>> import zlimit
    >>> batches = zlimit.batch_schedule(5, 2, 3, seed=0)  # 2 batches per epoch, input 5 of each dropped
    >>> [len(b) for b in batches], len(set(batches[0]) | set(batches[1]))
    ([2, 2, 2], 4)
    >>> zlimit.batch_schedule(4, 4, 2)[1].tolist()  # full batches: every input every step
    [0, 1, 2, 3]
    """
    m, batch_size, steps = check_int("m", m, 1), check_int("batch_size", batch_size, 1), check_int("steps", steps, 0)
    if batch_size > m:
        raise ValueError(f"batch_size = {batch_size} exceeds the number of training inputs m = {m}")
    rng = np.random.default_rng(check_seed("seed", seed))
    # a permutation of the m inputs, and per step an index array and its slot in the list
    require_memory(8 * m + steps * (sys.getsizeof(np.empty(0, np.int64)) + 8 * batch_size + 8),
                   f"steps = {steps} batches of batch_size = {batch_size} (from m = {m} inputs)")
    per_epoch = m // batch_size
    out: list[np.ndarray] = []
    while len(out) < steps:
        perm = rng.permutation(m)
        for k in range(per_epoch):
            out.append(np.sort(perm[k * batch_size:(k + 1) * batch_size]).astype(np.int64))
    return out[:steps]


def error_signal(model: MLP, f_train: np.ndarray, y: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """χ_{t,i(,c)} = r ∂ℓ/∂f^c(f_t(ξ_i), y_i) 1{i ∈ B_t} (maths §1, §6), the shape of
    ``f_train``: (m,), or (m, k) with k > 1 outputs. "mean" divides by |B_t|, never by k."""
    chi = np.zeros_like(f_train)
    chi[batch] = model.reduction_factor(len(batch)) * model.loss.grad(f_train[batch], y[batch])
    return chi


def total_loss(model: MLP, f_train: np.ndarray, y: np.ndarray) -> float:
    """Full training loss: mean (or sum, per ``reduction``) over all m inputs of ℓ, itself
    summed over the outputs for an elementwise loss of k > 1 outputs (maths §6)."""
    values = model.loss.value(f_train, y)
    if values.ndim == 2:
        values = values.sum(axis=1)
    return float(values.mean() if model.reduction == "mean" else values.sum())


def accumulate(X: np.ndarray, V: np.ndarray | None, G: np.ndarray, beta: float, rho: float, rows=slice(None)
               ) -> None:
    """One step of an accumulator and its velocity, in place (maths §6):

        V ← β V + G,   then   X ← ρ X + V.

    With β = 0 no velocity is kept (``V`` may be None) and X ← ρ X + G; with ρ = 1
    too this is ``X[rows] += G``, bit for bit plain SGD. X and V share a shape; G
    broadcasts to ``X[rows]``: the new term touches those rows only (other rows keep
    moving by their velocity and decay).

    >>> X, V = np.zeros(2), np.zeros(2)
    >>> for _ in range(2):
    ...     accumulate(X, V, np.ones(2), 0.5, 1.0)
    >>> X.tolist(), V.tolist()  # V: 1, then 1.5; X: 1, then 2.5
    ([2.5, 2.5], [1.5, 1.5])
    """
    if beta:
        V *= beta
        V[rows] += G
        G, rows = V, slice(None)
    if rho != 1.0:
        X *= rho
    X[rows] += G
