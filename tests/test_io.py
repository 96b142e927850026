"""Saving and loading runs: bit-exact round trips and clear errors for bad files."""
from __future__ import annotations

import functools
import io as stdio
import json
import math
import os
import signal
import sys
import tempfile
import time
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
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


def make_run(rng, G, T, M, m, depth, record_steps, novelty, dtype, meta=None, model=None, moments=True, ntk=False):
    kernels, cross, nov, mom = {}, {}, {}, {}
    for l in range(1, depth + 1):
        for k in ("h", "x"):
            kernels[f"{k}{l}"] = random_array(rng, (G, T + 1, M, M), dtype)
            cross[f"{k}{l}"] = random_array(rng, (G, len(record_steps), T + 1, M, M), dtype)
            if moments:
                mom[f"{k}{l}"] = random_array(rng, (G, T + 1, M, 2), dtype)
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
        moments=mom,
        ntk=random_array(rng, (G, M, M), dtype) if ntk else None,
    )


def assert_bit_equal(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()  # NaN payloads and -0.0 included
    assert np.array_equal(a, b, equal_nan=True)


def assert_runs_equal(r1, r2):
    for name in ("outputs_groups", "loss_groups", "error_signals_groups"):
        assert_bit_equal(getattr(r1, name), getattr(r2, name))
    for group in ("kernels", "cross", "novelty", "bases", "moments"):
        d1, d2 = getattr(r1, group), getattr(r2, group)
        assert list(d1) == list(d2)
        for key in d1:
            assert_bit_equal(d1[key], d2[key])
    assert (r1.ntk is None) == (r2.ntk is None)
    if r1.ntk is not None:
        assert_bit_equal(r1.ntk, r2.ntk)
    assert r2.error_model == r1.error_model
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
                novelty=draw(st.booleans()), moments=draw(st.booleans()), ntk=draw(st.booleans()),
                dtype=draw(st.sampled_from([np.float64, np.float32])),
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
    assert info["format"] == "zlimit-run" and info["format_version"] == 3
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
    info["format_version"] = zio.FORMAT_VERSION + 1
    np.savez(tmp_path / "new.npz", **{**entries, "__meta__": np.array(json.dumps(info))})
    with pytest.raises(ValueError, match=f"version {zio.FORMAT_VERSION + 1}"):
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


# ------------------------------------------------------------ load: arguments
def test_load_needs_a_path_or_file_object(tmp_path):
    path = tmp_path / "r.npz"
    zio.save(make_run(np.random.default_rng(8), G=1, T=1, M=2, m=1, depth=1, record_steps=(0,),
                      novelty=False, dtype=np.float64), path)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(ValueError, match="file descriptor is not accepted"):
            zio.load(fd)
        os.fstat(fd)  # still open: load neither read nor closed it
    finally:
        os.close(fd)
    for bad in (True, False, os.fsencode(path), 2.5, None):
        with pytest.raises(ValueError, match=r"load needs the path of a run file \(str or os.PathLike\)"):
            zio.load(bad)
    with open(path, "rb") as fh:  # an open binary file object is still accepted
        assert zio.load(fh).steps == 1
    with open(path, encoding="latin-1") as fh, pytest.raises(ValueError, match="open it in binary mode"):
        zio.load(fh)
    fh = open(path, "rb")
    fh.close()
    with pytest.raises(ValueError, match="the file object is not a readable zlimit run file: cannot read it"):
        zio.load(fh)


class deadline:
    """Fail (TimeoutError) instead of hanging when the body blocks for ``seconds``."""

    def __init__(self, seconds: int):
        self.seconds = seconds

    def __enter__(self):
        def expire(signum, frame):
            raise TimeoutError(f"blocked for {self.seconds} s")
        self.old = signal.signal(signal.SIGALRM, expire)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes or SIGALRM")
def test_load_refuses_folders_pipes_and_devices(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        zio.load(tmp_path)
    os.mkfifo(tmp_path / "pipe.npz")  # opening it would block until a writer comes
    with deadline(5), pytest.raises(ValueError, match="not a regular file"):
        zio.load(tmp_path / "pipe.npz")
    if os.path.exists("/dev/zero"):  # read from, never written
        with deadline(5), pytest.raises(ValueError, match="not a regular file"):
            zio.load("/dev/zero")


# ------------------------------------------------------ load: damaged bytes
@functools.lru_cache(maxsize=None)
def small_file() -> tuple[Run, bytes, tuple[int, ...]]:
    """A small run, its file, and the offsets of the file's zip headers and directory."""
    run = make_run(np.random.default_rng(7), G=1, T=1, M=2, m=1, depth=1, record_steps=(0,), novelty=False,
                   dtype=np.float64, meta={"kind": "limit", "steps": 1, "m": 1, "m_eval": 1,
                                           "arr": np.arange(3.0), "pair": (1, "a")})
    buf = stdio.BytesIO()
    zio.save(run, buf)
    data = buf.getvalue()
    with zipfile.ZipFile(stdio.BytesIO(data)) as zf:
        structure = {i for i in range(zf.start_dir, len(data))}  # central directory and its end
        for info in zf.infolist():
            o = info.header_offset
            names = int.from_bytes(data[o + 26:o + 28], "little") + int.from_bytes(data[o + 28:o + 30], "little")
            structure.update(range(o, o + 30 + names))
    return run, data, tuple(sorted(structure))


def load_or_refuse(blob: bytes) -> str:
    """"equal" when ``blob`` loads as ``small_file``'s run, bit for bit; "refused" on ValueError."""
    run = small_file()[0]
    try:
        got = zio.load(stdio.BytesIO(blob))
    except ValueError as exc:
        assert "not a readable zlimit run file" in str(exc) and "\n" not in str(exc), str(exc)
        return "refused"
    assert_runs_equal(run, got)
    assert got.error_model == run.error_model and list(got.meta) == list(run.meta)
    assert got.meta["pair"] == (1, "a") and got.meta["steps"] == 1
    assert_bit_equal(got.meta["arr"], run.meta["arr"])
    return "equal"


@settings(max_examples=300, deadline=None)
@given(draw=st.data())
def test_a_flipped_bit_is_refused_or_harmless(draw):
    """A single flipped bit, anywhere or in the zip headers and directory (where the
    parsing is), gives ValueError or the very same run, never another exception."""
    _, data, structure = small_file()
    byte = draw.draw(st.one_of(st.integers(0, len(data) - 1), st.sampled_from(structure)), label="byte")
    bit = draw.draw(st.integers(0, 7), label="bit")
    blob = bytearray(data)
    blob[byte] ^= 1 << bit
    event(load_or_refuse(bytes(blob)))


@settings(max_examples=100, deadline=None)
@given(start=st.integers(0, 10**6), noise=st.binary(min_size=1, max_size=16), cut=st.booleans())
def test_overwritten_or_truncated_bytes_are_refused_or_harmless(start, noise, cut):
    data = small_file()[1]
    start %= len(data)
    blob = data[:start] if cut else data[:start] + noise + data[start + len(noise):]
    event(load_or_refuse(blob))


def test_archive_members_that_lie_are_refused(tmp_path):
    def archive(name, members):
        path = tmp_path / name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Duplicate name"
            with zipfile.ZipFile(path, "w") as zf:
                for member, blob in members:
                    zf.writestr(member, blob)
        return path
    data = small_file()[1]
    with zipfile.ZipFile(stdio.BytesIO(data)) as zf:
        members = [(n, zf.read(n)) for n in zf.namelist()]
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }"
    huge = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(64)
    cases = {"huge.npz": (members + [("meta/9.npy", huge)], r"shape \(1000000000000,\) and dtype float64, larger than its 143 bytes"),
             "raw.npz": (members + [("notes.txt", b"hello")], "'notes.txt' is not a .npy array"),
             "twice.npz": (members + members[:1], "appears twice"),
             "pickle.npz": (members + [("meta/9.npy", _npy(np.array([None], dtype=object)))], "pickle")}
    for name, (content, why) in cases.items():
        with pytest.raises(ValueError, match=why):
            zio.load(archive(name, content))
    assert_runs_equal(small_file()[0], zio.load(archive("same.npz", members)))


def _npy(a: np.ndarray) -> bytes:
    buf = stdio.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


# ----------------------------------------------------------- load: edited JSON
def rewrite(tmp_path, edit, name="edited.npz"):
    """saved_bytes()'s run with its __meta__ (and entries) changed by ``edit(info, entries)``."""
    with np.load(stdio.BytesIO(saved_bytes()), allow_pickle=False) as z:
        entries = {k: z[k] for k in z.files}
    info = json.loads(str(entries["__meta__"][()]))
    text = edit(info, entries) or json.dumps(info)
    np.savez(tmp_path / name, **{**entries, "__meta__": np.array(text)})
    return tmp_path / name


def _depth(info, depth):
    info["model"]["depth"] = depth
    for k in ("init_std", "lr_mult", "bias_lr_mult"):
        info["model"][k] = (info["model"][k] * 2)[:depth + 1]


def _add(info, entries, group, name, array):
    """Add an entry to the file: to a dict's keys, or Θ (group None)."""
    if group is None:
        info[name] = True
    else:
        info[group].append(name)
    entries[name if group is None else f"{group}/{name}"] = array


EDITS = {
    "kind exact, error_model groups": (lambda i, e: i["meta"].update(kind="exact"),
                                       r"error_model 'groups' disagrees with meta\['kind'\] 'exact'"),
    "error_model exact, kind limit": (lambda i, e: i.update(error_model="exact"),
                                      r"error_model 'exact' disagrees with meta\['kind'\] 'limit'"),
    "error_model unknown": (lambda i, e: i.update(error_model="bogus"), "'error_model' is 'bogus'"),
    "deeper model": (lambda i, e: _depth(i, 3), r"kernels has 'h' layers \[1, 2\]; a model of depth 3"),
    "shallower model": (lambda i, e: _depth(i, 1), "kernels key 'h2' does not fit a model of depth 1"),
    "steps": (lambda i, e: i["meta"].update(steps=3), r"meta\['steps'\] = 3 disagrees with the arrays"),
    "m": (lambda i, e: i["meta"].update(m=1), r"meta\['m'\] = 1 disagrees"),
    "m_eval": (lambda i, e: i["meta"].update(m_eval=True), r"meta\['m_eval'\] = True disagrees"),
    "fewer record_steps": (lambda i, e: i.update(record_steps=[0]), r"cross/h1 has shape \(2, 2, 3, 3, 3\)"),
    "record_step past T": (lambda i, e: i.update(record_steps=[0, 9]), r"record_steps \(0, 9\) are not"),
    "record_steps of bools": (lambda i, e: i.update(record_steps=[0, True]), "not a list of integers"),
    "loss shape": (lambda i, e: e.update(loss_groups=np.zeros((2, 4))), r"loss_groups has shape \(2, 4\)"),
    "signals shape": (lambda i, e: e.update(error_signals_groups=np.zeros((2, 2, 4))), "error_signals_groups"),
    "kernel shape": (lambda i, e: e.update({"kernels/dh1": np.zeros((2, 3, 2, 2))}), r"kernels/dh1 has shape"),
    "text kernel": (lambda i, e: e.update({"kernels/h1": np.full((2, 3, 3, 3), "a")}), "kernels/h1 has dtype"),
    "keys not a list": (lambda i, e: i.update(kernels="h1"), "'kernels' is 'h1', not a list"),
    "moments shape": (lambda i, e: e.update({"moments/h1": np.zeros((2, 3, 3, 3))}),
                      r"moments/h1 has shape \(2, 3, 3, 3\), expected \(G, T\+1, M, 2\)"),
    "moments layer missing": (lambda i, e: i["moments"].remove("x2"), r"moments has 'x' layers \[1\]"),
    "moments of dh": (lambda i, e: _add(i, e, "moments", "dh1", np.zeros((2, 3, 3, 2))),
                      "moments key 'dh1' does not fit"),
    "ntk flagged, no entry": (lambda i, e: i.update(ntk=True), r"entries \['ntk'\] are missing"),
    "ntk shape": (lambda i, e: _add(i, e, None, "ntk", np.zeros((2, 3, 2))),
                  r"ntk has shape \(2, 3, 2\), expected \(G, M, M\): \(2, 3, 3\)"),
    "ntk not a bool": (lambda i, e: i.update(ntk=1), "'ntk' is 1, expected true or false"),
    "meta points at an output": (lambda i, e: i["meta"].update(x={"__zlimit_array__": "outputs_groups"}),
                                 "not a meta/ entry"),
    "meta not a dict": (lambda i, e: i.update(meta=[1]), "meta is a list, expected a dict"),
    "model not a dict": (lambda i, e: i.update(model=[2]), "'model' .* must be JSON objects"),
    "unhashable activation": (lambda i, e: i["model"].update(activation=["tanh"]), r"custom activation \['tanh'\]"),
    "nested 10^5 deep": (lambda i, e: json.dumps(i).replace('"seed": 3', '"seed": ' + "[" * 10**5 + "]" * 10**5),
                         "JSON document nests 100002 levels deep, more than the 64"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_edited_metadata_is_refused_naming_the_field(tmp_path, edit):
    change, why = EDITS[edit]
    path = rewrite(tmp_path, change)
    start = time.monotonic()
    with pytest.raises(ValueError, match=why) as info:
        zio.load(path)
    assert time.monotonic() - start < 2.0
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("version", [1, 2])
def test_files_of_versions_1_and_2_load_without_moments_and_ntk(tmp_path, version):
    """Versions 1 and 2 had no moments and no Θ: such a file loads with none, the rest bit for bit."""
    run = make_run(np.random.default_rng(13), G=2, T=2, M=3, m=2, depth=2, record_steps=(0, 1), novelty=True,
                   dtype=np.float64, ntk=True)
    buf = stdio.BytesIO()
    zio.save(run, buf)
    with np.load(stdio.BytesIO(buf.getvalue()), allow_pickle=False) as z:
        entries = {k: z[k] for k in z.files if not k.startswith("moments/") and k != "ntk"}
    info = json.loads(str(entries["__meta__"][()]))
    info["format_version"] = version
    del info["moments"], info["ntk"]
    if version == 1:
        for k in zio.ADDED_MODEL_KEYS:
            del info["model"][k]
    np.savez(tmp_path / "old.npz", **{**entries, "__meta__": np.array(json.dumps(info))})
    got = zio.load(tmp_path / "old.npz")
    assert got.moments == {} and got.ntk is None
    assert_runs_equal(Run(**{**vars(run), "moments": {}, "ntk": None}), got)


def test_save_refuses_moments_or_ntk_of_the_wrong_shape(tmp_path):
    run = make_run(np.random.default_rng(14), G=2, T=1, M=3, m=2, depth=2, record_steps=(0,), novelty=False,
                   dtype=np.float64, ntk=True)
    bad_ntk = Run(**{**vars(run), "ntk": np.zeros((2, 3, 2))})
    with pytest.raises(ValueError, match=r"cannot be saved, .* ntk has shape \(2, 3, 2\), expected \(G, M, M\)"):
        zio.save(bad_ntk, tmp_path / "a.npz")
    one_layer = Run(**{**vars(run), "moments": {"h1": run.moments["h1"]}})
    with pytest.raises(ValueError, match=r"moments has 'h' layers \[1\]; a model of depth 2"):
        zio.save(one_layer, tmp_path / "b.npz")
    assert not any(tmp_path.iterdir())


def test_legacy_file_without_error_model_takes_it_from_kind(tmp_path):
    def legacy(kind):
        def edit(info, entries):
            del info["error_model"]
            info["meta"]["kind"] = kind
        return edit
    assert zio.load(rewrite(tmp_path, legacy("exact"), "e.npz")).error_model == "exact"
    assert zio.load(rewrite(tmp_path, legacy("limit"), "l.npz")).error_model == "groups"


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path):
    meta = {"kind": "limit", "note": "[{" * 5000 + '"\\]', "key[": {"{": "]]]"}}
    run = make_run(np.random.default_rng(9), G=1, T=1, M=2, m=1, depth=1, record_steps=(0,), novelty=False,
                   dtype=np.float64, meta=meta)
    zio.save(run, tmp_path / "s.npz")
    assert zio.load(tmp_path / "s.npz").meta == meta


_LEVELS = {"list": 1, "tuple": 2, "dict": 1, "keyed": 3}


def _json_nesting(x) -> int:
    if isinstance(x, (list, dict)):
        return 1 + max((_json_nesting(v) for v in (x.values() if isinstance(x, dict) else x)), default=0)
    return 0


@settings(max_examples=60, deadline=None)
@given(kinds=st.lists(st.sampled_from(sorted(_LEVELS)), min_size=20, max_size=60), numpy_leaf=st.booleans())
def test_meta_nesting_limit_is_the_same_for_save_and_load(tmp_path_factory, kinds, numpy_leaf):
    """save refuses exactly the meta that would nest the JSON document deeper than load
    accepts (64 levels), and everything it writes loads back equal."""
    value = np.float64(0.5) if numpy_leaf else 0.5
    for kind in reversed(kinds):
        value = {"list": lambda v: [v], "tuple": lambda v: (v,), "dict": lambda v: {"k": v},
                 "keyed": lambda v: {1: v}}[kind](value)
    meta = {"kind": "limit", "deep": value}
    depth = 2 + sum(_LEVELS[k] for k in kinds) + numpy_leaf  # info and meta dicts, then the wrappers
    run = make_run(np.random.default_rng(10), G=1, T=0, M=1, m=1, depth=1, record_steps=(0,), novelty=False,
                   dtype=np.float64, meta=meta)
    path = tmp_path_factory.mktemp("nest") / "n.npz"
    event("refused" if depth > 64 else "saved")
    if depth > 64:
        with pytest.raises(ValueError, match="nested too deeply"):
            zio.save(run, path)
        return
    zio.save(run, path)
    with np.load(path, allow_pickle=False) as z:
        assert _json_nesting(json.loads(str(z["__meta__"][()]))) == depth
    assert zio.load(path).meta == meta


def test_meta_arrays_of_every_layout_round_trip(tmp_path):
    structured = np.zeros(2, dtype=[("μ", "f8"), ("b", "i4")])  # a non-Latin-1 field name: .npy format 3.0
    structured["μ"] = [1.5, -0.0]
    meta = {"kind": "limit", "structured": structured, "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
            "empty": np.zeros((0, 3)), "text": np.array(["ab", "c"]), "void": np.zeros(3, "V0")}
    run = make_run(np.random.default_rng(11), G=1, T=1, M=2, m=1, depth=1, record_steps=(0,), novelty=False,
                   dtype=np.float64, meta=meta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Stored array in format 3.0"
        zio.save(run, tmp_path / "a.npz")
    got = zio.load(tmp_path / "a.npz").meta
    for key in ("structured", "fortran", "empty", "text", "void"):
        assert got[key].dtype == meta[key].dtype and got[key].shape == meta[key].shape
        assert got[key].tobytes(order="A") == meta[key].tobytes(order="A")
        assert got[key].flags.f_contiguous == meta[key].flags.f_contiguous and got[key].flags.writeable


# ------------------------------------------------- every producer round-trips
def _produce(how):
    rng = np.random.default_rng(12)
    X, y, X_eval = rng.standard_normal((3, 2)), rng.standard_normal(3), rng.standard_normal((2, 2))
    if how == "exact":
        return zlimit.simulate(zlimit.MLP(depth=2, activation="linear", lr=0.1), X, y, steps=2, X_eval=X_eval,
                               method="exact", record_steps=(0, 1), progress=False)
    if how == "finite":
        return zlimit.train_finite(zlimit.MLP(depth=2, activation="relu", lr=0.1), X, y, width=16, steps=2,
                                   X_eval=X_eval, record_steps=(0, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zlimit.MonteCarloWarning)  # 32 particles per group
        return zlimit.simulate(zlimit.MLP(depth=2, activation="relu", lr=0.1), X, y, steps=2, particles=64,
                               groups=2, X_eval=X_eval, parametrization=how, progress=False,
                               record_steps=(0, 1) if how == "mup" else (0,))


@pytest.mark.parametrize("how", ["exact", "mup", "ntk", "finite"])
def test_every_producer_round_trips(tmp_path, how):
    run = _produce(how)
    path = zio.save(run, tmp_path / f"{how}.npz")
    got = zio.load(path)
    assert_runs_equal(run, got)
    for name in ("bases", "novelty"):
        assert list(getattr(got, name)) == list(getattr(run, name))
        for k, v in getattr(run, name).items():
            assert_bit_equal(getattr(got, name)[k], v)
    assert got.error_model == run.error_model and (got.error_model == "exact") == (how == "exact")
    assert json.dumps(got.meta, default=repr) == json.dumps(run.meta, default=repr)


# ------------------------------------------------------- Θ of an NTK-limit run
def test_ntk_run_stores_theta_of_each_group():
    """Run.ntk of a depth-1 linear net: Θ = η_2 E[x^1 x^1'] + η_1 σ_2² ξ·ξ'/d (the _ntk module
    docstring with φ' = 1), whose mean is (η_2 σ_1² + η_1 σ_2²) ξ·ξ'/d; and Θ moves f as recorded."""
    from tolerance import assert_close, assert_within_se
    from zlimit._stats import group_se

    rng = np.random.default_rng(15)
    X, X_eval, y = rng.standard_normal((3, 4)), rng.standard_normal((2, 4)), rng.standard_normal(3)
    model = zlimit.MLP(depth=1, activation="linear", lr=0.3, init_std=(1.5, 0.7), lr_mult=(0.5, 2.0))
    run = zlimit.simulate(model, X, y, steps=3, X_eval=X_eval, particles=8 * 512, groups=8, seed=1,
                          parametrization="ntk", progress=False)
    X_all, m = np.vstack([X, X_eval]), 3
    xi = X_all @ X_all.T / 4
    (eta1, eta2), (s1, s2) = model.eta, model.sigma
    assert run.ntk.shape == (8, 5, 5) and run.ntk.dtype == np.float64
    assert_within_se(run.ntk.mean(axis=0), (eta2 * s1**2 + eta1 * s2**2) * xi, group_se(run.ntk), dof=7,
                     n_comparisons=25)
    # the W^1 term is exact (Π^1 = σ_2²), the readout term is η_2 times the sampled step-0 kernel
    assert_close((run.ntk - eta1 * s2**2 * xi) / eta2, run.kernels["x1"][:, 0])
    # f_{t+1} − f_t = −Θ[:, train] χ_t on every input, evaluation inputs included
    steps = np.diff(run.outputs_groups, axis=1)
    assert_close(steps, -np.einsum("gai,gti->gta", run.ntk[:, :, :m], run.error_signals_groups))
    assert np.abs(steps).min() > 1e-3  # the check is not vacuous


@pytest.mark.parametrize("how", ["exact", "mup", "finite"])
def test_other_runs_have_no_theta(how):
    assert _produce(how).ntk is None
