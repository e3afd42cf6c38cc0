"""The network: populations of nodes, synapse groups between them, edge variables (sigma) and a kernel.

Edge convention (reference section 1), fixed here once: a group is given as a matrix in Eq. 6 orientation,
`G[j, i]` = weight of the edge *from i to j* (row = receiving node), so `G @ v` sums over incoming edges.
It is stored source-major (CSC of that matrix): the out-edges of source `i` are
`indices[indptr[i]:indptr[i+1]]` (targets, ascending) with weights `weight[...]`; edge number `e` is the
position in that order, which is also the order of every edge variable (`sigma_l`) on the group.

U (Eq. 6: `sigma <- sigma U`) of an edge variable, with `U = diag(u) R(theta)` acting on the key (source)
index `b`:

- `u` of shape (n_pre,): `sigma[:, b] *= u[b]` (ALiBi-like damping); of shape (n_post, n_pre): per synapse,
  `sigma[a, b] *= u[a, b]`; None: U = I.
- `theta` of shape (n_pre // 2,): R is block diagonal with `[[cos t_m, -sin t_m], [sin t_m, cos t_m]]` on
  the key pair (2m, 2m+1), applied after u: `sigma <- (sigma * u) @ R`, i.e.
  `new[a, 2m]   =  u[a,2m] cos t_m sigma[a,2m] + u[a,2m+1] sin t_m sigma[a,2m+1]` and
  `new[a, 2m+1] = -u[a,2m] sin t_m sigma[a,2m] + u[a,2m+1] cos t_m sigma[a,2m+1]`.
  A rotation moves state between the synapses (2m -> a) and (2m+1 -> a), so the edge set of the group is
  closed under that pairing (missing partners are added with weight 0) and sigma becomes signed.
Per edge this is `new[e] = coef_self[e] * sigma[e] + coef_mate[e] * sigma[mate[e]]`; every backend applies
these same arrays (tests/test_graph_equivalence.py checks them against a dense `(sigma * u) @ R`).

Sharding (docs/distributed.md). A network lives on the ranks of a communicator (bdh_graph.comm; P = 1 is the
trivial one). A *split* population (default: `neurons`) is cut into contiguous blocks, one per rank, on even
boundaries (RoPE pairs are never split); other populations (hubs, outputs) are *replicated*. Each rank holds only
the synapses it owns: a group into a split population lives with its target's rank (rows = the local block,
columns = every source: `gathered` when the source is split too, so its active values are exchanged first); a
group from a split population into a replicated one lives with its source's rank (columns = the local block;
`partial`: each rank sums its part and one Allreduce completes it); a group between replicated populations is
held by every rank. A SynapseGroup therefore stores the *local* block: `n_pre`, `n_post` are the lengths of the
source and target vectors it is applied to, `col0`, `row0` their global offsets. Edge variables and their U
(u, theta, mates) live on the same local edges. At P = 1 the local block is the whole group.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from . import kernels as K
from .checks import check_finite
from .comm import as_comm, block
from .errors import GraphError
from .kernels import GROUPS

NEURON_VARIABLES = ("X", "Y", "A", "Xe", "Xi", "Ye", "Yi")


@dataclass(frozen=True)
class Population:
    """`size` nodes in all; this rank holds [lo, hi) (the whole population when not `split`)."""

    name: str
    size: int
    variables: tuple
    split: bool = False
    lo: int = 0
    hi: int = 0

    @property
    def local_size(self):
        return self.hi - self.lo


@dataclass(frozen=True)
class SynapseGroup:
    """Directed, weighted, non-negative edges from population `pre` to `post`, stored source-major."""

    name: str
    pre: str
    post: str
    n_pre: int
    n_post: int
    indptr: np.ndarray  # (n_pre + 1,) int64
    indices: np.ndarray  # (nnz,) int64, target of each edge
    weight: np.ndarray  # (nnz,) float64
    col0: int = 0  # global index of local source 0 (sharding, module docstring)
    row0: int = 0  # global index of local target 0
    gathered: bool = False  # the source is split and indexed globally: its active values are exchanged
    partial: bool = False  # the source is split, the target replicated: sums are completed by an Allreduce

    @property
    def nnz(self):
        return len(self.indices)

    @cached_property
    def source(self):
        """(nnz,) source of each edge."""
        return np.repeat(np.arange(self.n_pre, dtype=np.int64), np.diff(self.indptr))

    @property
    def out_degree(self):
        return np.diff(self.indptr)

    def matrix(self, values=None):
        """scipy CSC (n_post, n_pre) in Eq. 6 orientation, with `values` (default: the weights) on the edges."""
        v = self.weight if values is None else values
        return sp.csc_matrix((v, self.indices, self.indptr), shape=(self.n_post, self.n_pre))

    def dense(self, values=None):
        return self.matrix(values).toarray()

    def read_source(self, var, local, remote):
        """The values of source variable `var` as this group reads them: `remote[var]`, the full vector exchanged
        at the start of the communication sub-round, when the group is `gathered` (its source is split over
        ranks and indexed globally), else this rank's own `local[var]` (docs/distributed.md)."""
        return remote[var] if self.gathered else local[var]


@dataclass(frozen=True)
class EdgeVariable:
    """State on the edges of a group (sigma_l), with its U as per-edge coefficients (module docstring)."""

    name: str
    group: str
    kind: str  # "identity" | "diagonal" | "rotation"
    u_edge: np.ndarray  # (nnz,) retention of each synapse (1 for identity)
    coef_self: np.ndarray  # (nnz,)
    coef_mate: np.ndarray  # (nnz,) with a rotation, else empty
    mate: np.ndarray  # (nnz,) int64, the paired synapse, with a rotation, else empty
    pair_first: np.ndarray  # edges with an even source, the first of each rotated pair
    u: np.ndarray | None = None
    theta: np.ndarray | None = None


# ---- validation -----------------------------------------------------------------------------------------------


def as_group_matrix(name, M, shape):
    """Validate a group given as a dense array or scipy sparse matrix (Eq. 6 orientation); scipy CSC out."""
    if sp.issparse(M):
        M = sp.csc_matrix(M, dtype=np.float64)
        M.sum_duplicates()
        M.sort_indices()
        vals = M.data
    else:
        M = np.asarray(M, dtype=np.float64)
        vals = M
    if M.shape != tuple(shape):
        raise GraphError(f"{name}: expected shape {tuple(shape)} (row = receiving node), got {M.shape}")
    check_finite(name, vals)
    if vals.size and vals.min() < 0:
        if sp.issparse(M):
            k = int(np.argmin(M.data))
            col = int(np.searchsorted(M.indptr, k, side="right") - 1)
            where = f"edge {col}->{int(M.indices[k])}"
        else:
            j, i = np.unravel_index(int(np.argmin(M)), M.shape)
            where = f"edge {i}->{j}"
        raise GraphError(
            f"{name}: weights must be non-negative, got {vals.min():g} on {where}; "
            "put the negative part in the inhibitory group"
        )
    return M if sp.issparse(M) else sp.csc_matrix(M)


def _group_from_csc(name, pre, post, M, **shard):
    M = sp.csc_matrix(M)
    M.sort_indices()
    return SynapseGroup(
        name,
        pre,
        post,
        M.shape[1],
        M.shape[0],
        M.indptr.astype(np.int64),
        M.indices.astype(np.int64),
        M.data.astype(np.float64),
        **shard,
    )


def _pair_closure(M, col0=0):
    """Add zero-weight edges so that (2m -> a) exists iff (2m+1 -> a) does (needed by a rotation); `col0` (even)
    is the global index of column 0. Vectorised: sort the edge keys once, look every partner up."""
    M = sp.coo_matrix(M)
    rows, cols = M.row.astype(np.int64), M.col.astype(np.int64)
    nr = M.shape[0]
    keys = np.sort(cols * nr + rows)
    partner = (((cols + col0) ^ 1) - col0) * nr + rows
    at = np.minimum(np.searchsorted(keys, partner), max(len(keys) - 1, 0))
    missing = np.flatnonzero(keys[at] != partner) if len(keys) else np.zeros(0, dtype=np.int64)
    if not len(missing):
        return sp.csc_matrix(M)
    r = np.concatenate([rows, rows[missing]])
    c = np.concatenate([cols, ((cols[missing] + col0) ^ 1) - col0])
    d = np.concatenate([M.data, np.zeros(len(missing))])
    # keep the structural zeros: csc_matrix((d, (r, c))) keeps explicit entries
    return sp.csc_matrix((d, (r, c)), shape=M.shape)


def _edge_variable(name, group, u=None, theta=None):
    g = group
    src, dst = g.source, g.indices
    if u is None:
        u_edge = np.ones(g.nnz)
    else:
        u = np.asarray(u, dtype=np.float64)
        if u.shape not in ((g.n_pre,), (g.n_post, g.n_pre)):
            raise GraphError(
                f"u: expected shape ({g.n_pre},) (per key neuron) or {(g.n_post, g.n_pre)} (per synapse), got {u.shape}"
            )
        check_finite("u", u)
        if u.size and (u.min() < 0 or u.max() > 1):
            raise GraphError(f"u: retention must lie in [0, 1], got values in [{u.min():g}, {u.max():g}]")
        u_edge = u[src] if u.ndim == 1 else u[dst, src]
    if theta is None:
        kind = "identity" if (u is None or np.all(u_edge == 1.0)) else "diagonal"
        none = np.zeros(0, dtype=np.int64)  # no pairing without a rotation: coef_mate and mate stay empty
        return EdgeVariable(name, g.name, kind, u_edge, u_edge, np.zeros(0), none, none, u, None)
    theta = np.asarray(theta, dtype=np.float64)
    if g.n_pre % 2:
        raise GraphError(
            f"theta: rotation pairs key neurons (2m, 2m+1), so the population needs an even size, got {g.n_pre}"
        )
    if theta.shape != (g.n_pre // 2,):
        raise GraphError(f"theta: expected shape ({g.n_pre // 2},) (one angle per neuron pair), got {theta.shape}")
    check_finite("theta", theta)
    keys = src * g.n_post + dst  # ascending in source-major order
    mate = np.searchsorted(keys, (src ^ 1) * g.n_post + dst).astype(np.int64)
    if not np.array_equal(keys[np.minimum(mate, g.nnz - 1)], (src ^ 1) * g.n_post + dst):
        raise GraphError(f"{g.name}: a rotation needs the edge set closed under pairing (2m <-> 2m+1)")
    c, s = np.cos(theta[src // 2]), np.sin(theta[src // 2])
    sign = np.where(src % 2 == 0, 1.0, -1.0)
    coef_self = u_edge * c
    coef_mate = sign * u_edge[mate] * s
    pair_first = np.flatnonzero(src % 2 == 0).astype(np.int64)
    return EdgeVariable(name, g.name, "rotation", u_edge, coef_self, coef_mate, mate, pair_first, u, theta)


# ---- the network ----------------------------------------------------------------------------------------------


class Network:
    """Populations, synapse groups, edge variables and a kernel. Parameters only: state lives in a Simulator.

    Build the paper's network with `from_dense`, `from_edges`, `from_scipy` or `from_pyg`; extend it with
    `add_population`, `add_group`, `add_edge_variable` and `with_kernel` (see docs/bdh_graph.md, "Extending").
    `simulator`, `run`, `to_networkx`, `to_pyg` and `from_pyg` are thin: the work is in bdh_graph.simulator and
    bdh_graph.export, which take the network as an argument and do not import this module.
    """

    def __init__(self, comm=None):
        self.comm = as_comm(comm)
        self.populations: dict[str, Population] = {}
        self.groups: dict[str, SynapseGroup] = {}
        self.edge_vars: dict[str, EdgeVariable] = {}
        self.kernel: K.Kernel | None = None
        self._closed = set()  # groups already closed under rotation pairing

    # -- building blocks --
    def add_population(self, name, size, variables=NEURON_VARIABLES, split=None):
        """Add `size` nodes with `variables`; `split` (default: only for `neurons`) cuts it into one contiguous
        block per rank (module docstring), else every rank holds all of it."""
        if name in self.populations:
            raise GraphError(f"population {name!r} already exists")
        if "." in name or int(size) < 1:
            raise GraphError(f"population {name!r}: expected a dot-free name and size >= 1, got size {size}")
        split = (name == "neurons") if split is None else bool(split)
        lo, hi = block(int(size), self.comm.size, self.comm.rank) if split else (0, int(size))
        self.populations[name] = Population(name, int(size), tuple(variables), split, lo, hi)
        self._pops_added = self.__dict__.get("_pops_added", 0) + 1
        return self

    def owned(self, pre, post):
        """(rows, cols): the global target and source ranges of the block of a pre -> post group on this rank."""
        P, Q = self.populations[pre], self.populations[post]
        rows = slice(Q.lo, Q.hi) if Q.split else slice(0, Q.size)
        cols = slice(P.lo, P.hi) if (P.split and not Q.split) else slice(0, P.size)
        return rows, cols

    def add_group(self, name, pre, post, matrix=None, *, block=None):
        """Add a synapse group from population `pre` to `post`; `matrix` (n_post, n_pre) global, Eq. 6
        orientation (this rank keeps the block it owns), or `block`: only that block, of the shape of
        `owned(pre, post)` (no process need hold the whole group)."""
        for p in (pre, post):
            if p not in self.populations:
                raise GraphError(f"group {name}: unknown population {p!r}; known: {sorted(self.populations)}")
        if (matrix is None) == (block is None):
            raise GraphError(
                f"group {name}: give either the whole matrix or this rank's block, "
                f"not {'both' if block is not None else 'neither'}"
            )
        P, Q = self.populations[pre], self.populations[post]
        rows, cols = self.owned(pre, post)
        if block is None:
            M = as_group_matrix(name, matrix, (Q.size, P.size))
            if (rows.stop - rows.start, cols.stop - cols.start) != M.shape:
                M = M[rows, :][:, cols]
        else:
            M = as_group_matrix(
                f"{name} (block rows {rows.start}:{rows.stop}, columns {cols.start}:{cols.stop})",
                block,
                (rows.stop - rows.start, cols.stop - cols.start),
            )
        self.groups[name] = _group_from_csc(
            name,
            pre,
            post,
            M,
            col0=cols.start,
            row0=rows.start,
            gathered=P.split and Q.split,
            partial=P.split and not Q.split,
        )
        self._closed.discard(name)
        return self

    def add_edge_variable(self, name, group, u=None, theta=None):
        """Declare state `name` on the edges of `group`, with retention `u` and rotation `theta` (U, Eq. 6);
        `u`, `theta` are global (per key neuron of the whole population), each rank keeps its slice."""
        if group not in self.groups:
            raise GraphError(f"edge variable {name}: unknown group {group!r}; known: {sorted(self.groups)}")
        u, theta = self._local_u_theta(self.groups[group], u, theta)
        if theta is not None and group not in self._closed:
            self._close_under_pairing(group)
        g = self.groups[group]
        same = lambda a, b: (
            (a is None and b is None)
            or (a is not None and b is not None and a.shape == b.shape and np.array_equal(a, b))
        )
        for ev in self.edge_vars.values():  # one U for every layer (BDH-GPU shares it): share its arrays
            if ev.group == group and same(ev.u, u) and same(ev.theta, theta):
                self.edge_vars[name] = dataclasses.replace(ev, name=name)
                return self
        self.edge_vars[name] = _edge_variable(name, g, u, theta)
        return self

    def _local_u_theta(self, g, u, theta):
        """Check global `u`, `theta` of group g's U and cut out this rank's slice (its columns, rows)."""
        n_pre, n_post = self.populations[g.pre].size, self.populations[g.post].size
        if theta is not None and n_pre % 2:
            raise GraphError(
                f"theta: rotation pairs key neurons (2m, 2m+1), so {g.pre} needs an even size, got {n_pre}"
            )
        cols, rows = slice(g.col0, g.col0 + g.n_pre), slice(g.row0, g.row0 + g.n_post)
        if u is not None:
            u = np.asarray(u, dtype=np.float64)
            if u.shape not in ((n_pre,), (n_post, n_pre)):
                raise GraphError(
                    f"u: expected shape ({n_pre},) (per key neuron) or {(n_post, n_pre)} (per synapse), got {u.shape}"
                )
            check_finite("u", u)
            if u.min() < 0 or u.max() > 1:  # checked globally: a rank's block may be empty
                raise GraphError(f"u: retention must lie in [0, 1], got values in [{u.min():g}, {u.max():g}]")
            u = u[cols] if u.ndim == 1 else u[rows, cols]
        if theta is not None:
            theta = np.asarray(theta, dtype=np.float64)
            if theta.shape != (n_pre // 2,):
                raise GraphError(
                    f"theta: expected shape ({n_pre // 2},) (one angle per neuron pair), got {theta.shape}"
                )
            theta = theta[g.col0 // 2 : (g.col0 + g.n_pre) // 2]
        return u, theta

    def _close_under_pairing(self, group):
        """Add the missing rotation partners of `group` (weight 0), before any edge variable numbers its edges."""
        g = self.groups[group]
        closed = _group_from_csc(
            group,
            g.pre,
            g.post,
            _pair_closure(g.matrix(), g.col0),
            col0=g.col0,
            row0=g.row0,
            gathered=g.gathered,
            partial=g.partial,
        )
        if closed.nnz != g.nnz:
            if any(ev.group == group for ev in self.edge_vars.values()):
                raise GraphError(f"{group}: cannot add rotation partners after other edge variables exist")
            self.groups[group] = closed
        self._closed.add(group)

    def with_kernel(self, kernel):
        K.validate(
            kernel,
            self.node_variables,
            {k: v.group for k, v in self.edge_vars.items()},
            {k: (g.pre, g.post) for k, g in self.groups.items()},
            {k: p.size for k, p in self.populations.items()},
        )
        self.kernel = kernel
        return self

    def group_of(self, rule):
        """The synapse group a communication rule runs over: its `group` (send), else its edge variable's."""
        if rule.kind == "send":
            return self.groups[rule.group]
        return self.groups[self.edge_vars[rule.src[1] if rule.kind == "read" else rule.dst].group]

    @property
    def node_variables(self):
        """{qualified name: population}: neurons' variables bare (`X`), others as `pop.V` (built once per set of
        populations: the scheduler asks for it every sub-round)."""
        key = (id(self.populations), len(self.populations), self.__dict__.get("_pops_added", 0))
        if self.__dict__.get("_node_vars_key") != key:
            out = {}
            for p in self.populations.values():
                for v in p.variables:
                    out[v if p.name == "neurons" else f"{p.name}.{v}"] = p.name
            self._node_vars, self._node_vars_key = out, key
        return self._node_vars

    def size_of(self, var):
        """Length of `var`'s array on this rank (its block of a split population)."""
        return self.populations[self.node_variables[var]].local_size

    def global_size_of(self, var):
        return self.populations[self.node_variables[var]].size

    def block_of(self, var):
        """(lo, hi): the global range of `var`'s nodes held by this rank."""
        p = self.populations[self.node_variables[var]]
        return p.lo, p.hi

    @property
    def n(self):
        return self.populations["neurons"].size

    @property
    def layers(self):
        return len(self.kernel.layers)

    @property
    def sigma_names(self):
        return list(self.edge_vars)

    # -- constructors of the paper's network --
    @classmethod
    def _paper(
        cls, n, mats, u, theta, layers, shared_sigma, damping, hebbian_orientation, kernel, comm=None, blocks=None
    ):
        if not isinstance(layers, (int, np.integer)) or layers < 1:
            raise GraphError(f"layers: expected an integer >= 1, got {layers!r}")
        net = cls(comm).add_population("neurons", n)
        rows, cols = net.owned("neurons", "neurons")
        for name in GROUPS:
            if blocks is None:
                net.add_group(name, "neurons", "neurons", mats[name])
            else:
                net.add_group(name, "neurons", "neurons", block=blocks(name, rows, cols))
        for l in range(1 if shared_sigma else layers):
            net.add_edge_variable(K.sigma_name(l, shared_sigma), "Gs", u=u, theta=theta)
        build = {"1b": K.table_1b, "1a": K.table_1a}
        if kernel not in build:
            raise GraphError(f"kernel: expected '1b' or '1a', got {kernel!r}")
        return net.with_kernel(
            build[kernel](layers, shared_sigma=shared_sigma, damping=damping, hebbian_orientation=hebbian_orientation)
        )

    @classmethod
    def from_dense(
        cls,
        Gx_e,
        Gx_i=None,
        Gy_e=None,
        Gy_i=None,
        Gs=None,
        u=None,
        theta=None,
        layers=1,
        *,
        shared_sigma=False,
        damping="eq6",
        hebbian_orientation="eq6",
        kernel="1b",
        comm=None,
    ):
        """The paper's network from dense (n, n) non-negative arrays in Eq. 6 orientation (row = receiver).

        Missing inhibitory groups are empty; a missing `Gy_e` is empty; a missing `Gs` is all ones (Obs. 4).
        An entry is an edge iff it is non-zero. `comm`: the communicator to shard over (bdh_graph.comm; default
        MPI.COMM_WORLD under mpiexec with more than one rank, else in process).
        """
        Gx_e = np.asarray(Gx_e, dtype=np.float64)
        if Gx_e.ndim != 2 or Gx_e.shape[0] != Gx_e.shape[1]:
            raise GraphError(f"Gx_e: expected a square (n, n) array, got shape {Gx_e.shape}")
        n = Gx_e.shape[0]
        given = dict(Gx_e=Gx_e, Gx_i=Gx_i, Gy_e=Gy_e, Gy_i=Gy_i, Gs=Gs)
        defaults = dict(Gx_i=np.zeros((n, n)), Gy_e=np.zeros((n, n)), Gy_i=np.zeros((n, n)), Gs=np.ones((n, n)))
        mats = {k: (defaults[k] if v is None else v) for k, v in given.items()}
        for k, v in mats.items():  # validate dense first so the error names the group
            as_group_matrix(k, v, (n, n))
        return cls._paper(
            n,
            {k: sp.csc_matrix(np.asarray(v, dtype=np.float64)) for k, v in mats.items()},
            u,
            theta,
            layers,
            shared_sigma,
            damping,
            hebbian_orientation,
            kernel,
            comm,
        )

    @classmethod
    def from_blocks(
        cls,
        n,
        blocks,
        u=None,
        theta=None,
        layers=1,
        *,
        shared_sigma=False,
        damping="eq6",
        hebbian_orientation="eq6",
        kernel="1b",
        comm=None,
    ):
        """As `from_dense`, but each rank builds only the block it owns: `blocks(group, rows, cols)` returns the
        (rows, cols) block (global slices; dense or scipy) of group `group` in GROUPS. No process holds the
        whole n x n graph."""
        return cls._paper(n, None, u, theta, layers, shared_sigma, damping, hebbian_orientation, kernel, comm, blocks)

    @classmethod
    def from_scipy(cls, Gx_e, Gx_i=None, Gy_e=None, Gy_i=None, Gs=None, u=None, theta=None, layers=1, **kw):
        """As `from_dense`, from scipy sparse matrices (stored entries are the edges, zeros included)."""
        if not sp.issparse(Gx_e):
            raise GraphError(f"Gx_e: expected a scipy sparse matrix, got {type(Gx_e).__name__}")
        n = Gx_e.shape[0]
        empty = sp.csc_matrix((n, n))
        mats = dict(
            Gx_e=Gx_e,
            Gx_i=Gx_i if Gx_i is not None else empty,
            Gy_e=Gy_e if Gy_e is not None else empty,
            Gy_i=Gy_i if Gy_i is not None else empty,
            Gs=Gs if Gs is not None else sp.csc_matrix(np.ones((n, n))),
        )
        return cls._paper(
            n,
            mats,
            u,
            theta,
            layers,
            kw.pop("shared_sigma", False),
            kw.pop("damping", "eq6"),
            kw.pop("hebbian_orientation", "eq6"),
            kw.pop("kernel", "1b"),
            kw.pop("comm", None),
        )

    @classmethod
    def from_edges(cls, n, edges, u=None, theta=None, layers=1, **kw):
        """From edge lists in the paper's edge naming: `edges[group] = (i, j, w)`, an edge from i to j.

        Groups not given are empty, except `Gs`, which is all ones when missing.
        """
        mats = {}
        for name in GROUPS:
            if name not in edges:
                mats[name] = sp.csc_matrix(np.ones((n, n))) if name == "Gs" else sp.csc_matrix((n, n))
                continue
            i, j, w = (np.asarray(a) for a in edges[name])
            if not (i.shape == j.shape == w.shape and i.ndim == 1):
                raise GraphError(
                    f"{name}: expected three equal-length 1-D arrays (i, j, w), got shapes "
                    f"{i.shape}, {j.shape}, {w.shape}"
                )
            for arr, lab in ((i, "i"), (j, "j")):
                if arr.size and (arr.min() < 0 or arr.max() >= n):
                    raise GraphError(
                        f"{name}: node index {lab} must lie in [0, {n - 1}], got range [{arr.min()}, {arr.max()}]"
                    )
            mats[name] = sp.csc_matrix((w.astype(np.float64), (j, i)), shape=(n, n))
        unknown = set(edges) - set(GROUPS)
        if unknown:
            raise GraphError(f"edges: unknown group(s) {sorted(unknown)}; expected names from {GROUPS}")
        return cls.from_scipy(
            mats["Gx_e"], mats["Gx_i"], mats["Gy_e"], mats["Gy_i"], mats["Gs"], u=u, theta=theta, layers=layers, **kw
        )

    def with_weight_dtype(self, dtype) -> Network:
        """This network with every group's weights stored in `dtype` (np.float32: the float32 graph's weights,
        bdh_graph.backends): a shallow copy sharing populations, edge variables, kernel and communicator; the
        network itself when its weights are already of that dtype."""
        dtype = np.dtype(dtype)
        if all(g.weight.dtype == dtype for g in self.groups.values()):
            return self
        net = copy.copy(self)
        net.groups = {k: dataclasses.replace(g, weight=g.weight.astype(dtype)) for k, g in self.groups.items()}
        return net

    # -- running and exporting (thin: bdh_graph.simulator and bdh_graph.export do the work) --
    def simulator(self, backend="numba", **kw):
        """A token-by-token Simulator on this network (options: bdh_graph.simulator.Simulator; `dtype`:
        "float64", the default, or "float32", bdh_graph.backends)."""
        from .simulator import Simulator

        return Simulator(self, backend=backend, **kw)

    def run(self, x0, y0, backend="numba", sigma0=None, **kw):
        """Run the kernel on boundary inputs x0, y0 of shape (T, n); returns a RunResult (Eq. 6 by default)."""
        return self.simulator(backend=backend, sigma0=sigma0, **kw).run(x0, y0)

    def to_networkx(self, sigma=None):
        """A networkx MultiDiGraph: one edge per synapse, key = group, `weight` and the sigma values
        (bdh_graph.export)."""
        from .export import to_networkx

        return to_networkx(self, sigma)

    def to_pyg(self, sigma=None):
        """A PyG HeteroData: edge type (pre, group, post), `edge_index`, `edge_weight`, sigma (bdh_graph.export)."""
        from .export import to_pyg

        return to_pyg(self, sigma)

    @classmethod
    def from_pyg(cls, data, layers=None, **kw):
        """The paper's network from a HeteroData with edge types ('neurons', G, 'neurons') for G in GROUPS."""
        from .export import network_from_pyg

        return network_from_pyg(cls, data, layers=layers, **kw)

    def __repr__(self):
        pops = ", ".join(f"{p.name}:{p.size}" for p in self.populations.values())
        grps = ", ".join(f"{g.name}:{g.nnz}" for g in self.groups.values())
        layers = self.layers if self.kernel else 0
        return f"Network(populations=[{pops}], groups=[{grps}], edge_vars={list(self.edge_vars)}, layers={layers})"
