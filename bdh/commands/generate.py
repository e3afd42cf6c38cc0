"""`bdh generate`: sample bytes from a model directory with the recurrent form (O(1) per token)."""

from __future__ import annotations

import json
import sys
import time

from bdh.errors import InputError
from bdh.options import add_device, add_threads, count, prompt_bytes, real, resolve_device, set_threads

MAX_PROMPT_BYTES = 1_000_000
MAX_NEW_TOKENS = 1_000_000  # the completion is held in memory: 8 bytes per token


def add_parser(subparsers):
    p = subparsers.add_parser(
        "generate",
        help="sample text with the recurrent form",
        description="Sample bytes after a prompt, decoding with the recurrent state.",
    )
    p.add_argument("model_dir", metavar="DIR", help="model directory (config.json + model.safetensors)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", type=prompt_bytes, help="prompt text (its bytes as typed, utf-8 or not)")
    src.add_argument("--prompt-file", help="file whose bytes are the prompt")
    p.add_argument("--tokens", type=count(0, MAX_NEW_TOKENS), default=256, help="new bytes to generate (default 256)")
    p.add_argument("--temperature", type=real(0.0), default=1.0, help="0 = greedy (default 1.0)")
    p.add_argument("--top-k", type=count(1, 256), default=None, help="sample among the k most likely bytes")
    p.add_argument("--seed", type=count(0, 2**63 - 1), default=1337, help="sampling seed (default 1337)")
    add_device(p)
    add_threads(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text")
    p.set_defaults(func=run)
    return p


def _flag(args) -> str:
    return "--prompt" if args.prompt is not None else f"--prompt-file {args.prompt_file}"


def read_prompt(args) -> bytes:
    if args.prompt is not None:
        prompt = args.prompt
    else:
        from bdh.errors import read_input

        prompt = read_input(args.prompt_file, "--prompt-file", MAX_PROMPT_BYTES)
    if not prompt:
        raise InputError(f"{_flag(args)}: the prompt is empty, expected at least 1 byte")
    if len(prompt) > MAX_PROMPT_BYTES:
        raise InputError(
            f"{_flag(args)}: the prompt is longer than allowed: expected at most {MAX_PROMPT_BYTES:,} "
            "bytes, "
            f"got {'more' if args.prompt is None else f'{len(prompt):,}'}"
        )
    return prompt


def run(args) -> int:
    set_threads(args)  # before torch is imported: its OpenMP reads the wait policy then
    import torch

    from bdh.budget import check_generate
    from bdh.errors import load_model

    prompt = read_prompt(args)
    device = resolve_device(args.device)
    check_generate(args.model_dir, len(prompt), args.tokens, {"--tokens": args.tokens})  # before any allocation
    model = load_model(args.model_dir, map_location=device).eval()
    if max(prompt) >= model.config.vocab_size:  # found by the config.json fuzz (tests/test_budget.py)
        raise InputError(
            f"{_flag(args)}: byte {max(prompt)} is outside the model's vocabulary of {model.config.vocab_size}"
        )
    idx = torch.tensor(list(prompt), dtype=torch.long, device=device)[None]
    gen = torch.Generator(device=device).manual_seed(args.seed)
    t0 = time.perf_counter()
    out = model.generate(idx, args.tokens, temperature=args.temperature, top_k=args.top_k, generator=gen)
    seconds = time.perf_counter() - t0
    ids = out[0, len(prompt) :].tolist()
    text = bytes(ids).decode("utf-8", errors="replace")
    tps = len(ids) / seconds if seconds > 0 else float("inf")
    if args.json:
        print(
            json.dumps(
                {
                    "completion_ids": ids,
                    "completion": text,
                    "tokens_per_s": tps,
                    "prompt_tokens": len(prompt),
                    "new_tokens": len(ids),
                    "seconds": seconds,
                }
            )
        )
    else:
        sys.stdout.write(prompt.decode("utf-8", errors="replace") + text + "\n")
        print(
            f"[{len(ids)} bytes in {seconds:.2f} s, {tps:,.1f} tokens/s, prompt {len(prompt)} bytes]", file=sys.stderr
        )
    return 0
