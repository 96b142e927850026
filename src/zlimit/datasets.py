"""Small classification data sets for finite-width and limit runs.

Every loader returns ``(X, y)`` with X of shape (m, d), float64, each row normalised
to ‖ξ‖² = d (so ξ·ξ/d = 1, the scale the fan-in constants of maths §1 expect). By
default two classes are labelled y ∈ {−1, +1}, usable with both the ``"mse"`` and the
``"logistic"`` loss of one output. The image loaders also draw K >= 2 classes for a
model of k = K outputs (maths §6), labelled by ``labels``:

* ``"pm1"`` (default): two classes, y = −1.0 for ``classes[0]`` and +1.0 for ``classes[1]``;
* ``"index"``: y (m,) int64, the position of each image's class in ``classes``, 0..K−1
  (the class labels of loss ``"xent"``);
* ``"onehot"``: y (m, K) float64, 1 at that position and 0 elsewhere (targets of loss
  ``"mse"`` with K outputs).

The convergence theory (Chen, Yang, Zhao & Gu 2025, Assumption 4.1) asks that no two
inputs be parallel. Gaussian inputs satisfy this almost surely when d >= 2 (for
d = 1 any two inputs are parallel). For images the loaders warn
(:class:`zlimit.DataWarning`) when two selected inputs are parallel (for instance
duplicated images). Data of your own: :func:`normalise` scales it to ‖ξ‖² = d, and
:func:`zlimit.simulate`, :func:`zlimit.train_finite` and :func:`zlimit.compare.compare`
warn when an input is far from that scale or two inputs are parallel.
"""
from __future__ import annotations

import _compat_pickle
import os
import pickle

import numpy as np

from ._errors import ResourceError
from ._validate import _real_array, check_choice, check_int, check_seed, unit_rows, warn_if_parallel

__all__ = ["normalise", "gaussian", "digits", "cifar10", "CIFAR10_CLASSES", "CIFAR10_SPLITS", "LABELS"]

#: how the image loaders label their classes (see the module docstring)
LABELS = ("pm1", "index", "onehot")

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
_CIFAR_TRAIN = tuple(f"data_batch_{k}" for k in range(1, 6))
_CIFAR_TEST = ("test_batch",)
CIFAR10_SPLITS = ("train", "test")


def _normalise_rows(X: np.ndarray) -> np.ndarray:
    """Scale each row of a finite (m, d) array to ‖ξ‖² = d (rows of 1e200 included)."""
    U, norms = unit_rows(X)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(f"X[{zero[0]}] is all zeros and cannot be normalised to ‖ξ‖² = d; drop it")
    return U * np.sqrt(U.shape[1])


def normalise(X) -> np.ndarray:
    """Scale each input to ‖ξ‖² = d, the scale the μP fan-in constants assume.

    Each row ξ of X becomes ξ · sqrt(d) / ‖ξ‖, so that ξ·ξ/d = 1 (‖ξ‖/√d = 1): the
    first layer's pre-activation W^1 ξ / sqrt(d)·σ_1 then has variance σ_1² at
    initialisation, as maths §1 assumes. Directions (and signs) are kept; only lengths
    change. :func:`zlimit.simulate` and :func:`zlimit.train_finite` warn
    (:class:`zlimit.DataWarning`) when an input's ‖ξ‖²/d is outside [0.1, 10].

    Parameters
    ----------
    X : array_like, shape (m, d)
        Finite real inputs, no row all zeros. Normalise evaluation inputs with a
        separate call: every row is scaled on its own.

    Returns
    -------
    ndarray, shape (m, d), float64

    Raises
    ------
    ValueError
        X is not a finite real (m, d) array, or a row is all zeros (the message names it).

    Examples
    --------
    >>> import numpy as np
    >>> from zlimit.datasets import normalise
    >>> X = normalise(np.array([[3.0, 4.0], [0.0, -0.5]]))
    >>> X.round(4).tolist(), ((X ** 2).sum(axis=1) / 2).round(12).tolist()  # ‖ξ‖²/d = 1
    ([[0.8485, 1.1314], [0.0, -1.4142]], [1.0, 1.0])
    >>> normalise([[1.0, 2.0], [0.0, 0.0]])
    Traceback (most recent call last):
    ...
    ValueError: X[1] is all zeros and cannot be normalised to ‖ξ‖² = d; drop it
    """
    X = _real_array("X", X)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"X must have shape (m, d) with m, d >= 1, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or inf; clean or drop those entries")
    return _normalise_rows(X)


def _pick(labels: np.ndarray, classes, per_class: int, rng: np.random.Generator, names) -> np.ndarray:
    """Indices of ``per_class`` random examples of classes[0], then of classes[1], and so on."""
    out = []
    for k, (c, name) in enumerate(zip(classes, names)):
        idx = np.flatnonzero(labels == c)
        if idx.size < per_class:
            raise ValueError(f"per_class = {per_class} but classes[{k}] = {name!r} has only {idx.size} examples")
        out.append(np.sort(rng.choice(idx, size=per_class, replace=False)))
    return np.concatenate(out)


def gaussian(m: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs on the sphere ‖ξ‖² = d, labelled by a random teacher direction.

    Rows are i.i.d. N(0, I_d) rescaled to ‖ξ‖² = d (uniform on that sphere); a
    teacher direction u ~ N(0, I_d) gives the labels y = sign(u·ξ) ∈ {−1, +1}. No two
    inputs are parallel with probability one when d >= 2 (Assumption 4.1); with
    d = 1 all inputs are ±1.

    Parameters
    ----------
    m : int
        Number of inputs, m >= 1.
    d : int
        Input dimension, d >= 1.
    seed : int
        Seed of ``np.random.default_rng``, in [0, 2**64).

    Returns
    -------
    X : ndarray, shape (m, d)
    y : ndarray, shape (m,), values in {−1.0, +1.0}

    Raises
    ------
    ValueError
        Bad m, d or seed.
    ResourceError
        The m × d inputs do not fit in memory.

    Examples
    --------
    Training and evaluation inputs labelled by the same teacher: draw once, split.

    >>> from zlimit.datasets import gaussian
    >>> X, y = gaussian(12, 8, seed=1)
    >>> X_train, y_train, X_eval = X[:10], y[:10], X[10:]
    >>> X.shape, round(float((X[0] ** 2).sum()), 12)
    ((12, 8), 8.0)
    """
    m = check_int("m", m, 1)
    d = check_int("d", d, 1)
    seed = check_seed("seed", seed)
    rng = np.random.default_rng(seed)
    try:
        teacher = rng.standard_normal(d)
        X = rng.standard_normal((m, d))
    except (MemoryError, ValueError):  # NumPy: not enough memory, or beyond its largest array
        raise ResourceError(f"m = {m} inputs of dimension d = {d} need {8 * m * d / 2 ** 30:.3g} GiB, more than "
                            "can be allocated; use fewer or smaller inputs") from None
    while np.any(np.linalg.norm(X, axis=1) == 0):  # probability zero; redraw such rows
        zero = np.linalg.norm(X, axis=1) == 0
        X[zero] = rng.standard_normal((int(zero.sum()), d))
    X = _normalise_rows(X)
    y = np.where(X @ teacher >= 0, 1.0, -1.0)
    return X, y


def _check_classes(classes, allowed, what: str, labels: str) -> tuple:
    """``classes`` as a tuple: two distinct members of ``allowed`` for ``labels`` "pm1", at
    least two for the other :data:`LABELS`."""
    count = "two" if labels == "pm1" else "at least two"
    try:
        classes = tuple(classes)
    except TypeError:
        raise ValueError(f"classes must be {count} distinct {what}, got {classes!r}") from None
    if len(classes) < 2 or (labels == "pm1" and len(classes) != 2):
        hint = " (labels = 'pm1' takes two; 'index' or 'onehot' take more)" if len(classes) > 2 else ""
        raise ValueError(f"classes must be {count} distinct {what}, got {classes!r}{hint}")
    for c in classes:
        if isinstance(c, (bool, np.bool_)) or c not in allowed:
            raise ValueError(f"unknown class {c!r}; classes must be {count} distinct {what}: {list(allowed)}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes must be {count} distinct {what}, got {classes!r}")
    return classes


def _labels(labels: str, count: int, per_class: int) -> np.ndarray:
    """The targets of ``per_class`` images of each of ``count`` classes, class by class."""
    index = np.repeat(np.arange(count), per_class)
    if labels == "index":
        return index
    if labels == "onehot":
        return np.eye(count)[index]
    return 2.0 * index - 1.0  # "pm1": −1.0, then +1.0


def digits(classes=(0, 1), per_class: int = 5, seed: int = 0, exclude=None,
           labels: str = "pm1") -> tuple[np.ndarray, np.ndarray]:
    """Classes of scikit-learn's 8×8 handwritten digits (bundled, no download).

    ``per_class`` random images of each class are drawn without replacement,
    flattened to d = 64 and scaled to ‖ξ‖² = 64.

    Parameters
    ----------
    classes : sequence of distinct ints in 0..9
        Two for ``labels = "pm1"``: labelled −1 (``classes[0]``) and +1
        (``classes[1]``); at least two otherwise.
    per_class : int
        Images per class, 1 <= per_class <= the number of images of that class (≈ 180).
    seed : int
        Seed of ``np.random.default_rng`` for the choice of images, in [0, 2**64).
    exclude : array_like, shape (k, 64), optional
        Images never to draw, as rows returned by an earlier call (an image matches
        when it is parallel to a row): ``digits(exclude=X_train)`` gives a held-out
        set disjoint from ``X_train``.
    labels : {"pm1", "index", "onehot"}
        How the K classes are labelled (module docstring).

    Returns
    -------
    X : ndarray, shape (K per_class, 64)
        The images of ``classes[0]`` first, then those of ``classes[1]``, and so on.
    y : ndarray
        ``"pm1"``: shape (2 per_class,), −1.0 then +1.0; ``"index"``: shape
        (K per_class,), 0 .. K−1; ``"onehot"``: shape (K per_class, K).

    Raises
    ------
    ImportError
        scikit-learn is not installed (``pip install zlimit[data]``).
    ValueError
        Bad classes, per_class, seed, exclude or labels.

    Examples
    --------
    Ten classes, one image each, for softmax cross-entropy with 10 outputs:

    >>> from zlimit.datasets import digits
    >>> X, y = digits(classes=range(10), per_class=1, labels="index")
    >>> X.shape, y.tolist()
    ((10, 64), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    """
    labels = check_choice("labels", labels, LABELS)
    classes = _check_classes(classes, range(10), "digits 0..9", labels)
    classes = tuple(check_int(f"classes[{k}]", c, 0, 9, hint=" (a digit)") for k, c in enumerate(classes))
    per_class = check_int("per_class", per_class, 1)
    seed = check_seed("seed", seed)
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(
            "zlimit.datasets.digits needs scikit-learn; install it with: pip install zlimit[data]"
        ) from exc
    bunch = load_digits()
    data, targets = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=np.float64)
        if exclude.ndim != 2 or exclude.shape[1] != data.shape[1]:
            raise ValueError(f"exclude must be images of shape (k, 64) such as an earlier digits() X, "
                             f"got shape {exclude.shape}")
        cos = _normalise_rows(data) @ _normalise_rows(exclude).T / data.shape[1]
        targets = np.where(np.any(cos > 1.0 - 1e-10, axis=1), -1, targets)  # -1: no class
    rng = np.random.default_rng(seed)
    idx = _pick(targets, classes, per_class, rng, classes)
    X = _normalise_rows(data[idx])
    warn_if_parallel(X)
    return X, _labels(labels, len(classes), per_class)


def _cifar_folder(path) -> str:
    path = os.fspath(path)
    nested = os.path.join(path, "cifar-10-batches-py")
    if os.path.isdir(nested) and not os.path.exists(os.path.join(path, "batches.meta")):
        return nested
    return path


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 pickles bytes at protocol <= 2, for latin-1 only."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"bytes encoded as {encoding!r}, not latin-1")
    return text.encode("latin1")


#: The globals a CIFAR-10 batch may refer to: NumPy's array constructors (NumPy 1 and 2
#: module names; ``_reconstruct`` up to protocol 4, ``_frombuffer`` at protocol 5) and
#: the latin-1 encoding of bytes that Python 3 writes at protocol 2. The official files
#: (Python 2, protocol 2) need only numpy's ``_reconstruct``, ``ndarray`` and ``dtype``.
_CIFAR_GLOBALS = {
    **{(f"{m}.multiarray", "_reconstruct"): np.zeros(1).__reduce__()[0] for m in ("numpy.core", "numpy._core")},
    **{(f"{m}.numeric", "_frombuffer"): np.zeros(1).__reduce_ex__(5)[0] for m in ("numpy.core", "numpy._core")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1,
}


class _Refused(pickle.UnpicklingError):
    """A pickle refers to a global outside :data:`_CIFAR_GLOBALS`."""


class _CifarUnpickler(pickle.Unpickler):
    """Builds dicts, lists, bytes, numbers and NumPy arrays; refuses every other global,
    so that a crafted file cannot run code (``os.system``, ``eval``, ...) when read."""

    def find_class(self, module: str, name: str):
        try:
            return _CIFAR_GLOBALS[(module, name)]
        except KeyError:
            # named as Python 3 calls it: pickles of protocol <= 2 use Python 2 names (__builtin__.eval)
            module, name = _compat_pickle.NAME_MAPPING.get(
                (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
            raise _Refused(f"{module}.{name}") from None


def _load_pickle(file: str) -> dict:
    """Read one file of the CIFAR-10 python version with :class:`_CifarUnpickler`.

    Raises
    ------
    ValueError
        The file refers to a global that a CIFAR-10 file does not need (the message
        names it), or it is not a pickle at all.
    OSError
        The file cannot be read.
    """
    with open(file, "rb") as fh:
        try:
            return _CifarUnpickler(fh, encoding="bytes").load()
        except _Refused as exc:
            raise ValueError(f"{file} is not a CIFAR-10 batch file: it refers to {exc}, which is not allowed "
                             "(the files hold only dicts, lists, bytes and NumPy arrays)") from None
        except OSError:
            raise
        except Exception as exc:  # any failure to decode the bytes: not a pickle of a batch
            raise ValueError(f"{file} is not a CIFAR-10 batch file: it cannot be unpickled "
                             f"({type(exc).__name__}: {' '.join(str(exc).split())})") from None


def _check_cifar_files(folder: str, expected: tuple, split: str) -> None:
    """FileNotFoundError or NotADirectoryError unless ``folder`` holds the ``expected`` files."""
    wanted = (f"the extracted 'cifar-10-batches-py' folder of the CIFAR-10 python version, containing "
              f"{', '.join(expected)} (nothing is downloaded)")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(f"CIFAR-10 path {folder!r} is a file, not a folder; give {wanted}")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"CIFAR-10 folder {folder!r} does not exist; expected {wanted}")
    missing = [f for f in expected if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 folder {folder!r} lacks {', '.join(missing)}; the {split} split needs "
            f"{', '.join(expected)} (the files of the CIFAR-10 python version; nothing is downloaded)"
        )


def _class_names(file: str) -> tuple[str, ...]:
    """The class names of ``batches.meta`` (its ``b"label_names"``)."""
    meta = _load_pickle(file)
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise ValueError(f"{file} is not a CIFAR-10 meta file: it needs b'label_names', a list of class names")
    return tuple(n.decode("latin1") if isinstance(n, bytes) else n for n in names)


def _batch(file: str) -> tuple[np.ndarray, np.ndarray]:
    """(data (N, 3072), labels (N,)) of one batch file."""
    batch = _load_pickle(file)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{file} is not a CIFAR-10 batch (needs a dict with keys b'data' and b'labels')")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],) \
            or data.dtype.kind not in "iu" or labels.dtype.kind not in "iu":
        raise ValueError(
            f"{file} is not a CIFAR-10 batch: b'data' must be integers of shape (N, 3072) and b'labels' N "
            f"integers, got {data.dtype} {data.shape} and {labels.dtype} {labels.shape}"
        )
    return data, labels


def cifar10(path, classes=("airplane", "automobile"), per_class: int = 5, seed: int = 0,
            split: str = "train", labels: str = "pm1") -> tuple[np.ndarray, np.ndarray]:
    """Classes of CIFAR-10, read from the standard python pickle batches on disk.

    Nothing is downloaded. ``path`` is the folder ``cifar-10-batches-py`` of the
    official "CIFAR-10 python version" archive (or the folder containing it), with
    ``batches.meta`` (the class names, ``b"label_names"``), ``data_batch_1`` ..
    ``data_batch_5`` (training split) and ``test_batch`` (test split). Each batch is a
    pickled dict with ``b"data"`` (uint8, shape (N, 3072), channel-major 32×32 RGB)
    and ``b"labels"`` (N ints). The pickles are read by an unpickler that builds only
    dicts, lists, bytes, numbers and NumPy arrays: a file that refers to anything else
    (such as ``os.system``, which a crafted pickle would run) is refused, not run.

    Images are flattened to d = 3072 and scaled to ‖ξ‖² = 3072.

    Parameters
    ----------
    path : str or os.PathLike
    classes : sequence of distinct str
        Class names from ``batches.meta``: two for ``labels = "pm1"``, labelled −1
        (``classes[0]``) and +1; at least two otherwise.
    per_class : int
        Images per class, drawn at random without replacement.
    seed : int
        Seed of ``np.random.default_rng`` for the choice of images, in [0, 2**64).
    split : {"train", "test"}
        Draw from ``data_batch_1..5`` or from ``test_batch``.
    labels : {"pm1", "index", "onehot"}
        How the K classes are labelled (module docstring).

    Returns
    -------
    X : ndarray, shape (K per_class, 3072)
        The images of ``classes[0]`` first, then those of ``classes[1]``, and so on.
    y : ndarray
        As :func:`digits` returns it for ``labels``.

    Raises
    ------
    FileNotFoundError
        The folder or one of the files it must contain is missing.
    NotADirectoryError
        ``path`` is a file, not a folder.
    ValueError
        Unknown class names (the message lists the allowed ones), bad per_class,
        seed, split or labels, or files that are not CIFAR-10 batches (among them pickles
        that refer to code).

    Warns
    -----
    DataWarning
        When two drawn images are parallel (duplicates).

    Examples
    --------
    With the archive extracted under ``~/data`` (not run here)::

        X, y = cifar10("~/data/cifar-10-batches-py", classes=("cat", "dog"), per_class=50)

    Nothing is downloaded: a folder without the files says what it needs.

    >>> from zlimit.datasets import cifar10
    >>> cifar10("no/such/folder")
    Traceback (most recent call last):
    ...
    FileNotFoundError: CIFAR-10 folder 'no/such/folder' does not exist; expected the extracted
    'cifar-10-batches-py' folder ...
    """
    split = check_choice("split", split, CIFAR10_SPLITS)
    labels = check_choice("labels", labels, LABELS)
    per_class = check_int("per_class", per_class, 1)
    seed = check_seed("seed", seed)
    folder = _cifar_folder(path)
    expected = ("batches.meta",) + (_CIFAR_TRAIN if split == "train" else _CIFAR_TEST)
    _check_cifar_files(folder, expected, split)
    names = _class_names(os.path.join(folder, "batches.meta"))
    classes = _check_classes(classes, names, "CIFAR-10 class names", labels)
    codes = tuple(names.index(c) for c in classes)
    datas, targets = zip(*(_batch(os.path.join(folder, f)) for f in expected[1:]))
    rng = np.random.default_rng(seed)
    idx = _pick(np.concatenate(targets), codes, per_class, rng, classes)
    X = _normalise_rows(np.concatenate(datas)[idx].astype(np.float64))
    warn_if_parallel(X)
    return X, _labels(labels, len(classes), per_class)
