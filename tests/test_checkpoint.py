"""Checkpoint, resume and Ctrl-C (issue 12): a resumed run is the uninterrupted run, bit for bit.

The reference of every comparison is an uninterrupted call with the same arguments.
Runs are interrupted at steps drawn by hypothesis — by an exception from ``on_step``
(any group, any step) or by SIGINT in a subprocess — resumed at another thread
count, and compared array by array (NaN patterns included) and meta by meta.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import zlimit
from zlimit import _checkpoint

X = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
Y = np.array([1.0, -1.0, 0.5])
X_EVAL = np.array([[0.3, 0.4]])
MODEL = zlimit.MLP(depth=3, activation="tanh", lr=0.5)
STEPS = 24
MC = dict(steps=STEPS, particles=3000, groups=4, X_eval=X_EVAL, record_steps=(0, 5), progress=False,
          batches=zlimit.batch_schedule(3, 2, STEPS, seed=1))
FINITE = dict(width=48, steps=STEPS, X_eval=X_EVAL, record_steps=(0, 7), batches=MC["batches"])


class Boom(Exception):
    pass


def _raise_at(group: int, step: int):
    def hook(g, t):
        if g == group and t == step:
            raise Boom(f"group {g} step {t}")
    return hook


def assert_identical(a: zlimit.Run, b: zlimit.Run) -> None:
    """Every array bit for bit (NaN where NaN) and the same meta."""
    for name in ("outputs_groups", "loss_groups", "error_signals_groups"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), name
    for part in ("kernels", "cross", "moments", "novelty", "bases"):
        A, B = getattr(a, part), getattr(b, part)
        assert A.keys() == B.keys(), part
        for k in A:
            assert np.array_equal(A[k], B[k], equal_nan=True), (part, k)
    assert a.meta == b.meta
    assert a.record_steps == b.record_steps


@pytest.fixture(scope="module")
def mc_reference():
    return zlimit.simulate(MODEL, X, Y, threads=2, **MC)


@pytest.fixture(scope="module")
def finite_reference():
    return zlimit.train_finite(MODEL, X, Y, **FINITE)


@settings(max_examples=4, deadline=None, derandomize=True)
@given(stops=st.lists(st.tuples(st.integers(0, 3), st.integers(0, STEPS)), min_size=1, max_size=2),
       threads=st.lists(st.integers(1, 4), min_size=3, max_size=3))
def test_monte_carlo_resume_is_bit_identical(mc_reference, tmp_path_factory, stops, threads):
    path = tmp_path_factory.mktemp("ck") / "run.ckpt"
    for (group, step), n in zip(stops, threads):
        with pytest.raises(Boom):
            zlimit.simulate(MODEL, X, Y, threads=n, checkpoint=path, checkpoint_every=0,
                            on_step=_raise_at(group, step), **MC)
        assert path.is_file()
    run = zlimit.simulate(MODEL, X, Y, threads=threads[-1], checkpoint=path, **MC)
    assert_identical(run, mc_reference)
    assert not path.exists()  # removed once the run completed


@settings(max_examples=4, deadline=None, derandomize=True)
@given(step=st.integers(0, STEPS))
def test_finite_resume_is_bit_identical(finite_reference, tmp_path_factory, step):
    path = tmp_path_factory.mktemp("ck") / "net.ckpt"
    with pytest.raises(Boom):
        zlimit.train_finite(MODEL, X, Y, checkpoint=path, checkpoint_every=0, on_step=_raise_at(0, step), **FINITE)
    with np.load(path) as f:  # the file says where it stopped
        assert json.loads(str(f["__checkpoint__"][()]))["steps"] == {"0": step}
    assert_identical(zlimit.train_finite(MODEL, X, Y, checkpoint=path, **FINITE), finite_reference)


def test_finite_resume_keeps_pending_low_rank_updates(tmp_path):
    """Width 512 folds updates into W only every 64 columns: a checkpoint between two folds
    must carry the pending ones exactly (folding them early would change the bits)."""
    kw = dict(FINITE, width=512, steps=10, batches=MC["batches"][:10])
    ref = zlimit.train_finite(MODEL, X, Y, **kw)
    path = tmp_path / "net.ckpt"
    with pytest.raises(Boom):
        zlimit.train_finite(MODEL, X, Y, checkpoint=path, checkpoint_every=0, on_step=_raise_at(0, 6), **kw)
    with np.load(path) as f:
        assert f["0/state/W2/A"].shape[0] > 0  # updates were pending
    assert_identical(zlimit.train_finite(MODEL, X, Y, checkpoint=path, **kw), ref)


def test_checkpoint_of_other_arguments_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "run.ckpt"
    with pytest.raises(Boom):
        zlimit.simulate(MODEL, X, Y, checkpoint=path, checkpoint_every=0, on_step=_raise_at(0, 3), **MC)
    before = path.read_bytes()
    other = dict(MC, steps=STEPS + 1, batches=None)
    with pytest.raises(ValueError, match=r"other arguments: settings\.steps \(24 there, 25 here\)"):
        zlimit.simulate(MODEL, X, Y, checkpoint=path, **other)
    with pytest.raises(ValueError, match=r"y \(its values differ\)"):
        zlimit.simulate(MODEL, X, -Y, checkpoint=path, **MC)
    with pytest.raises(ValueError, match="model"):
        zlimit.simulate(zlimit.MLP(depth=3, activation="tanh", lr=0.4), X, Y, checkpoint=path, **MC)
    with pytest.raises(ValueError, match="producer"):  # a Monte Carlo checkpoint is not a finite net's
        zlimit.train_finite(MODEL, X, Y, checkpoint=path, **FINITE)
    assert path.read_bytes() == before


def test_checkpoint_of_another_version_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "net.ckpt"
    with pytest.raises(Boom):
        zlimit.train_finite(MODEL, X, Y, checkpoint=path, checkpoint_every=0, on_step=_raise_at(0, 2), **FINITE)
    before = path.read_bytes()
    monkeypatch.setattr(_checkpoint, "__version__", "99.0")
    with pytest.raises(ValueError, match=r"written by zlimit .* this is zlimit 99\.0"):
        zlimit.train_finite(MODEL, X, Y, checkpoint=path, **FINITE)
    assert path.read_bytes() == before


@pytest.mark.parametrize("content", [b"not a checkpoint", b"PK\x03\x04 truncated zip", None])
def test_a_file_that_is_not_a_checkpoint_is_never_overwritten(tmp_path, content):
    path = tmp_path / "results.npz"
    if content is None:  # a real run file: a plausible mistake
        zlimit.train_finite(MODEL, X, Y, **FINITE).save(path)
        content = path.read_bytes()
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="is not a readable zlimit checkpoint.*left untouched"):
        zlimit.train_finite(MODEL, X, Y, checkpoint=path, **FINITE)
    assert path.read_bytes() == content


@pytest.mark.parametrize("kwargs, message", [
    (dict(checkpoint_every=5), "checkpoint_every applies only with checkpoint"),
    (dict(checkpoint=3), "checkpoint must be a file path"),
    (dict(checkpoint=True), "checkpoint must be a file path"),
    (dict(checkpoint=""), "checkpoint must be a file path"),
    (dict(checkpoint="c.ckpt", checkpoint_every=-1), "checkpoint_every must be"),
    (dict(checkpoint="c.ckpt", checkpoint_every=float("nan")), "checkpoint_every must be"),
    (dict(checkpoint="c.ckpt", checkpoint_every="60"), "checkpoint_every must be"),
    (dict(checkpoint="missing-folder/c.ckpt"), "missing-folder does not exist"),
])
def test_bad_checkpoint_arguments(tmp_path, monkeypatch, kwargs, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        zlimit.train_finite(MODEL, X, Y, **FINITE, **kwargs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs", [dict(method="exact"), dict(parametrization="ntk")])
def test_checkpoint_is_refused_where_it_does_not_apply(tmp_path, kwargs):
    model = zlimit.MLP(depth=2, activation="linear", lr=0.1)
    with pytest.raises(ValueError, match="checkpoint applies to the Monte Carlo"):
        zlimit.simulate(model, X, Y, steps=2, checkpoint=tmp_path / "c.ckpt", progress=False, **kwargs)


def test_time_interval_writes_while_running(tmp_path):
    """checkpoint_every in seconds: a hook that sleeps makes the interval pass, so the file
    appears during the run (seen from the hook) and is gone after it."""
    path = tmp_path / "run.ckpt"
    seen = []

    def hook(g, t):
        time.sleep(0.02)
        seen.append(path.exists())

    zlimit.simulate(MODEL, X, Y, threads=2, checkpoint=path, checkpoint_every=0.1, on_step=hook, **MC)
    assert any(seen) and not seen[0] and not path.exists()


_SIGINT_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, zlimit
    X = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]); y = np.array([1.0, -1.0, 0.5])
    model = zlimit.MLP(depth=3, activation="tanh", lr=0.5)
    def hook(g, t):
        if t == 5 and g == 0:
            print("running", flush=True)
    kw = dict(steps=int(sys.argv[3]), seed=3, on_step=hook, checkpoint=sys.argv[2])
    if sys.argv[1] == "mc":
        zlimit.simulate(model, X, y, particles=4000, groups=2, threads=2, progress=False, **kw)
    else:
        zlimit.train_finite(model, X, y, width=128, **kw)
""")
_SIGINT_RUNS = {"mc": (200, dict(particles=4000, groups=2, progress=False)), "finite": (800, dict(width=128))}


@pytest.mark.parametrize("producer", sorted(_SIGINT_RUNS))
def test_sigint_stops_within_two_seconds_and_resumes_bit_identical(tmp_path, producer):
    """SIGINT in a subprocess mid-run: it stops within 2 s, names the checkpoint, and the
    state it wrote resumes here to the uninterrupted run, bit for bit."""
    steps, kw = _SIGINT_RUNS[producer]
    path = tmp_path / "run.ckpt"
    proc = subprocess.Popen([sys.executable, "-c", _SIGINT_SCRIPT, producer, str(path), str(steps)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "running\n"
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        # the run is sized to take seconds after its first steps; finishing before a signal sent
        # at once means the machine was idle-fast, not that stopping failed (a failure exits non-zero)
        pytest.skip("the subprocess finished before the signal arrived")
    assert time.monotonic() - sent < 2.0
    assert "KeyboardInterrupt: interrupted; the checkpoint" in err.splitlines()[-1]
    with np.load(path) as f:
        stopped = json.loads(str(f["__checkpoint__"][()]))["steps"]
    assert stopped["0"] >= 5 and max(stopped.values()) < steps  # group 0 printed "running" after step 5
    run = zlimit.simulate if producer == "mc" else zlimit.train_finite
    resumed = run(MODEL, X, Y, steps=steps, seed=3, checkpoint=path, **kw)
    assert not path.exists()
    assert_identical(resumed, run(MODEL, X, Y, steps=steps, seed=3, **kw))


def test_checkpoint_file_has_no_pickle(tmp_path):
    path = tmp_path / "run.ckpt"
    with pytest.raises(Boom):
        zlimit.simulate(MODEL, X, Y, checkpoint=path, checkpoint_every=0, on_step=_raise_at(2, 4), **MC)
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    with np.load(path, allow_pickle=False) as f:
        for name in f.files:
            assert not f[name].dtype.hasobject
    assert "__checkpoint__.npy" in names and any(n.startswith("2/state/") for n in names)


# ------------------------------------------------------------ review findings
def _stopped_mc(path, group=0, step=4, **kw):
    with pytest.raises(Boom):
        zlimit.simulate(MODEL, X, Y, threads=2, checkpoint=path, checkpoint_every=0, on_step=_raise_at(group, step),
                        **{**MC, **kw})


def _rewrite(path, edit):
    """Rewrite a checkpoint with ``edit(info, arrays)`` applied (CRCs valid: an edited file)."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    info = json.loads(str(arrays.pop("__checkpoint__")[()]))
    edit(info, arrays)
    with open(path, "wb") as fh:
        _checkpoint._write_npz(fh, [("__checkpoint__", np.array(json.dumps(info))), *arrays.items()])


def test_a_stop_while_waiting_for_a_periodic_checkpoint_joins_the_final_one(tmp_path, monkeypatch):
    """The stop flag set (as SIGINT's handler does, without the lock) at the instant a group
    wakes from a periodic round: it must go round again to the final checkpoint, not leave
    the others waiting for it. This hung before the fix."""
    import threading

    class Cond(threading.Condition):
        def wait_for(self, predicate, timeout=None):
            waited = not predicate()
            result = super().wait_for(predicate, timeout)
            s = self.session
            if waited and min(tr.step for tr in s._running.values()) >= 3 and not s.stop.is_set():
                s.interrupt("interrupted")
            return result

    init = _checkpoint.Session.__init__

    def patched(self, checkpoint):
        init(self, checkpoint)
        self._cond = Cond()
        self._cond.session = self

    monkeypatch.setattr(_checkpoint.Session, "__init__", patched)
    path = tmp_path / "run.ckpt"
    outcome = []

    def call():
        try:
            zlimit.simulate(MODEL, X, Y, threads=2, checkpoint=path, checkpoint_every=0, **{**MC, "groups": 2})
        except KeyboardInterrupt as exc:
            outcome.append(str(exc))

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "simulate hung"
    assert outcome and "holds steps up to" in outcome[0]
    with np.load(path) as f:
        assert set(json.loads(str(f["__checkpoint__"][()]))["steps"]) == {"0", "1"}


def test_a_damaged_checkpoint_is_refused_before_any_work(tmp_path):
    path = tmp_path / "run.ckpt"
    _stopped_mc(path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("1/state/w.npy")
    data[info.header_offset + 30 + len(info.filename) + info.file_size // 2] ^= 0xFF  # a byte of w's values
    path.write_bytes(bytes(data))
    calls = []
    with pytest.raises(ValueError, match=r"not a readable zlimit checkpoint \(member 1/state/w.npy is damaged\)"):
        zlimit.simulate(MODEL, X, Y, checkpoint=path, on_step=lambda g, t: calls.append(t), **MC)
    assert calls == [] and path.read_bytes() == bytes(data)


@pytest.mark.parametrize("edit, message", [
    (lambda info, a: a.pop("1/state/readout_0"), r"does not hold the state of trajectory 1 \('readout_0'\)"),
    (lambda info, a: a.pop("1/state/W2/A"), r"does not hold the state of trajectory 1 \('A'\)"),
    (lambda info, a: info["steps"].update({"1": STEPS + 5}), rf"lists steps outside 0\.\.{STEPS}"),
    (lambda info, a: info["steps"].update({"1": info["steps"]["1"] - 1}), "says group 1 stopped after step"),
    (lambda info, a: info.update(steps="4"), "has no valid table of steps"),
    # a file of the code before the moments were recorded (format 1), and one that lost them
    (lambda info, a: [info.update(format_version=1), *(a.pop(k) for k in list(a) if "/record/moments/" in k)],
     r"written by zlimit \S+ \(format 1\) and this is zlimit .*: it cannot be resumed"),
    (lambda info, a: a.pop("1/record/moments/x2"),
     r"does not hold the state of trajectory 1 \(the checkpoint's record has no array 'moments/x2'"),
])
def test_an_edited_checkpoint_is_refused(tmp_path, edit, message):
    path = tmp_path / "run.ckpt"
    _stopped_mc(path)
    _rewrite(path, edit)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=message):
        zlimit.simulate(MODEL, X, Y, checkpoint=path, **MC)
    assert path.read_bytes() == before


def test_a_custom_activation_with_other_values_is_another_run(tmp_path):
    """Same name, other function: the fingerprint of φ on a grid tells them apart."""
    path = tmp_path / "net.ckpt"
    tanh = zlimit.MLP(depth=3, activation=zlimit.Activation("act", lambda x: math.tanh(x),
                                                            lambda x: 1 - math.tanh(x) ** 2), lr=0.5)
    sin = zlimit.MLP(depth=3, activation=zlimit.Activation("act", lambda x: math.sin(x), lambda x: math.cos(x)),
                     lr=0.5)
    with pytest.raises(Boom):
        zlimit.train_finite(tanh, X, Y, checkpoint=path, checkpoint_every=0, on_step=_raise_at(0, 3), **FINITE)
    with pytest.raises(ValueError, match=r"functions\.activation \(its values differ\)"):
        zlimit.train_finite(sin, X, Y, checkpoint=path, **FINITE)
    resumed = zlimit.train_finite(tanh, X, Y, checkpoint=path, **FINITE)  # the same function resumes
    assert_identical(resumed, zlimit.train_finite(tanh, X, Y, **FINITE))


def test_an_unwritable_folder_is_refused_at_the_call(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_checkpoint.tempfile, "mkstemp", refuse)
    calls = []
    with pytest.raises(PermissionError, match=r"checkpoint .*run.ckpt cannot be written: Permission denied; choose"):
        zlimit.train_finite(MODEL, X, Y, checkpoint=tmp_path / "run.ckpt", on_step=lambda g, t: calls.append(t),
                            **FINITE)
    assert calls == []


def test_a_failed_periodic_write_warns_and_the_run_completes(tmp_path, monkeypatch, finite_reference):
    import errno

    def full(fh, items):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_checkpoint, "_write_npz", full)
    with pytest.warns(zlimit.CheckpointWarning, match="No space left on device.*the run goes on"):
        run = zlimit.train_finite(MODEL, X, Y, checkpoint=tmp_path / "run.ckpt", checkpoint_every=0, **FINITE)
    assert_identical(run, finite_reference)
    assert list(tmp_path.iterdir()) == []


def test_a_symlinked_checkpoint_is_written_through_and_its_target_removed(tmp_path, finite_reference):
    target, link = tmp_path / "scratch" / "net.ckpt", tmp_path / "net.ckpt"
    target.parent.mkdir()
    link.symlink_to(target)  # dangling until the first write
    with pytest.raises(Boom):
        zlimit.train_finite(MODEL, X, Y, checkpoint=link, checkpoint_every=0, on_step=_raise_at(0, 9), **FINITE)
    assert link.is_symlink() and target.is_file()
    assert_identical(zlimit.train_finite(MODEL, X, Y, checkpoint=link, **FINITE), finite_reference)
    assert not target.exists()


def test_only_what_changes_the_numbers_identifies_a_run(tmp_path, mc_reference):
    """401 particles in 2 groups simulate 200 per group, as 400 do; threads and progress
    do not enter; checkpoint_every=inf writes only when stopped."""
    path = tmp_path / "run.ckpt"
    with pytest.raises(Boom):
        zlimit.simulate(MODEL, X, Y, threads=1, checkpoint=path, checkpoint_every=float("inf"),
                        on_step=_raise_at(3, 7), **{**MC, "particles": MC["particles"] + 3})
    run = zlimit.simulate(MODEL, X, Y, threads=3, checkpoint=path, **{**MC, "progress": True})
    assert_identical(run, mc_reference)
