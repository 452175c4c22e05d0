"""Forecasts of a twin under candidate regimens, and the dose that reaches a target.

A twin is a dataset subject with random effects drawn from its posterior (the MAP
estimate alone, a Laplace or an SIR sample: :mod:`vtrial.estimation`). Its forecast
under a candidate regimen is the simulation of its own records followed by the
candidate's doses, with everything the records say about the patient (its doses, its
covariates, which hold from its last record on) and the posterior's ``eta``: one
kernel row per posterior draw and candidate, in one batched call per dosing interval.

How a candidate is given (:class:`Candidate`, :func:`candidates_from_data`): a route
(``iv_infusion``, ``iv_bolus``, ``oral``), a dose (mg), an interval (h) and, for an
infusion, its duration (h); lists of doses and intervals expand to every combination,
as in ``{route: iv_infusion, dose: [750, 1000, 1250], duration: 1, interval: [8, 12]}``.

When the candidate starts and what is measured (:func:`forecast`):

- **start**: the first candidate dose is given at ``start`` (h, the dataset's time);
  by default when the next recorded dose would be due, the last recorded dose (with
  its ``ADDL`` repeats) plus its interval (its ``II``, else the time between the last
  two doses), and never before the subject's last record;
- **end**: the candidate's doses are given every ``interval`` from ``start`` for at
  least ``horizon`` hours: ``end = start + ceil(horizon / interval) * interval``, the
  time the next dose would be due, so the value at ``end`` is a trough;
- **metrics** of each draw, for models with a concentration ``CP`` (exact, from the
  kernel's closed form or its AUC state):

  - ``trough``: ``CP`` at ``end``;
  - ``peak``: the largest ``CP`` of the last interval, on the forecast grid (every
    ``every`` hours) and at each dose and end of infusion (exact for IV doses; within
    the grid's resolution after an oral dose);
  - ``auc_24``: the area under ``CP`` over the last 24 h before ``end`` (mg·h/L),
    the difference of the kernel's exact AUCs to ``end`` and to ``end - 24``;
  - and every model output at ``end`` (``<output>``, e.g. the glucose reached);

- **adverse events** graded from an output (the study's ``adverse_events`` with
  thresholds): each draw's worst value from ``start`` to ``end`` on the forecast
  grid gives its grade, and ``P(grade >= g)`` is the share of draws reaching ``g``;
- **bands**: quantiles of every output across the draws at each grid time.

:func:`recommend` scores the candidates against a :class:`Target`: ranges of metrics
that must all hold (e.g. ``auc_24`` in [400, 600]) with at least a given posterior
probability, and guards (e.g. ``trough`` above 20 mg/L) whose probability must stay
below a limit. The recommendation is the eligible candidate with the smallest daily
dose (then the longest interval), as posologyr's and commercial MIPD tools rank
regimens; the table says for every candidate why it is or is not eligible.

A forecast is a pure function of the twin's records, its draws and the candidates:
bit-identical whatever else is forecast in the same call.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from vtrial.data.records import dose_routes
from vtrial.engine.host import KernelResult, Tolerances, run_kernel
from vtrial.errors import ConfigError, Problem
from vtrial.estimation.map import CohortData, Prior, predict
from vtrial.estimation.twinspec import (
    ROUTES,
    Candidate,
    Target,
    candidates_from_data,
    target_from_data,
)
from vtrial.model.spec import PK_CONCENTRATION
from vtrial.population.sampling import apply_effect
from vtrial.run.twins import subject_cohort, subject_records, twin_problems
from vtrial.study.config import Study
from vtrial.trial.adverse import threshold_grades

__all__ = [
    "ROUTES",
    "Candidate",
    "Forecast",
    "Target",
    "candidates_from_data",
    "forecast",
    "next_dose_time",
    "recommend",
    "target_from_data",
]

#: quantiles of the forecast bands
BAND_QUANTILES = (0.05, 0.5, 0.95)


@dataclass(frozen=True)
class Forecast:
    """A twin's forecast under each candidate (:func:`forecast`).

    Attributes
    ----------
    candidates : list of Candidate
    start : float
        Time (h) of each candidate's first dose.
    end : ndarray, (C,)
        Each candidate's end (h): the time its next dose would be due.
    metrics : DataFrame
        One row per candidate and draw: ``candidate`` (index), ``draw``, ``status``
        (0 ok), the :data:`METRICS` (with ``CP``), every output at the end, and
        ``ae_<event>_grade`` for each adverse event graded from an output.
    bands : DataFrame
        ``candidate``, ``time`` (h), ``output`` and the quantiles
        :data:`BAND_QUANTILES` (columns ``q05``, ``q50``, ``q95``) over the draws.
    """

    candidates: list[Candidate]
    start: float
    end: np.ndarray
    metrics: pd.DataFrame
    bands: pd.DataFrame

    def summary(self) -> pd.DataFrame:
        """One row per candidate: its regimen, the median and 90 % interval of each
        metric, and ``P(<event> grade >= g)`` for each graded adverse event."""
        rows = []
        m = self.metrics
        grades = [c for c in m.columns if c.startswith("ae_") and c.endswith("_grade")]
        values = [c for c in m.columns if c not in ("candidate", "draw", "status", *grades)]
        for c, cand in enumerate(self.candidates):
            sub = m[m["candidate"] == c]
            ok = sub["status"].to_numpy() == 0
            row: dict[str, Any] = {
                "candidate": c,
                "regimen": cand.label,
                "route": cand.route,
                "dose": cand.dose,
                "interval": cand.interval,
                "duration": cand.duration,
                "daily_dose": cand.daily_dose,
                "start": self.start,
                "end": float(self.end[c]),
                "n_draws": int(ok.sum()),
            }
            for col in values:
                v = sub[col].to_numpy(dtype=np.float64)[ok]
                q = np.quantile(v, (0.05, 0.5, 0.95)) if v.size else (math.nan,) * 3
                row[f"{col}_q05"], row[f"{col}_q50"], row[f"{col}_q95"] = (float(x) for x in q)
            for col in grades:
                g = sub[col].to_numpy()[ok]
                for k in range(1, int(g.max(initial=0)) + 1):
                    row[f"p_{col}_ge{k}"] = float(np.mean(g >= k))
            rows.append(row)
        return pd.DataFrame(rows)


def next_dose_time(records: pd.DataFrame) -> float:
    """When the next dose of one subject's records would be due (see the module
    docstring): the last dose (with its ``ADDL`` repeats) plus its ``II``, else plus
    the time between the last two doses; never before the last record."""
    time = records["TIME"].to_numpy(dtype=np.float64)
    last = float(time.max()) if time.size else 0.0
    dose = records["EVID"].isin((1, 4)).to_numpy()
    if not dose.any():
        return last
    t = time[dose]
    ii = records["II"].to_numpy(dtype=np.float64)[dose]
    addl = records["ADDL"].to_numpy()[dose]
    t_last = t + addl * ii
    j = int(np.argmax(t_last))
    if ii[j] > 0:
        gap = ii[j]
    elif t.size >= 2:
        gap = float(np.diff(np.unique(t_last))[-1]) if np.unique(t_last).size >= 2 else 0.0
    else:
        gap = 0.0
    return max(last, float(t_last[j]) + gap)


def _forecast_records(
    records: pd.DataFrame,
    candidates: Sequence[Candidate],
    routes: Any,
    start: float,
    horizon: float,
    every: float,
) -> tuple[pd.DataFrame, np.ndarray, list[np.ndarray]]:
    """One subject's records followed by each candidate's doses and forecast times
    (``EVID 2``), candidate ``c`` as subject ``ID = c``; each candidate's end and the
    positions of its forecast records."""
    last = records.iloc[[-1]]
    blocks, ends, added = [], [], []
    offset = 0
    for c, cand in enumerate(candidates):
        n_dose = max(1, math.ceil(horizon / cand.interval - 1e-9))
        end = start + n_dose * cand.interval
        doses = start + cand.interval * np.arange(n_dose)
        cmt = routes.oral if cand.route == "oral" else routes.iv
        grid = np.arange(start, end + 1e-9 * end, every)
        extra = [doses]  # post-dose values: a record after the dose at its time
        if cand.route == "iv_infusion":
            extra.append(doses + cand.duration)
        times = np.unique(np.concatenate([grid, *extra, [end]]))
        n_d, n_t = doses.size, times.size
        new = pd.concat([last] * (n_d + n_t), ignore_index=True)
        is_dose = np.r_[np.ones(n_d, bool), np.zeros(n_t, bool)]
        t_new = np.r_[doses, times]
        order = np.lexsort((~is_dose, t_new))  # a dose before the forecast record at its time
        new["TIME"] = t_new
        new["EVID"] = np.where(is_dose, 1, 2)
        new["MDV"] = 1
        new["AMT"] = np.where(is_dose, cand.dose, 0.0)
        rate = cand.dose / cand.duration if cand.route == "iv_infusion" else 0.0
        new["RATE"] = np.where(is_dose, rate, 0.0)
        new["CMT"] = np.where(is_dose, cmt, 0)
        new["II"] = 0.0
        new["ADDL"] = 0
        new["SS"] = 0
        new["DV"] = np.nan
        for col, value in (("BLQ", 0), ("LLOQ", np.nan)):
            if col in new:
                new[col] = value
        new = new.iloc[order]
        block = pd.concat([records, new], ignore_index=True)
        block["ID"] = c
        blocks.append(block)
        ends.append(end)
        added.append(offset + len(records) + np.flatnonzero(new["EVID"].to_numpy() == 2))
        offset += len(block)
    return pd.concat(blocks, ignore_index=True), np.asarray(ends), added


def _params(data: CohortData, prior: Prior, rows: np.ndarray, eta: np.ndarray) -> dict[str, Any]:
    """Kernel parameters of ``rows`` (a subject's kernel rows) for each row of ``eta``
    ``(E, k)``, draw-major."""
    n_eval, n_rows = eta.shape[0], rows.size
    n = n_eval * n_rows
    params: dict[str, Any] = {}
    for name, value in data.typical.items():
        params[name] = np.tile(np.asarray(value)[rows], (n_eval,) + (1,) * (np.ndim(value) - 1))
    for i, name in enumerate(prior.names):
        typ = params.get(name)
        if typ is None:
            typ = np.full(n, data.model.parameters[name].value)
        effect = np.repeat(eta[:, i], n_rows)
        if np.ndim(typ) == 2:
            effect = effect[:, None]
        params[name] = apply_effect(typ, effect, prior.distributions[i])
    return params


def _run(
    data: CohortData, prior: Prior, subjects: Sequence[int], eta: np.ndarray, end: float
) -> tuple[KernelResult, np.ndarray]:
    """One kernel call: every subject of ``subjects`` (all with one kernel row) under
    every draw of ``eta``, simulated to ``end``; patient index ``(subject, draw)``."""
    rows = np.concatenate([data.rows_of(s) for s in subjects])
    n = rows.size * eta.shape[0]
    per = [_params(data, prior, data.rows_of(s), eta) for s in subjects]
    params = {k: np.concatenate([p[k] for p in per]) for k in per[0]}
    ev = data.events
    res = run_kernel(
        data.model,
        params,
        n=n,
        events=ev.table,
        arm=np.repeat(rows, eta.shape[0]),
        dose_scale=np.ones((n, 3)),
        grid=np.array([ev.start, end]),
        tolerances=data.tolerances,
        threads=1,
        n_obs=ev.n_obs,
    )
    return res, rows


def forecast(
    study: Study,
    subject: int,
    eta: np.ndarray,
    candidates: Sequence[Candidate],
    *,
    records: pd.DataFrame | None = None,
    start: float | None = None,
    horizon: float = 72.0,
    every: float = 1.0,
    tolerances: Tolerances | None = None,
    exposure: bool = True,
) -> Forecast:
    """Forecast dataset subject ``subject`` (index in file order) under each candidate,
    for each draw of its random effects ``eta`` ``(E, k)`` (see the module docstring).

    Parameters
    ----------
    records : DataFrame, optional
        The subject's records (the dataset's columns) when they are not the study
        dataset's: a twin's, extended by updates (:mod:`vtrial.run.twin_state`).
    tolerances : Tolerances, optional
        The solver's controls for ODE states (the estimator's, rtol
        :data:`~vtrial.estimation.map.ESTIMATION_RTOL`, by default).
    exposure : bool
        False leaves out the exposure metrics of ``CP`` (``trough``, ``peak``,
        ``auc_24``) and the second kernel call that ``auc_24`` needs, for a forecast
        that reads only outputs and adverse events.

    Raises
    ------
    ConfigError
        A candidate whose route the model has no compartment for, or a ``start``
        before the subject's last record, before anything is simulated.
    """
    found = twin_problems(study)
    if found:
        raise ConfigError(found)
    model = study.model
    routes = dose_routes(model)
    eta = np.atleast_2d(np.asarray(eta, dtype=np.float64))
    if records is None:
        records = subject_records(study, subject)
    last = float(records["TIME"].max())
    t0 = next_dose_time(records) if start is None else float(start)
    problems = []
    for c, cand in enumerate(candidates):
        if (routes.oral if cand.route == "oral" else routes.iv) is None:
            problems.append(
                Problem(
                    study.source,
                    f"forecast.candidates[{c}].route",
                    f"the model has no compartment for this route (its dose compartments: "
                    f"{routes.describe()}), got {cand.route!r}",
                )
            )
    if t0 < last:
        problems.append(
            Problem(
                study.source,
                "forecast.start",
                f"a forecast starts at or after the subject's last record ({last:g} h), got {t0:g}",
            )
        )
    if not every > 0 or not horizon > 0:
        problems.append(
            Problem(
                study.source,
                "forecast",
                f"horizon and every must be > 0 (h), got {horizon!r} and {every!r}",
            )
        )
    if problems:
        raise ConfigError(problems)
    frame, ends, added = _forecast_records(records, candidates, routes, t0, horizon, every)
    data, prior = subject_cohort(study, frame, subject=subject)
    if tolerances is not None:
        data = dataclasses.replace(data, tolerances=tolerances)
    outs = list(data.model.outputs)
    has_cp = PK_CONCENTRATION in outs and exposure
    n_draw = eta.shape[0]
    graded = [(name, ev) for name, ev in study.adverse_events.items() if ev.output and not ev.drawn]
    metric_rows: list[pd.DataFrame] = []
    band_rows: list[pd.DataFrame] = []
    for end in np.unique(ends):
        group = [c for c in range(len(candidates)) if ends[c] == end]
        res, rows = _run(data, prior, group, eta, float(end))
        if rows.size != len(group):
            raise ValueError("forecast: a subject with resets (EVID 3/4) in its records")
        auc_before = None
        if has_cp:
            before, _ = _run(data, prior, group, eta, float(end) - 24.0)
            auc_before = before.pk[:, 2]
        for g, c in enumerate(group):
            cand = candidates[c]
            pat = g * n_draw + np.arange(n_draw)
            rec = added[c]
            t = frame["TIME"].to_numpy()[rec]
            vals = res.obs[pat][:, data.events.obs_row[rec], :]  # (E, J, O)
            status = res.status[pat].astype(np.int64)
            vals = np.where((status == 0)[:, None, None], vals, np.nan)
            cols: dict[str, Any] = {
                "candidate": np.full(n_draw, c, dtype=np.int64),
                "draw": np.arange(n_draw, dtype=np.int64),
                "status": status,
            }
            at_end = vals[:, -1, :]
            if has_cp:
                j = outs.index(PK_CONCENTRATION)
                last_iv = t >= float(end) - cand.interval - 1e-9
                cols["trough"] = at_end[:, j]
                cols["peak"] = np.max(vals[:, last_iv, j], axis=1)
                assert auc_before is not None
                cols["auc_24"] = res.pk[pat, 2] - auc_before[pat]
            for o, name in enumerate(outs):
                cols[name] = at_end[:, o]
            for name, ev in graded:
                thr, direction = ev.grading()
                v = vals[:, :, outs.index(str(ev.output))]
                worst = v.min(axis=1) if direction < 0 else v.max(axis=1)
                cols[f"ae_{name}_grade"] = threshold_grades(worst, thr, direction)
            metric_rows.append(pd.DataFrame(cols))
            q = np.quantile(vals, BAND_QUANTILES, axis=0)  # (3, J, O)
            band_rows.append(
                pd.DataFrame(
                    {
                        "candidate": c,
                        "time": np.tile(t, len(outs)),
                        "output": np.repeat(outs, t.size),
                        "q05": q[0].T.ravel(),
                        "q50": q[1].T.ravel(),
                        "q95": q[2].T.ravel(),
                    }
                )
            )
    metrics = pd.concat(metric_rows, ignore_index=True).sort_values(["candidate", "draw"])
    bands = pd.concat(band_rows, ignore_index=True).sort_values(["candidate", "output", "time"])
    return Forecast(
        candidates=list(candidates),
        start=t0,
        end=ends,
        metrics=metrics.reset_index(drop=True),
        bands=bands.reset_index(drop=True),
    )


def recommend(fc: Forecast, target: Target) -> pd.DataFrame:
    """Score each candidate of a forecast against ``target`` (see the module docstring).

    Returns
    -------
    DataFrame
        :meth:`Forecast.summary` with ``p_target`` (posterior probability that every
        range holds), ``p_<metric>_<max|min>`` (that the guard is broken), ``eligible``,
        ``reason`` (why not, empty when eligible) and ``recommended`` (True for one
        candidate at most).

    Raises
    ------
    ValueError
        A metric the forecast does not have (naming it and the ones it has).
    """
    m = fc.metrics
    known = [c for c in m.columns if c not in ("candidate", "draw", "status")]
    missing = [k for k in target.metrics if k not in known]
    if missing:
        raise ValueError(f"target: unknown metric(s) {missing}; the forecast has {known}")
    table = fc.summary()
    p_target, reasons = [], []
    guard_p: dict[str, list[float]] = {
        f"p_{k}_{side}": [] for k, (side, _) in target.guards.items()
    }
    for c in range(len(fc.candidates)):
        sub = m[(m["candidate"] == c) & (m["status"] == 0)]
        n = len(sub)
        hit = np.ones(n, dtype=bool)
        for k, (lo, hi) in target.ranges.items():
            v = sub[k].to_numpy(dtype=np.float64)
            hit &= (v >= lo) & (v <= hi)
        p = float(hit.mean()) if n else math.nan
        why = []
        if not n:
            why.append("no draw could be simulated")
        elif p < target.probability:
            why.append(f"P(target) {p:.3f} < {target.probability:g}")
        for k, (side, limit) in target.guards.items():
            v = sub[k].to_numpy(dtype=np.float64)
            broken = v > limit if side == "max" else v < limit
            pg = float(broken.mean()) if n else math.nan
            guard_p[f"p_{k}_{side}"].append(pg)
            if n and pg > target.guard_probability:
                why.append(
                    f"P({k} {'>' if side == 'max' else '<'} {limit:g}) {pg:.3f} > "
                    f"{target.guard_probability:g}"
                )
        p_target.append(p)
        reasons.append("; ".join(why))
    table["p_target"] = p_target
    for col, values in guard_p.items():
        table[col] = values
    table["eligible"] = [not r for r in reasons]
    table["reason"] = reasons
    table["recommended"] = False
    ok = table[table["eligible"]]
    if len(ok):
        best = ok.sort_values(["daily_dose", "interval", "dose"], ascending=[True, False, True])
        table.loc[best.index[0], "recommended"] = True
    return table


@dataclass(frozen=True)
class History:
    """A twin's fit to its own records (:func:`history`).

    Attributes
    ----------
    observations : DataFrame
        One row per observation record: ``TIME``, ``output``, ``DV``, ``BLQ`` (bool),
        ``IPRED`` (at the MAP estimate), ``PRED`` (the typical patient, ``eta = 0``).
    bands : DataFrame
        ``time``, ``output`` and the quantiles :data:`BAND_QUANTILES` (``q05``, ``q50``,
        ``q95``) of every output over the draws, every ``every`` hours from the first
        record to the last.
    """

    observations: pd.DataFrame
    bands: pd.DataFrame


def _with_grid(
    records: pd.DataFrame, times: np.ndarray, interpolation: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """``records`` with an ``EVID 2`` record at each of ``times``, after the records at
    its time, whose covariates are those in force there (the next record's under NOCB,
    the previous record's under LOCF), so they start no new occasion; and the
    positions of the added records."""
    extra = pd.DataFrame(index=range(times.size), columns=records.columns)
    extra["TIME"] = times
    for col, value in (("EVID", 2), ("MDV", 1), ("AMT", 0.0), ("RATE", 0.0), ("II", 0.0)):
        extra[col] = value
    for col in ("ADDL", "SS", "CMT", "BLQ", "REC", "DVID"):
        if col in extra:
            extra[col] = 0
    extra["ID"] = records["ID"].iloc[0]
    flag = np.r_[np.zeros(len(records), dtype=np.int64), np.ones(times.size, dtype=np.int64)]
    both = pd.concat([records, extra], ignore_index=True).assign(_new=flag)
    both = both.sort_values(["TIME", "_new"], kind="stable").reset_index(drop=True)
    for c in records.columns:
        series: pd.Series = both[c]
        if series.isna().any() and c not in ("DV", "LLOQ"):
            forward, backward = series.ffill(), series.bfill()
            first, then = (backward, forward) if interpolation == "nocb" else (forward, backward)
            both[c] = first.fillna(then)
    added = np.flatnonzero(both["_new"].to_numpy() == 1)
    out = both.drop(columns="_new").astype({c: records[c].dtype for c in records.columns})
    return out, added


def history(
    study: Study,
    subject: int,
    eta: np.ndarray,
    fit_eta: np.ndarray,
    *,
    records: pd.DataFrame | None = None,
    every: float = 1.0,
    until: float | None = None,
) -> History:
    """The twin's predictions over its own records (see :class:`History`): the
    observations with their individual (``fit_eta``) and typical predictions, and the
    bands of the draws ``eta`` ``(E, k)`` from the first record to the last, or to
    ``until`` (h; a forecast's start)."""
    if records is None:
        records = subject_records(study, subject)
    spec = study.population.dataset
    assert spec is not None
    eta = np.atleast_2d(np.asarray(eta, dtype=np.float64))
    data, prior = subject_cohort(study, records, subject=subject)
    obs = data.obs_of(0)
    both = np.vstack([np.zeros(prior.k), np.asarray(fit_eta, dtype=np.float64)])
    pred = predict(data, prior, 0, both)
    outs = list(data.model.outputs)
    observations = pd.DataFrame(
        {
            "TIME": records["TIME"].to_numpy(dtype=np.float64)[data.record[obs]],
            "output": np.asarray(outs, dtype=object)[data.obs_output[obs]],
            "DV": data.y[obs],
            "BLQ": data.blq[obs],
            "IPRED": pred[1],
            "PRED": pred[0],
        }
    )
    t = records["TIME"].to_numpy(dtype=np.float64)
    stop = float(t.max()) if until is None else max(float(t.max()), float(until))
    times = np.arange(float(t.min()), stop + 1e-9, every)
    grid, added = _with_grid(records, times, spec.interpolation)
    gdata, gprior = subject_cohort(study, grid, subject=subject)
    res, _ = _run(gdata, gprior, [0], eta, float(gdata.events.end))
    vals = res.obs[:, gdata.events.obs_row[added], :]
    vals = np.where((res.status == 0)[:, None, None], vals, np.nan)
    q = np.quantile(vals, BAND_QUANTILES, axis=0)
    tt = grid["TIME"].to_numpy(dtype=np.float64)[added]
    bands = pd.DataFrame(
        {
            "time": np.tile(tt, len(outs)),
            "output": np.repeat(outs, tt.size),
            "q05": q[0].T.ravel(),
            "q50": q[1].T.ravel(),
            "q95": q[2].T.ravel(),
        }
    )
    return History(observations, bands)
