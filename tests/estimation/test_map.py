"""MAP estimation on a linear-Gaussian model, whose posterior has a closed form: the
estimate is the posterior mean, the Laplace covariance is the posterior covariance,
and the cohort's shrinkage is the theoretical one; estimates do not depend on the
cohort a subject is fitted in; a singular OMEGA is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vtrial import build_model
from vtrial.data.dataset import dataset_from_frame
from vtrial.data.records import dose_routes, record_events
from vtrial.estimation.map import CohortData, Prior, cohort_data, fit_cohort, fit_subject
from vtrial.model.residual import ErrorModel
from vtrial.model.spec import Model

MODELS = Path(__file__).parent / "models"
TIMES = np.array([0.5, 1.0, 2.0, 4.0, 6.0, 8.0])
SIGMA = 0.8
OMEGA = np.array([[1.0, 0.12], [0.12, 0.04]])
BETA = np.array([10.0, -0.5])


@pytest.fixture(scope="module")
def linear() -> Model:
    return build_model({"components": {"lin": {"model": str(MODELS / "linear.yaml")}}})


def _linear_data(model: Model, n: int, seed: int) -> tuple[CohortData, np.ndarray]:
    """``n`` subjects observed at TIMES, true random effects drawn from OMEGA."""
    rng = np.random.default_rng(seed)
    eta = rng.multivariate_normal(np.zeros(2), OMEGA, size=n)
    rows = []
    for i in range(n):
        b0, b1 = BETA + eta[i]
        y = b0 + b1 * TIMES + SIGMA * rng.standard_normal(TIMES.size)
        rows += [{"ID": i + 1, "TIME": t, "DV": v} for t, v in zip(TIMES, y, strict=True)]
    ds = dataset_from_frame(pd.DataFrame(rows))
    ev = record_events(ds, dose_routes(model))
    data = cohort_data(
        model, ds, ev, typical={}, outputs=["Y"], errors={"Y": ErrorModel(additive=SIGMA)}
    )
    return data, eta


def _posterior(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form posterior mean and covariance of eta (conjugate linear regression)."""
    x = np.column_stack([np.ones(TIMES.size), TIMES])
    precision = x.T @ x / SIGMA**2 + np.linalg.inv(OMEGA)
    cov = np.linalg.inv(precision)
    mean = cov @ x.T @ (y - x @ BETA) / SIGMA**2
    return mean, cov


PRIOR = Prior(("B0", "B1"), OMEGA, ("normal", "normal"))


def test_map_is_the_posterior_mean_and_laplace_is_exact(linear: Model) -> None:
    data, _ = _linear_data(linear, 12, seed=3)
    for s in range(12):
        fit = fit_subject(data, PRIOR, s)
        assert fit.ok, fit.status
        mean, cov = _posterior(data.y[data.obs_of(s)])
        # the gradient tolerance (1e-6 per prior SD) bounds the error of the minimiser
        np.testing.assert_allclose(fit.eta, mean, rtol=0, atol=1e-6)
        # second differences of a quadratic: exact but for rounding
        np.testing.assert_allclose(fit.covariance, cov, rtol=1e-5)


def test_shrinkage_matches_theory(linear: Model) -> None:
    """With one design for everyone, Var(eta_hat) = OMEGA - posterior covariance, so
    shrinkage_i = 1 - sqrt((OMEGA - C)_ii / OMEGA_ii); 400 subjects estimate the SD of
    the estimates to about 3.5 % (1/sqrt(2 n)), so 4 such errors are allowed."""
    n = 400
    data, _ = _linear_data(linear, n, seed=11)
    fit = fit_cohort(data, PRIOR)
    assert (fit.table["status"] == "ok").all()
    _, cov = _posterior(np.zeros(TIMES.size))
    theory = 1 - np.sqrt(np.diag(OMEGA - cov) / np.diag(OMEGA))
    sd_err = 4 / np.sqrt(2 * n)
    for i, name in enumerate(PRIOR.names):
        # shrinkage = 1 - r with r = sd ratio; its error is r * relative SD error
        assert abs(fit.shrinkage[name] - theory[i]) < (1 - theory[i]) * sd_err, name
    assert fit.table.columns.tolist() == [
        "ID", "ofv", "status", "n_iter", "n_eval", "n_starts", "n_obs",
        "eta_B0", "eta_B1", "se_B0", "se_B1",
    ]  # fmt: skip


def test_a_subject_estimate_does_not_depend_on_its_cohort(linear: Model) -> None:
    data, _ = _linear_data(linear, 6, seed=5)
    whole = fit_cohort(data, PRIOR)
    alone = fit_cohort(data, PRIOR, subjects=[4])
    pd.testing.assert_frame_equal(
        whole.table.iloc[[4]].reset_index(drop=True), alone.table, check_exact=True
    )


def test_warm_start_reaches_the_same_estimate(linear: Model) -> None:
    data, _ = _linear_data(linear, 2, seed=8)
    cold = fit_subject(data, PRIOR, 1)
    warm = fit_subject(data, PRIOR, 1, start=cold.eta + 0.05)
    np.testing.assert_allclose(warm.eta, cold.eta, atol=1e-6)
    assert warm.n_iter <= cold.n_iter + 2


@pytest.mark.parametrize(
    ("omega", "rule"),
    [
        (np.array([[1.0, 1.0], [1.0, 1.0]]), "positive definite"),
        (np.array([[1.0, 0.1], [0.2, 1.0]]), "symmetric"),
        (np.eye(3), "2 x 2"),
    ],
)
def test_a_bad_omega_is_refused(omega: np.ndarray, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        Prior(("B0", "B1"), omega, ("normal", "normal"))
