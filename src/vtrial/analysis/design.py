"""Summary tables of the trial design, for the aggregate stage.

The individual treatment effects of a twin crossover study
(:func:`vtrial.analysis.effects.individual_effects`; with the twins of a dataset's real
patients, ``population.dataset.parameters: twins``, also each patient's own effects
with their uncertainty, :func:`vtrial.analysis.effects.subject_effects`) and the
parameter draws of ``study.uncertainty``
(:func:`vtrial.population.uncertainty.uncertainty_table`), and their lines in
``vtrial describe``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from vtrial.population.design import is_twin
from vtrial.population.resample import resampled_columns
from vtrial.population.spec import Constant
from vtrial.trial.spec import effect_options

if TYPE_CHECKING:
    from vtrial.trial.spec import TrialStudy


def summary_tables(study: TrialStudy) -> list[str]:
    """Names of the design's extra summary tables (``summary/<name>.parquet``):
    ``individual_effects`` and ``individual_predictors`` for a twin crossover study,
    with ``subject_effects`` when its patients are real patients' twins
    (``population.dataset.parameters: twins``), ``uncertainty`` for a study with
    ``study.uncertainty``."""
    names = ["individual_effects", "individual_predictors"] if is_twin(study) else []
    if is_twin(study) and _real_twins(study):
        names.append("subject_effects")
    if study.uncertainty.active:
        names.append("uncertainty")
    return names


def design_tables(
    study: TrialStudy, patients: pd.DataFrame, population: pd.DataFrame | None
) -> dict[str, pd.DataFrame]:
    """The design's summary tables (:func:`summary_tables`), for the aggregate stage.

    Parameters
    ----------
    study : TrialStudy
    patients : DataFrame
        The whole patients table.
    population : DataFrame or None
        The population table (its covariates); required for a twin crossover study.

    Returns
    -------
    dict of str to DataFrame
        ``individual_effects`` and ``individual_predictors``
        (:func:`vtrial.analysis.effects.individual_effects`) for a twin crossover study
        (and ``subject_effects``, :func:`vtrial.analysis.effects.subject_effects`, for
        the twins of real patients),
        ``uncertainty`` (:func:`vtrial.population.uncertainty.uncertainty_table`) with
        ``study.uncertainty``; empty otherwise.
    """
    from vtrial.analysis.effects import (  # statistics only where needed
        individual_effects,
        subject_effects,
    )
    from vtrial.population.uncertainty import uncertainty_table

    out: dict[str, pd.DataFrame] = {}
    names = summary_tables(study)
    if "individual_effects" in names:
        if population is None:
            raise ValueError("population: required for a twin crossover study")
        control = study.control_arm
        assert control is not None  # validation requires it for twin_crossover
        pop = study.population
        # the regression's covariates: sampled ones (constants left out), resampled ones
        covs = [k for k, c in pop.covariates.items() if not isinstance(c, Constant)]
        resampled = resampled_columns(pop.resample, study.source, study.base_dir).columns
        covs += [k for k in resampled if k not in pop.covariates]
        covs += _dataset_covariates(study)
        effects, predictors = individual_effects(
            patients,
            population,
            arms=study.arm_names,
            control=control,
            endpoints={k: effect_options(v) for k, v in study.endpoints.items()},
            kinds=study.endpoint_kinds(),
            covariates=covs,
            derived=list(pop.derived),
            categories=pop.categories,
        )
        out["individual_effects"] = effects
        out["individual_predictors"] = predictors
        if "subject_effects" in names:
            out["subject_effects"] = subject_effects(
                patients,
                population,
                arms=study.arm_names,
                control=control,
                endpoints={k: effect_options(v) for k, v in study.endpoints.items()},
                kinds=study.endpoint_kinds(),
            )
    if "uncertainty" in names:
        out["uncertainty"] = uncertainty_table(study)
    return out


def _real_twins(study: TrialStudy) -> bool:
    """Whether the patients are the twins of a dataset's real patients."""
    ds = study.population.dataset
    return ds is not None and ds.parameters == "twins"


def _dataset_covariates(study: TrialStudy) -> list[str]:
    """The baseline covariates of a dataset's subjects (every covariate column but the
    arm column), for the individual-effect regression; none without a dataset."""
    ds = study.population.dataset
    subjects = study.subjects
    if ds is None or subjects is None or subjects.dataset is None:
        return []
    return [c for c in subjects.dataset.covariates if c != ds.arm_column]


#: least R^2 of the individual-effect regression for ``vtrial describe`` to name its
#: strongest covariate (below it, the covariates explain too little to name one)
MIN_R2_PREDICTOR = 0.1


def describe_lines(summary_dir: Path) -> list[str]:
    """Lines of ``vtrial describe`` for the design's tables found in ``summary_dir``:
    the individual effects (all replicates pooled), each real patient's effects (twins
    of a dataset's subjects) and the parameter draws."""
    lines: list[str] = []
    path = summary_dir / "individual_effects.parquet"
    if path.exists():
        eff = pd.read_parquet(path)
        eff = eff[eff["replicate"].isna()]
        pred_path = summary_dir / "individual_predictors.parquet"
        pred = pd.read_parquet(pred_path) if pred_path.exists() else None
        control = eff["control"].iloc[0] if len(eff) else ""
        lines += [
            "",
            f"individual effects vs {control} (twin crossover: every patient under every "
            "arm; replicates pooled):",
        ]
        for _, r in eff.iterrows():
            text = (
                f"  {r['arm']} {r['endpoint']}: mean {r['mean']:.3g} (SD {r['sd']:.3g}), "
                f"5th to 95th percentile {r['p5']:.3g} to {r['p95']:.3g}"
            )
            if r["better"]:
                text += (
                    f"; benefit {100 * r['frac_benefit']:.1f} %, harm {100 * r['frac_harm']:.1f} %"
                )
            if pred is not None and np.isfinite(r["r_squared"]):
                p = pred[
                    pred["replicate"].isna()
                    & (pred["arm"] == r["arm"])
                    & (pred["endpoint"] == r["endpoint"])
                    & pred["in_regression"]
                ].dropna(subset=["std_coef"])
                text += f"; R^2 {r['r_squared']:.2f}"
                if len(p) and r["r_squared"] >= MIN_R2_PREDICTOR:
                    top = p.loc[p["std_coef"].abs().idxmax()]
                    text += f" (strongest: {top['covariate']}, std coef {top['std_coef']:+.2f})"
                elif len(p):
                    text += " (the covariates explain little of it: no predictor named)"
            lines.append(text)
    lines += _subject_lines(summary_dir / "subject_effects.parquet")
    path = summary_dir / "uncertainty.parquet"
    if path.exists():
        unc = pd.read_parquet(path)
        n_rep = unc["replicate"].nunique()
        lines += ["", f"parameter uncertainty ({n_rep} replicate draws; median, 5th to 95th):"]
        diag = unc[(unc["quantity"] == "theta") | ~unc["parameter"].str.contains("~")]
        for (quantity, name), g in diag.groupby(["quantity", "parameter"], sort=False):
            q = np.percentile(g["value"], [50, 5, 95])
            lines.append(
                f"  {quantity} {name}: nominal {g['nominal'].iloc[0]:.4g}, "
                f"drawn {q[0]:.4g} ({q[1]:.4g} to {q[2]:.4g})"
            )
    return lines


def _subject_lines(path: Path) -> list[str]:
    """``vtrial describe`` on ``summary/subject_effects.parquet``: per arm and
    continuous endpoint, the patients' MAP effects and how uncertain each one is."""
    if not path.exists():
        return []
    eff = pd.read_parquet(path)
    eff = eff[eff["kind"] == "continuous"]
    if not len(eff):
        return []
    n_pat = eff["patient_id"].nunique()
    draws = int(eff["n_draws"].max())
    lines = [
        "",
        f"each patient's twin, effect vs {eff['control'].iloc[0]} ({n_pat} patients; MAP, "
        f"and {draws} posterior draws each: median SD and 90 % intervals):",
    ]
    for (arm, endpoint), g in eff.groupby(["arm", "endpoint"], sort=False):
        m = g["map"].to_numpy(dtype=np.float64)
        m = m[np.isfinite(m)]
        if not m.size:
            lines.append(f"  {arm} {endpoint}: no patient simulated")
            continue
        text = (
            f"  {arm} {endpoint}: MAP effect median {np.median(m):.3g} "
            f"({m.min():.3g} to {m.max():.3g} over patients)"
        )
        sd = g["sd"].to_numpy(dtype=np.float64)
        if np.isfinite(sd).any():
            drawn = int(np.isfinite(g["p5"].to_numpy(dtype=np.float64)).sum())
            above = int((g["p5"] > 0).sum())
            below = int((g["p95"] < 0).sum())
            text += (
                f"; posterior SD median {np.nanmedian(sd):.3g}; 90 % interval above 0 for "
                f"{above}, below 0 for {below}, including 0 for {drawn - above - below}"
            )
        lines.append(text)
    return lines
