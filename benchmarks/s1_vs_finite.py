"""S1 against finite nets: the limit's cost and accuracy next to width-n seed-means.

Problem S1 (benchmarks/problems.py): depth 3, tanh, m = 10, d = 16, full batch, lr 0.1;
T and N of the full run (50, 10^5), or of ``--quick``/``--tiny``. Prints and saves (JSON)
the limit's wall time, peak memory (VmHWM of this process, measure.peak_rss) and largest
standard error, and the distance of width-n seed-means to the limit in combined
standard errors.

    python benchmarks/s1_vs_finite.py [--quick | --tiny] [--widths 2048,8192] [--seeds 8]
                                      [--particles N] [--steps T]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zlimit  # noqa: E402
from measure import peak_rss  # noqa: E402
from problems import SIZES, mode_of, problem  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", help="comma-separated (default 2048,8192; the mode's TTA widths in --quick/--tiny)")
    ap.add_argument("--seeds", type=int, help="seeds per width (default 8; 3 in --quick/--tiny)")
    ap.add_argument("--particles", type=int, help="N (default: S1's for the mode)")
    ap.add_argument("--steps", type=int, help="T (default: S1's for the mode)")
    ap.add_argument("--quick", action="store_true", help="S1 at the --quick sizes of run.py")
    ap.add_argument("--tiny", action="store_true", help="S1 at the --tiny sizes (or ZLIMIT_BENCH_TINY=1)")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    mode = mode_of(args.quick, args.tiny)
    S1 = SIZES[mode]["S1"]
    args.particles, args.steps = args.particles or S1["N"], args.steps or S1["T"]
    full = mode == "full"
    args.widths = args.widths or ("2048,8192" if full else ",".join(map(str, SIZES[mode]["widths"][-2:])))
    args.seeds = args.seeds or (8 if full else 3)
    model, X, y = problem("S1")
    t0 = time.perf_counter()
    limit = zlimit.simulate(model, X, y, steps=args.steps, particles=args.particles, groups=SIZES[mode]["groups"],
                            progress=False)
    wall = time.perf_counter() - t0
    peak = peak_rss()[0] / 2**30
    report = {"problem": "S1", "steps": args.steps, "particles": args.particles, "groups": limit.groups,
              "limit_wall_s": wall, "limit_peak_rss_gib": peak,
              "estimate_gib": zlimit.estimate_memory(model, 10, 10, args.steps, args.particles, limit.groups,
                                                     [np.arange(10)] * args.steps) / 2**30,
              "max_se": float(limit.outputs_se.max()), "widths": {}}
    print(f"limit: {wall:.1f} s, peak RSS {peak:.2f} GiB, max se of f̊ {report['max_se']:.2e}")
    for n in [int(w) for w in args.widths.split(",")]:
        t0 = time.perf_counter()
        f = np.stack([zlimit.train_finite(model, X, y, width=n, steps=args.steps, seed=s, progress=False).outputs
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
