"""Training on 1 and 2 CPU ranks: tokens/s as a ratio to one process in the same run, per-rank memory DDP vs FSDP.

`python -m benchmarks.dist_train [--quick] [--presets tiny small] [--steps N] [--repeat R] [--json OUT]`
runs `bdh train`
(recall task, no checkpoint until the end) as
- one process with torch's default threads (the reference: ratio 1.00), and with 1 thread;
- `torchrun --nproc-per-node 2` with DDP and with FSDP2 (`--fsdp`), 1 thread per rank (torchrun's default),
with the same global batch, and prints a Markdown table: global tokens/s (from `bdh train --json`, the loop's
own count after the first step), its ratio to the one-process run, each rank's peak RSS, and each rank's bytes
of parameters + gradients + AdamW moments (its shards under FSDP). The machine's load average is printed with
it: on a shared machine the ratios, measured back to back in R interleaved rounds (medians), are what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.common import write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {"tiny": (16, 64), "small": (8, 64), "paper-25m": (4, 64)}  # global batch, block


def _train(kind: str, preset: str, steps: int, out: str) -> dict:
    batch, block = SIZES[preset]
    args = [
        "train",
        "--out",
        out,
        "--preset",
        preset,
        "--data",
        "recall",
        "--steps",
        str(steps),
        "--batch-size",
        str(batch),
        "--block-size",
        str(block),
        "--eval-every",
        str(steps),
        "--ckpt-every",
        str(steps),
        "--quiet",
        "--json",
        "--device",
        "cpu",
    ]
    env = dict(os.environ)
    if kind == "1 process, 1 thread":
        env["OMP_NUM_THREADS"] = "1"
    if kind.startswith("2 ranks"):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "bdh",
            *args,
            *(["--fsdp"] if "FSDP" in kind else []),
        ]
    else:
        cmd = [sys.executable, "-m", "bdh", *args]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=3600)
    if r.returncode != 0:  # the ranks' own messages, not only torchrun's summary
        own = [
            ln
            for ln in r.stderr.splitlines()
            if any(k in ln for k in ("Error", "error:", "terminate", "Abort", "abort", "Fatal", "bdh train:"))
        ]
        raise RuntimeError(f"{kind} {preset}: exit {r.returncode}: {' | '.join(own[-12:])[-1500:]}")
    summary = json.loads([line for line in r.stdout.splitlines() if line.startswith("{")][-1])
    summary["wall_s"] = time.perf_counter() - t0
    return summary


KINDS = ("1 process", "1 process, 1 thread", "2 ranks DDP", "2 ranks FSDP")


def measure(presets, steps: dict, repeat: int = 1) -> list[dict]:
    """Each preset: the four runs in turn, `repeat` rounds (interleaved, so a burst of load hits all kinds);
    tokens/s is the median over the rounds (min-max beside it), the ratio is to the 1-process median."""
    import statistics

    rows = []
    for preset in presets:
        seen = {k: [] for k in KINDS}
        for _ in range(repeat):
            for kind in KINDS:
                with tempfile.TemporaryDirectory() as d:
                    s = _train(kind, preset, steps[preset], os.path.join(d, "run"))
                seen[kind].append(s)
                print(
                    json.dumps({"preset": preset, "run": kind, "tokens_per_s": s.get("tokens_per_s_steady")}),
                    file=sys.stderr,
                    flush=True,
                )
        base = statistics.median(x.get("tokens_per_s_steady", x["tokens_per_s"]) for x in seen[KINDS[0]])
        for kind in KINDS:
            toks = [x.get("tokens_per_s_steady", x["tokens_per_s"]) for x in seen[kind]]
            s = seen[kind][-1]
            rows.append(
                {
                    "preset": preset,
                    "run": kind,
                    "global batch x block": "x".join(map(str, SIZES[preset])),
                    "steps": steps[preset],
                    "rounds": repeat,
                    "tokens/s (median, after step 1)": round(statistics.median(toks), 1),
                    "min-max": f"{min(toks):,.0f}-{max(toks):,.0f}",
                    "ratio to 1 process": round(statistics.median(toks) / base, 2),
                    "peak RSS MiB per rank": ", ".join(f"{b / 2**20:,.0f}" for b in s["peak_rss_bytes_per_rank"]),
                    "params+grads+AdamW MiB per rank": ", ".join(
                        f"{b / 2**20:,.2f}" for b in s["state_bytes_per_rank"]
                    ),
                }
            )
    return rows


def run(quick: bool = False) -> dict:
    """Entry of `python -m benchmarks`."""
    steps = {"tiny": 5, "small": 2} if quick else {"tiny": 40, "small": 8}
    return {
        "name": "dist_train",
        "title": "Training on 1 vs 2 CPU ranks (torchrun, gloo): tokens/s ratio, per-rank memory DDP vs FSDP",
        "rows": measure(list(steps), steps, 1 if quick else 3),
    }


def to_markdown(rows: list[dict]) -> str:
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.dist_train", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"], choices=list(SIZES))
    ap.add_argument("--steps", type=int, help="steps per run (default: tiny 40, small 8, paper-25m 3)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds per preset (default 3)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    default = {"tiny": 5, "small": 2, "paper-25m": 2} if a.quick else {"tiny": 40, "small": 8, "paper-25m": 3}
    steps = {p: a.steps or default[p] for p in a.presets}
    import platform

    import torch

    load0 = os.getloadavg()[0]
    rows = measure(a.presets, steps, a.repeat)
    print(
        f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M')} UTC; load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end. No GPU in this session.\n"
    )
    print(to_markdown(rows))
    return write_json(a.json, rows)


if __name__ == "__main__":
    sys.exit(main())
