"""The twins stage in the workflow (outputs.twins): one twins job per shard and their
summary, whose files are the in-process tables. (That the manifest lists them and that
a twins study without a dataset is refused is tested without Snakemake, in
tests/run/test_twins_stage.py: a Snakemake start costs seconds here.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import snakemake_cmd
from tests.run.test_twins_stage import IDS, cut_study
from vtrial.run.io import table_hash
from vtrial.run.twin_stage import estimate_twins, twin_summary
from vtrial.study.config import load_study

pytestmark = pytest.mark.workflow


def test_twins_stage_runs_in_the_workflow(tmp_path: Path) -> None:
    study = cut_study(tmp_path)
    target = "results/twins-cut/summary/twins.parquet"
    cmd = snakemake_cmd(tmp_path, study, target, cores=2, config=["shards=2", "workers=1"])
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    stats = {
        tuple(line.split())
        for line in (res.stdout + res.stderr).splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    assert {("twins", "2"), ("twins_summary", "1")} <= stats  # nothing else is needed
    assert not any(job in {"sample_population", "simulate"} for job, _ in stats)
    out = tmp_path / "results" / "twins-cut"
    parts = sorted((out / "twins").glob("*.parquet"))
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet"]
    table = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    assert table["ID"].tolist() == list(IDS)
    loaded = load_study(study)
    expected = estimate_twins(loaded)
    assert table_hash(table) == table_hash(expected)
    summary = pd.read_parquet(out / "summary" / "twins.parquet")
    assert table_hash(summary) == table_hash(twin_summary(loaded, expected))
    assert (out / "summary" / "twins.csv").exists()
    assert "twins shard 1: 4 subjects" in (out / "logs" / "twins" / "part-00001.log").read_text()


def test_the_population_of_twins_waits_for_every_twins_part(tmp_path: Path) -> None:
    """population.dataset.parameters: twins: sample_population (so every simulate job)
    needs the twins of every shard (a dry run: the plan, nothing computed)."""
    from tests.run.test_twin_counterfactual import cut

    study = cut(tmp_path).source
    cmd = snakemake_cmd(tmp_path, Path(study), "-n", cores=2, config=["shards=2"])
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    jobs = out.split("\n[")  # one block per planned job
    [sampling] = [j for j in jobs if "Sampling" in j]
    twins = [f"results/cf-cut/twins/part-0000{s}.parquet" for s in (0, 1)]
    assert all(part in sampling for part in twins), sampling
    simulate = [j for j in jobs if "Simulating shard" in j]
    assert len(simulate) == 2
    assert all("results/cf-cut/population.parquet" in j for j in simulate)
