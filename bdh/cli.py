"""The `bdh` command: a thin layer over the packages.

Each subcommand lives in `bdh/commands/<name>.py` with `add_parser(subparsers)` and `run(args) -> int`.
Bad input raises `UsageError` (or ValueError / OSError from the packages) and becomes one line on
stderr with exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = [
    "train", "generate", "logits", "eval", "import_official",  # tensor model (bdh_gpu)
    "verify",  # equivalence
    "demo", "view", "trace", "analyze", "merge",  # teaching tools
]


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bdh", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"bdh.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"bdh.commands.{name}":
                continue  # not built yet
            raise
        mod.add_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("bdh: interrupted", file=sys.stderr)
        return 130
    except (UsageError, ValueError, OSError, KeyError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"bdh {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
