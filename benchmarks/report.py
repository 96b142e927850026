"""Reporting: the per-problem rows, the S3 summaries, the targets, the printed table and
the JSON written to ``<out>/<timestamp>.json``.

``summarise`` turns one child result into a row of the table: the first and last step
times, K + J, and ``frac_floor`` = (bytes a step must stream at one pass, summed over
steps and groups, ÷ wall time) ÷ copy bandwidth (analysis.per_step). The targets are
printed as MET / not met, never asserted.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path

import numpy as np

from analysis import loglog_slope

ROW_KEYS = ("wall_s", "cpu_s", "cores_used", "loadavg_1min", "peak_rss_bytes", "peak_rss_source", "base_rss_bytes",
            "estimate_memory_bytes", "rss_shared_child", "threads", "loss_first", "loss_last", "directions_max")


def summarise(r: dict, spec: dict, bandwidth: float) -> dict:
    """The table row of one simulate run (bandwidth: copy bandwidth, bytes per second)."""
    s = dict(spec, **{k: r.get(k) for k in ROW_KEYS})
    steps, kj = r.get("step_s_median") or [], r.get("kj_per_step") or []
    s["step_first_s"], s["step_last_s"] = (steps[0], steps[-1]) if steps else (None, None)
    s["kj_first"], s["kj_last"] = (kj[0], kj[-1]) if kj else (None, None)
    if r.get("bytes_total"):
        s["bytes_streamed_min"] = r["bytes_total"]
        s["frac_floor"] = r["bytes_total"] / r["wall_s"] / bandwidth
        s["concurrency"] = r["busy_s"] / r["wall_s"]
    if len(steps) >= 4 and len(kj) == len(steps):  # growth of step cost with K over the 2nd half
        h = len(steps) // 2
        s["step_growth_exponent"], s["step_growth_exponent_se"] = loglog_slope(kj[h:], steps[h:])
    s["rss_minus_base_bytes"] = r["peak_rss_bytes"] - r["base_rss_bytes"]
    if r.get("se_last"):
        s["se_last_max"] = float(np.max(r["se_last"]))
    return s


def s3_summary(points: list, key: str) -> dict | None:
    """Cost against ``key`` ("N" or "T") from (value, row) pairs of one sweep."""
    if len(points) < 2:
        return None
    points = sorted(points, key=lambda p: p[0])
    x, rows = [v for v, _ in points], [p for _, p in points]
    wall = [p["wall_s"] for p in rows]
    slope, se = loglog_slope(x, wall)
    out = {key: x, "wall_s": wall, "slope": slope, "slope_se": se,
           "peak_rss_bytes": [p["peak_rss_bytes"] for p in rows]}
    if key == "N":
        per = np.array(wall) / np.array(x)
        out.update(wall_per_particle_s=per.tolist(),
                   max_dev_per_particle=float(np.max(np.abs(per / np.median(per) - 1))))
    else:
        last, kj = [p["step_last_s"] for p in rows], [p["kj_last"] for p in rows]
        g, g_se = loglog_slope([k or 0 for k in kj], [v or 0 for v in last])
        out.update(step_last_s=last, kj_last=kj, last_step_vs_K_exponent=g, last_step_vs_K_exponent_se=g_se)
    return out


def targets(res: dict) -> list:
    P, out = res["problems"], []

    def add(name, value, threshold, met, note=""):
        out.append({"target": name, "value": value, "threshold": threshold, "met": met, "note": note})

    cal, bw = res.get("calibration") or {}, res["bandwidth"]["GBps_read_plus_write"]
    thin = cal.get("thin_gemm_GBps_1thread")
    for p in ("S1", "S2"):
        v = P.get(p, {}).get("frac_floor")
        add(f"{p} >= 50% of bandwidth floor", v, 0.5, None if v is None else v >= 0.5,
            f"1 pass minimal; the engine's thin product alone reads at {_fmt(thin and thin / bw)} of copy bandwidth")
    sN = res.get("S3", {}).get("N")
    if sN:
        dev = sN["max_dev_per_particle"]
        add("cost linear in N within 15%", dev, 0.15, dev <= 0.15,
            f"max |(wall/N)/median − 1|; log-log slope {_fmt(sN['slope'])}")
    sT = res.get("S3", {}).get("T")
    g = sT.get("last_step_vs_K_exponent") if sT else P.get("S1", {}).get("step_growth_exponent")
    add("per-step cost grows no faster than K", g, 1.1, None if g is None else g <= 1.1,
        "log-log exponent of step time vs K+J (S3-T last steps, else S1 2nd half) <= 1.1")
    sp = res.get("threads", {}).get("speedup")
    add("2 threads >= 1.7x 1 thread", sp, 1.7, None if sp is None else sp >= 1.7,
        f"S1 wall time; two independent BLAS streams reach {_fmt(cal.get('two_stream_speedup'))}x on this machine now")
    if res.get("tta"):
        v = [r for r in res["tta"]["rows"] if r["eps"] == 1e-3][0]["ratio_finite_over_sim"]
        add("TTA ratio >= 3 at 1e-3", v, 3.0, None if v is None else v >= 3.0, "finite time / simulate time")
    if P.get("S2"):
        v = P["S2"]["peak_rss_bytes"] / 2**30
        add("S2 within 24 GiB", v, 24.0, v <= 24.0, "peak RSS GiB")
        v = (res.get("S2_T15") or {}).get("T_max")
        add("S2: largest T in 15 min", v, 200, None if v is None else v >= 200, "extrapolated; met if T = 200 fits")
    return out


def _fmt(v, spec="{:.3g}"):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return str(v) if isinstance(v, int) and spec == "{:.3g}" else spec.format(v)


def _scaled(v, k):
    return None if v is None else k * v


def print_table(res: dict) -> None:
    bw, cal = res["bandwidth"], res.get("calibration")
    print(f"\ncopy bandwidth (np.copyto {bw['array_bytes'] / 2**20:.0f} MiB, median of {bw['repeats']}): "
          f"{bw['GBps_read_plus_write']:.2f} GB/s read+write ({bw['GBps_copied']:.2f} GB/s copied)")
    if cal:
        print(f"thin product U Xᵀ ({cal['K']}x{cal['N']} by {cal['b']} rows, 1 BLAS thread): "
              f"{cal['thin_gemm_GBps_1thread']:.2f} GB/s read, {cal['thin_gemm_GFlops_1thread']:.1f} GFlop/s; "
              f"two such streams on 2 threads: {cal['two_stream_speedup']:.2f}x; load average {cal['loadavg'][0]:.1f}")
    print(f"threads: {res['threads']['main']} (NUMBA/OPENBLAS/OMP/MKL_NUM_THREADS), mode {res['mode']}\n")
    hdr = ("problem", "N", "T", "G", "thr", "wall s", "cores", "step0 ms", "stepT ms", "K+J end", "RSS MiB",
           "est MiB", "floor%")
    line = "{:<12}" + "{:>9}" * (len(hdr) - 1)
    print(line.format(*hdr))
    for name, s in res["problems"].items():
        print(line.format(
            name, s["N"], s["T"], s["groups"], s["threads"], _fmt(s["wall_s"], "{:.2f}"),
            _fmt(s.get("cores_used"), "{:.2f}"), _fmt(_scaled(s["step_first_s"], 1e3), "{:.1f}"),
            _fmt(_scaled(s["step_last_s"], 1e3), "{:.1f}"), _fmt(s.get("kj_last"), "{:.0f}"),
            _fmt(_scaled(s["peak_rss_bytes"], 2**-20), "{:.0f}"),
            _fmt(_scaled(s["estimate_memory_bytes"], 2**-20), "{:.0f}"),
            _fmt(_scaled(s.get("frac_floor"), 100), "{:.1f}")))
    for key, label in (("N", "cost vs N"), ("T", "cost vs T")):
        d = (res.get("S3") or {}).get(key)
        if d:
            extra = (f"max dev of wall/N {_fmt(d['max_dev_per_particle'])}" if key == "N"
                     else f"last-step exponent vs K {_fmt(d['last_step_vs_K_exponent'])}")
            print(f"S3 {label}: log-log slope of wall {_fmt(d['slope'])} (se {_fmt(d['slope_se'])}); {extra}")
    th = res.get("threads", {})
    if th.get("speedup"):
        print(f"threads: S1 wall 1 thread {th['wall_1']:.2f} s, {th['main']} threads {th['wall_main']:.2f} s, "
              f"speed-up {th['speedup']:.2f}x")
    if res.get("tta"):
        _print_tta(res["tta"])
    if res.get("S2_T15"):
        s2 = res["problems"]["S2"]
        print(f"S2 as run (N = {s2['N']}, G = {s2['groups']}, {s2['threads']} threads): largest T in 15 min ≈ "
              f"{res['S2_T15']['T_max']} (extrapolated from its per-step times, a + b·(K+J))")
    print("\ntargets (measured, not asserted):")
    for tg in res["targets"]:
        mark = {True: "MET", False: "not met", None: "n/a"}[tg["met"]]
        print(f"  [{mark:>7}] {tg['target']}: {_fmt(tg['value'])} (threshold {tg['threshold']}; {tg['note']})")


def _print_tta(t: dict) -> None:
    lim = t["limit"]
    print(f"\ntime to accuracy (S1, max over inputs at step T; limit se0 = {lim['se0_max']:.2e} at N0 = {lim['N0']}, "
          f"N >= {lim['N_min']}):")
    row = "{:>8}{:>12}{:>12}{:>10}{:>8}{:>14}{:>9}{:>12}{:>12}{:>10}"
    print(row.format("eps", "sim N", "sim s", "width", "seeds", "finite s", "ratio", "sim N(b)", "sim s(b)",
                     "ratio(b)"))
    for r in t["rows"]:
        print(row.format(f"{r['eps']:g}", *(_fmt(r[k], f) for k, f in (
            ("sim_N_used", "{:.3g}"), ("sim_time_s", "{:.3g}"), ("finite_width", "{}"), ("finite_seeds", "{}"),
            ("finite_time_s", "{:.3g}"), ("ratio_finite_over_sim", "{:.3g}"), ("sim_N_bias_aware", "{:.3g}"),
            ("sim_time_bias_aware_s", "{:.3g}"), ("ratio_bias_aware", "{:.3g}")))))
    v = lim["vs_N"]
    if v:
        print(f"limit vs N (S1, S3 runs at N = {', '.join(f'{n:.3g}' for n in v['N'])}): f̊ = f∞ + c/N with "
              f"max |c| = {np.max(np.abs(v['c'])):.3g} (max |z| = {v['max_abs_z_c']:.1f}); (b) columns: "
              "se + |c|/N <= eps; finite nets compared with f∞")
    print("measured seed-means vs limit: " + ", ".join(f"n={m['width']}: err {m['max_abs_err']:.1e}"
                                                      for m in t["finite_measured"]))
    fit = t["finite_fit"]
    print(f"fit: max |B_a| = {np.max(np.abs(fit['B_a'])):.3g} (se {np.max(fit['B_a_se']):.2g}), "
          f"max s_a = {np.max(fit['s_a']):.3g}, chi²/dof of the 1/n bias model {fit['chi2_dof']:.2f}; "
          f"one seed t(n) = {fit['alpha_s']:.3g} s + {fit['beta_s']:.3g} s·n²")


def save_result(res: dict, path: Path | None, prefix: str) -> Path:
    """Write ``res`` to ``path``, or to benchmarks/results/<prefix><timestamp>.json when None
    (a benchmark's ``--json`` option); returns the file written."""
    if path is None:
        return write_json(res, Path(__file__).parent / "results", prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1, default=float))
    return path


def write_json(res: dict, out: str | Path, prefix: str = "") -> Path:
    """Write ``res`` to ``out/<prefix><timestamp>.json`` (a suffix -1, -2 .. if it exists)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = prefix + _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    path, k = out / f"{stamp}.json", 1
    while path.exists():  # two runs within one second
        path, k = out / f"{stamp}-{k}.json", k + 1
    path.write_text(json.dumps(res, indent=1, default=float))
    return path
