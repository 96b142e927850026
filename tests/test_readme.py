"""The README's usage example runs as written."""
import re
from pathlib import Path


def test_readme_example_runs(tmp_path, monkeypatch):
    text = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    limit, again = namespace["limit"], namespace["again"]
    assert (again.outputs == limit.outputs).all()
    assert namespace["lam"].low <= namespace["lam"].value <= namespace["lam"].high
