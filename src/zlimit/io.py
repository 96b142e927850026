"""Saving and loading runs, and conversion to xarray.

File format ("zlimit-run", version 1)
-------------------------------------
One ``.npz`` archive (:func:`numpy.savez`, uncompressed, no pickled objects; it is
read with ``allow_pickle=False``). Entries:

==========================  ===================================================
``outputs_groups``          (G, T+1, M)
``loss_groups``             (G, T+1)
``error_signals_groups``    (G, T, m)
``kernels/{kind}{l}``       ``Run.kernels`` entries, e.g. ``kernels/h1``
``cross/{kind}{l}``         ``Run.cross`` entries, e.g. ``cross/x2``
``novelty/{side}{l}``       ``Run.novelty`` entries, e.g. ``novelty/fwd2``
``bases/{stat}_{side}{l}``  ``Run.bases`` entries, e.g. ``bases/size_fwd2``
``meta/{i}``                numpy arrays and numpy scalars found in ``Run.meta``
``__meta__``                0-d unicode array holding one JSON (ASCII) document
==========================  ===================================================

Every array keeps its dtype and bytes, so a round trip is bit-exact. The JSON
document holds::

    {"format": "zlimit-run", "format_version": 1, "zlimit_version": "...",
     "model": MLP.describe(), "custom": {"activation": bool, "loss": bool},
     "record_steps": [...], "meta": <Run.meta, encoded>,
     "kernels": [keys], "cross": [keys], "novelty": [keys], "bases": [keys]}

``Run.meta`` may hold None, bool, int, float (NaN and inf included), str, lists,
tuples, dicts (any keys of these types) and numpy arrays or scalars; tuples, non-str
dict keys and numpy values are tagged (``{"__zlimit_tuple__": [...]}``,
``{"__zlimit_dict__": [[k, v], ...]}``, ``{"__zlimit_array__": "meta/0"}``,
``{"__zlimit_scalar__": "meta/1"}``) so that they load back with their types.

The model is rebuilt from its description by activation and loss *name*. A run of a
custom :class:`~zlimit.Activation` or :class:`~zlimit.Loss` (one that is not the
built-in of that name) cannot be rebuilt from a name; :func:`load` then raises and
asks for ``load(path, model=...)``.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ._activations import ACTIVATIONS
from ._losses import LOSSES
from ._model import MLP
from ._results import Run

__all__ = ["save", "load", "to_xarray", "FORMAT", "FORMAT_VERSION"]

FORMAT = "zlimit-run"
FORMAT_VERSION = 1

_META = "__meta__"
_DICTS = ("kernels", "cross", "novelty", "bases")
_FIELDS = ("outputs_groups", "loss_groups", "error_signals_groups")
_KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")
_TAGS = ("__zlimit_tuple__", "__zlimit_dict__", "__zlimit_array__", "__zlimit_scalar__")


# ---------------------------------------------------------------------- meta
class _Encoder:
    """Encode Run.meta into JSON-able data; numpy values go to separate arrays."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def _store(self, value: np.ndarray, where: str) -> str:
        if value.dtype.hasobject:
            raise ValueError(f"run.meta{where} is a numpy object array, which cannot be saved without pickle")
        name = f"meta/{len(self.arrays)}"
        self.arrays[name] = value
        return name

    def __call__(self, x: Any, where: str = "") -> Any:
        if isinstance(x, np.generic):
            return {"__zlimit_scalar__": self._store(np.asarray(x), where)}
        if isinstance(x, np.ndarray):
            return {"__zlimit_array__": self._store(x, where)}
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, tuple):
            return {"__zlimit_tuple__": [self(v, f"{where}[{i}]") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [self(v, f"{where}[{i}]") for i, v in enumerate(x)]
        if isinstance(x, dict):
            if all(isinstance(k, str) and not k.startswith("__zlimit_") for k in x):
                return {k: self(v, f"{where}[{k!r}]") for k, v in x.items()}
            return {"__zlimit_dict__": [[self(k, f"{where} key"), self(v, f"{where}[{k!r}]")] for k, v in x.items()]}
        raise ValueError(
            f"run.meta{where} has type {type(x).__name__}, which cannot be saved; meta may hold "
            "None, bool, int, float, str, lists, tuples, dicts and numpy arrays or scalars"
        )


def _decode(x: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(x, list):
        return [_decode(v, arrays) for v in x]
    if isinstance(x, dict):
        if len(x) == 1:
            (tag, v), = x.items()
            if tag == "__zlimit_tuple__":
                return tuple(_decode(e, arrays) for e in v)
            if tag == "__zlimit_dict__":
                out = {}
                for k, e in v:
                    k = _decode(k, arrays)
                    out[k] = _decode(e, arrays)
                return out
            if tag == "__zlimit_array__":
                return arrays[v]
            if tag == "__zlimit_scalar__":
                return arrays[v][()]
        return {k: _decode(v, arrays) for k, v in x.items()}
    return x


# ---------------------------------------------------------------------- save
def save(run: Run, path) -> Path | None:
    """Write a run to one ``.npz`` file (format in the module docstring).

    Parameters
    ----------
    run : Run
    path : str, os.PathLike or writable binary file object
        Written exactly as given (no suffix is added; ``.npz`` is conventional).
        A path is written atomically: to a temporary file in the same folder, then
        renamed.

    Returns
    -------
    Path of the file written (None for a file object).

    Raises
    ------
    ValueError
        For an object-dtype array, a dict key with characters outside
        ``[A-Za-z0-9_.-]``, or a ``meta`` value that cannot be encoded.
    """
    if not isinstance(run, Run):
        raise ValueError(f"save needs a zlimit Run, got {type(run).__name__}")
    from . import __version__

    arrays: dict[str, np.ndarray] = {}
    for name in _FIELDS:
        arrays[name] = np.asarray(getattr(run, name))
    keys: dict[str, list[str]] = {}
    for group in _DICTS:
        keys[group] = []
        for key, value in getattr(run, group).items():
            if not isinstance(key, str) or not _KEY.match(key):
                raise ValueError(f"run.{group} key {key!r} is not a plain name ([A-Za-z0-9_.-]+) and cannot be saved")
            arrays[f"{group}/{key}"] = np.asarray(value)
            keys[group].append(key)
    for name, value in arrays.items():
        if value.dtype.hasobject:
            raise ValueError(f"array {name!r} has object dtype, which cannot be saved without pickle")

    encode = _Encoder()
    model = run.model
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "zlimit_version": __version__,
        "model": model.describe(),
        "custom": {
            "activation": ACTIVATIONS.get(model.activation.name) is not model.activation,
            "loss": LOSSES.get(model.loss.name) is not model.loss,
        },
        "record_steps": [int(s) for s in run.record_steps],
        "meta": encode(run.meta),
        **keys,
    }
    arrays.update(encode.arrays)
    arrays[_META] = np.array(json.dumps(info, ensure_ascii=True, allow_nan=True))

    if hasattr(path, "write"):
        np.savez(path, **arrays)
        return None
    path = Path(os.fspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


# ---------------------------------------------------------------------- load
_PASS = (FileNotFoundError, IsADirectoryError, PermissionError)
_BAD = (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile, zlib.error, UnicodeDecodeError)


def _bad(path, why: str) -> ValueError:
    return ValueError(f"{_name(path)}: not a readable zlimit run file ({why})")


def _name(path) -> str:
    return repr(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else "file"


def _head(path) -> bytes:
    """The first bytes of a path or a seekable file object (position kept)."""
    if hasattr(path, "read"):
        pos = path.tell()
        head = path.read(8)
        path.seek(pos)
        return bytes(head)
    with open(path, "rb") as fh:
        return fh.read(8)


def _read(path) -> dict[str, np.ndarray]:
    """All entries of an .npz, read eagerly; every failure becomes ValueError."""
    try:
        head = _head(path)
    except _PASS:
        raise
    except OSError as exc:
        raise _bad(path, f"cannot read it: {exc}") from exc
    if not head:
        raise _bad(path, "the file is empty")
    if not (head.startswith(b"PK") or head.startswith(b"\x93NUMPY")):
        raise _bad(path, f"it is not an .npz (zip) archive: it starts with {head[:8]!r}, not b'PK'")
    try:
        z = np.load(path, allow_pickle=False)
    except _PASS:
        raise
    except _BAD as exc:
        raise _bad(path, f"corrupted or truncated, or not an .npz archive: {type(exc).__name__}: {exc}") from exc
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise _bad(path, "it holds a single .npy array, not an .npz archive")
    try:
        with z:
            return {name: z[name] for name in z.files}
    except _BAD as exc:
        raise _bad(path, f"corrupted or truncated archive: {type(exc).__name__}: {exc}") from exc


def _parse_meta(path, entries: dict[str, np.ndarray]) -> dict:
    if _META not in entries:
        raise _bad(path, f"no {_META!r} entry; a plain .npz archive, not written by zlimit.save")
    raw = entries[_META]
    try:
        if raw.dtype.kind == "U" and raw.ndim == 0:
            text = str(raw[()])
        elif raw.dtype == np.uint8 and raw.ndim == 1:
            text = raw.tobytes().decode("utf-8")
        else:
            raise ValueError(f"{_META!r} has dtype {raw.dtype} and shape {raw.shape}")
        info = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(path, f"its {_META!r} entry is not a JSON document: {exc}") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        fmt = info.get("format") if isinstance(info, dict) else None
        raise _bad(path, f"format {fmt!r}, expected {FORMAT!r}")
    version = info.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _bad(path, f"invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{_name(path)} was written in {FORMAT} format version {version} "
            f"(zlimit {info.get('zlimit_version')}); this zlimit reads versions up to {FORMAT_VERSION}: upgrade zlimit"
        )
    return info


def _model(path, desc: dict, custom: dict, model: MLP | None) -> MLP:
    if model is not None:
        if not isinstance(model, MLP):
            raise ValueError(f"model must be a zlimit.MLP, got {type(model).__name__}")
        given = model.describe()
        diff = sorted(k for k in set(desc) | set(given) if desc.get(k) != given.get(k))
        if diff:
            detail = "; ".join(f"{k}: file {desc.get(k)!r}, given {given.get(k)!r}" for k in diff)
            raise ValueError(f"model= does not match the model saved in {_name(path)}: {detail}")
        return model
    for what, registry, flag in (("activation", ACTIVATIONS, "activation"), ("loss", LOSSES, "loss")):
        name = desc.get(what)
        if custom.get(flag) or name not in registry:
            cls = "Activation" if what == "activation" else "Loss"
            raise ValueError(
                f"{_name(path)} was written with a custom {what} {name!r}, which cannot be rebuilt from its "
                f"name (built-ins: {sorted(registry)}); pass the model: "
                f"load(path, model=zlimit.MLP(..., {what}=zlimit.{cls}({name!r}, ...)))"
            )
    try:
        return MLP(
            depth=desc["depth"],
            activation=desc["activation"],
            loss=desc["loss"],
            reduction=desc["reduction"],
            lr=desc["lr"],
            init_std=desc["init_std"],
            lr_mult=desc["lr_mult"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(path, f"invalid model description {desc!r}: {exc}") from exc


def load(path, model: MLP | None = None) -> Run:
    """Read a run written by :func:`save`.

    Parameters
    ----------
    path : str, os.PathLike or readable binary file object
    model : MLP, optional
        The model to attach. Needed when the run used a custom activation or loss;
        it must have the same :meth:`MLP.describe` as the saved model. By default the
        model is rebuilt from the saved description (equal ``describe()``,
        ``sigma`` and ``eta``; its ``init_std``/``lr_mult`` are per-layer lists).

    Returns
    -------
    Run
        Every array bit-identical to the saved one; ``meta`` and ``record_steps``
        equal to the saved ones.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        For a corrupted or truncated file, a file that is not a zlimit run
        (e.g. a plain .npz), a newer format version, or a custom activation/loss
        without ``model=``.
    """
    entries = _read(path)
    info = _parse_meta(path, entries)
    try:
        keys = {group: list(info.get(group, [])) for group in _DICTS}
        record_steps = tuple(int(s) for s in info["record_steps"])
        desc, custom = dict(info["model"]), dict(info.get("custom", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(path, f"incomplete {_META!r} entry: {exc}") from exc
    needed = list(_FIELDS) + [f"{g}/{k}" for g, ks in keys.items() for k in ks]
    missing = [name for name in needed if name not in entries]
    if missing:
        raise _bad(path, f"entries {missing} are missing (truncated or edited archive)")
    mlp = _model(path, desc, custom, model)
    try:
        meta = _decode(info.get("meta", {}), entries)
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(path, f"run.meta refers to a missing entry: {exc}") from exc
    return Run(
        model=mlp,
        meta=meta,
        outputs_groups=entries["outputs_groups"],
        loss_groups=entries["loss_groups"],
        error_signals_groups=entries["error_signals_groups"],
        kernels={k: entries[f"kernels/{k}"] for k in keys["kernels"]},
        cross={k: entries[f"cross/{k}"] for k in keys["cross"]},
        record_steps=record_steps,
        novelty={k: entries[f"novelty/{k}"] for k in keys["novelty"]},
        bases={k: entries[f"bases/{k}"] for k in keys["bases"]},
    )


# ---------------------------------------------------------------------- xarray
def _plain(x: Any) -> Any:
    if isinstance(x, (np.generic, np.ndarray)):
        return x.tolist()
    if isinstance(x, (set, frozenset)):
        return sorted(x, key=repr)
    return repr(x)


def to_xarray(run: Run):
    """The run as an :class:`xarray.Dataset` (needs ``pip install xarray``).

    Dimensions: ``group`` (G), ``step`` (T+1), ``input``/``input2`` (M),
    ``update`` (T, the SGD steps that have error signals), ``train_input``/
    ``train_input2`` (m) and ``record_step`` (the run's ``record_steps``). The
    ``input`` coordinate carries ``is_train`` (True for the first m inputs).

    Variables: ``outputs`` (group, step, input), ``loss`` (group, step),
    ``error_signals`` (group, update, train_input), ``kernel_{key}`` (group, step,
    input, input2; "dh" kernels on (group, update, train_input, train_input2)),
    ``cross_{key}`` (group, record_step, step, input, input2) and
    ``novelty_{key}`` (group, step, input). Attributes: ``model`` and ``meta`` as
    JSON strings (numpy values as plain numbers and lists; tuples as lists), ``m``.

    Raises
    ------
    ImportError
        When xarray is not installed.
    """
    try:
        import xarray as xr
    except ImportError as exc:
        raise ImportError("to_xarray needs xarray, which is not installed: pip install xarray") from exc
    g, t1, big_m = run.outputs_groups.shape
    m = run.m
    coords = {
        "group": np.arange(g),
        "step": np.arange(t1),
        "input": np.arange(big_m),
        "input2": np.arange(big_m),
        "update": np.arange(t1 - 1),
        "train_input": np.arange(m),
        "train_input2": np.arange(m),
        "record_step": np.asarray(run.record_steps, dtype=np.int64),
        "is_train": ("input", np.arange(big_m) < m),
    }
    data = {
        "outputs": (("group", "step", "input"), run.outputs_groups),
        "loss": (("group", "step"), run.loss_groups),
        "error_signals": (("group", "update", "train_input"), run.error_signals_groups),
    }
    for key, value in run.kernels.items():
        dims = ("group", "update", "train_input", "train_input2") if key.startswith("dh") else ("group", "step", "input", "input2")
        data[f"kernel_{key}"] = (dims, value)
    for key, value in run.cross.items():
        data[f"cross_{key}"] = (("group", "record_step", "step", "input", "input2"), value)
    for key, value in run.novelty.items():
        data[f"novelty_{key}"] = (("group", "step", "input"), value)
    for key, value in run.bases.items():
        data[f"basis_{key}"] = (("group", "step"), value)
    try:
        meta = json.dumps(run.meta, ensure_ascii=True, default=_plain)
    except (TypeError, ValueError):  # e.g. tuple dict keys
        meta = repr(run.meta)
    attrs = {"model": json.dumps(run.model.describe()), "meta": meta, "m": m}
    return xr.Dataset(data, coords=coords, attrs=attrs)
