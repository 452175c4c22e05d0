"""Fitted population models in terms of the study's parameters: the declared mapping
from fitted quantities (THETA, ETA, SIGMA) to model parameters.

What is done
------------
- :func:`parse_mapping` and :func:`apply_mapping`: the study file's declaration of
  which THETA, ETA and SIGMA feed which model parameter (``from_fit.map``) and the
  :class:`FittedModel` it gives, from what the readers of NONMEM's tables
  (:mod:`~vtrial.data.nonmem`) return. Monolix's files are read by
  :mod:`~vtrial.data.monolix`.

Problems
--------
:func:`parse_mapping` and :func:`apply_mapping` return their problems, as
:class:`vtrial.errors.Problem` ``(file, where, message)`` with ``where`` the key path
of the mapping's entry, for a study loader to merge with its own. Nothing here prints
a file's contents: a file is identified by its SHA-256.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from vtrial.data.nonmem import CovarianceMatrix, EtaTable, ExtEstimates
from vtrial.errors import Problem

__all__ = [
    "FitMapping",
    "FittedModel",
    "apply_mapping",
    "parse_mapping",
]

_MAP_KEY = re.compile(r"\s*(THETA|ETA|SIGMA)\s*\(\s*(\d+)\s*\)\s*", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: a residual-error name, ``OUTPUT.part`` (``CP.proportional``): what a SIGMA (its
#: variance) or a THETA (an SD, in the idiom ``W = THETA(3) * IPRED`` with the SIGMA
#: FIXED to 1) may also be mapped to; its parts are checked by the study loader
_DOTTED = re.compile(r"[A-Za-z][A-Za-z0-9_]*\.[A-Za-z][A-Za-z0-9_]*")


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class FitMapping:
    """A checked ``from_fit.map``: which fitted quantity feeds which parameter.

    Attributes
    ----------
    theta : mapping of int to str
        THETA number (from 1) -> parameter whose typical value it is, or a
        residual-error name ``OUTPUT.part`` whose SD it is.
    eta : mapping of int to str
        ETA number -> parameter it is the random effect of.
    sigma : mapping of int to str
        SIGMA number (the diagonal element ``SIGMA(n,n)``) -> residual-error name (a
        name, or ``OUTPUT.part``).
    keys : mapping of (str, int) to str
        (``"THETA"``, n) -> the key as written in the study file (for problems).
    source, where : str
        The study file and the key path of the mapping.
    """

    theta: Mapping[int, str]
    eta: Mapping[int, str]
    sigma: Mapping[int, str]
    keys: Mapping[tuple[str, int], str]
    source: str
    where: str

    def at(self, kind: str, n: int) -> str:
        """Key path of the entry ``kind(n)`` (``from_fit.map.THETA(1)``)."""
        key = self.keys.get((kind, n), f"{kind}({n})")
        return f"{self.where}.{key}" if self.where else key


@dataclass(frozen=True, eq=False)
class FittedModel:
    """A fitted model in terms of the study's parameters (:func:`apply_mapping`).

    Attributes
    ----------
    typical : mapping of str to float
        Parameter -> typical value (its THETA), in THETA order; a residual-error name
        ``OUTPUT.part`` mapped from a THETA -> that THETA as given (an SD, whatever
        its sign).
    fixed : tuple of str
        Parameters whose THETA was FIXED in the fit.
    omega_names : tuple of str
        Parameters with an ETA, in ETA order.
    omega : ndarray of float64, shape (len(omega_names), len(omega_names))
        OMEGA restricted to those ETAs (variances and covariances).
    sigma : mapping of str to float
        Residual-error name -> its variance ``SIGMA(n,n)``.
    theta_cov : ndarray of float64, shape (len(typical), len(typical)), or None
        Covariance of the mapped THETAs, in the order of ``typical``; None without a
        ``.cov`` file.
    etas : DataFrame, shape (n_subjects, len(omega_names)), or None
        Each subject's ETA (or PHI, see ``eta_kind``) by parameter, indexed by ``ID``;
        None without a ``.phi`` file.
    eta_kind : str or None
        ``ETA`` or ``PHI`` (:attr:`~vtrial.data.nonmem.EtaTable.kind`), None without a
        ``.phi`` file.
    ofv : float
        The fit's objective function value.
    method : str
        The estimation method of the ``.ext`` table.
    sources : mapping of str to str
        ``ext``, ``cov``, ``phi`` -> SHA-256 of the file read (provenance).
    """

    typical: Mapping[str, float]
    fixed: tuple[str, ...]
    omega_names: tuple[str, ...]
    omega: np.ndarray
    sigma: Mapping[str, float]
    theta_cov: np.ndarray | None
    etas: pd.DataFrame | None = field(repr=False)
    eta_kind: str | None
    ofv: float
    method: str
    sources: Mapping[str, str]


# ---------------------------------------------------------------------------- mapping


def parse_mapping(mapping: Any, source: str, where: str) -> tuple[FitMapping | None, list[Problem]]:
    """Check a declared mapping of fitted quantities to model parameters.

    Parameters
    ----------
    mapping : mapping of str to str
        ``{"THETA(1)": "CL", "ETA(1)": "CL", "SIGMA(1)": "prop", ...}``: keys
        ``THETA(n)``, ``ETA(n)``, ``SIGMA(n)`` (n >= 1; case-insensitive, blanks
        allowed), values parameter names (a letter, then letters, digits or ``_``);
        a ``THETA(n)`` or ``SIGMA(n)`` may also name a residual error as
        ``OUTPUT.part`` (two such names joined by a dot, e.g. ``CP.proportional``; the
        study loader checks the parts). ``SIGMA(n)`` stands for the variance
        ``SIGMA(n,n)``.
    source : str
        The study file (``file`` of the problems).
    where : str
        Key path of the mapping in it (``model.from_fit.map``).

    Returns
    -------
    fit_mapping : FitMapping or None
        None when there is a problem.
    problems : list of Problem
        Malformed keys or names, a quantity given twice, a parameter mapped from two
        THETAs, two ETAs or two SIGMAs.
    """
    problems: list[Problem] = []
    if not isinstance(mapping, Mapping) or not mapping:
        got = type(mapping).__name__ if not isinstance(mapping, Mapping) else "an empty mapping"
        problems.append(
            Problem(
                source,
                where,
                f"must be a non-empty mapping of THETA(n), ETA(n), SIGMA(n) to parameter "
                f"names, got {got}",
            )
        )
        return None, problems
    found: dict[str, dict[int, str]] = {"THETA": {}, "ETA": {}, "SIGMA": {}}
    keys: dict[tuple[str, int], str] = {}
    for key, value in mapping.items():
        at = f"{where}.{key}" if where else str(key)
        m = _MAP_KEY.fullmatch(key) if isinstance(key, str) else None
        if m is None or int(m[2]) < 1:
            problems.append(
                Problem(
                    source,
                    at,
                    f"the key must be THETA(n), ETA(n) or SIGMA(n) with n >= 1, got {key!r}",
                )
            )
            continue
        kind, n = m[1].upper(), int(m[2])
        dotted = kind != "ETA" and isinstance(value, str) and _DOTTED.fullmatch(value)
        if not isinstance(value, str) or not (_NAME.fullmatch(value) or dotted):
            also = "" if kind == "ETA" else ", or OUTPUT.part for a residual error"
            problems.append(
                Problem(
                    source,
                    at,
                    f"must be a parameter name (a letter, then letters, digits or _){also}, "
                    f"got {value!r}",
                )
            )
            continue
        if (kind, n) in keys:
            problems.append(
                Problem(source, at, f"{kind}({n}) is mapped twice (also as {keys[(kind, n)]!r})")
            )
            continue
        other = [k for k, v in found[kind].items() if v == value]
        if other:
            what = {"THETA": "typical value", "ETA": "random effect", "SIGMA": "variance"}[kind]
            problems.append(
                Problem(
                    source,
                    at,
                    f"{value} is already mapped from {kind}({other[0]}): a parameter takes its "
                    f"{what} from one {kind}, got a second one",
                )
            )
            continue
        found[kind][n] = value
        keys[(kind, n)] = key
    if problems:
        return None, problems
    frozen = {k: MappingProxyType(dict(sorted(v.items()))) for k, v in found.items()}
    return (
        FitMapping(
            theta=frozen["THETA"],
            eta=frozen["ETA"],
            sigma=frozen["SIGMA"],
            keys=MappingProxyType(keys),
            source=source,
            where=where,
        ),
        [],
    )


def apply_mapping(
    fit_mapping: FitMapping,
    ext: ExtEstimates,
    cov: CovarianceMatrix | None = None,
    phi: EtaTable | None = None,
    *,
    source: str | None = None,
) -> tuple[FittedModel | None, list[Problem]]:
    """The fitted model in terms of the study's parameters.

    Parameters
    ----------
    fit_mapping : FitMapping
        From :func:`parse_mapping`.
    ext : ExtEstimates
        The fit's estimates.
    cov : CovarianceMatrix, optional
        Covariance of the estimates, for the THETA covariance (``theta_cov``).
    phi : EtaTable, optional
        Individual ETAs, for ``etas``.
    source : str, optional
        The study file (``file`` of the problems; default: the mapping's).

    Returns
    -------
    fitted : FittedModel or None
        None when there is a problem.
    problems : list of Problem
        At the mapping's key (``<where>.THETA(4)``), naming the fitted file: an index
        beyond the THETAs, ETAs or SIGMAs of a file; files whose numbers of THETAs or
        ETAs disagree; a nonzero covariance between a mapped ETA and an unmapped one,
        or between a mapped SIGMA and another SIGMA (the result keeps neither, so the
        model would change).
    """
    src = source or fit_mapping.source
    where = fit_mapping.where
    problems: list[Problem] = []
    at = fit_mapping.at

    def beyond(kind: str, n: int, count: int, path: str, what: str) -> None:
        problems.append(
            Problem(
                src,
                at(kind, n),
                f"{kind}({n}) is not in {path}: it has {count} {what}",
            )
        )

    for n in fit_mapping.theta:
        if n > ext.n_theta:
            beyond("THETA", n, ext.n_theta, ext.path, "THETA(s)")
        elif cov is not None and f"THETA{n}" not in cov.names:
            beyond("THETA", n, len(cov.theta_block()[0]), cov.path, "THETA(s)")
    for n in fit_mapping.eta:
        if n > ext.n_eta:
            beyond("ETA", n, ext.n_eta, ext.path, "ETA(s) (size of OMEGA)")
        elif phi is not None and n > phi.n_eta:
            beyond("ETA", n, phi.n_eta, phi.path, f"{phi.kind}(s)")
    for n in fit_mapping.sigma:
        if n > ext.n_eps:
            beyond("SIGMA", n, ext.n_eps, ext.path, "EPS(s) (size of SIGMA)")
    if cov is not None and len(cov.theta_block()[0]) != ext.n_theta:
        problems.append(
            Problem(
                src,
                where,
                f"{cov.path} has {len(cov.theta_block()[0])} THETA(s) but {ext.path} has "
                f"{ext.n_theta}: the files must come from the same fit",
            )
        )
    if phi is not None and phi.n_eta != ext.n_eta:
        problems.append(
            Problem(
                src,
                where,
                f"{phi.path} has {phi.n_eta} {phi.kind}(s) but {ext.path} has {ext.n_eta} "
                "ETA(s): the files must come from the same fit",
            )
        )
    for i, name in fit_mapping.eta.items():
        if i > ext.n_eta:
            continue
        for j in range(1, ext.n_eta + 1):
            v = ext.omega[i - 1, j - 1]
            if j not in fit_mapping.eta and v != 0:
                problems.append(
                    Problem(
                        src,
                        at("ETA", i),
                        f"OMEGA({max(i, j)},{min(i, j)}) = {v:.6g} in {ext.path} links ETA({i}) "
                        f"({name}) to ETA({j}), which is not mapped: dropping it would change "
                        f"the model (map ETA({j}) too)",
                    )
                )
    for i, name in fit_mapping.sigma.items():
        if i > ext.n_eps:
            continue
        for j in range(1, ext.n_eps + 1):
            v = ext.sigma[i - 1, j - 1]
            if j != i and v != 0 and (j not in fit_mapping.sigma or j > i):
                problems.append(
                    Problem(
                        src,
                        at("SIGMA", i),
                        f"SIGMA({max(i, j)},{min(i, j)}) = {v:.6g} in {ext.path} correlates "
                        f"SIGMA({i}) ({name}) with SIGMA({j}): only variances are taken, so "
                        "dropping it would change the model",
                    )
                )
    if problems:
        return None, problems
    thetas = list(fit_mapping.theta)
    eta_idx = [n - 1 for n in fit_mapping.eta]
    theta_cov = None
    if cov is not None:
        k = [cov.names.index(f"THETA{n}") for n in thetas]
        theta_cov = cov.matrix[np.ix_(k, k)].copy()
    etas = None
    if phi is not None:
        etas = pd.DataFrame(
            phi.etas.to_numpy(dtype=np.float64)[:, eta_idx],
            index=phi.etas.index,
            columns=list(fit_mapping.eta.values()),
        )
    sources = {"ext": ext.sha256}
    if cov is not None:
        sources["cov"] = cov.sha256
    if phi is not None:
        sources["phi"] = phi.sha256
    return (
        FittedModel(
            typical=MappingProxyType(
                {p: float(ext.theta[n - 1]) for n, p in fit_mapping.theta.items()}
            ),
            fixed=tuple(p for n, p in fit_mapping.theta.items() if ext.theta_fixed[n - 1]),
            omega_names=tuple(fit_mapping.eta.values()),
            omega=ext.omega[np.ix_(eta_idx, eta_idx)].copy(),
            sigma=MappingProxyType(
                {p: float(ext.sigma[n - 1, n - 1]) for n, p in fit_mapping.sigma.items()}
            ),
            theta_cov=theta_cov,
            etas=etas,
            eta_kind=None if phi is None else phi.kind,
            ofv=ext.ofv,
            method=ext.method,
            sources=MappingProxyType(sources),
        ),
        [],
    )
