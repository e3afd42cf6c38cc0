"""The training checkpoint format: what `bdh_gpu.train.train` writes into `out_dir` and what `resume` reads.

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
training state, the model files are one checkpoint ahead until the resume rewrites them from the training state
(`repair_after_kill`), which also cuts `metrics.jsonl` back to the checkpoint's step.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from bdh_gpu import parallel
from bdh_gpu.errors import InputError, NonFiniteLossError
from bdh_gpu.io import TMP_PREFIX, WEIGHTS_FILE, atomic_write, write_model_dir

TRAIN_STATE = "train_state.safetensors"
TRAIN_STATE_JSON = "train_state.json"
METRICS = "metrics.jsonl"


def optimizer_to_flat(opt) -> tuple[dict, dict]:
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


def optimizer_from_flat(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for key, v in tensors.items():
        _, pid, k = key.split(".", 2)
        state.setdefault(int(pid), {})[k] = v
    for key, v in meta["state_scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def rng_tensors(gen: torch.Generator, device: str) -> dict:
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


def restore_rng(tensors: dict, gen: torch.Generator, device: str, ranks) -> None:
    suffix = f".rank{ranks.rank}" if ranks.world > 1 else ""
    torch.set_rng_state(tensors["rng.torch" + suffix])
    gen.set_state(tensors["rng.data"])
    if "rng.cuda" + suffix in tensors and device.startswith("cuda"):
        torch.cuda.set_rng_state(tensors["rng.cuda" + suffix], torch.device(device))


def save_checkpoint(
    out_dir: str, model, opt, gen: torch.Generator, step: int, cfg, extra: dict | None = None, *, on_written=None
) -> None:
    """Write the model directory, then the single-file training state (the commit), each atomically.

    Under torchrun every rank calls it (the full state is gathered from the shards) and rank 0 alone writes;
    the ranks leave together (a barrier), so none races ahead of a checkpoint being written. `cfg`: the run's
    `bdh_gpu.train.TrainConfig` (its device, and its fields stored for the resume). `on_written(tmp_path, step)`,
    if given, runs on rank 0 when the training state is in its temporary file, before the rename commits it."""
    ranks = parallel.current()
    model_sd = parallel.full_model_state(model)
    opt_sd = parallel.full_optimizer_state(opt)
    rng = rng_tensors(gen, cfg.device)
    for name, p in model_sd.items():
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise NonFiniteLossError(
                f"non-finite weights ({name}) at step {step}; stopped, the checkpoint in {out_dir} is kept as it was"
            )
    if ranks.main:
        write_model_dir(parallel.unwrap(model).config.to_dict(), model_sd, out_dir, {"step": str(step)})
        tensors = {f"model.{k}": v for k, v in model_sd.items()}
        opt_tensors, opt_meta = optimizer_to_flat(opt_sd)
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
            if on_written is not None:
                on_written(tmp, step)

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
        raise InputError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    if meta is None:
        raise InputError(f"{path} has no train_state metadata: not a bdh training checkpoint")
    return tensors, json.loads(meta)


def load_model_tensors(model, tensors: dict, out_dir: str) -> None:
    msd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(msd)), sorted(set(msd) - set(own))
    if missing or unexpected:
        raise InputError(
            f"checkpoint {out_dir} does not match the model: missing keys {missing[:3]}, "
            f"unexpected keys {unexpected[:3]}"
        )
    for k, v in msd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise InputError(
                f"checkpoint {out_dir}: {k} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}"
            )
    model.load_state_dict(msd)


def optimizer_state(tensors: dict, meta: dict) -> dict:
    """The optimizer's full state_dict from a checkpoint's (tensors, scalars)."""
    return optimizer_from_flat({k: v for k, v in tensors.items() if k.startswith("optim.")}, meta["optimizer"])


def load_checkpoint(out_dir: str, model, opt, gen: torch.Generator, device: str) -> tuple[int, dict]:
    """Restore model, optimizer and RNG states in place (a single process); returns (step, scalars)."""
    tensors, meta = read_train_state(out_dir)
    load_model_tensors(model, tensors, out_dir)
    opt.load_state_dict(optimizer_state(tensors, meta))
    restore_rng(tensors, gen, device, parallel.Ranks())
    return int(meta["step"]), meta


def has_checkpoint(out_dir: str) -> bool:
    return os.path.isfile(os.path.join(out_dir, TRAIN_STATE))


def repair_after_kill(out_dir: str, tensors: dict, meta: dict, config: dict) -> None:
    """On resume: drop temporary files a kill left, rewrite the model files if a kill came between them and
    the training state (their header names another step), and cut metrics.jsonl back to the checkpoint."""
    step = int(meta["step"])
    for f in os.listdir(out_dir):
        if f.startswith(TMP_PREFIX):
            os.remove(os.path.join(out_dir, f))
    if _model_files_step(out_dir) != str(step):
        write_model_dir(
            config,
            {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")},
            out_dir,
            {"step": str(step)},
        )
    _cut_metrics(os.path.join(out_dir, METRICS), step)


def _model_files_step(out_dir: str) -> str | None:
    """The step named in the header of model.safetensors (None if unreadable)."""
    try:
        with safe_open(os.path.join(out_dir, WEIGHTS_FILE), framework="pt") as f:
            return (f.metadata() or {}).get("step")
    except Exception:
        return None


def _cut_metrics(path: str, step: int) -> None:
    """Keep the records of metrics.jsonl up to `step` (and none a kill cut in half)."""
    if not os.path.isfile(path):
        return
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


# ---------------------------------------------------------------------------------------------- one run per directory

LOCK = ".lock"  # held (flock) by the process training into the directory; its text is that process's pid


class Busy(InputError):
    """Another process is training into the directory."""


@contextlib.contextmanager
def run_lock(out_dir: str):
    """Hold `out_dir/.lock` for the block: a second process that asks for it while the first runs raises `Busy`
    naming the directory and the first one's pid, at once (never waits, never interleaves its files). The kernel
    drops the lock when its process ends, so a file left by a killed run does not block the next. The file is
    removed on release; a taker checks that the file it locked is still the one at the path (else it retries),
    so a release racing a new taker never lets two runs in."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, LOCK)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise Busy(
                f"{out_dir}: another process (pid {holder}) is training into it; wait for it, or choose another --out"
            ) from None
        if _same_file(fd, path):
            break
        os.close(fd)  # released and removed between our open and our lock: take the new file
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        os.close(fd)


def _same_file(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
