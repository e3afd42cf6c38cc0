"""`BDH.from_pretrained` / `save_pretrained`: the contract of huggingface_hub's PyTorchModelHubMixin, by hand.

A model is a directory (or a Hub repository) holding `config.json` + `model.safetensors`, exactly what
`bdh_gpu.save` writes and `bdh_gpu.load` reads. A local directory loads offline; anything else that looks like a
Hub id ("owner/name") is fetched with huggingface_hub when it is installed (an optional extra: `pip install
huggingface_hub`), into its cache; every failure is one `InputError` line. No pickle anywhere.
"""

from __future__ import annotations

import os
import re

from .config import InputError
from .io import CONFIG_FILE, WEIGHTS_FILE, load, save

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def from_pretrained(path_or_hub_id: str, map_location="cpu", revision: str | None = None, cache_dir: str | None = None):
    """A model from a local directory, or from the Hub repository `owner/name` (needs huggingface_hub)."""
    src = os.fspath(path_or_hub_id)
    if os.path.isdir(src):
        return load(src, map_location=map_location)
    if os.path.exists(src) or not HUB_ID.match(src):
        raise InputError(
            f"{src}: not a model directory (expected a directory with {CONFIG_FILE} and "
            f"{WEIGHTS_FILE}, or a Hub id like owner/name)"
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise InputError(
            f"{src}: no such directory; read as a Hugging Face Hub id, fetching it needs "
            "huggingface_hub (pip install huggingface_hub)"
        ) from None
    try:
        local = snapshot_download(
            src, revision=revision, cache_dir=cache_dir, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE]
        )
    except Exception as e:  # offline, unknown repository, no access: the hub's own message, on one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{src}: could not fetch it from the Hugging Face Hub ({type(e).__name__}: {msg})") from None
    return load(local, map_location=map_location)


def save_pretrained(model, directory: str) -> str:
    """Write config.json + model.safetensors into `directory` (bdh_gpu.save: atomic, no pickle); returns it."""
    save(model, os.fspath(directory))
    return os.fspath(directory)
