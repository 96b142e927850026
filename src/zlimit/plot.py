"""Figures of finite-width runs against the infinite-width limit (matplotlib).

Every function returns a :class:`matplotlib.figure.Figure` built with the
object-oriented API (no pyplot state, no ``plt.show()``), so it works under any
backend, including Agg on machines without a display. Save it with
``fig.savefig("name.png")``.

matplotlib is an optional dependency (``pip install zlimit[plot]``); it is imported
only when a function here is called.

Width axes: the infinite-width limit is drawn at a position right of the largest
finite width, on a tick labelled "∞".
"""
from __future__ import annotations

import functools
import math
from typing import Mapping, Sequence

import numpy as np

from ._keys import parse_key
from ._stats import group_se
from ._validate import check_int_list

__all__ = ["trajectories", "deviation", "coord_check", "min_eigenvalue", "vs_width", "coordinate_size", "MAX_CLASSES"]


def _figure(nrows: int = 1, ncols: int = 1, size=(4.2, 3.3), **kw):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("zlimit.plot needs matplotlib: pip install zlimit[plot] (or pip install matplotlib)") from exc
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _colors(count: int):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.1 + 0.75 * k / max(count - 1, 1)) for k in range(count)]


def _inf_position(finite_x) -> float:
    """Where to draw n = ∞ on a log width axis: a factor 4 right of the largest width."""
    finite_x = [float(x) for x in finite_x if math.isfinite(float(x))]
    return 4.0 * max(finite_x) if finite_x else 1.0


def _width_axis(ax, finite_x, inf_x: float | None) -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted({float(x) for x in finite_x if math.isfinite(float(x))})
    labels = [f"{int(t)}" if float(t).is_integer() else f"{t:g}" for t in ticks]
    if inf_x is not None:
        ticks.append(inf_x)
        labels.append("∞")
        ax.axvline(inf_x / 2.0, color="0.8", lw=0.8, ls="--", zorder=0)  # separates finite n from ∞
    ax.set_xticks(ticks, labels)
    ax.minorticks_off()
    ax.set_xlabel("width n")


# ---------------------------------------------------------------- trajectories
#: the most classes :func:`trajectories` draws by default (one colour each)
MAX_CLASSES = 10


def trajectories(comparison, inputs: Sequence[int] | None = None, max_inputs: int = 4,
                 classes: Sequence[int] | None = None):
    """Outputs f_t(ξ_a) against the step, per width, with the limit as a band.

    Parameters
    ----------
    comparison : Comparison or Run
        From :func:`zlimit.compare.compare`; each width is drawn as its seed mean
        (line) ± one seed standard deviation (shaded), the limit as a black line
        with a ±2 standard-error band. A bare limit :class:`~zlimit.Run` draws the
        limit only.
    inputs : sequence of int, optional
        Which inputs (one panel each); default the first training inputs and the
        first evaluation input, ``max_inputs`` panels in all.
    classes : sequence of int, optional
        For a model of k > 1 outputs (maths §6): the outputs f^c drawn in every panel,
        default the first min(k, 10). Each class has a colour (matplotlib's C0..C9,
        repeating after 10): the limit is a dashed line with a ±2 standard-error band,
        each width its seed mean as a solid line, more opaque for larger widths. The
        legend names the classes and the line styles of the widths.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from ._results import Run

    if isinstance(comparison, Run):
        limit, widths, outputs = comparison, [], {}
    else:
        limit, widths = comparison.limit, list(comparison.widths)
        outputs = {w: comparison.outputs(w) for w in widths}
    M, k = limit.outputs.shape[1], limit.model.outputs
    if inputs is None:  # training inputs, and the first evaluation input if there is one
        inputs = list(range(min(limit.m, max_inputs - (M > limit.m))))
        inputs += [limit.m] if M > limit.m else []
    inputs = check_int_list("inputs", inputs, 0, M - 1, hint=f" (the runs have {M} inputs)")
    if k == 1:
        if classes is not None:
            raise ValueError("classes applies to a model of several outputs; this run's model has 1 output")
        draw, legend = _draw_output, {}
    else:
        classes = check_int_list("classes", range(min(k, MAX_CLASSES)) if classes is None else classes, 0, k - 1,
                                 unique=True, hint=f" (the model has {k} outputs)")
        draw = functools.partial(_draw_classes, classes=classes)
        legend = {"handles": _class_legend(classes, widths)}
    ncols = min(len(inputs), 4)
    nrows = math.ceil(len(inputs) / ncols)
    fig, axes = _figure(nrows, ncols, sharex=True)
    steps = np.arange(limit.outputs.shape[0])
    for ax, i in zip(axes.flat, inputs):
        draw(ax, steps, limit, {w: out[:, :, i] for w, out in outputs.items()}, i)
        kind = "train" if i < limit.m else "eval"
        ax.set_title(f"input {i} ({kind})", fontsize=10)
        ax.set_xlabel("step t")
        ax.set_ylabel("f_t(ξ)" if k == 1 else "f^c_t(ξ)")
    for ax in list(axes.flat)[len(inputs):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="best", **legend)
    spread = "seed mean ± sd" if k == 1 else "seed mean, per class"
    fig.suptitle(f"Outputs: finite widths ({spread}) and the infinite-width limit", fontsize=10)
    return fig


def _draw_output(ax, steps, limit, outputs: dict, i: int) -> None:
    """One output: each width's seed mean ± sd (viridis), the limit black and dashed ± 2 se.
    ``outputs``: width -> (S, T+1) of input ``i``."""
    se = limit.outputs_se
    for (w, out), c in zip(outputs.items(), _colors(len(outputs))):
        mean = out.mean(axis=0)
        ax.plot(steps, mean, color=c, lw=1.2, label=f"n = {w}")
        if out.shape[0] > 1:
            sd = out.std(axis=0, ddof=1)
            ax.fill_between(steps, mean - sd, mean + sd, color=c, alpha=0.15, lw=0)
    f = limit.outputs[:, i]
    ax.plot(steps, f, color="k", lw=1.6, ls="--", label="n = ∞")
    if se is not None:
        ax.fill_between(steps, f - 2 * se[:, i], f + 2 * se[:, i], color="k", alpha=0.25, lw=0, label="∞ ± 2 se")


def _width_alphas(count: int) -> list[float]:
    """Opacity of each of ``count`` widths, smallest first."""
    return [0.3 + 0.6 * j / max(count - 1, 1) for j in range(count)]


def _draw_classes(ax, steps, limit, outputs: dict, i: int, classes) -> None:
    """Several outputs: per class (its colour) each width's seed mean and the limit, dashed
    ± 2 se. ``outputs``: width -> (S, T+1, k) of input ``i``."""
    se = limit.outputs_se
    for c in classes:
        color = f"C{c % 10}"
        for out, alpha in zip(outputs.values(), _width_alphas(len(outputs))):
            ax.plot(steps, out[:, :, c].mean(axis=0), color=color, lw=1.0, alpha=alpha)
        f = limit.outputs[:, i, c]
        ax.plot(steps, f, color=color, lw=1.6, ls="--")
        if se is not None:
            ax.fill_between(steps, f - 2 * se[:, i, c], f + 2 * se[:, i, c], color=color, alpha=0.15, lw=0)


def _class_legend(classes, widths) -> list:
    """Legend handles: a patch per class, then a grey line per width and for the limit."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=f"C{c % 10}", label=f"class {c}") for c in classes]
    handles += [Line2D([], [], color="0.3", lw=1.0, alpha=a, label=f"n = {w}")
                for w, a in zip(widths, _width_alphas(len(widths)))]
    return handles + [Line2D([], [], color="0.3", lw=1.6, ls="--", label="n = ∞ (± 2 se)")]


# ---------------------------------------------------------------- deviation
def deviation(comparison):
    """Log-log deviation of the seed-mean output from the limit against the width.

    Draws dev(n) (see :mod:`zlimit.compare`), its Monte Carlo noise floor, the fitted
    power law, and guide lines ∝ n^{-1/2} and ∝ n^{-1} through the first point.

    Parameters
    ----------
    comparison : Comparison or DeviationFit

    Returns
    -------
    matplotlib.figure.Figure
    """
    fit = getattr(comparison, "fit", comparison)
    w = np.asarray(fit.widths, dtype=float)
    dev = np.asarray(fit.deviations, dtype=float)
    fig, axes = _figure(size=(5.0, 3.8))
    ax = axes[0, 0]
    ax.loglog(w, dev, "o", color="C0", label="deviation (RMS over t ≥ 1, inputs)")
    ax.loglog(w, fit.noise_floor, ":", color="0.4", label="noise floor (limit se ⊕ seed-mean se)")
    if math.isfinite(fit.slope):
        se = f" ± {fit.slope_se:.2f}" if math.isfinite(fit.slope_se) else ""
        ax.loglog(w, fit.predict(w), "-", color="C0", lw=1, label=f"fit: slope {fit.slope:.2f}{se}")
    for p, style in ((0.5, "--"), (1.0, "-.")):
        ax.loglog(w, dev[0] * (w / w[0]) ** (-p), style, color="C3" if p == 1.0 else "C1", lw=0.9,
                  label=f"∝ n^-{p:g}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(w, [str(int(v)) for v in w])
    ax.minorticks_off()
    ax.set_xlabel("width n")
    ax.set_ylabel("deviation from the limit")
    ax.legend(fontsize=7)
    ax.set_title(f"Convergence to the limit ({fit.seeds} seed(s) per width)", fontsize=10)
    return fig


# ---------------------------------------------------------------- coord check
def coordinate_size(run, layer: int, kind: str) -> np.ndarray:
    """Per-coordinate size of a feature, sqrt(mean over inputs of E[Z²]), shape (T+1,).

    For a finite run this is the RMS entry of v_t(ξ) over coordinates and inputs,
    sqrt(mean_a ‖v_t(ξ_a)‖² / n); for a limit run sqrt(mean_a E[(Z^{v_t(ξ_a)})²]).
    """
    k = run.kernel(layer, kind)
    return np.sqrt(np.einsum("taa->ta", k).mean(axis=1))


def _runs(value) -> list:
    from ._results import Run

    if isinstance(value, Run):
        return [value]
    return list(value)


def coord_check(runs_by_width: Mapping, limit=None, layer_kinds: Sequence | None = None,
                steps: Sequence[int] | None = None):
    """μP coordinate check: feature sizes against the width, a few steps per panel.

    In μP every curve is flat in n (the coordinates stay Θ(1) during training) and
    meets the limit point at "∞"; in a wrong parametrization some curves grow or
    shrink with n.

    Parameters
    ----------
    runs_by_width : mapping
        width -> Run, or width -> sequence of Runs (seeds; their sizes are averaged).
    limit : Run, optional
        Drawn at "∞" with ±2 standard errors of the per-group sizes.
    layer_kinds : sequence of (kind, layer) or str, optional
        E.g. ``[("h", 1), ("x", 2)]`` or ``["h1", "x2"]``; default h^l and x^l of
        every hidden layer.
    steps : sequence of int, optional
        Steps drawn (default: 0, the middle step and the last step).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not runs_by_width:
        raise ValueError("runs_by_width is empty: give width -> Run (or list of Runs)")
    widths = sorted(runs_by_width)
    first = _runs(runs_by_width[widths[0]])[0]
    L, T = first.model.depth, first.steps
    if layer_kinds is None:
        layer_kinds = [(k, l) for l in range(1, L + 1) for k in ("h", "x")]
    pairs = []
    for item in layer_kinds:
        kind, layer = parse_key(item)[:2] if isinstance(item, str) else (item[0], int(item[1]))
        pairs.append((kind, layer))
    if steps is None:
        steps = sorted({0, T // 2, T})
    else:
        steps = [s % (T + 1) for s in check_int_list("steps", steps, -(T + 1), T,
                                                      hint=f" (the runs have steps 0..{T}; negative ones count from the end)")]
    ncols = min(len(pairs), 3)
    nrows = math.ceil(len(pairs) / ncols)
    fig, axes = _figure(nrows, ncols, size=(3.4, 2.9))
    colors = _colors(len(steps))
    inf_x = _inf_position(widths) if limit is not None else None
    for k, (kind, layer) in enumerate(pairs):
        ax = axes.flat[k]
        sizes = np.array([np.mean([coordinate_size(r, layer, kind) for r in _runs(runs_by_width[w])], axis=0)
                          for w in widths])  # (widths, T+1)
        for s, c in zip(steps, colors):
            ax.plot(widths, sizes[:, s], "o-", color=c, ms=3, lw=1, label=f"t = {s}")
            if limit is not None:
                kg = limit.kernel_groups(layer, kind)[:, s]
                per = np.sqrt(np.einsum("gaa->ga", kg).mean(axis=1))
                val = float(np.sqrt(np.einsum("aa->a", kg.mean(axis=0)).mean()))
                err = 2 * group_se(per, single=0.0)
                ax.errorbar([inf_x], [val], yerr=[err], fmt="s", color=c, ms=4, capsize=2)
                ax.axhline(val, color=c, lw=0.6, ls=":")
        _width_axis(ax, widths, inf_x)
        ax.set_title(f"{kind}^{layer}: RMS coordinate", fontsize=9)
    for ax in list(axes.flat)[len(pairs):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Coordinate check (flat in n ⇔ features Θ(1), as in μP)", fontsize=10)
    return fig


# ---------------------------------------------------------------- curves with CIs
def _curve_arrays(curve):
    """(x, value, low, high) arrays from the accepted curve formats."""
    if isinstance(curve, Mapping):
        x = np.asarray(curve["x"], dtype=float)
        v = np.asarray(curve["value"], dtype=float)
        lo = np.asarray(curve.get("low", v), dtype=float)
        hi = np.asarray(curve.get("high", v), dtype=float)
        return x, v, lo, hi
    x, ests = curve
    x = np.asarray(x, dtype=float)
    ests = list(ests)
    if ests and hasattr(ests[0], "value"):
        v = np.array([e.value for e in ests], dtype=float)
        lo = np.array([e.low for e in ests], dtype=float)
        hi = np.array([e.high for e in ests], dtype=float)
    else:
        v = np.asarray(ests, dtype=float)
        lo = hi = v
    if x.shape != v.shape:
        raise ValueError(f"a curve has {x.size} x values but {v.size} estimates")
    return x, v, lo, hi


def vs_width(curves: Mapping, ylabel: str, title: str = "", xlabel: str = "width n", logy: bool = False,
             width_axis: bool | None = None, ax=None):
    """Curves with confidence bands; an x value of ``inf`` is drawn at "∞".

    Parameters
    ----------
    curves : mapping
        label -> ``(x, estimates)`` with estimates a sequence of
        :class:`~zlimit.diagnostics.Estimate` (value and [low, high]) or of numbers;
        or label -> dict with keys ``x``, ``value`` and optionally ``low``, ``high``.
    ylabel, title, xlabel : str
    logy : bool
        Logarithmic y axis.
    width_axis : bool, optional
        Log-2 x axis with an "∞" tick; default: when any x is infinite or the x
        values span more than a factor 8.
    ax : matplotlib Axes, optional
        Draw into this axes (e.g. a panel of a larger figure) instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not curves:
        raise ValueError("curves is empty: give label -> (x, estimates)")
    data = {label: _curve_arrays(c) for label, c in curves.items()}
    all_x = np.concatenate([d[0] for d in data.values()])
    finite_x = all_x[np.isfinite(all_x)]
    has_inf = bool(np.any(np.isinf(all_x)))
    if width_axis is None:
        width_axis = has_inf or (finite_x.size and finite_x.min() > 0 and finite_x.max() / finite_x.min() > 8)
    inf_x = _inf_position(finite_x) if has_inf else None
    if ax is None:
        fig, axes = _figure(size=(5.0, 3.8))
        ax = axes[0, 0]
    else:
        fig = ax.figure
    for k, (label, (x, v, lo, hi)) in enumerate(data.items()):
        color = f"C{k % 10}"
        fin = np.isfinite(x)
        order = np.argsort(x[fin])
        xs, vs, los, his = x[fin][order], v[fin][order], lo[fin][order], hi[fin][order]
        if xs.size:
            if logy:  # eigenvalues <= 0 (round-off of a singular Gram) cannot be drawn on a log axis
                ok = vs > 0
                xs, vs, los, his = xs[ok], vs[ok], np.maximum(los[ok], vs[ok] * 1e-3), his[ok]
            ax.plot(xs, vs, "o-", color=color, ms=3.5, lw=1.2, label=label)
            if np.any(his > los):
                ax.fill_between(xs, los, his, color=color, alpha=0.2, lw=0)
        for xv, vv, l, h in zip(x[~fin], v[~fin], lo[~fin], hi[~fin]):
            if logy and not vv > 0:
                continue
            if logy:
                l = max(l, vv * 1e-3)
            ax.errorbar([inf_x], [vv], yerr=[[max(vv - l, 0.0)], [max(h - vv, 0.0)]], fmt="*", ms=9,
                        color=color, capsize=3, label=None if xs.size else label)
            ax.axhline(vv, color=color, lw=0.6, ls=":")
    if width_axis:
        _width_axis(ax, finite_x, inf_x)
    ax.set_xlabel(xlabel)
    if logy:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return fig


def min_eigenvalue(curves: Mapping, xlabel: str = "width n", title: str = "", logy: bool = True,
                   ylabel: str = "λ_min (normalised Gram)", ax=None):
    """Smallest-eigenvalue curves against the step or the width, with CI bands.

    Parameters
    ----------
    curves : mapping
        label -> ``(x, estimates)``, estimates being
        :class:`~zlimit.diagnostics.Estimate` objects from
        :func:`zlimit.diagnostics.min_eigenvalue` (their ``[low, high]`` gives the
        band) or plain numbers; x = ``inf`` marks the infinite-width value. Also
        label -> dict(x=..., value=..., low=..., high=...).
    xlabel : str
        "width n" (log axis with "∞") or e.g. "step t".
    logy : bool
        Logarithmic y axis (default); eigenvalues <= 0 are then not drawn.
    ax : matplotlib Axes, optional
        Draw into this axes instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    return vs_width(curves, ylabel=ylabel, title=title or "Smallest eigenvalue of the feature Gram",
                    xlabel=xlabel, logy=logy, width_axis=None if xlabel.startswith("width") else False, ax=ax)
