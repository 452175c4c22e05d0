"""Twins of real patients: each dataset subject's random effects estimated from their
own observations (MAP), under the study's population model as the prior.

A study with ``population.dataset`` says everything the estimator needs
(:mod:`vtrial.estimation.map`); the estimate reads the dataset's records whatever the
study simulates (``doses: recorded``: the records themselves; ``doses: arms``: the
study's arms, e.g. the twins under counterfactual regimens with ``parameters:
twins``):

- the **doses**: the dataset's dose records (never the study's arms);
- the **prior**: the model's typical values with their covariate models (covariates
  that change from record to record change the typical values on each occasion,
  exactly as when the study simulates the records, with ``population.dataset
  .interpolation``), ``model.iiv`` (OMEGA and each
  parameter's distribution), the nominal THETA (``study.uncertainty`` is not drawn);
- the **observations**: the dataset's ``EVID 0`` records with ``MDV 0``, or ``BLQ 1``
  (Beal's M3), of the observed outputs (``outputs.observations.outputs``, or the
  outputs with a ``model.residual_error`` entry), ``DVID`` ``n`` being the ``n``-th of
  them in name order, as in a simulated study;
- the **residual error**: ``model.residual_error``.

:func:`twin_problems` checks, before anything is estimated, what the estimator needs
beyond a runnable dataset study, every problem naming the study key or the dataset's
row, line and column; :func:`fit_twins` estimates every subject (or some).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from vtrial.data.dataset import Dataset, with_records
from vtrial.data.tables import cell_problems
from vtrial.errors import ConfigError, Problem
from vtrial.estimation.map import (
    CohortData,
    CohortFit,
    Prior,
    SubjectFit,
    cohort_data,
    fit_cohort,
    fit_subject,
    predict,
)
from vtrial.estimation.posterior import laplace_sample, posterior_purpose, sample_posterior
from vtrial.estimation.twinspec import POSTERIORS
from vtrial.infra.rng import stream
from vtrial.population.dataset import subject_covariates
from vtrial.population.derived import derive_covariates
from vtrial.population.sampling import typical_parameters
from vtrial.run.recorded import recorded_inputs
from vtrial.study.config import Study

__all__ = [
    "POSTERIORS",
    "TwinPosterior",
    "fit_twins",
    "subject_cohort",
    "subject_records",
    "twin_cohort",
    "twin_posterior",
    "twin_prior",
    "twin_problems",
]


def _observed(study: Study) -> list[str]:
    return list(study.observations.outputs) or sorted(study.observations.errors)


def twin_problems(study: Study, dataset: Dataset | None = None) -> list[Problem]:
    """What keeps ``study`` from estimating twins (empty if nothing): no dataset, no
    random effects, inter-occasion variability (which the estimator does not model), an
    observed output without residual error, and
    the dataset's observation records that give no likelihood (a missing ``DV``, a
    ``DVID`` naming no observed output, a ``DV <= 0`` under exponential error, a BLQ
    record without a limit); those of ``dataset`` instead of the study's when given
    (new records of a twin's update, :mod:`vtrial.run.twin_state`)."""
    src = study.source
    spec = study.population.dataset
    if spec is None:
        return [
            Problem(
                src,
                "population.dataset",
                "twins are estimated from each subject's recorded doses and observations: "
                "give population.dataset (a NONMEM-style dataset), got none (the patients "
                "are sampled)",
            )
        ]
    out: list[Problem] = []
    if not study.variability.omega_names:
        out.append(
            Problem(
                src, "model.iiv", "no parameter has a random effect: there is nothing to estimate"
            )
        )
    if study.variability.iov:
        out.append(
            Problem(
                src,
                "model.iov",
                "the twins' estimator does not model inter-occasion variability: leave "
                "model.iov out to estimate twins",
            )
        )
    observed = _observed(study)
    if not observed:
        out.append(
            Problem(
                src,
                "model.residual_error",
                "no output is observed: give the observed outputs a residual error model",
            )
        )
    errors = study.observations.errors
    for name in observed:
        e = errors.get(name)
        if e is None or e.kind == "none":
            out.append(
                Problem(
                    src,
                    f"model.residual_error.{name}",
                    "an observed output needs a residual error (additive, proportional, "
                    "combined or exponential) for its likelihood, got "
                    f"{None if e is None else 'lloq only'}",
                )
            )
    subjects = study.subjects
    ds = subjects.dataset if dataset is None and subjects is not None else dataset
    if ds is None or not observed:
        return out
    r = ds.records
    blq = r["BLQ"].to_numpy() == 1 if "BLQ" in r else np.zeros(len(r), dtype=bool)
    obs = (r["EVID"].to_numpy() == 0) & ((r["MDV"].to_numpy() == 0) | blq)
    dvid = r["DVID"].to_numpy() if "DVID" in r else np.ones(len(r), dtype=np.int64)
    dv = r["DV"].to_numpy(dtype=np.float64) if "DV" in r else np.full(len(r), np.nan)
    rec = r["REC"].to_numpy() - 1
    found: dict[str, list[tuple[int, str, object]]] = {"DV": [], "DVID": [], "LLOQ": []}
    bad_dvid = obs & ((dvid < 1) | (dvid > len(observed)))
    for i in np.flatnonzero(bad_dvid):
        found["DVID"].append(
            (
                int(rec[i]),
                f"names no observed output (1 to {len(observed)}: {observed})",
                int(dvid[i]),
            )
        )
    which = np.clip(dvid, 1, len(observed)) - 1
    expo = np.array([errors[o].exponential > 0 if o in errors else False for o in observed])[which]
    quantified = obs & ~blq & ~bad_dvid
    for i in np.flatnonzero(quantified & ~np.isfinite(dv)):
        found["DV"].append(
            (int(rec[i]), "an observation (MDV 0, not BLQ) needs a value", float(dv[i]))
        )
    for i in np.flatnonzero(quantified & np.isfinite(dv) & expo & (dv <= 0)):
        found["DV"].append(
            (
                int(rec[i]),
                "exponential error observes log(DV): DV must be > 0 (or flag it BLQ)",
                float(dv[i]),
            )
        )
    lloq = r["LLOQ"].to_numpy(dtype=np.float64) if "LLOQ" in r else np.full(len(r), np.nan)
    out_lloq = np.array(
        [
            np.nan if errors.get(o) is None or errors[o].lloq is None else errors[o].lloq
            for o in observed
        ]
    )[which]
    limit = np.where(np.isnan(lloq), out_lloq, lloq)
    limit = np.where(np.isnan(limit), dv, limit)
    for i in np.flatnonzero(obs & blq & ~np.isfinite(limit)):
        found["LLOQ"].append(
            (
                int(rec[i]),
                "a BLQ record needs its limit: an LLOQ column, the output's lloq, or DV",
                None,
            )
        )
    for item, rows in found.items():
        if rows:
            out += cell_problems(ds.name, ds.first_line, ds.columns.get(item, item), rows)
    return out


def twin_cohort(
    study: Study, *, dataset: Dataset | None = None, subject_of: np.ndarray | None = None
) -> tuple[CohortData, Prior]:
    """The estimator's inputs for every subject of ``study`` (see the module docstring),
    or of ``dataset``: records built from the study's (a subject's records followed by
    a forecast's, :mod:`vtrial.run.forecast`), with the same columns, its subject ``i``
    being the study's subject ``subject_of[i]`` (index in file order).

    Raises
    ------
    ConfigError
        :func:`twin_problems`, every one of them.
    """
    problems = twin_problems(study)
    if problems:
        raise ConfigError(problems)
    subjects = study.subjects
    assert subjects is not None
    assert subjects.dataset is not None
    ds = subjects.dataset if dataset is None else dataset
    n = int(ds.subjects.size)
    covs = subject_covariates(ds)
    derived = list(study.population.derived)
    if derived:
        covs.update(derive_covariates(derived, covs))
    cats = dict(study.population.categories)
    cats.update({str(k): sorted({str(x) for x in v}) for k, v in covs.items() if v.dtype == object})
    typical = typical_parameters(study, covs, 0, n, categories=cats, nominal=True)
    patient = np.arange(n) if subject_of is None else np.asarray(subject_of, dtype=np.int64)
    pop = pd.DataFrame(
        {"patient_id": patient + 1, "replicate": np.zeros(n, dtype=np.int64), **typical}
    )
    records = dataclasses.replace(ds, records=ds.records.assign(ID=_row_ids(ds.records["ID"])))
    ev, params = recorded_inputs(study, records, pop, nominal=True)
    ev = dataclasses.replace(ev, subjects=ds.subjects)
    prior = twin_prior(study)
    data = cohort_data(
        study.model,
        records,
        ev,
        typical=params,
        outputs=_observed(study),
        errors=study.observations.errors,
    )
    return data, prior


def subject_records(study: Study, subject: int) -> pd.DataFrame:
    """The records of the study dataset's subject ``subject`` (index in file order)."""
    subjects = study.subjects
    assert subjects is not None
    assert subjects.dataset is not None
    ids = subjects.dataset.records["ID"].to_numpy()
    first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    hi = first[subject + 1] if subject + 1 < first.size else ids.size
    return subjects.dataset.records.iloc[first[subject] : hi].reset_index(drop=True)


def subject_cohort(
    study: Study, records: pd.DataFrame, *, subject: int = 0
) -> tuple[CohortData, Prior]:
    """The estimator's inputs for one subject whose records are ``records`` (the
    study's dataset's columns: its own records, extended by an update or a forecast),
    the study's subject ``subject`` (index in file order, for a parameters table)."""
    subjects = study.subjects
    assert subjects is not None
    assert subjects.dataset is not None
    one = with_records(subjects.dataset, records)
    return twin_cohort(study, dataset=one, subject_of=np.full(one.subjects.size, subject))


@dataclass(frozen=True)
class TwinPosterior:
    """A twin's MAP estimate and the draws its forecasts use (:func:`twin_posterior`).

    Attributes
    ----------
    fit : SubjectFit
    eta : ndarray, (n, k)
        The draws: an SIR sample, a Laplace sample, or the MAP estimate alone (one row).
    method : str
        One of :data:`POSTERIORS`.
    ess : float
        SIR's effective sample size (NaN for the others).
    status : str
        ``ok``, or what limits the draws (the fit's status, a low effective sample size).
    """

    fit: SubjectFit
    eta: np.ndarray
    method: str
    ess: float
    status: str


def twin_posterior(
    study: Study,
    records: pd.DataFrame,
    subject: int,
    *,
    method: str = "sir",
    n: int = 1000,
    n_proposal: int | None = None,
    start: np.ndarray | None = None,
    fit: SubjectFit | None = None,
) -> TwinPosterior:
    """Estimate the twin whose records are ``records`` (dataset subject ``subject``) and
    draw its random effects by ``method`` (:data:`POSTERIORS`): SIR
    (:func:`vtrial.estimation.posterior.sample_posterior`, ``n`` of ``n_proposal``,
    default ``10 n``), the Laplace approximation, or the MAP alone. Draws come from the
    stream keyed by the study's seed and the subject's ``ID``: the same whatever else
    is estimated."""
    if method not in POSTERIORS:
        raise ValueError(f"method: one of {', '.join(POSTERIORS)}, got {method!r}")
    data, prior = subject_cohort(study, records, subject=subject)
    if fit is None:
        fit = fit_subject(data, prior, 0, start=start)
    if method == "map":
        return TwinPosterior(fit, fit.eta[None, :], method, math.nan, fit.status)
    if method == "laplace":
        if not fit.ok:
            return TwinPosterior(fit, np.full((n, prior.k), np.nan), method, math.nan, fit.status)
        purpose = posterior_purpose(records["ID"].iloc[0])
        draws = laplace_sample(fit, n, stream(study.seed, purpose, 0))
        return TwinPosterior(fit, draws, method, math.nan, "ok")
    post = sample_posterior(
        data, prior, 0, fit, n=n, n_proposal=n_proposal or 10 * n, seed=study.seed
    )
    status = fit.status if not fit.ok else post.status
    return TwinPosterior(fit, post.eta, method, post.ess, status)


def twin_prior(study: Study) -> Prior:
    """The prior of every twin: the random effects of ``model.iiv`` (OMEGA and each
    parameter's distribution)."""
    var = study.variability
    return Prior(
        tuple(var.omega_names),
        var.omega,
        tuple(var.distribution(k) for k in var.omega_names),
    )


def _row_ids(ids: pd.Series) -> np.ndarray:
    """0, 1, ... per subject (the IDs :func:`recorded_inputs` expects: row numbers)."""
    v = ids.to_numpy()
    new = np.r_[True, v[1:] != v[:-1]] if v.size else np.zeros(0, dtype=bool)
    return np.cumsum(new) - 1


def typical_prediction_problems(
    study: Study, data: CohortData, prior: Prior, subjects: Sequence[int] | None = None
) -> list[Problem]:
    """Observations whose typical prediction has no likelihood: a prediction of 0 with
    no additive error (an observation before any dose under proportional error), or
    <= 0 under exponential error; of every subject, or of those at ``subjects``
    (indices in file order)."""
    found = []
    for s in range(data.n_subjects) if subjects is None else subjects:
        f = predict(data, prior, s, np.zeros((1, prior.k)))[0]
        obs = data.obs_of(s)
        sd0 = (data.err.additive[obs] == 0) & (data.err.exponential[obs] == 0) & (f == 0)
        neg = (data.err.exponential[obs] > 0) & (f <= 0)
        for j in np.flatnonzero((sd0 | neg) & ~data.blq[obs]):
            found.append(int(data.record[obs[j]]))
    if not found:
        return []
    given = study.subjects
    assert given is not None
    assert given.dataset is not None
    ds = given.dataset
    rec = ds.records["REC"].to_numpy() - 1
    rule = (
        "the typical prediction here is 0 (before any dose?), which a proportional or "
        "exponential error cannot observe: give the output an additive part or drop the record"
    )
    rows = [(int(rec[i]), rule, float(ds.records["TIME"].to_numpy()[i])) for i in found]
    return cell_problems(ds.name, ds.first_line, ds.columns.get("TIME", "TIME"), rows)


def fit_twins(study: Study, *, subjects: Sequence[int] | None = None) -> CohortFit:
    """MAP estimates of the study's subjects (all, or those at ``subjects``, indices in
    file order), after every check (:func:`twin_problems`,
    :func:`typical_prediction_problems`).

    Raises
    ------
    ConfigError
        Every problem found, before anything is estimated.
    """
    data, prior = twin_cohort(study)
    problems = typical_prediction_problems(study, data, prior)
    if problems:
        raise ConfigError(problems)
    return fit_cohort(data, prior, subjects=subjects)
