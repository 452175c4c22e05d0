"""Virtual populations (vtrial.population.covariates and the distributions, resample and
validate modules it draws on): copula, empirical distributions, genotypes,
inclusion/exclusion criteria, resampling of a covariate table, population summary.
Derived covariates: test_derived.py.

Statistical checks use N = 20,000 draws and a tolerance of 4 standard errors: means
against the exact mean of the declared (truncated) marginal, correlations of the
normal scores with the Fisher z standard error 1/sqrt(N - 3), marginals with a
Kolmogorov-Smirnov test (p > 1e-3). The seeds are fixed, so the tests are
deterministic; the measured numbers are in the comments.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import special
from scipy import stats as sps

import vtrial.population.covariates as cov_mod
from tests.conftest import ROOT, small_study_data
from vtrial.analysis.popsummary import ALL_ARMS, population_summary
from vtrial.errors import ConfigError
from vtrial.population.covariates import covariate_sampler
from vtrial.population.sampling import sample_population
from vtrial.run.io import read_provenance
from vtrial.run.stages import run_sample_population
from vtrial.study.config import Study, study_from_dict

N = 20_000
SEED = 20261122

#: The default study's population section when this module was written
DEFAULT_POPULATION: dict[str, Any] = {
    "size": 2400,
    "covariates": {
        "sex": {"categorical": {"F": 0.45, "M": 0.55}},
        "age": {"normal": {"mean": 61, "sd": 10}, "bounds": [18, 85], "unit": "year"},
        "weight": {
            "lognormal": {"median": {"F": 68, "M": 82}, "cv": 0.2},
            "by": "sex",
            "bounds": [40, 160],
            "unit": "kg",
        },
        "height": {
            "normal": {"mean": {"F": 163, "M": 176}, "sd": 7},
            "by": "sex",
            "bounds": [140, 205],
            "unit": "cm",
        },
        "scr": {"lognormal": {"median": 0.9, "cv": 0.25}, "bounds": [0.4, 3.0], "unit": "mg/dL"},
    },
    "derived": ["bmi", "bsa", "crcl"],
}


def make_study(population: dict[str, Any], *, replicates: int = 1, **where: Any) -> Study:
    """The small study with another population section (seed pinned)."""
    d = small_study_data()
    d["study"]["seed"] = SEED
    d["study"]["replicates"] = replicates
    d["population"] = copy.deepcopy(population)
    if "crcl" not in population.get("derived", []):  # the covariate models need weight, crcl
        for spec in d["model"]["parameters"].values():
            spec.pop("covariates", None)
    return study_from_dict(d, **where)


def covariate_hash(pop: pd.DataFrame, names: list[str]) -> str:
    h = hashlib.sha256()
    for c in names:
        v = pop[c].to_numpy()
        h.update(c.encode())
        if v.dtype == object:
            h.update(v.astype("U").tobytes())
        else:
            h.update(np.ascontiguousarray(v, dtype="<f8").tobytes())
    return h.hexdigest()


def refused(population: dict[str, Any], **where: Any) -> list[str]:
    """The problem lines of a population that must not validate."""
    with pytest.raises(ConfigError) as info:
        make_study(population, **where)
    return [str(p) for p in info.value.problems]


def assert_reported(lines: list[str], *expected: str) -> None:
    for text in expected:
        assert any(text in line for line in lines), f"{text!r} not in {lines}"


def trunc_norm_cdf(x: Any, mu: Any, sd: Any, lo: float, hi: float) -> Any:
    a, b = special.ndtr((lo - mu) / sd), special.ndtr((hi - mu) / sd)
    return (special.ndtr((x - mu) / sd) - a) / (b - a)


def trunc_lognorm_moments(med: float, cv: float, lo: float, hi: float) -> tuple[float, float]:
    """Mean and SD of a log-normal (median, CV) truncated to [lo, hi]."""
    m, s = np.log(med), np.sqrt(np.log1p(cv**2))
    al, be = (np.log(lo) - m) / s, (np.log(hi) - m) / s
    z = special.ndtr(be) - special.ndtr(al)
    e1 = np.exp(m + s**2 / 2) * (special.ndtr(be - s) - special.ndtr(al - s)) / z
    e2 = np.exp(2 * m + 2 * s**2) * (special.ndtr(be - 2 * s) - special.ndtr(al - 2 * s)) / z
    return float(e1), float(np.sqrt(e2 - e1**2))


# ---------------------------------------------------------------------------
# Nothing changes without the new keys
# ---------------------------------------------------------------------------


def test_default_population_is_bit_identical_to_before() -> None:
    """Covariates of the default study's population, hashed with the code before this
    change (commit 13e3a72): identical bits, and patient i is candidate i - 1."""
    s = make_study(DEFAULT_POPULATION)
    candidates: list[int] = []
    pop = sample_population(s, candidates=candidates)
    names = ["sex", "age", "weight", "height", "scr", "bmi", "bsa", "crcl"]
    assert list(pop.columns[4:12]) == names
    expected = "8ca12f03aed8ee12ee3386819089a2d8c06b0bcefc79671defbb5c53d987cc5d"
    assert covariate_hash(pop, names) == expected
    assert pop.loc[0, "age"] == 53.3495986882756
    assert candidates == [2400]


def test_every_distribution_is_bit_identical_to_before() -> None:
    """Categorical, truncated normal and log-normal with `by`, uniform with `by`,
    constant and all six derived covariates, two replicates: hash from commit 13e3a72."""
    population = {
        "size": 500,
        "covariates": {
            "age": {"normal": {"mean": 61, "sd": 10}, "bounds": [18, 85]},
            "sex": {"categorical": {"F": 0.45, "M": 0.55}},
            "weight": {
                "lognormal": {"median": {"F": 68, "M": 82}, "cv": 0.2},
                "by": "sex",
                "bounds": [40, 160],
            },
            "height": {"normal": {"mean": {"F": 163, "M": 176}, "sd": 7}, "by": "sex"},
            "scr": {"lognormal": {"median": 0.9, "cv": 0.25}},
            "genotype": {"categorical": {"EM": 0.7, "IM": 0.25, "PM": 0.05}},
            "albumin": {"uniform": {"low": {"F": 30, "M": 32}, "high": 50}, "by": "sex"},
            "site": {"constant": 1},
        },
        "derived": ["bmi", "bsa", "bsa_dubois", "crcl", "egfr", "lbw"],
    }
    pop = sample_population(make_study(population, replicates=2))
    names = ["sex", "genotype", "age", "weight", "height", "scr", "albumin", "site"]
    names += population["derived"]
    assert list(pop.columns[4 : 4 + len(names)]) == names
    expected = "2ff9c6adf8e498bebd6975a20aba094481ce1c63a2f3653400919032d57a1940"
    assert covariate_hash(pop, names) == expected


# ---------------------------------------------------------------------------
# Gaussian copula: exact marginals, requested correlations
# ---------------------------------------------------------------------------

COPULA_POPULATION: dict[str, Any] = {
    **copy.deepcopy(DEFAULT_POPULATION),
    "size": N,
}
COPULA_POPULATION["covariates"].update(
    {
        "alb": {"uniform": {"low": 30, "high": 50}},
        "crp": {"empirical": {"quantiles": [0.3, 1.2, 3.0, 8.5, 40.0]}},
    }
)
COPULA_POPULATION["correlation"] = {
    "age~scr": 0.3,
    "weight~height": 0.5,
    "alb~age": -0.4,
    "scr~crp": 0.2,
}


def _scores(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Normal scores Φ⁻¹(F(x)) of each continuous covariate under its declared marginal."""
    female = c["sex"] == "F"
    sd_w = np.sqrt(np.log1p(0.2**2))
    med_w = np.where(female, 68.0, 82.0)
    f = {
        "age": trunc_norm_cdf(c["age"], 61.0, 10.0, 18.0, 85.0),
        "weight": trunc_norm_cdf(np.log(c["weight"]), np.log(med_w), sd_w, np.log(40), np.log(160)),
        "height": trunc_norm_cdf(c["height"], np.where(female, 163.0, 176.0), 7.0, 140.0, 205.0),
        "scr": trunc_norm_cdf(
            np.log(c["scr"]), np.log(0.9), np.sqrt(np.log1p(0.25**2)), np.log(0.4), np.log(3.0)
        ),
        "alb": (c["alb"] - 30.0) / 20.0,
        "crp": np.interp(c["crp"], [0.3, 1.2, 3.0, 8.5, 40.0], np.linspace(0, 1, 5)),
    }
    return {k: special.ndtri(v) for k, v in f.items()}


def test_copula_keeps_marginals_exact_and_gives_the_correlations() -> None:
    """N = 20,000: all 15 normal-score correlations within 4 Fisher-z SE (0.028) of
    the request (0 for pairs not given); measured age~scr 0.295, weight~height 0.502,
    alb~age -0.407, scr~crp 0.194, largest deviation 2.6 SE. Marginals: KS p > 1e-3
    (smallest measured 0.038, height) and means within 4 SE; Spearman age~scr 0.284
    vs (6/pi) arcsin(0.15) = 0.288."""
    s = make_study(COPULA_POPULATION)
    c = covariate_sampler(s).draw(0, 0, N)
    z = _scores(c)
    names = list(z)
    requested = s.data["population"]["correlation"]
    se = 1 / np.sqrt(N - 3)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            rho = requested.get(f"{a}~{b}", requested.get(f"{b}~{a}", 0.0))
            r = np.corrcoef(z[a], z[b])[0, 1]
            assert abs(np.arctanh(r) - np.arctanh(rho)) < 4 * se, (a, b, r, rho)
    # marginals: the scores are standard normal (KS), i.e. F(x) is uniform
    for name, v in z.items():
        assert sps.kstest(v, "norm").pvalue > 1e-3, name
    female = c["sex"] == "F"
    assert female.mean() == pytest.approx(0.45, abs=4 * np.sqrt(0.45 * 0.55 / N))
    tn = sps.truncnorm(-4.3, 2.4, loc=61, scale=10)
    assert abs(c["age"].mean() - tn.mean()) < 4 * tn.std() / np.sqrt(N)
    m, sd = trunc_lognorm_moments(0.9, 0.25, 0.4, 3.0)
    assert abs(c["scr"].mean() - m) < 4 * sd / np.sqrt(N)
    assert abs(c["alb"].mean() - 40.0) < 4 * (20 / np.sqrt(12)) / np.sqrt(N)
    for sex, med, mean_h in (("F", 68.0, 163.0), ("M", 82.0, 176.0)):
        sub = c["sex"] == sex
        m, sd = trunc_lognorm_moments(med, 0.2, 40.0, 160.0)
        assert abs(c["weight"][sub].mean() - m) < 4 * sd / np.sqrt(sub.sum())
        tn = sps.truncnorm((140 - mean_h) / 7, (205 - mean_h) / 7, loc=mean_h, scale=7)
        assert abs(c["height"][sub].mean() - tn.mean()) < 4 * tn.std() / np.sqrt(sub.sum())
    assert c["age"].min() >= 18
    assert c["age"].max() <= 85
    assert c["crp"].min() >= 0.3
    assert c["crp"].max() <= 40.0
    # Spearman (rank) correlation of age and scr: (6/pi) arcsin(0.3/2) = 0.287
    rs = sps.spearmanr(c["age"], c["scr"]).statistic
    assert abs(np.arctanh(rs) - np.arctanh(6 / np.pi * np.arcsin(0.15))) < 4 * 1.06 * se


def test_copula_leaves_covariates_outside_it_unchanged() -> None:
    """Only the covariates whose Cholesky row mixes in earlier scores change: sex, age
    (first of the group) and weight (no earlier partner) keep their exact bits."""
    plain = copy.deepcopy(DEFAULT_POPULATION)
    corr = copy.deepcopy(DEFAULT_POPULATION)
    corr["correlation"] = {"age~scr": 0.3, "weight~height": 0.5}
    a = covariate_sampler(make_study(plain)).draw(0, 0, 3000)
    b = covariate_sampler(make_study(corr)).draw(0, 0, 3000)
    for name in ("sex", "age", "weight"):
        assert np.array_equal(a[name], b[name]), name
    for name in ("height", "scr"):
        assert not np.array_equal(a[name], b[name]), name


def test_correlation_validation_reports_every_problem() -> None:
    pop = copy.deepcopy(DEFAULT_POPULATION)
    pop["covariates"]["site"] = {"constant": 1}
    pop["correlation"] = {
        "sex~age": 0.2,
        "age~bilirubin": 0.1,
        "age~age": 0.5,
        "scr~weight": 0.1,
        "weight~scr": 0.1,
        "site~height": 0.3,
    }
    lines = refused(pop, source="pop.yaml")
    assert_reported(
        lines,
        "pop.yaml: population.correlation.sex~age: sex is categorical; correlations are "
        "between continuous covariates (normal, lognormal, uniform, empirical)",
        "pop.yaml: population.correlation.age~bilirubin: bilirubin is not a sampled covariate",
        "pop.yaml: population.correlation.age~age: a correlation needs two different "
        "covariates, got age~age",
        "pop.yaml: population.correlation.weight~scr: repeats scr~weight",
        "pop.yaml: population.correlation.site~height: site is constant",
    )
    assert len(lines) == 5


def test_correlation_matrix_must_be_positive_definite() -> None:
    pop = copy.deepcopy(DEFAULT_POPULATION)
    pop["correlation"] = {"age~weight": 0.9, "weight~scr": 0.9, "age~scr": -0.9}
    lines = refused(pop, source="pop.yaml")
    assert lines == [
        "pop.yaml: population.correlation: the correlation matrix of ['age', 'weight', "
        "'scr'] must be positive definite, smallest eigenvalue -0.8, got "
        "{'age~weight': 0.9, 'weight~scr': 0.9, 'age~scr': -0.9}"
    ]
    pop["correlation"] = {"age~weight": 1.0}  # singular: eigenvalue 0
    assert_reported(refused(pop), "must be positive definite, smallest eigenvalue 0")
    pop["correlation"] = {"age~weight": 1.5}  # schema
    assert_reported(refused(pop), "population.correlation.age~weight: must be <= 1, got 1.5")


# ---------------------------------------------------------------------------
# Empirical distributions, genotypes
# ---------------------------------------------------------------------------


def test_empirical_values_weights_and_quantiles() -> None:
    """N = 20,000: value frequencies within 4 binomial SE; linear-quantile marginal
    KS p > 1e-3 and mean within 4 SE; per-category lists with `by`."""
    pop = {
        "size": N,
        "covariates": {
            "sex": {"categorical": {"F": 0.5, "M": 0.5}},
            "ecog": {"empirical": {"values": [2, 0, 1], "weights": [0.1, 0.45, 0.45]}},
            "dose_level": {"empirical": {"values": [10, 20, 20, 40]}},
            "crp": {
                "empirical": {"quantiles": [0.3, 1.2, 3.0, 8.5, 40], "probs": [0, 0.2, 0.5, 0.9, 1]}
            },
            "alb": {
                "empirical": {"quantiles": {"F": [30, 40, 48], "M": [33, 43, 51]}},
                "by": "sex",
            },
        },
    }
    c = covariate_sampler(make_study(pop)).draw(0, 0, N)
    for value, p in ((0, 0.45), (1, 0.45), (2, 0.1)):
        share = (c["ecog"] == value).mean()
        assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / N), (value, share)
    for value, p in ((10, 0.25), (20, 0.5), (40, 0.25)):  # equal weights, 20 twice
        assert abs((c["dose_level"] == value).mean() - p) < 4 * np.sqrt(p * (1 - p) / N)
    q, pr = np.array([0.3, 1.2, 3.0, 8.5, 40]), np.array([0, 0.2, 0.5, 0.9, 1])
    assert sps.kstest(c["crp"], lambda x: np.interp(x, q, pr)).pvalue > 1e-3
    mean = float(np.sum((q[1:] + q[:-1]) / 2 * np.diff(pr)))
    ex2 = float(np.sum(np.diff(pr) * (q[1:] ** 2 + q[1:] * q[:-1] + q[:-1] ** 2) / 3))
    assert abs(c["crp"].mean() - mean) < 4 * np.sqrt(ex2 - mean**2) / np.sqrt(N)
    for sex, qs in (("F", [30, 40, 48]), ("M", [33, 43, 51])):
        x = c["alb"][c["sex"] == sex]
        assert x.min() >= qs[0]
        assert x.max() <= qs[2]
        assert sps.kstest(x, lambda v, qs=qs: np.interp(v, qs, [0, 0.5, 1])).pvalue > 1e-3


def test_empirical_validation_reports_every_problem() -> None:
    pop = copy.deepcopy(DEFAULT_POPULATION)
    pop["covariates"].update(
        {
            "a": {"empirical": {"values": [1, 2], "quantiles": [1, 2]}},
            "b": {"empirical": {"values": [1, 2, 3], "weights": [1, 2]}},
            "c": {"empirical": {"quantiles": [5, 3, 8]}},
            "d": {"empirical": {"quantiles": [1, 2, 3], "probs": [0.1, 0.5, 1]}},
            "e": {"empirical": {"values": [1, 2]}, "bounds": [0, 3]},
            "f": {"empirical": {"values": [1, 2], "probs": [0, 1]}},
            "g": {"empirical": {"values": {"F": [1, 2]}}, "by": "sex"},
        }
    )
    lines = refused(pop, source="pop.yaml")
    assert_reported(
        lines,
        "pop.yaml: population.covariates.a.empirical: needs exactly one of 'values' "
        "(optional 'weights') or 'quantiles' (optional 'probs'), got ['values', 'quantiles']",
        "pop.yaml: population.covariates.b.empirical.weights: needs one entry per value (3), got 2",
        "pop.yaml: population.covariates.c.empirical.quantiles: must be non-decreasing, "
        "got [5, 3, 8]",
        "pop.yaml: population.covariates.d.empirical.probs: must increase strictly from 0 "
        "to 1, got [0.1, 0.5, 1]",
        "pop.yaml: population.covariates.e.bounds: an empirical covariate takes no 'bounds' "
        "(its values are its support), got [0, 3]",
        "pop.yaml: population.covariates.f.empirical.probs: only applies with quantiles, "
        "got [0, 1]",
        "pop.yaml: population.covariates.g.empirical.values: needs a value for every "
        "category of sex ['F', 'M'], got ['F']",
    )
    assert len(lines) == 7
    bad_weight = copy.deepcopy(DEFAULT_POPULATION)
    bad_weight["covariates"]["x"] = {"empirical": {"values": [1, 2], "weights": [1, -2]}}
    assert_reported(
        refused(bad_weight, source="pop.yaml"),
        "pop.yaml: population.covariates.x.empirical.weights[1]: must be > 0, got -2",
    )


def test_genotype_frequencies_and_covariate_model() -> None:
    """CYP2C9 phenotypes EM/IM/PM 0.6/0.3/0.1 (N = 20,000, within 4 SE) and
    CL = 5 (weight/70)^0.75 (crcl/100)^0.25 (0.6 if PM else 1) exp(eta_CL), exactly."""
    d = small_study_data()
    d["study"]["seed"] = SEED
    d["study"]["replicates"] = 1
    d["population"]["size"] = N
    d["population"]["covariates"]["cyp2c9"] = {"categorical": {"EM": 0.6, "IM": 0.3, "PM": 0.1}}
    d["model"]["parameters"]["CL"]["covariates"] = (
        "(weight / 70) ** 0.75 * (crcl / 100) ** 0.25 * (0.6 if cyp2c9 == 'PM' else 1)"
    )
    pop = sample_population(study_from_dict(d))
    for label, p in (("EM", 0.6), ("IM", 0.3), ("PM", 0.1)):
        share = (pop["cyp2c9"] == label).mean()
        assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / N), (label, share)
    pm = np.where(pop["cyp2c9"] == "PM", 0.6, 1.0)
    expected = (
        5.0
        * (pop["weight"] / 70) ** 0.75
        * (pop["crcl"] / 100) ** 0.25
        * pm
        * np.exp(pop["eta_CL"])
    )
    np.testing.assert_allclose(pop["CL"], expected, rtol=1e-14)
    d["model"]["parameters"]["CL"]["covariates"] = "0.6 if cyp2c9 == 'XM' else 1"
    with pytest.raises(ConfigError, match=r"model\.parameters\.CL\.covariates: .*'XM'"):
        study_from_dict(d)


# ---------------------------------------------------------------------------
# Inclusion and exclusion criteria
# ---------------------------------------------------------------------------

CRITERIA_POPULATION: dict[str, Any] = {
    **copy.deepcopy(DEFAULT_POPULATION),
    "size": 300,
    "inclusion": ["age < 61", "crcl >= 30"],
    "exclusion": ["sex == 'F' and weight > 80"],
}


def test_criteria_give_exactly_size_eligible_patients() -> None:
    """Every replicate has exactly `size` patients, all eligible, which are the first
    eligible candidates in order; the run's acceptance (measured 900 / 1943 = 0.463)
    agrees within 4 binomial SE with a 20,000-candidate pilot (0.456), and the share
    meeting age < 61 alone (0.503) with the truncated normal's 0.504."""
    s = make_study(CRITERIA_POPULATION, replicates=3)
    candidates: list[int] = []
    pop = sample_population(s, candidates=candidates)
    assert pop.groupby("replicate").size().tolist() == [300, 300, 300]
    assert (pop["age"] < 61).all()
    assert (pop["crcl"] >= 30).all()
    assert not ((pop["sex"] == "F") & (pop["weight"] > 80)).any()
    sampler = covariate_sampler(s)
    for r in range(3):
        cand = sampler.draw(r, 0, candidates[r])
        ok = sampler.eligible(cand, candidates[r])
        assert ok.sum() == 300
        assert ok[-1]
        rep = pop[pop["replicate"] == r]
        for name in ("age", "weight", "scr", "crcl"):
            assert np.array_equal(rep[name].to_numpy(), cand[name][ok]), name
    # the acceptance of a large pilot estimates the rate; the run's rate agrees with it
    rate, each = sampler.pilot(N)
    total = 900 / sum(candidates)
    assert abs(total - rate) < 4 * np.sqrt(rate * (1 - rate) / sum(candidates))
    p_age = (0.5 - special.ndtr(-4.3)) / (special.ndtr(2.4) - special.ndtr(-4.3))
    assert abs(each["population.inclusion[0]"] - p_age) < 4 * np.sqrt(p_age * (1 - p_age) / N)


def test_criteria_draws_are_invariant() -> None:
    """Patients do not depend on size (prefix), on other replicates, on the shard count
    or on how candidates are batched; the IIV of patient i is keyed by i."""
    base = sample_population(make_study(CRITERIA_POPULATION, replicates=2))
    bigger = copy.deepcopy(CRITERIA_POPULATION)
    bigger["size"] = 450
    big = sample_population(make_study(bigger, replicates=3))
    cols = ["sex", "age", "weight", "height", "scr", "crcl", "eta_CL"]
    for r in range(2):
        a = base[base["replicate"] == r][cols].reset_index(drop=True)
        b = big[big["replicate"] == r][cols].head(300).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    d = small_study_data()
    d["study"]["seed"], d["study"]["replicates"] = SEED, 2
    d["population"] = copy.deepcopy(CRITERIA_POPULATION)
    d["execution"] = {"shards": 7, "workers": 2, "chunk_size": 16}
    sharded = sample_population(study_from_dict(d))
    pd.testing.assert_frame_equal(sharded, base, check_exact=True)


def test_batching_does_not_change_patients(monkeypatch: pytest.MonkeyPatch) -> None:
    s = make_study(CRITERIA_POPULATION)
    covs, n = covariate_sampler(s).sample(0, 300)
    monkeypatch.setattr(cov_mod, "MAX_BATCH", 7)
    small, n_small = covariate_sampler(s).sample(0, 300)
    assert n == n_small
    for k, v in covs.items():
        assert np.array_equal(v, small[k]), k


def test_size_prefix_without_criteria() -> None:
    """Without criteria, a patient's covariates do not depend on population.size."""
    a = covariate_sampler(make_study(DEFAULT_POPULATION)).sample(0, 2400)[0]
    small = copy.deepcopy(DEFAULT_POPULATION)
    small["size"] = 100
    b = covariate_sampler(make_study(small)).sample(0, 100)[0]
    for k in b:
        assert np.array_equal(a[k][:100], b[k]), k


def test_rare_criteria_refused_at_validation() -> None:
    """A pilot of 10,000 candidates: 0.05 % meet crcl >= 300, below the 1 % minimum."""
    pop = copy.deepcopy(DEFAULT_POPULATION)
    pop["inclusion"] = ["crcl >= 300", "age < 80"]
    lines = refused(pop, source="rare.yaml")
    assert len(lines) == 1
    assert re.fullmatch(
        r"rare\.yaml: population\.inclusion: the criteria \['crcl >= 300', 'age < 80'\] "
        r"accept 0\.0\d% of 10000 pilot candidates \(\d eligible\), below "
        r"population\.min_acceptance 0\.01; each alone keeps: population\.inclusion\[0\] "
        r"0\.0\d%, population\.inclusion\[1\] 9\d\.\d\d%",
        lines[0],
    ), lines[0]
    pop["min_acceptance"] = 0.0001  # accepted when the user lowers the minimum
    assert make_study(pop).data["population"]["min_acceptance"] == 0.0001


def test_hard_cap_on_candidates() -> None:
    """Sampling stops after 4 x size / min_acceptance + 10,000 candidates."""
    pop = copy.deepcopy(DEFAULT_POPULATION)
    pop["size"] = 50
    pop["inclusion"] = ["age > 84.9"]  # about 1 in 10,000
    d = small_study_data()
    d["study"]["seed"] = SEED
    d["population"] = pop
    sampler = cov_mod.CovariateSampler.from_data(d, ROOT, "cap.yaml")  # not validated
    assert sampler.max_candidates(50) == 30_000
    with pytest.raises(ConfigError) as info:
        sampler.sample(0, 50)
    text = str(info.value.problems[0])
    assert text.startswith("cap.yaml: population.inclusion: replicate 0: only ")
    assert "of 50 candidates met the criteria ['age > 84.9'] after 30000 candidates" in text


def test_criteria_validation_reports_every_problem() -> None:
    pop = copy.deepcopy(DEFAULT_POPULATION)
    pop["inclusion"] = ["crcl >= ", "bilirubin < 2", "age + 1", "__import__('os')"]
    pop["exclusion"] = ["sex == 'X'"]
    lines = refused(pop, source="crit.yaml")
    assert_reported(
        lines,
        "crit.yaml: population.inclusion[0]: ",
        "crit.yaml: population.inclusion[1]: unknown name 'bilirubin'",
        "crit.yaml: population.inclusion[2]: a condition is required here",
        "crit.yaml: population.inclusion[3]: ",
        "crit.yaml: population.exclusion[0]: ",
    )
    assert "'X'" in lines[-1]
    assert "in expression \"sex == 'X'\"" in lines[-1]
    assert len(lines) == 5
    pop = copy.deepcopy(DEFAULT_POPULATION)
    pop["min_acceptance"] = 0.05
    assert refused(pop, source="crit.yaml") == [
        "crit.yaml: population.min_acceptance: applies to population.inclusion/exclusion, "
        "which are not set, got 0.05"
    ]


# ---------------------------------------------------------------------------
# Resampling a covariate table
# ---------------------------------------------------------------------------


def _table(n: int = 400, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n, p=[0.3, 0.7])
    return pd.DataFrame(
        {
            "id": np.arange(1, n + 1),
            "sex": sex,
            "age": rng.normal(60, 10, n).round(1),
            "weight": rng.lognormal(np.log(np.where(sex == "F", 66, 80)), 0.2).round(1),
            "height": rng.normal(np.where(sex == "F", 163, 177), 7).round(1),
            "scr": rng.lognormal(np.log(0.9), 0.25, n).round(2),
            "w": rng.choice([1.0, 2.0], n),
        }
    )


def _resample_population(**resample: Any) -> dict[str, Any]:
    spec = {
        "table": "data/cov.csv",
        "columns": ["sex", "age", "weight", "height", "scr"],
        "categorical": {"sex": ["F", "M"]},
    }
    spec.update(resample)
    return {"size": 1000, "resample": spec, "derived": ["bmi", "bsa", "crcl"]}


def test_resample_rows_strata_weights_and_jitter(tmp_path: Path) -> None:
    """Rows come from the table; strata: the number of F in every prefix of the 1000
    patients is within 2 of prefix x the table's share 0.2875 (measured max deviation
    1.5; a multinomial draw deviates by ~30); weights: rows of weight 2 have 2/3 of the
    draws (measured 0.668 at N = 20,000, within 4 SE); jitter: log(x / table value) has
    SD 0.05 (measured 0.0500, 0.0498; within 4 SE) and categorical columns are kept."""
    (tmp_path / "data").mkdir()
    table = _table()
    table.to_csv(tmp_path / "data" / "cov.csv", index=False)
    where = {"source": str(tmp_path / "s.yaml"), "base_dir": tmp_path}
    # plain bootstrap, stratified by sex: values are the table's rows exactly
    s = make_study(_resample_population(strata=["sex"]), **where)
    pop = sample_population(s)
    rows = pop["resample_row"].to_numpy() - 1
    for c in ("sex", "age", "weight", "height", "scr"):
        assert np.array_equal(pop[c].to_numpy(), table[c].to_numpy()[rows]), c
    share_f = (table["sex"] == "F").mean()
    prefix = np.cumsum(pop["sex"].to_numpy() == "F")
    k = np.arange(1, len(pop) + 1)
    assert np.abs(prefix - k * share_f).max() < 2.0
    assert list(pop.columns[4:10]) == ["sex", "age", "weight", "height", "scr", "resample_row"]
    # derived covariates apply to resampled patients
    np.testing.assert_allclose(pop["bmi"], pop["weight"] / (pop["height"] / 100) ** 2)
    # weights and jitter
    spec = _resample_population(weights="w", jitter={"weight": 0.05, "scr": 0.05})
    spec["size"] = N
    s = make_study(spec, **where)
    c = covariate_sampler(s).draw(0, 0, N)
    rows = c["resample_row"] - 1
    heavy = (table["w"].to_numpy() == 2.0)[rows].mean()
    p = table["w"][table["w"] == 2].sum() / table["w"].sum()
    assert abs(heavy - p) < 4 * np.sqrt(p * (1 - p) / N)
    for col in ("weight", "scr"):
        ratio = np.log(c[col] / table[col].to_numpy()[rows])
        assert abs(ratio.std() - 0.05) < 4 * 0.05 / np.sqrt(2 * N), col
        assert abs(ratio.mean()) < 4 * 0.05 / np.sqrt(N), col
    assert np.array_equal(c["age"], table["age"].to_numpy()[rows])  # no jitter
    assert np.array_equal(c["sex"], table["sex"].to_numpy()[rows])


def test_resample_with_sampled_covariates_and_criteria(tmp_path: Path) -> None:
    """Extra covariates are sampled on top (a `by` may name a resampled column); the
    criteria apply to resampled patients; the draws are keyed (prefix, replicates)."""
    (tmp_path / "data").mkdir()
    _table().to_parquet(tmp_path / "data" / "cov.parquet")
    spec = _resample_population(table="data/cov.parquet", strata=["sex"], jitter=0.02)
    spec["covariates"] = {
        "cyp2c9": {"categorical": {"EM": 0.6, "IM": 0.3, "PM": 0.1}},
        "alb": {"normal": {"mean": {"F": 40, "M": 42}, "sd": 3}, "by": "sex"},
    }
    spec["inclusion"] = ["crcl >= 60", "age >= 50"]
    spec["exclusion"] = ["cyp2c9 == 'PM' and sex == 'F'"]
    where = {"source": str(tmp_path / "s.yaml"), "base_dir": tmp_path}
    candidates: list[int] = []
    pop = sample_population(make_study(spec, replicates=2, **where), candidates=candidates)
    assert pop.groupby("replicate").size().tolist() == [1000, 1000]
    assert (pop["crcl"] >= 60).all()
    assert (pop["age"] >= 50).all()
    assert not ((pop["cyp2c9"] == "PM") & (pop["sex"] == "F")).any()
    assert all(c > 1000 for c in candidates)
    female = pop["sex"] == "F"
    assert abs(pop.loc[female, "alb"].mean() - 40) < 4 * 3 / np.sqrt(female.sum())
    spec["size"] = 400
    small = sample_population(make_study(spec, replicates=1, **where))
    cols = ["sex", "age", "weight", "resample_row", "cyp2c9", "alb", "crcl"]
    pd.testing.assert_frame_equal(
        small[cols], pop[pop["replicate"] == 0][cols].head(400), check_exact=True
    )


def test_resample_table_problems_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    t = _table(30).astype(object)
    t.loc[2, "age"] = "abc"
    t.loc[4, "weight"] = ""
    t.loc[6, "sex"] = "X"
    t.loc[8, "scr"] = "inf"
    t.loc[10, "w"] = -1
    t.loc[11, "w"] = 0
    t.to_csv(tmp_path / "data" / "cov.csv", index=False)
    spec = _resample_population(weights="w", strata=["sex"])
    lines = refused(spec, source="s.yaml", base_dir=tmp_path)
    table = str(tmp_path / "data" / "cov.csv")
    assert lines == [
        f"{table}: row 7 (line 8), column sex: unknown category (allowed: ['F', 'M'], "
        "population.resample.categorical.sex), got 'X'",
        f"{table}: row 3 (line 4), column age: must be a number (declare text columns in "
        "population.resample.categorical), got 'abc'",
        f"{table}: row 5 (line 6), column weight: missing value, got ''",
        f"{table}: row 9 (line 10), column scr: must be a finite number, got 'inf'",
        f"{table}: row 11 (line 12), column w: a weight must be > 0 "
        "(population.resample.weights), got '-1'",
        f"{table}: row 12 (line 13), column w: a weight must be > 0 "
        "(population.resample.weights), got '0'",
    ]


def test_resample_key_problems_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    _table(30).rename(columns={"id": "subject id"}).to_csv(
        tmp_path / "data" / "cov.csv", index=False
    )
    where = {"source": "s.yaml", "base_dir": tmp_path}
    spec = _resample_population(
        columns=["sex", "age", "bilirubin", "w"],
        categorical={"sex": ["F", "M"], "race": ["A", "B"]},
        strata=["age"],
        weights="w",
        jitter={"sex": 0.1},
    )
    spec["covariates"] = {"age": {"normal": {"mean": 60, "sd": 10}}}
    lines = refused(spec, **where)
    assert_reported(
        lines,
        "s.yaml: population.resample.columns[2]: not a column of cov.csv ['subject id', "
        "'sex', 'age', 'weight', 'height', 'scr', 'w'], got 'bilirubin'",
        "s.yaml: population.resample.columns[3]: 'w' is the weights column, not a covariate",
        "s.yaml: population.resample.categorical.race: not a resampled column ['sex', 'age'], "
        "got 'race'",
        "s.yaml: population.resample.strata[0]: must be a resampled categorical column "
        "(declared in population.resample.categorical ['race', 'sex']), got 'age'",
        "s.yaml: population.resample.jitter.sex: not a resampled numeric column ['age'], got 'sex'",
        "s.yaml: population.covariates.age: 'age' is also a resampled column",
    )
    # default columns: all but the weights; a column name that is not a covariate name
    lines = refused({"size": 10, "resample": {"table": "data/cov.csv", "weights": "w"}}, **where)
    assert_reported(
        lines,
        "s.yaml: population.resample.table: column 'subject id' of cov.csv is not a covariate name",
        "column sex: no value is a number (e.g. ['F', 'M']): declare a text column",
    )
    lines = refused({"size": 10, "resample": {"table": "data/none.csv"}}, **where)
    assert_reported(lines, "s.yaml: population.resample.table: cannot read the covariate table")
    lines = refused({"size": 10, "resample": {"table": "data/cov.xlsx"}}, **where)
    assert_reported(lines, "s.yaml: population.resample.table: must match")
    spec = _resample_population()
    spec["correlation"] = {"age~weight": 0.3}
    assert_reported(
        refused(spec, **where),
        "s.yaml: population.correlation.age~weight: age is resampled from "
        "population.resample.table",
    )


def test_table_is_part_of_the_study_hash(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "cov.csv"
    _table().to_csv(path, index=False)
    where = {"source": "s.yaml", "base_dir": tmp_path}
    before = make_study(_resample_population(), **where).sha256
    t = _table()
    t.loc[0, "age"] += 1
    t.to_csv(path, index=False)
    assert make_study(_resample_population(), **where).sha256 != before


def test_readme_resample_example_loads(tmp_path: Path, write_study: Callable[..., Path]) -> None:
    """The README's covariate table (a text block) and resample example validate."""
    text = (ROOT / "config" / "README.md").read_text()
    csv = next(b for b in re.findall(r"```text\n(.*?)```", text, re.S) if "# data/" in b)
    name, body = csv.split("\n", 1)
    (tmp_path / "data").mkdir()
    (tmp_path / name.removeprefix("# ")).write_text(body)
    block = next(
        yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "resample:" in b
    )
    d = small_study_data()
    d["population"] = block["population"]
    s = study_from_dict(d, source=str(write_study(d)), base_dir=tmp_path)
    pop = sample_population(s)
    assert len(pop) == 2 * 1000
    assert set(pop["resample_row"]) <= {1, 2, 3, 4}


# ---------------------------------------------------------------------------
# Population summary, footer metadata, log
# ---------------------------------------------------------------------------


def test_population_summary_and_stage_outputs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = copy.deepcopy(CRITERIA_POPULATION)
    spec["covariates"]["cyp2c9"] = {"categorical": {"EM": 0.6, "IM": 0.3, "PM": 0.1}}
    s = make_study(spec, replicates=2)
    caplog.set_level(logging.INFO, logger="vtrial")
    out = tmp_path / "population.parquet"
    summary_path = tmp_path / "summary" / "population.parquet"
    assert run_sample_population(s, out, summary=summary_path) == 600
    pop = pd.read_parquet(out)
    acc = read_provenance(out)["population"]
    assert acc["inclusion"] == spec["inclusion"]
    assert acc["exclusion"] == spec["exclusion"]
    assert len(acc["candidates"]) == 2
    assert all(c > 300 for c in acc["candidates"])
    assert acc["acceptance"] == [300 / c for c in acc["candidates"]]
    assert acc["acceptance_total"] == pytest.approx(600 / sum(acc["candidates"]))
    assert any(
        "acceptance" in r.getMessage() and "600 patients of" in r.getMessage()
        for r in caplog.records
    )
    table = pd.read_parquet(summary_path)
    csv = pd.read_csv(summary_path.with_suffix(".csv"))
    assert len(csv) == len(table)
    assert list(dict.fromkeys(table["arm"])) == [*s.arm_names, ALL_ARMS]
    assert set(table["covariate"]) == {
        "sex",
        "cyp2c9",
        "age",
        "weight",
        "height",
        "scr",
        "bmi",
        "bsa",
        "crcl",
    }
    assert (table["acceptance"] == acc["acceptance_total"]).all()
    assert (table["candidates"] == sum(acc["candidates"])).all()
    for arm, rows in pop.groupby("arm"):
        sub = table[(table["arm"] == arm) & (table["covariate"] == "crcl")].iloc[0]
        x = rows["crcl"].to_numpy()
        assert sub["n"] == len(rows)
        assert sub["unit"] == "mL/min"
        assert sub["mean"] == pytest.approx(x.mean(), rel=1e-12)
        assert sub["sd"] == pytest.approx(x.std(ddof=1), rel=1e-12)
        for p in (5, 25, 50, 75, 95):
            assert sub[f"p{p}"] == pytest.approx(np.percentile(x, p), rel=1e-12)
        cats = table[(table["arm"] == arm) & (table["covariate"] == "cyp2c9")]
        assert cats["category"].tolist() == ["EM", "IM", "PM"]
        assert cats["count"].sum() == len(rows)
        assert cats["frequency"].sum() == pytest.approx(1.0)
    everyone = table[(table["arm"] == ALL_ARMS) & (table["covariate"] == "age")].iloc[0]
    assert everyone["n"] == 600
    assert everyone["max"] < 61
    assert everyone["unit"] == "year"


def test_no_criteria_acceptance_is_one() -> None:
    s = make_study({**DEFAULT_POPULATION, "size": 60}, replicates=2)
    c: list[int] = []
    pop = sample_population(s, candidates=c)
    table = population_summary(s, pop, c)
    assert c == [60, 60]
    assert (table["acceptance"] == 1.0).all()
    assert (table["candidates"] == 120).all()
    sex = table[(table["arm"] == ALL_ARMS) & (table["covariate"] == "sex")]
    assert sex["kind"].tolist() == ["categorical", "categorical"]
    assert sex["p50"].isna().all()
