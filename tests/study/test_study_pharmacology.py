"""Study-level pharmacology: IOV, steady-state starts, ODE dosing, covariate models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import small_study_data
from tests.numerics.closed_forms import conc_steady_state_bolus
from vtrial.errors import ConfigError
from vtrial.population.sampling import occasion_parameters, sample_population
from vtrial.run.chunk import run_population, simulate_patients
from vtrial.study.config import load_study, study_from_dict

WriteStudy = Callable[[dict[str, Any], str], Path]


def iov_study(**iov: Any) -> dict[str, Any]:
    d = small_study_data()
    d["population"]["size"] = 400
    d["study"]["replicates"] = 1
    for arm in d["arms"]:
        if isinstance(arm["regimen"], dict):
            arm["regimen"]["cycles"]["count"] = 3
    d["simulation"]["end"] = 1512
    d["endpoints"]["tumour_change"]["at"] = 1512
    d["model"]["iov"] = {"omega": {"CL": 0.04, "KA": 0.09}, **iov}
    return d


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        study_from_dict(data, source="study.yaml")
    return [f"{p.where}: {p.message}" for p in info.value.problems]


def test_occasions_follow_the_cycles_of_each_arm() -> None:
    study = study_from_dict(iov_study(), source="study.yaml")
    assert study.arm_occasions() == [[], [504.0, 1008.0], [504.0, 1008.0]]
    ev = study.events()
    assert ev.n_occ == 3
    explicit = study_from_dict(iov_study(occasions=[0, 300, 900]), source="study.yaml")
    assert explicit.arm_occasions() == [[300.0, 900.0]] * 3


def test_kappas_have_the_declared_variance_and_are_keyed() -> None:
    study = study_from_dict(iov_study(), source="study.yaml")
    pop = sample_population(study)
    cols = [c for c in pop.columns if c.startswith("kappa_")]
    assert cols == [f"kappa_{p}_{k}" for p in ("CL", "KA") for k in range(3)]
    n = len(pop)
    for p, omega in (("CL", 0.04), ("KA", 0.09)):
        v = pop[[f"kappa_{p}_{k}" for k in range(3)]].to_numpy().ravel()
        # sample variance of 3n normals: relative SE sqrt(2 / (3n)) ~ 4 %; allow 4 SE
        assert abs(v.var() / omega - 1.0) < 4 * np.sqrt(2 / v.size)
        # occasions are independent of each other
        r = np.corrcoef(pop[f"kappa_{p}_0"], pop[f"kappa_{p}_1"])[0, 1]
        assert abs(r) < 4 / np.sqrt(n)
    per_occ = occasion_parameters(study, pop)
    assert per_occ["CL"].shape == (n, 3)
    np.testing.assert_allclose(
        per_occ["CL"][:, 1], pop["CL"] * np.exp(pop["kappa_CL_1"]), rtol=1e-15
    )
    # the same draws whatever the population size (keyed per patient)
    bigger = iov_study()
    bigger["population"]["size"] = 500
    pop2 = sample_population(study_from_dict(bigger, source="study.yaml"))
    np.testing.assert_array_equal(pop2["kappa_KA_2"].to_numpy()[:n], pop["kappa_KA_2"])


def test_iov_changes_exposure_by_cycle_only_where_declared() -> None:
    study = study_from_dict(iov_study(), source="study.yaml")
    pop = sample_population(study).iloc[:60].reset_index(drop=True)
    res = run_population(study, pop, threads=1)
    assert (res.status == 0).all()
    # the same patients without IOV: identical in cycle 1 (occasion 0 has its own
    # kappa, so compare with IOV switched off and the occasion-0 effect applied)
    flat = iov_study()
    del flat["model"]["iov"]
    flat_study = study_from_dict(flat, source="study.yaml")
    pop0 = pop.copy()
    pop0["CL"] = pop["CL"] * np.exp(pop["kappa_CL_0"])
    pop0["KA"] = pop["KA"] * np.exp(pop["kappa_KA_0"])
    res0 = run_population(flat_study, pop0, threads=1)
    t = study.store_times()
    first = t < 504.0
    dosed = pop["arm"].to_numpy() != "placebo"
    np.testing.assert_allclose(res.store[:, first, 0], res0.store[:, first, 0], rtol=1e-6)
    later = t > 520.0
    diff = np.abs(res.store[dosed][:, later, 0] - res0.store[dosed][:, later, 0])
    assert diff.max() > 1e-3


def test_bad_iov_and_steady_state_are_reported() -> None:
    d = iov_study(occasions=[0, 900, 300, 5000])
    d["model"]["iov"]["omega"]["CLX"] = 0.1
    d["arms"][1]["regimen"]["steady_state"] = True
    msgs = problems(d)
    assert any(m.startswith("model.iov.omega.CLX: not a model parameter") for m in msgs)
    assert any("model.iov.occasions: start times must increase" in m for m in msgs)
    assert any("model.iov.occasions: start times must be in [0, simulation.end" in m for m in msgs)
    assert any(m.startswith("arms[1].regimen.steady_state: not with cycles") for m in msgs), msgs


def test_ode_pk_routes_and_steady_state_checked(write_study: WriteStudy) -> None:
    d = small_study_data()
    d["model"]["pk"] = "tmdd_qss"
    d["model"]["parameters"] = {}
    d["model"]["iiv"] = {"omega": {"CL": 0.09}}
    d["model"]["components"] = {}
    d["adverse_events"] = {}
    d["endpoints"] = {}
    d["outputs"]["timecourse"]["outputs"] = ["CP", "RTOT"]
    d["arms"][1]["regimen"] = {"route": "iv_infusion", "dose": 100, "duration": 2}
    d["arms"][2]["regimen"] = {"route": "iv_bolus", "dose": 100, "steady_state": True}
    msgs = problems(d)
    assert any(
        m.startswith("arms[2].regimen.steady_state: a steady-state start needs a linear PK macro")
        for m in msgs
    ), msgs
    d["arms"][2]["regimen"] = {"route": "oral", "dose": 100}
    study = load_study(write_study(d, "tmdd.yaml"))
    assert study.model.dosing == {"oral": "DEPOT", "iv": "ATOT"}
    pop = sample_population(study).iloc[:40].reset_index(drop=True)
    patients, _, _ = simulate_patients(study, pop, threads=1)
    assert (patients["solver_status"] == "ok").all()
    dosed = patients["arm"] != "placebo"
    # exposure of the ODE output CP: AUC integrated, Cmax refined on the dense output
    assert (patients.loc[dosed, "auc"] > 0).all()
    assert (patients.loc[dosed, "cmax"] > 0).all()
    assert (patients.loc[~dosed, "auc"] == 0).all()


def test_covariate_model_forms() -> None:
    """Power (allometric), exponential, linear and categorical covariate models."""
    d = small_study_data()
    d["study"]["replicates"] = 1
    d["model"]["iiv"] = {"omega": {"CL": 0.09}}
    d["model"]["parameters"].update(
        {
            "CL": {"value": 5.0, "covariates": "(weight / 70) ** 0.75"},
            "V1": {"value": 50.0, "covariates": "exp(0.01 * (age - 60))"},
            "Q2": {"value": 10.0, "covariates": "1 + 0.004 * (crcl - 100)"},
            "V2": {"value": 100.0, "covariates": "0.8 if sex == 'F' else 1.0"},
        }
    )
    study = study_from_dict(d, source="study.yaml")
    pop = sample_population(study)
    w, age, crcl = (pop[c].to_numpy() for c in ("weight", "age", "crcl"))
    female = pop["sex"].to_numpy() == "F"
    np.testing.assert_allclose(
        pop["CL"], 5.0 * (w / 70) ** 0.75 * np.exp(pop["eta_CL"]), rtol=1e-14
    )
    np.testing.assert_allclose(pop["V1"], 50.0 * np.exp(0.01 * (age - 60)), rtol=1e-14)
    np.testing.assert_allclose(pop["Q2"], 10.0 * (1 + 0.004 * (crcl - 100)), rtol=1e-14)
    np.testing.assert_allclose(pop["V2"], np.where(female, 80.0, 100.0), rtol=1e-14)
    assert female.any()
    assert (~female).any()


def test_steady_state_start_from_a_study() -> None:
    """A study arm at steady state: its trough equals the geometric-series closed form."""
    d = small_study_data()
    d["study"]["replicates"] = 1
    d["model"]["iiv"] = {"omega": {}}
    d["model"]["components"] = {}
    d["adverse_events"] = {}
    d["endpoints"] = {}
    d["outputs"]["timecourse"]["outputs"] = ["CP"]
    d["model"]["parameters"] = {"CL": {"value": 5.0}, "V1": {"value": 50.0}}
    d["arms"][1]["regimen"] = {
        "route": "iv_bolus",
        "dose": 100,
        "interval": 24,
        "count": 3,
        "steady_state": True,
    }
    d["simulation"]["end"] = 72
    study = study_from_dict(d, source="study.yaml")
    pop = sample_population(study).iloc[:30].reset_index(drop=True)
    patients, timecourse, _ = simulate_patients(study, pop, threads=1)
    ss = patients[patients["arm"] == "100mg_qd"]
    assert len(ss) > 0
    trough = float(conc_steady_state_bolus(24.0, 100.0, 24.0, cl=5.0, v1=50.0, q2=10.0, v2=100.0))
    np.testing.assert_allclose(ss["ctrough"], trough, rtol=1e-9)
    tc = timecourse[(timecourse["arm"] == "100mg_qd") & (timecourse["time"] == 0.0)]
    np.testing.assert_allclose(tc["CP"], trough, rtol=1e-6)  # float32 storage


def test_transit_absorption_switched_on_in_a_study() -> None:
    """The default study (Friberg has its own MTT/KTR/TRANSITk) with transit absorption."""
    d = small_study_data()
    d["model"]["pk"] = {"model": "pk_2cmt", "absorption": "transit", "transit_compartments": 2}
    d["model"]["parameters"]["MTT_ABS"] = {"value": 2.5, "unit": "h"}
    study = study_from_dict(d, source="study.yaml")
    model = study.model
    assert model.pk_compartments is None
    assert model.dosing == {"oral": "ABS0", "iv": "CENT"}
    assert [s for s in model.states if s.startswith(("ABS", "DEPOT", "CENT", "PERI"))] == [
        "ABS0",
        "ABS1",
        "ABS2",
        "DEPOT",
        "CENT",
        "PERI2",
    ]
    assert model.parameters["MTT_ABS"].value == 2.5
    assert model.ode_exposure
    # absorption options on a model without a PK macro are refused, naming the key
    d["model"]["pk"] = {"model": "pk_mm_1cmt", "absorption": "transit"}
    msgs = problems(d)
    assert any(m.startswith("model.pk:") and "need a model with a PK macro" in m for m in msgs)


def test_infusion_rate_is_an_alternative_to_duration() -> None:
    from vtrial.protocol.dosing import event_table, phase_problems, regimen_phases

    by_rate = {"route": "iv_infusion", "dose": 300, "rate": 200, "interval": 24, "count": 2}
    by_duration = {"route": "iv_infusion", "dose": 300, "duration": 1.5, "interval": 24, "count": 2}
    a = event_table([regimen_phases(by_rate)])
    b = event_table([regimen_phases(by_duration)])
    for field in ("time", "amount", "kind", "unit", "n"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    both = {**by_rate, "duration": 1.5}
    assert phase_problems(both, "arms[1].regimen") == [
        "arms[1].regimen.rate: give an infusion's duration or its rate, not both"
    ]
    oral = {"route": "oral", "dose": 10, "rate": 5}
    assert phase_problems(oral, "arms[0].regimen") == [
        "arms[0].regimen.rate: only an iv_infusion has a rate (route is oral)"
    ]
