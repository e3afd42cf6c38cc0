"""The machine's yardsticks, measured now: float32 matmul FLOP/s and read bandwidth (torch sum over 1 GiB).

    python -m benchmarks.limits

Every other section measures its own references in its own run (speeds are stated as fractions of them); this
section only shows how far they drift between runs on a shared machine.
"""
from __future__ import annotations

import json

import torch

from benchmarks.common import matmul_flops, read_bandwidth


def run(quick: bool = False) -> dict:
    rows = []
    for size in ([1024] if quick else [1024, 2048, 4096]):
        rows.append({"reference": f"float32 matmul {size}x{size} @ {size}x{size}",
                     "value": matmul_flops(size) / 1e9, "unit": "GFLOP/s"})
    for gib in ([0.25] if quick else [1.0]):
        rows.append({"reference": f"read bandwidth: torch sum over {gib:g} GiB float32",
                     "value": read_bandwidth(gib) / 1e9, "unit": "GB/s"})
    rows += gemv_rows(quick)
    return {"name": "limits", "title": "The machine's limits (references for the ratios)",
            "notes": [f"torch threads: {torch.get_num_threads()}; best of 3 calls each.",
                      "GEMV rows: bytes of the matrix read per second by torch's matrix-vector product "
                      "(F.linear of one row, the decode step's shape: n x d = 32768 x 256) in each dtype: "
                      "the rate at which this torch build's kernels can stream 16-bit weights, which bounds "
                      "what a 16-bit decode can gain over float32."], "rows": rows}


def gemv_rows(quick: bool) -> list:
    """Matrix bytes / s of F.linear(v (1, d), W (n, d)) per dtype, best of 3 (of 10 calls each)."""
    from benchmarks.common import best_of
    n, d = (8192, 256) if quick else (32768, 256)
    rows = []
    for dt in (torch.float32, torch.bfloat16, torch.float16):
        W, v = torch.randn(n, d).to(dt), torch.randn(1, d).to(dt)

        def ten():
            for _ in range(10):
                torch.nn.functional.linear(v, W)
        ten()
        rows.append({"reference": f"GEMV read rate, {str(dt).split('.')[-1]} {n}x{d}",
                     "value": 10 * W.numel() * W.element_size() / best_of(ten) / 1e9, "unit": "GB/s"})
    return rows


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
