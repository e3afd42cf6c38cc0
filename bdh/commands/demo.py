"""`bdh demo`: the paper's story on a trained model, in two parts, each trained once (cached), compiled to its
neuron graph, stepped token by token through the graph simulator, verified against the tensor model, reported.

Part 1: a Normfree model (Eq. 7, ALiBi damping) as the Table 1(b) graph with neuron -> neuron synapses (Obs. 4):
which synapses potentiate when each fact is heard, and the ablation that proves they hold it. Part 2: the released
LayerNorm model (official) as a graph with hub populations and LayerNorm from local rounds.

The pipeline lives in `bdh.teach` (demo, memory, figures, html, view); this module only prints.
"""

from __future__ import annotations

import os
import time

from bdh.options import add_backend, count


def add_parser(subparsers):
    p = subparsers.add_parser(
        "demo",
        help="train a tiny model, run it as a neuron graph, check it equals the tensor model, report",
        description="The main job (make demo): train the tiny preset on the built-in recall task (cached under "
        "$BDH_CACHE or ~/.cache/bdh), compile it to its neuron graph, step a recall prompt through "
        "the graph simulator token by token, verify graph/tensor equivalence, write report.html.",
    )
    p.add_argument("--out", default=os.path.join("runs", "demo"), help="report directory (default runs/demo)")
    p.add_argument("--fast", action="store_true", help="seconds instead of minutes: 4 training steps, short prompt")
    p.add_argument("--no-cache", action="store_true", help="train again even if a cached model exists")
    add_backend(p)
    p.add_argument(
        "--pairs", type=count(1, 16), default=None, help="key-value pairs in the prompt (default 8; --fast 3)"
    )
    p.add_argument(
        "--part",
        default="both",
        choices=("both", "normfree", "official"),
        help="normfree: part 1 only (the local graph with neuron -> neuron synapses and the memory "
        "ablation); official: part 2 only (the released LayerNorm model); both (default)",
    )
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from bdh.errors import InputError

    pairs = args.pairs if args.pairs is not None else (3 if args.fast else 8)
    if not 1 <= pairs <= 16:
        raise InputError(f"--pairs: expected 1..16, got {pairs}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise InputError(f"--out {args.out}: exists and is not a directory")
    os.makedirs(args.out, exist_ok=True)
    from bdh.teach.html import write_html
    from bdh.teach.lesson import Part, run_part
    from bdh.teach.words import notation_html

    t_start = time.perf_counter()
    parts = ("normfree", "official") if args.part == "both" else (args.part,)
    blocks = [
        (
            "p",
            "What this page shows: a small BDH model (the tensor model of bdh_gpu) was compiled into a graph of "
            "neurons (and, for the LayerNorm model, helper nodes) connected by synapses, and a recall prompt was "
            "fed to that graph one byte at a time by the graph simulator, which runs only local rules: each "
            "node reads its own variables and what arrives over its synapses. The graph's outputs were then "
            "checked against the tensor model's in float64. The prompt first lists key=value facts, then asks "
            "for each key; the model has to answer from what the facts wrote into its synapses.",
        ),
        ("h2", "Notation"),
        ("html", notation_html()),
    ]
    ok, times = True, {}
    for k, part in enumerate(parts, start=1):
        out = args.out if part == "normfree" or len(parts) == 1 else os.path.join(args.out, part)
        os.makedirs(out, exist_ok=True)
        step = Part(k, part, out, os.path.relpath(out, args.out), args.backend, args.fast, not args.no_cache, pairs)
        part_ok, part_blocks, part_times = run_part(step)
        ok &= part_ok
        blocks += part_blocks
        times.update({f"{part} {name}": v for name, v in part_times.items()})
    path = write_html(os.path.join(args.out, "report.html"), "bdh demo: a trained BDH model as a neuron graph", blocks)
    print(f"report: {path}")
    print(
        f"done in {time.perf_counter() - t_start:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in times.items())}): "
        f"equivalence {'OK' if ok else 'MISMATCH'}"
    )
    return 0 if ok else 1
