"""Template of the compiled simulation kernel (numba).

:mod:`vtrial.engine.codegen` copies this file into the kernel cache and replaces the
blocks between ``--- NAME BEGIN ---``/``--- NAME END ---`` marker comments:

- ``MODEL``: functions generated from a model spec. As shipped, the block holds a
  pure-PK model (no ODE states, output ``CP``), so this module is itself a working
  kernel, used by the tests.
- ``RULES``: ``_decide``, generated from a study's dose-modification rules
  (:func:`vtrial.protocol.rules.rules_source`); as shipped, no rule ever matches.
- ``CODES``, ``BATCH ARGS``, ``PATIENT ARGS`` and ``PATIENT CALL``: the integer codes
  shared with the host and the parameter lists of :func:`simulate_batch` and
  :func:`_simulate_one` (and the call between them), written from their single
  declaration in :mod:`vtrial.engine.interface`. They are never edited here: the
  shipped text equals what code generation writes (``tests/engine/test_interface.py``).

Numerical method (per patient, independent of every other patient):

- Linear PK is solved exactly in modal coordinates: the compartment matrix ``A`` is
  diagonalised on the host (``A = V diag(lam) V^-1``); between events each mode
  evolves as ``m(t) = (m0 + u/lam) exp(lam dt) - u/lam`` (``u``: infusion input),
  doses add ``amount * V^-1[:, cmt]``, and ``CP = sum(cmode * m)``. AUC is the
  exact integral of that sum; Cmax is refined by golden-section search.
- ODE states are integrated with the Dormand-Prince 5(4) pair (FSAL) with
  per-patient adaptive steps, the 4th-order continuous extension for output times,
  and exact stops at every event (dose, infusion start/stop). States declared
  ``positive`` are integrated on the log scale.
- Output times that coincide with a dose are taken before the dose (mrgsolve's
  default; NONMEM with the observation record first).

Structure: :func:`simulate_batch` runs :func:`_simulate_one` per patient, one after
the other (it releases the GIL: :func:`vtrial.engine.host.run_kernel` runs slices of
patients on several threads; a ``prange`` loop here would add about 10 s of compile
time per model), which walks the patient's time line segment by segment between events
through named steps:

- :func:`_patient_events` (the patient's events, sorted; plans the ledger);
- :func:`_steady_start` (the PK macro at steady state of the first phase);
- at each event time: :func:`_evaluate_rules`, :func:`_hold_events` and
  :func:`_change_level` (dose modification at a decision), :func:`_dose_reason` and
  :func:`_dose` (an administration), :func:`_change_occasion` and :func:`_trough`;
- over each segment: :func:`_integration_step` (one adaptive step with error and
  stiffness control), then for the grid points inside the step :func:`_state_at`
  (dense output) and :func:`_record` (outputs and every per-patient reduction);
  :func:`_pk_peak_at_event`, :func:`_pk_peak_on_grid`, :func:`_ode_peak_at_event` and
  :func:`_track_ode_peak` keep the exposure candidates;
- at the end: :func:`_pk_cmax` and :func:`_ode_cmax` (exact Cmax), :func:`_fail`,
  and the ledger (:func:`_ledger_plan`, :func:`_ledger_give`, :func:`_dose_summary`).

The steps take plain arrays and scalars and return the scalars they change. Calling a
compiled function updates the reference counts of its array arguments, so the steps
run at every grid point or ODE step (:func:`_record`, :func:`_state_at`,
:func:`_integration_step`, :func:`_track_ode_peak`) are inlined by numba
(``inline="always"``): the kernel is faster than the single long function it
replaces, for a few seconds more compilation per model. (A named tuple of arrays
would cost such an update at each access to a field, so there are none.)
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


@njit(cache=True, nogil=True, error_model="numpy")
def _f(t, z, p, cp, rin, dz):  # pragma: no cover - compiled
    """Right-hand side plus the infusion rate ``rin`` into the IV dosing state."""
    _rhs(t, z, p, cp, dz)
    if DOSE_IV >= 0:
        dz[DOSE_IV] += rin


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
def _cp_at(dt, m, w, lam, cm):  # pragma: no cover - compiled
    """Central concentration ``dt`` after the segment start.

    ``m``: modal state at the segment start; ``w = u / lam`` with ``u`` the modal
    infusion input (precomputed once per segment, so no division here).
    """
    s = 0.0
    for k in range(m.shape[0]):
        s += cm[k] * ((m[k] + w[k]) * math.exp(lam[k] * dt) - w[k])
    return s


@njit(cache=True, nogil=True, error_model="numpy")
def _advance_modes(dt, m, u, lam, cm):  # pragma: no cover - compiled
    """Advance the modal state by ``dt`` in place; return the exact AUC of CP over it."""
    auc = 0.0
    for k in range(m.shape[0]):
        w = u[k] / lam[k]
        em1 = math.expm1(lam[k] * dt)
        auc += cm[k] * ((m[k] + w) * em1 / lam[k] - w * dt)
        m[k] = (m[k] + w) * (em1 + 1.0) - w
    return auc


@njit(cache=True, nogil=True, error_model="numpy")
def _rk_step(t, h, z, k, p, m, w, lam, cm, tseg, rin, ztmp, znew):  # pragma: no cover - compiled
    """One Dormand-Prince step from (t, z) with k[0] = f(t, z); fills k[1..6] and znew."""
    ns = z.shape[0]
    for i in range(ns):
        ztmp[i] = z[i] + h * A21 * k[0, i]
    _f(t + C2 * h, ztmp, p, _cp_at(t + C2 * h - tseg, m, w, lam, cm), rin, k[1])
    for i in range(ns):
        ztmp[i] = z[i] + h * (A31 * k[0, i] + A32 * k[1, i])
    _f(t + C3 * h, ztmp, p, _cp_at(t + C3 * h - tseg, m, w, lam, cm), rin, k[2])
    for i in range(ns):
        ztmp[i] = z[i] + h * (A41 * k[0, i] + A42 * k[1, i] + A43 * k[2, i])
    _f(t + C4 * h, ztmp, p, _cp_at(t + C4 * h - tseg, m, w, lam, cm), rin, k[3])
    for i in range(ns):
        ztmp[i] = z[i] + h * (A51 * k[0, i] + A52 * k[1, i] + A53 * k[2, i] + A54 * k[3, i])
    _f(t + C5 * h, ztmp, p, _cp_at(t + C5 * h - tseg, m, w, lam, cm), rin, k[4])
    for i in range(ns):
        ztmp[i] = z[i] + h * (
            A61 * k[0, i] + A62 * k[1, i] + A63 * k[2, i] + A64 * k[3, i] + A65 * k[4, i]
        )
    _f(t + h, ztmp, p, _cp_at(t + h - tseg, m, w, lam, cm), rin, k[5])
    for i in range(ns):
        znew[i] = z[i] + h * (
            B1 * k[0, i] + B3 * k[2, i] + B4 * k[3, i] + B5 * k[4, i] + B6 * k[5, i]
        )
    _f(t + h, znew, p, _cp_at(t + h - tseg, m, w, lam, cm), rin, k[6])


@njit(cache=True, nogil=True, error_model="numpy")
def _initial_step(
    t, z, k, p, m, w, lam, cm, tseg, rin, rtol, atol, ztmp, method
):  # pragma: no cover
    """Starting step size from the first and an estimated second derivative.

    ``k[0]`` must hold f(t, z); ``k[1]`` is used as scratch. Hairer, Norsett & Wanner,
    Solving ODE I, sec. II.4, algorithm of the DOPRI5 code.
    """
    ns = z.shape[0]
    d0 = 0.0
    d1 = 0.0
    for q in range(ns):
        sc = atol + rtol if LOGSCALE[q] else atol + rtol * abs(z[q])
        d0 += (z[q] / sc) ** 2
        d1 += (k[0, q] / sc) ** 2
    d0 = math.sqrt(d0 / ns)
    d1 = math.sqrt(d1 / ns)
    h0 = 0.01 * d0 / d1 if (d0 > 1e-5 and d1 > 1e-5) else 1e-6
    for q in range(ns):
        ztmp[q] = z[q] + h0 * k[0, q]
    _f(t + h0, ztmp, p, _cp_at(t + h0 - tseg, m, w, lam, cm), rin, k[1])
    d2 = 0.0
    for q in range(ns):
        sc = atol + rtol if LOGSCALE[q] else atol + rtol * abs(z[q])
        d2 += ((k[1, q] - k[0, q]) / sc) ** 2
    d2 = math.sqrt(d2 / ns) / h0
    order = 5.0 if method == DOPRI5 else 3.0
    big = max(d1, d2)
    if big <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / big) ** (1.0 / order)
    return min(100.0 * h0, h1)


@njit(cache=True, nogil=True, error_model="numpy")
def _lu_solve_inplace(a, b):  # pragma: no cover - compiled
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
def _ros_step(
    t, h, z, k, p, m, w, lam, cm, tseg, rin, ztmp, znew, jac, wm, rhs, errv
):  # pragma: no cover
    """One Rosenbrock 2(3) step (ode23s) with a finite-difference Jacobian.

    Fills k[0] = f(t, z), k[1] = k1, k[2] = k2 (used by the dense output), znew and
    the local error estimate errv. Returns False if W is singular.
    """
    ns = z.shape[0]
    cp_t = _cp_at(t - tseg, m, w, lam, cm)
    _f(t, z, p, cp_t, rin, k[0])
    dt = 1.5e-8 * max(abs(t), 1.0)
    _f(t + dt, z, p, _cp_at(t + dt - tseg, m, w, lam, cm), rin, k[6])
    for q in range(ns):
        k[6, q] = (k[6, q] - k[0, q]) / dt  # df/dt
    for j in range(ns):
        for q in range(ns):
            ztmp[q] = z[q]
        dz = 1.5e-8 * max(abs(z[j]), 1.0)
        ztmp[j] += dz
        _f(t, ztmp, p, cp_t, rin, k[4])
        for q in range(ns):
            jac[q, j] = (k[4, q] - k[0, q]) / dz
    hd = h * D_ROS
    # k1 = W^-1 (F0 + h d T)
    for q in range(ns):
        for j in range(ns):
            wm[q, j] = (1.0 if q == j else 0.0) - hd * jac[q, j]
        rhs[q] = k[0, q] + hd * k[6, q]
    if not _lu_solve_inplace(wm, rhs):
        return False
    for q in range(ns):
        k[1, q] = rhs[q]
        ztmp[q] = z[q] + 0.5 * h * k[1, q]
    _f(t + 0.5 * h, ztmp, p, _cp_at(t + 0.5 * h - tseg, m, w, lam, cm), rin, k[3])
    # k2 = W^-1 (F1 - k1) + k1
    for q in range(ns):
        for j in range(ns):
            wm[q, j] = (1.0 if q == j else 0.0) - hd * jac[q, j]
        rhs[q] = k[3, q] - k[1, q]
    if not _lu_solve_inplace(wm, rhs):
        return False
    for q in range(ns):
        k[2, q] = rhs[q] + k[1, q]
        znew[q] = z[q] + h * k[2, q]
    _f(t + h, znew, p, _cp_at(t + h - tseg, m, w, lam, cm), rin, k[4])
    # k3 = W^-1 (F2 - e32 (k2 - F1) - 2 (k1 - F0) + h d T)
    for q in range(ns):
        for j in range(ns):
            wm[q, j] = (1.0 if q == j else 0.0) - hd * jac[q, j]
        rhs[q] = k[4, q] - E32_ROS * (k[2, q] - k[3, q]) - 2.0 * (k[1, q] - k[0, q]) + hd * k[6, q]
    if not _lu_solve_inplace(wm, rhs):
        return False
    for q in range(ns):
        k[5, q] = rhs[q]
        errv[q] = h / 6.0 * (k[1, q] - 2.0 * k[2, q] + k[5, q])
    return True


@njit(cache=True, nogil=True, error_model="numpy")
def _dense_ros(theta, h, z, k, zout):  # pragma: no cover - compiled
    """2nd-order continuous extension of the Rosenbrock 2(3) step at t + theta*h."""
    c = 1.0 / (1.0 - 2.0 * D_ROS)
    a1 = theta * (1.0 - theta) * c
    a2 = theta * (theta - 2.0 * D_ROS) * c
    for q in OUT_STATES:
        zout[q] = z[q] + h * (a1 * k[1, q] + a2 * k[2, q])


@njit(cache=True, nogil=True, error_model="numpy")
def _dense(theta, h, z, k, zout):  # pragma: no cover - compiled
    """4th-order continuous extension at t + theta*h, for the states outputs need."""
    t1 = theta
    t2 = theta * theta
    t3 = t2 * theta
    t4 = t3 * theta
    b0 = P[0, 0] * t1 + P[0, 1] * t2 + P[0, 2] * t3 + P[0, 3] * t4
    b2 = P[2, 1] * t2 + P[2, 2] * t3 + P[2, 3] * t4
    b3 = P[3, 1] * t2 + P[3, 2] * t3 + P[3, 3] * t4
    b4 = P[4, 1] * t2 + P[4, 2] * t3 + P[4, 3] * t4
    b5 = P[5, 1] * t2 + P[5, 2] * t3 + P[5, 3] * t4
    b6 = P[6, 1] * t2 + P[6, 2] * t3 + P[6, 3] * t4
    for i in OUT_STATES:
        acc = b0 * k[0, i] + b2 * k[2, i] + b3 * k[3, i] + b4 * k[4, i] + b5 * k[5, i]
        zout[i] = z[i] + h * (acc + b6 * k[6, i])


# inlined (numba IR): called at every grid point, where a call would update the
# reference counts of its array arguments each time
@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _record(
    g,
    tg,
    zg,
    p,
    cp,
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
):  # pragma: no cover - compiled
    """Evaluate the outputs at grid point g and update every per-patient reduction."""
    _outputs(tg, zg, p, cp, o)
    no = o.shape[0]
    for j in range(no):
        v = o[j]
        if not v >= wmin[j]:
            wmin[j] = v
        if not v <= wmax[j]:
            wmax[j] = v
        if v < omin[i, j] or math.isnan(omin[i, j]):
            omin[i, j] = v
            targmin[i, j] = tg
        if v > omax[i, j] or math.isnan(omax[i, j]):
            omax[i, j] = v
            targmax[i, j] = tg
    sp = store_pos[g]
    if sp >= 0:
        for j in range(store_out.shape[0]):
            store[i, sp, j] = o[store_out[j]]
    pp = probe_pos[g]
    if pp >= 0:
        for j in range(no):
            probes[i, pp, j] = o[j]
    for q in range(mon_out.shape[0]):
        if math.isnan(cross[i, q]):
            v1 = o[mon_out[q]]
            hit = v1 < mon_thr[q] if mon_dir[q] < 0 else v1 > mon_thr[q]
            if hit:
                if g == 0:
                    cross[i, q] = tg
                else:
                    v0 = oprev[mon_out[q]]
                    t0 = t_grid[g - 1]
                    frac = (mon_thr[q] - v0) / (v1 - v0) if v1 != v0 else 1.0
                    frac = min(max(frac, 0.0), 1.0)
                    cross[i, q] = t0 + frac * (tg - t0)
    if cp > cand[0]:
        cand[0] = cp
        cand[1] = tg
    for j in range(no):
        oprev[j] = o[j]


@njit(cache=True, nogil=True, error_model="numpy")
def _clear_traces(i, cross, probes, store):  # pragma: no cover - compiled
    """Set patient i's crossing times, probes and stored time course to NaN."""
    cross[i, :] = np.nan
    probes[i, :, :] = np.nan
    store[i, :, :] = np.nan


@njit(cache=True, nogil=True, error_model="numpy")
def _refine_cmax(lo, hi, m, w, lam, cm, tseg):  # pragma: no cover - compiled
    """Golden-section maximisation of CP on [lo, hi] (absolute times) within a segment."""
    a = lo
    b = hi
    x1 = a + GOLDEN * (b - a)
    x2 = b - GOLDEN * (b - a)
    f1 = _cp_at(x1 - tseg, m, w, lam, cm)
    f2 = _cp_at(x2 - tseg, m, w, lam, cm)
    for _ in range(80):
        if b - a <= 1e-10 * max(1.0, abs(b)):
            break
        if f1 < f2:
            a = x1
            x1 = x2
            f1 = f2
            x2 = b - GOLDEN * (b - a)
            f2 = _cp_at(x2 - tseg, m, w, lam, cm)
        else:
            b = x2
            x2 = x1
            f2 = f1
            x1 = a + GOLDEN * (b - a)
            f1 = _cp_at(x1 - tseg, m, w, lam, cm)
    if f1 > f2:
        return x1, f1
    return x2, f2


@njit(cache=True, nogil=True, error_model="numpy")
def _cp_dense(theta, h, t0, z, k, p, method, zg, o):  # pragma: no cover - compiled
    """ODE output CP_OUT at t0 + theta*h from the continuous extension of one step."""
    if method == DOPRI5:
        _dense(theta, h, z, k, zg)
    else:
        _dense_ros(theta, h, z, k, zg)
    _outputs(t0 + theta * h, zg, p, 0.0, o)
    return o[CP_OUT]


@njit(cache=True, nogil=True, error_model="numpy")
def _refine_dense(h, t0, z, k, p, method, zg, o):  # pragma: no cover - compiled
    """Golden-section maximisation of the ODE output CP_OUT over one saved step."""
    a = 0.0
    b = 1.0
    x1 = a + GOLDEN * (b - a)
    x2 = b - GOLDEN * (b - a)
    f1 = _cp_dense(x1, h, t0, z, k, p, method, zg, o)
    f2 = _cp_dense(x2, h, t0, z, k, p, method, zg, o)
    for _ in range(80):
        if (b - a) * h <= 1e-10 * max(1.0, abs(t0)):
            break
        if f1 < f2:
            a = x1
            x1 = x2
            f1 = f2
            x2 = b - GOLDEN * (b - a)
            f2 = _cp_dense(x2, h, t0, z, k, p, method, zg, o)
        else:
            b = x2
            x2 = x1
            f2 = f1
            x1 = a + GOLDEN * (b - a)
            f1 = _cp_dense(x1, h, t0, z, k, p, method, zg, o)
    if f1 > f2:
        return t0 + x1 * h, f1
    return t0 + x2 * h, f2


@njit(cache=True, nogil=True, error_model="numpy")
def _steady_state(m, lam, vinv, tau, kind, amt, dur, tlag):  # pragma: no cover - compiled
    """Modal state just before a dose at steady state of a dose repeated every ``tau``.

    The response at ``tau`` to one interval's dose (oral: landing at ``tlag``; bolus;
    zero-order infusion over ``dur``), summed over the infinite past as a geometric
    series: ``m_ss = m_one(tau) / (1 - exp(lam tau))``. Returns False if the lag is not
    shorter than the interval (the series would then need doses after time 0).
    """
    if kind == EV_ORAL and not tlag < tau:
        return False
    for q in range(m.shape[0]):
        lq = lam[q]
        if kind == EV_ORAL:
            one = amt * vinv[q, 0] * math.exp(lq * (tau - tlag))
        elif kind == EV_BOLUS:
            one = amt * vinv[q, 1] * math.exp(lq * tau)
        else:  # rate amt over dur: m(tau) = amt vinv (e^{l tau} - e^{l (tau - dur)}) / l
            one = amt * vinv[q, 1] * math.exp(lq * (tau - dur)) * math.expm1(lq * dur) / lq
        m[q] = one / -math.expm1(lq * tau)
    return True


@njit(cache=True, nogil=True, error_model="numpy")
def _sort_events(start, et, ek, ea, eo, en, eadm):  # pragma: no cover - compiled
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
            j -= 1


@njit(cache=True, nogil=True, error_model="numpy")
def n_levels_a(levels, a):  # pragma: no cover - compiled
    """Number of dose levels of arm ``a`` (rows padded with NaN)."""
    n = 0
    for j in range(levels.shape[1]):
        if not math.isnan(levels[a, j]):
            n += 1
    return n


# ---- the steps of _simulate_one


@njit(cache=True, nogil=True, error_model="numpy")
def _ledger_plan(ledger, i, sl, planned):  # pragma: no cover - compiled
    """Open the ledger row of administration ``sl``: not reached, nothing given yet."""
    ledger[i, sl, 0] = np.nan
    ledger[i, sl, 1] = planned
    ledger[i, sl, 2] = 0.0
    ledger[i, sl, 3] = R_NOT_REACHED


@njit(cache=True, nogil=True, error_model="numpy")
def _ledger_give(ledger, i, sl, t_adm, mult, reason):  # pragma: no cover - compiled
    """Close the ledger row of administration ``sl``: given at ``t_adm``, ``mult`` times
    the planned amount, for ``reason``."""
    ledger[i, sl, 0] = t_adm
    ledger[i, sl, 2] = ledger[i, sl, 1] * mult
    ledger[i, sl, 3] = reason


@njit(cache=True, nogil=True, error_model="numpy")
def _dose_summary(i, ledger, st, t_disc, hold_total, dsum):  # pragma: no cover - compiled
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
def _patient_events(
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
    tlag_idx,
    f_idx,
    ledger,
):  # pragma: no cover - compiled
    """Patient i's events, sorted by the time they act on the model; plans the ledger.

    Lag and bioavailability are those of the dose's occasion (applied to oral doses),
    amounts are scaled by the patient's dose scale; occasion switches precede the
    doses at the same nominal time in the table. Returns ``et`` (time the event acts
    on the model: after lag, jitter and holds), ``ek`` (kind), ``ea`` (amount acting
    on the model: after F and dose scaling), ``eo`` (column in the arm's event table),
    ``en`` (nominal time: a hold delays the events not before it) and ``eadm``
    (administration time: the ledger's time).
    """
    ne = ev_n[a]
    et = np.empty(ne)
    ek = np.empty(ne, dtype=np.int64)
    ea = np.empty(ne)
    eo = np.empty(ne, dtype=np.int64)
    en = np.empty(ne)
    eadm = np.empty(ne)
    n_slot = ledger.shape[1]
    occ_d = 0
    for e in range(ne):
        kind = ev_kind[a, e]
        amt = ev_amt[a, e] * dose_scale[i, ev_unit[a, e]]
        tt = ev_time[a, e]
        en[e] = tt
        sl = ev_slot[a, e]
        if kind == EV_ORAL and jit.shape[1] > 0 and sl >= 0:
            tt += jit[i, sl]
        eadm[e] = tt
        if n_slot > 0 and sl >= 0:
            if kind == EV_RATE:
                _ledger_plan(ledger, i, sl, amt * (ev_time[a, ev_pair[a, e]] - ev_time[a, e]))
            else:
                _ledger_plan(ledger, i, sl, amt)
        if kind == EV_OCC:
            occ_d = int(ev_amt[a, e])
            amt = ev_amt[a, e]
        elif kind == EV_ORAL:
            if tlag_idx >= 0:
                tt += pmat[i, occ_d, tlag_idx]
            if f_idx >= 0:
                amt *= pmat[i, occ_d, f_idx]
        et[e] = tt
        ek[e] = kind
        ea[e] = amt
        eo[e] = e
    _sort_events(0, et, ek, ea, eo, en, eadm)
    return et, ek, ea, eo, en, eadm


@njit(cache=True, nogil=True, error_model="numpy")
def _steady_start(
    i, a, m, p, lam, vinv, ss_spec, ss_unit, dose_scale, tlag_idx, f_idx
):  # pragma: no cover - compiled
    """Start the PK macro at steady state of the arm's first phase, if it asks for it.

    Returns False if that steady state does not exist (see :func:`_steady_state`).
    """
    tau = ss_spec[a, 0]
    if tau > 0.0 and m.shape[0] > 0:
        kind = int(ss_spec[a, 1])
        amt = ss_spec[a, 2] * dose_scale[i, ss_unit[a]]
        tlag = p[tlag_idx] if tlag_idx >= 0 else 0.0
        if kind == EV_ORAL and f_idx >= 0:
            amt *= p[f_idx]
        return _steady_state(m, lam, vinv, tau, kind, amt, ss_spec[a, 3], tlag)
    return True


@njit(cache=True, nogil=True, error_model="numpy")
def _evaluate_rules(
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
):  # pragma: no cover - compiled
    """The dose-modification rules at a decision at ``t``: ``(action, delay, step)``.

    The outputs are taken from the state now (with the assay errors of evaluation
    ``n_eval``); the first matching rule's action and numbers come from ``rule_par``.
    A hold that would exceed the rule's longest hold becomes a discontinuation.
    """
    cp_now = _cp_at(0.0, m, wv, lam, cm)
    _outputs(t, z, p, cp_now, otmp)
    k_eps = min(n_eval, meas_eps.shape[1] - 1)
    if disc:
        act[0] = ACT_NONE
    else:
        _decide(a, t, otmp, wmin, wmax, omin[i], omax[i], meas_eps[i, k_eps], st, act)
    code = ACT_NONE
    delay = 0.0
    step = 1
    if act[0] > 0.0:  # rule number act[4] matched: its action is data
        rule = int(act[4])
        code = int(rule_par[a, rule, 0])
        delay = rule_par[a, rule, 1]
        step = int(rule_par[a, rule, 2])
        if code == ACT_HOLD and st[3] + delay > rule_par[a, rule, 3]:
            code = ACT_DISCONTINUE  # the longest hold allowed would be exceeded
    return code, delay, step


@njit(cache=True, nogil=True, error_model="numpy")
def _hold_events(ei, delay, et, ek, ea, eo, en, eadm, given_rate):  # pragma: no cover - compiled
    """Delay the decision ``ei`` and every later event by ``delay`` (h), then re-sort.

    Events nominally before the decision and the end of an infusion already running
    keep their times.
    """
    tn = en[ei]
    for e in range(ei, et.shape[0]):
        if en[e] < tn:
            continue
        if ek[e] == EV_RATE and ea[e] <= 0.0 and given_rate[eo[e]] != 0.0:
            continue
        et[e] += delay
        eadm[e] += delay
    _sort_events(ei, et, ek, ea, eo, en, eadm)


@njit(cache=True, nogil=True, error_model="numpy")
def _change_level(a, code, step, st, levels):  # pragma: no cover - compiled
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
def _dose_reason(i, sl, kind, factor, disc, t_adm, t_nom, adh, jit):  # pragma: no cover
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


@njit(cache=True, nogil=True, error_model="numpy")
def _dose(kind, amt, z, m, vinv, rin, rtot):  # pragma: no cover - compiled
    """Give ``amt``: a bolus into its dosing state or the PK modes, or an infusion rate.

    Returns the infusion rates ``(rin, rtot)`` into the IV dosing state of an ODE model
    and into the PK macro's central compartment.
    """
    if kind == EV_ORAL:
        if DOSE_ORAL >= 0:
            z[DOSE_ORAL] += amt
        else:
            for q in range(m.shape[0]):
                m[q] += amt * vinv[q, 0]
    elif kind == EV_BOLUS:
        if DOSE_IV >= 0:
            z[DOSE_IV] += amt
        else:
            for q in range(m.shape[0]):
                m[q] += amt * vinv[q, 1]
    elif DOSE_IV >= 0:
        rin += amt
    else:
        rtot += amt
    return rin, rtot


@njit(cache=True, nogil=True, error_model="numpy")
def _change_occasion(m, xa, vec_old, vinv_new):  # pragma: no cover - compiled
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
def _trough(t, z, p, m, wv, lam, cm, otmp):  # pragma: no cover - compiled
    """Concentration at ``t`` before the doses at ``t`` (ODE output CP_OUT or PK CP)."""
    if CP_OUT >= 0:
        _outputs(t, z, p, 0.0, otmp)
        return otmp[CP_OUT]
    return _cp_at(0.0, m, wv, lam, cm)


@njit(cache=True, nogil=True, error_model="numpy")
def _modal_input(rtot, vinv, lam, u, wv):  # pragma: no cover - compiled
    """Modal infusion input ``u`` of the rate ``rtot`` into the central compartment and
    ``wv = u / lam``."""
    for q in range(u.shape[0]):
        u[q] = rtot * vinv[q, 1]
        wv[q] = u[q] / lam[q]


@njit(cache=True, nogil=True, error_model="numpy")
def _pk_peak_at_event(
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
def _ode_peak_at_event(t, z, p, otmp, best, tbest, want_right, lseg, rseg):  # pragma: no cover
    """Candidate Cmax of the ODE output CP_OUT just after the doses at ``t``.

    Returns the updated ``(best, tbest, want_right)``; a new best point has no step
    before it to refine on (``lseg``), and wants the step after it (``rseg``).
    """
    _outputs(t, z, p, 0.0, otmp)  # after the doses at t
    if otmp[CP_OUT] > best:
        best = otmp[CP_OUT]
        tbest = t
        lseg[:] = np.nan
        rseg[:] = np.nan
        want_right = True
    return best, tbest, want_right


# inlined (numba IR): called at every step of an ODE exposure model (see _record)
@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _track_ode_peak(
    t, hs, t1, occ, z, znew, k, p, otmp, best, tbest, want_right, lz, lk, lseg, rz, rk, rseg
):  # pragma: no cover - compiled
    """Candidate Cmax of the ODE output CP_OUT at the end ``t1`` of an accepted step.

    The best step end is bracketed by the step before it (state ``lz``, stages ``lk``;
    ``lseg``: start, size, occasion) and the step after it (``rz``, ``rk``, ``rseg``),
    kept for the refinement on their dense output. Returns the updated
    ``(best, tbest, want_right)``.
    """
    if want_right:
        rz[:] = z
        rk[:, :] = k
        rseg[0] = t
        rseg[1] = hs
        rseg[2] = occ
        want_right = False
    _outputs(t1, znew, p, 0.0, otmp)
    if otmp[CP_OUT] > best:
        best = otmp[CP_OUT]
        tbest = t1
        lz[:] = z
        lk[:, :] = k
        lseg[0] = t
        lseg[1] = hs
        lseg[2] = occ
        rseg[:] = np.nan
        want_right = True
    return best, tbest, want_right


# inlined (numba IR): called at every step (see _record)
@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _integration_step(
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
):  # pragma: no cover - compiled
    """One attempted step of size ``hs`` from (t, z), with error and stiffness control.

    Fills ``znew`` and the stages ``k`` (for the dense output; ``ztmp``, ``jac``,
    ``wmat``, ``rvec``, ``errv``: work arrays). Returns
    ``(accepted, stat, h, hnew, steps, nstiff, nonstiff)``: a rejected step (not
    accepted) comes with the smaller step ``h`` to retry with, or a failure ``stat``;
    an accepted one with the next step ``hnew``. ``steps`` counts accepted and
    error-rejected steps; ``nstiff``/``nonstiff`` are DOPRI5's stiffness counters.
    """
    ns = NS
    finite = True
    if method == DOPRI5:
        _rk_step(t, hs, z, k, p, m, wv, lam, cm, tseg, rin, ztmp, znew)
        for q in range(ns):
            errv[q] = hs * (
                E1 * k[0, q]
                + E3 * k[2, q]
                + E4 * k[3, q]
                + E5 * k[4, q]
                + E6 * k[5, q]
                + E7 * k[6, q]
            )
    else:
        finite = _ros_step(
            t, hs, z, k, p, m, wv, lam, cm, tseg, rin, ztmp, znew, jac, wmat, rvec, errv
        )
    err = 0.0
    for q in range(ns):
        # an error in log(y) is a relative error in y: scale it by rtol alone
        if LOGSCALE[q]:
            sc = atol + rtol
        else:
            sc = atol + rtol * max(abs(z[q]), abs(znew[q]))
        err += (errv[q] / sc) ** 2
        if not math.isfinite(znew[q]):
            finite = False
    err = math.sqrt(err / ns)
    if not finite or not math.isfinite(err):
        h = 0.25 * hs
        stat = NONFINITE if h < 1e-12 * max(1.0, abs(t)) else OK
        return False, stat, h, h, steps, nstiff, nonstiff
    steps += 1
    if steps > max_steps:
        return False, MAX_STEPS, h, h, steps, nstiff, nonstiff
    expo = -0.2 if method == DOPRI5 else -1.0 / 3.0
    if err > 1.0:
        h = hs * max(0.2, 0.9 * err**expo)
        stat = STEP_UNDERFLOW if h < 1e-12 * max(1.0, abs(t)) else OK
        return False, stat, h, h, steps, nstiff, nonstiff
    fac = 10.0 if err == 0.0 else min(10.0, 0.9 * err**expo)
    hnew = hs * fac
    if method == DOPRI5:
        # stiffness detection of Hairer's DOPRI5: h*|lambda| estimated from the
        # last two stages; 15 accepted steps near the stability boundary -> stiff
        stnum = 0.0
        stden = 0.0
        for q in range(ns):
            stnum += (k[6, q] - k[5, q]) ** 2
            stden += (znew[q] - ztmp[q]) ** 2
        if stden > 0.0 and hs * math.sqrt(stnum / stden) > 3.25:
            nonstiff = 0
            nstiff += 1
            if nstiff >= 15:
                return False, STIFF, h, hnew, steps, nstiff, nonstiff
        else:
            nonstiff += 1
            if nonstiff >= 6:
                nstiff = 0
    return True, OK, h, hnew, steps, nstiff, nonstiff


# inlined (numba IR): called at every grid point (see _record)
@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _state_at(tg, t, t1, hs, z, znew, k, method, zg):  # pragma: no cover - compiled
    """ODE states ``zg`` at ``tg`` in the accepted step (t, t1] of size ``hs``: its end
    exactly, inside it from the method's dense output."""
    if tg == t1:
        zg[:] = znew
    elif method == DOPRI5:
        _dense((tg - t) / hs, hs, z, k, zg)
    else:
        _dense_ros((tg - t) / hs, hs, z, k, zg)


@njit(cache=True, nogil=True, error_model="numpy")
def _pk_peak_on_grid(
    g, tg, tseg, tb, occ, m, wv, t_grid, best_m, best_u, best_seg, best_pseg
):  # pragma: no cover - compiled
    """A better PK candidate at grid point ``g`` (time ``tg``) of the segment [tseg, tb]:
    keep its segment, to be searched within the grid spacing around it (see
    :func:`_pk_peak_at_event`)."""
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
def _pk_cmax(
    i, cand, best_m, best_u, best_seg, best_pm, best_pu, best_pseg, lam_all, cm_all
):  # pragma: no cover - compiled
    """Exact Cmax of the PK macro: the best candidate refined inside its segment and,
    for a candidate at an event time, at the end of the segment before it (see
    :func:`_pk_peak_at_event`)."""
    cmax = cand[0]
    tmax = cand[1]
    if lam_all.shape[2] > 0 and math.isfinite(best_seg[0]):
        occ = int(best_seg[3])
        w = best_seg[2]
        lo = max(best_seg[0], tmax - w)
        hi = min(best_seg[1], tmax + w)
        if hi > lo:
            tr, cr = _refine_cmax(
                lo, hi, best_m, best_u, lam_all[i, occ], cm_all[i, occ], best_seg[0]
            )
            if cr > cmax:
                cmax = cr
                tmax = tr
        # a candidate at an event time: also search the end of the segment before it
        t_ev = cand[1]
        if math.isfinite(best_pseg[0]) and t_ev > best_pseg[1]:
            pocc = int(best_pseg[2])
            tr, cr = _refine_cmax(
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
def _ode_cmax(
    i, best, tbest, lz, lk, lseg, rz, rk, rseg, pmat, method, zg, otmp
):  # pragma: no cover - compiled
    """Exact Cmax of the ODE output CP_OUT: the best step end or post-dose point,
    refined on the dense output of the steps around it (see :func:`_track_ode_peak`)."""
    cmax = best
    tmax = tbest
    if math.isfinite(lseg[0]):
        tr, cr = _refine_dense(lseg[1], lseg[0], lz, lk, pmat[i, int(lseg[2])], method, zg, otmp)
        if cr > cmax:
            cmax = cr
            tmax = tr
    if math.isfinite(rseg[0]):
        tr, cr = _refine_dense(rseg[1], rseg[0], rz, rk, pmat[i, int(rseg[2])], method, zg, otmp)
        if cr > cmax:
            cmax = cr
            tmax = tr
    return cmax, tmax


@njit(cache=True, nogil=True, error_model="numpy")
def _fail(
    i, stat, steps, omin, omax, targmin, targmax, cross, probes, store, pk_metrics, status, nsteps
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
    _clear_traces(i, cross, probes, store)


@njit(cache=True, nogil=True, error_model="numpy")
def _simulate_one(
    # --- PATIENT ARGS BEGIN ---
    i,
    method,
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
    status,
    nsteps,
    omin,
    omax,
    targmin,
    targmax,
    probes,
    cross,
    store,
    pk_metrics,
    ledger,
    dsum,
    # --- PATIENT ARGS END ---
):  # pragma: no cover - compiled
    """Simulate patient i with integration method ``method`` (see :func:`simulate_batch`)."""
    ns = NS
    nm = lam_all.shape[2]
    no = omin.shape[1]
    a = arm[i]
    occ = 0
    p = pmat[i, 0]
    lam = lam_all[i, 0]
    cm = cm_all[i, 0]
    vinv = vinv_all[i, 0]
    et, ek, ea, eo, en, eadm = _patient_events(
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
        tlag_idx,
        f_idx,
        ledger,
    )
    ne = et.shape[0]
    given_rate = np.zeros(ne)  # rate started by an infusion, by its stop's column
    n_slot = ledger.shape[1]
    # dose modification and adherence state
    st = np.zeros(5)  # level index, reductions, holds, hours held at this decision, dose
    act = np.zeros(5)
    lvl0 = start_level[a]
    st[0] = lvl0
    base_dose = levels[a, lvl0] if lvl0 >= 0 else 1.0
    st[4] = base_dose
    factor = 1.0
    disc = False
    t_disc = np.nan
    hold_total = 0.0
    n_eval = 0
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
    _clear_traces(i, cross, probes, store)  # a retry starts from clean outputs
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
    if not _steady_start(i, a, m, p, lam, vinv, ss_spec, ss_unit, dose_scale, tlag_idx, f_idx):
        stat = INVALID_INITIAL
    cp_start = _cp_at(0.0, m, wv, lam, cm)
    # grid points at the start are taken before any dose at that time
    while g < ng and t_grid[g] <= t and stat == OK:
        zs = z if ns > 0 else zg
        _record(
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
    ei = 0
    first = True
    while t < t_end and stat == OK:
        # ---- apply the events at time t
        while ei < ne and et[ei] <= t:
            kind = ek[ei]
            if kind == EV_DECIDE:
                code, delay, step = _evaluate_rules(
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
                    _hold_events(ei, delay, et, ek, ea, eo, en, eadm, given_rate)
                    break  # the decision comes back after the delay
                if code in (ACT_REDUCE, ACT_ESCALATE):
                    _change_level(a, code, step, st, levels)
                    factor = st[4] / base_dose
                elif code == ACT_DISCONTINUE:
                    disc = True
                    t_disc = t
                st[3] = 0.0
                held_before = False
                wmin[:] = np.nan
                wmax[:] = np.nan
            elif kind in (EV_ORAL, EV_BOLUS) or (kind == EV_RATE and ea[ei] > 0):
                col = eo[ei]
                sl = ev_slot[a, col]
                mult, reason = _dose_reason(i, sl, kind, factor, disc, eadm[ei], en[ei], adh, jit)
                amt = ea[ei] * mult
                if kind == EV_RATE:
                    given_rate[ev_pair[a, col]] = amt
                rin, rtot = _dose(kind, amt, z, m, vinv, rin, rtot)
                if n_slot > 0 and sl >= 0:
                    _ledger_give(ledger, i, sl, eadm[ei], mult, reason)
            elif kind == EV_RATE:  # an infusion ends: remove the rate it started with
                r = given_rate[eo[ei]]
                if DOSE_IV >= 0:
                    rin -= r
                else:
                    rtot -= r
            elif kind == EV_OCC:
                new = int(ea[ei])
                if new != occ:
                    _change_occasion(m, xa, vec_all[i, occ], vinv_all[i, new])
                    occ = new
                    p = pmat[i, occ]
                    lam = lam_all[i, occ]
                    cm = cm_all[i, occ]
                    vinv = vinv_all[i, occ]
            else:
                ctrough = _trough(t, z, p, m, wv, lam, cm, otmp)
            ei += 1
        # ---- the segment [t, tb] up to the next event
        _modal_input(rtot, vinv, lam, u, wv)
        tb = t_end
        if ei < ne and et[ei] < t_end:
            tb = et[ei]
        tseg = t
        cp0 = _cp_at(0.0, m, wv, lam, cm)
        _pk_peak_at_event(
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
        )
        if CP_OUT >= 0:
            ode_best, ode_tbest, want_right = _ode_peak_at_event(
                t, z, p, otmp, ode_best, ode_tbest, want_right, lseg, rseg
            )
        if ns > 0:
            _f(t, z, p, cp0, rin, k[0])
            # every segment starts after a dose or infusion change, where the right-hand
            # side changes abruptly: restart the step size (Hairer, Norsett & Wanner,
            # Solving ODE I, sec. II.4) instead of carrying a step suited to the smooth
            # end of the previous interval
            h0 = _initial_step(t, z, k, p, m, wv, lam, cm, tseg, rin, rtol, atol, ztmp, method)
            h = min(h0, h_max) if first else min(h, h0)
            first = False
        while t < tb and stat == OK:
            last = False
            hs = min(h, h_max)
            if t + hs >= tb or ns == 0:
                hs = tb - t
                last = True
            if ns > 0:
                accepted, stat, h, hnew, steps, nstiff, nonstiff = _integration_step(
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
                ode_best, ode_tbest, want_right = _track_ode_peak(
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
            while g < ng and t_grid[g] <= t1:
                tg = t_grid[g]
                if ns > 0:
                    _state_at(tg, t, t1, hs, z, znew, k, method, zg)
                cpg = _cp_at(tg - tseg, m, wv, lam, cm)
                before = cand[0]
                _record(
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
                    _pk_peak_on_grid(
                        g, tg, tseg, tb, occ, m, wv, t_grid, best_m, best_u, best_seg, best_pseg
                    )
                g += 1
            if ns > 0:
                z[:] = znew
                k[0, :] = k[6, :]
            t = t1
            h = hnew
        prev_m[:] = m
        prev_u[:] = wv
        prev_seg[1] = occ
        prev_seg[0] = tseg
        auc += _advance_modes(tb - tseg, m, u, lam, cm)
    # events at the very end of the horizon: only the trough marker matters
    while ei < ne and et[ei] <= t_end:
        if ek[ei] == EV_MARK:
            ctrough = _trough(t_end, z, p, m, wv, lam, cm, otmp)
        ei += 1
    if stat != OK:
        _fail(
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
            pk_metrics,
            status,
            nsteps,
        )
        return
    cmax, tmax = _pk_cmax(
        i, cand, best_m, best_u, best_seg, best_pm, best_pu, best_pseg, lam_all, cm_all
    )
    if CP_OUT >= 0:
        cmax, tmax = _ode_cmax(
            i, ode_best, ode_tbest, lz, lk, lseg, rz, rk, rseg, pmat, method, zg, otmp
        )
        auc = z[AUC_STATE]
    exposed = nm > 0 or CP_OUT >= 0
    pk_metrics[i, 0] = cmax if exposed else np.nan
    pk_metrics[i, 1] = tmax if exposed else np.nan
    pk_metrics[i, 2] = auc if exposed else np.nan
    pk_metrics[i, 3] = ctrough
    if dsum.shape[1] > 0:
        _dose_summary(i, ledger, st, t_disc, hold_total, dsum)
    status[i] = OK
    nsteps[i] = steps


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
    for i in range(n):
        # a failed or stiff Dormand-Prince solve is retried with the L-stable method
        # (one call site, so the integrator is compiled once)
        for attempt in range(2):
            method = method0 if attempt == 0 else ROSENBROCK23
            if attempt == 1 and (
                method0 != DOPRI5 or status[i] == OK or status[i] == INVALID_INITIAL
            ):
                break
            _simulate_one(
                # --- PATIENT CALL BEGIN ---
                i,
                method,
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
                status,
                nsteps,
                omin,
                omax,
                targmin,
                targmax,
                probes,
                cross,
                store,
                pk_metrics,
                ledger,
                dsum,
                # --- PATIENT CALL END ---
            )
            method_used[i] = method0 if attempt == 0 else DOPRI5_ROSENBROCK23
