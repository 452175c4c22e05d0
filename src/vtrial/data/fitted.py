"""Fitted population models in terms of the study's parameters: the declared mapping
from fitted quantities (THETA, ETA, SIGMA) to model parameters.

What is done
------------
- :func:`parse_mapping` and :func:`apply_mapping`: the study file's declaration of
  which THETA, ETA and SIGMA feed which model parameter (``from_fit.map``) and the
  :class:`FittedModel` it gives, from what the readers of NONMEM's tables
  (:mod:`~vtrial.data.nonmem`) return.
- :func:`parse_named_mapping` and :func:`apply_named_mapping`: the same for fits
  whose quantities have names (Monolix, :mod:`~vtrial.data.monolix`: ``Cl_pop``,
  ``omega_Cl``, ``b``; nlmixr2, :mod:`~vtrial.data.nlmixr2`: ``tcl``, ``eta.cl``,
  ``prop.sd``), from their estimates in the common form :class:`NamedEstimates`.

Problems
--------
:func:`parse_mapping` and :func:`apply_mapping` return their problems, as
:class:`vtrial.errors.Problem` ``(file, where, message)`` with ``where`` the key path
of the mapping's entry, for a study loader to merge with its own. Nothing here prints
a file's contents: a file is identified by its SHA-256.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from vtrial.data._text import NamedMatrix, listed
from vtrial.data.nonmem import CovarianceMatrix, EtaTable, ExtEstimates
from vtrial.errors import Problem

__all__ = [
    "SCALES",
    "FitMapping",
    "FittedModel",
    "NamedEstimates",
    "NamedMapping",
    "apply_mapping",
    "apply_named_mapping",
    "parse_mapping",
    "parse_named_mapping",
]

#: scales of a fixed effect mapped by name (``{parameter: CL, scale: log}``)
SCALES = ("linear", "log")

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
    named : bool
        A mapping by name (Monolix, nlmixr2: :func:`apply_named_mapping`), whose
        THETAs and ETAs are numbered in file order and shown by their names.
    """

    theta: Mapping[int, str]
    eta: Mapping[int, str]
    sigma: Mapping[int, str]
    keys: Mapping[tuple[str, int], str]
    source: str
    where: str
    named: bool = False

    def at(self, kind: str, n: int) -> str:
        """Key path of the entry ``kind(n)`` (``from_fit.map.THETA(1)``)."""
        key = self.keys.get((kind, n), f"{kind}({n})")
        return f"{self.where}.{key}" if self.where else key

    def label(self, kind: str, n: int) -> str:
        """The fitted quantity as the fit names it: ``THETA(1)``, or ``Cl_pop``."""
        return self.keys[(kind, n)] if self.named else f"{kind}({n})"

    def variance_label(self, n: int) -> str:
        """The fit's variance of ETA ``n``: ``OMEGA(n,n)``, or ``omega_Cl``."""
        return self.keys[("ETA", n)] if self.named else f"OMEGA({n},{n})"

    def covariance_label(self, i: int, j: int) -> str:
        """The fit's covariance of ETAs ``i`` and ``j``: ``OMEGA(j,i)`` (j > i), or
        ``the covariance of omega_Cl and omega_V``."""
        if self.named:
            return f"the covariance of {self.keys[('ETA', i)]} and {self.keys[('ETA', j)]}"
        return f"OMEGA({max(i, j)},{min(i, j)})"


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
        ``ext``, ``cov``, ``phi`` (NONMEM; ``parameters``, ``random_effects``,
        ``covariance`` of Monolix; ``fixef``, ``omega``, ``ranef``, ``cov`` of
        nlmixr2) -> SHA-256 of the file read (provenance).
    theta_scale : {"linear", "log"}
        The scale of ``theta_cov``: ``log`` for fixed effects estimated as the log of
        the typical value (nlmixr2's ``tcl``), or a Monolix covariance so declared.
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
    theta_scale: str = "linear"


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


# ---------------------------------------------------------------------------- by name


@dataclass(frozen=True, eq=False)
class NamedMapping:
    """A checked ``from_fit.map`` of a fit whose quantities have names.

    Attributes
    ----------
    entries : mapping of str to (str, str or None)
        The fit's name -> (model parameter or ``OUTPUT.part``, scale or None), in the
        order written.
    source, where : str
        The study file and the key path of the mapping.
    """

    entries: Mapping[str, tuple[str, str | None]]
    source: str
    where: str

    def at(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name


@dataclass(frozen=True, eq=False)
class NamedEstimates:
    """A fit whose quantities have names, in the form :func:`apply_named_mapping`
    takes (built from the Monolix or nlmixr2 readers by the study loader).

    Attributes
    ----------
    fixed : mapping of str to float
        Fixed effects by the name a map uses (``Cl_pop``, ``b``; ``tcl``,
        ``prop.sd``) -> estimate as given, in file order; residual-error parameters
        are SDs.
    fixed_path : str
        The file of the fixed effects (for problems).
    random : tuple of str
        Random effects by the name a map uses (``omega_Cl``; ``eta.cl``), in the order
        of ``omega``.
    omega : ndarray of float64, shape (len(random), len(random))
        Their variances and covariances.
    omega_path : str
        The file of OMEGA.
    eta_columns : tuple of str
        Each random effect's column in ``etas``.
    etas : DataFrame or None
        Each subject's random effects, indexed by ID; None without the file.
    etas_path : str or None
    cov : NamedMatrix or None
        Covariance of the estimates, rows named like ``fixed``; None without it.
    cov_scale : str or None
        Its scale when the fit states one (Monolix: ``covariance_scale``), None to take
        it from the map's scales (nlmixr2).
    unmappable : mapping of str to str
        Names of the fit a map may not use -> why (Monolix's ``corr_``, ``beta_``).
    method : str
        The program (``Monolix``, ``nlmixr2``).
    sources : mapping of str to str
        File key -> SHA-256.
    """

    fixed: Mapping[str, float]
    fixed_path: str
    random: tuple[str, ...]
    omega: np.ndarray
    omega_path: str
    eta_columns: tuple[str, ...]
    etas: pd.DataFrame | None = field(repr=False)
    etas_path: str | None
    cov: NamedMatrix | None
    cov_scale: str | None
    unmappable: Mapping[str, str]
    method: str
    sources: Mapping[str, str]


def parse_named_mapping(
    mapping: Any, source: str, where: str, *, scales: bool
) -> tuple[NamedMapping | None, list[Problem]]:
    """Check a mapping by name: ``{Cl_pop: CL, omega_Cl: CL, b: CP.proportional}``.

    Parameters
    ----------
    mapping : mapping
        The fit's name -> a parameter name or ``OUTPUT.part``, or (``scales``)
        ``{parameter: NAME, scale: linear|log}``.
    source, where : str
        The study file and the key path of the mapping.
    scales : bool
        Whether an entry may give a scale (nlmixr2's fixed effects; Monolix's
        ``<p>_pop`` are typical values as they are).

    Returns
    -------
    named_mapping : NamedMapping or None
        None when there is a problem.
    problems : list of Problem
        A malformed name, a scale other than linear or log, a scale where none may be
        given, a log scale for a residual error.
    """
    problems: list[Problem] = []
    if not isinstance(mapping, Mapping) or not mapping:
        got = type(mapping).__name__ if not isinstance(mapping, Mapping) else "an empty mapping"
        return None, [
            Problem(
                source,
                where,
                f"must be a non-empty mapping of the fit's names to parameter names, got {got}",
            )
        ]
    entries: dict[str, tuple[str, str | None]] = {}
    for key, value in mapping.items():
        at = f"{where}.{key}" if where else str(key)
        if not isinstance(key, str) or not key.strip():
            problems.append(Problem(source, at, f"the key must be a name of the fit, got {key!r}"))
            continue
        scale: Any = None
        target: Any = value
        if isinstance(value, Mapping):
            target, scale = value.get("parameter"), value.get("scale")
        named = isinstance(target, str) and (_NAME.fullmatch(target) or _DOTTED.fullmatch(target))
        if not named:
            problems.append(
                Problem(
                    source,
                    at,
                    "must be a parameter name (a letter, then letters, digits or _), or "
                    f"OUTPUT.part for a residual error, got {target!r}",
                )
            )
            continue
        if scale is not None:
            if not scales:
                problems.append(
                    Problem(
                        source,
                        f"{at}.scale",
                        "Monolix gives typical values (<p>_pop) on the parameter's own scale: "
                        f"map {key} to a name, without a scale, got scale {scale!r}",
                    )
                )
                continue
            if scale not in SCALES:
                problems.append(
                    Problem(source, f"{at}.scale", f"must be one of {list(SCALES)}, got {scale!r}")
                )
                continue
            if scale == "log" and "." in target:
                problems.append(
                    Problem(
                        source,
                        f"{at}.scale",
                        f"a residual error SD ({target}) is mapped as estimated: scale log "
                        "is for typical values",
                    )
                )
                continue
        entries[key] = (target, scale)
    if problems:
        return None, problems
    return NamedMapping(entries=MappingProxyType(entries), source=source, where=where), []


def apply_named_mapping(
    nm: NamedMapping, est: NamedEstimates, *, source: str | None = None, cov_where: str = ""
) -> tuple[FitMapping | None, FittedModel | None, list[Problem]]:
    """The fitted model of a fit with names, in terms of the study's parameters.

    A name of ``est.random`` maps to a parameter's random effect (its OMEGA), a name of
    ``est.fixed`` to a parameter's typical value (``exp`` of it with scale ``log``) or,
    as ``OUTPUT.part``, to a residual error's SD. The result's THETAs and ETAs are the
    mapped fixed and random effects numbered in file order, so that the study loader
    checks them as a NONMEM fit's (:attr:`FitMapping.named`).

    Parameters
    ----------
    nm : NamedMapping
        From :func:`parse_named_mapping`.
    est : NamedEstimates
        The fit.
    source : str, optional
        The study file (default: the mapping's).
    cov_where : str
        Key path of the covariance file (for its problems).

    Returns
    -------
    fit_mapping : FitMapping or None
    fitted : FittedModel or None
        None when there is a problem.
    problems : list of Problem
        At the map's key, naming the file: a name the fit does not have (or that a map
        may not use), a parameter mapped from two fixed or two random effects, a random
        effect correlated with an unmapped one, a mapped random effect without a column
        in the individual random effects; at ``cov_where``: no mapped fixed effect in
        the covariance, mapped fixed effects of different scales in it.
    """
    src = source or nm.source
    problems: list[Problem] = []
    fixed_of: dict[str, str] = {}  # fit name -> target
    random_of: dict[str, str] = {}
    taken: dict[tuple[str, str], str] = {}
    for key, (target, scale) in nm.entries.items():
        at = nm.at(key)
        if key in est.unmappable:
            problems.append(Problem(src, at, est.unmappable[key]))
            continue
        if key in est.random:
            if "." in target:
                problems.append(
                    Problem(
                        src,
                        at,
                        f"{key} is a random effect of {est.omega_path}: map it to a model "
                        f"parameter, got {target!r}",
                    )
                )
                continue
            if scale is not None:
                problems.append(
                    Problem(
                        src,
                        f"{at}.scale",
                        f"{key} is a random effect: its distribution is "
                        f"model.iiv.distribution.{target}, not a scale",
                    )
                )  # kept as mapped: its links in OMEGA are not reported too
            kind = "random"
        elif key in est.fixed:
            kind = "fixed"
        else:
            where_random = f" nor a random effect of {est.omega_path}" if est.random else ""
            problems.append(
                Problem(
                    src,
                    at,
                    f"{key!r} is not a fixed effect of {est.fixed_path} (it has "
                    f"{listed(list(est.fixed))}){where_random}"
                    + (f" (it has {listed(list(est.random))})" if est.random else ""),
                )
            )
            continue
        if "." not in target:
            other = taken.get((kind, target))
            if other is not None:
                what = "typical value" if kind == "fixed" else "random effect"
                problems.append(
                    Problem(
                        src,
                        at,
                        f"{target} is already mapped from {other}: a parameter takes its "
                        f"{what} from one {kind} effect, got a second one",
                    )
                )
                continue
            taken[(kind, target)] = key
        (fixed_of if kind == "fixed" else random_of)[key] = target
    fixed_names = [k for k in est.fixed if k in fixed_of]
    random_pos = [i for i, k in enumerate(est.random) if k in random_of]
    for i in random_pos:
        for j in range(len(est.random)):
            v = est.omega[i, j]
            if j != i and est.random[j] not in random_of and v != 0:
                problems.append(
                    Problem(
                        src,
                        nm.at(est.random[i]),
                        f"the covariance {v:.6g} of {est.random[i]} and {est.random[j]} in "
                        f"{est.omega_path} links {est.random[j]}, which is not mapped: dropping "
                        f"it would change the model (map {est.random[j]} too)",
                    )
                )
    etas = None
    if est.etas is not None and random_pos:
        cols = [est.eta_columns[i] for i in random_pos]
        for i, c in zip(random_pos, cols, strict=True):
            if c not in est.etas.columns:
                problems.append(
                    Problem(
                        src,
                        nm.at(est.random[i]),
                        f"{est.etas_path} has no column {c!r} (the individual random effects "
                        f"of {est.random[i]})",
                    )
                )
        if not problems:
            etas = pd.DataFrame(
                est.etas[cols].to_numpy(dtype=np.float64),
                index=est.etas.index,
                columns=[random_of[est.random[i]] for i in random_pos],
            )
    theta_cov = None
    scale = "linear"
    if est.cov is not None:
        pos = {n: k for k, n in enumerate(est.cov.names)}
        params = [k for k in fixed_names if "." not in fixed_of[k]]
        found = [k for k in params if k in pos]
        if not found:
            problems.append(
                Problem(
                    src,
                    cov_where,
                    f"none of the mapped fixed effects ({listed(params) or 'none'}) is in "
                    f"{est.cov.path}: map fixed effects, or leave out the covariance",
                )
            )
        kept = [k for k in found if est.cov.matrix[pos[k], pos[k]] > 0]
        if est.cov_scale is not None:
            scale = est.cov_scale
        else:
            scales = {k: nm.entries[k][1] or "linear" for k in kept}
            if len(set(scales.values())) > 1:
                logs = [k for k, v in scales.items() if v == "log"]
                lins = [k for k, v in scales.items() if v != "log"]
                problems.append(
                    Problem(
                        src,
                        cov_where,
                        f"study.uncertainty.theta has one scale, but the mapped fixed effects "
                        f"of {est.cov.path} are on the log scale ({listed(logs)}) and linear "
                        f"({listed(lins)}): map them on one scale, or leave out the covariance",
                    )
                )
            elif scales:
                scale = next(iter(scales.values()))
        idx = [pos.get(k, -1) for k in fixed_names]
        theta_cov = np.zeros((len(idx), len(idx)))
        for a, ia in enumerate(idx):
            for b, ib in enumerate(idx):
                if ia >= 0 and ib >= 0:
                    theta_cov[a, b] = est.cov.matrix[ia, ib]
    if problems:
        return None, None, problems
    keys: dict[tuple[str, int], str] = {}
    theta: dict[int, str] = {}
    for n, k in enumerate(fixed_names, start=1):
        theta[n] = fixed_of[k]
        keys[("THETA", n)] = k
    eta: dict[int, str] = {}
    for n, i in enumerate(random_pos, start=1):
        eta[n] = random_of[est.random[i]]
        keys[("ETA", n)] = est.random[i]
    fm = FitMapping(
        theta=MappingProxyType(theta),
        eta=MappingProxyType(eta),
        sigma=MappingProxyType({}),
        keys=MappingProxyType(keys),
        source=nm.source,
        where=nm.where,
        named=True,
    )
    typical: dict[str, float] = {}
    for k in fixed_names:
        v = float(est.fixed[k])
        typical[fixed_of[k]] = math.exp(v) if nm.entries[k][1] == "log" else v
    fitted = FittedModel(
        typical=MappingProxyType(typical),
        fixed=(),
        omega_names=tuple(eta.values()),
        omega=est.omega[np.ix_(random_pos, random_pos)].copy(),
        sigma=MappingProxyType({}),
        theta_cov=theta_cov,
        etas=etas,
        eta_kind=None if etas is None else "ETA",
        ofv=math.nan,
        method=est.method,
        sources=est.sources,
        theta_scale=scale,
    )
    return fm, fitted, []
