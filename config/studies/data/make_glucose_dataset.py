"""Write ``glucose_titration.csv``: a synthetic dataset of an oral antidiabetic titrated
to fasting plasma glucose, in NONMEM's layout, the data of
``config/studies/glucose_titration_twin.yaml``.

Scenario. 30 adults with type 2 diabetes start an oral glucose-lowering drug at 500 mg
once daily and are followed for 12 weeks. Time 0 is the baseline visit (07:30, fasting);
the drug is taken every morning at 08:00 (``TIME`` 0.5, 24.5, ... h, ``CMT`` 1: the oral
depot). Fasting plasma glucose (``DV``, mmol/L) is measured at each visit, every 2 weeks
(0, 336, ..., 2016 h, 07:30, before that day's dose), together with the Cockcroft-Gault
creatinine clearance (``CRCL``, mL/min; the patient's weight ``WT``, kg, is constant).
At the visits of weeks 2 to 10 the dose is titrated from the measured FPG, from that
visit's dose on: above 7 mmol/L one level up, below 4.5 mmol/L one level down (levels
250, 500, 1000, 1500, 2000 mg); with a CRCL below 45 mL/min the dose is capped at
1000 mg (as renally cleared antidiabetics are labelled). The week 12 visit only
measures. Each patient misses some doses (a missing-dose probability of 0-15 % drawn
per patient: the doses it missed are not recorded). 5 patients have an intercurrent
illness with an acute fall of renal function: their CRCL drops to 40-60 % of baseline
at one visit of weeks 4-8, then recovers half of the loss by the next visit; the
others' CRCL drifts by a few percent from visit to visit. Runs of equal doses every
24 h are one record with ``ADDL``/``II``.

The model is the one of ``config/studies/antidiabetic_titration.yaml``: linear
one-compartment PK with first-order absorption (Gibaldi & Perrier, Pharmacokinetics,
2nd ed., 1982; NONMEM ADVAN2), clearance proportional to ``(CRCL / 100) ** 0.75`` and
volume to ``WT / 90``, and FPG following an indirect response model in which the drug
inhibits glucose production (idr1: Dayneka, Garg & Jusko, J Pharmacokinet Biopharm
1993;21:457-78): CL 25 L/h, V1 300 L (per 90 kg), KA 0.8 1/h, F 0.55, R0 9.5 mmol/L,
KOUT 0.01 1/h, IMAX 0.6, IC50 1.5 mg/L. Each patient's CL, R0 and IC50 are drawn
log-normal (variances 0.09, 0.02, 0.25, the study's ``model.iiv``) from one seeded
generator; the records are
simulated by ``vtrial.simulate(model, data=...)`` with CL following CRCL from visit to
visit (last observation carried forward, rxode2's convention, as the study does: every
record carries the CRCL of the last visit, which holds from that visit on, so an update
of the twin writes its doses with the CRCL known when they are given); each FPG gets a
7 % proportional residual error (assay and day-to-day variation, the study's
``model.residual_error``) and is rounded to 0.1 mmol/L, as a laboratory reports it. The
titration decisions read those values, so the dataset is simulated once per decision
(the script checks that a decision changes no FPG measured before it). The typical
values are those of the antidiabetic study; every patient, dose and value is invented.
The script is deterministic: it writes the same bytes on every run
(``tests/run/test_glucose_twin.py`` checks the shipped files).

It also writes ``glucose_titration_update.csv``, the records of patient 7's next two
weeks, for ``vtrial twin update`` (the yaml's header shows the commands): 2000 mg every
morning from 2016.5 h (the dose ``vtrial twin recommend`` gives the patient) and the
week 14 visit (2352 h) with its FPG and CRCL, simulated the same way from the patient's
own parameters, with draws of a generator of their own (the dataset does not change).

Usage (from the repository root, with vtrial installed, e.g. ``.venv/bin/python``)::

    python config/studies/data/make_glucose_dataset.py          # writes the shipped files
    python config/studies/data/make_glucose_dataset.py DIR      # into folder DIR instead
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import vtrial

#: the shipped dataset and update, next to this script
OUTPUT = Path(__file__).resolve().parent / "glucose_titration.csv"
UPDATE = OUTPUT.with_name("glucose_titration_update.csv")
SEED = 20261215
N_SUBJECTS = 30
N_RENAL = 5  # an acute fall of renal function at one visit of weeks 4-8

# typical values and variability: the same as config/studies/glucose_titration_twin.yaml
TYPICAL = {"CL": 25.0, "V1": 300.0, "KA": 0.8, "F": 0.55}  # L/h at CRCL 100; L per 90 kg
TYPICAL.update({"R0": 9.5, "KOUT": 0.01, "IMAX": 0.6, "IC50": 1.5})  # mmol/L, 1/h, -, mg/L
OMEGA = {"CL": 0.09, "R0": 0.02, "IC50": 0.25}  # variances of the log-normal ETAs
PROPORTIONAL = 0.07  # residual error of FPG (CV)

VISITS = [336.0 * k for k in range(7)]  # weeks 0, 2, ..., 12 (07:30)
DECISIONS = VISITS[1:-1]  # weeks 2-10 titrate; week 12 only measures
DOSE_TIMES = [24.0 * d + 0.5 for d in range(84)]  # 08:00 every day, the last at 1992.5 h
LEVELS = [250.0, 500.0, 1000.0, 1500.0, 2000.0]  # mg once daily
START_LEVEL = 1  # 500 mg
LOW, HIGH = 4.5, 7.0  # FPG target (mmol/L)
RENAL_CAP_CRCL, RENAL_CAP_DOSE = 45.0, 1000.0  # below this CRCL at most this dose
UPDATE_ID, UPDATE_DOSE = 7, 2000.0  # the update: patient 7 on 2000 mg for 2 more weeks
UPDATE_VISIT = 2352.0  # week 14
COLUMNS = ["ID", "TIME", "EVID", "AMT", "CMT", "II", "ADDL", "DV", "MDV", "WT", "CRCL"]


@dataclass
class Patient:
    """One patient's weight, CRCL at each visit, random effects, doses and errors."""

    id: int
    weight: float
    crcl: list[float]  # at each visit
    eta: dict[str, float]
    p_miss: float
    taken: list[bool]  # each of DOSE_TIMES
    eps: list[float]  # residual N(0, 1) of each visit's FPG
    doses: dict[float, float] = field(default_factory=dict)  # time -> mg (taken doses)
    levels: list[int] = field(default_factory=list)  # dose level from each visit on

    def crcl_at(self, t: float) -> float:
        """The CRCL measured at the visit at or before ``t``."""
        return self.crcl[sum(v <= t for v in VISITS) - 1]


def draw_patients(rng: np.random.Generator) -> list[Patient]:
    """Weights, CRCL histories, random effects, adherence and residual errors, in one
    fixed order of draws; every patient starts at 500 mg."""
    n, k = N_SUBJECTS, len(VISITS)
    weight = np.clip(90.0 * np.exp(0.18 * rng.standard_normal(n)), 55.0, 160.0)
    crcl0 = np.clip(90.0 * np.exp(0.3 * rng.standard_normal(n)), 35.0, 160.0)
    drift = np.exp(np.cumsum(0.04 * rng.standard_normal((n, k - 1)), axis=1))
    renal = set(rng.choice(n, size=N_RENAL, replace=False).tolist())
    drop_at = rng.integers(2, 5, size=n)  # the visit (weeks 4, 6, 8) that measures the fall
    depth = rng.uniform(0.4, 0.6, size=n)  # CRCL at the fall / baseline
    etas = {p: np.sqrt(w) * rng.standard_normal(n) for p, w in OMEGA.items()}
    p_miss = rng.uniform(0.0, 0.15, size=n)
    miss = rng.random((n, len(DOSE_TIMES)))
    eps = rng.standard_normal((n, k))
    patients = []
    for i in range(n):
        factor = np.r_[1.0, drift[i]]
        if i in renal:
            j = int(drop_at[i])
            factor[j] *= depth[i]
            factor[j + 1 :] *= (1.0 + depth[i]) / 2.0
        crcl = [float(np.clip(np.round(crcl0[i] * f), 10.0, 200.0)) for f in factor]
        taken = (miss[i] >= p_miss[i]).tolist()
        taken[0] = True  # the first dose is taken at the clinic
        p = Patient(
            id=i + 1,
            weight=round(float(weight[i]), 1),
            crcl=crcl,
            eta={name: float(v[i]) for name, v in etas.items()},
            p_miss=float(p_miss[i]),
            taken=taken,
            eps=eps[i].tolist(),
        )
        set_level(p, 0.0, START_LEVEL)
        patients.append(p)
    return patients


def set_level(p: Patient, start: float, level: int) -> None:
    """Dose level ``level`` for every taken dose from ``start`` on."""
    p.levels.append(level)
    for t, taken in zip(DOSE_TIMES, p.taken, strict=True):
        if t >= start and taken:
            p.doses[t] = LEVELS[level]


def titrate(p: Patient, fpg: float, visit: float) -> None:
    """The decision of the visit at ``visit`` (h) from the FPG measured there."""
    level = p.levels[-1]
    if fpg > HIGH:
        level = min(level + 1, len(LEVELS) - 1)
    elif fpg < LOW:
        level = max(level - 1, 0)
    while p.crcl_at(visit) < RENAL_CAP_CRCL and LEVELS[level] > RENAL_CAP_DOSE:
        level -= 1
    set_level(p, visit, level)


def _runs(doses: dict[float, float]) -> list[tuple[float, float, float, int]]:
    """Doses as (time, mg, II, ADDL): runs of equal doses every 24 h."""
    times = sorted(doses)
    out: list[tuple[float, float, float, int]] = []
    j = 0
    while j < len(times):
        t0, amt = times[j], doses[times[j]]
        k = j + 1
        while k < len(times) and doses[times[k]] == amt and times[k] - times[k - 1] == 24.0:
            k += 1
        out.append((t0, amt, 24.0 if k - j > 1 else 0.0, k - j - 1))
        j = k
    return out


def records(patients: list[Patient]) -> pd.DataFrame:
    """The dataset's records (numeric; ``DV`` NaN) with each record's CL; every record
    carries the CRCL of the last visit at or before it."""
    rows = []
    for p in patients:
        events: list[tuple[float, int, dict[str, float]]] = []
        for k, t in enumerate(VISITS):
            events.append((t, 0, {"EVID": 0, "VISIT": k}))
        for t, amt, ii, addl in _runs(p.doses):
            events.append((t, 1, {"EVID": 1, "AMT": amt, "CMT": 1, "II": ii, "ADDL": addl}))
        for t, _, items in sorted(events, key=lambda e: (e[0], e[1])):
            row = {"ID": p.id, "TIME": t, "AMT": 0.0, "CMT": 0, "II": 0.0, "ADDL": 0}
            row["VISIT"] = -1
            row.update(items)
            crcl = p.crcl_at(t)  # the last measured (LOCF): it holds from its visit on
            row.update({"MDV": int(row["EVID"] != 0), "WT": p.weight, "CRCL": crcl})
            row["CL"] = TYPICAL["CL"] * (crcl / 100.0) ** 0.75 * np.exp(p.eta["CL"])
            rows.append(row)
    return pd.DataFrame(rows)


def observe(patients: list[Patient]) -> pd.DataFrame:
    """Simulate the records as they stand; ``DV`` filled on the visits."""
    return observe_records(patients, records(patients))


def observe_records(patients: list[Patient], data: pd.DataFrame) -> pd.DataFrame:
    """Simulate the records ``data`` of ``patients``; ``DV`` filled on the visits."""
    model = vtrial.build_model(
        {"pk": "pk_1cmt", "components": {"glucose": {"model": "idr1", "links": {"DRUG": "CP"}}}}
    )
    table = pd.DataFrame(
        {
            "ID": [p.id for p in patients],
            "V1": [TYPICAL["V1"] * p.weight / 90.0 for p in patients],
            "KA": TYPICAL["KA"],
            "F": TYPICAL["F"],
            "R0": [TYPICAL["R0"] * np.exp(p.eta["R0"]) for p in patients],
            "KOUT": TYPICAL["KOUT"],
            "IMAX": TYPICAL["IMAX"],
            "IC50": [TYPICAL["IC50"] * np.exp(p.eta["IC50"]) for p in patients],
        }
    )
    sim = vtrial.simulate(
        model, data=data.drop(columns=["VISIT"]), parameters=table, interpolation="locf"
    )
    if not (sim["solver_status"] == "ok").all():
        raise RuntimeError("a simulation failed")
    ipred = sim["RESPONSE"].to_numpy()
    by_id = {p.id: p for p in patients}
    eps = np.array(
        [by_id[i].eps[v] if v >= 0 else 0.0 for i, v in zip(data["ID"], data["VISIT"], strict=True)]
    )
    fpg = np.round(ipred * (1.0 + PROPORTIONAL * eps), 1)
    data["DV"] = np.where(data["VISIT"] >= 0, fpg, np.nan)
    return data


def fpg(data: pd.DataFrame, pid: int, visit: int) -> float:
    """FPG of patient ``pid`` at visit ``visit``."""
    at = (data["ID"] == pid) & (data["VISIT"] == visit)
    return float(data.loc[at, "DV"].iloc[0])


def make_files() -> tuple[str, str]:
    """The dataset and the update as CSV text (``.`` for the items a record lacks)."""
    rng = np.random.default_rng(SEED)
    patients = draw_patients(rng)
    seen: list[pd.DataFrame] = []
    for k, visit in enumerate(DECISIONS, start=1):
        data = observe(patients)
        seen.append(data)
        for p in patients:
            titrate(p, fpg(data, p.id, k), visit)
    data = observe(patients)
    for k, earlier in enumerate(seen, start=1):  # a decision changes doses after its FPG
        for p in patients:
            if any(fpg(earlier, p.id, v) != fpg(data, p.id, v) for v in range(k + 1)):
                raise RuntimeError(f"ID {p.id}: an FPG before visit {k} changed with later doses")
    dv = data["DV"].dropna()
    if not (dv > 0).all():
        raise RuntimeError(f"a non-positive FPG: {dv.min()}")
    return _csv(data), _csv(update(patients[UPDATE_ID - 1]))


def update(p: Patient) -> pd.DataFrame:
    """Patient ``p``'s next two weeks (see the module docstring): its records up to the
    dataset's end, the new doses and the week 14 visit, simulated; the new records."""
    rng = np.random.default_rng([SEED, p.id])
    crcl = float(np.clip(np.round(p.crcl[-1] * np.exp(0.04 * rng.standard_normal())), 10, 200))
    eps = float(rng.standard_normal())
    before = records([p])
    for d in range(14):
        p.doses[VISITS[-1] + 0.5 + 24.0 * d] = UPDATE_DOSE
    p.eps.append(eps)
    data = records([p])  # the new doses carry the last visit's CRCL (LOCF)
    n_before = len(before)
    if not data.iloc[:n_before].equals(before):
        raise RuntimeError(f"ID {p.id}: the new doses change the recorded ones")
    visit = data.iloc[[-1]].assign(TIME=UPDATE_VISIT, EVID=0, AMT=0.0, CMT=0, II=0.0, ADDL=0)
    cl = TYPICAL["CL"] * (crcl / 100.0) ** 0.75 * np.exp(p.eta["CL"])
    visit = visit.assign(MDV=0, VISIT=len(VISITS), CRCL=crcl, CL=cl)
    data = observe_records([p], pd.concat([data, visit], ignore_index=True))
    return data.iloc[n_before:].reset_index(drop=True)


def _csv(data: pd.DataFrame) -> str:
    lines = [",".join(COLUMNS)]
    for r in data.itertuples(index=False):
        dose = r.EVID == 1
        cells = [
            str(r.ID),
            f"{r.TIME:g}",
            str(r.EVID),
            f"{r.AMT:g}" if dose else ".",
            str(r.CMT) if dose else ".",
            f"{r.II:g}" if dose else ".",
            str(r.ADDL) if dose else ".",
            f"{r.DV:.1f}" if r.EVID == 0 else ".",
            str(r.MDV),
            f"{r.WT:.1f}",
            f"{r.CRCL:g}",
        ]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0]) if args else OUTPUT.parent
    for name, text in zip((OUTPUT.name, UPDATE.name), make_files(), strict=True):
        out = folder / name
        out.write_bytes(text.encode("ascii"))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
