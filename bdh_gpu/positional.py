"""U, the positional operator, from the config alone, in numpy: no torch (reference Sec. 4; Eq. 4, 8).

One definition for both sides of the equivalence: the tensor model (`bdh_gpu.model.rope_frequencies` and
`alibi_slopes` wrap these arrays as tensors) and the graph compiles (`retention`, read by `equivalence.compile`
on ranks that never import torch). Both therefore turn and damp by the very same float64 numbers.

RoPE: f_i = theta^(-q(i)/N) / (2 pi), q(i) = 2 floor(i/2), in float32 as the released code computes it: the
exponent q/N, the reciprocal and the division by 2 pi are the same IEEE float32 operations; the power is
theta^e in float64 rounded once to float32 (`math.pow`, the C library's pow). The released code's torch float32
pow (SIMD, 1-ulp accurate) may differ from it by one float32 ulp on some pairs, and which pairs depends on the
machine's vector width; the import of released checkpoints compares their stored `attn.freqs` with these to 1e-6.
"""

from __future__ import annotations

import math

import numpy as np


def rope_frequencies(N: int, theta: float) -> np.ndarray:
    """Cycles per token f_i of neuron i of a head, (N,) float64 holding float32 values (module docstring)."""
    q = np.floor(np.arange(N, dtype=np.float32) / np.float32(2)) * np.float32(2)
    e = q / np.float32(N)  # float32, exact q over N rounded once
    base = float(np.float32(theta))  # the released code's Python float theta, as a float32 operand
    exps, at = np.unique(e, return_inverse=True)  # N / 2 distinct exponents
    p = np.array([math.pow(base, float(x)) for x in exps]).astype(np.float32)[at]
    return ((np.float32(1.0) / p) / np.float32(2 * math.pi)).astype(np.float64)


def alibi_slopes(n_head: int, max_bias: float) -> np.ndarray:
    """Damping rate m_k = 2^(-max_bias (k+1) / h) of head k (ALiBi's geometric slopes), (h,) float64.

    Head k keeps u_k = exp(-m_k) of its state per token: the multiplicative analogue of ALiBi's bias -m (t - tau).
    """
    return np.array([math.pow(2.0, -float(max_bias) * k / n_head) for k in range(1, n_head + 1)])


def retention(config) -> dict:
    """U exactly as applied, in neuron space (index head*N + i), float64 numpy, from the config alone.

    u (n,): damping per key neuron, exp(-m_k) for every neuron of head k (ones without ALiBi);
    theta (n//2,): radians per token of pair (2m, 2m+1) (zeros without RoPE).
    U = diag(u) R(theta) with R acting on each pair as [[cos, -sin], [sin, cos]] (u is equal within a pair,
    so the two commute); the attention score between positions tau < t is x_tau^T U^{t-tau} x_t.
    """
    cfg = config
    u = np.ones(cfg.n)
    if cfg.uses_alibi:
        u = np.repeat(np.exp(-alibi_slopes(cfg.n_head, cfg.alibi_max_bias)), cfg.N)
    theta = np.zeros(cfg.n // 2)
    if cfg.uses_rope:
        theta = np.tile(2 * math.pi * rope_frequencies(cfg.N, cfg.rope_theta)[::2], cfg.n_head)
    return {"u": u, "theta": theta}
