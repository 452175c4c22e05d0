"""Early adverse-event warning: each patient's twin, estimated from the first
measurements of a graded output, forecasts the next cycle and warns when a severe grade
is likely.

For each dataset subject of a study with recorded doses (:mod:`vtrial.run.twins`),
:func:`early_warning`:

1. estimates its random effects from its own records (MAP,
   :func:`~vtrial.estimation.map.fit_subject`) and samples their posterior by SIR
   (:func:`~vtrial.estimation.posterior.sample_posterior`, ``n_draws`` resampled from
   ``n_proposal`` proposals; the stream is keyed by the seed and the subject's ID, so a
   subject's sample does not depend on the others);
2. forecasts the next cycle (:func:`~vtrial.run.forecast.forecast`) under the planned
   regimen continued: a :class:`~vtrial.run.forecast.Candidate` equal to the last
   recorded dose (route, amount, infusion duration ``AMT / RATE``) every ``II`` hours
   (or ``interval``), its first dose when the next dose is due
   (:func:`~vtrial.run.forecast.next_dose_time`), for one interval; and at each dose
   level of ``levels`` (fractions of that dose: 100, 75 and 50 % by default);
3. gives ``P(grade >= g)`` of the adverse event at each level: the share of posterior
   draws whose worst value of the event's output over the next cycle (on a grid of
   ``every`` hours, with each dose and end of infusion) reaches grade ``g`` (3 by
   default); a **warning** when it exceeds ``threshold`` (0.3) at the planned dose;
   and a **recommendation**: the largest level whose probability is at most
   ``threshold`` (:func:`~vtrial.run.forecast.recommend` with a guard ``grade <= g - 1``
   of probability ``threshold`` says which levels are eligible), none when even the
   smallest is not.

Which adverse event: the study's only ``adverse_events`` entry graded from thresholds
on an observed output (``outputs.observations`` or a ``model.residual_error`` entry),
e.g. ``neutropenia`` graded by CTCAE v5 from ``ANC`` measured on days 8 and 15 of cycle
1 (``config/studies/neutropenia_warning.yaml``); name it with ``event`` when there are
several (a named event may be graded from an unobserved output).

:func:`evaluate_warning` measures how well the warnings predict on a virtual cohort
whose truth is known: each virtual patient has the recorded history (doses,
covariates, sampling times) of a dataset subject, random effects drawn from the
population model, and observations of its true values with the residual error; its
true grade is the grade of its true worst value over the next cycle (the model without
residual error, on the same grid). The predicted probabilities are scored against the
true grades by the AUROC (:func:`auroc`, the Mann-Whitney statistic), the Brier score
(:func:`brier_score`) and a calibration table (:func:`calibration_table`).

The twin, the forecast and the truth share the study's model: the evaluation measures
what sparse, noisy data let the estimator predict when the model is right, not the
model's own error.

References
----------
- Friberg LE, Henningsson A, Maas H, Nguyen L, Karlsson MO. Model of
  chemotherapy-induced myelosuppression with parameter consistency across drugs. J Clin
  Oncol 2002;20(24):4713-21 (the myelosuppression model of the example).
- Hanley JA, McNeil BJ. The meaning and use of the area under a receiver operating
  characteristic (ROC) curve. Radiology 1982;143(1):29-36 (AUROC as the Mann-Whitney
  statistic).
- Brier GW. Verification of forecasts expressed in terms of probability. Mon Weather
  Rev 1950;78(1):1-3.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from vtrial.data.records import dose_routes
from vtrial.engine.host import Tolerances
from vtrial.errors import ConfigError, Problem
from vtrial.estimation.map import CohortData, Prior, fit_subject, predict
from vtrial.estimation.posterior import sample_posterior
from vtrial.infra.rng import keyed_uniforms
from vtrial.run.forecast import Candidate, Target, forecast, recommend
from vtrial.run.twins import twin_cohort, typical_prediction_problems
from vtrial.study.config import Study
from vtrial.trial.adverse import AdverseEvent

__all__ = [
    "FORECAST_TOLERANCES",
    "WarningEvaluation",
    "auroc",
    "brier_score",
    "calibration_table",
    "early_warning",
    "evaluate_warning",
    "planned_candidate",
    "subject_records",
    "virtual_cohort",
    "warning_event",
    "warning_risk",
]

#: solver controls of the forecasts (ODE states): the grades read values far from
#: rounding, so the estimator's 1e-10 is not needed
FORECAST_TOLERANCES = Tolerances(rtol=1e-8, atol=1e-11)
#: dose levels forecast by default: fractions of the planned dose
LEVELS = (1.0, 0.75, 0.5)
#: purposes of the evaluation's keyed draws (:mod:`vtrial.infra.rng`)
ETA_PURPOSE = "warning-eval:eta"
RESIDUAL_PURPOSE = "warning-eval:residual"


def _observed(study: Study) -> list[str]:
    return list(study.observations.outputs) or sorted(study.observations.errors)


def warning_event(study: Study, event: str | None = None) -> AdverseEvent:
    """The adverse event the warning forecasts (see the module docstring).

    Raises
    ------
    ConfigError
        No ``adverse_events`` entry graded from thresholds on an observed output, or
        several (``event`` not given), or an ``event`` that is not a threshold-graded
        entry, naming the key.
    """
    src = study.source
    events = study.adverse_events
    graded = {k: e for k, e in events.items() if e.output is not None and not e.drawn}
    if event is not None:
        e = events.get(event)
        if e is None or e.output is None or e.drawn:
            raise ConfigError(
                [
                    Problem(
                        src,
                        f"adverse_events.{event}",
                        "the warning forecasts an adverse event graded from thresholds on a "
                        f"model output; threshold-graded events: {sorted(graded) or 'none'}, "
                        f"got {'no such entry' if e is None else 'a drawn grade'}",
                    )
                ]
            )
        return e
    observed = _observed(study)
    usable = [k for k, e in graded.items() if e.output in observed]
    if len(usable) != 1:
        why = (
            "no adverse event is graded from thresholds on an observed output "
            f"(observed: {observed or 'none'}; threshold-graded events: "
            f"{ {k: e.output for k, e in graded.items()} or 'none' })"
            if not usable
            else f"several adverse events are graded on observed outputs ({usable}): name one"
        )
        raise ConfigError(
            [
                Problem(
                    src,
                    "adverse_events",
                    f"{why}; give one, e.g. neutropenia: {{output: ANC, grading: "
                    "ctcae_v5_neutrophil_count_decreased}, with a residual error on its output",
                )
            ]
        )
    return graded[usable[0]]


def subject_records(study: Study, subject: int) -> pd.DataFrame:
    """The records of dataset subject ``subject`` (index in file order)."""
    subjects = study.subjects
    assert subjects is not None
    assert subjects.dataset is not None
    r = subjects.dataset.records
    ids = r["ID"].to_numpy()
    first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    if not 0 <= subject < first.size:
        raise IndexError(f"subject: an index in 0..{first.size - 1}, got {subject}")
    hi = first[subject + 1] if subject + 1 < first.size else ids.size
    return r.iloc[first[subject] : hi].reset_index(drop=True)


def planned_candidate(
    study: Study, records: pd.DataFrame, *, interval: float | None = None
) -> Candidate:
    """The planned regimen continued: the last recorded dose of ``records`` (one
    subject's) as a :class:`~vtrial.run.forecast.Candidate`, every ``II`` of that dose
    record (or ``interval`` h, which takes precedence).

    Raises
    ------
    ConfigError
        No dose, a dose whose route a candidate cannot give (a dose into a model state,
        a modelled infusion rate ``RATE`` < 0), or no interval, naming the subject.
    """
    routes = dose_routes(study.model)
    subject = records["ID"].iloc[0]
    where = f"population.dataset (ID {subject})"
    dose = records[records["EVID"].isin((1, 4))]
    if dose.empty:
        raise ConfigError(
            [Problem(study.source, where, "no recorded dose: there is no regimen to continue")]
        )
    last = dose.iloc[-1]
    cmt = int(last["CMT"]) or routes.default
    amt, rate, ii = float(last["AMT"]), float(last["RATE"]), float(last["II"])
    every = float(interval) if interval is not None else ii
    problem = None
    if not (math.isfinite(every) and every > 0):
        problem = (
            "the last dose record has no II: give the interval of the planned regimen "
            f"(interval=), got II {ii:g}"
        )
    elif rate < 0:
        problem = f"a modelled infusion (RATE {rate:g}) cannot be continued as a candidate"
    elif cmt == routes.oral and routes.oral != routes.iv:
        route, duration = "oral", 0.0
    elif cmt == routes.iv:
        route = "iv_infusion" if rate > 0 else "iv_bolus"
        duration = amt / rate if rate > 0 else 0.0
    else:
        problem = (
            f"the last dose goes into CMT {cmt}, not a route a candidate gives "
            f"({routes.describe()})"
        )
    if problem is not None:
        raise ConfigError([Problem(study.source, where, problem)])
    return Candidate(route, amt, every, duration)


def _levels(levels: Sequence[float]) -> list[float]:
    out = sorted({1.0, *(float(x) for x in levels)}, reverse=True)
    if not all(math.isfinite(x) and x > 0 for x in out):
        raise ValueError(f"levels: fractions of the planned dose, > 0, got {list(levels)}")
    return out


def warning_risk(
    study: Study,
    subject: int,
    eta: np.ndarray,
    *,
    event: str | None = None,
    grade: int = 3,
    threshold: float = 0.3,
    levels: Sequence[float] = LEVELS,
    every: float = 6.0,
    interval: float | None = None,
    tolerances: Tolerances | None = FORECAST_TOLERANCES,
) -> tuple[pd.DataFrame, np.ndarray]:
    """``P(grade >= grade)`` of subject ``subject`` (index in file order) over the next
    cycle at each dose level, for the draws ``eta`` ``(E, k)`` of its random effects.

    Returns
    -------
    table : DataFrame
        One row per level, largest first (the planned dose, level 1, always): ``level``,
        ``dose`` (mg), ``start`` and ``end`` (h), ``n_draws`` (draws simulated),
        ``p`` (``P(grade >= grade)``), ``eligible`` (``p <= threshold``) and ``reason``.
    grades : ndarray of int64, (L, E)
        Each draw's grade at each level (-1 where its simulation failed).

    Raises
    ------
    ConfigError
        :func:`warning_event`, :func:`planned_candidate`, or a ``grade`` the event does
        not define.
    ValueError
        ``threshold`` outside [0, 1], or a level <= 0.
    """
    ev = warning_event(study, event)
    if not 1 <= grade <= ev.n_grades:
        raise ConfigError(
            [
                Problem(
                    study.source,
                    f"adverse_events.{ev.name}",
                    f"grades 1 to {ev.n_grades} are defined, got grade {grade}",
                )
            ]
        )
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold: a probability in [0, 1], got {threshold}")
    fractions = _levels(levels)
    plan = planned_candidate(study, subject_records(study, subject), interval=interval)
    cands = [dataclasses.replace(plan, dose=plan.dose * f) for f in fractions]
    fc = forecast(
        study,
        subject,
        eta,
        cands,
        horizon=plan.interval,
        every=every,
        tolerances=tolerances,
        exposure=False,
    )
    col = f"ae_{ev.name}_grade"
    target = Target(guards={col: ("max", float(grade - 1))}, guard_probability=threshold)
    scored = recommend(fc, target)
    m = fc.metrics
    n_draw = np.atleast_2d(eta).shape[0]
    grades = np.where(m["status"].to_numpy() == 0, m[col].to_numpy(), -1)
    grades = grades.reshape(len(cands), n_draw).astype(np.int64)
    table = pd.DataFrame(
        {
            "level": fractions,
            "dose": [c.dose for c in cands],
            "start": fc.start,
            "end": fc.end,
            "n_draws": scored["n_draws"].to_numpy(),
            "p": scored[f"p_{col}_max"].to_numpy(dtype=np.float64),
            "eligible": scored["eligible"].to_numpy(dtype=bool),
            "reason": scored["reason"].to_numpy(),
        }
    )
    return table, grades


def early_warning(
    study: Study,
    *,
    subjects: Sequence[int] | None = None,
    event: str | None = None,
    grade: int = 3,
    threshold: float = 0.3,
    levels: Sequence[float] = LEVELS,
    n_draws: int = 500,
    n_proposal: int = 2000,
    min_ess: float = 200.0,
    every: float = 6.0,
    interval: float | None = None,
    seed: int | None = None,
    tolerances: Tolerances | None = FORECAST_TOLERANCES,
) -> pd.DataFrame:
    """The early warning of each subject (all, or those at ``subjects``, indices in
    file order; see the module docstring).

    Parameters
    ----------
    study : Study
        A dataset study with recorded doses, random effects, a residual error on the
        observed outputs and a threshold-graded adverse event.
    event : str, optional
        The adverse event (by default the only one graded on an observed output).
    grade : int
        The severe grade: ``P(grade >= grade)`` is forecast.
    threshold : float
        Warn when ``P(grade >= grade)`` at the planned dose exceeds it; the
        recommended level is the largest whose probability is at most it.
    levels : sequence of float
        Dose levels, fractions of the planned dose (1 is always forecast).
    n_draws, n_proposal : int
        Posterior draws resampled, and proposals weighted, by SIR.
    min_ess : float
        Effective sample size of the SIR weights below which ``status`` flags the
        sample (at 200 and 500 draws the Monte Carlo SE of a probability is at most
        about ``0.5 * sqrt(1/200 + 1/500)``, 0.04).
    every : float
        Forecast grid (h) on which the worst value is found.
    interval : float, optional
        The planned interval (h), for records whose last dose has no ``II``.
    seed : int, optional
        Seed of the posterior samples (keyed by subject ID); the study's by default.
    tolerances : Tolerances, optional
        Solver controls of the forecasts (None: the estimator's).

    Returns
    -------
    DataFrame
        One row per subject: ``ID``, ``dose`` (the planned dose, mg), ``start`` (h, when
        it is due), ``p_grade<g>`` (``P(grade >= g)`` at the planned dose), ``warn``,
        ``p_grade<g>_<pct>`` at each other level (e.g. ``p_grade3_75``),
        ``recommended_level`` and ``recommended_dose`` (NaN when no level is at most
        ``threshold``), ``action`` (in words), ``ess`` (of the SIR weights),
        ``n_draws`` (simulated at the planned dose) and ``status`` (``ok``, or what
        limits the estimate: the MAP fit's or the posterior sample's status, failed
        simulations). A subject whose posterior could not be sampled has NaN
        probabilities, ``warn`` False and its reason in ``status``.

    Raises
    ------
    ConfigError
        What keeps the study from estimating twins (:func:`vtrial.run.twins.twin_cohort`,
        :func:`~vtrial.run.twins.typical_prediction_problems`), or from forecasting the
        adverse event (:func:`warning_event`, :func:`planned_candidate`), before
        anything is estimated.
    """
    ev = warning_event(study, event)
    data, prior = twin_cohort(study)
    problems = typical_prediction_problems(study, data, prior)
    if problems:
        raise ConfigError(problems)
    idx = list(range(data.n_subjects)) if subjects is None else [int(s) for s in subjects]
    for s in idx:  # every planned regimen is checked before anything is estimated
        planned_candidate(study, subject_records(study, s), interval=interval)
    fractions = _levels(levels)
    seed = study.seed if seed is None else int(seed)
    rows = [
        _subject_warning(
            study,
            data,
            prior,
            s,
            n_draws=n_draws,
            n_proposal=n_proposal,
            min_ess=min_ess,
            seed=seed,
            event=ev.name,
            grade=grade,
            threshold=threshold,
            levels=fractions,
            every=every,
            interval=interval,
            tolerances=tolerances,
        )
        for s in idx
    ]
    return pd.DataFrame(rows)


def _pct(level: float) -> str:
    return f"{100 * level:g}".replace(".", "_")


def _subject_warning(
    study: Study,
    data: CohortData,
    prior: Prior,
    s: int,
    *,
    n_draws: int,
    n_proposal: int,
    min_ess: float,
    seed: int,
    event: str,
    grade: int,
    threshold: float,
    levels: list[float],
    every: float,
    interval: float | None,
    tolerances: Tolerances | None,
) -> dict[str, Any]:
    """One row of :func:`early_warning`."""
    fit = fit_subject(data, prior, s)
    post = sample_posterior(
        data, prior, s, fit, n=n_draws, n_proposal=n_proposal, seed=seed, min_ess=min_ess
    )
    plan = planned_candidate(study, subject_records(study, s), interval=interval)
    p_name = f"p_grade{grade}"
    row: dict[str, Any] = {
        "ID": data.events.subjects[s],
        "dose": plan.dose,
        "start": math.nan,
        p_name: math.nan,
        "warn": False,
    }
    for f in levels[1:]:
        row[f"{p_name}_{_pct(f)}"] = math.nan
    row.update(
        recommended_level=math.nan,
        recommended_dose=math.nan,
        action="",
        ess=post.ess,
        n_draws=0,
    )
    status = [] if fit.ok else [f"MAP: {fit.status}"]
    if not post.ok:
        status.append(f"posterior: {post.status}")
    if not np.all(np.isfinite(post.eta)):
        row["action"] = "no forecast"
        row["status"] = "; ".join(status)
        return row
    table, _ = warning_risk(
        study,
        s,
        post.eta,
        event=event,
        grade=grade,
        threshold=threshold,
        levels=levels,
        every=every,
        interval=interval,
        tolerances=tolerances,
    )
    p = table["p"].to_numpy()
    row["start"] = float(table["start"].iloc[0])
    row[p_name] = float(p[0])
    row["warn"] = bool(p[0] > threshold)
    for f, pf in zip(levels[1:], p[1:], strict=True):
        row[f"{p_name}_{_pct(f)}"] = float(pf)
    row["n_draws"] = int(table["n_draws"].iloc[0])
    failed = int(n_draws * len(levels) - table["n_draws"].sum())
    if failed:
        status.append(f"{failed} simulations of the forecast failed")
    ok = table[table["eligible"]]
    if len(ok):
        best = ok.iloc[0]  # levels are largest first
        row["recommended_level"] = float(best["level"])
        row["recommended_dose"] = float(best["dose"])
        row["action"] = (
            "continue the planned dose"
            if best["level"] == 1.0
            else f"reduce to {_pct(float(best['level']))} % ({best['dose']:g} mg)"
        )
    else:
        row["action"] = (
            f"no level keeps P(grade >= {grade}) <= {threshold:g}: "
            f"lowest {float(p.min()):.3f} at {_pct(levels[int(np.argmin(p))])} %"
        )
    row["status"] = "; ".join(status) or "ok"
    return row


# ---- scores


def _scored(p: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p, dtype=np.float64).ravel()
    y = np.asarray(y).ravel()
    if p.shape != y.shape:
        raise ValueError(f"p and y: the same length, got {p.size} and {y.size}")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("y: outcomes 0 or 1 (False or True)")
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p: probabilities in [0, 1] (drop the failed ones first)")
    return p, y.astype(bool)


def auroc(p: Any, y: Any) -> float:
    """Area under the ROC curve of predictions ``p`` for outcomes ``y`` (0/1): the
    Mann-Whitney statistic, the probability that a random positive is scored above a
    random negative, a tie counting one half; NaN without both outcomes.

    Examples
    --------
    >>> auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    >>> auroc([0.2, 0.2], [0, 1])
    0.5
    """
    p, y = _scored(p, y)
    n1, n0 = int(y.sum()), int((~y).sum())
    if not n1 or not n0:
        return math.nan
    ranks = stats.rankdata(p)  # average ranks of ties
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def brier_score(p: Any, y: Any) -> float:
    """Brier score: the mean squared difference of predictions ``p`` and outcomes
    ``y`` (0/1); 0 is perfect, ``prevalence * (1 - prevalence)`` is what predicting
    the prevalence for everyone scores.

    Examples
    --------
    >>> brier_score([0.0, 0.5, 1.0], [0, 1, 1])
    0.08333333333333333
    """
    p, y = _scored(p, y)
    return float(np.mean((p - y) ** 2))


def calibration_table(p: Any, y: Any, groups: int = 10) -> pd.DataFrame:
    """Calibration: the predictions sorted and cut into ``groups`` groups of (nearly)
    equal size (deciles of predicted risk by default; ties split by their order), and
    in each the mean prediction against the observed frequency.

    Returns
    -------
    DataFrame
        One row per group: ``group`` (1 the lowest), ``n``, ``p_min``, ``p_max``,
        ``predicted`` (mean ``p``), ``observed`` (share of outcomes 1) and ``events``.
    """
    p, y = _scored(p, y)
    if groups < 1:
        raise ValueError(f"groups: must be >= 1, got {groups}")
    order = np.argsort(p, kind="stable")
    rows = []
    for g, part in enumerate(np.array_split(order, min(groups, max(p.size, 1))), start=1):
        if not part.size:
            continue
        rows.append(
            {
                "group": g,
                "n": int(part.size),
                "p_min": float(p[part].min()),
                "p_max": float(p[part].max()),
                "predicted": float(p[part].mean()),
                "observed": float(y[part].mean()),
                "events": int(y[part].sum()),
            }
        )
    return pd.DataFrame(rows)


# ---- evaluation on a virtual cohort


@dataclass(frozen=True)
class WarningEvaluation:
    """The early warning scored on a virtual cohort (:func:`evaluate_warning`).

    Attributes
    ----------
    patients : DataFrame
        One row per virtual patient: ``ID``, ``template`` (the dataset ID whose history
        it has), ``eta_<P>`` (its true random effects), the columns of
        :func:`early_warning`, ``true_grade`` and ``event`` (true grade >= the grade),
        and ``worst_observed`` (its lowest observation of the event's output, or highest
        for an event graded above thresholds: a naive predictor).
    auroc, brier : float
        Of the predicted probabilities at the planned dose, over the patients with one.
    brier_reference : float
        The Brier score of predicting the prevalence for everyone.
    auroc_worst_observed : float
        AUROC of ``worst_observed`` as the predictor (the lower, the riskier for an
        event graded below thresholds; the higher, above).
    calibration : DataFrame
        :func:`calibration_table`.
    warn : dict
        The warnings (``p > threshold``) against the truth: ``sensitivity``,
        ``specificity``, ``ppv``, ``npv``, ``warned``.
    prevalence : float
        Share of patients whose true grade reaches the grade.
    n_failed : int
        Patients without a prediction (left out of the scores).
    """

    patients: pd.DataFrame
    auroc: float
    brier: float
    brier_reference: float
    auroc_worst_observed: float
    calibration: pd.DataFrame
    warn: dict[str, float]
    prevalence: float
    n_failed: int


def _virtual_study(study: Study, records: pd.DataFrame, folder: Path, name: str) -> Study:
    """``study`` with ``records`` (standard items and covariates) as its dataset,
    random effects drawn as usual (``parameters: iiv``)."""
    path = folder / f"{name}.csv"
    records.to_csv(path, index=False, na_rep=".")
    data = copy.deepcopy(study.data)
    spec = data["population"]["dataset"]
    spec.pop("columns", None)
    spec.update(path=str(path), parameters="iiv")
    # the study as validated, its dataset changed: the same typed sections and model
    return dataclasses.replace(study, data=data, source=f"{study.source} (virtual cohort)")


def virtual_cohort(
    study: Study, n: int, *, seed: int | None = None, observe_until: float | None = None
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Records of ``n`` virtual patients (``DV`` still the templates'): patient ``i``
    (ID ``i + 1``) has the records of dataset subject ``i mod N`` (without its
    observations after ``observe_until`` h, when given); with each patient's template
    (dataset ID) and true random effects ``(n, k)``, drawn from the prior (keyed: row
    ``i`` of the stream ``warning-eval:eta`` under ``seed``, whatever ``n``)."""
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    subjects = study.subjects
    if subjects is None or subjects.dataset is None:
        raise ConfigError(
            [Problem(study.source, "population.dataset", "the virtual cohort copies a dataset")]
        )
    ds = subjects.dataset
    seed = study.seed if seed is None else int(seed)
    n_sub = int(ds.subjects.size)
    blocks = [subject_records(study, j) for j in range(n_sub)]
    if observe_until is not None:
        late = [(b["EVID"] == 0) & (b["TIME"] > observe_until) for b in blocks]
        blocks = [b[~d].reset_index(drop=True) for b, d in zip(blocks, late, strict=True)]
    keep = [c for c in blocks[0].columns if c != "REC"]
    parts, template = [], np.empty(n, dtype=object)
    for i in range(n):
        b = blocks[i % n_sub]
        template[i] = b["ID"].iloc[0]
        parts.append(b[keep].assign(ID=i + 1))
    records = pd.concat(parts, ignore_index=True)
    var = study.variability
    k = len(var.omega_names)
    u = keyed_uniforms(seed, ETA_PURPOSE, 0, n, k)
    chol = np.linalg.cholesky(np.asarray(var.omega, dtype=np.float64))
    eta = special.ndtri(u) @ chol.T
    return records, template, eta


def evaluate_warning(
    study: Study,
    n: int = 300,
    *,
    seed: int | None = None,
    groups: int = 10,
    observe_until: float | None = None,
    folder: str | Path | None = None,
    **settings: Any,
) -> WarningEvaluation:
    """The early warning scored on ``n`` virtual patients (see the module docstring).

    Parameters
    ----------
    study : Study
        As for :func:`early_warning`; its dataset gives the virtual patients'
        histories.
    n : int
        Virtual patients.
    seed : int, optional
        Seed of the true random effects and residual errors (keyed per patient), and of
        the posterior samples; the study's by default.
    groups : int
        Groups of the calibration table.
    observe_until : float, optional
        Leave out the observations after this time (h): e.g. 200 keeps the baseline
        and day-8 counts of the example, not the day-15 one.
    folder : path, optional
        Where the virtual datasets are written (a temporary folder by default).
    **settings
        Passed to :func:`early_warning` (``grade``, ``threshold``, ``n_draws``,
        ``every``, ...).

    Returns
    -------
    WarningEvaluation
    """
    seed = study.seed if seed is None else int(seed)
    grade = int(settings.get("grade", 3))
    ev = warning_event(study, settings.get("event"))
    settings = {**settings, "event": ev.name}
    with tempfile.TemporaryDirectory(prefix="vtrial-warning-") as tmp:
        where = Path(folder) if folder is not None else Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        records, template, eta = virtual_cohort(study, n, seed=seed, observe_until=observe_until)
        vstudy = _virtual_study(study, records, where, "virtual_templates")
        data, prior = twin_cohort(vstudy)
        dv = records["DV"].to_numpy(dtype=np.float64).copy()
        blq = np.zeros(dv.size, dtype=np.int64)
        n_obs = np.bincount(data.events.row_subject[data.obs_row], minlength=n)
        eps = special.ndtri(keyed_uniforms(seed, RESIDUAL_PURPOSE, 0, n, int(n_obs.max())))
        outs = list(data.model.outputs)
        errors = vstudy.observations.errors
        for s in range(n):
            f = predict(data, prior, s, eta[s])[0]
            obs = data.obs_of(s)
            for j, o in enumerate(obs):
                err = errors[outs[int(data.obs_output[o])]]
                y = float(err.observe(f[j], eps[s, j]))
                rec = int(data.record[o])
                dv[rec] = y
                blq[rec] = int(err.blq(y))
        records = records.assign(DV=dv)
        if blq.any() or "BLQ" in records:
            records = records.assign(BLQ=blq)
        observed = np.zeros(dv.size, dtype=bool)
        observed[data.record] = True
        vstudy = _virtual_study(study, records, where, "virtual_cohort")
        table = early_warning(vstudy, seed=seed, **settings)
        plan_every = float(settings.get("every", 6.0))
        true_grade = np.empty(n, dtype=np.int64)
        for s in range(n):
            # the truth: the true random effects, no residual error, tight tolerances
            _, g = warning_risk(
                vstudy,
                s,
                eta[s][None, :],
                event=ev.name,
                grade=1,
                threshold=1.0,
                levels=(1.0,),
                every=plan_every,
                interval=settings.get("interval"),
                tolerances=None,
            )
            true_grade[s] = int(g[0, 0])
        worst_seen = (
            pd.Series(dv)
            .where(observed)
            .groupby(records["ID"].to_numpy())
            .agg("min" if ev.direction < 0 else "max")
        )
    names = list(prior.names)
    out = table.copy()
    out.insert(1, "template", template)
    for i, name in enumerate(names):
        out.insert(2 + i, f"eta_{name}", eta[:, i])
    out["true_grade"] = true_grade
    out["event"] = true_grade >= grade
    out["worst_observed"] = worst_seen.to_numpy()
    p_col = f"p_grade{grade}"
    ok = np.isfinite(out[p_col].to_numpy(dtype=np.float64))
    p = out[p_col].to_numpy(dtype=np.float64)[ok]
    y = out["event"].to_numpy()[ok]
    prev = float(y.mean()) if y.size else math.nan
    warned = out["warn"].to_numpy(dtype=bool)[ok]
    naive = out["worst_observed"].to_numpy(dtype=np.float64)[ok]
    score = -naive if ev.direction < 0 else naive
    naive_p = stats.rankdata(score) / max(score.size, 1)  # a monotone map to (0, 1]
    return WarningEvaluation(
        patients=out,
        auroc=auroc(p, y),
        brier=brier_score(p, y),
        brier_reference=prev * (1.0 - prev),
        auroc_worst_observed=auroc(naive_p, y),
        calibration=calibration_table(p, y, groups),
        warn={
            "warned": float(warned.mean()) if warned.size else math.nan,
            "sensitivity": _share(warned, y),
            "specificity": _share(~warned, ~y),
            "ppv": _share(y, warned),
            "npv": _share(~y, ~warned),
        },
        prevalence=prev,
        n_failed=int((~ok).sum()),
    )


def _share(hit: np.ndarray, among: np.ndarray) -> float:
    """Share of ``hit`` among ``among`` (NaN when there are none)."""
    return float(hit[among].mean()) if among.any() else math.nan
