"""Verify vtrial's ODE integration of nonlinear PD states.

Friberg myelosuppression and Claret tumour growth inhibition, both driven by the
exact 2-compartment PK of an oral drug, against an independent reference:
``scipy.integrate.solve_ivp`` (DOP853, rtol 1e-12, atol 1e-14 on the PK amounts and
relative-only on the PD states, see ``REF_ATOL_PD``) of the *full*
system on the natural scale (PK amounts as ODEs too), restarted at every dose.
vtrial integrates the PD states on the log scale with Dormand-Prince 5(4) and
dense output; it runs here at rtol 1e-9 / atol 1e-12. Also checked: solution
verification of the default tolerances (vs 10x tighter), positivity of an extreme
patient, batch and thread invariance of the adaptive integration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

from vtrial import Tolerances, build_model, simulate
from vtrial.engine.host import run_kernel
from vtrial.model.spec import Model
from vtrial.protocol.dosing import event_table, regimen_phases

Record = Callable[[str, float, float], None]

#: reference workload: 100 mg orally every 24 h for 21 doses, hourly output to 1008 h
DOSE, TAU, N_DOSES = 100.0, 24.0, 21
REGIMEN = {"route": "oral", "dose": DOSE, "interval": TAU, "count": N_DOSES}
TIMES = np.arange(0.0, 1008.0 + 1.0, 1.0)
PK_TYPICAL = {"KA": 1.0, "CL": 5.0, "V1": 50.0, "Q2": 10.0, "V2": 100.0}
PD_TYPICAL = {
    "friberg": {"CIRC0": 5.0, "MTT": 100.0, "GAMMA": 0.17, "SLOPE": 0.5},
    "tgi_claret": {"TS0": 80.0, "KL": 0.000125, "KD0": 0.001, "LAMBDA": 0.00035},
}
OUTPUT = {"friberg": "ANC", "tgi_claret": "TUMOUR"}
N_PATIENTS = 4
TIGHT = Tolerances(rtol=1e-9, atol=1e-12)
REF_OPTS: dict[str, Any] = {"method": "DOP853", "rtol": 1e-12}
#: reference absolute tolerance: 1e-14 mg on the PK amounts; on the (strictly positive)
#: PD states a negligible one, i.e. pure relative control: with atol 1e-14 on them the
#: reference itself is off by 1.6 % for the extreme patient (ANC nadir ~1e-9 10^9/L,
#: PROL down to ~1e-89), where vtrial's log-scale states stay accurate
REF_ATOL_PK, REF_ATOL_PD = 1e-14, 1e-300
REF_TOL = 1e-5  # vs the DOP853 reference, relative (trajectory scaled by its max)
SV_TOL = 1e-3  # solution verification: default vs 10x tighter tolerances


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pd_models() -> dict[str, Model]:
    """pk_2cmt + friberg and pk_2cmt + tgi_claret, both linked DRUG: CP."""
    return {
        name: build_model(
            {"pk": "pk_2cmt", "components": {"pd": {"model": name, "links": {"DRUG": "CP"}}}}
        )
        for name in ("friberg", "tgi_claret")
    }


def population(pd_name: str, n: int = N_PATIENTS, seed: int = 7) -> pd.DataFrame:
    """Patient 1 typical, the others with 30 % log-normal variability on every parameter."""
    rng = np.random.default_rng(seed)
    typical = {**PK_TYPICAL, **PD_TYPICAL[pd_name]}
    eta = 0.3 * rng.standard_normal((n, len(typical)))
    eta[0] = 0.0
    cols = {k: v * np.exp(eta[:, j]) for j, (k, v) in enumerate(typical.items())}
    return pd.DataFrame({"patient_id": np.arange(1, n + 1), **cols})


# ---------------------------------------------------------------------------
# independent reference: full system on the natural scale
# ---------------------------------------------------------------------------
def reference(pd_name: str, p: Mapping[str, float], times: np.ndarray) -> dict[str, np.ndarray]:
    """CP and the PD output at ``times`` (pre-dose at dose times: PD states are continuous).

    State: depot, central, peripheral amounts (mg), then the PD states.
    """
    ka, cl, v1, q2, v2 = (p[k] for k in ("KA", "CL", "V1", "Q2", "V2"))
    k10, k12, k21 = cl / v1, q2 / v1, q2 / v2

    def pk_rhs(y: np.ndarray) -> list[float]:
        return [
            -ka * y[0],
            ka * y[0] - (k10 + k12) * y[1] + k21 * y[2],
            k12 * y[1] - k21 * y[2],
        ]

    if pd_name == "friberg":
        circ0, gamma, slope = p["CIRC0"], p["GAMMA"], p["SLOPE"]
        ktr = 4.0 / p["MTT"]
        y0 = [0.0, 0.0, 0.0, *([circ0] * 5)]

        def rhs(_t: float, y: np.ndarray) -> list[float]:
            prol, t1, t2, t3, circ = y[3:]
            edrug = slope * y[1] / v1
            return [
                *pk_rhs(y),
                ktr * prol * (1.0 - edrug) * (circ0 / circ) ** gamma - ktr * prol,
                ktr * (prol - t1),
                ktr * (t1 - t2),
                ktr * (t2 - t3),
                ktr * (t3 - circ),
            ]

    else:
        kl, kd0, lam = p["KL"], p["KD0"], p["LAMBDA"]
        y0 = [0.0, 0.0, 0.0, p["TS0"]]

        def rhs(t: float, y: np.ndarray) -> list[float]:
            cp = y[1] / v1
            return [*pk_rhs(y), kl * y[3] - kd0 * np.exp(-lam * t) * cp * y[3]]

    atol = np.array([REF_ATOL_PK] * 3 + [REF_ATOL_PD] * (len(y0) - 3))
    dose_times = TAU * np.arange(N_DOSES)
    edges = np.unique(np.concatenate([dose_times, [times[0], times[-1]]]))
    y = np.array(y0, dtype=np.float64)
    out = np.full((times.size, y.size), np.nan)
    for a, b in pairwise(edges):
        if a in dose_times:
            y[0] += DOSE
        inside = (times >= a) & (times <= b)
        sol = solve_ivp(
            rhs, (a, b), y, t_eval=np.union1d(times[inside], [b]), atol=atol, **REF_OPTS
        )
        assert sol.success, sol.message
        idx = np.searchsorted(sol.t, times[inside])
        # a grid point at a dose time keeps its pre-dose value (from the previous segment)
        keep = np.isnan(out[inside, 0])
        rows = np.flatnonzero(inside)[keep]
        out[rows] = sol.y[:, idx[keep]].T
        y = sol.y[:, -1].copy()
    assert not np.isnan(out).any()
    return {"CP": out[:, 1] / v1, OUTPUT[pd_name]: out[:, -1]}


def scaled_err(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| / max |ref|."""
    assert np.all(np.isfinite(got))
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


def rel(a: float, b: float) -> float:
    return abs(a / b - 1.0)


# ---------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("pd_name", ["friberg", "tgi_claret"])
def test_against_dop853_reference(
    pd_name: str, pd_models: dict[str, Model], record_error: Record
) -> None:
    pop = population(pd_name)
    out = simulate(pd_models[pd_name], pop, REGIMEN, TIMES, tolerances=TIGHT)
    assert (out["solver_status"] == "ok").all()
    name = OUTPUT[pd_name]
    got = out[name].to_numpy().reshape(N_PATIENTS, TIMES.size)
    cp = out["CP"].to_numpy().reshape(N_PATIENTS, TIMES.size)
    for i in range(N_PATIENTS):
        ref = reference(pd_name, pop.iloc[i].to_dict(), TIMES)
        err_traj = scaled_err(got[i], ref[name])
        err_nadir = rel(got[i].min(), ref[name].min())
        err_cp = scaled_err(cp[i], ref["CP"])
        record_error(f"{name} trajectory vs DOP853 (rtol 1e-9)", err_traj, REF_TOL)
        record_error(f"{name} nadir vs DOP853 (rtol 1e-9)", err_nadir, REF_TOL)
        record_error(f"CP in the {pd_name} model vs DOP853", err_cp, REF_TOL)
        assert err_traj <= REF_TOL, i
        assert err_nadir <= REF_TOL, i
        assert err_cp <= REF_TOL, i
        # the workload must exercise the model: a real nadir / shrinkage
        assert got[i].min() < 0.95 * got[i, 0]


@pytest.mark.parametrize("pd_name", ["friberg", "tgi_claret"])
def test_default_tolerances_solution_verification(
    pd_name: str, pd_models: dict[str, Model], record_error: Record
) -> None:
    """Default rtol 1e-6/atol 1e-9 vs 10x tighter: nadir, final value, trajectory."""
    pop = population(pd_name)
    default = Tolerances()
    tighter = Tolerances(rtol=default.rtol / 10.0, atol=default.atol / 10.0)
    name = OUTPUT[pd_name]
    runs = []
    for tol in (default, tighter):
        out = simulate(pd_models[pd_name], pop, REGIMEN, TIMES, tolerances=tol)
        assert (out["solver_status"] == "ok").all()
        runs.append(out[name].to_numpy().reshape(N_PATIENTS, TIMES.size))
    a, b = runs
    for i in range(N_PATIENTS):
        errs = {
            "nadir": rel(a[i].min(), b[i].min()),
            "final value": rel(a[i, -1], b[i, -1]),
            "trajectory": scaled_err(a[i], b[i]),
        }
        for what, e in errs.items():
            record_error(f"{name} {what}: default vs 10x tighter tolerances", e, SV_TOL)
            assert e < SV_TOL, (i, what)
    # and the default tolerances against the reference (typical patient)
    ref = reference(pd_name, pop.iloc[0].to_dict(), TIMES)[name]
    err = scaled_err(a[0], ref)
    record_error(f"{name} trajectory at default tolerances vs DOP853", err, SV_TOL)
    assert err < SV_TOL


@pytest.mark.parametrize("slope", [5.0, 50.0])
def test_extreme_patient_stays_positive(
    slope: float, pd_models: dict[str, Model], record_error: Record
) -> None:
    pop = pd.DataFrame(
        {**{k: [v] for k, v in PK_TYPICAL.items()}, "SLOPE": [slope], "CIRC0": [5.0]}
    )
    for tol in (Tolerances(), TIGHT):
        out = simulate(pd_models["friberg"], pop, REGIMEN, TIMES, tolerances=tol)
        assert (out["solver_status"] == "ok").all()
        anc = out["ANC"].to_numpy()
        assert np.all(np.isfinite(anc))
        assert np.all(anc > 0.0)
        assert anc.min() < 0.5  # deep neutropenia, yet positive
    if slope == 5.0:
        ref = reference("friberg", {**PK_TYPICAL, **PD_TYPICAL["friberg"], "SLOPE": slope}, TIMES)
        err = scaled_err(anc, ref["ANC"])
        record_error("ANC, extreme patient (SLOPE 5) vs DOP853 (rtol 1e-9)", err, REF_TOL)
        assert err <= REF_TOL
        err_nadir = rel(anc.min(), ref["ANC"].min())
        record_error("ANC nadir, extreme patient (SLOPE 5), relative", err_nadir, REF_TOL)
        assert err_nadir <= REF_TOL


def test_ode_patients_independent_of_batch_and_threads(pd_models: dict[str, Model]) -> None:
    """Adaptive steps are per patient: alone, in a batch, 1 or 2 threads -> same bits."""
    model = pd_models["friberg"]
    pop = population("friberg", n=12, seed=11)
    batch = simulate(model, pop, REGIMEN, TIMES)
    anc = batch["ANC"].to_numpy().reshape(len(pop), -1)
    for i in (0, 5, 11):
        alone = simulate(model, pop.iloc[[i]], REGIMEN, TIMES)
        assert np.array_equal(alone["ANC"].to_numpy(), anc[i]), i
    n = len(pop)
    kw: dict[str, Any] = {
        "n": n,
        "events": event_table([regimen_phases(REGIMEN)]),
        "arm": np.zeros(n, dtype=np.int64),
        "dose_scale": np.ones((n, 3)),
        "grid": TIMES,
        "store_times": TIMES,
        "store_outputs": ("ANC", "CP"),
        "store_dtype": np.float64,
    }
    params = {k: pop[k].to_numpy() for k in model.parameters if k in pop}
    one = run_kernel(model, params, threads=1, **kw)
    two = run_kernel(model, params, threads=2, **kw)
    assert np.all(one.status == 0)
    assert np.array_equal(one.store[:, :, 0], anc)
    for name in ("status", "nsteps", "omin", "omax", "tmin", "tmax", "store", "pk"):
        assert np.array_equal(getattr(one, name), getattr(two, name), equal_nan=True), name


def test_log_scale_accuracy_independent_of_state_unit(
    pd_models: dict[str, Model], record_error: Record
) -> None:
    """The same tumour in mm (TS0 80) and in nm (TS0 8e7): TS/TS0 obeys the same ODE, so
    the default tolerances must give the same relative accuracy in both units."""
    p = {**PK_TYPICAL, **PD_TYPICAL["tgi_claret"]}
    ref = reference("tgi_claret", p, TIMES)["TUMOUR"] / p["TS0"]
    rel_ts = {}
    for unit, factor in (("mm", 1.0), ("nm", 1e6)):
        q = {**p, "TS0": p["TS0"] * factor}
        out = simulate(
            pd_models["tgi_claret"], pd.DataFrame({k: [v] for k, v in q.items()}), REGIMEN, TIMES
        )
        assert (out["solver_status"] == "ok").all()
        rel_ts[unit] = out["TUMOUR"].to_numpy() / q["TS0"]
        err = scaled_err(rel_ts[unit], ref)
        record_error(f"TUMOUR at default tolerances vs DOP853, TS in {unit}", err, SV_TOL)
    assert scaled_err(rel_ts["nm"], ref) < SV_TOL
    assert scaled_err(rel_ts["nm"], rel_ts["mm"]) < 1e-4
