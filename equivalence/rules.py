"""This project's extensions of the local kernel: two node-local rules, and LayerNorm built from rounds.

Table 1's rules are additive (`q -> r`), multiplicative (`q, g -> r`) or thresholds (`(p - n)^+ -> r`); a signed
difference and the division of a normalisation are not among them. Two registered rules add them, each
node-local (`bdh_graph.kernels.check_local` probes it):

  linear      s_1 q_1 + s_2 q_2 + ... => r      signed sum of a node's own variables (excitatory minus
              inhibitory input: the output neurons' logit Pe - Pi, a hub's E^+ y - E^- y).
  normalize   c / sqrt(s + eps) => r            divisive normalisation of a node's own value c by its own
              copy s of the group's variance (eps = 1e-5, as the released `nn.LayerNorm`).

Both overwrite `r` (`=>`), unlike the additive `->` of Table 1, and use only `ops.xp` operations that numpy and
torch share, so they run on the numpy, numba and PyG backends.

LayerNorm (no affine parameters, biased variance) is not a rule: it reads a whole group of hubs. It is built
from rounds of local rules over a clique of edges inside each group (`layer_norm_rounds`), each edge weighing
1/g, with the scratch variables LN_VARIABLES of the hub population:

  Lp   the node's own square: z^2 (merged form) or (z - mean)^2 (two-round form), sent over the clique
  Lm   mean z over the group, as received          Lq   mean z^2 over the group, as received (merged form)
  Lc   z - Lm, the centred value                   Ls   the variance, received or computed

Merged form (`merged=True`, one round; the round that makes z final also computes `z, z -> Lp`,
`layer_norm_square`):

  round    z(i) -> Lm(j), Lp(i) -> Lq(j) [clique/g]    the two moments E z, E z^2 at every hub
           z - Lm => Lc;  Lm, Lm -> Ls;  Lq - Ls => Ls;  Lc / sqrt(Ls + eps) => r      var = E z^2 - (E z)^2

Two-round form (`merged=False`; needs nothing beforehand, stable for any mean):

  round 1  z(i) -> Lm(j) [clique/g]        Lm = mean z at every hub of the group
           z - Lm => Lc;  Lc, Lc -> Lp     Lc = z - mean (local), Lp = Lc^2 (Table 1's product rule)
  round 2  Lp(i) -> Ls(j) [clique/g]       Ls = var z at every hub
           Lc / sqrt(Ls + eps) => r        the node-local division

After either form every scratch variable is 0 again. Numerics of the merged form: E z^2 - (E z)^2 cancels when
the group's mean is large against its spread. In float64 (unit roundoff u = 1.1e-16) both forms are within
u (4 + 2 g (1 + |mean| / std + k)) of the exact LN(z), relative to max |LN(z)|, with k = mean^2 / (var + eps)
merged and k = 0 in two rounds (tests/test_equiv_layernorm.py::test_merged_layer_norm_error_bound checks it
on inputs with |mean| up to 1e6 std). That is ~u (4 + 2 g) for a centred input, and the official compile feeds
the merged form only centred inputs: a_h (a sum of LN outputs v), v + LN(E y) (a sum of two LN outputs), and
E y with E's columns centred at compile time (`equivalence.compile.centred_columns`: LN(E y) is unchanged by
it); the raw embedding, not centred, gets the two-round form.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from bdh_gpu.config import LN_EPS  # the tensor model's LayerNorm eps: one definition (torch-free)
from bdh_graph import kernels as K

LN_VARIABLES = ("Lp", "Lm", "Lq", "Lc", "Ls")  # the scratch variables layer_norm_rounds needs on a hub population
LN_ROUNDS = {True: 1, False: 2}  # rounds per LayerNorm: merged, two-round


def _signed_sum(rule, v):
    signs = rule.param("signs") or (1,) * len(rule.src)
    z = None
    for s, q in zip(signs, rule.src):
        term = v[q] if s == 1 else s * v[q]
        z = term if z is None else z + term
    return z


def _linear(rule, v, ops):
    return {rule.dst: _signed_sum(rule, v)}


def _normalize(rule, v, ops):
    c, s = rule.src
    return {rule.dst: v[c] / ops.xp.sqrt(v[s] + rule.param("eps", LN_EPS))}


K.register_rule("linear", _linear, local=True)
K.register_rule("normalize", _normalize, local=True)


def _expr(src, signs):
    return " ".join(("+ " if s > 0 else "- ") + q for s, q in zip(signs, src)).lstrip("+ ")


def linear(src, dst, signs):
    """`sum_k signs[k] src[k] => dst` at each node."""
    return K.Rule("linear", tuple(src), dst, params=(("signs", tuple(signs)),), text=f"{_expr(src, signs)} => {dst}")


def normalize(c, s, dst, eps=LN_EPS):
    """`c / sqrt(s + eps) => dst` at each node."""
    return K.Rule("normalize", (c, s), dst, params=(("eps", float(eps)),), text=f"{c} / sqrt({s} + eps) => {dst}")


def clique(groups: int, size: int):
    """The LayerNorm clique of `groups` consecutive groups of `size` hubs: every hub to every hub of its group
    (itself included), weight 1/size; (groups*size, groups*size) block-diagonal, groups*size^2 edges."""
    block = np.full((size, size), 1.0 / size)
    return sp.block_diag([block] * groups, format="csc")


def layer_norm_square(pop: str, src: str):
    """`z, z -> Lp` at each node of `pop` (Table 1's product; Lp is 0 beforehand): append it to the computation
    sub-round that makes pop.src final, before a merged `layer_norm_rounds` of it."""
    return K.product(f"{pop}.{src}", f"{pop}.{src}", f"{pop}.Lp")


def layer_norm_rounds(
    pop: str, src: str, dst: str, group: str, label: str = "LN", eps: float = LN_EPS, then=(), merged: bool = False
):
    """LN(pop.src) => pop.dst over the groups of synapse group `group` (a `clique`): one round (`merged`: pop.Lp
    must hold src^2, from `layer_norm_square`) or two (module docstring).

    `pop` must carry LN_VARIABLES; `src` may equal `dst`. After the rounds the scratch variables are 0 again.
    `then`: computation rules appended to the last round (they see dst normalised)."""
    q = lambda v: f"{pop}.{v}"
    P, M, Q, C, S = (q(v) for v in LN_VARIABLES)
    if merged:
        return (
            K.Round(
                communication=(K.send(q(src), M, group), K.send(P, Q, group)),
                computation=(
                    linear((q(src), M), C, (1, -1)),
                    K.product(M, M, S),
                    linear((Q, S), S, (1, -1)),
                    normalize(C, S, q(dst), eps),
                )
                + tuple(K.reset(v) for v in (P, M, Q, C, S))
                + tuple(then),
                label=f"{label}: moments",
            ),
        )
    return (
        K.Round(
            communication=(K.send(q(src), M, group),),
            computation=(linear((q(src), M), C, (1, -1)), K.product(C, C, P), K.reset(M)),
            label=f"{label}: mean",
        ),
        K.Round(
            communication=(K.send(P, S, group),),
            computation=(normalize(C, S, q(dst), eps), K.reset(C), K.reset(P), K.reset(S)) + tuple(then),
            label=f"{label}: variance",
        ),
    )
