"""``model.from_fit``: a study that starts from a fitted NONMEM, Monolix or nlmixr2
model.

The study names the fit's files, relative to the study file, under one of three keys
that say whose fit it is, and maps its quantities to the model's (``map``):

- NONMEM: ``ext`` (and optionally ``cov``, ``phi``, ``table``); ``map`` keys
  ``THETA(n)``, ``ETA(n)``, ``SIGMA(n)`` (:func:`vtrial.data.fitted.parse_mapping`).
- Monolix: ``monolix: {parameters, random_effects, estimate, covariance,
  covariance_scale}`` (:mod:`vtrial.data.monolix`); ``map`` keys the names of
  ``populationParameters.txt``: ``Cl_pop: CL`` (typical value), ``omega_Cl: CL`` (the
  random effect: variance ``omega_Cl**2``, and its ``corr_`` rows with the other mapped
  random effects), ``b: CP.proportional`` (a residual-error SD, as Monolix gives it).
- nlmixr2: ``nlmixr2: {fixef, omega, ranef, cov}`` (:mod:`vtrial.data.nlmixr2`, the
  CSV files R writes); ``map`` keys the names of the fit: ``tcl: {parameter: CL, scale:
  log}`` (a typical value estimated as its log: CL = exp(tcl)), ``eta.cl: CL`` (the
  random effect, a row of ``omega``), ``prop.sd: CP.proportional`` (an SD).

:func:`load_fit` reads and checks them (:func:`vtrial.data.fitted.apply_mapping`,
:func:`vtrial.data.fitted.apply_named_mapping`) and :func:`with_fit` writes what they
give into the study's data, exactly as if the study file said it (NONMEM's terms below;
a Monolix or nlmixr2 fixed effect is a THETA, its random effect an ETA, and its residual
errors are SDs, as a THETA mapped to ``OUTPUT.part``):

- ``THETA(n): P`` -> ``model.parameters.P.value`` (in the unit of
  ``model.parameters.P.unit`` when the study gives one, else the model's).
- ``ETA(n): P`` -> ``model.iiv.omega.P`` (the variance ``OMEGA(n,n)``) and, for two
  mapped ETAs with a nonzero ``OMEGA(i,j)``, ``model.iiv.correlations.P~Q`` =
  ``OMEGA(i,j) / sqrt(OMEGA(i,i) OMEGA(j,j))``. The fit's ETAs come first in
  ``model.iiv.omega``, in ETA order, then the study's own. The distribution is the
  study's ``model.iiv.distribution`` (``lognormal`` by default: NONMEM's
  ``P = TVP * EXP(ETA(n))``).
- ``SIGMA(n): OUT.part`` (``part``: ``additive``, ``proportional`` or
  ``exponential``) -> ``model.residual_error.OUT.part`` = ``sqrt(SIGMA(n,n))`` (SIGMA
  is a variance, the study's value an SD); ``Y = F + F*EPS(1) + EPS(2)`` is
  ``{SIGMA(1): CP.proportional, SIGMA(2): CP.additive}``. A SIGMA FIXED in the fit is
  refused: it is the idiom ``W = THETA(3) * IPRED`` with SIGMA fixed to 1, whose SD is
  the THETA, mapped as ``THETA(3): CP.proportional`` (SD = ``|THETA(3)|``).
- ``cov`` -> ``study.uncertainty.theta``: the covariance of the THETAs mapped to model
  parameters, ``scale: linear`` (NONMEM's covariance is that of the THETAs as
  estimated); THETAs with variance 0 (FIXED) are left out. Monolix's ``covariance``:
  ``scale`` is its ``covariance_scale`` (required with it); nlmixr2's ``cov``: the scale
  of the mapped fixed effects (``log`` for ``{scale: log}``; all must share one), and
  fixed effects absent from it (fixed in the fit) are left out.
- the individual random effects (``phi``, ``random_effects``, ``ranef``) ->
  ``fit.etas`` by model parameter, for ``population.dataset.parameters: fit``.

A value given both by the fit and by the study (``model.parameters.CL.value`` with
``THETA(1): CL``, ``model.iiv.omega.CL`` or a correlation of two mapped ETAs,
``model.residual_error.CP.proportional``, ``study.uncertainty.theta`` with ``cov``) is
a problem: one value, one place. Everything the fit does not give (covariate models,
units, other parameters' values and IIV, IOV, ``omega_df``) the study may add.

Problems name the study file, the key (``model.from_fit.map.THETA(3)``,
``model.from_fit.ext``, ``model.from_fit.map.omega_V``,
``model.from_fit.nlmixr2.fixef``), the rule and the value found; a problem of a fitted file's
content names that file and its line. Nothing prints a file's contents beyond one
value; the files are identified by SHA-256 (:attr:`FittedModel.sources`, and the
study's hash and manifest, :attr:`vtrial.study.config.Study.data_files`).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vtrial.data._text import NamedMatrix
from vtrial.data.fitted import (
    FitMapping,
    FittedModel,
    NamedEstimates,
    apply_mapping,
    apply_named_mapping,
    parse_mapping,
    parse_named_mapping,
)
from vtrial.data.monolix import (
    MonolixEstimates,
    MonolixEtas,
    read_monolix_covariance,
    read_monolix_etas,
    read_monolix_population,
)
from vtrial.data.nlmixr2 import (
    Nlmixr2Fixef,
    Nlmixr2Ranef,
    read_nlmixr2_fixef,
    read_nlmixr2_matrix,
    read_nlmixr2_ranef,
)
from vtrial.data.nonmem import (
    CovarianceMatrix,
    EtaTable,
    ExtEstimates,
    read_cov,
    read_ext,
    read_phi,
)
from vtrial.errors import DatasetError, Problem
from vtrial.model.residual import ERROR_KEYS
from vtrial.population.spec import omega_matrix
from vtrial.population.uncertainty import matrix_problems

if TYPE_CHECKING:
    from vtrial.model.spec import Model

__all__ = [
    "FIT_FILES",
    "MONOLIX_FILES",
    "NLMIXR2_FILES",
    "etas_key",
    "fit_files",
    "load_fit",
    "stand_in",
    "with_fit",
]

HERE = "model.from_fit"
#: the file keys of a NONMEM ``model.from_fit``, in reading (and hashing) order
FIT_FILES = ("ext", "cov", "phi")
#: the file keys of ``model.from_fit.monolix``, in reading (and hashing) order
MONOLIX_FILES = ("parameters", "random_effects", "covariance")
#: the file keys of ``model.from_fit.nlmixr2``, in reading (and hashing) order
NLMIXR2_FILES = ("fixef", "omega", "ranef", "cov")
#: the key of ``model.from_fit`` that says whose fit it is
_FORMATS = ("ext", "monolix", "nlmixr2")
#: the key of each format's individual random effects
_ETAS = {"ext": "phi", "monolix": "monolix.random_effects", "nlmixr2": "nlmixr2.ranef"}
#: relative tolerance of the positive semi-definiteness check of the mapped OMEGA
#: (that of ``model.iiv``, :func:`vtrial.population.sampling.variability_problems`)
_PSD_TOL = 1e-10

_Read = (
    ExtEstimates
    | CovarianceMatrix
    | EtaTable
    | MonolixEstimates
    | MonolixEtas
    | NamedMatrix
    | Nlmixr2Fixef
    | Nlmixr2Ranef
)


def _format(spec: Mapping[str, Any]) -> str | None:
    """``ext`` (NONMEM), ``monolix`` or ``nlmixr2``: the one format key given."""
    found = [k for k in _FORMATS if k in spec]
    return found[0] if len(found) == 1 else None


def fit_files(data: Mapping[str, Any], base_dir: Path) -> list[Path]:
    """The fitted files of a study's ``model.from_fit`` (NONMEM's ``ext``, ``cov``,
    ``phi``; the files of ``monolix`` or ``nlmixr2``), relative to ``base_dir``, in
    reading order; empty without ``from_fit``."""
    spec = data["model"].get("from_fit") or {}
    files = [base_dir / str(spec[k]) for k in FIT_FILES if k in spec]
    for fmt, keys in (("monolix", MONOLIX_FILES), ("nlmixr2", NLMIXR2_FILES)):
        sub = spec.get(fmt)
        if isinstance(sub, Mapping):
            files += [base_dir / str(sub[k]) for k in keys if k in sub]
    return files


def etas_key(data: Mapping[str, Any]) -> str:
    """The key of the individual random effects of the study's ``model.from_fit``
    (``model.from_fit.phi``, ``model.from_fit.monolix.random_effects``,
    ``model.from_fit.nlmixr2.ranef``), for problems."""
    spec = data["model"].get("from_fit") or {}
    return f"{HERE}.{_ETAS[_format(spec) or 'ext']}"


def _read_file(kind: str, path: str, option: Any) -> _Read:
    if kind == "ext":
        return read_ext(path, option)
    if kind == "cov":
        return read_cov(path, option)
    if kind == "phi":
        return read_phi(path, option)
    if kind == "monolix.parameters":
        return read_monolix_population(path)
    if kind == "monolix.random_effects":
        return read_monolix_etas(path, option)
    if kind == "monolix.covariance":
        return read_monolix_covariance(path)
    if kind == "nlmixr2.fixef":
        return read_nlmixr2_fixef(path)
    if kind == "nlmixr2.ranef":
        return read_nlmixr2_ranef(path)
    what = {"nlmixr2.omega": "nlmixr2 OMEGA", "nlmixr2.cov": "nlmixr2 covariance"}[kind]
    return read_nlmixr2_matrix(path, what)


@functools.lru_cache(maxsize=16)
def _read_cached(
    kind: str, path: str, mtime_ns: int, size: int, option: Any
) -> tuple[_Read | None, tuple[Problem, ...]]:
    """A fitted file read (cached by path, modification time and size: every stage
    loads the study)."""
    del mtime_ns, size  # cache keys only
    try:
        return _read_file(kind, path, option), ()
    except DatasetError as exc:
        return None, tuple(exc.problems)


def _read(
    kind: str, written: Any, base_dir: Path, source: str, option: Any = None
) -> tuple[Any, list[Problem]]:
    """The file ``written`` of key ``kind`` (``ext``, ``monolix.parameters``) read,
    and its problems at the key."""
    written = str(written)
    path = base_dir / written
    where = f"{HERE}.{kind}"
    try:
        st = path.stat()
    except OSError as exc:
        msg = f"cannot read the fitted file {path} ({exc.strerror}), got {written!r}"
        return None, [Problem(source, where, msg)]
    result, found = _read_cached(kind, str(path), st.st_mtime_ns, st.st_size, option)
    return result, [
        Problem(source, where, f"{p.file}" + (f", {p.where}" if p.where else "") + f": {p.message}")
        for p in found
    ]


def load_fit(
    d: Mapping[str, Any], model: Model | None, source: str, base_dir: Path
) -> tuple[FittedModel | None, list[Problem]]:
    """Read and check a study's ``model.from_fit``.

    Parameters
    ----------
    d : mapping
        The study's data (schema-valid).
    model : Model or None
        The study's model (None when it cannot be built: names are not checked).
    source : str
        The study file.
    base_dir : Path
        The study file's folder.

    Returns
    -------
    fit : FittedModel or None
        None without ``from_fit`` or when there is a problem.
    problems : list of Problem
        Every problem of the mapping, of the files and of the values the study gives
        twice (see the module docstring).
    """
    spec = d["model"].get("from_fit")
    if not spec:
        return None, []
    fmt = _format(spec)
    if fmt is None:
        given = [k for k in _FORMATS if k in spec]
        return None, [
            Problem(
                source,
                HERE,
                "give the fit's files under exactly one of 'ext' (NONMEM), 'monolix' or "
                f"'nlmixr2', got {given or 'none'}",
            )
        ]
    if fmt != "ext":
        nonmem = [k for k in ("cov", "phi", "table") if k in spec]
        if nonmem:
            return None, [
                Problem(
                    source,
                    f"{HERE}.{nonmem[0]}",
                    f"{nonmem} are keys of a NONMEM fit (with ext): a {fmt} fit names its "
                    f"files under model.from_fit.{fmt}",
                )
            ]
        return _load_named(d, spec, fmt, model, source, base_dir)
    return _load_nonmem(d, spec, model, source, base_dir)


def _load_nonmem(
    d: Mapping[str, Any], spec: Mapping[str, Any], model: Model | None, source: str, base_dir: Path
) -> tuple[FittedModel | None, list[Problem]]:
    out: list[Problem] = []
    fm, found = parse_mapping(spec["map"], source, f"{HERE}.map")
    out += found
    if fm is not None:
        out += _mapping_problems(d, fm, model, source, "cov" in spec, f"{HERE}.cov")
    table = int(spec.get("table", -1))
    read: dict[str, Any] = {}
    file_problems: list[Problem] = []
    for kind in FIT_FILES:
        if kind in spec:
            read[kind], found = _read(kind, spec[kind], base_dir, source, table)
            file_problems += found
    out += file_problems
    ext: ExtEstimates | None = read.get("ext")
    for kind in ("cov", "phi"):
        other = read.get(kind)
        if ext is not None and other is not None and other.table_number != ext.table_number:
            out.append(
                Problem(
                    source,
                    f"{HERE}.{kind}",
                    f"{other.path} gives TABLE NO. {other.table_number} and {ext.path} TABLE "
                    f"NO. {ext.table_number} (table={table}): the files must come from the "
                    "same estimation step",
                )
            )
    if fm is None or ext is None or file_problems:
        return None, out
    fitted, found = apply_mapping(fm, ext, read.get("cov"), read.get("phi"), source=source)
    out += found
    if fitted is not None:
        out += _sigma_problems(fitted, fm, ext, source)
        out += _value_problems(fitted, fm, ext.path, source, f"{HERE}.cov")
    return (fitted if not out else None), out


def _load_named(
    d: Mapping[str, Any],
    spec: Mapping[str, Any],
    fmt: str,
    model: Model | None,
    source: str,
    base_dir: Path,
) -> tuple[FittedModel | None, list[Problem]]:
    """A Monolix or nlmixr2 fit: the map's names are checked against the files read."""
    sub = spec[fmt]
    out: list[Problem] = []
    nm, found = parse_named_mapping(spec["map"], source, f"{HERE}.map", scales=fmt == "nlmixr2")
    out += found
    keys = MONOLIX_FILES if fmt == "monolix" else NLMIXR2_FILES
    cov_key = "covariance" if fmt == "monolix" else "cov"
    read: dict[str, Any] = {}
    file_problems: list[Problem] = []
    for key in keys:
        if key in sub:
            option = sub.get("estimate", "mode") if key == "random_effects" else None
            read[key], found = _read(f"{fmt}.{key}", sub[key], base_dir, source, option)
            file_problems += found
    out += file_problems
    if fmt == "monolix" and "covariance" in sub and "covariance_scale" not in sub:
        out.append(
            Problem(
                source,
                f"{HERE}.monolix.covariance_scale",
                "is required with covariance: say whether the covariance is that of the "
                "population parameters (linear) or of their logs (log; Monolix gives the "
                "covariance of the transformed parameters in some versions, which for "
                "log-normal parameters is log)",
            )
        )
    if fmt == "monolix" and "covariance_scale" in sub and "covariance" not in sub:
        out.append(
            Problem(
                source,
                f"{HERE}.monolix.covariance_scale",
                "is the scale of covariance, which is not given: give covariance or leave "
                "out covariance_scale",
            )
        )
    if fmt == "monolix" and nm is not None and read.get("parameters") is not None:
        out += _monolix_roles(nm.entries, read["parameters"], source)
    if fmt == "nlmixr2" and "ranef" in sub and "omega" not in sub:
        out.append(
            Problem(
                source,
                f"{HERE}.nlmixr2.ranef",
                "the random effects need their OMEGA: give model.from_fit.nlmixr2.omega",
            )
        )
    if nm is None or out:
        return None, out
    est = _monolix(read, sub) if fmt == "monolix" else _nlmixr2(read)
    cov_where = f"{HERE}.{fmt}.{cov_key}"
    fm, fitted, found = apply_named_mapping(nm, est, source=source, cov_where=cov_where)
    out += found
    if fm is None or fitted is None:
        return None, out
    out += _mapping_problems(d, fm, model, source, cov_key in sub, cov_where)
    out += _value_problems(fitted, fm, est.omega_path, source, cov_where)
    return (fitted if not out else None), out


def _monolix_roles(
    entries: Mapping[str, tuple[str, str | None]], pop: MonolixEstimates, source: str
) -> list[Problem]:
    """A Monolix ``<p>_pop`` maps to a parameter, a residual-error parameter to
    ``OUTPUT.part``."""
    out: list[Problem] = []
    for key, (target, _) in entries.items():
        at = f"{HERE}.map.{key}"
        if key.endswith("_pop") and key[:-4] in pop.typical and "." in target:
            out.append(
                Problem(
                    source,
                    at,
                    f"{key} is a typical value: map it to a model parameter, got {target!r}",
                )
            )
        elif key in pop.residual and "." not in target:
            out.append(
                Problem(
                    source,
                    at,
                    f"{key} is a residual-error parameter of {pop.path}: map it to "
                    f"OUTPUT.part (CP.additive, CP.proportional), got {target!r}",
                )
            )
    return out


def _monolix(read: Mapping[str, Any], sub: Mapping[str, Any]) -> NamedEstimates:
    """A Monolix fit by the names of ``populationParameters.txt``."""
    pop: MonolixEstimates = read["parameters"]
    etas: MonolixEtas | None = read.get("random_effects")
    cov: NamedMatrix | None = read.get("covariance")
    fixed = {f"{p}_pop": v for p, v in pop.typical.items()} | dict(pop.residual)
    unmappable: dict[str, str] = {}
    for p in pop.covariate_effects:
        unmappable[f"beta_{p}"] = (
            "a covariate effect is not mapped: write the covariate model in "
            "model.parameters.<P>.covariates"
        )
    for name in pop.other:
        unmappable[name] = "inter-occasion variability is not mapped: give it in the study"
    for i, a in enumerate(pop.omega_names):
        for b in pop.omega_names[i + 1 :]:
            for name in (f"corr_{a}_{b}", f"corr_{b}_{a}"):
                unmappable[name] = (
                    f"a correlation comes with the random effects it links: map omega_{a} "
                    f"and omega_{b}"
                )
    sources = {"parameters": pop.sha256}
    if etas is not None:
        sources["random_effects"] = etas.sha256
    if cov is not None:
        sources["covariance"] = cov.sha256
    return NamedEstimates(
        fixed=fixed,
        fixed_path=pop.path,
        random=tuple(f"omega_{p}" for p in pop.omega_names),
        omega=pop.omega,
        omega_path=pop.path,
        eta_columns=pop.omega_names,
        etas=None if etas is None else etas.etas,
        etas_path=None if etas is None else etas.path,
        cov=cov,
        cov_scale=sub.get("covariance_scale") if cov is not None else None,
        unmappable=unmappable,
        method="Monolix",
        sources=sources,
    )


def _nlmixr2(read: Mapping[str, Any]) -> NamedEstimates:
    """An nlmixr2 fit by the names of its fixed and random effects."""
    fixef: Nlmixr2Fixef = read["fixef"]
    omega: NamedMatrix | None = read.get("omega")
    ranef: Nlmixr2Ranef | None = read.get("ranef")
    cov: NamedMatrix | None = read.get("cov")
    sources = {k: v.sha256 for k, v in read.items()}
    names = omega.names if omega is not None else ()
    return NamedEstimates(
        fixed=fixef.values,
        fixed_path=fixef.path,
        random=names,
        omega=omega.matrix if omega is not None else np.zeros((0, 0)),
        omega_path=omega.path if omega is not None else fixef.path,
        eta_columns=names,
        etas=None if ranef is None else ranef.etas,
        etas_path=None if ranef is None else ranef.path,
        cov=cov,
        cov_scale=None,
        unmappable={},
        method="nlmixr2",
        sources=sources,
    )


def _mapping_problems(
    d: Mapping[str, Any],
    fm: FitMapping,
    model: Model | None,
    source: str,
    has_cov: bool,
    cov_where: str,
) -> list[Problem]:
    """Names the mapping gives that the model lacks, and values the study gives too."""
    out: list[Problem] = []
    m = d["model"]
    params = m.get("parameters") or {}
    iiv = m.get("iiv") or {}
    residual = m.get("residual_error") or {}

    def bad(kind: str, n: int, msg: str) -> None:
        out.append(Problem(source, fm.at(kind, n), msg))

    def not_parameter(kind: str, n: int, name: str) -> bool:
        if model is None or name in model.parameters:
            return False
        bad(
            kind, n, f"not a model parameter (parameters: {sorted(model.parameters)}), got {name!r}"
        )
        return True

    residual_from: dict[str, str] = {}
    for kind, mapping in (("THETA", fm.theta), ("SIGMA", fm.sigma)):
        for n, name in mapping.items():
            if "." not in name:
                if kind == "SIGMA":
                    bad(
                        kind,
                        n,
                        f"must be OUTPUT.part with part one of {list(ERROR_KEYS)} (SIGMA(n) is "
                        f"the variance of that part of the output's residual error), got {name!r}",
                    )
                continue
            output, part = name.split(".")
            if part not in ERROR_KEYS:
                bad(
                    kind,
                    n,
                    f"the part after the dot must be one of {list(ERROR_KEYS)}, got {name!r}",
                )
                continue
            if model is not None and output not in model.outputs:
                bad(
                    kind, n, f"{output!r} is not a model output {list(model.outputs)}, got {name!r}"
                )
                continue
            observed = ((d.get("outputs") or {}).get("observations") or {}).get("outputs", [])
            if output not in observed:
                bad(
                    kind,
                    n,
                    f"a residual error applies to the sampled observations: add {output} to "
                    f"outputs.observations.outputs (now {list(observed)}), got {name!r}",
                )
            if part in (residual.get(output) or {}):
                bad(
                    kind,
                    n,
                    f"{name} comes from {fm.label(kind, n)} of the fit and model.residual_error."
                    f"{name} gives {residual[output][part]} too: give it in one place",
                )
            if name in residual_from:
                bad(kind, n, f"{name} is also mapped from {residual_from[name]}: map it once")
            residual_from.setdefault(name, fm.label(kind, n))
    for n, name in fm.theta.items():
        if "." in name or not_parameter("THETA", n, name):
            continue
        given = params.get(name) or {}
        if "value" in given:
            bad(
                "THETA",
                n,
                f"the typical value of {name} comes from {fm.label('THETA', n)} of the fit and "
                f"model.parameters.{name}.value gives {given['value']} too: give it in one place",
            )
    mapped_eta = {name: n for n, name in fm.eta.items()}
    for n, name in fm.eta.items():
        if not_parameter("ETA", n, name):
            continue
        if name in (iiv.get("omega") or {}):
            bad(
                "ETA",
                n,
                f"the IIV variance of {name} comes from {fm.variance_label(n)} of the fit and "
                f"model.iiv.omega.{name} gives {iiv['omega'][name]} too: give it in one place",
            )
    for pair, r in (iiv.get("correlations") or {}).items():
        a, _, b = str(pair).partition("~")
        if a in mapped_eta and b in mapped_eta:
            i, j = sorted((mapped_eta[a], mapped_eta[b]))
            bad(
                "ETA",
                mapped_eta[a],
                f"the covariance of {a} and {b} comes from {fm.covariance_label(i, j)} of the "
                "fit and "
                f"model.iiv.correlations.{pair} gives {r} too: give it in one place",
            )
    if has_cov:
        theta = (d["study"].get("uncertainty") or {}).get("theta")
        if theta:
            out.append(
                Problem(
                    source,
                    cov_where,
                    "the covariance of the fit gives study.uncertainty.theta, which the "
                    f"study gives too (parameters {list(theta.get('parameters', []))}): give it "
                    "in one place",
                )
            )
        if not fm.named and not any("." not in name for name in fm.theta.values()):
            out.append(
                Problem(
                    source,
                    f"{HERE}.cov",
                    "no THETA is mapped to a model parameter, so the covariance would not be "
                    "used: map THETAs in model.from_fit.map or leave out cov",
                )
            )
    return out


def _sigma_problems(
    fitted: FittedModel, fm: FitMapping, ext: ExtEstimates, source: str
) -> list[Problem]:
    """SIGMAs of a NONMEM fit that the study's keys cannot take."""
    out: list[Problem] = []
    for n, name in fm.sigma.items():
        if ext.sigma_fixed[n - 1, n - 1]:
            out.append(
                Problem(
                    source,
                    fm.at("SIGMA", n),
                    f"SIGMA({n}) is FIXED in {ext.path} (to {ext.sigma[n - 1, n - 1]:.6g}): the "
                    "residual error is then scaled by a THETA, map that THETA to "
                    f"{name} instead (its absolute value is the SD)",
                )
            )
        elif not fitted.sigma[name] > 0:
            out.append(
                Problem(
                    source,
                    fm.at("SIGMA", n),
                    "a residual error needs a variance > 0, "
                    f"SIGMA({n}) is {fitted.sigma[name]:.6g}",
                )
            )
    return out


def _value_problems(
    fitted: FittedModel, fm: FitMapping, path: str, source: str, cov_where: str
) -> list[Problem]:
    """Values of the fit that the study's keys cannot take (see the module docstring);
    ``path`` is the file of OMEGA."""
    out: list[Problem] = []
    for n, name in fm.theta.items():
        if "." in name and fitted.typical[name] == 0:
            out.append(
                Problem(
                    source,
                    fm.at("THETA", n),
                    f"a residual error SD must be != 0, {fm.label('THETA', n)} is 0",
                )
            )
    iiv = _iiv(fitted)
    for n, var in zip(fm.eta, np.diag(fitted.omega), strict=True):
        if var < 0:
            out.append(
                Problem(
                    source,
                    fm.at("ETA", n),
                    f"a variance must be >= 0, {fm.variance_label(n)} is {var:.6g}",
                )
            )
    for pair, r in iiv["correlations"].items():
        if not -1 <= r <= 1:
            a = pair.split("~")[0]
            n = next(k for k, v in fm.eta.items() if v == a)
            out.append(
                Problem(
                    source,
                    fm.at("ETA", n),
                    f"the correlation {pair} of OMEGA in {path} must be in [-1, 1], got {r:.6g}",
                )
            )
    if not out and fitted.omega.size:
        w = np.linalg.eigvalsh(omega_matrix(iiv))
        if w.min() < -_PSD_TOL * max(1.0, float(w.max())):
            out.append(
                Problem(
                    source,
                    fm.where,
                    f"the mapped OMEGA of {path} must be positive semi-definite, smallest "
                    f"eigenvalue {w.min():.3g}",
                )
            )
    theta = _theta_uncertainty(fitted)
    if theta is not None:
        mat = np.asarray(theta["covariance"], dtype=np.float64)
        for msg in matrix_problems(mat, theta["parameters"]):
            what = "fixed effects" if fm.named else "THETAs"
            out.append(Problem(source, cov_where, f"the covariance of the mapped {what} {msg}"))
    return out


def _iiv(fitted: FittedModel) -> dict[str, Any]:
    """``model.iiv`` ``omega`` and ``correlations`` of the fit's mapped OMEGA."""
    names = fitted.omega_names
    var = [float(fitted.omega[i, i]) for i in range(len(names))]
    corr: dict[str, float] = {}
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            c = float(fitted.omega[i, j])
            if c != 0:
                corr[f"{names[i]}~{names[j]}"] = (
                    c / math.sqrt(var[i] * var[j]) if var[i] * var[j] > 0 else math.inf
                )
    return {"omega": dict(zip(names, var, strict=True)), "correlations": corr}


def _theta_uncertainty(fitted: FittedModel) -> dict[str, Any] | None:
    """``study.uncertainty.theta`` of the fit's THETA covariance (the THETAs mapped to
    model parameters, variance > 0, on the fit's scale), None without one."""
    if fitted.theta_cov is None:
        return None
    names = list(fitted.typical)
    keep = [k for k, name in enumerate(names) if "." not in name and fitted.theta_cov[k, k] > 0]
    if not keep:
        return None
    sub = fitted.theta_cov[np.ix_(keep, keep)]
    return {
        "parameters": [names[k] for k in keep],
        "covariance": [[float(x) for x in row] for row in sub],
        "scale": fitted.theta_scale,
    }


def with_fit(d: Mapping[str, Any], fit: FittedModel | None) -> dict[str, Any]:
    """The study's data with the fit's values written in (see the module docstring).

    Parameters
    ----------
    d : mapping
        Study data (as written, or with defaults filled), checked by :func:`load_fit`.
    fit : FittedModel or None
        From :func:`load_fit`; None gives a copy of ``d``.

    Returns
    -------
    dict
        A new study (``d`` is not changed), ``model.from_fit`` kept as it is.
    """
    out = copy.deepcopy(dict(d))
    if fit is None:
        return out
    m = out["model"]
    sds: dict[str, float] = {}  # OUTPUT.part -> SD
    for name, value in fit.typical.items():
        if "." in name:
            sds[name] = abs(float(value))
        else:
            m.setdefault("parameters", {}).setdefault(name, {})["value"] = float(value)
    sds.update({name: math.sqrt(float(var)) for name, var in fit.sigma.items()})
    for name, sd in sds.items():
        output, part = name.split(".")
        m.setdefault("residual_error", {}).setdefault(output, {})[part] = sd
    if fit.omega_names:
        iiv = m.setdefault("iiv", {})
        fitted = _iiv(fit)
        iiv["omega"] = fitted["omega"] | dict(iiv.get("omega") or {})
        iiv["correlations"] = fitted["correlations"] | dict(iiv.get("correlations") or {})
    theta = _theta_uncertainty(fit)
    if theta is not None:
        out["study"].setdefault("uncertainty", {})["theta"] = theta
    return out


def stand_in(d: Mapping[str, Any], model: Model | None) -> dict[str, Any]:
    """The study's data for checking its other keys when ``model.from_fit`` has a
    problem (:func:`load_fit` gives no fit): the model parameters mapped from ETAs get
    a stand-in IIV variance (1), so that the study's keys naming them
    (``model.iiv.correlations``, ``model.iiv.distribution``) are not refused as well."""
    out = copy.deepcopy(dict(d))
    spec = out["model"].get("from_fit")
    if not spec or model is None:
        return out
    names = [name for name in _eta_targets(spec) if name in model.parameters]
    if names:
        iiv = out["model"].setdefault("iiv", {})
        iiv["omega"] = dict.fromkeys(names, 1.0) | dict(iiv.get("omega") or {})
    return out


def _eta_targets(spec: Mapping[str, Any]) -> list[str]:
    """The parameters the map gives a random effect, as far as the map tells without
    reading the fit (Monolix: ``omega_`` names; nlmixr2: none)."""
    fmt = _format(spec)
    if fmt == "ext":
        fm, _ = parse_mapping(spec["map"], "", "")
        return [] if fm is None else list(fm.eta.values())
    if fmt == "monolix":
        nm, _ = parse_named_mapping(spec["map"], "", "", scales=False)
        if nm is not None:
            return [t for k, (t, _) in nm.entries.items() if k.startswith("omega_")]
    return []
