"""Forest plot of the efficacy differences against the control arm."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from vtrial.analysis import stats
from vtrial.errors import DataError

if TYPE_CHECKING:
    pass


from vtrial.report.style import (
    FIGSIZE,
    arm_style,
    as_float,
    as_str,
    escape_text,
    fmt_conf,
    fmt_num,
    fmt_p,
    new_figure,
    render_png,
    require_columns,
    unit_text,
)

_log = logging.getLogger(__name__)


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


def forest_rows(
    efficacy: pd.DataFrame, control: str, arms: Sequence[str] | None
) -> tuple[list[_ForestRow], int]:
    """Rows (endpoint, non-control arm) of one replicate, binary scaled to points.

    Uses replicate 0, or the smallest replicate if 0 is absent; returns the
    rows and the replicate used.
    """
    cols = ["replicate", "arm", "endpoint", "kind", "diff", "diff_ci_low", "diff_ci_high"]
    require_columns(efficacy, [*cols, "p_value"], "efficacy")
    rep = as_float(efficacy["replicate"])
    if rep.size == 0 or not np.any(np.isfinite(rep)):
        raise DataError("efficacy: table is empty")
    used = 0 if np.any(rep == 0) else int(np.nanmin(rep))
    sel = rep == used
    arm_col = as_str(efficacy["arm"])[sel]
    endpoint = as_str(efficacy["endpoint"])[sel]
    kind = as_str(efficacy["kind"])[sel]
    diff = as_float(efficacy["diff"])[sel]
    low = as_float(efficacy["diff_ci_low"])[sel]
    high = as_float(efficacy["diff_ci_high"])[sel]
    p = as_float(efficacy["p_value"])[sel]
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
        Table from :func:`vtrial.analysis.efficacy.efficacy_summary`, columns
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
    conf = fmt_conf(confidence)
    rows, used = forest_rows(efficacy, control, arms)
    if not rows:
        raise DataError(f"efficacy: no rows other than the control arm {control!r}")
    units = dict(units or {})
    return render_png(lambda: _forest_figure(rows, used, control, units, conf), path)


def _forest_figure(
    rows: list[_ForestRow], used: int, control: str, units: dict[str, str], conf: str
) -> Figure:
    endpoints = list(dict.fromkeys(r.endpoint for r in rows))
    per = [[r for r in rows if r.endpoint == ep] for ep in endpoints]
    n_rows = [len(p) for p in per]
    height = max(FIGSIZE[1], 1.0 + sum(0.42 * n + 1.0 for n in n_rows))
    fig = new_figure((FIGSIZE[0], height))
    gs = fig.add_gridspec(
        len(endpoints), 2, height_ratios=[n + 1.2 for n in n_rows], width_ratios=[3.0, 1.5]
    )
    for k, (ep, panel) in enumerate(zip(endpoints, per, strict=True)):
        ax = fig.add_subplot(gs[k, 0])
        tx = fig.add_subplot(gs[k, 1], sharey=ax)
        y = np.arange(len(panel), dtype=np.float64)
        for yi, r in zip(y, panel, strict=True):
            st = arm_style(r.index)
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
                f"{fmt_num(r.diff)} [{fmt_num(r.low)}, {fmt_num(r.high)}]",
                ha="left",
                va="center",
                fontsize=8.5,
            )
            tx.text(0.68, yi, fmt_p(r.p_value), ha="left", va="center", fontsize=8.5)
        ax.axvline(0.0, color="black", linewidth=0.9, linestyle=(0, (4, 2)), zorder=0)
        finite = [v for r in panel for v in (r.low, r.high, r.diff) if math.isfinite(v)]
        lo_x = min([0.0, *finite])
        hi_x = max([0.0, *finite])
        pad = 0.08 * (hi_x - lo_x) if hi_x > lo_x else 1.0
        ax.set_xlim(lo_x - pad, hi_x + pad)
        ax.set_ylim(len(panel) - 0.4, -0.6)
        ax.set_yticks(y, [escape_text(r.arm) for r in panel])
        binary = panel[0].kind == "binary"
        if binary:
            note = " (percentage points)"
        elif units.get(ep):
            note = f" ({unit_text(units[ep])})"
        else:
            note = ""
        ax.set_xlabel(f"Difference vs {escape_text(control)}{note}")
        ax.set_title(escape_text(ep), loc="left", fontsize=10.5, fontweight="bold")
        ax.xaxis.grid(True, color="0.9", linewidth=0.6)
        ax.set_axisbelow(True)
        tx.set_xlim(0.0, 1.0)
        tx.axis("off")
        if k == 0:
            for xt, head in ((0.0, f"Difference [{conf} CI]"), (0.68, "p-value")):
                tx.text(xt, 1.0, head, transform=tx.transAxes, ha="left", va="bottom", fontsize=8.5)
    fig.suptitle(f"Treatment effect vs {escape_text(control)} (replicate {used})", fontsize=11)
    return fig


# --------------------------------------------------------------------------- #
# Exposure-response
# --------------------------------------------------------------------------- #
