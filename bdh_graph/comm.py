"""Communicators: the one seam between the simulator and MPI (docs/distributed.md).

A network is sharded over the P ranks of a communicator. `SelfComm` is P = 1, in process, with no MPI; `MPIComm`
wraps an mpi4py communicator (`MPI.COMM_WORLD` or one you give). Both offer the same few collectives, so the
sharded code path is the only path: at P = 1 every exchange is the identity.

- `iexchange_active({var: (local, lo, n)})`: every rank contributes the active (index, value) pairs of its block
  of a split variable; everyone gets the full n-vector (zeros for silent neurons). One Allgather of the counts
  and one Allgatherv of the pairs for all variables of a sub-round together (Arbor's spike exchange).
- `iallreduce_sum(buf)`: the partial sums into replicated (hub) targets, one Allreduce per sub-round.
- `gather_blocks(local, root)`, `reduce_sum(buf, root)`, `bcast(obj, root)`: results to rank 0 on request.

The two sub-round exchanges are non-blocking (MPI_Iallgather + MPI_Iallgatherv, MPI_Iallreduce): they return a
request, `req.wait()` gives the result and `req.test()` lets MPI progress it, so the simulator posts them before
the work that does not need them (bdh_graph.simulator, docs/distributed.md). SelfComm's requests are complete
when posted (`Done`), so P = 1 runs the same code. `exchange_active` and `allreduce_sum` are the blocking forms
(post, then wait).

Faults: an uncaught exception on one rank would leave the others waiting in a collective forever. Creating an
`MPIComm` on more than one rank therefore installs `abort_on_exception` (what `python -m mpi4py` does): the
exception is printed, then MPI_Abort ends every rank with exit code 1. A killed rank is seen by the launcher
(MPICH's hydra), which ends the others.

`bytes_sent` counts what this rank contributes to the sub-round exchanges (payload only, 8 bytes a number),
so benchmarks can set it against the design's minimum; `wait_s` is the time spent blocked in `wait()` (the
other ranks' lateness plus the transfer that the overlapped work did not hide). `default_comm()` is
`MPIComm(MPI.COMM_WORLD)` when mpi4py imports and the world has more than one rank, else `SelfComm()`.
"""

from __future__ import annotations

import time

import numpy as np

from .errors import GraphError


class Done:
    """A request that is already complete (every collective of SelfComm): `wait()` returns its value at once."""

    def __init__(self, value):
        self.value = value

    def test(self):
        return True

    def wait(self):
        return self.value


class SelfComm:
    """P = 1: the trivial in-process communicator (every collective is the identity, complete when posted)."""

    rank, size = 0, 1

    def __init__(self):
        self.bytes_sent = 0
        self.messages = 0
        self.wait_s = 0.0

    def iexchange_active(self, blocks):
        return Done({var: np.asarray(local) for var, (local, lo, n) in blocks.items()})

    def iallreduce_sum(self, buf):
        return Done(buf)

    def exchange_active(self, blocks):
        return self.iexchange_active(blocks).wait()

    def allreduce_sum(self, buf):
        return self.iallreduce_sum(buf).wait()

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
        self.wait_s = 0.0
        if self.size > 1:
            abort_on_exception()

    def iexchange_active(self, blocks):
        """Post the exchange of {var: (local block, lo, n)}: a request whose `wait()` gives {var: full (n,)
        vector}, built from the active (index, value) pairs only (`_Exchange`)."""
        return _Exchange(self, blocks)

    def iallreduce_sum(self, buf):
        """Post the sum of `buf` over the ranks (MPI_Iallreduce); `wait()` gives the total."""
        buf = np.ascontiguousarray(buf, dtype=np.float64)
        out = np.empty_like(buf)
        req = self.comm.Iallreduce(buf, out, op=self.MPI.SUM)
        self.bytes_sent += 8 * buf.size
        self.messages += 1
        return _Request(self, [req], lambda: out, (buf, out))

    def exchange_active(self, blocks):
        return self.iexchange_active(blocks).wait()

    def allreduce_sum(self, buf):
        return self.iallreduce_sum(buf).wait()

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


class _Request:
    """Non-blocking MPI requests and what their completion gives: `test()` lets MPI progress them (MPICH moves
    a collective on only inside MPI calls), `wait()` blocks until they complete (the time spent there is added
    to the communicator's `wait_s`) and returns `result()`."""

    def __init__(self, owner, reqs, result, keep=()):
        self.owner, self.reqs, self.result, self.keep = owner, reqs, result, keep
        self.value = None

    def test(self):
        return self.value is not None or self.owner.MPI.Request.Testall(self.reqs)

    def wait(self):
        if self.value is None:
            t = time.perf_counter()
            self.owner.MPI.Request.Waitall(self.reqs)
            self.owner.wait_s += time.perf_counter() - t
            self.value, self.keep = self.result(), ()
        return self.value


class _Exchange:
    """The exchange of active pairs in two non-blocking stages: an Iallgather of every rank's counts, then,
    once they are in (at the first `test()` or `wait()` that finds them), an Iallgatherv of the pairs. One
    float64 buffer per rank: [indices of var 0, values of var 0, indices of var 1, ...] (indices below 2^53 are
    exact in float64)."""

    def __init__(self, mpi, blocks):
        self.mpi, self.blocks, self.names = mpi, blocks, list(blocks)
        idx = [np.flatnonzero(blocks[v][0]) for v in self.names]
        self.counts = np.array([len(i) for i in idx], dtype=np.int64)
        self.all_counts = np.empty((mpi.size, len(self.names)), dtype=np.int64)
        self.send = (
            np.concatenate(
                [
                    np.concatenate([(i + blocks[v][1]).astype(np.float64), np.asarray(blocks[v][0])[i]])
                    for v, i in zip(self.names, idx)
                ]
            )
            if self.names
            else np.zeros(0)
        )
        self.first = _Request(mpi, [mpi.comm.Iallgather(self.counts, self.all_counts)], lambda: None)
        self.second = None
        mpi.bytes_sent += 8 * (len(self.send) + len(self.counts))
        mpi.messages += 2

    def _post_pairs(self):
        per_rank = 2 * self.all_counts.sum(axis=1)
        self.recv = np.empty(int(per_rank.sum()), dtype=np.float64)
        displ = np.concatenate([[0], np.cumsum(per_rank)[:-1]])
        req = self.mpi.comm.Iallgatherv(self.send, [self.recv, per_rank, displ, self.mpi.MPI.DOUBLE])
        self.second = _Request(self.mpi, [req], self._assemble)

    def test(self):
        if self.second is None:
            if not self.first.test():
                return False
            self.first.wait()
            self._post_pairs()
        return self.second.test()

    def wait(self):
        if self.second is None:
            self.first.wait()
            self._post_pairs()
        return self.second.wait()

    def _assemble(self):
        out = {v: np.zeros(self.blocks[v][2]) for v in self.names}
        off = 0
        for r in range(self.mpi.size):
            for k, v in enumerate(self.names):
                c = int(self.all_counts[r, k])
                out[v][self.recv[off : off + c].astype(np.int64)] = self.recv[off + c : off + 2 * c]
                off += 2 * c
        return out


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
