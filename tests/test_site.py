"""The documentation site: it builds with ``mkdocs build --strict``, its tutorials are
rendered executed, every public function has a runnable Examples section, and the
pages' code runs.

The build uses the tutorials executed once in this session (conftest.executed_notebooks)
with mkdocs-jupyter's own execution off, so the notebooks are not run twice. Strict mode
turns every warning into a failure: a broken cross-reference, a docstring mkdocstrings
cannot parse, a page missing from the navigation.
"""
from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import zlimit
from conftest import NOTEBOOK_NAMES, require

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_MODULES = ("zlimit", "zlimit.diagnostics", "zlimit.datasets", "zlimit.io", "zlimit.compare", "zlimit.plot")


@pytest.fixture(scope="module")
def site(executed_notebooks, tmp_path_factory):
    """The site built from a copy of docs/ holding the executed tutorials."""
    nbformat = require("nbformat")
    require("mkdocs")
    work = tmp_path_factory.mktemp("site-src")
    shutil.copy(ROOT / "mkdocs.yml", work / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", work / "docs")
    shutil.copytree(ROOT / "examples", work / "examples")  # pages include files from it
    (work / "src").symlink_to(ROOT / "src")                  # mkdocstrings reads the sources
    for name in NOTEBOOK_NAMES:
        nbformat.write(executed_notebooks[name][0], work / "docs" / "tutorials" / name)
    out = work / "site"
    env = dict(os.environ, ZLIMIT_DOCS_EXECUTE="false", NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(work / "mkdocs.yml"),
                           "-d", str(out)], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_site_builds_with_every_page(site):
    for page in ("index.html", "getting-started/index.html", "maths/index.html", "z-recursions/index.html",
                 "cli/index.html", "performance/index.html", "scaling/index.html", "citing/index.html",
                 "api/zlimit/index.html", "api/diagnostics/index.html", "api/compare/index.html",
                 "api/plot/index.html", "api/datasets/index.html", "api/io/index.html"):
        assert (site / page).is_file(), page


def test_tutorials_are_rendered_executed(site):
    for name in NOTEBOOK_NAMES:
        html = (site / "tutorials" / name.removesuffix(".ipynb") / "index.html").read_text(encoding="utf-8")
        assert "data:image/png;base64," in html, f"{name}: no figure in the rendered page"
        assert "Traceback" not in html


def test_api_pages_document_every_public_function_and_class(site):
    for module in PUBLIC_MODULES:
        page = "zlimit" if module == "zlimit" else module.split(".")[1]
        html = (site / "api" / page / "index.html").read_text(encoding="utf-8")
        for name in _public(module):
            if not callable(getattr(importlib.import_module(module), name)):  # modules and constants (documented in the source)
                continue
            assert f'id="{module}.{name}"' in html, f"api/{page}.md does not document {module}.{name}"


def _public(module: str) -> list[str]:
    return [n for n in importlib.import_module(module).__all__ if n != "__version__"]


def _documented():
    """(qualified name, object) of every public function, class and method."""
    for module in PUBLIC_MODULES:
        for name in _public(module):
            obj = getattr(importlib.import_module(module), name)
            if inspect.ismodule(obj) or not callable(obj) or (inspect.isclass(obj) and issubclass(obj, Warning)):
                continue
            if inspect.isclass(obj) and issubclass(obj, Exception):
                continue
            yield f"{module}.{name}", obj
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if not attr.startswith("_") and inspect.isfunction(member):
                        yield f"{module}.{name}.{attr}", member


def test_every_public_function_has_examples():
    missing = [name for name, obj in _documented() if not re.search(r"^\s*Examples\n\s*-{8}", inspect.getdoc(obj) or "",
                                                                          flags=re.M)]
    assert not missing, f"no Examples section (a doctest): {missing}"


def test_getting_started_runs(tmp_path, monkeypatch):
    """The python blocks of docs/getting-started.md, in order, in one namespace."""
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "getting-started.md").read_text(), flags=re.S)
    assert len(blocks) >= 5
    ns: dict = {}
    for block in blocks:
        exec(compile(block, "getting-started.md", "exec"), ns)
    assert (ns["again"].outputs == ns["limit"].outputs).all()
    assert (ns["same"].kernels["h2"] == ns["limit"].kernels["h2"]).all()
    assert {"width", "seed", "t", "layer", "kind", "l1", "l2", "mean", "std"} <= set(ns["coords"].columns)
    assert ns["lam"].low <= ns["lam"].value <= ns["lam"].high
    for png in ("trajectories.png", "deviation.png", "coord_check.png"):
        assert (tmp_path / png).stat().st_size > 10_000


def test_cli_page_lists_every_command_and_option():
    from zlimit.cli import build_parser

    text = (ROOT / "docs" / "cli.md").read_text()
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for command, parser in sub.choices.items():
        assert f"zlimit {command}" in text, command
        for action in parser._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in text, f"docs/cli.md does not mention {command} {flag}"


def test_citation_file():
    yaml = require("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["title"].startswith("zlimit")
    assert cff["version"] == zlimit.__version__
    assert "2503.09565" in cff["preferred-citation"]["url"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for link in ("arxiv.org/abs/2503.09565", "CITATION.cff", "mkdocs"):
        assert link in readme
