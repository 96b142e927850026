"""Saving and loading runs, and conversion to xarray.

File format ("zlimit-run", version 3)
-------------------------------------
One ``.npz`` archive (:func:`numpy.savez`, uncompressed, no pickled objects; it is
read with ``allow_pickle=False``). Entries:

==========================  ===================================================
``outputs_groups``          (G, T+1, M), or (G, T+1, M, k) for k > 1 outputs
``loss_groups``             (G, T+1)
``error_signals_groups``    (G, T, m), or (G, T, m, k) for k > 1 outputs
``ntk``                     (G, M, M), ``Run.ntk``; only for an NTK-limit run
``kernels/{kind}{l}``       ``Run.kernels`` entries, e.g. ``kernels/h1``
``cross/{kind}{l}``         ``Run.cross`` entries, e.g. ``cross/x2``
``moments/{kind}{l}``       ``Run.moments`` entries (G, T+1, M, 2), e.g. ``moments/h1``
``novelty/{side}{l}``       ``Run.novelty`` entries, e.g. ``novelty/fwd2``
``bases/{stat}_{side}{l}``  ``Run.bases`` entries, e.g. ``bases/size_fwd2``
``meta/{i}``                numpy arrays and numpy scalars found in ``Run.meta``
``__meta__``                0-d unicode array holding one JSON (ASCII) document
==========================  ===================================================

Every array keeps its dtype and bytes, so a round trip is bit-exact. The JSON
document holds::

    {"format": "zlimit-run", "format_version": 3, "zlimit_version": "...",
     "model": MLP.describe(), "custom": {"activation": bool, "loss": bool},
     "record_steps": [...], "error_model": "groups" | "exact",
     "meta": <Run.meta, encoded>, "ntk": bool,
     "kernels": [keys], "cross": [keys], "novelty": [keys], "bases": [keys],
     "moments": [keys]}

``"ntk"`` says whether the ``ntk`` entry is there (``Run.ntk`` is not None).

Files written before ``error_model`` existed load with "exact" when
``meta["kind"] == "exact"`` and "groups" otherwise. Version 2 added the model fields
of maths §6 (``outputs``, ``bias_std``, ``bias_lr_mult``, ``momentum``,
``weight_decay``); a version 1 file lacks them and loads with those extensions off
(:data:`ADDED_MODEL_KEYS`: one output, no biases, no momentum, no weight decay).
Version 3 added ``moments`` and ``ntk``; a file of version 1 or 2 loads with no
moments (``Run.moments == {}``) and ``Run.ntk = None``.

The document nests at most 64 levels (:data:`zlimit._codec.MAX_DEPTH`; :func:`save`
refuses deeper ``meta``). The parts must agree, on saving and on loading: with G,
T+1 and M from ``outputs_groups``, the shapes above (the class axis exactly when the
model has k > 1 outputs), ``kernels/dh{l}`` (G, T, m, m), ``cross/*``
(G, len(record_steps), T+1, M, M), ``novelty/*`` (G, T+1, M) and ``bases/*``
(G, T+1); kernel, cross and moment keys for layers 1..L of the model's depth L
(for each kind present; ``moments`` may be empty);
``record_steps`` distinct steps in [0, T] including 0; ``meta["steps"]``,
``meta["m"]`` and ``meta["m_eval"]`` (when present) equal to T, m and M - m; and
``error_model`` "exact" exactly when ``meta["kind"]`` is "exact".

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

import base64
import binascii
import errno
import io as stdio
import json
import os
import re
import stat
import zipfile
from typing import Any, NamedTuple

import numpy as np
from numpy.lib import format as npy

from ._codec import DICTS as _DICTS, ERROR_MODELS, FIELDS as _FIELDS, FORMAT, FORMAT_VERSION, KEY as _KEY, MAX_DEPTH
from ._codec import META as _META, NTK as _NTK, check_layout, place as _place, save as _save, to_xarray
from ._codec import variable_dims as _variable_dims, _xarray
from ._model import MLP, check_model
from ._results import Run
from ._activations import ACTIVATIONS
from ._losses import LOSSES

__all__ = ["save", "load", "to_xarray", "from_xarray", "FORMAT", "FORMAT_VERSION", "ADDED_MODEL_KEYS"]

#: the model fields of format version 2 (maths §6), as :class:`~zlimit.MLP` arguments with
#: the values a version 1 file, which lacks them, implies: every extension off
ADDED_MODEL_KEYS = {"outputs": 1, "bias_std": None, "bias_lr_mult": 1.0, "momentum": 0.0, "weight_decay": 0.0}
#: the model fields of every format version
_MODEL_KEYS = ("depth", "activation", "loss", "reduction", "lr", "init_std", "lr_mult")

#: a JSON string, escapes included (unrolled so that long strings match in linear time)
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def save(run: Run, path):
    """Write a run to one ``.npz`` file (format in the module docstring; see :meth:`zlimit.Run.save`).

    Parameters
    ----------
    run : Run
    path : str, os.PathLike or writable binary file object
        Written exactly as given (no suffix is added; ``.npz`` is conventional).
        A path is written atomically (:func:`zlimit._atomic.atomic_write`): to a
        temporary file ``.{name}.{pid}.{random}.tmp`` in the same folder, flushed to
        disk, then renamed over the target, so the file holds either its old bytes or
        the whole new run, whatever happens. A symlink is followed and its target
        replaced (the link survives); a replaced file keeps its permission bits, a new
        one gets ``0o666 & ~umask``. A temporary file left by a killed process is
        removed by the next save to the same path.

    Returns
    -------
    Path of the file written, as given (None for a file object).

    Raises
    ------
    ValueError
        For an object that is not a Run, a run whose arrays, keys and metadata
        disagree (shapes, depth, ``record_steps``, ``error_model`` against
        ``meta["kind"]``), an object-dtype array, a dict key with characters outside
        ``[A-Za-z0-9_.-]``, a ``meta`` value that cannot be encoded or is nested
        deeper than the format allows, a path that is not a str or os.PathLike (a
        file descriptor), or a path to a device, named pipe or socket (left
        untouched).
    IsADirectoryError
        If ``path`` is a folder.
    FileNotFoundError
        If the folder of ``path`` does not exist.
    PermissionError
        If ``path`` is read-only or its folder is not writable.
    OSError
        If writing fails, e.g. on a full disk: same errno, one line naming ``path``;
        the old file is kept and no temporary file is left.

    Examples
    --------
    >>> import os, tempfile, numpy as np, zlimit
    >>> run = zlimit.train_finite(zlimit.MLP(depth=1), np.eye(2, 3), np.array([1.0, -1.0]), width=8, steps=1)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = zlimit.io.save(run, os.path.join(folder, "run.npz"))
    ...     print(os.listdir(folder))
    ['run.npz']
    """
    if not isinstance(run, Run):
        raise ValueError(f"save needs a zlimit Run, got {type(run).__name__}")
    return _save(run, path)


def _decode(x: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Undo :class:`zlimit._codec._Encoder`'s tags; TypeError or ValueError for a malformed value.

    Its recursion follows the JSON nesting, which :func:`_parse_meta` bounds by
    :data:`~zlimit._codec.MAX_DEPTH` before parsing.
    """
    if isinstance(x, list):
        return [_decode(v, arrays) for v in x]
    if not isinstance(x, dict):
        return x
    if len(x) == 1:
        (tag, v), = x.items()
        if tag in ("__zlimit_tuple__", "__zlimit_dict__") and not isinstance(v, list):
            raise ValueError(f"{tag} holds a {type(v).__name__}, not a list")
        if tag == "__zlimit_tuple__":
            return tuple(_decode(e, arrays) for e in v)
        if tag == "__zlimit_dict__":
            return {_decode(k, arrays): _decode(e, arrays) for k, e in v}
        if tag in ("__zlimit_array__", "__zlimit_scalar__"):
            if not (isinstance(v, str) and v.startswith("meta/") and v in arrays):
                raise ValueError(f"{tag} refers to {v!r}, which is not a meta/ entry of the archive")
            if tag == "__zlimit_array__":
                return arrays[v]
            if arrays[v].ndim != 0:
                raise ValueError(f"{tag} {v!r} has shape {arrays[v].shape}, not a scalar")
            return arrays[v][()]
    return {k: _decode(v, arrays) for k, v in x.items()}


# ---------------------------------------------------------------------- load
_PASS = (FileNotFoundError, IsADirectoryError, PermissionError)


def _bad(path, why: str) -> ValueError:
    return _refuse(_name(path), why)


def _refuse(name: str, why: str, what: str = "a readable zlimit run file") -> ValueError:
    why = " ".join(why.split())  # one line, whatever the library messages hold
    return ValueError(f"{name} is not {what}: {why}")


def _name(path) -> str:
    return repr(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else "the file object"


def _check_source(path) -> None:
    """ValueError unless ``path`` is a str or os.PathLike path, or a file object."""
    if hasattr(path, "read"):
        return
    if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str):
        hint = " (a file descriptor is not accepted: pass the file's path)" if isinstance(path, int) else ""
        raise ValueError("load needs the path of a run file (str or os.PathLike) or a readable binary file "
                         f"object, got {type(path).__name__} {path!r}{hint}")


def _array(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One ``.npy`` member, read to its end so that zipfile checks its CRC-32."""
    return _npy(lambda: zf.open(info), info.file_size, repr(info.filename))


def _npy(open_file, size: int, name: str) -> np.ndarray:
    """The array of a ``.npy`` file of ``size`` bytes that ``open_file()`` opens (twice).

    The header is read first: an array larger than its file (a damaged shape) is
    refused before memory is allocated for it, as are bytes after the array.
    """
    with open_file() as f:
        version = npy.read_magic(f)
        # versions 2.0 and 3.0 share the header layout; only the field names' encoding
        # differs, and the size does not depend on it
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, _, dtype = read_header(f)
    if int(np.prod(shape, dtype=object)) * dtype.itemsize > size:
        raise ValueError(f"member {name} declares an array of shape {shape} and dtype {dtype}, "
                         f"larger than its {size} bytes")
    with open_file() as f:
        array = npy.read_array(f, allow_pickle=False)
        if f.read(1):
            raise ValueError(f"member {name} has bytes after its array")
    return array


def _entries(path, fh) -> dict[str, np.ndarray]:
    """Every array of the archive open as ``fh``, by name without ``.npy``."""
    try:
        start = fh.tell()
        head = fh.read(8)
        fh.seek(start)
    except (OSError, ValueError) as exc:  # not seekable, closed, or text that does not decode
        raise _bad(path, f"cannot read it: {exc}") from exc
    if not isinstance(head, bytes):
        raise _bad(path, f"reading it gives {type(head).__name__}, not bytes: open it in binary mode ('rb')")
    if not head:
        raise _bad(path, "the file is empty")
    if head.startswith(b"\x93NUMPY"):
        raise _bad(path, "it holds a single .npy array, not an .npz archive")
    if not head.startswith(b"PK"):
        raise _bad(path, f"it is not an .npz (zip) archive: it starts with {head!r}, not b'PK'")
    entries: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(fh) as zf:
            for info in zf.infolist():
                name = info.filename.removesuffix(".npy")
                if name == info.filename or name in entries:
                    raise ValueError(f"member {info.filename!r} is not a .npy array or appears twice")
                entries[name] = _array(zf, info)
    except MemoryError:
        raise
    except Exception as exc:  # the zip and npy readers raise many types on damaged bytes
        raise _bad(path, f"corrupted or truncated archive: {type(exc).__name__}: {exc}") from exc
    return entries


def _read(path) -> dict[str, np.ndarray]:
    """All entries of an .npz, read eagerly; every failure but a missing, unreadable
    or folder path becomes ValueError."""
    if hasattr(path, "read"):
        return _entries(path, path)
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, f"{_name(path)} is a folder, not a run file")
        if not stat.S_ISREG(st.st_mode):  # a pipe would block, a device never end
            raise _bad(path, "it is a device, named pipe or socket, not a regular file")
        with open(path, "rb") as fh:
            return _entries(path, fh)
    except _PASS:
        raise
    except OSError as exc:
        raise _bad(path, f"cannot read it: {exc.strerror or exc}") from exc


def _json_depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` in a JSON text, brackets inside strings not counted.

    >>> _json_depth('{"a": [1, {"b": "[[["}]}')
    3
    """
    codes = np.frombuffer(_STRING.sub("", text).encode("utf-8", "surrogatepass"), dtype=np.uint8)
    opens = (codes == ord("[")) | (codes == ord("{"))
    closes = (codes == ord("]")) | (codes == ord("}"))
    return int(np.cumsum(opens.astype(np.int64) - closes).max(initial=0))


class _Source(NamedTuple):
    """Where a run is read from, for messages: ``name`` ("'run.npz'", "the dataset") and
    ``what`` it should be ("a readable zlimit run file")."""

    name: str
    what: str = "a readable zlimit run file"

    def bad(self, why: str) -> ValueError:
        return _refuse(self.name, why, self.what)


def _json(source: _Source, text: str, where: str) -> Any:
    """``text`` parsed as JSON, refused (``where`` named) when it nests deeper than
    :data:`~zlimit._codec.MAX_DEPTH` levels or is not JSON."""
    depth = _json_depth(text)  # json.loads recurses once per level
    if depth > MAX_DEPTH:
        raise source.bad(f"its {where} JSON document nests {depth} levels deep, more than the {MAX_DEPTH} "
                         "a run file may")
    try:
        return json.loads(text)
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        raise source.bad(f"its {where} entry is not a JSON document: {exc}") from exc


def _check_version(source: _Source, info: Any) -> dict:
    """``info`` if it is a document of this format at a version this zlimit reads."""
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        fmt = info.get("format") if isinstance(info, dict) else None
        raise source.bad(f"format {fmt!r}, expected {FORMAT!r}")
    version = info.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise source.bad(f"invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{source.name} was written in {FORMAT} format version {version} "
            f"(zlimit {info.get('zlimit_version')}); this zlimit reads versions up to {FORMAT_VERSION}: upgrade zlimit"
        )
    return info


def _parse_meta(source: _Source, entries: dict[str, np.ndarray]) -> dict:
    if _META not in entries:
        raise source.bad(f"no {_META!r} entry; a plain .npz archive, not written by zlimit.save")
    raw = entries[_META]
    try:
        if raw.dtype.kind == "U" and raw.ndim == 0:
            text = str(raw[()])
        elif raw.dtype == np.uint8 and raw.ndim == 1:
            text = raw.tobytes().decode("utf-8")
        else:
            raise ValueError(f"{_META!r} has dtype {raw.dtype} and shape {raw.shape}")
    except ValueError as exc:  # UnicodeDecodeError included
        raise source.bad(f"its {_META!r} entry is not a JSON text: {exc}") from exc
    return _check_version(source, _json(source, text, repr(_META)))


class _Structure(NamedTuple):
    """The parts of a run document (``__meta__``) besides meta, checked."""

    keys: dict[str, list[str]]
    record_steps: tuple[int, ...]
    error_model: str
    desc: dict
    custom: dict
    ntk: bool


def _structure(info: dict) -> _Structure:
    """Keys per dict, record_steps, error_model, model description, custom flags and
    whether Θ is stored, of a parsed ``__meta__``; ValueError naming the first malformed field.
    Versions 1 and 2 lack ``moments`` and ``ntk``: no moments, no Θ."""
    keys = {}
    for group in _DICTS:
        names = info.get(group, [])
        if (not isinstance(names, list) or not all(isinstance(k, str) and _KEY.match(k) for k in names)
                or len(set(names)) != len(names)):
            raise ValueError(f"{group!r} is {names!r}, not a list of distinct plain names")
        keys[group] = names
    steps = info.get("record_steps")
    if not isinstance(steps, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps):
        raise ValueError(f"'record_steps' is {steps!r}, not a list of integers")
    if "error_model" in info:
        error_model = info["error_model"]
        if error_model not in ERROR_MODELS:
            raise ValueError(f"'error_model' is {error_model!r}, expected one of {ERROR_MODELS}")
    else:  # files written before error_model existed marked exact runs by meta["kind"]
        meta = info.get("meta")
        error_model = "exact" if isinstance(meta, dict) and meta.get("kind") == "exact" else "groups"
    desc, custom = info.get("model"), info.get("custom", {})
    if not isinstance(desc, dict) or not isinstance(custom, dict):
        raise ValueError(f"'model' {desc!r} and 'custom' {custom!r} must be JSON objects")
    ntk = info.get(_NTK, False)
    if not isinstance(ntk, bool):
        raise ValueError(f"{_NTK!r} is {ntk!r}, expected true or false (whether the run holds Θ)")
    return _Structure(keys, tuple(steps), error_model, desc, custom, ntk)


def _model(source: _Source, desc: dict, custom: dict, model: MLP | None) -> MLP:
    if model is not None:
        check_model(model)
        given = model.describe()
        # what a version 1 file implies for the fields it lacks, written as describe() writes them
        implied = MLP(depth=model.depth).describe()
        desc = {**{k: implied[k] for k in ADDED_MODEL_KEYS}, **desc}
        diff = sorted(k for k in set(desc) | set(given) if desc.get(k) != given.get(k))
        if diff:
            detail = "; ".join(f"{k}: file {desc.get(k)!r}, given {given.get(k)!r}" for k in diff)
            raise ValueError(f"model= does not match the model saved in {source.name}: {detail}")
        return model
    for what, registry, flag in (("activation", ACTIVATIONS, "activation"), ("loss", LOSSES, "loss")):
        name = desc.get(what)
        if custom.get(flag) or not isinstance(name, str) or name not in registry:
            cls = "Activation" if what == "activation" else "Loss"
            raise ValueError(
                f"{source.name} was written with a custom {what} {name!r}, which cannot be rebuilt from its "
                f"name (built-ins: {sorted(registry)}); pass the model: "
                f"load(path, model=zlimit.MLP(..., {what}=zlimit.{cls}({name!r}, ...)))"
            )
    try:
        return MLP(**{k: desc[k] for k in _MODEL_KEYS}, **{k: desc.get(k, v) for k, v in ADDED_MODEL_KEYS.items()})
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise source.bad(f"invalid model description {desc!r}: {exc}") from exc


def _run(source: _Source, info: dict, entries: dict[str, np.ndarray], model: MLP | None,
         missing_hint: str = "truncated or edited archive") -> Run:
    """The run of a parsed document ``info`` and its arrays ``entries`` (named as in the
    file: ``outputs_groups``, ``kernels/h1``, ``ntk``, ``meta/0``, ...), checked."""
    try:
        parts = _structure(info)
    except ValueError as exc:
        raise source.bad(f"invalid {_META!r} entry: {exc}") from exc
    fields = (*_FIELDS, _NTK) if parts.ntk else _FIELDS
    needed = list(fields) + [f"{g}/{k}" for g, ks in parts.keys.items() for k in ks]
    missing = [name for name in needed if name not in entries]
    if missing:
        raise source.bad(f"entries {missing} are missing ({missing_hint})")
    mlp = _model(source, parts.desc, parts.custom, model)
    try:
        meta = _decode(info.get("meta", {}), entries)
    except (TypeError, ValueError) as exc:
        raise source.bad(f"its meta cannot be decoded: {exc}") from exc
    dicts = {group: {k: entries[f"{group}/{k}"] for k in parts.keys[group]} for group in _DICTS}
    try:
        check_layout(mlp.depth, mlp.outputs, {name: entries[name] for name in fields}, dicts, parts.record_steps,
                     parts.error_model, meta)
    except ValueError as exc:
        raise source.bad(f"its parts disagree: {exc}") from exc
    return Run(model=mlp, meta=meta, outputs_groups=entries["outputs_groups"], loss_groups=entries["loss_groups"],
               error_signals_groups=entries["error_signals_groups"], record_steps=parts.record_steps,
               error_model=parts.error_model, ntk=entries[_NTK] if parts.ntk else None, **dicts)


def load(path, model: MLP | None = None) -> Run:
    """Read a run written by :func:`save`.

    Parameters
    ----------
    path : str, os.PathLike or readable binary file object
        A path, not a file descriptor. Symlinks are followed. The whole archive is
        read and checked: every member's CRC-32, every array's size against its
        header, the JSON document's nesting (at most
        :data:`~zlimit._codec.MAX_DEPTH` levels) and the agreement of the arrays'
        shapes with each other, with the model's depth, with ``record_steps`` and
        with ``meta`` (``steps``, ``m``, ``m_eval``, and ``kind`` "exact" exactly
        when ``error_model`` is "exact").
    model : MLP, optional
        The model to attach. Needed when the run used a custom activation or loss;
        it must have the same :meth:`MLP.describe` as the saved model. By default the
        model is rebuilt from the saved description (equal ``describe()``,
        ``sigma`` and ``eta``; its ``init_std``/``lr_mult`` are per-layer lists). The
        fields a version 1 file lacks are :data:`ADDED_MODEL_KEYS`, here and when
        ``model`` is compared with the file's.

    Returns
    -------
    Run
        Every array bit-identical to the saved one; ``meta`` and ``record_steps``
        equal to the saved ones.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    IsADirectoryError
        If ``path`` is a folder.
    PermissionError
        If the file may not be read.
    ValueError
        For anything else, with ``path`` in a one-line message: an argument that is
        not a path or file object (a file descriptor, bytes), a device or named
        pipe, a corrupted or truncated file (a single flipped bit included), a file
        that is not a zlimit run (e.g. a plain .npz), an edited file whose parts
        disagree, a newer format version, or a custom activation/loss without
        ``model=``.

    Examples
    --------
    >>> import os, tempfile, numpy as np, zlimit
    >>> run = zlimit.train_finite(zlimit.MLP(depth=1), np.eye(2, 3), np.array([1.0, -1.0]), width=8, steps=1)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     back = zlimit.io.load(run.save(os.path.join(folder, "run.npz")))
    >>> back.model == run.model, back.meta == run.meta, bool((back.loss_groups == run.loss_groups).all())
    (True, True, True)
    """
    _check_source(path)
    source = _Source(_name(path))
    entries = _read(path)
    return _run(source, _parse_meta(source, entries), entries, model)


# ---------------------------------------------------------------------- xarray
_DATASET = _Source("the dataset", "a zlimit run dataset (one made by Run.to_xarray)")


def _attribute(ds, name: str) -> Any:
    """The JSON attribute ``name`` of a dataset made by :func:`to_xarray`, parsed."""
    text = ds.attrs.get(name)
    if not isinstance(text, str):
        raise _DATASET.bad(f"its attribute {name!r} is {'missing' if text is None else type(text).__name__}, "
                           "expected JSON text")
    return _json(_DATASET, text, f"{name!r} attribute")


def _dataset_entry(ds, name: str, spec: Any, classes: tuple[str, ...]) -> np.ndarray:
    """The run array ``name`` (a run-file entry name) of dtype and shape ``spec``, cut out of its variable."""
    if not (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], list)
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in spec[1])):
        raise ValueError(f"array {name!r} is described as {spec!r}, not [dtype, shape]")
    try:
        dtype = np.dtype(spec[0])
    except TypeError as exc:
        raise ValueError(f"array {name!r} has dtype {spec[0]!r}: {exc}") from None
    if dtype.kind not in "biuf":
        raise ValueError(f"array {name!r} has dtype {dtype}; run arrays hold real numbers")
    variable, labels = _place(name)
    if variable not in ds.data_vars:
        raise ValueError(f"variable {variable!r} (holding {name!r}) is missing")
    expected = sum(_variable_dims(variable, classes), ())
    da = ds[variable]
    if da.dims != expected:
        raise ValueError(f"variable {variable!r} has dimensions {da.dims}, expected {expected}")
    try:
        values = da.sel(labels).values
    except (KeyError, ValueError) as exc:
        raise ValueError(f"variable {variable!r} has no entry at {labels} for {name!r} ({exc})") from None
    shape = tuple(spec[1])
    if len(shape) != values.ndim or any(n > have for n, have in zip(shape, values.shape)):
        at = f" at {labels}" if labels else ""
        raise ValueError(f"variable {variable!r}{at} has shape {values.shape}, too small for {name!r} of "
                         f"shape {shape} (was the dataset cut?)")
    return np.array(values[tuple(slice(0, n) for n in shape)], dtype=dtype, order="C")


def from_xarray(ds, model: MLP | None = None) -> Run:
    """The :class:`~zlimit.Run` of a dataset made by :meth:`Run.to_xarray`: its exact inverse.

    ``from_xarray(run.to_xarray())`` equals ``run`` bit for bit (every array with its
    dtype, ``record_steps``, ``meta``, the model, ``error_model``, ``moments``,
    ``ntk``), and so does the dataset written to netCDF and read back
    (``to_netcdf(path, engine="scipy")`` and ``xarray.open_dataset(path,
    engine="scipy")``, netCDF3, or any engine that keeps float64 and string
    attributes).

    Parameters
    ----------
    ds : xarray.Dataset
        Dimensions ``(group, step, input, input2, layer, kind, record_step, stat,
        side[, class])`` and the attributes ``model``, ``meta`` and ``zlimit_run``, as
        :func:`zlimit._codec.to_xarray` documents. Variables may be added; the run's own
        variables, dimensions and attributes must be as written (a dataset cut with
        ``isel``/``sel`` is refused).
    model : MLP, optional
        As for :func:`load`: needed for a custom activation or loss, and checked
        against the saved description.

    Returns
    -------
    Run

    Raises
    ------
    ImportError
        When xarray is not installed.
    ValueError
        For an object that is not an ``xarray.Dataset``, or a dataset that is not a run
        (no or malformed attributes, a missing or reshaped variable, parts that
        disagree, a newer format version), one line naming what is wrong.

    Examples
    --------
    >>> import numpy as np, pytest, zlimit
    >>> _ = pytest.importorskip("xarray")  # the example needs xarray (pip install zlimit[xarray])
    >>> run = zlimit.train_finite(zlimit.MLP(depth=2), np.eye(2, 3), np.array([1.0, -1.0]), width=8, steps=2)
    >>> back = zlimit.io.from_xarray(run.to_xarray())
    >>> back.model == run.model, back.meta == run.meta
    (True, True)
    >>> all(np.array_equal(back.kernels[k], run.kernels[k], equal_nan=True) for k in run.kernels)
    True
    """
    xr = _xarray("from_xarray")
    if not isinstance(ds, xr.Dataset):
        raise ValueError(f"from_xarray needs the xarray.Dataset of Run.to_xarray(), got {type(ds).__name__}")
    info = _check_version(_DATASET, _attribute(ds, "zlimit_run"))
    info = {**info, "model": _attribute(ds, "model"), "meta": _attribute(ds, "meta")}
    arrays, meta_arrays = info.get("arrays"), info.get("meta_arrays", {})
    if not isinstance(arrays, dict) or not isinstance(meta_arrays, dict):
        raise _DATASET.bad("its 'zlimit_run' attribute lacks the 'arrays' and 'meta_arrays' tables")
    classes = ("class",) if "class" in ds.dims else ()
    entries = {}
    try:
        for name, spec in arrays.items():
            entries[name] = _dataset_entry(ds, name, spec, classes)
        for name, text in meta_arrays.items():
            if not (isinstance(name, str) and name.startswith("meta/") and isinstance(text, str)):
                raise ValueError(f"meta array {name!r} is not a meta/ entry in base64 text")
            blob = base64.b64decode(text.encode("ascii"), validate=True)
            entries[name] = _npy(lambda: stdio.BytesIO(blob), len(blob), repr(name))
    except (ValueError, binascii.Error) as exc:  # includes damaged .npy headers of meta arrays
        raise _DATASET.bad(str(exc)) from exc
    return _run(_DATASET, info, entries, model, "variables missing from the dataset")
