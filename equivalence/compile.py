"""Compilers from a BDH-GPU model (`bdh_gpu.BDH`) to a BDH neuron graph (`bdh_graph.Network` + kernel).

  dense     Observation 4 / Eq. 9 (normfree): Gx = D_x E and Gy = D_y E as n x n graphs, split
            Gx_e = (Gx)^+, Gx_i = (-Gx)^+ (same for Gy), Gs = ones, U = retention; the paper's Table 1(b) kernel.
  circuit   Claim 3 + Claim 4 (normfree): 2d hub nodes between neurons. E' = [E^+; E^-] (neurons -> hubs),
            De, Di (hubs -> neurons) with De E' - Di E' = D_x E; state on 2dn synapses neurons -> hubs holding
            the split rho = E sigma = sigma_+ - sigma_-; no n x n matrix anywhere.
  official  the released LayerNorm model (and the `paper` variant, Eq. 8) neuron by neuron: residual hubs (d),
            per-head attention hubs (h x d), LN as one round of local rules over a clique of edges per group
            (equivalence.rules.layer_norm_rounds, merged; two for the raw embedding): every rule reads only its
            own node and its edges.

Every compile adds an output population `out` of V = 256 motor nodes: logits = Pe - Pi, with the read-out
weights split into excitatory and inhibitory groups. Input (the sensory boundary) enters as the Simulator's
x_{t,0} = y_{t,0} (dense, circuit, official-on-paper) or as the raw embedding row at the residual hubs
(official), see `Compiled.token_inputs`. The weights are taken from the model in float64 numpy; torch is
needed only to read them.

Sharded (docs/distributed.md): every compile takes `comm` (bdh_graph.comm; default MPI.COMM_WORLD under mpiexec,
else in process) and each rank builds only the blocks it owns (`Network.owned`: its rows of the groups into the
neurons, its columns of the groups out of them) straight from the weights: no process holds the whole graph.
Given a model directory in place of a model, each rank reads only its neurons' rows of D_x, D_y and columns of
E from model.safetensors (`Weights.load`, `bdh_gpu.load_weights`) and never builds the torch model; given a
model, every rank slices the whole model's weights (`Weights.of`). P = 1 is the same code with one block.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from bdh_graph import Network
from bdh_graph import kernels as K
from bdh_graph.comm import as_comm, block

from .rules import LN_EPS, LN_VARIABLES, clique, layer_norm_rounds, layer_norm_square, linear

COMPILES = ("dense", "circuit", "official")
APPLIES = {"dense": ("normfree",), "circuit": ("normfree",), "official": ("official", "paper")}
DENSE_MAX_N = 4096  # default compile of a normfree model: dense up to this n, circuit above


def pos(a):
    return np.maximum(a, 0.0)


def neg(a):
    return np.maximum(-a, 0.0)


@dataclass(frozen=True)
class Weights:
    """The model's parameters and U in float64 numpy, neuron index = head * N + i (paper names).

    A Weights may hold only a range of neurons: rows lo .. lo + len(D_x) of D_x and D_y, columns E_lo .. of E
    (`Weights.load` on one rank's block). Read them by global neuron ranges with `Dx(rows)`, `Dy(rows)`,
    `Ec(cols)`, which refuse a range the Weights does not hold."""

    variant: str
    n: int
    d: int
    h: int
    N: int
    L: int
    V: int
    E: np.ndarray  # (d, n)
    D_x: np.ndarray  # (n, d)
    D_y: np.ndarray  # (n, d)
    embed: np.ndarray  # (V, d)
    lm_head: np.ndarray  # (d, V)
    u: np.ndarray | None  # (n,) retention per key neuron, None when U has no damping
    theta: np.ndarray | None  # (n/2,) radians per token per neuron pair, None without RoPE
    lo: int = 0  # first neuron (row) of D_x, D_y held
    E_lo: int = 0  # first neuron (column) of E held

    @classmethod
    def of(cls, model) -> Weights:
        """The matrices the model computes with (`model.effective_weights()`: constant gains folded in)."""
        C = model.config
        f = lambda t: t.detach().to("cpu").double().numpy().copy()
        w = model.effective_weights()
        return cls._make(
            C, f(w["E"]), f(w["D_x"]).reshape(C.n, C.d), f(w["D_y"]).reshape(C.n, C.d), f(w["embed"]), f(w["lm_head"])
        )

    @classmethod
    def load(cls, directory, lo: int = 0, hi: int | None = None, E_all: bool = False) -> Weights:
        """Neurons lo..hi-1 of a model directory's weights (all of E's columns with E_all), read from
        model.safetensors without building the model; equal to `Weights.of` of the model in float64."""
        from bdh_gpu.modeldir import load_weights

        w = load_weights(os.fspath(directory), lo, hi, E_all)
        return cls._make(w["config"], w["E"], w["D_x"], w["D_y"], w["embed"], w["lm_head"], lo, w["E_lo"])

    @classmethod
    def _make(cls, C, E, D_x, D_y, embed, lm_head, lo=0, E_lo=0):
        from bdh_gpu.positional import retention

        ret = retention(C)
        return cls(
            C.variant,
            C.n,
            C.d,
            C.n_head,
            C.N,
            C.n_layer,
            C.vocab_size,
            E,
            D_x,
            D_y,
            embed,
            lm_head,
            ret["u"] if C.uses_alibi else None,
            ret["theta"] if C.uses_rope else None,
            lo,
            E_lo,
        )

    @property
    def full(self) -> bool:
        """Whether every neuron's rows and columns are held."""
        return self.lo == 0 and len(self.D_x) == self.n and self.E_lo == 0 and self.E.shape[1] == self.n

    def _local(self, s, lo, size, what):
        if s.start < lo or s.stop > lo + size:
            raise ValueError(f"Weights: {what} {s.start}:{s.stop} requested, only {lo}:{lo + size} held")
        return slice(s.start - lo, s.stop - lo)

    def Dx(self, rows: slice) -> np.ndarray:
        return self.D_x[self._local(rows, self.lo, len(self.D_x), "D_x rows")]

    def Dy(self, rows: slice) -> np.ndarray:
        return self.D_y[self._local(rows, self.lo, len(self.D_y), "D_y rows")]

    def Ec(self, cols: slice) -> np.ndarray:
        return self.E[:, self._local(cols, self.E_lo, self.E.shape[1], "E columns")]


def _config(source):
    """The BDHConfig of a model or of a model directory (config.json only)."""
    if isinstance(source, (str, os.PathLike)):
        from bdh_gpu.modeldir import load_config

        return load_config(os.fspath(source))
    return source.config


def _weights(source, comm, n, E_all=False) -> Weights:
    """The weights this rank compiles from: only its block of the n neurons (`bdh_graph.comm.block`, as the
    `neurons` population splits) when `source` is a model directory; the whole model's when it is a model."""
    if isinstance(source, (str, os.PathLike)):
        lo, hi = block(n, comm.size, comm.rank)
        return Weights.load(source, lo, hi, E_all)
    return Weights.of(source)


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
        p = self.network.populations["neurons"]  # this rank's neurons (the others' stay 0)
        x0 = np.zeros((T, W.n))
        x0[:, p.lo : p.hi] = pos(z @ W.Dx(slice(p.lo, p.hi)).T)  # x_0 = y_0 = (D_x z)^+, as model.input_boundary
        return x0, x0.copy(), [{} for _ in ids]

    def rho(self, state, root=0):
        """rho_l (d, n) of every layer from a NetworkState (per-edge sigma), in the model's convention; sharded,
        every rank's share is summed onto rank `root` (None elsewhere)."""
        comm = self.network.comm
        out = [self.rho_partial(state, name) for name in self.network.sigma_names]
        if comm.size == 1:
            return out
        total = [comm.reduce_sum(r, root) for r in out]
        return total if comm.rank == root else None

    def rho_partial(self, state, name):
        """This rank's share of rho_l (d, n): zero outside the columns (or, dense, the rows) it owns."""
        W = self.weights
        g = self.network.groups[self.network.edge_vars[name].group]
        M = g.matrix(state.edges[name]).toarray()
        if self.name == "dense":  # rows = this rank's value neurons
            return W.Ec(slice(g.row0, g.row0 + g.n_post)) @ M  # rho = E sigma
        out = np.zeros((W.d, W.n))
        cols = np.arange(g.col0, g.col0 + g.n_pre)
        if self.name == "circuit":
            out[:, cols] = M[: W.d] - M[W.d :]  # rho = sigma_+ - sigma_-
        else:  # per-head blocks (k d + a, k N + i)
            out[:, cols] = M[(cols // W.N)[None, :] * W.d + np.arange(W.d)[:, None], cols - g.col0]
        return out

    def summary(self) -> str:
        r = self.report
        pops = ", ".join(f"{k} {v}" for k, v in r["nodes"].items())
        return (
            f"{self.name} compile of {'an' if self.variant[0] in 'aeiou' else 'a'} {self.variant} model: "
            f"nodes {r['nodes_total']:,} ({pops}); "
            f"edges {r['edges_total']:,}; synapses {r['synapses']:,} per layer; state {r['state_size']:,} floats; "
            f"{r['rounds_per_token']} rounds per token{self._share()}"
        )

    def _share(self) -> str:
        """Under MPI (P > 1) the edge counts are this rank's block: the summary says so."""
        comm = self.network.comm
        size = getattr(comm, "size", 1)
        return f" (edges and synapses: rank {comm.rank}'s share of {size} ranks)" if size > 1 else ""


def layer_norm(z):
    """LN over the last axis, no affine, eps 1e-5 (numpy mirror of bdh_gpu.model.layer_norm)."""
    c = z - z.mean(-1, keepdims=True)
    return c / np.sqrt((c * c).mean(-1, keepdims=True) + LN_EPS)


def _size_report(net, state_groups):
    nodes = {p.name: p.size for p in net.populations.values()}
    edges = {g.name: g.nnz for g in net.groups.values()}
    syn = sum(net.groups[g].nnz for g in state_groups)
    return dict(
        nodes=nodes,
        nodes_total=sum(nodes.values()),
        edges=edges,
        edges_total=sum(v for k, v in edges.items() if k not in state_groups),
        synapses=syn,
        state_size=sum(net.groups[ev.group].nnz for ev in net.edge_vars.values()),
        layers=net.layers,
        rounds_per_token=len(net.kernel.rounds),
    )


def _check_applies(config, how):
    v = config.variant
    if v not in APPLIES[how]:
        raise ValueError(
            f"compile {how!r} does not apply to variant {v!r} (it applies to "
            f"{' and '.join(APPLIES[how])}; use {default_compile(config)!r})"
        )


def default_compile(source) -> str:
    """The default compile of a model, a model directory or a BDHConfig."""
    C = source if hasattr(source, "variant") and hasattr(source, "n_head") else _config(source)
    if C.variant in APPLIES["official"]:
        return "official"
    return "dense" if C.n <= DENSE_MAX_N else "circuit"


def _output(net, src_pop, W_out, V):
    """Add the motor population `out` (V nodes) and the split read-out groups `src_pop -> out` from
    W_out(cols) = the (V, len(cols)) read-out block of this rank's columns."""
    net.add_population("out", V, variables=("Pe", "Pi", "L"))
    rows, cols = net.owned(src_pop, "out")
    Wo = W_out(cols)
    net.add_group("Wo_e", src_pop, "out", block=pos(Wo)).add_group("Wo_i", src_pop, "out", block=neg(Wo))


def _ones(rows, cols):
    """An all-ones (rows, cols) CSC matrix, built without a dense array."""
    return sp.csc_matrix(
        (np.ones(rows * cols), np.tile(np.arange(rows), cols), np.arange(cols + 1) * rows), shape=(rows, cols)
    )


def _head_blocks(values, lo, N, d, h):
    """Rows lo.. of the per-head block matrix (n, h d): neuron i (head i // N) <- hubs (i // N) d .. + d - 1,
    `values` (rows, d) on them (CSR, built row by row without the whole matrix)."""
    r = len(values)
    head = np.arange(lo, lo + r) // N
    idx = (head[:, None] * d + np.arange(d)[None, :]).reshape(-1)
    M = sp.csr_matrix((values.reshape(-1), idx, np.arange(r + 1) * d), shape=(r, h * d)).tocsc()
    M.eliminate_zeros()  # an entry is an edge iff it is non-zero
    return M


def _readout_round(src, reset=()):
    return K.Round(
        communication=(K.send(src, "out.Pe", "Wo_e"), K.send(src, "out.Pi", "Wo_i")),
        computation=(linear(("out.Pe", "out.Pi"), "out.L", (1, -1)), K.reset("out.Pe"), K.reset("out.Pi"))
        + tuple(K.reset(v) for v in reset),
        label="read-out: logits",
    )


# ---- dense: Observation 4 ------------------------------------------------------------------------------------


def compile_dense(model, *, damping="eq6", hebbian_orientation="eq6", comm=None) -> Compiled:
    """Observation 4 / Eq. 9: BDH-Normfree is BDH with Gx_e - Gx_i = D_x E, Gy_e - Gy_i = D_y E, Gs = 1.

    O(n^2) memory. `damping` and `hebbian_orientation` pass to Table 1(b) (reference 2a, 2b): only the
    defaults reproduce Eq. 7 (tests/test_equiv_ambiguities.py).
    """
    C = _config(model)
    _check_applies(C, "dense")
    comm = as_comm(comm)
    W = _weights(model, comm, C.n, E_all=True)  # a neuron row reads all of E
    memo = {}
    net = Network.from_blocks(
        W.n,
        _dense_blocks(W, memo),
        u=W.u,
        theta=W.theta,
        layers=W.L,
        damping=damping,
        hebbian_orientation=hebbian_orientation,
        comm=comm,
    )
    memo.clear()
    _output(net, "neurons", lambda cols: W.lm_head.T @ W.Ec(cols), W.V)  # logits = lm_head^T E y_L
    base = net.kernel
    layers = base.layers[:-1] + (base.layers[-1] + (_readout_round("Y"),),)
    net.with_kernel(K.Kernel(layers, name="Table 1(b) + read-out"))
    c = Compiled(
        "dense", W.variant, W, net, _NORMFREE_BOUNDARY, "logits = lm_head^T E y_L at the 256 output nodes", _DENSE_MAP
    )
    c.report = _size_report(net, ["Gs"])
    return c


def _dense_blocks(W, memo):
    """blocks(name, rows, cols): this rank's rows of the (n, n) graphs Gx_e/Gx_i = (+-D_x E)^+, Gy_e/Gy_i, Gs = 1
    (row = receiving neuron); D E is formed once per pair of groups in `memo`, dropped when the next pair starts."""

    def blocks(name, rows, cols):
        if name == "Gs":
            return _ones(rows.stop - rows.start, cols.stop - cols.start)
        D = W.Dx if name.startswith("Gx") else W.Dy
        if name[:2] not in memo:
            memo.clear()
            memo[name[:2]] = D(rows) @ W.Ec(cols)
        G = memo[name[:2]]
        return pos(G) if name.endswith("_e") else neg(G)

    return blocks


_NORMFREE_BOUNDARY = "x_0 = y_0 = (D_x embed(i))^+ (model.input_boundary)"
_DENSE_MAP = {
    "Gx_e, Gx_i": "(D_x E)^+, (-D_x E)^+  (n x n)",
    "Gy_e, Gy_i": "(D_y E)^+, (-D_y E)^+  (n x n)",
    "Gs": "all ones (n x n)",
    "sigma": "sigma_l (n x n) on Gs, value (y) neuron x key (x) neuron",
    "rho": "rho_l = E sigma_l",
    "U": "u per key neuron (ALiBi), rotation of key pairs (RoPE)",
    "out": "Wo_e - Wo_i = lm_head^T E  (256 x n)",
}


# ---- circuit: Claims 3 and 4 -----------------------------------------------------------------------------------


def hub_split(D):
    """Claim 3: (De, Di) from D (n, d), each (n, 2d), with De E' - Di E' = D E for E' = [E^+; E^-]."""
    return np.hstack([pos(D), neg(D)]), np.hstack([neg(D), pos(D)])


def compile_circuit(model, comm=None) -> Compiled:
    """Claim 3's sparse circuit and Claim 4's sparse state, exact for Normfree (Eq. 7), O(nd) everything: the
    graph of `_circuit_graph`, the rounds of `_circuit_layer`."""
    C = _config(model)
    _check_applies(C, "circuit")
    net = Network(comm)
    W = _weights(model, net.comm, C.n)
    _circuit_graph(net, W)
    layers = [_circuit_layer(l) for l in range(W.L)]
    layers[-1] = layers[-1] + (
        K.Round(communication=(K.send("Y", "hub.H", "E'"),), label="Y to hubs (E')"),
        _readout_round("hub.H", reset=("hub.H",)),
    )
    net.with_kernel(K.Kernel(tuple(layers), name="Claims 3+4 circuit"))
    readout = "logits = lm_head^T (h_+ - h_-), h = E' y_L at the hubs"
    c = Compiled("circuit", W.variant, W, net, _NORMFREE_BOUNDARY, readout, _CIRCUIT_MAP)
    c.report = _size_report(net, ["Gs"])
    c.report["circuit_edges_3nd"] = int(net.groups["E'"].nnz + net.groups["De"].nnz + net.groups["Di"].nnz)
    return c


def _circuit_graph(net, W):
    """Claim 3: neurons (n) and hubs `hub` (2d, variables H, A); E' = [E^+; E^-] neurons -> hubs, (De, Di) and
    (Gy_e, Gy_i) = `hub_split` of D_x and D_y hubs -> neurons; Claim 4: sigma_l on Gs, all ones neurons -> hubs
    (2dn synapses); read-out lm_head^T [I, -I] hubs -> out."""
    n, d = W.n, W.d
    net.add_population("neurons", n).add_population("hub", 2 * d, variables=("H", "A"))
    _, cols = net.owned("neurons", "hub")  # this rank's neurons, as sources
    rows, _ = net.owned("hub", "neurons")  # ... and as targets
    # each dense block lives only until its group holds it (the compile's peak memory is then the graph's own)
    net.add_group("E'", "neurons", "hub", block=np.vstack([pos(W.Ec(cols)), neg(W.Ec(cols))]))  # E' (2d, n)
    for D, names in ((W.Dx, ("De", "Di")), (W.Dy, ("Gy_e", "Gy_i"))):  # (n, 2d): its rows
        for name, M in zip(names, hub_split(D(rows))):  # Gy_e - Gy_i = D_y [I, -I]
            net.add_group(name, "hub", "neurons", block=M)
        del M
    net.add_group("Gs", "neurons", "hub", block=_ones(2 * d, cols.stop - cols.start))
    for l in range(W.L):
        net.add_edge_variable(K.sigma_name(l), "Gs", u=W.u, theta=W.theta)
    Wo = np.hstack([W.lm_head.T, -W.lm_head.T])  # logits = lm^T (h_+ - h_-)
    _output(net, "hub", lambda c: Wo[:, c], W.V)


def _circuit_layer(l):
    """The rounds of layer l. Hubs hold H = E' y_{l-1} (the non-negative split h_+ - h_- = E y_{l-1}, held
    through the layer) and A = the state read:
      1. Y -> hub.H [E']                                  h = E' y_{l-1}
      2. hub.H -> Xe [De], hub.H -> Xi [Di]; (Xe - Xi)^+ -> X      x_l = x_{l-1} + (D_x E y_{l-1})^+
      3. X, sigma_l -> hub.A                              A = sigma_l x_l  (A_+ - A_- = rho x_l)
      4. X(i), hub.H(j) -> sigma_l(i,j); hub.A -> Ye [Gy_e], hub.A -> Yi [Gy_i]; damp; (Ye - Yi)^+, X -> Y
    The write uses H, this layer's copy of E y_{l-1} at the hubs: the layer offset of reference 5 disappears
    because the hubs keep their own variable while the neurons' Y moves on.
    """
    s = K.sigma_name(l)
    return (
        K.Round(communication=(K.send("Y", "hub.H", "E'"),), computation=(K.reset("Y"),), label="Y to hubs (E')"),
        K.Round(
            communication=(K.send("hub.H", "Xe", "De"), K.send("hub.H", "Xi", "Di")),
            computation=(K.threshold("Xe", "Xi", "X"), K.reset("Xe"), K.reset("Xi")),
            label="hubs to X (I&F)",
        ),
        K.Round(communication=(K.read("X", s, "hub.A"),), label="read state"),
        K.Round(
            communication=(K.hebbian("X", "hub.H", s), K.send("hub.A", "Ye", "Gy_e"), K.send("hub.A", "Yi", "Gy_i")),
            computation=(
                K.damp(s),
                K.gate("Ye", "Yi", "X", "Y"),
                K.reset("Ye"),
                K.reset("Yi"),
                K.reset("hub.A"),
                K.reset("hub.H"),
            ),
            label="write; A to Y (gated)",
        ),
    )


_CIRCUIT_MAP = {
    "E'": "[E^+; E^-] neurons -> hub (2d x n)",
    "De, Di": "[D_x^+, D_x^-], [D_x^-, D_x^+] hub -> neurons",
    "Gy_e, Gy_i": "[D_y^+, D_y^-], [D_y^-, D_y^+] hub -> neurons (= D_y [I, -I])",
    "Gs": "all ones neurons -> hub (2d x n)",
    "sigma": "sigma_l (2d x n) on Gs: rows 0..d-1 = sigma_+, d..2d-1 = sigma_-",
    "rho": "rho_l = sigma_+ - sigma_- = E sigma (never formed as n x n)",
    "U": "on the key (neuron) end of each synapse",
    "out": "lm_head^T [I, -I] hub -> out",
}


# ---- official / paper: the LayerNorm models --------------------------------------------------------------------


def compile_official(model, comm=None) -> Compiled:
    """The released model (variant `official`) or Eq. 8 (variant `paper`) as a graph with LN at hub populations:
    the graph of `_official_graph`, the rounds of `_official_rounds`. Hub values are signed (a rate code with
    sign); signed weights are split E/I."""
    C = _config(model)
    _check_applies(C, "official")
    net = Network(comm)
    W = _weights(model, net.comm, C.n)
    _official_graph(net, W)
    net.with_kernel(K.Kernel(_official_rounds(W.L, W.variant == "official"), name=f"{W.variant} LN circuit"))
    if W.variant == "official":
        boundary = "raw embedding row embed(i) set at res.V, LN in the graph"
        readout, record = "logits = lm_head^T v_L at the 256 output nodes", {"v": "res.V"}
    else:
        boundary = "x_0 = y_0 = (D_x LN(embed(i)))^+ (model.input_boundary)"
        readout, record = "logits = lm_head^T LN(E y_L)", {}
    c = Compiled("official", W.variant, W, net, boundary, readout, _OFFICIAL_MAP, record=record)
    c.report = _size_report(net, ["Gs"])
    return c


def _official_graph(net, W):
    """Populations: neurons (n), `res` (d residual / value hubs: V the stream, W = LN(E y), Ze/Zi = E^± y, Z the
    signed input of an LN), `att` (h d: per head k, hubs k d .. k d + d - 1: Q the value to write, A = a_h,
    N = LN(a_h)), `out` (V); res and att also carry the LN scratch variables (rules.LN_VARIABLES).
    Groups: Dx_e/Dx_i = D_x^± (res -> neurons), copy (res -> att, identity per head), Gs (neurons of head k ->
    hubs of head k, all ones: n d synapses), Dy_e/Dy_i = D_y^± per head (att -> neurons), E_e/E_i = Ec^±
    (neurons -> res; Ec = `centred_columns(E)`), ln_res / ln_att (the LN cliques inside each group of d hubs,
    weight 1/d)."""
    n, d, h, N = W.n, W.d, W.h, W.N
    net.add_population("neurons", n)
    net.add_population("res", d, variables=("V", "W", "Ze", "Zi", "Z") + LN_VARIABLES)
    net.add_population("att", h * d, variables=("Q", "A", "N") + LN_VARIABLES)
    net.add_group("ln_res", "res", "res", clique(1, d)).add_group("ln_att", "att", "att", clique(h, d))
    rows, _ = net.owned("res", "neurons")  # this rank's neurons as targets
    _, cols = net.owned("neurons", "res")  # ... and as sources
    net.add_group("Dx_e", "res", "neurons", block=pos(W.Dx(rows)))
    net.add_group("Dx_i", "res", "neurons", block=neg(W.Dx(rows)))
    net.add_group("copy", "res", "att", sp.csc_matrix(np.tile(np.eye(d), (h, 1))))
    net.add_group("Dy_e", "att", "neurons", block=_head_blocks(pos(W.Dy(rows)), rows.start, N, d, h))
    net.add_group("Dy_i", "att", "neurons", block=_head_blocks(neg(W.Dy(rows)), rows.start, N, d, h))
    Ec = centred_columns(W.Ec(cols))  # LN(E y) = LN(Ec y), and Ec y has mean 0: the merged LN's input
    net.add_group("E_e", "neurons", "res", block=pos(Ec)).add_group("E_i", "neurons", "res", block=neg(Ec))
    del Ec
    ones = _head_blocks(np.ones((cols.stop - cols.start, d)), cols.start, N, d, h)
    net.add_group("Gs", "neurons", "att", block=ones.T.tocsc())
    for l in range(W.L):
        net.add_edge_variable(K.sigma_name(l), "Gs", u=W.u, theta=W.theta)
    _output(net, "res", lambda c: W.lm_head.T[:, c], W.V)


def centred_columns(E):
    """E (d, cols) with each column's mean over the d rows subtracted: 1^T (Ec y) = 0 for every y, and
    LN(Ec y) = LN(E y) exactly (LN subtracts the mean), so E y reaches its merged LayerNorm centred (rules.py:
    the merged form's error grows with mean^2 / var). Column by column: each rank centres its own columns."""
    return E - E.mean(axis=0, keepdims=True)


def _official_rounds(L, official):
    """The kernel, layer by layer (res.V = v_{l-1}; LN[..] is `rules.layer_norm_rounds`, merged: one round, its
    input squared (`z, z -> Lp`, `rules.layer_norm_square`) where the input is computed).

    official, per layer:
      1. res.V -> Xe/Xi [Dx_e/Dx_i], res.V -> att.Q [copy]; X↓, (Xe - Xi)^+ -> X     x_l = (D_x v)^+ (recomputed)
      2. X, sigma_l -> att.A; A, A -> att.Lp                                         a_h
      3. LN[att.A => att.N]                                                          LN(a_h)
      4. X(i), att.Q(j) -> sigma_l(i,j); att.N -> Ye/Yi; damp; Y↓, (Ye - Yi)^+, X -> Y   y = (D_y LN(a))^+ x
      5. Y -> res.Ze/Zi [E_e/E_i]; Ze - Zi => Z; Z, Z -> res.Lp                       E y (E's columns centred)
      6. LN[Z => W]; V + W => Z; Z, Z -> res.Lp                                      v + LN(E y)
      7. LN[Z => V]                                                                  v = LN(v + LN(E y))
    paper: 1'. Y -> res.Ze/Zi, Z^2; 2'. LN[Z => V] (= v* = LN(E y_{l-1})); then 1-4 with X accumulating.
    Rounds per token: official 7 L + 3 (LN(embed) is the two-round form: the raw embedding is not centred),
    paper 6 L + 3 (10 L + 3 and 8 L + 4 with every LN in two rounds; 4 L + 2 for both when LN was one
    group-wide rule). Sensory input (official): the raw embedding row at the residual hubs, LN in the graph.
    """
    to_res = _official_to_res(official)
    layers = []
    for l in range(L):
        rounds = () if official else to_res  # paper: 1', 2'
        rounds += _official_attention(K.sigma_name(l), official)  # 1-4
        layers.append(rounds + to_res if official else rounds)  # official: 5-7
    if official:
        layers[0] = layer_norm_rounds("res", "V", "V", "ln_res", "v_0 = LN(embed)") + layers[0]
        layers[-1] = layers[-1] + (_readout_round("res.V"),)
    else:
        layers[-1] = layers[-1] + to_res + (_readout_round("res.V"),)
    return tuple(layers)


def _official_to_res(official):
    """Rounds 5-7 (official: v = LN(v + LN(E y))) or 1'-2' (paper: v* = LN(E y_{l-1})): E y to the residual
    hubs, then its merged LNs."""
    ln = lambda src, dst, label, then=(): layer_norm_rounds("res", src, dst, "ln_res", label, then=then, merged=True)
    to_res = (
        K.Round(
            communication=(K.send("Y", "res.Ze", "E_e"), K.send("Y", "res.Zi", "E_i")),
            computation=(linear(("res.Ze", "res.Zi"), "res.Z", (1, -1)), K.reset("res.Ze"), K.reset("res.Zi"))
            + (layer_norm_square("res", "Z"),),
            label="E y to hubs",
        ),
    )
    if not official:
        return to_res + ln("Z", "V", "v* = LN(E y)")
    v_plus_w = (linear(("res.V", "res.W"), "res.Z", (1, 1)), layer_norm_square("res", "Z"))
    return to_res + ln("Z", "W", "LN(E y)", then=v_plus_w) + ln("Z", "V", "v = LN(v + W)")


def _official_attention(s, official):
    """Rounds 1-4 on synapse state `s`: x from v, read a_h and LN it per head, write and y = (D_y LN a)^+ x."""
    return (
        K.Round(
            communication=(
                K.send("res.V", "Xe", "Dx_e"),
                K.send("res.V", "Xi", "Dx_i"),
                K.send("res.V", "att.Q", "copy"),
            ),
            computation=((K.reset("X"),) if official else ())
            + (K.threshold("Xe", "Xi", "X"), K.reset("Xe"), K.reset("Xi")),
            label="x = (D_x v)^+" if official else "x += (D_x v*)^+",
        ),
        K.Round(
            communication=(K.read("X", s, "att.A"),), computation=(layer_norm_square("att", "A"),), label="read a_h"
        ),
        *layer_norm_rounds("att", "A", "N", "ln_att", "LN(a_h) per head", merged=True),
        K.Round(
            communication=(K.hebbian("X", "att.Q", s), K.send("att.N", "Ye", "Dy_e"), K.send("att.N", "Yi", "Dy_i")),
            computation=(
                K.damp(s),
                K.reset("Y"),
                K.gate("Ye", "Yi", "X", "Y"),
                K.reset("Ye"),
                K.reset("Yi"),
                K.reset("att.A"),
                K.reset("att.Q"),
            ),
            label="write; y = (D_y LN a)^+ x",
        ),
    )


_OFFICIAL_MAP = {
    "Dx_e, Dx_i": "D_x^+, D_x^- res -> neurons (n x d)",
    "copy": "identity res -> att of every head",
    "Dy_e, Dy_i": "D_y,h^+, D_y,h^- att(head h) -> neurons(head h)",
    "E_e, E_i": "Ec^+, Ec^- neurons -> res, Ec = E with each column centred (LN(Ec y) = LN(E y))",
    "Gs": "neurons of head k -> att hubs of head k, all ones (n d synapses)",
    "sigma": "sigma_l (h d x n, block diagonal by head): value hub x key neuron",
    "rho": "rho_l,h = block h of sigma_l (it is rho itself: the value lives at the hubs)",
    "ln_res, ln_att": "LN cliques: every hub to every hub of its group of d, weight 1/d",
    "LN": "1 round of local rules: clique mean of z and z^2, node-local variance and division (eps 1e-5); "
    "LN(embed): 2 rounds (clique mean, then clique variance)",
    "out": "lm_head^T res -> out",
}


_COMPILERS = {"dense": compile_dense, "circuit": compile_circuit, "official": compile_official}


def compile_model(model, how: str | None = None, **kw) -> Compiled:
    """Compile `model` (a bdh_gpu.BDH, or a model directory: each rank then reads only its block of the
    weights) with `how` in COMPILES (None: `default_compile(model)`); `comm=` shards it (module docstring)."""
    how = default_compile(model) if how is None else how
    if how not in _COMPILERS:
        raise ValueError(f"compile: expected one of {', '.join(COMPILES)}, got {how!r}")
    return _COMPILERS[how](model, **kw)
