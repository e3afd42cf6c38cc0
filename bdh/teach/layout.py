"""Where the viewer draws each node: positions computed once from the model's own wiring, so they mean something
and stay put from step to step.

    pos = positions(net, shown)     # {population: [[x, y], ...]} in the drawing's units (WIDTH x HEIGHT)

Neurons: the neuron-to-neuron graph G_x (the dense compile's Gx_e - Gx_i; otherwise D_x E through the hubs, the
paper's G_x = D_x E, Sec. 5), restricted to the shown neurons, split into communities (networkx's Louvain, seed 0)
laid out side by side, each by a spring layout of its own wiring; so the paper's modules sit together. The other
populations get their own bands: hubs (res, att, hub) above, the output nodes (one per byte) below.
"""

from __future__ import annotations

import numpy as np

WIDTH, HEIGHT = 1000.0, 640.0
TOP = (20.0, 130.0)  # the hubs' band (y range)
MIDDLE = (175.0, 535.0)  # the neurons' band
BOTTOM = (570.0, 625.0)  # the output nodes' band
K_NEAREST = 6  # edges per neuron kept for the layout (the strongest |G_x|)


def _csr(g):
    from scipy.sparse import csr_matrix

    return csr_matrix((np.asarray(g.weight, float), g.indices, g.indptr), shape=(g.n_pre, g.n_post))


def _signed(groups):
    """The signed sum (excitatory minus inhibitory) of a list of groups' weight matrices, or None."""
    out = None
    for g in groups:
        m = _csr(g) * (-1.0 if g.name.endswith("_i") or g.name == "Di" else 1.0)
        out = m if out is None else out + m
    return out


def neuron_wiring(net, shown) -> np.ndarray:
    """|G_x| among the shown neurons (K x K, dense): Gx_e - Gx_i if the network has them, else (E)(D_x) through
    the hub population (E: neurons -> hubs, D_x: hubs -> neurons; signed, excitatory minus inhibitory)."""
    shown = np.asarray(shown)
    gs = net.groups
    direct = [g for g in gs.values() if g.name in ("Gx_e", "Gx_i")]
    if direct:
        G = _signed(direct)
        return np.abs(G[shown][:, shown].toarray())
    E = _signed([g for g in gs.values() if g.pre == "neurons" and g.post not in ("neurons", "out") and g.name != "Gs"])
    D = _signed(
        [
            g
            for g in gs.values()
            if g.post == "neurons" and g.pre != "neurons" and g.name in ("Dx_e", "Dx_i", "De", "Di")
        ]
    )
    if E is None or D is None or E.shape[1] != D.shape[0]:
        return np.zeros((len(shown), len(shown)))
    return np.abs((E[shown] @ D[:, shown]).toarray())


def _communities(W) -> list:
    """Louvain communities of the symmetric weight matrix W (networkx, seed 0), largest first; [all] if none."""
    import networkx as nx

    K = len(W)
    S = W + W.T
    np.fill_diagonal(S, 0)
    g = nx.Graph()
    g.add_nodes_from(range(K))
    for i in range(K):
        for j in np.argsort(-S[i])[:K_NEAREST]:
            if S[i, j] > 0:
                g.add_edge(i, int(j), weight=float(S[i, j]))
    if g.number_of_edges() == 0:
        return [list(range(K))], g
    comms = nx.community.louvain_communities(g, weight="weight", seed=0)
    return sorted((sorted(c) for c in comms), key=lambda c: (-len(c), c[0])), g


def _neurons(W) -> tuple:
    """Positions of the shown neurons in the middle band, and the community of each."""
    import networkx as nx

    K = len(W)
    comms, g = _communities(W)
    xy = np.zeros((K, 2))
    which = np.zeros(K, int)
    x0 = 10.0
    for c, members in enumerate(comms):
        w = (WIDTH - 20) * len(members) / K  # each community a column as wide as its share of the neurons
        sub = g.subgraph(members)
        p = nx.spring_layout(sub, seed=0, weight="weight") if len(members) > 1 else {members[0]: np.zeros(2)}
        arr = np.array([p[m] for m in members])
        lo, hi = arr.min(0), arr.max(0)
        span = np.where(hi - lo > 0, hi - lo, 1.0)
        unit = (arr - lo) / span if len(members) > 1 else np.full_like(arr, 0.5)
        xy[members, 0] = x0 + 4 + unit[:, 0] * max(w - 8, 0)
        xy[members, 1] = MIDDLE[0] + unit[:, 1] * (MIDDLE[1] - MIDDLE[0])
        which[members] = c
        x0 += w
    return xy, which


def _band(n, y0, y1, x0=10.0, x1=WIDTH - 10.0, per_row=128) -> np.ndarray:
    """n nodes in rows of at most per_row across [x0, x1] x [y0, y1]."""
    rows = max(1, -(-n // per_row))
    cols = -(-n // rows)
    k = np.arange(n)
    x = x0 + (k % cols + 0.5) * (x1 - x0) / cols
    y = y0 + (k // cols + 0.5) * (y1 - y0) / rows
    return np.stack([x, y], 1)


def positions(net, shown: dict) -> dict:
    """{population: [[x, y]] of its shown nodes (rounded to 0.1)}, plus "communities": [community of each shown
    neuron]. Hub populations share the top band (one sub-band each), "out" the bottom band."""
    W = neuron_wiring(net, shown["neurons"])
    xy, comm = _neurons(W)
    out = {"neurons": xy}
    hubs = [p for p in shown if p not in ("neurons", "out")]
    for k, p in enumerate(hubs):
        h = (TOP[1] - TOP[0]) / max(1, len(hubs))
        out[p] = _band(len(shown[p]), TOP[0] + k * h, TOP[0] + (k + 1) * h)
    if "out" in shown:
        out["out"] = _band(len(shown["out"]), *BOTTOM)
    res = {p: np.round(v, 1).tolist() for p, v in out.items()}
    res["communities"] = comm.tolist()
    return res
