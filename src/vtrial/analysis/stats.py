"""Statistics shared by the summary tables: intervals, Kaplan-Meier, grouping.

The summary tables (:mod:`vtrial.analysis.exposure`, :mod:`vtrial.analysis.efficacy`,
:mod:`vtrial.analysis.safety`, :mod:`vtrial.analysis.bands`) are built from the pieces
here: confidence intervals of proportions (:func:`wilson_interval`), the Kaplan-Meier
median and its interval (:func:`km_median_ci`), per-group descriptive statistics
(:func:`grouped_stats`) and the (replicate, arm) groups of a patients table
(:class:`Groups`), with the checks and column helpers every table uses. A new generic
statistic belongs here; a new table gets its own module.

Every summary takes the **patients table** written after simulation (one row
per virtual patient, columns ``replicate``, ``patient_id``, ``arm``,
``solver_status`` and the metric / endpoint / adverse-event columns) and
returns a new tidy :class:`pandas.DataFrame` with

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

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from statsmodels.duration.survfunc import SurvfuncRight
from statsmodels.stats.proportion import proportion_confint

from vtrial.errors import DataError

__all__ = [
    "PERCENTILES",
    "SOLVER_OK",
    "FloatArray",
    "Groups",
    "IntArray",
    "arm_codes",
    "check_confidence",
    "grouped_stats",
    "km_median_ci",
    "numeric_values",
    "order_by",
    "percentile_column",
    "percentile_columns",
    "require_columns",
    "str_column",
    "unique_names",
    "wilson_arrays",
    "wilson_interval",
]


PERCENTILES: tuple[float, ...] = (5, 25, 50, 75, 95)
"""Default percentiles (in %) of
:func:`~vtrial.analysis.exposure.exposure_summary`."""


#: float64 array
FloatArray = npt.NDArray[np.float64]
#: int64 array
IntArray = npt.NDArray[np.int64]

#: ``solver_status`` of a patient whose values enter the statistics
SOLVER_OK = "ok"

# Tolerance when asking whether a Kaplan-Meier product reached 0.5: products
# such as 3/4 * 2/3 are 0.5000000000000001 in floating point.
_KM_TOL = 1e-12


# --------------------------------------------------------------------------- #
# Intervals and Kaplan-Meier
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
    check_confidence(confidence)
    if n < 0 or count < 0 or count > n:
        raise ValueError(f"wilson_interval: need 0 <= count <= n, got count={count}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    low, high = proportion_confint(int(count), int(n), alpha=1.0 - confidence, method="wilson")
    return (float(low), float(high))


def wilson_arrays(count: IntArray, n: IntArray, confidence: float) -> tuple[FloatArray, FloatArray]:
    """Vectorised :func:`wilson_interval` (NaN where n == 0)."""
    low = np.full(count.shape, np.nan)
    high = np.full(count.shape, np.nan)
    ok = n > 0
    if np.any(ok):
        lo, hi = proportion_confint(count[ok], n[ok], alpha=1.0 - confidence, method="wilson")
        low[ok] = lo
        high[ok] = hi
    return low, high


def km_median_ci(
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
    return km_median_ci(time, status, 0.95)[0]


# --------------------------------------------------------------------------- #
# Groups of a patients table and statistics by group
# --------------------------------------------------------------------------- #


class Groups:
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
        arm_code = arm_codes(patients["arm"], arms)
        n_arms = len(self.arms)
        self.n_groups = int(self.replicates.size * n_arms)
        gid = np.where(arm_code >= 0, rep_idx * n_arms + arm_code, -1)
        status = patients["solver_status"].to_numpy(dtype=object)
        ok = status == SOLVER_OK
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
        return rep, str_column(arm)

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


def grouped_stats(
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

    vs = values[order_by(gid, values)]
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


def order_by(primary: IntArray, secondary: FloatArray) -> IntArray:
    """Permutation sorting by `primary` (small non-negative ints), then `secondary`.

    Same result as ``np.lexsort((secondary, primary))`` but several times
    faster: a value sort followed by a stable (radix) sort on the group key.
    """
    order = np.argsort(secondary)
    key = primary[order]
    if key.size and int(key.max()) <= np.iinfo(np.uint16).max:
        key = key.astype(np.uint16)
    return np.asarray(order[np.argsort(key, kind="stable")], dtype=np.int64)


def arm_codes(arm: pd.Series, arms: Sequence[str]) -> IntArray:
    """Index of each row's arm in `arms`, -1 if not requested."""
    codes = pd.Index(list(arms), dtype=object).get_indexer(
        pd.Index(arm.to_numpy(dtype=object), dtype=object)
    )
    return np.asarray(codes, dtype=np.int64)


# --------------------------------------------------------------------------- #
# Checks and columns
# --------------------------------------------------------------------------- #


def numeric_values(df: pd.DataFrame, column: str) -> FloatArray:
    """A numeric or bool column as a float64 array (NA -> NaN)."""
    series = df[column]
    if not (
        pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype)
    ):
        raise DataError(f"column {column!r}: must be numeric, got dtype {series.dtype}")
    return np.asarray(series.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


def require_columns(df: pd.DataFrame, columns: Sequence[str]) -> None:
    """Raise DataError naming every column of `columns` that `df` lacks."""
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


def percentile_columns(percentiles: Sequence[float]) -> list[str]:
    """Column names of `percentiles` (:func:`percentile_column`); ValueError if two coincide."""
    cols = [percentile_column(p) for p in percentiles]
    if len(set(cols)) != len(cols):
        raise ValueError(f"percentiles: duplicated value(s) in {list(percentiles)}")
    return cols


def check_confidence(confidence: float) -> None:
    """Raise ValueError unless `confidence` is a real number in (0, 1)."""
    if isinstance(confidence, bool) or not (
        isinstance(confidence, numbers.Real) and 0.0 < float(confidence) < 1.0
    ):
        raise ValueError(f"confidence: must be in (0, 1), got {confidence!r}")


def str_column(values: Sequence[Any]) -> pd.Series:
    """An object-dtype Series of plain str (pandas would infer ``str`` dtype)."""
    return pd.Series([str(v) for v in values], dtype=object)
