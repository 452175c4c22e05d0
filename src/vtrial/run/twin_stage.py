"""The twins stage: every dataset subject's twin estimated in shards, each shard in
chunks on Dask (``outputs.twins``), and ``vtrial twin fit``.

A study with ``outputs.twins`` (and ``population.dataset``: the twins are estimated
from each subject's recorded doses and observations, whether the study simulates the
records or its arms) gets one ``twins`` job per shard (``execution.shards``; shard
``i`` estimates the contiguous range of subjects :func:`vtrial.run.stages.shard_rows`
gives it, in file order) and a ``twins_summary`` job:

- ``twins/part-NNNNN.parquet``: one row per subject, in file order, with the columns
  of :data:`TWIN_COLUMNS` (``ID``, the objective ``ofv`` at the estimate, ``status``
  (``ok`` or what went wrong), ``n_iter``, ``n_eval``, ``n_starts``, ``n_obs``), then
  ``eta_<P>`` and ``se_<P>`` of each parameter with a random effect
  (:class:`vtrial.estimation.map.CohortFit`), then the lower triangle of each
  subject's Laplace covariance ``C`` (the posterior ``N(eta_hat, C)``), ``cov_<P>_<Q>``
  row by row (:func:`vtrial.population.twin_draws.covariance_columns`; NaN when the
  Hessian is not positive definite);
- ``summary/twins.parquet`` (and ``.csv``): one row per random effect,
  :func:`twin_summary` over every shard's subjects (the eta-shrinkage of the whole
  cohort, not of a shard).

Within a shard the subjects go to Dask in chunks of at most :data:`TASK_SUBJECTS`
(fewer with a smaller ``execution.chunk_size``, or to keep every worker busy); with
one local worker, or a shard of at most :data:`TASK_SUBJECTS` subjects, they are
estimated in the job's own process (a local cluster would take longer to start than
they take).
A subject's estimate depends only on its own records (:mod:`vtrial.estimation.map`),
and the summary is computed from the table in file order, so every table is
bit-identical whatever the number of shards, workers or chunks.

With ``population.dataset.parameters: twins`` the population stage reads every
shard's table (the workflow makes ``sample_population`` wait for all twins jobs, and
every simulate job waits for the population) and simulates the twins under the
study's arms or records (:mod:`vtrial.population.twin_draws`).

What keeps a study from estimating (:func:`vtrial.run.twins.twin_problems`) is
reported, every problem at once, before anything is estimated or written: by the
workflow when it loads the study, by ``vtrial validate`` and by ``vtrial twin fit``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from vtrial.errors import ConfigError, DataError, Problem, ResourceError
from vtrial.estimation.map import CohortData, Prior, fit_cohort, shrinkage
from vtrial.infra.progress import Progress
from vtrial.population.twin_draws import covariance_columns
from vtrial.run.io import provenance, read_parts, write_parquet, write_text
from vtrial.run.parallel import dask_client, in_completion_order
from vtrial.run.stages import shard_name, shard_rows
from vtrial.run.twins import twin_cohort, twin_prior, twin_problems, typical_prediction_problems
from vtrial.study.config import Study

__all__ = [
    "SUMMARY_COLUMNS",
    "TASK_SUBJECTS",
    "TWIN_COLUMNS",
    "check_twins",
    "estimate_twins",
    "run_twin_summary",
    "run_twins",
    "shard_subjects",
    "subject_indices",
    "twin_lines",
    "twin_schema",
    "twin_summary",
    "twin_threads",
    "write_twin_fit",
]

log = logging.getLogger("vtrial")

#: most subjects per Dask task: a MAP fit costs tens of batched simulations of the
#: subject (about 50 ms for the vancomycin example), so a task of 32 takes seconds
TASK_SUBJECTS = 32
#: columns of a twins table before ``eta_<P>`` and ``se_<P>`` of each random effect
TWIN_COLUMNS = ("ID", "ofv", "status", "n_iter", "n_eval", "n_starts", "n_obs")
#: columns of ``summary/twins.parquet`` (one row per random effect)
SUMMARY_COLUMNS = (
    "parameter",
    "distribution",
    "omega",
    "n_subjects",
    "n_ok",
    "eta_mean",
    "eta_sd",
    "shrinkage",
    "se_median",
)


def check_twins(study: Study) -> None:
    """Refuse a study whose twins cannot be estimated.

    Raises
    ------
    ConfigError
        Every problem of :func:`vtrial.run.twins.twin_problems` (no dataset, no random
        effect, inter-occasion variability, an observed output without residual error,
        observation records without a likelihood), naming the key or the dataset's row.
    """
    problems = twin_problems(study)
    if problems:
        raise ConfigError(problems)


def _subject_ids(study: Study) -> np.ndarray:
    subjects = study.subjects
    if subjects is None or subjects.dataset is None:
        check_twins(study)  # raises: no dataset
    assert subjects is not None
    assert subjects.dataset is not None
    return subjects.dataset.subjects


def shard_subjects(study: Study, shard: int) -> range:
    """Subjects (indices in file order) of a shard of the twins stage: the contiguous
    range :func:`vtrial.run.stages.shard_rows` gives ``shard`` of ``execution.shards``
    (empty when there are more shards than subjects)."""
    start, stop = shard_rows(len(_subject_ids(study)), int(study.execution["shards"]), shard)
    return range(start, stop)


def twin_threads(study: Study) -> int:
    """Threads (cores) a twins job uses: ``execution.workers`` local Dask workers, or 1
    when its shard is estimated in the job's process (a shard of at most
    :data:`TASK_SUBJECTS` subjects, see :func:`estimate_twins`) or when the workers are
    elsewhere (``execution.scheduler_address`` or ``execution.cluster``)."""
    ex = study.execution
    largest = -(-len(_subject_ids(study)) // int(ex["shards"]))
    if not _local(ex) or largest <= TASK_SUBJECTS:
        return 1
    return int(ex["workers"])


def subject_indices(study: Study, ids: Sequence[Any]) -> list[int]:
    """Indices (file order, sorted, each once) of the subjects with IDs ``ids``, given as
    the dataset has them or as text (the command line's ``--subjects 1 7``).

    Raises
    ------
    ConfigError
        Naming the IDs that are not the dataset's.
    """
    known = _subject_ids(study)
    index = {str(v): i for i, v in enumerate(known)}
    out, missing = set(), []
    for v in ids:
        i = index.get(str(v))
        if i is None and isinstance(v, str):  # "7.0" or " 7" for the ID 7
            try:
                i = index.get(str(int(float(v))))
            except ValueError:
                i = None
        if i is None:
            missing.append(v)
        else:
            out.add(i)
    if missing:
        ds = study.population.dataset
        name = "" if ds is None else f" {ds.path}"
        shown = ", ".join(str(x) for x in known[:10]) + (", ..." if known.size > 10 else "")
        raise ConfigError(
            [
                Problem(
                    study.source,
                    "subjects",
                    f"not IDs of the dataset{name} ({known.size} subjects: {shown}), got {missing}",
                )
            ]
        )
    return sorted(out)


def twin_schema(study: Study) -> pa.Schema:
    """Arrow schema of a twins table (fixed, also when a shard has no subject): the
    columns of :data:`TWIN_COLUMNS` (``ID`` typed as the dataset's IDs), then
    ``eta_<P>`` and ``se_<P>`` (float64) in the order of ``model.iiv.omega``, then the
    Laplace covariance's lower triangle ``cov_<P>_<Q>`` (float64,
    :func:`vtrial.population.twin_draws.covariance_columns`)."""
    ids = _subject_ids(study)
    names = twin_prior(study).names
    return pa.schema(
        [
            ("ID", pa.array(ids[:1]).type if ids.size else pa.int64()),
            ("ofv", pa.float64()),
            ("status", pa.string()),
            ("n_iter", pa.int64()),
            ("n_eval", pa.int64()),
            ("n_starts", pa.int64()),
            ("n_obs", pa.int64()),
            *[(f"eta_{n}", pa.float64()) for n in names],
            *[(f"se_{n}", pa.float64()) for n in names],
            *[(c, pa.float64()) for c in covariance_columns(names)],
        ]
    )


def _fit_chunk(cohort: tuple[CohortData, Prior], subjects: Sequence[int]) -> pd.DataFrame:
    """Dask task: the twins of some subjects (:func:`vtrial.estimation.map.fit_cohort`),
    with the lower triangle of each one's Laplace covariance."""
    data, prior = cohort
    fit = fit_cohort(data, prior, subjects=list(subjects))
    rows, cols = np.tril_indices(prior.k)
    lower = np.array([f.covariance[rows, cols] for f in fit.fits]).reshape(len(fit.fits), -1)
    names = covariance_columns(prior.names)
    return fit.table.assign(**{c: lower[:, j] for j, c in enumerate(names)})


def _local(execution: Mapping[str, Any]) -> bool:
    return not (execution.get("scheduler_address") or execution.get("cluster"))


def estimate_twins(
    study: Study,
    subjects: Sequence[int] | None = None,
    *,
    threads: int = 1,
    execution: Mapping[str, Any] | None = None,
    label: str = "twins",
) -> pd.DataFrame:
    """The twins table of the study's subjects (all, or those at ``subjects``: indices
    in file order), in file order, with the types of :func:`twin_schema`.

    The subjects go to Dask in chunks of at most :data:`TASK_SUBJECTS` (a local cluster
    of ``threads`` single-threaded workers, or ``execution.scheduler_address`` /
    ``execution.cluster``); without a scheduler or cluster, with ``threads`` 1 or at
    most :data:`TASK_SUBJECTS` subjects (a few seconds of work, less than a local
    cluster takes to start), they are estimated in this process. The table depends on
    neither. ``execution`` replaces the study's section (e.g. a local cluster instead
    of its scheduler).

    Raises
    ------
    ConfigError
        :func:`check_twins`, and observations of these subjects whose typical
        prediction has no likelihood
        (:func:`vtrial.run.twins.typical_prediction_problems`), every one of them,
        before anything is estimated.
    """
    ex = study.execution if execution is None else dict(execution)
    data, prior = twin_cohort(study)  # raises twin_problems
    idx = sorted(set(range(data.n_subjects) if subjects is None else (int(s) for s in subjects)))
    bad = [s for s in idx if not 0 <= s < data.n_subjects]
    if bad:
        raise ValueError(f"subjects: indices in [0, {data.n_subjects}), got {bad}")
    # the check also compiles (or loads) the kernel here, before any worker needs it
    problems = typical_prediction_problems(study, data, prior, subjects=idx)
    if problems:
        raise ConfigError(problems)
    schema = twin_schema(study)
    here = _local(ex) and (int(threads) <= 1 or len(idx) <= TASK_SUBJECTS)
    # chunks: at most TASK_SUBJECTS (and chunk_size), small enough to keep every worker busy
    chunk = min(TASK_SUBJECTS, int(ex.get("chunk_size", TASK_SUBJECTS)))
    if not here:
        chunk = min(chunk, -(-len(idx) // max(1, int(threads))))
    chunk = max(1, chunk)
    bounds = [(a, min(a + chunk, len(idx))) for a in range(0, len(idx), chunk)]
    ids = data.events.subjects
    tables: dict[int, pd.DataFrame] = {}
    progress = Progress(len(idx), label=label, logger=log, unit="subject")
    if bounds and here:
        with progress.shown():
            for k, (a, b) in enumerate(bounds):
                tables[k] = _fit_chunk((data, prior), idx[a:b])
                progress.update(b - a)
    elif bounds:
        with dask_client(ex, threads=threads) as client:
            [cohort] = client.scatter([(data, prior)], broadcast=True)
            futures = [client.submit(_fit_chunk, cohort, idx[a:b], pure=False) for a, b in bounds]
            with progress.shown():
                for k, fut in in_completion_order(futures):
                    a, b = bounds[k]
                    what = (
                        f"{label}, chunk {k + 1}/{len(bounds)} "
                        f"(subjects {ids[idx[a]]} to {ids[idx[b - 1]]})"
                    )
                    tables[k] = _chunk_result(fut, what)
                    progress.update(b - a)
    if not tables:
        return schema.empty_table().to_pandas()
    table = pd.concat([tables[k] for k in range(len(bounds))], ignore_index=True)
    # the types of the file (Arrow): the table read back from Parquet is this table
    return pa.Table.from_pandas(table, schema=schema, preserve_index=False).to_pandas()


def _chunk_result(fut: Any, what: str) -> pd.DataFrame:
    """A chunk's table; a failure names the chunk and its subjects."""
    from distributed import KilledWorker

    try:
        out: pd.DataFrame = fut.result()
    except KilledWorker as exc:
        raise ResourceError(
            f"{what}: the Dask workers estimating it died repeatedly ({exc}); most often "
            "they ran out of memory"
        ) from exc
    except Exception as exc:
        exc.add_note(f"while estimating {what}")
        raise
    return out


def _meta(study: Study, **extra: Any) -> dict[str, Any]:
    return provenance(
        study=study.name,
        study_sha256=study.sha256,
        seed=study.seed,
        source=study.source,
        method=study.twins.method if study.twins is not None else "map",
        **extra,
    )


def _utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _failures(table: pd.DataFrame, what: str) -> int:
    """Log the subjects whose fit is not ``ok`` (they keep their rows); their number."""
    bad = table.loc[table["status"] != "ok"]
    if len(bad):
        shown = "; ".join(f"{i}: {s}" for i, s in bad[["ID", "status"]].head(20).itertuples(False))
        more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
        log.warning("%s: %d fit(s) not ok (ID: status): %s%s", what, len(bad), shown, more)
    return len(bad)


def run_twins(study: Study, shard: int, out: str | Path, *, threads: int = 1) -> int:
    """The twins stage for one shard: estimate its subjects (:func:`shard_subjects`) on
    Dask and write ``twins/part-NNNNN.parquet`` atomically with provenance (an empty
    table with the same columns for a shard without subjects); return the rows.

    Raises
    ------
    ConfigError
        As :func:`estimate_twins`, before anything is written.
    """
    t0 = time.perf_counter()
    started = _utc_now()
    n_shards = int(study.execution["shards"])
    rng = shard_subjects(study, shard)
    log.info(
        "twins shard %d/%d (%s): subjects %d to %d of the dataset, %d worker(s)",
        shard,
        n_shards,
        shard_name(shard),
        rng.start + 1,
        rng.stop,
        threads,
    )
    table = estimate_twins(study, rng, threads=threads, label=f"twins shard {shard}")
    meta = _meta(
        study,
        stage="twins",
        shard=shard,
        shards=n_shards,
        subjects=[rng.start, rng.stop],
        started=started,
    )
    write_parquet(table, out, meta=meta, schema=twin_schema(study))
    failed = _failures(table, f"twins shard {shard}")
    dt = time.perf_counter() - t0
    log.info(
        "twins shard %d: %d subjects in %.2f s (%.1f subjects/s), %d fit(s) not ok",
        shard,
        len(table),
        dt,
        len(table) / dt if dt > 0 else math.nan,
        failed,
    )
    return len(table)


def twin_summary(study: Study, table: pd.DataFrame) -> pd.DataFrame:
    """One row per random effect (in the order of ``model.iiv.omega``) of a twins
    table (every subject, in file order): ``parameter``, ``distribution``, ``omega``
    (its variance), ``n_subjects``, ``n_ok`` (fits whose status is ``ok``), then over the
    ``ok`` fits ``eta_mean``, ``eta_sd`` (SD with n - 1), ``shrinkage`` (NONMEM's
    eta-shrinkage ``1 - SD(eta) / sqrt(omega)``,
    :func:`vtrial.estimation.map.shrinkage`; NaN with fewer than 2) and ``se_median``.
    """
    prior = twin_prior(study)
    ok = (table["status"] == "ok").to_numpy(dtype=bool)
    eta = table[[f"eta_{n}" for n in prior.names]].to_numpy(dtype=np.float64)[ok]
    se = table[[f"se_{n}" for n in prior.names]].to_numpy(dtype=np.float64)[ok]
    shrink = shrinkage(eta, prior)
    n_ok = int(ok.sum())
    return pd.DataFrame(
        {
            "parameter": list(prior.names),
            "distribution": list(prior.distributions),
            "omega": np.diag(prior.omega).astype(np.float64),
            "n_subjects": np.full(prior.k, len(table), dtype=np.int64),
            "n_ok": np.full(prior.k, n_ok, dtype=np.int64),
            "eta_mean": eta.mean(axis=0) if n_ok else np.full(prior.k, np.nan),
            "eta_sd": eta.std(axis=0, ddof=1) if n_ok > 1 else np.full(prior.k, np.nan),
            "shrinkage": np.array([shrink[n] for n in prior.names], dtype=np.float64),
            "se_median": np.median(se, axis=0) if n_ok else np.full(prior.k, np.nan),
        },
        columns=list(SUMMARY_COLUMNS),
    )


def run_twin_summary(study: Study, parts: Sequence[str | Path], out: str | Path) -> int:
    """The summary of the twins stage: read every shard's table in shard order, check
    that together they hold every subject once, in file order, and write
    :func:`twin_summary` to ``out`` (``summary/twins.parquet``, with a ``.csv`` copy
    beside it); return the subjects.

    Raises
    ------
    DataError
        A subject missing, repeated or out of order (parts of another run).
    """
    table = read_parts(parts)
    ids = _subject_ids(study)
    got = table["ID"].to_numpy()
    if got.size != ids.size or not np.array_equal(got.astype(str), ids.astype(str)):
        raise DataError(
            f"twins: the {len(parts)} part file(s) hold {got.size} subjects, not the "
            f"dataset's {ids.size} in file order; rerun the twins stage"
        )
    summary = twin_summary(study, table)
    meta = _meta(study, stage="twins_summary", shards=len(parts))
    write_parquet(summary, out, meta=meta)
    write_text(summary.to_csv(index=False), Path(out).with_suffix(".csv"))
    log.info(
        "twins: %d subjects, %d ok; shrinkage %s",
        len(table),
        int(summary["n_ok"].iloc[0]) if len(summary) else 0,
        ", ".join(
            f"{p} {x:.3f}" for p, x in zip(summary["parameter"], summary["shrinkage"], strict=True)
        ),
    )
    return len(table)


def write_twin_fit(
    study: Study,
    out: str | Path,
    *,
    subjects: Sequence[Any] | None = None,
    workers: int = 1,
) -> dict[str, Path]:
    """``vtrial twin fit``: estimate the twins of the study's subjects (all, or those
    with IDs ``subjects``) on a local Dask cluster of ``workers`` (in this process with
    1) and write, in the folder ``out``, ``twins.parquet`` (the table of the twins
    stage's part files, every subject in one file) and ``summary.parquet``
    (:func:`twin_summary`), each with a ``.csv`` copy. Nothing is written unless
    every subject was estimated.

    Returns
    -------
    dict of str to Path
        ``twins`` and ``summary``: the Parquet files written.

    Raises
    ------
    ConfigError
        :func:`check_twins`, IDs that are not the dataset's, observations without a
        likelihood: every problem, before anything is estimated or written.
    """
    check_twins(study)
    idx = None if subjects is None else subject_indices(study, subjects)
    local = {
        k: v
        for k, v in study.execution.items()
        if k not in ("cluster", "memory_limit", "scheduler_address")
    }
    t0 = time.perf_counter()
    table = estimate_twins(study, idx, threads=workers, execution=local)
    summary = twin_summary(study, table)
    log.info("twins: %d subjects in %.2f s", len(table), time.perf_counter() - t0)
    folder = Path(out)
    meta = _meta(study, stage="twin_fit", subjects="all" if idx is None else len(idx))
    paths = {"twins": folder / "twins.parquet", "summary": folder / "summary.parquet"}
    write_parquet(table, paths["twins"], meta=meta, schema=twin_schema(study))
    write_text(table.to_csv(index=False), paths["twins"].with_suffix(".csv"))
    write_parquet(summary, paths["summary"], meta=meta)
    write_text(summary.to_csv(index=False), paths["summary"].with_suffix(".csv"))
    return paths


def twin_lines(summary_dir: str | Path) -> list[str]:
    """Lines of ``vtrial describe`` on ``summary/twins.parquet`` (none without it)."""
    path = Path(summary_dir) / "twins.parquet"
    if not path.exists():
        return []
    s = pd.read_parquet(path)
    if not len(s):
        return []
    n, ok = int(s["n_subjects"].iloc[0]), int(s["n_ok"].iloc[0])
    shrink = ", ".join(
        f"{p} {100 * x:.0f} %" if np.isfinite(x) else f"{p} n/a"
        for p, x in zip(s["parameter"], s["shrinkage"], strict=True)
    )
    return [
        "",
        f"twins (MAP): {n} subjects estimated, {ok} ok, {n - ok} not; "
        f"eta-shrinkage {shrink} (twins/, summary/twins.parquet)",
    ]
