"""Run.to_xarray and zlimit.io.from_xarray: labelled dimensions, and an exact round trip in
memory and through netCDF3 (engine="scipy")."""
from __future__ import annotations

import json
import math
import struct
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import zlimit
from zlimit import io as zio
from zlimit._results import Run

from test_io import assert_bit_equal, assert_runs_equal, make_run, run_specs

try:  # fail, do not skip: xarray belongs to the test extra
    import xarray as xr
except ImportError as exc:  # pragma: no cover
    pytest.fail(f"these tests need xarray ({exc}); install the test extra: pip install '.[test]'", pytrace=False)

DIMS = {"group", "step", "input", "input2", "layer", "kind", "record_step", "stat", "side"}


def same(a, b) -> bool:
    """Equal values of equal types, numpy arrays bit for bit, NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (np.ndarray, np.generic)):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(k1, k2) and same(a[k1], b[k2]) for k1, k2 in zip(a, b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def assert_same_run(run, back):
    assert_runs_equal(run, back)
    assert back.model == run.model and same(back.meta, run.meta), (back.meta, run.meta)


def through_netcdf(ds, path):
    ds.to_netcdf(path, engine="scipy")
    with xr.open_dataset(path, engine="scipy") as opened:
        return zio.from_xarray(opened)


# ---------------------------------------------------------------- real runs
def _data(k=1):
    rng = np.random.default_rng(5)
    X, X_eval = rng.standard_normal((3, 4)), rng.standard_normal((2, 4))
    y = np.array([0, 2, 1]) if k > 1 else rng.standard_normal(3)
    return X, y, X_eval


def _limit(model, k=1, **kw):
    X, y, X_eval = _data(k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zlimit.MonteCarloWarning)  # a few hundred particles per group
        return zlimit.simulate(model, X, y, steps=3, X_eval=X_eval, progress=False, **kw)


PRODUCERS = {
    "mc": lambda: _limit(zlimit.MLP(depth=2, activation="tanh", lr=0.2), particles=512, groups=2,
                         record_steps=(0, 2)),
    "mc, 3 classes, biases": lambda: _limit(
        zlimit.MLP(depth=2, activation="silu", loss="xent", outputs=3, bias_std=0.5, momentum=0.5), k=3,
        particles=512, groups=3, record_steps=(0, 1)),
    "ntk": lambda: _limit(zlimit.MLP(depth=2, activation="relu", lr=0.1), particles=512, groups=2,
                          parametrization="ntk"),
    "exact": lambda: _limit(zlimit.MLP(depth=2, activation="linear", lr=0.1), method="exact", record_steps=(0, 1)),
    "finite, 3 classes, biases": lambda: zlimit.train_finite(
        zlimit.MLP(depth=3, activation="relu", loss="xent", outputs=3, bias_std=[0.3, 0.2, 0.1, 0.4]),
        *_data(3)[:2], width=16, steps=3, X_eval=_data()[2], record_steps=(0, 3)),
}


@pytest.fixture(scope="module", params=list(PRODUCERS))
def produced(request):
    return request.param, PRODUCERS[request.param]()


def test_producers_round_trip_in_memory_and_through_netcdf(produced, tmp_path):
    how, run = produced
    ds = run.to_xarray()
    assert_same_run(run, zio.from_xarray(ds))
    back = through_netcdf(ds, tmp_path / "run.nc")
    assert_same_run(run, back)
    assert (back.ntk is not None) == (how == "ntk") and back.error_model == run.error_model


def test_dimensions_and_values_are_those_of_the_run(produced):
    how, run = produced
    ds = run.to_xarray()
    k, G, T, M, m, L = run.model.outputs, run.groups, run.steps, run.outputs.shape[1], run.m, run.model.depth
    assert set(ds.dims) == DIMS | ({"class"} if k > 1 else set())
    assert dict(ds.sizes) == {"group": G, "step": T + 1, "input": M, "input2": M, "layer": L, "kind": 2,
                              "record_step": len(run.record_steps), "stat": 2, "side": 2,
                              **({"class": k} if k > 1 else {})}
    assert ds.layer.values.tolist() == list(range(1, L + 1)) and ds.kind.values.tolist() == ["h", "x"]
    assert ds.record_step.values.tolist() == list(run.record_steps)
    assert ds.is_train.values.tolist() == [True] * m + [False] * (M - m)
    cls = ("class",) if k > 1 else ()
    assert ds.outputs.dims == ("group", "step", "input", *cls)
    assert_bit_equal(ds.outputs.values, run.outputs_groups)
    assert ds.kernel.dims == ("group", "step", "input", "input2", "layer", "kind")
    for l in range(1, L + 1):
        for kind in ("h", "x"):
            assert_bit_equal(ds.kernel.sel(layer=l, kind=kind).values, run.kernel_groups(l, kind))
            for s in run.record_steps:
                assert_bit_equal(ds.cross_kernel.sel(layer=l, kind=kind, record_step=s).values,
                                 run.cross_kernel_groups(l, kind, s))
            if run.moments:
                for i, stat in enumerate(("mean", "abs")):
                    assert_bit_equal(ds.moments.sel(layer=l, kind=kind, stat=stat).values,
                                     run.moments[f"{kind}{l}"][..., i])
        # χ and the dh kernels have T steps and m inputs: NaN beyond
        dh = ds.dh_kernel.sel(layer=l).values
        assert_bit_equal(dh[:, :T, :m, :m], run.kernel_groups(l, "dh"))
        assert np.isnan(dh[:, T]).all() and np.isnan(dh[:, :, m:]).all() and np.isnan(dh[:, :, :, m:]).all()
    chi = ds.error_signals.values
    assert ds.error_signals.dims == ("group", "step", "input", *cls)
    assert_bit_equal(chi[:, :T, :m], run.error_signals_groups)
    assert np.isnan(chi[:, T]).all() and np.isnan(chi[:, :, m:]).all()
    if how == "ntk":
        assert ds.ntk.dims == ("group", "input", "input2")
        assert_bit_equal(ds.ntk.values, run.ntk)
    else:
        assert "ntk" not in ds
    if run.novelty:  # the Gaussian processes of W^l, l >= 2: layer 1 has none
        assert ds.novelty.dims == ("group", "step", "input", "layer", "side")
        assert np.isnan(ds.novelty.sel(layer=1).values).all()
        assert_bit_equal(ds.novelty.sel(layer=2, side="bwd").values, run.novelty["bwd2"])
    if run.bases:
        assert ds.basis_size.dims == ("group", "step", "layer", "side")
        assert_bit_equal(ds.basis_size.sel(layer=2, side="fwd").values, run.bases["size_fwd2"])
    assert json.loads(ds.attrs["model"]) == run.model.describe()
    assert json.loads(ds.attrs["meta"])["kind"] == run.meta["kind"]


def test_cross_kernels_of_evaluation_inputs_follow_the_documented_nan_rule(produced):
    """Monte Carlo limit: E[Z_s(ξ_e) Z_t(·)], t > s, of an evaluation input in layers >= 2 is
    NaN; every other producer, training inputs and layer 1 have them (Run docstring)."""
    how, run = produced
    cross = run.to_xarray().cross_kernel.sel(record_step=0).isel(step=slice(1, None))
    evaluation, training = cross.sel(input=~cross.is_train), cross.sel(input=cross.is_train)
    assert not np.isnan(training.values).any() and not np.isnan(evaluation.sel(layer=1).values).any()
    deep = evaluation.sel(layer=slice(2, None)).values
    assert np.isnan(deep).all() if how.startswith("mc") else not np.isnan(deep).any()


# ------------------------------------------------------ hand-made (hostile) runs
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=run_specs())
def test_any_layout_round_trips_bit_exact(spec):
    rng = np.random.default_rng(spec.pop("seed"))
    run = make_run(rng, **spec)  # NaN, ±inf, −0.0, subnormals and extremes in every array
    assert_same_run(run, zio.from_xarray(run.to_xarray()))


def test_meta_of_every_type_and_nan_payloads_survive_netcdf(tmp_path):
    meta = {"kind": "limit", "groups": np.int64(8), "width": None, "ok": True, "nan": float("nan"), "big": 2**70,
            "name": "μP run", "shape": (3, (1, 2)), "lookup": {1: "a", (2, 3): [None]},
            "arr": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)), "f32": np.float32(0.1),
            "structured": np.zeros(2, dtype=[("a", "f8"), ("b", "i4")])}
    run = make_run(np.random.default_rng(1), G=2, T=2, M=3, m=2, depth=2, record_steps=(0, 1), novelty=True,
                   dtype=np.float64, meta=meta, ntk=True)
    # a negative quiet NaN with a payload (x86's "default NaN" has the sign bit): kept bit for bit
    run.outputs_groups[0, 0, 0] = struct.unpack("<d", struct.pack("<Q", 0xFFF8_0000_0000_0001))[0]
    back = through_netcdf(run.to_xarray(), tmp_path / "r.nc")
    assert_same_run(run, back)
    assert back.meta["arr"].flags.f_contiguous


def test_integer_and_float32_arrays_keep_their_dtype(tmp_path):
    run = make_run(np.random.default_rng(2), G=1, T=1, M=2, m=1, depth=1, record_steps=(0,), novelty=False,
                   dtype=np.float32)
    run.loss_groups = np.array([[3, -7]], dtype=np.int64)  # held in a float64 variable, exactly
    run.kernels["h1"] = run.kernels["h1"].astype(np.float64)  # kinds of one variable in two dtypes
    ds = run.to_xarray()
    assert ds.loss.dtype == np.float64 and ds.outputs.dtype == np.float32 and ds.kernel.dtype == np.float64
    assert_same_run(run, zio.from_xarray(ds))
    assert_same_run(run, through_netcdf(ds, tmp_path / "r.nc"))


# ----------------------------------------------------------------- refusals
def _small():
    return make_run(np.random.default_rng(3), G=2, T=2, M=3, m=2, depth=2, record_steps=(0, 1), novelty=True,
                    dtype=np.float64)


def _retitled(ds, **attrs):
    return ds.assign_attrs(**attrs)


def _without_attributes(ds):
    out = ds.copy()
    out.attrs = {}
    return out


BAD = {
    "no attributes": (_without_attributes, "its attribute 'zlimit_run' is missing"),
    "cut along step": (lambda ds: ds.isel(step=slice(0, 2)), r"variable 'outputs' has shape \(2, 2, 3\), too small for 'outputs_groups' of shape \(2, 3, 3\) \(was the dataset cut\?\)"),
    "a variable dropped": (lambda ds: ds.drop_vars("cross_kernel"), "variable 'cross_kernel' .* is missing"),
    "transposed": (lambda ds: ds.transpose("step", ...), r"variable 'outputs' has dimensions \('step', 'group'"),
    "a layer dropped": (lambda ds: ds.sel(layer=[1]), "variable 'kernel' has no entry at"),
    "newer version": (lambda ds: _retitled(ds, zlimit_run=ds.attrs["zlimit_run"].replace(
        f'"format_version": {zio.FORMAT_VERSION}', f'"format_version": {zio.FORMAT_VERSION + 1}')),
        f"format version {zio.FORMAT_VERSION + 1} .* upgrade zlimit"),
    "meta not JSON": (lambda ds: _retitled(ds, meta="{"), "'meta' attribute entry is not a JSON document"),
    "model edited": (lambda ds: _retitled(ds, model=ds.attrs["model"].replace('"outputs": 1', '"outputs": 2')),
                     r"its parts disagree: outputs_groups has shape \(2, 3, 3\), expected \(G, T\+1, M, k\)"),
    "dtype edited": (lambda ds: _retitled(ds, zlimit_run=ds.attrs["zlimit_run"].replace('"<f8"', '"|O"', 1)),
                     "has dtype object; run arrays hold real numbers"),
    "damaged meta array": (lambda ds: _retitled(ds, zlimit_run=json.dumps(
        {**json.loads(ds.attrs["zlimit_run"]), "meta_arrays": {"meta/0": "k05VTVBZ"}})), "EOF"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_dataset_that_is_not_a_run_is_refused_in_one_line(case):
    edit, why = BAD[case]
    with pytest.raises(ValueError, match=why) as info:
        zio.from_xarray(edit(_small().to_xarray()))
    assert "\n" not in str(info.value)
    assert case == "newer version" or str(info.value).startswith("the dataset is not a zlimit run dataset")


def test_from_xarray_needs_a_dataset():
    with pytest.raises(ValueError, match="from_xarray needs the xarray.Dataset of Run.to_xarray\\(\\), got DataArray"):
        zio.from_xarray(_small().to_xarray().outputs)


def test_custom_activation_needs_the_model():
    custom = zlimit.MLP(depth=2, activation=zlimit.Activation("softsign", lambda x: x / (1 + abs(x)),
                                                              lambda x: 1 / (1 + abs(x)) ** 2))
    run = make_run(np.random.default_rng(4), G=1, T=1, M=2, m=2, depth=2, record_steps=(0,), novelty=False,
                   dtype=np.float64, model=custom)
    ds = run.to_xarray()
    with pytest.raises(ValueError, match="custom activation 'softsign'"):
        zio.from_xarray(ds)
    assert zio.from_xarray(ds, model=custom).model is custom


@pytest.mark.parametrize("call", ["to", "from"])
def test_without_xarray_a_one_line_import_error(monkeypatch, call):
    run = _small()
    ds = run.to_xarray()
    monkeypatch.setitem(sys.modules, "xarray", None)  # import xarray -> ImportError
    with pytest.raises(ImportError, match=r"needs xarray, which is not installed: pip install zlimit\[xarray\]$"):
        run.to_xarray() if call == "to" else zio.from_xarray(ds)


def test_a_run_whose_parts_disagree_is_not_converted():
    run = _small()
    bad = Run(**{**vars(run), "ntk": np.zeros((2, 3, 2))})
    with pytest.raises(ValueError, match=r"cannot be converted to xarray, its parts disagree: ntk has shape"):
        bad.to_xarray()
