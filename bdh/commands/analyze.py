"""`bdh analyze`: the paper's measurements (reference section 6) on any model directory: activation sparsity per
layer, thresholded neuron graphs D_x E and D_y E per head (degrees, tail exponents, Louvain modularity vs beta
beside G(n,m) and random low-rank baselines), the sigma graph, and the monosemantic-synapse finder.

The work is `bdh.teach.analyze.analyze_model`; see docs/analysis.md.
"""

from __future__ import annotations

import json
import os

from bdh.options import count

MAX_TOKENS = 1024


def add_parser(subparsers):
    p = subparsers.add_parser(
        "analyze",
        help="sparsity, neuron graphs, modularity, sigma graph, synapse finder",
        description=" ".join(__doc__.split("\n\n")[0].split()).replace("`bdh analyze`: ", "", 1),
    )
    p.add_argument("model", metavar="MODEL", help="model directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="text to run through the model")
    src.add_argument("--text-file", help="file whose bytes to run through the model")
    p.add_argument(
        "--max-tokens", type=count(2), default=MAX_TOKENS, help=f"use at most this many bytes (default {MAX_TOKENS})"
    )
    p.add_argument("--out", help="directory for figures, analysis.json and report.html")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.add_argument(
        "--betas",
        help="comma-separated thresholds (default: the quantiles giving edge densities 0.1%%, 0.2%%, 0.5%%, 1%%, 2%%)",
    )
    p.add_argument("--heads", default="0", help="comma-separated heads to analyse (default 0; 'all')")
    p.add_argument(
        "--seeds", type=count(1), default=5, help="Louvain runs per graph, best kept (default 5, as the paper)"
    )
    p.add_argument(
        "--sigma-layer",
        type=count(1),
        help="the paper's layer ℓ (1..L) of the state σ_ℓ to analyse (default: the middle one)",
    )
    p.add_argument("--concept", help="file of concept sentences, one per line (with --contrast)")
    p.add_argument("--contrast", help="file of contrast sentences, one per line (with --concept)")
    p.add_argument(
        "--candidates", type=count(1), default=48, help="synapse finder: candidate neurons per end (default 48)"
    )
    p.set_defaults(func=run)
    return p


def _floats(spec, what):
    from bdh.errors import InputError

    try:
        vals = [float(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"{what}: expected comma-separated numbers, got {spec!r}") from None
    if not vals:
        raise InputError(f"{what}: expected at least one number, got {spec!r}")
    return vals


def run(args) -> int:
    from bdh.errors import InputError

    if (args.concept is None) != (args.contrast is None):
        raise InputError("--concept and --contrast go together: give both files or neither")
    if args.text_file is not None:
        from bdh.errors import read_input

        data = read_input(args.text_file, "--text-file", args.max_tokens)[: args.max_tokens]
    else:
        data = args.text.encode("utf-8")[: args.max_tokens]
    if len(data) < 2:
        raise InputError(f"the text must have at least 2 bytes, got {len(data)}")
    from bdh.errors import load_model
    from bdh.teach.analyze import _lines, analyze_model

    model = load_model(args.model, "MODEL").float()
    C = model.config
    if args.heads == "all":
        heads = list(range(C.n_head))
    else:
        heads = [int(h) for h in _floats(args.heads, "--heads")]
        bad = [h for h in heads if not 0 <= h < C.n_head]
        if bad:
            raise InputError(f"--heads: expected indices in [0, {C.n_head - 1}] or 'all', got {bad[0]}")
    betas = _floats(args.betas, "--betas") if args.betas else None
    concept = _lines(args.concept, "--concept") if args.concept else None
    contrast = _lines(args.contrast, "--contrast") if args.contrast else None
    log = (lambda s: None) if args.json else print
    if not args.json:
        print(
            f"bdh analyze: {args.model}: {C.variant}/{C.U}, h={C.n_head} N={C.N} n={C.n} d={C.d} L={C.n_layer}; "
            f"{len(data)} bytes of text"
        )
    res = analyze_model(
        model,
        list(data),
        args.out,
        betas=betas,
        heads=heads,
        seeds=args.seeds,
        sigma_layer=args.sigma_layer,
        concept=concept,
        contrast=contrast,
        candidates=args.candidates,
        log=log,
        progress=True,
    )
    if args.json:
        print(json.dumps({k: v for k, v in res.items() if k != "figures"}, indent=1, default=float))
    elif args.out:
        print(f"report: {os.path.join(args.out, 'report.html')} ({len(res.get('figures', []))} figures)")
    return 0
