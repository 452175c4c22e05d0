"""The vtrial command line: validate, models, dataset, run (dry and real), describe. verify and
export are tested on real runs in tests/workflow and tests/test_export.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import DEFAULT_STUDY, small_study_data
from vtrial.analysis.design import describe_lines
from vtrial.run.cli import efficacy_line, main, reported_grade


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(DEFAULT_STUDY)]) == 0
    assert "valid study 'kinase-inhibitor-phase2': 2400 patients" in capsys.readouterr().out


def test_validate_reports_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = small_study_data()
    data["arms"][1]["regimen"]["dose"] = 0
    data["population"]["size"] = 2.5
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: arms[1].regimen.dose: must be > 0, got 0" in err
    assert f"{path}: population.size: must be of type integer, got 2.5" in err


def test_models_lists_library(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "friberg" in out
    assert "Friberg LE" in out


def test_dataset_counts_or_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pk.csv"
    path.write_text("ID,TIME,AMT,conc,WT\n7,0,100,.,70\n7,1,.,4.25,70\n7,2,.,x,71\n")
    assert main(["dataset", str(path), "--column", "DV=conc"]) == 1
    err = capsys.readouterr().err
    assert f"{path}: row 3 (line 4), column conc: must be a number, got 'x'" in err
    path.write_text("ID,TIME,AMT,conc,WT\n7,0,100,.,70\n7,1,.,4.25,70\n7,2,.,3.5,71\n")
    assert main(["dataset", str(path), "--column", "DV=conc"]) == 0
    out = capsys.readouterr().out
    assert "1 subjects, 3 records, 1 doses, 2 observations" in out
    assert "varying over time: ['WT']" in out
    assert "4.25" not in out  # counts, never records
    assert main(["dataset", str(path), "--column", "DV"]) == 2


def test_dataset_simulated_as_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--simulate MODEL --out FILE``: the outputs on every record, with individual
    parameters by ID; the model's dose compartments are checked (a dose into CMT 3 of a
    one-compartment model is refused with its row)."""
    path = tmp_path / "pk.csv"
    path.write_text("ID,TIME,AMT,CMT,conc\n7,0,100,2,.\n7,10,.,.,0.7\n")
    pars = tmp_path / "ebe.csv"
    pars.write_text("ID,CL,V1\n7,5,50\n")
    out = tmp_path / "ipred.csv"
    args = ["dataset", str(path), "--column", "DV=conc", "--simulate", "pk_1cmt"]
    assert main([*args, "--parameters", str(pars), "--out", str(out)]) == 0
    assert "2 records simulated as recorded with pk_1cmt" in capsys.readouterr().out
    back = pd.read_csv(out)
    assert back["CP"].iloc[1] == pytest.approx(2.0 * np.exp(-1.0), rel=1e-12)
    assert main(args) == 2  # --out is needed
    path.write_text("ID,TIME,AMT,CMT,conc\n7,0,100,3,.\n7,10,.,.,0.7\n")
    assert main([*args, "--out", str(out)]) == 1
    assert (
        "row 1 (line 2), column CMT: not a compartment the model can dose"
        in capsys.readouterr().err
    )


def test_unknown_arguments_rejected() -> None:
    with pytest.raises(SystemExit):
        main(["models", "--bogus"])


def test_run_dry_run_plans_every_stage(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(DEFAULT_STUDY), "--cores", "1", "-n", "--directory", str(tmp_path)])
    assert code == 0
    out = capfd.readouterr().out
    for rule in ("sample_population", "simulate", "aggregate", "report", "manifest"):
        assert rule in out
    assert not (tmp_path / "results").exists()


def test_run_refuses_a_bad_study_before_snakemake(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    data = small_study_data()
    data["population"]["size"] = -5
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--directory", str(tmp_path)]) == 1
    captured = capfd.readouterr()
    assert "population.size" in captured.err
    assert "Building DAG" not in captured.out + captured.err  # Snakemake never started
    assert not (tmp_path / ".snakemake").exists()


@pytest.mark.workflow
def test_run_then_describe(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """``vtrial run`` runs the study end to end and ends with the key numbers and where
    the results are; ``vtrial describe`` prints the same numbers."""
    data = small_study_data()
    data["population"]["size"] = 40
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["run", str(path), "--cores", "2", "--directory", str(tmp_path)]) == 0
    out = capfd.readouterr().out
    results = tmp_path / "results" / "small"
    assert f"results: {results}" in out
    assert "80 patients, 0 solver failure(s)" in out  # 40 x 2 replicates
    assert f"report: {results / 'report'} (plots and pages)" in out
    assert f"HTML report: make report, or add --report {results / 'report.html'}" in out
    log = (results / "logs" / "simulate" / "part-00000.log").read_text()
    assert "patients (100.0 %)" in log  # progress of the simulate job
    assert main(["describe", str(results)]) == 0
    described = capfd.readouterr().out
    assert described.strip() in out


def test_validate_warns_of_implausible_schedules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``interval: 0.5`` with a 1-h infusion (12 infusions in 6 h, two at once) is valid
    but almost always an hours/days slip: ``vtrial validate`` says so."""
    data = small_study_data()
    data["arms"][1]["regimen"] = {
        "route": "iv_infusion", "dose": 100, "duration": 1, "interval": 0.5, "count": 12
    }  # fmt: skip
    path = tmp_path / "slip.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {path}: arms[1].regimen: overlapping infusions: each lasts 1 h" in err
    assert "doses more often than hourly: 12 doses every 0.5 h (5.5 h in all)" in err
    assert main(["validate", str(DEFAULT_STUDY)]) == 0
    assert "warning" not in capsys.readouterr().err  # the default study has none


# ---- vtrial describe: units and wording a clinical team reads


def test_describe_differences_of_proportions_are_percentage_points() -> None:
    """A difference of proportions or of percent changes is in pp, not %; a CI bound of
    0 computed as 4.3e-19 prints as 0."""
    binary = {"endpoint": "orr", "kind": "binary", "estimate": 0.42, "ci_low": 0.3,
              "ci_high": 0.55, "diff": 0.12, "p_value": 0.01}  # fmt: skip
    assert efficacy_line(binary, {}).endswith("vs control +12.0 pp, p=0.01")
    change = {"endpoint": "tumour_change", "kind": "continuous", "estimate": -31.5,
              "ci_low": 4.337e-19, "ci_high": -25.0, "diff": -20.0, "p_value": 0.2}  # fmt: skip
    line = efficacy_line(change, {"tumour_change": "%"})
    assert "(95 % CI 0 to -25)" in line
    assert line.endswith("vs control -20 pp, p=0.2")
    conc = {**change, "endpoint": "trough", "ci_low": -40.0}
    assert efficacy_line(conc, {"trough": "mg/L"}).endswith("vs control -20 mg/L, p=0.2")


def test_describe_reports_an_adverse_event_at_a_grade_it_has() -> None:
    """Grade >= 3 is reported, unless the event defines fewer grades (two thresholds:
    grade >= 2; it printed 'grade >= 3: 0.0 %' for a grade that does not exist)."""
    assert reported_grade({"output": "ANC", "thresholds": [2.0, 1.5]}) == 2
    assert reported_grade({"output": "ANC", "grading": "ctcae_v5_neutrophil_count_decreased"}) == 3
    assert reported_grade({"probabilities": ["P1", "P2", "P3", "P4"]}) == 3
    assert reported_grade({}) == 3


def test_describe_names_a_predictor_only_when_the_covariates_explain_something(
    tmp_path: Path,
) -> None:
    """A twin study named a 'strongest predictor' at R^2 0.02."""
    eff = pd.DataFrame(
        {"replicate": [np.nan, np.nan], "control": "placebo", "arm": ["a", "b"],
         "endpoint": "e", "mean": 1.0, "sd": 0.5, "p5": 0.1, "p95": 2.0, "better": "",
         "frac_benefit": 0.0, "frac_harm": 0.0, "r_squared": [0.02, 0.6]}
    )  # fmt: skip
    pred = pd.DataFrame(
        {"replicate": np.nan, "arm": ["a", "b"], "endpoint": "e", "in_regression": True,
         "std_coef": [0.1, 0.7], "covariate": "weight"}
    )  # fmt: skip
    eff.to_parquet(tmp_path / "individual_effects.parquet")
    pred.to_parquet(tmp_path / "individual_predictors.parquet")
    lines = [x for x in describe_lines(tmp_path) if x.startswith("  ")]
    assert "R^2 0.02 (the covariates explain little of it: no predictor named)" in lines[0]
    assert "R^2 0.60 (strongest: weight, std coef +0.70)" in lines[1]
