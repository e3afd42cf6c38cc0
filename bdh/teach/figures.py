"""The demo's figures: the graph walk (activity raster, sigma of the synapses that changed most, sparsity per
layer) and the weight graph G_x = D_x E (degree distribution, modularity vs beta)."""
from __future__ import annotations

import os

import numpy as np

from .demo import GraphWalk, byte_label, synapse_name


def walk_figures(walk: GraphWalk, out_dir: str, max_neurons: int = 64) -> list[str]:
    """PNGs of a graph walk: activity raster (Y of every layer, the most active neurons), sigma of the synapses
    that changed most, sparsity per layer. Returns the paths."""
    from bdh_gpu.analysis import top_active
    from bdh_graph.analysis import plot_bars, plot_raster, plot_series
    labels = [byte_label(b) for b in walk.ids]
    official = walk.compiled.variant == "official"
    layers = list(range(1, walk.y.shape[1])) if official else list(range(walk.y.shape[1]))
    paths = []
    Y = np.concatenate([walk.y[:, l] for l in layers], axis=1)                 # (T, |layers| n)
    idx = top_active(Y, max_neurons)
    n = walk.y.shape[2]
    paths.append(plot_raster(os.path.join(out_dir, "activity_raster.png"), Y[:, idx], labels,
                             title=f"y > 0 of the {len(idx)} most active (layer, neuron) of {len(layers)}x{n}",
                             ylabel="(layer, neuron) rank"))
    series = {f"L{l} {' -> '.join(synapse_name(walk.compiled, walk.compiled.network.sigma_names[l - 1], e))}": v
              for (l, e), v in walk.sigma_trace.items()}
    paths.append(plot_series(os.path.join(out_dir, "sigma_synapses.png"), series, labels,
                             title="sigma of the synapses that changed most", ylabel="sigma"))
    sx = [float((walk.x[:, l] > 0).mean()) for l in layers]
    sy = [float((walk.y[:, l] > 0).mean()) for l in layers]
    paths.append(plot_bars(os.path.join(out_dir, "sparsity_per_layer.png"), {"x > 0": sx, "y > 0": sy},
                           [str(l) for l in layers], title="fraction of active neurons per layer (graph run)",
                           ylabel="fraction"))
    return paths


def weight_graph_figures(model, out_dir: str, density=(0.002, 0.005, 0.01, 0.02, 0.05), seeds: int = 5,
                         head: int = 0) -> tuple[list[str], dict]:
    """Degree distribution (at the middle density) and modularity vs beta of G_x = D_x E on one head, with the
    G(n,m) and random low-rank baselines. Betas are the quantiles of G_x's off-diagonal entries that give the
    edge densities `density`. Returns (paths, numbers)."""
    from bdh_gpu.analysis import neuron_graph, weight_scales
    from bdh_graph.analysis import (degrees, modularity_vs_beta, plot_degree_distribution, plot_modularity,
                                    random_low_rank, tail_exponent, threshold_graph)
    G = neuron_graph(model, "x", head)
    betas = betas_for_density(G, density)
    s = weight_scales(model, "x")
    R = random_low_rank(G.shape[0], s["d"], s["std_D"], s["std_E"], seed=1, mean_D=s["mean_D"], mean_E=s["mean_E"])
    R *= G.std() / R.std() if R.std() > 0 else 1.0      # the same scale, so a beta means the same density-ish
    rows = modularity_vs_beta(G, betas, baselines={"low-rank": R}, seeds=seeds)
    mid = betas[len(betas) // 2]
    A = threshold_graph(G, mid)
    k_in, k_out = degrees(A)
    paths = [plot_degree_distribution(os.path.join(out_dir, "degree_distribution.png"),
                                      {"in-degree": k_in, "out-degree": k_out},
                                      title=f"G_x = D_x E, head {head}, beta = {mid:.3g} ({A.nnz} edges)"),
             plot_modularity(os.path.join(out_dir, "modularity_vs_beta.png"), rows,
                             title=f"modularity of G_x (head {head}) vs beta")]
    fit_in, fit_out = tail_exponent(k_in), tail_exponent(k_out)
    return paths, dict(head=head, betas=betas, rows=rows, beta_degrees=mid, edges=int(A.nnz),
                       tail_in=fit_in.to_dict() if fit_in else None, tail_out=fit_out.to_dict() if fit_out else None)


def betas_for_density(G, density) -> list[float]:
    """The thresholds beta at which G's graph (off-diagonal entries >= beta) has the given edge densities."""
    G = np.asarray(G)
    off = G[~np.eye(G.shape[0], dtype=bool)]
    return [float(np.quantile(off, 1.0 - p)) for p in density]
