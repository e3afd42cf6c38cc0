"""`bdh trace`: walk through the graph scheduler round by round (communication, then computation), printing each
local rule as the paper writes it with the numbers that flowed (`bdh_graph.trace.trace_rounds`).

`bdh trace --example` runs the worked 3-neuron example of docs/bdh_graph.md (checkable by hand);
`bdh trace DIR --prompt TEXT` compiles the model in DIR to its graph (`equivalence`) and traces the prompt.
"""

from __future__ import annotations

import json

from bdh.options import (
    add_backend,
    add_compile,
    add_graph_device,
    add_graph_dtype,
    check_compile,
    count,
    graph_device,
    graph_dtype,
)

EXAMPLE_N = 3
MAX_AUTO_NEURONS = 24  # graphs up to this size show every neuron; bigger ones the most active few
AUTO_NEURONS = 8


def add_parser(subparsers):
    p = subparsers.add_parser(
        "trace",
        help="the scheduler round by round, each rule with the numbers that flowed",
        description="Walk through the BDH graph scheduler sub-round by sub-round. For a model directory the model "
        "is compiled to its neuron graph first; --example runs the 3-neuron worked example of "
        "docs/bdh_graph.md.",
    )
    p.add_argument("model", nargs="?", help="model directory (omit with --example)")
    p.add_argument("--example", action="store_true", help="the worked 3-neuron example (two tokens, L = 1)")
    p.add_argument("--prompt", help="text to feed, one byte per token (required with a model)")
    p.add_argument("--rounds", type=count(1), help="stop after this many rounds (default: all of every token)")
    p.add_argument(
        "--neurons", help="comma-separated neuron indices to show (default: all if n <= 24, else the 8 most active)"
    )
    p.add_argument("--hubs", type=count(0), default=4, help="nodes shown per hub population (default 4)")
    p.add_argument("--max-flows", type=count(1), default=12, help="messages shown per rule (default 12)")
    add_compile(p)
    add_backend(p)
    add_graph_device(p)
    add_graph_dtype(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
    return p


def parse_neurons(spec: str, n: int) -> list[int]:
    from bdh.errors import InputError

    try:
        idx = [int(s) for s in spec.split(",") if s.strip() != ""]
    except ValueError:
        raise InputError(f"--neurons: expected comma-separated integers like 0,5,17, got {spec!r}") from None
    if not idx:
        raise InputError(f"--neurons: expected at least one index, got {spec!r}")
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise InputError(f"--neurons: indices must lie in [0, {n - 1}], got {bad[0]}")
    return sorted(set(idx))


def example_network():
    """The worked example of docs/bdh_graph.md: 3 neurons, L = 1, u = (1, .5, 1)."""
    import numpy as np

    from bdh_graph import Network

    Z = np.zeros((3, 3))
    Gx_e, Gx_i, Gy_e, Gy_i = Z.copy(), Z.copy(), Z.copy(), Z.copy()
    Gx_e[1, 0], Gx_i[1, 2], Gy_e[1, 0], Gy_e[0, 2], Gy_i[1, 2] = 1.0, 0.5, 2.0, 1.0, 1.0
    net = Network.from_dense(
        Gx_e=Gx_e, Gx_i=Gx_i, Gy_e=Gy_e, Gy_i=Gy_i, Gs=np.ones((3, 3)), u=np.array([1.0, 0.5, 1.0]), layers=1
    )
    tokens = [
        ("(x0=(1,0,0), y0=(1,0,1))", np.array([1.0, 0, 0]), np.array([1.0, 0, 1]), None),
        ("(x0=(0,1,0), y0=0)", np.array([0, 1.0, 0]), np.zeros(3), None),
    ]
    return net, tokens


def run(args) -> int:
    from bdh.errors import InputError
    from bdh_graph.trace import format_trace, trace_rounds

    device, dtype = graph_device(args), graph_dtype(args)
    dev = {"device": device} if device is not None else {}
    if args.example:
        if args.model is not None:
            raise InputError(f"give either a model directory or --example, not both (got {args.model!r})")
        net, tokens = example_network()
        header, notes, top = EXAMPLE_HEADER, [], None
    else:
        net, tokens, header, notes, top = _model_graph(args)
    if dtype != "float64":
        notes = notes + [f"note: the graph in {dtype} (weights and synaptic state; node values float64)"]
    sim = net.simulator(backend=args.backend, dtype=dtype, **dev)
    shown = _shown(args, net, top)
    tr = trace_rounds(sim, tokens, shown, max_rounds=args.rounds, max_flows=args.max_flows)
    if args.json:
        print(json.dumps(dict(header=header, notes=notes, shown=shown, tokens=tr), indent=1))
    else:
        print(format_trace(tr, header="\n".join([header] + notes)))
        print(
            "\nlegend: q(i) -> r(j) [G] sends q along the edges i→j of G; X(i), sigma(i,j) -> A(j) reads the "
            "synaptic state; ↓ resets; (p - n)^+ thresholds; values shown as before → after; layers count "
            "1..L as in the paper: the key sigma_0 holds σ_1, the state of layer 1; sigma_1 holds σ_2; ..."
        )
    return 0


EXAMPLE_HEADER = (
    "worked example of docs/bdh_graph.md: 3 neurons, L = 1, Gx_e 0→1 (1), Gx_i 2→1 (.5), "
    "Gy_e 0→1 (2), 2→0 (1), Gy_i 2→1 (1), Gs all ones, u = (1, .5, 1)"
)


def _model_graph(args):
    """The model directory's compiled graph and the prompt's tokens: (network, tokens, header, notes, the most active
    neurons to show when the graph is too big to show all, else None)."""
    from bdh.budget import check_graph
    from bdh.errors import InputError, load_model
    from equivalence import TensorRunner, compile_model

    if args.model is None:
        raise InputError("expected a model directory (or --example for the worked 3-neuron example)")
    if args.prompt is None or args.prompt == "":
        raise InputError("--prompt: expected a non-empty text to trace")
    check_graph(args.model, args.how, len(args.prompt.encode("utf-8")), 1, {"--compile": args.how}, graph_dtype(args))
    model = load_model(args.model)
    ids = list(args.prompt.encode("utf-8"))
    if max(ids) >= model.config.vocab_size:
        raise InputError(f"--prompt: byte {max(ids)} is outside the model's vocabulary of {model.config.vocab_size}")
    tm = TensorRunner(model).model
    compiled = compile_model(tm, check_compile(model, args.how))
    net = compiled.network
    x0, y0, extra = compiled.token_inputs(ids)
    tokens = [(repr(chr(b)) if 32 <= b < 127 else f"0x{b:02x}", x0[t], y0[t], extra[t]) for t, b in enumerate(ids)]
    notes, top = [], None
    if net.n > MAX_AUTO_NEURONS and args.neurons is None:
        import torch

        from bdh_gpu.analysis import top_active

        tr = tm.trace(torch.tensor(ids))
        top = top_active(tr["y"].reshape(-1, net.n).numpy(), AUTO_NEURONS).tolist()
        notes.append(
            f"note: n = {net.n} neurons; showing the {len(top)} most active in y ({top}); choose "
            f"others with --neurons i,j,...; hub populations show their first {args.hubs} nodes"
        )
    return net, tokens, compiled.summary(), notes, top


def _shown(args, net, top) -> dict:
    """The nodes the trace shows, per population: --neurons, else the most active, else the first few; hubs: the
    first --hubs of each population."""
    if args.neurons is not None:
        neurons = parse_neurons(args.neurons, net.n)
    elif top is not None:
        neurons = top
    else:
        neurons = list(range(min(net.n, MAX_AUTO_NEURONS)))
    shown = {"neurons": neurons}
    for p in net.populations.values():
        if p.name != "neurons":
            shown[p.name] = list(range(min(p.size, args.hubs)))
    return shown
