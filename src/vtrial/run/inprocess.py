"""``vtrial.run_study``: a whole study in this process, for notebooks and small studies.

The same code path as the workflow, without Snakemake, Dask or files: the twins of a
study with ``population.dataset.parameters: twins``
(:func:`vtrial.run.twin_stage.estimate_twins`), the population
(:func:`vtrial.population.sampling.sample_population`), the patients in chunks of
``execution.chunk_size`` (:func:`vtrial.run.chunk.simulate_chunk`, the Dask task's
function), the band sketches merged as the simulate and aggregate stages merge them,
and the summary tables of the aggregate stage (:func:`vtrial.run.stages.summaries` and
the design's tables). A table depends only on the study and its seed, never on the
layout, so every table equals the workflow's, bit for bit
(``tests/workflow/test_workflow.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from vtrial.analysis import sketch
from vtrial.analysis.design import design_tables
from vtrial.analysis.popsummary import population_summary
from vtrial.population.sampling import sample_population
from vtrial.run.chunk import simulate_chunk
from vtrial.run.stages import DOSES_SCHEMA, OBSERVATION_SCHEMA, log, needs_twins, summaries
from vtrial.run.twin_stage import estimate_twins
from vtrial.study.config import Study, deep_merge, load_study, study_from_dict

__all__ = ["StudyResult", "run_study"]


@dataclass
class StudyResult:
    """The tables of a study run in process (those the workflow writes as Parquet).

    Attributes
    ----------
    study : Study
    population, patients, timecourse, observations, doses : DataFrame
        As ``population.parquet``, ``patients/``, ``timecourse/``, ``observations/``
        (empty without ``outputs.observations``) and ``doses/`` (empty without a dose
        ledger).
    summary : dict of str to DataFrame
        The tables of ``summary/`` by name (``exposure``, ``efficacy``, ``safety``,
        ``bands``, ``population``, and those the design and success criteria add).
    twins : DataFrame
        With ``population.dataset.parameters: twins``, the twins table the population
        was drawn from (the twins stage's parts, every subject in file order,
        :func:`vtrial.run.twin_stage.estimate_twins`); empty otherwise.
    """

    study: Study
    population: pd.DataFrame
    patients: pd.DataFrame
    timecourse: pd.DataFrame
    observations: pd.DataFrame
    doses: pd.DataFrame
    summary: dict[str, pd.DataFrame] = field(default_factory=dict)
    twins: pd.DataFrame = field(default_factory=pd.DataFrame)


def run_study(
    study: str | Path | Mapping[str, Any] | Study,
    *,
    size: int | None = None,
    replicates: int | None = None,
    threads: int | None = None,
) -> StudyResult:
    """Run a study in this process and return its tables.

    Parameters
    ----------
    study : str, Path, mapping or Study
        A study file, a study as a mapping (validated like a file), or a loaded study.
    size, replicates : int, optional
        Override ``population.size`` and ``study.replicates`` (a smaller run of the same
        study; the override is validated with the rest).
    threads : int, optional
        Threads of the kernel (default: numba's).

    Returns
    -------
    StudyResult

    Raises
    ------
    ConfigError
        Every problem of the study, before anything is simulated.

    Examples
    --------
    >>> import vtrial
    >>> res = vtrial.run_study("config/config.yaml", size=20, replicates=1)  # doctest: +SKIP
    >>> res.summary["safety"].query("grade == '>=3'")[["arm", "incidence"]]  # doctest: +SKIP
    """
    overrides: dict[str, Any] = {}
    if size is not None:
        overrides["population"] = {"size": size}
    if replicates is not None:
        overrides["study"] = {"replicates": replicates}
    if isinstance(study, Study):
        if overrides:
            study = study_from_dict(
                deep_merge(study.data, overrides), source=study.source, base_dir=study.base_dir
            )
    elif isinstance(study, Mapping):
        study = study_from_dict(deep_merge(study, overrides))
    else:
        study = load_study(study, overrides=overrides or None)
    for warning in study.warnings:
        log.warning("%s", warning)
    candidates: list[int] = []
    twins = None
    if needs_twins(study):  # the twins stage, in this process
        twins = estimate_twins(study, execution={"chunk_size": study.execution["chunk_size"]})
    pop = _as_stored(sample_population(study, candidates=candidates, twins=twins))
    chunk = int(study.execution["chunk_size"])
    parts = [
        simulate_chunk(study, pop.iloc[a : a + chunk].reset_index(drop=True), threads=threads)
        for a in range(0, len(pop), chunk)
    ]
    # the band sketches as the workflow merges them: per shard, then across shards
    # through their table form (one shard here: the tables do not depend on the layout)
    shard = sketch.merge([p[2] for p in parts])
    bands = sketch.merge([sketch.from_frame(sketch.to_frame(shard))])
    patients = _as_stored(pd.concat([p[0] for p in parts], ignore_index=True))
    tables = summaries(study, patients, bands)
    tables.update(design_tables(study, patients, pop))
    tables["population"] = population_summary(study, pop, candidates)
    return StudyResult(
        study=study,
        population=pop,
        patients=patients,
        timecourse=_as_stored(pd.concat([p[1] for p in parts], ignore_index=True)),
        observations=_as_stored(
            pd.concat([p[3] for p in parts], ignore_index=True), OBSERVATION_SCHEMA
        ),
        doses=_as_stored(pd.concat([p[4] for p in parts], ignore_index=True), DOSES_SCHEMA),
        summary={k: _as_stored(v) for k, v in tables.items()},
        twins=twins if twins is not None else pd.DataFrame(),
    )


def _as_stored(df: pd.DataFrame, schema: pa.Schema | None = None) -> pd.DataFrame:
    """``df`` as the workflow reads it back from its Parquet file (Arrow types), so the
    in-process tables and the workflow's files are the same tables."""
    return pa.Table.from_pandas(df, schema=schema, preserve_index=False).to_pandas()
