"""Virtual population: distributions, allocation, keyed invariance."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps

from tests.conftest import small_study_data
from tests.study.test_config import assert_mutation_refused
from vtrial.infra.rng import keyed_uniforms, purpose_code
from vtrial.population.sampling import sample_population
from vtrial.study.config import study_from_dict


def study(**changes: object):  # type: ignore[no-untyped-def]
    return study_from_dict(small_study_data(**changes))


def big_study(n: int = 20000):  # type: ignore[no-untyped-def]
    d = small_study_data()
    d["population"]["size"] = n
    d["study"]["replicates"] = 1
    return study_from_dict(d)


def test_keyed_uniforms_are_prefix_stable_and_keyed() -> None:
    a = keyed_uniforms(7, "eta", 0, 10, 3)
    b = keyed_uniforms(7, "eta", 0, 1000, 3)
    assert np.array_equal(a, b[:10])
    assert not np.array_equal(a, keyed_uniforms(7, "eta", 1, 10, 3))
    assert not np.array_equal(a, keyed_uniforms(8, "eta", 0, 10, 3))
    assert not np.array_equal(a, keyed_uniforms(7, "covariate:age", 0, 10, 3))
    assert ((a > 0) & (a < 1)).all()
    # purpose codes are stable across processes and sessions (sha256, not hash())
    assert purpose_code("eta") == int.from_bytes(hashlib.sha256(b"eta").digest()[:8], "little")


def test_population_columns_and_order() -> None:
    s = study()
    pop = sample_population(s)
    assert len(pop) == 300
    assert list(pop.columns[:4]) == ["replicate", "patient_id", "arm", "arm_index"]
    assert pop["patient_id"].tolist() == list(range(1, 151)) * 2
    assert {"weight", "bsa", "crcl", "eta_CL", "CL", "V1", "MTT"} <= set(pop.columns)
    assert pop.groupby("replicate").size().tolist() == [150, 150]


def test_sampling_is_deterministic() -> None:
    a = sample_population(study())
    b = sample_population(study())
    assert a.equals(b)


def test_adding_replicates_or_arms_keeps_existing_patients() -> None:
    base = sample_population(study())
    more = small_study_data()
    more["study"]["replicates"] = 3
    pop3 = sample_population(study_from_dict(more))
    first_two = pop3[pop3["replicate"] < 2].reset_index(drop=True)
    assert first_two.equals(base)
    arms = small_study_data()
    arms["arms"].append({"name": "300mg_qd", "regimen": {"route": "oral", "dose": 300}})
    pop_arms = sample_population(study_from_dict(arms))
    cols = [c for c in base.columns if c not in ("arm", "arm_index")]
    assert pop_arms[cols].equals(base[cols])


def test_allocation_is_balanced_by_blocks() -> None:
    pop = sample_population(big_study(3000))
    counts = pop["arm"].value_counts()
    assert counts.max() - counts.min() <= 2  # permuted blocks of 6 (ratio 1:1:1)
    d = small_study_data()
    d["arms"][0]["ratio"] = 2
    d["population"]["size"] = 400
    pop = sample_population(study_from_dict(d))
    share = (pop[pop["replicate"] == 0]["arm"] == "placebo").mean()
    assert share == pytest.approx(0.5, abs=0.01)


def test_covariate_distributions_match_the_request() -> None:
    """Moments within sampling error at N = 20,000 (tolerances ~5 standard errors)."""
    pop = sample_population(big_study())
    n = len(pop)
    female = pop["sex"] == "F"
    assert female.mean() == pytest.approx(0.45, abs=5 * np.sqrt(0.45 * 0.55 / n))
    # age: normal(61, 10) truncated to [18, 85]: compare with scipy's truncnorm moments
    a, b = (18 - 61) / 10, (85 - 61) / 10
    tn = sps.truncnorm(a, b, loc=61, scale=10)
    assert pop["age"].mean() == pytest.approx(tn.mean(), abs=5 * tn.std() / np.sqrt(n))
    assert pop["age"].between(18, 85).all()
    # weight: log-normal by sex, median 68 (F) / 82 (M), CV 20 % -> sd(log) = sqrt(log(1.04))
    sdlog = np.sqrt(np.log1p(0.2**2))
    wf = np.log(pop.loc[female, "weight"])
    assert np.exp(np.median(wf)) == pytest.approx(68, rel=0.02)
    assert wf.std() == pytest.approx(sdlog, rel=0.05)
    # IIV: eta_CL and eta_V1 with variances 0.09 and correlation 0.3
    eta = pop[["eta_CL", "eta_V1"]].to_numpy()
    assert eta.var(axis=0) == pytest.approx([0.09, 0.09], rel=0.05)
    assert np.corrcoef(eta.T)[0, 1] == pytest.approx(0.3, abs=0.03)
    # the individual CL applies the covariate model and the random effect
    expected = (
        5.0 * (pop["weight"] / 70) ** 0.75 * (pop["crcl"] / 100) ** 0.25 * np.exp(pop["eta_CL"])
    )
    np.testing.assert_allclose(pop["CL"], expected, rtol=1e-14)


#: mistakes in the model variability section of config/config.yaml, each refused with one problem
#: naming the key path, the rule and the value (see tests/study/test_config.py)
REFUSED_SAMPLING = [
    pytest.param(
        {"model.iiv.omegas": {}}, ["model.iiv:", "unknown key(s) ['omegas']"], id="unknown-iiv"
    ),
    pytest.param(
        {"model.parameters.CL.covariates": True},
        ["model.parameters.CL.covariates", "true"],
        id="bool-expression",
    ),
    pytest.param(
        {"model.iiv.omega.CL": -0.1},
        ["model.iiv.omega.CL", "must be >= 0", "got -0.1"],
        id="neg-omega",
    ),
    pytest.param(
        {"model.iiv.correlations.CL~V1": 1.5},
        ["model.iiv.correlations.CL~V1", "must be <= 1", "got 1.5"],
        id="corr-range",
    ),
    pytest.param(
        {"model.iiv.correlations": {"CL-V1": 0.3}},
        ["model.iiv.correlations", "must match", '"CL-V1"'],
        id="corr-name",
    ),
    pytest.param(
        {"model.iiv.distribution": {"CL": "gamma"}},
        ["model.iiv.distribution.CL", "must be one of", '"gamma"'],
        id="distribution-enum",
    ),
    pytest.param(
        {"model.parameters.CLL": {"value": 5.0}},
        ["model.parameters.CLL:", "not a parameter of the model"],
        id="override-not-a-parameter",
    ),
    pytest.param(
        {"model.parameters.CL.unit": "mg"},
        ["model.parameters.CL.unit", "the model declares 'L/h'", "got 'mg'", "[mass]"],
        id="override-unit-mismatch",
    ),
    pytest.param(
        {"model.iiv.omega.VMAX": 0.1},
        ["model.iiv.omega.VMAX", "not a model parameter", "'CL'"],
        id="omega-unknown-parameter",
    ),
    pytest.param(
        {"model.iiv.correlations": {"CL~V1": 0.9, "CL~KA": 0.9, "V1~KA": -0.9}},
        ["model.iiv:", "OMEGA must be positive semi-definite", "smallest eigenvalue -0.072"],
        id="omega-not-psd",
    ),
    pytest.param(
        {"model.iiv.correlations": {"CL~Q2": 0.2}},
        ["model.iiv.correlations.CL~Q2", "Q2 has no omega (variance) entry"],
        id="correlation-without-omega",
    ),
    pytest.param(
        {"model.iiv.correlations": {"CL~CL": 0.2}},
        ["model.iiv.correlations.CL~CL", "two different names"],
        id="self-correlation",
    ),
    pytest.param(
        {"model.iiv.distribution": {"Q2": "normal"}},
        ["model.iiv.distribution.Q2", "has no omega (variance) entry"],
        id="distribution-without-omega",
    ),
    pytest.param(
        {"model.iiv.distribution": {"CL": "logit"}},
        ["model.iiv.distribution.CL", "logit needs a value in (0, 1)", "got 5.0"],
        id="logit-outside-0-1",
    ),
    pytest.param(
        {"model.parameters.KA.value": -1.0},
        ["model.iiv.omega.KA", "log-normal IIV needs a typical value > 0", "got -1.0"],
        id="lognormal-nonpositive",
    ),
    pytest.param(
        {"model.parameters.CL.covariates": "__import__('os').system('x')"},
        ["model.parameters.CL.covariates", "attribute access ('.system') is not allowed"],
        id="unsafe-import-system",
    ),
    pytest.param(
        {"model.parameters.CL.covariates": "__import__('os')"},
        ["model.parameters.CL.covariates", "function '__import__' is not allowed"],
        id="unsafe-import",
    ),
    pytest.param(
        {"model.parameters.CL.covariates": "open('/etc/passwd')"},
        ["model.parameters.CL.covariates", "function 'open' is not allowed"],
        id="unsafe-open",
    ),
    pytest.param(
        {"model.parameters.CL.covariates": "(lambda: 1)()"},
        ["model.parameters.CL.covariates", "lambda functions are not allowed"],
        id="unsafe-lambda",
    ),
    pytest.param(
        {"model.parameters.CL.covariates": "weight.__class__"},
        ["model.parameters.CL.covariates", "attribute access ('.__class__')"],
        id="unsafe-dunder",
    ),
    pytest.param(
        {"model.parameters.CL.covariates": "[w for w in weight]"},
        ["model.parameters.CL.covariates", "not allowed"],
        id="unsafe-comprehension",
    ),
    pytest.param(
        {"model.parameters.CL.covariates": "(wieght / 70) ** 0.75"},
        ["model.parameters.CL.covariates", "unknown name 'wieght'", "did you mean 'weight'"],
        id="unknown-name",
    ),
    pytest.param(
        {"model.parameters.CL.covariates": "CL * weight / 70"},
        ["model.parameters.CL.covariates", "unknown name 'CL'"],
        id="parameter-in-covariate-expr",
    ),
    pytest.param(
        {"model.parameters.CL.covariates": "t / 24"},
        ["model.parameters.CL.covariates", "unknown name 't'"],
        id="time-in-covariate-expr",
    ),
    pytest.param(
        {"model.parameters.CL.covariates": "sex * 0.8"},
        ["model.parameters.CL.covariates", "categorical name 'sex'", "not used as a number"],
        id="categorical-as-number",
    ),
    pytest.param(
        {"model.parameters.CL.covariates": "where(sex == 'female', 0.8, 1)"},
        ["model.parameters.CL.covariates", "'female' is not a category of sex"],
        id="unknown-category-label",
    ),
    pytest.param(
        {"model.parameters.CL.covariates": "weight ^ 0.75"},
        ["model.parameters.CL.covariates", "operator '^' is not allowed", "use ** for powers"],
        id="caret-power",
    ),
    pytest.param(
        {"model.parameters.CL.covariates": "(weight / 70"},
        ["model.parameters.CL.covariates", "syntax error"],
        id="syntax-error",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), REFUSED_SAMPLING)
def test_sampling_mistakes_are_refused(
    tmp_path: Path, changes: dict[str, Any], expected: list[str]
) -> None:
    assert_mutation_refused(tmp_path, changes, expected)
