"""Covariate distributions: inverse CDFs of the marginals and the copula's correlations.

A sampled covariate's value is its marginal's inverse CDF at a keyed uniform
(:func:`marginal_ppf`: normal, log-normal, truncated to ``bounds``, uniform, empirical,
constant; with ``by`` the parameters of the candidate's category) or, for a categorical
covariate, the category whose cumulative frequency the uniform falls in
(:func:`categorical_ppf`). The distributions are the typed ones of
:mod:`vtrial.population.spec` (:data:`~vtrial.population.spec.Covariate`). The
correlations of ``population.correlation`` are those of the normal scores of a Gaussian
copula (:func:`correlation_matrix`). A new distribution goes here (its type into
:mod:`vtrial.population.spec`, and into the schema and
:mod:`vtrial.population.validate`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from vtrial.population.spec import (
    Categorical,
    Constant,
    Empirical,
    LogNormal,
    Marginal,
    Normal,
    PerCategory,
    PerCategoryList,
    Uniform,
)

__all__ = [
    "CONTINUOUS",
    "categorical_ppf",
    "correlation_matrix",
    "marginal_ppf",
    "pick",
]


#: Distributions that may take part in ``population.correlation`` (continuous ones).
CONTINUOUS = tuple(k.kind for k in (Normal, LogNormal, Uniform, Empirical))


def _by(value: PerCategory, by_labels: np.ndarray | None) -> np.ndarray | float:
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
    def build(cls, spec: Empirical, category: str | None) -> _Empirical:
        if spec.values is not None:
            x = np.asarray(_pick_list(spec.values, category), dtype=np.float64)
            w = spec.weights
            wv = np.ones(x.size) if w is None else np.asarray(_pick_list(w, category), np.float64)
            order = np.argsort(x, kind="stable")
            cum = np.cumsum(wv[order])
            return cls(x=x[order], cum=cum / cum[-1], probs=None)
        assert spec.quantiles is not None  # validation: exactly one of values, quantiles
        q = np.asarray(_pick_list(spec.quantiles, category), dtype=np.float64)
        p = spec.probs
        pv = np.linspace(0.0, 1.0, q.size) if p is None else np.asarray(_pick_list(p, category))
        return cls(x=q, cum=None, probs=np.asarray(pv, dtype=np.float64))

    def ppf(self, u: np.ndarray) -> np.ndarray:
        if self.cum is not None:
            idx = np.minimum(np.searchsorted(self.cum, u, side="right"), self.x.size - 1)
            return np.asarray(self.x[idx], dtype=np.float64)
        assert self.probs is not None
        return np.asarray(np.interp(u, self.probs, self.x), dtype=np.float64)


def _pick_list(value: PerCategoryList, category: str | None) -> tuple[float, ...]:
    """The numbers of a list parameter (of ``category`` when given per category)."""
    if isinstance(value, Mapping):
        assert category is not None
        return value[category]
    return value


def _empirical_ppf(spec: Empirical, u: np.ndarray, by_labels: np.ndarray | None) -> np.ndarray:
    """Inverse CDF of ``empirical`` (per category of ``by`` when it has mappings)."""
    cats = spec.per_category
    if by_labels is None or cats is None:
        return _Empirical.build(spec, None).ppf(u)
    out = np.empty(u.shape[0])
    for cat in cats:
        m = by_labels == cat
        out[m] = _Empirical.build(spec, cat).ppf(u[m])
    return out


def marginal_ppf(spec: Marginal, u: np.ndarray, by_labels: np.ndarray | None) -> np.ndarray:
    """Map uniforms through the inverse CDF of a non-categorical covariate.

    Parameters
    ----------
    spec : Marginal
        The covariate's distribution.
    u : ndarray, shape (n,)
        Uniforms in (0, 1).
    by_labels : ndarray or None
        The candidates' categories of ``spec.by`` (None without ``by``).

    Returns
    -------
    ndarray of float64, shape (n,)
    """
    if isinstance(spec, Normal):
        lo, hi = spec.bounds or (-np.inf, np.inf)
        mu = _by(spec.mean, by_labels)
        sd = _by(spec.sd, by_labels)
        return _truncated_normal(u, mu, sd, lo, hi)
    if isinstance(spec, LogNormal):
        lo, hi = spec.bounds or (-np.inf, np.inf)
        med = _by(spec.median, by_labels)
        cv = _by(spec.cv, by_labels)
        sigma = np.sqrt(np.log1p(np.square(cv)))
        llo = np.log(lo) if lo > 0 else -np.inf
        lhi = np.log(hi) if np.isfinite(hi) else np.inf
        return np.exp(_truncated_normal(u, np.log(med), sigma, llo, lhi))
    if isinstance(spec, Uniform):
        low = _by(spec.low, by_labels)
        high = _by(spec.high, by_labels)
        return np.asarray(low + u * (np.asarray(high) - low), dtype=np.float64)
    if isinstance(spec, Empirical):
        return _empirical_ppf(spec, u, by_labels)
    assert isinstance(spec, Constant)
    return np.full(u.shape[0], spec.value)


def categorical_ppf(spec: Categorical, u: np.ndarray) -> np.ndarray:
    """Map uniforms to the labels of a ``categorical`` covariate (cumulative frequencies)."""
    labels = spec.labels
    cum = np.cumsum([spec.frequencies[c] for c in labels])
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
