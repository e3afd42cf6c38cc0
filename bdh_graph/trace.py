"""The scheduler, round by round, with the numbers that flowed (`bdh trace`).

`trace_rounds(sim, tokens, shown)` steps a Simulator sub-round by sub-round and describes every rule as the paper
writes it (Table 1) with the messages it carried into the shown nodes; `format_trace` is its terminal text.
"""

from __future__ import annotations

import numpy as np

from . import kernels as K
from .ops import numpy_ops

_OPS = numpy_ops(None)  # the replay of computation rules runs on NumPy copies of the state


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
    token's start: `Simulator.ingest`'s `inputs`). shown: {population: node indices} to report (flows
    into, and values of, these nodes only). Returns a list of token dicts:
    {token, label, rounds: [{round, layer, label, communication: [rule], computation: [rule]}]}, each rule
    {text, kind, flows: [{src, dst, weight, value, message}] (communication), changes: [{node, before, after,
    inputs}] (node values), truncated: count of flows left out}. The computation rules are replayed one by one
    from the state before the sub-round (the same rule functions as the backends) so each rule's own effect is
    shown; `consistent` records that the replay reached the simulator's state.
    """
    net, kernel = sim.net.with_weight_dtype(sim.dtype), sim.kernel  # the weights as the backend stores them
    layer_of = [l + 1 for l, layer in enumerate(kernel.layers) for _ in layer]
    show = {p: np.asarray(v, dtype=np.int64) for p, v in shown.items()}
    is_shown = {p: np.isin(np.arange(net.populations[p].size), show.get(p, [])) for p in net.populations}
    out, done_rounds = [], 0
    for t, (label, x0, y0, extra) in enumerate(tokens):
        tok = _start_token(sim, t, label, x0, y0, extra, show)
        for k, rnd in enumerate(kernel.rounds):
            if max_rounds is not None and done_rounds >= max_rounds:
                break
            tok["rounds"].append(_trace_round(sim, net, k, rnd, layer_of[k], show, is_shown, max_flows))
            done_rounds += 1
        out.append(tok)
        if max_rounds is not None and done_rounds >= max_rounds:
            while sim._loaded:  # finish the token quietly so the simulator stays consistent
                sim.step()
            break
    return out


def _start_token(sim, t, label, x0, y0, extra, show):
    """Ingest one token; its dict with the non-zero inputs at the shown nodes and no rounds yet."""
    sim.ingest(x0, y0, extra)
    st = sim.state
    inputs = {}
    for v in ["X", "Y"] + list(extra or {}):
        pop = _var_parts(v)[0]
        inputs[v] = [(_label(pop, int(k)), float(st.nodes[v][k])) for k in show.get(pop, []) if st.nodes[v][k] != 0]
    return dict(token=t, label=label, inputs=inputs, rounds=[])


def _trace_round(sim, net, k, rnd, layer, show, is_shown, max_flows):
    """Run round k (both sub-rounds) and describe its rules: the messages of the communication rules (weights from
    `net`), then the computation rules replayed one by one from the state between the sub-rounds."""
    entry = dict(round=k, layer=layer, label=rnd.label, communication=[], computation=[])
    before = sim.state
    sim.step()
    mid = sim.state
    for rule in rnd.communication:
        entry["communication"].append(_comm_flows(net, rule, before, mid, is_shown, max_flows))
    sim.step()
    after = sim.state
    nodes = {v: a.copy() for v, a in mid.nodes.items()}
    for rule in rnd.computation:
        if rule.kind == "damp":
            entry["computation"].append(_damp_changes(net, rule, mid, after, is_shown, max_flows))
        else:
            entry["computation"].append(_replay_rule(rule, nodes, show, max_flows))
    entry["consistent"] = bool(all(np.allclose(nodes[v], after.nodes[v], rtol=1e-12, atol=1e-12) for v in nodes))
    return entry


def _replay_rule(rule, nodes, show, max_flows):
    """Apply computation `rule` to `nodes` (in place, the rule function the backends use); its changes at the
    shown nodes, each with the rule's other inputs there."""
    old = nodes[rule.dst].copy()
    nodes.update(K.apply_rule(rule, nodes, _OPS))
    pop = _var_parts(rule.dst)[0]
    ch = []
    for j in show.get(pop, []):
        if old[j] != nodes[rule.dst][j]:
            ins = {s: float(nodes[s][j]) for s in rule.src if _var_parts(s)[0] == pop and s != rule.dst}
            ch.append(dict(node=_label(pop, int(j)), before=float(old[j]), after=float(nodes[rule.dst][j]), inputs=ins))
    return dict(text=str(rule), kind=rule.kind, changes=ch[:max_flows], truncated=max(0, len(ch) - max_flows))


def _comm_flows(net, rule, before, after, is_shown, max_flows):
    """Messages of one communication rule into shown nodes (or, for a Hebbian write, onto shown synapses)."""
    if rule.kind in ("send", "read"):
        flows, totals = _messages(net, rule, before, is_shown), _totals(net, rule, before, after, is_shown)
    else:
        flows, totals = _hebbian_writes(net, rule, before, after, is_shown), []
    return dict(
        text=str(rule),
        kind=rule.kind,
        dst=rule.dst,
        flows=flows[:max_flows],
        truncated=max(0, len(flows) - max_flows),
        totals=totals,
    )


def _messages(net, rule, before, is_shown):
    """send / read: each message w(i,j) q(i) along an edge into a shown node."""
    g = net.group_of(rule)
    w, wname = (g.weight, rule.group) if rule.kind == "send" else (before.edges[rule.src[1]], rule.src[1])
    q = before.nodes[rule.src[0]]
    src, dst = g.source, g.indices
    flows = []
    for e in np.nonzero((q[src] != 0) & (w != 0) & is_shown[g.post][dst])[0]:
        i, j = int(src[e]), int(dst[e])
        a, b = _label(g.pre, i), _label(g.post, j)
        text = (
            f"{rule.src[0]}({a})={_fmt(q[i])} · {wname}({a}→{b})={_fmt(w[e])} → {rule.dst}({b}) += {_fmt(w[e] * q[i])}"
        )
        flows.append(dict(src=a, dst=b, weight=float(w[e]), value=float(q[i]), message=float(w[e] * q[i]), text=text))
    return flows


def _totals(net, rule, before, after, is_shown):
    """send / read: the target's value before and after, at each shown node it changed."""
    dpop = net.group_of(rule).post
    old, new = before.nodes[rule.dst], after.nodes[rule.dst]
    return [
        dict(node=_label(dpop, int(j)), before=float(old[j]), after=float(new[j]))
        for j in np.nonzero(is_shown[dpop])[0]
        if old[j] != new[j]
    ]


def _hebbian_writes(net, rule, before, after, is_shown):
    """hebbian p(i), q(j) -> s(i,j), weight Gs: each write onto a synapse between shown nodes."""
    p, q = rule.src
    g = net.group_of(rule)
    src, dst = g.source, g.indices
    pv, qv = before.nodes[p], before.nodes[q]
    s0, s1 = before.edges[rule.dst], after.edges[rule.dst]
    flows = []
    for e in np.nonzero((pv[src] != 0) & (qv[dst] != 0) & is_shown[g.pre][src] & is_shown[g.post][dst])[0]:
        i, j = int(src[e]), int(dst[e])
        a, b = _label(g.pre, i), _label(g.post, j)
        text = (
            f"{p}({a})={_fmt(pv[i])} · {q}({b})={_fmt(qv[j])} · Gs={_fmt(g.weight[e])} → {rule.dst}({a},{b}): "
            f"{_fmt(s0[e])} → {_fmt(s1[e])}"
        )
        m = g.weight[e] * pv[i] * qv[j]
        flows.append(
            dict(src=a, dst=b, weight=float(g.weight[e]), value=float(pv[i] * qv[j]), message=float(m), text=text)
        )
    return flows


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
