"""Dropout: per-patient dropout times from a declared hazard, by keyed inversion.

A study's ``dropout`` section declares the hazard of leaving the study (times in
hours from the start of the simulation, t = 0):

* ``hazard: constant`` with ``rate_per_year`` r: h₀(t) = r / 8766 (1/h; a year is
  365.25 days), cumulative hazard H₀(t) = r·t / 8766;
* ``hazard: weibull`` with ``scale_days`` λ and ``shape`` k: H₀(t) = (t / (24 λ))^k.

Two optional modifiers multiply the hazard:

* ``exposure: {metric, beta}``: a proportional factor exp(β·m) with m the patient's
  exposure metric (``cmax`` mg/L, ``auc`` mg·h/L or ``ctrough`` mg/L, a constant per
  patient; 0 without drug, so placebo keeps h₀);
* ``adverse_event: {event, grade, hazard_ratio}``: the hazard is multiplied by
  ``hazard_ratio`` from the first time τ the event reaches ``grade`` (default 3).

So the cumulative hazard of a patient is H(t) = c·H₀(t) for t ≤ τ and
c·(H₀(τ) + ρ·(H₀(t) − H₀(τ))) after (c = exp(β·m), ρ the hazard ratio, τ = ∞ if the
grade is never reached). The dropout time is its inversion at an exponential draw,
T = H⁻¹(−log u), with one uniform u per patient: row ``patient_id − 1`` of the
stream keyed by ``(seed, "dropout", replicate)`` (:mod:`vtrial.infra.rng`). A patient's
dropout time therefore does not depend on chunks, shards, workers or other patients,
and P(T > t) = exp(−H(t)) exactly. Times after ``simulation.end`` are +inf (no
dropout within the study).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vtrial.trial.recist import Schedule

__all__ = [
    "HOURS_PER_YEAR",
    "PURPOSE",
    "AdverseEventEffect",
    "Dropout",
    "ExposureEffect",
    "Hazard",
    "cumulative_hazard",
    "dropout_from_data",
    "dropout_times",
]

#: purpose string of the dropout draws (see :mod:`vtrial.infra.rng`)
PURPOSE = "dropout"
#: hours in a year of 365.25 days (``rate_per_year`` -> 1/h)
HOURS_PER_YEAR = 365.25 * 24.0

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Hazard:
    """Baseline dropout hazard h₀ (times in hours).

    Attributes
    ----------
    kind : {"constant", "weibull"}
    rate : float
        Constant hazard (1/h), for ``constant``.
    scale : float
        Weibull scale (h), for ``weibull``.
    shape : float
        Weibull shape (1 for ``constant``).
    """

    kind: str
    rate: float = math.nan
    scale: float = math.nan
    shape: float = 1.0

    def __post_init__(self) -> None:
        if self.kind == "constant":
            ok = math.isfinite(self.rate) and self.rate > 0
        elif self.kind == "weibull":
            ok = all(math.isfinite(v) and v > 0 for v in (self.scale, self.shape))
        else:
            raise ValueError(f"kind: must be 'constant' or 'weibull', got {self.kind!r}")
        if not ok:
            raise ValueError(f"{self.kind} hazard: parameters must be finite and > 0, got {self}")

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Hazard:
        """The baseline hazard of a (valid) ``dropout`` section."""
        if spec["hazard"] == "constant":
            return cls("constant", rate=float(spec["rate_per_year"]) / HOURS_PER_YEAR)
        return cls("weibull", scale=24.0 * float(spec["scale_days"]), shape=float(spec["shape"]))

    def cumulative(self, t: npt.ArrayLike) -> FloatArray:
        """H₀(t) for times t ≥ 0 (h); +inf at t = +inf.

        Examples
        --------
        >>> Hazard("weibull", scale=100.0, shape=2.0).cumulative([50.0, 100.0]).tolist()
        [0.25, 1.0]
        """
        tt = np.asarray(t, dtype=np.float64)
        if self.kind == "constant":
            return np.asarray(self.rate * tt, dtype=np.float64)
        return np.asarray((tt / self.scale) ** self.shape, dtype=np.float64)

    def inverse(self, x: npt.ArrayLike) -> FloatArray:
        """H₀⁻¹(x) for x ≥ 0: the time (h) at which the cumulative hazard is x."""
        xx = np.asarray(x, dtype=np.float64)
        if self.kind == "constant":
            return np.asarray(xx / self.rate, dtype=np.float64)
        return np.asarray(self.scale * xx ** (1.0 / self.shape), dtype=np.float64)


def cumulative_hazard(
    hazard: Hazard,
    t: npt.ArrayLike,
    *,
    multiplier: npt.ArrayLike = 1.0,
    onset: npt.ArrayLike = np.inf,
    ratio: float = 1.0,
) -> FloatArray:
    """Cumulative dropout hazard H(t) of each patient (see the module docstring).

    Parameters
    ----------
    hazard : Hazard
        Baseline hazard h₀.
    t : array_like, shape (n,)
        Times (h, ≥ 0).
    multiplier : array_like, shape (n,) or scalar
        Proportional factor c = exp(β·m) (> 0).
    onset : array_like, shape (n,) or scalar
        Time τ (h) from which the hazard is multiplied by `ratio`; NaN or +inf: never.
    ratio : float
        Hazard ratio ρ after `onset` (> 0).

    Returns
    -------
    ndarray, shape (n,)
    """
    tt = np.asarray(t, dtype=np.float64)
    c = np.asarray(multiplier, dtype=np.float64)
    tau = np.asarray(onset, dtype=np.float64)
    tau = np.where(np.isnan(tau), np.inf, tau)
    h_t = hazard.cumulative(tt)
    with np.errstate(invalid="ignore"):
        h_tau = hazard.cumulative(np.minimum(tau, tt))
        return np.asarray(c * (h_tau + ratio * (h_t - h_tau)), dtype=np.float64)


def dropout_times(
    hazard: Hazard,
    u: npt.ArrayLike,
    *,
    multiplier: npt.ArrayLike = 1.0,
    onset: npt.ArrayLike = np.inf,
    ratio: float = 1.0,
    end: float = np.inf,
) -> FloatArray:
    """Dropout times by inversion of the cumulative hazard at −log u.

    Parameters
    ----------
    hazard : Hazard
        Baseline hazard h₀.
    u : array_like, shape (n,)
        Uniforms in (0, 1), one per patient.
    multiplier, onset, ratio
        As in :func:`cumulative_hazard`.
    end : float
        End of the study (h): later times are +inf (no dropout within the study).

    Returns
    -------
    ndarray, shape (n,)
        T with H(T) = −log u (h), +inf after `end`; NaN where u or the multiplier is
        NaN (a NaN onset means no onset).

    Examples
    --------
    >>> h = Hazard("constant", rate=0.01)
    >>> dropout_times(h, [np.exp(-0.5), np.exp(-2.0)], end=150.0).tolist()
    [50.0, inf]
    >>> # hazard x 4 from t = 20 h: H(20) = 0.2, then 0.2 + 4 * 0.01 * (t - 20) = 0.5
    >>> dropout_times(h, [np.exp(-0.5)], onset=[20.0], ratio=4.0).tolist()
    [27.5]
    """
    e = -np.log(np.asarray(u, dtype=np.float64))
    c = np.asarray(multiplier, dtype=np.float64)
    tau = np.asarray(onset, dtype=np.float64)
    tau = np.where(np.isnan(tau), np.inf, tau)
    target = e / c  # H0 at the dropout time without the AE factor
    with np.errstate(invalid="ignore", over="ignore"):
        h_tau = hazard.cumulative(tau)
        before = target <= h_tau
        after = h_tau + (target - h_tau) / ratio
        t = hazard.inverse(np.where(before, target, after))
    out = np.array(np.broadcast_to(t, np.broadcast_shapes(e.shape, c.shape, tau.shape)))
    out[out > end] = np.inf
    return out


@dataclass(frozen=True)
class ExposureEffect:
    """``dropout.exposure``: the hazard times ``exp(beta * metric)``."""

    metric: str
    beta: float


@dataclass(frozen=True)
class AdverseEventEffect:
    """``dropout.adverse_event``: the hazard times ``hazard_ratio`` from the first time
    ``event`` reaches ``grade``."""

    event: str
    grade: int
    hazard_ratio: float


@dataclass(frozen=True)
class Dropout:
    """The typed ``dropout`` section: baseline hazard, its modifiers, the censoring of
    endpoints at the dropout (``missing`` or ``locf``) and the LOCF visits."""

    hazard: Hazard
    exposure: ExposureEffect | None = None
    adverse_event: AdverseEventEffect | None = None
    censoring: str = "missing"
    visits: Schedule | None = None


def dropout_from_data(spec: Mapping[str, Any] | None) -> Dropout | None:
    """The :class:`Dropout` of a validated ``dropout`` section (None without one)."""
    if not spec:
        return None
    exp = spec.get("exposure")
    ae = spec.get("adverse_event")
    return Dropout(
        hazard=Hazard.from_spec(spec),
        exposure=ExposureEffect(str(exp["metric"]), float(exp["beta"])) if exp else None,
        adverse_event=AdverseEventEffect(
            str(ae["event"]), int(ae.get("grade", 3)), float(ae["hazard_ratio"])
        )
        if ae
        else None,
        censoring=str(spec.get("censoring", "missing")),
        visits=Schedule.from_data(spec["visits"]) if spec.get("visits") else None,
    )
