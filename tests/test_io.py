"""Saving and loading runs: bit-exact round trips and clear errors for bad files."""
from __future__ import annotations

import io as stdio
import json
import math
import os
import sys
import tempfile
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zlimit
from zlimit import io as zio
from zlimit._results import Run

def random_array(rng, shape, dtype):
    """Random values of ``dtype`` with about 20% NaN, ±inf, -0.0, subnormals and extremes."""
    info = np.finfo(dtype)
    special = np.array([np.nan, np.inf, -np.inf, -0.0, info.smallest_subnormal, info.max], dtype=dtype)
    a = rng.standard_normal(shape).astype(dtype)
    if a.size:
        flat = a.reshape(-1)
        hit = rng.random(flat.size) < 0.2
        flat[hit] = rng.choice(special, size=hit.sum())
    return a


def make_run(rng, G, T, M, m, depth, record_steps, novelty, dtype, meta=None, model=None):
    kernels, cross, nov = {}, {}, {}
    for l in range(1, depth + 1):
        for k in ("h", "x"):
            kernels[f"{k}{l}"] = random_array(rng, (G, T + 1, M, M), dtype)
            cross[f"{k}{l}"] = random_array(rng, (G, len(record_steps), T + 1, M, M), dtype)
        kernels[f"dh{l}"] = random_array(rng, (G, T, m, m), dtype)
        if novelty and l >= 2:
            nov[f"fwd{l}"] = random_array(rng, (G, T + 1, M), dtype)
            nov[f"bwd{l}"] = random_array(rng, (G, T + 1, M), dtype)
    return Run(
        model=model or zlimit.MLP(depth=depth, activation="gelu", loss="mse", lr=0.37, init_std=1.3,
                                  lr_mult=[0.5 + 0.1 * i for i in range(depth + 1)]),
        meta=meta if meta is not None else {"kind": "limit", "seed": 3, "steps": T, "m": m, "m_eval": M - m},
        outputs_groups=random_array(rng, (G, T + 1, M), dtype),
        loss_groups=random_array(rng, (G, T + 1), dtype),
        error_signals_groups=random_array(rng, (G, T, m), dtype),
        kernels=kernels,
        cross=cross,
        record_steps=tuple(record_steps),
        novelty=nov,
    )


def assert_bit_equal(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()  # NaN payloads and -0.0 included
    assert np.array_equal(a, b, equal_nan=True)


def assert_runs_equal(r1, r2):
    for name in ("outputs_groups", "loss_groups", "error_signals_groups"):
        assert_bit_equal(getattr(r1, name), getattr(r2, name))
    for group in ("kernels", "cross", "novelty"):
        d1, d2 = getattr(r1, group), getattr(r2, group)
        assert list(d1) == list(d2)
        for key in d1:
            assert_bit_equal(d1[key], d2[key])
    assert r2.record_steps == r1.record_steps and isinstance(r2.record_steps, tuple)
    assert r2.model.describe() == r1.model.describe()
    assert r2.model.sigma == r1.model.sigma and r2.model.eta == r1.model.eta
    assert r2.model.activation.name == r1.model.activation.name


@st.composite
def run_specs(draw):
    G = draw(st.integers(1, 3))
    T = draw(st.integers(0, 3))
    M = draw(st.integers(1, 4))
    m = draw(st.integers(1, M))
    depth = draw(st.integers(1, 3))
    extra = draw(st.lists(st.integers(1, T), unique=True, max_size=2)) if T >= 1 else []
    record_steps = (0, *sorted(extra))
    return dict(G=G, T=T, M=M, m=m, depth=depth, record_steps=record_steps,
                novelty=draw(st.booleans()), dtype=draw(st.sampled_from([np.float64, np.float32])),
                seed=draw(st.integers(0, 2**32 - 1)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=run_specs())
def test_round_trip_bit_exact(spec):
    rng = np.random.default_rng(spec.pop("seed"))
    run = make_run(rng, **spec)
    buf = stdio.BytesIO()
    zio.save(run, buf)
    buf.seek(0)
    assert_runs_equal(run, zio.load(buf))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "run.npz")
        assert zio.save(run, path) is not None
        loaded = zio.load(path)
        assert_runs_equal(run, loaded)
        assert loaded.meta == run.meta
        assert os.listdir(d) == ["run.npz"]  # no temporary file left behind


def test_meta_types_survive(tmp_path):
    meta = {
        "kind": "limit", "particles": 4096, "groups": np.int64(8), "width": None, "ok": True,
        "eta": 0.1, "nan": float("nan"), "big": 2**70, "name": "μP run", "shape": (3, (1, 2)),
        "batches": [[0, 1], [2]], "lookup": {1: "a", (2, 3): [None]},
        "__zlimit_tuple__": "a user key that looks like a tag",
        "arr": np.arange(6, dtype=np.int16).reshape(2, 3), "f32": np.float32(0.1), "zero_d": np.array(2.5),
        "nested": {"x": np.array([np.nan, -0.0])},
    }
    run = make_run(np.random.default_rng(0), G=2, T=2, M=3, m=2, depth=2, record_steps=(0, 1),
                   novelty=True, dtype=np.float64, meta=meta)
    zio.save(run, tmp_path / "r.npz")
    got = zio.load(tmp_path / "r.npz").meta
    assert list(got) == list(meta)
    for key in ("kind", "particles", "width", "ok", "eta", "big", "name", "shape", "batches", "lookup",
                "__zlimit_tuple__"):
        assert got[key] == meta[key] and type(got[key]) is type(meta[key])
    assert math.isnan(got["nan"])
    assert type(got["groups"]) is np.int64 and got["groups"] == 8
    assert type(got["f32"]) is np.float32 and got["f32"] == np.float32(0.1)
    assert_bit_equal(got["arr"], meta["arr"])
    assert_bit_equal(got["zero_d"], meta["zero_d"])
    assert_bit_equal(got["nested"]["x"], meta["nested"]["x"])


def test_file_layout_is_documented_npz(tmp_path):
    run = make_run(np.random.default_rng(1), G=1, T=1, M=2, m=1, depth=2, record_steps=(0,),
                   novelty=True, dtype=np.float64)
    path = tmp_path / "no_suffix"
    assert zio.save(run, path) == path
    assert sorted(os.listdir(tmp_path)) == ["no_suffix"]  # written as given, no ".npz" added
    with np.load(path, allow_pickle=False) as z:
        names = set(z.files)
        info = json.loads(str(z["__meta__"][()]))
    assert {"outputs_groups", "loss_groups", "error_signals_groups", "kernels/h1", "kernels/dh2",
            "cross/x2", "novelty/fwd2", "novelty/bwd2", "__meta__"} <= names
    assert info["format"] == "zlimit-run" and info["format_version"] == 1
    assert info["zlimit_version"] == zlimit.__version__
    assert info["model"] == run.model.describe()
    assert info["record_steps"] == [0]


def write_bytes(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def saved_bytes():
    run = make_run(np.random.default_rng(2), G=2, T=2, M=3, m=2, depth=2, record_steps=(0, 1),
                   novelty=True, dtype=np.float64)
    buf = stdio.BytesIO()
    zio.save(run, buf)
    return buf.getvalue()


def test_truncated_files_raise_value_error(tmp_path):
    data = saved_bytes()
    for frac in (0.0, 0.1, 0.5, 0.9, 0.999):
        p = write_bytes(tmp_path, f"cut{frac}.npz", data[: int(len(data) * frac)])
        with pytest.raises(ValueError, match="not a readable zlimit run file"):
            zio.load(p)


def test_corrupted_array_bytes_raise_value_error(tmp_path):
    data = bytearray(saved_bytes())
    with zipfile.ZipFile(stdio.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("outputs_groups.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    data[start:start + 8] = b"\x00\xff" * 4  # damage the array's data, keep the archive directory
    with pytest.raises(ValueError, match="not a readable zlimit run file"):
        zio.load(write_bytes(tmp_path, "bad.npz", bytes(data)))


def test_random_bytes_and_npy_raise_value_error(tmp_path):
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="not a readable zlimit run file"):
        zio.load(write_bytes(tmp_path, "noise.npz", rng.bytes(4096)))
    with pytest.raises(ValueError, match="not a readable zlimit run file"):
        zio.load(write_bytes(tmp_path, "text.npz", b"hello, not an archive\n"))
    np.save(tmp_path / "a.npy", np.arange(3.0))
    with pytest.raises(ValueError, match="single .npy array"):
        zio.load(tmp_path / "a.npy")
    with pytest.raises(FileNotFoundError):
        zio.load(tmp_path / "missing.npz")


def test_plain_or_foreign_npz_raises_value_error(tmp_path):
    np.savez(tmp_path / "plain.npz", outputs_groups=np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="__meta__"):
        zio.load(tmp_path / "plain.npz")
    np.savez(tmp_path / "other.npz", __meta__=np.array(json.dumps({"format": "something-else"})))
    with pytest.raises(ValueError, match="format 'something-else'"):
        zio.load(tmp_path / "other.npz")
    np.savez(tmp_path / "junk.npz", __meta__=np.array("{not json"))
    with pytest.raises(ValueError, match="JSON"):
        zio.load(tmp_path / "junk.npz")


def test_newer_format_version_and_missing_entry(tmp_path):
    data = saved_bytes()
    with np.load(stdio.BytesIO(data), allow_pickle=False) as z:
        entries = {k: z[k] for k in z.files}
    info = json.loads(str(entries["__meta__"][()]))
    info["format_version"] = 2
    np.savez(tmp_path / "new.npz", **{**entries, "__meta__": np.array(json.dumps(info))})
    with pytest.raises(ValueError, match="version 2"):
        zio.load(tmp_path / "new.npz")
    entries.pop("kernels/h2")
    np.savez(tmp_path / "gap.npz", **entries)
    with pytest.raises(ValueError, match="kernels/h2"):
        zio.load(tmp_path / "gap.npz")


def _phi(x):
    return x / (1.0 + abs(x))


def _dphi(x):
    return 1.0 / (1.0 + abs(x)) ** 2


def test_custom_activation_needs_model(tmp_path):
    custom = zlimit.MLP(depth=2, activation=zlimit.Activation("softsign", _phi, _dphi), lr=0.2)
    run = make_run(np.random.default_rng(4), G=1, T=1, M=2, m=2, depth=2, record_steps=(0,),
                   novelty=False, dtype=np.float64, model=custom)
    zio.save(run, tmp_path / "c.npz")
    with pytest.raises(ValueError, match=r"softsign.*model="):
        zio.load(tmp_path / "c.npz")
    loaded = zio.load(tmp_path / "c.npz", model=custom)
    assert loaded.model is custom
    assert_runs_equal(run, loaded)
    with pytest.raises(ValueError, match="does not match"):
        zio.load(tmp_path / "c.npz", model=zlimit.MLP(depth=2, activation="tanh", lr=0.2))
    # a custom activation that reuses a built-in name is still refused
    fake = zlimit.MLP(depth=2, activation=zlimit.Activation("tanh", _phi, _dphi))
    run.model = fake
    zio.save(run, tmp_path / "f.npz")
    with pytest.raises(ValueError, match="custom activation 'tanh'"):
        zio.load(tmp_path / "f.npz")


def test_unsaveable_content_is_rejected(tmp_path):
    run = make_run(np.random.default_rng(5), G=1, T=1, M=2, m=1, depth=1, record_steps=(0,),
                   novelty=False, dtype=np.float64, meta={"where": {1, 2}})
    with pytest.raises(ValueError, match=r"meta\['where'\].*set"):
        zio.save(run, tmp_path / "x.npz")
    run.meta = {"obj": np.array([None, 1], dtype=object)}
    with pytest.raises(ValueError, match="object"):
        zio.save(run, tmp_path / "x.npz")
    assert not os.listdir(tmp_path)


def test_to_xarray_without_xarray(monkeypatch):
    run = make_run(np.random.default_rng(6), G=1, T=1, M=2, m=1, depth=1, record_steps=(0,),
                   novelty=False, dtype=np.float64)
    monkeypatch.setitem(sys.modules, "xarray", None)  # import xarray -> ImportError
    with pytest.raises(ImportError, match="pip install xarray"):
        zio.to_xarray(run)
