"""Faults during a run, each with a pass criterion, on a tiny study (30 patients, 3 shards).

1. SIGKILL of a Dask worker while it simulates a chunk: the shard completes, identical.
2. A simulate job that wrote its shard but whose end Snakemake never recorded: the
   rerun rewrites the same single files.
3. SIGKILL of Snakemake (and its jobs) mid-run, 4. SIGTERM then SIGKILL after a grace
   period (as SLURM does): ``--rerun-incomplete`` reruns only the unfinished jobs and
   gives the tables of an unfaulted run. 2, 3 and 4 are one project interrupted three
   times (a module fixture: one run and three resumes instead of three pairs).
5. Poison patients: reported by id and solver status, in bounded time; the others
   unchanged.
7. A chunk too large for a worker's memory: refused at once, naming the shard.

Also: ``vtrial verify --recompute`` and Snakemake's rerun triggers (dry runs). Fault 6
(damaged part files) is tested in test_workflow.py (test_verify_detects_damaged_outputs).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, small_study_data, snakemake_cmd
from tests.workflow import fault_helpers
from vtrial.run import stages as pipeline
from vtrial.run.cli import main, verify
from vtrial.run.io import table_hash
from vtrial.run.recompute import choose_shards
from vtrial.study.config import load_study

pytestmark = [
    pytest.mark.workflow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

SHARDS = [f"part-{i:05d}" for i in range(3)]
N_PATIENTS = 30
#: generous limits for a slow, loaded machine (conditions are polled, never slept on)
RUN_TIMEOUT = 900.0
START_TIMEOUT = 600.0
#: what SLURM gives a job between SIGTERM and SIGKILL (KillWait is 30 s by default)
GRACE_SECONDS = 15.0


def fault_study_data() -> dict[str, Any]:
    """30 patients in 3 shards of chunks of 5; the neutropenia model from a local file."""
    d = small_study_data()
    d["population"]["size"] = N_PATIENTS
    d["study"]["replicates"] = 1
    d["execution"] = {"shards": 3, "workers": 1, "chunk_size": 5}
    d["model"]["components"]["neutropenia"]["model"] = "my_friberg.yaml"
    return d


def make_project(folder: Path) -> Path:
    """A project folder: study file, its model file and a README; returns the study."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(
        ROOT / "src" / "vtrial" / "model" / "library" / "friberg.yaml", folder / "my_friberg.yaml"
    )
    (folder / "README.md").write_text("# a project\n")
    study = folder / "study.yaml"
    study.write_text(yaml.safe_dump(fault_study_data(), sort_keys=False))
    return study


def snakemake(
    workdir: Path,
    study: Path,
    *extra: str,
    cores: int = 1,
    config: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        snakemake_cmd(workdir, study, *extra, cores=cores, config=config),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
        env=env,
    )


def job_counts(text: str) -> dict[str, int]:
    """The "Job stats" table Snakemake prints before running (or dry-running) jobs."""
    block = text.split("Job stats:", 1)[1] if "Job stats:" in text else ""
    counts = {}
    for line in block.splitlines()[3:]:
        m = re.fullmatch(r"\s*(\w+)\s+(\d+)\s*", line)
        if not m or m.group(1) == "total":
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def simulated(text: str) -> set[str]:
    """Shards whose simulate job a Snakemake output shows as run (or planned)."""
    return set(re.findall(r"Simulating shard (part-\d{5})", text))


def content_hashes(results: Path) -> dict[str, str]:
    """Content hash of every table of a results folder (not the logs)."""
    return {
        str(p.relative_to(results)): table_hash(pd.read_parquet(p))
        for p in sorted(results.rglob("*.parquet"))
    }


def stray_files(results: Path) -> list[str]:
    """Hidden files (temporaries of a killed writer) and duplicated parts."""
    stray = [str(p) for p in results.rglob(".*")]
    for table in ("patients", "timecourse", "bands"):
        names = sorted(p.name for p in (results / table).iterdir())
        if names != [f"{s}.parquet" for s in SHARDS]:
            stray.append(f"{table}: {names}")
    return stray


def group_processes(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
    return pids


def wait_for(
    condition: Callable[[], bool], what: str, *, timeout: float, log: Path | None = None
) -> None:
    """Poll ``condition`` every 50 ms until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The unfaulted run of the tiny study (the one all faulted runs must equal)."""
    workdir = tmp_path_factory.mktemp("faults") / "ref"
    study = make_project(workdir)
    res = snakemake(workdir, study, cores=2)
    assert res.returncode == 0, res.stderr[-4000:]
    results = workdir / "results" / "small"
    hashes = content_hashes(results)
    assert len(hashes) > 3 * len(SHARDS)
    return {"workdir": workdir, "study": study, "results": results, "hashes": hashes}


# ---------------------------------------------------------------------------
# 1. a Dask worker killed while it simulates a chunk
# ---------------------------------------------------------------------------


def test_worker_sigkill_mid_chunk(
    reference: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL the worker process running chunk 3 of 6: the shard completes with exactly
    30 patients, no duplicate id, the tables of the unfaulted run."""
    data = fault_study_data()
    data["execution"].update(shards=1, workers=2)
    study_file = tmp_path / "study.yaml"
    shutil.copyfile(reference["workdir"] / "my_friberg.yaml", tmp_path / "my_friberg.yaml")
    study_file.write_text(yaml.safe_dump(data, sort_keys=False))
    study = load_study(study_file)
    pop = tmp_path / "population.parquet"
    pipeline.run_sample_population(study, pop)
    target = int(pd.read_parquet(pop)["patient_id"].iloc[10])  # first patient of chunk 3
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "target").write_text(str(target))
    monkeypatch.setenv(fault_helpers.FAULT_DIR, str(faults))  # inherited by the workers
    monkeypatch.setattr(pipeline, "_simulate_chunk", fault_helpers.chunk_blocking_once)
    killed: list[int] = []
    errors: list[BaseException] = []

    def killer() -> None:
        try:
            marker = faults / "blocked.pid"
            wait_for(marker.exists, "the blocked chunk", timeout=START_TIMEOUT)
            pid = int(marker.read_text())
            assert pid != os.getpid()  # a worker process, never the test
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    out = {k: tmp_path / k / "part-00000.parquet" for k in ("patients", "timecourse", "bands")}
    n = pipeline.run_simulate(
        study, pop, 0, out["patients"], out["timecourse"], out["bands"], threads=2
    )
    thread.join(timeout=60)
    assert not errors, errors
    assert len(killed) == 1
    calls = [line.split() for line in (faults / "calls.log").read_text().splitlines()]
    attempts = [int(pid) for pid, first in calls if int(first) == target]
    # the killed attempt, then a complete one in another process
    assert len(attempts) >= 2
    assert attempts[0] == killed[0]
    assert attempts[-1] != killed[0]
    patients = pd.read_parquet(out["patients"])
    print(
        f"\nfault 1: killed worker pid {killed[0]}; chunk attempts {attempts}; {len(calls)} calls"
    )
    assert n == len(patients) == N_PATIENTS
    assert not patients["patient_id"].duplicated().any()
    ref = reference["results"]
    pd.testing.assert_frame_equal(patients, pd.read_parquet(ref / "patients"), check_exact=True)
    pd.testing.assert_frame_equal(
        pd.read_parquet(out["timecourse"]), pd.read_parquet(ref / "timecourse"), check_exact=True
    )


# ---------------------------------------------------------------------------
# 2./3./4. runs interrupted: a job unseen by Snakemake, SIGKILL, SIGTERM + SIGKILL
# ---------------------------------------------------------------------------


class Run:
    """A Snakemake run in its own process group, its output to a file.

    Progress is read from that output: ``Job N: Simulating shard part-K`` when a
    simulate job starts, ``Finished jobid: N (Rule: simulate)`` once Snakemake has
    recorded it as done.
    """

    def __init__(self, workdir: Path, study: Path, label: str, *extra: str) -> None:
        self.log = workdir / f"snakemake-{label}.log"
        self.workdir = workdir
        self.results = workdir / "results" / "small"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                snakemake_cmd(workdir, study, *extra),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )

    def text(self) -> str:
        return self.log.read_text()

    def progress(self) -> tuple[set[str], set[str]]:
        """Shards whose simulate job Snakemake recorded as done, and those running.

        A job counts as running once Snakemake has marked its outputs incomplete: it
        prints ``Job N: ...`` and starts the job *before* it writes that mark, and a run
        stopped in between leaves a job that no resume can know about.
        """
        text = self.text()
        jobs = dict(re.findall(r"Job (\d+): Simulating shard (part-\d{5})", text))
        finished = set(re.findall(r"Finished jobid: (\d+) \(Rule: simulate\)", text))
        done = {s for j, s in jobs.items() if j in finished}
        marked = incomplete_outputs(self.workdir)
        running = {
            s
            for s in set(jobs.values()) - done
            if any(k.endswith(f"patients/{s}.parquet") for k in marked)
        }
        return done, running

    def wait_running(self, *, after_done: bool) -> tuple[set[str], set[str]]:
        """Wait until a shard is being simulated (and, ``after_done``, one is done)."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"snakemake ended before the fault\n{self.text()[-3000:]}")
            done, running = self.progress()
            return bool(running) and (bool(done) or not after_done)

        wait_for(ready, "a shard being simulated", timeout=START_TIMEOUT, log=self.log)
        return self.progress()

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def wait_gone(self, timeout: float) -> bool:
        """Wait until every process of the run has ended; False after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.proc.poll()
            if not group_processes(self.proc.pid):
                self.proc.wait(timeout=60)
                return True
            time.sleep(0.05)
        return False


def incomplete_outputs(workdir: Path) -> set[str]:
    """Outputs Snakemake has marked incomplete (job started, not recorded as finished).

    Its file backend keeps one file per output under ``.snakemake/incomplete``, named
    by the url-safe base64 of the path (split into ``@``-prefixed folders when long).
    """
    folder = workdir / ".snakemake" / "incomplete"
    keys = set()
    for path in folder.rglob("*") if folder.exists() else ():
        if path.is_file() and path.name != "migration_underway":
            parts = path.relative_to(folder).parts
            code = "".join(p.removeprefix("@") for p in parts)
            with contextlib.suppress(ValueError):
                keys.add(base64.urlsafe_b64decode(code).decode())
    return keys


def unlock_if_locked(workdir: Path, study: Path) -> bool:
    """``snakemake --unlock`` if a killed run left its lock behind; True if it did."""
    locks = workdir / ".snakemake" / "locks"
    if not (locks.exists() and any(locks.iterdir())):
        return False
    res = snakemake(workdir, study, "--unlock")
    assert res.returncode == 0, res.stderr[-3000:]
    return True


def planned(text: str) -> dict[str, Any]:
    """The jobs a (resumed) run planned: its job stats and the shards it simulates."""
    return {"jobs": job_counts(text), "shards": simulated(text)}


@pytest.fixture(scope="module")
def interrupted(reference: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One project, interrupted three times, always resumed with ``--rerun-incomplete``
    (after ``--unlock`` when a lock was left), then completed (``--cores 1``: one job
    at a time, so that "running" and "done" are exact):

    2. Snakemake frozen (SIGSTOP) while a simulate job runs; the job writes its shard
       and exits; then the whole process group is SIGKILLed: the job's files exist but
       Snakemake never recorded the job.
    3. The first resume is SIGKILLed (whole group) while it simulates a shard, after it
       finished another.
    4. The second resume gets SIGTERM (whole group) while it simulates, and SIGKILL
       if anything is left after a grace period, as SLURM does at a time limit.

    Returns a record of what was observed at every step (assertions are the tests').
    """
    workdir = tmp_path_factory.mktemp("interrupted")
    study = make_project(workdir)
    obs: dict[str, Any] = {"workdir": workdir, "results": workdir / "results" / "small"}
    # 2. the job finishes while Snakemake cannot see it
    run = Run(workdir, study, "run")
    done, running = run.wait_running(after_done=True)
    os.kill(run.proc.pid, signal.SIGSTOP)
    (shard,) = running
    job_log = obs["results"] / "logs" / "simulate" / f"{shard}.log"
    part = obs["results"] / "patients" / f"{shard}.parquet"

    def job_ended() -> bool:
        text = job_log.read_text() if job_log.exists() else ""
        alive = group_processes(run.proc.pid)
        return part.exists() and "patients in" in text and alive == [run.proc.pid]

    wait_for(job_ended, f"the job of {shard} to write its files and exit", timeout=START_TIMEOUT)
    obs["fault2"] = {
        "recorded": done,
        "unrecorded": shard,
        "written_sha256": table_hash(pd.read_parquet(part)),
    }
    run.signal_group(signal.SIGKILL)
    assert run.wait_gone(timeout=120)
    # 3. the first resume is killed mid-run
    obs["fault2"]["unlock"] = unlock_if_locked(workdir, study)
    run = Run(workdir, study, "resume1", "--rerun-incomplete")
    done, running = run.wait_running(after_done=True)
    obs["fault2"]["resume"] = planned(run.text())
    t0 = time.monotonic()
    run.signal_group(signal.SIGKILL)
    assert run.wait_gone(timeout=120)
    obs["fault3"] = {"recorded": done, "running": running, "gone": time.monotonic() - t0}
    # 4. the second resume is terminated mid-run, as SLURM does
    obs["fault3"]["unlock"] = unlock_if_locked(workdir, study)
    run = Run(workdir, study, "resume2", "--rerun-incomplete")
    done, running = run.wait_running(after_done=False)
    obs["fault3"]["resume"] = planned(run.text())
    t0 = time.monotonic()
    run.signal_group(signal.SIGTERM)
    sigkill = not run.wait_gone(timeout=GRACE_SECONDS)
    if sigkill:
        run.signal_group(signal.SIGKILL)
        assert run.wait_gone(timeout=120)
    obs["fault4"] = {
        "recorded": done,
        "running": running,
        "sigkill": sigkill,
        "gone": time.monotonic() - t0,
        "exit": run.proc.returncode,
        "manifest": (obs["results"] / "manifest.json").exists(),
    }
    # completed
    obs["fault4"]["unlock"] = unlock_if_locked(workdir, study)
    res = snakemake(workdir, study, "--rerun-incomplete")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    obs["fault4"]["resume"] = planned(res.stdout + res.stderr)
    for k in ("fault2", "fault3", "fault4"):
        print(f"\n{k}: {obs[k]}")
    return obs


def test_job_died_after_writing_before_reporting(
    reference: dict[str, Any], interrupted: dict[str, Any]
) -> None:
    """Fault 2: the simulate job that wrote its shard unseen is rerun (with the shards
    never started), the finished one is not; every shard ends as one file per table,
    no temporary left, the content of the unfaulted run."""
    f = interrupted["fault2"]
    shard = f["unrecorded"]
    assert f["written_sha256"] == reference["hashes"][f"patients/{shard}.parquet"]
    assert f["unlock"]  # Snakemake was killed: its lock was left behind
    assert shard in f["resume"]["shards"]
    assert f["resume"]["shards"] == set(SHARDS) - f["recorded"]
    assert f["resume"]["jobs"]["simulate"] == len(SHARDS) - len(f["recorded"])
    assert "sample_population" not in f["resume"]["jobs"]
    results = interrupted["results"]
    assert stray_files(results) == []
    for table in ("patients", "timecourse", "bands"):
        rel = f"{table}/{shard}.parquet"
        assert table_hash(pd.read_parquet(results / rel)) == reference["hashes"][rel]


def test_snakemake_sigkill_mid_run_resumes(
    reference: dict[str, Any], interrupted: dict[str, Any]
) -> None:
    """Fault 3: after SIGKILL of the whole run mid-simulate, the resume (after
    --unlock) reruns exactly the shards not recorded as done, and the downstream jobs."""
    f = interrupted["fault3"]
    assert f["unlock"]
    unfinished = set(SHARDS) - interrupted["fault2"]["recorded"] - f["recorded"]
    assert f["running"] <= unfinished
    assert f["resume"]["shards"] == unfinished
    jobs = f["resume"]["jobs"]
    assert jobs["simulate"] == len(unfinished)
    assert "sample_population" not in jobs
    assert {jobs[r] for r in ("aggregate", "report", "manifest")} == {1}


def test_snakemake_sigterm_then_sigkill_resumes(
    reference: dict[str, Any], interrupted: dict[str, Any]
) -> None:
    """Fault 4: SIGTERM (SIGKILL after a grace period if needed) mid-simulate; the
    resume reruns only the unfinished jobs; the final results equal the unfaulted run's
    table by table, `vtrial verify` passes, no stray file."""
    f = interrupted["fault4"]
    assert not f["manifest"]  # the run was stopped before its end
    assert f["running"]
    # a job running at the SIGTERM may still finish within the grace period (Snakemake
    # lets running jobs end): the resume reruns those that did not finish, nothing else
    assert f["resume"]["shards"] <= f["running"]
    assert f["resume"]["jobs"].get("simulate", 0) == len(f["resume"]["shards"])
    assert "sample_population" not in f["resume"]["jobs"]
    results = interrupted["results"]
    assert content_hashes(results) == reference["hashes"]
    assert verify(results) == []
    assert stray_files(results) == []


# ---------------------------------------------------------------------------
# 5. poison patients
# ---------------------------------------------------------------------------


@pytest.mark.usefixtures("sync_dask")
def test_poison_patients_reported_in_bounded_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Three poisoned patients in a shard: a drug effect of 1e300 (the solve never
    converges), a kill rate of 1e308 (the derivatives overflow) and a missing clearance.
    Each keeps its row, with its id and solver status; the steps are bounded by
    max_steps; the other 27 rows equal those of the clean population."""
    data = fault_study_data()
    data["model"]["components"]["neutropenia"]["model"] = "friberg"
    data["execution"]["shards"] = 1
    study = load_study_data(data, tmp_path)
    max_steps = int(study.data["simulation"]["max_steps"])
    clean = tmp_path / "clean.parquet"
    pipeline.run_sample_population(study, clean)
    pop = pd.read_parquet(clean)
    treated = pop.index[pop["arm"] != "placebo"][:3]
    poison = {"SLOPE": 1e300, "KD0": 1e308, "CL": np.nan}
    poisoned = pop.copy()
    for row, (col, value) in zip(treated, poison.items(), strict=True):
        poisoned.loc[row, col] = value
    poisoned_file = tmp_path / "poisoned.parquet"
    poisoned.to_parquet(poisoned_file, row_group_size=pipeline.POPULATION_ROW_GROUP)

    def simulate(population: Path, label: str) -> pd.DataFrame:
        out = [tmp_path / label / f"{k}.parquet" for k in ("p", "t", "b")]
        pipeline.run_simulate(study, population, 0, *out)
        return pd.read_parquet(out[0])

    a = simulate(clean, "clean")
    caplog.set_level(logging.INFO, logger="vtrial")
    t0 = time.perf_counter()
    b = simulate(poisoned_file, "poisoned")
    elapsed = time.perf_counter() - t0
    shown = b.loc[treated, ["patient_id", "solver_status", "n_steps", "solver"]]
    print(f"\nfault 5: {elapsed:.2f} s; poisoned {shown.to_numpy().tolist()}")
    assert elapsed < 300  # bounded by max_steps, whatever the load of the machine
    assert len(b) == len(a) == N_PATIENTS
    assert b["patient_id"].tolist() == pop["patient_id"].tolist()
    status = dict(zip(b["patient_id"], b["solver_status"], strict=True))
    ids = pop.loc[treated, "patient_id"].tolist()
    assert [status[i] for i in ids] == ["max_steps", "nonfinite", "invalid_initial"]
    assert sum(s != "ok" for s in status.values()) == 3
    assert int(b.loc[treated[0], "n_steps"]) <= max_steps + 1
    pd.testing.assert_frame_equal(b.drop(index=treated), a.drop(index=treated), check_exact=True)
    warning = next(r.getMessage() for r in caplog.records if "solver failure(s)," in r.getMessage())
    for i, s in zip(ids, ["max_steps", "nonfinite", "invalid_initial"], strict=True):
        assert f", {i}, {s}," in warning


def load_study_data(data: dict[str, Any], folder: Path) -> Any:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_study(path)


# ---------------------------------------------------------------------------
# 7. memory pressure
# ---------------------------------------------------------------------------


def test_chunk_too_large_for_worker_memory_fails_fast(
    reference: dict[str, Any], tmp_path: Path
) -> None:
    """With 64 MB per worker the simulate job refuses its shard before starting Dask,
    naming the shard, the memory a chunk needs and the limit; it never hangs."""
    shutil.copytree(reference["workdir"], tmp_path, dirs_exist_ok=True)
    study = tmp_path / "study.yaml"
    target = "results/small/patients/part-00001.parquet"
    t0 = time.perf_counter()
    res = snakemake(tmp_path, study, "--force", target, config=["memory_limit=64MB"])
    took = time.perf_counter() - t0
    print(f"\nfault 7: failed in {took:.1f} s with exit code {res.returncode}")
    assert took < RUN_TIMEOUT
    assert res.returncode != 0
    log = (tmp_path / "results" / "small" / "logs" / "simulate" / "part-00001.log").read_text()
    for text in (log, res.stderr):
        assert "ResourceError: shard 1 (part-00001): a chunk of 5 patients needs about" in text
        assert "more than the worker memory limit of 61 MiB (execution)" in text
    assert "local Dask cluster" not in log  # refused before any worker started
    assert not (tmp_path / "results" / "small" / "patients" / "part-00001.parquet").exists()


# ---------------------------------------------------------------------------
# vtrial verify --recompute
# ---------------------------------------------------------------------------


def test_verify_recompute(
    reference: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One shard recomputed from the recorded study matches; a changed value in a part
    file whose manifest entry was updated to match (so plain verify passes) is caught."""
    results = reference["results"]
    shard = choose_shards(3, 1, seed=7)[0]
    assert main(["verify", str(results), "--recompute", "--shards", "1", "--seed", "7"]) == 0
    out = capsys.readouterr().out
    assert f"recomputing shard(s) [{shard}] of 3" in out
    copy = tmp_path / "small"
    shutil.copytree(results, copy)
    part = copy / "patients" / f"part-{shard:05d}.parquet"
    df = pd.read_parquet(part)
    row = int(np.flatnonzero(df["arm"] != "placebo")[0])
    df.loc[row, "auc"] *= 1.01
    df.to_parquet(part)
    manifest_path = copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["outputs"]:
        if entry["path"] == f"patients/part-{shard:05d}.parquet":
            entry["content_sha256"] = table_hash(df)
    manifest_path.write_text(json.dumps(manifest))
    assert verify(copy) == []
    assert main(["verify", str(copy), "--recompute", "--shards", "1", "--seed", "7"]) == 1
    err = capsys.readouterr().err
    assert f"{part}: recomputed content differs from the manifest" in err
    assert f"{part}: differs from its recomputation: column auc, row {row}:" in err


# ---------------------------------------------------------------------------
# rerun triggers (dry runs)
# ---------------------------------------------------------------------------


def test_rerun_triggers(reference: dict[str, Any], tmp_path: Path) -> None:
    """Dry runs on a copy of the finished project: nothing to do after moving the
    project and the results folder, editing the README and changing the workers, chunk
    size and worker memory (all at once); every job again after changing the study, its
    model file or the vtrial version (one at a time)."""
    workdir = tmp_path / "moved"
    shutil.copytree(reference["workdir"], workdir, copy_function=shutil.copy2)
    study = workdir / "study.yaml"  # another absolute path than the run's
    nothing = "Nothing to be done"
    every_job = {
        "sample_population": 1,
        "simulate": 3,
        "aggregate": 1,
        "report": 1,
        "manifest": 1,
        "all": 1,
    }

    def dry(config: Sequence[str] = (), env: dict[str, str] | None = None) -> str:
        res = snakemake(workdir, study, "-n", config=config, env=env)
        assert res.returncode == 0, res.stderr[-3000:]
        return res.stdout + res.stderr

    (workdir / "README.md").write_text("# a project, documented at length\n")
    (workdir / "results").rename(workdir / "elsewhere")
    out = dry(config=["results=elsewhere", "workers=2", "chunk_size=7", "memory_limit=3GB"])
    assert nothing in out, out[-3000:]
    (workdir / "elsewhere").rename(workdir / "results")

    def changed(path: Path, edit: Callable[[str], str]) -> str:
        before = path.read_text()
        path.write_text(edit(before))
        try:
            return dry()
        finally:
            path.write_text(before)

    model = workdir / "my_friberg.yaml"
    out = changed(model, lambda t: t + "# a comment changes the file's hash\n")
    assert job_counts(out) == every_job
    assert "params have changed since last execution" in out
    out = changed(study, lambda t: t.replace("seed: 20261122", "seed: 20261123"))
    assert job_counts(out) == every_job
    # another vtrial version (patched in at interpreter start-up)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import vtrial\nvtrial.__version__ = '99.0.0'\n")
    out = dry(env={**os.environ, "PYTHONPATH": str(site)})
    assert job_counts(out) == every_job
