"""Parameter uncertainty across replicates: THETA and OMEGA draws (moments within
sampling error), their use by the population, invariance, the covariance file and
validation."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import special

from tests.conftest import small_study_data
from tests.population.test_design import GOLDEN_SMALL, digest
from tests.study.test_config import assert_reported, refused, write_study
from vtrial.infra.rng import keyed_uniforms
from vtrial.population.sampling import sample_population
from vtrial.population.uncertainty import (
    UNCERTAINTY_COLUMNS,
    omega_matrix,
    replicate_omega,
    typical_values,
    uncertainty_table,
)
from vtrial.study.config import Study, load_study, study_from_dict

#: covariance of log(CL), log(V1), log(KA) of the THETA draws
COV = [[0.04, 0.012, 0.0], [0.012, 0.09, -0.015], [0.0, -0.015, 0.0625]]
PARAMS = ["CL", "V1", "KA"]


def uncertain(replicates: int = 2, **spec: Any) -> dict[str, Any]:
    d = small_study_data()
    d["study"]["replicates"] = replicates
    d["study"]["uncertainty"] = spec or {
        "theta": {"covariance": COV, "parameters": PARAMS},
        "omega_df": 40,
    }
    return d


def test_theta_draws_have_the_stated_mean_and_covariance() -> None:
    """N = 4000 replicates, scale log: mean of log(TV_r / TV) within 4 standard errors
    (sqrt(C_ii / N)) of 0, and each sample covariance within 4 standard errors
    (sqrt((C_ii C_jj + C_ij^2) / N)) of C. Scale linear: TV_r - TV likewise."""
    n = 4000
    cov = np.array(COV)
    se_mean = np.sqrt(np.diag(cov) / n)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    for scale in ("log", "linear"):
        s = study_from_dict(
            uncertain(n, theta={"covariance": COV, "parameters": PARAMS, "scale": scale})
        )
        nominal = np.array([s.model.parameters[k].value for k in PARAMS])
        draws = np.array([[typical_values(s, r)[k] for k in PARAMS] for r in range(n)])
        delta = np.log(draws / nominal) if scale == "log" else draws - nominal
        assert (np.abs(delta.mean(axis=0)) < 4 * se_mean).all(), scale
        assert (np.abs(np.cov(delta.T) - cov) < 4 * se_cov).all(), scale
        # parameters not listed keep their typical value
        assert typical_values(s, 7)["Q2"] == s.model.parameters["Q2"].value


def test_omega_draws_have_the_study_omega_as_mean() -> None:
    """N = 4000 replicates, df = 30, p = 9: the mean of the OMEGA_r draws is within 4
    standard errors of OMEGA for every element, the standard errors from the
    inverse-Wishart variances (df - p + 1) psi_ij^2 + (df - p - 1) psi_ii psi_jj over
    (df - p)(df - p - 1)^2 (df - p - 3), psi = (df - p - 1) OMEGA; and the sample
    variances are within 25 % of those."""
    n, df = 4000, 30.0
    s = study_from_dict(uncertain(n, omega_df=df))
    om = omega_matrix(s.data["model"]["iiv"])
    p = om.shape[0]
    psi = (df - p - 1) * om
    var = ((df - p + 1) * psi**2 + (df - p - 1) * np.outer(np.diag(psi), np.diag(psi))) / (
        (df - p) * (df - p - 1) ** 2 * (df - p - 3)
    )
    draws = np.array([replicate_omega(s, r) for r in range(n)])
    assert draws.shape == (n, p, p)
    assert np.allclose(draws, draws.transpose(0, 2, 1))
    assert (np.linalg.eigvalsh(draws) > 0).all()
    assert (np.abs(draws.mean(axis=0) - om) < 4 * np.sqrt(var / n)).all()
    np.testing.assert_allclose(draws.var(axis=0, ddof=1), var, rtol=0.25)
    # typical values are not drawn without uncertainty.theta
    assert typical_values(s, 3) == {k: v.value for k, v in s.model.parameters.items()}


def test_patients_use_their_replicate_draws() -> None:
    """In replicate r, CL_i = TV_CL,r · f(covariates_i) · exp(eta_CL,i), and the etas
    are OMEGA_r's Cholesky factor times the same keyed standard normals as without
    uncertainty; the covariates are those of the study without uncertainty."""
    s = study_from_dict(uncertain())
    pop = sample_population(s)
    plain = sample_population(study_from_dict(small_study_data()))
    covs = ["sex", "age", "weight", "height", "scr", "bmi", "bsa", "crcl"]
    pd.testing.assert_frame_equal(pop[covs], plain[covs], check_exact=True)
    assert not np.allclose(pop["CL"], plain["CL"])
    names = list(s.data["model"]["iiv"]["omega"])
    for r in range(2):
        rows = pop[pop["replicate"] == r]
        tv = typical_values(s, r)["CL"]
        f = (rows["weight"] / 70) ** 0.75 * (rows["crcl"] / 100) ** 0.25
        np.testing.assert_allclose(rows["CL"], tv * f * np.exp(rows["eta_CL"]), rtol=1e-13)
        z = special.ndtri(keyed_uniforms(s.seed, "eta", r, s.size, len(names)))
        eta = rows[[f"eta_{k}" for k in names]].to_numpy()
        np.testing.assert_allclose(eta, z @ np.linalg.cholesky(replicate_omega(s, r)).T)


def test_replicates_added_keep_the_existing_draws() -> None:
    """Replicate 0 (and 1) of a 3-replicate study equal those of the 2-replicate one:
    draws, population rows and the uncertainty table."""
    two = study_from_dict(uncertain(2))
    three = study_from_dict(uncertain(3))
    a, b = sample_population(two), sample_population(three)
    pd.testing.assert_frame_equal(b[b["replicate"] < 2].reset_index(drop=True), a, check_exact=True)
    ta, tb = uncertainty_table(two), uncertainty_table(three)
    pd.testing.assert_frame_equal(tb[tb["replicate"] < 2].reset_index(drop=True), ta)
    assert typical_values(two, 0) != typical_values(two, 1)


def test_without_uncertainty_nothing_changes() -> None:
    """No study.uncertainty: the nominal THETA and OMEGA exactly, the population of
    commit 13e3a72 (digest), and an empty uncertainty table."""
    s = study_from_dict(small_study_data())
    assert typical_values(s, 5) == {k: v.value for k, v in s.model.parameters.items()}
    om = omega_matrix(s.data["model"]["iiv"])
    assert np.array_equal(replicate_omega(s, 5), om)
    assert digest(sample_population(s)) == GOLDEN_SMALL
    table = uncertainty_table(s)
    assert table.empty
    assert list(table.columns) == list(UNCERTAINTY_COLUMNS)


def test_uncertainty_table_records_every_draw() -> None:
    s = study_from_dict(uncertain(3))
    t = uncertainty_table(s)
    assert list(t.columns) == list(UNCERTAINTY_COLUMNS)
    assert t["replicate"].dtype == np.int32
    # per replicate: 3 theta rows + 9 * 10 / 2 OMEGA elements
    assert len(t) == 3 * (3 + 45)
    r1 = t[t["replicate"] == 1].set_index(["quantity", "parameter"])
    assert r1.loc[("theta", "V1"), "value"] == typical_values(s, 1)["V1"]
    assert r1.loc[("theta", "V1"), "nominal"] == 50.0
    om = replicate_omega(s, 1)
    assert r1.loc[("omega", "CL~V1"), "value"] == om[0, 1]
    assert r1.loc[("omega", "CL~V1"), "nominal"] == pytest.approx(0.3 * 0.09)
    assert r1.loc[("omega", "KD0"), "value"] == om[8, 8]


def _csv(path: Path, text: str) -> None:
    path.write_text(text)


def test_covariance_from_a_csv_file(tmp_path: Path) -> None:
    """A CSV with row names and an extra parameter gives the draws of the inline
    sub-matrix (reordered to `parameters`); its content is part of the study hash."""
    _csv(
        tmp_path / "cov.csv",
        "name,V1,Q2,CL\nV1,0.09,0.0,0.012\nQ2,0.0,0.5,0.0\nCL,0.012,0.0,0.04\n",
    )
    d = uncertain(3, theta={"covariance": "cov.csv", "parameters": ["CL", "V1"]})
    from_file = load_study(write_study(tmp_path, d))
    inline = study_from_dict(
        uncertain(
            3, theta={"covariance": [[0.04, 0.012], [0.012, 0.09]], "parameters": ["CL", "V1"]}
        )
    )
    for r in range(3):
        assert typical_values(from_file, r) == typical_values(inline, r)
    before = from_file.sha256
    _csv(
        tmp_path / "cov.csv",
        "name,V1,Q2,CL\nV1,0.08,0.0,0.012\nQ2,0.0,0.5,0.0\nCL,0.012,0.0,0.04\n",
    )
    assert load_study(write_study(tmp_path, d)).sha256 != before
    # without a name column
    _csv(tmp_path / "plain.csv", "CL,V1\n0.04,0.012\n0.012,0.09\n")
    d["study"]["uncertainty"]["theta"]["covariance"] = "plain.csv"
    plain = load_study(write_study(tmp_path, d))
    assert typical_values(plain, 2) == typical_values(inline, 2)


def test_uncertainty_problems_reported_at_once(tmp_path: Path) -> None:
    d = uncertain(
        theta={
            "covariance": [[0.04, 0.02, 0.0], [0.01, 0.09, 0.0], [0.0, 0.0, 0.01]],
            "parameters": ["CL", "XX", "TLAG"],
        },
        omega_df=10,
    )
    err = refused(write_study(tmp_path, d))
    assert_reported(err, ["study.uncertainty.theta.parameters[1]", "not a model parameter", "'XX'"])
    assert_reported(
        err, ["theta.parameters[2]", "scale log needs a typical value > 0", "TLAG is 0"]
    )
    assert_reported(err, ["theta.covariance", "symmetric", "[CL, XX] = 0.02", "[XX, CL] = 0.01"])
    assert_reported(err, ["study.uncertainty.omega_df", "> p + 1 = 10", "p = 9", "got 10"])
    assert len(err.problems) == 4
    d = uncertain(
        theta={"covariance": [[0.04, 0.05], [0.05, 0.04]], "parameters": ["CL", "V1"]},
    )
    d["model"]["iiv"]["omega"]["KA"] = 0.0  # OMEGA singular
    d["study"]["uncertainty"]["omega_df"] = 40
    err = refused(write_study(tmp_path, d))
    assert_reported(err, ["theta.covariance", "positive semi-definite", "-0.01"])
    assert_reported(err, ["omega_df", "positive definite OMEGA", "smallest eigenvalue"])
    d = uncertain(theta={"covariance": [[0.04, 0.0]], "parameters": ["CL", "V1"]})
    assert_reported(
        refused(write_study(tmp_path, d)), ["theta.covariance", "2x2 matrix", "1 row(s)"]
    )
    d["model"]["iiv"] = {}
    d["study"]["uncertainty"] = {"omega_df": 50}
    assert_reported(refused(write_study(tmp_path, d)), ["omega_df", "model.iiv.omega is empty"])
    d["study"]["uncertainty"] = {}
    assert_reported(refused(write_study(tmp_path, d)), ["study.uncertainty"])


def test_covariance_file_problems_reported_at_once(tmp_path: Path) -> None:
    d = uncertain(theta={"covariance": "missing.csv", "parameters": ["CL", "V1"]})
    err = refused(write_study(tmp_path, d))
    assert_reported(err, ["theta.covariance", "cannot read", "missing.csv"])
    _csv(tmp_path / "bad.csv", "name,CL,V1\nCL,0.04,abc\nV2,0.01,nan\n")
    d["study"]["uncertainty"]["theta"]["covariance"] = "bad.csv"
    d["study"]["uncertainty"]["omega_df"] = 3
    err = refused(write_study(tmp_path, d))
    assert_reported(err, ["theta.covariance", "bad.csv: row 2, column 3: not a number", "'abc'"])
    assert_reported(err, ["bad.csv: row 3: row name must be 'V1'", "'V2'"])
    assert_reported(err, ["bad.csv: row 3, column 3: must be finite", "nan"])
    assert_reported(err, ["omega_df", "got 3"])  # reported with the file's problems
    _csv(tmp_path / "short.csv", "CL,V1\n0.04,0.01\n")
    d["study"]["uncertainty"] = {"theta": {"covariance": "short.csv", "parameters": ["CL", "KA"]}}
    err = refused(write_study(tmp_path, d))
    assert_reported(err, ["short.csv: needs 2 rows", "got 1"])
    _csv(tmp_path / "ok.csv", "CL,V1\n0.04,0.01\n0.01,0.09\n")
    d["study"]["uncertainty"]["theta"]["covariance"] = "ok.csv"
    assert_reported(refused(write_study(tmp_path, d)), ["ok.csv: has no column for ['KA']"])


def test_uncertainty_study_is_deterministic() -> None:
    a = sample_population(study_from_dict(uncertain()))
    b = sample_population(study_from_dict(copy.deepcopy(uncertain())))
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    other = uncertain()
    other["study"]["seed"] += 1
    s: Study = study_from_dict(other)
    assert typical_values(s, 0) != typical_values(study_from_dict(uncertain()), 0)
