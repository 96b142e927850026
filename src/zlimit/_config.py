"""TOML run configurations for the ``zlimit simulate`` and ``zlimit compare`` commands.

A configuration has three tables::

    [model]                      # the fields of zlimit.MLP
    depth = 3                    # required
    activation = "tanh"          # tanh, sigmoid, silu, gelu, softplus, relu, linear
    loss = "mse"                 # mse, logistic (one output) or xent (softmax cross-entropy)
    reduction = "mean"           # mean or sum
    lr = 0.5
    init_std = 1.0               # one number, or a list of depth+1 numbers
    lr_mult = 1.0                # one number, or a list of depth+1 numbers
    outputs = 1                  # k outputs (classes); xent needs k >= 2
    bias_std = 1.0               # biases: init std of the hidden ones (the output bias starts
                                 # at 0), or a list of depth+1 numbers; no key: no biases
    bias_lr_mult = 1.0           # biases' learning-rate multipliers (needs bias_std)
    momentum = 0.0               # heavy-ball momentum in [0, 1)
    weight_decay = 0.0           # decoupled weight decay λ, lr * λ < 1

    [data]
    source = "gaussian"          # gaussian, digits, cifar10 or file
    m = 6                        # gaussian: training inputs (required)
    d = 8                        # gaussian: input dimension (required)
    m_eval = 2                   # gaussian: extra evaluation inputs (default 0)
    seed = 0
    # digits:  classes = [0, 1], per_class = 5, seed = 0, labels = "pm1"
    # cifar10: path = "cifar-10-batches-py" (required), classes = ["airplane", "automobile"],
    #          per_class = 5, seed = 0, split = "train", labels = "pm1"
    # file:    path = "data.npz" (required), holding arrays X (m, d), y, optional X_eval

    [run]
    steps = 10                   # required
    particles = 20000            # Monte Carlo particles of the limit
    groups = 8                   # independent particle groups (error bars)
    seed = 0
    batch_size = 4               # optional; default full batch
    widths = [64, 256, 1024]     # compare: finite widths
    seeds = 2                    # compare: a count, or a list of seeds
    parametrization = "mup"      # mup or ntk

The gaussian source has one output's labels ±1. The labels of digits and cifar10 are
"pm1" (two classes, −1 and +1), "index" (y (m,) the position of the class in
``classes``, for loss xent) or "onehot" (y (m, K), for loss mse with K outputs); by
default "index" for loss xent, "onehot" for another loss with outputs > 1 and "pm1"
otherwise. A model of K outputs takes K classes, e.g. ``classes = [0, 1, 2, 3, 4, 5, 6,
7, 8, 9]``. A file's y is (m,) for one output or loss xent, (m, k) for mse with k outputs.
The data of every source are checked against [model] as ``simulate`` checks them.

Relative paths are relative to the folder of the configuration file. Every value is
checked by the function the library itself applies to that argument (``MLP``,
``simulate``, ``compare``, the data loaders), on the value as TOML gives it: nothing is
converted first, so ``lr = "0.1"`` or ``steps = 3.0`` are refused, not read as numbers.
Integers must fit in 64 bits, as TOML requires. A problem raises :class:`ConfigError`
(a ``ValueError``) whose one-line message names the file, the table and the key, such
as ``run.toml: [run] particles must be an integer >= 2, got 1.5 (not an integer)``; a
missing configuration file raises ``FileNotFoundError``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._validate import check_choice, check_data, check_int, check_int_list, check_seed, check_seeds, is_int

__all__ = ["ConfigError", "Config", "RunSettings", "load_config", "parse_config", "read_toml"]


class ConfigError(ValueError):
    """An invalid configuration file; the message names the table and key."""


# ------------------------------------------------------------------ value checks
# Each is called as check(key, value) and returns the value or raises a ValueError
# whose message starts with the key; they are the checks of the library's functions.
def _as_is(key: str, value):
    """For values checked elsewhere (the [model] fields, by zlimit.MLP itself)."""
    return value


def _int(lo: int) -> Callable:
    """An integer >= lo, as check_int (every integer argument of the library)."""
    return lambda key, value: check_int(key, value, lo)


def _choice(choices: tuple) -> Callable:
    """One of ``choices``, as check_choice."""
    return lambda key, value: check_choice(key, value, choices)


def _path(key: str, value) -> str:
    """A non-empty string, made absolute by :func:`parse_config`."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a non-empty string (a path), got {value!r}")
    return value


def _list(key: str, value) -> list:
    """A TOML array, left for its loader to check entry by entry."""
    if not isinstance(value, list):
        raise ValueError(f"{key} must be a list of classes, got {value!r}")
    return value


def _widths(key: str, value) -> tuple[int, ...]:
    """compare's widths: distinct integers >= 1."""
    return tuple(check_int_list(key, value, 1, unique=True))


def _seeds(key: str, value) -> int | tuple[int, ...]:
    """compare's seeds: a count, or a list of distinct seeds (:func:`check_seeds`)."""
    seeds = check_seeds(key, value)
    return len(seeds) if is_int(value) else tuple(seeds)


def _data_sources() -> dict:
    """source -> (the checks of its keys, its required keys): the arguments of its loader."""
    from .datasets import CIFAR10_SPLITS, LABELS

    return {
        "gaussian": ({"m": _int(1), "d": _int(1), "m_eval": _int(0), "seed": check_seed}, ("m", "d")),
        "digits": ({"classes": _list, "per_class": _int(1), "seed": check_seed, "labels": _choice(LABELS)}, ()),
        "cifar10": ({"path": _path, "classes": _list, "per_class": _int(1), "seed": check_seed,
                     "split": _choice(CIFAR10_SPLITS), "labels": _choice(LABELS)}, ("path",)),
        "file": ({"path": _path}, ("path",)),
    }


def _run_keys() -> dict:
    """The checks of the [run] keys: the arguments of simulate and compare (imported when
    needed: ``zlimit simulate --help`` reads this module's docstring without the engine)."""
    from ._api import LIMIT_PARAMETRIZATIONS

    return {"steps": _int(0), "particles": _int(2), "groups": _int(1), "seed": check_seed, "batch_size": _int(1),
            "widths": _widths, "seeds": _seeds, "parametrization": _choice(LIMIT_PARAMETRIZATIONS)}


RUN_REQUIRED = ("steps",)
TABLES = ("model", "data", "run")
_INT64 = (-2 ** 63, 2 ** 63 - 1)


@dataclass(frozen=True)
class RunSettings:
    """The [run] table with defaults filled in."""

    steps: int
    particles: int = 20_000
    groups: int = 8
    seed: int = 0
    batch_size: int | None = None
    widths: tuple[int, ...] = (64, 256, 1024)
    seeds: int | tuple[int, ...] = 2
    parametrization: str = "mup"


@dataclass
class Config:
    """A validated configuration.

    Attributes
    ----------
    path : Path
        The configuration file.
    model : zlimit.MLP
    data : dict
        The [data] table (``source`` and its arguments; paths made absolute).
    run : RunSettings
    """

    path: Path
    model: Any
    data: dict
    run: RunSettings
    _loaded: tuple | None = field(default=None, repr=False)

    def load_data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(X, y, X_eval) of the [data] table; X_eval is None when there is none.

        Raises
        ------
        ConfigError
            The data cannot be read or are invalid; the message names [data] and the key.
        """
        if self._loaded is None:
            self._loaded = _load_data(self.path.name, self.data, self.model)
        return self._loaded

    def batches(self, m: int):
        """The batch schedule of [run] batch_size (None: full batch) for ``m`` training inputs."""
        if self.run.batch_size is None:
            return None
        from ._model import batch_schedule

        try:
            return batch_schedule(m, self.run.batch_size, self.run.steps, seed=self.run.seed)
        except ValueError as exc:
            raise ConfigError(f"{self.path.name}: [run] {exc}") from None


# ------------------------------------------------------------------ reading
def read_toml(path) -> dict:
    """Parse a TOML file (tomllib on Python >= 3.11, else the ``tomli`` package)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError("reading TOML configurations on Python 3.10 needs tomli: pip install tomli") from None
    path = Path(path)
    if not path.is_file():
        if path.exists():
            raise ConfigError(f"configuration {str(path)!r} is not a file")
        raise FileNotFoundError(f"configuration file {str(path)!r} does not exist")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {str(path)!r}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path.name}: invalid TOML: not UTF-8 text") from None


def _check_int64(where: str, key: str, value) -> None:
    """TOML integers are 64-bit: refuse larger ones (tomllib reads them as Python ints)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_int64(where, f"{key}.{k}", v)
    elif isinstance(value, list):
        for k, v in enumerate(value):
            _check_int64(where, f"{key}[{k}]", v)
    elif is_int(value) and not _INT64[0] <= value <= _INT64[1]:
        raise ConfigError(f"{where} {key} = {value} does not fit in 64 bits (TOML integers are in "
                          "[-2**63, 2**63 - 1])")


def _check_table(where: str, table, checks: dict, required: tuple, context: str = "") -> dict:
    """The table with each value checked by ``checks[key]``; unknown or missing keys refused.

    ``context`` qualifies the list of allowed keys (such as "for source = 'file'").
    """
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table ([...] section), got {type(table).__name__}")
    out = {}
    for key, value in table.items():
        if key not in checks:
            raise ConfigError(f"{where} unknown key {key!r}{context} (allowed: {', '.join(sorted(checks))})")
        _check_int64(where, key, value)
        try:
            out[key] = checks[key](key, value)
        except ValueError as exc:
            raise ConfigError(f"{where} {exc}") from None
    for key in required:
        if key not in table:
            raise ConfigError(f"{where} missing required key {key!r}")
    return out


def _resolve(base: Path, p: str) -> str:
    q = Path(os.path.expanduser(p))
    return str(q if q.is_absolute() else (base / q))


def _parse_model(name: str, table):
    """The [model] table as a zlimit.MLP, checked by MLP itself."""
    from ._model import MLP

    fields = {f.name: _as_is for f in dataclasses.fields(MLP) if f.init}
    kwargs = _check_table(f"{name}: [model]", table, fields, ("depth",))
    try:
        return MLP(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"{name}: [model] {exc}") from None


def _parse_data(name: str, table, base: Path) -> dict:
    """The [data] table: ``source`` and its checked arguments, paths made absolute."""
    sources = _data_sources()
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: [data] must be a table ([...] section), got {type(table).__name__}")
    if "source" not in table:
        raise ConfigError(f"{name}: [data] missing required key 'source' (one of {', '.join(sources)})")
    try:
        source = check_choice("source", table["source"], tuple(sources))
    except ValueError as exc:
        raise ConfigError(f"{name}: [data] {exc}") from None
    checks, required = sources[source]
    data = _check_table(f"{name}: [data]", table, {"source": _as_is, **checks}, required,
                        context=f" for source = {source!r}")
    if "path" in data:
        data["path"] = _resolve(base, data["path"])
    return data


def _parse_run(name: str, table) -> RunSettings:
    """The [run] table, with the defaults of :class:`RunSettings`."""
    run = RunSettings(**_check_table(f"{name}: [run]", table, _run_keys(), RUN_REQUIRED))
    if run.particles // run.groups < 2:
        raise ConfigError(f"{name}: [run] particles = {run.particles} is too few for groups = {run.groups}; "
                          "give each group >= 2")
    return run


def parse_config(doc: dict, path="config.toml") -> Config:
    """Validate a parsed TOML document; returns a :class:`Config`.

    Parameters
    ----------
    doc : dict
        The document, as ``tomllib`` reads it.
    path : str or Path
        The configuration file: its name starts every message and its folder
        anchors relative data paths.

    Raises
    ------
    ConfigError
        Unknown tables or keys, wrong types, values out of range, an invalid model.
    """
    path = Path(path)
    name = path.name
    for key in doc:
        if key not in TABLES:
            raise ConfigError(f"{name}: unknown table [{key}] (allowed: [model], [data], [run])")
    for key in TABLES:
        if key not in doc:
            raise ConfigError(f"{name}: missing table [{key}]")
    model = _parse_model(name, doc["model"])
    data = _parse_data(name, doc["data"], path.resolve().parent)
    return Config(path=path, model=model, data=data, run=_parse_run(name, doc["run"]))


def load_config(path) -> Config:
    """Read and validate a configuration file (see the module docstring)."""
    return parse_config(read_toml(path), path)


# ------------------------------------------------------------------ data
def _load_data(name: str, data: dict, model):
    """(X, y, X_eval or None) of a checked [data] table, checked against ``model`` as
    simulate checks data; ConfigError naming [data] on failure."""
    args = {k: v for k, v in data.items() if k != "source"}
    if data["source"] == "file":
        return _load_file(name, Path(args["path"]), model)
    try:
        X, y, X_eval = _generate(data["source"], args, model)
        check_data(model, X, y, X_eval)
    except ValueError as exc:
        raise ConfigError(f"{name}: [data] {_describe(exc)}") from None
    except OSError as exc:  # the folder of source = "cifar10"
        raise ConfigError(f"{name}: [data] path: {_describe(exc)}") from None
    return X, y, X_eval


def _generate(source: str, args: dict, model):
    """(X, y, X_eval or None) of a built-in source; the image sources' labels default to
    the targets ``model`` takes."""
    from . import datasets

    if source == "gaussian":
        m, m_eval = args["m"], args.get("m_eval", 0)
        X, y = datasets.gaussian(m + m_eval, args["d"], seed=args.get("seed", 0))
        return X[:m], y[:m], (X[m:] if m_eval else None)
    loader = datasets.digits if source == "digits" else datasets.cifar10
    return (*loader(**{"labels": _default_labels(model), **args}), None)


def _default_labels(model) -> str:
    """The labels of the image sources without a ``labels`` key: the targets ``model`` takes."""
    if model.loss.labels == "class":
        return "index"
    return "onehot" if model.outputs > 1 else "pm1"


def _describe(exc: BaseException) -> str:
    """One line: an OSError as 'strerror: filename', anything else as its message."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {os.fsdecode(exc.filename)!r}" if exc.filename else exc.strerror
    return " ".join(str(exc).split())


_NPZ_HOW = "save X (m, d), y (m,) and optionally X_eval with numpy.savez(path, X=X, y=y)"


def _read_npz(file: Path) -> dict:
    """The arrays of an .npz file; ValueError saying what the file is instead."""
    if file.is_dir():
        raise ValueError(f"data file {str(file)!r} is a folder, not an .npz file")
    if not file.exists():
        raise ValueError(f"data file {str(file)!r} does not exist")
    with open(file, "rb") as fh:
        magic = fh.read(6)
    if magic == b"\x93NUMPY":
        raise ValueError(f"{file.name} is a .npy file (one array), not an .npz file; {_NPZ_HOW}")
    if not magic.startswith(b"PK"):
        raise ValueError(f"{file.name} is not an .npz file (not a zip archive); {_NPZ_HOW}")
    try:
        with np.load(file, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as exc:  # a damaged archive or an object array: any failure to decode it
        raise ValueError(f"{file.name} is not a readable .npz file ({_describe(exc)}); {_NPZ_HOW}") from None


def _load_file(name: str, file: Path, model):
    """(X, y, X_eval or None) of a ``source = "file"`` .npz, checked as simulate checks data."""
    where = f"{name}: [data] path:"
    try:
        arrays = _read_npz(file)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{where} {_describe(exc)}") from None
    unknown = sorted(set(arrays) - {"X", "y", "X_eval"})
    missing = [k for k in ("X", "y") if k not in arrays]
    if unknown or missing:
        raise ConfigError(f"{where} {file.name} holds arrays {sorted(arrays)}; it needs X (m, d) and y (m,) "
                          "(or (m, k) for loss mse with k outputs), and may hold X_eval (m_eval, d)")
    try:
        X, y, X_eval = check_data(model, arrays["X"], arrays["y"], arrays.get("X_eval"))
    except ValueError as exc:
        raise ConfigError(f"{where} {file.name}: {exc}") from None
    return X, y, (X_eval if "X_eval" in arrays else None)
