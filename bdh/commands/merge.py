"""`bdh merge A B --out C`: merge two models by concatenation along n (paper Sec. 7.1): D_x, D_y and E (and so
the RoPE frequencies, which are per head) are concatenated head-wise, embed and lm_head averaged."""
from __future__ import annotations

import os


def add_parser(subparsers):
    p = subparsers.add_parser("merge", help="merge two models by concatenating their neurons (Sec. 7.1)",
                              description=__doc__.splitlines()[0])
    p.add_argument("a", help="first model directory (its heads come first)")
    p.add_argument("b", help="second model directory")
    p.add_argument("--out", required=True, help="directory to write the merged model to")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from bdh.cli import UsageError

    if os.path.exists(os.path.join(args.out, "model.safetensors")):
        raise UsageError(f"--out {args.out}: already holds a model; choose another directory")
    import bdh_gpu
    from bdh_gpu.analysis import merge
    a, b = bdh_gpu.load(args.a), bdh_gpu.load(args.b)
    m = merge(a, b)
    bdh_gpu.save(m, args.out)
    C = m.config
    print(f"merged {args.a} ({a.config.n_head} heads) + {args.b} ({b.config.n_head} heads) -> {args.out}: "
          f"h={C.n_head} N={C.N} n={C.n} d={C.d} L={C.n_layer}, "
          f"{sum(p.numel() for p in m.parameters()):,} parameters")
    return 0
