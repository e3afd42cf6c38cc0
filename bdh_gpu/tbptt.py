"""Truncated backpropagation through time with the state carried across batches (paper App. B.2).

The paper trains on long byte streams in 2048-byte segments: the recurrent state (Eq. 8, rho per layer) at
the end of one segment, detached from the graph, is the initial state of the next segment of the same stream.
The forward pass is then exactly the forward pass over the whole stream (`BDH.prefill` continues a state and
equals `forward` on the concatenation: tests/test_perf_tbptt.py); only the gradient is truncated at the
segment boundary.

    streams = StreamBatches(data, batch_size=8, segment=512)      # 8 contiguous streams of the train bytes
    summary = train_tbptt(model, streams, TrainConfig(steps=200, block_size=512), attention=Attention("chunked", 128))

Built on the public functions of `bdh_gpu.train` (AdamW groups, lr schedule, loss); no checkpoints here
(the plain loop `bdh_gpu.train.train` owns those).
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import torch

from .errors import InputError, NonFiniteLossError
from .model import BDH, Attention, BDHState
from .train import TrainConfig, loss_fn, lr_at, make_optimizer


class Segment(NamedTuple):
    x: torch.Tensor  # (B, T) int64 input bytes
    y: torch.Tensor  # (B, T) int64 next bytes
    reset: bool  # True: the streams restarted, the carried state must be dropped


class StreamBatches:
    """`batch_size` contiguous streams over a byte tensor, read `segment` bytes at a time.

    Stream b covers data[b*L : (b+1)*L] with L = len(data) // batch_size; call k returns bytes
    [kT, (k+1)T] of every stream (inputs and next-byte targets). When a stream has no full segment left,
    all streams restart at their beginning and `reset` is True.
    """

    def __init__(self, data: torch.Tensor, batch_size: int, segment: int):
        if batch_size < 1 or segment < 1:
            raise InputError(f"StreamBatches: expected batch_size >= 1 and segment >= 1, got {batch_size}, {segment}")
        L = len(data) // batch_size
        if segment + 1 > L:
            raise InputError(
                f"StreamBatches: {len(data)} bytes give streams of {L} bytes; a segment needs "
                f"segment + 1 = {segment + 1} (fewer streams or a shorter segment)"
            )
        self.streams = data[: L * batch_size].view(batch_size, L).long()
        self.segment, self.k = segment, 0
        self.per_pass = (L - 1) // segment  # segments per stream before a restart

    def next(self) -> Segment:
        reset = self.k == 0
        T, s = self.segment, self.k * self.segment
        w = self.streams[:, s : s + T + 1]
        self.k = (self.k + 1) % self.per_pass
        return Segment(w[:, :-1], w[:, 1:], reset)


def detach_state(state: BDHState) -> BDHState:
    """The same state cut from the autograd graph: the truncation point of TBPTT."""
    return BDHState(tuple(S.detach() for S in state.S), state.t, state.t_ref)


def segment_loss(
    model: BDH, x: torch.Tensor, y: torch.Tensor, state: BDHState | None, attention: Attention | str | None = None
) -> tuple[torch.Tensor, torch.Tensor, BDHState]:
    """Loss over one segment that continues `state` (None: a fresh stream) -> (loss, logits, detached next state).
    attention: the form of `BDH.prefill` (None: the model's)."""
    logits, new_state = model.prefill(x, state, attention=attention)
    return loss_fn(logits, y), logits, detach_state(new_state)


def train_tbptt(
    model: BDH, streams: StreamBatches, cfg: TrainConfig, *, attention: Attention | str | None = None, log=None
) -> dict:
    """`cfg.steps` AdamW updates, one segment of every stream each, the state carried across updates.

    Uses cfg.lr, warmup_steps, min_lr_ratio, weight_decay, grad_clip, device (batch and segment come from
    `streams`). Returns {"losses": [...], "tokens_per_s", "seconds", "resets"}.
    """
    cfg.validate()
    model.to(cfg.device)
    model.train()
    opt = make_optimizer(model, cfg)
    state, losses, resets = None, [], 0
    t0 = time.perf_counter()
    tokens = 0
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        x, y, reset = streams.next()
        if reset:
            state, resets = None, resets + 1
        x, y = x.to(cfg.device), y.to(cfg.device)
        loss, _, state = segment_loss(model, x, y, state, attention)
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise NonFiniteLossError(f"train_tbptt: non-finite loss ({lv}) at step {step + 1}")
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(lv)
        tokens += x.numel()
        if log is not None and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            log(f"tbptt step {step + 1}: loss {lv:.4f}, position {state.t}")
    seconds = time.perf_counter() - t0
    return {"losses": losses, "tokens_per_s": tokens / max(seconds, 1e-9), "seconds": seconds, "resets": resets}


@torch.no_grad()
def evaluate_stream(
    model: BDH,
    data: torch.Tensor,
    batch_size: int,
    segment: int,
    max_segments: int,
    attention: Attention | str | None = None,
) -> dict:
    """Loss (nats/byte) and bits per byte over `max_segments` consecutive segments of `batch_size` streams of
    `data`, with the state carried: every byte sees the whole stream before it, not just its window."""
    was = model.training
    model.eval()
    streams = StreamBatches(data, batch_size, segment)
    state, total, n = None, 0.0, 0
    try:
        for _ in range(min(max_segments, streams.per_pass)):
            x, y, _ = streams.next()
            logits, state = model.prefill(x.to(model.E.device), state, attention=attention)
            total += float(loss_fn(logits, y.to(logits.device))) * y.numel()
            n += y.numel()
    finally:
        model.train(was)
    return {"loss": total / n, "bits_per_byte": total / n / math.log(2), "scored_bytes": n}
