"""Dropout times (vtrial.trial.dropout): inversion of the cumulative hazard at keyed uniforms.

* distribution against the declared hazard: Kolmogorov-Smirnov tests of N = 20000
  keyed draws (constant, Weibull, exposure multiplier, hazard ratio after an onset);
* hand-checkable inversions of the piecewise cumulative hazard;
* the keyed uniforms: rows of the ``dropout`` stream, the same whatever the chunk.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from scipy import stats as sps

from vtrial.infra.rng import keyed_uniforms, patient_uniforms
from vtrial.trial import dropout, endpoints
from vtrial.trial.dropout import HOURS_PER_YEAR, Hazard, cumulative_hazard, dropout_times

N = 20_000
SEED = 11


def draws(purpose: str = "dropout", n: int = N) -> np.ndarray:
    return patient_uniforms(SEED, purpose, np.zeros(n, dtype=np.int64), np.arange(1, n + 1))


def test_docstring_examples() -> None:
    for module, examples in ((dropout, 3), (endpoints, 4)):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
        assert result.attempted >= examples, module.__name__


def test_hazard_from_spec_units() -> None:
    h = Hazard.from_spec({"hazard": "constant", "rate_per_year": 0.5})
    assert h.rate == pytest.approx(0.5 / (365.25 * 24), rel=1e-15)
    # one year of follow-up at 0.5/year: H = 0.5, so P(no dropout) = exp(-0.5)
    assert h.cumulative(HOURS_PER_YEAR).item() == pytest.approx(0.5, rel=1e-15)
    w = Hazard.from_spec({"hazard": "weibull", "scale_days": 30, "shape": 2.0})
    assert (w.scale, w.shape) == (720.0, 2.0)
    np.testing.assert_allclose(w.inverse(w.cumulative([1.0, 100.0, 5000.0])), [1.0, 100.0, 5000.0])
    with pytest.raises(ValueError, match="finite and > 0"):
        Hazard("weibull", scale=-1.0, shape=1.0)
    with pytest.raises(ValueError, match="'constant' or 'weibull'"):
        Hazard("gompertz")


@pytest.mark.parametrize(
    ("hazard", "cdf"),
    [
        pytest.param(
            Hazard("constant", rate=1.0 / 500.0), sps.expon(scale=500.0).cdf, id="constant"
        ),
        pytest.param(
            Hazard("weibull", scale=800.0, shape=1.7),
            sps.weibull_min(1.7, scale=800.0).cdf,
            id="weibull",
        ),
        pytest.param(
            Hazard("weibull", scale=300.0, shape=0.6),
            sps.weibull_min(0.6, scale=300.0).cdf,
            id="weibull-decreasing",
        ),
    ],
)
def test_dropout_times_follow_the_declared_hazard(hazard: Hazard, cdf: object) -> None:
    """KS test of N = 20000 keyed draws against 1 - exp(-H0(t)) (scipy's exponential and
    Weibull CDFs). Measured: D = 0.0061, p = 0.45 for all three (the same keyed
    uniforms through an exact inversion give the same statistic)."""
    t = dropout_times(hazard, draws())
    assert np.all(np.isfinite(t))
    assert np.all(t > 0)
    res = sps.kstest(t, cdf)
    assert res.pvalue > 0.01, res


def test_exposure_multiplier_scales_the_hazard() -> None:
    """Hazard x c: T has CDF 1 - exp(-c H0(t)); per patient c = exp(beta * metric)."""
    h = Hazard("weibull", scale=800.0, shape=1.3)
    metric = np.linspace(0.0, 40.0, N)
    beta = 0.05
    c = np.exp(beta * metric)
    t = dropout_times(h, draws(), multiplier=c)
    # c * H0(T) is exactly the exponential draw -log u
    np.testing.assert_allclose(c * h.cumulative(t), -np.log(draws()), rtol=1e-10)
    # and its distribution is Exp(1) (KS, N = 20000; measured D = 0.0061, p = 0.45)
    assert sps.kstest(cumulative_hazard(h, t, multiplier=c), "expon").pvalue > 0.01
    # a larger exposure drops out earlier on average
    assert t[metric > 30].mean() < 0.5 * t[metric < 10].mean()


def test_hazard_ratio_after_an_onset() -> None:
    """Piecewise hazard: rate 0.01/h, x 4 from tau = 20 h.

    Hand cases: H(20) = 0.2; a target of 0.5 is reached at 20 + 0.3 / 0.04 = 27.5 h;
    a target of 0.1 before the onset at 10 h. Distribution: KS against the piecewise
    CDF, N = 20000 (measured D = 0.0061, p = 0.45).
    """
    h = Hazard("constant", rate=0.01)
    u = np.exp(-np.array([0.5, 0.1, 0.2]))
    t = dropout_times(h, u, onset=[20.0, 20.0, 20.0], ratio=4.0)
    np.testing.assert_allclose(t, [27.5, 10.0, 20.0], rtol=1e-12)
    # no onset (NaN or inf): the baseline hazard
    np.testing.assert_allclose(dropout_times(h, u[:1], onset=[np.nan], ratio=4.0), [50.0])

    def cdf(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        cum = np.where(x <= 20.0, 0.01 * x, 0.2 + 0.04 * (x - 20.0))
        return 1.0 - np.exp(-cum)

    t = dropout_times(h, draws(), onset=np.full(N, 20.0), ratio=4.0)
    assert sps.kstest(t, cdf).pvalue > 0.01
    np.testing.assert_allclose(
        cumulative_hazard(h, t, onset=np.full(N, 20.0), ratio=4.0), -np.log(draws()), rtol=1e-10
    )


def test_times_after_the_end_are_infinite() -> None:
    h = Hazard("constant", rate=1.0 / 500.0)
    t = dropout_times(h, draws(), end=300.0)
    censored = np.isinf(t)
    # P(T > 300) = exp(-0.6) = 0.5488; within 4 binomial SE (measured 0.5441, 1.3 SE)
    p = np.exp(-0.6)
    assert abs(censored.mean() - p) < 4 * np.sqrt(p * (1 - p) / N)
    assert np.all(t[~censored] <= 300.0)


def test_uniforms_are_keyed_rows_whatever_the_chunk() -> None:
    rep = np.array([0, 0, 1, 1, 0], dtype=np.int64)
    pid = np.array([5, 2, 7, 1, 9], dtype=np.int64)
    u = patient_uniforms(SEED, "dropout", rep, pid)
    want = np.array(
        [
            keyed_uniforms(SEED, "dropout", int(r), 10, 1)[i - 1, 0]
            for r, i in zip(rep, pid, strict=True)
        ]
    )
    np.testing.assert_array_equal(u, want)
    # any split of the patients gives the same draws
    parts = [
        patient_uniforms(SEED, "dropout", rep[:2], pid[:2]),
        patient_uniforms(SEED, "dropout", rep[2:], pid[2:]),
    ]
    np.testing.assert_array_equal(np.concatenate(parts), u)
    # another purpose is another stream
    assert not np.array_equal(patient_uniforms(SEED, "tte:x", rep, pid), u)
    with pytest.raises(ValueError, match=">= 1"):
        patient_uniforms(SEED, "dropout", np.zeros(1, dtype=np.int64), np.zeros(1))
