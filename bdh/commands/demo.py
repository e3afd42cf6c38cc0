"""`bdh demo`: train (or reuse) a tiny model on the recall task, compile it to its neuron graph, step a prompt
through the graph token by token, verify graph == tensor, and write an HTML report with figures.

The pipeline lives in `bdh.teach` (demo, figures, html); this module only prints.
"""
from __future__ import annotations

import os
import time


def add_parser(subparsers):
    p = subparsers.add_parser(
        "demo", help="train a tiny model, run it as a neuron graph, check it equals the tensor model, report",
        description="The main job (make demo): train the tiny preset on the built-in recall task (cached under "
                    "$BDH_CACHE or ~/.cache/bdh), compile it to its neuron graph, step a recall prompt through "
                    "the graph simulator token by token, verify graph/tensor equivalence, write report.html.")
    p.add_argument("--out", default=os.path.join("runs", "demo"), help="report directory (default runs/demo)")
    p.add_argument("--fast", action="store_true", help="seconds instead of minutes: 4 training steps, short prompt")
    p.add_argument("--no-cache", action="store_true", help="train again even if a cached model exists")
    p.add_argument("--backend", default="numba", help="graph backend: numba (default) | numpy | pyg")
    p.add_argument("--pairs", type=int, default=None, help="key-value pairs in the prompt (default 8; --fast 3)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import numpy as np

    from bdh.cli import UsageError

    if args.backend not in ("numba", "numpy", "pyg"):
        raise UsageError(f"--backend: expected numba, numpy or pyg, got {args.backend!r}")
    pairs = args.pairs if args.pairs is not None else (3 if args.fast else 8)
    if not 1 <= pairs <= 16:
        raise UsageError(f"--pairs: expected 1..16, got {pairs}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out}: exists and is not a directory")
    os.makedirs(args.out, exist_ok=True)

    from equivalence import compare, compile_model
    from bdh.teach.demo import byte_label, demo_model, graph_walk, recall_prompt
    from bdh.teach.figures import captioned, fit_text, walk_figures, weight_graph_figures
    from bdh.teach.html import write_html
    from bdh.teach.view import view_page
    from bdh.teach.words import notation_html

    t_start = time.perf_counter()
    print("1. the model")
    model, info = demo_model(fast=args.fast, use_cache=not args.no_cache)
    times = {"model": time.perf_counter() - t_start}
    acc = info.get("val_accuracy")
    if acc is not None:
        print(f"   held-out recall accuracy {acc:.3f} (chance {info.get('chance', 0):.3f})")

    print("2. compile it to a neuron graph")
    t0 = time.perf_counter()
    compiled = compile_model(model)
    print("   " + compiled.summary())
    print(f"   ({time.perf_counter() - t0:.1f} s)")

    ids, expect = recall_prompt(pairs, seed=7)
    labels = [byte_label(b) for b in ids]
    print(f"3. step the prompt through the graph ({args.backend} backend), one token = "
          f"{len(compiled.kernel.rounds)} rounds: {' '.join(labels)}")
    walk = graph_walk(model, ids, compiled, backend=args.backend)
    times["graph walk"] = walk.seconds
    import torch
    with torch.no_grad():
        tensor_pred = model(torch.tensor([ids]))[0].argmax(-1).tolist()
    L = walk.y.shape[1] - 1
    rows, right, asked = [], 0, 0
    print(f"   {'t':>3} {'token':>6} {'graph next':>10} {'tensor':>6}  active y (layer {L})  top sigma change")
    for t, b in enumerate(ids):
        pred = int(walk.predictions[t])
        nxt = expect[t + 1] if t + 1 < len(ids) else None
        mark = ""
        if nxt is not None:
            asked += 1
            right += pred == nxt
            mark = " ok" if pred == nxt else f" (want {byte_label(nxt)})"
        act = np.nonzero(walk.y[t, L])[0]
        shown = ",".join(map(str, act[:6])) + ("…" if len(act) > 6 else "")
        top = walk.sigma_delta[t][0] if walk.sigma_delta[t] else None
        syn = f"L{top[0]} {top[2]}->{top[3]}: {top[4]:+.3g} -> {top[5]:+.3g}" if top else "-"
        print(f"   {t:>3} {labels[t]:>6} {byte_label(pred):>10} {byte_label(tensor_pred[t]):>6}  "
              f"{len(act):>4} [{shown}]{mark}  {syn}")
        rows.append((t, labels[t], byte_label(pred) + mark, byte_label(tensor_pred[t]), len(act), shown, syn))
    print(f"   recalled {right}/{asked} answers from the synaptic state")

    print("4. verify graph == tensor (float64)")
    t0 = time.perf_counter()
    rep = compare(model, compiled, ids, backend=args.backend)
    times["verify"] = time.perf_counter() - t0
    for line in str(rep).splitlines():
        print("   " + line)

    print("5. figures, the interactive viewer and the report")
    t0 = time.perf_counter()
    figs = walk_figures(walk, args.out)
    wfigs, wnum = weight_graph_figures(model, args.out, seeds=1 if args.fast else 5,
                                       density=(0.005, 0.01, 0.02) if args.fast else (0.002, 0.005, 0.01, 0.02, 0.05))
    view_path, _ = view_page(compiled, ids, os.path.join(args.out, "view.html"), backend=args.backend)
    print(f"   {view_path}: the prompt sub-round by sub-round, click neurons and synapses")
    verdict = "OK" if rep.ok else "MISMATCH"
    layers = list(range(1, walk.y.shape[1])) if compiled.variant == "official" else list(range(walk.y.shape[1]))
    sy = ", ".join(f"layer {l}: {float((walk.y[:, l] > 0).mean()):.1%}" for l in layers)
    ours = {"sparsity_per_layer.png": f"y &gt; 0 in {sy}.",
            "degree_distribution.png": f"{wnum['edges']} edges on {model.config.N} neurons at &beta; = "
                                       f"{wnum['beta_degrees']:.3g}; in-degree tail {fit_text(wnum['tail_in'])}, "
                                       f"out-degree tail {fit_text(wnum['tail_out'])}.",
            "modularity_vs_beta.png": "peak modularity " + _f(max((r["modularity"] for r in wnum["rows"]
                                                                  if r["modularity"] is not None), default=None)) + "."}
    blocks = [
        ("p", "What this page shows: a small BDH model (the tensor model of bdh_gpu) was compiled into a graph of "
              "neurons and helper nodes connected by synapses, and a recall prompt was fed to that graph one byte "
              "at a time by the graph simulator, which runs only local rules (each node reads its own variables "
              "and what arrives over its synapses). The graph's outputs were then checked against the tensor "
              "model's in float64. The model has to answer from what the prompt stored in its synapses."),
        ("html", f"<p><b><a href='view.html'>Open the interactive viewer (view.html)</a></b>: the same prompt "
                 "sub-round by sub-round, neurons coloured by activity, click a neuron for its synapses and their "
                 "σ over the tokens. <code>bdh view MODEL --serve</code> lets you type your own prompt.</p>"),
        ("p", f"Model: the {info['preset']} preset (n = {model.config.n} neurons, L = {model.config.n_layer} "
              f"layers, d = {model.config.d}) trained {info['steps']} steps on the recall task "
              f"({'cached' if info['cached'] else 'trained now'}: {info['dir']}); held-out recall accuracy "
              f"{'-' if acc is None else f'{acc:.3f}'} (chance {info.get('chance', 0):.3f}: guessing one of the "
              f"values)."),
        ("h2", "Notation"), ("html", notation_html()),
        ("h2", "The graph"),
        ("p", "The first line counts the nodes per population and the synapses; then the kernel: per layer, the "
              "rounds, each a communication sub-round (left of |, rules that send values along synapses) and a "
              "computation sub-round (right of |, rules local to a node), in the notation above."),
        ("pre", compiled.summary() + "\n\n" + str(compiled.kernel)),
        ("h2", "Does the graph compute what the tensor model computes? " + verdict),
        ("html", f"<p class='{'ok' if rep.ok else 'bad'}'>graph/tensor equivalence: {verdict} "
                 f"(max relative error {rep.max_rel:.2e}, tolerance {rep.rtol:g})</p>"
                 "<p>Per quantity: the largest absolute and relative difference between graph and tensor model, "
                 "and where it occurs as (token, layer, index): logits = the next-byte scores, x and y = the "
                 "neuron activities, v = the residual stream (official models), rho = the attention state "
                 "E σ.</p>"),
        ("pre", str(rep)),
        ("h2", "Token by token (graph simulator)"),
        ("p", "One row per token of the prompt: the byte fed in, the byte the graph's output nodes score highest "
              "(with the expected answer where the prompt asks a question), the tensor model's choice, how many "
              "neurons have y > 0 in the last layer and the first few of them, and the synapse whose σ changed "
              "most on that token, written 'L2 neuron 431->att[h1,9]: old -> new' (layer 2, from neuron 431 to "
              "slot 9 of head 1's attention hubs)."),
        ("table", (("t", "token fed", "graph predicts next", "tensor predicts next", f"active neurons (y > 0, "
                    f"layer {L})", "which", "largest σ change"), rows)),
        ("p", f"Recalled {right} of {asked} answers from the synaptic state."),
        ("h2", "Figures"), *[("img", c) for c in captioned(figs + wfigs, ours)],
        ("p", f"Weight graph G_x = D_x E of head {wnum['head']} at β = {wnum['beta_degrees']:.3g}: "
              f"{wnum['edges']} edges; in-degree tail {fit_text(wnum['tail_in'])}; out-degree tail "
              f"{fit_text(wnum['tail_out'])}. Modularity against β, the model beside the two baselines "
              "(paper: model high, baselines about 0):"),
        ("table", (("threshold β", "edges", "modularity of G_x", "G(n,m): random, same n and m",
                    "random low-rank, same d"),
                   [(f"{r['beta']:.3g}", r["edges"], _f(r["modularity"]), _f(r.get("G(n,m)")), _f(r.get("low-rank")))
                    for r in wnum["rows"]])),
    ]
    path = write_html(os.path.join(args.out, "report.html"), "bdh demo: a BDH model as a neuron graph", blocks)
    times["report"] = time.perf_counter() - t0
    print(f"   {path} ({len(figs + wfigs)} figures)")
    print(f"done in {time.perf_counter() - t_start:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in times.items())}): "
          f"equivalence {verdict}")
    return 0 if rep.ok else 1


def _f(v):
    return "-" if v is None else f"{v:.3f}"
