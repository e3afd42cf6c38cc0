"""Hypothesis strategies for the equivalence tests: small random BDH-GPU models and byte sequences.

`cases(...)` draws a `Case` (variant, U kind, heads h, neurons per head N, d, layers L, tokens T > L, weight
scale, seed, token ids); `case.model()` builds the float64 model deterministically from it. Every field shrinks
toward the smallest configuration (1 head, 2 neurons, d = 1, 1 layer, 2 tokens), so a counterexample reads like
`Case(variant='normfree', U='rope', h=1, N=2, d=1, L=1, ids=(0, 0), ...)`.

Weight scales: "released" is the model's own initialisation: N(0, 0.02) for every parameter (as the released
code), with the normfree variant's constant gains (`bdh_gpu.config.default_gains`) that keep Eq. 7's products of
order 1; "unit" (official and paper only) draws D_x, D_y ~ 1/sqrt(d), E ~ 0.5/sqrt(n), embed ~ 1, which puts
the LN inputs and thresholds far from zero. T > L always: every layer's state is read after a write.

`live(case)` tells whether a draw exercises anything (logits not ~0, activations bounded); the tests `assume`
it and count the share of live draws in `DRAWS`, which `tests/conftest.py` prints after the run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

VARIANTS = ("official", "paper", "normfree")
U_KINDS = ("none", "alibi", "rope", "rope+alibi")
SCALES = ("released", "unit")
LIVE_MIN_LOGIT = 1e-6  # a draw whose logits are all below this is dead: it would compare zeros with zeros
LIVE_MAX_ACT = 1e3  # ... and one whose activations exceed this has blown up (a slice's scale is its largest
# element: one huge element would let errors on the small ones pass)
DRAWS = Counter()  # (test name, "drawn" | "live") -> count, printed by tests/conftest.py
WORST = {}  # test name -> the largest relative error a test saw over its draws, printed by tests/conftest.py


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

        return BDHConfig(n_head=self.h, d=self.d, N=self.N, n_layer=self.L, dropout=0.0, U=self.U, variant=self.variant)

    def model(self):
        """The BDH model of this case, float64, eval mode, weights drawn from `seed`."""
        import torch

        from bdh_gpu import BDH

        torch.manual_seed(self.seed)
        m = BDH(self.config()).double().eval()
        if self.scale == "unit" and self.variant != "normfree":
            g = torch.Generator().manual_seed(self.seed)
            with torch.no_grad():
                for p, std in (
                    (m.E, 0.5 / np.sqrt(self.n)),
                    (m.D_x, 1 / np.sqrt(self.d)),
                    (m.D_y, 1 / np.sqrt(self.d)),
                    (m.embed.weight, 1.0),
                    (m.lm_head, 1 / np.sqrt(self.d)),
                ):
                    p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
        return m


@st.composite
def cases(draw, variants=VARIANTS, u_kinds=U_KINDS, max_n=24, max_layers=3, max_T=6):
    """A small model configuration and a token sequence (see module docstring)."""
    variant = draw(st.sampled_from(variants))
    U = draw(st.sampled_from(u_kinds))
    h = draw(st.integers(1, 3))
    rot = "rope" in U
    N = draw(
        st.integers(1, max(1, max_n // h // 2)).map(lambda k: 2 * k) if rot else st.integers(1, max(1, max_n // h))
    )
    d = draw(st.integers(1, 6))
    if variant != "normfree":
        d = max(d, 2)  # LN over d = 1 is identically zero: legal, but it tests nothing
    L = draw(st.integers(1, max_layers))
    ids = tuple(draw(st.lists(st.integers(0, 255), min_size=L + 1, max_size=max(L + 1, max_T))))
    scale = draw(st.sampled_from(SCALES if variant != "normfree" else ("released",)))
    seed = draw(st.integers(0, 2**16))
    return Case(variant, U, h, N, d, L, ids, scale, seed)


def live(case, name: str) -> dict:
    """Trace the case's tensor model, count the draw under `name`, and `assume` it is live: some logit above
    LIVE_MIN_LOGIT, some neuron of the last layer with y > 0 (the attention gate fired), and every x, y, logit
    below LIVE_MAX_ACT in magnitude. Returns the magnitudes."""
    import torch

    tr = case.model().trace(torch.tensor(case.ids))
    mags = {k: float(tr[k].abs().max()) for k in ("logits", "x", "y")}
    mags["y_last"] = float(tr["y"][-1].abs().max())
    DRAWS[(name, "drawn")] += 1
    ok = mags["logits"] > LIVE_MIN_LOGIT and mags["y_last"] > 0 and max(mags.values()) < LIVE_MAX_ACT
    DRAWS[(name, "live")] += int(ok)
    assume(ok)
    return mags
