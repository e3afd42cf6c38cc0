"""The event-driven CPU backend: numba kernels (backends/numba_kernels.py) over layouts chosen once per group.

Work per communication rule is proportional to (active sources) x (fan-out): only sources with a non-zero value
are visited, silent neurons cost nothing.

What is decided once, when a sub-round's rules first run (its *plan*, cached for the run):
- the layout of each group (backends/layout.py): a group whose sources' targets form runs (the blocks of a dense
  matrix that every compile builds) is walked run by run with contiguous loads, its weights padded with zeros
  where a run has gaps; an E/I pair sent from the same variable in the same sub-round over one signed matrix
  (D_x^+ and D_x^-) is read once for both targets; any other group keeps the index kernels;
- the kernel of each rule, bound to its arrays: a sub-round is then one Python call per rule (one per E/I pair),
  with the active sources of each variable found once per sub-round.

Damping is lazy wherever that is exact: a damp sub-round only advances a clock, and a synapse catches up the next
time a read or a write touches it: per key (`sigma[:, b] *= u[b] ** steps`, one power per key), per synapse (u per
synapse), or per key pair for a rotation (the 2x2 step applied `steps` times in registers: the eager rotation's
bits, one load and one store of each synapse). Silent neurons' synapses cost nothing until they fire again.

dtype "float32" (opt-in) stores weights and sigma in float32; node variables and every sum into them stay float64.
`fast_paths = False` (module default `FAST`) keeps only the index kernels and the eager rotation: the reference the
run kernels are tested against (tests/test_graph_equivalence.py).
"""

from __future__ import annotations

import numba
import numpy as np

from .. import config
from ..ops import numpy_ops
from ..state import NetworkState
from . import layout
from . import numba_kernels as nk
from .base import Backend

FAST = True  # the run layouts, E/I pairs and the lazy rotation; False: index kernels and eager rotation only


class _Sources:
    """The values of each source variable as a sub-round reads them, and their active (non-zero) entries, each
    found once per sub-round: key = (variable, gathered)."""

    __slots__ = ("nodes", "remote", "memo")

    def __init__(self, nodes, remote):
        self.nodes, self.remote, self.memo = nodes, remote, {}

    def get(self, key):
        hit = self.memo.get(key)
        if hit is None:
            v = self.remote[key[0]] if key[1] else self.nodes[key[0]]
            hit = self.memo[key] = (v, np.flatnonzero(v))
        return hit


class NumbaBackend(Backend):
    name = "numba"

    def __init__(self, net, dtype="float64"):
        """dtype (bdh_graph.backends.DTYPES): of sigma and of the weights the kernels read (float32: a float32 copy
        of every group's weights, `Network.with_weight_dtype`); node variables and the sums into them stay float64."""
        self.dtype = np.dtype(dtype)
        self.net = net = net.with_weight_dtype(self.dtype)
        self.ops = numpy_ops(None)
        self.fast_paths = FAST
        self.parallel_sends = True  # False: a fixed group's index send stays the serial `scatter`
        self._dummy_f = np.zeros(1)
        self._dummy_i = np.zeros(1, dtype=np.int64)
        self._layouts, self._arrays, self._plans, self._bounds = {}, {}, {}, {}
        self.lazy = {k: self._lazy_kind(ev) for k, ev in net.edge_vars.items()}
        self._rules = {"damp": self._damp_op}
        self.traffic = 0  # bytes of synapse arrays (weights, indices, sigma) the kernels read + wrote (a model)
        self._isz = self.dtype.itemsize

    # -- layouts and lazy kinds, decided once --
    def _rows(self, g, exact_only=False):
        """layout.rows_of(g), cached per group (None without fast paths)."""
        key = (g.name, exact_only)
        hit = self._layouts.get(key)
        if hit is None or hit[0] is not g:
            hit = self._layouts[key] = (g, layout.rows_of(g, exact_only) if self.fast_paths else None)
        return hit[1]

    def _lazy_kind(self, ev):
        """ "column": u per key, one clock per key; "edge": u per synapse, one clock per synapse; "pair": a rotation
        whose 2x2 steps are the same along each key's run (u per key), one clock per key pair; None: eager."""
        if ev.kind == "diagonal":
            return "column" if np.ndim(ev.u) == 1 else "edge"
        if ev.kind == "rotation" and self._pair_coef(ev) is not None:
            return "pair"
        return None

    def _pair_coef(self, ev):
        """(n_pre // 2, 4) float64: the rotation's 2x2 step per key pair (c00, c01, c10, c11), when the group's runs
        are exact and pair-aligned and the per-edge coefficients are constant along each run; else None."""
        g = self.net.groups[ev.group]
        rows = self._rows(g, exact_only=True)
        if rows is None or not rows.pairs_aligned():
            return None
        key = ("coef", id(ev.coef_self))
        hit = self._arrays.get(key)
        if hit is not None and hit[0] is ev.coef_self:
            return hit[1]
        first = np.where(rows.ln > 0, rows.off, 0)
        src = g.source
        cs, cm = ev.coef_self[first], ev.coef_mate[first]
        if g.nnz and not (np.array_equal(ev.coef_self, cs[src]) and np.array_equal(ev.coef_mate, cm[src])):
            return None  # u per synapse: the step differs along a run
        coef = np.ascontiguousarray(np.stack([cs[0::2], cm[0::2], cm[1::2], cs[1::2]], axis=1), dtype=self.dtype)
        self._arrays[key] = (ev.coef_self, coef)
        return coef

    def _gs(self, g):
        """(unit, weights) of the Hebbian write's Gs: unit when every weight is 1 (Obs. 4's Gs), which the kernels
        then do not read (1 * pre is pre: the same bits)."""
        unit = bool(g.nnz) and bool(np.all(g.weight == 1.0))
        return unit, (self._dummy_f if unit else g.weight)

    def _own(self, values):
        """Node values in sigma's dtype, for the synapse arithmetic (float32: a float32 copy; float64: as they are)."""
        return values if values.dtype == self.dtype else values.astype(self.dtype)

    def _blocks(self, work, n_post):
        """(parallel, bounds): one block of targets per thread when the call touches enough synapses."""
        nblk = numba.get_num_threads() if work >= config.PARALLEL_MIN_EDGES else 1
        b = self._bounds.get((n_post, nblk))
        if b is None:
            b = self._bounds[(n_post, nblk)] = layout.bounds(n_post, nblk)
        return nblk > 1, b

    # -- state --
    def initial_state(self, sigma0):
        nodes = {v: np.zeros(self.net.size_of(v)) for v in self.net.node_variables}
        edges = {k: np.array(sigma0[k], dtype=self.dtype) for k in self.net.edge_vars}
        self.last = {k: np.zeros(self._clocks(k), dtype=np.int64) for k in edges}
        self.clock = dict.fromkeys(edges, 0)
        return NetworkState(nodes, edges)

    def _clocks(self, s):
        g = self.net.groups[self.net.edge_vars[s].group]
        return {"edge": g.nnz, "column": g.n_pre, "pair": g.n_pre // 2}.get(self.lazy[s], 0)

    def flush(self, state):
        """Bring every lazily damped synapse up to date."""
        for s, mode in self.lazy.items():
            ev, sigma = self.net.edge_vars[s], state.edges[s]
            g = self.net.groups[ev.group]
            if mode == "column":
                nk.catch_up_columns(g.indptr, sigma, ev.u, self.last[s], self.clock[s], np.arange(g.n_pre))
            elif mode == "edge":
                nk.flush_edges(sigma, ev.u_edge, self.last[s], self.clock[s])
            elif mode == "pair":
                rows = self._rows(g, exact_only=True)
                pairs = np.arange(g.n_pre // 2, dtype=np.int64)
                nk.catch_up_pairs[True](
                    rows.off, rows.lo, rows.ln, sigma, pairs, self._pair_coef(ev), self.last[s], self.clock[s]
                )
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

    # -- a sub-round: its plan, built once --
    def communicate(self, rules, state, remote=None):
        ops = self._plan(rules)
        nodes = dict(state.nodes)
        srcs = _Sources(state.nodes, remote or {})
        for op in ops:
            op(nodes, state.edges, srcs)
        return state.replace(nodes=nodes)

    def _plan(self, rules):
        hit = self._plans.get(id(rules))
        if hit is not None and hit[0] is rules:
            return hit[1]
        ops, done = [], set()
        for k, r in enumerate(rules):
            if k in done:
                continue
            mate = self._pair_of(rules, k, done) if r.kind == "send" and self.fast_paths else None
            fused = k + 1 < len(rules) and self._fusable(r, rules[k + 1])
            if mate is not None:
                done.add(mate)
                op = self._op_pair(r, rules[mate])
                op.rules = (r, rules[mate])
            elif fused:
                done.add(k + 1)
                op = self._op_read_write(r, rules[k + 1])
                op.rules = (r, rules[k + 1])
            else:
                op = {"send": self._op_send, "read": self._op_read, "hebbian": self._op_hebbian}[r.kind](r)
                op.rules = (r,)
            ops.append(op)
        self._plans[id(rules)] = (rules, ops)
        return ops

    def _pair_of(self, rules, k, done):
        """The index of a send in `rules` that forms an E/I pair (layout.signed_pair) with rules[k], or None."""
        r = rules[k]
        for m in range(k + 1, len(rules)):
            o = rules[m]
            same = m not in done and o.kind == "send" and o.src == r.src and o.dst != r.dst
            if same and self._signed(self.net.groups[r.group], self.net.groups[o.group]) is not None:
                return m
        return None

    def _padded(self, g, rows):
        """The weights of group g in its run layout (layout.padded), one copy per group whatever the layers."""
        hit = self._arrays.get(("padded", g.name))
        if hit is None or hit[0] is not g:
            hit = self._arrays[("padded", g.name)] = (g, layout.padded(rows, g, dtype=self.dtype))
        return hit[1]

    def _fusable(self, r, h):
        """A read of sigma followed by its Hebbian write from the same key variable (the lookahead of
        Simulator.feed runs them back to back), on exact runs damped per key pair, per key or not at all, the
        write not reading what the read writes: one pass over the synapses (numba_kernels._read_write_*)."""
        if not (self.fast_paths and r.kind == "read" and h.kind == "hebbian" and h.dst == r.src[1]):
            return False
        if h.src[0] != r.src[0] or h.src[1] == r.dst or self.lazy[h.dst] == "edge":
            return False
        ev = self.net.edge_vars[h.dst]
        if ev.kind == "rotation" and self.lazy[h.dst] != "pair":
            return False
        return self._rows(self.net.group_of(r), exact_only=True) is not None

    def _signed(self, ge, gi):
        key = ("pair", ge.name, gi.name)
        hit = self._arrays.get(key)
        if hit is None or hit[0] is not ge or hit[1] is not gi:
            hit = self._arrays[key] = (ge, gi, layout.signed_pair(ge, gi, self.dtype))
        return hit[2]

    # -- the rules on edges: each builder returns op(nodes, edges, srcs); node arrays are replaced, sigma in place --
    def _op_pair(self, re, ri):
        g = self.net.groups[re.group]
        rows, S = self._signed(g, self.net.groups[ri.group])
        key, de, di = (re.src[0], g.gathered), re.dst, ri.dst

        def send_pair(nodes, edges, srcs):
            src, act = srcs.get(key)
            oe = nodes[de] = nodes[de].copy()
            oi = nodes[di] = nodes[di].copy()
            work = len(act) * rows.mean_len
            par, b = self._blocks(work, rows.n_post)
            nk.send_rows_pair[par](rows.off, rows.lo, rows.ln, S, src, act, oe, oi, b)
            self.traffic += int(work) * self._isz

        return send_pair

    def _op_send(self, r):
        g = self.net.group_of(r)
        key, dst, rows = (r.src[0], g.gathered), r.dst, self._rows(g)
        if rows is not None:
            W = self._padded(g, rows)

            def send_rows(nodes, edges, srcs):
                src, act = srcs.get(key)
                out = nodes[dst] = nodes[dst].copy()
                work = len(act) * rows.mean_len
                par, b = self._blocks(work, rows.n_post)
                nk.send_rows[par](rows.off, rows.lo, rows.ln, W, src, act, out, b)
                self.traffic += int(work) * self._isz

            return send_rows
        w = np.ascontiguousarray(g.weight, dtype=self.dtype)
        blocks = []

        def send_index(nodes, edges, srcs):
            src, act = srcs.get(key)
            out = nodes[dst] = nodes[dst].copy()
            edges_touched = g.nnz * len(act) // max(1, g.n_pre)
            self.traffic += edges_touched * (g.indices.itemsize + self._isz)
            if not self.parallel_sends or edges_touched < config.PARALLEL_MIN_EDGES:
                nk.scatter(g.indptr, g.indices, w, src, act, out, self._dummy_f, self._dummy_i, nk.NO_CLOCK)
                return
            if not blocks:
                blocks.extend(nk.target_blocks(g, numba.get_num_threads(), w))
            nk.scatter_blocks[True](blocks[0], blocks[1], src, act, out, blocks[2])

        return send_index

    def _op_read(self, r):
        (q, s), g = r.src, self.net.group_of(r)
        key, dst, mode = (q, g.gathered), r.dst, self.lazy[s]
        rows = self._rows(g, exact_only=True)
        ev = self.net.edge_vars[s]
        if rows is not None and mode in (None, "column") and ev.kind != "rotation":
            u = ev.u if mode == "column" else self._dummy_f

            def read_rows(nodes, edges, srcs):
                src, act = srcs.get(key)
                out = nodes[dst] = nodes[dst].copy()
                clock = self.clock[s] if mode == "column" else nk.NO_CLOCK
                last = self.last[s] if mode == "column" else self._dummy_i
                work = len(act) * rows.mean_len
                par, b = self._blocks(work, rows.n_post)
                nk.read_rows_column[par](rows.off, rows.lo, rows.ln, edges[s], src, act, out, b, u, last, clock)
                self.traffic += int(work) * self._isz * (2 if mode == "column" else 1)
                if mode == "column":
                    last[act] = clock

            return read_rows
        if mode == "pair":
            coef = self._pair_coef(ev)

            def read_pairs(nodes, edges, srcs):
                src, act = srcs.get(key)
                out = nodes[dst] = nodes[dst].copy()
                pairs = nk.active_pairs(act)
                work = 2 * len(pairs) * rows.mean_len
                par, b = self._blocks(work, rows.n_post)
                last, clock = self.last[s], self.clock[s]
                self.traffic += int(work) * self._isz * 2  # read, caught up and stored
                nk.read_rows_pair[par](rows.off, rows.lo, rows.ln, edges[s], src, pairs, out, b, coef, last, clock)
                last[pairs] = clock

            return read_pairs
        return self._op_read_index(r, g, key, s)

    def _op_read_write(self, r, h):
        """The read r and the Hebbian write h of one sigma in one pass (`_fusable`)."""
        (q, s), g = r.src, self.net.group_of(r)
        key, post_key, dst, mode = (q, g.gathered), (h.src[1], False), r.dst, self.lazy[s]
        rows, ev = self._rows(g, exact_only=True), self.net.edge_vars[s]
        unit, gs = self._gs(g)
        coef = self._pair_coef(ev) if mode == "pair" else None
        u = np.asarray(ev.u, dtype=self.dtype) if mode == "column" else self._dummy_f

        def read_write(nodes, edges, srcs):
            x, act = srcs.get(key)
            post = self._own(srcs.get(post_key)[0])
            xs, out = self._own(x), nodes[dst].copy()
            nodes[dst] = out
            last, clock = (self.last[s], self.clock[s]) if mode else (self._dummy_i, nk.NO_CLOCK)
            if mode == "pair":
                pairs = nk.active_pairs(act)
                work = 2 * len(pairs) * rows.mean_len
                par, b = self._blocks(work, rows.n_post)
                args = (rows.off, rows.lo, rows.ln, edges[s], x, xs, pairs, out, b, coef, last, clock, gs, unit, post)
                nk.read_write_rows_pair[par](*args)
                last[pairs] = clock
            else:
                work = len(act) * rows.mean_len
                par, b = self._blocks(work, rows.n_post)
                args = (rows.off, rows.lo, rows.ln, edges[s], x, xs, act, out, b, u, last, clock, gs, unit, post)
                nk.read_write_rows_column[par](*args)
                if mode == "column":
                    last[act] = clock
            self.traffic += int(work) * self._isz * (2 if unit else 3)

        return read_write

    def _op_read_index(self, r, g, key, s):
        dst, mode, ev = r.dst, self.lazy[s], self.net.edge_vars[s]

        def read_index(nodes, edges, srcs):
            src, act = srcs.get(key)
            out = nodes[dst] = nodes[dst].copy()
            sigma = edges[s]
            self.traffic += g.nnz * len(act) // max(1, g.n_pre) * (g.indices.itemsize + self._isz)
            if mode == "column":  # catch-up fused into the read
                nk.scatter_columns(g.indptr, g.indices, sigma, src, act, out, ev.u, self.last[s], self.clock[s])
            else:
                nk.scatter(g.indptr, g.indices, sigma, src, act, out, *self._edge_lazy(s))

        return read_index

    def _edge_lazy(self, s):
        """The per-synapse catch-up arguments of the index kernels (no catch-up unless u is per synapse)."""
        if self.lazy[s] == "edge":
            return self.net.edge_vars[s].u_edge, self.last[s], self.clock[s]
        return self._dummy_f, self._dummy_i, nk.NO_CLOCK

    def _op_hebbian(self, r):
        (p, q), s, g = r.src, r.dst, self.net.group_of(r)
        pre_key, post_key, mode = (p, g.gathered), (q, False), self.lazy[s]
        ev = self.net.edge_vars[s]
        rows = self._rows(g, exact_only=True)
        if rows is None or mode == "edge" or (ev.kind == "rotation" and mode != "pair"):
            return self._op_hebbian_index(g, pre_key, post_key, s)
        unit, gs = self._gs(g)
        coef = self._pair_coef(ev) if mode == "pair" else None

        def hebbian_rows(nodes, edges, srcs):
            (pre, act), (post, act_post) = srcs.get(pre_key), srcs.get(post_key)
            sigma = edges[s]
            if mode == "column":
                nk.catch_up_columns(g.indptr, sigma, ev.u, self.last[s], self.clock[s], act)
            elif mode == "pair":
                pairs = nk.active_pairs(act)
                par = 2 * len(pairs) * rows.mean_len >= config.PARALLEL_MIN_EDGES
                nk.catch_up_pairs[par](rows.off, rows.lo, rows.ln, sigma, pairs, coef, self.last[s], self.clock[s])
            touched = len(act) * min(len(act_post), rows.mean_len)
            par = touched >= config.PARALLEL_MIN_EDGES
            pre, post = self._own(pre), self._own(post)  # the synapse arithmetic in sigma's dtype
            nk.hebbian_rows[par](rows.off, rows.lo, rows.ln, gs, unit, sigma, pre, post, act, act_post)
            self.traffic += int(touched) * self._isz * (2 if unit else 3)

        return hebbian_rows

    def _op_hebbian_index(self, g, pre_key, post_key, s):
        ev, mode = self.net.edge_vars[s], self.lazy[s]

        def hebbian_index(nodes, edges, srcs):
            pre, act = srcs.get(pre_key)
            post = srcs.get(post_key)[0]
            sigma = edges[s]
            if mode == "column":
                nk.catch_up_columns(g.indptr, sigma, ev.u, self.last[s], self.clock[s], act)
            edges_touched = g.nnz * len(act) // max(1, g.n_pre)
            self.traffic += edges_touched * (g.indices.itemsize + 3 * self._isz)
            par = edges_touched >= config.PARALLEL_MIN_EDGES
            nk.hebbian[par](g.indptr, g.indices, g.weight, sigma, pre, post, act, *self._edge_lazy(s))

        return hebbian_index

    def _damp_op(self, r, state, remote, nodes, edges):
        ev = self.net.edge_vars[r.dst]
        if self.lazy[r.dst] is not None:  # lazy: advance the clock, synapses catch up when next touched
            self.clock[r.dst] += 1
        elif ev.kind == "rotation":
            par = len(ev.mate) >= config.PARALLEL_MIN_EDGES
            nk.rotate[par](edges[r.dst], ev.pair_first, ev.mate, ev.coef_self, ev.coef_mate)
