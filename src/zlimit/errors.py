"""Exceptions that tell the user what to change."""
from __future__ import annotations

__all__ = ["DivergenceError", "ResourceError"]


class DivergenceError(FloatingPointError):
    """A run's outputs became non-finite; the message names the step. Lower the learning rate."""


class ResourceError(MemoryError):
    """A run would need more memory than the machine has; the message says how to reduce it."""
