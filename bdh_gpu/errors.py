"""The exceptions of a training run that stopped (the model or its numbers failed, not the input)."""

from __future__ import annotations


class NonFiniteLossError(ValueError):
    """The loss (or the weights) became inf/nan; training stopped, the last good checkpoint is kept."""


class ActivationError(ValueError):
    """A layer's activations vanished or exploded; training stopped, the last good checkpoint is kept."""
