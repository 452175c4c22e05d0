"""Tests of vtrial.population.spec: the typed variability and uncertainty sections
against an independent computation from the study data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vtrial.population.uncertainty import theta_matrix
from vtrial.study.config import study_from_dict

ROOT = Path(__file__).resolve().parents[2]
STUDIES = [*sorted((ROOT / "config" / "studies").glob("*.yaml")), ROOT / "config/config.yaml"]


def test_variability_and_uncertainty_sections() -> None:
    study = study_from_dict(
        {
            "study": {
                "name": "u",
                "seed": 1,
                "replicates": 2,
                "uncertainty": {
                    "theta": {"parameters": ["CL"], "covariance": [[0.01]]},
                    "omega_df": 50,
                },
            },
            "population": {"size": 4},
            "model": {
                "pk": "pk_1cmt",
                "iiv": {
                    "omega": {"CL": 0.09, "V1": 0.04},
                    "correlations": {"CL~V1": 0.5},
                    "distribution": {"V1": "normal"},
                },
            },
            "arms": [{"name": "a", "regimen": {"route": "oral", "dose": 100}}],
        }
    )
    var = study.variability
    assert var.omega_names == ("CL", "V1")
    expected = np.array([[0.09, 0.5 * np.sqrt(0.09 * 0.04)], [0.5 * np.sqrt(0.09 * 0.04), 0.04]])
    np.testing.assert_allclose(var.omega, expected, rtol=1e-15)
    assert (var.distribution("CL"), var.distribution("V1")) == ("lognormal", "normal")
    assert dict(var.iov) == {}
    unc = study.uncertainty
    assert unc.active
    assert unc.omega_df == 50.0
    assert unc.theta is not None
    assert unc.theta.parameters == ("CL",)
    mat, problems = theta_matrix(unc.theta, study.base_dir)
    assert problems == []
    assert mat.tolist() == [[0.01]]
    plain = study_from_dict({**study.data, "study": {"name": "p", "seed": 1}})
    assert not plain.uncertainty.active
