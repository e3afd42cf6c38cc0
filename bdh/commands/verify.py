"""`bdh verify`: compile a model directory into its neuron graph and check that both compute the same thing.

Exit 0 iff every compared quantity (logits, x, y, rho, and v for official models) is within tolerance, 1 if
not, 2 on bad input (including a compile that does not apply to the model's variant). `--dtype float32` verifies
the float32 graph against the float64 tensor model (rtol 1e-4, docs/equivalence.md).
"""

from __future__ import annotations

import json

from bdh.options import (
    add_backend,
    add_compile,
    add_graph_device,
    add_graph_dtype,
    check_compile,
    graph_device,
    graph_dtype,
    real,
)

DEFAULT_TEXT = "The Dragon Hatchling"
MAX_TEXT_BYTES = 4096


def add_parser(subparsers):
    p = subparsers.add_parser(
        "verify",
        help="check that the neuron graph computes what the tensor model computes",
        description="Compile DIR into a BDH neuron graph, run both on the same bytes, compare "
        "logits, x, y and state per token and layer.",
    )
    p.add_argument("model_dir", metavar="DIR", help="model directory")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", help=f"input text (default {DEFAULT_TEXT!r})")
    src.add_argument("--text-file", help="file whose bytes are the input")
    add_compile(p)
    add_backend(p)
    add_graph_device(p)
    add_graph_dtype(p)
    p.add_argument(
        "--tolerance",
        type=real(0.0, open_lo=True),
        help="relative tolerance per token and layer (default 1e-9; 1e-4 with --dtype float32)",
    )
    p.add_argument(
        "--sensitivity-multiple",
        type=real(0.0),
        default=100.0,
        metavar="K",
        help="a quantity fails only beyond the tolerance and beyond K times the tensor model's own sensitivity "
        "to a one-ulp change of its weights (a float32 ulp with --dtype float32; default 100; 0: the tolerance alone, "
        "sensitivity not measured)",
    )
    p.add_argument("--no-state", action="store_true", help="skip the state (rho) comparison")
    p.add_argument("--json", action="store_true", help="print one JSON object with each quantity's max error")
    p.set_defaults(func=run)
    return p


def read_text(args) -> bytes:
    from bdh.errors import InputError, read_input

    if args.text_file is not None:
        raw = read_input(args.text_file, "--text-file", MAX_TEXT_BYTES)
    else:
        raw = (DEFAULT_TEXT if args.text is None else args.text).encode("utf-8")
    where = f"--text-file {args.text_file}" if args.text_file else "--text"
    if not raw:
        raise InputError(f"{where}: empty text, expected at least 1 byte")
    if len(raw) > MAX_TEXT_BYTES:
        raise InputError(
            f"{where}: expected at most {MAX_TEXT_BYTES} bytes, got more "
            "(the graph runs token by token; verify on a short text)"
        )
    return raw


def run(args) -> int:

    import equivalence
    from bdh.errors import InputError, load_model

    device, dtype = graph_device(args), graph_dtype(args)
    raw = read_text(args)
    from types import SimpleNamespace

    from bdh.budget import check_graph
    from bdh_graph.comm import world_rank

    check_graph(args.model_dir, args.how, len(raw), flags={"--compile": args.how}, dtype=dtype)  # before allocating
    if world_rank() == 0:  # the tensor side: rank 0 alone loads the model; the others read only config.json
        model = spec = load_model(args.model_dir).eval()
    else:
        import bdh_gpu

        model, spec = None, SimpleNamespace(config=bdh_gpu.load_config(args.model_dir))
    if max(raw) >= spec.config.vocab_size:
        raise InputError(f"--text: byte {max(raw)} is outside the model's vocabulary of {spec.config.vocab_size}")
    how = check_compile(spec, args.how)
    compiled = equivalence.compile_model(args.model_dir, how)  # each rank reads only its slice of the weights
    rep = equivalence.compare(
        model,
        compiled,
        raw,
        backend=args.backend,
        dtype=dtype,
        rtol=args.tolerance,
        state=not args.no_state,
        device=device,
        progress=True,
        sensitivity_multiple=args.sensitivity_multiple or None,
    )
    if args.json:
        print(json.dumps(rep.to_dict(), default=str))
    else:
        print(compiled.summary())
        print(rep)
    return 0 if rep.ok else 1
