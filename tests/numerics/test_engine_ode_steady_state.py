"""Steady state (NONMEM ``SS`` 1 and 2) of models with ODE states, on a dataset's
records, against independent references.

The engine integrates the dose pattern interval after interval until the state just
before a dose converges (:func:`vtrial.engine.model_steps.kernel_steps`
``ode_steady_state``). The references do not share that logic:

- linear ODE models (``pk_mm_1cmt``/``pk_mm_2cmt`` with ``VMAX`` 0): the textbook
  closed-form steady state (geometric series, :mod:`closed_forms`) and superposition of
  the past doses;
- nonlinear models (Michaelis-Menten elimination; a PK macro driving an indirect
  response): scipy's DOP853 (rtol 1e-11) over an explicit dosing history, every dose and
  infusion of the pattern from time 0, long enough that the state before a dose has
  converged to 1e-12 (checked), then on through the observations;
- constant infusions (``II`` 0): the equilibrium in closed form.

Errors are relative (:func:`max_rel_err`, reference floored at 1e-3 of its peak); the
tolerance is 1e-6, with the engine at rtol 1e-10.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

from vtrial import build_model, simulate
from vtrial.engine.host import Tolerances
from vtrial.model.spec import Model

from .closed_forms import (
    conc_bolus,
    conc_infusion,
    conc_steady_state_bolus,
    conc_steady_state_infusion,
    conc_steady_state_oral,
)
from .test_engine_pk import DISPOSITION, ORAL, TOL, cf_disp, max_rel_err
from .test_engine_records import T_SS, TAU, ss_frame, superposed_past

Record = Callable[[str, float, float], None]

TIGHT = Tolerances(rtol=1e-10, atol=1e-12)
#: the reference integrator (an explicit dosing history through scipy)
REF_OPTS = {"method": "DOP853", "rtol": 1e-11, "atol": 1e-14}
#: intervals of the reference's past before the record (its convergence is checked)
N_PAST = 60
#: Michaelis-Menten elimination with a linear part: nonlinear over the profile
MM = {"VMAX": 20.0, "KM": 2.0, "CL": 1.0, "V1": 50.0, **ORAL}
#: an indirect response (idr1) driven by the PK macro's CP
IDR = {"CL": 5.0, "V1": 50.0, **ORAL, "R0": 100.0, "KOUT": 0.1, "IMAX": 0.9, "IC50": 1.0}


@pytest.fixture(scope="module")
def ode_models() -> dict[str, Model]:
    """The ODE PK models and the PK macro with an indirect response."""
    return {
        "pk_mm_1cmt": build_model({"pk": "pk_mm_1cmt"}),
        "pk_mm_2cmt": build_model({"pk": "pk_mm_2cmt"}),
        "pk_idr": build_model(
            {"pk": "pk_1cmt", "components": {"pd": {"model": "idr1", "links": {"DRUG": "CP"}}}}
        ),
    }


def observed(out: pd.DataFrame, name: str = "CP") -> np.ndarray:
    """Output ``name`` on the observation records; every subject solved."""
    assert (out["solver_status"] == "ok").all(), out["solver_status"].unique()
    return out.loc[out["EVID"] == 0, name].to_numpy()


# ---------------------------------------------------------------------------
# the reference: an explicit dosing history through scipy
# ---------------------------------------------------------------------------
Rhs = Callable[[float, np.ndarray], np.ndarray]


def history(
    rhs: Rhs,
    y0: np.ndarray,
    doses: Sequence[tuple[float, int, float, float]],
    t_obs: np.ndarray,
    t0: float = 0.0,
    marks: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """States at ``t_obs`` (after the doses at their time) and just before each time
    of ``marks``, from ``y0`` at ``t0``; ``doses``: ``(time, state, amount, duration)``,
    a bolus for duration 0, else a zero-order infusion into that state."""
    marks = np.zeros(0) if marks is None else marks
    ev: dict[float, list[tuple[int, float, float]]] = {}
    for td, j, amt, dur in doses:
        if dur == 0.0:
            ev.setdefault(td, []).append((j, amt, 0.0))
        else:
            ev.setdefault(td, []).append((j, 0.0, amt / dur))
            ev.setdefault(td + dur, []).append((j, 0.0, -amt / dur))
    t_end = max([*t_obs, *marks]) + 1e-9
    stops = sorted({t0, *(t for t in ev if t0 <= t <= t_end), *marks, t_end})
    y = np.array(y0, dtype=np.float64)
    rate = np.zeros(y.size)
    out = np.full((t_obs.size, y.size), np.nan)
    pre = np.full((marks.size, y.size), np.nan)
    for a, b in itertools.pairwise(stops):
        pre[marks == a] = y
        for j, amt, dr in ev.get(a, []):
            y[j] += amt
            rate[j] += dr
        out[t_obs == a] = y
        inside = (t_obs > a) & (t_obs < b)
        r = rate.copy()
        sol = solve_ivp(
            lambda t, x, r=r: rhs(t, x) + r, (a, b), y, t_eval=[*t_obs[inside], b], **REF_OPTS
        )
        assert sol.success
        out[inside] = sol.y[:, :-1].T
        y = sol.y[:, -1].copy()
    return out, pre


def pattern(
    route: str, amt: float, tau: float, ks: range, *, t0: float = 0.0, dur: float = 0.0,
    p: dict[str, float] | None = None, oral: int = 0, iv: int = 1,
) -> list[tuple[float, int, float, float]]:  # fmt: skip
    """The doses ``k`` in ``ks`` of a pattern at ``t0 + k tau``: oral (into state
    ``oral``, bioavailability ``F``, landing ``TLAG`` later), bolus or infusion over
    ``dur`` (into state ``iv``)."""
    p = p or {}
    if route == "oral":
        return [(t0 + k * tau + p["TLAG"], oral, p["F"] * amt, 0.0) for k in ks]
    return [(t0 + k * tau, iv, amt, dur if route == "infusion" else 0.0) for k in ks]


def steady_history(
    rhs: Rhs, y0: np.ndarray, doses: Callable[[range], list], t_rel: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The reference of an SS record at time 0 whose pattern continues over ``t_rel``:
    ``N_PAST`` intervals of the pattern before it, every dose explicit. Returns the
    states at ``t_rel`` and the state just before the record's dose (the steady state),
    checked to have converged to 1e-12."""
    big_t = N_PAST * TAU
    out, pre = history(
        rhs, y0, doses(range(N_PAST + 8)), big_t + t_rel, marks=np.array([big_t - TAU, big_t])
    )
    change = np.max(np.abs(pre[1] - pre[0])) / np.max(np.abs(pre[1]))
    assert change <= 1e-12, change
    return out, pre[1]


def mm_rhs(p: dict[str, float]) -> Rhs:
    """pk_mm_1cmt: depot, central amount."""

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        c = y[1] / p["V1"]
        return np.array(
            [-p["KA"] * y[0], p["KA"] * y[0] - p["VMAX"] * c / (p["KM"] + c) - p["CL"] * c]
        )

    return rhs


def idr_rhs(p: dict[str, float]) -> Rhs:
    """pk_1cmt + idr1 (as ODEs here): depot, central amount, response."""

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        c = y[1] / p["V1"]
        inhibition = p["IMAX"] * c / (p["IC50"] + c)
        return np.array(
            [
                -p["KA"] * y[0],
                p["KA"] * y[0] - p["CL"] * c,
                p["R0"] * p["KOUT"] * (1.0 - inhibition) - p["KOUT"] * y[2],
            ]
        )

    return rhs


# ---------------------------------------------------------------------------
# linear ODE models: the closed-form steady state
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pk_mm_1cmt", "pk_mm_2cmt"])
def test_linear_ode_model_matches_the_closed_form_steady_state(
    name: str, ode_models: dict[str, Model], record_error: Record
) -> None:
    """SS=1 at time 0 through an ODE 1-/2-compartment model (``VMAX`` 0): the profile
    over the interval equals the textbook steady state for an IV bolus, an oral dose
    with lag and F, and a 2 h infusion; an infusion lasting 2.5 intervals matches the
    record's infusion plus 120 earlier ones by superposition (the running ones restart
    at the record)."""
    ncmt = 1 if name == "pk_mm_1cmt" else 2
    disp = cf_disp(ncmt)
    params = pd.DataFrame([{**DISPOSITION[ncmt], **ORAL, "VMAX": 0.0}])
    t_long = np.array([0.0, 1.0, 6.0, 11.0, 12.0, 20.0, 30.0, 47.0, 70.0])
    cases = [
        ("bolus", {"TIME": 0.0, "AMT": 100.0, "SS": 1, "II": TAU}, T_SS,
         conc_steady_state_bolus(T_SS, 100.0, TAU, **disp)),
        ("oral", {"TIME": 0.0, "AMT": 100.0, "CMT": 1, "SS": 1, "II": TAU}, T_SS,
         conc_steady_state_oral(T_SS, 100.0, TAU, ka=ORAL["KA"], f=ORAL["F"],
                                tlag=ORAL["TLAG"], **disp)),
        ("infusion", {"TIME": 0.0, "AMT": 100.0, "RATE": 50.0, "SS": 1, "II": TAU}, T_SS,
         conc_steady_state_infusion(T_SS, 100.0, TAU, 2.0, **disp)),
        ("infusion over 30 h", {"TIME": 0.0, "AMT": 100.0, "RATE": 100.0 / 30.0, "SS": 1,
                                "II": TAU}, t_long,
         conc_infusion(t_long, 100.0, 30.0, **disp)
         + superposed_past(t_long, 0.0, "iv_infusion", 100.0, TAU, 120, duration=30.0,
                           **disp)),
    ]  # fmt: skip
    for case, dose, t, ref in cases:
        out = simulate(ode_models[name], params, data=ss_frame([dose], t), tolerances=TIGHT)
        err = max_rel_err(observed(out), ref)
        record_error(f"ODE steady state: SS=1 {case} ({name}, linear)", err, TOL)
        assert err <= TOL, case


def test_linear_ode_model_constant_infusion_and_ss2_on_top(
    ode_models: dict[str, Model], record_error: Record
) -> None:
    """The dataset of ``test_engine_records`` through the ODE 2-compartment model: a
    constant infusion at steady state (SS=1, II 0) holds CP at RATE/CL; an SS=2 bolus
    pattern at 24 h adds its steady state (superposition); an SS=1 record at 100 h resets
    both, and its ADDL doses continue the pattern."""
    disp = cf_disp(2)
    t = np.array([0.0, 5.0, 24.0, 30.0, 40.0, 100.0, 103.0, 125.0])
    data = ss_frame(
        [
            {"TIME": 0.0, "AMT": 0.0, "RATE": 4.0, "SS": 1, "II": 0.0},
            {"TIME": 24.0, "AMT": 60.0, "SS": 2, "II": TAU},
            {"TIME": 100.0, "AMT": 80.0, "SS": 1, "II": TAU, "ADDL": 2},
        ],
        t,
    )
    params = pd.DataFrame([{**DISPOSITION[2], "VMAX": 0.0}])
    cp = observed(simulate(ode_models["pk_mm_2cmt"], params, data=data, tolerances=TIGHT))
    ref = np.full(t.size, 4.0 / DISPOSITION[2]["CL"])
    on = (t >= 24.0) & (t < 100.0)
    ref[on] += conc_bolus(t[on] - 24.0, 60.0, **disp) + superposed_past(
        t[on], 24.0, "iv_bolus", 60.0, TAU, 80, **disp
    )
    late = t >= 100.0
    ref[late] = conc_steady_state_bolus((t[late] - 100.0) % TAU, 80.0, TAU, **disp)
    err = max_rel_err(cp, ref)
    record_error("ODE steady state: constant infusion, SS=2 on top, SS=1 reset (linear)", err, TOL)
    assert err <= TOL


# ---------------------------------------------------------------------------
# nonlinear models: an explicit dosing history through scipy
# ---------------------------------------------------------------------------
#: observation times after an SS record at 0 whose ADDL 3 continues the pattern (none at
#: an ADDL dose: it acts after the records at its time, NONMEM's order)
T_AFTER = np.array([0.0, 0.5, 1.0, 2.0, 5.0, 11.9, 12.5, 13.0, 20.0, 30.0, 40.0])


@pytest.mark.parametrize(
    ("route", "dose", "dur"),
    [("oral", 150.0, 0.0), ("bolus", 150.0, 0.0), ("infusion", 150.0, 2.0),
     ("infusion", 150.0, 30.0)],
)  # fmt: skip
def test_michaelis_menten_steady_state_matches_a_dosing_history(
    route: str, dose: float, dur: float, ode_models: dict[str, Model], record_error: Record
) -> None:
    """Michaelis-Menten elimination (with a linear part), SS=1 at 0 with ADDL 3: CP
    over 40 h against the explicit history (oral with lag and F; bolus; infusions of
    2 h and of 30 h, longer than the 12 h interval)."""
    rec = {"TIME": 0.0, "AMT": dose, "SS": 1, "II": TAU, "ADDL": 3}
    rec |= {"CMT": 1} if route == "oral" else {}
    rec |= {"RATE": dose / dur} if route == "infusion" else {}
    out = simulate(
        ode_models["pk_mm_1cmt"], pd.DataFrame([MM]), data=ss_frame([rec], T_AFTER),
        tolerances=TIGHT,
    )  # fmt: skip
    ref, _ = steady_history(
        mm_rhs(MM),
        np.zeros(2),
        lambda ks: pattern(route, dose, TAU, ks, dur=dur, p=MM),
        T_AFTER,
    )
    err = max_rel_err(observed(out), ref[:, 1] / MM["V1"])
    record_error(f"ODE steady state: SS=1 {route} {dur:g} h, Michaelis-Menten", err, TOL)
    assert err <= TOL


@pytest.mark.parametrize(("route", "dur"), [("oral", 0.0), ("infusion", 2.0), ("infusion", 30.0)])
def test_pk_macro_with_indirect_response_matches_a_dosing_history(
    route: str, dur: float, ode_models: dict[str, Model], record_error: Record
) -> None:
    """The PK macro (closed form) driving an indirect response (an ODE state on the log
    scale), SS=1 at 0 with ADDL 3: CP and the response over 40 h against the explicit
    history of the PK and the response as ODEs."""
    dose = 100.0
    rec = {"TIME": 0.0, "AMT": dose, "SS": 1, "II": TAU, "ADDL": 3}
    rec |= {"CMT": 1} if route == "oral" else {"RATE": dose / dur}
    out = simulate(
        ode_models["pk_idr"], pd.DataFrame([IDR]), data=ss_frame([rec], T_AFTER),
        tolerances=TIGHT,
    )  # fmt: skip
    ref, _ = steady_history(
        idr_rhs(IDR),
        np.array([0.0, 0.0, IDR["R0"]]),
        lambda ks: pattern(route, dose, TAU, ks, dur=dur, p=IDR),
        T_AFTER,
    )
    for name, col in (("CP", ref[:, 1] / IDR["V1"]), ("RESPONSE", ref[:, 2])):
        err = max_rel_err(observed(out, name), col)
        record_error(f"ODE steady state: SS=1 {route} {dur:g} h, PK + idr1 {name}", err, TOL)
        assert err <= TOL, name


def test_ss2_adds_the_pattern_contribution_to_a_nonlinear_model(
    ode_models: dict[str, Model], record_error: Record
) -> None:
    """SS=2 on a nonlinear model adds the pattern's steady state to the current state
    (NONMEM's superposition, the documented definition; not the true steady state of
    the combined history, which superposition does not give for nonlinear kinetics):
    a bolus at 0, then an SS=2 oral pattern at 24 h (ADDL 2). Reference: the state
    before 24 h from its own history plus the pattern's steady state from its history,
    then on with the pattern's doses."""
    m = ode_models["pk_mm_1cmt"]
    t = np.array([1.0, 10.0, 24.0, 25.0, 30.0, 40.0, 50.0])
    data = ss_frame(
        [
            {"TIME": 0.0, "AMT": 100.0},
            {"TIME": 24.0, "AMT": 150.0, "CMT": 1, "SS": 2, "II": TAU, "ADDL": 2},
        ],
        t,
    )
    cp = observed(simulate(m, pd.DataFrame([MM]), data=data, tolerances=TIGHT))
    rhs = mm_rhs(MM)
    early, pre = history(rhs, np.zeros(2), [(0.0, 1, 100.0, 0.0)], t[t < 24.0],
                         marks=np.array([24.0]))  # fmt: skip
    _, ss = steady_history(
        rhs, np.zeros(2), lambda ks: pattern("oral", 150.0, TAU, ks, p=MM), np.array([0.0])
    )
    late, _ = history(
        rhs, pre[0] + ss, pattern("oral", 150.0, TAU, range(3), t0=24.0, p=MM), t[t >= 24.0],
        t0=24.0,
    )  # fmt: skip
    ref = np.r_[early[:, 1], late[:, 1]] / MM["V1"]
    err = max_rel_err(cp, ref)
    record_error("ODE steady state: SS=2 on a bolus, Michaelis-Menten", err, TOL)
    assert err <= TOL


# ---------------------------------------------------------------------------
# constant infusions: the equilibrium
# ---------------------------------------------------------------------------
def test_constant_infusion_reaches_the_equilibrium(
    ode_models: dict[str, Model], record_error: Record
) -> None:
    """SS=1, II 0, AMT 0, RATE > 0 into the central compartment: Michaelis-Menten CP
    solves RATE = VMAX C / (KM + C) + CL C; with the PK macro and the indirect response,
    CP = RATE / CL and R = R0 (1 - IMAX C / (IC50 + C)); both hold on."""
    t = np.array([0.0, 5.0, 50.0])
    rate = 15.0
    data = ss_frame([{"TIME": 0.0, "AMT": 0.0, "RATE": rate, "SS": 1, "II": 0.0}], t)
    b = MM["CL"] * MM["KM"] + MM["VMAX"] - rate
    c_mm = (-b + math.sqrt(b * b + 4.0 * MM["CL"] * rate * MM["KM"])) / (2.0 * MM["CL"])
    cp = observed(simulate(ode_models["pk_mm_1cmt"], pd.DataFrame([MM]), data=data,
                           tolerances=TIGHT))  # fmt: skip
    err = max_rel_err(cp, np.full(t.size, c_mm))
    record_error("ODE steady state: constant infusion, Michaelis-Menten", err, TOL)
    assert err <= TOL
    rate = 4.0
    data = ss_frame([{"TIME": 0.0, "AMT": 0.0, "RATE": rate, "SS": 1, "II": 0.0}], t)
    out = simulate(ode_models["pk_idr"], pd.DataFrame([IDR]), data=data, tolerances=TIGHT)
    c = rate / IDR["CL"]
    r_eq = IDR["R0"] * (1.0 - IDR["IMAX"] * c / (IDR["IC50"] + c))
    for name, ref in (("CP", c), ("RESPONSE", r_eq)):
        err = max_rel_err(observed(out, name), np.full(t.size, ref))
        record_error(f"ODE steady state: constant infusion, PK + idr1 {name}", err, TOL)
        assert err <= TOL, name


# ---------------------------------------------------------------------------
# no steady state: a failed status, never a value
# ---------------------------------------------------------------------------
def test_no_elimination_reports_no_steady_state(ode_models: dict[str, Model]) -> None:
    """Without elimination the amount grows with every dose: subjects 1 (SS=1 boluses)
    and 2 (a constant infusion) get ``no_steady_state`` and NaN outputs; subject 3, with
    elimination, is solved as if alone."""
    base = ss_frame([{"TIME": 0.0, "AMT": 100.0, "SS": 1, "II": TAU}], T_SS)
    constant = ss_frame([{"TIME": 0.0, "AMT": 0.0, "RATE": 5.0, "SS": 1, "II": 0.0}], T_SS)
    data = pd.concat([base.assign(ID=1), constant.assign(ID=2), base.assign(ID=3)])
    params = pd.DataFrame({"ID": [1, 2, 3], "CL": [0.0, 0.0, 5.0], "VMAX": 0.0, "V1": 50.0})
    out = simulate(ode_models["pk_mm_1cmt"], params, data=data, tolerances=TIGHT)
    for i in (1, 2):
        sub = out[out["ID"] == i]
        assert (sub["solver_status"] == "no_steady_state").all()
        assert sub["CP"].isna().all()
    sub = out[(out["ID"] == 3) & (out["EVID"] == 0)]
    assert (sub["solver_status"] == "ok").all()
    ref = conc_steady_state_bolus(T_SS, 100.0, TAU, cl=5.0, v1=50.0)
    assert max_rel_err(sub["CP"].to_numpy(), ref) <= TOL
