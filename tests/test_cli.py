"""The vtrial command line (validate, models); verify is tested on real runs in tests/workflow."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import DEFAULT_STUDY, small_study_data
from vtrial.cli import main


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
