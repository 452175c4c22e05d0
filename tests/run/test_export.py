"""``vtrial export nonmem``: the virtual trial as a NONMEM/Monolix-style dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.model.test_residual import _observed_data
from vtrial import simulate
from vtrial.data.dataset import read_dataset
from vtrial.run import cli
from vtrial.run import stages as pipeline
from vtrial.run.chunk import tolerances
from vtrial.run.export import COLUMNS, nonmem_dataset, study_of_results, write_nonmem
from vtrial.study.config import study_from_dict


def finished(tmp_path: Path, d: dict[str, Any]) -> Path:
    """Run a study's population and one simulate shard in-process; its results folder."""
    study = study_from_dict(d, source="study.yaml")
    out = tmp_path / "results"
    pipeline.run_sample_population(study, out / "population.parquet")
    parts = {k: out / k / "part-00000.parquet" for k in ("patients", "timecourse", "bands")}
    observed = d["outputs"].get("observations") is not None
    pipeline.run_simulate(
        study,
        out / "population.parquet",
        0,
        parts["patients"],
        parts["timecourse"],
        parts["bands"],
        out_observations=out / "observations" / "part-00000.parquet" if observed else None,
        out_doses=out / "doses" / "part-00000.parquet" if study.has_dose_ledger else None,
    )
    written = [out / "population.parquet", *parts.values()]
    pipeline.run_manifest(study, [p for p in written if p.is_file()], out / "manifest.json")
    return out


def small_observed() -> dict[str, Any]:
    d = _observed_data()
    d["population"]["size"] = 9
    d["study"]["replicates"] = 2
    d["arms"][2]["regimen"] = [
        {"route": "iv_infusion", "dose": 2, "unit": "mg/kg", "duration": 1.5},
        {"route": "oral", "dose": 100, "start": 24, "interval": 24, "count": 3},
    ]
    d["execution"].update(shards=1, chunk_size=5)
    return d


@pytest.fixture
def results(tmp_path: Path, sync_dask: None) -> Path:
    """A tiny finished study: population, one simulate shard with observations."""
    return finished(tmp_path, small_observed())


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
    # (arms are numbered 1.. in study order)
    inf = d[(d["ARM"] == 3) & (d["TIME"] == 0.0)]
    assert len(inf) == int((pop["arm_index"] == 2).sum()) > 0
    np.testing.assert_allclose(inf["AMT"], 2.0 * inf["weight"], rtol=1e-12)
    np.testing.assert_allclose(inf["RATE"], inf["AMT"] / 1.5, rtol=1e-12)
    assert (inf["CMT"] == 2).all()
    oral = d.loc[d["ARM"] == 2, "CMT"]
    assert len(oral) > 0
    assert (oral == 1).all()
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
    arms = pd.read_csv(out.with_name("trial_arms.csv"))
    assert arms["ARM"].tolist() == [1, 2, 3]
    assert set(back["ARM"]) <= set(arms["ARM"])


def test_export_simulates_back_to_the_run(results: Path) -> None:
    """The round trip: the exported CSV, read by the dataset reader and simulated with
    each patient's parameters (``vtrial.simulate(model, data=...)``), gives back the
    run's individual predictions on every observation record. CP (exact linear PK) to
    1e-12 relative: the CSV holds the shortest text that reads back exactly. ANC
    (Friberg ODEs: the run stops at its grid, the records at each sample, both at rtol
    1e-6) to 1e-4."""
    study = study_of_results(results)
    out = results.parent / "rt" / "trial.csv"
    write_nonmem(results, out, study=study)
    ds = read_dataset(out, covariates=[])
    pop = pd.read_parquet(results / "population.parquet")
    pop = pop.sort_values(["replicate", "patient_id", "arm_index"]).reset_index(drop=True)
    params = pop[[p for p in study.model.parameters if p in pop]].assign(
        ID=np.arange(1, len(pop) + 1)
    )
    sim = simulate(study.model, params, data=ds, tolerances=tolerances(study))
    assert (sim["solver_status"] == "ok").all()
    back = pd.read_csv(out)
    obs = pd.read_parquet(results / "observations")
    dvid = dict(pd.read_csv(out.with_name("trial_dvid.csv")).values)
    rec = back.assign(IPRED=np.nan)
    for code, name in dvid.items():
        mask = (rec["EVID"] == 0) & (rec["DVID"] == code)
        rec.loc[mask, "IPRED"] = sim.loc[mask.to_numpy(), name].to_numpy()
    got = rec[rec["EVID"] == 0].merge(
        pop[["replicate", "patient_id", "arm_index"]].assign(ID=np.arange(1, len(pop) + 1)),
        on="ID",
    )
    want = obs.assign(arm_index=obs["arm"].map({a: i for i, a in enumerate(study.arm_names)}))
    both = got.merge(
        want,
        left_on=["replicate", "patient_id", "arm_index", "TIME", "DVID"],
        right_on=[
            "replicate",
            "patient_id",
            "arm_index",
            "time",
            want["output"].map({v: k for k, v in dvid.items()}),
        ],
    )
    assert len(both) == len(obs) > 0
    for name, rtol in (("CP", 1e-12), ("ANC", 1e-4)):
        sel = both["output"] == name
        assert sel.sum() > 0
        np.testing.assert_allclose(
            both.loc[sel, "IPRED"], both.loc[sel, "ipred"], rtol=rtol, atol=1e-12
        )


def test_twins_placebo_and_no_sampling(tmp_path: Path, sync_dask: None) -> None:
    """A twin-crossover study exports each twin as its own subject (it crashed on the
    duplicate keys), every patient has a record (placebo patients without sampling an
    EVID 2 record carrying the covariates), and a study that samples nothing says so."""
    d = small_observed()
    d["study"]["design"] = "twin_crossover"
    d["outputs"].pop("observations")
    d["model"].pop("residual_error")
    res = finished(tmp_path, d)
    study = study_of_results(res)
    data, dvid = nonmem_dataset(res, study=study)
    pop = pd.read_parquet(res / "population.parquet")
    assert dvid == {}
    assert data["ID"].nunique() == len(pop) == 9 * 2 * len(study.arm_names)
    arm = data.groupby("ID")["ARM"]
    assert (arm.min() == arm.max()).all()  # one arm per subject
    placebo = data[data["ARM"] == 1]
    assert (placebo["EVID"] == 2).all()
    assert placebo["ID"].nunique() == 9 * 2
    assert placebo["weight"].notna().all()
    # the CLI warns that there is nothing to observe
    out = res.parent / "nm" / "twins.csv"
    assert cli.main(["export", "nonmem", str(res), "--out", str(out)]) == 0


def test_ledger_doses_export_and_simulate_back(tmp_path: Path, sync_dask: None) -> None:
    """With adherence (missed doses, jittered times) the export holds the doses given,
    from the dose ledger, not the plan: missed doses are no records, times are the
    jittered ones, and the records simulate back to the run's CP (1e-12)."""
    d = small_observed()
    d["arms"][1]["adherence"] = {"p_miss": 0.3, "jitter": 1.5}
    res = finished(tmp_path, d)
    study = study_of_results(res)
    data, dvid = nonmem_dataset(res, study=study)
    ledger = pd.read_parquet(res / "doses")
    given = ledger[(ledger["arm"] == study.arm_names[1]) & (ledger["given"] > 0)]
    missed = ledger[(ledger["arm"] == study.arm_names[1]) & (ledger["reason"] == "missed")]
    assert len(missed) > 0  # the test needs some misses
    doses = data[(data["EVID"] == 1) & (data["ARM"] == 2)]
    assert len(doses) == len(given)
    np.testing.assert_array_equal(np.sort(doses["TIME"]), np.sort(given["time"]))
    assert (doses["TIME"] % 24 != 0).any()  # jittered, not the planned times
    pop = pd.read_parquet(res / "population.parquet")
    pop = pop.sort_values(["replicate", "patient_id", "arm_index"]).reset_index(drop=True)
    params = pop[[p for p in study.model.parameters if p in pop]].assign(
        ID=np.arange(1, len(pop) + 1)
    )
    sim = simulate(study.model, params, data=data, tolerances=tolerances(study))
    obs = pd.read_parquet(res / "observations")
    cp = {v: k for k, v in dvid.items()}["CP"]
    mask = ((data["EVID"] == 0) & (data["DVID"] == cp)).to_numpy()
    got = data.loc[mask, ["REP", "PATIENT", "ARM", "TIME"]].assign(
        IPRED=sim.loc[mask, "CP"].to_numpy()
    )
    want = obs[obs["output"] == "CP"].assign(
        ARM=obs["arm"].map({a: i + 1 for i, a in enumerate(study.arm_names)})
    )
    both = got.merge(
        want,
        left_on=["REP", "PATIENT", "ARM", "TIME"],
        right_on=["replicate", "patient_id", "ARM", "time"],
    )
    assert len(both) == len(want) > 0
    np.testing.assert_allclose(both["IPRED"], both["ipred"], rtol=1e-12, atol=1e-14)
