"""Accuracy and cost of the engine's options on S1-shaped problems.

* dtype="float32" against float64 (same seed, so the difference is round-off only);
* basis_tol: how many Gaussian directions K are kept and how f̊ moves.

Directions are counted from ``run.novelty`` by the engine's rule: a vector opens one
when its residual ‖ρ‖ exceeds basis_tol·‖v‖, ‖v‖ = sqrt(E[Z_v²]) of the vector itself
(``norms``): x^{l-1} for ``fwd{l}`` (the x^{l-1} kernel), dh^l for ``bwd{l}`` (the dh^l
kernel). The count equals ``run.bases["size_{side}{l}"]`` at T (tests/test_benchmarks.py).

    python benchmarks/options.py [--particles 40000] [--steps 30]
Prints a table and writes benchmarks/results/options-<time>.json.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

import zlimit
from problems import problem
from zlimit._results import key, parse_key


def norms(run, name: str) -> np.ndarray:
    """(G, T+1, M) norms sqrt(E[Z²]) of the vectors whose residuals ``run.novelty[name]`` holds.

    ``fwd{l}``: the rows x^{l-1}_t (all M inputs, steps 0..T), from the x^{l-1} kernel.
    ``bwd{l}``: the rows dh^l_t of the batch (steps 0..T-1), from the dh^l kernel, NaN
    outside the batch and at step T. Per group, as the engine decides per group.
    """
    side, l, _ = parse_key(name)
    diag = lambda K: np.sqrt(np.einsum("gtaa->gta", K))
    if side == "fwd":
        return diag(run.kernel_groups(l - 1, "x"))
    out = np.full(run.novelty[name].shape, np.nan)
    dh = diag(run.kernel_groups(l, "dh"))  # (G, T, m)
    out[:, : dh.shape[1], : dh.shape[2]] = dh
    return out


def directions(run) -> dict:
    """Mean over groups of the directions opened per basis: training rows with ‖ρ‖ > basis_tol·‖v‖."""
    tol, m = run.meta["basis_tol"], run.m
    out = {}
    for name, rho in run.novelty.items():
        with np.errstate(invalid="ignore"):
            kept = (rho > tol * norms(run, name)) & np.isfinite(rho)
        out[name] = float(kept[:, :, :m].sum(axis=(1, 2)).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--particles", type=int, default=40_000)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    model, X, y = problem("S1")
    rows = []
    base = None
    for dtype, tol in [("float64", 1e-6), ("float32", 1e-6), ("float64", 1e-3), ("float64", 1e-2), ("float64", 1e-1)]:
        t0 = time.perf_counter()
        run = zlimit.simulate(model, X, y, steps=args.steps, particles=args.particles, dtype=dtype,
                              basis_tol=tol, progress=False, seed=1)
        secs = time.perf_counter() - t0
        base = base or run
        diff = np.abs(run.outputs - base.outputs)[1:]
        rows.append({"dtype": dtype, "basis_tol": tol, "seconds": secs, "directions": directions(run),
                     "max_abs_diff_vs_float64": float(diff.max()),
                     "max_diff_in_se": float((diff / base.outputs_se[1:]).max()),
                     "max_se": float(run.outputs_se.max())})
        r, k = rows[-1], rows[-1]["directions"]
        print(f"{dtype:8s} tol={tol:<6g} {secs:6.1f} s  K(fwd2,bwd2)=({k.get(key('fwd', 2), 0):.0f},"
              f"{k.get(key('bwd', 2), 0):.0f})  max|Δf̊|={r['max_abs_diff_vs_float64']:.2e} "
              f"({r['max_diff_in_se']:.2f} se)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"options-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"particles": args.particles, "steps": args.steps, "rows": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
