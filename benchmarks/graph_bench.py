"""bdh_graph throughput: tokens/s and synaptic events/s vs n and active fraction, against dense Eq. 6.

    python -m benchmarks.graph_bench [--quick] [--ns 1024 4096] [--fractions 0.05 1.0] [--tokens 8] [--rounds 3]

Network: Table 1(b), L layers, Gs complete (n^2 synapses, the Obs. 4 shape), damping u = 0.99 on every key
(the numba backend's lazy damping is exercised), Gx_e = Gx_i = one random graph with fan-out 32 (balanced
E/I: every message is sent and counted, and the net input cancels exactly, so X = x0 and the active fraction
stays the input's), Gy_e, Gy_i independent random graphs with fan-out 32. Each token activates a fresh random
fraction f of the neurons in x0 and y0. Dense baselines evaluate Eq. 6 with n x n matrices (NumPy: the
reference bdh_graph.reference.eq6; torch: the same three lines in torch), float64, CPU.
Times exclude numba compilation (one warm-up token first, untimed). The machine is shared: every case (backend,
dtype, fraction, dense baseline) is timed once per round, the rounds interleaved (ROUNDS = 3), and a row reports
the median tokens/s with the min-max over the rounds. Synaptic events are counted with an EventMonitor in a
separate, untimed run over the same tokens, over exactly the timed tokens 1..T-1: one event per message sent
along an edge (bdh_graph.monitors). The activity columns are over the same tokens.
The memory limit of numba: one event touches an int64 index, a weight and the target's float64 accumulator
(`bytes_per_event`: 24 B in float64, 20 in float32), so the read bandwidth measured in the same run (a torch sum,
once per round, the median) allows bandwidth / bytes_per_event events/s; `fraction_of_bandwidth` is the measured
events/s over that. `traffic_GB_s` is the numba backend's own model of what it moved: `backend.traffic`, the
bytes of synapse arrays (weights, indices, sigma) its kernels read and wrote over the timed tokens, over their
time; `traffic_fraction` is that over the read bandwidth. float32 rows (`dtype="float32"`, weights and sigma in
float32) are timed where the Simulator takes a dtype.
"""

import argparse
import inspect
import statistics
import time
from collections import defaultdict

import numpy as np
import scipy.sparse as sp

from bdh_graph import EventMonitor, Network, Simulator
from bdh_graph.reference import eq6

FANOUT = 32
ROUNDS = 3
DENSE = ("dense-numpy", "dense-torch")


def bytes_per_event(dtype="float64"):
    """int64 index + weight (of the graph's dtype) + float64 target accumulator."""
    return 8 + np.dtype(dtype).itemsize + 8


def float32_supported():
    """Whether `Network.simulator` takes dtype= (the float32 graph)."""
    return "dtype" in inspect.signature(Simulator.__init__).parameters


def build(n, layers, seed=0):
    rng = np.random.default_rng(seed)

    def sparse_graph():
        cols = np.repeat(np.arange(n), FANOUT)
        rows = rng.integers(0, n, n * FANOUT)
        M = sp.csc_matrix((rng.uniform(0.5, 1.0, n * FANOUT) / FANOUT, (rows, cols)), shape=(n, n))
        M.sum_duplicates()
        return M

    Gx = sparse_graph()
    mats = dict(
        Gx_e=Gx, Gx_i=Gx.copy(), Gy_e=sparse_graph(), Gy_i=sparse_graph() * 0.5, Gs=sp.csc_matrix(np.ones((n, n)))
    )
    u = np.full(n, 0.99)
    return mats, u, Network.from_scipy(**mats, u=u, layers=layers)


def inputs(n, T, f, seed=1):
    rng = np.random.default_rng(seed)
    x0, y0 = np.zeros((T, n)), np.zeros((T, n))
    k = max(1, int(round(f * n)))
    for t in range(T):
        x0[t, rng.choice(n, k, replace=False)] = rng.uniform(0.1, 1.0, k)
        y0[t, rng.choice(n, k, replace=False)] = rng.uniform(0.1, 1.0, k)
    return x0, y0


def time_backend(net, backend, x0, y0, dtype="float64"):
    """(tokens/s over tokens 1..T-1, bytes of synapse arrays the backend moved per timed token or None): token 0
    is the untimed warm-up (numba compiles and plans there); the backend's traffic counter is reset after it."""
    sim = net.simulator(backend=backend, **({} if dtype == "float64" else {"dtype": dtype}))
    sim.feed(x0[0], y0[0])
    counted = hasattr(sim.backend, "traffic")
    if counted:
        sim.backend.traffic = 0
    t0 = time.perf_counter()
    for t in range(1, len(x0)):
        sim.feed(x0[t], y0[t])
    if backend == "pyg":
        sim.node("X")  # synchronise a CUDA device
    dt = time.perf_counter() - t0
    return (len(x0) - 1) / dt, (sim.backend.traffic / (len(x0) - 1) if counted else None)


def count_events(net, x0, y0):
    """Synaptic events per token and the active fractions of x and y, over the timed tokens 1..T-1 (token 0 is
    the untimed warm-up of `time_backend`, fed here too so that the state is the same)."""
    sim = net.simulator(backend="numba")
    ev = EventMonitor(sim)
    act = []
    sim.feed(x0[0], y0[0])
    before = ev.total
    for t in range(1, len(x0)):
        xs, ys = sim.feed(x0[t], y0[t])
        act.append((np.mean(xs[1:] != 0), np.mean(ys[1:] != 0)))
    return (ev.total - before) / (len(x0) - 1), np.mean(act, axis=0)


def dense_numpy_tps(mats, u, layers, x0, y0):
    D = {k: v.toarray() for k, v in mats.items()}
    t0 = time.perf_counter()
    eq6(x0, y0, **D, u=u, layers=layers)
    return len(x0) / (time.perf_counter() - t0)


def dense_torch_tps(mats, u, layers, x0, y0):
    import torch

    D = {k: torch.as_tensor(v.toarray()) for k, v in mats.items()}
    Gx, Gy, Gs, uu = D["Gx_e"] - D["Gx_i"], D["Gy_e"] - D["Gy_i"], D["Gs"], torch.as_tensor(u)
    X0, Y0 = torch.as_tensor(x0), torch.as_tensor(y0)
    n = x0.shape[1]
    sigma = torch.zeros(layers, n, n, dtype=torch.float64)
    t0 = time.perf_counter()
    for t in range(len(x0)):
        x, y = X0[t], Y0[t]
        for l in range(layers):
            x = x + torch.relu(Gx @ y)
            a = sigma[l] @ x
            sigma[l] = (sigma[l] + torch.outer(y, x) * Gs) * uu[None, :]
            y = torch.relu(Gy @ a) * x
    return len(x0) / (time.perf_counter() - t0)


def cases(n, fracs, backends, pyg_only=None, float32_at=None):
    """What is timed at size n: (f, backend, dtype) for the graph backends, ("any", name, "float64") for the dense
    baselines. pyg_only: the (n, f) pairs where pyg runs (None: all); float32_at: the (n, f) pairs where numba
    also runs in float32."""
    out = []
    for f in fracs:
        out += [(f, b, "float64") for b in backends if b != "pyg" or pyg_only is None or (n, f) in pyg_only]
        if "numba" in backends and (n, f) in (float32_at or ()):
            out.append((f, "numba", "float32"))
    return out + [("any", name, "float64") for name in DENSE]


def _time_case(net, mats, u, L, data, case):
    f, b, dtype = case
    if b == "dense-numpy":
        return dense_numpy_tps(mats, u, L, *data["dense"]), None
    if b == "dense-torch":
        return dense_torch_tps(mats, u, L, *data["dense"]), None
    return time_backend(net, b, *data[f], dtype=dtype)


def _span(xs):
    return "-".join(f"{x:,.3g}" if x < 100 else f"{x:,.0f}" for x in (min(xs), max(xs)))


def measure(ns, fracs, T, L, backends, pyg_only=None, log=print, rounds=ROUNDS, float32_at=None, bandwidth_gib=None):
    """(rows, bandwidth samples in bytes/s). Rows: {n, f, backend, dtype, tokens_per_s (median over the rounds),
    tokens_per_s_range, Mevents_per_s, events_per_token, active_x, active_y}, and for numba the traffic per token
    and, when bandwidth_gib is given (the read bandwidth timed once per round over that many GiB), the fractions
    of the median bandwidth. Every case of one n is timed once per round, the rounds interleaved."""
    from benchmarks.common import read_bandwidth

    rows, bws = [], []
    for n in ns:
        mats, u, net = build(n, L)
        data = {f: inputs(n, T, f) for f in fracs}
        data["dense"] = inputs(n, max(2, T // 2), 1.0)  # dense cost does not depend on activity
        events = {f: count_events(net, *data[f]) for f in fracs}
        todo = cases(n, fracs, backends, pyg_only, float32_at)
        tps, traffic = defaultdict(list), {}
        for _ in range(rounds):
            if bandwidth_gib:
                bws.append(read_bandwidth(bandwidth_gib))
            for case in todo:
                t, tr = _time_case(net, mats, u, L, data, case)
                tps[case].append(t)
                traffic[case] = tr
        for case in todo:
            rows.append(_row(n, case, tps[case], events.get(case[0]), traffic[case], log))
        del net, mats
    if bws:
        bw = statistics.median(bws)
        for r in rows:
            if r["backend"] == "numba":
                r["fraction_of_bandwidth"] = r["Mevents_per_s"] * 1e6 * bytes_per_event(r["dtype"]) / bw
                r["traffic_fraction"] = r["traffic_GB_s"] * 1e9 / bw
    _log_ratios(rows, ns, fracs, log)
    return rows, bws


def _row(n, case, samples, events, traffic, log):
    f, b, dtype = case
    t = statistics.median(samples)
    row = dict(n=n, f=f, backend=b, dtype=dtype, tokens_per_s=t, tokens_per_s_range=_span(samples))
    if events is not None:
        ev, (ax, ay) = events
        row.update(Mevents_per_s=t * ev / 1e6, events_per_token=ev, active_x=float(ax), active_y=float(ay))
    if traffic is not None:
        row["traffic_GB_s"] = t * traffic / 1e9
    ev_s = f"{row['Mevents_per_s']:>10.1f} {row['events_per_token']:>13.0f}" if events is not None else ""
    log(f"{n:>6} {f!s:>5} {b:>12} {dtype:>8} {t:>10.2f} {row['tokens_per_s_range']:>15} {ev_s}")
    return row


def _log_ratios(rows, ns, fracs, log):
    by = {(r["n"], r["f"], r["backend"], r["dtype"]): r["tokens_per_s"] for r in rows}
    lo, hi = min(fracs), max(fracs)
    for n in ns:
        if (n, lo, "numba", "float64") in by and (n, hi, "numba", "float64") in by:
            s = by[(n, lo, "numba", "float64")]
            log(
                f"n={n}: numba speed-up at f={lo} over f={hi}: {s / by[(n, hi, 'numba', 'float64')]:.1f}x; "
                f"numba f={lo} vs dense-numpy: {s / by[(n, 'any', 'dense-numpy', 'float64')]:.1f}x, "
                f"vs dense-torch: {s / by[(n, 'any', 'dense-torch', 'float64')]:.1f}x"
            )


def run(quick=False, ns=None, fracs=None, T=None, rounds=ROUNDS):
    """Entry for `python -m benchmarks`: rows, the bandwidth limit of numba, and the goals (issue 20)."""
    dns, dfracs, dT = ([256, 1024], [0.05, 1.0], 4) if quick else ([1024, 2048, 4096], [0.05, 0.25, 1.0], 8)
    ns, fracs, T = ns or dns, fracs or dfracs, T or dT
    big, lo, hi = ns[-1], min(fracs), max(fracs)
    pyg_only = {(n, f) for n in ns for f in fracs if n <= 1024} | {(big, hi)}
    f32 = float32_supported()
    gib = 0.25 if quick else 1.0
    rows, bws = measure(
        ns,
        fracs,
        T,
        2,
        ["numba", "pyg"],
        pyg_only=pyg_only,
        log=lambda s: None,
        rounds=rounds,
        float32_at={(big, lo), (big, hi)} if f32 else None,
        bandwidth_gib=gib,
    )
    bw = statistics.median(bws)
    notes = [
        f"L = 2, Gs complete (n^2 synapses), u = 0.99, Gx/Gy fan-out {FANOUT}, {T} tokens (the first untimed), "
        f"CPU; float64 unless the dtype column says float32. Events and activity counted over the timed tokens.",
        f"{rounds} rounds, interleaved: tokens_per_s is the median over the rounds, tokens_per_s_range their "
        f"min-max; every ratio below is of medians.",
        f"Read bandwidth in this run (torch sum over {gib:g} GiB, once per round): median {bw / 1e9:.1f} GB/s "
        f"({_span([b / 1e9 for b in bws])}), so numba's limit is {bw / bytes_per_event() / 1e6:,.0f} M events/s in "
        f"float64 ({bytes_per_event()} B per event) and {bw / bytes_per_event('float32') / 1e6:,.0f} M in float32 "
        f"({bytes_per_event('float32')} B).",
        "traffic_GB_s: the numba backend's count of the bytes of synapse arrays (weights, indices, sigma) its "
        "kernels read and wrote over the timed tokens (`backend.traffic`, modelled per call), over their time; "
        "traffic_fraction: that over the read bandwidth.",
    ]
    if not f32:
        notes.append(
            "float32 rows skipped: this checkout's Simulator takes no dtype= (the float32 graph is not merged)."
        )
    return dict(
        name="graph_bench",
        title="bdh_graph: tokens/s and synaptic events/s vs n and activity",
        notes=notes,
        rows=rows,
        goals=goals(rows, ns, lo, hi),
    )


def goals(rows, ns, lo, hi):
    """Issue 20's goals for numba in float64 (10x between activities at every n, 0.5 / 0.8 of the bandwidth limit
    at the largest n), and issue 10's against dense NumPy and PyG."""
    from benchmarks.common import goal

    by = {(r["n"], r["f"], r["backend"], r["dtype"]): r for r in rows}
    tps = lambda n, f, b: by[(n, f, b, "float64")]["tokens_per_s"]  # noqa: E731
    big = ns[-1]
    out = [
        goal(f"numba at f = {lo} vs f = {hi}, n = {n}: tokens/s ratio", tps(n, lo, "numba") / tps(n, hi, "numba"), 10.0)
        for n in ns
    ]
    out.append(
        goal(
            f"numba (f = {lo}) vs dense NumPy Eq. 6 at n = {big}",
            tps(big, lo, "numba") / tps(big, "any", "dense-numpy"),
            1.0,
        )
    )
    out.append(
        goal(
            f"pyg within 3x of numba at n = {big}, f = {hi} (pyg / numba tokens/s)",
            tps(big, hi, "pyg") / tps(big, hi, "numba"),
            1 / 3,
            unit="",
        )
    )
    for f, target in ((lo, 0.5), (hi, 0.8)):
        out.append(
            goal(
                f"numba float64 synaptic events/s at n = {big}, f = {f} / what the read bandwidth allows "
                f"({bytes_per_event()} B per event)",
                by[(big, f, "numba", "float64")]["fraction_of_bandwidth"],
                target,
                unit="",
            )
        )
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    p.add_argument("--ns", type=int, nargs="*", default=None)
    p.add_argument("--fractions", type=float, nargs="*", default=None)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--tokens", type=int, default=None)
    p.add_argument("--rounds", type=int, default=ROUNDS, help=f"interleaved timing rounds (default {ROUNDS})")
    p.add_argument("--backends", nargs="*", default=["numba", "pyg"])
    p.add_argument(
        "--write",
        action="store_true",
        help="run the registered entry (goals) at these sizes and write its section of benchmarks/RESULTS.md",
    )
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.write:
        import sys

        from benchmarks.__main__ import write_section

        r = run(args.quick, args.ns, args.fractions, args.tokens, args.rounds)
        r["notes"].insert(0, "Command: `python -m benchmarks.graph_bench " + " ".join(argv or sys.argv[1:]) + "`.")
        print(r)
        print("wrote", write_section(r, args.quick))
        return 0
    ns = args.ns or ([256, 1024] if args.quick else [512, 1024, 2048, 4096])
    fracs = args.fractions or ([0.05, 1.0] if args.quick else [0.05, 0.25, 1.0])
    T = args.tokens or (4 if args.quick else 8)
    print(
        f"bdh_graph benchmark: L={args.layers}, Gs complete, u=0.99, Gx/Gy fan-out {FANOUT}, {T} tokens, CPU, "
        f"median of {args.rounds} interleaved rounds"
    )
    print(
        f"{'n':>6} {'f':>5} {'backend':>12} {'dtype':>8} {'tokens/s':>10} {'min-max':>15} "
        f"{'Mevents/s':>10} {'events/token':>13}"
    )
    f32 = {(ns[-1], min(fracs)), (ns[-1], max(fracs))} if float32_supported() else None
    measure(
        ns, fracs, T, args.layers, args.backends, log=lambda s: print(s, flush=True), rounds=args.rounds, float32_at=f32
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
