"""`bdh analyze`: the measurements of the paper's Sec. 5-6 on any model (sparsity, weight graphs, the sigma graph,
monosemantic synapses), with figures and an HTML report."""

from __future__ import annotations

import json
import os
import time

import numpy as np

from .demo import byte_label
from .figures import betas_for_density, captioned, fit_text, modularity_text
from .html import write_html
from .names import node, state, synapse
from .words import notation_html

PAPER = {  # reference section 6
    "sparsity_y": "about 5% (4.0-7.5% while memorising, about 2.5% while repeating; n = 65536, L = 4, layer 2)",
    "graph": "G_x = D_x E per head, beta = 1.2: 46,820 directed edges on 8192 neurons; heavy right tail",
    "modularity": "high, peak near beta = 1.0; G(n,m) and random low-rank baselines about 0",
    "synapse": "U = 2368 of 2500 (50 vs 50 sentences), p < 1e-14",
}


def _lines(path: str, flag: str = "file") -> list[bytes]:
    from bdh.errors import InputError, read_input

    out = [ln.strip() for ln in read_input(path, flag).splitlines() if ln.strip()]
    if len(out) < 2:
        raise InputError(f"{flag} {path}: expected at least 2 non-empty lines (one sentence per line), got {len(out)}")
    return out


def _sigma_layer(model, layer):
    from bdh_gpu.analysis import layer_names

    names = layer_names(model)
    ok = [l for l in names if l >= 1 and l - 1 in names]
    if layer is None:
        return ok[len(ok) // 2] if ok else None
    if layer not in ok:
        from bdh.errors import InputError

        raise InputError(f"--sigma-layer: expected one of {ok} for the {model.config.variant} variant, got {layer}")
    return layer


def analyze_model(
    model,
    ids,
    out_dir: str | None = None,
    *,
    betas=None,
    density=(0.001, 0.002, 0.005, 0.01, 0.02),
    heads=(0,),
    seeds: int = 5,
    sigma_layer=None,
    sigma_neurons: int = 2048,
    concept=None,
    contrast=None,
    candidates: int = 48,
    log=print,
    progress: bool = False,
) -> dict:
    """Reference section 6 on `model` over the token ids `ids`: sparsity per layer; G_x = D_x E and G_y = D_y E
    per head thresholded at beta (degrees, tail exponents, Louvain modularity vs beta beside G(n,m) and random
    low-rank); the sigma graph (positive part, thresholded) after the text; optionally the monosemantic-synapse
    finder over concept vs contrast sentences (lists of byte strings). Writes figures + report.html + analysis.json
    into out_dir when given; progress=True draws a bar on stderr, one step per measurement. Returns the numbers."""
    import torch

    from .progress import bar as progress_bar

    model = model.eval()
    pbar = progress_bar(2 + 2 * len(heads) + (concept is not None) + bool(out_dir), "analyze", progress)
    pbar.set_postfix_str("sparsity")
    figs, res = [], dict(config=model.config.to_dict(), tokens=len(ids), paper=PAPER)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    with torch.no_grad():
        tr = model.trace(torch.as_tensor(list(ids), dtype=torch.long))
    res["sparsity"] = _sparsity(model, tr, ids, out_dir, figs, log)
    pbar.update(), pbar.set_postfix_str("weight graphs")
    res["graphs"] = []
    for h in heads:
        for which in ("x", "y"):
            res["graphs"].append(_weight_graph(model, which, h, betas, density, seeds, out_dir, figs))
            log(_graph_line(res["graphs"][-1]))
            pbar.update(), pbar.set_postfix_str(f"G_{which} head {h}")
    l = _sigma_layer(model, sigma_layer)
    if l is not None:
        res["sigma"] = _sigma_graph(model, tr, ids, l, sigma_neurons, out_dir, figs, log)
    pbar.update(), pbar.set_postfix_str("synapse finder")
    if concept is not None and contrast is not None and l is not None:
        res["synapses"] = _synapse_search(model, concept, contrast, l, candidates, log)
        pbar.update()
    res["seconds"] = time.perf_counter() - t0
    if out_dir:
        pbar.set_postfix_str("report")
        with open(os.path.join(out_dir, "analysis.json"), "w") as f:
            json.dump(res, f, indent=1, default=float)
        res["report"] = write_html(os.path.join(out_dir, "report.html"), "bdh analyze", _report_blocks(res, figs))
        res["figures"] = figs
        pbar.update()
    pbar.close()
    return res


def _sparsity(model, tr, ids, out_dir, figs, log) -> dict:
    """The fraction of neurons with x > 0 and y > 0 per layer (paper Sec. 6.1), its bar chart and the raster."""
    from bdh_gpu.analysis import layer_names, sparsity, top_active
    from bdh_graph import plots as GP

    sp_ = sparsity(model, None, trace=tr)
    log(
        f"sparsity over {len(ids)} tokens (fraction of n = {model.config.n} neurons active), per layer "
        f"{sp_['layers']}:\n  x > 0: {' '.join(f'{v:.4f}' for v in sp_['x'])}\n"
        f"  y > 0: {' '.join(f'{v:.4f}' for v in sp_['y'])}   (paper: y {PAPER['sparsity_y']})"
    )
    if out_dir:
        names = layer_names(model)
        figs.append(
            GP.plot_bars(
                os.path.join(out_dir, "sparsity_per_layer.png"),
                {"x > 0": sp_["x"], "y > 0": sp_["y"]},
                [str(l) for l in names],
                title=f"active fraction per layer ({len(ids)} tokens)",
                ylabel="fraction of neurons",
            )
        )
        T = min(len(ids), 96)
        Y = tr["y"][:, :T].permute(1, 0, 2).reshape(T, -1).double().numpy()
        idx = top_active(Y, 96)
        figs.append(
            GP.plot_raster(
                os.path.join(out_dir, "activity_raster.png"),
                Y[:, idx],
                [byte_label(b) for b in list(ids)[:96]],
                title="y > 0 of the 96 most active (layer, neuron), first tokens",
                ylabel="(layer, neuron), index order",
                clabel="y (activity)",
            )
        )
    return sp_


def _weight_graph(model, which, h, betas, density, seeds, out_dir, figs) -> dict:
    """G_which = D_which E of head h thresholded (paper Sec. 5.5): degrees, tail exponents; for G_x also Louvain
    modularity against beta beside the random baselines."""
    from bdh_gpu.analysis import neuron_graph, weight_scales
    from bdh_graph import plots as GP
    from bdh_graph import stats as GS

    G = neuron_graph(model, which, h)
    bs = list(betas) if betas is not None else betas_for_density(G, density)
    entry = dict(graph=f"G_{which}", head=h, betas=bs, std=float(G.std()), max=float(G.max()))
    mid = bs[len(bs) // 2]
    A = GS.threshold_graph(G, mid)
    k_in, k_out = GS.degrees(A)
    entry.update(beta_degrees=mid, edges=int(A.nnz), **_tails(GS, k_in, k_out))
    entry.update(max_in=int(k_in.max()), max_out=int(k_out.max()))
    entry.update(zero_in=float((k_in == 0).mean()), zero_out=float((k_out == 0).mean()))
    if which == "x":
        s = weight_scales(model, "x")
        R = GS.random_low_rank(
            G.shape[0], s["d"], s["std_D"], s["std_E"], seed=1 + h, mean_D=s["mean_D"], mean_E=s["mean_E"]
        )
        entry["modularity"] = GS.modularity_vs_beta(G, bs, baselines={"low-rank": R}, seeds=seeds)
        if out_dir:
            path = os.path.join(out_dir, f"modularity_vs_beta_h{h}.png")
            figs.append(GP.plot_modularity(path, entry["modularity"], title=f"G_x = D_x E, head {h}"))
    if out_dir:
        figs.append(
            GP.plot_degree_distribution(
                os.path.join(out_dir, f"degrees_G{which}_h{h}.png"),
                {"in-degree": k_in, "out-degree": k_out},
                title=f"G_{which} = D_{which} E, head {h}, beta = {mid:.3g} ({A.nnz} edges)",
            )
        )
    return entry


def _tails(GS, k_in, k_out) -> dict:
    fi, fo = GS.tail_exponent(k_in), GS.tail_exponent(k_out)
    return dict(tail_in=fi.to_dict() if fi else None, tail_out=fo.to_dict() if fo else None)


def _sigma_graph(model, tr, ids, l, sigma_neurons, out_dir, figs, log) -> dict:
    """The graph sigma_l wrote after the text (paper Sec. 6.2, Eq. 16): positive part on the neurons active on both
    ends, thresholded at its 90th percentile; degrees and tail exponents; the most changing synapses over time."""
    from bdh_gpu.analysis import layer_names, sigma_synapses, top_active
    from bdh_graph import plots as GP
    from bdh_graph import stats as GS

    names = layer_names(model)
    yprev = tr["y"][names.index(l - 1)].double().numpy()
    xl = tr["x"][names.index(l)].double().numpy()
    rows, cols = top_active(yprev, sigma_neurons), top_active(xl, sigma_neurons)
    S = sigma_synapses(model, tr, l, rows, cols)
    both = np.intersect1d(rows, cols)  # a square graph on neurons active on both ends
    ri, ci = np.searchsorted(rows, both), np.searchsorted(cols, both)
    Sq = np.maximum(S[np.ix_(ri, ci)], 0.0)  # positive part; Sq[a, b]: edge b -> a
    pos_vals = Sq[Sq > 0]
    beta_s = float(np.quantile(pos_vals, 0.9)) if pos_vals.size else 0.0
    A = GS.threshold_graph(Sq, beta_s) if pos_vals.size else GS.threshold_graph(Sq, 1.0)
    k_in, k_out = GS.degrees(A)
    fi, fo = GS.tail_exponent(k_in), GS.tail_exponent(k_out)
    res = dict(layer=l, neurons=int(len(both)), beta=beta_s, edges=int(A.nnz), positive_fraction=float((S > 0).mean()))
    res.update(tail_in=fi.to_dict() if fi else None, tail_out=fo.to_dict() if fo else None)
    log(
        f"{state(l)} after the text, on the {len(both)} neurons active on both ends, positive part >= "
        f"{beta_s:.3g} (its 90th percentile): {A.nnz} edges; tail exponent in "
        f"{_alpha_s(fi)}, out {_alpha_s(fo)}"
    )
    if out_dir:
        figs.append(
            GP.plot_degree_distribution(
                os.path.join(out_dir, "degrees_sigma.png"),
                {"in-degree": k_in, "out-degree": k_out},
                title=f"{state(l)} (positive part >= {beta_s:.3g})",
            )
        )
        figs.append(_sigma_series_figure(model, tr, ids, l, rows, cols, out_dir))
    return res


def _sigma_series_figure(model, tr, ids, l, rows, cols, out_dir):
    """sigma_l(i->j) over the text for the six synapses among the first 32 x 32 that change most."""
    from bdh_gpu.analysis import sigma_synapses
    from bdh_graph import plots as GP

    T = min(len(ids), 128)
    steps = np.stack([sigma_synapses(model, tr, l, rows[:32], cols[:32], t=t).ravel() for t in range(T)])
    ch = np.abs(np.diff(steps, axis=0)).sum(0)
    series = {}
    for p in np.argsort(-ch)[:6]:
        a, b = rows[p // 32], cols[p % 32]
        series[f"{b}->{a}"] = [float(sigma_synapses(model, tr, l, [a], [b], t=t)[0, 0]) for t in range(T)]
    return GP.plot_series(
        os.path.join(out_dir, "sigma_synapses.png"),
        series,
        [byte_label(b) for b in list(ids)[:T]],
        title=f"{state(l)}(i → j) over the text (most changing)",
        ylabel="sigma",
    )


def _synapse_search(model, concept, contrast, l, candidates, log) -> dict:
    """The monosemantic-synapse finder (paper Sec. 6.3): sigma_l synapses ranked by Mann-Whitney U."""
    found = find_synapses(model, concept, contrast, l, candidates)
    best = found["top"][:3]
    log(
        f"monosemantic-synapse search, {state(l)}, {len(concept)} concept vs {len(contrast)} contrast sentences, "
        f"{found['candidates']} candidate synapses: best "
        + "; ".join(f"{s['synapse']} U = {s['U']:.0f} of {s['U_max']} (p = {s['p']:.2g})" for s in best)
    )
    return found


def _alpha_s(fit):
    return "-" if fit is None else f"{fit.alpha:.2f} (k >= {fit.k_min}, {fit.n_tail} nodes)"


def _graph_line(e) -> str:
    t = lambda f: "-" if f is None else f"{f['alpha']:.2f} (k >= {f['k_min']})"
    s = (
        f"{e['graph']} head {e['head']}: entries std {e['std']:.3g}, max {e['max']:.3g}; at beta = "
        f"{e['beta_degrees']:.3g}: {e['edges']} edges, max in/out degree {e['max_in']}/{e['max_out']}, tail exponent "
        f"in {t(e['tail_in'])}, out {t(e['tail_out'])}"
    )
    for r in e.get("modularity", []):
        s += (
            f"\n    beta {r['beta']:.4g}: {r['edges']} edges, modularity {_f(r['modularity'])} "
            f"(G(n,m) {_f(r.get('G(n,m)'))}; random low-rank {_f(r.get('low-rank'))} with {r.get('low-rank_edges')} "
            f"edges at this beta, {_f(r.get('low-rank (same m)'))} with the same edge count)"
        )
    return s


def _f(v):
    return "-" if v is None else f"{v:.3f}"


def find_synapses(model, concept, contrast, layer: int, candidates: int = 48, top: int = 10) -> dict:
    """Monosemantic-synapse search (paper Sec. 6.3): sigma_layer(i -> j) after each sentence (fresh state per
    sentence), over the synapses between the `candidates` most active value neurons (y_{l-1}) and key neurons
    (x_l) of all sentences; ranked by one-sided Mann-Whitney U (concept > contrast)."""
    import torch

    from bdh_gpu.analysis import layer_names, sigma_synapses, top_active
    from bdh_graph.stats import mann_whitney_rank

    names = layer_names(model)
    traces = []
    with torch.no_grad():
        for s in list(concept) + list(contrast):
            ids = list(s) if isinstance(s, (bytes, bytearray)) else list(str(s).encode())
            traces.append(model.trace(torch.tensor(ids, dtype=torch.long)))
    ys = np.concatenate([t["y"][names.index(layer - 1)].double().numpy() for t in traces])
    xs = np.concatenate([t["x"][names.index(layer)].double().numpy() for t in traces])
    rows, cols = top_active(ys, candidates), top_active(xs, candidates)
    vals = np.stack([sigma_synapses(model, t, layer, rows, cols).ravel() for t in traces])  # (m, R*C)
    m1 = len(concept)
    ranked = mann_whitney_rank(vals[:m1], vals[m1:], top=top)
    out = []
    for r in ranked:
        a, b = int(rows[r.index // len(cols)]), int(cols[r.index % len(cols)])
        out.append(
            dict(synapse=synapse(state(layer), node("neurons", b), node("neurons", a)), key=b, value=a, **r.to_dict())
        )
    return dict(layer=layer, candidates=int(vals.shape[1]), n_concept=m1, n_contrast=len(contrast), top=out)


def _report_blocks(res, figs) -> list:
    """The analyze report in words: each measurement beside the paper's value, the notation, captioned figures."""
    blocks = _intro_blocks(res) + _weight_blocks(res)
    for e in res["graphs"]:
        if e.get("modularity"):
            blocks += [_modularity_table(e), ("p", f"Ours: {modularity_text(e['modularity'], res['config']['N'])}")]
    if "sigma" in res:
        blocks += _sigma_blocks(res["sigma"])
    if "synapses" in res:
        blocks += _synapse_blocks(res["synapses"], res["paper"])
    return blocks + [("h2", "Figures"), *[("img", c) for c in captioned(figs)]]


def _intro_blocks(res) -> list:
    """The report's opening: what was measured on which model, the notation, the sparsity table."""
    C, sp_ = res["config"], res["sparsity"]
    return [
        (
            "p",
            f"The measurements of the paper's Sec. 5-6 on one model (n = {C['N'] * C['n_head']} neurons, "
            f"d = {C['d']}, "
            f"L = {C['n_layer']} layers, {C['n_head']} heads, variant {C['variant']}) over a text of "
            f"{res['tokens']} bytes: how sparse the activity is, what graph the learned weights form, what graph "
            "the synaptic state forms after the text, and (with --concept/--contrast) which single synapse "
            "tells two kinds of sentences apart. The numbers are also in analysis.json.",
        ),
        ("h2", "Notation"),
        ("html", notation_html()),
        ("h2", "Sparsity: how many neurons are active"),
        (
            "table",
            (
                ("layer", "fraction with x > 0", "fraction with y > 0"),
                [(l, f"{a:.2%}", f"{b:.2%}") for l, a, b in zip(sp_["layers"], sp_["x"], sp_["y"])],
            ),
        ),
        ("p", f"Paper: y {res['paper']['sparsity_y']}."),
    ]


def _weight_blocks(res) -> list:
    """The weight graphs' paragraph and table of degrees and tails."""
    return [
        ("h2", "Weight graphs G_x = D_x E and G_y = D_y E"),
        (
            "p",
            "Each head's n x n product read as a graph: an edge i -> j where the entry is >= beta (chosen for a "
            "given edge density). Degrees are the number of edges in and out of a neuron; the tail exponent "
            "alpha fits P(k) ~ k^-alpha to the largest degrees (a heavy tail: a few hub neurons). Modularity: "
            "Louvain, best of 5 seeds, beside G(n,m) (uniformly random, same n and m) and a random low-rank "
            f"product of the same d and scale. Paper: {res['paper']['graph']}; modularity "
            f"{res['paper']['modularity']}.",
        ),
        (
            "table",
            (
                ("graph", "head", "beta", "edges", "max in / out degree", "in-degree tail", "out-degree tail"),
                [
                    (
                        e["graph"],
                        e["head"],
                        f"{e['beta_degrees']:.3g}",
                        e["edges"],
                        f"{e['max_in']} / {e['max_out']}",
                        fit_text(e["tail_in"]),
                        fit_text(e["tail_out"]),
                    )
                    for e in res["graphs"]
                ],
            ),
        ),
    ]


def _modularity_table(e) -> tuple:
    """Modularity against the threshold beside the baselines, for one graph."""
    return (
        "table",
        (
            (
                f"{e['graph']} head {e['head']}: threshold beta",
                "edges",
                "modularity",
                "G(n,m)",
                "random low-rank (same beta)",
                "random low-rank (same edges)",
            ),
            [
                (
                    f"{r['beta']:.4g}",
                    r["edges"],
                    _f(r["modularity"]),
                    _f(r.get("G(n,m)")),
                    _f(r.get("low-rank")),
                    _f(r.get("low-rank (same m)")),
                )
                for r in e["modularity"]
            ],
        ),
    )


def _sigma_blocks(sg) -> list:
    """The state graph sigma_l after the text."""
    return [
        ("h2", f"The state graph: {state(sg['layer'])} after the text"),
        (
            "p",
            f"On the {sg['neurons']} neurons active at both ends of a synapse, the positive part of "
            f"sigma thresholded at its 90th percentile ({sg['beta']:.3g}): {sg['edges']} edges; "
            f"{sg['positive_fraction']:.1%} of the synapses are positive; in-degree tail "
            f"{fit_text(sg['tail_in'])}, out-degree tail {fit_text(sg['tail_out'])}. Paper: "
            "heavy-tailed degrees.",
        ),
    ]


def _synapse_blocks(sy, paper) -> list:
    """The monosemantic-synapse search's ranking."""
    return [
        ("h2", "Monosemantic synapses"),
        (
            "p",
            f"{state(sy['layer'])}(i → j) after each sentence, {sy['n_concept']} concept vs "
            f"{sy['n_contrast']} contrast sentences, over {sy['candidates']} candidate synapses, ranked "
            "by the one-sided Mann-Whitney U (U_max = all pairs: the synapse is larger on every concept "
            f"sentence than on every contrast one). Paper: {paper['synapse']}.",
        ),
        (
            "table",
            (
                ("synapse (key → value)", "U", "of U_max", "p"),
                [(t["synapse"], f"{t['U']:.0f}", t["U_max"], f"{t['p']:.2g}") for t in sy["top"]],
            ),
        ),
    ]
