"""`bdh merge A B --out C`: merge two models by concatenation along n (paper Sec. 7.1): D_x, D_y and E (and so
the RoPE frequencies, which are per head) are concatenated head-wise, embed and lm_head averaged."""

from __future__ import annotations

import os


def add_parser(subparsers):
    p = subparsers.add_parser(
        "merge",
        help="merge two models by concatenating their neurons (Sec. 7.1)",
        description="Merge two models by concatenation along n (paper Sec. 7.1): D_x, D_y and "
        "E (and so the RoPE frequencies, which are per head) are concatenated "
        "head-wise; embed and lm_head are averaged. The two models must agree in "
        "d, L, variant and U.",
    )
    p.add_argument("a", metavar="A", help="first model directory (its heads come first)")
    p.add_argument("b", metavar="B", help="second model directory")
    p.add_argument("--out", required=True, help="directory to write the merged model to")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import sys

    from tqdm import tqdm

    from bdh.errors import InputError, load_model

    if os.path.exists(os.path.join(args.out, "model.safetensors")):
        raise InputError(f"--out {args.out}: already holds a model; choose another directory")
    import bdh_gpu
    from bdh_gpu.analysis import merge

    with tqdm(total=4, desc="merge", file=sys.stderr, leave=False, dynamic_ncols=True) as bar:
        bar.set_postfix_str("load A"), bar.refresh()
        a = load_model(args.a, "A")
        bar.update(), bar.set_postfix_str("load B")
        b = load_model(args.b, "B")
        bar.update(), bar.set_postfix_str("concatenate")
        m = merge(a, b)
        bar.update(), bar.set_postfix_str("save")
        bdh_gpu.save(m, args.out)
        bar.update()
    C = m.config
    print(
        f"merged {args.a} ({a.config.n_head} heads) + {args.b} ({b.config.n_head} heads) -> {args.out}: "
        f"h={C.n_head} N={C.N} n={C.n} d={C.d} L={C.n_layer}, "
        f"{sum(p.numel() for p in m.parameters()):,} parameters"
    )
    return 0
