"""Summary statistics of a simulated trial: exposure, efficacy, safety, bands.

All functions take the **patients table** written after simulation (one row
per virtual patient, columns ``replicate``, ``patient_id``, ``arm``,
``solver_status`` and the metric / endpoint / adverse-event columns) and
return a new tidy :class:`pandas.DataFrame` with

* a deterministic row order: replicate ascending, then arms in the order
  given, then metrics / endpoints / events in the order given;
* ``replicate`` as ``int32``, counts as ``int64``, estimates as ``float64``
  and text columns as ``object`` dtype holding plain :class:`str` (so that
  pyarrow writes them as ``string``);
* a fresh ``RangeIndex``.

Rules shared by every table
---------------------------
* Patients whose ``solver_status`` is not ``"ok"`` are excluded from every
  statistic and counted in ``n_failed``.
* A non-finite value (NaN or +-inf) in a metric or endpoint of an ``"ok"``
  patient is excluded and counted in ``n_missing``; ``n`` counts the values
  actually used.  No NaN ever enters an estimate.
* Every replicate present in the table gets a row for every requested arm,
  even when that arm has no patients there (``n = 0``, estimates NaN).  Arms
  present in the table but not requested are ignored.
* Degenerate inputs (``n`` of 0 or 1, zero variance, all or no responders)
  give NaN where a quantity is undefined; they never warn or raise.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats as sps
from statsmodels.duration.survfunc import SurvfuncRight, survdiff
from statsmodels.duration.survfunc import _survdiff as _logrank_parts  # O - E and V
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from vtrial.errors import DataError
from vtrial.trial.kinds import EFFICACY_TESTS, EndpointKind

__all__ = [
    "EFFICACY_COLUMNS",
    "EFFICACY_TESTS",
    "GRADE_CATEGORIES",
    "PERCENTILES",
    "SAFETY_COLUMNS",
    "efficacy_summary",
    "exposure_summary",
    "percentile_bands",
    "percentile_column",
    "safety_summary",
    "unique_names",
    "wilson_interval",
]

PERCENTILES: tuple[float, ...] = (5, 25, 50, 75, 95)
"""Default percentiles (in %) of :func:`exposure_summary`."""

GRADE_CATEGORIES: tuple[str, ...] = ("0", "1", "2", "3", "4", "5", ">=1", ">=2", ">=3", ">=4")
"""Grade categories of :func:`safety_summary`: exact CTCAE grades, then cumulative."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_OK = "ok"
# Tolerance when asking whether a Kaplan-Meier product reached 0.5: products
# such as 3/4 * 2/3 are 0.5000000000000001 in floating point.
_KM_TOL = 1e-12


# --------------------------------------------------------------------------- #
# Small public helpers
# --------------------------------------------------------------------------- #


def percentile_column(p: float) -> str:
    """Return the column name of a percentile.

    Parameters
    ----------
    p : float
        Percentile in %, ``0 <= p <= 100``.

    Returns
    -------
    str
        ``"p{int}"`` for integral values (``5 -> "p5"``), otherwise the
        decimal text with ``.`` replaced by ``_`` (``2.5 -> "p2_5"``).

    Raises
    ------
    ValueError
        If `p` is not a finite number in [0, 100].
    """
    value = float(p)
    if not (math.isfinite(value) and 0.0 <= value <= 100.0):
        raise ValueError(f"percentile must be a number in [0, 100], got {p!r}")
    if value.is_integer():
        return f"p{int(value)}"
    text = np.format_float_positional(value, trim="-")
    return "p" + text.replace(".", "_")


def wilson_interval(count: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score confidence interval of a binomial proportion.

    Thin wrapper around
    ``statsmodels.stats.proportion.proportion_confint(method="wilson")``.

    Parameters
    ----------
    count : int
        Number of successes, ``0 <= count <= n``.
    n : int
        Number of trials, ``n >= 0``.
    confidence : float
        Two-sided confidence level in (0, 1), e.g. 0.95.

    Returns
    -------
    tuple of float
        ``(low, high)`` bounds of the interval for ``count / n``;
        ``(nan, nan)`` when ``n == 0``.

    Raises
    ------
    ValueError
        If `count`, `n` or `confidence` are out of range.

    Examples
    --------
    12 responders of 40 patients:

    >>> low, high = wilson_interval(12, 40, 0.95)
    >>> round(low, 4), round(high, 4)
    (0.1807, 0.4543)
    """
    _check_confidence(confidence)
    if n < 0 or count < 0 or count > n:
        raise ValueError(f"wilson_interval: need 0 <= count <= n, got count={count}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    low, high = proportion_confint(int(count), int(n), alpha=1.0 - confidence, method="wilson")
    return (float(low), float(high))


# --------------------------------------------------------------------------- #
# Exposure
# --------------------------------------------------------------------------- #


def exposure_summary(
    patients: pd.DataFrame,
    *,
    metrics: Sequence[str],
    arms: Sequence[str],
    percentiles: Sequence[float] = PERCENTILES,
) -> pd.DataFrame:
    """Descriptive statistics of exposure metrics per replicate and arm.

    Parameters
    ----------
    patients : pandas.DataFrame
        Patients table, shape (n_patients, n_columns), with columns
        ``replicate``, ``arm``, ``solver_status`` and every name in
        `metrics` (numeric; e.g. ``cmax`` mg/L, ``tmax`` h,
        ``auc`` mg*h/L, ``ctrough`` mg/L).
    metrics : sequence of str
        Metric columns to summarise, in output order.
    arms : sequence of str
        Arms to summarise, in output order.
    percentiles : sequence of float, optional
        Percentiles in % (numpy ``linear`` interpolation), default
        :data:`PERCENTILES`.  Column names from :func:`percentile_column`.

    Returns
    -------
    pandas.DataFrame
        Shape (n_replicates * len(arms) * len(metrics), 10 + len(percentiles)),
        one row per (replicate, arm, metric) with columns

        ``replicate`` (int32), ``arm``, ``metric`` (str),
        ``n``, ``n_failed``, ``n_missing`` (int64),
        ``mean``, ``sd`` (sample, ddof=1; NaN if n < 2),
        ``gmean`` (geometric mean over the values > 0, NaN if none),
        ``gcv`` (geometric CV in %, ``sqrt(exp(s**2) - 1) * 100`` with ``s``
        the sample SD of ``log x`` over the values > 0, NaN if fewer than 2),
        one column per percentile, ``min``, ``max`` (all float64, in the
        metric's own unit except ``gcv``).

    Raises
    ------
    DataError
        If a required column is missing or a metric column is not numeric.
    ValueError
        If `metrics` or `arms` contain duplicates, or a percentile is invalid.
    """
    metrics = unique_names(metrics, "metrics")
    arms = unique_names(arms, "arms")
    pcols = _percentile_columns(percentiles)
    _require_columns(patients, ["replicate", "arm", "solver_status", *metrics])

    groups = _Groups(patients, arms)
    n_groups = groups.n_groups
    per_metric: list[dict[str, Any]] = []
    for metric in metrics:
        values = _numeric(patients, metric)[groups.ok_rows]
        finite = np.isfinite(values)
        gid = groups.gid_ok[finite]
        vals = values[finite]
        res = _grouped_stats(vals, gid, n_groups, [float(p) for p in percentiles])
        res["n_missing"] = np.bincount(groups.gid_ok[~finite], minlength=n_groups)
        positive = vals > 0
        logs = _grouped_stats(np.log(vals[positive]), gid[positive], n_groups, [])
        gmean = np.full(n_groups, np.nan)
        has = logs["n"] > 0
        gmean[has] = np.exp(logs["mean"][has])
        res["gmean"] = gmean
        res["gcv"] = np.sqrt(np.expm1(logs["sd"] ** 2)) * 100.0  # NaN where sd is NaN
        per_metric.append(res)

    n_metrics = len(metrics)

    def stack(key: str) -> npt.NDArray[Any]:
        # (n_metrics, n_groups) -> rows ordered (group, metric)
        if not per_metric:
            return np.empty(0)
        return np.stack([r[key] for r in per_metric], axis=1).reshape(-1)

    rep, arm = groups.row_labels(n_metrics)
    columns: dict[str, Any] = {
        "replicate": rep,
        "arm": arm,
        "metric": _str_column(list(metrics) * n_groups),
        "n": stack("n").astype(np.int64),
        "n_failed": np.repeat(groups.n_failed, n_metrics).astype(np.int64),
        "n_missing": stack("n_missing").astype(np.int64),
        "mean": stack("mean").astype(np.float64),
        "sd": stack("sd").astype(np.float64),
        "gmean": stack("gmean").astype(np.float64),
        "gcv": stack("gcv").astype(np.float64),
    }
    for col in pcols:
        columns[col] = stack(col).astype(np.float64)
    columns["min"] = stack("min").astype(np.float64)
    columns["max"] = stack("max").astype(np.float64)
    return pd.DataFrame(columns)


# --------------------------------------------------------------------------- #
# Efficacy
# --------------------------------------------------------------------------- #

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
        Endpoint -> comparison test, one of :data:`EFFICACY_TESTS` for its kind
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
    _check_confidence(confidence)
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
    _require_columns(patients, ["replicate", "arm", "solver_status", *names, *event_cols])

    groups = _Groups(patients, arms)
    n_arms = len(arms)
    ctrl_idx = None if control is None else list(arms).index(control)

    # Per endpoint: list over groups of the finite values of "ok" patients.
    values_by_endpoint: dict[str, list[FloatArray]] = {}
    events_by_endpoint: dict[str, list[FloatArray]] = {}
    missing_by_endpoint: dict[str, IntArray] = {}
    for name in names:
        values = _numeric(patients, name)[groups.ok_rows]
        if endpoints[name] == "binary":
            _check_binary(patients, name, values, groups)
        finite = np.isfinite(values)
        if endpoints[name] == "time_to_event":
            events = _numeric(patients, f"{name}_event")[groups.ok_rows]
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
            "endpoint": _str_column(list(names) * groups.n_groups),
            "kind": _str_column([rec["kind"] for rec in records]),
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
            "test": _str_column([rec["test"] for rec in records]),
            "method": _str_column([rec["method"] for rec in records]),
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
        _require_columns(patients, [name])
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
        ok = patients["solver_status"].to_numpy(dtype=object) == _OK
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
    median, low, high = _km_median_ci(t, e, confidence)
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


# --------------------------------------------------------------------------- #
# Safety
# --------------------------------------------------------------------------- #

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
    _check_confidence(confidence)
    events = unique_names(events, "events")
    arms = unique_names(arms, "arms")
    if not (math.isfinite(horizon) and horizon > 0):
        raise ValueError(f"horizon: must be a finite number > 0, got {horizon!r}")
    grade_cols = [f"ae_{e}_grade" for e in events]
    time_cols = [f"ae_{e}_time_grade3" for e in events]
    extra = [censor] if censor is not None else []
    _require_columns(
        patients, ["replicate", "arm", "solver_status", *grade_cols, *time_cols, *extra]
    )

    groups = _Groups(patients, arms)
    n_groups = groups.n_groups
    n_ok = groups.n_ok
    n_cat = len(GRADE_CATEGORIES)
    i_ge3 = GRADE_CATEGORIES.index(">=3")
    follow = np.full(groups.ok_rows.size, float(horizon))
    if censor is not None:
        stop = _numeric(patients, censor)[groups.ok_rows]
        follow = np.where(np.isnan(stop), follow, np.fmin(follow, stop))
        groups.raise_at(follow < 0, f"{censor}: must be >= 0", stop)

    counts_by_event: list[IntArray] = []  # each (n_groups, n_cat)
    median_by_event: list[FloatArray] = []  # each (n_groups,)
    ci_by_event: list[FloatArray] = []  # each (n_groups, 2)
    for gcol, tcol in zip(grade_cols, time_cols, strict=True):
        grades_f = _numeric(patients, gcol)[groups.ok_rows]
        times = _numeric(patients, tcol)[groups.ok_rows]
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
            med, lo, hi = _km_median_ci(km_time_split[g], km_status_split[g], confidence)
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
    low, high = _wilson_arrays(counts_all, n_per_row, confidence)
    median_col = np.full((n_groups, n_events, n_cat), np.nan)
    median_col[:, :, i_ge3] = median_all
    ci_col = np.full((n_groups, n_events, n_cat, 2), np.nan)
    ci_col[:, :, i_ge3] = ci_all
    rep, arm = groups.row_labels(n_events * n_cat)

    return pd.DataFrame(
        {
            "replicate": rep,
            "arm": arm,
            "event": _str_column(list(np.repeat(np.array(events, dtype=object), n_cat)) * n_groups),
            "grade": _str_column(list(GRADE_CATEGORIES) * (n_groups * n_events)),
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


def _km_median_ci(
    time: FloatArray, status: FloatArray, confidence: float
) -> tuple[float, float, float]:
    """Kaplan-Meier median (first event time with S(t) <= 0.5, else NaN) and its
    confidence interval (``SurvfuncRight.quantile_ci``, cloglog; upper bound +inf when
    not bounded) from one fit; all NaN without events."""
    if time.size == 0 or not np.any(status > 0):
        return (math.nan, math.nan, math.nan)
    sf = SurvfuncRight(time, status)
    with np.errstate(divide="ignore", invalid="ignore"):  # log(0) where S reaches 0
        low, high = sf.quantile_ci(0.5, alpha=1.0 - confidence)
    reached = np.flatnonzero(np.asarray(sf.surv_prob) <= 0.5 + _KM_TOL)
    median = float(np.asarray(sf.surv_times)[reached[0]]) if reached.size else math.nan
    return (median, float(low), float(high))


def _km_median(time: FloatArray, status: FloatArray) -> float:
    """Kaplan-Meier median: first event time with S(t) <= 0.5, else NaN."""
    return _km_median_ci(time, status, 0.95)[0]


def _wilson_arrays(
    count: IntArray, n: IntArray, confidence: float
) -> tuple[FloatArray, FloatArray]:
    """Vectorised :func:`wilson_interval` (NaN where n == 0)."""
    low = np.full(count.shape, np.nan)
    high = np.full(count.shape, np.nan)
    ok = n > 0
    if np.any(ok):
        lo, hi = proportion_confint(count[ok], n[ok], alpha=1.0 - confidence, method="wilson")
        low[ok] = lo
        high[ok] = hi
    return low, high


# --------------------------------------------------------------------------- #
# Percentile bands of time courses
# --------------------------------------------------------------------------- #


def percentile_bands(
    timecourse: pd.DataFrame,
    *,
    outputs: Sequence[str],
    arms: Sequence[str],
    percentiles: Sequence[float] = (5, 50, 95),
) -> pd.DataFrame:
    """Percentile bands of simulated time courses, pooled over replicates.

    Parameters
    ----------
    timecourse : pandas.DataFrame
        Long table, shape (n_patients * n_times, 4 + n_outputs), columns
        ``replicate``, ``patient_id``, ``arm``, ``time`` (h) and the output
        columns (e.g. concentrations, float32).  Every row given is used, so
        pass only the rows of patients whose solver status is ``"ok"``.
    outputs : sequence of str
        Output columns, in output order.
    arms : sequence of str
        Arms, in output order.  Rows of other arms are ignored.
    percentiles : sequence of float, optional
        Percentiles in % (numpy ``linear`` interpolation), default (5, 50, 95).

    Returns
    -------
    pandas.DataFrame
        One row per (arm, output, time) for the times present in that arm,
        ordered by arm (as given), output (as given), time ascending, with
        columns ``arm``, ``output`` (str), ``time`` (float64, h), ``n``
        (int64, number of finite values), one float64 column per percentile
        (:func:`percentile_column` names) and ``mean`` (float64), computed in
        float64 over the finite values (NaN where ``n == 0``).

    Raises
    ------
    DataError
        If a column is missing, not numeric, or ``time`` is not finite.
    ValueError
        If names are duplicated or a percentile is invalid.
    """
    outputs = unique_names(outputs, "outputs")
    arms = unique_names(arms, "arms")
    pcols = _percentile_columns(percentiles)
    _require_columns(timecourse, ["arm", "time", *outputs])

    arm_code = _arm_codes(timecourse["arm"], arms)
    time = _numeric(timecourse, "time")
    if not np.all(np.isfinite(time)):
        raise DataError("timecourse: column 'time' must be finite")
    keep = arm_code >= 0
    a = arm_code[keep]
    t = time[keep]
    order = _order_by(a, t)
    a_s = a[order]
    t_s = t[order]
    if a_s.size:
        new = np.empty(a_s.size, dtype=bool)
        new[0] = True
        new[1:] = (a_s[1:] != a_s[:-1]) | (t_s[1:] != t_s[:-1])
        gid_sorted = np.cumsum(new) - 1
        group_arm = a_s[new]
        group_time = t_s[new]
    else:
        gid_sorted = np.empty(0, dtype=np.int64)
        group_arm = np.empty(0, dtype=np.int64)
        group_time = np.empty(0, dtype=np.float64)
    n_groups = int(group_arm.size)
    pvals = [float(p) for p in percentiles]

    stats_by_output = []
    for out in outputs:
        v = _numeric(timecourse, out)[keep][order]
        finite = np.isfinite(v)
        stats_by_output.append(_grouped_stats(v[finite], gid_sorted[finite], n_groups, pvals))

    # Row order: arm, output, time.  Groups are sorted by (arm, time).
    sel_group: list[IntArray] = []
    sel_output: list[IntArray] = []
    for code in range(len(arms)):
        ga = np.flatnonzero(group_arm == code)
        for k in range(len(outputs)):
            sel_group.append(ga)
            sel_output.append(np.full(ga.size, k, dtype=np.int64))
    gi = np.concatenate(sel_group) if sel_group else np.empty(0, dtype=np.int64)
    oi = np.concatenate(sel_output) if sel_output else np.empty(0, dtype=np.int64)

    def pick(key: str) -> npt.NDArray[Any]:
        if not stats_by_output:
            return np.empty(0)
        table = np.stack([s[key] for s in stats_by_output])  # (n_outputs, n_groups)
        return table[oi, gi]

    arms_arr = np.array(list(arms), dtype=object)
    outputs_arr = np.array(list(outputs), dtype=object)
    columns: dict[str, Any] = {
        "arm": _str_column(list(arms_arr[group_arm[gi]])),
        "output": _str_column(list(outputs_arr[oi])),
        "time": group_time[gi].astype(np.float64),
        "n": pick("n").astype(np.int64),
    }
    for col in pcols:
        columns[col] = pick(col).astype(np.float64)
    columns["mean"] = pick("mean").astype(np.float64)
    return pd.DataFrame(columns)


# --------------------------------------------------------------------------- #
# Internals
# --------------------------------------------------------------------------- #


class _Groups:
    """(replicate, arm) groups of a patients table.

    Group ``g = replicate_index * len(arms) + arm_index`` with replicates
    ascending.  Rows of arms not requested belong to no group.
    """

    def __init__(self, patients: pd.DataFrame, arms: Sequence[str]):
        self.patients = patients
        self.arms = list(arms)
        rep_values = patients["replicate"].to_numpy()
        if rep_values.size and not pd.api.types.is_integer_dtype(patients["replicate"].dtype):
            raise DataError(
                f"patients: column 'replicate' must be integer, got {patients['replicate'].dtype}"
            )
        self.replicates = np.unique(rep_values).astype(np.int64)
        rep_idx = np.searchsorted(self.replicates, rep_values).astype(np.int64)
        arm_code = _arm_codes(patients["arm"], arms)
        n_arms = len(self.arms)
        self.n_groups = int(self.replicates.size * n_arms)
        gid = np.where(arm_code >= 0, rep_idx * n_arms + arm_code, -1)
        status = patients["solver_status"].to_numpy(dtype=object)
        ok = status == _OK
        in_arm = gid >= 0
        self.ok_rows: IntArray = np.flatnonzero(ok & in_arm)
        self.gid_ok: IntArray = gid[self.ok_rows]
        self.n_ok: IntArray = np.bincount(self.gid_ok, minlength=self.n_groups)
        self.n_failed: IntArray = np.bincount(gid[~ok & in_arm], minlength=self.n_groups)
        # For splitting "ok" rows by group.
        self._order = np.argsort(self.gid_ok, kind="stable")
        self._bounds = np.cumsum(self.n_ok)[:-1] if self.n_groups else np.empty(0, np.int64)

    def split(
        self, values: FloatArray, mask: npt.NDArray[np.bool_] | None = None
    ) -> list[FloatArray]:
        """Split values of the "ok" rows into one array per group."""
        vals = values[self._order]
        if self.n_groups == 0:
            return []
        if mask is None:
            return list(np.split(vals, self._bounds))
        parts = np.split(vals, self._bounds)
        masks = np.split(mask[self._order], self._bounds)
        return [p[m] for p, m in zip(parts, masks, strict=True)]

    def row_labels(self, repeat: int) -> tuple[npt.NDArray[np.int32], pd.Series]:
        """``replicate`` and ``arm`` columns with each group repeated `repeat` times."""
        n_arms = len(self.arms)
        rep = np.repeat(self.replicates, n_arms * repeat).astype(np.int32)
        arm = [a for _ in range(self.replicates.size) for a in self.arms for _ in range(repeat)]
        return rep, _str_column(arm)

    def raise_at(self, bad: npt.NDArray[np.bool_], message: str, values: FloatArray) -> None:
        """Raise DataError naming the first "ok" row where `bad` holds."""
        hits = np.flatnonzero(bad)
        if hits.size == 0:
            return
        row = int(self.ok_rows[hits[0]])
        rec = self.patients.iloc[row]
        pid = rec["patient_id"] if "patient_id" in self.patients.columns else "?"
        raise DataError(
            f"patients: row {row} (replicate {rec['replicate']}, patient_id {pid}): "
            f"{message}, got {values[hits[0]]!r} ({hits.size} row(s) affected)"
        )


def _grouped_stats(
    values: FloatArray, gid: IntArray, n_groups: int, percentiles: Sequence[float]
) -> dict[str, Any]:
    """n, mean, sd (ddof=1), min, max and percentiles of finite values by group.

    Percentiles use numpy's default ``linear`` method, computed from the
    values sorted within each group.  All outputs have shape (n_groups,).
    """
    counts = np.bincount(gid, minlength=n_groups).astype(np.int64)
    has = counts > 0
    res: dict[str, Any] = {"n": counts}
    mean = np.full(n_groups, np.nan)
    sums = np.bincount(gid, weights=values, minlength=n_groups)
    np.divide(sums, counts, out=mean, where=has)
    if values.size:
        # second pass: correct the mean with the mean residual
        resid = values - mean[gid]
        corr = np.bincount(gid, weights=resid, minlength=n_groups)
        np.divide(corr, counts, out=corr, where=has)
        mean = np.where(has, mean + corr, np.nan)
        resid = values - mean[gid]
        ss = np.bincount(gid, weights=resid * resid, minlength=n_groups).astype(np.float64)
    else:
        ss = np.zeros(n_groups, dtype=np.float64)
    sd = np.full(n_groups, np.nan)
    two = counts >= 2
    sd[two] = np.sqrt(ss[two] / (counts[two] - 1))
    res["mean"] = mean
    res["sd"] = sd

    vs = values[_order_by(gid, values)]
    starts = np.zeros(n_groups, dtype=np.int64)
    if n_groups:
        starts[1:] = np.cumsum(counts)[:-1]
    last = np.maximum(counts - 1, 0)
    ilo = np.where(has, starts, 0)
    ihi = np.where(has, starts + last, 0)

    def take(idx: IntArray) -> FloatArray:
        out = np.full(n_groups, np.nan)
        if vs.size:
            out[has] = vs[idx[has]]
        return out

    res["min"] = take(ilo)
    res["max"] = take(ihi)
    for p in percentiles:
        pos = (p / 100.0) * last
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, last)
        frac = pos - lo
        a = take(starts + lo)
        b = take(starts + hi)
        diff = b - a
        # numpy's _lerp, for bitwise-close agreement with np.percentile
        val = np.where(frac >= 0.5, b - diff * (1.0 - frac), a + diff * frac)
        val = np.where(a == b, a, val)
        res[percentile_column(p)] = val
    return res


def _order_by(primary: IntArray, secondary: FloatArray) -> IntArray:
    """Permutation sorting by `primary` (small non-negative ints), then `secondary`.

    Same result as ``np.lexsort((secondary, primary))`` but several times
    faster: a value sort followed by a stable (radix) sort on the group key.
    """
    order = np.argsort(secondary)
    key = primary[order]
    if key.size and int(key.max()) <= np.iinfo(np.uint16).max:
        key = key.astype(np.uint16)
    return np.asarray(order[np.argsort(key, kind="stable")], dtype=np.int64)


def _arm_codes(arm: pd.Series, arms: Sequence[str]) -> IntArray:
    """Index of each row's arm in `arms`, -1 if not requested."""
    codes = pd.Index(list(arms), dtype=object).get_indexer(
        pd.Index(arm.to_numpy(dtype=object), dtype=object)
    )
    return np.asarray(codes, dtype=np.int64)


def _numeric(df: pd.DataFrame, column: str) -> FloatArray:
    """A numeric or bool column as a float64 array (NA -> NaN)."""
    series = df[column]
    if not (
        pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype)
    ):
        raise DataError(f"column {column!r}: must be numeric, got dtype {series.dtype}")
    return np.asarray(series.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


def _check_binary(patients: pd.DataFrame, name: str, values: FloatArray, groups: _Groups) -> None:
    finite = np.isfinite(values)
    bad = finite & (values != 0) & (values != 1)
    bad |= np.isinf(values)
    groups.raise_at(bad, f"{name}: binary endpoint must be 0/1", values)


def _require_columns(df: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in dict.fromkeys(columns) if c not in df.columns]
    if missing:
        raise DataError(
            f"patients: missing column(s) {missing}; have {[str(c) for c in df.columns]}"
        )


def unique_names(names: Sequence[str], what: str) -> list[str]:
    """``names`` as a list of str; ValueError naming ``what`` if a string or duplicated."""
    if isinstance(names, str):
        raise ValueError(f"{what}: must be a sequence of names, got the string {names!r}")
    out = [str(n) for n in names]
    dup = sorted({n for n in out if out.count(n) > 1})
    if dup:
        raise ValueError(f"{what}: duplicated name(s) {dup}")
    return out


def _percentile_columns(percentiles: Sequence[float]) -> list[str]:
    cols = [percentile_column(p) for p in percentiles]
    if len(set(cols)) != len(cols):
        raise ValueError(f"percentiles: duplicated value(s) in {list(percentiles)}")
    return cols


def _check_confidence(confidence: float) -> None:
    if isinstance(confidence, bool) or not (
        isinstance(confidence, numbers.Real) and 0.0 < float(confidence) < 1.0
    ):
        raise ValueError(f"confidence: must be in (0, 1), got {confidence!r}")


def _str_column(values: Sequence[Any]) -> pd.Series:
    """An object-dtype Series of plain str (pandas would infer ``str`` dtype)."""
    return pd.Series([str(v) for v in values], dtype=object)


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
