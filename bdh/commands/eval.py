"""`bdh eval`: held-out loss and bits per byte of a model directory on a dataset."""

from __future__ import annotations

import json
import math
import os

from bdh.options import add_attention, add_device, add_threads, count, parse_attention, resolve_device, set_threads


def add_parser(subparsers):
    p = subparsers.add_parser(
        "eval",
        help="held-out loss and bits per byte",
        description="Evaluate a model on the validation split of a dataset (the last 10% "
        "of a file; fixed episodes for recall): mean loss in nats per byte, bits "
        "per byte and next-byte accuracy.",
    )
    p.add_argument("model_dir", metavar="DIR", help="model directory")
    p.add_argument("--data", required=True, help="file path | tinyshakespeare | recall[:K]")
    p.add_argument(
        "--split",
        default="val",
        choices=("val", "train"),
        help="val (default: the held-out last 10%%) or train (the first 90%%)",
    )
    p.add_argument("--block-size", type=count(1), help="bytes per window (default: the training run's, else 256)")
    p.add_argument("--batch-size", type=count(1), default=16, help="windows per batch (default 16)")
    p.add_argument("--max-batches", type=count(1), default=50, help="at most this many batches (default 50)")
    add_device(p)
    add_threads(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_attention(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    set_threads(args)  # before torch is imported: its OpenMP reads the wait policy then
    from bdh.budget import check_forward
    from bdh.errors import InputError, load_model
    from bdh_gpu.checkpoint import TRAIN_STATE_JSON
    from bdh_gpu.data import make_dataset
    from bdh_gpu.train import evaluate

    device = resolve_device(args.device)
    attention = parse_attention(args)
    block = args.block_size
    if block is None:
        block = 256
        state = os.path.join(args.model_dir, TRAIN_STATE_JSON)
        if os.path.isfile(state):
            try:
                with open(state) as f:
                    block = int(json.load(f)["train_config"]["block_size"])
            except (ValueError, KeyError, TypeError) as e:
                raise InputError(
                    f"{state}: unreadable training state ({type(e).__name__}); pass --block-size"
                ) from None
    flags = {"--block-size": args.block_size, "--batch-size": args.batch_size}
    check_forward(args.model_dir, args.batch_size, block, attention, flags)  # before any allocation
    model = load_model(args.model_dir, map_location=device)
    model.attention = attention
    data = make_dataset(args.data, block)
    top = max(int(d.max()) for d in data.splits.values()) if hasattr(data, "splits") else 255  # recall: all bytes
    if top >= model.config.vocab_size:  # found by the config.json fuzz (tests/test_budget.py)
        raise InputError(
            f"--data {args.data}: byte {top} is outside the model's vocabulary of {model.config.vocab_size}"
        )
    r = evaluate(model, data, args.split, args.batch_size, args.max_batches, device)
    r.update(data=data.name, split=args.split, block_size=block)
    if not math.isfinite(r["loss"]):
        raise InputError(
            f"{args.model_dir}: the loss on {data.name} is {r['loss']} (its weights are finite, its forward "
            "overflows): not a usable model"
        )
    if args.json:
        print(json.dumps(r))
    else:
        print(
            f"{data.name} ({args.split}, {r['scored_bytes']:,} scored bytes, block {block}): "
            f"loss {r['loss']:.4f} nats/byte, {r['bits_per_byte']:.4f} bits/byte, accuracy {r['accuracy']:.4f}"
        )
    return 0
