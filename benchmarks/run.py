"""Performance benchmark of ``zlimit.simulate``: problems S1, S2, S3 and time to accuracy.

    python benchmarks/run.py [--quick | --tiny] [--out benchmarks/results] [--only S1,S2,S3,TTA]
                             [--threads 2] [--groups 8] [--s2-steps T] [--s3-N a,b,..] [--s3-T a,b,..]

``ZLIMIT_BENCH_TINY=1`` is the same as ``--tiny``. Prints a table and writes
``<out>/<timestamp>.json``. The pieces: ``problems.py`` (the problems and their sizes),
``measure.py`` (child processes, memory, step times, calibration, machine, versions,
git), ``analysis.py`` (the fits), ``report.py`` (the table, the targets, the JSON).

This file plans the jobs: S1 with the main thread count and with 1 thread (the
speed-up), S2, the S3 sweeps in N and T (reusing the S1 run for the point they share)
and the finite nets of TTA; each runs in a fresh child (in ``--tiny`` all jobs of one
thread setting share one child, flagged ``rss_shared_child``, to stay under 30 s).

Not reported any more, because they rested on facts about the engine hard-coded here
and the run does not report them: ``alg%`` (``frac_floor_alg``, the floor fraction at
an assumed 3.5 passes of the present algorithm), ``GF/s``/``peak%``/``floor_ceiling``
(an assumed 10·m flops per row) and the calibration's square dgemm rate that only
``peak%`` used. N_min of TTA is no longer 10·K_cap·G with K_cap = 10(T + 1): it is
10·K·G with K the most directions a basis of the S1 run held.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import analysis  # noqa: E402
import measure  # noqa: E402
import report  # noqa: E402
from problems import PARTICLES_PER_DIRECTION, SIZES, mode_of  # noqa: E402

EPSILONS = (1e-2, 3e-3, 1e-3)
BUDGET_S2_S = 15 * 60
ASSUMPTIONS = {
    "passes_minimal": 1,
    "bytes_per_step": "sum over hidden matrices of (K+J)*2*N_g*itemsize, K, J mean of step start/end (run.bases)",
    "bandwidth": "np.copyto median, read+write bytes per second",
    "per_step_time": "between on_step(g, t-1) and on_step(g, t) on one thread (step 0 from the group's start), "
                     "median over groups",
    "tta_sim": f"N(eps) = N0 (se0/eps)^2, at least N_min = {PARTICLES_PER_DIRECTION} K G (K: most directions "
               "held by a basis of the S1 run); time linear in N",
    "tta_finite": "max_a |B_a|/n + s_a/sqrt(n S) <= eps; t(n) = alpha + beta n^2"}


def plan_jobs(only: set, Z: dict, G: int, threads: int, s2_steps, s3N, s3T) -> list:
    """(label, spec, threads) of every child job."""
    S1 = dict(problem="S1", groups=G, warm_N=Z["warm_N"], **Z["S1"])
    plan = []
    if only & {"S1", "S3", "TTA"}:
        plan.append(("S1", S1, threads))
        if "S1" in only and threads != 1:
            plan.append(("S1/1thr", S1, 1))
    if "S2" in only:
        S2 = dict(S1, problem="S2", **Z["S2"])
        plan.append(("S2", dict(S2, T=s2_steps) if s2_steps else S2, threads))
    if "S3" in only:
        plan += [(f"S3/N={N}", dict(S1, N=N), threads) for N in s3N if N != S1["N"]]
        plan += [(f"S3/T={T}", dict(S1, T=T), threads) for T in s3T if T != S1["T"]]
    if "TTA" in only:
        plan.append(("TTA/finite", dict(kind="finite", T=S1["T"], widths=Z["widths"], seeds=Z["seeds"]), threads))
    return plan


def run_plan(plan: list, tiny: bool) -> dict:
    raw = {}
    if tiny:  # one child per thread setting
        for thr in sorted({p[2] for p in plan}):
            sel = [p for p in plan if p[2] == thr]
            raw.update(zip([p[0] for p in sel], measure.run_child([dict(p[1], threads=thr) for p in sel], thr)))
        return raw
    for label, spec, thr in plan:
        t0 = time.perf_counter()
        print(f"  running {label} ...", end="", flush=True)
        raw[label] = measure.run_child([dict(spec, threads=thr)], thr)[0]
        print(f" {time.perf_counter() - t0:.1f} s", flush=True)
    return raw


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description="zlimit performance benchmark (S1, S2, S3, TTA)")
    ap.add_argument("--quick", action="store_true", help="much smaller sizes, < 5 minutes")
    ap.add_argument("--tiny", action="store_true", help="smoke-test sizes, < 30 s (or ZLIMIT_BENCH_TINY=1)")
    ap.add_argument("--out", default=str(measure.ROOT / "benchmarks" / "results"))
    ap.add_argument("--only", default="S1,S2,S3,TTA", help="comma-separated subset of S1,S2,S3,TTA")
    ap.add_argument("--threads", type=int, default=None, help="threads of the main runs (default min(2, cores))")
    ap.add_argument("--groups", type=int, default=None, help="G (default 8; 2 in --tiny)")
    ap.add_argument("--s2-steps", type=int, default=None, help="override S2's T (the 15-minute T is extrapolated)")
    ap.add_argument("--s3-N", default=None, help="override the S3 particle counts, comma-separated")
    ap.add_argument("--s3-T", default=None, help="override the S3 step counts, comma-separated")
    args = ap.parse_args(argv)
    mode = mode_of(args.quick, args.tiny)
    Z = SIZES[mode]
    only = {s.strip().upper() for s in args.only.split(",") if s.strip()}
    if only - {"S1", "S2", "S3", "TTA"}:
        ap.error(f"--only takes S1,S2,S3,TTA; got {sorted(only - {'S1', 'S2', 'S3', 'TTA'})}")
    G = args.groups or Z["groups"]
    minfo = measure.machine_info()
    threads = args.threads or max(1, min(2, minfo["cpus_usable"] or 1))
    s3N = tuple(int(float(v)) for v in args.s3_N.split(",")) if args.s3_N else Z["S3_N"]
    s3T = tuple(int(v) for v in args.s3_T.split(",")) if args.s3_T else Z["S3_T"]
    t_start = time.perf_counter()
    res = {"schema": 2, "created": _dt.datetime.now().isoformat(timespec="seconds"), "mode": mode,
           "argv": sys.argv[1:] if argv is None else list(argv), "machine": minfo, "versions": measure.versions(),
           "git": measure.git_info(), "assumptions": ASSUMPTIONS}
    print(f"zlimit benchmark, mode {mode}: {minfo.get('cpu_model')}, {minfo['cpus_usable']} cores, "
          f"{minfo['mem_total_bytes'] / 2**30:.1f} GiB; threads {threads}", flush=True)
    res["bandwidth"] = measure.copy_bandwidth(Z["copy_mib"])
    res["calibration"] = measure.calibrate(*Z["calib"])
    res["threads"] = {"main": threads, "env": list(measure.THREAD_VARS)}

    plan = plan_jobs(only, Z, G, threads, args.s2_steps, s3N, s3T)
    raw = run_plan(plan, mode == "tiny")
    specs = {label: spec for label, spec, _ in plan}
    B = res["bandwidth"]["GBps_read_plus_write"] * 1e9
    P = res["problems"] = {l: report.summarise(raw[l], specs[l], B) for l in raw if l != "TTA/finite"}
    if "S1" in P and "S1/1thr" in P:
        w1, w2 = P["S1/1thr"]["wall_s"], P["S1"]["wall_s"]
        res["threads"].update({"wall_1": w1, "wall_main": w2, "speedup": w1 / w2})
    if "S3" in only:
        sweep = lambda key, values, prefix: [(specs[l][key], P[l]) for l in P
                                             if (l == "S1" or l.startswith(prefix)) and specs[l][key] in values]
        res["S3"] = {k: v for k, v in (("N", report.s3_summary(sweep("N", s3N, "S3/N"), "N")),
                                       ("T", report.s3_summary(sweep("T", s3T, "S3/T"), "T"))) if v}
    if "TTA" in only and raw.get("S1", {}).get("se_last"):
        s1, fin = raw["S1"], raw["TTA/finite"]["rows"]
        points = [(specs[l]["N"], raw[l]["f_last"], raw[l]["se_last"]) for l in raw
                  if (l == "S1" or l.startswith("S3/N")) and raw[l].get("se_last")]
        n_min = PARTICLES_PER_DIRECTION * s1["directions_max"] * G
        res["tta"] = analysis.tta(s1["f_last"], s1["se_last"], specs["S1"]["N"], s1["wall_s"], n_min,
                                  [r["width"] for r in fin], [np.array(r["f_last"]) for r in fin],
                                  [r["seconds_per_seed"] for r in fin], minfo["mem_total_bytes"], EPSILONS, points)
        res["tta"]["limit"].update(groups=G, K_max=s1["directions_max"])
    if "S2" in raw:
        res["S2_T15"] = analysis.largest_T(raw["S2"]["step_s_median"], raw["S2"]["kj_per_step"], raw["S2"]["wall_s"],
                                           BUDGET_S2_S)
    if "S1" not in only and "S1" in P:  # run only as an input of S3/TTA: keep it, but label it
        P["S1"]["note"] = "run as the shared point of S3/TTA"
    res["raw"] = raw
    res["targets"] = report.targets(res)
    res["total_wall_s"] = time.perf_counter() - t_start
    report.print_table(res)
    path = report.write_json(res, args.out)
    res["path"] = str(path)
    print(f"\nwrote {path} (total {res['total_wall_s']:.1f} s)")
    return res


if __name__ == "__main__":
    main()
