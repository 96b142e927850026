"""Performance benchmark of ``zlimit.simulate``: problems S1, S2, S3 and time to accuracy.

    python benchmarks/run.py [--quick | --tiny] [--out benchmarks/results] [--only S1,S2,S3,TTA]

Prints a table and writes ``<out>/<timestamp>.json`` with the machine, the library
versions (BLAS included), the git revision and every number of the table.
``ZLIMIT_BENCH_TINY=1`` is the same as ``--tiny`` (the smoke test uses it).

Problems (sizes of the full run; ``--quick`` and ``--tiny`` shrink them, see SIZES):

* S1: depth 3, tanh, m = 10, d = 16, T = 50, N = 10^5, full batch, lr 0.1, mse, "mean".
* S2: depth 3, SiLU, m = 10, d = 16, T = 200, N = 2·10^5, lr 0.1, mse, "mean", full batch.
* S3: S1 at N = 2.5·10^4 .. 4·10^5 (cost vs N) and at T = 25 .. 200 (cost vs T).
* TTA: time for ``simulate`` to reach a standard error ε of f̊ on S1, against the time
  for seed-means of ``train_finite`` to come within ε of the limit, for ε = 1e-2, 3e-3, 1e-3.

How things are measured
-----------------------
* Every simulation runs in a fresh child process (``--child``), so that its peak
  resident memory is its own. The peak is the child's VmHWM (/proc/self/status), reset
  at the start of each job through /proc/self/clear_refs: the ``ru_maxrss`` that the
  parent reads with ``os.wait4`` is kept in the JSON too, but on Linux it carries the
  parent's own peak over fork + exec (the parent has just copied 2 × 512 MiB), so it is
  not the child's. The child first runs a tiny simulation of the same model, so numba
  compilation is not timed, and reports its resident memory after that warm-up
  (``base_rss``) next to ``zlimit.estimate_memory``. In ``--tiny`` all jobs of one
  thread setting share one child (flagged ``rss_shared_child``), to stay under 30 s.
* ``cores`` = CPU time of the child process during ``simulate`` (all threads,
  time.process_time) ÷ wall time: how many cores the run actually got. A 2-thread run
  with cores ≈ 1 was starved (shared machine) or serialised.
* Calibration, in the parent: the engine's basic operation on its own, a thin product
  U Xᵀ with U of shape (500, 12 500) and 10 rows in X, single-threaded BLAS: its read
  rate next to the copy bandwidth, and the speed-up of two independent such streams on
  two threads, which bounds the 2-thread speed-up the machine can give at that moment.
* Thread count: the child gets NUMBA_NUM_THREADS = OPENBLAS_NUM_THREADS =
  OMP_NUM_THREADS = MKL_NUM_THREADS = ``--threads`` (default 2, at most the cores), and
  the speed-up is S1 with that setting against S1 with all four set to 1.
* Per-step times, without editing the library: inside the child only,
  ``zlimit._engine._Group.forward`` is wrapped to record a timestamp and the basis
  sizes (K, J) of every hidden matrix when each step's forward pass starts. The time of
  step t of a group is start(t+1) − start(t) (forward, readout, records, backward and
  update of step t); "first" is t = 0 and "last" t = T−1, medians over the G groups.
  Groups may run concurrently (the engine's ``threads``), so these are latencies of one
  group under that concurrency.
* Bandwidth floor: a step must stream, for each hidden matrix, the basis and the
  normals of both sides, (K + J)·2·N_g·itemsize bytes (N_g = N/G particles of a group;
  K, J the mean of the sizes at the start and the end of the step). The minimal count
  assumed is ONE pass (each array read once per step). ``floor%`` is
  (Σ_steps,groups bytes / wall time of simulate) / copy bandwidth, where the copy
  bandwidth is the median of np.copyto of a 512 MiB float64 array (read + write bytes
  per second, the STREAM "Copy" convention), measured in the same run. The present
  algorithm reads these arrays 3.5 times per step (CGS2 against the basis = 4 passes of
  U and of V, one Ẑ sample and one Stein product per normals array, one ``combine`` per
  basis: 5K + 2K + 5J + 2J = 3.5·2(K + J) rows, without evaluation inputs); ``alg%`` =
  3.5 × floor% is the bandwidth fraction of that algorithm as written. The last,
  forward-only pass (step T) is in the wall time but not in the bytes (conservative).
* Compute ceiling: every read of a basis or normals row is a product with m = 10
  particle rows (the problems here are full batch with M = b = m, no evaluation
  inputs), 10·m flops per row per particle and step in all (docs/performance.md §1:
  forward 4Km + 2Km + 4Jm, backward 4Jm + 4Km + 2Jm). ``GF/s`` is that count over
  the wall time; ``peak%`` divides it by ``threads`` × the single-thread rate of a
  square float64 BLAS product measured in the same run. The floor fraction the flops
  allow at that peak, ``floor_ceiling`` = peak rate × 16 B / (10·m flops) / copy
  bandwidth, says whether the 50 % target is reachable at all on the machine.
* Time to accuracy: the limit's standard error comes from the spread of its G groups;
  se ∝ N^{-1/2}, so N(ε) = N_0 (se_0/ε)² from the S1 run (max over inputs at the last
  step), at least N_min = 10·K_cap·G (the engine's own "particles >> directions"
  threshold), and time(ε) = wall_0 · N(ε)/N_0 (cost linear in N: see S3). For finite
  nets, widths n and seeds are measured; per input a, the seed spread sd_a(n) = s_a n^{-1/2}
  and the bias of the seed-mean B_a/n are fitted (weighted least squares against the
  limit, whose own se enters the weights), one seed costs t(n) = α + β n²; for each ε
  the cheapest (n, S) with max_a |B_a|/n + s_a/√(nS) ≤ ε gives time = S·t(n), with n
  from the smallest measured width up to the width whose hidden matrices fit in half
  the memory.
* Bias of the limit in N: the group spread does not see a Monte Carlo bias common to
  all groups. With S1 and at least two S3 runs at other N (same T), f̊_a(N) = f∞_a + c_a/N
  is fitted per input; the finite nets are then compared with f∞ (instead of f̊ at N_0),
  and the "(b)" columns give the simulate time for max_a |c_a|/N + se_a(N) ≤ ε.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import inspect
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ALG_PASSES = 3.5  # reads of the 2(K+J) rows per step by the present engine (see module doc)
ROWS = 10  # m = M = b of every problem here (full batch, no evaluation inputs)
FLOPS_PER_ROW = 10 * ROWS  # flops per basis or normals row per particle and step (see module doc)
EPSILONS = (1e-2, 3e-3, 1e-3)
BUDGET_S2_S = 15 * 60

# Sizes per mode. S3 reuses the S1 run for the point it shares with it.
SIZES = {
    "full": {
        "S1": dict(T=50, N=100_000), "S2": dict(T=200, N=200_000),
        "S3_N": (25_000, 50_000, 100_000, 200_000, 400_000), "S3_T": (25, 50, 100, 200),
        "widths": (128, 256, 512, 1024, 2048, 4096), "seeds": (128, 64, 32, 16, 8, 4),
        "groups": 8, "copy_mib": 512, "warm_N": 400, "calib": (500, 12_500),
    },
    "quick": {
        "S1": dict(T=20, N=20_000), "S2": dict(T=40, N=20_000),
        "S3_N": (10_000, 20_000, 40_000, 80_000), "S3_T": (10, 20, 40),
        "widths": (128, 256, 512, 1024), "seeds": (32, 16, 8, 4),
        "groups": 8, "copy_mib": 512, "warm_N": 400, "calib": (500, 12_500),
    },
    "tiny": {
        "S1": dict(T=4, N=2_000), "S2": dict(T=4, N=2_000),
        "S3_N": (1_000, 2_000, 4_000), "S3_T": (2, 4),
        "widths": (32, 64), "seeds": (3, 3),
        "groups": 2, "copy_mib": 64, "warm_N": 200, "calib": (100, 4_000),
    },
}


# ============================================================ problem definitions
def problem(name: str):
    """(model, X, y) of S1 (tanh) or S2 (SiLU); S3 and TTA use S1."""
    import zlimit

    X, y = zlimit.datasets.gaussian(10, 16, seed=0)
    act = "silu" if name == "S2" else "tanh"
    model = zlimit.MLP(depth=3, activation=act, loss="mse", reduction="mean", lr=0.1)
    return model, X, y


# ============================================================ child process
def _rss_self() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _vm(field: str) -> int | None:
    """A /proc/self/status memory field (VmRSS, VmHWM) in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0).

    Needed because ru_maxrss of a child carries the parent's peak over fork + exec on
    Linux, and because jobs sharing a child would otherwise share one peak.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak() -> tuple[int, str]:
    hwm = _vm("VmHWM")
    return (hwm, "VmHWM") if hwm is not None else (_rss_self(), "ru_maxrss")


def _instrument():
    """Wrap engine._Group.forward to record (group, t, time, sizes); returns the log."""
    import threading

    import zlimit._engine as E

    log: list = []
    counter = iter(range(10**9))  # ids of freed groups are reused: number the groups instead
    group_cls = getattr(E, "_Group", None)
    if group_cls is None or not hasattr(group_cls, "forward"):
        return log, None
    orig = group_cls.forward

    def forward(self, t, *args, **kwargs):
        sizes = None
        try:
            sizes = [(int(h.fwd.size), int(h.bwd.size)) for h in self.hidden]
            n = int(self.cfg.particles)
            item = int(np.dtype(self.cfg.dtype).itemsize)
        except Exception:  # the engine changed shape: keep the timestamps only
            n = item = None
        gid = self.__dict__.get("_bench_gid")
        if gid is None:
            gid = self.__dict__["_bench_gid"] = next(counter)
        log.append((gid, threading.get_ident(), int(t), time.perf_counter(), sizes, n, item))
        return orig(self, t, *args, **kwargs)

    group_cls.forward = forward
    return log, (group_cls, orig)


def _per_step(log, T: int) -> dict:
    """Per-step durations and streamed bytes from the forward-start log."""
    if not log:
        return {}
    by_group: dict = {}
    for gid, _tid, t, ts, sizes, n, item in log:
        by_group.setdefault(gid, {})[t] = (ts, sizes, n, item)
    durations, kj, bytes_ = [], [], []
    for steps in by_group.values():
        d_g, k_g, b_g = [], [], []
        for t in range(T):
            if t not in steps or t + 1 not in steps:
                break
            (t0, s0, n, item), (t1, s1, _, _) = steps[t], steps[t + 1]
            d_g.append(t1 - t0)
            if s0 is not None and s1 is not None:
                kj_t = sum((a[0] + a[1] + b[0] + b[1]) / 2 for a, b in zip(s0, s1))
                k_g.append(kj_t)
                b_g.append(kj_t * 2 * n * item)
        durations.append(d_g), kj.append(k_g), bytes_.append(b_g)
    L = min(len(d) for d in durations)
    D = np.array([d[:L] for d in durations])
    out = {"groups_seen": len(durations), "steps_timed": L,
           "step_s_median": np.median(D, axis=0).tolist() if L else []}
    if all(len(k) >= L for k in kj) and L:
        out["kj_per_step"] = np.median(np.array([k[:L] for k in kj]), axis=0).tolist()
        out["bytes_total"] = float(sum(sum(b[:L]) for b in bytes_))
        out["busy_s"] = float(D.sum())
    return out


def _simulate_job(job: dict) -> dict:
    import zlimit

    model, X, y = problem(job["problem"])
    T, N, G = job["T"], job["N"], job["groups"]
    kwargs = dict(steps=T, particles=N, groups=G, progress=False)
    reset = _reset_peak()
    # warm-up: compile the numba kernels of this activation outside the timing
    zlimit.simulate(model, X, y, steps=2, particles=job["warm_N"], groups=2, progress=False)
    base_rss = _vm("VmRSS") or _rss_self()
    est_kwargs = {}
    if "threads" in inspect.signature(zlimit.estimate_memory).parameters:
        est_kwargs["threads"] = job["threads"]
    batches = [np.arange(X.shape[0])] * T
    estimate = zlimit.estimate_memory(model, X.shape[0], X.shape[0], T, N, G, batches, **est_kwargs)
    log, restore = _instrument()
    load0 = os.getloadavg()[0]
    c0, t0 = time.process_time(), time.perf_counter()
    run = zlimit.simulate(model, X, y, **kwargs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak, how = _peak()
    if restore:
        setattr(restore[0], "forward", restore[1])
    se = run.outputs_se
    res = {"wall_s": wall, "cpu_s": cpu, "cores_used": cpu / wall, "loadavg_1min": [load0, os.getloadavg()[0]],
           "base_rss_bytes": base_rss, "estimate_memory_bytes": int(estimate),
           "peak_rss_bytes": peak, "peak_rss_source": how, "peak_reset": reset,
           "ru_maxrss_self_bytes": _rss_self(),
           "f_last": run.outputs[-1].tolist(),
           "se_last": None if se is None else se[-1].tolist(),
           "loss_first": float(run.loss[0]), "loss_last": float(run.loss[-1])}
    res.update(_per_step(log, T))
    return res


def _finite_job(job: dict) -> dict:
    import zlimit

    model, X, y = problem("S1")
    T = job["T"]
    zlimit.train_finite(model, X, y, width=16, steps=2, seed=0)  # compile
    rows = []
    for n, S in zip(job["widths"], job["seeds"]):
        outs, secs = [], []
        for s in range(S):
            t0 = time.perf_counter()
            r = zlimit.train_finite(model, X, y, width=n, steps=T, seed=s)
            secs.append(time.perf_counter() - t0)
            outs.append(r.outputs[-1])
        rows.append({"width": n, "seeds": S, "seconds_per_seed": float(np.median(secs)),
                     "f_last": np.array(outs).tolist()})
    peak, how = _peak()
    return {"rows": rows, "peak_rss_bytes": peak, "peak_rss_source": how}


def child_main(spec_path: str, out_path: str) -> None:
    warnings.simplefilter("ignore")  # "particles >> directions" at small N is expected here
    with open(spec_path) as fh:
        jobs = json.load(fh)
    results = []
    for job in jobs:
        fn = _finite_job if job.get("kind") == "finite" else _simulate_job
        results.append(fn(job))
        with open(out_path, "w") as fh:  # after every job, so a crash keeps the rest
            json.dump(results, fh)


# ============================================================ parent side
def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_child(jobs: list, threads: int) -> list:
    """Run ``jobs`` in one fresh process; attach its peak RSS (os.wait4) to each result."""
    with tempfile.TemporaryDirectory() as tmp:
        spec, out, logf = Path(tmp, "spec.json"), Path(tmp, "out.json"), Path(tmp, "log.txt")
        spec.write_text(json.dumps(jobs))
        with open(logf, "w") as log:
            p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(spec), str(out)],
                                 env=thread_env(threads), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            _, status, usage = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
        results = json.loads(out.read_text()) if out.exists() else []
        if p.returncode != 0 or len(results) != len(jobs):
            tail = logf.read_text()[-3000:]
            raise RuntimeError(f"benchmark child failed (exit {p.returncode}) on jobs {jobs}:\n{tail}")
    for r in results:
        # ru_maxrss of the child as the parent sees it. On Linux it includes the parent's own
        # peak (carried over fork + exec), so the child's VmHWM is the primary number.
        r["ru_maxrss_wait4_bytes"] = int(usage.ru_maxrss * 1024)
        r.setdefault("peak_rss_bytes", r["ru_maxrss_wait4_bytes"])
        r["rss_shared_child"] = len(jobs) > 1
        r["threads"] = threads
    return results


def copy_bandwidth(mib: int, repeats: int = 7) -> dict:
    """Median np.copyto bandwidth of a ``mib`` MiB float64 array."""
    n = mib * 2**20 // 8
    src = np.ones(n)
    dst = np.zeros(n)  # touched, so page faults are not timed
    np.copyto(dst, src)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    t = float(np.median(times))
    return {"array_bytes": int(src.nbytes), "repeats": repeats, "median_s": t, "times_s": times,
            "GBps_read_plus_write": 2 * src.nbytes / t / 1e9, "GBps_copied": src.nbytes / t / 1e9}


def _dgemm_rate(repeats: int, n: int = 1500) -> float:
    """Single-thread flop rate of a square float64 BLAS product: the compute peak in practice."""
    from threadpoolctl import threadpool_limits

    a, b = np.random.default_rng(1).standard_normal((2, n, n))
    times = []
    with threadpool_limits(limits=1, user_api="blas"):
        a @ b
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / float(np.median(times)) / 1e9


def calibrate(K: int, N: int, b: int = 10, products: int = 20, repeats: int = 3) -> dict:
    """The engine's kernel on its own: a thin product U Xᵀ, U (K, N), X (b, N).

    Gives its read rate with single-threaded BLAS (against the copy bandwidth, how far
    from memory-bound the engine's basic operation is) and the speed-up of two such
    streams on two threads (the ceiling for the 2-thread speed-up on this machine now,
    other load included).
    """
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    U = [rng.standard_normal((K, N)) for _ in range(2)]
    X = rng.standard_normal((b, N))

    def work(i):
        for _ in range(products):
            U[i] @ X.T

    one, two, single = [], [], []
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(2) as pool:
        work(0)
        for _ in range(repeats):
            t0 = time.perf_counter()
            work(0)
            single.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            work(0), work(1)
            one.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            list(pool.map(work, (0, 1)))
            two.append(time.perf_counter() - t0)
    t1 = float(np.median(single))
    return {"K": K, "N": N, "b": b, "products": products, "repeats": repeats,
            "thin_gemm_GBps_1thread": products * U[0].nbytes / t1 / 1e9,
            "thin_gemm_GFlops_1thread": products * 2 * K * N * b / t1 / 1e9,
            "dgemm_GFlops_1thread": _dgemm_rate(repeats),
            "two_stream_speedup": float(np.median(one) / np.median(two)),
            "loadavg": list(os.getloadavg())}


def machine_info() -> dict:
    info = {"platform": platform.platform(), "machine": platform.machine(), "cpu_model": platform.processor()}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["cpu_count"] = os.cpu_count()
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["cpus_usable"] = os.cpu_count()
    try:
        with open("/proc/meminfo") as fh:
            mem = dict(line.split(":", 1) for line in fh)
        info["mem_total_bytes"] = int(mem["MemTotal"].split()[0]) * 1024
        info["mem_available_bytes"] = int(mem["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError):
        info["mem_total_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        info["loadavg"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def versions() -> dict:
    import numba
    import scipy

    out = {"python": sys.version.split()[0], "numpy": np.__version__, "scipy": scipy.__version__,
           "numba": numba.__version__}
    try:
        sys.path.insert(0, str(ROOT / "src"))
        import zlimit

        out["zlimit"] = zlimit.__version__
        out["zlimit_path"] = os.path.dirname(zlimit.__file__)
    except Exception as exc:  # pragma: no cover
        out["zlimit"] = f"import failed: {exc}"
    try:
        from threadpoolctl import threadpool_info

        out["threadpools"] = threadpool_info()
    except Exception:
        out["threadpools"] = None
    try:
        out["numpy_config"] = np.show_config(mode="dicts")
        json.dumps(out["numpy_config"])
    except Exception:
        out["numpy_config"] = None
    return out


def git_info() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return None

    status = git("status", "--porcelain")
    src = {}
    for f in sorted((ROOT / "src" / "zlimit").glob("*.py")):  # the engine changes between commits
        src[f.name] = hashlib.sha256(f.read_bytes()).hexdigest()[:16]
    return {"revision": git("rev-parse", "HEAD"), "dirty": bool(status), "status": status.splitlines() if status else [],
            "src_sha256_16": src}


# ------------------------------------------------------------ analysis
def _loglog_slope(x, y) -> float | None:
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (x > 0) & (y > 0)
    if ok.sum() < 2:
        return None
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def summarise(r: dict, spec: dict, B: float, dgemm: float | None) -> dict:
    """Derived columns of one simulate run (B: copy bandwidth, dgemm: 1-thread GFlop/s)."""
    s = dict(spec)
    s.update({k: r.get(k) for k in ("wall_s", "cpu_s", "cores_used", "loadavg_1min", "peak_rss_bytes",
                                    "peak_rss_source", "base_rss_bytes", "estimate_memory_bytes",
                                    "rss_shared_child", "threads", "loss_first", "loss_last")})
    steps = r.get("step_s_median") or []
    s["step_first_s"] = steps[0] if steps else None
    s["step_last_s"] = steps[-1] if steps else None
    kj = r.get("kj_per_step") or []
    s["kj_first"] = kj[0] if kj else None
    s["kj_last"] = kj[-1] if kj else None
    if r.get("bytes_total"):
        s["bytes_streamed_min"] = r["bytes_total"]
        s["frac_floor"] = r["bytes_total"] / r["wall_s"] / B
        s["frac_floor_alg"] = ALG_PASSES * s["frac_floor"]
        s["concurrency"] = r["busy_s"] / r["wall_s"]
        rows = r["bytes_total"] / (2 * 8)  # float64: Σ (K + J) N_g over steps and hidden matrices
        s["GFlops"] = FLOPS_PER_ROW * rows / r["wall_s"] / 1e9
        if dgemm:
            s["frac_peak"] = s["GFlops"] / (dgemm * r["threads"])
            s["floor_ceiling"] = dgemm * r["threads"] * 1e9 / (FLOPS_PER_ROW / (2 * 8)) / B
    if len(steps) >= 4 and len(kj) == len(steps):  # growth of step cost with K over the 2nd half
        h = len(steps) // 2
        s["step_growth_exponent"] = _loglog_slope(kj[h:], steps[h:])
    s["rss_minus_base_bytes"] = r["peak_rss_bytes"] - r["base_rss_bytes"]
    if r.get("se_last"):
        s["se_last_max"] = float(np.max(r["se_last"]))
    return s


def _limit_vs_N(sweep: list) -> dict | None:
    """Per input a, weighted fit f̊_a(N) = f∞_a + c_a/N over runs at several N (same T).

    The group spread only sees the noise of f̊; a Monte Carlo bias common to all groups
    (e.g. of the Stein estimates, per-particle error ~ sqrt(K/N_g)) shows up as c_a.
    """
    if len(sweep) < 3:
        return None
    sweep = sorted(sweep, key=lambda p: p[0])
    Ns = np.array([N for N, _, _ in sweep], float)
    F = np.array([f for _, f, _ in sweep])
    S = np.maximum(np.array([se for _, _, se in sweep]), 1e-12)
    A = np.stack([np.ones_like(Ns), 1.0 / Ns], 1)
    f_inf, f_se, c, c_se, chi2 = [], [], [], [], []
    for a in range(F.shape[1]):
        w = 1.0 / S[:, a] ** 2
        cov = np.linalg.inv(A.T @ (A * w[:, None]))
        p = cov @ (A.T @ (w * F[:, a]))
        f_inf.append(p[0]), f_se.append(math.sqrt(cov[0, 0])), c.append(p[1]), c_se.append(math.sqrt(cov[1, 1]))
        chi2.append(float((w * (F[:, a] - A @ p) ** 2).sum()))
    c, c_se = np.array(c), np.array(c_se)
    return {"N": Ns.tolist(), "f_inf": f_inf, "f_inf_se": f_se, "c": c.tolist(), "c_se": c_se.tolist(),
            "max_abs_z_c": float(np.max(np.abs(c / c_se))), "chi2_dof": float(np.mean(chi2) / max(len(Ns) - 2, 1))}


def tta(s1_raw: dict, finite: dict, spec: dict, mem_total: int, sweep: list | None = None) -> dict:
    """Time to accuracy, simulate vs seed-means of train_finite (see module doc).

    ``sweep``: (N, f_last, se_last) of runs of the same problem at other N (S3), to
    measure a bias of f̊ in N; with >= 3 points the finite nets are compared with the
    extrapolated f∞ and a bias-aware simulate time is given next to the se-only one.
    """
    f_lim = np.array(s1_raw["f_last"])
    se_lim = np.array(s1_raw["se_last"]) if s1_raw.get("se_last") else np.zeros_like(f_lim)
    se0, N0, wall0 = float(se_lim.max()), spec["N"], s1_raw["wall_s"]
    k_cap = 10 * (spec["T"] + 1)
    n_min = 10 * k_cap * spec["groups"]
    vsN = _limit_vs_N(sweep or [])
    if vsN is not None:  # the finite nets are compared with the extrapolated limit
        f_ref, se_ref = np.array(vsN["f_inf"]), np.array(vsN["f_inf_se"])
    else:
        f_ref, se_ref = f_lim, se_lim
    widths = np.array([row["width"] for row in finite["rows"]], float)
    secs = np.array([row["seconds_per_seed"] for row in finite["rows"]])
    means, sds, Ss, measured = [], [], [], []
    for row in finite["rows"]:
        F = np.array(row["f_last"])
        means.append(F.mean(0))
        sds.append(F.std(0, ddof=1) if F.shape[0] > 1 else np.full(F.shape[1], np.nan))
        Ss.append(F.shape[0])
        measured.append({"width": row["width"], "seeds": row["seeds"], "seconds_per_seed": row["seconds_per_seed"],
                         "max_abs_err": float(np.max(np.abs(F.mean(0) - f_ref))),
                         "max_abs_err_vs_N0": float(np.max(np.abs(F.mean(0) - f_lim))),
                         "max_seed_sd": float(np.nanmax(sds[-1]))})
    means, sds, Ss = np.array(means), np.array(sds), np.array(Ss, float)
    # spread: sd_a(n) = s_a / sqrt(n), pooled over widths
    w = np.maximum(Ss - 1, 0)[:, None]
    s_a = np.sqrt(np.nansum(w * sds**2 * widths[:, None], 0) / np.maximum(w.sum(), 1))
    # bias of the seed-mean: B_a / n, weighted least squares
    x = 1.0 / widths[:, None]
    var = s_a[None, :] ** 2 / widths[:, None] / Ss[:, None] + se_ref[None, :] ** 2
    var = np.maximum(var, 1e-300)
    Wt = 1.0 / var
    B_a = (Wt * x * (means - f_ref)).sum(0) / (Wt * x**2).sum(0)
    B_se = 1.0 / np.sqrt((Wt * x**2).sum(0))
    # goodness of fit of "seed-mean = limit + B_a/n" (the limit's se is common to all widths,
    # so this chi² is approximate); >> 1 means the 1/n model or the limit does not fit
    chi2_dof = float(np.mean((Wt * (means - f_ref - B_a[None, :] * x) ** 2).sum(0) / max(len(widths) - 1, 1)))
    # one seed: t(n) = alpha + beta n^2, least squares in relative error
    A = np.stack([np.ones_like(widths), widths**2], 1) / secs[:, None]
    (alpha, beta), *_ = np.linalg.lstsq(A, np.ones_like(secs), rcond=None)
    alpha, beta = max(alpha, 0.0), max(beta, 1e-30)
    t_of = lambda n: alpha + beta * n * n
    n_max = int(math.sqrt(0.5 * mem_total / (8 * 2)))  # two n×n float64 hidden matrices
    # widths from the smallest measured one up (the fits are not trusted below the data)
    grid = np.unique(np.geomspace(widths.min(), max(n_max, widths.max()), 200).astype(int))
    out = {"eps": list(EPSILONS), "limit": {"se0_max": se0, "N0": N0, "wall0_s": wall0, "N_min": n_min,
                                             "groups": spec["groups"], "vs_N": vsN,
                                             "reference": "f_inf (extrapolated in N)" if vsN else "f at N0"},
           "finite_fit": {"alpha_s": alpha, "beta_s": beta, "s_a": s_a.tolist(), "B_a": B_a.tolist(),
                          "B_a_se": B_se.tolist(), "chi2_dof": chi2_dof, "n_max": n_max},
           "finite_measured": measured, "rows": []}
    for eps in EPSILONS:
        n_eps = N0 * (se0 / eps) ** 2 if se0 > 0 else float(n_min)
        n_use = max(n_eps, n_min)
        t_sim = wall0 * n_use / N0
        t_bias = n_bias = None
        if vsN is not None:  # smallest N with max_a |c_a|/N + se_a(N) <= eps
            c_abs = np.abs(np.array(vsN["c"]))
            for N in np.geomspace(n_min, 1e12, 2000):
                if np.max(c_abs / N + se_lim * math.sqrt(N0 / N)) <= eps:
                    n_bias = float(N)
                    t_bias = wall0 * N / N0
                    break
        best = None
        for n in grid:
            slack = eps - np.abs(B_a) / n
            if np.any(slack <= 0):
                continue
            S = max(1, int(np.ceil(np.max((s_a / np.sqrt(n) / slack) ** 2))))
            cost = S * t_of(n)
            if best is None or cost < best[0]:
                best = (cost, int(n), S)
        row = {"eps": eps, "sim_N": n_eps, "sim_N_used": n_use, "sim_time_s": t_sim,
               "sim_N_bias_aware": n_bias, "sim_time_bias_aware_s": t_bias,
               "finite_time_s": None if best is None else best[0],
               "finite_width": None if best is None else best[1],
               "finite_seeds": None if best is None else best[2]}
        row["ratio_finite_over_sim"] = None if best is None else best[0] / t_sim
        row["ratio_bias_aware"] = None if (best is None or t_bias is None) else best[0] / t_bias
        out["rows"].append(row)
    return out


def s2_largest_T(s2: dict, s2_raw: dict, budget: float) -> dict | None:
    """Largest T with predicted S2 wall time <= budget: step cost a + b·(K+J), fitted.

    K + J grows linearly in t (fitted too), so the predicted wall time of T steps is
    scale · Σ_{t<T} [a + b(k0 + dk·t)], a quadratic in T; scale = measured wall ÷ the
    same sum over the measured steps (group concurrency and setup, as measured).
    """
    steps, kj = s2_raw.get("step_s_median") or [], s2_raw.get("kj_per_step") or []
    if len(steps) < 3 or len(kj) != len(steps):
        return None
    t = np.arange(len(steps))
    b_fit, a_fit = np.polyfit(kj, steps, 1)  # step time vs K+J
    dk, k0 = np.polyfit(t, kj, 1)  # K+J vs t
    b_fit, dk = max(float(b_fit), 0.0), max(float(dk), 0.0)  # cost never falls with K

    def cost(T: float) -> float:
        return T * (a_fit + b_fit * k0) + b_fit * dk * T * (T - 1) / 2

    measured = cost(len(steps))
    if not (measured > 0 and math.isfinite(measured)):
        return None
    scale = s2_raw["wall_s"] / measured
    lo, hi = 0, 1
    while scale * cost(hi) <= budget and hi < 10**7:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # cost is increasing in T for T >= 1
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if scale * cost(mid) <= budget else (lo, mid)
    return {"T_max": int(lo), "fit_step_s": [float(a_fit), float(b_fit)], "fit_kj": [float(k0), float(dk)],
            "budget_s": budget, "scale": scale, "capped": hi >= 10**7}


def targets(res: dict) -> list:
    P, out = res["problems"], []

    def add(name, value, threshold, met, note=""):
        out.append({"target": name, "value": value, "threshold": threshold, "met": met, "note": note})

    for p in ("S1", "S2"):
        v = P.get(p, {}).get("frac_floor")
        c = P.get(p, {}).get("floor_ceiling")
        add(f"{p} >= 50% of bandwidth floor", v, 0.5, None if v is None else v >= 0.5,
            f"1 pass minimal; at the machine's dgemm peak the flops allow at most {_fmt(c)}")
    sN = res.get("S3", {}).get("N")
    if sN:
        dev = sN.get("max_dev_per_particle")
        add("cost linear in N within 15%", dev, 0.15, dev <= 0.15 if dev is not None else None,
            f"max |(wall/N)/median − 1|; log-log slope {_fmt(sN.get('slope'))}")
    sT = res.get("S3", {}).get("T")
    g = sT.get("last_step_vs_K_exponent") if sT else P.get("S1", {}).get("step_growth_exponent")
    add("per-step cost grows no faster than K", g, 1.1, None if g is None else g <= 1.1,
        "log-log exponent of step time vs K+J (S3-T last steps, else S1 2nd half) <= 1.1")
    sp = res.get("threads", {}).get("speedup")
    ceil = res.get("calibration", {}).get("two_stream_speedup")
    add("2 threads >= 1.7x 1 thread", sp, 1.7, None if sp is None else sp >= 1.7,
        f"S1 wall time; two independent BLAS streams reach {_fmt(ceil)}x on this machine now")
    tt = res.get("tta")
    if tt:
        r = [row for row in tt["rows"] if row["eps"] == 1e-3][0]
        v = r["ratio_finite_over_sim"]
        add("TTA ratio >= 3 at 1e-3", v, 3.0, None if v is None else v >= 3.0, "finite time / simulate time")
    s2 = P.get("S2")
    if s2:
        v = s2["peak_rss_bytes"] / 2**30
        add("S2 within 24 GiB", v, 24.0, v <= 24.0, "peak RSS GiB")
        lt = res.get("S2_T15")
        v = None if lt is None else lt["T_max"]
        add("S2: largest T in 15 min", v, 200, None if v is None else v >= 200,
            "extrapolated; met if the full T = 200 fits")
    return out


# ------------------------------------------------------------ printing
def _fmt(v, spec="{:.3g}"):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, int) and spec == "{:.3g}":
        return str(v)
    return spec.format(v)


def print_table(res: dict) -> None:
    mib = lambda b: None if b is None else b / 2**20
    bw = res["bandwidth"]
    print(f"\ncopy bandwidth (np.copyto {bw['array_bytes'] / 2**20:.0f} MiB, median of {bw['repeats']}): "
          f"{bw['GBps_read_plus_write']:.2f} GB/s read+write ({bw['GBps_copied']:.2f} GB/s copied)")
    cal = res.get("calibration")
    if cal:
        print(f"thin product U Xᵀ ({cal['K']}x{cal['N']} by {cal['b']} rows, 1 BLAS thread): "
              f"{cal['thin_gemm_GBps_1thread']:.2f} GB/s read; two such streams on 2 threads: "
              f"{cal['two_stream_speedup']:.2f}x; load average {cal['loadavg'][0]:.1f}")
        print(f"flop rates, 1 thread: that thin product {cal['thin_gemm_GFlops_1thread']:.1f} GFlop/s, "
              f"square dgemm {cal['dgemm_GFlops_1thread']:.1f} GFlop/s (the compute peak used for peak%)")
    print(f"threads: {res['threads']['main']} (NUMBA/OPENBLAS/OMP/MKL_NUM_THREADS), mode {res['mode']}\n")
    hdr = ("problem", "N", "T", "G", "thr", "wall s", "cores", "step0 ms", "stepT ms", "K+J end", "RSS MiB",
           "est MiB", "floor%", "alg%", "GF/s", "peak%")
    print(("{:<12}" + "{:>9}" * (len(hdr) - 1)).format(*hdr))
    rows = [(k, v) for k, v in res["problems"].items()]
    for name, s in rows:
        print(("{:<12}" + "{:>9}" * (len(hdr) - 1)).format(
            name, s["N"], s["T"], s["groups"], s["threads"], _fmt(s["wall_s"], "{:.2f}"),
            _fmt(s.get("cores_used"), "{:.2f}"),
            _fmt(None if s["step_first_s"] is None else 1e3 * s["step_first_s"], "{:.1f}"),
            _fmt(None if s["step_last_s"] is None else 1e3 * s["step_last_s"], "{:.1f}"),
            _fmt(s.get("kj_last"), "{:.0f}"),
            _fmt(mib(s["peak_rss_bytes"]), "{:.0f}"), _fmt(mib(s["estimate_memory_bytes"]), "{:.0f}"),
            _fmt(None if s.get("frac_floor") is None else 100 * s["frac_floor"], "{:.1f}"),
            _fmt(None if s.get("frac_floor_alg") is None else 100 * s["frac_floor_alg"], "{:.1f}"),
            _fmt(s.get("GFlops"), "{:.1f}"),
            _fmt(None if s.get("frac_peak") is None else 100 * s["frac_peak"], "{:.0f}")))
    if res.get("S3"):
        for key, label in (("N", "cost vs N"), ("T", "cost vs T")):
            d = res["S3"].get(key)
            if d:
                extra = (f"max dev of wall/N {_fmt(d.get('max_dev_per_particle'))}" if key == "N"
                         else f"last-step exponent vs K {_fmt(d.get('last_step_vs_K_exponent'))}")
                print(f"S3 {label}: log-log slope of wall {_fmt(d.get('slope'))}; {extra}")
    th = res.get("threads", {})
    if th.get("speedup"):
        print(f"threads: S1 wall 1 thread {th['wall_1']:.2f} s, {th['main']} threads {th['wall_main']:.2f} s, "
              f"speed-up {th['speedup']:.2f}x")
    if res.get("tta"):
        t = res["tta"]
        print(f"\ntime to accuracy (S1, max over inputs at step T; limit se0 = {t['limit']['se0_max']:.2e} at "
              f"N0 = {t['limit']['N0']}, N >= {t['limit']['N_min']}):")
        row = "{:>8}{:>12}{:>12}{:>10}{:>8}{:>14}{:>9}{:>12}{:>12}{:>10}"
        print(row.format("eps", "sim N", "sim s", "width", "seeds", "finite s", "ratio", "sim N(b)", "sim s(b)",
                         "ratio(b)"))
        for r in t["rows"]:
            print(row.format(
                f"{r['eps']:g}", _fmt(r["sim_N_used"], "{:.3g}"), _fmt(r["sim_time_s"], "{:.3g}"),
                _fmt(r["finite_width"], "{}"), _fmt(r["finite_seeds"], "{}"), _fmt(r["finite_time_s"], "{:.3g}"),
                _fmt(r["ratio_finite_over_sim"], "{:.3g}"), _fmt(r["sim_N_bias_aware"], "{:.3g}"),
                _fmt(r["sim_time_bias_aware_s"], "{:.3g}"), _fmt(r["ratio_bias_aware"], "{:.3g}")))
        v = t["limit"]["vs_N"]
        if v:
            print(f"limit vs N (S1, S3 runs at N = {', '.join(f'{n:.3g}' for n in v['N'])}): f̊ = f∞ + c/N with "
                  f"max |c| = {np.max(np.abs(v['c'])):.3g} (max |z| = {v['max_abs_z_c']:.1f}); (b) columns: "
                  "se + |c|/N <= eps; finite nets compared with f∞")
        meas = ", ".join(f"n={m['width']}: err {m['max_abs_err']:.1e}" for m in t["finite_measured"])
        fit = t["finite_fit"]
        print(f"measured seed-means vs limit: {meas}")
        print(f"fit: max |B_a| = {np.max(np.abs(fit['B_a'])):.3g} (se {np.max(fit['B_a_se']):.2g}), "
              f"max s_a = {np.max(fit['s_a']):.3g}, chi²/dof of the 1/n bias model {fit['chi2_dof']:.2f}; "
              f"one seed t(n) = {fit['alpha_s']:.3g} s + {fit['beta_s']:.3g} s·n²")
    if res.get("S2_T15"):
        s2 = res["problems"]["S2"]
        print(f"S2 as run (N = {s2['N']}, G = {s2['groups']}, {s2['threads']} threads): largest T in 15 min ≈ "
              f"{res['S2_T15']['T_max']} (extrapolated from its per-step times, a + b·(K+J))")
    print("\ntargets (measured, not asserted):")
    for tg in res["targets"]:
        mark = {True: "MET", False: "not met", None: "n/a"}[tg["met"]]
        print(f"  [{mark:>7}] {tg['target']}: {_fmt(tg['value'])} (threshold {tg['threshold']}; {tg['note']})")


# ------------------------------------------------------------ driver
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description="zlimit performance benchmark (S1, S2, S3, TTA)")
    ap.add_argument("--quick", action="store_true", help="much smaller sizes, < 5 minutes")
    ap.add_argument("--tiny", action="store_true", help="smoke-test sizes, < 30 s (or ZLIMIT_BENCH_TINY=1)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--only", default="S1,S2,S3,TTA", help="comma-separated subset of S1,S2,S3,TTA")
    ap.add_argument("--threads", type=int, default=None, help="threads of the main runs (default min(2, cores))")
    ap.add_argument("--groups", type=int, default=None, help="G (default 8; 2 in --tiny)")
    ap.add_argument("--s2-steps", type=int, default=None, help="override S2's T (the 15-minute T is extrapolated)")
    ap.add_argument("--s3-N", default=None, help="override the S3 particle counts, comma-separated")
    ap.add_argument("--s3-T", default=None, help="override the S3 step counts, comma-separated")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child_main(*args.child)
        return {}
    mode = "tiny" if (args.tiny or os.environ.get("ZLIMIT_BENCH_TINY") == "1") else ("quick" if args.quick else "full")
    Z = SIZES[mode]
    only = {s.strip().upper() for s in args.only.split(",") if s.strip()}
    bad = only - {"S1", "S2", "S3", "TTA"}
    if bad:
        ap.error(f"--only takes S1,S2,S3,TTA; got {sorted(bad)}")
    G = args.groups or Z["groups"]
    minfo = machine_info()
    main_threads = args.threads or max(1, min(2, minfo["cpus_usable"] or 1))
    s3N = tuple(int(float(v)) for v in args.s3_N.split(",")) if args.s3_N else Z["S3_N"]
    s3T = tuple(int(v) for v in args.s3_T.split(",")) if args.s3_T else Z["S3_T"]
    t_start = time.perf_counter()
    res = {"schema": 1, "created": _dt.datetime.now().isoformat(timespec="seconds"), "mode": mode,
           "argv": sys.argv[1:] if argv is None else list(argv), "machine": minfo, "versions": versions(),
           "git": git_info(), "assumptions": {
               "passes_minimal": 1, "passes_algorithm": ALG_PASSES,
               "bytes_per_step": "sum over hidden matrices of (K+J)*2*N_g*itemsize, K, J mean of step start/end",
               "bandwidth": "np.copyto median, read+write bytes per second",
               "per_step_time": "start(t+1) - start(t) of _Group.forward, median over groups",
               "tta_sim": "N(eps) = N0 (se0/eps)^2, at least N_min = 10 K_cap G; time linear in N",
               "tta_finite": "max_a |B_a|/n + s_a/sqrt(n S) <= eps; t(n) = alpha + beta n^2"}}
    print(f"zlimit benchmark, mode {mode}: {minfo.get('cpu_model')}, {minfo['cpus_usable']} cores, "
          f"{minfo.get('mem_total_bytes', 0) / 2**30:.1f} GiB; threads {main_threads}", flush=True)
    res["bandwidth"] = copy_bandwidth(Z["copy_mib"])
    res["calibration"] = calibrate(*Z["calib"])
    B = res["bandwidth"]["GBps_read_plus_write"] * 1e9
    res["threads"] = {"main": main_threads, "env": ["NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                    "MKL_NUM_THREADS"]}

    # ---- plan jobs: (label, spec, threads)
    S1 = dict(problem="S1", groups=G, warm_N=Z["warm_N"], **Z["S1"])
    plan: list = []
    need_s1 = bool(only & {"S1", "S3", "TTA"})
    if need_s1:
        plan.append(("S1", S1, main_threads))
        if "S1" in only and main_threads != 1:
            plan.append(("S1/1thr", S1, 1))
    if "S2" in only:
        s2 = dict(problem="S2", groups=G, warm_N=Z["warm_N"], **Z["S2"])
        if args.s2_steps:
            s2["T"] = args.s2_steps
        plan.append(("S2", s2, main_threads))
    if "S3" in only:
        for N in s3N:
            if N != S1["N"]:
                plan.append((f"S3/N={N}", dict(S1, N=N), main_threads))
        for T in s3T:
            if T != S1["T"]:
                plan.append((f"S3/T={T}", dict(S1, T=T), main_threads))
    if "TTA" in only:
        plan.append(("TTA/finite", dict(kind="finite", T=S1["T"], widths=Z["widths"], seeds=Z["seeds"]),
                     main_threads))

    raw: dict = {}
    if mode == "tiny":  # one child per thread setting
        for thr in sorted({p[2] for p in plan}):
            sel = [p for p in plan if p[2] == thr]
            for (label, _, _), r in zip(sel, run_child([dict(p[1], threads=thr) for p in sel], thr)):
                raw[label] = r
    else:
        for label, spec, thr in plan:
            t0 = time.perf_counter()
            print(f"  running {label} ...", end="", flush=True)
            raw[label] = run_child([dict(spec, threads=thr)], thr)[0]
            print(f" {time.perf_counter() - t0:.1f} s", flush=True)

    # ---- derived numbers
    specs = {label: spec for label, spec, _ in plan}
    dgemm = res.get("calibration", {}).get("dgemm_GFlops_1thread")
    res["problems"] = {label: summarise(raw[label], specs[label], B, dgemm)
                       for label in raw if label != "TTA/finite"}
    if "S1" in res["problems"] and "S1/1thr" in res["problems"]:
        w1, w2 = res["problems"]["S1/1thr"]["wall_s"], res["problems"]["S1"]["wall_s"]
        res["threads"].update({"wall_1": w1, "wall_main": w2, "speedup": w1 / w2})
    if "S3" in only:
        S3 = {}
        ptsN = sorted((spec["N"], res["problems"][l]) for l, spec in specs.items()
                      if l in ("S1",) or l.startswith("S3/N"))
        ptsN = [(N, p) for N, p in ptsN if N in s3N]
        if len(ptsN) >= 2:
            per = np.array([p["wall_s"] / N for N, p in ptsN])
            S3["N"] = {"N": [N for N, _ in ptsN], "wall_s": [p["wall_s"] for _, p in ptsN],
                       "slope": _loglog_slope([N for N, _ in ptsN], [p["wall_s"] for _, p in ptsN]),
                       "wall_per_particle_s": per.tolist(),
                       "max_dev_per_particle": float(np.max(np.abs(per / np.median(per) - 1))),
                       "peak_rss_bytes": [p["peak_rss_bytes"] for _, p in ptsN]}
        ptsT = sorted((spec["T"], res["problems"][l]) for l, spec in specs.items()
                      if l in ("S1",) or l.startswith("S3/T"))
        ptsT = [(T, p) for T, p in ptsT if T in s3T]
        if len(ptsT) >= 2:
            S3["T"] = {"T": [T for T, _ in ptsT], "wall_s": [p["wall_s"] for _, p in ptsT],
                       "slope": _loglog_slope([T for T, _ in ptsT], [p["wall_s"] for _, p in ptsT]),
                       "step_last_s": [p["step_last_s"] for _, p in ptsT],
                       "kj_last": [p["kj_last"] for _, p in ptsT],
                       "last_step_vs_K_exponent": _loglog_slope([p["kj_last"] or 0 for _, p in ptsT],
                                                                [p["step_last_s"] or 0 for _, p in ptsT]),
                       "peak_rss_bytes": [p["peak_rss_bytes"] for _, p in ptsT]}
        res["S3"] = S3
    if "TTA" in only and raw.get("S1", {}).get("se_last"):
        sweep = [(spec["N"], raw[l]["f_last"], raw[l]["se_last"]) for l, spec in specs.items()
                 if (l == "S1" or l.startswith("S3/N")) and raw.get(l, {}).get("se_last")]
        res["tta"] = tta(raw["S1"], raw["TTA/finite"], S1, minfo.get("mem_total_bytes", 2**34), sweep)
    if "S2" in raw:
        res["S2_T15"] = s2_largest_T(res["problems"]["S2"], raw["S2"], BUDGET_S2_S)
    if "S1" not in only and "S1" in res["problems"]:  # run only as an input of S3/TTA: keep it, but label it
        res["problems"]["S1"]["note"] = "run as the shared point of S3/TTA"
    res["raw"] = raw
    res["targets"] = targets(res)
    res["total_wall_s"] = time.perf_counter() - t_start
    print_table(res)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    path = out / f"{stamp}.json"
    k = 1
    while path.exists():  # two runs within one second
        path, k = out / f"{stamp}-{k}.json", k + 1
    path.write_text(json.dumps(res, indent=1, default=float))
    res["path"] = str(path)
    print(f"\nwrote {path} (total {res['total_wall_s']:.1f} s)")
    return res


if __name__ == "__main__":
    main()
