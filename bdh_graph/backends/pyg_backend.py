"""The torch / torch_geometric backend: PyG's message -> aggregate -> update, and edge_update for Hebbian writes.

`edge_index[0]` is the source i, `edge_index[1]` the target j (flow "source_to_target"); PyG's `_j` suffix
lifts a node array to the source of each edge and `_i` to the target. Runs on CUDA when available (or on the
`device` given), in float64. Imported only when backend="pyg" is asked for.
"""
import numpy as np
import torch
from torch_geometric.nn import MessagePassing

from .. import kernels as K
from ..state import NetworkState
from . import Ops


class Synapses(MessagePassing):
    """`out[j] = sum_i w(i,j) q[i]` (message `w * q_j`, aggregate "sum"); `edge_update`: `w(i,j) p[i] q[j]`."""

    def __init__(self):
        super().__init__(aggr="sum", flow="source_to_target", node_dim=0)

    def forward(self, edge_index, q, w, size):
        return self.propagate(edge_index, q=q, w=w, size=size)

    def message(self, q_j, w):
        return w * q_j

    def hebbian(self, edge_index, p, q, w, size):
        return self.edge_updater(edge_index, p=p, q=q, w=w, size=size)

    def edge_update(self, p_j, q_i, w):
        return w * p_j * q_i


class PygBackend:
    name = "pyg"

    def __init__(self, net, device=None):
        self.net = net
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        t = lambda a, dt=torch.float64: torch.as_tensor(np.asarray(a), dtype=dt, device=self.device)
        self.edge_index = {k: torch.stack([t(g.source, torch.long), t(g.indices, torch.long)])
                           for k, g in net.groups.items()}
        self.weight = {k: t(g.weight) for k, g in net.groups.items()}
        self.size = {k: (g.n_pre, g.n_post) for k, g in net.groups.items()}
        self.U = {k: (t(ev.coef_self), t(ev.coef_mate), t(ev.mate, torch.long)) for k, ev in net.edge_vars.items()}
        self.conv = Synapses()
        self.ops = Ops(torch, lambda v: torch.clamp(v, min=0.0), torch.zeros_like, lambda q: q)
        self._t = t

    def initial_state(self, sigma0):
        nodes = {v: torch.zeros(self.net.size_of(v), dtype=torch.float64, device=self.device)
                 for v in self.net.node_variables}
        edges = {k: self._t(sigma0[k]).clone() for k in self.net.edge_vars}
        return NetworkState(nodes, edges)

    def to_numpy_state(self, state):
        return state._replace(nodes={k: v.detach().cpu().numpy().copy() for k, v in state.nodes.items()},
                              edges={k: v.detach().cpu().numpy().copy() for k, v in state.edges.items()})

    def set_node(self, state, var, values):
        return state.replace(nodes={**state.nodes, var: self._t(values).clone()})

    def node(self, state, var):
        return state.nodes[var].detach().cpu().numpy()

    def communicate(self, rules, state, remote=None):
        """remote: {variable: full vector} exchanged for the gathered groups (bdh_graph.simulator)."""
        nodes, edges = dict(state.nodes), dict(state.edges)
        get = lambda g, v: self._t(remote[v]) if self.net.groups[g].gathered else state.nodes[v]
        for r in rules:
            if r.kind == "send":
                g = r.group
                nodes[r.dst] = nodes[r.dst] + self.conv(self.edge_index[g], get(g, r.src[0]), self.weight[g],
                                                        self.size[g])
            elif r.kind == "read":
                q, s = r.src
                g = self.net.edge_vars[s].group
                nodes[r.dst] = nodes[r.dst] + self.conv(self.edge_index[g], get(g, q), state.edges[s],
                                                        self.size[g])
            else:
                p, q = r.src
                g = self.net.edge_vars[r.dst].group
                edges[r.dst].add_(self.conv.hebbian(self.edge_index[g], get(g, p), state.nodes[q],
                                                    self.weight[g], self.size[g]))
        return state.replace(nodes=nodes, edges=edges)

    def compute(self, rules, state):
        nodes, edges = dict(state.nodes), dict(state.edges)
        for r in rules:
            if r.kind == "damp":
                ev = self.net.edge_vars[r.dst]
                cs, cm, mate = self.U[r.dst]
                if ev.kind == "diagonal":
                    edges[r.dst].mul_(cs)
                elif ev.kind == "rotation":
                    s = edges[r.dst]
                    s.copy_(cs * s + cm * s[mate])
            else:
                names = r.src + ((r.dst,) if r.dst else ())
                nodes.update(K.COMPUTATION_RULES[r.kind](r, {v: nodes[v] for v in names}, self.ops))
        return state.replace(nodes=nodes, edges=edges)
