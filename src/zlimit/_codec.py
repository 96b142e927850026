"""The run file codec: a :class:`~zlimit.Run` to plain arrays and one JSON document, and back.

The format is described in :mod:`zlimit.io`. This module reads runs by attribute
only (it imports no result or model class), so :class:`~zlimit.Run` can use it
without an import cycle; :func:`zlimit.io.load` builds the objects.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ._activations import ACTIVATIONS
from ._keys import parse_key
from ._losses import LOSSES
from ._version import __version__

__all__ = ["save", "to_xarray", "FORMAT", "FORMAT_VERSION", "DICTS", "FIELDS", "META"]

FORMAT = "zlimit-run"
FORMAT_VERSION = 1

META = "__meta__"
DICTS = ("kernels", "cross", "novelty", "bases")
FIELDS = ("outputs_groups", "loss_groups", "error_signals_groups")
_KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")


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


# ---------------------------------------------------------------------- save
def save(run, path) -> Path | None:
    """Write ``run`` to ``path``: the codec behind :func:`zlimit.io.save` and
    :meth:`zlimit.Run.save` (see the former for the parameters and errors)."""
    arrays: dict[str, np.ndarray] = {}
    for name in FIELDS:
        arrays[name] = np.asarray(getattr(run, name))
    keys: dict[str, list[str]] = {}
    for group in DICTS:
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
        "error_model": run.error_model,
        "meta": encode(run.meta),
        **keys,
    }
    arrays.update(encode.arrays)
    arrays[META] = np.array(json.dumps(info, ensure_ascii=True, allow_nan=True))

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


# ---------------------------------------------------------------------- xarray
def _plain(x: Any) -> Any:
    if isinstance(x, (np.generic, np.ndarray)):
        return x.tolist()
    if isinstance(x, (set, frozenset)):
        return sorted(x, key=repr)
    return repr(x)


def to_xarray(run):
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
        dims = (("group", "update", "train_input", "train_input2") if parse_key(key)[0] == "dh"
                else ("group", "step", "input", "input2"))
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
