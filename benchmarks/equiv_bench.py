"""Compile paper-25m (n = 32768, d = 256, 6 layers, 4 heads; untrained weights) into its neuron graph and verify
it on a short text: time and peak memory per phase. One subprocess per compile, so each peak is its own.

    python -m benchmarks.equiv_bench                 # circuit (as a normfree model) and official, 8 bytes
    python -m benchmarks.equiv_bench --compile circuit --tokens 16 --backend numba
    python -m benchmarks.equiv_bench --compile official --dtype float32   # the float32 graph (and, for the ratio,
                                                                          # a float64 bare run in the same process)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

TEXT = b"The Dragon Hatchling hatches."
RUN_TOKENS = 8
RUN_TEXT = b"First Citizen: Before we proceed any further, hear me speak."


def rss_gib():
    """Peak resident set size of this process so far, GiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def one(
    how: str, tokens: int, backend: str, preset: str = "paper-25m", run_tokens: int = RUN_TOKENS, dtype="float64"
) -> dict:
    import torch

    import equivalence
    from bdh_gpu import BDH, get_preset

    cfg = get_preset(preset)
    cfg.dropout = 0.0
    if how in ("dense", "circuit"):
        cfg.variant = "normfree"
    torch.manual_seed(0)
    model = BDH(cfg).eval()
    out = dict(
        preset=preset,
        compile=how,
        variant=cfg.variant,
        U=cfg.U,
        n=cfg.n,
        d=cfg.d,
        layers=cfg.n_layer,
        tokens=tokens,
        backend=backend,
        dtype=dtype,
        rss_model_gib=round(rss_gib(), 2),
    )
    t = time.perf_counter()
    compiled = equivalence.compile_model(equivalence.TensorRunner(model).model, how)
    out["compile_s"] = round(time.perf_counter() - t, 1)
    out["rss_after_compile_gib"] = round(rss_gib(), 2)
    out["graph"] = {k: compiled.report[k] for k in ("nodes_total", "edges_total", "synapses", "state_size")}
    t = time.perf_counter()
    rep = equivalence.compare(model, compiled, TEXT[:tokens], backend=backend, dtype=dtype)
    out["verify_s"] = round(time.perf_counter() - t, 1)
    out["peak_rss_gib"] = round(rss_gib(), 2)
    out["ok"] = rep.ok
    out["max_rel"] = {k: float(f"{q.max_rel:.2e}") for k, q in rep.quantities.items()}
    out.update(run_split(compiled, backend, RUN_TEXT[: run_tokens + 1], dtype))
    if dtype != "float64":  # the float64 graph's bare run in the same process, for a ratio
        out["float64_run_tokens_per_s"] = run_split(compiled, backend, RUN_TEXT[: run_tokens + 1])["run_tokens_per_s"]
    return out


def run_split(compiled, backend: str, text: bytes, dtype="float64") -> dict:
    """Bare graph run (no tensor side, no monitors beyond the logits): tokens/s over text[1:] (text[0] is the
    untimed warm-up), and where the time goes: communication vs computation sub-rounds (the scheduler's two
    phases) and seconds per token by rule kind (send, read, hebbian, damp, the node rules)."""
    from collections import defaultdict

    import numpy as np

    import equivalence

    runner = equivalence.GraphRunner(compiled, backend, dtype=dtype)
    sim, be = runner.sim, runner.sim.backend
    phase, kind = defaultdict(float), defaultdict(float)
    step, communicate, compute = sim.step, be.communicate, be.compute

    def timed_step():
        t = time.perf_counter()
        which = step()
        phase[which] += time.perf_counter() - t
        return which

    def by_rule(fn):
        def run_rules(rules, state, *rest):
            for r in rules:
                t = time.perf_counter()
                state = fn((r,), state, *rest)
                kind[r.kind] += time.perf_counter() - t
            return state

        return run_rules

    sim.step, be.communicate, be.compute = timed_step, by_rule(communicate), by_rule(compute)
    gen = runner.feed(np.frombuffer(text, dtype=np.uint8).astype(np.int64))
    next(gen)  # warm-up token: numba compiles here
    phase.clear(), kind.clear()
    t = time.perf_counter()
    n = sum(1 for _ in gen)
    wall = time.perf_counter() - t
    return {
        "run_tokens": n,
        "run_s_per_token": wall / n,
        "run_tokens_per_s": n / wall,
        "communication_s_per_token": phase["communication"] / n,
        "computation_s_per_token": phase["computation"] / n,
        "rule_s_per_token": {k: round(v / n, 4) for k, v in sorted(kind.items(), key=lambda kv: -kv[1])},
    }


def measure(tokens: int, backend: str, preset: str, dtype="float64") -> list:
    """Both compiles, one child process each (so each peak RSS is its own)."""
    rows = []
    for how in ("circuit", "official"):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.equiv_bench",
                "--compile",
                how,
                "--tokens",
                str(tokens),
                "--backend",
                backend,
                "--preset",
                preset,
                "--dtype",
                dtype,
            ],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise RuntimeError(f"equiv_bench {how}: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return rows


def run(quick: bool = False) -> dict:
    """Entry of `python -m benchmarks`: paper-25m, 8 bytes (quick: the tiny preset). Needs ~9 GiB at paper size."""
    from benchmarks.common import goal

    preset, tokens = ("tiny", 8) if quick else ("paper-25m", 8)
    rows = [_row(preset, r) for r in measure(tokens, "numba", preset)]
    goals = [
        goal(
            f"{r['compile']} graph equals the tensor model (max relative error, float64)",
            r["max_rel_error"],
            1e-9,
            unit="",
            higher=False,
        )
        for r in rows
    ]
    goals += [
        goal(
            f"{preset} {r['compile']} graph, numba, one process: tokens/s of a bare run",
            r["run_tokens_per_s"],
            1.0,
            unit="",
        )
        for r in rows
    ]
    notes = [
        f"{preset} shapes, untrained weights (seed 0), verified on the first {tokens} bytes of {TEXT!r} with "
        "the numba backend, tensor model in float64; one child process per compile (peak RSS its own).",
        f"Bare run: the same compiled graph, {RUN_TOKENS} more bytes of {RUN_TEXT[: RUN_TOKENS + 1]!r} after "
        "one untimed warm-up byte, no tensor side; communication / computation = seconds per token in the "
        "scheduler's two sub-round phases; rule_s_per_token = seconds per token by rule kind (send: a fixed "
        "synapse group, read/hebbian: the synaptic state sigma, damp: U on sigma).",
    ]
    return {
        "name": "equiv_bench",
        "title": f"Graph/tensor equivalence at {preset}: compile and verify",
        "notes": notes,
        "rows": rows,
        "goals": goals,
    }


def _row(preset, r) -> dict:
    """One compile's row of the section."""
    g = r["graph"]
    return {
        "preset": preset,
        "compile": r["compile"],
        "variant": r["variant"],
        "tokens": r["tokens"],
        "nodes": g["nodes_total"],
        "edges": g["edges_total"],
        "synapses": g["synapses"],
        "state_floats": g["state_size"],
        "compile_s": r["compile_s"],
        "verify_s": r["verify_s"],
        "verify_s_per_token": r["verify_s"] / r["tokens"],
        "peak_rss_gib": r["peak_rss_gib"],
        "ok": r["ok"],
        "max_rel_error": max(r["max_rel"].values()),
        "run_tokens_per_s": r["run_tokens_per_s"],
        "communication_s_per_token": r["communication_s_per_token"],
        "computation_s_per_token": r["computation_s_per_token"],
        "rule_s_per_token": r["rule_s_per_token"],
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compile", dest="how", choices=("circuit", "official"))
    p.add_argument("--tokens", type=int, default=8)
    p.add_argument("--backend", default="numba", choices=("numba", "pyg", "numpy"))
    p.add_argument("--preset", default="paper-25m")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"), help="the graph's (GraphRunner)")
    a = p.parse_args(argv)
    if a.how:
        print(json.dumps(one(a.how, a.tokens, a.backend, a.preset, dtype=a.dtype)), flush=True)
        return 0
    rows = measure(a.tokens, a.backend, a.preset, a.dtype)
    print("| compile | variant | tokens | backend | compile s | verify s | peak RSS GiB | ok | max rel error |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['compile']} | {r['variant']} | {r['tokens']} | {r['backend']} | {r['compile_s']} | "
            f"{r['verify_s']} | {r['peak_rss_gib']} | {r['ok']} | {max(r['max_rel'].values()):.1e} |"
        )
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
