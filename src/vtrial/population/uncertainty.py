"""Parameter uncertainty across replicate trials (``study.uncertainty``).

Each replicate trial ``r`` gets its own population parameters, drawn once per
replicate and kept apart from the between-patient variability:

- **THETA** (``uncertainty.theta``): the typical values of the listed model
  parameters are drawn from a multivariate normal centred on the study's typical
  values with the given covariance, on the stated ``scale``: ``log``,
  ``log(TV_r) ~ N(log(TV), C)`` (so ``TV_r = TV · exp(delta)``, median TV); ``linear``,
  ``TV_r ~ N(TV, C)``. The draw is ``delta = L z`` with ``L`` the Cholesky factor of
  ``C`` (eigen square root if singular) and ``z`` standard normals from keyed uniforms
  (purpose ``uncertainty:theta``, replicate ``r``, one row of ``p`` uniforms).
- **OMEGA** (``uncertainty.omega_df``): the variance-covariance of the random
  effects is drawn from an inverse-Wishart distribution with ``df`` degrees of
  freedom and scale ``Psi = (df - p - 1) · OMEGA`` (``p`` random effects), so that its
  mean ``Psi / (df - p - 1)`` is the study's OMEGA; this needs ``df > p + 1`` and a
  positive definite OMEGA. The draw is :func:`scipy.stats.invwishart.rvs` fed by the
  keyed generator of purpose ``uncertainty:omega``, replicate ``r``.

The patients of replicate ``r`` then get ``eta ~ N(0, OMEGA_r)`` around ``TV_r`` (the
same keyed standard normals as without uncertainty, scaled by OMEGA_r's root). A
replicate's draws depend only on the seed and on ``r``: adding replicates leaves the
existing ones unchanged, and without ``study.uncertainty`` every number is what it
was. Inter-occasion variability and residual errors are not drawn.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import special

from vtrial.errors import DataError, Problem
from vtrial.infra.rng import keyed_uniforms, stream
from vtrial.population.spec import ThetaUncertainty, omega_matrix, uncertainty_spec

if TYPE_CHECKING:
    from vtrial.model.spec import Model
    from vtrial.population.spec import PopulationStudy

#: relative tolerance of the symmetry and positive semi-definiteness checks
MATRIX_TOL = 1e-10


@functools.lru_cache(maxsize=16)
def _read_csv(path: str, mtime_ns: int, size: int) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV file (cached by path, modification time and size)."""
    del mtime_ns, size  # cache keys only
    with open(path, newline="") as fh:
        rows = [[c.strip() for c in row] for row in csv.reader(fh) if any(c.strip() for c in row)]
    if not rows:
        raise ValueError("the file is empty")
    return rows[0], rows[1:]


def read_covariance_csv(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Parameter names, matrix and problems of a covariance CSV file.

    The file has a header row naming the parameters (the columns) and one row per
    parameter in the same order; an optional first column of row names (header
    ``name`` or empty) must repeat the header's names. Problems (unreadable file,
    non-numeric or non-finite cells, wrong shape, row names) are returned, all of
    them, each naming the file and the cell; the matrix is empty when there are any.
    """
    try:
        st = path.stat()
        header, rows = _read_csv(str(path), st.st_mtime_ns, st.st_size)
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as exc:
        return [], np.empty((0, 0)), [f"cannot read {path}: {exc}"]
    problems: list[str] = []
    named = header[0] in ("", "name")
    names = header[1:] if named else header
    p = len(names)
    if len(rows) != p:
        problems.append(f"{path}: needs {p} rows (one per parameter {names}), got {len(rows)}")
    mat = np.full((len(rows), p), np.nan)
    for i, row in enumerate(rows):
        cells = row[1:] if named else row
        if named and row[0] != (names[i] if i < p else None):
            want = names[i] if i < p else "none"
            problems.append(f"{path}: row {i + 2}: row name must be {want!r}, got {row[0]!r}")
        if len(cells) != p:
            problems.append(f"{path}: row {i + 2}: needs {p} numbers, got {len(cells)}")
            continue
        for j, cell in enumerate(cells):
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
                problems.append(
                    f"{path}: row {i + 2}, column {j + 1 + named}: not a number, got {cell!r}"
                )
            else:
                if not math.isfinite(value):
                    problems.append(
                        f"{path}: row {i + 2}, column {j + 1 + named}: must be finite, got {cell}"
                    )
            mat[i, j] = value
    if len(set(names)) != len(names):
        dup = sorted({x for x in names if names.count(x) > 1})
        problems.append(f"{path}: header names repeat: {dup}")
    return names, (np.empty((0, 0)) if problems else mat), problems


def matrix_problems(mat: np.ndarray, names: Sequence[str]) -> list[str]:
    """Symmetry and positive semi-definiteness problems of a covariance matrix."""
    out: list[str] = []
    scale = max(1.0, float(np.abs(mat).max())) if mat.size else 1.0
    asym = np.abs(mat - mat.T)
    if asym.max(initial=0.0) > MATRIX_TOL * scale:
        i, j = (int(k) for k in np.unravel_index(int(np.argmax(asym)), asym.shape))
        out.append(
            f"must be symmetric, got [{names[i]}, {names[j]}] = {mat[i, j]:g} but "
            f"[{names[j]}, {names[i]}] = {mat[j, i]:g}"
        )
        return out
    w = np.linalg.eigvalsh(mat)
    if w.size and w.min() < -MATRIX_TOL * max(1.0, float(w.max())):
        out.append(f"must be positive semi-definite, smallest eigenvalue {w.min():.3g}")
    return out


def theta_covariance(
    parameters: Sequence[str], covariance: str | Sequence[Sequence[float]], base_dir: Path
) -> tuple[np.ndarray, list[str]]:
    """Covariance of ``uncertainty.theta`` in the order of its ``parameters``, and the
    problems found (matrix empty when there are any).

    ``covariance`` is a CSV file relative to ``base_dir`` or the matrix (a row per
    parameter). A CSV file may hold more parameters than listed: the sub-matrix of the
    listed ones is used. Validation passes the section's keys as written; the
    simulation a typed :class:`~vtrial.population.spec.ThetaUncertainty`
    (:func:`theta_matrix`).
    """
    params = [str(x) for x in parameters]
    p = len(params)
    cov = covariance
    if isinstance(cov, str):
        names, full, problems = read_covariance_csv(base_dir / cov)
        if problems:
            return np.empty((0, 0)), problems
        missing = [x for x in params if x not in names]
        if missing:
            msg = f"{base_dir / cov}: has no column for {missing} (has {names})"
            return np.empty((0, 0)), [msg]
        idx = [names.index(x) for x in params]
        mat = full[np.ix_(idx, idx)]
    else:
        shape = [len(row) for row in cov]
        if len(cov) != p or any(k != p for k in shape):
            return np.empty((0, 0)), [
                f"must be a {p}x{p} matrix (a row and a column per parameter {params}), "
                f"got {len(cov)} row(s) of length(s) {shape}"
            ]
        mat = np.asarray(cov, dtype=np.float64)
    problems = matrix_problems(mat, params)
    return (np.empty((0, 0)) if problems else mat), problems


def theta_matrix(theta: ThetaUncertainty, base_dir: Path) -> tuple[np.ndarray, list[str]]:
    """Covariance of a typed ``uncertainty.theta`` in the order of its parameters, and
    the problems found (:func:`theta_covariance`)."""
    return theta_covariance(theta.parameters, theta.covariance, base_dir)


def covariance_root(mat: np.ndarray) -> np.ndarray:
    """Cholesky factor of a covariance; eigen square root if it is singular."""
    try:
        return np.linalg.cholesky(mat)
    except np.linalg.LinAlgError:
        w, q = np.linalg.eigh(mat)
        return np.asarray(q * np.sqrt(np.clip(w, 0.0, None)))


def typical_values(study: PopulationStudy, replicate: int) -> dict[str, float]:
    """Typical value of every model parameter in one replicate (THETA_r).

    Parameters
    ----------
    study : PopulationStudy
    replicate : int
        Replicate trial.

    Returns
    -------
    dict of str to float
        Parameter name -> typical value: the drawn value for the parameters of
        ``uncertainty.theta`` (see the module docstring), the model's value for the
        others; the model's values unchanged without ``uncertainty.theta``.
    """
    values = {k: float(p.value) for k, p in study.model.parameters.items()}
    spec = study.uncertainty.theta
    if spec is None:
        return values
    mat, problems = theta_matrix(spec, study.base_dir)
    if problems:
        raise DataError(f"{study.source}: study.uncertainty.theta.covariance: {problems[0]}")
    names = list(spec.parameters)
    z = special.ndtri(keyed_uniforms(study.seed, "uncertainty:theta", replicate, 1, len(names)))
    delta = covariance_root(mat) @ z[0]
    log = spec.scale == "log"
    for name, dx in zip(names, delta, strict=True):
        values[name] = values[name] * math.exp(dx) if log else values[name] + float(dx)
    return values


def inverse_wishart_scale(omega: np.ndarray, df: float) -> np.ndarray:
    """Scale ``Psi = (df - p - 1) · OMEGA`` whose inverse-Wishart mean is OMEGA."""
    p = omega.shape[0]
    return (float(df) - p - 1.0) * omega


def replicate_omega(study: PopulationStudy, replicate: int) -> np.ndarray:
    """OMEGA of one replicate.

    Parameters
    ----------
    study : PopulationStudy
    replicate : int
        Replicate trial.

    Returns
    -------
    ndarray, shape (p, p)
        Variance-covariance of the random effects, in the order of
        ``model.iiv.omega``: an inverse-Wishart draw with ``uncertainty.omega_df``
        degrees of freedom and mean OMEGA, or the study's OMEGA unchanged without
        ``omega_df``.
    """
    om = study.variability.omega
    df = study.uncertainty.omega_df
    if df is None or om.size == 0:
        return om
    gen = stream(study.seed, "uncertainty:omega", replicate)
    from scipy.stats import invwishart  # scipy.stats costs 0.5 s: only when drawing

    draw = invwishart.rvs(df=float(df), scale=inverse_wishart_scale(om, df), random_state=gen)
    return np.asarray(draw, dtype=np.float64).reshape(om.shape)


#: columns of ``summary/uncertainty.parquet``
UNCERTAINTY_COLUMNS = ("replicate", "quantity", "parameter", "nominal", "value")


def uncertainty_table(study: PopulationStudy) -> pd.DataFrame:
    """The population parameters drawn for every replicate.

    Returns
    -------
    DataFrame
        One row per (replicate, drawn quantity), replicate ascending: ``replicate``
        (int32), ``quantity`` (``theta``: a typical value; ``omega``: a variance
        ``P`` or a covariance ``P~Q`` of the random effects), ``parameter``,
        ``nominal`` (the study's value) and ``value`` (the replicate's draw). Empty
        (same columns) without ``study.uncertainty``.
    """
    spec = study.uncertainty
    nominal_tv = {k: float(p.value) for k, p in study.model.parameters.items()}
    theta_names = list(spec.theta.parameters) if spec.theta else []
    eta_names = list(study.variability.omega_names) if spec.omega_df is not None else []
    om0 = study.variability.omega if eta_names else np.empty((0, 0))
    pairs = [(i, j) for i in range(len(eta_names)) for j in range(i, len(eta_names))]
    rows: list[tuple[int, str, str, float, float]] = []
    for r in range(study.replicates if spec.active else 0):
        if theta_names:
            tv = typical_values(study, r)
            rows += [(r, "theta", k, nominal_tv[k], tv[k]) for k in theta_names]
        if eta_names:
            om = replicate_omega(study, r)
            for i, j in pairs:
                label = eta_names[i] if i == j else f"{eta_names[i]}~{eta_names[j]}"
                rows.append((r, "omega", label, float(om0[i, j]), float(om[i, j])))
    return pd.DataFrame(
        {
            "replicate": np.array([x[0] for x in rows], dtype=np.int32),
            "quantity": pd.Series([x[1] for x in rows], dtype=object),
            "parameter": pd.Series([x[2] for x in rows], dtype=object),
            "nominal": np.array([x[3] for x in rows], dtype=np.float64),
            "value": np.array([x[4] for x in rows], dtype=np.float64),
        },
        columns=list(UNCERTAINTY_COLUMNS),
    )


def uncertainty_problems(
    d: Mapping[str, Any], model: Model | None, src: str, base_dir: Path
) -> list[Problem]:
    """Problems of ``study.uncertainty`` (study data with defaults filled)."""
    spec = uncertainty_spec(d)
    out: list[Problem] = []

    def bad(where: str, msg: str) -> None:
        out.append(Problem(src, where, msg))

    here = "study.uncertainty"
    theta = spec.get("theta")
    if theta:
        params = list(theta["parameters"])
        log = theta.get("scale", "log") == "log"
        for i, name in enumerate(params):
            if model is None:
                break
            if name not in model.parameters:
                bad(
                    f"{here}.theta.parameters[{i}]",
                    f"not a model parameter (parameters: {sorted(model.parameters)}), got {name!r}",
                )
            elif log and model.parameters[name].value <= 0:
                bad(
                    f"{here}.theta.parameters[{i}]",
                    f"scale log needs a typical value > 0, {name} is "
                    f"{model.parameters[name].value}",
                )
        _, problems = theta_covariance(theta["parameters"], theta["covariance"], base_dir)
        for msg in problems:
            bad(f"{here}.theta.covariance", msg)
    if "omega_df" in spec:
        df = float(spec["omega_df"])
        iiv = d["model"]["iiv"]
        p = len(iiv["omega"])
        where = f"{here}.omega_df"
        if p == 0:
            bad(where, f"needs random effects (model.iiv.omega is empty), got {spec['omega_df']}")
        elif not df > p + 1:
            bad(
                where,
                f"must be > p + 1 = {p + 1} (p = {p} random effects in model.iiv.omega) for "
                f"the inverse-Wishart mean to exist, got {spec['omega_df']}",
            )
        else:
            try:
                w = np.linalg.eigvalsh(omega_matrix(iiv))
            except (ValueError, KeyError):  # broken correlations: reported at model.iiv
                w = np.ones(1)
            if w.min() <= MATRIX_TOL * max(1.0, float(w.max())):
                bad(
                    where,
                    "needs a positive definite OMEGA (the inverse-Wishart scale), smallest "
                    f"eigenvalue of model.iiv {w.min():.3g}",
                )
    return out
