"""Saving under faults: links, special files, modes, full disks, interrupts and kills.

Every test checks what the user sees afterwards: the old file's bytes, the folder's
listing (no ``.*.tmp`` left), the error's type, errno and one-line message.
"""
from __future__ import annotations

import errno
import io as stdio
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from zlimit import _atomic
from zlimit import io as zio
from zlimit._atomic import atomic_write

from test_io import assert_runs_equal, make_run

ATOMIC = Path(_atomic.__file__)


def small_run(seed=0, **meta):
    return make_run(np.random.default_rng(seed), G=1, T=1, M=2, m=1, depth=1, record_steps=(0,),
                    novelty=False, dtype=np.float64,
                    meta={"kind": "limit", "steps": 1, "m": 1, "m_eval": 1, **meta})


def one_line(exc: BaseException, path) -> str:
    text = str(exc)
    assert "\n" not in text and str(path) in text, text
    assert ".tmp" not in text, text  # the user's path, not the hidden temporary name
    return text


def listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


# ------------------------------------------------------------------ symlinks
def test_save_through_symlink_replaces_the_target_and_keeps_the_link(tmp_path):
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "real.npz"
    target.write_bytes(b"old bytes")
    link = tmp_path / "link.npz"
    link.symlink_to(Path("data") / "real.npz")  # relative, into another folder
    run = small_run()
    assert zio.save(run, link) == link
    assert link.is_symlink() and os.readlink(link) == os.path.join("data", "real.npz")
    assert_runs_equal(run, zio.load(target))
    assert_runs_equal(run, zio.load(link))
    assert listing(tmp_path) == ["data", "link.npz"] and listing(tmp_path / "data") == ["real.npz"]


def test_save_through_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.npz"
    link.symlink_to("made.npz")
    run = small_run()
    zio.save(run, link)
    assert link.is_symlink() and (tmp_path / "made.npz").is_file()
    assert_runs_equal(run, zio.load(tmp_path / "made.npz"))
    gone = tmp_path / "gone.npz"
    gone.symlink_to(tmp_path / "no_folder" / "x.npz")
    with pytest.raises(FileNotFoundError, match="folder .*no_folder does not exist") as info:
        zio.save(run, gone)
    one_line(info.value, gone)
    assert listing(tmp_path) == ["gone.npz", "link.npz", "made.npz"]


# ------------------------------------------------------------ special targets
def test_save_over_a_folder_or_into_a_missing_folder(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(IsADirectoryError, match="it is a folder") as info:
        zio.save(small_run(), tmp_path / "out")
    one_line(info.value, tmp_path / "out")
    missing = tmp_path / "nope" / "run.npz"
    with pytest.raises(FileNotFoundError, match="does not exist; create it first") as info:
        zio.save(small_run(), missing)
    one_line(info.value, missing)
    assert listing(tmp_path) == ["out"] and listing(tmp_path / "out") == []


def character_device(tmp_path) -> Path:
    """A character device to save over that a wrong save could not harm the system through.

    Root (who could replace /dev/null itself) gets a node of its own made by mknod in
    ``tmp_path``; another user gets /dev/null, whose folder it may not write.
    """
    node = tmp_path / "null"
    if os.name == "posix" and os.geteuid() == 0:
        try:
            os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except OSError as exc:
            pytest.skip(f"cannot make a device node: {exc}")
        return node
    if not (os.path.exists("/dev/null") and stat.S_ISCHR(os.stat("/dev/null").st_mode)):
        pytest.skip("no /dev/null character device")
    return Path("/dev/null")


def test_save_to_a_device_is_refused_and_leaves_it_alone(tmp_path):
    device = character_device(tmp_path)
    before = os.lstat(device)
    with pytest.raises(ValueError, match="character device, not a regular file") as info:
        zio.save(small_run(), device)
    one_line(info.value, device)
    link = tmp_path / "device.npz"
    link.symlink_to(device)
    with pytest.raises(ValueError, match=rf"a link to {device}\).*character device"):
        zio.save(small_run(), link)
    after = os.lstat(device)
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert link.is_symlink() and os.readlink(link) == str(device)
    assert [n for n in listing(tmp_path) if n.endswith(".tmp")] == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_save_to_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(ValueError, match="named pipe") as info:
        zio.save(small_run(), fifo)
    one_line(info.value, fifo)
    assert time.monotonic() - start < 2.0
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and listing(tmp_path) == ["pipe.npz"]


@pytest.mark.parametrize("bad", [3, True, b"run.npz", 2.5])
def test_save_needs_a_path_or_file_object(tmp_path, bad):
    with pytest.raises(ValueError, match="must be a str or os.PathLike") as info:
        zio.save(small_run(), bad)
    if isinstance(bad, int) and not isinstance(bad, bool):
        assert "file descriptor" in str(info.value)
    buf = stdio.BytesIO()
    assert zio.save(small_run(), buf) is None and buf.getvalue().startswith(b"PK")


def test_save_over_a_read_only_file_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "run.npz"
    path.write_bytes(b"keep me")
    path.chmod(0o444)
    if os.access(path, os.W_OK):  # root may write anything: let the check see what a user would
        monkeypatch.setattr(_atomic.os, "access", lambda p, mode: False)
    with pytest.raises(PermissionError, match="read-only") as info:
        zio.save(small_run(), path)
    one_line(info.value, path)
    assert path.read_bytes() == b"keep me" and listing(tmp_path) == ["run.npz"]


def test_long_file_names_are_saved(tmp_path):
    path = tmp_path / ("r" * 246 + ".npz")  # 250 bytes: the temporary name is cut, not the target's
    zio.save(small_run(), path)
    zio.save(small_run(1), path)
    assert listing(tmp_path) == [path.name]
    assert_runs_equal(small_run(1), zio.load(path))


# ------------------------------------------------------------------- modes
def test_replaced_file_keeps_its_mode(tmp_path):
    path = tmp_path / "run.npz"
    path.write_bytes(b"old")
    path.chmod(0o640)
    zio.save(small_run(), path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    path.chmod(0o604)
    zio.save(small_run(1), path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o604


@pytest.mark.parametrize("proc", [True, False], ids=["proc-status", "umask-fallback"])
def test_new_file_mode_follows_the_umask(tmp_path, monkeypatch, proc):
    def no_proc(*args, **kwargs):
        raise OSError(errno.ENOENT, "no /proc here")
    if not proc:  # the umask is read by setting and restoring it
        monkeypatch.setattr(_atomic, "open", no_proc, raising=False)
    old = os.umask(0o027)
    try:
        zio.save(small_run(), tmp_path / "a.npz")
        os.umask(0o002)
        zio.save(small_run(), tmp_path / "b.npz")
        assert os.umask(0o002) == 0o002  # left as it was
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.npz").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "b.npz").st_mode) == 0o664


# --------------------------------------------------------- failures mid-write
def _savez_then(error):
    """A stand-in for np.savez that writes half of the real archive, then raises ``error``."""
    real = np.savez

    def savez(fh, **arrays):
        buf = stdio.BytesIO()
        real(buf, **arrays)
        fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        fh.flush()
        raise error
    return savez


def test_disk_full_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "run.npz"
    zio.save(small_run(), path)
    old = path.read_bytes()
    monkeypatch.setattr(np, "savez", _savez_then(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
    with pytest.raises(OSError) as info:
        zio.save(small_run(1), path)
    assert info.value.errno == errno.ENOSPC
    text = one_line(info.value, path)
    assert "No space left on device; free space or choose another folder" in text
    assert path.read_bytes() == old and listing(tmp_path) == ["run.npz"]


def test_interrupt_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "run.npz"
    zio.save(small_run(), path)
    old = path.read_bytes()
    monkeypatch.setattr(np, "savez", _savez_then(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        zio.save(small_run(1), path)
    assert path.read_bytes() == old and listing(tmp_path) == ["run.npz"]


@pytest.mark.parametrize("where", ["write", "fsync", "chmod", "replace"])
def test_a_failure_at_each_step_keeps_the_old_file(tmp_path, monkeypatch, where):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"old")

    def fail(*args, **kwargs):
        raise PermissionError(errno.EIO, "Input/output error")

    def write(fh):
        fh.write(b"new" * 1000)
        if where == "write":
            fail()
    if where != "write":
        monkeypatch.setattr(_atomic.os, where, fail)
    with pytest.raises(PermissionError) as info:  # the same OSError subclass and errno
        atomic_write(path, write, what="notes file")
    assert info.value.errno == errno.EIO
    assert one_line(info.value, path).startswith(f"[Errno {errno.EIO}] could not write notes file {path}")
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and listing(tmp_path) == ["notes.txt"]


def test_a_failing_callback_keeps_the_old_file_and_its_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"old")

    def write(fh):
        fh.write(b"partial")
        raise ZeroDivisionError("from the callback")
    with pytest.raises(ZeroDivisionError, match="from the callback"):
        atomic_write(path, write)
    assert path.read_bytes() == b"old" and listing(tmp_path) == ["notes.txt"]
    with pytest.raises(ValueError, match="write must be a function"):
        atomic_write(path, b"bytes")


def test_temporary_file_sits_next_to_the_target_and_names_the_writer(tmp_path):
    (tmp_path / "data").mkdir()
    link = tmp_path / "link.txt"
    link.symlink_to(tmp_path / "data" / "notes.txt")
    seen = []
    atomic_write(link, lambda fh: seen.append((listing(tmp_path / "data"), fh.write(b"x"))))
    (names, _), = seen
    name, = names
    assert name.startswith(f".notes.txt.{os.getpid()}.") and name.endswith(".tmp")
    assert listing(tmp_path / "data") == ["notes.txt"]


# ------------------------------------------------------------- real full disk
PRELUDE = ("import importlib.util\n"
           f"spec = importlib.util.spec_from_file_location('atomic', {str(ATOMIC)!r})\n"
           "atomic = importlib.util.module_from_spec(spec); spec.loader.exec_module(atomic)\n")


def test_disk_full_on_a_real_tmpfs(tmp_path):
    """ENOSPC from a 64 KiB tmpfs mounted in a private mount namespace (root only; skipped elsewhere)."""
    unshare = shutil.which("unshare")
    if os.name != "posix" or os.geteuid() != 0 or unshare is None:
        pytest.skip("needs root and unshare(1) to mount a small tmpfs")
    namespace = [unshare, "--mount", "--propagation", "private"]
    if subprocess.run([*namespace, "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare --mount is not permitted here")
    mount = tmp_path / "small"
    mount.mkdir()
    script = tmp_path / "full.py"
    script.write_text(PRELUDE + (
        "import json, os, sys\n"
        "folder = sys.argv[1]; path = os.path.join(folder, 'run.npz')\n"
        "atomic.atomic_write(path, lambda fh: fh.write(b'old' * 5000))\n"
        "try:\n"
        "    atomic.atomic_write(path, lambda fh: fh.write(b'new' * 100_000))\n"
        "    error = None\n"
        "except OSError as exc:\n"
        "    error = [exc.errno, str(exc)]\n"
        "print(json.dumps({'error': error, 'old': open(path, 'rb').read() == b'old' * 5000,\n"
        "                  'listing': sorted(os.listdir(folder))}))\n"))
    shell = f"mount -t tmpfs -o size=64k tmpfs {mount} || exit 77; exec {sys.executable} {script} {mount}"
    proc = subprocess.run([*namespace, "sh", "-c", shell], capture_output=True, text=True, timeout=60)
    if proc.returncode == 77:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["error"][0] == errno.ENOSPC
    assert f"could not write file {mount / 'run.npz'}: No space left on device; free space" in got["error"][1]
    assert got["old"] and got["listing"] == ["run.npz"]
    assert listing(mount) == []  # the tmpfs was private to the namespace


# ------------------------------------------------------------------- SIGKILL
@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and pid-named leftovers are POSIX")
def test_sigkill_mid_write_keeps_the_old_file_and_the_next_save_cleans_up(tmp_path):
    path = tmp_path / "run.npz"
    zio.save(small_run(), path)
    old = path.read_bytes()
    code = ("import sys, time\n"
            "def slow(fh):\n"
            "    fh.write(b'half of a new run' * 4096); fh.flush()\n"
            "    print('writing', flush=True)\n"
            "    time.sleep(60)\n"
            "atomic.atomic_write(sys.argv[1], slow)\n")
    writer = subprocess.Popen([sys.executable, "-c", PRELUDE + code, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait(timeout=30)
        writer.stdout.close()
    assert writer.returncode == -signal.SIGKILL
    assert path.read_bytes() == old
    leftover, = (n for n in listing(tmp_path) if n != "run.npz")
    assert leftover.startswith(f".run.npz.{writer.pid}.") and leftover.endswith(".tmp")
    # not the writer's: a live process's temporary file, another file's, a user's file
    keep = [".run.npz.1.abc.tmp", f".other.npz.{writer.pid}.abc.tmp", ".run.npz.notes.tmp"]
    for name in keep:
        (tmp_path / name).write_bytes(b"")
    zio.save(small_run(1), path)
    assert_runs_equal(small_run(1), zio.load(path))
    assert listing(tmp_path) == sorted(keep + ["run.npz"])


# ------------------------------------------------------------ what is saved
def test_inconsistent_runs_are_not_saved(tmp_path):
    run = small_run()
    run.error_model = "exact"  # meta kind "limit"
    with pytest.raises(ValueError, match=r"error_model 'exact' disagrees with meta\['kind'\] 'limit'"):
        zio.save(run, tmp_path / "a.npz")
    run = small_run()
    run.meta["steps"] = 7
    with pytest.raises(ValueError, match=r"meta\['steps'\] = 7 disagrees"):
        zio.save(run, tmp_path / "a.npz")
    run = small_run()
    run.kernels["h2"] = run.kernels["h1"]  # depth 1
    with pytest.raises(ValueError, match="kernels key 'h2' does not fit a model of depth 1"):
        zio.save(run, tmp_path / "a.npz")
    assert listing(tmp_path) == []


def test_deeply_nested_meta_is_refused_quickly(tmp_path):
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    start = time.monotonic()
    with pytest.raises(ValueError, match="nested too deeply"):
        zio.save(small_run(nested=deep), tmp_path / "a.npz")
    assert time.monotonic() - start < 2.0 and listing(tmp_path) == []
