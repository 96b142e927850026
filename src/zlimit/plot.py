"""Figures of finite-width runs against the infinite-width limit (matplotlib).

Every function returns a :class:`matplotlib.figure.Figure` built with the
object-oriented API (no pyplot state, no ``plt.show()``), so it works under any
backend, including Agg on machines without a display. Save it with
``fig.savefig("name.png")``.

matplotlib is an optional dependency (``pip install zlimit[plot]``); it is imported
only when a function here is called.

Error bars and bands follow the package's one convention
(:func:`zlimit._stats.interval`): the 95% Student-t interval of a mean over G
independent groups with G − 1 degrees of freedom, the groups being the particle
groups of a limit run or the seeds of the finite networks of one width. Every legend
or caption says so (:data:`zlimit._stats.BAND`).

Width axes: the infinite-width limit is drawn at a position right of the largest
finite width, on a tick labelled "∞". Finite runs are labelled by their width
(:attr:`zlimit.Run.label`, e.g. "n = 256"), only a limit by "n = ∞".
"""
from __future__ import annotations

import functools
import math
from typing import Mapping, Sequence

import numpy as np

from ._keys import parse_key
from ._stats import BAND, interval, interval_label
from ._validate import _check_targets, _real_array, check_bool, check_int_list

__all__ = ["trajectories", "deviation", "coord_check", "min_eigenvalue", "vs_width", "coordinate_size", "MAX_CLASSES"]

def _new_figure(figsize):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("zlimit.plot needs matplotlib: pip install zlimit[plot] (or pip install matplotlib)") from exc
    return Figure(figsize=figsize, layout="constrained")


def _figure(nrows: int = 1, ncols: int = 1, size=(4.2, 3.3), **kw):
    fig = _new_figure((size[0] * ncols, size[1] * nrows))
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
    ax.set_xlabel("width $n$")


def _log_y(ax) -> None:
    """Logarithmic y axis with tick labels as plain numbers (0.6, not 6×10⁻¹)."""
    from matplotlib import ticker

    class Plain(ticker.LogFormatter):
        def __call__(self, x, pos=None):
            return f"{x:.3g}" if super().__call__(x, pos) else ""

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(Plain())
    ax.yaxis.set_minor_formatter(Plain(labelOnlyBase=False))


def _figure_legend(fig, handles, labels, ncols: int) -> None:
    """One legend for the figure, below its panels."""
    fig.legend(handles, labels, loc="outside lower center", ncols=max(1, min(ncols, len(labels))), fontsize=7)


def _run_interval(run, per_group, value=None):
    """The 95% t-interval over the run's groups (zero width for an exact limit)."""
    return interval(per_group, value, exact=run.error_model == "exact")


def _has_band(iv) -> bool:
    """Whether an interval has a width to draw (two groups or more, not exact)."""
    return iv.groups >= 2 and bool(np.any(np.asarray(iv.high) > np.asarray(iv.low)))


def _fill(ax, x, iv, color, *, alpha: float = 0.2, offset=0.0, label=None) -> None:
    """Shade [low, high] − ``offset`` of ``iv`` over ``x``; nothing when it has no width."""
    if _has_band(iv):
        ax.fill_between(x, iv.low - offset, iv.high - offset, color=color, alpha=alpha, lw=0, label=label)


def _band_label(what: str, groups: int, unit: str) -> str:
    """E.g. 'n = ∞ band: 95% t-interval, G−1 = 7 dof (G = 8 particle groups)'."""
    return f"{what} band: {interval_label(0.95, groups)} (G = {groups} {unit})"


# ---------------------------------------------------------------- trajectories
#: the most classes :func:`trajectories` draws by default (one colour each)
MAX_CLASSES = 10


def _trajectory_runs(comparison):
    """(limit or None, width -> list of seed Runs) of a Comparison, a limit Run or a finite Run."""
    from ._results import Run

    if isinstance(comparison, Run):
        if math.isinf(comparison.width):
            return comparison, {}
        return None, {int(comparison.width): [comparison]}
    nets = {w: [comparison.finite[(w, s)] for s in comparison.seeds] for w in comparison.widths}
    return comparison.limit, nets


def _check_plot_targets(y, ref):
    """y as float64 (m,) or (m, k), checked against the runs' model and m."""
    if y is None:
        return None
    if ref.model.loss.labels == "class":
        raise ValueError(f"y: targets are drawn for real-valued targets; loss {ref.model.loss.name!r} takes "
                         "class labels, so leave y out")
    y = _real_array("y", y)
    _check_targets(ref.model, y, ref.m)
    return y


def trajectories(comparison, inputs: Sequence[int] | None = None, max_inputs: int = 4,
                 classes: Sequence[int] | None = None, *, y=None, residuals: bool | None = None,
                 loss: bool = True):
    r"""Outputs f_t(ξ_a) against the step t per width, the limit f̊_t(ξ_a), residuals and loss.

    Panels: one per input with the outputs; below each, when ``residuals``, the
    residual f^{(n)}_t(ξ_a) − f̊_t(ξ_a) of every width's seed mean; and on the right
    the training loss per width and of the limit. Every band is the 95% Student-t
    interval of a mean over G groups with G − 1 degrees of freedom
    (:func:`zlimit._stats.interval`): over the S seeds of a width (G = S), or the
    particle groups of the limit; the legend says which.

    Parameters
    ----------
    comparison : Comparison or Run
        From :func:`zlimit.compare.compare`: each width is drawn as its seed mean (line)
        with its band, the limit as a black dashed line with its band. A bare limit
        :class:`~zlimit.Run` draws the limit only; a bare finite Run draws that network,
        labelled by its width ("n = 256"), without a band (one seed).
    inputs : sequence of int, optional
        Which inputs (one panel each); default the first training inputs and the
        first evaluation input, ``max_inputs`` panels in all.
    max_inputs : int
        The number of default panels.
    classes : sequence of int, optional
        For a model of k > 1 outputs (maths §6): the outputs f^c drawn in every panel,
        default the first min(k, 10). Each class has a colour (matplotlib's C0..C9,
        repeating after 10): the limit is a dashed line with its band, each width its
        seed mean as a solid line, more opaque for larger widths.
    y : array_like, shape (m,) or (m, k), optional
        The training targets (those given to ``compare`` or ``simulate``), drawn as a
        dotted line in the panel of each training input. Not for class labels (loss
        "xent").
    residuals : bool, optional
        Draw the residual panels; default: when there are both finite widths and a
        limit. Their band, around 0, is the limit's.
    loss : bool
        Draw the loss panel (default True): the full training loss L_t per width
        (seed mean and band) and of the limit; log scale when every value is positive.

    Returns
    -------
    matplotlib.figure.Figure
        Axes in the order: outputs (one per input), residuals (one per input), loss;
        each axes' label (``ax.get_label()``) is ``"outputs a"``, ``"residuals a"`` or
        ``"loss"``.

    Raises
    ------
    ValueError
        Bad ``inputs``, ``classes`` or ``y``, or ``residuals=True`` without both a
        limit and finite widths.

    Examples
    --------
    >>> import zlimit
    >>> from zlimit import plot
    >>> from zlimit.compare import compare
    >>> X, y = zlimit.datasets.gaussian(3, 4, seed=0)
    >>> cmp = compare(zlimit.MLP(depth=1, lr=0.5), X[:2], y[:2], X_eval=X[2:], widths=[16, 64], seeds=2,
    ...               steps=2, particles=400, groups=4, progress=False)
    >>> fig = plot.trajectories(cmp, y=y[:2])
    >>> [ax.get_label() for ax in fig.axes]
    ['outputs 0', 'outputs 1', 'outputs 2', 'residuals 0', 'residuals 1', 'residuals 2', 'loss']
    >>> net = zlimit.train_finite(zlimit.MLP(depth=1, lr=0.5), X, y, width=256, steps=2)
    >>> [line.get_label() for line in plot.trajectories(net).axes[0].get_lines()]
    ['n = 256']
    """
    limit, nets = _trajectory_runs(comparison)
    ref = limit if limit is not None else next(iter(nets.values()))[0]
    M, k = ref.outputs.shape[1], ref.model.outputs
    if inputs is None:  # training inputs, and the first evaluation input if there is one
        inputs = list(range(min(ref.m, max_inputs - (M > ref.m))))
        inputs += [ref.m] if M > ref.m else []
    inputs = check_int_list("inputs", inputs, 0, M - 1, hint=f" (the runs have {M} inputs)")
    y = _check_plot_targets(y, ref)
    loss = check_bool("loss", loss)
    if residuals is None:
        residuals = limit is not None and bool(nets)
    elif check_bool("residuals", residuals) and (limit is None or not nets):
        raise ValueError("residuals=True needs finite widths and their limit: pass a Comparison "
                         "(or leave residuals out)")
    if k == 1:
        if classes is not None:
            raise ValueError("classes applies to a model of several outputs; this run's model has 1 output")
        draw, styles = _draw_output, dict(zip(nets, ({"color": c} for c in _colors(len(nets)))))
    else:
        classes = check_int_list("classes", range(min(k, MAX_CLASSES)) if classes is None else classes, 0, k - 1,
                                 unique=True, hint=f" (the model has {k} outputs)")
        draw = functools.partial(_draw_classes, classes=classes)
        styles = dict(zip(nets, ({"color": "0.3", "alpha": a} for a in _width_alphas(len(nets)))))
    seeds = {w: np.stack([r.outputs for r in runs]) for w, runs in nets.items()}  # (S, T+1, M[, k])
    fig, out_axes, res_axes, loss_ax = _trajectory_layout(inputs, ref.m, residuals, loss)
    steps = np.arange(ref.steps + 1)
    for ax, i in zip(out_axes, inputs):
        draw(ax, steps, limit, {w: s[:, :, i] for w, s in seeds.items()}, i, nets, styles)
        if y is not None and i < ref.m:
            _draw_target(ax, y[i], classes)
    for ax, i in zip(res_axes, inputs):
        _draw_residuals(ax, steps, limit, {w: s[:, :, i] for w, s in seeds.items()}, i, nets, styles, classes)
    if loss_ax is not None:
        _draw_loss(loss_ax, steps, limit, nets, styles)
    _trajectory_legend(fig, out_axes[0], limit, nets, classes)
    fig.suptitle(_trajectory_title(limit, nets, k), fontsize=10)
    return fig


def _trajectory_title(limit, nets: dict, k: int) -> str:
    what = "$f_t(\\xi)$" if k == 1 else "$f^c_t(\\xi)$"
    if limit is None:  # one finite run
        return f"Outputs {what} of one network, {next(iter(nets.values()))[0].label} (one seed: no band)"
    if not nets:
        return f"Outputs {what} of the infinite-width limit; band: {BAND}"
    return f"Outputs {what}: finite widths (seed means) and the infinite-width limit; bands: {BAND}"


def _trajectory_layout(inputs, m: int, residuals: bool, loss: bool):
    """The figure and its axes: outputs and residuals per input, the loss on the right."""
    ncols = min(len(inputs), 4)
    nrows = math.ceil(len(inputs) / ncols)
    per = 2 if residuals else 1  # grid rows per row of inputs
    fig = _new_figure((3.4 * (ncols + loss), (2.9 + 1.9 * residuals) * nrows + 0.9))
    gs = fig.add_gridspec(nrows * per, ncols + loss, height_ratios=[3, 2] * nrows if residuals else None)
    out_axes, res_axes = [], []
    for idx, i in enumerate(inputs):
        r, c = divmod(idx, ncols)
        ax = fig.add_subplot(gs[r * per, c], label=f"outputs {i}")
        ax.set_title(f"$\\xi_{{{i}}}$ ({'train' if i < m else 'eval'})", fontsize=10)
        out_axes.append(ax)
    for idx, i in enumerate(inputs if residuals else []):
        r, c = divmod(idx, ncols)
        ax = fig.add_subplot(gs[r * per + 1, c], sharex=out_axes[idx], label=f"residuals {i}")
        out_axes[idx].tick_params(labelbottom=False)
        res_axes.append(ax)
    for ax in res_axes or out_axes:
        ax.set_xlabel("step $t$")
    loss_ax = fig.add_subplot(gs[0:per, ncols], label="loss") if loss else None
    return fig, out_axes, res_axes, loss_ax


def _draw_output(ax, steps, limit, outputs: dict, i: int, nets: dict, styles: dict) -> None:
    """One output: each width's seed mean and band (viridis), the limit black and dashed
    with its band. ``outputs``: width -> (S, T+1) of input ``i``."""
    for w, out in outputs.items():
        iv = interval(out)
        ax.plot(steps, iv.value, lw=1.2, label=nets[w][0].label, **styles[w])
        _fill(ax, steps, iv, styles[w]["color"], alpha=0.15)
    if limit is not None:
        iv = _run_interval(limit, limit.outputs_groups[:, :, i])
        ax.plot(steps, iv.value, color="k", lw=1.6, ls="--", label=limit.label)
        _fill(ax, steps, iv, "k", alpha=0.25)
    ax.set_ylabel("$f_t(\\xi)$")


def _width_alphas(count: int) -> list[float]:
    """Opacity of each of ``count`` widths, smallest first."""
    return [0.3 + 0.6 * j / max(count - 1, 1) for j in range(count)]


def _draw_classes(ax, steps, limit, outputs: dict, i: int, nets: dict, styles: dict, classes) -> None:
    """Several outputs: per class (its colour) each width's seed mean, and the limit, dashed
    with its band. ``outputs``: width -> (S, T+1, k) of input ``i``."""
    for c in classes:
        color = f"C{c % 10}"
        for w, out in outputs.items():
            ax.plot(steps, out[:, :, c].mean(axis=0), color=color, lw=1.0, alpha=styles[w]["alpha"],
                    label=f"{nets[w][0].label}, class {c}")
        if limit is not None:
            iv = _run_interval(limit, limit.outputs_groups[:, :, i, c])
            ax.plot(steps, iv.value, color=color, lw=1.6, ls="--", label=f"{limit.label}, class {c}")
            _fill(ax, steps, iv, color, alpha=0.15)
    ax.set_ylabel("$f^c_t(\\xi)$")


def _draw_target(ax, target, classes) -> None:
    """The target y_i (per class for several outputs) as a dotted horizontal line."""
    if classes is None:
        ax.axhline(float(target), color="C3", ls=":", lw=1.2, label="target $y$")
        return
    for c in classes:
        ax.axhline(float(target[c]), color=f"C{c % 10}", ls=":", lw=1.0, label=f"target $y^{{{c}}}$")


def _draw_residuals(ax, steps, limit, outputs: dict, i: int, nets: dict, styles: dict, classes) -> None:
    """Seed mean − limit per width (and class), with the limit's band around 0."""
    ref = limit.outputs_groups[:, :, i]  # (G, T+1[, k])
    for c in [None] if classes is None else classes:
        pick = (lambda a: a) if c is None else (lambda a: a[..., c])
        iv = _run_interval(limit, pick(ref))
        color = "k" if c is None else f"C{c % 10}"
        _fill(ax, steps, iv, color, alpha=0.2, offset=iv.value)
        for w, out in outputs.items():
            style = styles[w] if c is None else {**styles[w], "color": color}
            ax.plot(steps, pick(out).mean(axis=0) - iv.value, lw=1.1, label=nets[w][0].label, **style)
    ax.axhline(0.0, color="k", lw=0.6, ls="--")
    ax.set_ylabel("$f_t(\\xi) - \\mathring{f}_t(\\xi)$" if classes is None else
                  "$f^c_t(\\xi) - \\mathring{f}^c_t(\\xi)$")


def _draw_loss(ax, steps, limit, nets: dict, styles: dict) -> None:
    """Training loss per width (seed mean and band) and of the limit (with its band)."""
    drawn = []
    for w, runs in nets.items():
        iv = interval(np.stack([r.loss for r in runs]))
        ax.plot(steps, iv.value, lw=1.2, label=runs[0].label, **styles[w])
        _fill(ax, steps, iv, styles[w]["color"], alpha=0.15)
        drawn.append(iv.value)
    if limit is not None:
        iv = _run_interval(limit, limit.loss_groups)
        ax.plot(steps, iv.value, color="k", lw=1.6, ls="--", label=limit.label)
        _fill(ax, steps, iv, "k", alpha=0.25)
        drawn.append(iv.value)
    if np.all(np.concatenate(drawn) > 0):
        _log_y(ax)
    ax.set_title("training loss", fontsize=10)
    ax.set_xlabel("step $t$")
    ax.set_ylabel("$L_t$")


def _trajectory_legend(fig, ax, limit, nets: dict, classes) -> None:
    """One figure legend: the widths, the limit, the targets and what each band is."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if classes is None:
        handles, labels = ax.get_legend_handles_labels()
    else:
        handles = [Patch(color=f"C{c % 10}", label=f"class {c}") for c in classes]
        handles += [Line2D([], [], color="0.3", lw=1.0, alpha=a, label=runs[0].label)
                    for runs, a in zip(nets.values(), _width_alphas(len(nets)))]
        handles += [Line2D([], [], color="0.3", lw=1.6, ls="--", label=limit.label)] if limit is not None else []
        handles += [h for h in ax.get_lines() if h.get_label().startswith("target")][:1]
        labels = [h.get_label() for h in handles]
    seeds = len(next(iter(nets.values()))) if nets else 0
    if seeds >= 2:
        handles.append(Patch(color="0.5", alpha=0.3))
        labels.append(_band_label("seed-mean", seeds, "seeds"))
    if limit is not None and _has_band(_run_interval(limit, limit.loss_groups)):
        handles.append(Patch(color="k", alpha=0.25))
        labels.append(_band_label("n = ∞", limit.groups, "particle groups"))
    _figure_legend(fig, handles, labels, ncols=4)


# ---------------------------------------------------------------- deviation
def deviation(comparison):
    r"""Log-log deviation of the seed-mean output from the limit against the width.

    Draws dev(n) (see :mod:`zlimit.compare`) and its Monte Carlo noise floor. Points at
    or below the floor (dev(n) <= floor(n)) are drawn hollow and named so in the
    legend: there the width is resolved only up to noise. The fitted power law is
    drawn only when at least 3 widths lie above the floor; otherwise a note in the
    axes says that the slope is not reliable. Guide lines ∝ n^{-1/2} and ∝ n^{-1}
    pass through the first point.

    Parameters
    ----------
    comparison : Comparison or DeviationFit

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> from zlimit import plot
    >>> from zlimit.compare import DeviationFit
    >>> w = np.array([64, 256, 1024])
    >>> fit = DeviationFit(slope=-0.5, slope_se=0.0, intercept=0.0, widths=w, deviations=w ** -0.5,
    ...                    limit_se=np.full(3, 0.05), seed_mean_se=np.full(3, 0.0),
    ...                    noise_floor=np.full(3, 0.05), seeds=4)
    >>> ax = plot.deviation(fit).axes[0]
    >>> [t.get_text() for t in ax.texts]  # two of three widths above the floor: no fit
    ['slope not reliable: 2 of 3 widths lie above the Monte Carlo noise floor, and a rate needs 3']
    """

    fit = getattr(comparison, "fit", comparison)
    w = np.asarray(fit.widths, dtype=float)
    dev = np.asarray(fit.deviations, dtype=float)
    above = fit.above_floor
    fig, axes = _figure(size=(5.6, 5.4))
    ax = axes[0, 0]
    ax.loglog(w[above], dev[above], "o", color="C0", label="deviation (RMS over $t \\geq 1$, inputs)")
    if not above.all():
        ax.loglog(w[~above], dev[~above], "o", color="C0", mfc="none", label="at or below the noise floor")
    ax.loglog(w, fit.noise_floor, ":", color="0.4", label="noise floor (limit se ⊕ seed-mean se)")
    if fit.reliable and math.isfinite(fit.slope):
        ax.loglog(w, fit.predict(w), "-", color="C0", lw=1, label=_slope_label(fit))
    else:
        ax.text(0.03, 0.04, f"slope not reliable: {fit.unreliable_because}", transform=ax.transAxes, fontsize=7,
                color="C3", va="bottom", wrap=True)
    for p, style in ((0.5, "--"), (1.0, "-.")):
        ax.loglog(w, dev[0] * (w / w[0]) ** (-p), style, color="C3" if p == 1.0 else "C1", lw=0.9,
                  label=f"$\\propto n^{{-{p:g}}}$")
    ax.set_xscale("log", base=2)
    _log_y(ax)
    ax.set_xticks(w, [str(int(v)) for v in w])
    ax.minorticks_off()
    ax.set_xlabel("width $n$")
    ax.set_ylabel("deviation $\\mathrm{RMS}_{t,a}(\\bar{f}_t - \\mathring{f}_t)$")
    _figure_legend(fig, *ax.get_legend_handles_labels(), ncols=1)
    ax.set_title(f"Convergence to the limit ({fit.seeds} seed(s) per width)", fontsize=10)
    return fig


def _slope_label(fit) -> str:
    """'fit: slope −0.52 (−0.71..−0.33, 95% t-interval, k−2 = 3 dof)'."""
    low, high = fit.slope_interval()
    return f"fit: slope {fit.slope:.2f} ({low:.2f}..{high:.2f}, 95% t-interval, k−2 = {len(fit.widths) - 2} dof)"


# ---------------------------------------------------------------- coord check
def coordinate_size(run, layer: int, kind: str) -> np.ndarray:
    """Per-coordinate size of a feature, sqrt(mean over inputs of E[Z²]), shape (T+1,).

    For a finite run this is the RMS entry of v_t(ξ) over coordinates and inputs,
    sqrt(mean_a ‖v_t(ξ_a)‖² / n); for a limit run sqrt(mean_a E[(Z^{v_t(ξ_a)})²]).

    Examples
    --------
    >>> import numpy as np, zlimit
    >>> from zlimit.plot import coordinate_size
    >>> X, y = zlimit.datasets.gaussian(2, 3, seed=0)
    >>> net = zlimit.train_finite(zlimit.MLP(depth=1, lr=0.5), X, y, width=64, steps=2)
    >>> size = coordinate_size(net, 1, "h")
    >>> size.shape, bool(np.allclose(size ** 2, np.einsum("taa->ta", net.kernel(1, "h")).mean(axis=1)))
    ((3,), True)
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
    r"""μP coordinate check: feature sizes against the width, a few steps per panel.

    In μP every curve is flat in n (the coordinates stay Θ(1) during training) and
    meets the limit point at "∞"; in a wrong parametrization some curves grow or
    shrink with n. The y axis (RMS coordinate sqrt(E[Z²]), :func:`coordinate_size`)
    is logarithmic. Error bars are 95% t-intervals: over the seeds of a width, and
    over the particle groups for the limit.

    Parameters
    ----------
    runs_by_width : mapping
        width -> Run, or width -> sequence of Runs (seeds; their sizes are averaged).
    limit : Run, optional
        Drawn at "∞": the size of the pooled kernel, with the 95% t-interval of the
        per-group sizes (G − 1 dof), and a dotted line at its value.
    layer_kinds : sequence of (kind, layer) or str, optional
        E.g. ``[("h", 1), ("x", 2)]`` or ``["h1", "x2"]``; default h^l and x^l of
        every hidden layer.
    steps : sequence of int, optional
        Steps drawn (default: 0, the middle step and the last step).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import zlimit
    >>> from zlimit import plot
    >>> X, y = zlimit.datasets.gaussian(2, 3, seed=0)
    >>> model = zlimit.MLP(depth=1, lr=0.5)
    >>> runs = {n: zlimit.train_finite(model, X, y, width=n, steps=2) for n in (16, 64)}
    >>> limit = zlimit.simulate(model, X, y, steps=2, particles=400, groups=4, progress=False)
    >>> ax = plot.coord_check(runs, limit=limit).axes[0]
    >>> ax.get_yscale(), ax.get_ylabel(), ax.get_title()
    ('log', 'RMS coordinate $\\sqrt{E[Z^2]}$', '$h^{1}$')
    """
    if not runs_by_width:
        raise ValueError("runs_by_width is empty: give width -> Run (or list of Runs)")
    widths = sorted(runs_by_width)
    first = _runs(runs_by_width[widths[0]])[0]
    L, T = first.model.depth, first.steps
    if layer_kinds is None:
        layer_kinds = [(k, l) for l in range(1, L + 1) for k in ("h", "x")]
    pairs = [parse_key(item)[:2] if isinstance(item, str) else (item[0], int(item[1])) for item in layer_kinds]
    if steps is None:
        steps = sorted({0, T // 2, T})
    else:
        steps = [s % (T + 1) for s in check_int_list("steps", steps, -(T + 1), T,
                                                      hint=f" (the runs have steps 0..{T}; negative ones count from the end)")]
    ncols = min(len(pairs), 3)
    nrows = math.ceil(len(pairs) / ncols)
    fig, axes = _figure(nrows, ncols, size=(3.4, 3.0))
    colors = _colors(len(steps))
    inf_x = _inf_position(widths) if limit is not None else None
    for k, (kind, layer) in enumerate(pairs):
        ax = axes.flat[k]
        seeds = [interval(np.stack([coordinate_size(r, layer, kind) for r in _runs(runs_by_width[w])]))
                 for w in widths]  # per width: over seeds, (T+1,)
        for j, (s, c) in enumerate(zip(steps, colors)):
            mean = np.array([iv.value[s] for iv in seeds])
            ax.plot(widths, mean, "o-", color=c, ms=3, lw=1, label=f"t = {s}")
            half = np.array([iv.high[s] - iv.value[s] for iv in seeds])
            if np.any(half > 0):
                ax.errorbar(widths, mean, yerr=half, fmt="none", color=c, capsize=2, lw=0.8)
            if limit is not None:
                _draw_limit_size(ax, limit, layer, kind, s, inf_x, c, label=j == 0)
        _width_axis(ax, widths, inf_x)
        _log_y(ax)
        ax.set_ylabel("RMS coordinate $\\sqrt{E[Z^2]}$")
        ax.set_title(f"${kind}^{{{layer}}}$", fontsize=10)
    for ax in list(axes.flat)[len(pairs):]:
        ax.set_visible(False)
    _figure_legend(fig, *axes.flat[0].get_legend_handles_labels(), ncols=len(steps) + 1)
    fig.suptitle(f"Coordinate check (flat in $n$ ⇔ features Θ(1), as in μP); error bars: {BAND}", fontsize=10)
    return fig


def _draw_limit_size(ax, limit, layer: int, kind: str, s: int, inf_x: float, color, label: bool) -> None:
    """The limit's RMS coordinate at step ``s`` from the pooled kernel, with the 95%
    t-interval of the per-group sizes, and a dotted line at its value."""
    kg = limit.kernel_groups(layer, kind)[:, s]
    per = np.sqrt(np.einsum("gaa->ga", kg).mean(axis=1))
    iv = _run_interval(limit, per, value=np.sqrt(np.einsum("aa->a", kg.mean(axis=0)).mean()))
    text = f"n = ∞: {interval_label(0.95, limit.groups)}" if label else None
    ax.errorbar([inf_x], [iv.value], yerr=[[iv.value - iv.low], [iv.high - iv.value]], fmt="s", color=color, ms=4,
                capsize=2, label=text)
    ax.axhline(iv.value, color=color, lw=0.6, ls=":")


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


def vs_width(curves: Mapping, ylabel: str, title: str = "", xlabel: str = "width $n$", logy: bool = False,
             width_axis: bool | None = None, ax=None, band: str = BAND):
    r"""Curves with confidence bands; an x value of ``inf`` is drawn at "∞".

    Parameters
    ----------
    curves : mapping
        label -> ``(x, estimates)`` with estimates a sequence of
        :class:`~zlimit.diagnostics.Estimate` (value and [low, high]) or of numbers;
        or label -> dict with keys ``x``, ``value`` and optionally ``low``, ``high``.
    ylabel, title, xlabel : str
        Matplotlib mathtext is allowed (``"$\\lambda_{\\min}$"``).
    logy : bool
        Logarithmic y axis.
    width_axis : bool, optional
        Log-2 x axis with an "∞" tick; default: when any x is infinite or the x
        values span more than a factor 8.
    ax : matplotlib Axes, optional
        Draw into this axes (e.g. a panel of a larger figure) instead of a new figure.
    band : str
        What [low, high] is, the legend's title when any curve has a band (default
        :data:`zlimit._stats.BAND`, "95% t-interval, G−1 dof", that of every
        :class:`~zlimit.diagnostics.Estimate`); say so when giving other intervals.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import math
    >>> from zlimit import plot
    >>> curve = {"x": [64, 256, math.inf], "value": [0.5, 0.4, 0.35], "low": [0.4, 0.35, 0.33],
    ...          "high": [0.6, 0.45, 0.37]}
    >>> ax = plot.vs_width({"μP": curve}, ylabel="$\\lambda_{\\min}$").axes[0]
    >>> [t.get_text() for t in ax.get_xticklabels()], ax.get_legend().get_title().get_text()
    (['64', '256', '∞'], 'bands: 95% t-interval, G−1 dof')
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
    banded = False
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
                banded = True
        for xv, vv, l, h in zip(x[~fin], v[~fin], lo[~fin], hi[~fin]):
            if logy and not vv > 0:
                continue
            if logy:
                l = max(l, vv * 1e-3)
            ax.errorbar([inf_x], [vv], yerr=[[max(vv - l, 0.0)], [max(h - vv, 0.0)]], fmt="*", ms=9,
                        color=color, capsize=3, label=None if xs.size else label)
            ax.axhline(vv, color=color, lw=0.6, ls=":")
            banded = banded or h > l
    if width_axis:
        _width_axis(ax, finite_x, inf_x)
    ax.set_xlabel(xlabel)
    if logy:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, title=f"bands: {band}" if banded else None, title_fontsize=7)
    return fig


def min_eigenvalue(curves: Mapping, xlabel: str = "width $n$", title: str = "", logy: bool = True,
                   ylabel: str = "$\\lambda_{\\min}$ (normalised Gram)", ax=None):
    r"""Smallest-eigenvalue curves against the step or the width, with CI bands.

    Parameters
    ----------
    curves : mapping
        label -> ``(x, estimates)``, estimates being
        :class:`~zlimit.diagnostics.Estimate` objects from
        :func:`zlimit.diagnostics.min_eigenvalue` (their ``[low, high]``, the 95%
        t-interval over the groups, gives the band) or plain numbers; x = ``inf``
        marks the infinite-width value. Also label -> dict(x=..., value=..., low=...,
        high=...).
    xlabel : str
        "width $n$" (log axis with "∞") or e.g. "step $t$".
    logy : bool
        Logarithmic y axis (default); eigenvalues <= 0 are then not drawn.
    ax : matplotlib Axes, optional
        Draw into this axes instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import zlimit
    >>> from zlimit import diagnostics, plot
    >>> X, y = zlimit.datasets.gaussian(3, 4, seed=0)
    >>> limit = zlimit.simulate(zlimit.MLP(depth=2, lr=0.5), X, y, steps=2, particles=400, groups=4,
    ...                         progress=False)
    >>> ests = [diagnostics.min_eigenvalue(diagnostics.gram_per_group(limit, 1, "h", step=t)) for t in range(3)]
    >>> ax = plot.min_eigenvalue({"limit": (range(3), ests)}, xlabel="step $t$").axes[0]
    >>> ax.get_ylabel(), ax.get_yscale()
    ('$\\lambda_{\\min}$ (normalised Gram)', 'log')
    """
    return vs_width(curves, ylabel=ylabel, title=title or "Smallest eigenvalue of the feature Gram",
                    xlabel=xlabel, logy=logy, width_axis=None if xlabel.startswith("width") else False, ax=ax)
