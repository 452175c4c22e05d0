"""Verify the closed-form PK references against independent numerics.

The closed forms in :mod:`closed_forms` are checked against

* a tight explicit Runge-Kutta solve (``solve_ivp``, DOP853, rtol 1e-12,
  atol 1e-14) of the compartment amount ODEs, integrated piecewise between
  dose / lag / infusion-end times, with boluses added at segment starts;
* numerical quadrature of the closed form (AUC = F * Dose / CL);
* brute-force superposition of 200 previous doses (steady state).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import pytest
from scipy.integrate import quad, solve_ivp

from .closed_forms import (
    accumulation_ratio,
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

PARAMS: dict[int, dict[str, float]] = {
    1: {"cl": 5.0, "v1": 50.0},
    2: {"cl": 5.0, "v1": 50.0, "q2": 10.0, "v2": 80.0},
    3: {"cl": 5.0, "v1": 30.0, "q2": 12.0, "v2": 60.0, "q3": 2.0, "v3": 150.0},
}
ORAL: dict[str, dict[str, float]] = {
    # regular absorption with lag and incomplete bioavailability
    "oral": {"ka": 1.2, "f": 0.7, "tlag": 0.75},
    # flip-flop kinetics: ka below every disposition rate constant
    "oral_flipflop": {"ka": 0.004, "f": 1.0, "tlag": 0.0},
}
ROUTES = ("iv_bolus", "iv_infusion", "oral", "oral_flipflop")
SINGLE: list[tuple[float, float, float]] = [(0.0, 100.0, 2.0)]
# irregular times and amounts; the 20 h infusion at 12 h overlaps the one at 30 h
MULTIPLE: list[tuple[float, float, float]] = [
    (0.0, 100.0, 2.0),
    (12.0, 50.0, 20.0),
    (30.0, 120.0, 1.0),
]
ODE_OPTS = {"method": "DOP853", "rtol": 1e-12, "atol": 1e-14}


# ---------------------------------------------------------------------------
# independent ODE reference
# ---------------------------------------------------------------------------
def _rhs_factory(p: dict[str, float], ka: float, rate: float):
    """Build the amount ODE right-hand side for a constant infusion ``rate``.

    State: ``[depot, central, periph2, periph3]`` in mg.
    """
    k10 = p["cl"] / p["v1"]
    k12 = p.get("q2", 0.0) / p["v1"]
    k21 = p.get("q2", 0.0) / p.get("v2", 1.0)
    k13 = p.get("q3", 0.0) / p["v1"]
    k31 = p.get("q3", 0.0) / p.get("v3", 1.0)

    def rhs(_t: float, a: np.ndarray) -> np.ndarray:
        ad, a1, a2, a3 = a
        return np.array(
            [
                -ka * ad,
                ka * ad - (k10 + k12 + k13) * a1 + k21 * a2 + k31 * a3 + rate,
                k12 * a1 - k21 * a2,
                k13 * a1 - k31 * a3,
            ]
        )

    return rhs


def ode_concentration(
    t_eval: np.ndarray,
    events: Sequence[tuple[float, float, float]],
    route: str,
    p: dict[str, float],
) -> np.ndarray:
    """Central concentration from a piecewise DOP853 solve of the amount ODEs.

    Integration stops at every discontinuity (bolus/oral input time, infusion
    start and end); boluses are added to the state at the start of the
    segment they belong to, so the profile is right-continuous.
    """
    oral = ORAL.get(route)
    ka = oral["ka"] if oral else 0.0
    inputs: list[tuple[float, int, float]] = []  # (time, compartment, amount)
    infusions: list[tuple[float, float, float]] = []  # (start, end, rate)
    for t_dose, amount, duration in events:
        if route == "iv_bolus":
            inputs.append((t_dose, 1, amount))
        elif route == "iv_infusion":
            infusions.append((t_dose, t_dose + duration, amount / duration))
        else:
            assert oral is not None
            inputs.append((t_dose + oral["tlag"], 0, oral["f"] * amount))
    t_start = min(float(np.min(t_eval)), 0.0)
    t_end = float(np.max(t_eval))
    breaks = {t_start, t_end}
    breaks.update(t for t, _, _ in inputs if t_start < t < t_end)
    for start, end, _ in infusions:
        breaks.update(t for t in (start, end) if t_start < t < t_end)
    edges = sorted(breaks)

    state = np.zeros(4)
    out = np.full(t_eval.shape, np.nan)
    for i, (a, b) in enumerate(pairwise(edges)):
        for t_in, cmt, amount in inputs:
            if t_in == a:
                state[cmt] += amount
        mid = 0.5 * (a + b)
        rate = sum(r for s, e, r in infusions if s <= mid < e)
        last = i == len(edges) - 2
        mask = (t_eval >= a) & ((t_eval <= b) if last else (t_eval < b))
        # always also return the segment end state, to carry it forward
        pts = np.unique(np.append(t_eval[mask], b))
        sol = solve_ivp(_rhs_factory(p, ka, rate), (a, b), state, t_eval=pts, **ODE_OPTS)
        assert sol.success, sol.message
        out[mask] = sol.y[1, np.searchsorted(pts, t_eval[mask])] / p["v1"]
        state = sol.y[:, -1].copy()
    assert not np.isnan(out).any()
    return out


def _time_grid(events: Sequence[tuple[float, float, float]], route: str) -> np.ndarray:
    """About 50 times over [-2, 72] h including all discontinuity times."""
    special = [t for t, _, _ in events]
    if route == "iv_infusion":
        special += [t + d for t, _, d in events]
    if route in ORAL:
        special += [t + ORAL[route]["tlag"] for t, _, _ in events]
    return np.unique(np.concatenate([np.linspace(-2.0, 72.0, 44), special]))


def closed_form(
    t: np.ndarray,
    events: Sequence[tuple[float, float, float]],
    route: str,
    p: dict[str, float],
) -> np.ndarray:
    """Evaluate the reference: single-dose function or ``conc_events``."""
    if len(events) == 1 and events[0][0] == 0.0:
        _, amount, duration = events[0]
        if route == "iv_bolus":
            return conc_bolus(t, amount, **p)
        if route == "iv_infusion":
            return conc_infusion(t, amount, duration, **p)
        return conc_oral(t, amount, **ORAL[route], **p)
    if route == "iv_infusion":
        return conc_events(t, events, "iv_infusion", **p)
    evs = [(t0, amt) for t0, amt, _ in events]
    if route == "iv_bolus":
        return conc_events(t, evs, "iv_bolus", **p)
    return conc_events(t, evs, "oral", **ORAL[route], **p)


# ---------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("ncmt", [1, 2, 3])
def test_macro_constants_match_rate_matrix(ncmt: int) -> None:
    p = PARAMS[ncmt]
    lam, coef = macro_constants(**p)
    k10 = p["cl"] / p["v1"]
    k12 = p.get("q2", 0.0) / p["v1"]
    k21 = p.get("q2", 0.0) / p.get("v2", 1.0)
    k13 = p.get("q3", 0.0) / p["v1"]
    k31 = p.get("q3", 0.0) / p.get("v3", 1.0)
    k = np.array(
        [
            [-(k10 + k12 + k13), k21, k31],
            [k12, -k21, 0.0],
            [k13, 0.0, -k31],
        ]
    )[:ncmt, :ncmt]
    eig = np.sort(-np.linalg.eigvals(k).real)[::-1]
    assert lam.shape == coef.shape == (ncmt,)
    np.testing.assert_allclose(lam, eig, rtol=1e-12)
    # C(0) = 1/V1 and AUC = sum A_i / lambda_i = 1/CL for a unit bolus
    np.testing.assert_allclose(coef.sum(), 1.0 / p["v1"], rtol=1e-13)
    np.testing.assert_allclose(np.sum(coef / lam), 1.0 / p["cl"], rtol=1e-13)


@pytest.mark.parametrize("regimen", ["single", "multiple"])
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("ncmt", [1, 2, 3])
def test_closed_form_matches_ode(ncmt: int, route: str, regimen: str) -> None:
    p = PARAMS[ncmt]
    events = SINGLE if regimen == "single" else MULTIPLE
    t = _time_grid(events, route)
    ref = ode_concentration(t, events, route, p)
    got = closed_form(t, events, route, p)
    assert got.shape == t.shape
    assert np.all(got[t < 0.0] == 0.0)
    scale = np.max(np.abs(ref))
    assert scale > 0.0
    err = np.abs(got - ref)
    assert np.all(err <= 1e-9 * scale + 1e-12), err.max() / scale


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("ncmt", [1, 2, 3])
def test_auc_matches_quadrature(ncmt: int, route: str) -> None:
    p = PARAMS[ncmt]
    dose, duration = 100.0, 2.0
    lam, _ = macro_constants(**p)
    slowest = lam.min()
    kinks = [0.0]
    f = 1.0
    if route == "iv_bolus":

        def conc(x: float) -> float:
            return float(conc_bolus(x, dose, **p))

    elif route == "iv_infusion":
        kinks.append(duration)

        def conc(x: float) -> float:
            return float(conc_infusion(x, dose, duration, **p))

    else:
        oral = ORAL[route]
        f = oral["f"]
        slowest = min(slowest, oral["ka"])
        kinks.append(oral["tlag"])

        def conc(x: float) -> float:
            return float(conc_oral(x, dose, **oral, **p))

    t_end = 50.0 * np.log(2.0) / slowest  # 50 terminal half-lives
    edges = np.unique(np.concatenate([kinks, np.geomspace(0.01, t_end, 40)]))
    auc = sum(quad(conc, a, b, epsabs=0.0, epsrel=1e-12, limit=200)[0] for a, b in pairwise(edges))
    expected = auc_inf(dose, p["cl"], f)
    assert expected == pytest.approx(f * dose / p["cl"], rel=1e-15)
    assert auc == pytest.approx(expected, rel=1e-8)


N_PREVIOUS = 200
TAU = 24.0


def _steady_state_pair(
    route: str, p: dict[str, float], tau: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (t, steady-state closed form, superposition of 200 doses)."""
    dose, duration = 80.0, 3.0
    t = np.linspace(0.0, tau, 25)
    times = -tau * np.arange(N_PREVIOUS)[::-1]
    if route == "iv_bolus":
        ss = conc_steady_state_bolus(t, dose, tau, **p)
        sup = conc_events(t, [(t0, dose) for t0 in times], "iv_bolus", **p)
    elif route == "iv_infusion":
        ss = conc_steady_state_infusion(t, dose, tau, duration, **p)
        sup = conc_events(t, [(t0, dose, duration) for t0 in times], "iv_infusion", **p)
    else:
        oral = ORAL[route]
        ss = conc_steady_state_oral(t, dose, tau, **oral, **p)
        sup = conc_events(t, [(t0, dose) for t0 in times], "oral", **oral, **p)
    return t, ss, sup


@pytest.mark.parametrize("route", ["iv_bolus", "iv_infusion", "oral"])
@pytest.mark.parametrize("ncmt", [1, 2, 3])
def test_steady_state_matches_superposition(ncmt: int, route: str) -> None:
    p = PARAMS[ncmt]
    lam, _ = macro_constants(**p)
    # 200 previous doses must capture the accumulation to far below 1e-10
    assert np.exp(-lam.min() * TAU * N_PREVIOUS) < 1e-14
    _, ss, sup = _steady_state_pair(route, p, TAU)
    assert np.all(ss > 0.0)
    np.testing.assert_allclose(ss, sup, rtol=1e-10, atol=0.0)


@pytest.mark.parametrize("ncmt", [1, 2, 3])
def test_steady_state_oral_without_lag_and_interval_auc(ncmt: int) -> None:
    p = PARAMS[ncmt]
    oral = {"ka": 0.9, "f": 0.8}
    dose = 80.0
    t = np.linspace(0.0, TAU, 25)
    times = -TAU * np.arange(N_PREVIOUS)[::-1]
    ss = conc_steady_state_oral(t, dose, TAU, **oral, **p)
    sup = conc_events(t, [(t0, dose) for t0 in times], "oral", **oral, **p)
    np.testing.assert_allclose(ss, sup, rtol=1e-10, atol=0.0)
    # AUC over one steady-state interval equals the single-dose AUC(0-inf)
    auc_tau = quad(
        lambda x: float(conc_steady_state_oral(x, dose, TAU, **oral, **p)),
        0.0,
        TAU,
        epsabs=0.0,
        epsrel=1e-12,
        limit=200,
    )[0]
    assert auc_tau == pytest.approx(auc_inf(dose, p["cl"], oral["f"]), rel=1e-10)


def test_accumulation_ratio() -> None:
    lam = np.log(2.0) / 12.0
    assert isinstance(accumulation_ratio(lam, 12.0), float)
    assert accumulation_ratio(lam, 12.0) == pytest.approx(2.0, rel=1e-15)
    arr = accumulation_ratio(np.array([lam, 2.0 * lam]), 12.0)
    np.testing.assert_allclose(arr, [2.0, 4.0 / 3.0], rtol=1e-15)
    # series definition, sum_{n>=0} exp(-n lambda tau)
    n = np.arange(2000)
    assert accumulation_ratio(0.05, 6.0) == pytest.approx(np.exp(-n * 0.3).sum(), rel=1e-14)


def test_bolus_superposition_is_right_continuous() -> None:
    p = PARAMS[2]
    c = conc_events([11.999999, 12.0], [(0.0, 100.0), (12.0, 100.0)], "iv_bolus", **p)
    assert c[1] - c[0] == pytest.approx(100.0 / p["v1"], rel=1e-5)
    assert conc_bolus(-1e-9, 100.0, **p) == 0.0


def test_invalid_input_is_rejected() -> None:
    p = PARAMS[1]
    lam = p["cl"] / p["v1"]
    with pytest.raises(ValueError, match="coincides"):
        conc_oral(1.0, 100.0, ka=lam, **p)
    with pytest.raises(ValueError, match="pairs"):
        macro_constants(5.0, 50.0, q2=3.0)
    with pytest.raises(ValueError, match="without q2"):
        macro_constants(5.0, 50.0, q3=3.0, v3=10.0)
    with pytest.raises(ValueError, match="cl must be"):
        macro_constants(-5.0, 50.0)
    with pytest.raises(TypeError, match="unknown PK parameter"):
        conc_bolus(1.0, 100.0, cl=5.0, v1=50.0, v4=3.0)
    with pytest.raises(ValueError, match="need a duration"):
        conc_events([1.0], [(0.0, 100.0)], "iv_infusion", **p)
    with pytest.raises(ValueError, match="route"):
        conc_events([1.0], [(0.0, 100.0)], "sc", **p)
    with pytest.raises(ValueError, match="exceed tau"):
        conc_steady_state_infusion([1.0], 100.0, 12.0, 13.0, **p)
    with pytest.raises(ValueError, match=r"\[0, tau\]"):
        conc_steady_state_bolus([13.0], 100.0, 12.0, **p)
