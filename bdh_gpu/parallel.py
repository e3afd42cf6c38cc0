"""Training on several ranks with torch.distributed: the torchrun environment, DDP / FSDP2, full state on rank 0.

`torchrun` (= `python -m torch.distributed.run`, it ships with torch) starts K processes and sets RANK,
WORLD_SIZE, LOCAL_RANK and the rendezvous variables; `Ranks.from_env()` reads them and `setup` joins the
process group (gloo on CPU, NCCL on CUDA, each rank on its LOCAL_RANK device). The loop
(`bdh_gpu.train.train`) then
- draws every global batch from the same data generator on every rank and keeps its own slice (`local_slice`),
  so the data order does not depend on K and a rank's checkpoint of the generator is everyone's;
- wraps the model with DDP (gradients all-reduced, averaged) or FSDP2 `fully_shard` (parameters, gradients and
  AdamW moments sharded on dim 0; gathered for forward/backward). All L layers share D_x, D_y and E, so the
  whole model is one FSDP unit: FSDP saves the memory of gradients, optimizer state and parameters at rest,
  not of the parameters during a step;
- gathers the full model and optimizer state for a checkpoint (`full_model_state`, `full_optimizer_state`,
  collective calls every rank makes), which rank 0 alone writes: a checkpoint is the same file whatever K and
  whatever wrapping, and loads in a single process with no conversion.
Collectives are torch.distributed's own (all_reduce, all_gather, barrier; FSDP2 uses all_gather_single and
reduce_scatter_single, both implemented by gloo in torch 2.13); nothing here reduces by hand.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bdh_gpu.errors import InputError

MODES = ("single", "ddp", "fsdp")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    mode: str = "single"  # single | ddp | fsdp

    @property
    def main(self) -> bool:
        """Rank 0: the only rank that logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.mode != "single"

    @staticmethod
    def env() -> dict | None:
        """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them, or None outside torchrun."""
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return None
        try:
            return {
                "rank": int(os.environ["RANK"]),
                "world": int(os.environ["WORLD_SIZE"]),
                "local_rank": int(os.environ.get("LOCAL_RANK", os.environ["RANK"])),
            }
        except ValueError:
            raise InputError(
                f"RANK={os.environ.get('RANK')!r}, WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}, "
                f"LOCAL_RANK={os.environ.get('LOCAL_RANK')!r}: expected integers (as torchrun sets them)"
            ) from None


def current() -> Ranks:
    """The ranks of the process group this process has joined (a single process when none)."""
    if dist.is_available() and dist.is_initialized():
        return _CURRENT
    return Ranks()


_CURRENT = Ranks()


def rank_device(device: str, local_rank: int) -> str:
    """cuda / cuda:N under torchrun -> cuda:LOCAL_RANK (one GPU per rank); cpu stays cpu."""
    return f"cuda:{local_rank}" if device.startswith("cuda") else device


def setup(fsdp: bool, device: str, timeout_s: float = 300.0) -> tuple[Ranks, str]:
    """Join torchrun's process group (if under torchrun); returns (ranks, this rank's device).

    Outside torchrun: a single process, unless `fsdp` (which needs ranks to shard over) -> InputError.
    `timeout_s` bounds every collective: a rank that stops answering ends the others within it.
    """
    global _CURRENT
    env = Ranks.env()
    if env is None:
        if fsdp:
            raise InputError("--fsdp shards over ranks: launch with torchrun --nproc-per-node K ... (K >= 2)")
        return Ranks(), device
    mode = "fsdp" if fsdp else "ddp"
    device = rank_device(device, env["local_rank"])
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend,
            timeout=datetime.timedelta(seconds=timeout_s),
            **({"device_id": torch.device(device)} if backend == "nccl" else {}),
        )
    _CURRENT = Ranks(env["rank"], env["world"], env["local_rank"], mode)
    return _CURRENT, device


def end_worker(code: int) -> None:
    """End this torchrun worker now, with `code`, once its run is over and `teardown` has run: stdout and stderr
    flushed, then os._exit, without the interpreter's shutdown.

    Why: a DDP-wrapped model keeps a reference to the gloo process group that `destroy_process_group` does not
    drop (measured, torch 2.13: after destroy, and after the DDP object is collected, the worker still runs its
    `gloo_tcp_loop` and two `pt_gloo_runloop` threads). Those threads then meet the interpreter's and the C++
    runtime's shutdown, which destroys objects in no fixed order; now and then a std::thread is destroyed while
    joinable and the worker dies in std::terminate ("terminate called without an active exception", exit 1 from
    torchrun, about 1 run in 30). A worker has nothing left to do at this point (checkpoints are fsynced,
    output flushed, the lock released), so it leaves without that shutdown."""
    for f in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            f.flush()
    os._exit(code)


def teardown() -> None:
    global _CURRENT
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _CURRENT = Ranks()


def wrap(model: torch.nn.Module, ranks: Ranks, device: str) -> torch.nn.Module:
    """The module the loop calls: the model itself, DDP(model), or the model after fully_shard (in place)."""
    if ranks.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None)
    if ranks.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        return fully_shard(model)
    return model


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The BDH module inside a DDP wrapper (FSDP2 shards the module in place, so it is its own)."""
    return getattr(model, "module", model)


def local_slice(batch, ranks: Ranks):
    """This rank's rows of a global batch (B must be divisible by the world size)."""
    if ranks.world == 1:
        return batch
    b = batch[0].shape[0] // ranks.world
    return tuple(t[ranks.rank * b : (ranks.rank + 1) * b] for t in batch)


def all_sum(values: list[float], device: str) -> list[float]:
    """Sum of a few floats over all ranks (float64), one all_reduce; identity in a single process."""
    if not current().distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def barrier() -> None:
    if current().distributed:
        dist.barrier()


def _full(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    if isinstance(t, DTensor):
        t = t.full_tensor()  # all-gather: every rank calls it, in the same order
    return t.detach().cpu().contiguous()


def full_model_state(model: torch.nn.Module) -> dict:
    """{name: full CPU tensor} of the (possibly sharded) BDH module; collective under FSDP."""
    return {k: _full(v) for k, v in unwrap(model).state_dict().items()}


def full_optimizer_state(opt: torch.optim.Optimizer) -> dict:
    """opt.state_dict() with every sharded moment gathered into a full CPU tensor; collective under FSDP."""
    sd = opt.state_dict()
    state = {
        pid: {k: (_full(v) if torch.is_tensor(v) else v) for k, v in st.items()} for pid, st in sd["state"].items()
    }
    return {"state": state, "param_groups": sd["param_groups"]}


def shard_optimizer_state(sd: dict, opt: torch.optim.Optimizer) -> dict:
    """Full optimizer state -> the layout of `opt`'s parameters: each moment cut like its parameter's DTensor
    (every rank holds the full tensor, so this needs no communication); plain parameters take it as is."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = [p for g in opt.param_groups for p in g["params"]]
    state = {}
    for pid, st in sd["state"].items():
        p = params[int(pid)]
        state[pid] = {}
        for k, v in st.items():
            if isinstance(p, DTensor) and torch.is_tensor(v) and tuple(v.shape) == tuple(p.shape):
                v = distribute_tensor(v.to(p.device), p.device_mesh, p.placements, src_data_rank=None)
            state[pid][k] = v
    return {"state": state, "param_groups": sd["param_groups"]}


def gather_bytes(t: torch.Tensor, device: str) -> list[torch.Tensor]:
    """Every rank's copy of a small uint8 tensor of the same size on all ranks (an RNG state), via all_gather."""
    ranks = current()
    if not ranks.distributed:
        return [t]
    dev = device if device.startswith("cuda") else "cpu"  # NCCL only moves CUDA tensors
    src = t.to(dev)
    out = [torch.empty_like(src) for _ in range(ranks.world)]
    dist.all_gather(out, src)
    return [o.cpu() for o in out]


def local_state_bytes(model: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    """Bytes this rank holds of parameters, gradients (same layout) and AdamW moments: its shards under FSDP,
    everything under DDP (DDP's gradient buckets are a further copy of the gradients, not counted)."""
    from torch.distributed.tensor import DTensor

    def nbytes(t):
        t = t.to_local() if isinstance(t, DTensor) else t
        return t.numel() * t.element_size()

    total = 2 * sum(nbytes(p) for p in model.parameters())
    for st in opt.state.values():
        total += sum(nbytes(v) for v in st.values() if torch.is_tensor(v) and v.dim() > 0)
    return total


def peak_rss_bytes() -> int:
    """This process's peak resident memory: VmHWM of /proc/self/status (per address space, so it starts afresh
    at exec), else ru_maxrss (KiB on Linux), which Linux carries over from the parent across fork and exec: a
    `bdh train` started by a large process would report the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def gather_ints(values: list[int], device: str) -> list[int]:
    """Every rank's ints (the same count on each), in rank order, via all_gather; as is in a single process."""
    if not current().distributed:
        return list(values)
    return [int(v) for t in gather_bytes(torch.tensor(values, dtype=torch.int64), device) for v in t.tolist()]


@contextlib.contextmanager
def gathered(model: torch.nn.Module):
    """The full parameters inside the block on every rank: FSDP2's unshard() / reshard() (collective; every rank
    enters), for code that reads the weights outside forward (`BDH.trace`); a no-op for DDP and one process."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        yield model
        return
    model.unshard()
    try:
        yield model
    finally:
        model.reshard()
