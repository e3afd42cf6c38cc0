"""Export a network (and its sigma state) to networkx and to PyG; read it back from PyG. Also a plain matrix to
networkx (`matrix_to_networkx`, for the graph statistics of bdh_graph.stats).

networkx: a MultiDiGraph, nodes = neuron indices (other populations: (population, index)), one edge per
synapse with key = group name, `weight`, and on the edges of an edge variable's group its values
(`sigma_0`, ...). PyG: a HeteroData, node type per population, edge type (pre, group, post) with
`edge_index` (row 0 = source i, row 1 = target j), `edge_weight`, and one attribute per edge variable.
"""

import numpy as np
import scipy.sparse as sp

from .errors import GraphError
from .kernels import GROUPS


def _one_process(net, what):
    if net.comm.size > 1:
        raise GraphError(
            f"{what}: exports the whole network from one process; this one is sharded over "
            f"{net.comm.size} ranks (build it with comm=SelfComm() to export)"
        )


def _edge_values(net, sigma):
    """sigma: None, a RunResult, a NetworkState or {edge variable: (nnz,)} -> that dict (or {})."""
    if sigma is None:
        return {}
    for attr in ("sigma_edges", "edges"):
        if hasattr(sigma, attr) and isinstance(getattr(sigma, attr), dict):
            sigma = getattr(sigma, attr)
            break
    if not isinstance(sigma, dict):
        raise GraphError(
            f"sigma: expected a RunResult, NetworkState or dict of edge arrays, got {type(sigma).__name__}"
        )
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


def matrix_to_networkx(A, directed: bool = True):
    """A networkx (Di)Graph of a matrix A (edge i -> j for A[j, i] != 0), all n nodes kept, no attributes: the
    thresholded neuron graphs of bdh_graph.stats. For a Network with its groups and sigma, `to_networkx`."""
    import networkx as nx

    A = sp.coo_matrix(A)
    g = nx.DiGraph() if directed else nx.Graph()
    g.add_nodes_from(range(A.shape[0]))
    g.add_edges_from(zip(A.col.tolist(), A.row.tolist()))
    return g


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


def graphml_graph(net, sigma=None):
    """to_networkx with GraphML-friendly names: nodes 'neurons:17', 'res:3' (attribute population, index), one
    edge per synapse with its group, weight and edge-variable values."""
    import networkx as nx

    vals = _edge_values(net, sigma)
    G = nx.MultiDiGraph()
    for p in net.populations.values():
        G.add_nodes_from((f"{p.name}:{i}", {"population": p.name, "index": i}) for i in range(p.size))
    for g in net.groups.values():
        on = {k: np.asarray(v) for k, v in vals.items() if net.edge_vars[k].group == g.name}
        for e, (i, j, w) in enumerate(zip(g.source, g.indices, g.weight)):
            attrs = {"group": g.name, "weight": float(w), **{k: float(v[e]) for k, v in on.items()}}
            G.add_edge(f"{g.pre}:{int(i)}", f"{g.post}:{int(j)}", key=g.name, **attrs)
    return G


def save_pyg(net, path, sigma=None, metadata=None):
    """The network as a PyG HeteroData written without pickle: a safetensors file with, per edge type
    (pre, group, post), `pre|group|post/edge_index` (2, nnz) int64, `/edge_weight` and one tensor per edge variable,
    and the node counts in the metadata. Read it back with `load_pyg`."""
    import json

    import torch
    from safetensors.torch import save_file

    vals = _edge_values(net, sigma)
    tensors = {}
    for g in net.groups.values():
        key = f"{g.pre}|{g.name}|{g.post}"
        tensors[f"{key}/edge_index"] = torch.as_tensor(np.stack([g.source, g.indices]), dtype=torch.long).contiguous()
        tensors[f"{key}/edge_weight"] = torch.as_tensor(g.weight, dtype=torch.float64).contiguous()
        for k, v in vals.items():
            if net.edge_vars[k].group == g.name:
                tensors[f"{key}/{k}"] = torch.as_tensor(np.asarray(v), dtype=torch.float64).contiguous()
    meta = {"format": "bdh-pyg-1", "num_nodes": json.dumps({p.name: p.size for p in net.populations.values()})}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    save_file(tensors, path, metadata=meta)
    return path


def load_pyg(path):
    """The HeteroData of a file written by `save_pyg` (safetensors: no code runs while loading)."""
    import json

    from safetensors import safe_open
    from torch_geometric.data import HeteroData

    data = HeteroData()
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != "bdh-pyg-1":
            raise GraphError(f"{path}: not a graph written by save_pyg (metadata format {meta.get('format')!r})")
        for name, size in json.loads(meta["num_nodes"]).items():
            data[name].num_nodes = int(size)
        for k in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
            et, attr = k.split("/", 1)
            data[tuple(et.split("|"))][attr] = f.get_tensor(k)
    return data
