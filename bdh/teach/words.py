"""The words of the teaching layer: the notation every report and the viewer explain, in one place."""

NOTATION = [
    ("n, d, L, h", "neurons, the low-rank dimension, layers, heads (a head is a block of N = n / h neurons)"),
    (
        "ℓ, layer ℓ",
        "layers count ℓ = 1..L as in the paper (layer 0: the input boundary); neurons and hubs count from 0",
    ),
    (
        "x_{t,ℓ}, y_{t,ℓ}",
        "activity of the neurons at token t after layer ℓ: x is excited by the layer's input, "
        "y is the part of x that passed the attention gate (both >= 0, most entries 0)",
    ),
    (
        "σ_ℓ(i→j)",
        "synaptic state of layer ℓ on the synapse from node i to node j: the Hebbian memory of the "
        "prompt so far (ρ = E σ in the tensor model); the code stores σ_1 under the key sigma_0, σ_2 under sigma_1",
    ),
    (
        "E, D_x, D_y",
        "the model's parameters: E (d x n) maps neurons to the d-dimensional space, D_x and D_y "
        "(n x d) map back; G_x = D_x E and G_y = D_y E are their n x n products, the wiring",
    ),
    (
        "q(i) → r(j) [G]",
        "a communication rule (paper, Def. 1): every node i sends q(i) along its edges of "
        "group G; node j adds up G(i,j) q(i) into r(j)",
    ),
    ("X(i), σ(i,j) → A(j)", "the state read: j gathers σ(i,j) X(i) over its incoming synapses"),
    ("X(i), Y(j) → σ(i,j)", "the Hebbian write: σ(i,j) grows by X(i) Y(j) (the two ends active together)"),
    (
        "(p − n)^+ → r",
        "threshold: r gains max(p − n, 0): an excitatory input p against an inhibitory n (integrate and fire)",
    ),
    ("q↓", "reset q to 0;  σ(i,j)↓1−u: decay by the fraction 1 − u, i.e. multiply σ by u (and rotate, with RoPE)"),
    (
        "Xe, Xi, Ye, Yi",
        "the excitatory (e) and inhibitory (i) counters of a neuron: Gx_e, Gy_e carry "
        "excitation, Gx_i, Gy_i inhibition (the E/I circuits of Table 1(b))",
    ),
    (
        "res, att, hub, out",
        "populations of helper nodes: res = the d residual-stream hubs and att = h x d "
        "attention hubs (official compile; att[h1,4] is slot 4 of head 1), hub = the 2d hubs "
        "of the circuit compile, out = the 256 output nodes whose values are the logits",
    ),
    ("β", "threshold that turns a weight matrix into a graph: edge i → j where the entry is >= β"),
    (
        "G(n,m), random low-rank",
        "graphs with no structure to compare against: uniformly random with the same "
        "n nodes and m edges; a random product D E of the same rank and scale",
    ),
]


# the glossary of docs/tutorial.md: a term the viewer shows -> its anchor (docs/tutorial.md#ANCHOR)
TUTORIAL = "docs/tutorial.md"
GLOSSARY = {
    "neuron": "g-neuron",
    "n, d, L, h, N": "g-dims",
    "token": "g-token",
    "layer": "g-layer",
    "x, y": "g-xy",
    "E, D_x, D_y": "g-parameters",
    "σ": "g-sigma",
    "ρ": "g-rho",
    "Hebbian write": "g-hebbian",
    "u, damping, ↓1−u": "g-damping",
    "ALiBi": "g-alibi",
    "RoPE": "g-rope",
    "official, paper, normfree": "g-variants",
    "LN": "g-ln",
    "logit, prediction": "g-logit",
    "population": "g-population",
    "hub": "g-hub",
    "synapse group [G]": "g-group",
    "excitatory, inhibitory": "g-ei",
    "X, Y, A, Xe, Xi, Ye, Yi": "g-neuron-vars",
    "hub variables": "g-hub-vars",
    "rule, ↓, (p − n)^+": "g-rule",
    "I&F": "g-if",
    "round, sub-round, communication, computation": "g-round",
    "4l, 4l+1, 4l+2, 4l+3": "g-round-labels",
    "compile": "g-compile",
    "β": "g-beta",
    "G(n,m), random low-rank, modularity": "g-baselines",
}


def glossary_link(term: str, base: str = "") -> str:
    """The link to `term`'s glossary entry: base + 'docs/tutorial.md#g-...' (KeyError for a term not there)."""
    return f"{base}{TUTORIAL}#{GLOSSARY[term]}"


def notation_html() -> str:
    import html

    rows = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in NOTATION)
    return f"<dl class='notation'>{rows}</dl>"
