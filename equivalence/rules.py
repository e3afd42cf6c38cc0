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

LayerNorm (no affine parameters, biased variance) is not a rule: it reads a whole group of hubs. It is two
rounds of local rules over a clique of edges inside each group (`layer_norm_rounds`), each edge weighing 1/g:

  round 1  z(i) -> M(j) [clique/g]        M = mean z at every hub of the group
           z - M => C;  C, C -> C2        C = z - mean (local), C2 = C^2 (Table 1's product rule)
  round 2  C2(i) -> S(j) [clique/g]       S = var z at every hub
           C / sqrt(S + eps) => r         the node-local division
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from bdh_gpu.config import LN_EPS  # the tensor model's LayerNorm eps: one definition (torch-free)
from bdh_graph import kernels as K

LN_VARIABLES = ("Lm", "Lc", "Lc2", "Ls")  # the scratch variables layer_norm_rounds needs on a hub population
LN_ROUNDS = 2  # rounds per LayerNorm


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


def layer_norm_rounds(pop: str, src: str, dst: str, group: str, label: str = "LN", eps: float = LN_EPS, then=()):
    """LN(pop.src) => pop.dst over the groups of synapse group `group` (a `clique`), in two local rounds.

    `pop` must carry LN_VARIABLES; `src` may equal `dst`. After the rounds the scratch variables are 0 again.
    `then`: computation rules appended to the second round (they see dst normalised)."""
    q = lambda v: f"{pop}.{v}"
    M, C, C2, S = (q(v) for v in LN_VARIABLES)
    return (
        K.Round(
            communication=(K.send(q(src), M, group),),
            computation=(linear((q(src), M), C, (1, -1)), K.product(C, C, C2), K.reset(M)),
            label=f"{label}: mean",
        ),
        K.Round(
            communication=(K.send(C2, S, group),),
            computation=(normalize(C, S, q(dst), eps), K.reset(C), K.reset(C2), K.reset(S)) + tuple(then),
            label=f"{label}: variance",
        ),
    )
