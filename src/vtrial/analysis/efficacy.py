"""Efficacy summary: estimates, confidence intervals and tests against control.

One table, :func:`efficacy_summary`, per replicate, arm and endpoint: the mean of a
continuous endpoint (t interval; Welch t or Mann-Whitney test), the proportion of a
binary one or of each category of a categorical one (Wilson interval; Newcombe
difference; Fisher or chi-square test), the Kaplan-Meier median of a time to event
(log-rank test, hazard ratio). The statistic of one endpoint in one group is a
``_<kind>_row`` function here; the conventions of every summary table are those of
:mod:`vtrial.analysis.stats`. A new endpoint kind or comparison test goes here (and its
name in :data:`vtrial.trial.kinds.EFFICACY_TESTS`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.duration.survfunc import _survdiff as _logrank_parts  # O - E and V
from statsmodels.duration.survfunc import survdiff
from statsmodels.stats.proportion import confint_proportions_2indep

from vtrial.analysis.stats import (
    SOLVER_OK,
    FloatArray,
    Groups,
    IntArray,
    check_confidence,
    km_median_ci,
    numeric_values,
    require_columns,
    str_column,
    unique_names,
    wilson_interval,
)
from vtrial.errors import DataError
from vtrial.trial.kinds import EFFICACY_TESTS, EndpointKind

__all__ = ["EFFICACY_COLUMNS", "efficacy_summary"]


EFFICACY_COLUMNS: tuple[str, ...] = (
    "replicate",
    "arm",
    "endpoint",
    "kind",
    "n",
    "n_failed",
    "n_missing",
    "estimate",
    "ci_low",
    "ci_high",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "p_value",
    "test",
    "method",
)


def efficacy_summary(
    patients: pd.DataFrame,
    *,
    endpoints: Mapping[str, EndpointKind],
    arms: Sequence[str],
    control: str | None,
    confidence: float = 0.95,
    categories: Mapping[str, Sequence[str]] | None = None,
    tests: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Estimates, confidence intervals and comparisons vs control per replicate.

    Parameters
    ----------
    patients : pandas.DataFrame
        Patients table, shape (n_patients, n_columns), with columns
        ``replicate``, ``arm``, ``solver_status`` and every endpoint.
        Continuous endpoints are numeric (e.g. ``tumour_change`` in % change
        from baseline); binary endpoints are bool or numeric 0/1 (NaN allowed
        and counted as missing); categorical endpoints hold category labels
        (e.g. the RECIST best response ``CR``/``PR``/``SD``/``PD``; null
        counted as missing). A time-to-event endpoint ``E`` is two columns:
        ``E`` (time, h) and ``E_event`` (1 event, 0 censored); a patient with
        either non-finite is missing.
    endpoints : mapping of str to {"continuous", "binary", "categorical", "time_to_event"}
        Endpoint column -> kind, in output order. A categorical endpoint ``E``
        is summarised as one binary endpoint ``E=C`` per category ``C`` (1 if
        the patient's category is ``C``): proportion with Wilson interval,
        difference to control with Newcombe interval and Fisher test.
    arms : sequence of str
        Arms, in output order.
    control : str or None
        Control arm (must be one of `arms`), or None for no comparisons.
        Comparisons are made within each replicate.
    confidence : float, optional
        Two-sided confidence level of all intervals, default 0.95.
    categories : mapping of str to sequence of str, optional
        Categories of categorical endpoints, in output order. Default: the
        categories of the column's pandas ``category`` dtype, else its sorted
        distinct values.
    tests : mapping of str to str, optional
        Endpoint -> comparison test, one of
        :data:`~vtrial.trial.kinds.EFFICACY_TESTS` for its kind
        (a categorical endpoint's test applies to each of its categories).
        Default: the first test of the kind.

    Returns
    -------
    pandas.DataFrame
        Shape (n_replicates * len(arms) * n_rows, 16) with ``n_rows`` the
        number of non-categorical endpoints plus the number of categories of
        each categorical one; one row per (replicate, arm, endpoint), columns
        :data:`EFFICACY_COLUMNS`:

        * ``kind``: ``"continuous"``, ``"binary"`` or ``"time_to_event"``.
        * ``n`` / ``n_failed`` / ``n_missing`` (int64).
        * continuous: ``estimate`` = mean (endpoint unit), ``ci_*`` = one-sample
          t-interval (NaN if n < 2 or the values are all equal);
          ``diff`` = mean(arm) - mean(control) (NaN unless both n >= 1),
          ``diff_ci_*`` from Welch's t-test
          (``scipy.stats.ttest_ind(equal_var=False)``; NaN unless both n >= 2
          and at least one group has non-zero variance); ``p_value`` from the
          declared test: ``"welch_t"`` (that Welch test) or
          ``"mann_whitney"`` (two-sided Wilcoxon rank-sum / Mann-Whitney U,
          ``scipy.stats.mannwhitneyu``, NaN unless both n >= 1);
          ``method`` = ``"t"`` or ``"t+welch"``.
        * binary: ``estimate`` = proportion of 1s, ``ci_*`` = Wilson score;
          ``diff`` = p(arm) - p(control) with the Newcombe hybrid score
          interval (method 10 of Newcombe 1998), ``p_value`` from the
          two-sided ``"fisher_exact"`` test (NaN unless both n >= 1) or the
          Pearson ``"chi_square"`` test without continuity correction
          (``scipy.stats.chi2_contingency(correction=False)``; NaN when a
          margin of the 2 x 2 table is 0); ``method`` = ``"wilson"`` or
          ``"wilson+newcombe"``.
        * time_to_event: ``estimate`` = Kaplan-Meier median (h; the first
          event time where the estimate is <= 0.5, NaN if never), ``ci_*``
          its interval by inverting the cloglog-transformed test
          (``SurvfuncRight.quantile_ci``, ``ci_high`` +inf when not
          bounded); ``diff`` = hazard ratio arm / control estimated from the
          log-rank statistic (Peto's one-step estimate exp((O - E) / V), with
          O - E the arm's observed minus expected events and V their
          variance, from statsmodels' log-rank; interval
          exp((O - E) / V +- z / sqrt(V)); close to the Cox estimate near 1,
          biased towards 1 for large effects; < 1 when the arm's times are
          longer); ``p_value`` from the ``"logrank"`` test
          (``statsmodels.duration.survfunc.survdiff``); all NaN without events;
          ``method`` = ``"km"`` or ``"km+logrank"``. (A Cox fit, statsmodels
          ``PHReg``, takes about 0.1 s per 800 patients, 1000 times the log-rank:
          too slow for thousands of replicates.)
        * For the control arm itself, or when `control` is None, ``diff``,
          ``diff_ci_*`` and ``p_value`` are NaN and ``test`` is ``""``.

    Raises
    ------
    DataError
        If a column is missing, not numeric, a binary endpoint has values
        other than 0/1, or a categorical one a value outside its categories.
    ValueError
        If an endpoint kind is unknown, `control` is not in `arms`, names are
        duplicated or `confidence` is not in (0, 1).
    """
    check_confidence(confidence)
    arms = unique_names(arms, "arms")
    names = unique_names(list(endpoints), "endpoints")
    test_of = dict(tests or {})
    for name in names:
        if endpoints[name] not in EFFICACY_TESTS:
            raise ValueError(
                f"endpoints[{name!r}]: kind must be 'continuous', 'binary', "
                f"'categorical' or 'time_to_event', got {endpoints[name]!r}"
            )
        allowed = EFFICACY_TESTS[endpoints[name]]
        test_of.setdefault(name, allowed[0])
        if test_of[name] not in allowed:
            raise ValueError(
                f"tests[{name!r}]: a {endpoints[name]} endpoint takes {list(allowed)}, "
                f"got {test_of[name]!r}"
            )
    if any(endpoints[name] == "categorical" for name in names):
        original = list(names)
        patients, endpoints = _category_indicators(patients, endpoints, categories or {})
        names = list(endpoints)
        for name in names:  # E=C takes the test of E
            if name not in test_of:
                parent = next(e for e in original if name.startswith(f"{e}="))
                test_of[name] = test_of[parent]
    if control is not None and control not in arms:
        raise ValueError(f"control: must be one of arms {list(arms)}, got {control!r}")
    event_cols = [f"{n}_event" for n in names if endpoints[n] == "time_to_event"]
    require_columns(patients, ["replicate", "arm", "solver_status", *names, *event_cols])

    groups = Groups(patients, arms)
    n_arms = len(arms)
    ctrl_idx = None if control is None else list(arms).index(control)

    # Per endpoint: list over groups of the finite values of "ok" patients.
    values_by_endpoint: dict[str, list[FloatArray]] = {}
    events_by_endpoint: dict[str, list[FloatArray]] = {}
    missing_by_endpoint: dict[str, IntArray] = {}
    for name in names:
        values = numeric_values(patients, name)[groups.ok_rows]
        if endpoints[name] == "binary":
            _check_binary(patients, name, values, groups)
        finite = np.isfinite(values)
        if endpoints[name] == "time_to_event":
            events = numeric_values(patients, f"{name}_event")[groups.ok_rows]
            _check_binary(patients, f"{name}_event", events, groups)
            groups.raise_at(finite & (values < 0), f"{name}: must be a time >= 0", values)
            finite &= np.isfinite(events)
            events_by_endpoint[name] = groups.split(events, finite)
        missing_by_endpoint[name] = np.bincount(groups.gid_ok[~finite], minlength=groups.n_groups)
        values_by_endpoint[name] = groups.split(values, finite)

    records: list[dict[str, Any]] = []
    for g in range(groups.n_groups):
        r, a = divmod(g, n_arms)
        for name in names:
            kind = endpoints[name]
            x = values_by_endpoint[name][g]
            c: FloatArray | None = None
            if ctrl_idx is not None and a != ctrl_idx:
                c = values_by_endpoint[name][r * n_arms + ctrl_idx]
            if kind == "continuous":
                rec = _continuous_row(x, c, confidence, test_of[name])
            elif kind == "time_to_event":
                ev = events_by_endpoint[name]
                ec = None if ctrl_idx is None or c is None else ev[r * n_arms + ctrl_idx]
                rec = _tte_row(x, ev[g], c, ec, confidence)
            else:
                rec = _binary_row(x, c, confidence, test_of[name])
            rec["n_missing"] = int(missing_by_endpoint[name][g])
            rec["kind"] = kind
            records.append(rec)

    n_names = len(names)
    rep, arm = groups.row_labels(n_names)

    def col(key: str) -> FloatArray:
        return np.array([rec[key] for rec in records], dtype=np.float64)

    def icol(key: str) -> IntArray:
        return np.array([rec[key] for rec in records], dtype=np.int64)

    return pd.DataFrame(
        {
            "replicate": rep,
            "arm": arm,
            "endpoint": str_column(list(names) * groups.n_groups),
            "kind": str_column([rec["kind"] for rec in records]),
            "n": icol("n"),
            "n_failed": np.repeat(groups.n_failed, n_names).astype(np.int64),
            "n_missing": icol("n_missing"),
            "estimate": col("estimate"),
            "ci_low": col("ci_low"),
            "ci_high": col("ci_high"),
            "diff": col("diff"),
            "diff_ci_low": col("diff_ci_low"),
            "diff_ci_high": col("diff_ci_high"),
            "p_value": col("p_value"),
            "test": str_column([rec["test"] for rec in records]),
            "method": str_column([rec["method"] for rec in records]),
        }
    )


def _category_indicators(
    patients: pd.DataFrame,
    endpoints: Mapping[str, str],
    categories: Mapping[str, Sequence[str]],
) -> tuple[pd.DataFrame, dict[str, EndpointKind]]:
    """Replace each categorical endpoint ``E`` by binary columns ``E=C``, one per category."""
    kinds: dict[str, EndpointKind] = {}
    new: dict[str, FloatArray] = {}
    for name, kind in endpoints.items():
        if kind != "categorical":
            kinds[name] = (
                "binary"
                if kind == "binary"
                else "time_to_event"
                if kind == "time_to_event"
                else "continuous"
            )
            continue
        require_columns(patients, [name])
        col = patients[name]
        if name in categories:
            cats = unique_names(categories[name], f"categories[{name!r}]")
        elif isinstance(col.dtype, pd.CategoricalDtype):
            cats = [str(c) for c in col.cat.categories]
        else:
            cats = sorted({str(v) for v in col.dropna()})
        labels = col.astype(object).to_numpy()
        null = pd.isna(labels)
        text = np.array([str(v) for v in labels], dtype=object)
        ok = patients["solver_status"].to_numpy(dtype=object) == SOLVER_OK
        unknown = ok & ~null & ~np.isin(text, cats)
        if unknown.any():
            row = int(np.flatnonzero(unknown)[0])
            raise DataError(
                f"patients: row {row}: {name}: categorical endpoint must be one of {cats}, "
                f"got {labels[row]!r} ({int(unknown.sum())} row(s) affected)"
            )
        for cat in cats:
            column = f"{name}={cat}"
            if column in patients.columns or column in kinds:
                raise ValueError(f"endpoints[{name!r}]: column {column!r} already exists")
            ind = (text == cat).astype(np.float64)
            ind[null] = np.nan
            new[column] = ind
            kinds[column] = "binary"
    return patients.assign(**new), kinds


def _check_binary(patients: pd.DataFrame, name: str, values: FloatArray, groups: Groups) -> None:
    finite = np.isfinite(values)
    bad = finite & (values != 0) & (values != 1)
    bad |= np.isinf(values)
    groups.raise_at(bad, f"{name}: binary endpoint must be 0/1", values)


def _empty_comparison() -> dict[str, Any]:
    nan = math.nan
    return {
        "diff": nan,
        "diff_ci_low": nan,
        "diff_ci_high": nan,
        "p_value": nan,
    }


def _continuous_row(
    x: FloatArray, c: FloatArray | None, confidence: float, test: str = "welch_t"
) -> dict[str, Any]:
    """Statistics of one continuous endpoint in one group (x: finite values)."""
    n = int(x.size)
    rec: dict[str, Any] = {"n": n, "estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    rec.update(_empty_comparison())
    if n >= 1:
        rec["estimate"] = float(np.mean(x))
    if n >= 2 and np.ptp(x) > 0:
        with _quiet_moments():
            ci = sps.ttest_1samp(x, 0.0).confidence_interval(confidence)
        rec["ci_low"], rec["ci_high"] = float(ci.low), float(ci.high)
    if c is None:
        rec["test"], rec["method"] = "", "t"
        return rec
    rec["test"], rec["method"] = test, "t+welch"
    if n >= 1 and c.size >= 1:
        rec["diff"] = float(np.mean(x) - np.mean(c))
    # Welch needs a variance estimate in each group, and a non-zero standard
    # error (if both groups are constant the statistic is 0/0 or +-inf with
    # an undefined Welch-Satterthwaite df).
    if n >= 2 and c.size >= 2 and (np.ptp(x) > 0 or np.ptp(c) > 0):
        with _quiet_moments():
            res = sps.ttest_ind(x, c, equal_var=False)
            ci = res.confidence_interval(confidence)
        if test == "welch_t":
            rec["p_value"] = float(res.pvalue)
        rec["diff_ci_low"], rec["diff_ci_high"] = float(ci.low), float(ci.high)
    if test == "mann_whitney" and n >= 1 and c.size >= 1:
        rec["p_value"] = float(sps.mannwhitneyu(x, c, alternative="two-sided").pvalue)
    return rec


def _binary_row(
    x: FloatArray, c: FloatArray | None, confidence: float, test: str = "fisher_exact"
) -> dict[str, Any]:
    """Statistics of one binary endpoint in one group (x: finite 0/1 values)."""
    n = int(x.size)
    k = int(np.count_nonzero(x))
    low, high = wilson_interval(k, n, confidence)
    rec: dict[str, Any] = {
        "n": n,
        "estimate": k / n if n else math.nan,
        "ci_low": low,
        "ci_high": high,
    }
    rec.update(_empty_comparison())
    if c is None:
        rec["test"], rec["method"] = "", "wilson"
        return rec
    rec["test"], rec["method"] = test, "wilson+newcombe"
    nc = int(c.size)
    kc = int(np.count_nonzero(c))
    if n >= 1 and nc >= 1:
        rec["diff"] = k / n - kc / nc
        dlow, dhigh = confint_proportions_2indep(
            k, n, kc, nc, method="newcomb", compare="diff", alpha=1.0 - confidence
        )
        rec["diff_ci_low"], rec["diff_ci_high"] = float(dlow), float(dhigh)
        table = np.array([[k, n - k], [kc, nc - kc]], dtype=np.int64)
        if test == "fisher_exact":
            rec["p_value"] = float(sps.fisher_exact(table, alternative="two-sided").pvalue)
        elif (table.sum(axis=0) > 0).all():  # chi-square: every margin > 0
            res = sps.chi2_contingency(table, correction=False)
            rec["p_value"] = float(res.pvalue)
    return rec


def _tte_row(
    t: FloatArray,
    e: FloatArray,
    tc: FloatArray | None,
    ec: FloatArray | None,
    confidence: float,
) -> dict[str, Any]:
    """Statistics of one time-to-event endpoint in one group (finite times, 0/1 events)."""
    n = int(t.size)
    median, low, high = km_median_ci(t, e, confidence)
    rec: dict[str, Any] = {
        "n": n,
        "estimate": median,
        "ci_low": low,
        "ci_high": high,
    }
    rec.update(_empty_comparison())
    if tc is None or ec is None:
        rec["test"], rec["method"] = "", "km"
        return rec
    rec["test"], rec["method"] = "logrank", "km+logrank"
    if n == 0 or tc.size == 0 or not (np.any(e > 0) or np.any(ec > 0)):
        return rec
    time = np.concatenate([t, tc])
    status = np.concatenate([e, ec])
    group = np.concatenate([np.ones(n), np.zeros(tc.size)])
    # group 1 (the arm) against group 0 (control): O - E of the arm and its variance
    o_e, var = _logrank_parts(time, status, group, None, np.array([0.0, 1.0]))
    v = float(np.asarray(var).reshape(-1)[0])
    if not v > 0:  # e.g. every event with a single patient at risk
        return rec
    rec["p_value"] = float(survdiff(time, status, group)[1])
    log_hr = float(np.asarray(o_e).reshape(-1)[0]) / v
    half = float(sps.norm.isf((1.0 - confidence) / 2.0)) / math.sqrt(v)
    rec["diff"] = math.exp(log_hr)
    rec["diff_ci_low"], rec["diff_ci_high"] = math.exp(log_hr - half), math.exp(log_hr + half)
    return rec


@contextlib.contextmanager
def _quiet_moments() -> Iterator[None]:
    """Silence only scipy's "Precision loss ... nearly identical" warning.

    scipy's t-tests emit it whenever one sample is constant, which is a
    legitimate input here (e.g. a control group whose values are all equal).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="Precision loss occurred in moment calculation",
            category=RuntimeWarning,
        )
        yield
