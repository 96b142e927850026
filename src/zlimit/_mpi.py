"""Scale-out: the particles of each group split over the R ranks of an MPI communicator.

A Monte Carlo group (:mod:`zlimit._engine`) is N/G i.i.d. particles, and every
quantity the Z recursions read from them is a particle mean E_N[·] (maths §3): basis
coordinates and residual norms, Stein coefficients, kernels and f̊. Everything else
is per particle. So a group splits over R ranks by particle range: rank r holds
particles lo_r..hi_r−1 of every particle array (:class:`Shard`), and each E_N is a
local sum over them followed by one reduction over the ranks (:meth:`Shard.sum`).

* **Same numbers on every rank.** A reduction is a Reduce to rank 0 followed by a
  Bcast, so every rank gets rank 0's bits, whatever the MPI library's Allreduce
  algorithm does. The engine's decisions (open a direction or not, grow a basis,
  raise a ``DivergenceError``) read only reduced numbers, so all ranks take them
  together, and an error raised there is raised on every rank at the same point.
* **Same particles for any R.** Normals are counter-based in the particle index
  (:func:`zlimit._kernels.fill_normals`), so R ranks draw exactly the particles one
  process draws. Results for the same R are bit-identical run to run; across R they
  differ by the order of the floating-point sums (local BLAS sums, then the
  reduction), which ``tests/test_mpi.py`` measures and bounds.
* **Threads.** Each rank runs its groups on worker threads as a single process does;
  each group talks on its own duplicate of the communicator (:func:`group_comms`), so
  the collectives of different groups never interleave. That needs an MPI initialised
  with ``MPI_THREAD_MULTIPLE`` (mpi4py's default); with less, groups run one at a time
  (:func:`threads_allowed`), which changes no number.
* **Failures.** An error that not every rank can see (a bug, a ``MemoryError``, an
  ``on_step`` that raises on one rank, a second Ctrl-C) would leave the other ranks
  waiting in a collective forever: :func:`abort` prints the one-line error and ends
  every rank with ``MPI_Abort``.

mpi4py is imported only when a communicator is given (``pip install "zlimit[mpi]"``).
"""
from __future__ import annotations

import hashlib
import os
import sys
import threading
from dataclasses import dataclass

import numpy as np

__all__ = ["Shard", "check_comm", "group_comms", "abort", "agree_arguments", "node_ranks", "threads_allowed", "world"]

#: environment variables that MPI launchers set in each rank (MPICH's Hydra and srun's PMI, Open MPI, PMIx)
_LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError('running over MPI needs mpi4py: pip install "zlimit[mpi]" (or mpi4py built against '
                          "your cluster's MPI)") from None
    return MPI


def split(n: int, rank: int, size: int) -> tuple[int, int]:
    """Particles [lo, hi) of ``rank`` out of ``size`` ranks for a group of n particles.

    Contiguous and as even as possible, with even boundaries: the normals come in
    pairs of particles (:func:`zlimit._kernels.fill_normals`).

    Examples
    --------
    >>> [split(11, r, 3) for r in range(3)]
    [(0, 4), (4, 8), (8, 11)]
    """
    pairs = (n + 1) // 2
    bound = lambda r: min(2 * (r * pairs // size), n)
    return bound(rank), (n if rank == size - 1 else bound(rank + 1))


@dataclass(frozen=True)
class Shard:
    """This rank's particles lo..hi−1 of a group of n, and E_N over all n of them.

    With no communicator (a single process) the shard is the whole group and every
    reduction is the identity, so the single-process engine runs exactly as written.
    The exact linear limit uses ``Shard(1)``: its "particles" are coefficient
    vectors and E[a b] is their dot product (:func:`zlimit._gaussian.project`).

    Parameters
    ----------
    n : int
        Particles of the group, over all ranks: the normalisation of E_N.
    lo, hi : int
        This rank's particle range (default all n).
    comm : mpi4py communicator, optional
        The group's communicator (:func:`group_comms`).

    Examples
    --------
    >>> s = Shard(4)
    >>> s.gram(np.ones((1, 4)), np.full((2, 4), 2.0)).tolist(), s.local
    ([[2.0, 2.0]], 4)
    """

    n: int
    lo: int = 0
    hi: int | None = None
    comm: object = None

    @classmethod
    def of(cls, n: int, comm=None) -> Shard:
        """This rank's shard of a group of n particles (the whole group without ``comm``)."""
        if comm is None:
            return cls(n)
        return cls(n, *split(n, comm.Get_rank(), comm.Get_size()), comm)

    @property
    def local(self) -> int:
        """Particles held here, hi − lo."""
        return (self.n if self.hi is None else self.hi) - self.lo

    def sum(self, x: np.ndarray) -> np.ndarray:
        """Σ over ranks of the local partial sums ``x`` (any shape): rank 0's bits on every rank."""
        if self.comm is None or np.size(x) == 0:
            return x
        MPI = _mpi()
        local = np.ascontiguousarray(x)
        out = np.empty_like(local)
        self.comm.Reduce(local, out, op=MPI.SUM, root=0)
        self.comm.Bcast(out, root=0)
        return out.reshape(np.shape(x))

    def gram(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """E_N[Z^a Z^b'] = a bᵀ/N in float64 for particle rows a (r, N) and b (s, N): (r, s)
        (or (r,) for a single particle vector b)."""
        return self.sum((a @ b.T).astype(np.float64)) / self.n

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on some rank."""
        if self.comm is None:
            return bool(flag)
        out = np.zeros(1, dtype=np.int32)  # a buffer call: mpi4py releases the GIL in it (its pickling
        self.comm.Allreduce(np.array([int(bool(flag))], dtype=np.int32), out, op=_mpi().MAX)  # calls may not)
        return bool(out[0])

    def variance(self, v: np.ndarray) -> float:
        """The variance over all n particles of the particle vector v (local part, (N_local,))."""
        if self.comm is None:
            return float(np.var(v))
        mean = float(self.sum(np.array([v.sum(dtype=np.float64)]))[0]) / self.n
        return float(self.sum(np.array([np.sum((v - mean) ** 2, dtype=np.float64)]))[0]) / self.n


def check_comm(comm, particles_per_group: int):
    """The communicator of ``simulate(..., comm=...)``, checked: None, or an mpi4py
    intracommunicator whose ranks each get at least 2 particles of every group.

    Raises
    ------
    ValueError
        Naming what to change.
    """
    if comm is None:
        return None
    MPI = _mpi()
    if not isinstance(comm, MPI.Intracomm) or comm == MPI.COMM_NULL:
        raise ValueError(f"comm must be an mpi4py intracommunicator such as MPI.COMM_WORLD, or None; got {comm!r}")
    size = comm.Get_size()
    if particles_per_group < 2 * size:
        raise ValueError(f"{particles_per_group} particles per group is too few for {size} MPI ranks; give each "
                         f"rank >= 2 of every group's particles (particles >= {2 * size} x groups)")
    return comm


def group_comms(comm, groups: int) -> list:
    """One duplicate of ``comm`` per group (collective: every rank calls it in the same
    order), so that groups running on different threads never mix their collectives."""
    if comm is None:
        return [None] * groups
    return [comm.Dup() for _ in range(groups)]


def threads_allowed(comm) -> bool:
    """Whether groups may run on several threads: MPI must have been initialised with
    ``MPI_THREAD_MULTIPLE`` (mpi4py asks for it; a site MPI may give less)."""
    return comm is None or _mpi().Query_thread() >= _mpi().THREAD_MULTIPLE


def agree_arguments(comm, *parts) -> None:
    """Check that every rank was called with the same arguments (collective).

    Ranks given different data or settings would compute different particles and
    wait for each other in mismatched collectives; this compares a digest of
    ``parts`` (arrays and reprs) across ranks first.

    Raises
    ------
    ValueError
        On every rank, naming the first rank whose arguments differ from rank 0's.
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(repr((part.dtype.str, part.shape)).encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(repr(part).encode())
    digests = comm.allgather(digest.hexdigest())
    differ = [r for r, d in enumerate(digests) if d != digests[0]]
    if differ:
        raise ValueError(f"MPI rank {differ[0]} was given other arguments than rank 0 (data, model or settings); "
                         "every rank must call simulate with the same ones")


def node_ranks(comm) -> int:
    """How many ranks of ``comm`` share this rank's machine (and so its memory)."""
    if comm is None:
        return 1
    local = comm.Split_type(_mpi().COMM_TYPE_SHARED)
    try:
        return local.Get_size()
    finally:
        local.Free()


#: held by the first thread of this process that ends the job: one line per rank, not per group
_ABORTING = threading.Lock()


def abort(comm, exc: BaseException, code: int = 1) -> None:
    """End every rank of ``comm``: print ``exc`` as one line, then ``MPI_Abort(code)``.

    For an error that not every rank raises: the others are waiting in a collective
    and cannot be told any other way. When several groups of a rank fail at once, the
    first one prints and aborts; the others wait for the end.
    """
    if not _ABORTING.acquire(blocking=False):  # another thread of this rank is ending the job already
        threading.Event().wait()  # (MPI_Abort ends this process too)
    where = f"MPI rank {comm.Get_rank()} of {comm.Get_size()}"
    if isinstance(exc, KeyboardInterrupt):
        line = f"zlimit: interrupted on {where}; ending all ranks"
    else:
        message = " ".join(str(exc).split()) or type(exc).__name__
        line = f"zlimit: error on {where}: {message} ({type(exc).__name__}); ending all ranks"
    print(line, file=sys.stderr, flush=True)
    comm.Abort(code)


def world():
    """``MPI.COMM_WORLD`` when an MPI launcher (mpiexec, srun) started this process as
    one of several ranks, else None: a process started without one never imports mpi4py."""
    if not any(name in os.environ for name in _LAUNCHER_VARIABLES):
        return None
    comm = _mpi().COMM_WORLD
    return comm if comm.Get_size() > 1 else None
