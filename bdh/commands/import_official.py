"""`bdh import-official`: turn a state_dict of the released BDH class into a model directory."""

from __future__ import annotations

from bdh.options import count


def add_parser(subparsers):
    p = subparsers.add_parser(
        "import-official",
        help="import a state_dict saved from the released bdh.py",
        description="Read STATE_DICT.pt (torch.load with weights_only=True), infer the "
        "config from the shapes, and write a model directory.",
    )
    p.add_argument(
        "state_dict",
        metavar="STATE_DICT.pt",
        help="a torch state_dict of the released BDH class (read with weights_only=True)",
    )
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--n-layer", type=count(1), default=6, help="layers (not recorded in a state_dict; released: 6)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import bdh_gpu
    from bdh_gpu.official import import_official, read_official_state_dict

    sd = read_official_state_dict(args.state_dict)
    model = import_official(sd, n_layer=args.n_layer)
    bdh_gpu.save(model, args.out)
    c = model.config
    print(
        f"wrote {args.out}: official/rope, h={c.n_head} d={c.d} N={c.N} L={c.n_layer}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters"
    )
    return 0
