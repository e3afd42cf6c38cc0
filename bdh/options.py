"""The command line's options, in one place: one meaning and one default per flag name in every command.

| flag | meaning | default |
|---|---|---|
| `--device` | the torch device of the tensor model, and of the graph with `--backend pyg` | `auto` (cuda if present) |
| `--backend` | the graph engine, from `bdh_graph.backends.BACKENDS` | `numba` |
| `--compile` | the graph compile (equivalence.COMPILES: dense, circuit, official) | the variant's default |
| `--dtype` | graph commands: the float type of the graph's weights and sigma (float32 on numba, pyg) | `float64` |
| `--dtype` | `bdh train`: the float type of a new model's parameters | `float32` |
| `--torch-compile` | `torch.compile` the tensor model (`bdh train`) | off |
| `--attention`, `--chunk-size` | which equal form of Eq. 4 the tensor model's forward uses | `auto` |

Each `add_*` puts one flag on a parser; each `resolve_*`/`check_*` turns its value into what the packages take, or
raises `bdh.errors.InputError` naming the flag. Nothing here imports torch at parse time (`bdh --help` stays fast).
"""

from __future__ import annotations

import argparse
import math
import os

from bdh.errors import InputError
from bdh_graph.backends import BACKENDS, DTYPES

DEFAULT_BACKEND = "numba"
DEFAULT_GRAPH_DTYPE = "float64"
DEFAULT_DEVICE = "auto"
# equivalence.COMPILES, spelled here so that building the parser does not import torch (a test keeps them equal)
COMPILE_CHOICES = ("dense", "circuit", "official")


def add_device(p, what: str = "the tensor model") -> None:
    """--device: the torch device (cpu, cuda, cuda:N, auto)."""
    p.add_argument(
        "--device",
        default=DEFAULT_DEVICE,
        help=f"torch device of {what}: cpu | cuda | cuda:N | auto (default: cuda if present, else cpu)",
    )


def add_graph_device(p) -> None:
    """--device for the graph commands: the torch device of the graph with `--backend pyg` (numba and numpy run on
    the CPU; the tensor model's reference runs on the CPU in float64)."""
    p.add_argument(
        "--device",
        default=DEFAULT_DEVICE,
        help="torch device of the graph with --backend pyg: cpu | cuda | cuda:N | auto (default: cuda if present); "
        "numba and numpy run on the CPU",
    )


def resolve_device(spec: str) -> str:
    """The torch device named by --device ('auto': cuda if available, else cpu)."""
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not (spec == "cpu" or spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit())):
        raise InputError(f"--device: expected cpu, cuda, cuda:N or auto, got {spec!r}")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {spec}: CUDA is not available on this machine (use --device cpu)")
    return spec


def graph_device(args) -> str | None:
    """The torch device the graph runs on: --device for --backend pyg; None (the CPU) for numba and numpy, where an
    explicit non-CPU --device is refused."""
    spec = getattr(args, "device", DEFAULT_DEVICE)
    backend = getattr(args, "backend", None) or DEFAULT_BACKEND
    if backend != "pyg":
        if spec not in ("auto", "cpu"):
            raise InputError(f"--device: only --backend pyg takes a device, got --device {spec} --backend {backend}")
        return None
    return resolve_device(spec)


def add_backend(p, default: str = DEFAULT_BACKEND) -> None:
    """--backend: the graph engine."""
    p.add_argument(
        "--backend",
        default=default,
        choices=BACKENDS,
        help=f"graph engine: {' | '.join(BACKENDS)} (default {default})",
    )


def add_graph_dtype(p) -> None:
    """--dtype for the graph commands: float64 (the reference) or float32 (weights and sigma stored in float32, node
    values in float64; docs/bdh_graph.md). Unset means float64; `graph_dtype` checks it against --backend."""
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        help=f"float type of the graph's weights and synaptic state: {' | '.join(DTYPES)} (default "
        f"{DEFAULT_GRAPH_DTYPE}; float32 on --backend numba or pyg, node values stay float64)",
    )


def graph_dtype(args) -> str:
    """The graph's dtype from --dtype (unset: float64); float32 with --backend numpy is refused (the float64
    reference)."""
    dtype = getattr(args, "dtype", None) or DEFAULT_GRAPH_DTYPE
    backend = getattr(args, "backend", None) or DEFAULT_BACKEND
    if dtype != DEFAULT_GRAPH_DTYPE and backend == "numpy":
        raise InputError(f"--dtype {dtype}: --backend numpy is the float64 reference; use --backend numba or pyg")
    return dtype


def add_compile(p) -> None:
    """--compile: how the tensor model becomes a neuron graph (equivalence.compile_model)."""
    p.add_argument(
        "--compile",
        dest="how",
        choices=COMPILE_CHOICES,
        help=f"graph compile: {' | '.join(COMPILE_CHOICES)} (default: the variant's own: official for official, "
        "dense for normfree)",
    )


def check_compile(model, how, flag: str = "--compile", value: str | None = None):
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
            f"{flag} {shown(how)}: does not apply to {'an' if v[:1] in 'aeiou' else 'a'} {v} model (it applies to "
            f"{' and '.join(APPLIES[how])}); use {flag} {shown(good)}"
        )
    return how


def add_attention(p) -> None:
    """--attention and --chunk-size (train, eval, logits): which equal form of Eq. 4 the forward uses."""
    p.add_argument(
        "--attention",
        choices=("auto", "full", "chunked"),
        help="auto (default): chunked from the measured crossover length on, full below | full: one "
        "T x T score matrix per head | chunked: blocks of --chunk-size tokens, memory linear in T",
    )
    p.add_argument(
        "--chunk-size",
        type=count(1),
        help="tokens per block of the chunked form (implies --attention chunked; default "
        "bdh_gpu.model.AUTO_CHUNK_SIZE)",
    )


def parse_attention(args):
    """The model's `bdh_gpu.Attention` for --attention / --chunk-size (default: auto)."""
    from bdh_gpu import Attention

    form, C = getattr(args, "attention", None), getattr(args, "chunk_size", None)
    if C is not None and form in ("auto", "full"):
        raise InputError(f"--chunk-size: applies to --attention chunked, got --attention {form}")
    if form == "chunked" or C is not None:
        return Attention("chunked", C)  # C None: AUTO_CHUNK_SIZE
    return Attention(form or "auto")


def attention_name(attention) -> str:
    """How the attention form of `parse_attention` reads in a command's first line."""
    from bdh_gpu.model import AUTO_CHUNK_MIN_T, AUTO_CHUNK_SIZE

    if attention.form == "auto":
        return f"auto (chunks of {AUTO_CHUNK_SIZE} from T >= {AUTO_CHUNK_MIN_T}, full below)"
    return "full" if attention.form == "full" else f"chunked (C = {attention.chunk})"


# ---- value types: argparse calls them on the flag's text; a bad value is one line, exit 2, before any work -------


def count(lo: int = 0, hi: int | None = None):
    """An integer flag in [lo, hi]."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(
                f"expected {lo}..{hi:,}, got {v:,}" if hi else f"expected >= {lo}, got {v}"
            )
        return v

    parse.__name__ = "integer"
    return parse


def real(lo: float | None = None, hi: float | None = None, *, open_lo: bool = False):
    """A finite float flag in [lo, hi] ((lo, hi] with open_lo)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        low = lo is not None and (v <= lo if open_lo else v < lo)
        if not math.isfinite(v) or low or (hi is not None and v > hi):
            side = f"> {lo}" if open_lo else f">= {lo}"
            want = f"a finite number {side}" if lo is not None else "a finite number"
            raise argparse.ArgumentTypeError(f"expected {want}{f' and <= {hi}' if hi is not None else ''}, got {text}")
        return v

    parse.__name__ = "number"
    return parse


def local_host(text: str) -> str:
    """A host to bind on this machine only (the viewer's server has no authentication): localhost or an IPv4
    loopback address (127.x.y.z; the server is IPv4)."""
    import ipaddress

    try:
        ok = text == "localhost" or (ipaddress.ip_address(text).version == 4 and ipaddress.ip_address(text).is_loopback)
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(
            "expected localhost or an IPv4 loopback address (127.x.y.z): the viewer has no authentication, so it "
            f"serves this machine only; got {text!r}"
        )
    return text


def prompt_bytes(text: str) -> bytes:
    """A prompt given on the command line, as the bytes the user typed (undecodable bytes kept as they are)."""
    return os.fsencode(text)


# ---- threads: the default that survives a busy machine (benchmarks/threads.py measured it) ----------------------

THREADS_POLICY = (
    "intra-op threads = the CPUs this process may use (os.sched_getaffinity), OpenMP waits passively "
    "(OMP_WAIT_POLICY=PASSIVE unless set), so a busy machine slows a run down instead of collapsing it; "
    "$OMP_NUM_THREADS or --threads N override the count"
)


def add_threads(p) -> None:
    """--threads (train, eval, generate, logits): torch's intra-op threads on the CPU."""
    p.add_argument(
        "--threads",
        type=count(1, 1024),
        help="CPU threads of torch (default: the CPUs this process may use, $OMP_NUM_THREADS if set)",
    )


def set_threads(args) -> int:
    """Apply --threads, or the default policy (THREADS_POLICY), before the command computes; returns the count.
    The default applies when bdh starts torch itself (the `bdh` command): a process that imported torch before
    (a test, a notebook calling bdh.cli.main) keeps its own thread setting, since OpenMP's wait policy is read
    only when torch loads."""
    import sys

    first = "torch" not in sys.modules
    if first:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    k = getattr(args, "threads", None)
    if k is None and first and not os.environ.get("OMP_NUM_THREADS"):
        k = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if k is not None:
        torch.set_num_threads(k)
    return torch.get_num_threads()
