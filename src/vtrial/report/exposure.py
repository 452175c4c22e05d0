"""Exposure figures: distributions of Cmax/AUC by arm and exposure-response of AE grades."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from vtrial.analysis import stats
from vtrial.errors import DataError

if TYPE_CHECKING:
    pass


from vtrial.report.style import (
    FloatArray,
    arm_style,
    as_float,
    as_str,
    escape_text,
    fmt_conf,
    metric_label,
    new_figure,
    ok_rows,
    plain_log_ticks,
    render_png,
    require_columns,
    unit_text,
    with_unit,
)

_log = logging.getLogger(__name__)


def exposure_values(
    patients: pd.DataFrame, metric: str, arms: list[str]
) -> list[tuple[int, str, FloatArray]]:
    """Finite values of `metric` of "ok" patients per arm, skipping all-zero arms."""
    require_columns(patients, ["arm", "solver_status", metric], "patients")
    values = as_float(patients[metric])
    arm_col = as_str(patients["arm"])
    keep = ok_rows(patients) & np.isfinite(values)
    out: list[tuple[int, str, FloatArray]] = []
    for i, arm in enumerate(arms):
        v = values[keep & (arm_col == arm)]
        if v.size == 0 or not np.any(v != 0):
            continue  # absent, or e.g. placebo: nothing to show
        out.append((i, arm, v))
    return out


def plot_exposure(
    patients: pd.DataFrame,
    metric: str,
    *,
    arms: Sequence[str],
    unit: str,
    path: str | Path,
    target: tuple[float, float] | None = None,
) -> Path:
    """Box plots by arm of a per-patient exposure metric.

    Boxes span the interquartile range with the median, whiskers the 5th to
    95th percentiles, points beyond them are drawn.  Only patients with
    ``solver_status == "ok"`` and a finite value are used; arms whose values
    are all 0 or missing (e.g. placebo) are skipped.  The y axis is
    logarithmic when every value drawn is > 0.

    Parameters
    ----------
    patients : pandas.DataFrame
        Patients table, columns ``arm``, ``solver_status`` and `metric`.
    metric : str
        Metric column, e.g. ``"cmax"`` or ``"auc"``.
    arms : sequence of str
        Arms, in box order (and style order).
    unit : str
        Unit of the metric (``"mg/L"``, ``"mg/L·h"``).
    path : str or pathlib.Path
        PNG file to write.
    target : tuple of float, optional
        ``(low, high)`` target range (metric unit), shaded.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    DataError
        If a column is missing or not numeric, or no arm has a non-zero value.
    ValueError
        If `arms` has duplicates or `target` is not ``0 <= low < high``.
    """
    arms = stats.unique_names(arms, "arms")
    if target is not None:
        lo, hi = (float(v) for v in target)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo < hi):
            raise ValueError(f"target: must be (low, high) with 0 <= low < high, got {target!r}")
    data = exposure_values(patients, metric, arms)
    if not data:
        raise DataError(f"patients: no non-zero finite {metric!r} values for arms {arms}")
    return render_png(lambda: _exposure_figure(data, metric, unit, target), path)


def _exposure_figure(
    data: list[tuple[int, str, FloatArray]],
    metric: str,
    unit: str,
    target: tuple[float, float] | None,
) -> Figure:
    fig = new_figure()
    ax = fig.add_subplot()
    log = all(bool(np.all(v > 0)) for _, _, v in data)
    positions = np.arange(1, len(data) + 1, dtype=np.float64)
    bp = ax.boxplot(
        [v for _, _, v in data],
        positions=positions,
        whis=(5.0, 95.0),
        widths=0.55,
        patch_artist=True,
        tick_labels=[f"{escape_text(arm)}\n(n={v.size})" for _, arm, v in data],
        medianprops={"color": "black", "linewidth": 2.0},
        whiskerprops={"linewidth": 1.0},
        capprops={"linewidth": 1.0},
        flierprops={"markersize": 2.5, "alpha": 0.5, "markeredgewidth": 0.6},
    )
    for (i, _, _), box, flier in zip(data, bp["boxes"], bp["fliers"], strict=True):
        st = arm_style(i)
        box.set_facecolor(to_rgba(st.colour, 0.35))
        box.set_edgecolor(st.colour)
        box.set_linewidth(1.3)
        if st.hatch:
            box.set_hatch(st.hatch)
            box.set_hatchcolor(to_rgba(st.colour, 0.7))
        flier.set_marker(st.marker)
        flier.set_markeredgecolor(st.colour)
        flier.set_markerfacecolor("none")
    if log:
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
    label = metric_label(metric)
    subtitle = "box: quartiles and median, whiskers: 5th–95th percentiles"
    if target is not None:
        lo, hi = (float(v) for v in target)
        y0, y1 = ax.get_ylim()
        span_lo = lo if (lo > 0 or not log) else y0
        ax.axhspan(
            span_lo,
            hi,
            facecolor="0.85",
            hatch="..",
            hatchcolor="0.55",
            edgecolor="0.4",
            linewidth=0.8,
            zorder=0,
        )
        ax.set_ylim(min(y0, span_lo) if log else min(y0, lo), max(y1, hi * (1.15 if log else 1.05)))
        subtitle += f"; shaded: target {lo:g}–{hi:g} {unit_text(unit)}"
    ax.set_ylabel(with_unit(label, unit))
    ax.set_title(f"{escape_text(label)} by arm\n", fontsize=11)
    ax.text(0.5, 1.01, subtitle, transform=ax.transAxes, ha="center", va="bottom", fontsize=8)
    ax.yaxis.grid(True, which="major", color="0.88", linewidth=0.6)
    ax.set_axisbelow(True)
    return fig


# --------------------------------------------------------------------------- #
# Forest plot of differences vs control
# --------------------------------------------------------------------------- #


def _exposure_response_bins(
    patients: pd.DataFrame,
    metric: str,
    event_grade_column: str,
    bins: int,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Quantile bins of exposure with the proportion of grade >= 3 per bin.

    Dosed patients are the "ok" patients with a finite `metric` > 0 and a
    finite grade.  Bin edges are the quantiles ``k / bins`` of their
    exposure (duplicated edges merged); the last bin is closed on the right.

    Returns
    -------
    pandas.DataFrame
        One row per non-empty bin: ``x_low``, ``x_high`` (bin edges),
        ``x_median``, ``n``, ``count`` (grade >= 3), ``p``, ``ci_low``,
        ``ci_high`` (Wilson).
    """
    require_columns(patients, ["solver_status", metric, event_grade_column], "patients")
    x = as_float(patients[metric])
    grade = as_float(patients[event_grade_column])
    keep = ok_rows(patients) & np.isfinite(x) & (x > 0) & np.isfinite(grade)
    x = x[keep]
    event = grade[keep] >= 3
    if x.size == 0:
        raise DataError(
            f"patients: no dosed patient (finite {metric!r} > 0 and finite "
            f"{event_grade_column!r}) for the exposure-response plot"
        )
    n_bins = min(bins, x.size)
    edges = np.unique(np.quantile(x, np.linspace(0.0, 1.0, n_bins + 1)))
    if edges.size < 2:
        edges = np.array([edges[0], edges[0]])
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, edges.size - 2)
    records: list[dict[str, float]] = []
    for b in range(edges.size - 1):
        inb = idx == b
        n = int(np.count_nonzero(inb))
        if n == 0:
            continue
        k = int(np.count_nonzero(event[inb]))
        low, high = stats.wilson_interval(k, n, confidence)
        records.append(
            {
                "x_low": float(edges[b]),
                "x_high": float(edges[b + 1]),
                "x_median": float(np.median(x[inb])),
                "n": n,
                "count": k,
                "p": k / n,
                "ci_low": low,
                "ci_high": high,
            }
        )
    out = pd.DataFrame.from_records(records)
    return out.astype({"n": np.int64, "count": np.int64})


def plot_exposure_response(
    patients: pd.DataFrame,
    *,
    metric: str,
    event_grade_column: str,
    unit: str,
    path: str | Path,
    bins: int = 5,
    event: str | None = None,
    confidence: float = 0.95,
) -> Path:
    """Plot the probability of a grade >= 3 event against binned exposure.

    Dosed patients (``solver_status == "ok"``, finite `metric` > 0) are
    split into `bins` quantile bins of exposure, pooled over replicates.
    Each bin is drawn at its median exposure with the proportion of patients
    with grade >= 3 and its Wilson interval
    (:func:`vtrial.analysis.stats.wilson_interval`); the horizontal line shows the
    bin's range.

    Parameters
    ----------
    patients : pandas.DataFrame
        Patients table, columns ``solver_status``, `metric` and
        `event_grade_column` (max CTCAE grade, 0-5).
    metric : str
        Exposure column, e.g. ``"auc"``.
    event_grade_column : str
        Grade column, e.g. ``"ae_neutropenia_grade"``.
    unit : str
        Unit of the metric for the x label.
    path : str or pathlib.Path
        PNG file to write.
    bins : int, optional
        Number of quantile bins (fewer if there are fewer distinct
        quantiles or patients), default 5.
    event : str, optional
        Event name for the title; default derived from the column name
        (``ae_neutropenia_grade`` -> ``neutropenia``).
    confidence : float, optional
        Confidence level of the Wilson intervals, default 0.95.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    DataError
        If a column is missing or not numeric, or there is no dosed patient.
    ValueError
        If `bins` < 1 or `confidence` is not in (0, 1).
    """
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"bins: must be an integer >= 1, got {bins!r}")
    conf = fmt_conf(confidence)
    table = _exposure_response_bins(patients, metric, event_grade_column, int(bins), confidence)
    if event is None:
        m = re.fullmatch(r"ae_(.+)_grade", event_grade_column)
        event = m.group(1) if m else event_grade_column
    name = event
    return render_png(lambda: _exposure_response_figure(table, metric, unit, name, conf), path)


def _exposure_response_figure(
    table: pd.DataFrame, metric: str, unit: str, event: str, conf: str
) -> Figure:
    fig = new_figure()
    ax = fig.add_subplot()
    x = table["x_median"].to_numpy(dtype=np.float64)
    p = table["p"].to_numpy(dtype=np.float64) * 100.0
    lo = table["ci_low"].to_numpy(dtype=np.float64) * 100.0
    hi = table["ci_high"].to_numpy(dtype=np.float64) * 100.0
    x_lo = table["x_low"].to_numpy(dtype=np.float64)
    x_hi = table["x_high"].to_numpy(dtype=np.float64)
    ax.hlines(p, x_lo, x_hi, color="0.6", linewidth=1.0, zorder=1, label="bin range")
    ax.errorbar(
        x,
        p,
        # clipped: statsmodels' Wilson bound for 0 events can be 1e-18 above 0
        yerr=np.maximum(np.vstack([p - lo, hi - p]), 0.0),
        fmt="o-",
        color="#0072B2",
        ecolor="black",
        elinewidth=1.2,
        capsize=4,
        markersize=7,
        markerfacecolor="white",
        markeredgewidth=1.5,
        linewidth=1.0,
        zorder=3,
        label=f"proportion, {conf} Wilson CI",
    )
    n = table["n"].to_numpy()
    k = table["count"].to_numpy()
    for xi, hi_i, ki, ni in zip(x, hi, k, n, strict=True):
        ax.annotate(
            f"{ki}/{ni}",
            (xi, hi_i),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis)
    ax.set_ylim(0.0, min(105.0, max(float(np.max(hi)), 10.0) * 1.2 + 3.0))
    label = metric_label(metric)
    ax.set_xlabel(f"{with_unit(label, unit)}, median of quantile bin")
    ax.set_ylabel("P(grade ≥ 3) (%)")
    ax.set_title(f"{escape_text(event)}: grade ≥ 3 vs {escape_text(label)} (dosed patients)")
    ax.grid(True, which="major", color="0.88", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", frameon=False, fontsize=8)
    return fig


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #


def exposure_metric_unit(metric: str, conc_unit: str) -> str:
    if metric == "auc":
        return f"{conc_unit}·h" if conc_unit else "h"
    if metric == "tmax":
        return "h"
    return conc_unit
