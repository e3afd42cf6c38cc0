"""Decode at the limit: the recurrent form (Eq. 8, state per layer and head, O(1) per token) against the
machine's read bandwidth measured in the same run, 16-bit decoding, batched decoding, and recompute-the-prefix.

    python -m benchmarks.decode [--quick] [--tokens 64] [--rounds 3]

- Dense decode, paper-25m, random weights, `step(sparse=False, inplace=True)`, teacher-forced random bytes.
  Bytes one token must move: per layer the three n x d matrices (D_x, D_y, E: 3nd) once and the state read and
  written (2nd), plus one embedding row and lm_head (d x V): `bytes_per_token`. The limit is read bandwidth /
  bytes_per_token tokens/s; bandwidth = a torch sum over 1 GiB, timed between the decode rounds of the same
  process (every fraction is the median over rounds of that round's ratio).
- 16-bit: `bdh_gpu.model.decoder_in(model, dtype)` (opt-in): weights and state in fp16 or bf16, every product
  accumulated in float32 by the matmul kernels, logits compared with float32 on the same tokens
  (`logit_rel_error` = max |logits16 - logits32| / max |logits32| over all decoded tokens).
- Batched: B = 8 streams at once, tokens/s = 8 x steps/s.
- Sparse: `step(sparse=True)` on a model trained briefly in the same run, at its measured activity, against the
  bytes that step must move at that activity (`sparse_rows`).
- Recompute: the released decoding, the whole prefix for every token, measured (tiny at 1024 tokens, paper-25m
  at 256); a quadratic fit through single forwards is reported beside it (recompute_fitted_s).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from benchmarks.common import goal, read_bandwidth, timed

PROMPT = 16


def bytes_per_token(cfg, itemsize: int, batch: int = 1) -> int:
    n, d, L, V = cfg.n, cfg.d, cfg.n_layer, cfg.vocab_size
    weights = L * 3 * n * d + d * V + d
    state = L * 2 * n * d * batch
    return (weights + state) * itemsize


def decode_rounds(models: dict, tokens: int, rounds: int, batch: dict, gib: float) -> dict:
    """Interleave: per round, the read bandwidth, then `tokens` dense steps of every model. -> per-model lists."""
    ids = torch.randint(0, 256, (max(batch.values()), tokens + 1), generator=torch.Generator().manual_seed(3))
    out = {k: {"s": [], "bw": []} for k in models}
    logits = {}
    for r in range(rounds + 1):  # round 0: warm-up, not counted
        bw = read_bandwidth(gib, repeats=2)
        for k, m in models.items():
            B = batch[k]
            state = m.init_state(B)
            rows = []
            with torch.no_grad():
                t0 = time.perf_counter()
                for t in range(tokens):
                    lg, state = m.step(ids[:B, t], state, sparse=False, inplace=True)
                    if r == 0:
                        rows.append(lg.float())
                dt = time.perf_counter() - t0
            if r == 0:
                logits[k] = torch.stack(rows)
            else:
                out[k]["s"].append(dt)
                out[k]["bw"].append(bw)
    return out, logits


def recompute_generate(model, idx, n):
    """The released decoding: the full forward over the whole prefix for every new token."""
    with torch.no_grad():
        for _ in range(n):
            nxt = model(idx)[:, -1].argmax(-1, keepdim=True)
            idx = torch.cat([idx, nxt], 1)
    return idx


def fit_forward_time(model, lengths):
    ts = []
    with torch.no_grad():
        model(torch.zeros(1, 8, dtype=torch.long))
        for T in lengths:
            x = torch.randint(256, (1, T), generator=torch.Generator().manual_seed(T))
            ts.append(min(timed(model, x)[1] for _ in range(2)))
    return np.polyfit(np.array(lengths, float), np.array(ts), 2)


def recompute_rows(quick: bool) -> list:
    from bdh_gpu import BDH, get_preset

    rows = []
    plan = {"tiny": (256, True)} if quick else {"tiny": (1024, True), "paper-25m": (256, True)}
    for preset, (n, measure) in plan.items():
        torch.manual_seed(0)
        model = BDH(get_preset(preset)).eval()
        idx = torch.randint(256, (1, PROMPT), generator=torch.Generator().manual_seed(1))
        coef = fit_forward_time(model, [32, 64, 128, 256] if quick else [64, 128, 256, 384, 512])
        _, t_rec = timed(model.generate, idx, n, temperature=0)
        fitted = float(np.polyval(coef, np.arange(PROMPT, PROMPT + n, dtype=float)).sum())
        row = {"preset": preset, "new_tokens": n, "recurrent_s": t_rec, "recurrent_tokens_per_s": n / t_rec}
        if measure:
            _, t_full = timed(recompute_generate, model, idx, n)
            row.update(recompute_s=t_full, recompute_fitted_s=fitted, recompute="measured")
        else:
            row.update(recompute_s=fitted, recompute="FITTED")
        row["speedup"] = row["recompute_s"] / t_rec
        rows.append(row)
    return rows


def train_briefly(preset: str, steps: int, seed: int = 0):
    """A `preset` official model trained `steps` updates on tiny Shakespeare (8 x 128 bytes per step) by
    `bdh_gpu.train.train`, the loop of `bdh train` (checkpoints into a temporary directory): trained enough that
    its activity is its own, not the random init's ~50% of x. -> (model, text bytes)."""
    import tempfile

    from bdh_gpu import BDH, get_preset
    from bdh_gpu.data import TextData, read_bytes
    from bdh_gpu.train import TrainConfig, train
    from benchmarks.quality import SHARED_TINYSHAKESPEARE

    raw = read_bytes(SHARED_TINYSHAKESPEARE)
    torch.manual_seed(seed)
    cfg = get_preset(preset)
    cfg.dropout = 0.0
    model = BDH(cfg)
    tc = TrainConfig(
        data="tinyshakespeare",
        steps=steps,
        batch_size=8,
        block_size=128,
        warmup_steps=min(10, steps),
        eval_every=steps,
        eval_batches=1,
        ckpt_every=steps,
        seed=seed + 1,
    )
    with tempfile.TemporaryDirectory(prefix="bdh-decode-bench-") as out:
        train(model, TextData(raw, block_size=128), tc, out, progress=False, log=lambda s: None)
    return model.eval(), raw[-4096:]


def sparse_rows(quick: bool, rounds: int, gib: float) -> tuple[list, dict]:
    """Dense vs sparse decode of a briefly trained model at its measured activity, each against the bytes that
    step must move. Sparse (`step(sparse=True)`), per layer: D_x whole (x = (D_x v)^+ needs every row: n d),
    the active rows of D_y (f_x n d), of the state (read once and written once: 2 f_x n d) and the active
    columns of E (f_y n d), plus lm_head (d V); f_x, f_y measured on the decoded tokens (x > 0, y > 0)."""
    preset, steps, tokens = ("tiny", 20, 32) if quick else ("small", 150, 128)
    model, text = train_briefly(preset, steps)
    cfg = model.config
    ids = torch.tensor(list(text[: tokens + 8]))
    with torch.no_grad():
        tr = model.trace(ids)  # x, y: (L, T, n); the timed tokens are 8:
    fx = [float((tr["x"][l][8:] > 0).float().mean()) for l in range(cfg.n_layer)]
    fy = [float((tr["y"][l][8:] > 0).float().mean()) for l in range(cfg.n_layer)]
    n, d, V = cfg.n, cfg.d, cfg.vocab_size
    need = {
        False: 4 * (cfg.n_layer * 5 * n * d + d * V),
        True: 4 * (sum(n * d + 3 * a * n * d + b * n * d for a, b in zip(fx, fy)) + d * V),
    }
    times = {False: [], True: []}
    bws = []
    for r in range(rounds + 1):  # round 0: warm-up
        bw = read_bandwidth(gib, repeats=2)
        for sparse in (False, True):
            state = model.init_state(1)
            with torch.no_grad():
                for t in range(8):
                    _, state = model.step(ids[t : t + 1], state, sparse=sparse, inplace=True)
                t0 = time.perf_counter()
                for t in range(8, tokens + 8):
                    _, state = model.step(ids[t : t + 1], state, sparse=sparse, inplace=True)
                dt = time.perf_counter() - t0
            if r:
                times[sparse].append(dt)
        if r:
            bws.append(bw)
    rows = []
    for sparse in (False, True):
        s = times[sparse]
        rows.append(
            {
                "preset": f"{preset} trained {steps} steps",
                "decode": "float32 sparse" if sparse else "float32 dense",
                "batch": 1,
                "tokens": tokens,
                "active_x": statistics.mean(fx),
                "active_y": statistics.mean(fy),
                "tokens_per_s": statistics.median(tokens / x for x in s),
                "bytes_per_step_MB": need[sparse] / 1e6,
                "read_GB_s": statistics.median(bws) / 1e9,
                "fraction_of_bandwidth": statistics.median(tokens * need[sparse] / x / b for x, b in zip(s, bws)),
                "speed_vs_float32": statistics.median(a / x for a, x in zip(times[False], s)),
            }
        )
    return rows, {"preset": preset, "steps": steps}


def run(quick: bool = False, tokens: int | None = None, rounds: int | None = None) -> dict:
    preset = "small" if quick else "paper-25m"
    tokens = tokens or (16 if quick else 64)
    rounds = rounds or (1 if quick else 3)
    gib = 0.25 if quick else 1.0
    rows = dense_rows(preset, tokens, rounds, gib)
    sparse, trained = sparse_rows(quick, rounds, gib)
    rows += sparse
    rec = recompute_rows(quick)
    notes = [
        f"Dense decode: {tokens} teacher-forced tokens per round, {rounds} rounds after a warm-up round; "
        "read bandwidth timed in each round (torch sum over "
        f"{gib:g} GiB); fraction_of_bandwidth = tokens/s x bytes_per_step / that round's bandwidth.",
        "16-bit: weights and state stored in 16 bits, float32 accumulation in the kernels; "
        "logit_rel_error over the same tokens against float32.",
        "Sparse: a model trained briefly in this run (row preset), teacher-forced on the last bytes of tiny "
        "Shakespeare; active_x, active_y = share of x > 0, y > 0 on those tokens; bytes per step = the bytes "
        "the sparse step must move at that activity (per layer D_x whole, the active rows of D_y and of the "
        "state read and written once, the active columns of E; see sparse_rows).",
        "Recompute: measured (the whole prefix per token); recompute_fitted_s is the quadratic fit through "
        "single forwards, for comparison.",
    ]
    return {
        "name": "decode",
        "title": "Decode at the limit: recurrent form vs read bandwidth, 16-bit, batched, recompute",
        "notes": notes,
        "rows": rows + rec,
        "goals": decode_goals(preset, rows, sparse[-1], rec[-1]),
    }


def dense_rows(preset, tokens, rounds, gib) -> list:
    """float32, float16, bfloat16 and float32 at B = 8: tokens/s and the fraction of the read bandwidth."""
    from bdh_gpu import BDH, get_preset
    from bdh_gpu.model import decoder_in

    torch.manual_seed(0)
    cfg = get_preset(preset)
    cfg.dropout = 0.0
    m32 = BDH(cfg).eval()
    models = {
        "float32": m32,
        "float16": decoder_in(m32, torch.float16),
        "bfloat16": decoder_in(m32, torch.bfloat16),
        "float32 B=8": m32,
    }
    batch = {"float32": 1, "float16": 1, "bfloat16": 1, "float32 B=8": 8}
    res, logits = decode_rounds(models, tokens, rounds, batch, gib)
    rows = []
    ref = logits["float32"]
    for k in models:
        B = batch[k]
        item = 2 if k in ("float16", "bfloat16") else 4
        bpt = bytes_per_token(cfg, item, B)
        s, bw = res[k]["s"], res[k]["bw"]
        row = {
            "preset": preset,
            "decode": k,
            "batch": B,
            "tokens": tokens,
            "tokens_per_s": statistics.median(B * tokens / x for x in s),
            "bytes_per_step_MB": bpt / 1e6,
            "read_GB_s": statistics.median(bw) / 1e9,
            "fraction_of_bandwidth": statistics.median(tokens * bpt / x / b for x, b in zip(s, bw)),
            "speed_vs_float32": statistics.median(a / x for a, x in zip(res["float32"]["s"], s)) * B,
        }
        if k in ("float16", "bfloat16"):
            row["logit_rel_error"] = float((logits[k] - ref).abs().max() / ref.abs().max())
        rows.append(row)
    return rows


def decode_goals(preset, rows, sp_row, last) -> list:
    """The decode section's goals, computed from the measured rows."""
    by = {r["decode"]: r for r in rows}
    best16 = max(("float16", "bfloat16"), key=lambda k: by[k]["speed_vs_float32"])
    return [
        goal(
            f"{preset} float32 dense decode / read bandwidth (bytes: 3nd weights + 2nd state per layer)",
            by["float32"]["fraction_of_bandwidth"],
            0.9,
            unit="",
        ),
        goal(
            f"{preset} 16-bit decode ({best16}, opt-in) vs float32, tokens/s",
            by[best16]["speed_vs_float32"],
            1.6,
            note=f"logit error vs float32 {by[best16]['logit_rel_error']:.2g} (relative to max |logit|)",
        ),
        goal(
            f"{sp_row['preset']}: sparse decode at its measured activity (x {sp_row['active_x']:.2f}, "
            f"y {sp_row['active_y']:.2f}) / read bandwidth for the bytes that step moves",
            sp_row["fraction_of_bandwidth"],
            0.8,
            unit="",
            note=f"sparse {sp_row['speed_vs_float32']:.2f}x dense on the same model",
        ),
        goal(
            f"{last['preset']} recurrent vs recompute at {last['new_tokens']} tokens ({last['recompute']} recompute)",
            last["speedup"],
            50.0,
        ),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tokens", type=int)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--write", action="store_true", help="write this section of benchmarks/RESULTS.md")
    a = ap.parse_args()
    r = run(a.quick, a.tokens, a.rounds)
    print(json.dumps(r, indent=1))
    if a.write:
        import sys

        from benchmarks.__main__ import write_section

        r["notes"].insert(0, "Command: `python -m benchmarks.decode " + " ".join(sys.argv[1:]) + "`.")
        print("wrote", write_section(r, a.quick))


if __name__ == "__main__":
    main()
