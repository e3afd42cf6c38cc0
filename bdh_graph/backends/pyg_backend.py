"""The torch / torch_geometric backend: PyG's message -> aggregate -> update, and edge_update for Hebbian writes.

Vectorised per rule: every communication rule is ONE sparse operation over its whole synapse group, so the
Python work per call is constant (it never grows with the number of edges):
- send / read (`out[j] += sum_i w(i,j) q[i]`): PyG's fused `message_and_aggregate` over a sparse adjacency
  `adj_t` (rows = targets j, columns = sources i; torch CSR), i.e. one sparse matrix-vector product whose
  values are the group's weights (send) or the edge state sigma (read);
- write (Hebbian, `sigma(i,j) += Gs(i,j) p[i] q[j]`): `edge_update` over all edges at once, one fused
  multiply-add with p lifted to the sources (`p_j`) and q to the targets (`q_i`);
- a complete group (every pair an edge, e.g. Gs in the Obs. 4 shape) is a dense (n_post, n_pre) matrix in
  this order, so its products are dense: `w @ q` and `w += Gs * outer(q, p)`;
- damp: one elementwise pass (diagonal U) or one gather + one fused multiply-add (rotation U).
To make the fused product a plain CSR product, this backend keeps every group's edges in TARGET-major order
(sorted by target, then source); `perm` maps that order to the network's source-major edge numbering, and
`initial_state` / `to_numpy_state` translate (nothing outside the backend sees the internal order).
Runs on CUDA when available (or on the `device` given), float64. Imported only when backend="pyg" is asked for.

dtype="float32" (opt-in; bdh_graph.backends): the weights and sigma are float32 tensors, node values stay float64.
torch multiplies a sparse or dense matrix only by a vector of its own dtype, so a send or read casts the source
vector to float32, forms the product in float32 (float32 sums, unlike numba's float64 accumulators) and adds it
to the float64 target; the Hebbian increment `Gs p q` and damping are computed in float64 and rounded once into
the float32 sigma (U's coefficients stay float64).
"""

import warnings

import numpy as np
import torch
from torch_geometric.nn import MessagePassing

from ..ops import Ops
from ..state import NetworkState
from .base import Backend

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


class Synapses(MessagePassing):
    """`out[j] = sum_i w(i,j) q[i]` (message `w * q_j`, aggregate "sum", fused into one sparse product over
    `adj_t`, whose values are w); `edge_update`: `Gs(i,j) p[i] q[j]` on the edges of the pattern."""

    def __init__(self):
        super().__init__(aggr="sum", flow="source_to_target", node_dim=0)

    def forward(self, adj_t, q):
        """The sum in adj_t's dtype (q cast to it: torch does not mix dtypes in a matrix product), returned in q's."""
        qw = q.to(adj_t.dtype)
        if adj_t.layout == torch.strided:  # a complete group: the fused step on a dense matrix
            return self.message_and_aggregate(adj_t, qw).to(q.dtype)
        return self.propagate(adj_t, q=qw).to(q.dtype)

    def message(self, q_j, w):  # the unfused form, kept for reference (edge lists)
        return w * q_j

    def message_and_aggregate(self, adj_t, q):
        if adj_t.layout == torch.strided:  # a complete group: a dense matrix
            return adj_t @ q
        return torch.sparse.mm(adj_t, q[:, None])[:, 0]

    def hebbian(self, sigma, edges, p, q, gs):
        """sigma += edge_update(...) in place: edges = (source index, target index) per edge, or None for a
        complete group (sigma and gs then (n_post, n_pre) views)."""
        if edges is None:
            return sigma.addcmul_(gs, torch.outer(q, p))
        return sigma.addcmul_(*self.edge_update(p[edges[0]], q[edges[1]], gs))

    def edge_update(self, p_j, q_i, gs):
        """The Hebbian increment of each edge (i -> j): Gs(i,j) p[i] q[j], as the two factors of one fused
        multiply-add (`sigma.addcmul_(Gs p_j, q_i)`)."""
        return gs * p_j, q_i


def target_major(g):
    """(perm, complete): the permutation from the group's source-major edge numbering to target-major order (by
    target, then source), and whether the group is complete (every pair an edge). A complete group whose sources
    list their targets in order (Gs in the Obs. 4 shape) needs no sort: perm is the transpose of the
    (n_pre, n_post) grid of edge numbers (a sort of |Gs| = n^2 edges would take minutes at n = 16384)."""
    complete = g.nnz == g.n_post * g.n_pre
    if complete and g.nnz and (g.indices.reshape(g.n_pre, g.n_post) == np.arange(g.n_post)).all():
        return np.arange(g.nnz, dtype=np.int64).reshape(g.n_pre, g.n_post).T.ravel(), True
    return np.lexsort((g.source, g.indices)), complete


class PygBackend(Backend):
    name = "pyg"

    def __init__(self, net, device=None, dtype="float64"):
        self.net = net
        self.dtype = getattr(torch, dtype)  # of the weights and sigma (module docstring); nodes are float64
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        t = lambda a, dt=torch.float64: torch.as_tensor(np.asarray(a), dtype=dt, device=self.device)  # noqa: E731
        self.perm, self.crow, self.col, self.row, self.weight, self.size, self.complete = ({} for _ in range(7))
        for k, g in net.groups.items():
            perm, complete = target_major(g)
            self.perm[k], self.size[k], self.complete[k] = perm, (g.n_post, g.n_pre), complete
            self.weight[k] = t(g.weight[perm], self.dtype)
            if complete:  # a dense (n_post, n_pre) view: no index arrays on the device
                continue
            crow = np.zeros(g.n_post + 1, dtype=np.int64)
            np.cumsum(np.bincount(g.indices, minlength=g.n_post), out=crow[1:])
            idx = torch.int32 if g.nnz < 2**31 - 1 else torch.long  # int32: the sparse kernels' native index
            self.crow[k], self.col[k] = t(crow, idx), t(g.source[perm], idx)
            self.row[k] = t(g.indices[perm], torch.long)
        self.U = {}
        for k, ev in net.edge_vars.items():
            perm = self.perm[ev.group]
            if ev.kind == "rotation":
                inv = np.empty_like(perm)
                inv[perm] = np.arange(len(perm))
                self.U[k] = (t(ev.coef_self[perm]), t(ev.coef_mate[perm]), t(inv[ev.mate[perm]], torch.long))
            else:
                self.U[k] = (t(ev.coef_self[perm]), None, None)
        self._static = {k: self.adj(k, self.weight[k]) for k in net.groups}
        self.conv = Synapses()
        self.ops = Ops(torch, lambda v: torch.clamp(v, min=0.0), torch.zeros_like, lambda q: q)
        self._t = t
        self._rules = {"send": self._send, "read": self._read, "hebbian": self._hebbian, "damp": self._damp}

    def adj(self, group, values):
        """The group as an (n_post, n_pre) matrix with the given per-edge values (target-major order): a sparse
        CSR, or a dense view for a complete group."""
        if self.complete[group]:
            return values.view(self.size[group])
        return torch.sparse_csr_tensor(
            self.crow[group], self.col[group], values, size=self.size[group], check_invariants=False
        )

    def initial_state(self, sigma0):
        nodes = {
            v: torch.zeros(self.net.size_of(v), dtype=torch.float64, device=self.device)
            for v in self.net.node_variables
        }
        edges = {  # indexing by perm makes a new array: the tensor owns its memory
            k: self._t(np.asarray(sigma0[k])[self.perm[ev.group]], self.dtype) for k, ev in self.net.edge_vars.items()
        }
        return NetworkState(nodes, edges)

    def to_numpy_state(self, state):
        edges = {}
        for k, ev in self.net.edge_vars.items():
            out = np.empty(len(self.perm[ev.group]))
            out[self.perm[ev.group]] = state.edges[k].detach().cpu().numpy()  # back to source-major numbering
            edges[k] = out
        return state._replace(nodes={k: v.detach().cpu().numpy().copy() for k, v in state.nodes.items()}, edges=edges)

    def set_node(self, state, var, values):
        values = self._t(values)  # a copy on a device; on the CPU it may share the caller's array
        return state.replace(nodes={**state.nodes, var: values.clone() if self.device.type == "cpu" else values})

    def node(self, state, var):
        return state.nodes[var].detach().cpu().numpy()

    def _remote(self, remote):
        return {v: self._t(a) for v, a in (remote or {}).items()}

    # -- the rules on edges, one method per kind (self._rules); each updates the working dicts nodes, edges --
    def _send(self, r, state, remote, nodes, edges):
        g = self.net.group_of(r)
        nodes[r.dst] = nodes[r.dst] + self.conv(self._static[g.name], g.read_source(r.src[0], state.nodes, remote))

    def _read(self, r, state, remote, nodes, edges):
        q, s = r.src
        g = self.net.group_of(r)
        src = g.read_source(q, state.nodes, remote)
        nodes[r.dst] = nodes[r.dst] + self.conv(self.adj(g.name, state.edges[s]), src)

    def _hebbian(self, r, state, remote, nodes, edges):
        p, q = r.src
        g = self.net.group_of(r)
        k, full = g.name, self.complete[g.name]
        self.conv.hebbian(
            edges[r.dst].view(self.size[k]) if full else edges[r.dst],
            None if full else (self.col[k], self.row[k]),
            g.read_source(p, state.nodes, remote),
            state.nodes[q],
            self.weight[k].view(self.size[k]) if full else self.weight[k],
        )

    def _damp(self, r, state, remote, nodes, edges):
        ev = self.net.edge_vars[r.dst]
        cs, cm, mate = self.U[r.dst]
        if ev.kind == "diagonal":
            edges[r.dst].mul_(cs)
        elif ev.kind == "rotation":
            s = edges[r.dst]
            edges[r.dst] = torch.addcmul(cs * s, cm, s[mate]).to(s.dtype)  # float64 U, sigma's dtype kept
