"""BDH-GPU, the tensor model of the Dragon Hatchling (arXiv:2509.26507): see docs/bdh_gpu.md.

Importing the package imports no torch: the config, the errors and the torch-free readers of a model directory
(`load_config`, `load_weights`: what a graph rank compiling from a directory needs, docs/distributed.md) are
loaded at once; the model (`BDH`, `Attention`, `BDHState`, `load`), `save` and the submodules on first use
(PEP 562 module `__getattr__`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .config import PRESETS, BDHConfig, get_preset
from .errors import ActivationError, InputError, NonFiniteLossError, TrainingFailed
from .modeldir import load_config, load_weights

if TYPE_CHECKING:
    from .io import save
    from .model import BDH, Attention, BDHState

_LAZY = {"BDH": "model", "Attention": "model", "BDHState": "model", "save": "io"}
_SUBMODULES = (
    "analysis",
    "budget",
    "checkpoint",
    "config",
    "data",
    "errors",
    "hub",
    "io",
    "model",
    "modeldir",
    "official",
    "parallel",
    "positional",
    "tbptt",
    "train",
)

__all__ = [
    "ActivationError",
    "Attention",
    "BDH",
    "BDHConfig",
    "InputError",
    "NonFiniteLossError",
    "TrainingFailed",
    "BDHState",
    "PRESETS",
    "get_preset",
    "load",
    "load_config",
    "load_weights",
    "save",
]


def __getattr__(name):
    """The torch side on first use: `bdh_gpu.BDH`, `bdh_gpu.save`, `bdh_gpu.load` (= BDH.load: a model
    directory written by bdh_gpu.save), and submodules such as `bdh_gpu.model`."""
    if name == "load":
        value = __getattr__("BDH").load
    elif name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
