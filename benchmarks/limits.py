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
    return {"name": "limits", "title": "The machine's limits (references for the ratios)",
            "notes": [f"torch threads: {torch.get_num_threads()}; best of 3 calls each."], "rows": rows}


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
