"""`ModelHubMixin`: `load`, `from_pretrained` and `save_pretrained` of a model class, the contract of
huggingface_hub's PyTorchModelHubMixin, by hand (`BDH` inherits it).

A model is a directory (or a Hub repository) holding `config.json` + `model.safetensors`, exactly what
`bdh_gpu.save` writes and `bdh_gpu.load` (= `BDH.load`) reads. A local directory loads offline; anything else
that looks like a Hub id ("owner/name") is fetched with huggingface_hub when it is installed (an optional extra:
`pip install huggingface_hub`), into its cache; every failure is one `InputError` line. No pickle anywhere.

The mixin builds `cls(config)` (as PyTorchModelHubMixin does), so it depends on the file format (`bdh_gpu.io`)
and not on the model: the imports run one way, model -> hub -> io -> config.
"""

from __future__ import annotations

import os
import re

from .config import InputError
from .io import CONFIG_FILE, WEIGHTS_FILE, read_model_dir, save

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelHubMixin:
    """For a torch module class built as `cls(config)` whose state_dict is what `bdh_gpu.save` writes."""

    @classmethod
    def load(cls, directory: str, map_location="cpu"):
        """Read a model directory written by `save` (dtype kept); every problem is a one-line InputError naming it."""
        config, tensors = read_model_dir(directory)
        model = cls(config)
        model.to(tensors["E"].dtype)
        model.load_state_dict(tensors)
        return model.to(map_location)

    @classmethod
    def from_pretrained(
        cls, path_or_hub_id: str, map_location="cpu", revision: str | None = None, cache_dir: str | None = None
    ):
        """A model from a local directory, or from the Hub repository `owner/name` (needs huggingface_hub)."""
        src = os.fspath(path_or_hub_id)
        if os.path.isdir(src):
            return cls.load(src, map_location=map_location)
        if os.path.exists(src) or not HUB_ID.match(src):
            raise InputError(
                f"{src}: not a model directory (expected a directory with {CONFIG_FILE} and "
                f"{WEIGHTS_FILE}, or a Hub id like owner/name)"
            )
        return cls.load(_snapshot(src, revision, cache_dir), map_location=map_location)

    def save_pretrained(self, directory: str) -> str:
        """Write config.json + model.safetensors into `directory` (bdh_gpu.save: atomic, no pickle); returns it."""
        save(self, os.fspath(directory))
        return os.fspath(directory)


def _snapshot(hub_id: str, revision: str | None, cache_dir: str | None) -> str:
    """The local directory of the Hub repository's config.json + model.safetensors (huggingface_hub's cache)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise InputError(
            f"{hub_id}: no such directory; read as a Hugging Face Hub id, fetching it needs "
            "huggingface_hub (pip install huggingface_hub)"
        ) from None
    try:
        return snapshot_download(
            hub_id, revision=revision, cache_dir=cache_dir, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE]
        )
    except Exception as e:  # offline, unknown repository, no access: the hub's own message, on one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(
            f"{hub_id}: could not fetch it from the Hugging Face Hub ({type(e).__name__}: {msg})"
        ) from None
