"""Checkpoints, resume and Ctrl-C: stop a run between steps and carry on where it stopped.

A run with ``checkpoint=PATH`` (:func:`zlimit.simulate` with the Monte Carlo engine,
:func:`zlimit.train_finite`) writes the whole state of its trajectories to PATH every
``checkpoint_every`` seconds, on Ctrl-C and when an ``on_step`` hook raises. Calling
again with the same arguments and the same path resumes; the final
:class:`~zlimit.Run` is bit-identical to an uninterrupted run's, at any thread count,
because every number of a trajectory depends only on its arguments and its state
at the end of a step, and the state is stored exactly. The file is removed when the
run completes.

File format ("zlimit-checkpoint", version 2)
--------------------------------------------
One uncompressed ``.npz`` archive of plain arrays (read with ``allow_pickle=False``):

=============================  ==============================================
``__checkpoint__``             0-d unicode array: one JSON document (below)
``{g}/state/{name}``           group (trajectory) g's state after its last step
``{g}/record/{name}``          what its :class:`~zlimit._driver.Recorder` holds
=============================  ==============================================

The JSON document is ``{"format", "format_version", "zlimit_version", "identity",
"steps": {g: t}}``: ``identity`` describes the arguments (model, settings, SHA-256
of the data) and ``steps[g]`` is the last step trajectory g completed (its final
step when it is done; groups not listed have not started). A file whose identity
differs from the call's is refused and left untouched, and so is a file of another
format version or zlimit version (version 2 added the recorder's moments; a version-1
file has none to resume from).

Stopping
--------
A :class:`Session` coordinates the trajectories of one call. Each trajectory calls
:meth:`Session.boundary` after every step; when a checkpoint is due (the interval
has passed, Ctrl-C was pressed or a hook raised) every running trajectory waits at
its next boundary, the last one to arrive writes the file, and then they go on —
or stop, raising :class:`Stopped`, when the run is being stopped. While a session is
active in the main thread, SIGINT sets its stop flag instead of raising
``KeyboardInterrupt`` mid-step (a second Ctrl-C raises at once).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import tempfile
import threading
import time
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np

from ._activations import apply
from ._atomic import atomic_write
from ._errors import CheckpointWarning
from ._version import __version__

__all__ = ["Checkpoint", "Session", "Stopped", "identity", "resume", "hook_step", "stop_on_sigint", "DEFAULT_EVERY"]

FORMAT, FORMAT_VERSION = "zlimit-checkpoint", 2
_META = "__checkpoint__"
#: seconds between checkpoints when only a path is given
DEFAULT_EVERY = 600.0


class Stopped(Exception):
    """Raised in a trajectory's thread when the session stops it between steps."""


# ------------------------------------------------------------------ identity
def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


#: where a custom activation or loss is evaluated for its fingerprint
_PROBE = np.linspace(-8.0, 8.0, 257)


def _function_digest(model) -> dict:
    """SHA-256 of the activation (φ, φ') and the loss (ℓ, ∂ℓ/∂f) on a fixed grid, in
    float64 and float32: two functions of the same name but other values differ here."""
    act, loss = model.activation, model.loss
    if loss.labels == "class":  # per-sample losses of k = 3 logits and a class index
        f, y = _PROBE[:-2].reshape(-1, 3), np.arange(85) % 3
    else:
        f, y = np.meshgrid(_PROBE[::8], np.array([-1.0, 0.0, 0.5, 1.0]))
    with np.errstate(all="ignore"):
        return {"activation": _digest(*(apply(fn, _PROBE.astype(dt)) for fn in (act.phi, act.dphi)
                                         for dt in (np.float64, np.float32))),
                "loss": _digest(np.asarray(loss.value(f, y), float), np.asarray(loss.grad(f, y), float))
                + loss.labels}


def identity(producer: str, model, data, settings, skip: tuple[str, ...] = ()) -> dict:
    """A JSON-able description of everything that determines a run's numbers.

    ``producer`` ("mc" or "finite"), the model's description with fingerprints of
    its activation and loss functions, the settings (without the fields in
    ``skip``: thread counts and progress bars do not change the numbers) and
    SHA-256 digests of X, y, X_eval and the batch schedule.
    """
    plain = {k: (v.name if isinstance(v, np.dtype) else list(v) if isinstance(v, tuple) else v)
             for k, v in asdict(settings).items() if k not in skip}
    return {"producer": producer, "model": model.describe(), "functions": _function_digest(model),
            "settings": plain, "X": _digest(data.X), "y": _digest(data.y), "X_eval": _digest(data.X_eval),
            "batches": _digest(*data.batches)}


def _difference(stored: dict, wanted: dict) -> str:
    """The first entry in which two identities differ, in words."""
    for k in [*wanted, *(k for k in stored if k not in wanted)]:  # settings before data
        a, b = stored.get(k), wanted.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _difference(a, b)
            if inner:
                return f"{k}.{inner}" if not inner.startswith(" ") else f"{k}{inner}"
        elif a != b:
            if k in ("X", "y", "X_eval", "batches", "activation", "loss"):
                return f"{k} (its values differ)"
            return f"{k} ({a!r} there, {b!r} here)"
    return ""


# ---------------------------------------------------------------------- file
def _write_npz(fh, items: Iterable[tuple[str, np.ndarray]]) -> None:
    """An uncompressed .npz from (name, array) pairs, one array in memory at a time."""
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in items:
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)


@dataclass
class Checkpoint:
    """The checkpoint file of one call: where, how often, and what it resumes from.

    Parameters
    ----------
    path : Path
    every : float
        Seconds between writes (0: after every step).
    identity : dict
        :func:`identity` of the call; a file with another is refused.
    """

    path: Path
    every: float
    identity: dict
    steps: dict[int, int] = field(default_factory=dict)  # last completed step of each group in the file
    _archive: object = None

    def __post_init__(self):
        self.path = Path(self.path)
        if self.path.exists():
            self._open()
        else:  # no file yet (a dangling symlink is written through): can it be written there?
            _probe_folder(Path(os.path.realpath(self.path)).parent, self.path)

    @property
    def where(self) -> str:
        return f"checkpoint {self.path}"

    def _refuse(self, why: str) -> ValueError:
        return ValueError(f"{self.where} {why}; it was left untouched: give another path, or delete it to start "
                          "afresh")

    def _open(self) -> None:
        """Read and check the existing file; its arrays stay on disk until asked for."""
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.where} is a folder; give a file path")
        if not self.path.is_file():
            raise ValueError(f"{self.where} is not a regular file; give a file path")
        try:
            with zipfile.ZipFile(self.path) as z:
                bad = z.testzip()  # every member's CRC: a damaged file is refused before any work
            if bad is not None:
                raise ValueError(f"member {bad} is damaged")
            archive = np.load(self.path, allow_pickle=False)
            info = json.loads(str(archive[_META][()]))
            if info.get("format") != FORMAT:
                raise ValueError("not a zlimit checkpoint")
        except Exception as exc:  # any unreadable file: refuse it, and never overwrite it
            raise self._refuse(f"exists but is not a readable zlimit checkpoint ({exc})") from None
        version = (info.get("format_version"), info.get("zlimit_version"))
        if version != (FORMAT_VERSION, __version__):
            archive.close()
            raise ValueError(f"{self.where} was written by zlimit {info.get('zlimit_version')} (format "
                             f"{info.get('format_version')}) and this is zlimit {__version__}: it cannot be resumed; "
                             "finish it with that version, or delete it to start afresh")
        differ = _difference(info.get("identity", {}), self.identity)
        if differ:
            archive.close()
            raise ValueError(f"{self.where} is of a run with other arguments: {differ}; it was left untouched: "
                             "call with the same arguments to resume it, or give another path")
        self._take(archive, info)

    def _take(self, archive, info: dict) -> None:
        """Use ``archive`` (its JSON ``info``) for the groups not yet resumed."""
        last = self.identity["settings"]["steps"]
        try:
            steps = {int(g): int(t) for g, t in info["steps"].items()}
        except (AttributeError, KeyError, TypeError, ValueError):
            archive.close()
            raise self._refuse("has no valid table of steps") from None
        if not all(0 <= t <= last for t in steps.values()):
            archive.close()
            raise self._refuse(f"lists steps outside 0..{last}")
        if self._archive is not None:
            self._archive.close()
        self.steps, self._archive = steps, archive

    def arrays(self, g: int, part: str) -> dict[str, np.ndarray]:
        """Group g's stored ``part`` ("state" or "record"), read from the file.

        Raises
        ------
        ValueError
            When the file does not hold what its table says (an edited file); the
            record must have the loss of steps 0..t and none after.
        """
        prefix = f"{g}/{part}/"
        try:
            out = {k[len(prefix):]: self._archive[k] for k in self._archive.files if k.startswith(prefix)}
        except Exception as exc:
            raise self._refuse(f"could not be read ({exc})") from None
        if part == "record":
            t, loss = self.steps[g], out.get("loss")
            if loss is None or not (np.isfinite(loss[:t + 1]).all() and np.isnan(loss[t + 1:]).all()):
                raise self._refuse(f"says group {g} stopped after step {t} but its record does not")
        return out

    def write(self, steps: dict[int, int], parts: Iterator[tuple[str, np.ndarray]]) -> None:
        """Replace the file atomically by one holding ``parts`` (names ``{g}/{part}/{name}``),
        then read the groups not yet resumed from it (the old file is let go)."""
        info = {"format": FORMAT, "format_version": FORMAT_VERSION, "zlimit_version": __version__,
                "identity": self.identity, "steps": {str(g): t for g, t in sorted(steps.items())}}

        def items():
            yield _META, np.array(json.dumps(info))
            yield from parts

        atomic_write(self.path, lambda fh: _write_npz(fh, items()), what="checkpoint")
        self._take(np.load(self.path, allow_pickle=False), info)

    def remove(self) -> None:
        """Delete the file (the run completed); through a symlink, its target."""
        if self._archive is not None:
            self._archive.close()
        Path(os.path.realpath(self.path)).unlink(missing_ok=True)


def _probe_folder(folder: Path, path: Path) -> None:
    """Raise now, not at the first write hours later, when ``folder`` cannot take a file."""
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint {path}: the folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".zlimit-probe.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise type(exc)(exc.errno, f"checkpoint {path} cannot be written: {exc.strerror}; choose another folder") \
            from None


# ------------------------------------------------------------------- session
@dataclass
class _Trajectory:
    state: object
    recorder: object
    step: int  # last completed step


class Session:
    """The trajectories of one call, their checkpoint, and the stop flag.

    Parameters
    ----------
    checkpoint : Checkpoint or None
    """

    def __init__(self, checkpoint: Checkpoint | None):
        self.checkpoint = checkpoint
        self.stop = threading.Event()  # set by Ctrl-C, a failing trajectory or a raising hook
        self.reason = ""
        self._cond = threading.Condition()
        self._running: dict[int, _Trajectory] = {}
        self._done: dict[int, _Trajectory] = {}
        self._parked: set[int] = set()
        self._due = False
        self._round = 0  # checkpoints written (or abandoned): a parked trajectory waits for the next
        self._saved_final = False
        self._last = time.monotonic()
        self.written_step: dict[int, int] = {}

    # -- what trajectories call
    def begin(self, g: int) -> tuple[int, dict, dict] | None:
        """Before trajectory g starts: its stored (last step, state arrays, record
        arrays) if the checkpoint file has them, else None.

        Raises
        ------
        Stopped
            When the session is stopping.
        """
        with self._cond:  # the file is read under the lock: a writer may be streaming from it
            if self.stop.is_set():
                raise Stopped
            c = self.checkpoint
            if c is None or g not in c.steps:
                return None
            return c.steps[g], c.arrays(g, "state"), c.arrays(g, "record")

    def running(self, g: int, state, recorder, step: int) -> None:
        """Trajectory g has its state, restored up to ``step`` (−1: fresh)."""
        with self._cond:
            self._running[g] = _Trajectory(state, recorder, step)

    def boundary(self, g: int, t: int) -> bool:
        """After step t of trajectory g: write a checkpoint if one is due; True when
        the trajectory must stop (it then calls :meth:`leave`).

        A stop that arrives while the trajectory waits for a periodic checkpoint
        sends it round again, to the final one: every trajectory that stops is in it.
        """
        c = self.checkpoint
        with self._cond:
            self._running[g].step = t
            while True:
                stopping = self.stop.is_set()  # read once: SIGINT may set it at any moment
                final = c is not None and stopping and not self._saved_final
                if final or c is not None and not self._saved_final and time.monotonic() - self._last >= c.every:
                    self._due = True
                if not self._due:
                    return stopping
                self._parked.add(g)
                this = self._round
                self._write_if_all_parked()
                self._cond.wait_for(lambda: self._round != this)
                if not (c is not None and self.stop.is_set() and not self._saved_final):
                    return self.stop.is_set()

    def leave(self, g: int) -> None:
        """Trajectory g stopped between steps (after :meth:`boundary` returned True)."""
        with self._cond:
            self._running.pop(g, None)
            self._write_if_all_parked()

    def finish(self, g: int) -> None:
        """Trajectory g completed its last step (its recorder is final). Its state (a
        group's Gaussian bases) and the features its recorder kept for cross-step
        kernels are dropped: a finished group must not hold memory while the others run."""
        with self._cond:
            done = self._running.pop(g)
            done.state = None
            done.recorder.kept.clear()
            self._done[g] = done
            self._write_if_all_parked()

    def fail(self, g: int) -> None:
        """Trajectory g raised inside a step: stop the others, write nothing."""
        with self._cond:
            self._running.pop(g, None)
            self.stop.set()
            self._saved_final = True  # nothing more is written: the file keeps the last good state
            self._due = False
            self._parked.clear()
            self._round += 1
            self._cond.notify_all()

    def interrupt(self, reason: str) -> None:
        """Stop every trajectory at its next boundary, checkpointing first (a hook raised)."""
        self.reason = reason
        self.stop.set()

    # -- internals
    def _write_if_all_parked(self) -> None:
        """Write the checkpoint once every running trajectory waits at a boundary.

        A periodic write that fails (a full disk) warns and the run goes on, keeping the
        previous file; the final write on a stop raises.
        """
        if not self._due or not self._parked >= set(self._running):
            return
        try:
            if self._running or self.stop.is_set():
                self._write()
        except OSError as exc:
            if self.stop.is_set():
                raise
            warnings.warn(f"{exc}; the run goes on, and the previous checkpoint is kept", CheckpointWarning,
                          stacklevel=2)
        finally:
            self._saved_final = self.stop.is_set()
            self._due = False
            self._parked.clear()
            self._round += 1
            self._last = time.monotonic()
            self._cond.notify_all()

    def _write(self) -> None:
        c = self.checkpoint
        live = {**self._done, **self._running}
        steps = {g: tr.step for g, tr in live.items() if tr.step >= 0}
        pending = {g: t for g, t in c.steps.items() if g not in live}  # stored, not yet resumed here

        def parts():
            for g in sorted(steps):
                tr = live[g]
                if g not in self._done:
                    yield from ((f"{g}/state/{k}", v) for k, v in tr.state.snapshot().items())
                yield from ((f"{g}/record/{k}", v) for k, v in tr.recorder.snapshot().items())
            for g in sorted(pending):
                for part in ("state", "record"):
                    yield from ((f"{g}/{part}/{k}", v) for k, v in c.arrays(g, part).items())

        c.write({**pending, **steps}, parts())
        self.written_step = {**pending, **steps}

    def results(self, futures: list) -> list:
        """The trajectories' results, in order, once every future is done.

        Raises
        ------
        BaseException
            The first error a trajectory raised (by index), other than :class:`Stopped`.
        KeyboardInterrupt
            When the run was stopped by Ctrl-C (:meth:`stopped_error`).
        """
        for f in futures:
            exc = f.exception()
            if exc is not None and not isinstance(exc, Stopped):
                raise exc
        if self.stop.is_set():
            raise self.stopped_error()
        return [f.result() for f in futures]

    def stopped_error(self) -> KeyboardInterrupt:
        """The KeyboardInterrupt a stopped call raises, saying where it stopped."""
        where = ""
        if self.checkpoint is not None and self.written_step:
            where = (f"; the checkpoint {self.checkpoint.path} holds steps up to "
                     f"{max(self.written_step.values())}: call again with the same arguments to resume")
        return KeyboardInterrupt(f"interrupted{where}")


def resume(session: Session, g: int, state, recorder, stored: tuple[int, dict, dict]) -> int:
    """Restore trajectory g's ``recorder`` and ``state`` (None for a completed one) from
    what :meth:`Session.begin` returned; the last step it had done.

    Raises
    ------
    ValueError
        When the stored arrays are not those of this run's trajectory (an edited file).
    """
    last, state_arrays, record = stored
    try:
        recorder.restore(record)
        if state is not None:
            state.restore(state_arrays)
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        raise session.checkpoint._refuse(f"does not hold the state of trajectory {g} ({exc})") from None
    return last


def hook_step(session: Session, g: int, t: int, on_step) -> None:
    """The end of step t of trajectory g: the user's ``on_step(g, t)``, then the
    session's boundary. A hook that raises stops the run after a checkpoint (the step
    is complete, so the state is consistent) and its exception propagates.

    Raises
    ------
    Stopped
        When the session stops the trajectory here.
    """
    try:
        if on_step is not None:
            on_step(g, t)
    except BaseException as exc:
        session.interrupt(f"on_step raised {type(exc).__name__}")
        session.boundary(g, t)
        session.leave(g)
        raise
    if session.boundary(g, t):
        session.leave(g)
        raise Stopped


@contextmanager
def stop_on_sigint(session: Session):
    """While active (main thread only), SIGINT asks ``session`` to stop between steps;
    a second SIGINT raises KeyboardInterrupt at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if session.stop.is_set():
            raise KeyboardInterrupt
        session.interrupt("interrupted")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def restore_into(arrays: Mapping[str, np.ndarray], target: Mapping[str, np.ndarray], what: str) -> None:
    """Copy stored arrays into the same-shaped arrays of a fresh object, in place."""
    for name, value in target.items():
        if name not in arrays or arrays[name].shape != value.shape:
            raise ValueError(f"the checkpoint's {what} has no array {name!r} of shape {value.shape}; "
                             "it does not belong to this run")
        value[...] = arrays[name]
