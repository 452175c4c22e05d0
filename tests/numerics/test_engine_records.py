"""Dataset records through the engine (``vtrial.simulate(model, data=...)``) against
independent closed forms.

Each subject's individual dosing history (oral doses into the depot with lag and
bioavailability, boluses and infusions into the central compartment, ``ADDL``/``II``
repeats) is compared with linear superposition of the textbook single-dose solutions
(:mod:`closed_forms`), on every observation record, with the record-order convention
checked at dose times: an observation after a dose record at the same time sees the
dose, one before it does not, and a dose implied by ``ADDL`` acts after the records
at its time. Errors are relative (:func:`max_rel_err`, reference floored at 1e-3 of
its peak); the tolerance is 1e-6.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pytest

from vtrial import build_model, simulate
from vtrial.engine.host import Tolerances, run_kernel
from vtrial.model.spec import Model
from vtrial.protocol.dosing import event_table, regimen_phases

from .closed_forms import (
    conc_bolus,
    conc_events,
    conc_infusion,
    conc_oral,
    conc_steady_state_bolus,
    conc_steady_state_infusion,
    conc_steady_state_oral,
)
from .test_engine_pk import DISPOSITION, NCMT, ORAL, TOL, cf_disp, max_rel_err

Record = Callable[[str, float, float], None]

#: (time, amount, cmt, rate, addl, ii) of one subject's doses: oral with repeats, a
#: changed dose, a bolus and an infusion into the central compartment
DOSES = [
    (0.0, 100.0, 1, 0.0, 3, 12.0),  # 0, 12, 24, 36
    (48.0, 150.0, 1, 0.0, 0, 0.0),  # a changed dose
    (60.0, 40.0, 2, 0.0, 0, 0.0),  # IV bolus
    (72.0, 90.0, 2, 30.0, 1, 24.0),  # 3 h infusions at 72 and 96
]
#: observation times: sparse, at dose times (both record orders), during infusions
OBS = [0.5, 2.0, 11.0, 12.0, 13.5, 24.0, 30.0, 47.0, 48.0, 60.0, 60.0, 61.0, 73.5, 75.0, 96.0,
       97.0, 99.0, 120.0]  # fmt: skip


def dose_list(doses: Sequence[tuple[float, float, int, float, int, float]]) -> list[tuple]:
    """Every dose, with the ``ADDL`` repeats written out: (time, amount, cmt, rate)."""
    out = []
    for t, amt, cmt, rate, addl, ii in doses:
        out += [(t + k * ii, amt, cmt, rate) for k in range(addl + 1)]
    return out


def reference(t: np.ndarray, doses: list[tuple], ncmt: int, after: np.ndarray) -> np.ndarray:
    """Central concentration by superposition; ``after[j]``: observation j sees the doses
    at its own time."""
    disp = cf_disp(ncmt)
    total = np.zeros(t.size)
    for td, amt, cmt, rate in doses:
        dt = t - td
        seen = (dt > 0) | ((dt == 0) & after)
        if cmt == 1:
            c = conc_oral(dt, amt, ka=ORAL["KA"], f=ORAL["F"], tlag=ORAL["TLAG"], **disp)
        elif rate > 0:
            c = conc_infusion(dt, amt, amt / rate, **disp)
        else:
            c = conc_bolus(dt, amt, **disp)
        total += np.where(seen, c, 0.0)
    return total


def records(
    doses: Sequence[tuple], obs: Sequence[float], ids: Sequence[int] = (1,)
) -> pd.DataFrame:
    """A NONMEM-style frame: per ID the dose records, then the observations, sorted by
    time with each dose before the observations at its time, except that the first of
    two observations at one time goes before the dose (as a trough sample would)."""
    rows = []
    for i in ids:
        recs = [(t, 1, 1, amt, cmt, rate, addl, ii) for t, amt, cmt, rate, addl, ii in doses]
        seen: set[float] = set()
        for t in obs:
            # sort key 0 (before the doses at t) for the first of a pair, 2 (after) else
            key = 0 if t not in seen and list(obs).count(t) > 1 else 2
            seen.add(t)
            recs.append((t, key, 0, 0.0, 0, 0.0, 0, 0.0))
        recs.sort(key=lambda r: (r[0], r[1]))
        # distinct DVs: two equal records would be refused as duplicates
        rows += [
            {"ID": i, "TIME": t, "EVID": evid, "AMT": amt, "CMT": cmt, "RATE": rate,
             "ADDL": addl, "II": ii, "DV": np.nan if evid else 1.0 + k}
            for k, (t, _, evid, amt, cmt, rate, addl, ii) in enumerate(recs)
        ]  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize("ncmt", NCMT)
def test_individual_history_matches_superposition(
    ncmt: int, pk_models: dict[int, Model], record_error: Record
) -> None:
    data = records(DOSES, OBS)
    params = pd.DataFrame([{**DISPOSITION[ncmt], **ORAL}])
    out = simulate(pk_models[ncmt], params, data=data)
    assert len(out) == len(data)
    assert (out["solver_status"] == "ok").all()
    obs = out[out["EVID"] == 0]
    t = obs["TIME"].to_numpy()
    # the record order decides: the first of two samples at 60 h precedes the bolus
    after = np.ones(t.size, dtype=bool)
    after[np.flatnonzero(t == 60.0)[0]] = False
    ref = reference(t, dose_list(DOSES), ncmt, after)
    err = max_rel_err(obs["CP"].to_numpy(), ref)
    record_error(f"dataset: individual history, record order ({ncmt} cmt)", err, TOL)
    assert err <= TOL
    # the two samples at 60 h differ by the bolus: 40 mg into V1
    pair = obs.loc[obs["TIME"] == 60.0, "CP"].to_numpy()
    assert pair[1] - pair[0] == pytest.approx(40.0 / DISPOSITION[ncmt]["V1"], rel=1e-9)
    # dose records carry no output
    assert out.loc[out["EVID"] == 1, "CP"].isna().all()


def test_implied_dose_acts_after_the_records_at_its_time(pk_models: dict[int, Model]) -> None:
    """An observation at the time of an ADDL dose (12 h) is a trough; an explicit dose
    record before the observation at 24 h is seen by it."""
    data = pd.DataFrame(
        {
            "ID": 1,
            "TIME": [0.0, 12.0, 24.0, 24.0],
            "EVID": [1, 0, 1, 0],
            "AMT": [100.0, 0.0, 100.0, 0.0],
            "CMT": [2, 2, 2, 2],
            "ADDL": [1, 0, 0, 0],
            "II": [12.0, 0.0, 0.0, 0.0],
        }
    )
    out = simulate(pk_models[1], pd.DataFrame([DISPOSITION[1]]), data=data)
    cp = out.loc[out["EVID"] == 0, "CP"].to_numpy()
    disp = cf_disp(1)
    trough = conc_bolus(np.array([12.0]), 100.0, **disp)[0]
    after = conc_bolus(np.array([24.0, 12.0, 0.0]), 100.0, **disp).sum()
    assert cp[0] == pytest.approx(trough, rel=1e-12)
    assert cp[1] == pytest.approx(after, rel=1e-12)


def test_ode_model_matches_the_pk_macro(record_error: Record) -> None:
    """The same records through an ODE model (pk_mm_1cmt with linear elimination only:
    depot CMT 1, central CMT 2, adaptive Dormand-Prince) agree with the closed form."""
    model = build_model({"pk": "pk_mm_1cmt"})
    data = records(DOSES, OBS)
    params = pd.DataFrame([{**DISPOSITION[1], **ORAL, "VMAX": 0.0}])
    out = simulate(model, params, data=data, tolerances=Tolerances(rtol=1e-10, atol=1e-12))
    obs = out[out["EVID"] == 0]
    t = obs["TIME"].to_numpy()
    after = np.ones(t.size, dtype=bool)
    after[np.flatnonzero(t == 60.0)[0]] = False
    err = max_rel_err(obs["CP"].to_numpy(), reference(t, dose_list(DOSES), 1, after))
    record_error("dataset: individual history, ODE model (1 cmt)", err, TOL)
    assert err <= TOL


def test_subjects_keep_their_own_histories_and_parameters(pk_models: dict[int, Model]) -> None:
    """Three subjects with different doses and parameters: each matches its own closed
    form, whatever the others are, and the result does not depend on their order."""
    disp = DISPOSITION[1]
    frames = []
    for i, dose in ((7, 50.0), (3, 100.0), (11, 200.0)):
        frames.append(
            pd.DataFrame(
                {"ID": i, "TIME": [0.0, 1.0, 6.0], "AMT": [dose, 0, 0], "CMT": 2,
                 "DV": [np.nan, 1.0, 1.0]}
            )
        )  # fmt: skip
    data = pd.concat(frames, ignore_index=True)
    params = pd.DataFrame({"ID": [3, 7, 11], "CL": [2.0, 5.0, 9.0], "V1": disp["V1"]})
    out = simulate(pk_models[1], params, data=data)
    for i, dose, cl in ((7, 50.0, 5.0), (3, 100.0, 2.0), (11, 200.0, 9.0)):
        got = out.loc[(out["ID"] == i) & (out["EVID"] == 0), "CP"].to_numpy()
        ref = conc_bolus(np.array([1.0, 6.0]), dose, cl=cl, v1=disp["V1"])
        np.testing.assert_allclose(got, ref, rtol=1e-12)
    rev = pd.concat(frames[::-1], ignore_index=True)
    out_rev = simulate(pk_models[1], params, data=rev)
    for i in (3, 7, 11):
        a = out.loc[out["ID"] == i, "CP"].to_numpy()
        b = out_rev.loc[out_rev["ID"] == i, "CP"].to_numpy()
        assert np.array_equal(a, b, equal_nan=True)  # bit for bit


# ---------------------------------------------------------------------------
# time-varying parameters and resets
# ---------------------------------------------------------------------------
def piecewise_reference(
    obs_times: Sequence[float],
    doses: Sequence[tuple[float, float]],
    pieces: Sequence[tuple[float, dict[str, float]]],
    strict: bool,
) -> np.ndarray:
    """Central concentration of a 2-compartment model given IV boluses whose parameters
    are piecewise constant, by matrix exponentials of the compartment matrix
    (:func:`scipy.linalg.expm`) over each piece: amounts carry over a change, and the
    concentration is the central amount over the V1 in force.

    ``doses``: (time, amount) into the central compartment, none at an observation
    time; ``pieces``: (start, parameters), sorted, the first at 0 (nothing before);
    ``strict``: a change at an observation's time comes after it (NOCB), else before
    (LOCF).
    """
    from scipy.linalg import expm

    def matrix(p: dict[str, float]) -> np.ndarray:
        k10, k12, k21 = p["CL"] / p["V1"], p["Q2"] / p["V1"], p["Q2"] / p["V2"]
        return np.array([[-k10 - k12, k21], [k12, -k21]])

    def in_force(t: float, strict_: bool) -> dict[str, float]:
        return [q for start, q in pieces if (start < t if strict_ else start <= t)][-1]

    out = []
    for t_obs in obs_times:
        cuts = sorted({0.0, t_obs, *(t for t, _ in doses if t < t_obs),
                       *(s for s, _ in pieces if s < t_obs)})  # fmt: skip
        a = np.zeros(2)
        for k, c in enumerate(cuts):
            if k > 0:
                a = expm(matrix(in_force(cuts[k - 1], False)) * (c - cuts[k - 1])) @ a
            a[0] += sum(amt for td, amt in doses if td == c)
        out.append(a[0] / in_force(t_obs, strict)["V1"] if t_obs > 0 else a[0] / pieces[0][1]["V1"])
    return np.asarray(out)


#: a 2-compartment subject whose CL, then CL and V1, change between records
TV_BASE = {"Q2": 10.0, "V2": 100.0}
TV_RECORDS = [  # (time, evid, amt, CL, V1)
    (0.0, 1, 100.0, 5.0, 50.0),
    (2.0, 0, 0.0, 5.0, 50.0),
    (6.0, 0, 0.0, 10.0, 50.0),
    (9.0, 1, 50.0, 10.0, 50.0),
    (12.0, 0, 0.0, 10.0, 50.0),
    (20.0, 0, 0.0, 3.0, 60.0),
    (30.0, 0, 0.0, 3.0, 60.0),
]


@pytest.mark.parametrize(
    ("interpolation", "pieces"),
    [
        # NOCB: a record's values hold over the interval ending at it
        ("nocb", [(0.0, (5.0, 50.0)), (2.0, (10.0, 50.0)), (12.0, (3.0, 60.0))]),
        # LOCF: from the record on
        ("locf", [(0.0, (5.0, 50.0)), (6.0, (10.0, 50.0)), (20.0, (3.0, 60.0))]),
    ],
)
def test_time_varying_parameters_match_piecewise_solutions(
    interpolation: str, pieces: list, pk_models: dict[int, Model], record_error: Record
) -> None:
    data = pd.DataFrame(
        [{"ID": 1, "TIME": t, "EVID": e, "AMT": a, "CMT": 2, "DV": np.nan if e else 1.0 + t,
          "CL": cl, "V1": v1} for t, e, a, cl, v1 in TV_RECORDS]
    )  # fmt: skip
    out = simulate(pk_models[2], pd.DataFrame([TV_BASE]), data=data, interpolation=interpolation)
    obs = out[out["EVID"] == 0]
    ref = piecewise_reference(
        obs["TIME"].tolist(),
        [(t, a) for t, e, a, _, _ in TV_RECORDS if e == 1],
        [(s, {**TV_BASE, "CL": cl, "V1": v1}) for s, (cl, v1) in pieces],
        strict=interpolation == "nocb",
    )
    err = max_rel_err(obs["CP"].to_numpy(), ref)
    record_error(f"dataset: time-varying CL and V1 ({interpolation})", err, TOL)
    assert err <= TOL


def test_time_varying_parameter_in_an_ode_model(record_error: Record) -> None:
    """pk_mm_1cmt with linear elimination only and CL changing between records (NOCB)
    against the piecewise exponential of the one-compartment model."""
    model = build_model({"pk": "pk_mm_1cmt"})
    data = pd.DataFrame(
        {"ID": 1, "TIME": [0.0, 3.0, 8.0, 16.0], "EVID": [1, 0, 0, 0], "AMT": [100.0, 0, 0, 0],
         "CMT": 2, "DV": [np.nan, 1.0, 2.0, 3.0], "CL": [5.0, 5.0, 12.0, 2.0]}
    )  # fmt: skip
    out = simulate(
        model,
        pd.DataFrame([{"V1": 50.0, "VMAX": 0.0}]),
        data=data,
        tolerances=Tolerances(rtol=1e-10, atol=1e-12),
    )
    cp = out.loc[out["EVID"] == 0, "CP"].to_numpy()
    k = np.array([5.0, 12.0, 2.0]) / 50.0  # CL over (0,3], (3,8], (8,16]
    ref = 2.0 * np.exp(-np.cumsum(k * np.array([3.0, 5.0, 8.0])))
    err = max_rel_err(cp, ref)
    record_error("dataset: time-varying CL, ODE model (nocb)", err, TOL)
    assert err <= TOL


def test_resets_restart_from_initial_states(pk_models: dict[int, Model]) -> None:
    """EVID 3 empties every compartment and stops a running infusion; EVID 4 resets and
    doses, with time going back (a second period): no carry-over either way."""
    disp = cf_disp(2)
    data = pd.DataFrame(
        {
            "ID": 1,
            "TIME": [0.0, 2.0, 5.0, 6.0, 6.0, 8.0, 0.0, 3.0],
            "EVID": [1, 0, 3, 0, 1, 0, 4, 0],
            "AMT": [100.0, 0, 0, 0, 40.0, 0, 60.0, 0],
            "RATE": [10.0, 0, 0, 0, 0, 0, 0, 0],
            "CMT": 2,
            "DV": [np.nan, 1.0, np.nan, 2.0, np.nan, 3.0, np.nan, 4.0],
        }
    )
    out = simulate(pk_models[2], pd.DataFrame([DISPOSITION[2]]), data=data)
    cp = out.loc[out["EVID"] == 0, "CP"].to_numpy()
    ref = [
        conc_infusion(np.array([2.0]), 100.0, 10.0, **disp)[0],  # during the infusion
        0.0,  # after the reset at 5, before the dose at 6 (infusion stopped)
        conc_bolus(np.array([2.0]), 40.0, **disp)[0],
        conc_bolus(np.array([3.0]), 60.0, **disp)[0],  # second period, time back to 0
    ]
    np.testing.assert_allclose(cp, ref, rtol=1e-12, atol=0.0)
    assert (out["solver_status"] == "ok").all()


# ---------------------------------------------------------------------------
# steady state (SS 1, 2)
# ---------------------------------------------------------------------------
TAU = 12.0
#: within-interval observation times after an SS record at 0
T_SS = np.array([0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 11.9])


def ss_frame(dose_rows: list[dict], obs_times: Sequence[float]) -> pd.DataFrame:
    """Dose records, then observations (after the doses at their time)."""
    base = {"ID": 1, "EVID": 1, "DV": np.nan, "CMT": 2, "RATE": 0.0, "SS": 0, "II": 0.0, "ADDL": 0}
    recs = [{**base, **d} for d in dose_rows]
    recs += [
        {**base, "TIME": t, "EVID": 0, "AMT": 0.0, "DV": 1.0 + k} for k, t in enumerate(obs_times)
    ]
    out = pd.DataFrame(recs)
    return out.sort_values("TIME", kind="stable").reset_index(drop=True)


def superposed_past(
    t: np.ndarray, t0: float, route: str, dose: float, tau: float, n: int, **kw: float
) -> np.ndarray:
    """The doses at t0 - tau, ..., t0 - n tau by superposition: the past of a steady
    state, truncated where it no longer matters (a reference independent of the
    geometric series)."""
    duration = kw.pop("duration", None)
    extra = [duration] if duration is not None else []
    events: list[tuple] = [(t0 - k * tau, dose, *extra) for k in range(1, n + 1)]
    return conc_events(t, events, route, **kw)


@pytest.mark.parametrize("ncmt", NCMT)
def test_steady_state_bolus_oral_and_infusion(
    ncmt: int, pk_models: dict[int, Model], record_error: Record
) -> None:
    """SS=1 at time 0: the profile over the interval equals the textbook steady state
    (geometric series) for an IV bolus, an oral dose with lag and F, and an infusion
    shorter than the interval."""
    disp = cf_disp(ncmt)
    params = pd.DataFrame([{**DISPOSITION[ncmt], **ORAL}])
    cases = [
        ("bolus", {"TIME": 0.0, "AMT": 100.0, "SS": 1, "II": TAU},
         conc_steady_state_bolus(T_SS, 100.0, TAU, **disp)),
        ("oral", {"TIME": 0.0, "AMT": 100.0, "CMT": 1, "SS": 1, "II": TAU},
         conc_steady_state_oral(T_SS, 100.0, TAU, ka=ORAL["KA"], f=ORAL["F"],
                                tlag=ORAL["TLAG"], **disp)),
        ("infusion", {"TIME": 0.0, "AMT": 100.0, "RATE": 50.0, "SS": 1, "II": TAU},
         conc_steady_state_infusion(T_SS, 100.0, TAU, 2.0, **disp)),
    ]  # fmt: skip
    for name, dose, ref in cases:
        out = simulate(pk_models[ncmt], params, data=ss_frame([dose], T_SS))
        cp = out.loc[out["EVID"] == 0, "CP"].to_numpy()
        err = max_rel_err(cp, ref)
        record_error(f"dataset: SS=1 {name} ({ncmt} cmt)", err, TOL)
        assert err <= TOL, name


@pytest.mark.parametrize("duration", [12.0, 30.0, 50.0])
def test_steady_state_infusion_longer_than_the_interval(
    duration: float, pk_models: dict[int, Model], record_error: Record
) -> None:
    """An SS infusion lasting 1, 2.5 and about 4 intervals: the infusions still running
    at the record restart there. Reference: the record's infusion plus 60 earlier ones
    by superposition (terminal half-life about 29 h, so the omitted past is below 1e-12
    relative)."""
    disp = cf_disp(2)
    rate = 100.0 / duration
    t = np.array([0.0, 1.0, 6.0, 11.0, 12.0, 20.0, 30.0, 47.0, 70.0])
    data = ss_frame([{"TIME": 0.0, "AMT": 100.0, "RATE": rate, "SS": 1, "II": TAU}], t)
    out = simulate(pk_models[2], pd.DataFrame([DISPOSITION[2]]), data=data)
    cp = out.loc[out["EVID"] == 0, "CP"].to_numpy()
    ref = conc_infusion(t, 100.0, duration, **disp) + superposed_past(
        t, 0.0, "iv_infusion", 100.0, TAU, 120, duration=duration, **disp
    )
    err = max_rel_err(cp, ref)
    record_error(f"dataset: SS=1 infusion, duration {duration:g} h, II 12 h", err, TOL)
    assert err <= TOL


def test_constant_infusion_and_ss2_on_top(
    pk_models: dict[int, Model], record_error: Record
) -> None:
    """A constant infusion at steady state (SS=1, II=0, AMT=0) holds CP at RATE/CL;
    an SS=2 bolus pattern at 24 h adds its steady state to it; an SS=1 record at 100 h
    resets both, and its ADDL doses continue the pattern."""
    disp = cf_disp(2)
    cl = DISPOSITION[2]["CL"]
    t = np.array([0.0, 5.0, 24.0, 30.0, 40.0, 100.0, 103.0, 125.0])
    data = ss_frame(
        [
            {"TIME": 0.0, "AMT": 0.0, "RATE": 4.0, "SS": 1, "II": 0.0},
            {"TIME": 24.0, "AMT": 60.0, "SS": 2, "II": TAU},
            {"TIME": 100.0, "AMT": 80.0, "SS": 1, "II": TAU, "ADDL": 2},
        ],
        t,
    )
    out = simulate(pk_models[2], pd.DataFrame([DISPOSITION[2]]), data=data)
    cp = out.loc[out["EVID"] == 0, "CP"].to_numpy()
    ref = np.full(t.size, 4.0 / cl)
    on = (t >= 24.0) & (t < 100.0)
    ref[on] += conc_bolus(t[on] - 24.0, 60.0, **disp) + superposed_past(
        t[on], 24.0, "iv_bolus", 60.0, TAU, 80, **disp
    )
    late = t >= 100.0
    ref[late] = conc_steady_state_bolus((t[late] - 100.0) % TAU, 80.0, TAU, **disp)
    err = max_rel_err(cp, ref)
    record_error("dataset: constant infusion, SS=2 on top, SS=1 reset + ADDL", err, TOL)
    assert err <= TOL


# ---------------------------------------------------------------------------
# the convention of regimen studies: outputs at dose times before or after the dose
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pk_2cmt", "pk_mm_1cmt"])
def test_outputs_at_dose_before_or_after(name: str, record_error: Record) -> None:
    """``outputs_at_dose="after"`` takes an output at a dose time after the dose (the
    right limit of the closed form), ``"before"`` before it (the left limit); the
    exact exposure metrics do not depend on the choice."""
    model = build_model({"pk": name})
    disp = {**DISPOSITION[1 if name == "pk_mm_1cmt" else 2]}
    params = pd.DataFrame([{**disp, **({"VMAX": 0.0} if name == "pk_mm_1cmt" else {})}])
    regimen = {"route": "iv_bolus", "dose": 100, "interval": 12, "count": 4}
    times = np.array([0.0, 6.0, 12.0, 24.0, 30.0, 36.0, 50.0])
    tol = Tolerances(rtol=1e-10, atol=1e-12)
    cf = cf_disp(1 if name == "pk_mm_1cmt" else 2)
    doses = [(12.0 * k, 100.0) for k in range(4)]
    for mode, seen in (("before", lambda dt: dt > 0), ("after", lambda dt: dt >= 0)):
        out = simulate(model, params, regimen, times, outputs_at_dose=mode, tolerances=tol)
        ref = sum(
            np.where(seen(times - td), conc_bolus(times - td, a, **cf), 0.0) for td, a in doses
        )
        err = max_rel_err(out["CP"].to_numpy(), ref)
        record_error(f"outputs at dose times {mode} the dose ({name})", err, TOL)
        assert err <= TOL
    with pytest.raises(ValueError, match="outputs_at_dose"):
        simulate(model, params, regimen, times, outputs_at_dose="during")


def test_exposure_metrics_do_not_depend_on_the_convention(pk_models: dict[int, Model]) -> None:
    """cmax, tmax, auc and ctrough through run_kernel with the grid on the dose times:
    bit for bit the same before and after."""
    phases = regimen_phases({"route": "oral", "dose": 100, "interval": 24, "count": 5})
    grid = np.arange(0.0, 145.0, 6.0)
    res = {
        mode: run_kernel(
            pk_models[2],
            {k: np.array([v]) for k, v in {**DISPOSITION[2], **ORAL}.items()},
            n=1,
            events=event_table([phases]),
            arm=np.zeros(1, dtype=np.int64),
            dose_scale=np.ones((1, 3)),
            grid=grid,
            store_times=grid,
            store_outputs=("CP",),
            outputs_at_dose=mode,
        )
        for mode in ("before", "after")
    }
    assert np.array_equal(res["before"].pk, res["after"].pk)
    # stored values differ only where a grid point meets a dose and the output jumps
    # there (oral with lag: never), so here they agree too
    assert np.array_equal(res["before"].store, res["after"].store)


# ---------------------------------------------------------------------------
# the central compartment's dose terms: F2, ALAG2, modelled rate (R2) and duration (D2)
# ---------------------------------------------------------------------------
def test_central_bioavailability_lag_and_modelled_infusions(
    pk_models: dict[int, Model], record_error: Record
) -> None:
    """NONMEM's F2 scales a central dose (an infusion at a given rate then lasts
    F2 AMT / RATE), ALAG2 delays it; RATE -1 infuses F2 AMT at R2, RATE -2 over D2.
    Terms from the parameters table (by ID) and from dataset columns."""
    disp = cf_disp(2)
    t = np.array([0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 24.0])
    cases = [
        # (dose record, per-ID terms, reference)
        ({"AMT": 100.0, "RATE": 0.0}, {"F2": 0.6, "ALAG2": 1.5},
         conc_bolus(t - 1.5, 60.0, **disp)),
        ({"AMT": 100.0, "RATE": 20.0}, {"F2": 0.5},
         conc_infusion(t, 50.0, 2.5, **disp)),
        ({"AMT": 100.0, "RATE": -1.0}, {"R2": 25.0},
         conc_infusion(t, 100.0, 4.0, **disp)),
        ({"AMT": 100.0, "RATE": -2.0}, {"D2": 6.0, "F2": 0.8, "ALAG2": 0.5},
         conc_infusion(t - 0.5, 80.0, 6.0, **disp)),
    ]  # fmt: skip
    for k, (dose, terms, ref) in enumerate(cases):
        rows = [{"ID": 1, "TIME": 0.0, "EVID": 1, "CMT": 2, "DV": np.nan, **dose}]
        rows += [{"ID": 1, "TIME": x, "EVID": 0, "CMT": 0, "AMT": 0.0, "RATE": 0.0,
                  "DV": 1.0 + j} for j, x in enumerate(t)]  # fmt: skip
        data = pd.DataFrame(rows)
        params = pd.DataFrame([{"ID": 1, **DISPOSITION[2], **terms}])
        cp = simulate(pk_models[2], params, data=data).loc[lambda o: o["EVID"] == 0, "CP"]
        err = max_rel_err(cp.to_numpy(), ref)
        record_error(f"dataset: central F2, ALAG2, R2, D2 (case {k + 1})", err, TOL)
        assert err <= TOL, (k, dose, terms)
        # the same terms as dataset columns give the same values
        cols = simulate(pk_models[2], pd.DataFrame([DISPOSITION[2]]), data=data.assign(**terms))
        np.testing.assert_array_equal(cols.loc[cols["EVID"] == 0, "CP"].to_numpy(), cp.to_numpy())


def test_steady_state_of_a_modelled_duration(
    pk_models: dict[int, Model], record_error: Record
) -> None:
    """SS=1 with RATE -2: the steady state of infusions lasting D2."""
    disp = cf_disp(2)
    data = ss_frame([{"TIME": 0.0, "AMT": 100.0, "RATE": -2.0, "SS": 1, "II": TAU}], T_SS)
    params = pd.DataFrame([{"ID": 1, **DISPOSITION[2], "D2": 2.0}])
    cp = simulate(pk_models[2], params, data=data).loc[lambda o: o["EVID"] == 0, "CP"]
    err = max_rel_err(cp.to_numpy(), conc_steady_state_infusion(T_SS, 100.0, TAU, 2.0, **disp))
    record_error("dataset: SS=1 infusion over D2 (RATE -2)", err, TOL)
    assert err <= TOL


@pytest.mark.parametrize("name", ["pk_2cmt", "pk_mm_2cmt"])
def test_bolus_into_the_peripheral_compartment(name: str, record_error: Record) -> None:
    """CMT 3 (the peripheral compartment of the PK macro, the PERI state of the ODE
    model): a bolus there, with F3, against the matrix exponential of the
    two-compartment system started from that amount."""
    from scipy.linalg import expm

    model = build_model({"pk": name})
    p = {**DISPOSITION[2], **({"VMAX": 0.0} if name == "pk_mm_2cmt" else {})}
    t = np.array([0.5, 1.0, 3.0, 8.0, 24.0])
    data = pd.DataFrame(
        {"ID": 1, "TIME": [0.0, *t], "EVID": [1, 0, 0, 0, 0, 0], "CMT": [3, 0, 0, 0, 0, 0],
         "AMT": [100.0, 0, 0, 0, 0, 0], "DV": [np.nan, 1.0, 2.0, 3.0, 4.0, 5.0]}
    )  # fmt: skip
    tol = Tolerances(rtol=1e-10, atol=1e-12)
    out = simulate(model, pd.DataFrame([{**p, "F3": 0.5, "ID": 1}]), data=data, tolerances=tol)
    cl, v1, q, v2 = p["CL"], p["V1"], p["Q2"], p["V2"]
    a = np.array([[-(cl + q) / v1, q / v2], [q / v1, -q / v2]])
    ref = np.array([(expm(a * x) @ np.array([0.0, 50.0]))[0] / v1 for x in t])
    err = max_rel_err(out.loc[out["EVID"] == 0, "CP"].to_numpy(), ref)
    record_error(f"dataset: bolus into the peripheral compartment ({name})", err, TOL)
    assert err <= TOL
