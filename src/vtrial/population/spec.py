"""The typed sections of a study that the population layer reads, and the study
interface of the layers below the loader.

The study loader (:mod:`vtrial.study.config`) builds these frozen sections from the
validated study data (defaults filled): :class:`Population` (covariates, each with
its typed distribution, :data:`Covariate`; criteria; covariate table,
:class:`Resample`), :class:`Design` (parallel or twin crossover, randomization),
:class:`Variability` (covariate models, IIV, IOV) and :class:`Uncertainty` (parameter
uncertainty across replicates). Each is checked next to the feature that uses it
(:mod:`vtrial.population.validate`, :func:`vtrial.population.design.design_problems`,
:func:`vtrial.population.sampling.variability_problems`,
:func:`vtrial.population.uncertainty.uncertainty_problems`).

The population, trial and analysis modules take a study through narrow structural
interfaces (:class:`typing.Protocol`): :class:`PopulationStudy` here, extended by
:class:`vtrial.trial.spec.TrialStudy`. :class:`vtrial.study.config.Study` implements
them, and the layers below the loader never import it (the layer contract of
``pyproject.toml``). This module imports no population module, so every one of them
can use it without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeAlias

import numpy as np

from vtrial.population.dataset import DatasetSource, Subjects, dataset_source

if TYPE_CHECKING:
    from vtrial.data.fitted import FittedModel
    from vtrial.model.spec import Model
    from vtrial.protocol.arms import Arm
    from vtrial.protocol.dosing import EventTable


#: Default of ``population.min_acceptance``: least acceptable share of eligible candidates.
MIN_ACCEPTANCE = 0.01

#: A parameter of a covariate's distribution: a number, or with ``by`` a read-only
#: mapping category -> number (every category of the ``by`` covariate).
PerCategory: TypeAlias = float | Mapping[str, float]
#: A list parameter of an ``empirical`` distribution: numbers, or with ``by`` a
#: read-only mapping category -> numbers.
PerCategoryList: TypeAlias = tuple[float, ...] | Mapping[str, tuple[float, ...]]


@dataclass(frozen=True)
class Normal:
    """``normal``: N(``mean``, ``sd``), truncated to ``bounds`` (lo, hi) if given; with
    ``by`` the parameters of the candidate's category of that categorical covariate.
    ``unit`` and ``description`` (every kind has them) are for reports only."""

    kind: ClassVar[str] = "normal"
    mean: PerCategory
    sd: PerCategory
    by: str | None = field(default=None, kw_only=True)
    bounds: tuple[float, float] | None = field(default=None, kw_only=True)
    unit: str | None = field(default=None, kw_only=True)
    description: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class LogNormal:
    """``lognormal``: log-normal of ``median`` and coefficient of variation ``cv``
    (log-scale SD ``sqrt(log(1 + cv**2))``), truncated to ``bounds`` if given; ``by``
    as for :class:`Normal`."""

    kind: ClassVar[str] = "lognormal"
    median: PerCategory
    cv: PerCategory
    by: str | None = field(default=None, kw_only=True)
    bounds: tuple[float, float] | None = field(default=None, kw_only=True)
    unit: str | None = field(default=None, kw_only=True)
    description: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class Uniform:
    """``uniform``: uniform on [``low``, ``high``]; ``by`` as for :class:`Normal`."""

    kind: ClassVar[str] = "uniform"
    low: PerCategory
    high: PerCategory
    by: str | None = field(default=None, kw_only=True)
    unit: str | None = field(default=None, kw_only=True)
    description: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True, kw_only=True)
class Empirical:
    """``empirical``: ``values`` (optional ``weights``) drawn as a discrete
    distribution, or ``quantiles`` (optional ``probs``, default evenly spaced from 0
    to 1) interpolated linearly; exactly one of ``values`` and ``quantiles`` is set.
    With ``by``, any of them may be given per category."""

    kind: ClassVar[str] = "empirical"
    values: PerCategoryList | None = None
    weights: PerCategoryList | None = None
    quantiles: PerCategoryList | None = None
    probs: PerCategoryList | None = None
    by: str | None = None
    unit: str | None = None
    description: str | None = None

    @property
    def per_category(self) -> tuple[str, ...] | None:
        """Categories of the first parameter given per category (None if none is)."""
        for v in (self.values, self.weights, self.quantiles, self.probs):
            if isinstance(v, Mapping):
                return tuple(v)
        return None


@dataclass(frozen=True)
class Constant:
    """``constant``: every candidate has ``value``."""

    kind: ClassVar[str] = "constant"
    value: float
    unit: str | None = field(default=None, kw_only=True)
    description: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class Categorical:
    """``categorical``: label -> frequency (read-only, in study order; they sum to 1)."""

    kind: ClassVar[str] = "categorical"
    frequencies: Mapping[str, float]
    unit: str | None = field(default=None, kw_only=True)
    description: str | None = field(default=None, kw_only=True)

    @property
    def labels(self) -> list[str]:
        """The categories, in study order."""
        return list(self.frequencies)


#: The distribution of a non-categorical sampled covariate.
Marginal: TypeAlias = Normal | LogNormal | Uniform | Empirical | Constant
#: The distribution of a sampled covariate (``population.covariates.<name>``).
Covariate: TypeAlias = Marginal | Categorical


def _numbers(value: Any) -> tuple[float, ...]:
    return tuple(float(x) for x in value)


def _per_category(value: Any, convert: Callable[[Any], Any]) -> Any:
    """``convert(value)``, or a read-only mapping category -> ``convert(v)``."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): convert(v) for k, v in value.items()})
    return convert(value)


def covariate_from_data(spec: Mapping[str, Any]) -> Covariate:
    """The typed distribution of a validated ``population.covariates.<name>`` entry.

    Raises
    ------
    TypeError
        If the entry has a key its distribution does not take (validation reports
        these, :mod:`vtrial.population.validate`).
    ValueError
        If it has no distribution.
    """
    shared: dict[str, Any] = {k: str(spec[k]) for k in ("unit", "description") if k in spec}
    if "by" in spec:
        shared["by"] = str(spec["by"])
    if "bounds" in spec:
        lo, hi = spec["bounds"]
        shared["bounds"] = (float(lo), float(hi))
    if "categorical" in spec:
        freq = spec["categorical"]
        return Categorical(MappingProxyType({str(k): float(v) for k, v in freq.items()}), **shared)
    if "normal" in spec:
        p = spec["normal"]
        return Normal(_per_category(p["mean"], float), _per_category(p["sd"], float), **shared)
    if "lognormal" in spec:
        p = spec["lognormal"]
        return LogNormal(_per_category(p["median"], float), _per_category(p["cv"], float), **shared)
    if "uniform" in spec:
        p = spec["uniform"]
        return Uniform(_per_category(p["low"], float), _per_category(p["high"], float), **shared)
    if "empirical" in spec:
        p = spec["empirical"]
        lists = {k: _per_category(v, _numbers) for k, v in p.items()}
        return Empirical(**lists, **shared)
    if "constant" in spec:
        return Constant(float(spec["constant"]), **shared)
    raise ValueError(f"a covariate needs a distribution, got {dict(spec)}")


@dataclass(frozen=True)
class Resample:
    """The typed ``population.resample``: a covariate table whose rows are resampled
    (read and checked by :mod:`vtrial.population.resample`).

    Hashable (its mappings hashed by their items), so the table reader can cache on it.

    Attributes
    ----------
    table : str
        The CSV or Parquet file, relative to the study file.
    columns : tuple of str or None
        The resampled columns (None: every column but ``weights``).
    categorical : mapping of str to tuple of str
        Categorical (text) columns -> their labels, in study order.
    strata : tuple of str
        Categorical columns whose (weighted) shares the candidates follow.
    weights : str or None
        Column of row weights.
    jitter : float or mapping of str to float
        Log-scale SD of a multiplicative jitter of every numeric column, or per column.
    """

    table: str
    columns: tuple[str, ...] | None = None
    categorical: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    strata: tuple[str, ...] = ()
    weights: str | None = None
    jitter: float | Mapping[str, float] = 0.0

    def __hash__(self) -> int:
        jitter = self.jitter
        return hash(
            (
                self.table,
                self.columns,
                frozenset(self.categorical.items()),
                self.strata,
                self.weights,
                frozenset(jitter.items()) if isinstance(jitter, Mapping) else jitter,
            )
        )

    @classmethod
    def from_data(cls, res: Mapping[str, Any]) -> Resample:
        """The :class:`Resample` of a ``population.resample`` section (schema-valid)."""
        jitter = res.get("jitter", 0.0)
        columns = res.get("columns")
        return cls(
            table=str(res["table"]),
            columns=tuple(str(c) for c in columns) if columns is not None else None,
            categorical=MappingProxyType(
                {
                    str(k): tuple(str(x) for x in v)
                    for k, v in (res.get("categorical") or {}).items()
                }
            ),
            strata=tuple(str(s) for s in res.get("strata") or ()),
            weights=str(res["weights"]) if res.get("weights") is not None else None,
            jitter=(
                MappingProxyType({str(k): float(v) for k, v in jitter.items()})
                if isinstance(jitter, Mapping)
                else float(jitter)
            ),
        )


def resample_of(pop: Mapping[str, Any]) -> Resample | None:
    """The :class:`Resample` of a ``population`` section (schema-valid), None without
    a covariate table."""
    res = pop.get("resample")
    return Resample.from_data(res) if res else None


def categories_of(pop: Population | Mapping[str, Any]) -> dict[str, list[str]]:
    """Categorical covariates and their labels: sampled ones, then resampled ones.

    Parameters
    ----------
    pop : Population or mapping
        The typed ``population`` section, or the section as study data (as validation
        sees it, before the typed section is built).

    Returns
    -------
    dict of str to list of str
        ``population.covariates`` with a ``categorical`` distribution and the columns
        declared in ``population.resample.categorical``.
    """
    if isinstance(pop, Population):
        return _categories(pop.covariates, pop.resample)
    out = {
        k: list(v["categorical"])
        for k, v in pop.get("covariates", {}).items()
        if "categorical" in v
    }
    res = pop.get("resample") or {}
    for k, labels in (res.get("categorical") or {}).items():
        out.setdefault(k, [str(x) for x in labels])
    return out


def _categories(
    covariates: Mapping[str, Covariate], resample: Resample | None
) -> dict[str, list[str]]:
    """:func:`categories_of` the typed covariates and covariate table."""
    out = {k: c.labels for k, c in covariates.items() if isinstance(c, Categorical)}
    for k, labels in (resample.categorical if resample else {}).items():
        out.setdefault(k, list(labels))
    return out


@dataclass(frozen=True)
class Population:
    """The typed ``population`` section of a study (built by the study loader).

    Each sampled covariate's distribution is a frozen dataclass of its kind
    (:data:`Covariate`: :class:`Normal`, :class:`LogNormal`, :class:`Uniform`,
    :class:`Empirical`, :class:`Constant`, :class:`Categorical`), whose inverse CDF is
    in :mod:`vtrial.population.distributions`; the covariate table is a
    :class:`Resample`. The section's checks are :mod:`vtrial.population.validate`,
    made on the study data before this is built.

    Attributes
    ----------
    size : int
        Patients per replicate trial.
    covariates : mapping of str to Covariate
        Sampled covariate -> its distribution (read-only), in study order.
    derived : tuple of str
        Derived covariates (:mod:`vtrial.population.derived`), in order.
    correlation : mapping of str to float
        ``"a~b"`` -> rank correlation of the Gaussian copula.
    inclusion, exclusion : tuple of str
        Criteria (expressions).
    min_acceptance : float
        Least acceptable share of eligible candidates.
    resample : Resample or None
        ``population.resample``, None without a covariate table.
    categories : mapping of str to list of str
        Categorical covariates (sampled, then resampled) -> labels.
    dataset : DatasetSource or None
        ``population.dataset`` (:mod:`vtrial.population.dataset`), None when the
        patients are sampled.
    """

    size: int
    covariates: Mapping[str, Covariate]
    derived: tuple[str, ...] = ()
    correlation: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    inclusion: tuple[str, ...] = ()
    exclusion: tuple[str, ...] = ()
    min_acceptance: float = MIN_ACCEPTANCE
    resample: Resample | None = None
    categories: Mapping[str, list[str]] = field(default_factory=lambda: MappingProxyType({}))
    dataset: DatasetSource | None = None

    @classmethod
    def from_data(cls, pop: Mapping[str, Any]) -> Population:
        """The :class:`Population` of a validated ``population`` section."""
        covariates = MappingProxyType(
            {str(k): covariate_from_data(v) for k, v in (pop.get("covariates") or {}).items()}
        )
        resample = resample_of(pop)
        return cls(
            size=int(pop["size"]),
            covariates=covariates,
            derived=tuple(str(d) for d in pop.get("derived") or []),
            correlation=MappingProxyType(
                {k: float(v) for k, v in (pop.get("correlation") or {}).items()}
            ),
            inclusion=tuple(str(t) for t in pop.get("inclusion") or []),
            exclusion=tuple(str(t) for t in pop.get("exclusion") or []),
            min_acceptance=float(pop.get("min_acceptance", MIN_ACCEPTANCE)),
            resample=resample,
            categories=MappingProxyType(_categories(covariates, resample)),
            dataset=dataset_source(pop),
        )


def design_of(data: Mapping[str, Any]) -> str:
    """``study.design`` of study data (``"parallel"`` when not set)."""
    return str(data["study"].get("design", "parallel"))


@dataclass(frozen=True)
class Stratum:
    """A stratification factor: a categorical covariate (``breaks`` None) or a numeric
    one cut at ``breaks`` (intervals closed on the left)."""

    covariate: str
    breaks: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Randomization:
    """The typed ``randomization``: ``method`` (``simple``, ``permuted_block``,
    ``stratified``), ``block`` size (None for ``simple``) and ``strata``."""

    method: str = "permuted_block"
    block: int | None = None
    strata: tuple[Stratum, ...] = ()


@dataclass(frozen=True)
class Design:
    """The typed trial design: ``study.design`` and the ``randomization``."""

    kind: str
    randomization: Randomization

    @property
    def twin(self) -> bool:
        """Whether every patient is simulated under every arm (``twin_crossover``)."""
        return self.kind == "twin_crossover"


def design_from_data(data: Mapping[str, Any]) -> Design:
    """The :class:`Design` of validated study data."""
    return Design(design_of(data), randomization(data))


def randomization(data: Mapping[str, Any]) -> Randomization:
    """The ``randomization`` of study data with its defaults filled in.

    Method ``permuted_block`` when the key is absent, ``block`` ``2 * sum(ratios)``
    when not given (None for ``simple``), no strata when not given; a stratum given
    by name alone is a categorical covariate.
    """
    spec = dict(data.get("randomization") or {})
    method = str(spec.get("method", "permuted_block"))
    ratios = [int(a.get("ratio", 1)) for a in data["arms"]]
    block = None if method == "simple" else int(spec.get("block", 2 * sum(ratios)))
    strata = tuple(
        Stratum(str(s["covariate"]), tuple(float(b) for b in s["breaks"]))
        if isinstance(s, Mapping)
        else Stratum(str(s))
        for s in spec.get("strata", [])
    )
    return Randomization(method, block, strata)


@dataclass(frozen=True, eq=False)
class Variability:
    """The typed between-patient variability of a study's ``model`` section.

    Attributes
    ----------
    covariate_models : mapping of str to str
        Parameter -> its ``covariates`` expression (text, checked at load), for the
        parameters that have one.
    omega_names : tuple of str
        Parameters with inter-individual variability, in the order of ``iiv.omega``.
    omega : ndarray, shape (p, p)
        OMEGA, in that order (:func:`~vtrial.population.uncertainty.omega_matrix`).
    distributions : mapping of str to str
        ``iiv.distribution``: parameter -> ``lognormal`` (default), ``normal``, ``logit``.
    iov : mapping of str to float
        ``iov.omega``: parameter -> inter-occasion variance (empty without IOV).
    """

    covariate_models: Mapping[str, str]
    omega_names: tuple[str, ...]
    omega: np.ndarray
    distributions: Mapping[str, str]
    iov: Mapping[str, float]

    def distribution(self, name: str) -> str:
        """Distribution of the random effect of parameter ``name``."""
        return self.distributions.get(name, "lognormal")


def variability_from_data(model_section: Mapping[str, Any]) -> Variability:
    """The :class:`Variability` of a validated ``model`` section (defaults filled)."""
    iiv = model_section["iiv"]
    covs = {
        name: str(p["covariates"])
        for name, p in model_section["parameters"].items()
        if isinstance(p, Mapping) and p.get("covariates") is not None
    }
    iov = model_section.get("iov") or {}
    return Variability(
        covariate_models=MappingProxyType(covs),
        omega_names=tuple(iiv["omega"]),
        omega=omega_matrix(iiv),
        distributions=MappingProxyType(dict(iiv["distribution"])),
        iov=MappingProxyType({k: float(v) for k, v in (iov.get("omega") or {}).items()}),
    )


def uncertainty_spec(data: Mapping[str, Any]) -> dict[str, Any]:
    """``study.uncertainty`` of study data (``{}`` when not set), as its validation
    (:func:`vtrial.population.uncertainty.uncertainty_problems`) and
    :func:`uncertainty_from_data` read it."""
    return dict(data["study"].get("uncertainty") or {})


@dataclass(frozen=True)
class ThetaUncertainty:
    """``study.uncertainty.theta``: the drawn typical values, their covariance (a CSV
    file relative to the study, or the matrix) and scale (``log`` or ``linear``)."""

    parameters: tuple[str, ...]
    covariance: str | tuple[tuple[float, ...], ...]
    scale: str = "log"


@dataclass(frozen=True)
class Uncertainty:
    """The typed ``study.uncertainty`` (both parts None/absent: no uncertainty)."""

    theta: ThetaUncertainty | None = None
    omega_df: float | None = None

    @property
    def active(self) -> bool:
        """Whether any population parameter is drawn per replicate."""
        return self.theta is not None or self.omega_df is not None


def uncertainty_from_data(data: Mapping[str, Any]) -> Uncertainty:
    """The typed ``study.uncertainty`` of validated study data."""
    spec = uncertainty_spec(data)
    df = float(spec["omega_df"]) if spec.get("omega_df") is not None else None
    theta = spec.get("theta")
    if not theta:
        return Uncertainty(omega_df=df)
    cov = theta["covariance"]
    matrix = cov if isinstance(cov, str) else tuple(tuple(map(float, r)) for r in cov)
    parameters = tuple(str(x) for x in theta["parameters"])
    return Uncertainty(ThetaUncertainty(parameters, matrix, str(theta.get("scale", "log"))), df)


def omega_matrix(iiv: Mapping[str, Any]) -> np.ndarray:
    """OMEGA (variance-covariance of the random effects) in the order of ``iiv['omega']``."""
    names = list(iiv["omega"])
    var = np.array([float(iiv["omega"][k]) for k in names])
    om = np.diag(var)
    for pair, r in (iiv.get("correlations") or {}).items():
        a, b = pair.split("~")
        i, j = names.index(a), names.index(b)
        om[i, j] = om[j, i] = float(r) * np.sqrt(var[i] * var[j])
    return om


class PopulationStudy(Protocol):
    """A validated study as the population layer sees it (defaults filled): typed
    sections only, never the study file's plain data."""

    @property
    def source(self) -> str:
        """The study file (for messages)."""

    @property
    def base_dir(self) -> Path:
        """Folder of the study file (relative paths)."""

    @property
    def seed(self) -> int:
        """Study seed."""

    @property
    def size(self) -> int:
        """Patients per replicate trial."""

    @property
    def replicates(self) -> int:
        """Replicate trials."""

    @property
    def n_patients(self) -> int:
        """Patients in the whole study."""

    @property
    def arms(self) -> tuple[Arm, ...]:
        """The typed arms, in study order."""

    @property
    def arm_names(self) -> list[str]:
        """Arm names, in study order."""

    @property
    def control_arm(self) -> str | None:
        """``study.control_arm``."""

    @property
    def model(self) -> Model:
        """The composed model."""

    @property
    def population(self) -> Population:
        """The typed ``population`` section."""

    @property
    def design(self) -> Design:
        """The typed trial design and randomization."""

    @property
    def variability(self) -> Variability:
        """The typed IIV, IOV and covariate models."""

    @property
    def uncertainty(self) -> Uncertainty:
        """The typed ``study.uncertainty``."""

    def events(self) -> EventTable:
        """Dose, occasion and decision events of every arm."""

    @property
    def fit(self) -> FittedModel | None:
        """The fitted model of ``model.from_fit`` (None without one)."""

    @property
    def subjects(self) -> Subjects | None:
        """The checked subjects of ``population.dataset`` (None without one)."""
