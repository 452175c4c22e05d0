"""A checked dataset's records as the kernel's events: each subject's own doses and
observations, in the order NONMEM's PREDPP applies them.

:func:`record_events` turns the records of a :class:`~vtrial.data.dataset.Dataset` into
an :class:`~vtrial.protocol.dosing.EventTable` with one row per subject (the kernel's
``arm`` of patient ``i`` is ``i``), built with array operations (no loop over records),
for any subset of subjects, so a caller bounds its memory by simulating a chunk of
subjects at a time:

- every EVID 0 and EVID 2 record is an observation event
  (:attr:`~vtrial.protocol.codes.EventKind.OBS`) whose amount is its row among the
  subject's observations: the kernel records every model output there;
- an EVID 1 record is a dose, repeated ``ADDL`` times every ``II`` hours; a record with
  ``RATE > 0`` is an infusion of ``AMT`` at that rate (a rate increase, and a decrease
  ``AMT / RATE`` hours later);
- records at equal times act in file order (an observation after a dose record at the
  same time sees the dose; one before it does not), and a dose implied by ``ADDL`` acts
  after the records at its time.

Compartment numbers (``CMT``) are the model's own (:class:`DoseRoutes`): a PK macro
numbers its depot 1, the central compartment 2 and the peripherals 3 and 4 (as
NONMEM's ADVAN2/ADVAN4/ADVAN12); an ODE model numbers its states from 1 in the model's
order. Doses go into the depot (bioavailability ``F`` and lag ``TLAG`` apply) or the
central compartment (boluses and infusions); ``CMT`` 0 is the model's default dose
compartment, the depot when it has one.

Features the engine does not simulate yet are refused with a problem naming the row,
the column, the rule and the value (:func:`unsupported_problems`): EVID 3 and 4
(resets), steady-state doses (``SS`` 1 or 2), modelled rates and durations (``RATE``
-1 or -2), a dose into a compartment that is not a dose route, and an infusion into
the depot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vtrial.data.dataset import Dataset
from vtrial.data.tables import cell_problems
from vtrial.errors import DatasetError, Problem
from vtrial.model.spec import Model
from vtrial.protocol.codes import EventKind
from vtrial.protocol.dosing import EventTable

__all__ = ["DoseRoutes", "RecordEvents", "dose_routes", "record_events", "unsupported_problems"]

#: hours simulated past the last record, so that records at the last time act in order
END_MARGIN = 1.0


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
    """

    oral: int | None
    iv: int | None
    names: dict[int, str]

    @property
    def default(self) -> int:
        """The compartment of a dose record with ``CMT`` 0 (the depot when there is one)."""
        return self.oral if self.oral is not None else (self.iv or 0)

    @property
    def compartments(self) -> tuple[int, ...]:
        """The ``CMT`` numbers that take doses."""
        return tuple(c for c in (self.oral, self.iv) if c is not None)

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
    if ncmt is not None:
        return DoseRoutes(oral=1, iv=2, names=names)

    def cmt(route: str) -> int | None:
        state = model.dosing.get(route)
        return None if state is None else first_state + states.index(state)

    return DoseRoutes(oral=cmt("oral"), iv=cmt("iv"), names=names)


@dataclass(frozen=True)
class RecordEvents:
    """The kernel's events of a dataset's subjects.

    Attributes
    ----------
    table : EventTable
        One row per subject, in file order (``arm[i] = i``).
    subjects : ndarray
        The subjects' IDs, in file order.
    subject : ndarray of int64, (n_records,)
        Each record's subject (row of ``table``).
    obs_row : ndarray of int64, (n_records,)
        Each observation record's row among its subject's observations (the amount of
        its ``OBS`` event), -1 for a dose record.
    n_obs : int
        Most observation records of any subject.
    start, end : float
        Simulated span (h): from the earlier of 0 and the first record, to
        :data:`END_MARGIN` past the last record.
    """

    table: EventTable
    subjects: np.ndarray
    subject: np.ndarray
    obs_row: np.ndarray
    n_obs: int
    start: float
    end: float


def unsupported_problems(dataset: Dataset, routes: DoseRoutes) -> list[Problem]:
    """Problems of the records whose features the engine does not simulate (yet)."""
    r = dataset.records
    evid = r["EVID"].to_numpy()
    dose = np.isin(evid, (1, 4))
    cmt = np.where(r["CMT"].to_numpy() == 0, routes.default, r["CMT"].to_numpy())
    rate = r["RATE"].to_numpy()
    checks = [
        (
            "EVID",
            np.isin(evid, (3, 4)),
            "resets (EVID 3, 4) are not simulated yet; split the subject's records at the "
            "reset instead",
        ),
        (
            "SS",
            dose & (r["SS"].to_numpy() != 0),
            "steady-state doses (SS 1, 2) are not simulated yet",
        ),
        (
            "RATE",
            dose & np.isin(rate, (-1, -2)),
            "modelled rates and durations (RATE -1, -2) are not simulated yet",
        ),
        (
            "CMT",
            dose & ~np.isin(cmt, routes.compartments),
            f"not a dose compartment of the model: {routes.describe()}",
        ),
        (
            "RATE",
            dose & (rate > 0) & (cmt == routes.oral) & (routes.oral != routes.iv),
            "an infusion into the depot is not simulated; infuse into the central "
            f"compartment ({routes.iv}) or give a bolus",
        ),
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


def record_events(dataset: Dataset, routes: DoseRoutes) -> RecordEvents:
    """The events of every subject of ``dataset`` (see the module docstring).

    Raises
    ------
    DatasetError
        If a record asks for a feature the engine does not simulate
        (:func:`unsupported_problems`), every such record listed.
    """
    problems = unsupported_problems(dataset, routes)
    if problems:
        raise DatasetError(problems)
    r = dataset.records
    nrec = len(r)
    ids = r["ID"].to_numpy()
    new = np.ones(nrec, dtype=bool)
    new[1:] = ids[1:] != ids[:-1]
    subject = np.cumsum(new) - 1  # the reader checked that IDs are contiguous
    n_subj = int(subject[-1]) + 1 if nrec else 0
    time = r["TIME"].to_numpy(dtype=np.float64)
    evid = r["EVID"].to_numpy()
    amt = r["AMT"].to_numpy(dtype=np.float64)
    rate = r["RATE"].to_numpy(dtype=np.float64)
    ii = r["II"].to_numpy(dtype=np.float64)
    addl = r["ADDL"].to_numpy()
    cmt = np.where(r["CMT"].to_numpy() == 0, routes.default, r["CMT"].to_numpy())
    rec = np.arange(nrec)
    # ---- observations: their row among the subject's observations
    obs = np.isin(evid, (0, 2))
    before: np.ndarray = np.cumsum(obs) - obs.astype(np.int64)  # observations before
    obs_row = np.where(obs, before - before[np.flatnonzero(new)][subject], -1)
    n_obs = int(obs_row.max()) + 1 if obs.any() else 0
    # ---- doses, with those implied by ADDL (after the records at their time)
    d = np.flatnonzero(evid == 1)
    copies = addl[d] + 1
    src = np.repeat(d, copies)
    k = np.arange(src.size) - np.repeat(np.cumsum(copies) - copies, copies)
    dtime = time[src] + k * ii[src]
    dtie = np.where(k == 0, src, nrec + src)
    infusion = rate[src] > 0
    oral = ~infusion & (cmt[src] == routes.oral)
    dkind = np.where(infusion, EventKind.RATE, np.where(oral, EventKind.ORAL, EventKind.BOLUS))
    damt = np.where(infusion, rate[src], amt[src])
    inf = np.flatnonzero(infusion)
    # ---- every event: observations, doses (infusion starts), infusion stops
    o = np.flatnonzero(obs)
    e_subj = np.concatenate([subject[o], subject[src], subject[src[inf]]])
    e_time = np.concatenate([time[o], dtime, dtime[inf] + amt[src[inf]] / rate[src[inf]]])
    e_tie = np.concatenate([rec[o], dtie, np.full(inf.size, -1)])
    e_kind = np.concatenate(
        [np.full(o.size, int(EventKind.OBS)), dkind, np.full(inf.size, int(EventKind.RATE))]
    ).astype(np.int64)
    e_amt = np.concatenate([obs_row[o].astype(np.float64), damt, -rate[src[inf]]])
    n_ev = e_subj.size
    stop_of = np.full(n_ev, -1)  # event -> its infusion stop's event
    stop_of[o.size + inf] = o.size + src.size + np.arange(inf.size)
    order = np.lexsort((e_tie, e_time, e_subj))  # stable: ties keep the order above
    counts = np.bincount(e_subj, minlength=n_subj)
    first = np.cumsum(counts) - counts
    col = np.empty(n_ev, dtype=np.int64)
    col[order] = np.arange(n_ev) - first[e_subj[order]]
    width = max(1, int(counts.max()) if n_subj else 1)
    table = _padded(n_subj, width, e_subj, col, e_time, e_amt, e_kind, stop_of, counts)
    start = min(0.0, float(time.min())) if nrec else 0.0
    end = (float(time.max()) if nrec else 0.0) + END_MARGIN
    return RecordEvents(
        table=table,
        subjects=ids[new],
        subject=subject.astype(np.int64),
        obs_row=obs_row.astype(np.int64),
        n_obs=n_obs,
        start=start,
        end=end,
    )


def _padded(
    n_subj: int,
    width: int,
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
        n_occ=1,
        slot=np.full((n_subj, width), -1, dtype=np.int64),
        pair=pair,
        n_slots=0,
    )
