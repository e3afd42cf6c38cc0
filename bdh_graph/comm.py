"""Communicators: the one seam between the simulator and MPI (docs/distributed.md).

A network is sharded over the P ranks of a communicator. `SelfComm` is P = 1, in process, with no MPI; `MPIComm`
wraps an mpi4py communicator (`MPI.COMM_WORLD` or one you give). Both offer the same few collectives, so the
sharded code path is the only path: at P = 1 every exchange is the identity.

- `exchange_active({var: (local, lo, n)})`: every rank contributes the active (index, value) pairs of its block
  of a split variable; everyone gets the full n-vector (zeros for silent neurons). One Allgather of the counts
  and one Allgatherv of the pairs for all variables of a sub-round together (Arbor's spike exchange).
- `allreduce_sum(buf)`: the partial sums into replicated (hub) targets, one Allreduce per sub-round.
- `gather_blocks(local, root)`, `reduce_sum(buf, root)`, `bcast(obj, root)`: results to rank 0 on request.

Faults: an uncaught exception on one rank would leave the others waiting in a collective forever. Creating an
`MPIComm` on more than one rank therefore installs `abort_on_exception` (what `python -m mpi4py` does): the
exception is printed, then MPI_Abort ends every rank with exit code 1. A killed rank is seen by the launcher
(MPICH's hydra), which ends the others.

`bytes_sent` counts what this rank contributes to the sub-round exchanges (payload only, 8 bytes a number),
so benchmarks can set it against the design's minimum. `default_comm()` is `MPIComm(MPI.COMM_WORLD)` when
mpi4py imports and the world has more than one rank, else `SelfComm()`.
"""

from __future__ import annotations

import numpy as np

from .errors import GraphError


class SelfComm:
    """P = 1: the trivial in-process communicator (every collective is the identity)."""

    rank, size = 0, 1

    def __init__(self):
        self.bytes_sent = 0
        self.messages = 0

    def exchange_active(self, blocks):
        return {var: np.asarray(local) for var, (local, lo, n) in blocks.items()}

    def allreduce_sum(self, buf):
        return buf

    def gather_blocks(self, local, root=0):
        return np.asarray(local)

    def reduce_sum(self, buf, root=0):
        return buf

    def bcast(self, obj, root=0):
        return obj

    def allgather(self, obj):
        return [obj]

    def barrier(self):
        pass

    def abort(self, code=1):
        raise SystemExit(code)

    def __repr__(self):
        return "SelfComm(size=1)"


class MPIComm:
    """P >= 1 ranks of an mpi4py communicator (default MPI.COMM_WORLD)."""

    def __init__(self, comm=None):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.bytes_sent = 0
        self.messages = 0
        if self.size > 1:
            abort_on_exception()

    def exchange_active(self, blocks):
        """{var: (local block, lo, n)} -> {var: full (n,) vector}, from the active (index, value) pairs only."""
        names = list(blocks)
        idx = [np.flatnonzero(blocks[v][0]) for v in names]
        counts = np.array([len(i) for i in idx], dtype=np.int64)
        all_counts = np.empty((self.size, len(names)), dtype=np.int64)
        self.comm.Allgather(counts, all_counts)
        # one float64 buffer per rank: [indices of var 0, values of var 0, indices of var 1, ...]; indices below
        # 2^53 are exact in float64
        send = (
            np.concatenate(
                [
                    np.concatenate([(i + blocks[v][1]).astype(np.float64), np.asarray(blocks[v][0])[i]])
                    for v, i in zip(names, idx)
                ]
            )
            if names
            else np.zeros(0)
        )
        per_rank = 2 * all_counts.sum(axis=1)
        recv = np.empty(int(per_rank.sum()), dtype=np.float64)
        self.comm.Allgatherv(send, [recv, per_rank, np.concatenate([[0], np.cumsum(per_rank)[:-1]]), self.MPI.DOUBLE])
        self.bytes_sent += 8 * (len(send) + len(counts))
        self.messages += 2
        out = {v: np.zeros(blocks[v][2]) for v in names}
        off = 0
        for r in range(self.size):
            for k, v in enumerate(names):
                c = int(all_counts[r, k])
                out[v][recv[off : off + c].astype(np.int64)] = recv[off + c : off + 2 * c]
                off += 2 * c
        return out

    def allreduce_sum(self, buf):
        buf = np.ascontiguousarray(buf, dtype=np.float64)
        out = np.empty_like(buf)
        self.comm.Allreduce(buf, out, op=self.MPI.SUM)
        self.bytes_sent += 8 * buf.size
        self.messages += 1
        return out

    def gather_blocks(self, local, root=0):
        """Concatenate every rank's block along axis 0 on `root` (None elsewhere)."""
        parts = self.comm.gather(np.asarray(local), root=root)
        return np.concatenate(parts, axis=0) if self.rank == root else None

    def reduce_sum(self, buf, root=0):
        buf = np.ascontiguousarray(buf, dtype=np.float64)
        out = np.empty_like(buf) if self.rank == root else None
        self.comm.Reduce(buf, out, op=self.MPI.SUM, root=root)
        return out

    def bcast(self, obj, root=0):
        return self.comm.bcast(obj, root=root)

    def allgather(self, obj):
        return self.comm.allgather(obj)

    def barrier(self):
        self.comm.Barrier()

    def abort(self, code=1):
        self.comm.Abort(code)

    def __repr__(self):
        return f"MPIComm(rank={self.rank}, size={self.size})"


def abort_on_exception():
    """Make an uncaught exception on this rank end every rank of MPI.COMM_WORLD (print it, then MPI_Abort(1))."""
    import sys

    hook = sys.excepthook
    if getattr(hook, "_bdh_abort", False):
        return

    def excepthook(kind, value, tb):
        hook(kind, value, tb)
        try:
            sys.stderr.flush()
        finally:
            from mpi4py import MPI

            MPI.COMM_WORLD.Abort(1)

    excepthook._bdh_abort = True
    sys.excepthook = excepthook


def mpi_world_size():
    """Size of MPI.COMM_WORLD if mpi4py imports (and MPI starts), else 1. Cheap when not under mpiexec."""
    import os

    if not any(
        k in os.environ
        for k in (
            "PMI_RANK",
            "PMI_SIZE",
            "OMPI_COMM_WORLD_SIZE",
            "PMIX_RANK",
            "MPI_LOCALNRANKS",
            "HYDI_CONTROL_FD",
            "SLURM_PROCID",
        )
    ):
        return 1
    try:
        from mpi4py import MPI
    except ImportError:
        return 1
    return MPI.COMM_WORLD.Get_size()


def world_rank():
    """This process's rank in MPI.COMM_WORLD under an MPI launcher, else 0."""
    if mpi_world_size() <= 1:
        return 0
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank()


def default_comm():
    """MPIComm(COMM_WORLD) when running under an MPI launcher with more than one rank, else SelfComm()."""
    return MPIComm() if mpi_world_size() > 1 else SelfComm()


def as_comm(comm):
    """None -> default_comm(); a SelfComm/MPIComm as is; an mpi4py communicator -> MPIComm(it)."""
    if comm is None:
        return default_comm()
    if isinstance(comm, (SelfComm, MPIComm)):
        return comm
    if hasattr(comm, "Get_rank") and hasattr(comm, "Allreduce"):
        return MPIComm(comm)
    raise GraphError(f"comm: expected None, SelfComm, MPIComm or an mpi4py communicator, got {type(comm).__name__}")


def block(n, size, rank, align=2):
    """The contiguous block [lo, hi) of `rank` among `size` of a population of n nodes; boundaries fall on
    multiples of `align` (2: RoPE pairs (2m, 2m+1) are never split) unless n is not a multiple of it. Blocks may
    be uneven (and empty when n < size * align)."""
    a = align if n % align == 0 else 1
    units = n // a
    sizes = np.full(size, units // size) + (np.arange(size) < units % size)
    lo = int(sizes[:rank].sum()) * a
    return lo, lo + int(sizes[rank]) * a
