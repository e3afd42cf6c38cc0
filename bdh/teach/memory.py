"""Which synapses hold a fact: the paper's working memory (Sec. 6.3) on a recall prompt, and the ablation that
proves it.

A Normfree model compiled densely (Obs. 4) is BDH with a synapse sigma_l(i,j) from every neuron i to every
neuron j, written by the Hebbian rule `X(i), Y(j) -> sigma_l(i,j)` (Eq. 6: sigma += y_{l-1} x_l^T, then damped by
U) and read by `X(i), sigma_l(i,j) -> A(j)`. When the pair byte `k=v` is heard at position p, every synapse
(i, j) with x_{p,l}(i) > 0 and y_{p,l-1}(j) > 0 potentiates by x_{p,l}(i) y_{p,l-1}(j). When key k is asked
at position q, the read brings back through synapse (i, j), from that one write,

    c_p(i,j) = x_{p,l}(i) y_{p,l-1}(j) u(i)^(q-p) x_{q,l}(i)                       (its share of A(j) at q)

`memory_synapses` ranks, per layer, the synapses on which the pair's write dominates what every other pair wrote
there, and keeps the fewest that carry a fraction `carry` of the pair's whole read. `ablate` zeroes exactly
those synapses in the running graph (after the pairs, before the questions) and asks every question again:
the recall of that pair should break while the others stand. Reads the bridge (`equivalence`), never the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from equivalence import Compiled, GraphRunner

from . import names

CARRY = 0.8  # keep the fewest synapses that carry this fraction of a pair's read at its question


@dataclass
class PairMemory:
    """One key-value pair of the prompt: where it was heard (`pos`), its first question (`query`), and per layer
    the synapses (edge indices of sigma_l) that hold it, with their sigma before and after the pair was heard."""

    label: str
    pos: int
    query: int
    answer: int
    edges: dict = field(default_factory=dict)  # sigma name -> (k,) edge indices, strongest first
    share: dict = field(default_factory=dict)  # sigma name -> fraction of the pair's read they carry
    top: list = field(default_factory=list)  # [(layer, key neuron i, value neuron j, write)] per layer
    p_before: float = 0.0  # probability of the right answer at the question
    p_after: float = 0.0  # ... with the pair's synapses zeroed
    others_before: int = 0  # other questions answered right, intact graph
    others_after: int = 0  # ... with this pair's synapses zeroed
    others: int = 0
    others_kept: bool = False  # every other question answered exactly as before

    @property
    def n_synapses(self):
        return int(sum(len(e) for e in self.edges.values()))

    @property
    def broken(self):
        return self.p_after < 0.5 <= self.p_before


def _softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def _feed(runner, ids, watch, rows):
    """Feed `ids` through a GraphRunner; returns their logits, and appends to `rows` the sigma of the watched
    synapses [(sigma name, edge)] after every token."""
    out = []
    for o in runner.feed(list(ids)):
        out.append(o["logits"])
        if watch:
            edges = runner.sim.state.edges
            rows.append([float(edges[name][e]) for name, e in watch])
    return out


def memory_synapses(compiled: Compiled, ids, x, y, pairs: dict, queries: dict, carry: float = CARRY):
    """Per pair, the synapses that hold it (module docstring). compiled: a dense compile (neuron -> neuron
    synapses); x, y: (T, L+1, n) from the graph walk; pairs: {pos: label}; queries: {pos of a pair: (first
    question position, answer byte)}. Returns [PairMemory] in prompt order."""
    if compiled.name != "dense":
        raise ValueError(f"memory synapses need neuron -> neuron synapses (the dense compile), got {compiled.name!r}")
    net, W = compiled.network, compiled.weights
    if W.theta is not None:
        raise ValueError(
            "memory synapses: the attribution assumes damping only (U = alibi or none); a rotation "
            "(RoPE) mixes each synapse with its pair's and makes sigma signed"
        )
    u = W.u if W.u is not None else np.ones(W.n)
    names = net.sigma_names
    out = []
    for p, label in pairs.items():
        if p not in queries:
            continue
        q, answer = queries[p]
        mem = PairMemory(label, p, q, answer)
        for l, name in enumerate(names):
            g = net.groups[net.edge_vars[name].group]
            i, j = g.source, g.indices  # key neuron i (X), value neuron j (Y)
            contrib = lambda s: x[s, l + 1][i] * y[s, l][j] * u[i] ** (q - s) * x[q, l + 1][i]
            mine = contrib(p)
            rest = sum(contrib(s) for s in pairs if s != p)
            cand = np.flatnonzero(mine > rest)
            cand = cand[np.argsort(-mine[cand], kind="stable")]
            total = float(mine.sum())
            if total <= 0 or cand.size == 0:
                mem.edges[name], mem.share[name] = cand[:0], 0.0
                continue
            cum = np.cumsum(mine[cand]) / total
            k = int(np.searchsorted(cum, carry)) + 1 if cum[-1] >= carry else cand.size
            mem.edges[name], mem.share[name] = cand[:k], float(cum[k - 1])
            e = cand[0]  # its strongest synapse and what the pair wrote
            mem.top.append((l + 1, int(i[e]), int(j[e]), float(x[p, l + 1][i[e]] * y[p, l][j[e]])))
        out.append(mem)
    return out


def ablate(compiled: Compiled, ids, memories, split: int, backend: str = "numba"):
    """Zero each pair's synapses in the running graph after token `split` (the pairs heard, no question asked
    yet), run the rest of the prompt, and fill p_before / p_after / others_* of every PairMemory in place.
    Returns the sigma of each pair's strongest layer-1 synapse after every token of the intact run, (T, pairs)."""
    net = compiled.network
    first = net.sigma_names[0]
    watch = [(first, int(m.edges[first][0])) if len(m.edges.get(first, ())) else (first, 0) for m in memories]
    rows = []
    runner = GraphRunner(compiled, backend)
    _feed(runner, ids[: split + 1], watch, rows)  # the facts and the separator
    edges = runner.sim.state.edges
    intact = _feed(runner, ids[split + 1 :], watch, rows)  # the questions, synapses intact
    asked = _questions(ids, split, memories)
    for m in memories:
        cut = {k: v.copy() for k, v in edges.items()}
        for name, idx in m.edges.items():
            cut[name][idx] = 0.0
        broken = _feed(GraphRunner(compiled, backend, sigma0=cut), ids[split + 1 :], watch, [])
        m.p_before = float(_softmax(intact[m.query - split - 1])[m.answer])
        m.p_after = float(_softmax(broken[m.query - split - 1])[m.answer])
        others = [(t, a) for t, a in asked if ids[t] != ids[m.query]]  # questions about other keys
        m.others = len(others)
        before = [int(np.argmax(intact[t - split - 1])) == a for t, a in others]
        after = [int(np.argmax(broken[t - split - 1])) == a for t, a in others]
        m.others_before, m.others_after, m.others_kept = sum(before), sum(after), before == after
    return np.array(rows)


def _questions(ids, split, memories):
    """Every question after `split` as (position of the key byte, answer byte): a key byte of a memorised pair
    followed by its answer."""
    key_answer = {ids[m.query]: m.answer for m in memories}
    return [
        (t, key_answer[ids[t]])
        for t in range(split + 1, len(ids) - 1)
        if ids[t] in key_answer and ids[t + 1] == key_answer[ids[t]]
    ]


def memory_figures(memories, sigma_rows, labels, out_dir: str) -> list[str]:
    """PNGs: the sigma of each pair's strongest synapse over the prompt, and the probability of each right answer
    with the graph intact and with that pair's synapses zeroed."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bdh_graph.plots import plot_series

    syn = lambda top: names.synapse(names.state(1), names.node("neurons", top[1]), names.node("neurons", top[2]))
    series = {
        (
            f"{m.label}: {syn(m.top[0])}" if m.top and m.top[0][0] == 1 else f"{m.label}: (no layer-1 synapse)"
        ): sigma_rows[:, k]
        for k, m in enumerate(memories)
    }
    a = plot_series(
        os.path.join(out_dir, "memory_synapses.png"),
        series,
        labels,
        title="σ_1 on the strongest synapse of each fact (layer 1)",
        ylabel="σ_1(i, j)",
    )
    b = os.path.join(out_dir, "memory_ablation.png")
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    k = np.arange(len(memories))
    ax.bar(k - 0.2, [m.p_before for m in memories], 0.4, label="graph intact")
    ax.bar(k + 0.2, [m.p_after for m in memories], 0.4, label="that fact's synapses zeroed")
    ax.set_xticks(k), ax.set_xticklabels([m.label for m in memories])
    ax.set_ylim(0, 1.05), ax.set_ylabel("p(right answer)"), ax.set_xlabel("fact (key=value)")
    ax.set_title("probability of the right answer at each fact's question", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout(), fig.savefig(b, dpi=110), plt.close(fig)
    return [a, b]
