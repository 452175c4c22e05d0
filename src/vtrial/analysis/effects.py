"""Individual treatment effects of a twin crossover study.

With ``study.design: twin_crossover`` every virtual patient is simulated under every
arm, so the effect of an arm on one patient is observed directly: for an endpoint
``y`` the **individual effect** of arm ``a`` is ``d_i = y_i(a) - y_i(control)`` (a
difference in the endpoint's unit; for a responder endpoint -1, 0 or 1). This module
summarises the distribution of ``d`` and which covariates predict it, per replicate
and over all replicates pooled.

Direction: the endpoint key ``better`` (``lower`` or ``higher``) says which sign is a
benefit; ``margin`` (>= 0, default 0) is the change that does not count: a patient
*benefits* if ``d < -margin`` (``better: lower``) or ``d > margin`` (``better:
higher``), is *harmed* by the opposite, and has *no change* if ``|d| <= margin``.
Without ``better`` the benefit and harm fractions are NaN.

Predictors: an ordinary least-squares regression of ``d`` on the sampled covariates
(numeric ones as they are, a categorical one as indicators of each category but the
first, constant ones left out), with an intercept; the derived covariates (functions
of the sampled ones, hence collinear with them) are left out of the regression. Every
covariate, derived ones included, also gets its Spearman rank correlation with ``d``.

Pairs in which either solve failed or either value is not finite are excluded (and
counted); categorical endpoints (``best_response``) are not summarised (their
responders are).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from vtrial.analysis import stats
from vtrial.errors import DataError
from vtrial.trial.spec import EffectOptions

#: percentiles (%) of the individual effects
PERCENTILES = stats.PERCENTILES
#: columns of ``summary/individual_effects.parquet``
EFFECT_COLUMNS = (
    "replicate",
    "arm",
    "control",
    "endpoint",
    "kind",
    "better",
    "margin",
    "n",
    "n_excluded",
    "mean",
    "sd",
    *(f"p{p}" for p in PERCENTILES),
    "frac_benefit",
    "frac_no_change",
    "frac_harm",
    "r_squared",
    "n_terms",
)
#: columns of ``summary/individual_predictors.parquet``
PREDICTOR_COLUMNS = (
    "replicate",
    "arm",
    "endpoint",
    "covariate",
    "in_regression",
    "coef",
    "std_coef",
    "p_value",
    "spearman_rho",
    "spearman_p",
)
_KEYS = ["replicate", "patient_id"]


def covariate_terms(
    population: pd.DataFrame,
    covariates: Sequence[str],
    derived: Sequence[str],
    categories: Mapping[str, Sequence[str]] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Regression terms and Spearman-only terms of the covariates of some patients.

    Parameters
    ----------
    population : DataFrame
        One row per patient with the covariate columns.
    covariates : sequence of str
        The covariates of the regression, in order (the study's sampled covariates but
        the constant ones, then its resampled columns).
    derived : sequence of str
        ``population.derived``.
    categories : mapping of str to sequence of str, optional
        Categorical covariates -> their categories, in study order
        (:attr:`vtrial.population.spec.Population.categories`).

    Returns
    -------
    regression : dict of str to ndarray
        The covariates: numeric ones as float, categorical ones (and text columns,
        their categories sorted) as 0/1 indicators ``<name>=<category>`` of every
        category but the first (the reference).
    spearman_only : dict of str to ndarray
        Derived covariates (float).
    """
    cats = categories or {}
    reg: dict[str, np.ndarray] = {}
    for name in covariates:
        if name not in population:
            continue
        col = population[name]
        if name in cats or not pd.api.types.is_numeric_dtype(col):
            levels = [str(c) for c in cats[name]] if name in cats else sorted({str(v) for v in col})
            text = col.astype(str).to_numpy()
            for level in levels[1:]:
                reg[f"{name}={level}"] = (text == level).astype(np.float64)
        else:
            reg[name] = col.to_numpy(dtype=np.float64)
    only = {k: population[k].to_numpy(dtype=np.float64) for k in derived if k in population}
    return reg, only


def _regression(
    d: np.ndarray, x: Mapping[str, np.ndarray]
) -> tuple[float, int, dict[str, tuple[float, float, float]]]:
    """OLS of ``d`` on the columns of ``x`` (plus an intercept).

    Returns R², the number of terms used and, per term, (coefficient per unit,
    standardized coefficient = coefficient · SD(x) / SD(d), two-sided t-test p-value);
    NaN where undefined (too few pairs, constant ``d``, rank-deficient design).
    """
    nan3 = (math.nan, math.nan, math.nan)
    n = d.size
    sd_x = {k: float(np.std(v, ddof=1)) if n > 1 else 0.0 for k, v in x.items()}
    used = [k for k, s in sd_x.items() if s > 0 and np.isfinite(s)]
    out: dict[str, tuple[float, float, float]] = dict.fromkeys(x, nan3)
    k = len(used)
    sd_d = float(np.std(d, ddof=1)) if n > 1 else 0.0
    if n <= k + 1 or not sd_d > 0:
        return math.nan, k, out
    z = np.column_stack([np.ones(n)] + [(x[c] - x[c].mean()) / sd_x[c] for c in used])
    beta, _, rank, _ = np.linalg.lstsq(z, d, rcond=None)
    resid = d - z @ beta
    ssr = float(resid @ resid)
    sst = float(((d - d.mean()) ** 2).sum())
    r2 = 1.0 - ssr / sst
    if rank < k + 1:
        for j, c in enumerate(used, start=1):
            out[c] = (float(beta[j]) / sd_x[c], float(beta[j]) / sd_d, math.nan)
        return r2, k, out
    dof = n - k - 1
    cov = ssr / dof * np.linalg.inv(z.T @ z)
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = beta / se
    p = 2.0 * sps.t.sf(np.abs(t), dof)
    for j, c in enumerate(used, start=1):
        out[c] = (float(beta[j]) / sd_x[c], float(beta[j]) / sd_d, float(p[j]))
    return r2, k, out


def _spearman(x: np.ndarray, d: np.ndarray) -> tuple[float, float]:
    """Spearman rho and two-sided p-value (NaN if fewer than 3 pairs or constant)."""
    if d.size < 3 or np.ptp(x) == 0 or np.ptp(d) == 0:
        return math.nan, math.nan
    res = sps.spearmanr(x, d)
    return float(res.statistic), float(res.pvalue)


@dataclass(frozen=True)
class PairedArms:
    """The rows of a twin crossover patients table paired by patient.

    Attributes
    ----------
    control : DataFrame
        Control-arm rows indexed by (replicate, patient_id), sorted.
    arms : dict
        Every other arm -> (its rows in the order of `control`, boolean array: both
        solves of the pair succeeded).
    """

    control: pd.DataFrame
    arms: dict[str, tuple[pd.DataFrame, np.ndarray]]

    def differences(self, arm: str, endpoint: str) -> tuple[np.ndarray, np.ndarray]:
        """Individual effects ``d = y(arm) - y(control)`` of `endpoint` (float64, one
        per patient, in the order of `control`) and which pairs are valid (both solves
        succeeded, ``d`` finite)."""
        trt, ok = self.arms[arm]
        y_arm = trt[endpoint].to_numpy(dtype=np.float64, na_value=np.nan)
        y_ctrl = self.control[endpoint].to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            d = y_arm - y_ctrl
        return d, ok & np.isfinite(d)


def paired_arms(patients: pd.DataFrame, *, arms: Sequence[str], control: str) -> PairedArms:
    """Pair every arm's rows with the control arm's, patient by patient.

    Raises
    ------
    DataError
        If `control` is not one of `arms`, or an arm lacks (or repeats) a patient of
        the control arm.
    """
    if control not in arms:
        raise DataError(f"control arm {control!r} is not one of the arms {list(arms)}")
    ctrl = patients[patients["arm"] == control].set_index(_KEYS).sort_index()
    if not ctrl.index.is_unique:
        raise DataError(f"patients: more than one row per patient in arm {control!r}")
    ok_c = ctrl["solver_status"].to_numpy(dtype=object) == "ok"
    out: dict[str, tuple[pd.DataFrame, np.ndarray]] = {}
    for arm in arms:
        if arm == control:
            continue
        trt = patients[patients["arm"] == arm].set_index(_KEYS)
        if not trt.index.is_unique or len(trt) != len(ctrl) or not trt.index.isin(ctrl.index).all():
            raise DataError(
                f"patients: arm {arm!r} must have exactly one row for each of the "
                f"{len(ctrl)} patients of the control arm {control!r}, got {len(trt)}"
            )
        trt = trt.reindex(ctrl.index)
        out[arm] = (trt, ok_c & (trt["solver_status"].to_numpy(dtype=object) == "ok"))
    return PairedArms(ctrl, out)


def individual_effects(
    patients: pd.DataFrame,
    population: pd.DataFrame,
    *,
    arms: Sequence[str],
    control: str,
    endpoints: Mapping[str, EffectOptions],
    kinds: Mapping[str, str],
    covariates: Sequence[str],
    derived: Sequence[str] = (),
    categories: Mapping[str, Sequence[str]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Distribution and covariate predictors of the individual effects.

    Parameters
    ----------
    patients : DataFrame
        Patients table of a twin crossover study: a row per (replicate, patient_id,
        arm) with ``solver_status`` and the endpoint columns.
    population : DataFrame
        Population table (``replicate``, ``patient_id`` and the covariates; the rows
        of a patient share them).
    arms : sequence of str
        Arms in study order; every arm but `control` is compared with `control`.
    control : str
        The control arm.
    endpoints : mapping of str to EffectOptions
        Endpoint name -> its ``better`` and ``margin``
        (:func:`vtrial.trial.spec.effect_options` of the study's endpoints).
    kinds : mapping of str to str
        Endpoint kinds (:meth:`vtrial.study.config.Study.endpoint_kinds`); ``categorical``
        endpoints are skipped.
    covariates : sequence of str
        The covariates of the regression (the sampled ones but the constant ones, then
        the resampled columns; see :func:`covariate_terms`).
    derived : sequence of str
        ``population.derived`` of the study.
    categories : mapping of str to sequence of str, optional
        Categorical covariates -> their categories, in study order.

    Returns
    -------
    effects : DataFrame
        A row per (replicate, arm, endpoint), replicates ascending then all replicates
        pooled (``replicate`` null), columns :data:`EFFECT_COLUMNS`: ``n`` pairs used,
        ``n_excluded`` (a failed solve or a non-finite value in either arm), ``mean``,
        ``sd`` (ddof 1), percentiles ``p5 … p95`` (linear interpolation) of ``d``,
        ``frac_benefit``, ``frac_no_change``, ``frac_harm`` (see the module docstring),
        ``r_squared`` of the covariate regression and ``n_terms`` (its terms, not
        counting the intercept).
    predictors : DataFrame
        A row per (replicate, arm, endpoint, covariate term), columns
        :data:`PREDICTOR_COLUMNS`: ``coef`` (change of ``d`` per unit of the covariate,
        others held fixed; for an indicator the shift from the reference category),
        ``std_coef`` (``coef · SD(covariate) / SD(d)``), ``p_value`` (t-test of the
        coefficient), ``spearman_rho`` and ``spearman_p``; ``in_regression`` is False
        for derived covariates (Spearman only).

    Raises
    ------
    DataError
        If a patient lacks a row for an arm, or `control` is not one of `arms`.
    """
    pairs = paired_arms(patients, arms=arms, control=control)
    ctrl = pairs.control
    pop = population.drop_duplicates(_KEYS).set_index(_KEYS).reindex(ctrl.index)
    reg_terms, only_terms = covariate_terms(pop.reset_index(), covariates, derived, categories)
    replicate = ctrl.index.get_level_values("replicate").to_numpy()
    reps = [int(r) for r in np.unique(replicate)]
    groups: list[tuple[int | None, np.ndarray]] = [(r, replicate == r) for r in reps]
    groups.append((None, np.ones(replicate.size, dtype=bool)))
    eff_rows: list[dict[str, Any]] = []
    pred_rows: list[dict[str, Any]] = []
    names = [k for k in endpoints if kinds.get(k) in ("continuous", "binary")]
    for arm in pairs.arms:
        for name in names:
            ep = endpoints[name]
            d_all, valid = pairs.differences(arm, name)
            for rep, member in groups:
                use = member & valid
                d = d_all[use]
                row = _distribution(d, ep)
                r2, n_terms, fits = _regression(d, {k: v[use] for k, v in reg_terms.items()})
                row.update(
                    replicate=rep,
                    arm=arm,
                    control=control,
                    endpoint=name,
                    kind=kinds[name],
                    n_excluded=int((member & ~valid).sum()),
                    r_squared=r2,
                    n_terms=n_terms,
                )
                eff_rows.append(row)
                for term, x in [*reg_terms.items(), *only_terms.items()]:
                    coef, std_coef, p = fits.get(term, (math.nan, math.nan, math.nan))
                    rho, rho_p = _spearman(x[use], d)
                    pred_rows.append(
                        {
                            "replicate": rep,
                            "arm": arm,
                            "endpoint": name,
                            "covariate": term,
                            "in_regression": term in reg_terms,
                            "coef": coef,
                            "std_coef": std_coef,
                            "p_value": p,
                            "spearman_rho": rho,
                            "spearman_p": rho_p,
                        }
                    )
    return _frame(eff_rows, EFFECT_COLUMNS), _frame(pred_rows, PREDICTOR_COLUMNS)


def _distribution(d: np.ndarray, ep: EffectOptions) -> dict[str, Any]:
    """n, mean, SD, percentiles and benefit/no-change/harm fractions of ``d``."""
    n = int(d.size)
    better = ep.better or ""
    margin = float(ep.margin)
    row: dict[str, Any] = {"n": n, "better": better, "margin": margin}
    row["mean"] = float(d.mean()) if n else math.nan
    row["sd"] = float(d.std(ddof=1)) if n > 1 else math.nan
    q = np.percentile(d, PERCENTILES) if n else np.full(len(PERCENTILES), math.nan)
    row.update({f"p{p}": float(v) for p, v in zip(PERCENTILES, q, strict=True)})
    shares = effect_shares(d, better, margin)
    row["frac_benefit"], row["frac_no_change"], row["frac_harm"] = shares
    return row


def effect_shares(d: np.ndarray, better: str, margin: float) -> tuple[float, float, float]:
    """Fractions of the individual effects ``d`` that are a benefit, no change
    (``|d| <= margin``) and a harm, the direction given by ``better`` (``lower`` or
    ``higher``; otherwise benefit and harm are NaN). All NaN when ``d`` is empty."""
    if d.size == 0:
        return math.nan, math.nan, math.nan
    up, down = float((d > margin).mean()), float((d < -margin).mean())
    same = float((np.abs(d) <= margin).mean())
    if better == "higher":
        return up, same, down
    if better == "lower":
        return down, same, up
    return math.nan, same, math.nan


def _frame(rows: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    """Rows as a table: replicate nullable Int32 (null = pooled), replicates ascending
    then pooled, text as object (str), counts int64, numbers float64."""
    reps = [row["replicate"] for row in rows]
    df = pd.DataFrame(rows, columns=list(columns))
    df["replicate"] = pd.array([pd.NA if r is None else int(r) for r in reps], dtype="Int32")
    order = sorted(range(len(reps)), key=lambda i: (reps[i] is None, reps[i] or 0))
    df = df.iloc[order].reset_index(drop=True)
    for c in df.columns:
        if c in ("n", "n_excluded", "n_terms"):
            df[c] = df[c].astype(np.int64)
        elif c == "in_regression":
            df[c] = df[c].astype(bool)
        elif c in ("arm", "control", "endpoint", "kind", "better", "covariate"):
            df[c] = pd.Series([str(v) for v in df[c]], dtype=object)
        elif c != "replicate":
            df[c] = df[c].astype(np.float64)
    return df
