"""The typed endpoints of a study, and the study interface of the trial and analysis
layers (:class:`TrialStudy`).

:class:`Endpoint` is built by the study loader from each validated ``endpoints`` entry
(defaults filled); its checks are :mod:`vtrial.trial.validate` and its computation
:mod:`vtrial.trial.endpoints`. :class:`TrialStudy` extends
:class:`vtrial.population.spec.PopulationStudy` with the typed endpoints, adverse events
and dropout and the observation and endpoint times; :class:`vtrial.study.config.Study`
implements it. This module imports no module of the trial layer that uses it, so
there is no import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from vtrial.population.spec import PopulationStudy
from vtrial.trial.kinds import EndpointKind
from vtrial.trial.recist import Schedule

if TYPE_CHECKING:
    from vtrial.model.residual import Observations
    from vtrial.trial.adverse import AdverseEvent
    from vtrial.trial.dropout import Dropout

Kind = EndpointKind


def kind_of(typ: str) -> Kind:
    """Kind of an endpoint type: ``binary`` (``responder``), ``categorical``
    (``best_response``), ``time_to_event``, else ``continuous``."""
    if typ == "responder":
        return "binary"
    if typ == "best_response":
        return "categorical"
    if typ == "time_to_event":
        return "time_to_event"
    return "continuous"


def endpoint_kind(ep: Mapping[str, Any]) -> Kind:
    """Kind of an endpoint given as data (:func:`kind_of` its ``type``)."""
    return kind_of(str(ep["type"]))


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of a study (typed ``endpoints.<name>``, defaults filled).

    The keys of ``config/README.md``; ``from`` is :attr:`start` and ``in`` is
    :attr:`categories`. ``every``, ``first``, ``by`` and ``times`` are the assessment
    schedule of a ``best_response`` (:attr:`schedule`), ``every`` also the grid step
    of an ``auec`` or survival ``time_to_event``.
    """

    name: str
    type: str
    output: str | None = None
    at: float | None = None
    start: float = 0.0
    to: float | None = None
    every: float | None = None
    above_baseline: bool = False
    observed: bool = False
    test: str | None = None
    endpoint: str | None = None
    below: float | None = None
    below_or_equal: float | None = None
    above: float | None = None
    above_or_equal: float | None = None
    categories: tuple[str, ...] | None = None
    first: float | None = None
    by: float | None = None
    times: tuple[float, ...] | None = None
    complete_below: float | None = None
    min_increase: float = 0.0
    better: str | None = None
    margin: float | None = None

    @property
    def kind(self) -> Kind:
        """``continuous``, ``binary``, ``categorical`` or ``time_to_event``."""
        return kind_of(self.type)

    @property
    def schedule(self) -> Schedule:
        """Assessment schedule of a ``best_response`` endpoint."""
        return Schedule(self.every, self.first, self.by, self.times)

    @property
    def crossing(self) -> tuple[float, int] | None:
        """``(value, direction)`` of a threshold ``time_to_event`` (-1 ``below``,
        +1 ``above``); None for a survival one or another type."""
        if self.type != "time_to_event":
            return None
        if self.below is not None:
            return self.below, -1
        if self.above is not None:
            return self.above, 1
        return None


@dataclass(frozen=True)
class EffectOptions:
    """How the individual effects of an endpoint are judged (twin crossover,
    :func:`vtrial.analysis.effects.individual_effects`): ``better`` (``lower`` or
    ``higher``; None: no direction, benefit and harm not counted) and ``margin`` (the
    change that does not count, >= 0)."""

    better: str | None = None
    margin: float = 0.0


def effect_options(ep: Endpoint) -> EffectOptions:
    """``better`` and ``margin`` of an endpoint (margin 0 when not given), as the
    individual-effect summaries and plots take them."""
    return EffectOptions(ep.better, 0.0 if ep.margin is None else ep.margin)


def endpoint_from_data(name: str, ep: Mapping[str, Any]) -> Endpoint:
    """The :class:`Endpoint` of one validated ``endpoints`` entry."""

    def num(key: str) -> float | None:
        return float(ep[key]) if ep.get(key) is not None else None

    cats = ep.get("in")
    times = ep.get("times")
    return Endpoint(
        name=name,
        type=str(ep["type"]),
        output=str(ep["output"]) if ep.get("output") is not None else None,
        at=num("at"),
        start=float(ep.get("from", 0.0)),
        to=num("to"),
        every=num("every"),
        above_baseline=bool(ep.get("above_baseline", False)),
        observed=bool(ep.get("observed", False)),
        test=str(ep["test"]) if ep.get("test") is not None else None,
        endpoint=str(ep["endpoint"]) if ep.get("endpoint") is not None else None,
        below=num("below"),
        below_or_equal=num("below_or_equal"),
        above=num("above"),
        above_or_equal=num("above_or_equal"),
        categories=tuple(str(c) for c in cats) if cats is not None else None,
        first=num("first"),
        by=num("by"),
        times=tuple(float(t) for t in times) if times is not None else None,
        complete_below=num("complete_below"),
        min_increase=float(ep.get("min_increase", 0.0)),
        better=str(ep["better"]) if ep.get("better") is not None else None,
        margin=num("margin"),
    )


def endpoints_from_data(endpoints: Mapping[str, Any]) -> Mapping[str, Endpoint]:
    """The typed ``endpoints`` section (name -> endpoint, read-only), in study order."""
    return MappingProxyType({k: endpoint_from_data(k, v) for k, v in endpoints.items()})


@dataclass(frozen=True)
class Exposure:
    """The typed ``exposure`` section: the ``output`` whose Cmax, AUC and trough are
    the exposure metrics (None: none), and target ranges ``metric -> (low, high)``
    shaded in the exposure plots."""

    output: str | None = None
    targets: Mapping[str, tuple[float, float]] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_data(cls, exp: Mapping[str, Any]) -> Exposure:
        """The :class:`Exposure` of a validated ``exposure`` section."""
        targets = {k: (float(lo), float(hi)) for k, (lo, hi) in exp.get("target", {}).items()}
        out = exp.get("output")
        return cls(None if out is None else str(out), MappingProxyType(targets))


class TrialStudy(PopulationStudy, Protocol):
    """A validated study as the trial and analysis layers see it."""

    @property
    def adverse_events(self) -> Mapping[str, AdverseEvent]:
        """The typed adverse events (name -> event), in study order."""

    @property
    def endpoints(self) -> Mapping[str, Endpoint]:
        """The typed endpoints (name -> endpoint), in study order."""

    @property
    def dropout(self) -> Dropout | None:
        """The typed ``dropout`` section (None without one)."""

    @property
    def end(self) -> float:
        """End of the simulation (h)."""

    @property
    def observations(self) -> Observations:
        """The typed ``outputs.observations`` and ``model.residual_error``."""

    def probe_times(self) -> list[float]:
        """Times at which every output is recorded for endpoints (h)."""

    def endpoint_kinds(self) -> dict[str, EndpointKind]:
        """Endpoint name -> kind."""
