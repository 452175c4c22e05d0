"""End-to-end Snakemake runs of a twin crossover study with parameter uncertainty:
the design's tables are written, listed in the manifest, verified, described, and
bit-identical across execution layouts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from tests.conftest import small_study_data
from tests.workflow.test_workflow import snakemake
from vtrial.run.cli import describe, verify
from vtrial.run.io import table_hash

pytestmark = pytest.mark.workflow

SIZE, REPLICATES, ARMS = 30, 2, 3
DESIGN_TABLES = ("individual_effects", "individual_predictors", "uncertainty")


def study_data() -> dict[str, Any]:
    d = small_study_data()
    d["study"]["name"] = "twin"
    d["population"]["size"] = SIZE
    d["study"]["replicates"] = REPLICATES
    d["study"]["design"] = "twin_crossover"
    d["study"]["uncertainty"] = {
        "theta": {"covariance": "theta_cov.csv", "parameters": ["CL", "V1"]},
        "omega_df": 60,
    }
    d["endpoints"]["tumour_change"].update(better="lower", margin=5)
    d["endpoints"]["objective_response"]["better"] = "higher"
    return d


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The twin study run with 1 shard / 1 worker and 3 shards / 2 workers."""
    base = tmp_path_factory.mktemp("wf_design")
    (base / "theta_cov.csv").write_text("name,CL,V1\nCL,0.02,0.005\nV1,0.005,0.03\n")
    study = base / "twin.yaml"
    study.write_text(yaml.safe_dump(study_data(), sort_keys=False))
    out = {}
    for label, shards, workers in (("a", 1, 1), ("b", 3, 2)):
        wd = base / label
        wd.mkdir()
        res = snakemake(wd, study, f"shards={shards}", f"workers={workers}")
        assert res.returncode == 0, res.stderr[-4000:]
        out[label] = wd / "results" / "twin"
    return out


def listed_path(res: Path, rel: str) -> bool:
    """Whether the manifest lists ``rel``."""
    manifest = json.loads((res / "manifest.json").read_text())
    return rel in {e["path"] for e in manifest["outputs"]}


def test_twin_outputs_manifest_and_describe(runs: dict[str, Path]) -> None:
    res = runs["b"]
    rows = SIZE * REPLICATES * ARMS
    assert len(pd.read_parquet(res / "population.parquet")) == rows
    patients = pd.read_parquet(res / "patients")
    assert len(patients) == rows
    assert not patients.duplicated(["replicate", "patient_id", "arm"]).any()
    assert (patients.groupby(["replicate", "patient_id"]).size() == ARMS).all()
    for name in DESIGN_TABLES:
        assert (res / "summary" / f"{name}.csv").exists()
    eff = pd.read_parquet(res / "summary" / "individual_effects.parquet")
    assert len(eff) == (REPLICATES + 1) * (ARMS - 1) * 2  # per replicate and pooled
    assert (eff.loc[eff["replicate"].isna(), "n"] == SIZE * REPLICATES).all()
    for ep in ("tumour_change", "objective_response"):  # the individual-effects plots
        plot = res / "report" / f"individual_effects_{ep}.png"
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert listed_path(res, f"report/individual_effects_{ep}.png")
    unc = pd.read_parquet(res / "summary" / "uncertainty.parquet")
    assert sorted(set(unc["replicate"])) == [0, 1]
    assert len(unc) == REPLICATES * (2 + 45)  # 2 theta + 9 * 10 / 2 OMEGA elements
    manifest = json.loads((res / "manifest.json").read_text())
    listed = {e["path"]: e for e in manifest["outputs"]}
    for name in DESIGN_TABLES:
        entry = listed[f"summary/{name}.parquet"]
        assert entry["content_sha256"] == table_hash(
            pd.read_parquet(res / "summary" / f"{name}.parquet")
        )
    assert verify(res) == []
    text = describe(res)
    assert "individual effects vs placebo (twin crossover" in text
    assert "200mg_qd tumour_change: mean" in text
    assert "parameter uncertainty (2 replicate draws" in text
    assert "theta CL: nominal 5" in text


def test_twin_tables_bit_identical_across_layouts(runs: dict[str, Path]) -> None:
    for table in ("population.parquet", "patients", "timecourse"):
        a = pd.read_parquet(runs["a"] / table)
        b = pd.read_parquet(runs["b"] / table)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    for name in ("efficacy", "bands", *DESIGN_TABLES):
        a = pd.read_parquet(runs["a"] / "summary" / f"{name}.parquet")
        b = pd.read_parquet(runs["b"] / "summary" / f"{name}.parquet")
        pd.testing.assert_frame_equal(a, b, check_exact=True)
