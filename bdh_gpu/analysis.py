"""Analyses of a BDH-GPU model's weights and activations (paper Sec. 5-7, reference section 6), no graph needed.

    sparsity(model, idx)          fraction of neurons with x > 0 and y > 0, per layer (paper: about 5%)
    neuron_graph(model, "x", k)   G_x = D_x E restricted to head k's block (N x N), float64 numpy
    sigma_synapses(model, tr, ...) sigma_l(i, j) of chosen synapses after the last token (Eq. 6 / Eq. 16)
    merge(a, b)                   concatenate two models along n (Sec. 7.1), average the rest

Edge convention (reference 1): the edge from neuron i to neuron j of G_x has weight G_x[j, i].
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .config import BDHConfig, InputError
from .model import BDH


def _ids(idx) -> torch.Tensor:
    if isinstance(idx, str):
        idx = idx.encode("utf-8")
    if isinstance(idx, (bytes, bytearray)):
        idx = list(idx)
    t = torch.as_tensor(idx, dtype=torch.long)
    if t.dim() == 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(f"expected a non-empty sequence of token ids, got shape {tuple(t.shape)}")
    return t


def layer_names(model: BDH) -> list[int]:
    """The paper's layer numbers of `model.trace(...)["x"]` rows: 1..L (official) or 0..L (paper, normfree)."""
    L = model.config.n_layer
    return list(range(1, L + 1)) if model.config.variant == "official" else list(range(L + 1))


@torch.no_grad()
def sparsity(model: BDH, idx, trace: dict | None = None) -> dict:
    """Activation sparsity per layer: mean over tokens of the fraction of the n neurons with x > 0, y > 0.

    Returns dict(layers=[...], x=[...], y=[...], tokens=T, n=n) (the paper's measurement, Sec. 6.1: y about 5%).
    Layer 0 of the paper/normfree variants is the input boundary (y_0 = x_0). Pass `trace` to reuse one.
    """
    tr = trace if trace is not None else model.trace(_ids(idx))
    x, y = tr["x"], tr["y"]  # (L', T, n)
    return dict(
        layers=layer_names(model),
        x=(x > 0).double().mean((1, 2)).tolist(),
        y=(y > 0).double().mean((1, 2)).tolist(),
        tokens=int(x.shape[1]),
        n=int(x.shape[2]),
    )


def neuron_graph(model: BDH, which: str = "x", head: int = 0) -> np.ndarray:
    """G = D E on head `head`'s block of neurons, (N, N) float64: G_x = D_x,h E_h or G_y = D_y,h E_h.

    E_h is E's columns of that head; G[j, i] is the weight of the edge i -> j (Obs. 4: Gx_e - Gx_i = D_x E)."""
    C = model.config
    if which not in ("x", "y"):
        raise ValueError(f"neuron_graph: which must be 'x' or 'y', got {which!r}")
    if not 0 <= head < C.n_head:
        raise ValueError(f"neuron_graph: head must lie in [0, {C.n_head - 1}], got {head}")
    w = model.effective_weights()  # gains folded in: the graph's own weights
    D = (w["D_x"] if which == "x" else w["D_y"])[head].double().cpu()  # (N, d)
    E = w["E"][:, head * C.N : (head + 1) * C.N].double().cpu()  # (d, N)
    return (D @ E).numpy()


def weight_scales(model: BDH, which: str = "x") -> dict:
    """Mean and standard deviation of D_(x|y) and E: the scales of the random low-rank baseline."""
    w = model.effective_weights()
    D = (w["D_x"] if which == "x" else w["D_y"]).double()
    E = w["E"].double()
    return dict(
        mean_D=float(D.mean()),
        std_D=float(D.std()),
        mean_E=float(E.mean()),
        std_E=float(E.std()),
        d=model.config.d,
        N=model.config.N,
    )


def _key_power(x: np.ndarray, k: np.ndarray, u: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Rows x_tau^T U^k_tau for x (T, n) and per-row powers k (T,): U = diag(u) R(theta) acting on the key index
    (x^T R turns each pair by -theta: (x_2m c + x_2m+1 s, -x_2m s + x_2m+1 c))."""
    out = x * (u[None, :] ** k[:, None])
    if np.any(theta != 0):
        ph = k[:, None] * theta[None, :]  # (T, n/2)
        c, s = np.cos(ph), np.sin(ph)
        a, b = out[:, 0::2].copy(), out[:, 1::2].copy()
        out[:, 0::2], out[:, 1::2] = a * c + b * s, -a * s + b * c
    return out


def sigma_synapses(model: BDH, trace: dict, layer: int, rows, cols, t: int | None = None) -> np.ndarray:
    """sigma_l[a, b] for a in rows (value neurons), b in cols (key neurons), after token t (default: the last).

    sigma_{t,l} = sum_{tau <= t} y_{tau,l-1} x_{tau,l}^T U^{t - tau + 1} (Eq. 6 unrolled; for the LN variants the
    paper's Eq. 16 state). Only for `normfree` is E sigma the model's attention state rho (Eq. 7); the LN
    variants write rho with another value (LN(E y) for paper, the residual v for official), so there sigma is
    the neuron-level Hebbian state the paper analyses, not a factor of rho (tests/test_normfree_learns.py
    measures both). `layer` is the paper's l >= 1; y_{l-1} is the previous layer's y (official: layer l-1 >= 1,
    so l >= 2 there). Returns (len(rows), len(cols)) float64.
    """
    names = layer_names(model)
    if layer < 1 or layer not in names or (layer - 1) not in names:
        raise ValueError(
            f"sigma_synapses: layer must be one of {[l for l in names if l - 1 in names]} for the "
            f"{model.config.variant} variant, got {layer}"
        )
    x = trace["x"][names.index(layer)].double().cpu().numpy()  # (T, n)
    y = trace["y"][names.index(layer - 1)].double().cpu().numpy()
    T = x.shape[0]
    t = T - 1 if t is None else int(t)
    if not 0 <= t < T:
        raise ValueError(f"sigma_synapses: t must lie in [0, {T - 1}], got {t}")
    ret = model.retention()
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    pair_cols = np.unique(np.concatenate([cols - cols % 2, cols - cols % 2 + 1]))  # rotation mixes pairs
    pair_cols = pair_cols[pair_cols < x.shape[1]]
    xk = np.zeros((t + 1, x.shape[1]))
    xk[:, pair_cols] = x[: t + 1, pair_cols]
    xk = _key_power(xk, (t - np.arange(t + 1) + 1).astype(np.float64), ret["u"], ret["theta"])
    return y[: t + 1, rows].T @ xk[:, cols]


def _check_mergeable(a: BDHConfig, b: BDHConfig):
    for f in ("d", "N", "n_layer", "vocab_size", "variant", "U", "rope_theta", "alibi_max_bias", "gains"):
        if getattr(a, f) != getattr(b, f):
            raise InputError(
                f"merge: the models differ in {f} ({getattr(a, f)!r} vs {getattr(b, f)!r}); "
                f"concatenation along n needs equal d, N, n_layer, vocab_size, variant, U"
            )
    if a.uses_alibi:
        raise InputError(
            f"merge: U={a.U!r} damps head k by a rate that depends on k and the head count, so the "
            f"merged model's heads would forget at other rates than their parents'; use rope or none"
        )


@torch.no_grad()
def merge(a: BDH, b: BDH) -> BDH:
    """Sec. 7.1 model merging: concatenate every n-sized tensor, average the rest.

    D_x, D_y (h, N, d) concatenate along heads (h_a + h_b heads), E (d, n) along its n columns; RoPE frequencies
    depend only on N and rope_theta (per head), so concatenating heads concatenates the frequencies exactly.
    embed and lm_head are averaged. The heads of the merged model compute what each parent's heads compute
    given the same residual stream (tests/test_teach_analysis.py::test_merge_keeps_each_parents_heads).
    """
    _check_mergeable(a.config, b.config)
    C = BDHConfig(
        **{
            **a.config.to_dict(),
            "n_head": a.config.n_head + b.config.n_head,
            "dropout": max(a.config.dropout, b.config.dropout),
        }
    )
    m = BDH(C).to(dtype=a.D_x.dtype)
    m.D_x.copy_(torch.cat([a.D_x, b.D_x.to(a.D_x.dtype)], 0))
    m.D_y.copy_(torch.cat([a.D_y, b.D_y.to(a.D_y.dtype)], 0))
    m.E.copy_(torch.cat([a.E, b.E.to(a.E.dtype)], 1))
    m.embed.weight.copy_((a.embed.weight + b.embed.weight.to(a.E.dtype)) / 2)
    m.lm_head.copy_((a.lm_head + b.lm_head.to(a.E.dtype)) / 2)
    return m


def top_active(act: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k neurons most often active (then largest total activity) in act (T, n)."""
    act = np.asarray(act)
    score = (act != 0).sum(0) + np.abs(act).sum(0) / (1.0 + np.abs(act).sum())
    return np.sort(np.argsort(-score, kind="stable")[: min(k, act.shape[1])])


def nats_to_bits(x: float) -> float:
    return x / math.log(2)
