"""How much memory this process can still allocate.

:func:`available_memory` is what a run checks its memory estimate against. The
machine's free memory comes from psutil when it is installed (``pip install
zlimit[mem]``; psutil is an optional dependency), else from ``MemAvailable`` in
``/proc/meminfo`` (Linux), else from ``os.sysconf`` pages. That figure is then capped
by the limits that bind this process more tightly than the machine does: the memory
limit of its control group (containers, batch schedulers; cgroup v2 or v1) and its
address-space limit ``RLIMIT_AS`` (``ulimit -v``).
"""
from __future__ import annotations

import os

__all__ = ["available_memory"]

_MEMINFO = "/proc/meminfo"
# (limit file, usage file) of this process's control group: v2, then v1
_CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)
# cgroup v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX pages); anything above this is no limit
_NO_LIMIT = 1 << 60


def _from_psutil() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    try:
        return int(psutil.virtual_memory().available)
    except Exception:  # psutil present but unable to read this system
        return None


def _from_meminfo(path: str = _MEMINFO) -> int | None:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the value is in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _from_sysconf() -> int | None:
    for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        try:
            n, size = os.sysconf(pages), os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            continue
        if n > 0 and size > 0:
            return int(n) * int(size)
    return None


def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:  # "max": no limit
        return None


def _cgroup_headroom(files=_CGROUP_FILES) -> int | None:
    """Limit minus usage of this process's control group, None when unlimited or unknown."""
    for limit_file, usage_file in files:
        limit = _read_int(limit_file)
        if limit is None or limit >= _NO_LIMIT:
            continue
        usage = _read_int(usage_file)
        return max(limit - (usage or 0), 0)
    return None


def _address_space_headroom() -> int | None:
    """RLIMIT_AS minus the current virtual size, None when unlimited or unknown."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ValueError, OSError):
        return None
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    try:
        with open("/proc/self/statm") as fh:
            used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        used = 0
    return max(soft - used, 0)


def available_memory() -> int:
    """Bytes this process can still allocate (0 or more).

    The machine's available memory — ``psutil.virtual_memory().available`` when psutil
    is importable, else ``MemAvailable`` of ``/proc/meminfo``, else ``os.sysconf``
    available (or total) pages — capped by the process's control-group memory limit
    and its ``RLIMIT_AS``. Nothing is allocated to find out.

    Returns
    -------
    int

    Examples
    --------
    >>> available_memory() > 0
    True
    """
    machine = _from_psutil()
    if machine is None:
        machine = _from_meminfo()
    if machine is None:
        machine = _from_sysconf()
    caps = [c for c in (_cgroup_headroom(), _address_space_headroom()) if c is not None]
    if machine is None:
        # nothing describes the machine: the caps are all we know (0 if nothing at all)
        return int(min(caps)) if caps else 0
    return int(max(min([machine, *caps]), 0))
