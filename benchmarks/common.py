"""Shared helpers for the benchmarks: the machine, a timer, the machine's limits measured in the same run
(float32 matmul FLOP/s, read bandwidth), and goal rows whose met / not met is computed from the numbers.

The machine is shared, so absolute speeds drift from run to run; every speed a benchmark reports is paired with
one of these references measured in the same process, and the goals are stated as ratios to them.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_avg": round(os.getloadavg()[0], 2),
    }


def machine_line(m: dict | None = None) -> str:
    m = m or machine()
    return (
        f"Machine: {m['cpu']}, {m['cores']} cores (torch threads {m['torch_threads']}), GPU: {m['gpu']}; "
        f"torch {m['torch']}, Python {m['python']}; {m['date']}; load average {m['load_avg']} at the start."
    )


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def best_of(fn, repeats: int = 3) -> float:
    """The fastest of `repeats` calls of fn(), seconds (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_flops(size: int = 2048, repeats: int = 3, device: str = "cpu") -> float:
    """FLOP/s of one large float32 matmul (size x size @ size x size, 2 size^3 FLOPs), best of `repeats`."""
    import torch

    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def one():
        a @ b
        sync()

    one()
    return 2.0 * size**3 / best_of(one, repeats)


def read_bandwidth(gib: float = 1.0, repeats: int = 3, device: str = "cpu") -> float:
    """Read bandwidth, bytes/s: a torch sum over `gib` GiB of float32, best of `repeats` (the issue's yardstick)."""
    import torch

    x = torch.ones(int(gib * 2**30) // 4, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def one():
        x.sum()  # noqa: F821 (the closure's x; `del x` below frees it after timing)
        sync()

    one()
    bw = x.numel() * 4 / best_of(one, repeats)
    del x
    return bw


def goal(text: str, measured: float, target: float, *, unit: str = "x", higher: bool = True, note: str = "") -> dict:
    """A goal row: met is computed from the measured number (never written by hand)."""
    met = measured >= target if higher else measured <= target
    return {
        "goal": text,
        "measured": f"{measured:.3g}{unit}",
        "target": f"{'>=' if higher else '<='} {target:g}{unit}",
        "met": "met" if met else "not met",
        "note": note,
    }


def save_figure(fig, path: str) -> None:
    """A matplotlib figure laid out and written to `path` atomically (a temporary file, then a rename), and closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


def write_json(path: str | None, obj) -> int:
    """A benchmark's closing step: its report as indented JSON at `path` (when --json was given); exit code 0."""
    if path:
        with open(path, "w") as f:
            json.dump(obj, f, indent=1)
    return 0
