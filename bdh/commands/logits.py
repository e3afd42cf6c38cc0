"""`bdh logits`: the (T, 256) float32 logits of a text, from a chosen engine, as a .npy file.

Engines are functions `(model, ids (T,) int64) -> np.ndarray (T, V) float32` in `ENGINES`; the equivalence
package adds its graph engines to the same dict.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from bdh.options import (
    BACKENDS,
    COMPILE_CHOICES,
    add_attention,
    add_graph_device,
    add_graph_dtype,
    add_threads,
    check_compile,
    graph_device,
    graph_dtype,
    parse_attention,
    set_threads,
)


def tensor_engine(model, ids):
    """Token-parallel form (Eq. 4): one forward over the whole text."""
    import torch

    with torch.no_grad():
        return model(ids[None])[0].float().cpu().numpy()


def recurrent_engine(model, ids):
    """Recurrent form (Eq. 8): `step` token by token from the empty state."""
    import torch

    with torch.no_grad():
        state = model.init_state(1)
        rows = []
        for t in range(len(ids)):
            logits, state = model.step(ids[t : t + 1], state, inplace=True)
            rows.append(logits[0])
        return torch.stack(rows).float().cpu().numpy()


def _check_budget(args, T: int, attention, graph: bool) -> None:
    """The memory budget of the engine (bdh.budget): a graph, the recurrent state, or one forward over T tokens."""
    from bdh import budget

    if graph:
        how = args.engine[len("graph-") :]
        budget.check_graph(args.model_dir, how, T, flags={"--engine": args.engine}, dtype=args.dtype or "float64")
    elif args.engine == "recurrent":
        budget.check_generate(args.model_dir, 1, T)
    else:
        budget.check_forward(args.model_dir, 1, T, attention, {"--text-file": args.text_file})


ENGINES = {"tensor": tensor_engine, "recurrent": recurrent_engine}


def _graph_engine(how):
    def engine(model, ids, backend="numba", device=None, dtype="float64"):
        """The compiled neuron graph (equivalence, compile `how`), float64 or float32 (`dtype`: its weights and
        state), token by token (a progress bar on stderr)."""
        import equivalence

        ids = ids.cpu().numpy()
        return equivalence.graph_logits(model, ids, how, backend, device=device, progress=True, dtype=dtype)

    engine.graph = True
    return engine


ENGINES.update({f"graph-{how}": _graph_engine(how) for how in COMPILE_CHOICES})
MAX_TEXT_BYTES = 1_000_000


def add_parser(subparsers):
    p = subparsers.add_parser(
        "logits",
        help="write the logits of a text as (T, 256) float32 .npy",
        description="Compute the next-byte logits of every position of a text.",
    )
    p.add_argument("model_dir", metavar="DIR", help="model directory")
    p.add_argument("--text-file", required=True, help="file whose bytes are the input")
    p.add_argument("--engine", default="tensor", help=f"one of {', '.join(ENGINES)} (default tensor)")
    p.add_argument("--out", required=True, help="output .npy path")
    p.add_argument("--backend", choices=BACKENDS, help=f"graph engines only: {' | '.join(BACKENDS)} (default numba)")
    add_attention(p)
    add_graph_device(p)
    add_graph_dtype(p)
    add_threads(p)
    p.set_defaults(func=run)
    return p


def save_npy_atomic(path: str, array: np.ndarray) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".logits-", suffix=".npy.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def run(args) -> int:
    set_threads(args)  # before torch is imported: its OpenMP reads the wait policy then
    import torch

    from bdh.errors import InputError, load_model, read_input

    if args.engine not in ENGINES:
        raise InputError(f"--engine: expected one of {', '.join(ENGINES)}, got {args.engine!r}")
    raw = read_input(args.text_file, "--text-file", MAX_TEXT_BYTES)
    if not raw:
        raise InputError(f"--text-file {args.text_file}: empty text, expected at least 1 byte")
    if len(raw) > MAX_TEXT_BYTES:
        raise InputError(f"--text-file {args.text_file}: expected at most {MAX_TEXT_BYTES:,} bytes, got more")
    attention = parse_attention(args)
    if (args.attention is not None or args.chunk_size is not None) and args.engine != "tensor":
        raise InputError(f"--attention/--chunk-size: apply to --engine tensor, got --engine {args.engine}")
    engine = ENGINES[args.engine]
    graph = getattr(engine, "graph", False)
    if getattr(args, "backend", None) is not None and not graph:
        raise InputError(f"--backend: applies to the graph engines only, got --engine {args.engine}")
    if getattr(args, "dtype", None) is not None and not graph:
        raise InputError(f"--dtype: applies to the graph engines only, got --engine {args.engine}")
    kw = {"backend": args.backend} if getattr(args, "backend", None) is not None else {}
    device = graph_device(args)
    if device is not None:
        kw["device"] = device
    if graph:
        kw["dtype"] = graph_dtype(args)
    d = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(d):
        raise InputError(f"--out {args.out}: the directory {d} does not exist")
    _check_budget(args, len(raw), attention, graph)  # before any allocation
    model = load_model(args.model_dir).eval()
    model.attention = attention
    if graph:
        check_compile(model, args.engine[len("graph-") :], flag="--engine", value="graph-{}")
    ids = torch.tensor(list(raw), dtype=torch.long)
    if int(ids.max()) >= model.config.vocab_size:
        raise InputError(
            f"--text-file {args.text_file}: byte {int(ids.max())} is outside the model's vocabulary "
            f"of {model.config.vocab_size}"
        )
    logits = np.ascontiguousarray(engine(model, ids, **kw), dtype=np.float32)
    from bdh_graph.comm import world_rank

    if world_rank() == 0:  # under mpiexec every rank has the logits; rank 0 alone writes them
        save_npy_atomic(args.out, logits)
    print(f"wrote {args.out}: logits {logits.shape} float32 ({args.engine} engine)")
    return 0
