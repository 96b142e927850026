"""Small binary data sets for finite-width and limit runs.

Every loader returns ``(X, y)`` with X of shape (m, d), float64, each row normalised
to ‖ξ‖² = d (so ξ·ξ/d = 1, the scale the fan-in constants of maths §1 expect), and
labels y ∈ {−1, +1}, usable with both the ``"mse"`` and the ``"logistic"`` loss.

The convergence theory (Chen, Yang, Zhao & Gu 2025, Assumption 4.1) asks that no two
inputs be parallel. Gaussian inputs satisfy this almost surely when d >= 2 (for
d = 1 any two inputs are parallel). For images the loaders warn when two selected
inputs are parallel (for instance duplicated images).
"""
from __future__ import annotations

import os
import pickle
import warnings

import numpy as np

from ._validate import check_choice, check_int

__all__ = ["gaussian", "digits", "cifar10", "CIFAR10_CLASSES"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
_CIFAR_TRAIN = tuple(f"data_batch_{k}" for k in range(1, 6))
_CIFAR_TEST = ("test_batch",)




def _normalise_rows(X: np.ndarray) -> np.ndarray:
    """Scale each row to ‖ξ‖² = d."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("an input is all zeros and cannot be normalised to ‖ξ‖² = d")
    return X / norms * np.sqrt(X.shape[1])


def _warn_if_parallel(X: np.ndarray) -> None:
    """Warn when two rows are parallel (maths/paper Assumption 4.1)."""
    if X.shape[0] < 2:
        return
    cos = (X @ X.T) / X.shape[1]  # rows have ‖ξ‖² = d
    np.fill_diagonal(cos, 0.0)
    if np.max(np.abs(cos)) > 1.0 - 1e-10:
        i, j = np.unravel_index(np.argmax(np.abs(cos)), cos.shape)
        warnings.warn(
            f"inputs {i} and {j} are parallel (duplicates?); Assumption 4.1 of the convergence "
            "theory (no two inputs parallel) does not hold for this data set",
            stacklevel=3,
        )


def _pick(labels: np.ndarray, classes, per_class: int, rng: np.random.Generator, names) -> np.ndarray:
    """Indices of ``per_class`` random examples of classes[0], then of classes[1]."""
    out = []
    for c, name in zip(classes, names):
        idx = np.flatnonzero(labels == c)
        if idx.size < per_class:
            raise ValueError(f"per_class = {per_class} but class {name!r} has only {idx.size} examples")
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
        Seed of ``np.random.default_rng``.

    Returns
    -------
    X : ndarray, shape (m, d)
    y : ndarray, shape (m,), values in {−1.0, +1.0}

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
    seed = check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    teacher = rng.standard_normal(d)
    X = rng.standard_normal((m, d))
    while np.any(np.linalg.norm(X, axis=1) == 0):  # probability zero; redraw such rows
        zero = np.linalg.norm(X, axis=1) == 0
        X[zero] = rng.standard_normal((int(zero.sum()), d))
    X = _normalise_rows(X)
    y = np.where(X @ teacher >= 0, 1.0, -1.0)
    return X, y


def _check_classes(classes, allowed, what: str) -> tuple:
    try:
        classes = tuple(classes)
    except TypeError:
        raise ValueError(f"classes must be two distinct {what}, got {classes!r}") from None
    if len(classes) != 2:
        raise ValueError(f"classes must be two distinct {what}, got {classes!r}")
    for c in classes:
        if isinstance(c, (bool, np.bool_)) or c not in allowed:
            raise ValueError(f"unknown class {c!r}; classes must be two distinct {what}: {list(allowed)}")
    if classes[0] == classes[1]:
        raise ValueError(f"classes must be two distinct {what}, got {classes!r}")
    return classes


def digits(classes=(0, 1), per_class: int = 5, seed: int = 0, exclude=None) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of scikit-learn's 8×8 handwritten digits (bundled, no download).

    ``per_class`` random images of each class are drawn without replacement,
    flattened to d = 64 and scaled to ‖ξ‖² = 64.

    Parameters
    ----------
    classes : pair of ints in 0..9
        Labelled −1 (``classes[0]``) and +1 (``classes[1]``).
    per_class : int
        Images per class, 1 <= per_class <= the number of images of that class (≈ 180).
    seed : int
        Seed of ``np.random.default_rng`` for the choice of images.
    exclude : array_like, shape (k, 64), optional
        Images never to draw, as rows returned by an earlier call (an image matches
        when it is parallel to a row): ``digits(exclude=X_train)`` gives a held-out
        set disjoint from ``X_train``.

    Returns
    -------
    X : ndarray, shape (2 per_class, 64)
        The images of ``classes[0]`` first, then those of ``classes[1]``.
    y : ndarray, shape (2 per_class,), −1.0 then +1.0

    Raises
    ------
    ImportError
        scikit-learn is not installed (``pip install zlimit[data]``).
    ValueError
        Bad classes, per_class, seed or exclude.
    """
    classes = _check_classes(classes, range(10), "digits 0..9")
    classes = tuple(check_int(f"classes[{k}]", c, 0, 9, hint=" (a digit)") for k, c in enumerate(classes))
    per_class = check_int("per_class", per_class, 1)
    seed = check_int("seed", seed, 0)
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(
            "zlimit.datasets.digits needs scikit-learn; install it with: pip install zlimit[data]"
        ) from exc
    bunch = load_digits()
    data, labels = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=np.float64)
        if exclude.ndim != 2 or exclude.shape[1] != data.shape[1]:
            raise ValueError(f"exclude must be images of shape (k, 64) such as an earlier digits() X, "
                             f"got shape {exclude.shape}")
        cos = _normalise_rows(data) @ _normalise_rows(exclude).T / data.shape[1]
        labels = np.where(np.any(cos > 1.0 - 1e-10, axis=1), -1, labels)  # -1: no class
    rng = np.random.default_rng(seed)
    idx = _pick(labels, classes, per_class, rng, classes)
    X = _normalise_rows(data[idx])
    y = np.repeat([-1.0, 1.0], per_class)
    _warn_if_parallel(X)
    return X, y


def _cifar_folder(path) -> str:
    path = os.fspath(path)
    nested = os.path.join(path, "cifar-10-batches-py")
    if os.path.isdir(nested) and not os.path.exists(os.path.join(path, "batches.meta")):
        return nested
    return path


def _load_pickle(file: str) -> dict:
    with open(file, "rb") as fh:
        return pickle.load(fh, encoding="bytes")


def cifar10(path, classes=("airplane", "automobile"), per_class: int = 5, seed: int = 0,
            split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Two classes of CIFAR-10, read from the standard python pickle batches on disk.

    Nothing is downloaded. ``path`` is the folder ``cifar-10-batches-py`` of the
    official "CIFAR-10 python version" archive (or the folder containing it), with
    ``batches.meta`` (the class names, ``b"label_names"``), ``data_batch_1`` ..
    ``data_batch_5`` (training split) and ``test_batch`` (test split). Each batch is a
    pickled dict with ``b"data"`` (uint8, shape (N, 3072), channel-major 32×32 RGB)
    and ``b"labels"`` (N ints). Pickles can run code when loaded: only point this at
    files you trust.

    Images are flattened to d = 3072 and scaled to ‖ξ‖² = 3072.

    Parameters
    ----------
    path : str or os.PathLike
    classes : pair of str
        Class names from ``batches.meta``, labelled −1 (``classes[0]``) and +1.
    per_class : int
        Images per class, drawn at random without replacement.
    seed : int
        Seed of ``np.random.default_rng`` for the choice of images.
    split : {"train", "test"}
        Draw from ``data_batch_1..5`` or from ``test_batch``.

    Returns
    -------
    X : ndarray, shape (2 per_class, 3072)
        The images of ``classes[0]`` first, then those of ``classes[1]``.
    y : ndarray, shape (2 per_class,), −1.0 then +1.0

    Raises
    ------
    FileNotFoundError
        The folder or one of the files it must contain is missing.
    ValueError
        Unknown class names (the message lists the allowed ones), bad per_class,
        seed or split, or files that are not CIFAR-10 batches.
    """
    split = check_choice("split", split, ("train", "test"))
    per_class = check_int("per_class", per_class, 1)
    seed = check_int("seed", seed, 0)
    folder = _cifar_folder(path)
    expected = ("batches.meta",) + (_CIFAR_TRAIN if split == "train" else _CIFAR_TEST)
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"CIFAR-10 folder {folder!r} does not exist; expected the extracted 'cifar-10-batches-py' "
            f"folder of the CIFAR-10 python version, containing {', '.join(expected)} (nothing is downloaded)"
        )
    missing = [f for f in expected if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 folder {folder!r} lacks {', '.join(missing)}; the {split} split needs "
            f"{', '.join(expected)} (the files of the CIFAR-10 python version; nothing is downloaded)"
        )
    meta = _load_pickle(os.path.join(folder, "batches.meta"))
    try:
        names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[b"label_names"])
    except (KeyError, TypeError):
        raise ValueError(f"{os.path.join(folder, 'batches.meta')} has no b'label_names' list; not a CIFAR-10 meta file") from None
    classes = _check_classes(classes, names, "CIFAR-10 class names")
    codes = tuple(names.index(c) for c in classes)

    datas, labels = [], []
    for f in expected[1:]:
        file = os.path.join(folder, f)
        batch = _load_pickle(file)
        try:
            data = np.asarray(batch[b"data"])
            lab = np.asarray(batch[b"labels"])
        except (KeyError, TypeError):
            raise ValueError(f"{file} is not a CIFAR-10 batch (needs keys b'data' and b'labels')") from None
        if data.ndim != 2 or data.shape[1] != 3072 or lab.shape != (data.shape[0],):
            raise ValueError(
                f"{file} is not a CIFAR-10 batch: b'data' must have shape (N, 3072) and b'labels' N entries, "
                f"got {data.shape} and {lab.shape}"
            )
        datas.append(data)
        labels.append(lab)
    data = np.concatenate(datas)
    labels = np.concatenate(labels)
    rng = np.random.default_rng(seed)
    idx = _pick(labels, codes, per_class, rng, classes)
    X = _normalise_rows(data[idx].astype(np.float64))
    y = np.repeat([-1.0, 1.0], per_class)
    _warn_if_parallel(X)
    return X, y
