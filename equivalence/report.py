"""The demo's pipeline and report: train (or reuse) a tiny model, compile it to its neuron graph, step a prompt
through the graph simulator token by token, verify graph == tensor, and write an HTML page with PNG figures.

    model, info = demo_model(fast=False)                 # cached under $BDH_CACHE or ~/.cache/bdh
    run = graph_walk(model, ids)                         # per token: prediction, active neurons, sigma changes
    verdict = compare(model, run.compiled, ids)          # equivalence.compare
    write_report(out_dir, ...)                           # report.html + *.png

Uses `equivalence.compile_model` (the `official` compile for the official variant) and `bdh_graph` monitors.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

from .compare import compare
from .compile import Compiled, compile_model
from .run import GraphRunner

DEMO_PRESET = "tiny"
DEMO_TRAIN = dict(steps=300, batch_size=32, block_size=64, lr=3e-3, warmup_steps=20, eval_every=100,
                  ckpt_every=300, eval_batches=4)
FAST_TRAIN = dict(steps=4, batch_size=4, block_size=32, lr=3e-3, warmup_steps=1, eval_every=4, ckpt_every=4,
                  eval_batches=1)


# ---- the model: train once, cache ------------------------------------------------------------------------------

def cache_key(config: dict, train: dict) -> str:
    """Stable key of (model config, training config incl. steps and seed)."""
    blob = json.dumps({"config": config, "train": train}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def demo_model(fast: bool = False, cache: str | None = None, log=print, use_cache: bool = True):
    """The demo's trained `tiny` model on the recall task: loaded from the cache if this (config, training
    config) was trained before, else trained now and cached. Returns (model in float64 eval mode, info dict)."""
    import torch

    import bdh_gpu
    from bdh_gpu.data import RecallData, cache_dir
    from bdh_gpu.train import TrainConfig, train

    config = bdh_gpu.get_preset(DEMO_PRESET)
    tcfg = TrainConfig(data="recall", **(FAST_TRAIN if fast else DEMO_TRAIN))
    key = cache_key(config.to_dict(), tcfg.to_dict())
    root = os.path.join(cache if cache is not None else cache_dir(), "demo", key)
    info = dict(preset=DEMO_PRESET, key=key, dir=root, steps=tcfg.steps, cached=False, seconds=0.0)
    t0 = time.perf_counter()
    done = os.path.exists(os.path.join(root, "done.json"))
    if use_cache and done:
        model = bdh_gpu.load(root)
        with open(os.path.join(root, "done.json")) as f:
            info.update(json.load(f), cached=True)
        log(f"  reusing the cached model {root} (trained {info['steps']} steps)")
    else:
        data = RecallData(tcfg.block_size)
        work = root + ".partial"
        if os.path.isdir(work):                                  # an interrupted earlier run: start over
            import shutil
            shutil.rmtree(work)
        torch.manual_seed(tcfg.seed)
        model = bdh_gpu.BDH(config)
        n_params = sum(p.numel() for p in model.parameters())
        log(f"  training the {DEMO_PRESET} preset ({n_params:,} parameters, n = {config.n} neurons, "
            f"L = {config.n_layer}) on the recall task for {tcfg.steps} steps ...")
        summary = train(model, data, tcfg, work, progress=False, log=lambda s: log("    " + s))
        val = summary["val"] or {}
        meta = dict(steps=tcfg.steps, val_accuracy=val.get("accuracy"), val_loss=val.get("loss"),
                    chance=data.chance, train_seconds=time.perf_counter() - t0)
        with open(os.path.join(work, "done.json"), "w") as f:
            json.dump(meta, f)
        os.makedirs(os.path.dirname(root), exist_ok=True)
        if os.path.isdir(root):
            import shutil
            shutil.rmtree(root)
        os.replace(work, root)                                   # the cache entry appears whole or not at all
        info.update(meta)
        model = bdh_gpu.load(root)
    info["seconds"] = time.perf_counter() - t0
    return model.double().eval(), info


def recall_prompt(n_pairs: int = 8, seed: int = 7):
    """A fresh recall episode: K pair bytes, ':', then each key queried once (answers left for the model).
    Returns (ids of the prompt with the true answers filled in, expected answer per position or None)."""
    import torch

    from bdh_gpu.data import RECALL_KEYS, RECALL_PAIR_BASE, RECALL_SEP, RECALL_VALUES
    g = torch.Generator().manual_seed(seed)
    keys = torch.randperm(len(RECALL_KEYS), generator=g)[:n_pairs].tolist()
    vals = torch.randint(len(RECALL_VALUES), (n_pairs,), generator=g).tolist()
    ids = [RECALL_PAIR_BASE + len(RECALL_VALUES) * k + v for k, v in zip(keys, vals)] + [RECALL_SEP]
    expect = [None] * len(ids)
    for i in torch.randperm(n_pairs, generator=g).tolist():
        ids.append(RECALL_KEYS[keys[i]])
        expect.append(None)
        ids.append(RECALL_VALUES[vals[i]])
        expect.append(RECALL_VALUES[vals[i]])
    return ids, expect


def byte_label(b: int) -> str:
    """A readable label of a byte: recall pair bytes as 'k=v', printable ASCII as itself, else hex."""
    from bdh_gpu.data import RECALL_KEYS, RECALL_PAIR_BASE, RECALL_VALUES
    nv = len(RECALL_VALUES)
    if RECALL_PAIR_BASE <= b < RECALL_PAIR_BASE + nv * len(RECALL_KEYS):
        k, v = divmod(b - RECALL_PAIR_BASE, nv)
        return f"{chr(RECALL_KEYS[k])}={chr(RECALL_VALUES[v])}"
    if 32 < b < 127:
        return chr(b)
    return {32: "_", 10: "\\n"}.get(b, f"x{b:02x}")


# ---- stepping the graph ------------------------------------------------------------------------------------------

@dataclass
class GraphWalk:
    """What the graph did on a prompt, per token t: logits (T, V), x, y (T, L+1, n) (official: layer 0 unused),
    sigma_delta[t] = [(layer, synapse index, pre, post, old, new)] largest |change| first, sigma_trace
    {(layer, synapse): (T,) values} of the synapses that changed most overall."""
    compiled: Compiled
    ids: list
    logits: np.ndarray
    x: np.ndarray
    y: np.ndarray
    sigma_delta: list = field(default_factory=list)
    sigma_trace: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def predictions(self):
        return self.logits.argmax(-1)


def synapse_name(compiled: Compiled, sigma: str, e: int) -> tuple[str, str]:
    """(pre, post) names of edge e of the group carrying `sigma`: 'neuron i' or 'pop[j]' (official: 'att[h,a]')."""
    net = compiled.network
    g = net.groups[net.edge_vars[sigma].group]
    i, j = int(g.source[e]), int(g.indices[e])

    def name(pop, k):
        if pop == "neurons":
            return f"neuron {k}"
        if pop == "att":
            d = compiled.weights.d
            return f"att[h{k // d},{k % d}]"
        return f"{pop}[{k}]"
    return name(g.pre, i), name(g.post, j)


def graph_walk(model, ids, compiled: Compiled | None = None, backend: str = "numba", top: int = 5,
               track: int = 6) -> GraphWalk:
    """Feed `ids` through the compiled graph of `model` one token at a time; per token the prediction (argmax of
    the output nodes' logits), X and Y per layer, and the synapses whose sigma changed most."""
    from .run import TensorRunner
    t0 = time.perf_counter()
    if compiled is None:
        compiled = compile_model(TensorRunner(model).model)
    runner = GraphRunner(compiled, backend)
    names = compiled.network.sigma_names
    prev = {k: v.copy() for k, v in runner.sim.state.edges.items() if k in names}
    logits, xs, ys, deltas, history = [], [], [], [], []
    for out in runner.feed(list(ids)):
        logits.append(out["logits"]), xs.append(out["x"]), ys.append(out["y"])
        now = {k: v.copy() for k, v in runner.sim.state.edges.items() if k in names}
        rows = []
        for l, k in enumerate(names):
            dlt = np.abs(now[k] - prev[k])
            for e in np.argsort(-dlt, kind="stable")[:top]:
                if dlt[e] > 0:
                    rows.append((l + 1, int(e), *synapse_name(compiled, k, e), float(prev[k][e]), float(now[k][e])))
        rows.sort(key=lambda r: -abs(r[5] - r[4]))
        deltas.append(rows[:top])
        history.append(now)
        prev = now
    trace = {}
    for l, k in enumerate(names):
        series = np.stack([h[k] for h in history])                                # (T, nnz)
        change = np.abs(np.diff(np.vstack([np.zeros_like(series[:1]), series]), axis=0)).sum(0)
        for e in np.argsort(-change, kind="stable")[:max(1, track // len(names))]:
            trace[(l + 1, int(e))] = series[:, e]
    return GraphWalk(compiled, list(ids), np.stack(logits), np.stack(xs), np.stack(ys), deltas, trace,
                     time.perf_counter() - t0)


# ---- the report --------------------------------------------------------------------------------------------------

def _img(path: str) -> str:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    return f'<figure><img alt="{html.escape(os.path.basename(path))}" src="data:image/png;base64,{data}">' \
           f'<figcaption>{html.escape(os.path.basename(path))}</figcaption></figure>'


def write_html(path: str, title: str, blocks: list) -> str:
    """A self-contained page: blocks are ("h2", text) | ("p", text) | ("pre", text) | ("img", png path) |
    ("table", (header, rows)). PNGs are embedded as base64. Written atomically."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
           "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}"
           "pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:12px}figure{display:inline-block;margin:.5em}"
           ".ok{color:#070;font-weight:bold}.bad{color:#b00;font-weight:bold}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    for kind, val in blocks:
        if kind == "img":
            out.append(_img(val))
        elif kind == "table":
            header, rows = val
            out.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows]
            out.append("</table>")
        elif kind == "html":
            out.append(val)
        else:
            out.append(f"<{kind}>{html.escape(str(val))}</{kind}>")
    out.append("</body></html>")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    os.replace(tmp, path)
    return path


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


# ---- `bdh analyze`: the measurements of the paper's Sec. 5-6 on any model ----------------------------------------

PAPER = {  # reference section 6
    "sparsity_y": "about 5% (4.0-7.5% while memorising, about 2.5% while repeating; n = 65536, L = 4, layer 2)",
    "graph": "G_x = D_x E per head, beta = 1.2: 46,820 directed edges on 8192 neurons; heavy right tail",
    "modularity": "high, peak near beta = 1.0; G(n,m) and random low-rank baselines about 0",
    "synapse": "U = 2368 of 2500 (50 vs 50 sentences), p < 1e-14",
}


def _lines(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        out = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
    if len(out) < 2:
        raise ValueError(f"{path}: expected at least 2 non-empty lines (one sentence per line), got {len(out)}")
    return out


def _sigma_layer(model, layer):
    from bdh_gpu.analysis import layer_names
    names = layer_names(model)
    ok = [l for l in names if l >= 1 and l - 1 in names]
    if layer is None:
        return ok[len(ok) // 2] if ok else None
    if layer not in ok:
        raise ValueError(f"--sigma-layer: expected one of {ok} for the {model.config.variant} variant, got {layer}")
    return layer


def analyze_model(model, ids, out_dir: str | None = None, *, betas=None,
                  density=(0.001, 0.002, 0.005, 0.01, 0.02), heads=(0,), seeds: int = 5, sigma_layer=None,
                  sigma_neurons: int = 2048, concept=None, contrast=None, candidates: int = 48,
                  log=print) -> dict:
    """Reference section 6 on `model` over the token ids `ids`: sparsity per layer; G_x = D_x E and G_y = D_y E
    per head thresholded at beta (degrees, tail exponents, Louvain modularity vs beta beside G(n,m) and random
    low-rank); the sigma graph (positive part, thresholded) after the text; optionally the monosemantic-synapse
    finder over concept vs contrast sentences (lists of byte strings). Writes figures + report.html + analysis.json
    into out_dir when given. Returns the numbers."""
    import torch

    from bdh_gpu.analysis import layer_names, neuron_graph, sigma_synapses, sparsity, top_active, weight_scales
    from bdh_graph import analysis as GA

    C = model.config
    model = model.eval()
    figs, res = [], dict(config=C.to_dict(), tokens=len(ids), paper=PAPER)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    with torch.no_grad():
        tr = model.trace(torch.as_tensor(list(ids), dtype=torch.long))
    sp_ = sparsity(model, None, trace=tr)
    res["sparsity"] = sp_
    log(f"sparsity over {len(ids)} tokens (fraction of n = {C.n} neurons active), per layer {sp_['layers']}:\n"
        f"  x > 0: {' '.join(f'{v:.4f}' for v in sp_['x'])}\n  y > 0: {' '.join(f'{v:.4f}' for v in sp_['y'])}"
        f"   (paper: y {PAPER['sparsity_y']})")
    names = layer_names(model)
    if out_dir:
        figs.append(GA.plot_bars(os.path.join(out_dir, "sparsity_per_layer.png"), {"x > 0": sp_["x"], "y > 0": sp_["y"]},
                                 [str(l) for l in names], title=f"active fraction per layer ({len(ids)} tokens)",
                                 ylabel="fraction of neurons"))
        Y = tr["y"][:, :min(len(ids), 96)].permute(1, 0, 2).reshape(min(len(ids), 96), -1).double().numpy()
        idx = top_active(Y, 96)
        figs.append(GA.plot_raster(os.path.join(out_dir, "activity_raster.png"), Y[:, idx],
                                   [byte_label(b) for b in list(ids)[:96]],
                                   title="y > 0 of the 96 most active (layer, neuron), first tokens",
                                   ylabel="(layer, neuron) rank"))

    # weight graphs
    res["graphs"] = []
    for h in heads:
        for which in ("x", "y"):
            G = neuron_graph(model, which, h)
            bs = list(betas) if betas is not None else betas_for_density(G, density)
            entry = dict(graph=f"G_{which}", head=h, betas=bs, std=float(G.std()), max=float(G.max()))
            mid = bs[len(bs) // 2]
            A = GA.threshold_graph(G, mid)
            k_in, k_out = GA.degrees(A)
            fi, fo = GA.tail_exponent(k_in), GA.tail_exponent(k_out)
            entry.update(beta_degrees=mid, edges=int(A.nnz), tail_in=fi.to_dict() if fi else None,
                         tail_out=fo.to_dict() if fo else None, max_in=int(k_in.max()), max_out=int(k_out.max()),
                         zero_in=float((k_in == 0).mean()), zero_out=float((k_out == 0).mean()))
            if which == "x":
                s = weight_scales(model, "x")
                R = GA.random_low_rank(G.shape[0], s["d"], s["std_D"], s["std_E"], seed=1 + h, mean_D=s["mean_D"],
                                       mean_E=s["mean_E"])
                entry["modularity"] = GA.modularity_vs_beta(G, bs, baselines={"low-rank": R}, seeds=seeds)
                if out_dir:
                    figs.append(GA.plot_modularity(os.path.join(out_dir, f"modularity_vs_beta_h{h}.png"),
                                                   entry["modularity"], title=f"G_x = D_x E, head {h}"))
            if out_dir:
                figs.append(GA.plot_degree_distribution(
                    os.path.join(out_dir, f"degrees_G{which}_h{h}.png"), {"in-degree": k_in, "out-degree": k_out},
                    title=f"G_{which} = D_{which} E, head {h}, beta = {mid:.3g} ({A.nnz} edges)"))
            res["graphs"].append(entry)
            log(_graph_line(entry))

    # the sigma graph after the text
    l = _sigma_layer(model, sigma_layer)
    if l is not None:
        yprev = tr["y"][names.index(l - 1)].double().numpy()
        xl = tr["x"][names.index(l)].double().numpy()
        rows, cols = top_active(yprev, sigma_neurons), top_active(xl, sigma_neurons)
        S = sigma_synapses(model, tr, l, rows, cols)
        both = np.intersect1d(rows, cols)                          # a square graph on neurons active on both ends
        ri, ci = np.searchsorted(rows, both), np.searchsorted(cols, both)
        Sq = np.maximum(S[np.ix_(ri, ci)], 0.0)                   # positive part; Sq[a, b]: edge b -> a
        pos_vals = Sq[Sq > 0]
        beta_s = float(np.quantile(pos_vals, 0.9)) if pos_vals.size else 0.0
        A = GA.threshold_graph(Sq, beta_s) if pos_vals.size else GA.threshold_graph(Sq, 1.0)
        k_in, k_out = GA.degrees(A)
        fi, fo = GA.tail_exponent(k_in), GA.tail_exponent(k_out)
        res["sigma"] = dict(layer=l, neurons=int(len(both)), beta=beta_s, edges=int(A.nnz),
                            positive_fraction=float((S > 0).mean()), tail_in=fi.to_dict() if fi else None,
                            tail_out=fo.to_dict() if fo else None)
        log(f"sigma_{l} after the text, on the {len(both)} neurons active on both ends, positive part >= "
            f"{beta_s:.3g} (its 90th percentile): {A.nnz} edges; tail exponent in "
            f"{_alpha_s(fi)}, out {_alpha_s(fo)}")
        if out_dir:
            figs.append(GA.plot_degree_distribution(os.path.join(out_dir, "degrees_sigma.png"),
                                                    {"in-degree": k_in, "out-degree": k_out},
                                                    title=f"sigma_{l} (positive part >= {beta_s:.3g})"))
            T = min(len(ids), 128)
            ch = np.abs(np.diff(np.stack([sigma_synapses(model, tr, l, rows[:32], cols[:32], t=t).ravel()
                                          for t in range(T)]), axis=0)).sum(0)
            pick = np.argsort(-ch)[:6]
            series = {}
            for p in pick:
                a, b = rows[p // 32], cols[p % 32]
                series[f"{b}->{a}"] = [float(sigma_synapses(model, tr, l, [a], [b], t=t)[0, 0]) for t in range(T)]
            figs.append(GA.plot_series(os.path.join(out_dir, "sigma_synapses.png"), series,
                                       [byte_label(b) for b in list(ids)[:T]],
                                       title=f"sigma_{l}(i->j) over the text (most changing)", ylabel="sigma"))

    # monosemantic synapses
    if concept is not None and contrast is not None and l is not None:
        res["synapses"] = find_synapses(model, concept, contrast, l, candidates)
        best = res["synapses"]["top"][:3]
        log(f"monosemantic-synapse search, sigma_{l}, {len(concept)} concept vs {len(contrast)} contrast sentences, "
            f"{res['synapses']['candidates']} candidate synapses: best " + "; ".join(
                f"{s['synapse']} U = {s['U']:.0f} of {s['U_max']} (p = {s['p']:.2g})" for s in best))
    res["seconds"] = time.perf_counter() - t0
    if out_dir:
        with open(os.path.join(out_dir, "analysis.json"), "w") as f:
            json.dump(res, f, indent=1, default=float)
        blocks = [("pre", json.dumps({k: v for k, v in res.items() if k not in ("graphs",)}, indent=1,
                                     default=float)[:20000]),
                  ("h2", "Weight graphs"), ("pre", "\n".join(_graph_line(e) for e in res["graphs"])),
                  ("h2", "Figures"), *[("img", p) for p in figs]]
        res["report"] = write_html(os.path.join(out_dir, "report.html"), "bdh analyze", blocks)
        res["figures"] = figs
    return res


def _alpha_s(fit):
    return "-" if fit is None else f"{fit.alpha:.2f} (k >= {fit.k_min}, {fit.n_tail} nodes)"


def _graph_line(e) -> str:
    t = lambda f: "-" if f is None else f"{f['alpha']:.2f} (k >= {f['k_min']})"
    s = (f"{e['graph']} head {e['head']}: entries std {e['std']:.3g}, max {e['max']:.3g}; at beta = "
         f"{e['beta_degrees']:.3g}: {e['edges']} edges, max in/out degree {e['max_in']}/{e['max_out']}, tail exponent "
         f"in {t(e['tail_in'])}, out {t(e['tail_out'])}")
    for r in e.get("modularity", []):
        s += (f"\n    beta {r['beta']:.4g}: {r['edges']} edges, modularity {_f(r['modularity'])} "
              f"(G(n,m) {_f(r.get('G(n,m)'))}; random low-rank {_f(r.get('low-rank'))} with {r.get('low-rank_edges')} "
              f"edges at this beta, {_f(r.get('low-rank (same m)'))} with the same edge count)")
    return s


def _f(v):
    return "-" if v is None else f"{v:.3f}"


def find_synapses(model, concept, contrast, layer: int, candidates: int = 48, top: int = 10) -> dict:
    """Monosemantic-synapse search (paper Sec. 6.3): sigma_layer(i -> j) after each sentence (fresh state per
    sentence), over the synapses between the `candidates` most active value neurons (y_{l-1}) and key neurons
    (x_l) of all sentences; ranked by one-sided Mann-Whitney U (concept > contrast)."""
    import torch

    from bdh_gpu.analysis import layer_names, sigma_synapses, top_active
    from bdh_graph.analysis import mann_whitney_rank
    names = layer_names(model)
    traces = []
    with torch.no_grad():
        for s in list(concept) + list(contrast):
            ids = list(s) if isinstance(s, (bytes, bytearray)) else list(str(s).encode())
            traces.append(model.trace(torch.tensor(ids, dtype=torch.long)))
    ys = np.concatenate([t["y"][names.index(layer - 1)].double().numpy() for t in traces])
    xs = np.concatenate([t["x"][names.index(layer)].double().numpy() for t in traces])
    rows, cols = top_active(ys, candidates), top_active(xs, candidates)
    vals = np.stack([sigma_synapses(model, t, layer, rows, cols).ravel() for t in traces])   # (m, R*C)
    m1 = len(concept)
    ranked = mann_whitney_rank(vals[:m1], vals[m1:], top=top)
    out = []
    for r in ranked:
        a, b = int(rows[r.index // len(cols)]), int(cols[r.index % len(cols)])
        out.append(dict(synapse=f"{b}->{a}", key=b, value=a, **r.to_dict()))
    return dict(layer=layer, candidates=int(vals.shape[1]), n_concept=m1, n_contrast=len(contrast), top=out)
