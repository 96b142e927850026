"""``mpiexec -n 2 zlimit simulate``: the command line over MPI ranks, end to end.

References: the run a 2-rank command writes is compared with the same configuration
simulated by the library in this process without MPI (the particles are the same;
the numbers differ only by the order of floating-point sums, which
``tests/test_mpi.py`` measures and bounds — here the comparison is at 1e-12, a
thousand times the 1e-15 measured at these sizes). Errors must be one line, printed
once (by rank 0), with the exit status of a single process, and no rank may be left
running.

mpi4py and mpiexec come with the test extra (``pip install ".[test]"`` installs
mpi4py and the ``mpich`` wheel); without them these tests fail, they do not skip.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import zlimit
from zlimit import cli
from zlimit._config import load_config

CONFIG = """
[model]
depth = 3
activation = "tanh"
lr = 0.5

[data]
source = "gaussian"
m = 3
d = 4
m_eval = 1
seed = 2

[run]
steps = {steps}
particles = {particles}
groups = 2
seed = 1
"""
#: how long any launch may take before the test calls it a hang
TIMEOUT = 120


def mpiexec() -> str:
    """The mpiexec of this environment (the mpich wheel's, next to the interpreter)."""
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    assert found, 'mpiexec not found: install the test extra, pip install ".[test]" (it brings mpi4py and mpich)'
    return found


def zlimit_command() -> str:
    here = Path(sys.executable).parent / "zlimit"
    return str(here) if here.exists() else shutil.which("zlimit")


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def launch(tmp_path, *args, ranks: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run([mpiexec(), "-n", str(ranks), zlimit_command(), *map(str, args)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=TIMEOUT, env=env())


def config(tmp_path, steps: int = 6, particles: int = 4000, **replace) -> Path:
    text = textwrap.dedent(CONFIG.format(steps=steps, particles=particles))
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def one_line(proc, code: int) -> str:
    """The single stderr line of a failed launch (printed once, not once per rank)."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_two_ranks_write_the_single_process_run_once(tmp_path):
    cfg = config(tmp_path)
    proc = launch(tmp_path, "simulate", cfg, "--out", "out", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("zlimit simulate: c.toml") == 1 and "over 2 MPI ranks" in proc.stdout
    assert proc.stderr == ""  # --quiet: no bar, and no rank repeats a warning
    run = zlimit.load(tmp_path / "out" / "limit.npz")
    assert run.meta["ranks"] == 2 and run.meta["particles"] == 4000 and run.groups == 2
    c = load_config(cfg)
    X, y, X_eval = c.load_data()
    ref = zlimit.simulate(c.model, X, y, X_eval=X_eval, steps=6, particles=4000, groups=2, seed=1, progress=False)
    for got, want in ((run.outputs_groups, ref.outputs_groups), (run.kernels["h3"], ref.kernels["h3"])):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["limit.npz", "outputs.png"]


def test_a_config_error_is_one_line_from_rank_0(tmp_path):
    cfg = config(tmp_path, **{"steps = 6": "steps = -1"})
    line = one_line(launch(tmp_path, "simulate", cfg, "--out", "out"), 2)
    assert line.startswith("zlimit: error: c.toml: [run] steps"), line


def test_an_error_on_rank_0_alone_ends_every_rank(tmp_path):
    """Only rank 0 makes the output folder: a file in its place fails there alone, and
    rank 1 must not wait in the run's first collective."""
    (tmp_path / "out").write_text("a file, not a folder")
    start = time.monotonic()
    line = one_line(launch(tmp_path, "simulate", config(tmp_path), "--out", "out"), 2)
    assert time.monotonic() - start < 60
    assert line.startswith("zlimit: error: ") and "out" in line, line


def test_a_divergence_is_raised_on_every_rank_and_reported_once(tmp_path):
    cfg = config(tmp_path, steps=10, **{'activation = "tanh"\nlr = 0.5': 'activation = "linear"\nlr = 100.0'})
    line = one_line(launch(tmp_path, "simulate", cfg, "--out", "out", "--quiet"), 1)
    assert "non-finite" in line and "lr" in line, line
    assert not (tmp_path / "out" / "limit.npz").exists()


def test_only_simulate_runs_under_mpiexec(tmp_path):
    line = one_line(launch(tmp_path, "demo", "--quick", "--out", "demo"), 2)
    assert "only 'zlimit simulate' runs over MPI ranks" in line, line
    assert not (tmp_path / "demo").exists()


def test_ctrl_c_ends_every_rank(tmp_path):
    """SIGINT to mpiexec reaches every rank (Hydra forwards it); the ranks end with
    status 130 within seconds, writing nothing."""
    cfg = config(tmp_path, steps=100_000, particles=20_000)
    proc = subprocess.Popen([mpiexec(), "-n", "2", zlimit_command(), "simulate", str(cfg), "--out", "out"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        deadline = time.monotonic() + 60  # wait for the run to start: its progress bar on stderr
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if "zlimit.simulate" in _peek(proc):
                break
        time.sleep(1.0)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (proc.returncode, proc.stderr.read())
    assert elapsed < 30
    assert not (tmp_path / "out" / "limit.npz").exists()


_seen: dict[int, str] = {}


def _peek(proc) -> str:
    """What the process wrote to stderr so far (non-blocking)."""
    os.set_blocking(proc.stderr.fileno(), False)
    try:
        chunk = proc.stderr.read() or ""
    except (BlockingIOError, TypeError):
        chunk = ""
    _seen[proc.pid] = _seen.get(proc.pid, "") + chunk
    return _seen[proc.pid]


class _FakeComm:
    """What :func:`zlimit.cli._on_every_rank` asks of a communicator: its rank and allgather."""

    def __init__(self, rank: int, others: list):
        self.rank, self.others = rank, others

    def Get_rank(self):
        return self.rank

    def allgather(self, mine):
        everyone = list(self.others)
        everyone.insert(self.rank, mine)
        return everyone


def test_an_error_on_another_rank_is_raised_here_with_its_status():
    ok = lambda: "config"
    assert cli._on_every_rank(_FakeComm(0, [None]), ok) == "config"
    with pytest.raises(cli._RankError, match=r"^on MPI rank 1: no such file: 'data.npz'$") as info:
        cli._on_every_rank(_FakeComm(0, [("no such file: 'data.npz'", 2)]), ok)
    assert cli._exit_code(info.value) == 2

    def fails():
        raise ValueError("bad [run] steps")

    with pytest.raises(ValueError, match="bad"):  # a rank raises its own error, not another's
        cli._on_every_rank(_FakeComm(1, [("other", 1)]), fails)
