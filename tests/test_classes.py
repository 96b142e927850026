"""Runs of k > 1 outputs (maths §6) downstream of the producers: run files, xarray, the
TOML configuration, compare's table and deviation, the trajectory figure and the CLI.

Runs are built by hand (random arrays of the documented shapes), so each test checks
one consumer against values computed here, not against another consumer's output.
"""
from __future__ import annotations

import dataclasses
import io as stdio
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.colors import to_hex
from scipy import stats

import zlimit
from zlimit import cli
from zlimit import io as zio
from zlimit._config import ConfigError, parse_config
from zlimit._results import Run
from zlimit.compare import CLASS_TABLE_COLUMNS, TABLE_COLUMNS, Comparison, _rows, deviation_fit
from zlimit.plot import trajectories

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits10_xent.toml"


def every_extension(k: int = 3) -> zlimit.MLP:
    return zlimit.MLP(depth=2, activation="silu", loss="xent", outputs=k, lr=0.1, bias_std=[0.5, 0.7, 0.0],
                      bias_lr_mult=[1.0, 2.0, 3.0], momentum=0.9, weight_decay=0.01)


def class_run(model=None, G=2, T=2, M=3, m=2, outputs=None, signals=None, seed=0) -> Run:
    """A run of ``model`` (default :func:`every_extension`) with random arrays of the
    documented shapes; ``outputs``/``signals`` replace outputs_groups/error_signals_groups."""
    model = model or every_extension()
    k = (model.outputs,) if model.outputs > 1 else ()
    rng = np.random.default_rng(seed)
    kernels = {f"{kind}{l}": rng.standard_normal((G, T + 1, M, M)) for kind in "hx" for l in (1, 2)}
    return Run(model=model, meta={"kind": "limit", "steps": T, "m": m, "m_eval": M - m},
               outputs_groups=rng.standard_normal((G, T + 1, M, *k)) if outputs is None else outputs,
               loss_groups=rng.standard_normal((G, T + 1)),
               error_signals_groups=rng.standard_normal((G, T, m, *k)) if signals is None else signals,
               kernels=kernels)


def file_parts(run) -> tuple[dict, dict]:
    """The arrays of ``run``'s saved file and its parsed JSON document."""
    buf = stdio.BytesIO()
    zio.save(run, buf)
    with np.load(stdio.BytesIO(buf.getvalue()), allow_pickle=False) as z:
        entries = {k: z[k] for k in z.files}
    return entries, json.loads(str(entries["__meta__"][()]))


def write_file(path, entries, info):
    np.savez(path, **{**entries, "__meta__": np.array(json.dumps(info))})
    return path


# ---------------------------------------------------------------------- run files
def test_round_trip_of_a_class_run_with_every_extension(tmp_path):
    run = class_run()
    loaded = zio.load(run.save(tmp_path / "r.npz"))
    for name in ("outputs_groups", "loss_groups", "error_signals_groups"):
        a, b = getattr(run, name), getattr(loaded, name)
        assert a.shape == b.shape and a.tobytes() == b.tobytes()
    assert loaded.outputs_groups.shape == (2, 3, 3, 3) and loaded.error_signals_groups.shape == (2, 2, 2, 3)
    got = loaded.model
    assert (got.outputs, got.bias_std, got.bias_lr_mult, got.momentum, got.weight_decay) == (
        3, (0.5, 0.7, 0.0), (1.0, 2.0, 3.0), 0.9, 0.01)
    assert got.loss.name == "xent" and got.decay == pytest.approx(1 - 0.1 * 0.01, rel=1e-15)
    assert got.bias_eta == pytest.approx((0.1, 0.2, 0.3), rel=1e-15)
    assert got == run.model
    _, info = file_parts(run)
    assert info["format_version"] == zio.FORMAT_VERSION == 3
    assert {k: info["model"][k] for k in ("outputs", "bias_std", "bias_lr_mult", "momentum", "weight_decay")} == {
        "outputs": 3, "bias_std": [0.5, 0.7, 0.0], "bias_lr_mult": [1.0, 2.0, 3.0], "momentum": 0.9,
        "weight_decay": 0.01}


def test_one_bias_std_round_trips_as_hidden_biases_and_a_zero_output_bias(tmp_path):
    model = zlimit.MLP(depth=2, lr=0.2, outputs=2, bias_std=0.5, weight_decay=1.0)
    loaded = zio.load(class_run(model).save(tmp_path / "r.npz")).model
    assert loaded.bias_std == (0.5, 0.5, 0.0) and loaded.outputs == 2 and loaded.decay == pytest.approx(0.8)
    assert loaded == model


OLD_KEYS = ("outputs", "bias_std", "bias_lr_mult", "momentum", "weight_decay")


def old_format(tmp_path, run, name="old.npz"):
    """``run`` saved as a version 1 file: the model description without the §6 keys."""
    entries, info = file_parts(run)
    info["format_version"] = 1
    for k in OLD_KEYS:
        del info["model"][k]
    return write_file(tmp_path / name, entries, info)


def test_a_version_1_file_loads_with_the_extensions_off(tmp_path):
    model = zlimit.MLP(depth=2, activation="tanh", lr=0.3, init_std=[1.0, 2.0, 0.5])
    path = old_format(tmp_path, class_run(model))
    got = zio.load(path).model
    assert (got.outputs, got.bias_std, got.bias_lr_mult, got.momentum, got.weight_decay, got.decay) == (
        1, None, (1.0, 1.0, 1.0), 0.0, 0.0, 1.0)
    assert not got.has_bias and got == model
    assert zio.load(path, model=model).model is model  # model= is compared with the implied fields
    with pytest.raises(ValueError, match=r"does not match .*momentum: file 0\.0, given 0\.5"):
        zio.load(path, model=zlimit.MLP(depth=2, activation="tanh", lr=0.3, init_std=[1.0, 2.0, 0.5], momentum=0.5))


def test_a_version_1_file_with_a_class_axis_is_refused(tmp_path):
    # a run of 3 outputs whose file says nothing of outputs, so k = 1
    path = old_format(tmp_path, class_run(zlimit.MLP(depth=2, outputs=3)))
    with pytest.raises(ValueError, match=r"its parts disagree: outputs_groups has shape \(2, 3, 3, 3\), expected "
                                         r"\(G, T\+1, M\) with G >= 1 and T >= 0 for a model of 1 output"):
        zio.load(path)


@pytest.mark.parametrize("model, outputs, signals, message", [
    (every_extension(), (2, 3, 3), None,
     r"outputs_groups has shape \(2, 3, 3\), expected \(G, T\+1, M, k\) with G >= 1 and T >= 0 for a model of "
     r"k = 3 outputs"),
    (every_extension(), (2, 3, 3, 4), None, r"outputs_groups has shape \(2, 3, 3, 4\), expected \(G, T\+1, M, k\)"),
    (every_extension(), None, (2, 2, 2),
     r"error_signals_groups has shape \(2, 2, 2\), expected \(G, T, m, k\) = \(2, 2, m, 3\) with m <= M = 3 "
     r"for a model of k = 3 outputs"),
    (every_extension(), None, (2, 2, 2, 2), r"error_signals_groups has shape \(2, 2, 2, 2\), expected"),
    (zlimit.MLP(depth=2), (2, 3, 3, 1), (2, 2, 2, 1),
     r"outputs_groups has shape \(2, 3, 3, 1\), expected \(G, T\+1, M\) with G >= 1 and T >= 0 for a model of "
     r"1 output"),
    (zlimit.MLP(depth=2), None, (2, 2, 2, 1), r"error_signals_groups has shape \(2, 2, 2, 1\), expected \(G, T, m\) "
                                              r"= \(2, 2, m\)"),
])
def test_saving_refuses_a_class_axis_that_disagrees_with_the_model(tmp_path, model, outputs, signals, message):
    run = class_run(model, outputs=None if outputs is None else np.zeros(outputs),
                    signals=None if signals is None else np.zeros(signals))
    with pytest.raises(ValueError, match="this run cannot be saved, its parts disagree: " + message):
        zio.save(run, tmp_path / "r.npz")
    assert not list(tmp_path.iterdir())


def test_loading_refuses_a_file_whose_model_has_other_outputs(tmp_path):
    entries, info = file_parts(class_run())
    info["model"]["outputs"] = 2
    with pytest.raises(ValueError, match=r"its parts disagree: outputs_groups has shape \(2, 3, 3, 3\), expected "
                                         r"\(G, T\+1, M, k\) .* k = 2 outputs"):
        zio.load(write_file(tmp_path / "r.npz", entries, info))


def test_to_xarray_has_a_class_dimension_exactly_with_several_outputs():
    try:  # fail, do not skip: xarray belongs to the test extra
        import xarray  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"this test needs xarray ({exc}); install the test extra: pip install '.[test]'", pytrace=False)
    run = class_run()
    ds = run.to_xarray()
    assert ds["outputs"].dims == ("group", "step", "input", "class")
    assert ds["error_signals"].dims == ("group", "step", "input", "class")
    assert "class" in ds.coords and ds.coords["class"].values.tolist() == [0, 1, 2] and ds.sizes["class"] == 3
    assert ds["outputs"].sel(group=1, step=2, input=0, **{"class": 2}).item() == run.outputs_groups[1, 2, 0, 2]
    assert ds["error_signals"].values[:, :-1, :run.m].tobytes() == run.error_signals_groups.tobytes()
    assert json.loads(ds.attrs["model"])["outputs"] == 3
    one = class_run(zlimit.MLP(depth=2)).to_xarray()
    assert "class" not in one.dims and one["outputs"].dims == ("group", "step", "input")


# ---------------------------------------------------------------------- configuration
def config(model=None, data=None) -> dict:
    return {"model": {"depth": 2, "lr": 0.1, "loss": "xent", "outputs": 3, **(model or {})},
            "data": {"source": "digits", "classes": [0, 1, 2], "per_class": 2, **(data or {})},
            "run": {"steps": 2}}


def test_config_model_table_takes_the_extensions(tmp_path):
    cfg = parse_config(config({"activation": "silu", "bias_std": 0.5, "bias_lr_mult": [1, 2, 3], "momentum": 0.9,
                               "weight_decay": 0.01}), tmp_path / "c.toml")
    m = cfg.model
    assert (m.outputs, m.bias_std, m.bias_lr_mult, m.momentum, m.weight_decay) == (
        3, (0.5, 0.5, 0.0), (1.0, 2.0, 3.0), 0.9, 0.01)
    assert m == zlimit.MLP(depth=2, activation="silu", lr=0.1, loss="xent", outputs=3, bias_std=0.5,
                           bias_lr_mult=[1.0, 2.0, 3.0], momentum=0.9, weight_decay=0.01)


@pytest.mark.parametrize("key, value, message", [
    ("outputs", 0, "outputs must be an integer in [1, 100000] (classes), got 0 (out of range)"),
    ("outputs", 1, "loss 'xent' (softmax cross-entropy) needs outputs >= 2 classes, got outputs = 1"),
    ("outputs", 2 ** 64, "outputs = 18446744073709551616 does not fit in 64 bits (TOML integers are in "
                         "[-2**63, 2**63 - 1])"),
    ("momentum", 1.0, "momentum must be in [0, 1) (the heavy-ball β), got 1.0"),
    ("weight_decay", 20.0, "lr * weight_decay must be below 1 (the decay factor 1 − lr·weight_decay must stay "
                           "positive), got 0.1 * 20.0 = 2.0; lower weight_decay"),
    ("bias_lr_mult", 2.0, "bias_lr_mult applies only with biases; give bias_std (e.g. bias_std=1.0) or remove "
                          "bias_lr_mult"),
    ("bias_std", "1", "bias_std must be a finite number >= 0 or a sequence of depth+1 = 3 of them (one per bias "
                      "b^1..b^3), got '1' (not a number)"),
    ("bias_std", [1.0, 1.0], "bias_std must be a finite number >= 0 or a sequence of depth+1 = 3 of them (one per "
                             "bias b^1..b^3), got 2 entries"),
])
def test_config_model_errors_name_the_file_and_table(key, value, message):
    with pytest.raises(ConfigError) as info:
        parse_config(config({key: value}), "c.toml")
    assert str(info.value) == "c.toml: [model] " + message


def test_digits_labels_follow_the_model(tmp_path):
    """xent takes class indices, mse with k outputs one-hot rows, unless labels says otherwise."""
    index = [0, 0, 1, 1, 2, 2]
    X, y, X_eval = parse_config(config(), tmp_path / "c.toml").load_data()
    assert X.shape == (6, 64) and X_eval is None and y.tolist() == index
    _, y, _ = parse_config(config({"loss": "mse"}), tmp_path / "c.toml").load_data()
    np.testing.assert_array_equal(y, np.eye(3)[index])
    _, y, _ = parse_config(config({"loss": "mse", "outputs": 1}, {"labels": "index", "classes": [0, 1]}),
                           "c.toml").load_data()
    assert y.tolist() == [0, 0, 1, 1]  # explicit labels: class indices as one output's real targets
    _, y, _ = parse_config(config({"loss": "mse", "outputs": 1}, {"classes": [0, 1]}), "c.toml").load_data()
    assert y.tolist() == [-1.0, -1.0, 1.0, 1.0]


@pytest.mark.parametrize("model, data, message", [
    ({}, {"labels": "bogus"}, "[data] labels must be one of ('pm1', 'index', 'onehot'), got 'bogus'"),
    ({}, {"labels": "pm1"}, "[data] classes must be two distinct digits 0..9, got (0, 1, 2) (labels = 'pm1' takes "
                            "two; 'index' or 'onehot' take more)"),
    ({}, {"classes": [4]}, "[data] classes must be at least two distinct digits 0..9, got (4,)"),
    ({"loss": "mse", "outputs": 4}, {}, "[data] y must have shape (m, k) = (6, 4) (one target per output) for loss "
                                        "'mse' with outputs = 4, got (6, 3)"),
    ({}, {"source": "gaussian", "m": 3, "d": 2, "classes": None, "per_class": None},
     "[data] y must hold class labels, integers in [0, 3) (outputs = 3), for loss 'xent', got values [-1. 1.]"),
])
def test_config_data_that_do_not_fit_the_model(model, data, message):
    doc = config(model, data)
    doc["data"] = {k: v for k, v in doc["data"].items() if v is not None}
    with pytest.raises(ConfigError) as info:
        parse_config(doc, "c.toml").load_data()
    assert str(info.value) == "c.toml: " + message


# ---------------------------------------------------------------------- compare
def test_deviation_is_the_rms_over_every_class():
    """Limit 0; at width n every seed has f = c_n on class 0 and 0 on the other two
    classes at t >= 1: dev = c_n / sqrt(3) (the RMS over steps, inputs and classes)."""
    T, M, k = 2, 2, 3
    limit = class_run(outputs=np.zeros((2, T + 1, M, k)), T=T, M=M, m=1)
    finite = {}
    for n, c in ((4, 0.6), (16, 0.3)):
        out = np.zeros((2, T + 1, M, k))
        out[:, 1:, :, 0] = c
        finite[n] = out
    with pytest.warns(zlimit.MonteCarloWarning, match="no reliable slope: 2 of 2 widths"):  # 2 widths: no rate
        fit = deviation_fit(limit, finite)
    np.testing.assert_allclose(fit.deviations, [0.6 / math.sqrt(3), 0.3 / math.sqrt(3)], rtol=1e-14)
    assert fit.slope == pytest.approx(-0.5, rel=1e-12)
    assert fit.limit_se.tolist() == [0.0, 0.0] and fit.seed_mean_se.tolist() == [0.0, 0.0]


def test_table_rows_carry_the_class():
    run = class_run(T=1, M=2, m=1)
    rows = _rows(run, math.inf, -1, with_se=True)
    assert tuple(rows) == CLASS_TABLE_COLUMNS
    q = rows["quantity"]
    assert [int(np.sum(q == name)) for name in ("output", "output_se", "loss", "loss_se")] == [12, 12, 2, 2]
    mean = run.outputs_groups.mean(axis=0)
    for t, a, c in ((0, 0, 0), (1, 1, 2), (1, 0, 1)):
        at = (q == "output") & (rows["step"] == t) & (rows["input"] == a) & (rows["class"] == c)
        assert rows["value"][at].tolist() == [mean[t, a, c]]
        se = (q == "output_se") & (rows["step"] == t) & (rows["input"] == a) & (rows["class"] == c)
        spread = run.outputs_groups[:, t, a, c]
        assert rows["value"][se] == pytest.approx(abs(spread[0] - spread[1]) / 2, rel=1e-12)
    loss = q == "loss"
    assert rows["class"][loss].tolist() == [-1, -1] and rows["input"][loss].tolist() == [-1, -1]
    assert tuple(_rows(class_run(zlimit.MLP(depth=2)), 8.0, 0, with_se=False)) == TABLE_COLUMNS


# ---------------------------------------------------------------------- plots
def comparison(k=3, widths=(4, 16), seed=1):
    """A Comparison of random arrays: a limit of G = 2 groups and, per width, two seed
    runs whose outputs are ``finite[w][s]`` (S = 2, T+1 = 4, M = 3, k)."""
    limit = class_run(every_extension(k), T=3, M=3, m=2, seed=seed)
    rng = np.random.default_rng(seed + 1)
    finite = {w: rng.standard_normal((2, 4, 3, k)) for w in widths}
    runs = {(w, s): dataclasses.replace(
                limit, meta={**limit.meta, "kind": "finite", "width": w, "seed": s}, outputs_groups=out[s][None],
                loss_groups=rng.standard_normal((1, 4)), error_signals_groups=rng.standard_normal((1, 3, 2, k)))
            for w, out in finite.items() for s in (0, 1)}
    return Comparison(limit=limit, finite=runs, table=None, fit=None, widths=list(widths), seeds=[0, 1]), finite


def t_half(per_group: np.ndarray) -> np.ndarray:
    """Half-width of the 95% t-interval of the mean over axis 0 (G − 1 dof), by hand."""
    g = per_group.shape[0]
    return stats.t.ppf(0.975, g - 1) * per_group.std(axis=0, ddof=1) / math.sqrt(g)


def band_edges(collection, x) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of a fill_between polygon at each x."""
    v = collection.get_paths()[0].vertices
    return (np.array([v[np.isclose(v[:, 0], xi), 1].min() for xi in x]),
            np.array([v[np.isclose(v[:, 0], xi), 1].max() for xi in x]))


def bands(ax, x) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(colour, low, high) of every band of ``ax``, in drawing order."""
    return [(to_hex(c.get_facecolor()[0], keep_alpha=False), *band_edges(c, x)) for c in ax.collections]


def figure_legend(fig) -> list[str]:
    (legend,) = fig.legends
    assert all(ax.get_legend() is None for ax in fig.axes)  # one legend, for the figure
    return [t.get_text() for t in legend.get_texts()]


BAND_OF = "band: 95% t-interval, G−1 = 1 dof (G = 2 {})"  # two seeds, two particle groups


def test_trajectories_draw_every_class_of_every_width():
    cmp, finite = comparison()
    fig = trajectories(cmp, inputs=[0, 2])
    axes = {ax.get_label(): ax for ax in fig.axes}
    assert list(axes) == ["outputs 0", "outputs 2", "residuals 0", "residuals 2", "loss"]
    steps = np.arange(4)
    groups = cmp.limit.outputs_groups  # (G, T+1, M, k)
    mean = groups.mean(axis=0)
    colours = [to_hex(f"C{c}") for c in range(3)]
    for i in (0, 2):
        ax = axes[f"outputs {i}"]
        assert len(ax.lines) == 3 * (2 + 1)  # per class: two widths and the limit
        dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert [to_hex(line.get_color()) for line in dashed] == colours
        for c, line in enumerate(dashed):
            np.testing.assert_array_equal(line.get_ydata(), mean[:, i, c])
        solid = [line for line in ax.lines if line.get_linestyle() == "-"]
        assert [to_hex(line.get_color()) for line in solid] == [colours[c] for c in range(3) for _ in range(2)]
        assert [line.get_alpha() for line in solid] == pytest.approx([0.3, 0.9] * 3)
        for line, (c, w) in zip(solid, [(c, w) for c in range(3) for w in (4, 16)]):
            np.testing.assert_allclose(line.get_ydata(), finite[w][:, :, i, c].mean(axis=0), rtol=1e-14)
        # the limit's t-interval band of each class, in its colour
        got = bands(ax, steps)
        assert [colour for colour, *_ in got] == colours
        for c, (_, low, high) in enumerate(got):
            half = t_half(groups[:, :, i, c])
            np.testing.assert_allclose(low, mean[:, i, c] - half, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(high, mean[:, i, c] + half, rtol=1e-12, atol=1e-12)
        # residuals: seed mean − limit per class and width, the limit's band around 0
        res = axes[f"residuals {i}"]
        lines = [line for line in res.lines if line.get_linestyle() == "-"]
        assert [to_hex(line.get_color()) for line in lines] == [colours[c] for c in range(3) for _ in range(2)]
        assert [line.get_alpha() for line in lines] == pytest.approx([0.3, 0.9] * 3)
        for line, (c, w) in zip(lines, [(c, w) for c in range(3) for w in (4, 16)]):
            np.testing.assert_allclose(line.get_ydata(), finite[w][:, :, i, c].mean(axis=0) - mean[:, i, c],
                                       rtol=1e-12, atol=1e-14)
        got = bands(res, steps)
        assert [colour for colour, *_ in got] == colours
        for c, (_, low, high) in enumerate(got):
            half = t_half(groups[:, :, i, c])
            np.testing.assert_allclose(low, -half, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(high, half, rtol=1e-12, atol=1e-12)
    loss = {line.get_label(): line.get_ydata() for line in axes["loss"].lines}
    np.testing.assert_array_equal(loss.pop("n = ∞"), cmp.limit.loss_groups.mean(axis=0))
    assert list(loss) == ["n = 4", "n = 16"]
    for w in (4, 16):
        np.testing.assert_allclose(loss[f"n = {w}"], (cmp.finite[(w, 0)].loss + cmp.finite[(w, 1)].loss) / 2,
                                   rtol=1e-14)
    assert figure_legend(fig) == ["class 0", "class 1", "class 2", "n = 4", "n = 16", "n = ∞",
                                  "seed-mean " + BAND_OF.format("seeds"),
                                  "n = ∞ " + BAND_OF.format("particle groups")]


def test_trajectories_classes_argument():
    cmp, finite = comparison()
    fig = trajectories(cmp, inputs=[1], classes=[2])
    out, res = fig.axes[:2]
    assert (out.get_label(), res.get_label()) == ("outputs 1", "residuals 1")
    assert {to_hex(line.get_color()) for line in out.lines} == {to_hex("C2")} and len(out.lines) == 3
    assert [to_hex(c.get_facecolor()[0], keep_alpha=False) for c in out.collections] == [to_hex("C2")]
    drawn = [line for line in res.lines if line.get_linestyle() == "-"]  # besides the dashed zero line
    assert {to_hex(line.get_color()) for line in drawn} == {to_hex("C2")} and len(drawn) == 2
    limit = cmp.limit.outputs[:, 1, 2]
    for line, w in zip(drawn, (4, 16)):
        np.testing.assert_allclose(line.get_ydata(), finite[w][:, :, 1, 2].mean(axis=0) - limit, rtol=1e-12,
                                   atol=1e-14)
    assert [to_hex(c.get_facecolor()[0], keep_alpha=False) for c in res.collections] == [to_hex("C2")]
    assert figure_legend(fig)[0] == "class 2" and "class 0" not in figure_legend(fig)
    with pytest.raises(ValueError, match=r"classes\[0\] must be an integer in \[0, 2\]"):
        trajectories(cmp, classes=[3])
    with pytest.raises(ValueError, match="classes applies to a model of several outputs"):
        trajectories(class_run(zlimit.MLP(depth=2)), classes=[0])


def test_trajectories_of_many_classes_draw_the_first_ten():
    cmp, _ = comparison(k=12)
    fig = trajectories(cmp.limit, inputs=[0])  # a bare limit run: no widths, so no residuals
    assert [ax.get_label() for ax in fig.axes] == ["outputs 0", "loss"]
    lines = fig.axes[0].lines
    assert [to_hex(line.get_color()) for line in lines] == [to_hex(f"C{c}") for c in range(10)]
    for c, line in enumerate(lines):
        np.testing.assert_array_equal(line.get_ydata(), cmp.limit.outputs[:, 0, c])
    assert figure_legend(fig) == [f"class {c}" for c in range(10)] + [
        "n = ∞", "n = ∞ " + BAND_OF.format("particle groups")]


# ---------------------------------------------------------------------- the command line
def test_output_table_of_a_class_run():
    """Groups f ± d: the standard error is |d| per class, and the table shows norms over the classes."""
    f = np.zeros((2, 2, 3))
    f[1] = [[3.0, 4.0, 0.0], [0.0, -1.0, 2.0]]
    d = np.zeros((2, 2, 3))
    d[1] = [[0.3, 0.4, 0.0], [0.0, 0.0, 0.1]]
    run = class_run(outputs=np.stack([f + d, f - d]), T=1, M=2, m=1)
    assert cli._output_table(run).splitlines() == [
        "outputs of 3 classes: norms over the classes, se = sqrt(sum of the squared standard errors), "
        "class = argmax f_T",
        "  input     ‖f_0‖       ‖f_T‖      ± se  class",
        "      0    0.0000      5.0000    0.5000      1",
        "      1    0.0000      2.2361    0.1000      2 (eval)",
    ]
    one_group = class_run(outputs=f[None], G=1, T=1, M=2, m=1)
    assert cli._output_table(one_group).splitlines()[2] == "      0    0.0000      5.0000       n/a      1"


def test_output_table_of_one_output_is_unchanged():
    f = np.array([[0.0, 0.0], [0.25, -1.5]])
    run = class_run(zlimit.MLP(depth=2), outputs=np.stack([f + 0.1, f - 0.1]), T=1, M=2, m=1)
    assert cli._output_table(run).splitlines() == [
        "  input       f_0         f_T      ± se",
        "      0    0.0000      0.2500    0.1000",
        "      1    0.0000     -1.5000    0.1000 (eval)",
    ]


def test_the_ten_class_example_runs(tmp_path, capsys):
    assert cli.main(["simulate", str(EXAMPLE), "--quiet", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    run = zlimit.load(tmp_path / "limit.npz")
    m = run.model
    assert (m.outputs, m.loss.name, m.momentum, m.has_bias, m.activation.name) == (10, "xent", 0.9, True, "silu")
    assert run.outputs.shape == (11, 10, 10) and run.error_signals.shape == (10, 10, 10)
    assert (tmp_path / "outputs.png").read_bytes().startswith(b"\x89PNG")
    f = run.outputs[-1, 3]
    row = next(line for line in out if line.startswith("      3 "))
    assert row.split() == ["3", "0.0000", f"{np.linalg.norm(f):.4f}",
                           f"{np.linalg.norm(run.outputs_se[-1, 3]):.4f}", str(int(np.argmax(f)))]
    assert run.loss[-1] < run.loss[0] == pytest.approx(math.log(10), rel=1e-12)  # f̊_0 = 0: uniform softmax


def test_compare_command_with_classes(tmp_path, capsys):
    text = EXAMPLE.read_text()
    for old, new in (("particles = 8000", "particles = 1000"), ("steps = 10", "steps = 2"),
                     ("widths = [64, 256, 1024]", "widths = [16, 32]"), ("seeds = 2", "seeds = 1")):
        assert old in text
        text = text.replace(old, new)
    (tmp_path / "c.toml").write_text(text)
    assert cli.main(["compare", str(tmp_path / "c.toml"), "--quiet", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    limit = zlimit.load(tmp_path / "o" / "limit.npz")
    # the coord table shows class 0 of inputs 0 and 1; the limit row ± the half-width of its 95% t-interval
    # over the G particle groups (G − 1 dof), the finite rows (one seed) no ±
    assert "f_T(ξ0)[0]" in out and "f_T(ξ1)[0]" in out
    lines = out.splitlines()
    G = limit.groups
    note = (f"± = half-width of the 95% t-interval, G−1 dof "
            f"(G = 1 seeds per finite width, {G} particle groups at ∞)")
    assert note in lines
    row = next(line for line in lines if line.strip().startswith("∞"))
    for i in (0, 1):
        f = limit.outputs_groups[:, -1, i, 0]
        half = stats.t.ppf(0.975, G - 1) * f.std(ddof=1) / math.sqrt(G)
        assert f"{f.mean(): .4f} ± {half:.4f}" in row, row
    finite_rows = [line for line in lines if line.split()[:1] in (["16"], ["32"])]
    assert len(finite_rows) == 2 and not any("±" in line for line in finite_rows), finite_rows
    import pandas as pd

    table = pd.read_csv(tmp_path / "o" / "comparison.csv")
    assert tuple(table.columns) == CLASS_TABLE_COLUMNS
    rows = table[(table["quantity"] == "output") & (table["width"] == math.inf)]
    values = rows.sort_values(["step", "input", "class"])["value"].to_numpy()
    np.testing.assert_allclose(values, limit.outputs.ravel(), rtol=1e-15)
