"""zlimit: the infinite-width μP limit of deep MLPs, by Monte Carlo over Z variables.

The maths every function follows is ``docs/z-recursions.md``. The public modules
are this one, :mod:`zlimit.diagnostics`, :mod:`zlimit.datasets`, :mod:`zlimit.io`,
:mod:`zlimit.compare` and :mod:`zlimit.plot`; modules whose names start with an
underscore are private.

>>> import numpy as np, zlimit
>>> X, y = zlimit.datasets.gaussian(4, 3, seed=0)
>>> model = zlimit.MLP(depth=3, activation="tanh", lr=0.5)
>>> limit = zlimit.simulate(model, X, y, steps=3, particles=20_000, progress=False)
>>> net = zlimit.train_finite(model, X, y, width=1024, steps=3, seed=0)
>>> limit.outputs.shape == net.outputs.shape == (4, 4)
True
"""
from . import datasets, diagnostics
from ._activations import Activation
from ._api import estimate_memory, simulate, train_finite
from ._demo import paper_figure
from ._errors import (CheckpointWarning, DataWarning, DivergenceError, DivergenceWarning, MonteCarloWarning, NumericalError,
                      ResourceError)
from ._finite import bias_scales, init_parameters, init_weights, layer_scales
from ._losses import Loss
from ._model import MLP, batch_schedule
from ._results import Run
from ._version import __version__
from .io import from_xarray, load, save

__all__ = [
    "MLP", "Activation", "Loss", "Run", "batch_schedule", "simulate", "train_finite", "init_weights",
    "init_parameters", "bias_scales", "layer_scales", "estimate_memory", "paper_figure", "load", "save", "from_xarray", "datasets",
    "diagnostics",
    "CheckpointWarning", "DataWarning", "DivergenceError", "DivergenceWarning", "MonteCarloWarning", "NumericalError",
    "ResourceError", "__version__",
]
