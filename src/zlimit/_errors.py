"""Exceptions that tell the user what to change."""
from __future__ import annotations

__all__ = ["CheckpointWarning", "DataWarning", "DivergenceError", "DivergenceWarning", "MonteCarloWarning",
           "NumericalError", "ResourceError"]


class DivergenceError(FloatingPointError):
    """A run's outputs became non-finite; the message names the step. Lower the learning rate."""


class ResourceError(MemoryError):
    """A run would need more memory than the machine has; the message says how to reduce it."""


class NumericalError(ArithmeticError):
    """A run's numerics broke an invariant (e.g. a basis lost orthogonality); the message says which and where."""


class MonteCarloWarning(UserWarning):
    """The Monte Carlo estimates of a run may be unreliable; the message names the step and what to change."""


class DivergenceWarning(UserWarning):
    """A run's training loss grew far past its initial value; the message names the step. Lower the learning rate."""


class CheckpointWarning(UserWarning):
    """A periodic checkpoint could not be written (e.g. a full disk); the run went on with the previous one."""


class DataWarning(UserWarning):
    """The inputs break an assumption of the theory: an input far from the scale ‖ξ‖²/d = 1
    the μP scalings assume, or two parallel inputs (Assumption 4.1); the message names them.

    Examples
    --------
    >>> import warnings, numpy as np, zlimit
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = zlimit.train_finite(zlimit.MLP(depth=1), np.array([[30.0, 0.0]]), np.array([1.0]), width=4, steps=0)
    >>> [(w.category.__name__, str(w.message).split(",")[0]) for w in caught]
    [('DataWarning', 'X[0] has ‖ξ‖²/d = 450')]
    """
