"""Safety summary: adverse-event incidence by CTCAE grade and time to grade >= 3.

One table, :func:`safety_summary`, per replicate, arm, adverse event and grade category
(:data:`GRADE_CATEGORIES`): incidence with its Wilson interval and, on the ``">=3"``
row, the Kaplan-Meier median time to the first grade >= 3 event. The conventions of
every summary table are those of :mod:`vtrial.analysis.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from vtrial.analysis.stats import (
    FloatArray,
    Groups,
    IntArray,
    check_confidence,
    km_median_ci,
    numeric_values,
    require_columns,
    str_column,
    unique_names,
    wilson_arrays,
)

__all__ = ["GRADE_CATEGORIES", "SAFETY_COLUMNS", "safety_summary"]


GRADE_CATEGORIES: tuple[str, ...] = ("0", "1", "2", "3", "4", "5", ">=1", ">=2", ">=3", ">=4")
"""Grade categories of :func:`safety_summary`: exact CTCAE grades, then cumulative."""


SAFETY_COLUMNS: tuple[str, ...] = (
    "replicate",
    "arm",
    "event",
    "grade",
    "n",
    "n_failed",
    "count",
    "incidence",
    "ci_low",
    "ci_high",
    "median_time_grade3",
    "median_time_grade3_ci_low",
    "median_time_grade3_ci_high",
)


def safety_summary(
    patients: pd.DataFrame,
    *,
    events: Sequence[str],
    arms: Sequence[str],
    horizon: float,
    confidence: float = 0.95,
    censor: str | None = None,
) -> pd.DataFrame:
    """Adverse-event incidence by CTCAE grade and time to first grade >= 3.

    Parameters
    ----------
    patients : pandas.DataFrame
        Patients table, shape (n_patients, n_columns), with columns
        ``replicate``, ``arm``, ``solver_status`` and, for each event ``E``,
        ``ae_E_grade`` (integer max CTCAE grade 0-5) and
        ``ae_E_time_grade3`` (h, time of the first grade >= 3, NaN if none).
        An event whose ``ae_E_time_grade3`` is NaN for every "ok" patient is
        *untimed* (grades drawn from probabilities have no onset time): its
        grades are counted and its ``median_time_grade3`` is NaN.
    events : sequence of str
        Event names ``E``, in output order.
    arms : sequence of str
        Arms, in output order.
    horizon : float
        End of follow-up (h, > 0).  Patients without a grade >= 3 event, or
        with the first one after `horizon`, are censored at `horizon` in the
        Kaplan-Meier estimate.
    confidence : float, optional
        Two-sided confidence level of the Wilson intervals, default 0.95.
    censor : str, optional
        Column of each patient's end of follow-up (h; e.g. ``dropout_time``,
        +inf or NaN for none): the Kaplan-Meier estimate censors a patient
        without a grade >= 3 event at min(`horizon`, that time).

    Returns
    -------
    pandas.DataFrame
        Shape (n_replicates * len(arms) * len(events) * 10, 13), one row per
        (replicate, arm, event, grade) with ``grade`` running over
        :data:`GRADE_CATEGORIES`; columns :data:`SAFETY_COLUMNS`:
        ``n`` (ok patients), ``n_failed``, ``count`` (patients whose max grade
        is in the category; int64), ``incidence`` = count / n, ``ci_low`` /
        ``ci_high`` (Wilson score), and ``median_time_grade3`` (h) on the
        ``">=3"`` row only: the Kaplan-Meier median time to the first
        grade >= 3 event (``statsmodels.duration.survfunc.SurvfuncRight``),
        defined as the first event time at which the survival estimate is
        <= 0.5; NaN if it never gets there, and NaN on all other rows; and
        its confidence interval ``median_time_grade3_ci_low`` /
        ``median_time_grade3_ci_high`` (``SurvfuncRight.quantile_ci``,
        cloglog; high +inf when not bounded, NaN without events).

    Raises
    ------
    DataError
        If a column is missing, a grade of an ok patient is not an integer in
        0..5, a time is negative, or (for a timed event) grade >= 3 and a
        finite time do not go together.
    ValueError
        If names are duplicated, `horizon` is not finite and > 0, or
        `confidence` is not in (0, 1).
    """
    check_confidence(confidence)
    events = unique_names(events, "events")
    arms = unique_names(arms, "arms")
    if not (math.isfinite(horizon) and horizon > 0):
        raise ValueError(f"horizon: must be a finite number > 0, got {horizon!r}")
    grade_cols = [f"ae_{e}_grade" for e in events]
    time_cols = [f"ae_{e}_time_grade3" for e in events]
    extra = [censor] if censor is not None else []
    require_columns(
        patients, ["replicate", "arm", "solver_status", *grade_cols, *time_cols, *extra]
    )

    groups = Groups(patients, arms)
    n_groups = groups.n_groups
    n_ok = groups.n_ok
    n_cat = len(GRADE_CATEGORIES)
    i_ge3 = GRADE_CATEGORIES.index(">=3")
    follow = np.full(groups.ok_rows.size, float(horizon))
    if censor is not None:
        stop = numeric_values(patients, censor)[groups.ok_rows]
        follow = np.where(np.isnan(stop), follow, np.fmin(follow, stop))
        groups.raise_at(follow < 0, f"{censor}: must be >= 0", stop)

    counts_by_event: list[IntArray] = []  # each (n_groups, n_cat)
    median_by_event: list[FloatArray] = []  # each (n_groups,)
    ci_by_event: list[FloatArray] = []  # each (n_groups, 2)
    for gcol, tcol in zip(grade_cols, time_cols, strict=True):
        grades_f = numeric_values(patients, gcol)[groups.ok_rows]
        times = numeric_values(patients, tcol)[groups.ok_rows]
        bad = ~np.isfinite(grades_f) | (grades_f < 0) | (grades_f > 5)
        bad |= np.isfinite(grades_f) & (grades_f != np.round(grades_f))
        groups.raise_at(bad, f"{gcol}: must be an integer CTCAE grade 0-5", grades_f)
        grades = grades_f.astype(np.int64)
        has_time = np.isfinite(times)
        if has_time.any():  # an untimed event (no time at all) has grades only
            groups.raise_at(
                (grades >= 3) != has_time,
                f"{tcol}: must be finite exactly when {gcol} >= 3",
                times,
            )
        groups.raise_at(has_time & (times < 0), f"{tcol}: must be >= 0", times)

        exact = np.bincount(groups.gid_ok * 6 + grades, minlength=n_groups * 6).reshape(n_groups, 6)
        at_least = np.cumsum(exact[:, ::-1], axis=1)[:, ::-1]  # column k: grade >= k
        counts = np.concatenate([exact, at_least[:, 1:5]], axis=1)
        counts_by_event.append(counts.astype(np.int64))

        event_in = has_time & (times <= follow)
        km_time = np.where(event_in, times, follow)
        km_time_split = groups.split(km_time)
        km_status_split = groups.split(event_in.astype(np.float64))
        median = np.full(n_groups, np.nan)
        ci = np.full((n_groups, 2), np.nan)
        for g in range(n_groups):
            med, lo, hi = km_median_ci(km_time_split[g], km_status_split[g], confidence)
            median[g], ci[g] = med, (lo, hi)
        median_by_event.append(median)
        ci_by_event.append(ci)

    n_events = len(events)
    if n_events:
        counts_all = np.stack(counts_by_event, axis=1).reshape(-1)  # (group, event, cat)
        median_all = np.stack(median_by_event, axis=1)  # (group, event)
        ci_all = np.stack(ci_by_event, axis=1)  # (group, event, 2)
    else:
        counts_all = np.empty(0, dtype=np.int64)
        median_all = np.empty((n_groups, 0))
        ci_all = np.empty((n_groups, 0, 2))
    n_per_row = np.repeat(n_ok, n_events * n_cat).astype(np.int64)
    incidence = np.full(counts_all.shape, np.nan)
    np.divide(counts_all, n_per_row, out=incidence, where=n_per_row > 0)
    low, high = wilson_arrays(counts_all, n_per_row, confidence)
    median_col = np.full((n_groups, n_events, n_cat), np.nan)
    median_col[:, :, i_ge3] = median_all
    ci_col = np.full((n_groups, n_events, n_cat, 2), np.nan)
    ci_col[:, :, i_ge3] = ci_all
    rep, arm = groups.row_labels(n_events * n_cat)

    return pd.DataFrame(
        {
            "replicate": rep,
            "arm": arm,
            "event": str_column(list(np.repeat(np.array(events, dtype=object), n_cat)) * n_groups),
            "grade": str_column(list(GRADE_CATEGORIES) * (n_groups * n_events)),
            "n": n_per_row,
            "n_failed": np.repeat(groups.n_failed, n_events * n_cat).astype(np.int64),
            "count": counts_all.astype(np.int64),
            "incidence": incidence,
            "ci_low": low,
            "ci_high": high,
            "median_time_grade3": median_col.reshape(-1),
            "median_time_grade3_ci_low": ci_col[..., 0].reshape(-1),
            "median_time_grade3_ci_high": ci_col[..., 1].reshape(-1),
        }
    )
