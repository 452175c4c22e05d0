"""Model-independent numerics of the simulation kernel, compiled once and cached.

Everything here is the same for every model: exact linear PK in modal coordinates
(:func:`cp_at`, :func:`advance_modes`, :func:`modal_input`, :func:`change_occasion`,
:func:`steady_state`), the PK exposure candidates and the exact Cmax
(:func:`pk_peak_at_event`, :func:`pk_peak_on_grid`, :func:`pk_cmax`,
:func:`refine_cmax`), the small dense LU solve of the Rosenbrock stepper
(:func:`lu_solve`), the Dormand-Prince and Rosenbrock constants, and a failed
patient's outputs (:func:`fail`).

The generated kernels (:mod:`vtrial.engine._kernel_template`) import these functions;
numba compiles them once for all models and caches them next to this file, and links
their code into each kernel (where LLVM inlines them as before). numba does not track
such callees in a kernel's own cache, so :func:`vtrial.engine.codegen.kernel_key`
hashes this file's source: a change here makes new kernels.

The ``CODES`` block is written by :func:`vtrial.engine.codegen.fill_codes` from
:data:`vtrial.engine.interface.CODE_TABLES` (the other fixed modules import the codes
from here).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

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

# Dormand-Prince 5(4) tableau and the continuous extension (Hairer, Norsett & Wanner,
# Solving ODE I, sec. II.5/II.6; Shampine 1986), the same constants as scipy's RK45.
C2, C3, C4, C5 = 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0
A21 = 1.0 / 5.0
A31, A32 = 3.0 / 40.0, 9.0 / 40.0
A41, A42, A43 = 44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0
A51, A52, A53, A54 = 19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0
A61, A62, A63, A64, A65 = (
    9017.0 / 3168.0,
    -355.0 / 33.0,
    46732.0 / 5247.0,
    49.0 / 176.0,
    -5103.0 / 18656.0,
)
B1, B3, B4, B5, B6 = 35.0 / 384.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0
E1, E3, E4, E5, E6, E7 = (
    71.0 / 57600.0,
    -71.0 / 16695.0,
    71.0 / 1920.0,
    -17253.0 / 339200.0,
    22.0 / 525.0,
    -1.0 / 40.0,
)
P = np.array(
    [
        [
            1.0,
            -8048581381.0 / 2820520608.0,
            8663915743.0 / 2820520608.0,
            -12715105075.0 / 11282082432.0,
        ],
        [0.0, 0.0, 0.0, 0.0],
        [
            0.0,
            131558114200.0 / 32700410799.0,
            -68118460800.0 / 10900136933.0,
            87487479700.0 / 32700410799.0,
        ],
        [
            0.0,
            -1754552775.0 / 470086768.0,
            14199869525.0 / 1410260304.0,
            -10690763975.0 / 1880347072.0,
        ],
        [
            0.0,
            127303824393.0 / 49829197408.0,
            -318862633887.0 / 49829197408.0,
            701980252875.0 / 199316789632.0,
        ],
        [0.0, -282668133.0 / 205662961.0, 2019193451.0 / 616988883.0, -1453857185.0 / 822651844.0],
        [0.0, 40617522.0 / 29380423.0, -110615467.0 / 29380423.0, 69997945.0 / 29380423.0],
    ]
)
GOLDEN = 0.3819660112501051
# Rosenbrock 2(3) of Shampine & Reichelt (SIAM J Sci Comput 1997, "The MATLAB ODE
# suite", the method of ode23s): L-stable, W = I - h d J, 2nd-order dense output.
D_ROS = 1.0 / (2.0 + math.sqrt(2.0))
E32_ROS = 6.0 + math.sqrt(2.0)


@njit(cache=True, nogil=True, error_model="numpy")
def cp_at(dt, m, w, lam, cm):  # pragma: no cover - compiled
    """Central concentration ``dt`` after the segment start.

    ``m``: modal state at the segment start; ``w = u / lam`` with ``u`` the modal
    infusion input (precomputed once per segment, so no division here).
    """
    s = 0.0
    for k in range(m.shape[0]):
        s += cm[k] * ((m[k] + w[k]) * math.exp(lam[k] * dt) - w[k])
    return s


@njit(cache=True, nogil=True, error_model="numpy")
def advance_modes(dt, m, u, lam, cm):  # pragma: no cover - compiled
    """Advance the modal state by ``dt`` in place; return the exact AUC of CP over it."""
    auc = 0.0
    for k in range(m.shape[0]):
        w = u[k] / lam[k]
        em1 = math.expm1(lam[k] * dt)
        auc += cm[k] * ((m[k] + w) * em1 / lam[k] - w * dt)
        m[k] = (m[k] + w) * (em1 + 1.0) - w
    return auc


@njit(cache=True, nogil=True, error_model="numpy")
def modal_input(rtot, vinv, lam, u, wv):  # pragma: no cover - compiled
    """Modal infusion input ``u`` of the rate ``rtot`` into the central compartment and
    ``wv = u / lam``."""
    for q in range(u.shape[0]):
        u[q] = rtot * vinv[q, 1]
        wv[q] = u[q] / lam[q]


@njit(cache=True, nogil=True, error_model="numpy")
def change_occasion(m, xa, vec_old, vinv_new):  # pragma: no cover - compiled
    """Modal state at an occasion change: amounts are continuous, ``x = V_old m``,
    ``m = V_new^-1 x`` (``xa``: scratch)."""
    nm = m.shape[0]
    for r in range(nm):
        acc = 0.0
        for q in range(nm):
            acc += vec_old[r, q] * m[q]
        xa[r] = acc
    for q in range(nm):
        acc = 0.0
        for r in range(nm):
            acc += vinv_new[q, r] * xa[r]
        m[q] = acc


@njit(cache=True, nogil=True, error_model="numpy")
def modal_input_rates(rtot, rpk, vinv, lam, u, wv):  # pragma: no cover - compiled
    """Modal infusion input ``u`` of the rate ``rtot`` into the central compartment and
    the rates ``rpk[j]`` into the other PK compartments ``j`` (a dataset's infusions
    into the depot or a peripheral compartment), and ``wv = u / lam``; the same as
    :func:`modal_input` while every ``rpk`` is 0."""
    for q in range(u.shape[0]):
        uq = rtot * vinv[q, 1]
        for j in range(rpk.shape[0]):
            if rpk[j] != 0.0:
                uq += rpk[j] * vinv[q, j]
        u[q] = uq
        wv[q] = uq / lam[q]


@njit(cache=True, nogil=True, error_model="numpy")
def steady_state(m, lam, vinv, tau, kind, amt, dur, tlag):  # pragma: no cover - compiled
    """Modal state just before a dose at steady state of a dose repeated every ``tau``
    (a regimen's steady-state start: :func:`steady_state_modes` into ``m``; an oral
    dose into the depot, with the lag ``tlag``, anything else into the central
    compartment).

    Returns False if the lag is not shorter than the interval (the series would then
    need doses after time 0).
    """
    if kind == EV_ORAL and not tlag < tau:
        return False
    if kind == EV_ORAL:
        steady_state_modes(m, lam, vinv, tau, kind, amt, dur, tlag, 0)
    else:
        steady_state_modes(m, lam, vinv, tau, kind, amt, dur, 0.0, 1)
    return True


@njit(cache=True, nogil=True, error_model="numpy")
def steady_state_counts(tau, lag, dur):  # pragma: no cover - compiled
    """``(k0, k1)`` of a dose pattern every ``tau`` (> 0) whose doses land ``lag`` after
    their time (an infusion lasting ``dur``; 0 for a bolus), seen at the time ``t`` of
    the pattern's own dose: the doses at ``t - k tau`` have landed for ``k >= k0``
    (``k tau >= lag``; those with ``1 <= k < k0`` land after ``t``), and the infusions
    have ended for ``k >= k1`` (``k tau >= lag + dur``; those with ``k0 <= k < k1`` are
    still running at ``t``). Both are at least 1."""
    k0 = max(1, math.ceil(lag / tau))
    while k0 > 1 and (k0 - 1) * tau >= lag:
        k0 -= 1
    while k0 * tau < lag:
        k0 += 1
    end = lag + dur
    k1 = max(k0, math.ceil(end / tau))
    while k1 > k0 and (k1 - 1) * tau >= end:
        k1 -= 1
    while k1 * tau < end:
        k1 += 1
    return k0, k1


@njit(cache=True, nogil=True, error_model="numpy")
def landing_offset(lag, tau):  # pragma: no cover - compiled
    """Where in each interval of a steady-state dose pattern its doses land, for the
    integration of ODE states over one interval ``[t - tau, t]`` ending at the record's
    dose time ``t``: ``lag - (k0 - 1) tau`` in ``(0, tau]`` (the last dose that has
    landed by ``t`` is the ``k0``-th before it, :func:`steady_state_counts`; those
    still pending are events after ``t``), ``lag`` itself if it is 0 or ``tau`` is 0."""
    if not tau > 0.0 or lag == 0.0:
        return lag
    k0, _ = steady_state_counts(tau, lag, 0.0)
    return lag - (k0 - 1) * tau


@njit(cache=True, nogil=True, error_model="numpy")
def steady_state_modes(mss, lam, vinv, tau, kind, amt, dur, lag, j):  # pragma: no cover
    """Modal state just before a dose at steady state, from every earlier dose of the
    pattern that has landed (a dataset's SS record, NONMEM's PREDPP semantics).

    The doses go into the PK compartment ``j`` (column ``j`` of ``V^-1``: 0 the depot,
    1 the central compartment, 2.. the peripherals) and land ``lag`` after their time.
    ``tau`` 0: a constant infusion at rate ``amt`` (``mss = -amt V^-1[:, j] / lam``).
    Otherwise the response to one dose every ``tau`` over the infinite past, summed as a
    geometric series over the doses that have landed (``k >= k0`` of
    :func:`steady_state_counts`; the caller gives the pending ones as events after the
    record): a bolus, or a zero-order infusion at rate ``amt`` over ``dur``, which may
    be longer than ``tau``: the infusions still running (``k0 <= k < k1``) contribute
    their partial input (the caller restarts their rates), the ended ones their whole
    dose, decayed.
    """
    if tau == 0.0:
        for q in range(mss.shape[0]):
            mss[q] = -amt * vinv[q, j] / lam[q]
        return
    k0, k1 = steady_state_counts(tau, lag, dur if kind == EV_RATE else 0.0)
    for q in range(mss.shape[0]):
        lq = lam[q]
        v = vinv[q, j]
        if kind == EV_RATE:
            # the infusion started k1 intervals ago ended (k1 tau - lag - dur) ago; rate
            # amt over dur: amt v e^{l (k1 tau - lag - dur)} (e^{l dur} - 1) / l
            one = amt * v * math.exp(lq * (k1 * tau - lag - dur)) * math.expm1(lq * dur) / lq
        else:
            one = amt * v * math.exp(lq * (k0 * tau - lag))
        s = one / -math.expm1(lq * tau)
        for k in range(k0, k1):  # still running: input over the k tau - lag since it began
            x = lq * k * tau if lag == 0.0 else lq * (k * tau - lag)
            s += amt * v * math.expm1(x) / lq
        mss[q] = s


@njit(cache=True, nogil=True, error_model="numpy")
def lu_solve(a, b):  # pragma: no cover - compiled
    """Solve a x = b for one small system by Gaussian elimination with partial pivoting.

    ``a`` and ``b`` are overwritten (``b`` becomes x). Returns False if ``a`` is
    singular. Written out because numpy's solvers raise inside compiled loops, where a
    singular matrix must instead become a per-patient solver failure.
    """
    n = b.shape[0]
    for c in range(n):
        piv = c
        best = abs(a[c, c])
        for r in range(c + 1, n):
            if abs(a[r, c]) > best:
                best = abs(a[r, c])
                piv = r
        if not best > 0.0:
            return False
        if piv != c:
            for j in range(n):
                a[c, j], a[piv, j] = a[piv, j], a[c, j]
            b[c], b[piv] = b[piv], b[c]
        for r in range(c + 1, n):
            f = a[r, c] / a[c, c]
            if f != 0.0:
                for j in range(c, n):
                    a[r, j] -= f * a[c, j]
                b[r] -= f * b[c]
    for c in range(n - 1, -1, -1):
        s = b[c]
        for j in range(c + 1, n):
            s -= a[c, j] * b[j]
        b[c] = s / a[c, c]
    return True


@njit(cache=True, nogil=True, error_model="numpy")
def refine_cmax(lo, hi, m, w, lam, cm, tseg):  # pragma: no cover - compiled
    """Golden-section maximisation of CP on [lo, hi] (absolute times) within a segment."""
    a = lo
    b = hi
    x1 = a + GOLDEN * (b - a)
    x2 = b - GOLDEN * (b - a)
    f1 = cp_at(x1 - tseg, m, w, lam, cm)
    f2 = cp_at(x2 - tseg, m, w, lam, cm)
    for _ in range(80):
        if b - a <= 1e-10 * max(1.0, abs(b)):
            break
        if f1 < f2:
            a = x1
            x1 = x2
            f1 = f2
            x2 = b - GOLDEN * (b - a)
            f2 = cp_at(x2 - tseg, m, w, lam, cm)
        else:
            b = x2
            x2 = x1
            f2 = f1
            x1 = a + GOLDEN * (b - a)
            f1 = cp_at(x1 - tseg, m, w, lam, cm)
    if f1 > f2:
        return x1, f1
    return x2, f2


@njit(cache=True, nogil=True, error_model="numpy")
def pk_peak_at_event(
    t,
    tb,
    g,
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
):  # pragma: no cover - compiled
    """Candidate Cmax of the PK macro at the start of the segment [t, tb].

    A better candidate keeps its segment (modal state ``best_m``, ``best_u``;
    ``best_seg``: start, end, window around the candidate, occasion), searched forward
    to the next grid point, and the segment before it (``best_pm``, ``best_pu``;
    ``best_pseg``: start, window start, occasion), searched backward to the previous
    grid point, from the segment just finished (``prev_m``, ``prev_u``; ``prev_seg``:
    start, occasion).
    """
    ng = t_grid.shape[0]
    if cp0 > cand[0]:
        cand[0] = cp0
        cand[1] = t
        best_m[:] = m
        best_u[:] = wv
        best_seg[3] = occ
        best_seg[0] = t
        best_seg[1] = tb
        # forward window: to the next grid point; backward: the previous segment
        best_seg[2] = (t_grid[g] - t) if g < ng else (tb - t)
        best_pm[:] = prev_m
        best_pu[:] = prev_u
        best_pseg[2] = prev_seg[1]
        best_pseg[0] = prev_seg[0]
        gb = g - 1
        while gb >= 0 and t_grid[gb] >= t:
            gb -= 1
        best_pseg[1] = max(prev_seg[0], t_grid[gb]) if gb >= 0 else prev_seg[0]


@njit(cache=True, nogil=True, error_model="numpy")
def pk_peak_on_grid(
    g, tg, tseg, tb, occ, m, wv, t_grid, best_m, best_u, best_seg, best_pseg
):  # pragma: no cover - compiled
    """A better PK candidate at grid point ``g`` (time ``tg``) of the segment [tseg, tb]:
    keep its segment, to be searched within the grid spacing around it (see
    :func:`pk_peak_at_event`)."""
    ng = t_grid.shape[0]
    best_m[:] = m
    best_u[:] = wv
    best_seg[3] = occ
    best_pseg[:] = np.nan
    best_seg[0] = tseg
    best_seg[1] = tb
    best_seg[2] = max(
        tg - t_grid[g - 1] if g > 0 else 0.0,
        t_grid[g + 1] - tg if g + 1 < ng else 0.0,
    )


@njit(cache=True, nogil=True, error_model="numpy")
def pk_cmax(
    i, cand, best_m, best_u, best_seg, best_pm, best_pu, best_pseg, lam_all, cm_all
):  # pragma: no cover - compiled
    """Exact Cmax of the PK macro: the best candidate refined inside its segment and,
    for a candidate at an event time, at the end of the segment before it (see
    :func:`pk_peak_at_event`)."""
    cmax = cand[0]
    tmax = cand[1]
    if lam_all.shape[2] > 0 and math.isfinite(best_seg[0]):
        occ = int(best_seg[3])
        w = best_seg[2]
        lo = max(best_seg[0], tmax - w)
        hi = min(best_seg[1], tmax + w)
        if hi > lo:
            tr, cr = refine_cmax(
                lo, hi, best_m, best_u, lam_all[i, occ], cm_all[i, occ], best_seg[0]
            )
            if cr > cmax:
                cmax = cr
                tmax = tr
        # a candidate at an event time: also search the end of the segment before it
        t_ev = cand[1]
        if math.isfinite(best_pseg[0]) and t_ev > best_pseg[1]:
            pocc = int(best_pseg[2])
            tr, cr = refine_cmax(
                best_pseg[1],
                t_ev,
                best_pm,
                best_pu,
                lam_all[i, pocc],
                cm_all[i, pocc],
                best_pseg[0],
            )
            if cr > cmax:
                cmax = cr
                tmax = tr
    return cmax, tmax


@njit(cache=True, nogil=True, error_model="numpy")
def clear_traces(i, cross, probes, store, obs):  # pragma: no cover - compiled
    """Set patient i's crossing times, probes, stored time course and observations to
    NaN (an observation after the end of the simulation stays NaN)."""
    cross[i, :] = np.nan
    probes[i, :, :] = np.nan
    store[i, :, :] = np.nan
    obs[i, :, :] = np.nan


@njit(cache=True, nogil=True, error_model="numpy")
def fail(
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
):  # pragma: no cover - compiled
    """A failed patient keeps its row but no partial result that could pass for one."""
    status[i] = stat
    nsteps[i] = steps
    for j in range(omin.shape[1]):
        omin[i, j] = np.nan
        omax[i, j] = np.nan
        targmin[i, j] = np.nan
        targmax[i, j] = np.nan
    for j in range(4):
        pk_metrics[i, j] = np.nan
    clear_traces(i, cross, probes, store, obs)
