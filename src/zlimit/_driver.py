"""One SGD driver for every producer of a :class:`~zlimit.Run` (maths §1–§2, the time loop).

Four producers follow the same loop — the Monte Carlo limit (a particle group of
:mod:`zlimit._engine`), the exact linear limit (:mod:`zlimit._exact`), the NTK limit
(:mod:`zlimit._ntk`) and a finite network (:mod:`zlimit._finite`) — and differ only
in how they represent features. Each is a :class:`State`; :func:`run_sgd` drives it
and a :class:`Recorder` turns what it produces into the arrays of ``Run``.

At step t = 0..T (maths §2):

1. forward pass on all inputs: features Z^{h^l_t}, Z^{x^l_t} and f_t (``State.forward``);
2. the training loss and, for t < T, the error signals χ_{t,i} = r ℓ'(f_t(ξ_i), y_i)
   1{i ∈ B_t} (:func:`zlimit._model.error_signal`), computed here once for all producers;
3. backward pass on the batch (``State.backward``) and the update (``State.update``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from ._checkpoint import restore_into
from ._errors import DivergenceError, DivergenceWarning
from ._model import MLP, error_signal, total_loss
from ._keys import key
from ._results import Run

__all__ = ["Forward", "Backward", "State", "Recorder", "run_sgd", "assemble", "diverged", "moment_sums",
           "FEATURES", "LOSS_GROWTH"]

#: the kinds of feature kernels, in the keys of ``Run.kernels`` (see :func:`zlimit._results.key`)
FEATURES = ("h", "x")
#: warn when the training loss exceeds its step-0 value this many times
LOSS_GROWTH = 100.0


@dataclass
class Forward:
    """What a forward pass produces (rows are inputs, training first).

    hs, xs : lists of L arrays (r, ·): Z^{h^l_t} and Z^{x^l_t} in the state's
        representation (particles, coefficient vectors or width-n vectors); r = M
        inputs, or m for a state that adds its evaluation inputs afterwards.
    f : (r,) f_t, or (r, k) with k > 1 outputs (maths §6).
    novelty, dropped : {l: (r,)} residual norms against the forward Gaussian basis of
        W^l and the truncated mass of maths §3 (limit states only).
    moments : (L, 2, r, 2) or None
        The first moments of the features, ``[l-1, kind, a] = (E[Z], E|Z|)`` of
        Z^{h^l_t(ξ_a)} (kind 0) and Z^{x^l_t(ξ_a)} (kind 1). None: the rows of ``hs``
        and ``xs`` are width-n vectors or all the particles of a group, and the moments
        are their means over the last axis (:func:`moment_sums` / n), which the
        recorder takes. A state whose rows are anything else (particles split over MPI
        ranks, coefficient vectors) gives them.
    """

    hs: list
    xs: list
    f: np.ndarray
    novelty: dict = field(default_factory=dict)
    dropped: dict = field(default_factory=dict)
    moments: np.ndarray | None = None


@dataclass
class Backward:
    """What a backward pass produces: ``dh`` the L kernels E[Z^{dh^l_t(ξ_i)} Z^{dh^l_t(ξ_j)}]
    on the batch, (b, b) each; ``novelty`` and ``dropped`` as in :class:`Forward`, "bwd<l>"."""

    dh: list
    novelty: dict = field(default_factory=dict)
    dropped: dict = field(default_factory=dict)


class State(Protocol):
    """A network (finite or a limit) being trained by SGD.

    ``label`` names it in error messages (" (group 3)", " at width 64 (mup)");
    ``gram(a, b)`` is E[Z^a Z^b] for two row stacks of features, (r, ·) × (s, ·) → (r, s);
    ``exact_eval_cross`` tells whether cross-step kernels of evaluation inputs in
    layers >= 2 are exact (else the recorder leaves them NaN; see :class:`Recorder`).
    """

    label: str
    exact_eval_cross: bool

    def forward(self, t: int) -> Forward: ...

    def backward(self, batch: np.ndarray, chi: np.ndarray) -> Backward: ...

    def update(self, batch: np.ndarray, chi: np.ndarray) -> None: ...

    def gram(self, a: np.ndarray, b: np.ndarray) -> np.ndarray: ...

    def snapshot(self) -> dict[str, np.ndarray]:
        """Every array the next steps read, by name (for a checkpoint)."""

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Set the state to a :meth:`snapshot` of the same run."""


def moment_sums(hs: list, xs: list) -> np.ndarray:
    """Σ_p v_p and Σ_p |v_p| over the last axis of every row of the features, float64.

    Parameters
    ----------
    hs, xs : lists of L arrays (r, n): Z^{h^l} and Z^{x^l}, one input per row (width-n
        vectors or particles).

    Returns
    -------
    ndarray (L, 2, r, 2)
        ``[l-1, 0]`` from ``hs[l-1]``, ``[l-1, 1]`` from ``xs[l-1]``; divided by n they
        are the moments of :class:`Forward` (E[Z], E|Z|).

    Examples
    --------
    >>> moment_sums([np.array([[1.0, -3.0]])], [np.array([[0.5, 0.0]])]).tolist()
    [[[[-2.0, 4.0]], [[0.5, 0.5]]]]
    """
    sums = [np.stack([v.sum(axis=1, dtype=np.float64), np.abs(v).sum(axis=1, dtype=np.float64)], axis=-1)
            for h, x in zip(hs, xs) for v in (h, x)]
    return np.stack(sums).reshape(len(hs), 2, *sums[0].shape)


def diverged(what: str, t: int, state: State, model: MLP) -> DivergenceError:
    """The one error a diverging run raises, naming the step and what to change.

    At step 0 nothing has been trained yet, so a non-finite value there comes from the
    data or the initialisation, and the message says so.
    """
    if t == 0:
        return DivergenceError(f"the {what}{state.label} is non-finite at step 0, before any training: "
                               "the inputs or targets are too large; rescale them (or lower init_std or bias_std)")
    return DivergenceError(f"the {what}{state.label} became non-finite at step {t}: training diverged; "
                           f"use a smaller lr (now {model.lr:g}) or lr_mult")


def _check_finite(values: np.ndarray, what: str, t: int, state: State, model: MLP) -> None:
    if not np.all(np.isfinite(values)):
        raise diverged(what, t, state, model)


class Recorder:
    """One trajectory (one group, seed or exact trace) in the layout of :class:`~zlimit.Run`.

    Arrays are NaN until written: ``outputs`` (T+1, M), ``loss`` (T+1,), ``chi`` (T, m)
    (zero outside the batch) — with k = ``outputs`` > 1, (T+1, M, k) and (T, m, k) — ``kernels[key(kind, l)]`` (T+1, M, M) for kinds h, x and
    (T, m, m) for dh, ``cross[key(kind, l)]`` (R, T+1, M, M) for the R record steps s
    (E[Z_s Z_t'], t >= s), ``moments[key(kind, l)]`` (T+1, M, 2) for kinds h, x
    ((E[Z], E|Z|), :class:`Forward`), ``novelty[key(side, l)]`` (T+1, M) for l >= 2 when the state
    has Gaussian processes (``processes``, the limit engines) and ``bases`` (filled by
    the Monte Carlo engine). A state whose forward pass returns r < M rows writes rows
    0..r−1 and leaves the rest for the producer to add.

    Evaluation inputs in the Monte Carlo engine get fresh Gaussian directions at every
    step, so their Ẑ at step s has the exact joint law with every training Z up to step
    s but not with later steps. Cross-step entries E[Z_s(ξ_e) Z_t(·)], t > s, of an
    evaluation input ξ_e in layers l >= 2 are therefore left NaN rather than reported
    wrong when the state's ``exact_eval_cross`` is False.
    """

    def __init__(self, depth: int, steps: int, m: int, M: int, record_steps: tuple[int, ...],
                 processes: bool = False, outputs: int = 1):
        self.depth, self.steps, self.m, self.M, self.record_steps = depth, steps, m, M, record_steps
        nan = np.nan
        k = () if outputs == 1 else (outputs,)
        self.outputs = np.full((steps + 1, M, *k), nan)
        self.loss = np.full(steps + 1, nan)
        self.chi = np.zeros((steps, m, *k))
        self.kernels, self.cross, self.moments, self.novelty, self.bases, self.kept = {}, {}, {}, {}, {}, {}
        self.extras: dict[str, np.ndarray] = {}  # a producer's own per-trajectory arrays (checkpointed)
        for l in range(1, depth + 1):
            for kind in FEATURES:
                self.kernels[key(kind, l)] = np.full((steps + 1, M, M), nan)
                self.cross[key(kind, l)] = np.full((len(record_steps), steps + 1, M, M), nan)
                self.moments[key(kind, l)] = np.full((steps + 1, M, 2), nan)
            self.kernels[key("dh", l)] = np.full((steps, m, m), nan)
            if processes and l >= 2:  # the Gaussian processes of W^l: novelty of every vector entered
                for side in ("fwd", "bwd"):
                    self.novelty[key(side, l)] = np.full((steps + 1, M), nan)

    def forward(self, t: int, fw: Forward, loss: float, state: State, model: MLP) -> None:
        """f_t, the loss, the moments (E[Z], E|Z|) and E[Z Z'] at step t and against the kept
        steps s <= t, and novelty."""
        r = fw.f.shape[0]
        self.outputs[t, :r], self.loss[t] = fw.f, loss
        moments = fw.moments
        if moments is None:  # width-n vectors or a whole group's particles: means over the last axis
            moments = moment_sums(fw.hs, fw.xs) / fw.hs[0].shape[1]
        for l, (h, x) in enumerate(zip(fw.hs, fw.xs), start=1):
            for i, (kind, v) in enumerate((("h", h), ("x", x))):
                k = key(kind, l)
                self.moments[k][t, :r] = moments[l - 1, i]
                if kind == "x" and x is h:  # φ(x) = x stored once (the exact engine): same kernels
                    self.copy_h_to_x(t, l)
                    continue
                K = state.gram(v, v)
                _check_finite(K, f"layer-{l} features {kind}", t, state, model)
                self.kernels[k][t, :r, :r] = K
                if t in self.record_steps:
                    self.kept[(k, t)] = v.copy()
                for i, s in enumerate(self.record_steps):
                    if s <= t:
                        C = self.cross[k][i, t]
                        C[:r, :r] = state.gram(self.kept[(k, s)], v)
                        _check_finite(C[:r, :r], f"layer-{l} cross-step kernel {kind} (against step {s})", t,
                                      state, model)
                        if t > s and l >= 2 and not state.exact_eval_cross:
                            C[self.m:] = np.nan
        self.novel(t, "fwd", fw.novelty, fw.dropped, slice(0, r))

    def copy_h_to_x(self, t: int, l: int) -> None:
        """The x kernels of layer l at step t are its h kernels (a state with Z^x = Z^h)."""
        h, x = key("h", l), key("x", l)
        self.kernels[x][t] = self.kernels[h][t]
        self.cross[x][:, t] = self.cross[h][:, t]
        self.moments[x][t] = self.moments[h][t]

    def backward(self, t: int, batch: np.ndarray, bw: Backward, state: State, model: MLP) -> None:
        """The dh kernels on the batch and the backward novelty at step t."""
        for l, K in enumerate(bw.dh, start=1):
            _check_finite(K, f"layer-{l} backward features dh", t, state, model)
            self.kernels[key("dh", l)][t][np.ix_(batch, batch)] = K
        for l, rho in bw.novelty.items():
            _check_finite(rho, f"layer-{l} backward novelty", t, state, model)
        self.novel(t, "bwd", bw.novelty, bw.dropped, batch)

    def novel(self, t: int, side: str, novelty: dict, dropped: dict, rows) -> None:
        """Residual norms of the vectors added at step t to the ``side`` ("fwd" or "bwd")
        Gaussian processes, and what truncation dropped (maths §3)."""
        for l, rho in novelty.items():
            self.novelty[key(side, l)][t, rows] = rho
        for l, mass in dropped.items():
            self.bases[key(side, l, "dropped")][t] += np.count_nonzero(mass)
            self.bases[key(side, l, "dropped_mass")][t] += mass.sum()

    def snapshot(self) -> dict[str, np.ndarray]:
        """Every array recorded so far, by name (for a checkpoint)."""
        out = {"outputs": self.outputs, "loss": self.loss, "chi": self.chi}
        for part in ("kernels", "cross", "moments", "novelty", "bases", "extras"):
            out.update((f"{part}/{k}", v) for k, v in getattr(self, part).items())
        out.update((f"kept/{k}/{s}", v) for (k, s), v in self.kept.items())
        return out

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Take back a :meth:`snapshot` of the same run: the arrays every recorder has,
        in place (same shapes), and the kept features, bases statistics and extras."""
        fixed = {"outputs": self.outputs, "loss": self.loss, "chi": self.chi}
        fixed.update((f"{part}/{k}", v) for part in ("kernels", "cross", "moments", "novelty")
                     for k, v in getattr(self, part).items())
        restore_into(arrays, fixed, "record")
        self.kept = {}
        for name, v in arrays.items():
            part, _, k = name.partition("/")
            if part == "kept":
                kind, s = k.rsplit("/", 1)
                self.kept[(kind, int(s))] = np.array(v)
            elif part in ("bases", "extras"):
                getattr(self, part)[k] = np.array(v)


def run_sgd(state: State, model: MLP, y: np.ndarray, batches: list, steps: int, recorder: Recorder,
            on_step: Callable[[int, State, Recorder], None] | None = None, start: int = 0) -> Recorder:
    """Train ``state`` for T = ``steps`` SGD steps and record its trajectory.

    Parameters
    ----------
    state : State
    model : MLP
        The loss, reduction and learning rate (for messages) of maths §1.
    y : (m,) training targets ((m, k) for "mse" with k > 1 outputs).
    batches : list of T index arrays B_t.
    recorder : Recorder
    on_step : callable, optional
        ``on_step(t, state, recorder)`` after step t (forward, and for t < T backward
        and update): the place for progress, invariants, checkpoints and timing.
    start : int
        First step to run: 0, or one past the last step of a restored state.

    Raises
    ------
    DivergenceError
        When anything recorded — f_t, the loss, the error signals, a feature, dh or
        cross-step kernel, a novelty — becomes non-finite; the message names it and the step.

    Examples
    --------
    >>> import numpy as np, zlimit
    >>> from zlimit._finite import FiniteState
    >>> model = zlimit.MLP(depth=1, activation="linear", lr=0.5)
    >>> X, y = np.array([[1.0]]), np.array([1.0])
    >>> state = FiniteState(model, X, np.zeros((0, 1)), width=4096, seed=0)
    >>> rec = run_sgd(state, model, y, [np.arange(1)], 1, Recorder(1, 1, 1, 1, (0,)))
    >>> rec.outputs.shape
    (2, 1)
    """
    m = y.shape[0]
    for t in range(start, steps + 1):
        fw = state.forward(t)
        with np.errstate(over="ignore", invalid="ignore"):  # reported just below
            loss = total_loss(model, fw.f[:m], y)
        _check_finite(fw.f, "output f", t, state, model)
        _check_finite(loss, "training loss", t, state, model)
        for l, rho in fw.novelty.items():
            _check_finite(rho, f"layer-{l} forward novelty", t, state, model)
        recorder.forward(t, fw, loss, state, model)
        if t < steps:
            batch = batches[t]
            with np.errstate(over="ignore", invalid="ignore"):
                chi = error_signal(model, fw.f[:m], y, batch)  # χ_{t,i}
            _check_finite(chi, "error signal χ", t, state, model)
            recorder.chi[t] = chi
            recorder.backward(t, batch, state.backward(batch, chi), state, model)
            state.update(batch, chi)
        if on_step is not None:
            on_step(t, state, recorder)
    return recorder


def assemble(model: MLP, meta: dict, recorders: list[Recorder], error_model: str = "groups") -> Run:
    """The :class:`~zlimit.Run` of one or more independent trajectories (the group axis G).

    Warns
    -----
    DivergenceWarning
        When the training loss grew past ``LOSS_GROWTH`` times its step-0 value.
    """
    stack = lambda name: {k: np.stack([getattr(r, name)[k] for r in recorders]) for k in getattr(recorders[0], name)}
    first = recorders[0]
    run = Run(model=model, meta=meta,
              outputs_groups=np.stack([r.outputs for r in recorders]),
              loss_groups=np.stack([r.loss for r in recorders]),
              error_signals_groups=np.stack([r.chi for r in recorders]),
              kernels=stack("kernels"), cross=stack("cross"), record_steps=first.record_steps,
              novelty=stack("novelty"), bases=stack("bases"), error_model=error_model, moments=stack("moments"))
    message = loss_growth(run.loss, model)
    if message:
        warnings.warn(message, DivergenceWarning, stacklevel=4)
    return run


def loss_growth(loss: np.ndarray, model: MLP) -> str:
    """A warning when the training loss (T+1,) passes ``LOSS_GROWTH`` times its step-0
    value (a run on its way to diverging), else "".

    Examples
    --------
    >>> import numpy as np, zlimit
    >>> loss_growth(np.array([0.5, 0.4, 80.0]), zlimit.MLP(depth=1, lr=2.0))[:40]
    'the training loss grew 160x, from 0.5 at'
    """
    if not loss[0] > 0:
        return ""
    over = np.flatnonzero(loss > LOSS_GROWTH * loss[0])
    if not over.size:
        return ""
    t = int(over[0])
    return (f"the training loss grew {loss[t] / loss[0]:.3g}x, from {loss[0]:.3g} at step 0 to {loss[t]:.3g} at "
            f"step {t}: training is diverging; use a smaller lr (now {model.lr:g}) or lr_mult")
