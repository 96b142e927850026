"""Data loaders (zlimit.datasets): shapes, normalisation, labels, provenance, errors."""
from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from zlimit._errors import DataWarning
from zlimit.datasets import CIFAR10_CLASSES, cifar10, digits, gaussian, normalise


# -------------------------------------------------------------------- normalise
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 6), d=st.integers(1, 8),
       log_scale=st.lists(st.floats(-300, 300), min_size=6, max_size=6))
def test_normalise_scales_rows_to_norm_d_and_keeps_directions(seed, m, d, log_scale):
    """Rows of any size from 1e-300 to 1e300 (where ‖ξ‖² under- or overflows): each
    comes back with ‖ξ‖²/d = 1, a positive multiple of what it was."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 2.0, (m, d)) * rng.choice([-1.0, 1.0], (m, d))  # entries of size ~1, no zero row
    X = base * 10.0 ** np.array(log_scale[:m])[:, None]
    out = normalise(X)
    assert out.shape == (m, d) and out.dtype == np.float64
    np.testing.assert_allclose((out ** 2).sum(axis=1) / d, 1.0, rtol=1e-12)
    expected = base * np.sqrt(d / (base ** 2).sum(axis=1, keepdims=True))  # the same rows at size ~1
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=0)


def test_normalise_refuses_what_it_cannot_scale():
    with pytest.raises(ValueError, match=r"^X\[2\] is all zeros and cannot be normalised to ‖ξ‖² = d; drop it$"):
        normalise([[1.0, 2.0], [3.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match=r"^X contains NaN or inf"):
        normalise([[1.0, np.nan]])
    with pytest.raises(ValueError, match=r"^X must have shape \(m, d\)"):
        normalise([1.0, 2.0])
    with pytest.raises(ValueError, match=r"^X must be an array of real numbers"):
        normalise([["a", "b"]])


def test_normalised_inputs_pass_the_data_check_quietly():
    """What normalise returns is what check_data expects: no DataWarning."""
    import warnings

    import zlimit
    rng = np.random.default_rng(4)
    X = normalise(rng.standard_normal((5, 3)) * 1e3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        zlimit._validate.check_data(zlimit.MLP(depth=1), X, np.zeros(5), normalise(rng.standard_normal((2, 3))))


# -------------------------------------------------------------------- gaussian
@settings(max_examples=30)
@given(m=st.integers(1, 40), d=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def test_gaussian_shapes_norms_labels_determinism(m, d, seed):
    X, y = gaussian(m, d, seed=seed)
    assert X.shape == (m, d) and y.shape == (m,) and X.dtype == np.float64
    np.testing.assert_allclose((X ** 2).sum(axis=1), d, rtol=1e-12)
    assert set(np.unique(y)) <= {-1.0, 1.0}
    X2, y2 = gaussian(m, d, seed=seed)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    if d >= 2:  # for d = 1 every row is ±1
        X3, _ = gaussian(m, d, seed=seed + 1)
        assert not np.array_equal(X, X3)
    else:
        np.testing.assert_allclose(np.abs(X), 1.0, rtol=1e-15)


def test_gaussian_labels_come_from_a_halfspace_through_the_origin():
    """Some u has y_i (u·ξ_i) >= 1 for all i (LP feasibility), and random labels on
    the same inputs are not of this form."""
    X, y = gaussian(60, 5, seed=3)
    A = -(y[:, None] * X)
    res = linprog(np.zeros(5), A_ub=A, b_ub=-np.ones(60), bounds=[(None, None)] * 5)
    assert res.status == 0
    flipped = y.copy()
    flipped[:30] *= -1
    flipped_rng = np.random.default_rng(0).permutation(flipped)
    res = linprog(np.zeros(5), A_ub=-(flipped_rng[:, None] * X), b_ub=-np.ones(60), bounds=[(None, None)] * 5)
    assert res.status == 2  # infeasible


def test_gaussian_is_isotropic_and_balanced():
    """Uniform on the sphere ‖ξ‖² = d: E[ξ] = 0, E[ξξᵀ] = I, P(y = 1) = 1/2; no two
    inputs parallel (Assumption 4.1). Tolerances are 5 standard errors."""
    m, d = 4000, 4
    X, y = gaussian(m, d, seed=0)
    assert np.all(np.abs(X.mean(axis=0)) < 5 / np.sqrt(m))
    cov = X.T @ X / m
    # Var of ξ_j ξ_k is at most E[ξ_j⁴] <= 3 for these coordinates.
    assert np.all(np.abs(cov - np.eye(d)) < 5 * np.sqrt(3 / m))
    assert abs((y == 1).mean() - 0.5) < 5 * 0.5 / np.sqrt(m)
    cos = X[:200] @ X[:200].T / d
    np.fill_diagonal(cos, 0)
    assert np.abs(cos).max() < 1 - 1e-8


@pytest.mark.parametrize("kw", [dict(m=0, d=2), dict(m=2, d=0), dict(m=2.0, d=2), dict(m=True, d=2),
                                dict(m=2, d=2, seed=-1), dict(m=2, d=2, seed=2**64), dict(m=2, d="3")])
def test_gaussian_bad_arguments(kw):
    with pytest.raises(ValueError):
        gaussian(**kw)


# ---------------------------------------------------------------------- digits
def _unit(A):
    A = np.asarray(A, dtype=np.float64)
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def test_digits_rows_are_normalised_images_of_the_right_classes():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X, y = digits(classes=(3, 8), per_class=6, seed=2)
    assert X.shape == (12, 64)
    np.testing.assert_allclose((X ** 2).sum(axis=1), 64, rtol=1e-12)
    np.testing.assert_array_equal(y, [-1.0] * 6 + [1.0] * 6)
    for cls, rows in ((3, X[:6]), (8, X[6:])):
        imgs = _unit(bunch.data[bunch.target == cls])
        match = _unit(rows) @ imgs.T  # cosine with every image of the class
        assert np.all(match.max(axis=1) > 1 - 1e-12)
        # each row is one of the images, scaled by sqrt(64) / ‖image‖
        k = match.argmax(axis=1)
        raw = bunch.data[bunch.target == cls][k]
        np.testing.assert_allclose(X[:6] if cls == 3 else X[6:],
                                   raw * 8 / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-12)
        assert len(set(k)) == 6  # drawn without replacement
    again = digits(classes=(3, 8), per_class=6, seed=2)
    assert np.array_equal(again[0], X)
    other = digits(classes=(3, 8), per_class=6, seed=5)
    assert not np.array_equal(other[0], X)
    swapped, ys = digits(classes=(8, 3), per_class=6, seed=2)
    np.testing.assert_array_equal(ys, y)
    imgs8 = _unit(bunch.data[bunch.target == 8])
    assert np.all((_unit(swapped[:6]) @ imgs8.T).max(axis=1) > 1 - 1e-12)


def test_digits_exclude_gives_held_out_images():
    from sklearn.datasets import load_digits

    X, y = digits(classes=(0, 1), per_class=5)
    E, ye = digits(classes=(0, 1), per_class=40, exclude=X)
    np.testing.assert_array_equal(ye, [-1.0] * 40 + [1.0] * 40)
    assert np.max(_unit(E) @ _unit(X).T) < 1 - 1e-10  # no training image drawn again
    assert np.array_equal(digits(classes=(0, 1), per_class=5)[0], X)  # exclude=None: unchanged draws
    # every image of class 0 but one excluded: that one is all that is left
    imgs = load_digits().data[load_digits().target == 0]
    last, _ = digits(classes=(0, 1), per_class=1, exclude=imgs[1:])
    assert np.max(_unit(last[:1]) @ _unit(imgs[:1]).T) > 1 - 1e-12
    with pytest.raises(ValueError, match="has only 0 examples"):
        digits(classes=(0, 1), per_class=1, exclude=imgs)
    with pytest.raises(ValueError, match=r"exclude must be images of shape \(k, 64\)"):
        digits(exclude=np.ones((2, 63)))


@pytest.mark.parametrize("kw, msg", [
    (dict(classes=(1, 1)), "distinct"),
    (dict(classes=(0, 10)), "unknown class"),
    (dict(classes=("a", 1)), "unknown class"),
    (dict(classes=(0, 1, 2)), "two distinct"),
    (dict(classes=(0.5, 1)), "unknown class"),
    (dict(classes=(1.0, 2)), "integer"),
    (dict(classes=5), "two distinct"),
    (dict(per_class=0), "per_class"),
    (dict(per_class=10_000), "has only"),
    (dict(seed=-2), "seed"),
])
def test_digits_bad_arguments(kw, msg):
    with pytest.raises(ValueError, match=msg):
        digits(**kw)


def test_digits_of_several_classes_label_them_by_index_or_one_hot():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    classes = (7, 2, 9)
    X, y = digits(classes=classes, per_class=3, seed=4, labels="index")
    assert X.shape == (9, 64) and y.dtype == np.int64 and y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for k, cls in enumerate(classes):  # rows 3k..3k+2 are images of classes[k]
        match = _unit(X[3 * k:3 * k + 3]) @ _unit(bunch.data[bunch.target == cls]).T
        assert np.all(match.max(axis=1) > 1 - 1e-12)
    Xo, yo = digits(classes=classes, per_class=3, seed=4, labels="onehot")
    assert np.array_equal(Xo, X)  # the labels do not change the draw
    np.testing.assert_array_equal(yo, [[1.0, 0.0, 0.0]] * 3 + [[0.0, 1.0, 0.0]] * 3 + [[0.0, 0.0, 1.0]] * 3)
    X2, y2 = digits(classes=(3, 8), per_class=2, seed=2, labels="index")
    assert np.array_equal(X2, digits(classes=(3, 8), per_class=2, seed=2)[0]) and y2.tolist() == [0, 0, 1, 1]
    X10, y10 = digits(classes=range(10), per_class=1, labels="index")
    assert y10.tolist() == list(range(10)) and X10.shape == (10, 64)


@pytest.mark.parametrize("kw, msg", [
    (dict(classes=(0, 1, 2)), r"classes must be two distinct digits 0..9, got \(0, 1, 2\) \(labels = 'pm1' takes "
                              r"two; 'index' or 'onehot' take more\)"),
    (dict(classes=(4,), labels="index"), r"classes must be at least two distinct digits 0..9, got \(4,\)"),
    (dict(classes=(0, 1, 1), labels="onehot"), r"classes must be at least two distinct digits 0..9, got \(0, 1, 1\)"),
    (dict(classes=(0, 11, 1), labels="index"), "unknown class 11; classes must be at least two distinct digits"),
    (dict(labels="soft"), r"labels must be one of \('pm1', 'index', 'onehot'\), got 'soft'"),
])
def test_digits_labels_and_classes_checked(kw, msg):
    with pytest.raises(ValueError, match=msg):
        digits(**kw)


def test_digits_without_sklearn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install zlimit\[data\]"):
        digits()


# --------------------------------------------------------------------- cifar10
def _dump(obj, file, protocol=None):
    """Pickle ``obj`` into ``file``; protocol "numpy1" is protocol 2 with the module names
    of NumPy 1 (``numpy.core.multiarray._reconstruct``), as in the official CIFAR-10 files."""
    if protocol == "numpy1":
        data = pickle.dumps(obj, protocol=2).replace(b"\nnumpy._core.multiarray\n", b"\nnumpy.core.multiarray\n")
        data = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
        assert b"numpy._core" not in data
    else:
        data = pickle.dumps(obj, protocol=protocol)
    with open(file, "wb") as fh:
        fh.write(data)


def _write_fake_cifar(folder, per_batch=12, seed=0, protocol=None):
    """A tiny folder in the real CIFAR-10 python format. Image k of batch b has every
    pixel positive; its first three bytes encode (batch, index, label) so a test can
    tell where a returned row came from."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    _dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_cases_per_batch": per_batch,
           b"num_vis": 3072}, folder / "batches.meta", protocol)
    images = {}
    for b, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        labels[:2] = [0, 1]  # every batch has airplanes and automobiles
        data = rng.integers(20, 256, size=(per_batch, 3072), dtype=np.uint8)
        data[:, 0], data[:, 1], data[:, 2] = b + 1, np.arange(per_batch) + 1, np.array(labels) + 1
        _dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
               b"filenames": [f"{k}.png".encode() for k in range(per_batch)]}, folder / name, protocol)
        images[name] = (data, labels)
    return images


def _provenance(X, images):
    """(batch name, index, label) of the one fake image each row of X is a rescaling of."""
    refs, where = [], []
    for name, (data, labels) in images.items():
        for k, lab in enumerate(labels):
            img = data[k].astype(float)
            refs.append(img * np.sqrt(3072) / np.linalg.norm(img))
            where.append((name, k, lab))
    refs = np.array(refs)
    out = []
    for row in X:
        hits = np.flatnonzero(np.all(np.isclose(refs, row, rtol=1e-12, atol=0), axis=1))
        assert len(hits) == 1
        out.append(where[hits[0]])
    return out


def test_cifar10_reads_pickled_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    images = _write_fake_cifar(folder)
    X, y = cifar10(folder, classes=("airplane", "automobile"), per_class=4, seed=1)
    assert X.shape == (8, 3072)
    np.testing.assert_allclose((X ** 2).sum(axis=1), 3072, rtol=1e-12)
    np.testing.assert_array_equal(y, [-1.0] * 4 + [1.0] * 4)
    # every row is one whole training image of the right class, scaled to ‖ξ‖² = 3072
    found = _provenance(X, images)
    assert [f[0] != "test_batch" for f in found] == [True] * 8
    assert [f[2] for f in found] == [0] * 4 + [1] * 4
    assert len({f[:2] for f in found}) == 8
    # the parent folder works too, and the same seed gives the same rows
    X2, _ = cifar10(tmp_path, classes=("airplane", "automobile"), per_class=4, seed=1)
    assert np.array_equal(X, X2)


def test_cifar10_test_split_and_other_classes(tmp_path):
    images = _write_fake_cifar(tmp_path)
    X, y = cifar10(tmp_path, classes=("automobile", "airplane"), per_class=1, split="test")
    found = _provenance(X, images)
    assert [f[0] for f in found] == ["test_batch"] * 2
    assert [f[2] for f in found] == [1, 0]
    np.testing.assert_array_equal(y, [-1.0, 1.0])
    n_cat = sum(int(np.sum(np.array(images[f"data_batch_{k}"][1]) == 3)) for k in range(1, 6))
    n_ship = sum(int(np.sum(np.array(images[f"data_batch_{k}"][1]) == 8)) for k in range(1, 6))
    k = min(n_cat, n_ship)
    Xc, _ = cifar10(tmp_path, classes=("cat", "ship"), per_class=k)
    assert Xc.shape == (2 * k, 3072)
    with pytest.raises(ValueError, match="has only"):
        cifar10(tmp_path, classes=("cat", "ship"), per_class=max(n_cat, n_ship) + 1)


def test_cifar10_several_classes_by_index_or_one_hot(tmp_path):
    images = _write_fake_cifar(tmp_path)
    classes = ("automobile", "airplane", "bird")
    X, y = cifar10(tmp_path, classes=classes, per_class=2, seed=3, labels="index")
    assert y.tolist() == [0, 0, 1, 1, 2, 2]
    assert [f[2] for f in _provenance(X, images)] == [1, 1, 0, 0, 2, 2]  # CIFAR codes of the classes
    Xo, yo = cifar10(tmp_path, classes=classes, per_class=2, seed=3, labels="onehot")
    assert np.array_equal(Xo, X)
    np.testing.assert_array_equal(yo, np.eye(3)[[0, 0, 1, 1, 2, 2]])
    with pytest.raises(ValueError, match="labels must be one of"):
        cifar10(tmp_path / "nowhere", labels="none")  # checked before the files are looked for
    with pytest.raises(ValueError, match=r"classes must be two distinct CIFAR-10 class names, got \('airplane', "
                                         r"'automobile', 'bird'\) \(labels = 'pm1' takes two"):
        cifar10(tmp_path, classes=("airplane", "automobile", "bird"))


def test_cifar10_warns_when_two_drawn_images_are_parallel(tmp_path):
    """Duplicated images (every image of a class the same) break Assumption 4.1: the
    loader says which rows."""
    image = np.arange(3072) % 200 + 20
    _dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, tmp_path / "batches.meta")
    for k in range(1, 6):
        data = np.array([image, image[::-1]] * 2, dtype=np.uint8)  # airplane, automobile, airplane, automobile
        _dump({b"labels": [0, 1, 0, 1], b"data": data}, tmp_path / f"data_batch_{k}")
    with pytest.warns(DataWarning, match=r"^inputs X\[0\] and X\[1\] are parallel \(cos = 1\); Assumption 4.1"):
        X, _ = cifar10(tmp_path, per_class=2)
    assert np.array_equal(X[0], X[1])


def test_cifar10_missing_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*batches.meta.*data_batch_1"):
        cifar10(tmp_path / "nowhere")
    _write_fake_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="lacks data_batch_3"):
        cifar10(tmp_path)
    X, _ = cifar10(tmp_path, split="test", per_class=1)  # the test split does not need it
    assert X.shape == (2, 3072)
    (tmp_path / "batches.meta").unlink()
    with pytest.raises(FileNotFoundError, match="batches.meta"):
        cifar10(tmp_path, split="test")


def test_cifar10_bad_arguments_and_files(tmp_path):
    _write_fake_cifar(tmp_path)
    with pytest.raises(ValueError, match="unknown class 'plane'.*'airplane', 'automobile', 'bird'.*'truck'"):
        cifar10(tmp_path, classes=("plane", "ship"))
    with pytest.raises(ValueError, match="distinct"):
        cifar10(tmp_path, classes=("ship", "ship"))
    with pytest.raises(ValueError, match="split"):
        cifar10(tmp_path, split="valid")
    with pytest.raises(ValueError, match="per_class"):
        cifar10(tmp_path, per_class=0)
    with open(tmp_path / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, fh)
    with pytest.raises(ValueError, match="not a CIFAR-10 batch"):
        cifar10(tmp_path, split="test")


@pytest.mark.parametrize("protocol", ["numpy1", 2, 3, 4, 5])
def test_cifar10_reads_every_pickle_protocol(tmp_path, protocol):
    """The official files are protocol-2 pickles naming numpy.core.multiarray._reconstruct;
    a copy re-pickled by Python 3 (any protocol, NumPy 2 names) reads the same."""
    images = _write_fake_cifar(tmp_path, protocol=protocol)
    X, y = cifar10(tmp_path, per_class=3, seed=4)
    found = _provenance(X, images)
    assert [f[2] for f in found] == [0] * 3 + [1] * 3
    ref, _ = cifar10(_write_fake_cifar_copy(tmp_path), per_class=3, seed=4)
    assert np.array_equal(X, ref)


def _write_fake_cifar_copy(tmp_path):
    folder = tmp_path / "reference"
    _write_fake_cifar(folder)
    return folder


class _Payload:
    """Unpickling runs ``call(*args)``: a crafted pickle that would create ``marker``."""

    def __init__(self, call, args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _payloads(marker):
    return {
        f"{os.system.__module__}.system": _Payload(os.system, (f"touch {marker}",)),
        "builtins.eval": _Payload(eval, (f"open({str(marker)!r}, 'w')",)),
        "builtins.exec": _Payload(exec, (f"open({str(marker)!r}, 'w')",)),
        "subprocess.call": _Payload(subprocess.call, (["touch", str(marker)],)),
        "numpy.save": _Payload(np.save, (str(marker), np.zeros(1))),  # an allowed module, not an allowed name
    }


@pytest.mark.parametrize("where", ["batches.meta", "data_batch_2", "test_batch"])
@pytest.mark.parametrize("name", ["posix.system", "builtins.eval", "builtins.exec", "subprocess.call", "numpy.save"])
def test_cifar10_refuses_pickles_that_run_code(tmp_path, where, name):
    """A crafted batch file would run os.system / eval / a subprocess when read with
    pickle.load; the loader refuses it, naming the file and the global, and runs nothing."""
    name = name.replace("posix", os.system.__module__)
    folder = tmp_path / "cifar"
    _write_fake_cifar(folder)
    marker = tmp_path / "marker.npy"
    payload = _payloads(marker)[name]
    # the payload would run: plain pickle.load creates the marker
    pickle.loads(pickle.dumps(payload))
    assert marker.exists()
    marker.unlink()
    key = b"label_names" if where == "batches.meta" else b"labels"
    for protocol in (2, 4, 5):
        _dump({key: payload, b"data": np.zeros((1, 3072), np.uint8)}, folder / where, protocol)
        split = "test" if where == "test_batch" else "train"
        with pytest.raises(ValueError) as info:
            cifar10(folder, split=split)
        assert str(info.value) == (
            f"{folder / where} is not a CIFAR-10 batch file: it refers to {name}, which is not allowed "
            "(the files hold only dicts, lists, bytes and NumPy arrays)")
        assert not marker.exists()


def test_cifar10_refuses_bytes_in_other_codecs(tmp_path):
    """``_codecs.encode`` is allowed only as Python 3 uses it at protocol 2: latin-1."""
    _write_fake_cifar(tmp_path)
    with open(tmp_path / "batches.meta", "wb") as fh:
        fh.write(b"\x80\x02c_codecs\nencode\nX\x05\x00\x00\x00hello" + b"X\x03\x00\x00\x00hex\x86R.")
    with pytest.raises(ValueError, match=r"batches.meta is not a CIFAR-10 batch file: it cannot be unpickled "
                                         r"\(UnpicklingError: bytes encoded as 'hex', not latin-1\)"):
        cifar10(tmp_path)


@pytest.mark.parametrize("content, message", [
    (b"label_names = airplane, automobile\n", "is not a CIFAR-10 batch file: it cannot be unpickled"),
    (pickle.dumps({b"label_names": "airplane"}), "is not a CIFAR-10 meta file: it needs b'label_names', a list"),
    (pickle.dumps([b"airplane", b"automobile"]), "is not a CIFAR-10 meta file"),
    (pickle.dumps(np.zeros(3)), "is not a CIFAR-10 meta file"),
    (pickle.dumps({b"label_names": [b"airplane", 3]}), "is not a CIFAR-10 meta file"),
    (pickle.dumps({b"label_names": [b"a"]})[:-5], "it cannot be unpickled"),
])
def test_cifar10_bad_meta_files(tmp_path, content, message):
    _write_fake_cifar(tmp_path)
    (tmp_path / "batches.meta").write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(message)):
        cifar10(tmp_path)


@pytest.mark.parametrize("batch, message", [
    ([1, 2], "is not a CIFAR-10 batch (needs a dict with keys b'data' and b'labels')"),
    (np.zeros((3, 3072)), "is not a CIFAR-10 batch (needs a dict"),
    ({b"data": np.zeros((2, 3072), np.uint8)}, "needs a dict with keys b'data' and b'labels'"),
    ({b"data": np.zeros((2, 3072)), b"labels": [0, 1]}, "b'data' must be integers of shape (N, 3072)"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [b"a", b"b"]}, "and b'labels' N integers, got uint8"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "got uint8 (2, 3072) and int64 (1,)"),
])
def test_cifar10_bad_batch_files(tmp_path, batch, message):
    _write_fake_cifar(tmp_path)
    _dump(batch, tmp_path / "test_batch")
    with pytest.raises(ValueError, match=re.escape(message)):
        cifar10(tmp_path, split="test")


def test_cifar10_path_that_is_a_file(tmp_path):
    (tmp_path / "cifar").write_text("")
    with pytest.raises(NotADirectoryError, match="CIFAR-10 path .*cifar' is a file, not a folder; give the extracted"):
        cifar10(tmp_path / "cifar")


@pytest.mark.parametrize("m, d", [(2 ** 63 - 1, 4), (4, 2 ** 63 - 1), (2 ** 40, 2 ** 20)])
def test_gaussian_too_large_names_m_and_d(m, d):
    """NumPy's own words ("Maximum allowed dimension exceeded") named neither."""
    from zlimit import ResourceError

    with pytest.raises(ResourceError, match=rf"^m = {m} inputs of dimension d = {d} need .* GiB, more than can be "
                                            "allocated; use fewer or smaller inputs$"):
        gaussian(m, d)
