"""The sharded neuron graph on P MPI ranks: compile seconds, seconds per token, peak RSS and bytes sent per rank.

    python -m benchmarks.distributed_bench --ranks 1 2 4                 # paper-25m, circuit and official
    python -m benchmarks.distributed_bench --preset tiny --ranks 1 2 --tokens 4
    python -m benchmarks.distributed_bench --compile circuit --N 32768 --ranks 4 --verify --mem-gib 6  # ~100M
    mpiexec -n 4 python -m benchmarks.distributed_bench --one circuit --dir DIR   # one configuration (JSON)
    python -m benchmarks.distributed_bench --project benchmarks/figures/distributed_paper25m_sliced.jsonl

Model: the preset's shapes (--N overrides the neurons per head) with untrained weights (seed 0), written with
bdh_gpu.save to a temporary model directory by a separate process; `circuit` compiles it as a normfree model
(Claims 3+4), `official` as the released LN model. Each rank reads only its neurons' slice of the weights from
the directory and compiles only its block (equivalence.compile_model(DIR)); no rank builds the torch model. The
graph then runs `tokens` bytes of TEXT with the numba backend (one warm-up token first, untimed). With --verify
the run is `equivalence.compare` against the float64 tensor model instead: rank 0 alone loads it and runs it
before the compile (`equivalence.tensor_reference`), then frees it, so that its peak is the larger side, not
the sum (rss_before_compile_gib is then rank 0's tensor-side peak). Bytes sent: what this rank contributes
to the exchanges per token (bdh_graph.comm counts the payload, 8 bytes a number; an MPI Allreduce moves about
2 (P-1)/P times that over the wire); "minimum" is what the design implies: per communication sub-round, the
size of every replicated target of a neuron -> hub group (the Allreduce), plus 16 bytes per active neuron of
a gathered (neuron -> neuron) source.
Peak RSS per rank from getrusage (ru_maxrss): the rank's slice of the weights, its block of the graph, and the
libraries (with --verify, rank 0 also holds the tensor model). --out FILE appends the measured rows (JSON
lines); --project FILE reads them back and prints the projection to larger models (docs/distributed.md): peak
RSS per rank = floor + share / P fitted to the circuit rows by least squares, the share split into the sliced
weights (3nd float64 numbers, scaled by n d) and the rest (the graph and the compile's transients, scaled by
n d L); traffic per token per rank from the design's formulas, (4L + 2) d numbers (circuit) and L (2 + h) d
(official).
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


def vm_peak_gib():
    """Peak address space (VmPeak, what a prlimit --as cap limits), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmPeak")) / 2**20
    except (OSError, StopIteration):
        return None


def design_minimum_numbers(net):
    """Numbers per token the partition must move per rank (module docstring), without the gathered sources."""
    total = 0
    for rnd in net.kernel.rounds:
        dsts = set()
        for r in rnd.communication:
            g = (
                net.groups[r.group]
                if r.kind == "send"
                else net.groups[net.edge_vars[r.src[1] if r.kind == "read" else r.dst].group]
            )
            if r.kind != "hebbian" and g.partial:
                dsts.add(r.dst)
        total += sum(net.global_size_of(v) for v in dsts)
    return total


def make_model(how, preset, N, folder):
    """The benchmark's model (module docstring), saved to `folder`."""
    import torch

    import bdh_gpu

    cfg = bdh_gpu.get_preset(preset)
    cfg.dropout = 0.0
    if N:
        cfg.N = N
    if how == "circuit":
        cfg.variant = "normfree"
    torch.manual_seed(0)
    bdh_gpu.save(bdh_gpu.BDH(cfg).eval(), folder)


def one(how, folder, tokens, verify):
    import torch

    import bdh_gpu
    import equivalence
    from bdh_graph.comm import default_comm

    torch.set_num_threads(1)
    comm = default_comm()
    cfg = bdh_gpu.load_config(folder)
    ref = None
    if verify and comm.rank == 0:  # the tensor side first (rank 0 alone), freed before the compile
        import gc

        ref = equivalence.tensor_reference(bdh_gpu.load(folder).eval(), TEXT[:tokens])
        gc.collect()
    rss_model = rss_gib()
    comm.barrier()
    t = time.perf_counter()
    compiled = equivalence.compile_model(folder, how, comm=comm)  # each rank: its slice of the weights
    compile_s = time.perf_counter() - t
    rss_compile = rss_gib()
    net = compiled.network
    local_syn = sum(net.groups[ev.group].nnz for ev in net.edge_vars.values())
    comm.barrier()
    out = dict(compile=how, variant=cfg.variant, n=cfg.n, d=cfg.d, L=cfg.n_layer, P=comm.size, tokens=tokens)
    run_s, sent = _timed_run(compiled, comm, tokens, verify, ref, out)
    per_token = run_s / tokens
    stats = dict(
        rank=comm.rank,
        compile_s=round(compile_s, 1),
        rss_before_compile_gib=round(rss_model, 2),
        rss_after_compile_gib=round(rss_compile, 2),
        peak_rss_gib=round(rss_gib(), 2),
        vm_peak_gib=None if vm_peak_gib() is None else round(vm_peak_gib(), 2),
        synapses_state=local_syn,
        bytes_per_token=None if verify else int(sent / tokens),
    )
    ranks = comm.allgather(stats)
    out.update(
        s_per_token=round(per_token, 3),
        min_bytes_per_token=8 * design_minimum_numbers(net),
        compile_s=max(r["compile_s"] for r in ranks),
        peak_rss_gib_max=max(r["peak_rss_gib"] for r in ranks),
        ranks=ranks,
    )
    return out if comm.rank == 0 else None


def _timed_run(compiled, comm, tokens, verify, ref, out):
    """(seconds, bytes sent) of the graph over `tokens` bytes: the verify against `ref`, or a bare run after one
    warm-up token."""
    import numpy as np

    import equivalence

    if verify:
        t = time.perf_counter()
        rep = equivalence.compare(None, compiled, TEXT[:tokens], backend="numba", state=False, reference=ref)
        out.update(ok=rep.ok, max_rel=float(f"{rep.max_rel:.2e}"))
        return time.perf_counter() - t, comm.bytes_sent
    else:
        runner = equivalence.GraphRunner(compiled, "numba")
        ids = np.frombuffer(TEXT[: tokens + 1], dtype=np.uint8).astype(np.int64)
        gen = runner.feed(ids)
        next(gen)  # warm-up token (numba compiles)
        comm.barrier()
        sent0 = comm.bytes_sent
        t = time.perf_counter()
        for _ in gen:
            pass
        comm.barrier()
        return time.perf_counter() - t, comm.bytes_sent - sent0


def launch(how, preset, tokens, P, verify, mem_gib, N=None):
    """Write the model (a separate process), then run `--one` on P ranks of mpiexec; the row rank 0 prints."""
    import tempfile

    me = [sys.executable, "-m", "benchmarks.distributed_bench"]
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    cap = ["prlimit", f"--as={int(mem_gib * 2**30)}"] if mem_gib else []  # per process (the machine is shared)
    with tempfile.TemporaryDirectory(prefix="bdh-dist-bench-") as folder:
        make = cap + me + ["--make", how, "--preset", preset, "--dir", folder] + (["--N", str(N)] if N else [])
        r = subprocess.run(make, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"writing the {how} model: exit {r.returncode}: {r.stderr[-1500:]}")
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        cmd = (
            cap
            + [
                mpiexec,
                "-n",
                str(P),
                sys.executable,
                "-m",
                "mpi4py",
                "-m",
                "benchmarks.distributed_bench",
                "--one",
                how,
                "--dir",
                folder,
                "--tokens",
                str(tokens),
            ]
            + (["--verify"] if verify else [])
        )
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{how} on {P} rank(s): exit {r.returncode}: {r.stderr[-1500:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["preset"] = preset if not N else f"{preset} with N = {N}"
    return out


def table(rows):
    lines = [
        "| compile | P | compile s (max rank) | s / token | peak RSS GiB per rank | synapses per rank | "
        "bytes sent / token / rank | design minimum | ok |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rss = " / ".join(f"{x['peak_rss_gib']}" for x in r["ranks"])
        syn = " / ".join(f"{x['synapses_state']:,}" for x in r["ranks"])
        sent = (
            " / ".join(f"{x['bytes_per_token']:,}" for x in r["ranks"])
            if r["ranks"][0]["bytes_per_token"] is not None
            else "-"
        )
        lines.append(
            f"| {r['compile']} | {r['P']} | {r['compile_s']} | {r['s_per_token']} | {rss} | {syn} | {sent} | "
            f"{r['min_bytes_per_token']:,} | {r.get('ok', '-')} |"
        )
    return "\n".join(lines)


def run(quick=True):
    """Registry entry (python -m benchmarks): paper-25m on 1, 2 and 4 ranks (quick: the tiny preset on 1 and 2)."""
    preset, ranks = ("tiny", (1, 2)) if quick else ("paper-25m", (1, 2, 4))
    title = f"Sharded graph on MPI ranks ({preset})"
    if not os.path.exists(os.path.join(os.path.dirname(sys.executable), "mpiexec")):
        print(
            "distributed_bench: skipped, no mpiexec next to the Python (install the mpi extra: pip install -e '.[mpi]')"
        )
        return dict(name="distributed_bench", title=title, rows=[{"skipped": "no mpiexec (the mpi extra)"}])
    from benchmarks.common import goal

    rows = [launch(how, preset, 4, P, False, None if quick else 10) for how in ("circuit", "official") for P in ranks]
    flat = []
    for r in rows:
        row = {k: v for k, v in r.items() if k != "ranks"}
        row["peak_rss_gib_per_rank"] = " / ".join(str(x["peak_rss_gib"]) for x in r["ranks"])
        sent = [x["bytes_per_token"] for x in r["ranks"]]
        row["max_bytes_sent_per_token_per_rank"] = max(sent) if None not in sent else ""
        flat.append(row)
    by = {(r["compile"], r["P"]): r for r in flat}
    top = max(ranks)
    goals = [
        goal(
            f"{preset} circuit compile on one rank, seconds",
            by[("circuit", 1)]["compile_s"],
            60.0,
            higher=False,
            unit=" s",
        )
    ]
    for how in ("circuit", "official"):
        goals.append(
            goal(
                f"{how}: peak RSS per rank on {top} ranks / on one rank",
                by[(how, top)]["peak_rss_gib_max"] / by[(how, 1)]["peak_rss_gib_max"],
                1 / 3,
                higher=False,
                unit="",
            )
        )
        multi = [r for r in flat if r["compile"] == how and r["P"] > 1]
        goals.append(
            goal(
                f"{how}: bytes sent per token per rank / the design minimum (O(L d), no n-sized message)",
                max(r["max_bytes_sent_per_token_per_rank"] / r["min_bytes_per_token"] for r in multi),
                1.0,
                higher=False,
                unit="",
            )
        )
    notes = [
        f"{preset} shapes, untrained weights (seed 0): circuit = the model as normfree (Claims 3+4), official "
        "= the released LN model; numba with one thread per rank, 4 tokens timed after one warm-up token; each "
        "rank compiles only its block from its slice of model.safetensors. P above the 2 cores oversubscribes "
        "them. Bytes sent = the payload a rank contributes to the exchanges per token; the design minimum = the "
        "replicated targets of the neuron -> hub groups summed over the sub-rounds. The ~100M model on 4 ranks "
        "and the projections are in docs/distributed.md (`--compile circuit --N 32768 --ranks 4`, `--project`)."
    ]
    return dict(name="distributed_bench", title=title, notes=notes, rows=flat, goals=goals)


WEIGHT_BYTES = 8  # per weight a rank holds: its float64 slice (equivalence.Weights.load)
TARGETS = [("~100M", 131072, 256, 6, 4, [4]), ("800M", 2**20, 256, 6, 4, [8, 16, 32, 64])]


def project(path):
    import numpy as np

    rows = [json.loads(line) for line in open(path) if line.strip()]
    circ = sorted((r for r in rows if r["compile"] == "circuit"), key=lambda r: r["P"])
    P = np.array([r["P"] for r in circ], dtype=float)
    rss = np.array([r["peak_rss_gib_max"] for r in circ])
    (floor, share), *_ = np.linalg.lstsq(np.stack([np.ones_like(P), 1 / P], 1), rss, rcond=None)
    r0 = circ[0]
    n0, d0, L0 = r0["n"], r0["d"], r0["L"]
    weights0 = 3 * n0 * d0 * WEIGHT_BYTES / 2**30
    graph0 = share - weights0
    print(
        f"fit on the circuit rows (P = {P.astype(int).tolist()}): peak RSS per rank = {floor:.2f} + {share:.2f} / P "
        f"GiB (residuals {np.round(rss - floor - share / P, 3).tolist()}); share = {weights0:.2f} GiB sliced "
        f"weights (3nd x {WEIGHT_BYTES} B) + {graph0:.2f} GiB graph and compile transients"
    )
    print(
        "| model | n | d | L | P | RSS / rank GiB | total GiB | circuit bytes / token / rank | "
        "official bytes / token / rank |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, n, d, L, h, Ps in TARGETS:
        g = graph0 * (n * d * L) / (n0 * d0 * L0) + 3 * n * d * WEIGHT_BYTES / 2**30
        for p in Ps:
            per = floor + g / p
            print(
                f"| {name} | {n:,} | {d} | {L} | {p} | {per:.2f} | {per * p:.1f} | "
                f"{8 * (4 * L + 2) * d:,} | {8 * L * (2 + h) * d:,} |"
            )
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--one", choices=("circuit", "official"), help="run one configuration on this MPI job (--dir)")
    p.add_argument("--make", choices=("circuit", "official"), help="write the model of a configuration to --dir")
    p.add_argument("--dir", help="the model directory (--one, --make)")
    p.add_argument("--N", type=int, default=None, help="neurons per head (default: the preset's)")
    p.add_argument(
        "--compile", dest="hows", nargs="+", default=["circuit", "official"], choices=("circuit", "official")
    )
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
    if a.make:
        make_model(a.make, a.preset, a.N, a.dir)
        return 0
    if a.one:
        out = one(a.one, a.dir, a.tokens, a.verify)
        if out is not None:
            print(json.dumps(out), flush=True)
        return 0
    rows = []
    for how in a.hows:
        for P in a.ranks:
            r = launch(how, a.preset, a.tokens, P, a.verify, a.mem_gib, a.N)
            print(json.dumps(r), flush=True)
            if a.out:
                with open(a.out, "a") as f:
                    f.write(json.dumps(r) + "\n")
            rows.append(r)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
