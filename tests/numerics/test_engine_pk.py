"""Verify vtrial's exact (modal) linear PK against independent closed forms.

The reference is :mod:`closed_forms` (textbook sums of exponentials, superposition,
geometric-series steady state), itself checked against DOP853 and quadrature in
``test_closed_forms.py``. Conventions checked explicitly here:

* an output at a dose time is taken *before* that dose (left limit), whereas the
  closed forms are right-continuous at a bolus: comparisons use non-dose times or
  drop the boluses given at exactly the output time;
* ``run_kernel``'s ``pk`` metrics are exact: ``cmax``/``tmax`` (refined between grid
  points), ``auc`` over ``[grid[0], grid[-1]]``, ``ctrough`` just before the last dose.

Errors are relative, pointwise, with the reference floored at 1e-3 of its maximum
(:func:`max_rel_err`), so near-zero concentrations are scaled by the peak.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq, minimize_scalar

from vtrial import simulate
from vtrial.engine.host import EIGEN_GAP, KernelResult, run_kernel
from vtrial.model.spec import Model
from vtrial.protocol.dosing import event_table, regimen_phases

from .closed_forms import (
    auc_inf,
    conc_bolus,
    conc_events,
    conc_infusion,
    conc_oral,
    conc_steady_state_bolus,
    conc_steady_state_infusion,
    conc_steady_state_oral,
    macro_constants,
)

Record = Callable[[str, float, float], None]

#: disposition parameters per number of compartments (terminal half-life <= 26 h, so
#: 60 daily doses reach steady state to < 1e-16)
DISPOSITION: dict[int, dict[str, float]] = {
    1: {"CL": 5.0, "V1": 50.0},
    2: {"CL": 5.0, "V1": 50.0, "Q2": 10.0, "V2": 100.0},
    3: {"CL": 5.0, "V1": 20.0, "Q2": 10.0, "V2": 50.0, "Q3": 2.0, "V3": 40.0},
}
NCMT = (1, 2, 3)
KA = 1.2
#: oral absorption with lag and incomplete bioavailability
ORAL = {"KA": KA, "F": 0.7, "TLAG": 0.75}
ROUTES = ("iv_bolus", "iv_infusion", "oral")
TOL = 1e-6  # closed-form comparisons (max relative error)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def max_rel_err(got: Any, ref: Any, floor: float = 1e-3) -> float:
    """max |got - ref| / max(|ref|, floor * max|ref|) over all points."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape
    assert np.all(np.isfinite(got))
    scale = float(np.max(np.abs(ref)))
    assert scale > 0.0
    return float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), floor * scale)))


def cf_disp(ncmt: int) -> dict[str, float]:
    """Closed-form keyword arguments (cl, v1, q2, ...) of ``DISPOSITION[ncmt]``."""
    return {k.lower(): v for k, v in DISPOSITION[ncmt].items()}


def cf_oral(p: Mapping[str, float]) -> dict[str, float]:
    """Closed-form oral keyword arguments (ka, f, tlag) of engine parameters."""
    return {"ka": p["KA"], "f": p.get("F", 1.0), "tlag": p.get("TLAG", 0.0)}


def simulate_cp(
    model: Model,
    params: Mapping[str, Any],
    regimen: Any,
    times: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """CP of every patient (rows) at ``times`` (columns) through :func:`vtrial.simulate`."""
    df = pd.DataFrame(
        {k: np.atleast_1d(np.asarray(v, dtype=np.float64)) for k, v in params.items()}
    )
    out = simulate(model, df, regimen, np.asarray(times, dtype=np.float64))
    assert (out["solver_status"] == "ok").all()
    assert np.array_equal(out["time"].to_numpy()[: len(times)], np.asarray(times))
    return out["CP"].to_numpy().reshape(len(df), len(times))


def kernel_one(
    model: Model,
    params: Mapping[str, float],
    regimen: Any,
    grid: np.ndarray,
    probe_times: Sequence[float] = (),
    store_times: np.ndarray | None = None,
) -> KernelResult:
    """One patient through :func:`vtrial.engine.host.run_kernel` (float64 store)."""
    res = run_kernel(
        model,
        {k: np.array([v], dtype=np.float64) for k, v in params.items()},
        n=1,
        events=event_table([regimen_phases(regimen)]),
        arm=np.zeros(1, dtype=np.int64),
        dose_scale=np.ones((1, 3)),
        grid=grid,
        store_times=store_times,
        store_outputs=("CP",) if store_times is not None else (),
        probe_times=probe_times,
        store_dtype=np.float64,
    )
    assert res.status[0] == 0
    return res


def infusion(dose: float, duration: float, **kw: Any) -> dict[str, Any]:
    return {"route": "iv_infusion", "dose": dose, "duration": duration, **kw}


# ---------------------------------------------------------------------------
# single doses
# ---------------------------------------------------------------------------
#: output times avoiding the dose at 0 (the pre-dose convention is tested separately)
T_SINGLE = np.concatenate([[0.01, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5], np.arange(2.0, 168.5, 0.5)])


@pytest.mark.parametrize("ncmt", NCMT)
def test_iv_bolus_single_dose(ncmt: int, pk_models: dict[int, Model], record_error: Record) -> None:
    got = simulate_cp(
        pk_models[ncmt], DISPOSITION[ncmt], {"route": "iv_bolus", "dose": 100.0}, T_SINGLE
    )
    err = max_rel_err(got[0], conc_bolus(T_SINGLE, 100.0, **cf_disp(ncmt)))
    record_error(f"iv bolus, single ({ncmt} cmt)", err, TOL)
    assert err <= TOL


@pytest.mark.parametrize("ncmt", NCMT)
def test_infusion_single_dose(ncmt: int, pk_models: dict[int, Model], record_error: Record) -> None:
    duration = 6.0
    times = np.union1d(T_SINGLE, [2.0, 5.999, 6.0, 6.001])
    got = simulate_cp(pk_models[ncmt], DISPOSITION[ncmt], infusion(100.0, duration), times)[0]
    ref = conc_infusion(times, 100.0, duration, **cf_disp(ncmt))
    during, after = times <= duration, times > duration
    err_during = max_rel_err(got[during], ref[during])
    err_after = max_rel_err(got[after], ref[after])
    record_error(f"zero-order infusion, during ({ncmt} cmt)", err_during, TOL)
    record_error(f"zero-order infusion, after ({ncmt} cmt)", err_after, TOL)
    assert err_during <= TOL
    assert err_after <= TOL


@pytest.mark.parametrize("ncmt", NCMT)
def test_oral_single_dose(ncmt: int, pk_models: dict[int, Model], record_error: Record) -> None:
    p = {**DISPOSITION[ncmt], "KA": KA}
    got = simulate_cp(pk_models[ncmt], p, {"route": "oral", "dose": 100.0}, T_SINGLE)[0]
    err = max_rel_err(got, conc_oral(T_SINGLE, 100.0, **cf_oral(p), **cf_disp(ncmt)))
    record_error(f"oral first-order, single ({ncmt} cmt)", err, TOL)
    assert err <= TOL


@pytest.mark.parametrize("ncmt", NCMT)
def test_oral_lag_and_bioavailability(
    ncmt: int, pk_models: dict[int, Model], record_error: Record
) -> None:
    p = {**DISPOSITION[ncmt], **ORAL}
    times = np.union1d(T_SINGLE, [0.5, 0.7499, 0.75, 0.7501, 0.8])
    got = simulate_cp(pk_models[ncmt], p, {"route": "oral", "dose": 100.0}, times)[0]
    ref = conc_oral(times, 100.0, **cf_oral(p), **cf_disp(ncmt))
    # nothing is absorbed before (and at) the lag time
    assert np.all(got[times <= ORAL["TLAG"]] == 0.0)
    assert np.all(got[times > ORAL["TLAG"]] > 0.0)
    err = max_rel_err(got, ref)
    record_error(f"oral with lag + F ({ncmt} cmt)", err, TOL)
    assert err <= TOL
    # bioavailability scales the whole profile: F=1 gives got / 0.7
    full = simulate_cp(pk_models[ncmt], {**p, "F": 1.0}, {"route": "oral", "dose": 100.0}, times)
    np.testing.assert_allclose(got, 0.7 * full[0], rtol=1e-9, atol=0.0)


# ---------------------------------------------------------------------------
# multiple doses, steady state, dose units
# ---------------------------------------------------------------------------
def irregular_regimen(route: str) -> tuple[list[dict[str, Any]], list[tuple[float, float, float]]]:
    """Irregular doses as three phases, and the same doses as closed-form events.

    Dose times 0, 7.5, 20.5, 33.5, 40 h; infusions last 2, 20 and 1 h, so the 20-h
    infusions overlap each other and the 1-h infusion at 40 h.
    """
    phases = [
        {"route": route, "dose": 100.0, "start": 0.0},
        {"route": route, "dose": 50.0, "start": 7.5, "interval": 13.0, "count": 3},
        {"route": route, "dose": 120.0, "start": 40.0},
    ]
    durations = (2.0, 20.0, 1.0)
    if route == "iv_infusion":
        for ph, d in zip(phases, durations, strict=True):
            ph["duration"] = d
    events = [(0.0, 100.0, 2.0)]
    events += [(7.5 + 13.0 * k, 50.0, 20.0) for k in range(3)]
    events += [(40.0, 120.0, 1.0)]
    return phases, events


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("ncmt", NCMT)
def test_multiple_doses_superposition(
    ncmt: int, route: str, pk_models: dict[int, Model], record_error: Record
) -> None:
    phases, events = irregular_regimen(route)
    times = 0.05 + 0.4 * np.arange(300)  # never a dose time
    p = {**DISPOSITION[ncmt], **ORAL}
    got = simulate_cp(pk_models[ncmt], p, phases, times)[0]
    if route == "iv_infusion":
        ref = conc_events(times, events, route, **cf_disp(ncmt))
    else:
        evs = [(t, a) for t, a, _ in events]
        kw = cf_oral(p) if route == "oral" else {}
        ref = conc_events(times, evs, route, **kw, **cf_disp(ncmt))
    err = max_rel_err(got, ref)
    record_error(f"multiple irregular doses, {route} ({ncmt} cmt)", err, TOL)
    assert err <= TOL


TAU = 24.0
N_SS = 60


SS_INFUSION = 2.0  # h


def conc_ss(route: str, s: Any, ncmt: int, p: Mapping[str, float]) -> np.ndarray:
    """Steady-state closed form, ``s`` h after the most recent nominal dose of 100 mg."""
    if route == "iv_bolus":
        return conc_steady_state_bolus(s, 100.0, TAU, **cf_disp(ncmt))
    if route == "iv_infusion":
        return conc_steady_state_infusion(s, 100.0, TAU, SS_INFUSION, **cf_disp(ncmt))
    return conc_steady_state_oral(s, 100.0, TAU, **cf_oral(p), **cf_disp(ncmt))


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("ncmt", NCMT)
def test_steady_state(
    ncmt: int, route: str, pk_models: dict[int, Model], record_error: Record
) -> None:
    """60 daily doses vs the steady-state closed form in the last interval; Cmax, trough."""
    lam, _ = macro_constants(**cf_disp(ncmt))
    assert np.exp(-lam.min() * TAU * (N_SS - 1)) < 1e-15  # steady state reached
    regimen: dict[str, Any] = {"route": route, "dose": 100.0, "interval": TAU, "count": N_SS}
    if route == "iv_infusion":
        regimen["duration"] = SS_INFUSION
    p = {**DISPOSITION[ncmt], **ORAL}
    last = TAU * (N_SS - 1)
    s = np.array([0.1, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 20.0, 23.9])
    store = last + s
    grid = np.union1d(np.arange(0.0, last + TAU + 1.0, 1.0), store)
    res = kernel_one(pk_models[ncmt], p, regimen, grid, store_times=store)
    err = max_rel_err(res.store[0, :, 0], conc_ss(route, s, ncmt, p))
    record_error(f"steady state, {route} ({ncmt} cmt)", err, TOL)
    assert err <= TOL
    # exact Cmax over the horizon = steady-state peak, s_peak after a dose
    if route == "oral":
        opt = minimize_scalar(
            lambda x: -float(conc_ss(route, x, ncmt, p)),
            bounds=(ORAL["TLAG"], 12.0),
            method="bounded",
            options={"xatol": 1e-12},
        )
        s_peak = float(opt.x)
    else:
        s_peak = 0.0 if route == "iv_bolus" else SS_INFUSION
    err_cmax = abs(res.pk[0, 0] / float(conc_ss(route, s_peak, ncmt, p)) - 1.0)
    # every late interval peaks equally (to rounding): Tmax is s_peak after one of them
    n_int = round((res.pk[0, 1] - s_peak) / TAU)
    err_tmax = abs(res.pk[0, 1] - (n_int * TAU + s_peak)) / TAU
    record_error(f"steady-state Cmax, {route} ({ncmt} cmt)", err_cmax, TOL)
    record_error(f"steady-state Tmax (error / tau), {route} ({ncmt} cmt)", err_tmax, TOL)
    assert err_cmax <= TOL
    assert err_tmax <= TOL
    assert 0 <= n_int <= N_SS - 1
    # ctrough: concentration just before the last (60th) dose = steady-state trough
    err_trough = abs(res.pk[0, 3] / float(conc_ss(route, TAU, ncmt, p)) - 1.0)
    record_error(f"steady-state ctrough, {route} ({ncmt} cmt)", err_trough, TOL)
    assert err_trough <= TOL


@pytest.mark.parametrize("ncmt", NCMT)
def test_dose_per_kg_and_per_m2(
    ncmt: int, pk_models: dict[int, Model], record_error: Record
) -> None:
    weight = np.array([50.0, 72.5, 110.0])
    bsa = np.array([1.5, 1.83, 2.2])
    regimen = [
        {"route": "iv_bolus", "dose": 2.0, "unit": "mg/kg"},
        infusion(1.5, 3.0, unit="mg/kg", start=6.0),
        {"route": "oral", "dose": 40.0, "unit": "mg/m2", "start": 12.0},
    ]
    p = {**DISPOSITION[ncmt], **ORAL}
    params = {**{k: np.full(3, v) for k, v in p.items()}, "weight": weight, "bsa": bsa}
    times = 0.05 + 0.4 * np.arange(120)
    got = simulate_cp(pk_models[ncmt], params, regimen, times)
    disp = cf_disp(ncmt)
    for i in range(3):
        ref = (
            conc_bolus(times, 2.0 * weight[i], **disp)
            + conc_infusion(times - 6.0, 1.5 * weight[i], 3.0, **disp)
            + conc_oral(times - 12.0, 40.0 * bsa[i], **cf_oral(p), **disp)
        )
        err = max_rel_err(got[i], ref)
        record_error(f"mg/kg and mg/m2 dosing ({ncmt} cmt)", err, TOL)
        assert err <= TOL


# ---------------------------------------------------------------------------
# pre-dose convention and a NONMEM-style event table
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("ncmt", NCMT)
def test_output_at_dose_time_is_pre_dose(ncmt: int, pk_models: dict[int, Model]) -> None:
    """At a bolus time the output is the left limit (mrgsolve's default)."""
    disp = cf_disp(ncmt)
    regimen = {"route": "iv_bolus", "dose": 100.0, "interval": 24.0, "count": 2}
    eps = 1e-9
    times = np.array([0.0, eps, 24.0 - eps, 24.0, 24.0 + eps, 30.0])
    got = simulate_cp(pk_models[ncmt], DISPOSITION[ncmt], regimen, times)[0]
    right = conc_events(times, [(0.0, 100.0), (24.0, 100.0)], "iv_bolus", **disp)
    assert got[0] == 0.0  # before the first dose
    assert got[1] == pytest.approx(right[1], rel=1e-12)
    # at 24 h: the first dose only, i.e. the limit from the left
    left_24 = float(conc_bolus(24.0, 100.0, **disp))
    assert got[3] == pytest.approx(left_24, rel=1e-12)
    assert got[3] == pytest.approx(got[2], rel=1e-6)
    # ... and the jump (dose / V1) appears right after
    jump = 100.0 / DISPOSITION[ncmt]["V1"]
    assert got[4] - got[3] == pytest.approx(jump, rel=1e-6)
    assert got[5] == pytest.approx(right[5], rel=1e-12)


#: NONMEM-style record set (times in h); oral doses absorbed TLAG later
NM_REGIMEN: list[dict[str, Any]] = [
    {"route": "iv_bolus", "dose": 100.0, "start": 0.0, "interval": 36.0, "count": 2},
    infusion(200.0, 10.0, start=5.0),  # 5 -> 15 h
    infusion(150.0, 12.0, start=12.0),  # 12 -> 24 h, overlaps the first infusion
    {"route": "oral", "dose": 50.0, "start": 0.0, "interval": 12.0, "count": 4},
]
NM_BOLUS = [(0.0, 100.0), (36.0, 100.0)]
NM_INFUSION = [(5.0, 200.0, 10.0), (12.0, 150.0, 12.0)]
NM_ORAL = [(0.0, 50.0), (12.0, 50.0), (24.0, 50.0), (36.0, 50.0)]
NM_PARAMS = {"KA": 1.2, "F": 0.8, "TLAG": 0.5}


def nm_reference(times: np.ndarray, ncmt: int, *, pre_dose: bool) -> np.ndarray:
    """Superposition of the closed forms, pre-dose at bolus times if ``pre_dose``."""
    disp = cf_disp(ncmt)
    out = conc_events(times, NM_INFUSION, "iv_infusion", **disp)
    out += conc_events(times, NM_ORAL, "oral", **cf_oral(NM_PARAMS), **disp)
    for tb, amt in NM_BOLUS:
        use = times > tb if pre_dose else times >= tb
        out += np.where(use, conc_bolus(times - tb, amt, **disp), 0.0)
    return out


@pytest.mark.parametrize("ncmt", NCMT)
def test_nonmem_style_event_table(
    ncmt: int, pk_models: dict[int, Model], record_error: Record
) -> None:
    """Bolus + overlapping infusions + lagged oral doses, coinciding times."""
    p = {**DISPOSITION[ncmt], **NM_PARAMS}
    event_times = [0.0, 0.5, 5.0, 12.0, 12.5, 15.0, 24.0, 24.5, 36.0, 36.5]
    times = np.union1d(np.arange(0.0, 96.25, 0.25), event_times)
    got = simulate_cp(pk_models[ncmt], p, NM_REGIMEN, times)[0]
    ref = nm_reference(times, ncmt, pre_dose=True)
    err = max_rel_err(got, ref)
    record_error(f"NONMEM-style event table ({ncmt} cmt)", err, TOL)
    assert err <= TOL
    # outputs at the bolus times are the limits from the left
    v1 = DISPOSITION[ncmt]["V1"]
    for tb, amt in NM_BOLUS:
        near = np.array([tb - 1e-8, tb, tb + 1e-8]) if tb > 0 else np.array([tb, tb + 1e-8])
        c = simulate_cp(pk_models[ncmt], p, NM_REGIMEN, near)[0]
        at = int(tb > 0)
        if tb > 0:
            assert c[at] == pytest.approx(c[0], rel=1e-6, abs=1e-12)
        assert c[at + 1] - c[at] == pytest.approx(amt / v1, rel=1e-6)
    right = nm_reference(np.array([36.0]), ncmt, pre_dose=False)[0]
    assert got[times == 36.0][0] == pytest.approx(right - 100.0 / v1, rel=1e-9)
    # ctrough: just before the last nominal dose time (36 h: bolus + oral)
    grid = np.arange(0.0, 48.0 + 0.5, 0.5)
    res = kernel_one(pk_models[ncmt], p, NM_REGIMEN, grid)
    trough = nm_reference(np.array([36.0]), ncmt, pre_dose=True)[0]
    assert res.pk[0, 3] == pytest.approx(trough, rel=1e-9)
    # Cmax over 0-48 h (at an event here: end of infusion or bolus) vs a dense scan
    fine = np.linspace(0.0, 48.0, 480_001)
    dense = nm_reference(fine, ncmt, pre_dose=False)
    err_cmax = abs(res.pk[0, 0] / dense.max() - 1.0)
    record_error(f"NONMEM-style event table, Cmax ({ncmt} cmt)", err_cmax, TOL)
    assert err_cmax <= TOL
    assert abs(res.pk[0, 1] - fine[np.argmax(dense)]) <= 1e-4  # scan resolution


# ---------------------------------------------------------------------------
# exact PK metrics and mass balance
# ---------------------------------------------------------------------------
AUC_TOL = 1e-3  # requirement; the tail beyond 40 half-lives is < 1e-12 relative


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("ncmt", NCMT)
def test_auc_long_horizon(
    ncmt: int, route: str, pk_models: dict[int, Model], record_error: Record
) -> None:
    lam, _ = macro_constants(**cf_disp(ncmt))
    t_end = 40.0 * np.log(2.0) / min(lam.min(), KA)
    regimen: dict[str, Any] = {"route": route, "dose": 100.0}
    if route == "iv_infusion":
        regimen["duration"] = 3.0
    p = {**DISPOSITION[ncmt], **ORAL}
    res = kernel_one(pk_models[ncmt], p, regimen, np.linspace(0.0, t_end, 1001))
    f = ORAL["F"] if route == "oral" else 1.0
    expected = auc_inf(100.0, p["CL"], f)
    err = abs(res.pk[0, 2] / expected - 1.0)
    record_error(f"AUC over 40 half-lives, {route} ({ncmt} cmt)", err, AUC_TOL)
    assert err <= AUC_TOL
    assert err <= 1e-9  # regression guard: exact integration


def analytic_oral_peak(ncmt: int, p: Mapping[str, float], dose: float) -> tuple[float, float]:
    """(Tmax, Cmax) of a single oral dose: root of dC/dt of the closed form (brentq)."""
    lam, coef = macro_constants(**cf_disp(ncmt))
    ka, f, tlag = p["KA"], p["F"], p["TLAG"]
    w = ka * coef / (ka - lam)

    def dcdt(s: float) -> float:
        return float(
            f * dose * (np.sum(-lam * w * np.exp(-lam * s)) + ka * np.exp(-ka * s) * w.sum())
        )

    s_peak = brentq(dcdt, 1e-6, 48.0, xtol=1e-14, rtol=1e-15, maxiter=200)
    tmax = tlag + s_peak
    return tmax, float(conc_oral(tmax, dose, **cf_oral(p), **cf_disp(ncmt)))


@pytest.mark.parametrize("spacing", [1.0, 4.0])
@pytest.mark.parametrize("ncmt", NCMT)
def test_cmax_tmax_exact(
    ncmt: int, spacing: float, pk_models: dict[int, Model], record_error: Record
) -> None:
    p = {**DISPOSITION[ncmt], **ORAL}
    tmax, cmax = analytic_oral_peak(ncmt, p, 100.0)
    res = kernel_one(
        pk_models[ncmt], p, {"route": "oral", "dose": 100.0}, np.arange(0.0, 73.0, spacing)
    )
    err_c = abs(res.pk[0, 0] / cmax - 1.0)
    err_t = abs(res.pk[0, 1] / tmax - 1.0)
    record_error(f"oral Cmax (grid {spacing:g} h, {ncmt} cmt)", err_c, TOL)
    record_error(f"oral Tmax (grid {spacing:g} h, {ncmt} cmt)", err_t, TOL)
    assert err_c <= TOL
    assert err_t <= TOL


@pytest.mark.parametrize("ncmt", NCMT)
def test_cmax_at_infusion_end_between_grid_points(
    ncmt: int, pk_models: dict[int, Model], record_error: Record
) -> None:
    res = kernel_one(pk_models[ncmt], DISPOSITION[ncmt], infusion(100.0, 2.5), np.arange(0.0, 49.0))
    cmax = float(conc_infusion(2.5, 100.0, 2.5, **cf_disp(ncmt)))
    err = abs(res.pk[0, 0] / cmax - 1.0)
    record_error(f"infusion Cmax off grid ({ncmt} cmt)", err, TOL)
    assert err <= TOL
    assert res.pk[0, 1] == 2.5


#: oral 100 mg at 0 (peak of that dose at 2.26 h, 1 cmt) plus a second input next to the
#: peak: (regimen, closed-form reference)
PEAK_NEXT_TO_EVENT: dict[str, tuple[list[dict[str, Any]], Callable[[Any], Any]]] = {
    # bolus at 2 h (a grid time) while C still rises: the peak is at 2.075 h, after it
    "bolus at 2 h, peak after it": (
        [{"route": "oral", "dose": 100.0}, {"route": "iv_bolus", "dose": 20.0, "start": 2.0}],
        lambda t: conc_oral(t, 100.0, KA, **cf_disp(1)) + conc_bolus(t - 2.0, 20.0, **cf_disp(1)),
    ),
    # infusion starting at 2.5 h (between grid points): the peak is at 2.26 h, before it
    "infusion from 2.5 h, peak before it": (
        [{"route": "oral", "dose": 100.0}, infusion(10.0, 10.0, start=2.5)],
        lambda t: (
            conc_oral(t, 100.0, KA, **cf_disp(1)) + conc_infusion(t - 2.5, 10.0, 10.0, **cf_disp(1))
        ),
    ),
}


@pytest.mark.parametrize("case", list(PEAK_NEXT_TO_EVENT))
def test_cmax_when_peak_is_next_to_an_event(
    case: str, pk_models: dict[int, Model], record_error: Record
) -> None:
    regimen, conc = PEAK_NEXT_TO_EVENT[case]
    opt = minimize_scalar(
        lambda x: -float(conc(x)), bounds=(1.0, 4.0), method="bounded", options={"xatol": 1e-12}
    )
    res = kernel_one(pk_models[1], {**DISPOSITION[1], "KA": KA}, regimen, np.arange(0.0, 49.0))
    err_c = abs(res.pk[0, 0] / -opt.fun - 1.0)
    err_t = abs(res.pk[0, 1] / opt.x - 1.0)
    record_error(f"Cmax next to an event: {case}", err_c, TOL)
    record_error(f"Tmax next to an event: {case}", err_t, TOL)
    assert err_c <= TOL
    assert err_t <= TOL


def test_ctrough_when_last_dose_is_at_end_of_horizon(pk_models: dict[int, Model]) -> None:
    regimen = {"route": "iv_bolus", "dose": 100.0, "interval": 24.0, "count": 8}  # 0..168 h
    grid = np.arange(0.0, 168.5, 0.5)
    res = kernel_one(pk_models[1], DISPOSITION[1], regimen, grid, probe_times=[168.0])
    trough = float(
        conc_events(168.0, [(24.0 * k, 100.0) for k in range(7)], "iv_bolus", **cf_disp(1))
    )
    assert res.probes[0, 0, 0] == pytest.approx(trough, rel=1e-12)  # pre-dose output: fine
    assert res.pk[0, 3] == pytest.approx(trough, rel=1e-12)  # NaN


@pytest.mark.parametrize("t_end", [6.0, 10.0, 37.3])
def test_mass_balance_infusion(
    t_end: float, pk_models: dict[int, Model], record_error: Record
) -> None:
    """CL·AUC(0..T) + V1·C(T) = amount infused by T (1 compartment)."""
    p = DISPOSITION[1]
    dose, duration = 100.0, 10.0
    grid = np.linspace(0.0, t_end, 41)
    res = kernel_one(pk_models[1], p, infusion(dose, duration), grid, probe_times=[t_end])
    infused = dose / duration * min(t_end, duration)
    balance = p["CL"] * res.pk[0, 2] + p["V1"] * res.probes[0, 0, 0]
    err = abs(balance / infused - 1.0)
    record_error("mass balance, infusion (1 cmt)", err, 1e-8)
    assert err <= 1e-8


# ---------------------------------------------------------------------------
# near-degenerate absorption
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("offset", [0.0, 1e-9, -1e-9])
def test_ka_equal_to_elimination_rate(
    offset: float, pk_models: dict[int, Model], record_error: Record
) -> None:
    """KA = CL/V1 (flip-flop limit): C = F·D·KA/V·t·exp(-k t)."""
    cl, v1 = DISPOSITION[1]["CL"], DISPOSITION[1]["V1"]
    k = cl / v1
    ka = k * (1.0 + offset)
    times = np.concatenate([[0.01, 0.5], np.arange(1.0, 241.0, 1.0)])  # up to k t = 24
    got = simulate_cp(
        pk_models[1], {"CL": cl, "V1": v1, "KA": ka}, {"route": "oral", "dose": 100.0}, times
    )[0]
    ref = 100.0 * ka / v1 * times * np.exp(-k * times)
    err = max_rel_err(got, ref)
    record_error("KA = CL/V1 (within 1e-9), 1 cmt", err, 1e-5)
    assert err <= 1e-5


@pytest.mark.parametrize("offset", [1e-8, 1.1e-7, 1e-6])
def test_ka_close_to_elimination_rate(
    offset: float, pk_models: dict[int, Model], record_error: Record
) -> None:
    """KA close to CL/V1, either side of the engine's nudging threshold (1e-7)."""
    cl, v1 = DISPOSITION[1]["CL"], DISPOSITION[1]["V1"]
    k = cl / v1
    ka = k * (1.0 + offset)
    times = np.concatenate([[0.01, 0.5], np.arange(1.0, 241.0, 1.0)])
    got = simulate_cp(
        pk_models[1], {"CL": cl, "V1": v1, "KA": ka}, {"route": "oral", "dose": 100.0}, times
    )[0]
    d = ka - k  # stable form of D·KA/V·(exp(-k t) - exp(-ka t))/(ka - k)
    ref = 100.0 * ka / v1 * np.exp(-k * times) * (-np.expm1(-d * times) / d)
    err = max_rel_err(got, ref)
    record_error("KA close to CL/V1 (1e-8..1e-6), 1 cmt", err, 1e-5)
    assert err <= 1e-5


def test_ka_nudge_within_documented_bound(pk_models: dict[int, Model]) -> None:
    cl, v1 = DISPOSITION[1]["CL"], DISPOSITION[1]["V1"]
    k = cl / v1
    times = np.arange(1.0, 51.0, 1.0)  # k t <= 5, around and after the peak (k t = 1)
    got = simulate_cp(
        pk_models[1], {"CL": cl, "V1": v1, "KA": k}, {"route": "oral", "dose": 100.0}, times
    )[0]
    ref = 100.0 * k / v1 * times * np.exp(-k * times)
    # documented in vtrial.engine.host.pk_modes: about 8 * EIGEN_GAP * k * t relative
    bound = 8 * EIGEN_GAP * np.maximum(k * times, 1.0)
    assert np.all(np.abs(got / ref - 1.0) <= bound)


@pytest.mark.parametrize("which", ["alpha", "beta"])
def test_ka_equal_to_two_compartment_rate(
    which: str, pk_models: dict[int, Model], record_error: Record
) -> None:
    """KA equal to a 2-cmt disposition rate: reference is the limit of the closed form
    (central difference of KA·(1 ± 1e-4), error O(1e-8))."""
    disp = cf_disp(2)
    lam, _ = macro_constants(**disp)
    ka = float(lam[0] if which == "alpha" else lam[1])
    times = np.concatenate([[0.01, 0.5], np.arange(1.0, 241.0, 1.0)])
    got = simulate_cp(
        pk_models[2], {**DISPOSITION[2], "KA": ka}, {"route": "oral", "dose": 100.0}, times
    )[0]
    ref = 0.5 * (
        conc_oral(times, 100.0, ka * (1 + 1e-4), **disp)
        + conc_oral(times, 100.0, ka * (1 - 1e-4), **disp)
    )
    err = max_rel_err(got, ref)
    record_error("KA = alpha or beta, 2 cmt", err, 1e-5)
    assert err <= 1e-5


@pytest.mark.parametrize("route", ROUTES)
def test_three_compartments_with_equal_peripheral_rates(
    route: str, pk_models: dict[int, Model], record_error: Record
) -> None:
    """Q2/V2 = Q3/V3: a repeated rate constant; the 3-cmt model is then exactly the
    2-cmt model with Q = Q2 + Q3, V = V2 + V3 (lumped peripheral compartments)."""
    p3 = {"CL": 5.0, "V1": 20.0, "Q2": 10.0, "V2": 50.0, "Q3": 2.0, "V3": 10.0, **ORAL}
    lumped = {"cl": 5.0, "v1": 20.0, "q2": 12.0, "v2": 60.0}
    phases, events = irregular_regimen(route)
    times = 0.05 + 0.4 * np.arange(300)
    got = simulate_cp(pk_models[3], p3, phases, times)[0]
    if route == "iv_infusion":
        ref = conc_events(times, events, route, **lumped)
    else:
        kw = cf_oral(p3) if route == "oral" else {}
        ref = conc_events(times, [(t, a) for t, a, _ in events], route, **kw, **lumped)
    err = max_rel_err(got, ref)
    record_error(f"3 cmt with Q2/V2 = Q3/V3 vs lumped 2 cmt, {route}", err, TOL)
    assert err <= TOL


# ---------------------------------------------------------------------------
# batch and thread invariance
# ---------------------------------------------------------------------------
N_BATCH = 50
BATCH_REGIMEN: list[dict[str, Any]] = [
    {"route": "oral", "dose": 100.0, "interval": 24.0, "count": 7},
    infusion(2.0, 1.5, unit="mg/kg", start=30.0, interval=48.0, count=2),
    {"route": "iv_bolus", "dose": 25.0, "start": 100.0},
]
BATCH_TIMES = np.arange(0.0, 200.0, 0.5)


@pytest.fixture(scope="module")
def batch_params() -> pd.DataFrame:
    """50 patients: 3-cmt typical values with 30 % log-normal variability (seeded)."""
    rng = np.random.default_rng(20240611)
    typical = {**DISPOSITION[3], **ORAL, "F": 0.8}
    cols = {k: v * np.exp(0.3 * rng.standard_normal(N_BATCH)) for k, v in typical.items()}
    cols["F"] = np.minimum(cols["F"], 1.0)
    cols["weight"] = 70.0 * np.exp(0.2 * rng.standard_normal(N_BATCH))
    cols["patient_id"] = np.arange(101, 101 + N_BATCH)
    return pd.DataFrame(cols)


def test_patient_alone_equals_patient_in_batch(
    batch_params: pd.DataFrame, pk_models: dict[int, Model]
) -> None:
    model = pk_models[3]
    batch = simulate(model, batch_params, BATCH_REGIMEN, BATCH_TIMES)
    cp = batch["CP"].to_numpy().reshape(N_BATCH, -1)
    assert np.all(np.isfinite(cp))
    rev = simulate(model, batch_params.iloc[::-1], BATCH_REGIMEN, BATCH_TIMES)
    assert np.array_equal(rev["CP"].to_numpy().reshape(N_BATCH, -1)[::-1], cp)
    for i in range(N_BATCH):
        alone = simulate(model, batch_params.iloc[[i]], BATCH_REGIMEN, BATCH_TIMES)
        assert np.array_equal(alone["CP"].to_numpy(), cp[i]), f"patient {i}"


def test_results_independent_of_thread_count(
    batch_params: pd.DataFrame, pk_models: dict[int, Model]
) -> None:
    model = pk_models[3]
    params = {k: batch_params[k].to_numpy() for k in model.parameters if k in batch_params}
    scale = np.ones((N_BATCH, 3))
    scale[:, 1] = batch_params["weight"].to_numpy()
    kw: dict[str, Any] = {
        "n": N_BATCH,
        "events": event_table([regimen_phases(BATCH_REGIMEN)]),
        "arm": np.zeros(N_BATCH, dtype=np.int64),
        "dose_scale": scale,
        "grid": BATCH_TIMES,
        "store_times": BATCH_TIMES[::4],
        "store_outputs": ("CP",),
        "probe_times": [24.0, 100.0],
        "store_dtype": np.float64,
    }
    one = run_kernel(model, params, threads=1, **kw)
    two = run_kernel(model, params, threads=2, **kw)
    assert np.all(one.status == 0)
    for name in ("status", "nsteps", "omin", "omax", "tmin", "tmax", "probes", "store", "pk"):
        assert np.array_equal(getattr(one, name), getattr(two, name), equal_nan=True), name
