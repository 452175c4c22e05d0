"""Failed solves are reported per patient, never dropped, and never disturb the others."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import vtrial
from vtrial.model.spec import Model

REGIMEN = {"route": "oral", "dose": 100.0, "interval": 24.0, "count": 7}
TIMES = np.arange(0.0, 337.0, 12.0)


@pytest.fixture(scope="module")
def model() -> Model:
    return vtrial.build_model(
        {"pk": "pk_2cmt", "components": {"anc": {"model": "friberg", "links": {"DRUG": "CP"}}}}
    )


def test_poison_patients_reported_others_unchanged(model: Model) -> None:
    good = pd.DataFrame({"CL": [5.0, 4.0, 6.0], "SLOPE": [0.5, 0.3, 0.8]})
    mixed = pd.DataFrame(
        {
            "CL": [5.0, np.nan, 4.0, 6.0, 5.0],
            "SLOPE": [0.5, 0.5, 0.3, 0.8, 0.5],
            # a negative baseline cannot be integrated on the log scale
            "CIRC0": [5.0, 5.0, 5.0, 5.0, -1.0],
        }
    )
    a = vtrial.simulate(model, good, REGIMEN, TIMES)
    b = vtrial.simulate(model, mixed, REGIMEN, TIMES)
    status = b.groupby("patient_id")["solver_status"].first().tolist()
    assert status == ["ok", "invalid_initial", "ok", "ok", "invalid_initial"]
    assert len(b) == 5 * TIMES.size  # every patient keeps its rows
    assert b.loc[b["solver_status"] != "ok", "ANC"].isna().all()
    kept = b[b["patient_id"].isin([1, 3, 4])].reset_index(drop=True)
    np.testing.assert_array_equal(kept["ANC"].to_numpy(), a["ANC"].to_numpy())


def test_step_budget_exhausted_is_reported_after_retry(model: Model) -> None:
    pars = pd.DataFrame({"CL": [5.0, 5.0]})
    out = vtrial.simulate(model, pars, REGIMEN, TIMES, tolerances=vtrial.Tolerances(max_steps=20))
    first = out.groupby("patient_id").first()
    # Dormand-Prince ran out of steps, the Rosenbrock retry too: reported, not dropped
    assert (first["solver_status"] == "max_steps").all()
    assert (first["solver"] == "dopri5+rosenbrock23").all()
    assert out["ANC"].isna().all()
