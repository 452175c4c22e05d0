"""``outputs.twins``: the study asks for the twins of its dataset's subjects.

With ``outputs.twins`` the workflow adds a ``twins`` stage: every subject of
``population.dataset`` gets its random effects estimated from its own recorded doses and
observations (:mod:`vtrial.estimation.map`), shard by shard, into
``twins/part-NNNNN.parquet``, and ``summary/twins.parquet`` sums them up. The estimate
always reads the dataset's records, whatever the study simulates: the records
themselves (``doses: recorded``) or the study's arms (``doses: arms``: counterfactual
regimens, with ``parameters: twins`` the twins themselves). This module
holds the section's typed form and the checks the study loader makes; what the
estimator needs beyond them (random effects, a residual error of every observed
output, observation records with a likelihood) is checked by
:func:`vtrial.run.twins.twin_problems`, before anything is estimated.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vtrial.data.records import dose_routes

if TYPE_CHECKING:
    from vtrial.model.spec import Model

__all__ = [
    "POSTERIORS",
    "ROUTES",
    "TWIN_METHODS",
    "Candidate",
    "ForecastSpec",
    "Target",
    "TwinOutput",
    "candidates_from_data",
    "target_from_data",
    "twin_output_problems",
]

#: estimation methods of ``outputs.twins.method``
TWIN_METHODS = ("map",)
#: how a twin's random effects are drawn for its forecasts (``outputs.twins.posterior``)
POSTERIORS = ("sir", "laplace", "map")
#: candidate routes
ROUTES = ("iv_infusion", "iv_bolus", "oral")
#: exposure metrics of a forecast (with the model's ``CP``), beside every output at its end
METRICS = ("trough", "peak", "auc_24")


@dataclass(frozen=True)
class Candidate:
    """One candidate regimen: ``dose`` mg every ``interval`` h by ``route`` (an
    infusion over ``duration`` h)."""

    route: str
    dose: float
    interval: float
    duration: float = 0.0

    def __post_init__(self) -> None:
        if self.route not in ROUTES:
            raise ValueError(f"route: one of {', '.join(ROUTES)}, got {self.route!r}")
        if not (math.isfinite(self.dose) and self.dose > 0):
            raise ValueError(f"dose: must be > 0 (mg), got {self.dose!r}")
        if not (math.isfinite(self.interval) and self.interval > 0):
            raise ValueError(f"interval: must be > 0 (h), got {self.interval!r}")
        if self.route == "iv_infusion" and not (0 < self.duration <= self.interval):
            raise ValueError(
                f"duration: an infusion's duration must be > 0 and <= its interval "
                f"({self.interval:g} h), got {self.duration!r}"
            )

    @property
    def daily_dose(self) -> float:
        """mg per 24 h."""
        return self.dose * 24.0 / self.interval

    @property
    def label(self) -> str:
        """``1000 mg q12h iv_infusion over 1 h``."""
        over = f" over {self.duration:g} h" if self.route == "iv_infusion" else ""
        return f"{self.dose:g} mg q{self.interval:g}h {self.route}{over}"


def candidates_from_data(spec: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Candidate]:
    """Candidates from their data form: one mapping or a list of them, each with
    ``route``, ``dose`` (mg, or a list), ``interval`` (h, or a list) and, for an
    infusion, ``duration`` (h); lists expand to every combination, in the order
    given (doses varying fastest within an interval).

    Raises
    ------
    ValueError
        A value out of range, naming the key and the value.

    Examples
    --------
    >>> [c.label for c in candidates_from_data(
    ...     {"route": "iv_infusion", "dose": [750, 1000], "duration": 1, "interval": [8, 12]})]
    ['750 mg q8h iv_infusion over 1 h', '1000 mg q8h iv_infusion over 1 h', \
'750 mg q12h iv_infusion over 1 h', '1000 mg q12h iv_infusion over 1 h']
    """
    items = [spec] if isinstance(spec, Mapping) else list(spec)
    out: list[Candidate] = []

    def values(d: Mapping[str, Any], key: str) -> list[float]:
        v = d.get(key)
        if v is None:
            raise ValueError(f"{key}: required (a number or a list of numbers)")
        return [float(x) for x in (v if isinstance(v, (list, tuple)) else [v])]

    for d in items:
        for interval, dose in itertools.product(values(d, "interval"), values(d, "dose")):
            out.append(
                Candidate(str(d.get("route")), dose, interval, float(d.get("duration", 0.0) or 0.0))
            )
    return out


@dataclass(frozen=True)
class Target:
    """What a recommendation aims at (:func:`recommend`).

    Attributes
    ----------
    ranges : mapping of str to (float, float)
        Metric -> ``[low, high]``, all of which must hold (inclusive).
    probability : float
        Smallest posterior probability of meeting every range.
    guards : mapping of str to (str, float)
        Metric -> ``("max", value)`` (the metric must not exceed it) or
        ``("min", value)``.
    guard_probability : float
        Largest posterior probability of breaking any one guard.
    """

    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    probability: float = 0.8
    guards: Mapping[str, tuple[str, float]] = field(default_factory=dict)
    guard_probability: float = 0.1

    def __post_init__(self) -> None:
        for name, (lo, hi) in self.ranges.items():
            if not lo <= hi:
                raise ValueError(f"target.{name}: [low, high] with low <= high, got [{lo}, {hi}]")
        for name, (side, _) in self.guards.items():
            if side not in ("max", "min"):
                raise ValueError(f"target.safety.{name}: max or min, got {side!r}")
        for key, p in (
            ("probability", self.probability),
            ("safety.probability", self.guard_probability),
        ):
            if not 0 <= p <= 1:
                raise ValueError(f"target.{key}: a probability in [0, 1], got {p}")

    @property
    def metrics(self) -> list[str]:
        """Every metric the target reads."""
        return list(dict.fromkeys([*self.ranges, *self.guards]))


def target_from_data(spec: Mapping[str, Any]) -> Target:
    """The :class:`Target` of a ``target`` mapping: ``<metric>: [low, high]`` entries,
    ``probability``, and ``safety``: ``<metric>_max`` / ``<metric>_min`` limits and
    their ``probability``.

    Examples
    --------
    >>> t = target_from_data({"auc_24": [400, 600], "probability": 0.8,
    ...                       "safety": {"trough_max": 20}})
    >>> dict(t.ranges), dict(t.guards), t.guard_probability
    ({'auc_24': (400.0, 600.0)}, {'trough': ('max', 20.0)}, 0.1)
    """
    ranges = {
        str(k): (float(v[0]), float(v[1]))
        for k, v in spec.items()
        if k not in ("probability", "safety")
    }
    safety = dict(spec.get("safety") or {})
    guard_p = float(safety.pop("probability", 0.1))
    guards: dict[str, tuple[str, float]] = {}
    for k, v in safety.items():
        name, _, side = str(k).rpartition("_")
        if side not in ("max", "min") or not name:
            raise ValueError(f"target.safety.{k}: <metric>_max or <metric>_min, got {k!r}")
        guards[name] = (side, float(v))
    return Target(
        ranges=ranges,
        probability=float(spec.get("probability", 0.8)),
        guards=guards,
        guard_probability=guard_p,
    )


@dataclass(frozen=True)
class ForecastSpec:
    """``outputs.twins.forecast``: the candidates and the window (see
    :mod:`vtrial.run.forecast`)."""

    candidates: tuple[Candidate, ...]
    horizon: float = 72.0
    every: float = 1.0
    start: float | None = None


@dataclass(frozen=True)
class TwinOutput:
    """``outputs.twins`` of a validated study.

    Attributes
    ----------
    method : str
        ``map``: maximum a posteriori estimates (NONMEM's POSTHOC objective) with
        standard errors from the Laplace approximation.
    posterior, samples, proposals
        How a twin's forecasts draw its random effects (:data:`POSTERIORS`), how many
        draws, and SIR's proposals (10 per draw by default).
    forecast : ForecastSpec or None
        ``outputs.twins.forecast``: the candidate regimens.
    target : Target or None
        ``outputs.twins.target``: what a recommendation aims at.
    """

    method: str = "map"
    posterior: str = "sir"
    samples: int = 1000
    proposals: int | None = None
    forecast: ForecastSpec | None = None
    target: Target | None = None

    @classmethod
    def from_data(cls, outputs: Mapping[str, Any]) -> TwinOutput | None:
        """The section of a validated ``outputs`` mapping; None without ``twins``."""
        spec = outputs.get("twins")
        if spec is None:
            return None
        post = spec.get("posterior") or {}
        fc = spec.get("forecast")
        forecast = None
        if fc is not None:
            forecast = ForecastSpec(
                tuple(candidates_from_data(fc["candidates"])),
                float(fc.get("horizon", 72.0)),
                float(fc.get("every", 1.0)),
                None if fc.get("start") is None else float(fc["start"]),
            )
        target = spec.get("target")
        return cls(
            method=str(spec.get("method", "map")),
            posterior=str(post.get("method", "sir")),
            samples=int(post.get("samples", 1000)),
            proposals=None if post.get("proposals") is None else int(post["proposals"]),
            forecast=forecast,
            target=None if target is None else target_from_data(target),
        )


def twin_output_problems(d: Mapping[str, Any], model: Model | None = None) -> list[tuple[str, str]]:
    """Problems of ``outputs.twins`` in a study (schema-valid, defaults filled): twins
    are estimated from a dataset's recorded doses and observations, so the study needs
    ``population.dataset`` (its ``doses`` say what the study simulates, the records or
    the arms, not what is estimated); each forecast candidate is a
    regimen the model can take (an infusion no longer than its interval, a route the
    model has a compartment for), and each target reads a metric the forecast gives
    (``trough``, ``peak``, ``auc_24`` of a model with ``CP``, a model output, or
    ``ae_<event>_grade`` of an adverse event graded from an output).

    Returns
    -------
    list of (where, message)
    """
    spec = d.get("outputs", {}).get("twins")
    if spec is None:
        return []
    out: list[tuple[str, str]] = []
    if d["population"].get("dataset") is None:
        out.append(
            (
                "outputs.twins",
                "twins are estimated from each subject's recorded doses and observations: "
                "it needs population.dataset, got no population.dataset (the patients are "
                "sampled)",
            )
        )
    fc = spec.get("forecast") or {}
    routes = dose_routes(model) if model is not None else None
    for i, c in enumerate(fc.get("candidates", [])):
        where = f"outputs.twins.forecast.candidates[{i}]"
        try:
            candidates_from_data(c)
        except ValueError as exc:
            out.append((where, str(exc)))
        if routes is not None:
            cmt = routes.oral if c.get("route") == "oral" else routes.iv
            if cmt is None:
                out.append(
                    (
                        f"{where}.route",
                        "the model has no compartment for this route (its dose compartments: "
                        f"{routes.describe()}), got {c.get('route')!r}",
                    )
                )
    target = spec.get("target")
    if target is not None:
        try:
            t = target_from_data(target)
        except ValueError as exc:
            return [*out, ("outputs.twins.target", str(exc))]
        if model is not None:
            graded = [
                f"ae_{name}_grade"
                for name, event in d.get("adverse_events", {}).items()
                if "probabilities" not in event
            ]
            known = [*(METRICS if "CP" in model.outputs else ()), *model.outputs, *graded]
            for name in t.metrics:
                if name not in known:
                    where = name if name in t.ranges else f"safety.{name}_{t.guards[name][0]}"
                    out.append(
                        (
                            f"outputs.twins.target.{where}",
                            f"a target reads a forecast metric ({', '.join(known)}), got {name!r}",
                        )
                    )
        if not t.ranges and not t.guards:
            out.append(("outputs.twins.target", "give a range (<metric>: [low, high]) or a guard"))
    if target is not None and not fc:
        out.append(
            ("outputs.twins.target", "a target ranks forecasts: give outputs.twins.forecast")
        )
    return out
