"""Percentile-band (VPC-style) figures of simulated time courses, per output and arm."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MultipleLocator

from vtrial.analysis import stats
from vtrial.errors import DataError

if TYPE_CHECKING:
    pass


from vtrial.report.style import (
    BAND_COLUMNS,
    DAYS_THRESHOLD_H,
    HOURS_PER_DAY,
    FloatArray,
    arm_style,
    as_float,
    as_str,
    escape_text,
    new_figure,
    plain_log_ticks,
    render_png,
    require_columns,
    with_unit,
)

_log = logging.getLogger(__name__)


def plot_bands(
    bands: pd.DataFrame,
    output: str,
    *,
    arms: Sequence[str],
    unit: str,
    path: str | Path,
    title: str | None = None,
    log: bool = False,
    references: Sequence[tuple[float, str]] = (),
) -> Path:
    """Plot the 5-95 % band and median time course of one output by arm.

    Visual-predictive-check style: per arm a shaded, hatched 5-95 % band
    bounded by thin lines, and the median as a thick line with markers, each
    arm with its own colour, line style, marker and hatch.

    Parameters
    ----------
    bands : pandas.DataFrame
        Table from :func:`vtrial.analysis.bands.percentile_bands`, shape
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
    references : sequence of (float, str), optional
        Horizontal reference lines (value in the output's unit, label), e.g. the
        grade 3 and 4 thresholds of an adverse event graded on the output.

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
    require_columns(bands, ["arm", "output", "time", *BAND_COLUMNS], "bands")
    refs = list(references)
    return render_png(lambda: _bands_figure(bands, output, arms, unit, title, log, refs), path)


def _bands_figure(
    bands: pd.DataFrame,
    output: str,
    arms: list[str],
    unit: str,
    title: str | None,
    log: bool,
    references: Sequence[tuple[float, str]] = (),
) -> Figure:
    out_col = as_str(bands["output"])
    arm_col = as_str(bands["arm"])
    time = as_float(bands["time"])
    values = {c: as_float(bands[c]) for c in BAND_COLUMNS}

    series: list[tuple[int, str, FloatArray, dict[str, FloatArray]]] = []
    flat: list[tuple[int, str, FloatArray, dict[str, FloatArray]]] = []
    for i, arm in enumerate(arms):
        sel = (out_col == output) & (arm_col == arm)
        if not np.any(sel):
            continue
        order = np.argsort(time[sel], kind="stable")
        t = time[sel][order]
        v = {c: values[c][sel][order].copy() for c in BAND_COLUMNS}
        if log:
            for arr in v.values():
                arr[~(arr > 0)] = np.nan
        if not any(np.any(np.isfinite(arr)) for arr in v.values()):
            continue
        if all(np.all(arr[np.isfinite(arr)] == 0.0) for arr in v.values()):
            flat.append((i, arm, t, v))  # e.g. placebo's CP: a line at 0 says nothing
            continue
        series.append((i, arm, t, v))
    if not series:  # every arm at 0: draw them after all
        series, flat = flat, []
    if not series:
        extra = " positive" if log else ""
        raise DataError(f"bands: no finite{extra} values of output {output!r} for arms {arms}")

    horizon = max(float(np.max(t)) for _, _, t, _ in series)
    in_days = horizon > DAYS_THRESHOLD_H
    scale = 1.0 / HOURS_PER_DAY if in_days else 1.0

    fig = new_figure()
    ax = fig.add_subplot()
    handles: list[Any] = []
    labels: list[str] = []
    n_arms = len(series)
    for k, (i, arm, t, v) in enumerate(series):
        st = arm_style(i)
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
        labels.append(escape_text(arm))

    for j, (value, label) in enumerate(references):
        ref = ax.axhline(
            value, color="0.35", linestyle=(0, (4, 2 + 2 * j)), linewidth=1.0, zorder=2
        )
        handles.append(ref)
        labels.append(escape_text(label))
    if log:
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
    if in_days and 14.0 <= horizon / HOURS_PER_DAY <= 70.0:
        ax.xaxis.set_major_locator(MultipleLocator(7.0))  # weeks
    ax.set_xlabel("Time (days)" if in_days else "Time (h)")
    if flat:
        ax.annotate(
            f"not shown, 0 throughout: {', '.join(escape_text(f[1]) for f in flat)}",
            xy=(0.0, 1.0),
            xycoords="axes fraction",
            xytext=(0, 3),
            textcoords="offset points",
            fontsize=8,
            color="0.3",
            va="bottom",
        )
    ax.set_ylabel(with_unit(output, unit))
    ax.set_xlim(left=min(0.0, min(float(np.min(t)) for _, _, t, _ in series) * scale))
    ax.set_title(
        escape_text(title)
        if title is not None
        else f"{escape_text(output)}: median and 5–95 % band"
    )
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
