"""`bdh verify`: compile a model directory into its neuron graph and check that both compute the same thing.

Exit 0 iff every compared quantity (logits, x, y, rho, and v for official models) is within tolerance, 1 if
not, 2 on bad input (including a compile that does not apply to the model's variant).
"""
from __future__ import annotations

import json

DEFAULT_TEXT = "The Dragon Hatchling"
MAX_TEXT_BYTES = 4096


def add_parser(subparsers):
    p = subparsers.add_parser("verify", help="check that the neuron graph computes what the tensor model computes",
                              description="Compile DIR into a BDH neuron graph, run both on the same bytes, compare "
                                          "logits, x, y and state per token and layer.")
    p.add_argument("model_dir", metavar="DIR", help="model directory")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", help=f"input text (default {DEFAULT_TEXT!r})")
    src.add_argument("--text-file", help="file whose bytes are the input")
    p.add_argument("--compile", dest="how", choices=("dense", "circuit", "official"),
                   help="construction (default: official for official/paper models, dense for normfree, "
                        "circuit when n > 4096)")
    p.add_argument("--backend", default="numba", choices=("numba", "pyg", "numpy"), help="graph engine (default numba)")
    p.add_argument("--tolerance", type=float, help="relative tolerance per token and layer (default 1e-9)")
    p.add_argument("--no-state", action="store_true", help="skip the state (rho) comparison")
    p.add_argument("--json", action="store_true", help="print one JSON object with each quantity's max error")
    p.set_defaults(func=run)
    return p


def read_text(args) -> bytes:
    if args.text_file is not None:
        with open(args.text_file, "rb") as f:
            raw = f.read(MAX_TEXT_BYTES + 1)
    else:
        raw = (DEFAULT_TEXT if args.text is None else args.text).encode("utf-8")
    if not raw:
        raise ValueError(f"{args.text_file or '--text'}: empty text, expected at least 1 byte")
    if len(raw) > MAX_TEXT_BYTES:
        raise ValueError(f"{args.text_file or '--text'}: expected at most {MAX_TEXT_BYTES} bytes, got more "
                         "(the graph runs token by token; verify on a short text)")
    return raw


def run(args) -> int:
    import math

    import bdh_gpu
    import equivalence

    if args.tolerance is not None and not (math.isfinite(args.tolerance) and args.tolerance > 0):
        raise ValueError(f"--tolerance: expected a finite number > 0, got {args.tolerance}")
    raw = read_text(args)
    from bdh_graph.comm import world_rank
    how = args.how or equivalence.default_compile(args.model_dir)
    compiled = equivalence.compile_model(args.model_dir, how)   # each rank reads only its slice; ValueError if inapplicable
    model = bdh_gpu.load(args.model_dir).eval() if world_rank() == 0 else None   # the tensor side: rank 0 only
    rep = equivalence.compare(model, compiled, raw, backend=args.backend, rtol=args.tolerance,
                              state=not args.no_state)
    if args.json:
        print(json.dumps(rep.to_dict(), default=str))
    else:
        print(compiled.summary())
        print(rep)
    return 0 if rep.ok else 1
