"""Integer codes of the protocol layer shared with the compiled kernel.

Each code is defined here once, as an :class:`~enum.IntEnum`; the label tables used
in study files and result tables are derived from (or keyed by) its members.
:mod:`vtrial.engine.interface` lists these tables among the codes emitted into the
kernel's constant block (``EV_*``, ``ACT_*``, ``R_*``), so host and kernel cannot
disagree. This module sits below both :mod:`vtrial.protocol` and
:mod:`vtrial.engine` and imports neither.
"""

from __future__ import annotations

from enum import IntEnum


class EventKind(IntEnum):
    """Kind of an event of an arm's event table (kernel constants ``EV_*``)."""

    ORAL = 0
    BOLUS = 1
    RATE = 2
    MARK = 3
    OCC = 4
    DECIDE = 5
    OBS = 6
    RESET = 7
    SS = 8
    INTO = 9


#: one-line meaning of each event kind (the kernel's comments)
EVENT_NOTES: dict[EventKind, str] = {
    EventKind.ORAL: "bolus into the depot (lag and bioavailability apply)",
    EventKind.BOLUS: "bolus into the central compartment",
    EventKind.RATE: "change of the infusion rate into the central compartment",
    EventKind.MARK: "no dose: a time at which the pre-dose concentration is recorded (trough)",
    EventKind.OCC: "no dose: a new occasion starts (amount: its index; IOV parameters change)",
    EventKind.DECIDE: "no dose: dose-modification rules are evaluated",
    EventKind.OBS: "no dose: a record whose outputs are kept (amount: its row in obs)",
    EventKind.RESET: "no dose: every state back to its initial value, infusions stopped",
    EventKind.SS: "steady state of a dose pattern (amount: its row in ss_ev), before its dose",
    EventKind.INTO: "bolus into the compartment ev_cmt (PK modes, then ODE states)",
}


class Action(IntEnum):
    """Action of a dose-modification rule (kernel constants ``ACT_*``)."""

    NONE = 0
    HOLD = 1
    REDUCE = 2
    ESCALATE = 3
    DISCONTINUE = 4
    GIVE = 5


#: one-line meaning of each rule action (the kernel's comments)
ACTION_NOTES: dict[Action, str] = {
    Action.NONE: "no rule matched: give as planned",
    Action.HOLD: "delay this and every later event by the rule's recheck (h)",
    Action.REDUCE: "move down the arm's dose levels",
    Action.ESCALATE: "move up the arm's dose levels",
    Action.DISCONTINUE: "give no later dose",
    Action.GIVE: "a rule matched and says: give as planned",
}
#: rule action name in a study file -> code (every action but ``NONE``)
ACTIONS: dict[str, int] = {a.name.lower(): int(a) for a in Action if a is not Action.NONE}


class Reason(IntEnum):
    """Reason of a dose-ledger row (kernel constants ``R_*``)."""

    PLANNED = 0
    DELAYED = 1
    REDUCED = 2
    ESCALATED = 3
    DISCONTINUED = 4
    MISSED = 5
    DOUBLED = 6
    NOT_REACHED = 7


#: dose-ledger reason code -> label in the ledger table
REASONS: dict[int, str] = {
    Reason.PLANNED: "as_planned",
    Reason.DELAYED: "delayed",
    Reason.REDUCED: "reduced",
    Reason.ESCALATED: "escalated",
    Reason.DISCONTINUED: "discontinued",
    Reason.MISSED: "missed",
    Reason.DOUBLED: "doubled",
    Reason.NOT_REACHED: "not_reached",
}
#: dose-ledger label -> reason code
REASON_CODES: dict[str, int] = {label: int(code) for code, label in REASONS.items()}
#: one-line meaning of each reason (the kernel's comments)
REASON_NOTES: dict[Reason, str] = {
    Reason.PLANNED: "given as planned",
    Reason.DELAYED: "given after a hold",
    Reason.REDUCED: "given at a reduced level",
    Reason.ESCALATED: "given at an escalated level",
    Reason.DISCONTINUED: "not given: treatment discontinued",
    Reason.MISSED: "not given: missed (adherence)",
    Reason.DOUBLED: "given twice (adherence: double after a miss)",
    Reason.NOT_REACHED: "after the end of the simulation (or the patient was not simulated)",
}
