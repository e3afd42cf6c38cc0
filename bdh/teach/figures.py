"""The demo's figures: the graph walk (activity raster, sigma of the synapses that changed most, sparsity per
layer) and the weight graph G_x = D_x E (degree distribution, modularity vs beta)."""

from __future__ import annotations

import os
import re

import numpy as np

from . import names
from .demo import GraphWalk, byte_label, synapse_name


def walk_figures(walk: GraphWalk, out_dir: str, max_neurons: int = 64) -> list[str]:
    """PNGs of a graph walk: activity raster (Y of every layer, the most active neurons), sigma of the synapses
    that changed most, sparsity per layer. Returns the paths."""
    from bdh_gpu.analysis import top_active
    from bdh_graph.plots import plot_bars, plot_raster, plot_series

    labels = [byte_label(b) for b in walk.ids]
    official = walk.compiled.variant == "official"
    layers = list(range(1, walk.y.shape[1])) if official else list(range(walk.y.shape[1]))
    paths = []
    Y = np.concatenate([walk.y[:, l] for l in layers], axis=1)  # (T, |layers| n)
    idx = top_active(Y, max_neurons)
    n = walk.y.shape[2]
    paths.append(
        plot_raster(
            os.path.join(out_dir, "activity_raster.png"),
            Y[:, idx],
            labels,
            title=f"y > 0 of the {len(idx)} most active (layer, neuron) of {len(layers)}x{n}",
            ylabel="(layer, neuron), index order",
            clabel="y (activity)",
        )
    )
    series = {
        names.synapse(names.state(l), *synapse_name(walk.compiled, walk.compiled.network.sigma_names[l - 1], e)): v
        for (l, e), v in walk.sigma_trace.items()
    }
    paths.append(
        plot_series(
            os.path.join(out_dir, "sigma_synapses.png"),
            series,
            labels,
            title="σ on the synapses that changed most",
            ylabel="σ_ℓ(i, j)",
        )
    )
    sx = [float((walk.x[:, l] > 0).mean()) for l in layers]
    sy = [float((walk.y[:, l] > 0).mean()) for l in layers]
    paths.append(
        plot_bars(
            os.path.join(out_dir, "sparsity_per_layer.png"),
            {"x > 0": sx, "y > 0": sy},
            [str(l) for l in layers],
            title="fraction of active neurons per layer (graph run)",
            ylabel="fraction",
        )
    )
    return paths


def weight_graph_figures(
    model, out_dir: str, density=(0.002, 0.005, 0.01, 0.02, 0.05), seeds: int = 5, head: int = 0
) -> tuple[list[str], dict]:
    """Degree distribution (at the middle density) and modularity vs beta of G_x = D_x E on one head, with the
    G(n,m) and random low-rank baselines. Betas are the quantiles of G_x's off-diagonal entries that give the
    edge densities `density`. Returns (paths, numbers)."""
    from bdh_gpu.analysis import neuron_graph, weight_scales
    from bdh_graph.plots import plot_degree_distribution, plot_modularity
    from bdh_graph.stats import degrees, modularity_vs_beta, random_low_rank, tail_exponent, threshold_graph

    G = neuron_graph(model, "x", head)
    betas = betas_for_density(G, density)
    s = weight_scales(model, "x")
    R = random_low_rank(G.shape[0], s["d"], s["std_D"], s["std_E"], seed=1, mean_D=s["mean_D"], mean_E=s["mean_E"])
    R *= G.std() / R.std() if R.std() > 0 else 1.0  # the same scale, so a beta means the same density-ish
    rows = modularity_vs_beta(G, betas, baselines={"low-rank": R}, seeds=seeds)
    mid = betas[len(betas) // 2]
    A = threshold_graph(G, mid)
    k_in, k_out = degrees(A)
    paths = [
        plot_degree_distribution(
            os.path.join(out_dir, "degree_distribution.png"),
            {"in-degree": k_in, "out-degree": k_out},
            title=f"G_x = D_x E, head {head}, beta = {mid:.3g} ({A.nnz} edges)",
        ),
        plot_modularity(
            os.path.join(out_dir, "modularity_vs_beta.png"), rows, title=f"modularity of G_x (head {head}) vs beta"
        ),
    ]
    fit_in, fit_out = tail_exponent(k_in), tail_exponent(k_out)
    return paths, dict(
        head=head,
        betas=betas,
        rows=rows,
        beta_degrees=mid,
        edges=int(A.nnz),
        tail_in=fit_in.to_dict() if fit_in else None,
        tail_out=fit_out.to_dict() if fit_out else None,
    )


def betas_for_density(G, density) -> list[float]:
    """The thresholds beta at which G's graph (off-diagonal entries >= beta) has the given edge densities."""
    G = np.asarray(G)
    off = G[~np.eye(G.shape[0], dtype=bool)]
    return [float(np.quantile(off, 1.0 - p)) for p in density]


# ---- captions: what each figure shows, how to read it, and the paper's value beside ours ------------------------

CAPTIONS = {
    "activity_raster.png": "<b>Which neurons fire on which token.</b> Each column is one token of the prompt (a recall pair byte "
    "<code>k=v</code> means &ldquo;key k has value v&rdquo;; <code>:</code> separates the pairs from the "
    "questions), each row one (layer, neuron) among the most often active ones, in index order (the first "
    "layer's neurons at the bottom). A "
    "square means <i>y</i><sub>t,l</sub> &gt; 0: the neuron passed the attention gate on that token; its colour "
    "is the size of <i>y</i> (colour bar). Read it for sparsity: most rows are empty most of the time. "
    "<i>Paper (Sec. 6.1):</i> about 5% of the neurons have <i>y</i> &gt; 0 at a time.",
    "sigma_synapses.png": "<b>Memory on synapses.</b> The synaptic state &sigma;<sub>l</sub>(i&rarr;j) after each token, for the "
    "synapses whose &sigma; changed most. &sigma; is the Hebbian memory of layer l: the write rule "
    "<code>X(i), Y(j) &rarr; &sigma;(i,j)</code> adds the product of the activity at its two ends, and "
    "between tokens it decays or rotates with U (Eq. 6; RoPE turns it signed, so it crosses 0). Recall reads "
    "it back with <code>X(i), &sigma;(i,j) &rarr; A(j)</code>. Legend (right): <code>&sigma;_2(neuron 431 "
    "&rarr; att[h1,9])</code> is the state &sigma;<sub>2</sub> of layer 2 on the synapse from neuron 431 to "
    "attention hub 9 of head 1 (the official "
    "compile keeps &sigma; on synapses from neurons to per-head attention hubs; a dense compile from neuron to "
    "neuron; <code>hub[k]</code> is one of the 2d hubs of the circuit compile).",
    "sparsity_per_layer.png": "<b>How many neurons are active, per layer</b>, over the text: the fraction with "
    "<i>x</i> &gt; 0 (excited by the layer's input through D<sub>x</sub>) and with <i>y</i> &gt; 0 (also "
    "passed the attention gate: <i>y</i> = (D<sub>y</sub> &middot; attention)<sup>+</sup> &odot; <i>x</i>). "
    "<i>Paper (Sec. 6.1):</i> <i>y</i> about 5% (n = 65536, L = 4, layer 2); 4.0-7.5% while memorising.",
    "degree_distribution.png": "<b>The learned wiring as a graph.</b> G<sub>x</sub> = D<sub>x</sub> E of one head, read as a directed "
    "graph on the neurons: an edge i &rarr; j wherever the entry is at least the threshold &beta; in the "
    "title. The plot is P(K &ge; k), the fraction of neurons with in-degree (or out-degree) at least k, on "
    "log-log axes: a straight tail is a power law, a heavy tail means a few hub neurons with many "
    "connections. <i>Paper (Sec. 5.5):</i> a heavy right tail; 46,820 edges on 8192 neurons at &beta; = 1.2 "
    "for a trained model with n = 32768.",
    "modularity_vs_beta.png": "<b>Communities in the wiring.</b> Louvain modularity (best of 5 seeds; 0 = no community structure, "
    "towards 1 = separate clusters) of the thresholded G<sub>x</sub> against the threshold &beta;, beside "
    "two graphs without structure: <b>G(n,m)</b>, a uniformly random graph with the same number of nodes n "
    "and edges m, and <b>random low-rank</b>, a random product D E with the same d and weight scales "
    "thresholded at the same &beta;. <i>Paper (Sec. 5.5):</i> for a trained model with n = 32768 neurons "
    "the modularity is high, with its peak near &beta; = 1.0, and both baselines stay about 0. What this "
    "model shows is stated beside it (<i>Ours</i>); it need not be the paper's picture.",
    "degrees_sigma.png": "<b>The graph the prompt wrote into the synapses.</b> The positive part of &sigma;<sub>l</sub> after the "
    "text, thresholded, as a directed graph on the neurons active at both ends; P(K &ge; k) of its in- and "
    "out-degrees on log-log axes. <i>Paper (Sec. 6.2):</i> heavy-tailed degrees.",
    "memory_synapses.png": "<b>A fact, written into one synapse.</b> For each key=value fact of the prompt, the synapse "
    "&sigma;<sub>1</sub>(i&rarr;j) between two neurons that carries most of that fact's recall (legend: fact, "
    "then the synapse from key neuron i to value neuron j), after every token. In a model that has learned the "
    "task it is 0 until the fact byte is fed in, jumps "
    "there (the Hebbian write <code>X(i), Y(j) &rarr; &sigma;(i,j)</code> adds x(i) y(j)), then decays slowly "
    "by the damping u (ALiBi) and is read when the key is asked. Later steps are tokens that activate the "
    "same two neurons again, most often the fact's own question. <i>Paper (Sec. 6.3):</i> individual synapses that respond to one concept.",
    "memory_ablation.png": "<b>The ablation test.</b> The probability the graph gives the right answer to each fact's "
    "question, with the graph intact (left bar) and with exactly that fact's synapses (the table above) set "
    "to 0 after the facts were heard and before the questions (right bar). A recall that collapses was held "
    "by those synapses; the table shows the other questions keep their answers.",
}


def captioned(paths, ours: dict | None = None) -> list:
    """[(path, caption html)] for `paths`: the caption of CAPTIONS (or the file name) plus `ours[basename]`."""
    out = []
    for p in paths:
        b = os.path.basename(p)
        key = re.sub(r"_h\d+(?=\.png$)", "", b)  # per-head figures of bdh analyze share a caption
        key = {
            "degrees_Gx.png": "degree_distribution.png",
            "degrees_Gy.png": "degree_distribution.png",
            "degrees_sigma.png": "degrees_sigma.png",
        }.get(key, key)
        cap = CAPTIONS.get(key, b)
        if ours and b in ours:
            cap += f" <i>Ours:</i> {ours[b]}"
        out.append((p, cap))
    return out


def modularity_text(rows, n: int) -> str:
    """What this model's modularity rows show beside the baselines, in words: the peak and, at that beta, the
    baselines; says plainly when the model is not above them."""
    ok = [r for r in rows if r.get("modularity") is not None]
    if not ok:
        return "no threshold gave a graph small enough to measure."
    top = max(ok, key=lambda r: r["modularity"])
    base = {k: top[k] for k in ("G(n,m)", "low-rank") if top.get(k) is not None}
    said = ", ".join(f"{k} {v:.3f}" for k, v in base.items())
    text = f"peak modularity {top['modularity']:.3f} at β = {top['beta']:.3g}" + (
        f" (baselines: {said})" if said else ""
    )
    if base and top["modularity"] <= max(base.values()):
        low = "below both baselines" if top["modularity"] < min(base.values()) else "not above the baselines"
        return (
            text + f". At this scale (n = {n} neurons in the head, trained for minutes) the wiring is "
            f"{low}: this model does not show the paper's community structure."
        )
    return text + ": above the baselines, as in the paper (at a far smaller scale)."


def fit_text(fit) -> str:
    """A tail-exponent fit (PowerLawFit.to_dict() or None) in words."""
    if not fit:
        return "too few nodes in the tail to fit"
    return f"P(k) ~ k^-{fit['alpha']:.2f} for k >= {fit['k_min']} ({fit['n_tail']} nodes)"
