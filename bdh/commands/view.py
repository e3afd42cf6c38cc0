"""`bdh view`: an interactive page of a prompt stepped through a model's neuron graph (the real simulator, sub-round
by sub-round): a self-contained HTML file (--out), or a local server where you type prompts (--serve).

The work is in `bdh.teach.view` (the session and the page) and `bdh.teach.serve` (the server); see docs/tutorial.md.
"""

from __future__ import annotations

import os

from bdh.options import (
    add_backend,
    add_compile,
    add_graph_device,
    check_compile,
    count,
    graph_device,
    local_host,
    prompt_bytes,
)


def add_parser(subparsers):
    p = subparsers.add_parser(
        "view",
        help="interactive page: step a prompt through the neuron graph, click neurons and synapses",
        description="Compile DIR to its neuron graph, step a prompt through the graph simulator sub-round by "
        "sub-round and write one self-contained HTML page (data embedded, works offline), or serve "
        "the page on a local port where you type prompts and step the live simulator (--serve).",
    )
    p.add_argument("model_dir", metavar="DIR", help="model directory (config.json + model.safetensors)")
    p.add_argument(
        "--prompt",
        type=prompt_bytes,
        help="text to step through the graph, one byte per token (required without --serve)",
    )
    p.add_argument("--out", default="view.html", help="the page to write (default view.html)")
    p.add_argument("--serve", action="store_true", help="serve the page instead, stepping the live simulator")
    p.add_argument(
        "--port", type=count(0, 65535), default=0, help="with --serve: the port (default 0 = a free one, printed)"
    )
    p.add_argument(
        "--host",
        type=local_host,
        default="127.0.0.1",
        help="with --serve: the address to bind (default 127.0.0.1, this machine only)",
    )
    add_compile(p)
    add_backend(p)
    add_graph_device(p)
    p.add_argument("--neurons", type=count(1), default=128, help="neurons shown, the most active first (default 128)")
    p.add_argument(
        "--synapses",
        type=count(1),
        default=8,
        help="synapses listed per group and per state variable of a clicked node (default 8)",
    )
    p.add_argument("--max-prompt", type=count(1), default=256, help="longest prompt in bytes (default 256)")
    p.add_argument(
        "--task",
        choices=("auto", "text", "recall"),
        default="auto",
        help="how a typed prompt becomes bytes: recall writes a fact k=v as one byte 0x80 + 8 key + value, as the "
        "recall task was trained; auto (default) reads the task from DIR/train_state.json, else text",
    )
    p.set_defaults(func=run)
    return p


def trained_task(model_dir: str) -> str:
    """'recall' if DIR/train_state.json says the model was trained on the recall task (train_config.data), else
    'text'."""
    import json

    try:
        with open(os.path.join(model_dir, "train_state.json"), encoding="utf-8") as f:
            data = json.load(f).get("train_config", {}).get("data", "")
    except (OSError, ValueError, AttributeError):
        return "text"
    return "recall" if isinstance(data, str) and data.startswith("recall") else "text"


def run(args) -> int:
    from bdh.errors import InputError

    device = graph_device(args)
    if not args.serve:
        if not args.prompt:
            raise InputError("--prompt: expected a non-empty text (or --serve to type prompts in the browser)")
        raw = args.prompt
        if len(raw) > args.max_prompt:
            raise InputError(f"--prompt: expected at most {args.max_prompt} bytes (--max-prompt), got {len(raw)}")
        d = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(d):
            raise InputError(f"--out {args.out}: the directory {d} does not exist")
    from bdh.budget import check_graph
    from bdh.errors import load_model
    from bdh.teach.view import ViewSession, write_page
    from equivalence import TensorRunner, compile_model

    check_graph(args.model_dir, args.how, args.max_prompt, 1, {"--compile": args.how})  # before any allocation
    model = load_model(args.model_dir)
    compiled = compile_model(TensorRunner(model).model, check_compile(model, args.how))
    session = ViewSession(
        compiled,
        backend=args.backend,
        neurons=args.neurons,
        synapses=args.synapses,
        max_prompt=args.max_prompt,
        title=f"{os.path.basename(os.path.abspath(args.model_dir))}: {compiled.summary().split(':')[0]}",
        device=device,
        task=trained_task(args.model_dir) if args.task == "auto" else args.task,
        model=model,
    )
    if args.serve:
        from bdh.teach.serve import serve

        serve(session, args.host, args.port)
        return 0
    session.load(list(raw))
    frames = session.step("all")
    path = write_page(args.out, session.data())
    print(
        f"{path}: {len(session.ids)} tokens ({session.task} encoding), {len(frames)} steps, "
        f"{len(session.shown['neurons'])} of {compiled.network.n} neurons shown "
        f"({os.path.getsize(path) / 1e6:.1f} MB); open it in a browser"
    )
    return 0
