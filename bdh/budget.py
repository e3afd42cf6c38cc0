"""The memory budget: every command that builds a model or a graph first estimates, from config.json and its
flags, what it will allocate (`bdh_gpu.budget`, `equivalence.budget`) and refuses before allocating anything
when that exceeds the memory there is: exit 2, one line naming the field or flag, the estimate and the limit.

The memory there is: the smaller of the cgroup's limit (/sys/fs/cgroup/memory.max, cgroup v1
memory/memory.limit_in_bytes) and MemAvailable of /proc/meminfo. `BDH_MEMORY_LIMIT=GiB` (a number, e.g. 48 or
0.5) replaces it: raise it to run anyway (the estimate is an upper bound, 1-4x the measured peak), lower it to
keep a job small on a shared machine.
"""

from __future__ import annotations

import math
import os

from bdh.errors import InputError

ENV = "BDH_MEMORY_LIMIT"
CGROUP_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def _cgroup_limit() -> int | None:
    for path in CGROUP_FILES:
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # "max", or v1's "no limit" (~2^63)
            return int(text)
    return None


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def available() -> tuple[int | None, str]:
    """(bytes, where from) of the memory a command may use; (None, ...) when nothing says."""
    text = os.environ.get(ENV)
    if text:
        try:
            gib = float(text)
        except ValueError:
            gib = float("nan")
        if not (math.isfinite(gib) and gib > 0):
            raise InputError(f"{ENV}={text}: expected a number of GiB > 0 (e.g. {ENV}=16)")
        return int(gib * 2**30), f"{ENV}={text}"
    found = [(v, w) for v, w in ((_cgroup_limit(), "the cgroup limit"), (_mem_available(), "MemAvailable")) if v]
    return min(found) if found else (None, "unknown")


def gib(b: int) -> str:
    return f"{b / 2**30:,.2f} GiB" if b < 2**70 else f"{b / 2**30:.3g} GiB"


# which config.json fields make each part of an estimate large (the flags given are named too)
FIELDS = {
    "parameters": ("n_head", "N", "d", "vocab_size"),
    "recurrent state": ("n_layer", "n_head", "N", "d"),
    "synapses": ("n_head", "N", "d", "vocab_size"),
    "sigma": ("n_layer", "n_head", "N", "d"),
    "activations": ("n_layer", "n_head", "N"),
    "attention": ("n_layer", "n_head"),
    "logits": ("vocab_size",),
    "tokens": (),
}
FLAG_PARTS = ("activations", "attention", "logits", "tokens")


def check(estimate, config, flags: dict | None = None) -> None:
    """Refuse (InputError, one line) when `estimate` (a bdh_gpu.budget.Estimate) exceeds the memory available,
    naming what makes it large: config.json's size fields and the flags given (name -> value, None: not given)."""
    have, where = available()
    if have is None or estimate.total <= have:
        return
    raise InputError(
        f"{culprit(estimate, config, flags or {})}: {estimate.what} needs about {gib(estimate.total)} (mostly "
        f"{estimate.largest()}), more than the {gib(have)} available ({where}); make it smaller, or set "
        f"{ENV}=GiB to allow more"
    )


def culprit(estimate, config, flags: dict) -> str:
    """'--block-size 100000000 (config.json n_layer=2, N=256)' or 'config.json n_layer=1000000000, ...'."""
    part = estimate.largest()
    sizes = "config.json " + ", ".join(f"{f}={getattr(config, f):,}" for f in FIELDS.get(part, ("n_layer", "N")))
    given = [f"{k} {v}" for k, v in flags.items() if v is not None]
    if part in FLAG_PARTS and given:
        return f"{' '.join(given)} ({sizes})"
    return sizes


def model_config(directory: str, flag: str = "DIR"):
    """The BDHConfig of a model directory (config.json only, no weights read); a problem is one InputError line."""
    import bdh_gpu

    try:
        return bdh_gpu.load_config(directory)
    except bdh_gpu.InputError as e:
        msg = str(e)
        raise InputError(msg if msg.startswith(directory) and flag == "DIR" else f"{flag}: {msg}") from None


def dtype_bytes(directory: str) -> int:
    """Bytes per float of the model's weights, from model.safetensors' header (4 when unreadable: refused later)."""
    try:
        from safetensors import safe_open

        with safe_open(os.path.join(directory, "model.safetensors"), framework="pt", device="cpu") as f:
            return 8 if f.get_slice("E").get_dtype() == "F64" else 4
    except Exception:  # a missing or broken file is read, and refused in one line, by bdh_gpu.load
        return 4


# ---- one check per kind of command: each reads config.json only, estimates, and refuses before any allocation --


def check_forward(directory: str, B: int, T: int, attention=None, flags: dict | None = None) -> None:
    """eval, logits --engine tensor: forwards of (B, T) tokens without gradient."""
    from bdh_gpu.budget import chunk_of, forward_bytes

    config = model_config(directory)
    check(forward_bytes(config, B, T, chunk_of(attention, T), dtype_bytes(directory)), config, flags)


def check_train(config, B: int, T: int, attention=None, world: int = 1, s: int = 4, flags=None) -> None:
    """train: parameters, gradients, AdamW's moments and the activations of a (B / world, T) batch per rank."""
    from bdh_gpu.budget import chunk_of, forward_bytes

    e = forward_bytes(config, max(1, B // world), T, chunk_of(attention, T), s, train=True)
    if world > 1:
        e.parts = {k: v * world for k, v in e.parts.items()}
        e.what += f" on each of {world} ranks"
    check(e, config, flags)


def check_generate(directory: str, prompt: int, tokens: int, flags=None) -> None:
    """generate: the prompt's forward, the recurrent state of every layer, the tokens."""
    from bdh_gpu.budget import chunk_of, generate_bytes

    config = model_config(directory)
    check(generate_bytes(config, prompt, tokens, dtype_bytes(directory), chunk_of(None, prompt)), config, flags)


def check_graph(
    directory: str, how: str | None, tokens: int = 1, ranks: int | None = None, flags=None, dtype: str = "float64"
) -> None:
    """verify, view, trace, export-graph, logits --engine graph-*: the compiled graph (per rank, summed over the
    ranks of this job; `dtype`: the graph's, equivalence.budget) and the tensor model's float64 forward over the
    text."""
    from bdh_graph.comm import mpi_world_size
    from equivalence import APPLIES, default_compile
    from equivalence.budget import graph_bytes

    config = model_config(directory)
    if how is None or how not in APPLIES or config.variant not in APPLIES[how]:
        how = default_compile(config)  # a compile that does not apply is refused later, in its own words
    check(graph_bytes(config, how, ranks or max(1, mpi_world_size()), tokens, dtype), config, flags)
