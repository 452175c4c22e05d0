"""Twins of a dataset study's subjects (vtrial.run.twins): the worked vancomycin
example's patients are estimated (every fit converged, the objective at each estimate
is the estimator's own objective recomputed), and what keeps a study from estimating
is reported before anything runs, naming the key or the dataset's row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT
from vtrial.errors import ConfigError
from vtrial.estimation.map import objective
from vtrial.run.twins import fit_twins, twin_cohort, twin_problems
from vtrial.study.config import load_study

STUDY = ROOT / "config" / "studies" / "vancomycin_tdm.yaml"


def test_vancomycin_patients_are_estimated() -> None:
    study = load_study(STUDY)
    fit = fit_twins(study, subjects=[0, 5, 22])
    assert (fit.table["status"] == "ok").all()
    assert fit.table["ID"].tolist() == [1, 6, 23]
    data, prior = twin_cohort(study)
    for s, row in zip([0, 5, 22], fit.fits, strict=True):
        z = np.linalg.solve(prior.chol, row.eta)
        assert objective(data, prior, s, z[None, :])[0] == pytest.approx(row.ofv, rel=1e-12)
        assert np.all(row.se > 0)


def test_a_study_without_a_dataset_is_refused(tmp_path: Path) -> None:
    study = load_study(ROOT / "config" / "config.yaml")
    problems = twin_problems(study)
    assert [p.where for p in problems] == ["population.dataset"]
    with pytest.raises(ConfigError, match=r"give population\.dataset"):
        fit_twins(study)


def test_bad_observation_records_are_named(tmp_path: Path) -> None:
    """A DV of 0 under exponential error has no likelihood: its row is named."""
    text = STUDY.read_text().replace("path: data/vancomycin_tdm.csv", f"path: {tmp_path / 'd.csv'}")
    text = text.replace(
        "CP: {proportional: 0.15, additive: 1.0, lloq: 0.5}", "CP: {exponential: 0.2}"
    )
    lines = (STUDY.parent / "data" / "vancomycin_tdm.csv").read_text().splitlines()
    header = lines[0].split(",")
    dv, evid = header.index("DV"), header.index("EVID")
    obs = [i for i, line in enumerate(lines[1:], start=1) if line.split(",")[evid] == "0"]
    cells = lines[obs[0]].split(",")
    cells[dv] = "0"
    lines[obs[0]] = ",".join(cells)
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "s.yaml").write_text(text)
    problems = twin_problems(load_study(tmp_path / "s.yaml"))
    assert len(problems) == 1
    assert problems[0].where.startswith(f"row {obs[0]} (line {obs[0] + 1}), column DV")
    assert "DV must be > 0" in problems[0].message
    text = text.replace("CP: {exponential: 0.2}", "CP: {lloq: 0.5}")
    (tmp_path / "s.yaml").write_text(text)
    problems = twin_problems(load_study(tmp_path / "s.yaml"))
    assert [p.where for p in problems] == ["model.residual_error.CP"]
