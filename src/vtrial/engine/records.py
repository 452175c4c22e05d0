"""Simulate a dataset's subjects exactly as recorded: their doses, their sampling times.

:func:`simulate_records` is what ``vtrial.simulate(model, data=...)`` runs, the
counterpart of mrgsolve's ``mrgsim(data=)`` and rxode2's ``rxSolve(events)``: the
dataset is checked as a study's dataset is (:func:`vtrial.data.dataset.read_dataset`
rules, plus the model's dose compartments), its records become each subject's kernel
events (:func:`vtrial.data.records.record_events`), and every model output comes back
on every observation record (EVID 0 and 2), with the doses recorded before it at the
same time applied and those after it not (NONMEM's record order).

Individual parameters come, in this order of precedence, from a ``parameters`` table
with one row per ``ID`` (empirical Bayes estimates, for instance), from dataset columns
named like model parameters, or from the model's typical values. A column may change
within a subject: each change starts a new occasion, at which integration stops and
the parameters change (NONMEM's convention by default, ``interpolation="nocb"``).
Resets (EVID 3, 4) restart a subject from its initial states. A dose into any
compartment but the depot takes the dose terms NONMEM names after its ``CMT`` (``F2``,
``ALAG2``, ``R2`` for ``RATE -1``, ``D2`` for ``RATE -2`` for a dose into ``CMT`` 2),
from the same sources (:func:`dose_terms`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vtrial.data.dataset import Dataset, dataset_from_frame, read_dataset
from vtrial.data.records import (
    DOSE_TERMS,
    RecordEvents,
    dose_routes,
    record_events,
    record_span,
    unsupported_problems,
)
from vtrial.engine.codegen import layout
from vtrial.engine.host import KernelResult, Tolerances, labels, run_kernel
from vtrial.engine.interface import METHODS, STATUS
from vtrial.errors import DatasetError
from vtrial.model.spec import Model

__all__ = ["RECORD_COLUMNS", "simulate_records"]

#: subjects per kernel call of :func:`simulate_records` (bounds the event tables' memory)
CHUNK_SUBJECTS = 20_000

#: dataset items copied into the result, before the outputs (those the dataset has)
RECORD_COLUMNS = ("ID", "TIME", "EVID", "AMT", "CMT", "MDV", "DV")


def as_dataset(
    model: Model, data: pd.DataFrame | Dataset | str | Path, columns: Mapping[str, str] | None
) -> Dataset:
    """A checked :class:`Dataset` of ``data`` (a frame, a file or a checked dataset),
    its dose records checked against ``model``'s dose compartments."""
    if isinstance(data, Dataset):
        return data
    cmts = dose_routes(model).compartments
    if isinstance(data, pd.DataFrame):
        return dataset_from_frame(data, columns=columns, dose_compartments=cmts)
    return read_dataset(data, columns=columns, dose_compartments=cmts)


def parameter_columns(model: Model, dataset: Dataset, parameters: pd.DataFrame | None) -> list[str]:
    """Dataset columns that give model parameters: those named like one and not given
    by the ``parameters`` table (which takes precedence)."""
    given = set(parameters.columns) if parameters is not None else set()
    return [c for c in dataset.covariates if c in model.parameters and c not in given]


def table_rows(parameters: pd.DataFrame, subjects: np.ndarray) -> np.ndarray:
    """Row of ``parameters`` of each subject: by its ``ID`` column, or the single row.

    Raises
    ------
    ValueError
        No row for some subject, two rows for one, or several rows without ``ID``.
    """
    if "ID" in parameters.columns:
        index = pd.Index(parameters["ID"])
        if not index.is_unique:
            raise ValueError("parameters: more than one row for an ID")
        pos = np.asarray(index.get_indexer(subjects), dtype=np.int64)
        if np.any(pos < 0):
            missing = int((pos < 0).sum())
            raise ValueError(
                f"parameters: no row for {missing} of the dataset's {subjects.size} "
                "subjects (match them by an ID column)"
            )
        return pos
    if len(parameters) == 1:
        return np.zeros(subjects.size, dtype=np.int64)
    raise ValueError(
        "parameters: give an ID column (one row per subject) or a single row "
        f"for every subject, got {len(parameters)} rows without ID"
    )


def row_parameters(
    model: Model,
    dataset: Dataset,
    ev: RecordEvents,
    columns: Sequence[str],
    parameters: pd.DataFrame | None,
) -> dict[str, np.ndarray]:
    """Each kernel row's parameter values, by model parameter (see the module docstring):
    ``(n_rows, n_occ)`` for a dataset column (its value on each occasion), ``(n_rows,)``
    from the ``parameters`` table.

    Raises
    ------
    ValueError
        ``parameters`` has no row for some subject, or two rows for one.
    """
    out: dict[str, np.ndarray] = {}
    r = dataset.records
    for c in columns:
        out[c] = r[c].to_numpy(dtype=np.float64)[ev.occasion_record]
    if parameters is not None:
        cols = [c for c in parameters.columns if c in model.parameters]
        pos = table_rows(parameters, ev.subjects)
        for c in cols:
            out[c] = parameters[c].to_numpy(dtype=np.float64)[pos][ev.row_subject]
    return out


def dose_terms(
    model: Model, dataset: Dataset, parameters: pd.DataFrame | None
) -> dict[str, np.ndarray]:
    """Per record, the dose terms of its compartment (:data:`DOSE_TERMS
    <vtrial.data.records.DOSE_TERMS>`) under NONMEM's names (``F2``, ``ALAG2``, ``R2``,
    ``D2`` for a dose into ``CMT`` 2): from the ``parameters`` table (by ``ID``), else a
    dataset column (its value on the record), else a model parameter of that name (its
    typical value); records whose term is found nowhere get the default (``F`` 1,
    ``ALAG`` 0, ``R`` and ``D`` none). A dose into the depot takes ``R1`` and ``D1``
    so, and the model's ``F`` and ``TLAG`` (in the kernel)."""
    routes = dose_routes(model)
    r = dataset.records
    cmt = np.where(r["CMT"].to_numpy() == 0, routes.default, r["CMT"].to_numpy())
    defaults = {"F": 1.0, "ALAG": 0.0, "R": np.nan, "D": np.nan}
    rows = None
    out: dict[str, np.ndarray] = {}
    for c in np.unique(cmt):
        at = cmt == c
        for key in DOSE_TERMS:
            if c == routes.oral and key in ("F", "ALAG"):
                continue  # the depot's are the model's F and TLAG
            name = f"{key}{c}"
            if parameters is not None and name in parameters.columns:
                if rows is None:
                    rows = table_rows(parameters, r["ID"].to_numpy())
                values = parameters[name].to_numpy(dtype=np.float64)[rows]
            elif name in dataset.covariates:
                values = r[name].to_numpy(dtype=np.float64)
            elif name in model.parameters:
                values = np.full(len(r), model.parameters[name].value)
            else:
                continue
            term = out.setdefault(key, np.full(len(r), defaults[key]))
            term[at] = values[at]
    return out


def simulate_records(
    model: Model,
    data: pd.DataFrame | Dataset | str | Path,
    parameters: pd.DataFrame | None = None,
    *,
    columns: Mapping[str, str] | None = None,
    interpolation: str = "nocb",
    tolerances: Tolerances | None = None,
    chunk_size: int = CHUNK_SUBJECTS,
) -> pd.DataFrame:
    """Simulate every subject of a dataset as recorded; outputs on its records.

    Parameters
    ----------
    model : Model
        A composed model.
    data : DataFrame, Dataset, str or Path
        NONMEM-style records (:mod:`vtrial.data.dataset`), checked before anything is
        simulated, with the model's dose compartments
        (:func:`vtrial.data.records.dose_routes`).
    parameters : DataFrame, optional
        Individual parameters: an ``ID`` column and one row per subject, or a single
        row for all; columns named like model parameters (others are ignored).
    columns : mapping, optional
        Standard item -> the dataset's own column name.
    interpolation : {"nocb", "locf"}
        When a parameter column that changes within a subject takes its new value:
        NONMEM's and mrgsolve's convention (``"nocb"``: a record's value holds over the
        interval ending at it) or rxode2's (``"locf"``: from the record on); see
        :func:`vtrial.data.records.record_events`.
    tolerances : Tolerances, optional
    chunk_size : int
        Subjects simulated at a time (memory is bounded by a chunk's events); the
        result does not depend on it.

    Returns
    -------
    DataFrame
        One row per record, in file order: the dataset's :data:`RECORD_COLUMNS`, one
        column per model output (on EVID 0 and 2 records; NaN on dose records), then
        ``solver_status`` and ``solver`` of the subject.

    Raises
    ------
    DatasetError
        Every problem of the records, or a feature the engine does not simulate.

    Examples
    --------
    >>> import pandas as pd
    >>> from vtrial import build_model
    >>> m = build_model({"pk": "pk_1cmt"})
    >>> data = pd.DataFrame({"ID": 1, "TIME": [0.0, 0.0, 10.0], "AMT": [0, 100, 0],
    ...                      "CMT": [2, 2, 2], "EVID": [0, 1, 0]})
    >>> out = simulate_records(m, data, pd.DataFrame({"CL": [5.0], "V1": [50.0]}))
    >>> out["CP"].round(6).tolist()  # before the dose (file order), NaN on it, then 2 exp(-1)
    [0.0, nan, 0.735759]
    """
    dataset = as_dataset(model, data, columns)
    if chunk_size < 1:
        raise ValueError(f"chunk_size: must be >= 1, got {chunk_size}")
    by_column = parameter_columns(model, dataset, parameters)
    routes = dose_routes(model)
    # every problem before anything is simulated, not chunk by chunk
    if parameters is not None:
        table_rows(parameters, dataset.subjects)
    terms = dose_terms(model, dataset, parameters)
    problems = unsupported_problems(dataset, routes, terms)
    if problems:
        raise DatasetError(problems)
    r = dataset.records
    # one span for every chunk, so a subject's solve does not depend on its chunk
    span = np.array(record_span(r["TIME"].to_numpy(dtype=np.float64)))
    out: dict[str, Any] = {c: r[c].to_numpy() for c in RECORD_COLUMNS if c in r}
    if "DV" not in dataset.columns:
        out.pop("DV", None)
    outputs = layout(model).output_names
    values = np.full((len(r), len(outputs)), np.nan)
    status = np.empty(len(r), dtype=object)
    method = np.empty(len(r), dtype=object)
    ids = r["ID"].to_numpy()
    first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(r) else np.zeros(0, int)
    bounds = np.r_[first[::chunk_size], len(r)]
    for a, b in itertools.pairwise(bounds):
        part = dataclasses.replace(dataset, records=r.iloc[a:b])
        ev = record_events(
            part,
            routes,
            varying=by_column,
            interpolation=interpolation,
            terms={k: v[a:b] for k, v in terms.items()},
            checked=True,
        )
        n = ev.row_subject.size
        params = row_parameters(model, part, ev, by_column, parameters)
        res: KernelResult = run_kernel(
            model,
            params,
            n=n,
            events=ev.table,
            arm=np.arange(n, dtype=np.int64),
            dose_scale=np.ones((n, 3)),
            grid=span,
            tolerances=tolerances,
            n_obs=ev.n_obs,
        )
        observed = np.flatnonzero(ev.obs_row >= 0)
        values[a + observed] = res.obs[ev.row[observed], ev.obs_row[observed]]
        status[a:b] = labels(res.status, STATUS)[ev.row]
        method[a:b] = labels(res.method, METHODS)[ev.row]
    for j, name in enumerate(outputs):
        out[name] = values[:, j]
    out["solver_status"] = status
    out["solver"] = method
    return pd.DataFrame(out)
