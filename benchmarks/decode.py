"""Decode speed: the recurrent form (state per layer and head, O(1) per token) against recomputing the whole
prefix for every new token (what the released `generate` does). Random weights, greedy decoding, a 16-byte
prompt. `python -m benchmarks.decode [--quick]`.

Recompute times that would take too long (paper-25m) are FITTED: single forwards are timed at several prefix
lengths, a quadratic a + bT + cT^2 is fitted by least squares, and the sum over the prefixes is reported with
`fitted: true`. The fit is checked on `tiny`, where the full recompute is also measured.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from benchmarks.common import timed

PROMPT = 16


def recompute_generate(model, idx, n):
    """The released decoding: the full forward over the whole prefix for every new token."""
    with torch.no_grad():
        for _ in range(n):
            nxt = model(idx)[:, -1].argmax(-1, keepdim=True)
            idx = torch.cat([idx, nxt], 1)
    return idx


def fit_forward_time(model, idx0, lengths):
    """Time one forward at each prefix length; least-squares quadratic in T."""
    ts = []
    with torch.no_grad():
        model(idx0[:, :8])
        for T in lengths:
            x = torch.randint(256, (1, T), generator=torch.Generator().manual_seed(T))
            ts.append(min(timed(model, x)[1] for _ in range(2)))
    coef = np.polyfit(np.array(lengths, float), np.array(ts), 2)
    return coef, dict(zip(lengths, ts))


def run(quick: bool = False) -> dict:
    from bdh_gpu import BDH, get_preset

    rows = []
    plan = {"tiny": ([256] if quick else [256, 1024], True), "paper-25m": ([64] if quick else [256, 1024], False)}
    for preset, (news, measure_recompute) in plan.items():
        torch.manual_seed(0)
        model = BDH(get_preset(preset)).eval()
        idx = torch.randint(256, (1, PROMPT), generator=torch.Generator().manual_seed(1))
        fit_lengths = [32, 64, 128, 256] if quick else [64, 128, 256, 384, 512]
        coef, samples = fit_forward_time(model, idx, fit_lengths)
        for n in news:
            _, t_rec = timed(model.generate, idx, n, temperature=0)
            row = {"preset": preset, "new_tokens": n, "recurrent_s": t_rec, "recurrent_tokens_per_s": n / t_rec}
            prefixes = np.arange(PROMPT, PROMPT + n, dtype=float)
            fitted = float(np.polyval(coef, prefixes).sum())
            if measure_recompute:
                _, t_full = timed(recompute_generate, model, idx, n)
                row.update(recompute_s=t_full, recompute_fitted_s=fitted, fitted=False)
            else:
                row.update(recompute_s=fitted, fitted=True)
            row["speedup"] = row["recompute_s"] / t_rec
            rows.append(row)
        rows[-1]["fit_samples_s"] = {str(k): round(v, 4) for k, v in samples.items()}
    return {"name": "decode", "title": "Decode: recurrent form vs recompute-the-prefix (released generate)",
            "rows": rows}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    print(json.dumps(run(ap.parse_args().quick), indent=1))


if __name__ == "__main__":
    main()
