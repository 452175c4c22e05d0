"""Tests of vtrial.engine.grid: the typed simulation and time-course sections and the
time points of a simulation, against direct constructions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import small_study_data
from vtrial.engine.grid import Simulation, Timecourse, evaluation_grid, store_times
from vtrial.errors import ConfigError
from vtrial.study.config import load_study, study_from_dict

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("end", "every"),
    [(48.0, 12.0), (50.0, 12.0), (1.0, 0.1), (3.0, 3.0), (10.0, 4.0)],
)
def test_store_times_are_every_step_and_the_end(end: float, every: float) -> None:
    t = store_times(end, every)
    k = int(np.floor(end / every + 1e-9))
    expected = sorted({round(i * every, 12) for i in range(k + 1)} | {end})
    np.testing.assert_allclose(t, expected, rtol=0, atol=1e-12)
    assert t[0] == 0.0
    assert t[-1] == end
    assert np.all(np.diff(t) > 0)


def test_evaluation_grid_is_the_sorted_union_within_the_study() -> None:
    stored = store_times(100.0, 25.0)
    probes = [0.0, 12.5, 99.0, 150.0, -1.0]  # outside [0, end] are dropped
    g = evaluation_grid(100.0, 40.0, stored, probes)
    assert g.tolist() == [0.0, 12.5, 25.0, 40.0, 50.0, 75.0, 80.0, 99.0, 100.0]


def test_sections_mirror_the_study_data() -> None:
    study = load_study(ROOT / "config" / "config.yaml")
    sim, tc = study.data["simulation"], study.data["outputs"]["timecourse"]
    assert study.simulation == Simulation(
        float(sim["end"]),
        float(sim["grid"]),
        float(sim["rtol"]),
        float(sim["atol"]),
        int(sim["max_steps"]),
    )
    assert study.timecourse.outputs == tuple(tc["outputs"])
    assert study.timecourse.every == float(tc["every"])
    assert (study.timecourse.patients is None) == (tc["patients"] == "all")
    assert Timecourse.from_data({"every": 2, "outputs": ["CP"], "patients": 5}).patients == 5
    np.testing.assert_array_equal(study.store_times(), store_times(sim["end"], tc["every"]))


def test_outputs_at_dose_is_declared_and_checked() -> None:
    """``simulation.outputs_at_dose`` defaults to ``before``, takes ``after`` and refuses
    anything else with the key and the value."""
    assert study_from_dict(small_study_data()).simulation.outputs_at_dose == "before"
    d = small_study_data()
    d["simulation"]["outputs_at_dose"] = "after"
    assert study_from_dict(d).simulation.outputs_at_dose == "after"
    d["simulation"]["outputs_at_dose"] = "during"
    with pytest.raises(ConfigError, match=r"simulation\.outputs_at_dose"):
        study_from_dict(d)
