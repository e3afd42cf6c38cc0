"""The dense, literal backend: each group is an (n_post, n_pre) matrix, each sigma an (n_post, n_pre) matrix.

Slow and obviously right; it runs the kernel rule by rule, `dst += G @ src` for `send`, and is the only
backend with the spiking mode (reference 2d: every product of rates becomes an AND of independent spikes).
"""

import numpy as np

from .. import kernels as K
from ..ops import numpy_ops
from ..reference import apply_U
from ..state import NetworkState


class NumpyBackend:
    name = "numpy"

    def __init__(self, net, spiking=False, seed=None):
        self.net = net
        self.rng = np.random.default_rng(seed) if spiking else None
        self.ops = numpy_ops(self.rng)
        self.W = {k: g.dense() for k, g in net.groups.items()}
        self.mask = {k: g.dense(np.ones(g.nnz)) for k, g in net.groups.items()}

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

    def communicate(self, rules, state, remote=None):
        """remote: {variable: full vector} exchanged for the gathered groups (bdh_graph.simulator)."""
        spike = self.ops.spike
        nodes, edges = dict(state.nodes), dict(state.edges)
        get = lambda g, v: remote[v] if self.net.groups[g].gathered else state.nodes[v]
        for r in rules:  # validated: no rule of this sub-round reads what another writes
            if r.kind == "send":
                nodes[r.dst] = nodes[r.dst] + self.W[r.group] @ spike(get(r.group, r.src[0]))
            elif r.kind == "read":
                q, s = r.src
                nodes[r.dst] = nodes[r.dst] + spike(state.edges[s]) @ spike(get(self.net.edge_vars[s].group, q))
            else:  # hebbian: s(i,j) += Gs(i,j) p(i) q(j), i.e. S[j, i] += W[j, i] q[j] p[i]
                p, q = r.src
                g = self.net.edge_vars[r.dst].group
                edges[r.dst] = edges[r.dst] + self.W[g] * np.outer(spike(state.nodes[q]), spike(get(g, p)))
        return state.replace(nodes=nodes, edges=edges)

    def compute(self, rules, state):
        nodes, edges = dict(state.nodes), dict(state.edges)
        for r in rules:
            if r.kind == "damp":
                ev = self.net.edge_vars[r.dst]
                if ev.kind != "identity":
                    u = ev.u if ev.u is not None else None
                    edges[r.dst] = apply_U(edges[r.dst], u, ev.theta) * self.mask[ev.group]
            else:
                names = r.src + ((r.dst,) if r.dst else ())
                nodes.update(K.COMPUTATION_RULES[r.kind](r, {v: nodes[v] for v in names}, self.ops))
        return state.replace(nodes=nodes, edges=edges)
