"""Model directories: `config.json` + `model.safetensors` (no pickle). Written atomically, read with checks.

The format only: this module never builds a model (it knows the tensors' names and shapes from the config), so
the model class can build itself from a directory (`bdh_gpu.hub.ModelHubMixin.load`) without an import circle.
"""

from __future__ import annotations

import json
import os
import re
import tempfile

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import BDHConfig, InputError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TMP_PREFIX = ".tmp-"  # temporary files of atomic_write: `.tmp-XXXX-<name>`


def atomic_write(path: str, write) -> None:
    """write(tmp_path) into a temporary file in the same directory, fsync it, os.replace it onto `path`, fsync
    the directory: readers (and a machine that loses power) see the old file or the new one, never half of one.
    A failure (or KeyboardInterrupt) removes the temporary file; a kill -9 may leave a `.tmp-*` file behind,
    never a half file under the real name."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix="-" + os.path.basename(path), dir=folder)
    except OSError as e:
        raise os_error(e, path) from None
    os.close(fd)
    try:
        try:
            write(tmp)
        except Exception as e:
            error = os_error(e, path)
            if error is e:
                raise
            raise error from None
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; a model directory is as readable as any file
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


def os_error(e: Exception, path: str) -> Exception:
    """The OS error inside a failed write, as an OSError naming `path` (the file being written): a full disk
    from safetensors' writer ('... (os error 28) ...') or from Python's file object (no file name) reads
    'path: No space left on device'. Any other exception is returned as it is."""
    if isinstance(e, OSError) and e.errno is not None:
        return OSError(e.errno, e.strerror or os.strerror(e.errno), path)
    m = None if isinstance(e, OSError) else re.search(r"\(os error (\d+)\)", str(e))
    if m is None:
        return e
    code = int(m.group(1))
    return OSError(code, os.strerror(code), path)


def _fsync_dir(folder: str) -> None:
    """fsync a directory (a rename in it is then on disk); filesystems that cannot open directories are skipped."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories; the rename is done either way
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def write_model_dir(config_dict: dict, tensors: dict, directory: str, metadata: dict | None = None) -> None:
    """model.safetensors then config.json, each atomically (`tensors`: name -> CPU tensor)."""
    os.makedirs(directory, exist_ok=True)

    def write_config(tmp):
        with open(tmp, "w") as f:
            json.dump(config_dict, f, indent=2, sort_keys=True)
            f.write("\n")

    meta = {"format": "pt", **(metadata or {})}
    atomic_write(os.path.join(directory, WEIGHTS_FILE), lambda tmp: save_file(tensors, tmp, metadata=meta))
    atomic_write(os.path.join(directory, CONFIG_FILE), write_config)


def save(model, directory: str) -> None:
    """Write config.json and model.safetensors into `directory` (created if missing), each atomically.
    `model`: a BDH (any module with a `config` and a state_dict of CPU-movable tensors)."""
    tensors = {k: t.detach().contiguous().cpu() for k, t in model.state_dict().items()}
    write_model_dir(model.config.to_dict(), tensors, directory)


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


def _expected_shapes(config: BDHConfig) -> dict:
    h, N, d, V = config.n_head, config.N, config.d, config.vocab_size
    return {"embed.weight": (V, d), "D_x": (h, N, d), "D_y": (h, N, d), "E": (d, h * N), "lm_head": (d, V)}


def _check_tensors(w_path, expected: dict, shapes: dict, bad_dtype: dict) -> None:
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


def read_model_dir(directory: str) -> tuple[BDHConfig, dict]:
    """(config, tensors) of a model directory written by `save`, the tensors checked against the config (keys,
    shapes, floating point: from the file's header, before any tensor is read) and then for finiteness; every
    problem is a one-line InputError naming the file and the tensor."""
    config = load_config(directory)
    w_path = os.path.join(directory, WEIGHTS_FILE)
    if not os.path.isfile(w_path):
        raise InputError(f"{directory}: no {WEIGHTS_FILE}")
    check_header(w_path, config)
    try:
        tensors = load_file(w_path, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"{w_path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    for key, t in tensors.items():
        check_finite(w_path, key, t)
    return config, tensors


def check_header(w_path: str, config: BDHConfig) -> None:
    """The keys, shapes and dtypes of model.safetensors (its header only: no tensor is read) against config."""
    from safetensors import safe_open

    try:
        with safe_open(w_path, framework="pt", device="cpu") as f:
            sl = {k: f.get_slice(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
            shapes = {k: tuple(s.get_shape()) for k, s in sl.items()}
            dtypes = {k: s.get_dtype() for k, s in sl.items()}
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"{w_path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    _check_tensors(
        w_path,
        _expected_shapes(config),
        shapes,
        {k: None if dt.startswith(("F", "BF")) else f"dtype {dt}" for k, dt in dtypes.items()},
    )


def check_finite(w_path: str, key: str, t: torch.Tensor) -> None:
    """A weight holding nan or inf is refused, naming the tensor (a model with it computes nothing but nan)."""
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        k = int(bad.sum())
        raise InputError(
            f"{w_path}: {key} holds {k:,} non-finite value{'s' if k > 1 else ''} (nan or inf) of {t.numel():,}; "
            "the model cannot compute with it (retrain, or restore an earlier checkpoint)"
        )


def load_weights(directory: str, lo: int = 0, hi: int | None = None, E_all: bool = False) -> dict:
    """The effective weights (gain * parameter, as `BDH.effective_weights`) of neurons lo..hi-1 only, float64
    numpy, read straight from model.safetensors without building the model or reading the other neurons' rows:

        D_x, D_y (hi - lo, d)   their rows (neuron index head * N + i; the file stores them (h, N, d))
        E        (d, hi - lo)   its columns (all n columns with E_all)
        embed (V, d), lm_head (d, V), config (the BDHConfig)

    Each parameter is converted to float64 before its gain multiplies it, so the values equal
    `BDH.effective_weights()` of the model converted to float64 (what the graph compilers read) bit for bit.
    """
    from safetensors import safe_open

    config = load_config(directory)
    n = config.n
    hi = n if hi is None else hi
    if not 0 <= lo <= hi <= n:
        raise ValueError(f"load_weights: expected 0 <= lo <= hi <= n = {n}, got lo = {lo}, hi = {hi}")
    w_path = os.path.join(directory, WEIGHTS_FILE)
    if not os.path.isfile(w_path):
        raise InputError(f"{directory}: no {WEIGHTS_FILE}")
    check_header(w_path, config)
    g = config.resolved_gains()

    def eff(t, key, gain):
        check_finite(w_path, key, t)
        return (t.double() * g[gain]).numpy()

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


def _neuron_rows(sl, lo: int, hi: int, config: BDHConfig) -> torch.Tensor:
    """Rows lo..hi-1 of the (n, d) view of an (h, N, d) safetensors slice, reading only those rows."""
    N, d = config.N, config.d
    parts = [
        sl[k : k + 1, max(lo - k * N, 0) : min(hi - k * N, N)].reshape(-1, d)
        for k in range(config.n_head)
        if max(lo, k * N) < min(hi, (k + 1) * N)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, d)
