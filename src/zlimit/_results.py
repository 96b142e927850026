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
from ._model import MLP
from ._validate import check_int
from ._stats import group_se

__all__ = ["Run", "key", "parse_key"]

KINDS = ("h", "x", "dh")


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
        ``record_steps`` (kinds "h" and "x"). Entries with t < s are NaN.
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

    # -------------------------------------------------------------------- I/O
    def save(self, path):
        """Write this run to ``path`` (a .npz file; format in :mod:`zlimit.io`), atomically.

        A symlink is followed and its target replaced; the file being replaced keeps its
        mode; a folder or device is refused. See :func:`zlimit.io.save` for the errors.
        Returns the path written (None for a file object).
        """
        return _codec.save(self, path)

    def to_xarray(self):
        """Labelled arrays (group, step, input, ...) as an ``xarray.Dataset``."""
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
        return float(self.meta["width"]) if self.meta.get("kind") == "finite" else math.inf

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
        Σ_c χ_{t,i,c} dh^{l,c} that the backward pass runs on (maths §6).
        """
        return self._mean(self.kernels[self._key(layer, kind)])

    def kernel_groups(self, layer: int, kind: str = "h") -> np.ndarray:
        """Per-group kernels, shape (G, T+1, M, M)."""
        return self.kernels[self._key(layer, kind)]

    def cross_kernel_groups(self, layer: int, kind: str, s: int) -> np.ndarray:
        """E[Z_s(ξ_a) Z_t(ξ_b)] per group and step t, shape (G, T+1, M, M)."""
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
        group-mean kernels. For a finite run this is ‖v_t − v_0‖ / ‖v_0‖."""
        diag, c0 = self._change_terms(layer, kind)
        return self._relative_change(diag.mean(axis=0), c0.mean(axis=0))

    def feature_change_groups(self, layer: int, kind: str = "h") -> np.ndarray:
        """The feature change of each group on its own, shape (G, T+1, M) (for standard errors)."""
        return self._relative_change(*self._change_terms(layer, kind))
