"""Studies driven by a dataset (``population.dataset``): recorded doses with time-varying
covariates against a closed form, the study's arms applied to a dataset's subjects,
parameter sources, and every problem reported before compute."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from vtrial.errors import ConfigError
from vtrial.population.sampling import sample_population
from vtrial.run.chunk import simulate_chunk
from vtrial.study.config import load_study, study_from_dict

README = Path(__file__).resolve().parents[2] / "config" / "README.md"

# subject 1: oral 100 mg at 0 and 24 h, weight 70 kg then 90 kg from the record at 24 h;
# subject 2: oral 200 mg at 0, weight 50 then 55 kg
RECORDS = """ID,TIME,EVID,AMT,CMT,DV,WT,ARM
1,0,1,100,1,.,70,A
1,1,0,.,2,1.5,70,A
1,24,0,.,2,0.5,90,A
1,24,1,100,1,.,90,A
1,30,0,.,2,1.9,90,A
2,0,1,200,1,.,50,B
2,2,0,.,2,3.1,50,B
2,12,0,.,2,1.2,55,B
"""
KA, V = 1.0, 50.0


def _study(tmp_path: Path, records: str = RECORDS, **over: Any) -> dict[str, Any]:
    (tmp_path / "data.csv").write_text(records)
    study: dict[str, Any] = {
        "study": {"name": "ds", "seed": 3},
        "population": {"dataset": {"path": "data.csv", "arm_column": "ARM"}},
        "model": {
            "pk": "pk_1cmt",
            "parameters": {"CL": {"value": 5, "covariates": "(WT / 70) ** 0.75"}},
            "iiv": {"omega": {"CL": 0.09}},
            "residual_error": {"CP": {"proportional": 0.1}},
        },
        "outputs": {"observations": {"outputs": ["CP"]}},
    }
    for key, value in over.items():
        study[key] = value
    return study


def _load(tmp_path: Path, study: dict[str, Any]):
    return study_from_dict(study, source="s.yaml", base_dir=tmp_path)


def _oral_piece(ad: float, ac: float, k: float, dt: float) -> tuple[float, float]:
    """Closed form of a 1-compartment oral model over ``dt`` with elimination rate ``k``."""
    ac2 = ac * np.exp(-k * dt) + ad * KA / (KA - k) * (np.exp(-k * dt) - np.exp(-KA * dt))
    return ad * np.exp(-KA * dt), ac2


def _subject1(eta: float, interpolation: str) -> np.ndarray:
    """CP of subject 1 at 1, 24 and 30 h. NOCB: weight 90 from just after the record at
    1 h (the next record's value holds over the interval ending at it); LOCF: from 24 h."""
    cl = {w: 5 * (w / 70) ** 0.75 * np.exp(eta) for w in (70, 90)}
    ad, ac = _oral_piece(100.0, 0.0, cl[70] / V, 1.0)
    c1 = ac / V
    w = 90 if interpolation == "nocb" else 70
    ad, ac = _oral_piece(ad, ac, cl[w] / V, 23.0)
    c24 = ac / V
    ad, ac = _oral_piece(ad + 100.0, ac, cl[90] / V, 6.0)
    return np.array([c1, c24, ac / V])


@pytest.mark.parametrize("interpolation", ["nocb", "locf"])
def test_recorded_doses_with_a_time_varying_covariate_match_the_closed_form(
    tmp_path: Path, interpolation: str
) -> None:
    study = _study(tmp_path)
    study["population"]["dataset"]["interpolation"] = interpolation
    s = _load(tmp_path, study)
    assert s.recorded
    assert s.arm_names == ["A", "B"]
    assert s.size == 2
    assert s.end == 30.0
    pop = sample_population(s)
    assert pop["ID"].tolist() == ["1", "2"]
    assert pop["arm"].tolist() == ["A", "B"]
    assert pop["WT"].tolist() == [70.0, 50.0]  # baseline covariates
    patients, _, _, obs, _ = simulate_chunk(s, pop)
    assert (patients["solver_status"] == "ok").all()
    one = obs[obs["patient_id"] == 1]
    assert one["time"].tolist() == [1.0, 24.0, 30.0]
    expected = _subject1(float(pop["eta_CL"][0]), interpolation)
    np.testing.assert_allclose(one["ipred"].to_numpy(), expected, rtol=1e-6)
    # observed with the declared proportional error: dv / ipred - 1 = 0.1 eps
    assert np.all(np.abs(obs["dv"] / obs["ipred"] - 1) < 0.6)
    assert not np.allclose(obs["dv"], obs["ipred"])


def test_a_chunk_gives_the_same_rows_whatever_it_is_split_into(tmp_path: Path) -> None:
    study = _study(tmp_path)
    study["study"]["replicates"] = 3
    s = _load(tmp_path, study)
    pop = sample_population(s)
    assert len(pop) == 6
    whole = simulate_chunk(s, pop)
    parts = [simulate_chunk(s, pop.iloc[i : i + 1].reset_index(drop=True)) for i in range(6)]
    for k in (0, 3):  # patients, observations
        joined = pd.concat([p[k] for p in parts], ignore_index=True)
        pd.testing.assert_frame_equal(joined, whole[k].reset_index(drop=True))


def test_parameters_typical_and_from_a_table(tmp_path: Path) -> None:
    study = _study(tmp_path)
    study["population"]["dataset"]["parameters"] = "typical"
    pop = sample_population(_load(tmp_path, study))
    np.testing.assert_allclose(pop["CL"], 5 * (np.array([70.0, 50.0]) / 70) ** 0.75, rtol=1e-15)
    assert not any(c.startswith("eta_") for c in pop)
    (tmp_path / "ebe.csv").write_text("ID,CL,V1,other\n2,3.5,40,1\n1,4.5,60,2\n")
    study["population"]["dataset"]["parameters"] = {"table": "ebe.csv"}
    s = _load(tmp_path, study)
    pop = sample_population(s)
    assert pop["CL"].tolist() == [4.5, 3.5]
    assert pop["V1"].tolist() == [60.0, 40.0]
    _, _, _, obs, _ = simulate_chunk(s, pop)
    # the table's CL holds throughout: a single-dose one-compartment closed form
    k = 3.5 / 40.0
    t = np.array([2.0, 12.0])
    ref = 200 * KA / (40.0 * (KA - k)) * (np.exp(-k * t) - np.exp(-KA * t))
    np.testing.assert_allclose(obs[obs["patient_id"] == 2]["ipred"], ref, rtol=1e-6)


def test_the_study_arms_replace_the_recorded_doses(tmp_path: Path) -> None:
    arms = [
        {"name": "A", "regimen": {"route": "oral", "dose": 50}},
        {"name": "B", "regimen": {"route": "iv_bolus", "dose": 80}},
    ]
    study = _study(tmp_path, arms=arms)
    study["outputs"] = {"observations": {"outputs": ["CP"], "times": [2.0]}}
    s = _load(tmp_path, study)
    assert not s.recorded
    assert s.arm_names == ["A", "B"]
    assert s.size == 2
    pop = sample_population(s)
    assert pop["arm"].tolist() == ["A", "B"]  # from the arm column
    _, _, _, obs, _ = simulate_chunk(s, pop)
    cl = float(pop["CL"][1])
    np.testing.assert_allclose(obs["ipred"][1], 80 / V * np.exp(-cl / V * 2.0), rtol=1e-6)
    # every subject under every arm, keeping its covariates
    study["study"].update(design="twin_crossover", control_arm="A")
    del study["population"]["dataset"]["arm_column"]
    pop = sample_population(_load(tmp_path, study))
    assert pop["ID"].tolist() == ["1", "1", "2", "2"]
    assert pop["arm"].tolist() == ["A", "B"] * 2
    assert pop["WT"].tolist() == [70.0, 70.0, 50.0, 50.0]


def test_one_recorded_arm_without_an_arm_column(tmp_path: Path) -> None:
    study = _study(tmp_path)
    del study["population"]["dataset"]["arm_column"]
    s = _load(tmp_path, study)
    assert s.arm_names == ["recorded"]
    assert sample_population(s)["arm"].tolist() == ["recorded", "recorded"]


def _problems(tmp_path: Path, study: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, study)
    return [f"{p.file}: {p.where}: {p.message}" for p in info.value.problems]


def test_every_problem_before_compute(tmp_path: Path) -> None:
    study = _study(tmp_path)
    study["population"]["size"] = 10
    study["population"]["dataset"]["doses"] = "recorded"
    study["arms"] = [{"name": "A", "regimen": {"route": "oral", "dose": 1}}]
    found = _problems(tmp_path, study)
    assert any("population.size: a dataset's patients are its subjects" in p for p in found)
    assert any(
        p.startswith("s.yaml: arms: with population.dataset.doses 'recorded'") for p in found
    )

    study = _study(tmp_path)
    study["population"]["dataset"]["doses"] = "arms"
    assert any(
        "s.yaml: arms: population.dataset.doses 'arms'" in p for p in _problems(tmp_path, study)
    )

    arms = [{"name": "A", "regimen": {"route": "oral", "dose": 1}}]
    found = _problems(tmp_path, _study(tmp_path, arms=arms))
    assert any(
        "arm_column: every value of 'ARM' must name an arm ['A'], got ['B']" in p for p in found
    )

    study = _study(tmp_path, simulation={"end": 20.0})
    assert any(
        "simulation.end: must cover the dataset's last record at 30 h" in p
        for p in _problems(tmp_path, study)
    )

    reset = RECORDS + "2,20,3,.,.,.,55,B\n"
    found = _problems(tmp_path, _study(tmp_path, reset))
    assert any("column EVID: a reset (EVID 3, 4)" in p and "got 3" in p for p in found)

    bad = RECORDS.replace("2,12,0,.,2,1.2,55,B", "2,12,0,.,2,1.2,heavy,B")
    found = _problems(tmp_path, _study(tmp_path, bad))
    assert any(
        re.search(r"data\.csv: row 8 \(line 9\), column WT: .*got 'heavy'", p) for p in found
    )

    study = _study(tmp_path)
    study["outputs"] = {"observations": {"outputs": ["CP"], "times": [1.0]}}
    assert any(
        "observations are the dataset's observation records" in p
        for p in _problems(tmp_path, study)
    )

    (tmp_path / "ebe.csv").write_text("ID,CL\n1,4.5\n")
    study = _study(tmp_path)
    study["population"]["dataset"]["parameters"] = {"table": "ebe.csv"}
    assert any(
        "every subject of the dataset needs a row: 1 have none (the first: ID 2)" in p
        for p in _problems(tmp_path, study)
    )

    study = _study(tmp_path)
    study["population"]["covariates"] = {"age": {"constant": 40}}
    assert any(
        "population.covariates: the patients of population.dataset" in p
        for p in _problems(tmp_path, study)
    )


def test_the_readme_example_loads(tmp_path: Path) -> None:
    block = next(
        yaml.safe_load(b)
        for b in re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
        if "dataset" in (yaml.safe_load(b) or {}).get("population", {})
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tdm.csv").write_text(RECORDS.replace("DV", "conc"))
    block["study"] = {"name": "readme", "seed": 1}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(block))
    s = load_study(path)
    assert s.recorded
    assert s.arm_names == ["A", "B"]


def test_parameters_from_the_fits_etas(tmp_path: Path) -> None:
    from tests.study.test_from_fit import MAP, write_fit

    write_fit(tmp_path / "fits")
    records = "ID,TIME,AMT,DV,weight\n" + "".join(
        f"{i},0,100,.,{w}\n{i},2,0,1.0,{w}\n" for i, w in ((1, 60), (2, 70), (7, 85))
    )
    (tmp_path / "data.csv").write_text(records)
    study: dict[str, Any] = {
        "study": {"name": "fit", "seed": 1},
        "population": {"dataset": {"path": "data.csv", "parameters": "fit"}},
        "model": {
            "pk": "pk_2cmt",
            "parameters": {"CL": {"covariates": "(weight / 70) ** 0.75"}},
            "from_fit": {"ext": "fits/run12.ext", "phi": "fits/run12.phi", "map": MAP},
        },
        "outputs": {"observations": {"outputs": ["CP"]}},
    }
    pop = sample_population(_load(tmp_path, study))
    eta_cl = np.array([0.1, -0.3, 0.0])  # ETA(1) of the .phi's subjects 1, 2, 7
    expected = 4.5 * (np.array([60.0, 70.0, 85.0]) / 70) ** 0.75 * np.exp(eta_cl)
    np.testing.assert_allclose(pop["CL"], expected, rtol=1e-15)
    np.testing.assert_allclose(pop["V1"], 36.0 * np.exp([-0.2, 0.15, 0.25]), rtol=1e-15)
    (tmp_path / "data.csv").write_text(records + "4,0,100,.,70\n")
    found = _problems(tmp_path, study)
    assert any("1 have none (the first: ID 4)" in p for p in found)
    del study["model"]["from_fit"]["phi"]
    found = _problems(tmp_path, study)
    assert any("'fit' takes each subject's ETAs from model.from_fit.phi" in p for p in found)
