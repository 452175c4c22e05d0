"""Regimens as data and their expansion into dose events.

A regimen is one phase or a list of phases (loading then maintenance, cycles with
rest weeks). A phase is a mapping::

    {"route": "oral" | "iv_bolus" | "iv_infusion", "dose": 100, "unit": "mg",
     "start": 0, "interval": 24, "count": 21, "duration": 1,
     "cycles": {"length_days": 21, "count": 6}}

Times are in hours. ``unit`` is ``mg``, ``mg/kg`` (scaled by the patient's
``weight``) or ``mg/m2`` (scaled by ``bsa``). With ``cycles``, ``count`` doses are
given every ``interval`` hours from the start of each cycle.

The events of each arm go to the compiled kernel as one padded table
(:class:`EventTable`); per-patient lag, bioavailability and dose scaling are applied
inside the kernel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ROUTES = ("oral", "iv_bolus", "iv_infusion")
#: dose unit -> column of the per-patient dose scale matrix (1, weight, bsa)
DOSE_UNITS = {"mg": 0, "mg/kg": 1, "mg/m2": 2}
# event kinds, as in the kernel template
EV_ORAL, EV_BOLUS, EV_RATE, EV_MARK = 0, 1, 2, 3


@dataclass(frozen=True)
class Phase:
    """One dosing phase (see the module docstring for the meaning of each field)."""

    route: str
    dose: float
    unit: str = "mg"
    start: float = 0.0
    interval: float = 24.0
    count: int = 1
    duration: float = 0.0
    cycle_length_h: float | None = None
    cycle_count: int = 1

    def dose_times(self) -> np.ndarray:
        """Nominal dose times of this phase (h), sorted."""
        within = self.start + self.interval * np.arange(self.count, dtype=np.float64)
        if self.cycle_length_h is None:
            return within
        offsets = self.cycle_length_h * np.arange(self.cycle_count, dtype=np.float64)
        return np.sort((offsets[:, None] + within[None, :]).ravel())


def phase_from_dict(d: Mapping[str, Any]) -> Phase:
    """Build a :class:`Phase` from its mapping form (already schema-checked)."""
    cycles = d.get("cycles")
    return Phase(
        route=str(d["route"]),
        dose=float(d["dose"]),
        unit=str(d.get("unit", "mg")),
        start=float(d.get("start", 0.0)),
        interval=float(d.get("interval", 24.0)),
        count=int(d.get("count", 1)),
        duration=float(d.get("duration", 0.0)),
        cycle_length_h=float(cycles["length_days"]) * 24.0 if cycles else None,
        cycle_count=int(cycles["count"]) if cycles else 1,
    )


def regimen_phases(regimen: Any) -> list[Phase]:
    """Normalise a regimen (``None``/``"none"``, one phase, or a list) to phases."""
    if regimen is None or regimen == "none":
        return []
    if isinstance(regimen, Mapping):
        return [phase_from_dict(regimen)]
    return [phase_from_dict(p) for p in regimen]


def phase_problems(d: Mapping[str, Any], where: str) -> list[str]:
    """Semantic problems of one phase mapping (schema-valid input assumed)."""
    out = []
    route = d.get("route")
    if route == "iv_infusion" and not float(d.get("duration", 0.0)) > 0:
        out.append(f"{where}.duration: an iv_infusion needs duration > 0, got {d.get('duration')}")
    if route != "iv_infusion" and "duration" in d:
        out.append(f"{where}.duration: only an iv_infusion has a duration (route is {route})")
    count = int(d.get("count", 1))
    interval = float(d.get("interval", 24.0))
    cycles = d.get("cycles")
    if cycles:
        length = float(cycles["length_days"]) * 24.0
        last = (count - 1) * interval
        end = last + float(d.get("duration", 0.0))
        if not (last < length and end <= length):
            out.append(
                f"{where}.cycles.length_days: {count} doses every {interval} h (the last at "
                f"{last:g} h, ending at {end:g} h) do not fit in a {cycles['length_days']}-day "
                f"cycle ({length:g} h)"
            )
    return out


@dataclass(frozen=True)
class EventTable:
    """Padded per-arm event table consumed by the kernel.

    Attributes
    ----------
    time, amount : ndarray, shape (n_arms, n_events)
        Nominal time (h) and amount (mg, or mg/h for rate changes) before scaling.
    kind, unit : ndarray of int64, shape (n_arms, n_events)
        Event kind (oral, bolus, rate change, trough marker) and dose-scale column.
    n : ndarray of int64, shape (n_arms,)
        Number of valid events per arm.
    """

    time: np.ndarray
    amount: np.ndarray
    kind: np.ndarray
    unit: np.ndarray
    n: np.ndarray


def arm_events(phases: Sequence[Phase]) -> list[tuple[float, int, float, int]]:
    """Events ``(time, kind, amount, unit)`` of one arm, sorted by time.

    Infusions become a rate increase at the start and a decrease at the end. A
    trough marker is placed at the last nominal dose time, before that dose.
    """
    events: list[tuple[float, int, int, float, int]] = []  # (time, order, kind, amount, unit)
    last = -np.inf
    for ph in phases:
        ucol = DOSE_UNITS[ph.unit]
        for t in ph.dose_times():
            tf = float(t)
            last = max(last, tf)
            if ph.route == "oral":
                events.append((tf, 1, EV_ORAL, ph.dose, ucol))
            elif ph.route == "iv_bolus":
                events.append((tf, 1, EV_BOLUS, ph.dose, ucol))
            else:
                rate = ph.dose / ph.duration
                events.append((tf, 1, EV_RATE, rate, ucol))
                events.append((tf + ph.duration, 1, EV_RATE, -rate, ucol))
    if np.isfinite(last):
        events.append((last, 0, EV_MARK, 0.0, 0))
    events.sort(key=lambda e: (e[0], e[1]))
    return [(t, k, a, u) for t, _, k, a, u in events]


def event_table(arms: Sequence[Sequence[Phase]]) -> EventTable:
    """Stack the events of every arm into one padded :class:`EventTable`."""
    per_arm = [arm_events(ph) for ph in arms]
    width = max([1, *(len(e) for e in per_arm)])
    na = len(per_arm)
    time = np.full((na, width), np.inf)
    amount = np.zeros((na, width))
    kind = np.full((na, width), EV_MARK, dtype=np.int64)
    unit = np.zeros((na, width), dtype=np.int64)
    n = np.zeros(na, dtype=np.int64)
    for a, evs in enumerate(per_arm):
        n[a] = len(evs)
        for j, (t, k, amt, u) in enumerate(evs):
            time[a, j] = t
            kind[a, j] = k
            amount[a, j] = amt
            unit[a, j] = u
    return EventTable(time, amount, kind, unit, n)
