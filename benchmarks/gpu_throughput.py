"""GPU training throughput and MFU of BDH-GPU `paper-25m` vs the released math in its full-attention form.

    python -m benchmarks.gpu_throughput [--T 512 2048 8192] [--tokens-per-step 16384] [--steps 10]
                                        [--chunk 512] [--no-compile] [--json FILE] [--cpu-smoke]

Needs CUDA: without a GPU it prints why and exits 0 (`--cpu-smoke` runs both code paths at a toy size on the
CPU, bf16 autocast included, to show they work; its timings mean nothing).

Two training paths, same parameters, same batches (batch = tokens-per-step / T: 32 x 512 as the released
train.py), AdamW (fused), forward + backward + update, the first steps untimed (warm-up, compilation):
- `released`: `ReleasedMath` below, a straightforward re-statement of the released bdh.py forward: RoPE phases
  formed in float32, one (T x T) score matrix per head and layer, bf16 autocast, torch.compile.
- `ours`: `bdh_gpu.BDH` with chunked attention (no T x T buffer), bf16 autocast with the carried state in
  float32, torch.compile (which fuses the RoPE rotation into its neighbours).
Model FLOPs per token (training = 3 x forward): L (6 n d + T (n + h d)) + 2 d V, the attention term counted
causally (T/2 keys on average, scores and values); MFU = FLOPs/token x tokens/s / the GPU's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from bdh_gpu import BDH, Attention
from bdh_gpu.config import BDHConfig, get_preset
from benchmarks.common import write_json

# dense bf16 peak, FLOP/s (vendor data sheets, without sparsity)
PEAK_BF16 = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 80GB HBM3": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
    "L4": 121e12,
}


def peak_flops(name: str) -> float | None:
    for key, v in PEAK_BF16.items():
        if key in name:
            return v
    return None


class ReleasedMath(nn.Module):
    """The released bdh.py forward, written plainly: full (T x T) attention, float32 RoPE phases.

    Shares the parameters of a `BDH` (official variant): encoder = D_x^T, encoder_v = D_y^T, decoder = E^T.
    """

    def __init__(self, bdh: BDH):
        super().__init__()
        self.bdh = bdh
        C = bdh.config
        q = (torch.arange(C.N, dtype=torch.float32) / 2).floor() * 2
        self.register_buffer("freqs", 1.0 / (C.rope_theta ** (q / C.N)) / (2 * math.pi), persistent=False)

    def forward(self, idx):
        b, C = self.bdh, self.bdh.config
        B, T = idx.shape
        h, N = C.n_head, C.N
        ln = lambda z: F.layer_norm(z, (z.shape[-1],), eps=1e-5)  # noqa: E731
        phase = (
            2
            * math.pi
            * torch.remainder(
                torch.arange(T, device=idx.device, dtype=torch.float32)[:, None] * self.freqs.to(idx.device), 1.0
            )
        )  # (T,N) float32
        cos, sin = phase.cos(), phase.sin()
        causal = torch.ones(T, T, device=idx.device, dtype=torch.bool).tril(-1)
        v = ln(b.embed(idx)).unsqueeze(1)  # (B,1,T,d)
        for _ in range(C.n_layer):
            x = F.relu(v @ b.D_x.mT)  # (B,h,T,N)
            x_sw = torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)
            xr = x * cos.to(x.dtype) + x_sw * sin.to(x.dtype)  # RoPE
            scores = (xr @ xr.mT).masked_fill(~causal, 0.0)  # (B,h,T,T)
            a = ln(scores @ v)  # (B,h,T,d)
            y = F.relu(a @ b.D_y.mT) * x  # (B,h,T,N)
            if self.training and C.dropout > 0:
                y = F.dropout(y, C.dropout)
            Ey = y.transpose(1, 2).reshape(B, 1, T, h * N) @ b.E.mT  # (B,1,T,d)
            v = ln(v + ln(Ey))
        return v.squeeze(1) @ b.lm_head


def flops_per_token(C: BDHConfig, T: int) -> float:
    fwd = C.n_layer * (6 * C.n * C.d + T * (C.n + C.n_head * C.d)) + 2 * C.d * C.vocab_size
    return 3.0 * fwd


def measure(model, params, T, batch, steps, warmup, device, amp, compile_):
    fwd = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.startswith("cuda"))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, T), generator=g).to(device)
    y = torch.randint(0, 256, (batch, T), generator=g).to(device)
    ctx = torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if amp else torch.autocast("cpu", enabled=False)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            t0 = time.perf_counter()
        with ctx:
            loss = F.cross_entropy(fwd(x).float().view(-1, 256), y.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync()
    dt = time.perf_counter() - t0
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    return {"tokens_per_s": batch * T * steps / dt, "step_s": dt / steps, "peak_mem_gib": mem, "loss": float(loss)}


def run(quick: bool = False) -> dict:
    """Entry of `python -m benchmarks`: the full GPU run (quick: T 512 and 2048, 3 steps); no CUDA: one row
    saying it was not measured."""
    title = "GPU training throughput, paper-25m: released full-attention math vs ours (bf16, compile, chunked)"
    if not torch.cuda.is_available():
        return {
            "name": "gpu_throughput",
            "title": title,
            "rows": [{"status": "not measured: no CUDA device on this machine (no GPU lent)"}],
        }
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "gpu.json")
        main((["--T", "512", "2048", "--steps", "3"] if quick else []) + ["--json", out])
        with open(out) as f:
            rep = json.load(f)
    rows = [{"gpu": rep["device"], **{k: v for k, v in r.items() if k != "loss"}} for r in rep["runs"]]
    return {"name": "gpu_throughput", "title": title, "rows": rows}


def measure_T(cfg, T, tps, chunk, steps, warmup, device, comp, peak) -> list:
    """The released math and ours at sequence length T, one printed row each."""
    batch = max(1, tps // T)
    base, runs = None, []
    for path in ("released", "ours"):
        torch.manual_seed(0)
        attention = Attention("full") if path == "released" else Attention("chunked", min(chunk, T))
        model = BDH(cfg, attention=attention).to(device).train()
        net = ReleasedMath(model).to(device) if path == "released" else model
        try:
            r = measure(net, list(model.parameters()), T, batch, steps, warmup, device, True, comp)
        except torch.OutOfMemoryError as e:
            r = {"status": f"out of memory: {str(e).splitlines()[0][:100]}"}
        r.update(T=T, batch=batch, path=path)
        if "tokens_per_s" in r:
            r["mfu"] = flops_per_token(cfg, T) * r["tokens_per_s"] / peak if peak else None
            base = base or (r["tokens_per_s"] if path == "released" else None)
            speed = f"{r['tokens_per_s'] / base:.2f}x" if base and path == "ours" else ""
            mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
            print(
                f"{T:>6} {batch:>5} {path:>9} {r['tokens_per_s']:>12,.0f} {mfu:>6} {r['peak_mem_gib']:>9.1f}  {speed}",
                flush=True,
            )
        else:
            print(f"{T:>6} {batch:>5} {path:>9}  {r['status']}", flush=True)
        runs.append(r)
        del model, net
        if device == "cuda":
            torch.cuda.empty_cache()
    return runs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_throughput", description=__doc__.split("\n")[0])
    ap.add_argument("--T", type=int, nargs="+", default=[512, 2048, 8192])
    ap.add_argument("--tokens-per-step", type=int, default=32 * 512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--cpu-smoke", action="store_true", help="toy size on the CPU: checks the code paths only")
    a = ap.parse_args(argv)
    if a.cpu_smoke:
        cfg, device = BDHConfig(n_head=2, d=16, N=32, n_layer=2, dropout=0.0), "cpu"
        Ts, tps, steps, warmup, comp = [32, 64], 128, 1, 1, False
    elif not torch.cuda.is_available():
        print(
            "gpu_throughput: not run: no CUDA device on this machine (GPU figures: not measured). "
            "Run it on a GPU, or pass --cpu-smoke to check the code paths."
        )
        return 0
    else:
        cfg, device = get_preset("paper-25m"), "cuda"
        Ts, tps, steps, warmup, comp = a.T, a.tokens_per_step, a.steps, a.warmup, not a.no_compile
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke run, timings meaningless)"
    peak = peak_flops(name) if device == "cuda" else None
    report = {
        "device": name,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "torch": torch.__version__,
        "compile": comp,
        "chunk": a.chunk,
        "runs": [],
    }
    print(f"device: {name}")
    print(f"{'T':>6} {'batch':>5} {'path':>9} {'tokens/s':>12} {'MFU':>6} {'peak GiB':>9}  vs released")
    for T in Ts:
        report["runs"] += measure_T(cfg, T, tps, a.chunk, steps, warmup, device, comp, peak)
    return write_json(a.json, report)


if __name__ == "__main__":
    sys.exit(main())
