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
ev: {rule index: messages sent} (communication), nch: {variable: nodes changed (of the whole population)},
end: {pred, top: [[byte, logit]], sig: {edge variable: [sigma of the tracked synapses]}} (a token's last frame)}.

Size: at most `neurons` neurons (the most active of pass A) and `hub_cap` nodes of every other population are
shown; per shown node the `synapses` strongest edges of each group and the `synapses` largest |sigma| of each
edge variable. At paper-25m (n = 32768) that keeps the page to a few MB; `--serve` adds any node on demand.
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

from . import names
from .demo import byte_label

MAX_PROMPT = 256  # bytes a page or a server session may step (the graph runs token by token)
NEURONS = 256  # neurons shown (the most active first)
HUB_CAP = 1024  # nodes shown of every other population
SYNAPSES = 8  # strongest edges per group and largest |sigma| per edge variable, per node
HERE = os.path.dirname(os.path.abspath(__file__))


def _top(v, k):
    """Indices of the k largest entries of v, largest first (ties by index); O(len(v)) for long v."""
    v = np.asarray(v)
    if len(v) > 4 * k:
        cand = np.argpartition(-v, k)[:k]
        return cand[np.lexsort((cand, -v[cand]))]
    return np.argsort(-v, kind="stable")[:k]


class ViewError(InputError, ValueError):
    """Bad input to the viewer (prompt too long, unknown node, ...): one line (a bdh.errors.InputError)."""


def _r(v) -> float:
    """A float rounded to 7 significant digits (what the page shows and the tests compare against)."""
    return float(f"{float(v):.7g}")


def _sign(group: str) -> str:
    """'E' for an excitatory group (name ends in _e), 'I' for an inhibitory one (_i), '' otherwise."""
    return "E" if group.endswith("_e") else "I" if group.endswith("_i") else ""


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
    ):
        for name, v in (("neurons", neurons), ("hub_cap", hub_cap), ("synapses", synapses), ("max_prompt", max_prompt)):
            if int(v) < 1:
                raise ViewError(f"{name}: expected an integer >= 1, got {v}")
        self.compiled, self.backend, self.device = compiled, backend, device
        self.K, self.hub_cap, self.M, self.max_prompt = int(neurons), int(hub_cap), int(synapses), int(max_prompt)
        self.title, self.label = title, label
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
            dict(name=ev.name, label=names.state_of(ev.name), group=ev.group, layer=i + 1, kind=ev.kind)
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
        ids = [int(b) for b in ids]
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
                self.shown[p.name] = np.arange(min(p.size, self.hub_cap))
        self._pos = {p: {int(i): k for k, i in enumerate(v)} for p, v in self.shown.items()}
        # synapses of every shown node, and the sigma edges to track
        self.tracked = {ev: [] for ev in self.net.edge_vars}
        self._tracked_pos = {ev: {} for ev in self.net.edge_vars}
        self.synapses = {p: [self._node_synapses(p, int(i), final) for i in v] for p, v in self.shown.items()}
        # pass B: a fresh simulator, stepped sub-round by sub-round
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
        self.seconds = {"pass A": time.perf_counter() - t0}
        return self.data()

    def _in_csr(self, g):
        if g.name not in self._csr:  # in-edges of each target: edge ids sorted by target
            order = np.argsort(g.indices, kind="stable")
            ptr = np.concatenate([[0], np.cumsum(np.bincount(g.indices, minlength=g.n_post))])
            self._csr[g.name] = (ptr, order)
        return self._csr[g.name]

    def _node_synapses(self, pop, i, sigma) -> list:
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
                for ev in evs:
                    vals = np.abs(np.asarray(sigma[ev.name])[e])
                    top = [t for t in _top(vals, self.M) if vals[t] > 0]
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
        counts = dict(self.events.count)
        sim.step()
        self._sub += 1
        frame = dict(t=self._token, k=r, ph=ph)
        if ph == 0:
            frame["ev"] = {
                j: int(self.events.count.get(m["key"], 0) - counts.get(m["key"], 0))
                for j, m in enumerate(self._meta["rounds"][r]["comm"])
            }
        frame["nch"] = {v: int((np.asarray(sim.node(v)) != before[v]).sum()) for v in written}
        if self._sub == 2 * len(k.rounds):  # the token is complete
            self._in_token = False
            L = np.asarray(sim.node(self.compiled.logits_var))
            top = np.argsort(-L, kind="stable")[:5]
            frame["end"] = dict(
                pred=int(top[0]),
                top=[[int(b), _r(L[b])] for b in top],
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
            names={p: [names.node(p, i, self.compiled.weights.d) for i in v] for p, v in self.shown.items()},
            synapses=self.synapses,
            tracked={k: len(v) for k, v in self.tracked.items()},
            frames=self.frames,
            total_frames=len(self.ids) * (1 + 2 * len(self.compiled.kernel.rounds)),
            notes=self.notes(),
            byte_labels=[self.label(b) for b in range(self.compiled.weights.V)],
            pass_a=dict(pred=pa["logits"].argmax(-1).tolist()),
        )
        return d

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
            if p.name != "neurons" and p.size > self.hub_cap:
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
    """Compile (if needed), step `ids` through the whole graph and write the static page at `path`."""
    from equivalence import TensorRunner, compile_model

    c = (
        model_or_compiled
        if isinstance(model_or_compiled, Compiled)
        else compile_model(TensorRunner(model_or_compiled).model, how)
    )
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
            comm.append(dict(text=str(rule), kind=rule.kind, dst=rule.dst, key=key, sign=sign))
        comp = [dict(text=str(rule), kind=rule.kind, dst=rule.dst) for rule in rnd.computation]
        rounds.append(dict(label=rnd.label or "", layer=layer_of[r], comm=comm, comp=comp))
    return rounds
