"""Library PD, efficacy and time-to-event models against a tight DOP853 solve.

One composed model (one compiled kernel): 1-cmt IV PK -> effect compartment ->
sigmoid Emax, indirect response III on CP, Weibull hazard with an exposure effect.
Reference: the full system with the PK amount as an ODE, scipy DOP853 at rtol 1e-12.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.integrate import solve_ivp

import vtrial
from vtrial.engine.codegen import model_source
from vtrial.infra.yamlsafe import load_yaml
from vtrial.model.spec import ModelSpec, compose, library_path, spec_from_dict

PARS = {
    "CL": 5.0,
    "V1": 50.0,
    "KE0": 0.3,
    "E0": 10.0,
    "EMAX": 80.0,
    "EC50": 1.2,
    "HILL": 2.5,
    "R0": 50.0,
    "KOUT": 0.15,
    "SMAX": 2.0,
    "SC50": 0.8,
    "SCALE": 300.0,
    "SHAPE": 1.4,
    "BETA": 0.4,
}
DOSES = (0.0, 24.0)
DOSE = 150.0
TIMES = np.arange(0.0, 97.0, 1.0)


def reference() -> dict[str, np.ndarray]:
    p = PARS

    def rhs(t: float, y: np.ndarray) -> list[float]:
        a, ce, r, _ch = y
        cp = a / p["V1"]
        hazard = (
            p["SHAPE"]
            / p["SCALE"]
            * (max(t, 1e-9) / p["SCALE"]) ** (p["SHAPE"] - 1)
            * np.exp(p["BETA"] * cp)
        )
        stim = 1 + p["SMAX"] * cp / (p["SC50"] + cp)
        return [
            -p["CL"] / p["V1"] * a,
            p["KE0"] * (cp - ce),
            p["R0"] * p["KOUT"] * stim - p["KOUT"] * r,
            hazard,
        ]

    y = np.array([0.0, 0.0, p["R0"], 0.0])
    rows = {0.0: y.copy()}
    bounds = [*DOSES, TIMES[-1]]
    for a, b in itertools.pairwise(bounds):
        y = y + np.array([DOSE, 0.0, 0.0, 0.0])  # the dose at a (outputs at a are pre-dose)
        te = TIMES[(a < TIMES) & (b >= TIMES)]
        sol = solve_ivp(rhs, (a, b), y, method="DOP853", rtol=1e-12, atol=1e-14, t_eval=te)
        rows.update({float(t): v for t, v in zip(sol.t, sol.y.T, strict=True)})
        y = sol.y[:, -1]
    arr = np.array([rows[float(t)] for t in TIMES])
    cp = arr[:, 0] / p["V1"]
    ce = arr[:, 1]
    h = p["HILL"]
    return {
        "CP": cp,
        "CE": ce,
        "EFFECT": p["E0"] + p["EMAX"] * ce**h / (p["EC50"] ** h + ce**h),
        "RESPONSE": arr[:, 2],
        "SURV": np.exp(-arr[:, 3]),
    }


def test_composed_library_models_against_dop853(record_error: Callable[..., None]) -> None:
    model = vtrial.build_model(
        {
            "pk": "pk_1cmt",
            "components": {
                "biophase": {"model": "effect_cmt", "links": {"DRUG": "CP"}},
                "effect": {"model": "emax_sigmoid", "links": {"DRUG": "CE"}},
                "biomarker": {"model": "idr3", "links": {"DRUG": "CP"}},
                "event": {"model": "weibull_tte", "links": {"DRUG": "CP"}},
            },
        }
    )
    out = vtrial.simulate(
        model,
        pd.DataFrame({k: [v] for k, v in PARS.items()}),
        [{"route": "iv_bolus", "dose": DOSE, "start": t} for t in DOSES],
        TIMES,
        tolerances=vtrial.Tolerances(rtol=1e-10, atol=1e-13),
    )
    assert (out["solver_status"] == "ok").all()
    ref = reference()
    for name, want in ref.items():
        got = out[name].to_numpy()
        err = np.max(np.abs(got - want)) / np.max(np.abs(want))
        record_error(f"library {name} (effect_cmt, emax_sigmoid, idr3, weibull_tte)", err, 1e-7)
        assert err <= 1e-7, (name, err)


def renamed(name: str, suffix: str) -> ModelSpec:
    """A library model with every symbol but its input DRUG suffixed (so that
    alternatives sharing names, e.g. the four indirect-response models, compose)."""
    spec = vtrial.load_model(name)
    data = load_yaml((library_path() / f"{name}.yaml").read_text())
    names = {*spec.parameters, *spec.states, *spec.equations, *spec.derived, *spec.outputs}
    text = yaml.safe_dump(data)
    for n in sorted(names, key=len, reverse=True):
        text = re.sub(rf"\b{n}\b", f"{n}{suffix}", text)
    out = yaml.safe_load(text)
    out["name"] = f"{name}{suffix}"
    return spec_from_dict(out, source=f"{name}.yaml (renamed)")


def test_remaining_library_pd_models_against_dop853(
    record_error: Callable[..., None],
) -> None:
    """idr1, idr2, idr4 and direct Emax (renamed copies composed in one kernel)."""
    pk = vtrial.load_model("pk_1cmt")
    comps = {
        n: (renamed(n, f"_{n.upper()}"), {"DRUG": "CP"}) for n in ("idr1", "idr2", "idr4", "emax")
    }
    model = compose(pk, comps)
    p = {
        "CL": 5.0,
        "V1": 50.0,
        "R0": 50.0,
        "KOUT": 0.15,
        "IMAX": 0.9,
        "IC50": 0.8,
        "SMAX": 2.0,
        "SC50": 0.8,
        "E0": 10.0,
        "EMAX": 80.0,
        "EC50": 1.2,
    }
    params = {"CL": [p["CL"]], "V1": [p["V1"]]}
    for n in ("idr1", "idr2", "idr4", "emax"):
        for k in ("R0", "KOUT", "IMAX", "IC50", "SMAX", "SC50", "E0", "EMAX", "EC50"):
            key = f"{k}_{n.upper()}"
            if key in model.parameters:
                params[key] = [p[k]]
    out = vtrial.simulate(
        model,
        pd.DataFrame(params),
        [{"route": "iv_bolus", "dose": DOSE, "start": t} for t in DOSES],
        TIMES,
        tolerances=vtrial.Tolerances(rtol=1e-10, atol=1e-13),
    )
    assert (out["solver_status"] == "ok").all()

    def rhs(t: float, y: np.ndarray) -> list[float]:
        a, r1, r2, r4 = y
        c = a / p["V1"]
        inh = p["IMAX"] * c / (p["IC50"] + c)
        stim = p["SMAX"] * c / (p["SC50"] + c)
        kin = p["R0"] * p["KOUT"]
        return [
            -p["CL"] / p["V1"] * a,
            kin * (1 - inh) - p["KOUT"] * r1,
            kin - p["KOUT"] * (1 - inh) * r2,
            kin - p["KOUT"] * (1 + stim) * r4,
        ]

    y = np.array([0.0, p["R0"], p["R0"], p["R0"]])
    rows = {0.0: y.copy()}
    for a, b in itertools.pairwise([*DOSES, TIMES[-1]]):
        y = y + np.array([DOSE, 0.0, 0.0, 0.0])
        te = TIMES[(a < TIMES) & (b >= TIMES)]
        sol = solve_ivp(rhs, (a, b), y, method="DOP853", rtol=1e-12, atol=1e-14, t_eval=te)
        rows.update({float(t): v for t, v in zip(sol.t, sol.y.T, strict=True)})
        y = sol.y[:, -1]
    arr = np.array([rows[float(t)] for t in TIMES])
    cp = arr[:, 0] / p["V1"]
    ref = {
        "RESPONSE_IDR1": arr[:, 1],
        "RESPONSE_IDR2": arr[:, 2],
        "RESPONSE_IDR4": arr[:, 3],
        "EFFECT_EMAX": p["E0"] + p["EMAX"] * cp / (p["EC50"] + cp),
    }
    for name, want in ref.items():
        got = out[name].to_numpy()
        err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
        record_error(f"library {name.split('_')[1].lower()} {name.split('_')[0]}", err, 1e-7)
        assert err <= 1e-7, (name, err)
        # the drug moves the response by much more than the error (the test has power)
        assert np.max(np.abs(want - want[0])) > 1e-3 * np.max(np.abs(want))


@pytest.mark.parametrize("name", ["idr1", "idr2", "idr3", "idr4", "emax", "emax_sigmoid"])
def test_library_models_compose_and_generate(name: str) -> None:
    model = vtrial.build_model(
        {"pk": "pk_2cmt", "components": {"pd": {"model": name, "links": {"DRUG": "CP"}}}}
    )
    src = model_source(model)
    assert "DRUG" not in src.replace("EDRUG", "")
    spec = vtrial.load_model(name)
    assert spec.reference.strip()
    assert all(p.unit for p in spec.parameters.values())
