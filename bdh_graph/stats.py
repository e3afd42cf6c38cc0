"""Graph statistics of the paper's Sec. 5 (reference section 6): thresholded neuron graphs, degrees, modularity.

numpy / scipy / networkx only (no torch, no matplotlib: the figures are bdh_graph.plots): every function takes
arrays. Edge convention as everywhere (reference 1): for an n x n matrix G, the edge *from i to j* has weight
G[j, i], so row j lists j's incoming edges.

    A = threshold_graph(G, beta)              # CSR (n, n) 0/1, A[j, i] = 1 iff G[j, i] >= beta (i != j)
    k_in, k_out = degrees(A)
    fit = tail_exponent(k_in)                 # discrete power-law MLE above k_min (Clauset et al. 2009)
    q, parts = louvain_modularity(A)          # best of 5 seeds
    rows = modularity_vs_beta(G, betas, baselines={"low-rank": G_random})
    top = mann_whitney_rank(concept, contrast)   # one-sided U per column, best first

Baselines (paper Sec. 5.5): `gnm_like(A)` (G(n, m) with the same edge count) and `random_low_rank(n, d, ...)`
(the product of random Gaussian D, E with the trained matrices' scales, thresholded at the same beta).
A matrix as a networkx graph: `bdh_graph.export.matrix_to_networkx`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .export import matrix_to_networkx

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


def louvain_modularity(A, seeds: int = LOUVAIN_SEEDS, directed: bool = True) -> tuple[float, list]:
    """Best Louvain modularity of A over `seeds` runs (seeds 0..seeds-1), and its communities.

    Directed modularity (Leicht-Newman) on the directed graph, as networkx computes it. A graph with no edge
    has modularity 0 by convention (networkx would divide by zero)."""
    import networkx as nx

    g = matrix_to_networkx(A, directed=directed)
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
