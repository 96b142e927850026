"""Shared hypothesis settings: no per-example deadline (the first example of a
property compiles numba kernels), derandomised so runs are reproducible."""
from hypothesis import HealthCheck, settings

settings.register_profile(
    "zlimit",
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("zlimit")


# ------------------------------------------------------------------ notebooks, executed once
import json as _json
import os as _os
import sys as _sys
import time as _time
from pathlib import Path as _Path

import pytest as _pytest

TUTORIALS = _Path(__file__).resolve().parent.parent / "docs" / "tutorials"
NOTEBOOK_NAMES = ("01_infinite_vs_finite.ipynb", "02_linear_independence.ipynb", "03_paper_figure.ipynb")


def require(module: str):
    """Import ``module`` or fail (not skip): the test extra installs it."""
    try:
        return __import__(module)
    except ImportError as exc:
        _pytest.fail(f"this test needs {module!r} ({exc}); install the test extra: pip install '.[test]'",
                     pytrace=False)


@_pytest.fixture(scope="session")
def executed_notebooks(tmp_path_factory):
    """name -> (executed notebook, seconds), each tutorial run once per session with this
    interpreter (a kernelspec in a temporary folder, whatever kernels the machine has):
    tests/test_notebooks.py checks them and tests/test_site.py renders them."""
    nbformat, nbclient = require("nbformat"), require("nbclient")
    require("ipykernel"), require("jupyter_client")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "zlimit-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(_json.dumps({
        "argv": [_sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "zlimit test kernel", "language": "python"}))
    ksm = KernelSpecManager(kernel_dirs=[str(root / "kernels")], ensure_native_kernel=False)
    env = dict(_os.environ, MPLBACKEND="module://matplotlib_inline.backend_inline")
    out = {}
    for name in NOTEBOOK_NAMES:
        nb = nbformat.read(TUTORIALS / name, as_version=4)
        work = tmp_path_factory.mktemp(name.split(".")[0])
        client = nbclient.NotebookClient(nb, km=KernelManager(kernel_name="zlimit-test", kernel_spec_manager=ksm),
                                         timeout=240, resources={"metadata": {"path": str(work)}})
        start = _time.perf_counter()
        client.execute(env=env)  # passed on to KernelManager.start_kernel
        out[name] = (nb, _time.perf_counter() - start)
    return out
