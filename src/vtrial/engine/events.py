"""Events, dose modification and the dose ledger of the kernel, compiled once and cached.

Model-independent steps of a patient's time line (see
:mod:`vtrial.engine._kernel_template`): the patient's events sorted by the time they act
(:func:`patient_events`, :func:`sort_events`), a steady-state start
(:func:`steady_start`), holds and dose-level changes decided by the rules
(:func:`hold_events`, :func:`change_level`), the reason and multiplier of each dose
(:func:`dose_reason`) and the ledger (:func:`ledger_plan`, :func:`ledger_give`,
:func:`dose_summary`). Like :mod:`vtrial.engine.numerics`, numba caches them next to
this file and :func:`vtrial.engine.codegen.kernel_key` hashes its source.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from vtrial.engine.numerics import (
    ACT_ESCALATE,
    ACT_REDUCE,
    EV_INTO,
    EV_OBS,
    EV_OCC,
    EV_ORAL,
    EV_RATE,
    EV_SS,
    R_DELAYED,
    R_DISCONTINUED,
    R_DOUBLED,
    R_ESCALATED,
    R_MISSED,
    R_NOT_REACHED,
    R_PLANNED,
    R_REDUCED,
    steady_state,
    steady_state_counts,
)


@njit(cache=True, nogil=True, error_model="numpy")
def sort_events(start, et, ek, ea, eo, en, eadm, ep):  # pragma: no cover - compiled
    """Stable insertion sort of the events from ``start`` on by time (nearly sorted)."""
    for e in range(start + 1, et.shape[0]):
        j = e
        while j > start and et[j - 1] > et[j]:
            et[j - 1], et[j] = et[j], et[j - 1]
            ek[j - 1], ek[j] = ek[j], ek[j - 1]
            ea[j - 1], ea[j] = ea[j], ea[j - 1]
            eo[j - 1], eo[j] = eo[j], eo[j - 1]
            en[j - 1], en[j] = en[j], en[j - 1]
            eadm[j - 1], eadm[j] = eadm[j], eadm[j - 1]
            ep[j - 1], ep[j] = ep[j], ep[j - 1]
            j -= 1


@njit(cache=True, nogil=True, error_model="numpy")
def n_levels_a(levels, a):  # pragma: no cover - compiled
    """Number of dose levels of arm ``a`` (rows padded with NaN)."""
    n = 0
    for j in range(levels.shape[1]):
        if not math.isnan(levels[a, j]):
            n += 1
    return n


@njit(cache=True, nogil=True, error_model="numpy")
def ledger_plan(ledger, i, sl, planned):  # pragma: no cover - compiled
    """Open the ledger row of administration ``sl``: not reached, nothing given yet."""
    ledger[i, sl, 0] = np.nan
    ledger[i, sl, 1] = planned
    ledger[i, sl, 2] = 0.0
    ledger[i, sl, 3] = R_NOT_REACHED


@njit(cache=True, nogil=True, error_model="numpy")
def ledger_give(ledger, i, sl, t_adm, mult, reason):  # pragma: no cover - compiled
    """Close the ledger row of administration ``sl``: given at ``t_adm``, ``mult`` times
    the planned amount, for ``reason``."""
    ledger[i, sl, 0] = t_adm
    ledger[i, sl, 2] = ledger[i, sl, 1] * mult
    ledger[i, sl, 3] = reason


@njit(cache=True, nogil=True, error_model="numpy")
def dose_summary(i, ledger, st, t_disc, hold_total, dsum):  # pragma: no cover - compiled
    """Per-patient dose summary (``vtrial.protocol.rules.DOSE_SUMMARY``) from the ledger."""
    planned = 0.0
    given = 0.0
    for sl in range(ledger.shape[1]):  # padding slots of shorter arms are 0
        planned += ledger[i, sl, 1]
        given += ledger[i, sl, 2]
    dsum[i, 0] = given / planned if planned > 0.0 else np.nan
    dsum[i, 1] = st[2]
    dsum[i, 2] = st[1]
    dsum[i, 3] = t_disc
    dsum[i, 4] = hold_total


@njit(cache=True, nogil=True, error_model="numpy")
def steady_state_pattern(sp, p, tlag_idx, f_idx):  # pragma: no cover - compiled
    """``(kind, amount, duration, lag, compartment)`` of the dose pattern of a dataset's
    SS record (a row of ``ss_ev``) with the parameters ``p`` of its occasion: a pattern
    into the depot (compartment 0) takes the model's lag ``TLAG`` and bioavailability
    ``F`` (which scales the amount of a bolus, and the duration of an infusion at a
    given rate or, for a modelled duration, its rate), any other its own (applied on
    the host)."""
    kind = int(sp[1])
    amt = sp[2]
    dur = sp[3]
    lag = sp[5]
    j = int(sp[6])
    if j == 0:
        if tlag_idx >= 0:
            lag += p[tlag_idx]
        if f_idx >= 0:
            if kind != EV_RATE or sp[7] == 1.0:
                amt *= p[f_idx]
            else:
                dur *= p[f_idx]
    return kind, amt, dur, lag, j


@njit(cache=True, nogil=True, error_model="numpy")
def steady_state_extra(sp, p, tlag_idx, f_idx):  # pragma: no cover - compiled
    """Number of events an SS record's pattern adds after it (:func:`steady_state_doses`)."""
    tau = sp[0]
    if not tau > 0.0:
        return 0
    kind, _, dur, lag, _ = steady_state_pattern(sp, p, tlag_idx, f_idx)
    if kind == EV_RATE:
        k0, k1 = steady_state_counts(tau, lag, dur)
        return 2 * (k0 - 1) + 2 * (k1 - k0)
    k0, k1 = steady_state_counts(tau, lag, 0.0)
    return k0 - 1


@njit(cache=True, nogil=True, error_model="numpy")
def steady_state_doses(
    w, key, e, t, sp, p, tlag_idx, f_idx, et, ek, ea, eo, en, eadm, ep
):  # pragma: no cover - compiled
    """Write at ``w`` the events that the SS record's pattern (``sp``, SS event column
    ``e`` at time ``t``) adds after its steady state: the doses of the pattern that land
    after ``t`` (lag not shorter than the interval), and the infusions still running at
    ``t``, restarted there with their own ends (NONMEM's PREDPP). Boluses are ``INTO``
    events into the pattern's compartment (``eo`` is the SS event's column, whose
    compartment is the pattern's); an infusion's start and stop share a new key of
    ``given_rate`` (from ``key`` on). Returns the next ``w`` and ``key``."""
    tau = sp[0]
    if not tau > 0.0:
        return w, key
    kind, amt, dur, lag, _ = steady_state_pattern(sp, p, tlag_idx, f_idx)
    infusion = kind == EV_RATE
    k0, k1 = steady_state_counts(tau, lag, dur if infusion else 0.0)
    for k in range(1, k1 if infusion else k0):
        if k < k0:  # lands after t
            start = t - k * tau + lag
            stop = start + dur
        else:  # running at t: its rest
            start = t
            stop = t + dur - (k * tau - lag)
        et[w] = start
        ek[w] = EV_RATE if infusion else EV_INTO
        ea[w] = amt
        eo[w] = e
        en[w] = t
        eadm[w] = start
        ep[w] = key
        w += 1
        if infusion:
            et[w] = stop
            ek[w] = EV_RATE
            ea[w] = -amt
            eo[w] = e
            en[w] = t
            eadm[w] = stop
            ep[w] = key
            w += 1
            key += 1
    return w, key


@njit(cache=True, nogil=True, error_model="numpy")
def patient_events(
    i,
    a,
    pmat,
    dose_scale,
    jit,
    ev_time,
    ev_amt,
    ev_kind,
    ev_unit,
    ev_n,
    ev_slot,
    ev_pair,
    ev_cmt,
    ss_ev,
    tlag_idx,
    f_idx,
    ledger,
):  # pragma: no cover - compiled
    """Patient i's events, sorted by the time they act on the model; plans the ledger.

    Lag and bioavailability are those of the dose's occasion (applied to oral doses,
    and to infusions into the depot: a dataset's records, ``ev_cmt`` 0), amounts are
    scaled by the patient's dose scale; occasion switches precede the doses at the
    same nominal time in the table. An SS event is followed by the events its pattern
    adds (:func:`steady_state_doses`). Returns ``et`` (time the event acts on the
    model: after lag, jitter and holds), ``ek`` (kind), ``ea`` (amount acting on the
    model: after F and dose scaling), ``eo`` (column in the arm's event table; an SS
    event's for the events it adds), ``en`` (nominal time: a hold delays the events
    not before it), ``eadm`` (administration time: the ledger's time) and ``ep`` (an
    infusion's key in ``given_rate``, shared by its start and stop: the stop's column,
    or a new key past the table's for the infusions an SS event adds; -1 for other
    events).
    """
    ne0 = ev_n[a]
    occ_d = 0
    ne = ne0
    for e in range(ne0):  # the events SS records add (their pattern's lag and F)
        kind = ev_kind[a, e]
        if kind == EV_OCC:
            occ_d = int(ev_amt[a, e])
        elif kind == EV_SS:
            ne += steady_state_extra(ss_ev[a, int(ev_amt[a, e])], pmat[i, occ_d], tlag_idx, f_idx)
    et = np.empty(ne)
    ek = np.empty(ne, dtype=np.int64)
    ea = np.empty(ne)
    eo = np.empty(ne, dtype=np.int64)
    en = np.empty(ne)
    eadm = np.empty(ne)
    ep = np.full(ne, -1, dtype=np.int64)
    n_slot = ledger.shape[1]
    occ_d = 0
    w = 0
    key = ne0
    stop_t = np.empty(0)  # the end of each infusion into the depot (its lag and F)
    for e in range(ne0):
        kind = ev_kind[a, e]
        amt = ev_amt[a, e] * dose_scale[i, ev_unit[a, e]]
        tt = ev_time[a, e]
        en[w] = tt
        sl = ev_slot[a, e]
        if kind == EV_ORAL and jit.shape[1] > 0 and sl >= 0:
            tt += jit[i, sl]
        eadm[w] = tt
        if n_slot > 0 and sl >= 0:
            if kind == EV_RATE:
                ledger_plan(ledger, i, sl, amt * (ev_time[a, ev_pair[a, e]] - ev_time[a, e]))
            else:
                ledger_plan(ledger, i, sl, amt)
        if kind == EV_OCC:
            occ_d = int(ev_amt[a, e])
            amt = ev_amt[a, e]
        elif kind in (EV_OBS, EV_SS):  # a row index, not an amount
            amt = ev_amt[a, e]
        elif kind == EV_ORAL:
            if tlag_idx >= 0:
                tt += pmat[i, occ_d, tlag_idx]
            if f_idx >= 0:
                amt *= pmat[i, occ_d, f_idx]
        elif kind == EV_RATE:
            pair = ev_pair[a, e]
            ep[w] = pair if amt > 0.0 else e
            if ev_cmt[a, e] == 0 and amt > 0.0:
                # into the depot (a record): TLAG delays it, F scales its duration or,
                # when its stop's amount is 0 (a modelled duration), its rate
                if stop_t.shape[0] == 0:
                    stop_t = np.full(ne0, np.nan)
                dur = ev_time[a, pair] - ev_time[a, e]
                if tlag_idx >= 0:
                    tt += pmat[i, occ_d, tlag_idx]
                if f_idx >= 0:
                    if ev_amt[a, pair] == 0.0:
                        amt *= pmat[i, occ_d, f_idx]
                    else:
                        dur *= pmat[i, occ_d, f_idx]
                stop_t[pair] = tt + dur
                eadm[w] = tt
            elif stop_t.shape[0] > 0 and not math.isnan(stop_t[e]):
                tt = stop_t[e]
                eadm[w] = tt
        et[w] = tt
        ek[w] = kind
        ea[w] = amt
        eo[w] = e
        w += 1
        if kind == EV_SS:
            w, key = steady_state_doses(
                w,
                key,
                e,
                tt,
                ss_ev[a, int(ev_amt[a, e])],
                pmat[i, occ_d],
                tlag_idx,
                f_idx,
                et,
                ek,
                ea,
                eo,
                en,
                eadm,
                ep,
            )
    sort_events(0, et, ek, ea, eo, en, eadm, ep)
    return et, ek, ea, eo, en, eadm, ep


@njit(cache=True, nogil=True, error_model="numpy")
def steady_start(
    i, a, m, p, lam, vinv, ss_spec, ss_unit, dose_scale, tlag_idx, f_idx
):  # pragma: no cover - compiled
    """Start the PK macro at steady state of the arm's first phase, if it asks for it.

    Returns False if that steady state does not exist (see :func:`steady_state`).
    """
    tau = ss_spec[a, 0]
    if tau > 0.0 and m.shape[0] > 0:
        kind = int(ss_spec[a, 1])
        amt = ss_spec[a, 2] * dose_scale[i, ss_unit[a]]
        tlag = p[tlag_idx] if tlag_idx >= 0 else 0.0
        if kind == EV_ORAL and f_idx >= 0:
            amt *= p[f_idx]
        return steady_state(m, lam, vinv, tau, kind, amt, ss_spec[a, 3], tlag)
    return True


@njit(cache=True, nogil=True, error_model="numpy")
def hold_events(ei, delay, et, ek, ea, eo, en, eadm, ep, given_rate):  # pragma: no cover
    """Delay the decision ``ei`` and every later event by ``delay`` (h), then re-sort.

    Events nominally before the decision and the end of an infusion already running
    keep their times.
    """
    tn = en[ei]
    for e in range(ei, et.shape[0]):
        if en[e] < tn:
            continue
        if ek[e] == EV_RATE and ea[e] <= 0.0 and given_rate[ep[e]] != 0.0:
            continue
        et[e] += delay
        eadm[e] += delay
    sort_events(ei, et, ek, ea, eo, en, eadm, ep)


@njit(cache=True, nogil=True, error_model="numpy")
def change_level(a, code, step, st, levels):  # pragma: no cover - compiled
    """Move ``step`` dose levels down (reduce) or up (escalate), within the arm's levels.

    Updates the level index ``st[0]``, the reductions ``st[1]`` and the dose ``st[4]``.
    """
    lv = int(st[0]) + (step if code == ACT_ESCALATE else -step)
    lv = min(max(lv, 0), n_levels_a(levels, a) - 1)
    if code == ACT_REDUCE and lv < int(st[0]):
        st[1] += 1.0
    st[0] = lv
    st[4] = levels[a, lv]


@njit(cache=True, nogil=True, error_model="numpy")
def dose_reason(i, sl, kind, factor, disc, t_adm, t_nom, adh, jit):  # pragma: no cover
    """Multiplier of a planned dose and its ledger reason: ``(mult, reason)``.

    ``factor``: current dose over the planned one; ``t_adm``/``t_nom``: administration
    and nominal time (a later administration than its jitter explains was delayed by
    a hold); adherence and discontinuation override the reason.
    """
    mult = factor
    reason = R_PLANNED
    jit_sl = jit[i, sl] if (jit.shape[1] > 0 and kind == EV_ORAL) else 0.0
    if factor < 1.0:
        reason = R_REDUCED
    elif factor > 1.0:
        reason = R_ESCALATED
    elif t_adm > t_nom + jit_sl:
        reason = R_DELAYED
    if adh.shape[1] > 0 and sl >= 0:
        mult *= adh[i, sl]
        if adh[i, sl] == 0.0:
            reason = R_MISSED
        elif adh[i, sl] > 1.0:
            reason = R_DOUBLED
    if disc:
        mult = 0.0
        reason = R_DISCONTINUED
    return mult, reason
