"""This project's two extensions of the local kernel, registered with `bdh_graph.register_rule`.

Table 1's rules are additive (`q -> r`), multiplicative (`q, g -> r`) or thresholds (`(p - n)^+ -> r`); a signed
difference and the released model's LayerNorm are not among them. Both run on a population of hub nodes:

  groupnorm   LN_g(s_1 q_1 + s_2 q_2 + ...) => r     divisive normalisation over consecutive groups of g nodes
              (each head's d attention hubs, the d residual hubs): (z - mean z) / sqrt(var z + eps), biased
              variance, no affine parameters, eps = 1e-5 as the released `nn.LayerNorm`. A canonical neural
              computation (a pool of inhibitory interneurons dividing by the population's activity), and the
              only non-local step: it reads the whole group.
  linear      s_1 q_1 + s_2 q_2 + ... => r            signed sum of a node's own variables (excitatory minus
              inhibitory input: the output neurons' logit, Pe - Pi).

Both overwrite `r` (`=>`), unlike the additive `->` of Table 1. The functions use only `ops.xp` operations
that numpy and torch share, so the same rule runs on the numpy, numba and PyG backends.
"""
from __future__ import annotations

from bdh_graph import kernels as K

LN_EPS = 1e-5  # as nn.LayerNorm in the released code


def _signed_sum(rule, v):
    signs = rule.param("signs") or (1,) * len(rule.src)
    z = None
    for s, q in zip(signs, rule.src):
        term = v[q] if s == 1 else s * v[q]
        z = term if z is None else z + term
    return z


def _groupnorm(rule, v, ops):
    g = rule.param("group")
    eps = rule.param("eps", LN_EPS)
    z = _signed_sum(rule, v).reshape(-1, g)                      # (groups, g)
    c = z - (z.sum(-1) / g)[:, None]
    var = (c * c).sum(-1) / g
    return {rule.dst: (c / ops.xp.sqrt(var + eps)[:, None]).reshape(-1)}


def _linear(rule, v, ops):
    return {rule.dst: _signed_sum(rule, v)}


K.register_rule("groupnorm", _groupnorm)
K.register_rule("linear", _linear)


def groupnorm(src, dst, group, signs=None, eps=LN_EPS):
    """`LN_group(sum_k signs[k] src[k]) => dst` over consecutive groups of `group` nodes."""
    signs = tuple(signs) if signs is not None else (1,) * len(src)
    expr = " ".join(("+ " if s > 0 else "- ") + q for s, q in zip(signs, src)).lstrip("+ ")
    return K.Rule("groupnorm", tuple(src), dst, params=(("group", int(group)), ("eps", float(eps)), ("signs", signs)),
                  text=f"LN_{group}({expr}) => {dst}")


def linear(src, dst, signs):
    expr = " ".join(("+ " if s > 0 else "- ") + q for s, q in zip(signs, src)).lstrip("+ ")
    return K.Rule("linear", tuple(src), dst, params=(("signs", tuple(signs)),), text=f"{expr} => {dst}")
