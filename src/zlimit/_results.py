"""The result of a run, finite-width or infinite-width, in one layout.

Every array carries a leading *group* axis G. A finite-width run has G = 1. A limit
run has G independent particle groups (independent simulations of N/G particles
each), so that Monte Carlo standard errors come from the spread between groups and
not from a formula that assumes independence between particles.

Inputs are ordered training first, then evaluation: M = m + m_eval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _codec
from ._keys import key, parse_key
from ._model import MLP, elide, html_table, safe_summary, summary_text
from ._validate import check_int
from ._stats import group_se, interval

__all__ = ["Run", "key", "parse_key"]

KINDS = ("h", "x", "dh")
#: how reprs name a run's parametrization (``meta["parametrization"]``)
PARAMETRIZATION_NAMES = {"mup": "μP", "ntk": "NTP", "ntp": "NTP", "sp": "SP", "ip": "IP"}
#: the longest line of a run's summary (so that a repr fits on one screen whatever meta holds)
_LINE = 240


@dataclass
class Run:
    """Trajectory of one model on one data set.

    Attributes
    ----------
    model : MLP
    meta : dict
        ``kind`` ("limit" or "finite"), seed, steps, m, m_eval and the run's
        settings (width and parametrization, or particles and groups).
    outputs_groups : ndarray, shape (G, T+1, M), or (G, T+1, M, k) with k > 1 outputs
        f_t(ξ_a) per group; f̊_t for a limit run.
    loss_groups : ndarray, shape (G, T+1)
        Full training loss (over all m training inputs, with the model's reduction).
    error_signals_groups : ndarray, shape (G, T, m), or (G, T, m, k) with k > 1 outputs
        χ_{t,i(,c)}; zero outside the batch B_t.
    kernels : dict
        ``"{kind}{l}"`` -> ndarray (G, T+1, M, M), E[Z Z'] at equal steps, for kind
        "h" and "x"; "dh" has shape (G, T, m, m) with NaN outside the batch.
    cross : dict
        ``"{kind}{l}"`` -> ndarray (G, R, T+1, M, M): E[Z_s(ξ_a) Z_t(ξ_b)] for s in
        ``record_steps`` (kinds "h" and "x"). Entries with t < s are NaN. In the Monte
        Carlo limit (``meta["method"] == "mc"``), the entries E[Z_s(ξ_e) Z_t(·)], t > s,
        of an evaluation input ξ_e in layers l >= 2 are NaN as well: evaluation inputs
        get fresh Gaussian directions at every step, so their features at step s have
        the right joint law with every training feature up to step s but not with
        later steps (see :class:`zlimit._driver.Recorder`). Training inputs, layer 1,
        finite nets, the exact limit and the NTK limit have every entry t >= s.
    record_steps : tuple of int
        The steps s whose features were kept for ``cross``; always contains 0.
    novelty : dict
        Limit runs only: ``"fwd{l}"``/``"bwd{l}"`` -> ndarray (G, T+1, M) of residual
        norms ‖ρ‖ of each vector added to the Gaussian process of W^l (maths §3);
        NaN where no vector was added.
    bases : dict
        Limit runs only, per Gaussian process ``{side}{l}`` (``fwd2``, ``bwd2``, ...), each
        (G, T+1): ``size_{side}{l}`` directions held after step t; ``dropped_{side}{l}``
        vectors at step t whose nonzero residual got no direction (‖ρ‖ ≤ basis_tol·‖x‖)
        and ``dropped_mass_{side}{l}`` their Σ(‖ρ‖/‖x‖)², the truncation of maths §3;
        ``orthogonality_{side}{l}`` max|UUᵀ/N − I| where it was checked (NaN elsewhere).
    moments : dict
        ``"{kind}{l}"`` for kinds "h" and "x" -> ndarray (G, T+1, M, 2): the first
        moments of each feature, ``[..., 0]`` = E[Z^{v_t(ξ_a)}] and ``[..., 1]`` =
        E|Z^{v_t(ξ_a)}| (for a finite run the mean and the mean absolute value over the
        n coordinates). With ``kernels`` (the second moments) they give the coordinate
        statistics of :meth:`zlimit.compare.Comparison.coord_data`. Empty for runs
        saved before these were recorded.
    ntk : ndarray (G, M, M) or None
        Θ(ξ_a, ξ_b), the neural tangent kernel of each group, for
        ``simulate(parametrization="ntk")``; None for every other run.
    error_model : {"groups", "exact"}
        Where standard errors come from. "groups" (default): from the spread between
        the G independent groups (seeds or particle groups), none when G = 1.
        "exact": a deterministic limit, standard errors are zero.

    Examples
    --------
    >>> import numpy as np, zlimit
    >>> X, y, X_eval = np.eye(2, 3), np.array([1.0, -1.0]), np.ones((1, 3))
    >>> run = zlimit.simulate(zlimit.MLP(depth=2), X, y, steps=3, X_eval=X_eval, particles=1000, groups=4,
    ...                       progress=False)
    >>> run.groups, run.steps, run.m, run.width, run.label
    (4, 3, 2, inf, 'n = ∞')
    >>> run.outputs.shape, run.outputs_se.shape, run.loss.shape, run.error_signals.shape
    ((4, 3), (4, 3), (4,), (3, 2))
    >>> sorted(run.kernels), run.kernel(2).shape, run.moments["x1"].shape
    (['dh1', 'dh2', 'h1', 'h2', 'x1', 'x2'], (4, 3, 3), (4, 4, 3, 2))
    >>> run  # doctest: +ELLIPSIS
    Run (n = ∞)
      kind        Monte Carlo limit (method 'mc', μP)
      sampling    N = 1000 particles in G = 4 groups
      model       MLP(depth=2, activation='tanh', loss='mse', lr=0.1)
      steps       T = 3 SGD steps
      inputs      M = 3: m = 2 training + 1 evaluation; k = 1 output
      final loss  ... ± ... at t = 3 (95% t-interval, G−1 = 3 dof)
      recorded    kernels h, x, dh of layers 1..2; cross-step kernels against s = 0; moments (mean, mean |·|); ...
    """

    model: MLP
    meta: dict[str, Any]
    outputs_groups: np.ndarray
    loss_groups: np.ndarray
    error_signals_groups: np.ndarray
    kernels: dict[str, np.ndarray] = field(default_factory=dict)
    cross: dict[str, np.ndarray] = field(default_factory=dict)
    record_steps: tuple[int, ...] = (0,)
    novelty: dict[str, np.ndarray] = field(default_factory=dict)
    bases: dict[str, np.ndarray] = field(default_factory=dict)
    error_model: str = "groups"
    moments: dict[str, np.ndarray] = field(default_factory=dict)
    ntk: np.ndarray | None = None

    # ------------------------------------------------------------------ display
    def _what(self) -> tuple[str, str]:
        """What kind of run this is, and how it was sampled (particles, seeds)."""
        meta = self.meta
        kind, method = meta.get("kind"), meta.get("method")
        name = PARAMETRIZATION_NAMES.get(meta.get("parametrization"), meta.get("parametrization"))
        if self.error_model == "exact" or kind == "exact":
            return "exact limit (method 'exact', μP)", "deterministic: no Monte Carlo error"
        if kind == "finite":
            return f"finite net, width n = {meta.get('width')}, {name}", f"seed {meta.get('seed')}"
        particles, groups = meta.get("particles"), self.groups
        sampled = f"N = {particles} particles in G = {groups} groups"
        if method == "ntk":
            return f"NTK limit (method 'ntk', {name}): kernel regime, frozen features", sampled
        if method == "mc":
            return f"Monte Carlo limit (method 'mc', {name})", sampled
        return f"{kind or 'unknown'} run" + (f" (method {method!r})" if method else ""), f"G = {groups} groups"

    def _final_loss(self) -> str:
        """The final training loss ± the half-width of its 95% t-interval over the G groups."""
        iv = interval(self.loss_groups[:, -1], exact=self.error_model == "exact")
        text = f"{iv.value:.4g} at t = {self.steps}"
        if self.error_model == "exact":
            return f"{text} (exact)"
        if iv.groups < 2 or not math.isfinite(iv.high - iv.value):
            return f"{text} ({iv.label})"
        return f"{iv.value:.4g} ± {iv.high - iv.value:.2g} at t = {self.steps} ({iv.label})"

    def _recorded(self) -> str:
        """Which kernels, cross-step kernels, moments, Θ, novelty and bases the run holds."""
        def kinds(d: dict) -> list[str]:
            found = {parse_key(k)[0] for k in d}
            return [k for k in (*KINDS, "fwd", "bwd") if k in found]

        parts = []
        if self.kernels:
            parts.append(f"kernels {', '.join(kinds(self.kernels))} of layers 1..{self.model.depth}")
        if self.cross:
            parts.append(f"cross-step kernels against s = {elide(self.record_steps)}")
        if self.moments:
            parts.append("moments (mean, mean |·|)")
        if self.ntk is not None:
            parts.append("Θ (.ntk)")
        if self.novelty:
            parts.append("novelty")
        if self.bases:
            parts.append("basis statistics")
        return "; ".join(parts) or "outputs and loss only"

    def _summary(self) -> tuple[str, list[tuple[str, str]]]:
        """The title and the (label, text) lines of ``repr`` and ``_repr_html_``."""
        what, sampled = self._what()
        M, m, k = self.outputs_groups.shape[2], self.m, self.model.outputs
        lines = [("kind", what), ("sampling", sampled), ("model", repr(self.model)),
                 ("steps", f"T = {self.steps} SGD steps"),
                 ("inputs", f"M = {M}: m = {m} training + {M - m} evaluation; k = {k} output{'s' * (k > 1)}"),
                 ("final loss", self._final_loss()), ("recorded", self._recorded())]
        return f"Run ({self.label})", [(label, _cap(text)) for label, text in lines]

    def _safe_summary(self) -> tuple[str, list[tuple[str, str]]]:
        """:meth:`_summary`, or a line saying why it cannot be made (a display never raises)."""
        return safe_summary(self._summary, "Run")

    def __repr__(self) -> str:
        """A one-screen summary (under 2000 characters): kind, sampling, model, T, inputs,
        the final loss with its 95% t-interval over groups, and what is recorded."""
        return summary_text(*self._safe_summary())

    def _repr_html_(self) -> str:
        """The summary of :meth:`__repr__` as a small HTML table (Jupyter's display)."""
        return html_table(*self._safe_summary())

    # -------------------------------------------------------------------- I/O
    def save(self, path):
        """Write this run to ``path`` (a .npz file; format in :mod:`zlimit.io`), atomically.

        A symlink is followed and its target replaced; the file being replaced keeps its
        mode; a folder or device is refused. See :func:`zlimit.io.save` for the errors.
        Returns the path written (None for a file object); :func:`zlimit.load` reads it.

        Examples
        --------
        >>> import numpy as np, zlimit
        >>> run = zlimit.train_finite(zlimit.MLP(depth=2), np.eye(2, 3), np.array([1.0, -1.0]), width=8, steps=2)
        >>> import io
        >>> buffer = io.BytesIO()  # or a path, e.g. "run.npz"
        >>> run.save(buffer)
        >>> _ = buffer.seek(0)
        >>> back = zlimit.load(buffer)
        >>> back.model == run.model, bool((back.outputs_groups == run.outputs_groups).all())
        (True, True)
        """
        return _codec.save(self, path)

    def to_xarray(self):
        """The run as an ``xarray.Dataset`` with dimensions (group, step, input, input2,
        layer, kind, ...); :func:`zlimit.io.from_xarray` is its exact inverse.

        The variables, dimensions and attributes are listed in :func:`zlimit.io.to_xarray`.
        Needs xarray (``pip install zlimit[xarray]``).

        Examples
        --------
        >>> import numpy as np, pytest, zlimit
        >>> _ = pytest.importorskip("xarray")  # the example needs xarray
        >>> run = zlimit.train_finite(zlimit.MLP(depth=2), np.eye(2, 3), np.array([1.0, -1.0]), width=8, steps=2)
        >>> ds = run.to_xarray()
        >>> ds.kernel.dims, ds.layer.values.tolist(), ds.kind.values.tolist()
        (('group', 'step', 'input', 'input2', 'layer', 'kind'), [1, 2], ['h', 'x'])
        >>> entry = ds.kernel.sel(group=0, step=2, input=0, input2=1, layer=2, kind="h")
        >>> bool(entry == run.kernel(2, "h")[2, 0, 1])
        True
        """
        return _codec.to_xarray(self)

    # ------------------------------------------------------------------ shapes
    @property
    def groups(self) -> int:
        """G, the number of independent groups (1 for a finite run)."""
        return self.outputs_groups.shape[0]

    @property
    def steps(self) -> int:
        """T, the number of SGD steps."""
        return self.outputs_groups.shape[1] - 1

    @property
    def width(self) -> float:
        """n for a finite run, ``math.inf`` for a limit (Monte Carlo, NTK or exact)."""
        if self.meta.get("kind") != "finite":
            return math.inf
        width = self.meta.get("width")
        if isinstance(width, bool) or not isinstance(width, (int, float, np.integer, np.floating)):
            raise ValueError(f"this finite run's meta has no width (meta['width'] = {width!r}); set it to n")
        return float(width)

    @property
    def label(self) -> str:
        """How plots and tables name this run: ``"n = 256"`` or ``"n = ∞"``."""
        return "n = ∞" if math.isinf(self.width) else f"n = {int(self.width)}"

    @property
    def m(self) -> int:
        """Number of training inputs."""
        return self.error_signals_groups.shape[2]

    # ------------------------------------------------------------ estimates
    @staticmethod
    def _mean(a: np.ndarray) -> np.ndarray:
        return a.mean(axis=0)

    def _se(self, a: np.ndarray) -> np.ndarray | None:
        """Standard error over groups: zeros for an exact run, None for one group."""
        if self.error_model == "exact":
            return np.zeros(a.shape[1:])
        return group_se(a, axis=0)

    @property
    def outputs(self) -> np.ndarray:
        """f_t(ξ_a), shape (T+1, M), or (T+1, M, k) with k > 1 outputs: training inputs
        first, then evaluation inputs."""
        return self._mean(self.outputs_groups)

    @property
    def outputs_se(self) -> np.ndarray | None:
        """Standard error of ``outputs`` from the spread of groups; None when G = 1."""
        return self._se(self.outputs_groups)

    @property
    def loss(self) -> np.ndarray:
        """Training loss per step, shape (T+1,)."""
        return self._mean(self.loss_groups)

    @property
    def loss_se(self) -> np.ndarray | None:
        return self._se(self.loss_groups)

    @property
    def error_signals(self) -> np.ndarray:
        """χ_{t,i}, shape (T, m), or (T, m, k) with k > 1 outputs."""
        return self._mean(self.error_signals_groups)

    def _key(self, layer: int, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        k = key(kind, check_int("layer", layer, 1, self.model.depth, hint=" (a hidden layer)"))
        if k not in self.kernels:
            raise ValueError(f"this run has no {kind!r} kernels (has {sorted(self.kernels)})")
        return k

    def kernel(self, layer: int, kind: str = "h") -> np.ndarray:
        """Feature kernel E[Z^{v_t(ξ_a)} Z^{v_t(ξ_b)}] of layer l, shape (T+1, M, M).

        For a finite run this is v_t(ξ_a)ᵀ v_t(ξ_b) / n. Kind "dh" has shape
        (T, m, m) (training inputs, NaN outside the batch of each step); with k > 1
        outputs it is the kernel of the error-weighted backward vectors
        Σ_c χ_{t,i,c} dh^{l,c} that the backward pass runs on (maths §6). The mean
        over groups; :meth:`kernel_groups` has each group.

        Parameters
        ----------
        layer : int
            l in 1..L.
        kind : {"h", "x", "dh"}
            Pre-activations h^l, activations x^l = φ(h^l), or the backward vectors dh^l.

        Examples
        --------
        >>> import numpy as np, zlimit
        >>> run = zlimit.train_finite(zlimit.MLP(depth=2), np.eye(2, 3), np.array([1.0, -1.0]), width=8, steps=2)
        >>> K = run.kernel(1, "h")  # (T+1, M, M)
        >>> K.shape, bool(np.allclose(K, K.transpose(0, 2, 1)))
        ((3, 2, 2), True)
        >>> run.kernel(2, "dh").shape  # (T, m, m)
        (2, 2, 2)
        """
        return self._mean(self.kernels[self._key(layer, kind)])

    def kernel_groups(self, layer: int, kind: str = "h") -> np.ndarray:
        """Per-group kernels, shape (G, T+1, M, M) ((G, T, m, m) for kind "dh"): the
        array behind :meth:`kernel`, whose spread over groups gives its error bars.

        Examples
        --------
        >>> import numpy as np, zlimit
        >>> run = zlimit.simulate(zlimit.MLP(depth=2), np.eye(2, 3), np.array([1.0, -1.0]), steps=2,
        ...                       particles=1000, groups=4, progress=False)
        >>> Kg = run.kernel_groups(2, "x")
        >>> Kg.shape, bool(np.allclose(Kg.mean(axis=0), run.kernel(2, "x")))
        ((4, 3, 2, 2), True)
        """
        return self.kernels[self._key(layer, kind)]

    def cross_kernel_groups(self, layer: int, kind: str, s: int) -> np.ndarray:
        """E[Z_s(ξ_a) Z_t(ξ_b)] per group and step t, shape (G, T+1, M, M).

        ``s`` must be one of ``record_steps``; entries with t < s are NaN. Evaluation
        inputs in the Monte Carlo limit: E[Z_s(ξ_e) Z_t(·)], t > s, of an evaluation
        input ξ_e in layers l >= 2 is NaN, because evaluation inputs get fresh Gaussian
        directions at every step (their features at step s have the right joint law with
        training features up to step s only; :class:`zlimit._driver.Recorder`).
        Training inputs, layer 1, finite nets, the exact limit and the NTK limit have
        every entry with t >= s.

        Parameters
        ----------
        layer : int
            l in 1..L.
        kind : {"h", "x"}
        s : int
            A recorded step (``record_steps``, e.g. ``simulate(..., record_steps=(0, 50))``).

        Examples
        --------
        >>> import numpy as np, zlimit
        >>> X, y, X_eval = np.eye(2, 3), np.array([1.0, -1.0]), np.ones((1, 3))
        >>> run = zlimit.simulate(zlimit.MLP(depth=2), X, y, steps=2, X_eval=X_eval, particles=1000, groups=2,
        ...                       record_steps=(0, 1), progress=False)
        >>> C = run.cross_kernel_groups(2, "h", 1)  # E[Z_1(ξ_a) Z_t(ξ_b)], (G, T+1, M, M)
        >>> bool(np.isnan(C[:, 0]).all())  # t = 0 < s = 1
        True
        >>> np.isnan(C[0, 2]).any(axis=1).tolist()  # t > s: the evaluation input's row (layer 2, Monte Carlo)
        [False, False, True]
        >>> bool(np.isnan(run.cross_kernel_groups(1, "h", 1)[:, 1:]).any())  # layer 1 has every entry
        False
        """
        k = self._key(layer, kind)
        if kind == "dh" or k not in self.cross:
            raise ValueError(f"no cross-step kernels of kind {kind!r}; kinds 'h' and 'x' have them")
        if s not in self.record_steps:
            raise ValueError(f"step {s} was not recorded; this run kept steps {self.record_steps} (record_steps=...)")
        return self.cross[k][:, self.record_steps.index(s)]

    def _change_terms(self, layer: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """Per group, E[Z_t²] and E[Z_0 Z_t] for every step and input, (G, T+1, M) each."""
        diag = np.einsum("gtaa->gta", self.kernel_groups(layer, kind))
        return diag, np.einsum("gtaa->gta", self.cross_kernel_groups(layer, kind, 0))

    @staticmethod
    def _relative_change(diag: np.ndarray, c0: np.ndarray) -> np.ndarray:
        """sqrt(E[(Z_t − Z_0)²] / E[Z_0²]) = sqrt((E[Z_t²] − 2 E[Z_0 Z_t] + E[Z_0²]) / E[Z_0²]), step axis −2."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sqrt(np.maximum(diag - 2.0 * c0 + diag[..., :1, :], 0.0) / diag[..., :1, :])

    def feature_change(self, layer: int, kind: str = "h") -> np.ndarray:
        """sqrt(E[(Z_t − Z_0)²] / E[Z_0²]) per step and input, shape (T+1, M), from the
        group-mean kernels. For a finite run this is ‖v_t − v_0‖ / ‖v_0‖.

        Examples
        --------
        >>> import numpy as np, zlimit
        >>> run = zlimit.train_finite(zlimit.MLP(depth=2), np.eye(2, 3), np.array([1.0, -1.0]), width=8, steps=2)
        >>> change = run.feature_change(2)  # (T+1, M); 0 at t = 0
        >>> change.shape, change[0].tolist()
        ((3, 2), [0.0, 0.0])
        """
        diag, c0 = self._change_terms(layer, kind)
        return self._relative_change(diag.mean(axis=0), c0.mean(axis=0))

    def feature_change_groups(self, layer: int, kind: str = "h") -> np.ndarray:
        """The feature change of each group on its own, shape (G, T+1, M) (for standard errors).

        Examples
        --------
        >>> import numpy as np, zlimit
        >>> run = zlimit.simulate(zlimit.MLP(depth=2), np.eye(2, 3), np.array([1.0, -1.0]), steps=2,
        ...                       particles=1000, groups=4, progress=False)
        >>> per_group = run.feature_change_groups(2)
        >>> per_group.shape, bool((per_group[:, 1:] > 0).all())
        ((4, 3, 2), True)
        """
        return self._relative_change(*self._change_terms(layer, kind))


def _cap(text: str) -> str:
    """``text`` on one line of at most :data:`_LINE` characters (elided with "…")."""
    text = " ".join(str(text).split())
    return text if len(text) <= _LINE else text[:_LINE - 1] + "…"
