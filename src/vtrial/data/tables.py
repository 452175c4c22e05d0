"""Cells of an input table (CSV or Parquet): reading, missing values, numbers, problems.

Shared by the readers of real data (:mod:`vtrial.data.dataset`) and of the resampled
covariate tables (:mod:`vtrial.population.resample`). A CSV is read as text, so that
every cell is checked here with one rule and a bad cell is reported with its row, file
line, column and value; the checks are vectorised (pandas), so a dataset of millions of
records is checked in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from vtrial.errors import Problem

__all__ = [
    "MAX_TABLE_PROBLEMS",
    "MISSING",
    "TEXT_SUFFIXES",
    "Found",
    "cell_problems",
    "is_missing",
    "missing_mask",
    "numeric_column",
    "parse_numbers",
    "read_cells",
    "subject_ids",
]

#: Problems listed per column and kind of problem of a table (then a count).
MAX_TABLE_PROBLEMS = 20
#: Values of a CSV cell that count as missing (after stripping blanks); ``.`` is
#: NONMEM's missing value.
MISSING = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", ".")

_NOT_FINITE = "must be a finite number"
#: problems of one column's cells: (0-based row, rule broken, value found)
Found = list[tuple[int, str, Any]]


#: File suffixes read as delimited text (anything else is read as Parquet).
TEXT_SUFFIXES = (".csv", ".txt", ".tsv", ".dat")


def read_cells(path: Path) -> tuple[pd.DataFrame, int]:
    """The table's cells (text files: all text, nothing parsed) and the file line of data
    row 1 (0 for Parquet, whose rows have no line).

    A text file (:data:`TEXT_SUFFIXES`) is split by the delimiter its header line uses
    most: comma, semicolon (Monolix) or tab; blanks when it has none of them (NONMEM's
    space-separated files). A UTF-8 byte-order mark is dropped. Raises ``OSError`` or
    ``ValueError`` (pandas' parser errors, undecodable bytes) when it cannot be read.
    """
    if path.suffix.lower() in TEXT_SUFFIXES:
        with open(path, encoding="utf-8-sig") as fh:
            head = fh.readline()
        sep = max((",", ";", "\t"), key=head.count)
        df = pd.read_csv(
            path,
            sep=sep if sep in head else r"\s+",
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            encoding="utf-8-sig",
        )
        df.columns = [str(c).strip() for c in df.columns]
        return df, 2
    return pd.read_parquet(path), 0


def subject_ids(cells: pd.Series) -> np.ndarray:
    """Subject IDs, read one way by every reader (so that a dataset's subjects and a fit's
    individual estimates match): int64 when every ID is a whole number, float64 when
    every one is a number, else their text (blanks stripped)."""
    text = cells.astype(str).str.strip()
    values = parse_numbers(text)
    if np.isfinite(values).all():
        if (values == np.round(values)).all():
            return values.astype(np.int64)
        return values
    return np.asarray(text.to_numpy(dtype=object))


def is_missing(value: Any) -> bool:
    """Whether one cell is missing: None, NaN or a :data:`MISSING` text."""
    if value is None:
        return True
    if isinstance(value, float) and value != value:
        return True
    return isinstance(value, str) and value.strip() in MISSING


def missing_mask(col: pd.Series) -> np.ndarray:
    """:func:`is_missing` of every cell of a column, vectorised."""
    if pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
        return np.asarray(col.isna().to_numpy(dtype=bool))
    text = _stripped(col)
    return np.asarray(col.isna().to_numpy(dtype=bool) | text.isin(MISSING).to_numpy(dtype=bool))


def _stripped(col: pd.Series) -> pd.Series:
    """Text cells without surrounding blanks (other cells as they are)."""
    if isinstance(col.dtype, pd.StringDtype):
        return col.str.strip()
    return col.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)


def numeric_column(
    col: pd.Series, rule: str, *, missing: str | None = "missing value"
) -> tuple[np.ndarray, Found]:
    """Float values of a column and the problems of its cells.

    Parameters
    ----------
    col : Series
        Cells as read (text from a CSV, numbers or text from Parquet).
    rule : str
        What a cell that is not a number breaks (``must be a number``).
    missing : str or None
        The rule a missing cell breaks; None: missing cells are allowed (NaN).

    Returns
    -------
    values : ndarray of float64, shape (len(col),)
        NaN where a cell is missing or bad.
    found : list of (row, rule, value)
        Bad cells in row order: missing (unless allowed), not a number, not finite.
    """
    gone = missing_mask(col)
    if pd.api.types.is_bool_dtype(col.dtype):
        values = col.to_numpy(dtype=np.float64)
        parsed = np.ones(len(col), dtype=bool)
    elif pd.api.types.is_numeric_dtype(col.dtype):
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
        parsed = ~np.isnan(values)
    else:
        text = _stripped(col)
        values = parse_numbers(text.where(~gone, None))
        parsed = ~np.isnan(values)
        for i in np.flatnonzero(~parsed & ~gone):  # a text that parses as NaN ("+nan")
            parsed[i] = _nan_text(text.iloc[i])
    values = np.where(gone, np.nan, values)
    checks = [(~gone & ~parsed, rule), (~gone & parsed & ~np.isfinite(values), _NOT_FINITE)]
    if missing is not None:
        checks.insert(0, (gone, missing))
    found: Found = []
    if any(mask.any() for mask, _ in checks):
        cells = col.tolist()
        found = [(int(i), why, cells[i]) for mask, why in checks for i in np.flatnonzero(mask)]
        found.sort(key=lambda f: f[0])
    return np.where(np.isfinite(values), values, np.nan), found


def parse_numbers(text: pd.Series) -> np.ndarray:
    """Numbers of text cells (None: missing), NaN where a cell is not a number: Arrow's
    cast when every cell parses (fast), pandas' coercion otherwise."""
    try:
        arr = pc.cast(pa.array(text.astype(object), type=pa.string()), pa.float64())
        return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _nan_text(value: Any) -> bool:
    """A text that parses as NaN ("nan" is :data:`MISSING`, but "+nan" is not)."""
    if not isinstance(value, str):
        return False
    try:
        return float(value) != float(value)
    except ValueError:
        return False


def cell_problems(
    path: Path | str, first_line: int, column: str, found: Sequence[tuple[int, str, Any]]
) -> list[Problem]:
    """Problems of one column's cells: at most :data:`MAX_TABLE_PROBLEMS` per rule, then
    a count. ``where`` is ``row R (line L), column C`` (rows from 1, lines of a CSV)."""
    out: list[Problem] = []
    per_rule: dict[str, list[int]] = {}
    for i, rule, value in found:
        rows = per_rule.setdefault(rule, [])
        rows.append(i)
        if len(rows) <= MAX_TABLE_PROBLEMS:
            line = f" (line {i + first_line})" if first_line else ""
            out.append(
                Problem(str(path), f"row {i + 1}{line}, column {column}", f"{rule}, got {value!r}")
            )
    for rule, rows in per_rule.items():
        if len(rows) > MAX_TABLE_PROBLEMS:
            more = len(rows) - MAX_TABLE_PROBLEMS
            out.append(
                Problem(
                    str(path),
                    f"column {column}",
                    f"{more} more row(s) with: {rule} (not listed; rows "
                    f"{rows[MAX_TABLE_PROBLEMS] + 1} to {rows[-1] + 1})",
                )
            )
    return out
