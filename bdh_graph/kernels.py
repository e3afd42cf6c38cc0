"""Local kernels as data: the rules of the paper's Table 1, and the schedule that runs them.

Vocabulary (paper, Definition 1 and Table 1; reference page section 2):

- A *variable* is a node variable `X, Y, A, Xe, Xi, Ye, Yi` of the population "neurons", or `pop.V` for a
  variable `V` of another population `pop` (e.g. `hub.A`), or an *edge variable* `sigma_l` living on the edges
  of a synapse group (`Gs`).
- A *communication rule* moves values along the edges `i -> j` of a synapse group (the sum over incoming edges
  is PyG's message + aggregate; the Hebbian write is an edge update):

  ========================  =====================================  ====================================
  rule                      paper notation                          effect
  ========================  =====================================  ====================================
  send(q, r, G)             ``q(i) -> r(j)`` with weight ``G(i,j)`` ``r[j] += sum_i G(i,j) q[i]``
  read(q, s, r)             ``q(i), s(i,j) -> r(j)``                ``r[j] += sum_i s(i,j) q[i]``
  hebbian(p, q, s)          ``p(i), q(j) -> s(i,j)`` weight Gs      ``s(i,j) += Gs(i,j) p[i] q[j]``
  ========================  =====================================  ====================================

- A *computation rule* is local to a node (or to the synapses a node owns):

  ==========================  ===========================  ===========================================
  rule                        paper notation               effect
  ==========================  ===========================  ===========================================
  reset(q)                    ``q ↓``                      ``q = 0``
  threshold(p, n, r)          ``(p - n)^+ -> r``           ``r += max(p - n, 0)`` (integrate-and-fire)
  gate(p, n, g, r)            ``(p - n)^+, g -> r``        ``r += max(p - n, 0) * g``
  product(p, g, r)            ``p, g -> r``                ``r += p * g``
  damp(s)                     ``s(i,j) ↓ 1-u(i,j)``        ``s <- s U`` (damping, optional rotation)
  ==========================  ===========================  ===========================================

A `Round` is one communication sub-round then one computation sub-round. Communication rules of one
sub-round all read the state as it was at the start of the sub-round (checked: no rule of a sub-round reads a
variable another one writes); computation rules apply in order. A `Kernel` is a tuple of layers, each a tuple
of rounds; the scheduler (`bdh_graph.simulator.Simulator`) runs them round-robin, one token per pass, and reads
`X`, `Y` after each layer.

New computation rules are data plus a function: `register_rule("normalize", fn, local=True)` where
`fn(rule, values, ops) -> {variable: new_array}` gets the rule, a dict of the current arrays of the variables
the rule names (`rule.src` and `rule.dst`), and `ops` (`ops.xp` is numpy or torch, `ops.relu`, `ops.spike`).
The same function then runs on every backend.

Locality (what makes the graph the paper's BDH, and what lets it shard): a computation rule reads only its
own node's variables, so every variable it names lives in one population and the value it writes at node i
depends only on the values at node i; anything that crosses nodes must travel over edges, in a communication
sub-round. `register_rule` takes only rules declared `local=True`, and `validate` checks every computation
rule: one population per rule, and a probe (`check_local`) that perturbs one node's inputs and requires every
other node's output to stay bit-identical. A rule that reads a whole group (a LayerNorm over d hubs, say) is
refused; build it from rounds instead (`equivalence.rules.layer_norm_rounds`: one round over a clique of edges
carries each hub's value and its square, so every hub receives the group's mean and mean square).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import GraphError
from .ops import numpy_ops

COMMUNICATION = ("send", "read", "hebbian")


@dataclass(frozen=True)
class Rule:
    """One local rule. `src`: variables read; `dst`: the variable written; `group`: the synapse group
    (communication rules); `params`: extra constants for registered rules (a tuple of (name, value))."""

    kind: str
    src: tuple = ()
    dst: str | None = None
    group: str | None = None
    params: tuple = ()
    text: str = field(default="", compare=False)

    def __str__(self):
        return self.text or f"{self.kind}({', '.join(self.src)} -> {self.dst})"

    def param(self, name, default=None):
        return dict(self.params).get(name, default)


@dataclass(frozen=True)
class Round:
    """One round: a communication sub-round (rules on edges) then a computation sub-round (rules at nodes)."""

    communication: tuple = ()
    computation: tuple = ()
    label: str = ""

    def __str__(self):
        comm = "; ".join(map(str, self.communication)) or "-"
        comp = "; ".join(map(str, self.computation)) or "-"
        return f"{self.label:<22} | {comm:<52} | {comp}"


@dataclass(frozen=True)
class Kernel:
    """A local kernel: `layers[l]` is the tuple of rounds of layer l+1; the outputs are read after each layer."""

    layers: tuple
    name: str = "kernel"

    @property
    def rounds(self):
        return tuple(r for layer in self.layers for r in layer)

    def __str__(self):
        lines = [f"{self.name}: {len(self.layers)} layer(s), {len(self.rounds)} rounds per token"]
        for l, layer in enumerate(self.layers, start=1):
            lines += [f"  layer {l}:"] + [f"    {r}" for r in layer]
        return "\n".join(lines)


# ---- rule constructors, in the paper's notation -------------------------------------------------------------


def send(q, r, group):
    return Rule("send", (q,), r, group, text=f"{q}(i) -> {r}(j) [{group}]")


def read(q, s, r):
    return Rule("read", (q, s), r, text=f"{q}(i), {s}(i,j) -> {r}(j)")


def hebbian(p, q, s):
    return Rule("hebbian", (p, q), s, text=f"{p}(i), {q}(j) -> {s}(i,j) [Gs]")


def reset(q):
    return Rule("reset", (), q, text=f"{q}↓")


def threshold(p, n, r):
    return Rule("threshold", (p, n), r, text=f"({p} - {n})^+ -> {r}")


def gate(p, n, g, r):
    return Rule("gate", (p, n, g), r, text=f"({p} - {n})^+, {g} -> {r}")


def product(p, g, r):
    return Rule("product", (p, g), r, text=f"{p}, {g} -> {r}")


def damp(s):
    return Rule("damp", (), s, text=f"{s}(i,j)↓1-u(i,j)")


def sigma_name(l, shared_sigma=False):
    """Edge-variable name of layer l's state (0-based l): `sigma_0, sigma_1, ...` or the shared `sigma`."""
    return "sigma" if shared_sigma else f"sigma_{l}"


# ---- Table 1(b): BDH with E/I circuits and thresholds ------------------------------------------------------

GROUPS = ("Gx_e", "Gx_i", "Gy_e", "Gy_i", "Gs")  # the synapse groups Table 1 names (the network's constructors)
DAMPING_ORDERS = ("eq6", "table1")
HEBBIAN_ORIENTATIONS = ("eq6", "printed")


def _check_choice(name, value, choices):
    if value not in choices:
        raise GraphError(f"{name}: expected one of {choices}, got {value!r}")


def table_1b(layers, *, shared_sigma=False, damping="eq6", hebbian_orientation="eq6"):
    """Table 1(b) of the paper for `layers` layers, equal to Eq. 6 by default.

    Our four rounds of layer l are the paper's rounds 4l+3 (of the previous layer), 4l, 4l+1, 4l+2: the paper's
    round 4l reads `A = sigma X` with `X = x_{t,l}`, which its round 4(l-1)+3 has just computed, so a token's
    pass starts with the `Y -> X` round (`x_{t,l} = x_{t,l-1} + ((Gx_e - Gx_i) y_{t,l-1})^+`) and, after layer
    l's four rounds, `X = x_{t,l}` and `Y = y_{t,l}`.

    damping: "eq6" = (read, write, damp), Eq. 6; "table1" = the table as printed, (read, damp, write), which
    sees one factor of U less (reference 2b). hebbian_orientation: "eq6" = `X(i), Y(j) -> sigma(i,j)`,
    i.e. `sigma[a, b] += y_{l-1}[a] x_l[b]`; "printed" = Table 1's `Y(i), X(j) -> sigma(i,j)` (reference 2a).
    """
    _check_choice("damping", damping, DAMPING_ORDERS)
    _check_choice("hebbian_orientation", hebbian_orientation, HEBBIAN_ORIENTATIONS)

    def layer(l):
        s = sigma_name(l, shared_sigma)
        write = hebbian("X", "Y", s) if hebbian_orientation == "eq6" else hebbian("Y", "X", s)
        return (
            Round(
                communication=(send("Y", "Xe", "Gx_e"), send("Y", "Xi", "Gx_i")),
                computation=(threshold("Xe", "Xi", "X"),),
                label="4l+3: Y to X (I&F)",
            ),
            Round(
                communication=(read("X", s, "A"),),
                computation=(damp(s),) if damping == "table1" else (),
                label="4l: read state",
            ),
            Round(
                communication=(write,),
                computation=(reset("Xe"), reset("Xi"), reset("Y")) + ((damp(s),) if damping == "eq6" else ()),
                label="4l+1: Hebbian write",
            ),
            Round(
                communication=(send("A", "Ye", "Gy_e"), send("A", "Yi", "Gy_i")),
                computation=(gate("Ye", "Yi", "X", "Y"), reset("Ye"), reset("Yi"), reset("A")),
                label="4l+2: A to Y (gated)",
            ),
        )

    return Kernel(tuple(layer(l) for l in range(layers)), name="Table 1(b)")


def table_1a(layers, *, shared_sigma=False, damping="eq6", hebbian_orientation="eq6"):
    """Table 1(a): the simplified kernel, no inhibitory graphs and no thresholds.

    It uses only `Gx_e` (the paper's `Gx`) and `Gy_e` (`Gy`): `Y(i) -> X(j) [Gx]` and `A(i) -> Ye(j) [Gy]`,
    then the gating product `Ye, X -> Y` (Eq. 6's `⊙ x`). With zero inhibition and `sigma >= 0` every `(.)^+`
    of Table 1(b) acts on a non-negative number, so both kernels compute the same thing
    (tests/test_graph_equivalence.py::test_table_1a_equals_1b_without_inhibition).
    """
    _check_choice("damping", damping, DAMPING_ORDERS)
    _check_choice("hebbian_orientation", hebbian_orientation, HEBBIAN_ORIENTATIONS)

    def layer(l):
        s = sigma_name(l, shared_sigma)
        write = hebbian("X", "Y", s) if hebbian_orientation == "eq6" else hebbian("Y", "X", s)
        return (
            Round(communication=(send("Y", "X", "Gx_e"),), label="4l+3: Y to X"),
            Round(
                communication=(read("X", s, "A"),),
                computation=(damp(s),) if damping == "table1" else (),
                label="4l: read state",
            ),
            Round(
                communication=(write,),
                computation=(reset("Y"),) + ((damp(s),) if damping == "eq6" else ()),
                label="4l+1: Hebbian write",
            ),
            Round(
                communication=(send("A", "Ye", "Gy_e"),),
                computation=(product("Ye", "X", "Y"), reset("Ye"), reset("A")),
                label="4l+2: A to Y",
            ),
        )

    return Kernel(tuple(layer(l) for l in range(layers)), name="Table 1(a)")


# ---- computation rules: one function each, shared by all backends -------------------------------------------


def _reset(rule, v, ops):
    return {rule.dst: ops.zeros_like(v[rule.dst])}


def _threshold(rule, v, ops):
    p, n = rule.src
    return {rule.dst: v[rule.dst] + ops.spike(ops.relu(v[p] - v[n]))}


def _gate(rule, v, ops):
    p, n, g = rule.src
    return {rule.dst: v[rule.dst] + ops.spike(ops.relu(v[p] - v[n])) * ops.spike(v[g])}


def _product(rule, v, ops):
    p, g = rule.src
    return {rule.dst: v[rule.dst] + ops.spike(v[p]) * ops.spike(v[g])}


def apply_rule(rule, nodes, ops):
    """Run node-local computation `rule` on `nodes` ({variable: array}); returns {rule.dst: new array}. The one
    call every backend (and the locality probe, and `bdh_graph.trace`) makes into COMPUTATION_RULES."""
    names = rule.src + ((rule.dst,) if rule.dst else ())
    return COMPUTATION_RULES[rule.kind](rule, {v: nodes[v] for v in names}, ops)


COMPUTATION_RULES: dict[str, Callable] = {
    "reset": _reset,
    "threshold": _threshold,
    "gate": _gate,
    "product": _product,
}
EDGE_COMPUTATION = ("damp",)  # implemented by each backend (it touches synapses, with the rotation's pairing)


def register_rule(kind, fn, *, local):
    """Register a computation rule `fn(rule, values, ops) -> {var: array}` under `kind`.

    `local=True` declares that the rule is node-local (the value written at node i depends only on the rule's
    variables at node i); it is required, and `validate` checks it on every kernel that uses the rule."""
    if kind in COMMUNICATION or kind in EDGE_COMPUTATION or kind in _BUILTIN:
        raise GraphError(f"register_rule: {kind!r} is a built-in rule kind and cannot be replaced")
    if local is not True:
        raise GraphError(
            f"register_rule: rule {kind!r} must be node-local (local=True): a rule reads only its own "
            "node's variables; move what crosses nodes onto edges (a communication rule)"
        )
    COMPUTATION_RULES[kind] = fn


_BUILTIN = tuple(COMPUTATION_RULES)
_PROBE_NODES = 3  # nodes perturbed, one at a time, by the locality probe


# ---- validation: known names, one population per computation rule, and the locality probe -------------------


def _not_local(rule, where, what):
    return GraphError(
        f"{where}rule {rule} is not node-local: {what}; a rule reads only its own node (send what "
        "crosses nodes over edges)"
    )


def _same(a, b):
    return (a == b) | (np.isnan(a) & np.isnan(b))


def _run_rule(rule, values, ops, where):
    """The rule's output array on copies of `values`; GraphError if it writes anything but its own target."""
    with np.errstate(all="ignore"):
        out = apply_rule(rule, {v: a.copy() for v, a in values.items()}, ops)
    if set(out) != {rule.dst}:
        raise GraphError(
            f"{where}rule {rule} writes {sorted(out)}; a computation rule writes only its own target {rule.dst!r}"
        )
    return np.asarray(out[rule.dst], dtype=np.float64)


def _probe_one_node(rule, run, base, ref, rng, size, where):
    """1. change one node's inputs (a few nodes, one at a time): every other node's output stays the same."""
    for k in rng.choice(size, min(size, _PROBE_NODES), replace=False):
        poked = {v: a.copy() for v, a in base.items()}
        for a in poked.values():
            a[k] = a[k] * 1.5 + 0.25
        moved = ~_same(run(poked), ref)
        moved[k] = False
        if moved.any():
            raise _not_local(
                rule, where, f"changing node {k}'s inputs changed {rule.dst} at node {int(np.argmax(moved))}"
            )


def _probe_sub_population(rule, run, base, ref, rng, size, where):
    """2. a sub-population (one node, half of them) computes the same values as the whole."""
    for m in (1, max(1, size // 2)):
        S = np.sort(rng.choice(size, m, replace=False))
        try:
            part = run({v: a[S] for v, a in base.items()})
        except GraphError:
            raise
        except Exception as e:  # e.g. a reshape over a whole group
            raise _not_local(rule, where, f"it fails on a sub-population of {m} node(s) ({type(e).__name__})") from e
        if part.shape != (m,) or not _same(part, ref[S]).all():
            raise _not_local(
                rule, where, f"on a sub-population of {m} node(s) it computes other values than on the whole"
            )


def check_local(rule, size, where=""):
    """Probe that computation `rule` is node-local on a population of `size` nodes; GraphError if not.

    Runs the rule on seeded random values of its variables, then again with one node's inputs changed (a few
    nodes, one at a time): the outputs at every other node must be bit-identical. A local rule passes always;
    a rule that reads any other node (a sum, a mean, a shift over the population) fails the first probe whose
    node it mixes in, which for a group-wide or population-wide read is the first probe.
    """
    ops = numpy_ops(None)
    names = tuple(dict.fromkeys(rule.src + ((rule.dst,) if rule.dst else ())))
    rng = np.random.default_rng(0)
    run = lambda values: _run_rule(rule, values, ops, where)  # noqa: E731
    for base in (
        {v: rng.uniform(0.5, 2.0, size) for v in names},  # positive, away from every threshold
        {v: rng.normal(0.0, 1.0, size) for v in names},  # signed
    ):
        ref = run(base)
        _probe_one_node(rule, run, base, ref, rng, size, where)
        _probe_sub_population(rule, run, base, ref, rng, size, where)


def _need(where, var, kinds, rule, node_vars, edge_vars):
    pool = node_vars if kinds == "node" else edge_vars
    if var not in pool:
        raise GraphError(f"{where}: unknown {kinds} variable {var!r} in rule {rule}; known: {sorted(pool)}")


def _check_communication(where, rule, node_vars, edge_vars, groups):
    """A send / read / hebbian rule names known variables and a group whose ends match its variables'."""
    need = lambda var, kinds: _need(where, var, kinds, rule, node_vars, edge_vars)  # noqa: E731
    if rule.kind not in COMMUNICATION:
        raise GraphError(f"{where}: {rule.kind!r} is not a communication rule; expected one of {COMMUNICATION}")
    if rule.kind == "send":
        if rule.group not in groups:
            raise GraphError(f"{where}: unknown synapse group {rule.group!r} in rule {rule}; known: {sorted(groups)}")
        need(rule.src[0], "node"), need(rule.dst, "node")
        pre, post = groups[rule.group]
        ends, lives = (node_vars[rule.src[0]], node_vars[rule.dst]), f"group {rule.group} goes"
    elif rule.kind == "read":
        need(rule.src[0], "node"), need(rule.src[1], "edge"), need(rule.dst, "node")
        pre, post = groups[edge_vars[rule.src[1]]]
        ends, lives = (node_vars[rule.src[0]], node_vars[rule.dst]), f"{rule.src[1]} lives on"
    else:
        need(rule.src[0], "node"), need(rule.src[1], "node"), need(rule.dst, "edge")
        pre, post = groups[edge_vars[rule.dst]]
        if (node_vars[rule.src[0]], node_vars[rule.src[1]]) != (pre, post):
            raise GraphError(
                f"{where}: rule {rule} pairs {node_vars[rule.src[0]]}(i), {node_vars[rule.src[1]]}(j), "
                f"but {rule.dst} lives on {pre} -> {post}"
            )
        return
    if ends != (pre, post):
        raise GraphError(f"{where}: rule {rule} goes {ends[0]} -> {ends[1]}, but {lives} {pre} -> {post}")


def _check_computation(where, rule, node_vars, edge_vars):
    """A computation rule of a known kind whose variables are known and of one population; that population."""
    if rule.kind == "damp":
        _need(where, rule.dst, "edge", rule, node_vars, edge_vars)
        return None
    if rule.kind not in COMPUTATION_RULES:
        raise GraphError(
            f"{where}: unknown rule kind {rule.kind!r}; known: "
            f"{sorted(COMPUTATION_RULES) + list(EDGE_COMPUTATION)} (add one with register_rule)"
        )
    names = rule.src + ((rule.dst,) if rule.dst else ())
    for var in names:
        _need(where, var, "node", rule, node_vars, edge_vars)
    pops = {node_vars[v] for v in names}
    if len(pops) > 1:
        raise GraphError(
            f"{where}: rule {rule} is not node-local: it names variables of populations "
            f"{sorted(pops)}; a computation rule reads only its own node's variables"
        )
    return next(iter(pops), None)


def validate(kernel, node_vars, edge_vars, groups, sizes=None):
    """Check that every rule names known variables, groups and kinds, and that every computation rule is
    node-local (one population, `check_local`); one-line GraphError otherwise.

    node_vars: {var: population}; edge_vars: {name: group}; groups: {name: (pre, post)};
    sizes: {population: number of nodes} (enables the locality probe of computation rules).
    """
    probed = set()
    for k, rnd in enumerate(kernel.rounds):
        where = f"kernel round {k} ({rnd.label or 'unlabelled'})"
        written, read_vars = set(), set()
        for rule in rnd.communication:
            _check_communication(where, rule, node_vars, edge_vars, groups)
            read_vars |= set(rule.src)
            written.add(rule.dst)
        clash = written & read_vars
        if clash:
            raise GraphError(f"{where}: communication rules of one sub-round both read and write {sorted(clash)}")
        for rule in rnd.computation:
            pop = _check_computation(where, rule, node_vars, edge_vars)
            if sizes is not None and pop is not None and (rule, pop) not in probed:
                check_local(rule, sizes[pop], f"{where}: ")
                probed.add((rule, pop))
