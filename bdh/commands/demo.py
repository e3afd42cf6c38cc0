"""`bdh demo`: the paper's story on a trained model, in two parts, each trained once (cached), compiled to its
neuron graph, stepped token by token through the graph simulator, verified against the tensor model, reported.

Part 1: a Normfree model (Eq. 7, ALiBi damping) as the Table 1(b) graph with neuron -> neuron synapses (Obs. 4):
which synapses potentiate when each fact is heard, and the ablation that proves they hold it. Part 2: the released
LayerNorm model (official) as a graph with hub populations and LayerNorm from local rounds.

The pipeline lives in `bdh.teach` (demo, memory, figures, html, view); this module only prints.
"""

from __future__ import annotations

import os
import time

from bdh.options import add_backend


def add_parser(subparsers):
    p = subparsers.add_parser(
        "demo",
        help="train a tiny model, run it as a neuron graph, check it equals the tensor model, report",
        description="The main job (make demo): train the tiny preset on the built-in recall task (cached under "
        "$BDH_CACHE or ~/.cache/bdh), compile it to its neuron graph, step a recall prompt through "
        "the graph simulator token by token, verify graph/tensor equivalence, write report.html.",
    )
    p.add_argument("--out", default=os.path.join("runs", "demo"), help="report directory (default runs/demo)")
    p.add_argument("--fast", action="store_true", help="seconds instead of minutes: 4 training steps, short prompt")
    p.add_argument("--no-cache", action="store_true", help="train again even if a cached model exists")
    add_backend(p)
    p.add_argument("--pairs", type=int, default=None, help="key-value pairs in the prompt (default 8; --fast 3)")
    p.add_argument(
        "--part",
        default="both",
        choices=("both", "normfree", "official"),
        help="normfree: part 1 only (the local graph with neuron -> neuron synapses and the memory "
        "ablation); official: part 2 only (the released LayerNorm model); both (default)",
    )
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from bdh.errors import InputError

    pairs = args.pairs if args.pairs is not None else (3 if args.fast else 8)
    if not 1 <= pairs <= 16:
        raise InputError(f"--pairs: expected 1..16, got {pairs}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise InputError(f"--out {args.out}: exists and is not a directory")
    os.makedirs(args.out, exist_ok=True)
    from bdh.teach.html import write_html
    from bdh.teach.words import notation_html

    t_start = time.perf_counter()
    parts = ("normfree", "official") if args.part == "both" else (args.part,)
    blocks = [
        (
            "p",
            "What this page shows: a small BDH model (the tensor model of bdh_gpu) was compiled into a graph of "
            "neurons (and, for the LayerNorm model, helper nodes) connected by synapses, and a recall prompt was "
            "fed to that graph one byte at a time by the graph simulator, which runs only local rules: each "
            "node reads its own variables and what arrives over its synapses. The graph's outputs were then "
            "checked against the tensor model's in float64. The prompt first lists key=value facts, then asks "
            "for each key; the model has to answer from what the facts wrote into its synapses.",
        ),
        ("h2", "Notation"),
        ("html", notation_html()),
    ]
    ok, times = True, {}
    for k, part in enumerate(parts, start=1):
        out = args.out if part == "normfree" or len(parts) == 1 else os.path.join(args.out, part)
        os.makedirs(out, exist_ok=True)
        part_ok, part_blocks, part_times = _part(k, part, args, pairs, out, rel=os.path.relpath(out, args.out))
        ok &= part_ok
        blocks += part_blocks
        times.update({f"{part} {name}": v for name, v in part_times.items()})
    path = write_html(os.path.join(args.out, "report.html"), "bdh demo: a trained BDH model as a neuron graph", blocks)
    print(f"report: {path}")
    print(
        f"done in {time.perf_counter() - t_start:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in times.items())}): "
        f"equivalence {'OK' if ok else 'MISMATCH'}"
    )
    return 0 if ok else 1


def _part(k, part, args, pairs, out, rel):
    """One part of the demo: (equivalence ok, report blocks, timings)."""
    import numpy as np

    from bdh.teach.demo import byte_label, demo_model, graph_walk, prompt_facts, recall_prompt
    from bdh.teach.figures import captioned, fit_text, walk_figures, weight_graph_figures
    from bdh.teach.view import view_page
    from equivalence import compare, compile_model

    title = {
        "normfree": "a Normfree model as the local graph of Table 1(b), neuron -> neuron synapses",
        "official": "the released LayerNorm model as a graph with hub populations",
    }[part]
    print(f"part {k}: {title}")
    t_start = time.perf_counter()
    print(f"{k}.1 the model")
    model, info = demo_model(fast=args.fast, use_cache=not args.no_cache, part=part)
    times = {"model": time.perf_counter() - t_start}
    acc = info.get("val_accuracy")
    if acc is not None:
        print(f"   held-out recall accuracy {acc:.3f} (chance {info.get('chance', 0):.3f})")

    print(f"{k}.2 compile it to a neuron graph")
    t0 = time.perf_counter()
    compiled = compile_model(model)
    print("   " + compiled.summary())
    print(f"   ({time.perf_counter() - t0:.1f} s)")

    ids, expect = recall_prompt(pairs, seed=7)
    labels = [byte_label(b) for b in ids]
    print(
        f"{k}.3 step the prompt through the graph ({args.backend} backend), one token = "
        f"{len(compiled.kernel.rounds)} rounds: {' '.join(labels)}"
    )
    walk = graph_walk(model, ids, compiled, backend=args.backend, progress=True)
    times["graph walk"] = walk.seconds
    import torch

    with torch.no_grad():
        tensor_pred = model(torch.tensor([ids]))[0].argmax(-1).tolist()
    L = walk.y.shape[1] - 1
    rows, right, asked = [], 0, 0
    print(f"   {'t':>3} {'token':>6} {'graph next':>10} {'tensor':>6}  active y (layer {L})  top sigma change")
    for t in range(len(ids)):
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
        print(
            f"   {t:>3} {labels[t]:>6} {byte_label(pred):>10} {byte_label(tensor_pred[t]):>6}  "
            f"{len(act):>4} [{shown}]{mark}  {syn}"
        )
        rows.append((t, labels[t], byte_label(pred) + mark, byte_label(tensor_pred[t]), len(act), shown, syn))
    print(f"   recalled {right}/{asked} answers from the synaptic state")

    print(f"{k}.4 verify graph == tensor (float64)")
    t0 = time.perf_counter()
    rep = compare(model, compiled, ids, backend=args.backend, progress=True)
    times["verify"] = time.perf_counter() - t0
    for line in str(rep).splitlines():
        print("   " + line)

    memory_blocks, mfigs = [], []
    if compiled.name == "dense":
        print(f"{k}.5 which synapses hold each fact, and the ablation that proves it")
        t0 = time.perf_counter()
        from bdh.teach.memory import CARRY, ablate, memory_figures, memory_synapses

        facts, queries = prompt_facts(ids, pairs)
        mems = memory_synapses(compiled, ids, walk.x, walk.y, facts, queries)
        sig = ablate(compiled, ids, mems, split=pairs, backend=args.backend)
        mfigs = memory_figures(mems, sig, labels, out)
        n_syn = sum(
            compiled.network.groups[compiled.network.edge_vars[s].group].nnz for s in compiled.network.sigma_names
        )
        mrows = []
        for m in mems:
            top = m.top[0] if m.top else None
            what = f"L{top[0]} neuron {top[1]} -> neuron {top[2]}: sigma += {top[3]:.3g}" if top else "-"
            line = (
                f"   {m.label}: heard at t={m.pos}, asked at t={m.query}; {m.n_synapses} synapses "
                f"({m.n_synapses / n_syn:.2%} of {n_syn:,}) carry {CARRY:.0%} of its read; strongest {what}; "
                f"p(right answer) {m.p_before:.3f} -> {m.p_after:.3f} with them zeroed; other questions "
                f"right {m.others_before}/{m.others} -> {m.others_after}/{m.others}"
            )
            print(line)
            mrows.append(
                (
                    m.label,
                    m.pos,
                    m.query,
                    f"{m.n_synapses} ({m.n_synapses / n_syn:.2%})",
                    what,
                    f"{m.p_before:.3f}",
                    f"{m.p_after:.3f}",
                    f"{m.others_before}/{m.others}",
                    f"{m.others_after}/{m.others}",
                )
            )
        broken = sum(m.broken for m in mems)
        kept = sum(m.others_kept for m in mems)
        counts = sorted(m.n_synapses for m in mems) or [0]
        print(
            f"   {broken} of {len(mems)} recalls break when their own synapses are zeroed; the other questions "
            f"keep their answers in {kept} of {len(mems)} ablations"
        )
        times["memory"] = time.perf_counter() - t0
        memory_blocks = [
            ("h3", "Which synapses hold each fact (the paper's working memory, Sec. 6.3)"),
            (
                "p",
                "Every synapse sigma(i, j) from neuron i to neuron j is written by the Hebbian rule X(i), Y(j) -> "
                "sigma(i, j): when a fact byte is heard, the synapses between the neurons it activates in two "
                "consecutive layers potentiate (sigma grows by x(i) y(j)), and ALiBi damping makes them forget "
                "slowly afterwards. When the key is asked, the read X(i), sigma(i, j) -> A(j) brings that write "
                "back. For each fact we rank the synapses by how much of that read they carry, keep only those "
                f"where this fact wrote more than all the other facts together, and take the fewest that carry "
                f"{CARRY:.0%} of it. Then, in the running graph, after the facts and before the questions, we zero "
                "exactly those synapses and ask every question again.",
            ),
            (
                "table",
                (
                    (
                        "fact",
                        "heard at t",
                        "asked at t",
                        "synapses that hold it (share of all)",
                        "strongest, and what the fact wrote",
                        "p(right answer), intact",
                        "... those synapses zeroed",
                        "other questions right, intact",
                        "... after",
                    ),
                    mrows,
                ),
            ),
            (
                "p",
                f"Result: {broken} of {len(mems)} recalls break when their own synapses are zeroed, while the "
                f"other questions keep exactly their answers in {kept} of {len(mems)} ablations. A fact is held "
                f"by {counts[0]} to {counts[-1]} of the model's {n_syn:,} synapses, and by those synapses (paper: "
                "a monosemantic synapse, one sigma(i, j) that separates a concept, Sec. 6.3).",
            ),
            *[
                ("img", c)
                for c in captioned(
                    mfigs,
                    {
                        "memory_synapses.png": "each fact's strongest synapse is 0 until its fact byte arrives, jumps "
                        "there, then decays slowly (ALiBi damping) until its question.",
                        "memory_ablation.png": f"{broken} of {len(mems)} answers collapse when their own synapses are "
                        "zeroed.",
                    },
                )
            ],
        ]

    print(f"{k}.6 figures, the interactive viewer")
    t0 = time.perf_counter()
    figs = walk_figures(walk, out)
    wfigs, wnum = weight_graph_figures(
        model,
        out,
        seeds=1 if args.fast else 5,
        density=(0.005, 0.01, 0.02) if args.fast else (0.002, 0.005, 0.01, 0.02, 0.05),
    )
    view_path, _ = view_page(compiled, ids, os.path.join(out, "view.html"), backend=args.backend)
    view_rel = os.path.normpath(os.path.join(rel, "view.html"))
    print(f"   {view_path}: the prompt sub-round by sub-round, click neurons and synapses")
    times["figures"] = time.perf_counter() - t0
    verdict = "OK" if rep.ok else "MISMATCH"
    layers = list(range(1, walk.y.shape[1])) if compiled.variant == "official" else list(range(walk.y.shape[1]))
    sy = ", ".join(f"layer {l}: {float((walk.y[:, l] > 0).mean()):.1%}" for l in layers)
    ours = {
        "sparsity_per_layer.png": f"y &gt; 0 in {sy}.",
        "degree_distribution.png": f"{wnum['edges']} edges on {model.config.N} neurons at &beta; = "
        f"{wnum['beta_degrees']:.3g}; in-degree tail {fit_text(wnum['tail_in'])}, "
        f"out-degree tail {fit_text(wnum['tail_out'])}.",
        "modularity_vs_beta.png": "peak modularity "
        + _f(max((r["modularity"] for r in wnum["rows"] if r["modularity"] is not None), default=None))
        + ".",
    }
    blocks = [
        ("h2", f"Part {k}: {title}"),
        (
            "html",
            f"<p><b><a href='{view_rel}'>Open the interactive viewer ({view_rel})</a></b>: the same prompt "
            "sub-round by sub-round, neurons coloured by activity, click a neuron for its synapses and their "
            "σ over the tokens. <code>bdh view MODEL --serve</code> lets you type your own prompt.</p>",
        ),
        (
            "p",
            f"Model: the {info['preset']} preset, variant {model.config.variant}, U = {model.config.U} "
            f"(n = {model.config.n} neurons, L = {model.config.n_layer} layers, d = {model.config.d}) trained "
            f"{info['steps']} steps on the recall task ({'cached' if info['cached'] else 'trained now'}: "
            f"{info['dir']}); held-out recall accuracy {'-' if acc is None else f'{acc:.3f}'} (chance "
            f"{info.get('chance', 0):.3f}: guessing one of the values).",
        ),
        ("h3", "The graph"),
        (
            "p",
            "The first line counts the nodes per population and the synapses; then the kernel: per layer, the "
            "rounds, each a communication sub-round (left of |, rules that send values along synapses) and a "
            "computation sub-round (right of |, rules local to a node), in the notation above. Every rule "
            "passed the locality check: it reads only its own node and what arrives over its edges.",
        ),
        ("pre", compiled.summary() + "\n\n" + str(compiled.kernel)),
        ("h3", "Does the graph compute what the tensor model computes? " + verdict),
        (
            "html",
            f"<p class='{'ok' if rep.ok else 'bad'}'>graph/tensor equivalence: {verdict} "
            f"(max relative error {rep.max_rel:.2e}, tolerance {rep.rtol:g})</p>"
            "<p>Per quantity: the largest absolute and relative difference between graph and tensor model, "
            "and where it occurs as (token, layer, index): logits = the next-byte scores, x and y = the "
            "neuron activities, v = the residual stream (official models), rho = the attention state "
            + (
                "(E σ of the neuron -> neuron synapses)"
                if model.config.variant == "normfree"
                else "(σ itself, held on the synapses from neurons to each head's attention hubs)"
            )
            + ".</p>",
        ),
        ("pre", str(rep)),
        ("h3", "Token by token (graph simulator)"),
        (
            "p",
            "One row per token of the prompt: the byte fed in, the byte the graph's output nodes score highest "
            "(with the expected answer where the prompt asks a question), the tensor model's choice, how many "
            "neurons have y > 0 in the last layer and the first few of them, and the synapse whose σ changed "
            "most on that token, written 'L2 neuron 431->neuron 12: old -> new' (layer 2, from neuron 431 to "
            "neuron 12; for the LayerNorm model the targets are attention hubs, 'att[h1,9]' = slot 9 of head "
            "1).",
        ),
        (
            "table",
            (
                (
                    "t",
                    "token fed",
                    "graph predicts next",
                    "tensor predicts next",
                    f"active neurons (y > 0, layer {L})",
                    "which",
                    "largest σ change",
                ),
                rows,
            ),
        ),
        ("p", f"Recalled {right} of {asked} answers from the synaptic state."),
        *memory_blocks,
        ("h3", "Figures"),
        *[("img", c) for c in captioned(figs + wfigs, ours)],
        (
            "p",
            f"Weight graph G_x = D_x E of head {wnum['head']} at β = {wnum['beta_degrees']:.3g}: "
            f"{wnum['edges']} edges; in-degree tail {fit_text(wnum['tail_in'])}; out-degree tail "
            f"{fit_text(wnum['tail_out'])}. Modularity against β, the model beside the two baselines "
            "(paper: model high, baselines about 0):",
        ),
        (
            "table",
            (
                (
                    "threshold β",
                    "edges",
                    "modularity of G_x",
                    "G(n,m): random, same n and m",
                    "random low-rank, same d",
                ),
                [
                    (f"{r['beta']:.3g}", r["edges"], _f(r["modularity"]), _f(r.get("G(n,m)")), _f(r.get("low-rank")))
                    for r in wnum["rows"]
                ],
            ),
        ),
    ]
    print(f"   part {k} done in {time.perf_counter() - t_start:.0f} s: equivalence {verdict}")
    return rep.ok, blocks, times


def _f(v):
    return "-" if v is None else f"{v:.3f}"
