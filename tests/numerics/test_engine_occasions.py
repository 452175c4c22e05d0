"""Steady-state start and inter-occasion variability of the exact linear PK.

* ``steady_state: true`` against the geometric-series closed forms of
  :mod:`closed_forms` (the same ones that check 60 repeated doses), tolerance 1e-6;
* parameters that change at occasion starts against an independent piecewise
  reference: the compartment amounts propagated with ``scipy.linalg.expm`` of each
  occasion's matrix, amounts continuous across an occasion change (NONMEM's
  behaviour for IOV on clearance and volume), doses added at their times, oral
  bioavailability and lag taken from the occasion of the dose. Tolerance 1e-9.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
from scipy.linalg import expm
from scipy.optimize import minimize_scalar

from vtrial.engine.host import KernelResult, run_kernel
from vtrial.model.spec import Model
from vtrial.protocol.dosing import event_table, occasion_starts, regimen_phases

from .closed_forms import (
    conc_bolus,
    conc_events,
    conc_steady_state_bolus,
    conc_steady_state_infusion,
    conc_steady_state_oral,
)
from .test_engine_pk import DISPOSITION, NCMT, ORAL, ROUTES, TOL, cf_disp, cf_oral, max_rel_err

Record = Callable[[str, float, float], None]
TAU = 12.0
INF = 1.5  # h, infusion duration


def run(
    model: Model,
    params: Mapping[str, Any],
    regimen: Any,
    grid: np.ndarray,
    store: np.ndarray,
    occasions: list[float] | None = None,
) -> KernelResult:
    res = run_kernel(
        model,
        {
            k: np.asarray(v, dtype=np.float64) if np.ndim(v) == 2 else np.array([v])
            for k, v in params.items()
        },
        n=1,
        events=event_table([regimen_phases(regimen)], [occasions or []]),
        arm=np.zeros(1, dtype=np.int64),
        dose_scale=np.ones((1, 3)),
        grid=grid,
        store_times=store,
        store_outputs=("CP",),
        store_dtype=np.float64,
    )
    assert res.status[0] == 0
    return res


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("ncmt", NCMT)
def test_steady_state_start(
    ncmt: int, route: str, pk_models: dict[int, Model], record_error: Record
) -> None:
    """``steady_state: true``: every interval, from the first, is the steady-state one."""
    regimen: dict[str, Any] = {
        "route": route,
        "dose": 100.0,
        "interval": TAU,
        "count": 3,
        "steady_state": True,
    }
    if route == "iv_infusion":
        regimen["duration"] = INF
    p = {**DISPOSITION[ncmt], **ORAL}
    store = np.array([0.0, 0.3, 1.0, 2.0, 5.0, 11.9, 12.5, 20.0, 24.0, 30.0, 35.99])
    grid = np.union1d(np.arange(0.0, 36.0 + 0.5, 0.5), store)
    res = run(pk_models[ncmt], p, regimen, grid, store)
    s = np.mod(store, TAU)
    if route == "iv_bolus":
        ref = conc_steady_state_bolus(s, 100.0, TAU, **cf_disp(ncmt))
        # at a dose time the output is pre-dose: the trough, s = tau
        ref = np.where(s == 0.0, conc_steady_state_bolus(TAU, 100.0, TAU, **cf_disp(ncmt)), ref)
    elif route == "iv_infusion":
        ref = conc_steady_state_infusion(s, 100.0, TAU, INF, **cf_disp(ncmt))
    else:
        ref = conc_steady_state_oral(s, 100.0, TAU, **cf_oral(p), **cf_disp(ncmt))
    err = max_rel_err(res.store[0, :, 0], ref)
    record_error(f"steady-state start, {route} ({ncmt} cmt)", err, TOL)
    assert err <= TOL
    # the trough before the last dose is the steady-state trough
    if route == "iv_bolus":
        trough = conc_steady_state_bolus(TAU, 100.0, TAU, **cf_disp(ncmt))
    elif route == "iv_infusion":
        trough = conc_steady_state_infusion(TAU, 100.0, TAU, INF, **cf_disp(ncmt))
    else:
        trough = conc_steady_state_oral(TAU, 100.0, TAU, **cf_oral(p), **cf_disp(ncmt))
    err_tr = abs(res.pk[0, 3] / float(trough) - 1.0)
    record_error(f"steady-state start ctrough, {route} ({ncmt} cmt)", err_tr, TOL)
    assert err_tr <= TOL


def test_steady_state_lag_longer_than_interval(pk_models: dict[int, Model]) -> None:
    """A lag >= the interval cannot be summed as one geometric series: reported."""
    res = run_kernel(
        pk_models[1],
        {"TLAG": np.array([TAU + 1.0])},
        n=1,
        events=event_table(
            [regimen_phases({"route": "oral", "dose": 10, "interval": TAU, "steady_state": True})]
        ),
        arm=np.zeros(1, dtype=np.int64),
        dose_scale=np.ones((1, 3)),
        grid=np.array([0.0, 24.0]),
    )
    assert res.status[0] == 4  # invalid_initial, never a silently wrong profile


# ---------------------------------------------------------------------------
# inter-occasion variability
# ---------------------------------------------------------------------------
def matrix(ncmt: int, p: Mapping[str, float]) -> np.ndarray:
    """Compartment matrix: depot 0, central 1, peripherals 2.."""
    a = np.zeros((ncmt + 1, ncmt + 1))
    a[0, 0] = -p["KA"]
    a[1, 0] = p["KA"]
    a[1, 1] = -p["CL"] / p["V1"]
    for j in range(2, ncmt + 1):
        q, v = p[f"Q{j}"], p[f"V{j}"]
        a[1, 1] -= q / p["V1"]
        a[1, j] = q / v
        a[j, 1] = q / p["V1"]
        a[j, j] = -q / v
    return a


def piecewise(
    ncmt: int,
    occ_params: list[dict[str, float]],
    starts: list[float],
    doses: list[tuple[float, str]],
    dose: float,
    times: np.ndarray,
) -> np.ndarray:
    """CP at ``times`` (pre-dose at dose times) by matrix exponentials per piece."""

    def occ_at(t: float, side: Any = "right") -> int:
        return int(np.searchsorted(starts, t, side=side))

    events: list[tuple[float, int, float]] = []  # (time, compartment, amount)
    for t, route in doses:
        p = occ_params[occ_at(t)]
        if route == "oral":
            events.append((t + p["TLAG"], 0, dose * p["F"]))
        else:
            events.append((t, 1, dose))
    cuts = sorted({0.0, *starts, *(e[0] for e in events), *times})
    x = np.zeros(ncmt + 1)
    out = {}
    for a, b in itertools.pairwise(cuts):
        if a in set(times.tolist()):
            # an output at an event time (dose or occasion start) comes before it
            out[a] = x[1] / occ_params[occ_at(a, "left")]["V1"]
        for t, c, amt in events:
            if t == a:
                x[c] += amt
        x = expm(matrix(ncmt, occ_params[occ_at(a)]) * (b - a)) @ x
    out[cuts[-1]] = x[1] / occ_params[occ_at(cuts[-1])]["V1"]
    return np.array([out[t] for t in times])


@pytest.mark.parametrize("route", ["oral", "iv_bolus"])
@pytest.mark.parametrize("ncmt", [1, 3])
def test_occasion_parameters(
    ncmt: int, route: str, pk_models: dict[int, Model], record_error: Record
) -> None:
    """CL, V1, KA, F and TLAG change at each cycle start; amounts stay continuous."""
    regimen = {
        "route": route,
        "dose": 100.0,
        "interval": 8.0,
        "count": 3,
        "cycles": {"length_days": 2, "count": 3},
    }
    starts = occasion_starts(regimen_phases(regimen), "cycles")
    assert starts == [48.0, 96.0]
    base = {**DISPOSITION[ncmt], **ORAL}
    factors = [
        {"CL": 1.0, "V1": 1.0, "KA": 1.0, "F": 1.0, "TLAG": 1.0},
        {"CL": 1.6, "V1": 0.7, "KA": 2.0, "F": 0.6, "TLAG": 0.3},
        {"CL": 0.5, "V1": 1.3, "KA": 0.5, "F": 1.2, "TLAG": 2.0},
    ]
    occ_params = [{k: base[k] * f.get(k, 1.0) for k in base} for f in factors]
    params = {k: np.array([[o[k] for o in occ_params]]) for k in factors[0]}
    params.update({k: v for k, v in base.items() if k not in factors[0]})
    times = np.array(
        [0.0, 1.0, 5.0, 16.0, 30.0, 47.9, 48.0, 48.2, 50.0, 70.0, 96.0, 97.0, 101.0, 120.0, 140.0]
    )
    grid = np.union1d(np.arange(0.0, 144.0 + 1.0, 1.0), times)
    res = run(pk_models[ncmt], params, regimen, grid, times, starts)
    doses = [(48.0 * c + 8.0 * j, route) for c in range(3) for j in range(3)]
    ref = piecewise(ncmt, occ_params, starts, doses, 100.0, times)
    err = max_rel_err(res.store[0, :, 0], ref)
    record_error(f"occasion-varying parameters, {route} ({ncmt} cmt)", err, 1e-9)
    assert err <= 1e-9
    # the same patient without IOV differs (the test has power)
    flat = run(pk_models[ncmt], base, regimen, grid, times, starts)
    assert max_rel_err(flat.store[0, :, 0], ref) > 1e-2


# ---------------------------------------------------------------------------
# NONMEM-style record set with a steady-state start (SS=1 followed by more records)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("ncmt", NCMT)
def test_event_table_with_steady_state_start(
    ncmt: int, pk_models: dict[int, Model], record_error: Record
) -> None:
    """Steady state on 12-hourly oral doses, then boluses and an infusion that
    coincide with oral doses; reference: explicit superposition of 400 past doses
    (remaining history < 1e-30 relative) plus the new records."""
    regimen: list[dict[str, Any]] = [
        {"route": "oral", "dose": 50.0, "interval": TAU, "count": 4, "steady_state": True},
        {"route": "iv_bolus", "dose": 80.0, "start": 12.0, "interval": 24.0, "count": 2},
        {"route": "iv_infusion", "dose": 120.0, "start": 24.0, "duration": 6.0},
    ]
    p = {**DISPOSITION[ncmt], **ORAL}
    disp = cf_disp(ncmt)
    oral = [(-TAU * k, 50.0) for k in range(400, 0, -1)] + [(TAU * k, 50.0) for k in range(4)]
    boluses = [(12.0, 80.0), (36.0, 80.0)]
    times = np.union1d(np.arange(0.0, 72.25, 0.25), [0.75, 12.75, 30.0])

    def ref(t: np.ndarray, pre_dose: bool) -> np.ndarray:
        out = conc_events(t, oral, "oral", **cf_oral(p), **disp)
        out += conc_events(t, [(24.0, 120.0, 6.0)], "iv_infusion", **disp)
        for tb, amt in boluses:
            use = t > tb if pre_dose else t >= tb
            out += np.where(use, conc_bolus(t - tb, amt, **disp), 0.0)
        return out

    res = run(pk_models[ncmt], p, regimen, times, times)
    err = max_rel_err(res.store[0, :, 0], ref(times, pre_dose=True))
    record_error(f"NONMEM-style event table with SS start ({ncmt} cmt)", err, TOL)
    assert err <= TOL
    # Cmax of the reference: the largest value on a 36 s grid with every event time,
    # refined by bounded Brent search on the two grid steps around it
    events = [12.0, 24.0, 30.0, 36.0]
    coarse = np.union1d(np.linspace(0.0, 72.0, 7201), events)
    k = int(np.argmax(ref(coarse, pre_dose=False)))
    lo, hi = coarse[max(k - 1, 0)], coarse[min(k + 1, coarse.size - 1)]
    best = minimize_scalar(
        lambda x: -float(ref(np.array([x]), False)[0]),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-10},
    )
    cmax_ref = max(float(ref(coarse[[k]], False)[0]), -float(best.fun))
    err_cmax = abs(res.pk[0, 0] / cmax_ref - 1.0)
    record_error(f"NONMEM-style event table with SS start, Cmax ({ncmt} cmt)", err_cmax, TOL)
    assert err_cmax <= TOL
    # AUC over 0-72 h: 64-point Gauss-Legendre on each smooth piece between events (a
    # sum of exponentials over at most 36 h: the rule is exact to rounding there)
    cuts = [0.0, 0.75, 12.0, 12.75, 24.0, 24.75, 30.0, 36.0, 36.75, 72.0]
    nodes, weights = np.polynomial.legendre.leggauss(64)
    auc_ref = sum(
        0.5 * (b - a) * float(weights @ ref(0.5 * (b - a) * nodes + 0.5 * (a + b), True))
        for a, b in itertools.pairwise(cuts)
    )
    err_auc = abs(res.pk[0, 2] / auc_ref - 1.0)
    record_error(f"NONMEM-style event table with SS start, AUC ({ncmt} cmt)", err_auc, TOL)
    assert err_auc <= TOL
