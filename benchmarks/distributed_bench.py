"""The sharded neuron graph on P MPI ranks: compile seconds, seconds per token, peak RSS and bytes sent per rank.

    python -m benchmarks.distributed_bench --ranks 1 2 4                 # paper-25m, circuit and official
    python -m benchmarks.distributed_bench --preset tiny --ranks 1 2 --tokens 4
    mpiexec -n 4 python -m benchmarks.distributed_bench --one circuit    # one configuration (prints JSON)
    python -m benchmarks.distributed_bench --project benchmarks/figures/distributed_paper25m.jsonl

Model: the preset's shapes with untrained weights (seed 0); `circuit` compiles it as a normfree model (Claims
3+4), `official` as the released LN model. Each rank compiles only its block (equivalence.compile), then the graph
runs `tokens` bytes of TEXT with the numba backend (one warm-up token first, untimed). With --verify the run is
`equivalence.compare` against the float64 tensor model (rank 0) instead. Bytes sent: what this rank contributes
to the exchanges per token (bdh_graph.comm counts the payload, 8 bytes a number; an MPI Allreduce moves about
2 (P-1)/P times that over the wire); "minimum" is what the design implies: per communication sub-round, the
size of every replicated target of a neuron -> hub group (the Allreduce), plus 16 bytes per active neuron of
a gathered (neuron -> neuron) source.
Peak RSS per rank from getrusage (ru_maxrss), including the model's own weights (every rank loads the model).
--out FILE appends the measured rows (JSON lines); --project FILE reads them back and prints the projection to
larger models (docs/distributed.md): peak RSS per rank = floor + graph / P fitted to the circuit rows by least
squares, the graph scaled by n d L, the floor split into the whole-model copy (3nd weights at 4 + 8 + 8 bytes:
the float32 model, the float64 copy compile_model reads, the float64 Weights) and the rest; traffic per token
per rank from the design's formulas, (4L + 2) d numbers (circuit) and L (2 + h) d (official).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

TEXT = b"The Dragon Hatchling hatches."


def rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def design_minimum_numbers(net):
    """Numbers per token the partition must move per rank (module docstring), without the gathered sources."""
    total = 0
    for rnd in net.kernel.rounds:
        dsts = set()
        for r in rnd.communication:
            g = net.groups[r.group] if r.kind == "send" else net.groups[net.edge_vars[r.src[1] if r.kind == "read" else r.dst].group]
            if r.kind != "hebbian" and g.partial:
                dsts.add(r.dst)
        total += sum(net.global_size_of(v) for v in dsts)
    return total


def one(how, preset, tokens, verify):
    import numpy as np
    import torch

    import equivalence
    from bdh_gpu import BDH, get_preset
    from bdh_graph.comm import default_comm

    torch.set_num_threads(1)
    comm = default_comm()
    cfg = get_preset(preset)
    cfg.dropout = 0.0
    if how == "circuit":
        cfg.variant = "normfree"
    torch.manual_seed(0)
    model = BDH(cfg).eval()
    rss_model = rss_gib()
    comm.barrier()
    t = time.perf_counter()
    compiled = equivalence.compile_model(equivalence.TensorRunner(model).model, how, comm=comm)
    compile_s = time.perf_counter() - t
    rss_compile = rss_gib()
    net = compiled.network
    local_syn = sum(net.groups[ev.group].nnz for ev in net.edge_vars.values())
    comm.barrier()
    out = dict(compile=how, variant=cfg.variant, preset=preset, n=cfg.n, d=cfg.d, L=cfg.n_layer, P=comm.size,
               tokens=tokens)
    if verify:
        t = time.perf_counter()
        rep = equivalence.compare(model, compiled, TEXT[:tokens], backend="numba", state=False)
        run_s, sent, ok = time.perf_counter() - t, comm.bytes_sent, rep.ok
        out.update(ok=ok, max_rel=float(f"{rep.max_rel:.2e}"))
        per_token = run_s / tokens
    else:
        runner = equivalence.GraphRunner(compiled, "numba")
        ids = np.frombuffer(TEXT[:tokens + 1], dtype=np.uint8).astype(np.int64)
        gen = runner.feed(ids)
        next(gen)                                            # warm-up token (numba compiles)
        comm.barrier()
        sent0 = comm.bytes_sent
        t = time.perf_counter()
        for _ in gen:
            pass
        comm.barrier()
        run_s, sent = time.perf_counter() - t, comm.bytes_sent - sent0
        per_token = run_s / tokens
    stats = dict(rank=comm.rank, compile_s=round(compile_s, 1), rss_model_gib=round(rss_model, 2),
                 rss_after_compile_gib=round(rss_compile, 2), peak_rss_gib=round(rss_gib(), 2),
                 synapses_state=local_syn, bytes_per_token=None if verify else int(sent / tokens))
    ranks = comm.allgather(stats)
    out.update(s_per_token=round(per_token, 3), min_bytes_per_token=8 * design_minimum_numbers(net),
               compile_s=max(r["compile_s"] for r in ranks), peak_rss_gib_max=max(r["peak_rss_gib"] for r in ranks),
               ranks=ranks)
    return out if comm.rank == 0 else None


def launch(how, preset, tokens, P, verify, mem_gib):
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    cmd = [mpiexec, "-n", str(P), sys.executable, "-m", "mpi4py", "-m", "benchmarks.distributed_bench", "--one", how,
           "--preset", preset, "--tokens", str(tokens)] + (["--verify"] if verify else [])
    if mem_gib:   # an address-space cap per rank (the machine is shared)
        cmd = ["prlimit", f"--as={int(mem_gib * 2**30)}"] + cmd
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{how} on {P} rank(s): exit {r.returncode}: {r.stderr[-1500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def table(rows):
    lines = ["| compile | P | compile s (max rank) | s / token | peak RSS GiB per rank | synapses per rank | "
             "bytes sent / token / rank | design minimum | ok |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rss = " / ".join(f"{x['peak_rss_gib']}" for x in r["ranks"])
        syn = " / ".join(f"{x['synapses_state']:,}" for x in r["ranks"])
        sent = " / ".join(f"{x['bytes_per_token']:,}" for x in r["ranks"]) if r["ranks"][0]["bytes_per_token"] is not None else "-"
        lines.append(f"| {r['compile']} | {r['P']} | {r['compile_s']} | {r['s_per_token']} | {rss} | {syn} | {sent} | "
                     f"{r['min_bytes_per_token']:,} | {r.get('ok', '-')} |")
    return "\n".join(lines)


def run(quick=True):
    """Registry entry (python -m benchmarks): the tiny preset on 1 and 2 ranks (paper-25m: run this module)."""
    rows = [launch(how, "tiny", 4, P, False, None) for how in ("circuit", "official") for P in (1, 2)]
    flat = [{k: v for k, v in r.items() if k != "ranks"} for r in rows]
    return dict(name="distributed_bench", title="Sharded graph on MPI ranks (tiny preset)", rows=flat)


WEIGHT_BYTES = 4 + 8 + 8   # per weight on every rank: float32 model, its float64 copy, the float64 Weights
TARGETS = [("~100M", 131072, 256, 6, 4, [4]), ("800M", 2**20, 256, 6, 4, [8, 16, 32, 64])]


def project(path):
    import numpy as np
    rows = [json.loads(line) for line in open(path) if line.strip()]
    circ = sorted((r for r in rows if r["compile"] == "circuit"), key=lambda r: r["P"])
    P = np.array([r["P"] for r in circ], dtype=float)
    rss = np.array([r["peak_rss_gib_max"] for r in circ])
    (floor, graph), *_ = np.linalg.lstsq(np.stack([np.ones_like(P), 1 / P], 1), rss, rcond=None)
    r0 = circ[0]
    n0, d0, L0 = r0["n"], r0["d"], r0["L"]
    weights0 = 3 * n0 * d0 * WEIGHT_BYTES / 2**30
    base = floor - weights0
    print(f"fit on the circuit rows (P = {P.astype(int).tolist()}): peak RSS per rank = {floor:.2f} + {graph:.2f} / P "
          f"GiB (residuals {np.round(rss - floor - graph / P, 3).tolist()}); floor = {weights0:.2f} GiB whole-model "
          f"copy (3nd x {WEIGHT_BYTES} B) + {base:.2f} GiB rest")
    print("| model | n | d | L | P | graph / rank GiB | RSS / rank GiB (whole model per rank) | RSS / rank GiB "
          "(weights sliced per rank) | total GiB (sliced) | circuit bytes / token / rank | official bytes / token / rank |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, n, d, L, h, Ps in TARGETS:
        g = graph * (n * d * L) / (n0 * d0 * L0)
        w = 3 * n * d * WEIGHT_BYTES / 2**30
        for p in Ps:
            whole, sliced = base + w + g / p, base + w / p + g / p
            print(f"| {name} | {n:,} | {d} | {L} | {p} | {g / p:.2f} | {whole:.2f} | {sliced:.2f} | {sliced * p:.1f} | "
                  f"{8 * (4 * L + 2) * d:,} | {8 * L * (2 + h) * d:,} |")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--one", choices=("circuit", "official"), help="run one configuration on this MPI job")
    p.add_argument("--compile", dest="hows", nargs="+", default=["circuit", "official"], choices=("circuit", "official"))
    p.add_argument("--preset", default="paper-25m")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--tokens", type=int, default=4)
    p.add_argument("--verify", action="store_true", help="compare with the tensor model (rank 0) instead of a bare run")
    p.add_argument("--mem-gib", type=float, default=None, help="address-space cap per rank (prlimit --as)")
    p.add_argument("--out", help="append the measured rows to this JSON-lines file")
    p.add_argument("--project", metavar="FILE", help="print the projection from measured rows (no run)")
    a = p.parse_args(argv)
    if a.project:
        return project(a.project)
    if a.one:
        out = one(a.one, a.preset, a.tokens, a.verify)
        if out is not None:
            print(json.dumps(out), flush=True)
        return 0
    rows = []
    for how in a.hows:
        for P in a.ranks:
            r = launch(how, a.preset, a.tokens, P, a.verify, a.mem_gib)
            print(json.dumps(r), flush=True)
            if a.out:
                with open(a.out, "a") as f:
                    f.write(json.dumps(r) + "\n")
            rows.append(r)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
