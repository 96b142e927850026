"""MPI scale-out (``simulate(..., comm=...)``, :mod:`zlimit._mpi`) against a single process.

A group's particles are split over the R ranks by particle range and every particle
mean is a local sum plus one reduction, with normals counter-based in the global
particle index: R ranks simulate exactly the particles of one process, and the only
difference across R is the order of the floating-point sums.

The jobs are batched into three ``mpiexec -n 2`` launches and one plain process:

* ``runs``: six groups on six threads, a 200-step depth-3 SiLU run, a short run with
  an odd group size on two threads, the extensions (3-class cross-entropy, biases,
  momentum, weight decay, evaluation inputs) and randomised QMC; rank 0 saves each Run.
* ``errors``: the errors decided collectively (divergence, arguments that differ
  between ranks, one rank short of memory, too few particles), each caught and written
  down by every rank, then the short run again (bit-identical to the first launch's).
* ``abort``: an ``on_step`` that raises on rank 1 only ends the job with MPI_Abort.
* ``single``: a plain ``python`` process passing ``MPI.COMM_WORLD`` (size 1).

The references (``comm=None``) are computed in the test process. mpi4py and mpiexec
come with the test extra (``pip install -e ".[test]"`` installs mpi4py and the
``mpich`` wheel); without them these tests fail rather than skip.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

import zlimit
from zlimit import _kernels, _memory, _mpi

INSTALL = 'install the test extra (pip install -e ".[test]"), which includes mpi4py and mpich'

#: The runs, shared by the MPI script and the references: name -> (model, X, y, simulate keywords).
CASES = textwrap.dedent('''
    import numpy as np
    import zlimit

    def case(name):
        X, y = zlimit.datasets.gaussian(6, 8, seed=1)
        X_eval = zlimit.datasets.gaussian(3, 8, seed=2)[0]
        silu = zlimit.MLP(depth=3, activation="silu", lr=0.1)
        common = dict(seed=3, progress=False, threads=1)
        if name == "long":  # one group of 2000 particles, 1000 per rank
            return silu, X, y, dict(common, steps=200, particles=2000, groups=1)
        if name == "short":  # 2001 per group (odd): ranks hold 1000 and 1001; two groups at once
            return silu, X, y, dict(common, steps=30, particles=6003, groups=3, threads=2, record_steps=(0, 10))
        if name == "threads":  # six groups at once on each rank, 150 particles per rank: collectives interleave
            return silu, X, y, dict(common, steps=40, particles=1800, groups=6, threads=6)
        if name == "ext":
            model = zlimit.MLP(depth=3, activation="silu", lr=0.1, outputs=3, loss="xent", bias_std=0.5,
                               momentum=0.5, weight_decay=0.1)
            labels = np.array([0, 1, 2, 2, 1, 0])
            return model, X, labels, dict(common, steps=40, particles=4002, groups=2, X_eval=X_eval)
        if name == "qmc":  # 1502 per group: rank 1 fast-forwards the Sobol sequence to point 750
            return silu, X, y, dict(common, steps=30, particles=3004, groups=2, qmc=True, X_eval=X_eval)
        if name == "diverge":
            return zlimit.MLP(depth=3, activation="silu", lr=50.0), X, y, dict(common, steps=20, particles=2000,
                                                                                groups=2)
        raise KeyError(name)
''')

SCRIPT = CASES + textwrap.dedent('''
    import faulthandler, json, os, sys, warnings
    from pathlib import Path
    from mpi4py import MPI

    # a job that hangs prints every thread's stack and ends before the test's timeout
    faulthandler.dump_traceback_later(float(os.environ["ZLIMIT_TEST_HANG_AFTER"]), exit=True)

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    mode, out = sys.argv[1], Path(sys.argv[2])
    warnings.simplefilter("ignore", zlimit.MonteCarloWarning)

    def simulate(name, **changes):
        model, X, y, kw = case(name)
        kw.update(changes)
        return zlimit.simulate(model, X, y, comm=comm, **kw)

    def save(name, run):
        if rank == 0:
            run.save(out / f"{name}.npz")
        else:
            (out / f"{name}.rank{rank}.json").write_text(json.dumps(repr(run)))

    def caught(fn):
        try:
            fn()
        except Exception as exc:
            return [type(exc).__name__, str(exc)]
        return ["no error", ""]

    if mode == "runs":
        for name in ("threads", "long", "short", "ext", "qmc"):
            save(name, simulate(name))
    elif mode == "single":
        save("short", simulate("short"))
    elif mode == "errors":
        seen = {"diverge": caught(lambda: simulate("diverge")),
                "seed": caught(lambda: simulate("short", steps=2, record_steps=(0,), seed=3 + rank)),
                "few": caught(lambda: simulate("short", steps=2, record_steps=(0,), particles=6, groups=2))}
        available = zlimit._engine.available_memory
        if rank == 1:
            zlimit._engine.available_memory = lambda: 1000.0
        seen["memory"] = caught(lambda: simulate("short", steps=2, record_steps=(0,)))
        zlimit._engine.available_memory = available
        (out / f"errors.rank{rank}.json").write_text(json.dumps(seen))
        save("short_again", simulate("short"))  # the ranks still work after the collective errors
    elif mode == "abort":
        def on_step(group, t):
            if rank == 1 and t == 2:
                raise RuntimeError("boom on rank 1")
        save("aborted", simulate("short", on_step=on_step))
    else:
        raise SystemExit(f"unknown mode {mode}")
''')

_ns: dict = {}
exec(CASES, _ns)
case = _ns["case"]

#: The 2-rank runs against a single process: max |a − b| / max |b| over each array
#: (outputs, loss, χ, kernels, cross kernels, moments, novelty, the drift ratios of the meta).
#: Both draw the same particles and differ only in the order of the sums (local BLAS
#: sums over each rank's share, then the reduction of the two partial sums, instead of
#: one sum over the group): ~3e-16 at step 0, which training feeds back into every
#: later step, so it grows over the first ~100 steps and levels off as training
#: converges. Measured on the depth-3 SiLU problem (gaussian(6, 8), 16 000 particles,
#: 4 groups, seed 3), worst array: 1.3e-15 at 20 steps, 1.6e-14 at 100, 2.8e-14 at 300.
#: Here: "long" (200 steps) 2.7e-14, "short" 7.9e-15, "ext" 4.4e-14, "qmc" 1.2e-13
#: (the residual norms of the QMC bases, which cancel more). 1e-11 leaves ~100x
#: headroom over the worst (other BLAS kernels and machines) and is 8 orders of
#: magnitude below what a wrong particle, a wrong normalisation or a lost partial sum
#: gives (the Monte Carlo scale, ~1e-2: test_cross_rank_tolerance_catches_a_wrong_particle).
#: Basis sizes and dropped counts (decisions taken on reduced numbers) must match exactly.
RTOL = 1e-11


# ----------------------------------------------------------------------------- launching
def _mpiexec() -> str:
    try:
        importlib.import_module("mpi4py.MPI")
    except ImportError:
        pytest.fail(f"mpi4py is missing: {INSTALL}")
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.fail(f"mpiexec is not next to {sys.executable} nor on PATH: {INSTALL}")
    return found


def _launch(tmp: Path, mode: str, ranks: int | None = 2, timeout: float = 300.0):
    """Run SCRIPT in ``mode`` (under mpiexec -n ranks, or a plain python for None) writing
    into ``tmp``; (CompletedProcess, wall seconds)."""
    tmp.mkdir(parents=True, exist_ok=True)
    script = tmp / "mpi_script.py"
    script.write_text(SCRIPT)
    mpiexec = _mpiexec()  # and mpi4py, which a plain process needs too
    prefix = [] if ranks is None else [mpiexec, "-n", str(ranks)]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               ZLIMIT_TEST_HANG_AFTER=str(timeout - 20))
    start = time.perf_counter()
    try:
        done = subprocess.run([*prefix, sys.executable, str(script), mode, str(tmp)], env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the {mode} job hung for {timeout} s:\n{exc.stdout}\n{exc.stderr}")
    return done, time.perf_counter() - start


def _checked(tmp: Path, mode: str, ranks: int | None = 2) -> Path:
    done, _ = _launch(tmp, mode, ranks, timeout=180)
    assert done.returncode == 0, f"{mode} job failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return tmp


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return _checked(tmp_path_factory.mktemp("runs"), "runs")


@pytest.fixture(scope="module")
def errors(tmp_path_factory) -> Path:
    return _checked(tmp_path_factory.mktemp("errors"), "errors")


_references: dict = {}


def reference(name: str) -> zlimit.Run:
    """The case run in this process without a communicator (cached)."""
    if name not in _references:
        model, X, y, kw = case(name)
        with _quiet():
            _references[name] = zlimit.simulate(model, X, y, **kw)
    return _references[name]


@contextlib.contextmanager
def _quiet():
    """Without the MonteCarloWarning of small groups (the MPI script ignores it too)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zlimit.MonteCarloWarning)
        yield


# ----------------------------------------------------------------------------- comparing
def _arrays(run: zlimit.Run) -> dict[str, np.ndarray]:
    """Every array of a Run, by a flat name."""
    out = {"outputs": run.outputs_groups, "loss": run.loss_groups, "chi": run.error_signals_groups}
    for field in ("kernels", "cross", "moments", "novelty", "bases"):
        out.update({f"{field}/{k}": v for k, v in getattr(run, field).items()})
    return out


def _identical(a: zlimit.Run, b: zlimit.Run) -> None:
    """Bit for bit: every array (NaNs where the other has them) and the meta but ``ranks``."""
    A, B = _arrays(a), _arrays(b)
    assert A.keys() == B.keys()
    for k in A:
        assert A[k].shape == B[k].shape and A[k].dtype == B[k].dtype, k
        assert A[k].tobytes() == B[k].tobytes(), f"{k} differs: max |diff| {np.nanmax(np.abs(A[k] - B[k]))}"
    strip = lambda meta: {k: v for k, v in meta.items() if k != "ranks"}
    assert strip(a.meta) == strip(b.meta)
    assert a.model == b.model and a.record_steps == b.record_steps


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    """max |a − b| / max |b| over the entries, with the NaNs of a and b in the same places."""
    assert a.shape == b.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    if np.isnan(b).all():  # e.g. the drift ratios of a single group
        return 0.0
    scale = np.nanmax(np.abs(b))
    return float(np.nanmax(np.abs(a - b)) / scale) if scale > 0 else float(np.nanmax(np.abs(a)))


#: basis arrays compared exactly (decisions), and those at the round-off level (absolute)
_EXACT = ("size_", "dropped_fwd", "dropped_bwd")
_ROUNDOFF = ("orthogonality_", "dropped_mass_")


def _agree(run: zlimit.Run, ref: zlimit.Run, rtol: float = RTOL) -> dict[str, float]:
    """Assert ``run`` (R ranks) matches ``ref`` (one process): the basis sizes and dropped
    counts exactly, the round-off diagnostics (orthogonality, dropped mass, ~1e-15) within
    1e-12 absolute, every other array within ``rtol`` of its largest entry. Returns the
    relative differences."""
    A, B = _arrays(run), _arrays(ref)
    assert A.keys() == B.keys()
    diffs = {}
    for k in sorted(A):
        leaf = k.split("/")[-1]
        if leaf.startswith(_EXACT):
            np.testing.assert_array_equal(A[k], B[k], err_msg=k)
        elif leaf.startswith(_ROUNDOFF):
            np.testing.assert_array_equal(np.isnan(A[k]), np.isnan(B[k]), err_msg=k)
            assert np.nanmax(np.abs(A[k] - B[k]), initial=0.0) < 1e-12, k
        else:
            diffs[k] = _rel(A[k], B[k])
    # the meta: the same settings; the drift ratios (from particle variances) within rtol;
    # the peak basis bytes are rank 0's: its share of the particles of each group
    a, b = dict(run.meta), dict(ref.meta)
    assert a.pop("ranks") == 2 and "ranks" not in b
    diffs["meta/drift_ratio"] = _rel(np.array(a.pop("drift_ratio")), np.array(b.pop("drift_ratio")))
    n = ref.meta["particles"] // ref.meta["groups"]
    lo, hi = _mpi.split(n, 0, 2)
    assert a.pop("peak_basis_bytes") * n == b.pop("peak_basis_bytes") * (hi - lo)
    assert a == b
    worst = max(diffs, key=diffs.get)
    print(f"max relative difference {diffs[worst]:.2e} ({worst}); outputs {diffs['outputs']:.2e}")
    assert diffs[worst] <= rtol, f"{worst}: {diffs[worst]:.3e} > {rtol:g}"
    return diffs


# ----------------------------------------------------------------------------- 1. R = 2 vs one process
def test_two_ranks_match_one_process_over_200_steps(runs):
    """Depth-3 SiLU, 200 steps: every array within RTOL (module docstring), basis sizes
    and dropped counts exact; the run is long enough for the bases to grow to ~150
    directions, so an error in the reduced Stein coefficients or in a late direction of
    rank 1 has time to show."""
    run, ref = zlimit.load(runs / "long.npz"), reference("long")
    assert run.steps == 200
    diffs = _agree(run, ref)
    assert {"outputs", "loss", "kernels/h2", "kernels/x3", "kernels/dh3", "cross/x3", "moments/h1", "moments/x3"} \
        <= diffs.keys()
    assert run.bases["size_bwd2"][:, -1].min() > 100  # the bases did grow
    # the run itself is no fixed point: the outputs moved and the loss fell
    assert np.abs(run.outputs[-1]).min() > 0.1 and run.loss[-1] < 0.5 * run.loss[0]


def test_two_ranks_match_one_process_odd_group_on_two_threads(runs):
    """2001 particles per group (rank 0 holds 1000, rank 1 1001, with the last pair of
    normals cut in half) and two groups at once on each rank (their collectives on
    separate communicators), with cross kernels kept from step 10."""
    _agree(zlimit.load(runs / "short.npz"), reference("short"))


def test_six_groups_on_six_threads_match_one_process(runs):
    """Each rank runs six groups at once, every one calling collectives on its own
    communicator from its own thread. A collective that holds the GIL while it waits
    (mpi4py's pickled ``allreduce`` in ``Shard.any`` did, before 7823bd6) can deadlock
    the ranks. It is a race: that bug hung this case in 13 of 16 tries (the runs job
    then ends with every thread's stack, from faulthandler, and every test of it fails)."""
    _agree(zlimit.load(runs / "threads.npz"), reference("threads"))


def test_cross_rank_tolerance_catches_a_wrong_particle(runs):
    """RTOL is far below the Monte Carlo scale: the single-process run with another seed
    for the particles of one group (what a rank drawing the wrong normals gives) is
    rejected by many orders of magnitude."""
    model, X, y, kw = case("short")
    with _quiet():
        other = zlimit.simulate(model, X, y, **dict(kw, seed=4))
    with pytest.raises(AssertionError):
        _agree(zlimit.load(runs / "short.npz"), other)
    assert _rel(other.kernels["x3"], reference("short").kernels["x3"]) > 1e6 * RTOL


# ----------------------------------------------------------------------------- 2, 3. determinism
def test_second_two_rank_run_is_bit_identical(runs, errors):
    """The short case from two separate launches (the second after the collective errors
    of the errors job): every array of the Run, bit for bit."""
    _identical(zlimit.load(errors / "short_again.npz"), zlimit.load(runs / "short.npz"))


def test_one_rank_communicator_is_bit_identical_to_no_communicator(tmp_path):
    """A plain python process passing MPI.COMM_WORLD (size 1): the reductions are the
    identity and the normals are those of comm=None, bit for bit."""
    out = _checked(tmp_path, "single", ranks=None)
    run = zlimit.load(out / "short.npz")
    assert run.meta["ranks"] == 1
    _identical(run, reference("short"))


# ----------------------------------------------------------------------------- 4. layout
def test_layout_on_rank_0_and_none_elsewhere(runs):
    model, X, y, kw = case("short")
    run = zlimit.load(runs / "short.npz")
    G, T, m = 3, 30, X.shape[0]
    assert run.meta["ranks"] == 2
    assert run.meta["particles"] == 6003 and run.meta["groups"] == G and run.meta["seed"] == 3
    assert run.meta["steps"] == T and run.meta["m"] == m and run.meta["m_eval"] == 0
    assert run.model == model and run.record_steps == (0, 10)
    assert run.outputs_groups.shape == (G, T + 1, m) and run.loss_groups.shape == (G, T + 1)
    assert run.error_signals_groups.shape == (G, T, m)
    assert sorted(run.kernels) == sorted(f"{k}{l}" for k in ("h", "x", "dh") for l in (1, 2, 3))
    for l in (1, 2, 3):
        assert run.kernel_groups(l, "h").shape == run.kernel_groups(l, "x").shape == (G, T + 1, m, m)
        assert run.kernel_groups(l, "dh").shape == (G, T, m, m)
        assert run.cross[f"x{l}"].shape == (G, 2, T + 1, m, m)
    assert sorted(run.novelty) == ["bwd2", "bwd3", "fwd2", "fwd3"]
    assert all(v.shape == (G, T + 1) for v in run.bases.values()) and "size_fwd2" in run.bases
    assert np.isfinite(run.outputs_groups).all() and run.outputs_se is not None
    # rank 1 returned None
    assert json.loads((runs / "short.rank1.json").read_text()) == "None"
    assert json.loads((runs / "long.rank1.json").read_text()) == "None"


# ----------------------------------------------------------------------------- 5. extensions
def test_extensions_match_one_process(runs):
    """3-class softmax cross-entropy with biases, momentum 0.5, weight decay 0.1 and
    three evaluation inputs: the bias and velocity rows are split like the particles."""
    run, ref = zlimit.load(runs / "ext.npz"), reference("ext")
    assert run.outputs_groups.shape == (2, 41, 9, 3) and run.meta["m_eval"] == 3
    _agree(run, ref)
    assert np.ptp(run.outputs[-1, 6:]) > 0.05  # the evaluation outputs moved apart


def test_qmc_matches_one_process(runs):
    """Randomised QMC: rank 1 fast-forwards the group's Sobol sequence to its first
    particle, so the ranks draw the single process's points."""
    run, ref = zlimit.load(runs / "qmc.npz"), reference("qmc")
    assert run.meta["qmc"] is True and run.meta["m_eval"] == 3
    _agree(run, ref)
    model, X, y, kw = case("qmc")  # and QMC is not plain Monte Carlo here
    with _quiet():
        plain = zlimit.simulate(model, X, y, **dict(kw, qmc=False, steps=2))
    assert _rel(plain.kernels["x2"][:, :3], ref.kernels["x2"][:, :3]) > 1e-4


# ----------------------------------------------------------------------------- 6. abort
def test_error_on_one_rank_ends_every_rank(tmp_path):
    """on_step raises on rank 1 only: rank 0 would wait in a collective forever; instead
    the job ends at once with a non-zero code and the one-line message naming rank 1."""
    done, wall = _launch(tmp_path, "abort", timeout=60)
    assert done.returncode != 0, done.stderr
    assert wall < 30, f"the job took {wall:.1f} s to end"
    # one line per raising thread: both groups running on rank 1 (threads=2) may get there first
    lines = [line for line in done.stderr.splitlines() if line.startswith("zlimit")]
    assert 1 <= len(lines) <= 2, done.stderr
    assert set(lines) == {"zlimit: error on MPI rank 1 of 2: boom on rank 1 (RuntimeError); ending all ranks"}, \
        done.stderr
    assert not list(tmp_path.glob("aborted*"))  # neither rank got past simulate


# ----------------------------------------------------------------------------- 7, 8, 9. collective errors
def _seen(errors: Path) -> list[dict]:
    return [json.loads((errors / f"errors.rank{r}.json").read_text()) for r in (0, 1)]


def test_divergence_is_raised_on_every_rank(errors):
    for rank, seen in enumerate(_seen(errors)):
        kind, message = seen["diverge"]
        assert kind == "DivergenceError", (rank, seen["diverge"])
        assert "non-finite at step" in message and "lr (now 50)" in message
    assert _seen(errors)[0]["diverge"] == _seen(errors)[1]["diverge"]  # same step, same group


def test_different_arguments_are_refused_on_every_rank(errors):
    for seen in _seen(errors):
        kind, message = seen["seed"]
        assert kind == "ValueError" and "MPI rank 1 was given other arguments than rank 0" in message


def test_too_few_particles_for_the_ranks_is_refused_on_every_rank(errors):
    for seen in _seen(errors):
        assert seen["few"] == ["ValueError", "3 particles per group is too few for 2 MPI ranks; give each rank >= 2 "
                                             "of every group's particles (particles >= 4 x groups)"]


def test_memory_short_on_one_rank_is_refused_on_every_rank(errors):
    for seen in _seen(errors):
        kind, message = seen["memory"]
        assert kind == "ResourceError" and "on MPI rank 1 of 2 (memory is per rank)" in message
        assert "more ranks" in message


def test_estimate_memory_per_rank():
    """One rank's need: the particle arrays (bases, features) are its share of each
    group, the records are whole. With N/G = 1001 the larger share is 501 particles
    (split(1001, ·, 2) = 500 | 501), so the part that scales is exactly 501/1001."""
    model, kw = zlimit.MLP(depth=3), dict(m=10, M=12, steps=50, groups=2, threads=1)
    records = 2 * _memory.record_bytes(3, 50, 12, 1)
    scaling = lambda ranks, particles: (zlimit.estimate_memory(model, particles=particles, ranks=ranks, **kw)
                                        - _memory.BASELINE_BYTES - records)
    for particles, share in ((2002, 501), (2000, 500), (200_000, 50_000)):
        one = scaling(1, particles)
        assert scaling(2, particles) * (particles // 2) == one * share, particles
    big = [zlimit.estimate_memory(model, particles=10**6, ranks=r, **kw) - _memory.BASELINE_BYTES for r in (1, 2)]
    assert abs(big[1] / big[0] - 0.5) < 0.01  # particle-dominated: about half
    with pytest.raises(ValueError, match="too few for groups = 2 over ranks = 3"):
        zlimit.estimate_memory(model, particles=10, ranks=3, **kw)
    with pytest.raises(ValueError, match="ranks"):
        zlimit.estimate_memory(model, particles=1000, ranks=0, **kw)


# ----------------------------------------------------------------------------- 10. validation
@pytest.fixture(scope="module")
def world():
    _mpiexec()
    from mpi4py import MPI
    return MPI.COMM_WORLD


@pytest.mark.parametrize("comm", [3, "world", object()])
def test_comm_of_the_wrong_type_is_refused(comm, world):
    X, y = zlimit.datasets.gaussian(4, 3)
    with pytest.raises(ValueError, match="comm must be an mpi4py intracommunicator") as info:
        zlimit.simulate(zlimit.MLP(depth=2), X, y, steps=1, particles=100, progress=False, comm=comm)
    assert "\n" not in str(info.value)


def test_comm_null_is_refused(world):
    from mpi4py import MPI
    with pytest.raises(ValueError, match="comm must be"):
        _mpi.check_comm(MPI.COMM_NULL, 100)


@pytest.mark.parametrize("options, match", [
    (dict(method="exact"), "comm applies to the Monte Carlo μP limit"),
    (dict(parametrization="ntk", particles=100), "comm applies to the Monte Carlo μP limit"),
    (dict(checkpoint="ck.npz", particles=100), "checkpoint does not apply over MPI"),
    (dict(checkpoint_every=10.0, particles=100), "checkpoint does not apply over MPI"),
])
def test_comm_with_options_it_does_not_support_is_refused(options, match, world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    X, y = zlimit.datasets.gaussian(4, 3)
    with pytest.raises(ValueError, match=match) as info:
        zlimit.simulate(zlimit.MLP(depth=2), X, y, steps=1, progress=False, comm=world, **options)
    assert "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())  # no checkpoint written


def test_too_few_particles_per_rank(world):
    assert _mpi.check_comm(world, 2) is world and _mpi.check_comm(None, 1) is None
    with pytest.raises(ValueError, match="1 particles per group is too few for 1 MPI ranks"):
        _mpi.check_comm(world, 1)


def test_singleton_world_runs_in_process(world):
    """comm=MPI.COMM_WORLD in this (singleton) process: meta['ranks'] is 1 and the run is
    comm=None's, bit for bit."""
    X, y = zlimit.datasets.gaussian(4, 3)
    kw = dict(steps=3, particles=202, groups=2, progress=False, seed=5, threads=1)
    with _quiet():
        run = zlimit.simulate(zlimit.MLP(depth=3), X, y, comm=world, **kw)
        ref = zlimit.simulate(zlimit.MLP(depth=3), X, y, **kw)
    assert run.meta["ranks"] == 1
    _identical(run, ref)


# ----------------------------------------------------------------------------- 11. properties
@given(st.integers(1, 40).flatmap(lambda R: st.tuples(st.just(R), st.integers(2 * R, 5000))))
def test_split_is_contiguous_even_and_balanced(case_):
    R, n = case_
    bounds = [_mpi.split(n, r, R) for r in range(R)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(bounds[r][1] == bounds[r + 1][0] for r in range(R - 1))
    assert all(lo % 2 == 0 for lo, _ in bounds)
    sizes = [hi - lo for lo, hi in bounds]
    assert min(sizes) >= 2 and max(sizes) - min(sizes) <= 2  # check_comm's promise: >= 2 per rank
    assert _mpi.Shard.of(n).local == n
    for r in range(R):  # a shard is its rank's range, normalised by the whole group
        shard = _mpi.Shard.of(n, _FakeComm(r, R))
        assert (shard.lo, shard.hi, shard.local, shard.n) == (*bounds[r], sizes[r], n)


class _FakeComm:
    """Rank r of R, for :meth:`Shard.of` (which asks nothing else)."""

    def __init__(self, rank: int, size: int):
        self.Get_rank, self.Get_size = (lambda: rank), (lambda: size)


@given(st.integers(1, 301), st.data(), st.integers(0, 2**63 - 1))
def test_fill_normals_of_a_slice_is_the_slice_of_the_stream(n, data, key):
    lo = 2 * data.draw(st.integers(0, (n - 1) // 2))
    hi = data.draw(st.integers(lo + 1, n))
    full, part = np.empty(n), np.empty(hi - lo)
    _kernels.fill_normals(full, np.uint64(key))
    _kernels.fill_normals(part, np.uint64(key), lo)
    assert full[lo:hi].tobytes() == part.tobytes()
