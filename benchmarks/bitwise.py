"""Fingerprint of the engine and the finite nets, for comparing two revisions bit for bit.

    PYTHONPATH=<old checkout>/src python benchmarks/bitwise.py old.npz [--steps 300]
    python benchmarks/bitwise.py new.npz [--steps 300]
    python benchmarks/bitwise.py --diff old.npz new.npz

Runs depth-3 SiLU on 6 Gaussian inputs (d = 8, lr 0.1) for T steps: the Monte Carlo
limit (16 000 particles in 4 groups, seed 3) and one width-512 μP net (seed 1), and
saves their outputs and layer-2/3 kernels. ``--diff`` prints, per array, whether the
two files are bit-identical or the largest difference. A refactor that should not
change the numbers must print "bit-identical" for every array.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import zlimit


def fingerprint(path: str, steps: int) -> None:
    X, y = zlimit.datasets.gaussian(6, 8, seed=1)
    model = zlimit.MLP(depth=3, activation="silu", lr=0.1)
    start = time.perf_counter()
    run = zlimit.simulate(model, X, y, steps=steps, particles=16_000, groups=4, progress=False, seed=3)
    net = zlimit.train_finite(model, X, y, width=512, steps=steps, seed=1)  # no progress argument: bitwise.py also runs older versions
    np.savez(path, outputs=run.outputs_groups, k2=run.kernels["h2"], k3=run.kernels["x3"],
             finite_outputs=net.outputs_groups, finite_k2=net.kernels["h2"])
    print(f"{path}: {steps} steps in {time.perf_counter() - start:.1f} s")


def diff(a_path: str, b_path: str) -> None:
    a, b = np.load(a_path), np.load(b_path)
    for name in a.files:
        x, z = a[name], b[name]
        if np.array_equal(x, z, equal_nan=True):
            print(f"{name} {x.shape}: bit-identical")
        else:
            print(f"{name} {x.shape}: max|diff| {np.nanmax(np.abs(x - z)):.3g} (max|x| {np.nanmax(np.abs(x)):.3g})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="OUT.npz, or two files with --diff")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--diff", action="store_true")
    args = parser.parse_args(argv)
    if args.diff:
        diff(*args.paths)
    else:
        fingerprint(args.paths[0], args.steps)


if __name__ == "__main__":
    main()
