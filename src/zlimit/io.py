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
     "record_steps": [...], "error_model": "groups" | "exact",
     "meta": <Run.meta, encoded>,
     "kernels": [keys], "cross": [keys], "novelty": [keys], "bases": [keys]}

Files written before ``error_model`` existed load with "exact" when
``meta["kind"] == "exact"`` and "groups" otherwise.

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
import zipfile
import zlib
from typing import Any

import numpy as np

from ._codec import DICTS as _DICTS, FIELDS as _FIELDS, FORMAT, FORMAT_VERSION, META as _META
from ._codec import save as _save, to_xarray
from ._model import MLP, check_model
from ._results import Run
from ._activations import ACTIVATIONS
from ._losses import LOSSES

__all__ = ["save", "load", "to_xarray", "FORMAT", "FORMAT_VERSION"]

_TAGS = ("__zlimit_tuple__", "__zlimit_dict__", "__zlimit_array__", "__zlimit_scalar__")


def save(run: Run, path):
    """Write a run to one ``.npz`` file (format in the module docstring; see :meth:`zlimit.Run.save`).

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
        For an object that is not a Run, an object-dtype array, a dict key with
        characters outside ``[A-Za-z0-9_.-]``, or a ``meta`` value that cannot be encoded.
    """
    if not isinstance(run, Run):
        raise ValueError(f"save needs a zlimit Run, got {type(run).__name__}")
    return _save(run, path)


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
        check_model(model)
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
        # files written before error_model existed marked exact runs by meta["kind"]
        error_model = str(info.get("error_model") or ("exact" if info.get("meta", {}).get("kind") == "exact"
                                                       else "groups"))
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
        error_model=error_model,
    )


