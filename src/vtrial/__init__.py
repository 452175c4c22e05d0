"""vtrial: in-silico drug trials on virtual populations.

The public API re-exported here is small: load and compose models, simulate
patients given as a table (with residual error) or a dataset's subjects as recorded,
load a study and run it in this process (small studies, notebooks), and read a
NONMEM-style dataset. The names are
imported on first use (PEP 562), so ``import vtrial`` stays cheap: numba, scipy and
pandas load only when a function that needs them is called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "Tolerances": "vtrial.engine.host",
    "simulate": "vtrial.engine.api",
    "build_model": "vtrial.model.spec",
    "compose": "vtrial.model.spec",
    "list_models": "vtrial.model.spec",
    "load_model": "vtrial.model.spec",
    "add_observations": "vtrial.model.residual",
    "load_study": "vtrial.study.config",
    "read_dataset": "vtrial.data.dataset",
    "run_study": "vtrial.run.inprocess",
    "study_from_dict": "vtrial.study.config",
}

__all__ = [
    "Tolerances",
    "__version__",
    "add_observations",
    "build_model",
    "compose",
    "list_models",
    "load_model",
    "load_study",
    "read_dataset",
    "run_study",
    "simulate",
    "study_from_dict",
]

if TYPE_CHECKING:
    from vtrial.data.dataset import read_dataset
    from vtrial.engine.api import simulate
    from vtrial.engine.host import Tolerances
    from vtrial.model.residual import add_observations
    from vtrial.model.spec import build_model, compose, list_models, load_model
    from vtrial.run.inprocess import run_study
    from vtrial.study.config import load_study, study_from_dict


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vtrial' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
