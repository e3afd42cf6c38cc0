"""BDH-GPU, the tensor model of the Dragon Hatchling (arXiv:2509.26507): see docs/bdh_gpu.md."""

from .config import PRESETS, BDHConfig, get_preset
from .errors import ActivationError, InputError, NonFiniteLossError, TrainingFailed
from .io import load_config, load_weights, save
from .model import BDH, Attention, BDHState

load = BDH.load  # bdh_gpu.load(directory, map_location="cpu"): a model directory written by bdh_gpu.save

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
