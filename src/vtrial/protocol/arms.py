"""Typed specification of a study's arms: regimen, dose modification and adherence.

:func:`arms_from_data` turns the validated ``arms`` section of a study file (schema and
semantic checks passed, defaults filled) into a tuple of frozen :class:`Arm` objects;
every module below the study loader works on these, never on the raw mappings. The
checks of the section stay where they are: regimens in :mod:`vtrial.protocol.dosing`
(:func:`~vtrial.protocol.dosing.phase_problems`), rules and adherence in
:mod:`vtrial.protocol.rules` (:func:`~vtrial.protocol.rules.rule_problems`).

Examples
--------
>>> (arm,) = arms_from_data([{"name": "a", "ratio": 1,
...     "regimen": {"route": "oral", "dose": 100, "interval": 24, "count": 3},
...     "adherence": {"p_miss": 0.1}}])
>>> arm.name, arm.planned_dose, arm.adherence.missed_dose, arm.modification is None
('a', 100.0, 'skip', True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from vtrial.protocol.dosing import Phase, regimen_phases

#: assay error kinds of ``modification.measure``
ErrorKind = Literal["additive", "proportional", "exponential"]


@dataclass(frozen=True)
class Rule:
    """One dose-modification rule: when ``when`` holds at a decision, do ``action``.

    ``recheck`` (h): delay before the next evaluation of a hold (0: none);
    ``by``: dose levels moved by ``reduce``/``escalate``; ``max_hold`` (h): a hold
    longer than that discontinues (``None``: no limit).
    """

    when: str
    action: str
    recheck: float = 0.0
    by: int = 1
    max_hold: float | None = None


@dataclass(frozen=True)
class Measurement:
    """An output read by the rules with assay error: ``kind`` and its ``sd``."""

    output: str
    kind: ErrorKind
    sd: float


@dataclass(frozen=True)
class Modification:
    """``modification`` of an arm: decision times, dose levels, assay errors, rules.

    ``decide_at``: ``"doses"``, ``"cycles"`` or ``(every, start)`` in hours.
    """

    rules: tuple[Rule, ...]
    decide_at: str | tuple[float, float] = "doses"
    levels: tuple[float, ...] | None = None
    measure: tuple[Measurement, ...] = ()


@dataclass(frozen=True)
class Adherence:
    """``adherence`` of an arm: missed oral doses and dosing-time jitter."""

    p_miss: float
    model: str = "bernoulli"
    p_stay_missing: float | None = None
    jitter: float = 0.0
    missed_dose: str = "skip"
    late_by: float = 4.0


@dataclass(frozen=True)
class Arm:
    """One arm: its name, allocation ratio, dosing phases and optional features."""

    name: str
    ratio: int
    phases: tuple[Phase, ...]
    modification: Modification | None = None
    adherence: Adherence | None = None

    @property
    def planned_dose(self) -> float | None:
        """The dose of the arm's first phase (None without doses)."""
        return self.phases[0].dose if self.phases else None


def _modification(d: Mapping[str, Any]) -> Modification:
    at = d.get("decide_at", "doses")
    decide_at = at if isinstance(at, str) else (float(at["every"]), float(at.get("start", 0.0)))
    rules = tuple(
        Rule(
            when=str(r["when"]),
            action=str(r["action"]),
            recheck=float(r.get("recheck", 0.0)),
            by=int(r.get("by", 1)),
            max_hold=float(r["max_hold"]) if "max_hold" in r else None,
        )
        for r in d["rules"]
    )
    measure = tuple(
        Measurement(str(out), kind, float(sd))
        for out, err in (d.get("measure") or {}).items()
        for kind, sd in list(err.items())[:1]
    )
    levels = d.get("levels")
    return Modification(
        rules=rules,
        decide_at=decide_at,
        levels=tuple(float(x) for x in levels) if levels else None,
        measure=measure,
    )


def _adherence(d: Mapping[str, Any]) -> Adherence:
    return Adherence(
        p_miss=float(d["p_miss"]),
        model=str(d.get("model", "bernoulli")),
        p_stay_missing=float(d["p_stay_missing"]) if "p_stay_missing" in d else None,
        jitter=float(d.get("jitter", 0.0)),
        missed_dose=str(d.get("missed_dose", "skip")),
        late_by=float(d.get("late_by", 4.0)),
    )


def arms_from_data(arms: Sequence[Mapping[str, Any]]) -> tuple[Arm, ...]:
    """The typed arms of a validated ``arms`` section, in study order."""
    return tuple(
        Arm(
            name=str(a["name"]),
            ratio=int(a.get("ratio", 1)),
            phases=tuple(regimen_phases(a["regimen"])),
            modification=_modification(a["modification"]) if a.get("modification") else None,
            adherence=_adherence(a["adherence"]) if a.get("adherence") else None,
        )
        for a in arms
    )
