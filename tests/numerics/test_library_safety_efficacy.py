"""Library safety and efficacy models against a tight DOP853 solve.

One composed model (one compiled kernel, also used by tests/test_safety_efficacy.py):
1-cmt IV PK -> Simeoni tumour growth inhibition, concentration-QTc and the
proportional-odds adverse-event probabilities, all driven by CP. Reference: the full
system with the PK amount as an ODE, scipy DOP853 at rtol 1e-12, atol 1e-14, the
outputs computed from its states with the formulas of the papers (written out here,
not taken from the model files). Tolerance: 1e-5 relative to each output's largest
value, on every output at every time and on the tumour nadir (value and time).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp
from scipy.special import expit

import vtrial
from vtrial.model.spec import Model

#: composed model of this module and of tests/test_safety_efficacy.py
COMPONENTS = {
    "tumour": {"model": "tgi_simeoni", "links": {"DRUG": "CP"}},
    "qtc": {"model": "qtc", "links": {"DRUG": "CP"}},
    "diarrhoea_risk": {"model": "ae_proportional_odds", "links": {"DRUG": "CP"}},
}
PARS = {
    "CL": 5.0,
    "V1": 50.0,
    # Simeoni: the tumour starts at the growth switch (L0 / L1 * W = 1 at W0 = 1.5 g),
    # shrinks under treatment, reaches a delayed nadir and regrows linearly
    "W0": 1.5,
    "L0": 0.02,
    "L1": 0.03,
    "PSI": 20.0,
    "K1": 0.1,
    "K2": 0.05,
    # QTc with a non-zero Emax term
    "QTCF0": 405.0,
    "QTC_SLOPE": 3.0,
    "QTC_EMAX": 12.0,
    "QTC_EC50": 0.7,
    # proportional odds
    "B1": -0.5,
    "B2": -1.6,
    "B3": -2.9,
    "B4": -4.4,
    "AE_SLOPE": 0.6,
}
DOSES = (0.0, 72.0, 144.0)
DOSE = 200.0
TIMES = np.arange(0.0, 481.0, 1.0)
TOL = 1e-5


def reference() -> dict[str, np.ndarray]:
    """Every output at TIMES from a DOP853 solve of the full system."""
    p = PARS

    def rhs(t: float, y: np.ndarray) -> list[float]:
        a, x1, x2, x3, x4 = y
        cp = a / p["V1"]
        w = x1 + x2 + x3 + x4
        growth = p["L0"] * x1 / (1.0 + (p["L0"] / p["L1"] * w) ** p["PSI"]) ** (1.0 / p["PSI"])
        kill = p["K2"] * cp * x1
        return [
            -p["CL"] / p["V1"] * a,
            growth - kill,
            kill - p["K1"] * x2,
            p["K1"] * (x2 - x3),
            p["K1"] * (x3 - x4),
        ]

    y = np.array([0.0, p["W0"], 0.0, 0.0, 0.0])
    rows = {0.0: y.copy()}
    bounds = [*DOSES, TIMES[-1]]
    for a, b in itertools.pairwise(bounds):
        y = y + np.array([DOSE, 0.0, 0.0, 0.0, 0.0])  # dose at a (outputs at a are pre-dose)
        te = TIMES[(a < TIMES) & (b >= TIMES)]
        sol = solve_ivp(rhs, (a, b), y, method="DOP853", rtol=1e-12, atol=1e-14, t_eval=te)
        assert sol.success
        rows.update({float(t): v for t, v in zip(sol.t, sol.y.T, strict=True)})
        y = sol.y[:, -1]
    arr = np.array([rows[float(t)] for t in TIMES])
    cp = arr[:, 0] / p["V1"]
    dqtc = p["QTC_SLOPE"] * cp + p["QTC_EMAX"] * cp / (p["QTC_EC50"] + cp)
    out = {
        "CP": cp,
        "TUMOUR": arr[:, 1:].sum(axis=1),
        "DQTCF": dqtc,
        "QTCF": p["QTCF0"] + dqtc,
    }
    for k in range(1, 5):
        out[f"P_GE{k}"] = expit(p[f"B{k}"] + p["AE_SLOPE"] * cp)
    return out


@pytest.fixture(scope="module")
def model() -> Model:
    return vtrial.build_model({"pk": "pk_1cmt", "components": COMPONENTS})


@pytest.fixture(scope="module")
def simulated(model: Model) -> pd.DataFrame:
    out = vtrial.simulate(
        model,
        pd.DataFrame({k: [v] for k, v in PARS.items()}),
        [{"route": "iv_bolus", "dose": DOSE, "start": t} for t in DOSES],
        TIMES,
        tolerances=vtrial.Tolerances(rtol=1e-10, atol=1e-13),
    )
    assert (out["solver_status"] == "ok").all()
    return out


def test_states_positive_only_where_they_start_above_zero(model: Model) -> None:
    # X1 starts at W0 > 0 (log scale); the damaged cells start at 0 (linear scale)
    assert [model.states[s].positive for s in ("X1", "X2", "X3", "X4")] == [
        True,
        False,
        False,
        False,
    ]


def test_outputs_against_dop853(
    simulated: pd.DataFrame, record_error: Callable[[str, float, float], None]
) -> None:
    ref = reference()
    assert set(ref) == set(simulated.columns) - {"patient_id", "time", "solver_status", "solver"}
    for name, want in ref.items():
        got = simulated[name].to_numpy()
        err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
        record_error(f"library safety/efficacy {name}", err, TOL)
        assert err <= TOL, (name, err)


def test_tumour_nadir_against_dop853(
    simulated: pd.DataFrame, record_error: Callable[[str, float, float], None]
) -> None:
    want = reference()["TUMOUR"]
    got = simulated["TUMOUR"].to_numpy()
    i_want = int(np.argmin(want))
    # the scenario has a real, delayed nadir: shrinkage, then regrowth above it
    assert 144.0 < TIMES[i_want] < TIMES[-1]
    assert want[i_want] < 0.8 * PARS["W0"]
    assert want[-1] > 1.5 * want[i_want]
    err = abs(float(got.min()) - float(want[i_want])) / float(want[i_want])
    record_error("library safety/efficacy TUMOUR nadir", err, TOL)
    assert err <= TOL
    assert int(np.argmin(got)) == i_want


def test_placebo_probabilities_and_baseline_qtc(model: Model) -> None:
    """Without drug P(grade >= k) = expit(Bk), QTcF = QTCF0 and the tumour grows."""
    out = vtrial.simulate(
        model, pd.DataFrame({k: [v] for k, v in PARS.items()}), None, [0.0, 100.0, 200.0]
    )
    for k in range(1, 5):
        np.testing.assert_allclose(out[f"P_GE{k}"], expit(PARS[f"B{k}"]), rtol=1e-12)
    np.testing.assert_allclose(out["QTCF"], PARS["QTCF0"], rtol=1e-12)
    np.testing.assert_allclose(out["DQTCF"], 0.0, atol=1e-12)
    assert np.all(np.diff(out["TUMOUR"].to_numpy()) > 0)
