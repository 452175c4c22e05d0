"""vtrial: in-silico drug trials on virtual populations.

The public API re-exported here is small: load and compose models, simulate
patients given as a table (with residual error), and run or verify a study.
"""

from __future__ import annotations

from vtrial.engine.host import Tolerances, simulate
from vtrial.model.residual import add_observations
from vtrial.model.spec import build_model, compose, list_models, load_model

__version__ = "0.1.0"

__all__ = [
    "Tolerances",
    "__version__",
    "add_observations",
    "build_model",
    "compose",
    "list_models",
    "load_model",
    "simulate",
]
