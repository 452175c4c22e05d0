"""Exposure summary: descriptive statistics of the exposure metrics per replicate and arm.

One table, :func:`exposure_summary`, of the per-patient metrics of the patients table
(``cmax``, ``tmax``, ``auc``, ``ctrough``): counts, mean and SD, geometric mean and CV,
percentiles, min and max. It follows the conventions of every summary table
(:mod:`vtrial.analysis.stats`: row order, dtypes, failed and missing patients).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from vtrial.analysis.stats import (
    PERCENTILES,
    Groups,
    grouped_stats,
    numeric_values,
    percentile_columns,
    require_columns,
    str_column,
    unique_names,
)

__all__ = ["exposure_summary"]


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
        :data:`~vtrial.analysis.stats.PERCENTILES`.  Column names from
        :func:`~vtrial.analysis.stats.percentile_column`.

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
    pcols = percentile_columns(percentiles)
    require_columns(patients, ["replicate", "arm", "solver_status", *metrics])

    groups = Groups(patients, arms)
    n_groups = groups.n_groups
    per_metric: list[dict[str, Any]] = []
    for metric in metrics:
        values = numeric_values(patients, metric)[groups.ok_rows]
        finite = np.isfinite(values)
        gid = groups.gid_ok[finite]
        vals = values[finite]
        res = grouped_stats(vals, gid, n_groups, [float(p) for p in percentiles])
        res["n_missing"] = np.bincount(groups.gid_ok[~finite], minlength=n_groups)
        positive = vals > 0
        logs = grouped_stats(np.log(vals[positive]), gid[positive], n_groups, [])
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
        "metric": str_column(list(metrics) * n_groups),
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
