"""How a `bdh` command ends: the exit codes, the one input-error class, and which exception means what.

| code | meaning | what is printed |
|---|---|---|
| 0 | done | the command's output |
| 1 | a bug in bdh | its traceback |
| 2 | bad input: a flag, a file named on the command line, a model directory | one line naming it |
| 3 | the environment: disk full, permissions, no network | one line naming the file or resource and the OS error |
| 4 | the run failed: training diverged (the last good checkpoint is kept) | one line |
| 130, 143 | interrupted by SIGINT, SIGTERM | one line |

`InputError` is the command line's bad input. The packages raise their own subclasses of ValueError for bad input
to their functions (`bdh_gpu.InputError`: configs and model directories; `bdh_graph.GraphError`: networks and
simulator arguments); the teaching layer's errors subclass `InputError`. `exit_code(e)` maps each exception to its
code, so every command ends the same way. Every other exception is a bug.
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_BUG = 1
EXIT_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_FAILED = 4
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
EXIT_PIPE = 141  # the reader of stdout went away (`bdh trace --json | head`): stopped quietly, as cat does


# the OS errors that mean "the machine, not bdh": full disk, quota, permissions, read-only file systems, no network.
# Any other OSError (a file bdh itself should have found) is a bug and keeps its traceback.
ENVIRONMENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ENOSPC",
        "EDQUOT",
        "EACCES",
        "EPERM",
        "EROFS",
        "ENETUNREACH",
        "ENETDOWN",
        "EHOSTUNREACH",
        "ECONNREFUSED",
        "ECONNRESET",
        "ETIMEDOUT",
        "EADDRINUSE",
        "EMFILE",
        "ENFILE",
        "ENOMEM",
    )
    if hasattr(errno, name)
)


class InputError(Exception):
    """Bad input from the user: printed as one line naming the flag or file, exit code 2."""


class EnvironmentFault(Exception):
    """The machine, not the input: a full disk, a permission, a network that is not there (exit code 3). The
    message names the file or resource and the OS error."""


def input_errors() -> tuple:
    """The exception classes that mean "bad input" (imported lazily: the packages are heavy)."""
    from bdh_gpu import InputError as ModelInputError
    from bdh_graph import GraphError

    return InputError, ModelInputError, GraphError


def failure_errors() -> tuple:
    """The exception classes that mean "the run failed, the input was fine" (a diverging training run)."""
    from bdh_gpu import TrainingFailed

    return (TrainingFailed,)


def exit_code(e: BaseException) -> int:
    """The exit code for an exception that ended a command (see the table above)."""
    if isinstance(e, KeyboardInterrupt):
        return EXIT_SIGINT
    if isinstance(e, BrokenPipeError):
        return EXIT_PIPE
    if isinstance(e, input_errors()):
        return EXIT_INPUT
    if isinstance(e, failure_errors()):
        return EXIT_FAILED
    if isinstance(e, EnvironmentFault) or (isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS):
        return EXIT_ENVIRONMENT
    return EXIT_BUG


def one_line(e: BaseException) -> str:
    """The first line of an exception's message (its class name when it has none)."""
    s = str(e).strip()
    line = s.splitlines()[0] if s else type(e).__name__
    if isinstance(e, OSError) and not isinstance(e, EnvironmentFault) and e.strerror:
        where = f"{e.filename}: " if e.filename else ""
        line = f"{where}{e.strerror}"
    return line


def read_input(path: str, flag: str, limit: int | None = None) -> bytes:
    """The bytes of a file named by `flag` (at most limit + 1 of them); a missing or unreadable file is an
    InputError naming the flag and the file."""
    try:
        with open(path, "rb") as f:
            return f.read() if limit is None else f.read(limit + 1)
    except OSError as e:
        raise InputError(f"{flag} {path}: {e.strerror or type(e).__name__}") from None


def load_model(path: str, flag: str = "DIR", **kw):
    """bdh_gpu.load with the problem named after the argument: 'DIR runs/x: no config.json (...)'."""
    import bdh_gpu

    try:
        return bdh_gpu.load(path, **kw)
    except bdh_gpu.InputError as e:
        msg = str(e)
        raise InputError(msg if msg.startswith(path) and flag == "DIR" else f"{flag}: {msg}") from None
