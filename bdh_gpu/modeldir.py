"""Model directories read without torch: `config.json`, and slices of `model.safetensors` as float64 numpy.

A graph rank (equivalence.compile_model(DIR), docs/distributed.md) needs only the config and its neurons' rows
and columns of the weights; this module gives them from numpy alone, so such a rank never imports torch (its
~0.2 GiB of resident libraries). The safetensors layout is read here directly: 8 bytes (little-endian u64) of
header length, the JSON header {name: {dtype, shape, data_offsets}}, then the tensors' bytes, row-major. A slice
is read through a read-only memory map, so only its own pages are touched. `bdh_gpu.io` writes the files (torch)
and re-exports what is here.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .config import BDHConfig
from .errors import InputError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
NUMPY_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16}  # BF16: raw bits


def load_config(directory: str) -> BDHConfig:
    """The BDHConfig of a model directory (config.json only); every problem is a one-line InputError naming it."""
    if not os.path.isdir(directory):
        raise InputError(
            f"{directory}: not a directory (expected a model directory with {CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    cfg_path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(cfg_path):
        raise InputError(f"{directory}: no {CONFIG_FILE} (not a model directory)")
    try:
        with open(cfg_path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{cfg_path}: bad JSON ({str(e).splitlines()[0]})") from None
    try:
        return BDHConfig.from_dict(data)
    except (ValueError, TypeError) as e:
        raise InputError(f"{cfg_path}: {str(e).splitlines()[0]}") from None


def expected_shapes(config: BDHConfig) -> dict:
    h, N, d, V = config.n_head, config.N, config.d, config.vocab_size
    return {"embed.weight": (V, d), "D_x": (h, N, d), "D_y": (h, N, d), "E": (d, h * N), "lm_head": (d, V)}


def check_tensors(w_path, expected: dict, shapes: dict, bad_dtype: dict) -> None:
    """Keys and shapes as `expected` (name -> shape); bad_dtype: name -> how its dtype is not floating (or None)."""
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise InputError(f"{w_path}: tensor keys do not match the config: missing {missing}, unexpected {unexpected}")
    for key, ref in expected.items():
        if tuple(shapes[key]) != tuple(ref):
            raise InputError(
                f"{w_path}: shape mismatch for {key}: expected {tuple(ref)} "
                f"(from {CONFIG_FILE}), got {tuple(shapes[key])}"
            )
        if bad_dtype[key]:
            raise InputError(f"{w_path}: {key} has {bad_dtype[key]}, expected a floating-point tensor")


def read_header(w_path: str) -> tuple[dict, int]:
    """({name: {dtype, shape, data_offsets}}, offset of the data in the file) of a safetensors file; a file that
    is not one is a one-line InputError."""

    def bad(why):
        return InputError(f"{w_path}: not a readable safetensors file ({why})")

    size = os.path.getsize(w_path)
    with open(w_path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n <= size - 8:
            raise bad(f"header length {n} in a file of {size} bytes")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise bad(f"header: {str(e).splitlines()[0]}") from None
    if not isinstance(header, dict):
        raise bad("header: not a JSON object")
    header.pop("__metadata__", None)
    for key, t in header.items():
        ok = isinstance(t, dict) and {"dtype", "shape", "data_offsets"} <= set(t)
        begin, end = t["data_offsets"] if ok and len(t["data_offsets"]) == 2 else (-1, -1)
        if not ok or not 0 <= begin <= end <= size - 8 - n:
            raise bad(f"tensor {key}: bad header entry")
        item = np.dtype(NUMPY_DTYPES[t["dtype"]]).itemsize if t["dtype"] in NUMPY_DTYPES else None
        if item is not None and end - begin != item * int(np.prod(t["shape"], dtype=np.int64)):
            raise bad(f"tensor {key}: {end - begin} bytes for shape {tuple(t['shape'])} {t['dtype']}")
    return header, 8 + n


def check_header(w_path: str, config: BDHConfig) -> tuple[dict, int]:
    """The keys, shapes and dtypes of model.safetensors (its header only: no tensor is read) against config;
    returns what `read_header` does."""
    header, start = read_header(w_path)
    check_tensors(
        w_path,
        expected_shapes(config),
        {k: t["shape"] for k, t in header.items()},
        {k: None if t["dtype"].startswith(("F", "BF")) else f"dtype {t['dtype']}" for k, t in header.items()},
    )
    return header, start


def check_finite(w_path: str, key: str, a: np.ndarray) -> None:
    """A weight holding nan or inf is refused, naming the tensor (a model with it computes nothing but nan)."""
    bad = ~np.isfinite(a)
    if bad.any():
        k = int(bad.sum())
        raise InputError(
            f"{w_path}: {key} holds {k:,} non-finite value{'s' if k > 1 else ''} (nan or inf) of {a.size:,}; "
            "the model cannot compute with it (retrain, or restore an earlier checkpoint)"
        )


def _tensor(w_path, header, start, key, shape):
    """A read-only memory map of tensor `key` viewed as `shape` (its elements in row-major order)."""
    t = header[key]
    begin = start + t["data_offsets"][0]
    return np.memmap(w_path, dtype=NUMPY_DTYPES[t["dtype"]], mode="r", offset=begin, shape=tuple(shape))


def _float64(raw: np.ndarray, dtype: str) -> np.ndarray:
    """The slice's values in float64, exactly (BF16: its 16 bits are the top half of a float32)."""
    if dtype == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return raw.astype(np.float64)


def load_weights(directory: str, lo: int = 0, hi: int | None = None, E_all: bool = False) -> dict:
    """The effective weights (gain * parameter, as `BDH.effective_weights`) of neurons lo..hi-1 only, float64
    numpy, read straight from model.safetensors without torch, without building the model, and without reading
    the other neurons' rows:

        D_x, D_y (hi - lo, d)   their rows (neuron index head * N + i; the file stores them (h, N, d))
        E        (d, hi - lo)   its columns (all n columns with E_all)
        embed (V, d), lm_head (d, V), config (the BDHConfig)

    Each parameter is converted to float64 before its gain multiplies it, so the values equal
    `BDH.effective_weights()` of the model converted to float64 (what the graph compilers read) bit for bit.
    A dtype numpy has no type for (float8) is read through torch (`load_weights_torch`)."""
    config = load_config(directory)
    n, d = config.n, config.d
    hi = n if hi is None else hi
    if not 0 <= lo <= hi <= n:
        raise ValueError(f"load_weights: expected 0 <= lo <= hi <= n = {n}, got lo = {lo}, hi = {hi}")
    w_path = os.path.join(directory, WEIGHTS_FILE)
    if not os.path.isfile(w_path):
        raise InputError(f"{directory}: no {WEIGHTS_FILE}")
    header, start = check_header(w_path, config)
    if any(t["dtype"] not in NUMPY_DTYPES for t in header.values()):
        return load_weights_torch(directory, config, lo, hi, E_all)
    g = config.resolved_gains()
    V = config.vocab_size
    cols = slice(0, n) if E_all else slice(lo, hi)
    views = {  # name in the file, its (n, d) / (d, n) / ... view, the slice this rank reads, its gain
        "D_x": ("D_x", (n, d), np.s_[lo:hi], "D_x"),
        "D_y": ("D_y", (n, d), np.s_[lo:hi], "D_y"),
        "E": ("E", (d, n), np.s_[:, cols], "E"),
        "embed": ("embed.weight", (V, d), np.s_[:], "embed"),
        "lm_head": ("lm_head", (d, V), np.s_[:], "lm_head"),
    }
    out = {"config": config, "lo": lo, "hi": hi, "E_lo": cols.start}
    try:
        for name, (key, shape, part, gain) in views.items():
            values = _float64(_tensor(w_path, header, start, key, shape)[part], header[key]["dtype"])
            check_finite(w_path, key, values)
            out[name] = values * g[gain]
    except OSError as e:
        raise InputError(f"{w_path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    return out


def load_weights_torch(directory: str, config: BDHConfig, lo: int, hi: int, E_all: bool) -> dict:
    """`load_weights` for a file holding a dtype numpy has no type for (float8): the same slices, read through
    torch's safetensors (the header already checked): the only path of this module that imports torch."""
    from safetensors import SafetensorError, safe_open

    w_path = os.path.join(directory, WEIGHTS_FILE)
    g = config.resolved_gains()

    def eff(t, key, gain):
        values = t.double().numpy()
        check_finite(w_path, key, values)
        return values * g[gain]

    try:
        with safe_open(w_path, framework="pt", device="cpu") as f:
            sl = {k: f.get_slice(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
            return {
                "config": config,
                "lo": lo,
                "hi": hi,
                "E_lo": 0 if E_all else lo,
                "D_x": eff(_neuron_rows(sl["D_x"], lo, hi, config), "D_x", "D_x"),
                "D_y": eff(_neuron_rows(sl["D_y"], lo, hi, config), "D_y", "D_y"),
                "E": eff(sl["E"][:, :] if E_all else sl["E"][:, lo:hi], "E", "E"),
                "embed": eff(sl["embed.weight"][:, :], "embed.weight", "embed"),
                "lm_head": eff(sl["lm_head"][:, :], "lm_head", "lm_head"),
            }
    except (SafetensorError, OSError) as e:
        raise InputError(f"{w_path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None


def _neuron_rows(sl, lo: int, hi: int, config: BDHConfig):
    """Rows lo..hi-1 of the (n, d) view of an (h, N, d) safetensors slice, reading only those rows."""
    N, d = config.N, config.d
    parts = [
        sl[k : k + 1, max(lo - k * N, 0) : min(hi - k * N, N)].reshape(-1, d)
        for k in range(config.n_head)
        if max(lo, k * N) < min(hi, (k + 1) * N)
    ]
    import torch

    return torch.cat(parts) if parts else torch.zeros(0, d)
