"""What the user got wrong, told in one line: the CLI's one input-error class and the helpers that raise it.

`InputError` (alias `bdh.cli.UsageError`) is bad input: a flag's value, a file named on the command line, a model
directory. The packages raise their own subclasses of ValueError for bad input to their functions
(`bdh_gpu.InputError`: configs and model directories; `bdh_graph.GraphError`: networks and simulator
arguments); `INPUT_ERRORS` lists them all, and the CLI turns exactly these into one line on stderr and exit code
2. Any other exception is a bug: the CLI lets it through (a traceback, exit code 1).
"""

from __future__ import annotations


class InputError(Exception):
    """Bad input from the user: printed as one line naming the flag or file, exit code 2."""


def input_errors() -> tuple:
    """The exception classes that mean "bad input" (imported lazily: the packages are heavy)."""
    from bdh.teach.view import ViewError
    from bdh_gpu import InputError as ModelInputError
    from bdh_graph import GraphError

    return InputError, ModelInputError, GraphError, ViewError


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


def check_compile(model, how, flag="--compile", value=None):
    """The compile `how` (None: the variant's default) if it applies to the model's variant, else an InputError
    naming the flag and the value that would work."""
    from equivalence import APPLIES, COMPILES, default_compile

    if how is None:
        return default_compile(model)
    if how not in COMPILES:
        raise InputError(f"{flag}: expected one of {', '.join(COMPILES)}, got {how!r}")
    v = model.config.variant
    if v not in APPLIES[how]:
        good = default_compile(model)
        shown = (value or "{}").format
        raise InputError(
            f"{flag} {shown(how)}: does not apply to a {v} model (it applies to "
            f"{' and '.join(APPLIES[how])}); use {flag} {shown(good)}"
        )
    return how


def resolve_device(spec: str):
    """`bdh.commands.train.resolve_device` with its ValueError (an unknown or unavailable --device) as InputError."""
    from bdh.commands.train import resolve_device as resolve

    try:
        return resolve(spec)
    except ValueError as e:
        raise InputError(str(e)) from None
