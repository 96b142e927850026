"""The README's usage example runs as written."""
import math
import re
from pathlib import Path


def test_readme_example_runs(tmp_path, monkeypatch):
    text = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:  # in order, in one namespace, as a reader would paste them
        if "checkpoint=" in block:  # a 1000-step run, shown not run (tests/test_checkpoint.py runs checkpoints)
            continue
        if "comm=MPI.COMM_WORLD" in block:  # 4 million particles under mpiexec: shown, not run (tests/test_mpi.py)
            continue
        exec(compile(block, "README.md", "exec"), namespace)
    limit, again = namespace["limit"], namespace["again"]
    assert (again.outputs == limit.outputs).all()
    assert namespace["lam"].low <= namespace["lam"].value <= namespace["lam"].high
    run3 = namespace["run3"]
    assert run3.outputs.shape == (6, 6, 3) and abs(run3.loss[0] - math.log(3)) < 1e-12
