"""The adaptive-dosing examples of config/studies run from the workflow (smaller)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT
from vtrial.run.cli import verify
from vtrial.run.recompute import recompute

from .test_workflow import snakemake

pytestmark = pytest.mark.workflow


@pytest.mark.parametrize(
    ("name", "arm"),
    [("cytotoxic_q3w_rules", "with_rules"), ("antidiabetic_titration", "titrated")],
)
def test_example_runs_with_a_dose_ledger(tmp_path: Path, name: str, arm: str) -> None:
    data = yaml.safe_load((ROOT / "config" / "studies" / f"{name}.yaml").read_text())
    data["population"]["size"] = 60
    data["execution"] = {"shards": 2, "workers": 1, "chunk_size": 20}
    study = tmp_path / f"{name}.yaml"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    res = snakemake(tmp_path, study)
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "results" / data["study"]["name"]
    doses = pd.read_parquet(out / "doses")
    patients = pd.read_parquet(out / "patients")
    assert len(patients) == 60
    assert sorted((out / "doses").glob("part-*.parquet")) == [
        out / "doses" / "part-00000.parquet",
        out / "doses" / "part-00001.parquet",
    ]
    # one ledger row per planned administration of every dosed patient
    dosed = patients[patients["arm"] != "placebo"]
    assert doses.groupby(["replicate", "patient_id"]).ngroups == len(dosed)
    mine = doses[doses["arm"] == arm]
    assert (mine["reason"] != "as_planned").any()  # the rules (or adherence) acted
    for col in ("relative_dose_intensity", "n_holds", "n_reductions", "time_discontinued"):
        assert col in patients.columns
    safety = pd.read_parquet(out / "summary" / "safety.parquet")
    assert set(safety["arm"]) >= {arm}
    if name == "cytotoxic_q3w_rules":  # the oncology example: tumour response as well
        assert patients["best_response"].notna().all()  # every solve succeeded
        assert set(patients["best_response"]) <= {"CR", "PR", "SD", "PD"}
        efficacy = pd.read_parquet(out / "summary" / "efficacy.parquet")
        orr = efficacy[efficacy["endpoint"] == "objective_response"]
        assert set(orr["arm"]) == {"fixed_dose", "with_rules"}
        assert (out / "report" / "bands_TUMOUR.png").exists()
    assert verify(out) == []
    # the dose ledger is recomputed with its shard, identical (vtrial verify --recompute)
    checked = tmp_path / "recomputed"
    assert recompute(out, shards=[1], workers=1, workdir=checked) == []
    assert (checked / "doses" / "part-00001.parquet").exists()
