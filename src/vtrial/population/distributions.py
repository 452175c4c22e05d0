"""Covariate distributions: inverse CDFs of the marginals and the copula's correlations.

A sampled covariate's value is its marginal's inverse CDF at a keyed uniform
(:func:`marginal_ppf`: normal, log-normal, truncated to ``bounds``, uniform, empirical,
constant; with ``by`` the parameters of the candidate's category) or, for a categorical
covariate, the category whose cumulative frequency the uniform falls in
(:func:`categorical_ppf`). The correlations of ``population.correlation`` are those of
the normal scores of a Gaussian copula (:func:`correlation_matrix`). A new distribution
goes here (and into the schema and :mod:`vtrial.population.validate`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

__all__ = [
    "CONTINUOUS",
    "categorical_ppf",
    "correlation_matrix",
    "marginal_ppf",
    "pick",
]


#: Distributions that may take part in ``population.correlation`` (continuous ones).
CONTINUOUS = ("normal", "lognormal", "uniform", "empirical")


def _by(value: Any, by_labels: np.ndarray | None) -> np.ndarray | float:
    """Scalar, or per-patient values looked up by the `by` covariate's category."""
    if isinstance(value, Mapping):
        assert by_labels is not None
        out = np.empty(by_labels.shape[0])
        for cat, v in value.items():
            out[by_labels == cat] = float(v)
        return out
    return float(value)


def _truncated_normal(u: np.ndarray, mu: Any, sd: Any, lo: float, hi: float) -> np.ndarray:
    """Inverse-CDF draw from N(mu, sd) truncated to [lo, hi] (exact, no rejection)."""
    a = special.ndtr((lo - mu) / sd)
    b = special.ndtr((hi - mu) / sd)
    return np.asarray(mu + sd * special.ndtri(a + u * (b - a)), dtype=np.float64)


def pick(value: Any, category: str | None) -> Any:
    """The entry of a per-category mapping, or the value itself."""
    return value[category] if isinstance(value, Mapping) and category is not None else value


@dataclass(frozen=True)
class _Empirical:
    """Inverse CDF of one empirical distribution (one category)."""

    x: np.ndarray
    cum: np.ndarray | None  # discrete values: normalised cumulative weights
    probs: np.ndarray | None  # quantiles: their probabilities (linear in between)

    @classmethod
    def build(cls, spec: Mapping[str, Any], category: str | None) -> _Empirical:
        if "values" in spec:
            x = np.asarray(pick(spec["values"], category), dtype=np.float64)
            w = spec.get("weights")
            wv = np.ones(x.size) if w is None else np.asarray(pick(w, category), np.float64)
            order = np.argsort(x, kind="stable")
            cum = np.cumsum(wv[order])
            return cls(x=x[order], cum=cum / cum[-1], probs=None)
        q = np.asarray(pick(spec["quantiles"], category), dtype=np.float64)
        p = spec.get("probs")
        pv = np.linspace(0.0, 1.0, q.size) if p is None else np.asarray(pick(p, category))
        return cls(x=q, cum=None, probs=np.asarray(pv, dtype=np.float64))

    def ppf(self, u: np.ndarray) -> np.ndarray:
        if self.cum is not None:
            idx = np.minimum(np.searchsorted(self.cum, u, side="right"), self.x.size - 1)
            return np.asarray(self.x[idx], dtype=np.float64)
        assert self.probs is not None
        return np.asarray(np.interp(u, self.probs, self.x), dtype=np.float64)


def _empirical_ppf(
    spec: Mapping[str, Any], u: np.ndarray, by_labels: np.ndarray | None
) -> np.ndarray:
    """Inverse CDF of ``empirical`` (per category of ``by`` when it has mappings)."""
    if by_labels is None or not any(isinstance(v, Mapping) for v in spec.values()):
        return _Empirical.build(spec, None).ppf(u)
    out = np.empty(u.shape[0])
    cats = next(v for v in spec.values() if isinstance(v, Mapping))
    for cat in cats:
        m = by_labels == cat
        out[m] = _Empirical.build(spec, str(cat)).ppf(u[m])
    return out


def marginal_ppf(
    spec: Mapping[str, Any], u: np.ndarray, by_labels: np.ndarray | None
) -> np.ndarray:
    """Map uniforms through the inverse CDF of a non-categorical covariate."""
    lo, hi = spec.get("bounds", (-np.inf, np.inf))
    if "normal" in spec:
        mu = _by(spec["normal"]["mean"], by_labels)
        sd = _by(spec["normal"]["sd"], by_labels)
        return _truncated_normal(u, mu, sd, lo, hi)
    if "lognormal" in spec:
        med = _by(spec["lognormal"]["median"], by_labels)
        cv = _by(spec["lognormal"]["cv"], by_labels)
        sigma = np.sqrt(np.log1p(np.square(cv)))
        llo = np.log(lo) if lo > 0 else -np.inf
        lhi = np.log(hi) if np.isfinite(hi) else np.inf
        return np.exp(_truncated_normal(u, np.log(med), sigma, llo, lhi))
    if "uniform" in spec:
        low = _by(spec["uniform"]["low"], by_labels)
        high = _by(spec["uniform"]["high"], by_labels)
        return np.asarray(low + u * (np.asarray(high) - low), dtype=np.float64)
    if "empirical" in spec:
        return _empirical_ppf(spec["empirical"], u, by_labels)
    return np.full(u.shape[0], float(spec["constant"]))


def categorical_ppf(spec: Mapping[str, Any], u: np.ndarray) -> np.ndarray:
    """Map uniforms to the labels of a ``categorical`` covariate (cumulative frequencies)."""
    labels = list(spec["categorical"])
    cum = np.cumsum([float(spec["categorical"][c]) for c in labels])
    cum /= cum[-1]
    idx = np.minimum(np.searchsorted(cum, u, side="right"), len(labels) - 1)
    return np.asarray(labels, dtype=object)[idx]


def correlation_matrix(names: Sequence[str], pairs: Mapping[str, float]) -> np.ndarray:
    """Correlation matrix of the normal scores of ``names`` from ``{"a~b": r}`` pairs.

    Examples
    --------
    >>> correlation_matrix(["age", "scr"], {"age~scr": 0.3}).tolist()
    [[1.0, 0.3], [0.3, 1.0]]
    """
    r = np.eye(len(names))
    index = {n: i for i, n in enumerate(names)}
    for pair, value in pairs.items():
        a, b = pair.split("~")
        r[index[a], index[b]] = r[index[b], index[a]] = float(value)
    return r
