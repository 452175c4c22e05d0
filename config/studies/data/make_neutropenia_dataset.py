"""Write ``neutropenia_warning.csv``: a synthetic dataset of the first cycle of a
cytotoxic in NONMEM's layout, the data of ``config/studies/neutropenia_warning.yaml``.

Scenario. 48 adults with a solid tumour start a docetaxel-like cytotoxic given every 21
days as a 1-hour infusion (``RATE`` = ``AMT`` mg/h, ``CMT`` 2), at 75 mg/m2 of body
surface area (``BSA``, m2), or 60 mg/m2 for 8 patients judged frail, the dose rounded to
5 mg. Only cycle 1 is recorded: the dose at 0 h carries ``II`` 504 (``ADDL`` 0), the
interval of the plan, so the next dose is due at 504 h. The absolute neutrophil count
(``DV``, 10^9/L) is measured before the dose (0 h, the record before the dose record),
and at the day-8 and day-15 visits, at actual times (h, 2 decimals) within 4 h of 168 h
and 336 h; 4 patients miss their day-15 visit. BSA is drawn log-normal (median 1.85
m2, 12 % CV, within 1.4-2.4 m2).

The counts are vtrial's own: each patient's CL, CIRC0, MTT and SLOPE are drawn
(log-normal, from one seeded generator) around the typical values of the study file
(two-compartment PK: CL 32 L/h at BSA 1.85 m2 and in proportion to BSA, V1 6 L, Q2
5.5 L/h, V2 11 L; Friberg myelosuppression: CIRC0 5 x10^9/L, MTT 89 h, GAMMA 0.16,
SLOPE 10 L/mg; the study file cites their sources), the records are simulated by
``vtrial.simulate(model, data=...)``, and each count gets a proportional residual error
(15 % CV, as in the study) and is rounded to 0.01 x10^9/L. All numbers are invented.
The script is deterministic: it writes the same bytes on every run
(``tests/run/test_warning.py`` checks the shipped file).

Usage (from the repository root, with vtrial installed, e.g. ``.venv/bin/python``)::

    python config/studies/data/make_neutropenia_dataset.py            # the shipped file
    python config/studies/data/make_neutropenia_dataset.py out.csv    # somewhere else
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

import vtrial

if TYPE_CHECKING:
    from vtrial.model.spec import Model

#: the shipped dataset, next to this script
OUTPUT = Path(__file__).resolve().parent / "neutropenia_warning.csv"
SEED = 20261215
N_SUBJECTS = 48
N_FRAIL = 8  # 60 mg/m2 instead of 75
N_MISSED = 4  # no day-15 count

# typical values and variability: the same as config/studies/neutropenia_warning.yaml
TYPICAL = {
    "CL": 32.0,  # L/h at BSA 1.85 m2, in proportion to BSA
    "V1": 6.0,
    "Q2": 5.5,
    "V2": 11.0,
    "CIRC0": 5.0,
    "MTT": 89.0,
    "GAMMA": 0.16,
    "SLOPE": 10.0,
}
BSA_REF = 1.85  # m2
OMEGA = {"CL": 0.09, "CIRC0": 0.09, "MTT": 0.025, "SLOPE": 0.16}  # variances of the ETAs
PROPORTIONAL = 0.15  # residual error of the counts (CV)

MG_PER_M2 = (75.0, 60.0)  # standard, frail
INTERVAL = 504.0  # h: every 21 days
VISITS = (168.0, 336.0)  # day 8 and day 15 (t = 0 is day 1)
COLUMNS = ["ID", "TIME", "EVID", "AMT", "CMT", "RATE", "II", "ADDL", "DV", "MDV", "BSA"]


def model() -> Model:
    """The study's model: two-compartment PK driving the Friberg model."""
    friberg = {"model": "friberg", "links": {"DRUG": "CP"}}
    return vtrial.build_model({"pk": "pk_2cmt", "components": {"neutropenia": friberg}})


def draw(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """The records (``DV`` NaN on the counts), each patient's parameters, and each
    count's residual N(0, 1), in one fixed order of draws."""
    n = N_SUBJECTS
    bsa = np.round(np.clip(BSA_REF * np.exp(0.12 * rng.standard_normal(n)), 1.4, 2.4), 2)
    frail = set(rng.choice(n, size=N_FRAIL, replace=False).tolist())
    missed = set(rng.choice(n, size=N_MISSED, replace=False).tolist())
    late = np.round(rng.uniform(-4.0, 4.0, size=(n, len(VISITS))), 2)
    eta = {k: np.sqrt(v) * rng.standard_normal(n) for k, v in OMEGA.items()}
    eps = rng.standard_normal((n, 1 + len(VISITS)))
    rows = []
    for i in range(n):
        dose = 5.0 * np.round(MG_PER_M2[i in frail] * bsa[i] / 5.0)
        common = {"ID": i + 1, "AMT": 0.0, "CMT": 0, "RATE": 0.0, "II": 0.0, "ADDL": 0}
        rows.append({**common, "TIME": 0.0, "EVID": 0, "MDV": 0, "BSA": bsa[i]})
        dose_row = {"AMT": dose, "CMT": 2, "RATE": dose, "II": INTERVAL, "EVID": 1, "MDV": 1}
        rows.append({**common, **dose_row, "TIME": 0.0, "BSA": bsa[i]})
        for k, t in enumerate(VISITS):
            if k == len(VISITS) - 1 and i in missed:
                continue
            rows.append({**common, "TIME": t + late[i, k], "EVID": 0, "MDV": 0, "BSA": bsa[i]})
    records = pd.DataFrame(rows)
    records["DV"] = np.nan
    params = pd.DataFrame({"ID": np.arange(1, n + 1)})
    for name, value in TYPICAL.items():
        typical = value * bsa / BSA_REF if name == "CL" else np.full(n, value)
        params[name] = typical * np.exp(eta[name]) if name in eta else typical
    return records, params, eps


def make_dataset() -> str:
    """The dataset as CSV text (``.`` for the items a record does not have)."""
    rng = np.random.default_rng(SEED)
    records, params, eps = draw(rng)
    sim = vtrial.simulate(model(), data=records[COLUMNS].fillna({"DV": 0.0}), parameters=params)
    if not (sim["solver_status"] == "ok").all():
        raise RuntimeError("a simulation failed")
    obs = (records["EVID"] == 0).to_numpy()
    ipred = sim["ANC"].to_numpy()[obs]
    k = records[obs].groupby("ID").cumcount().to_numpy()  # the count's place: 0, 1, 2
    e = eps[records["ID"].to_numpy()[obs] - 1, k]
    dv = np.round(ipred * (1.0 + PROPORTIONAL * e), 2)
    if (dv < 0.01).any():
        raise RuntimeError(f"a count below 0.01 x10^9/L: {dv.min()}")
    records.loc[obs, "DV"] = dv
    return _csv(records)


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
            f"{r.RATE:g}" if dose else ".",
            f"{r.II:g}" if dose else ".",
            str(r.ADDL) if dose else ".",
            f"{r.DV:.2f}" if not dose else ".",
            str(r.MDV),
            f"{r.BSA:.2f}",
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
