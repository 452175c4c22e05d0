"""A twin's report for the clinician: one PNG and one self-contained HTML page.

The figure has two panels on one time axis (h, the dataset's time):

- **history**: the measured levels (filled points; BLQ records as open triangles at
  their limit), the individual prediction at the MAP estimate through them, and the
  90 % band of the posterior draws over the recorded span;
- **forecast**: from the first candidate dose on, the median and 90 % band of the
  recommended regimen (or of the first candidate when none is recommended), and the
  medians of the other candidates as thin lines; a target on the plotted output (the
  output's own value at the end, or ``trough`` and ``peak`` for ``CP``) is a shaded range, a guard
  on it (``guards``: metric -> ``("max" | "min", limit)``) a dashed line.

The page states the patient's ID (never the data themselves beyond the levels shown),
the estimate with its standard errors, the recommendation and why, and every
candidate's table. It is deterministic: the same inputs give the same bytes.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from vtrial.report.pages import page, table_html
from vtrial.report.style import COLOURS, new_figure, render_png

__all__ = ["twin_page", "twin_png"]


def _figure(
    observations: pd.DataFrame,
    history_bands: pd.DataFrame,
    forecast_bands: pd.DataFrame,
    candidates: pd.DataFrame,
    output: str,
    unit: str,
    target: Mapping[str, tuple[float, float]],
    title: str,
    guards: Mapping[str, tuple[str, float]],
) -> Figure:
    fig = new_figure((8.0, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    hb = history_bands[history_bands["output"] == output]
    ax.fill_between(
        hb["time"],
        hb["q05"],
        hb["q95"],
        color="#bbbbbb",
        alpha=0.5,
        lw=0,
        label="posterior 90 % band",
    )
    ob = observations[observations["output"] == output].sort_values("TIME")
    ax.plot(
        ob["TIME"],
        ob["IPRED"],
        color="#444444",
        lw=0,
        marker="x",
        ms=5,
        label="individual prediction (MAP)",
    )
    quant = ob[~ob["BLQ"].astype(bool)]
    ax.plot(quant["TIME"], quant["DV"], "o", color="#000000", ms=4, label="measured")
    blq = ob[ob["BLQ"].astype(bool)]
    if len(blq):
        ax.plot(blq["TIME"], blq["DV"], "v", mfc="none", color="#000000", ms=5, label="BLQ")
    rec = candidates[candidates["recommended"]] if "recommended" in candidates else candidates[:0]
    main = int(rec["candidate"].iloc[0]) if len(rec) else int(candidates["candidate"].iloc[0])
    fb = forecast_bands[forecast_bands["output"] == output]
    for c in np.unique(fb["candidate"].to_numpy()):
        if int(c) == main:
            continue
        grp = fb[fb["candidate"] == c]
        ax.plot(grp["time"], grp["q50"], color="#999999", lw=0.6)
    m = fb[fb["candidate"] == main]
    label = candidates.loc[candidates["candidate"] == main, "regimen"].iloc[0]
    what = "recommended" if len(rec) else "first candidate"
    ax.fill_between(m["time"], m["q05"], m["q95"], color=COLOURS[0], alpha=0.25, lw=0)
    ax.plot(m["time"], m["q50"], color=COLOURS[0], lw=1.6, label=f"{what}: {label}")
    # metrics in the plotted output's unit: the output itself (its value at the end), and
    # for CP the trough and the peak
    shown = [output, "trough", "peak"] if output == "CP" else [output]
    for name in (k for k in shown if k in target):
        lo, hi = target[name]
        what = "target" if name == output else f"{name} target"
        ax.axhspan(lo, hi, color=COLOURS[2], alpha=0.12, lw=0, label=what)
    for name, (side, limit) in guards.items():
        if name in shown:
            ax.axhline(limit, color=COLOURS[3], lw=1.0, ls="--", label=f"{name} {side} (guard)")
    ax.set_xlabel("time (h)")
    ax.set_ylabel(f"{output} ({unit})" if unit else output)
    ax.set_title(title)
    ax.legend(loc="upper left", frameon=False)
    return fig


def twin_png(
    path: str | Path,
    *,
    observations: pd.DataFrame,
    history_bands: pd.DataFrame,
    forecast_bands: pd.DataFrame,
    candidates: pd.DataFrame,
    output: str,
    unit: str = "",
    target: Mapping[str, tuple[float, float]] | None = None,
    title: str = "",
    guards: Mapping[str, tuple[str, float]] | None = None,
) -> Path:
    """Write the twin's figure (see the module docstring) to ``path``, atomically."""
    return render_png(
        lambda: _figure(
            observations,
            history_bands,
            forecast_bands,
            candidates,
            output,
            unit,
            dict(target or {}),
            title,
            dict(guards or {}),
        ),
        path,
    )


def twin_page(
    *,
    title: str,
    facts: Sequence[tuple[str, Any]],
    recommendation: str,
    candidates: pd.DataFrame,
    estimate: pd.DataFrame,
    image: str | None = None,
) -> str:
    """The twin's HTML page: ``facts`` (label, value) first, the recommendation in one
    sentence, the figure (``image``, a file name next to the page), the estimate and
    the candidates' table."""
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td class='text'>{html.escape(str(v))}</td></tr>"
        for k, v in facts
    )
    body = f"<table>{rows}</table>\n<h2>Recommendation</h2>\n<p>{html.escape(recommendation)}</p>\n"
    if image:
        body += f"<p><img src='{html.escape(image)}' alt='levels and forecast' width='800'></p>\n"
    body += "<h2>Estimate (MAP, Laplace standard errors)</h2>\n" + table_html(estimate)
    body += "\n<h2>Candidate regimens</h2>\n" + table_html(candidates)
    return page(title, body)
