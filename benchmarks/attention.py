"""Train step (forward + backward) of the `small` shapes (4 layers, d = 128, n = 4096, 4 heads, batch 1) by
attention form: the released full-attention math, ours full (T x T), ours chunked (C = 128, 256, 512) and
`auto` (what training, eval, prefill and `bdh logits` use by default). The crossover T of `auto`
(bdh_gpu/model.py AUTO_CHUNK_MIN_T, AUTO_CHUNK_SIZE) is read off this table.

    python -m benchmarks.attention [--quick] [--T 256 512 1024 2048 4096] [--rounds 3]

Timing: the forms run in turn, round after round, in one process (A B C ... A B C ...), and every speed is the
median over rounds of a ratio to the released form timed in the same round, so drift of a shared machine
cancels. Achieved FLOP/s: the matmul FLOPs of the form used (training = 3 x forward: every matmul's backward is
two matmuls of the same size), over the step time, as a fraction of a 2048^3 float32 matmul timed in the same
round. Memory: one child process per (form, T), peak resident memory above the built model (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from benchmarks.common import goal, matmul_flops

CHUNKS = (128, 256, 512)


def make(seed: int = 0):
    from bdh_gpu import BDH, get_preset
    from benchmarks.gpu_throughput import ReleasedMath

    torch.manual_seed(seed)
    cfg = get_preset("small")
    cfg.dropout = 0.0
    model = BDH(cfg).train()
    return model, ReleasedMath(model).train()


def form_chunk(form: str, T: int):
    """The chunk size a form runs at T (None = full T x T)."""
    from bdh_gpu.model import Attention

    if form in ("released", "full"):
        return None
    if form == "auto":
        return Attention("auto").chunk_for(T)
    return int(form[1:])


def as_attention(chunk):
    """The bdh_gpu.Attention that runs chunks of `chunk` tokens (None: the full form)."""
    from bdh_gpu.model import Attention

    return Attention("full") if chunk is None else Attention("chunked", chunk)


def matmul_flops_forward(cfg, T: int, chunk) -> float:
    """Matmul FLOPs of one forward (batch 1) of the official variant in the form given (chunk None = full)."""
    h, N, d, n, L, V = cfg.n_head, cfg.N, cfg.d, cfg.n, cfg.n_layer, cfg.vocab_size
    per_layer = 3 * 2 * T * n * d  # D_x, D_y, E
    if chunk is None or chunk >= T:
        per_layer += 2 * h * T * T * (N + d)  # scores and values, all T x T
    else:
        sizes = [min(chunk, T - c0) for c0 in range(0, T, chunk)]
        per_layer += sum(2 * h * c * c * (N + d) for c in sizes)  # in-chunk blocks
        per_layer += sum(2 * h * c * N * d for c in sizes[1:])  # read the state
        per_layer += sum(2 * h * c * N * d for c in sizes[:-1])  # write the state
    return L * per_layer + 2 * T * d * V


def time_forms(Ts, forms, rounds, log=print) -> list:
    model, rel = make()
    rows = []
    for T in Ts:
        x = torch.randint(0, 256, (1, T), generator=torch.Generator().manual_seed(T))
        y = torch.randint(0, 256, (1, T), generator=torch.Generator().manual_seed(T + 1))

        def step(form):
            out = rel(x) if form == "released" else model(x, attention=as_attention(form_chunk(form, T)))
            F.cross_entropy(out.view(-1, 256), y.view(-1)).backward()
            for p in model.parameters():
                p.grad = None

        secs = {f: [] for f in forms}
        ref = []
        for f in forms:
            step(f)  # warm-up
        for _ in range(rounds):
            ref.append(matmul_flops(2048, repeats=2))
            for f in forms:
                t0 = time.perf_counter()
                step(f)
                secs[f].append(time.perf_counter() - t0)
        for f in forms:
            ch = form_chunk(f, T)
            fl = 3 * matmul_flops_forward(model.config, T, ch)
            ratio = statistics.median(r / s for r, s in zip(secs["released"], secs[f]))
            frac = statistics.median(fl / s / m for s, m in zip(secs[f], ref))
            rows.append(
                {
                    "T": T,
                    "form": f,
                    "chunk": ch or "full",
                    "step_s": statistics.median(secs[f]),
                    "tokens_per_s": T / statistics.median(secs[f]),
                    "speed_vs_released": ratio,
                    "GFLOP_per_step": fl / 1e9,
                    "achieved_GFLOP_s": fl / statistics.median(secs[f]) / 1e9,
                    "fraction_of_matmul": frac,
                }
            )
            log(json.dumps(rows[-1]))
        log(f"T={T}: float32 2048^3 matmul {statistics.median(ref) / 1e9:.1f} GFLOP/s (median of {rounds})")
    return rows


MATMUL_OPS = ("aten::bmm", "aten::mm", "aten::baddbmm", "aten::addmm", "aten::baddbmm_")


def profile_split(T: int, form: str = "auto") -> dict:
    """Where one train step of `form` at T spends its time (torch.profiler, one step after a warm-up): the share
    in the matmul kernels, and the FLOP/s inside them as a fraction of a 2048^3 float32 matmul timed just before.
    Says whether the FLOP fraction is lost in the products themselves or in the elementwise passes around them."""
    from torch.profiler import profile

    model, _ = make()
    x = torch.randint(0, 256, (1, T), generator=torch.Generator().manual_seed(T))
    ch = form_chunk(form, T)

    def step():
        F.cross_entropy(model(x, attention=as_attention(ch)).view(-1, 256), x.view(-1)).backward()
        for p in model.parameters():
            p.grad = None

    step()
    ref = matmul_flops(2048, repeats=2)
    t0 = time.perf_counter()
    with profile() as prof:
        step()
    wall = time.perf_counter() - t0
    mm = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMUL_OPS) / 1e6
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e6
    fl = 3 * matmul_flops_forward(model.config, T, ch)
    return {
        "T": T,
        "form": form,
        "chunk": ch or "full",
        "profiled_step_s": wall,
        "matmul_share_of_step": mm / total,
        "in_matmul_fraction_of_reference": fl / mm / ref,
    }


def _vm(field: str) -> float:
    """A /proc/self/status memory field (VmRSS, VmHWM) in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"/proc/self/status has no {field}")


def child_memory(T: int, form: str) -> dict:
    """Peak resident memory of one fwd + bwd step above the resident memory before it (MB). The peak is reset
    after building the model (`echo 5 > /proc/self/clear_refs` resets VmHWM), so a larger peak while building
    cannot hide the step's."""
    model, rel = make()
    x = torch.randint(0, 256, (1, T))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _vm("VmRSS")
    out = rel(x) if form == "released" else model(x, attention=as_attention(form_chunk(form, T)))
    F.cross_entropy(out.view(-1, 256), x.view(-1)).backward()
    return {"peak_above_model_mb": _vm("VmHWM") - base}


def memory(T: int, form: str) -> float:
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.attention", "--child", str(T), form],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if r.returncode != 0:
        raise RuntimeError(f"memory child T={T} {form}: {r.stderr.strip().splitlines()[-1:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])["peak_above_model_mb"]


def crossover(rows) -> tuple:
    """(smallest T from which the best chunked form beats full at every larger T measured, its best C)."""
    by = {(r["T"], r["form"]): r["speed_vs_released"] for r in rows}
    Ts = sorted({r["T"] for r in rows})
    best = {
        T: max((f for f in (f"c{c}" for c in CHUNKS) if (T, f) in by), key=lambda f: by[(T, f)], default=None)
        for T in Ts
    }
    wins = [T for T in Ts if best[T] and by[(T, best[T])] > by[(T, "full")]]
    start = next((T for T in Ts if all(t in wins for t in Ts if t >= T)), None)
    return start, (int(best[max(Ts)][1:]) if start is not None else None)


def run(quick: bool = False, Ts=None, rounds=None, log=lambda s: None, chunks=CHUNKS) -> dict:
    Ts = Ts or ([256, 1024] if quick else [256, 512, 1024, 2048, 4096])
    rounds = rounds or (1 if quick else 3)
    forms = ["released", "full"] + [f"c{c}" for c in chunks] + ["auto"]
    rows = time_forms(Ts, forms, rounds, log)
    mem_Ts = [T for T in Ts if T >= 1024] or Ts[-1:]
    mem = {T: {f: memory(T, f) for f in ("released", "auto")} for T in mem_Ts}
    out = summarize(rows, mem, rounds)
    for T in [T for T in Ts if T >= 2048] or Ts[-1:]:
        sp = profile_split(T)
        out["notes"].append(
            f"Profile of one auto step at T = {T} (chunk {sp['chunk']}): {sp['matmul_share_of_step']:.0%} "
            f"of the time in matmul kernels, which run at {sp['in_matmul_fraction_of_reference']:.2f} of "
            "the 2048^3 reference; the rest is elementwise passes (relu, the gate product, RoPE, "
            "LayerNorm, their backwards, concatenation) that the FLOP count leaves out."
        )
    return out


def summarize(rows, mem, rounds) -> dict:
    """The section from the timed rows and the memory per (T, form) ({} if not measured)."""
    from bdh_gpu import model as M

    Ts = sorted({r["T"] for r in rows})
    forms = list(dict.fromkeys(r["form"] for r in rows))
    for r in rows:
        if r["T"] in mem and r["form"] in mem[r["T"]]:
            r["peak_above_model_mb"] = mem[r["T"]][r["form"]]
    start, C = crossover(rows)
    by = {(r["T"], r["form"]): r for r in rows}
    notes = [
        f"Forms interleaved in one process, {rounds} round(s); ratios are medians of per-round ratios. "
        "`auto` = chunked from AUTO_CHUNK_MIN_T tokens on, full below (bdh_gpu/model.py).",
        f"Measured crossover in this run: the best chunked form beats full from T = {start} on "
        f"(best C at the largest T: {C}); stored constants: T >= {M.AUTO_CHUNK_MIN_T}, C = {M.AUTO_CHUNK_SIZE}.",
        "fraction_of_matmul = achieved matmul FLOP/s of the form / a 2048^3 float32 matmul in the same round.",
        "In this run `auto` ran as: "
        + ", ".join(f"T = {r['T']}: {r['chunk']}" for r in rows if r["form"] == "auto")
        + " (the `chunk` column; the constants may have changed since, see bdh_gpu/model.py).",
    ]
    if not mem:
        notes.append("Memory not measured in this run (the run was stopped before its memory children).")
    goals = attention_goals(by, mem, Ts, forms)
    return {
        "name": "attention",
        "title": "Attention form by T: train step (fwd + bwd), `small` shapes, batch 1",
        "notes": notes,
        "rows": rows,
        "goals": goals,
    }


def attention_goals(by, mem, Ts, forms) -> list:
    """The section's goals: speed against the released math, matmul efficiency, memory growth, auto's choice."""
    mem_Ts = sorted(mem)
    goals = []
    for T, target in ((2048, 1.5), (4096, 2.0)):
        if (T, "auto") in by:
            goals.append(
                goal(
                    f"train step at T = {T}, auto vs released full-attention math",
                    by[(T, "auto")]["speed_vs_released"],
                    target,
                )
            )
    for T in (2048, 4096):
        if (T, "auto") in by:
            goals.append(
                goal(
                    f"achieved matmul FLOP/s at T = {T} (auto) / float32 matmul FLOP/s",
                    by[(T, "auto")]["fraction_of_matmul"],
                    0.5,
                    unit="",
                )
            )
    if len(mem_Ts) >= 2:
        a, b = mem_Ts[-2], mem_Ts[-1]
        growth = mem[b]["auto"] / max(mem[a]["auto"], 1e-9)
        goals.append(
            goal(
                f"memory linear in T: peak above model at T = {b} / at T = {a} (auto; linear <= "
                f"{b / a:g}, quadratic up to {(b / a) ** 2:g})",
                growth,
                1.1 * b / a,
                higher=False,
                unit="",
                note=f"released: {mem[b]['released'] / mem[a]['released']:.2f}",
            )
        )
    for T in Ts:
        fastest = max(by[(T, f)]["speed_vs_released"] for f in forms if f not in ("auto", "released"))
        goals.append(
            goal(
                f"auto within 10% of the fastest equal form at T = {T}",
                by[(T, "auto")]["speed_vs_released"] / fastest,
                0.9,
                unit="",
            )
        )
    return goals


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.attention", description=__doc__.split("\n")[0])
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--T", type=int, nargs="+")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--chunks", type=int, nargs="+", default=list(CHUNKS), help="chunk sizes to time")
    ap.add_argument("--write", action="store_true", help="write this section of benchmarks/RESULTS.md")
    ap.add_argument("--from-log", metavar="FILE", help="rebuild the section from the rows a stopped run printed")
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child_memory(int(a.child[0]), a.child[1])))
        return 0
    if a.from_log:
        rows = [json.loads(x) for x in open(a.from_log) if x.startswith('{"T"')]
        r = summarize(rows, {}, a.rounds or 0)
        r["notes"].insert(
            0,
            "Rows as printed by a run that stopped before writing (its memory step failed); "
            "the section was rebuilt from its output with --from-log.",
        )
    else:
        r = run(a.quick, a.T, a.rounds, log=lambda s: print(s, flush=True), chunks=tuple(a.chunks))
    r["notes"].insert(0, "Command: `python -m benchmarks.attention " + " ".join(argv or sys.argv[1:]) + "`.")
    for g in r["goals"]:
        print(json.dumps(g))
    if a.write:
        from benchmarks.__main__ import write_section

        print("wrote", write_section(r, a.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
