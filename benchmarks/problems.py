"""The benchmark problems, defined once, with their sizes per mode (full, quick, tiny).

* S1: depth 3, tanh, m = 10, d = 16 (``zlimit.datasets.gaussian(10, 16, seed=0)``),
  lr 0.1, mse, reduction "mean", full batch. T = 50, N = 10^5 in the full run.
* S2: S1 with SiLU. T = 200, N = 2·10^5.
* S3: S1 at other N (cost vs N) and other T (cost vs T).
* TTA: S1 against seed-means of ``zlimit.train_finite`` at several widths.
* S4: the experiment of Chen, Yang, Zhao & Gu (2025, App. A): digits 0/1, 5 per class
  (m = 10, d = 64), 5 held-out images per class, depth-3 SiLU MLP with σ = √2, lr 0.1,
  full-batch SGD on the squared loss.

``SIZES[mode]`` holds everything run.py sizes (S1..TTA, the calibration and the
warm-up); ``S4_SIZES[mode]`` what s4_paper.py does; ``mode_of(args)`` reads the mode
from ``--quick``/``--tiny`` and ``ZLIMIT_BENCH_TINY=1``.
"""
from __future__ import annotations

import math
import os

ROWS = 10  # m = M = b of S1..S3 (full batch, no evaluation inputs)
PARTICLES_PER_DIRECTION = 10  # the benchmark's "particles per group >> directions": N/G >= 10 K

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

# S4: None means simulate's own default (particles, groups).
S4_SIZES = {
    "full": dict(steps=(250, 500, 1000), widths=(4096,), seeds=4, particles=None, groups=None),
    "quick": dict(steps=(100,), widths=(1024,), seeds=2, particles=None, groups=None),
    "tiny": dict(steps=(4,), widths=(32,), seeds=2, particles=2_000, groups=2),
}


def mode_of(quick: bool = False, tiny: bool = False) -> str:
    """"tiny" (``--tiny`` or ZLIMIT_BENCH_TINY=1), "quick" or "full"."""
    if tiny or os.environ.get("ZLIMIT_BENCH_TINY") == "1":
        return "tiny"
    return "quick" if quick else "full"


def problem(name: str):
    """(model, X, y) of S1 (tanh) or S2 (SiLU); S3 and TTA are S1."""
    import zlimit

    if name not in ("S1", "S2", "S3", "TTA"):
        raise ValueError(f"unknown problem {name!r}")
    X, y = zlimit.datasets.gaussian(ROWS, 16, seed=0)
    act = "silu" if name == "S2" else "tanh"
    return zlimit.MLP(depth=3, activation=act, loss="mse", reduction="mean", lr=0.1), X, y


def paper():
    """(model, X, y, X_eval, y_eval) of S4, the paper's experiment (digits 0/1)."""
    import zlimit

    X, y = zlimit.datasets.digits(classes=(0, 1), per_class=5)
    X_eval, y_eval = zlimit.datasets.digits(classes=(0, 1), per_class=5, exclude=X)
    model = zlimit.MLP(depth=3, activation="silu", lr=0.1, init_std=math.sqrt(2))
    return model, X, y, X_eval, y_eval
