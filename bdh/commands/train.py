"""`bdh train`: train a BDH-GPU model on bytes (a file, tiny Shakespeare, or the built-in recall task)."""
from __future__ import annotations

import os

SHAPE_FIELDS = ("n_head", "d", "N", "n_layer", "vocab_size")


def add_parser(subparsers):
    p = subparsers.add_parser(
        "train", help="train a BDH-GPU model",
        description="Train BDH-GPU on bytes. DATA is a file path, 'tinyshakespeare' (downloaded once into "
                    "$BDH_CACHE or ~/.cache/bdh; $BDH_TINYSHAKESPEARE names a local copy), or 'recall' / "
                    "'recall:K' (the built-in associative-recall task with K pairs, default 8).")
    p.add_argument("--data", help="file path | tinyshakespeare | recall[:K] (on --resume: from the checkpoint)")
    p.add_argument("--out", required=True, help="model directory to write (checkpoints go there too)")
    p.add_argument("--preset", help="tiny (default) | small | paper-25m")
    p.add_argument("--variant", help="official (default) | paper | normfree")
    p.add_argument("--U", dest="U", help="positional operator: rope (default) | alibi | rope+alibi | none")
    p.add_argument("--dropout", type=float, help="override the preset's dropout")
    p.add_argument("--steps", type=int, help="total optimizer steps (default 1000)")
    p.add_argument("--batch-size", type=int, help="windows per step (default 32)")
    p.add_argument("--block-size", type=int, help="bytes per window (default 64 for recall, else 256)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 3e-3 for recall, else 1e-3)")
    p.add_argument("--warmup", type=int, help="warm-up steps (default: min(100, steps/10))")
    p.add_argument("--seed", type=int, help="seed for weights, batches and dropout (default 1337)")
    p.add_argument("--eval-every", type=int, help="steps between held-out evaluations (default 100)")
    p.add_argument("--ckpt-every", type=int, help="steps between checkpoints (default 500)")
    p.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto (default)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (useful on CUDA)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out exactly")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_attention_args(p)
    p.set_defaults(func=run)
    return p


def add_attention_args(p) -> None:
    """--attention and --chunk-size (train, eval, logits): which equal form of Eq. 4 the forward uses."""
    p.add_argument("--attention", choices=("auto", "full", "chunked"),
                   help="auto (default): chunked from the measured crossover length on, full below | full: one "
                        "T x T score matrix per head | chunked: blocks of --chunk-size tokens, memory linear in T")
    p.add_argument("--chunk-size", type=int, help="tokens per block of the chunked form (implies --attention "
                                                   "chunked; default bdh_gpu.model.AUTO_CHUNK_SIZE)")


def attention_chunk(args):
    """The model's chunk_size for --attention / --chunk-size: "auto", None (full) or a positive int."""
    from bdh_gpu.model import AUTO_CHUNK_SIZE

    form, C = getattr(args, "attention", None), getattr(args, "chunk_size", None)
    if C is not None and C < 1:
        raise ValueError(f"--chunk-size: expected a positive number of tokens, got {C}")
    if C is not None and form in ("auto", "full"):
        raise ValueError(f"--chunk-size: applies to --attention chunked, got --attention {form}")
    if form == "full":
        return None
    if form == "chunked" or C is not None:
        return C or AUTO_CHUNK_SIZE
    return "auto"


def attention_name(chunk) -> str:
    from bdh_gpu.model import AUTO_CHUNK_MIN_T, AUTO_CHUNK_SIZE

    if chunk == "auto":
        return f"auto (chunks of {AUTO_CHUNK_SIZE} from T >= {AUTO_CHUNK_MIN_T}, full below)"
    return "full" if chunk is None else f"chunked (C = {chunk})"


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"--device: expected cpu, cuda, cuda:N or auto, got {device!r}")
    return device


def data_spec(spec: str) -> str:
    """Canonical --data: built-in names as given, file paths absolute (so a resume elsewhere still matches)."""
    if spec in ("tinyshakespeare",) or spec == "recall" or spec.startswith("recall:"):
        return spec
    return os.path.abspath(spec)


def run(args) -> int:
    import torch

    import bdh_gpu
    from bdh_gpu.config import get_preset
    from bdh_gpu.data import make_dataset
    from bdh_gpu.train import TrainConfig, read_train_state, train

    device = resolve_device(args.device)
    chunk = attention_chunk(args)
    if args.resume:
        model = bdh_gpu.load(args.out)
        config = model.config
        _, meta = read_train_state(args.out)
        cfg = TrainConfig.from_dict(meta["train_config"])
        if args.preset is not None:
            want = get_preset(args.preset)
            for f in SHAPE_FIELDS:
                if getattr(want, f) != getattr(config, f):
                    raise ValueError(f"--resume: --preset {args.preset} has {f}={getattr(want, f)}, the checkpoint "
                                     f"in {args.out} has {f}={getattr(config, f)}")
        for f in ("variant", "U", "dropout"):
            if getattr(args, f) is not None and getattr(args, f) != getattr(config, f):
                raise ValueError(f"--resume: --{f} {getattr(args, f)} differs from the checkpoint's "
                                 f"{f}={getattr(config, f)!r}")
    else:
        config = get_preset(args.preset or "tiny")
        for f in ("variant", "U", "dropout"):
            if getattr(args, f) is not None:
                setattr(config, f, getattr(args, f))
        config.validate()
        if args.data is None:
            raise ValueError("--data is required (a file path, tinyshakespeare, or recall)")
        recall = args.data.startswith("recall")
        steps = args.steps if args.steps is not None else 1000
        cfg = TrainConfig(data=data_spec(args.data), steps=steps, lr=3e-3 if recall else 1e-3,
                          block_size=64 if recall else 256, warmup_steps=min(100, max(1, steps // 10)),
                          eval_every=100, ckpt_every=500)
        model = None
    explicit = {"data": None if args.data is None else data_spec(args.data), "steps": args.steps,
                "batch_size": args.batch_size, "block_size": args.block_size, "lr": args.lr,
                "warmup_steps": args.warmup, "seed": args.seed, "eval_every": args.eval_every,
                "ckpt_every": args.ckpt_every}
    for k, v in explicit.items():
        if v is not None:
            setattr(cfg, k, v)
    cfg.device, cfg.compile = device, bool(args.compile)
    cfg.validate()
    data = make_dataset(cfg.data, cfg.block_size)  # errors (missing, empty, too short) before any work
    if model is None:
        torch.manual_seed(cfg.seed)
        model = bdh_gpu.BDH(config)
    model.chunk_size = chunk
    n_params = sum(p.numel() for p in model.parameters())
    print(f"bdh train: {config.variant}/{config.U}, h={config.n_head} d={config.d} N={config.N} "
          f"L={config.n_layer} ({n_params:,} parameters) on {data.name}, {cfg.steps} steps of "
          f"{cfg.batch_size}x{cfg.block_size} bytes, device {device}, attention {attention_name(chunk)}",
          flush=True)
    summary = train(model, data, cfg, args.out, resume=args.resume, progress=False if args.quiet else None,
                    log=print)
    val = summary["val"]
    tail = ""
    if val is not None:
        tail = (f"; val loss {val['loss']:.4f} nats/byte ({val['bits_per_byte']:.4f} bpb), "
                f"accuracy {val['accuracy']:.3f}")
        if getattr(data, "chance", None):
            tail += f" (chance {data.chance:.3f})"
    print(f"done: step {summary['step']} in {summary['seconds']:.1f} s "
          f"({summary.get('tokens_per_s', 0):,.0f} tokens/s){tail}; model in {args.out}")
    return 0
