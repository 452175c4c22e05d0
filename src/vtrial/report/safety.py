"""Adverse-event figures: incidence by CTCAE grade per arm, with confidence intervals."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
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
    GRADE_COLOURS,
    GRADE_HATCH_COLOURS,
    GRADE_HATCHES,
    GRADES,
    FloatArray,
    as_float,
    as_str,
    escape_text,
    fmt_conf,
    fmt_pct,
    new_figure,
    render_png,
    require_columns,
)

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _SafetyArm:
    arm: str
    index: int
    n: int  # pooled over replicates
    incidence: FloatArray  # (5,) proportions of max grade 1..5, pooled
    ge3: float
    ge3_low: float
    ge3_high: float


def safety_arms(
    safety: pd.DataFrame, event: str, arms: list[str], confidence: float
) -> tuple[list[_SafetyArm], str]:
    """Pooled incidence of each exact grade and the grade >= 3 annotation per arm.

    Returns the per-arm records and a note on where the grade >= 3 interval
    comes from.
    """
    require_columns(safety, ["replicate", "arm", "event", "grade", "n", "count"], "safety")
    ev = as_str(safety["event"]) == str(event)
    arm_col = as_str(safety["arm"])[ev]
    grade = as_str(safety["grade"])[ev]
    rep = as_float(safety["replicate"])[ev]
    n_col = as_float(safety["n"])[ev]
    count = as_float(safety["count"])[ev]
    has_ci = all(c in safety.columns for c in ("incidence", "ci_low", "ci_high"))
    if has_ci:
        inc = as_float(safety["incidence"])[ev]
        ci_lo = as_float(safety["ci_low"])[ev]
        ci_hi = as_float(safety["ci_high"])[ev]
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
        incidence = np.full(len(GRADES), np.nan)
        for j, g in enumerate(GRADES):
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
    n_grades: int = 5,
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
        Table from :func:`vtrial.analysis.safety.safety_summary`, columns
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
    n_grades : int, optional
        The grades the event defines (1..``n_grades``, at most 5): only those get a
        bar and a legend entry (CTCAE v5 defines no grade 5 for neutrophil count).

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
    conf = fmt_conf(confidence)
    records, note = safety_arms(safety, event, arms, confidence)
    if not records:
        raise DataError(f"safety: no rows for event {event!r} and arms {arms}")
    n_grades = min(max(int(n_grades), 1), len(GRADES))
    return render_png(lambda: _safety_figure(records, event, conf, note, n_grades), path)


def _safety_figure(
    records: list[_SafetyArm], event: str, conf: str, note: str, n_grades: int
) -> Figure:
    fig = new_figure()
    ax = fig.add_subplot()
    x = np.arange(len(records), dtype=np.float64)
    heights = np.array([np.nan_to_num(r.incidence) * 100.0 for r in records])  # (arms, 5)
    bottom = np.zeros(len(records))
    for j, g in enumerate(GRADES[:n_grades]):
        ax.bar(
            x,
            heights[:, j],
            bottom=bottom,
            width=0.6,
            color=GRADE_COLOURS[j],
            hatch=GRADE_HATCHES[j] or None,
            hatchcolor=GRADE_HATCH_COLOURS[j],
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
        label = f"≥G3 {fmt_pct(r.ge3)} %\n({fmt_pct(r.ge3_low)}–{fmt_pct(r.ge3_high)})"
        ax.text(xi, b + 0.02 * max(top, 10.0), label, ha="center", va="bottom", fontsize=8)
    ymax = max(top, 10.0) * 1.25 + 4.0
    ax.set_ylim(0.0, ymax)
    ax.set_yticks([t for t in ax.get_yticks() if 0 <= t <= min(ymax, 100.0)])
    ax.set_xticks(x, [f"{escape_text(r.arm)}\n(n={r.n})" for r in records])
    ax.set_xlim(-0.6, len(records) - 0.4)
    ax.set_ylabel("Patients (%)")
    ax.set_title(f"{escape_text(event)}: maximum grade by arm")
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
