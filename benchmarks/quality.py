"""Quality: BDH-GPU vs a GPT-2-style and a Llama-style Transformer at equal parameters and equal tokens.

    python -m benchmarks.quality [--quick] [--profile cpu|gpu] [--tasks tinyshakespeare recall]
                                 [--out DIR] [--json FILE] [--device cpu|cuda]

Every model sees the same batches (one seeded generator per run), the same number of updates and tokens, the
same optimiser (AdamW, warm-up + cosine, `bdh_gpu.train`), and is evaluated on the same validation windows:
tiny Shakespeare bytes (next-byte bits per byte over the last 10% of the file) and the recall task (bits per
scored answer byte and accuracy; chance 1/8). Writes `quality_<profile>.json` and one PNG of loss curves per
task (`quality_<profile>_<task>.png`) into --out (default benchmarks/figures). Results are what they are.

Profiles: `cpu` (default, ~10 minutes on 2 cores), `gpu` (sized for one GPU, bf16 autocast; not run on CPU),
`--quick` (a few steps, a smoke run under a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import sys
import time

import torch

from bdh_gpu import BDH, Attention, BDHConfig
from bdh_gpu.data import RecallData, TextData, read_bytes, tinyshakespeare_path
from bdh_gpu.train import TrainConfig, evaluate, loss_fn, lr_at, make_optimizer
from benchmarks.common import save_figure, write_json

from .baselines import n_params, sized

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED_TINYSHAKESPEARE = os.path.join(HERE, "..", "..", "shared", "data", "tinyshakespeare.txt")
MODELS = ("bdh", "gpt2", "llama")


@dataclasses.dataclass
class Profile:
    bdh: BDHConfig
    n_layer: int  # Transformer depth (BDH's comes from its config)
    n_head: int
    text_block: int
    recall_block: int
    recall_pairs: int
    batch_size: int
    steps: int
    lr: float
    warmup: int
    eval_every: int
    eval_batches: int
    chunk_size: int | None  # BDH attention form (None: full T x T)


PROFILES = {
    # ~131k parameters per model; 2 CPU cores
    "cpu": Profile(
        BDHConfig(n_head=4, d=64, N=128, n_layer=4, dropout=0.0, U="rope"),
        n_layer=4,
        n_head=4,
        text_block=128,
        recall_block=64,
        recall_pairs=8,
        batch_size=8,
        steps=150,
        lr=3e-3,
        warmup=15,
        eval_every=25,
        eval_batches=4,
        chunk_size=None,
    ),
    # ~6.4M parameters per model, the released train.py window and batch; one GPU, bf16 autocast
    "gpu": Profile(
        BDHConfig(n_head=4, d=256, N=2048, n_layer=6, dropout=0.1, U="rope"),
        n_layer=6,
        n_head=8,
        text_block=512,
        recall_block=256,
        recall_pairs=16,
        batch_size=32,
        steps=3000,
        lr=1e-3,
        warmup=200,
        eval_every=250,
        eval_batches=16,
        chunk_size=None,
    ),
    # smoke run
    "quick": Profile(
        BDHConfig(n_head=2, d=32, N=64, n_layer=2, dropout=0.0, U="rope"),
        n_layer=2,
        n_head=2,
        text_block=32,
        recall_block=32,
        recall_pairs=4,
        batch_size=8,
        steps=12,
        lr=3e-3,
        warmup=2,
        eval_every=6,
        eval_batches=2,
        chunk_size=None,
    ),
}


def text_path(explicit: str | None = None) -> str:
    """--data, else `<repo>/../shared/data/tinyshakespeare.txt` (CI), else the bdh_gpu.data download/cache."""
    if explicit:
        return explicit
    if os.path.isfile(SHARED_TINYSHAKESPEARE):
        return os.path.abspath(SHARED_TINYSHAKESPEARE)
    return tinyshakespeare_path()


def build(name: str, prof: Profile, block: int, target: int | None = None):
    if name == "bdh":
        ch = prof.chunk_size
        return BDH(
            dataclasses.replace(prof.bdh), attention=Attention("full") if ch is None else Attention("chunked", ch)
        )
    drop = prof.bdh.dropout
    return sized(name, target, n_layer=prof.n_layer, n_head=prof.n_head, block_size=block, dropout=drop)


def fit(model, data, prof: Profile, device: str, seed: int = 1337, amp: bool = False, log=print) -> dict:
    """Train `model` for prof.steps updates on `data`; returns the loss curve and the final validation."""
    cfg = TrainConfig(
        steps=prof.steps,
        batch_size=prof.batch_size,
        block_size=data.block_size,
        lr=prof.lr,
        warmup_steps=prof.warmup,
        device=device,
    )
    torch.manual_seed(seed)
    model.to(device).train()
    opt = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(seed)  # the same batches for every model
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.startswith("cuda") else contextlib.nullcontext()
    )
    curve, tokens, t0 = [], 0, time.perf_counter()
    for step in range(prof.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        x, y = data.get_batch("train", prof.batch_size, gen)
        x, y = x.to(device), y.to(device)
        with autocast:
            loss = loss_fn(model(x), y)
        lv = float(loss.detach())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += x.numel()
        if (step + 1) % prof.eval_every == 0 or step + 1 == prof.steps:
            val = evaluate(model, data, "val", prof.batch_size, prof.eval_batches, device, autocast if amp else None)
            curve.append(
                {
                    "step": step + 1,
                    "tokens": tokens,
                    "train_loss": lv,
                    "val_bpb": val["bits_per_byte"],
                    "val_acc": val["accuracy"],
                }
            )
            log(
                f"    step {step + 1:5d}  train {lv:.3f} nats  val {val['bits_per_byte']:.3f} bpb  "
                f"acc {val['accuracy']:.3f}  {tokens / (time.perf_counter() - t0):,.0f} tok/s"
            )
    seconds = time.perf_counter() - t0
    return {
        "curve": curve,
        "val_bpb": curve[-1]["val_bpb"],
        "val_acc": curve[-1]["val_acc"],
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
    }


def make_task(task: str, prof: Profile, data_path: str | None):
    if task == "tinyshakespeare":
        return TextData(read_bytes(text_path(data_path)), prof.text_block, name="tinyshakespeare")
    if task == "recall":
        return RecallData(prof.recall_block, n_pairs=prof.recall_pairs)
    raise ValueError(f"unknown task {task!r}; expected tinyshakespeare or recall")


def plot(task: str, results: dict, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, r in results.items():
        toks = [p["tokens"] for p in r["curve"]]
        label = f"{name} ({r['params'] / 1e3:.0f}k)"
        axes[0].plot(toks, [p["val_bpb"] for p in r["curve"]], marker=".", label=label)
        axes[1].plot(toks, [p["train_loss"] / math.log(2) for p in r["curve"]], marker=".", label=label)
    axes[0].set_ylabel("validation bits/byte" + (" (answers)" if task == "recall" else ""))
    axes[1].set_ylabel("train bits/byte (last batch)")
    for ax in axes:
        ax.set_xlabel("training tokens")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


FIGURE_NAME = {"tinyshakespeare": "shakespeare"}  # keeps the data set's name out of committed file names


def run_profile(
    profile: str | Profile = "cpu",
    tasks=("tinyshakespeare", "recall"),
    out_dir: str | None = None,
    device: str = "cpu",
    data_path: str | None = None,
    log=print,
) -> dict:
    """Train the three models on each task; write JSON + PNGs into out_dir; return the results.

    profile: a name in PROFILES, or a Profile (then named "custom")."""
    prof = profile if isinstance(profile, Profile) else PROFILES[profile]
    profile = "custom" if isinstance(profile, Profile) else profile
    out_dir = out_dir or os.path.join(HERE, "figures")
    os.makedirs(out_dir, exist_ok=True)
    amp = profile == "gpu"
    report = {
        "profile": profile,
        "device": device_name(device),
        "date": time.strftime("%Y-%m-%d"),
        "load_avg_start": os.getloadavg()[0],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "tasks": {},
    }
    for task in tasks:
        data = make_task(task, prof, data_path)
        target = n_params(build("bdh", prof, data.block_size))
        log(
            f"[{task}] block {data.block_size}, batch {prof.batch_size}, {prof.steps} steps, "
            f"target {target:,} parameters"
        )
        results = {}
        for name in MODELS:
            model = build(name, prof, data.block_size, target)
            log(f"  {name}: {n_params(model):,} parameters")
            r = fit(model, data, prof, device, amp=amp, log=log)
            r["params"] = n_params(model)
            results[name] = r
        fig = os.path.join(out_dir, f"quality_{profile}_{FIGURE_NAME.get(task, task)}.png")
        plot(
            task,
            results,
            fig,
            f"{task}: {prof.steps} steps x {prof.batch_size} x {data.block_size} bytes, {report['device']}",
        )
        report["tasks"][task] = {"block_size": data.block_size, "figure": os.path.basename(fig), "models": results}
    report["load_avg_end"] = os.getloadavg()[0]
    path = os.path.join(out_dir, f"quality_{profile}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(report, f, indent=1)
    os.replace(path + ".tmp", path)
    report["json"] = path
    return report


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def summary_table(report: dict) -> str:
    """Markdown table of the final validation numbers."""
    lines = [
        "| task | model | parameters | tokens | val bits/byte | val accuracy | train tok/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, t in report["tasks"].items():
        for name, r in t["models"].items():
            lines.append(
                f"| {task} | {name} | {r['params']:,} | {r['tokens']:,} | {r['val_bpb']:.3f} | "
                f"{r['val_acc']:.3f} | {r['tokens_per_s']:,.0f} |"
            )
    return "\n".join(lines)


def run(quick: bool = False) -> dict:
    """Entry of `python -m benchmarks`: the cpu profile (quick: the smoke profile, outputs in a temp dir)."""
    import tempfile

    if quick:
        with tempfile.TemporaryDirectory() as tmp:
            report = run_profile("quick", out_dir=tmp, log=lambda s: None)
    else:
        report = run_profile("cpu")
    rows = [
        {
            "profile": report["profile"],
            "task": task,
            "model": name,
            "params": r["params"],
            "tokens": r["tokens"],
            "val_bits_per_byte": r["val_bpb"],
            "val_accuracy": r["val_acc"],
            "train_tokens_per_s": r["tokens_per_s"],
        }
        for task, t in report["tasks"].items()
        for name, r in t["models"].items()
    ]
    return {
        "name": "quality",
        "title": "Quality: BDH-GPU vs GPT-2-style vs Llama-style at equal parameters and "
        "tokens (validation bits/byte; figures in benchmarks/figures)",
        "rows": rows,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few steps per model (smoke run, < 1 minute)")
    ap.add_argument("--profile", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--tasks", nargs="+", default=["tinyshakespeare", "recall"], choices=["tinyshakespeare", "recall"])
    ap.add_argument("--out", default=None, help="output directory (default benchmarks/figures)")
    ap.add_argument("--data", default=None, help="tiny Shakespeare file (default: ../shared/data or download)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda for --profile gpu)")
    ap.add_argument("--json", default=None, help="also write the results JSON here")
    a = ap.parse_args(argv)
    device = a.device or ("cuda" if a.profile == "gpu" else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"quality --profile {a.profile}: no CUDA device on this machine; not run (use --profile cpu)")
        return 0
    report = run_profile("quick" if a.quick else a.profile, a.tasks, a.out, device, a.data)
    print(summary_table(report))
    return write_json(a.json, report)


if __name__ == "__main__":
    sys.exit(main())
