"""Export a finished study as a NONMEM/Monolix-style dataset.

The virtual trial becomes the kind of dataset a pharmacometrician fits models to: one
row per dose record (``EVID=1``) and per observation (``EVID=0``) of every patient,
with the columns NONMEM's ``$INPUT`` and Monolix's data mapping expect:

``ID REP PATIENT ARM TIME AMT RATE II SS EVID MDV CMT DVID DV BLQ`` then the
patient's covariates.

- ``ID`` numbers the simulated patients 1.. across replicates (replicate-major), one
  per arm in a twin-crossover design (each twin is a subject); ``REP`` and ``PATIENT``
  keep vtrial's own keys, ``ARM`` is the arm's number (1.. in study order, key in
  ``<stem>_arms.csv``).
- Doses are the doses given: from the dose ledger (``doses/``) when the study has dose
  modification or adherence (time after holds and jitter, amount after reductions and
  adherence; missed, discontinued and not-reached doses are no records), otherwise the
  arm's regimen as planned. ``AMT`` in mg (``mg/kg`` and ``mg/m2`` doses scaled by the
  patient's weight or BSA), ``CMT`` 1 (depot) for oral doses and 2 (central) for IV
  doses (the numbering of :mod:`vtrial.data.records`), ``RATE`` (mg/h) for infusions,
  ``SS=1`` with ``II`` on the first dose of a steady-state phase. Lag time and
  bioavailability are model parameters, not data: they are not applied to ``AMT`` or
  ``TIME``.
- Observations come from ``observations/`` (``outputs.observations`` with residual
  error): ``DV`` is the observed value, ``DVID`` numbers the observed outputs (1.. in
  alphabetical order, see :func:`write_nonmem`), ``CMT`` is 2, ``BLQ`` 1
  below the output's ``lloq``, ``MDV`` 1 when the value is missing (failed solve). A
  study that samples nothing exports doses only, with a warning.
- A patient with neither dose nor observation (placebo, no sampling) gets one
  other-type record (``EVID=2``) at time 0 that carries its covariates.
- Rows are sorted by ``ID``, ``TIME`` and then observations before doses, which is
  vtrial's convention (an output at a dose time is pre-dose), so NONMEM (and
  ``vtrial.simulate(model, data=...)``, which follows record order) reads the same
  sequence of events. ``tests/run/test_export.py`` simulates an export back and gets
  the run's values.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vtrial.analysis.popsummary import covariate_columns
from vtrial.errors import DataError
from vtrial.protocol.codes import EventKind
from vtrial.protocol.dosing import DOSE_UNITS
from vtrial.run.io import atomic_path
from vtrial.study.config import Study

log = logging.getLogger(__name__)

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
        The study's results folder (``population.parquet``, ``observations/``,
        ``doses/``).
    study : Study, optional
        The study; by default the one recorded in the folder's ``manifest.json``.
    replicate : int, optional
        Only this replicate trial.

    Returns
    -------
    data : DataFrame
        The columns of :data:`COLUMNS` then the covariates, sorted as NONMEM needs.
    dvid : dict
        ``DVID`` -> observed output name (empty when the study observes nothing: the
        dataset then holds doses only, see :func:`write_nonmem`).
    """
    results = Path(results)
    study = study if study is not None else study_of_results(results)
    pop = pd.read_parquet(results / "population.parquet")
    if replicate is not None:
        pop = pop[pop["replicate"] == replicate]
    # one ID per simulated patient: per (replicate, patient, arm), so the twins of a
    # crossover design are separate subjects
    pop = pop.sort_values(["replicate", "patient_id", "arm_index"]).reset_index(drop=True)
    pop["ID"] = np.arange(1, len(pop) + 1, dtype=np.int64)
    ids = pop.set_index(["replicate", "patient_id", "arm"])["ID"]
    covariates = [name for name, _, _ in covariate_columns(study) if name in pop.columns]
    doses_dir = results / "doses"
    if study.has_dose_ledger and doses_dir.exists() and any(doses_dir.glob("part-*.parquet")):
        ledger = pd.read_parquet(doses_dir)
        if replicate is not None:
            ledger = ledger[ledger["replicate"] == replicate]
        frames = [_ledger_records(study, pop, ids, ledger)]
    else:
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
        key = pd.MultiIndex.from_arrays([obs["replicate"], obs["patient_id"], obs["arm"]])
        dv = obs["dv"].to_numpy(dtype=np.float64)
        frames.append(
            _records(
                ids.reindex(key).to_numpy(),
                obs["time"].to_numpy(dtype=np.float64),
                EVID=0,
                MDV=(~np.isfinite(dv)).astype(np.int64),
                CMT=2,
                DVID=obs["output"].map(code).to_numpy(dtype=np.int64),
                DV=np.where(np.isfinite(dv), dv, 0.0),
                BLQ=obs["blq"].to_numpy().astype(np.int64),
            )
        )
    data = pd.concat(frames, ignore_index=True)
    # every patient has a record, even one with neither dose nor observation (placebo
    # without sampling): an other-type event at time 0 carrying its covariates
    bare = pop["ID"][~pop["ID"].isin(data["ID"])].to_numpy()
    if bare.size:
        data = pd.concat([data, _records(bare, np.zeros(bare.size), EVID=2)], ignore_index=True)
    # at a common time: observations (pre-dose, vtrial's convention), then doses
    order = data["EVID"].map({0: 0, 2: 0, 1: 1}).to_numpy()
    data = (
        data.assign(_order=order)
        .sort_values(["ID", "TIME", "_order", "DVID"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )
    keys = pop[["ID", "replicate", "patient_id", "arm_index", *covariates]].rename(
        columns={"replicate": "REP", "patient_id": "PATIENT"}
    )
    keys["ARM"] = keys.pop("arm_index").astype(np.int64) + 1  # numbers: NONMEM reads numbers
    for name, labels in study.population.categories.items():
        if name in keys:  # NONMEM reads numbers: categories as codes 1.. (declared order)
            keys[name] = keys[name].map({lab: k for k, lab in enumerate(labels, start=1)})
    data = data.drop(columns=["REP", "PATIENT", "ARM"]).merge(
        keys, on="ID", how="left", validate="many_to_one"
    )
    return data[[*COLUMNS, *covariates]], dvid


def _records(id_: np.ndarray, time: np.ndarray, **columns: Any) -> pd.DataFrame:
    """Records of :data:`COLUMNS` (``REP``, ``PATIENT`` and ``ARM`` filled later from the
    ID), the items not given at their neutral value."""
    neutral: dict[str, Any] = {
        "AMT": 0.0, "RATE": 0.0, "II": 0.0, "SS": 0, "EVID": 0, "MDV": 1, "CMT": 0,
        "DVID": 0, "DV": 0.0, "BLQ": 0, "REP": 0, "PATIENT": 0, "ARM": 0,
    }  # fmt: skip
    out = pd.DataFrame({"ID": np.asarray(id_, dtype=np.int64), "TIME": time})
    for c in neutral:
        out[c] = columns.get(c, neutral[c])
    return out[list(COLUMNS)]


def _dose_records(study: Study, pop: pd.DataFrame) -> pd.DataFrame:
    """One row per planned dose of every patient (``EVID=1``): a study without dose
    modification or adherence gives every dose as planned."""
    scale = np.ones((len(pop), 3))
    if "weight" in pop:
        scale[:, DOSE_UNITS["mg/kg"]] = pop["weight"].to_numpy(dtype=np.float64)
    if "bsa" in pop:
        scale[:, DOSE_UNITS["mg/m2"]] = pop["bsa"].to_numpy(dtype=np.float64)
    arm_index = pop["arm_index"].to_numpy()
    parts = [_records(np.zeros(0), np.zeros(0), EVID=1)]
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
                _records(
                    np.repeat(pop["ID"].to_numpy()[rows], n_t),
                    np.tile(times, rows.size),
                    AMT=np.repeat(amt, n_t),
                    RATE=np.repeat(rate, n_t),
                    II=np.tile(ii, rows.size),
                    SS=np.tile(ss, rows.size),
                    EVID=1,
                    CMT=1 if ph.route == "oral" else 2,
                )
            )
    return pd.concat(parts, ignore_index=True)


def _ledger_records(
    study: Study, pop: pd.DataFrame, ids: pd.Series, ledger: pd.DataFrame
) -> pd.DataFrame:
    """One row per dose actually given (``EVID=1``), from the dose ledger: its time
    (after holds and jitter) and amount (after reductions, adherence and
    discontinuation); missed and not-reached doses are not records."""
    given = ledger[(ledger["given"] > 0) & np.isfinite(ledger["time"])]
    key = pd.MultiIndex.from_arrays([given["replicate"], given["patient_id"], given["arm"]])
    id_ = ids.reindex(key).to_numpy()
    arm_index = pop.set_index("ID")["arm_index"].reindex(id_).to_numpy(dtype=np.int64)
    events = study.events()
    n_slot = max(events.n_slots, 1)
    kind = np.zeros((events.n.size, n_slot), dtype=np.int64)
    duration = np.zeros((events.n.size, n_slot))
    for a in range(events.n.size):
        cols = np.flatnonzero(events.slot[a, : events.n[a]] >= 0)
        sl = events.slot[a, cols]
        kind[a, sl] = events.kind[a, cols]
        rate = events.kind[a, cols] == EventKind.RATE
        stop = events.pair[a, cols[rate]]
        duration[a, sl[rate]] = events.time[a, stop] - events.time[a, cols[rate]]
    slot = given["dose_number"].to_numpy(dtype=np.int64) - 1
    k = kind[arm_index, slot]
    amt = given["given"].to_numpy(dtype=np.float64)
    dur = duration[arm_index, slot]
    infusion = k == EventKind.RATE
    ss = np.zeros(len(given), dtype=np.int64)
    ii = np.zeros(len(given))
    for a, phases in enumerate(study.arm_phases()):
        if phases and phases[0].steady_state:
            first = (arm_index == a) & (slot == 0)
            ss[first] = 1
            ii[first] = phases[0].interval
    return _records(
        id_,
        given["time"].to_numpy(dtype=np.float64),
        AMT=amt,
        RATE=np.where(infusion, amt / np.where(infusion, dur, 1.0), 0.0),
        II=ii,
        SS=ss,
        EVID=1,
        CMT=np.where(k == EventKind.ORAL, 1, 2),
    )


def write_nonmem(
    results: str | Path,
    out: str | Path,
    *,
    study: Study | None = None,
    replicate: int | None = None,
) -> dict[str, int]:
    """Write :func:`nonmem_dataset` as CSV with its keys; return its counts.

    The first line is the header (``ID,REP,...``: read it in NONMEM with
    ``$DATA file.csv IGNORE=@``). Next to it go the keys: ``<stem>_dvid.csv``
    (``DVID,OUTPUT``), ``<stem>_arms.csv`` (``ARM,NAME``: arm codes 1.. in study order)
    and ``<stem>_categories.csv`` (``COVARIATE,CODE,LABEL``: codes 1.. of the
    categorical covariates in declared order).

    Returns
    -------
    dict
        ``records``, ``subjects``, ``doses`` and ``observations``. A study without
        ``outputs.observations`` has no observation records (a warning is logged): its
        dataset holds doses only.
    """
    study = study or study_of_results(results)  # loaded once for the data and the key
    data, dvid = nonmem_dataset(results, study=study, replicate=replicate)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        data.to_csv(tmp, index=False)  # shortest round-trip text: lossless
    keys = {
        "dvid": pd.DataFrame({"DVID": list(dvid), "OUTPUT": list(dvid.values())}),
        "arms": pd.DataFrame(
            {"ARM": range(1, len(study.arm_names) + 1), "NAME": list(study.arm_names)}
        ),
        "categories": pd.DataFrame(
            [
                (name, code, label)
                for name, labels in study.population.categories.items()
                if name in data.columns
                for code, label in enumerate(labels, start=1)
            ],
            columns=["COVARIATE", "CODE", "LABEL"],
        ),
    }
    for name, table in keys.items():
        with atomic_path(out.with_name(f"{out.stem}_{name}.csv")) as tmp:
            table.to_csv(tmp, index=False)
    counts = {
        "records": len(data),
        "subjects": int(data["ID"].nunique()),
        "doses": int((data["EVID"] == 1).sum()),
        "observations": int((data["EVID"] == 0).sum()),
    }
    if counts["observations"] == 0:
        log.warning(
            "%s: no observation records: the study samples nothing (outputs.observations); "
            "the dataset holds doses only",
            out,
        )
    return counts
