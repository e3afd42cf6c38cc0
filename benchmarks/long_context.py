"""Long contexts on the CPU: training the `small` BDH-GPU preset at T up to 4096, full vs chunked attention.

    python -m benchmarks.long_context [--quick] [--T 512 1024 2048 4096] [--chunk C] [--steps 3]
                                      [--mem-gb 8] [--time-limit 300] [--json FILE]

Each (form, T) runs in its own child process (batch 1, `small` preset, dropout as the preset, AdamW): `steps`
training steps (forward + backward + update), the first one untimed (warm-up). The child's address space is
capped at --mem-gb GiB (RLIMIT_AS: an allocation beyond it fails, reported as out of memory) and its wall time at
--time-limit seconds (reported as out of time). Reported: training tokens/s over the timed steps and the
child's peak resident memory during the steps (VmHWM, reset after building the model) minus its resident
memory after building the model.
`full` builds one (T x T) score matrix per head and layer (Eq. 4); `chunked` runs blocks of --chunk tokens with
the state carried across them (bdh_gpu/model.py `_attend_chunked`), memory linear in T.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

from bdh_gpu.model import AUTO_CHUNK_SIZE
from benchmarks.common import write_json


def child(T: int, chunk: int | None, steps: int) -> dict:
    import torch

    from bdh_gpu import BDH, Attention
    from bdh_gpu.config import get_preset

    torch.manual_seed(0)
    model = BDH(get_preset("small"), attention=Attention("full") if chunk is None else Attention("chunked", chunk))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 256, (1, T))
    y = torch.randint(0, 256, (1, T))
    from benchmarks.attention import _vm

    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark: building cannot hide the steps
        f.write("5")
    base = _vm("VmRSS")
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x).view(-1, 256), y.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    timed = times[1:] or times
    peak = _vm("VmHWM")
    return {
        "tokens_per_s": T * len(timed) / sum(timed),
        "step_s": sum(timed) / len(timed),
        "peak_rss_mb": peak,
        "peak_above_model_mb": peak - base,
        "loss": float(loss),
    }


def run_one(T: int, chunk: int | None, steps: int, mem_gb: float, time_limit: float) -> dict:
    def limit():
        cap = int(mem_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    cmd = [sys.executable, "-m", "benchmarks.long_context", "--child", str(T), str(chunk or 0), str(steps)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=time_limit, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        return {"status": f"out of time (> {time_limit:.0f} s for {steps} steps)"}
    wall = time.perf_counter() - t0
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode == 0 and lines:
        return {"status": "ok", "wall_s": wall, **json.loads(lines[-1])}
    err = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"
    if "memory" in err.lower() or "alloc" in err.lower() or p.returncode in (-9, 137):
        return {"status": f"out of memory (> {mem_gb:g} GiB address space): {err[:120]}"}
    return {"status": f"failed: {err[:200]}"}


def run(quick: bool = False) -> dict:
    """Entry of `python -m benchmarks`: quick = T 256 and 1024, 2 steps; else T 512..4096, 3 steps."""
    Ts, steps = ([256, 1024], 2) if quick else ([512, 1024, 2048, 4096], 3)
    rows = []
    for T in Ts:
        for form, chunk in (("full", None), ("chunked", AUTO_CHUNK_SIZE)):
            r = run_one(T, chunk, steps, 8.0, 300.0)
            rows.append(
                {
                    "preset": "small",
                    "batch": 1,
                    "T": T,
                    "form": form,
                    "chunk": chunk or "",
                    "tokens_per_s": r.get("tokens_per_s", ""),
                    "peak_rss_mb": r.get("peak_rss_mb", ""),
                    "peak_above_model_mb": r.get("peak_above_model_mb", ""),
                    "status": r["status"],
                }
            )
    return {
        "name": "long_context",
        "title": "Long contexts: training `small` (batch 1, fwd+bwd+AdamW), full T x T "
        "vs chunked attention (8 GiB, 300 s caps)",
        "rows": rows,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.long_context", description=__doc__.split("\n")[0])
    ap.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="T = 256, 1024 and 2 steps")
    ap.add_argument("--T", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    ap.add_argument("--chunk", type=int, default=AUTO_CHUNK_SIZE)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--mem-gb", type=float, default=8.0)
    ap.add_argument("--time-limit", type=float, default=300.0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.child:
        T, chunk, steps = a.child
        print(json.dumps(child(T, chunk or None, steps)))
        return 0
    Ts, steps = ([256, 1024], 2) if a.quick else (a.T, a.steps)
    import torch

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "preset": "small",
        "batch": 1,
        "steps": steps,
        "chunk": a.chunk,
        "mem_gb": a.mem_gb,
        "time_limit_s": a.time_limit,
        "load_avg_start": os.getloadavg()[0],
        "runs": [],
    }
    print(f"{'T':>6} {'form':>8} {'tokens/s':>10} {'step s':>8} {'peak RSS MB':>12} {'above model MB':>15}  status")
    for T in Ts:
        for form, chunk in (("full", None), ("chunked", a.chunk)):
            r = {"T": T, "form": form, **run_one(T, chunk, steps, a.mem_gb, a.time_limit)}
            report["runs"].append(r)
            if r["status"] == "ok":
                print(
                    f"{T:>6} {form:>8} {r['tokens_per_s']:>10,.0f} {r['step_s']:>8.2f} {r['peak_rss_mb']:>12,.0f} "
                    f"{r['peak_above_model_mb']:>15,.0f}  ok",
                    flush=True,
                )
            else:
                print(f"{T:>6} {form:>8} {'-':>10} {'-':>8} {'-':>12} {'-':>15}  {r['status']}", flush=True)
    report["load_avg_end"] = os.getloadavg()[0]
    return write_json(a.json, report)


if __name__ == "__main__":
    sys.exit(main())
