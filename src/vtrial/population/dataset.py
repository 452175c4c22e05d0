"""Populations of a dataset's subjects: ``population.dataset``.

A study may take its patients from a NONMEM-style dataset
(:mod:`vtrial.data.dataset`) instead of sampling them: one patient per subject, in
file order, with the subject's covariates. Two uses:

- ``doses: recorded`` (the default when the study has no ``arms``): every subject is
  simulated once, exactly as recorded: its doses, its sampling times, its covariates,
  which may change over time (each change starts an occasion at which integration
  stops; NONMEM's next-observation-carried-backward convention by default, rxode2's
  last-observation-carried-forward with ``interpolation: locf``). The arms are the
  values of ``arm_column`` (one arm, ``recorded``, without it).
- ``doses: arms``: the study's arms replace the recorded doses (counterfactuals, or a
  twin of a finished trial run under new regimens); the subjects keep their baseline
  covariates (first record). The arm of each subject is the study's allocation
  (``randomization``, or every arm with ``study.design: twin_crossover``), or the arm
  named by ``arm_column``.

Individual parameters (``parameters``): ``iiv`` (the study's covariate models and
random effects, the default), ``typical`` (covariate models only, no random effects),
``fit`` (the covariate models and each subject's ETAs from the ``.phi`` file of
``model.from_fit``: the fit's individual parameters, as NONMEM's POSTHOC step gives
them), ``twins`` (the covariate models and each subject's random effects as the study's
own twins stage, ``outputs.twins``, estimates them from the subject's recorded doses and
observations: the MAP estimate in replicate 0, a draw from its Laplace posterior in
each other replicate, :mod:`vtrial.population.twin_draws`) or ``table`` (a table of
individual values with an ``ID`` column, e.g. empirical Bayes estimates, whose columns
named like model parameters replace them; the other parameters take their typical
values).

:class:`DatasetSource` is the typed section, :func:`load_subjects` reads (and caches)
the dataset and the parameters table and reports their problems, and
:func:`subject_covariates` gives each subject's baseline covariates for
:func:`vtrial.population.sampling.sample_population`. Patient data stays local: the
files are identified by their SHA-256, and problems quote one cell at most.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from vtrial.data.dataset import Dataset, check_dataset
from vtrial.data.tables import cell_problems, numeric_column, read_cells, subject_ids
from vtrial.errors import Problem

__all__ = [
    "DOSES",
    "PARAMETER_SOURCES",
    "RECORDED_ARM",
    "DatasetSource",
    "Subjects",
    "arm_labels",
    "dataset_source",
    "fit_etas",
    "load_subjects",
    "subject_covariates",
]

#: where a dataset population's doses come from
DOSES = ("recorded", "arms")
#: where a dataset population's individual parameters come from
PARAMETER_SOURCES = ("iiv", "typical", "fit", "twins", "table")
#: the arm of ``doses: recorded`` without an ``arm_column``
RECORDED_ARM = "recorded"
_WHERE = "population.dataset"


@dataclass(frozen=True)
class DatasetSource:
    """The typed ``population.dataset`` section (defaults filled).

    Attributes
    ----------
    path : str
        The dataset file, relative to the study file.
    columns : mapping of str to str
        Standard item -> the file's own column name.
    interpolation : str
        ``nocb`` (NONMEM, mrgsolve) or ``locf`` (rxode2): when a changed value acts.
    doses : str
        ``recorded`` or ``arms`` (:data:`DOSES`).
    arm_column : str or None
        Dataset column naming each subject's arm.
    parameters : str
        ``iiv``, ``typical``, ``fit``, ``twins`` or ``table`` (:data:`PARAMETER_SOURCES`).
    table : str or None
        The parameters table (``parameters: table``), relative to the study file.
    """

    path: str
    columns: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    interpolation: str = "nocb"
    doses: str = "recorded"
    arm_column: str | None = None
    parameters: str = "iiv"
    table: str | None = None

    def __hash__(self) -> int:
        return hash(
            (
                self.path,
                tuple(sorted(self.columns.items())),
                self.interpolation,
                self.doses,
                self.arm_column,
                self.parameters,
                self.table,
            )
        )

    @property
    def recorded(self) -> bool:
        """Whether the subjects are simulated with their recorded doses."""
        return self.doses == "recorded"

    @classmethod
    def from_data(cls, spec: Mapping[str, Any]) -> DatasetSource:
        """The source of a validated ``population.dataset`` section (defaults filled)."""
        params = spec.get("parameters", "iiv")
        table = params.get("table") if isinstance(params, Mapping) else None
        return cls(
            path=str(spec["path"]),
            columns=MappingProxyType(
                {str(k): str(v) for k, v in (spec.get("columns") or {}).items()}
            ),
            interpolation=str(spec.get("interpolation", "nocb")),
            doses=str(spec.get("doses", "recorded")),
            arm_column=spec.get("arm_column"),
            parameters="table" if table is not None else str(params),
            table=str(table) if table is not None else None,
        )


def dataset_source(pop: Mapping[str, Any]) -> DatasetSource | None:
    """The :class:`DatasetSource` of a ``population`` section (None without a dataset)."""
    spec = pop.get("dataset")
    return DatasetSource.from_data(spec) if spec is not None else None


@dataclass(frozen=True, eq=False)
class Subjects:
    """A dataset population's inputs, read and checked.

    Attributes
    ----------
    dataset : Dataset or None
        The checked dataset (None if it has problems).
    table : DataFrame or None
        The parameters table (``parameters: table``), one row per subject in dataset
        order, its model-parameter columns only (None without one or with problems).
    problems : list of Problem
        Every problem of the dataset, of the parameters table and of their keys.
    """

    dataset: Dataset | None
    table: pd.DataFrame | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def n(self) -> int:
        """Number of subjects (0 without a readable dataset)."""
        return 0 if self.dataset is None else len(self.dataset.subjects)


def load_subjects(
    spec: DatasetSource,
    base_dir: str | Path,
    source: str,
    *,
    dose_compartments: tuple[int, ...] | None = None,
    parameters: tuple[str, ...] = (),
) -> Subjects:
    """Read and check the dataset and the parameters table of ``spec`` (cached: every
    stage loads the study).

    Parameters
    ----------
    spec : DatasetSource
    base_dir : str or Path
        The study file's folder.
    source : str
        The study file (problems of its keys name it).
    dose_compartments : tuple of int, optional
        The model's dose compartments (``CMT`` is checked against them).
    parameters : tuple of str
        The model's parameters (the columns kept from the parameters table).
    """
    path = Path(base_dir) / spec.path
    table = Path(base_dir) / spec.table if spec.table is not None else None
    stamp: tuple[Any, ...] = ()  # the files' versions: a change invalidates the cache
    for f in (path, table):
        try:
            st = f.stat() if f is not None else None
        except OSError:
            st = None  # reported by the readers
        stamp += (st.st_mtime_ns, st.st_size) if st is not None else (None,)
    return _load(
        spec, str(path), str(table) if table else None, source, dose_compartments, parameters, stamp
    )


@functools.lru_cache(maxsize=4)
def _load(
    spec: DatasetSource,
    path: str,
    table: str | None,
    source: str,
    dose_compartments: tuple[int, ...] | None,
    parameters: tuple[str, ...],
    stamp: tuple[Any, ...],
) -> Subjects:
    dataset, problems = check_dataset(
        path,
        columns=dict(spec.columns),
        dose_compartments=dose_compartments,
        source=source,
        where=f"{_WHERE}.columns" if spec.columns else _WHERE,
    )
    if dataset is None:
        return Subjects(None, None, problems)
    if spec.arm_column is not None:
        problems += _arm_column_problems(dataset, spec.arm_column, source)
    values = None
    if table is not None:
        values, found = _parameter_table(Path(table), dataset, parameters, source)
        problems += found
    return Subjects(dataset, values, problems)


def _arm_column_problems(dataset: Dataset, column: str, source: str) -> list[Problem]:
    where = f"{_WHERE}.arm_column"
    if column not in dataset.covariates:
        return [
            Problem(
                source,
                where,
                f"must name a column of the dataset {list(dataset.covariates)}, got {column!r}",
            )
        ]
    if column in dataset.varying:
        return [
            Problem(
                source,
                where,
                f"the arm column {column!r} must hold one value per subject; it changes "
                "within some subject",
            )
        ]
    if dataset.records[column].isna().any():
        return [Problem(source, where, f"the arm column {column!r} has missing cells")]
    return []


def arm_labels(dataset: Dataset, column: str) -> np.ndarray:
    """Each subject's arm label (text; whole numbers without a decimal point), in
    dataset order."""
    first = _first_records(dataset)
    values = dataset.records[column].to_numpy()[first]
    return np.asarray([_label(v) for v in values], dtype=object)


def _label(v: Any) -> str:
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _first_records(dataset: Dataset) -> np.ndarray:
    ids = dataset.records["ID"].to_numpy()
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])


def fit_etas(dataset: Dataset, etas: pd.DataFrame) -> tuple[pd.DataFrame | None, int, Any]:
    """The fit's ETAs of each subject of ``dataset`` (rows in dataset order), or None
    with the number of subjects without a row and the first of them."""
    pos = pd.Index(etas.index).get_indexer(pd.Index(dataset.subjects))
    missing = np.flatnonzero(pos < 0)
    if missing.size:
        return None, int(missing.size), _label(dataset.subjects[missing[0]])
    return etas.iloc[pos].reset_index(drop=True), 0, None


def subject_covariates(
    dataset: Dataset, names: tuple[str, ...] | None = None
) -> dict[str, np.ndarray]:
    """Each subject's covariates on its first record (baseline), in dataset order:
    float64 for numeric columns, text labels otherwise."""
    first = _first_records(dataset)
    r = dataset.records
    out: dict[str, np.ndarray] = {}
    for c in names if names is not None else dataset.covariates:
        v = r[c].to_numpy()[first]
        out[c] = v.astype(np.float64) if pd.api.types.is_numeric_dtype(r[c]) else v.astype(object)
    return out


def _parameter_table(
    path: Path, dataset: Dataset, parameters: tuple[str, ...], source: str
) -> tuple[pd.DataFrame | None, list[Problem]]:
    """The parameters table's model-parameter columns, one row per subject in dataset
    order, and its problems."""
    where = f"{_WHERE}.parameters.table"
    try:
        cells, first_line = read_cells(path)
    except (OSError, ValueError, ImportError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        return None, [Problem(source, where, f"cannot read the parameters table {path}: {reason}")]
    by_upper = {str(c).upper(): c for c in cells.columns}
    if "ID" not in by_upper:
        return None, [
            Problem(
                source, where, f"the parameters table needs an ID column, got {list(cells.columns)}"
            )
        ]
    cols = [c for c in cells.columns if c in parameters]
    if not cols:
        return None, [
            Problem(
                source,
                where,
                f"no column of the parameters table is a model parameter {sorted(parameters)}, "
                f"got {list(cells.columns)}",
            )
        ]
    out: list[Problem] = []
    ids = subject_ids(cells[by_upper["ID"]])
    values: dict[str, np.ndarray] = {}
    for c in cols:
        values[c], found = numeric_column(cells[c], "must be a number")
        out += cell_problems(path, first_line, c, found)
    index = pd.Index(ids)
    dup = index.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        out += cell_problems(path, first_line, "ID", [(i, "one row per subject", ids[i])])
        return None, out
    pos = index.get_indexer(pd.Index(dataset.subjects))
    missing = np.flatnonzero(pos < 0)
    if missing.size:
        out.append(
            Problem(
                str(path),
                "column ID",
                f"every subject of the dataset needs a row: {missing.size} have none "
                f"(the first: ID {_label(dataset.subjects[missing[0]])})",
            )
        )
    if out:
        return None, out
    return pd.DataFrame({c: values[c][pos] for c in cols}), []
