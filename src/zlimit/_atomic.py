"""Atomic file replacement: a file is either its old bytes or its complete new bytes.

:func:`atomic_write` writes to a temporary file next to the target, flushes it to
disk and renames it over the target, so that a crash, a full disk or Ctrl-C never
leaves a half-written file where a good one was.
"""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write"]

#: what to do about an OSError, by errno, appended to its one-line message
_HINTS = {
    errno.ENOSPC: "; free space or choose another folder",
    errno.EDQUOT: "; free space (disk quota exceeded) or choose another folder",
    errno.EROFS: "; the file system is read-only: choose another folder",
    errno.EACCES: "; the file is replaced atomically, so its folder must be writable: choose another folder",
    errno.EPERM: "; the file is replaced atomically, so its folder must be writable: choose another folder",
    errno.ENAMETOOLONG: "; choose a shorter file name",
}

#: bytes of the target's name kept in a temporary file's name (NAME_MAX is 255)
_STEM_BYTES = 200


def _kind(mode: int) -> str:
    """What a non-regular, non-folder file is, in words."""
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``).

    Elsewhere it is read by setting and restoring it, which races with threads that
    create files meanwhile.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _stem(name: str) -> str:
    """``name`` cut to :data:`_STEM_BYTES` bytes, so that a temporary name stays a legal file name."""
    raw = os.fsencode(name)
    return name if len(raw) <= _STEM_BYTES else os.fsdecode(raw[:_STEM_BYTES])


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove_stale(folder: Path, stem: str) -> None:
    """Remove ``.{stem}.{pid}.*.tmp`` files of ``folder`` whose writer process is gone (best effort).

    Only POSIX: there ``os.kill(pid, 0)`` tests for a process; on Windows it would kill it.
    """
    if os.name != "posix":
        return
    prefix = f".{stem}."
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            try:
                os.unlink(entry.path)
            except OSError:
                pass


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries to disk, so that a rename survives a power cut (best effort:
    some platforms and file systems cannot open or sync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _named(exc: OSError, shown: str, what: str) -> OSError:
    """``exc`` again, same type and errno, with a one-line message naming the user's path."""
    reason = " ".join((exc.strerror or str(exc) or type(exc).__name__).split())
    message = f"could not write {what} {shown}: {reason}{_HINTS.get(exc.errno, '')}"
    if exc.errno is None:
        return OSError(message)
    try:
        return type(exc)(exc.errno, message)
    except TypeError:  # a subclass with another signature
        return OSError(exc.errno, message)


def atomic_write(path, write: Callable[[BinaryIO], object], *, what: str = "file") -> Path:
    """Write a file atomically by calling ``write(fh)`` on a binary file handle of a temporary file.

    The temporary file ``.{name}.{pid}.{random}.tmp`` is made in the target's folder
    (:func:`tempfile.mkstemp`); after ``write`` returns it is flushed and
    :func:`os.fsync`-ed, given its mode and renamed over the target
    (:func:`os.replace`), and the folder is synced (where the platform allows). At
    every moment the target holds either its old bytes or the complete new ones.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write. A symlink is followed to its final target, which is
        replaced, so the link survives and keeps pointing at the new bytes; a
        dangling symlink creates the file it points to (whose folder must exist),
        as :func:`open` does. A file replaced keeps its permission bits; a new file
        gets ``0o666 & ~umask``, as :func:`open` would give it. Owner, extended
        attributes and hard links are not carried over: the new bytes are a new file.
    write : callable
        Called once as ``write(fh)`` with a binary file object open for writing.
    what : str
        What the file is, for messages ("run file" gives "could not write run file
        out.npz: ...").

    Returns
    -------
    pathlib.Path
        ``path`` as given (not the resolved target).

    Raises
    ------
    ValueError
        If ``path`` is not a str or os.PathLike (a file descriptor, bytes), ``write``
        is not callable, or the target exists and is a device, named pipe or socket
        (it is left untouched).
    IsADirectoryError
        If the target is a folder.
    FileNotFoundError
        If the target's folder does not exist.
    PermissionError
        If the target exists and is read-only (its bits are respected, though a
        rename could bypass them), or the folder is not writable.
    OSError
        If writing fails (e.g. ENOSPC, a full disk): the same type and errno, with a
        one-line message naming ``path``. Whatever the failure, including an
        exception from ``write`` or ``KeyboardInterrupt``, the temporary file is
        removed and the target keeps its old bytes.

    Notes
    -----
    A process killed by SIGKILL or a power cut cannot remove its temporary file; the
    target still holds its old bytes. The next successful write to the same path
    removes such leftovers: ``.{name}.{pid}.*.tmp`` files whose process ``pid`` no
    longer exists (POSIX only; a folder shared between machines over a network
    file system could see another machine's live writer as gone).

    Examples
    --------
    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     target = os.path.join(folder, "notes.txt")
    ...     written = atomic_write(target, lambda fh: fh.write(b"hello"))
    ...     with open(target, "rb") as fh:
    ...         content = fh.read()
    ...     leftovers = os.listdir(folder)
    >>> written.name, content, leftovers
    ('notes.txt', b'hello', ['notes.txt'])
    """
    if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str):
        hint = " (a file descriptor is not accepted: pass the file's path)" if isinstance(path, int) else ""
        raise ValueError(f"{what} path must be a str or os.PathLike, got {type(path).__name__} {path!r}{hint}")
    if not callable(write):
        raise ValueError(f"write must be a function called as write(fh), got {write!r}")
    user = Path(os.fspath(path))
    shown = str(user)
    target = Path(os.path.realpath(user))
    via = f" (a link to {target})" if target != Path(os.path.abspath(user)) else ""
    folder = target.parent
    try:
        st = os.stat(target)
    except FileNotFoundError:
        if not folder.is_dir():
            raise FileNotFoundError(errno.ENOENT, f"cannot write {what} {shown}{via}: folder {folder} "
                                                  "does not exist; create it first") from None
        mode = 0o666 & ~_umask()
    except OSError as exc:  # e.g. a symlink loop, or a file where a folder should be
        raise _named(exc, shown, what) from exc
    else:
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, f"cannot write {what} {shown}{via}: it is a folder; "
                                                  "give a file name inside it")
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"cannot write {what} {shown}{via}: it is a {_kind(st.st_mode)}, not a "
                             "regular file; give the path of a regular file")
        if not os.access(target, os.W_OK):
            raise PermissionError(errno.EACCES, f"cannot write {what} {shown}{via}: the file is read-only; "
                                                "make it writable (chmod u+w) or choose another path")
        mode = stat.S_IMODE(st.st_mode)
    stem = _stem(target.name)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.{os.getpid()}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise _named(exc, shown, what) from exc
        raise
    _fsync_folder(folder)
    _remove_stale(folder, stem)
    return user
