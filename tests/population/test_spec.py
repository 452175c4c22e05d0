"""Tests of vtrial.population.spec: the typed variability and uncertainty sections
against an independent computation from the study data; the typed covariate
distributions and covariate table of the population section, and the draws of each
distribution against an independent reference (scipy) at the same keyed uniforms."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps

from vtrial.infra.rng import keyed_uniform_rows
from vtrial.population.covariates import CovariateSampler
from vtrial.population.distributions import CONTINUOUS
from vtrial.population.spec import (
    Categorical,
    Constant,
    Empirical,
    LogNormal,
    Normal,
    Population,
    Resample,
    Uniform,
    categories_of,
    covariate_from_data,
)
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


# ---------------------------------------------------------------------------
# population.covariates and population.resample: the typed distributions

#: One covariate of every kind; ``weight``, ``height`` and ``alb`` per category of sex.
POPULATION = {
    "size": 10,
    "covariates": {
        "age": {"normal": {"mean": 61, "sd": 10}, "bounds": [18, 85], "unit": "year"},
        "sex": {"categorical": {"M": 0.55, "F": 0.45}, "description": "sex at birth"},
        "weight": {
            "lognormal": {"median": {"F": 68, "M": 82}, "cv": 0.2},
            "by": "sex",
            "bounds": [40, 160],
            "unit": "kg",
        },
        "height": {"normal": {"mean": {"F": 163, "M": 176}, "sd": 7}, "by": "sex"},
        "alb": {"uniform": {"low": {"F": 30, "M": 32}, "high": 50}, "by": "sex"},
        "dose_w": {"empirical": {"values": [1, 2, 3], "weights": [1, 2, 1]}},
        "q": {
            "empirical": {"quantiles": {"F": [0, 1, 4], "M": [1, 2, 3]}, "probs": [0, 0.5, 1]},
            "by": "sex",
        },
        "site": {"constant": 3},
    },
}

SEED = 7


def test_population_from_data_gives_the_typed_distributions() -> None:
    pop = Population.from_data(POPULATION)
    c = pop.covariates
    assert list(c) == list(POPULATION["covariates"])  # study order
    assert c["age"] == Normal(61.0, 10.0, bounds=(18.0, 85.0), unit="year")
    assert c["age"].kind == "normal"
    assert c["age"].by is None
    assert c["sex"] == Categorical(
        MappingProxyType({"M": 0.55, "F": 0.45}), description="sex at birth"
    )
    assert c["sex"].labels == ["M", "F"]  # file order, not sorted
    weight = c["weight"]
    assert isinstance(weight, LogNormal)
    assert weight.by == "sex"
    assert weight.bounds == (40.0, 160.0)
    assert weight.unit == "kg"
    assert isinstance(weight.median, Mapping)
    assert dict(weight.median) == {"F": 68.0, "M": 82.0}
    assert weight.cv == 0.2
    height = c["height"]
    assert isinstance(height, Normal)
    assert height.bounds is None
    assert isinstance(height.mean, Mapping)
    assert dict(height.mean) == {"F": 163.0, "M": 176.0}
    alb = c["alb"]
    assert isinstance(alb, Uniform)
    assert alb.by == "sex"
    assert alb.high == 50.0
    assert isinstance(alb.low, Mapping)
    assert dict(alb.low) == {"F": 30.0, "M": 32.0}
    assert c["dose_w"] == Empirical(values=(1.0, 2.0, 3.0), weights=(1.0, 2.0, 1.0))
    assert c["dose_w"].per_category is None
    q = c["q"]
    assert isinstance(q, Empirical)
    assert q.values is None
    assert q.probs == (0.0, 0.5, 1.0)
    assert isinstance(q.quantiles, Mapping)
    assert dict(q.quantiles) == {
        "F": (0.0, 1.0, 4.0),
        "M": (1.0, 2.0, 3.0),
    }
    assert q.per_category == ("F", "M")
    assert c["site"] == Constant(3.0)
    assert c["site"].kind == "constant"
    assert CONTINUOUS == ("normal", "lognormal", "uniform", "empirical")
    assert dict(pop.categories) == {"sex": ["M", "F"]} == categories_of(pop)
    assert categories_of(POPULATION) == categories_of(pop)  # the raw form validation reads
    assert pop.resample is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        c["age"].mean = 0.0  # type: ignore[misc]
    with pytest.raises(TypeError):  # every per-category mapping is read-only
        weight.median["F"] = 0.0  # type: ignore[index]
    with pytest.raises(TypeError):  # a key its kind does not take (validation reports it)
        covariate_from_data({"categorical": {"a": 1.0}, "bounds": [0, 1]})


def test_resample_from_data() -> None:
    pop = Population.from_data(
        {
            **POPULATION,
            "resample": {
                "table": "cov.csv",
                "columns": ["race", "crp"],
                "categorical": {"race": ["b", "a"], "grade": [2, 1]},
                "strata": ["race"],
                "weights": "w",
                "jitter": {"crp": 0.1},
            },
        }
    )
    res = pop.resample
    assert res == Resample(
        table="cov.csv",
        columns=("race", "crp"),
        categorical=MappingProxyType({"race": ("b", "a"), "grade": ("2", "1")}),
        strata=("race",),
        weights="w",
        jitter=MappingProxyType({"crp": 0.1}),
    )
    assert hash(res) == hash(dataclasses.replace(res))  # the table reader caches on it
    assert dict(pop.categories) == {"sex": ["M", "F"], "race": ["b", "a"], "grade": ["2", "1"]}
    plain = Resample.from_data({"table": "t.parquet", "jitter": 0.05})
    assert (plain.columns, plain.strata, plain.weights, plain.jitter) == (None, (), None, 0.05)
    assert dict(plain.categorical) == {}


def _sampler(population: Mapping[str, Any]) -> CovariateSampler:
    return CovariateSampler.from_data({"study": {"seed": SEED}, "population": population}, ROOT)


def _u(name: str, n: int) -> np.ndarray:
    return keyed_uniform_rows(SEED, f"covariate:{name}", 0, 0, n)[:, 0]


def test_draws_equal_an_independent_reference() -> None:
    """Each covariate's draws are its inverse CDF (scipy's) at its keyed uniforms."""
    n = 4000
    covs = _sampler(POPULATION).draw(0, 0, n, derived=False)
    rtol = 1e-12
    # bounded normal: scipy's truncated normal
    a, b = (18 - 61) / 10, (85 - 61) / 10
    ref = sps.truncnorm.ppf(_u("age", n), a, b, loc=61, scale=10)
    np.testing.assert_allclose(covs["age"], ref, rtol=rtol)
    # categorical: M below 0.55, F above
    sex = np.where(_u("sex", n) < 0.55, "M", "F")
    assert (covs["sex"] == sex).all()
    # log-normal with a median per sex, bounded: a truncated normal of the log
    for cat, median in (("F", 68.0), ("M", 82.0)):
        m = sex == cat
        s = np.sqrt(np.log1p(0.2**2))
        lo, hi = (np.log(40) - np.log(median)) / s, (np.log(160) - np.log(median)) / s
        ref = np.exp(sps.truncnorm.ppf(_u("weight", n)[m], lo, hi, np.log(median), s))
        np.testing.assert_allclose(covs["weight"][m], ref, rtol=rtol)
    # normal with a mean per sex, unbounded
    mean = np.where(sex == "F", 163.0, 176.0)
    ref = sps.norm.ppf(_u("height", n), loc=mean, scale=7)
    np.testing.assert_allclose(covs["height"], ref, rtol=rtol)
    # uniform with a low per sex
    low = np.where(sex == "F", 30.0, 32.0)
    np.testing.assert_allclose(covs["alb"], low + _u("alb", n) * (50 - low), rtol=rtol)
    # empirical values with weights 1:2:1: cumulative 0.25, 0.75, 1
    u = _u("dose_w", n)
    assert (covs["dose_w"] == np.select([u < 0.25, u < 0.75], [1.0, 2.0], 3.0)).all()
    # empirical quantiles per sex, interpolated linearly
    for cat, qs in (("F", [0, 1, 4]), ("M", [1, 2, 3])):
        m = sex == cat
        ref = np.interp(_u("q", n)[m], [0, 0.5, 1], qs)
        np.testing.assert_allclose(covs["q"][m], ref, rtol=rtol)
    assert (covs["site"] == 3.0).all()
