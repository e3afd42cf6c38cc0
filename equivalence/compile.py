"""Compilers from a BDH-GPU model (`bdh_gpu.BDH`) to a BDH neuron graph (`bdh_graph.Network` + kernel).

  dense     Observation 4 / Eq. 9 (normfree): Gx = D_x E and Gy = D_y E as n x n graphs, split
            Gx_e = (Gx)^+, Gx_i = (-Gx)^+ (same for Gy), Gs = ones, U = retention; the paper's Table 1(b) kernel.
  circuit   Claim 3 + Claim 4 (normfree): 2d hub nodes between neurons. E' = [E^+; E^-] (neurons -> hubs),
            De, Di (hubs -> neurons) with De E' - Di E' = D_x E; state on 2dn synapses neurons -> hubs holding
            the split rho = E sigma = sigma_+ - sigma_-; no n x n matrix anywhere.
  official  the released LayerNorm model (and the `paper` variant, Eq. 8) neuron by neuron: residual hubs (d),
            per-head attention hubs (h x d), LN as two rounds of local rules over a clique of edges per group
            (equivalence.rules.layer_norm_rounds): every rule reads only its own node and its edges.

Every compile adds an output population `out` of V = 256 motor nodes: logits = Pe - Pi, with the read-out
weights split into excitatory and inhibitory groups. Input (the sensory boundary) enters as the Simulator's
x_{t,0} = y_{t,0} (dense, circuit, official-on-paper) or as the raw embedding row at the residual hubs
(official), see `Compiled.token_inputs`. The weights are taken from the model in float64 numpy; torch is
needed only to read them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bdh_graph import Network, kernels as K

from .rules import LN_EPS, LN_VARIABLES, clique, layer_norm_rounds, linear

COMPILES = ("dense", "circuit", "official")
APPLIES = {"dense": ("normfree",), "circuit": ("normfree",), "official": ("official", "paper")}
DENSE_MAX_N = 4096  # default compile of a normfree model: dense up to this n, circuit above


def pos(a):
    return np.maximum(a, 0.0)


def neg(a):
    return np.maximum(-a, 0.0)


@dataclass(frozen=True)
class Weights:
    """The model's parameters and U in float64 numpy, neuron index = head * N + i (paper names)."""
    variant: str
    n: int
    d: int
    h: int
    N: int
    L: int
    V: int
    E: np.ndarray        # (d, n)
    D_x: np.ndarray      # (n, d)
    D_y: np.ndarray      # (n, d)
    embed: np.ndarray    # (V, d)
    lm_head: np.ndarray  # (d, V)
    u: np.ndarray | None       # (n,) retention per key neuron, None when U has no damping
    theta: np.ndarray | None   # (n/2,) radians per token per neuron pair, None without RoPE

    @classmethod
    def of(cls, model) -> "Weights":
        """The matrices the model computes with (`model.effective_weights()`: constant gains folded in)."""
        C = model.config
        f = lambda t: t.detach().to("cpu").double().numpy().copy()
        ret = model.retention()
        w = model.effective_weights()
        return cls(C.variant, C.n, C.d, C.n_head, C.N, C.n_layer, C.vocab_size,
                   f(w["E"]), f(w["D_x"]).reshape(C.n, C.d), f(w["D_y"]).reshape(C.n, C.d),
                   f(w["embed"]), f(w["lm_head"]),
                   ret["u"] if C.uses_alibi else None, ret["theta"] if C.uses_rope else None)


@dataclass
class Compiled:
    """A compiled model: the network (with its kernel), the boundary and read-out maps, and a size report.

    `token_inputs(ids)` gives what enters the graph per token; `rho(state)` reads rho_l = E sigma_l (d, n) per
    layer from a NetworkState; `logits_var` is the output variable; `record` names hub variables worth
    comparing per layer (official: the residual stream `res.V`).
    """
    name: str
    variant: str
    weights: Weights
    network: Network
    boundary: str
    readout: str
    mapping: dict
    report: dict = field(default_factory=dict)
    logits_var: str = "out.L"
    record: dict = field(default_factory=dict)

    @property
    def kernel(self):
        return self.network.kernel

    def token_inputs(self, ids):
        """ids (T,) ints -> x0 (T, n), y0 (T, n), extra [{qualified variable: values}] per token."""
        W = self.weights
        ids = np.asarray(ids, dtype=np.int64)
        T = len(ids)
        if self.variant == "official":
            return np.zeros((T, W.n)), np.zeros((T, W.n)), [{"res.V": W.embed[i]} for i in ids]
        z = W.embed[ids]
        if self.variant == "paper":
            z = layer_norm(z)
        x0 = pos(z @ W.D_x.T)                                  # x_0 = y_0 = (D_x z)^+, as model.input_boundary
        return x0, x0.copy(), [{} for _ in ids]

    def rho(self, state):
        """rho_l (d, n) of every layer from a NetworkState (per-edge sigma), in the model's convention."""
        W = self.weights
        out = []
        for name in self.network.sigma_names:
            g = self.network.groups[self.network.edge_vars[name].group]
            M = g.matrix(state.edges[name]).toarray()
            if self.name == "dense":
                out.append(W.E @ M)                            # rho = E sigma
            elif self.name == "circuit":
                out.append(M[:W.d] - M[W.d:])                  # rho = sigma_+ - sigma_-
            else:                                              # per-head blocks (k d + a, k N + i)
                out.append(np.concatenate([M[k * W.d:(k + 1) * W.d, k * W.N:(k + 1) * W.N] for k in range(W.h)], 1))
        return out

    def summary(self) -> str:
        r = self.report
        pops = ", ".join(f"{k} {v}" for k, v in r["nodes"].items())
        return (f"{self.name} compile of {'an' if self.variant[0] in 'aeiou' else 'a'} {self.variant} model: nodes {r['nodes_total']:,} ({pops}); "
                f"edges {r['edges_total']:,}; synapses {r['synapses']:,} per layer; state {r['state_size']:,} floats; "
                f"{r['rounds_per_token']} rounds per token")


def layer_norm(z):
    """LN over the last axis, no affine, eps 1e-5 (numpy mirror of bdh_gpu.model.layer_norm)."""
    c = z - z.mean(-1, keepdims=True)
    return c / np.sqrt((c * c).mean(-1, keepdims=True) + LN_EPS)


def _size_report(net, state_groups):
    nodes = {p.name: p.size for p in net.populations.values()}
    edges = {g.name: g.nnz for g in net.groups.values()}
    syn = sum(net.groups[g].nnz for g in state_groups)
    return dict(nodes=nodes, nodes_total=sum(nodes.values()), edges=edges,
                edges_total=sum(v for k, v in edges.items() if k not in state_groups),
                synapses=syn, state_size=sum(net.groups[ev.group].nnz for ev in net.edge_vars.values()),
                layers=net.layers, rounds_per_token=len(net.kernel.rounds))


def _check_applies(model, how):
    v = model.config.variant
    if v not in APPLIES[how]:
        raise ValueError(f"compile {how!r} does not apply to variant {v!r} (it applies to "
                         f"{' and '.join(APPLIES[how])}; use {default_compile(model)!r})")


def default_compile(model) -> str:
    C = model.config
    if C.variant in APPLIES["official"]:
        return "official"
    return "dense" if C.n <= DENSE_MAX_N else "circuit"


def _output(net, src_pop, W_out):
    """Add the motor population `out` (V nodes) and the split read-out groups `src_pop -> out` from W_out (V, k)."""
    net.add_population("out", W_out.shape[0], variables=("Pe", "Pi", "L"))
    net.add_group("Wo_e", src_pop, "out", pos(W_out)).add_group("Wo_i", src_pop, "out", neg(W_out))


def _readout_round(src, reset=()):
    return K.Round(communication=(K.send(src, "out.Pe", "Wo_e"), K.send(src, "out.Pi", "Wo_i")),
                   computation=(linear(("out.Pe", "out.Pi"), "out.L", (1, -1)), K.reset("out.Pe"), K.reset("out.Pi"))
                   + tuple(K.reset(v) for v in reset),
                   label="read-out: logits")


# ---- dense: Observation 4 ------------------------------------------------------------------------------------

def compile_dense(model, *, damping="eq6", hebbian_orientation="eq6") -> Compiled:
    """Observation 4 / Eq. 9: BDH-Normfree is BDH with Gx_e - Gx_i = D_x E, Gy_e - Gy_i = D_y E, Gs = 1.

    O(n^2) memory. `damping` and `hebbian_orientation` pass to Table 1(b) (reference 2a, 2b): only the
    defaults reproduce Eq. 7 (tests/test_equiv_ambiguities.py).
    """
    _check_applies(model, "dense")
    W = Weights.of(model)
    Gx, Gy = W.D_x @ W.E, W.D_y @ W.E                                        # (n, n), row = receiving neuron
    net = Network.from_dense(Gx_e=pos(Gx), Gx_i=neg(Gx), Gy_e=pos(Gy), Gy_i=neg(Gy), Gs=np.ones((W.n, W.n)),
                             u=W.u, theta=W.theta, layers=W.L, damping=damping,
                             hebbian_orientation=hebbian_orientation)
    _output(net, "neurons", W.lm_head.T @ W.E)                               # logits = lm_head^T E y_L
    base = net.kernel
    layers = base.layers[:-1] + (base.layers[-1] + (_readout_round("Y"),),)
    net.with_kernel(K.Kernel(layers, name="Table 1(b) + read-out"))
    mapping = {"Gx_e, Gx_i": "(D_x E)^+, (-D_x E)^+  (n x n)", "Gy_e, Gy_i": "(D_y E)^+, (-D_y E)^+  (n x n)",
               "Gs": "all ones (n x n)", "sigma": "sigma_l (n x n) on Gs, value (y) neuron x key (x) neuron",
               "rho": "rho_l = E sigma_l", "U": "u per key neuron (ALiBi), rotation of key pairs (RoPE)",
               "out": "Wo_e - Wo_i = lm_head^T E  (256 x n)"}
    c = Compiled("dense", W.variant, W, net, "x_0 = y_0 = (D_x embed(i))^+ (model.input_boundary)",
                 "logits = lm_head^T E y_L at the 256 output nodes", mapping)
    c.report = _size_report(net, ["Gs"])
    return c


# ---- circuit: Claims 3 and 4 -----------------------------------------------------------------------------------

def hub_split(D):
    """Claim 3: (De, Di) from D (n, d), each (n, 2d), with De E' - Di E' = D E for E' = [E^+; E^-]."""
    return np.hstack([pos(D), neg(D)]), np.hstack([neg(D), pos(D)])


def compile_circuit(model) -> Compiled:
    """Claim 3's sparse circuit and Claim 4's sparse state, exact for Normfree (Eq. 7), O(nd) everything.

    Hubs `hub` (2d nodes) with their own variables: H = E' y_{l-1} (the non-negative split h_+ - h_- = E y_{l-1},
    held through the layer), A = the state read. Per layer:
      1. Y -> hub.H [E']                                  h = E' y_{l-1}
      2. hub.H -> Xe [De], hub.H -> Xi [Di]; (Xe - Xi)^+ -> X      x_l = x_{l-1} + (D_x E y_{l-1})^+
      3. X, sigma_l -> hub.A                              A = sigma_l x_l  (A_+ - A_- = rho x_l)
      4. X(i), hub.H(j) -> sigma_l(i,j); hub.A -> Ye [Gy_e], hub.A -> Yi [Gy_i]; damp; (Ye - Yi)^+, X -> Y
    The write uses H, this layer's copy of E y_{l-1} at the hubs: the layer offset of reference 5 disappears
    because the hubs keep their own variable while the neurons' Y moves on.
    """
    _check_applies(model, "circuit")
    W = Weights.of(model)
    n, d = W.n, W.d
    import scipy.sparse as sp
    Ep = np.vstack([pos(W.E), neg(W.E)])                                      # E' (2d, n)
    De, Di = hub_split(W.D_x)                                                 # (n, 2d)
    Gy_e, Gy_i = hub_split(W.D_y)                                             # Gy_e - Gy_i = D_y [I, -I]
    net = Network().add_population("neurons", n).add_population("hub", 2 * d, variables=("H", "A"))
    net.add_group("E'", "neurons", "hub", Ep).add_group("De", "hub", "neurons", De).add_group("Di", "hub", "neurons", Di)
    net.add_group("Gy_e", "hub", "neurons", Gy_e).add_group("Gy_i", "hub", "neurons", Gy_i)
    net.add_group("Gs", "neurons", "hub", sp.csc_matrix(np.ones((2 * d, n))))
    for l in range(W.L):
        net.add_edge_variable(K.sigma_name(l), "Gs", u=W.u, theta=W.theta)
    Wo = np.hstack([W.lm_head.T, -W.lm_head.T])                               # logits = lm^T (h_+ - h_-)
    _output(net, "hub", Wo)

    def layer(l):
        s = K.sigma_name(l)
        return (
            K.Round(communication=(K.send("Y", "hub.H", "E'"),), computation=(K.reset("Y"),),
                    label="Y to hubs (E')"),
            K.Round(communication=(K.send("hub.H", "Xe", "De"), K.send("hub.H", "Xi", "Di")),
                    computation=(K.threshold("Xe", "Xi", "X"), K.reset("Xe"), K.reset("Xi")),
                    label="hubs to X (I&F)"),
            K.Round(communication=(K.read("X", s, "hub.A"),), label="read state"),
            K.Round(communication=(K.hebbian("X", "hub.H", s), K.send("hub.A", "Ye", "Gy_e"),
                                   K.send("hub.A", "Yi", "Gy_i")),
                    computation=(K.damp(s), K.gate("Ye", "Yi", "X", "Y"), K.reset("Ye"), K.reset("Yi"),
                                 K.reset("hub.A"), K.reset("hub.H")),
                    label="write; A to Y (gated)"),
        )

    layers = [layer(l) for l in range(W.L)]
    layers[-1] = layers[-1] + (K.Round(communication=(K.send("Y", "hub.H", "E'"),), label="Y to hubs (E')"),
                               _readout_round("hub.H", reset=("hub.H",)))
    net.with_kernel(K.Kernel(tuple(layers), name="Claims 3+4 circuit"))
    mapping = {"E'": "[E^+; E^-] neurons -> hub (2d x n)", "De, Di": "[D_x^+, D_x^-], [D_x^-, D_x^+] hub -> neurons",
               "Gy_e, Gy_i": "[D_y^+, D_y^-], [D_y^-, D_y^+] hub -> neurons (= D_y [I, -I])",
               "Gs": "all ones neurons -> hub (2d x n)",
               "sigma": "sigma_l (2d x n) on Gs: rows 0..d-1 = sigma_+, d..2d-1 = sigma_-",
               "rho": "rho_l = sigma_+ - sigma_- = E sigma (never formed as n x n)",
               "U": "on the key (neuron) end of each synapse", "out": "lm_head^T [I, -I] hub -> out"}
    c = Compiled("circuit", W.variant, W, net, "x_0 = y_0 = (D_x embed(i))^+ (model.input_boundary)",
                 "logits = lm_head^T (h_+ - h_-), h = E' y_L at the hubs", mapping)
    c.report = _size_report(net, ["Gs"])
    c.report["circuit_edges_3nd"] = int(net.groups["E'"].nnz + net.groups["De"].nnz + net.groups["Di"].nnz)
    return c


# ---- official / paper: the LayerNorm models --------------------------------------------------------------------

def _block_diag_heads(W, M):
    """Per-head block matrix: M (h, N, d) gives (n, h d) with block k = M[k] (neurons of head k <- hubs of head k)."""
    import scipy.sparse as sp
    out = sp.block_diag([M[k] for k in range(W.h)], format="csc")
    out.eliminate_zeros()               # the split D^+ / D^- blocks hold zeros where the other sign lives
    return out


def compile_official(model) -> Compiled:
    """The released model (variant `official`) or Eq. 8 (variant `paper`) as a graph with LN at hub populations.

    Populations: neurons (n), `res` (d residual / value hubs: V the stream, W = LN(E y), Ze/Zi = E^± y, Z the
    signed input of an LN), `att` (h d: per head k, hubs k d .. k d + d - 1: Q the value to write, A = a_h,
    N = LN(a_h)), `out` (V); res and att also carry the LN scratch variables (rules.LN_VARIABLES).
    Groups: Dx_e/Dx_i = D_x^± (res -> neurons), copy (res -> att, identity per head), Gs (neurons of head k ->
    hubs of head k, all ones: n d synapses), Dy_e/Dy_i = D_y^± per head (att -> neurons), E_e/E_i = E^±
    (neurons -> res), ln_res / ln_att (the LN cliques inside each group of d hubs, weight 1/d). Hub values are
    signed (a rate code with sign); signed weights are split E/I. LN[..] is `rules.layer_norm_rounds`, 2 rounds.

    official, per layer (res.V = v_{l-1}):
      1. res.V -> Xe/Xi [Dx_e/Dx_i], res.V -> att.Q [copy]; X↓, (Xe - Xi)^+ -> X     x_l = (D_x v)^+ (recomputed)
      2. X, sigma_l -> att.A;  LN[att.A => att.N]                                    a_h, LN(a_h)
      3. X(i), att.Q(j) -> sigma_l(i,j); att.N -> Ye/Yi; damp; Y↓, (Ye - Yi)^+, X -> Y   y = (D_y LN(a))^+ x
      4. Y -> res.Ze/Zi [E_e/E_i]; Ze - Zi => Z;  LN[Z => W]; V + W => Z;  LN[Z => V]   v = LN(v + LN(E y))
    paper: 1'. Y -> res.Ze/Zi; LN[Ze - Zi => V] (= v* = LN(E y_{l-1})); then 1-3 with X accumulating.
    Rounds per token: official 10 L + 3, paper 9 L + 6 (each LN 2 rounds; 4 L + 2 and 4 L + 3 without them).
    """
    _check_applies(model, "official")
    W = Weights.of(model)
    n, d, h, N = W.n, W.d, W.h, W.N
    import scipy.sparse as sp
    official = W.variant == "official"
    net = Network().add_population("neurons", n)
    net.add_population("res", d, variables=("V", "W", "Ze", "Zi", "Z") + LN_VARIABLES)
    net.add_population("att", h * d, variables=("Q", "A", "N") + LN_VARIABLES)
    net.add_group("ln_res", "res", "res", clique(1, d)).add_group("ln_att", "att", "att", clique(h, d))
    net.add_group("Dx_e", "res", "neurons", pos(W.D_x)).add_group("Dx_i", "res", "neurons", neg(W.D_x))
    net.add_group("copy", "res", "att", sp.csc_matrix(np.tile(np.eye(d), (h, 1))))
    Dy = W.D_y.reshape(h, N, d)
    net.add_group("Dy_e", "att", "neurons", _block_diag_heads(W, pos(Dy)))
    net.add_group("Dy_i", "att", "neurons", _block_diag_heads(W, neg(Dy)))
    net.add_group("E_e", "neurons", "res", pos(W.E)).add_group("E_i", "neurons", "res", neg(W.E))
    net.add_group("Gs", "neurons", "att", _block_diag_heads(W, np.ones((h, N, d))).T.tocsc())
    for l in range(W.L):
        net.add_edge_variable(K.sigma_name(l), "Gs", u=W.u, theta=W.theta)
    _output(net, "res", W.lm_head.T)

    to_res = (K.Round(communication=(K.send("Y", "res.Ze", "E_e"), K.send("Y", "res.Zi", "E_i")),
                      computation=(linear(("res.Ze", "res.Zi"), "res.Z", (1, -1)), K.reset("res.Ze"), K.reset("res.Zi")),
                      label="E y to hubs"),)
    if official:   # v = LN(v + LN(E y))
        to_res += layer_norm_rounds("res", "Z", "W", "ln_res", "LN(E y)", then=(linear(("res.V", "res.W"), "res.Z", (1, 1)),))
        to_res += layer_norm_rounds("res", "Z", "V", "ln_res", "v = LN(v + W)")
    else:          # v* = LN(E y_{l-1})
        to_res += layer_norm_rounds("res", "Z", "V", "ln_res", "v* = LN(E y)")

    def layer(l):
        s = K.sigma_name(l)
        rounds = () if official else to_res
        rounds += (
            K.Round(communication=(K.send("res.V", "Xe", "Dx_e"), K.send("res.V", "Xi", "Dx_i"),
                                   K.send("res.V", "att.Q", "copy")),
                    computation=((K.reset("X"),) if official else ()) + (K.threshold("Xe", "Xi", "X"),
                                                                          K.reset("Xe"), K.reset("Xi")),
                    label="x = (D_x v)^+" if official else "x += (D_x v*)^+"),
            K.Round(communication=(K.read("X", s, "att.A"),), label="read a_h"),
            *layer_norm_rounds("att", "A", "N", "ln_att", "LN(a_h) per head"),
            K.Round(communication=(K.hebbian("X", "att.Q", s), K.send("att.N", "Ye", "Dy_e"),
                                   K.send("att.N", "Yi", "Dy_i")),
                    computation=(K.damp(s), K.reset("Y"), K.gate("Ye", "Yi", "X", "Y"), K.reset("Ye"),
                                 K.reset("Yi"), K.reset("att.A"), K.reset("att.Q")),
                    label="write; y = (D_y LN a)^+ x"),
        )
        if official:
            rounds += to_res
        return rounds

    layers = [layer(l) for l in range(W.L)]
    if official:   # sensory input: the raw embedding row at the residual hubs, normalised in the graph
        layers[0] = layer_norm_rounds("res", "V", "V", "ln_res", "v_0 = LN(embed)") + layers[0]
        layers[-1] = layers[-1] + (_readout_round("res.V"),)
    else:
        layers[-1] = layers[-1] + to_res + (_readout_round("res.V"),)
    net.with_kernel(K.Kernel(tuple(layers), name=f"{W.variant} LN circuit"))
    mapping = {"Dx_e, Dx_i": "D_x^+, D_x^- res -> neurons (n x d)", "copy": "identity res -> att of every head",
               "Dy_e, Dy_i": "D_y,h^+, D_y,h^- att(head h) -> neurons(head h)", "E_e, E_i": "E^+, E^- neurons -> res",
               "Gs": "neurons of head k -> att hubs of head k, all ones (n d synapses)",
               "sigma": "sigma_l (h d x n, block diagonal by head): value hub x key neuron",
               "rho": "rho_l,h = block h of sigma_l (it is rho itself: the value lives at the hubs)",
               "ln_res, ln_att": "LN cliques: every hub to every hub of its group of d, weight 1/d",
               "LN": "2 rounds of local rules: clique mean, clique variance, node-local division (eps 1e-5)",
               "out": "lm_head^T res -> out"}
    boundary = ("raw embedding row embed(i) set at res.V, LN in the graph" if official
                else "x_0 = y_0 = (D_x LN(embed(i)))^+ (model.input_boundary)")
    readout = "logits = lm_head^T v_L at the 256 output nodes" if official else "logits = lm_head^T LN(E y_L)"
    c = Compiled("official", W.variant, W, net, boundary, readout, mapping,
                 record={"v": "res.V"} if official else {})
    c.report = _size_report(net, ["Gs"])
    return c


_COMPILERS = {"dense": compile_dense, "circuit": compile_circuit, "official": compile_official}


def compile_model(model, how: str | None = None, **kw) -> Compiled:
    """Compile `model` with `how` in COMPILES (None: `default_compile(model)`)."""
    how = default_compile(model) if how is None else how
    if how not in _COMPILERS:
        raise ValueError(f"compile: expected one of {', '.join(COMPILES)}, got {how!r}")
    return _COMPILERS[how](model, **kw)
