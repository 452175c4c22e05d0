"""NONMEM/Monolix-style datasets: reading and checking dosing, observation and covariate
records.

A dataset has one row per record, in NONMEM's data items: ``ID``, ``TIME``, ``EVID``,
``AMT``, ``CMT``, ``RATE``, ``SS``, ``II``, ``ADDL``, ``MDV``, ``DV``, and optionally
``BLQ``, ``LLOQ``, ``DVID``; every other column is a covariate. :func:`read_dataset`
(a CSV or Parquet file) and :func:`dataset_from_frame` (a pandas DataFrame, for the
Python API) run the same checks and report every problem at once
(:class:`vtrial.errors.DatasetError`), each naming the file, the row (and CSV line), the
column, the rule broken and the value found, before anything is simulated.

Conventions (NONMEM's, unless said otherwise):

- Column names are matched case-insensitively. ``columns`` maps a standard item to the
  file's own spelling (``{"DV": "conc_mg_L", "TIME": "hours"}``).
- A missing cell (:data:`vtrial.data.tables.MISSING`: empty, ``.``, ``NA``...) in
  ``AMT``, ``RATE``, ``SS``, ``II``, ``ADDL``, ``CMT``, ``BLQ`` reads as 0, as ``.``
  does in NONMEM; a missing ``DV`` or ``LLOQ`` is not a value (NaN); ``DVID`` defaults
  to 1. ``ID``, ``TIME`` and, when the columns exist, ``EVID`` and ``MDV`` must be given
  on every record, and so must every covariate.
- Without an ``EVID`` column, a record with ``AMT > 0`` or ``RATE != 0`` is a dose
  (EVID 1), one with an observation (``MDV`` 0, or a ``DV`` when there is no ``MDV``
  column) is an observation (EVID 0), any other is an other-type event (EVID 2).
  Without an ``MDV`` column, ``MDV`` is 0 on observation records (EVID 0 with a DV)
  and 1 elsewhere. An EVID 0 record with ``MDV`` 1 carries no observation (as EVID 2).
- A ``C`` column marks comment records (NONMEM's ``IGNORE=C``): records whose ``C``
  cell is ``C`` are left out (rows keep their numbers in problems).
- ``ID``: numbers or text labels (as in Monolix), read as every reader here reads IDs
  (:func:`vtrial.data.tables.subject_ids`); the records of one ID must be
  contiguous (NONMEM would take a second block as another individual, which is almost
  always a sorting mistake, so it is refused here).
- ``TIME`` never decreases within an ID, except at a reset (EVID 3 or 4), as in NONMEM.
  Records at equal times keep their file order.

The rules of dose records (EVID 1 and 4) follow NONMEM's PREDPP: ``AMT >= 0``; an
``AMT`` of 0 is a dose only as a steady-state constant infusion (``SS=1``, ``II=0``,
``RATE > 0``); ``RATE`` is 0 (bolus), > 0 (infusion of ``AMT`` at that rate), -1 (rate
from the model parameter ``R``) or -2 (duration from the model parameter ``D``);
``SS`` is 0, 1 or 2 and needs ``II > 0`` unless it is a constant infusion; ``ADDL > 0``
needs ``II > 0``; ``CMT`` 0 means the model's default dose compartment. Records that
are not doses carry no ``AMT``, ``RATE``, ``SS``, ``II`` or ``ADDL``. Which of these
features a simulation supports is the simulator's business: this module checks that a
dataset is well formed.

Patient data stays local: a dataset is identified by the SHA-256 of its file (of its
records, for a DataFrame), and nothing here logs or prints more than one offending cell.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vtrial.data.tables import (
    Found,
    cell_problems,
    missing_mask,
    numeric_column,
    read_cells,
    subject_ids,
)
from vtrial.errors import DatasetError, Problem
from vtrial.infra.hashing import file_sha256

__all__ = [
    "DOSE_ITEMS",
    "STANDARD_ITEMS",
    "Dataset",
    "check_dataset",
    "dataset_from_frame",
    "read_dataset",
]

log = logging.getLogger(__name__)

#: NONMEM data items with a meaning here, in the order of :attr:`Dataset.records`.
STANDARD_ITEMS = (
    "ID",
    "TIME",
    "EVID",
    "AMT",
    "CMT",
    "RATE",
    "SS",
    "II",
    "ADDL",
    "MDV",
    "DV",
    "BLQ",
    "LLOQ",
    "DVID",
)
#: Items that only a dose record (EVID 1 or 4) may carry.
DOSE_ITEMS = ("AMT", "RATE", "SS", "II", "ADDL")
#: Items whose missing cells read as 0 (NONMEM's ``.``).
_ZERO_WHEN_MISSING = ("AMT", "CMT", "RATE", "SS", "II", "ADDL", "BLQ")
#: Items that must hold whole numbers.
_INTEGER_ITEMS = ("EVID", "CMT", "SS", "ADDL", "MDV", "BLQ", "DVID")
#: Columns of :attr:`Dataset.records` that are not data items.
RECORD_COLUMNS = ("REC",)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Dataset:
    """A checked dataset.

    Attributes
    ----------
    name : str
        The file it was read from (``<DataFrame>`` for a frame).
    sha256 : str
        SHA-256 of the file's bytes (of the records' CSV text for a frame): how logs and
        manifests name the dataset.
    records : DataFrame
        One row per record in file order (comment records left out): ``REC`` (the
        record's row number in the file, from 1), the :data:`STANDARD_ITEMS` (``EVID``
        and ``MDV`` filled when the file has no such column; ``ID`` as
        :func:`~vtrial.data.tables.subject_ids` reads it; ``EVID``, ``CMT``, ``SS``,
        ``ADDL``, ``MDV``, ``BLQ``, ``DVID`` int64; the others float64), then the
        covariates (float64, or text for a text column).
    covariates : tuple of str
        Covariate columns, as named in the file.
    varying : tuple of str
        The covariates whose value changes within at least one ID.
    columns : mapping of str to str
        Standard item -> the file's column, for the items the file has.
    first_line : int
        Line of the CSV file holding row 1 (0 for Parquet and frames): problems found
        later (:mod:`vtrial.data.records`) name rows as the reader does.
    """

    name: str
    sha256: str
    records: pd.DataFrame = field(repr=False)
    covariates: tuple[str, ...]
    varying: tuple[str, ...]
    columns: Mapping[str, str]
    first_line: int = 0

    @property
    def subjects(self) -> np.ndarray:
        """IDs in file order."""
        return np.asarray(pd.unique(self.records["ID"]))

    def summary(self) -> dict[str, Any]:
        """Counts only (no patient data): subjects, records, doses, observations."""
        r = self.records
        return {
            "dataset": self.name,
            "sha256": self.sha256,
            "subjects": len(self.subjects),
            "records": len(r),
            "doses": int(r["EVID"].isin((1, 4)).sum()),
            "observations": int(((r["EVID"] == 0) & (r["MDV"] == 0)).sum()),
            "covariates": list(self.covariates),
            "time_varying": list(self.varying),
        }


def read_dataset(
    path: str | Path,
    *,
    columns: Mapping[str, str] | None = None,
    covariates: Sequence[str] | None = None,
    dose_compartments: Collection[int] | None = None,
) -> Dataset:
    """Read and check a dataset file (CSV or Parquet).

    Parameters
    ----------
    path : str or Path
        The file. ``.csv`` (or ``.txt``, comma-separated) is read as text and every cell
        checked; anything else is read as Parquet.
    columns : mapping of str to str, optional
        Standard item (``DV``) -> the file's column for it (``conc_mg_L``), for the
        items the file spells otherwise. Matched case-insensitively.
    covariates : sequence of str, optional
        The covariate columns to keep (default: every column that is not an item).
    dose_compartments : collection of int, optional
        The compartment numbers a dose may go into (``CMT``; 0, the default dose
        compartment, is always allowed). Without it, ``CMT`` is not checked against a
        model.

    Raises
    ------
    DatasetError
        Every problem of the file, each with file, row (and line), column, rule, value.
    """
    dataset, problems = check_dataset(
        path, columns=columns, covariates=covariates, dose_compartments=dose_compartments
    )
    if dataset is None:
        raise DatasetError(problems)
    return dataset


def check_dataset(
    path: str | Path,
    *,
    columns: Mapping[str, str] | None = None,
    covariates: Sequence[str] | None = None,
    dose_compartments: Collection[int] | None = None,
    source: str | None = None,
    where: str = "population.dataset",
) -> tuple[Dataset | None, list[Problem]]:
    """:func:`read_dataset` returning its problems instead of raising.

    ``source`` and ``where`` name the study file and key that declared the dataset and
    its column mapping, for problems of the mapping (default: the dataset itself).
    """
    path = Path(path)
    owner = source or str(path)
    try:
        cells, first_line = read_cells(path)
    except (OSError, ValueError, ImportError) as exc:  # parser errors are ValueErrors
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        return None, [Problem(owner, where, f"cannot read the dataset {path}: {reason}")]
    dataset, problems = _check(
        cells, str(path), first_line, columns, covariates, dose_compartments, owner, where
    )
    if dataset is None:
        return None, problems
    dataset = dataclasses.replace(dataset, sha256=file_sha256(path))
    _log(dataset)
    return dataset, []


def dataset_from_frame(
    frame: pd.DataFrame,
    *,
    columns: Mapping[str, str] | None = None,
    covariates: Sequence[str] | None = None,
    dose_compartments: Collection[int] | None = None,
    name: str = "<DataFrame>",
) -> Dataset:
    """Check a dataset given as a DataFrame (one row per record, in record order), with
    exactly the checks of :func:`read_dataset`; rows are numbered from 1 in problems.

    Raises
    ------
    DatasetError
        Every problem, each with row, column, rule and value.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"ID": [1, 1, 1], "TIME": [0, 1, 12], "AMT": [100, 0, 0],
    ...                       "DV": [None, 4.2, 0.7], "WT": [70, 70, 72]})
    >>> ds = dataset_from_frame(frame)
    >>> ds.records["EVID"].tolist(), ds.records["MDV"].tolist(), ds.varying
    ([1, 0, 0], [1, 0, 0], ('WT',))
    >>> try:
    ...     dataset_from_frame(frame.assign(TIME=[0, 12, 1]))
    ... except DatasetError as err:
    ...     print(err.problems[0].where, "|", err.problems[0].message[:32])
    row 3, column TIME | time goes backwards within an ID
    """
    dataset, problems = _check(
        frame.reset_index(drop=True), name, 0, columns, covariates, dose_compartments, name, ""
    )
    if dataset is None:
        raise DatasetError(problems)
    dataset = dataclasses.replace(dataset, sha256=_frame_sha256(dataset.records))
    _log(dataset)
    return dataset


def _varying(
    ids: np.ndarray, values: Mapping[str, np.ndarray], columns: Sequence[str]
) -> tuple[str, ...]:
    """The columns whose value changes within an ID."""
    same_id = ids[1:] == ids[:-1]
    return tuple(c for c in columns if bool((same_id & (values[c][1:] != values[c][:-1])).any()))


def with_records(dataset: Dataset, records: pd.DataFrame) -> Dataset:
    """``dataset`` holding other records of the same columns (a subject's records
    extended by new ones), its time-varying covariates found anew; the caller has
    checked the records."""
    records = records.reset_index(drop=True)
    ids = records["ID"].to_numpy()
    values = {c: records[c].to_numpy() for c in dataset.covariates}
    return dataclasses.replace(
        dataset, records=records, varying=_varying(ids, values, dataset.covariates)
    )


def _log(dataset: Dataset) -> None:
    s = dataset.summary()
    log.info(
        "dataset %s (sha256 %s): %d subjects, %d records, %d doses, %d observations",
        dataset.name,
        dataset.sha256[:16],
        s["subjects"],
        s["records"],
        s["doses"],
        s["observations"],
    )


# ---- checks


def _check(
    cells: pd.DataFrame,
    name: str,
    first_line: int,
    columns: Mapping[str, str] | None,
    covariates: Sequence[str] | None,
    dose_compartments: Collection[int] | None,
    owner: str,
    where: str,
) -> tuple[Dataset | None, list[Problem]]:
    """The checks shared by files and frames; ``first_line``: CSV line of row 1."""
    cells = cells.rename(columns=str)
    header = list(cells.columns)
    item_of, cov_cols, problems = _resolve_columns(header, columns, covariates, owner, where)
    if problems:
        return None, problems
    if len(cells) == 0:
        return None, [Problem(name, "", "the dataset has no records")]
    col_of = {item: c for c, item in item_of.items()}
    # ---- comment records (C column)
    keep = np.ones(len(cells), dtype=bool)
    if "C" in col_of:
        text = cells[col_of["C"]].astype(str).str.strip().str.upper()
        keep = (text != "C").to_numpy()
    rows = np.flatnonzero(keep)
    kept = cells.iloc[rows]
    found: dict[str, Found] = {}
    values: dict[str, np.ndarray] = {}

    bad_cell = np.zeros(len(rows), dtype=bool)  # records with a cell that is not a value

    def add(column: str, index: np.ndarray, rule: str) -> None:
        """Problems at kept-record positions ``index`` of the file column ``column``
        (record rules skip records whose cells are already reported)."""
        index = index[~bad_cell[index]]
        if len(index) == 0:
            return
        cell = kept[column].iloc[index].tolist()
        found.setdefault(column, []).extend(
            (int(rows[i]), rule, v) for i, v in zip(index, cell, strict=True)
        )

    # ---- ID: integers or text labels, never missing
    id_col = col_of["ID"]
    id_cells = kept[id_col]
    gone = missing_mask(id_cells)
    add(id_col, np.flatnonzero(gone), "missing ID")
    ids = subject_ids(id_cells)
    # ---- numeric items
    for item in STANDARD_ITEMS[1:]:
        if item not in col_of:
            continue
        column = col_of[item]
        required = item in ("TIME", "EVID", "MDV")
        vals, bad = numeric_column(kept[column], "must be a number", missing=None)
        found.setdefault(column, []).extend((int(rows[i]), r, v) for i, r, v in bad)
        miss = missing_mask(kept[column])
        if required:
            add(column, np.flatnonzero(miss), "missing value (required on every record)")
        elif item in _ZERO_WHEN_MISSING:
            vals = np.where(miss, 0.0, vals)
        elif item == "DVID":
            vals = np.where(miss, 1.0, vals)
        if item in _INTEGER_ITEMS:
            frac = np.isfinite(vals) & (vals != np.round(vals))
            add(column, np.flatnonzero(frac), "must be a whole number")
        values[item] = vals
    # ---- covariates: numbers, or text labels; given on every record
    cov_values: dict[str, np.ndarray] = {}
    for c in cov_cols:
        col = kept[c]
        miss = missing_mask(col)
        add(c, np.flatnonzero(miss), "missing covariate value (needed on every record)")
        vals, bad = numeric_column(col, "must be a number", missing=None)
        not_numbers = [b for b in bad if b[1] == "must be a number"]
        if not_numbers and len(not_numbers) == int((~miss).sum()):
            cov_values[c] = col.astype(str).str.strip().to_numpy(dtype=object)
            continue  # a text column: labels
        found.setdefault(c, []).extend((int(rows[i]), r, v) for i, r, v in bad)
        cov_values[c] = vals
    n = len(kept)
    position = np.full(len(cells), -1)
    position[rows] = np.arange(len(rows))
    for col_found in found.values():
        bad_cell[position[[i for i, _, _ in col_found]]] = True
    # ---- EVID, MDV, DV and the record rules
    time = values["TIME"]
    amt = values.get("AMT", np.zeros(n))
    rate = values.get("RATE", np.zeros(n))
    dv = values.get("DV", np.full(n, np.nan))
    if "EVID" in values:
        evid = values["EVID"]
        add(col_of["EVID"], np.flatnonzero(~np.isin(evid, (0, 1, 2, 3, 4))), "must be 0-4")
    else:
        has_obs = values["MDV"] == 0 if "MDV" in values else np.isfinite(dv)
        evid = np.where((amt > 0) | (rate != 0), 1.0, np.where(has_obs, 0.0, 2.0))
    if "MDV" in values:
        mdv = values["MDV"]
        add(col_of["MDV"], np.flatnonzero(~np.isin(mdv, (0, 1))), "must be 0 or 1")
        add(
            col_of["MDV"],
            np.flatnonzero((mdv == 0) & (evid != 0)),
            "must be 1 on a record that is not an observation (EVID 1-4)",
        )
    else:
        mdv = np.where((evid == 0) & np.isfinite(dv), 0.0, 1.0)
    observed = (evid == 0) & (mdv == 0)
    if "DV" in col_of:
        add(
            col_of["DV"],
            np.flatnonzero(observed & ~np.isfinite(dv)),
            "an observation record (EVID 0, MDV 0) needs a DV",
        )
    _dose_rules(values, col_of, evid, amt, rate, dose_compartments, add)
    _order_rules(ids, time, evid, col_of, add, rows)
    for item, allowed in (("BLQ", (0, 1)),):
        if item in values:
            add(col_of[item], np.flatnonzero(~np.isin(values[item], allowed)), "must be 0 or 1")
    if "LLOQ" in values:
        add(col_of["LLOQ"], np.flatnonzero(values["LLOQ"] < 0), "must be >= 0")
    if "DVID" in values:
        add(col_of["DVID"], np.flatnonzero(values["DVID"] < 0), "must be >= 0")
    _duplicates(kept, ids, list(col_of.values()) + cov_cols, id_col, rows, add)
    if any(found.values()):
        return None, _problems(found, name, first_line, header)
    # ---- the records
    records: dict[str, Any] = {"REC": rows + 1, "ID": ids}
    ints = ("EVID", "CMT", "SS", "ADDL", "MDV", "BLQ", "DVID")
    filled = {**values, "EVID": evid, "MDV": mdv}
    defaults = {"DV": np.nan, "LLOQ": np.nan, "DVID": 1.0}
    for item in STANDARD_ITEMS[1:]:
        v = filled.get(item, np.full(n, defaults.get(item, 0.0)))
        records[item] = v.astype(np.int64) if item in ints else v.astype(np.float64)
    records.update(cov_values)
    frame = pd.DataFrame(records)
    varying = _varying(ids, cov_values, cov_cols)
    dataset = Dataset(
        name=name,
        sha256="",  # set by the caller: of the file, or of the frame's records
        records=frame,
        covariates=tuple(cov_cols),
        varying=varying,
        columns={item: c for c, item in item_of.items() if item != "C"},
        first_line=first_line,
    )
    return dataset, []


def _resolve_columns(
    header: list[str],
    columns: Mapping[str, str] | None,
    covariates: Sequence[str] | None,
    owner: str,
    where: str,
) -> tuple[dict[str, str], list[str], list[Problem]]:
    """File column -> standard item (case-insensitive, after the declared mapping), the
    covariate columns, and the problems of the header and the mapping."""
    problems: list[Problem] = []
    key = f"{where}.columns" if where else "columns"
    by_upper: dict[str, list[str]] = {}
    for c in header:
        by_upper.setdefault(c.strip().upper(), []).append(c)
    for u, cs in by_upper.items():
        if len(cs) > 1:
            problems.append(
                Problem(owner, "header", f"columns {cs} differ only in case ({u!r}): rename one")
            )
    item_of: dict[str, str] = {}
    declared = dict(columns or {})
    items = (*STANDARD_ITEMS, "C")
    for item, column in declared.items():
        u = str(item).strip().upper()
        if u not in items:
            problems.append(
                Problem(owner, f"{key}.{item}", f"not a data item {list(STANDARD_ITEMS)}")
            )
            continue
        match = by_upper.get(str(column).strip().upper())
        if not match:
            problems.append(
                Problem(owner, f"{key}.{item}", f"not a column of the dataset, got {column!r}")
            )
            continue
        item_of[match[0]] = u
    mapped = set(item_of.values())
    for c in header:
        u = c.strip().upper()
        if c not in item_of and u in items and u not in mapped:
            item_of[c] = u
    taken: dict[str, str] = {}
    for c, item in item_of.items():
        if item in taken:
            problems.append(
                Problem(owner, "header", f"two columns give {item}: {taken[item]!r} and {c!r}")
            )
        taken[item] = c
    for item in ("ID", "TIME"):
        if item not in taken:
            problems.append(
                Problem(
                    owner,
                    "header",
                    f"no {item} column (columns: {header}); map it with {key}.{item}",
                )
            )
    others = [c for c in header if c not in item_of]
    if covariates is None:
        cov_cols = others
    else:
        cov_cols = []
        for i, c in enumerate(covariates):
            match = by_upper.get(str(c).strip().upper())
            if not match or match[0] in item_of:
                problems.append(
                    Problem(owner, f"covariates[{i}]", f"not a covariate column, got {c!r}")
                )
            else:
                cov_cols.append(match[0])
    for c in cov_cols:
        if not _NAME.match(c):
            problems.append(
                Problem(
                    owner,
                    "header",
                    f"column {c!r} is not a covariate name (^[A-Za-z][A-Za-z0-9_]*$): "
                    "rename it or leave it out of the covariates",
                )
            )
    return item_of, cov_cols, problems


def _dose_rules(
    values: Mapping[str, np.ndarray],
    col_of: Mapping[str, str],
    evid: np.ndarray,
    amt: np.ndarray,
    rate: np.ndarray,
    dose_compartments: Collection[int] | None,
    add: Any,
) -> None:
    """PREDPP's rules of dose records (EVID 1, 4) and of the dose items elsewhere."""
    n = len(evid)
    dose = np.isin(evid, (1, 4))
    ss = values.get("SS", np.zeros(n))
    ii = values.get("II", np.zeros(n))
    addl = values.get("ADDL", np.zeros(n))
    amt_col = col_of.get("AMT") or col_of.get("RATE") or col_of["ID"]
    if "AMT" in col_of:
        add(col_of["AMT"], np.flatnonzero(amt < 0), "must be >= 0")
    constant = dose & (ss == 1) & (ii == 0) & (rate > 0)
    add(
        amt_col,
        np.flatnonzero(dose & (amt == 0) & (rate == 0)),
        "a dose record (EVID 1 or 4) with AMT 0 and no RATE gives nothing",
    )
    if "RATE" in col_of:
        c = col_of["RATE"]
        add(c, np.flatnonzero((rate < 0) & ~np.isin(rate, (-1, -2))), "must be >= 0, -1 or -2")
        add(
            c,
            np.flatnonzero(dose & (amt == 0) & (rate > 0) & ~constant),
            "an infusion with AMT 0 is allowed only at steady state (SS=1, II=0: a "
            "constant infusion)",
        )
        add(
            c,
            np.flatnonzero(dose & (amt == 0) & np.isin(rate, (-1, -2))),
            "a modelled rate or duration (RATE -1/-2) needs AMT > 0",
        )
    if "SS" in col_of:
        c = col_of["SS"]
        add(c, np.flatnonzero(~np.isin(ss, (0, 1, 2))), "must be 0, 1 or 2")
        add(
            c,
            np.flatnonzero(dose & (ss > 0) & (ii == 0) & ~constant),
            "steady state (SS 1 or 2) needs II > 0, unless it is a constant infusion "
            "(SS=1, II=0, AMT 0, RATE > 0)",
        )
        add(
            c,
            np.flatnonzero(constant & (amt != 0)),
            "a constant infusion at steady state (SS=1, II=0, RATE > 0) must have AMT 0",
        )
    if "II" in col_of:
        add(col_of["II"], np.flatnonzero(ii < 0), "must be >= 0")
    if "ADDL" in col_of:
        c = col_of["ADDL"]
        add(c, np.flatnonzero(addl < 0), "must be >= 0")
        add(c, np.flatnonzero((addl > 0) & (ii <= 0)), "additional doses (ADDL > 0) need II > 0")
    for item in DOSE_ITEMS:
        if item in col_of:
            v = values[item]
            add(
                col_of[item],
                np.flatnonzero(~dose & (v != 0)),
                f"only a dose record (EVID 1 or 4) carries {item}; this record is not one",
            )
    if "CMT" in col_of:
        cmt = values["CMT"]
        c = col_of["CMT"]
        add(
            c,
            np.flatnonzero(cmt < 0),
            "a negative CMT (turning a compartment off) is not supported",
        )
        if dose_compartments is not None:
            allowed = sorted({0, *(int(x) for x in dose_compartments)})
            add(
                c,
                np.flatnonzero(dose & (cmt > 0) & ~np.isin(cmt, allowed)),
                f"not a compartment the model can dose (allowed: {allowed})",
            )


def _order_rules(
    ids: np.ndarray,
    time: np.ndarray,
    evid: np.ndarray,
    col_of: Mapping[str, str],
    add: Any,
    rows: np.ndarray,
) -> None:
    """Records of one ID together; time never decreasing within an ID except at a reset."""
    n = len(ids)
    if n < 2:
        return
    new_block = np.empty(n, dtype=bool)
    new_block[0] = True
    new_block[1:] = ids[1:] != ids[:-1]
    starts = np.flatnonzero(new_block)
    block_ids = pd.Series(ids[starts])
    again = block_ids.duplicated().to_numpy()
    for b in np.flatnonzero(again):
        first = int(np.flatnonzero(block_ids.to_numpy() == block_ids.iloc[b])[0])
        add(
            col_of["ID"],
            np.array([starts[b]]),
            f"the records of one ID must be contiguous; this ID's records also start at "
            f"row {int(rows[starts[first]]) + 1}",
        )
    back = np.zeros(n, dtype=bool)
    back[1:] = (~new_block[1:]) & (time[1:] < time[:-1]) & ~np.isin(evid[1:], (3, 4))
    for i in np.flatnonzero(back):
        add(
            col_of["TIME"],
            np.array([i]),
            f"time goes backwards within an ID (previous record at {time[i - 1]:g}; only "
            "a reset, EVID 3 or 4, may go back)",
        )


def _duplicates(
    kept: pd.DataFrame,
    ids: np.ndarray,
    cols: list[str],
    id_col: str,
    rows: np.ndarray,
    add: Any,
) -> None:
    """Records equal, cell for cell, to an earlier record of the same ID."""
    cells = kept[cols].astype(str).apply(lambda s: s.str.strip())
    cells = cells.assign(**{id_col: pd.Series(ids, index=cells.index).astype(str)})
    dup = cells.duplicated(keep="first").to_numpy()
    if not dup.any():
        return
    # dropna=False: a missing cell (NaN even after astype(str) with pandas' str dtype)
    # is a value like any other here
    first_of = cells.reset_index(drop=True).groupby(cols, sort=False, dropna=False).ngroup()
    first_of = first_of.to_numpy()
    seen: dict[int, int] = {}
    for i in range(len(first_of)):
        seen.setdefault(int(first_of[i]), i)
    for j in np.flatnonzero(dup):
        add(
            id_col,
            np.array([j]),
            "duplicate record: equal in every column to row "
            f"{int(rows[seen[int(first_of[j])]]) + 1}",
        )


def _problems(
    found: Mapping[str, Found], name: str, first_line: int, header: list[str]
) -> list[Problem]:
    """Problems in column order of the file, then row order."""
    out: list[Problem] = []
    for column in header:
        if found.get(column):
            out += cell_problems(
                name, first_line, column, sorted(found[column], key=lambda f: f[0])
            )
    return out


def _frame_sha256(frame: pd.DataFrame) -> str:
    """SHA-256 of the records' CSV text (a frame has no file)."""
    return hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
