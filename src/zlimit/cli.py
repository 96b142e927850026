"""The ``zlimit`` command line (also ``python -m zlimit``).

Commands::

    zlimit demo [--out DIR] [--quick]
    zlimit simulate CONFIG.toml [--out DIR]
    zlimit compare CONFIG.toml [--out DIR]
    zlimit paper-figure --data digits|cifar10 [--path DIR] [--steps T] [--widths 8,64,512,4096]
                        [--seeds S] [--particles N] [--groups G] [--lr ETA]
                        [--activation silu|tanh|relu] [--out DIR]

Progress bars are drawn when standard error is a terminal (not into a log file or a
pipe; :mod:`zlimit._progress`). Every command takes ``--quiet`` (no progress bars at
all) and ``--debug`` (full tracebacks).
Configuration files are described by ``zlimit simulate --help`` (the docstring of :mod:`zlimit._config`).

Over MPI, ``mpiexec -n R zlimit simulate CONFIG.toml`` splits every particle group over
R ranks (``pip install "zlimit[mpi]"``; :mod:`zlimit._mpi`, ``docs/scaling.md``). Every
rank reads the configuration; only rank 0 prints and writes files. An error on any
rank ends every rank with one line from rank 0 (or, for an error only one rank meets
inside the run, from that rank), and Ctrl-C ends every rank (exit status 130). The
other commands do not run under an MPI launcher.

Exit status: 0 on success; 2 for usage and configuration errors (bad arguments,
invalid TOML or settings, a path that is missing, of the wrong kind or not permitted,
a data file that is not what it should be); 1 for runtime failures (a run that
diverges or breaks down numerically, not enough memory, a missing optional package,
any other operating-system error such as a full disk while writing results); 130 when
interrupted (Ctrl-C). Errors are printed as one line, ``zlimit: error: ...`` (or
``zlimit: interrupted``), on stderr, and each warning as one line ``zlimit: warning:
...``; ``--debug`` adds the traceback and shows warnings in Python's own format.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np

from ._validate import check_float, check_int, check_int_list

__all__ = ["main", "build_parser"]

PROG = "zlimit"


# ---------------------------------------------------------------------- helpers
# argparse reads text; the checks themselves are zlimit._validate's, the messages say what to type
def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 8,64,512, got {text!r}") from None
    try:
        return check_int_list("values", values, 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}") from None


def _widths(text: str) -> list[int]:
    """Comma-separated widths; empty for none (``paper-figure --widths ""``: the limit only)."""
    return _int_list(text) if text.strip() else []


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    try:
        return check_int("value", v, 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}") from None


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    try:
        return check_float("value", v, 0, lo_open=True)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None


def _out_dir(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {path!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _say(text: str = "") -> None:
    print(text, flush=True)


def _progress(args):
    """The commands' ``progress``: off with --quiet, else automatic (a bar only on a terminal)."""
    return False if args.quiet else None


def _targets(model, y):
    """The targets drawn by :func:`zlimit.plot.trajectories`: none for class labels."""
    return None if model.loss.labels == "class" else y


def _save_figures(figures: dict, out: Path) -> list[str]:
    """Write and close each figure; the paths written."""
    import matplotlib.pyplot as plt

    written = []
    for name, fig in figures.items():
        try:
            fig.savefig(out / name, dpi=110)
        finally:
            plt.close(fig)
        written.append(str(out / name))
    return written


def _config_format() -> str:
    """The TOML format, as its module documents it, for the help of simulate and compare."""
    from . import _config

    return _config.__doc__


def _config_data(cfg):
    X, y, X_eval = cfg.load_data()
    return X, y, X_eval, cfg.batches(X.shape[0])


def _output_table(run) -> str:
    """The outputs f_0 and f_T of every input with the standard error of f_T ("n/a" with
    one group), evaluation inputs marked. For a model of k > 1 outputs a row holds the
    norms ‖f_0‖ and ‖f_T‖ over the classes, the standard error of the vector f_T,
    sqrt(Σ_c se_c²), and the class of the largest f_T (a first line says so)."""
    k = run.model.outputs
    f0, fT = run.outputs[0], run.outputs[-1]  # (M,), or (M, k)
    se = None if run.outputs_se is None else run.outputs_se[-1]
    if k == 1:
        lines, names, predicted = [], ("f_0", "f_T", ""), [""] * len(f0)
    else:
        lines = [f"outputs of {k} classes: norms over the classes, se = sqrt(sum of the squared standard errors), "
                 "class = argmax f_T"]
        names, predicted = ("‖f_0‖", "‖f_T‖", f"{'class':>7}"), [f"{c:>7}" for c in np.argmax(fT, axis=1)]
        f0, fT, se = (None if v is None else np.linalg.norm(v, axis=1) for v in (f0, fT, se))
    lines.append(f"{'input':>7}{names[0]:>10}{names[1]:>12}{'± se':>10}{names[2]}")
    for a in range(len(f0)):
        s = "n/a" if se is None else f"{se[a]:.4f}"
        lines.append(f"{a:>7}{f0[a]:10.4f}{fT[a]:12.4f}{s:>10}{predicted[a]}{'' if a < run.m else ' (eval)'}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- commands
def cmd_demo(args) -> int:
    from ._demo import run_demo

    run_demo(_out_dir(args.out), quick=args.quick, progress=_progress(args))
    return 0


def cmd_simulate(args) -> int:
    from . import plot
    from ._config import load_config
    from ._api import simulate

    comm, lead = args.comm, _lead(args)

    def prepare():
        cfg = load_config(args.config)
        if comm is not None and cfg.run.parametrization != "mup":
            raise ValueError(f"{cfg.path.name}: parametrization = {cfg.run.parametrization!r} has no particles to "
                             "split over MPI ranks; run it without mpiexec")
        return cfg, _config_data(cfg), _out_dir(args.out) if lead else None

    cfg, (X, y, X_eval, batches), out = _on_every_rank(comm, prepare)
    r = cfg.run
    run = simulate(cfg.model, X, y, steps=r.steps, particles=r.particles, groups=r.groups, seed=r.seed,
                   X_eval=X_eval, batches=batches, parametrization=r.parametrization, progress=_progress(args),
                   checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every, comm=comm)
    if not lead:
        return 0
    run.save(out / "limit.npz")
    written = [str(out / "limit.npz")]
    written += _save_figures({"outputs.png": plot.trajectories(run, max_inputs=6, y=_targets(cfg.model, y))}, out)
    ranks = "" if comm is None else f", over {comm.Get_size()} MPI ranks"
    _say(f"zlimit simulate: {cfg.path.name}: {r.parametrization} limit, {r.steps} steps, "
         f"{r.particles} particles in {r.groups} groups{ranks}")
    _say(_output_table(run))
    _say(f"training loss: {run.loss[0]:.4g} -> {run.loss[-1]:.4g}")
    _say("Wrote:\n" + "\n".join(f"  {p}" for p in written))
    return 0


def cmd_compare(args) -> int:
    from . import plot
    from ._config import ConfigError, load_config
    from ._demo import compare_reported, coord_table, fit_report
    from ._validate import check_seeds

    cfg = load_config(args.config)
    r = cfg.run
    try:  # compare's seeds run.seed, ..., run.seed + seeds - 1 (simulate takes any seed)
        check_seeds("seeds", r.seeds if isinstance(r.seeds, int) else list(r.seeds), r.seed)
    except ValueError as exc:
        raise ConfigError(f"{cfg.path.name}: [run] {exc}") from None
    X, y, X_eval, batches = _config_data(cfg)
    out = _out_dir(args.out)
    cmp = compare_reported(cfg.model, X, y, widths=r.widths,
                           seeds=list(r.seeds) if isinstance(r.seeds, tuple) else r.seeds, steps=r.steps,
                           particles=r.particles, groups=r.groups, X_eval=X_eval, batches=batches,
                           parametrization=r.parametrization, seed=r.seed, progress=_progress(args))
    cmp.limit.save(out / "limit.npz")
    written = [str(out / "limit.npz")]
    (out / "finite").mkdir(exist_ok=True)
    for (w, s), run in cmp.finite.items():
        run.save(out / "finite" / f"w{w}_s{s}.npz")
    written.append(str(out / "finite") + f"/w*_s*.npz ({len(cmp.finite)} files)")
    cmp.table.to_csv(out / "comparison.csv", index=False)
    written.append(str(out / "comparison.csv"))
    with open(out / "fit.json", "w") as fh:
        json.dump({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in cmp.fit.to_dict().items()},
                  fh, indent=1)
    written.append(str(out / "fit.json"))
    runs_by_width = {w: [cmp.finite[(w, s)] for s in cmp.seeds] for w in cmp.widths}
    written += _save_figures({"trajectories.png": plot.trajectories(cmp, y=_targets(cfg.model, y)),
                              "deviation.png": plot.deviation(cmp),
                              "coord_check.png": plot.coord_check(runs_by_width, limit=cmp.limit)}, out)
    _say(f"zlimit compare: {cfg.path.name}: {cmp.parametrization} networks, widths {cmp.widths}, "
         f"seeds {cmp.seeds}, {r.steps} steps; limit with {r.particles} particles in {r.groups} groups")
    _say(coord_table(cmp))
    _say(fit_report(cmp.fit))
    _say("Wrote:\n" + "\n".join(f"  {p}" for p in written))
    return 0


def cmd_paper_figure(args) -> int:
    from ._demo import paper_figure

    if args.path is not None and args.data != "cifar10":
        raise ValueError("--path is only for --data cifar10")
    out = _out_dir(args.out)
    result = paper_figure(data=args.data, path=args.path, steps=args.steps, widths=args.widths, seeds=args.seeds,
                          particles=args.particles, groups=args.groups, lr=args.lr, activation=args.activation,
                          out_dir=out, progress=_progress(args))
    s, t = result.settings, result.settings["timings"]
    nets = f"widths {s['widths']} × {s['seeds']} seed(s)" if s["widths"] else "limit only (no finite nets)"
    _say(f"zlimit paper-figure: {s['data']}, {s['m']} samples ({s['m_eval']} held out), depth 3 {s['activation']}, "
         f"lr {s['lr']}, {s['steps']} steps; {nets}; μP limit with {s['particles']} particles in {s['groups']} groups")
    _say("Feature change Δh = ‖h_T − h_0‖/‖h_0‖, λmin of the normalised Gram of (h_0, h_T) and the "
         "held-out MSE of f_T:")
    _say(result.summary())
    _say(f"Time: finite nets {t['finite_s']:.1f} s, limit {t['limit_s']:.1f} s")
    _say("Wrote:\n" + "\n".join(f"  {p}" for p in result.files))
    return 0


# ---------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error."""

    def error(self, message: str):
        self.exit(2, f"{PROG}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``zlimit`` command and its subcommands."""
    common = _Parser(add_help=False)
    common.add_argument("--quiet", action="store_true",
                        help="no progress bars (without it, bars are drawn when stderr is a terminal)")
    common.add_argument("--debug", action="store_true", help="show full tracebacks on errors")

    parser = _Parser(
        prog=PROG,
        description="Infinite-width μP limits of MLPs trained by SGD, and finite networks for comparison.",
    )
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("demo", parents=[common], help="built-in example: μP networks vs the limit",
                       description="Finite μP networks of growing width against the infinite-width limit on a "
                                   "small Gaussian problem; prints a coordinate-check table and writes figures.")
    p.add_argument("--out", default="zlimit-demo", metavar="DIR", help="output folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="a much smaller run (seconds)")
    p.set_defaults(func=cmd_demo)

    for name, func, text in (
        ("simulate", cmd_simulate, "the infinite-width limit of a configured run"),
        ("compare", cmd_compare, "finite networks of several widths and seeds against the limit"),
    ):
        p = sub.add_parser(name, parents=[common], help=text, description=text[0].upper() + text[1:] +
                           " (the configuration format is below).", epilog=_config_format(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("config", metavar="CONFIG.toml", help="run configuration ([model], [data], [run])")
        p.add_argument("--out", default=f"zlimit-{name}", metavar="DIR", help="output folder (default: %(default)s)")
        p.set_defaults(func=func)
    p = sub.choices["simulate"]
    p.add_argument("--checkpoint", metavar="PATH",
                   help="save the run's state to PATH every --checkpoint-every seconds and on Ctrl-C; "
                        "run the same command again to resume (bit-identical); removed when the run completes")
    p.add_argument("--checkpoint-every", type=float, metavar="SECONDS",
                   help="seconds between checkpoints, 0 for every step (default: 600)")

    p = sub.add_parser("paper-figure", parents=[common],
                       help="feature change, linear independence and held-out error vs width (paper Figs. 1-2)",
                       description="Chen et al. (2025) Figures 1-2, Appendix A: 3 hidden layers (σ = √2), 10 samples "
                                   "of two classes, lr 0.1, 1000 steps; μP/SP/NTP/IP networks over widths and the "
                                   "infinite-width μP limit, with the MSE on held-out samples.")
    p.add_argument("--data", choices=("digits", "cifar10"), default="digits", help="data set (default: digits)")
    p.add_argument("--path", metavar="DIR", help="CIFAR-10 folder (cifar-10-batches-py), for --data cifar10")
    p.add_argument("--steps", type=_positive_int, default=1000, metavar="T",
                   help="SGD steps (default: %(default)s, the paper's)")
    p.add_argument("--widths", type=_widths, default=[8, 64, 512, 4096], metavar="W1,W2,...",
                   help='finite widths (default: 8,64,512,4096); --widths "" runs the limit only')
    p.add_argument("--seeds", type=_positive_int, default=2, metavar="S", help="seeds per width (default: %(default)s)")
    p.add_argument("--particles", type=_positive_int, default=32_000, metavar="N",
                   help="particles of the limit (default: %(default)s, under 5 minutes for 1000 steps on 2 cores)")
    p.add_argument("--groups", type=_positive_int, default=4, metavar="G",
                   help="particle groups of the limit (default: %(default)s; the Monte Carlo noise of the "
                        "smallest eigenvalue shrinks with particles per group)")
    p.add_argument("--lr", type=_positive_float, default=0.1, metavar="ETA",
                   help="base learning rate (default: %(default)s, the paper's)")
    p.add_argument("--activation", choices=("silu", "tanh", "relu"), default="silu",
                   help="activation (default: %(default)s)")
    p.add_argument("--out", default="zlimit-paper-figure", metavar="DIR", help="output folder (default: %(default)s)")
    p.set_defaults(func=cmd_paper_figure)
    return parser


#: errors that say a path given is unusable: the user must change it (exit status 2)
_PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


class _RankError(Exception):
    """An error another MPI rank met (:func:`_on_every_rank`), with that rank's exit status."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _lead(args) -> bool:
    """Whether this process prints and writes: always, except on MPI ranks other than 0."""
    return args.comm is None or args.comm.Get_rank() == 0


def _on_every_rank(comm, task):
    """``task()`` on every MPI rank (just ``task()`` without ``comm``); when it raises on
    any rank, every rank raises: its own error, or the first failing rank's as a
    :class:`_RankError` (a file that one rank cannot read must not leave the others
    waiting in the run's first collective)."""
    if comm is None:
        return task()
    try:
        result, error = task(), None
    except Exception as exc:
        result, error = None, exc
    errors = comm.allgather(None if error is None else (_one_line(error), _exit_code(error) or 1))
    failed = [(rank, e) for rank, e in enumerate(errors) if e is not None]
    if error is not None:
        raise error
    if failed:
        rank, (line, code) = failed[0]
        raise _RankError(f"on MPI rank {rank}: {line}", code)
    return result


def _exit_code(exc: BaseException) -> int | None:
    """2 for usage, configuration and path errors, 1 for runtime failures, None for bugs."""
    from ._errors import DivergenceError, NumericalError, ResourceError

    if isinstance(exc, _RankError):
        return exc.code
    if isinstance(exc, (ValueError, *_PATH_ERRORS)):
        return 2
    if isinstance(exc, (DivergenceError, NumericalError, FloatingPointError, ResourceError, MemoryError,
                        ImportError, OSError)):
        return 1
    return None


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line; an OSError as 'strerror: filename'."""
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        names = " -> ".join(repr(os.fsdecode(f)) for f in (exc.filename, exc.filename2) if f is not None)
        text = f"{exc.strerror}: {names}" if names else exc.strerror
    text = " ".join(text.split())
    if not text:
        text = "out of memory (MemoryError)" if isinstance(exc, MemoryError) else type(exc).__name__
    return text


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` of the command line: one flushed line on stderr."""
    print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def _fail(args, line: str, code: int) -> int:
    """Print ``line`` (after the traceback with --debug; over MPI, on rank 0 only) and return ``code``."""
    if not _lead(args):
        return code
    if args.debug:
        traceback.print_exc()
    print(line, file=sys.stderr, flush=True)
    return code


def _run(args) -> int:
    """Run the chosen command; an error we expect becomes one line and an exit status."""
    try:
        return args.func(args)
    except KeyboardInterrupt as exc:
        return _fail(args, f"{PROG}: {exc}" if str(exc) else f"{PROG}: interrupted", 130)
    except Exception as exc:
        code = _exit_code(exc)
        if code is None:  # not an error we expect: a bug; show everything
            raise
        return _fail(args, f"{PROG}: error: {_one_line(exc)}", code)


def main(argv=None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (printed by the parser)
        return exc.code
    from ._mpi import world

    args.comm = None
    try:
        args.comm = world()  # started by mpiexec (or srun) as one of several ranks
    except ImportError as exc:
        return _fail(args, f"{PROG}: error: {_one_line(exc)}", 1)
    if args.comm is not None and args.func is not cmd_simulate:
        return _fail(args, f"{PROG}: error: only 'zlimit simulate' runs over MPI ranks; run 'zlimit {args.command}' "
                           "without mpiexec", 2)
    with warnings.catch_warnings():  # restores the warning settings when done (main may run in-process)
        if not _lead(args):
            warnings.simplefilter("ignore")  # rank 0 shows them
        elif not args.debug:
            warnings.showwarning = _show_warning
            # float overflow inside a diverging run: the run itself reports the divergence
            warnings.filterwarnings("ignore", category=RuntimeWarning,
                                    message="(overflow|invalid value|divide by zero) encountered")
        return _run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
