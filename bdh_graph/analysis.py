"""Graph analyses of the paper's Sec. 5 (reference section 6): thresholded neuron graphs, degrees, modularity.

numpy / scipy / networkx only (no torch): every function takes arrays. Edge convention as everywhere
(reference 1): for an n x n matrix G, the edge *from i to j* has weight G[j, i], so row j lists j's incoming edges.

    A = threshold_graph(G, beta)              # CSR (n, n) 0/1, A[j, i] = 1 iff G[j, i] >= beta (i != j)
    k_in, k_out = degrees(A)
    fit = tail_exponent(k_in)                 # discrete power-law MLE above k_min (Clauset et al. 2009)
    q, parts = louvain_modularity(A)          # best of 5 seeds
    rows = modularity_vs_beta(G, betas, baselines={"low-rank": G_random})
    top = mann_whitney_rank(concept, contrast)   # one-sided U per column, best first

Baselines (paper Sec. 5.5): `gnm_like(A)` (G(n, m) with the same edge count) and `random_low_rank(n, d, ...)`
(the product of random Gaussian D, E with the trained matrices' scales, thresholded at the same beta).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

LOUVAIN_SEEDS = 5  # the paper: best of 5 runs


def _as_square(G, what="G"):
    if sp.issparse(G):
        G = G.tocsr()
    else:
        G = np.asarray(G)
    if G.ndim != 2 or G.shape[0] != G.shape[1]:
        raise ValueError(f"{what}: expected a square (n, n) matrix, got shape {G.shape}")
    return G


def threshold_graph(G, beta: float, self_loops: bool = False) -> sp.csr_matrix:
    """Directed graph of the entries G[j, i] >= beta: CSR (n, n) of 0/1 with A[j, i] = 1 for the edge i -> j.

    Self-loops (the diagonal) are dropped unless `self_loops`. Only entries >= beta count, so negative entries
    (inhibition) never make edges for beta > 0: this is the positive part, thresholded (reference 6).
    """
    G = _as_square(G)
    if not math.isfinite(beta):
        raise ValueError(f"beta: expected a finite number, got {beta!r}")
    if sp.issparse(G):
        G = G.tocoo()
        keep = G.data >= beta
        r, c = G.row[keep], G.col[keep]
    else:
        r, c = np.nonzero(beta <= G)
    if not self_loops:
        off = r != c
        r, c = r[off], c[off]
    n = G.shape[0]
    return sp.csr_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))


def degrees(A) -> tuple[np.ndarray, np.ndarray]:
    """(in-degree, out-degree) of every node of A (A[j, i] != 0 is the edge i -> j)."""
    A = sp.csr_matrix(A) != 0
    return np.asarray(A.sum(1)).ravel().astype(np.int64), np.asarray(A.sum(0)).ravel().astype(np.int64)


@dataclass
class PowerLawFit:
    """P(k) ~ k^-alpha for k >= k_min: alpha (MLE), k_min, n_tail nodes in the tail, ks (KS distance)."""

    alpha: float
    k_min: int
    n_tail: int
    ks: float

    def to_dict(self):
        return dict(alpha=self.alpha, k_min=self.k_min, n_tail=self.n_tail, ks=self.ks)


def _alpha(k, k_min):
    """Discrete power-law MLE of the exponent for the tail k >= k_min: maximises
    -alpha sum ln k - m ln zeta(alpha, k_min) (Clauset, Shalizi, Newman 2009, Eq. 3.5; zeta is Hurwitz's)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import zeta

    s, m = float(np.sum(np.log(k))), len(k)
    nll = lambda a: a * s + m * math.log(zeta(a, k_min))
    return float(minimize_scalar(nll, bounds=(1.0 + 1e-6, 20.0), method="bounded", options={"xatol": 1e-6}).x)


def tail_exponent(deg, k_min: int | None = None, min_tail: int = 10) -> PowerLawFit | None:
    """Fit the tail exponent of a degree sample, P(K = k) ~ k^-alpha for k >= k_min (discrete MLE).

    k_min None: the value minimising the KS distance between the tail's empirical CCDF and the fitted law's,
    zeta(alpha, k) / zeta(alpha, k_min) (Clauset et al.), over the distinct degrees with at least `min_tail`
    nodes at or above. Returns None when fewer than `min_tail` positive degrees exist (nothing to fit)."""
    from scipy.special import zeta

    k = np.asarray(deg, dtype=np.float64)
    k = np.sort(k[k > 0])
    if len(k) < min_tail:
        return None
    cands = [int(k_min)] if k_min is not None else [int(v) for v in np.unique(k) if np.sum(k >= v) >= min_tail]
    best = None
    for km in cands:
        tail = k[k >= km]
        vals = np.unique(tail)
        if len(vals) < 2 and k_min is None:
            continue  # a single value says nothing about a tail
        a = _alpha(tail, km)
        emp = np.array([np.mean(tail >= v) for v in vals])
        fit = zeta(a, vals) / zeta(a, km)
        ks = float(np.max(np.abs(emp - fit)))
        if best is None or ks < best.ks:
            best = PowerLawFit(float(a), km, int(len(tail)), ks)
    return best


def to_networkx(A, directed: bool = True):
    """A networkx (Di)Graph of A (edge i -> j for A[j, i] != 0), all n nodes kept."""
    import networkx as nx

    A = sp.coo_matrix(A)
    g = nx.DiGraph() if directed else nx.Graph()
    g.add_nodes_from(range(A.shape[0]))
    g.add_edges_from(zip(A.col.tolist(), A.row.tolist()))
    return g


def louvain_modularity(A, seeds: int = LOUVAIN_SEEDS, directed: bool = True) -> tuple[float, list]:
    """Best Louvain modularity of A over `seeds` runs (seeds 0..seeds-1), and its communities.

    Directed modularity (Leicht-Newman) on the directed graph, as networkx computes it. A graph with no edge
    has modularity 0 by convention (networkx would divide by zero)."""
    import networkx as nx

    g = to_networkx(A, directed=directed)
    if g.number_of_edges() == 0:
        return 0.0, [set(g.nodes)]
    best_q, best = -math.inf, None
    for s in range(seeds):
        parts = nx.community.louvain_communities(g, seed=s)
        q = nx.community.modularity(g, parts)
        if q > best_q:
            best_q, best = q, parts
    return float(best_q), best


def gnm_like(A, seed: int = 0) -> sp.csr_matrix:
    """Baseline 1: a directed G(n, m) random graph with A's node and edge counts (no self-loops)."""
    n, m = A.shape[0], int((sp.csr_matrix(A) != 0).sum())
    rng = np.random.default_rng(seed)
    if m > n * (n - 1):
        raise ValueError(f"gnm_like: {m} edges do not fit a simple directed graph on {n} nodes")
    chosen = set()
    while len(chosen) < m:  # rejection sampling of distinct off-diagonal cells
        need = m - len(chosen)
        cells = rng.integers(0, n * n, size=2 * need + 16)
        for c in cells.tolist():
            if c // n != c % n:
                chosen.add(c)
                if len(chosen) == m:
                    break
    cells = np.fromiter(chosen, dtype=np.int64, count=m)
    return sp.csr_matrix((np.ones(m, dtype=np.int8), (cells // n, cells % n)), shape=(n, n))


def random_low_rank(
    n: int, d: int, std_D: float, std_E: float, seed: int = 0, mean_D: float = 0.0, mean_E: float = 0.0
) -> np.ndarray:
    """Baseline 2: D E for Gaussian D (n, d), E (d, n) with the given means and standard deviations (the trained
    matrices' own), the same shapes: a low-rank graph with no learned structure, to threshold at the same beta."""
    rng = np.random.default_rng(seed)
    D = rng.normal(mean_D, std_D, size=(n, d))
    E = rng.normal(mean_E, std_E, size=(d, n))
    return D @ E


def modularity_vs_beta(
    G,
    betas,
    baselines: dict | None = None,
    seeds: int = LOUVAIN_SEEDS,
    gnm: bool = True,
    max_edges: int | None = 2_000_000,
    same_edges: bool = True,
) -> list[dict]:
    """Louvain modularity (best of `seeds`) of G thresholded at each beta, beside the baselines.

    baselines: {name: matrix} thresholded at the same beta (e.g. {"low-rank": random_low_rank(...)});
    gnm: add G(n, m) with the same edge count as G's graph at that beta. Rows: dict(beta, edges, modularity,
    communities, and "<name>" / "<name>_edges" per baseline, "G(n,m)"; with same_edges also "<name> (same m)", the
    baseline's graph of its m largest off-diagonal entries, m = G's edge count). Graphs above max_edges are skipped
    (modularity None) to bound the time.
    """
    rows = []
    for beta in betas:
        A = threshold_graph(G, beta)
        m = int(A.nnz)
        row = dict(beta=float(beta), edges=m, modularity=None, communities=None)
        if 0 < m <= (max_edges or m):
            q, parts = louvain_modularity(A, seeds)
            row.update(modularity=q, communities=len(parts))
            if gnm:
                row["G(n,m)"] = louvain_modularity(gnm_like(A, seed=int(beta * 1000) % 2**31), seeds)[0]
        elif m == 0:
            row.update(modularity=0.0, communities=G.shape[0])
        for name, B in (baselines or {}).items():
            Ab = threshold_graph(B, beta)
            row[f"{name}_edges"] = int(Ab.nnz)
            row[name] = (
                louvain_modularity(Ab, seeds)[0]
                if 0 < Ab.nnz <= (max_edges or Ab.nnz)
                else (0.0 if Ab.nnz == 0 else None)
            )
            if same_edges and 0 < m <= (max_edges or m):  # the baseline thresholded to G's edge count
                row[f"{name} (same m)"] = louvain_modularity(top_edges(B, m), seeds)[0]
        rows.append(row)
    return rows


def top_edges(G, m: int) -> sp.csr_matrix:
    """The graph of the m largest off-diagonal entries of a dense G (A[j, i] = 1 for the edge i -> j)."""
    G = np.array(_as_square(G), dtype=np.float64)
    np.fill_diagonal(G, -np.inf)
    flat = np.argpartition(-G.ravel(), m - 1)[:m]
    n = G.shape[0]
    return sp.csr_matrix((np.ones(m, dtype=np.int8), (flat // n, flat % n)), shape=(n, n))


def planted_partition(sizes, p_in: float, p_out: float, seed: int = 0) -> sp.csr_matrix:
    """A directed graph with planted communities (stochastic block model), for tests and the tutorial."""
    rng = np.random.default_rng(seed)
    lab = np.repeat(np.arange(len(sizes)), sizes)
    n = len(lab)
    p = np.where(lab[:, None] == lab[None, :], p_in, p_out)
    M = (rng.random((n, n)) < p) & ~np.eye(n, dtype=bool)
    return sp.csr_matrix(M.astype(np.int8))


@dataclass
class SynapseRank:
    """One synapse (column index into the value matrix) with its one-sided Mann-Whitney U and p-value."""

    index: int
    U: float
    p: float
    n_concept: int
    n_contrast: int
    mean_concept: float
    mean_contrast: float

    def to_dict(self):
        return dict(
            index=self.index,
            U=self.U,
            p=self.p,
            U_max=self.n_concept * self.n_contrast,
            mean_concept=self.mean_concept,
            mean_contrast=self.mean_contrast,
        )


def mann_whitney_rank(concept, contrast, top: int = 10) -> list[SynapseRank]:
    """Rank the columns (synapses) of concept (m1, S) and contrast (m2, S) by a one-sided Mann-Whitney U test
    (alternative: concept values are larger), best first: the paper's monosemantic-synapse search (Sec. 6.3,
    U = 2368 of 2500 for 50 vs 50 sentences). Ties in U are broken by the smaller p, then the index."""
    from scipy.stats import mannwhitneyu

    a, b = np.asarray(concept, dtype=np.float64), np.asarray(contrast, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"mann_whitney_rank: expected concept (m1, S) and contrast (m2, S) with the same S, "
            f"got {a.shape} and {b.shape}"
        )
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"mann_whitney_rank: expected at least 2 samples per set, got {a.shape[0]} and {b.shape[0]}")
    res = mannwhitneyu(a, b, alternative="greater", axis=0)
    U, p = np.atleast_1d(res.statistic), np.atleast_1d(res.pvalue)
    order = np.lexsort((np.arange(len(U)), p, -U))[:top]
    return [
        SynapseRank(
            int(i), float(U[i]), float(p[i]), a.shape[0], b.shape[0], float(a[:, i].mean()), float(b[:, i].mean())
        )
        for i in order
    ]


# ---- figures (matplotlib, Agg) ---------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_degree_distribution(path, samples: dict, title="degree distribution"):
    """Log-log CCDF P(K >= k) of each degree sample in {label: degrees}; writes a PNG to `path`."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for label, deg in samples.items():
        k = np.sort(np.asarray(deg)[np.asarray(deg) > 0])
        if len(k) == 0:
            continue
        ccdf = 1.0 - np.arange(len(k)) / len(k)
        ax.loglog(k, ccdf, ".", ms=3, label=label)
    ax.set_xlabel("degree k"), ax.set_ylabel("P(K >= k)"), ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7), ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout(), fig.savefig(path, dpi=110), plt.close(fig)
    return path


def plot_modularity(path, rows: list, title="Louvain modularity vs beta", paper=None):
    """Modularity (and baselines) against beta from `modularity_vs_beta` rows; writes a PNG."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    betas = [r["beta"] for r in rows]
    keys = ["modularity"] + sorted(
        {
            k
            for r in rows
            for k in r
            if k not in ("beta", "edges", "modularity", "communities") and not k.endswith("_edges")
        }
    )
    for k in keys:
        ys = [r.get(k) for r in rows]
        ax.plot(
            betas,
            [np.nan if y is None else y for y in ys],
            "o-" if k == "modularity" else "s--",
            ms=3,
            label="model" if k == "modularity" else k,
        )
    ax.set_xlabel("threshold beta"), ax.set_ylabel("modularity (best of 5 Louvain)"), ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7), ax.grid(True, alpha=0.3)
    fig.tight_layout(), fig.savefig(path, dpi=110), plt.close(fig)
    return path


def _token_ticks(ax, labels, width_in):
    """Token labels on the x axis of an axes `width_in` inches wide, none overlapping: upright when they fit
    (a 7-point character is about 0.07 in), else turned 90 degrees and thinned to one per 0.14 in."""
    T = len(labels)
    longest = max((len(str(s)) for s in labels), default=1)
    upright = T * (0.07 * longest + 0.08) <= width_in
    step = 1 if upright else max(1, -(-T // max(1, int(width_in / 0.14))))
    ticks = list(range(0, T, step))
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(labels[t]) for t in ticks], fontsize=7, rotation=0 if upright else 90)


def plot_raster(path, active, labels=None, title="activity raster", ylabel="neuron", clabel="activity |value|"):
    """Raster of a (T, n) activity array (non-zero = active, colour = its size, with a colour bar);
    `labels` names the T columns (tokens)."""
    plt = _plt()
    act = np.asarray(active)
    T, n = act.shape
    width = min(12, 3 + 0.3 * T)
    fig, ax = plt.subplots(figsize=(width, 3.8))
    t, i = np.nonzero(act)
    sc = ax.scatter(t, i, s=6, c=np.abs(act[t, i]), cmap="viridis", marker="s")
    ax.set_xlim(-0.5, T - 0.5), ax.set_ylim(-0.5, n - 0.5)
    if labels is not None:
        _token_ticks(ax, labels, width - 1.5)
    fig.colorbar(sc, ax=ax, label=clabel, pad=0.01)
    ax.set_xlabel("token"), ax.set_ylabel(ylabel), ax.set_title(title, fontsize=10)
    fig.tight_layout(), fig.savefig(path, dpi=110), plt.close(fig)
    return path


def plot_series(path, series: dict, labels=None, title="", xlabel="token", ylabel="value"):
    """Line plot of {label: (T,) values}, the legend outside the axes (right); writes a PNG."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.4, 3.8))
    for k, v in series.items():
        ax.plot(np.arange(len(v)), v, ".-", ms=3, label=str(k))
    if labels is not None:
        _token_ticks(ax, labels, 5.2)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.set_title(title, fontsize=10)
    if series:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    ax.grid(True, alpha=0.3)
    fig.tight_layout(), fig.savefig(path, dpi=110), plt.close(fig)
    return path


def plot_bars(path, groups: dict, categories, title="", ylabel=""):
    """Grouped bars: {series label: values per category}; writes a PNG."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    k = max(1, len(groups))
    w = 0.8 / k
    for j, (lab, vals) in enumerate(groups.items()):
        ax.bar(np.arange(len(categories)) + (j - (k - 1) / 2) * w, vals, w, label=lab)
    ax.set_xticks(range(len(categories))), ax.set_xticklabels(categories)
    ax.set_ylabel(ylabel), ax.set_title(title, fontsize=10), ax.legend(fontsize=7), ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout(), fig.savefig(path, dpi=110), plt.close(fig)
    return path


# ---- the scheduler, round by round, with the numbers that flowed (`bdh trace`) --------------------------------


def _fmt(v: float) -> str:
    return f"{v:.4g}" if v != 0 else "0"


def _label(pop: str, k: int) -> str:
    return f"{k}" if pop == "neurons" else f"{pop}[{k}]"


def _var_parts(var: str):
    """`X` -> ("neurons", "X"); `hub.A` -> ("hub", "A")."""
    return tuple(var.split(".", 1)) if "." in var else ("neurons", var)


def trace_rounds(sim, tokens, shown: dict, max_rounds: int | None = None, max_flows: int = 12):
    """Run `tokens` through `sim` sub-round by sub-round and describe every rule with the numbers that flowed.

    tokens: list of (label, x0_t, y0_t, extra) where extra is {qualified variable: values} or None (set at the
    token's start, as `equivalence.run`'s simulator does). shown: {population: node indices} to report (flows
    into, and values of, these nodes only). Returns a list of token dicts:
    {token, label, rounds: [{round, layer, label, communication: [rule], computation: [rule]}]}, each rule
    {text, kind, flows: [{src, dst, weight, value, message}] (communication), changes: [{node, before, after,
    inputs}] (node values), truncated: count of flows left out}. The computation rules are replayed one by one
    from the state before the sub-round (the same rule functions as the backends) so each rule's own effect is
    shown; `consistent` records that the replay reached the simulator's state.
    """
    from . import kernels as K
    from .backends import numpy_ops

    net = sim.net
    ops = numpy_ops(None)
    kernel = sim.kernel
    layer_of = [l + 1 for l, layer in enumerate(kernel.layers) for _ in layer]
    out, done_rounds = [], 0
    show = {p: np.asarray(v, dtype=np.int64) for p, v in shown.items()}
    is_shown = {p: np.isin(np.arange(net.populations[p].size), show.get(p, [])) for p in net.populations}

    for t, (label, x0, y0, extra) in enumerate(tokens):
        if extra:
            sim.ingest(x0, y0, extra)
        else:
            sim.ingest(x0, y0)
        st = sim.state
        inputs = {
            v: [
                (_label(_var_parts(v)[0], int(k)), float(st.nodes[v][k]))
                for k in show.get(_var_parts(v)[0], [])
                if st.nodes[v][k] != 0
            ]
            for v in (["X", "Y"] + list(extra or {}))
        }
        tok = dict(token=t, label=label, inputs=inputs, rounds=[])
        for k, rnd in enumerate(kernel.rounds):
            if max_rounds is not None and done_rounds >= max_rounds:
                break
            entry = dict(round=k, layer=layer_of[k], label=rnd.label, communication=[], computation=[])
            before = sim.state
            sim.step()
            mid = sim.state
            for rule in rnd.communication:
                entry["communication"].append(_comm_flows(net, rule, before, mid, is_shown, max_flows))
            sim.step()
            after = sim.state
            nodes = {k2: v.copy() for k2, v in mid.nodes.items()}
            for rule in rnd.computation:
                if rule.kind == "damp":
                    entry["computation"].append(_damp_changes(net, rule, mid, after, is_shown, max_flows))
                    continue
                names = rule.src + ((rule.dst,) if rule.dst else ())
                old = nodes[rule.dst].copy()
                nodes.update(K.COMPUTATION_RULES[rule.kind](rule, {v: nodes[v] for v in names}, ops))
                pop = _var_parts(rule.dst)[0]
                ch = []
                for j in show.get(pop, []):
                    if old[j] != nodes[rule.dst][j]:
                        ins = {
                            s: float(nodes[s][j]) if s != rule.dst else float(old[j])
                            for s in rule.src
                            if _var_parts(s)[0] == pop and s != rule.dst
                        }
                        ch.append(
                            dict(
                                node=_label(pop, int(j)),
                                before=float(old[j]),
                                after=float(nodes[rule.dst][j]),
                                inputs=ins,
                            )
                        )
                entry["computation"].append(
                    dict(text=str(rule), kind=rule.kind, changes=ch[:max_flows], truncated=max(0, len(ch) - max_flows))
                )
            entry["consistent"] = bool(
                all(np.allclose(nodes[v], after.nodes[v], rtol=1e-12, atol=1e-12) for v in nodes)
            )
            tok["rounds"].append(entry)
            done_rounds += 1
        out.append(tok)
        if max_rounds is not None and done_rounds >= max_rounds:
            if sim._loaded:  # finish the token quietly so the simulator stays consistent
                while sim._loaded:
                    sim.step()
            break
    return out


def _comm_flows(net, rule, before, after, is_shown, max_flows):
    """Messages of one communication rule into shown nodes (or, for a Hebbian write, onto shown synapses)."""
    flows = []
    if rule.kind in ("send", "read"):
        if rule.kind == "send":
            g = net.groups[rule.group]
            w = g.weight
            wname = rule.group
        else:
            g = net.groups[net.edge_vars[rule.src[1]].group]
            w = before.edges[rule.src[1]]
            wname = rule.src[1]
        q = before.nodes[rule.src[0]]
        src, dst = g.source, g.indices
        live = np.nonzero((q[src] != 0) & (w != 0) & is_shown[g.post][dst])[0]
        for e in live:
            i, j = int(src[e]), int(dst[e])
            flows.append(
                dict(
                    src=_label(g.pre, i),
                    dst=_label(g.post, j),
                    weight=float(w[e]),
                    value=float(q[i]),
                    message=float(w[e] * q[i]),
                    text=f"{rule.src[0]}({_label(g.pre, i)})={_fmt(q[i])} · {wname}({_label(g.pre, i)}→"
                    f"{_label(g.post, j)})={_fmt(w[e])} → {rule.dst}({_label(g.post, j)}) += "
                    f"{_fmt(w[e] * q[i])}",
                )
            )
        dpop = g.post
        totals = [
            dict(
                node=_label(dpop, int(j)),
                before=float(before.nodes[rule.dst][j]),
                after=float(after.nodes[rule.dst][j]),
            )
            for j in np.nonzero(is_shown[dpop])[0]
            if before.nodes[rule.dst][j] != after.nodes[rule.dst][j]
        ]
    else:  # hebbian p(i), q(j) -> s(i,j), weight Gs
        p, q = rule.src
        g = net.groups[net.edge_vars[rule.dst].group]
        src, dst = g.source, g.indices
        pv, qv = before.nodes[p], before.nodes[q]
        live = np.nonzero((pv[src] != 0) & (qv[dst] != 0) & is_shown[g.pre][src] & is_shown[g.post][dst])[0]
        for e in live:
            i, j = int(src[e]), int(dst[e])
            m = g.weight[e] * pv[i] * qv[j]
            flows.append(
                dict(
                    src=_label(g.pre, i),
                    dst=_label(g.post, j),
                    weight=float(g.weight[e]),
                    value=float(pv[i] * qv[j]),
                    message=float(m),
                    text=f"{p}({_label(g.pre, i)})={_fmt(pv[i])} · {q}({_label(g.post, j)})={_fmt(qv[j])}"
                    f" · Gs={_fmt(g.weight[e])} → {rule.dst}({_label(g.pre, i)},{_label(g.post, j)}): "
                    f"{_fmt(before.edges[rule.dst][e])} → {_fmt(after.edges[rule.dst][e])}",
                )
            )
        totals = []
    return dict(
        text=str(rule),
        kind=rule.kind,
        dst=rule.dst,
        flows=flows[:max_flows],
        truncated=max(0, len(flows) - max_flows),
        totals=totals,
    )


def _damp_changes(net, rule, before, after, is_shown, max_flows):
    g = net.groups[net.edge_vars[rule.dst].group]
    src, dst = g.source, g.indices
    a, b = before.edges[rule.dst], after.edges[rule.dst]
    idx = np.nonzero((a != b) & is_shown[g.pre][src] & is_shown[g.post][dst])[0]
    ch = [
        dict(
            node=f"({_label(g.pre, int(src[e]))},{_label(g.post, int(dst[e]))})",
            before=float(a[e]),
            after=float(b[e]),
            inputs={},
        )
        for e in idx
    ]
    return dict(text=str(rule), kind="damp", changes=ch[:max_flows], truncated=max(0, len(ch) - max_flows))


def format_trace(tr: list, header: str = "") -> str:
    """The terminal text of `trace_rounds`: per token, per round, communication then computation, each rule as
    the paper writes it followed by the numbers."""
    lines = [header] if header else []
    for tok in tr:
        ins = (
            "; ".join(
                f"{v}: " + ", ".join(f"{k}={_fmt(x)}" for k, x in vals) for v, vals in tok["inputs"].items() if vals
            )
            or "all shown inputs 0"
        )
        lines.append(f"token {tok['token'] + 1} {tok['label']!s}   inputs  {ins}")
        for r in tok["rounds"]:
            lines.append(f"  round {r['round'] + 1} (layer {r['layer']}) {r['label']}")
            for phase in ("communication", "computation"):
                rules = r[phase]
                lines.append(f"    {phase}" + ("   -" if not rules else ""))
                for rule in rules:
                    lines.append(f"      {rule['text']}")
                    for f in rule.get("flows", []):
                        lines.append(f"          {f['text']}")
                    for c in rule.get("totals", []):
                        lines.append(
                            f"          {rule['dst']}({c['node']}): "
                            f"{_fmt(c['before'])} → {_fmt(c['after'])}   (sum of the messages)"
                        )
                    for c in rule.get("changes", []):
                        ins = ", ".join(f"{k}={_fmt(v)}" for k, v in c["inputs"].items())
                        lines.append(
                            f"          {c['node']}: {_fmt(c['before'])} → {_fmt(c['after'])}"
                            + (f"   ({ins})" if ins else "")
                        )
                    if rule.get("truncated"):
                        lines.append(f"          … {rule['truncated']} more not shown")
                    if not rule.get("flows") and not rule.get("changes") and not rule.get("totals"):
                        lines.append("          (no message or change at the shown nodes)")
            if not r.get("consistent", True):
                lines.append("    !! the rule-by-rule replay differs from the simulator's state")
    return "\n".join(lines)
