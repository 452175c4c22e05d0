"""Template of the compiled simulation kernel (numba).

:mod:`vtrial.engine.codegen` copies this file into the kernel cache and replaces the
blocks between ``--- NAME BEGIN ---``/``--- NAME END ---`` marker comments:

- ``MODEL``: functions generated from a model spec. As shipped, the block holds a
  pure-PK model (no ODE states, output ``CP``), so this module is itself a working
  kernel, used by the tests.
- ``RULES``: ``_decide``, generated from a study's dose-modification rules
  (:func:`vtrial.protocol.rules.rules_source`); as shipped, no rule ever matches.
- ``FEATURES``: ``RECORDS`` and ``GRID_AFTER``, constants that switch optional parts
  on (:func:`vtrial.engine.codegen.features_source`); numba prunes a branch on a False
  constant before compiling it. As shipped, both are on.
- ``CODES`` and ``BATCH ARGS``: the integer codes shared with the host and the
  parameter list of :func:`simulate_batch`, written from their single declaration in
  :mod:`vtrial.engine.interface`. They are never edited here: the
  shipped text equals what code generation writes (``tests/engine/test_interface.py``).

Only this file is generated per model (and rules). It calls fixed modules:
:mod:`vtrial.engine.numerics` and :mod:`vtrial.engine.events` (model-independent: exact
linear PK in modal form, steady state, PK exposure, LU, events, dose modification,
ledger; compiled once and cached) and :mod:`vtrial.engine.model_steps` (the steppers
and other steps that call the model, made for this model's functions and constants
by :func:`~vtrial.engine.model_steps.kernel_steps` and compiled with this kernel).
Their source is part of the kernel's key (:func:`vtrial.engine.codegen.kernel_key`).

Numerical method (per patient, independent of every other patient):

- Linear PK is solved exactly in modal coordinates: the compartment matrix ``A`` is
  diagonalised on the host (``A = V diag(lam) V^-1``); between events each mode
  evolves as ``m(t) = (m0 + u/lam) exp(lam dt) - u/lam`` (``u``: infusion input),
  doses add ``amount * V^-1[:, cmt]``, and ``CP = sum(cmode * m)``. AUC is the
  exact integral of that sum; Cmax is refined by golden-section search.
- ODE states are integrated with the Dormand-Prince 5(4) pair (FSAL) with
  per-patient adaptive steps, the 4th-order continuous extension for output times,
  and exact stops at every event. ``positive`` states are integrated on the log
  scale. Patients where it fails or detects stiffness are re-solved by Rosenbrock 2(3).
- Output times at a dose are taken before it (mrgsolve's default), or after the events
  at their time with ``GRID_AFTER`` (``simulation.outputs_at_dose: after``). Observation events
  (``EV_OBS``: a dataset's records, :mod:`vtrial.data.records`) are events like doses:
  they act in the order of the patient's event table, so a record after a dose at its
  time sees the dose (NONMEM's record order); the host ends the horizon after the last
  record, so that no dose acts at its very end.

Structure: :func:`simulate_batch` solves the patients one after the other (it releases
the GIL: :func:`vtrial.engine.host.run_kernel` runs slices of patients on several
threads; a ``prange`` loop here would add about 10 s of compile time per model). The
patient's solve is written out in the loop, not called as a function of its own: numba
optimises a callee again inside every caller it is linked into, which cost about 3 s of
compile time per model. A patient's time line is walked segment by segment between events
through named steps:

- ``patient_events`` (sorted events; plans the ledger), ``steady_start``;
- at each event time: ``evaluate_rules``, ``hold_events`` and ``change_level`` (dose
  modification at a decision), ``dose_reason`` and ``dose`` (an administration),
  ``change_occasion``, ``trough``, ``observe`` (every output at an observation
  record, into ``obs``) and a reset (initial states, infusions stopped);
- over each segment: ``integration_step`` (one adaptive step with error and stiffness
  control), then for the grid points inside the step ``state_at`` (dense output) and
  ``record`` (outputs and every per-patient reduction); ``pk_peak_at_event``,
  ``pk_peak_on_grid``, ``ode_peak_at_event``, ``track_ode_peak``: exposure candidates;
- at the end: ``pk_cmax``, ``ode_cmax`` (exact Cmax), ``fail``, ``dose_summary``.

The steps take plain arrays and scalars and return the scalars they change (a named
tuple of arrays would update reference counts at each access to a field). Arrays are
copied by loops, not slices: a slice assignment compiles its error path with the kernel.
"""

from __future__ import annotations

import math  # noqa: F401 - used by the generated MODEL block

import numpy as np
from numba import njit

from vtrial.engine.events import (
    change_level,
    dose_reason,
    dose_summary,
    hold_events,
    ledger_give,
    patient_events,
    steady_start,
    steady_state_pattern,
)
from vtrial.engine.model_steps import kernel_steps
from vtrial.engine.numerics import (
    advance_modes,
    change_occasion,
    clear_traces,
    cp_at,
    fail,
    landing_offset,
    modal_input,
    modal_input_rates,
    pk_cmax,
    pk_peak_at_event,
    pk_peak_on_grid,
    steady_state_modes,
)

# --- CODES BEGIN ---
# generated from vtrial.engine.interface.CODE_TABLES: edit there, not here
# solver status (vtrial.engine.interface.Status)
OK = 0  # solved
MAX_STEPS = 1  # more attempted steps than max_steps
STEP_UNDERFLOW = 2  # the step size became negligible against the time
NONFINITE = 3  # the states became non-finite at every step size
INVALID_INITIAL = 4  # set on the host: unusable parameters or initial states
STIFF = 5  # Dormand-Prince detected stiffness: the patient is re-solved with Rosenbrock
NO_STEADY_STATE = 6  # an SS record's dose pattern did not converge to a steady state
# integration methods (vtrial.engine.interface.Method)
DOPRI5 = 0  # Dormand-Prince 5(4)
ROSENBROCK23 = 1  # Rosenbrock 2(3)
DOPRI5_ROSENBROCK23 = 2  # used: Dormand-Prince failed or was stiff, Rosenbrock retry
# event kinds (vtrial.protocol.codes.EventKind)
EV_ORAL = 0  # bolus into the depot (lag and bioavailability apply)
EV_BOLUS = 1  # bolus into the central compartment
EV_RATE = 2  # change of the infusion rate into the central compartment
EV_MARK = 3  # no dose: a time at which the pre-dose concentration is recorded (trough)
EV_OCC = 4  # no dose: a new occasion starts (amount: its index; IOV parameters change)
EV_DECIDE = 5  # no dose: dose-modification rules are evaluated
EV_OBS = 6  # no dose: a record whose outputs are kept (amount: its row in obs)
EV_RESET = 7  # no dose: every state back to its initial value, infusions stopped
EV_SS = 8  # steady state of a dose pattern (amount: its row in ss_ev), before its dose
EV_INTO = 9  # bolus into the compartment ev_cmt (PK modes, then ODE states)
# rule actions (vtrial.protocol.codes.Action)
ACT_NONE = 0  # no rule matched: give as planned
ACT_HOLD = 1  # delay this and every later event by the rule's recheck (h)
ACT_REDUCE = 2  # move down the arm's dose levels
ACT_ESCALATE = 3  # move up the arm's dose levels
ACT_DISCONTINUE = 4  # give no later dose
ACT_GIVE = 5  # a rule matched and says: give as planned
# dose-ledger reasons (vtrial.protocol.codes.Reason)
R_PLANNED = 0  # given as planned
R_DELAYED = 1  # given after a hold
R_REDUCED = 2  # given at a reduced level
R_ESCALATED = 3  # given at an escalated level
R_DISCONTINUED = 4  # not given: treatment discontinued
R_MISSED = 5  # not given: missed (adherence)
R_DOUBLED = 6  # given twice (adherence: double after a miss)
R_NOT_REACHED = 7  # after the end of the simulation (or the patient was not simulated)
# --- CODES END ---

# --- MODEL BEGIN ---
NS = 0  # number of ODE states
NO = 1  # number of outputs
LOGSCALE = np.zeros(NS, dtype=np.bool_)  # states integrated on the log scale
OUT_STATES = np.zeros(0, dtype=np.int64)  # states the outputs depend on (dense output)
DOSE_ORAL = -1  # state receiving oral doses (-1: PK macro)
DOSE_IV = -1  # state receiving IV doses and infusions (-1: PK macro)
CP_OUT = -1  # output whose Cmax/AUC/trough are tracked (-1: PK macro CP)
AUC_STATE = -1  # state integrating CP_OUT


@njit(cache=True, nogil=True, error_model="numpy")
def _to_internal(y, z):  # pragma: no cover - compiled
    for i in range(NS):
        z[i] = y[i]


@njit(cache=True, nogil=True, error_model="numpy")
def _rhs(t, z, p, cp, dz):  # pragma: no cover - compiled
    for i in range(NS):
        dz[i] = 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _outputs(t, z, p, cp, o):  # pragma: no cover - compiled
    o[0] = cp


# --- MODEL END ---


# --- RULES BEGIN ---
N_MEAS = 0  # outputs measured with assay error at decisions


@njit(cache=True, nogil=True, error_model="numpy")
def _decide(a, t, o, wmin, wmax, omin, omax, eps, st, act):  # pragma: no cover - compiled
    """Dose-modification rules of arm ``a`` at a decision (generated from the study).

    ``o``: outputs now; ``wmin``/``wmax``: their extremes since the last decision;
    ``omin``/``omax``: since the start; ``eps``: the assay errors (standard normals
    times each measured output's sd);
    ``st``: level index, reductions, holds, hours held at this decision, current dose.
    Writes ``act[0]`` = 1 if a rule matched (0 otherwise) and ``act[4]`` = its number;
    the rule's action and numbers are data (``rule_par``).
    """
    act[0] = 0.0


# --- RULES END ---

# --- FEATURES BEGIN ---
RECORDS = True  # events of dataset records: observations, resets, steady states
GRID_AFTER = True  # a grid point at an event time: after its events
# --- FEATURES END ---


@njit(cache=True, nogil=True, error_model="numpy")
def _f(t, z, p, cp, rin, dz):  # pragma: no cover - compiled
    """Right-hand side plus the infusion rate ``rin`` into the IV dosing state."""
    _rhs(t, z, p, cp, dz)
    if DOSE_IV >= 0:
        dz[DOSE_IV] += rin


# the steps that call the model, made for this model (vtrial.engine.model_steps)
_steps = kernel_steps(
    __name__, _f, _outputs, _decide, NS, LOGSCALE, OUT_STATES, CP_OUT, DOSE_ORAL, DOSE_IV
)
dose = _steps.dose
evaluate_rules = _steps.evaluate_rules
initial_step = _steps.initial_step
integration_step = _steps.integration_step
ode_cmax = _steps.ode_cmax
ode_peak_at_event = _steps.ode_peak_at_event
record = _steps.record
state_at = _steps.state_at
track_ode_peak = _steps.track_ode_peak
trough = _steps.trough
observe = _steps.observe
ode_steady_state = _steps.ode_steady_state
#: SS records of a model with ODE states integrate them (pruned without: compile time)
ODE_STEADY_STATE = NS > 0


@njit(cache=True, nogil=True, error_model="numpy")
def simulate_batch(
    # --- BATCH ARGS BEGIN ---
    pmat,
    y0,
    arm,
    dose_scale,
    lam_all,
    cm_all,
    vinv_all,
    vec_all,
    ev_time,
    ev_amt,
    ev_kind,
    ev_unit,
    ev_n,
    ss_spec,
    ss_unit,
    tlag_idx,
    f_idx,
    ev_slot,
    ev_pair,
    ss_ev,
    ev_cmt,
    levels,
    start_level,
    rule_par,
    adh,
    jit,
    meas_eps,
    t_grid,
    store_pos,
    store_out,
    probe_pos,
    mon_out,
    mon_thr,
    mon_dir,
    rtol,
    atol,
    max_steps,
    h_max,
    method0,
    status,
    nsteps,
    omin,
    omax,
    targmin,
    targmax,
    probes,
    cross,
    store,
    obs,
    pk_metrics,
    ledger,
    dsum,
    method_used,
    # --- BATCH ARGS END ---
):  # pragma: no cover - compiled
    """Simulate every patient of a batch; see :func:`vtrial.engine.host.run_kernel`.

    The parameters are declared, in this order, with their dtypes and shapes, by
    :data:`vtrial.engine.interface.KERNEL_ARGS`.
    """
    n = pmat.shape[0]
    # each patient is solved once, then again with the L-stable method where
    # Dormand-Prince failed or was stiff (one call site, so the integrator is compiled
    # once); the patient's solve is written out here, not called, so that the compiler
    # optimises it once instead of again inside this loop (about 3 s per model)
    for run in range(2 * n):
        i = run // 2
        attempt = run % 2
        method = method0 if attempt == 0 else ROSENBROCK23
        if attempt == 1 and (method0 != DOPRI5 or status[i] == OK or status[i] == INVALID_INITIAL):
            continue
        method_used[i] = method0 if attempt == 0 else DOPRI5_ROSENBROCK23
        ns = NS
        nm = lam_all.shape[2]
        no = omin.shape[1]
        a = arm[i]
        occ = 0
        p = pmat[i, 0]
        lam = lam_all[i, 0]
        cm = cm_all[i, 0]
        vinv = vinv_all[i, 0]
        et, ek, ea, eo, en, eadm, ep = patient_events(
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
        )
        ne = et.shape[0]
        given_rate = np.zeros(ne)  # rate started by an infusion, by its key (ep)
        n_slot = ledger.shape[1]
        # dose modification and adherence state
        st = np.zeros(5)  # level index, reductions, holds, hours held at this decision, dose
        act = np.zeros(5)
        lvl0 = start_level[a]
        st[0] = lvl0
        base_dose = levels[a, lvl0] if lvl0 >= 0 else 1.0
        st[4] = base_dose
        factor = 1.0
        disc: np.bool_ = np.bool_(False)  # not literals: a literal would type the calls twice
        t_disc = np.nan
        hold_total = 0.0
        n_eval = np.int64(0)
        held_before = False
        wmin = np.empty(no)  # extremes of the outputs since the last decision
        wmax = np.empty(no)
        wmin[:] = np.nan
        wmax[:] = np.nan
        # ---- state
        m = np.zeros(nm)
        u = np.zeros(nm)
        wv = np.zeros(nm)
        xa = np.zeros(nm)
        rtot = 0.0  # infusion rate into the PK macro's central compartment (mg/h)
        rpk = np.zeros(nm)  # rates into its other compartments (a dataset's records)
        rin = 0.0  # infusion rate into the IV dosing state of an ODE model (mg/h)
        z = np.zeros(ns)
        _to_internal(y0[i], z)
        k = np.empty((7, ns))
        ztmp = np.empty(ns)
        znew = np.empty(ns)
        zg = np.zeros(ns)
        errv = np.empty(ns)
        jac = np.empty((ns, ns))
        wmat = np.empty((ns, ns))
        rvec = np.empty(ns)
        nstiff = 0
        nonstiff = 0
        clear_traces(i, cross, probes, store, obs)  # a retry starts from clean outputs
        o = np.empty(no)
        oprev = np.empty(no)
        otmp = np.empty(no)
        cand = np.empty(2)  # best PK concentration on the grid or at an event, its time
        cand[0] = -np.inf
        cand[1] = np.nan
        # PK exposure: the segment of the best candidate, the one before it, the last one
        best_m = np.zeros(nm)
        best_u = np.zeros(nm)
        best_seg = np.empty(4)  # segment start, end, grid spacing around the candidate, occasion
        best_seg[:] = np.nan
        best_pm = np.zeros(nm)
        best_pu = np.zeros(nm)
        best_pseg = np.empty(3)  # segment start, window start, occasion
        best_pseg[:] = np.nan
        prev_m = np.zeros(nm)
        prev_u = np.zeros(nm)
        prev_seg = np.empty(2)  # segment start, occasion
        prev_seg[:] = np.nan
        # ODE exposure (CP_OUT >= 0): best step end or post-dose point, and the steps around
        # it (start time, size, state, stages, parameter occasion) for the refinement
        nsave = ns if CP_OUT >= 0 else 0
        ode_best = -np.inf
        ode_tbest = np.nan
        lz = np.empty(nsave)
        lk = np.empty((7, nsave))
        rz = np.empty(nsave)
        rk = np.empty((7, nsave))
        lseg = np.empty(3)  # t0, h, occasion of the step ending at the best point
        rseg = np.empty(3)  # t0, h, occasion of the step starting there
        lseg[:] = np.nan
        rseg[:] = np.nan
        want_right = False
        for j in range(no):
            omin[i, j] = np.nan
            omax[i, j] = np.nan
            targmin[i, j] = np.nan
            targmax[i, j] = np.nan
        t = t_grid[0]
        t_end = t_grid[t_grid.shape[0] - 1]
        ng = t_grid.shape[0]
        g = 0
        auc = 0.0
        ctrough = np.nan
        steps = 0
        h = h_max
        stat = OK
        if not steady_start(i, a, m, p, lam, vinv, ss_spec, ss_unit, dose_scale, tlag_idx, f_idx):
            stat = INVALID_INITIAL
        cp_start = cp_at(0.0, m, wv, lam, cm)
        # grid points at the start are taken before any dose at that time (after it with
        # GRID_AFTER: below, once the events at the start are applied)
        while not GRID_AFTER and g < ng and t_grid[g] <= t and stat == OK:
            zs = z if ns > 0 else zg
            record(
                g,
                t_grid[g],
                zs,
                p,
                cp_start,
                i,
                o,
                oprev,
                t_grid,
                store_pos,
                store_out,
                probe_pos,
                mon_out,
                mon_thr,
                mon_dir,
                omin,
                omax,
                targmin,
                targmax,
                probes,
                cross,
                store,
                cand,
                wmin,
                wmax,
            )
            g += 1
        ei = np.int64(0)
        first = True
        while t < t_end and stat == OK:
            # ---- apply the events at time t
            while ei < ne and et[ei] <= t:
                kind = ek[ei]
                if kind == EV_DECIDE:
                    code, delay, step = evaluate_rules(
                        i,
                        a,
                        t,
                        n_eval,
                        disc,
                        z,
                        p,
                        m,
                        wv,
                        lam,
                        cm,
                        otmp,
                        wmin,
                        wmax,
                        omin,
                        omax,
                        meas_eps,
                        rule_par,
                        st,
                        act,
                    )
                    n_eval += 1
                    if code == ACT_HOLD:
                        if not held_before:
                            st[2] += 1.0
                        held_before = True
                        st[3] += delay
                        hold_total += delay
                        hold_events(ei, delay, et, ek, ea, eo, en, eadm, ep, given_rate)
                        break  # the decision comes back after the delay
                    if code in (ACT_REDUCE, ACT_ESCALATE):
                        change_level(a, code, step, st, levels)
                        factor = st[4] / base_dose
                    elif code == ACT_DISCONTINUE:
                        disc = np.bool_(True)
                        t_disc = t
                    st[3] = 0.0
                    held_before = False
                    wmin[:] = np.nan
                    wmax[:] = np.nan
                elif kind in (EV_ORAL, EV_BOLUS) or (kind == EV_RATE and ea[ei] > 0):
                    col = eo[ei]
                    sl = ev_slot[a, col]
                    mult, reason = dose_reason(
                        i, sl, kind, factor, disc, eadm[ei], en[ei], adh, jit
                    )
                    amt = ea[ei] * mult
                    if kind == EV_RATE:
                        given_rate[ep[ei]] = amt
                    if RECORDS and kind == EV_RATE and DOSE_IV < 0 and ev_cmt[a, col] != 1:
                        rpk[ev_cmt[a, col]] += amt  # into the depot or a peripheral
                    else:
                        rin, rtot = dose(kind, amt, z, m, vinv, rin, rtot)
                    if n_slot > 0 and sl >= 0:
                        ledger_give(ledger, i, sl, eadm[ei], mult, reason)
                elif kind == EV_RATE:  # an infusion ends: remove the rate it started with
                    r = given_rate[ep[ei]]
                    if DOSE_IV >= 0:
                        rin -= r
                    elif RECORDS and ev_cmt[a, eo[ei]] != 1:
                        rpk[ev_cmt[a, eo[ei]]] -= r
                    else:
                        rtot -= r
                elif kind == EV_OCC:
                    new = int(ea[ei])
                    if new != occ:
                        change_occasion(m, xa, vec_all[i, occ], vinv_all[i, new])
                        occ = new
                        p = pmat[i, occ]
                        lam = lam_all[i, occ]
                        cm = cm_all[i, occ]
                        vinv = vinv_all[i, occ]
                elif RECORDS and kind == EV_INTO:  # a bolus into any compartment
                    j = ev_cmt[a, eo[ei]]
                    if j < nm:
                        for q in range(nm):
                            m[q] += ea[ei] * vinv[q, j]
                    else:
                        z[j - nm] += ea[ei]
                elif RECORDS and kind == EV_OBS:
                    observe(t, z, p, m, wv, lam, cm, obs[i, int(ea[ei])])
                elif RECORDS and kind in (EV_RESET, EV_SS):
                    if kind == EV_RESET or ss_ev[a, int(ea[ei]), 4] == 1.0:
                        # NONMEM's EVID 3, and SS=1 before its steady state: initial
                        # states, no infusion
                        _to_internal(y0[i], z)
                        for q in range(nm):
                            m[q] = 0.0
                        for q in range(ne):
                            given_rate[q] = 0.0
                        rin = 0.0
                        rtot = 0.0
                        for q in range(nm):
                            rpk[q] = 0.0
                    if kind == EV_SS:  # add the pattern's steady state (PK macro only)
                        sp = ss_ev[a, int(ea[ei])]
                        kind_ss, amt, dur, lag, j = steady_state_pattern(sp, p, tlag_idx, f_idx)
                        steady_state_modes(xa, lam, vinv, sp[0], kind_ss, amt, dur, lag, j)
                        for q in range(nm):
                            m[q] += xa[q]
                        if sp[0] == 0.0:  # a constant infusion runs on (until a reset)
                            if j == 1:
                                rtot += amt
                            elif j < nm:
                                rpk[j] += amt
                        # -- ODE states (and the PK macro's modes above): the pattern integrated
                        # to its steady state (vtrial.engine.model_steps ode_steady_state),
                        # its doses landing lag mod II into each interval (those still
                        # pending at the record are events after it, as for the PK macro)
                        if ODE_STEADY_STATE and stat == OK:
                            _to_internal(y0[i], zg)
                            stat, steps = ode_steady_state(
                                z,
                                zg,
                                sp[4] == 2.0,
                                p,
                                xa,
                                lam,
                                vinv,
                                cm,
                                sp[0],
                                kind_ss,
                                amt,
                                dur,
                                landing_offset(lag, sp[0]),
                                rtol,
                                atol,
                                h_max,
                                method,
                                steps,
                                max_steps,
                            )
                            if sp[0] == 0.0 and DOSE_IV >= 0:
                                rin += amt
                        # -- end ODE states
                else:
                    ctrough = trough(t, z, p, m, wv, lam, cm, otmp)
                ei += 1
            # ---- the segment [t, tb] up to the next event
            if RECORDS:
                modal_input_rates(rtot, rpk, vinv, lam, u, wv)
            else:
                modal_input(rtot, vinv, lam, u, wv)
            tb = t_end
            if ei < ne and et[ei] < t_end:
                tb = et[ei]
            tseg = t
            cp0 = cp_at(0.0, m, wv, lam, cm)
            # grid points at t not yet taken (GRID_AFTER): after the events at t
            g_next = g
            while GRID_AFTER and g_next < ng and t_grid[g_next] <= t:
                g_next += 1
            pk_peak_at_event(
                t,
                tb,
                g_next,
                cp0,
                occ,
                m,
                wv,
                t_grid,
                cand,
                best_m,
                best_u,
                best_seg,
                best_pm,
                best_pu,
                best_pseg,
                prev_m,
                prev_u,
                prev_seg,
            )
            if CP_OUT >= 0:
                ode_best, ode_tbest, want_right = ode_peak_at_event(
                    t, z, p, otmp, ode_best, ode_tbest, want_right, lseg, rseg
                )
            while GRID_AFTER and g < g_next:  # cp0 there, already a candidate above
                zs = z if ns > 0 else zg
                record(
                    g,
                    t,
                    zs,
                    p,
                    cp0,
                    i,
                    o,
                    oprev,
                    t_grid,
                    store_pos,
                    store_out,
                    probe_pos,
                    mon_out,
                    mon_thr,
                    mon_dir,
                    omin,
                    omax,
                    targmin,
                    targmax,
                    probes,
                    cross,
                    store,
                    cand,
                    wmin,
                    wmax,
                )
                g += 1
            if ns > 0:
                _f(t, z, p, cp0, rin, k[0])
                # every segment starts after a dose or infusion change, where the right-hand
                # side changes abruptly: restart the step size (Hairer, Norsett & Wanner,
                # Solving ODE I, sec. II.4) instead of carrying a step suited to the smooth
                # end of the previous interval
                h0 = initial_step(t, z, k, p, m, wv, lam, cm, tseg, rin, rtol, atol, ztmp, method)
                h = min(h0, h_max) if first else min(h, h0)
                first = False
            while t < tb and stat == OK:
                last = False
                hs = min(h, h_max)
                if t + hs >= tb or ns == 0:
                    hs = tb - t
                    last = True
                if ns > 0:
                    accepted, stat, h, hnew, steps, nstiff, nonstiff = integration_step(
                        t,
                        hs,
                        h,
                        z,
                        k,
                        p,
                        m,
                        wv,
                        lam,
                        cm,
                        tseg,
                        rin,
                        ztmp,
                        znew,
                        jac,
                        wmat,
                        rvec,
                        errv,
                        rtol,
                        atol,
                        method,
                        steps,
                        max_steps,
                        nstiff,
                        nonstiff,
                    )
                    if not accepted:
                        continue
                else:
                    hnew = h
                t1 = tb if last else t + hs
                if CP_OUT >= 0:
                    ode_best, ode_tbest, want_right = track_ode_peak(
                        t,
                        hs,
                        t1,
                        occ,
                        z,
                        znew,
                        k,
                        p,
                        otmp,
                        ode_best,
                        ode_tbest,
                        want_right,
                        lz,
                        lk,
                        lseg,
                        rz,
                        rk,
                        rseg,
                    )
                # outputs at grid points inside (t, t1]
                # a grid point at the next event's time waits for it with GRID_AFTER
                held = GRID_AFTER and last and t1 < t_end
                while g < ng and (t_grid[g] < t1 or (t_grid[g] == t1 and not held)):
                    tg = t_grid[g]
                    if ns > 0:
                        state_at(tg, t, t1, hs, z, znew, k, method, zg)
                    cpg = cp_at(tg - tseg, m, wv, lam, cm)
                    before = cand[0]
                    record(
                        g,
                        tg,
                        zg,
                        p,
                        cpg,
                        i,
                        o,
                        oprev,
                        t_grid,
                        store_pos,
                        store_out,
                        probe_pos,
                        mon_out,
                        mon_thr,
                        mon_dir,
                        omin,
                        omax,
                        targmin,
                        targmax,
                        probes,
                        cross,
                        store,
                        cand,
                        wmin,
                        wmax,
                    )
                    if cand[0] > before:
                        pk_peak_on_grid(
                            g, tg, tseg, tb, occ, m, wv, t_grid, best_m, best_u, best_seg, best_pseg
                        )
                    g += 1
                if ns > 0:
                    for q in range(ns):
                        z[q] = znew[q]
                        k[0, q] = k[6, q]
                t = t1
                h = hnew
            for q in range(nm):
                prev_m[q] = m[q]
                prev_u[q] = wv[q]
            prev_seg[1] = occ
            prev_seg[0] = tseg
            auc += advance_modes(tb - tseg, m, u, lam, cm)
        # events at the very end of the horizon: only trough markers and observations
        # matter (a dose there acts on nothing recorded)
        while ei < ne and et[ei] <= t_end and stat == OK:
            if ek[ei] == EV_MARK:
                ctrough = trough(t_end, z, p, m, wv, lam, cm, otmp)
            elif RECORDS and ek[ei] == EV_OBS:
                observe(t_end, z, p, m, wv, lam, cm, obs[i, int(ea[ei])])
            ei += 1
        if stat != OK:
            fail(
                i,
                stat,
                steps,
                omin,
                omax,
                targmin,
                targmax,
                cross,
                probes,
                store,
                obs,
                pk_metrics,
                status,
                nsteps,
            )
            continue
        cmax, tmax = pk_cmax(
            i, cand, best_m, best_u, best_seg, best_pm, best_pu, best_pseg, lam_all, cm_all
        )
        if CP_OUT >= 0:
            cmax, tmax = ode_cmax(
                i, ode_best, ode_tbest, lz, lk, lseg, rz, rk, rseg, pmat, method, zg, otmp
            )
            auc = z[AUC_STATE]
        exposed = nm > 0 or CP_OUT >= 0
        pk_metrics[i, 0] = cmax if exposed else np.nan
        pk_metrics[i, 1] = tmax if exposed else np.nan
        pk_metrics[i, 2] = auc if exposed else np.nan
        pk_metrics[i, 3] = ctrough
        if dsum.shape[1] > 0:
            dose_summary(i, ledger, st, t_disc, hold_total, dsum)
        status[i] = OK
        nsteps[i] = steps
