"""Summary tables of the trial design, for the aggregate stage.

The individual treatment effects of a twin crossover study
(:func:`vtrial.analysis.effects.individual_effects`) and the parameter draws of
``study.uncertainty`` (:func:`vtrial.population.uncertainty.uncertainty_table`), and
their lines in ``vtrial describe``.
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
    ``uncertainty`` for a study with ``study.uncertainty``."""
    names = ["individual_effects", "individual_predictors"] if is_twin(study) else []
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
        (:func:`vtrial.analysis.effects.individual_effects`) for a twin crossover study,
        ``uncertainty`` (:func:`vtrial.population.uncertainty.uncertainty_table`) with
        ``study.uncertainty``; empty otherwise.
    """
    from vtrial.analysis.effects import individual_effects  # statistics only where needed
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
    if "uncertainty" in names:
        out["uncertainty"] = uncertainty_table(study)
    return out


#: least R^2 of the individual-effect regression for ``vtrial describe`` to name its
#: strongest covariate (below it, the covariates explain too little to name one)
MIN_R2_PREDICTOR = 0.1


def describe_lines(summary_dir: Path) -> list[str]:
    """Lines of ``vtrial describe`` for the design's tables found in ``summary_dir``:
    the individual effects (all replicates pooled) and the parameter draws."""
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
