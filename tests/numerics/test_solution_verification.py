"""Solution verification of a whole study (ASME V&V 40 / FDA credibility logic).

The default study's model (2-cmt oral PK, Friberg myelosuppression, Claret tumour
growth inhibition) simulated for its patients at the default tolerances and at 10x
tighter ones: every reported quantity of the patients table changes by < 0.1 %
(relative, floored at 1e-3 of the column's largest magnitude), and adverse-event
grades change only for patients whose worst value lies within 0.1 % of a threshold.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np

from vtrial.population.sampling import sample_population
from vtrial.run.chunk import simulate_patients
from vtrial.study.config import study_from_dict

from ..conftest import small_study_data

SV_TOL = 1e-3


def test_patients_table_is_converged(record_error: Callable[[str, float, float], None]) -> None:
    data = small_study_data()
    data["study"]["replicates"] = 1
    data["population"]["size"] = 120
    tight = copy.deepcopy(data)
    tight["simulation"]["rtol"] = 1e-7
    tight["simulation"]["atol"] = 1e-10
    tables = []
    for d in (data, tight):
        study = study_from_dict(d, source="study.yaml")
        pop = sample_population(study)
        patients, _, _ = simulate_patients(study, pop, threads=1)
        assert (patients["solver_status"] == "ok").all()
        tables.append(patients)
    a, b = tables
    numeric = [
        c
        for c in a.columns
        if a[c].dtype.kind == "f" and c not in ("replicate", "patient_id", "n_steps")
    ]
    assert {"cmax", "auc", "ctrough", "ae_neutropenia_worst", "tumour_change"} <= set(numeric)
    for col in numeric:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        both = np.isfinite(x) & np.isfinite(y)
        assert np.array_equal(np.isfinite(x), np.isfinite(y)), col
        if not both.any():
            continue
        floor = 1e-3 * np.abs(y[both]).max()
        err = float(np.max(np.abs(x[both] - y[both]) / np.maximum(np.abs(y[both]), floor)))
        record_error(f"study patients table, {col}: default vs 10x tighter", err, SV_TOL)
        assert err < SV_TOL, col
    study = study_from_dict(data, source="study.yaml")
    thr, _ = study.adverse_events["neutropenia"].grading()
    worst = b["ae_neutropenia_worst"].to_numpy()
    near = np.any(np.abs(worst[:, None] / np.asarray(thr)[None, :] - 1.0) < SV_TOL, axis=1)
    changed = a["ae_neutropenia_grade"].to_numpy() != b["ae_neutropenia_grade"].to_numpy()
    assert not (changed & ~near).any()
