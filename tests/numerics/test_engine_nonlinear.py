"""Nonlinear PK models (doses into ODE states) against a tight-tolerance reference.

Michaelis-Menten elimination (1 and 2 compartments), TMDD in the quasi-steady-state
form (the stiff case) and transit-compartment absorption. The reference integrates
the same equations with scipy ``solve_ivp(method="DOP853", rtol=1e-12, atol=1e-14)``
piecewise between dose events, with the exposure metrics from its dense output
(Cmax by bounded scalar maximisation around the best sampled point, AUC as an extra
state). Tolerance: relative error <= 1e-5 on outputs, Cmax and AUC (the kernel runs
at rtol 1e-8 here; at the default 1e-6 the errors are ~1e-5, see the solution
verification test).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from math import factorial
from typing import Any

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import minimize_scalar

from vtrial import build_model
from vtrial.engine.host import KernelResult, Tolerances, run_kernel
from vtrial.model.spec import Model, compose, spec_from_dict
from vtrial.protocol.dosing import event_table, regimen_phases

REL = 1e-5
TIGHT = Tolerances(rtol=1e-8, atol=1e-12)
GRID = np.arange(0.0, 168.0 + 0.25, 0.25)

Rhs = Callable[[float, np.ndarray], np.ndarray]


def reference(
    rhs: Rhs,
    y0: Sequence[float],
    doses: Sequence[tuple[float, int, float]],
    infusions: Sequence[tuple[float, float, int, float]],
    times: np.ndarray,
    cp: Callable[[np.ndarray], np.ndarray],
) -> dict[str, Any]:
    """Piecewise DOP853 solve with doses ``(time, state, amount)`` and infusions
    ``(start, end, state, rate)``; returns CP at ``times``, Cmax, Tmax and AUC.
    """
    t_end = float(times[-1])
    cuts = sorted({0.0, t_end, *(d[0] for d in doses), *(x for i in infusions for x in i[:2])})
    y = np.append(np.asarray(y0, dtype=np.float64), 0.0)  # last: AUC of CP
    out = np.full(times.size, np.nan)
    best = (-np.inf, np.nan)
    out[times == 0.0] = cp(y[:-1])  # an output at a dose time is taken before the dose
    for a, b in itertools.pairwise(cuts):
        for td, s, amt in doses:
            if td == a:
                y[s] += amt
        rate = np.zeros(y.size - 1)
        for t0, t1, s, r in infusions:
            if t0 <= a < t1:
                rate[s] += r

        def f(t: float, yy: np.ndarray, rate: np.ndarray = rate) -> np.ndarray:
            dy = np.asarray(rhs(t, yy[:-1]), dtype=np.float64) + rate
            return np.append(dy, cp(yy[:-1]))

        sol = solve_ivp(f, (a, b), y, method="DOP853", rtol=1e-12, atol=1e-14, dense_output=True)
        assert sol.success
        inside = (times > a) & (times <= b)
        out[inside] = [cp(sol.sol(t)[:-1]) for t in times[inside]]
        fine = np.linspace(a, b, 2001)
        vals = np.array([cp(sol.sol(t)[:-1]) for t in fine])
        j = int(np.argmax(vals))
        lo, hi = fine[max(j - 1, 0)], fine[min(j + 1, fine.size - 1)]
        if hi > lo:
            opt = minimize_scalar(
                lambda t, sol=sol: -cp(sol.sol(t)[:-1]),
                bounds=(lo, hi),
                method="bounded",
                options={"xatol": 1e-10},
            )
            cand = (-float(opt.fun), float(opt.x))
            if vals[j] > cand[0]:
                cand = (float(vals[j]), float(fine[j]))
        else:
            cand = (float(vals[j]), float(fine[j]))
        if cand[0] > best[0]:
            best = cand
        y = sol.y[:, -1].copy()
    return {"cp": out, "cmax": best[0], "tmax": best[1], "auc": float(y[-1])}


def run(model: Model, params: dict[str, float], regimen: Any, output: str = "CP") -> KernelResult:
    res = run_kernel(
        model,
        {k: np.array([v]) for k, v in params.items()},
        n=1,
        events=event_table([regimen_phases(regimen)]),
        arm=np.zeros(1, dtype=np.int64),
        dose_scale=np.ones((1, 3)),
        grid=GRID,
        store_times=GRID,
        store_outputs=(output,),
        tolerances=TIGHT,
        store_dtype=np.float64,
    )
    assert res.status[0] == 0
    return res


def check(
    res: KernelResult,
    ref: dict[str, Any],
    case: str,
    record_error: Callable[[str, float, float], None],
) -> None:
    got = res.store[0, :, 0]
    scale = np.abs(ref["cp"]).max()
    err_cp = float(np.max(np.abs(got - ref["cp"]) / np.maximum(np.abs(ref["cp"]), 1e-3 * scale)))
    err_cmax = abs(res.pk[0, 0] / ref["cmax"] - 1.0)
    err_auc = abs(res.pk[0, 2] / ref["auc"] - 1.0)
    record_error(f"{case}: CP", err_cp, REL)
    record_error(f"{case}: Cmax", err_cmax, REL)
    record_error(f"{case}: AUC", err_auc, REL)
    assert err_cp <= REL
    assert err_cmax <= REL
    assert err_auc <= REL
    assert abs(res.pk[0, 1] - ref["tmax"]) <= 1e-3 * max(1.0, ref["tmax"])


# ---------------------------------------------------------------------------
# Michaelis-Menten elimination
# ---------------------------------------------------------------------------
MM = {"VMAX": 20.0, "KM": 2.0, "CL": 0.5, "V1": 30.0, "KA": 0.8, "F": 0.7, "TLAG": 0.5}
MM_REGIMEN = [
    {"route": "oral", "dose": 300, "interval": 24, "count": 3},
    {"route": "iv_bolus", "dose": 200, "start": 80},
    {"route": "iv_infusion", "dose": 400, "start": 100, "duration": 4},
]


def mm_events(two: bool) -> tuple[list[tuple[float, int, float]], list[Any]]:
    cen = 1
    doses = [(t + MM["TLAG"], 0, 300 * MM["F"]) for t in (0.0, 24.0, 48.0)]
    doses.append((80.0, cen, 200.0))
    return doses, [(100.0, 104.0, cen, 100.0)]


@pytest.mark.parametrize("ncmt", [1, 2])
def test_michaelis_menten(ncmt: int, record_error: Callable[[str, float, float], None]) -> None:
    p = dict(MM)
    if ncmt == 2:
        p.update({"Q2": 8.0, "V2": 60.0})
    model = build_model({"pk": f"pk_mm_{ncmt}cmt"})

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        c = y[1] / p["V1"]
        elim = p["VMAX"] * c / (p["KM"] + c) + p["CL"] * c
        dy = [-p["KA"] * y[0], p["KA"] * y[0] - elim]
        if ncmt == 2:
            dy[1] += -p["Q2"] * c + p["Q2"] / p["V2"] * y[2]
            dy.append(p["Q2"] * c - p["Q2"] / p["V2"] * y[2])
        return np.array(dy)

    doses, infusions = mm_events(ncmt == 2)
    ref = reference(rhs, [0.0] * (ncmt + 1), doses, infusions, GRID, lambda y: y[1] / p["V1"])
    res = run(model, p, MM_REGIMEN)
    check(res, ref, f"Michaelis-Menten {ncmt}-cmt", record_error)
    # saturation: the dose-normalised AUC grows with the dose (the nonlinearity is real)
    low = run(model, p, {"route": "iv_bolus", "dose": 10})
    high = run(model, p, {"route": "iv_bolus", "dose": 1000})
    assert high.pk[0, 2] / 1000 > 1.5 * low.pk[0, 2] / 10


# ---------------------------------------------------------------------------
# TMDD, quasi-steady-state approximation (stiff)
# ---------------------------------------------------------------------------
TMDD = {
    "CL": 0.2,
    "V1": 3.0,
    "Q2": 0.5,
    "V2": 2.5,
    "KA": 0.02,
    "F": 0.7,
    "TLAG": 0.0,
    "KSS": 0.05,
    "KINT": 0.05,
    "KDEG": 0.5,
    "R0": 2.0,
}


def tmdd_rhs(t: float, y: np.ndarray) -> np.ndarray:
    p = TMDD
    depot, atot, peri, rtot = y
    ctot = atot / p["V1"]
    bq = ctot - rtot - p["KSS"]
    c = 0.5 * (bq + np.sqrt(bq * bq + 4 * p["KSS"] * ctot))
    rc = rtot * c / (p["KSS"] + c)
    return np.array(
        [
            -p["KA"] * depot,
            p["KA"] * depot
            - p["CL"] * c
            - p["Q2"] * c
            + p["Q2"] / p["V2"] * peri
            - p["KINT"] * rc * p["V1"],
            p["Q2"] * c - p["Q2"] / p["V2"] * peri,
            p["R0"] * p["KDEG"] - p["KDEG"] * rtot - (p["KINT"] - p["KDEG"]) * rc,
        ]
    )


def tmdd_cp(y: np.ndarray) -> float:
    p = TMDD
    ctot = y[1] / p["V1"]
    bq = ctot - y[3] - p["KSS"]
    return float(0.5 * (bq + np.sqrt(bq * bq + 4 * p["KSS"] * ctot)))


def test_tmdd_qss(record_error: Callable[[str, float, float], None]) -> None:
    model = build_model({"pk": "tmdd_qss"})
    assert model.solver == "stiff"
    regimen = [
        {"route": "iv_bolus", "dose": 10, "interval": 72, "count": 2},
        {"route": "oral", "dose": 20, "start": 144},
    ]
    doses = [(0.0, 1, 10.0), (72.0, 1, 10.0), (144.0, 0, 20.0 * TMDD["F"])]
    ref = reference(tmdd_rhs, [0.0, 0.0, 0.0, TMDD["R0"]], doses, [], GRID, tmdd_cp)
    res = run(model, TMDD, regimen)
    check(res, ref, "TMDD QSS", record_error)
    # the target-mediated sink makes the low dose vanish faster than the high dose
    low = run(model, TMDD, {"route": "iv_bolus", "dose": 0.5})
    high = run(model, TMDD, {"route": "iv_bolus", "dose": 50})
    assert high.pk[0, 2] / 50 > 2 * low.pk[0, 2] / 0.5
    # no stiffness fallback needed: Rosenbrock from the start
    assert res.method[0] == 1


# ---------------------------------------------------------------------------
# transit-compartment absorption (Savic 2007)
# ---------------------------------------------------------------------------
TRANSIT = {"CL": 4.0, "V1": 40.0, "KA": 1.5, "F": 0.8, "TLAG": 0.0, "MTT_ABS": 3.0}


@pytest.mark.parametrize("n", [3])
def test_transit_absorption(n: int, record_error: Callable[[str, float, float], None]) -> None:
    spec = {
        "name": "pk_1cmt_transit",
        "pk": {"compartments": 1, "absorption": "transit", "transit_compartments": n},
        "parameters": {k: {"value": v} for k, v in TRANSIT.items()},
        "outputs": {"AN": {"expr": f"ABS{n}", "unit": "mg"}},
    }
    model = compose(spec_from_dict(spec), {})
    assert model.dosing == {"oral": "ABS0", "iv": "CENT"}
    p = TRANSIT
    ktr = (n + 1) / p["MTT_ABS"]

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        dy = np.empty_like(y)
        dy[0] = -ktr * y[0]
        dy[1 : n + 1] = ktr * (y[0:n] - y[1 : n + 1])
        dy[n + 1] = ktr * y[n] - p["KA"] * y[n + 1]
        dy[n + 2] = p["KA"] * y[n + 1] - p["CL"] / p["V1"] * y[n + 2]
        return dy

    doses = [(t, 0, 100.0 * p["F"]) for t in (0.0, 12.0, 24.0)]
    ref = reference(rhs, [0.0] * (n + 3), doses, [], GRID, lambda y: y[n + 2] / p["V1"])
    regimen = {"route": "oral", "dose": 100, "interval": 12, "count": 3}
    res = run(model, p, regimen)
    check(res, ref, f"transit absorption (n={n})", record_error)
    # Savic's closed form of the amount in the last transit compartment, one dose at 0:
    # A_n(t) = F D (KTR t)^n exp(-KTR t) / n!
    one = run_kernel(
        model,
        {k: np.array([v]) for k, v in p.items()},
        n=1,
        events=event_table([regimen_phases({"route": "oral", "dose": 100})]),
        arm=np.zeros(1, dtype=np.int64),
        dose_scale=np.ones((1, 3)),
        grid=GRID[GRID <= 24.0],
        store_times=GRID[(GRID > 0) & (GRID <= 24.0)],
        store_outputs=("AN",),
        tolerances=TIGHT,
        store_dtype=np.float64,
    )
    assert one.status[0] == 0
    t = GRID[(GRID > 0) & (GRID <= 24.0)]
    exact = 80.0 * (ktr * t) ** n * np.exp(-ktr * t) / factorial(n)
    err = float(np.max(np.abs(one.store[0, :, 0] - exact)) / exact.max())
    record_error(f"transit absorption (n={n}): Savic closed form", err, REL)
    assert err <= REL


def test_occasion_varying_ode_parameters(record_error: Callable[[str, float, float], None]) -> None:
    """VMAX and KM change at occasion starts (IOV on an ODE model's parameters)."""
    model = build_model({"pk": "pk_mm_1cmt"})
    starts = [30.0, 75.0]
    vmax = [20.0, 35.0, 8.0]
    km = [2.0, 1.0, 4.0]
    p = {k: v for k, v in MM.items() if k not in ("VMAX", "KM")}

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        k = int(np.searchsorted(starts, t, side="right"))
        c = y[1] / p["V1"]
        elim = vmax[k] * c / (km[k] + c) + p["CL"] * c
        return np.array([-p["KA"] * y[0], p["KA"] * y[0] - elim])

    regimen = {"route": "iv_bolus", "dose": 300, "interval": 24, "count": 6}
    doses = [(24.0 * j, 1, 300.0) for j in range(6)] + [(s, 1, 0.0) for s in starts]
    ref = reference(rhs, [0.0, 0.0], doses, [], GRID, lambda y: y[1] / p["V1"])
    res = run_kernel(
        model,
        {
            **{k: np.array([v]) for k, v in p.items()},
            "VMAX": np.array([vmax]),
            "KM": np.array([km]),
        },
        n=1,
        events=event_table([regimen_phases(regimen)], [starts]),
        arm=np.zeros(1, dtype=np.int64),
        dose_scale=np.ones((1, 3)),
        grid=GRID,
        store_times=GRID,
        store_outputs=("CP",),
        tolerances=TIGHT,
        store_dtype=np.float64,
    )
    assert res.status[0] == 0
    check(res, ref, "Michaelis-Menten 1-cmt, occasion-varying VMAX/KM", record_error)


@pytest.mark.parametrize("name", ["pk_mm_2cmt", "tmdd_qss"])
def test_solution_verification(
    name: str, record_error: Callable[[str, float, float], None]
) -> None:
    """Default tolerances vs 10x tighter: every output, Cmax, AUC change by < 0.1 %."""
    model = build_model({"pk": name})
    params = {**MM, "Q2": 8.0, "V2": 60.0} if name == "pk_mm_2cmt" else TMDD
    regimen = MM_REGIMEN if name == "pk_mm_2cmt" else {"route": "iv_bolus", "dose": 10}
    outs = list(model.outputs)
    runs = []
    for tol in (Tolerances(), Tolerances(rtol=1e-7, atol=1e-10)):
        res = run_kernel(
            model,
            {k: np.array([v]) for k, v in params.items()},
            n=1,
            events=event_table([regimen_phases(regimen)]),
            arm=np.zeros(1, dtype=np.int64),
            dose_scale=np.ones((1, 3)),
            grid=GRID,
            store_times=GRID,
            store_outputs=outs,
            tolerances=tol,
            store_dtype=np.float64,
        )
        assert res.status[0] == 0
        runs.append(res)
    a, b = runs
    for j, out in enumerate(outs):
        x, y = a.store[0, :, j], b.store[0, :, j]
        err = float(np.max(np.abs(x - y)) / np.abs(y).max())
        record_error(f"{name} {out}: default vs 10x tighter tolerances", err, 1e-3)
        assert err < 1e-3
    for k, what in ((0, "Cmax"), (2, "AUC")):
        err = abs(a.pk[0, k] / b.pk[0, k] - 1.0)
        record_error(f"{name} {what}: default vs 10x tighter tolerances", err, 1e-3)
        assert err < 1e-3
