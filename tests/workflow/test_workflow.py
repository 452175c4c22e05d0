"""End-to-end Snakemake runs of a small study: the output contract, reproducibility
across execution layouts, and refusal of a bad study before any compute."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import vtrial
from tests.conftest import ROOT, small_study_data, snakemake_cmd
from vtrial.analysis.sketch import ALPHA
from vtrial.run.cli import describe, main, verify
from vtrial.run.io import read_provenance, table_hash

pytestmark = pytest.mark.workflow

#: sampling times of the observations of the workflow study (small study, end 504 h)
OBS_TIMES = [0.5, 1.0, 2.0, 4.0, 24.0, 168.0, 336.0, 504.0]


def study_data() -> dict[str, Any]:
    """The small study, with sampled observations (residual error, LLOQ) and an
    inclusion criterion (patients are the first eligible candidates)."""
    data = small_study_data()
    data["population"]["inclusion"] = ["crcl >= 40"]
    data["model"]["residual_error"] = {
        "CP": {"proportional": 0.15, "additive": 0.05, "lloq": 0.05},
        "ANC": {"exponential": 0.1},
    }
    data["outputs"]["observations"] = {
        "outputs": ["CP", "ANC"],
        "times": [0.5, 1, 2, 4, 24],
        "every": 168,
        "from": 168,
    }
    return data


def snakemake(workdir: Path, study: Path, *config: str) -> subprocess.CompletedProcess[str]:
    """Run the workflow on 2 cores; ``config`` items (``shards=4``) after ``--config``."""
    cmd = snakemake_cmd(workdir, study, cores=2, config=config)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same small study run twice: 1 shard / 1 worker and 4 shards / 2 workers
    (150 patients: shards of 37 or 38, across chunks of 64)."""
    base = tmp_path_factory.mktemp("wf")
    study = base / "small.yaml"
    study.write_text(yaml.safe_dump(study_data(), sort_keys=False))
    out = {}
    for label, shards, workers in (("a", 1, 1), ("b", 4, 2)):
        wd = base / label
        wd.mkdir()
        res = snakemake(wd, study, f"shards={shards}", f"workers={workers}")
        assert res.returncode == 0, res.stderr[-4000:]
        out[label] = wd / "results" / "small"
    return out


def test_output_contract(runs: dict[str, Path]) -> None:
    res = runs["b"]
    pop = pd.read_parquet(res / "population.parquet")
    assert len(pop) == 300  # 2 replicates x 150
    parts = sorted((res / "patients").glob("part-*.parquet"))
    assert [p.name for p in parts] == [f"part-{i:05d}.parquet" for i in range(4)]
    patients = pd.read_parquet(res / "patients")
    assert len(patients) == 300
    assert not patients.duplicated(["replicate", "patient_id"]).any()
    required = {
        "patient_id",
        "replicate",
        "arm",
        "solver_status",
        "cmax",
        "tmax",
        "auc",
        "ctrough",
        "tumour_change",
        "objective_response",
        "ae_neutropenia_grade",
        "ae_neutropenia_time_grade3",
    }
    assert required <= set(patients.columns)
    assert (patients["solver_status"] == "ok").all()
    grades = patients["ae_neutropenia_grade"].astype(int)
    assert grades.between(0, 5).all()
    # time of first grade >= 3 is set exactly for patients with grade >= 3
    assert (patients["ae_neutropenia_time_grade3"].notna() == (grades >= 3)).all()
    tc = pd.read_parquet(res / "timecourse")
    assert tc["CP"].dtype == "float32"
    assert set(tc["arm"]) == set(patients["arm"])
    for name in ("exposure", "efficacy", "safety", "bands"):
        df = pd.read_parquet(res / "summary" / f"{name}.parquet")
        assert len(df) > 0
        assert (res / "summary" / f"{name}.csv").exists()
    # bands come from mergeable sketches: within 0.5 % of the exact order statistics
    bands = pd.read_parquet(res / "summary" / "bands.parquet")
    long = tc.melt(id_vars=["replicate", "patient_id", "arm", "time"], var_name="output")
    grouped = long.groupby(["arm", "output", "time"])["value"]
    for q, col in ((0.05, "p5"), (0.5, "p50"), (0.95, "p95")):
        exact = grouped.quantile(q, interpolation="lower").rename("exact").reset_index()
        both = bands.merge(exact, on=["arm", "output", "time"], validate="one_to_one")
        assert len(both) == len(bands)
        tol = ALPHA * both["exact"].abs() * (1 + 1e-6) + 1e-30
        assert ((both[col] - both["exact"]).abs() <= tol).all(), col
    assert (
        bands["n"]
        == grouped.size()
        .reindex(pd.MultiIndex.from_frame(bands[["arm", "output", "time"]]))
        .to_numpy()
    ).all()
    eff = pd.read_parquet(res / "summary" / "efficacy.parquet")
    treated = eff[(eff["arm"] != "placebo") & (eff["replicate"] == 0)]
    assert treated["p_value"].notna().all()
    assert sorted(p.name for p in (res / "report").glob("*.png")) == sorted(
        [
            "bands_ANC.png",
            "bands_CP.png",
            "bands_TUMOUR.png",
            "exposure_auc.png",
            "exposure_cmax.png",
            "exposure_response_neutropenia.png",
            "forest.png",
            "safety_neutropenia.png",
        ]
    )
    # observations: one row per patient, sampling time and observed output
    obs_parts = sorted((res / "observations").glob("part-*.parquet"))
    assert [p.name for p in obs_parts] == [p.name for p in parts]
    obs = pd.read_parquet(res / "observations")
    assert len(obs) == 300 * len(OBS_TIMES) * 2
    assert list(obs.columns) == [
        "replicate",
        "patient_id",
        "arm",
        "time",
        "output",
        "ipred",
        "dv",
        "blq",
    ]
    assert obs["replicate"].dtype == "int32"
    assert obs["blq"].dtype == bool
    keys = ["replicate", "patient_id", "time", "output"]
    assert obs[keys].equals(obs[keys].sort_values(keys).reset_index(drop=True))
    assert sorted(set(obs["time"])) == OBS_TIMES
    assert obs[["ipred", "dv"]].notna().all().all()
    cp = obs[obs["output"] == "CP"]
    assert (cp["blq"] == (cp["dv"] < 0.05)).all()
    anc = obs[obs["output"] == "ANC"]
    log_ratio = np.log(anc["dv"] / anc["ipred"])
    assert abs(log_ratio.std() - 0.1) < 0.01  # exponential error, SD 0.1 on the log scale
    # ipred is the model's value: the stored time courses at the times they share
    shared = obs[obs["time"].isin(tc["time"].astype(float).unique())]
    assert set(shared["time"]) == {24.0, 168.0, 336.0, 504.0}
    wide = shared.pivot_table(
        index=["replicate", "patient_id", "time"], columns="output", values="ipred"
    )
    tc_idx = tc.assign(time=tc["time"].astype(float)).set_index(["replicate", "patient_id", "time"])
    for o in ("CP", "ANC"):
        stored = tc_idx.loc[wide.index, o].to_numpy()
        assert (wide[o].to_numpy().astype("float32") == stored).all(), o
    manifest = json.loads((res / "manifest.json").read_text())
    listed = {e["path"]: e for e in manifest["outputs"]}
    assert listed["population.parquet"]["rows"] == 300
    for p in obs_parts:
        entry = listed[f"observations/{p.name}"]
        assert entry["content_sha256"] == table_hash(pd.read_parquet(p))
    assert read_provenance(obs_parts[3])["shard"] == 3
    assert listed["population.parquet"]["content_sha256"] == table_hash(pop)
    # population summary: per arm and all arms, acceptance of the inclusion criterion
    assert (pop["crcl"] >= 40).all()
    accepted = read_provenance(res / "population.parquet")["population"]
    assert accepted["inclusion"] == ["crcl >= 40"]
    assert 0.5 < accepted["acceptance_total"] < 1.0
    psum = pd.read_parquet(res / "summary" / "population.parquet")
    assert (res / "summary" / "population.csv").exists()
    assert listed["summary/population.parquet"]["content_sha256"] == table_hash(psum)
    assert (psum["acceptance"] == accepted["acceptance_total"]).all()
    crcl = psum[(psum["arm"] == "(all)") & (psum["covariate"] == "crcl")].iloc[0]
    assert crcl["n"] == 300
    assert crcl["min"] >= 40
    assert manifest["seed"] == 20261122
    assert len(manifest["study_sha256"]) == 64
    prov = read_provenance(parts[3])
    assert prov["shard"] == 3
    assert prov["study_sha256"] == manifest["study_sha256"]
    assert prov["packages"]["numpy"]


def test_bit_identical_across_layouts(runs: dict[str, Path]) -> None:
    """Same study and seed: identical tables with 1 shard/1 worker and 4 shards/2 workers."""
    for table in ("population.parquet", "patients", "timecourse", "observations"):
        a = pd.read_parquet(runs["a"] / table)
        b = pd.read_parquet(runs["b"] / table)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        assert table_hash(a) == table_hash(b)
    for name in ("exposure", "efficacy", "safety", "bands", "population"):
        a = pd.read_parquet(runs["a"] / "summary" / f"{name}.parquet")
        b = pd.read_parquet(runs["b"] / "summary" / f"{name}.parquet")
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_simulate_logs_progress(runs: dict[str, Path]) -> None:
    """Every simulate job logs its progress; the last line counts all its patients (the
    chunks finish in any order, the tables above are in patient order regardless)."""
    for label in ("a", "b"):
        logs = sorted((runs[label] / "logs" / "simulate").glob("part-*.log"))
        total = 0
        for k, path in enumerate(logs):
            n = len(pd.read_parquet(runs[label] / "patients" / f"part-{k:05d}.parquet"))
            lines = re.findall(rf"shard {k}: (\d+)/{n} patients \(([\d.]+) %\)", path.read_text())
            assert lines, path
            assert lines[-1] == (str(n), "100.0"), (path, lines)
            total += n
        assert total == len(pd.read_parquet(runs[label] / "patients"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_external_dask_scheduler_gives_identical_tables(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """A `dask scheduler` and two `dask worker` processes on 127.0.0.1, used through
    execution.scheduler_address, give the same tables as the local cluster."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    procs = [
        subprocess.Popen(
            [
                str(bin_dir / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        str(bin_dir / "dask"),
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--memory-limit",
                        "2GB",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        study = tmp_path / "small.yaml"
        study.write_text(yaml.safe_dump(study_data(), sort_keys=False))
        res = snakemake(tmp_path, study, "shards=2", f"scheduler_address={address}")
        assert res.returncode == 0, res.stderr[-4000:]
        log = (tmp_path / "results" / "small" / "logs" / "simulate" / "part-00000.log").read_text()
        assert f"connecting to the Dask scheduler at {address}" in log
        for table in ("population.parquet", "patients", "timecourse", "observations"):
            a = pd.read_parquet(runs["a"] / table)
            b = pd.read_parquet(tmp_path / "results" / "small" / table)
            pd.testing.assert_frame_equal(a, b, check_exact=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def test_describe_prints_key_numbers(runs: dict[str, Path]) -> None:
    text = describe(runs["b"])
    safety = pd.read_parquet(runs["b"] / "summary" / "safety.parquet")
    row = safety[(safety["arm"] == "200mg_qd") & (safety["grade"] == ">=3")].iloc[0]
    assert f"neutropenia grade >= 3: {100 * row['incidence']:.1f} %" in text
    assert "300 patients, 0 solver failure(s)" in text
    assert "objective_response" in text
    eff = pd.read_parquet(runs["b"] / "summary" / "efficacy.parquet")
    row = eff[(eff["arm"] == "200mg_qd") & (eff["endpoint"] == "tumour_change")].iloc[0]
    assert f"tumour_change: {row['estimate']:.3g} % (95 % CI" in text  # unit from the manifest
    assert re.search(r"cmax +geometric mean [\d.]+ mg/L \(CV", text)
    assert str(runs["b"] / "report") in text


def test_verify_detects_damaged_outputs(runs: dict[str, Path], tmp_path: Path) -> None:
    """`vtrial verify` passes on a run, then names a truncated and a deleted part file."""
    assert main(["verify", str(runs["b"])]) == 0
    copy = tmp_path / "copy"
    shutil.copytree(runs["b"], copy)
    part = copy / "patients" / "part-00002.parquet"
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    (copy / "timecourse" / "part-00003.parquet").unlink()
    (copy / "observations" / "part-00002.parquet").unlink()
    obs = copy / "observations" / "part-00001.parquet"
    df = pd.read_parquet(obs)
    df.loc[0, "dv"] += 1.0  # a changed observation, same row count
    df.to_parquet(obs)
    psum = copy / "summary" / "population.parquet"
    pd.read_parquet(psum).head(3).to_parquet(psum)  # a damaged population summary
    problems = verify(copy)
    assert any(f"{psum}: 3 rows, manifest says" in p for p in problems)
    assert any(str(part) in p and "unreadable" in p for p in problems)
    assert any("timecourse/part-00003.parquet: missing" in p for p in problems)
    assert any("observations/part-00002.parquet: missing" in p for p in problems)
    assert f"{obs}: content differs from the manifest" in problems
    assert main(["verify", str(copy)]) == 1


def test_bad_study_refused_before_compute(tmp_path: Path) -> None:
    data = small_study_data()
    data["arms"][1]["regimen"]["dose"] = -5
    data["population"]["size"] = "many"
    data["arms"][2]["regimen"]["dosee"] = 3
    del data["arms"][1]["regimen"]["route"]
    del data["model"]["parameters"]["CL"]["value"]
    data["model"]["parameters"]["CLX"] = {"value": 1.0}
    study = tmp_path / "bad.yaml"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    res = snakemake(tmp_path, study)
    assert res.returncode != 0
    err = res.stderr
    assert f"{study}: arms[1].regimen.dose: must be > 0, got -5" in err
    assert f'{study}: population.size: must be of type integer, got "many"' in err
    assert "arms[2].regimen: unknown key(s) ['dosee']" in err
    assert f"{study}: arms[1].regimen: 'route' is required" in err
    assert not (tmp_path / "results").exists()


def test_model_problem_refused(tmp_path: Path) -> None:
    data = small_study_data()
    data["model"]["parameters"]["CLX"] = {"value": 1.0}
    study = tmp_path / "bad.yaml"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    res = snakemake(tmp_path, study)
    assert res.returncode != 0
    assert f"{study}: model.parameters.CLX: not a parameter of the model" in res.stderr
    assert not (tmp_path / "results").exists()


def test_slurm_profile_plans_one_job_per_shard(tmp_path: Path) -> None:
    """`snakemake --profile workflow/profiles/slurm -n` shows a sensible plan."""
    study = tmp_path / "small.yaml"
    data = small_study_data()
    data["execution"]["shards"] = 5
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    res = snakemake(
        tmp_path, study, "--profile", str(ROOT / "workflow" / "profiles" / "slurm"), "-n"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert "Using profile" in out
    for shard in range(5):
        assert f"Simulating shard part-{shard:05d}" in out
    assert not (tmp_path / "results").exists()


def test_run_study_in_process_gives_the_workflows_tables(runs: dict[str, Path]) -> None:
    """``vtrial.run_study`` (no Snakemake, no Dask, no files) returns the same tables as
    the workflow, bit for bit: the population, patients, time courses, observations
    and every summary table."""
    res = vtrial.run_study(study_data())
    tables = {
        "population.parquet": res.population,
        "patients": res.patients,
        "timecourse": res.timecourse,
        "observations": res.observations,
    }
    for name, got in tables.items():
        want = pd.read_parquet(runs["a"] / name)
        pd.testing.assert_frame_equal(got, want, check_exact=True)
    for name in ("exposure", "efficacy", "safety", "bands", "population"):
        want = pd.read_parquet(runs["a"] / "summary" / f"{name}.parquet")
        pd.testing.assert_frame_equal(res.summary[name], want, check_exact=True)
