"""`bdh demo` (interim): train the `tiny` preset on the recall task, then recall pairs with `generate`.

A placeholder until the demo issue lands: it shows in-context memory held in the recurrent state.
"""
from __future__ import annotations

import os
import tempfile


def add_parser(subparsers):
    p = subparsers.add_parser("demo", help="short train on the recall task + generate (about 2 minutes on CPU)")
    p.add_argument("--out", help="model directory (default: a temporary directory)")
    p.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import torch

    import bdh_gpu
    from bdh_gpu.data import RECALL_KEYS, RECALL_PAIR_BASE, RECALL_SEP, RECALL_VALUES, RecallData
    from bdh_gpu.train import TrainConfig, train

    out = args.out or tempfile.mkdtemp(prefix="bdh-demo-")
    if os.path.exists(os.path.join(out, "train_state.safetensors")):
        raise ValueError(f"{out} already holds a training checkpoint; choose another --out")
    cfg = TrainConfig(data="recall", steps=args.steps, batch_size=32, block_size=64, lr=3e-3,
                      warmup_steps=20, eval_every=50, ckpt_every=args.steps, eval_batches=4)
    data = RecallData(cfg.block_size)
    torch.manual_seed(cfg.seed)
    model = bdh_gpu.BDH(bdh_gpu.get_preset("tiny"))
    print(f"1. train the tiny preset ({sum(p.numel() for p in model.parameters()):,} parameters) on the recall "
          f"task: {data.n_pairs} key-value pairs per window, then queries; chance accuracy {data.chance:.3f}")
    summary = train(model, data, cfg, out, progress=None, log=print)
    print(f"   {summary['step']} steps in {summary['seconds']:.0f} s: held-out answer accuracy "
          f"{summary['val']['accuracy']:.3f}")
    model = bdh_gpu.load(out).eval()
    g = torch.Generator().manual_seed(7)
    keys = torch.randperm(len(RECALL_KEYS), generator=g)[:data.n_pairs].tolist()
    vals = torch.randint(len(RECALL_VALUES), (data.n_pairs,), generator=g).tolist()
    pairs = [RECALL_PAIR_BASE + len(RECALL_VALUES) * k + v for k, v in zip(keys, vals)]
    shown = " ".join(f"{chr(RECALL_KEYS[k])}={chr(RECALL_VALUES[v])}" for k, v in zip(keys, vals))
    print(f"2. a new episode, pairs (one byte each): {shown}")
    prompt, right = pairs + [RECALL_SEP], 0
    order = torch.randperm(data.n_pairs, generator=g).tolist()
    for i in order:
        prompt.append(RECALL_KEYS[keys[i]])
        out_ids = model.generate(torch.tensor([prompt]), 1, temperature=0)  # recurrent decode, greedy
        answer = int(out_ids[0, -1])
        right += answer == RECALL_VALUES[vals[i]]
        print(f"   query {chr(RECALL_KEYS[keys[i]])}: model answers {chr(answer)!r}, stored {chr(RECALL_VALUES[vals[i]])!r}")
        prompt.append(answer)
    print(f"   {right}/{data.n_pairs} recalled from the state; model directory: {out}")
    return 0
