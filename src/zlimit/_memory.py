"""How much memory this process can still allocate, and what a run adds to it.

:func:`available_memory` is what a run checks its memory estimate against. The
machine's free memory comes from psutil when it is installed (``pip install
zlimit[mem]``; psutil is an optional dependency), else from ``MemAvailable`` in
``/proc/meminfo`` (Linux), else from ``os.sysconf`` pages. That figure is then capped
by the limits that bind this process more tightly than the machine does: the memory
limit of its control group (containers, batch schedulers; cgroup v2 or v1) and its
address-space limit ``RLIMIT_AS`` (``ulimit -v``).

A run's need has two parts. :data:`BASELINE_BYTES` is what a fresh process holds
before it allocates any particle: the interpreter, NumPy, SciPy, numba and its
compiled kernels. It counts in :func:`zlimit.estimate_memory`, which plans a run in a
fresh process; in a running process it is (mostly) resident already, so the check
before a run counts only the part of it above the process's resident size
(:func:`process_rss`). The rest is the run's arrays (:func:`record_bytes` and
:func:`zlimit._engine.memory_need`).
"""
from __future__ import annotations

import os

from ._errors import ResourceError

__all__ = ["available_memory", "process_rss", "record_bytes", "require_memory", "BASELINE_BYTES"]

#: Resident size of a fresh process once zlimit is imported and its numba kernels are
#: compiled, before a run allocates anything of its own. Measured (Linux x86-64,
#: Python 3.11, NumPy 2.4, SciPy 1.17, numba 0.68) as VmRSS of /proc/self/status after
#:     python -c "import numpy as np, zlimit; X = np.array([[1.0, 0.0], [0.6, 0.8]]);
#:         zlimit.simulate(zlimit.MLP(depth=3), X, np.array([1.0, -1.0]), steps=2,
#:         particles=64, groups=2, progress=False)"
#: 213 MiB with numba's on-disk cache warm and 225 MiB when the kernels compile
#: (NUMBA_CACHE_DIR empty; ``import zlimit`` alone is 201 / 213 MiB); the larger is kept.
BASELINE_BYTES = 225 * 2**20

_MEMINFO = "/proc/meminfo"
# (limit file, usage file) of this process's control group: v2, then v1
_CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)
# cgroup v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX pages); anything above this is no limit
_NO_LIMIT = 1 << 60


def process_rss() -> int | None:
    """Resident memory of this process in bytes, None when it cannot be read.

    From ``psutil.Process().memory_info().rss`` when psutil is importable, else
    ``VmRSS`` of ``/proc/self/status`` (Linux).

    Examples
    --------
    >>> process_rss() > 0
    True
    """
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return int(psutil.Process().memory_info().rss)
        except Exception:  # psutil present but unable to read this system
            pass
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # the value is in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def record_bytes(depth: int, steps: int, M: int, kept: int) -> int:
    """Bytes of one recorded trajectory (a group, a seed or the exact trace), float64.

    Kernels of h, x (T+1, M, M) and dh (T, m, m) per layer, bounded by M², the
    cross-step kernels of h and x against the ``kept`` record steps (``kept``, T+1, M, M)
    per layer, and the moments of h and x (T+1, M, 2) per layer:
    8 (T+1) M L (M (3 + 2 kept) + 4). The outputs and losses, O(T M), are not counted.

    Examples
    --------
    >>> record_bytes(depth=1, steps=0, M=1, kept=1)  # 8 · (5 + 4)
    72
    """
    return 8 * (steps + 1) * M * depth * (M * (3 + 2 * kept) + 4)


def require_memory(need: int, what: str) -> None:
    """Refuse to allocate ``need`` bytes that :func:`available_memory` does not have.

    For quantities that can never fit (many steps, a wide network): a one-line
    ResourceError beginning with ``what``, which names the arguments at fault.

    Raises
    ------
    ResourceError
        When ``need`` exceeds the memory available now.

    Examples
    --------
    >>> require_memory(2**80, "steps = 10**20")
    Traceback (most recent call last):
    ...
    zlimit._errors.ResourceError: steps = 10**20 needs at least ...
    """
    have = available_memory()
    if need > have:
        raise ResourceError(f"{what} needs at least {need / 2**30:.3g} GiB but {have / 2**30:.3g} GiB "
                            "is available; make it smaller")


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
