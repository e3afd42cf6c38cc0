"""Training loop for BDH-GPU: plain functions, no trainer class.

`train(model, data, cfg, out_dir)` runs AdamW with linear warm-up and cosine decay to `min_lr_ratio * lr`,
gradient clipping, bf16 autocast (and optional `torch.compile`) on CUDA, a held-out evaluation every
`eval_every` steps, a tqdm bar with loss and tokens/s, and atomic checkpoints every `ckpt_every` steps.

A checkpoint in `out_dir` is
- `config.json` + `model.safetensors`: the model directory (`bdh_gpu.save`), loadable by `bdh_gpu.load`;
- `train_state.safetensors`: everything `resume` needs in ONE file, so one `os.replace` commits it: the
  model weights (`model.*`), the AdamW moments and step counts (`optim.<i>.*`), the RNG states (`rng.*`),
  and, in the safetensors header metadata, the JSON scalars (step, train config, optimizer hyper-parameters);
- `train_state.json`: a readable copy of those scalars (not read back).
No pickle anywhere. A crash while writing leaves the previous `train_state.safetensors` intact, and a resume
from it continues exactly: the same batches, dropout masks and updates as an uninterrupted run.
A non-finite loss (or non-finite weights before a checkpoint) stops training with `NonFiniteLossError`,
leaving the last good checkpoint as it was.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from bdh_gpu.data import IGNORE

TRAIN_STATE = "train_state.safetensors"
TRAIN_STATE_JSON = "train_state.json"
METRICS = "metrics.jsonl"


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
    RESUME_FIXED = ("data", "batch_size", "block_size", "lr", "min_lr_ratio", "warmup_steps",
                    "weight_decay", "grad_clip", "seed")

    def validate(self) -> None:
        positive = {"steps": self.steps, "batch_size": self.batch_size, "block_size": self.block_size,
                    "eval_every": self.eval_every, "eval_batches": self.eval_batches, "ckpt_every": self.ckpt_every}
        for k, v in positive.items():
            if v < 1:
                raise ValueError(f"{k} must be >= 1 (got {v})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number (got {self.lr})")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1] (got {self.min_lr_ratio})")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("warmup_steps, weight_decay and grad_clip must be >= 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class NonFiniteLossError(ValueError):
    """The loss (or the weights) became inf/nan; training stopped, the last good checkpoint is kept."""


class ActivationError(ValueError):
    """A layer's activations vanished or exploded; training stopped, the last good checkpoint is kept."""


ACT_VANISH = 1e-8   # rms of a layer's y below this: the layer is silent, its gradients vanish (Eq. 7 products)
ACT_EXPLODE = 1e8   # rms above this (or inf/nan): the layer has blown up


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
            hint = (" (a normfree model needs its constant gains: BDHConfig.gains=None, the default)"
                    if model.config.variant == "normfree" else "")
            raise ActivationError(f"layer {l} of {model.config.n_layer}: y {bad} (rms {r:.3g}, allowed "
                                  f"{ACT_VANISH:g} to {ACT_EXPLODE:g}) at step {step}; stopped, the model cannot "
                                  f"learn like this{hint}")
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
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    kw = {"fused": True} if cfg.device.startswith("cuda") else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), **kw)


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats per scored byte) over targets that are not IGNORE."""
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=IGNORE)


def _autocast(cfg: TrainConfig):
    if cfg.autocast and cfg.device.startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model, data, split: str = "val", batch_size: int = 32, max_batches: int = 8,
             device: str = "cpu", autocast=None) -> dict:
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
        raise ValueError(f"no scored bytes in the {split} split")
    loss = total_loss / total_n
    return {"loss": loss, "bits_per_byte": loss / math.log(2), "accuracy": total_correct / total_n,
            "scored_bytes": total_n}


# ---------------------------------------------------------------------------------------------- checkpoints

def _atomic_write(path: str, write) -> None:
    """`write(tmp_path)` then os.replace onto `path`: readers see the old file or the new one, never half."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """AdamW state_dict -> (tensors, json): per-parameter tensors under `optim.<i>.<key>`."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "state_scalars": scalars}


def _optimizer_from_flat(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for key, v in tensors.items():
        _, pid, k = key.split(".", 2)
        state.setdefault(int(pid), {})[k] = v
    for key, v in meta["state_scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _rng_tensors(gen: torch.Generator, device: str) -> dict:
    t = {"rng.torch": torch.get_rng_state(), "rng.data": gen.get_state()}
    if device.startswith("cuda") and torch.cuda.is_available():
        t["rng.cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return t


def save_checkpoint(out_dir: str, model, opt, gen: torch.Generator, step: int, cfg: TrainConfig,
                    extra: dict | None = None) -> None:
    """Write the model directory and the single-file training state, each atomically (see module doc)."""
    import bdh_gpu  # the model directory format lives with the model

    for name, p in model.state_dict().items():
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise NonFiniteLossError(f"non-finite weights ({name}) at step {step}; stopped, "
                                     f"the checkpoint in {out_dir} is kept as it was")
    bdh_gpu.save(model, out_dir)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_to_flat(opt)
    tensors.update(opt_tensors)
    tensors.update(_rng_tensors(gen, cfg.device))
    meta = {"format": "bdh-train-state-1", "step": step, "train_config": cfg.to_dict(), "optimizer": opt_meta,
            **(extra or {})}
    text = json.dumps(meta, indent=1, sort_keys=True)
    _atomic_write(os.path.join(out_dir, TRAIN_STATE), lambda p: save_file(tensors, p, metadata={"train_state": text}))
    _atomic_write(os.path.join(out_dir, TRAIN_STATE_JSON), lambda p: open(p, "w").write(text + "\n"))


def read_train_state(out_dir: str) -> tuple[dict, dict]:
    """(tensors, scalars) of the checkpoint in `out_dir`; a missing or foreign file is a one-line error."""
    path = os.path.join(out_dir, TRAIN_STATE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no training checkpoint to resume: {path} does not exist")
    try:
        with safe_open(path, framework="pt") as f:
            meta = (f.metadata() or {}).get("train_state")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    if meta is None:
        raise ValueError(f"{path} has no train_state metadata: not a bdh training checkpoint")
    return tensors, json.loads(meta)


def load_checkpoint(out_dir: str, model, opt, gen: torch.Generator, device: str) -> tuple[int, dict]:
    """Restore model, optimizer and RNG states in place; returns (step, scalars)."""
    tensors, meta = read_train_state(out_dir)
    msd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(msd)), sorted(set(msd) - set(own))
    if missing or unexpected:
        raise ValueError(f"checkpoint {out_dir} does not match the model: missing keys {missing[:3]}, "
                         f"unexpected keys {unexpected[:3]}")
    for k, v in msd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(f"checkpoint {out_dir}: {k} has shape {tuple(v.shape)}, "
                             f"the model expects {tuple(own[k].shape)}")
    model.load_state_dict(msd)
    opt_sd = _optimizer_from_flat({k: v for k, v in tensors.items() if k.startswith("optim.")}, meta["optimizer"])
    opt.load_state_dict(opt_sd)
    torch.set_rng_state(tensors["rng.torch"])
    gen.set_state(tensors["rng.data"])
    if "rng.cuda" in tensors and device.startswith("cuda"):
        torch.cuda.set_rng_state(tensors["rng.cuda"], torch.device(device))
    return int(meta["step"]), meta


def has_checkpoint(out_dir: str) -> bool:
    return os.path.isfile(os.path.join(out_dir, TRAIN_STATE))


# ---------------------------------------------------------------------------------------------- the loop

def train(model, data, cfg: TrainConfig, out_dir: str, resume: bool = False, progress: bool | None = None,
          log=None, stop_at: int | None = None) -> dict:
    """Train `model` on `data` for `cfg.steps` updates, checkpointing into `out_dir`; returns a summary.

    Fresh start: the data generator is seeded with `cfg.seed`; the global torch RNG (dropout) is used as the
    caller left it (seed it before building the model). `resume=True` restores model, optimizer, RNG and step
    from `out_dir` and continues exactly. `stop_at` checkpoints and stops after that step, as an interruption
    would (the schedule still runs to `cfg.steps`).
    """
    from tqdm.auto import tqdm

    cfg.validate()
    os.makedirs(out_dir, exist_ok=True)
    device = cfg.device
    model.to(device)
    model.train()
    opt = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    start = 0
    if resume:
        _, meta = read_train_state(out_dir)
        saved = meta["train_config"]
        for k in TrainConfig.RESUME_FIXED:
            if k in saved and saved[k] != getattr(cfg, k):
                raise ValueError(f"--resume: {k} is {getattr(cfg, k)!r} but the checkpoint in {out_dir} was "
                                 f"trained with {saved[k]!r}; resume continues exactly, so it must match")
        start, _ = load_checkpoint(out_dir, model, opt, gen, device)
    elif has_checkpoint(out_dir):
        _, meta = read_train_state(out_dir)
        raise ValueError(f"{out_dir} already holds a training checkpoint (step {meta['step']}); "
                         f"pass --resume to continue it, or choose another --out")
    fwd = torch.compile(model) if cfg.compile else model
    amp = _autocast(cfg)
    say = log or (lambda s: tqdm.write(s))
    tokens_per_step = cfg.batch_size * cfg.block_size
    last_ckpt = start if resume else None
    summary = {"start_step": start, "step": start, "train_loss": None, "val": None}

    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, dynamic_ncols=True, leave=False,
               disable=None if progress is None else not progress)  # None: a bar only on a terminal
    t0, tokens, ema = time.perf_counter(), 0, None
    probe = data.get_batch("val", 1, torch.Generator().manual_seed(cfg.seed))[0][0].to(device)
    check_activations(model, probe, start)                  # before any work: a dead or blown-up init stops here
    for step in bar:
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = data.get_batch("train", cfg.batch_size, gen)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with amp:
            logits = fwd(x)
        loss = loss_fn(logits, y)
        lv = float(loss.detach())
        if not math.isfinite(lv):
            where = f"last good checkpoint: {out_dir} (step {last_ckpt})" if last_ckpt is not None \
                else "no checkpoint was written"
            raise NonFiniteLossError(f"non-finite loss ({lv}) at step {step + 1} (lr {lr:.3g}); stopped, {where}")
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        done = step + 1
        tokens += tokens_per_step
        ema = lv if ema is None else 0.9 * ema + 0.1 * lv
        tok_s = tokens / max(1e-9, time.perf_counter() - t0)
        bar.set_postfix(loss=f"{ema:.4f}", tok_s=f"{tok_s:,.0f}", lr=f"{lr:.2e}", refresh=False)
        summary.update(step=done, train_loss=lv, tokens_per_s=tok_s)
        if done % cfg.eval_every == 0 or done == cfg.steps:
            val = evaluate(model, data, "val", cfg.batch_size, cfg.eval_batches, device, _autocast(cfg))
            summary["val"] = val
            check_activations(model, probe, done)
            say(f"step {done}: train loss {ema:.4f}, val loss {val['loss']:.4f} ({val['bits_per_byte']:.3f} bpb), "
                f"val acc {val['accuracy']:.3f}, {tok_s:,.0f} tok/s")
            record = {"step": done, "train_loss": ema, "lr": lr, "tokens_per_s": tok_s,
                      "elapsed_s": time.perf_counter() - t0, **{f"val_{k}": v for k, v in val.items()}}
            with open(os.path.join(out_dir, METRICS), "a") as f:
                f.write(json.dumps(record) + "\n")
        if done % cfg.ckpt_every == 0 or done == cfg.steps:
            save_checkpoint(out_dir, model, opt, gen, done, cfg, {"val": summary["val"]})
            last_ckpt = done
        if stop_at is not None and done >= stop_at:
            if last_ckpt != done:
                save_checkpoint(out_dir, model, opt, gen, done, cfg, {"val": summary["val"]})
            break
    bar.close()
    summary["seconds"] = time.perf_counter() - t0
    return summary
