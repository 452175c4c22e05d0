"""A checked dataset's records as the kernel's events: each subject's own doses and
observations, in the order NONMEM's PREDPP applies them.

:func:`record_events` turns the records of a :class:`~vtrial.data.dataset.Dataset` into
an :class:`~vtrial.protocol.dosing.EventTable` with one row per subject (the kernel's
``arm`` of patient ``i`` is ``i``; a subject with resets has one row per reset), built
with array operations (no loop over records), for any subset of subjects, so a caller
bounds its memory by simulating a chunk of subjects at a time:

- every EVID 0 and EVID 2 record is an observation event
  (:attr:`~vtrial.protocol.codes.EventKind.OBS`) whose amount is its row among the
  subject's observations: the kernel records every model output there;
- an EVID 1 record is a dose, repeated ``ADDL`` times every ``II`` hours; a record with
  ``RATE > 0`` is an infusion of ``AMT`` at that rate (a rate increase, and a decrease
  ``AMT / RATE`` hours later); the trough marker
  (:attr:`~vtrial.protocol.codes.EventKind.MARK`: ``ctrough``) comes just before a
  kernel row's last administration, after the records before it at its time;
- an EVID 3 record resets the system (every state back to its initial value, running
  infusions stopped; time may go back there); EVID 4 resets, then doses;
- a change of a time-varying value (a parameter or covariate column) starts a new
  occasion, whose parameters the kernel switches to, stopping integration there:
  NONMEM's convention by default (a record's values hold over the interval ending at
  it), rxode2's on request (:data:`INTERPOLATIONS`);
- records at equal times act in file order (an observation after a dose record at the
  same time sees the dose; one before it does not), and a dose implied by ``ADDL`` acts
  after the records at its time.

Compartment numbers (``CMT``) are the model's own (:class:`DoseRoutes`): a PK macro
numbers its depot 1, the central compartment 2 and the peripherals 3 and 4 (as
NONMEM's ADVAN2/ADVAN4/ADVAN12); an ODE model numbers its states from 1 in the model's
order (after the PK macro's compartments when it has both). A bolus goes into any
compartment (the depot with the model's bioavailability ``F`` and lag ``TLAG``; a
peripheral compartment or an ODE state, unless it is integrated on the log scale, as
an :attr:`~vtrial.protocol.codes.EventKind.INTO` event); an infusion into any
compartment of the PK macro (each event's compartment in the table's ``cmt``; into the
depot, the kernel delays it by ``TLAG`` and scales its duration by ``F``, or its rate
when the duration is modelled, ``RATE -2``) or into an ODE model's IV dosing state;
``CMT`` 0 is the model's default dose compartment, the depot when it has one.

A dose record with ``SS`` 1 (reset, then steady state) or ``SS`` 2 (steady state added
to the current state) is preceded by an :attr:`~vtrial.protocol.codes.EventKind.SS`
event: the kernel sets the state of the dose pattern (``AMT`` every ``II`` over the
infinite past) just before the record's own dose, as NONMEM's PREDPP does: the state
of the pattern's doses that have landed by the record's time; those still pending (a
lag ``TLAG`` or ``ALAGn`` of at least ``II``) land after it, and the infusions still
running restart at the record's time with their own ends
(:func:`vtrial.engine.events.steady_state_doses`, where the individual ``TLAG`` and
``F`` are known). Boluses, oral doses, infusions (also longer than ``II``) and
constant infusions (``II`` 0, ``AMT`` 0, ``RATE`` > 0: running on until a reset).

A PK macro's steady state is closed-form
(:func:`vtrial.engine.numerics.steady_state_modes`), into any of its compartments.
ODE states are integrated over the pattern, interval after interval, from their
initial states until the state before a dose converges (mrgsolve's and rxode2's
method; the PK macro's modes, if any, follow their closed form meanwhile), or the
subject's ``solver_status`` is ``no_steady_state`` (after 1000 intervals: a model
without elimination, say); a constant infusion's equilibrium is solved for by Newton's
method (NONMEM's SS6). ``SS`` 2 adds the pattern's steady state to the current state
(NONMEM's superposition: exact for linear kinetics; for ODE states the pattern's
contribution, its steady state less the initial states, is added, which is an
approximation for a nonlinear model).

The dose terms of a compartment (``terms``: NONMEM's ``F2``, ``ALAG2``, ``R2``, ``D2``
for ``CMT`` 2, given per record by the caller; the depot's ``F`` and lag are the
model's, applied in the kernel) are applied here: ``F`` scales the amount (an infusion
at a given rate then lasts ``F AMT / RATE``), ``ALAG`` delays the dose, ``RATE -1``
infuses at ``R``, ``RATE -2`` over ``D``.

Features the engine does not simulate yet are refused with a problem naming the row,
the column, the rule and the value (:func:`unsupported_problems`): for a model with
ODE states, steady state into a compartment other than its oral and IV dosing ones,
with a lag ``ALAGn`` on a non-depot dose, or of an infusion into a compartment other
than the IV one; an infusion into an ODE state other than the model's IV dosing state;
a modelled rate or duration without its term (``R1``/``D1`` for the depot too); and a
bolus into a log-scale state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vtrial.data.dataset import Dataset
from vtrial.data.tables import cell_problems
from vtrial.errors import DatasetError, Problem
from vtrial.model.spec import Model
from vtrial.protocol.codes import EventKind
from vtrial.protocol.dosing import SS_COLUMNS, EventTable

__all__ = ["DoseRoutes", "RecordEvents", "dose_routes", "record_events", "unsupported_problems"]

#: hours simulated past the last record, so that records at the last time act in order
END_MARGIN = 1.0


def record_span(time: np.ndarray) -> tuple[float, float]:
    """The simulated span (h) of records at ``time``: from the earlier of 0 and the
    first record to :data:`END_MARGIN` past the last."""
    if time.size == 0:
        return 0.0, END_MARGIN
    return min(0.0, float(time.min())), float(time.max()) + END_MARGIN


@dataclass(frozen=True)
class DoseRoutes:
    """The compartments a model takes doses into, by ``CMT`` number.

    Attributes
    ----------
    oral : int or None
        ``CMT`` of the depot (oral route: bioavailability and lag apply), None without.
    iv : int or None
        ``CMT`` of the central compartment (boluses and infusions), None without.
    names : mapping of int to str
        Every compartment's ``CMT`` -> its name (for messages).
    steady_state : bool
        Whether every steady-state route is simulated (a PK macro without ODE states:
        closed form); a model with ODE states takes steady states into its oral and IV
        dosing compartments, without ``ALAGn`` (:func:`unsupported_problems`).
    bolus : tuple of int
        Every ``CMT`` a bolus may go into: the PK macro's compartments and the ODE
        states not integrated on the log scale.
    infusion : tuple of int
        Every ``CMT`` an infusion may go into: the PK macro's compartments, or the IV
        dosing state of a model without one.
    pk : int
        Number of the PK macro's compartments (``CMT`` 1 to ``pk``), 0 without one.
    """

    oral: int | None
    iv: int | None
    names: dict[int, str]
    steady_state: bool = False
    bolus: tuple[int, ...] = ()
    infusion: tuple[int, ...] = ()
    pk: int = 0

    @property
    def default(self) -> int:
        """The compartment of a dose record with ``CMT`` 0 (the depot when there is one)."""
        return self.oral if self.oral is not None else (self.iv or 0)

    @property
    def compartments(self) -> tuple[int, ...]:
        """The ``CMT`` numbers that take doses."""
        return tuple(sorted({*self.bolus, *(c for c in (self.oral, self.iv) if c is not None)}))

    def describe(self) -> str:
        """``1 (depot, oral), 2 (central, iv)``: the dose compartments, for messages."""
        parts = []
        for c, route in ((self.oral, "oral"), (self.iv, "iv")):
            if c is not None:
                parts.append(f"{c} ({self.names[c]}, {route})")
        return ", ".join(parts) or "none"


def dose_routes(model: Model) -> DoseRoutes:
    """The :class:`DoseRoutes` of a model (see the module docstring for the numbering).

    Examples
    --------
    >>> from vtrial import build_model
    >>> dose_routes(build_model({"pk": "pk_2cmt"})).describe()
    '1 (depot, oral), 2 (central, iv)'
    """
    names: dict[int, str] = {}
    ncmt = model.pk_compartments
    if ncmt is not None:
        names = {1: "depot", 2: "central"}
        names.update({2 + j: f"peripheral {j}" for j in range(1, ncmt)})
        first_state = ncmt + 2
    else:
        first_state = 1
    states = list(model.states)
    names.update({first_state + j: s for j, s in enumerate(states)})
    bolus = tuple(
        c for c, name in names.items() if c < first_state or not model.states[name].positive
    )
    if ncmt is not None:
        return DoseRoutes(
            oral=1,
            iv=2,
            names=names,
            steady_state=not states,
            bolus=bolus,
            infusion=tuple(range(1, first_state)),
            pk=first_state - 1,
        )

    def cmt(route: str) -> int | None:
        state = model.dosing.get(route)
        return None if state is None else first_state + states.index(state)

    iv = cmt("iv")
    infusion = () if iv is None else (iv,)
    return DoseRoutes(oral=cmt("oral"), iv=iv, names=names, bolus=bolus, infusion=infusion)


@dataclass(frozen=True)
class RecordEvents:
    """The kernel's events of a dataset's subjects.

    A subject is one kernel row, or several when its records hold resets (EVID 3 or 4):
    each reset starts a new row at the reset's time, whose first event puts every state
    back to its initial value (:attr:`~vtrial.protocol.codes.EventKind.RESET`), so time
    may go back there as NONMEM allows.

    Attributes
    ----------
    table : EventTable
        One row per kernel row (``arm[i] = i``), subjects in file order.
    subjects : ndarray
        The subjects' IDs, in file order.
    row_subject : ndarray of int64, (n_rows,)
        Each kernel row's subject (index into ``subjects``).
    row : ndarray of int64, (n_records,)
        Each record's kernel row.
    obs_row : ndarray of int64, (n_records,)
        Each observation record's row among its kernel row's observations (the amount
        of its ``OBS`` event), -1 for other records.
    n_obs : int
        Most observation records of any kernel row.
    occasion : ndarray of int64, (n_records,)
        Each record's occasion within its kernel row: a new occasion starts at every
        change of a time-varying column (:func:`record_events` ``varying``).
    occasion_record : ndarray of int64, (n_rows, table.n_occ)
        A record of each occasion of each kernel row (the first), whose values hold
        over that occasion; rows with fewer occasions repeat their last.
    start, end : float
        Simulated span (h): from the earlier of 0 and the first record, to
        :data:`END_MARGIN` past the last record.
    """

    table: EventTable
    subjects: np.ndarray
    row_subject: np.ndarray
    row: np.ndarray
    obs_row: np.ndarray
    n_obs: int
    occasion: np.ndarray
    occasion_record: np.ndarray
    start: float
    end: float


#: conventions for values that change between records: NONMEM's (next observation
#: carried backward, a record's values holding over the interval that ends at it; also
#: mrgsolve's) and rxode2's (last observation carried forward)
INTERPOLATIONS = ("nocb", "locf")


def unsupported_problems(
    dataset: Dataset, routes: DoseRoutes, terms: Mapping[str, np.ndarray] | None = None
) -> list[Problem]:
    """Problems of the records whose features the engine does not simulate (yet), or
    whose dose terms (:func:`record_events` ``terms``) are missing or out of range."""
    r = dataset.records
    terms = terms or {}
    evid = r["EVID"].to_numpy()
    dose = np.isin(evid, (1, 4))
    cmt = np.where(r["CMT"].to_numpy() == 0, routes.default, r["CMT"].to_numpy())
    rate = r["RATE"].to_numpy()
    ss = r["SS"].to_numpy()
    n = len(r)
    not_depot = dose & (cmt != routes.oral)

    def term(key: str, default: float) -> np.ndarray:
        return np.asarray(terms.get(key, np.full(n, default)), dtype=np.float64)

    r_mod, d_mod = term("R", np.nan), term("D", np.nan)
    f_c, lag_c = term("F", 1.0), term("ALAG", 0.0)
    infusable = list(routes.infusion)
    ode = not routes.steady_state  # ODE states: steady state integrated, fewer routes
    infusable_text = ", ".join(f"{c} ({routes.names[c]})" for c in infusable) or "nothing"
    checks: list[tuple[str, np.ndarray, str]] = [
        (
            "SS",
            dose & (ss != 0) & ode & ~np.isin(cmt, [c for c in (routes.oral, routes.iv) if c]),
            "steady state of a model with ODE states is simulated for doses into its oral "
            f"or IV dosing compartment only: {routes.describe()}",
        ),
        (
            "SS",
            dose & (ss != 0) & ode & (cmt != routes.oral) & (lag_c != 0),
            "steady state of a model with ODE states is simulated without a lag ALAGn on "
            "a non-depot dose",
        ),
        (
            "SS",
            dose & (ss != 0) & ode & (rate != 0) & (cmt != routes.iv),
            "steady state of a model with ODE states is simulated for infusions into its "
            f"IV dosing compartment only ({routes.iv})",
        ),
        (
            "RATE",
            dose & (rate != 0) & np.isin(cmt, routes.compartments) & ~np.isin(cmt, infusable),
            "an infusion into an ODE state is simulated into the model's IV dosing state "
            f"only; infuse into {infusable_text} or give a bolus",
        ),
        (
            "CMT",
            dose & ~np.isin(cmt, routes.compartments),
            f"not a dose compartment of the model: {routes.describe()}",
        ),
    ]
    for c in np.unique(cmt[dose & np.isin(cmt, infusable)]):
        at = dose & (cmt == c)
        checks += [
            (
                "RATE",
                at & (rate == -1) & ~(r_mod > 0),
                f"RATE -1 takes the infusion rate from R{c}: give R{c} > 0 (a dataset column "
                "or a column of the parameters table)",
            ),
            (
                "RATE",
                at & (rate == -2) & ~(d_mod > 0),
                f"RATE -2 takes the infusion duration from D{c}: give D{c} > 0 (a dataset "
                "column or a column of the parameters table)",
            ),
        ]
    for c in np.unique(cmt[not_depot]):
        at = not_depot & (cmt == c)
        checks += [
            ("AMT", at & ~(f_c >= 0), f"the bioavailability F{c} of this dose must be >= 0"),
            ("TIME", at & ~(lag_c >= 0), f"the lag ALAG{c} of this dose must be >= 0"),
        ]
    out: list[Problem] = []
    for item, mask, rule in checks:
        column = dataset.columns.get(item, item)
        index = np.flatnonzero(mask)
        if index.size:
            values = (
                dataset.records[item].to_numpy()[index].tolist()
                if item in r
                else [None] * index.size
            )
            found = [
                (int(rec) - 1, rule, v)
                for rec, v in zip(r["REC"].to_numpy()[index], values, strict=True)
            ]
            out += cell_problems(dataset.name, dataset.first_line, column, found)
    return out


def record_events(
    dataset: Dataset,
    routes: DoseRoutes,
    *,
    varying: Sequence[str] = (),
    interpolation: str = "nocb",
    terms: Mapping[str, np.ndarray] | None = None,
    checked: bool = False,
) -> RecordEvents:
    """The events of every subject of ``dataset`` (see the module docstring).

    Parameters
    ----------
    dataset : Dataset
    routes : DoseRoutes
        The model's dose compartments.
    varying : sequence of str
        Record columns whose changes within a subject start a new occasion (values
        that change over time: parameters, covariates). Integration stops at each.
    interpolation : {"nocb", "locf"}
        When a change acts: ``"nocb"`` (NONMEM's, mrgsolve's) at the previous record,
        right after it, so that a record's values hold over the interval ending at it;
        ``"locf"`` (rxode2's) at the record itself, before its own events. A record's
        own observation sees its own values either way, and a change at time ``T`` can
        be written as two records at ``T``.
    terms : mapping of str to ndarray, optional
        Per record, the dose terms of its compartment (NONMEM's ``F2``, ``ALAG2``,
        ``R2``, ``D2`` for a dose into ``CMT`` 2): ``"F"`` (default 1) and ``"ALAG"``
        (h, default 0) for doses not into the depot (whose bioavailability and lag are
        the model's ``F`` and ``TLAG``), ``"R"`` (the rate of a ``RATE -1`` record)
        and ``"D"`` (the duration of a ``RATE -2`` record) for any; see
        :data:`DOSE_TERMS`.
    checked : bool
        The caller has already run :func:`unsupported_problems` on these records (on
        the whole dataset, before simulating it chunk by chunk): not again here.

    Raises
    ------
    DatasetError
        If a record asks for a feature the engine does not simulate
        (:func:`unsupported_problems`), every such record listed.
    ValueError
        An unknown ``interpolation`` or a ``varying`` name that is not a column.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation: must be one of {INTERPOLATIONS}, got {interpolation!r}")
    r = dataset.records
    missing = [c for c in varying if c not in r.columns]
    if missing:
        raise ValueError(f"varying: not columns of the dataset: {missing}")
    problems = [] if checked else unsupported_problems(dataset, routes, terms)
    if problems:
        raise DatasetError(problems)
    nrec = len(r)
    ids = r["ID"].to_numpy()
    evid = r["EVID"].to_numpy()
    new_subject = np.ones(nrec, dtype=bool)
    new_subject[1:] = ids[1:] != ids[:-1]  # the reader checked that IDs are contiguous
    reset = np.isin(evid, (3, 4))
    new_row = new_subject | reset
    row = np.cumsum(new_row) - 1
    n_rows = int(row[-1]) + 1 if nrec else 0
    row_subject = (np.cumsum(new_subject) - 1)[new_row]
    time = r["TIME"].to_numpy(dtype=np.float64)
    ii = r["II"].to_numpy(dtype=np.float64)
    addl = r["ADDL"].to_numpy()
    cmt = np.where(r["CMT"].to_numpy() == 0, routes.default, r["CMT"].to_numpy())
    amt, rate, shift = _dose_terms(r, cmt, routes, terms)
    rec = np.arange(nrec, dtype=np.float64)
    first_of_row = np.flatnonzero(new_row)
    # ---- observations: their row among the kernel row's observations
    obs = np.isin(evid, (0, 2))
    before: np.ndarray = np.cumsum(obs) - obs.astype(np.int64)  # observations before
    obs_row = np.where(obs, before - before[first_of_row][row], -1)
    n_obs = int(obs_row.max()) + 1 if obs.any() else 0
    # ---- occasions: a change of a varying column within a kernel row
    change = np.zeros(nrec, dtype=bool)
    for c in varying:
        v = r[c].to_numpy()
        change[1:] |= v[1:] != v[:-1]
    change &= ~new_row
    changes: np.ndarray = np.cumsum(change)
    occasion = changes - changes[first_of_row][row]
    n_occ = int(occasion.max()) + 1 if nrec else 1
    occasion_record = np.empty((n_rows, n_occ), dtype=np.int64)
    starts = np.flatnonzero(new_row | change)  # first record of each occasion
    occasion_record[row[starts], occasion[starts]] = starts
    last_occ = occasion[np.r_[first_of_row[1:], nrec] - 1] if nrec else occasion
    for o in range(1, n_occ):  # rows with fewer occasions repeat their last
        short = last_occ < o
        occasion_record[short, o] = occasion_record[short, o - 1]
    ch = np.flatnonzero(change)
    occ_time = time[ch] if interpolation == "locf" else time[ch - 1]
    # ---- doses (EVID 1 and 4; not a constant infusion, which is all steady state),
    # with those implied by ADDL (after the records at their time)
    ss = r["SS"].to_numpy()
    constant = (ss > 0) & (ii == 0) & (rate > 0)
    d = np.flatnonzero(np.isin(evid, (1, 4)) & ~constant)
    copies = addl[d] + 1
    src = np.repeat(d, copies)
    k = _within(copies)
    dtime = time[src] + shift[src] + k * ii[src]
    dtie = np.where(k == 0, rec[src], nrec + rec[src])
    infusion = rate[src] > 0
    bol = np.flatnonzero(~infusion)
    b_cmt = cmt[src[bol]]
    # the model's F scales the rate of an infusion into the depot over a modelled
    # duration (RATE -2), the duration of any other (the kernel applies it)
    f_rate = (cmt == routes.oral) & (r["RATE"].to_numpy() == -2)
    bkind = _bolus_kind(b_cmt, routes)
    inf = np.flatnonzero(infusion)
    duration = np.divide(amt, rate, out=np.zeros(nrec), where=rate > 0)
    # ---- steady state (SS 1, 2): the pattern's state before its dose, in ss_events (the
    # kernel adds the pattern's doses landing after it and restarts its infusions still
    # running there: their number depends on the depot's lag and F)
    s_rec = np.flatnonzero(np.isin(evid, (1, 4)) & (ss > 0))
    s_col = _rank_in_group(row[s_rec])
    n_ss = int(s_col.max()) + 1 if s_rec.size else 1
    ss_events = np.zeros((n_rows, n_ss, SS_COLUMNS))
    s_inf = rate[s_rec] > 0
    s_kind = np.where(s_inf, EventKind.RATE, _bolus_kind(cmt[s_rec], routes))
    ss_events[row[s_rec], s_col] = np.column_stack(
        [
            ii[s_rec],
            s_kind,
            np.where(s_inf, rate[s_rec], amt[s_rec]),
            duration[s_rec],
            ss[s_rec],
            shift[s_rec],
            cmt[s_rec] - 1,
            f_rate[s_rec],
        ]
    )
    # ---- infusions: (row, start, tie, rate, stop, compartment) of the doses
    i_src = src[inf]
    i_row = row[i_src]
    i_start = dtime[inf]
    i_tie = dtie[inf]
    i_rate = rate[i_src]
    i_stop = dtime[inf] + duration[i_src]
    # ---- the trough (ctrough): just before each kernel row's last administration
    adm = time[src] + k * ii[src]
    last = np.lexsort((dtie, adm, row[src]))
    last = last[np.r_[row[src][last][1:] != row[src][last][:-1], True]] if src.size else last
    rs = np.flatnonzero(reset)
    ob = np.flatnonzero(obs)
    # ---- every event, in blocks: observations, boluses, infusion starts, infusion stops,
    # occasion changes (between the records around them), resets and steady states
    # (before their record's dose)
    blocks = [
        (row[ob], time[ob], rec[ob], EventKind.OBS, obs_row[ob].astype(np.float64)),
        (row[src[bol]], dtime[bol], dtie[bol], bkind, amt[src[bol]]),
        (i_row, i_start, i_tie, EventKind.RATE, i_rate),
        (i_row, i_stop, np.full(i_row.size, -1.0), EventKind.RATE,
         np.where(f_rate[i_src], 0.0, -i_rate)),
        (row[ch], occ_time, rec[ch] - 0.5, EventKind.OCC, occasion[ch].astype(np.float64)),
        (row[rs], time[rs], rec[rs] - 0.75, EventKind.RESET, np.zeros(rs.size)),
        (row[s_rec], time[s_rec], rec[s_rec] - 0.25, EventKind.SS, s_col.astype(np.float64)),
        (row[src[last]], adm[last], dtie[last] - 0.2, EventKind.MARK, np.zeros(last.size)),
    ]  # fmt: skip
    e_row = np.concatenate([b[0] for b in blocks])
    e_time = np.concatenate([b[1] for b in blocks])
    e_tie = np.concatenate([b[2] for b in blocks])
    e_kind = np.concatenate(
        [np.broadcast_to(np.asarray(b[3], dtype=np.int64), b[0].shape) for b in blocks]
    )
    e_amt = np.concatenate([b[4] for b in blocks])
    # the 0-based compartment of a bolus, an infusion's start and stop and a steady
    # state's pattern (the kernel reads it for INTO, RATE and SS), 0 for the others
    e_cmt = np.zeros(e_row.size, dtype=np.int64)
    first_start = ob.size + bol.size
    first_ss = e_row.size - last.size - s_rec.size
    e_cmt[ob.size : first_start] = b_cmt - 1
    # (an infusion into an ODE model's IV dosing state goes there whatever its number)
    i_cmt = np.where(cmt[i_src] <= routes.pk, cmt[i_src] - 1, 1)
    e_cmt[first_start : first_start + 2 * i_row.size] = np.tile(i_cmt, 2)
    e_cmt[first_ss : first_ss + s_rec.size] = cmt[s_rec] - 1
    n_ev = e_row.size
    stop_of = np.full(n_ev, -1)  # event -> its infusion stop's event
    stop_of[first_start : first_start + i_row.size] = (
        first_start + i_row.size + np.arange(i_row.size)
    )
    order = np.lexsort((e_tie, e_time, e_row))  # stable: ties keep the order above
    counts = np.bincount(e_row, minlength=n_rows)
    first = np.cumsum(counts) - counts
    col = np.empty(n_ev, dtype=np.int64)
    col[order] = np.arange(n_ev) - first[e_row[order]]
    width = max(1, int(counts.max()) if n_rows else 1)
    table = _padded(n_rows, width, n_occ, e_row, col, e_time, e_amt, e_kind, stop_of, counts)
    cmt_table = np.zeros((n_rows, width), dtype=np.int64)
    cmt_table[e_row, col] = e_cmt
    table = dataclasses.replace(table, ss_events=ss_events, cmt=cmt_table)
    start, end = record_span(time)
    return RecordEvents(
        table=table,
        subjects=ids[new_subject],
        row_subject=row_subject.astype(np.int64),
        row=row.astype(np.int64),
        obs_row=obs_row.astype(np.int64),
        n_obs=n_obs,
        occasion=occasion.astype(np.int64),
        occasion_record=occasion_record,
        start=start,
        end=end,
    )


#: the dose terms of :func:`record_events` ``terms``, by key: NONMEM's item prefix,
#: followed by the dose's ``CMT`` in NONMEM (``F2``, ``ALAG2``, ``R2``, ``D2``)
DOSE_TERMS = ("F", "ALAG", "R", "D")


def _dose_terms(
    r: Any, cmt: np.ndarray, routes: DoseRoutes, terms: Mapping[str, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per record: the amount, the rate (> 0 for an infusion, modelled rates resolved)
    and the time shift (lag) of a dose, with its compartment's terms applied (NONMEM:
    ``F`` scales the amount, so an infusion at a given rate lasts ``F AMT / RATE``;
    ``RATE -1`` infuses ``F AMT`` at ``R``, ``RATE -2`` over ``D``); doses into the
    depot take the model's ``F`` and ``TLAG`` in the kernel instead."""
    terms = terms or {}
    n = len(r)
    amt = r["AMT"].to_numpy(dtype=np.float64).copy()
    rate = r["RATE"].to_numpy(dtype=np.float64).copy()
    shift = np.zeros(n)
    not_depot = cmt != routes.oral
    if "F" in terms:
        amt = np.where(not_depot, amt * terms["F"], amt)
    if "ALAG" in terms:
        shift = np.where(not_depot, terms["ALAG"], 0.0)
    if "R" in terms:
        rate = np.where(rate == -1, terms["R"], rate)
    if "D" in terms:
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(rate == -2, amt / terms["D"], rate)
    return amt, rate, shift


def _bolus_kind(cmt: np.ndarray, routes: DoseRoutes) -> np.ndarray:
    """The kernel's event kind of a bolus into ``cmt``: an oral dose into the depot, a
    bolus into the central compartment, else a bolus into a given compartment."""
    return np.where(
        cmt == routes.oral,
        EventKind.ORAL,
        np.where(cmt == routes.iv, EventKind.BOLUS, EventKind.INTO),
    )


def _within(counts: np.ndarray) -> np.ndarray:
    """0, 1, ..., c - 1 for each count c, concatenated (each item's rank in its group).

    Examples
    --------
    >>> _within(np.array([3, 0, 2])).tolist()
    [0, 1, 2, 0, 1]
    """
    counts = np.asarray(counts, dtype=np.int64)
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def _rank_in_group(group: np.ndarray) -> np.ndarray:
    """Each element's rank among the equal elements before it (``group`` sorted)."""
    _, sizes = np.unique(group, return_counts=True)
    return _within(sizes)


def _padded(
    n_subj: int,
    width: int,
    n_occ: int,
    subj: np.ndarray,
    col: np.ndarray,
    time: np.ndarray,
    amount: np.ndarray,
    kind: np.ndarray,
    stop_of: np.ndarray,
    counts: np.ndarray,
) -> EventTable:
    """The padded per-subject :class:`EventTable` of events placed at ``(subj, col)``."""
    t = np.full((n_subj, width), np.inf)
    a = np.zeros((n_subj, width))
    k = np.full((n_subj, width), int(EventKind.MARK), dtype=np.int64)
    pair = np.full((n_subj, width), -1, dtype=np.int64)
    t[subj, col] = time
    a[subj, col] = amount
    k[subj, col] = kind
    starts = np.flatnonzero(stop_of >= 0)
    pair[subj[starts], col[starts]] = col[stop_of[starts]]
    return EventTable(
        time=t,
        amount=a,
        kind=k,
        unit=np.zeros((n_subj, width), dtype=np.int64),
        n=counts.astype(np.int64),
        ss=np.zeros((n_subj, 4)),
        ss_unit=np.zeros(n_subj, dtype=np.int64),
        n_occ=n_occ,
        slot=np.full((n_subj, width), -1, dtype=np.int64),
        pair=pair,
        n_slots=0,
    )
