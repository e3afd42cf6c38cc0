"""The `bdh` command: a thin layer over the packages.

Each subcommand lives in `bdh/commands/<name>.py` with `add_parser(subparsers)` and `run(args) -> int`.
Bad input raises `UsageError` (= `bdh.errors.InputError`) or one of the packages' input errors
(`bdh.errors.input_errors()`) and becomes one line on stderr with exit code 2. Every other exception is a bug and
keeps its traceback (exit code 1). A closed pipe (`bdh trace --json | head`) ends the command quietly.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from bdh import __version__
from bdh.errors import InputError, input_errors

COMMANDS = [
    "train", "generate", "logits", "eval", "import_official",  # tensor model (bdh_gpu)
    "verify", "export_graph",  # equivalence
    "demo", "view", "trace", "analyze", "merge",  # teaching tools
]


UsageError = InputError  # the name the commands use

# Commands whose ValueErrors are still their input errors (not yet converted to InputError by their owner).
LEGACY_VALUE_ERRORS = {"train"}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bdh", description="The Dragon Hatchling (BDH): the tensor model, the neuron-graph "
                                             "simulator, the bridge between them, and the tools to look inside.")
    parser.add_argument("--version", action="version", version=f"bdh {__version__}")
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
    expected = input_errors() + ((ValueError,) if args.command in LEGACY_VALUE_ERRORS else ())
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("bdh: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:                     # the reader went away (| head): stop quietly, as cat does
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 141
    except expected as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"bdh {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
