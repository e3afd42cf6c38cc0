"""The long-context memory of the graph: a compiled paper-25m run over 1,024 tokens, window by window.

    python -m benchmarks.graph_long                   # official (1,024 tokens) and circuit (384), paper-25m
    python -m benchmarks.graph_long --quick           # the tiny preset, 256 tokens each
    python -m benchmarks.graph_long --compile official --tokens 512 --window 128   # one compile, JSON out

The tensor model's state rho is a fixed n x d per layer, whatever the context length, and so is the graph's
sigma: a token's cost must not grow with the tokens before it. In the numba backend the damping of sigma is
lazy (a damp sub-round advances a clock; a synapse catches up when a read or a write next touches it), so a
token costs the synapses it touches, however long the run. This benchmark feeds one long text through
`equivalence.GraphRunner(compiled, "numba").feed` and records, per window of tokens: wall tokens/s, CPU seconds
per token (`time.process_time`) for the whole step, for the graph alone (`Simulator.feed`) and for the runner's
own part (the step less the graph), the process's resident memory (VmRSS), the bytes of the live synaptic state
(sigma and the lazy clocks) and the bytes the runner's monitors hold (the logits and hub records the runner keeps
for every token). One child process per compile, so each memory figure is its own, with numba on one thread
(NUMBA_NUM_THREADS=1): a single thread's CPU time is close to what its work costs whatever else runs on the
machine, whereas parallel workers that wait for each other under load count the wait as CPU time (with two
threads, a run while the load average rose from 1 to 4 gave the graph's CPU s/token 1.4x higher at the end).

Model: paper-25m (untrained, seed 0, dropout 0), compiled "official" (the model as it is) and "circuit" (the
model as variant normfree); the text is a fixed passage repeated (no data set is needed). The circuit run is
shorter (384 tokens: three windows) so that the module stays near 8 minutes on a quiet machine (one thread: the
graph alone took 0.20 CPU s/token official, 0.38 circuit; the whole module 7.5 minutes at load average 1-1.5).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks.common import save_figure

HERE = os.path.dirname(os.path.abspath(__file__))
FIGURE = os.path.join(HERE, "figures", "graph_long.png")
TEXT = (
    b"First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. First Citizen: You are "
    b"all resolved rather to die than to famish? All: Resolved. resolved. "
)
FULL = {"official": (1024, 128), "circuit": (384, 128)}  # compile: (tokens, tokens per window)
QUICK = {"official": (256, 32), "circuit": (256, 32)}
FLAT = 1.1  # goal: the last window's CPU s/token <= FLAT x the second's (the first is warm-up)
THREADS = 1  # numba threads in the children (CPU time per token undisturbed by waiting workers)
RSS_GROWTH = 0.01  # goal: RSS growth from the end of the first window to the end of the run


def text_ids(tokens: int):
    """`tokens` byte ids of TEXT repeated."""
    import numpy as np

    reps = -(-tokens // len(TEXT))
    return np.frombuffer((TEXT * reps)[:tokens], dtype=np.uint8).astype(np.int64)


def vm_rss() -> int:
    """This process's resident set size now, bytes (VmRSS of /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def state_bytes(sim) -> int:
    """Bytes of the live synaptic state: the backend's sigma arrays and its lazy-damping clocks. Read in place
    (`sim.state` would bring every synapse up to date and copy it, changing what the next window does)."""
    edges = sim._state.edges
    clocks = getattr(sim.backend, "last", {})
    return sum(a.nbytes for a in edges.values()) + sum(a.nbytes for a in clocks.values())


def record_bytes(sim) -> int:
    """Bytes the monitors attached to `sim` hold in their records (GraphRunner's logits and hub monitors)."""
    return sum(a.nbytes for m in sim.monitors for rows in getattr(m, "_data", {}).values() for a in rows)


def build(how: str, preset: str):
    """The compiled graph of `preset` (untrained, seed 0, dropout 0; circuit: the model as variant normfree): the
    model equiv_bench builds."""
    import equivalence
    from benchmarks.equiv_bench import build as model_of

    model = model_of(how, preset)
    return model.config, equivalence.compile_model(equivalence.TensorRunner(model).model, how)


def one(how: str, preset: str, tokens: int, window: int) -> dict:
    """Compile, then feed `tokens` ids through GraphRunner.feed, measuring every `window` tokens."""
    import equivalence

    t = time.perf_counter()
    cfg, compiled = build(how, preset)
    out = dict(preset=preset, compile=how, variant=cfg.variant, n=cfg.n, tokens=tokens, window=window)
    out["compile_s"] = round(time.perf_counter() - t, 1)
    runner = equivalence.GraphRunner(compiled, "numba")
    sim, graph_cpu = runner.sim, [0.0]
    feed = sim.feed

    def timed_feed(*args, **kw):  # CPU time inside the graph's own step (the runner's readout excluded)
        c = time.process_time()
        res = feed(*args, **kw)
        graph_cpu[0] += time.process_time() - c
        return res

    sim.feed = timed_feed
    gen = runner.feed(text_ids(tokens))
    out["windows"] = []
    for w in range(tokens // window):
        t, c, g = time.perf_counter(), time.process_time(), graph_cpu[0]
        for _ in range(window):
            next(gen)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        out["windows"].append(
            dict(
                first_token=w * window,
                tokens_per_s=window / wall,
                cpu_s_per_token=cpu / window,
                graph_cpu_s_per_token=(graph_cpu[0] - g) / window,
                runner_cpu_s_per_token=(cpu - graph_cpu[0] + g) / window,
                rss_MiB=vm_rss() / 2**20,
                state_MB=state_bytes(sim) / 1e6,
                records_MB=record_bytes(sim) / 1e6,
            )
        )
    return out


def measure(preset: str, plan: dict, log=print) -> list:
    """One child process per compile (each memory figure its own), run one after the other, numba on THREADS."""
    results = []
    for how, (tokens, window) in plan.items():
        cmd = [sys.executable, "-m", "benchmarks.graph_long", "--compile", how, "--preset", preset]
        cmd += ["--tokens", str(tokens), "--window", str(window)]
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, NUMBA_NUM_THREADS=str(THREADS)))
        if r.returncode != 0:
            raise RuntimeError(f"graph_long {how}: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        results.append(json.loads(r.stdout.strip().splitlines()[-1]))
        log(f"graph_long {how}: {tokens} tokens in {time.perf_counter() - t:.0f} s")
    return results


def rows_of(results: list) -> list:
    """One row per (compile, window)."""
    return [
        dict(
            compile=r["compile"],
            tokens=f"{w['first_token']}-{w['first_token'] + r['window'] - 1}",
            **{k: v for k, v in w.items() if k != "first_token"},
        )
        for r in results
        for w in r["windows"]
    ]


def goals_of(results: list) -> list:
    """Per compile: CPU s/token flat (last window / second, the runner's whole step and the graph alone), RSS growth
    (all of it, and less what the runner's records grew by) and the state's bytes unchanged."""
    from benchmarks.common import goal

    out = []
    for r in results:
        ws, how = r["windows"], r["compile"]
        if len(ws) < 3:
            continue  # the first window is warm-up: flatness needs two more
        span = f"tokens {ws[-1]['first_token']}-{ws[-1]['first_token'] + r['window'] - 1} vs {r['window']}-"
        span += f"{2 * r['window'] - 1}"
        for key, what in (("cpu_s_per_token", "GraphRunner.feed"), ("graph_cpu_s_per_token", "Simulator.feed")):
            out.append(
                goal(
                    f"{how}: CPU s/token of {what}, {span}",
                    ws[-1][key] / ws[1][key],
                    FLAT,
                    higher=False,
                )
            )
        grown = ws[-1]["rss_MiB"] - ws[0]["rss_MiB"]
        records = (ws[-1]["records_MB"] - ws[0]["records_MB"]) * 1e6 / 2**20  # MiB
        for what, mib in (("", grown), (" less the runner's records", grown - records)):
            out.append(
                goal(
                    f"{how}: RSS growth{what} from token {r['window']} to {r['tokens']}",
                    100 * mib / ws[0]["rss_MiB"],
                    100 * RSS_GROWTH,
                    unit="%",
                    higher=False,
                    note=f"{mib:.1f} MiB",
                )
            )
        out.append(
            goal(
                f"{how}: synaptic state bytes, last window / first",
                ws[-1]["state_MB"] / ws[0]["state_MB"],
                1.0,
                higher=False,
            )
        )
    return out


def plot(rows: list, title: str, path: str) -> None:
    """tokens/s (wall, and per CPU second of the graph alone) and RSS per window, one colour per compile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for how in dict.fromkeys(r["compile"] for r in rows):
        ws = [r for r in rows if r["compile"] == how]
        mid = [sum(int(t) for t in w["tokens"].split("-")) / 2 for w in ws]
        line = axes[0].plot(mid, [w["tokens_per_s"] for w in ws], marker=".", label=f"{how}, wall")
        graph = [1 / w["graph_cpu_s_per_token"] for w in ws]
        axes[0].plot(mid, graph, ls="--", color=line[0].get_color(), label=f"{how}, graph alone per CPU s")
        axes[1].plot(mid, [w["rss_MiB"] / 1024 for w in ws], marker=".", label=how)
    axes[0].set_ylabel("tokens/s (per window)")
    axes[1].set_ylabel("RSS, GiB")
    for ax in axes:
        ax.set_xlabel("token")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def run(quick: bool = False, figure: str | None = None) -> dict:
    """Entry of `python -m benchmarks`: paper-25m (quick: tiny, 256 tokens); the figure at `figure` (default:
    benchmarks/figures/graph_long.png in a full run, none in a quick one)."""
    preset, plan = ("tiny", QUICK) if quick else ("paper-25m", FULL)
    results = measure(preset, plan, log=lambda s: None)
    rows = rows_of(results)
    figure = figure or (None if quick else FIGURE)
    if figure:
        plot(rows, f"{preset} as a neuron graph (numba, {THREADS} thread), one long run", figure)
    notes = [
        f"{preset}, untrained (seed 0), compiled official and circuit (the model as variant normfree), numba "
        f"backend on {THREADS} thread(s), float64, one child process each; a fixed {len(TEXT)}-byte passage repeated. "
        + ", ".join(f"{how}: {t} tokens in windows of {w}" for how, (t, w) in plan.items())
        + ". The first window includes numba's compile (warm-up).",
        "tokens_per_s: wall; cpu_s_per_token: process CPU time (every thread) per token of GraphRunner.feed; "
        "graph_cpu_s_per_token: the same inside Simulator.feed (the graph alone); runner_cpu_s_per_token: the "
        "rest (the runner's readout of its monitors); rss_MiB: VmRSS at the window's end; state_MB: sigma and "
        "the lazy clocks; records_MB: what the runner's monitors hold.",
    ]
    if figure:
        notes.append(f"Figure: {os.path.relpath(figure, os.path.dirname(HERE))}.")
    return dict(
        name="graph_long",
        title=f"The long-context memory of the graph: tokens/s flat over a long run at {preset}",
        notes=notes,
        rows=rows,
        goals=goals_of(results),
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the tiny preset, 256 tokens per compile")
    p.add_argument("--compile", dest="how", choices=("official", "circuit"), help="one compile; prints JSON")
    p.add_argument("--preset", default="paper-25m")
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--window", type=int, default=128)
    a = p.parse_args(argv)
    if a.window < 1 or a.tokens < a.window:
        p.error(f"--window must be >= 1 and <= --tokens, got window {a.window}, tokens {a.tokens}")
    if a.how:
        print(json.dumps(one(a.how, a.preset, a.tokens, a.window)), flush=True)
        return 0
    r = run(a.quick)
    from benchmarks.__main__ import table

    print("\n".join(r["notes"] + [""] + table(r["rows"]) + [""] + table(r["goals"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
