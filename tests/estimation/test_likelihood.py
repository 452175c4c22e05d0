"""The MAP objective's terms against scipy.stats densities (the closed forms): normal
observations under every error model, exponential error on the log scale, BLQ by M3
(``P(Y < LLOQ)``), failed solves, and the prior term."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from vtrial.estimation.likelihood import ErrorTerms, minus2ll, prior_term

TOL = 1e-12  # relative, double precision of the same formula written apart


def _ref(f: np.ndarray, y, blq, lloq, a, b, s) -> np.ndarray:
    """-2 log p(y | f) from scipy.stats, observation by observation."""
    out = np.zeros(f.shape[0])
    for e in range(f.shape[0]):
        total = 0.0
        for j in range(f.shape[1]):
            fj = f[e, j]
            if s[j] > 0:
                dist = stats.norm(np.log(fj), s[j])
                total += -2 * (
                    dist.logcdf(np.log(lloq[j])) if blq[j] else dist.logpdf(np.log(y[j]))
                )
            else:
                dist = stats.norm(fj, np.hypot(a[j], b[j] * fj))
                total += -2 * (dist.logcdf(lloq[j]) if blq[j] else dist.logpdf(y[j]))
        out[e] = total
    return out


@pytest.mark.parametrize(
    ("a", "b", "s"),
    [(0.5, 0.0, 0.0), (0.0, 0.2, 0.0), (0.3, 0.15, 0.0), (0.0, 0.0, 0.25)],
    ids=["additive", "proportional", "combined", "exponential"],
)
def test_quantified_and_blq_terms_match_scipy_stats(a: float, b: float, s: float) -> None:
    rng = np.random.default_rng(7)
    m = 9
    f = rng.uniform(0.5, 20.0, size=(4, m))
    y = rng.uniform(0.5, 20.0, size=m)
    blq = np.zeros(m, dtype=bool)
    blq[[2, 5]] = True
    lloq = np.where(blq, 1.0, np.nan)
    lloq[5] = 30.0  # far above the prediction: P(Y < LLOQ) near 1
    err = ErrorTerms(np.full(m, a), np.full(m, b), np.full(m, s))
    got = minus2ll(f, y, blq, lloq, err)
    want = _ref(f, y, blq, lloq, np.full(m, a), np.full(m, b), np.full(m, s))
    np.testing.assert_allclose(got, want, rtol=TOL)


def test_m3_far_in_the_tail_stays_finite_and_exact() -> None:
    """A BLQ observation whose prediction is 40 SDs above the limit: log Phi(-40),
    not log(0)."""
    err = ErrorTerms(np.array([1.0]), np.array([0.0]), np.array([0.0]))
    got = minus2ll(np.array([[41.0]]), np.array([np.nan]), np.array([True]), np.array([1.0]), err)
    want = -2 * stats.norm.logcdf(-40.0)
    assert np.isfinite(got[0])
    assert got[0] == pytest.approx(want, rel=1e-12)


def test_failed_solve_and_non_positive_prediction_give_infinity() -> None:
    err = ErrorTerms(np.zeros(2), np.zeros(2), np.full(2, 0.2))
    f = np.array([[1.0, np.nan], [1.0, -1.0], [1.0, 2.0]])
    got = minus2ll(f, np.array([1.0, 2.0]), np.zeros(2, dtype=bool), np.full(2, np.nan), err)
    assert got[0] == np.inf
    assert got[1] == np.inf
    assert np.isfinite(got[2])


def test_prior_term_is_the_quadratic_form() -> None:
    omega = np.array([[0.09, 0.03], [0.03, 0.25]])
    eta = np.array([[0.1, -0.4], [0.0, 0.0], [-0.3, 0.2]])
    want = [float(e @ np.linalg.inv(omega) @ e) for e in eta]
    np.testing.assert_allclose(prior_term(eta, np.linalg.inv(omega)), want, rtol=1e-13)
