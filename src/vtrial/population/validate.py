"""Semantic checks of the covariates of a study's ``population`` section.

:func:`population_problems` checks the distributions, ``by`` conditioning, bounds,
derived covariates and the resampled table; :func:`covariate_problems` the
correlations, empirical distributions, resampled column names and the inclusion and
exclusion criteria, then measures the criteria's acceptance on a pilot draw. Every
problem is collected (none raised), for :mod:`vtrial.study.config` to report all at
once before anything is computed. The checks read the section as study data (whose
keys they name), before the loader builds the typed
:class:`~vtrial.population.spec.Population`. The design and variability of the
population are checked by :mod:`vtrial.population.design`,
:mod:`vtrial.population.sampling` and :mod:`vtrial.population.uncertainty`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vtrial.data.dataset import Dataset
from vtrial.errors import ExpressionError, Problem
from vtrial.model.expressions import parse_expression
from vtrial.population.covariates import PILOT_CANDIDATES, CovariateSampler
from vtrial.population.derived import DERIVED
from vtrial.population.distributions import CONTINUOUS, correlation_matrix, pick
from vtrial.population.resample import resampled_columns
from vtrial.population.spec import resample_of

__all__ = ["covariate_problems", "population_problems"]


def population_problems(
    d: Mapping[str, Any], source: str, base_dir: str | Path, *, dataset: Dataset | None = None
) -> tuple[list[Problem], dict[str, list[str]], set[str]]:
    """Problems of the ``population`` section of a study (defaults filled).

    Distributions, ``by`` conditioning, bounds, derived covariates, the resampled
    table (:func:`~vtrial.population.resample.resampled_columns`) and
    :func:`covariate_problems` (correlations, empirical distributions, criteria and their
    pilot, run only if all else is well).

    Returns
    -------
    problems : list of Problem
    categories : dict of str to list of str
        Every categorical covariate (sampled or resampled) and its labels.
    names : set of str
        Every covariate name: sampled, derived and resampled.
    """
    src = source
    out: list[Problem] = []

    def bad(where: str, msg: str) -> None:
        out.append(Problem(src, where, msg))

    covs: dict[str, Any] = d["population"]["covariates"]
    base = Path(base_dir)
    resampled = resampled_columns(
        resample_of(d["population"]), src, base
    )  # population.resample: a covariate table
    out += resampled.problems
    categories: dict[str, list[str]] = dict(resampled.categories)
    from_data = tuple(dataset.covariates) if dataset is not None else ()
    for name in from_data:  # text columns of population.dataset are categorical
        col = dataset.records[name] if dataset is not None else None
        if col is not None and not pd.api.types.is_numeric_dtype(col):
            categories[name] = sorted({str(v) for v in col.dropna()})
    have = set(covs) | set(resampled.columns) | set(from_data)
    for name, spec in covs.items():
        where = f"population.covariates.{name}"
        kinds = [k for k in _DISTRIBUTIONS if k in spec]
        if len(kinds) != 1:
            bad(where, f"needs exactly one distribution of {list(_DISTRIBUTIONS)}, got {kinds}")
            continue
        kind = kinds[0]
        if kind == "categorical":
            freq = spec["categorical"]
            total = sum(freq.values())
            if abs(total - 1.0) > 1e-6:
                bad(f"{where}.categorical", f"frequencies must sum to 1, got {total:g}")
            categories[name] = list(freq)
            if "by" in spec or "bounds" in spec:
                bad(where, "a categorical covariate takes no 'by' or 'bounds'")
    for name, spec in covs.items():
        where = f"population.covariates.{name}"
        kinds = [k for k in _DISTRIBUTIONS if k in spec]
        if len(kinds) != 1 or kinds[0] == "categorical":
            continue
        by = spec.get("by")
        if by is not None and by not in categories:
            bad(
                f"{where}.by", f"must name a categorical covariate {sorted(categories)}, got {by!r}"
            )
            continue
        if kinds[0] in ("uniform", "constant") and "bounds" in spec:
            bad(f"{where}.bounds", f"a {kinds[0]} covariate takes no 'bounds'")
        if kinds[0] == "constant" and by is not None:
            bad(f"{where}.by", "a constant covariate takes no 'by'")
        params = spec[kinds[0]] if isinstance(spec[kinds[0]], Mapping) else {}
        complete = True
        for key, val in params.items():
            if isinstance(val, Mapping):
                if by is None:
                    bad(f"{where}.{kinds[0]}.{key}", "a per-category value needs 'by'")
                    complete = False
                elif set(val) != set(categories[by]):
                    bad(
                        f"{where}.{kinds[0]}.{key}",
                        f"needs a value for every category of {by} {categories[by]}, "
                        f"got {sorted(val)}",
                    )
                    complete = False
        if not complete:
            continue
        if "bounds" in spec:
            lo, hi = spec["bounds"]
            if not lo < hi:
                bad(f"{where}.bounds", f"lower bound must be < upper bound, got [{lo}, {hi}]")
            if kinds[0] == "lognormal" and lo < 0:
                bad(f"{where}.bounds", f"a log-normal covariate is > 0, got lower bound {lo}")
        if kinds[0] == "uniform":
            lo_v, hi_v = params.get("low"), params.get("high")
            for c in categories.get(by, [None]) if by else [None]:
                lv = lo_v[c] if isinstance(lo_v, Mapping) and c is not None else lo_v
                hv = hi_v[c] if isinstance(hi_v, Mapping) and c is not None else hi_v
                if isinstance(lv, int | float) and isinstance(hv, int | float) and not lv < hv:
                    bad(f"{where}.uniform", f"low must be < high, got [{lv}, {hv}]")
    derived = d["population"]["derived"]
    for i, name in enumerate(derived):
        needs, _ = DERIVED[name]
        missing = [c for c in needs if c not in have]
        if missing:
            bad(f"population.derived[{i}]", f"{name} needs covariate(s) {missing}")
        if name in covs:
            bad(f"population.derived[{i}]", f"{name} is also a sampled covariate")
        sex_labels = categories.get("sex")
        if "sex" in needs and "sex" in have and set(sex_labels or ()) != {"F", "M"}:
            bad(
                f"population.derived[{i}]",
                f"{name} needs sex with categories F and M, "
                f"got {sex_labels if sex_labels is not None else 'a numeric covariate'}",
            )
    cov_names = set(covs) | set(derived) | set(resampled.columns) | set(from_data)
    # correlations, empirical distributions, inclusion/exclusion (with a pilot draw)
    out += covariate_problems(d, src, base, categories, pilot=not out)
    return out, categories, cov_names


_DISTRIBUTIONS = ("categorical", "normal", "lognormal", "uniform", "empirical", "constant")


def covariate_problems(
    data: Mapping[str, Any],
    source: str,
    base_dir: str | Path,
    categories: Mapping[str, Sequence[str]],
    *,
    pilot: bool,
) -> list[Problem]:
    """Problems of ``population.correlation``, ``empirical`` covariates, the resampled
    columns' names and the inclusion/exclusion criteria; then (if ``pilot`` and all is
    well) the acceptance of the criteria on
    :data:`~vtrial.population.covariates.PILOT_CANDIDATES` candidates.

    Parameters
    ----------
    data : mapping
        Study data (defaults filled).
    source : str
        The study file.
    base_dir : str or Path
        The study file's folder.
    categories : mapping
        Every categorical covariate and its labels (sampled and resampled).
    pilot : bool
        Run the pilot (only when the population section has no other problem).

    Returns
    -------
    list of Problem
    """
    out: list[Problem] = []

    def bad(where: str, msg: str) -> None:
        out.append(Problem(source, where, msg))

    pop = data["population"]
    covs: dict[str, Any] = pop.get("covariates", {})
    derived = list(pop.get("derived", []))
    res = resampled_columns(resample_of(pop), source, base_dir)
    for c in res.columns:
        if c in covs:
            bad(
                f"population.covariates.{c}",
                f"{c!r} is also a resampled column of population.resample",
            )
        if c in derived:
            bad("population.derived", f"{c!r} is also a resampled column of population.resample")
    for name, spec in covs.items():
        if "empirical" in spec:
            for key, msg in _empirical_problems(spec, categories):
                bad(f"population.covariates.{name}{key}", msg)
    for where, msg in _correlation_problems(pop, set(res.columns)):
        bad(where, msg)
    known = [*res.columns, *covs, *derived]
    n_criteria = 0
    for kind in ("inclusion", "exclusion"):
        for i, text in enumerate(pop.get(kind) or []):
            n_criteria += 1
            key = f"population.{kind}[{i}]"
            try:
                parse_expression(
                    text,
                    where=f"{source}: {key}",
                    known_names=known,
                    categorical=categories,
                    boolean=True,
                )
            except ExpressionError as exc:
                bad(key, f"{exc.reason} in expression {exc.expression!r}")
    if "min_acceptance" in pop and not n_criteria:
        bad(
            "population.min_acceptance",
            "applies to population.inclusion/exclusion, which are not set, "
            f"got {pop['min_acceptance']}",
        )
    if pilot and n_criteria and not out and not res.problems:
        sampler = CovariateSampler.from_data(data, base_dir, source)
        rate, each = sampler.pilot()
        if rate < sampler.min_acceptance:
            detail = ", ".join(f"{k} {each[k]:.2%}" for k in each)
            crit = [c.expression.source for c in sampler.criteria]
            bad(
                sampler.criteria_key(),
                f"the criteria {crit} accept {rate:.2%} of {PILOT_CANDIDATES} pilot candidates "
                f"({round(rate * PILOT_CANDIDATES)} eligible), below population.min_acceptance "
                f"{sampler.min_acceptance:g}; each alone keeps: {detail}",
            )
    return out


def _correlation_problems(pop: Mapping[str, Any], resampled: set[str]) -> list[tuple[str, str]]:
    """Problems of ``population.correlation`` as ``(key, message)``."""
    out: list[tuple[str, str]] = []
    corr: dict[str, float] = pop.get("correlation") or {}
    covs: dict[str, Any] = pop.get("covariates", {})
    seen: dict[frozenset[str], str] = {}
    for pair in corr:
        where = f"population.correlation.{pair}"
        a, b = pair.split("~")
        if a == b:
            out.append((where, f"a correlation needs two different covariates, got {pair}"))
        key = frozenset((a, b))
        if key in seen:
            out.append((where, f"repeats {seen[key]}"))
        seen.setdefault(key, pair)
        for x in dict.fromkeys((a, b)):
            kind = next((k for k in ("categorical", "constant") if k in covs.get(x, {})), None)
            if x in resampled:
                msg = (
                    f"{x} is resampled from population.resample.table (its correlations are "
                    "the table's); correlate sampled covariates only"
                )
                out.append((where, msg))
            elif x not in covs:
                out.append((where, f"{x} is not a sampled covariate {sorted(covs)}"))
            elif kind is not None:
                msg = f"{x} is {kind}; correlations are between continuous covariates"
                out.append((where, f"{msg} ({', '.join(CONTINUOUS)})"))
    if corr and not out:
        names = [k for k in covs if any(k in p.split("~") for p in corr)]
        w = np.linalg.eigvalsh(correlation_matrix(names, corr))
        if w.min() <= 1e-10:
            msg = (
                f"the correlation matrix of {names} must be positive definite, "
                f"smallest eigenvalue {w.min():.3g}, got {dict(corr)}"
            )
            out.append(("population.correlation", msg))
    return out


def _empirical_problems(
    spec: Mapping[str, Any], categories: Mapping[str, Sequence[str]]
) -> list[tuple[str, str]]:
    """Problems of an ``empirical`` covariate (key relative to the covariate)."""
    out: list[tuple[str, str]] = []
    emp: Mapping[str, Any] = spec["empirical"]
    here = ".empirical"
    if "bounds" in spec:
        out.append(
            (
                ".bounds",
                "an empirical covariate takes no 'bounds' (its values are its support), "
                f"got {spec['bounds']}",
            )
        )
    forms = [k for k in ("values", "quantiles") if k in emp]
    if len(forms) != 1:
        msg = "needs exactly one of 'values' (optional 'weights') or 'quantiles' (optional 'probs')"
        out.append((here, f"{msg}, got {forms}"))
        return out
    form = forms[0]
    extra = "probs" if form == "values" else "weights"
    if extra in emp:
        out.append(
            (
                f"{here}.{extra}",
                f"only applies with {'quantiles' if extra == 'probs' else 'values'}, "
                f"got {emp[extra]}",
            )
        )
        return out
    by = spec.get("by")
    mapped = [k for k, v in emp.items() if isinstance(v, Mapping)]
    keys: list[tuple[str, str | None]] = [("", None)]
    if mapped:
        cats = list(categories.get(by, [])) if by else []
        if not cats or any(set(emp[k]) != set(cats) for k in mapped):
            return out  # reported by the generic per-category check
        keys = [(f".{c}", c) for c in cats]
    other = "weights" if form == "values" else "probs"
    for suffix, cat in keys:
        main = list(pick(emp[form], cat))
        if other in emp:
            sec = list(pick(emp[other], cat))
            if len(sec) != len(main):
                out.append(
                    (
                        f"{here}.{other}{suffix}",
                        f"needs one entry per {form[:-1]} ({len(main)}), got {len(sec)}",
                    )
                )
                continue
        if form == "quantiles":
            if len(main) < 2:
                out.append((f"{here}.quantiles{suffix}", f"needs at least 2 quantiles, got {main}"))
                continue
            if any(b < a for a, b in itertools.pairwise(main)):
                out.append((f"{here}.quantiles{suffix}", f"must be non-decreasing, got {main}"))
            if other in emp:
                probs = list(pick(emp[other], cat))
                inc = all(b > a for a, b in itertools.pairwise(probs))
                if not inc or probs[0] != 0 or probs[-1] != 1:
                    out.append(
                        (
                            f"{here}.probs{suffix}",
                            f"must increase strictly from 0 to 1, got {probs}",
                        )
                    )
    return out
