"""The `bdh` command: a thin layer over the packages.

Each subcommand lives in `bdh/commands/<name>.py` with `add_parser(subparsers)` and `run(args) -> int`; the flags
they share are made in `bdh/options.py`. How a command ends is `bdh/errors.py`'s table: bad input raises
`bdh.errors.InputError` (or a package's input error) and becomes one line on stderr with exit code 2; a full disk
or a missing permission, one line and exit code 3; a diverged run, one line and 4; every other exception is a bug
and keeps its traceback (exit code 1). A closed pipe (`bdh trace --json | head`) ends the command quietly.

Under `mpiexec -n P` (P > 1; docs/distributed.md) every rank runs the same command on its block of the graph and
rank 0 alone prints. An error on any rank prints its one line and aborts the whole MPI job with the exit code,
so no rank is left waiting in a collective.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import os
import signal
import sys
import time

from bdh import __version__
from bdh.errors import EXIT_BUG, EXIT_PIPE, EXIT_SIGINT, EXIT_SIGTERM, exit_code, one_line

COMMANDS = [
    "train",
    "generate",
    "logits",
    "eval",
    "import_official",  # tensor model (bdh_gpu)
    "verify",
    "export_graph",  # equivalence
    "demo",
    "view",
    "trace",
    "analyze",
    "merge",  # teaching tools
]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bdh",
        description="The Dragon Hatchling (BDH): the tensor model, the neuron-graph "
        "simulator, the bridge between them, and the tools to look inside.",
    )
    parser.add_argument("--version", action="version", version=f"bdh {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"bdh.commands.{name}").add_parser(sub)
    return parser


def _mpi_world():
    """(rank, size, abort) of the MPI job this process is part of; (0, 1, None) outside mpiexec."""
    from bdh_graph.comm import mpi_world_size

    if "TORCHELASTIC_RUN_ID" in os.environ:  # a torchrun worker (`srun torchrun` sets SLURM_PROCID): not MPI
        return 0, 1, None
    if mpi_world_size() <= 1:
        return 0, 1, None
    from mpi4py import MPI

    w = MPI.COMM_WORLD
    return w.Get_rank(), w.Get_size(), w.Abort


RANK_STAGGER_S = 1.0  # under mpiexec, rank r waits r times this before it speaks: the lowest failing rank speaks
DRAIN_S = 0.3  # ... and this long after, before its abort (an abort at once could lose the line, under load)


def _abort_job(line: str, code: int, rank: int, abort) -> None:
    """End the MPI job after an error on this rank, with ONE line on stderr for the whole job. An error that every
    rank meets (a bad argument) reaches them all at once: rank r waits RANK_STAGGER_S * r first, so the lowest
    failing rank prints and aborts the job before the others speak (an error on one rank alone is printed by it,
    a moment later). MPI_Abort's own banner ('Abort(2) on node 0 ...') is sent to /dev/null with the rest of this
    rank's output: stdout and stderr hold only what bdh printed."""
    time.sleep(RANK_STAGGER_S * min(rank, 8))  # capped: a lone failing rank 255 must not wait minutes
    print(line, file=sys.stderr, flush=True)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    time.sleep(DRAIN_S)  # the launcher forwards what is in the pipe before the abort tears the job down
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    abort(code)


def main(argv=None, callbacks=()) -> int:
    """callbacks: passed to the training loop by `bdh train` (bdh_gpu.train.train; tests/train_hooks.py).
    argv None: this process is the `bdh` program, so a signal while it shuts down keeps the exit code."""
    code = _main(argv, callbacks)
    if argv is None:
        exit_on_signal_keeping(code)
    return code


def exit_on_signal_keeping(code: int) -> None:
    """The command is over and the process ends: a SIGINT or SIGTERM from now on (a second Ctrl-C 0.2 s after the
    first, while torch winds down) does not turn the exit into the signal's own death (-2) or a KeyboardInterrupt
    traceback. Until the interpreter finalizes, it ends the process at once with `code` (130/143 of an
    interrupted run; else 128 + the signal); from the atexit hooks on it is ignored (CPython's finalization puts
    back the default, deadly, action of any signal that has a Python handler, so only SIG_IGN survives it)."""

    def now(signum, frame):
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code if code in (EXIT_SIGINT, EXIT_SIGTERM) else 128 + signum)

    def ignore():
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)

    with contextlib.suppress(ValueError):  # not the main thread: nothing to arm
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, now)
        atexit.register(ignore)  # registered last, so it runs first


def _main(argv, callbacks) -> int:
    parser = build_parser()
    rank, size, abort = _mpi_world()
    if rank > 0:
        sys.stdout = open(os.devnull, "w")  # rank 0 alone prints
    quiet = rank > 0 or ("TORCHELASTIC_RUN_ID" in os.environ and os.environ.get("RANK", "0") != "0")
    try:  # a flag refused: every rank refuses it; rank 0 alone says so (MPI or torchrun)
        with contextlib.redirect_stderr(open(os.devnull, "w")) if quiet else contextlib.nullcontext():
            args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version (0) or a flag argparse refused (2, its one line already printed)
        return e.code if isinstance(e.code, int) else 2
    args.callbacks = tuple(callbacks)

    def fail(line, code):
        if size > 1:  # end every rank now: none may be left waiting in a collective
            _abort_job(f"bdh {args.command}: error (rank {rank} of {size}): {line}", code, rank, abort)
        print(f"bdh {args.command}: error: {line}", file=sys.stderr)
        return code

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("bdh: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as cat does
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except Exception as e:
        code = exit_code(e)
        if code != EXIT_BUG:
            return fail(one_line(e), code)
        if size == 1:
            raise  # a bug: its traceback, exit code 1
        return fail(f"{type(e).__name__}: {one_line(e)}", code)


if __name__ == "__main__":
    sys.exit(main())
