"""Model directories: `config.json` + `model.safetensors` (no pickle). Written atomically, read with checks.

The format only: this module never builds a model (it knows the tensors' names and shapes from the config), so
the model class can build itself from a directory (`bdh_gpu.hub.ModelHubMixin.load`) without an import circle.
Reading the config and slices of the weights needs no torch: `bdh_gpu.modeldir` (re-exported here).
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
from .modeldir import (  # noqa: F401 (re-exported: the format's names and readers live there, torch-free)
    CONFIG_FILE,
    WEIGHTS_FILE,
    check_header,
    load_config,
    load_weights,
)
from .modeldir import expected_shapes as _expected_shapes  # noqa: F401

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


def check_finite(w_path: str, key: str, t: torch.Tensor) -> None:
    """A weight holding nan or inf is refused, naming the tensor (a model with it computes nothing but nan)."""
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        k = int(bad.sum())
        raise InputError(
            f"{w_path}: {key} holds {k:,} non-finite value{'s' if k > 1 else ''} (nan or inf) of {t.numel():,}; "
            "the model cannot compute with it (retrain, or restore an earlier checkpoint)"
        )
