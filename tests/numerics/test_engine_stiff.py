"""Stiff models: the Rosenbrock 2(3) method, automatic stiffness switching, retries.

Reference: scipy ``solve_ivp(method="Radau", rtol=1e-12, atol=1e-14)`` of the full
system (PK amount as an ODE), integrated piecewise between infusion boundaries.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

import vtrial
from vtrial.model.spec import Model

FAST_EFFECT = """
name: fast_effect
title: Fast effect-site equilibration (stiff test model)
inputs: {DRUG: {unit: mg/L}}
parameters:
  KE0: {value: 2000.0, unit: 1/h, description: very fast equilibration (stiff)}
  KS: {value: 0.01, unit: 1/h, description: slow turnover}
states:
  CE: {init: 0.0, unit: mg/L}
  SLOW: {init: 1.0, positive: true}
odes:
  CE: "KE0 * (DRUG - CE)"
  SLOW: "KS * (1 + CE) - KS * SLOW"
outputs:
  EFF: {expr: CE}
  S: {expr: SLOW}
"""
CL, V1 = 5.0, 50.0
REGIMEN = {"route": "iv_infusion", "dose": 100.0, "duration": 10.0, "interval": 24.0, "count": 5}
TIMES = np.arange(0.0, 169.0, 1.0)


@pytest.fixture(scope="module")
def stiff_model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    path = Path(tmp_path_factory.mktemp("stiff")) / "fast_effect.yaml"
    path.write_text(FAST_EFFECT)
    return vtrial.build_model(
        {"pk": "pk_1cmt", "components": {"fx": {"model": str(path), "links": {"DRUG": "CP"}}}}
    )


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """EFF and S at TIMES (outputs at infusion boundaries are continuous here)."""

    def rhs(t: float, y: np.ndarray, rate: float) -> list[float]:
        a, ce, s = y
        return [rate - CL / V1 * a, 2000.0 * (a / V1 - ce), 0.01 * (1 + ce) - 0.01 * s]

    bounds = sorted({0.0, 168.0, *(24.0 * i for i in range(5)), *(24.0 * i + 10 for i in range(5))})
    y = np.array([0.0, 0.0, 1.0])
    out = {}
    for a, b in itertools.pairwise(bounds):
        rate = 10.0 if any(24 * i <= a < 24 * i + 10 for i in range(5)) else 0.0
        te = TIMES[(a <= TIMES) & (b >= TIMES)]
        sol = solve_ivp(
            rhs, (a, b), y, method="Radau", rtol=1e-12, atol=1e-14, t_eval=te, args=(rate,)
        )
        y = sol.y[:, -1]
        out.update({float(t): v for t, v in zip(sol.t, sol.y.T, strict=True)})
    return np.array([[out[float(t)][1], out[float(t)][2]] for t in TIMES])


@pytest.mark.parametrize(
    ("method", "rtol", "used", "tol"),
    [
        # at the default tolerance Dormand-Prince steps hit its stability boundary,
        # detects stiffness and hands the patient to Rosenbrock
        ("auto", 1e-6, "dopri5+rosenbrock23", 1e-4),
        ("rosenbrock23", 1e-8, "rosenbrock23", 1e-5),
    ],
)
def test_stiff_model_against_radau(
    stiff_model: Model, reference: np.ndarray, method: str, rtol: float, used: str, tol: float
) -> None:
    out = vtrial.simulate(
        stiff_model,
        pd.DataFrame({"CL": [CL], "V1": [V1]}),
        REGIMEN,
        TIMES,
        tolerances=vtrial.Tolerances(rtol=rtol, atol=rtol * 1e-3, method=method),
    )
    assert (out["solver_status"] == "ok").all()
    assert (out["solver"] == used).all()
    got = out[["EFF", "S"]].to_numpy()
    scale = np.abs(reference).max(axis=0)
    err = np.abs(got - reference) / scale
    assert err.max() <= tol, err.max()


def test_rosenbrock_on_friberg_matches_dopri5() -> None:
    """The fallback method on a non-stiff model agrees with Dormand-Prince (0.1 %)."""
    model = vtrial.build_model(
        {"pk": "pk_2cmt", "components": {"anc": {"model": "friberg", "links": {"DRUG": "CP"}}}}
    )
    pars = pd.DataFrame({"CL": [5.0, 3.0], "SLOPE": [0.5, 1.5]})
    regimen = {"route": "oral", "dose": 100.0, "interval": 24.0, "count": 21}
    times = np.arange(0.0, 1009.0, 4.0)
    a = vtrial.simulate(model, pars, regimen, times, tolerances=vtrial.Tolerances(rtol=1e-7))
    b = vtrial.simulate(
        model, pars, regimen, times, tolerances=vtrial.Tolerances(rtol=1e-7, method="rosenbrock23")
    )
    assert (a["solver"] == "dopri5").all()
    assert (b["solver"] == "rosenbrock23").all()
    rel = np.abs(b["ANC"] - a["ANC"]) / a.groupby("patient_id")["ANC"].transform("max")
    assert rel.max() <= 1e-3


def test_model_file_can_ask_for_the_stiff_method(tmp_path: Path, reference: np.ndarray) -> None:
    path = tmp_path / "fast_effect_stiff.yaml"
    path.write_text(FAST_EFFECT.replace("title:", "solver: stiff\ntitle:"))
    model = vtrial.build_model(
        {"pk": "pk_1cmt", "components": {"fx": {"model": str(path), "links": {"DRUG": "CP"}}}}
    )
    assert model.solver == "stiff"
    out = vtrial.simulate(model, pd.DataFrame({"CL": [CL], "V1": [V1]}), REGIMEN, TIMES)
    assert (out["solver"] == "rosenbrock23").all()
    got = out[["EFF", "S"]].to_numpy()
    assert (np.abs(got - reference) / np.abs(reference).max(axis=0)).max() <= 1e-4
