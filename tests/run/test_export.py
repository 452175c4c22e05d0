"""``vtrial export nonmem``: the virtual trial as a NONMEM/Monolix-style dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.model.test_residual import _observed_data
from vtrial.run import cli
from vtrial.run import stages as pipeline
from vtrial.run.export import COLUMNS, nonmem_dataset, study_of_results
from vtrial.study.config import study_from_dict


@pytest.fixture
def results(tmp_path: Path, sync_dask: None) -> Path:
    """A tiny finished study: population, one simulate shard with observations."""
    d = _observed_data()
    d["population"]["size"] = 9
    d["study"]["replicates"] = 2
    d["arms"][2]["regimen"] = [
        {"route": "iv_infusion", "dose": 2, "unit": "mg/kg", "duration": 1.5},
        {"route": "oral", "dose": 100, "start": 24, "interval": 24, "count": 3},
    ]
    d["execution"].update(shards=1, chunk_size=5)
    study = study_from_dict(d, source="study.yaml")
    out = tmp_path / "results"
    pipeline.run_sample_population(study, out / "population.parquet")
    parts = {k: out / k / "part-00000.parquet" for k in ("patients", "timecourse", "bands")}
    pipeline.run_simulate(
        study,
        out / "population.parquet",
        0,
        parts["patients"],
        parts["timecourse"],
        parts["bands"],
        out_observations=out / "observations" / "part-00000.parquet",
    )
    written = [out / "population.parquet", *parts.values(), out / "observations"]
    pipeline.run_manifest(study, [p for p in written if p.is_file()], out / "manifest.json")
    return out


def test_dataset_records(results: Path) -> None:
    study = study_of_results(results)
    data, dvid = nonmem_dataset(results)
    pop = pd.read_parquet(results / "population.parquet")
    obs = pd.read_parquet(results / "observations")
    assert list(data.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert {"weight", "sex", "bsa"} <= set(data.columns)
    # one ID per (replicate, patient), replicate-major
    assert data["ID"].nunique() == len(pop) == 18
    first = data.groupby("ID")[["REP", "PATIENT"]].first()
    assert first["REP"].is_monotonic_increasing
    # every observation, with its observed value
    o = data[data["EVID"] == 0]
    assert len(o) == len(obs)
    assert dvid == dict(enumerate(sorted(obs["output"].unique()), start=1))
    np.testing.assert_array_equal(np.sort(o["DV"].to_numpy()), np.sort(obs["dv"].to_numpy()))
    assert (o["MDV"] == 0).all()
    # every planned dose: per patient, its arm's number of doses
    n_doses = {
        a: sum(ph.dose_times().size for ph in phs) for a, phs in enumerate(study.arm_phases())
    }
    d = data[data["EVID"] == 1]
    expected = pop["arm_index"].map(n_doses).sum()
    assert len(d) == expected
    assert (d["MDV"] == 1).all()
    # mg/kg infusion: AMT = 2 mg/kg x weight, RATE = AMT / 1.5 h, CMT 2; oral CMT 1
    inf = d[(d["ARM"] == study.arm_names[2]) & (d["TIME"] == 0.0)]
    np.testing.assert_allclose(inf["AMT"], 2.0 * inf["weight"], rtol=1e-12)
    np.testing.assert_allclose(inf["RATE"], inf["AMT"] / 1.5, rtol=1e-12)
    assert (inf["CMT"] == 2).all()
    assert (d.loc[d["ARM"] == study.arm_names[1], "CMT"] == 1).all()
    # sorted by ID and TIME; at a common time the observation (pre-dose) comes first
    key = data[["ID", "TIME"]].to_numpy()
    assert (np.diff(key[:, 0]) >= 0).all()
    same = np.diff(key[:, 0]) == 0
    assert (np.diff(key[:, 1])[same] >= 0).all()
    both = data.groupby(["ID", "TIME"])["EVID"].agg(list)
    assert all(v == sorted(v) for v in both)


def test_cli_export_reads_back(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = results.parent / "nm" / "trial.csv"
    assert cli.main(["export", "nonmem", str(results), "--out", str(out), "--replicate", "1"]) == 0
    assert "records" in capsys.readouterr().out
    back = pd.read_csv(out)
    assert list(back.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert set(back["REP"]) == {1}
    assert back["ID"].nunique() == 9
    key = pd.read_csv(out.with_name("trial_dvid.csv"))
    assert list(key.columns) == ["DVID", "OUTPUT"]
    assert set(back.loc[back["EVID"] == 0, "DVID"]) == set(key["DVID"])
    # categorical covariates are numeric codes, with their key
    assert set(back["sex"]) <= {1, 2}
    cats = pd.read_csv(out.with_name("trial_categories.csv"))
    assert cats[cats["COVARIATE"] == "sex"]["LABEL"].tolist() == ["F", "M"]
