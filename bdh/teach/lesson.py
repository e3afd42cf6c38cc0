"""One part of `bdh demo`, in the steps a reader follows.

A part takes one demo model (`bdh.teach.demo.PARTS`: normfree, official) through five steps, each printing its
lines to the terminal and keeping what the report page shows:

    1 the model       train it (or reuse the cached one): `demo_model`
    2 its graph       compile it to neurons and synapses: `equivalence.compile_model`
    3 the walk        step a recall prompt through the graph, token by token: `graph_walk`
    4 the check       graph == tensor model in float64: `equivalence.compare`
    5 the memory      (neuron -> neuron synapses only) which synapses hold each fact, and the ablation: `memory`
    6 the figures     rasters, sigma traces, the weight graph, the interactive viewer

`run_part` calls them in order and returns (equivalence ok, report blocks, seconds per step).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from . import names

TITLES = {
    "normfree": "a Normfree model as the local graph of Table 1(b), neuron -> neuron synapses",
    "official": "the released LayerNorm model as a graph with hub populations",
}


@dataclass
class Part:
    """What one part was asked to do, and what its steps found (filled in as they run)."""

    k: int  # the part's number in the report
    part: str  # normfree | official
    out: str  # the part's directory
    rel: str  # that directory relative to the report
    backend: str = "numba"
    fast: bool = False
    use_cache: bool = True
    pairs: int = 8
    times: dict = field(default_factory=dict)

    @property
    def title(self) -> str:
        return TITLES[self.part]


def run_part(p: Part):
    """One part of the demo: (equivalence ok, report blocks, seconds per step)."""
    print(f"part {p.k}: {p.title}")
    t_start = time.perf_counter()
    model, info = model_step(p)
    compiled = compile_step(p, model)
    walk, ids, labels, table = walk_step(p, model, compiled)
    rep = verify_step(p, model, compiled, ids)
    memory_blocks = memory_step(p, compiled, ids, walk, labels) if compiled.name == "dense" else []
    figs = figures_step(p, model, compiled, ids, walk)
    blocks = report_blocks(p, model, info, compiled, walk, table, rep, memory_blocks, figs)
    print(f"   part {p.k} done in {time.perf_counter() - t_start:.0f} s: equivalence {'OK' if rep.ok else 'MISMATCH'}")
    return rep.ok, blocks, p.times


def model_step(p: Part):
    """Step 1: the trained demo model (cached under $BDH_CACHE) and what its training reported."""
    from bdh.teach.demo import demo_model

    print(f"{p.k}.1 the model")
    t0 = time.perf_counter()
    model, info = demo_model(fast=p.fast, use_cache=p.use_cache, part=p.part)
    p.times["model"] = time.perf_counter() - t0
    acc = info.get("val_accuracy")
    if acc is not None:
        print(f"   held-out recall accuracy {acc:.3f} (chance {info.get('chance', 0):.3f})")
    return model, info


def compile_step(p: Part, model):
    """Step 2: the model as a neuron graph (the variant's default compile)."""
    from equivalence import compile_model

    print(f"{p.k}.2 compile it to a neuron graph")
    t0 = time.perf_counter()
    compiled = compile_model(model)
    print("   " + compiled.summary())
    print(f"   ({time.perf_counter() - t0:.1f} s)")
    return compiled


def walk_step(p: Part, model, compiled):
    """Step 3: the recall prompt stepped through the graph; one printed row per token (what the graph and the tensor
    model predict next, the active neurons, the synapse whose sigma changed most)."""
    import torch

    from bdh.teach.demo import byte_label, graph_walk, recall_prompt

    ids, expect = recall_prompt(p.pairs, seed=7)
    labels = [byte_label(b) for b in ids]
    print(
        f"{p.k}.3 step the prompt through the graph ({p.backend} backend), one token = "
        f"{len(compiled.kernel.rounds)} rounds: {' '.join(labels)}"
    )
    walk = graph_walk(model, ids, compiled, backend=p.backend, progress=True)
    p.times["graph walk"] = walk.seconds
    with torch.no_grad():
        tensor_pred = model(torch.tensor([ids]))[0].argmax(-1).tolist()
    L = walk.y.shape[1] - 1
    print(f"   {'t':>3} {'token':>6} {'graph next':>10} {'tensor':>6}  active y (layer {L})  top sigma change")
    rows = [_walk_row(walk, t, labels, expect, tensor_pred) for t in range(len(ids))]
    asked = sum(r[-1] is not None for r in rows)
    right = sum(bool(r[-1]) for r in rows)
    print(f"   recalled {right}/{asked} answers from the synaptic state")
    return walk, ids, labels, {"rows": [r[:-1] for r in rows], "right": right, "asked": asked, "L": L}


def _walk_row(walk, t, labels, expect, tensor_pred):
    """Token t's printed row; the last entry is whether the graph answered right (None: not a question)."""
    from bdh.teach.demo import byte_label

    L = walk.y.shape[1] - 1
    pred = int(walk.predictions[t])
    nxt = expect[t + 1] if t + 1 < len(labels) else None
    mark = "" if nxt is None else (" ok" if pred == nxt else f" (want {byte_label(nxt)})")
    act = np.nonzero(walk.y[t, L])[0]
    shown = ",".join(map(str, act[:6])) + ("…" if len(act) > 6 else "")
    top = walk.sigma_delta[t][0] if walk.sigma_delta[t] else None
    syn = f"{names.synapse(names.state(top[0]), top[2], top[3])}: {top[4]:+.3g} → {top[5]:+.3g}" if top else "-"
    print(
        f"   {t:>3} {labels[t]:>6} {byte_label(pred):>10} {byte_label(tensor_pred[t]):>6}  "
        f"{len(act):>4} [{shown}]{mark}  {syn}"
    )
    row = (t, labels[t], byte_label(pred) + mark, byte_label(tensor_pred[t]), len(act), shown, syn)
    return (*row, None if nxt is None else pred == nxt)


def verify_step(p: Part, model, compiled, ids):
    """Step 4: graph and tensor model on the same prompt, compared in float64."""
    from equivalence import compare

    print(f"{p.k}.4 verify graph == tensor (float64)")
    t0 = time.perf_counter()
    rep = compare(model, compiled, ids, backend=p.backend, progress=True)
    p.times["verify"] = time.perf_counter() - t0
    for line in str(rep).splitlines():
        print("   " + line)
    return rep


def memory_step(p: Part, compiled, ids, walk, labels):
    """Step 5 (neuron -> neuron synapses): which synapses hold each fact, and the ablation that zeroes them."""
    from bdh.teach.demo import prompt_facts
    from bdh.teach.memory import ablate, memory_figures, memory_synapses

    print(f"{p.k}.5 which synapses hold each fact, and the ablation that proves it")
    t0 = time.perf_counter()
    facts, queries = prompt_facts(ids, p.pairs)
    mems = memory_synapses(compiled, ids, walk.x, walk.y, facts, queries)
    sig = ablate(compiled, ids, mems, split=p.pairs, backend=p.backend)
    mfigs = memory_figures(mems, sig, labels, p.out)
    net = compiled.network
    n_syn = sum(net.groups[net.edge_vars[s].group].nnz for s in net.sigma_names)
    mrows = [_memory_row(m, n_syn) for m in mems]
    broken = sum(m.broken for m in mems)
    kept = sum(m.others_kept for m in mems)
    print(
        f"   {broken} of {len(mems)} recalls break when their own synapses are zeroed; the other questions "
        f"keep their answers in {kept} of {len(mems)} ablations"
    )
    p.times["memory"] = time.perf_counter() - t0
    return _memory_blocks(mems, mrows, mfigs, n_syn, broken, kept, sig)


def _memory_row(m, n_syn):
    """One fact's printed line and its report row."""
    from bdh.teach.memory import CARRY

    top = m.top[0] if m.top else None
    syn = (
        names.synapse(names.state(top[0]), names.node("neurons", top[1]), names.node("neurons", top[2])) if top else ""
    )
    what = f"{syn}: σ += {top[3]:.3g}" if top else "-"
    print(
        f"   {m.label}: heard at t={m.pos}, asked at t={m.query}; {m.n_synapses} synapses "
        f"({m.n_synapses / n_syn:.2%} of {n_syn:,}) carry {CARRY:.0%} of its read; strongest {what}; "
        f"p(right answer) {m.p_before:.3f} -> {m.p_after:.3f} with them zeroed; other questions "
        f"right {m.others_before}/{m.others} -> {m.others_after}/{m.others}"
    )
    share = f"{m.n_synapses} ({m.n_synapses / n_syn:.2%})"
    return (
        m.label,
        m.pos,
        m.query,
        share,
        what,
        f"{m.p_before:.3f}",
        f"{m.p_after:.3f}",
        f"{m.others_before}/{m.others}",
        f"{m.others_after}/{m.others}",
    )


def _memory_blocks(mems, mrows, mfigs, n_syn, broken, kept, sig=None):
    """The report's memory section: the rule, the table of facts, the result, the two figures."""
    from bdh.teach.figures import captioned
    from bdh.teach.memory import CARRY

    counts = sorted(m.n_synapses for m in mems) or [0]
    return [
        ("h3", "Which synapses hold each fact (the paper's working memory, Sec. 6.3)"),
        (
            "p",
            "Every synapse σ(i, j) from neuron i to neuron j is written by the Hebbian rule X(i), Y(j) → "
            "σ(i, j): when a fact byte is heard, the synapses between the neurons it activates in two "
            "consecutive layers potentiate (σ grows by x(i) y(j)), and ALiBi damping makes them forget "
            "slowly afterwards. When the key is asked, the read X(i), σ(i, j) → A(j) brings that write "
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
            f"other questions keep exactly their answers in {kept} of {len(mems)} ablations. "
            + _intact_text(mems)
            + f" A fact is held by {counts[0]} to {counts[-1]} of the model's {n_syn:,} synapses (paper: "
            "a monosemantic synapse, one σ(i, j) that separates a concept, Sec. 6.3).",
        ),
        *[
            ("img", c)
            for c in captioned(
                mfigs,
                {
                    "memory_synapses.png": _jump_text(mems, sig),
                    "memory_ablation.png": f"{broken} of {len(mems)} answers collapse when their own synapses are "
                    "zeroed.",
                },
            )
        ],
    ]


def _intact_text(mems) -> str:
    """How well the intact graph recalls, so that the ablation's result is read against it."""
    if not mems:
        return ""
    ps = [m.p_before for m in mems]
    text = f"With the graph intact, p(right answer) is {min(ps):.3f} to {max(ps):.3f}"
    if max(ps) < 0.5:
        return text + ": this model does not recall its facts yet, so there is no recall for an ablation to break."
    return text + "."


def _jump_text(mems, sig) -> str:
    """What the strongest synapse of each fact did in this run: 0 before its fact byte, a jump there."""
    if sig is None or not mems:
        return "no facts were traced."
    sig = np.asarray(sig)
    ok = 0
    for k, m in enumerate(mems):
        col = sig[:, k]
        before = np.abs(col[: m.pos]).max() if m.pos else 0.0
        rise = np.diff(np.concatenate([[0.0], col]))
        ok += bool(before == 0 and col[m.pos] > 0 and np.argmax(rise) == m.pos)
    return (
        f"{ok} of {len(mems)} facts' strongest synapse is 0 until its fact byte arrives and takes its largest "
        "step there."
    )


def figures_step(p: Part, model, compiled, ids, walk):
    """Step 6: the walk's figures, the weight graph's figures and numbers, and the interactive viewer page."""
    from bdh.teach.figures import walk_figures, weight_graph_figures
    from bdh.teach.view import view_page

    print(f"{p.k}.6 figures, the interactive viewer")
    t0 = time.perf_counter()
    figs = walk_figures(walk, p.out)
    density = (0.005, 0.01, 0.02) if p.fast else (0.002, 0.005, 0.01, 0.02, 0.05)
    wfigs, wnum = weight_graph_figures(model, p.out, seeds=1 if p.fast else 5, density=density)
    view_path, _ = view_page(compiled, ids, os.path.join(p.out, "view.html"), backend=p.backend, model=model)
    print(f"   {view_path}: the prompt sub-round by sub-round, click neurons and synapses")
    p.times["figures"] = time.perf_counter() - t0
    return {"walk": figs, "weights": wfigs, "wnum": wnum, "view": os.path.normpath(os.path.join(p.rel, "view.html"))}


def _ours(model, compiled, walk, wnum) -> dict:
    """What this model shows, per figure, beside the caption's paper value."""
    from bdh.teach.figures import fit_text, modularity_text

    layers = list(range(1, walk.y.shape[1])) if compiled.variant == "official" else list(range(walk.y.shape[1]))
    sy = ", ".join(f"layer {l}: {float((walk.y[:, l] > 0).mean()):.1%}" for l in layers)
    return {
        "sparsity_per_layer.png": f"y &gt; 0 in {sy}.",
        "degree_distribution.png": f"{wnum['edges']} edges on {model.config.N} neurons at &beta; = "
        f"{wnum['beta_degrees']:.3g}; in-degree tail {fit_text(wnum['tail_in'])}, "
        f"out-degree tail {fit_text(wnum['tail_out'])}.",
        "modularity_vs_beta.png": modularity_text(wnum["rows"], model.config.N),
    }


def report_blocks(p: Part, model, info, compiled, walk, table, rep, memory_blocks, figs):
    """The part's section of the report page, in the order of the steps."""
    return [
        *_model_blocks(p, model, info, compiled, figs["view"]),
        *_check_blocks(model, rep),
        *_walk_blocks(table),
        *memory_blocks,
        *_figure_blocks(model, compiled, walk, figs),
    ]


def _model_blocks(p: Part, model, info, compiled, view_rel):
    """Steps 1-2 in the report: the viewer's link, the model, its graph and kernel."""
    k, title = p.k, p.title
    acc = info.get("val_accuracy")
    return [
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
        ("p", compiled.summary() + "."),
        ("pre", str(compiled.kernel)),
    ]


def _check_blocks(model, rep):
    """Step 4 in the report: the verdict and the per-quantity errors."""
    verdict = "OK" if rep.ok else "MISMATCH"
    return [
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
    ]


def _walk_blocks(table):
    """Step 3 in the report: one row per token."""
    rows, right, asked, L = table["rows"], table["right"], table["asked"], table["L"]
    return [
        ("h3", "Token by token (graph simulator)"),
        (
            "p",
            "One row per token of the prompt: the byte fed in, the byte the graph's output nodes score highest "
            "(with the expected answer where the prompt asks a question), the tensor model's choice, how many "
            "neurons have y > 0 in the last layer and the first few of them, and the synapse whose σ changed "
            "most on that token, written 'σ_2(neuron 431 → neuron 12): old → new' (the state σ_2 of layer 2, "
            "on the synapse from neuron 431 to neuron 12; layers count 1..L as in the paper, neurons and hubs "
            "from 0; for the LayerNorm model the targets are attention hubs, 'att[h1,9]' = slot 9 of head 1).",
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
    ]


def _figure_blocks(model, compiled, walk, figs):
    """Step 6 in the report: the figures with this model's numbers, the modularity table."""
    from bdh.teach.figures import captioned, fit_text

    wnum = figs["wnum"]
    ours = _ours(model, compiled, walk, wnum)
    figs, wfigs = figs["walk"], figs["weights"]
    return [
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


def _f(v):
    return "-" if v is None else f"{v:.3f}"
