"""Virtual populations: covariates, arm allocation and individual parameters.

Each virtual patient (a "digital twin") is a row: ``replicate``, ``patient_id``
(1-based within its replicate trial), ``arm``, sampled covariates, derived covariates,
random effects ``eta_<P>`` and the individual value of every model parameter.

All draws are keyed (:mod:`vtrial.infra.rng`): covariates by ``covariate:<name>``, random
effects by ``eta``, allocation by ``allocation`` (:mod:`vtrial.population.design`), the
population parameters of a replicate by ``uncertainty:theta`` and ``uncertainty:omega``
(:mod:`vtrial.population.uncertainty`); so a patient's covariates and parameters do not depend on
the arms of the study, on the other replicates or on how the later stages are sharded.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import special

from vtrial.errors import ExpressionError, Problem
from vtrial.infra.rng import keyed_uniforms
from vtrial.model.expressions import evaluate, parse_expression
from vtrial.population.covariates import covariate_sampler
from vtrial.population.dataset import arm_labels, fit_etas, subject_covariates
from vtrial.population.derived import derive_covariates
from vtrial.population.design import allocate, twin_rows
from vtrial.population.twin_draws import subject_estimates, twin_draws
from vtrial.population.uncertainty import (
    covariance_root,
    omega_matrix,
    replicate_omega,
    typical_values,
)

if TYPE_CHECKING:
    from vtrial.model.spec import Model
    from vtrial.population.spec import PopulationStudy


def individual_parameters(
    study: PopulationStudy,
    covariates: Mapping[str, np.ndarray],
    replicate: int,
    *,
    random: bool = True,
    categories: Mapping[str, Sequence[str]] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Individual parameter values and random effects of one replicate.

    ``P_i = TV · f(covariates_i)`` transformed by the random effect: log-normal
    ``P_i = TV_i · exp(eta)``, normal ``TV_i + eta``, logit ``expit(logit(TV_i) + eta)``,
    with ``eta ~ N(0, OMEGA)`` (Cholesky of OMEGA; eigen-square-root if singular).
    ``random=False``: the typical values ``TV_i`` and no random effects.
    ``categories``: categorical covariates -> labels (default: the population's).
    """
    n = study.size
    params = typical_parameters(study, covariates, replicate, n, categories=categories)
    var = study.variability
    names = list(var.omega_names)
    etas: dict[str, np.ndarray] = {}
    if names and random:
        om = replicate_omega(study, replicate)  # OMEGA_r with study.uncertainty
        z = special.ndtri(keyed_uniforms(study.seed, "eta", replicate, n, len(names)))
        eta = z @ covariance_root(om).T
        for j, name in enumerate(names):
            etas[name] = eta[:, j]
            params[name] = apply_effect(params[name], eta[:, j], var.distribution(name))
    return params, etas


def typical_parameters(
    study: PopulationStudy,
    covariates: Mapping[str, np.ndarray],
    replicate: int,
    n: int,
    *,
    categories: Mapping[str, Sequence[str]] | None = None,
    nominal: bool = False,
) -> dict[str, np.ndarray]:
    """Typical value ``TV · f(covariates)`` of every model parameter for ``n``
    covariate rows (patients, or a dataset's occasions), with the replicate's THETA
    (``nominal``: the model's THETA, ``study.uncertainty`` not drawn; an estimator's
    prior)."""
    model = study.model
    var = study.variability
    cats = study.population.categories if categories is None else categories
    params: dict[str, np.ndarray] = {}
    if nominal:
        typical = {k: float(p.value) for k, p in model.parameters.items()}
    else:
        typical = typical_values(study, replicate)  # THETA_r with study.uncertainty
    for name in model.parameters:
        tv = np.full(n, typical[name])
        cov_expr = var.covariate_models.get(name)
        if cov_expr is not None:
            expr = parse_expression(
                cov_expr,
                where=f"{study.source}: model.parameters.{name}.covariates",
                known_names=list(covariates),
                categorical=cats,
            )
            tv = tv * evaluate(expr, covariates, size=n)
        params[name] = tv
    return params


def covariate_names(study: PopulationStudy) -> dict[str, frozenset[str]]:
    """Parameter -> the covariates its covariate model reads (parameters with one)."""
    return {
        name: parse_expression(text, where=f"model.parameters.{name}.covariates").names
        for name, text in study.variability.covariate_models.items()
    }


def occasion_effects(study: PopulationStudy, replicate: int) -> dict[str, np.ndarray]:
    """Inter-occasion random effects ``kappa_<P>_<k>`` (occasion k = 0, 1, ...).

    Independent normal draws with variance ``model.iov.omega[P]`` for each of the
    study's occasions (the most any arm has), keyed by ``iov``: a patient has the same
    kappas whatever arm, shard or chunk it lands in.
    """
    iov = study.variability.iov
    if not iov:
        return {}
    n_occ = study.events().n_occ
    names = list(iov)
    z = special.ndtri(keyed_uniforms(study.seed, "iov", replicate, study.size, n_occ * len(names)))
    out = {}
    for j, name in enumerate(names):
        sd = np.sqrt(iov[name])
        for k in range(n_occ):
            out[f"kappa_{name}_{k}"] = sd * z[:, j * n_occ + k]
    return out


def occasion_parameters(study: PopulationStudy, pop: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-occasion values, shape (n, n_occ), of the parameters with IOV.

    The individual value ``P_i`` (population column) is transformed like its IIV:
    log-normal ``P_i exp(kappa)``, normal ``P_i + kappa``, logit
    ``expit(logit(P_i) + kappa)``.
    """
    var = study.variability
    if not var.iov:
        return {}
    n_occ = study.events().n_occ
    out = {}
    for name in var.iov:
        base = pop[name].to_numpy(dtype=np.float64)[:, None]
        kappa = np.column_stack(
            [pop[f"kappa_{name}_{k}"].to_numpy(dtype=np.float64) for k in range(n_occ)]
        )
        out[name] = apply_effect(base, kappa, var.distribution(name))
    return out


def apply_effect(value: np.ndarray, effect: np.ndarray, dist: str) -> np.ndarray:
    """A parameter with a random effect: ``value · exp(effect)`` (``lognormal``),
    ``value + effect`` (``normal``) or ``expit(logit(value) + effect)`` (``logit``)."""
    if dist == "lognormal":
        return value * np.exp(effect)
    if dist == "normal":
        return value + effect
    return special.expit(special.logit(value) + effect)


def sample_population(
    study: PopulationStudy,
    *,
    candidates: list[int] | None = None,
    twins: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Sample the whole virtual population (every replicate).

    Examples
    --------
    >>> from vtrial.study.config import study_from_dict
    >>> study = study_from_dict({
    ...     "study": {"name": "minimal", "seed": 1}, "population": {"size": 3},
    ...     "model": {"pk": "pk_1cmt"},
    ...     "arms": [{"name": "single_dose", "regimen": {"route": "oral", "dose": 100}}],
    ... })
    >>> sample_population(study)[["patient_id", "arm", "CL", "V1"]]
       patient_id          arm   CL    V1
    0           1  single_dose  5.0  50.0
    1           2  single_dose  5.0  50.0
    2           3  single_dose  5.0  50.0

    The patients of a replicate are the first ``population.size`` candidates meeting
    the inclusion and exclusion criteria
    (:meth:`vtrial.population.covariates.CovariateSampler.sample`).

    Parameters
    ----------
    study : PopulationStudy
    candidates : list, optional
        Receives the number of candidates examined per replicate (``size`` each
        without criteria); the acceptance rate of replicate r is
        ``size / candidates[r]``.
    twins : DataFrame, optional
        The twins table of every dataset subject (the twins stage's parts in shard
        order, :mod:`vtrial.run.twin_stage`): required with
        ``population.dataset.parameters: twins``, see :func:`dataset_population`.

    Returns
    -------
    DataFrame
        One row per (replicate, patient_id), sorted (for ``study.design:
        twin_crossover`` one row per (replicate, patient_id, arm), the rows of a patient
        identical but for ``arm`` and ``arm_index``): ``replicate`` (int32),
        ``patient_id`` (int64), ``arm`` (str), ``arm_index`` (int16), covariates,
        derived covariates, ``eta_<P>``, ``kappa_<P>_<k>`` (inter-occasion effects,
        occasion k = 0, 1, ...) and one column per model parameter (the individual
        value before inter-occasion variability).
    """
    if study.population.dataset is not None:
        return dataset_population(study, twins=twins)
    frames = []
    sampler = covariate_sampler(study)
    arm_names = np.asarray(study.arm_names, dtype=object)
    for r in range(study.replicates):
        covs, n_candidates = sampler.sample(r, study.size)  # with derived covariates
        if candidates is not None:
            candidates.append(n_candidates)
        params, etas = individual_parameters(study, covs, r)
        arm_idx = allocate(study, r, covs)  # vtrial.population.design: randomization
        cols: dict[str, Any] = {
            "replicate": np.full(study.size, r, dtype=np.int32),
            "patient_id": np.arange(1, study.size + 1, dtype=np.int64),
            "arm": arm_names[arm_idx],
            "arm_index": arm_idx,
        }
        cols.update(covs)
        cols.update({f"eta_{k}": v for k, v in etas.items()})
        cols.update(occasion_effects(study, r))
        cols.update(params)
        frames.append(twin_rows(study, pd.DataFrame(cols)))  # a row per arm if twin
    return pd.concat(frames, ignore_index=True)


def dataset_population(
    study: PopulationStudy, *, twins: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The population of ``population.dataset``: one patient per subject (per subject and
    arm for a twin crossover) in dataset order, every replicate; see
    :mod:`vtrial.population.dataset`.

    Columns as :func:`sample_population`'s, with ``ID`` (the subject's ID as text) after
    ``arm_index``, and the subjects' baseline covariates (first record). With
    ``parameters: twins`` the random effects are those of the subjects' twins
    (``twins``: the twins stage's table, every subject in file order): in replicate 0
    the MAP estimates, in each other replicate a draw from their Laplace posteriors
    (:mod:`vtrial.population.twin_draws`), and ``twin_status`` (the fit's status) follows
    ``ID``; a subject whose fit is not ``ok`` has NaN random effects and parameters.

    Raises
    ------
    ValueError
        ``parameters: twins`` without ``twins``.
    DataError
        A twins table that does not hold every subject once, in file order.
    """
    subjects = study.subjects
    spec = study.population.dataset
    if subjects is None or subjects.dataset is None or spec is None:  # validated before
        raise ValueError("population.dataset: the dataset has problems")
    ds = subjects.dataset
    covs = subject_covariates(ds)
    derived = list(study.population.derived)
    if derived:
        covs.update(derive_covariates(derived, covs))
    cats = dict(study.population.categories)
    cats.update({str(k): sorted({str(x) for x in v}) for k, v in covs.items() if v.dtype == object})
    arm_names = np.asarray(study.arm_names, dtype=object)
    ids = np.asarray([str(x) for x in ds.subjects], dtype=object)
    column_arms = None
    if spec.arm_column is not None:
        labels = arm_labels(ds, spec.arm_column)
        column_arms = np.asarray([study.arm_names.index(x) for x in labels], dtype=np.int16)
    random = spec.parameters == "iiv"
    estimates = None
    if spec.parameters == "twins":
        if twins is None:
            raise ValueError(
                "population.dataset.parameters: 'twins' needs the twins table of the "
                "dataset's subjects (the twins stage's parts, outputs.twins)"
            )
        estimates = subject_estimates(twins, ds.subjects, study.variability.omega_names)
    frames = []
    for r in range(study.replicates):
        params, etas = individual_parameters(study, covs, r, random=random, categories=cats)
        fit = study.fit
        if spec.parameters == "fit" and fit is not None and fit.etas is not None:
            found, _, _ = fit_etas(ds, fit.etas)  # checked at validation
            if found is None:  # pragma: no cover - validated
                raise ValueError("population.dataset.parameters: subjects without ETAs")
            for name in found.columns:
                etas[str(name)] = found[name].to_numpy(dtype=np.float64)
                params[str(name)] = apply_effect(
                    params[str(name)], etas[str(name)], study.variability.distribution(str(name))
                )
        if estimates is not None:
            drawn = twin_draws(estimates, study.seed, r)
            for j, name in enumerate(estimates.names):
                etas[name] = drawn[:, j]
                params[name] = apply_effect(
                    params[name], drawn[:, j], study.variability.distribution(name)
                )
        if subjects.table is not None:
            params.update(
                {str(c): subjects.table[c].to_numpy(dtype=np.float64) for c in subjects.table}
            )
        if column_arms is not None:
            arm_idx = column_arms
        elif spec.recorded:
            arm_idx = np.zeros(study.size, dtype=np.int16)
        else:
            arm_idx = allocate(study, r, covs)
        cols: dict[str, Any] = {
            "replicate": np.full(study.size, r, dtype=np.int32),
            "patient_id": np.arange(1, study.size + 1, dtype=np.int64),
            "arm": arm_names[arm_idx],
            "arm_index": arm_idx,
            "ID": ids,
        }
        if estimates is not None:
            cols["twin_status"] = estimates.status
        cols.update(covs)
        cols.update({f"eta_{k}": v for k, v in etas.items()})
        cols.update(params)
        frames.append(twin_rows(study, pd.DataFrame(cols)))
    return pd.concat(frames, ignore_index=True)


def variability_problems(
    d: Mapping[str, Any],
    model: Model,
    source: str,
    cov_names: set[str],
    categories: Mapping[str, Sequence[str]],
) -> list[Problem]:
    """Problems of ``model.parameters`` covariate models, ``model.iiv`` (OMEGA names,
    distributions, correlations, positive semi-definiteness) and ``model.iov``.

    ``cov_names`` and ``categories``: the population's covariates
    (:func:`vtrial.population.validate.population_problems`).
    """
    src = source
    out: list[Problem] = []

    def bad(where: str, msg: str) -> None:
        out.append(Problem(src, where, msg))

    clash = sorted(cov_names & set(model.parameters))
    if clash:
        bad("population.covariates", f"names {clash} are also model parameters")
    for pname, spec in d["model"]["parameters"].items():
        if "covariates" in spec:
            try:
                parse_expression(
                    spec["covariates"],
                    where=f"{src}: model.parameters.{pname}.covariates",
                    known_names=sorted(cov_names),
                    categorical=categories,
                )
            except ExpressionError as exc:
                bad(
                    f"model.parameters.{pname}.covariates",
                    f"{exc.reason} in expression {exc.expression!r}",
                )
    iiv = d["model"]["iiv"]
    omega: dict[str, float] = iiv["omega"]
    for k in omega:
        if k not in model.parameters:
            bad(
                f"model.iiv.omega.{k}",
                f"not a model parameter (parameters: {sorted(model.parameters)})",
            )
    for k, dist in iiv["distribution"].items():
        if k not in omega:
            bad(f"model.iiv.distribution.{k}", "has no omega (variance) entry")
        elif dist == "logit" and k in model.parameters:
            v = model.parameters[k].value
            if not 0 < v < 1:
                bad(f"model.iiv.distribution.{k}", f"logit needs a value in (0, 1), got {v}")
    for k in omega:
        lognormal = iiv["distribution"].get(k, "lognormal") == "lognormal"
        if lognormal and k in model.parameters and model.parameters[k].value <= 0:
            value = model.parameters[k].value
            bad(f"model.iiv.omega.{k}", f"log-normal IIV needs a typical value > 0, got {value}")
    names = list(omega)
    seen_pairs: dict[frozenset[str], str] = {}
    for pair in iiv["correlations"]:
        a, b = pair.split("~")
        key = frozenset((a, b))
        if key in seen_pairs:
            bad(f"model.iiv.correlations.{pair}", f"repeats {seen_pairs[key]}")
        seen_pairs.setdefault(key, pair)
        for x in (a, b):
            if x not in omega:
                bad(f"model.iiv.correlations.{pair}", f"{x} has no omega (variance) entry")
        if a == b:
            bad(f"model.iiv.correlations.{pair}", "a correlation needs two different names")
    if not any(p.where.startswith("model.iiv") for p in out) and names:
        om = omega_matrix(iiv)
        w = np.linalg.eigvalsh(om)
        if w.min() < -1e-10 * max(1.0, float(w.max())):
            bad(
                "model.iiv",
                f"OMEGA must be positive semi-definite, smallest eigenvalue {w.min():.3g}",
            )
    iov = d["model"].get("iov")
    if iov:
        for k in iov["omega"]:
            if k not in model.parameters:
                bad(
                    f"model.iov.omega.{k}",
                    f"not a model parameter (parameters: {sorted(model.parameters)})",
                )
            elif (
                iiv["distribution"].get(k, "lognormal") == "lognormal"
                and model.parameters[k].value <= 0
            ):
                bad(
                    f"model.iov.omega.{k}",
                    f"log-normal IOV needs a typical value > 0, got {model.parameters[k].value}",
                )
        occ = iov["occasions"]
        if isinstance(occ, list):
            end = float(d["simulation"]["end"])
            if any(b <= a for a, b in itertools.pairwise(occ)):
                bad("model.iov.occasions", f"start times must increase strictly, got {occ}")
            if occ and not (min(occ) >= 0 and max(occ) < end):
                bad(
                    "model.iov.occasions",
                    f"start times must be in [0, simulation.end={end:g}), got {occ}",
                )
    return out
