"""Measurement: child processes, peak memory, step times, calibration, machine, versions, git.

* Every job runs in a fresh child process (``run_child``: ``python measure.py SPEC OUT``)
  with NUMBA_NUM_THREADS = OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = MKL_NUM_THREADS =
  threads, so that its peak memory is its own. The peak is the child's VmHWM
  (/proc/self/status), reset at the start of each job through /proc/self/clear_refs;
  the ``ru_maxrss`` the parent gets from ``os.wait4`` is kept too
  (``ru_maxrss_wait4_bytes``), but on Linux it carries the parent's peak over fork +
  exec. A warm-up simulation of the same model compiles numba before the timing;
  ``base_rss_bytes`` is the resident memory after it.
* Step times come from the library's hook ``simulate(..., on_step=...)``, called as
  ``on_step(group, t)`` after step t of each group from the thread that runs it. Step t
  of a group lasts from the previous call on that thread (its step t − 1, the end of
  the group the thread ran before, or the start of ``simulate``) to this call; step 0
  therefore includes the setup of the group. Steps 0..T−1 are full steps (forward,
  readout, records, backward, update); step T, forward only, is left out. The basis
  sizes K, J held after each step are ``run.bases["size_fwd{l}"]``/``["size_bwd{l}"]``.
* ``cores_used`` = CPU time of the child during ``simulate`` ÷ its wall time.
* Calibration, in the parent: ``copy_bandwidth`` (median np.copyto of a float64 array,
  read + write bytes per second) and ``calibrate`` (a thin product U Xᵀ, the engine's
  basic operation, on one BLAS thread: its read rate, and the speed-up of two such
  streams on two threads, the most a 2-thread run can get on the machine now).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
THREAD_VARS = ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


# ------------------------------------------------------------ memory of this process
def _ru_maxrss() -> int:
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


def reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> tuple[int, str]:
    """(peak resident bytes, where from): VmHWM, else ru_maxrss."""
    hwm = _vm("VmHWM")
    return (hwm, "VmHWM") if hwm is not None else (_ru_maxrss(), "ru_maxrss")


# ------------------------------------------------------------ step times
class StepClock:
    """An ``on_step`` hook: records (group, t, thread, time) of every call."""

    def __init__(self):
        self.events: list = []
        self.start = time.perf_counter()

    def __call__(self, group: int, t: int) -> None:
        self.events.append((group, t, threading.get_ident(), time.perf_counter()))


def step_durations(events, start: float, steps: int) -> np.ndarray:
    """(G, steps) durations of steps 0..steps-1 per group from StepClock events (module doc)."""
    last: dict = {}  # thread -> time of its previous call
    ends: dict = {}
    for g, t, tid, ts in sorted(events, key=lambda e: e[3]):
        ends.setdefault(g, {})[t] = ts - last.get(tid, start)
        last[tid] = ts
    return np.array([[ends[g][t] for t in range(steps)] for g in sorted(ends)])


def basis_sizes(bases: dict) -> np.ndarray:
    """(G, T+1): directions held after each step, summed over every basis (Σ K + J)."""
    from zlimit._results import parse_key

    return sum(v for k, v in bases.items() if parse_key(k)[2] == "size").astype(float)


# ------------------------------------------------------------ child jobs
def _simulate_job(job: dict) -> dict:
    import zlimit
    from analysis import per_step
    from problems import problem
    from zlimit._results import parse_key

    model, X, y = problem(job["problem"])
    T, N, G = job["T"], job["N"], job["groups"]
    reset = reset_peak()
    zlimit.simulate(model, X, y, steps=2, particles=job["warm_N"], groups=2, progress=False)  # compile numba
    base_rss = _vm("VmRSS") or _ru_maxrss()
    estimate = zlimit.estimate_memory(model, X.shape[0], X.shape[0], T, N, G, [np.arange(X.shape[0])] * T,
                                      threads=job["threads"])
    load0 = os.getloadavg()[0]
    clock = StepClock()
    c0, t0 = time.process_time(), time.perf_counter()
    run = zlimit.simulate(model, X, y, steps=T, particles=N, groups=G, progress=False, on_step=clock)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak, how = peak_rss()
    sizes = basis_sizes(run.bases)
    durations = step_durations(clock.events, clock.start, T)
    se = run.outputs_se
    res = {"wall_s": wall, "cpu_s": cpu, "cores_used": cpu / wall, "loadavg_1min": [load0, os.getloadavg()[0]],
           "base_rss_bytes": base_rss, "estimate_memory_bytes": int(estimate),
           "peak_rss_bytes": peak, "peak_rss_source": how, "peak_reset": reset, "ru_maxrss_self_bytes": _ru_maxrss(),
           "f_last": run.outputs[-1].tolist(), "se_last": None if se is None else se[-1].tolist(),
           "loss_first": float(run.loss[0]), "loss_last": float(run.loss[-1]),
           "directions_max": int(max(v.max() for k, v in run.bases.items() if parse_key(k)[2] == "size")),
           "step_s_per_group": durations.tolist()}
    item = np.dtype(run.meta["dtype"]).itemsize
    res.update(per_step(durations, sizes[:, :T], N // G, item))
    return res


def _finite_job(job: dict) -> dict:
    import zlimit
    from problems import problem

    model, X, y = problem("S1")
    zlimit.train_finite(model, X, y, width=16, steps=2, seed=0, progress=False)  # compile
    rows = []
    for n, S in zip(job["widths"], job["seeds"]):
        outs, secs = [], []
        for s in range(S):
            t0 = time.perf_counter()
            r = zlimit.train_finite(model, X, y, width=n, steps=job["T"], seed=s, progress=False)
            secs.append(time.perf_counter() - t0)
            outs.append(r.outputs[-1])
        rows.append({"width": n, "seeds": S, "seconds_per_seed": float(np.median(secs)),
                     "f_last": np.array(outs).tolist()})
    peak, how = peak_rss()
    return {"rows": rows, "peak_rss_bytes": peak, "peak_rss_source": how}


def child_main(spec_path: str, out_path: str) -> None:
    warnings.simplefilter("ignore")  # "particles >> directions" at small N is expected here
    jobs = json.loads(Path(spec_path).read_text())
    results = []
    for job in jobs:
        results.append((_finite_job if job.get("kind") == "finite" else _simulate_job)(job))
        Path(out_path).write_text(json.dumps(results))  # after every job: a crash keeps the rest


def thread_env(threads: int) -> dict:
    env = dict(os.environ, **{v: str(threads) for v in THREAD_VARS})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    return env


def run_child(jobs: list, threads: int) -> list:
    """Run ``jobs`` in one fresh process; attach its os.wait4 ru_maxrss and the threads to each result."""
    with tempfile.TemporaryDirectory() as tmp:
        spec, out, logf = Path(tmp, "spec.json"), Path(tmp, "out.json"), Path(tmp, "log.txt")
        spec.write_text(json.dumps(jobs))
        with open(logf, "w") as log:
            p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(spec), str(out)],
                                 env=thread_env(threads), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            _, status, usage = os.wait4(p.pid, 0)
            code = os.waitstatus_to_exitcode(status)
        results = json.loads(out.read_text()) if out.exists() else []
        if code != 0 or len(results) != len(jobs):
            raise RuntimeError(f"benchmark child failed (exit {code}) on jobs {jobs}:\n{logf.read_text()[-3000:]}")
    for r in results:
        r["ru_maxrss_wait4_bytes"] = int(usage.ru_maxrss * 1024)
        r.setdefault("peak_rss_bytes", r["ru_maxrss_wait4_bytes"])
        r["rss_shared_child"] = len(jobs) > 1
        r["threads"] = threads
    return results


# ------------------------------------------------------------ calibration
def copy_bandwidth(mib: int, repeats: int = 7) -> dict:
    """Median np.copyto bandwidth of a ``mib`` MiB float64 array."""
    src = np.ones(mib * 2**20 // 8)
    dst = np.zeros_like(src)
    np.copyto(dst, src)  # touched, so page faults are not timed
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    t = float(np.median(times))
    return {"array_bytes": int(src.nbytes), "repeats": repeats, "median_s": t, "times_s": times,
            "GBps_read_plus_write": 2 * src.nbytes / t / 1e9, "GBps_copied": src.nbytes / t / 1e9}


def calibrate(K: int, N: int, b: int = 10, products: int = 20, repeats: int = 3) -> dict:
    """A thin product U Xᵀ, U (K, N), X (b, N), on one BLAS thread: alone and as two streams."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    U = [rng.standard_normal((K, N)) for _ in range(2)]
    X = rng.standard_normal((b, N))

    def work(i):
        for _ in range(products):
            U[i] @ X.T

    single, serial, two = [], [], []
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(2) as pool:
        work(0)
        for _ in range(repeats):
            for out, fn in ((single, lambda: work(0)), (serial, lambda: (work(0), work(1))),
                            (two, lambda: list(pool.map(work, (0, 1))))):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
    t1 = float(np.median(single))
    return {"K": K, "N": N, "b": b, "products": products, "repeats": repeats,
            "thin_gemm_GBps_1thread": products * U[0].nbytes / t1 / 1e9,
            "thin_gemm_GFlops_1thread": products * 2 * K * N * b / t1 / 1e9,
            "two_stream_speedup": float(np.median(serial) / np.median(two)), "loadavg": list(os.getloadavg())}


# ------------------------------------------------------------ machine, versions, git
def machine_info() -> dict:
    from zlimit._memory import available_memory  # what simulate checks its memory estimate against
    info = {"platform": platform.platform(), "machine": platform.machine(), "cpu_model": platform.processor()}
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu_model"] = next(l.split(":", 1)[1].strip() for l in fh if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info["cpu_count"] = os.cpu_count()
    info["cpus_usable"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info["mem_total_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    info["mem_available_bytes"] = int(available_memory())
    info["loadavg"] = list(os.getloadavg())
    return info


def versions() -> dict:
    import numba
    import scipy

    import zlimit

    out = {"python": sys.version.split()[0], "numpy": np.__version__, "scipy": scipy.__version__,
           "numba": numba.__version__, "zlimit": zlimit.__version__, "zlimit_path": os.path.dirname(zlimit.__file__)}
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
    src = {f.name: hashlib.sha256(f.read_bytes()).hexdigest()[:16]  # the engine changes between commits
           for f in sorted((ROOT / "src" / "zlimit").glob("*.py"))}
    return {"revision": git("rev-parse", "HEAD"), "dirty": bool(status),
            "status": status.splitlines() if status else [], "src_sha256_16": src}


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    child_main(*sys.argv[1:3])
