"""Fuzzing ``zlimit simulate`` and ``zlimit compare`` with mutated TOML configurations.

Each example starts from a small valid configuration (one per data source: gaussian,
file, digits, cifar10; runs of a fraction of a second), applies one mutation (drop a
key or a table, add an unknown key or table, give a key a value of another type or out
of range, point the data path at a folder, a text file, a .npy file or nothing,
truncate the text) and runs ``cli.main`` in this process. The outcome is classified:

* ``correct``: exit 0, the summary and the files of a run;
* ``clear error``: exit 2 and one ``zlimit: error:`` line that names the file and the
  offending table and key (or says the TOML is invalid, for a truncated text);
* ``runtime``: exit 1 and one line (a run that diverges), for a valid configuration;
* anything else fails the test: a traceback, an exit status outside these, exit 0 or 1
  on a configuration that is invalid by construction, a message that does not name the
  key, more than one line.

Figures are not rendered (``cli._save_figures`` only closes them): that is a second
or so per run, and the files are checked in test_cli.py. ``ZLIMIT_FUZZ_REPORT=PATH``
writes the number of inputs tried and of each outcome to PATH as JSON.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pickle
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zlimit import cli
from zlimit.datasets import CIFAR10_CLASSES

OUTCOMES: Counter = Counter()

MODEL = {"depth": 2, "activation": "tanh", "loss": "mse", "reduction": "mean", "lr": 0.5, "init_std": 1.0,
         "lr_mult": [1.0, 1.0, 1.0], "outputs": 1, "bias_std": 0.5, "bias_lr_mult": 1.0, "momentum": 0.5,
         "weight_decay": 0.0}
RUN = {"steps": 2, "particles": 400, "groups": 2, "seed": 1, "batch_size": 2, "widths": [8, 16], "seeds": 2,
       "parametrization": "mup"}
DATA = {
    "gaussian": {"source": "gaussian", "m": 3, "d": 4, "m_eval": 1, "seed": 2},
    "file": {"source": "file", "path": "data.npz"},
    "digits": {"source": "digits", "classes": [0, 1], "per_class": 2, "seed": 0},
    "cifar10": {"source": "cifar10", "path": "cifar", "classes": ["airplane", "automobile"], "per_class": 2,
                "seed": 0, "split": "test"},
}
REQUIRED = {"model": {"depth"}, "run": {"steps"}, "data": {"source", "m", "d", "path"}}

#: the TOML types each key takes (the documented format); a value of another type is invalid
TYPES = {
    "depth": (int,), "activation": (str,), "loss": (str,), "reduction": (str,), "lr": (int, float),
    "init_std": (int, float, list), "lr_mult": (int, float, list), "outputs": (int,),
    "bias_std": (int, float, list), "bias_lr_mult": (int, float, list), "momentum": (int, float),
    "weight_decay": (int, float), "labels": (str,),
    "source": (str,), "m": (int,), "d": (int,), "m_eval": (int,), "seed": (int,), "per_class": (int,),
    "classes": (list,), "path": (str,), "split": (str,),
    "steps": (int,), "particles": (int,), "groups": (int,), "batch_size": (int,), "widths": (list,),
    "seeds": (int, list), "parametrization": (str,),
}
#: data paths (relative to the configuration) that are not data: a text file, a folder,
#: nothing, a .npy file (one array), an empty string
BAD_PATHS = ["notes.txt", "folder", "missing.npz", "one.npy", ""]


# ---------------------------------------------------------------------- TOML text
def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def toml_value(v) -> str:
    """``v`` as TOML (the writer the fuzzer needs; tomllib only reads)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml_text(doc: dict) -> str:
    lines = [f"{_key(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines += ["", f"[{_key(name)}]"] + [f"{_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- strategies
scalars = st.one_of(
    st.integers(-3, 6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.5, 2.0, -1.0, 1e300, 2 ** 70, -(2 ** 70)]),
    st.booleans(),
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=6),
    st.sampled_from(["", "0.1", "3", "mup", "ntk", "tanh", "sum", "file", "test", "yes"]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.lists(st.lists(scalars, max_size=2), min_size=1, max_size=3),
    st.lists(st.integers(0, 40), min_size=1, max_size=4),
    st.lists(st.sampled_from(CIFAR10_CLASSES), min_size=2, max_size=2),
    st.dictionaries(st.sampled_from(["a", "b", "depth"]), scalars, max_size=2),
)
#: values each key accepts (in range; a few combinations still fail a cross-key rule)
VALID = {
    "depth": st.integers(1, 3), "activation": st.sampled_from(["tanh", "sigmoid", "silu", "gelu", "softplus", "relu",
                                                               "linear"]),
    "loss": st.sampled_from(["mse", "logistic"]), "reduction": st.sampled_from(["mean", "sum"]),
    "lr": st.one_of(st.floats(1e-3, 2.0), st.sampled_from([1e30, 1e300])),  # 1e30: a run that diverges
    "init_std": st.floats(0.0, 2.0), "lr_mult": st.floats(0.0, 2.0), "outputs": st.integers(1, 3),
    "bias_std": st.floats(0.0, 2.0), "bias_lr_mult": st.floats(0.0, 2.0), "momentum": st.floats(0.0, 0.95),
    "weight_decay": st.floats(0.0, 0.5),
    "source": st.sampled_from(sorted(DATA)), "m": st.integers(1, 5), "d": st.integers(1, 6),
    "m_eval": st.integers(0, 3), "seed": st.integers(0, 2 ** 63 - 1), "per_class": st.integers(1, 4),
    "classes": st.lists(st.integers(0, 9), min_size=2, max_size=2, unique=True), "path": st.just("data.npz"),
    "split": st.just("test"), "steps": st.integers(0, 3), "particles": st.integers(4, 800),
    "groups": st.integers(1, 4), "batch_size": st.integers(1, 3),
    "widths": st.lists(st.integers(1, 32), min_size=1, max_size=3, unique=True),
    "seeds": st.one_of(st.integers(1, 3), st.lists(st.integers(0, 2 ** 63 - 1), min_size=1, max_size=3, unique=True)),
    "parametrization": st.sampled_from(["mup", "ntk"]),
}
unknown_keys = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True).filter(lambda k: k not in TYPES)


def invalid_by_construction(key: str, value) -> bool:
    """Whether no configuration accepts ``value`` at ``key``: a type the key does not take,
    a bool, NaN or ±inf, a negative number, an integer beyond 64 bits, an empty string."""
    if isinstance(value, bool) or type(value) not in TYPES[key]:
        return True
    if isinstance(value, int):
        return value < 0 or value >= 2 ** 63
    if isinstance(value, float):
        return not math.isfinite(value) or value < 0
    return value == ""


def _key_mutation(draw, doc: dict, table: str, kind: str) -> tuple:
    """Add an unknown key to ``doc[table]``, or drop or replace one of its keys (by a value
    it accepts, for kind "valid"); the expectation."""
    if kind == "unknown":
        key = draw(unknown_keys)
        doc[table][key] = draw(values)
        return "unknown", table, key
    key = draw(st.sampled_from(sorted(doc[table])))
    if kind == "drop":
        del doc[table][key]
        return ("missing" if key in REQUIRED[table] else "any"), table, key
    doc[table][key] = draw(VALID[key] if kind == "valid" else values)
    return ("invalid" if kind == "replace" and invalid_by_construction(key, doc[table][key]) else "any"), table, key


def _table_mutation(draw, doc: dict, table: str) -> tuple:
    """Drop a table, make it a plain value, or add an unknown one; the expectation."""
    how = draw(st.sampled_from(["drop", "scalar", "extra"]))
    if how == "drop":
        del doc[table]
    elif how == "scalar":
        doc[table] = draw(scalars)
    else:
        table = draw(unknown_keys)
        doc[table] = {"x": 1}
    return "table", table, None


@st.composite
def cases(draw):
    """(command, TOML text, expectation): expectation is (kind, table, key)."""
    source = draw(st.sampled_from(sorted(DATA)))
    doc = {"model": dict(MODEL), "data": dict(DATA[source]), "run": dict(RUN)}
    kind = draw(st.sampled_from(["valid", "valid", "drop", "unknown", "replace", "replace", "path", "table",
                                 "truncate"]))
    table = draw(st.sampled_from(sorted(doc)))
    expect = ("truncated", None, None)
    if kind == "path":
        doc["data"] = {**DATA[draw(st.sampled_from(["file", "cifar10"]))], "path": draw(st.sampled_from(BAD_PATHS))}
        expect = ("invalid", "data", "path")
    elif kind == "table":
        expect = _table_mutation(draw, doc, table)
    elif kind != "truncate":
        expect = _key_mutation(draw, doc, table, kind)
    text = toml_text(doc)
    if kind == "truncate":
        text = text[:draw(st.integers(0, len(text) - 1))]
    return draw(st.sampled_from(["simulate", "simulate", "compare"])), text, expect


# ---------------------------------------------------------------------- workspace
def _fake_cifar(folder: Path) -> None:
    """The meta file and test batch of the CIFAR-10 python version, 12 random images."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, fh, protocol=2)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": rng.integers(1, 256, (12, 3072), dtype=np.uint8), b"labels": [0, 1] * 6}, fh,
                    protocol=2)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder with the data files of the base configurations and the bad paths; figures
    are closed without being rendered."""
    root = tmp_path_factory.mktemp("fuzz")
    X = np.random.default_rng(1).standard_normal((4, 4))
    np.savez(root / "data.npz", X=X[:3], y=np.array([1.0, -1.0, 1.0]), X_eval=X[3:])
    _fake_cifar(root / "cifar")
    (root / "notes.txt").write_text("X = [[1, 2]]\ny = [1]\n")
    (root / "folder").mkdir()
    np.save(root / "one.npy", X)

    def close_figures(figures, out):
        import matplotlib.pyplot as plt

        for fig in figures.values():
            plt.close(fig)
        return [str(out / name) for name in figures]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "_save_figures", close_figures)
        yield root


def teardown_module():
    report = os.environ.get("ZLIMIT_FUZZ_REPORT")
    if report:
        Path(report).write_text(json.dumps({"inputs": sum(OUTCOMES.values()), **OUTCOMES}, indent=1) + "\n")


# ---------------------------------------------------------------------- the oracle
def run_cli(argv) -> tuple[int | str, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except Exception as exc:  # a bug: the test reports it below
            code = f"exception {type(exc).__name__}: {exc}"
    return code, out.getvalue(), err.getvalue()


#: keys that another key's rule depends on: [run] batch_size <= [data] m; the data's
#: targets y must fit the model's loss and outputs (maths §6)
RELATED = {"m": ("run", "batch_size"), "outputs": ("data", "y"), "loss": ("data", "y")}


def names_key(line: str, table: str, key: str) -> bool:
    """Whether ``line`` points at ``key``: ``[table] key ...``, or an unknown or missing ``key``."""
    return f"[{table}] {key}" in line or f"[{table}] unknown key {key!r}" in line or \
        f"[{table}] missing required key {key!r}" in line


def mentions_key(line: str, table: str, key: str) -> bool:
    """Whether ``line`` is about [table] and names ``key`` (or the key whose rule involves it)."""
    if key in RELATED and names_key(line, *RELATED[key]):
        return True
    if key == "source":  # the source decides which [data] keys are allowed or required
        return "c.toml: [data] " in line
    return f"[{table}]" in line and re.search(rf"\b{re.escape(key)}\b", line) is not None


def names_some_key(line: str) -> bool:
    return re.search(r"c\.toml: \[(model|data|run)\] (\w+|unknown key|missing required key)", line) is not None


def classify(command: str, code, stdout: str, stderr: str, expect, out: Path) -> str:
    """The outcome category; an AssertionError says why an outcome is a failure."""
    kind, table, key = expect
    lines = stderr.splitlines()
    errors = [line for line in lines if not line.startswith("zlimit: warning: ")]
    assert "Traceback" not in stderr and isinstance(code, int), (code, stderr)
    if code == 0:
        assert kind in ("any", "truncated"), f"exit 0 on an invalid configuration\n{stdout}{stderr}"
        assert not errors, stderr
        assert stdout.startswith(f"zlimit {command}: c.toml: ") and "Wrote:" in stdout, stdout
        assert (out / "limit.npz").is_file()
        return "correct"
    assert len(errors) == 1 and errors == lines[-1:], stderr
    line = errors[0]
    if code == 1:
        assert kind in ("any", "truncated"), f"exit 1 on an invalid configuration: {line}"
        assert line.startswith("zlimit: error: "), line
        return "runtime"
    assert code == 2, (code, stderr)
    assert line.startswith("zlimit: error: c.toml: "), line
    if kind in ("missing", "unknown", "invalid"):
        assert names_key(line, table, key), f"does not name [{table}] {key}: {line}"
    elif kind == "table":
        assert f"[{table}]" in line, line
    elif kind == "truncated":
        assert "invalid TOML" in line or names_some_key(line) or "table [" in line, line
    elif key is not None:
        assert mentions_key(line, table, key), f"does not name [{table}] {key}: {line}"
    return "clear error"


# ---------------------------------------------------------------------- the test
@settings(max_examples=300, deadline=None, derandomize=True)
@given(case=cases())
def test_mutated_configurations(workspace, case):
    command, text, expect = case
    cfg = workspace / "c.toml"
    cfg.write_text(text)
    out = workspace / "out"
    shutil.rmtree(out, ignore_errors=True)
    code, stdout, stderr = run_cli([command, str(cfg), "--quiet", "--out", str(out)])
    try:
        outcome = classify(command, code, stdout, stderr, expect, out)
    except AssertionError:
        OUTCOMES["failure"] += 1
        raise
    OUTCOMES[outcome] += 1
