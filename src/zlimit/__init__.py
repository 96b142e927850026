"""zlimit: the infinite-width μP limit of deep MLPs, by Monte Carlo over Z variables.

See ``docs/z-recursions.md`` for the maths every function here follows.
"""
from .activations import Activation
from .losses import Loss
from .model import MLP, batch_schedule
from .results import Run

__version__ = "0.1.0"

__all__ = ["MLP", "Activation", "Loss", "Run", "batch_schedule", "__version__"]
