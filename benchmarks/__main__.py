"""Run every registered benchmark: `python -m benchmarks [--quick] [--json OUT] [--no-write]`.

Rewrites benchmarks/RESULTS.md with the machine and the measured numbers (unless --quick or --no-write).
Add a benchmark by appending its module name to BENCHMARKS; a module exposes `run(quick) -> dict` with
`name`, `title` and `rows` (a list of flat dicts).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os

from benchmarks.common import machine

BENCHMARKS = ["train_speed", "decode", "graph_bench", "long_context", "quality", "gpu_throughput", "dist_train",
              "distributed_bench"]
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    return str(v)


def to_markdown(m: dict, results: list) -> str:
    lines = ["# Benchmark results", "",
             "Written by `python -m benchmarks` (measured numbers only; a figure marked fitted=True is extrapolated",
             "from measured forwards, see `benchmarks/decode.py`).", "",
             f"Machine: {m['cpu']}, {m['cores']} cores (torch threads {m['torch_threads']}), GPU: {m['gpu']}; "
             f"torch {m['torch']}, Python {m['python']}; {m['date']}.", ""]
    for r in results:
        lines += [f"## {r['title']} (`benchmarks/{r['name']}.py`)", ""]
        cols = []
        for row in r["rows"]:
            cols += [k for k in row if k not in cols]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_fmt(row.get(c, "")) for c in cols) + " |" for row in r["rows"]]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--quick", action="store_true", help="small sizes, a smoke run (does not rewrite RESULTS.md)")
    ap.add_argument("--json", metavar="OUT", help="also write all results as JSON")
    ap.add_argument("--no-write", action="store_true", help="do not rewrite RESULTS.md")
    ap.add_argument("--only", nargs="*", help="run only these benchmarks")
    args = ap.parse_args(argv)
    results = []
    for name in args.only or BENCHMARKS:
        r = importlib.import_module(f"benchmarks.{name}").run(quick=args.quick)
        print(json.dumps(r), flush=True)
        results.append(r)
    m = machine()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": m, "quick": args.quick, "results": results}, f, indent=1)
    if not (args.quick or args.no_write):
        with open(RESULTS, "w") as f:
            f.write(to_markdown(m, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
