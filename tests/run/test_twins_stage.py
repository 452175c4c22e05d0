"""The twins stage (vtrial.run.twin_stage) on a small cut of the vancomycin example:
the twin table is bit-identical whatever the shards, workers or chunks; parts are
written atomically with a fixed schema; the summary is of the whole cohort; the
manifest lists the files and ``vtrial verify`` checks them; ``vtrial twin fit``
writes the same table; a twins study without a dataset is refused before anything
is written."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from distributed import Client, LocalCluster

from tests.conftest import ROOT, small_study_data
from vtrial.errors import ConfigError, DataError
from vtrial.run import twin_stage
from vtrial.run.cli import main, verify
from vtrial.run.io import read_provenance, stale_temporaries, table_hash
from vtrial.run.parallel import DASHBOARD_ADDRESS
from vtrial.run.stages import run_manifest
from vtrial.run.twins import fit_twins
from vtrial.study.config import Study, load_study, study_from_dict

EXAMPLE = ROOT / "config" / "studies" / "vancomycin_tdm.yaml"
#: subjects of the cut: both arms (standard 1-20, loading 21-40)
IDS = (1, 2, 3, 4, 21, 22, 23, 24)


def cut_study(base: Path) -> Path:
    """Write the vancomycin example with 8 of its subjects (:data:`IDS`), one
    replicate and ``outputs.twins`` into ``base``; return the study file."""
    data = pd.read_csv(EXAMPLE.parent / "data" / "vancomycin_tdm.csv", dtype=str)
    data[data["ID"].astype(int).isin(IDS)].to_csv(base / "tdm.csv", index=False)
    d = yaml.safe_load(EXAMPLE.read_text())
    d["study"]["name"] = "twins-cut"
    d["study"]["replicates"] = 1
    d["population"]["dataset"]["path"] = "tdm.csv"
    d["outputs"]["twins"] = {"method": "map"}
    d["execution"] = {"shards": 1, "workers": 1, "chunk_size": 200}
    path = base / "study.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def study_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cut_study(tmp_path_factory.mktemp("twins"))


def with_execution(path: Path, **execution: Any) -> Study:
    return load_study(path, overrides={"execution": execution})


@contextlib.contextmanager
def thread_client(execution: Any, *, threads: int) -> Iterator[Client]:
    """A local Dask cluster of ``threads`` single-threaded workers in this process (a
    process cluster takes seconds to start here: its workers import everything)."""
    with (
        LocalCluster(
            n_workers=threads,
            threads_per_worker=1,
            processes=False,
            dashboard_address=DASHBOARD_ADDRESS,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def run_stage(study: Study, out: Path) -> tuple[list[Path], Path]:
    """Every shard's twins and the summary, as the workflow runs them."""
    n = int(study.execution["shards"])
    parts = [out / "twins" / f"part-{s:05d}.parquet" for s in range(n)]
    for s, part in enumerate(parts):
        twin_stage.run_twins(study, s, part)
    summary = out / "summary" / "twins.parquet"
    twin_stage.run_twin_summary(study, parts, summary)
    return parts, summary


def test_twins_identical_across_shards_workers_and_chunks(
    study_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = with_execution(study_file, shards=1)
    parts1, summary1 = run_stage(one, tmp_path / "one")
    three = with_execution(study_file, shards=3)
    parts3, summary3 = run_stage(three, tmp_path / "three")
    table1 = pd.read_parquet(parts1[0])
    assert table1["ID"].tolist() == list(IDS)
    assert (table1["status"] == "ok").all()
    assert [len(pd.read_parquet(p)) for p in parts3] == [3, 3, 2]  # contiguous, file order
    table3 = pd.concat([pd.read_parquet(p) for p in parts3], ignore_index=True)
    assert table_hash(table3) == table_hash(table1)
    assert table_hash(pd.read_parquet(summary3)) == table_hash(pd.read_parquet(summary1))
    # 2 Dask workers, chunks of 3 subjects (3 tasks), collected as they finish
    monkeypatch.setattr(twin_stage, "dask_client", thread_client)
    monkeypatch.setattr(twin_stage, "TASK_SUBJECTS", 3)
    two = twin_stage.estimate_twins(one, threads=2)
    assert table_hash(two) == table_hash(table1)
    # the estimator's own cohort fit (the stage adds each fit's Laplace covariance), and
    # the summary's shrinkage is the cohort's
    fit = fit_twins(one)
    pd.testing.assert_frame_equal(
        fit.table,
        table1[list(fit.table.columns)],
        check_dtype=False,
        check_index_type=False,
        check_exact=True,
    )
    names = ("CL", "V1", "V2")
    for f, (_, row) in zip(fit.fits, table1.iterrows(), strict=True):
        lower = [row[f"cov_{names[i]}_{names[j]}"] for i in range(3) for j in range(i + 1)]
        assert lower == [f.covariance[i, j] for i in range(3) for j in range(i + 1)]
    summary = pd.read_parquet(summary1).set_index("parameter")
    assert summary["shrinkage"].to_dict() == fit.shrinkage
    assert (summary["n_subjects"] == len(IDS)).all()
    assert (summary["n_ok"] == len(IDS)).all()
    meta = read_provenance(parts3[1])
    assert (meta["stage"], meta["shard"], meta["shards"], meta["subjects"]) == (
        "twins",
        1,
        3,
        [3, 6],
    )


def test_a_shard_is_written_whole_or_not_at_all(
    study_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard without subjects writes an empty table of the same schema; a failing
    estimate leaves neither the file nor a temporary."""
    # 10 shards of 8 subjects (2 replicates: up to 16 simulate shards)
    many = load_study(
        study_file, overrides={"execution": {"shards": 10}, "study": {"replicates": 2}}
    )
    empty = tmp_path / "twins" / "part-00009.parquet"
    assert twin_stage.run_twins(many, 9, empty) == 0
    table = pd.read_parquet(empty)
    assert len(table) == 0
    assert list(table.columns) == [
        *twin_stage.TWIN_COLUMNS,
        *(f"eta_{p}" for p in ("CL", "V1", "V2")),
        *(f"se_{p}" for p in ("CL", "V1", "V2")),
        *("cov_CL_CL", "cov_V1_CL", "cov_V1_V1", "cov_V2_CL", "cov_V2_V1", "cov_V2_V2"),
    ]
    assert str(table["ID"].dtype) == "int64"

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("killed mid-shard")

    monkeypatch.setattr(twin_stage, "fit_cohort", broken)
    part = tmp_path / "twins" / "part-00000.parquet"
    with pytest.raises(RuntimeError, match="killed mid-shard"):
        twin_stage.run_twins(many, 0, part)
    assert not part.exists()
    assert stale_temporaries(part) == []


def test_summary_needs_every_subject_once(study_file: Path, tmp_path: Path) -> None:
    study = with_execution(study_file, shards=2)
    parts = [tmp_path / f"part-{s:05d}.parquet" for s in range(2)]
    for s, p in enumerate(parts):
        twin_stage.run_twins(study, s, p)
    with pytest.raises(DataError, match="4 subjects, not the dataset's 8"):
        twin_stage.run_twin_summary(study, parts[:1], tmp_path / "twins.parquet")
    with pytest.raises(DataError, match="in file order"):
        twin_stage.run_twin_summary(study, parts[::-1], tmp_path / "twins.parquet")
    assert not (tmp_path / "twins.parquet").exists()


def test_manifest_lists_the_twins_and_verify_checks_them(study_file: Path, tmp_path: Path) -> None:
    study = with_execution(study_file, shards=2)
    root = tmp_path / "results" / study.name
    parts, summary = run_stage(study, root)
    manifest = run_manifest(study, [*parts, summary], root / "manifest.json")
    listed = {e["path"]: e for e in manifest["outputs"]}
    assert set(listed) == {"twins/part-00000.parquet", "twins/part-00001.parquet",
                           "summary/twins.parquet"}  # fmt: skip
    assert listed["summary/twins.parquet"]["rows"] == 3  # CL, V1, V2
    assert verify(root) == []
    lines = twin_stage.twin_lines(root / "summary")
    assert "8 subjects estimated, 8 ok" in lines[-1]
    damaged = pd.read_parquet(parts[1])
    damaged.loc[0, "eta_CL"] += 1e-9
    damaged.to_parquet(parts[1])
    assert verify(root) == [f"{parts[1]}: content differs from the manifest"]


def test_cli_twin_fit_writes_the_stage_table(
    study_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fit"
    assert main(["twin", "fit", str(study_file), "--out", str(out)]) == 0
    study = load_study(study_file)
    table = pd.read_parquet(out / "twins.parquet")
    assert table_hash(table) == table_hash(twin_stage.estimate_twins(study))
    assert (out / "twins.csv").exists()
    assert (out / "summary.csv").exists()
    assert "8 subject(s) estimated (map), 8 ok" in capsys.readouterr().out
    some = tmp_path / "some"
    assert main(["twin", "fit", str(study_file), "--out", str(some), "--subjects", "22", "1"]) == 0
    part = pd.read_parquet(some / "twins.parquet")
    assert part["ID"].tolist() == [1, 22]  # file order
    expected = table[table["ID"].isin([1, 22])].reset_index(drop=True)
    assert table_hash(part) == table_hash(expected)
    # an unknown ID: named, exit 1, nothing written
    bad = tmp_path / "bad"
    assert main(["twin", "fit", str(study_file), "--out", str(bad), "--subjects", "1", "99"]) == 1
    err = capsys.readouterr().err
    assert "nothing written" in err
    assert "subjects: not IDs of the dataset tdm.csv (8 subjects: 1, 2, 3, 4, 21," in err
    assert "got ['99']" in err
    assert not bad.exists()


def test_twins_without_a_dataset_are_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = small_study_data()
    data["outputs"]["twins"] = {}
    path = tmp_path / "sampled.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as info:
        load_study(path)
    [problem] = info.value.problems
    assert (problem.file, problem.where) == (str(path), "outputs.twins")
    assert problem.message.endswith(
        "it needs population.dataset, got no population.dataset (the patients are sampled)"
    )
    out = tmp_path / "fit"
    assert main(["twin", "fit", str(path), "--out", str(out)]) == 1
    assert f"{path}: outputs.twins: twins are estimated" in capsys.readouterr().err
    assert main(["validate", str(path)]) == 1
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [path]
    data["outputs"]["twins"] = {"method": "laplace"}
    with pytest.raises(ConfigError, match=r"outputs\.twins\.method: must be one of \['map'\]"):
        study_from_dict(data)


def test_validate_reports_what_the_estimator_needs(
    study_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A valid study whose observed output has no residual error: valid to simulate,
    not to estimate twins (vtrial.run.twins.twin_problems)."""
    d = yaml.safe_load(study_file.read_text())
    d["population"]["dataset"]["path"] = str(study_file.parent / "tdm.csv")
    d["model"]["residual_error"]["CP"] = {"lloq": 0.5}
    path = tmp_path / "no_error.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    study = load_study(path)  # a valid study
    with pytest.raises(ConfigError, match=r"model\.residual_error\.CP: an observed output"):
        twin_stage.check_twins(study)
    assert main(["validate", str(path)]) == 1
    assert "model.residual_error.CP: an observed output needs" in capsys.readouterr().err


def test_a_twins_job_takes_cores_only_for_its_dask_workers(
    study_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard of at most TASK_SUBJECTS subjects is estimated in the job's process: its
    job needs one core (Snakemake then runs the shards' jobs side by side)."""
    assert twin_stage.twin_threads(with_execution(study_file, shards=2, workers=2)) == 1
    monkeypatch.setattr(twin_stage, "TASK_SUBJECTS", 3)
    assert twin_stage.twin_threads(with_execution(study_file, shards=2, workers=2)) == 2
    assert twin_stage.twin_threads(with_execution(study_file, shards=3, workers=2)) == 1
    remote = with_execution(study_file, shards=1, workers=2, scheduler_address="tcp://x:1")
    assert twin_stage.twin_threads(remote) == 1
