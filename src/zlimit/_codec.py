"""The run file codec: a :class:`~zlimit.Run` to plain arrays and one JSON document, and back.

The format is described in :mod:`zlimit.io`. This module reads runs by attribute
only (it imports no result or model class), so :class:`~zlimit.Run` can use it
without an import cycle; :func:`zlimit.io.load` builds the objects.
"""
from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ._activations import ACTIVATIONS
from ._atomic import atomic_write
from ._keys import parse_key
from ._losses import LOSSES
from ._version import __version__

__all__ = ["save", "encode", "to_xarray", "place", "variable_dims", "check_layout", "FORMAT", "FORMAT_VERSION", "DICTS", "FIELDS", "NTK",
           "META", "KEY", "MAX_DEPTH", "ERROR_MODELS"]

FORMAT = "zlimit-run"
#: 2: the model description holds the maths §6 fields (outputs, biases, momentum, weight decay),
#: which a reader of version 1 would drop; version 1 files load with those extensions off.
#: 3: the first moments of the features (``moments``) and the NTK Θ (``ntk``); files of
#: versions 1 and 2 load with no moments and no Θ
FORMAT_VERSION = 3

META = "__meta__"
DICTS = ("kernels", "cross", "novelty", "bases", "moments")
FIELDS = ("outputs_groups", "loss_groups", "error_signals_groups")
#: the run's one optional array: Θ of an NTK-limit run, None otherwise
NTK = "ntk"
#: the names allowed as keys of a run's dicts (entry names in the archive)
KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")
#: deepest nesting of the JSON document (containers within containers) that is saved or loaded
MAX_DEPTH = 64
ERROR_MODELS = ("groups", "exact")


# ---------------------------------------------------------------------- meta
class _Encoder:
    """Encode Run.meta into JSON-able data; numpy values go to separate arrays.

    ``level`` counts the JSON containers around a value; a value whose encoding would
    nest deeper than :data:`MAX_DEPTH` is refused (a file :func:`zlimit.io.load` reads).
    """

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def _store(self, value: np.ndarray, where: str) -> str:
        if value.dtype.hasobject:
            raise ValueError(f"run.meta{where} is a numpy object array, which cannot be saved without pickle")
        name = f"meta/{len(self.arrays)}"
        self.arrays[name] = value
        return name

    @staticmethod
    def _open(level: int, containers: int, where: str) -> int:
        """The level inside ``containers`` nested containers opened at ``level``."""
        if level + containers > MAX_DEPTH:
            raise ValueError(f"run.meta{where} is nested too deeply to save: a run file's JSON document "
                             f"nests at most {MAX_DEPTH} levels")
        return level + containers

    def __call__(self, x: Any, where: str = "", level: int = 1) -> Any:
        if isinstance(x, np.generic):
            self._open(level, 1, where)
            return {"__zlimit_scalar__": self._store(np.asarray(x), where)}
        if isinstance(x, np.ndarray):
            self._open(level, 1, where)
            return {"__zlimit_array__": self._store(x, where)}
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, tuple):
            inner = self._open(level, 2, where)
            return {"__zlimit_tuple__": [self(v, f"{where}[{i}]", inner) for i, v in enumerate(x)]}
        if isinstance(x, list):
            inner = self._open(level, 1, where)
            return [self(v, f"{where}[{i}]", inner) for i, v in enumerate(x)]
        if isinstance(x, dict):
            if all(isinstance(k, str) and not k.startswith("__zlimit_") for k in x):
                inner = self._open(level, 1, where)
                return {k: self(v, f"{where}[{k!r}]", inner) for k, v in x.items()}
            inner = self._open(level, 3, where)
            return {"__zlimit_dict__": [[self(k, f"{where} key", inner), self(v, f"{where}[{k!r}]", inner)]
                                        for k, v in x.items()]}
        raise ValueError(
            f"run.meta{where} has type {type(x).__name__}, which cannot be saved; meta may hold "
            "None, bool, int, float, str, lists, tuples, dicts and numpy arrays or scalars"
        )


# ---------------------------------------------------------------------- layout
def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def class_axis(outputs: int) -> tuple[tuple[int, ...], str, str]:
    """The trailing shape of outputs and error signals for k = ``outputs`` (``()`` for
    one output, ``(k,)`` otherwise, maths §6), its symbol in a shape and the model's k in words.

    >>> class_axis(1), class_axis(3)
    (((), '', 'a model of 1 output'), ((3,), ', k', 'a model of k = 3 outputs'))
    """
    if outputs == 1:
        return (), "", "a model of 1 output"
    return (outputs,), ", k", f"a model of k = {outputs} outputs"


def _expect(name: str, a: np.ndarray, shape: tuple, dims: str) -> None:
    if a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {dims}: {shape}")


def _check_fields(outputs: int, fields: dict[str, np.ndarray]) -> tuple[int, int, int, int]:
    """G, T+1, M and m of a run's outputs, loss and error signals, checked against each
    other and the model's k = ``outputs`` (see :func:`check_layout`)."""
    classes, axis, model = class_axis(outputs)
    out = fields["outputs_groups"]
    if out.ndim != 3 + len(classes) or out.shape[0] < 1 or out.shape[1] < 1 or out.shape[3:] != classes:
        raise ValueError(f"outputs_groups has shape {out.shape}, expected (G, T+1, M{axis}) with G >= 1 and T >= 0 "
                         f"for {model}")
    G, T1, M = out.shape[:3]
    _expect("loss_groups", fields["loss_groups"], (G, T1), "(G, T+1)")
    signals = fields["error_signals_groups"]
    if (signals.ndim != 3 + len(classes) or signals.shape[:2] != (G, T1 - 1) or signals.shape[3:] != classes
            or signals.shape[2] > M):
        raise ValueError(f"error_signals_groups has shape {signals.shape}, expected (G, T, m{axis}) = "
                         f"({G}, {T1 - 1}, m{''.join(f', {c}' for c in classes)}) with m <= M = {M} for {model} "
                         f"(outputs_groups has shape {out.shape})")
    return G, T1, M, signals.shape[2]


def check_layout(depth: int, outputs: int, fields: dict[str, np.ndarray],
                 dicts: dict[str, dict[str, np.ndarray]], record_steps: tuple, error_model: Any, meta: Any) -> None:
    """Check that a run's arrays, keys and metadata agree; ValueError naming the first disagreement.

    Parameters
    ----------
    depth : int
        L, the model's depth.
    outputs : int
        k, the model's number of outputs.
    fields : dict
        ``outputs_groups`` (G, T+1, M), ``loss_groups`` (G, T+1) and
        ``error_signals_groups`` (G, T, m) with m <= M; with k > 1 outputs, the first
        and last have a trailing class axis: (G, T+1, M, k) and (G, T, m, k).
        Optionally ``ntk`` (G, M, M), Θ of an NTK-limit run.
    dicts : dict
        ``kernels``, ``cross``, ``novelty``, ``bases`` and ``moments``, each key ->
        array. Kernel keys ``{h,x}{l}`` (G, T+1, M, M) and ``dh{l}`` (G, T, m, m);
        cross keys ``{h,x}{l}`` (G, R, T+1, M, M) with R = len(record_steps); moment
        keys ``{h,x}{l}`` (G, T+1, M, 2); in each of these three, for each kind
        present, layers 1..L all present (a dict may be empty). Novelty
        ``{fwd,bwd}{l}`` (G, T+1, M) and bases ``{stat}_{fwd,bwd}{l}`` (G, T+1) with
        l in 1..L.
    record_steps : tuple
        Distinct integers in [0, T] including 0.
    error_model : {"groups", "exact"}
        "exact" exactly when ``meta["kind"] == "exact"`` (when meta has a kind).
    meta : dict
        Its ``steps``, ``m`` and ``m_eval``, when present, equal T, m and M - m.

    Every array has a real numeric dtype (bool, integer or floating point).

    Examples
    --------
    >>> import numpy as np
    >>> fields = {"outputs_groups": np.zeros((1, 3, 2)), "loss_groups": np.zeros((1, 3)),
    ...           "error_signals_groups": np.zeros((1, 2, 2))}
    >>> dicts = {"kernels": {}, "cross": {}, "novelty": {}, "bases": {}}
    >>> check_layout(1, 1, fields, dicts, (0,), "groups", {"steps": 2})
    >>> check_layout(1, 1, fields, dicts, (0,), "groups", {"steps": 5})
    Traceback (most recent call last):
    ...
    ValueError: meta['steps'] = 5 disagrees with the arrays, which hold T = 2 (outputs_groups (1, 3, 2), error_signals_groups (1, 2, 2))
    >>> check_layout(1, 3, fields, dicts, (0,), "groups", {})
    Traceback (most recent call last):
    ...
    ValueError: outputs_groups has shape (1, 3, 2), expected (G, T+1, M, k) with G >= 1 and T >= 0 for a model of k = 3 outputs
    """
    for name, a in [*fields.items(), *((f"{g}/{k}", a) for g, d in dicts.items() for k, a in d.items())]:
        if a.dtype.kind not in "biuf":
            raise ValueError(f"{name} has dtype {a.dtype}; run arrays hold real numbers")
    G, T1, M, m = _check_fields(outputs, fields)
    T = T1 - 1
    if NTK in fields:
        _expect(NTK, fields[NTK], (G, M, M), "(G, M, M)")
    if (not all(_is_int(s) and 0 <= s <= T for s in record_steps) or len(set(record_steps)) != len(record_steps)
            or 0 not in record_steps):
        raise ValueError(f"record_steps {record_steps!r} are not distinct steps in [0, T = {T}] including 0")
    square, signal = ((G, T1, M, M), "(G, T+1, M, M)"), ((G, T, m, m), "(G, T, m, m)")
    cross = ((G, len(record_steps), T1, M, M), "(G, R, T+1, M, M) with R = len(record_steps)")
    layout = {("kernels", "h"): square, ("kernels", "x"): square, ("kernels", "dh"): signal,
              ("cross", "h"): cross, ("cross", "x"): cross,
              ("moments", "h"): ((G, T1, M, 2), "(G, T+1, M, 2)"), ("moments", "x"): ((G, T1, M, 2), "(G, T+1, M, 2)"),
              **{("novelty", side): ((G, T1, M), "(G, T+1, M)") for side in ("fwd", "bwd")},
              **{("bases", side): ((G, T1), "(G, T+1)") for side in ("fwd", "bwd")}}
    for group, entries in dicts.items():
        layers: dict[str, set[int]] = {}
        for k, a in entries.items():
            try:
                kind, layer, stat = parse_key(k)
            except ValueError as exc:
                raise ValueError(f"{group} key: {exc}") from None
            if (group, kind) not in layout or (stat is None) == (group == "bases") or not 1 <= layer <= depth:
                raise ValueError(f"{group} key {k!r} does not fit a model of depth {depth}")
            layers.setdefault(kind, set()).add(layer)
            _expect(f"{group}/{k}", a, *layout[group, kind])
        if group in ("kernels", "cross", "moments"):
            for kind, have in layers.items():
                if have != set(range(1, depth + 1)):
                    raise ValueError(f"{group} has {kind!r} layers {sorted(have)}; a model of depth {depth} "
                                     f"has layers 1..{depth}")
    if error_model not in ERROR_MODELS:
        raise ValueError(f"error_model is {error_model!r}, expected one of {ERROR_MODELS}")
    if not isinstance(meta, dict):
        raise ValueError(f"meta is a {type(meta).__name__}, expected a dict")
    kind = meta.get("kind")
    if kind is not None and (kind == "exact") != (error_model == "exact"):
        raise ValueError(f"error_model {error_model!r} disagrees with meta['kind'] {kind!r}: runs of kind "
                         "'exact', and only those, have error_model 'exact'")
    for name, symbol, value in (("steps", "T", T), ("m", "m", m), ("m_eval", "M - m", M - m)):
        if name in meta and not (_is_int(meta[name]) and meta[name] == value):
            raise ValueError(f"meta[{name!r}] = {meta[name]!r} disagrees with the arrays, which hold {symbol} = "
                             f"{value} (outputs_groups {fields['outputs_groups'].shape}, error_signals_groups "
                             f"{fields['error_signals_groups'].shape})")


# ---------------------------------------------------------------------- save
def encode(run, doing: str = "saved") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A run as the entries of a run file and its JSON document (format in :mod:`zlimit.io`).

    Parameters
    ----------
    run : Run
    doing : str
        What is being done with the run, for the error message ("saved", "converted").

    Returns
    -------
    arrays : dict
        Entry name (``outputs_groups``, ``kernels/h1``, ``ntk``, ``meta/0``, ...) -> the
        run's own array (not copied).
    info : dict
        The JSON-able document: format, versions, model, record_steps, error_model,
        encoded meta, the keys of each dict and whether Θ is present.

    Raises
    ------
    ValueError
        When the run's parts disagree (:func:`check_layout`), a key is not a plain name,
        an array has object dtype, or ``meta`` cannot be encoded.

    Examples
    --------
    >>> import numpy as np, zlimit
    >>> run = zlimit.Run(zlimit.MLP(depth=1), {"kind": "finite"}, np.zeros((1, 2, 1)), np.zeros((1, 2)),
    ...                  np.zeros((1, 1, 1)))
    >>> arrays, info = encode(run)
    >>> sorted(arrays), info["format_version"], info["ntk"]
    (['error_signals_groups', 'loss_groups', 'outputs_groups'], 3, False)
    """
    arrays: dict[str, np.ndarray] = {}
    for name in FIELDS:
        arrays[name] = np.asarray(getattr(run, name))
    if run.ntk is not None:
        arrays[NTK] = np.asarray(run.ntk)
    keys: dict[str, list[str]] = {}
    for group in DICTS:
        keys[group] = []
        for key, value in getattr(run, group).items():
            if not isinstance(key, str) or not KEY.match(key):
                raise ValueError(f"run.{group} key {key!r} is not a plain name ([A-Za-z0-9_.-]+) and cannot be "
                                 f"{doing}")
            arrays[f"{group}/{key}"] = np.asarray(value)
            keys[group].append(key)
    for name, value in arrays.items():
        if value.dtype.hasobject:
            raise ValueError(f"array {name!r} has object dtype, which cannot be {doing} without pickle")
    try:
        check_layout(run.model.depth, run.model.outputs, {name: arrays[name] for name in (*FIELDS, NTK)
                                                          if name in arrays},
                     {group: {k: arrays[f"{group}/{k}"] for k in keys[group]} for group in DICTS},
                     tuple(run.record_steps), run.error_model, run.meta)
    except ValueError as exc:
        raise ValueError(f"this run cannot be {doing}, its parts disagree: {exc}") from None

    encoder = _Encoder()
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
        "meta": encoder(run.meta),
        NTK: run.ntk is not None,
        **keys,
    }
    arrays.update(encoder.arrays)
    return arrays, info


def save(run, path) -> Path | None:
    """Write ``run`` to ``path``: the codec behind :func:`zlimit.io.save` and
    :meth:`zlimit.Run.save` (see the former for the parameters and errors)."""
    arrays, info = encode(run)
    arrays[META] = np.array(json.dumps(info, ensure_ascii=True, allow_nan=True))

    if hasattr(path, "write"):
        np.savez(path, **arrays)
        return None
    return atomic_write(path, lambda fh: np.savez(fh, **arrays), what="run file")


# ---------------------------------------------------------------------- xarray
#: the coordinates of the labelled axes of :func:`to_xarray`'s variables
LABELS = {"layer": None, "kind": ("h", "x"), "side": ("fwd", "bwd"), "stat": ("mean", "abs")}
#: per variable of the dataset: its leading dimensions (a run array's own axes, padded with
#: NaN where shorter) and the labelled dimensions its run arrays are stacked along
VARIABLES = {
    "outputs": (("group", "step", "input"), ()),
    "loss": (("group", "step"), ()),
    "error_signals": (("group", "step", "input"), ()),
    "ntk": (("group", "input", "input2"), ()),
    "kernel": (("group", "step", "input", "input2"), ("layer", "kind")),
    "dh_kernel": (("group", "step", "input", "input2"), ("layer",)),
    "cross_kernel": (("group", "record_step", "step", "input", "input2"), ("layer", "kind")),
    "moments": (("group", "step", "input", "stat"), ("layer", "kind")),
    "novelty": (("group", "step", "input"), ("layer", "side")),
    "basis": (("group", "step"), ("layer", "side")),
}
_FIELD_VARIABLES = {"outputs_groups": "outputs", "loss_groups": "loss", "error_signals_groups": "error_signals",
                    NTK: "ntk"}
_DESCRIPTIONS = {
    "outputs": "f_t(ξ_a) per group (f̊_t for a limit)",
    "loss": "full training loss per group",
    "error_signals": "χ_{t,i}, zero outside the batch B_t; NaN at the last step and at evaluation inputs",
    "ntk": "Θ(ξ_a, ξ_b) of each group (NTK limit)",
    "kernel": "E[Z^{v_t(ξ_a)} Z^{v_t(ξ_b)}], v = h^l or x^l (finite net: v·v'/n)",
    "dh_kernel": "kernel of the backward vectors dh^l on the batch of step t; NaN outside it, at the last "
                 "step and at evaluation inputs",
    "cross_kernel": "E[Z_s(ξ_a) Z_t(ξ_b)] for s = record_step; NaN for t < s (and, in the Monte Carlo limit, "
                    "for evaluation inputs ξ_a in layers >= 2 at t > s)",
    "moments": "E[Z^{v_t(ξ_a)}] (stat 'mean') and E|Z^{v_t(ξ_a)}| (stat 'abs')",
    "novelty": "residual norm of each vector added to the Gaussian process of W^l; NaN where none",
    "basis": "basis statistic {stat} of the Gaussian process of W^l after step t",
}


def place(name: str) -> tuple[str, dict[str, Any]]:
    """The variable of :func:`to_xarray` holding the run-file entry ``name``, and its labels.

    >>> place("kernels/h2"), place("bases/dropped_mass_fwd3"), place("loss_groups")
    (('kernel', {'layer': 2, 'kind': 'h'}), ('basis_dropped_mass', {'layer': 3, 'side': 'fwd'}), ('loss', {}))
    """
    if name in _FIELD_VARIABLES:
        return _FIELD_VARIABLES[name], {}
    group, _, k = name.partition("/")
    kind, layer, stat = parse_key(k)
    if group == "bases":
        return f"basis_{stat}", {"layer": layer, "side": kind}
    if group == "novelty":
        return "novelty", {"layer": layer, "side": kind}
    if group == "kernels" and kind == "dh":
        return "dh_kernel", {"layer": layer}
    variables = {"kernels": "kernel", "cross": "cross_kernel", "moments": "moments"}
    if group not in variables or kind not in ("h", "x"):
        raise ValueError(f"{name!r} is not the name of a run array (e.g. 'outputs_groups', 'kernels/h1')")
    return variables[group], {"layer": layer, "kind": kind}


def variable_dims(variable: str, classes: tuple[str, ...] = ()) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Leading and labelled dimensions of a variable of :func:`to_xarray` (``classes``:
    ``("class",)`` for a model of k > 1 outputs)."""
    lead, labels = VARIABLES["basis" if variable.startswith("basis_") else variable]
    return (lead + classes if variable in ("outputs", "error_signals") else lead), labels


def _stacked(pieces: dict[str, np.ndarray], lead: tuple[int, ...], labels: tuple[str, ...],
             positions: dict[str, dict]) -> np.ndarray:
    """The run arrays ``pieces`` in one array of shape ``lead`` + the labelled axes, each at
    its labels' positions from the origin; NaN elsewhere, in the smallest floating dtype
    that holds every piece exactly (float32 at least, which netCDF3 stores)."""
    sizes = tuple(len(positions[dim]) for dim in labels)
    out = np.full(lead + sizes, np.nan, dtype=np.result_type(*pieces.values(), np.float32))
    for name, a in pieces.items():
        _, where = place(name)
        index = tuple(positions[dim][where[dim]] for dim in labels)
        out[(*(slice(0, n) for n in a.shape), *index)] = a
    return out


def _xarray(what: str):
    try:
        import xarray
    except ImportError as exc:
        raise ImportError(f"{what} needs xarray, which is not installed: pip install zlimit[xarray]") from exc
    return xarray


def _npy_bytes(a: np.ndarray) -> str:
    """An array as the base64 text of its ``.npy`` file (dtype, order and bytes kept)."""
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def to_xarray(run):
    """The run as a labelled :class:`xarray.Dataset`; :func:`zlimit.io.from_xarray` is its inverse.

    Parameters
    ----------
    run : Run

    Returns
    -------
    xarray.Dataset
        Dimensions: ``group`` (G), ``step`` (T+1), ``input`` and ``input2`` (M: the m
        training inputs, then the evaluation inputs; coordinate ``is_train`` on
        ``input``), ``layer`` (1..L), ``kind`` ("h", "x"), ``record_step``
        (``run.record_steps``), ``stat`` ("mean", "abs"), ``side`` ("fwd", "bwd") and,
        for a model of k > 1 outputs, ``class`` (0..k-1).

        Variables, those the run has:

        - ``outputs`` (group, step, input[, class]) and ``loss`` (group, step);
        - ``error_signals`` (group, step, input[, class]), NaN at step T and at the
          evaluation inputs (χ has T steps and m inputs);
        - ``kernel`` (group, step, input, input2, layer, kind);
        - ``dh_kernel`` (group, step, input, input2, layer), NaN at step T, at the
          evaluation inputs and outside each batch;
        - ``cross_kernel`` (group, record_step, step, input, input2, layer, kind);
        - ``moments`` (group, step, input, stat, layer, kind);
        - ``ntk`` (group, input, input2), an NTK-limit run's Θ;
        - ``novelty`` (group, step, input, layer, side) and ``basis_{stat}`` (group,
          step, layer, side), e.g. ``basis_size``, of a Monte Carlo limit.

        ``ds.kernel.sel(layer=l, kind="h")`` is ``run.kernel_groups(l, "h")``. Entries a
        run does not have (layer 1's novelty, a kind it did not record) are NaN. Each
        variable's ``description`` attribute says what it holds.

    Notes
    -----
    The attributes are JSON text, so that netCDF3 stores them: ``model``
    (``MLP.describe()``), ``meta`` (``run.meta``; tuples, non-string keys and numpy
    values tagged as in the run file, :mod:`zlimit.io`) and ``zlimit_run`` (format and
    version, ``error_model``, ``record_steps``, the run's keys, each array's dtype and
    shape, ``meta``'s numpy arrays), which :func:`zlimit.io.from_xarray` reads.

    Each variable has the floating dtype of its arrays (integer and bool arrays are held
    in the smallest float holding them exactly, float32 at least); every array's dtype
    and shape are restored by :func:`zlimit.io.from_xarray`.

    Raises
    ------
    ImportError
        When xarray is not installed.
    ValueError
        When the run's parts disagree (as :func:`zlimit.io.save`).

    Examples
    --------
    >>> import numpy as np, pytest, zlimit
    >>> _ = pytest.importorskip("xarray")  # the example needs xarray (pip install zlimit[xarray])
    >>> X, y = np.eye(2, 3), np.array([1.0, -1.0])
    >>> run = zlimit.train_finite(zlimit.MLP(depth=2), X, y, width=8, steps=2, X_eval=np.ones((1, 3)))
    >>> ds = run.to_xarray()
    >>> dict(ds.sizes)
    {'group': 1, 'step': 3, 'input': 3, 'input2': 3, 'layer': 2, 'kind': 2, 'record_step': 1, 'stat': 2, 'side': 2}
    >>> ds.kernel.dims
    ('group', 'step', 'input', 'input2', 'layer', 'kind')
    >>> bool((ds.kernel.sel(layer=2, kind="x").values == run.kernel_groups(2, "x")).all())
    True
    >>> ds.is_train.values.tolist()
    [True, True, False]
    """
    xr = _xarray("Run.to_xarray")
    arrays, info = encode(run, "converted to xarray")
    G, T1, M = arrays["outputs_groups"].shape[:3]
    k = run.model.outputs
    classes = ("class",) if k > 1 else ()
    positions = {"layer": {l: l - 1 for l in range(1, run.model.depth + 1)},
                 **{dim: {v: i for i, v in enumerate(values)} for dim, values in LABELS.items() if values}}
    coords = {
        "group": np.arange(G), "step": np.arange(T1), "input": np.arange(M), "input2": np.arange(M),
        "layer": np.arange(1, run.model.depth + 1), "kind": list(LABELS["kind"]),
        "record_step": np.asarray(run.record_steps, dtype=np.int64), "stat": list(LABELS["stat"]),
        "side": list(LABELS["side"]), "is_train": ("input", np.arange(M) < run.m),
        **({"class": np.arange(k)} if classes else {}),
    }
    sizes = {"group": G, "step": T1, "input": M, "input2": M, "record_step": len(run.record_steps), "stat": 2,
             "class": k}
    variables: dict[str, dict[str, np.ndarray]] = {}
    for name, a in arrays.items():
        if not name.startswith("meta/"):
            variables.setdefault(place(name)[0], {})[name] = a
    data = {}
    for variable, pieces in variables.items():
        lead, labels = variable_dims(variable, classes)
        stacked = _stacked(pieces, tuple(sizes[d] for d in lead), labels, positions)
        description = _DESCRIPTIONS["basis" if variable.startswith("basis_") else variable]
        data[variable] = (lead + labels, stacked, {"description": description.replace("{stat}", variable[6:])})
    meta_arrays = {name: _npy_bytes(a) for name, a in arrays.items() if name.startswith("meta/")}
    document = {key: info[key] for key in info if key not in ("model", "meta")}
    document["arrays"] = {name: [a.dtype.str, list(a.shape)] for name, a in arrays.items()
                          if not name.startswith("meta/")}
    document["meta_arrays"] = meta_arrays
    attrs = {"model": _json(info["model"]), "meta": _json(info["meta"]), "zlimit_run": _json(document)}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _json(x: Any) -> str:
    return json.dumps(x, ensure_ascii=True, allow_nan=True)
