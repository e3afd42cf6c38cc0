"""Export a network (and its sigma state) to networkx and to PyG; read it back from PyG.

networkx: a MultiDiGraph, nodes = neuron indices (other populations: (population, index)), one edge per
synapse with key = group name, `weight`, and on the edges of an edge variable's group its values
(`sigma_0`, ...). PyG: a HeteroData, node type per population, edge type (pre, group, post) with
`edge_index` (row 0 = source i, row 1 = target j), `edge_weight`, and one attribute per edge variable.
"""
import numpy as np

from .errors import GraphError
from .network import GROUPS


def _one_process(net, what):
    if net.comm.size > 1:
        raise GraphError(f"{what}: exports the whole network from one process; this one is sharded over "
                         f"{net.comm.size} ranks (build it with comm=SelfComm() to export)")


def _edge_values(net, sigma):
    """sigma: None, a RunResult, a NetworkState or {edge variable: (nnz,)} -> that dict (or {})."""
    if sigma is None:
        return {}
    for attr in ("sigma_edges", "edges"):
        if hasattr(sigma, attr) and isinstance(getattr(sigma, attr), dict):
            sigma = getattr(sigma, attr)
            break
    if not isinstance(sigma, dict):
        raise GraphError(f"sigma: expected a RunResult, NetworkState or dict of edge arrays, got {type(sigma).__name__}")
    for k, v in sigma.items():
        if k not in net.edge_vars:
            raise GraphError(f"sigma: unknown edge variable {k!r}; known: {net.sigma_names}")
        nnz = net.groups[net.edge_vars[k].group].nnz
        if np.shape(v) != (nnz,):
            raise GraphError(f"sigma[{k}]: expected ({nnz},) values in edge order, got {np.shape(v)}")
    return sigma


def _node_id(pop, i):
    return int(i) if pop == "neurons" else (pop, int(i))


def to_networkx(net, sigma=None):
    import networkx as nx
    _one_process(net, "to_networkx")
    vals = _edge_values(net, sigma)
    G = nx.MultiDiGraph()
    for p in net.populations.values():
        G.add_nodes_from((_node_id(p.name, i), {"population": p.name}) for i in range(p.size))
    for g in net.groups.values():
        on = {k: np.asarray(v) for k, v in vals.items() if net.edge_vars[k].group == g.name}
        for e, (i, j, w) in enumerate(zip(g.source, g.indices, g.weight)):
            attrs = {"weight": float(w), **{k: float(v[e]) for k, v in on.items()}}
            G.add_edge(_node_id(g.pre, i), _node_id(g.post, j), key=g.name, **attrs)
    return G


def to_pyg(net, sigma=None):
    import torch
    from torch_geometric.data import HeteroData
    _one_process(net, "to_pyg")
    vals = _edge_values(net, sigma)
    data = HeteroData()
    for p in net.populations.values():
        data[p.name].num_nodes = p.size
    for g in net.groups.values():
        store = data[g.pre, g.name, g.post]
        store.edge_index = torch.as_tensor(np.stack([g.source, g.indices]), dtype=torch.long)
        store.edge_weight = torch.as_tensor(g.weight, dtype=torch.float64)
        for k, v in vals.items():
            if net.edge_vars[k].group == g.name:
                store[k] = torch.as_tensor(np.asarray(v), dtype=torch.float64)
    return data


def network_from_pyg(cls, data, layers=None, **kw):
    """The paper's network from a HeteroData with edge types ('neurons', G, 'neurons') for G in GROUPS."""
    if layers is None:
        raise GraphError("layers: expected an integer >= 1 (a PyG graph does not store the kernel), got None")
    try:
        n = int(data["neurons"].num_nodes)
    except (KeyError, TypeError, AttributeError):
        raise GraphError("data: expected a HeteroData with node type 'neurons' and its num_nodes") from None
    edges = {}
    for et in data.edge_types:
        pre, name, post = et
        if name not in GROUPS or (pre, post) != ("neurons", "neurons"):
            raise GraphError(f"data: unexpected edge type {et}; expected ('neurons', G, 'neurons') with G in {GROUPS}")
        ei = data[et].edge_index.detach().cpu().numpy()
        w = data[et].edge_weight.detach().cpu().numpy() if "edge_weight" in data[et] else np.ones(ei.shape[1])
        edges[name] = (ei[0], ei[1], w)
    if "Gs" not in edges:
        edges["Gs"] = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0))
    return cls.from_edges(n, edges, layers=layers, **kw)
