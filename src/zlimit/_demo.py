"""Built-in demonstrations: the μP limit against finite nets, and the paper's Figures 1–2.

:func:`run_demo` is ``zlimit demo``: a small Gaussian problem, μP networks of growing
width and the infinite-width limit with Monte Carlo error bars, a coordinate-check
table and figures.

:func:`paper_figure` is ``zlimit paper-figure``: the experiment of Figures 1–2 of Chen,
Yang, Zhao & Gu (2025, Appendix A) — 3 hidden layers with σ = √2, SiLU (or tanh, ReLU),
10 images of two classes, lr 0.1, 1000 steps; finite networks in μP, SP, NTP and IP
over widths — measuring

* the relative feature change ‖h_T − h_0‖ / ‖h_0‖ in layers 1 and 2 (mean over the
  training inputs);
* the smallest eigenvalue of the normalised space-time Gram of the features
  {h_0(ξ_i), h_T(ξ_i)} in layers 1 and 2 (Theorem 4.5: linear independence in μP);
* the mean squared error of f_T on held-out images of the same classes,

with the infinite-width μP value (:func:`zlimit._engine.simulate`,
``record_steps=(0, T)``) as the n = ∞ point.
"""
from __future__ import annotations

import csv
import html
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from ._model import MLP
from ._progress import bar, resolve
from ._stats import BAND, Interval, interval
from ._validate import check_choice, check_float, check_int, check_int_list

__all__ = ["run_demo", "demo_settings", "coord_table", "fit_report", "paper_figure", "PaperFigure",
           "PARAMETRIZATIONS", "PAPER_ACTIVATIONS"]

PARAMETRIZATIONS = ("mup", "sp", "ntp", "ip")
_LABELS = {"mup": "μP", "sp": "SP", "ntp": "NTP", "ip": "IP"}


def _pm(value: float, half: float) -> str:
    """'value ± half' (the half-width of an interval), or the value alone when there is none (NaN)."""
    if not math.isfinite(half):
        return f"{value: .4f}"
    return f"{value: .4f} ± {half:.4f}"


def _half_widths(iv: Interval) -> np.ndarray:
    """high − value: the ± of a (symmetric) t-interval; NaN with one group."""
    return np.where(np.isfinite(iv.se), np.asarray(iv.high) - np.asarray(iv.value), np.nan)


# ---------------------------------------------------------------------- demo
def demo_settings(quick: bool = False) -> dict:
    """The settings :func:`run_demo` uses (quick: a much smaller version for tests).

    Examples
    --------
    >>> from zlimit._demo import demo_settings
    >>> s = demo_settings(quick=True)
    >>> s["widths"], s["seeds"], s["groups"]
    ([32, 128], 2, 4)
    """
    if quick:
        return dict(m=4, m_eval=1, d=6, depth=2, activation="tanh", lr=0.5, steps=3,
                    widths=[32, 128], seeds=2, particles=2_000, groups=4)
    return dict(m=6, m_eval=2, d=8, depth=3, activation="tanh", lr=0.5, steps=10,
                widths=[64, 256, 1024, 4096], seeds=8, particles=32_000, groups=8)


def coord_table(comparison, inputs: Sequence[int] = (0, 1), layer: int | None = None, cls: int = 0) -> str:
    """Text table of the last step's outputs, loss and one kernel entry against width.

    Rows are the finite widths (the mean over the S seeds) and the limit ``∞`` (the
    mean over its G particle groups); ``±`` is the half-width of the 95% Student-t
    interval of that mean with G − 1 degrees of freedom (G = S for a finite width,
    :func:`zlimit._stats.interval`), absent with one seed or group. The first line says
    so. The kernel entry is E[x^L_T(ξ_0) x^L_T(ξ_1)] (x^l of ``layer``, default the last
    hidden layer). With k > 1 outputs the output columns are of class ``cls``. In μP
    every column settles as n grows, onto the limit row.

    Parameters
    ----------
    comparison : Comparison
    inputs : sequence of int
        The inputs of the output columns; the first two give the kernel entry.
    layer : int, optional
    cls : int
        The class of the output columns (k > 1 outputs).

    Returns
    -------
    str

    Examples
    --------
    >>> import zlimit
    >>> from zlimit.compare import compare
    >>> from zlimit._demo import coord_table
    >>> X, y = zlimit.datasets.gaussian(3, 4, seed=0)
    >>> cmp = compare(zlimit.MLP(depth=1, lr=0.5), X, y, widths=[16, 64], seeds=2, steps=2, particles=400,
    ...               groups=4, progress=False)
    >>> print(coord_table(cmp).splitlines()[0])
    ± = half-width of the 95% t-interval, G−1 dof (G = 2 seeds per finite width, 4 particle groups at ∞)
    """
    lim = comparison.limit
    T = lim.steps
    L = layer or lim.model.depth
    a, b = (inputs[0], inputs[1]) if len(inputs) > 1 else (inputs[0], inputs[0])
    pick = (lambda o: o) if lim.model.outputs == 1 else (lambda o: o[..., cls])  # (..., M[, k]) -> (..., M)
    label = "" if lim.model.outputs == 1 else f"[{cls}]"
    cols = [f"f_T(ξ{i}){label}" for i in inputs] + ["loss_T", f"K[x{L}](ξ{a},ξ{b})_T"]

    def cells(iv: Interval) -> list[str]:
        return [_pm(v, h) for v, h in zip(iv.value, _half_widths(iv))]

    rows = []
    for w in comparison.widths:
        runs = [comparison.finite[(w, s)] for s in comparison.seeds]
        per_seed = np.array([[pick(r.outputs)[T, i] for i in inputs] + [r.loss[T], r.kernel(L, "x")[T, a, b]]
                             for r in runs])  # (S, columns)
        rows.append((f"{w}", cells(interval(per_seed))))
    per_group = np.column_stack([pick(lim.outputs_groups[:, T])[:, i] for i in inputs]
                                + [lim.loss_groups[:, T], lim.kernel_groups(L, "x")[:, T, a, b]])  # (G, columns)
    rows.append(("∞", cells(interval(per_group, exact=lim.error_model == "exact"))))
    width = max(len(c) for c in cols + [x for _, r in rows for x in r]) + 2
    head = f"{'width':>7}" + "".join(f"{c:>{width}}" for c in cols)
    note = (f"± = half-width of the {BAND} (G = {len(comparison.seeds)} seeds per finite width, "
            f"{lim.groups} particle groups at ∞)")
    lines = [note, head, "-" * len(head)]
    lines += [f"{w:>7}" + "".join(f"{x:>{width}}" for x in r) for w, r in rows]
    return "\n".join(lines)


def compare_reported(*args, **kwargs):
    """:func:`zlimit.compare.compare` without its "no reliable slope" warning, for callers
    that print :func:`fit_report`, which says the same (the demo and ``zlimit compare``).

    Examples
    --------
    >>> import warnings, zlimit
    >>> from zlimit._demo import compare_reported
    >>> X, y = zlimit.datasets.gaussian(3, 4, seed=0)
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error")  # nothing is raised: the unreliable fit is not warned about
    ...     cmp = compare_reported(zlimit.MLP(depth=1, lr=0.5), X, y, widths=[16, 64], seeds=2, steps=2,
    ...                            particles=400, groups=2, progress=False)
    >>> cmp.fit.reliable
    False
    """
    from ._errors import MonteCarloWarning
    from .compare import compare

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="no reliable slope", category=MonteCarloWarning)
        return compare(*args, **kwargs)


def fit_report(fit) -> str:
    """The deviation per width against its noise floor, then ``str(fit)``: the slope, or
    the warning that it is no convergence rate (fewer than 3 widths above the floor),
    and the widths at or below the floor.

    Parameters
    ----------
    fit : zlimit.compare.DeviationFit

    Returns
    -------
    str

    Examples
    --------
    >>> import numpy as np
    >>> from zlimit.compare import DeviationFit
    >>> from zlimit._demo import fit_report
    >>> n = np.array([32, 128])
    >>> fit = DeviationFit(-0.5, np.nan, 0.0, n, np.array([0.2, 0.05]), np.full(2, 0.06), np.zeros(2),
    ...                    np.full(2, 0.06), seeds=2)
    >>> print(fit_report(fit))  # doctest: +ELLIPSIS
    Deviation of the seed-mean output from the limit (RMS over t ≥ 1 and inputs; maths §4: spread ~ n^-1/2, bias ~ n^-1):
      n = 32: 0.2000 (noise floor 0.0600)
      n = 128: 0.0500 (noise floor 0.0600)
      no reliable slope: 1 of 2 widths lies above the Monte Carlo noise floor...; ...
      widths at or below the noise floor: 128
    """
    below = [str(int(w)) for w, up in zip(fit.widths, fit.above_floor) if not up]
    return "\n".join([
        "Deviation of the seed-mean output from the limit (RMS over t ≥ 1 and inputs; "
        "maths §4: spread ~ n^-1/2, bias ~ n^-1):",
        *[f"  n = {int(w)}: {d:.4f} (noise floor {f:.4f})" for w, d, f in
          zip(fit.widths, fit.deviations, fit.noise_floor)],
        f"  {fit}",
        f"  widths at or below the noise floor: {', '.join(below) or 'none'}",
    ])


def run_demo(out_dir, quick: bool = False, progress: bool | None = None) -> str:
    """μP networks of growing width against the infinite-width limit; prints and returns a report.

    The problem: ``datasets.gaussian`` inputs (m = 6 training and 2 evaluation inputs,
    d = 8), a depth-3 tanh MLP with lr 0.5, 10 full-batch SGD steps on the squared
    loss; μP networks of widths 64, 256, 1024, 4096 with 8 seeds each, and the limit
    with 32 000 particles in 8 groups. ``quick=True`` runs a much smaller version.

    Writes into ``out_dir``: ``trajectories.png``, ``deviation.png``,
    ``coord_check.png`` and ``comparison.csv`` (the tidy table of
    :func:`zlimit.compare.compare`).

    Parameters
    ----------
    out_dir : path
    quick : bool
        The small settings of ``demo_settings(quick=True)`` (seconds).
    progress : bool or None
        Progress bars; None (default): only when stderr is a terminal or in Jupyter.

    Returns
    -------
    str
        The report printed: settings, the coordinate-check table (± = half-width of the
        95% t-interval), the deviation per width against its noise floor, the fit (a
        warning instead of a slope when fewer than 3 widths lie above the floor) and
        the files written.

    Examples
    --------
    Not run as a doctest (the quick demo takes about 5 s); tests/test_cli.py::test_demo_quick
    runs it and checks its output.

    >>> import tempfile
    >>> from zlimit._demo import run_demo
    >>> with tempfile.TemporaryDirectory() as out:  # doctest: +SKIP
    ...     report = run_demo(out, quick=True, progress=False)
    """
    from . import datasets, plot

    show = resolve(progress)
    s = demo_settings(quick)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    X, y = datasets.gaussian(s["m"] + s["m_eval"], s["d"], seed=0)
    X_train, y_train, X_eval = X[:s["m"]], y[:s["m"]], X[s["m"]:]
    model = MLP(depth=s["depth"], activation=s["activation"], lr=s["lr"])
    header = (f"zlimit demo{' (quick)' if quick else ''}: depth-{s['depth']} {s['activation']} MLP, "
              f"lr {s['lr']}, {s['steps']} full-batch SGD steps on {s['m']} Gaussian inputs "
              f"(d = {s['d']}, {s['m_eval']} evaluation inputs)\n"
              f"μP widths {s['widths']} × {s['seeds']} seeds; limit with {s['particles']} particles "
              f"in {s['groups']} groups")
    print(header, flush=True)
    cmp = compare_reported(model, X_train, y_train, X_eval=X_eval, widths=s["widths"], seeds=s["seeds"],
                           steps=s["steps"], particles=s["particles"], groups=s["groups"], progress=show)
    files = {
        "trajectories.png": plot.trajectories(cmp, y=y_train),
        "deviation.png": plot.deviation(cmp),
        "coord_check.png": plot.coord_check({w: [cmp.finite[(w, sd)] for sd in cmp.seeds] for w in cmp.widths},
                                            limit=cmp.limit),
    }
    written = []
    for name, fig in files.items():
        fig.savefig(out / name, dpi=110)
        written.append(str(out / name))
    cmp.table.to_csv(out / "comparison.csv", index=False)
    written.append(str(out / "comparison.csv"))
    report = "\n".join([
        "",
        f"Coordinate check at the last step t = {s['steps']} (finite widths: seed means; ∞: the limit):",
        coord_table(cmp),
        "",
        fit_report(cmp.fit),
        "",
        "Wrote:",
        *[f"  {p}" for p in written],
    ])
    print(report, flush=True)
    return header + "\n" + report


# ---------------------------------------------------------------------- paper figure
PAPER_ACTIVATIONS = ("silu", "tanh", "relu")
_QUANTITIES = (("feature_change", 1), ("feature_change", 2), ("min_eigenvalue", 1), ("min_eigenvalue", 2),
               ("heldout_mse", None))


@dataclass(repr=False)
class PaperFigure:
    """Result of :func:`paper_figure`.

    ``repr`` is a one-screen summary (settings, the n = ∞ numbers, figures and files);
    Jupyter shows :meth:`summary` as a table.

    Attributes
    ----------
    records : list of dict
        One per (parametrization, width, layer, quantity): keys ``parametrization``
        ("mup", "sp", "ntp", "ip", or "mup-limit" for n = ∞), ``width`` (inf for the
        limit), ``layer`` (1 or 2; None for "heldout_mse"), ``quantity``
        ("feature_change", "min_eigenvalue" or "heldout_mse"), ``value``, ``se`` (over
        seeds, or over particle groups for the limit; NaN with one seed), ``low``,
        ``high`` (the 95% t-interval with G − 1 dof, G the seeds or particle groups,
        :func:`zlimit._stats.interval`) and ``seeds``. Finite values are means over
        seeds; limit values are pooled over all particles (the held-out MSE is that of
        the pooled f̊_T), their ``se`` from the spread of the groups.
    settings : dict
        The run's settings, with ``timings`` = {"finite_s": ..., "limit_s": ...},
        the seconds spent on the finite networks (all of them) and on the limit.
    limit : Run
        The infinite-width μP run (training inputs first, then the held-out ones).
    figures : dict
        file name -> matplotlib Figure.
    files : list of str
        Files written (when ``out_dir`` was given).

    Examples
    --------
    >>> import zlimit
    >>> result = zlimit.paper_figure(steps=1, widths=[8], seeds=2, particles=400, groups=2,
    ...                              parametrizations=["mup"], progress=False)
    >>> print(repr(result))  # doctest: +ELLIPSIS
    PaperFigure: digits, 10 samples (10 held out), depth-3 silu, lr 0.1, T = 1
      finite nets: μP at widths 8 × 2 seed(s); μP limit: N = 400 particles in G = 2 groups
      ...
    """

    records: list
    settings: dict
    limit: object
    figures: dict = field(default_factory=dict)
    files: list = field(default_factory=list)

    def select(self, quantity: str, layer: int | None, parametrization: str) -> list:
        """The records of one quantity, layer and parametrization, by increasing width.

        Examples
        --------
        >>> import math
        >>> from zlimit._demo import PaperFigure
        >>> rec = {"parametrization": "mup-limit", "width": math.inf, "layer": None, "quantity": "heldout_mse",
        ...        "value": 0.5, "se": 0.1, "low": 0.2, "high": 0.8, "seeds": 0}
        >>> [r["value"] for r in PaperFigure([rec], {}, None).select("heldout_mse", None, "mup-limit")]
        [0.5]
        """
        return sorted((r for r in self.records if r["quantity"] == quantity and r["layer"] == layer
                       and r["parametrization"] == parametrization), key=lambda r: r["width"])

    def _rows(self) -> list[tuple[str, str, list[str]]]:
        """(parametrization, width, cells) of the summary table, cells 'value ± half-width'."""
        index = {(r["parametrization"], r["width"], r["quantity"], r["layer"]): r for r in self.records}
        keys = sorted({(p, w) for p, w, _, _ in index},
                      key=lambda k: (list(PARAMETRIZATIONS + ("mup-limit",)).index(k[0]), k[1]))
        return [(p, "∞" if math.isinf(w) else str(int(w)), [_record_cell(index.get((p, w, q, l)))
                                                           for q, l in _QUANTITIES]) for p, w in keys]

    def _band_note(self) -> str:
        return (f"± = half-width of the {BAND} (G = {self.settings['seeds']} seeds per width, "
                f"{self.settings['groups']} particle groups at ∞)")

    def summary(self) -> str:
        """Text table: rows parametrization × width, columns the five numbers, each
        'value ± half-width of its 95% t-interval' (a first line says so).

        Examples
        --------
        >>> import math
        >>> from zlimit._demo import PaperFigure
        >>> rec = {"parametrization": "mup-limit", "width": math.inf, "layer": None, "quantity": "heldout_mse",
        ...        "value": 0.5, "se": 0.1, "low": 0.2, "high": 0.8, "seeds": 0}
        >>> print(PaperFigure([rec], {"seeds": 2, "groups": 4}, None).summary())  # doctest: +NORMALIZE_WHITESPACE
        ± = half-width of the 95% t-interval, G−1 dof (G = 2 seeds per width, 4 particle groups at ∞)
             param  width  Δh layer 1  Δh layer 2  λmin layer 1  λmin layer 2  held-out MSE
        ----...
         mup-limit      ∞                                                                 0.5 ± 0.3
        """
        wcol = 22
        head = f"{'param':>10}{'width':>7}" + "".join(f"{n:>{wcol}}" for n in _QUANTITY_NAMES)
        lines = [self._band_note(), head, "-" * len(head)]
        lines += [f"{p:>10}{w:>7}" + "".join(f"{c:>{wcol}}" for c in cells) for p, w, cells in self._rows()]
        return "\n".join(lines)

    def _headline(self) -> list[str]:
        s = self.settings
        params = ", ".join(_LABELS[p] for p in s["parametrizations"])
        nets = (f"finite nets: {params} at widths {', '.join(map(str, s['widths']))} × {s['seeds']} seed(s)"
                if s["widths"] else "no finite nets")
        return [f"PaperFigure: {s['data']}, {s['m']} samples ({s['m_eval']} held out), depth-{s['depth']} "
                f"{s['activation']}, lr {s['lr']:g}, T = {s['steps']}",
                f"  {nets}; μP limit: N = {s['particles']} particles in G = {s['groups']} groups",
                f"  time: finite nets {s['timings']['finite_s']:.1f} s, limit {s['timings']['limit_s']:.1f} s"]

    def __repr__(self) -> str:
        try:
            return self._repr()
        except Exception as exc:  # noqa: BLE001 (a repr must not raise, whatever the fields hold)
            return f"PaperFigure (summary unavailable: {type(exc).__name__}: {exc})"[:300]

    def _repr(self) -> str:
        limit = next((cells for p, _, cells in self._rows() if p == "mup-limit"), None)
        files = f"{len(self.files)} written ({Path(self.files[0]).parent})" if self.files else "none written"
        at_limit = ("    " + "; ".join(f"{k} {v}" for k, v in zip(_QUANTITY_NAMES, limit)) if limit is not None
                    else "    (no limit records)")
        return "\n".join([
            *self._headline(),
            f"  n = ∞ (± = half-width of the 95% t-interval, G−1 = {self.settings['groups'] - 1} dof):",
            at_limit,
            f"  {len(self.records)} records (.records, .summary()); figures: {', '.join(self.figures) or 'none'}; "
            f"files: {files}",
        ])

    def _repr_html_(self) -> str:
        try:
            return self._html()
        except Exception as exc:  # noqa: BLE001
            return html.escape(repr(self))

    def _html(self) -> str:
        esc = html.escape
        head = "".join(f"<th>{esc(n)}</th>" for n in ("param", "width", *_QUANTITY_NAMES))
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in (p, w, *cells)) + "</tr>"
                       for p, w, cells in self._rows())
        return (f"<div><pre>{esc(chr(10).join(self._headline()))}</pre><table><caption>{esc(self._band_note())}"
                f"</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


_QUANTITY_NAMES = [f"{'Δh' if q == 'feature_change' else 'λmin'} layer {l}" if l else "held-out MSE"
                   for q, l in _QUANTITIES]


def _record_cell(r: dict | None) -> str:
    """'value ± half-width' of a record ('value' alone without an interval, '' for none)."""
    if r is None:
        return ""
    half = r["high"] - r["value"]
    return f"{r['value']:.3g}" + (f" ± {half:.2g}" if math.isfinite(r["se"]) else "")


def _record(iv) -> dict:
    """The value, se, low and high of an :class:`~zlimit._stats.Interval` (or an Estimate)."""
    return {"value": float(iv.value), "se": float(iv.se), "low": float(iv.low), "high": float(iv.high)}


def _mean_se(values) -> dict:
    """The mean of per-seed values with its se and 95% t-interval (S − 1 dof), as a record's
    value, se, low and high (se NaN and low = high = value with one seed)."""
    return _record(interval(np.asarray(values, dtype=float)))


def _heldout_mse(outputs: np.ndarray, y_eval: np.ndarray) -> np.ndarray:
    """Mean of (f − y)² over the held-out inputs (last axis of ``outputs``)."""
    return ((outputs - y_eval) ** 2).mean(axis=-1)


def _finite_measures(run, layers, T: int, m: int, y_eval: np.ndarray) -> dict:
    from . import diagnostics

    out = {}
    for l in layers:
        out[("feature_change", l)] = float(run.feature_change(l, "h")[T, :m].mean())
        G = diagnostics.space_time_gram(run, l, "h", steps=(0, T))
        out[("min_eigenvalue", l)] = diagnostics.min_eigenvalue(G, normalize=True).value
    out[("heldout_mse", None)] = float(_heldout_mse(run.outputs[T, m:], y_eval))
    return out


def _limit_measures(run, layers, T: int, m: int, y_eval: np.ndarray) -> dict:
    """Pooled values with the 95% t-intervals of their per-group spread (G − 1 dof)."""
    from . import diagnostics

    out = {}
    for l in layers:
        per = run.feature_change_groups(l, "h")[:, T, :m].mean(axis=1)
        out[("feature_change", l)] = _record(interval(per, float(run.feature_change(l, "h")[T, :m].mean())))
        est = diagnostics.min_eigenvalue(diagnostics.space_time_gram(run, l, "h", steps=(0, T)), normalize=True)
        out[("min_eigenvalue", l)] = _record(est)
    f = run.outputs_groups[:, T, m:]  # (G, m_eval): f̊_T per group on the held-out inputs
    out[("heldout_mse", None)] = _record(interval(_heldout_mse(f, y_eval), float(_heldout_mse(f.mean(axis=0), y_eval))))
    return out


def _paper_data(data: str, path, classes, per_class: int, eval_per_class: int):
    """Training and held-out inputs: X, y, X_eval, y_eval."""
    from . import datasets

    data = check_choice("data", data, ("digits", "cifar10"))
    if data == "digits":
        if path is not None:
            raise ValueError("--path is only for --data cifar10 (digits ship with scikit-learn)")
        X, y = datasets.digits(classes=classes or (0, 1), per_class=per_class)
        return (X, y) + datasets.digits(classes=classes or (0, 1), per_class=eval_per_class, exclude=X)
    if path is None:  # data == "cifar10"
        raise ValueError("--data cifar10 needs --path DIR, the extracted 'cifar-10-batches-py' folder")
    classes = classes or ("airplane", "automobile")
    return (datasets.cifar10(path, classes=classes, per_class=per_class)
            + datasets.cifar10(path, classes=classes, per_class=eval_per_class, split="test"))


def paper_figure(data: str = "digits", path=None, steps: int = 1000, widths: Sequence[int] = (8, 64, 512, 4096),
                 seeds: int = 2, particles: int = 32_000, groups: int = 4, lr: float = 0.1,
                 activation: str = "silu", parametrizations: Sequence[str] = PARAMETRIZATIONS, classes=None,
                 per_class: int = 5, eval_per_class: int = 5, out_dir=None,
                 progress: bool | None = None) -> PaperFigure:
    """Feature change, linear independence and held-out error vs width: the paper's Figures 1–2.

    The defaults are the paper's Appendix A: digits, 10 training samples, 3 hidden
    layers with σ = √2, SiLU, lr 0.1, 1000 full-batch SGD steps on the squared loss.

    Parameters
    ----------
    data : {"digits", "cifar10"}
        Two classes (default digits 0/1, CIFAR-10 airplane/automobile), ``per_class``
        images each (10 in all).
    path : str, optional
        The CIFAR-10 folder (``data="cifar10"`` only).
    steps : int
        T >= 1, full-batch SGD steps on the squared loss.
    widths : sequence of int
        Widths of the finite networks; empty for the infinite-width μP limit only.
    seeds : int
        Seeds per (parametrization, width).
    particles, groups : int
        Of the infinite-width μP run. The defaults keep the paper's 1000 steps under
        5 minutes on 2 cores (measured: 281 s, peak RSS 0.94 GiB; docs/performance.md).
        λ_min of the layer-1 Gram (about 1e-8) sits at the Monte Carlo floor of this
        size: it falls from 3.0e-8 to 1.5e-8 as particles per group go from 8000 to
        12 000, while the group spread gives an se near 1e-9, so give more particles
        per group when that panel matters.
    lr : float
        Base learning rate η > 0 (per-layer rates of maths §5 for each parametrization).
    activation : {"silu", "tanh", "relu"}
        The paper's three activations.
    parametrizations : sequence of str
        Among "mup", "sp", "ntp", "ip" (finite networks).
    classes : pair, optional
        The two classes (digits 0..9 or CIFAR-10 names).
    per_class : int
        Training images per class.
    eval_per_class : int
        Held-out images per class, never trained on: other digits of the same classes
        (``datasets.digits(exclude=...)``), or CIFAR-10 test images. Their mean squared
        error (f_T − y)² is the quantity "heldout_mse".
    out_dir : path, optional
        Where to write ``feature_change.png``, ``min_eigenvalue.png``,
        ``heldout_mse.png``, ``paper_figure.csv`` and ``paper_figure.json``.
    progress : bool or None
        Progress bars; None (default): only when stderr is a terminal or in Jupyter.

    Returns
    -------
    PaperFigure
        Every value with its 95% t-interval (G − 1 dof; G = seeds, or particle groups
        for the limit), and figures whose bands are those intervals.

    Raises
    ------
    ValueError
        Bad data, path, steps, widths, seeds, lr, activation, parametrizations or
        per-class counts.

    Examples
    --------
    A tiny version (2 steps, μP only, one width):

    >>> import zlimit
    >>> result = zlimit.paper_figure(steps=2, widths=[8], seeds=2, particles=400, groups=2,
    ...                              parametrizations=["mup"], progress=False)
    >>> sorted(result.figures)
    ['feature_change.png', 'heldout_mse.png', 'min_eigenvalue.png']
    >>> r = result.select("heldout_mse", None, "mup-limit")[0]
    >>> r["width"], r["low"] <= r["value"] <= r["high"]
    (inf, True)
    """
    from ._api import simulate, train_finite

    activation = check_choice("activation", activation, PAPER_ACTIVATIONS, hint=" (the paper's)")
    lr = check_float("lr", lr, 0, lo_open=True, hint=" such as 0.1 (the paper's)")
    parametrizations = [check_choice(f"parametrizations[{k}]", p, PARAMETRIZATIONS)
                        for k, p in enumerate(parametrizations)]
    steps = check_int("steps", steps, 1, hint=" such as 1000 (the paper's)")
    seeds = check_int("seeds", seeds, 1)
    eval_per_class = check_int("eval_per_class", eval_per_class, 1, hint=" (held-out images per class)")
    widths = sorted(check_int_list("widths", widths, 1, allow_empty=True, hint=" (or none, for the limit only)"))
    show = resolve(progress)
    X, y, X_eval, y_eval = _paper_data(data, path, classes, per_class, eval_per_class)
    T, m, layers = int(steps), X.shape[0], (1, 2)
    model = MLP(depth=3, activation=activation, lr=lr, init_std=math.sqrt(2.0))
    settings = {"data": data, "m": m, "m_eval": X_eval.shape[0], "d": X.shape[1], "depth": 3,
                "activation": activation, "lr": lr, "init_std": math.sqrt(2.0), "loss": "mse", "steps": T,
                "widths": widths, "seeds": int(seeds), "parametrizations": list(parametrizations) if widths else []}

    records = []
    jobs = [(p, w, s) for p in settings["parametrizations"] for w in widths for s in range(int(seeds))]
    per: dict = {}
    start = time.perf_counter()
    for p, w, s in bar(jobs, progress=show, desc="zlimit.paper-figure (finite nets)", unit="net"):
        run = train_finite(model, X, y, width=w, steps=T, seed=s, X_eval=X_eval, parametrization=p,
                           record_steps=(0, T), progress=False)  # the bar is over the nets
        for key, v in _finite_measures(run, layers, T, m, y_eval).items():
            per.setdefault((p, w) + key, []).append(v)
    finite_s = time.perf_counter() - start
    for (p, w, q, l), values in per.items():
        records.append({"parametrization": p, "width": float(w), "layer": l, "quantity": q,
                        **_mean_se(values), "seeds": len(values)})
    start = time.perf_counter()
    limit = simulate(model, X, y, steps=T, X_eval=X_eval, record_steps=(0, T), progress=show,
                     particles=particles, groups=groups)
    limit_s = time.perf_counter() - start
    for (q, l), est in _limit_measures(limit, layers, T, m, y_eval).items():
        records.append({"parametrization": "mup-limit", "width": math.inf, "layer": l, "quantity": q,
                        **est, "seeds": 0})
    settings.update(particles=limit.meta["particles"], groups=limit.groups,
                    timings={"finite_s": finite_s, "limit_s": limit_s})
    result = PaperFigure(records=records, settings=settings, limit=limit)
    result.figures = _paper_plots(result)
    if out_dir is not None:
        result.files = _write_paper(result, Path(out_dir))
    return result


def _paper_plots(result: PaperFigure) -> dict:
    from . import plot

    s = result.settings
    change, lam = "$\\|h_T - h_0\\| / \\|h_0\\|$", "$\\lambda_{\\min}$"
    panels = {"feature_change": (f"feature change {change}", change, False, (1, 2)),
              "min_eigenvalue": (f"{lam} of the normalised Gram of $(h_0, h_T)$", lam, True, (1, 2)),
              "heldout_mse": (f"held-out MSE of $f_T$ ({s['m_eval']} inputs)", "mean $(f_T - y)^2$", False, (None,))}
    seeds = f"G = {s['seeds']} seeds per width" if s["seeds"] > 1 else "one seed per width: no band"
    figures = {}
    for q, (title, ylabel, logy, layers) in panels.items():
        fig, axes = plot._figure(1, len(layers), size=(4.6, 3.6))
        for k, l in enumerate(layers):
            curves = {}
            for p in dict.fromkeys([*s["parametrizations"], "mup"]):  # μP carries the limit
                rs = result.select(q, l, p) + (result.select(q, l, "mup-limit") if p == "mup" else [])
                curves[_LABELS[p] + (" (∞: limit)" if p == "mup" else "")] = {
                    key: [r[key] for r in rs] for key in ("value", "low", "high")} | {"x": [r["width"] for r in rs]}
            plot.vs_width(curves, ylabel=ylabel, title="" if l is None else f"layer {l}", logy=logy, ax=axes[0, k])
        fig.suptitle(f"{title} after $T$ = {s['steps']} steps\n(depth 3 {s['activation']}, lr {s['lr']}, "
                     f"{s['data']}, {s['m']} samples)\nbands: {BAND}\n({seeds}; G = {s['groups']} particle "
                     "groups at ∞)", fontsize=9)
        figures[f"{q}.png"] = fig
    return figures


def _write_paper(result: PaperFigure, out: Path) -> list:
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, fig in result.figures.items():
        fig.savefig(out / name, dpi=110)
        files.append(str(out / name))
    keys = ["parametrization", "width", "layer", "quantity", "value", "se", "low", "high", "seeds"]
    with open(out / "paper_figure.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in result.records:
            w.writerow({k: r[k] for k in keys})
    files.append(str(out / "paper_figure.csv"))
    clean = lambda v: (None if isinstance(v, float) and math.isnan(v) else
                       ("inf" if isinstance(v, float) and math.isinf(v) else v))
    doc = {"settings": result.settings, "records": [{k: clean(v) for k, v in r.items()} for r in result.records]}
    with open(out / "paper_figure.json", "w") as fh:
        json.dump(doc, fh, indent=1)
    files.append(str(out / "paper_figure.json"))
    return files
