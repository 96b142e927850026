"""TOML run configurations for the ``zlimit simulate`` and ``zlimit compare`` commands.

A configuration has three tables::

    [model]                      # the fields of zlimit.MLP
    depth = 3                    # required
    activation = "tanh"          # tanh, sigmoid, silu, gelu, softplus, relu, linear
    loss = "mse"                 # mse or logistic
    reduction = "mean"           # mean or sum
    lr = 0.5
    init_std = 1.0               # one number, or a list of depth+1 numbers
    lr_mult = 1.0                # one number, or a list of depth+1 numbers

    [data]
    source = "gaussian"          # gaussian, digits, cifar10 or file
    m = 6                        # gaussian: training inputs (required)
    d = 8                        # gaussian: input dimension (required)
    m_eval = 2                   # gaussian: extra evaluation inputs (default 0)
    seed = 0
    # digits:  classes = [0, 1], per_class = 5, seed = 0
    # cifar10: path = "cifar-10-batches-py" (required), classes = ["airplane", "automobile"],
    #          per_class = 5, seed = 0, split = "train"
    # file:    path = "data.npz" (required), holding arrays X (m, d), y (m,), optional X_eval

    [run]
    steps = 10                   # required
    particles = 20000            # Monte Carlo particles of the limit
    groups = 8                   # independent particle groups (error bars)
    seed = 0
    batch_size = 4               # optional; default full batch
    widths = [64, 256, 1024]     # compare: finite widths
    seeds = 2                    # compare: a count, or a list of seeds
    parametrization = "mup"      # mup or ntk

Relative paths are relative to the folder of the configuration file. Every key is
checked: an unknown key, a value of the wrong type or a missing file raises
:class:`ConfigError` (a ``ValueError``) or ``FileNotFoundError`` with a one-line
message naming the file, the table and the key.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._validate import is_int

__all__ = ["ConfigError", "Config", "RunSettings", "load_config", "parse_config", "read_toml"]


class ConfigError(ValueError):
    """An invalid configuration file; the message names the table and key."""


# ------------------------------------------------------------------ type checks
_is_int = is_int  # the package's one notion of an integer (bools are not)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_TYPES = {
    "int": (_is_int, "an integer"),
    "number": (_is_number, "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "number_or_list": (lambda v: _is_number(v) or (isinstance(v, list) and all(_is_number(x) for x in v)),
                       "a number or a list of numbers"),
    "int_list": (lambda v: isinstance(v, list) and all(_is_int(x) for x in v), "a list of integers"),
    "str_list": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "int_or_int_list": (lambda v: _is_int(v) or (isinstance(v, list) and all(_is_int(x) for x in v)),
                        "an integer or a list of integers"),
}

MODEL_KEYS = {"depth": "int", "activation": "str", "loss": "str", "reduction": "str", "lr": "number",
              "init_std": "number_or_list", "lr_mult": "number_or_list"}
MODEL_REQUIRED = ("depth",)

DATA_SOURCES = {
    "gaussian": ({"m": "int", "d": "int", "m_eval": "int", "seed": "int"}, ("m", "d")),
    "digits": ({"classes": "int_list", "per_class": "int", "seed": "int"}, ()),
    "cifar10": ({"path": "str", "classes": "str_list", "per_class": "int", "seed": "int", "split": "str"},
                ("path",)),
    "file": ({"path": "str"}, ("path",)),
}

RUN_KEYS = {"steps": "int", "particles": "int", "groups": "int", "seed": "int", "batch_size": "int",
            "widths": "int_list", "seeds": "int_or_int_list", "parametrization": "str"}
RUN_REQUIRED = ("steps",)
PARAMETRIZATIONS = ("mup", "ntk")

TABLES = ("model", "data", "run")


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
        """(X, y, X_eval) of the [data] table; X_eval is None when there is none."""
        if self._loaded is None:
            self._loaded = _load_data(self.path, self.data)
        return self._loaded

    def batches(self, m: int):
        """The batch schedule of [run] batch_size (None: full batch)."""
        if self.run.batch_size is None:
            return None
        from ._model import batch_schedule

        if self.run.batch_size > m:
            raise ConfigError(f"{self.path.name}: [run] batch_size = {self.run.batch_size} exceeds the "
                              f"number of training inputs m = {m}")
        return batch_schedule(m, self.run.batch_size, self.run.steps, seed=self.run.seed)


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
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path.name}: invalid TOML: not UTF-8 text") from None


def _check_table(where: str, table, schema: dict, required: tuple) -> dict:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table ([...] section), got {type(table).__name__}")
    for key, value in table.items():
        if key not in schema:
            raise ConfigError(f"{where} unknown key {key!r} (allowed: {', '.join(sorted(schema))})")
        check, what = _TYPES[schema[key]]
        if not check(value):
            raise ConfigError(f"{where} {key}: expected {what}, got {type(value).__name__} {value!r}")
    for key in required:
        if key not in table:
            raise ConfigError(f"{where} missing required key {key!r}")
    return dict(table)


def _at_least(where: str, table: dict, key: str, lo: int) -> None:
    v = table.get(key)
    if v is None:
        return
    values = v if isinstance(v, list) else [v]
    for x in values:
        if x < lo:
            raise ConfigError(f"{where} {key}: must be >= {lo}, got {x}")


def _resolve(base: Path, p: str) -> str:
    q = Path(os.path.expanduser(p))
    return str(q if q.is_absolute() else (base / q))


def parse_config(doc: dict, path="config.toml"):
    """Validate a parsed TOML document; returns a :class:`Config`.

    Raises
    ------
    ConfigError
        Unknown tables or keys, wrong types, values out of range, an invalid model.
    """
    from ._model import MLP

    path = Path(path)
    name = path.name
    for key in doc:
        if key not in TABLES:
            raise ConfigError(f"{name}: unknown table [{key}] (allowed: [model], [data], [run])")
    for key in TABLES:
        if key not in doc:
            raise ConfigError(f"{name}: missing table [{key}]")

    model_table = _check_table(f"{name}: [model]", doc["model"], MODEL_KEYS, MODEL_REQUIRED)
    try:
        model = MLP(**model_table)
    except ValueError as exc:
        raise ConfigError(f"{name}: [model] {exc}") from None

    data = doc["data"]
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: [data] must be a table")
    source = data.get("source")
    if source is None:
        raise ConfigError(f"{name}: [data] missing required key 'source' (one of {', '.join(DATA_SOURCES)})")
    if not isinstance(source, str) or source not in DATA_SOURCES:
        raise ConfigError(f"{name}: [data] source: expected one of {', '.join(DATA_SOURCES)}, got {source!r}")
    schema, required = DATA_SOURCES[source]
    rest = _check_table(f"{name}: [data] (source = {source!r})", {k: v for k, v in data.items() if k != "source"},
                        schema, required)
    for key, lo in (("m", 1), ("d", 1), ("m_eval", 0), ("seed", 0), ("per_class", 1)):
        _at_least(f"{name}: [data]", rest, key, lo)
    if "classes" in rest and len(rest["classes"]) != 2:
        raise ConfigError(f"{name}: [data] classes: expected two classes, got {rest['classes']!r}")
    if "path" in rest:
        rest["path"] = _resolve(path.resolve().parent, rest["path"])
    data = {"source": source, **rest}

    run_table = _check_table(f"{name}: [run]", doc["run"], RUN_KEYS, RUN_REQUIRED)
    for key, lo in (("steps", 0), ("particles", 2), ("groups", 1), ("seed", 0), ("batch_size", 1),
                    ("widths", 1), ("seeds", 0)):
        _at_least(f"{name}: [run]", run_table, key, lo)
    if _is_int(run_table.get("seeds")) and run_table["seeds"] < 1:
        raise ConfigError(f"{name}: [run] seeds: a count must be >= 1, got {run_table['seeds']}")
    for key in ("widths", "seeds"):
        if isinstance(run_table.get(key), list):
            if not run_table[key]:
                raise ConfigError(f"{name}: [run] {key}: must not be empty")
            if len(set(run_table[key])) != len(run_table[key]):
                raise ConfigError(f"{name}: [run] {key}: repeated entries in {run_table[key]}")
            run_table[key] = tuple(run_table[key])
    if run_table.get("parametrization", "mup") not in PARAMETRIZATIONS:
        raise ConfigError(f"{name}: [run] parametrization: expected one of {', '.join(PARAMETRIZATIONS)}, "
                          f"got {run_table['parametrization']!r}")
    run = RunSettings(**run_table)
    if run.particles // run.groups < 2:
        raise ConfigError(f"{name}: [run] particles = {run.particles} is too few for groups = {run.groups}")
    return Config(path=path, model=model, data=data, run=run)


def load_config(path) -> Config:
    """Read and validate a configuration file (see the module docstring)."""
    return parse_config(read_toml(path), path)


# ------------------------------------------------------------------ data
def _load_data(path: Path, data: dict):
    from . import datasets

    name = path.name
    source = data["source"]
    args = {k: v for k, v in data.items() if k != "source"}
    try:
        if source == "gaussian":
            m_eval = args.pop("m_eval", 0)
            X, y = datasets.gaussian(args["m"] + m_eval, args["d"], seed=args.get("seed", 0))
            m = args["m"]
            return X[:m], y[:m], (X[m:] if m_eval else None)
        if source == "digits":
            X, y = datasets.digits(**{k: tuple(v) if k == "classes" else v for k, v in args.items()})
            return X, y, None
        if source == "cifar10":
            p = args.pop("path")
            X, y = datasets.cifar10(p, **{k: tuple(v) if k == "classes" else v for k, v in args.items()})
            return X, y, None
    except ValueError as exc:
        raise ConfigError(f"{name}: [data] {exc}") from None
    # source == "file"
    file = Path(args["path"])
    if not file.is_file():
        raise FileNotFoundError(f"{name}: [data] path: data file {str(file)!r} does not exist")
    try:
        with np.load(file, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # not a zip / npz
        raise ConfigError(f"{name}: [data] path: {file.name} is not a readable .npz file ({exc})") from None
    unknown = sorted(set(arrays) - {"X", "y", "X_eval"})
    if unknown:
        raise ConfigError(f"{name}: [data] {file.name} has unknown arrays {unknown} (allowed: X, y, X_eval)")
    for key in ("X", "y"):
        if key not in arrays:
            raise ConfigError(f"{name}: [data] {file.name} has no array {key!r} (needs X (m, d) and y (m,))")
    for key, ndim in (("X", 2), ("y", 1), ("X_eval", 2)):
        if key in arrays:
            a = arrays[key]
            if a.ndim != ndim or not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
                raise ConfigError(f"{name}: [data] {file.name}: {key} must be a real {ndim}-d array, "
                                  f"got dtype {a.dtype} and shape {a.shape}")
    X, y = arrays["X"].astype(float), arrays["y"].astype(float)
    X_eval = arrays["X_eval"].astype(float) if "X_eval" in arrays else None
    if y.shape != (X.shape[0],):
        raise ConfigError(f"{name}: [data] {file.name}: y has shape {y.shape} but X has {X.shape[0]} rows")
    if X_eval is not None and X_eval.shape[1] != X.shape[1]:
        raise ConfigError(f"{name}: [data] {file.name}: X_eval has {X_eval.shape[1]} columns but X has {X.shape[1]}")
    return X, y, X_eval
