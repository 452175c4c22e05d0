"""NONMEM PREDPP steady states and infusions of dataset records against an independent
reference: explicit superposition of the pattern's past doses (300 of them, the record's
own and its ``ADDL`` repeats), each propagated by the matrix exponential of the whole
compartment system (depot, central, peripherals; :func:`scipy.linalg.expm`), not by the
engine's modal decomposition or geometric series.

Covered: SS=1 and SS=2 oral doses whose lag ``TLAG`` is at least ``II`` (the doses still
pending at the record land after it), per-subject lags on either side of ``II``, a lag
``ALAG2`` on central boluses and infusions at steady state, steady states into a
peripheral compartment, infusions into the depot (the model's ``F`` and ``TLAG``) and a
peripheral compartment with and without SS (also longer than ``II``), and the trough
``ctrough`` of recorded doses. Errors are relative (:func:`max_rel_err`); tolerance 1e-6.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pytest
from scipy.linalg import expm

from vtrial import simulate
from vtrial.data.dataset import dataset_from_frame
from vtrial.data.records import dose_routes, record_events, record_span
from vtrial.engine.host import run_kernel
from vtrial.model.spec import Model

from .test_engine_pk import DISPOSITION, TOL, max_rel_err

Record = Callable[[str, float, float], None]

TAU = 12.0
N_PAST = 300  # past doses of a steady state in the reference (terminal half-life < 30 h)
KA = 1.2
F = 0.7


def system(p: dict[str, float]) -> np.ndarray:
    """Compartment matrix (depot, central, peripherals) of the parameters ``p``."""
    ncmt = 1 + ("Q2" in p) + ("Q3" in p)
    a = np.zeros((ncmt + 1, ncmt + 1))
    a[0, 0] = -p.get("KA", KA)
    a[1, 0] = p.get("KA", KA)
    a[1, 1] = -p["CL"] / p["V1"]
    for j, (q, v) in enumerate((("Q2", "V2"), ("Q3", "V3"))[: ncmt - 1], start=2):
        a[1, 1] -= p[q] / p["V1"]
        a[1, j] = p[q] / p[v]
        a[j, 1] = p[q] / p["V1"]
        a[j, j] = -p[q] / p[v]
    return a


def reference(t: np.ndarray, inputs: Sequence[tuple], p: dict[str, float]) -> np.ndarray:
    """Central concentration at ``t`` of the inputs ``(start, compartment (0-based),
    amount, duration)`` (duration 0: a bolus), by superposition of matrix exponentials;
    an input acts on the times strictly after its start."""
    a = system(p)
    ainv = np.linalg.inv(a)
    eye = np.eye(a.shape[0])
    out = np.zeros(t.size)
    for start, j, amt, dur in inputs:
        e = eye[:, j]
        for i, ti in enumerate(t):
            dt = ti - start
            if dt <= 0:
                continue
            if dur == 0:
                x = expm(a * dt) @ e * amt
            else:
                on = min(dt, dur)
                x = expm(a * (dt - on)) @ (ainv @ (expm(a * on) - eye) @ e) * (amt / dur)
            out[i] += x[1] / p["V1"]
    return out


def pattern(t0: float, j: int, amt: float, dur: float, lag: float, addl: int) -> list[tuple]:
    """The doses of an SS record at ``t0`` (every ``TAU``): ``N_PAST`` past ones, its own
    and ``addl`` repeats, each landing ``lag`` after its time."""
    return [(t0 + k * TAU + lag, j, amt, dur) for k in range(-N_PAST, addl + 1)]


def frame(doses: list[dict], obs: Sequence[float], ids: Sequence[int] = (1,)) -> pd.DataFrame:
    """Per ID the dose records, then the observations (after the doses at their time)."""
    base = {"EVID": 1, "DV": np.nan, "CMT": 2, "RATE": 0.0, "SS": 0, "II": 0.0, "ADDL": 0}
    rows = []
    for i in ids:
        recs = [{"ID": i, **base, **d} for d in doses]
        recs += [
            {"ID": i, **base, "TIME": x, "EVID": 0, "AMT": 0.0, "DV": 1.0 + k}
            for k, x in enumerate(obs)
        ]
        rows.append(pd.DataFrame(recs).sort_values("TIME", kind="stable"))
    return pd.concat(rows, ignore_index=True)


def observed(out: pd.DataFrame, i: int = 1) -> np.ndarray:
    return out.loc[(out["EVID"] == 0) & (out["ID"] == i), "CP"].to_numpy()


#: observation times over the first intervals after an SS record at 0 (none at a landing)
T_OBS = np.array([0.0, 0.4, 1.7, 3.3, 5.1, 8.6, 11.2, 12.9, 16.0, 20.5, 25.3, 31.1, 38.7, 47.2])


# ---------------------------------------------------------------------------
# oral steady state with TLAG >= II
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("ncmt", [1, 2, 3])
@pytest.mark.parametrize(("ss", "lag"), [(1, 1.5 * TAU), (1, 2.0 * TAU), (2, 1.5 * TAU)])
def test_oral_steady_state_with_lag_not_shorter_than_ii(
    ncmt: int, ss: int, lag: float, pk_models: dict[int, Model], record_error: Record
) -> None:
    """SS=1 (and SS=2 on top of an IV bolus given at 0) oral at 24 h, ADDL 2, lag 1.5 II
    and exactly 2 II: the doses of the pattern that landed before the record are its
    steady state, the pending ones land after it."""
    p = {**DISPOSITION[ncmt], "KA": KA, "F": F, "TLAG": lag}
    doses = [{"TIME": 24.0, "AMT": 100.0, "CMT": 1, "SS": ss, "II": TAU, "ADDL": 2}]
    t = np.unique(np.r_[T_OBS[T_OBS > 0] + (0.0 if ss == 2 else 24.0), 24.0 + T_OBS])
    # the pattern acts from the record on (its past is virtual)
    ref = np.where(t >= 24.0, reference(t, pattern(24.0, 0, F * 100.0, 0.0, lag, 2), p), 0.0)
    if ss == 2:  # a running state to add to
        doses.insert(0, {"TIME": 0.0, "AMT": 80.0, "CMT": 2})
        ref += reference(t, [(0.0, 1, 80.0, 0.0)], p)
    out = simulate(pk_models[ncmt], pd.DataFrame([p]), data=frame(doses, t))
    assert (out["solver_status"] == "ok").all()
    err = max_rel_err(observed(out), ref)
    record_error(f"SS={ss} oral, TLAG {lag / TAU:g} II ({ncmt} cmt)", err, TOL)
    assert err <= TOL


def test_per_subject_lags_on_either_side_of_ii(
    pk_models: dict[int, Model], record_error: Record
) -> None:
    """Random-like individual TLAG from a parameters table: shorter than II, equal,
    longer, and several intervals; each subject its own steady state."""
    lags = {1: 0.3 * TAU, 2: 0.97 * TAU, 3: TAU, 4: 1.37 * TAU, 5: 3.6 * TAU}
    params = pd.DataFrame(
        [{"ID": i, **DISPOSITION[2], "KA": KA, "F": F, "TLAG": lag} for i, lag in lags.items()]
    )
    doses = [{"TIME": 0.0, "AMT": 100.0, "CMT": 1, "SS": 1, "II": TAU, "ADDL": 3}]
    out = simulate(pk_models[2], params, data=frame(doses, T_OBS, ids=list(lags)))
    worst = 0.0
    for i, lag in lags.items():
        p = {**DISPOSITION[2], "KA": KA, "F": F}
        ref = reference(T_OBS, pattern(0.0, 0, F * 100.0, 0.0, lag, 3), p)
        worst = max(worst, max_rel_err(observed(out, i), ref))
    record_error("SS=1 oral, per-subject TLAG below and above II", worst, TOL)
    assert worst <= TOL


# ---------------------------------------------------------------------------
# ALAG2 on central doses at steady state; peripheral steady states
# ---------------------------------------------------------------------------
CENTRAL_CASES = {
    # name: (dose record, lag ALAG2, duration)
    "bolus, ALAG2 0.4 II": ({"AMT": 100.0}, 0.4 * TAU, 0.0),
    "bolus, ALAG2 1.5 II": ({"AMT": 100.0}, 1.5 * TAU, 0.0),
    "infusion 5 h, ALAG2 1.5 II": ({"AMT": 100.0, "RATE": 20.0}, 1.5 * TAU, 5.0),
    "infusion 30 h, ALAG2 7 h": ({"AMT": 90.0, "RATE": 3.0}, 7.0, 30.0),
    "infusion 30 h, ALAG2 20 h": ({"AMT": 90.0, "RATE": 3.0}, 20.0, 30.0),
    "infusion over D2 20 h, ALAG2 2 II": ({"AMT": 90.0, "RATE": -2.0}, 2.0 * TAU, 20.0),
}


@pytest.mark.parametrize("case", list(CENTRAL_CASES))
def test_central_steady_state_with_alag(
    case: str, pk_models: dict[int, Model], record_error: Record
) -> None:
    dose, lag, dur = CENTRAL_CASES[case]
    p = {**DISPOSITION[2], "KA": KA}
    terms = {"ALAG2": lag, "F2": 0.8, "D2": dur}
    record = {"TIME": 0.0, "CMT": 2, "SS": 1, "II": TAU, "ADDL": 2, **dose}
    t = T_OBS + 0.05  # off the landing times (a bolus jumps there)
    out = simulate(pk_models[2], pd.DataFrame([{**p, **terms}]), data=frame([record], t))
    # F2 scales the amount: an infusion at a given rate lasts 0.8 as long
    d = dur if dose.get("RATE", 0.0) < 0 else 0.8 * dur
    ref = reference(t, pattern(0.0, 1, 0.8 * dose["AMT"], d, lag, 2), p)
    err = max_rel_err(observed(out), ref)
    record_error(f"SS=1 central {case}", err, TOL)
    assert err <= TOL


@pytest.mark.parametrize(("ncmt", "cmt"), [(2, 3), (3, 3), (3, 4)])
def test_steady_state_into_a_peripheral_compartment(
    ncmt: int, cmt: int, pk_models: dict[int, Model], record_error: Record
) -> None:
    """SS=1 boluses (with F and ALAG of that compartment) and SS=1 infusions longer
    than II into a peripheral compartment; SS=2 adds a bolus pattern on top."""
    p = {**DISPOSITION[ncmt], "KA": KA}
    terms = {f"F{cmt}": 0.9, f"ALAG{cmt}": 3.0}
    t = T_OBS + 0.05
    doses = [
        {"TIME": 0.0, "AMT": 100.0, "CMT": cmt, "SS": 1, "II": TAU, "ADDL": 3},
        {"TIME": 0.0, "AMT": 60.0, "RATE": 2.0, "CMT": cmt, "SS": 2, "II": TAU, "ADDL": 3},
    ]
    out = simulate(pk_models[ncmt], pd.DataFrame([{**p, **terms}]), data=frame(doses, t))
    inputs = pattern(0.0, cmt - 1, 90.0, 0.0, 3.0, 3) + pattern(0.0, cmt - 1, 54.0, 27.0, 3.0, 3)
    err = max_rel_err(observed(out), reference(t, inputs, p))
    record_error(f"SS into peripheral CMT {cmt} ({ncmt} cmt)", err, TOL)
    assert err <= TOL


# ---------------------------------------------------------------------------
# infusions into the depot and a peripheral compartment
# ---------------------------------------------------------------------------
DEPOT = {"KA": KA, "F": F, "TLAG": 0.75}


@pytest.mark.parametrize(
    ("case", "record", "inputs"),
    [
        # F scales the duration of an infusion at a given rate (RATE > 0, RATE -1) ...
        ("RATE 25", {"AMT": 100.0, "RATE": 25.0}, [(0.75, 0, 70.0, 2.8)]),
        ("RATE -1 (R1 20)", {"AMT": 100.0, "RATE": -1.0}, [(0.75, 0, 70.0, 3.5)]),
        # ... and the rate of one over a modelled duration (RATE -2)
        ("RATE -2 (D1 3)", {"AMT": 100.0, "RATE": -2.0}, [(0.75, 0, 70.0, 3.0)]),
        ("ADDL 2, II 12", {"AMT": 100.0, "RATE": 10.0, "ADDL": 2, "II": 12.0},
         [(0.75 + 12.0 * k, 0, 70.0, 7.0) for k in range(3)]),
    ],
)  # fmt: skip
def test_infusion_into_the_depot(
    case: str,
    record: dict,
    inputs: list[tuple],
    pk_models: dict[int, Model],
    record_error: Record,
) -> None:
    p = {**DISPOSITION[2], **DEPOT}
    t = np.array([0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 9.0, 13.0, 20.0, 30.0, 48.0])
    params = pd.DataFrame([{**p, "R1": 20.0, "D1": 3.0}])
    out = simulate(pk_models[2], params, data=frame([{"TIME": 0.0, "CMT": 1, **record}], t))
    err = max_rel_err(observed(out), reference(t, inputs, p))
    record_error(f"infusion into the depot, {case}", err, TOL)
    assert err <= TOL


@pytest.mark.parametrize(
    ("case", "record", "lag", "dur"),
    [
        ("2 h", {"AMT": 100.0, "RATE": 50.0}, 0.75, 2.0 * F),
        ("30 h (F: 21 h)", {"AMT": 100.0, "RATE": 100.0 / 30.0}, 0.75, 30.0 * F),
        ("30 h, TLAG 1.5 II", {"AMT": 100.0, "RATE": 100.0 / 30.0}, 1.5 * TAU, 30.0 * F),
        ("over D1 20 h, TLAG 15 h", {"AMT": 100.0, "RATE": -2.0}, 15.0, 20.0),
    ],
)
def test_steady_state_infusion_into_the_depot(
    case: str,
    record: dict,
    lag: float,
    dur: float,
    pk_models: dict[int, Model],
    record_error: Record,
) -> None:
    """SS=1 infusions into the depot: the model's TLAG delays them, its F scales their
    duration (or, over a modelled duration, their rate); the ones still running at the
    record restart there, the pending ones start later."""
    p = {**DISPOSITION[2], **DEPOT, "TLAG": lag}
    rec = {"TIME": 0.0, "CMT": 1, "SS": 1, "II": TAU, "ADDL": 2, **record}
    out = simulate(pk_models[2], pd.DataFrame([{**p, "D1": 20.0}]), data=frame([rec], T_OBS))
    err = max_rel_err(observed(out), reference(T_OBS, pattern(0.0, 0, 70.0, dur, lag, 2), p))
    record_error(f"SS=1 infusion into the depot, {case}", err, TOL)
    assert err <= TOL


@pytest.mark.parametrize("ncmt", [2, 3])
def test_infusion_into_a_peripheral_compartment(
    ncmt: int, pk_models: dict[int, Model], record_error: Record
) -> None:
    """A single infusion into CMT 3 (with ALAG3) next to a central one (their rates
    apart), then a constant infusion at steady state into CMT 3 (II 0, SS 1)."""
    p = {**DISPOSITION[ncmt], "KA": KA}
    t = np.array([0.5, 1.0, 2.5, 4.0, 7.0, 12.0, 24.0, 47.0])
    doses = [
        {"TIME": 0.0, "AMT": 100.0, "RATE": 25.0, "CMT": 3},
        {"TIME": 1.0, "AMT": 50.0, "RATE": 10.0, "CMT": 2},
    ]
    params = pd.DataFrame([{**p, "ALAG3": 0.5}])
    out = simulate(pk_models[ncmt], params, data=frame(doses, t))
    ref = reference(t, [(0.5, 2, 100.0, 4.0), (1.0, 1, 50.0, 5.0)], p)
    err = max_rel_err(observed(out), ref)
    record_error(f"infusion into peripheral CMT 3 ({ncmt} cmt)", err, TOL)
    assert err <= TOL
    # a constant infusion at steady state into CMT 3: the amounts where A x + r e3 = 0
    const = [{"TIME": 0.0, "AMT": 0.0, "RATE": 4.0, "CMT": 3, "SS": 1, "II": 0.0}]
    out = simulate(pk_models[ncmt], pd.DataFrame([p]), data=frame(const, t))
    a = system(p)
    x = np.linalg.solve(a, -4.0 * np.eye(a.shape[0])[:, 2])
    err = max_rel_err(observed(out), np.full(t.size, x[1] / p["V1"]))
    record_error(f"constant infusion at steady state into CMT 3 ({ncmt} cmt)", err, TOL)
    assert err <= TOL


# ---------------------------------------------------------------------------
# ctrough of recorded doses
# ---------------------------------------------------------------------------
def test_ctrough_of_recorded_doses(pk_models: dict[int, Model], record_error: Record) -> None:
    """``ctrough`` is the concentration just before each subject's last dose (its
    administration, before its lag): oral doses with TLAG and a last dose implied by
    ADDL; boluses with a sample at the last dose's time after it; an SS record whose
    dose is the last (its steady-state trough)."""
    p = {**DISPOSITION[2], **DEPOT}
    subjects = {
        1: [{"TIME": 0.0, "AMT": 100.0, "CMT": 1, "ADDL": 3, "II": TAU}],
        2: [{"TIME": 0.0, "AMT": 100.0, "CMT": 2}, {"TIME": 30.0, "AMT": 50.0, "CMT": 2}],
        3: [{"TIME": 5.0, "AMT": 100.0, "CMT": 2, "SS": 1, "II": TAU}],
    }
    frames = [frame(d, [30.0, 50.0], ids=[i]) for i, d in subjects.items()]
    data = pd.concat(frames, ignore_index=True)
    ds = dataset_from_frame(data)
    ev = record_events(ds, dose_routes(pk_models[2]))
    n = ev.row_subject.size
    res = run_kernel(
        pk_models[2],
        {k: np.full(n, v) for k, v in p.items()},
        n=n,
        events=ev.table,
        arm=np.arange(n, dtype=np.int64),
        dose_scale=np.ones((n, 3)),
        grid=np.array(record_span(ds.records["TIME"].to_numpy(dtype=np.float64))),
        n_obs=ev.n_obs,
    )
    ctrough = res.pk[:, 3]
    t_last = np.array([36.0, 30.0, 5.0])
    ref = np.array(
        [
            reference(t_last[:1], [(12.0 * k + 0.75, 0, F * 100.0, 0.0) for k in range(3)], p)[0],
            reference(t_last[1:2], [(0.0, 1, 100.0, 0.0)], p)[0],
            reference(t_last[2:], pattern(5.0, 1, 100.0, 0.0, 0.0, -1), p)[0],
        ]
    )
    err = max_rel_err(ctrough, ref)
    record_error("ctrough of recorded doses", err, TOL)
    assert err <= TOL
