"""Figures of the trial layer: Kaplan-Meier curves and probability of success.

Same rules as :mod:`vtrial.report.plots` (helpers and styles from :mod:`vtrial.report.style`):
matplotlib object API with the Agg canvas, atomic PNG writes, one style per arm
(colour, line style, marker) readable in black and white, units on every axis.

* :func:`plot_km`: the Kaplan-Meier estimate of a ``time_to_event`` endpoint per arm
  (``statsmodels`` ``SurvfuncRight``), all replicates pooled (each replicate is an
  independent trial of the same population, so the pooled curve estimates the
  population's event-free probability), with the median per arm in the legend.
* :func:`plot_success`: the probability of success of each criterion and arm with its
  confidence interval (``summary/success.parquet``).
* :func:`plot_individual_effects`: for a twin crossover study, the distribution of the
  individual effects ``y(arm) - y(control)`` of an endpoint (every patient is its own
  control) and the share of patients who benefit, do not change or are harmed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from statsmodels.duration.survfunc import SurvfuncRight

from vtrial.analysis import stats
from vtrial.analysis.effects import effect_shares, paired_arms
from vtrial.errors import DataError
from vtrial.report.style import (
    DAYS_THRESHOLD_H,
    FIGSIZE,
    HOURS_PER_DAY,
    arm_style,
    as_float,
    as_str,
    escape_text,
    new_figure,
    ok_rows,
    render_png,
    require_columns,
    safe_name,
)
from vtrial.trial.spec import EffectOptions

__all__ = ["km_curve", "plot_individual_effects", "plot_km", "plot_success", "trial_plots"]

#: benefit / no change / harm: grey levels and hatches (readable in black and white)
_ITE_SHADES = (("harm", "0.25", "xxxx"), ("no change", "0.85", ""), ("benefit", "0.55", "////"))
#: most histogram bins of an individual-effects plot
_ITE_MAX_BINS = 40


def km_curve(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier step function: times (h) from 0 and the estimate after each.

    Parameters
    ----------
    time, event : ndarray, shape (n,)
        Finite times (h, >= 0) and 0/1 event indicators.

    Returns
    -------
    t, s : ndarray
        ``t[0] = 0``, ``s[0] = 1``, then the event times and
        ``SurvfuncRight(time, event).surv_prob``, and the last time of follow-up
        (censored) with the last estimate; draw with ``where="post"``.
    """
    t0 = np.zeros(1)
    s0 = np.ones(1)
    if time.size == 0:
        return t0, s0
    last = float(np.max(time))
    if not np.any(event > 0):
        return np.array([0.0, last]), np.array([1.0, 1.0])
    sf = SurvfuncRight(time, event)
    t = np.concatenate([t0, np.asarray(sf.surv_times, dtype=np.float64)])
    s = np.concatenate([s0, np.asarray(sf.surv_prob, dtype=np.float64)])
    if last > t[-1]:
        t = np.append(t, last)
        s = np.append(s, s[-1])
    return t, s


def plot_km(
    patients: pd.DataFrame,
    endpoint: str,
    *,
    arms: Sequence[str],
    path: str | Path,
) -> Path:
    """Kaplan-Meier curves of a time-to-event endpoint per arm, replicates pooled.

    Parameters
    ----------
    patients : pandas.DataFrame
        Patients table with ``arm``, ``solver_status``, ``<endpoint>`` (time, h)
        and ``<endpoint>_event`` (1/0). Patients whose solve failed or with a
        missing time are left out.
    endpoint : str
        The endpoint.
    arms : sequence of str
        Arms, in legend order (arms without patients are skipped).
    path : str or pathlib.Path
        PNG to write.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    DataError
        If a column is missing or no arm has a patient.
    """
    arms = stats.unique_names(arms, "arms")
    ecol = f"{endpoint}_event"
    require_columns(patients, ["arm", "solver_status", endpoint, ecol], "patients")
    time = as_float(patients[endpoint])
    event = as_float(patients[ecol])
    arm = as_str(patients["arm"])
    keep = ok_rows(patients) & np.isfinite(time) & np.isfinite(event)
    curves = []
    for i, a in enumerate(arms):
        sel = keep & (arm == a)
        if not np.any(sel):
            continue
        t, e = time[sel], event[sel]
        median = stats._km_median(t, e)
        curves.append((i, a, int(sel.sum()), int(e.sum()), median, *km_curve(t, e)))
    if not curves:
        raise DataError(f"patients: no patient with a time for {endpoint!r} in arms {arms}")

    def build() -> Figure:
        horizon = max(float(c[5][-1]) for c in curves)
        in_days = horizon > DAYS_THRESHOLD_H
        scale = 1.0 / HOURS_PER_DAY if in_days else 1.0
        unit = "days" if in_days else "h"
        fig = new_figure()
        ax = fig.add_subplot()
        for i, a, n, k, median, t, s in curves:
            st = arm_style(i)
            med = f"{median * scale:.3g} {unit}" if math.isfinite(median) else "not reached"
            ax.step(
                t * scale,
                100.0 * s,
                where="post",
                color=st.colour,
                linestyle=st.linestyle,
                linewidth=1.8,
                label=f"{escape_text(a)} (n = {n}, {k} events, median {med})",
            )
            step = max(1, t.size // 6)
            ax.plot(
                t[::step] * scale,
                100.0 * s[::step],
                linestyle="none",
                marker=st.marker,
                markersize=5,
                markerfacecolor="white",
                markeredgecolor=st.colour,
                markeredgewidth=1.2,
            )
        ax.axhline(50.0, color="0.5", linewidth=0.8, linestyle=(0, (4, 2)), zorder=0)
        ax.set_xlim(left=0.0)
        ax.set_ylim(0.0, 102.0)
        ax.set_xlabel(f"Time ({unit})")
        ax.set_ylabel("Event-free (%)")
        ax.set_title(f"{escape_text(endpoint)}: Kaplan–Meier estimate (replicates pooled)")
        ax.grid(True, color="0.9", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.legend(loc="lower left", frameon=False)
        return fig

    return render_png(build, path)


def plot_success(success: pd.DataFrame, *, arms: Sequence[str], path: str | Path) -> Path:
    """Probability of success per criterion and arm with its confidence interval.

    Parameters
    ----------
    success : pandas.DataFrame
        :func:`vtrial.analysis.success.success_table` (``criterion``, ``arm``,
        ``reference``, ``n_replicates``, ``probability``, ``ci_low``, ``ci_high``).
    arms : sequence of str
        Arm order and styles.
    path : str or pathlib.Path
        PNG to write.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    DataError
        If a column is missing or the table is empty.
    """
    arms = stats.unique_names(arms, "arms")
    cols = ["criterion", "arm", "reference", "n_replicates", "probability", "ci_low", "ci_high"]
    require_columns(success, cols, "success")
    if len(success) == 0:
        raise DataError("success: table is empty")
    crit = as_str(success["criterion"])
    arm = as_str(success["arm"])
    ref = as_str(success["reference"])
    n_rep = as_float(success["n_replicates"])
    p = 100.0 * as_float(success["probability"])
    lo = 100.0 * as_float(success["ci_low"])
    hi = 100.0 * as_float(success["ci_high"])

    def build() -> Figure:
        rows = len(success)
        fig = new_figure((FIGSIZE[0], max(FIGSIZE[1], 1.2 + 0.45 * rows)))
        ax = fig.add_subplot()
        y = np.arange(rows, dtype=np.float64)
        labels = []
        for r in range(rows):
            idx = arms.index(arm[r]) if arm[r] in arms else r
            st = arm_style(idx)
            ax.plot([lo[r], hi[r]], [y[r], y[r]], color=st.colour, linewidth=1.6)
            for end in (lo[r], hi[r]):
                ax.plot([end, end], [y[r] - 0.15, y[r] + 0.15], color=st.colour, linewidth=1.6)
            ax.plot(
                [p[r]],
                [y[r]],
                marker=st.marker,
                markersize=7,
                color=st.colour,
                markeredgecolor="black",
                markeredgewidth=0.8,
                linestyle="none",
            )
            vs = f" vs {escape_text(ref[r])}" if ref[r] else " (every criterion)"
            labels.append(f"{escape_text(crit[r])}: {escape_text(arm[r])}{vs}")
            ax.annotate(
                f"{p[r]:.0f} % [{lo[r]:.0f}, {hi[r]:.0f}]",
                (100.0, y[r]),
                xytext=(6, 0),
                textcoords="offset points",
                va="center",
                fontsize=8.5,
                annotation_clip=False,
            )
        ax.set_yticks(y, labels)
        ax.set_ylim(rows - 0.4, -0.6)
        ax.set_xlim(-2.0, 102.0)
        ax.set_xlabel("Probability of success (% of replicate trials, 95 % CI)")
        reps = int(np.nanmax(n_rep)) if rows else 0
        ax.set_title(f"Probability of success ({reps} replicate trials)")
        ax.xaxis.grid(True, color="0.9", linewidth=0.6)
        ax.set_axisbelow(True)
        return fig

    return render_png(build, path)


def plot_individual_effects(
    patients: pd.DataFrame,
    endpoint: str,
    *,
    arms: Sequence[str],
    control: str,
    unit: str = "",
    options: EffectOptions | None = None,
    path: str | Path,
) -> Path:
    """Individual treatment effects of a twin crossover study for one endpoint.

    Left: the distribution of ``d = y(arm) - y(control)`` over the patients (replicates
    pooled) of every arm but `control`, as outlined histograms in percent of patients
    (a responder endpoint has ``d`` in -1, 0, 1), with ``d = 0`` and the no-change zone
    ``|d| <= margin`` marked; the legend gives n, median and 5-95 % range. Right (when
    the endpoint says which direction is ``better``): the percentage of patients who
    benefit, do not change and are harmed (see :mod:`vtrial.analysis.effects`).

    Parameters
    ----------
    patients : pandas.DataFrame
        Twin crossover patients table (a row per patient and arm, ``solver_status``,
        the endpoint column). Pairs with a failed solve or a missing value are left out.
    endpoint : str
        A continuous or responder endpoint.
    arms, control : sequence of str, str
        Arms in study order and the control arm.
    unit : str
        Unit of the endpoint (axis label); ignored for a responder endpoint.
    options : EffectOptions, optional
        The endpoint's ``better`` and ``margin`` (:func:`vtrial.trial.spec.effect_options`;
        default: no direction, margin 0).
    path : str or pathlib.Path
        PNG to write.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    DataError
        If the table is not a twin crossover table or no pair is valid.
    """
    arms = stats.unique_names(arms, "arms")
    require_columns(
        patients, ["replicate", "patient_id", "arm", "solver_status", endpoint], "patients"
    )
    options = options or EffectOptions()
    pairs = paired_arms(patients, arms=arms, control=control)
    effects = []
    for arm in pairs.arms:
        d, valid = pairs.differences(arm, endpoint)
        if np.any(valid):
            effects.append((arms.index(arm), arm, d[valid]))
    if not effects:
        raise DataError(f"patients: no valid pair for {endpoint!r} against {control!r}")
    values = np.concatenate([e[2] for e in effects])
    binary = bool(np.all(np.isin(values, (-1.0, 0.0, 1.0))))
    if binary:
        edges = np.array([-1.5, -0.5, 0.5, 1.5])
    else:
        edges = np.histogram_bin_edges(values, bins="fd")
        if edges.size - 1 > _ITE_MAX_BINS or edges.size < 3:
            edges = np.histogram_bin_edges(values, bins=_ITE_MAX_BINS if np.ptp(values) else 3)
    better = options.better or ""
    margin = float(options.margin)
    unit_text = "" if binary or not unit else f" ({escape_text(unit)})"

    def build() -> Figure:
        wide = better in ("higher", "lower")
        fig = new_figure((FIGSIZE[0] * (1.6 if wide else 1.0), FIGSIZE[1]))
        axes = fig.subplots(1, 2, width_ratios=(3, 2)) if wide else [fig.add_subplot()]
        ax = axes[0]
        if margin > 0:
            ax.axvspan(-margin, margin, color="0.92", zorder=0, label=f"|d| <= {margin:g}")
        ax.axvline(0.0, color="0.4", linewidth=0.9, linestyle=(0, (4, 2)), zorder=1)
        top = 0.0
        for i, arm, d in effects:
            st = arm_style(i)
            pct = 100.0 * np.histogram(d, bins=edges)[0] / d.size
            top = max(top, float(pct.max()))
            p5, p50, p95 = np.percentile(d, (5, 50, 95))
            ax.stairs(
                pct,
                edges,
                color=st.colour,
                linestyle=st.linestyle,
                linewidth=1.8,
                hatch=st.hatch,
                fill=False,
                label=f"{escape_text(arm)} (n = {d.size}, median {p50:.3g}, "
                f"5-95 % {p5:.3g} to {p95:.3g})",
            )
        if binary:
            ax.set_xticks([-1, 0, 1], ["lost response", "same", "gained response"])
        ax.set_xlabel(
            f"Individual effect on {escape_text(endpoint)}: arm - {escape_text(control)}{unit_text}"
        )
        ax.set_ylabel("Patients (%)")
        ax.set_ylim(0.0, 1.1 * top + 5.0 * (len(effects) + (margin > 0)))  # legend room
        ax.set_title(f"{escape_text(endpoint)}: individual effects (each patient its own control)")
        ax.grid(True, axis="y", color="0.9", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.legend(loc="upper left", frameon=False, fontsize=8)
        if wide:
            bx = axes[1]
            y = np.arange(len(effects), dtype=np.float64)
            # harm, no change, benefit (left to right), as in summary/individual_effects
            shares = np.array([effect_shares(d, better, margin)[::-1] for _, _, d in effects])
            shares *= 100.0
            left = np.zeros(len(effects))
            for k, (label, shade, hatch) in enumerate(_ITE_SHADES):
                bx.barh(
                    y,
                    shares[:, k],
                    left=left,
                    color=shade,
                    hatch=hatch,
                    edgecolor="black",
                    linewidth=0.6,
                    label=label,
                )
                for r in range(len(effects)):
                    if shares[r, k] >= 8.0:
                        bx.text(
                            left[r] + shares[r, k] / 2,
                            y[r],
                            f"{shares[r, k]:.0f} %",
                            ha="center",
                            va="center",
                            fontsize=8,
                            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0}
                            if k != 1
                            else None,
                        )
                left += shares[:, k]
            bx.set_yticks(y, [escape_text(a) for _, a, _ in effects])
            bx.set_ylim(len(effects) - 0.5, -0.5)
            bx.set_xlim(0.0, 100.0)
            bx.set_xlabel("Patients (%)")
            bx.set_title(f"better: {better}, margin {margin:g}")
            bx.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, frameon=False)
        return fig

    return render_png(build, path)


def trial_plots(
    patients: pd.DataFrame,
    success: pd.DataFrame | None,
    *,
    time_to_event: Sequence[str],
    arms: Sequence[str],
    outdir: str | Path,
    control: str | None = None,
    effects: Mapping[str, EffectOptions] | None = None,
    units: Mapping[str, str] | None = None,
) -> list[Path]:
    """Every trial-layer plot that applies: ``km_<endpoint>.png`` per time-to-event
    endpoint, ``success.png`` with a success table, and for a twin crossover study
    ``individual_effects_<endpoint>.png`` per endpoint of `effects` (endpoint -> its
    :class:`~vtrial.trial.spec.EffectOptions`) against `control`, with the endpoint's
    unit from `units` (see :func:`vtrial.run.stages.report_files`)."""
    outdir = Path(outdir)
    paths = [
        plot_km(patients, e, arms=arms, path=outdir / f"km_{safe_name(e)}.png")
        for e in time_to_event
    ]
    if success is not None and len(success):
        paths.append(plot_success(success, arms=arms, path=outdir / "success.png"))
    if effects and control is None:
        raise ValueError("trial_plots: individual effects need the control arm")
    for e, options in (effects or {}).items():
        paths.append(
            plot_individual_effects(
                patients,
                e,
                arms=arms,
                control=str(control),
                unit=(units or {}).get(e, ""),
                options=options,
                path=outdir / f"individual_effects_{safe_name(e)}.png",
            )
        )
    return paths
