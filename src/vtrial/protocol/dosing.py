"""Regimens as data and their expansion into dose events.

A regimen is one phase or a list of phases (loading then maintenance, cycles with
rest weeks). A phase is a mapping::

    {"route": "oral" | "iv_bolus" | "iv_infusion", "dose": 100, "unit": "mg",
     "start": 0, "interval": 24, "count": 21, "duration": 1,  # or "rate": 100 (per h)
     "cycles": {"length_days": 21, "count": 6}, "steady_state": False}

Times are in hours. An infusion is given by its ``duration`` (h) or by its ``rate``
(dose unit per hour, so the duration is ``dose / rate``). ``unit`` is ``mg``,
``mg/kg`` (scaled by the patient's ``weight``) or ``mg/m2`` (scaled by ``bsa``).
With ``cycles``, ``count`` doses are given every ``interval`` hours from the start
of each cycle. ``steady_state: true`` (first phase only, starting at time 0) starts
the patient at steady state of that phase's dose repeated every ``interval`` since
the infinite past, like NONMEM's ``SS=1`` record for the drug amounts: the PK
macro's compartments are set exactly (geometric series of one dosing interval in
modal form); ODE states (effects) start from their own initial conditions.

Occasions (for inter-occasion variability) are periods with their own parameter
values; :func:`occasion_starts` derives their start times from the regimen (each
dosing cycle, or each dose) or takes them from the study.

The events of each arm go to the compiled kernel as one padded table
(:class:`EventTable`); per-patient lag, bioavailability and dose scaling are applied
inside the kernel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vtrial.protocol.codes import EventKind

ROUTES = ("oral", "iv_bolus", "iv_infusion")
#: dose unit -> column of the per-patient dose scale matrix (1, weight, bsa)
DOSE_UNITS = {"mg": 0, "mg/kg": 1, "mg/m2": 2}
_ROUTE_KIND = {"oral": EventKind.ORAL, "iv_bolus": EventKind.BOLUS, "iv_infusion": EventKind.RATE}


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
    steady_state: bool = False

    def dose_times(self) -> np.ndarray:
        """Nominal dose times of this phase (h), sorted."""
        within = self.start + self.interval * np.arange(self.count, dtype=np.float64)
        if self.cycle_length_h is None:
            return within
        offsets = self.cycle_length_h * np.arange(self.cycle_count, dtype=np.float64)
        return np.sort((offsets[:, None] + within[None, :]).ravel())


def schedule_warnings(phases: Sequence[Phase], where: str) -> list[tuple[str, str]]:
    """Plausibility warnings of an arm's phases, ``(where, message)``: valid, but
    almost always an hours/days slip or a typo.

    - infusions that overlap (each lasting longer than the interval between them,
      several at once), outside a steady-state phase;
    - doses more often than hourly.

    Examples
    --------
    >>> ph = phase_from_dict({"route": "iv_infusion", "dose": 100, "duration": 1,
    ...                       "interval": 0.5, "count": 12})
    >>> [m.split(":")[0] for _, m in schedule_warnings([ph], "arms[0].regimen")]
    ['overlapping infusions', 'doses more often than hourly']
    """
    out: list[tuple[str, str]] = []
    for k, ph in enumerate(phases):
        here = f"{where}[{k}]" if len(phases) > 1 else where
        if ph.count < 2:
            continue
        if ph.route == "iv_infusion" and ph.duration > ph.interval and not ph.steady_state:
            at_once = math.ceil(ph.duration / ph.interval)
            out.append(
                (
                    here,
                    f"overlapping infusions: each lasts {ph.duration:g} h but they start every "
                    f"{ph.interval:g} h (up to {at_once} at once); times are hours: check "
                    "interval and duration",
                )
            )
        if ph.interval < 1.0:
            span = ph.interval * (ph.count - 1)
            out.append(
                (
                    here,
                    f"doses more often than hourly: {ph.count} doses every {ph.interval:g} h "
                    f"({span:g} h in all); times are hours: did you mean days?",
                )
            )
    return out


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
        duration=_duration(d),
        cycle_length_h=float(cycles["length_days"]) * 24.0 if cycles else None,
        cycle_count=int(cycles["count"]) if cycles else 1,
        steady_state=bool(d.get("steady_state", False)),
    )


def _duration(d: Mapping[str, Any]) -> float:
    """Infusion duration (h) of a phase mapping: ``duration``, or ``dose / rate``."""
    if "rate" in d and float(d["rate"]) > 0:
        return float(d["dose"]) / float(d["rate"])
    return float(d.get("duration", 0.0))


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
    if route == "iv_infusion" and "duration" in d and "rate" in d:
        out.append(f"{where}.rate: give an infusion's duration or its rate, not both")
    elif route == "iv_infusion" and not _duration(d) > 0:
        out.append(
            f"{where}.duration: an iv_infusion needs duration > 0 (or rate > 0), "
            f"got {d.get('duration')}"
        )
    for key in ("duration", "rate"):
        if route != "iv_infusion" and key in d:
            out.append(f"{where}.{key}: only an iv_infusion has a {key} (route is {route})")
    count = int(d.get("count", 1))
    interval = float(d.get("interval", 24.0))
    cycles = d.get("cycles")
    if d.get("steady_state", False):
        if not where.endswith("regimen") and not where.endswith("[0]"):
            out.append(
                f"{where}.steady_state: only the first phase of a regimen can start at steady state"
            )
        if float(d.get("start", 0.0)) != 0.0:
            out.append(f"{where}.start: a steady-state phase must start at 0, got {d.get('start')}")
        if cycles:
            out.append(
                f"{where}.steady_state: not with cycles (steady state needs one fixed interval)"
            )
        if _duration(d) > interval:
            out.append(
                f"{where}.duration: a steady-state infusion must not be longer than the "
                f"interval ({interval} h), got {_duration(d):g} h"
            )
    if cycles:
        length = float(cycles["length_days"]) * 24.0
        last = (count - 1) * interval
        end = last + _duration(d)
        if not (last < length and end <= length):
            out.append(
                f"{where}.cycles.length_days: {count} doses every {interval} h (the last at "
                f"{last:g} h, ending at {end:g} h) do not fit in a {cycles['length_days']}-day "
                f"cycle ({length:g} h)"
            )
    return out


#: columns of :attr:`EventTable.ss_events`
SS_COLUMNS = 8


@dataclass(frozen=True)
class EventTable:
    """Padded per-arm event table consumed by the kernel.

    Attributes
    ----------
    time, amount : ndarray, shape (n_arms, n_events)
        Nominal time (h) and amount (mg, or mg/h for rate changes) before scaling.
    kind, unit : ndarray of int64, shape (n_arms, n_events)
        Event kind (:class:`vtrial.protocol.codes.EventKind`: oral, bolus, rate change,
        trough marker, occasion start, decision) and dose-scale column. An occasion
        start's amount is the occasion's index.
    n : ndarray of int64, shape (n_arms,)
        Number of valid events per arm.
    ss : ndarray, shape (n_arms, 4)
        Steady-state start per arm: interval (h, 0 if none), event kind, amount (mg, or
        mg/h for an infusion) before scaling, infusion duration (h).
    ss_unit : ndarray of int64, shape (n_arms,)
        Dose-scale column of the steady-state dose.
    n_occ : int
        Number of occasions (1 without inter-occasion variability).
    slot, pair : ndarray of int64, shape (n_arms, n_events)
        Administration number of each dose event (-1 for other events) and, for an
        infusion start, the column of its rate decrease (-1 otherwise).
    n_slots : int
        Most administrations of any arm (rows of the per-patient dose ledger).
    cmt : ndarray of int64, shape (n_arms, n_events), optional
        For a dataset's bolus into a given compartment (kind ``INTO``), infusion start
        or stop (``RATE``) and steady state (``SS``: its pattern's): the compartment,
        0-based over the PK macro's compartments (depot, central, peripherals) then the
        ODE states. None for regimens (which infuse into the central compartment).
    ss_events : ndarray, shape (n_arms, n_ss, SS_COLUMNS), optional
        Steady-state events of a dataset's records (kind ``SS``, whose amount is a row
        here): interval (h; 0 for a constant infusion), dose kind (``ORAL``, ``BOLUS``,
        ``INTO`` or ``RATE``), amount (mg, or mg/h for an infusion), infusion duration
        (h), SS (1: reset first, 2: added), lag (h: ``ALAGn`` of a compartment other
        than the depot, whose lag is the model's ``TLAG``), compartment (0-based, as
        ``cmt``), and 1 if the model's ``F`` scales the rate of an infusion into the
        depot (a modelled duration, ``RATE -2``) rather than its duration.
        None for regimens, whose steady state is ``ss``.

    A dataset's infusion into the depot stops where its rate decrease says, moved by
    the model's ``TLAG`` and, unless that decrease's amount is 0 (a modelled duration,
    whose rate ``F`` scales instead), its duration scaled by ``F``.
    """

    time: np.ndarray
    amount: np.ndarray
    kind: np.ndarray
    unit: np.ndarray
    n: np.ndarray
    ss: np.ndarray
    ss_unit: np.ndarray
    n_occ: int
    slot: np.ndarray
    pair: np.ndarray
    n_slots: int
    ss_events: np.ndarray | None = None
    cmt: np.ndarray | None = None


def occasion_starts(phases: Sequence[Phase], occasions: Any) -> list[float]:
    """Start times (h) of occasions 1, 2, ... of one arm (occasion 0 starts the run).

    ``occasions`` is ``"cycles"`` (each dosing cycle, and each phase, is an occasion),
    ``"doses"`` (each nominal dose starts one) or a sorted list of start times (the
    first, if 0, is occasion 0's own start).

    Examples
    --------
    >>> ph = phase_from_dict({"route": "oral", "dose": 100, "count": 14,
    ...                       "cycles": {"length_days": 21, "count": 3}})
    >>> occasion_starts([ph], "cycles")
    [504.0, 1008.0]
    """
    if occasions is None:
        return []
    if isinstance(occasions, str):
        return schedule_starts(phases, occasions)[1:]
    return [float(t) for t in occasions if float(t) > 0.0]


def schedule_starts(phases: Sequence[Phase], kind: str) -> list[float]:
    """Sorted distinct times (h) of every nominal dose (``kind`` ``"doses"``) or of
    every dosing cycle's start, a phase without cycles counting as one (``"cycles"``);
    the occasions of :func:`occasion_starts` and the decision times of
    :func:`vtrial.protocol.rules.decision_times`."""
    starts: set[float] = set()
    for ph in phases:
        if kind == "doses":
            starts.update(float(t) for t in ph.dose_times())
        elif ph.cycle_length_h is not None:
            starts.update(float(ph.start + ph.cycle_length_h * k) for k in range(ph.cycle_count))
        else:
            starts.add(float(ph.start))
    return sorted(starts)


def arm_events(
    phases: Sequence[Phase],
    occasions: Sequence[float] = (),
    decisions: Sequence[float] = (),
) -> list[tuple[float, int, float, int, int, int]]:
    """Events ``(time, kind, amount, unit, slot, pair)`` of one arm, sorted by time.

    Infusions become a rate increase at the start and a decrease at the end. A
    trough marker is placed at the last nominal dose time, before that dose; then, at
    a common time, come an occasion start, a dose-modification decision, and the
    doses. ``slot`` numbers the administrations (oral doses, boluses, infusion starts;
    -1 for other events) in time order; ``pair`` is, for an infusion start, the index
    of its rate decrease in the returned list (-1 otherwise).
    """
    # (time, order, kind, amount, unit, infusion id)
    events: list[tuple[float, float, int, float, int, int]] = []
    last = -np.inf
    n_inf = 0
    for ph in phases:
        ucol = DOSE_UNITS[ph.unit]
        for t in ph.dose_times():
            tf = float(t)
            last = max(last, tf)
            if ph.route == "oral":
                events.append((tf, 1, EventKind.ORAL, ph.dose, ucol, -1))
            elif ph.route == "iv_bolus":
                events.append((tf, 1, EventKind.BOLUS, ph.dose, ucol, -1))
            else:
                rate = ph.dose / ph.duration
                events.append((tf, 1, EventKind.RATE, rate, ucol, n_inf))
                events.append((tf + ph.duration, 1, EventKind.RATE, -rate, ucol, n_inf))
                n_inf += 1
    if np.isfinite(last):
        events.append((last, 0, EventKind.MARK, 0.0, 0, -1))
    for j, t in enumerate(occasions, start=1):
        events.append((float(t), 0.5, EventKind.OCC, float(j), 0, -1))
    for t in decisions:
        events.append((float(t), 0.75, EventKind.DECIDE, 0.0, 0, -1))
    events.sort(key=lambda e: (e[0], e[1]))
    stop_at = {e[5]: j for j, e in enumerate(events) if e[2] == EventKind.RATE and e[3] < 0}
    out = []
    slot = 0
    for t, _, k, a, u, inf in events:
        administration = k in (EventKind.ORAL, EventKind.BOLUS) or (k == EventKind.RATE and a > 0)
        out.append(
            (
                t,
                int(k),
                a,
                u,
                slot if administration else -1,
                stop_at[inf] if k == EventKind.RATE and a > 0 else -1,
            )
        )
        slot += administration
    return out


def event_table(
    arms: Sequence[Sequence[Phase]],
    occasions: Sequence[Sequence[float]] | None = None,
    decisions: Sequence[Sequence[float]] | None = None,
) -> EventTable:
    """Stack the events of every arm into one padded :class:`EventTable`.

    ``occasions`` gives each arm's occasion start times (:func:`occasion_starts`);
    the table has as many occasions as the arm with the most. ``decisions`` gives
    each arm's dose-modification decision times (:mod:`vtrial.protocol.rules`).
    """
    occ = list(occasions) if occasions is not None else [[] for _ in arms]
    dec = list(decisions) if decisions is not None else [[] for _ in arms]
    per_arm = [arm_events(ph, o, d) for ph, o, d in zip(arms, occ, dec, strict=True)]
    width = max([1, *(len(e) for e in per_arm)])
    na = len(per_arm)
    time = np.full((na, width), np.inf)
    amount = np.zeros((na, width))
    kind = np.full((na, width), EventKind.MARK, dtype=np.int64)
    unit = np.zeros((na, width), dtype=np.int64)
    slot = np.full((na, width), -1, dtype=np.int64)
    pair = np.full((na, width), -1, dtype=np.int64)
    n = np.zeros(na, dtype=np.int64)
    for a, evs in enumerate(per_arm):
        n[a] = len(evs)
        for j, (t, k, amt, u, sl, pr) in enumerate(evs):
            time[a, j] = t
            kind[a, j] = k
            amount[a, j] = amt
            unit[a, j] = u
            slot[a, j] = sl
            pair[a, j] = pr
    ss = np.zeros((na, 4))
    ss_unit = np.zeros(na, dtype=np.int64)
    for a, phases in enumerate(arms):
        if phases and phases[0].steady_state:
            ph = phases[0]
            rate = ph.route == "iv_infusion"
            amt = ph.dose / ph.duration if rate else ph.dose
            ss[a] = (ph.interval, _ROUTE_KIND[ph.route], amt, ph.duration)
            ss_unit[a] = DOSE_UNITS[ph.unit]
    n_occ = 1 + max([0, *(len(o) for o in occ)])
    n_slots = int(max([0, *(int((slot[a] >= 0).sum()) for a in range(na))]))
    return EventTable(time, amount, kind, unit, n, ss, ss_unit, n_occ, slot, pair, n_slots)
