"""Export a finished study as a NONMEM/Monolix-style dataset.

The virtual trial becomes the kind of dataset a pharmacometrician fits models to: one
row per dose record (``EVID=1``) and per observation (``EVID=0``) of every patient,
with the columns NONMEM's ``$INPUT`` and Monolix's data mapping expect:

``ID REP PATIENT ARM TIME AMT RATE II SS EVID MDV CMT DVID DV BLQ`` then the
patient's covariates.

- ``ID`` numbers the patients 1.. across replicates (replicate-major), ``REP`` and
  ``PATIENT`` keep vtrial's own keys.
- Doses come from the arm's regimen as planned: ``AMT`` in mg (``mg/kg`` and ``mg/m2``
  doses scaled by the patient's weight or BSA), ``CMT`` 1 (depot) for oral doses and 2
  (central) for IV doses, ``RATE`` (mg/h) for infusions, ``SS=1`` with ``II`` on the
  first dose of a steady-state phase. Lag time and bioavailability are model
  parameters, not data: they are not applied to ``AMT`` or ``TIME``.
- Observations come from ``observations/`` (``outputs.observations`` with residual
  error): ``DV`` is the observed value, ``DVID`` numbers the observed outputs (1.. in
  alphabetical order, see :func:`write_nonmem`), ``CMT`` is 2, ``BLQ`` 1
  below the output's ``lloq``, ``MDV`` 1 when the value is missing (failed solve).
- Rows are sorted by ``ID``, ``TIME`` and then observations before doses, which is
  vtrial's convention (an output at a dose time is pre-dose), so NONMEM reads the
  same sequence of events.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vtrial.analysis.popsummary import covariate_columns
from vtrial.errors import DataError
from vtrial.protocol.dosing import DOSE_UNITS
from vtrial.run.io import atomic_path
from vtrial.study.config import Study

#: dataset columns before the covariates
COLUMNS = (
    "ID",
    "REP",
    "PATIENT",
    "ARM",
    "TIME",
    "AMT",
    "RATE",
    "II",
    "SS",
    "EVID",
    "MDV",
    "CMT",
    "DVID",
    "DV",
    "BLQ",
)


def study_of_results(results: str | Path) -> Study:
    """The study a results folder was produced from, as recorded in its manifest
    (:func:`vtrial.run.recompute.recorded_study`: refused if a model or input file changed
    since the run, so the records always match the simulated doses)."""
    path = Path(results) / "manifest.json"
    if not path.exists():
        raise DataError(f"{path}: no manifest (the run did not finish)")
    from vtrial.run.recompute import recorded_study  # imports the pipeline (Dask)

    return recorded_study(results)


def nonmem_dataset(
    results: str | Path, *, study: Study | None = None, replicate: int | None = None
) -> tuple[pd.DataFrame, dict[int, str]]:
    """Doses and observations of a finished study as one NONMEM-style table.

    Parameters
    ----------
    results : str or Path
        The study's results folder (``population.parquet``, ``observations/``).
    study : Study, optional
        The study; by default the one recorded in the folder's ``manifest.json``.
    replicate : int, optional
        Only this replicate trial.

    Returns
    -------
    data : DataFrame
        The columns of :data:`COLUMNS` then the covariates, sorted as NONMEM needs.
    dvid : dict
        ``DVID`` -> observed output name.
    """
    results = Path(results)
    study = study if study is not None else study_of_results(results)
    pop = pd.read_parquet(results / "population.parquet")
    if replicate is not None:
        pop = pop[pop["replicate"] == replicate]
    pop = pop.sort_values(["replicate", "patient_id"]).reset_index(drop=True)
    pop["ID"] = np.arange(1, len(pop) + 1, dtype=np.int64)
    covariates = [name for name, _, _ in covariate_columns(study) if name in pop.columns]
    frames = [_dose_records(study, pop)]
    obs_dir = results / "observations"
    dvid: dict[int, str] = {}
    if obs_dir.exists() and any(obs_dir.glob("part-*.parquet")):
        obs = pd.read_parquet(obs_dir)
        if replicate is not None:
            obs = obs[obs["replicate"] == replicate]
        names = sorted(obs["output"].unique())
        dvid = {i + 1: n for i, n in enumerate(names)}
        code = {n: i for i, n in dvid.items()}
        ids = pop.set_index(["replicate", "patient_id"])["ID"]
        key = pd.MultiIndex.from_arrays([obs["replicate"], obs["patient_id"]])
        dv = obs["dv"].to_numpy(dtype=np.float64)
        frames.append(
            pd.DataFrame(
                {
                    "ID": ids.reindex(key).to_numpy(),
                    "REP": obs["replicate"].to_numpy(),
                    "PATIENT": obs["patient_id"].to_numpy(),
                    "ARM": obs["arm"].to_numpy(),
                    "TIME": obs["time"].to_numpy(dtype=np.float64),
                    "AMT": 0.0,
                    "RATE": 0.0,
                    "II": 0.0,
                    "SS": 0,
                    "EVID": 0,
                    "MDV": (~np.isfinite(dv)).astype(np.int64),
                    "CMT": 2,
                    "DVID": obs["output"].map(code).to_numpy(dtype=np.int64),
                    "DV": np.where(np.isfinite(dv), dv, 0.0),
                    "BLQ": obs["blq"].to_numpy().astype(np.int64),
                }
            )
        )
    data = pd.concat(frames, ignore_index=True)
    data = data.sort_values(["ID", "TIME", "EVID", "DVID"], kind="stable").reset_index(drop=True)
    cov = pop[["ID", *covariates]].copy()
    for name, labels in study.population.categories.items():
        if name in cov:  # NONMEM reads numbers: categories as codes 1.. (declared order)
            cov[name] = cov[name].map({lab: k for k, lab in enumerate(labels, start=1)})
    data = data.merge(cov, on="ID", how="left", validate="many_to_one")
    return data[[*COLUMNS, *covariates]], dvid


def _dose_records(study: Study, pop: pd.DataFrame) -> pd.DataFrame:
    """One row per planned dose of every patient (``EVID=1``)."""
    scale = np.ones((len(pop), 3))
    if "weight" in pop:
        scale[:, DOSE_UNITS["mg/kg"]] = pop["weight"].to_numpy(dtype=np.float64)
    if "bsa" in pop:
        scale[:, DOSE_UNITS["mg/m2"]] = pop["bsa"].to_numpy(dtype=np.float64)
    arm_index = pop["arm_index"].to_numpy()
    parts = []
    for a, phases in enumerate(study.arm_phases()):
        rows = np.flatnonzero(arm_index == a)
        if rows.size == 0:
            continue
        for j, ph in enumerate(phases):
            times = ph.dose_times()
            amt = ph.dose * scale[rows, DOSE_UNITS[ph.unit]]
            n_t = times.size
            rate = amt / ph.duration if ph.route == "iv_infusion" else np.zeros(rows.size)
            ss = np.zeros(n_t, dtype=np.int64)
            ii = np.zeros(n_t)
            if j == 0 and ph.steady_state:
                ss[0] = 1
                ii[0] = ph.interval
            parts.append(
                pd.DataFrame(
                    {
                        "ID": np.repeat(pop["ID"].to_numpy()[rows], n_t),
                        "REP": np.repeat(pop["replicate"].to_numpy()[rows], n_t),
                        "PATIENT": np.repeat(pop["patient_id"].to_numpy()[rows], n_t),
                        "ARM": np.repeat(pop["arm"].to_numpy()[rows], n_t),
                        "TIME": np.tile(times, rows.size),
                        "AMT": np.repeat(amt, n_t),
                        "RATE": np.repeat(rate, n_t),
                        "II": np.tile(ii, rows.size),
                        "SS": np.tile(ss, rows.size),
                        "EVID": 1,
                        "MDV": 1,
                        "CMT": 1 if ph.route == "oral" else 2,
                        "DVID": 0,
                        "DV": 0.0,
                        "BLQ": 0,
                    }
                )
            )
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=np.float64) for c in COLUMNS})
    return pd.concat(parts, ignore_index=True)


def write_nonmem(
    results: str | Path,
    out: str | Path,
    *,
    study: Study | None = None,
    replicate: int | None = None,
) -> int:
    """Write :func:`nonmem_dataset` as CSV; return its rows.

    The first line is the header (``ID,REP,...``: read it in NONMEM with
    ``$DATA file.csv IGNORE=@``). The ``DVID`` key goes next to it as
    ``<stem>_dvid.csv`` (``DVID,OUTPUT``) and the codes of the categorical covariates
    (1.. in declared order) as ``<stem>_categories.csv`` (``COVARIATE,CODE,LABEL``).
    """
    study = study or study_of_results(results)  # loaded once for the data and the key
    data, dvid = nonmem_dataset(results, study=study, replicate=replicate)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        data.to_csv(tmp, index=False, float_format="%.10g")
    key = pd.DataFrame({"DVID": list(dvid), "OUTPUT": list(dvid.values())})
    with atomic_path(out.with_name(f"{out.stem}_dvid.csv")) as tmp:
        key.to_csv(tmp, index=False)
    cats = [
        (name, code, label)
        for name, labels in study.population.categories.items()
        if name in data.columns
        for code, label in enumerate(labels, start=1)
    ]
    table = pd.DataFrame(cats, columns=["COVARIATE", "CODE", "LABEL"])
    with atomic_path(out.with_name(f"{out.stem}_categories.csv")) as tmp:
        table.to_csv(tmp, index=False)
    return len(data)
