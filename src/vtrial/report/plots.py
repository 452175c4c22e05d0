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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from vtrial.analysis import stats

if TYPE_CHECKING:
    pass


from vtrial.report.bands import plot_bands
from vtrial.report.exposure import (
    exposure_metric_unit,
    exposure_values,
    plot_exposure,
    plot_exposure_response,
)
from vtrial.report.forest import forest_rows, plot_forest
from vtrial.report.safety import plot_safety, safety_arms
from vtrial.report.style import (
    BAND_COLUMNS,
    as_float,
    as_str,
    ok_rows,
    safe_name,
)

__all__ = ["make_report"]

_log = logging.getLogger(__name__)


def _band_title(output: str, description: str) -> str:
    """A band plot's title: what the output is, then its name.

    Examples
    --------
    >>> _band_title("CP", "central (plasma) concentration")
    'Central (plasma) concentration (CP): median and 5–95 % band'
    >>> _band_title("X", "")
    'X: median and 5–95 % band'
    """
    what = f"{description[:1].upper()}{description[1:]} ({output})" if description else output
    return f"{what}: median and 5–95 % band"


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
    grades: Mapping[str, int] | None = None,
    references: Mapping[str, Sequence[tuple[float, str]]] | None = None,
    descriptions: Mapping[str, str] | None = None,
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
    grades : mapping of str to int, optional
        Event -> the grades it defines (bars and legend of its safety plot; 5 when
        not given).
    references : mapping of str to sequence of (float, str), optional
        Output -> horizontal reference lines of its band plot (value, label).
    descriptions : mapping of str to str, optional
        Output -> what it is (the model's description), for the band plot's title.

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
        fname = f"{stem}_{safe_name(name)}.png" if name else f"{stem}.png"
        if fname in used_names:
            raise ValueError(f"make_report: two figures would be written to {fname!r}")
        used_names.add(fname)
        return outdir / fname

    def skip(what: str, why: str) -> None:
        _log.info("report: skipping %s: %s", what, why)

    # 1. bands
    bands = tables.get("bands")
    if bands is not None and {"arm", "output", "time", *BAND_COLUMNS} <= set(bands.columns):
        out_col = as_str(bands["output"])
        in_arms = np.isin(as_str(bands["arm"]), np.array(arms, dtype=object))
        for output in dict.fromkeys(out_col.tolist()):
            sel = (out_col == output) & in_arms
            has = sel & np.isfinite(as_float(bands["p50"]))
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
                    references=(references or {}).get(output, ()),
                    title=_band_title(output, (descriptions or {}).get(output, "")),
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
        records, _ = safety_arms(safety, event, arms, confidence)
        if not records:
            skip(f"safety of {event!r}", "no rows for the event and arms")
            continue
        written.append(
            plot_safety(
                safety,
                event,
                arms=arms,
                path=target("safety", event),
                confidence=confidence,
                n_grades=(grades or {}).get(event, 5),
            )
        )

    # 3. exposure
    for metric in ("cmax", "auc"):
        if metric not in patients.columns:
            skip(f"exposure of {metric!r}", "no such column")
            continue
        if not exposure_values(patients, metric, arms):
            skip(f"exposure of {metric!r}", "no non-zero values")
            continue
        written.append(
            plot_exposure(
                patients,
                metric,
                arms=arms,
                unit=exposure_metric_unit(metric, exposure_unit),
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
    elif not forest_rows(efficacy, control, arms)[0]:
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
    in_arms = np.isin(as_str(patients["arm"]), np.array(arms, dtype=object))
    arm_patients = patients.loc[in_arms]
    for event, column in events.items():
        if "auc" not in patients.columns or column not in patients.columns:
            skip(f"exposure-response of {event!r}", "column missing")
            continue
        auc = as_float(arm_patients["auc"])
        grade = as_float(arm_patients[column])
        dosed = ok_rows(arm_patients) & np.isfinite(auc) & (auc > 0) & np.isfinite(grade)
        if not np.any(dosed):
            skip(f"exposure-response of {event!r}", "no dosed patient")
            continue
        written.append(
            plot_exposure_response(
                arm_patients,
                metric="auc",
                event_grade_column=column,
                unit=exposure_metric_unit("auc", exposure_unit),
                path=target("exposure_response", event),
                event=event,
                confidence=confidence,
            )
        )
    return written
