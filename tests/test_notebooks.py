"""The notebooks execute top to bottom without errors, and are stored without outputs.

Each notebook carries its own assertions on the numbers it computes (e.g. μP features
independent at 95% confidence, NTK features singular); a failing assertion is a cell
error here. Kernels run with this interpreter (``sys.executable``) through a
kernelspec written to a temporary folder, whatever kernels the machine has installed.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
NAMES = ["01_infinite_vs_finite.ipynb", "02_linear_independence.ipynb", "03_paper_figure.ipynb"]


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as exc:  # fail, do not skip: these belong to the test extra
        pytest.fail(f"test_notebooks needs {module!r} ({exc}); install the test extra: "
                    f"pip install nbclient nbformat ipykernel", pytrace=False)


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A kernelspec named 'zlimit-test' that starts ipykernel with sys.executable."""
    _require("ipykernel")
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "zlimit-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "zlimit test kernel", "language": "python"}))
    return str(root / "kernels"), "zlimit-test"


def test_all_notebooks_present():
    assert [p.name for p in NOTEBOOKS] == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_stored_without_outputs(name):
    nbformat = _require("nbformat")
    nb = nbformat.read(NOTEBOOKS[0].parent / name, as_version=4)
    assert nb.nbformat == 4
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert any(c.cell_type == "markdown" for c in nb.cells)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name, kernel_name, tmp_path):
    nbformat = _require("nbformat")
    nbclient = _require("nbclient")
    _require("jupyter_client")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    kernel_dir, kname = kernel_name
    nb = nbformat.read(NOTEBOOKS[0].parent / name, as_version=4)
    ksm = KernelSpecManager(kernel_dirs=[kernel_dir], ensure_native_kernel=False)
    km = KernelManager(kernel_name=kname, kernel_spec_manager=ksm)
    env = dict(os.environ, MPLBACKEND="module://matplotlib_inline.backend_inline")
    client = nbclient.NotebookClient(nb, km=km, timeout=240, resources={"metadata": {"path": str(tmp_path)}})
    start = time.perf_counter()
    client.execute(env=env)  # passed on to KernelManager.start_kernel
    elapsed = time.perf_counter() - start
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # every figure cell rendered an image
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert elapsed < 120, f"{name} took {elapsed:.0f} s; keep notebooks small (< 60 s on 2 cores)"
