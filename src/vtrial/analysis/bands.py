"""Exact percentile bands of simulated time courses, pooled over replicates.

:func:`percentile_bands` computes the order statistics of a long time-course table per
arm, output and time. The workflow's band tables come from the mergeable sketches of
:mod:`vtrial.analysis.sketch` (memory bounded, within 0.5 % of these); this exact
version is their reference and serves small tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from vtrial.analysis.stats import (
    IntArray,
    arm_codes,
    grouped_stats,
    numeric_values,
    order_by,
    percentile_columns,
    require_columns,
    str_column,
    unique_names,
)
from vtrial.errors import DataError

__all__ = ["percentile_bands"]


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
        (:func:`~vtrial.analysis.stats.percentile_column` names) and ``mean`` (float64), computed in
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
    pcols = percentile_columns(percentiles)
    require_columns(timecourse, ["arm", "time", *outputs])

    arm_code = arm_codes(timecourse["arm"], arms)
    time = numeric_values(timecourse, "time")
    if not np.all(np.isfinite(time)):
        raise DataError("timecourse: column 'time' must be finite")
    keep = arm_code >= 0
    a = arm_code[keep]
    t = time[keep]
    order = order_by(a, t)
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
        v = numeric_values(timecourse, out)[keep][order]
        finite = np.isfinite(v)
        stats_by_output.append(grouped_stats(v[finite], gid_sorted[finite], n_groups, pvals))

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
        "arm": str_column(list(arms_arr[group_arm[gi]])),
        "output": str_column(list(outputs_arr[oi])),
        "time": group_time[gi].astype(np.float64),
        "n": pick("n").astype(np.int64),
    }
    for col in pcols:
        columns[col] = pick(col).astype(np.float64)
    columns["mean"] = pick("mean").astype(np.float64)
    return pd.DataFrame(columns)
