"""Hypothesis strategies for the equivalence tests: small random BDH-GPU models and byte sequences.

`cases(...)` draws a `Case` (variant, U kind, heads h, neurons per head N, d, layers L, tokens T, weight scale,
seed, token ids); `case.model()` builds the float64 model deterministically from it. Every field shrinks toward
the smallest configuration (1 head, 2 neurons, d = 1, 1 layer, 1 token), so a counterexample reads like
`Case(variant='normfree', U='rope', h=1, N=2, d=1, L=1, ids=(0, 0), ...)`.

Weight scales: "released" is N(0, 0.02) for every parameter (as the released code); "unit" keeps activations of
order 1 through the normfree products (E ~ 0.5/sqrt(n), D_x, D_y ~ 1/sqrt(d), embed ~ 1), which exercises the
thresholds far from zero.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

VARIANTS = ("official", "paper", "normfree")
U_KINDS = ("none", "alibi", "rope", "rope+alibi")
SCALES = ("released", "unit")


@dataclass(frozen=True)
class Case:
    variant: str
    U: str
    h: int
    N: int
    d: int
    L: int
    ids: tuple
    scale: str = "released"
    seed: int = 0

    @property
    def n(self):
        return self.h * self.N

    def config(self):
        from bdh_gpu import BDHConfig
        return BDHConfig(n_head=self.h, d=self.d, N=self.N, n_layer=self.L, dropout=0.0, U=self.U,
                         variant=self.variant)

    def model(self):
        """The BDH model of this case, float64, eval mode, weights drawn from `seed`."""
        import torch

        from bdh_gpu import BDH
        torch.manual_seed(self.seed)
        m = BDH(self.config()).double().eval()
        if self.scale == "unit":
            g = torch.Generator().manual_seed(self.seed)
            with torch.no_grad():
                for p, std in ((m.E, 0.5 / np.sqrt(self.n)), (m.D_x, 1 / np.sqrt(self.d)),
                               (m.D_y, 1 / np.sqrt(self.d)), (m.embed.weight, 1.0), (m.lm_head, 1 / np.sqrt(self.d))):
                    p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
        return m


@st.composite
def cases(draw, variants=VARIANTS, u_kinds=U_KINDS, max_n=24, max_layers=3, max_T=6):
    """A small model configuration and a token sequence (see module docstring)."""
    variant = draw(st.sampled_from(variants))
    U = draw(st.sampled_from(u_kinds))
    h = draw(st.integers(1, 3))
    rot = "rope" in U
    N = draw(st.integers(1, max(1, max_n // h // 2)).map(lambda k: 2 * k) if rot else st.integers(1, max(1, max_n // h)))
    d = draw(st.integers(1, 6))
    if variant != "normfree":
        d = max(d, 2)          # LN over d = 1 is identically zero: legal, but it tests nothing
    L = draw(st.integers(1, max_layers))
    ids = tuple(draw(st.lists(st.integers(0, 255), min_size=1, max_size=max_T)))
    scale = draw(st.sampled_from(SCALES))
    seed = draw(st.integers(0, 2**16))
    return Case(variant, U, h, N, d, L, ids, scale, seed)
