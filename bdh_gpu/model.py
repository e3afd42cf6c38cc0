"""BDH-GPU, the tensor model (arXiv:2509.26507, Definition 4, Eq. 4, 7, 8; released `bdh.py`).

Three variants share one set of parameters and one layer loop (`BDH._run`):

  official  (released code)        v = LN(embed(i));  per layer  x = (D_x v)^+   (recomputed)
                                   a_h = sum_{tau<t} v_tau x_tau,h^T U^{t-tau} x_t,h ;  y = (D_y LN(a_h))^+ * x
                                   v = LN(v + LN(E y));  logits = v @ lm_head
  paper     (Eq. 8)                x_0 = (D_x LN(embed(i)))^+, y_0 = x_0;  per layer  v* = LN(E y_{l-1})
                                   x_l = x_{l-1} + (D_x v*)^+ ;  a_h = sum_{tau<t} v*_tau x_tau,h^T U^{t-tau} x_t,h
                                   y_l = (D_y LN(a_h))^+ * x_l ;  logits = LN(E y_L) @ lm_head
  normfree  (Eq. 7)                as paper without any LN, and a = sum_h a_h (all n neurons), y = (D_y a)^+ * x

Two execution forms of the attention, equal to each other:
  token-parallel (Eq. 4): scores (R_t x_t).(R_tau x_tau) * u^{t-tau}, strictly tau < t, then @ values;
  recurrent (Eq. 8):      state per layer and head S = sum_{tau<t} (R_tau x_tau) value_tau^T (N x d, i.e. rho^T
                          in absolute phase); read a_t = S^T R_t x_t, then write S += (R_t x_t) value_t^T.
The positional operator is U = diag(u) R(theta) (see `BDH.retention`). Neuron index = head * N + i.

Shapes: B batch, T tokens, h heads, N neurons per head, n = h*N, d low-rank dimension, V vocabulary.
Parameters (paper name -> released name):  D_x (h,N,d) = encoder^T per head;  D_y (h,N,d) = encoder_v^T;
E (d,n) = decoder^T;  embed (V,d) = embed;  lm_head (d,V) = lm_head.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import positional
from .config import GAIN_NAMES, INIT_STD, LN_EPS, BDHConfig
from .hub import ModelHubMixin

ALIBI_LAZY_LOG = 20.0  # the ALiBi state is rescaled when a stored factor would exceed e^20 (see BDHState)
SPARSE_MAX_DENSITY = (
    0.1  # step() gathers active neurons when at most this fraction fires (crossover ~0.1-0.15 on 2 cores)
)
# Attention("auto") (the default): the chunked form from AUTO_CHUNK_MIN_T tokens on, in chunks of AUTO_CHUNK_SIZE,
# the full T x T form below. Both are equal; this only picks the faster. Measured on the idle 2-core CPU
# (2026-12-01, train step of the `small` shapes, batch 1; `python -m benchmarks --only attention`, chunks 128, 256,
# 512 at T = 256 ... 4096, twice, and `python -m benchmarks.attention --T 512 1024 --rounds 3 --chunks 128 256`):
# at T = 512 full and chunked are within 4% of each other; from T = 1024 on chunked wins (1.5-1.7x the released
# math at 1024 against 1.1-1.2x for full). Chunks of 128 and of 256 are within noise of each other in speed from
# 1024 to 4096; 256 keeps the larger products (0.53 of a 2048^3 matmul's FLOP/s at T = 2048 against 0.47).
AUTO_CHUNK_MIN_T = 1024
AUTO_CHUNK_SIZE = 256


# ----------------------------------------------------------------------------- primitives


def layer_norm(z: torch.Tensor) -> torch.Tensor:
    """LN(z) = (z - mean z) / std z over the last axis, no affine parameters, eps 1e-5 (reference Sec. 1)."""
    return F.layer_norm(z, (z.shape[-1],), eps=LN_EPS)


def rope_frequencies(N: int, theta: float) -> torch.Tensor:
    """Cycles per token f_i of neuron i of a head, (N,) float64 on the CPU: `bdh_gpu.positional.rope_frequencies`
    (f_i = theta^(-q(i)/N) / (2 pi), q(i) = 2 floor(i/2), float32 values as the released code computes them,
    used exactly in float64), the one definition the graph compiles share."""
    return torch.from_numpy(positional.rope_frequencies(N, theta))


def rope_cos_sin(positions: torch.Tensor, freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the phase 2 pi frac(t f) of every position t and neuron pair, (T, N/2) float64.

    The product t * f is exact in float64 for t < 2^29 (f has a 24-bit mantissa), so the phase is accurate to
    ~1e-15 rad at t = 1e7; the released recipe forms t * f in float32 and loses the phase there (tests pin both).
    """
    cycles = torch.remainder(positions.to(torch.float64)[:, None] * freqs[None, ::2], 1.0)
    phase = (2 * math.pi) * cycles
    return phase.cos(), phase.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """R_t x: pair (x_2m, x_2m+1) -> (x_2m cos - x_2m+1 sin, x_2m+1 cos + x_2m sin).  x (..., T, N), cos (T, N/2).

    Fused: float32/float64 as one complex product (x_2m + i x_2m+1) e^{i phase} (its gradient, by autograd, is
    the rotation by -phase, R^T g); other dtypes (bf16/fp16 under autocast) as R x = x * c + swap(x) * s with
    c = (cos, cos), s = (-sin, sin) per pair and the same R^T backward (`_Rotate`). No per-pair slices."""
    if x.dtype in (torch.float32, torch.float64):
        phase = torch.complex(cos.to(x.dtype), sin.to(x.dtype))  # (T, N/2)
        return torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2)).contiguous()) * phase).flatten(-2)
    c = cos.to(x.dtype).repeat_interleave(2, -1)  # (T, N)
    s = torch.stack((-sin, sin), dim=-1).flatten(-2).to(x.dtype)  # (T, N)
    return _Rotate.apply(x, c, s)


def _rotate_fwd(x, c, s):
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (x_2m+1, x_2m)
    return torch.addcmul(x * c, swapped, s)


class _Rotate(torch.autograd.Function):
    """y = R x (c, s as in `rotate`); dL/dx = R^T dL/dy = rotation with s -> -s. c, s are constants."""

    @staticmethod
    def forward(ctx, x, c, s):
        ctx.save_for_backward(c, s)
        return _rotate_fwd(x, c, s)

    @staticmethod
    def backward(ctx, g):
        c, s = ctx.saved_tensors
        return _Rotate.apply(g, c, -s), None, None


def alibi_slopes(n_head: int, max_bias: float) -> torch.Tensor:
    """Damping rate m_k = 2^(-max_bias (k+1) / h) of head k (ALiBi's geometric slopes), (h,) float64:
    `bdh_gpu.positional.alibi_slopes` as a tensor. Head k keeps u_k = exp(-m_k) of its state per token."""
    return torch.from_numpy(positional.alibi_slopes(n_head, max_bias))


class BDHState(NamedTuple):
    """Recurrent state after tokens 0..t-1 (pure value: `step` never mutates it unless asked to).

    S[l] (B, h, N, d) holds, for layer l, sum_{tau<t} exp(m (tau - t_ref)) (R_tau x_tau) value_tau^T: rho^T of
    Eq. 8 in absolute phase, so that a silent neuron's row is never touched. The paper's rho_{t-1,l} is
    exp(-m (t - t_ref)) S^T R_t (see `BDH.rho`). t_ref is the ALiBi reference position (0 without ALiBi).
    """

    S: tuple
    t: int
    t_ref: int


retention = positional.retention  # U in neuron space, float64 numpy, from the config alone


ATTENTION_FORMS = ("full", "chunked", "auto")


@dataclass(frozen=True)
class Attention:
    """Which of the equal forms of the token-parallel attention (Eq. 4) `forward` and `prefill` run. An
    execution choice with equal results, so it is part of neither the config nor the checkpoint.

        Attention("full")        one T x T score matrix per head
        Attention("chunked", C)  blocks of C tokens (default AUTO_CHUNK_SIZE), parallel inside a block, the
                                 state carried across blocks: memory linear in T (`BDH._attend_chunked`)
        Attention("auto")        the default: chunked in blocks of AUTO_CHUNK_SIZE from AUTO_CHUNK_MIN_T tokens
                                 on, full below (the measured crossover, `python -m benchmarks.attention`)
    Wherever an attention is taken, a form name ("full", "chunked", "auto") stands for `Attention(name)`.
    """

    form: str = "auto"
    chunk: int | None = None  # tokens per block of the chunked form

    def __post_init__(self):
        if self.form not in ATTENTION_FORMS:
            raise ValueError(f"attention: expected one of {', '.join(ATTENTION_FORMS)}, got {self.form!r}")
        if self.form != "chunked":
            if self.chunk is not None:
                raise ValueError(
                    f"attention: a chunk applies to the chunked form, got {self.form!r} with {self.chunk!r}"
                )
            return
        if self.chunk is None:
            object.__setattr__(self, "chunk", AUTO_CHUNK_SIZE)
        elif not isinstance(self.chunk, int) or isinstance(self.chunk, bool) or self.chunk < 1:
            raise ValueError(f"attention: chunk: expected a positive int (tokens per block), got {self.chunk!r}")

    @classmethod
    def of(cls, attention: Attention | str) -> Attention:
        """An Attention as given, or the one a form name stands for; anything else is a one-line ValueError."""
        if isinstance(attention, Attention):
            return attention
        if isinstance(attention, str):
            return cls(attention)
        raise ValueError(f"attention: expected an Attention or one of {', '.join(ATTENTION_FORMS)}, got {attention!r}")

    def chunk_for(self, T: int) -> int | None:
        """The block size a call over T tokens runs with; None: the full form."""
        if self.form == "auto":
            return AUTO_CHUNK_SIZE if T >= AUTO_CHUNK_MIN_T else None
        return self.chunk


class _Call(NamedTuple):
    """What every layer of one `BDH._run` over tokens t0..t0+T-1 shares."""

    t0: int  # position of the first token
    T: int
    t_ref: int  # ALiBi reference position of the input state
    t_ref_new: int  # ... and of the state returned (rebased when a factor would overflow)
    cs: tuple | None  # RoPE's (cos, sin) of the positions, or None
    build: bool  # return the state after the tokens
    inplace: bool  # update the input state's tensors in place
    chunk: int | None  # block size of the chunked form; None: full
    sparse: bool | None  # gather the active neurons of a single token: True, False, None = by density
    has_state: bool

    def use_sparse(self, z: torch.Tensor) -> bool:
        """Sparse products only for one token with a state, and (sparse None) when few neurons of z fire."""
        if not (self.T == 1 and self.has_state):
            return False
        if self.sparse is None:
            return bool((z != 0).float().mean() <= SPARSE_MAX_DENSITY)
        return bool(self.sparse)


# ----------------------------------------------------------------------------- the model


class BDH(ModelHubMixin, nn.Module):
    """The tensor model. `BDH.load(dir)` / `BDH.from_pretrained(dir or owner/name)` / `model.save_pretrained(dir)`
    come from `bdh_gpu.hub.ModelHubMixin` (model directories: `bdh_gpu.io`)."""

    def __init__(self, config: BDHConfig, *, attention: Attention | str = "auto"):
        """attention: the default form of forward/prefill (`Attention`: "full", "chunked" or "auto", the faster
        by T); change it any time (`model.attention = Attention("chunked", 256)`)."""
        super().__init__()
        config.validate()
        # the gains become explicit numbers (config.json stores them), so a saved model never depends on a default
        self.config = config = dataclasses.replace(config, gains=config.resolved_gains())
        g = config.gains
        self._g_embed, self._g_x, self._g_y, self._g_E, self._g_lm = (g[k] for k in GAIN_NAMES)
        self.attention = attention
        h, N, d, V = config.n_head, config.N, config.d, config.vocab_size
        self.embed = nn.Embedding(V, d)  # token -> R^d
        self.D_x = nn.Parameter(torch.empty(h, N, d))  # encoder:  x = (D_x v)^+   (n x d, split by head)
        self.D_y = nn.Parameter(torch.empty(h, N, d))  # encoder:  y = (D_y a)^+ * x
        self.E = nn.Parameter(torch.empty(d, h * N))  # decoder:  E y in R^d
        self.lm_head = nn.Parameter(torch.empty(d, V))  # readout
        for p in (self.embed.weight, self.D_x, self.D_y, self.E, self.lm_head):
            nn.init.normal_(p, mean=0.0, std=INIT_STD)  # as released; the gains set the effective scale
        # U's constants: plain CPU float64 tensors, not buffers (the checkpoint holds only parameters)
        self._freqs = rope_frequencies(N, config.rope_theta) if config.uses_rope else None  # (N,)
        self._slopes = alibi_slopes(h, config.alibi_max_bias) if config.uses_alibi else None  # (h,)
        self._cache = {}

    @property
    def attention(self) -> Attention:
        """The default attention form of forward/prefill (set from an Attention or a form name)."""
        return self._attention

    @attention.setter
    def attention(self, value: Attention | str) -> None:
        self._attention = Attention.of(value)

    @property
    def chunk_size(self):
        raise AttributeError("BDH.chunk_size is now BDH.attention (a bdh_gpu.Attention: full, chunked or auto)")

    @chunk_size.setter
    def chunk_size(self, value):
        raise AttributeError("BDH.chunk_size is now BDH.attention (a bdh_gpu.Attention: full, chunked or auto)")

    # --- small helpers ------------------------------------------------------------------------------------------
    def _on(self, name: str, device) -> torch.Tensor:
        """A U constant (float64) on `device`, cached."""
        key = (name, str(device))
        if key not in self._cache:
            self._cache[key] = getattr(self, name).to(device)
        return self._cache[key]

    def _decay(self, exponent: torch.Tensor, device) -> torch.Tensor:
        """exp(-m_k * exponent) per head, float64: exponent (...,) -> (h, ...)."""
        m = self._on("_slopes", device)
        return torch.exp(-m.view(-1, *([1] * exponent.dim())) * exponent.to(torch.float64))

    def _rescale(self, S: torch.Tensor, shift: int, inplace: bool) -> torch.Tensor:
        """S (B,h,N,d) with head k multiplied by u_k^shift = exp(-m_k shift)."""
        f = self._decay(torch.tensor(float(shift), device=S.device), S.device).to(S.dtype).view(1, -1, 1, 1)
        return S.mul_(f) if inplace else S * f

    def _E_rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Columns idx of E as contiguous rows (k, d); a cached E^T serves decoding without autograd."""
        if torch.is_grad_enabled() and self.E.requires_grad:
            return self.E.t()[idx]
        key = (self.E.data_ptr(), self.E._version, self.E.dtype, self.E.device)
        if self._cache.get("E^T key") != key:
            self._cache["E^T"] = self.E.detach().t().contiguous()
            self._cache["E^T key"] = key
        return self._cache["E^T"][idx]

    @staticmethod
    def _active(z: torch.Tensor, pairs: bool) -> torch.Tensor:
        """Indices of the neurons where any batch row of z (B, n) is non-zero (whole pairs when rotating)."""
        if pairs:
            live = (z != 0).unflatten(-1, (-1, 2)).any(-1).any(0)  # (n/2,)
            p = live.nonzero().squeeze(-1)
            return torch.stack((2 * p, 2 * p + 1), dim=-1).flatten()
        return (z != 0).any(0).nonzero().squeeze(-1)

    # --- the three n x d products -----------------------------------------------------------------------------
    @staticmethod
    def _scaled(z: torch.Tensor, g: float) -> torch.Tensor:
        return z if g == 1.0 else z * g

    def _embed(self, idx: torch.Tensor) -> torch.Tensor:
        """g_embed * embed(idx): (B,T) -> (B,T,d)."""
        return self._scaled(self.embed(idx.long()), self._g_embed)

    def _encode(self, v: torch.Tensor) -> torch.Tensor:
        """(D_x v)^+ per head (D_x with its gain): v (B,T,d) -> (B,h,T,N).

        One (B T, d) x (d, h N) product: `v.unsqueeze(1) @ D_x.mT` would broadcast D_x over the batch, and
        torch.matmul materialises that broadcast (a copy of D_x per sequence, every layer, every step)."""
        B, T, d = v.shape
        h, N, _ = self.D_x.shape
        z = F.linear(self._scaled(v, self._g_x).reshape(B * T, d), self.D_x.reshape(h * N, d))  # (B T, h N)
        return F.relu(z).view(B, T, h, N).transpose(1, 2)

    def _gate_product(self, a: torch.Tensor) -> torch.Tensor:
        """D_y a per head: a (B,h or 1,T,d) -> (B,h,T,N), D_y never copied (as in `_encode`): one product over
        all heads when a is shared by the heads, else one batched product with the heads as the batch."""
        B, k, T, d = a.shape
        h, N, _ = self.D_y.shape
        if k == 1:
            return F.linear(a.reshape(B * T, d), self.D_y.reshape(h * N, d)).view(B, T, h, N).transpose(1, 2)
        return (a.transpose(0, 1).reshape(h, B * T, d) @ self.D_y.mT).view(h, B, T, N).transpose(0, 1)

    def _gate(self, a: torch.Tensor, x: torch.Tensor, sparse: bool) -> torch.Tensor:
        """y = (D_y a)^+ * x: a (B,h or 1,T,d), x (B,h,T,N) -> (B,h,T,N). Sparse: only rows where x > 0."""
        a = self._scaled(a, self._g_y)  # D_y with its gain
        if not sparse:
            return F.relu(self._gate_product(a)) * x
        B, h, T, N = x.shape  # T == 1
        xf = x.reshape(B, h * N)
        act = self._active(xf, pairs=False)  # (k,)
        a_rows = a[:, (act // N) if a.shape[1] > 1 else torch.zeros_like(act), 0, :]  # (B,k,d)
        ys = F.relu((a_rows * self.D_y.view(h * N, -1)[act]).sum(-1))  # (B,k)
        y = torch.zeros_like(xf)
        y[:, act] = ys * xf[:, act]
        return y.view(B, h, T, N)

    def _decode(self, y: torch.Tensor, sparse: bool) -> torch.Tensor:
        """E y: y (B,h,T,N) -> (B,T,d). Sparse: only columns of E where y > 0."""
        B, h, T, N = y.shape
        yf = y.transpose(1, 2).reshape(B, T, h * N)  # neuron index = head * N + i
        if not sparse:
            return self._scaled(yf @ self.E.mT, self._g_E)
        act = self._active(yf[:, 0], pairs=False)
        return self._scaled((yf[:, :, act] @ self._E_rows(act)).to(y.dtype), self._g_E)

    # --- attention (Eq. 4 token-parallel, Eq. 8 recurrent) ------------------------------------------------------
    def _attend(self, x, value, S, *, call: _Call, sparse: bool):
        """a_t,h = sum_{tau<t} value_tau x_tau,h^T U^{t-tau} x_t,h for t = t0..t0+T-1, strictly causal.

        x (B,h,T,N); value (B,T,d); S (B,h,N,d) state of tokens < t0 or None.  Returns a (B,h,T,d) and the
        state of tokens < t0+T (if call.build), stored relative to call.t_ref_new.  Three forms, equal: sparse
        (one token, `_attend_sparse`), full (one T x T score matrix, `_attend_block`), chunked (blocks of
        call.chunk tokens, `_attend_chunked`).
        """
        xr = rotate(x, *call.cs) if call.cs is not None else x  # R_t x_t  (B,h,T,N)
        if sparse:  # T == 1, S given: touch only active rows of S
            return self._attend_sparse(x, xr, value, S, call=call)
        if call.chunk and call.chunk < call.T:
            return self._attend_chunked(xr, value, S, call=call)
        pos = torch.arange(call.t0, call.t0 + call.T, device=x.device)
        return self._attend_block(
            xr, value, S, pos=pos, t_ref=call.t_ref, t_ref_new=call.t_ref_new, build=call.build, inplace=call.inplace
        )

    def _attend_sparse(self, x, xr, value, S, *, call: _Call):
        """One token (T == 1) with a state: read and write only the rows of S of the active neurons (whole pairs
        under RoPE); x (B,h,1,N) before and xr after the rotation."""
        B, h, T, N = x.shape
        dev, dt = x.device, x.dtype
        pos = torch.arange(call.t0, call.t0 + T, device=dev)
        alibi = self._slopes is not None
        xf = xr.reshape(B, h * N)
        act = self._active(x.reshape(B, h * N), pairs=call.cs is not None)  # (k,)
        head = act // N
        Sf = S.reshape(B, h * N, -1)
        rows = Sf.index_select(1, act)  # (B,k,d)
        xa = xf[:, act]  # (B,k)
        xa_read = xa * self._decay(pos - call.t_ref, dev)[head, 0].to(dt) if alibi else xa
        a = torch.zeros(B, h, S.shape[-1], dtype=dt, device=dev)
        a.index_add_(1, head, rows * xa_read.unsqueeze(-1))
        a = a.unsqueeze(2)  # (B,h,1,d)
        if not call.build:
            return a, None
        if call.t_ref_new != call.t_ref:  # ALiBi rebase: the only dense touch, rare
            Sf = self._rescale(S, call.t_ref_new - call.t_ref, call.inplace).view(B, h * N, -1)
        w = self._decay(call.t_ref_new - pos, dev)[head, 0].to(dt) if alibi else 1.0
        delta = (xa * w).unsqueeze(-1) * value[:, 0].unsqueeze(1)  # (B,k,d)
        if call.inplace:  # per stream along dim 0: torch's fast path
            for b in range(B):
                Sf[b].index_add_(0, act, delta[b])
        else:
            Sf = Sf.index_add(1, act, delta)
        return a, Sf.view(B, h, N, -1)

    def _attend_block(self, xr, value, S, *, pos, t_ref, t_ref_new, build, inplace):
        """Token-parallel attention of one block of positions pos (T,), given the state S of the tokens before it.

        xr (B,h,T,N) = R_t x_t; S stored relative to t_ref (or None); the returned state relative to t_ref_new.
        Builds one (T x T) score matrix per head: the whole sequence for the full form, one chunk when chunked.
        """
        B, h, T, N = xr.shape
        dev, dt = xr.device, xr.dtype
        alibi = self._slopes is not None
        # token-parallel within the block: scores (R_t x_t).(R_tau x_tau) u^{t-tau}, tau < t
        a = None
        if T > 1:  # one token has no earlier token in its block
            scores = (xr @ xr.mT).tril_(-1)  # (B,h,T,T), tau < t only
            if alibi:
                lag = (pos[:, None] - pos[None, :]).clamp(min=0)
                scores = scores * self._decay(lag, dev).to(dt)  # u^{t-tau} per head (h,T,T)
            # one product for all heads, (B, h*T, T) @ (B, T, d): no per-head copy of the values
            a = (scores.reshape(B, h * T, T) @ value.to(dt)).view(B, h, T, -1)  # (B,h,T,d)
        if S is not None:  # tokens before the block, from the state
            read = xr @ S.to(dt)  # (B,h,T,d)
            if alibi:
                read = read * self._decay(pos - t_ref, dev).to(dt)[None, :, :, None]
            a = read if a is None else a + read
        elif a is None:
            a = xr.new_zeros(B, h, T, value.shape[-1])
        if not build:
            return a, None
        autocast = torch.is_autocast_enabled(dev.type)
        if S is None:  # under autocast the state accumulates in float32
            S = torch.zeros(B, h, N, value.shape[-1], dtype=torch.float32 if autocast else dt, device=dev)
        vals = value.unsqueeze(1).expand(B, h, T, -1)  # (B,h,T,d)
        if alibi:
            if t_ref_new != t_ref:
                S = self._rescale(S, t_ref_new - t_ref, inplace)
            vals = vals * self._decay(t_ref_new - pos, dev).to(vals.dtype)[None, :, :, None]
        # S += (R_tau x_tau) value_tau^T summed over the block, without an (N x d) temporary
        S3, x3, v3 = S.reshape(B * h, N, -1), xr.mT.reshape(B * h, N, T), vals.reshape(B * h, T, -1)
        if autocast and S3.dtype != torch.get_autocast_dtype(dev.type):
            S3 = S3 + torch.bmm(x3, v3).to(S3.dtype)  # autocast: low-precision product, state kept in S's dtype
        else:
            S3 = S3.baddbmm_(x3, v3) if inplace else torch.baddbmm(S3, x3, v3)
        return a, S3.view(B, h, N, -1)

    def _attend_chunked(self, xr, value, S, *, call: _Call):
        """Block-parallel attention: chunks of C = call.chunk tokens, parallel inside a chunk, the state carried
        across chunks.

        For the chunk c = [c0, c0+C) and t in it (Eq. 4 split at c0; rho_{c0-1} the state of the tokens < c0):
            a_t = sum_{c0<=tau<t} v_tau (R_tau x_tau)^T u^{t-tau} (R_t x_t)  +  u^{t-c0} S_c0^T (R_t x_t)
            S_{c0+C} = u^C S_c0 + sum_{c0<=tau<c0+C} u^{c0+C-tau} (R_tau x_tau) v_tau^T
        Inside the loop S_c0 is the true state at the chunk start (stored relative to t_ref = c0), so every ALiBi
        factor is a power u^k with 0 <= k <= C: nothing can overflow however long T is. Peak memory: one
        (C x C) score block per head plus one state; O(T C) work for the blocks and O(T N d) for the state.
        """
        B, h, T, N = xr.shape
        dev, t0, C = xr.device, call.t0, call.chunk
        S_c = S
        if S is not None and self._slopes is not None and t0 != call.t_ref:
            S_c = self._rescale(S, t0 - call.t_ref, inplace=False)  # the true state at t0
        owned = False  # may the loop update S_c in place?
        outs = []
        # split, not slices: a slice's backward fills a zero (B,h,T,N) gradient per chunk (quadratic in T)
        for xr_c, v_c, c0 in zip(xr.split(C, dim=2), value.split(C, dim=1), range(0, T, C)):
            c1 = min(T, c0 + C)
            a_c, S_next = self._attend_block(
                xr_c,
                v_c,
                S_c,
                pos=torch.arange(t0 + c0, t0 + c1, device=dev),
                t_ref=t0 + c0,
                t_ref_new=t0 + c1,
                build=call.build or c1 != T,  # the last chunk's state only when the caller wants it
                inplace=owned and not torch.is_grad_enabled(),
            )
            outs.append(a_c)
            if S_next is not None:
                S_c, owned = S_next, True
        a = torch.cat(outs, dim=2)  # (B,h,T,d)
        if not call.build:
            return a, None
        if self._slopes is not None and call.t_ref_new != t0 + T:  # back to the caller's reference
            S_c = self._rescale(S_c, call.t_ref_new - (t0 + T), inplace=False)
        return a, S_c

    # --- the layer loop shared by every form --------------------------------------------------------------------
    def _run(self, idx, state, build, sparse=False, inplace=False, dropout=0.0, record=None, chunk=None):
        """Tokens idx (B,T) at positions state.t ... (0 without state) -> logits (B,T,V), new state (if build).

        sparse: see `step`; chunk: block size of the chunked form (None: full); record: lists per internal
        (see `trace`) to append every layer's tensors to."""
        cfg = self.config
        call = self._call(idx, state, build, sparse, inplace, chunk)
        norm = (lambda z: z) if cfg.variant == "normfree" else layer_norm
        z = self._embed(idx)  # (B,T,d)
        if cfg.variant == "official":
            v, x, y = layer_norm(z), None, None  # the residual stream
            _record(record, v=v)
        else:
            v, x = None, self._encode(norm(z))  # x_0 (B,h,T,N)
            y = x  # y_0
            _record(record, x=x, y=y)
        S_new = []
        for l in range(cfg.n_layer):
            S_l = state.S[l] if state is not None else None
            v, x, y, S_l = self._layer(v, x, y, S_l, call, dropout, record)
            S_new.append(S_l)
        out = v if v is not None else norm(self._decode(y, call.use_sparse(y)))  # (B,T,d)
        logits = self._scaled(out @ self.lm_head, self._g_lm)  # (B,T,V)
        new_state = BDHState(tuple(S_new), call.t0 + call.T, call.t_ref_new) if build else None
        return logits, new_state

    def _call(self, idx, state, build, sparse, inplace, chunk) -> _Call:
        """The positions of tokens idx (B,T) after `state`, the ALiBi reference of the state to return (rebased
        when a stored factor would exceed e^ALIBI_LAZY_LOG) and RoPE's cos/sin of the positions."""
        T = idx.shape[1]
        t0 = state.t if state is not None else 0
        t_ref = state.t_ref if state is not None else 0
        t_ref_new = t_ref  # lazy ALiBi scale, rebased when it would overflow
        if self._slopes is not None and build and float(self._slopes.max()) * (t0 + T - t_ref) > ALIBI_LAZY_LOG:
            t_ref_new = t0 + T
        cs = None
        if self._freqs is not None:
            cs = rope_cos_sin(torch.arange(t0, t0 + T, device=idx.device), self._on("_freqs", idx.device))
        return _Call(t0, T, t_ref, t_ref_new, cs, build, inplace, chunk, sparse, state is not None)

    def _layer(self, v, x, y, S, call: _Call, dropout: float, record):
        """One layer: (v, x, y, S) after layer l-1 -> after layer l. v is the residual stream of the official
        variant (None for paper/normfree), x and y (B,h,T,N), S this layer's state (or None)."""
        official, normfree = v is not None, self.config.variant == "normfree"
        if official:
            value = v  # (B,T,d)
            x = self._encode(v)  # recomputed (B,h,T,N)
        else:
            value = self._decode(y, call.use_sparse(y))
            value = value if normfree else layer_norm(value)  # v* = LN(E y_{l-1})
            x = x + self._encode(value)  # x accumulates
        a, S = self._attend(x, value, S, call=call, sparse=call.use_sparse(x))
        a_hat = a.sum(1, keepdim=True) if normfree else layer_norm(a)  # (B,h or 1,T,d)
        y = self._gate(a_hat, x, call.use_sparse(x))  # (B,h,T,N)
        if dropout > 0:
            y = F.dropout(y, dropout, training=True)
        _record(record, value=value, a=a, a_hat=a_hat, x=x, y=y)
        if official:
            Ey = self._decode(y, call.use_sparse(y))  # (B,T,d)
            v = layer_norm(v + layer_norm(Ey))
            _record(record, Ey=Ey, v=v)
        return v, x, y, S

    # --- public API ---------------------------------------------------------------------------------------------
    def _chunk(self, attention: Attention | str | None, T: int) -> int | None:
        """The block size a call over T tokens runs with (None: full) under `attention` (None: the model's)."""
        return (self.attention if attention is None else Attention.of(attention)).chunk_for(T)

    def forward(self, idx: torch.Tensor, *, attention: Attention | str | None = None) -> torch.Tensor:
        """Token-parallel form (training): idx (B,T) int -> logits (B,T,V). Dropout on y in training mode.

        attention: the form to run (`Attention`, or "full" / "chunked" / "auto"; all equal); None: `self.attention`."""
        _check_idx(idx, 2, self.config.vocab_size)
        p = self.config.dropout if self.training else 0.0
        return self._run(idx, None, build=False, dropout=p, chunk=self._chunk(attention, idx.shape[1]))[0]

    def init_state(self, batch_size: int, device=None, dtype=None) -> BDHState:
        """Empty state (no tokens seen): S[l] zeros (B,h,N,d), t = 0."""
        cfg = self.config
        device = self.D_x.device if device is None else device
        dtype = self.D_x.dtype if dtype is None else dtype
        S = tuple(
            torch.zeros(batch_size, cfg.n_head, cfg.N, cfg.d, device=device, dtype=dtype) for _ in range(cfg.n_layer)
        )
        return BDHState(S, 0, 0)

    def step(
        self, idx_t: torch.Tensor, state: BDHState, *, sparse: bool | None = None, inplace: bool = False
    ) -> tuple[torch.Tensor, BDHState]:
        """Recurrent form (Eq. 8): one token per row, idx_t (B,) -> logits (B,V), new state. Cost independent of t.

        Reads the state before writing it. sparse=None gathers only the active neurons (x > 0, y > 0; whole
        pairs under RoPE) when at most 10% fire; True/False force it. The input state is left untouched unless
        inplace=True (for loops that own the state, e.g. `generate`), which updates its tensors in place.
        """
        _check_idx(idx_t, 1, self.config.vocab_size)
        p = self.config.dropout if self.training else 0.0
        logits, new = self._run(idx_t[:, None], state, build=True, sparse=sparse, inplace=inplace, dropout=p)
        return logits[:, 0], new

    def prefill(
        self, idx: torch.Tensor, state: BDHState | None = None, *, attention: Attention | str | None = None
    ) -> tuple[torch.Tensor, BDHState]:
        """Token-parallel form that continues `state` (fresh if None) and returns its successor: equals forward.

        Differentiable (the entry of truncated BPTT, `bdh_gpu.tbptt`); attention as in `forward`."""
        _check_idx(idx, 2, self.config.vocab_size)
        if state is None:
            state = self.init_state(idx.shape[0], idx.device)
        if idx.shape[1] == 0:
            return self.lm_head.new_zeros(idx.shape[0], 0, self.config.vocab_size), state
        p = self.config.dropout if self.training else 0.0
        return self._run(idx, state, build=True, dropout=p, chunk=self._chunk(attention, idx.shape[1]))

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample max_new_tokens after the prompt idx (B,T>=1) with the recurrent form -> (B, T+new).

        temperature 0 is greedy (argmax); top_k keeps the k most likely bytes.
        """
        _check_idx(idx, 2, self.config.vocab_size)
        if idx.shape[1] < 1:
            raise ValueError(f"generate: expected a prompt of at least 1 token, got shape {tuple(idx.shape)}")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"generate: expected max_new_tokens >= 0, got {max_new_tokens!r}")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"generate: expected a finite temperature >= 0, got {temperature!r}")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"generate: expected top_k >= 1 or None, got {top_k!r}")
        logits, state = self.prefill(idx)
        logits, out = logits[:, -1], [idx]
        for i in range(max_new_tokens):
            if temperature == 0:
                nxt = logits.argmax(-1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(F.softmax(logits.float(), -1), 1, generator=generator).squeeze(-1)
            out.append(nxt[:, None])
            if i + 1 < max_new_tokens:
                logits, state = self.step(nxt, state, inplace=True)
        return torch.cat(out, dim=1)

    @torch.no_grad()
    def trace(self, idx: torch.Tensor) -> dict:
        """Internals of ONE sequence idx (T,) or (1,T), float tensors on the model's device, dropout off.

        All variants: x, y (neurons, index head*N+i), value (L,T,d) = the attention values of layer l,
        a (L,h,T,d) = per-head attention a_h = sum_{tau<t} value_tau x_tau,h^T U^{t-tau} x_t,h (before LN),
        a_hat (L,h,T,d) = LN(a) per head (official, paper) or (L,1,T,d) = sum_h a_h (normfree), logits (T,V).
        official: x, y (L,T,n); v (L+1,T,d) residual stream (v[0] = LN(embed)); Ey (L,T,d) = E y before LN.
        paper, normfree: x, y (L+1,T,n) with x[0] = y[0] the input boundary; value[l-1] = v*_l = LN(E y_{l-1})
        (normfree: E y_{l-1}).
        """
        if idx.dim() == 2 and idx.shape[0] == 1:
            idx = idx[0]
        _check_idx(idx, 1, self.config.vocab_size)
        keys = ("x", "y", "value", "a", "a_hat") + (("v", "Ey") if self.config.variant == "official" else ())
        record = {k: [] for k in keys}
        logits, _ = self._run(idx[None], None, build=False, record=record)
        out = {}
        for k, vals in record.items():
            t = torch.stack([z[0] for z in vals])
            if k in ("x", "y"):  # (L',h,T,N) -> (L',T,n)
                t = t.transpose(1, 2).flatten(2)
            out[k] = t
        out["logits"] = logits[0]
        return out

    def retention(self) -> dict:
        """U exactly as applied, in neuron space (see `retention`)."""
        return retention(self.config)

    def rho(self, state: BDHState) -> list:
        """The paper's rho_{t-1,l} (B,h,d,N) from a state: a_t,h = rho_h x_t,h (Eq. 8, before any LN)."""
        out = []
        for S in state.S:
            Sc = S
            if self._slopes is not None:
                Sc = self._rescale(S, state.t - state.t_ref, inplace=False)
            if self._freqs is not None:  # rho^T = R_t^T S: rotate rows by -phase_t
                c, s = rope_cos_sin(torch.tensor([state.t], device=S.device), self._on("_freqs", S.device))
                Sc = rotate(Sc.transpose(-1, -2), c, -s).transpose(-1, -2)
            out.append(Sc.transpose(-1, -2))
        return out

    def input_boundary(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """paper/normfree: idx (B,T) -> (x_0, y_0), each (B,T,n): x_0 = (D_x z)^+, y_0 = x_0, z = LN(embed) or embed."""
        if self.config.variant == "official":
            raise ValueError(
                "input_boundary: defined for the paper and normfree variants, got variant 'official' "
                "(its input is the residual stream v = LN(embed(idx)))"
            )
        _check_idx(idx, 2, self.config.vocab_size)
        z = self._embed(idx)
        x0 = self._encode(z if self.config.variant == "normfree" else layer_norm(z)).transpose(1, 2).flatten(2)
        return x0, x0

    def readout(self, z: torch.Tensor) -> torch.Tensor:
        """Logits from the last layer: paper: LN(E y_L) @ lm_head; normfree: (E y_L) @ lm_head, y_L (...,n);
        official: v_L @ lm_head, v_L (...,d)."""
        if self.config.variant == "official":
            return self._scaled(z @ self.lm_head, self._g_lm)
        Ey = self._scaled(z @ self.E.mT, self._g_E)
        return self._scaled((Ey if self.config.variant == "normfree" else layer_norm(Ey)) @ self.lm_head, self._g_lm)

    @torch.no_grad()
    def effective_weights(self) -> dict:
        """The matrices the model computes with, gains folded in (detached): what the paper calls E (d,n),
        D_x and D_y (h,N,d), the embedding (V,d) and lm_head (d,V). Equals the parameters when every gain is 1."""
        return {
            "embed": self.embed.weight * self._g_embed,
            "D_x": self.D_x * self._g_x,
            "D_y": self.D_y * self._g_y,
            "E": self.E * self._g_E,
            "lm_head": self.lm_head * self._g_lm,
        }


def decoder_in(model: BDH, dtype: torch.dtype) -> BDH:
    """Opt-in 16-bit decoding: a copy of `model` (eval mode) with weights, and hence `init_state`'s state, in
    dtype (torch.float16 or torch.bfloat16); the matmul and LayerNorm kernels accumulate in float32. Halves the
    bytes a decoding step moves (3nd weights + 2nd state per layer). Not for training. The error against
    float32 is measured by `python -m benchmarks.decode` (logit_rel_error) and bounded in
    tests/test_perf_attention_forms.py."""
    import copy

    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"decoder_in: expected torch.float16 or torch.bfloat16, got {dtype}")
    out = copy.deepcopy(model).eval().to(dtype)
    out._cache = {}
    return out


def _record(record: dict | None, **tensors) -> None:
    """Append each tensor to its list in `record` (a `trace`); nothing without one."""
    if record is not None:
        for k, t in tensors.items():
            record[k].append(t)


def _check_idx(idx, dim: int, vocab: int) -> None:
    if not isinstance(idx, torch.Tensor) or idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"expected token ids as an integer tensor, got {getattr(idx, 'dtype', type(idx).__name__)}")
    if idx.dim() != dim:
        raise ValueError(f"expected token ids of {dim} dimension(s), got shape {tuple(idx.shape)}")
