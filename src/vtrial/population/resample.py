"""Covariate tables of ``population.resample``: reading, checking and keyed resampling.

A study may draw its patients' covariates as rows of a real table (CSV or Parquet):
:func:`read_covariate_table` reads it and checks it cell by cell (every problem at
once), :class:`CovariateTable` draws rows for candidates with keyed uniforms
(stratified by a low-discrepancy sequence, optionally weighted, with a multiplicative
jitter of numeric columns), and :func:`resampled_columns` tells study validation which
covariates the table provides.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from vtrial.data.tables import cell_problems, is_missing, numeric_column, read_cells
from vtrial.errors import Problem
from vtrial.infra.rng import keyed_uniform_rows, stream
from vtrial.population.spec import Resample

__all__ = [
    "RESERVED_COLUMNS",
    "CovariateTable",
    "Resampled",
    "input_files",
    "read_covariate_table",
    "resampled_columns",
]


#: Column names of the population table that a table column must not take.
RESERVED_COLUMNS = ("replicate", "patient_id", "arm", "arm_index", "resample_row")
_NOT_A_NUMBER = "must be a number (declare text columns in population.resample.categorical)"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
#: 2**64 / golden ratio: the Kronecker (golden-ratio) sequence of the strata
_PHI64 = 0x9E3779B97F4A7C15


@dataclass(frozen=True)
class CovariateTable:
    """A validated covariate table of ``population.resample``.

    Rows are resampled with replacement, with probability proportional to their weight
    (1 without a ``weights`` column). With ``strata``, the candidates' strata follow the
    table's (weighted) stratum shares by a low-discrepancy sequence: the golden-ratio
    sequence ``frac(k/φ + c)`` (``c`` keyed per replicate) mapped onto the cumulative
    shares, so every run of consecutive candidates holds each stratum in very nearly
    its share; the row within the stratum is drawn with the keyed uniform
    ``resample:row``. Numeric columns with a jitter ``s > 0`` are multiplied by
    ``exp(s·z)``, ``z`` a keyed normal (``resample:jitter:<column>``).

    Attributes
    ----------
    path : Path
        The table file.
    columns : tuple of str
        The resampled columns, in table order.
    numeric : dict of str to ndarray
        Float64 values of the numeric columns.
    categorical : dict of str to ndarray
        Labels (object arrays of str) of the categorical columns.
    weights : ndarray
        Row weights (> 0).
    strata : tuple of str
        Stratum columns (categorical).
    jitter : dict of str to float
        Log-scale SD of the multiplicative jitter per numeric column (0: none).
    """

    path: Path
    columns: tuple[str, ...]
    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]
    weights: np.ndarray
    strata: tuple[str, ...]
    jitter: dict[str, float]
    _stratum_cum: np.ndarray = field(repr=False, compare=False)
    _stratum_rows: tuple[np.ndarray, ...] = field(repr=False, compare=False)
    _row_cum: tuple[np.ndarray, ...] = field(repr=False, compare=False)

    @property
    def n_rows(self) -> int:
        """Rows of the table."""
        return int(self.weights.size)

    def draw_rows(self, seed: int, replicate: int, start: int, stop: int) -> np.ndarray:
        """Table rows (0-based) of candidates ``start..stop-1`` of a replicate."""
        u = keyed_uniform_rows(seed, "resample:row", replicate, start, stop)[:, 0]
        if len(self._stratum_rows) == 1:
            return self._pick(0, u)
        x = _golden_sequence(seed, replicate, start, stop)
        last = len(self._stratum_rows) - 1
        s = np.minimum(np.searchsorted(self._stratum_cum, x, side="right"), last)
        rows = np.empty(stop - start, dtype=np.int64)
        for k in range(last + 1):
            m = s == k
            rows[m] = self._pick(k, u[m])
        return rows

    def _pick(self, stratum: int, u: np.ndarray) -> np.ndarray:
        rows = self._stratum_rows[stratum]
        j = np.minimum(np.searchsorted(self._row_cum[stratum], u, side="right"), rows.size - 1)
        return np.asarray(rows[j], dtype=np.int64)

    def draw(self, seed: int, replicate: int, start: int, stop: int) -> dict[str, np.ndarray]:
        """Resampled columns (jittered) and ``resample_row`` (1-based table row)."""
        rows = self.draw_rows(seed, replicate, start, stop)
        out: dict[str, np.ndarray] = {}
        for c in self.columns:
            if c in self.categorical:
                out[c] = self.categorical[c][rows]
                continue
            v = self.numeric[c][rows]
            sd = self.jitter.get(c, 0.0)
            if sd > 0:
                u = keyed_uniform_rows(seed, f"resample:jitter:{c}", replicate, start, stop)
                v = v * np.exp(sd * special.ndtri(u[:, 0]))
            out[c] = v
        out["resample_row"] = rows + 1
        return out


def _golden_sequence(seed: int, replicate: int, start: int, stop: int) -> np.ndarray:
    """``frac(k/φ + c)`` for candidates ``k = start..stop-1`` (exact 64-bit arithmetic)."""
    offset = np.uint64(stream(seed, "resample:strata", replicate).bit_generator.random_raw())
    k = np.arange(start, stop, dtype=np.uint64)
    x = k * np.uint64(_PHI64) + offset  # wraps modulo 2**64 (array arithmetic)
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass(frozen=True)
class Resampled:
    """What validation needs to know of ``population.resample`` (empty without it).

    Attributes
    ----------
    columns : tuple of str
        Resampled columns (covariate names); the listed ones if the table is unusable.
    categories : dict of str to list of str
        Declared categorical columns and their labels.
    table : CovariateTable or None
        The table, if it is valid.
    problems : list of Problem
        Every problem of the resample section and of the table.
    """

    columns: tuple[str, ...] = ()
    categories: dict[str, list[str]] = field(default_factory=dict)
    table: CovariateTable | None = None
    problems: list[Problem] = field(default_factory=list)


def resampled_columns(res: Resample | None, source: str, base_dir: str | Path) -> Resampled:
    """Read and validate the covariate table of ``population.resample`` (if any).

    Parameters
    ----------
    res : Resample or None
        The typed ``population.resample`` (None without one).
    source : str
        The study file (for messages about its keys).
    base_dir : str or Path
        Folder the table path is relative to (the study file's folder).

    Returns
    -------
    Resampled
    """
    if res is None:
        return Resampled()
    cats = {k: list(v) for k, v in res.categorical.items()}
    table, problems, columns = _read(res, base_dir, source)
    return Resampled(columns=columns, categories=cats, table=table, problems=problems)


def read_covariate_table(
    spec: Resample, base_dir: str | Path, source: str
) -> tuple[CovariateTable | None, list[Problem]]:
    """Read a covariate table (CSV or Parquet) and check it column by column.

    Parameters
    ----------
    spec : Resample
        The typed ``population.resample``.
    base_dir : str or Path
        Folder the table path is relative to.
    source : str
        The study file (problems with keys of ``population.resample`` name it).

    Returns
    -------
    table : CovariateTable or None
        None if there is any problem.
    problems : list of Problem
        Problems of the keys (file = the study) and of the cells (file = the table,
        ``where`` = ``row R (line L), column C``; at most
        :data:`vtrial.data.tables.MAX_TABLE_PROBLEMS` per column and kind, then a count).
    """
    table, problems, _ = _read(spec, base_dir, source)
    return table, problems


def _read(
    spec: Resample, base_dir: str | Path, source: str
) -> tuple[CovariateTable | None, list[Problem], tuple[str, ...]]:
    """:func:`read_covariate_table` and the selected columns (also when not valid)."""
    path = Path(base_dir) / spec.table
    try:
        st = path.stat()
    except OSError as exc:
        msg = f"cannot read the covariate table {path} ({exc.strerror}), got {spec.table!r}"
        listed = spec.columns or ()
        return None, [Problem(source, "population.resample.table", msg)], listed
    table, problems, columns = _read_cached(str(path), st.st_mtime_ns, st.st_size, spec, source)
    return table, list(problems), columns


@functools.lru_cache(maxsize=8)
def _read_cached(
    path: str, mtime_ns: int, size: int, spec: Resample, source: str
) -> tuple[CovariateTable | None, tuple[Problem, ...], tuple[str, ...]]:
    """Cached :func:`_read_table` (every stage loads the study, hence the table)."""
    table, problems, columns = _read_table(Path(path), spec, source)
    return table, tuple(problems), columns


def _read_table(
    path: Path, spec: Resample, source: str
) -> tuple[CovariateTable | None, list[Problem], tuple[str, ...]]:
    problems: list[Problem] = []
    here = "population.resample"

    def bad(where: str, msg: str) -> None:
        problems.append(Problem(source, where, msg))

    try:
        raw, first_line = read_cells(path)
    except (OSError, ValueError, ImportError) as exc:  # parser errors are ValueErrors
        bad(f"{here}.table", f"cannot read the covariate table {path}: {exc}")
        return None, problems, spec.columns or ()
    raw.columns = [str(c) for c in raw.columns]
    header = list(raw.columns)
    weights_col = spec.weights
    if weights_col is not None and weights_col not in header:
        bad(f"{here}.weights", f"not a column of {path.name} {header}, got {weights_col!r}")
        weights_col = None
    listed = spec.columns
    if listed is None:
        columns = [c for c in header if c != weights_col]
        key_of = dict.fromkeys(columns, f"{here}.table")
    else:
        columns = []
        key_of = {}
        for i, c in enumerate(listed):
            if c not in header:
                bad(f"{here}.columns[{i}]", f"not a column of {path.name} {header}, got {c!r}")
            elif c == weights_col:
                bad(f"{here}.columns[{i}]", f"{c!r} is the weights column, not a covariate")
            else:
                columns.append(c)
                key_of[c] = f"{here}.columns[{i}]"
    for c in columns:
        if not _NAME.match(c):
            bad(
                key_of[c],
                f"column {c!r} of {path.name} is not a covariate name (^[A-Za-z][A-Za-z0-9_]*$): "
                f"rename it or leave it out of {here}.columns",
            )
        elif c in RESERVED_COLUMNS:
            bad(key_of[c], f"column {c!r} of {path.name} is reserved for the population table")
    cats = {k: list(v) for k, v in spec.categorical.items()}
    for k in cats:
        if k not in columns:
            bad(f"{here}.categorical.{k}", f"not a resampled column {columns}, got {k!r}")
    strata = list(spec.strata)
    for i, s in enumerate(strata):
        if s not in cats or s not in columns:
            bad(
                f"{here}.strata[{i}]",
                f"must be a resampled categorical column (declared in {here}.categorical "
                f"{sorted(cats)}), got {s!r}",
            )
    jitter_spec = spec.jitter
    numeric_cols = [c for c in columns if c not in cats]
    if isinstance(jitter_spec, Mapping):
        for k in jitter_spec:
            if k not in numeric_cols:
                bad(
                    f"{here}.jitter.{k}",
                    f"not a resampled numeric column {numeric_cols}, got {k!r}",
                )
        jitter = {c: float(jitter_spec.get(c, 0.0)) for c in numeric_cols}
    else:
        jitter = dict.fromkeys(numeric_cols, float(jitter_spec))
    if len(raw) == 0:
        problems.append(Problem(str(path), "", "the covariate table has no rows"))
    # ---- cells, column by column
    numeric: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    checked = [c for c in columns if _NAME.match(c)]
    for c in checked:
        col = raw[c]
        if c in cats:
            labels[c], found = _categorical_column(col, cats[c], f"{here}.categorical.{c}")
        else:
            numeric[c], found = numeric_column(col, _NOT_A_NUMBER)
            texts = [v for i, _, v in found if not is_missing(v)]
            if len(found) == len(raw) and texts:  # a text column: one problem, not one a row
                shown = list(dict.fromkeys(str(v) for v in texts))[:5]
                msg = (
                    f"no value is a number (e.g. {shown}): declare a text column with its "
                    f"categories in {here}.categorical, got column {c!r}"
                )
                problems.append(Problem(str(path), f"column {c}", msg))
                continue
        problems += cell_problems(path, first_line, c, found)
    if weights_col is not None:
        w, found = numeric_column(
            raw[weights_col],
            "a weight must be a number (declare text columns in population.resample.categorical)",
        )
        bad_w = np.flatnonzero(np.isfinite(w) & (w <= 0))
        found += [
            (int(i), f"a weight must be > 0 ({here}.weights)", raw[weights_col].iloc[i])
            for i in bad_w
        ]
        found.sort(key=lambda t: t[0])
        problems += cell_problems(path, first_line, weights_col, found)
        weights = w
    else:
        weights = np.ones(len(raw))
    if problems:
        return None, problems, tuple(columns)
    stratum_cum, stratum_rows, row_cum = _strata(len(raw), weights, [labels[s] for s in strata])
    table = CovariateTable(
        path=path,
        columns=tuple(columns),
        numeric=numeric,
        categorical=labels,
        weights=weights,
        strata=tuple(strata),
        jitter=jitter,
        _stratum_cum=stratum_cum,
        _stratum_rows=stratum_rows,
        _row_cum=row_cum,
    )
    return table, problems, table.columns


def _categorical_column(
    col: pd.Series, allowed: list[str], key: str
) -> tuple[np.ndarray, list[tuple[int, str, Any]]]:
    """Labels of a categorical column and its problems ``(row index, rule, value)``."""
    values = col.tolist()
    out = np.empty(len(values), dtype=object)
    found: list[tuple[int, str, Any]] = []
    ok = set(allowed)
    for i, v in enumerate(values):
        if is_missing(v):
            found.append((i, "missing value", v))
            continue
        text = v.strip() if isinstance(v, str) else str(v)
        if text not in ok:
            found.append((i, f"unknown category (allowed: {allowed}, {key})", v))
            continue
        out[i] = text
    return out, found


def _strata(
    n: int, weights: np.ndarray, labels: list[np.ndarray]
) -> tuple[np.ndarray, tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Cumulative stratum shares, rows of each stratum, cumulative weights within each."""
    if not labels:
        keys = np.zeros(n, dtype=np.int64)
        n_strata = 1
    else:
        tuples = [tuple(str(col[i]) for col in labels) for i in range(n)]
        uniq = sorted(set(tuples))
        index = {t: j for j, t in enumerate(uniq)}
        keys = np.array([index[t] for t in tuples], dtype=np.int64)
        n_strata = len(uniq)
    rows = tuple(np.flatnonzero(keys == k) for k in range(n_strata))
    totals = np.array([weights[r].sum() for r in rows])
    stratum_cum = np.cumsum(totals) / totals.sum()
    row_cum = tuple(np.cumsum(weights[r]) / weights[r].sum() for r in rows)
    return stratum_cum, rows, row_cum


def input_files(res: Resample | None, base_dir: str | Path) -> list[Path]:
    """Data files a study reads besides its model files (the covariate table).

    Parameters
    ----------
    res : Resample or None
        The typed ``population.resample``.
    base_dir : str or Path
        The study file's folder.

    Returns
    -------
    list of Path
    """
    return [Path(base_dir) / res.table] if res is not None else []
