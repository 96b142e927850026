"""The code names cited by the docs exist.

The pages of docs/ — among them z-recursions.md (the maths contract, with its appendix
"Where each equation lives"), performance.md and scaling.md — cite functions, classes and methods in backticks.
Every backticked dotted name rooted at the package (``zlimit.…``) or at one of its
modules written without the package (``_engine.…``, ``_gaussian.…``, …) must resolve
by importing the module and looking up the rest, so that renaming code without
updating the docs fails here. A call written after the name (``simulate(qmc=True)``)
is ignored; names rooted elsewhere (``scipy.special.ndtri``) are not checked.
"""
from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import zlimit

DOCS = Path(__file__).resolve().parents[1] / "docs"
#: every page of the documentation site (docs/*.md; the API pages cite through mkdocstrings)
FILES = tuple(sorted(p.name for p in DOCS.glob("*.md")))

#: the package's modules, so that a module-relative name such as `_engine._Group` is checked
MODULES = frozenset(info.name for info in pkgutil.iter_modules(zlimit.__path__))
#: a backticked span that starts with a dotted Python name, optionally followed by a call
_NAME = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:\(.*\))?$")


def references(text: str) -> list[str]:
    """The dotted names to check in ``text``, fully qualified (``zlimit.…``), in order.

    A span counts when it is a dotted name (possibly followed by a call) whose root is
    ``zlimit`` or one of its modules, or a name with a leading underscore (which can
    only be the package's: a private name cited without its module is reported as
    ``zlimit.<name>`` and fails to resolve).
    """
    out = []
    for span in re.findall(r"`([^`\n]+)`", text):
        match = _NAME.match(span.strip())
        if not match:
            continue
        name = match.group(1)
        root = name.split(".")[0]
        if root == "zlimit":
            out.append(name)
        elif root in MODULES or root.startswith("_"):
            out.append(f"zlimit.{name}")
    return out


def resolve(name: str):
    """Import the longest importable module prefix of ``name`` and getattr the rest."""
    parts = name.split(".")
    obj = importlib.import_module(parts[0])
    path = parts[0]
    for part in parts[1:]:
        path = f"{path}.{part}"
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        try:
            obj = importlib.import_module(path)
        except ModuleNotFoundError:
            raise AttributeError(f"{name}: {path} does not exist") from None
    return obj


def _cases():
    for file in FILES:
        for name in dict.fromkeys(references((DOCS / file).read_text(encoding="utf-8"))):
            yield pytest.param(file, name, id=f"{file}:{name}")


@pytest.mark.parametrize("file, name", list(_cases()))
def test_reference_resolves(file, name):
    try:
        resolve(name)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"docs/{file} cites `{name}`, which does not resolve ({exc}); update the doc or the code")


def test_references_are_found():
    """The extraction finds the appendix table, so the check above is not vacuous."""
    text = (DOCS / "z-recursions.md").read_text(encoding="utf-8")
    assert "## Appendix: where each equation lives" in text
    names = set(references(text))
    for expected in ("zlimit._driver.run_sgd", "zlimit._engine._HiddenLayer.forward", "zlimit._gaussian.project",
                     "zlimit._exact.ExactState", "zlimit._ntk.NtkState.update", "zlimit._finite.layer_scales",
                     "zlimit._model.error_signal"):
        assert expected in names


def test_a_wrong_name_fails():
    """The resolver rejects names that moved: the old ones, a bare private name, a typo."""
    text = ("`_engine._Recorder` `zlimit._ntk.kernel_trajectory` `_train` `_cgs2` "
            "`zlimit._gaussian.project` `simulate(qmc=True)` `scipy.special.ndtri` `_engine._padded_product(A, C, rows)`")
    names = references(text)
    assert names == ["zlimit._engine._Recorder", "zlimit._ntk.kernel_trajectory", "zlimit._train", "zlimit._cgs2",
                     "zlimit._gaussian.project", "zlimit._engine._padded_product"]
    for name in names[:4]:
        with pytest.raises((ImportError, AttributeError)):
            resolve(name)
    for name in names[4:]:
        resolve(name)
