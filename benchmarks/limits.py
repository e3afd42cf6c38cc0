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
    for size in [1024] if quick else [1024, 2048, 4096]:
        rows.append(
            {
                "reference": f"float32 matmul {size}x{size} @ {size}x{size}",
                "value": matmul_flops(size) / 1e9,
                "unit": "GFLOP/s",
            }
        )
    for gib in [0.25] if quick else [1.0]:
        rows.append(
            {
                "reference": f"read bandwidth: torch sum over {gib:g} GiB float32",
                "value": read_bandwidth(gib) / 1e9,
                "unit": "GB/s",
            }
        )
    rows += gemv_rows(quick)
    return {
        "name": "limits",
        "title": "The machine's limits (references for the ratios)",
        "notes": [
            f"torch threads: {torch.get_num_threads()}; best of 3 calls each.",
            "GEMV rows: matrix bytes read per second by torch's matrix-vector product (F.linear "
            "of one row, the decode step's shape n x d = 32768 x 256) in each dtype, over distinct "
            "matrices larger in all than the last-level cache: how fast this torch build's CPU "
            "kernels stream 16-bit weights from memory, which bounds what a 16-bit decode gains.",
        ],
        "rows": rows,
    }


def gemv_rows(quick: bool) -> list:
    """Matrix bytes / s of F.linear(v (1, d), W (n, d)) per dtype over a ring of distinct matrices holding more
    than the last-level cache (1.5 GiB of float32 elements), one pass over the ring per timing, best of 3: the
    rate at which torch's CPU kernels stream weights of that dtype from memory, as a decode step does."""
    from benchmarks.common import best_of

    n, d = (8192, 256) if quick else (32768, 256)
    count = 4 if quick else int(1.5 * 2**30) // (4 * n * d)
    rows = []
    for dt in (torch.float32, torch.bfloat16, torch.float16):
        ring = [torch.empty(n, d, dtype=dt).normal_() for _ in range(count)]
        v = torch.randn(1, d).to(dt)
        nbytes = count * n * d * ring[0].element_size()

        def one_pass():
            for W in ring:  # noqa: F821 (the loop's list, freed by `del ring` after timing)
                torch.nn.functional.linear(v, W)

        one_pass()
        rows.append(
            {
                "reference": f"GEMV read rate, {str(dt).split('.')[-1]}, {count} distinct {n}x{d} matrices "
                f"({nbytes / 2**30:.2g} GiB)",
                "value": nbytes / best_of(one_pass) / 1e9,
                "unit": "GB/s",
            }
        )
        del ring
    return rows


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
