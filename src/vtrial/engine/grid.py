"""Simulation settings and time points: the typed ``simulation`` and
``outputs.timecourse`` sections, the stored time courses and the evaluation grid.

The kernel records outputs at the points of one sorted grid
(:func:`evaluation_grid`): the regular grid of ``simulation.grid``, the end, the stored
time-course times (:func:`store_times`) and the endpoints' probe times
(:func:`vtrial.trial.endpoints.probe_times`).

Examples
--------
>>> store_times(48.0, 12.0).tolist()
[0.0, 12.0, 24.0, 36.0, 48.0]
>>> evaluation_grid(48.0, 24.0, store_times(48.0, 12.0), [0.0, 30.0]).tolist()
[0.0, 12.0, 24.0, 30.0, 36.0, 48.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Simulation:
    """The typed ``simulation`` section (defaults filled): ``end`` and regular ``grid``
    step (h), solver tolerances ``rtol``/``atol`` and ``max_steps`` per patient, and
    ``outputs_at_dose`` (``"before"``: an output at a dose time is pre-dose, the
    default; ``"after"``: post-dose)."""

    end: float
    grid: float
    rtol: float
    atol: float
    max_steps: int
    outputs_at_dose: str = "before"

    @classmethod
    def from_data(cls, sim: Mapping[str, Any]) -> Simulation:
        """The :class:`Simulation` of a validated ``simulation`` section."""
        return cls(
            end=float(sim["end"]),
            grid=float(sim["grid"]),
            rtol=float(sim["rtol"]),
            atol=float(sim["atol"]),
            max_steps=int(sim["max_steps"]),
            outputs_at_dose=str(sim.get("outputs_at_dose", "before")),
        )


@dataclass(frozen=True)
class Timecourse:
    """The typed ``outputs.timecourse``: stored ``every`` (h), the ``outputs`` stored,
    and ``patients`` (None: all; else the ids 1..N of each replicate)."""

    every: float
    outputs: tuple[str, ...]
    patients: int | None = None

    @classmethod
    def from_data(cls, tc: Mapping[str, Any]) -> Timecourse:
        """The :class:`Timecourse` of a validated ``outputs.timecourse`` section."""
        keep = tc["patients"]
        return cls(
            every=float(tc["every"]),
            outputs=tuple(str(o) for o in tc["outputs"]),
            patients=None if keep == "all" else int(keep),
        )


def store_times(end: float, every: float) -> np.ndarray:
    """Time points (h) of the stored time courses: ``0, every, ...`` and ``end``."""
    t = np.arange(0.0, end + 1e-9 * end, every)
    return np.unique(np.append(t[t <= end], end))


def evaluation_grid(
    end: float, step: float, stored: np.ndarray, probes: Sequence[float]
) -> np.ndarray:
    """The kernel's grid (h): regular ``step`` grid, ``end``, stored and probe times,
    sorted and unique, within ``[0, end]``."""
    pts = [np.arange(0.0, end, step), [end], stored, np.array(probes)]
    g = np.unique(np.concatenate([np.asarray(p, dtype=np.float64) for p in pts]))
    return g[(g >= 0.0) & (g <= end)]
