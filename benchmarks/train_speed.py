"""Training throughput of the token-parallel form: tokens/s of forward + backward + AdamW (float32 on CPU,
bf16 autocast on CUDA), random weights, random bytes. `python -m benchmarks.train_speed [--quick]`."""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks.common import timed

CASES = [("tiny", 16, 256), ("small", 8, 256)]  # preset, batch, block


def run(quick: bool = False) -> dict:
    from bdh_gpu import BDH, get_preset
    from bdh_gpu.train import TrainConfig, _autocast, loss_fn, make_optimizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for preset, B, T in CASES:
        torch.manual_seed(0)
        model = BDH(get_preset(preset)).to(device).train()
        cfg = TrainConfig(device=device)
        opt = make_optimizer(model, cfg)
        x = torch.randint(256, (B, T), device=device)

        def step():
            with _autocast(cfg):
                loss = loss_fn(model(x[:, :-1]), x[:, 1:])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()

        step()  # warm-up
        n = 2 if quick else 5
        _, s = timed(lambda: [step() for _ in range(n)])
        rows.append(
            {
                "preset": preset,
                "batch": B,
                "block": T - 1,
                "steps": n,
                "seconds": s,
                "tokens_per_s": n * B * (T - 1) / s,
                "device": device,
            }
        )
    return {"name": "train_speed", "title": "Training throughput (token-parallel form, fwd+bwd+AdamW)", "rows": rows}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    print(json.dumps(run(ap.parse_args().quick), indent=1))


if __name__ == "__main__":
    main()
