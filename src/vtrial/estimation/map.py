"""Individual estimation: each patient's random effects from their observations
(maximum a posteriori, NONMEM's POSTHOC / empirical Bayes estimates, mapbayr's and
posologyr's MAP), with a Laplace approximation of the posterior.

The inputs are a :class:`Prior` (which parameters carry random effects, OMEGA, the
distribution of each) and a :class:`CohortData`: the subjects' kernel events
(:func:`vtrial.data.records.record_events`), each kernel row's typical parameter
values (per occasion where covariates change over time; computed by the caller from
the study's covariate models), and the observations with their residual error
(:func:`cohort_data` builds it from a checked dataset). :func:`fit_subject` minimises
the objective of :mod:`vtrial.estimation.likelihood` for one subject; :func:`fit_cohort`
for every subject, with the cohort's shrinkage.

How the minimum is found
------------------------
- **Coordinates.** The search runs over ``z = L^-1 eta`` with ``OMEGA = L L'``
  (Cholesky), in which the prior term is ``z'z``: every coordinate has unit prior
  scale and the correlations of OMEGA are taken out, so one step size and one
  gradient tolerance fit every parameter.
- **Optimiser.** :func:`scipy.optimize.minimize` with BFGS, from ``z = 0`` (the
  typical patient) or a given start (a warm start from a previous estimate), to a
  gradient below :data:`GTOL`; where it stops because the line search finds no lower
  point (an objective flat to rounding, or to an ODE solver's error), at a minimum
  still when the Newton step from there is below :data:`FLAT_STEP` prior SDs.
- **Gradients.** Central finite differences in ``z`` with step ``eps^(1/3)``, ``eps``
  the relative accuracy of a prediction: 1e-15 for the PK macros (closed form), the
  solver's ``rtol`` for models with ODE states (which the estimator integrates at
  :data:`ESTIMATION_RTOL`). All ``2k + 1`` evaluations of one gradient are one batched
  kernel call (the patient's events repeated), so a gradient costs about one
  simulation's host overhead, and its error is ``O(h^2)``: about 1e-10 relative for
  closed-form models. Forward sensitivities would need a second, differentiated
  kernel for every model; with the batch, differences are accurate and cheap enough
  (``benchmarks/map_speed.py`` times them).
- **Local minima.** The objective of a nonlinear model can have several minima (a
  2-compartment model can leave its peripheral compartment out of the fit with a
  small ``Q2`` or with a small ``V2``), and the descent from ``z = 0`` can stop in the
  worse one. A second minimum needs a ``-2 log``-likelihood that is not convex, and
  the Hessian ``H_z`` at the first estimate, computed anyway for the standard errors,
  shows where it is not: the prior term contributes ``2 I``, so an eigenvalue below
  ``2 -`` :data:`NONCONVEX_TOL` is a direction ``v`` in which the likelihood curves
  downward: the data leave the estimate there to the prior, and may favour another
  region along it. For each such direction BFGS starts again from ``z = +-r v``
  (``r`` = :data:`START_RADIUS` prior SDs either side of the typical patient, the
  first run's own start, along the direction the data do not settle); the first run
  having not converged calls for the smallest eigenvalue's direction too. These few
  minimisations run together (:func:`_explore`: every step of all of them one batched
  kernel call; a start that reaches the first estimate's basin stops there), the
  lowest minimum found is polished by the BFGS above and replaces the first estimate
  when it is lower by more than :data:`IMPROVEMENT`. A converged estimate with a
  convex likelihood costs nothing more: 9 patients in 10 on the 2-compartment model
  of ``tests/estimation/test_map_agreement.py``, 6 in 10 on its Michaelis-Menten model
  (whose ``KM`` the data barely settle), 996 to 1,000 in 1,000 on its other models.
  The starts depend only on the subject's own objective, so the estimate stays
  deterministic. Restarting from the ``2k`` whitened axes ``+-r e_i`` instead found
  the same minima on the 2-compartment profiles where a second minimum exists, at
  1.5 (closed form) to 4 (ODE) times the exploration's cost; a screen of fixed points
  by their objective alone does not tell basins apart (an unfitted point's objective
  is hundreds of units above either minimum).
- **Standard errors.** The Hessian of the objective at the minimum, by central second
  differences in one batched call; the Laplace approximation of the posterior of
  ``eta`` is ``N(eta_hat, 2 L H_z^-1 L')`` (the objective is ``-2 log`` posterior),
  and the standard errors are the square roots of its diagonal.

A subject's estimate depends only on its own records: fitted alone or in any cohort,
chunk or worker, it is bit-identical (each kernel row is simulated independently and
the optimiser is deterministic).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import linalg, optimize

from vtrial.data.dataset import Dataset
from vtrial.data.records import RecordEvents
from vtrial.engine.codegen import layout
from vtrial.engine.host import Tolerances, run_kernel
from vtrial.estimation.likelihood import ErrorTerms, error_terms, minus2ll
from vtrial.model.residual import ErrorModel
from vtrial.model.spec import Model
from vtrial.population.sampling import apply_effect

__all__ = [
    "ESTIMATION_RTOL",
    "CohortData",
    "CohortFit",
    "Prior",
    "SubjectFit",
    "cohort_data",
    "fit_cohort",
    "fit_subject",
]

#: relative tolerance of the ODE solver while estimating (finite differences need
#: predictions far more accurate than a simulation's default 1e-6)
ESTIMATION_RTOL = 1e-10
#: relative accuracy of a closed-form (PK macro) prediction
CLOSED_FORM_EPS = 1e-15
#: gradient tolerance (infinity norm, objective units per prior SD)
GTOL = 1e-6
#: iterations of one minimisation
MAX_ITER = 500
#: a minimisation that stops on precision loss (the line search finds no lower point)
#: with a gradient above 100 GTOL still ends at a minimum when the Newton step from
#: there, H_z^-1 g, is shorter than this (prior SDs) in every coordinate
FLAT_STEP = 1e-4
#: the multi-start runs in each direction where the Hessian's eigenvalue (whitened
#: coordinates, the prior's part 2) is below 2 minus this: where the likelihood's
#: curvature is negative beyond the error of the second differences
NONCONVEX_TOL = 0.02
#: the multi-start's points lie this many prior SDs from z = 0 (either side)
START_RADIUS = 1.0
#: gradient tolerance of the multi-start's exploration (its best point is polished
#: to GTOL; at 1e-3 per prior SD its objective is within about 1e-6 of its minimum)
EXPLORE_GTOL = 1e-3
#: a minimum found by the multi-start replaces the first one when it is lower by more
#: than this (objective units); two minima closer than this are the same estimate
IMPROVEMENT = 1e-6
#: an exploring start stops in the first estimate's basin: where the first estimate's
#: quadratic model puts it less than this above the first objective (the squared
#: distance in posterior SDs of the Laplace approximation: within one SD) and its
#: objective is less than twice this above
JOIN = 1.0
#: the largest step of one exploration iteration (prior SDs)
MAX_STEP = 1.0


@dataclass(frozen=True)
class Prior:
    """The population distribution of the random effects: ``eta ~ N(0, omega)``.

    Attributes
    ----------
    names : tuple of str
        The parameters with a random effect, in the order of ``omega``.
    omega : ndarray, (k, k)
        OMEGA, symmetric positive definite.
    distributions : tuple of str
        How each random effect enters its parameter: ``lognormal`` (``P = TV exp(eta)``,
        NONMEM's usual), ``normal`` (``TV + eta``) or ``logit``.

    Raises
    ------
    ValueError
        OMEGA not square of the names' size, not symmetric, or not positive definite
        (singular), naming the rule and the value found.
    """

    names: tuple[str, ...]
    omega: np.ndarray
    distributions: tuple[str, ...]
    chol: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        om = np.asarray(self.omega, dtype=np.float64)
        k = len(self.names)
        if om.shape != (k, k):
            raise ValueError(f"omega: must be {k} x {k} (one row per name), got {om.shape}")
        if len(self.distributions) != k:
            raise ValueError(f"distributions: one per name ({k}), got {len(self.distributions)}")
        bad = [d for d in self.distributions if d not in ("lognormal", "normal", "logit")]
        if bad:
            raise ValueError(f"distributions: lognormal, normal or logit, got {bad}")
        if k == 0:
            raise ValueError("names: no parameter has a random effect: nothing to estimate")
        if not np.allclose(om, om.T, rtol=0, atol=1e-12 * float(np.abs(om).max() or 1)):
            raise ValueError("omega: must be symmetric")
        try:
            chol = np.linalg.cholesky(om)
        except np.linalg.LinAlgError:
            eig = np.linalg.eigvalsh(om)
            raise ValueError(
                "omega: must be positive definite (a singular or indefinite OMEGA gives "
                f"no prior density), smallest eigenvalue {eig.min():.3g}"
            ) from None
        object.__setattr__(self, "omega", om)
        object.__setattr__(self, "chol", chol)

    @property
    def k(self) -> int:
        """Number of random effects."""
        return len(self.names)


@dataclass(frozen=True)
class CohortData:
    """A cohort's data as the estimator uses it (:func:`cohort_data` builds it).

    Attributes
    ----------
    model : Model
    events : RecordEvents
        The subjects' kernel events; a subject with resets has several kernel rows.
    typical : mapping of str to ndarray
        Typical value of each model parameter given per kernel row: ``(n_rows,)``, or
        ``(n_rows, n_occ)`` when it changes between occasions (time-varying
        covariates); parameters not given take the model's value.
    obs_row, obs_k, obs_output : ndarray of int64, (m,)
        Each observation's kernel row, its row among that row's observation events,
        and the index of its output in the model's outputs; sorted by subject.
    y, lloq : ndarray, (m,)
        Observed value (DV) and the limit of a BLQ observation (NaN otherwise).
    blq : ndarray of bool, (m,)
    record : ndarray of int64, (m,)
        The observation's record in the dataset (0-based), for messages.
    err : ErrorTerms
        Residual error of each observation.
    tolerances : Tolerances
        Solver controls (ODE states only).
    """

    model: Model
    events: RecordEvents
    typical: Mapping[str, np.ndarray]
    obs_row: np.ndarray
    obs_k: np.ndarray
    obs_output: np.ndarray
    y: np.ndarray
    lloq: np.ndarray
    blq: np.ndarray
    record: np.ndarray
    err: ErrorTerms
    tolerances: Tolerances

    @property
    def n_subjects(self) -> int:
        return int(self.events.subjects.size)

    @property
    def eps(self) -> float:
        """Relative accuracy of a prediction (see the module docstring)."""
        return self.tolerances.rtol if self.model.states else CLOSED_FORM_EPS

    def rows_of(self, s: int) -> np.ndarray:
        """The kernel rows of subject ``s`` (index into ``events.subjects``)."""
        return np.flatnonzero(self.events.row_subject == s)

    def obs_of(self, s: int) -> np.ndarray:
        """The observations (index into the ``obs_*`` arrays) of subject ``s``."""
        subject = self.events.row_subject[self.obs_row]
        lo, hi = np.searchsorted(subject, [s, s + 1])
        return np.arange(lo, hi)


def cohort_data(
    model: Model,
    dataset: Dataset,
    events: RecordEvents,
    *,
    typical: Mapping[str, np.ndarray],
    outputs: Sequence[str],
    errors: Mapping[str, ErrorModel],
    tolerances: Tolerances | None = None,
) -> CohortData:
    """The :class:`CohortData` of a checked dataset's subjects.

    Observations are the ``EVID 0`` records with ``MDV 0`` or ``BLQ 1``; ``DVID`` ``n``
    is the ``n``-th of ``outputs`` (1 without a ``DVID`` column). A BLQ record's limit
    is its ``LLOQ`` column, else the output's ``lloq`` (``errors``), else its ``DV``
    (NONMEM datasets often carry the limit there). The caller has checked the records
    (:func:`observation_problems`).
    """
    r = dataset.records
    evid = r["EVID"].to_numpy()
    mdv = r["MDV"].to_numpy()
    blq_col = r["BLQ"].to_numpy() == 1 if "BLQ" in r else np.zeros(len(r), dtype=bool)
    rec = np.flatnonzero((evid == 0) & ((mdv == 0) | blq_col))
    dvid = r["DVID"].to_numpy()[rec] if "DVID" in r else np.ones(rec.size, dtype=np.int64)
    names = list(layout(model).output_names)
    observed = np.asarray([names.index(o) for o in outputs], dtype=np.int64)
    which = np.clip(dvid, 1, len(outputs)) - 1
    out_idx = observed[which]
    y = r["DV"].to_numpy(dtype=np.float64)[rec] if "DV" in r else np.full(rec.size, np.nan)
    blq = blq_col[rec]
    lloq = np.full(rec.size, np.nan)
    if "LLOQ" in r:
        lloq = r["LLOQ"].to_numpy(dtype=np.float64)[rec]
    out_lloq = np.array(
        [np.nan if errors[o].lloq is None else errors[o].lloq for o in outputs], dtype=np.float64
    )[which]
    lloq = np.where(np.isnan(lloq), out_lloq, lloq)
    lloq = np.where(np.isnan(lloq), y, lloq)
    lloq = np.where(blq, lloq, np.nan)
    full = {n: errors.get(n, ErrorModel()) for n in names}
    return CohortData(
        model=model,
        events=events,
        typical=dict(typical),
        obs_row=events.row[rec],
        obs_k=events.obs_row[rec],
        obs_output=out_idx,
        y=y,
        lloq=lloq,
        blq=blq,
        record=rec.astype(np.int64),
        err=error_terms(out_idx, names, full),
        tolerances=tolerances or Tolerances(rtol=ESTIMATION_RTOL, atol=1e-14),
    )


def predict(data: CohortData, prior: Prior, s: int, eta: np.ndarray) -> np.ndarray:
    """Predictions ``(E, m_s)`` of subject ``s``'s observations for each row of ``eta``
    ``(E, k)``, in one kernel call (NaN where the solve failed)."""
    eta = np.atleast_2d(np.asarray(eta, dtype=np.float64))
    n_eval = eta.shape[0]
    rows = data.rows_of(s)
    n_rows = rows.size
    n = n_eval * n_rows
    params: dict[str, Any] = {}
    for name, value in data.typical.items():
        params[name] = np.tile(np.asarray(value)[rows], (n_eval,) + (1,) * (np.ndim(value) - 1))
    for i, name in enumerate(prior.names):
        typ = params.get(name)
        if typ is None:
            typ = np.full(n, data.model.parameters[name].value)
        effect = np.repeat(eta[:, i], n_rows)
        if np.ndim(typ) == 2:
            effect = effect[:, None]
        params[name] = apply_effect(typ, effect, prior.distributions[i])
    ev = data.events
    res = run_kernel(
        data.model,
        params,
        n=n,
        events=ev.table,
        arm=np.tile(rows, n_eval),
        dose_scale=np.ones((n, 3)),
        grid=np.array([ev.start, ev.end]),
        tolerances=data.tolerances,
        threads=1,
        n_obs=ev.n_obs,
    )
    obs = data.obs_of(s)
    local = np.searchsorted(rows, data.obs_row[obs])  # the row's place among the subject's
    patient = np.arange(n_eval)[:, None] * n_rows + local[None, :]
    f = res.obs[patient, data.obs_k[obs][None, :], data.obs_output[obs][None, :]]
    f = np.where((res.status[patient] == 0), f, np.nan)
    return np.asarray(f, dtype=np.float64)


def objective(data: CohortData, prior: Prior, s: int, z: np.ndarray) -> np.ndarray:
    """The objective (:mod:`vtrial.estimation.likelihood`) of subject ``s`` at each row
    of ``z`` ``(E, k)`` (coordinates ``eta = L z``; the prior term is ``z'z``)."""
    z = np.atleast_2d(np.asarray(z, dtype=np.float64))
    eta = z @ prior.chol.T
    f = predict(data, prior, s, eta)
    obs = data.obs_of(s)
    err = ErrorTerms(data.err.additive[obs], data.err.proportional[obs], data.err.exponential[obs])
    m2ll = minus2ll(f, data.y[obs], data.blq[obs], data.lloq[obs], err)
    out: np.ndarray = m2ll + np.einsum("ei,ei->e", z, z)
    return out


@dataclass(frozen=True)
class SubjectFit:
    """One subject's MAP estimate.

    Attributes
    ----------
    eta : ndarray, (k,)
        The estimate (EBE).
    ofv : float
        The objective at ``eta`` (``-2 log`` posterior density, see
        :mod:`vtrial.estimation.likelihood`).
    covariance : ndarray, (k, k)
        Laplace approximation of the posterior covariance of ``eta``; NaN when the
        Hessian is not positive definite.
    se : ndarray, (k,)
        Standard errors (square roots of the covariance's diagonal).
    status : str
        ``ok``, or what went wrong (the optimiser's message, a Hessian that is not
        positive definite, an infinite objective at the start).
    n_iter, n_eval : int
        Optimiser iterations and objective evaluations (each a batched kernel call),
        over every start, the Hessians included.
    n_starts : int
        Points the minimisation started from: 1, or 3 and more when the first
        estimate's Hessian called for the multi-start (see the module docstring).
    """

    eta: np.ndarray
    ofv: float
    covariance: np.ndarray
    se: np.ndarray
    status: str
    n_iter: int
    n_eval: int
    n_starts: int = 1

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _steps(k: int) -> np.ndarray:
    """The ``2k`` central-difference displacements ``+e_i, -e_i`` (rows)."""
    eye = np.eye(k)
    return np.concatenate([eye, -eye])


def _hessian(data: CohortData, prior: Prior, s: int, z: np.ndarray) -> np.ndarray:
    """Central second differences of the objective at ``z``, one batched call."""
    k = z.size
    h = data.eps**0.25
    pts = [np.zeros(k)]
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    for i in range(k):
        for sign in (1.0, -1.0):
            d = np.zeros(k)
            d[i] = sign
            pts.append(d)
    for i, j in pairs:
        for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            d = np.zeros(k)
            d[i], d[j] = si, sj
            pts.append(d)
    f = objective(data, prior, s, z[None, :] + h * np.asarray(pts))
    f0 = f[0]
    hess = np.empty((k, k))
    for i in range(k):
        hess[i, i] = (f[1 + 2 * i] - 2 * f0 + f[2 + 2 * i]) / h**2
    base = 1 + 2 * k
    for n, (i, j) in enumerate(pairs):
        pp, pm, mp, mm = f[base + 4 * n : base + 4 * n + 4]
        hess[i, j] = hess[j, i] = (pp - pm - mp + mm) / (4 * h * h)
    return hess


def _value_grad(
    data: CohortData, prior: Prior, s: int, z: np.ndarray, h: float
) -> tuple[np.ndarray, np.ndarray]:
    """Objective ``(p,)`` and central-difference gradient ``(p, k)`` at each row of
    ``z`` ``(p, k)``, in one batched call."""
    p, k = z.shape
    disp = np.concatenate([np.zeros((1, k)), h * _steps(k)])
    f = objective(data, prior, s, (z[:, None, :] + disp[None, :, :]).reshape(-1, k))
    f = f.reshape(p, 2 * k + 1)
    # an infinite objective (a line search far out, where a solve fails) has no
    # gradient: 0 there, and the line search steps back
    with np.errstate(invalid="ignore"):
        grad = (f[:, 1 : k + 1] - f[:, k + 1 :]) / (2.0 * h)
    return f[:, 0], np.where(np.isfinite(grad), grad, 0.0)


def _explore(
    fg: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    z0: np.ndarray,
    gtol: float,
    maxiter: int,
    joins: Callable[[np.ndarray, float], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """BFGS from each row of ``z0`` ``(p, k)``, all together: each iteration evaluates
    every unfinished minimisation's trial point in one call of ``fg`` (rows of ``z`` to
    objectives and gradients). Steps are at most :data:`MAX_STEP` long, backtracked by
    4 until the Armijo condition holds; the inverse Hessian starts scaled by the first
    step's curvature (Nocedal & Wright, eq. 6.20). A minimisation stops at a gradient
    below ``gtol``, at a step below 1e-10 (a minimum flat to rounding), at a non-finite
    objective at its start, or where ``joins(z, f)`` says it has reached a known
    basin. Returns the final points, their objectives, iterations and calls."""
    p, k = z0.shape
    z = z0.copy()
    f, g = fg(z)
    calls = 1
    inv = np.tile(np.eye(k), (p, 1, 1))
    scaled = np.zeros(p, dtype=bool)
    d = np.zeros((p, k))
    alpha = np.zeros(p)

    def direction(i: int) -> None:
        d[i] = -inv[i] @ g[i]
        if d[i] @ g[i] >= 0:  # not a descent direction: restart from steepest descent
            inv[i] = np.eye(k)
            d[i] = -g[i]
        alpha[i] = min(1.0, MAX_STEP / float(np.linalg.norm(d[i])))

    active = np.isfinite(f) & (np.max(np.abs(g), axis=1) >= gtol)
    for i in np.flatnonzero(active).tolist():
        direction(i)
    it = 0
    while active.any() and it < maxiter:
        it += 1
        idx = np.flatnonzero(active)
        trial = z[idx] + alpha[idx, None] * d[idx]
        ft, gt = fg(trial)
        calls += 1
        for j, i in enumerate(idx.tolist()):
            if np.isfinite(ft[j]) and ft[j] <= f[i] + 1e-4 * alpha[i] * (g[i] @ d[i]):
                step, dg = trial[j] - z[i], gt[j] - g[i]
                sy = float(step @ dg)
                if sy > 1e-12 * float(np.linalg.norm(step) * np.linalg.norm(dg)):
                    if not scaled[i]:
                        inv[i] = np.eye(k) * sy / float(dg @ dg)
                        scaled[i] = True
                    v = np.eye(k) - np.outer(step, dg) / sy
                    inv[i] = v @ inv[i] @ v.T + np.outer(step, step) / sy
                z[i], f[i], g[i] = trial[j], ft[j], gt[j]
                if np.max(np.abs(g[i])) < gtol or (joins is not None and joins(z[i], f[i])):
                    active[i] = False
                else:
                    direction(i)
            else:
                alpha[i] *= 0.25
                if alpha[i] * np.linalg.norm(d[i]) < 1e-10:
                    active[i] = False
    return z, f, it, calls


def _restarts(hz: np.ndarray, converged: bool) -> np.ndarray:
    """The multi-start's points (rows, whitened coordinates) given the Hessian ``hz`` at
    the first estimate: ``+-START_RADIUS v`` for each eigenvector ``v`` of ``hz`` whose
    eigenvalue is below ``2 - NONCONVEX_TOL`` (where the likelihood curves downward);
    when the first run did not converge, at least the eigenvector of the smallest
    eigenvalue, and the ``2k`` whitened axes when ``hz`` is not finite. None (0 rows)
    for a converged estimate with a convex likelihood."""
    k = hz.shape[0]
    if not np.all(np.isfinite(hz)):
        return START_RADIUS * _steps(k)
    lam, vec = np.linalg.eigh(hz)
    n = int(np.sum(lam < 2.0 - NONCONVEX_TOL))
    if not converged:
        n = max(n, 1)
    v = vec[:, :n].T
    return START_RADIUS * np.concatenate([v, -v])


def fit_subject(
    data: CohortData,
    prior: Prior,
    s: int,
    *,
    start: np.ndarray | None = None,
    gtol: float = GTOL,
    multistart: bool = True,
) -> SubjectFit:
    """The MAP estimate of subject ``s`` (index into ``data.events.subjects``).

    Parameters
    ----------
    start : ndarray, (k,), optional
        Starting ``eta`` (a previous estimate: a warm start); 0 by default.
    gtol : float
        Stop when the gradient's largest component (objective units per prior SD) is
        below this.
    multistart : bool
        Look for a lower minimum from more starts when the first estimate's Hessian
        shows a non-convex likelihood or the first run did not converge (see the
        module docstring); ``False`` keeps the first local minimum.
    """
    k = prior.k
    z0 = np.zeros(k) if start is None else linalg.solve_triangular(prior.chol, start, lower=True)
    h = data.eps ** (1.0 / 3.0)
    count = [0]

    def fg(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        count[0] += 1
        return _value_grad(data, prior, s, z, h)

    last: list[Any] = [None, 0.0, None]  # the latest point, its objective and gradient

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        # BFGS evaluates its start again, which the check below has just evaluated
        if last[0] is not None and np.array_equal(z, last[0]):
            return last[1], last[2].copy()
        f, grad = fg(z[None, :])
        last[:] = [z.copy(), float(f[0]), grad[0]]
        return float(f[0]), grad[0].copy()

    def descend(z: np.ndarray) -> tuple[np.ndarray, float, Any, int]:
        res = optimize.minimize(
            fun, z, jac=True, method="BFGS", options={"gtol": gtol, "maxiter": MAX_ITER}
        )
        return np.asarray(res.x, dtype=np.float64), float(res.fun), res, int(res.nit)

    def verdict(res: Any, hz: np.ndarray) -> str:
        if res.success:
            return "ok"
        # BFGS stops with "precision loss" when the line search cannot improve further
        # on an objective that is flat to rounding: a minimum if the gradient is small,
        # or if the Newton step to the minimum is (an ODE model's differences carry
        # the solver's error: a gradient of 1e-4 can be noise there)
        if res.status == 2:
            jac = np.asarray(res.jac, dtype=np.float64)
            if np.max(np.abs(jac)) < 100 * gtol:
                return "ok"
            convex = np.all(np.isfinite(hz)) and np.linalg.eigvalsh(hz)[0] > 0
            if convex and np.max(np.abs(np.linalg.solve(hz, jac))) < FLAT_STEP:
                return "ok"
        return f"not converged: {res.message}"

    f_start, _ = fun(z0)
    if not math.isfinite(f_start):
        nan = np.full(k, np.nan)
        return SubjectFit(
            eta=nan,
            ofv=math.inf,
            covariance=np.full((k, k), np.nan),
            se=nan,
            status="the objective is not finite at the start (a failed solve, or a "
            "prediction <= 0 under exponential error)",
            n_iter=0,
            n_eval=count[0],
        )
    z, ofv, res, n_iter = descend(z0)
    hz = _hessian(data, prior, s, z)
    count[0] += 1
    status = verdict(res, hz)
    n_starts = 1
    starts = _restarts(hz, status == "ok") if multistart else np.zeros((0, k))
    if starts.shape[0]:
        n_starts += starts.shape[0]
        z1, f1 = z, ofv

        def joins(zi: np.ndarray, fi: float) -> bool:
            dz = zi - z1
            q = 0.5 * float(dz @ hz @ dz)
            return q < JOIN and fi - f1 < 2.0 * JOIN

        zs, fs, it, _ = _explore(fg, starts, EXPLORE_GTOL, MAX_ITER, joins)
        n_iter += it
        fs = np.where(np.isfinite(fs), fs, np.inf)
        best = int(np.argmin(fs))
        if fs[best] < ofv - IMPROVEMENT:
            z2, ofv2, res, it = descend(zs[best])
            n_iter += it
            if ofv2 < ofv - IMPROVEMENT:
                z, ofv = z2, ofv2
                hz = _hessian(data, prior, s, z)
                count[0] += 1
                status = verdict(res, hz)
    eta = prior.chol @ z
    try:
        cz = 2.0 * np.linalg.inv(hz)
        np.linalg.cholesky(cz)
        cov = prior.chol @ cz @ prior.chol.T
    except np.linalg.LinAlgError:
        cov = np.full((k, k), np.nan)
        if status == "ok":
            status = "hessian not positive definite at the estimate"
    return SubjectFit(
        eta=eta,
        ofv=ofv,
        covariance=cov,
        se=np.sqrt(np.diag(cov)),
        status=status,
        n_iter=n_iter,
        n_eval=count[0],
        n_starts=n_starts,
    )


@dataclass(frozen=True)
class CohortFit:
    """Every subject's MAP estimate (:func:`fit_cohort`).

    Attributes
    ----------
    table : DataFrame
        One row per subject in file order: ``ID``, ``ofv``, ``status``, ``n_iter``,
        ``n_eval``, ``n_starts``, ``n_obs``, then ``eta_<P>`` and ``se_<P>`` for each parameter with
        a random effect.
    shrinkage : dict of str to float
        NONMEM's eta-shrinkage of each random effect, ``1 - SD(eta_hat) / sqrt(OMEGA_ii)``
        over the subjects whose fit is ``ok`` (NaN with fewer than 2).
    fits : list of SubjectFit
    """

    table: pd.DataFrame
    shrinkage: dict[str, float]
    fits: list[SubjectFit]


def shrinkage(eta: np.ndarray, prior: Prior) -> dict[str, float]:
    """Eta-shrinkage ``1 - SD(eta_hat_i) / omega_i`` of estimates ``eta`` ``(n, k)``
    (SD with ``n - 1``; NaN with fewer than 2 rows)."""
    eta = np.atleast_2d(eta)
    if eta.shape[0] < 2:
        return dict.fromkeys(prior.names, math.nan)
    sd = eta.std(axis=0, ddof=1)
    return {
        name: float(1.0 - sd[i] / math.sqrt(prior.omega[i, i]))
        for i, name in enumerate(prior.names)
    }


def fit_cohort(
    data: CohortData,
    prior: Prior,
    *,
    subjects: Sequence[int] | None = None,
    starts: Mapping[int, np.ndarray] | None = None,
) -> CohortFit:
    """MAP estimates of ``subjects`` (indices; every subject by default), each fitted
    alone (:func:`fit_subject`), and the cohort's shrinkage."""
    idx = list(range(data.n_subjects)) if subjects is None else list(subjects)
    starts = starts or {}
    fits = [fit_subject(data, prior, s, start=starts.get(s)) for s in idx]
    subject = data.events.row_subject[data.obs_row]
    n_obs = np.bincount(subject, minlength=data.n_subjects)[idx]
    table: dict[str, Any] = {
        "ID": data.events.subjects[idx],
        "ofv": np.array([f.ofv for f in fits]),
        "status": np.array([f.status for f in fits], dtype=object),
        "n_iter": np.array([f.n_iter for f in fits], dtype=np.int64),
        "n_eval": np.array([f.n_eval for f in fits], dtype=np.int64),
        "n_starts": np.array([f.n_starts for f in fits], dtype=np.int64),
        "n_obs": n_obs.astype(np.int64),
    }
    eta = np.array([f.eta for f in fits]).reshape(len(fits), prior.k)
    se = np.array([f.se for f in fits]).reshape(len(fits), prior.k)
    for i, name in enumerate(prior.names):
        table[f"eta_{name}"] = eta[:, i]
    for i, name in enumerate(prior.names):
        table[f"se_{name}"] = se[:, i]
    ok = np.array([f.ok for f in fits], dtype=bool)
    return CohortFit(table=pd.DataFrame(table), shrinkage=shrinkage(eta[ok], prior), fits=fits)
