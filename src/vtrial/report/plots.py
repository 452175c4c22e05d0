"""Figures of a simulated trial: VPC bands, safety, exposure, forest, E-R.

Every ``plot_*`` function reads one of the tidy tables written by
:mod:`vtrial.analysis.stats` (or the patients table), draws one figure and writes it
as a PNG, atomically (temporary file in the same folder, then
:func:`os.replace`), and returns the path written.  :func:`make_report`
builds every figure that applies to a study.

Design rules
------------
* Figures are :class:`matplotlib.figure.Figure` objects rendered with the Agg
  canvas; :mod:`matplotlib.pyplot` is never used, so no figure is left open
  and the process-wide backend is not changed.  Style settings are applied
  with :func:`matplotlib.rc_context` and restored afterwards.
* Figures are 7 x 4.5 in at 120 dpi (the forest plot grows with its number of
  rows), with a tight layout.
* Up to 6 arms stay distinguishable in black and white: each arm has its own
  line style, marker and hatch on top of a colour-blind-safe colour
  (Okabe-Ito).  An arm keeps the same style in every figure (its position in
  the ``arms`` sequence).
* Times are in hours in the tables; time axes are drawn in days when the
  plotted horizon is longer than 72 h.
* Arms requested but absent from a table are skipped (or shown as
  "no data"); a figure with nothing to draw at all raises
  :class:`~vtrial.errors.DataError`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib as mpl
import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import LogFormatter, MultipleLocator

from vtrial.analysis import stats
from vtrial.errors import DataError

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

__all__ = [
    "make_report",
    "plot_bands",
    "plot_exposure",
    "plot_exposure_response",
    "plot_forest",
    "plot_safety",
]

_log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

FIGSIZE: tuple[float, float] = (7.0, 4.5)
DPI = 120
HOURS_PER_DAY = 24.0
DAYS_THRESHOLD_H = 72.0
"""Time axes switch from hours to days when the horizon exceeds this (h)."""

_RC: dict[RcKeyType, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8.5,
    "hatch.linewidth": 0.7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": DPI,
    "figure.dpi": DPI,
}

# Okabe-Ito colours, then black/white cues: line style, marker, hatch.
_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#000000")
_LINESTYLES: tuple[Any, ...] = (
    "-",
    (0, (6, 2.5)),
    (0, (1.2, 1.8)),
    (0, (6, 2, 1.2, 2)),
    (0, (6, 2, 1.2, 2, 1.2, 2)),
    (0, (12, 3)),
)
_MARKERS = ("o", "s", "^", "D", "v", "X")
_HATCHES = ("", "////", "\\\\\\\\", "....", "xxxx", "----")

# Safety: exact CTCAE grades 1..5, light -> dark, each with its own hatch.
_GRADES = ("1", "2", "3", "4", "5")
_GRADE_COLOURS = ("#fee8c8", "#fdbb84", "#ef6548", "#b30000", "#3b0000")
_GRADE_HATCHES = ("", "....", "////", "xxxx", "\\\\\\\\")
_GRADE_HATCH_COLOURS = ("#000000", "#000000", "#000000", "#ffffff", "#ffffff")

_METRIC_LABELS = {"cmax": "Cmax", "auc": "AUC", "ctrough": "Ctrough", "tmax": "Tmax"}
_BAND_COLUMNS = ("p5", "p50", "p95")


@dataclass(frozen=True)
class _ArmStyle:
    colour: str
    linestyle: Any
    marker: str
    hatch: str


def _arm_style(index: int) -> _ArmStyle:
    """Style of the arm at position `index` (cycles with offsets after 6 arms)."""
    k = index % 6
    r = index // 6
    return _ArmStyle(
        colour=_COLOURS[k],
        linestyle=_LINESTYLES[(k + r) % 6],
        marker=_MARKERS[(k + 2 * r) % 6],
        hatch=_HATCHES[(k + 3 * r) % 6],
    )


# --------------------------------------------------------------------------- #
# Small helpers
# --------------------------------------------------------------------------- #


def _text(s: object) -> str:
    """Plain text safe from mathtext parsing (``$`` escaped)."""
    return str(s).replace("$", r"\$")


def _unit_text(unit: str) -> str:
    """Unit for a label: ``10^9/L`` -> 10 with superscript 9 per L."""
    return re.sub(r"\^(-?\d+)", r"$^{\1}$", _text(unit))


def _with_unit(name: str, unit: str) -> str:
    return f"{_text(name)} ({_unit_text(unit)})" if unit else _text(name)


def _metric_label(metric: str) -> str:
    return _METRIC_LABELS.get(metric.lower(), metric)


def _num(value: float) -> str:
    """Compact number with a typographic minus sign; ``n/a`` if not finite."""
    if not math.isfinite(value):
        return "n/a"
    a = abs(value)
    if a >= 100:
        s = f"{value:.0f}"
    elif a >= 10:
        s = f"{value:.1f}"
    elif a >= 1:
        s = f"{value:.2f}"
    else:
        s = f"{value:.2g}"
    if s.startswith("-") and float(s) == 0:
        s = s[1:]
    return s.replace("-", "\u2212")


def _pct(p: float) -> str:
    """Proportion -> percent text (``0.123`` -> ``12``, ``0.05`` -> ``5.0``)."""
    if not math.isfinite(p):
        return "n/a"
    v = 100.0 * p
    return f"{v:.0f}" if v >= 10 or v == 0 else f"{v:.1f}"


def _p_text(p: float) -> str:
    if not math.isfinite(p):
        return "p = n/a"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}"


def _conf_text(confidence: float) -> str:
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence: must be in (0, 1), got {confidence!r}")
    return f"{100 * confidence:g} %"


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{what}: missing column(s) {missing}; have {[str(c) for c in df.columns]}")


def _as_float(series: pd.Series) -> FloatArray:
    if not (
        pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype)
    ):
        raise DataError(f"column {series.name!r}: must be numeric, got dtype {series.dtype}")
    return np.asarray(series.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


def _as_str(series: pd.Series) -> npt.NDArray[np.object_]:
    return np.array([str(v) for v in series.to_numpy(dtype=object)], dtype=object)


def _ok_rows(patients: pd.DataFrame) -> npt.NDArray[np.bool_]:
    status = patients["solver_status"].to_numpy(dtype=object)
    return np.asarray(status == "ok", dtype=bool)


class _PlainLogFormatter(LogFormatter):
    """Log-axis labels as plain numbers (``0.01``, ``60``), not powers of ten.

    Which ticks get a label is left to :class:`~matplotlib.ticker.LogFormatter`.
    """

    def __call__(self, x: float, pos: int | None = None) -> str:
        if not super().__call__(x, pos):
            return ""
        return f"{x:g}".replace("-", "\u2212")


def _plain_log_ticks(axis: Any) -> None:
    """Label a log axis with plain numbers."""
    axis.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _new_figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    fig = Figure(figsize=figsize, dpi=DPI, layout="tight")
    FigureCanvasAgg(fig)
    return fig


def _render(build: Callable[[], Figure], path: str | Path) -> Path:
    """Build a figure under the report style and write it atomically as PNG."""
    path = Path(path)
    with mpl.rc_context(_RC):
        fig = build()
        try:
            _write_png(fig, path)
        finally:
            fig.clear()
    return path


def _write_png(fig: Figure, path: Path) -> None:
    """Save `fig` to a temporary file next to `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as fh:
            fig.savefig(fh, format="png", dpi=DPI)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _safe_name(name: str) -> str:
    """File-name-safe version of an output / event name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip(".") or "_"


# --------------------------------------------------------------------------- #
# Percentile bands (VPC)
# --------------------------------------------------------------------------- #


def plot_bands(
    bands: pd.DataFrame,
    output: str,
    *,
    arms: Sequence[str],
    unit: str,
    path: str | Path,
    title: str | None = None,
    log: bool = False,
) -> Path:
    """Plot the 5-95 % band and median time course of one output by arm.

    Visual-predictive-check style: per arm a shaded, hatched 5-95 % band
    bounded by thin lines, and the median as a thick line with markers, each
    arm with its own colour, line style, marker and hatch.

    Parameters
    ----------
    bands : pandas.DataFrame
        Table from :func:`vtrial.analysis.stats.percentile_bands`, shape
        (n_rows, >= 7), columns ``arm``, ``output``, ``time`` (h), ``n``,
        ``p5``, ``p50``, ``p95`` (output unit).
    output : str
        Output to plot (a value of the ``output`` column), e.g. ``"CP"``.
    arms : sequence of str
        Arms to draw, in legend order.  Arms without rows are skipped.
    unit : str
        Unit of the output for the y label (``"mg/L"``); ``""`` for none.
    path : str or pathlib.Path
        PNG file to write (parent folders are created).
    title : str, optional
        Figure title; default ``"<output>: median and 5-95 % band"``.
    log : bool, optional
        Logarithmic y axis (non-positive values are not drawn).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    DataError
        If a column is missing or no requested arm has finite values of
        `output` (positive values when `log`).
    ValueError
        If `arms` has duplicates.
    """
    arms = stats.unique_names(arms, "arms")
    _require(bands, ["arm", "output", "time", *_BAND_COLUMNS], "bands")
    return _render(lambda: _bands_figure(bands, output, arms, unit, title, log), path)


def _bands_figure(
    bands: pd.DataFrame,
    output: str,
    arms: list[str],
    unit: str,
    title: str | None,
    log: bool,
) -> Figure:
    out_col = _as_str(bands["output"])
    arm_col = _as_str(bands["arm"])
    time = _as_float(bands["time"])
    values = {c: _as_float(bands[c]) for c in _BAND_COLUMNS}

    series: list[tuple[int, str, FloatArray, dict[str, FloatArray]]] = []
    for i, arm in enumerate(arms):
        sel = (out_col == output) & (arm_col == arm)
        if not np.any(sel):
            continue
        order = np.argsort(time[sel], kind="stable")
        t = time[sel][order]
        v = {c: values[c][sel][order].copy() for c in _BAND_COLUMNS}
        if log:
            for arr in v.values():
                arr[~(arr > 0)] = np.nan
        if not any(np.any(np.isfinite(arr)) for arr in v.values()):
            continue
        series.append((i, arm, t, v))
    if not series:
        extra = " positive" if log else ""
        raise DataError(f"bands: no finite{extra} values of output {output!r} for arms {arms}")

    horizon = max(float(np.max(t)) for _, _, t, _ in series)
    in_days = horizon > DAYS_THRESHOLD_H
    scale = 1.0 / HOURS_PER_DAY if in_days else 1.0

    fig = _new_figure()
    ax = fig.add_subplot()
    handles: list[Any] = []
    labels: list[str] = []
    n_arms = len(series)
    for k, (i, arm, t, v) in enumerate(series):
        st = _arm_style(i)
        x = t * scale
        lo, med, hi = v["p5"], v["p50"], v["p95"]
        ax.fill_between(
            x,
            lo,
            hi,
            facecolor=to_rgba(st.colour, 0.13),
            hatch=st.hatch or None,
            hatchcolor=to_rgba(st.colour, 0.45),
            edgecolor="none",
            linewidth=0.0,
            zorder=1,
        )
        for bound in (lo, hi):
            ax.plot(x, bound, color=st.colour, linestyle=st.linestyle, linewidth=0.8, alpha=0.8)
        step = max(1, x.size // 8)
        offset = (k * step) // max(n_arms, 1)
        ax.plot(
            x,
            med,
            color=st.colour,
            linestyle=st.linestyle,
            linewidth=2.0,
            marker=st.marker,
            markersize=5,
            markevery=(offset, step),
            markerfacecolor="white",
            markeredgewidth=1.3,
            zorder=3,
        )
        band = Patch(
            facecolor=to_rgba(st.colour, 0.13),
            hatch=st.hatch or None,
            hatchcolor=to_rgba(st.colour, 0.45),
            edgecolor=st.colour,
            linestyle=st.linestyle,
            linewidth=0.8,
        )
        line = Line2D(
            [],
            [],
            color=st.colour,
            linestyle=st.linestyle,
            linewidth=2.0,
            marker=st.marker,
            markersize=5,
            markerfacecolor="white",
            markeredgewidth=1.3,
        )
        handles.append((band, line))
        labels.append(_text(arm))

    if log:
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
    if in_days and 14.0 <= horizon / HOURS_PER_DAY <= 70.0:
        ax.xaxis.set_major_locator(MultipleLocator(7.0))  # weeks
    ax.set_xlabel("Time (days)" if in_days else "Time (h)")
    ax.set_ylabel(_with_unit(output, unit))
    ax.set_xlim(left=min(0.0, min(float(np.min(t)) for _, _, t, _ in series) * scale))
    ax.set_title(_text(title) if title is not None else f"{_text(output)}: median and 5–95 % band")
    ax.grid(True, which="major", color="0.88", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.legend(
        handles,
        labels,
        title="Arm (median, 5–95 %)",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
        handlelength=3.2,
        handler_map={tuple: HandlerTuple(ndivide=1)},
    )
    return fig


# --------------------------------------------------------------------------- #
# Safety: stacked incidence by grade
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _SafetyArm:
    arm: str
    index: int
    n: int  # pooled over replicates
    incidence: FloatArray  # (5,) proportions of max grade 1..5, pooled
    ge3: float
    ge3_low: float
    ge3_high: float


def _safety_arms(
    safety: pd.DataFrame, event: str, arms: list[str], confidence: float
) -> tuple[list[_SafetyArm], str]:
    """Pooled incidence of each exact grade and the grade >= 3 annotation per arm.

    Returns the per-arm records and a note on where the grade >= 3 interval
    comes from.
    """
    _require(safety, ["replicate", "arm", "event", "grade", "n", "count"], "safety")
    ev = _as_str(safety["event"]) == str(event)
    arm_col = _as_str(safety["arm"])[ev]
    grade = _as_str(safety["grade"])[ev]
    rep = _as_float(safety["replicate"])[ev]
    n_col = _as_float(safety["n"])[ev]
    count = _as_float(safety["count"])[ev]
    has_ci = all(c in safety.columns for c in ("incidence", "ci_low", "ci_high"))
    if has_ci:
        inc = _as_float(safety["incidence"])[ev]
        ci_lo = _as_float(safety["ci_low"])[ev]
        ci_hi = _as_float(safety["ci_high"])[ev]
    use_rep0 = has_ci and bool(np.any(rep == 0))
    note = "replicate 0" if use_rep0 else "pooled over replicates"

    out: list[_SafetyArm] = []
    for i, arm in enumerate(arms):
        a = arm_col == arm
        if not np.any(a):
            continue
        ge1 = a & (grade == ">=1")
        n_total = int(np.nansum(n_col[ge1])) if np.any(ge1) else 0
        if n_total == 0:  # no ">=1" row: fall back to the exact grade rows
            g0 = a & (grade == "0")
            n_total = int(np.nansum(n_col[g0]))
        incidence = np.full(len(_GRADES), np.nan)
        for j, g in enumerate(_GRADES):
            sel = a & (grade == g)
            n_g = float(np.nansum(n_col[sel]))
            if n_g > 0:
                incidence[j] = float(np.nansum(count[sel])) / n_g
        ge3 = low = high = math.nan
        sel3 = a & (grade == ">=3")
        if use_rep0 and np.any(sel3 & (rep == 0)):
            r0 = np.flatnonzero(sel3 & (rep == 0))[0]
            if n_col[r0] > 0:
                ge3, low, high = float(inc[r0]), float(ci_lo[r0]), float(ci_hi[r0])
        elif np.any(sel3):
            k3 = int(np.nansum(count[sel3]))
            n3 = int(np.nansum(n_col[sel3]))
            if n3 > 0:
                ge3 = k3 / n3
                low, high = stats.wilson_interval(k3, n3, confidence)
        out.append(_SafetyArm(arm, i, n_total, incidence, ge3, low, high))
    return out, note


def plot_safety(
    safety: pd.DataFrame,
    event: str,
    *,
    arms: Sequence[str],
    path: str | Path,
    confidence: float = 0.95,
) -> Path:
    """Plot stacked bars of the incidence of each maximum grade by arm.

    Bars stack the proportion of patients whose maximum CTCAE grade is 1, 2,
    3, 4 and 5 (each grade with its own fill and hatch), pooled over
    replicates (sum of counts / sum of n).  Above each bar the grade >= 3
    incidence is written with its confidence interval, taken from the
    ``">=3"`` row of replicate 0 when present (otherwise pooled, Wilson).

    Parameters
    ----------
    safety : pandas.DataFrame
        Table from :func:`vtrial.analysis.stats.safety_summary`, columns
        ``replicate``, ``arm``, ``event``, ``grade`` (``"0"``..``"5"``,
        ``">=1"``..``">=4"``), ``n``, ``count``, ``incidence``, ``ci_low``,
        ``ci_high``.
    event : str
        Event name (value of the ``event`` column), e.g. ``"neutropenia"``.
    arms : sequence of str
        Arms, in bar order.  Arms absent from the table are left out; arms
        present with no patients are shown as "no data".
    path : str or pathlib.Path
        PNG file to write.
    confidence : float, optional
        Confidence level of the intervals in the table (label only, and for
        the pooled Wilson interval), default 0.95.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    DataError
        If a column is missing or no requested arm has rows for `event`.
    ValueError
        If `arms` has duplicates or `confidence` is not in (0, 1).
    """
    arms = stats.unique_names(arms, "arms")
    conf = _conf_text(confidence)
    records, note = _safety_arms(safety, event, arms, confidence)
    if not records:
        raise DataError(f"safety: no rows for event {event!r} and arms {arms}")
    return _render(lambda: _safety_figure(records, event, conf, note), path)


def _safety_figure(records: list[_SafetyArm], event: str, conf: str, note: str) -> Figure:
    fig = _new_figure()
    ax = fig.add_subplot()
    x = np.arange(len(records), dtype=np.float64)
    heights = np.array([np.nan_to_num(r.incidence) * 100.0 for r in records])  # (arms, 5)
    bottom = np.zeros(len(records))
    for j, g in enumerate(_GRADES):
        ax.bar(
            x,
            heights[:, j],
            bottom=bottom,
            width=0.6,
            color=_GRADE_COLOURS[j],
            hatch=_GRADE_HATCHES[j] or None,
            hatchcolor=_GRADE_HATCH_COLOURS[j],
            edgecolor="black",
            linewidth=0.6,
            label=f"Grade {g}",
        )
        bottom += heights[:, j]
    top = float(np.max(bottom)) if bottom.size else 0.0
    for xi, r, b in zip(x, records, bottom, strict=True):
        if r.n == 0:
            ax.text(xi, 1.0, "no data", ha="center", va="bottom", fontsize=8.5, color="0.3")
            continue
        label = f"≥G3 {_pct(r.ge3)} %\n({_pct(r.ge3_low)}–{_pct(r.ge3_high)})"
        ax.text(xi, b + 0.02 * max(top, 10.0), label, ha="center", va="bottom", fontsize=8)
    ymax = max(top, 10.0) * 1.25 + 4.0
    ax.set_ylim(0.0, ymax)
    ax.set_yticks([t for t in ax.get_yticks() if 0 <= t <= min(ymax, 100.0)])
    ax.set_xticks(x, [f"{_text(r.arm)}\n(n={r.n})" for r in records])
    ax.set_xlim(-0.6, len(records) - 0.4)
    ax.set_ylabel("Patients (%)")
    ax.set_title(f"{_text(event)}: maximum grade by arm")
    ax.set_xlabel(
        f"Bars pooled over replicates; ≥G3: incidence of grade ≥ 3 ({conf} CI), {note}",
        fontsize=8,
        color="0.25",
    )
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(
        handles[::-1],
        labels[::-1],
        title="Max grade",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
    )
    ax.yaxis.grid(True, color="0.88", linewidth=0.6)
    ax.set_axisbelow(True)
    return fig


# --------------------------------------------------------------------------- #
# Exposure box plots
# --------------------------------------------------------------------------- #


def _exposure_values(
    patients: pd.DataFrame, metric: str, arms: list[str]
) -> list[tuple[int, str, FloatArray]]:
    """Finite values of `metric` of "ok" patients per arm, skipping all-zero arms."""
    _require(patients, ["arm", "solver_status", metric], "patients")
    values = _as_float(patients[metric])
    arm_col = _as_str(patients["arm"])
    keep = _ok_rows(patients) & np.isfinite(values)
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
    data = _exposure_values(patients, metric, arms)
    if not data:
        raise DataError(f"patients: no non-zero finite {metric!r} values for arms {arms}")
    return _render(lambda: _exposure_figure(data, metric, unit, target), path)


def _exposure_figure(
    data: list[tuple[int, str, FloatArray]],
    metric: str,
    unit: str,
    target: tuple[float, float] | None,
) -> Figure:
    fig = _new_figure()
    ax = fig.add_subplot()
    log = all(bool(np.all(v > 0)) for _, _, v in data)
    positions = np.arange(1, len(data) + 1, dtype=np.float64)
    bp = ax.boxplot(
        [v for _, _, v in data],
        positions=positions,
        whis=(5.0, 95.0),
        widths=0.55,
        patch_artist=True,
        tick_labels=[f"{_text(arm)}\n(n={v.size})" for _, arm, v in data],
        medianprops={"color": "black", "linewidth": 2.0},
        whiskerprops={"linewidth": 1.0},
        capprops={"linewidth": 1.0},
        flierprops={"markersize": 2.5, "alpha": 0.5, "markeredgewidth": 0.6},
    )
    for (i, _, _), box, flier in zip(data, bp["boxes"], bp["fliers"], strict=True):
        st = _arm_style(i)
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
        _plain_log_ticks(ax.yaxis)
    label = _metric_label(metric)
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
        subtitle += f"; shaded: target {lo:g}–{hi:g} {_unit_text(unit)}"
    ax.set_ylabel(_with_unit(label, unit))
    ax.set_title(f"{_text(label)} by arm\n", fontsize=11)
    ax.text(0.5, 1.01, subtitle, transform=ax.transAxes, ha="center", va="bottom", fontsize=8)
    ax.yaxis.grid(True, which="major", color="0.88", linewidth=0.6)
    ax.set_axisbelow(True)
    return fig


# --------------------------------------------------------------------------- #
# Forest plot of differences vs control
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _ForestRow:
    endpoint: str
    kind: str
    arm: str
    index: int
    diff: float
    low: float
    high: float
    p_value: float


def _forest_rows(
    efficacy: pd.DataFrame, control: str, arms: Sequence[str] | None
) -> tuple[list[_ForestRow], int]:
    """Rows (endpoint, non-control arm) of one replicate, binary scaled to points.

    Uses replicate 0, or the smallest replicate if 0 is absent; returns the
    rows and the replicate used.
    """
    cols = ["replicate", "arm", "endpoint", "kind", "diff", "diff_ci_low", "diff_ci_high"]
    _require(efficacy, [*cols, "p_value"], "efficacy")
    rep = _as_float(efficacy["replicate"])
    if rep.size == 0 or not np.any(np.isfinite(rep)):
        raise DataError("efficacy: table is empty")
    used = 0 if np.any(rep == 0) else int(np.nanmin(rep))
    sel = rep == used
    arm_col = _as_str(efficacy["arm"])[sel]
    endpoint = _as_str(efficacy["endpoint"])[sel]
    kind = _as_str(efficacy["kind"])[sel]
    diff = _as_float(efficacy["diff"])[sel]
    low = _as_float(efficacy["diff_ci_low"])[sel]
    high = _as_float(efficacy["diff_ci_high"])[sel]
    p = _as_float(efficacy["p_value"])[sel]
    order = list(arms) if arms is not None else list(dict.fromkeys(arm_col.tolist()))
    rows: list[_ForestRow] = []
    for ep in dict.fromkeys(endpoint.tolist()):
        for i, arm in enumerate(order):
            if arm == control:
                continue
            hit = np.flatnonzero((endpoint == ep) & (arm_col == arm))
            if hit.size == 0 or kind[hit[0]] == "time_to_event":  # a hazard ratio: no
                continue  # difference axis (see vtrial.report.trial_plots for its curves)
            r = int(hit[0])
            factor = 100.0 if kind[r] == "binary" else 1.0
            rows.append(
                _ForestRow(
                    endpoint=ep,
                    kind=str(kind[r]),
                    arm=arm,
                    index=i,
                    diff=float(diff[r]) * factor,
                    low=float(low[r]) * factor,
                    high=float(high[r]) * factor,
                    p_value=float(p[r]),
                )
            )
    return rows, used


def plot_forest(
    efficacy: pd.DataFrame,
    *,
    path: str | Path,
    control: str,
    arms: Sequence[str] | None = None,
    units: Mapping[str, str] | None = None,
    confidence: float = 0.95,
) -> Path:
    """Forest plot of the difference of each arm vs control, per endpoint.

    One panel per endpoint (each with its own x scale) and one row per
    non-control arm: the difference with its confidence interval, a vertical
    line at 0 and, on the right, the numbers and the p-value.  Replicate 0 is
    shown (the smallest replicate if there is no replicate 0).  Binary
    endpoints are differences of proportions in percentage points (x 100).

    Parameters
    ----------
    efficacy : pandas.DataFrame
        Table from :func:`vtrial.analysis.stats.efficacy_summary`, columns
        ``replicate``, ``arm``, ``endpoint``, ``kind``, ``diff``,
        ``diff_ci_low``, ``diff_ci_high``, ``p_value``.
    path : str or pathlib.Path
        PNG file to write.
    control : str
        Control arm (its rows are not drawn; it names the x axis).
    arms : sequence of str, optional
        Arm order and styles; default the order of the table.  Arms absent
        from the table are skipped.
    units : mapping of str to str, optional
        Endpoint -> unit of continuous endpoints, for the x labels.
    confidence : float, optional
        Confidence level of the intervals in the table (label only).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    DataError
        If a column is missing or there is no non-control row.
    ValueError
        If `arms` has duplicates or `confidence` is not in (0, 1).
    """
    if arms is not None:
        arms = stats.unique_names(arms, "arms")
    conf = _conf_text(confidence)
    rows, used = _forest_rows(efficacy, control, arms)
    if not rows:
        raise DataError(f"efficacy: no rows other than the control arm {control!r}")
    units = dict(units or {})
    return _render(lambda: _forest_figure(rows, used, control, units, conf), path)


def _forest_figure(
    rows: list[_ForestRow], used: int, control: str, units: dict[str, str], conf: str
) -> Figure:
    endpoints = list(dict.fromkeys(r.endpoint for r in rows))
    per = [[r for r in rows if r.endpoint == ep] for ep in endpoints]
    n_rows = [len(p) for p in per]
    height = max(FIGSIZE[1], 1.0 + sum(0.42 * n + 1.0 for n in n_rows))
    fig = _new_figure((FIGSIZE[0], height))
    gs = fig.add_gridspec(
        len(endpoints), 2, height_ratios=[n + 1.2 for n in n_rows], width_ratios=[3.0, 1.5]
    )
    for k, (ep, panel) in enumerate(zip(endpoints, per, strict=True)):
        ax = fig.add_subplot(gs[k, 0])
        tx = fig.add_subplot(gs[k, 1], sharey=ax)
        y = np.arange(len(panel), dtype=np.float64)
        for yi, r in zip(y, panel, strict=True):
            st = _arm_style(r.index)
            if math.isfinite(r.low) and math.isfinite(r.high):
                ax.plot([r.low, r.high], [yi, yi], color=st.colour, linewidth=1.6)
                for end in (r.low, r.high):
                    ax.plot([end, end], [yi - 0.12, yi + 0.12], color=st.colour, linewidth=1.6)
            if math.isfinite(r.diff):
                ax.plot(
                    [r.diff],
                    [yi],
                    marker=st.marker,
                    markersize=7,
                    color=st.colour,
                    markeredgecolor="black",
                    markeredgewidth=0.8,
                    linestyle="none",
                )
            tx.text(
                0.0,
                yi,
                f"{_num(r.diff)} [{_num(r.low)}, {_num(r.high)}]",
                ha="left",
                va="center",
                fontsize=8.5,
            )
            tx.text(0.68, yi, _p_text(r.p_value), ha="left", va="center", fontsize=8.5)
        ax.axvline(0.0, color="black", linewidth=0.9, linestyle=(0, (4, 2)), zorder=0)
        finite = [v for r in panel for v in (r.low, r.high, r.diff) if math.isfinite(v)]
        lo_x = min([0.0, *finite])
        hi_x = max([0.0, *finite])
        pad = 0.08 * (hi_x - lo_x) if hi_x > lo_x else 1.0
        ax.set_xlim(lo_x - pad, hi_x + pad)
        ax.set_ylim(len(panel) - 0.4, -0.6)
        ax.set_yticks(y, [_text(r.arm) for r in panel])
        binary = panel[0].kind == "binary"
        if binary:
            note = " (percentage points)"
        elif units.get(ep):
            note = f" ({_unit_text(units[ep])})"
        else:
            note = ""
        ax.set_xlabel(f"Difference vs {_text(control)}{note}")
        ax.set_title(_text(ep), loc="left", fontsize=10.5, fontweight="bold")
        ax.xaxis.grid(True, color="0.9", linewidth=0.6)
        ax.set_axisbelow(True)
        tx.set_xlim(0.0, 1.0)
        tx.axis("off")
        if k == 0:
            for xt, head in ((0.0, f"Difference [{conf} CI]"), (0.68, "p-value")):
                tx.text(xt, 1.0, head, transform=tx.transAxes, ha="left", va="bottom", fontsize=8.5)
    fig.suptitle(f"Treatment effect vs {_text(control)} (replicate {used})", fontsize=11)
    return fig


# --------------------------------------------------------------------------- #
# Exposure-response
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
    _require(patients, ["solver_status", metric, event_grade_column], "patients")
    x = _as_float(patients[metric])
    grade = _as_float(patients[event_grade_column])
    keep = _ok_rows(patients) & np.isfinite(x) & (x > 0) & np.isfinite(grade)
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
    conf = _conf_text(confidence)
    table = _exposure_response_bins(patients, metric, event_grade_column, int(bins), confidence)
    if event is None:
        m = re.fullmatch(r"ae_(.+)_grade", event_grade_column)
        event = m.group(1) if m else event_grade_column
    name = event
    return _render(lambda: _exposure_response_figure(table, metric, unit, name, conf), path)


def _exposure_response_figure(
    table: pd.DataFrame, metric: str, unit: str, event: str, conf: str
) -> Figure:
    fig = _new_figure()
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
    _plain_log_ticks(ax.xaxis)
    ax.set_ylim(0.0, min(105.0, max(float(np.max(hi)), 10.0) * 1.2 + 3.0))
    label = _metric_label(metric)
    ax.set_xlabel(f"{_with_unit(label, unit)}, median of quantile bin")
    ax.set_ylabel("P(grade ≥ 3) (%)")
    ax.set_title(f"{_text(event)}: grade ≥ 3 vs {_text(label)} (dosed patients)")
    ax.grid(True, which="major", color="0.88", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", frameon=False, fontsize=8)
    return fig


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #


def _exposure_metric_unit(metric: str, conc_unit: str) -> str:
    if metric == "auc":
        return f"{conc_unit}·h" if conc_unit else "h"
    if metric == "tmax":
        return "h"
    return conc_unit


def make_report(
    tables: Mapping[str, pd.DataFrame],
    patients: pd.DataFrame,
    *,
    outdir: str | Path,
    arms: Sequence[str],
    control: str | None,
    units: Mapping[str, str],
    events: Mapping[str, str],
    exposure_unit: str,
    confidence: float = 0.95,
    targets: Mapping[str, tuple[float, float]] | None = None,
) -> list[Path]:
    """Write every figure that applies to a study into `outdir`.

    In this order (file names in parentheses):

    1. VPC bands of every output present in ``tables["bands"]`` with rows
       for the arms (``bands_<output>.png``);
    2. safety bars of every event in `events` present in
       ``tables["safety"]`` (``safety_<event>.png``);
    3. exposure box plots of ``cmax`` and ``auc`` when the patients table
       has them and some arm has non-zero values (``exposure_<metric>.png``);
    4. the forest plot when `control` is given and ``tables["efficacy"]``
       has non-control rows (``forest.png``);
    5. exposure-response of every event against ``auc``, over the patients
       of `arms` (``exposure_response_<event>.png``).

    Figures that do not apply (table or column missing, no data for the
    arms) are skipped and logged at INFO level.  Characters other than
    letters, digits, ``_``, ``.`` and ``-`` in names become ``_``.

    Parameters
    ----------
    tables : mapping of str to pandas.DataFrame
        Summary tables by name: ``"bands"``, ``"safety"``, ``"efficacy"``
        (and ``"exposure"``, not needed by any figure); any may be absent.
    patients : pandas.DataFrame
        Patients table (``arm``, ``solver_status``, exposure metrics, grade
        columns).
    outdir : str or pathlib.Path
        Output folder (created if needed).
    arms : sequence of str
        Arms in display order; an arm keeps its style in every figure.
    control : str or None
        Control arm of the efficacy comparisons, or None.
    units : mapping of str to str
        Output (or endpoint) -> unit, e.g. ``{"CP": "mg/L"}``.
    events : mapping of str to str
        Event name -> grade column of `patients`, e.g.
        ``{"neutropenia": "ae_neutropenia_grade"}``.
    exposure_unit : str
        Concentration unit of the exposure metrics (``cmax`` in it, ``auc``
        in ``<unit>·h``).
    confidence : float, optional
        Confidence level of the intervals, default 0.95.
    targets : mapping of str to (float, float), optional
        Target range of an exposure metric (``cmax``, ``auc``), shaded in its plot.

    Returns
    -------
    list of pathlib.Path
        The files written, in the order above.

    Raises
    ------
    ValueError
        If `arms` has duplicates, or two names map to the same file name.
    """
    arms = stats.unique_names(arms, "arms")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    used_names: set[str] = set()

    def target(stem: str, name: str) -> Path:
        fname = f"{stem}_{_safe_name(name)}.png" if name else f"{stem}.png"
        if fname in used_names:
            raise ValueError(f"make_report: two figures would be written to {fname!r}")
        used_names.add(fname)
        return outdir / fname

    def skip(what: str, why: str) -> None:
        _log.info("report: skipping %s: %s", what, why)

    # 1. bands
    bands = tables.get("bands")
    if bands is not None and {"arm", "output", "time", *_BAND_COLUMNS} <= set(bands.columns):
        out_col = _as_str(bands["output"])
        in_arms = np.isin(_as_str(bands["arm"]), np.array(arms, dtype=object))
        for output in dict.fromkeys(out_col.tolist()):
            sel = (out_col == output) & in_arms
            has = sel & np.isfinite(_as_float(bands["p50"]))
            if not np.any(has):
                skip(f"bands of {output!r}", "no finite values for the arms")
                continue
            written.append(
                plot_bands(
                    bands,
                    output,
                    arms=arms,
                    unit=units.get(output, ""),
                    path=target("bands", output),
                )
            )
    else:
        skip("bands", "no bands table")

    # 2. safety
    safety = tables.get("safety")
    for event in events:
        if safety is None or "event" not in safety.columns:
            skip(f"safety of {event!r}", "no safety table")
            continue
        records, _ = _safety_arms(safety, event, arms, confidence)
        if not records:
            skip(f"safety of {event!r}", "no rows for the event and arms")
            continue
        written.append(
            plot_safety(
                safety, event, arms=arms, path=target("safety", event), confidence=confidence
            )
        )

    # 3. exposure
    for metric in ("cmax", "auc"):
        if metric not in patients.columns:
            skip(f"exposure of {metric!r}", "no such column")
            continue
        if not _exposure_values(patients, metric, arms):
            skip(f"exposure of {metric!r}", "no non-zero values")
            continue
        written.append(
            plot_exposure(
                patients,
                metric,
                arms=arms,
                unit=_exposure_metric_unit(metric, exposure_unit),
                path=target("exposure", metric),
                target=(targets or {}).get(metric),
            )
        )

    # 4. forest
    efficacy = tables.get("efficacy")
    if control is None:
        skip("forest", "no control arm")
    elif efficacy is None or len(efficacy) == 0:
        skip("forest", "no efficacy table")
    elif not _forest_rows(efficacy, control, arms)[0]:
        skip("forest", "no non-control rows")
    else:
        written.append(
            plot_forest(
                efficacy,
                path=target("forest", ""),
                control=control,
                arms=arms,
                units=units,
                confidence=confidence,
            )
        )

    # 5. exposure-response (patients of the requested arms only)
    in_arms = np.isin(_as_str(patients["arm"]), np.array(arms, dtype=object))
    arm_patients = patients.loc[in_arms]
    for event, column in events.items():
        if "auc" not in patients.columns or column not in patients.columns:
            skip(f"exposure-response of {event!r}", "column missing")
            continue
        auc = _as_float(arm_patients["auc"])
        grade = _as_float(arm_patients[column])
        dosed = _ok_rows(arm_patients) & np.isfinite(auc) & (auc > 0) & np.isfinite(grade)
        if not np.any(dosed):
            skip(f"exposure-response of {event!r}", "no dosed patient")
            continue
        written.append(
            plot_exposure_response(
                arm_patients,
                metric="auc",
                event_grade_column=column,
                unit=_exposure_metric_unit("auc", exposure_unit),
                path=target("exposure_response", event),
                event=event,
                confidence=confidence,
            )
        )
    return written
