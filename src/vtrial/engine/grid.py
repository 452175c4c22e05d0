"""Time points of a simulation: the stored time courses and the evaluation grid.

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

from collections.abc import Sequence

import numpy as np


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
