"""The tutorials (docs/tutorials/*.ipynb) execute top to bottom without errors, and are
stored without outputs (the documentation site shows them executed: tests/test_site.py).

Each notebook carries its own assertions on the numbers it computes (e.g. μP features
independent at 95% confidence, NTK features singular); a failing assertion is a cell
error here. The notebooks run once per session (conftest.executed_notebooks).
"""
from __future__ import annotations

import pytest

from conftest import NOTEBOOK_NAMES, TUTORIALS, require


def test_all_notebooks_present():
    assert tuple(sorted(p.name for p in TUTORIALS.glob("*.ipynb"))) == NOTEBOOK_NAMES


@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_stored_without_outputs(name):
    nbformat = require("nbformat")
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    assert nb.nbformat == 4
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert any(c.cell_type == "markdown" for c in nb.cells)


@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_notebook_executes(name, executed_notebooks):
    nb, elapsed = executed_notebooks[name]
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # every figure cell rendered an image
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert elapsed < 120, f"{name} took {elapsed:.0f} s; keep notebooks small (< 60 s on 2 cores)"
