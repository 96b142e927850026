"""Finite-width networks against their infinite-width limit (maths §4, last item).

:func:`compare` runs the limit once (:func:`zlimit._engine.simulate`) and a finite
network (:func:`zlimit._finite.train_finite`) for every width and seed, on the same
model, data and batch schedule, and collects everything in one tidy table.

Convergence is summarised by the *deviation* of the seed-mean output from the limit,

    dev(n) = RMS over steps t >= 1 and inputs a of ( mean_seeds f^{(n)}_t(ξ_a) − f̊_t(ξ_a) ),

the RMS running over the classes c too for a model of k > 1 outputs (maths §6), i.e.
sqrt(mean over t, a of ‖mean_seeds f^{(n)}_t(ξ_a) − f̊_t(ξ_a)‖² / k); and by the slope
of log dev(n) against log n. Maths §4 predicts a seed-to-seed spread ~ n^{-1/2} (so
the seed mean is off by ~ n^{-1/2}/sqrt(S) with S seeds) and a bias of the seed mean
~ n^{-1}: the slope lies between −1 and −1/2. Two noise sources put a
floor under dev(n) that does not shrink with n: the Monte Carlo error of the limit
(its standard error from the particle groups) and, for the slope's interpretation,
the finite number of seeds. Both are reported per width (:class:`DeviationFit`); a
deviation close to its floor says that width is already resolved only up to noise.
Step 0 is left out: there the limit output is exactly 0 and the finite outputs are
pure initialisation noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from ._model import MLP, check_model
from ._validate import check_batches
from ._results import Run
from ._stats import group_se, loglog_fit
from ._validate import check_choice, check_int_list, check_seed, check_seeds

__all__ = ["Comparison", "DeviationFit", "compare", "deviation_fit", "LIMIT_OF"]

#: Finite-width parametrization whose limit ``simulate(parametrization=...)`` computes.
LIMIT_OF = {"mup": ("mup", "mup"), "ntk": ("ntk", "ntp"), "ntp": ("ntk", "ntp")}

TABLE_COLUMNS = ("width", "seed", "step", "input", "quantity", "value")
#: the table's columns for a model of k > 1 outputs: ``class`` numbers the output (-1 on loss rows)
CLASS_TABLE_COLUMNS = ("width", "seed", "step", "input", "class", "quantity", "value")


@dataclass(frozen=True)
class DeviationFit:
    """Least-squares fit of log dev(n) = intercept + slope · log n.

    Attributes
    ----------
    slope : float
        The deviation exponent (maths §4: between −1 and −1/2).
    slope_se : float
        Its standard error from the regression residuals, sqrt(s² / Σ(log n − mean)²)
        with s² = RSS / (k − 2); NaN with only k = 2 widths.
    intercept : float
        log dev at n = 1.
    widths : ndarray (k,)
    deviations : ndarray (k,)
        dev(n): RMS over (t >= 1, input, and class for a model of several outputs) of
        seed-mean output − limit output.
    limit_se : ndarray (k,)
        RMS over the same entries of the limit's standard error (the same for every
        width).
    seed_mean_se : ndarray (k,)
        RMS of the standard error of the seed mean, std over seeds (ddof = 1) / sqrt(S);
        NaN with one seed.
    noise_floor : ndarray (k,)
        sqrt(limit_se² + seed_mean_se²): the deviation expected from noise alone if the
        seed mean were unbiased (limit_se alone with one seed).
    seeds : int
        S, the number of seeds per width.
    """

    slope: float
    slope_se: float
    intercept: float
    widths: np.ndarray
    deviations: np.ndarray
    limit_se: np.ndarray
    seed_mean_se: np.ndarray
    noise_floor: np.ndarray
    seeds: int

    def predict(self, widths) -> np.ndarray:
        """The fitted deviation exp(intercept) · n^slope at the given widths."""
        return np.exp(self.intercept) * np.asarray(widths, dtype=float) ** self.slope

    def to_dict(self) -> dict:
        """Plain data (floats and lists), e.g. for JSON."""
        plain = lambda a: [float(v) for v in a]
        return {"slope": float(self.slope), "slope_se": float(self.slope_se),
                "intercept": float(self.intercept), "seeds": int(self.seeds),
                "widths": [int(w) for w in self.widths], "deviations": plain(self.deviations),
                "limit_se": plain(self.limit_se), "seed_mean_se": plain(self.seed_mean_se),
                "noise_floor": plain(self.noise_floor)}

    def __str__(self) -> str:
        se = "n/a" if not math.isfinite(self.slope_se) else f"{self.slope_se:.2f}"
        return (f"deviation ~ n^{self.slope:.2f} (± {se}) over widths "
                f"{int(self.widths[0])}..{int(self.widths[-1])}, {self.seeds} seed(s) per width")


@dataclass
class Comparison:
    """Result of :func:`compare`.

    Attributes
    ----------
    limit : Run
        The infinite-width run (G particle groups).
    finite : dict
        (width, seed) -> Run of that finite network.
    table : pandas.DataFrame
        Tidy rows ``width, seed, step, input, quantity, value``. ``quantity`` is
        ``"output"`` (one row per step and input), ``"loss"`` (one row per step,
        ``input = -1``), and for the limit also ``"output_se"`` and ``"loss_se"``.
        For a model of k > 1 outputs a column ``class`` follows ``input``
        (:data:`CLASS_TABLE_COLUMNS`): output rows are per step, input and class
        0..k-1, loss rows have ``class = -1``.
        Limit rows have ``width = inf`` and ``seed = -1``. Inputs are numbered
        training first, then evaluation inputs.
    fit : DeviationFit
    widths : list of int
    seeds : list of int
    parametrization : str
        Of the finite networks ("mup" or "ntp").
    """

    limit: Run
    finite: dict
    table: object
    fit: DeviationFit
    widths: list = field(default_factory=list)
    seeds: list = field(default_factory=list)
    parametrization: str = "mup"

    def outputs(self, width: int) -> np.ndarray:
        """Outputs of every seed at one width, shape (S, T+1, M), or (S, T+1, M, k) with
        k > 1 outputs."""
        return np.stack([self.finite[(width, s)].outputs for s in self.seeds])


def deviation_fit(limit: Run, finite_outputs: dict) -> DeviationFit:
    """Deviation of the seed-mean output from the limit per width, and its log-log fit.

    Parameters
    ----------
    limit : Run
    finite_outputs : dict
        width -> array (S, T+1, M) of the outputs of S seeds; (S, T+1, M, k) for a
        model of k > 1 outputs, whose every class enters the RMS.

    Returns
    -------
    DeviationFit
    """
    widths = np.array(sorted(finite_outputs), dtype=float)
    ref = limit.outputs[1:]
    lse = limit.outputs_se
    lse = np.zeros_like(ref) if lse is None else lse[1:]
    limit_rms = float(np.sqrt(np.mean(lse ** 2)))
    dev, smse, seeds = [], [], None
    for w in widths:
        out = np.asarray(finite_outputs[int(w)])[:, 1:]
        seeds = out.shape[0]
        dev.append(np.sqrt(np.mean((out.mean(axis=0) - ref) ** 2)))
        smse.append(np.sqrt(np.mean(group_se(out, single=np.nan) ** 2)))
    dev, smse = np.array(dev), np.array(smse)
    limit_se = np.full(widths.shape, limit_rms)
    floor = np.sqrt(limit_se ** 2 + np.nan_to_num(smse) ** 2)
    slope = slope_se = intercept = math.nan
    if widths.size >= 2 and np.all(dev > 0):
        slope, slope_se, intercept = loglog_fit(widths, dev)
    return DeviationFit(float(slope), float(slope_se), float(intercept), widths.astype(int), dev,
                        limit_se, smse, floor, int(seeds or 0))


def _columns(outputs: int) -> tuple[str, ...]:
    """The table's columns for a model of ``outputs`` outputs."""
    return TABLE_COLUMNS if outputs == 1 else CLASS_TABLE_COLUMNS


def _rows(run: Run, width: float, seed: int, with_se: bool) -> dict[str, np.ndarray]:
    """The table's columns for one run: its outputs (step, input and class, in C order)
    and loss (per step), with the limit's standard errors when ``with_se``."""
    shape = run.outputs.shape
    T1 = shape[0]
    output_at = dict(zip(("step", "input", "class"), np.indices(shape).reshape(len(shape), -1)))
    loss_at = {"step": np.arange(T1), "input": np.full(T1, -1), "class": np.full(T1, -1)}
    parts = [("output", output_at, run.outputs)]
    if with_se:
        parts.append(("output_se", output_at, _or_nan(run.outputs_se, shape)))
    parts.append(("loss", loss_at, run.loss))
    if with_se:
        parts.append(("loss_se", loss_at, _or_nan(run.loss_se, (T1,))))
    cols = {c: [] for c in _columns(run.model.outputs)}
    for quantity, at, v in parts:
        size = at["step"].size
        cols["width"].append(np.full(size, width, dtype=float))
        cols["seed"].append(np.full(size, seed, dtype=np.int64))
        for c in cols.keys() & at.keys():
            cols[c].append(at[c].astype(np.int64))
        cols["quantity"].append(np.full(size, quantity, dtype=object))
        cols["value"].append(np.asarray(v, dtype=float).ravel())
    return {c: np.concatenate(v) for c, v in cols.items()}


def _or_nan(se: np.ndarray | None, shape: tuple) -> np.ndarray:
    """Standard errors, NaN where there are none (one group)."""
    return np.full(shape, np.nan) if se is None else se


def _import_pandas():
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError("zlimit.compare needs pandas for its result table: pip install zlimit[compare] (or pip install pandas)") from exc
    return pd


def compare(model: MLP, X, y, *, widths: Sequence[int], seeds, steps: int, particles: int,
            groups: int = 8, X_eval=None, batches=None, parametrization: str = "mup", seed: int = 0,
            progress: bool = True) -> Comparison:
    """Run the infinite-width limit and finite networks of several widths and seeds.

    Parameters
    ----------
    model : MLP
    X : array_like (m, d), y : array_like (m,), or (m, k) for loss "mse" with k outputs
    widths : sequence of int
        Finite widths n (at least two for the fit).
    seeds : int or sequence of int
        A count S (seeds ``seed, seed+1, ..., seed+S-1``) or the list of seeds of
        the finite networks' initial weights.
    steps : int
        T, SGD steps.
    particles, groups : int
        Monte Carlo particles N and groups G of the limit (see :func:`zlimit._engine.simulate`).
    X_eval : array_like (m_eval, d), optional
        Evaluation inputs, recorded but never trained on.
    batches : list of index arrays, optional
        The batch schedule (default full batch), shared by every run.
    parametrization : {"mup", "ntk"}
        "mup": μP networks against the μP limit. "ntk" (alias "ntp"): NTP networks
        against the kernel limit ``simulate(parametrization="ntk")``. In NTP the
        initial output f_0 is random with Θ(1) spread at every width, so the seed
        mean approaches the limit as S grows rather than as n grows.
    seed : int
        Seed of the limit, and first seed of the finite networks when ``seeds`` is a count.
    progress : bool
        Show progress bars.

    Returns
    -------
    Comparison
        ``limit``, ``finite[(width, seed)]``, the tidy ``table`` and the deviation ``fit``.

    Raises
    ------
    ImportError
        pandas is not installed.
    ValueError
        Invalid widths, seeds, parametrization, or any argument :func:`simulate` /
        :func:`train_finite` reject.

    Examples
    --------
    >>> import zlimit
    >>> from zlimit.compare import compare
    >>> X, y = zlimit.datasets.gaussian(4, 6, seed=0)
    >>> cmp = compare(zlimit.MLP(depth=2, lr=0.5), X, y, widths=[64, 256], seeds=2,
    ...               steps=3, particles=4000, groups=4, progress=False)
    >>> cmp.limit.outputs.shape, cmp.outputs(64).shape  # (T+1, M) and (S, T+1, M)
    ((4, 4), (2, 4, 4))
    >>> sorted(cmp.finite)  # (width, seed)
    [(64, 0), (64, 1), (256, 0), (256, 1)]
    >>> cmp.fit.widths.tolist(), cmp.fit.seeds, bool(cmp.fit.deviations.min() > 0)
    ([64, 256], 2, True)
    >>> print(cmp.fit)  # two widths: a slope, no standard error
    deviation ~ n^... (± n/a) over widths 64..256, 2 seed(s) per width
    """
    pd = _import_pandas()
    from ._api import simulate, train_finite

    check_model(model)
    parametrization = check_choice("parametrization", parametrization, tuple(LIMIT_OF),
                                   hint=" (compare needs a computable limit; 'ntp' is 'ntk')")
    limit_param, finite_param = LIMIT_OF[parametrization]
    widths = sorted(check_int_list("widths", widths, 1, unique=True))
    seed = check_seed("seed", seed)
    seeds = check_seeds("seeds", seeds, seed)
    m = np.shape(X)[0] if np.ndim(X) == 2 else 0
    if batches is not None:
        batches = check_batches(batches, m, steps)

    limit = simulate(model, X, y, steps=steps, particles=particles, groups=groups, seed=int(seed),
                     X_eval=X_eval, batches=batches, progress=progress, parametrization=limit_param)
    finite: dict = {}
    jobs = [(w, s) for w in widths for s in seeds]
    for w, s in tqdm(jobs, disable=not progress, desc="zlimit.compare (finite nets)", unit="net"):
        finite[(w, s)] = train_finite(model, X, y, width=w, steps=steps, seed=s, X_eval=X_eval,
                                      batches=batches, parametrization=finite_param)

    parts = [_rows(limit, math.inf, -1, with_se=True)]
    parts += [_rows(finite[key], float(key[0]), key[1], with_se=False) for key in jobs]
    table = pd.DataFrame({c: np.concatenate([p[c] for p in parts]) for c in _columns(model.outputs)})
    table["quantity"] = table["quantity"].astype(str)

    fit = deviation_fit(limit, {w: np.stack([finite[(w, s)].outputs for s in seeds]) for w in widths})
    return Comparison(limit=limit, finite=finite, table=table, fit=fit, widths=widths, seeds=seeds,
                      parametrization=finite_param)
