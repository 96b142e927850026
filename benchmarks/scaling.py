"""MPI scale-out: strong and weak scaling, per-rank memory and communication, and a cost model.

What ``simulate(..., comm=MPI.COMM_WORLD)`` gains and costs on R ranks: wall time,
each rank's peak memory and time in reductions, the latency and bandwidth of a
reduction, and a model of the step time for R up to 64 ranks.

The paper's problem (S4, ``problems.paper``: digits 0/1 of scikit-learn, 5 per class,
m = 10, d = 64, 10 held-out images as ``X_eval``, depth-3 SiLU, σ = √2, lr 0.1, full
batch) for T steps in G = 4 groups with ``threads=1`` per rank, run by
``zlimit.simulate(..., comm=MPI.COMM_WORLD)`` under ``mpiexec -n R``.

The driver (this script without an MPI launcher) runs ``mpiexec -n R python scaling.py
--worker`` for each R of ``--ranks`` in turn, collects each R's JSON and prints and saves
the tables. Each worker, after a warm-up run that compiles numba:

* **strong**: N = ``--particles`` for every R; **weak**: N = ``--weak-particles`` × R
  (N/R fixed; a weak run with the same N as a strong one is the same run, done once);
  at R = 1 also ``comm=None`` (no MPI at all) at the strong N. Each ``--repeats``
  times, the configurations interleaved; wall = the slowest rank's seconds from a
  Barrier to the return of ``simulate``; the tables quote medians over the repeats.
* **memory**: each rank's VmHWM (/proc/self/status, reset through
  /proc/self/clear_refs before each run; ``ru_maxrss`` where that is missing),
  gathered to rank 0, next to ``zlimit.estimate_memory(..., threads=1, ranks=R)``.
* **communication**: ``zlimit._mpi.Shard.sum`` (a Reduce to rank 0 and a Bcast) and
  ``Shard.any`` (an allreduce of a bool) are wrapped in this process by timers that
  count calls, bytes (the local array) and seconds, by call site. The seconds include
  the wait for the slowest rank. A "step" below is one SGD step of the whole run (all
  G groups; with threads=1 they run one after the other): per-step figures are totals
  over T.
* **latency and bandwidth**: ``Shard.sum`` on float64 messages of 8 B .. ``--sweep-max``
  bytes, the median over repeats of a timed loop (the slowest rank's median), fitted by
  t = α + β·bytes with relative weights (least squares on (t_fit − t)/t, α, β >= 0), so
  that the short messages set α and the long ones β.

The cost model (printed as assumptions, and in the JSON) predicts one step on R ranks:

    step(R) = compute_1 / R + n_red · (o + 2⌈log2 R⌉ · α) + 2 β · bytes_step      (R > 1)

compute_1 the measured single-process step (``comm=None`` wall / T), n_red the
reductions per step and bytes_step their bytes per step (measured at R = 1): each
reduction a Reduce and a Bcast tree of ⌈log2 R⌉ levels, each moving its message once,
plus o, the cost of one ``Shard.sum`` on a 1-rank communicator (mpi4py and NumPy
around the MPI calls, measured by the sweep at R = 1; 0 when the run has no R = 1).
α and β are per tree level: from the sweep at the largest R run, whose t = α_R +
β_R·bytes is one whole Shard.sum, α = (α_R − o)/(2⌈log2 R⌉) and β = β_R/2. It is
evaluated with the α, β measured here (ranks on one machine) and with
cluster-like ones given by ``--alpha``/``--beta`` (default 2e-6 s and 1e-10 s/B, an
InfiniBand-class network: assumptions, not measurements), for R = 1 .. 64, at the strong
N and at ``--model-particles`` (compute_1 scaled linearly in N, the reductions as
measured: same steps and bases). It leaves out load imbalance and OS noise, which every
one of the n_red synchronisations per step exposes.

    python benchmarks/scaling.py                  # R = 1, 2; N = 200 000, N/R = 100 000 weak, T = 30, 3 repeats
    python benchmarks/scaling.py --quick          # N = 40 000, T = 10, 2 repeats (about a minute)
    python benchmarks/scaling.py --tiny           # N = 4 000, T = 2 (the smoke test; or ZLIMIT_BENCH_TINY=1)
    python benchmarks/scaling.py --ranks 1,2,4 --mpiexec "srun"   # on a cluster node
    python benchmarks/scaling.py --from RESULT.json --alpha 1e-6 --beta 5e-11   # the model again, no runs
    mpiexec -n 2 python benchmarks/scaling.py     # one R only: its tables, no speed-ups
    options: --particles N --weak-particles N --groups G --steps T --repeats K --sweep-max BYTES
    --alpha S --beta S_PER_BYTE --model-particles N --model-ranks 1,2,..,64 --json PATH

Prints the tables and writes benchmarks/results/scaling_<timestamp>.json (or ``--json``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from problems import mode_of  # noqa: E402
from report import save_result  # noqa: E402

SIZES = {
    "full": dict(particles=200_000, weak_particles=100_000, steps=30, repeats=3, sweep_max=2**23, sweep_repeats=25),
    "quick": dict(particles=40_000, weak_particles=20_000, steps=10, repeats=2, sweep_max=2**20, sweep_repeats=11),
    "tiny": dict(particles=4_000, weak_particles=2_000, steps=2, repeats=1, sweep_max=2**20, sweep_repeats=3),
}
GROUPS = 4
CLUSTER_ALPHA, CLUSTER_BETA = 2e-6, 1e-10  # s, s/byte: InfiniBand-class (an assumption)
MODEL_RANKS = (1, 2, 4, 8, 16, 32, 64)
MODEL_PARTICLES = 10_000_000
#: functions between a reduction and the engine code that asks for it (the call site
#: reported is the first frame above them)
_PASS_THROUGH = {"gram", "variance", "_reserve", "reserve", "empirical_gram", "<listcomp>", "<genexpr>", "<lambda>"}
_LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")


# ------------------------------------------------------------------ the timers around Shard.sum / Shard.any
class CommMeter:
    """Timers around ``zlimit._mpi.Shard.sum`` and ``Shard.any`` (class attributes,
    replaced in this process): calls, bytes and seconds of the reductions made over a
    communicator, by call site, while ``on``."""

    def __init__(self):
        from zlimit import _mpi

        self.sites: dict[str, list] = {}
        self.on = False
        self._lock = threading.Lock()
        self.orig_sum, self.orig_any = _mpi.Shard.sum, _mpi.Shard.any
        meter = self

        def timed_sum(shard, x):
            if not meter.on or shard.comm is None or np.size(x) == 0:
                return meter.orig_sum(shard, x)
            start = time.perf_counter()
            out = meter.orig_sum(shard, x)
            meter._add(time.perf_counter() - start, int(np.asarray(x).nbytes), "sum")
            return out

        def timed_any(shard, flag):
            if not meter.on or shard.comm is None:
                return meter.orig_any(shard, flag)
            start = time.perf_counter()
            out = meter.orig_any(shard, flag)
            meter._add(time.perf_counter() - start, 1, "any")
            return out

        _mpi.Shard.sum, _mpi.Shard.any = timed_sum, timed_any

    def _add(self, seconds: float, nbytes: int, kind: str) -> None:
        frame, chain = sys._getframe(2), []  # 0 _add, 1 the timer, 2 its caller
        while frame is not None and frame.f_code.co_name in _PASS_THROUGH:
            chain.append(frame.f_code.co_name)
            frame = frame.f_back
        where = frame.f_code.co_name if frame is not None else "?"
        named = [c for c in chain if not c.startswith("<")]
        site = f"{kind}:{where}" + (f" (via {named[0]})" if named else "")
        with self._lock:
            row = self.sites.setdefault(site, [0, 0, 0.0])
            row[0] += 1
            row[1] += nbytes
            row[2] += seconds

    def reset(self) -> None:
        with self._lock:
            self.sites = {}

    def totals(self) -> dict:
        with self._lock:
            sites = {k: {"calls": v[0], "bytes": v[1], "seconds": v[2]} for k, v in self.sites.items()}
        return {"calls": sum(s["calls"] for s in sites.values()), "bytes": sum(s["bytes"] for s in sites.values()),
                "seconds": sum(s["seconds"] for s in sites.values()), "sites": sites}


# ------------------------------------------------------------------ latency and bandwidth
def fit_alpha_beta(nbytes, seconds) -> dict:
    """t = α + β·bytes, least squares on the relative error (t_fit − t)/t with α, β >= 0."""
    from scipy.optimize import nnls

    b, t = np.asarray(nbytes, dtype=float), np.asarray(seconds, dtype=float)
    (alpha, beta), _ = nnls(np.stack([1 / t, b / t], axis=1), np.ones_like(t))
    rel = (alpha + beta * b) / t - 1
    return {"alpha_s": float(alpha), "beta_s_per_byte": float(beta),
            "bandwidth_GBps": float(1e-9 / beta) if beta > 0 else math.inf,
            "max_rel_residual": float(np.max(np.abs(rel)))}


def sweep(world, shard_sum, max_bytes: int, repeats: int) -> dict:
    """Seconds of one ``Shard.sum`` (Reduce + Bcast) of n float64 for n = 1, 2, 4, ..
    max_bytes/8: per size the median over ``repeats`` timed loops, the slowest rank's."""
    from zlimit._mpi import Shard

    comm = world.Dup()
    try:
        shard = Shard.of(2 * comm.Get_size(), comm)
        sizes = [2**k for k in range(int(math.log2(max(max_bytes // 8, 1))) + 1)]
        medians = []
        for n in sizes:
            x = np.ones(n)
            inner = int(min(100, max(2, 2**17 // n)))
            shard_sum(shard, x)  # first touch
            times = []
            for _ in range(repeats):
                comm.Barrier()
                start = time.perf_counter()
                for _ in range(inner):
                    shard_sum(shard, x)
                times.append((time.perf_counter() - start) / inner)
            medians.append(statistics.median(times))
        slowest = np.max(np.array(comm.allgather(medians)), axis=0)
    finally:
        comm.Free()
    nbytes = [8 * n for n in sizes]
    return {"bytes": nbytes, "seconds": slowest.tolist(), "repeats": repeats, **fit_alpha_beta(nbytes, slowest)}


# ------------------------------------------------------------------ the worker: one R, under mpiexec
def _run_once(world, simulate_kw: dict, comm, meter: CommMeter) -> list | None:
    """One simulate call on every rank: the per-rank records, gathered on rank 0."""
    import zlimit
    from measure import _vm, peak_rss, reset_peak

    meter.reset()
    reset_peak()
    base_rss = _vm("VmRSS")
    world.Barrier()
    load = os.getloadavg()[0]
    meter.on = True
    start = time.perf_counter()
    run = zlimit.simulate(**simulate_kw, comm=comm)
    wall = time.perf_counter() - start
    meter.on = False
    peak, source = peak_rss()
    rec = {"wall_s": wall, "peak_rss_bytes": peak, "peak_rss_source": source, "base_rss_bytes": base_rss,
           "loadavg_1min": load,
           "comm": meter.totals()}
    if run is not None:
        rec["peak_basis_bytes"] = int(run.meta["peak_basis_bytes"])
        rec["directions_max"] = int(max(np.max(v) for k, v in run.bases.items() if k.startswith("size_")))
    return world.gather(rec, root=0)


def worker(args, size: dict) -> dict | None:
    """This R's runs and sweep; rank 0 returns them (the other ranks None)."""
    from mpi4py import MPI

    import zlimit
    from measure import machine_info
    from problems import paper

    world = MPI.COMM_WORLD
    R, rank = world.Get_size(), world.Get_rank()
    meter = CommMeter()
    model, X, y, X_eval, _ = paper()
    G, T = size["groups"], size["steps"]
    base = dict(model=model, X=X, y=y, X_eval=X_eval, steps=T, groups=G, seed=0, threads=1, progress=False)
    warnings.simplefilter("ignore", zlimit.MonteCarloWarning)  # small tiny-mode groups; timing only
    if not args.tiny:  # compile numba before the timing (in the tiny smoke test the first run does)
        zlimit.simulate(**{**base, "steps": 2, "particles": max(400, 4 * G * R)}, comm=world)
    plan = {("strong", size["particles"]): "mpi", ("weak", size["weak_particles"] * R): "mpi"}
    if R == 1:
        plan[("none", size["particles"])] = "none"
    unique = sorted({(N, how) for (_, N), how in plan.items()})
    records = {key: [] for key in unique}
    for _ in range(size["repeats"]):  # interleaved, so that a change of load hits every configuration
        for N, how in unique:
            out = _run_once(world, {**base, "particles": N}, world if how == "mpi" else None, meter)
            if rank == 0:
                records[(N, how)].append(out)
    latency = sweep(world, meter.orig_sum, size["sweep_max"], size["sweep_repeats"])
    if rank != 0:
        return None
    m, M = X.shape[0], X.shape[0] + X_eval.shape[0]
    runs = {}
    for (N, how), reps in records.items():
        ranks = 1 if how == "none" else R
        runs[f"{how}:{N}"] = {
            "particles": N, "comm": how, "ranks": ranks, "particles_per_group_per_rank": N // G // ranks,
            "estimate_memory_bytes": zlimit.estimate_memory(model, m=m, M=M, steps=T, particles=N, groups=G,
                                                            threads=1, ranks=ranks),
            "repeats": reps}
    from zlimit._memory import BASELINE_BYTES

    return {"ranks": R, "machine": machine_info(), "zlimit": zlimit.__version__, "baseline_bytes": BASELINE_BYTES,
            "mpi_library": MPI.Get_library_version().splitlines()[0].strip(), "mpi4py": _mpi4py_version(),
            "groups": G, "steps": T, "m": m, "M": M, "plan": {f"{k}:{N}": f"{how}:{N}" for (k, N), how in plan.items()},
            "runs": runs, "latency": latency}


def _mpi4py_version() -> str:
    import mpi4py

    return mpi4py.__version__


# ------------------------------------------------------------------ summaries of the per-R results
def summarise_run(run: dict, steps: int) -> dict:
    """Medians over the repeats of one configuration: wall (slowest rank), and per rank
    the time in reductions, its fraction, reductions and bytes per step, peak memory."""
    reps = run["repeats"]
    walls = [max(r["wall_s"] for r in rep) for rep in reps]
    wall = statistics.median(walls)
    per_rank = []
    for k in range(len(reps[0])):
        comm = [rep[k]["comm"] for rep in reps]
        secs = statistics.median(c["seconds"] for c in comm)
        calls = statistics.median(c["calls"] for c in comm)
        nbytes = statistics.median(c["bytes"] for c in comm)
        per_rank.append({"rank": k, "comm_s": secs, "comm_fraction": secs / wall, "reductions": calls,
                         "reductions_per_step": calls / steps, "bytes_per_step": nbytes / steps,
                         "us_per_reduction": 1e6 * secs / calls if calls else None,
                         "peak_rss_bytes": max(rep[k]["peak_rss_bytes"] for rep in reps),
                         "run_rss_bytes": max(rep[k]["peak_rss_bytes"] - (rep[k]["base_rss_bytes"] or 0)
                                              for rep in reps)})
    first = reps[0][0]
    sites = first["comm"]["sites"]
    return {"particles": run["particles"], "comm": run["comm"], "ranks": run["ranks"],
            "particles_per_group_per_rank": run["particles_per_group_per_rank"], "wall_s": wall,
            "wall_s_min": min(walls), "wall_s_repeats": walls, "loadavg_1min": [rep[0]["loadavg_1min"] for rep in reps],
            "estimate_memory_bytes": run["estimate_memory_bytes"], "per_rank": per_rank,
            "comm_fraction_max": max(p["comm_fraction"] for p in per_rank),
            "peak_basis_bytes": first.get("peak_basis_bytes"), "directions_max": first.get("directions_max"),
            "sites_rank0": {k: dict(v, per_step=v["calls"] / steps) for k, v in
                            sorted(sites.items(), key=lambda kv: -kv[1]["calls"])}}


def cost_model(compute_1: float, n_red: float, bytes_step: float, alpha: float, beta: float, ranks,
               overhead: float = 0.0) -> list:
    """Predicted seconds per step on R ranks (module docstring), speed-up and efficiency."""
    rows = []
    for R in ranks:
        levels = math.ceil(math.log2(R)) if R > 1 else 0
        comm = (n_red * (overhead + 2 * levels * alpha) + 2 * beta * bytes_step) if R > 1 else 0.0
        step = compute_1 / R + comm
        rows.append({"ranks": R, "compute_s": compute_1 / R, "comm_s": comm, "step_s": step,
                     "speedup": compute_1 / step, "efficiency": compute_1 / step / R})
    return rows


def min_particles(compute_per_particle: float, red_per_group: float, bytes_per_group: float, alpha: float,
                  beta: float, R: int, efficiency: float, overhead: float = 0.0) -> float:
    """Particles per group per rank that keep a step at ``efficiency`` on R ranks: one
    group's compute on this rank, n·c (c: seconds per particle per step, compute_1/N),
    against that group's reductions per step; independent of G."""
    levels = math.ceil(math.log2(R)) if R > 1 else 0
    comm = red_per_group * (overhead + 2 * levels * alpha) + 2 * beta * bytes_per_group
    return comm * efficiency / (1 - efficiency) / compute_per_particle


def analyse(per_r: dict, size: dict, args) -> dict:
    """The driver's tables from the per-R results (keys: R)."""
    Rs = sorted(per_r)
    T, G = size["steps"], size["groups"]
    summ = {R: {k: summarise_run(v, T) for k, v in per_r[R]["runs"].items()} for R in Rs}
    pick = lambda R, kind: summ[R][per_r[R]["plan"][f"{kind}:{_n(kind, size, R)}"]]
    strong = [dict(pick(R, "strong"), kind="strong") for R in Rs]
    weak = [dict(pick(R, "weak"), kind="weak") for R in Rs]
    if strong[0]["ranks"] == 1:  # speed-up and efficiency against R = 1 (its own 1-rank communicator)
        for r in strong:
            r["speedup"] = strong[0]["wall_s"] / r["wall_s"]
            r["efficiency"] = r["speedup"] / r["ranks"]
        for r in weak:  # N ∝ R: ideal is the same wall time
            r["efficiency"] = weak[0]["wall_s"] / r["wall_s"]
    nompi = summ[1].get(f"none:{size['particles']}") if 1 in summ else None
    out = {"strong": strong, "weak": weak, "no_mpi": nompi,
           "latency": {str(R): per_r[R]["latency"] for R in Rs}}
    if nompi is not None and strong[0]["ranks"] == 1:
        out["mpi_overhead_at_R1"] = strong[0]["wall_s"] / nompi["wall_s"]
    baseline = per_r[Rs[0]]["baseline_bytes"]
    out["memory"] = [{"kind": r["kind"], "ranks": r["ranks"], "particles": r["particles"], "rank": p["rank"],
                      "peak_rss_bytes": p["peak_rss_bytes"], "run_rss_bytes": p["run_rss_bytes"],
                      "estimate_memory_bytes": r["estimate_memory_bytes"],
                      "estimate_run_bytes": r["estimate_memory_bytes"] - baseline,
                      "peak_basis_bytes": r["peak_basis_bytes"]}
                     for r in strong + weak for p in r["per_rank"]]
    out["communication"] = [{"kind": r["kind"], "ranks": r["ranks"], "particles": r["particles"],
                             "wall_s": r["wall_s"], **p} for r in strong + weak for p in r["per_rank"]]
    # ---- the cost model
    if nompi is not None:
        compute_1, base = nompi["wall_s"] / T, nompi
    else:  # no R = 1 run: rank 0's time outside the reductions at the smallest R, times R
        r0 = strong[0]
        compute_1, base = (r0["wall_s"] - r0["per_rank"][0]["comm_s"]) * r0["ranks"] / T, r0
    ref = strong[0]["per_rank"][0]
    n_red, bytes_step = ref["reductions_per_step"], ref["bytes_per_step"]
    # one Shard.sum on a 1-rank communicator: mpi4py and NumPy around the MPI calls, paid on any network
    overhead = per_r[min(Rs)]["latency"]["alpha_s"] if min(Rs) == 1 else 0.0
    # the model's α and β are per tree level and message: the sweep at R times one whole Shard.sum,
    # t = o + 2⌈log2 R⌉ α + 2 β bytes, so α = (α_R − o) / (2⌈log2 R⌉) and β = β_R / 2
    measured_R = max(Rs)
    lat = per_r[measured_R]["latency"]
    levels = math.ceil(math.log2(measured_R)) if measured_R > 1 else 1
    params = {"measured": {"alpha_s": max(lat["alpha_s"] - overhead, 0.0) / (2 * levels),
                           "beta_s_per_byte": lat["beta_s_per_byte"] / 2,
                           "source": f"the Shard.sum sweep at R = {measured_R} on this machine: "
                                     "(α_R − o)/(2⌈log2 R⌉), β_R/2"},
              "cluster": {"alpha_s": args.alpha, "beta_s_per_byte": args.beta,
                          "source": "assumed (--alpha/--beta): InfiniBand-class network, not measured"}}
    N_strong, N_big = size["particles"], args.model_particles
    c = compute_1 / N_strong  # seconds per particle per step (all groups)
    tables = {}
    for label, N in (("strong", N_strong), ("large", N_big)):
        tables[label] = {name: cost_model(c * N, n_red, bytes_step, p["alpha_s"], p["beta_s_per_byte"],
                                          args.model_ranks, overhead) for name, p in params.items()}
    rule = {name: [{"ranks": R, **{f"eff{int(e * 100)}": min_particles(c, n_red / G, bytes_step / G,
                                                                     p["alpha_s"], p["beta_s_per_byte"], R, e,
                                                                     overhead)
                                   for e in (0.5, 0.9)}} for R in args.model_ranks if R > 1]
            for name, p in params.items()}
    out["model"] = {"compute_1_step_s": compute_1, "compute_from": f"{base['comm']}:{base['particles']}",
                    "compute_per_particle_step_s": c, "reductions_per_step": n_red, "bytes_per_step": bytes_step,
                    "reductions_per_group_step": n_red / G, "overhead_s": overhead, "params": params,
                    "particles": {"strong": N_strong, "large": N_big},
                    "tables": tables, "min_particles_per_group_per_rank": rule,
                    "formula": "step(R) = compute_1/R + n_red*(o + 2*ceil(log2 R)*alpha) + 2*beta*bytes_step (R > 1)"}
    # the reductions' share by call site (rank 0, strong, largest R)
    top = strong[-1]["sites_rank0"]
    total = sum(v["calls"] for v in top.values())
    out["sites"] = {"ranks": strong[-1]["ranks"], "particles": strong[-1]["particles"],
                    "rows": [{"site": k, "calls": v["calls"], "per_step": v["per_step"], "share": v["calls"] / total,
                              "bytes_per_call": v["bytes"] / v["calls"], "seconds": v["seconds"]}
                             for k, v in top.items()]}
    ortho = [r for r in out["sites"]["rows"] if "orthonormalise" in r["site"]]
    out["sites"]["orthonormalise_share"] = sum(r["share"] for r in ortho)
    return out


def _n(kind: str, size: dict, R: int) -> int:
    return size["particles"] if kind == "strong" else size["weak_particles"] * R


# ------------------------------------------------------------------ printing
def _mib(b):
    return f"{b / 2**20:.0f}"


def print_tables(res: dict) -> None:
    s, model = res["settings"], res.get("model")
    print(f"MPI scaling, {res['problem']}: T = {s['steps']}, G = {s['groups']}, threads = 1 per rank; "
          f"{' '.join(res['mpi_library'].split())}, mpi4py {res['mpi4py']}; {res['machine']['cpus_usable']} cores; "
          f"medians of {s['repeats']} (wall = slowest rank; min = best repeat; load = 1-min load average at the "
          "start of each run, median)")
    for kind in ("strong", "weak"):
        rows = res[kind]
        print(f"\n{kind} scaling" + (f" (N = {s['particles']})" if kind == "strong" else
                                     f" (N/R = {s['weak_particles']})"))
        print(f"{'R':>3}{'N':>10}{'N/(G·R)':>9}{'wall s':>9}{'min s':>9}{'speed-up':>10}{'effic.':>8}{'comm %':>8}"
              f"{'load':>6}")
        for r in rows:
            print(f"{r['ranks']:>3}{r['particles']:>10}{r['particles_per_group_per_rank']:>9}{r['wall_s']:>9.2f}"
                  f"{r['wall_s_min']:>9.2f}"
                  f"{_f(r.get('speedup'), '{:.2f}'):>10}{_f(r.get('efficiency'), '{:.2f}'):>8}"
                  f"{100 * r['comm_fraction_max']:>8.1f}{statistics.median(r['loadavg_1min']):>6.1f}")
        if kind == "strong" and res.get("no_mpi"):
            nm = res["no_mpi"]
            print(f"no MPI (comm=None), N = {nm['particles']}: {nm['wall_s']:.2f} s (min {nm['wall_s_min']:.2f}); "
                  f"R = 1 with a 1-rank "
                  f"communicator / no MPI = {res.get('mpi_overhead_at_R1', math.nan):.3f}")
    print("\nper-rank peak memory vs zlimit.estimate_memory(..., threads=1, ranks=R): peak = VmHWM of the rank "
          "(interpreter, MPI and\nleft-overs of earlier runs included), run = peak − VmRSS before the run; "
          "est run = estimate − BASELINE_BYTES; bases = run.meta['peak_basis_bytes']")
    print(f"{'run':>7}{'R':>3}{'N':>10}{'rank':>5}{'peak MiB':>10}{'est MiB':>9}{'run MiB':>9}{'est run':>9}"
          f"{'bases':>7}")
    for r in res["memory"]:
        print(f"{r['kind']:>7}{r['ranks']:>3}{r['particles']:>10}{r['rank']:>5}{_mib(r['peak_rss_bytes']):>10}"
              f"{_mib(r['estimate_memory_bytes']):>9}{_mib(r['run_rss_bytes']):>9}{_mib(r['estimate_run_bytes']):>9}"
              f"{_f(r['peak_basis_bytes'] and r['peak_basis_bytes'] / 2**20, '{:.0f}'):>7}")
    print("\ntime in reductions (Shard.sum + Shard.any, the wait for other ranks included); per step = all groups")
    print(f"{'run':>7}{'R':>3}{'N':>10}{'rank':>5}{'comm s':>9}{'of wall':>8}{'red/step':>9}{'B/step':>10}"
          f"{'µs/red':>8}")
    for r in res["communication"]:
        print(f"{r['kind']:>7}{r['ranks']:>3}{r['particles']:>10}{r['rank']:>5}{r['comm_s']:>9.2f}"
              f"{100 * r['comm_fraction']:>7.1f}%{r['reductions_per_step']:>9.0f}{r['bytes_per_step']:>10.0f}"
              f"{_f(r['us_per_reduction'], '{:.0f}'):>8}")
    st = res["sites"]
    print(f"\nreductions by call site (rank 0, strong, R = {st['ranks']}): orthonormalise "
          f"{100 * st['orthonormalise_share']:.0f} % of them")
    print(f"{'site':<44}{'per step':>9}{'share':>7}{'B/call':>9}{'seconds':>9}")
    for r in st["rows"]:
        print(f"{r['site']:<44}{r['per_step']:>9.1f}{100 * r['share']:>6.1f}%{r['bytes_per_call']:>9.0f}"
              f"{r['seconds']:>9.2f}")
    print("\nShard.sum (Reduce + Bcast) of float64 messages, median µs (slowest rank)")
    lat = res["latency"]
    Rs = sorted(lat, key=int)
    print(f"{'bytes':>10}" + "".join(f"{'R = ' + R:>12}" for R in Rs))
    for i, b in enumerate(lat[Rs[0]]["bytes"]):
        print(f"{b:>10}" + "".join(f"{1e6 * lat[R]['seconds'][i]:>12.1f}" for R in Rs))
    for R in Rs:
        L = lat[R]
        print(f"R = {R}: α = {1e6 * L['alpha_s']:.2f} µs, β = {L['beta_s_per_byte']:.3g} s/B "
              f"({L['bandwidth_GBps']:.2f} GB/s); largest relative misfit {100 * L['max_rel_residual']:.0f} %")
    if model:
        print(f"\ncost model: {model['formula']}")
        print(f"compute_1 = {model['compute_1_step_s']:.3f} s/step measured ({model['compute_from']}), "
              f"{model['reductions_per_step']:.0f} reductions and {model['bytes_per_step']:.0f} B per step measured "
              f"at R = {res['strong'][0]['ranks']}; compute scaled linearly in N; o = "
              f"{1e6 * model['overhead_s']:.2f} µs per reduction (Shard.sum on 1 rank, measured)")
        for name, p in model["params"].items():
            print(f"  {name}: α = {p['alpha_s']:.3g} s, β = {p['beta_s_per_byte']:.3g} s/B ({p['source']})")
        for label, N in model["particles"].items():
            tabs = model["tables"][label]
            print(f"\npredicted step, N = {N:,} (G = {s['groups']})")
            print(f"{'R':>4}{'N/(G·R)':>10}" + "".join(f"{h:>11}" for name in tabs for h in
                                                      (f"{name[:4]} s", "speed-up", "effic.")))
            for i, R in enumerate(model["tables"][label]["measured"]):
                R = R["ranks"]
                cells = []
                for name in tabs:
                    r = tabs[name][i]
                    cells += [f"{r['step_s']:.4g}", f"{r['speedup']:.2f}", f"{r['efficiency']:.2f}"]
                print(f"{R:>4}{N // s['groups'] // R:>10}" + "".join(f"{c:>11}" for c in cells))
        print("\nparticles per group per rank for 50 % / 90 % efficiency (model)")
        rule = model["min_particles_per_group_per_rank"]
        print(f"{'R':>4}" + "".join(f"{name + ' 50%':>16}{name + ' 90%':>16}" for name in rule))
        for i, row in enumerate(next(iter(rule.values()))):
            print(f"{row['ranks']:>4}" + "".join(f"{rule[n][i]['eff50']:>16.0f}{rule[n][i]['eff90']:>16.0f}"
                                                for n in rule))
        print("(α, β of 'cluster' are assumptions; the model leaves out load imbalance and OS noise)")


def _f(v, spec):
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else spec.format(v)


# ------------------------------------------------------------------ the driver
def _mpiexec(spec: str | None) -> list:
    if spec:
        return shlex.split(spec)
    local = Path(sys.executable).parent / "mpiexec"
    found = str(local) if local.exists() else shutil.which("mpiexec")
    if found is None:
        raise SystemExit("no mpiexec found: pip install \"zlimit[mpi]\", or give --mpiexec")
    return [found]


def _size(args) -> dict:
    size = dict(SIZES[mode_of(args.quick, args.tiny)], groups=GROUPS)
    for key in ("particles", "weak_particles", "steps", "repeats", "groups", "sweep_max"):
        if getattr(args, key) is not None:
            size[key] = getattr(args, key)
    return size


def _forward(args) -> list:
    """The worker's options: the driver's sizes."""
    out = ["--tiny"] if args.tiny else ["--quick"] if args.quick else []
    for key in ("particles", "weak_particles", "steps", "repeats", "groups", "sweep_max"):
        if getattr(args, key) is not None:
            out += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    return out


def drive(args, size: dict) -> dict:
    launcher = _mpiexec(args.mpiexec)
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env.setdefault(var, "1")  # one core per rank
    per_r = {}
    with tempfile.TemporaryDirectory() as tmp:
        for R in args.ranks:
            out = Path(tmp) / f"R{R}.json"
            cmd = launcher + ["-n", str(R), sys.executable, str(Path(__file__).resolve()), "--worker",
                              "--json", str(out)] + _forward(args)
            print(f"$ {shlex.join(cmd)}", flush=True)
            start = time.perf_counter()
            proc = subprocess.run(cmd, env=env, cwd=HERE.parent)
            if proc.returncode != 0:
                raise SystemExit(f"R = {R} failed (exit {proc.returncode})")
            per_r[R] = json.loads(out.read_text())
            print(f"  R = {R} done in {time.perf_counter() - start:.0f} s", flush=True)
    first = per_r[min(per_r)]
    res = {"benchmark": "scaling", "machine": first["machine"], "zlimit": first["zlimit"],
           "mpi_library": first["mpi_library"], "mpi4py": first["mpi4py"], "mode": mode_of(args.quick, args.tiny),
           "problem": "paper (digits 0/1 via scikit-learn, m = 10, d = 64, 10 held-out; depth-3 SiLU, σ = √2, "
                      "lr 0.1, full batch)",
           "settings": dict(size, ranks=args.ranks, launcher=launcher, model_ranks=list(args.model_ranks),
                            model_particles=args.model_particles),
           "per_rank_results": {str(R): v for R, v in per_r.items()}}
    res.update(analyse(per_r, size, args))
    print()
    print_tables(res)
    return res


def _single(args, size: dict, one: dict) -> dict:
    """``mpiexec -n R python scaling.py`` without the driver: this R's tables, no speed-ups."""
    res = {"benchmark": "scaling", "machine": one["machine"], "zlimit": one["zlimit"],
           "mpi_library": one["mpi_library"], "mpi4py": one["mpi4py"], "mode": mode_of(args.quick, args.tiny),
           "problem": "paper (digits 0/1 via scikit-learn)", "settings": dict(size, ranks=[one["ranks"]]),
           "per_rank_results": {str(one["ranks"]): one}}
    res.update(analyse({one["ranks"]: one}, size, args))
    print_tables(res)
    return res


def _ints(text: str) -> tuple:
    return tuple(int(v) for v in text.split(","))


def main(argv=None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--ranks", type=_ints, default=(1, 2), help="R values the driver runs (default 1,2)")
    ap.add_argument("--mpiexec", help='launcher, e.g. "srun" or "mpiexec --bind-to core" (default: the mpiexec '
                                      "next to this Python, else on PATH); '-n R' is appended")
    ap.add_argument("--particles", type=int, help="strong-scaling N")
    ap.add_argument("--weak-particles", type=int, help="weak-scaling N/R")
    ap.add_argument("--groups", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--sweep-max", type=int, help="largest message of the latency sweep, bytes")
    ap.add_argument("--alpha", type=float, default=CLUSTER_ALPHA, help="assumed cluster latency, s (model)")
    ap.add_argument("--beta", type=float, default=CLUSTER_BETA, help="assumed cluster inverse bandwidth, s/byte")
    ap.add_argument("--model-particles", type=int, default=MODEL_PARTICLES, help="the model's large N")
    ap.add_argument("--model-ranks", type=_ints, default=MODEL_RANKS)
    ap.add_argument("--from", dest="source", type=Path, help="a saved result: print its tables again, with the model "
                                                                  "of these --alpha/--beta/--model-* (no runs)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help="output file (default benchmarks/results/scaling_<timestamp>.json)")
    args = ap.parse_args(argv)
    size = _size(args)
    launched = any(v in os.environ for v in _LAUNCHER_VARIABLES)
    if args.source is not None:
        res = json.loads(args.source.read_text())
        size = {k: res["settings"][k] for k in (*SIZES["full"], "groups") if k in res["settings"]}
        res["settings"].update(model_ranks=list(args.model_ranks), model_particles=args.model_particles)
        res.update(analyse({int(R): v for R, v in res["per_rank_results"].items()}, size, args))
        print_tables(res)
        if args.json is None:
            return res
    elif args.worker or launched:
        one = worker(args, size)
        if one is None:
            return None
        if args.worker:  # for the driver
            args.json.write_text(json.dumps(one, default=float))
            return one
        res = _single(args, size, one)
    else:
        res = drive(args, size)
    print(f"wrote {save_result(res, args.json, 'scaling_')}")
    return res


if __name__ == "__main__":
    main()
