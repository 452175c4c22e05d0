"""Write ``vancomycin_tdm.csv``: a synthetic vancomycin therapeutic-drug-monitoring
dataset in NONMEM's layout, the data of ``config/studies/vancomycin_tdm.yaml``.

Scenario. 40 hospitalised adults receive intravenous vancomycin for 7 days, as 1-hour
infusions per gram (``RATE`` 1000 mg/h, ``CMT`` 2) every 12 h. IDs 1-20 were treated
under the ward's former protocol (``ARM`` ``standard``: the maintenance dose, 15 mg/kg
rounded to 250 mg within 1000-2000 mg, from the first dose on), IDs 21-40 after the
protocol added a loading dose (``ARM`` ``loading``: 25 mg/kg, 1000-2500 mg, then the
maintenance dose from 12 h). Weight (``WT``, kg) and Cockcroft-Gault creatinine
clearance (``CRCL``, mL/min) are measured at baseline and every morning (``EVID`` 2
records at 22, 46, ..., 142 h): weight drifts with the fluid balance, and 6 patients
have an acute kidney injury from day 3 (CRCL falling to 30-50 % of baseline by day 4,
then partly recovering, with a fluid gain of 2-5 kg). Levels are drawn as a ward draws
them, at actual times (h, 2 decimals): a trough before the 48 h dose, a peak 1 h after
the end of that infusion for about a third of the patients, troughs before the 96 h
and the 144 h doses. Each of the first two troughs adjusts the dose as a
trough-guided protocol says, from the next dose but one (60 h, 108 h): above 25 mg/L
that dose is held and the dose lowered by 500 mg, above 20 mg/L lowered by 250 mg,
below 10 mg/L raised by 250 mg; after the second trough, a patient above 20 mg/L whose
CRCL is below 50 mL/min goes to every 24 h instead. 6 patients miss one dose (lost IV
access). Runs of equal doses at equal intervals are one record with ``ADDL``/``II``.

The concentrations are vtrial's own: each patient's CL, V1 and V2 are drawn
(log-normal, from one seeded generator) around the typical values of the study file
(two-compartment model: CL 4.6 L/h at CRCL 80 mL/min, exponent 0.75; V1 30 L per
70 kg; Q2 6 L/h; V2 40 L), the records are simulated by
``vtrial.simulate(model, data=...)`` with CL and V1 following CRCL and WT from record
to record (NONMEM's next-observation-carried-backward, as the study does), and each
level gets a combined residual error (15 % proportional and 1 mg/L additive, the
variances adding, as in the study), is rounded to 0.01 mg/L and must lie above the
assay's LLOQ of 0.5 mg/L. The dose decisions read those levels, so the dataset is
simulated three times (the script checks that a decision changes no level before it).
All numbers are invented. The script is deterministic: it writes the same bytes on
every run (``tests/study/test_vancomycin_tdm_example.py`` checks the shipped file).

Usage (from the repository root, with vtrial installed, e.g. ``.venv/bin/python``)::

    python config/studies/data/make_tdm_dataset.py            # writes the shipped file
    python config/studies/data/make_tdm_dataset.py out.csv    # somewhere else
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import vtrial

#: the shipped dataset, next to this script
OUTPUT = Path(__file__).resolve().parent / "vancomycin_tdm.csv"
SEED = 20261201
N_SUBJECTS = 40
N_AKI = 6  # acute kidney injury from day 2
N_MISSED = 6  # one dose missed each

# typical values and variability: the same as config/studies/vancomycin_tdm.yaml
CL, V1, Q2, V2 = 4.6, 30.0, 6.0, 40.0  # L/h at CRCL 80 mL/min; L per 70 kg; L/h; L
OMEGA = {"CL": 0.09, "V1": 0.04, "V2": 0.09}  # variances of the log-normal ETAs
PROPORTIONAL, ADDITIVE = 0.15, 1.0  # residual error: CV, SD in mg/L
LLOQ = 0.5  # mg/L (LC-MS/MS assay): every level must be above it, or the script stops

RATE = 1000.0  # mg/h: 1 h per gram
DAY_HOURS = 24.0
LAB_TIMES = [24.0 * k - 2.0 for k in range(1, 7)]  # 06:00 labs when t = 0 is 08:00
AKI_SHAPE = [0.0, 0.45, 0.85, 1.0, 0.8, 0.55]  # share of the CRCL loss at each lab
AKI_FLUID = [0.0, 0.3, 0.7, 1.0, 0.9, 0.7]  # share of the fluid gain at each lab
DOSE_TIMES = [12.0 * k for k in range(14)]  # 0 ... 156 h
LEVELS = ("trough1", "peak", "trough2", "trough3")
COLUMNS = ["ID", "TIME", "EVID", "AMT", "CMT", "RATE", "II", "ADDL", "DV", "MDV"]
COLUMNS += ["WT", "CRCL", "ARM"]


@dataclass
class Patient:
    """One patient's covariates, random effects, dose plan and sampling times."""

    id: int
    arm: str
    weights: list[float]  # baseline, then at each lab time
    crcl: list[float]
    eta: dict[str, float]
    doses: dict[float, float] = field(default_factory=dict)  # time -> mg
    levels: dict[str, float] = field(default_factory=dict)  # level -> time
    eps: dict[str, float] = field(default_factory=dict)  # level -> residual N(0, 1)

    def covariates_at(self, t: float) -> tuple[float, float]:
        """WT and CRCL in force at ``t`` (the last measurement at or before it)."""
        k = sum(lab <= t for lab in LAB_TIMES)
        return self.weights[k], self.crcl[k]


def _round_dose(mg: float, low: float, high: float) -> float:
    return float(np.clip(250.0 * np.round(mg / 250.0), low, high))


def draw_patients(rng: np.random.Generator) -> list[Patient]:
    """Covariate histories, random effects, initial dose plans and sampling times, in
    one fixed order of draws."""
    n = N_SUBJECTS
    wt0 = np.clip(78.0 * np.exp(0.2 * rng.standard_normal(n)), 45.0, 150.0)
    crcl0 = np.clip(85.0 * np.exp(0.33 * rng.standard_normal(n)), 35.0, 150.0)
    aki = set(rng.choice(n, size=N_AKI, replace=False).tolist())
    depth = rng.uniform(0.3, 0.5, size=n)  # CRCL at its lowest / baseline
    gain = rng.uniform(2.0, 5.0, size=n)  # kg of fluid gained at most
    wt_steps = 0.4 * rng.standard_normal((n, len(LAB_TIMES)))
    crcl_steps = 0.05 * rng.standard_normal((n, len(LAB_TIMES)))
    etas = {k: np.sqrt(w) * rng.standard_normal(n) for k, w in OMEGA.items()}
    missed = set(rng.choice(n, size=N_MISSED, replace=False).tolist())
    missed_time = rng.choice([12.0, 24.0, 36.0, 72.0, 84.0, 120.0, 132.0], size=n)
    with_peak = rng.random(n) < 0.35
    early = rng.uniform(0.25, 1.0, size=(n, 3))  # trough drawn this long before the dose
    late = rng.uniform(-0.1, 0.25, size=n)  # peak drawn this long after 1 h post-infusion
    eps = rng.standard_normal((n, len(LEVELS)))
    patients = []
    for i in range(n):
        walk_wt = np.cumsum(wt_steps[i])
        walk_crcl = np.exp(np.cumsum(crcl_steps[i]))
        weights, crcls = [round(float(wt0[i]), 1)], [float(np.round(crcl0[i]))]
        for k in range(len(LAB_TIMES)):
            w = wt0[i] + walk_wt[k]
            c = crcl0[i] * walk_crcl[k]
            if i in aki:
                w += gain[i] * AKI_FLUID[k]
                c *= 1.0 - (1.0 - depth[i]) * AKI_SHAPE[k]
            weights.append(round(float(w), 1))
            crcls.append(float(np.clip(np.round(c), 10.0, 200.0)))
        arm = "standard" if i < n // 2 else "loading"
        p = Patient(i + 1, arm, weights, crcls, {k: float(v[i]) for k, v in etas.items()})
        maintenance = _round_dose(15.0 * wt0[i], 1000.0, 2000.0)
        p.doses = dict.fromkeys(DOSE_TIMES, maintenance)
        if arm == "loading":
            p.doses[0.0] = _round_dose(25.0 * wt0[i], 1000.0, 2500.0)
        if i in missed:
            del p.doses[float(missed_time[i])]
        for k, at in enumerate((48.0, 96.0, 144.0)):
            p.levels[f"trough{k + 1}"] = round(at - float(early[i, k]), 2)
        if with_peak[i]:
            end = 48.0 + p.doses[48.0] / RATE
            p.levels["peak"] = round(end + 1.0 + float(late[i]), 2)
        p.eps = {name: float(eps[i, j]) for j, name in enumerate(LEVELS)}
        patients.append(p)
    return patients


def _runs(doses: dict[float, float]) -> list[tuple[float, float, float, int]]:
    """Doses as (time, mg, II, ADDL): runs of equal doses at equal intervals."""
    times = sorted(doses)
    out: list[tuple[float, float, float, int]] = []
    j = 0
    while j < len(times):
        t0, amt = times[j], doses[times[j]]
        k = j + 1
        ii = times[k] - t0 if k < len(times) and doses[times[k]] == amt else 0.0
        while k < len(times) and doses[times[k]] == amt and times[k] - times[k - 1] == ii:
            k += 1
        out.append((t0, amt, ii if k - j > 1 else 0.0, k - j - 1))
        j = k
    return out


def records(patients: list[Patient]) -> pd.DataFrame:
    """The dataset's records (numeric; ``DV`` NaN) with each record's CL and V1."""
    rows = []
    for p in patients:
        events: list[tuple[float, int, dict[str, float]]] = []
        for t, amt, ii, addl in _runs(p.doses):
            dose = {"EVID": 1, "AMT": amt, "CMT": 2, "RATE": RATE, "II": ii, "ADDL": addl}
            events.append((t, 2, dose))
        for name, t in p.levels.items():
            events.append((t, 0, {"EVID": 0, "CMT": 2, "LEVEL": LEVELS.index(name)}))
        for t in LAB_TIMES:
            events.append((t, 1, {"EVID": 2}))
        for t, _, items in sorted(events, key=lambda e: (e[0], e[1])):
            wt, crcl = p.covariates_at(t)
            row = {"ID": p.id, "TIME": t, "EVID": 0, "AMT": 0.0, "CMT": 0, "RATE": 0.0}
            row.update({"II": 0.0, "ADDL": 0, "LEVEL": -1})
            row.update(items)
            row.update({"MDV": int(row["EVID"] != 0), "WT": wt, "CRCL": crcl, "ARM": p.arm})
            row["CL"] = CL * (crcl / 80.0) ** 0.75 * np.exp(p.eta["CL"])
            row["V1"] = V1 * wt / 70.0 * np.exp(p.eta["V1"])
            rows.append(row)
    return pd.DataFrame(rows)


def observe(patients: list[Patient]) -> pd.DataFrame:
    """Simulate the records as they stand; ``DV`` filled on the levels."""
    data = records(patients)
    model = vtrial.build_model({"pk": "pk_2cmt"})
    table = pd.DataFrame(
        {
            "ID": [p.id for p in patients],
            "Q2": Q2,
            "V2": [V2 * np.exp(p.eta["V2"]) for p in patients],
        }
    )
    sim = vtrial.simulate(model, data=data.drop(columns=["LEVEL", "ARM"]), parameters=table)
    if not (sim["solver_status"] == "ok").all():
        raise RuntimeError("a simulation failed")
    ipred = sim["CP"].to_numpy()
    eps = np.zeros(len(data))
    by_id = {p.id: p for p in patients}
    for j, (pid, level) in enumerate(zip(data["ID"], data["LEVEL"], strict=True)):
        if level >= 0:
            eps[j] = by_id[pid].eps[LEVELS[level]]
    sd = np.sqrt(ADDITIVE**2 + (PROPORTIONAL * ipred) ** 2)
    data["DV"] = np.where(data["LEVEL"] >= 0, np.round(ipred + sd * eps, 2), np.nan)
    return data


def level(data: pd.DataFrame, pid: int, name: str) -> float:
    """The observed level ``name`` of patient ``pid``."""
    at = (data["ID"] == pid) & (data["LEVEL"] == LEVELS.index(name))
    return float(data.loc[at, "DV"].iloc[0])


def adjust(p: Patient, trough: float, start: float, crcl: float | None = None) -> None:
    """The trough-guided decision on ``p``'s doses from ``start`` on (``crcl``: the
    second decision, which may extend the interval to 24 h)."""
    later = sorted(t for t in p.doses if t >= start)
    if not later:
        return
    amt = p.doses[later[0]]
    if crcl is not None and trough > 20.0 and crcl < 50.0:
        for t in later:  # every 24 h from the next dose but one: 120, 144 h
            if (t - start) % DAY_HOURS != 12.0:
                del p.doses[t]
        return
    if trough > 25.0:
        del p.doses[later[0]]
        amt = max(amt - 500.0, 500.0)
    elif trough > 20.0:
        amt = max(amt - 250.0, 500.0)
    elif trough < 10.0:
        amt = min(amt + 250.0, 2500.0)
    for t in p.doses:
        if t >= start:
            p.doses[t] = amt


def make_dataset() -> str:
    """The dataset as CSV text (``.`` for the items a record does not have)."""
    rng = np.random.default_rng(SEED)
    patients = draw_patients(rng)
    first = observe(patients)
    for p in patients:
        adjust(p, level(first, p.id, "trough1"), 60.0)
    second = observe(patients)
    for p in patients:
        adjust(p, level(second, p.id, "trough2"), 108.0, crcl=p.covariates_at(96.0)[1])
    data = observe(patients)
    for p in patients:  # a decision changes doses only after the level it reads
        if level(first, p.id, "trough1") != level(data, p.id, "trough1"):
            raise RuntimeError(f"ID {p.id}: the first trough changed with later doses")
        if level(second, p.id, "trough2") != level(data, p.id, "trough2"):
            raise RuntimeError(f"ID {p.id}: the second trough changed with later doses")
    dv = data["DV"].dropna()
    if (dv < LLOQ).any():
        raise RuntimeError(f"a level below the LLOQ {LLOQ} mg/L: {dv.min()}")
    return _csv(data)


def _csv(data: pd.DataFrame) -> str:
    lines = [",".join(COLUMNS)]
    for r in data.itertuples(index=False):
        dose = r.EVID == 1
        cells = [
            str(r.ID),
            f"{r.TIME:g}",
            str(r.EVID),
            f"{r.AMT:g}" if dose else ".",
            str(r.CMT) if r.EVID != 2 else ".",
            f"{r.RATE:g}" if dose else ".",
            f"{r.II:g}" if dose else ".",
            str(r.ADDL) if dose else ".",
            f"{r.DV:.2f}" if r.EVID == 0 else ".",
            str(r.MDV),
            f"{r.WT:.1f}",
            f"{r.CRCL:g}",
            r.ARM,
        ]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else OUTPUT
    out.write_bytes(make_dataset().encode("ascii"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
