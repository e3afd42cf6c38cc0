"""Training loop for BDH-GPU: plain functions, no trainer class.

`train(model, data, cfg, out_dir)` runs AdamW with linear warm-up and cosine decay to `min_lr_ratio * lr`,
gradient clipping, bf16 autocast (and optional `torch.compile`) on CUDA, a held-out evaluation every
`eval_every` steps, a tqdm bar with loss and tokens/s, and atomic checkpoints every `ckpt_every` steps
(the format, and how a resume repairs what a kill left: `bdh_gpu.checkpoint`).
Under torchrun it trains on K ranks (DDP or FSDP2, see `bdh_gpu.parallel`): the global batch is the same
for every K, split over the ranks, and rank 0 alone logs and writes.

A resume continues exactly (the same batches, dropout masks and updates as an uninterrupted run) and cuts
`metrics.jsonl` back to the checkpoint's step.
SIGINT / SIGTERM finish the current step, write a checkpoint and stop (`summary["interrupted"]`); a second
signal (more than `REPEAT_S` after the first) raises KeyboardInterrupt at once, the previous checkpoint intact.
A non-finite loss (or non-finite weights before a checkpoint) stops training with `NonFiniteLossError`,
leaving the last good checkpoint as it was.

One step of the loop (`_step`), in order: the optimisation step (`_optimisation_step`: lr, batch, loss scaled
across ranks, update), the global loss and stop request (`_global_loss_and_stop`), the meter and bar, the
evaluation (`_evaluate_and_log`), the checkpoint (`_checkpoint_due`, `_checkpoint`), the stop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bdh_gpu import parallel
from bdh_gpu.checkpoint import (
    METRICS,
    has_checkpoint,
    load_model_tensors,
    optimizer_state,
    read_train_state,
    repair_after_kill,
    restore_rng,
    save_checkpoint,
)
from bdh_gpu.data import IGNORE
from bdh_gpu.errors import ActivationError, InputError, NonFiniteLossError


@dataclass
class TrainConfig:
    data: str = "recall"
    steps: int = 2000
    batch_size: int = 32
    block_size: int = 256
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decay ends at min_lr_ratio * lr
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    eval_every: int = 200
    eval_batches: int = 8
    ckpt_every: int = 500
    seed: int = 1337
    device: str = "cpu"
    compile: bool = False
    autocast: bool = True  # bf16 autocast, CUDA only

    # what a resume must keep equal to continue exactly (steps, eval/ckpt cadence and device may change)
    RESUME_FIXED = (
        "data",
        "batch_size",
        "block_size",
        "lr",
        "min_lr_ratio",
        "warmup_steps",
        "weight_decay",
        "grad_clip",
        "seed",
    )

    def validate(self) -> None:
        positive = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "block_size": self.block_size,
            "eval_every": self.eval_every,
            "eval_batches": self.eval_batches,
            "ckpt_every": self.ckpt_every,
        }
        for k, v in positive.items():
            if v < 1:
                raise InputError(f"{k} must be >= 1 (got {v})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr must be a positive number (got {self.lr})")
        if not 0 <= self.min_lr_ratio <= 1:
            raise InputError(f"min_lr_ratio must be in [0, 1] (got {self.min_lr_ratio})")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise InputError("warmup_steps, weight_decay and grad_clip must be >= 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


ACT_VANISH = 1e-8  # rms of a layer's y below this: the layer is silent, its gradients vanish (Eq. 7 products)
ACT_EXPLODE = 1e8  # rms above this (or inf/nan): the layer has blown up


@torch.no_grad()
def check_activations(model, idx: torch.Tensor, step: int) -> dict:
    """rms of x and y per layer on one sequence idx (T,) (dropout off); raise ActivationError naming the first
    layer whose y vanished or exploded. Returns {"x": [...], "y": [...]} (layer 0 = the input boundary for the
    paper and normfree variants; official layers start at 1)."""
    tr = model.trace(idx)
    first = 1 if model.config.variant == "official" else 0
    rms = {k: [float(v.double().pow(2).mean().sqrt()) for v in tr[k]] for k in ("x", "y")}
    for l, r in enumerate(rms["y"], start=first):
        bad = "exploded" if not math.isfinite(r) or r > ACT_EXPLODE else "vanished" if r < ACT_VANISH else None
        if bad:
            hint = (
                " (a normfree model needs its constant gains: BDHConfig.gains=None, the default)"
                if model.config.variant == "normfree"
                else ""
            )
            raise ActivationError(
                f"layer {l} of {model.config.n_layer}: y {bad} (rms {r:.3g}, allowed "
                f"{ACT_VANISH:g} to {ACT_EXPLODE:g}) at step {step}; stopped, the model cannot "
                f"learn like this{hint}"
            )
    return rms


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for update `step` (0-based): linear warm-up, then cosine decay to min_lr_ratio * lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.min_lr_ratio * cfg.lr
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; matrices (dim >= 2) are decayed, vectors and scalars are not (nanoGPT's split)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    kw = {"fused": True} if cfg.device.startswith("cuda") else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), **kw)


def _wide(logits: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits (autocast) -> float32; float32 and float64 as they are."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats per scored byte) over targets that are not IGNORE; bf16/fp16 logits (autocast)
    upcast to float32, float64 kept (so the TBPTT equivalence test can be exact)."""
    return F.cross_entropy(_wide(logits).reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=IGNORE)


def loss_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy over the scored targets: a rank's share of the global batch's loss."""
    return F.cross_entropy(
        _wide(logits).reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )


def _autocast(cfg: TrainConfig):
    if cfg.autocast and cfg.device.startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(
    model, data, split: str = "val", batch_size: int = 32, max_batches: int = 8, device: str = "cpu", autocast=None
) -> dict:
    """Loss (nats/byte), bits per byte and next-byte accuracy over the scored bytes of fixed eval batches."""
    was_training = model.training
    model.eval()
    total_loss, total_correct, total_n = 0.0, 0, 0
    try:
        for x, y in data.eval_batches(split, batch_size, max_batches):
            x, y = x.to(device), y.to(device)
            with autocast or contextlib.nullcontext():
                logits = model(x)
            mask = y != IGNORE
            n = int(mask.sum())
            if n == 0:
                continue
            total_loss += float(F.cross_entropy(logits.float()[mask], y[mask], reduction="sum"))
            total_correct += int((logits.argmax(-1) == y)[mask].sum())
            total_n += n
    finally:
        model.train(was_training)
    if total_n == 0:
        raise InputError(f"no scored bytes in the {split} split")
    loss = total_loss / total_n
    return {
        "loss": loss,
        "bits_per_byte": loss / math.log(2),
        "accuracy": total_correct / total_n,
        "scored_bytes": total_n,
    }


# ---------------------------------------------------------------------------------------------- signals


class StopSignals:
    """SIGINT / SIGTERM while training: the first asks the loop to finish its step, checkpoint and stop; a second
    one, more than REPEAT_S later, raises KeyboardInterrupt at once. Signals within REPEAT_S of the first are the
    same request (torchrun forwards the signal it received to workers that the terminal already signalled).
    Installed only in the main thread; the previous handlers come back on exit."""

    REPEAT_S = 1.0

    def __init__(self, announce: bool = True):
        self.signum, self.t, self.old, self.announce = None, 0.0, {}, announce

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self.old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        now = time.monotonic()
        if self.signum is None:
            self.signum, self.t = signum, now
            if self.announce:
                print(
                    f"bdh train: {signal.Signals(signum).name}: finishing this step, then a checkpoint "
                    f"(Ctrl-C again to quit at once)",
                    file=sys.stderr,
                    flush=True,
                )
            return
        if now - self.t < self.REPEAT_S:
            return
        self.__exit__()
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)
        self.old = {}


# ---------------------------------------------------------------------------------------------- the loop


def train(
    model,
    data,
    cfg: TrainConfig,
    out_dir: str,
    resume: bool = False,
    progress: bool | None = None,
    log=None,
    stop_at: int | None = None,
    callbacks=(),
) -> dict:
    """Train `model` on `data` for `cfg.steps` updates, checkpointing into `out_dir`; returns a summary.

    Fresh start: the data generator is seeded with `cfg.seed`; the global torch RNG (dropout) is used as the
    caller left it (seed it before building the model; ranks > 0 re-seed it to their own stream). `resume=True`
    restores model, optimizer, RNG and step from `out_dir` and continues exactly. `stop_at` checkpoints and
    stops after that step, as an interruption would (the schedule still runs to `cfg.steps`). A SIGINT or
    SIGTERM does the same after the current step and sets `summary["interrupted"]` to the signal's name.
    Under torchrun (`bdh_gpu.parallel.setup` called first) every rank calls this with the same arguments.
    `callbacks`: objects that may define any of the hooks below (tests use them to stop a real run at a known
    point: tests/train_hooks.py); a hook that raises ends the run as any error would.
        on_step_end(step, rank, stop)       after update `step` (1-based) on every rank, before the ranks agree
                                            on the loss; `stop.requested` is True once a SIGINT/SIGTERM came
        on_checkpoint_written(tmp, step)    rank 0: the step's training state is written to the temporary file
                                            `tmp`, not yet renamed into place (the checkpoint is not committed)
    """
    run = _start(model, data, cfg, out_dir, resume, log)
    run.callbacks = tuple(callbacks)
    bar = _progress_bar(run, progress)
    meter = _Meter(cfg.batch_size * cfg.block_size)
    run.probe = data.get_batch("val", 1, torch.Generator().manual_seed(cfg.seed))[0][0].to(cfg.device)
    _check_activations(run, run.start)  # before any work: a dead or blown-up init stops here
    with StopSignals(announce=run.ranks.main) as stop:
        try:
            for step in bar:
                if _step(run, step, stop, meter, bar, stop_at):
                    break
        except KeyboardInterrupt:
            if run.ranks.main:
                again = "interrupted again" if stop.requested else "interrupted"
                print(f"bdh train: {again}: stopped at once; {_where(run)}", file=sys.stderr, flush=True)
            raise
    bar.close()
    return _finish(run, meter)


def _progress_bar(run: _Run, progress: bool | None):
    """tqdm over the steps still to run, on rank 0 only (progress None: on a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(
        range(run.start, run.cfg.steps),
        initial=run.start,
        total=run.cfg.steps,
        dynamic_ncols=True,
        leave=False,
        disable=(None if progress is None else not progress) if run.ranks.main else True,
    )


def _finish(run: _Run, meter: _Meter) -> dict:
    """The summary's run time and per-rank memory (collective: every rank calls it)."""
    device = run.cfg.device
    run.summary["seconds"] = time.perf_counter() - meter.t0
    run.summary["state_bytes_per_rank"] = parallel.gather_ints([parallel.local_state_bytes(run.net, run.opt)], device)
    run.summary["peak_rss_bytes_per_rank"] = parallel.gather_ints([parallel.peak_rss_bytes()], device)
    return run.summary


@dataclass
class _Run:
    """What the steps of one training run share (built by `_start`)."""

    cfg: TrainConfig
    data: object
    out_dir: str
    ranks: parallel.Ranks
    net: torch.nn.Module  # the model as wrapped for the ranks (DDP / FSDP2 / itself)
    opt: torch.optim.Optimizer
    gen: torch.Generator  # the batch generator (the same on every rank)
    fwd: Callable  # net, or torch.compile(net)
    amp: object  # the autocast context of the forward
    say: Callable[[str], None]  # rank 0's log line; a no-op on the other ranks
    start: int  # the step the run starts from (0, or the checkpoint's)
    last_ckpt: int | None  # the step of the last checkpoint written or resumed from
    summary: dict
    probe: torch.Tensor | None = None  # one validation sequence for `check_activations`
    callbacks: tuple = ()  # see `train`


def _start(model, data, cfg: TrainConfig, out_dir: str, resume: bool, log) -> _Run:
    """Check the config against the ranks; build (fresh) or restore (resume) what the loop needs."""
    from tqdm.auto import tqdm

    ranks = parallel.current()
    cfg.validate()
    if cfg.batch_size % ranks.world:
        raise InputError(
            f"batch_size {cfg.batch_size} is the global batch, split over {ranks.world} ranks: "
            f"it must be a multiple of {ranks.world}"
        )
    if ranks.main:
        os.makedirs(out_dir, exist_ok=True)
    model.to(cfg.device)
    model.train()
    gen = torch.Generator().manual_seed(cfg.seed)
    ckpt = _read_for_resume(model, cfg, out_dir, ranks) if resume else _fresh_start(cfg, out_dir, ranks)
    net = parallel.wrap(model, ranks, cfg.device)
    opt = make_optimizer(net, cfg)
    start = 0 if ckpt is None else _restore(ckpt, model, opt, gen, out_dir, ranks, cfg.device)
    summary = {
        "start_step": start,
        "step": start,
        "train_loss": None,
        "val": None,
        "interrupted": None,
        "world_size": ranks.world,
        "parallel": ranks.mode,
    }
    return _Run(
        cfg=cfg,
        data=data,
        out_dir=out_dir,
        ranks=ranks,
        net=net,
        opt=opt,
        gen=gen,
        fwd=torch.compile(net) if cfg.compile else net,
        amp=_autocast(cfg),
        say=(log or (lambda s: tqdm.write(s))) if ranks.main else (lambda s: None),
        start=start,
        last_ckpt=start if resume else None,
        summary=summary,
    )


def _read_for_resume(model, cfg: TrainConfig, out_dir: str, ranks) -> tuple[dict, dict]:
    """The checkpoint in out_dir, checked to continue this run exactly; the model's weights loaded from it."""
    tensors, meta = read_train_state(out_dir)
    saved = meta["train_config"]
    for k in TrainConfig.RESUME_FIXED:
        if k in saved and saved[k] != getattr(cfg, k):
            raise InputError(
                f"--resume: {k} is {getattr(cfg, k)!r} but the checkpoint in {out_dir} was "
                f"trained with {saved[k]!r}; resume continues exactly, so it must match"
            )
    if int(meta.get("world_size", 1)) != ranks.world:
        raise InputError(
            f"--resume: the checkpoint in {out_dir} was trained on {meta.get('world_size', 1)} "
            f"rank(s), this run has {ranks.world}; resume with the same number of ranks "
            f"(each rank's dropout stream is part of the checkpoint)"
        )
    load_model_tensors(model, tensors, out_dir)
    return tensors, meta


def _fresh_start(cfg: TrainConfig, out_dir: str, ranks) -> None:
    """A new run: never over a checkpoint; ranks > 0 take their own dropout stream (rank 0 keeps the caller's)."""
    if has_checkpoint(out_dir):
        _, meta = read_train_state(out_dir)
        raise InputError(
            f"{out_dir} already holds a training checkpoint (step {meta['step']}); "
            f"pass --resume to continue it, or choose another --out"
        )
    if ranks.rank > 0:
        torch.manual_seed(cfg.seed + 7919 * ranks.rank)


def _restore(ckpt, model, opt, gen, out_dir: str, ranks, device: str) -> int:
    """Optimizer and RNG states from the checkpoint; rank 0 repairs what a kill left. Returns its step."""
    tensors, meta = ckpt
    opt_sd = optimizer_state(tensors, meta)
    opt.load_state_dict(parallel.shard_optimizer_state(opt_sd, opt) if ranks.mode == "fsdp" else opt_sd)
    restore_rng(tensors, gen, device, ranks)
    if ranks.main:
        repair_after_kill(out_dir, tensors, meta, model.config.to_dict())
    parallel.barrier()
    return int(meta["step"])


def _where(run: _Run) -> str:
    if run.last_ckpt is None:
        return "no checkpoint was written"
    return f"last good checkpoint: {run.out_dir} (step {run.last_ckpt})"


def _step(run: _Run, step: int, stop: StopSignals, meter: _Meter, bar, stop_at: int | None) -> bool:
    """Update `step` (0-based) and what follows it; True when the run stops after it."""
    cfg = run.cfg
    lr = lr_at(step, cfg)
    loss, lv = _optimisation_step(run, step, lr)
    done = step + 1
    _fire(run.callbacks, "on_step_end", done, run.ranks.rank, stop)
    lv, stop_now = _global_loss_and_stop(run, loss, lv, stop.requested, done, lr)
    ema, tok_s = meter.update(lv, run.summary)
    bar.set_postfix(loss=f"{ema:.4f}", tok_s=f"{tok_s:,.0f}", lr=f"{lr:.2e}", refresh=False)
    run.summary.update(step=done, train_loss=lv, tokens_per_s=tok_s)
    if done % cfg.eval_every == 0 or done == cfg.steps:
        _evaluate_and_log(run, done, ema, lr, tok_s, meter.t0)
    if done % cfg.ckpt_every == 0 or done == cfg.steps:
        _checkpoint(run, done)
    if (stop_at is not None and done >= stop_at) or stop_now:
        if run.last_ckpt != done:
            _checkpoint(run, done)
        if stop_now:
            run.summary["interrupted"] = stop.name or "SIGTERM"  # another rank's signal
        return True
    return False


def _optimisation_step(run: _Run, step: int, lr: float) -> tuple[torch.Tensor, float | None]:
    """One AdamW update on the global batch -> (loss, its value; None under torchrun until the all-reduce).

    One process: the mean loss, checked finite before the backward. K ranks: each rank's summed loss times
    K / (scored bytes of the global batch), so that DDP/FSDP's average of the gradients is the global mean's."""
    cfg, ranks = run.cfg, run.ranks
    for g in run.opt.param_groups:
        g["lr"] = lr
    x, y = run.data.get_batch("train", cfg.batch_size, run.gen)  # the global batch, the same on every rank
    if ranks.world > 1:
        scored = max(1, int((y != IGNORE).sum()))
        x, y = parallel.local_slice((x, y), ranks)
    x, y = x.to(cfg.device, non_blocking=True), y.to(cfg.device, non_blocking=True)
    with run.amp:
        logits = run.fwd(x)
    lv = None
    if ranks.world == 1:
        loss = loss_fn(logits, y)
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise NonFiniteLossError(f"non-finite loss ({lv}) at step {step + 1} (lr {lr:.3g}); stopped, {_where(run)}")
    else:
        loss = loss_sum(logits, y) * (ranks.world / scored)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.net.parameters(), cfg.grad_clip)
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    return loss, lv


def _global_loss_and_stop(run: _Run, loss, lv, requested: bool, done: int, lr: float) -> tuple[float, bool]:
    """Under torchrun one all_reduce gives the global loss and whether any rank got a signal; else as given."""
    if not run.ranks.distributed:
        return lv, requested
    total, n_stop = parallel.all_sum([float(loss.detach()), float(requested)], run.cfg.device)
    lv = total / run.ranks.world
    if not math.isfinite(lv):
        raise NonFiniteLossError(f"non-finite loss ({lv}) at step {done} (lr {lr:.3g}); stopped, {_where(run)}")
    return lv, n_stop > 0


class _Meter:
    """The loss EMA and tokens/s: over the whole run, and steady-state (from the end of the first step)."""

    def __init__(self, tokens_per_step: int):
        self.per_step, self.tokens, self.ema = tokens_per_step, 0, None
        self.t0, self.t1 = time.perf_counter(), None

    def update(self, lv: float, summary: dict) -> tuple[float, float]:
        """One more step of loss lv -> (ema, tokens/s); summary["tokens_per_s_steady"] from the second step on."""
        self.tokens += self.per_step
        self.ema = lv if self.ema is None else 0.9 * self.ema + 0.1 * lv
        now = time.perf_counter()
        tok_s = self.tokens / max(1e-9, now - self.t0)
        if self.t1 is None:
            self.t1 = now  # warm-up excluded
        else:
            summary["tokens_per_s_steady"] = (self.tokens - self.per_step) / max(1e-9, now - self.t1)
        return self.ema, tok_s


def _evaluate_and_log(run: _Run, done: int, ema: float, lr: float, tok_s: float, t0: float) -> None:
    """Held-out evaluation (rank 0; every rank under FSDP, whose forward gathers), its log line and metrics
    record, then the activation check on every rank."""
    cfg, ranks = run.cfg, run.ranks
    if ranks.main or ranks.mode == "fsdp":
        val = evaluate(
            parallel.unwrap(run.net), run.data, "val", cfg.batch_size, cfg.eval_batches, cfg.device, _autocast(cfg)
        )
        run.summary["val"] = val
        run.say(
            f"step {done}: train loss {ema:.4f}, val loss {val['loss']:.4f} "
            f"({val['bits_per_byte']:.3f} bpb), val acc {val['accuracy']:.3f}, {tok_s:,.0f} tok/s"
        )
        if ranks.main:
            elapsed = time.perf_counter() - t0
            record = {"step": done, "train_loss": ema, "lr": lr, "tokens_per_s": tok_s, "elapsed_s": elapsed}
            record.update({f"val_{k}": v for k, v in val.items()})
            with open(os.path.join(run.out_dir, METRICS), "a") as f:
                f.write(json.dumps(record) + "\n")
    _check_activations(run, done)


def _check_activations(run: _Run, step: int) -> None:
    """Every rank checks (FSDP: on the gathered weights), so all stop together."""
    with parallel.gathered(run.net):
        check_activations(parallel.unwrap(run.net), run.probe, step)


def _checkpoint(run: _Run, done: int) -> None:
    def written(tmp, step):
        _fire(run.callbacks, "on_checkpoint_written", tmp, step)

    try:
        save_checkpoint(
            run.out_dir, run.net, run.opt, run.gen, done, run.cfg, {"val": run.summary["val"]}, on_written=written
        )
    except OSError as e:  # a full disk, a permission: one line naming the file (bdh: exit 3), the last one kept
        if e.errno is None:
            raise
        raise OSError(e.errno, f"{e.strerror} (the step-{done} checkpoint; {_where(run)})", e.filename) from None
    run.last_ckpt = done


def _fire(callbacks, hook: str, *args) -> None:
    """Call `hook(*args)` on every callback that defines it, in order."""
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(*args)
