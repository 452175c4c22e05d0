"""Virtual-population covariates: the sampler of candidates and their eligibility.

A :class:`CovariateSampler` draws the covariates of *candidates* ``0, 1, 2, ...`` of a
replicate. Candidate ``k``'s covariates depend only on (study seed, replicate, ``k``):
every draw is a row of a keyed stream (:func:`vtrial.infra.rng.keyed_uniform_rows`), so
they never depend on shards, workers, batch sizes, other replicates or
``population.size``. The patients of a replicate are the first ``population.size``
candidates that meet the inclusion and exclusion criteria (all candidates when there
are none, so patient ``i`` is candidate ``i - 1``).

Per candidate, in this order:

1. ``population.resample``: a row of the user's covariate table (a stratified,
   optionally weighted bootstrap with keyed draws, see
   :class:`vtrial.population.resample.CovariateTable`), with an optional multiplicative
   jitter of its numeric columns;
2. the categorical covariates of ``population.covariates``;
3. the other sampled covariates: one keyed uniform each (``covariate:<name>``),
   correlated through a Gaussian copula for the covariates of
   ``population.correlation`` (normal scores ``z = Φ⁻¹(u)`` times the Cholesky factor
   of the correlation matrix, back to uniforms with Φ), then mapped through each
   marginal's inverse CDF (normal, log-normal, truncated, uniform, empirical; with
   ``by`` the parameters of the candidate's category; see
   :mod:`vtrial.population.distributions`). So every marginal is exact and a covariate
   outside the copula has the draws it would have without it;
4. the derived covariates (:func:`vtrial.population.derived.derive_covariates`).

Then the inclusion and exclusion criteria (:class:`Criterion`) select the eligible
candidates. The sampler reads the typed population section
(:class:`vtrial.population.spec.Population`); :meth:`CovariateSampler.from_data` builds
it from validated study data, so that study validation
(:mod:`vtrial.population.validate`) can run a pilot of the criteria before any compute.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import special

from vtrial.errors import ConfigError, Problem
from vtrial.infra.rng import keyed_uniform_rows
from vtrial.model.expressions import Expression, evaluate, parse_expression
from vtrial.population.derived import derive_covariates
from vtrial.population.distributions import categorical_ppf, correlation_matrix, marginal_ppf
from vtrial.population.resample import CovariateTable, read_covariate_table
from vtrial.population.spec import (
    MIN_ACCEPTANCE,
    Categorical,
    Constant,
    Covariate,
    Population,
    categories_of,
)

if TYPE_CHECKING:
    from vtrial.population.spec import PopulationStudy

__all__ = [
    "CANDIDATE_CAP_FACTOR",
    "MIN_ACCEPTANCE",
    "PILOT_CANDIDATES",
    "CovariateSampler",
    "Criterion",
    "Population",
    "categories_of",
    "covariate_sampler",
]


#: Candidates drawn at validation time to measure the acceptance of the criteria.
PILOT_CANDIDATES = 10_000
#: Hard cap of candidates per replicate: ``CANDIDATE_CAP_FACTOR * size / min_acceptance``
#: (plus the pilot size), i.e. four times what the minimum acceptance would need.
CANDIDATE_CAP_FACTOR = 4
#: Most candidates drawn at once while looking for eligible ones (bounds memory).
MAX_BATCH = 1 << 20


@dataclass(frozen=True)
class Criterion:
    """One inclusion or exclusion criterion.

    Attributes
    ----------
    key : str
        Its key path (``population.inclusion[0]``).
    expression : Expression
        The parsed condition.
    include : bool
        True for inclusion (must hold), False for exclusion (must not hold).
    """

    key: str
    expression: Expression
    include: bool

    def passes(self, covs: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """Boolean mask of the candidates this criterion keeps."""
        hit = evaluate(self.expression, covs, size=n).astype(bool)
        return hit if self.include else ~hit


@dataclass(frozen=True)
class CovariateSampler:
    """Draws candidates' covariates and selects the eligible ones (see module doc).

    Build it with :func:`covariate_sampler` (from a Study) or :meth:`from_data`.
    """

    seed: int
    source: str
    covariates: Mapping[str, Covariate]
    order: tuple[str, ...]
    derived: tuple[str, ...]
    correlated: tuple[str, ...]
    cholesky: np.ndarray | None
    criteria: tuple[Criterion, ...]
    min_acceptance: float
    table: CovariateTable | None

    @classmethod
    def from_data(
        cls, data: Mapping[str, Any], base_dir: str | Path, source: str = "<dict>"
    ) -> CovariateSampler:
        """Sampler of a validated study's data (:meth:`from_population`)."""
        pop = Population.from_data(data["population"])
        return cls.from_population(pop, int(data["study"]["seed"]), base_dir, source)

    @classmethod
    def from_population(
        cls, pop: Population, seed: int, base_dir: str | Path, source: str = "<dict>"
    ) -> CovariateSampler:
        """Sampler of a study's typed population section.

        Raises
        ------
        ConfigError
            If the covariate table cannot be read or is not valid (e.g. changed since
            the study was validated).
        """
        covs = pop.covariates
        order = [k for k, v in covs.items() if isinstance(v, Categorical)]
        order += [k for k, v in covs.items() if not isinstance(v, Categorical)]
        table = None
        if pop.resample is not None:
            table, problems = read_covariate_table(pop.resample, base_dir, source)
            if problems:
                raise ConfigError(problems)
        corr = pop.correlation
        names = [k for k in covs if any(k in pair.split("~") for pair in corr)]
        chol = np.linalg.cholesky(correlation_matrix(names, corr)) if names else None
        known = [*(table.columns if table else ()), *covs, *pop.derived]
        criteria = []
        for kind, include, texts in (
            ("inclusion", True, pop.inclusion),
            ("exclusion", False, pop.exclusion),
        ):
            for i, text in enumerate(texts):
                key = f"population.{kind}[{i}]"
                expr = parse_expression(
                    text,
                    where=f"{source}: {key}",
                    known_names=known,
                    categorical=pop.categories,
                    boolean=True,
                )
                criteria.append(Criterion(key, expr, include))
        return cls(
            seed=seed,
            source=source,
            covariates=covs,
            order=tuple(order),
            derived=pop.derived,
            correlated=tuple(names),
            cholesky=chol,
            criteria=tuple(criteria),
            min_acceptance=pop.min_acceptance,
            table=table,
        )

    def draw(
        self, replicate: int, start: int, stop: int, *, derived: bool = True
    ) -> dict[str, np.ndarray]:
        """Covariates of candidates ``start..stop-1`` of a replicate.

        Parameters
        ----------
        replicate : int
            Replicate index (0-based).
        start, stop : int
            Candidate range; candidate ``k``'s values depend only on (seed,
            replicate, ``k``).
        derived : bool, default True
            Also compute the derived covariates.

        Returns
        -------
        dict of str to ndarray
            Resampled columns and ``resample_row`` (with ``population.resample``),
            categorical covariates, the other covariates (declaration order), then
            the derived ones.
        """
        n = stop - start
        out: dict[str, np.ndarray] = {}
        if self.table is not None:
            out.update(self.table.draw(self.seed, replicate, start, stop))
        u: dict[str, np.ndarray] = {}
        for name in self.order:
            row = keyed_uniform_rows(self.seed, f"covariate:{name}", replicate, start, stop)
            u[name] = row[:, 0]
        if self.cholesky is not None:
            z = special.ndtri(np.column_stack([u[k] for k in self.correlated]))
            # back to (0, 1): Φ of a large score rounds to 1.0, whose inverse CDF is inf
            top = np.nextafter(1.0, 0.0)
            w = np.clip(special.ndtr(z @ self.cholesky.T), np.finfo(np.float64).tiny, top)
            for j, k in enumerate(self.correlated):
                if np.any(self.cholesky[j, :j] != 0.0):  # a row e_j keeps its own draw
                    u[k] = w[:, j]
        for name in self.order:
            spec = self.covariates[name]
            if isinstance(spec, Categorical):
                out[name] = categorical_ppf(spec, u[name])
            else:
                by = None if isinstance(spec, Constant) else spec.by
                by_labels = out.get(by) if by is not None else None
                out[name] = marginal_ppf(spec, u[name], by_labels)
        if derived and self.derived:
            out.update(derive_covariates(list(self.derived), out))
        assert all(v.shape[0] == n for v in out.values())
        return out

    def eligible(self, covs: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """Mask of the candidates meeting every inclusion and no exclusion criterion."""
        ok = np.ones(n, dtype=bool)
        for c in self.criteria:
            ok &= c.passes(covs, n)
        return ok

    def max_candidates(self, size: int) -> int:
        """Hard cap of candidates drawn per replicate for ``size`` patients."""
        return math.ceil(CANDIDATE_CAP_FACTOR * size / self.min_acceptance) + PILOT_CANDIDATES

    def sample(self, replicate: int, size: int) -> tuple[dict[str, np.ndarray], int]:
        """Covariates of the ``size`` patients of a replicate.

        Returns
        -------
        covariates : dict of str to ndarray
            As :meth:`draw`, for the first ``size`` eligible candidates in order.
        candidates : int
            Candidates examined: the position of the last patient's candidate + 1
            (``size`` without criteria), independent of how candidates are batched.

        Raises
        ------
        ConfigError
            If fewer than ``size`` of :meth:`max_candidates` candidates are eligible.
        """
        if not self.criteria:
            return self.draw(replicate, 0, size), size
        cap = self.max_candidates(size)
        parts: list[dict[str, np.ndarray]] = []
        got, start, last = 0, 0, 0
        while got < size:
            need = size - got
            rate = max(got / start if start else 1.0, self.min_acceptance)
            batch = min(max(1024, math.ceil(1.1 * need / rate)), MAX_BATCH, cap - start)
            if batch <= 0:
                raise ConfigError(
                    [
                        Problem(
                            self.source,
                            self.criteria_key(),
                            self._cap_message(replicate, size, got, start),
                        )
                    ]
                )
            covs = self.draw(replicate, start, start + batch)
            idx = np.flatnonzero(self.eligible(covs, batch))[:need]
            if idx.size:
                parts.append({k: v[idx] for k, v in covs.items()})
                last = start + int(idx[-1]) + 1
            got += int(idx.size)
            start += batch
        out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return out, last

    def criteria_key(self) -> str:
        keys = dict.fromkeys(c.key.split("[")[0] for c in self.criteria)
        return " and ".join(keys)

    def _cap_message(self, replicate: int, size: int, got: int, drawn: int) -> str:
        return (
            f"replicate {replicate}: only {got} of {size} candidates met the criteria "
            f"{[c.expression.source for c in self.criteria]} after {drawn} candidates "
            f"(acceptance {got / max(drawn, 1):.3%}); the cap is {CANDIDATE_CAP_FACTOR} x size / "
            f"min_acceptance ({self.min_acceptance:g}) + {PILOT_CANDIDATES}"
        )

    def pilot(self, n: int = PILOT_CANDIDATES) -> tuple[float, dict[str, float]]:
        """Acceptance of candidates ``0..n-1`` of replicate 0: overall and per criterion."""
        covs = self.draw(0, 0, n)
        each = {c.key: float(c.passes(covs, n).mean()) for c in self.criteria}
        return float(self.eligible(covs, n).mean()), each


def covariate_sampler(study: PopulationStudy) -> CovariateSampler:
    """The :class:`CovariateSampler` of a :class:`vtrial.study.config.Study`."""
    return CovariateSampler.from_population(
        study.population, study.seed, study.base_dir, study.source
    )
