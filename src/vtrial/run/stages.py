"""The stages of a study, as plain functions (the Snakemake rules only call these).

``sample_population -> simulate (per shard, Dask inside) -> aggregate -> report ->
manifest``. Each stage reads its inputs, computes, and writes its outputs atomically
with provenance; none imports snakemake, so every stage is usable and testable alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import platform
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from vtrial.analysis import sketch
from vtrial.analysis.design import design_tables, summary_tables
from vtrial.analysis.efficacy import efficacy_summary
from vtrial.analysis.exposure import exposure_summary
from vtrial.analysis.popsummary import acceptance_record, population_summary
from vtrial.analysis.safety import safety_summary
from vtrial.analysis.success import success_tables, table_names
from vtrial.errors import DataError, ResourceError
from vtrial.infra.hashing import file_sha256
from vtrial.infra.progress import Progress
from vtrial.population.design import is_twin, population_rows
from vtrial.population.sampling import sample_population
from vtrial.run.chunk import OBSERVATION_COLUMNS, bands_table, simulate_chunk, simulate_patients
from vtrial.run.io import (
    provenance,
    read_parts,
    read_provenance,
    read_rows,
    table_hash,
    write_parquet,
    write_text,
)
from vtrial.run.parallel import (
    client_memory_limit,
    dask_client,
    in_completion_order,
    worker_memory_limit,
)
from vtrial.study.config import Study
from vtrial.trial.adverse import grade_references
from vtrial.trial.spec import effect_options

log = logging.getLogger("vtrial")

SUMMARY_TABLES = ("exposure", "efficacy", "safety", "bands")
#: rows per Parquet row group of population.parquet (shards read only their groups)
POPULATION_ROW_GROUP = 65_536
#: Arrow schema of ``observations/part-NNNNN.parquet`` (fixed, also when empty)
OBSERVATION_SCHEMA = pa.schema(
    [
        ("replicate", pa.int32()),
        ("patient_id", pa.int64()),
        ("arm", pa.string()),
        ("time", pa.float64()),
        ("output", pa.string()),
        ("ipred", pa.float64()),
        ("dv", pa.float64()),
        ("blq", pa.bool_()),
    ]
)
assert tuple(OBSERVATION_SCHEMA.names) == OBSERVATION_COLUMNS
#: Arrow schema of ``doses/part-NNNNN.parquet`` (the dose ledger, see vtrial.protocol.rules)
DOSES_SCHEMA = pa.schema(
    [
        ("replicate", pa.int32()),
        ("patient_id", pa.int64()),
        ("arm", pa.string()),
        ("dose_number", pa.int32()),
        ("time", pa.float64()),
        ("planned", pa.float64()),
        ("given", pa.float64()),
        ("reason", pa.string()),
    ]
)


def shard_name(shard: int) -> str:
    """File stem of a shard: ``part-00003``."""
    return f"part-{shard:05d}"


def shard_rows(n_total: int, n_shards: int, shard: int) -> tuple[int, int]:
    """Row range ``[start, stop)`` of a shard: contiguous, sizes differ by at most 1."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard: must be in [0, {n_shards}), got {shard}")
    base, extra = divmod(n_total, n_shards)
    start = shard * base + min(shard, extra)
    return start, start + base + (1 if shard < extra else 0)


#: ``execution`` keys that change the result files (the others never change a number)
RESULT_EXECUTION_KEYS = ("shards",)


def results_sha256(study: Study) -> str:
    """Hash of everything that determines the result files of a study.

    :attr:`vtrial.study.config.Study.sha256` (canonical study, model files and any other
    input file it hashes) of the study with ``execution`` reduced to
    :data:`RESULT_EXECUTION_KEYS`: changing ``workers``, ``chunk_size``,
    ``memory_limit``, ``scheduler_address`` or ``cluster`` keeps it, so Snakemake
    does not rerun finished jobs when a run resumes on other resources.
    """
    ex = study.data["execution"]
    data = {**study.data, "execution": {k: ex[k] for k in RESULT_EXECUTION_KEYS if k in ex}}
    return dataclasses.replace(study, data=data).sha256


def _meta(study: Study, **extra: Any) -> dict[str, Any]:
    return provenance(
        study=study.name,
        study_sha256=study.sha256,
        seed=study.seed,
        source=study.source,
        **extra,
    )


def needs_twins(study: Study) -> bool:
    """Whether the population takes its random effects from the twins stage
    (``population.dataset.parameters: twins``)."""
    ds = study.population.dataset
    return ds is not None and ds.parameters == "twins"


def run_sample_population(
    study: Study,
    out: str | Path,
    *,
    summary: str | Path | None = None,
    twins: Sequence[str | Path] | None = None,
) -> int:
    """Stage 1: sample the population and write ``population.parquet``; return rows.

    The acceptance of the inclusion/exclusion criteria (candidates and acceptance per
    replicate, :func:`vtrial.analysis.popsummary.acceptance_record`) goes to the log and to the
    footer metadata (key ``population``). ``summary`` (``summary/population.parquet``,
    with a CSV copy beside it) gets :func:`vtrial.analysis.popsummary.population_summary`.
    ``twins``: every part file of the twins stage, in shard order (required with
    ``population.dataset.parameters: twins``; the footer records their number and the
    content hash of their table, key ``twins``).

    Raises
    ------
    DataError
        ``parameters: twins`` without the twins parts, or parts that do not hold every
        subject once, in file order.
    """
    t0 = time.perf_counter()
    started = _utc_now()
    for warning in study.warnings:
        log.warning("%s", warning)
    candidates: list[int] = []
    table = None
    extra: dict[str, Any] = {}
    if needs_twins(study):
        if not twins:
            raise DataError(
                "population.dataset.parameters: 'twins' needs the twins stage's part files "
                "(twins/part-NNNNN.parquet of every shard); run the twins stage first"
            )
        table = read_parts(twins)
        extra["twins"] = {"parts": len(twins), "content_sha256": table_hash(table)}
        failed = table.loc[table["status"] != "ok", ["ID", "status"]]
        if len(failed):
            log.warning(
                "twins: %d subject(s) without a usable fit are not simulated (NaN random "
                "effects and parameters, solver_status invalid_initial), ID: status: %s%s",
                len(failed),
                "; ".join(f"{i}: {s}" for i, s in failed.head(20).itertuples(index=False)),
                f" and {len(failed) - 20} more" if len(failed) > 20 else "",
            )
    pop = sample_population(study, candidates=candidates, twins=table)
    accepted = acceptance_record(study, candidates)
    meta = _meta(study, stage="sample_population", population=accepted, started=started, **extra)
    write_parquet(pop, out, meta=meta, row_group_size=POPULATION_ROW_GROUP)
    log.info(
        "sampled %d patients (%d replicate(s) x %d) in %.2f s",
        len(pop),
        study.replicates,
        study.size,
        time.perf_counter() - t0,
    )
    log.info(
        "inclusion/exclusion criteria %s: %d patients of %d candidates, acceptance %.2f %%",
        accepted["inclusion"] + [f"not ({c})" for c in accepted["exclusion"]],
        study.size * study.replicates,
        accepted["candidates_total"],
        100.0 * accepted["acceptance_total"],
    )
    if summary is not None:
        table = population_summary(study, pop, candidates)
        write_parquet(table, summary, meta=meta)
        write_text(table.to_csv(index=False), Path(summary).with_suffix(".csv"))
    return len(pop)


def _simulate_chunk(
    study: Study, rows: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, sketch.Sketch, pd.DataFrame, pd.DataFrame]:
    """Dask task: simulate one chunk of population rows with one numba thread."""
    return simulate_chunk(study, rows, threads=1)


#: memory (bytes) of a Dask worker process before its first task: interpreter, numpy,
#: pandas, pyarrow, numba and the loaded kernel (about 250 MB measured, with margin)
WORKER_BASE_BYTES = 384 * 2**20


def chunk_memory_bytes(study: Study, n_patients: int) -> int:
    """Estimated peak memory (bytes) of one Dask task simulating ``n_patients``.

    Measured on the default study: building the long time-course table holds about
    seven copies of it (``n x stored times x (4 bytes x outputs + 28 bytes of ids)``),
    the observations about three, and the pickled result one more of each. Every
    patient's time course is counted, also when ``outputs.timecourse.patients``
    stores fewer, so the estimate errs on the high side.

    Parameters
    ----------
    study : Study
    n_patients : int
        Patients of the chunk (``execution.chunk_size`` at most).

    Returns
    -------
    int
        Bytes, not counting :data:`WORKER_BASE_BYTES`.
    """
    s = int(study.store_times().size)
    o = len(study.timecourse.outputs)
    n_obs = int(study.observations.times.size) * len(study.observations.outputs)
    per_patient = 8 * s * (4 * o + 28) + 4 * 64 * n_obs + 4096
    return int(n_patients) * per_patient


def check_chunk_memory(
    study: Study, shard: int, n_patients: int, limit: int | None, *, where: str
) -> None:
    """Refuse a shard whose chunks cannot fit the memory of one Dask worker.

    Raises
    ------
    ResourceError
        Naming the shard, the memory a chunk needs, the worker's limit (``where`` says
        where it comes from) and the largest ``execution.chunk_size`` that fits.
    """
    if limit is None or n_patients <= 0:
        return
    need = WORKER_BASE_BYTES + chunk_memory_bytes(study, n_patients)
    if need <= limit:
        return
    per_patient = chunk_memory_bytes(study, 1)
    fits = max(0, (limit - WORKER_BASE_BYTES) // per_patient)
    advice = (
        f"lower execution.chunk_size to {fits} or less, or give the workers more memory"
        if fits
        else "give the workers more memory"
    )
    raise ResourceError(
        f"shard {shard} ({shard_name(shard)}): a chunk of {n_patients} patients needs about "
        f"{_mib(need)} per Dask worker ({_mib(WORKER_BASE_BYTES)} for the worker, "
        f"{_mib(need - WORKER_BASE_BYTES)} for the chunk), more than the worker memory limit "
        f"of {_mib(limit)} ({where}); {advice}"
    )


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _chunk_result(
    fut: Any, study: Study, shard: int, k: int, bounds: Sequence[tuple[int, int]], first: int
) -> tuple[pd.DataFrame, pd.DataFrame, sketch.Sketch, pd.DataFrame, pd.DataFrame]:
    """The result of chunk ``k`` of a shard; a failure names the shard and the chunk."""
    from distributed import KilledWorker

    a, b = bounds[k]
    what = (
        f"shard {shard} ({shard_name(shard)}), chunk {k + 1}/{len(bounds)} "
        f"(population rows {first + a} to {first + b - 1})"
    )
    try:
        return fut.result()
    except KilledWorker as exc:
        need = WORKER_BASE_BYTES + chunk_memory_bytes(study, b - a)
        raise ResourceError(
            f"{what}: the Dask workers running it died repeatedly ({exc}); most often they "
            f"ran out of memory: the chunk needs about {_mib(need)} per worker"
        ) from exc
    except Exception as exc:
        exc.add_note(f"while simulating {what}")
        raise


def _utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def run_simulate(
    study: Study,
    population: str | Path,
    shard: int,
    out_patients: str | Path,
    out_timecourse: str | Path,
    out_bands: str | Path,
    *,
    threads: int = 1,
    out_observations: str | Path | None = None,
    out_doses: str | Path | None = None,
) -> int:
    """Stage 2: simulate one shard of the population on Dask; return patients simulated.

    The shard's rows are split into chunks of ``execution.chunk_size`` patients, each
    chunk is a Dask task, and the results are concatenated in patient order, so the
    files do not depend on the number of workers or on the chunk size.

    ``out_observations`` (required when the study has ``outputs.observations``) gets
    the observations table (:func:`vtrial.run.chunk.observations_table`); it is empty,
    with the same columns and types, for a study without observations.
    """
    if out_observations is None and study.observations.outputs:
        raise ValueError("out_observations: required, the study has outputs.observations")
    if out_doses is None and study.has_dose_ledger:
        raise ValueError("out_doses: required, the study has dose modification or adherence")
    t0 = time.perf_counter()
    started = _utc_now()
    n_shards = int(study.execution["shards"])
    n_rows = population_rows(study)  # patients x arms for a twin crossover study
    start, stop = shard_rows(n_rows, n_shards, shard)
    rows = read_rows(population, start, stop).reset_index(drop=True)
    if len(rows) != stop - start:
        raise DataError(
            f"{population}: expected rows [{start}, {stop}) of {n_rows}, "
            f"got {len(rows)}; rerun sample_population"
        )
    chunk = int(study.execution["chunk_size"])
    bounds = [(i, min(i + chunk, len(rows))) for i in range(0, len(rows), chunk)]
    log.info(
        "shard %d/%d: %d patients in %d chunk(s), %d worker(s)",
        shard,
        n_shards,
        len(rows),
        len(bounds),
        threads,
    )
    largest = max((b - a for a, b in bounds), default=0)
    # refuse before compiling or starting any worker: a chunk that cannot fit would kill
    # workers over and over (or they would never start) instead of failing clearly
    check_chunk_memory(
        study, shard, largest, worker_memory_limit(study.execution), where="execution"
    )
    # compile (or load the cached kernel) once here, before the workers need it
    # (the engine says so while it compiles: vtrial.infra.progress.Heartbeat)
    simulate_patients(study, rows.iloc[:1], threads=1)
    parts: list[tuple[pd.DataFrame, pd.DataFrame, sketch.Sketch, pd.DataFrame, pd.DataFrame]] = []
    if bounds:
        with dask_client(study.execution, threads=threads) as client:
            check_chunk_memory(
                study, shard, largest, client_memory_limit(client), where="connected workers"
            )
            futures = [
                client.submit(_simulate_chunk, study, rows.iloc[a:b], pure=False) for a, b in bounds
            ]
            results: dict[int, Any] = {}
            progress = Progress(len(rows), label=f"shard {shard}", logger=log)
            with progress.shown():
                for k, fut in in_completion_order(futures):  # chunks as they finish
                    results[k] = _chunk_result(fut, study, shard, k, bounds, start)
                    progress.update(len(results[k][0]))
            parts = [results[k] for k in range(len(bounds))]  # patient order
    patients = pd.concat([x[0] for x in parts], ignore_index=True)
    timecourse = pd.concat([x[1] for x in parts], ignore_index=True)
    bands = sketch.merge([x[2] for x in parts])
    meta = _meta(
        study, stage="simulate", shard=shard, shards=n_shards, rows=[start, stop], started=started
    )
    if out_observations is not None:
        observations = pd.concat([x[3] for x in parts], ignore_index=True)
        write_parquet(observations, out_observations, meta=meta, schema=OBSERVATION_SCHEMA)
    if out_doses is not None:
        doses = pd.concat([x[4] for x in parts], ignore_index=True)
        write_parquet(doses, out_doses, meta=meta, schema=DOSES_SCHEMA)
    write_parquet(timecourse, out_timecourse, meta=meta)
    write_parquet(sketch.to_frame(bands), out_bands, meta=meta)
    write_parquet(patients, out_patients, meta=meta)
    failed = int((patients["solver_status"] != "ok").sum())
    if failed:  # reported by id (they are rows of the patients table too, never dropped)
        bad = patients.loc[patients["solver_status"] != "ok"]
        log.warning(
            "shard %d: solver failure(s), (replicate, patient_id, solver_status, n_steps): %s%s",
            shard,
            ", ".join(
                f"({r}, {p}, {s}, {n})"
                for r, p, s, n in bad[["replicate", "patient_id", "solver_status", "n_steps"]]
                .head(20)
                .itertuples(index=False)
            ),
            f" and {failed - 20} more" if failed > 20 else "",
        )
    dt = time.perf_counter() - t0
    log.info(
        "shard %d: %d patients in %.2f s (%.0f patients/s), %d solver failure(s)",
        shard,
        len(patients),
        dt,
        len(patients) / dt if dt > 0 else float("nan"),
        failed,
    )
    return len(patients)


def summaries(
    study: Study, patients: pd.DataFrame, bands: sketch.Sketch
) -> dict[str, pd.DataFrame]:
    """Compute the summary tables from the full patients table and the merged band sketch."""
    arms = study.arm_names
    events = list(study.adverse_events)
    patients = patients.sort_values(["replicate", "patient_id"], kind="stable")
    eps = study.endpoint_kinds()
    tests = {k: v.test for k, v in study.endpoints.items() if v.test is not None}
    out = {
        "exposure": exposure_summary(
            patients, metrics=["cmax", "tmax", "auc", "ctrough"], arms=arms
        ),
        "efficacy": efficacy_summary(
            patients, endpoints=eps, arms=arms, control=study.control_arm, tests=tests
        ),
        "safety": safety_summary(
            _grades_as_int(patients, events),
            events=events,
            arms=arms,
            horizon=study.end,
            censor="dropout_time" if study.dropout is not None else None,
        ),
        "bands": bands_table(study, bands),
    }
    out.update(success_tables(study.success, patients, eps, arms))  # trial, success (if declared)
    return out


def _grades_as_int(patients: pd.DataFrame, events: Sequence[str]) -> pd.DataFrame:
    """Grades of failed patients are null; the safety summary excludes those rows."""
    df = patients.copy()
    for ev in events:
        col = f"ae_{ev}_grade"
        df[col] = df[col].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    return df


def run_aggregate(
    study: Study,
    patient_parts: Sequence[str | Path],
    band_parts: Sequence[str | Path],
    outputs: Mapping[str, str | Path],
    *,
    population: str | Path | None = None,
) -> dict[str, int]:
    """Stage 3: summary tables (Parquet, with a CSV copy beside each).

    Band sketches are merged in shard order (exact counts; sums in a fixed order).
    The design's tables (:func:`vtrial.population.design.summary_tables`: individual effects of
    a twin crossover study, which need ``population``, and the parameter draws of
    ``study.uncertainty``) are written too, to ``outputs[name]``.
    """
    patients = read_parts(patient_parts)
    log.info("aggregate: %d patients from %d shard(s)", len(patients), len(patient_parts))
    bands = sketch.merge([sketch.from_frame(pd.read_parquet(p)) for p in band_parts])
    tables = summaries(study, patients, bands)
    pop = pd.read_parquet(population) if population is not None else None
    tables.update(design_tables(study, patients, pop))
    meta = _meta(study, stage="aggregate")
    rows = {}
    for name, df in tables.items():
        path = Path(outputs[name])
        write_parquet(df, path, meta=meta)
        write_text(df.to_csv(index=False), path.with_suffix(".csv"))
        rows[name] = len(df)
    log.info("summaries: %s", rows)
    return rows


#: kinds of report plots (file-name prefix -> title), in report order; each kind has its
#: caption ``workflow/report/plot_<kind>.rst`` in the Snakemake HTML report
PLOT_KINDS = {
    "bands": "Time courses (percentile bands)",
    "safety": "Adverse events by CTCAE grade",
    "exposure": "Exposure distributions",
    "forest": "Efficacy differences (forest plot)",
    "exposure_response": "Exposure-response",
    "km": "Kaplan-Meier curves",
    "success": "Probability of success",
    "individual_effects": "Individual treatment effects",
}


def report_groups(study: Study) -> dict[str, list[str]]:
    """File names of the report plots a study produces (known before running), by plot
    kind (:data:`PLOT_KINDS`; only kinds with a file, in report order)."""
    exposed = bool(study.exposure.output)
    compared = [k for k in study.endpoint_kinds().values() if k != "time_to_event"]
    forest = study.control_arm is not None and bool(compared) and len(study.arm_names) > 1
    groups = {
        "bands": [f"bands_{o}.png" for o in study.timecourse.outputs],
        "safety": [f"safety_{e}.png" for e in study.adverse_events],
        "exposure": ["exposure_cmax.png", "exposure_auc.png"] if exposed else [],
        # hazard ratios are not drawn on a difference axis
        "forest": ["forest.png"] if forest else [],
        "exposure_response": (
            [f"exposure_response_{e}.png" for e in study.adverse_events] if exposed else []
        ),
        "km": [f"km_{e}.png" for e in _tte_endpoints(study)],  # vtrial.report.trial_plots
        "success": ["success.png"] if study.success else [],
        "individual_effects": [f"individual_effects_{e}.png" for e in _effect_endpoints(study)],
    }
    return {k: groups[k] for k in PLOT_KINDS if groups[k]}


def report_files(study: Study) -> list[str]:
    """File names of the report plots a study produces, in report order."""
    return [name for names in report_groups(study).values() for name in names]


#: summary tables shown as pages of the HTML report (name -> title), in report order
TABLE_TITLES = {
    "population": "Virtual population by arm",
    "exposure": "Exposure by arm",
    "efficacy": "Efficacy by arm and difference vs control",
    "safety": "Adverse events by CTCAE grade and arm",
    "bands": "Percentile bands over time",
    "trial": "Success criteria per replicate trial",
    "success": "Probability of success",
    "individual_effects": "Individual treatment effects",
    "individual_predictors": "Covariates predicting the individual effects",
    "subject_effects": "Each patient's twin: individual effects with their uncertainty",
    "uncertainty": "Parameter draws per replicate (uncertainty)",
    "twins": "Twins of the dataset's subjects (MAP estimates by random effect)",
}


def page_tables(study: Study) -> list[str]:
    """Summary tables of a study, each a page of the HTML report (report/tables/)."""
    have = {"population", *SUMMARY_TABLES, *summary_tables(study), *table_names(study.success)}
    if study.twins is not None:  # summary/twins.parquet (vtrial.run.twin_stage)
        have.add("twins")
    return [name for name in TABLE_TITLES if name in have]


def run_pages(study: Study, tables: Mapping[str, str | Path], outdir: str | Path) -> list[Path]:
    """Stage 4: the report's HTML pages: ``tables/<name>.html`` per summary table and
    ``study.html`` (:mod:`vtrial.report.pages`); returns the files written."""
    from vtrial.report.pages import study_page, table_page

    outdir = Path(outdir)
    written = []
    for name in page_tables(study):
        path = outdir / "tables" / f"{name}.html"
        note = f"summary/{name}.parquet (full precision; also summary/{name}.csv)"
        write_text(
            table_page(pd.read_parquet(tables[name]), title=TABLE_TITLES[name], note=note),
            path,
        )
        written.append(path)
    page = study_page(
        study.name,
        study.source,
        [c.source for c in study.model.components],
        study.sha256,
    )
    write_text(page, outdir / "study.html")
    return [*written, outdir / "study.html"]


def _effect_endpoints(study: Study) -> list[str]:
    """Endpoints with an individual-effects plot: continuous and responder endpoints of
    a twin crossover study (vtrial.analysis.effects)."""
    if not is_twin(study) or study.control_arm is None:
        return []
    return [k for k, v in study.endpoint_kinds().items() if v in ("continuous", "binary")]


def _tte_endpoints(study: Study) -> list[str]:
    return [k for k, v in study.endpoint_kinds().items() if v == "time_to_event"]


def run_report(
    study: Study,
    summary: Mapping[str, str | Path],
    patient_parts: Sequence[str | Path],
    outdir: str | Path,
) -> list[Path]:
    """Stage 4: plots."""
    from vtrial.report.plots import make_report  # matplotlib only where plots are made

    tables = {k: pd.read_parquet(v) for k, v in summary.items()}
    patients = read_parts(patient_parts)
    expected = report_files(study)
    log.info("report: drawing %d plot(s) into %s", len(expected), outdir)
    units = {**study.model.output_units, **study.endpoint_units()}
    exp_out = study.exposure.output or "CP"
    paths = make_report(
        tables,
        patients,
        outdir=outdir,
        arms=study.arm_names,
        control=study.control_arm,
        units=units,
        events={e: f"ae_{e}_grade" for e in study.adverse_events},
        exposure_unit=units.get(exp_out, ""),
        targets=dict(study.exposure.targets),
        grades={e: ae.n_grades for e, ae in study.adverse_events.items()},
        references=grade_references(study.adverse_events),
        descriptions={k: o.description for k, o in study.model.outputs.items()},
    )
    from vtrial.report.trial_plots import trial_plots

    paths += trial_plots(  # Kaplan-Meier, probability of success, individual effects
        patients,
        tables.get("success"),
        time_to_event=_tte_endpoints(study),
        arms=study.arm_names,
        outdir=outdir,
        control=study.control_arm,
        effects={e: effect_options(study.endpoints[e]) for e in _effect_endpoints(study)},
        units=units,
    )
    missing = sorted(str(p) for p in {Path(outdir) / f for f in expected} - set(map(Path, paths)))
    if missing:
        raise RuntimeError(f"report: plots not produced: {missing}")
    return [Path(p) for p in paths]


def run_manifest(
    study: Study, outputs: Sequence[str | Path], out: str | Path, *, started: float | None = None
) -> dict[str, Any]:
    """Stage 5: ``manifest.json`` listing every output with rows and content hash.

    Besides the outputs it records the host, the inputs' hashes (study file, model
    files), the study file's text and folder, ``started`` (``started`` if given, else
    the earliest start of the stages that wrote the Parquet outputs, from their
    footers) and ``finished`` (now), in UTC.
    """
    entries = []
    starts: list[str] = []
    root = Path(out).parent
    for p in sorted(Path(x) for x in outputs):
        entry: dict[str, Any] = {
            "path": str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
        }
        if p.suffix == ".parquet":
            df = pd.read_parquet(p)
            entry.update(rows=len(df), content_sha256=table_hash(df))
            with contextlib.suppress(DataError):
                if isinstance(s := read_provenance(p).get("started"), str):
                    starts.append(s)
        else:
            entry.update(file_sha256=file_sha256(p))
        entry["bytes"] = p.stat().st_size
        entries.append(entry)
    manifest = {
        **provenance(),
        "study": study.name,
        "study_sha256": study.sha256,
        "seed": study.seed,
        "source": study.source,
        "inputs": {
            "study_file_sha256": file_sha256(study.source) if Path(study.source).exists() else None,
            "models": {c.name: file_sha256(c.source) for c in study.model.components},
            # data files the study reads (uncertainty covariance, population.resample.table,
            # the fitted files of model.from_fit)
            "data": {str(f): file_sha256(f) for f in study.data_files},
        },
        # the study with its defaults, in the file's key order (the order matters: a
        # responder names an endpoint declared before it)
        "config": json.loads(json.dumps(study.data, allow_nan=False)),
        # units of the model outputs and the endpoints (vtrial describe prints them)
        "units": {**study.model.output_units, **study.endpoint_units()},
        # the study file as run (vtrial verify --recompute rebuilds the study from it)
        "study_file": Path(study.source).read_text() if Path(study.source).exists() else None,
        "base_dir": str(study.base_dir.resolve()),
        "host": platform.node(),
        "created": _utc_now(),
        "started": min(starts) if starts else None,
        "finished": _utc_now(),
        "outputs": entries,
    }
    if started is not None:
        manifest["started"] = _dt.datetime.fromtimestamp(started, _dt.UTC).isoformat(
            timespec="seconds"
        )
    write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", out)
    return manifest


def setup_logging(path: str | Path | None = None, *, level: int = logging.INFO) -> None:
    """Log vtrial messages to ``path`` (and to stderr), one line per record with time.

    With a ``path`` (a job's log file) an uncaught exception is logged there too, with
    its traceback, so the log of a failed job ends with the error that ended it.
    """
    logger = logging.getLogger("vtrial")
    logger.setLevel(level)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w"))
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    if path is not None:
        previous = sys.excepthook

        def log_uncaught(
            kind: type[BaseException], exc: BaseException, tb: TracebackType | None
        ) -> None:
            if issubclass(kind, KeyboardInterrupt):
                previous(kind, exc, tb)
                return
            text = "".join(traceback.format_exception(kind, exc, tb)).rstrip()
            logger.critical("failed:\n%s", text)  # to the log file and to stderr

        sys.excepthook = log_uncaught
