"""``vtrial twin create|update|rebuild|forecast|recommend`` as a user runs them, and the
checks of ``outputs.twins.posterior|forecast|target`` (each problem named by key, rule
and value, before anything is estimated)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.run.test_forecast import DATA, STUDY
from tests.run.test_twin_state import UPDATE
from vtrial.errors import ConfigError
from vtrial.run.cli import main
from vtrial.study.config import load_study

TWINS = """
  twins:
    posterior: {{method: laplace, samples: 200}}
    forecast:
      horizon: 24
      candidates:
        - {{route: iv_infusion, dose: [500, 1000, 1500], duration: {duration}, interval: 12}}
    target:
      trough: [5, 15]
      probability: 0.6
      safety: {{peak_max: {peak}}}
"""


def _study(tmp_path: Path, duration: float = 1, peak: str = "60", extra: str = "") -> Path:
    text = STUDY.format(data=tmp_path / "d.csv").replace(
        "outputs: {observations: {outputs: [CP]}}",
        "outputs:\n  observations: {outputs: [CP]}" + TWINS.format(duration=duration, peak=peak),
    )
    (tmp_path / "d.csv").write_text(DATA)
    (tmp_path / "s.yaml").write_text(text + extra)
    return tmp_path / "s.yaml"


def test_twin_commands_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = str(_study(tmp_path))
    twin = str(tmp_path / "twin")
    assert main(["twin", "create", study, "--subject", "1", "--twin", twin]) == 0
    (tmp_path / "u.csv").write_text(UPDATE)
    assert (
        main(["twin", "update", study, "--twin", twin, "--records", str(tmp_path / "u.csv")]) == 0
    )
    assert "step 1, 2 new record(s)" in capsys.readouterr().out
    assert main(["twin", "rebuild", study, "--twin", twin]) == 0
    assert capsys.readouterr().out.count("identical") == 2
    out = tmp_path / "out"
    assert main(["twin", "recommend", study, "--twin", twin, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_parquet(out / "twin-1" / "candidates.parquet")
    assert len(table) == 3
    assert table["start"].iloc[0] == 36.0  # the update's dose at 24 h, every 12 h
    rec = table[table["recommended"]]
    assert len(rec) == 1
    assert f"recommended: {rec['regimen'].iloc[0]} from 36 h" in printed
    # the forecast from the twin's last step uses every record, updates included
    est = pd.read_parquet(out / "twin-1" / "estimate.parquet")
    state = json.loads((tmp_path / "twin" / "twin.json").read_text())
    assert est["eta"].tolist() == state["steps"][-1]["eta"]
    assert main(["twin", "forecast", study, "--subject", "1", "--out", str(tmp_path / "o2")]) == 0


def test_twin_section_problems_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        load_study(_study(tmp_path, duration=13))
    assert (
        "outputs.twins.forecast.candidates[0]: duration: an infusion's duration must be > 0 "
        "and <= its interval (12 h), got 13.0" in str(err.value)
    )
    with pytest.raises(ConfigError) as err:
        load_study(_study(tmp_path, peak="60, cmin_max: 3"))
    assert (
        "outputs.twins.target.safety.cmin_max: a target reads a forecast metric (trough, "
        "peak, auc_24, CP, ae_high_exposure_grade), got 'cmin'" in str(err.value)
    )
    # recommend needs a target: nothing is estimated, exit 1, the key named
    text = _study(tmp_path).read_text()
    start = text.index("    target:")
    (tmp_path / "s.yaml").write_text(text[:start])
    code = main(
        [
            "twin",
            "recommend",
            str(tmp_path / "s.yaml"),
            "--subject",
            "1",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 1
    assert "outputs.twins.target: vtrial twin recommend needs it" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_an_adverse_event_grade_is_a_guard(tmp_path: Path) -> None:
    """``ae_<event>_grade_max`` guards the grade reached between the first candidate dose
    and the end; the study's event graded from CP (thresholds 30, 45, 60 mg/L)."""
    study = load_study(_study(tmp_path, peak="60, ae_high_exposure_grade_max: 1"))
    assert study.twins is not None
    assert study.twins.target is not None
    assert dict(study.twins.target.guards)["ae_high_exposure_grade"] == ("max", 1.0)
    with pytest.raises(ConfigError, match=r"safety\.ae_low_grade_max: a target reads"):
        load_study(_study(tmp_path, peak="60, ae_low_grade_max: 1"))
