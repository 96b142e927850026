"""The public entry points: validate every argument once, then dispatch.

:func:`simulate` and :func:`train_finite` check their arguments with
:mod:`zlimit._validate`, freeze them in a :class:`LimitSettings` or
:class:`FiniteSettings` and the data in a :class:`Data`, and hand these to the
private producer: the Monte Carlo engine (:mod:`zlimit._engine`), the exact linear
limit (:mod:`zlimit._exact`), the NTK limit (:mod:`zlimit._ntk`) or a finite network
(:mod:`zlimit._finite`). An option that does not apply to the chosen method raises
``ValueError`` instead of being ignored.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numba
import numpy as np

from . import _engine, _exact, _finite, _ntk
from ._checkpoint import DEFAULT_EVERY, Checkpoint, identity
from ._model import MLP, check_model
from ._progress import bar as progress_bar, resolve as resolve_progress
from ._mpi import check_comm
from ._results import Run
from ._memory import record_bytes, require_memory
from ._validate import (check_batches, check_bool, check_choice, check_data, check_dtype, check_float,
                        check_int, check_record_steps, check_seed)

__all__ = ["simulate", "train_finite", "estimate_memory", "Data", "LimitSettings", "FiniteSettings"]

METHODS = ("mc", "exact")
LIMIT_PARAMETRIZATIONS = ("mup", "ntk")

#: Monte Carlo options, their defaults, and what makes them inapplicable
_MC_DEFAULTS = {"particles": 100_000, "groups": 8, "seed": 0, "dtype": "float64", "threads": None,
                "qmc": False, "gradient_independence": False, "basis_tol": None}
_MU_P_ONLY = ("gradient_independence", "basis_tol")  # the NTK limit has no Ż and no Gaussian bases


@dataclass(frozen=True)
class Data:
    """Training data, evaluation inputs and the batch schedule, validated.

    X : (m, d) float64, y : (m,) float64, X_eval : (m_eval, d) float64 (possibly
    empty), batches : tuple of T sorted int64 index arrays B_t.
    """

    X: np.ndarray
    y: np.ndarray
    X_eval: np.ndarray
    batches: tuple

    @classmethod
    def build(cls, model: MLP, X, y, X_eval, batches, steps: int) -> Data:
        X, y, X_eval = check_data(model, X, y, X_eval)
        M = X.shape[0] + X_eval.shape[0]  # every producer records the trajectory: refuse what cannot fit first
        require_memory(record_bytes(model.depth, steps, M, 1), f"steps = {steps} with M = {M} inputs (the record)")
        return cls(X, y, X_eval, tuple(check_batches(batches, X.shape[0], steps)))

    @property
    def m(self) -> int:
        return self.X.shape[0]

    @property
    def M(self) -> int:
        """m + m_eval, inputs in the order training then evaluation."""
        return self.X.shape[0] + self.X_eval.shape[0]

    @property
    def X_all(self) -> np.ndarray:
        return np.vstack([self.X, self.X_eval])


@dataclass(frozen=True)
class LimitSettings:
    """The validated settings of :func:`simulate` (see it for their meaning)."""

    method: str
    parametrization: str
    steps: int
    record_steps: tuple[int, ...]
    progress: bool
    particles: int = 0
    groups: int = 1
    seed: int = 0
    dtype: np.dtype = np.dtype("float64")
    basis_tol: float = 0.0
    gradient_independence: bool = False
    threads: int = 1
    qmc: bool = False


@dataclass(frozen=True)
class FiniteSettings:
    """The validated settings of :func:`train_finite` (see it for their meaning)."""

    width: int
    steps: int
    seed: int
    parametrization: str
    dtype: np.dtype
    record_steps: tuple[int, ...]


def _check_on_step(on_step) -> None:
    if on_step is not None and not callable(on_step):
        raise ValueError(f"on_step must be a function called as on_step(group, t), or None; got {on_step!r}")


def _advancing(bar, on_step):
    """An ``on_step(group, t)`` hook that calls ``on_step`` first (if it raises, the
    exception propagates from here unchanged and the bar does not move), then moves
    ``bar`` to t + 1 steps done (past steps of a resumed run included)."""
    def step(group: int, t: int) -> None:
        if on_step is not None:
            on_step(group, t)
        bar.update(t + 1 - bar.n)
    return step


def _checkpoint(path, every, producer: str, model: MLP, data: Data, settings, skip=()) -> Checkpoint | None:
    """Validate ``checkpoint`` and ``checkpoint_every`` into a :class:`Checkpoint` (None
    without a path); an existing file is checked against this call's arguments."""
    if path is None:
        if every is not None:
            raise ValueError("checkpoint_every applies only with checkpoint=PATH; give a path or remove it")
        return None
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"checkpoint must be a file path (str or os.PathLike), got {path!r}")
    if every is None:
        every = DEFAULT_EVERY
    elif not (isinstance(every, (float, np.floating)) and every == np.inf):  # inf: on Ctrl-C and errors only
        every = check_float("checkpoint_every", every, 0.0, hint=" of seconds (0: after every step; inf: on "
                                                                 "Ctrl-C only)")
    if isinstance(settings, LimitSettings):  # the numbers see particles per group, not a remainder
        settings = dataclasses.replace(settings, particles=settings.particles // settings.groups * settings.groups)
    return Checkpoint(os.fspath(path), float(every), identity(producer, model, data, settings, skip))


def _refuse(options: dict, names, why: str) -> None:
    """ValueError naming the first of ``names`` given (not None) in ``options``."""
    for name in names:
        if options[name] is not None:
            raise ValueError(f"{name} does not apply {why}; remove it")


def limit_settings(method, parametrization, steps, record_steps, progress, **options) -> LimitSettings:
    """Validate :func:`simulate`'s options into a :class:`LimitSettings` (None = not given)."""
    method = check_choice("method", method, METHODS)
    parametrization = check_choice("parametrization", parametrization, LIMIT_PARAMETRIZATIONS)
    steps = check_int("steps", steps, 0)
    common = dict(method=method, parametrization=parametrization, steps=steps, progress=resolve_progress(progress),
                  record_steps=check_record_steps(record_steps, steps))
    if method == "exact":
        if parametrization != "mup":
            raise ValueError('method="exact" computes the μP limit only; use method="mc" for parametrization="ntk"')
        _refuse(options, _MC_DEFAULTS, 'to method="exact" (deterministic linear algebra, no particles)')
        return LimitSettings(**common)
    if parametrization == "ntk":
        _refuse(options, _MU_P_ONLY, 'to parametrization="ntk" (frozen features: no Ż terms, no Gaussian bases)')
    o = {k: _MC_DEFAULTS[k] if v is None else v for k, v in options.items()}
    particles, groups = check_int("particles", o["particles"], 2), check_int("groups", o["groups"], 1)
    if particles // groups < 2:
        raise ValueError(f"particles = {particles} is too few for groups = {groups}; give each group >= 2")
    dtype = check_dtype(o["dtype"])
    tol = o["basis_tol"]
    if tol is None:
        tol = 1e-2 if dtype == np.float32 else 1e-3
    threads = numba.config.NUMBA_NUM_THREADS if o["threads"] is None else o["threads"]
    return LimitSettings(**common, particles=particles, groups=groups, seed=check_seed("seed", o["seed"]),
                         dtype=dtype, basis_tol=check_float("basis_tol", tol, 0.0, 1.0, lo_open=True, hi_open=True),
                         gradient_independence=check_bool("gradient_independence", o["gradient_independence"]),
                         threads=check_int("threads", threads, 1), qmc=check_bool("qmc", o["qmc"]))


def _check_limit_model(model: MLP, settings: LimitSettings) -> None:
    """What the limits refuse of maths §6: a random output bias (every limit), and weight
    decay in the NTK limit (decaying θ_0 leaves the linearised regime)."""
    if model.bias_sigma[-1] != 0:
        raise ValueError(f"the output bias must start at 0 in the limit (bias_std[-1] = {model.bias_sigma[-1]!r}): "
                         "a random one makes finite nets of every width spread by its std; give bias_std as one "
                         "number, or end the list with 0")
    if settings.parametrization == "ntk" and model.weight_decay:
        raise ValueError(f"weight_decay (= {model.weight_decay!r}) has no NTK limit (decaying the initial weights "
                         "leaves the linearised regime); remove it or use parametrization='mup'")


def _check_comm(comm, settings: LimitSettings, checkpoint, checkpoint_every):
    """``comm`` checked (:func:`zlimit._mpi.check_comm`), for the Monte Carlo μP limit
    without a checkpoint; None when not given."""
    if comm is None:
        return None
    if settings.method == "exact" or settings.parametrization == "ntk":
        raise ValueError("comm applies to the Monte Carlo μP limit (method='mc', parametrization='mup'); the "
                         "exact and NTK limits need no particles to split; remove it")
    comm = check_comm(comm, settings.particles // settings.groups)
    if checkpoint is not None or checkpoint_every is not None:
        raise ValueError("checkpoint does not apply over MPI (comm): each rank holds only its share of the "
                         "particles; remove it, or run without comm")
    return comm


def simulate(model: MLP, X, y, *, steps: int, particles: int | None = None, seed: int | None = None, X_eval=None,
             batches=None, groups: int | None = None, dtype: str | None = None, progress: bool | None = None,
             method: str = "mc", gradient_independence: bool | None = None, basis_tol: float | None = None,
             record_steps=(0,), parametrization: str = "mup", threads: int | None = None,
             qmc: bool | None = None, on_step=None, checkpoint=None, checkpoint_every: float | None = None,
             comm=None) -> Run | None:
    """The infinite-width limit of ``model`` trained by SGD on (X, y): μP, or the NTK limit.

    Parameters
    ----------
    model : MLP
    X : array_like (m, d), y : array_like (m,)
        Training inputs and targets: (m, k) for loss "mse" with k = ``model.outputs``
        > 1, class labels in [0, k) for loss "xent".
    steps : int
        T, the number of SGD steps.
    X_eval : array_like (m_eval, d), optional
        Evaluation inputs: observed at every step, never trained on.
    batches : list of index arrays, optional
        One per step (see :func:`zlimit.batch_schedule`); None is full batch.
    record_steps : sequence of int
        Steps s whose features are kept for the cross-step kernels E[Z_s Z_t'] (0 is
        always kept); integers in [0, steps].
    progress : bool or None
        Show a progress bar. None (default): only when stderr is a terminal or in
        Jupyter, so batch jobs and CI logs stay clean.
    method : {"mc", "exact"}
        "mc": Monte Carlo over particles (maths §3). "exact": the deterministic
        linear-network limit (activation "linear", maths §4); it takes none of the
        Monte Carlo options below.
    parametrization : {"mup", "ntk"}
        "ntk" gives the kernel limit of the same model for contrast (features frozen
        at initialisation, f moved by kernel gradient descent; maths §9 and
        :mod:`zlimit._ntk`); it takes no ``gradient_independence`` or ``basis_tol``.
    on_step : callable, optional
        Called as ``on_step(group, t)`` after step t of each group (from the thread
        that runs the group; group 0 for the exact limit): for timing, logging or
        custom progress. If it raises, the run stops (after writing the checkpoint,
        if one was asked for) and the exception propagates.
    checkpoint : str or os.PathLike, optional
        Monte Carlo μP only. A file to which the whole state is written atomically
        every ``checkpoint_every`` seconds, on Ctrl-C and when ``on_step`` raises.
        If the file exists, the run resumes from it: call again with the same
        arguments (``threads`` and ``progress`` may differ) and the result is
        bit-identical to an uninterrupted run's. A file from other arguments or
        another zlimit version is refused and left untouched. The file is removed
        when the run completes. Format: :mod:`zlimit._checkpoint`.
    checkpoint_every : float, default 600
        Seconds between checkpoints (0: after every step; ``float("inf")``: only on
        Ctrl-C or when ``on_step`` raises). A periodic write that fails (a full disk)
        warns with :class:`zlimit.CheckpointWarning` and the run goes on.
    comm : mpi4py communicator, optional
        Monte Carlo μP only, without ``checkpoint``. Split each group's particles over
        the R ranks of ``comm`` (e.g. ``MPI.COMM_WORLD`` under ``mpiexec -n R``;
        ``pip install "zlimit[mpi]"``): memory per rank is about 1/R of a single
        process's, and every particle mean is a local sum and one reduction
        (:mod:`zlimit._mpi`, ``docs/scaling.md``). Every rank must call with the same
        arguments (checked). Rank 0 returns the Run and shows the progress bar and
        the warnings; the other ranks return None. The same R gives the same bits
        run to run, and the particles are those of a single process, so results for
        different R differ only by the order of floating-point sums. ``on_step``
        runs on every rank. An error that every rank meets together (divergence, a
        lost orthogonality, memory) is raised on every rank; any other (an
        ``on_step`` that raises on one rank, Ctrl-C) ends all ranks with MPI_Abort.

    Other Parameters
    ----------------
    particles : int, default 100_000
        N, the total number of Monte Carlo particles: N // G per group (a remainder
        is not simulated; ``meta["particles"]`` is the count simulated).
    groups : int, default 8
        G independent particle groups of N/G particles; standard errors come from
        their spread (G >= 2 for error bars).
    seed : int, default 0
        Same seed, same bits, whatever the thread count.
    dtype : {"float64", "float32"}, default "float64"
        Storage and arithmetic of particle arrays. float32 halves memory but is not
        faster here (its reductions need the larger default ``basis_tol``).
    threads : int, default ``NUMBA_NUM_THREADS``
        Groups simulated at once, on worker threads. Memory grows with it; the
        numbers do not change.
    qmc : bool, default False
        Draw the input-layer and readout Gaussians (Z^{h^1_0}, Z^{Ŵ_0}) by scrambled
        Sobol points (randomised QMC) instead of i.i.d.; a variance reduction that
        matters most for shallow nets (``docs/performance.md``).
    gradient_independence : bool, default False
        Ablation: drop every Ż term (maths §2), i.e. assume gradient independence.
    basis_tol : float in (0, 1), default 1e-3 (float64) or 1e-2 (float32)
        A vector whose residual ‖ρ‖ is at most basis_tol·‖x‖ adds no Gaussian
        direction (its ρ is dropped from Ẑ; ``Run.bases`` reports how many vectors
        and their Σ(‖ρ‖/‖x‖)² per basis and step). float32 needs the larger value,
        whose round-off otherwise enters as spurious directions. Once training
        converges the features stop moving and no directions are added, so the cost
        of a step stops growing. Measured on the paper's problem (digits, depth-3
        SiLU, lr 0.1, docs/performance.md): at 1e-3 the bases hold at most 270
        directions after 1000 steps, and λ_min of the layer-2 space-time Gram is
        within 1 % of the untruncated value (1e-6) at T = 100; 1e-2 halves the
        directions and lowers that λ_min by 5 %.

    Returns
    -------
    Run or None
        None on MPI ranks other than 0. ``outputs`` (T+1, M) f̊_t ((T+1, M, k) with k > 1 outputs) with
        ``outputs_se``, ``loss``, ``error_signals``,
        ``kernel(l, kind)``, ``novelty`` and ``bases`` (maths §3); ``meta`` has
        ``peak_basis_bytes`` (Monte Carlo μP: the most the bases of one group
        held; over MPI, rank 0's share of them) and, over MPI, ``ranks``. ``error_model`` is "exact" for ``method="exact"`` (zero standard
        errors), else "groups".

    Raises
    ------
    ValueError
        For invalid data or settings, an option that does not apply to the method, or
        a checkpoint file of another run.
    KeyboardInterrupt
        On Ctrl-C, within about one step (the checkpoint, if asked for, is written first).
    ResourceError
        When the run would need more memory than the machine has: at the start, or
        when the growing bases would pass 80 % of the memory available at the start
        (the message names the group and step).
    DivergenceError
        When f̊, the loss or a feature becomes non-finite.
    NumericalError
        When a basis loses orthogonality (checked every 25 steps and at the last).

    Warns
    -----
    MonteCarloWarning
        When a basis holds more than a tenth as many directions as a group has
        particles, or when the groups' feature norms drift apart much faster than
        sampling noise allows (each names the step and what to change).

    Examples
    --------
    >>> import numpy as np, zlimit
    >>> X = np.array([[1.0, 0.0], [0.6, 0.8]]); y = np.array([1.0, -1.0])
    >>> model = zlimit.MLP(depth=2, activation="tanh", lr=0.5)
    >>> run = zlimit.simulate(model, X, y, steps=3, particles=20_000, progress=False)
    >>> run.outputs.shape
    (4, 2)
    >>> zlimit.simulate(model, X, y, steps=3, method="exact", particles=10)
    Traceback (most recent call last):
    ...
    ValueError: particles does not apply to method="exact" (deterministic linear algebra, no particles); remove it
    """
    check_model(model)
    settings = limit_settings(method, parametrization, steps, record_steps, progress, particles=particles,
                              groups=groups, seed=seed, dtype=dtype, threads=threads, qmc=qmc,
                              gradient_independence=gradient_independence, basis_tol=basis_tol)
    comm = _check_comm(comm, settings, checkpoint, checkpoint_every)
    _check_limit_model(model, settings)
    _check_on_step(on_step)
    data = Data.build(model, X, y, X_eval, batches, settings.steps)
    if settings.method == "exact" or settings.parametrization == "ntk":
        if checkpoint is not None or checkpoint_every is not None:
            raise ValueError("checkpoint applies to the Monte Carlo μP limit (method='mc', parametrization='mup') "
                             "and to train_finite; the exact and NTK limits are quick to recompute; remove it")
        if settings.method == "exact":
            return _exact.simulate_exact(model, data, settings, on_step)
        return _ntk.simulate_ntk(model, data, settings, on_step)
    ckpt = _checkpoint(checkpoint, checkpoint_every, "mc", model, data, settings, skip=("threads", "progress"))
    run = _engine.simulate_mc(model, data, settings, on_step, ckpt, comm)
    if ckpt is not None:
        ckpt.remove()
    return run


def estimate_memory(model: MLP, m: int, M: int, steps: int, particles: int, groups: int, batches=None,
                    dtype="float64", record_steps=(0,), threads: int | None = None, ranks: int = 1) -> int:
    """Bytes a Monte Carlo run (:func:`simulate`) needs at its start, in a fresh process
    (one MPI rank's need for a run over ``ranks`` ranks).

    Counts what a fresh Python process holds once zlimit is imported and its kernels
    compiled (``zlimit._memory.BASELINE_BYTES``, 225 MiB), then the bases and normals of
    every hidden matrix at their initial size, the per-step feature arrays, the kept
    features and the records, for the groups run at once (``threads``, by default
    ``NUMBA_NUM_THREADS`` as in :func:`simulate`). A process that already holds the
    baseline (one that ran zlimit before) needs that much less, and :func:`simulate`
    checks only what it adds against the memory free at the time. The bases grow as the
    run adds Gaussian directions (a run whose features have converged adds none), and
    :func:`simulate` checks each growth against the memory the machine had at the
    start, stopping with :class:`ResourceError` before it runs out. ``Run.bases``
    reports the sizes reached.

    Parameters
    ----------
    model : MLP
    m, M : int
        Training inputs (m >= 1), and all inputs (M >= m: m plus evaluation inputs).
    steps, particles, groups, batches, dtype, record_steps, threads
        As for :func:`simulate`; ``batches`` (default full batch) needs exactly
        ``steps`` entries of indices in [0, m).
    ranks : int, default 1
        MPI ranks sharing each group's particles (``simulate(..., comm=...)``): the
        figure is one rank's, with its 1/R share of the particles and all the
        records. Ranks on one machine share its memory.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        An argument of the wrong type or out of range, naming it; no memory is
        allocated for any size asked about.

    Examples
    --------
    >>> import zlimit
    >>> zlimit.estimate_memory(zlimit.MLP(depth=3), m=10, M=10, steps=100, particles=10_000, groups=1) > 0
    True
    >>> one = zlimit.estimate_memory(zlimit.MLP(depth=3), m=10, M=10, steps=100, particles=10**6, groups=1)
    >>> per_rank = zlimit.estimate_memory(zlimit.MLP(depth=3), m=10, M=10, steps=100, particles=10**6, groups=1,
    ...                                   ranks=4)
    >>> 0.2 < (per_rank - zlimit._memory.BASELINE_BYTES) / (one - zlimit._memory.BASELINE_BYTES) < 0.3
    True
    """
    check_model(model)
    m = check_int("m", m, 1)
    M = check_int("M", M, m, hint=" (all inputs: m training plus the evaluation inputs)")
    # no defaults behind None here: particles, groups and dtype are the run's, not simulate's defaults
    particles, groups, dtype = check_int("particles", particles, 2), check_int("groups", groups, 1), check_dtype(dtype)
    s = limit_settings("mc", "mup", steps, record_steps, False, particles=particles, groups=groups, dtype=dtype,
                       threads=threads, seed=None, qmc=None, gradient_independence=None, basis_tol=None)
    ranks = check_int("ranks", ranks, 1)
    if s.particles // s.groups < 2 * ranks:
        raise ValueError(f"particles = {s.particles} is too few for groups = {s.groups} over ranks = {ranks}; give "
                         "each rank >= 2 particles of every group")
    batch_total = m * s.steps if batches is None else sum(len(b) for b in check_batches(batches, m, s.steps))
    return _engine.memory_need(model, m, M, s, batch_total, ranks)[0]


def train_finite(model: MLP, X, y, *, width: int, steps: int, seed: int = 0, X_eval=None,
                 batches=None, parametrization: str = "mup", dtype="float64",
                 record_steps=(0,), on_step=None, checkpoint=None, checkpoint_every: float | None = None,
                 progress: bool | None = None) -> Run:
    """Train one finite-width network by SGD and record its trajectory.

    Parameters
    ----------
    model : MLP
        Depth L, activation φ, loss ℓ, reduction r, σ_l and η_l.
    X : array_like, shape (m, d)
        Training inputs.
    y : array_like, shape (m,)
        Training targets (labels ±1 for the logistic loss); (m, k) for loss "mse" with
        k = ``model.outputs`` > 1, class labels in [0, k) for loss "xent".
    width : int
        n >= 1.
    steps : int
        T >= 0, the number of SGD steps.
    seed : int
        Seed of ``np.random.default_rng`` for the initial weights (:func:`zlimit.init_weights`).
    X_eval : array_like, shape (m_eval, d), optional
        Evaluation inputs; their outputs and features are recorded, and they never
        enter a batch.
    batches : sequence of T integer index arrays, optional
        B_t ⊂ {0..m-1}; default full batch. See :func:`zlimit.batch_schedule`.
    parametrization : {"mup", "sp", "ntp", "ip"}
        Init and per-layer learning rates of maths §5 (:func:`zlimit.layer_scales`).
    dtype : {"float64", "float32"}
        Precision of weights and features. Losses, error signals and kernels are
        stored in float64.
    record_steps : sequence of int in [0, T]
        Steps s whose features are kept for the cross-step kernels; 0 is always
        added. Only these steps' features are held in memory.
    on_step : callable, optional
        Called as ``on_step(0, t)`` after step t. If it raises, training stops
        (after writing the checkpoint, if one was asked for) and the exception propagates.
    checkpoint : str or os.PathLike, optional
        Save and resume the training, as for :func:`zlimit.simulate`.
    checkpoint_every : float, default 600
        Seconds between checkpoints (0: after every step; ``float("inf")``: only on
        Ctrl-C or when ``on_step`` raises). A periodic write that fails (a full disk)
        warns with :class:`zlimit.CheckpointWarning` and the run goes on.
    progress : bool or None
        Show a progress bar over the T + 1 steps (after ``on_step``, if given). None
        (default): only when stderr is a terminal or in Jupyter, so batch jobs and CI
        logs stay clean.

    Returns
    -------
    Run
        With G = 1 and M = m + m_eval inputs (training first):

        * ``outputs_groups`` (1, T+1, M): f_t(ξ_a), the output before update t
          ((1, T+1, M, k) with k > 1 outputs);
        * ``loss_groups`` (1, T+1): full training loss;
        * ``error_signals_groups`` (1, T, m): χ_{t,i} ((1, T, m, k) with k > 1 outputs);
        * ``kernels["h{l}"]``, ``kernels["x{l}"]`` (1, T+1, M, M): v_t(ξ_a)·v_t(ξ_b)/n;
        * ``kernels["dh{l}"]`` (1, T, m, m): dh_t(ξ_i)·dh_t(ξ_j)/n of the backward
          vectors dh^l = n ∂f/∂h^l (the normalised dh of maths §1 in μP), NaN in rows
          and columns of inputs outside B_t;
        * ``cross["h{l}"]``, ``cross["x{l}"]`` (1, R, T+1, M, M): entry [0, r, t, a, b] =
          v_{s_r}(ξ_a)·v_t(ξ_b)/n for s_r = ``record_steps[r]``, NaN for t < s_r.

    Raises
    ------
    ValueError
        Invalid data, batches, width, parametrization, dtype or record_steps, or a
        checkpoint file of another run.
    KeyboardInterrupt
        On Ctrl-C, within about one step (the checkpoint, if asked for, is written first).
    ResourceError
        The weights (``width``) or the record of the trajectory (``steps``) would not
        fit in the memory available; the message names the argument.
    DivergenceError
        The outputs, the training loss or a kernel became non-finite; the message
        names the step.

    Notes
    -----
    Cost per step: one product with each n×n matrix on the M inputs (forward) and
    one with its transpose on the |B_t| batch inputs (backward), O(n²(M + |B_t|))
    flops per hidden layer. Memory: the L−1 hidden matrices (n² each) plus
    2L·n·M numbers per recorded step.

    Examples
    --------
    >>> import numpy as np, zlimit
    >>> model = zlimit.MLP(depth=2, activation="tanh", lr=0.1)
    >>> X = np.array([[1.0, 0.0], [0.6, 0.8]]) * np.sqrt(2); y = np.array([1.0, -1.0])
    >>> run = zlimit.train_finite(model, X, y, width=64, steps=5, progress=False)
    >>> run.outputs.shape, run.kernel(1, "h").shape
    ((6, 2), (6, 2, 2))
    """
    check_model(model)
    steps = check_int("steps", steps, 0)
    _check_on_step(on_step)
    show = resolve_progress(progress)
    settings = FiniteSettings(width=check_int("width", width, 1), steps=steps, seed=check_seed("seed", seed),
                              parametrization=check_choice("parametrization", parametrization,
                                                           _finite.PARAMETRIZATIONS),
                              dtype=check_dtype(dtype), record_steps=check_record_steps(record_steps, steps))
    data = Data.build(model, X, y, X_eval, batches, steps)  # after the cheap checks: it checks memory too
    n = settings.width  # at least the weights: W^1 (n, d), the L-1 hidden (n, n), the readout (k, n),
    hidden = (model.depth - 1) * n * (2 if model.momentum else 1)  # and with momentum their velocities
    require_memory(settings.dtype.itemsize * n * (hidden + data.X.shape[1] + model.outputs),
                   f"width = {n} (the weights of depth {model.depth})")
    ckpt = _checkpoint(checkpoint, checkpoint_every, "finite", model, data, settings)
    with progress_bar(total=steps + 1, progress=show, desc="zlimit.train_finite", unit="step") as bar:
        run = _finite.train(model, data, settings, _advancing(bar, on_step) if show else on_step, ckpt)
    if ckpt is not None:
        ckpt.remove()
    return run
