"""Transformer baselines for the quality benchmark: a GPT-2-style and a Llama-style byte-level Transformer.

    GPT2      learned positions, pre-LayerNorm (affine), causal softmax attention (qkv bias), GELU MLP 4d,
              final LayerNorm, lm_head tied to the token embedding (as GPT-2).
    Llama     no positional embedding, RoPE on q and k (theta 10000), RMSNorm, SwiGLU MLP (~8d/3), no biases,
              untied lm_head (as Llama).

Both: vocabulary = the 256 byte values, forward(idx (B,T)) -> logits (B,T,256), causal (position t sees
tokens <= t; BDH's attention is strictly causal, tau < t, and adds the token itself through its residual).
`sized(kind, target_params)` picks the width (and the MLP width, to land on the target within ~1%) for a
given depth, so BDH-GPU and the baselines compare at equal parameter count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB = 256


@dataclass
class TransformerConfig:
    kind: str = "gpt2"  # "gpt2" | "llama"
    d: int = 128  # model width
    n_layer: int = 4
    n_head: int = 4
    hidden: int = 512  # MLP width (gpt2: 4d; llama: ~8d/3, SwiGLU has three d x hidden matrices)
    block_size: int = 1024  # gpt2: number of learned positions; llama: unused (RoPE)
    dropout: float = 0.0
    rope_theta: float = 10000.0


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(q: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate pairs (q_2m, q_2m+1) of q (B,H,T,hd) by t * theta^(-2m/hd) radians (RoPE)."""
    T, hd = q.shape[-2], q.shape[-1]
    inv = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64, device=q.device) / hd)  # (hd/2,)
    ang = torch.arange(T, dtype=torch.float64, device=q.device)[:, None] * inv[None, :]  # (T,hd/2)
    cos, sin = ang.cos().to(q.dtype), ang.sin().to(q.dtype)
    q0, q1 = q[..., 0::2], q[..., 1::2]
    return torch.stack((q0 * cos - q1 * sin, q1 * cos + q0 * sin), dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        bias = c.kind == "gpt2"
        self.c = c
        self.qkv = nn.Linear(c.d, 3 * c.d, bias=bias)
        self.proj = nn.Linear(c.d, c.d, bias=bias)

    def forward(self, x):
        B, T, d = x.shape
        H = self.c.n_head
        q, k, v = self.qkv(x).view(B, T, 3, H, d // H).permute(2, 0, 3, 1, 4)  # (B,H,T,hd) each
        if self.c.kind == "llama":
            q, k = rope(q, self.c.rope_theta), rope(k, self.c.rope_theta)
        p = self.c.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B,H,T,hd)
        return self.proj(y.transpose(1, 2).reshape(B, T, d))


class MLP(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.kind = c.kind
        if c.kind == "gpt2":
            self.up, self.down = nn.Linear(c.d, c.hidden), nn.Linear(c.hidden, c.d)
        else:  # SwiGLU
            self.gate = nn.Linear(c.d, c.hidden, bias=False)
            self.up = nn.Linear(c.d, c.hidden, bias=False)
            self.down = nn.Linear(c.hidden, c.d, bias=False)

    def forward(self, x):
        if self.kind == "gpt2":
            return self.down(F.gelu(self.up(x)))
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        Norm = nn.LayerNorm if c.kind == "gpt2" else RMSNorm
        self.n1, self.attn, self.n2, self.mlp = Norm(c.d), Attention(c), Norm(c.d), MLP(c)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x):
        x = x + self.drop(self.attn(self.n1(x)))
        return x + self.drop(self.mlp(self.n2(x)))


class Transformer(nn.Module):
    """GPT-2-style (`kind="gpt2"`) or Llama-style (`kind="llama"`) byte-level decoder."""

    def __init__(self, c: TransformerConfig):
        super().__init__()
        if c.kind not in ("gpt2", "llama"):
            raise ValueError(f"TransformerConfig.kind: expected 'gpt2' or 'llama', got {c.kind!r}")
        if c.d % c.n_head or (c.d // c.n_head) % 2:
            raise ValueError(
                f"TransformerConfig: expected d divisible by n_head with an even head size, "
                f"got d={c.d}, n_head={c.n_head}"
            )
        self.config = c
        self.embed = nn.Embedding(VOCAB, c.d)
        self.pos = nn.Embedding(c.block_size, c.d) if c.kind == "gpt2" else None
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.norm = nn.LayerNorm(c.d) if c.kind == "gpt2" else RMSNorm(c.d)
        self.lm_head = None if c.kind == "gpt2" else nn.Linear(c.d, VOCAB, bias=False)
        self.drop = nn.Dropout(c.dropout)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * c.n_layer) if name.endswith(("proj.weight", "down.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        x = self.embed(idx.long())  # (B,T,d)
        if self.pos is not None:
            if self.config.block_size < T:
                raise ValueError(
                    f"GPT-2 baseline: expected at most block_size={self.config.block_size} tokens, got {T}"
                )
            x = x + self.pos(torch.arange(T, device=idx.device))
        x = self.drop(x)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return x @ self.embed.weight.t() if self.lm_head is None else self.lm_head(x)  # (B,T,256)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _count(c: TransformerConfig) -> int:
    with torch.device("meta"):
        return n_params(Transformer(c))


def sized(
    kind: str, target_params: int, *, n_layer: int = 4, n_head: int = 4, block_size: int = 1024, dropout: float = 0.0
) -> Transformer:
    """A `kind` Transformer with `n_layer` layers and about `target_params` parameters (within ~1%).

    The width d is the largest multiple of 2 n_head whose model with the standard MLP width (gpt2: 4d,
    llama: 8d/3) does not exceed the target; the MLP width is then set to land on the target.
    """

    def cfg(d, hidden):
        return TransformerConfig(
            kind=kind,
            d=d,
            n_layer=n_layer,
            n_head=n_head,
            hidden=max(1, hidden),
            block_size=block_size,
            dropout=dropout,
        )

    ratio = 4.0 if kind == "gpt2" else 8.0 / 3.0
    step = 2 * n_head
    d = step
    while _count(cfg(d + step, round(ratio * (d + step)))) <= target_params:
        d += step
    per_unit = _count(cfg(d, 2)) - _count(cfg(d, 1))  # parameters per MLP hidden unit
    base = _count(cfg(d, 1)) - per_unit
    hidden = max(1, round((target_params - base) / per_unit))
    c = cfg(d, hidden)
    model = Transformer(c)
    got = n_params(model)
    if abs(got - target_params) > 0.05 * target_params:
        raise ValueError(
            f"sized({kind!r}): cannot reach {target_params} parameters with n_layer={n_layer}, "
            f"n_head={n_head} (got {got}); use fewer layers or heads"
        )
    return model
