"""bdh_graph throughput: tokens/s and synaptic events/s vs n and active fraction, against dense Eq. 6.

    python -m benchmarks.graph_bench [--quick] [--ns 1024 4096] [--fractions 0.05 1.0] [--tokens 8]

Network: Table 1(b), L layers, Gs complete (n^2 synapses, the Obs. 4 shape), damping u = 0.99 on every key
(the numba backend's lazy damping is exercised), Gx_e = Gx_i = one random graph with fan-out 32 (balanced
E/I: every message is sent and counted, and the net input cancels exactly, so X = x0 and the active fraction
stays the input's), Gy_e, Gy_i independent random graphs with fan-out 32. Each token activates a fresh random
fraction f of the neurons in x0 and y0. Dense baselines evaluate Eq. 6 with n x n matrices (NumPy: the
reference bdh_graph.reference.eq6; torch: the same three lines in torch), float64, CPU.
Times exclude numba compilation (one warm-up token first, untimed). Synaptic events are counted with an
EventMonitor in a separate, untimed run over the same tokens, over exactly the timed tokens 1..T-1: one event per
message sent along an edge (bdh_graph.monitors). The activity columns are over the same tokens.
The memory limit of numba: one event touches an int64 index, a float64 weight and the target's float64
accumulator (BYTES_PER_EVENT = 24), so the read bandwidth measured in the same run allows bandwidth / 24
events/s; `fraction_of_bandwidth` is the measured events/s over that.
"""

import argparse
import time

import numpy as np
import scipy.sparse as sp

from bdh_graph import EventMonitor, Network
from bdh_graph.reference import eq6

FANOUT = 32
BYTES_PER_EVENT = 24  # int64 index + float64 weight + float64 target accumulator


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


def time_backend(net, backend, x0, y0):
    sim = net.simulator(backend=backend)
    sim.feed(x0[0], y0[0])  # warm-up (numba compiles here)
    t0 = time.perf_counter()
    for t in range(1, len(x0)):
        sim.feed(x0[t], y0[t])
    if backend == "pyg":
        sim.node("X")  # synchronise a CUDA device
    return (len(x0) - 1) / (time.perf_counter() - t0)


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


def measure(ns, fracs, T, L, backends, pyg_only=None, log=print, bandwidth=None):
    """Rows of {n, f, backend, tokens_per_s, Mevents_per_s, events_per_token, active_x, active_y}.
    pyg_only: the (n, f) pairs where pyg runs (None: all). bandwidth (bytes/s): add numba's fraction of it."""
    rows = []
    for n in ns:
        mats, u, net = build(n, L)
        for f in fracs:
            x0, y0 = inputs(n, T, f)
            ev, (ax, ay) = count_events(net, x0, y0)
            for b in backends:
                if b == "pyg" and pyg_only is not None and (n, f) not in pyg_only:
                    continue
                tps = time_backend(net, b, x0, y0)
                rows.append(
                    dict(
                        n=n,
                        f=f,
                        backend=b,
                        tokens_per_s=tps,
                        Mevents_per_s=tps * ev / 1e6,
                        events_per_token=ev,
                        active_x=float(ax),
                        active_y=float(ay),
                    )
                )
                if b == "numba" and bandwidth:
                    rows[-1]["fraction_of_bandwidth"] = tps * ev * BYTES_PER_EVENT / bandwidth
                log(f"{n:>6} {f:>5.2f} {ax:>6.3f} {ay:>6.3f} {b:>12} {tps:>10.2f} {tps * ev / 1e6:>10.1f} {ev:>13.0f}")
        for name, fn in (("dense-numpy", dense_numpy_tps), ("dense-torch", dense_torch_tps)):
            x0, y0 = inputs(n, max(2, T // 2), 1.0)  # dense cost does not depend on activity
            tps = fn(mats, u, L, x0, y0)
            rows.append(dict(n=n, f="any", backend=name, tokens_per_s=tps))
            log(f"{n:>6} {'any':>5} {'':>6} {'':>6} {name:>12} {tps:>10.2f}")
    by = {(r["n"], r["f"], r["backend"]): r["tokens_per_s"] for r in rows}
    lo, hi = min(fracs), max(fracs)
    for n in ns:
        if (n, lo, "numba") in by and (n, hi, "numba") in by:
            log(
                f"n={n}: numba speed-up at f={lo} over f={hi}: {by[(n, lo, 'numba')] / by[(n, hi, 'numba')]:.1f}x; "
                f"numba f={lo} vs dense-numpy: {by[(n, lo, 'numba')] / by[(n, 'any', 'dense-numpy')]:.1f}x, "
                f"vs dense-torch: {by[(n, lo, 'numba')] / by[(n, 'any', 'dense-torch')]:.1f}x"
            )
    return rows


def run(quick=False, ns=None, fracs=None, T=None):
    """Entry for `python -m benchmarks`: rows, the bandwidth limit of numba, and the goals."""
    from benchmarks.common import goal, read_bandwidth

    dns, dfracs, dT = ([256, 1024], [0.05, 1.0], 4) if quick else ([1024, 2048, 4096], [0.05, 0.25, 1.0], 8)
    ns, fracs, T = ns or dns, fracs or dfracs, T or dT
    pyg_only = {(n, f) for n in ns for f in fracs if n <= 1024} | {(ns[-1], 1.0)}
    bw = read_bandwidth(0.25 if quick else 1.0)
    rows = measure(ns, fracs, T, 2, ["numba", "pyg"], pyg_only=pyg_only, log=lambda s: None, bandwidth=bw)
    by = {(r["n"], r["f"], r["backend"]): r for r in rows}
    big, lo, hi = ns[-1], min(fracs), max(fracs)
    tps = lambda n, f, b: by[(n, f, b)]["tokens_per_s"]  # noqa: E731
    goals = [
        goal(f"numba at f = {lo} vs f = {hi}, n = {n}: tokens/s ratio", tps(n, lo, "numba") / tps(n, hi, "numba"), 10.0)
        for n in ns
    ]
    goals.append(
        goal(
            f"numba (f = {lo}) vs dense NumPy Eq. 6 at n = {big}",
            tps(big, lo, "numba") / tps(big, "any", "dense-numpy"),
            1.0,
        )
    )
    goals.append(
        goal(
            f"pyg within 3x of numba at n = {big}, f = {hi} (pyg / numba tokens/s)",
            tps(big, hi, "pyg") / tps(big, hi, "numba"),
            1 / 3,
            unit="",
        )
    )
    for f in (lo, hi):
        goals.append(
            goal(
                f"numba synaptic events/s at n = {big}, f = {f} / what the read bandwidth allows "
                f"({BYTES_PER_EVENT} B per event)",
                by[(big, f, "numba")]["fraction_of_bandwidth"],
                0.3,
                unit="",
            )
        )
    notes = [
        f"L = 2, Gs complete (n^2 synapses), u = 0.99, Gx/Gy fan-out {FANOUT}, {T} tokens (the first untimed), "
        f"float64, CPU. Events and activity counted over the timed tokens.",
        f"Read bandwidth in this run (torch sum over {0.25 if quick else 1.0:g} GiB): {bw / 1e9:.1f} GB/s, so "
        f"numba's limit is {bw / BYTES_PER_EVENT / 1e6:,.0f} M events/s ({BYTES_PER_EVENT} B per event).",
    ]
    return dict(
        name="graph_bench",
        title="bdh_graph: tokens/s and synaptic events/s vs n and activity",
        notes=notes,
        rows=rows,
        goals=goals,
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    p.add_argument("--ns", type=int, nargs="*", default=None)
    p.add_argument("--fractions", type=float, nargs="*", default=None)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--tokens", type=int, default=None)
    p.add_argument("--backends", nargs="*", default=["numba", "pyg"])
    p.add_argument(
        "--write",
        action="store_true",
        help="run the registered entry (goals) at these sizes and write its section of benchmarks/RESULTS.md",
    )
    args = p.parse_args(argv)
    if args.write:
        import sys

        from benchmarks.__main__ import write_section

        r = run(args.quick, args.ns, args.fractions, args.tokens)
        r["notes"].insert(0, "Command: `python -m benchmarks.graph_bench " + " ".join(argv or sys.argv[1:]) + "`.")
        print(r)
        print("wrote", write_section(r, args.quick))
        return 0
    ns = args.ns or ([256, 1024] if args.quick else [512, 1024, 2048, 4096])
    fracs = args.fractions or ([0.05, 1.0] if args.quick else [0.05, 0.25, 1.0])
    T = args.tokens or (4 if args.quick else 8)
    print(
        f"bdh_graph benchmark: L={args.layers}, Gs complete, u=0.99, Gx/Gy fan-out {FANOUT}, {T} tokens, float64, CPU"
    )
    print(
        f"{'n':>6} {'f':>5} {'act x':>6} {'act y':>6} {'backend':>12} "
        f"{'tokens/s':>10} {'Mevents/s':>10} {'events/token':>13}"
    )
    measure(ns, fracs, T, args.layers, args.backends, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
