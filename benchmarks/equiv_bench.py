"""paper-25m (n = 32768, d = 256, 6 layers, 4 heads; untrained weights) as a neuron graph: compile, verify against
the tensor model (float64 and float32 graphs), and step it token by token beside the tensor model's own recurrent
decode. One subprocess per compile, so each peak memory is its own.

    python -m benchmarks.equiv_bench                          # circuit (the model as normfree) and official
    python -m benchmarks.equiv_bench --compile official --rounds 3 --tokens 8   # one compile, JSON on stdout

Speed (issue 20's goals, ratios measured in the same process): `rounds` rounds, each timing in turn the read
bandwidth (a torch sum over 1 GiB), the tensor model's float32 recurrent decode (`step`, the same weights and
variant, batch 1), the float64 graph and the float32 graph, `tokens` tokens each (the graphs go on from where
the previous round stopped); each ratio is the median over rounds of that round's ratio. The graphs run through
`equivalence.GraphRunner` (the scheduler, every sub-round, the logits read out), default backend numba.
Bytes a graph step moves = the backend's own count (`NumbaBackend.traffic`: the weights, indices and sigma its
kernels read and write, from the active sources and the runs of each call), over the timed tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict

TEXT = b"The Dragon Hatchling hatches."
RUN_TEXT = b"First Citizen: Before we proceed any further, hear me speak. All: Speak, speak."
DTYPES = ("float64", "float32")


def rss_gib():
    """Peak resident set size of this process so far, GiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def build(how: str, preset: str):
    """The untrained model of the preset (seed 0, dropout 0; circuit and dense compile it as variant normfree)."""
    import torch

    from bdh_gpu import BDH, get_preset

    cfg = get_preset(preset)
    cfg.dropout = 0.0
    if how in ("dense", "circuit"):
        cfg.variant = "normfree"
    torch.manual_seed(0)
    return BDH(cfg).eval()


def one(how: str, verify_tokens: int, rounds: int, tokens: int, backend: str = "numba", preset="paper-25m") -> dict:
    """Compile, verify (both dtypes) and time one compile; a dict of everything measured."""
    import equivalence

    model = build(how, preset)
    cfg = model.config
    out = dict(preset=preset, compile=how, variant=cfg.variant, U=cfg.U, n=cfg.n, d=cfg.d, layers=cfg.n_layer)
    t = time.perf_counter()
    compiled = equivalence.compile_model(equivalence.TensorRunner(model).model, how)
    out["compile_s"] = round(time.perf_counter() - t, 1)
    out["graph"] = {k: compiled.report[k] for k in ("nodes_total", "edges_total", "synapses", "state_size")}
    out["rounds_per_token"] = compiled.report["rounds_per_token"]
    for dtype in DTYPES:
        t = time.perf_counter()
        rep = equivalence.compare(model, compiled, TEXT[:verify_tokens], backend=backend, dtype=dtype)
        out[f"verify_{dtype}"] = dict(
            s=round(time.perf_counter() - t, 1), ok=rep.ok, max_rel=max(q.max_rel for q in rep.quantities.values())
        )
    out.update(speed(model, compiled, backend, rounds, tokens))
    out["peak_rss_gib"] = round(rss_gib(), 2)
    return out


VARIANTS = {  # the graph runs timed side by side: the two dtypes (the goals), and two ablations of float64
    "float64": "float64",
    "float32": "float32",
    "float64, read and write apart": "float64",  # Simulator.overlap = False: no lookahead, no fused read+write
    "float64, index kernels": "float64",  # numba_backend.FAST = False: CSR kernels, eager rotation
}


def _runner(compiled, backend, name):
    import equivalence
    from bdh_graph.backends import numba_backend

    fast = numba_backend.FAST
    numba_backend.FAST = name != "float64, index kernels"
    try:
        runner = equivalence.GraphRunner(compiled, backend, dtype=VARIANTS[name])
    finally:
        numba_backend.FAST = fast
    runner.sim.overlap = name != "float64, read and write apart"
    return runner


def speed(model, compiled, backend: str, rounds: int, tokens: int) -> dict:
    """Interleaved rounds of: read bandwidth, tensor float32 decode, then every graph variant (module doc)."""
    import numpy as np

    from benchmarks.common import read_bandwidth
    from benchmarks.decode import bytes_per_token

    ids = np.resize(np.frombuffer(RUN_TEXT, dtype=np.uint8).astype(np.int64), 1 + rounds * tokens)
    runners = {v: _runner(compiled, backend, v) for v in VARIANTS}
    feeds = {v: runners[v].feed(ids) for v in VARIANTS}
    for f in feeds.values():
        next(f)  # the first token: numba compiles (or loads) its kernels here
    step = _tensor_decoder(model, ids)
    next(step)
    res = {k: [] for k in ("bw", "tensor", *VARIANTS)}
    traffic = dict.fromkeys(VARIANTS, 0)
    split = None
    for r in range(rounds):
        res["bw"].append(read_bandwidth(1.0, repeats=2))
        res["tensor"].append(_timed(lambda: [next(step) for _ in range(tokens)]) / tokens)
        for v in VARIANTS:
            be, go = runners[v].sim.backend, lambda f=feeds[v]: [next(f) for _ in range(tokens)]
            before = getattr(be, "traffic", 0)
            if r == rounds - 1 and v == "float64":
                split = run_split_on(runners[v], go, tokens)
                res[v].append(split.pop("_s_per_token"))
            else:
                res[v].append(_timed(go) / tokens)
            traffic[v] += getattr(be, "traffic", 0) - before
    med = statistics.median
    tensor_bytes = bytes_per_token(model.config, 4)
    out = {
        "rounds": rounds,
        "timed_tokens": tokens,
        "read_GB_s": med(res["bw"]) / 1e9,
        "tensor_tokens_per_s": 1 / med(res["tensor"]),
        "tensor_fraction_of_bandwidth": med([tensor_bytes / s / b for s, b in zip(res["tensor"], res["bw"])]),
        "split_float64": split,
    }
    for v in VARIANTS:
        per_token = traffic[v] / (rounds * tokens)
        out[v] = {
            "tokens_per_s": 1 / med(res[v]),
            "spread": [round(1 / max(res[v]), 3), round(1 / min(res[v]), 3)],
            "vs_tensor": med([t / g for t, g in zip(res["tensor"], res[v])]),
            "bytes_per_token_MB": per_token / 1e6,
            "fraction_of_bandwidth": med([per_token / g / b for g, b in zip(res[v], res["bw"])]),
        }
    return out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _tensor_decoder(model, ids):
    """A generator: each next() is one float32 recurrent decode step (`step`, dense, in place) of the next byte."""
    import torch

    m = model.float().eval()
    state = m.init_state(1)
    with torch.no_grad():
        k = 0
        while True:
            _, state = m.step(torch.as_tensor(ids[k % len(ids)]).view(1), state, sparse=False, inplace=True)
            k += 1
            yield


def run_split(compiled, backend: str, text: bytes) -> dict:
    """A bare graph run over text[1:] (text[0]: the untimed warm-up) with `run_split_on`'s split."""
    import numpy as np

    import equivalence

    runner = equivalence.GraphRunner(compiled, backend)
    gen = runner.feed(np.frombuffer(text, dtype=np.uint8).astype(np.int64))
    next(gen)
    n = len(text) - 1
    out = run_split_on(runner, lambda: list(gen), n)
    out["run_s_per_token"] = out.pop("_s_per_token")
    out["run_tokens"], out["run_tokens_per_s"] = n, 1 / out["run_s_per_token"]
    return out


def run_split_on(runner, go, n: int) -> dict:
    """Time `go()` (n tokens of `runner`) with where the time goes: the scheduler's communication and computation
    sub-rounds, and seconds per token by what runs: each op of the backend's plans (numba: named by the rule
    kinds it runs, e.g. "send" for an E/I pair, "read+hebbian" for a fused read and write) and each computation
    rule by kind. The timers change no result (tests/test_perf_bench_paths.py)."""
    sim, be = runner.sim, runner.sim.backend
    phase, kind = defaultdict(float), defaultdict(float)
    step, compute = sim.step, be.compute
    saved = {}

    def timed_step():
        t = time.perf_counter()
        which = step()
        phase[which] += time.perf_counter() - t
        return which

    def by_rule(rules, state, *rest):
        for r in rules:
            t = time.perf_counter()
            state = compute((r,), state, *rest)
            kind[r.kind] += time.perf_counter() - t
        return state

    for key, (rules, ops) in getattr(be, "_plans", {}).items():  # numba: time its plans' ops
        saved[key] = list(ops)
        for i, op in enumerate(ops):
            name = "+".join(dict.fromkeys(r.kind for r in getattr(op, "rules", rules)))
            ops[i] = _timed_op(op, name, kind)
    if not saved:  # other backends: time each communication rule as a call of its own
        communicate = be.communicate
        be.communicate = lambda rules, state, *rest: _one_by_one(communicate, rules, state, rest, kind)
    sim.step, be.compute = timed_step, by_rule
    t = time.perf_counter()
    go()
    wall = time.perf_counter() - t
    del sim.step, be.compute
    be.__dict__.pop("communicate", None)
    for key, ops in saved.items():
        be._plans[key][1][:] = ops
    return {
        "_s_per_token": wall / n,
        "communication_s_per_token": phase["communication"] / n,
        "computation_s_per_token": phase["computation"] / n,
        "rule_s_per_token": {k: round(v / n, 4) for k, v in sorted(kind.items(), key=lambda kv: -kv[1])},
    }


def _timed_op(op, name, kind):
    def run(*a):
        t = time.perf_counter()
        op(*a)
        kind[name] += time.perf_counter() - t

    run.rules = getattr(op, "rules", ())
    return run


def _one_by_one(communicate, rules, state, rest, kind):
    for r in rules:
        t = time.perf_counter()
        state = communicate((r,), state, *rest)
        kind[r.kind] += time.perf_counter() - t
    return state


def measure(preset: str, verify_tokens: int, rounds: int, tokens: int) -> list:
    """Both compiles, one child process each (so each peak RSS is its own)."""
    rows = []
    for how in ("circuit", "official"):
        args = ["--compile", how, "--preset", preset, "--verify-tokens", str(verify_tokens)]
        args += ["--rounds", str(rounds), "--tokens", str(tokens)]
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}  # bdh's default
        cmd = [sys.executable, "-m", "benchmarks.equiv_bench", *args]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"equiv_bench {how}: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return rows


def run(quick: bool = False) -> dict:
    """Entry of `python -m benchmarks`: paper-25m (quick: the tiny preset). Needs ~9 GiB at paper size."""
    preset, verify_tokens, rounds, tokens = ("tiny", 6, 2, 4) if quick else ("paper-25m", 6, 3, 8)
    results = measure(preset, verify_tokens, rounds, tokens)
    rows = [_row(r, v) for r in results for v in VARIANTS]
    return {
        "name": "equiv_bench",
        "title": f"The neuron graph at {preset}: compile, verify, and its speed beside the tensor model's decode",
        "notes": _notes(preset, verify_tokens, rounds, tokens, results),
        "rows": rows,
        "goals": _goals(results),
    }


def _notes(preset, verify_tokens, rounds, tokens, results) -> list:
    splits = "; ".join(
        f"{r['compile']}: communication {r['split_float64']['communication_s_per_token']:.3f} s, computation "
        f"{r['split_float64']['computation_s_per_token']:.3f} s per token, by what runs "
        + ", ".join(f"{k} {v}" for k, v in r["split_float64"]["rule_s_per_token"].items())
        for r in results
    )
    return [
        f"{preset} shapes, untrained weights (seed 0); verified on the first {verify_tokens} bytes of {TEXT!r} "
        "against the float64 tensor model (float64 graph: rtol 1e-9; float32 graph: 1e-4), numba backend; "
        "one child process per compile (peak RSS its own), OpenMP waiting passively (bdh's thread policy).",
        f"Speed: {rounds} interleaved rounds of {tokens} tokens of {RUN_TEXT[:24]!r}... each (module docstring): "
        "tensor = the same model's float32 recurrent decode (step, batch 1); bytes_per_token = what the graph's "
        "kernels read and write (NumbaBackend.traffic); fraction_of_bandwidth = bytes per token x tokens/s / the "
        "read bandwidth of the same round; min-max over rounds in spread.",
        "Ablations of the float64 graph, in the same rounds (no goals): 'read and write apart' = Simulator.overlap "
        "off, so each layer's Hebbian write runs in its own round instead of in one pass with the state read "
        "(fuse_reads); 'index kernels' = numba_backend.FAST off: CSR kernels reading an index per edge, separate E "
        "and I sends, the rotation of sigma applied eagerly every token (the backend before issue 20's layouts).",
        f"Where a float64 graph token goes (last round, seconds per token): {splits}.",
    ]


def _row(r: dict, run: str) -> dict:
    g, s, v = r["graph"], r[run], r.get(f"verify_{run}", {})
    return {
        "compile": r["compile"],
        "variant": r["variant"],
        "graph": run,
        "edges": g["edges_total"],
        "synapses": g["synapses"],
        "rounds_per_token": r["rounds_per_token"],
        "compile_s": r["compile_s"],
        "verify_s": v.get("s", ""),
        "ok": v.get("ok", ""),
        "max_rel_error": v.get("max_rel", float("nan")),
        "graph_tokens_per_s": s["tokens_per_s"],
        "spread": f"{s['spread'][0]}-{s['spread'][1]}",
        "tensor_tokens_per_s": r["tensor_tokens_per_s"],
        "vs_tensor": s["vs_tensor"],
        "bytes_per_token_MB": s["bytes_per_token_MB"],
        "read_GB_s": r["read_GB_s"],
        "fraction_of_bandwidth": s["fraction_of_bandwidth"],
        "peak_rss_gib": r["peak_rss_gib"],
    }


def _goals(results) -> list:
    from benchmarks.common import goal

    out = []
    for r in results:
        c, L, t = r["compile"], r["layers"], r["tensor_tokens_per_s"]
        note = f"tensor float32 decode {t:.3g} tokens/s in the same rounds"
        for dt, tol in (("float64", 1e-9), ("float32", 1e-4)):
            rel = r[f"verify_{dt}"]["max_rel"]
            out.append(goal(f"{c} {dt} graph equals the tensor model (max rel)", rel, tol, unit="", higher=False))
        for dt, target in (("float64", 0.25), ("float32", 0.4)):
            out.append(goal(f"{c} {dt} graph tokens/s / the tensor decode's", r[dt]["vs_tensor"], target, note=note))
        frac = r["float64"]["fraction_of_bandwidth"]
        out.append(goal(f"{c} float64 graph: bytes it moves / time / read bandwidth", frac, 0.5, unit=""))
        if c == "official":
            rounds = r["rounds_per_token"]
            out.append(goal(f"official rounds per token (L = {L})", rounds, 8 * L + 4, unit="", higher=False))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compile", dest="how", choices=("circuit", "official"), help="one compile, JSON on stdout")
    p.add_argument("--preset", default="paper-25m")
    p.add_argument("--verify-tokens", type=int, default=6)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tokens", type=int, default=8, help="tokens per timed round")
    p.add_argument("--backend", default="numba", choices=("numba", "pyg"))
    p.add_argument("--write", action="store_true", help="write the section of benchmarks/RESULTS.md (both compiles)")
    a = p.parse_args(argv)
    if a.how:
        print(json.dumps(one(a.how, a.verify_tokens, a.rounds, a.tokens, a.backend, a.preset)), flush=True)
        return 0
    results = measure(a.preset, a.verify_tokens, a.rounds, a.tokens)
    for r in results:
        for v in VARIANTS:
            print(json.dumps(_row(r, v)))
    if a.write:
        from benchmarks.__main__ import write_section

        section = {
            "name": "equiv_bench",
            "title": f"The neuron graph at {a.preset}: compile, verify, and its speed beside the tensor model's decode",
            "notes": _notes(a.preset, a.verify_tokens, a.rounds, a.tokens, results)
            + [f"Command: `python -m benchmarks.equiv_bench --write --rounds {a.rounds} --tokens {a.tokens}`."],
            "rows": [_row(r, v) for r in results for v in VARIANTS],
            "goals": _goals(results),
        }
        print("wrote", write_section(section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
