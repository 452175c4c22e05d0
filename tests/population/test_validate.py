"""Tests of vtrial.population.validate: the checks of the population section of a study file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.study.test_config import DELETE, assert_mutation_refused

#: mistakes in the population section of config/config.yaml, each refused with one problem
#: naming the key path, the rule and the value (see tests/study/test_config.py)
REFUSED_VALIDATE = [
    pytest.param(
        {"population.covariates.age.normal.median": 60},
        ["population.covariates.age.normal:", "unknown key(s) ['median']"],
        id="unknown-normal",
    ),
    pytest.param(
        {"population.size": "many"},
        ["population.size", "must be of type integer", '"many"'],
        id="string-size",
    ),
    pytest.param(
        {"population.size": 2.5},
        ["population.size", "must be of type integer", "2.5"],
        id="float-size",
    ),
    pytest.param(
        {"population.size": True},
        ["population.size", "must be of type integer", "true"],
        id="bool-size",
    ),
    pytest.param(
        {"population.covariates.age.normal.sd": -1},
        ["population.covariates.age.normal.sd", "must be > 0", "got -1"],
        id="negative-sd",
    ),
    pytest.param(
        {"population.covariates.weight.lognormal.cv": {"F": 0.2, "M": -0.2}},
        ["population.covariates.weight.lognormal.cv.M", "must be > 0", "got -0.2"],
        id="negative-per-category-cv",
    ),
    pytest.param(
        {"population.covariates.age.normal.mean": "sixty"},
        ["population.covariates.age.normal.mean", '"sixty"'],
        id="string-mean",
    ),
    pytest.param(
        {"population.derived": ["bmi", "ibw"]},
        ["population.derived[1]", "must be one of", '"ibw"'],
        id="derived-enum",
    ),
    pytest.param(
        {"population.covariates.smoker": {"categorical": {True: 0.3, False: 0.7}}},
        ["population.covariates.smoker.categorical", "must be of type string", "true"],
        id="yaml-yes-no-labels",
    ),
    pytest.param(
        {"population.covariates.sex.categorical": {"F": 0.5, "M": 0.6}},
        ["population.covariates.sex.categorical", "frequencies must sum to 1", "got 1.1"],
        id="frequencies-sum",
    ),
    pytest.param(
        {"population.covariates.height.by": "age"},
        ["population.covariates.height.by", "must name a categorical covariate ['sex']", "'age'"],
        id="by-non-categorical",
    ),
    pytest.param(
        {"population.covariates.height.by": "race"},
        ["population.covariates.height.by", "must name a categorical covariate", "'race'"],
        id="by-undefined",
    ),
    pytest.param(
        {"population.covariates.weight.lognormal.median": {"F": 68}},
        [
            "population.covariates.weight.lognormal.median",
            "needs a value for every category of sex ['F', 'M']",
            "got ['F']",
        ],
        id="per-category-missing",
    ),
    pytest.param(
        {"population.covariates.weight.lognormal.median": {"F": 68, "M": 82, "X": 75}},
        ["population.covariates.weight.lognormal.median", "every category of sex", "'X'"],
        id="per-category-extra",
    ),
    pytest.param(
        {"population.covariates.age.normal.mean": {"F": 60, "M": 62}},
        ["population.covariates.age.normal.mean", "a per-category value needs 'by'"],
        id="per-category-without-by",
    ),
    pytest.param(
        {"population.covariates.sex.bounds": [0, 1]},
        ["population.covariates.sex:", "a categorical covariate takes no 'by' or 'bounds'"],
        id="categorical-bounds",
    ),
    pytest.param(
        {"population.covariates.age.bounds": [85, 18]},
        ["population.covariates.age.bounds", "lower bound must be < upper bound", "[85, 18]"],
        id="bounds-reversed",
    ),
    pytest.param(
        {"population.covariates.scr.bounds": [-1, 3]},
        ["population.covariates.scr.bounds", "log-normal covariate is > 0", "lower bound -1"],
        id="lognormal-negative-bound",
    ),
    pytest.param(
        {"population.covariates.alb": {"uniform": {"low": 50, "high": 30}}},
        ["population.covariates.alb.uniform", "low must be < high", "[50, 30]"],
        id="uniform-low-high",
    ),
    pytest.param(
        {"population.covariates.age": {"normal": {"mean": 60, "sd": 10}, "constant": 60}},
        ["population.covariates.age:", "needs exactly one distribution", "'normal', 'constant'"],
        id="two-distributions",
    ),
    pytest.param(
        {"population.covariates.height": DELETE},
        ["population.derived[0]", "bmi needs covariate(s) ['height']"],
        id="derived-missing-input",
    ),
    pytest.param(
        {"population.covariates.sex.categorical": {"female": 0.5, "male": 0.5}},
        ["population.derived[2]", "crcl needs sex with categories F and M", "'female'"],
        id="derived-sex-labels",
    ),
    pytest.param(
        {"population.covariates.bmi": {"constant": 25}},
        ["population.derived[0]", "bmi is also a sampled covariate"],
        id="derived-also-sampled",
    ),
    pytest.param(
        {"population.covariates.CL": {"constant": 5}},
        ["population.covariates:", "names ['CL'] are also model parameters"],
        id="covariate-is-parameter",
    ),
    pytest.param(
        {"population.size": 2},
        ["population.size", "must be >= the number of arms (3)", "got 2"],
        id="fewer-patients-than-arms",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), REFUSED_VALIDATE)
def test_validate_mistakes_are_refused(
    tmp_path: Path, changes: dict[str, Any], expected: list[str]
) -> None:
    assert_mutation_refused(tmp_path, changes, expected)
