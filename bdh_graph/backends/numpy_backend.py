"""The dense, literal backend: each group is an (n_post, n_pre) matrix, each sigma an (n_post, n_pre) matrix.

Slow and obviously right; it runs the kernel rule by rule, `dst += G @ src` for `send`, and is the only
backend with the spiking mode (reference 2d: every product of rates becomes an AND of independent spikes).
"""

import numpy as np

from ..ops import numpy_ops
from ..reference import apply_U
from ..state import NetworkState
from .base import Backend


class NumpyBackend(Backend):
    name = "numpy"

    def __init__(self, net, spiking=False, seed=None):
        self.net = net
        self.rng = np.random.default_rng(seed) if spiking else None
        self.ops = numpy_ops(self.rng)
        self.W = {k: g.dense() for k, g in net.groups.items()}
        self.mask = {k: g.dense(np.ones(g.nnz)) for k, g in net.groups.items()}
        self._rules = {"send": self._send, "read": self._read, "hebbian": self._hebbian, "damp": self._damp}

    def initial_state(self, sigma0):
        nodes = {v: np.zeros(self.net.size_of(v)) for v in self.net.node_variables}
        edges = {k: self.net.groups[ev.group].dense(sigma0[k]) for k, ev in self.net.edge_vars.items()}
        return NetworkState(nodes, edges)

    def to_numpy_state(self, state):
        edges = {}
        for k, ev in self.net.edge_vars.items():
            g = self.net.groups[ev.group]
            edges[k] = state.edges[k][g.indices, g.source].copy()
        return state._replace(nodes={k: v.copy() for k, v in state.nodes.items()}, edges=edges)

    def set_node(self, state, var, values):
        return state.replace(nodes={**state.nodes, var: np.array(values, dtype=np.float64)})

    def node(self, state, var):
        return state.nodes[var]

    # -- the rules on edges, one method per kind (self._rules); each updates the working dicts nodes, edges --
    def _send(self, r, state, remote, nodes, edges):
        g = self.net.group_of(r)
        nodes[r.dst] = nodes[r.dst] + self.W[g.name] @ self.ops.spike(g.read_source(r.src[0], state.nodes, remote))

    def _read(self, r, state, remote, nodes, edges):
        q, s = r.src
        src = self.net.group_of(r).read_source(q, state.nodes, remote)
        nodes[r.dst] = nodes[r.dst] + self.ops.spike(state.edges[s]) @ self.ops.spike(src)

    def _hebbian(self, r, state, remote, nodes, edges):
        """s(i,j) += Gs(i,j) p(i) q(j), i.e. S[j, i] += W[j, i] q[j] p[i]."""
        p, q = r.src
        g, spike = self.net.group_of(r), self.ops.spike
        edges[r.dst] = edges[r.dst] + self.W[g.name] * np.outer(
            spike(state.nodes[q]), spike(g.read_source(p, state.nodes, remote))
        )

    def _damp(self, r, state, remote, nodes, edges):
        ev = self.net.edge_vars[r.dst]
        if ev.kind != "identity":
            edges[r.dst] = apply_U(edges[r.dst], ev.u, ev.theta) * self.mask[ev.group]
