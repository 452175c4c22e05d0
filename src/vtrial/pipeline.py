"""The stages of a study, as plain functions (the Snakemake rules only call these).

``sample_population -> simulate (per shard, Dask inside) -> aggregate -> report ->
manifest``. Each stage reads its inputs, computes, and writes its outputs atomically
with provenance; none imports snakemake, so every stage is usable and testable alone.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from vtrial import sketch, stats
from vtrial.config import Study, canonical_json
from vtrial.errors import DataError
from vtrial.io import (
    file_sha256,
    provenance,
    read_parts,
    read_rows,
    table_hash,
    write_parquet,
    write_text,
)
from vtrial.parallel import dask_client
from vtrial.population import sample_population
from vtrial.trial import OBSERVATION_COLUMNS, bands_table, simulate_chunk, simulate_patients

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


def _meta(study: Study, **extra: Any) -> dict[str, Any]:
    return provenance(
        study=study.name,
        study_sha256=study.sha256,
        seed=study.seed,
        source=study.source,
        **extra,
    )


def run_sample_population(study: Study, out: str | Path) -> int:
    """Stage 1: sample the population and write ``population.parquet``; return rows."""
    t0 = time.perf_counter()
    pop = sample_population(study)
    write_parquet(
        pop, out, meta=_meta(study, stage="sample_population"), row_group_size=POPULATION_ROW_GROUP
    )
    log.info(
        "sampled %d patients (%d replicate(s) x %d) in %.2f s",
        len(pop),
        study.replicates,
        study.size,
        time.perf_counter() - t0,
    )
    return len(pop)


def _simulate_chunk(
    study: Study, rows: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, sketch.Sketch, pd.DataFrame]:
    """Dask task: simulate one chunk of population rows with one numba thread."""
    return simulate_chunk(study, rows, threads=1)


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
) -> int:
    """Stage 2: simulate one shard of the population on Dask; return patients simulated.

    The shard's rows are split into chunks of ``execution.chunk_size`` patients, each
    chunk is a Dask task, and the results are concatenated in patient order, so the
    files do not depend on the number of workers or on the chunk size.

    ``out_observations`` (required when the study has ``outputs.observations``) gets
    the observations table (:func:`vtrial.trial.observations_table`); it is empty,
    with the same columns and types, for a study without observations.
    """
    if out_observations is None and study.observed_outputs:
        raise ValueError("out_observations: required, the study has outputs.observations")
    t0 = time.perf_counter()
    n_shards = int(study.execution["shards"])
    start, stop = shard_rows(study.n_patients, n_shards, shard)
    rows = read_rows(population, start, stop).reset_index(drop=True)
    if len(rows) != stop - start:
        raise DataError(
            f"{population}: expected rows [{start}, {stop}) of {study.n_patients}, "
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
    # compile (or load the cached kernel) once here, before the workers need it
    t_c = time.perf_counter()
    simulate_patients(study, rows.iloc[:1], threads=1)
    log.info("kernel ready in %.2f s (compile or cache load)", time.perf_counter() - t_c)
    parts: list[tuple[pd.DataFrame, pd.DataFrame, sketch.Sketch, pd.DataFrame]] = []
    if bounds:
        with dask_client(study.execution, threads=threads) as client:
            futures = [
                client.submit(_simulate_chunk, study, rows.iloc[a:b], pure=False) for a, b in bounds
            ]
            for k, fut in enumerate(futures):
                parts.append(fut.result())
                log.info("chunk %d/%d done (%d patients)", k + 1, len(futures), len(parts[-1][0]))
    patients = pd.concat([p for p, _, _, _ in parts], ignore_index=True)
    timecourse = pd.concat([t for _, t, _, _ in parts], ignore_index=True)
    bands = sketch.merge([b for _, _, b, _ in parts])
    meta = _meta(study, stage="simulate", shard=shard, shards=n_shards, rows=[start, stop])
    if out_observations is not None:
        observations = pd.concat([o for _, _, _, o in parts], ignore_index=True)
        write_parquet(observations, out_observations, meta=meta, schema=OBSERVATION_SCHEMA)
    write_parquet(timecourse, out_timecourse, meta=meta)
    write_parquet(sketch.to_frame(bands), out_bands, meta=meta)
    write_parquet(patients, out_patients, meta=meta)
    failed = int((patients["solver_status"] != "ok").sum())
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
    events = list(study.data["adverse_events"])
    patients = patients.sort_values(["replicate", "patient_id"], kind="stable")
    eps = study.endpoint_kinds()
    out = {
        "exposure": stats.exposure_summary(
            patients, metrics=["cmax", "tmax", "auc", "ctrough"], arms=arms
        ),
        "efficacy": stats.efficacy_summary(
            patients, endpoints=eps, arms=arms, control=study.control_arm
        ),
        "safety": stats.safety_summary(
            _grades_as_int(patients, events),
            events=events,
            arms=arms,
            horizon=float(study.data["simulation"]["end"]),
        ),
        "bands": bands_table(study, bands),
    }
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
) -> dict[str, int]:
    """Stage 3: summary tables (Parquet, with a CSV copy beside each).

    Band sketches are merged in shard order (exact counts; sums in a fixed order).
    """
    patients = read_parts(patient_parts)
    bands = sketch.merge([sketch.from_frame(pd.read_parquet(p)) for p in band_parts])
    tables = summaries(study, patients, bands)
    meta = _meta(study, stage="aggregate")
    rows = {}
    for name, df in tables.items():
        path = Path(outputs[name])
        write_parquet(df, path, meta=meta)
        write_text(df.to_csv(index=False), path.with_suffix(".csv"))
        rows[name] = len(df)
    log.info("summaries: %s", rows)
    return rows


def report_files(study: Study) -> list[str]:
    """File names of the report plots a study produces (known before running)."""
    outs = list(study.data["outputs"]["timecourse"]["outputs"])
    files = [f"bands_{o}.png" for o in outs]
    files += [f"safety_{e}.png" for e in study.data["adverse_events"]]
    if study.data["exposure"].get("output"):
        files += ["exposure_cmax.png", "exposure_auc.png"]
    if study.control_arm is not None and study.data["endpoints"] and len(study.arm_names) > 1:
        files.append("forest.png")
    if study.data["exposure"].get("output"):
        files += [f"exposure_response_{e}.png" for e in study.data["adverse_events"]]
    return files


def run_report(
    study: Study,
    summary: Mapping[str, str | Path],
    patient_parts: Sequence[str | Path],
    outdir: str | Path,
) -> list[Path]:
    """Stage 4: plots."""
    from vtrial.report import make_report  # matplotlib only where plots are made

    tables = {k: pd.read_parquet(v) for k, v in summary.items()}
    patients = read_parts(patient_parts)
    units = study.model.output_units
    exp_out = study.data["exposure"].get("output") or "CP"
    paths = make_report(
        tables,
        patients,
        outdir=outdir,
        arms=study.arm_names,
        control=study.control_arm,
        units=units,
        events={e: f"ae_{e}_grade" for e in study.data["adverse_events"]},
        exposure_unit=units.get(exp_out, ""),
    )
    expected = {Path(outdir) / f for f in report_files(study)}
    missing = sorted(str(p) for p in expected - {Path(p) for p in paths})
    if missing:
        raise RuntimeError(f"report: plots not produced: {missing}")
    return [Path(p) for p in paths]


def run_manifest(
    study: Study, outputs: Sequence[str | Path], out: str | Path, *, started: float | None = None
) -> dict[str, Any]:
    """Stage 5: ``manifest.json`` listing every output with rows and content hash."""
    entries = []
    root = Path(out).parent
    for p in sorted(Path(x) for x in outputs):
        entry: dict[str, Any] = {
            "path": str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
        }
        if p.suffix == ".parquet":
            df = pd.read_parquet(p)
            entry.update(rows=len(df), content_sha256=table_hash(df))
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
        },
        "config": json.loads(canonical_json(study.data)),
        "host": platform.node(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "outputs": entries,
    }
    if started is not None:
        manifest["started"] = _dt.datetime.fromtimestamp(started, _dt.UTC).isoformat(
            timespec="seconds"
        )
    write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", out)
    return manifest


def setup_logging(path: str | Path | None = None, *, level: int = logging.INFO) -> None:
    """Log vtrial messages to ``path`` (and to stderr), one line per record with time."""
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
