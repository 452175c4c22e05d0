"""The likelihood of a patient's observations, and the MAP objective NONMEM's POSTHOC
step minimises.

For one patient with random effects ``eta`` (``k`` values, prior ``N(0, OMEGA)``) and
observations ``y_j`` of model outputs predicted as ``f_j(eta)`` (IPRED), the objective
function value is

    OFV(eta) = -2 log p(y | eta) + eta' OMEGA^-1 eta

(the negative log posterior up to a constant, times 2), with ``-2 log p(y | eta)`` the
sum over observations of

- a quantified observation (not BLQ), additive / proportional / combined error with
  ``sd = sqrt(a^2 + (b f)^2)``: ``log(2 pi sd^2) + ((y - f) / sd)^2``;
- a quantified observation, exponential error (``y = f exp(s eps)``, i.e. ``log y``
  normal around ``log f``): ``log(2 pi s^2) + ((log y - log f) / s)^2`` (the density
  of ``log y``, NONMEM's log-transform-both-sides; ``y <= 0`` is refused before
  anything runs, ``f <= 0`` gives an infinite objective);
- a BLQ observation, Beal's M3 method: ``-2 log P(Y < LLOQ) = -2 log Phi((LLOQ - f) /
  sd)``, or ``Phi((log LLOQ - log f) / s)`` for exponential error (computed with
  :func:`scipy.special.log_ndtr`, accurate far into the tail).

The constants (``log 2 pi``) are kept so that the objective is a true ``-2 log``
posterior density, comparable between patients and with BLQ terms; mapbayr and NONMEM
report the same minimiser (their OFVs may differ from this by a constant).

:func:`minus2ll` evaluates it for many predictions at once (one row per evaluation of
the same patient), the array form the estimator's batched kernel calls give.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from vtrial.model.residual import ErrorModel

__all__ = ["ErrorTerms", "error_terms", "minus2ll", "prior_term"]

LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class ErrorTerms:
    """The residual error of each observation, as arrays (one value per observation).

    Attributes
    ----------
    additive, proportional, exponential : ndarray, (m,)
        The observation's output's error model (:class:`~vtrial.model.residual.ErrorModel`).
    """

    additive: np.ndarray
    proportional: np.ndarray
    exponential: np.ndarray

    @property
    def log_scale(self) -> np.ndarray:
        """Observations with exponential error (likelihood on the log scale)."""
        return np.asarray(self.exponential > 0)


def error_terms(
    output: np.ndarray, names: Sequence[str], errors: Mapping[str, ErrorModel]
) -> ErrorTerms:
    """The :class:`ErrorTerms` of observations of ``output`` (index into ``names``)."""
    a = np.array([errors[n].additive for n in names], dtype=np.float64)
    b = np.array([errors[n].proportional for n in names], dtype=np.float64)
    s = np.array([errors[n].exponential for n in names], dtype=np.float64)
    return ErrorTerms(additive=a[output], proportional=b[output], exponential=s[output])


def minus2ll(
    f: np.ndarray, y: np.ndarray, blq: np.ndarray, lloq: np.ndarray, err: ErrorTerms
) -> np.ndarray:
    """``-2 log p(y | f)`` of each row of predictions ``f`` (see the module docstring).

    Parameters
    ----------
    f : ndarray, (E, m)
        Predictions of the ``m`` observations, one row per evaluation.
    y : ndarray, (m,)
        Observed values (ignored where ``blq``).
    blq : ndarray of bool, (m,)
        Below the limit of quantification (M3).
    lloq : ndarray, (m,)
        The limit of a BLQ observation.
    err : ErrorTerms
        The residual error of each observation.

    Returns
    -------
    ndarray, (E,)
        Infinite for a row with a non-finite prediction (a failed solve) or, with
        exponential error, a prediction <= 0.

    Examples
    --------
    >>> err = ErrorTerms(np.array([1.0]), np.array([0.0]), np.array([0.0]))
    >>> float(minus2ll(np.array([[2.0]]), np.array([3.0]), np.array([False]),
    ...                np.array([np.nan]), err)[0] - LOG_2PI)
    1.0
    """
    f = np.asarray(f, dtype=np.float64)
    logs = err.log_scale
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.where(logs, err.exponential, np.hypot(err.additive, err.proportional * f))
        fx = np.where(logs, np.log(np.where(f > 0, f, np.nan)), f)
        yx = np.where(logs, np.log(np.where(y > 0, y, np.nan)), y)
        lx = np.where(logs, np.log(np.where(lloq > 0, lloq, np.nan)), lloq)
        z = (yx - fx) / sd
        quantified = LOG_2PI + 2.0 * np.log(sd) + z * z
        censored = -2.0 * special.log_ndtr((lx - fx) / sd)
        terms = np.where(blq, censored, quantified)
    total = terms.sum(axis=-1)
    bad = ~np.isfinite(total)
    return np.where(bad, np.inf, total)


def prior_term(eta: np.ndarray, omega_inv: np.ndarray) -> np.ndarray:
    """``eta' OMEGA^-1 eta`` of each row of ``eta`` (E, k)."""
    eta = np.atleast_2d(eta)
    out: np.ndarray = np.einsum("ei,ij,ej->e", eta, omega_inv, eta)
    return out
