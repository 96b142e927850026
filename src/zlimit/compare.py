"""Finite-width networks against their infinite-width limit (maths §4, last item).

:func:`compare` runs the limit once (:func:`zlimit._engine.simulate`) and a finite
network (:func:`zlimit._finite.train_finite`) for every width and seed, on the same
model, data and batch schedule, and collects everything in a :class:`Comparison`:
the runs, one tidy table of outputs and losses (:meth:`Comparison.to_dataframe`),
mup-style coordinate statistics per layer (:meth:`Comparison.coord_data`) and the
deviation fit. :meth:`Comparison.save` and :func:`load` write and read it as a folder.

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
deviation at or below its floor says that width is resolved only up to noise, and
a slope is reported as a convergence rate only when at least
:data:`RELIABLE_WIDTHS` widths lie above their floors (else :func:`deviation_fit`
warns with a :class:`zlimit.MonteCarloWarning`).
Step 0 is left out: there the limit output is exactly 0 and the finite outputs are
pure initialisation noise.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from . import io as _io
from ._atomic import _fsync_folder, _umask, atomic_write
from ._errors import MonteCarloWarning
from ._keys import key
from ._model import MLP, check_model, elide, html_table, safe_summary, summary_text
from ._progress import bar, resolve
from ._results import Run
from ._stats import group_se, loglog_fit, t_interval
from ._validate import _show, check_batches, check_choice, check_int_list, check_seed, check_seeds, is_int
from ._version import __version__

__all__ = ["Comparison", "DeviationFit", "compare", "deviation_fit", "load", "LIMIT_OF", "RELIABLE_WIDTHS",
           "COORD_COLUMNS"]

#: Finite-width parametrization whose limit ``simulate(parametrization=...)`` computes.
LIMIT_OF = {"mup": ("mup", "mup"), "ntk": ("ntk", "ntp"), "ntp": ("ntk", "ntp")}

TABLE_COLUMNS = ("width", "seed", "step", "input", "quantity", "value")
#: the table's columns for a model of k > 1 outputs: ``class`` numbers the output (-1 on loss rows)
CLASS_TABLE_COLUMNS = ("width", "seed", "step", "input", "class", "quantity", "value")
#: the columns of :meth:`Comparison.coord_data`
COORD_COLUMNS = ("width", "seed", "t", "layer", "kind", "l1", "l2", "mean", "std")
#: widths above their noise floor that a slope needs to be read as a convergence rate
RELIABLE_WIDTHS = 3

#: what :meth:`Comparison.save` writes into its folder, and the format it declares
_INFO, _FORMAT, _FORMAT_VERSION = "comparison.json", "zlimit-comparison", 1
_PARAMETRIZATION_NAMES = {"mup": "μP", "ntp": "NTP"}


@dataclass(frozen=True)
class DeviationFit:
    """Least-squares fit of log dev(n) = intercept + slope · log n, with its noise floors.

    The slope is a convergence rate only when :attr:`reliable`: at least
    :data:`RELIABLE_WIDTHS` widths have a deviation above their noise floor. Otherwise
    ``str(fit)`` says so instead of printing the slope as a headline.

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
        seed mean were unbiased (limit_se alone with one seed). One standard error, not
        an interval.
    seeds : int
        S, the number of seeds per width.

    Examples
    --------
    >>> import numpy as np
    >>> from zlimit.compare import DeviationFit
    >>> n = np.array([64, 256, 1024])
    >>> dev = 2.0 / n
    >>> fit = DeviationFit(-1.0, 0.0, float(np.log(2.0)), n, dev, np.full(3, 3e-3), np.zeros(3),
    ...                    np.full(3, 3e-3), seeds=4)
    >>> fit.above_floor.tolist(), fit.reliable  # 2/1024 < 3e-3: the widest is noise
    ([True, True, False], False)
    >>> print(fit)
    no reliable slope: 2 of 3 widths lie above the Monte Carlo noise floor, and a rate needs 3; the line deviation ~ n^-1.00 through widths 64..1024 is not a convergence rate
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

    @property
    def above_floor(self) -> np.ndarray:
        """Bool array (k,): deviation > noise floor at each width (False where either is NaN).

        Examples
        --------
        >>> import numpy as np
        >>> from zlimit.compare import DeviationFit
        >>> fit = DeviationFit(-1.0, np.nan, 0.0, np.array([1, 2]), np.array([1.0, 0.5]),
        ...                    np.full(2, 0.6), np.zeros(2), np.full(2, 0.6), seeds=1)
        >>> fit.above_floor
        array([ True, False])
        """
        return np.asarray(self.deviations, dtype=float) > np.asarray(self.noise_floor, dtype=float)

    @property
    def reliable(self) -> bool:
        """True iff there are two seeds or more and at least :data:`RELIABLE_WIDTHS` widths
        lie above their noise floor, so that the slope can be read as a convergence rate.

        The floor is the RMS standard error (one se, not an interval): a width whose
        deviation is pure noise lies above it about half the time, so three widths above
        it is a minimal guard against reading noise as a rate, not a significance test.
        With one seed the floor lacks the seed-to-seed spread, which alone keeps every
        width above it: such a fit is never reliable.

        Examples
        --------
        >>> import numpy as np
        >>> from zlimit.compare import DeviationFit
        >>> n = np.array([16, 64, 256])
        >>> DeviationFit(-1.0, 0.0, 0.0, n, 1.0 / n, np.zeros(3), np.zeros(3), np.zeros(3), 2).reliable
        True
        """
        return self.seeds >= 2 and int(np.count_nonzero(self.above_floor)) >= RELIABLE_WIDTHS

    @property
    def unreliable_because(self) -> str:
        """Why the slope is no convergence rate, in words; "" when it is :attr:`reliable`.

        Examples
        --------
        >>> import numpy as np
        >>> from zlimit.compare import DeviationFit
        >>> n = np.array([16, 64, 256])
        >>> DeviationFit(-1.0, 0.0, 0.0, n, 1.0 / n, np.zeros(3), np.zeros(3), np.full(3, 0.01), 2).unreliable_because
        '2 of 3 widths lie above the Monte Carlo noise floor, and a rate needs 3'
        >>> DeviationFit(-1.0, 0.0, 0.0, n, 1.0 / n, np.zeros(3), np.zeros(3), np.zeros(3), 1).unreliable_because
        'one seed per width, so the noise floor lacks the seed-to-seed spread (use seeds >= 2)'
        """
        if self.reliable:
            return ""
        if self.seeds < 2:
            return "one seed per width, so the noise floor lacks the seed-to-seed spread (use seeds >= 2)"
        above = int(np.count_nonzero(self.above_floor))
        verb = "lies" if above == 1 else "lie"
        return (f"{above} of {len(self.widths)} widths {verb} above the Monte Carlo noise floor, "
                f"and a rate needs {RELIABLE_WIDTHS}")

    def slope_interval(self, level: float = 0.95) -> tuple[float, float]:
        """The slope's Student-t interval slope ± q·slope_se with k − 2 degrees of freedom
        (the package's interval convention, :func:`zlimit._stats.t_interval`); (NaN, NaN)
        with fewer than 3 widths.

        Examples
        --------
        >>> import numpy as np
        >>> from zlimit.compare import DeviationFit
        >>> n = np.array([16, 64, 256])
        >>> fit = DeviationFit(-1.0, 0.1, 0.0, n, 1.0 / n, np.zeros(3), np.zeros(3), np.zeros(3), 2)
        >>> [round(v, 4) for v in fit.slope_interval()]  # t quantile 12.706 with 1 dof
        [-2.2706, 0.2706]
        """
        k = len(self.widths)
        if k < 3 or not math.isfinite(self.slope_se):
            return math.nan, math.nan
        return t_interval(self.slope, self.slope_se, k - 2, level)

    def predict(self, widths) -> np.ndarray:
        """The fitted deviation exp(intercept) · n^slope at the given widths.

        Examples
        --------
        >>> import numpy as np
        >>> from zlimit.compare import DeviationFit
        >>> fit = DeviationFit(-0.5, 0.0, float(np.log(3.0)), np.array([4, 16]), np.array([1.5, 0.75]),
        ...                    np.zeros(2), np.zeros(2), np.zeros(2), 1)
        >>> fit.predict([4, 100]).round(6)
        array([1.5, 0.3])
        """
        return np.exp(self.intercept) * np.asarray(widths, dtype=float) ** self.slope

    def to_dict(self) -> dict:
        """Plain data (floats, bools and lists), e.g. for JSON: every attribute, and
        ``above_floor`` and ``reliable``.

        Examples
        --------
        >>> import numpy as np
        >>> from zlimit.compare import DeviationFit
        >>> fit = DeviationFit(-1.0, np.nan, 0.0, np.array([1, 2]), np.array([1.0, 0.5]),
        ...                    np.zeros(2), np.zeros(2), np.zeros(2), seeds=1)
        >>> d = fit.to_dict()
        >>> d["widths"], d["above_floor"], d["reliable"]
        ([1, 2], [True, True], False)
        """
        plain = lambda a: [float(v) for v in a]
        return {"slope": float(self.slope), "slope_se": float(self.slope_se),
                "intercept": float(self.intercept), "seeds": int(self.seeds),
                "widths": [int(w) for w in self.widths], "deviations": plain(self.deviations),
                "limit_se": plain(self.limit_se), "seed_mean_se": plain(self.seed_mean_se),
                "noise_floor": plain(self.noise_floor), "above_floor": [bool(v) for v in self.above_floor],
                "reliable": self.reliable}

    def __str__(self) -> str:
        k, above = len(self.widths), int(np.count_nonzero(self.above_floor))
        span = f"widths {int(self.widths[0])}..{int(self.widths[-1])}" if k else "no widths"
        if not self.reliable:
            line = (f"the line deviation ~ n^{self.slope:.2f} through {span} is not a convergence rate"
                    if math.isfinite(self.slope) else "no line was fitted")
            return f"no reliable slope: {self.unreliable_because}; {line}"
        if not math.isfinite(self.slope):
            return f"no slope: a deviation over {span} is not positive"
        low, high = self.slope_interval()
        return (f"deviation ~ n^{self.slope:.2f} ({low:.2f}..{high:.2f}, 95% t-interval, k−2 = {k - 2} dof) "
                f"over {span}, {above} of {k} above the noise floor, {self.seeds} seed(s) per width")


@dataclass(repr=False)
class Comparison:
    """Result of :func:`compare`: the limit, every finite run, the tidy table and the fit.

    ``repr`` is a one-screen summary (model, parametrization, widths, seeds, T, M, the
    limit's N and G, the final loss and the fit line), and Jupyter shows it as a table.

    Attributes
    ----------
    limit : Run
        The infinite-width run (G particle groups).
    finite : dict
        (width, seed) -> Run of that finite network.
    table : pandas.DataFrame
        The tidy table of :meth:`to_dataframe` (columns documented there).
    fit : DeviationFit
    widths : list of int
    seeds : list of int
    parametrization : str
        Of the finite networks ("mup" or "ntp").

    Examples
    --------
    >>> import zlimit
    >>> from zlimit.compare import compare
    >>> X, y = zlimit.datasets.gaussian(3, 4, seed=0)
    >>> cmp = compare(zlimit.MLP(depth=2, lr=0.5), X, y, widths=[32, 64], seeds=2, steps=2,
    ...               particles=2000, groups=2, progress=False)
    >>> cmp
    Comparison: μP networks against their infinite-width limit
      model       MLP depth L = 2, tanh, lr η = 0.5, loss mse (mean)
      widths      n = 32, 64
      seeds       0, 1 (2 per width)
      steps       T = 2 SGD steps on M = 3 inputs (3 training, 0 evaluation)
      limit       mc: N = 2,000 particles in G = 2 groups
      final loss  limit ... ± ... (95% t-interval, G−1 = 1 dof); n = 64: ... (mean of 2 seed(s))
      fit         no reliable slope: 2 of 2 widths lie above the Monte Carlo noise floor, and a rate needs 3; ...
      access      .table (72 rows), .to_dataframe(), .coord_data(), .finite[(width, seed)], .limit, .save(path)
    """

    limit: Run
    finite: dict
    table: object
    fit: DeviationFit
    widths: list = field(default_factory=list)
    seeds: list = field(default_factory=list)
    parametrization: str = "mup"

    def outputs(self, width: int) -> np.ndarray:
        """Outputs of every seed at one width.

        Parameters
        ----------
        width : int
            One of :attr:`widths`.

        Returns
        -------
        ndarray (S, T+1, M), or (S, T+1, M, k) with k > 1 outputs

        Examples
        --------
        >>> import zlimit
        >>> from zlimit.compare import compare
        >>> X, y = zlimit.datasets.gaussian(3, 4, seed=0)
        >>> cmp = compare(zlimit.MLP(depth=1, lr=0.5), X, y, widths=[16, 32], seeds=2, steps=2,
        ...               particles=2000, groups=2, progress=False)
        >>> cmp.outputs(32).shape  # (S, T+1, M)
        (2, 3, 3)
        """
        width = check_choice("width", width, self.widths, hint=" (the comparison's widths)")
        return np.stack([self.finite[(width, s)].outputs for s in self.seeds])

    def to_dataframe(self):
        """The tidy table of outputs and losses, as a new pandas DataFrame (a copy).

        Columns ``width, seed, step, input, quantity, value`` (:data:`TABLE_COLUMNS`):
        one row per run, step t and input a for ``quantity == "output"`` (the value
        f_t(ξ_a)), and one row per run and step with ``input = -1`` for ``"loss"``
        (the full training loss). The limit's rows have ``width = inf`` and
        ``seed = -1`` and also carry its standard errors as ``"output_se"`` and
        ``"loss_se"`` (std over the G groups / sqrt(G); NaN with one group). For a
        model of k > 1 outputs a column ``class`` follows ``input``
        (:data:`CLASS_TABLE_COLUMNS`): output rows are per step, input and class
        0..k-1, loss rows have ``class = -1``. Inputs are numbered training first,
        then evaluation inputs. Types: width float64, seed/step/input/class int64,
        quantity str, value float64.

        Returns
        -------
        pandas.DataFrame

        Examples
        --------
        >>> import zlimit
        >>> from zlimit.compare import compare
        >>> X, y = zlimit.datasets.gaussian(3, 4, seed=0)
        >>> cmp = compare(zlimit.MLP(depth=1, lr=0.5), X, y, widths=[16, 32], seeds=2, steps=2,
        ...               particles=2000, groups=2, progress=False)
        >>> df = cmp.to_dataframe()
        >>> list(df.columns)
        ['width', 'seed', 'step', 'input', 'quantity', 'value']
        >>> df[df["quantity"] == "loss"].groupby("width").size().to_dict()  # 3 steps per run
        {16.0: 6, 32.0: 6, inf: 3}
        """
        return self.table.copy()

    def coord_data(self, layers=None, kinds=("h", "x")):
        """mup-style coordinate statistics of the features, per run, step and layer.

        For each feature v_t(ξ_a) of layer l and kind ("h" pre-activation, "x"
        activation), over its coordinates (the n entries of a finite net, the Z
        variable of the limit) and ALL M inputs a (training and evaluation), as mup's
        coord check averages over coordinates and batch entries:

            l1   = mean_a E|Z_a|
            l2   = sqrt(mean_a E[Z_a²])          (the RMS coordinate)
            mean = mean_a E[Z_a]
            std  = sqrt(max(l2² − mean², 0))     (the coordinate standard deviation, ddof 0)

        E[Z_a²] is the kernel diagonal (:meth:`Run.kernel`); E[Z_a] and E|Z_a| are
        :attr:`Run.moments` (for a finite run, means over the n coordinates: l1 =
        mean |v|, l2 = sqrt(mean v²) over coordinates and inputs). For the limit they
        are the group-mean (pooled) moments and kernels.

        Parameters
        ----------
        layers : int or sequence of int, optional
            Hidden layers l in [1, L] (default: all).
        kinds : "h", "x" or a sequence of them
            Default both.

        Returns
        -------
        pandas.DataFrame
            Columns :data:`COORD_COLUMNS` = ``width, seed, t, layer, kind, l1, l2,
            mean, std``: one row per run (the limit first, with ``width = inf`` and
            ``seed = -1``, then every finite (width, seed)), step t = 0..T, layer and
            kind.

        Raises
        ------
        ValueError
            Bad ``layers`` or ``kinds``; or a run without recorded moments (saved by
            a zlimit before they were recorded: rerun the comparison).

        Examples
        --------
        >>> import numpy as np, zlimit
        >>> from zlimit.compare import compare
        >>> X, y = zlimit.datasets.gaussian(3, 4, seed=0)
        >>> cmp = compare(zlimit.MLP(depth=2, lr=0.5), X, y, widths=[16, 32], seeds=2, steps=2,
        ...               particles=2000, groups=2, progress=False)
        >>> cd = cmp.coord_data(layers=2, kinds="h")
        >>> list(cd.columns), len(cd)  # (1 limit + 2 widths × 2 seeds) × 3 steps
        (['width', 'seed', 't', 'layer', 'kind', 'l1', 'l2', 'mean', 'std'], 15)
        >>> net = cmp.finite[(32, 1)]
        >>> row = cd[(cd["width"] == 32) & (cd["seed"] == 1) & (cd["t"] == 2)]
        >>> bool(np.isclose(row["l2"].item(), np.sqrt(np.diag(net.kernel(2, "h")[2]).mean())))
        True
        >>> lim = cd[cd["width"] == float("inf")]  # the limit's rows: seed -1
        >>> lim["seed"].unique().tolist(), lim["t"].tolist()
        ([-1], [0, 1, 2])
        """
        pd = _import_pandas()
        depth = self.limit.model.depth
        layers = list(range(1, depth + 1)) if layers is None else check_int_list(
            "layers", [layers] if is_int(layers) else layers, 1, depth, unique=True,
            hint=" (hidden layers of the model)")
        kinds = [check_choice("kinds", k, ("h", "x")) for k in ((kinds,) if isinstance(kinds, str) else kinds)]
        if not kinds:
            raise ValueError("kinds must name at least one of 'h' and 'x', got an empty sequence")
        runs = [(math.inf, -1, self.limit)] + [(float(w), s, self.finite[(w, s)])
                                               for w in self.widths for s in self.seeds]
        parts = [_coord_rows(run, width, seed, layers, kinds) for width, seed, run in runs]
        return pd.DataFrame({c: np.concatenate([p[c] for p in parts]) for c in COORD_COLUMNS})

    # ----------------------------------------------------------------- files
    def save(self, path) -> Path:
        """Write this comparison to a folder, atomically; :func:`load` reads it back.

        The folder holds ``comparison.json`` (format, version, widths, seeds and
        parametrization), ``limit.npz`` and ``finite/w{width}_s{seed}.npz``, each run
        written by :meth:`Run.save` (its moments and kernels included). The table and
        fit are not stored: :func:`load` rebuilds them from the runs.

        The folder is written under a temporary sibling name ``.{name}.{random}.tmp``
        and renamed into place, so ``path`` never holds part of a comparison. A saved
        comparison at ``path`` is replaced: it is renamed aside to
        ``.{name}.{pid}.{random}.old`` just before, put back if the rename fails and
        removed after. An empty folder is replaced too; anything else is refused. A
        symlink is followed.

        Parameters
        ----------
        path : str or os.PathLike

        Returns
        -------
        pathlib.Path
            ``path`` as given (symlinks not resolved).

        Raises
        ------
        ValueError
            ``path`` is not a path, is a file, or is a folder holding something other
            than a saved comparison; or a run cannot be saved (:func:`zlimit.io.save`).
        OSError
            Writing fails (the old folder, if any, is kept; no temporary folder is left).

        Examples
        --------
        >>> import os, tempfile, zlimit
        >>> from zlimit.compare import compare, load
        >>> X, y = zlimit.datasets.gaussian(3, 4, seed=0)
        >>> cmp = compare(zlimit.MLP(depth=1, lr=0.5), X, y, widths=[16, 32], seeds=1, steps=2,
        ...               particles=2000, groups=2, progress=False)
        >>> folder = os.path.join(tempfile.mkdtemp(), "cmp")
        >>> cmp.save(folder).name
        'cmp'
        >>> sorted(os.listdir(folder)), sorted(os.listdir(os.path.join(folder, "finite")))
        (['comparison.json', 'finite', 'limit.npz'], ['w16_s0.npz', 'w32_s0.npz'])
        >>> load(folder).table.equals(cmp.table)
        True
        """
        target = _save_target(path)
        info = {"format": _FORMAT, "format_version": _FORMAT_VERSION, "zlimit_version": __version__,
                "widths": [int(w) for w in self.widths], "seeds": [int(s) for s in self.seeds],
                "parametrization": self.parametrization}
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            os.chmod(tmp, 0o777 & ~_umask())
            (tmp / "finite").mkdir()
            self.limit.save(tmp / "limit.npz")
            for (w, s), run in self.finite.items():
                run.save(tmp / _finite_name(w, s))
            atomic_write(tmp / _INFO, lambda fh: fh.write(json.dumps(info, indent=1).encode("ascii")),
                         what="comparison file")
            _fsync_folder(tmp / "finite")
            _replace_folder(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return Path(path)

    @classmethod
    def load(cls, path, *, model: MLP | None = None) -> "Comparison":
        """Read a comparison written by :meth:`save` (the same as :func:`load`).

        Examples
        --------
        >>> import os, tempfile, zlimit
        >>> from zlimit.compare import Comparison, compare
        >>> X, y = zlimit.datasets.gaussian(3, 4, seed=0)
        >>> cmp = compare(zlimit.MLP(depth=1, lr=0.5), X, y, widths=[16, 32], seeds=1, steps=2,
        ...               particles=2000, groups=2, progress=False)
        >>> back = Comparison.load(cmp.save(os.path.join(tempfile.mkdtemp(), "cmp")))
        >>> back.widths, back.seeds, back.fit.deviations.tolist() == cmp.fit.deviations.tolist()
        ([16, 32], [0], True)
        """
        return _load(path, model, stacklevel=2)

    # ----------------------------------------------------------------- display
    def _summary(self) -> tuple[str, list[tuple[str, str]]]:
        """The title and the (label, text) lines of ``repr`` and ``_repr_html_``."""
        lim, model = self.limit, self.limit.model
        name = _PARAMETRIZATION_NAMES.get(self.parametrization, str(self.parametrization))
        title = f"Comparison: {name} networks against their infinite-width limit"
        outputs = f", {model.outputs} outputs" if model.outputs > 1 else ""
        lines = [("model", f"MLP depth L = {model.depth}, {model.activation.name}, lr η = {model.lr:g}, "
                           f"loss {model.loss.name} ({model.reduction}){outputs}"),
                 ("widths", f"n = {elide(self.widths)}"),
                 ("seeds", f"{elide(self.seeds)} ({len(self.seeds)} per width)"),
                 ("steps", f"T = {lim.steps} SGD steps on M = {lim.outputs_groups.shape[2]} inputs "
                          f"({lim.m} training, {lim.outputs_groups.shape[2] - lim.m} evaluation)"),
                 ("limit", _describe_limit(lim)),
                 ("final loss", _final_loss(self)),
                 ("fit", str(self.fit)),
                 ("access", f".table ({len(self.table):,} rows), .to_dataframe(), .coord_data(), "
                                 f".finite[(width, seed)], .limit, .save(path)")]
        return title, lines

    def _safe_summary(self) -> tuple[str, list[tuple[str, str]]]:
        """:meth:`_summary`, or a line saying why it cannot be made (a display never raises)."""
        return safe_summary(self._summary, "Comparison")

    def __repr__(self) -> str:
        return summary_text(*self._safe_summary())

    def _repr_html_(self) -> str:
        return html_table(*self._safe_summary())


def _describe_limit(lim: Run) -> str:
    """The limit's method, particles N and groups G."""
    meta = lim.meta
    method = meta.get("method", meta.get("kind", "?"))
    if lim.error_model == "exact":
        return f"{method}: deterministic (no Monte Carlo error)"
    particles = meta.get("particles")
    n = f"N = {particles:,} particles" if is_int(particles) else "N = ?"
    return f"{method}: {n} in G = {lim.groups} groups"


def _final_loss(cmp: Comparison) -> str:
    """The limit's final loss with its interval (as the limit's own summary gives it), and
    the widest width's seed mean."""
    text = f"limit {cmp.limit._final_loss()}"
    if cmp.widths:
        w = cmp.widths[-1]
        final = np.mean([cmp.finite[(w, s)].loss[-1] for s in cmp.seeds])
        text += f"; n = {w}: {final:.4g} (mean of {len(cmp.seeds)} seed(s))"
    return text


def _coord_rows(run: Run, width: float, seed: int, layers: list[int], kinds: list[str]) -> dict[str, np.ndarray]:
    """The :data:`COORD_COLUMNS` of one run, per layer, kind and step (see :meth:`Comparison.coord_data`)."""
    if not run.moments:
        raise ValueError(f"the run {run.label} (seed {seed}) has no recorded moments: it was saved by an older "
                         f"zlimit; rerun the comparison to get coord_data")
    cols: dict[str, list] = {c: [] for c in COORD_COLUMNS}
    T1 = run.steps + 1
    for layer in layers:
        for kind in kinds:
            k = key(kind, layer)
            if k not in run.moments:
                raise ValueError(f"the run {run.label} (seed {seed}) has no moments of {k!r} "
                                 f"(has {sorted(run.moments)}); rerun the comparison")
            first = run.moments[k].mean(axis=0)                        # (T+1, M, 2), pooled over groups
            second = np.einsum("taa->ta", run.kernel(layer, kind))     # E[Z_a²], (T+1, M)
            mean, l1, square = first[..., 0].mean(axis=1), first[..., 1].mean(axis=1), second.mean(axis=1)
            for c, v in (("width", np.full(T1, width)), ("seed", np.full(T1, seed, dtype=np.int64)),
                         ("t", np.arange(T1, dtype=np.int64)), ("layer", np.full(T1, layer, dtype=np.int64)),
                         ("kind", np.full(T1, kind, dtype=object)), ("l1", l1), ("l2", np.sqrt(square)),
                         ("mean", mean), ("std", np.sqrt(np.maximum(square - mean ** 2, 0.0)))):
                cols[c].append(v)
    return {c: np.concatenate(v) for c, v in cols.items()}


def deviation_fit(limit: Run, finite_outputs: dict) -> DeviationFit:
    """Deviation of the seed-mean output from the limit per width, and its log-log fit.

    Warns (:class:`zlimit.MonteCarloWarning`, the text of ``str(fit)``) when fewer than
    :data:`RELIABLE_WIDTHS` widths lie above their noise floor: the slope is then no
    convergence rate.

    Parameters
    ----------
    limit : Run
    finite_outputs : dict
        width -> array (S, T+1, M) of the outputs of S seeds; (S, T+1, M, k) for a
        model of k > 1 outputs, whose every class enters the RMS.

    Returns
    -------
    DeviationFit

    Examples
    --------
    A limit of G = 2 identical groups (no Monte Carlo error) and seed means off by 1/n:

    >>> import warnings
    >>> import numpy as np, zlimit
    >>> from zlimit.compare import deviation_fit
    >>> T, M = 2, 3
    >>> limit = zlimit.Run(model=zlimit.MLP(depth=1), meta={"kind": "limit"},
    ...                    outputs_groups=np.zeros((2, T + 1, M)), loss_groups=np.zeros((2, T + 1)),
    ...                    error_signals_groups=np.zeros((2, T, M)))
    >>> finite = {n: np.full((2, T + 1, M), 1.0 / n) for n in (16, 64, 256)}
    >>> fit = deviation_fit(limit, finite)
    >>> fit.deviations.tolist(), round(fit.slope, 12), fit.reliable
    ([0.0625, 0.015625, 0.00390625], -1.0, True)
    >>> print(fit)
    deviation ~ n^-1.00 (-1.00..-1.00, 95% t-interval, k−2 = 1 dof) over widths 16..256, 3 of 3 above the noise floor, 2 seed(s) per width
    >>> with warnings.catch_warnings(record=True) as caught:  # two widths cannot give a rate
    ...     warnings.simplefilter("always")
    ...     fit = deviation_fit(limit, {n: finite[n] for n in (16, 64)})
    >>> caught[0].category.__name__, str(caught[0].message) == str(fit)
    ('MonteCarloWarning', True)
    """
    fit = _fit(limit, finite_outputs)
    _warn_unreliable(fit, stacklevel=2)
    return fit


def _fit(limit: Run, finite_outputs: dict) -> DeviationFit:
    """:func:`deviation_fit` without its warning."""
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


def _warn_unreliable(fit: DeviationFit, stacklevel: int) -> None:
    """A :class:`MonteCarloWarning` saying ``str(fit)`` when the fit gives no convergence
    rate; ``stacklevel`` counts from the caller of this function."""
    if not fit.reliable:
        warnings.warn(str(fit), MonteCarloWarning, stacklevel=stacklevel + 1)


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


def _assemble(limit: Run, finite: dict, widths: list[int], seeds: list[int], parametrization: str,
              stacklevel: int) -> Comparison:
    """The :class:`Comparison` of these runs: its tidy table and deviation fit (for
    :func:`compare` and :func:`load`, whose ``stacklevel`` the fit's warning gets).
    ``finite`` holds every (width, seed)."""
    pd = _import_pandas()
    jobs = [(w, s) for w in widths for s in seeds]
    parts = [_rows(limit, math.inf, -1, with_se=True)]
    parts += [_rows(finite[job], float(job[0]), job[1], with_se=False) for job in jobs]
    table = pd.DataFrame({c: np.concatenate([p[c] for p in parts]) for c in _columns(limit.model.outputs)})
    table["quantity"] = table["quantity"].astype(str)
    fit = _fit(limit, {w: np.stack([finite[(w, s)].outputs for s in seeds]) for w in widths})
    _warn_unreliable(fit, stacklevel + 1)
    return Comparison(limit=limit, finite={job: finite[job] for job in jobs}, table=table, fit=fit,
                      widths=list(widths), seeds=list(seeds), parametrization=parametrization)


def compare(model: MLP, X, y, *, widths: Sequence[int], seeds, steps: int, particles: int,
            groups: int = 8, X_eval=None, batches=None, parametrization: str = "mup", seed: int = 0,
            progress: bool | None = None) -> Comparison:
    """Run the infinite-width limit and finite networks of several widths and seeds.

    Parameters
    ----------
    model : MLP
    X : array_like (m, d), y : array_like (m,), or (m, k) for loss "mse" with k outputs
    widths : sequence of int
        Finite widths n (at least :data:`RELIABLE_WIDTHS` for a convergence rate).
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
    progress : bool or None
        Progress bars for the limit and the finite nets. None (default): only when
        stderr is a terminal or in Jupyter (:func:`zlimit._progress.resolve`).

    Returns
    -------
    Comparison
        ``limit``, ``finite[(width, seed)]``, the tidy ``table`` and the deviation ``fit``.

    Raises
    ------
    ImportError
        pandas is not installed.
    ValueError
        Invalid widths, seeds, parametrization, progress, or any argument
        :func:`simulate` / :func:`train_finite` reject.

    Warns
    -----
    MonteCarloWarning
        Fewer than :data:`RELIABLE_WIDTHS` widths above the noise floor
        (:func:`deviation_fit`); also the limit's own Monte Carlo warnings.

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
    >>> print(cmp.fit)  # two widths: no convergence rate (and a MonteCarloWarning)
    no reliable slope: ... of 2 widths ... above the Monte Carlo noise floor, and a rate needs 3; ...
    """
    _import_pandas()
    from ._api import simulate, train_finite

    check_model(model)
    parametrization = check_choice("parametrization", parametrization, tuple(LIMIT_OF),
                                   hint=" (compare needs a computable limit; 'ntp' is 'ntk')")
    limit_param, finite_param = LIMIT_OF[parametrization]
    widths = sorted(check_int_list("widths", widths, 1, unique=True))
    seed = check_seed("seed", seed)
    seeds = check_seeds("seeds", seeds, seed)
    progress = resolve(progress)
    m = np.shape(X)[0] if np.ndim(X) == 2 else 0
    if batches is not None:
        batches = check_batches(batches, m, steps)

    limit = simulate(model, X, y, steps=steps, particles=particles, groups=groups, seed=int(seed),
                     X_eval=X_eval, batches=batches, progress=progress, parametrization=limit_param)
    finite: dict = {}
    jobs = [(w, s) for w in widths for s in seeds]
    for w, s in bar(jobs, progress=progress, desc="zlimit.compare (finite nets)", unit="net"):
        finite[(w, s)] = train_finite(model, X, y, width=w, steps=steps, seed=s, X_eval=X_eval,
                                      batches=batches, parametrization=finite_param, progress=False)
    return _assemble(limit, finite, widths, seeds, finite_param, stacklevel=2)


# ---------------------------------------------------------------------- files
def _finite_name(width: int, seed: int) -> str:
    """The file of one finite run inside a saved comparison."""
    return f"finite/w{int(width)}_s{int(seed)}.npz"


def _is_saved(folder: Path) -> bool:
    """Whether ``folder`` holds a file that declares a saved comparison."""
    try:
        return json.loads((folder / _INFO).read_text(encoding="ascii")).get("format") == _FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _save_target(path) -> Path:
    """The folder :meth:`Comparison.save` may write (symlinks resolved), or a one-line ValueError."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a str or os.PathLike naming a folder, got {_show(path)}")
    target = Path(os.path.realpath(path))
    if target.exists() and not target.is_dir():
        raise ValueError(f"{os.fspath(path)} is a file, not a folder: Comparison.save writes a folder; "
                         f"choose another path")
    if target.is_dir() and any(target.iterdir()) and not _is_saved(target):
        raise ValueError(f"{os.fspath(path)} is a folder that does not hold a saved Comparison; refusing to "
                         f"overwrite it: choose another path")
    return target


def _replace_folder(new: Path, target: Path) -> None:
    """Put the complete folder ``new`` at ``target``: a rename, after moving an existing
    ``target`` aside (put back if the rename fails, removed once it succeeded)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.old")
        os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    _fsync_folder(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _read_info(folder: Path, shown: str) -> dict:
    """The checked ``comparison.json`` of a saved comparison, or a one-line ValueError."""
    if not folder.is_dir() or not (folder / _INFO).is_file():
        raise ValueError(f"{shown} is not a saved zlimit Comparison (a folder with {_INFO}, written by "
                         f"Comparison.save)")
    try:
        info = json.loads((folder / _INFO).read_text(encoding="ascii"))
        if not isinstance(info, dict) or info.get("format") != _FORMAT:
            raise ValueError(f"its {_INFO} does not declare format {_FORMAT!r}")
        version = info.get("format_version")
        if not is_int(version) or not 1 <= version <= _FORMAT_VERSION:
            raise ValueError(f"format_version {_show(version)} is not one this zlimit reads "
                             f"(1..{_FORMAT_VERSION}); upgrade zlimit")
        widths = check_int_list("widths", info.get("widths"), 1, unique=True)
        seeds = check_seeds("seeds", info.get("seeds"))
        parametrization = check_choice("parametrization", info.get("parametrization"), ("mup", "ntp"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{shown} is not a readable saved Comparison: {' '.join(str(exc).split())}") from None
    return {"widths": widths, "seeds": seeds, "parametrization": parametrization}


def load(path, *, model: MLP | None = None) -> Comparison:
    """Read a comparison written by :meth:`Comparison.save`; the table and fit are rebuilt.

    Parameters
    ----------
    path : str or os.PathLike
        The folder.
    model : MLP, optional
        Passed to :func:`zlimit.io.load` for every run: needed for a custom
        activation or loss.

    Returns
    -------
    Comparison
        Every run array equal to the saved one; table and fit as :func:`compare`
        built them.

    Raises
    ------
    ValueError
        ``path`` is not a saved comparison, or one of its runs is missing, corrupted
        or of another width or seed than its name says (one line naming the file).

    Warns
    -----
    MonteCarloWarning
        As :func:`compare` does, when the rebuilt fit is no convergence rate
        (:attr:`DeviationFit.reliable` is False).

    Examples
    --------
    >>> import os, tempfile, zlimit
    >>> from zlimit.compare import compare, load
    >>> X, y = zlimit.datasets.gaussian(3, 4, seed=0)
    >>> cmp = compare(zlimit.MLP(depth=1, lr=0.5), X, y, widths=[16, 32], seeds=1, steps=2,
    ...               particles=2000, groups=2, progress=False)
    >>> back = load(cmp.save(os.path.join(tempfile.mkdtemp(), "cmp")))
    >>> (back.limit.outputs_groups == cmp.limit.outputs_groups).all(), back.parametrization
    (np.True_, 'mup')
    >>> load(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    ValueError: ... is not a saved zlimit Comparison (a folder with comparison.json, written by Comparison.save)
    """
    return _load(path, model, stacklevel=2)


def _load(path, model: MLP | None, stacklevel: int) -> Comparison:
    """:func:`load`, its fit's warning at ``stacklevel`` from its caller."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a str or os.PathLike naming a folder, got {_show(path)}")
    folder, shown = Path(path), os.fspath(path)
    info = _read_info(folder, shown)
    widths, seeds = info["widths"], info["seeds"]
    limit = _load_run(folder / "limit.npz", model, lambda run: math.isinf(run.width), "the limit")
    finite = {(w, s): _load_run(folder / _finite_name(w, s), model,
                                lambda run, w=w, s=s: run.width == w and run.meta.get("seed") == s,
                                f"the net of width {w} and seed {s}")
              for w in widths for s in seeds}
    return _assemble(limit, finite, sorted(widths), seeds, info["parametrization"], stacklevel + 1)


def _load_run(path: Path, model: MLP | None, expected, what: str) -> Run:
    """One run of a saved comparison, checked to be ``what`` it should be."""
    if not path.is_file():
        raise ValueError(f"{path} is missing: the saved Comparison is incomplete (it should hold {what})")
    run = _io.load(path, model=model)
    if not expected(run):
        raise ValueError(f"{path} does not hold {what} but {run.label} (seed {run.meta.get('seed')}): "
                         f"the saved Comparison was edited")
    return run
