"""The two ways bdh_gpu says no: the input was bad (`InputError`), or the input was fine and the training run
itself failed (`TrainingFailed`: it diverged, or its activations died). Callers (the CLI) tell them apart by class.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input to bdh_gpu (a config value, a model directory, a data file, a training setting, a checkpoint
    that does not fit): one line naming the field or file."""


class TrainingFailed(RuntimeError):
    """A training run stopped because its numbers failed, not its input; the last good checkpoint is kept."""


class NonFiniteLossError(TrainingFailed):
    """The loss (or the weights) became inf/nan; training stopped, the last good checkpoint is kept."""


class ActivationError(TrainingFailed):
    """A layer's activations vanished or exploded; training stopped, the last good checkpoint is kept."""
