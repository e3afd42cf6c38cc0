"""The event-driven CPU backend: numba kernels over source-major CSR arrays (indptr, indices, weight).

Work per communication rule is proportional to (active sources) x (fan-out): only sources with a non-zero
value are visited, silent neurons cost nothing. Damping by a diagonal or per-synapse U is lazy: a damp
sub-round only advances a clock; the synapses of a key neuron b catch up (`sigma *= u[b] ** (clock - last[b])`,
one power per key; per synapse for a per-synapse u) the next time a
read or a write touches it, so it too costs nothing for silent neurons. A rotation is applied eagerly to all
synapses (O(|Gs|) per layer and token).
A fixed group's send (weights only, no state) runs parallel over blocks of targets (`_scatter_blocks`): each
thread visits the active sources in order but only their edges into its own targets, so the work stays
(active sources) x (fan-out) and every target sums its sources in the serial scatter's order (the same bits).
A complete group (every source to every target in order: Gs in the Obs. 4 shape) has two fast paths with the
same bits: the read runs parallel over blocks of targets with the per-key catch-up fused into its one pass,
and the Hebbian write visits only (active pre) x (active post) synapses.

Kernels are private and see plain arrays; the Python class validates nothing (the Simulator and Network
do). No allocation inside prange; fastmath off (bdh_graph.config); the Hebbian write is owner-computes: each
thread owns the synapses of its source (key) neurons, so there are no races.
"""

import numba
import numpy as np
from numba import njit, prange

from .. import config
from ..ops import numpy_ops
from ..state import NetworkState
from .base import Backend

_jit = dict(fastmath=config.FASTMATH, cache=config.CACHE, nogil=True)
_NO_CLOCK = -1


@njit(**_jit)
def _scatter(indptr, indices, w, src, active, out, u_edge, last, clock):
    """out[indices[e]] += w[e] * src[b] over the out-edges e of each active source b (serial scatter).
    clock >= 0: w is a lazily damped edge state, brought up to date before use."""
    for k in range(active.shape[0]):
        b = active[k]
        sb = src[b]
        for e in range(indptr[b], indptr[b + 1]):
            if clock >= 0 and last[e] != clock:
                k = clock - last[e]
                w[e] *= u_edge[e] if k == 1 else u_edge[e] ** k
                last[e] = clock
            out[indices[e]] += w[e] * sb


def _scatter_blocks_py(indices, w, src, active, out, split):
    """`_scatter` of a fixed group, parallel over target blocks: thread blk visits, for each active source b in
    order, its out-edges split[b, blk]:split[b, blk + 1] (the targets of block blk; rows sorted by target, see
    `target_blocks`). Each thread owns its targets, and each out[j] adds the same products in the same order as
    the serial scatter (the same bits); the work is still (active sources) x (fan-out)."""
    for blk in prange(split.shape[1] - 1):
        for k in range(active.shape[0]):
            b = active[k]
            sb = src[b]
            for e in range(split[b, blk], split[b, blk + 1]):
                out[indices[e]] += w[e] * sb


def target_blocks(g, nblk):
    """(indices, weight, split) of a fixed group for `_scatter_blocks`: each row's edges sorted by target (a
    stable sort, so one source's parallel edges keep their order; no copy when already sorted) and split[b, k]
    the first edge of row b whose target is in block k or later; nblk blocks of targets with about equal
    in-edges."""
    key = np.repeat(np.arange(g.n_pre, dtype=np.int64) * g.n_post, np.diff(g.indptr)) + g.indices  # no cached copy
    if np.any(np.diff(key) < 0):
        order = np.argsort(key, kind="stable")
        key, indices, weight = key[order], g.indices[order], g.weight[order]
    else:
        indices, weight = g.indices, g.weight
    cum = np.concatenate(([0], np.cumsum(np.bincount(g.indices, minlength=g.n_post))))
    bounds = np.searchsorted(cum, np.linspace(0, g.nnz, nblk + 1)).astype(np.int64)
    bounds[0], bounds[-1] = 0, g.n_post
    rows = np.arange(g.n_pre, dtype=np.int64)[:, None] * g.n_post
    split = np.searchsorted(key, rows + bounds[None, :]).astype(np.int64)
    return indices, weight, np.ascontiguousarray(split)


def _hebbian_py(indptr, indices, gs, sigma, pre, post, active_pre, u_edge, last, clock):
    """sigma(i,j) += Gs(i,j) pre(i) post(j) on edges with both ends active; a thread owns source i's synapses."""
    for k in prange(active_pre.shape[0]):
        b = active_pre[k]
        pb = pre[b]
        for e in range(indptr[b], indptr[b + 1]):
            qa = post[indices[e]]
            if qa != 0.0:
                if clock >= 0 and last[e] != clock:
                    k = clock - last[e]
                    sigma[e] *= u_edge[e] if k == 1 else u_edge[e] ** k
                    last[e] = clock
                sigma[e] += gs[e] * pb * qa


@njit(**_jit)
def _scatter_columns(indptr, indices, w, src, active, out, u_pre, last_col, clock):
    """`_scatter` over a per-key lazily damped state, the catch-up fused into the same pass: for each active key
    b, sigma[:, b] *= u[b] ** (clock - last[b]) and out += sigma[:, b] * src[b] while the synapse is in cache
    (the same multiplications as `_catch_up_columns` then `_scatter`, so the same bits, one pass over sigma)."""
    for k in range(active.shape[0]):
        b = active[k]
        sb = src[b]
        steps = clock - last_col[b]
        if steps > 0:
            f = u_pre[b] if steps == 1 else u_pre[b] ** steps
            for e in range(indptr[b], indptr[b + 1]):
                w[e] *= f
                out[indices[e]] += w[e] * sb
            last_col[b] = clock
        else:
            for e in range(indptr[b], indptr[b + 1]):
                out[indices[e]] += w[e] * sb


def _read_complete_py(indptr, w, src, active, out, n_post, u_pre, last_col, clock, nblk):
    """`_scatter_columns` on a complete group (edge of (b, j) = indptr[b] + j), parallel over nblk blocks of
    targets: each thread owns out[j0:j1] and those synapses of every active key, so there are no races, and
    each out[j] sums the keys in the same order as the serial scatter (the same bits). clock < 0: no damping."""
    for blk in prange(nblk):
        j0 = blk * n_post // nblk
        j1 = (blk + 1) * n_post // nblk
        for k in range(active.shape[0]):
            b = active[k]
            sb = src[b]
            base = indptr[b]
            steps = clock - last_col[b] if clock >= 0 else 0
            if steps > 0:
                f = u_pre[b] if steps == 1 else u_pre[b] ** steps
                for j in range(j0, j1):
                    w[base + j] *= f
                    out[j] += w[base + j] * sb
            else:
                for j in range(j0, j1):
                    out[j] += w[base + j] * sb
    if clock >= 0:
        for k in range(active.shape[0]):
            last_col[active[k]] = clock


def _hebbian_complete_py(indptr, gs, sigma, pre, post, active_pre, active_post, u_edge, last, clock):
    """`_hebbian` on a complete group whose out-edges of every source run over targets 0..n_post-1 in order
    (edge of (i, j) = indptr[i] + j): visits only the synapses with both ends active, f_pre f_post |Gs| instead
    of f_pre |Gs| (the same updates, so the same bits)."""
    for k in prange(active_pre.shape[0]):
        b = active_pre[k]
        pb = pre[b]
        base = indptr[b]
        for m in range(active_post.shape[0]):
            j = active_post[m]
            e = base + j
            if clock >= 0 and last[e] != clock:
                s = clock - last[e]
                sigma[e] *= u_edge[e] if s == 1 else u_edge[e] ** s
                last[e] = clock
            sigma[e] += gs[e] * pb * post[j]


@njit(**_jit)
def _catch_up_columns(indptr, sigma, u_pre, last_col, clock, active):
    """Per-key damping (sigma[:, b] *= u[b] per step), lazily: bring the synapses of each active key b up to
    date with one power per key, then one multiply per synapse."""
    for k in range(active.shape[0]):
        b = active[k]
        steps = clock - last_col[b]
        if steps > 0:
            f = u_pre[b] if steps == 1 else u_pre[b] ** steps
            for e in range(indptr[b], indptr[b + 1]):
                sigma[e] *= f
            last_col[b] = clock


@njit(parallel=True, **_jit)
def _flush(sigma, u_edge, last, clock):
    for e in prange(sigma.shape[0]):
        if last[e] != clock:
            sigma[e] *= u_edge[e] ** (clock - last[e])
            last[e] = clock


def _rotate_py(sigma, pair_first, mate, coef_self, coef_mate):
    """new[e] = coef_self[e] sigma[e] + coef_mate[e] sigma[mate[e]], pair by pair (each pair owned by one thread)."""
    for k in prange(pair_first.shape[0]):
        e = pair_first[k]
        m = mate[e]
        s0 = sigma[e]
        s1 = sigma[m]
        sigma[e] = coef_self[e] * s0 + coef_mate[e] * s1
        sigma[m] = coef_self[m] * s1 + coef_mate[m] * s0


# Each prange kernel in two builds: parallel launches cost ~1 ms, so small calls run the serial build
# (prange is range there). The switch is config.PARALLEL_MIN_EDGES synapses touched; both give identical bits.
_hebbian = (njit(**_jit)(_hebbian_py), njit(parallel=True, **_jit)(_hebbian_py))
_rotate = (njit(**_jit)(_rotate_py), njit(parallel=True, **_jit)(_rotate_py))
_hebbian_complete = (njit(**_jit)(_hebbian_complete_py), njit(parallel=True, **_jit)(_hebbian_complete_py))
_read_complete = (njit(**_jit)(_read_complete_py), njit(parallel=True, **_jit)(_read_complete_py))
_scatter_blocks = (njit(**_jit)(_scatter_blocks_py), njit(parallel=True, **_jit)(_scatter_blocks_py))


def is_complete(g) -> bool:
    """Every source's out-edges are exactly the targets 0..n_post-1 in order (a complete, sorted group)."""
    if g.nnz != g.n_pre * g.n_post or g.nnz == 0:
        return False
    return bool(
        np.array_equal(np.diff(g.indptr), np.full(g.n_pre, g.n_post))
        and np.array_equal(
            g.indices.reshape(g.n_pre, g.n_post), np.broadcast_to(np.arange(g.n_post), (g.n_pre, g.n_post))
        )
    )


class NumbaBackend(Backend):
    name = "numba"

    def __init__(self, net, dtype="float64"):
        """dtype (bdh_graph.backends.DTYPES): of sigma and of the weights the kernels read (float32: a float32 copy
        of every group's weights); node variables and the sums into them stay float64."""
        self.dtype = np.dtype(dtype)
        self.net = net.with_weight_dtype(self.dtype)
        self.ops = numpy_ops(None)
        # "column": u per key neuron, one clock per key; "edge": u per synapse, one clock per synapse
        self.lazy = {
            k: (None if ev.kind != "diagonal" else "column" if np.ndim(ev.u) == 1 else "edge")
            for k, ev in net.edge_vars.items()
        }
        self._dummy_f = np.zeros(1)
        self._dummy_i = np.zeros(1, dtype=np.int64)
        self._no_lazy = (self._dummy_f, self._dummy_i, _NO_CLOCK)
        self.complete = {k: is_complete(net.groups[ev.group]) for k, ev in net.edge_vars.items()}
        self.parallel_sends = True  # False: the serial `_scatter`, the reference `_scatter_blocks` is tested against
        self._blocks = {}  # group name -> (group, its `target_blocks` arrays), built on the group's first send
        self._rules = {"send": self._send, "read": self._read, "hebbian": self._hebbian, "damp": self._damp}

    def initial_state(self, sigma0):
        nodes = {v: np.zeros(self.net.size_of(v)) for v in self.net.node_variables}
        edges = {k: np.array(sigma0[k], dtype=self.dtype) for k in self.net.edge_vars}
        self.last = {
            k: np.zeros(
                len(edges[k]) if self.lazy[k] == "edge" else self.net.groups[self.net.edge_vars[k].group].n_pre,
                dtype=np.int64,
            )
            for k in edges
        }
        self.clock = dict.fromkeys(edges, 0)
        return NetworkState(nodes, edges)

    def _lazy_args(self, s, sigma, active):
        """Catch up per-key damping now; for per-synapse damping return what the kernel needs to catch up."""
        if self.lazy[s] == "column":
            ev = self.net.edge_vars[s]
            g = self.net.groups[ev.group]
            _catch_up_columns(g.indptr, sigma, ev.u, self.last[s], self.clock[s], active)
        elif self.lazy[s] == "edge":
            return self.net.edge_vars[s].u_edge, self.last[s], self.clock[s]
        return self._dummy_f, self._dummy_i, _NO_CLOCK

    def flush(self, state):
        for s, mode in self.lazy.items():
            if mode == "column":
                n_pre = self.net.groups[self.net.edge_vars[s].group].n_pre
                self._lazy_args(s, state.edges[s], np.arange(n_pre, dtype=np.int64))
            elif mode == "edge":
                _flush(state.edges[s], self.net.edge_vars[s].u_edge, self.last[s], self.clock[s])
        return state

    def to_numpy_state(self, state):
        self.flush(state)
        return state._replace(
            nodes={k: v.copy() for k, v in state.nodes.items()},
            edges={k: v.astype(np.float64) for k, v in state.edges.items()},  # a float64 copy, whatever the dtype
        )

    def set_node(self, state, var, values):
        return state.replace(nodes={**state.nodes, var: np.array(values, dtype=np.float64)})

    def node(self, state, var):
        return state.nodes[var]

    # -- the rules on edges, one method per kind (self._rules); sigma is updated in place, node arrays copied --
    def _send(self, r, state, remote, nodes, edges):
        g = self.net.group_of(r)
        src = g.read_source(r.src[0], state.nodes, remote)
        out = nodes[r.dst] = nodes[r.dst].copy()
        active = np.flatnonzero(src)
        if not self.parallel_sends or g.nnz * len(active) // max(1, g.n_pre) < config.PARALLEL_MIN_EDGES:
            _scatter(g.indptr, g.indices, g.weight, src, active, out, *self._no_lazy)
            return
        tb = self._blocks.get(r.group)
        if tb is None or tb[0] is not g:
            tb = self._blocks[r.group] = (g, *target_blocks(g, numba.get_num_threads()))
        _scatter_blocks[True](tb[1], tb[2], src, active, out, tb[3])

    def _read(self, r, state, remote, nodes, edges):
        q, s = r.src
        g = self.net.group_of(r)
        src = g.read_source(q, state.nodes, remote)
        out = nodes[r.dst] = nodes[r.dst].copy()
        active = np.flatnonzero(src)
        sigma = state.edges[s]
        if self.complete[s] and self.lazy[s] != "edge":  # complete Gs: parallel over targets
            par = len(active) * g.n_post >= config.PARALLEL_MIN_EDGES
            u_pre, last, clock = (
                (self.net.edge_vars[s].u, self.last[s], self.clock[s])
                if self.lazy[s] == "column"
                else (self._dummy_f, self._dummy_i, _NO_CLOCK)
            )
            nblk = numba.get_num_threads() if par else 1
            _read_complete[par](g.indptr, sigma, src, active, out, g.n_post, u_pre, last, clock, nblk)
        elif self.lazy[s] == "column":  # catch-up fused into the read
            u_pre = self.net.edge_vars[s].u
            _scatter_columns(g.indptr, g.indices, sigma, src, active, out, u_pre, self.last[s], self.clock[s])
        else:
            _scatter(g.indptr, g.indices, sigma, src, active, out, *self._lazy_args(s, sigma, active))

    def _hebbian(self, r, state, remote, nodes, edges):
        p, q = r.src
        g = self.net.group_of(r)
        pre, post, sigma = g.read_source(p, state.nodes, remote), state.nodes[q], state.edges[r.dst]
        active = np.flatnonzero(pre)
        if self.complete[r.dst]:  # visit only (active pre) x (active post)
            active_post = np.flatnonzero(post)
            par = len(active) * len(active_post) >= config.PARALLEL_MIN_EDGES
            lazy = self._lazy_args(r.dst, sigma, active)
            _hebbian_complete[par](g.indptr, g.weight, sigma, pre, post, active, active_post, *lazy)
            return
        par = g.nnz * len(active) // max(1, g.n_pre) >= config.PARALLEL_MIN_EDGES
        _hebbian[par](g.indptr, g.indices, g.weight, sigma, pre, post, active, *self._lazy_args(r.dst, sigma, active))

    def _damp(self, r, state, remote, nodes, edges):
        ev = self.net.edge_vars[r.dst]
        if ev.kind == "diagonal":  # lazy: advance the clock, synapses catch up when next touched
            self.clock[r.dst] += 1
        elif ev.kind == "rotation":
            par = len(ev.mate) >= config.PARALLEL_MIN_EDGES
            _rotate[par](edges[r.dst], ev.pair_first, ev.mate, ev.coef_self, ev.coef_mate)
