"""Closed-form reference solutions for linear compartmental pharmacokinetics.

These functions are an *independent* reference for vtrial's eigen/modal PK
engine. Every concentration is written as an explicit sum of exponentials with
the classic textbook macro-constants and coefficients; no matrix exponential,
eigen-decomposition or ODE solver is used.

Sources
-------
* M. Gibaldi and D. Perrier, *Pharmacokinetics*, 2nd ed., Marcel Dekker, 1982
  (ch. 1-3: one- and two-compartment models, multiple dosing, accumulation).
* J. Bertrand and F. Mentré, *Mathematical expressions of the pharmacokinetic
  and pharmacodynamic models implemented in the Monolix software*, 2008
  (closed forms for 1/2/3 compartments, bolus / infusion / first-order
  absorption, single dose and steady state; trigonometric solution of the
  three-compartment cubic).
* NONMEM user guides, PREDPP ADVAN1/ADVAN2 (one compartment), ADVAN3/ADVAN4
  (two compartments) and ADVAN11/ADVAN12 (three compartments), with the
  TRANS4-style clearance parameterization used here.

Parameterization and units
--------------------------
Clearance terms ``cl`` (elimination), ``q2``, ``q3`` (inter-compartmental),
volumes ``v1`` (central), ``v2``, ``v3`` (peripheral), absorption rate ``ka``,
bioavailability ``f`` and lag time ``tlag``. Doses in mg, volumes in L,
clearances in L/h, time in h and concentrations (central compartment) in mg/L.
The number of compartments is inferred from which peripheral pairs are given:
``(cl, v1)`` -> 1, plus ``(q2, v2)`` -> 2, plus ``(q3, v3)`` -> 3.

Conventions
-----------
Times before a dose (or before dose time + ``tlag`` for oral doses) receive no
contribution from that dose. Profiles are right-continuous: at the exact time
of an IV bolus the concentration already includes that bolus.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "accumulation_ratio",
    "auc_inf",
    "conc_bolus",
    "conc_events",
    "conc_infusion",
    "conc_oral",
    "conc_steady_state_bolus",
    "conc_steady_state_infusion",
    "conc_steady_state_oral",
    "macro_constants",
]

_DISPOSITION_KEYS = ("cl", "v1", "q2", "v2", "q3", "v3")
_KA_SEPARATION = 1e-6  # minimum relative distance between KA and any lambda_i
_ROUTES = ("iv_bolus", "iv_infusion", "oral")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def _positive(name: str, value: Any) -> float:
    """Validate that a scalar parameter is finite and strictly positive.

    Parameters
    ----------
    name : str
        Parameter name (for the error message).
    value : Any
        Value to validate.

    Returns
    -------
    float
        ``value`` converted to ``float``.

    Raises
    ------
    ValueError
        If the value is not finite or not strictly positive.
    """
    v = float(value)
    if not np.isfinite(v) or v <= 0.0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return v


def _disposition(params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Return the unit-bolus macro-constants for a ``**params`` mapping.

    Parameters
    ----------
    params : dict
        Keyword parameters; only ``cl, v1, q2, v2, q3, v3`` are allowed.

    Returns
    -------
    lambdas, coefficients : ndarray
        As :func:`macro_constants`.

    Raises
    ------
    TypeError
        If an unknown keyword or a required one is missing.
    """
    unknown = set(params) - set(_DISPOSITION_KEYS)
    if unknown:
        raise TypeError(f"unknown PK parameter(s): {sorted(unknown)}")
    if "cl" not in params or "v1" not in params:
        raise TypeError("cl and v1 are required")
    return macro_constants(**params)


def _as_time(t: ArrayLike) -> np.ndarray:
    """Convert times to a float64 array (at least 1-D is *not* forced).

    Parameters
    ----------
    t : array_like
        Times in h.

    Returns
    -------
    ndarray
        ``np.asarray(t, dtype=float)``.
    """
    return np.asarray(t, dtype=np.float64)


def _expsum(s: np.ndarray, rates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Evaluate ``sum_i w_i exp(-r_i s)`` elementwise over ``s``.

    Parameters
    ----------
    s : ndarray
        Non-negative elapsed times (any shape).
    rates : ndarray
        Exponential rates ``r_i`` (1/h), shape ``(n,)``.
    weights : ndarray
        Weights ``w_i``, shape ``(n,)``.

    Returns
    -------
    ndarray
        Same shape as ``s``.
    """
    return np.exp(-s[..., None] * rates) @ weights


# ---------------------------------------------------------------------------
# macro-constants
# ---------------------------------------------------------------------------
def macro_constants(
    cl: float,
    v1: float,
    q2: float | None = None,
    v2: float | None = None,
    q3: float | None = None,
    v3: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Macro rate constants and coefficients of a unit IV bolus into central.

    For a unit dose (1 mg) given as a bolus into the central compartment,

    .. math:: C(t) = \sum_i A_i e^{-\lambda_i t}.

    With micro-constants :math:`k_{10}=CL/V_1`, :math:`k_{12}=Q_2/V_1`,
    :math:`k_{21}=Q_2/V_2`, :math:`k_{13}=Q_3/V_1`, :math:`k_{31}=Q_3/V_3`:

    * one compartment (Gibaldi & Perrier ch. 1; ADVAN1):
      :math:`\lambda_1 = k_{10}`, :math:`A_1 = 1/V_1`;
    * two compartments (Gibaldi & Perrier ch. 2; Bertrand & Mentré §1.2;
      ADVAN3): :math:`\alpha,\beta` are the roots of
      :math:`\lambda^2 - (k_{10}+k_{12}+k_{21})\lambda + k_{10}k_{21} = 0`,
      :math:`\alpha = (S + \sqrt{S^2 - 4k_{10}k_{21}})/2`,
      :math:`\beta = k_{10}k_{21}/\alpha` (Vieta; avoids cancellation), and
      :math:`A_i = (k_{21}-\lambda_i)/(V_1 (\lambda_j - \lambda_i))`;
    * three compartments (Bertrand & Mentré §1.3; ADVAN11): the
      :math:`\lambda_i` are the roots of
      :math:`\lambda^3 - a_2\lambda^2 + a_1\lambda - a_0 = 0` with
      :math:`a_0 = k_{10}k_{21}k_{31}`,
      :math:`a_1 = k_{10}k_{31} + k_{21}k_{31} + k_{21}k_{13} + k_{10}k_{21}
      + k_{31}k_{12}`,
      :math:`a_2 = k_{10}+k_{12}+k_{13}+k_{21}+k_{31}`, obtained by the
      trigonometric (Viète) solution
      :math:`p = a_1 - a_2^2/3`, :math:`q = 2a_2^3/27 - a_1a_2/3 + a_0`,
      :math:`r_1 = \sqrt{-p^3/27}`, :math:`\varphi = \arccos(-q/(2r_1))/3`,
      :math:`r_2 = 2 r_1^{1/3}`,
      :math:`\lambda = a_2/3 - r_2\cos(\varphi + 2\pi k/3)`, :math:`k=0,1,2`;
      each root is then polished by two Newton steps on the same cubic (a
      purely scalar refinement that removes the cancellation of the
      trigonometric formula for the smallest root), and
      :math:`A_i = (k_{21}-\lambda_i)(k_{31}-\lambda_i) /
      (V_1 \prod_{j\ne i}(\lambda_j-\lambda_i))`.

    Parameters
    ----------
    cl : float
        Elimination clearance (L/h).
    v1 : float
        Central volume (L).
    q2, v2 : float, optional
        Inter-compartmental clearance (L/h) and volume (L) of peripheral 1.
    q3, v3 : float, optional
        Inter-compartmental clearance (L/h) and volume (L) of peripheral 2;
        only allowed together with ``q2, v2``.

    Returns
    -------
    lambdas : ndarray
        Disposition rate constants (1/h), sorted in decreasing order.
    coefficients : ndarray
        Coefficients :math:`A_i` (1/L) so that ``sum(coefficients) == 1/v1``.

    Raises
    ------
    ValueError
        On non-positive parameters, an incomplete peripheral pair, or
        (numerically) repeated macro-constants.
    """
    cl = _positive("cl", cl)
    v1 = _positive("v1", v1)
    if (q2 is None) != (v2 is None) or (q3 is None) != (v3 is None):
        raise ValueError("peripheral clearances and volumes must be given in pairs")
    if q3 is not None and q2 is None:
        raise ValueError("q3/v3 given without q2/v2")

    k10 = cl / v1
    if q2 is None:
        return np.array([k10]), np.array([1.0 / v1])

    q2 = _positive("q2", q2)
    v2 = _positive("v2", v2)
    k12 = q2 / v1
    k21 = q2 / v2

    if q3 is None:
        s = k10 + k12 + k21
        disc = s * s - 4.0 * k10 * k21  # = (k10+k12-k21)^2 + 4 k12 k21 > 0
        alpha = 0.5 * (s + np.sqrt(disc))
        beta = k10 * k21 / alpha
        lam = np.array([alpha, beta])
        coef = np.array(
            [
                (k21 - alpha) / (v1 * (beta - alpha)),
                (k21 - beta) / (v1 * (alpha - beta)),
            ]
        )
        return lam, coef

    q3 = _positive("q3", q3)
    v3 = _positive("v3", v3)
    k13 = q3 / v1
    k31 = q3 / v3

    a0 = k10 * k21 * k31
    a1 = k10 * k31 + k21 * k31 + k21 * k13 + k10 * k21 + k31 * k12
    a2 = k10 + k12 + k13 + k21 + k31
    p = a1 - a2 * a2 / 3.0
    q = 2.0 * a2**3 / 27.0 - a1 * a2 / 3.0 + a0
    if p >= 0.0:
        raise ValueError("three-compartment cubic has a triple root")
    r1 = np.sqrt(-(p**3) / 27.0)
    phi = np.arccos(np.clip(-q / (2.0 * r1), -1.0, 1.0)) / 3.0
    r2 = 2.0 * np.cbrt(r1)
    lam = a2 / 3.0 - r2 * np.cos(phi + 2.0 * np.pi * np.arange(3) / 3.0)
    for _ in range(2):  # Newton polish on f(x) = x^3 - a2 x^2 + a1 x - a0
        f = ((lam - a2) * lam + a1) * lam - a0
        df = (3.0 * lam - 2.0 * a2) * lam + a1
        lam = lam - f / df
    lam = np.sort(lam)[::-1]

    diff = lam[None, :] - lam[:, None]  # diff[i, j] = lambda_j - lambda_i
    np.fill_diagonal(diff, 1.0)
    denom = np.prod(diff, axis=1)
    if np.min(np.abs(denom)) <= 1e-12 * a2 * a2:
        raise ValueError("three-compartment macro-constants are (nearly) repeated")
    coef = (k21 - lam) * (k31 - lam) / (v1 * denom)
    return lam, coef


# ---------------------------------------------------------------------------
# single doses
# ---------------------------------------------------------------------------
def conc_bolus(t: ArrayLike, dose: float, **params: float) -> np.ndarray:
    r"""Concentration after a single IV bolus at time 0.

    .. math:: C(t) = D \sum_i A_i e^{-\lambda_i t}, \quad t \ge 0,

    and 0 for :math:`t < 0` (Gibaldi & Perrier eqs. 1.11 and 2.8;
    Bertrand & Mentré §1.1-1.3, "bolus, single dose").

    Parameters
    ----------
    t : array_like
        Times (h).
    dose : float
        Dose (mg).
    **params : float
        ``cl, v1`` and optionally ``q2, v2, q3, v3`` (see module docstring).

    Returns
    -------
    ndarray
        Central concentration (mg/L), same shape as ``t``.
    """
    lam, coef = _disposition(params)
    t = _as_time(t)
    s = np.maximum(t, 0.0)
    return np.where(t >= 0.0, dose * _expsum(s, lam, coef), 0.0)


def conc_infusion(t: ArrayLike, dose: float, duration: float, **params: float) -> np.ndarray:
    r"""Concentration for a zero-order infusion starting at 0 lasting ``duration``.

    With rate :math:`R = D/T_{inf}`,

    .. math::
        C(t) = R \sum_i \frac{A_i}{\lambda_i}\left(1 - e^{-\lambda_i t}\right),
        \quad 0 \le t \le T_{inf},

    .. math::
        C(t) = R \sum_i \frac{A_i}{\lambda_i}\left(1 - e^{-\lambda_i T_{inf}}\right)
        e^{-\lambda_i (t - T_{inf})}, \quad t > T_{inf},

    and 0 for :math:`t < 0` (Gibaldi & Perrier eqs. 1.42-1.45 and 2.40-2.41;
    Bertrand & Mentré, "infusion, single dose").

    Parameters
    ----------
    t : array_like
        Times (h).
    dose : float
        Total infused amount (mg).
    duration : float
        Infusion duration (h), > 0.
    **params : float
        ``cl, v1`` and optionally ``q2, v2, q3, v3``.

    Returns
    -------
    ndarray
        Central concentration (mg/L), same shape as ``t``.
    """
    duration = _positive("duration", duration)
    lam, coef = _disposition(params)
    t = _as_time(t)
    rate = dose / duration
    s_in = np.clip(t, 0.0, duration)  # time spent infusing so far
    s_after = np.maximum(t - duration, 0.0)  # time since end of infusion
    # (1 - exp(-lambda s_in)) * exp(-lambda s_after), with expm1 for accuracy
    terms = -np.expm1(-s_in[..., None] * lam) * np.exp(-s_after[..., None] * lam)
    return np.where(t >= 0.0, rate * (terms @ (coef / lam)), 0.0)


def _oral_weights(ka: float, lam: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Return ``ka * A_i / (ka - lambda_i)`` after checking KA is distinct.

    Parameters
    ----------
    ka : float
        Absorption rate constant (1/h).
    lam, coef : ndarray
        Unit-bolus macro-constants.

    Returns
    -------
    ndarray
        Per-exponential weights of the first-order-absorption solution.

    Raises
    ------
    ValueError
        If ``ka`` coincides (relatively within 1e-6) with a ``lambda_i``; the
        closed form below is singular there.
    """
    if np.any(np.abs(ka - lam) <= _KA_SEPARATION * np.maximum(ka, lam)):
        raise ValueError(f"ka={ka} coincides with a disposition rate {lam}")
    return ka * coef / (ka - lam)


def conc_oral(
    t: ArrayLike,
    dose: float,
    ka: float,
    f: float = 1.0,
    tlag: float = 0.0,
    **params: float,
) -> np.ndarray:
    r"""Concentration after a single first-order-absorption (oral) dose at 0.

    With :math:`s = t - t_{lag}`,

    .. math::
        C(t) = F D \sum_i \frac{k_a A_i}{k_a - \lambda_i}
        \left(e^{-\lambda_i s} - e^{-k_a s}\right), \quad s \ge 0,

    and 0 for :math:`s < 0` (Gibaldi & Perrier eqs. 1.53 and 2.66;
    Bertrand & Mentré, "first order absorption, single dose"; ADVAN2/4/12).
    Requires :math:`k_a \ne \lambda_i` for all i.

    Parameters
    ----------
    t : array_like
        Times (h).
    dose : float
        Administered dose (mg).
    ka : float
        First-order absorption rate constant (1/h).
    f : float, default 1.0
        Bioavailability (fraction, >= 0).
    tlag : float, default 0.0
        Absorption lag time (h, >= 0).
    **params : float
        ``cl, v1`` and optionally ``q2, v2, q3, v3``.

    Returns
    -------
    ndarray
        Central concentration (mg/L), same shape as ``t``.
    """
    ka = _positive("ka", ka)
    if f < 0.0 or tlag < 0.0:
        raise ValueError("f and tlag must be >= 0")
    lam, coef = _disposition(params)
    w = _oral_weights(ka, lam, coef)
    t = _as_time(t)
    s = np.maximum(t - tlag, 0.0)
    c = f * dose * (_expsum(s, lam, w) - np.exp(-ka * s) * np.sum(w))
    return np.where(t >= tlag, c, 0.0)


# ---------------------------------------------------------------------------
# multiple doses by superposition
# ---------------------------------------------------------------------------
def conc_events(
    t: ArrayLike,
    events: Iterable[Sequence[float | None]],
    route: str,
    **params: float,
) -> np.ndarray:
    r"""Concentration for a list of doses by linear superposition.

    .. math:: C(t) = \sum_k C_{single}(t - t_k; D_k)

    (principle of superposition for linear kinetics, Gibaldi & Perrier ch. 3;
    Bertrand & Mentré, "multiple doses"), where :math:`C_{single}` is
    :func:`conc_bolus`, :func:`conc_infusion` or :func:`conc_oral`. Each dose
    contributes 0 before its time (before time + ``tlag`` for oral doses).

    Parameters
    ----------
    t : array_like
        Times (h).
    events : iterable of tuple
        ``(time, amount)`` or ``(time, amount, duration)``. ``duration`` is
        required (> 0) for ``'iv_infusion'`` and must be absent, ``None`` or 0
        for the other routes.
    route : {'iv_bolus', 'iv_infusion', 'oral'}
        Administration route, common to all events.
    **params : float
        ``cl, v1`` and optionally ``q2, v2, q3, v3``; for ``'oral'`` also
        ``ka`` (required), ``f`` and ``tlag``.

    Returns
    -------
    ndarray
        Central concentration (mg/L), same shape as ``t``.
    """
    if route not in _ROUTES:
        raise ValueError(f"route must be one of {_ROUTES}, got {route!r}")
    params = dict(params)
    oral_kw: dict[str, float] = {}
    if route == "oral":
        if "ka" not in params:
            raise TypeError("route 'oral' requires ka")
        oral_kw = {k: params.pop(k) for k in ("ka", "f", "tlag") if k in params}
    t = _as_time(t)
    total = np.zeros(t.shape)
    for event in events:
        if len(event) not in (2, 3):
            raise ValueError(f"event must be (time, amount[, duration]), got {event!r}")
        t_dose = float(event[0])  # type: ignore[arg-type]
        amount = float(event[1])  # type: ignore[arg-type]
        duration = event[2] if len(event) == 3 else None
        if route == "iv_infusion":
            if duration is None:
                raise ValueError("iv_infusion events need a duration")
            total += conc_infusion(t - t_dose, amount, duration, **params)
        else:
            if duration not in (None, 0, 0.0):
                raise ValueError(f"route {route!r} does not take a duration")
            if route == "iv_bolus":
                total += conc_bolus(t - t_dose, amount, **params)
            else:
                total += conc_oral(t - t_dose, amount, **oral_kw, **params)
    return total


# ---------------------------------------------------------------------------
# steady state
# ---------------------------------------------------------------------------
def accumulation_ratio(lambda_: ArrayLike, tau: float) -> float | np.ndarray:
    r"""Geometric-series accumulation factor :math:`1/(1 - e^{-\lambda\tau})`.

    :math:`\sum_{n\ge 0} e^{-n\lambda\tau} = 1/(1-e^{-\lambda\tau})`
    (Gibaldi & Perrier eq. 3.10, the "R" factor; Bertrand & Mentré,
    steady-state expressions). Computed as ``-1 / expm1(-lambda * tau)``.

    Parameters
    ----------
    lambda_ : float or array_like
        Rate constant(s) (1/h), > 0.
    tau : float
        Dosing interval (h), > 0.

    Returns
    -------
    float or ndarray
        Accumulation factor(s), > 1; a ``float`` for scalar input.
    """
    tau = _positive("tau", tau)
    lam = np.asarray(lambda_, dtype=np.float64)
    if np.any(lam <= 0.0):
        raise ValueError("lambda_ must be > 0")
    r = -1.0 / np.expm1(-lam * tau)
    return float(r) if r.ndim == 0 else r


def _interval_time(t_in_interval: ArrayLike, tau: float) -> np.ndarray:
    """Validate times within one dosing interval ``[0, tau]``.

    Parameters
    ----------
    t_in_interval : array_like
        Times since the last dose (h).
    tau : float
        Dosing interval (h).

    Returns
    -------
    ndarray
        Times as float array.

    Raises
    ------
    ValueError
        If a time lies outside ``[0, tau]``.
    """
    s = _as_time(t_in_interval)
    if np.any(s < 0.0) or np.any(s > tau):
        raise ValueError("t_in_interval must lie in [0, tau]")
    return s


def conc_steady_state_bolus(
    t_in_interval: ArrayLike, dose: float, tau: float, **params: float
) -> np.ndarray:
    r"""Steady-state concentration within one interval, repeated IV bolus.

    .. math:: C_{ss}(t) = D \sum_i \frac{A_i e^{-\lambda_i t}}{1 - e^{-\lambda_i \tau}},
       \quad 0 \le t \le \tau

    (Gibaldi & Perrier eqs. 3.17 and 3.40; Bertrand & Mentré, "bolus, steady
    state"). At :math:`t = 0` the value includes the current dose (peak), at
    :math:`t = \tau` it is the trough just before the next dose.

    Parameters
    ----------
    t_in_interval : array_like
        Time since the most recent dose (h), within ``[0, tau]``.
    dose : float
        Dose per administration (mg).
    tau : float
        Dosing interval (h).
    **params : float
        ``cl, v1`` and optionally ``q2, v2, q3, v3``.

    Returns
    -------
    ndarray
        Central concentration (mg/L), same shape as ``t_in_interval``.
    """
    tau = _positive("tau", tau)
    lam, coef = _disposition(params)
    s = _interval_time(t_in_interval, tau)
    return dose * _expsum(s, lam, coef * accumulation_ratio(lam, tau))


def conc_steady_state_infusion(
    t_in_interval: ArrayLike, dose: float, tau: float, duration: float, **params: float
) -> np.ndarray:
    r"""Steady-state concentration within one interval, repeated infusion.

    With :math:`R = D/T_{inf}`, :math:`T_{inf} \le \tau` and
    :math:`\mathcal{R}_i = 1/(1-e^{-\lambda_i\tau})`:

    .. math::
        C_{ss}(t) = R \sum_i \frac{A_i}{\lambda_i}\Big[(1 - e^{-\lambda_i t})
        + (1 - e^{-\lambda_i T_{inf}}) e^{-\lambda_i (t - T_{inf} + \tau)}
        \mathcal{R}_i\Big], \quad 0 \le t \le T_{inf},

    .. math::
        C_{ss}(t) = R \sum_i \frac{A_i}{\lambda_i}(1 - e^{-\lambda_i T_{inf}})
        e^{-\lambda_i (t - T_{inf})}\mathcal{R}_i, \quad T_{inf} < t \le \tau

    (Gibaldi & Perrier eqs. 3.51-3.53; Bertrand & Mentré, "infusion, steady
    state"): the current infusion plus the geometric series of all previous,
    already completed, infusions.

    Parameters
    ----------
    t_in_interval : array_like
        Time since the start of the most recent infusion (h), in ``[0, tau]``.
    dose : float
        Amount per infusion (mg).
    tau : float
        Dosing interval (h).
    duration : float
        Infusion duration (h), ``0 < duration <= tau``.
    **params : float
        ``cl, v1`` and optionally ``q2, v2, q3, v3``.

    Returns
    -------
    ndarray
        Central concentration (mg/L), same shape as ``t_in_interval``.
    """
    tau = _positive("tau", tau)
    duration = _positive("duration", duration)
    if duration > tau:
        raise ValueError("duration must not exceed tau")
    lam, coef = _disposition(params)
    s = _interval_time(t_in_interval, tau)
    rate = dose / duration
    acc = accumulation_ratio(lam, tau)
    s_in = np.minimum(s, duration)[..., None]
    end_factor = -np.expm1(-lam * duration)  # 1 - exp(-lambda T_inf)
    # current infusion (ongoing or completed) ...
    current = -np.expm1(-s_in * lam) * np.exp(-np.maximum(s - duration, 0.0)[..., None] * lam)
    # ... plus all previous (completed) infusions: sum_{n>=1} exp(-n lambda tau)
    previous = end_factor * np.exp(-(s[..., None] - duration + tau) * lam) * acc
    return rate * ((current + previous) @ (coef / lam))


def conc_steady_state_oral(
    t_in_interval: ArrayLike,
    dose: float,
    tau: float,
    ka: float,
    f: float = 1.0,
    tlag: float = 0.0,
    **params: float,
) -> np.ndarray:
    r"""Steady-state concentration within one interval, repeated oral dose.

    .. math::
        C_{ss}(t) = F D \sum_i \frac{k_a A_i}{k_a - \lambda_i}\left[
        \frac{e^{-\lambda_i s}}{1 - e^{-\lambda_i\tau}}
        - \frac{e^{-k_a s}}{1 - e^{-k_a\tau}}\right]

    (Gibaldi & Perrier eqs. 3.26 and 3.44; Bertrand & Mentré, "first order
    absorption, steady state"): every exponential, including the absorption
    exponential, carries its own accumulation factor. Without lag
    :math:`s = t`; with a lag the steady-state profile is the lag-free one
    shifted by :math:`t_{lag}`, :math:`s = (t - t_{lag}) \bmod \tau`.

    Parameters
    ----------
    t_in_interval : array_like
        Time since the most recent dose administration (h), in ``[0, tau]``.
    dose : float
        Dose per administration (mg).
    tau : float
        Dosing interval (h).
    ka : float
        First-order absorption rate constant (1/h), distinct from all lambdas.
    f : float, default 1.0
        Bioavailability.
    tlag : float, default 0.0
        Absorption lag time (h).
    **params : float
        ``cl, v1`` and optionally ``q2, v2, q3, v3``.

    Returns
    -------
    ndarray
        Central concentration (mg/L), same shape as ``t_in_interval``.
    """
    tau = _positive("tau", tau)
    ka = _positive("ka", ka)
    if f < 0.0 or tlag < 0.0:
        raise ValueError("f and tlag must be >= 0")
    lam, coef = _disposition(params)
    w = _oral_weights(ka, lam, coef)
    s = _interval_time(t_in_interval, tau)
    if tlag > 0.0:
        s = np.mod(s - tlag, tau)
    disposition = _expsum(s, lam, w * accumulation_ratio(lam, tau))
    absorption = np.exp(-ka * s) * accumulation_ratio(ka, tau) * np.sum(w)
    return f * dose * (disposition - absorption)


def auc_inf(dose: float, cl: float, f: float = 1.0) -> float:
    r"""Area under the concentration curve from 0 to infinity.

    .. math:: AUC_{0-\infty} = F \cdot D / CL

    (Gibaldi & Perrier eq. 1.20; valid for any linear model with elimination
    from the central compartment only, any route and any number of
    compartments; also equals the steady-state AUC over one interval).

    Parameters
    ----------
    dose : float
        Dose (mg).
    cl : float
        Elimination clearance (L/h).
    f : float, default 1.0
        Bioavailability.

    Returns
    -------
    float
        AUC (mg·h/L).
    """
    return float(f) * float(dose) / _positive("cl", cl)
