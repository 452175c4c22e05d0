"""Virtual populations: covariates, arm allocation and individual parameters.

Each virtual patient (a "digital twin") is a row: ``replicate``, ``patient_id``
(1-based within its replicate trial), ``arm``, sampled covariates, derived covariates,
random effects ``eta_<P>`` and the individual value of every model parameter.

All draws are keyed (:mod:`vtrial.rng`): covariates by ``covariate:<name>``, random
effects by ``eta``, allocation by ``allocation``; so a patient's covariates and
parameters do not depend on the arms of the study, on the other replicates or on how
the later stages are sharded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from vtrial.config import Study, omega_matrix
from vtrial.expressions import evaluate, parse_expression
from vtrial.rng import keyed_uniforms


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


def sample_covariates(study: Study, replicate: int) -> dict[str, np.ndarray]:
    """Sample every covariate of one replicate (categoricals first, then the rest)."""
    n = study.size
    covs: dict[str, Any] = study.data["population"]["covariates"]
    out: dict[str, np.ndarray] = {}
    order = [k for k, v in covs.items() if "categorical" in v]
    order += [k for k, v in covs.items() if "categorical" not in v]
    for name in order:
        spec = covs[name]
        u = keyed_uniforms(study.seed, f"covariate:{name}", replicate, n)[:, 0]
        by_labels = out.get(spec["by"]) if "by" in spec else None
        lo, hi = spec.get("bounds", (-np.inf, np.inf))
        if "categorical" in spec:
            labels = list(spec["categorical"])
            cum = np.cumsum([float(spec["categorical"][c]) for c in labels])
            cum /= cum[-1]
            idx = np.minimum(np.searchsorted(cum, u, side="right"), len(labels) - 1)
            out[name] = np.asarray(labels, dtype=object)[idx]
        elif "normal" in spec:
            mu = _by(spec["normal"]["mean"], by_labels)
            sd = _by(spec["normal"]["sd"], by_labels)
            out[name] = _truncated_normal(u, mu, sd, lo, hi)
        elif "lognormal" in spec:
            med = _by(spec["lognormal"]["median"], by_labels)
            cv = _by(spec["lognormal"]["cv"], by_labels)
            sigma = np.sqrt(np.log1p(np.square(cv)))
            llo = np.log(lo) if lo > 0 else -np.inf
            lhi = np.log(hi) if np.isfinite(hi) else np.inf
            out[name] = np.exp(_truncated_normal(u, np.log(med), sigma, llo, lhi))
        elif "uniform" in spec:
            low = _by(spec["uniform"]["low"], by_labels)
            high = _by(spec["uniform"]["high"], by_labels)
            out[name] = np.asarray(low + u * (np.asarray(high) - low), dtype=np.float64)
        else:
            out[name] = np.full(n, float(spec["constant"]))
    return out


def derive_covariates(names: list[str], c: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Compute derived covariates.

    - ``bmi`` (kg/m²) = weight / (height/100)²
    - ``bsa`` (m², Mosteller 1987) = sqrt(height · weight / 3600)
    - ``bsa_dubois`` (m², DuBois & DuBois 1916) = 0.007184 · weight^0.425 · height^0.725
    - ``crcl`` (mL/min, Cockcroft & Gault 1976) = (140 − age) · weight / (72 · scr), × 0.85 if F
    - ``egfr`` (mL/min/1.73 m², CKD-EPI 2021, Inker et al. NEJM 2021) =
      142 · min(scr/κ, 1)^α · max(scr/κ, 1)^−1.200 · 0.9938^age (× 1.012 if F),
      κ = 0.7 (F) / 0.9 (M), α = −0.241 (F) / −0.302 (M)
    - ``lbw`` (kg, Janmahasatian et al. 2005) = 9270 · W / (6680 + 216 · BMI) for M,
      9270 · W / (8780 + 244 · BMI) for F

    Units: weight kg, height cm, age years, scr (serum creatinine) mg/dL.
    """
    out: dict[str, np.ndarray] = {}
    female = np.asarray(c["sex"]) == "F" if "sex" in c else None
    for name in names:
        if name == "bmi":
            out[name] = c["weight"] / np.square(c["height"] / 100.0)
        elif name == "bsa":
            out[name] = np.sqrt(c["height"] * c["weight"] / 3600.0)
        elif name == "bsa_dubois":
            out[name] = 0.007184 * c["weight"] ** 0.425 * c["height"] ** 0.725
        elif name == "crcl":
            assert female is not None
            v = (140.0 - c["age"]) * c["weight"] / (72.0 * c["scr"])
            out[name] = np.where(female, 0.85 * v, v)
        elif name == "egfr":
            assert female is not None
            kappa = np.where(female, 0.7, 0.9)
            alpha = np.where(female, -0.241, -0.302)
            r = c["scr"] / kappa
            v = 142.0 * np.minimum(r, 1.0) ** alpha * np.maximum(r, 1.0) ** -1.2
            v = v * 0.9938 ** c["age"]
            out[name] = np.where(female, 1.012 * v, v)
        elif name == "lbw":
            assert female is not None
            bmi = c["weight"] / np.square(c["height"] / 100.0)
            out[name] = np.where(
                female,
                9270.0 * c["weight"] / (8780.0 + 244.0 * bmi),
                9270.0 * c["weight"] / (6680.0 + 216.0 * bmi),
            )
        else:  # pragma: no cover - schema guards
            raise ValueError(f"unknown derived covariate {name!r}")
    return out


def allocate_arms(study: Study, replicate: int) -> np.ndarray:
    """Permuted-block allocation to arms (index per patient, in patient order).

    Blocks hold ``2 * sum(ratios)`` patients in the declared ratio; each block is
    shuffled with keyed uniforms (``allocation``), so every prefix of the trial stays
    close to the ratio and the allocation depends only on seed, replicate and arms.
    """
    n = study.size
    ratios = [int(a["ratio"]) for a in study.data["arms"]]
    base = np.repeat(np.arange(len(ratios)), [2 * r for r in ratios])
    bs = base.size
    nblocks = -(-n // bs)
    u = keyed_uniforms(study.seed, "allocation", replicate, nblocks, bs)
    perm = np.argsort(u, axis=1, kind="stable")
    return np.asarray(base[perm].ravel()[:n], dtype=np.int16)


def individual_parameters(
    study: Study, covariates: Mapping[str, np.ndarray], replicate: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Individual parameter values and random effects of one replicate.

    ``P_i = TV · f(covariates_i)`` transformed by the random effect: log-normal
    ``P_i = TV_i · exp(eta)``, normal ``TV_i + eta``, logit ``expit(logit(TV_i) + eta)``,
    with ``eta ~ N(0, OMEGA)`` (Cholesky of OMEGA; eigen-square-root if singular).
    """
    n = study.size
    model = study.model
    spec = study.data["model"]
    cats = {
        k: list(v["categorical"])
        for k, v in study.data["population"]["covariates"].items()
        if "categorical" in v
    }
    params: dict[str, np.ndarray] = {}
    for name, p in model.parameters.items():
        tv = np.full(n, p.value)
        cov_expr = spec["parameters"].get(name, {}).get("covariates")
        if cov_expr is not None:
            expr = parse_expression(
                cov_expr,
                where=f"{study.source}: model.parameters.{name}.covariates",
                known_names=list(covariates),
                categorical=cats,
            )
            tv = tv * evaluate(expr, covariates, size=n)
        params[name] = tv
    iiv = spec["iiv"]
    names = list(iiv["omega"])
    etas: dict[str, np.ndarray] = {}
    if names:
        om = omega_matrix(iiv)
        try:
            root = np.linalg.cholesky(om)
        except np.linalg.LinAlgError:
            w, q = np.linalg.eigh(om)
            root = q * np.sqrt(np.clip(w, 0.0, None))
        z = special.ndtri(keyed_uniforms(study.seed, "eta", replicate, n, len(names)))
        eta = z @ root.T
        for j, name in enumerate(names):
            e = eta[:, j]
            etas[name] = e
            dist = iiv["distribution"].get(name, "lognormal")
            if dist == "lognormal":
                params[name] = params[name] * np.exp(e)
            elif dist == "normal":
                params[name] = params[name] + e
            else:
                params[name] = special.expit(special.logit(params[name]) + e)
    return params, etas


def occasion_effects(study: Study, replicate: int) -> dict[str, np.ndarray]:
    """Inter-occasion random effects ``kappa_<P>_<k>`` (occasion k = 0, 1, ...).

    Independent normal draws with variance ``model.iov.omega[P]`` for each of the
    study's occasions (the most any arm has), keyed by ``iov``: a patient has the same
    kappas whatever arm, shard or chunk it lands in.
    """
    iov = study.data["model"].get("iov")
    if not iov:
        return {}
    n_occ = study.events().n_occ
    names = list(iov["omega"])
    z = special.ndtri(keyed_uniforms(study.seed, "iov", replicate, study.size, n_occ * len(names)))
    out = {}
    for j, name in enumerate(names):
        sd = np.sqrt(float(iov["omega"][name]))
        for k in range(n_occ):
            out[f"kappa_{name}_{k}"] = sd * z[:, j * n_occ + k]
    return out


def occasion_parameters(study: Study, pop: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-occasion values, shape (n, n_occ), of the parameters with IOV.

    The individual value ``P_i`` (population column) is transformed like its IIV:
    log-normal ``P_i exp(kappa)``, normal ``P_i + kappa``, logit
    ``expit(logit(P_i) + kappa)``.
    """
    iov = study.data["model"].get("iov")
    if not iov:
        return {}
    n_occ = study.events().n_occ
    dist = study.data["model"]["iiv"]["distribution"]
    out = {}
    for name in iov["omega"]:
        base = pop[name].to_numpy(dtype=np.float64)[:, None]
        kappa = np.column_stack(
            [pop[f"kappa_{name}_{k}"].to_numpy(dtype=np.float64) for k in range(n_occ)]
        )
        form = dist.get(name, "lognormal")
        if form == "lognormal":
            out[name] = base * np.exp(kappa)
        elif form == "normal":
            out[name] = base + kappa
        else:
            out[name] = special.expit(special.logit(base) + kappa)
    return out


def sample_population(study: Study) -> pd.DataFrame:
    """Sample the whole virtual population (every replicate).

    Returns
    -------
    DataFrame
        One row per (replicate, patient_id), sorted: ``replicate`` (int32),
        ``patient_id`` (int64), ``arm`` (str), ``arm_index`` (int16), covariates,
        derived covariates, ``eta_<P>``, ``kappa_<P>_<k>`` (inter-occasion effects,
        occasion k = 0, 1, ...) and one column per model parameter (the individual
        value before inter-occasion variability).
    """
    frames = []
    derived = list(study.data["population"]["derived"])
    arm_names = np.asarray(study.arm_names, dtype=object)
    for r in range(study.replicates):
        covs = sample_covariates(study, r)
        covs.update(derive_covariates(derived, covs))
        params, etas = individual_parameters(study, covs, r)
        arm_idx = allocate_arms(study, r)
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
        frames.append(pd.DataFrame(cols))
    return pd.concat(frames, ignore_index=True)
