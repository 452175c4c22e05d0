"""Scale-out settings and their safety nets, without running a study.

dask-jobqueue clusters (``execution.cluster``: validation, the generated job scripts),
the memory check of a shard's chunks, errors that name the shard, temporaries of a
killed writer, the rerun key of the workflow, manifest provenance and the SLURM profile.
"""

from __future__ import annotations

import contextlib
import json
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import yaml
from distributed import KilledWorker

from tests.conftest import ROOT, small_study_data
from vtrial.errors import ConfigError, ResourceError
from vtrial.population.sampling import sample_population
from vtrial.run import parallel
from vtrial.run import stages as pipeline
from vtrial.run.chunk import simulate_chunk
from vtrial.run.io import atomic_path, stale_temporaries, write_parquet
from vtrial.study.config import load_study, study_from_dict

#: keeps the test's scheduler on the loopback interface, without a dashboard
LOOPBACK = {"host": "127.0.0.1", "dashboard_address": parallel.DASHBOARD_ADDRESS}


def cluster_study(**cluster: Any) -> dict[str, Any]:
    data = small_study_data()
    data["execution"]["cluster"] = {"type": "slurm", **cluster}
    return data


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        study_from_dict(data)
    return [str(p) for p in info.value.problems]


# ---------------------------------------------------------------------------
# execution.cluster
# ---------------------------------------------------------------------------


def test_slurm_job_script_follows_the_config() -> None:
    """4 single-threaded workers per job sharing 8 GB (2 GB each), BLAS pinned."""
    spec = {
        "type": "slurm",
        "cores": 4,
        "memory": "8GB",
        "walltime": "02:30:00",
        "queue": "compute",
        "account": "trial-sims",
        "jobs": 3,
        "job_extra_directives": ["--constraint=avx2"],
        "job_script_prologue": ["module load python/3.11"],
    }
    study = study_from_dict(cluster_study(**spec))
    assert study.execution["cluster"] == spec
    assert parallel.worker_memory_limit(study.execution) == 2_000_000_000
    with parallel.jobqueue_cluster(study.execution["cluster"], scheduler_options=LOOPBACK) as c:
        script = c.job_script()
    lines = script.splitlines()
    for line in (
        "#SBATCH -J vtrial-worker",
        "#SBATCH -p compute",
        "#SBATCH -A trial-sims",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=8G",
        "#SBATCH -t 02:30:00",
        "#SBATCH --constraint=avx2",
        "export OMP_NUM_THREADS=1",
        "export OPENBLAS_NUM_THREADS=1",
        "export MKL_NUM_THREADS=1",
        "export NUMBA_NUM_THREADS=1",
        "module load python/3.11",
    ):
        assert line in lines, f"{line!r} not in\n{script}"
    worker = lines[-1]
    assert "distributed.cli.dask_worker tcp://127.0.0.1:" in worker
    for arg in ("--nthreads 1", "--nworkers 4", "--memory-limit 1.86GiB", "--nanny"):
        assert arg in worker, worker
    # the prologue runs before the worker starts
    assert script.index("export OMP_NUM_THREADS=1") < script.index("dask_worker")


def test_pbs_job_script_and_defaults() -> None:
    study = study_from_dict(cluster_study(type="pbs", queue="workq"))
    spec = study.execution["cluster"]
    assert parallel.cluster_settings(spec)["cores"] == 1
    assert parallel.worker_memory_limit(study.execution) == 4_000_000_000  # 4GB, 1 worker
    with parallel.jobqueue_cluster(spec, scheduler_options=LOOPBACK) as c:
        script = c.job_script()
    assert "#PBS -N vtrial-worker" in script
    assert "#PBS -q workq" in script
    assert "#PBS -l select=1:ncpus=1:mem=3815MB" in script
    assert "#PBS -l walltime=01:00:00" in script
    assert "--nthreads 1" in script
    assert "export OMP_NUM_THREADS=1" in script


def test_cluster_config_problems_reported_together() -> None:
    data = cluster_study(type="sge", memory="lots", walltime="2 hours", cores=0, colour="red")
    found = problems(data)
    assert any("execution.cluster.type: must be one of ['slurm', 'pbs']" in p for p in found)
    assert any("execution.cluster.cores: must be >= 1, got 0" in p for p in found)
    assert any("execution.cluster: unknown key(s) ['colour']" in p for p in found)
    data = cluster_study(memory="lots", walltime="2 hours")
    data["execution"]["scheduler_address"] = "tcp://10.0.0.5:8786"
    data["execution"]["memory_limit"] = "plenty"
    found = problems(data)
    expected = [
        "execution.cluster: cannot be combined with execution.scheduler_address",
        "execution.cluster.memory: must be a memory size such as '4GB' or '500MiB', got 'lots'",
        "execution.cluster.walltime: must be [D-]HH:MM[:SS] (e.g. '02:00:00'), got '2 hours'",
        "execution.memory_limit: must be a memory size such as 'auto', '4GB' or '500MiB', "
        "got 'plenty'",
    ]
    for text in expected:
        assert any(text in p for p in found), (text, found)


def test_dask_client_submits_the_configured_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """execution.cluster: the cluster is scaled to `jobs` batch jobs, the client joins it."""
    calls: list[Any] = []

    class FakeCluster:
        def __enter__(self) -> FakeCluster:
            return self

        def __exit__(self, *exc: object) -> None:
            calls.append("closed")

        def job_script(self) -> str:
            return "#!/bin/bash"

        def scale(self, jobs: int) -> None:
            calls.append(("scale", jobs))

    @contextlib.contextmanager
    def fake_client(cluster: Any) -> Iterator[str]:
        calls.append(("client", type(cluster).__name__))
        yield "client"

    monkeypatch.setattr(parallel, "jobqueue_cluster", lambda spec: FakeCluster())
    monkeypatch.setattr(parallel, "Client", fake_client)
    execution = {"cluster": {"type": "slurm", "jobs": 5}}
    with parallel.dask_client(execution, threads=8) as client:
        assert client == "client"
    assert calls == [("client", "FakeCluster"), ("scale", 5), "closed"]


def test_local_cluster_leaves_the_default_dashboard_port_alone() -> None:
    """Dask's default HTTP port 8787 may be held by another scheduler on the machine
    (Dask then warns, an error under -W error): the local cluster takes a free one."""
    with parallel.dask_client({"memory_limit": "1GB"}, threads=1) as client:
        info = client.scheduler_info()
        assert client.submit(abs, -2).result() == 2
    assert info["address"].startswith("tcp://127.0.0.1:")
    assert info["services"]["dashboard"] != 8787
    assert [w["memory_limit"] for w in info["workers"].values()] == [1_000_000_000]


# ---------------------------------------------------------------------------
# memory of a chunk
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def _no_dask(execution: Any, *, threads: int) -> Iterator[None]:
    raise AssertionError("Dask must not be started")
    yield


def test_chunk_too_large_refused_before_compute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Time courses every 15 min (2017 stored times) in chunks of 150 patients do not
    fit 500 MB per worker: refused before Dask starts, with a chunk size that fits."""
    monkeypatch.setattr(pipeline, "dask_client", _no_dask)
    data = small_study_data()
    data["outputs"]["timecourse"] = {"every": 0.25}
    data["execution"].update(shards=2, chunk_size=150, memory_limit="500MB")
    study = study_from_dict(data)
    pop = tmp_path / "population.parquet"
    pipeline.run_sample_population(study, pop)
    out = [tmp_path / f"{k}.parquet" for k in "ptb"]
    with pytest.raises(ResourceError) as info:
        pipeline.run_simulate(study, pop, 1, *out)
    msg = str(info.value)
    need = pipeline.WORKER_BASE_BYTES + pipeline.chunk_memory_bytes(study, 150)
    fits = (500_000_000 - pipeline.WORKER_BASE_BYTES) // pipeline.chunk_memory_bytes(study, 1)
    assert 0 < fits < 150
    assert msg == (
        f"shard 1 (part-00001): a chunk of 150 patients needs about {need / 2**20:,.0f} MiB "
        f"per Dask worker (384 MiB for the worker, {(need / 2**20) - 384:,.0f} MiB for the "
        "chunk), more than the worker memory limit of 477 MiB (execution); lower "
        f"execution.chunk_size to {fits} or less, or give the workers more memory"
    )
    assert not any(p.exists() for p in out)


def test_chunk_memory_estimate_is_conservative() -> None:
    """The estimate covers the measured peak of a chunk (Python allocations)."""
    study = study_from_dict(small_study_data())
    rows = sample_population(study).iloc[:100]
    simulate_chunk(study, rows.iloc[:1], threads=1)  # compile or load the kernel
    tracemalloc.start()
    try:
        simulate_chunk(study, rows, threads=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    estimate = pipeline.chunk_memory_bytes(study, 100)
    assert peak <= estimate <= 10 * peak


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def result(self) -> Any:
        raise self.exc


def test_dead_workers_reported_with_shard_and_memory() -> None:
    study = study_from_dict(small_study_data())
    killed = KilledWorker("chunk-key", SimpleNamespace(address="tcp://127.0.0.1:1"), 3)
    with pytest.raises(ResourceError) as info:
        pipeline._chunk_result(_Failed(killed), study, 2, 1, [(0, 64), (64, 100)], 200)
    msg = str(info.value)
    assert msg.startswith("shard 2 (part-00002), chunk 2/2 (population rows 264 to 299): ")
    assert "the Dask workers running it died repeatedly" in msg
    assert "needs about" in msg


def test_task_error_names_the_shard_and_keeps_its_type() -> None:
    study = study_from_dict(small_study_data())
    with pytest.raises(ZeroDivisionError) as info:
        pipeline._chunk_result(_Failed(ZeroDivisionError("x")), study, 0, 0, [(0, 10)], 0)
    assert info.value.__notes__ == [
        "while simulating shard 0 (part-00000), chunk 1/1 (population rows 0 to 9)"
    ]


# ---------------------------------------------------------------------------
# files and provenance
# ---------------------------------------------------------------------------


def test_temporaries_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    """A writer killed mid-write leaves a hidden temporary; the next write removes it."""
    path = tmp_path / "part-00001.parquet"
    other = tmp_path / "part-00001.parquet.bak"
    with atomic_path(path) as tmp:  # as left by SIGKILL between create and rename
        tmp.write_bytes(b"partial")
        left = tmp_path / f"{tmp.name}.copy"
        left.write_bytes(b"x")
    stale = tmp_path / ".part-00001.parquet.abcd_123.tmp"
    stale.write_bytes(b"partial")
    unrelated = tmp_path / ".part-00001.parquet.bak.abcd_123.tmp"
    unrelated.write_bytes(b"partial")
    assert stale_temporaries(path) == [stale]
    write_parquet(pd.DataFrame({"x": [1]}), path, meta={})
    assert not stale.exists()
    assert unrelated.exists()  # the temporary of another file
    assert not other.exists()
    assert stale_temporaries(path) == []


def test_results_sha256_ignores_resources_not_results() -> None:
    base = study_from_dict(small_study_data())
    key = pipeline.results_sha256(base)
    same = small_study_data()
    same["execution"].update(
        workers=7, chunk_size=3, scheduler_address="tcp://127.0.0.1:1", memory_limit="3GB"
    )
    assert pipeline.results_sha256(study_from_dict(same)) == key
    assert study_from_dict(same).sha256 != base.sha256
    for change in ({"execution__shards": 2}, {"study__seed": 1}):
        section, _, field = next(iter(change)).partition("__")
        data = small_study_data()
        data[section][field] = next(iter(change.values()))
        assert pipeline.results_sha256(study_from_dict(data)) != key


def test_manifest_records_times_host_and_inputs(
    tmp_path: Path, write_study: Callable[[dict[str, Any], str], Path]
) -> None:
    study = load_study(write_study(small_study_data(), "study.yaml"))
    root = tmp_path / "results"
    starts = ["2026-01-02T03:04:05+00:00", "2026-01-02T03:00:00+00:00"]
    for i, s in enumerate(starts):
        write_parquet(pd.DataFrame({"x": [i]}), root / f"t{i}.parquet", meta={"started": s})
    (root / "plot.png").write_bytes(b"png")
    outputs = [root / "t0.parquet", root / "t1.parquet", root / "plot.png"]
    manifest = pipeline.run_manifest(study, outputs, root / "manifest.json")
    assert manifest["started"] == "2026-01-02T03:00:00+00:00"
    assert manifest["finished"] >= manifest["started"]
    assert manifest["host"]
    assert manifest["inputs"]["study_file_sha256"]
    assert set(manifest["inputs"]["models"]) == {c.name for c in study.model.components}
    assert manifest["study_file"] == Path(study.source).read_text()
    assert json.loads((root / "manifest.json").read_text()) == manifest


# ---------------------------------------------------------------------------
# Snakemake SLURM profile
# ---------------------------------------------------------------------------


def test_slurm_profile_sets_resources_of_every_rule() -> None:
    """mem_mb, runtime and cpus_per_task for every rule, growing with the attempt;
    retries; the simulate job's threads are its CPUs."""
    profile = yaml.safe_load((ROOT / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["retries"] >= 1
    assert profile["rerun-incomplete"] is True
    rules = ("sample_population", "simulate", "aggregate", "report", "manifest")
    assert set(profile["set-resources"]) == set(rules)

    def value(expr: Any, attempt: int) -> int:
        return int(eval(str(expr), {"attempt": attempt}))  # as Snakemake evaluates it

    for rule in rules:
        res = profile["set-resources"][rule]
        assert {"mem_mb", "runtime", "cpus_per_task"} <= set(res), rule
        assert value(res["mem_mb"], 2) > value(res["mem_mb"], 1) >= 1000, rule
        assert value(res["runtime"], 1) >= 10, rule
    sim = profile["set-resources"]["simulate"]
    assert profile["set-threads"]["simulate"] == sim["cpus_per_task"]
