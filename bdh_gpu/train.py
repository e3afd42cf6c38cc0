"""Training loop for BDH-GPU: plain functions, no trainer class.

`train(model, data, cfg, out_dir)` runs AdamW with linear warm-up and cosine decay to `min_lr_ratio * lr`,
gradient clipping, bf16 autocast (and optional `torch.compile`) on CUDA, a held-out evaluation every
`eval_every` steps, a tqdm bar with loss and tokens/s, and atomic checkpoints every `ckpt_every` steps.
Under torchrun it trains on K ranks (DDP or FSDP2, see `bdh_gpu.parallel`): the global batch is the same
for every K, split over the ranks, and rank 0 alone logs and writes.

A checkpoint in `out_dir` is
- `config.json` + `model.safetensors`: the model directory (`bdh_gpu.load` reads it), the weights' header
  naming their step;
- `train_state.safetensors`: everything `resume` needs in ONE file, written LAST, so its `os.replace` commits
  the checkpoint: the model weights (`model.*`), the AdamW moments and step counts (`optim.<i>.*`), the RNG
  states (`rng.*`; per rank under torchrun), and, in the header metadata, the JSON scalars (step, train config,
  world size, optimizer hyper-parameters);
- `train_state.json`: a readable copy of those scalars (not read back by resume).
Every file is written to a temporary file, fsynced, renamed, and the directory fsynced (`bdh_gpu.io.atomic_write`).
A kill at any moment leaves the last `train_state.safetensors` whole; if it came between the model files and the
training state, the model files are one checkpoint ahead until the resume rewrites them from the training state.
A resume continues exactly (the same batches, dropout masks and updates as an uninterrupted run) and cuts
`metrics.jsonl` back to the checkpoint's step.
SIGINT / SIGTERM finish the current step, write a checkpoint and stop (`summary["interrupted"]`); a second
signal (more than `REPEAT_S` after the first) raises KeyboardInterrupt at once, the previous checkpoint intact.
A non-finite loss (or non-finite weights before a checkpoint) stops training with `NonFiniteLossError`,
leaving the last good checkpoint as it was.
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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from bdh_gpu import parallel
from bdh_gpu.data import IGNORE
from bdh_gpu.io import TMP_PREFIX, WEIGHTS_FILE, atomic_write, write_model_dir

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
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class NonFiniteLossError(ValueError):
    """The loss (or the weights) became inf/nan; training stopped, the last good checkpoint is kept."""


class ActivationError(ValueError):
    """A layer's activations vanished or exploded; training stopped, the last good checkpoint is kept."""


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
    """Mean cross-entropy (nats per scored byte) over targets that are not IGNORE."""
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
        raise ValueError(f"no scored bytes in the {split} split")
    loss = total_loss / total_n
    return {
        "loss": loss,
        "bits_per_byte": loss / math.log(2),
        "accuracy": total_correct / total_n,
        "scored_bytes": total_n,
    }


# ---------------------------------------------------------------------------------------------- checkpoints


def _optimizer_to_flat(opt) -> tuple[dict, dict]:
    """AdamW state_dict (or the optimizer) -> (tensors, json): per-parameter tensors under `optim.<i>.<key>`."""
    sd = opt.state_dict() if isinstance(opt, torch.optim.Optimizer) else opt
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
    """The data generator (the same on every rank) and the torch (/CUDA) RNG: rank 0's under `rng.torch`,
    every rank's under `rng.torch.rank<r>` when there are several (collective: every rank calls it)."""
    cuda = device.startswith("cuda") and torch.cuda.is_available()
    t = {"rng.torch": torch.get_rng_state(), "rng.data": gen.get_state()}
    if cuda:
        t["rng.cuda"] = torch.cuda.get_rng_state(torch.device(device))
    if parallel.current().world > 1:
        for r, st in enumerate(parallel.gather_bytes(torch.get_rng_state(), device)):
            t[f"rng.torch.rank{r}"] = st
        if cuda:
            for r, st in enumerate(parallel.gather_bytes(torch.cuda.get_rng_state(torch.device(device)), device)):
                t[f"rng.cuda.rank{r}"] = st
    return t


def _restore_rng(tensors: dict, gen: torch.Generator, device: str, ranks) -> None:
    suffix = f".rank{ranks.rank}" if ranks.world > 1 else ""
    torch.set_rng_state(tensors["rng.torch" + suffix])
    gen.set_state(tensors["rng.data"])
    if "rng.cuda" + suffix in tensors and device.startswith("cuda"):
        torch.cuda.set_rng_state(tensors["rng.cuda" + suffix], torch.device(device))


def _test_hook(name: str) -> tuple[int, float] | None:
    """`BDH_TEST_<NAME>=STEP:SECONDS` (the tests' way to stop a real run at a known point), else None."""
    v = os.environ.get(f"BDH_TEST_{name}")
    if not v:
        return None
    step, _, sec = v.partition(":")
    return int(step), float(sec or 30)


def _inject_failure(rank: int, step: int) -> None:
    """Test hook BDH_TEST_FAIL=RANK:STEP:raise|kill: rank RANK raises (or kills itself with SIGKILL) right after
    its update STEP, so the tests can watch the other ranks end."""
    v = os.environ.get("BDH_TEST_FAIL")
    if not v:
        return
    r, s, how = v.split(":")
    if int(r) == rank and int(s) == step:
        print(f"bdh-test: rank {rank} fails ({how}) at time {time.time():.3f}", file=sys.stderr, flush=True)
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected failure (BDH_TEST_FAIL) after step {step}")


def _pause_mid_write(tmp: str, step: int) -> None:
    """Test hook BDH_TEST_CKPT_PAUSE=STEP:SECONDS: the step-STEP training state stands half-written in its
    temporary file for SECONDS (a kill -9 then lands mid-write), then the write completes."""
    hook = _test_hook("CKPT_PAUSE")
    if hook is None or hook[0] != step:
        return
    with open(tmp, "rb") as f:
        payload = f.read()
    with open(tmp, "r+b") as f:
        f.truncate(len(payload) // 2)
    print(f"bdh-test: checkpoint write of step {step} paused half-way ({tmp})", file=sys.stderr, flush=True)
    time.sleep(hook[1])
    with open(tmp, "wb") as f:
        f.write(payload)


def save_checkpoint(
    out_dir: str, model, opt, gen: torch.Generator, step: int, cfg: TrainConfig, extra: dict | None = None
) -> None:
    """Write the model directory, then the single-file training state (the commit), each atomically.

    Under torchrun every rank calls it (the full state is gathered from the shards) and rank 0 alone writes;
    the ranks leave together (a barrier), so none races ahead of a checkpoint being written."""
    ranks = parallel.current()
    model_sd = parallel.full_model_state(model)
    opt_sd = parallel.full_optimizer_state(opt)
    rng = _rng_tensors(gen, cfg.device)
    for name, p in model_sd.items():
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise NonFiniteLossError(
                f"non-finite weights ({name}) at step {step}; stopped, the checkpoint in {out_dir} is kept as it was"
            )
    if ranks.main:
        write_model_dir(parallel.unwrap(model).config.to_dict(), model_sd, out_dir, {"step": str(step)})
        tensors = {f"model.{k}": v for k, v in model_sd.items()}
        opt_tensors, opt_meta = _optimizer_to_flat(opt_sd)
        tensors.update(opt_tensors)
        tensors.update(rng)
        meta = {
            "format": "bdh-train-state-1",
            "step": step,
            "train_config": cfg.to_dict(),
            "optimizer": opt_meta,
            "world_size": ranks.world,
            "parallel": ranks.mode,
            **(extra or {}),
        }
        text = json.dumps(meta, indent=1, sort_keys=True)

        def write_state(tmp):
            save_file(tensors, tmp, metadata={"train_state": text})
            _pause_mid_write(tmp, step)

        atomic_write(os.path.join(out_dir, TRAIN_STATE), write_state)
        atomic_write(os.path.join(out_dir, TRAIN_STATE_JSON), lambda p: open(p, "w").write(text + "\n"))
    parallel.barrier()


def read_train_state(out_dir: str) -> tuple[dict, dict]:
    """(tensors, scalars) of the checkpoint in `out_dir`; a missing or foreign file is a one-line error."""
    path = os.path.join(out_dir, TRAIN_STATE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no training checkpoint to resume: {path} does not exist")
    try:
        with safe_open(path, framework="pt") as f:
            meta = (f.metadata() or {}).get("train_state")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    if meta is None:
        raise ValueError(f"{path} has no train_state metadata: not a bdh training checkpoint")
    return tensors, json.loads(meta)


def _load_model_tensors(model, tensors: dict, out_dir: str) -> None:
    msd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(msd)), sorted(set(msd) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {out_dir} does not match the model: missing keys {missing[:3]}, "
            f"unexpected keys {unexpected[:3]}"
        )
    for k, v in msd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(
                f"checkpoint {out_dir}: {k} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}"
            )
    model.load_state_dict(msd)


def load_checkpoint(out_dir: str, model, opt, gen: torch.Generator, device: str) -> tuple[int, dict]:
    """Restore model, optimizer and RNG states in place (a single process); returns (step, scalars)."""
    tensors, meta = read_train_state(out_dir)
    _load_model_tensors(model, tensors, out_dir)
    opt.load_state_dict(
        _optimizer_from_flat({k: v for k, v in tensors.items() if k.startswith("optim.")}, meta["optimizer"])
    )
    _restore_rng(tensors, gen, device, parallel.Ranks())
    return int(meta["step"]), meta


def has_checkpoint(out_dir: str) -> bool:
    return os.path.isfile(os.path.join(out_dir, TRAIN_STATE))


def _repair_after_kill(out_dir: str, tensors: dict, meta: dict, config: dict) -> None:
    """On resume: drop temporary files a kill left, rewrite the model files if a kill came between them and
    the training state (their header names another step), and cut metrics.jsonl back to the checkpoint."""
    step = int(meta["step"])
    for f in os.listdir(out_dir):
        if f.startswith(TMP_PREFIX):
            os.remove(os.path.join(out_dir, f))
    try:
        with safe_open(os.path.join(out_dir, WEIGHTS_FILE), framework="pt") as f:
            model_step = (f.metadata() or {}).get("step")
    except Exception:
        model_step = None
    if model_step != str(step):
        write_model_dir(
            config,
            {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")},
            out_dir,
            {"step": str(step)},
        )
    path = os.path.join(out_dir, METRICS)
    if os.path.isfile(path):
        keep = []
        with open(path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step:
                    keep.append(json.dumps(rec) + "\n")
        atomic_write(path, lambda p: open(p, "w").write("".join(keep)))


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
) -> dict:
    """Train `model` on `data` for `cfg.steps` updates, checkpointing into `out_dir`; returns a summary.

    Fresh start: the data generator is seeded with `cfg.seed`; the global torch RNG (dropout) is used as the
    caller left it (seed it before building the model; ranks > 0 re-seed it to their own stream). `resume=True`
    restores model, optimizer, RNG and step from `out_dir` and continues exactly. `stop_at` checkpoints and
    stops after that step, as an interruption would (the schedule still runs to `cfg.steps`). A SIGINT or
    SIGTERM does the same after the current step and sets `summary["interrupted"]` to the signal's name.
    Under torchrun (`bdh_gpu.parallel.setup` called first) every rank calls this with the same arguments.
    """
    from tqdm.auto import tqdm

    ranks = parallel.current()
    cfg.validate()
    if cfg.batch_size % ranks.world:
        raise ValueError(
            f"batch_size {cfg.batch_size} is the global batch, split over {ranks.world} ranks: "
            f"it must be a multiple of {ranks.world}"
        )
    if ranks.main:
        os.makedirs(out_dir, exist_ok=True)
    device = cfg.device
    model.to(device)
    model.train()
    gen = torch.Generator().manual_seed(cfg.seed)
    start, tensors, meta = 0, None, None
    if resume:
        tensors, meta = read_train_state(out_dir)
        saved = meta["train_config"]
        for k in TrainConfig.RESUME_FIXED:
            if k in saved and saved[k] != getattr(cfg, k):
                raise ValueError(
                    f"--resume: {k} is {getattr(cfg, k)!r} but the checkpoint in {out_dir} was "
                    f"trained with {saved[k]!r}; resume continues exactly, so it must match"
                )
        if int(meta.get("world_size", 1)) != ranks.world:
            raise ValueError(
                f"--resume: the checkpoint in {out_dir} was trained on {meta.get('world_size', 1)} "
                f"rank(s), this run has {ranks.world}; resume with the same number of ranks "
                f"(each rank's dropout stream is part of the checkpoint)"
            )
        _load_model_tensors(model, tensors, out_dir)
        start = int(meta["step"])
    elif has_checkpoint(out_dir):
        _, meta = read_train_state(out_dir)
        raise ValueError(
            f"{out_dir} already holds a training checkpoint (step {meta['step']}); "
            f"pass --resume to continue it, or choose another --out"
        )
    elif ranks.rank > 0:
        torch.manual_seed(cfg.seed + 7919 * ranks.rank)  # its own dropout stream (rank 0 keeps the caller's)
    net = parallel.wrap(model, ranks, device)
    opt = make_optimizer(net, cfg)
    if resume:
        opt_sd = _optimizer_from_flat({k: v for k, v in tensors.items() if k.startswith("optim.")}, meta["optimizer"])
        opt.load_state_dict(parallel.shard_optimizer_state(opt_sd, opt) if ranks.mode == "fsdp" else opt_sd)
        _restore_rng(tensors, gen, device, ranks)
        if ranks.main:
            _repair_after_kill(out_dir, tensors, meta, model.config.to_dict())
        parallel.barrier()
        del tensors
    fwd = torch.compile(net) if cfg.compile else net
    evaluated = parallel.unwrap(net)  # FSDP: the sharded module itself (its forward gathers), so every rank runs it
    amp = _autocast(cfg)
    say = (log or (lambda s: tqdm.write(s))) if ranks.main else (lambda s: None)
    tokens_per_step = cfg.batch_size * cfg.block_size
    last_ckpt = start if resume else None
    summary = {
        "start_step": start,
        "step": start,
        "train_loss": None,
        "val": None,
        "interrupted": None,
        "world_size": ranks.world,
        "parallel": ranks.mode,
    }

    def where():
        return (
            f"last good checkpoint: {out_dir} (step {last_ckpt})"
            if last_ckpt is not None
            else "no checkpoint was written"
        )

    bar = tqdm(
        range(start, cfg.steps),
        initial=start,
        total=cfg.steps,
        dynamic_ncols=True,
        leave=False,
        disable=(None if progress is None else not progress) if ranks.main else True,
    )
    pause = _test_hook("PAUSE")
    t0, t1, tokens, ema = time.perf_counter(), None, 0, None
    probe = data.get_batch("val", 1, torch.Generator().manual_seed(cfg.seed))[0][0].to(device)
    with parallel.gathered(net):  # every rank checks (FSDP: on the gathered weights), so all stop together
        check_activations(parallel.unwrap(net), probe, start)  # before any work: a dead or blown-up init stops here
    with StopSignals(announce=ranks.main) as stop:
        try:
            for step in bar:
                lr = lr_at(step, cfg)
                for g in opt.param_groups:
                    g["lr"] = lr
                x, y = data.get_batch("train", cfg.batch_size, gen)  # the global batch, the same on every rank
                if ranks.world > 1:
                    scored = max(1, int((y != IGNORE).sum()))
                    x, y = parallel.local_slice((x, y), ranks)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with amp:
                    logits = fwd(x)
                if ranks.world == 1:
                    loss = loss_fn(logits, y)
                    lv = float(loss.detach())
                    if not math.isfinite(lv):
                        raise NonFiniteLossError(
                            f"non-finite loss ({lv}) at step {step + 1} (lr {lr:.3g}); stopped, {where()}"
                        )
                else:  # DDP/FSDP average the gradients over ranks: scale so that the mean is the global loss's
                    loss = loss_sum(logits, y) * (ranks.world / scored)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                done = step + 1
                _inject_failure(ranks.rank, done)
                if pause is not None and pause[0] == done:
                    if ranks.main:
                        print(f"bdh-test: paused after step {done}", file=sys.stderr, flush=True)
                    until = time.monotonic() + pause[1]
                    while not stop.requested and time.monotonic() < until:
                        time.sleep(0.02)
                stop_now = stop.requested
                if ranks.distributed:  # one all_reduce: the global loss and whether any rank got a signal
                    total, n_stop = parallel.all_sum([float(loss.detach()), float(stop.requested)], device)
                    lv, stop_now = total / ranks.world, n_stop > 0
                    if not math.isfinite(lv):
                        raise NonFiniteLossError(
                            f"non-finite loss ({lv}) at step {done} (lr {lr:.3g}); stopped, {where()}"
                        )
                tokens += tokens_per_step
                ema = lv if ema is None else 0.9 * ema + 0.1 * lv
                now = time.perf_counter()
                tok_s = tokens / max(1e-9, now - t0)
                if t1 is None:
                    t1 = now  # steady-state rate: from the end of the first step (warm-up excluded)
                else:
                    summary["tokens_per_s_steady"] = (tokens - tokens_per_step) / max(1e-9, now - t1)
                bar.set_postfix(loss=f"{ema:.4f}", tok_s=f"{tok_s:,.0f}", lr=f"{lr:.2e}", refresh=False)
                summary.update(step=done, train_loss=lv, tokens_per_s=tok_s)
                if done % cfg.eval_every == 0 or done == cfg.steps:
                    if ranks.main or ranks.mode == "fsdp":
                        val = evaluate(evaluated, data, "val", cfg.batch_size, cfg.eval_batches, device, _autocast(cfg))
                        summary["val"] = val
                        say(
                            f"step {done}: train loss {ema:.4f}, val loss {val['loss']:.4f} "
                            f"({val['bits_per_byte']:.3f} bpb), val acc {val['accuracy']:.3f}, {tok_s:,.0f} tok/s"
                        )
                        record = {
                            "step": done,
                            "train_loss": ema,
                            "lr": lr,
                            "tokens_per_s": tok_s,
                            "elapsed_s": time.perf_counter() - t0,
                            **{f"val_{k}": v for k, v in val.items()},
                        }
                        if ranks.main:
                            with open(os.path.join(out_dir, METRICS), "a") as f:
                                f.write(json.dumps(record) + "\n")
                    with parallel.gathered(net):
                        check_activations(parallel.unwrap(net), probe, done)
                if done % cfg.ckpt_every == 0 or done == cfg.steps:
                    save_checkpoint(out_dir, net, opt, gen, done, cfg, {"val": summary["val"]})
                    last_ckpt = done
                if (stop_at is not None and done >= stop_at) or stop_now:
                    if last_ckpt != done:
                        save_checkpoint(out_dir, net, opt, gen, done, cfg, {"val": summary["val"]})
                        last_ckpt = done
                    if stop_now:
                        summary["interrupted"] = stop.name or "SIGTERM"  # another rank's signal
                    break
        except KeyboardInterrupt:
            if ranks.main:
                again = "interrupted again" if stop.requested else "interrupted"
                print(f"bdh train: {again}: stopped at once; {where()}", file=sys.stderr, flush=True)
            raise
    bar.close()
    summary["seconds"] = time.perf_counter() - t0
    summary["state_bytes_per_rank"] = parallel.gather_ints([parallel.local_state_bytes(net, opt)], device)
    summary["peak_rss_bytes_per_rank"] = parallel.gather_ints([parallel.peak_rss_bytes()], device)
    return summary
