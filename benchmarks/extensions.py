"""What the extensions of maths §6 cost: Monte Carlo run time and basis size, per extension.

The paper's problem (S4: 10 digit images, depth-3 SiLU, σ = √2, lr 0.1) for T full-batch
steps, in this process, after a warm-up that compiles numba, with

* ``plain``: the single-output model (labels ±1, squared loss);
* ``biases``: hidden biases σ_b = 1;
* ``xent10``: 10 outputs, softmax cross-entropy, one image of each digit;
* ``momentum``: heavy ball β = 0.9;
* ``decay``: weight decay λ = 1e-2;
* ``all``: 10-class softmax cross-entropy, biases, momentum 0.9 and weight decay 1e-2;

each ``--repeats`` times, the median of each and its ratio to ``plain``, and the most
directions any basis held (the extensions change the trajectory, hence how many
directions the features open).

    python benchmarks/extensions.py            # T = 100, N = 32 000, G = 4, 3 repeats
    python benchmarks/extensions.py --quick    # T = 30, N = 8 000, 2 repeats
    python benchmarks/extensions.py --tiny     # T = 3, N = 1 000 (or ZLIMIT_BENCH_TINY=1)

Prints one table and writes benchmarks/results/extensions_<timestamp>.json (or ``--json``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import machine_info  # noqa: E402
from problems import mode_of, paper  # noqa: E402
from report import save_result  # noqa: E402

import zlimit  # noqa: E402

SIZES = {"full": dict(steps=100, particles=32_000, repeats=3), "quick": dict(steps=30, particles=8_000, repeats=2),
         "tiny": dict(steps=3, particles=1_000, repeats=1)}
GROUPS = 4
XENT = dict(loss="xent", outputs=10)
#: name -> (MLP arguments added to the paper's model, whether the data are 10 classes)
VARIANTS = {"plain": ({}, False), "biases": (dict(bias_std=1.0), False), "xent10": (XENT, True),
            "momentum": (dict(momentum=0.9), False), "decay": (dict(weight_decay=1e-2), False),
            "all": (dict(XENT, bias_std=1.0, momentum=0.9, weight_decay=1e-2), True)}


def _timed(kw: dict) -> tuple[float, int]:
    """Wall seconds of one simulate call, and the most directions a basis held."""
    start = time.perf_counter()
    run = zlimit.simulate(**kw)
    seconds = time.perf_counter() - start
    return seconds, int(max(np.max(v) for k, v in run.bases.items() if k.startswith("size_")))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--json", type=Path, help="output file (default benchmarks/results/extensions_<timestamp>.json)")
    args = ap.parse_args(argv)
    size = SIZES[mode_of(args.quick, args.tiny)]
    base, X, y, _, _ = paper()
    X10, y10 = zlimit.datasets.digits(classes=range(10), per_class=1, labels="index")
    T = size["steps"]
    common = dict(steps=T, particles=size["particles"], groups=GROUPS, seed=0, threads=GROUPS, progress=False)
    zlimit.simulate(base, X, y, **{**common, "steps": 2, "particles": 400})  # compile
    times, directions = {}, {}
    for name, (extra, classes) in VARIANTS.items():
        model = zlimit.MLP(**{**base.describe(), **extra})
        data = (X10, y10) if classes else (X, y)
        runs = [_timed(dict(model=model, X=data[0], y=data[1], **common)) for _ in range(size["repeats"])]
        times[name], directions[name] = [s for s, _ in runs], runs[0][1]
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"benchmark": "extensions", "machine": machine_info(), "zlimit": zlimit.__version__, "steps": T,
           "particles": size["particles"], "groups": GROUPS, "times_s": times, "median_s": med,
           "ratio": {k: v / med["plain"] for k, v in med.items()}, "directions_max": directions}
    print(f"extensions' cost, paper problem, T = {T}, N = {size['particles']}, G = {GROUPS} "
          f"(median of {size['repeats']})")
    print(f"{'run':>10}{'seconds':>10}{'ratio':>8}{'directions':>12}")
    for name in VARIANTS:
        print(f"{name:>10}{med[name]:10.2f}{res['ratio'][name]:8.2f}{directions[name]:12d}")
    print(f"wrote {save_result(res, args.json, 'extensions_')}")
    return res


if __name__ == "__main__":
    main()
