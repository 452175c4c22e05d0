"""Kernel inputs and observations of a study's patients simulated as recorded
(``population.dataset.doses: recorded``).

Each patient (population row) is its subject's records: its doses, its observation
records and its covariates, which may change over time. :func:`recorded_inputs` builds
the per-patient event tables (:func:`vtrial.data.records.record_events`) and the
parameters of every occasion: a change of a covariate that a covariate model reads
(or of a dataset column named like a model parameter, or of an input of a derived
covariate) starts an occasion, at which integration stops and the typical values are
recomputed from the covariates in force (NONMEM's NOCB by default, rxode2's LOCF with
``interpolation: locf``); the patient's random effects stay the same.
:func:`recorded_observations` gives the observation records' predictions and simulated
observations. Both are pure functions of the rows they are given, like the rest of a
chunk's work.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from vtrial.data.dataset import Dataset
from vtrial.data.records import RecordEvents, dose_routes, record_events
from vtrial.engine.host import KernelResult
from vtrial.engine.records import dose_terms
from vtrial.model.residual import OBSERVATION_COLUMNS, observe_patients, patient_normals
from vtrial.population.derived import DERIVED, derive_covariates
from vtrial.population.sampling import apply_effect, covariate_names, typical_parameters
from vtrial.study.config import Study

__all__ = ["patient_records", "recorded_inputs", "recorded_observations"]


def patient_records(study: Study, pop: pd.DataFrame) -> Dataset:
    """The dataset restricted to the subjects of ``pop`` (in row order, a subject
    repeated per replicate), with ``ID`` the row number."""
    subjects = study.subjects
    if subjects is None or subjects.dataset is None:  # validated before
        raise ValueError("population.dataset: the dataset has problems")
    ds = subjects.dataset
    ids = ds.records["ID"].to_numpy()
    n_rec = ids.size
    first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if n_rec else np.zeros(0, int)
    counts = np.diff(np.r_[first, n_rec])
    subject = pop["patient_id"].to_numpy(dtype=np.int64) - 1
    n_of = counts[subject]
    # each row's records first[s], ..., first[s] + counts[s] - 1, without a Python loop:
    # a running index minus the row's offset in the result plus its first record
    take = np.arange(int(n_of.sum()), dtype=np.int64) + np.repeat(
        first[subject] - (np.cumsum(n_of) - n_of), n_of
    )
    records = ds.records.iloc[take].reset_index(drop=True)
    records["ID"] = np.repeat(np.arange(len(pop), dtype=np.int64), n_of)
    return dataclasses.replace(ds, records=records)


def _varying(study: Study, dataset: Dataset) -> list[str]:
    """Time-varying dataset columns that change a parameter."""
    used = set(study.model.parameters).union(*covariate_names(study).values())
    for name in study.population.derived:
        if name in used:
            used |= set(DERIVED[name][0])
    return [c for c in dataset.varying if c in used]


def recorded_inputs(
    study: Study, part: Dataset, pop: pd.DataFrame, *, nominal: bool = False
) -> tuple[RecordEvents, dict[str, np.ndarray]]:
    """Event tables (one row per population row) and parameters of ``pop``'s patients,
    whose records are ``part`` (:func:`patient_records`); ``nominal``: typical values
    from the model's THETA, not the replicate's (see
    :func:`vtrial.population.sampling.typical_parameters`).

    Returns
    -------
    events : RecordEvents
        :func:`vtrial.data.records.record_events` of the patients' records.
    params : dict of str to ndarray
        Each model parameter, ``(n,)``, or ``(n, n_occ)`` when a time-varying column
        changes it.
    """
    spec = study.population.dataset
    subjects = study.subjects
    if spec is None or subjects is None:  # pragma: no cover - callers check study.recorded
        raise ValueError("recorded_inputs: the study has no population.dataset")
    model = study.model
    table = subjects.table
    terms = dose_terms(model, part, None)
    if table is not None:  # the parameters table's dose terms, by subject
        row_table = table.iloc[pop["patient_id"].to_numpy(dtype=np.int64) - 1]
        row_table = row_table.reset_index(drop=True).assign(ID=np.arange(len(pop)))
        terms = dose_terms(model, part, row_table)
    varying = _varying(study, part)
    ev = record_events(
        part,
        dose_routes(model),
        varying=varying,
        interpolation=spec.interpolation,
        terms=terms,
        checked=True,
    )
    n = len(pop)
    params: dict[str, np.ndarray] = {
        k: pop[k].to_numpy(dtype=np.float64) for k in model.parameters if k in pop
    }
    if not varying or ev.table.n_occ == 1:
        return ev, params
    # typical values on every occasion, from the covariates in force on it
    occ = ev.occasion_record  # (n, n_occ): a record of each occasion
    n_occ = occ.shape[1]
    r = part.records
    covs = {c: r[c].to_numpy()[occ.ravel()] for c in part.covariates}
    derived = list(study.population.derived)
    if derived:
        covs.update(derive_covariates(derived, covs))
    cats = dict(study.population.categories)
    cats.update(
        {c: sorted({str(x) for x in r[c]}) for c in part.covariates if r[c].dtype == object}
    )
    replicate = np.repeat(pop["replicate"].to_numpy(dtype=np.int64), n_occ)
    changed = _changed_parameters(study, varying)
    tv = {k: np.empty(n * n_occ) for k in changed}
    for rep in np.unique(replicate):
        at = replicate == rep
        sub = {c: v[at] for c, v in covs.items()}
        typ = typical_parameters(
            study, sub, int(rep), int(at.sum()), categories=cats, nominal=nominal
        )
        for k in changed:
            tv[k][at] = typ[k]
    var = study.variability
    from_table = set(table.columns) if table is not None else set()
    for k in changed:
        if k in from_table:
            continue  # individual values of the table hold throughout
        value = tv[k].reshape(n, n_occ)
        if k in part.covariates:  # a dataset column named like the parameter
            value = r[k].to_numpy(dtype=np.float64)[occ]
        elif f"eta_{k}" in pop:
            eta = pop[f"eta_{k}"].to_numpy(dtype=np.float64)[:, None]
            value = apply_effect(value, eta, var.distribution(k))
        params[k] = value
    return ev, params


def _changed_parameters(study: Study, varying: list[str]) -> list[str]:
    """Model parameters whose value may change with the ``varying`` columns: named
    like one, or read by its covariate model (directly or through a derived covariate)."""
    reads = covariate_names(study)
    out = []
    for k in study.model.parameters:
        names = set(reads.get(k, ()))
        for d in study.population.derived:
            if d in names:
                names |= set(DERIVED[d][0])
        if k in varying or names & set(varying):
            out.append(k)
    return out


def _most_observations(study: Study) -> int:
    """Most observation events (EVID 0 and 2 records) of any subject of the dataset:
    the residual draws per patient (:func:`vtrial.model.residual.patient_normals`)."""
    subjects = study.subjects
    if subjects is None or subjects.dataset is None:  # pragma: no cover - validated
        return 1
    r = subjects.dataset.records
    counts = r.loc[r["EVID"].isin((0, 2)), "ID"].value_counts()
    return max(int(counts.max()) if len(counts) else 0, 1)


def recorded_observations(
    study: Study, part: Dataset, pop: pd.DataFrame, ev: RecordEvents, res: KernelResult
) -> pd.DataFrame:
    """The observation records ``part`` of ``pop``'s patients (EVID 0, MDV 0; the
    events ``ev`` and kernel result ``res`` of :func:`recorded_inputs`), in the columns of
    :func:`vtrial.run.chunk.observations_table`: the observed output (the only one of
    ``outputs.observations``, or the ``DVID``-th), its prediction ``ipred`` and an
    observation ``dv`` drawn with the output's residual error, keyed by patient."""
    observed = list(study.observations.outputs)
    if not observed:
        return pd.DataFrame({c: [] for c in OBSERVATION_COLUMNS})
    r = part.records
    is_obs = (r["EVID"].to_numpy() == 0) & (r["MDV"].to_numpy() == 0)
    rec = np.flatnonzero(is_obs)
    row = ev.row[rec]
    k = ev.obs_row[rec]
    dvid = r["DVID"].to_numpy()[rec] if "DVID" in r else np.ones(rec.size, dtype=np.int64)
    which = np.clip(dvid, 1, len(observed)) - 1 if len(observed) > 1 else np.zeros(rec.size, int)
    outs = list(study.model.outputs)
    o_idx = np.asarray([outs.index(o) for o in observed])[which]
    ipred = res.obs[row, k, o_idx].astype(np.float64)
    ipred[res.status[row] != 0] = np.nan
    n = len(pop)
    replicate = pop["replicate"].to_numpy(dtype=np.int64)
    patient_id = pop["patient_id"].to_numpy(dtype=np.int64)
    n_obs = _most_observations(study)  # not the chunk's: draws must not depend on it
    eps = np.empty((n, n_obs))
    for rep in np.unique(replicate):
        at = replicate == rep
        eps[at] = patient_normals(study.seed, int(rep), patient_id[at], n_obs)
    dv = np.empty(rec.size)
    blq = np.zeros(rec.size, dtype=bool)
    errors = study.observations.errors
    for j, name in enumerate(observed):
        at = which == j
        m = errors.get(name)
        one_dv, one_blq = observe_patients(
            ipred[at][None, :, None], [m], eps[row[at], k[at]][None, :]
        )
        dv[at] = one_dv.ravel()
        blq[at] = one_blq.ravel()
    return pd.DataFrame(
        {
            "replicate": replicate[row].astype(np.int32),
            "patient_id": patient_id[row],
            "arm": pop["arm"].to_numpy(dtype=object)[row],
            "time": r["TIME"].to_numpy(dtype=np.float64)[rec],
            "output": np.asarray(observed, dtype=object)[which],
            "ipred": ipred,
            "dv": dv,
            "blq": blq,
        },
        columns=list(OBSERVATION_COLUMNS),
    )
