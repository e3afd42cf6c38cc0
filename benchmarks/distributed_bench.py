"""The sharded neuron graph on P MPI ranks: compile seconds, seconds per token, peak RSS and bytes sent per rank.

    python -m benchmarks.distributed_bench --ranks 1 2 4                 # paper-25m, circuit and official
    python -m benchmarks.distributed_bench --preset tiny --ranks 1 2 --tokens 4
    python -m benchmarks.distributed_bench --compile circuit --N 32768 --ranks 4 --verify --mem-gib 6  # ~100M
    python -m benchmarks.distributed_bench --write                       # ... and write its RESULTS.md section
    mpiexec -n 4 python -m benchmarks.distributed_bench --one circuit --dir DIR   # one configuration (JSON)
    python -m benchmarks.distributed_bench --project benchmarks/figures/distributed_paper25m_sliced.jsonl

Model: the preset's shapes (--N overrides the neurons per head) with untrained weights (seed 0), written with
bdh_gpu.save to a temporary model directory by a separate process; `circuit` compiles it as a normfree model
(Claims 3+4), `official` as the released LN model. Each rank reads only its neurons' slice of the weights from
the directory and compiles only its block (equivalence.compile_model(DIR)); no rank builds the torch model, nor
imports torch (`torch_imported` per rank). The graph then runs TEXT with the numba backend: one warm-up token,
then 2 x `tokens` tokens between barriers, alternating overlap on (the simulator's default: collectives posted
before the work that needs neither) and off (`Simulator.overlap = False`: each collective waited for at once);
`s_per_token` is the median overlapped token, `s_per_token_blocking` the median other one, `wait_s_per_token` a
rank's mean time blocked in the collectives (`comm.wait_s`). With --verify
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


def cpu_busy_s():
    """Seconds of CPU time the whole machine has spent busy (all CPUs; /proc/stat), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def wait_idle(max_s, busy_below=0.25, log=print):
    """Wait (up to max_s seconds) until the machine's CPUs are less than `busy_below` busy over 3 s; returns the
    last busy fraction measured (None off Linux)."""
    t0, frac = time.time(), None
    while True:
        a = cpu_busy_s()
        time.sleep(3.0)
        b = cpu_busy_s()
        if a is None or b is None:
            return None
        frac = (b - a) / (3.0 * (os.cpu_count() or 1))
        if frac < busy_below or time.time() - t0 > max_s:
            return round(frac, 2)
        log(f"distributed_bench: the CPUs are {frac:.0%} busy (other jobs); waiting (up to {max_s} s)")
        time.sleep(10.0)


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
    import bdh_gpu  # its config and the numpy reader only: no torch (bdh_gpu's package imports the model lazily)
    import equivalence
    from bdh_graph.comm import default_comm

    comm = default_comm()
    cfg = bdh_gpu.load_config(folder)
    ref = None
    if verify and comm.rank == 0:  # the tensor side first (rank 0 alone), freed before the compile
        import gc

        import torch

        torch.set_num_threads(1)
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
    timed = _timed_run(compiled, comm, tokens, verify, ref, out)
    stats = dict(
        rank=comm.rank,
        compile_s=round(compile_s, 1),
        rss_before_compile_gib=round(rss_model, 2),
        rss_after_compile_gib=round(rss_compile, 2),
        peak_rss_gib=round(rss_gib(), 2),
        vm_peak_gib=None if vm_peak_gib() is None else round(vm_peak_gib(), 2),
        synapses_state=local_syn,
        bytes_per_token=None if verify else int(timed["sent"][True] / tokens),
        torch_imported="torch" in sys.modules,
        wait_s_per_token=None if verify else round(timed["wait"][True] / tokens, 4),
        wait_s_per_token_blocking=None if verify else round(timed["wait"][False] / tokens, 4),
    )
    ranks = comm.allgather(stats)
    out.update(
        s_per_token=round(timed["s"][True] / tokens, 3),
        s_per_token_blocking=None if verify else round(timed["s"][False] / tokens, 3),
        min_bytes_per_token=8 * design_minimum_numbers(net),
        compile_s=max(r["compile_s"] for r in ranks),
        peak_rss_gib_max=max(r["peak_rss_gib"] for r in ranks),
        ranks=ranks,
    )
    return out if comm.rank == 0 else None


def _timed_run(compiled, comm, tokens, verify, ref, out):
    """{"s", "wait", "sent": {overlap: total over `tokens` tokens}} of the graph on TEXT: the verify against
    `ref` (overlap on only), or a bare run: one warm-up token, then 2 x `tokens` timed tokens alternating overlap on
    and off (`Simulator.overlap`: the exchange posted before the work that does not need it, or waited for at
    once), each between barriers; "s" is `tokens` x the median token (the machine is shared: a token that another
    job's burst slowed does not move it), "wait" this rank's time blocked in the collectives (`comm.wait_s`)."""
    import numpy as np

    import equivalence

    if verify:
        t = time.perf_counter()
        rep = equivalence.compare(None, compiled, TEXT[:tokens], backend="numba", state=False, reference=ref)
        out.update(ok=rep.ok, max_rel=float(f"{rep.max_rel:.2e}"))
        return {"s": {True: time.perf_counter() - t}, "sent": {True: comm.bytes_sent}, "wait": {True: comm.wait_s}}
    runner = equivalence.GraphRunner(compiled, "numba")
    ids = np.frombuffer(TEXT[: 2 * tokens + 1], dtype=np.uint8).astype(np.int64)
    gen = runner.feed(ids)
    next(gen)  # warm-up token (numba compiles)
    total = {k: {True: 0.0, False: 0.0} for k in ("wait", "sent")}
    times = {True: [], False: []}
    comm.barrier()
    busy, cpu, wall = cpu_busy_s(), time.process_time(), time.perf_counter()
    for i in range(2 * tokens):
        runner.sim.overlap = overlap = i % 2 == 0
        comm.barrier()
        sent, wait, t = comm.bytes_sent, comm.wait_s, time.perf_counter()
        next(gen)
        comm.barrier()
        times[overlap].append(time.perf_counter() - t)
        total["wait"][overlap] += comm.wait_s - wait
        total["sent"][overlap] += comm.bytes_sent - sent
    total["s"] = {k: tokens * float(np.median(v)) for k, v in times.items()}  # robust to the other jobs' bursts
    ours = sum(comm.allgather(time.process_time() - cpu))  # every rank's CPU seconds (MPI's busy waits included)
    busy_end, wall = cpu_busy_s(), time.perf_counter() - wall
    if busy is not None and busy_end is not None:  # what other processes took of the machine while we timed
        out["others_cpu_share"] = round(max(0.0, busy_end - busy - ours) / (wall * (os.cpu_count() or 1)), 2)
    return total


def profile(folder, how, tokens):
    """Where a rank's token goes (`--profile`, on this MPI job): seconds per token in rules over the rank's own
    block (neurons, their synapses: the work that shrinks as 1/P), in rules over replicated populations only
    (the hubs: every rank repeats them), blocked in the collectives, and the rest (the simulator's and the
    runner's Python); and the fraction of the rank's neurons active in x and y. Rules are timed where the
    backend dispatches them: the ops of the numba backend's plans (one per rule, E/I pair or fused read and
    write), `Backend._rules` (damp) and `kernels.apply_rule` (the node rules)."""
    import collections

    import numpy as np

    import equivalence
    from bdh_graph import kernels as K
    from bdh_graph.backends import base
    from bdh_graph.comm import default_comm

    comm = default_comm()
    runner = equivalence.GraphRunner(equivalence.compile_model(folder, how, comm=comm), "numba")
    net, be, T = runner.sim.net, runner.sim.backend, collections.Counter()
    split = {name for name, p in net.populations.items() if p.split}

    def own_block(r):
        if r.kind in ("read", "hebbian", "damp"):
            return True  # sigma lives on the rank's synapses
        if r.kind == "send":
            g = net.group_of(r)
            return g.pre in split or g.post in split
        return net.node_variables.get(r.dst) in split

    def timed(f):
        def run(r, *a):
            t = time.perf_counter()
            out = f(r, *a)
            T["block" if own_block(r) else "replicated"] += time.perf_counter() - t
            return out

        return run

    def timed_op(op):
        def run(*a):
            t = time.perf_counter()
            op(*a)
            T["block" if own_block(op.rules[0]) else "replicated"] += time.perf_counter() - t

        return run

    be._rules = {k: timed(f) for k, f in be._rules.items()}
    apply_rule, base.K.apply_rule = K.apply_rule, timed(K.apply_rule)
    ids = np.frombuffer(TEXT[: tokens + 1], dtype=np.uint8).astype(np.int64)
    x0, y0, extra = runner.compiled.token_inputs(ids)
    runner.sim.feed(x0[0], y0[0], extra[0])  # warm-up (numba compiles, the plans are built)
    for _, ops in be._plans.values():
        ops[:] = [timed_op(op) for op in ops]
    T.clear()
    active, wait = np.zeros(2), comm.wait_s
    comm.barrier()
    t = time.perf_counter()
    for k in range(1, tokens + 1):
        x, y = runner.sim.feed(x0[k], y0[k], extra[k])
        active += [np.count_nonzero(x[1:]) / max(1, x[1:].size), np.count_nonzero(y[1:]) / max(1, y[1:].size)]
    total = (time.perf_counter() - t) / tokens
    base.K.apply_rule = apply_rule
    row = {k: round(v / tokens, 4) for k, v in T.items()}
    row.update(token=round(total, 4), wait=round((comm.wait_s - wait) / tokens, 4))
    row["other"] = round(total - row.get("block", 0) - row.get("replicated", 0) - row["wait"], 4)
    row["active_x"], row["active_y"] = (round(float(a), 3) for a in active / tokens)
    rows = comm.allgather(row)
    if comm.rank == 0:
        for r, x in enumerate(rows):
            print(json.dumps({"compile": how, "P": comm.size, "rank": r, **x}), flush=True)
    return 0


def launch(how, preset, tokens, P, verify, mem_gib, N=None, idle_s=0, prof=False):
    """Write the model (a separate process), then run `--one` on P ranks of mpiexec (first waiting up to idle_s
    seconds for the other jobs to leave the CPUs: `wait_idle`); the row rank 0 prints."""
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
            + (["--profile"] if prof else [])
        )
        busy = wait_idle(idle_s) if idle_s else None
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{how} on {P} rank(s): exit {r.returncode}: {r.stderr[-1500:]}")
    if prof:
        return [json.loads(line) for line in r.stdout.strip().splitlines()]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["preset"] = preset if not N else f"{preset} with N = {N}"
    out["busy_before"] = busy
    return out


def table(rows):
    lines = [
        "| compile | P | compile s (max rank) | s / token | s / token, blocking | wait s / token per rank | peak RSS "
        "GiB per rank | RSS before compile GiB | synapses per rank | bytes sent / token / rank | design minimum | "
        "torch ranks | ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per = lambda key, f=str: " / ".join("-" if x[key] is None else f(x[key]) for x in r["ranks"])  # noqa: E731
        lines.append(
            f"| {r['compile']} | {r['P']} | {r['compile_s']} | {r['s_per_token']} | {r.get('s_per_token_blocking')} "
            f"| {per('wait_s_per_token')} | {per('peak_rss_gib')} | {per('rss_before_compile_gib')} | "
            f"{per('synapses_state', lambda v: f'{v:,}')} | {per('bytes_per_token', lambda v: f'{v:,}')} | "
            f"{r['min_bytes_per_token']:,} | {sum(bool(x['torch_imported']) for x in r['ranks'])} | "
            f"{r.get('ok', '-')} |"
        )
    return "\n".join(lines)


def run(quick=True, preset=None, ranks=None, tokens=4, mem_gib=None, log=None, idle_s=0):
    """Registry entry (python -m benchmarks): paper-25m on 1, 2 and 4 ranks (quick: the tiny preset on 1 and 2);
    `--write` runs it with the command line's preset, ranks and tokens."""
    preset = preset or ("tiny" if quick else "paper-25m")
    ranks = tuple(ranks or ((1, 2) if quick else (1, 2, 4)))
    title = f"Sharded graph on MPI ranks ({preset})"
    if not os.path.exists(os.path.join(os.path.dirname(sys.executable), "mpiexec")):
        print(
            "distributed_bench: skipped, no mpiexec next to the Python (install the mpi extra: pip install -e '.[mpi]')"
        )
        return dict(name="distributed_bench", title=title, rows=[{"skipped": "no mpiexec (the mpi extra)"}])
    cap = mem_gib if mem_gib is not None else (None if quick else 10)
    rows = []
    for how in ("circuit", "official"):
        for P in ranks:
            rows.append(launch(how, preset, tokens, P, False, cap, idle_s=idle_s))
            if log:
                log(json.dumps(rows[-1]))
    flat = [_flat(r) for r in rows]
    return dict(name="distributed_bench", title=title, notes=_notes(preset), rows=flat, goals=_goals(flat, preset))


def _flat(r):
    """A row of the section: the job's figures and the per-rank ones joined (rank 0 / rank 1 / ...)."""
    row = {k: v for k, v in r.items() if k != "ranks"}
    per = lambda key: " / ".join(str(x[key]) for x in r["ranks"])  # noqa: E731
    row["peak_rss_gib_per_rank"] = per("peak_rss_gib")
    row["rss_before_compile_gib_per_rank"] = per("rss_before_compile_gib")
    sent = [x["bytes_per_token"] for x in r["ranks"]]
    row["max_bytes_sent_per_token_per_rank"] = max(sent) if None not in sent else ""
    row["wait_s_per_token_per_rank"] = per("wait_s_per_token")
    row["wait_s_per_token_blocking_per_rank"] = per("wait_s_per_token_blocking")
    row["ranks_with_torch"] = sum(bool(x["torch_imported"]) for x in r["ranks"])
    return row


def _goals(flat, preset):
    from benchmarks.common import goal

    by = {(r["compile"], r["P"]): r for r in flat}
    ranks = sorted({r["P"] for r in flat})
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
        if 2 in ranks:
            one, two = by[(how, 1)], by[(how, 2)]
            others = " / ".join(str(r.get("others_cpu_share")) for r in (one, two))
            goals.append(
                goal(
                    f"{how}: tokens/s on 2 ranks / on one rank",
                    one["s_per_token"] / two["s_per_token"],
                    1.8,
                    unit="x",
                    note=f"other jobs took {others} of the CPUs while 1 / 2 ranks were timed",
                )
            )
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
    goals.append(
        goal(
            "graph ranks (every run above) that imported torch",
            sum(r["ranks_with_torch"] for r in flat),
            0,
            higher=False,
            unit="",
        )
    )
    return goals


def _notes(preset):
    return [
        f"{preset} shapes, untrained weights (seed 0): circuit = the model as normfree (Claims 3+4), official "
        "= the released LN model; numba with one thread per rank; each rank compiles only its block from its "
        "slice of model.safetensors and imports no torch (ranks_with_torch; rss_before_compile_gib: what a "
        "rank holds before the compile: Python, numpy, scipy, mpi4py).",
        "Timing: one warm-up token, then 2 x tokens timed between barriers, alternating overlap on and off; "
        "s_per_token is the median token with overlap on (other jobs share the machine), s_per_token_blocking "
        "the median with it off. Overlap on: each communication sub-round posts its collectives first "
        "(MPI_Iallreduce of the partial sums; Iallgather + Iallgatherv of gathered sources) and runs the rules "
        "that need neither before it waits; in the read of sigma_l (X -> hubs), the layer's Hebbian write and "
        "damping of sigma_l, hoisted from later sub-rounds, run while the Allreduce is in flight. Off: each "
        "collective is waited for at once, every rule in its own sub-round (the same bits). wait_s = a rank's "
        "mean time blocked in the collectives per token, per mode. P above the 2 cores oversubscribes them. "
        "The machine is shared: busy_before = how busy its CPUs were just before the launch (after waiting for "
        "them to fall below 25%, at most --wait-idle seconds), others_cpu_share = the share of its CPUs that "
        "other processes took while the tokens were timed (all CPU time less the ranks' own).",
        "Bytes sent = the payload a rank contributes to the exchanges per token; the design minimum = the "
        "replicated targets of the neuron -> hub groups summed over the sub-rounds. The ~100M model on 4 ranks "
        "and the projections are in docs/distributed.md (`--compile circuit --N 32768 --ranks 4`, `--project`).",
    ]


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
    p.add_argument(
        "--profile",
        action="store_true",
        help="print where each rank's token goes (own block / replicated hubs / waiting / the rest) and its "
        "active fractions, per configuration (no RESULTS.md section)",
    )
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each run, wait up to this long for the CPUs to be less than 25%% busy (other jobs)",
    )
    p.add_argument(
        "--write",
        action="store_true",
        help="run the registered entry (circuit and official, goals computed) with --preset, --ranks, --tokens, "
        "--mem-gib (default 10) and write its section of benchmarks/RESULTS.md",
    )
    a = p.parse_args(argv)
    if a.project:
        return project(a.project)
    if a.write:
        from benchmarks.__main__ import write_section

        r = run(False, a.preset, a.ranks, a.tokens, a.mem_gib, lambda line: print(line, flush=True), a.wait_idle)
        r["notes"].insert(
            0, "Command: `python -m benchmarks.distributed_bench " + " ".join(argv or sys.argv[1:]) + "`."
        )
        for g in r["goals"]:
            print(json.dumps(g))
        print("wrote", write_section(r))
        return 0
    if a.make:
        make_model(a.make, a.preset, a.N, a.dir)
        return 0
    if a.one and a.profile:
        return profile(a.dir, a.one, a.tokens)
    if a.one:
        out = one(a.one, a.dir, a.tokens, a.verify)
        if out is not None:
            print(json.dumps(out), flush=True)
        return 0
    rows = []
    for how in a.hows:
        for P in a.ranks:
            if a.profile:
                for row in launch(how, a.preset, a.tokens, P, False, a.mem_gib, a.N, a.wait_idle, prof=True):
                    print(json.dumps(row), flush=True)
                continue
            r = launch(how, a.preset, a.tokens, P, a.verify, a.mem_gib, a.N, a.wait_idle)
            print(json.dumps(r), flush=True)
            if a.out:
                with open(a.out, "a") as f:
                    f.write(json.dumps(r) + "\n")
            rows.append(r)
    if rows:
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
