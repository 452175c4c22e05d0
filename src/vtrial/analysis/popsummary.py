"""Summary of a virtual population: covariate distributions per arm, acceptance rate.

:func:`population_summary` gives ``summary/population.parquet`` (written with a CSV
copy by :func:`vtrial.run.stages.run_sample_population`): for every arm and for all arms
together (``arm`` = :data:`ALL_ARMS`), over all replicates, each continuous
covariate's n, mean, SD and percentiles, each categorical covariate's category counts
and frequencies, and the acceptance rate of the inclusion/exclusion criteria.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from vtrial.analysis import stats
from vtrial.population.derived import DERIVED
from vtrial.population.resample import resampled_columns
from vtrial.population.spec import Categorical

if TYPE_CHECKING:
    from vtrial.trial.spec import TrialStudy

__all__ = [
    "ALL_ARMS",
    "PERCENTILES",
    "acceptance_record",
    "covariate_columns",
    "population_summary",
]

#: ``arm`` of the rows over all arms (not a valid arm name, so no clash)
ALL_ARMS = "(all)"
#: Percentiles of the continuous covariates (numpy ``linear`` interpolation)
PERCENTILES = stats.PERCENTILES
#: Columns of the summary, in order
COLUMNS = (
    "arm",
    "covariate",
    "kind",
    "category",
    "unit",
    "n",
    "count",
    "frequency",
    "mean",
    "sd",
    *(f"p{p}" for p in PERCENTILES),
    "min",
    "max",
    "candidates",
    "acceptance",
)


def covariate_columns(study: TrialStudy) -> list[tuple[str, str, str]]:
    """Covariates of the population table as ``(name, kind, unit)``.

    Resampled columns, sampled covariates (categoricals first, as in the table), then
    derived ones; ``kind`` is ``"categorical"`` or ``"continuous"``.
    """
    pop = study.population
    cats = study.population.categories
    res = resampled_columns(pop.resample, study.source, study.base_dir)
    covs = pop.covariates
    names = [*res.columns, *(k for k, c in covs.items() if isinstance(c, Categorical))]
    names += [k for k, c in covs.items() if not isinstance(c, Categorical)]
    out = []
    for name in names:
        unit = covs[name].unit if name in covs else None
        kind = "categorical" if name in cats else "continuous"
        out.append((name, kind, unit if unit is not None else ""))
    out += [(name, "continuous", DERIVED[name][1]) for name in pop.derived]
    return out


def acceptance_record(study: TrialStudy, candidates: Sequence[int]) -> dict[str, Any]:
    """Acceptance of the inclusion/exclusion criteria, for the Parquet footer and log.

    Parameters
    ----------
    study : TrialStudy
    candidates : sequence of int
        Candidates examined per replicate (:func:`vtrial.population.sampling.sample_population`).

    Returns
    -------
    dict
        ``inclusion`` and ``exclusion`` (the criteria), ``candidates`` and
        ``acceptance`` per replicate, ``candidates_total`` and ``acceptance_total``
        (all replicates: eligible / candidates).
    """
    pop = study.population
    size = study.size
    total = int(sum(candidates))
    return {
        "inclusion": list(pop.inclusion),
        "exclusion": list(pop.exclusion),
        "candidates": [int(c) for c in candidates],
        "acceptance": [size / c if c else float("nan") for c in candidates],
        "candidates_total": total,
        "acceptance_total": size * len(candidates) / total if total else float("nan"),
    }


def population_summary(
    study: TrialStudy, pop: pd.DataFrame, candidates: Sequence[int]
) -> pd.DataFrame:
    """Covariate distributions per arm and over all arms, all replicates pooled.

    Parameters
    ----------
    study : TrialStudy
    pop : pandas.DataFrame
        The population table (:func:`vtrial.population.sampling.sample_population`).
    candidates : sequence of int
        Candidates examined per replicate.

    Returns
    -------
    pandas.DataFrame
        One row per (arm, continuous covariate) and per (arm, categorical covariate,
        category); arms in study order, then :data:`ALL_ARMS`. Columns :data:`COLUMNS`:
        ``arm``, ``covariate``, ``kind`` (``continuous``/``categorical``),
        ``category`` (null for continuous), ``unit``, ``n`` (patient rows of the
        arm), ``count`` (non-missing values, or patients in the category),
        ``frequency`` (count / n; NaN for continuous), ``mean``, ``sd`` (ddof=1, NaN
        if fewer than 2 values), ``p5`` … ``p95``, ``min``, ``max`` (NaN for
        categorical), ``candidates`` (all replicates) and ``acceptance`` (patients /
        candidates over all replicates; 1 without criteria). A twin crossover study
        has a row per patient and arm: each arm's ``n`` is the whole population, and
        :data:`ALL_ARMS` counts each patient once.
    """
    rec = acceptance_record(study, candidates)
    cols = covariate_columns(study)
    arm_values = pop["arm"].to_numpy()
    groups = [(a, arm_values == a) for a in study.arm_names]
    # each patient once (a twin crossover study has a row per patient and arm)
    groups.append((ALL_ARMS, ~pop.duplicated(["replicate", "patient_id"]).to_numpy()))
    cats = study.population.categories
    rows: list[dict[str, Any]] = []
    for arm, mask in groups:
        n = int(mask.sum())
        for name, kind, unit in cols:
            base: dict[str, Any] = {"arm": arm, "covariate": name, "kind": kind, "unit": unit}
            base["n"] = n
            values = pop[name].to_numpy()[mask]
            if kind == "categorical":
                labels = np.asarray(values, dtype=object)
                for c in cats[name]:
                    count = int((labels == c).sum())
                    freq = count / n if n else float("nan")
                    rows.append({**base, "category": c, "count": count, "frequency": freq})
                continue
            x = np.asarray(values, dtype=np.float64)
            x = x[np.isfinite(x)]
            row = {**base, "category": None, "count": int(x.size)}
            if x.size:
                row.update(mean=float(x.mean()), min=float(x.min()), max=float(x.max()))
                pct = np.percentile(x, PERCENTILES)
                row.update({f"p{p}": float(v) for p, v in zip(PERCENTILES, pct, strict=True)})
            if x.size >= 2:
                row["sd"] = float(x.std(ddof=1))
            rows.append(row)
    df = pd.DataFrame(rows, columns=list(COLUMNS[:-2]))
    for c in ("n", "count"):
        df[c] = df[c].astype(np.int64)
    for c in ("frequency", "mean", "sd", *(f"p{p}" for p in PERCENTILES), "min", "max"):
        df[c] = df[c].astype(np.float64)
    df["candidates"] = np.int64(rec["candidates_total"])
    df["acceptance"] = float(rec["acceptance_total"])
    return df
