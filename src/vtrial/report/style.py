"""Shared style of vtrial's figures: sizes, arm styles readable in black and white,
CTCAE grade colours, number and unit formatting, and the atomic PNG rendering every
plot module uses (see :mod:`vtrial.report.plots` for the design rules)."""

from __future__ import annotations

import logging
import math
import os
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib as mpl
import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

from vtrial.errors import DataError

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType


_log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]

FIGSIZE: tuple[float, float] = (7.0, 4.5)
DPI = 120
HOURS_PER_DAY = 24.0
DAYS_THRESHOLD_H = 168.0
"""Time axes switch from hours to days when the horizon exceeds this (h): a study of up
to a week reads in hours."""

RC: dict[RcKeyType, Any] = {
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
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#000000")
LINESTYLES: tuple[Any, ...] = (
    "-",
    (0, (6, 2.5)),
    (0, (1.2, 1.8)),
    (0, (6, 2, 1.2, 2)),
    (0, (6, 2, 1.2, 2, 1.2, 2)),
    (0, (12, 3)),
)
MARKERS = ("o", "s", "^", "D", "v", "X")
HATCHES = ("", "////", "\\\\\\\\", "....", "xxxx", "----")

# Safety: exact CTCAE grades 1..5, light -> dark, each with its own hatch.
GRADES = ("1", "2", "3", "4", "5")
GRADE_COLOURS = ("#fee8c8", "#fdbb84", "#ef6548", "#b30000", "#3b0000")
GRADE_HATCHES = ("", "....", "////", "xxxx", "\\\\\\\\")
GRADE_HATCH_COLOURS = ("#000000", "#000000", "#000000", "#ffffff", "#ffffff")

METRIC_LABELS = {"cmax": "Cmax", "auc": "AUC", "ctrough": "Ctrough", "tmax": "Tmax"}
BAND_COLUMNS = ("p5", "p50", "p95")


@dataclass(frozen=True)
class ArmStyle:
    colour: str
    linestyle: Any
    marker: str
    hatch: str


def arm_style(index: int) -> ArmStyle:
    """Style of the arm at position `index` (cycles with offsets after 6 arms)."""
    k = index % 6
    r = index // 6
    return ArmStyle(
        colour=COLOURS[k],
        linestyle=LINESTYLES[(k + r) % 6],
        marker=MARKERS[(k + 2 * r) % 6],
        hatch=HATCHES[(k + 3 * r) % 6],
    )


# --------------------------------------------------------------------------- #
# Small helpers
# --------------------------------------------------------------------------- #


def escape_text(s: object) -> str:
    """Plain text safe from mathtext parsing (``$`` escaped)."""
    return str(s).replace("$", r"\$")


def unit_text(unit: str) -> str:
    """Unit for a label: ``10^9/L`` -> 10 with superscript 9 per L."""
    return re.sub(r"\^(-?\d+)", r"$^{\1}$", escape_text(unit))


def with_unit(name: str, unit: str) -> str:
    return f"{escape_text(name)} ({unit_text(unit)})" if unit else escape_text(name)


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric.lower(), metric)


def fmt_num(value: float) -> str:
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


def fmt_pct(p: float) -> str:
    """Proportion -> percent text (``0.123`` -> ``12``, ``0.05`` -> ``5.0``)."""
    if not math.isfinite(p):
        return "n/a"
    v = 100.0 * p
    return f"{v:.0f}" if v >= 10 or v == 0 else f"{v:.1f}"


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "p = n/a"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}"


def fmt_conf(confidence: float) -> str:
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence: must be in (0, 1), got {confidence!r}")
    return f"{100 * confidence:g} %"


def require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{what}: missing column(s) {missing}; have {[str(c) for c in df.columns]}")


def as_float(series: pd.Series) -> FloatArray:
    if not (
        pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype)
    ):
        raise DataError(f"column {series.name!r}: must be numeric, got dtype {series.dtype}")
    return np.asarray(series.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


def as_str(series: pd.Series) -> npt.NDArray[np.object_]:
    return np.array([str(v) for v in series.to_numpy(dtype=object)], dtype=object)


def ok_rows(patients: pd.DataFrame) -> npt.NDArray[np.bool_]:
    status = patients["solver_status"].to_numpy(dtype=object)
    return np.asarray(status == "ok", dtype=bool)


class PlainLogFormatter(LogFormatter):
    """Log-axis labels as plain numbers (``0.01``, ``60``), not powers of ten.

    Which ticks get a label is left to :class:`~matplotlib.ticker.LogFormatter`.
    """

    def __call__(self, x: float, pos: int | None = None) -> str:
        if not super().__call__(x, pos):
            return ""
        return f"{x:g}".replace("-", "\u2212")


def plain_log_ticks(axis: Any) -> None:
    """Label a log axis with plain numbers."""
    axis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def new_figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    fig = Figure(figsize=figsize, dpi=DPI, layout="tight")
    FigureCanvasAgg(fig)
    return fig


def render_png(build: Callable[[], Figure], path: str | Path) -> Path:
    """Build a figure under the report style and write it atomically as PNG."""
    path = Path(path)
    with mpl.rc_context(RC):
        fig = build()
        try:
            write_png(fig, path)
        finally:
            fig.clear()
    return path


def write_png(fig: Figure, path: Path) -> None:
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


def safe_name(name: str) -> str:
    """File-name-safe version of an output / event name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip(".") or "_"


# --------------------------------------------------------------------------- #
# Percentile bands (VPC)
# --------------------------------------------------------------------------- #
