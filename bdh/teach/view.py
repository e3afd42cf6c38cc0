"""The neuron viewer: a prompt stepped through a model's compiled neuron graph, sub-round by sub-round, as data for
an interactive page (`bdh view`): a self-contained HTML file, or a local server that steps the live simulator.

    s = ViewSession(compile_model(model))      # any compile: populations and synapse groups as the network has them
    s.load(ids)                               # pass A (GraphRunner) picks the shown nodes and synapses
    s.step("all")                             # pass B: the real simulator, one frame per sub-round
    write_page("view.html", s.data())         # data embedded as JSON, hand-written JS (view.js), nothing fetched

Both passes run `equivalence.GraphRunner`'s simulator (its public `runner.sim`) on the compiled network; the
numbers in a frame are the simulator's node variables after that sub-round (rounded to 7 significant digits),
never recomputed here.

A frame: {t: token, k: round (-1 = the token's input), ph: 0 communication / 1 computation / -1 input,
ch: {variable: [[position in shown[population]], [value]] (positions not listed are 0)},
ev: {rule index: messages sent} (communication), ed: [[rule, edge, pre, post, weight, message, sigma]] the drawn
edges and more: {rule: messages not drawn} (communication), nch: {variable: nodes changed (of the whole population)},
end: {pred, top: [[byte, logit]], sig: {edge variable: [sigma of the tracked synapses]}} (a token's last frame)}.

Size: at most `neurons` neurons (the most active of pass A), `hub_cap` nodes of every hub population and all
output nodes are shown; per shown node the `synapses` strongest edges of each group, per shown neuron the
`sigma_synapses` largest |sigma| of each edge variable (their sigma embedded per token); per communication rule and
sub-round the `edges` strongest messages. At paper-25m (n = 32768) a 64-token page stays under 20 MB
(benchmarks/view_bench.py); `--serve` adds any node on demand.
"""

from __future__ import annotations

import html
import json
import os
import time

import numpy as np

from bdh.errors import InputError
from bdh_graph import EventMonitor, StateMonitor
from equivalence import Compiled, GraphRunner

from . import names, words
from .demo import byte_label
from .layout import positions

MAX_PROMPT = 256  # bytes a page or a server session may step (the graph runs token by token)
NEURONS = 128  # neurons shown (the most active first)
HUB_CAP = 32  # nodes shown of every hub population (the output nodes, one per byte, are always all shown)
SYNAPSES = 8  # strongest edges per group, per node
SIGMA_SYNAPSES = 4  # largest |sigma| per edge variable, per shown neuron (their sigma is embedded per token)
EDGES = 12  # edges drawn per communication rule and sub-round (the strongest |weight x message|)
MEMORY_DRAWN = 8  # synapses per layer drawn of the fact the tour recalls
TASKS = ("text", "recall")  # how a typed prompt becomes bytes: as the model was trained
HERE = os.path.dirname(os.path.abspath(__file__))


def _top(v, k):
    """Indices of the k largest entries of v, largest first (ties by index); O(len(v)) for long v."""
    v = np.asarray(v)
    if len(v) > 4 * k:
        cand = np.argpartition(-v, k)[:k]
        return cand[np.lexsort((cand, -v[cand]))]
    return np.argsort(-v, kind="stable")[:k]


def encode_prompt(ids, task: str = "text") -> tuple[list, str]:
    """Typed bytes -> the bytes the model was trained on, and one sentence saying how. text: unchanged (one byte
    per UTF-8 byte). recall (bdh_gpu.data.RecallData): a fact `k=v` is ONE byte 0x80 + 8 key + value (key a..p =
    0..15, value 0..7), spaces are dropped, ':' and a question's key letter stay ASCII; bytes already >= 0x80
    pass unchanged, so encoding twice changes nothing."""
    if task not in TASKS:
        raise ViewError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")
    if task == "text":
        return [int(b) for b in ids], "text: one byte per character (UTF-8), as the model was trained"
    from bdh_gpu.data import RECALL_KEYS, RECALL_PAIR_BASE, RECALL_VALUES

    b, out, k = [int(v) for v in ids], [], 0
    while k < len(b):
        if k + 2 < len(b) and b[k] in RECALL_KEYS and b[k + 1] == ord("=") and b[k + 2] in RECALL_VALUES:
            out.append(RECALL_PAIR_BASE + len(RECALL_VALUES) * RECALL_KEYS.index(b[k]) + RECALL_VALUES.index(b[k + 2]))
            k += 3
            continue
        if b[k] not in b" \t\r\n":
            out.append(b[k])
        k += 1
    how = (
        "recall task (as trained, bdh_gpu.data.RecallData): each fact k=v is one byte 0x80 + 8·key + value "
        "(keys a..p = 0..15, values 0..7); spaces dropped; ':' and a question's key letter are ASCII"
    )
    return out, how


TOUR = {  # the guided tour's words (view.js shows them; `tour()` picks the frames)
    "input": (
        "1. A token arrives",
        "Token '{tok}' enters the graph: its embedding is set on the nodes as the boundary says (top of the page). "
        "A transformer would look it up the same way; from here on, everything is messages between neurons.",
    ),
    "excite": (
        "2. Excitation and inhibition",
        "A communication sub-round: every active node sends its value times the synapse weight along its out-edges. "
        "Green solid edges excite (they add to Xe), red dashed edges inhibit (they add to Xi). Only the strongest "
        "messages are drawn; '+N weaker' counts the rest.",
    ),
    "fire": (
        "3. Integrate-and-fire",
        "A computation sub-round, local at each neuron: X += (Xe − Xi)^+. A neuron fires only if its excitation "
        "beats its inhibition (the ReLU of a transformer's MLP, done by two populations of synapses). The panel on "
        "the right does the arithmetic for the selected neuron, with the tensor model's x beside it.",
    ),
    "read": (
        "4. Reading the state",
        "The synaptic state σ is the model's memory (its attention KV-cache, kept on synapses). Each firing neuron "
        "i sends X(i) through its synapses: A(j) += σ(i,j) X(i). Orange edges are σ; their width follows |σ|.",
    ),
    "write": (
        "5. The Hebbian write",
        "Neurons that fire together wire together: σ(i,j) += X(i) Y(j) on every synapse whose two ends are active, "
        "then the state is damped (σ ← σ·u). Watch the σ edges thicken from token to token.",
    ),
    "gate": (
        "6. The gated output y",
        "Y += (Ye − Yi)^+ · X: what was read from the state, passed through excitation and inhibition and gated by "
        "the neuron's own X (the paper's y = ReLU(D_y a) ⊙ x).",
    ),
    "recall": (
        "7. Recalling a fact",
        "In the last layer's read, the highlighted σ edges carry the most of A = σ X: these synapses were written "
        "when the fact was heard and now answer the question '{tok}'.",
    ),
    "predict": (
        "8. The prediction",
        "The output nodes (one per byte, bottom band) sum what reaches them; a softmax of their values is the "
        "next-byte prediction: the top 5 with their probabilities in the line above the drawing, and at "
        "their output nodes.",
    ),
}


TOUR_FACT = (
    "The question asks for the fact {label}. The highlighted σ synapses (pink) are the ones that hold it: written "
    "when {label} was heard, they carry most of this read (bdh.teach.memory). The demo's ablation, run on this "
    "prompt when the page was made: zeroing those {held} synapses after the facts and asking again moves "
    "p('{answer}') from {p_before:.3g} to {p_after:.3g}."
)


class ViewError(InputError, ValueError):
    """Bad input to the viewer (prompt too long, unknown node, ...): one line (a bdh.errors.InputError)."""


def _r(v) -> float:
    """A float rounded to 7 significant digits (what the page shows and the tests compare against)."""
    return float(f"{float(v):.7g}")


def _sign(group: str) -> str:
    """'E' for an excitatory group (name ends in _e, or the circuit's De), 'I' for an inhibitory one (_i, Di)."""
    return "E" if group.endswith("_e") or group == "De" else "I" if group.endswith("_i") or group == "Di" else ""


def name(kind: str, *args) -> str:
    """The one place the page names things, in bdh.teach.names' vocabulary (layers l = 1..L): ("layer", l) ->
    "layer 1"; ("sigma", key) -> "σ_1" (of the network's key sigma_0); ("node", pop, i, d) -> "neuron 5",
    "res[3]", "att[h1,4]"."""
    if kind == "layer":
        return names.layer(args[0])
    if kind == "sigma":
        return names.state_of(args[0])
    return names.node(*args)


def char(b: int) -> str:
    """A byte as a person reads it: a printable glyph (space as '␣'), else \\xNN."""
    return "␣" if b == 32 else chr(b) if 32 < b < 127 else f"\\x{b:02x}"


def softmax_top(logits, k=5) -> list:
    """[[byte, logit, softmax probability]] of the k largest logits (probabilities over the whole vocabulary)."""
    L = np.asarray(logits, float)
    p = np.exp(L - L.max())
    p /= p.sum()
    top = np.argsort(-L, kind="stable")[:k]
    return [[int(b), _r(L[b]), _r(p[b])] for b in top]


def _ei_pairs(variables) -> list:
    """[(excitatory, inhibitory)] variable pairs of a population: Xe/Xi, Ye/Yi, Pe/Pi, Ze/Zi."""
    vs = list(variables)
    return [(v, v[:-1] + "i") for v in vs if v.endswith("e") and v[:-1] + "i" in vs]


def _qual(pop: str, var: str) -> str:
    return var if pop == "neurons" else f"{pop}.{var}"


class ViewSession:
    """One prompt on one compiled network, stepped frame by frame (module docstring). Not thread-safe."""

    def __init__(
        self,
        compiled: Compiled,
        backend: str = "numba",
        neurons: int = NEURONS,
        hub_cap: int = HUB_CAP,
        synapses: int = SYNAPSES,
        max_prompt: int = MAX_PROMPT,
        title: str = "",
        label=byte_label,
        device=None,
        task: str = "text",
        model=None,
        edges: int = EDGES,
        sigma_synapses: int = SIGMA_SYNAPSES,
    ):
        for name, v in (("neurons", neurons), ("hub_cap", hub_cap), ("synapses", synapses), ("max_prompt", max_prompt)):
            if int(v) < 1:
                raise ViewError(f"{name}: expected an integer >= 1, got {v}")
        self.compiled, self.backend, self.device = compiled, backend, device
        self.K, self.hub_cap, self.M, self.max_prompt = int(neurons), int(hub_cap), int(synapses), int(max_prompt)
        self.title, self.label = title, label
        encode_prompt([], task)  # checks the task's name
        self.task, self.model, self.E, self.Ms = task, model, int(edges), int(sigma_synapses)
        self.net = compiled.network
        self._csr = {}
        self.ids = None
        self._meta = self._build_meta()

    # ---- what does not depend on the prompt -----------------------------------------------------------------
    def _build_meta(self) -> dict:
        net, k = self.net, self.compiled.kernel
        rounds = _round_meta(k)
        pops = [
            dict(
                name=p.name,
                size=p.size,
                variables=[_qual(p.name, v) for v in p.variables],
                ei=[[_qual(p.name, a), _qual(p.name, b)] for a, b in _ei_pairs(p.variables)],
            )
            for p in net.populations.values()
        ]
        groups = [
            dict(
                name=g.name,
                pre=g.pre,
                post=g.post,
                nnz=int(g.nnz),
                sign=_sign(g.name),
                state=[ev.name for ev in net.edge_vars.values() if ev.group == g.name],
            )
            for g in net.groups.values()
        ]
        edge_vars = [
            dict(name=ev.name, label=name("sigma", ev.name), group=ev.group, layer=i + 1, kind=ev.kind)
            for i, ev in enumerate(net.edge_vars.values())
        ]
        c = self.compiled
        return dict(
            title=self.title or c.summary().split(":")[0],
            summary=c.summary(),
            compile=c.name,
            variant=c.variant,
            kernel=k.name,
            layers=len(k.layers),
            rounds=rounds,
            populations=pops,
            groups=groups,
            edge_vars=edge_vars,
            glossary=dict(notation=words.NOTATION, tutorial=words.TUTORIAL, anchors=words.GLOSSARY),
            words=dict(  # the page's names of layers and synapse states (name()); nodes: data()["names"]
                layer=[name("layer", l) for l in range(1, len(k.layers) + 1)],
                sigma={ev["name"]: name("sigma", ev["name"]) for ev in edge_vars},
                d=int(self.compiled.weights.d),
            ),
            logits=c.logits_var,
            boundary=c.boundary,
            readout=c.readout,
            backend=self.backend,
            caps=dict(neurons=self.K, hub_cap=self.hub_cap, synapses=self.M, max_prompt=self.max_prompt),
        )

    def meta(self) -> dict:
        return dict(self._meta)

    # ---- a prompt ---------------------------------------------------------------------------------------------
    def load(self, ids) -> dict:
        """Start a prompt (byte ids): pass A picks the shown nodes and tracked synapses, pass B starts fresh."""
        typed = [int(b) for b in ids]
        ids, self.how = encode_prompt(typed, self.task)
        self.typed = typed
        V = self.compiled.weights.V
        if not ids:
            raise ViewError("prompt: expected at least 1 byte, got an empty prompt")
        if len(ids) > self.max_prompt:
            raise ViewError(
                f"prompt: expected at most {self.max_prompt} bytes, got {len(ids)} "
                "(the graph runs token by token; raise the limit with --max-prompt)"
            )
        if min(ids) < 0 or max(ids) >= V:
            bad = max(ids) if max(ids) >= V else min(ids)
            raise ViewError(f"prompt: byte values must lie in [0, {V - 1}], got {bad}")
        self.ids = ids
        t0 = time.perf_counter()
        # pass A: the same simulator, token by token, to choose what to show
        runner = GraphRunner(self.compiled, self.backend, device=self.device)
        xs, ys, logits = [], [], []
        for out in runner.feed(ids):
            xs.append(out["x"]), ys.append(out["y"]), logits.append(out["logits"])
        self.pass_a = dict(x=np.stack(xs), y=np.stack(ys), logits=np.stack(logits))
        final = runner.sim.state.edges
        y, x = self.pass_a["y"][:, 1:], self.pass_a["x"][:, 1:]
        n = self.net.n
        score = (
            (y > 0).sum((0, 1)) * 1.0
            + (x > 0).sum((0, 1)) / (1.0 + x.size)
            + np.abs(y).sum((0, 1)) / (1.0 + np.abs(y).sum())
        )
        order = np.argsort(-score, kind="stable")
        self.shown = {"neurons": np.sort(order[: min(self.K, n)])}
        for p in self.net.populations.values():
            if p.name != "neurons":
                self.shown[p.name] = np.arange(p.size if p.name == "out" else min(p.size, self.hub_cap))
        self.fact = self._fact()
        self._show_fact_neurons()
        self._pos = {p: {int(i): k for k, i in enumerate(v)} for p, v in self.shown.items()}
        self.layout = positions(self.net, self.shown)
        self._drawable = {g: self._shown_edges(self.net.groups[g]) for g in self.net.groups}
        # synapses of every shown node, and the sigma edges to track
        self.tracked = {ev: [] for ev in self.net.edge_vars}
        self._tracked_pos = {ev: {} for ev in self.net.edge_vars}
        self.synapses = {
            p: [self._node_synapses(p, int(i), final, with_sigma=p == "neurons") for i in v]
            for p, v in self.shown.items()
        }
        self._track_fact_edges()
        self._start_pass_b(ids)
        self.tensor = self._tensor_values(ids)
        self.seconds = {"pass A": time.perf_counter() - t0}
        return self.data()

    def _start_pass_b(self, ids):
        """Pass B: a fresh simulator, stepped sub-round by sub-round, with its event and sigma monitors."""
        self.sim = GraphRunner(self.compiled, self.backend, device=self.device).sim  # stepped by hand below
        self._in_token = False
        self.events = EventMonitor(self.sim)
        self.sigmon = {}  # one monitor per synapse group: one state read per token
        for gname in dict.fromkeys(ev.group for ev in self.net.edge_vars.values()):
            evs = [ev for ev, e in self.tracked.items() if e and self.net.edge_vars[ev].group == gname]
            if evs:
                union = np.unique(np.concatenate([self.tracked[ev] for ev in evs])).astype(np.int64)
                mon = StateMonitor(self.sim, variables=tuple(evs), record=union, when="token")
                for ev in evs:
                    self.sigmon[ev] = (mon, np.searchsorted(union, self.tracked[ev]))
        self._x0, self._y0, self._extra = self.compiled.token_inputs(ids)
        self.frames, self._last = [], {}
        self._token, self._round = 0, 0

    def _shown_edges(self, g):
        """(edge ids, pre, post) of group g's synapses whose two ends are both shown (weight != 0)."""
        pre = self.shown[g.pre]
        on = np.zeros(g.n_post, bool)
        on[self.shown[g.post]] = True
        parts = [np.arange(g.indptr[i], g.indptr[i + 1]) for i in pre]
        pres = [np.full(len(e), i) for i, e in zip(pre, parts)]
        e = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        p = np.concatenate(pres) if pres else np.zeros(0, np.int64)
        keep = on[g.indices[e]] & (g.weight[e] != 0)
        return e[keep].astype(np.int64), p[keep].astype(np.int64), g.indices[e[keep]].astype(np.int64)

    def _edge_values(self, var, e):
        """sigma on the edges e now. The numba backend's edge arrays are read in place once flushed (what
        `sim.state` does before copying every edge variable); other backends through `sim.state`."""
        if self.backend == "numba":
            self.sim.backend.flush(self.sim._state)
            return np.asarray(self.sim._state.edges[var])[e]
        return np.asarray(self.sim.state.edges[var])[e]

    def _tensor_values(self, ids):
        """The tensor model's x_{t,l}, y_{t,l} of the shown neurons ([t][l] -> [positions, values], l = 0..L) and
        its logits per token, for the arithmetic panel (None without a model)."""
        if self.model is None:
            return None
        from equivalence import TensorRunner

        tr = TensorRunner(self.model).trace(ids)
        sh = self.shown["neurons"]

        def sparse(a):  # (L+1, T, n) -> [t][l] -> [pos, val]
            return [[_nz(a[l, t, sh]) for l in range(a.shape[0])] for t in range(a.shape[1])]

        return dict(x=sparse(tr["x"]), y=sparse(tr["y"]), logits=[[_r(v) for v in row] for row in tr["logits"]])

    def _messages(self, rnd) -> list:
        """The drawn edges of a communication sub-round, before it runs: per rule, the EDGES strongest
        |weight x message| among shown nodes, as [rule, edge, pre, post, weight, message, sigma or None]."""
        out, net, sim = [], self.net, self.sim
        for j, rule in enumerate(rnd.communication):
            var = rule.src[1] if rule.kind == "read" else rule.dst if rule.kind == "hebbian" else None
            g = net.groups[net.edge_vars[var].group if var else rule.group]
            e, pre, post = self._drawable[g.name]
            if not len(e):
                continue
            w = g.weight[e]
            src = np.asarray(sim.node(rule.src[0]))
            sig = self._edge_values(var, e) if var else None
            if rule.kind == "send":
                msg = w * src[pre]
            elif rule.kind == "read":
                msg = sig * src[pre]
            else:
                msg = w * src[pre] * np.asarray(sim.node(rule.src[1]))[post]
            top = [t for t in _top(np.abs(msg), self.E) if msg[t] != 0]
            for t in top:
                s = None if sig is None else _r(sig[t])
                out.append([j, int(e[t]), int(pre[t]), int(post[t]), _r(w[t]), _r(msg[t]), s])
        return out

    def _in_csr(self, g):
        if g.name not in self._csr:  # in-edges of each target: edge ids sorted by target
            order = np.argsort(g.indices, kind="stable")
            ptr = np.concatenate([[0], np.cumsum(np.bincount(g.indices, minlength=g.n_post))])
            self._csr[g.name] = (ptr, order)
        return self._csr[g.name]

    def _node_synapses(self, pop, i, sigma, with_sigma=True) -> list:
        """[{group, dir, sign, edges: [[other node, weight]]} | {..., var, edges: [[other, tracked k]]}] of node i."""
        out = []
        for g in self.net.groups.values():
            for direction in ("in", "out"):
                if (g.post if direction == "in" else g.pre) != pop:
                    continue
                if direction == "out":
                    e = np.arange(g.indptr[i], g.indptr[i + 1])
                    other, opop = g.indices[e], g.post
                else:
                    ptr, order = self._in_csr(g)
                    e = order[ptr[i] : ptr[i + 1]]
                    other, opop = g.source[e], g.pre
                evs = [ev for ev in self.net.edge_vars.values() if ev.group == g.name]
                if not evs:
                    keep = g.weight[e] != 0  # structural zeros are not synapses
                    e, other = e[keep], other[keep]
                    top = _top(g.weight[e], self.M)
                    out.append(
                        dict(
                            group=g.name,
                            dir=direction,
                            sign=_sign(g.name),
                            pop=opop,
                            total=int(len(e)),
                            edges=[[int(other[t]), _r(g.weight[e[t]])] for t in top],
                        )
                    )
                    continue
                for ev in evs if with_sigma else ():
                    vals = np.abs(np.asarray(sigma[ev.name])[e])
                    top = [t for t in _top(vals, min(self.M, self.Ms)) if vals[t] > 0]
                    edges = []
                    for t in top:
                        eid = int(e[t])
                        pos = self._tracked_pos[ev.name]
                        if eid not in pos:
                            pos[eid] = len(self.tracked[ev.name])
                            self.tracked[ev.name].append(eid)
                        edges.append([int(other[t]), pos[eid]])
                    out.append(
                        dict(
                            group=g.name,
                            dir=direction,
                            sign="",
                            pop=opop,
                            total=int(len(e)),
                            var=ev.name,
                            layer=list(self.net.edge_vars).index(ev.name) + 1,
                            edges=edges,
                        )
                    )
        return out

    # ---- stepping ----------------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.ids is not None and self._token >= len(self.ids) and not self._in_token

    def _snap(self, var):
        pop = self.net.node_variables[var]
        v = np.asarray(self.sim.node(var))[self.shown[pop]]
        nz = np.flatnonzero(v)
        return [nz.tolist(), [_r(a) for a in v[nz]]]

    def _record(self, frame, variables):
        ch = {}
        for var in variables:
            s = self._snap(var)
            if self._last.get(var, [[], []]) != s:
                ch[var] = s
                self._last[var] = s
        frame["ch"] = ch
        self.frames.append(frame)
        return frame

    def _step_one(self) -> dict:
        sim, k = self.sim, self.compiled.kernel
        if not self._in_token:  # the next token's input
            t = self._token
            sim.ingest(self._x0[t], self._y0[t], self._extra[t])
            self._sub, self._in_token = 0, True
            return self._record(dict(t=t, k=-1, ph=-1), ["X", "Y"] + list(self._extra[t]))
        r, ph = divmod(self._sub, 2)
        rnd = k.rounds[r]
        rules = rnd.communication if ph == 0 else rnd.computation
        written = list(dict.fromkeys(rule.dst for rule in rules if rule.dst in self.net.node_variables))
        before = {v: np.array(sim.node(v)) for v in written}
        drawn = self._messages(rnd) if ph == 0 else None
        counts = dict(self.events.count)
        sim.step()
        self._sub += 1
        frame = dict(t=self._token, k=r, ph=ph)
        if ph == 0:
            frame["ev"] = {
                j: int(self.events.count.get(m["key"], 0) - counts.get(m["key"], 0))
                for j, m in enumerate(self._meta["rounds"][r]["comm"])
            }
            frame["ed"] = drawn
            frame["more"] = {j: max(0, n - sum(1 for d in drawn if d[0] == j)) for j, n in frame["ev"].items()}
        frame["nch"] = {v: int((np.asarray(sim.node(v)) != before[v]).sum()) for v in written}
        if self._sub == 2 * len(k.rounds):  # the token is complete
            self._in_token = False
            top = softmax_top(sim.node(self.compiled.logits_var))
            frame["end"] = dict(
                pred=top[0][0],
                top=top,
                sig={ev: [_r(a) for a in getattr(m, ev)[cols, -1]] for ev, (m, cols) in self.sigmon.items()},
            )
            self._token += 1
        return self._record(frame, written)

    def step(self, by: str = "sub") -> list:
        """Advance by one frame ("sub"), to the end of the round ("round"), of the token ("token") or of the
        prompt ("all"); returns the new frames."""
        if by not in ("sub", "round", "token", "all"):
            raise ViewError(f"step: expected sub, round, token or all, got {by!r}")
        if self.ids is None:
            raise ViewError("step: no prompt loaded")
        new = []
        while not self.done:
            f = self._step_one()
            new.append(f)
            if by == "sub" or (by == "round" and f["ph"] == 1) or (by == "token" and "end" in f):
                break
        return new

    # ---- data for the page -----------------------------------------------------------------------------------
    def data(self) -> dict:
        d = self.meta()
        if self.ids is None:
            return d
        pa = self.pass_a
        d.update(
            ids=self.ids,
            labels=[self.label(b) for b in self.ids],
            shown={p: v.tolist() for p, v in self.shown.items()},
            names={p: [name("node", p, i, self.compiled.weights.d) for i in v] for p, v in self.shown.items()},
            synapses=self.synapses,
            tracked={k: len(v) for k, v in self.tracked.items()},
            frames=self.frames,
            total_frames=len(self.ids) * (1 + 2 * len(self.compiled.kernel.rounds)),
            notes=self.notes(),
            byte_labels=[self.label(b) for b in range(self.compiled.weights.V)],
            pass_a=dict(pred=pa["logits"].argmax(-1).tolist()),
            chars=[char(b) for b in range(self.compiled.weights.V)],
            layout=self.layout,
            sig_edges=self._sigma_edges(),
            tensor=self.tensor,
            encoding=dict(
                task=self.task, how=self.how, typed=bytes(b % 256 for b in self.typed).decode("utf-8", "replace")
            ),
            tour=self.tour(),
            fact=self.fact,
        )
        return d

    def _sigma_edges(self) -> dict:
        """{edge variable: [[tracked k, edge, pre, post]]}: the tracked synapses whose two ends are shown (the
        page's σ layer; their values are the frames' end.sig[var][k])."""
        out = {}
        for var, eids in self.tracked.items():
            g = self.net.groups[self.net.edge_vars[var].group]
            if not eids:
                continue
            e = np.asarray(eids, np.int64)
            pre = np.searchsorted(g.indptr, e, side="right") - 1
            post = g.indices[e]
            pin, qin = self._pos[g.pre], self._pos[g.post]
            out[var] = [
                [k, int(e[k]), int(pre[k]), int(post[k])] for k in range(len(e)) if pre[k] in pin and post[k] in qin
            ]
        return out

    def tour(self) -> list:
        """The guided tour: one token (the first question of a recall prompt, else the first token) through the
        rounds of Table 1(b), as steps {frame, title, text, pick (a variable: select the shown node where it is
        largest), glow (a rule kind whose drawn edges to highlight)}. Frames are indices into data().frames."""
        if self.ids is None:
            return []
        R = len(self.compiled.kernel.rounds)
        t = self._tour_token()
        base = t * (1 + 2 * R)
        rounds = self._meta["rounds"]
        first = lambda test: next((r for r, rd in enumerate(rounds) if test(rd)), None)  # noqa: E731
        last = lambda test: next((r for r in reversed(range(R)) if test(rounds[r])), None)  # noqa: E731
        has = lambda kind, where="comm": lambda rd: any(m["kind"] == kind for m in rd[where])  # noqa: E731
        sends_x = lambda rd: any(m["kind"] == "send" and m["dst"] in ("Xe", "Xi") for m in rd["comm"])  # noqa: E731
        steps = [(None, -1, "input", None, None)]
        for r, ph, key, pick, glow in (
            (first(sends_x), 0, "excite", None, None),
            (first(has("threshold", "comp")), 1, "fire", "X", None),
            (first(has("read")), 0, "read", None, "read"),
            (first(has("hebbian")), 0, "write", None, "hebbian"),
            (first(has("gate", "comp")), 1, "gate", "Y", None),
            (last(has("read")), 0, "recall", None, "memory" if self.fact else "read"),
            (R - 1, 1, "predict", None, None),
        ):
            if r is not None:
                steps.append((r, ph, key, pick, glow))
        out = []
        for r, ph, key, pick, glow in steps:
            f = base if r is None else base + 1 + 2 * r + ph
            title, text = TOUR[key]
            if key == "recall" and self.fact:
                fact = self.fact
                text = TOUR_FACT.format(**fact)
                if abs(fact["p_after"] - fact["p_before"]) < 0.01 * max(fact["p_before"], 1e-12):
                    text += (
                        " Almost no change: this model has not learned to recall with them (untrained or undertrained)."
                    )
            out.append(
                dict(frame=f, key=key, title=title, text=text.format(tok=self.label(self.ids[t])), pick=pick, glow=glow)
            )
        return out

    def _show_fact_neurons(self):
        """The neurons at both ends of the synapses that hold the tour's fact are shown too."""
        for var, eids in (self.fact or {}).get("edges", {}).items():
            g = self.net.groups[self.net.edge_vars[var].group]
            ends = np.concatenate([np.searchsorted(g.indptr, eids, side="right") - 1, g.indices[eids]])
            self.shown["neurons"] = np.union1d(self.shown["neurons"], ends).astype(np.int64)

    def _track_fact_edges(self):
        """The sigma of the synapses that hold the tour's fact is tracked (recorded after every token)."""
        for var, eids in (self.fact or {}).get("edges", {}).items():
            for eid in eids:
                if eid not in self._tracked_pos[var]:
                    self._tracked_pos[var][eid] = len(self.tracked[var])
                    self.tracked[var].append(eid)

    def _tour_token(self) -> int:
        """The token the tour follows: the first after ':' (a recall prompt's first question), else the first."""
        sep = self.ids.index(ord(":")) if ord(":") in self.ids else -1
        return sep + 1 if 0 <= sep < len(self.ids) - 1 else 0

    def _fact(self):
        """The fact the tour's question asks for (a recall prompt on a dense compile without rotation): the
        synapses that hold it (bdh.teach.memory.memory_synapses; the MEMORY_DRAWN strongest per layer are
        drawn) and the demo's ablation run now (memory.ablate: those synapses zeroed after the facts, the
        question asked again). None where it does not apply."""
        from bdh_gpu.data import RECALL_KEYS, RECALL_PAIR_BASE, RECALL_VALUES

        from .memory import ablate, memory_synapses

        ids, q, nv = self.ids, self._tour_token(), len(RECALL_VALUES)
        if self.task != "recall" or self.compiled.name != "dense" or ord(":") not in ids or q == 0:
            return None
        sep = ids.index(ord(":"))
        pairs = {p: self.label(ids[p]) for p in range(sep) if RECALL_PAIR_BASE <= ids[p] < RECALL_PAIR_BASE + 16 * nv}
        p = next((p for p in pairs if RECALL_KEYS[(ids[p] - RECALL_PAIR_BASE) // nv] == ids[q]), None)
        if p is None:
            return None
        answer = RECALL_VALUES[(ids[p] - RECALL_PAIR_BASE) % nv]
        px, py = self.pass_a["x"], self.pass_a["y"]
        try:
            mems = memory_synapses(self.compiled, ids, px, py, pairs, {p: (q, answer)})
        except ValueError:  # a rotation (RoPE): the attribution does not apply
            return None
        if not mems or not any(len(e) for e in mems[0].edges.values()):
            return None
        m = mems[0]
        ablate(self.compiled, ids, [m], sep, self.backend)
        return dict(
            label=m.label,
            answer=chr(answer),
            edges={v: [int(e) for e in idx[:MEMORY_DRAWN]] for v, idx in m.edges.items() if len(idx)},
            held=int(sum(len(idx) for idx in m.edges.values())),
            p_before=_r(m.p_before),
            p_after=_r(m.p_after),
        )

    def notes(self) -> list:
        out = []
        n = self.net.n
        if len(self.shown["neurons"]) < n:
            more = (
                "type an index to add one"
                if getattr(self, "serving", False)
                else "run bdh view --serve to open any other on demand"
            )
            out.append(
                f"Showing the {len(self.shown['neurons'])} most active of n = {n:,} neurons (most often "
                f"y > 0 over the prompt); {more}."
            )
        for p in self.net.populations.values():
            if p.name not in ("neurons", "out") and p.size > self.hub_cap:
                out.append(f"Population {p.name}: showing the first {self.hub_cap} of {p.size} nodes.")
        return out

    # ---- a node on demand (--serve) -------------------------------------------------------------------------
    def node(self, pop: str, i: int) -> dict:
        """Values and synapses of any node, shown or not; sigma series of its synapses by replaying the tokens
        stepped so far on a fresh simulator (bounded by max_prompt)."""
        if self.ids is None:
            raise ViewError("node: no prompt loaded")
        if pop not in self.net.populations:
            raise ViewError(f"node: unknown population {pop!r}; known: {', '.join(self.net.populations)}")
        size = self.net.populations[pop].size
        if not 0 <= i < size:
            raise ViewError(f"node: index must lie in [0, {size - 1}] for population {pop}, got {i}")
        state = self.sim.state
        values = {_qual(pop, v): _r(state.nodes[_qual(pop, v)][i]) for v in self.net.populations[pop].variables}
        syn = self._node_synapses_untracked(pop, i, state.edges)
        return dict(pop=pop, index=i, values=values, synapses=syn, tokens=self._token)

    def _node_synapses_untracked(self, pop, i, sigma):
        saved = (self.tracked, self._tracked_pos)
        self.tracked = {ev: [] for ev in self.net.edge_vars}
        self._tracked_pos = {ev: {} for ev in self.net.edge_vars}
        try:
            syn = self._node_synapses(pop, i, sigma)
            want = {ev: list(e) for ev, e in self.tracked.items() if e}
        finally:
            self.tracked, self._tracked_pos = saved
        series = {ev: [[] for _ in e] for ev, e in want.items()}
        if want and self._token:
            replay = GraphRunner(self.compiled, self.backend, device=self.device)
            for _ in replay.feed(self.ids[: self._token]):
                edges = replay.sim.state.edges
                for ev, e in want.items():
                    for k, eid in enumerate(e):
                        series[ev][k].append(_r(edges[ev][eid]))
        for s in syn:
            if "var" in s:
                s["edges"] = [[o, series[s["var"]][k]] for o, k in s["edges"]]
        return syn


# ---- the page --------------------------------------------------------------------------------------------------


def _nz(v) -> list:
    """[positions, values] of the non-zero entries of v (7 significant digits)."""
    nz = np.flatnonzero(v)
    return [nz.tolist(), [_r(a) for a in np.asarray(v)[nz]]]


def _asset(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


def page(data: dict, serve: bool = False) -> str:
    """The viewer page: `data` embedded as JSON (with `</` escaped), the CSS and JS of view.css / view.js inline."""
    blob = json.dumps(dict(data, mode="serve" if serve else "static"), separators=(",", ":"))
    blob = blob.replace("</", "<\\/")
    title = html.escape(data.get("title", "bdh view"))
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>bdh view: {title}</title>"
        f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<style>{_asset('view.css')}</style></head><body>{_asset('view.html')}"
        f"<script type='application/json' id='bdh-data'>{blob}</script>"
        f"<script>{_asset('view.js')}</script></body></html>"
    )


def write_page(path: str, data: dict) -> str:
    """Write the static page atomically; returns the path."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page(data))
    os.replace(tmp, path)
    return path


def view_page(model_or_compiled, ids, path, how=None, backend="numba", **kw) -> tuple[str, ViewSession]:
    """Compile (if needed), step `ids` through the whole graph and write the static page at `path`. Ids that hold
    recall fact bytes and ':' are a recall prompt (task "recall": the tour finds the fact's synapses); a model (not
    a compile) puts the tensor model's values beside the graph's (or pass model=)."""
    from bdh_gpu.data import RECALL_PAIR_BASE
    from equivalence import TensorRunner, compile_model

    compiled = isinstance(model_or_compiled, Compiled)
    c = model_or_compiled if compiled else compile_model(TensorRunner(model_or_compiled).model, how)
    if not compiled:
        kw.setdefault("model", model_or_compiled)
    recall = ord(":") in ids and any(RECALL_PAIR_BASE <= b < RECALL_PAIR_BASE + 128 for b in ids)
    kw.setdefault("task", "recall" if recall else "text")
    s = ViewSession(c, backend=backend, **kw)
    s.load(ids)
    s.step("all")
    return write_page(path, s.data()), s


def _round_meta(k) -> list:
    """Each round of the kernel as the page lists it: its label, layer, communication rules (with the key that finds
    their messages in a frame, and the sign of a send) and computation rules."""
    layer_of = [l + 1 for l, layer in enumerate(k.layers) for _ in layer]
    rounds = []
    for r, rnd in enumerate(k.rounds):
        comm = []
        for rule in rnd.communication:
            if rule.kind == "send":
                key = rule.group
            else:
                key = f"{rule.src[1]}.read" if rule.kind == "read" else f"{rule.dst}.write"
            sign = _sign(rule.group) if rule.kind == "send" else ""
            var = rule.src[1] if rule.kind == "read" else rule.dst if rule.kind == "hebbian" else None
            comm.append(
                dict(
                    text=_rule_text(rule), kind=rule.kind, dst=rule.dst, key=key, sign=sign, src=list(rule.src), var=var
                )
            )
        comp = [
            dict(text=_rule_text(rule), kind=rule.kind, dst=rule.dst, src=list(rule.src)) for rule in rnd.computation
        ]
        rounds.append(dict(label=rnd.label or "", layer=layer_of[r], comm=comm, comp=comp))
    return rounds


def _rule_text(rule) -> str:
    """A rule as the page shows it: the kernel's notation with the synapse states named as everywhere else
    (sigma_0 -> σ_1: layers count from 1, bdh.teach.names)."""
    import re

    from bdh.teach import names

    return re.sub(r"\bsigma_\d+\b", lambda m: names.state_of(m.group(0)), str(rule))
