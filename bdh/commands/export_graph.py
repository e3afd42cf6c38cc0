"""`bdh export-graph`: a model's compiled neuron graph (and, after a prompt, its synaptic state) as GraphML
(networkx, for Gephi / Cytoscape) or as a PyG HeteroData (a safetensors file; `bdh_graph.export.load_pyg`)."""

from __future__ import annotations

import os

from bdh.budget import check_graph
from bdh.options import add_backend, add_compile, add_graph_device, check_compile, count, graph_device

MAX_EDGES = 5_000_000


def add_parser(subparsers):
    p = subparsers.add_parser(
        "export-graph",
        help="the compiled neuron graph as GraphML or PyG",
        description="Compile DIR to its neuron graph (as bdh verify does) and write it: --format graphml (one node "
        "per neuron or hub, 'population:index', one edge per synapse with its group, weight and sigma) "
        "or --format pyg (a torch_geometric HeteroData saved as safetensors, read it with "
        "bdh_graph.export.load_pyg). With --prompt the synaptic state sigma after that text is included.",
    )
    p.add_argument("model_dir", metavar="DIR", help="model directory")
    p.add_argument("--format", required=True, choices=("graphml", "pyg"), help="graphml | pyg")
    p.add_argument("--out", required=True, help="file to write (.graphml, or .safetensors for pyg)")
    add_compile(p)
    p.add_argument("--prompt", help="run this text through the graph first and export sigma after it")
    add_backend(p)
    add_graph_device(p)
    p.add_argument(
        "--max-edges",
        type=count(0),
        default=MAX_EDGES,
        help=f"refuse GraphML beyond this many edges (default {MAX_EDGES:,}; GraphML is text)",
    )
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from bdh.errors import InputError, load_model

    d = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(d):
        raise InputError(f"--out {args.out}: the directory {d} does not exist")
    device = graph_device(args)
    if args.prompt is not None and not args.prompt:
        raise InputError("--prompt: expected a non-empty text")
    if args.format == "pyg":
        try:
            import torch_geometric  # noqa: F401
        except ImportError:
            raise InputError("--format pyg: needs torch_geometric (pip install -e '.[pyg]')") from None
    import equivalence
    from bdh_graph.export import graphml_graph, save_pyg

    check_graph(args.model_dir, args.how, len(args.prompt or "x"), 1, {"--compile": args.how})  # before allocating
    model = load_model(args.model_dir).eval()
    compiled = equivalence.compile_model(equivalence.TensorRunner(model).model, check_compile(model, args.how))
    net = compiled.network
    edges = sum(g.nnz for g in net.groups.values())
    if args.format == "graphml" and edges > args.max_edges:
        raise InputError(
            f"--max-edges: the graph has {edges:,} edges, more than {args.max_edges:,} for GraphML; "
            "use --format pyg or raise --max-edges"
        )
    sigma = None
    if args.prompt:
        ids = list(args.prompt.encode("utf-8"))
        if max(ids) >= model.config.vocab_size:
            raise InputError(
                f"--prompt: byte {max(ids)} is outside the model's vocabulary of {model.config.vocab_size}"
            )
        runner = equivalence.GraphRunner(compiled, args.backend, device=device)
        for _ in runner.feed(ids, progress="prompt"):
            pass
        sigma = runner.sim.state.edges
    tmp = args.out + ".tmp"
    if args.format == "graphml":
        import networkx as nx

        nx.write_graphml(graphml_graph(net, sigma), tmp)
    else:
        save_pyg(net, tmp, sigma, metadata={"summary": compiled.summary()})
    os.replace(tmp, args.out)
    after = f", sigma after {len(args.prompt.encode())} bytes" if args.prompt else ""
    print(
        f"wrote {args.out}: {args.format}, {sum(p.size for p in net.populations.values()):,} nodes, "
        f"{edges:,} edges{after} ({compiled.summary().split(':')[0]})"
    )
    return 0
