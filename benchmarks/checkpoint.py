"""What checkpoints cost: run time with and without them, write time and file size.

The paper's problem (S4: digits 0/1, depth-3 SiLU, lr 0.1, held-out inputs) for T steps,
in this process, after a warm-up that compiles numba:

* ``none``: no checkpoint;
* ``inf``: ``checkpoint_every=inf`` (the session and its per-step boundary, no writes);
* ``every``: ``checkpoint_every=0``, a write after every step (the four groups run at
  once and meet at each step; the worst case: the default interval is 600 s);

each ``--repeats`` times, and the median of each. The ``every`` run is stopped by its
hook after its last step so the final file stays: its size, and the time of one write
(the ``every`` excess over ``none`` divided by the number of writes).

    python benchmarks/checkpoint.py            # T = 100, N = 32 000, G = 4, 3 repeats
    python benchmarks/checkpoint.py --quick    # T = 30, N = 8 000, 2 repeats
    python benchmarks/checkpoint.py --tiny     # T = 3, N = 1 000 (or ZLIMIT_BENCH_TINY=1)

Prints one table and writes benchmarks/results/checkpoint_<timestamp>.json (or ``--json``).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import machine_info  # noqa: E402
from problems import mode_of, paper  # noqa: E402
from report import save_result  # noqa: E402

import zlimit  # noqa: E402

SIZES = {"full": dict(steps=100, particles=32_000, repeats=3), "quick": dict(steps=30, particles=8_000, repeats=2),
         "tiny": dict(steps=3, particles=1_000, repeats=1)}
GROUPS = 4


class _Last(Exception):
    pass


def _timed(kw: dict, every, path: Path, steps: int) -> float:
    """Wall seconds of one simulate call; with ``every`` a checkpoint at ``path`` that the
    hook keeps (it raises after the last step of the last group to finish)."""
    extra, finished = {}, set()
    if every is not None:
        def hook(g, t):
            if t == steps:
                finished.add(g)
                if len(finished) == GROUPS:
                    raise _Last
        extra = dict(checkpoint=path, checkpoint_every=every, on_step=hook)
    path.unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        zlimit.simulate(**kw, **extra)
    except _Last:
        pass
    return time.perf_counter() - start


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--json", type=Path, help="output file (default benchmarks/results/checkpoint_<timestamp>.json)")
    args = ap.parse_args(argv)
    size = SIZES[mode_of(args.quick, args.tiny)]
    model, X, y, X_eval, _ = paper()
    T = size["steps"]
    kw = dict(model=model, X=X, y=y, X_eval=X_eval, steps=T, particles=size["particles"], groups=GROUPS, seed=0,
              threads=GROUPS, progress=False, record_steps=(0, T))  # all groups at once: one write per step
    zlimit.simulate(**{**kw, "steps": 2, "particles": 400, "record_steps": (0,)})  # compile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.ckpt"
        times = {name: [_timed(kw, every, path, T) for _ in range(size["repeats"])]
                 for name, every in (("none", None), ("inf", math.inf), ("every", 0))}
        nbytes = path.stat().st_size
    med = {k: statistics.median(v) for k, v in times.items()}
    writes = T + 1  # the groups run at once and meet at each step: one file per step
    res = {"benchmark": "checkpoint", "machine": machine_info(), "zlimit": zlimit.__version__, "steps": T,
           "particles": size["particles"], "groups": GROUPS, "times_s": times, "median_s": med,
           "ratio_inf": med["inf"] / med["none"], "ratio_every": med["every"] / med["none"],
           "file_bytes": nbytes, "seconds_per_write": (med["every"] - med["none"]) / writes}
    print(f"checkpoint cost, paper problem, T = {T}, N = {size['particles']}, G = {GROUPS} "
          f"(median of {size['repeats']})")
    print(f"{'run':>8}{'seconds':>10}{'ratio':>8}")
    for name in ("none", "inf", "every"):
        print(f"{name:>8}{med[name]:10.2f}{med[name] / med['none']:8.2f}")
    print(f"file at step T: {nbytes / 2**20:.1f} MiB; about {res['seconds_per_write'] * 1e3:.0f} ms per write")
    print(f"wrote {save_result(res, args.json, 'checkpoint_')}")
    return res


if __name__ == "__main__":
    main()
