"""A study that starts from a fitted NONMEM model: ``model.from_fit``
(:mod:`vtrial.study.fit`).

The fitted files are synthetic, written here from this file's numbers in NONMEM 7's
layout (:mod:`tests.data.fitted_files`: 6 significant digits). The numbers are dyadic
(0.25, 0.0625, 0.015625...) where a derived value must be exact: a correlation
``OMEGA(2,1) / sqrt(OMEGA(1,1) OMEGA(2,2))`` and an SD ``sqrt(SIGMA)`` are then the
same binary numbers as the decimals a user would write by hand, so the study written
out by hand can be compared bit for bit.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.data.fitted_files import METHOD, _table_line, cov_table, edit, ext_table, write
from tests.study.test_config import DELETE, assert_reported, mutate, refused, write_study
from vtrial.model.residual import ErrorModel
from vtrial.population.sampling import sample_population
from vtrial.study.config import load_study, study_from_dict

# ---------------------------------------------------------------------------- the fit

#: CL, V1, Q2, V2, KA and a residual SD (THETA6, negative: its sign does not matter)
THETA = np.array([4.5, 36.0, 8.25, 80.0, 1.5, -0.35])
#: a CL-V1 block (correlation 0.5) and a diagonal KA
OMEGA = np.array([[0.25, 0.0625, 0.0], [0.0625, 0.0625, 0.0], [0.0, 0.0, 0.5]])
#: proportional (SD 0.125) and additive (SD 0.5) EPSs
SIGMA = np.array([[0.015625, 0.0], [0.0, 0.25]])
#: covariance of the THETAs (THETA6 fixed: zero row and column)
THETA_COV = np.array(
    [
        [0.09, 0.12, 0.0, 0.0, 0.003, 0.0],
        [0.12, 4.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.25, 0.5, 0.0, 0.0],
        [0.0, 0.0, 0.5, 16.0, 0.0, 0.0],
        [0.003, 0.0, 0.0, 0.0, 0.01, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ]
)
COV_NAMES = [
    *(f"THETA{k}" for k in range(1, 7)),
    "SIGMA(1,1)",
    "SIGMA(2,1)",
    "SIGMA(2,2)",
    *(f"OMEGA({i},{j})" for i in range(1, 4) for j in range(1, i + 1)),
]
NOFIX = (np.zeros(6, bool), np.zeros((3, 3), bool), np.zeros((2, 2), bool))
PHI_TEXT = [
    _table_line(1, METHOD),
    " SUBJECT_NO   ID           ETA(1)       ETA(2)       ETA(3)       OBJ",
    "            1  1.00000E+00  1.00000E-01 -2.00000E-01  5.00000E-02  1.25000E+01",
    "            2  2.00000E+00 -3.00000E-01  1.50000E-01  0.00000E+00  3.02500E+01",
    "            3  7.00000E+00  0.00000E+00  2.50000E-01 -1.25000E-01  7.12500E+00",
]

MAP = {
    "THETA(1)": "CL",
    "THETA(2)": "V1",
    "THETA(3)": "Q2",
    "THETA(4)": "V2",
    "THETA(5)": "KA",
    "ETA(1)": "CL",
    "ETA(2)": "V1",
    "ETA(3)": "KA",
    "SIGMA(1)": "CP.proportional",
    "SIGMA(2)": "CP.additive",
}


def write_fit(
    folder: Path, *, sigma_fixed: bool = False, tables: int = 1
) -> tuple[Path, Path, Path]:
    """run12.ext, run12.cov, run12.phi in ``folder``; ``tables`` estimation steps in
    the .ext (the last one this file's numbers)."""
    folder.mkdir(exist_ok=True)
    fixed = copy.deepcopy(NOFIX)
    fixed[2][0, 0] = sigma_fixed
    lines: list[str] = []
    for k in range(1, tables + 1):
        lines += ext_table(k, THETA, OMEGA, SIGMA, 812.5 + k, fixed=fixed)
    ext = write(folder / "run12.ext", lines)
    cov_full = np.zeros((len(COV_NAMES), len(COV_NAMES)))
    cov_full[:6, :6] = THETA_COV
    cov_full[6, 6] = cov_full[8, 8] = 1e-4
    cov = write(folder / "run12.cov", cov_table(cov_full, COV_NAMES))
    phi = write(folder / "run12.phi", PHI_TEXT)
    return ext, cov, phi


def base_study(**from_fit: Any) -> dict[str, Any]:
    return {
        "study": {"name": "fitted", "seed": 11, "replicates": 3},
        "population": {
            "size": 200,
            "covariates": {"weight": {"lognormal": {"median": 70, "cv": 0.2}}},
        },
        "model": {
            "pk": "pk_2cmt",
            "parameters": {"CL": {"covariates": "(weight / 70) ** 0.75"}},
            "from_fit": {
                "ext": "fits/run12.ext",
                "cov": "fits/run12.cov",
                "phi": "fits/run12.phi",
                "map": dict(MAP),
                **from_fit,
            },
        },
        "arms": [{"name": "oral", "regimen": {"route": "oral", "dose": 100}}],
        "outputs": {"observations": {"outputs": ["CP"], "times": [1.0, 4.0]}},
    }


def by_hand() -> dict[str, Any]:
    """:func:`base_study` with the fit's values written out as a user would."""
    d = base_study()
    del d["model"]["from_fit"]
    d["model"]["parameters"] = {
        "CL": {"covariates": "(weight / 70) ** 0.75", "value": 4.5},
        "V1": {"value": 36.0},
        "Q2": {"value": 8.25},
        "V2": {"value": 80.0},
        "KA": {"value": 1.5},
    }
    d["model"]["iiv"] = {
        "omega": {"CL": 0.25, "V1": 0.0625, "KA": 0.5},
        "correlations": {"CL~V1": 0.5},
    }
    d["model"]["residual_error"] = {"CP": {"proportional": 0.125, "additive": 0.5}}
    d["study"]["uncertainty"] = {
        "theta": {
            "parameters": ["CL", "V1", "Q2", "V2", "KA"],
            "covariance": [
                [0.09, 0.12, 0.0, 0.0, 0.003],
                [0.12, 4.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.25, 0.5, 0.0],
                [0.0, 0.0, 0.5, 16.0, 0.0],
                [0.003, 0.0, 0.0, 0.0, 0.01],
            ],
            "scale": "linear",
        }
    }
    return d


# ---------------------------------------------------------------------------- values


def test_fitted_values_land_in_the_typed_study_exactly(tmp_path: Path) -> None:
    ext, cov, phi = write_fit(tmp_path / "fits")
    study = load_study(write_study(tmp_path, base_study()))
    params = study.model.parameters
    assert [params[k].value for k in ("CL", "V1", "Q2", "V2", "KA")] == [4.5, 36.0, 8.25, 80.0, 1.5]
    assert params["F"].value == 1.0  # not mapped: the model's
    assert study.variability.covariate_models == {"CL": "(weight / 70) ** 0.75"}
    assert study.variability.omega_names == ("CL", "V1", "KA")
    np.testing.assert_array_equal(study.variability.omega, OMEGA)  # off-diagonal 0.0625 too
    assert study.variability.distribution("CL") == "lognormal"
    assert study.observations.errors == {"CP": ErrorModel(additive=0.5, proportional=0.125)}
    theta = study.uncertainty.theta
    assert theta is not None
    assert theta.parameters == ("CL", "V1", "Q2", "V2", "KA")  # THETA6 is not mapped
    assert theta.scale == "linear"
    np.testing.assert_array_equal(np.array(theta.covariance), THETA_COV[:5, :5])
    fit = study.fit
    assert fit is not None
    assert dict(fit.typical) == dict(zip(["CL", "V1", "Q2", "V2", "KA"], THETA[:5], strict=True))
    assert dict(fit.sigma) == {"CP.proportional": 0.015625, "CP.additive": 0.25}
    np.testing.assert_array_equal(fit.omega, OMEGA)
    assert fit.etas is not None
    assert list(fit.etas.index) == [1, 2, 7]
    assert list(fit.etas.columns) == ["CL", "V1", "KA"]
    np.testing.assert_array_equal(fit.etas.loc[7].to_numpy(), [0.0, 0.25, -0.125])
    # the files by SHA-256, in the study's hash and the manifest's inputs
    sha = {
        k: hashlib.sha256(p.read_bytes()).hexdigest()
        for k, p in zip(("ext", "cov", "phi"), (ext, cov, phi), strict=True)
    }
    assert dict(fit.sources) == sha
    assert study.data_files == [tmp_path / "fits" / f"run12.{k}" for k in ("ext", "cov", "phi")]
    # the data keep from_fit as written (reloading it gives the same study)
    assert "from_fit" in study.data["model"]
    assert "value" not in study.data["model"]["parameters"]["CL"]
    assert study.effective["model"]["parameters"]["CL"]["value"] == 4.5
    again = study_from_dict(study.data, source=study.source, base_dir=study.base_dir)
    assert again.sha256 == study.sha256
    np.testing.assert_array_equal(again.variability.omega, OMEGA)


def test_a_residual_sd_from_a_theta_and_units_and_distribution_from_the_study(
    tmp_path: Path,
) -> None:
    write_fit(tmp_path / "fits")
    fit_map = {k: v for k, v in MAP.items() if k != "SIGMA(2)"} | {"THETA(6)": "CP.additive"}
    d = base_study(map=fit_map)
    d["model"]["parameters"]["V2"] = {"unit": "mL"}  # THETA(4) is in mL
    d["model"]["iiv"] = {"distribution": {"KA": "normal"}, "omega": {"Q2": 0.04}}
    study = load_study(write_study(tmp_path, d))
    assert study.observations.errors["CP"] == ErrorModel(additive=0.35, proportional=0.125)
    assert study.model.parameters["V2"].value == pytest.approx(0.08, rel=1e-15)
    assert study.variability.omega_names == ("CL", "V1", "KA", "Q2")  # the fit's first
    assert study.variability.distribution("KA") == "normal"


def test_from_fit_gives_the_population_of_the_study_written_by_hand(tmp_path: Path) -> None:
    write_fit(tmp_path / "fits")
    fitted = load_study(write_study(tmp_path, base_study(), "fitted.yaml"))
    hand = load_study(write_study(tmp_path, by_hand(), "hand.yaml"))
    assert fitted.observations.errors == hand.observations.errors
    np.testing.assert_array_equal(fitted.observations.times, hand.observations.times)
    assert fitted.uncertainty == hand.uncertainty
    a, b = sample_population(fitted), sample_population(hand)
    assert {"eta_CL", "eta_V1", "eta_KA", "CL", "V2"} <= set(a.columns)
    assert a["replicate"].nunique() == 3
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_sampled_etas_have_the_fitted_omega(tmp_path: Path) -> None:
    write_fit(tmp_path / "fits")
    d = base_study()
    del d["model"]["from_fit"]["cov"]  # no parameter uncertainty: OMEGA as fitted
    d["study"]["replicates"] = 1
    n = 20_000
    d["population"]["size"] = n
    study = load_study(write_study(tmp_path, d))
    pop = sample_population(study)
    eta = pop[["eta_CL", "eta_V1", "eta_KA"]].to_numpy()
    est = np.cov(eta, rowvar=False)
    # standard error of a sample covariance: sqrt((w_ii w_jj + w_ij^2) / n); 5 of them
    se = np.sqrt((np.outer(np.diag(OMEGA), np.diag(OMEGA)) + OMEGA**2) / n)
    assert np.all(np.abs(est - OMEGA) < 5 * se), (est, OMEGA)
    # log-normal: CL / (TV * weight factor) = exp(eta_CL)
    tv = 4.5 * (pop["weight"] / 70) ** 0.75
    np.testing.assert_allclose(pop["CL"], tv * np.exp(pop["eta_CL"]), rtol=1e-12)


def test_a_changed_fit_file_changes_the_study_hash(tmp_path: Path) -> None:
    ext, _, _ = write_fit(tmp_path / "fits")
    path = write_study(tmp_path, base_study())
    before = load_study(path).sha256
    ext.write_text(ext.read_text().replace("4.50000E+00", "4.60000E+00"))
    after = load_study(path)
    assert after.sha256 != before
    assert after.model.parameters["CL"].value == 4.6


# ---------------------------------------------------------------------------- problems


def _garble(folder: Path) -> None:
    edit(folder / "run12.ext", 6, 2, "4.5O000E+00")  # final-estimate row, THETA2


def _two_tables(folder: Path) -> None:
    write_fit(folder, tables=2)
    (folder / "run12.phi").unlink()


def _fixed_sigma(folder: Path) -> None:
    write_fit(folder, sigma_fixed=True)


PROBLEMS: list[tuple[str, dict[str, Any], Callable[[Path], None] | None, list[str]]] = [
    (
        "missing ext",
        {"model.from_fit.ext": "fits/run13.ext"},
        None,
        ["model.from_fit.ext: cannot read the fitted file", "'fits/run13.ext'"],
    ),
    (
        "missing cov",
        {"model.from_fit.cov": "fits/run13.cov"},
        None,
        ["model.from_fit.cov: cannot read the fitted file", "'fits/run13.cov'"],
    ),
    (
        "garbled ext",
        {},
        _garble,
        ["model.from_fit.ext: ", "run12.ext, line 6, column THETA2", "4.5O000E+00"],
    ),
    (
        "THETA beyond the file",
        {"model.from_fit.map.THETA(3)": DELETE, "model.from_fit.map.THETA(9)": "Q2"},
        None,
        ["model.from_fit.map.THETA(9): THETA(9) is not in", "run12.ext: it has 6 THETA(s)"],
    ),
    (
        "unknown parameter",
        {"model.from_fit.map.THETA(3)": "Q3"},
        None,
        ["model.from_fit.map.THETA(3): not a model parameter", "got 'Q3'"],
    ),
    (
        "malformed key",
        {"model.from_fit.map.OMEGA(1)": "CL"},
        None,
        ["model.from_fit.map.OMEGA(1): the key must be THETA(n), ETA(n) or SIGMA(n)"],
    ),
    (
        "value given twice",
        {"model.parameters.CL.value": 5.0},
        None,
        ["model.from_fit.map.THETA(1): ", "model.parameters.CL.value gives 5.0 too"],
    ),
    (
        "omega given twice",
        {"model.iiv.omega.V1": 0.1},
        None,
        ["model.from_fit.map.ETA(2): ", "OMEGA(2,2)", "model.iiv.omega.V1 gives 0.1 too"],
    ),
    (
        "correlation given twice",
        {"model.iiv.correlations": {"V1~CL": 0.3}},
        None,
        ["model.from_fit.map.ETA(2): ", "OMEGA(2,1)", "model.iiv.correlations.V1~CL gives 0.3"],
    ),
    (
        "residual error given twice",
        {"model.residual_error.CP.additive": 0.2},
        None,
        ["model.from_fit.map.SIGMA(2): ", "model.residual_error.CP.additive gives 0.2 too"],
    ),
    (
        "uncertainty given twice",
        {"study.uncertainty.theta": {"parameters": ["CL"], "covariance": [[0.01]]}},
        None,
        ["model.from_fit.cov: ", "study.uncertainty.theta", "parameters ['CL']"],
    ),
    (
        "SIGMA without its part",
        {"model.from_fit.map.SIGMA(2)": "CP"},
        None,
        ["model.from_fit.map.SIGMA(2): must be OUTPUT.part", "got 'CP'"],
    ),
    (
        "SIGMA of an unknown part",
        {"model.from_fit.map.SIGMA(2)": "CP.lognormal"},
        None,
        ["model.from_fit.map.SIGMA(2): the part after the dot must be one of", "'CP.lognormal'"],
    ),
    (
        "SIGMA of an unknown output",
        {"model.from_fit.map.SIGMA(2)": "ANC.additive"},
        None,
        ["model.from_fit.map.SIGMA(2): 'ANC' is not a model output", "'ANC.additive'"],
    ),
    (
        "residual error mapped twice",
        {"model.from_fit.map.THETA(6)": "CP.additive"},
        None,
        ["model.from_fit.map.SIGMA(2): CP.additive is also mapped from THETA(6)"],
    ),
    (
        "SIGMA of an output not observed",
        {"outputs": DELETE, "model.from_fit.map.SIGMA(2)": DELETE},
        None,
        ["model.from_fit.map.SIGMA(1): a residual error applies to the sampled observations"],
    ),
    (
        "a correlated ETA left out",
        {"model.from_fit.map.ETA(2)": DELETE},
        None,
        ["model.from_fit.map.ETA(1): OMEGA(2,1) = 0.0625", "ETA(2), which is not mapped"],
    ),
    (
        "a FIXED SIGMA",
        {},
        _fixed_sigma,
        ["model.from_fit.map.SIGMA(1): SIGMA(1) is FIXED", "map that THETA to CP.proportional"],
    ),
    (
        "files of two estimation steps",
        {"model.from_fit.phi": DELETE},
        _two_tables,
        [
            "model.from_fit.cov: ",
            "run12.cov gives TABLE NO. 1",
            "TABLE NO. 2",
            "same estimation step",
        ],
    ),
    (
        "cov without a mapped THETA",
        {"model.from_fit.map": {"ETA(1)": "CL", "ETA(2)": "V1", "ETA(3)": "KA"}},
        None,
        ["model.from_fit.cov: no THETA is mapped to a model parameter"],
    ),
    (
        "no ext",
        {"model.from_fit.ext": DELETE},
        None,
        ["model.from_fit: ", "'ext'"],
    ),
]


@pytest.mark.parametrize(
    ("changes", "files", "expected"),
    [p[1:] for p in PROBLEMS],
    ids=[p[0] for p in PROBLEMS],
)
def test_each_problem_is_reported_once_naming_the_key(
    tmp_path: Path,
    changes: dict[str, Any],
    files: Callable[[Path], None] | None,
    expected: list[str],
) -> None:
    write_fit(tmp_path / "fits")
    if files is not None:
        files(tmp_path / "fits")
    err = refused(write_study(tmp_path, mutate(base_study(), changes)))
    assert len(err.problems) == 1, str(err)
    assert_reported(err, expected)
