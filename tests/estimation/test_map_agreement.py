"""MAP estimates against an independent minimisation of the same objective, in the
spirit of mapbayr's validation against NONMEM (Le Louedec et al., CPT Pharmacometrics
Syst Pharmacol 2021): profiles simulated from the prior, with residual error, then
estimated twice.

- **vtrial**: :func:`vtrial.estimation.map.fit_subject` (the kernel's predictions,
  BFGS in whitened coordinates, batched central differences).
- **reference**: the objective written here from scipy.stats densities and predictions
  computed apart from the engine: closed-form superposition
  (:mod:`tests.numerics.closed_forms`), exact piecewise exponentials for a clearance
  that changes with a time-varying covariate, matrix exponentials for a linear
  parent-metabolite model, and ``scipy.integrate.odeint`` (LSODA, rtol 1e-12) for
  Michaelis-Menten elimination; minimised over eta itself from 0 with L-BFGS-B (scipy's
  own 3-point differences), then polished by Powell's method from its result. Both
  searches are local: where the estimates differ and vtrial's objective is lower, the
  reference also runs Powell from vtrial's estimate and keeps the lower of its two
  minima (the run lists these profiles: the reference's search from 0 stopped in a
  higher local minimum, and vtrial's estimate is a minimum of the reference objective).

A profile agrees when every component of the two estimates differs by less than
:data:`AGREE` prior SDs. The cases cover first-order absorption with a lag, zero-order
input (infusions) into a 2-compartment model with large IIV, additive, proportional,
combined and exponential error, BLQ data by M3, a time-varying covariate,
Michaelis-Menten elimination, and a parent with its metabolite (two outputs by DVID).

One profile of the 2-compartment case whose objective has a local minimum far worse
than the MAP checks that :func:`~vtrial.estimation.map.fit_subject`'s multi-start
leaves it. ``make test`` runs a few profiles per case; ``VTRIAL_MAP_PROFILES=1000 pytest
tests/estimation/test_map_agreement.py -s -p no:cacheprovider`` runs the full
verification and prints the agreement table (the figures in the README).
"""

from __future__ import annotations

import os
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, optimize, stats

from tests.numerics.closed_forms import conc_events
from vtrial import build_model
from vtrial.data.dataset import dataset_from_frame
from vtrial.data.records import dose_routes, record_events
from vtrial.estimation.map import CohortData, Prior, cohort_data, fit_subject
from vtrial.model.residual import ErrorModel

MODELS = Path(__file__).parent / "models"
#: largest difference of two agreeing estimates, in prior SDs
AGREE = 1e-3
#: profiles per case (the full verification: 1000)
PROFILES = int(os.environ.get("VTRIAL_MAP_PROFILES", "6"))
#: fraction of the profiles that must agree
REQUIRED = 0.999


@dataclass
class Case:
    """One test model: its vtrial model, prior, error, records and the reference."""

    model: dict[str, Any]
    names: tuple[str, ...]
    omega: np.ndarray
    typical: dict[str, float]
    errors: dict[str, ErrorModel]
    doses: list[dict[str, float]]
    times: list[float]
    predict: Callable[[dict[str, Any], np.ndarray, np.ndarray], np.ndarray]
    outputs: tuple[str, ...] = ("CP",)
    dvids: tuple[int, ...] = (1,)
    covariate: Callable[[np.ndarray], np.ndarray] | None = None  # WT at record times
    typical_of: Callable[[dict[str, float], np.ndarray], dict[str, np.ndarray]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _oral(p: dict[str, Any], t: np.ndarray, doses: list[dict[str, float]]) -> np.ndarray:
    ev = [(d["TIME"], d["AMT"]) for d in doses]
    return conc_events(t, ev, "oral", cl=p["CL"], v1=p["V1"], ka=p["KA"], tlag=p.get("TLAG", 0.0))


def _infusion_2cmt(p: dict[str, Any], t: np.ndarray, doses: list[dict[str, float]]) -> np.ndarray:
    ev = [(d["TIME"], d["AMT"], d["AMT"] / d["RATE"]) for d in doses]
    return conc_events(t, ev, "iv_infusion", cl=p["CL"], v1=p["V1"], q2=p["Q2"], v2=p["V2"])


def _bolus_piecewise_cl(
    p: dict[str, Any], t: np.ndarray, doses: list[dict[str, float]], change: np.ndarray
) -> np.ndarray:
    """1-cmt bolus, clearance ``p["CL"][j]`` on the j-th interval between ``change``
    times (exact: amounts decay by exp(-integral of CL / V))."""
    cl = np.atleast_1d(p["CL"])
    edges = np.concatenate([[-np.inf], change, [np.inf]])

    def integral(a: float, b: float) -> float:  # of CL(u) / V over [a, b]
        lo, hi = np.maximum(edges[:-1], a), np.minimum(edges[1:], b)
        return float(np.sum(cl * np.clip(hi - lo, 0, None)) / p["V1"])

    out = np.zeros(t.size)
    for j, tj in enumerate(t):
        for d in doses:
            if d["TIME"] <= tj:
                out[j] += d["AMT"] / p["V1"] * np.exp(-integral(d["TIME"], tj))
    return out


def _parent_metabolite(
    p: dict[str, Any], t: np.ndarray, doses: list[dict[str, float]]
) -> np.ndarray:
    """Exact: the solution of the linear system ``x' = A x`` from each dose, by the
    eigendecomposition of ``A`` (distinct eigenvalues), superposed."""
    k = p["CL"] / p["V1"]
    km = p["CLM"] / p["VM"]
    a = np.array([[-p["KA"], 0, 0], [p["KA"], -k, 0], [0, p["FM"] * k, -km]])
    lam, vec = np.linalg.eig(a)
    coef = np.linalg.solve(vec, np.array([1.0, 0.0, 0.0]))
    x = np.zeros((t.size, 3))
    for d in doses:
        dt = t - d["TIME"]
        on = dt >= 0
        x[on] += d["AMT"] * (np.exp(np.outer(dt[on], lam)) * coef) @ vec.T
    return np.real(x[:, 1:] / [p["V1"], p["VM"]])


def _mm(p: dict[str, Any], t: np.ndarray, doses: list[dict[str, float]]) -> np.ndarray:
    """``scipy.integrate.odeint`` (LSODA, rtol 1e-12) from dose to dose."""

    def rhs(x: np.ndarray, _: float) -> list[float]:
        cp = x[1] / p["V1"]
        return [-p["KA"] * x[0], p["KA"] * x[0] - p["VMAX"] * cp / (p["KM"] + cp)]

    x = np.zeros(2)
    t0 = 0.0
    out = np.zeros(t.size)
    for tj in sorted({*(d["TIME"] for d in doses), *t.tolist()}):
        if tj > t0:
            with warnings.catch_warnings():
                # a failure is read from the message below (pytest makes warnings errors)
                warnings.simplefilter("ignore", integrate.ODEintWarning)
                sol, info = integrate.odeint(
                    rhs, x, [t0, tj], rtol=1e-12, atol=1e-12, full_output=True
                )
            if info["message"] != "Integration successful.":
                return np.full(t.size, np.nan)  # far out (a line search): no reference
            x = sol[-1]
            t0 = tj
        # samples at a dose time are taken before the dose (their records come first)
        out[t == tj] = x[1] / p["V1"]
        for d in doses:
            if d["TIME"] == tj:
                x = x + np.array([d["AMT"], 0.0])
    return out


def _q12(n: int, amt: float, **extra: float) -> list[dict[str, float]]:
    return [{"TIME": 12.0 * i, "AMT": amt, **extra} for i in range(n)]


WT_TIMES = np.array([20.0, 40.0])  # weight changes (recorded at these times)
WT_VALUES = np.array([70.0, 62.0, 55.0])  # before 20 h, to 40 h, after


def _wt(t: np.ndarray) -> np.ndarray:
    """The weight recorded at time t under NOCB: the value of the interval ending at t."""
    return WT_VALUES[np.searchsorted(WT_TIMES, t, side="left")]


CASES: dict[str, Case] = {
    "oral_lag_proportional": Case(
        model={"pk": "pk_1cmt", "parameters": {"TLAG": {"value": 0.5}}},
        names=("CL", "V1", "KA"),
        omega=np.diag([0.09, 0.04, 0.25]),
        typical={"CL": 5.0, "V1": 50.0, "KA": 1.0, "TLAG": 0.5},
        errors={"CP": ErrorModel(proportional=0.15)},
        doses=_q12(3, 100.0),
        times=[1.0, 3.0, 11.5, 25.0, 30.0, 48.0],
        predict=lambda p, t, _d: _oral(p, t, _q12(3, 100.0)),
    ),
    "infusion_2cmt_large_iiv_combined": Case(
        model={"pk": "pk_2cmt"},
        names=("CL", "V1", "Q2", "V2"),
        omega=np.array([[0.6, 0.2, 0, 0], [0.2, 0.5, 0, 0], [0, 0, 0.8, 0.1], [0, 0, 0.1, 0.7]]),
        typical={"CL": 5.0, "V1": 50.0, "Q2": 10.0, "V2": 100.0},
        errors={"CP": ErrorModel(additive=0.05, proportional=0.1)},
        doses=_q12(4, 500.0, RATE=500.0, CMT=2),
        times=[0.5, 1.0, 2.0, 6.0, 11.9, 24.5, 36.5, 47.0, 60.0, 72.0],
        predict=lambda p, t, _d: _infusion_2cmt(p, t, _q12(4, 500.0, RATE=500.0)),
    ),
    "oral_exponential_blq_m3": Case(
        model={"pk": "pk_1cmt"},
        names=("CL", "V1", "KA"),
        omega=np.diag([0.09, 0.04, 0.16]),
        typical={"CL": 5.0, "V1": 50.0, "KA": 1.0},
        errors={"CP": ErrorModel(exponential=0.2, lloq=0.25)},
        doses=[{"TIME": 0.0, "AMT": 100.0}],
        times=[0.5, 2.0, 6.0, 12.0, 24.0, 36.0, 48.0],
        predict=lambda p, t, _d: _oral(p, t, [{"TIME": 0.0, "AMT": 100.0}]),
    ),
    "bolus_additive_time_varying_weight": Case(
        model={"pk": "pk_1cmt"},
        names=("CL", "V1"),
        omega=np.array([[0.09, 0.02], [0.02, 0.04]]),
        typical={"CL": 5.0, "V1": 50.0},
        errors={"CP": ErrorModel(additive=0.1)},
        doses=_q12(5, 100.0, CMT=2),
        times=[2.0, 10.0, 20.0, 26.0, 40.0, 50.0, 58.0],
        predict=lambda p, t, _d: _bolus_piecewise_cl(p, t, _q12(5, 100.0), WT_TIMES),
        covariate=_wt,
        typical_of=lambda typ, wt: {"CL": typ["CL"] * (wt / 70.0) ** 0.75},
    ),
    "parent_metabolite_two_outputs": Case(
        model={"components": {"pm": {"model": str(MODELS / "parent_metabolite.yaml")}}},
        names=("CL", "V1", "CLM"),
        omega=np.diag([0.09, 0.04, 0.09]),
        typical={"CL": 5.0, "V1": 50.0, "KA": 1.0, "FM": 0.6, "CLM": 3.0, "VM": 30.0},
        errors={"CP": ErrorModel(proportional=0.1), "CM": ErrorModel(proportional=0.15)},
        doses=_q12(2, 100.0),
        times=[1.0, 4.0, 11.0, 16.0, 24.0],
        predict=lambda p, t, _d: _parent_metabolite(p, t, _q12(2, 100.0)),
        outputs=("CP", "CM"),
        dvids=(1, 2),
    ),
    "michaelis_menten_combined": Case(
        model={"pk": "pk_mm_1cmt"},
        names=("VMAX", "KM", "V1"),
        omega=np.diag([0.09, 0.16, 0.04]),
        typical={"VMAX": 20.0, "KM": 2.0, "V1": 50.0, "KA": 1.0},
        errors={"CP": ErrorModel(additive=0.1, proportional=0.1)},
        doses=_q12(2, 300.0),
        times=[1.0, 4.0, 11.0, 14.0, 20.0, 30.0],
        predict=lambda p, t, _d: _mm(p, t, _q12(2, 300.0)),
    ),
}


def _params(case: Case, eta: np.ndarray, t: np.ndarray) -> dict[str, Any]:
    p: dict[str, Any] = dict(case.typical)
    if case.typical_of is not None:
        # the value on each interval between weight changes
        p.update(case.typical_of(case.typical, WT_VALUES))
    for i, name in enumerate(case.names):
        p[name] = np.asarray(p[name]) * np.exp(eta[i])
    return p


def _predictions(case: Case, eta: np.ndarray) -> np.ndarray:
    """Reference predictions of every (time, output) observation, in record order."""
    t = np.asarray(case.times)
    f = np.asarray(case.predict(_params(case, eta, t), t, case.doses))
    return f.reshape(t.size, -1).ravel()  # time-major, outputs in DVID order


def _reference_ofv(case: Case, eta: np.ndarray, y: np.ndarray, blq: np.ndarray) -> float:
    """The objective from scipy.stats densities and the reference predictions."""
    f = _predictions(case, eta)
    outs = np.tile(np.arange(len(case.outputs)), len(case.times))
    errs = [case.errors[case.outputs[o]] for o in outs]
    a = np.array([e.additive for e in errs])
    b = np.array([e.proportional for e in errs])
    s = np.array([e.exponential for e in errs])
    lloq = np.array([np.nan if e.lloq is None else e.lloq for e in errs])
    if not np.all(np.isfinite(f)) or np.any((s > 0) & (f <= 0)):
        return np.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = s > 0
        loc = np.where(logs, np.log(np.abs(f)), f)
        scale = np.where(logs, s, np.hypot(a, b * f))
        obs = np.where(logs, np.log(np.abs(y)), y)
        lim = np.where(logs, np.log(lloq), lloq)
    terms = np.where(blq, stats.norm.logcdf(lim, loc, scale), stats.norm.logpdf(obs, loc, scale))
    return float(-2 * terms.sum() + eta @ np.linalg.solve(case.omega, eta))


def _reference_map(case: Case, y: np.ndarray, blq: np.ndarray) -> tuple[np.ndarray, float]:
    """L-BFGS-B over eta from 0 with scipy's own 3-point differences, then Powell
    (derivative-free) from its result."""
    fun = lambda e: _reference_ofv(case, e, y, blq)  # noqa: E731
    k = len(case.names)
    # differences across a failed solve (an infinite objective) are NaN: a step back
    with np.errstate(invalid="ignore"):
        res = optimize.minimize(
            fun, np.zeros(k), method="L-BFGS-B", jac="3-point",
            options={"ftol": 1e-15, "gtol": 1e-9, "maxiter": 1000},
        )  # fmt: skip
    res = optimize.minimize(
        fun, res.x, method="Powell", options={"xtol": 1e-8, "ftol": 1e-13, "maxfev": 5000}
    )
    return res.x, float(res.fun)


def _reference_polish(
    case: Case, eta: np.ndarray, y: np.ndarray, blq: np.ndarray
) -> tuple[np.ndarray, float]:
    """Powell from ``eta``: the reference's minimum where another search ended."""
    res = optimize.minimize(
        lambda e: _reference_ofv(case, e, y, blq),
        eta,
        method="Powell",
        options={"xtol": 1e-8, "ftol": 1e-13, "maxfev": 5000},
    )
    return res.x, float(res.fun)


def _simulate(case: Case, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True eta, observations and BLQ flags of one profile."""
    eta = rng.multivariate_normal(np.zeros(len(case.names)), case.omega)
    f = _predictions(case, eta)
    outs = np.tile(np.arange(len(case.outputs)), len(case.times))
    y = np.empty(f.size)
    blq = np.zeros(f.size, dtype=bool)
    for j, fj in enumerate(f):
        e = case.errors[case.outputs[outs[j]]]
        eps = rng.standard_normal()
        y[j] = fj * np.exp(e.exponential * eps) if e.exponential else e.observe(fj, eps)
        blq[j] = e.lloq is not None and y[j] < e.lloq
    return eta, y, blq


def _records(case: Case, ys: list[np.ndarray], blqs: list[np.ndarray]) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for i, (y, blq) in enumerate(zip(ys, blqs, strict=True)):
        recs: list[tuple[float, int, dict[str, Any]]] = []
        for d in case.doses:
            dose = {"EVID": 1, "MDV": 1, "AMT": d["AMT"], "CMT": d.get("CMT", 1)}
            dose["RATE"] = d.get("RATE", 0)
            recs.append((d["TIME"], 1, dose))
        j = 0
        for t in case.times:
            for dvid in case.dvids:
                obs = {"EVID": 0, "DV": y[j], "MDV": 0, "DVID": dvid, "BLQ": int(blq[j])}
                recs.append((t, 0, obs))
                j += 1
        recs.sort(key=lambda r: (r[0], r[1]))  # a sample at a dose time before the dose
        for t, _, rec in recs:
            row = {"ID": i + 1, "TIME": t, **rec}
            if case.covariate is not None:
                row["WT"] = float(case.covariate(np.array([t]))[0])
            rows.append(row)
    return pd.DataFrame(rows).fillna({"AMT": 0, "CMT": 0, "RATE": 0, "DV": np.nan})


def _cohort(case: Case, ys: list[np.ndarray], blqs: list[np.ndarray]) -> tuple[CohortData, Prior]:
    """The estimator's data of profiles ``ys`` (one subject each) and the case's prior."""
    model = build_model(case.model)
    ds = dataset_from_frame(_records(case, ys, blqs))
    varying = ["WT"] if case.covariate is not None else []
    ev = record_events(ds, dose_routes(model), varying=varying)
    typical: dict[str, np.ndarray] = {}
    if case.typical_of is not None:
        wt = ds.records["WT"].to_numpy(dtype=np.float64)[ev.occasion_record]
        typical = {k: np.asarray(v) for k, v in case.typical_of(case.typical, wt).items()}
    data = cohort_data(
        model, ds, ev, typical=typical, outputs=list(case.outputs), errors=case.errors
    )
    return data, Prior(case.names, case.omega, ("lognormal",) * len(case.names))


@pytest.mark.parametrize("name", list(CASES))
def test_map_agrees_with_an_independent_minimisation(name: str) -> None:
    case = CASES[name]
    rng = np.random.default_rng([20261205, zlib.crc32(name.encode())])
    sims = [_simulate(case, rng) for _ in range(PROFILES)]
    data, prior = _cohort(case, [s[1] for s in sims], [s[2] for s in sims])
    sd = np.sqrt(np.diag(case.omega))
    agree = 0
    worst = 0.0
    discordant: list[str] = []
    reference_stuck: list[str] = []
    multistart = 0
    for s, (_, y, blq) in enumerate(sims):
        fit = fit_subject(data, prior, s)
        multistart += fit.n_starts > 1
        ref_eta, ref_ofv = _reference_map(case, y, blq)
        # the engine's objective is the reference objective at the same eta
        assert fit.ofv == pytest.approx(_reference_ofv(case, fit.eta, y, blq), rel=1e-7, abs=1e-7)
        diff = float(np.max(np.abs(fit.eta - ref_eta) / sd))
        if diff >= AGREE and fit.ofv < ref_ofv:
            # the reference's search from 0 is local too: where vtrial's objective is
            # lower, Powell from vtrial's estimate says whether it is a minimum of the
            # reference objective, and the reference keeps the lower of its two minima
            pol_eta, pol_ofv = _reference_polish(case, fit.eta, y, blq)
            if pol_ofv < ref_ofv:
                reference_stuck.append(
                    f"profile {s}: reference from 0 at ofv {ref_ofv:.6f}, from vtrial's "
                    f"estimate {pol_ofv:.6f} (vtrial {fit.ofv:.6f}, {fit.n_starts} starts)"
                )
                ref_eta, ref_ofv = pol_eta, pol_ofv
                diff = float(np.max(np.abs(fit.eta - ref_eta) / sd))
        worst = max(worst, diff)
        if fit.ok and diff < AGREE:
            agree += 1
        else:
            discordant.append(
                f"profile {s}: {fit.status}, |d eta|/sd {diff:.2g}, "
                f"ofv {fit.ofv:.6f} vs reference {ref_ofv:.6f} ({fit.n_starts} starts)"
            )
    print(
        f"\n{name}: {agree}/{PROFILES} agree (< {AGREE} SD), largest difference "
        f"{worst:.2g} SD, multi-start in {multistart}"
        + "".join(f"\n  {d}" for d in discordant)
        + f"\n  reference from 0 in a higher local minimum: {len(reference_stuck)}"
        + "".join(f"\n    {d}" for d in reference_stuck)
    )
    assert agree >= np.ceil(REQUIRED * PROFILES), discordant


#: observations of profile 616 of the 2-compartment case (the 1,000-profile seed),
#: rounded: simulated at eta (1.03, -0.96, 0.96, -0.60); BFGS from the typical patient
#: stops where a small Q2 leaves the peripheral compartment out (ofv 73.93), the MAP
#: has a small V2 instead (ofv 7.41)
LOCAL_MINIMUM_Y = [7.99, 13.56, 3.854, 2.087, 0.6325, 9.604, 8.988, 1.150, 0.1927, -0.0225]


def test_the_multistart_leaves_a_local_minimum() -> None:
    case = CASES["infusion_2cmt_large_iiv_combined"]
    y = np.array(LOCAL_MINIMUM_Y)
    blq = np.zeros(y.size, dtype=bool)
    data, prior = _cohort(case, [y], [blq])
    local = fit_subject(data, prior, 0, multistart=False)
    assert local.ok, local.status
    assert local.n_starts == 1
    assert local.ofv == pytest.approx(73.9264, abs=1e-3)
    fit = fit_subject(data, prior, 0)
    assert fit.ok, fit.status
    assert fit.n_starts > 1
    ref_eta, ref_ofv = _reference_map(case, y, blq)
    assert ref_ofv == pytest.approx(7.41497, abs=1e-4)
    assert fit.ofv == pytest.approx(ref_ofv, abs=1e-7)
    np.testing.assert_array_less(np.abs(fit.eta - ref_eta), AGREE * np.sqrt(np.diag(case.omega)))


#: observations of profile 528 of the Michaelis-Menten case (the 1,000-profile seed):
#: BFGS stops on precision loss at the minimum with a gradient of 1.6e-4, the ODE
#: solver's error in the differences (the Newton step from there: 7e-5 prior SDs)
FLAT_Y = [4.717931309158001, 6.330469510868599, 2.9385175063983224, 9.089097762639225]
FLAT_Y += [6.1060919196549275, 1.4361037643666543]
#: the reference's minimum of that profile (:func:`_reference_map`)
FLAT_ETA = [0.24370697960253676, -0.13705125979745458, -0.32978296739767327]


def test_a_minimum_flat_to_the_solver_error_is_converged() -> None:
    case = CASES["michaelis_menten_combined"]
    y = np.array(FLAT_Y)
    blq = np.zeros(y.size, dtype=bool)
    data, prior = _cohort(case, [y], [blq])
    fit = fit_subject(data, prior, 0)
    assert fit.ok, fit.status
    assert fit.ofv == pytest.approx(6.237116830720087, abs=1e-8)
    assert fit.ofv == pytest.approx(_reference_ofv(case, fit.eta, y, blq), abs=1e-8)
    np.testing.assert_array_less(np.abs(fit.eta - FLAT_ETA), AGREE * np.sqrt(np.diag(case.omega)))
