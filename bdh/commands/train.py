"""`bdh train`: train a BDH-GPU model on bytes (a file, tiny Shakespeare, or the built-in recall task)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys

from bdh.errors import InputError, exit_code
from bdh.options import (
    add_attention,
    add_device,
    add_threads,
    attention_name,
    count,
    parse_attention,
    real,
    resolve_device,
    set_threads,
)

SHAPE_FIELDS = ("n_head", "d", "N", "n_layer", "vocab_size")


def add_parser(subparsers):
    p = subparsers.add_parser(
        "train",
        help="train a BDH-GPU model",
        description="Train BDH-GPU on bytes. DATA is a file path, 'tinyshakespeare' (downloaded once into "
        "$BDH_CACHE or ~/.cache/bdh; $BDH_TINYSHAKESPEARE names a local copy), or 'recall' / "
        "'recall:K' (the built-in associative-recall task with K pairs, default 8).",
    )
    p.add_argument("--data", help="file path | tinyshakespeare | recall[:K] (on --resume: from the checkpoint)")
    p.add_argument("--out", required=True, help="model directory to write (checkpoints go there too)")
    p.add_argument("--preset", help="tiny (default) | small | paper-25m")
    p.add_argument("--variant", help="official (default) | paper | normfree")
    p.add_argument("--U", dest="U", help="positional operator: rope (default) | alibi | rope+alibi | none")
    p.add_argument("--dropout", type=real(0.0, 1.0), help="override the preset's dropout")
    p.add_argument("--steps", type=count(1), help="total optimizer steps (default 1000)")
    p.add_argument("--batch-size", type=count(1), help="windows per step (default 32)")
    p.add_argument("--block-size", type=count(1), help="bytes per window (default 64 for recall, else 256)")
    p.add_argument("--lr", type=real(0.0, open_lo=True), help="peak learning rate (default 3e-3 for recall, else 1e-3)")
    p.add_argument("--warmup", type=count(0), help="warm-up steps (default: min(100, steps/10))")
    p.add_argument("--seed", type=count(0, 2**63 - 1), help="seed for weights, batches and dropout (default 1337)")
    p.add_argument("--eval-every", type=count(1), help="steps between held-out evaluations (default 100)")
    p.add_argument("--ckpt-every", type=count(1), help="steps between checkpoints (default 500)")
    add_device(p)
    add_threads(p)
    p.add_argument("--torch-compile", action="store_true", help="torch.compile the model (useful on CUDA)")
    p.add_argument("--grad-clip", type=real(0.0), help="max global gradient norm, 0 disables (default 1.0)")
    p.add_argument("--dtype", choices=("float32", "float64"), help="parameter dtype of a new model (default float32)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out exactly")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace what --out holds (a model, a run: its model, checkpoint and metrics files)",
    )
    p.add_argument(
        "--fsdp",
        action="store_true",
        help="under torchrun: shard parameters, gradients and optimizer state (FSDP2) instead of DDP",
    )
    p.add_argument(
        "--dist-timeout",
        type=real(0.0, open_lo=True),
        default=300.0,
        help="under torchrun: seconds a collective may wait for the other ranks (default 300)",
    )
    p.add_argument("--json", action="store_true", help="print the final summary as one JSON line")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_attention(p)
    p.set_defaults(func=run)
    return p


def data_spec(spec: str) -> str:
    """Canonical --data: built-in names as given, file paths absolute (so a resume elsewhere still matches)."""
    if spec in ("tinyshakespeare",) or spec == "recall" or spec.startswith("recall:"):
        return spec
    return os.path.abspath(spec)


RUN_FILES = ("config.json", "model.safetensors", "train_state.safetensors", "train_state.json", "metrics.jsonl")


def check_out_dir(out: str, resume: bool, force: bool, lead: bool = True) -> None:
    """No lost work: a fresh run needs a new or empty --out; --resume needs a checkpoint there; --force alone
    replaces (it deletes the run files listed in RUN_FILES, and leaves any other file). Only the lead process (the
    one holding the run lock; rank 0 under torchrun) deletes: another rank must never touch a run the lock may
    show to be someone else's."""
    from bdh_gpu.checkpoint import LOCK, TRAIN_STATE, has_checkpoint, read_train_state
    from bdh_gpu.io import TMP_PREFIX

    if resume and force:
        raise InputError("--resume continues the run in --out and --force replaces it: pass one of them")
    if os.path.exists(out) and not os.path.isdir(out):
        raise InputError(f"--out {out} is a file, not a directory")
    if resume:
        if not os.path.exists(out):
            raise InputError(
                f"--resume: {out} does not exist, so there is no training checkpoint to continue; "
                f"start a new run there without --resume"
            )
        if not has_checkpoint(out):
            raise InputError(
                f"--resume: {out} holds no {TRAIN_STATE}, so there is no training checkpoint to "
                f"continue; start a new run with another --out, or replace {out} with --force"
            )
        return
    entries = sorted(f for f in os.listdir(out) if f != LOCK) if os.path.isdir(out) else []
    if not entries:
        return
    if force:
        if not lead:
            return
        for f in entries:
            if f in RUN_FILES or f.startswith(TMP_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(out, f))
        return
    if has_checkpoint(out):
        try:
            what = f"already holds a training checkpoint (step {read_train_state(out)[1]['step']})"
        except ValueError:
            what = "already holds a training checkpoint (unreadable)"
    elif os.path.isfile(os.path.join(out, "model.safetensors")):
        what = "already holds a model (not a bdh train run)"
    else:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        what = f"is not empty ({len(entries)} entries: {shown}) and is not a bdh train run"
    raise InputError(f"--out {out} {what}: continue a run with --resume, or replace it with --force")


def resume_command(out: str, world: int, fsdp: bool) -> str:
    """The command line that resumes this run (torchrun with the same number of ranks when distributed)."""
    tail = f"train --out {shlex.quote(out)} --resume"
    if world > 1:
        return f"torchrun --nproc-per-node {world} -m bdh {tail}{' --fsdp' if fsdp else ''} (the same number of ranks)"
    return f"bdh {tail}"


def run(args) -> int:
    set_threads(args)  # before torch is imported: its OpenMP reads the wait policy then
    from bdh_gpu import parallel

    env = parallel.Ranks.env()
    if env is None:
        with _out_lock(args.out, args.resume, True):
            return _run_in(args, env)
    try:
        with _out_lock(args.out, args.resume, env["rank"] == 0):
            code = _run_in(args, env)
    except KeyboardInterrupt:  # a second Ctrl-C: the run stopped at once (its line is printed)
        code = 130
    except InputError as e:  # rank 0's verdict on --out, before any process group: bdh.cli prints it
        if env["rank"] == 0:
            raise
        code = exit_code(e)
    parallel.end_worker(code)  # never returns: see there why a torchrun worker skips interpreter shutdown


def _out_lock(out: str, resume: bool, lead: bool):
    """One run per --out (bdh_gpu.checkpoint.run_lock; under torchrun rank 0 holds it for the job), taken before
    anything in --out is read or replaced. None to take where check_out_dir refuses at once (--resume of a
    directory that is not there, a file)."""
    from bdh_gpu.checkpoint import run_lock

    if not lead or (resume and not os.path.isdir(out)) or (os.path.exists(out) and not os.path.isdir(out)):
        return contextlib.nullcontext()
    return run_lock(out)


def _run_in(args, env) -> int:
    from bdh_gpu import parallel

    try:
        check_out_dir(args.out, args.resume, args.force, lead=env is None or env["rank"] == 0)
    except InputError:
        if env is not None and env["rank"] != 0:
            return 2  # the same verdict on every rank: rank 0 says it, once
        raise
    device = resolve_device(args.device)
    try:
        ranks, device = parallel.setup(args.fsdp, device, args.dist_timeout)
    except ValueError as e:
        raise InputError(str(e)) from None
    try:
        return _run(args, ranks, device)
    except Exception as e:
        if not ranks.distributed:
            raise  # a single process: bdh's usual error handling (bdh.cli)
        # under torchrun every rank says what ended it in one line (its own error, or a peer that died), exits
        # non-zero, and torchrun stops the others: never a hang. Bad input (the same on every rank): exit 2.
        code = exit_code(e)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if _is_peer_loss(e, msg):
            msg = f"lost contact with another rank, which failed or was killed ({_short(msg)}); {_last(args.out)}"
        print(f"bdh train: rank {ranks.rank}/{ranks.world}: error: {msg}", file=sys.stderr, flush=True)
        return code
    finally:
        parallel.teardown()


def _is_peer_loss(e: Exception, msg: str) -> bool:
    import torch.distributed as dist

    return isinstance(e, getattr(dist, "DistError", ())) or any(w in msg for w in ("gloo", "NCCL", "Connection"))


def _short(msg: str) -> str:
    """A gloo/NCCL error without its source location and advice: '[.../pair.cc:553] Connection closed by peer
    [127.0.0.1]:10163. This is typically...' -> 'Connection closed by peer [127.0.0.1]:10163'."""
    if msg.startswith("[") and "] " in msg:
        msg = msg.split("] ", 1)[1]
    return msg.split(". ", 1)[0].rstrip(".")


def _last(out: str) -> str:
    from bdh_gpu.checkpoint import has_checkpoint, read_train_state

    try:
        return (
            f"the last checkpoint, {out} (step {read_train_state(out)[1]['step']}), is intact"
            if has_checkpoint(out)
            else "no checkpoint was written"
        )
    except ValueError:
        return f"the checkpoint in {out} is unreadable"


def _run(args, ranks, device) -> int:
    """The run, in steps: the configs (from the checkpoint on --resume, else the preset and the flags), the data,
    the model, one line saying what runs where, the training loop (bdh_gpu.train), the closing line."""
    import bdh_gpu
    from bdh_gpu.data import make_dataset
    from bdh_gpu.train import train

    attention = parse_attention(args)
    model, config, cfg = _resumed(args) if args.resume else _fresh(args)
    for k, v in _explicit(args).items():
        if v is not None:
            setattr(cfg, k, v)
    cfg.device, cfg.compile = device, bool(args.torch_compile)
    cfg.validate()
    _check_budget(args, model, config, cfg, attention, ranks)  # before any allocation
    data = make_dataset(cfg.data, cfg.block_size)  # errors (missing, empty, too short) before any work
    if model is None:
        import torch

        torch.manual_seed(cfg.seed)
        model = bdh_gpu.BDH(config)
        if args.dtype is not None:
            model.to(getattr(torch, args.dtype))
    model.attention = attention
    if ranks.main:
        print(_first_line(model, config, cfg, data, ranks, device, attention), flush=True)
    progress = False if args.quiet else None
    hooks = getattr(args, "callbacks", ())
    summary = train(model, data, cfg, args.out, resume=args.resume, progress=progress, log=print, callbacks=hooks)
    if summary["interrupted"]:
        return _interrupted(args, summary, ranks)
    if ranks.main:
        print(json.dumps(summary) if args.json else _last_line(args, summary, data, ranks))
    return 0


def _check_budget(args, model, config, cfg, attention, ranks) -> None:
    """The memory budget of the run (bdh.budget): parameters, optimizer state and activations per rank."""
    from bdh.budget import check_train

    s = model.E.element_size() if model is not None else 8 if args.dtype == "float64" else 4
    flags = {"--block-size": cfg.block_size, "--batch-size": cfg.batch_size}
    check_train(config, cfg.batch_size, cfg.block_size, attention, ranks.world, s, flags)


def _resumed(args):
    """(model, model config, training config) of the checkpoint in --out; a flag that contradicts it is refused."""
    import torch

    import bdh_gpu
    from bdh_gpu.checkpoint import read_train_state
    from bdh_gpu.config import get_preset
    from bdh_gpu.train import TrainConfig

    model = bdh_gpu.load(args.out)
    config = model.config
    _, meta = read_train_state(args.out)
    if args.preset is not None:
        want = get_preset(args.preset)
        for f in SHAPE_FIELDS:
            if getattr(want, f) != getattr(config, f):
                raise InputError(
                    f"--resume: --preset {args.preset} has {f}={getattr(want, f)}, the checkpoint "
                    f"in {args.out} has {f}={getattr(config, f)}"
                )
    for f in ("variant", "U", "dropout"):
        if getattr(args, f) is not None and getattr(args, f) != getattr(config, f):
            raise InputError(
                f"--resume: --{f} {getattr(args, f)} differs from the checkpoint's {f}={getattr(config, f)!r}"
            )
    if args.dtype is not None and getattr(torch, args.dtype) != model.E.dtype:
        raise InputError(f"--resume: --dtype {args.dtype} differs from the checkpoint's {model.E.dtype}")
    return model, config, TrainConfig.from_dict(meta["train_config"])


def _fresh(args):
    """(None, model config, training config) of a new run: the preset with the flags, the task's defaults."""
    from bdh_gpu.config import get_preset
    from bdh_gpu.train import TrainConfig

    config = get_preset(args.preset or "tiny")
    for f in ("variant", "U", "dropout"):
        if getattr(args, f) is not None:
            setattr(config, f, getattr(args, f))
    config.validate()
    if args.data is None:
        raise InputError("--data is required (a file path, tinyshakespeare, or recall)")
    recall = args.data.startswith("recall")
    steps = args.steps if args.steps is not None else 1000
    cfg = TrainConfig(
        data=data_spec(args.data),
        steps=steps,
        lr=3e-3 if recall else 1e-3,
        block_size=64 if recall else 256,
        warmup_steps=min(100, max(1, steps // 10)),
        eval_every=100,
        ckpt_every=500,
    )
    return None, config, cfg


def _explicit(args) -> dict:
    """The training-config fields given on the command line (None: not given, keep the default or checkpoint)."""
    return {
        "data": None if args.data is None else data_spec(args.data),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "block_size": args.block_size,
        "lr": args.lr,
        "warmup_steps": args.warmup,
        "seed": args.seed,
        "eval_every": args.eval_every,
        "ckpt_every": args.ckpt_every,
        "grad_clip": args.grad_clip,
    }


def _first_line(model, config, cfg, data, ranks, device, attention) -> str:
    n_params = sum(p.numel() for p in model.parameters())
    on = (
        f"device {device}"
        if not ranks.distributed
        else f"{ranks.world} ranks ({ranks.mode.upper()}, {cfg.batch_size // ranks.world} windows each), "
        f"{device} per rank"
    )
    return (
        f"bdh train: {config.variant}/{config.U}, h={config.n_head} d={config.d} N={config.N} "
        f"L={config.n_layer} ({n_params:,} parameters) on {data.name}, {cfg.steps} steps of "
        f"{cfg.batch_size}x{cfg.block_size} bytes, {on}, attention {attention_name(attention)}"
    )


def _interrupted(args, summary, ranks) -> int:
    """A run stopped by a signal: where its checkpoint is, how to resume; exit 128 + the signal number."""
    import signal

    if ranks.main:
        print(
            f"bdh train: stopped by {summary['interrupted']} after step {summary['step']}; checkpoint in "
            f"{args.out}; resume with: {resume_command(args.out, ranks.world, args.fsdp)}",
            file=sys.stderr,
            flush=True,
        )
    return 128 + int(getattr(signal, summary["interrupted"], signal.SIGTERM))


def _last_line(args, summary, data, ranks) -> str:
    val = summary["val"]
    tail = ""
    if val is not None:
        tail = (
            f"; val loss {val['loss']:.4f} nats/byte ({val['bits_per_byte']:.4f} bpb), accuracy {val['accuracy']:.3f}"
        )
        if getattr(data, "chance", None):
            tail += f" (chance {data.chance:.3f})"
    if ranks.distributed:
        tail += "; peak memory per rank " + ", ".join(f"{b / 2**20:,.0f}" for b in summary["peak_rss_bytes_per_rank"])
        tail += " MiB"
    return (
        f"done: step {summary['step']} in {summary['seconds']:.1f} s "
        f"({summary.get('tokens_per_s', 0):,.0f} tokens/s){tail}; model in {args.out}"
    )
