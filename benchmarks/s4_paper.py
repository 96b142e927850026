"""S4 "paper": cost and accuracy of the limit on the paper's experiment, against finite nets.

The experiment of Chen, Yang, Zhao & Gu (2025, App. A), as ``zlimit paper-figure`` runs
it: digits 0/1, 5 per class (m = 10, d = 64), 5 held-out images per class, a depth-3
SiLU MLP with σ = √2, lr 0.1, full-batch SGD on the squared loss for T steps.

For each T of ``--steps`` the limit runs once (``record_steps=(0, T)``, held-out inputs
as ``X_eval``) in a fresh process, after a tiny warm-up run that compiles numba. Measured:

* cost: wall seconds of ``simulate``, peak RSS of that process (its VmHWM: interpreter
  and warm-up included), ``run.meta["peak_basis_bytes"]``;
* Gaussian directions (``run.bases``, one basis per side and hidden matrix, e.g. fwd2):
  per basis the most directions held at step T (max over groups) and, summed over steps
  and averaged over groups, the vectors dropped by truncation and their mass
  Σ(‖ρ‖/‖x‖)²; the table shows the largest basis, the sum over bases, the dropped count
  and mass summed over bases, and the largest orthogonality error max|UUᵀ/N − I|;
* the panels of the paper's Figures 1–2, with standard errors from the groups: the
  feature change ‖h_T − h_0‖/‖h_0‖ of layers 1 and 2, λ_min of the normalised
  space-time Gram of (h_0, h_T) of layers 1 and 2, and the held-out MSE of f̊_T;
* distance to finite μP nets: the same panels for ``train_finite`` at each width of
  ``--widths`` and seeds 0 .. S−1 (in this process, timed per seed), their seed mean ± se,
  and z = (limit − seed mean) / sqrt(se_lim² + se_fin²). Finite results are kept in
  ``--finite-cache`` (JSON, keyed by T/width/seed) when given, and reused: one net of
  width 4096 trained for 1000 steps takes minutes.

    python benchmarks/s4_paper.py            # full: T = 250, 500, 1000; width 4096 x 4 seeds
    python benchmarks/s4_paper.py --quick    # T = 100; width 1024 x 2 seeds
    python benchmarks/s4_paper.py --tiny     # T = 4, N = 2000, G = 2; width 32 x 2 seeds (or ZLIMIT_BENCH_TINY=1)
    options (override the mode's sizes, problems.S4_SIZES): --steps T,.. --widths n,.. --seeds S
    --particles N --groups G (default: simulate's) --basis-tol TOL --finite-cache PATH --json PATH

Prints one table (rows T, width) and writes benchmarks/results/s4_<timestamp>.json (or
``--json``) with every number, plus the machine, versions (BLAS included) and git revision.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measure  # noqa: E402
import zlimit  # noqa: E402
from problems import S4_SIZES, mode_of, paper  # noqa: E402
from report import write_json  # noqa: E402
from zlimit._demo import _finite_measures, _limit_measures, _mean_se  # noqa: E402
from zlimit._results import key, parse_key  # noqa: E402

LAYERS = (1, 2)
QUANTITIES = (("feature_change", 1), ("feature_change", 2), ("min_eigenvalue", 1), ("min_eigenvalue", 2),
              ("heldout_mse", None))
LABELS = {"feature_change": "Δh", "min_eigenvalue": "λmin", "heldout_mse": "MSE"}


def _name(quantity: str, layer: int | None) -> str:
    return quantity if layer is None else f"{quantity}_{layer}"


def basis_summary(bases: dict, T: int) -> dict:
    """Directions at step T, truncation totals and orthogonality error of ``run.bases``."""
    processes = sorted({(side, l) for side, l, _ in map(parse_key, bases)})  # (fwd|bwd, l)
    per = {key(side, l): {"size_T_max": int(bases[key(side, l, "size")][:, T].max()),
                          "dropped": float(bases[key(side, l, "dropped")].sum(axis=1).mean()),
                          "dropped_mass": float(bases[key(side, l, "dropped_mass")].sum(axis=1).mean())}
           for side, l in processes}
    orth = np.concatenate([bases[key(side, l, "orthogonality")].ravel() for side, l in processes])
    return {"per_basis": per,
            "directions_max": max(p["size_T_max"] for p in per.values()),
            "directions_sum": sum(p["size_T_max"] for p in per.values()),
            "dropped": sum(p["dropped"] for p in per.values()),
            "dropped_mass": sum(p["dropped_mass"] for p in per.values()),
            "orthogonality_max": float(np.nanmax(orth)) if np.isfinite(orth).any() else math.nan}


def limit_child(T: int, options: dict) -> dict:
    """In a fresh process: the limit at T, its cost, bases and panel quantities."""
    warnings.simplefilter("ignore")  # "particles >> directions" at tiny N is expected
    model, X, y, X_eval, y_eval = paper()
    zlimit.simulate(model, X, y, steps=2, particles=400, groups=2, progress=False)  # compile numba
    t0 = time.perf_counter()
    run = zlimit.simulate(model, X, y, steps=T, X_eval=X_eval, record_steps=(0, T), progress=False, **options)
    wall = time.perf_counter() - t0
    peak, source = measure.peak_rss()
    return {"wall_s": wall, "peak_rss_bytes": peak, "peak_rss_source": source,
            "peak_basis_bytes": run.meta["peak_basis_bytes"],
            **{k: run.meta[k] for k in ("particles", "groups", "basis_tol")},
            "bases": basis_summary(run.bases, T),
            "measures": {_name(q, l): est for (q, l), est in
                         _limit_measures(run, LAYERS, T, X.shape[0], y_eval).items()}}


def finite_seeds(T: int, width: int, seeds: int, cache: dict, cache_path: Path | None) -> list:
    """Per-seed panel quantities and seconds of train_finite, from or into the cache."""
    model, X, y, X_eval, y_eval = paper()
    out = []
    for s in range(seeds):
        key = f"{T}/{width}/{s}"
        if key not in cache:
            t0 = time.perf_counter()
            run = zlimit.train_finite(model, X, y, width=width, steps=T, seed=s, X_eval=X_eval, record_steps=(0, T),
                                      progress=False)
            secs = time.perf_counter() - t0
            measures = _finite_measures(run, LAYERS, T, X.shape[0], y_eval)
            cache[key] = {"seconds": secs, "measures": {_name(q, l): v for (q, l), v in measures.items()}}
            if cache_path is not None:  # after every net, so an interrupted run keeps the rest
                cache_path.write_text(json.dumps(cache, indent=1))
        out.append(cache[key])
    return out


def compare(limit: dict, per_seed: list) -> dict:
    """Seed mean ± se of each quantity and its distance to the limit in combined se."""
    out = {}
    for q, l in QUANTITIES:
        name = _name(q, l)
        lim = limit["measures"][name]
        fin = _mean_se([p["measures"][name] for p in per_seed])
        diff = lim["value"] - fin["value"]
        out[name] = {"limit": lim, "finite": fin, "diff": diff, "z": diff / math.hypot(lim["se"], fin["se"])}
    return out


def _pm(est: dict) -> str:
    return f"{est['value']:.4g}" + (f"±{est['se']:.2g}" if math.isfinite(est["se"]) else "")


def print_table(rows: list) -> None:
    cost = ["T", "n", "wall s", "RSS MiB", "dirs max", "dirs Σ", "dropped", "mass", "orth err", "fin s/seed"]
    panels = [f"{LABELS[q]}{'' if l is None else l}: limit | finite | z" for q, l in QUANTITIES]
    lines = []
    for r in rows:
        lim, b = r["limit"], r["limit"]["bases"]
        cells = [str(r["T"]), str(r["width"]), f"{lim['wall_s']:.1f}", f"{lim['peak_rss_bytes'] / 2**20:.0f}",
                 str(b["directions_max"]), str(b["directions_sum"]), f"{b['dropped']:.0f}",
                 f"{b['dropped_mass']:.2g}", f"{b['orthogonality_max']:.1e}", f"{r['finite_s_per_seed']:.1f}"]
        cells += [f"{_pm(c['limit'])} | {_pm(c['finite'])} | {c['z']:.1f}"
                  for c in (r["compare"][_name(q, l)] for q, l in QUANTITIES)]
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(cost + panels)]
    print("  ".join(h.rjust(w) for h, w in zip(cost + panels, widths)))
    for cells in lines:
        print("  ".join(c.rjust(w) for c, w in zip(cells, widths)))


def main() -> None:
    ints = lambda s: [int(v) for v in s.split(",")]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (problems.S4_SIZES['quick'])")
    ap.add_argument("--tiny", action="store_true", help="smoke sizes (or ZLIMIT_BENCH_TINY=1)")
    ap.add_argument("--steps", type=ints, help="T values, comma-separated (full: 250,500,1000)")
    ap.add_argument("--particles", type=int, help="N of simulate (default: simulate's)")
    ap.add_argument("--groups", type=int, help="G of simulate (default: simulate's)")
    ap.add_argument("--basis-tol", type=float, help="basis_tol of simulate (default: simulate's)")
    ap.add_argument("--widths", type=ints, help="finite widths, comma-separated (full: 4096)")
    ap.add_argument("--seeds", type=int, help="finite seeds per width (full: 4)")
    ap.add_argument("--finite-cache", type=Path, help="JSON file of finite results, reused across runs")
    ap.add_argument("--json", type=Path, help="output file (default benchmarks/results/s4_<timestamp>.json)")
    args = ap.parse_args()
    args.mode = mode_of(args.quick, args.tiny)
    for k, v in S4_SIZES[args.mode].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    options = {k: v for k, v in (("particles", args.particles), ("groups", args.groups),
                                 ("basis_tol", args.basis_tol)) if v is not None}
    cache = json.loads(args.finite_cache.read_text()) if args.finite_cache and args.finite_cache.exists() else {}
    model, X, y, _, _ = paper()
    zlimit.train_finite(model, X, y, width=16, steps=2, seed=0, progress=False)  # compile outside the timings
    t_start = time.perf_counter()
    rows = []
    for T in args.steps:
        print(f"  T = {T}: limit ...", end="", flush=True)
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:  # fresh process: own peak RSS
            limit = pool.submit(limit_child, T, options).result()
        print(f" {limit['wall_s']:.1f} s; finite ...", end="", flush=True)
        for width in args.widths:
            per_seed = finite_seeds(T, width, args.seeds, cache, args.finite_cache)
            rows.append({"T": T, "width": width, "limit": limit, "finite_per_seed": per_seed,
                         "finite_s_per_seed": float(np.mean([p["seconds"] for p in per_seed])),
                         "compare": compare(limit, per_seed)})
        print(" done", flush=True)
    print_table(rows)
    res = {"benchmark": "S4", "problem": "digits 0/1, 5+5 per class, depth 3, silu, init_std sqrt(2), lr 0.1, mse",
           "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "machine": measure.machine_info(), "versions": measure.versions(), "git": measure.git_info(),
           "rows": rows, "total_wall_s": time.perf_counter() - t_start}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1, default=float))
    path = args.json or write_json(res, measure.HERE / "results", prefix="s4_")
    print(f"\nwrote {path} (total {res['total_wall_s']:.1f} s)")


if __name__ == "__main__":
    main()
