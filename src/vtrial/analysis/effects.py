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
import warnings
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
#: columns of ``summary/subject_effects.parquet`` (twins of real patients, one row per
#: patient, arm and endpoint)
SUBJECT_EFFECT_COLUMNS = (
    "ID",
    "patient_id",
    "twin_status",
    "arm",
    "control",
    "endpoint",
    "kind",
    "better",
    "margin",
    "map",
    "n_draws",
    "n_excluded",
    "mean",
    "sd",
    *(f"p{p}" for p in PERCENTILES),
    "frac_benefit",
    "frac_no_change",
    "frac_harm",
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


def subject_effects(
    patients: pd.DataFrame,
    population: pd.DataFrame,
    *,
    arms: Sequence[str],
    control: str,
    endpoints: Mapping[str, EffectOptions],
    kinds: Mapping[str, str],
) -> pd.DataFrame:
    """Each real patient's individual effects with their uncertainty: the twins of a
    dataset's subjects (``population.dataset.parameters: twins``) in a twin crossover,
    replicate 0 the MAP twins, each other replicate a draw from every twin's posterior
    (:mod:`vtrial.population.twin_draws`).

    Parameters
    ----------
    patients, population : DataFrame
        The patients and population tables of the study (every replicate); the
        population gives each patient's ``ID`` and ``twin_status``.
    arms, control, endpoints, kinds
        As :func:`individual_effects`.

    Returns
    -------
    DataFrame
        One row per (patient, arm but the control, continuous or responder endpoint),
        patients in ``patient_id`` order, then arms and endpoints in study order;
        columns :data:`SUBJECT_EFFECT_COLUMNS`: ``map`` (``d = y(arm) - y(control)`` of
        the MAP twin, replicate 0; NaN if either solve failed), over the draws
        (replicates 1, 2, ...) ``n_draws`` (valid pairs), ``n_excluded`` (a failed
        solve or a non-finite value in either arm), ``mean``, ``sd`` (ddof 1),
        percentiles ``p5 … p95`` of ``d`` and the posterior probabilities
        ``frac_benefit``, ``frac_no_change``, ``frac_harm`` (endpoint keys ``better``
        and ``margin``, as in :func:`effect_shares`); NaN without draws.

    Raises
    ------
    DataError
        If a patient lacks a row for an arm or a replicate, or `control` is not one of
        `arms`.
    """
    pairs = paired_arms(patients, arms=arms, control=control)
    ctrl = pairs.control
    replicate = ctrl.index.get_level_values("replicate").to_numpy(dtype=np.int64)
    patient = ctrl.index.get_level_values("patient_id").to_numpy(dtype=np.int64)
    reps, row = np.unique(replicate, return_inverse=True)
    pids, col = np.unique(patient, return_inverse=True)
    if reps.size * pids.size != replicate.size or reps[0] != 0:
        raise DataError(
            f"patients: every patient needs a row in every replicate from 0, got "
            f"{replicate.size} rows of {pids.size} patients and replicates {reps.tolist()[:5]}"
        )
    first = population.drop_duplicates(_KEYS).set_index(_KEYS)
    first = first.loc[first.index.get_level_values("replicate") == int(reps[0])]
    first = first.droplevel("replicate").reindex(pids)
    ids = first["ID"].astype(str).to_numpy(dtype=object)
    status = (
        first["twin_status"].astype(str).to_numpy(dtype=object)
        if "twin_status" in first
        else np.full(pids.size, "", dtype=object)
    )
    names = [k for k in endpoints if kinds.get(k) in ("continuous", "binary")]
    frames = []
    for arm in pairs.arms:
        for name in names:
            ep = endpoints[name]
            d_all, valid = pairs.differences(arm, name)
            grid = np.full((reps.size, pids.size), np.nan)
            grid[row[valid], col[valid]] = d_all[valid]
            ok = np.zeros((reps.size, pids.size), dtype=bool)
            ok[row, col] = valid
            frames.append(_subject_rows(grid, ok, ep, arm, name, kinds[name]))
    n_cells = len(frames)
    out: dict[str, Any] = {
        "ID": np.tile(ids, n_cells),
        "patient_id": np.tile(pids, n_cells),
        "twin_status": np.tile(status, n_cells),
        "control": np.full(pids.size * n_cells, control, dtype=object),
    }
    for key in SUBJECT_EFFECT_COLUMNS:
        if key not in out:
            out[key] = np.concatenate([f[key] for f in frames]) if frames else []
    # patient-major: each patient's arms and endpoints together, in study order
    order = np.lexsort((np.repeat(np.arange(n_cells), pids.size), np.tile(pids, n_cells)))
    df = pd.DataFrame(out, columns=list(SUBJECT_EFFECT_COLUMNS)).iloc[order]
    df = df.reset_index(drop=True)
    for c in ("n_draws", "n_excluded", "patient_id"):
        df[c] = df[c].astype(np.int64)
    for c in ("ID", "twin_status", "arm", "control", "endpoint", "kind", "better"):
        df[c] = pd.Series([str(v) for v in df[c]], dtype=object)
    return df


def _subject_rows(
    grid: np.ndarray, ok: np.ndarray, ep: EffectOptions, arm: str, endpoint: str, kind: str
) -> dict[str, np.ndarray]:
    """The columns of :func:`subject_effects` for one (arm, endpoint): ``grid`` holds
    the effects ``(replicates, patients)`` (NaN where not valid), ``ok`` the valid pairs."""
    n_pat = grid.shape[1]
    draws, valid = grid[1:], ok[1:]
    n = valid.sum(axis=0)
    margin = float(ep.margin)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN
        mean = np.nanmean(draws, axis=0) if draws.shape[0] else np.full(n_pat, np.nan)
        sd = np.nanstd(draws, axis=0, ddof=1) if draws.shape[0] else np.full(n_pat, np.nan)
        q = (
            np.nanpercentile(draws, PERCENTILES, axis=0)
            if draws.shape[0]
            else np.full((len(PERCENTILES), n_pat), np.nan)
        )
        up = (draws > margin).sum(axis=0) / n
        down = (draws < -margin).sum(axis=0) / n
        same = (np.abs(draws) <= margin).sum(axis=0) / n
    sd = np.where(n > 1, sd, np.nan)
    if ep.better == "higher":
        benefit, harm = up, down
    elif ep.better == "lower":
        benefit, harm = down, up
    else:
        benefit = harm = np.full(n_pat, np.nan)
    cols: dict[str, np.ndarray] = {
        "arm": np.full(n_pat, arm, dtype=object),
        "endpoint": np.full(n_pat, endpoint, dtype=object),
        "kind": np.full(n_pat, kind, dtype=object),
        "better": np.full(n_pat, ep.better or "", dtype=object),
        "margin": np.full(n_pat, margin),
        "map": np.where(ok[0], grid[0], np.nan),
        "n_draws": n.astype(np.int64),
        "n_excluded": (~valid).sum(axis=0).astype(np.int64),
        "mean": np.where(n > 0, mean, np.nan),
        "sd": sd,
    }
    cols.update({f"p{p}": np.where(n > 0, q[i], np.nan) for i, p in enumerate(PERCENTILES)})
    cols["frac_benefit"] = np.where(n > 0, benefit, np.nan).astype(np.float64)
    cols["frac_no_change"] = np.where(n > 0, same, np.nan).astype(np.float64)
    cols["frac_harm"] = np.where(n > 0, harm, np.nan).astype(np.float64)
    return cols
