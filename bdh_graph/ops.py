"""What a computation rule may use (`Ops`), and the NumPy instance of it (`numpy_ops`).

A computation rule `fn(rule, values, ops)` (bdh_graph.kernels) sees only `ops`: `ops.xp` (numpy or torch),
`ops.relu`, `ops.zeros_like` and `ops.spike`, so one function runs on every backend. This module imports only
numpy; kernels (its locality probe) and every backend import it, and it imports neither.
"""

import numpy as np


class Ops:
    """What a computation rule may use: `xp` (numpy or torch), relu, zeros_like and spike (identity unless
    spiking: then a rate q fires floor(|q|) + Bernoulli(frac(|q|)) spikes with the sign of q, so E = q)."""

    def __init__(self, xp, relu, zeros_like, spike):
        self.xp, self.relu, self.zeros_like, self.spike = xp, relu, zeros_like, spike


def numpy_ops(rng=None):
    """Ops over numpy arrays; `rng` (a numpy Generator) turns on the spiking mode (reference 2d)."""

    def spike(q):
        if rng is None:
            return q
        a = np.abs(q)
        f = np.floor(a)
        return np.sign(q) * (f + (rng.random(np.shape(q)) < (a - f)))

    return Ops(np, lambda v: np.maximum(v, 0.0), np.zeros_like, spike)
