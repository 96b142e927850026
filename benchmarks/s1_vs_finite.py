"""S1 against finite nets: the limit's cost and accuracy next to width-n seed-means.

Problem S1: depth 3, tanh, m = 10, d = 16, T = 50, N = 10^5, full batch, lr 0.1.
Prints and saves (JSON) the limit's wall time, peak memory and largest standard error,
and the distance of width-n seed-means to the limit in combined standard errors.

    python benchmarks/s1_vs_finite.py [--widths 2048,8192] [--seeds 8] [--particles 100000]
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

import zlimit


def s1_problem(seed: int = 0):
    X, y = zlimit.datasets.gaussian(10, 16, seed=seed)
    model = zlimit.MLP(depth=3, activation="tanh", loss="mse", reduction="mean", lr=0.1)
    return model, X, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="2048,8192")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--particles", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    model, X, y = s1_problem()
    t0 = time.perf_counter()
    limit = zlimit.simulate(model, X, y, steps=args.steps, particles=args.particles, progress=False)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    report = {"problem": "S1", "steps": args.steps, "particles": args.particles, "groups": limit.groups,
              "limit_wall_s": wall, "limit_peak_rss_gib": peak,
              "estimate_gib": zlimit.estimate_memory(model, 10, 10, args.steps, args.particles, limit.groups,
                                                     [np.arange(10)] * args.steps) / 2**30,
              "max_se": float(limit.outputs_se.max()), "widths": {}}
    print(f"limit: {wall:.1f} s, peak RSS {peak:.2f} GiB, max se of f̊ {report['max_se']:.2e}")
    for n in [int(w) for w in args.widths.split(",")]:
        t0 = time.perf_counter()
        f = np.stack([zlimit.train_finite(model, X, y, width=n, steps=args.steps, seed=s).outputs
                      for s in range(args.seeds)])
        secs = time.perf_counter() - t0
        diff = f.mean(0) - limit.outputs
        se = np.sqrt(f.std(0, ddof=1) ** 2 / args.seeds + limit.outputs_se ** 2)
        row = {"seconds": secs, "max_abs_diff": float(np.abs(diff[1:]).max()),
               "rms_diff": float(np.sqrt(np.mean(diff[1:] ** 2))), "max_abs_z": float(np.abs(diff / se)[1:].max()),
               "last_step_max_abs_diff": float(np.abs(diff[-1]).max())}
        report["widths"][n] = row
        print(f"width {n}: {args.seeds} seeds in {secs:.0f} s; max|seed-mean − f̊| = {row['max_abs_diff']:.2e}, "
              f"rms {row['rms_diff']:.2e}, max |z| = {row['max_abs_z']:.1f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"s1_vs_finite-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
