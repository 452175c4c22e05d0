"""Random effects of real patients' twins in a study (``population.dataset.parameters:
twins``).

The twins stage (``outputs.twins``, :mod:`vtrial.run.twin_stage`) estimates each
dataset subject's random effects from its own recorded doses and observations: the
MAP estimate ``eta_hat`` and the Laplace approximation of its posterior,
``N(eta_hat, C)``, whose covariance the twins table holds as its lower triangle
(:func:`covariance_columns`). A study with ``parameters: twins`` then simulates every
subject with:

- **replicate 0**: the estimate itself, ``eta = eta_hat`` (the twin as the twins stage
  reports it, no draw);
- **replicate r >= 1**: one draw from the subject's Laplace posterior,
  ``eta = eta_hat + L z`` with ``L`` the Cholesky factor of ``C`` (its eigen square
  root if singular) and ``z`` standard normals from keyed uniforms: purpose
  :data:`PURPOSE`, replicate ``r``, the subject's row (its position in file order,
  ``patient_id - 1``), ``k`` uniforms per subject in the order of ``model.iiv.omega``.

So replicate 0 gives each patient's point estimate of its individual treatment
effect, and the spread of replicates 1, 2, ... is its posterior uncertainty. A draw
depends only on the seed, the replicate and the subject: never on shards, workers,
chunks or the arms.

A subject whose fit is not ``ok`` (a status other than ``ok``: no finite objective at
the start, no convergence, a Hessian that is not positive definite) is not simulated
as if it had a twin: its random effects are NaN in every replicate, so its individual
parameters are NaN, the engine flags it (``solver_status`` ``invalid_initial``) and
every summary excludes it as a failed solve; ``twin_status`` carries the fit's status
in the population and patients tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from vtrial.errors import DataError
from vtrial.infra.rng import keyed_uniforms
from vtrial.population.uncertainty import covariance_root

__all__ = [
    "OK",
    "PURPOSE",
    "TwinEstimates",
    "covariance_columns",
    "subject_estimates",
    "twin_draws",
]

#: purpose of the keyed uniforms of the posterior draws
PURPOSE = "twin:eta"
#: status of a usable fit
OK = "ok"


def covariance_columns(names: Sequence[str]) -> list[str]:
    """Columns of the lower triangle (diagonal included) of a twin's Laplace covariance,
    row by row: ``cov_<P>_<Q>`` for ``P`` the i-th and ``Q`` the j-th name, j <= i.

    Examples
    --------
    >>> covariance_columns(["CL", "V1"])
    ['cov_CL_CL', 'cov_V1_CL', 'cov_V1_V1']
    """
    return [f"cov_{names[i]}_{names[j]}" for i in range(len(names)) for j in range(i + 1)]


def covariance_matrices(table: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """The covariances ``(n, k, k)`` of the rows of a twins table (symmetric, from the
    lower triangle of :func:`covariance_columns`)."""
    k = len(names)
    out = np.empty((len(table), k, k))
    cols = iter(covariance_columns(names))
    for i in range(k):
        for j in range(i + 1):
            v = table[next(cols)].to_numpy(dtype=np.float64)
            out[:, i, j] = v
            out[:, j, i] = v
    return out


@dataclass(frozen=True)
class TwinEstimates:
    """Every dataset subject's twin (its MAP estimate and Laplace covariance), in file
    order.

    Attributes
    ----------
    names : tuple of str
        The random effects (``model.iiv.omega``'s order).
    eta : ndarray, (n, k)
        ``eta_hat``.
    covariance : ndarray, (n, k, k)
        ``C``.
    status : ndarray of object, (n,)
        The fit's status (``ok`` or what went wrong).
    """

    names: tuple[str, ...]
    eta: np.ndarray
    covariance: np.ndarray
    status: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        """Whether each subject's fit is usable: status ``ok``, finite estimate and
        covariance."""
        finite = np.isfinite(self.eta).all(axis=1) & np.isfinite(self.covariance).all(axis=(1, 2))
        return np.asarray((self.status == OK) & finite, dtype=bool)


def subject_estimates(
    table: pd.DataFrame, subjects: np.ndarray, names: Sequence[str], *, where: str = "twins"
) -> TwinEstimates:
    """The twins of a twins table (:mod:`vtrial.run.twin_stage`, every part in shard
    order) for the dataset's ``subjects`` (IDs in file order).

    Raises
    ------
    DataError
        The table does not hold every subject once, in file order (parts of another
        run, or missing), or lacks a column (a table written before the covariance
        columns existed): rerun the twins stage.
    """
    need = ["ID", "status", *(f"eta_{p}" for p in names), *covariance_columns(names)]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise DataError(
            f"{where}: the twins table lacks the columns {missing[:6]}"
            f"{' ...' if len(missing) > 6 else ''}; rerun the twins stage"
        )
    got = table["ID"].to_numpy()
    if got.size != subjects.size or not np.array_equal(got.astype(str), subjects.astype(str)):
        raise DataError(
            f"{where}: the twins table holds {got.size} subjects, not the dataset's "
            f"{subjects.size} in file order; rerun the twins stage"
        )
    return TwinEstimates(
        names=tuple(names),
        eta=table[[f"eta_{p}" for p in names]].to_numpy(dtype=np.float64),
        covariance=covariance_matrices(table, names),
        status=table["status"].to_numpy(dtype=object),
    )


def twin_draws(est: TwinEstimates, seed: int, replicate: int) -> np.ndarray:
    """The random effects ``(n, k)`` of every subject in ``replicate``: ``eta_hat`` in
    replicate 0, one draw of ``N(eta_hat, C)`` in each other (see the module
    docstring); NaN rows for the subjects whose fit is not usable."""
    n, k = est.eta.shape
    ok = est.ok
    out = np.full((n, k), np.nan)
    if replicate == 0:
        out[ok] = est.eta[ok]
        return out
    z = special.ndtri(keyed_uniforms(seed, PURPOSE, replicate, n, k))
    for i in np.flatnonzero(ok):
        out[i] = est.eta[i] + covariance_root(est.covariance[i]) @ z[i]
    return out
