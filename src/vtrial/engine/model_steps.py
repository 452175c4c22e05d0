"""Steps of the kernel that call the model: fixed source, specialised per model.

The steppers (``rk_step``, ``ros_step``, ``initial_step``; one attempted step with
error and stiffness control, ``integration_step``; the continuous extensions ``dense``
and ``dense_ros`` of the states the outputs need, and ``state_at``), the
outputs and reductions at a grid point (``record``), the dose-modification rules
(``evaluate_rules``), doses into ODE states (``dose``), troughs (``trough``), and the
ODE exposure candidates and exact Cmax (``ode_peak_at_event``, ``track_ode_peak``,
``ode_cmax``), and the steady state of ODE states at a dataset's SS record
(``ode_steady_state``: the dose pattern integrated interval after interval by
``ss_segment`` with the steppers above; a constant infusion's equilibrium by
``ss_equilibrium``).

:func:`kernel_steps` makes them for one model: the model's functions and constants are
closure variables, which numba freezes like a kernel's globals (direct calls that LLVM
inlines, constants folded), so the steps compile to the code they had when they were
written in the kernel. A generated kernel calls :func:`kernel_steps` once, at import;
the steps are compiled with the kernel's entry point and stored in its cache (numba
does not cache closures on their own). :func:`vtrial.engine.codegen.kernel_key`
hashes this file's source.

The steps run at every step or grid point (``integration_step``, ``state_at``,
``record``, ``track_ode_peak``) are inlined by numba (``inline="always"``): calling a
compiled function updates the reference counts of its array arguments.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from numba import njit

from vtrial.engine.numerics import (
    A21,
    A31,
    A32,
    A41,
    A42,
    A43,
    A51,
    A52,
    A53,
    A54,
    A61,
    A62,
    A63,
    A64,
    A65,
    ACT_DISCONTINUE,
    ACT_HOLD,
    ACT_NONE,
    B1,
    B3,
    B4,
    B5,
    B6,
    C2,
    C3,
    C4,
    C5,
    D_ROS,
    DOPRI5,
    E1,
    E3,
    E4,
    E5,
    E6,
    E7,
    E32_ROS,
    EV_BOLUS,
    EV_ORAL,
    EV_RATE,
    GOLDEN,
    MAX_STEPS,
    NO_STEADY_STATE,
    NONFINITE,
    OK,
    STEP_UNDERFLOW,
    STIFF,
    P,
    advance_modes,
    cp_at,
    lu_solve,
    modal_input,
)

#: most dose intervals (or chunks of a constant infusion) integrated to reach a steady
#: state of ODE states (:func:`kernel_steps` ``ode_steady_state``), as mrgsolve's ``ss_n``
SS_MAX_INTERVALS = 1000
#: first and longest chunk (h) over which a constant infusion's equilibrium is integrated
SS_CHUNK0 = 1.0
SS_CHUNK_MAX = 1024.0
#: a change per interval below this, relative (d * rtol), is rounding: converged
SS_NOISE = 1e-13


class KernelSteps(NamedTuple):
    """The model-specific steps of one kernel (compiled numba functions)."""

    dense: Any
    dense_ros: Any
    rk_step: Any
    initial_step: Any
    ros_step: Any
    integration_step: Any
    state_at: Any
    record: Any
    cp_dense: Any
    refine_dense: Any
    ode_peak_at_event: Any
    track_ode_peak: Any
    ode_cmax: Any
    evaluate_rules: Any
    dose: Any
    trough: Any
    observe: Any
    ss_segment: Any
    ss_equilibrium: Any
    ode_steady_state: Any


def kernel_steps(
    module: str,
    f: Any,
    outputs: Any,
    decide: Any,
    n_states: int,
    logscale: np.ndarray,
    out_states: np.ndarray,
    cp_out: int,
    dose_oral: int,
    dose_iv: int,
) -> KernelSteps:
    """The steps for one model and its rules.

    Parameters
    ----------
    module : str
        The kernel module's name (``__name__``), unique to its source. The steps count
        as functions of that module: numba names compiled code by module, name and a
        counter that restarts in each process, so steps of two kernels made here under
        one module name could share a symbol, and a kernel loaded from the cache could
        then call another model's steps.
    f, outputs, decide : numba functions
        The kernel's right-hand side plus infusion (``_f(t, z, p, cp, rin, dz)``), outputs
        (``_outputs(t, z, p, cp, o)``) and dose-modification rules (``_decide``).
    n_states, logscale, out_states, cp_out, dose_oral, dose_iv
        The kernel's constants ``NS``, ``LOGSCALE``, ``OUT_STATES``, ``CP_OUT``,
        ``DOSE_ORAL`` and ``DOSE_IV`` (see :mod:`vtrial.engine._kernel_template`).
    """

    def jit(**options: Any) -> Any:
        def compiled(fn: Any) -> Any:
            fn.__module__ = module
            fn.__qualname__ = f"kernel_steps.{fn.__name__}"
            return njit(nogil=True, error_model="numpy", **options)(fn)

        return compiled

    @jit()
    def dense(theta, h, z, k, zout):  # pragma: no cover - compiled
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
        for i in out_states:
            acc = b0 * k[0, i] + b2 * k[2, i] + b3 * k[3, i] + b4 * k[4, i] + b5 * k[5, i]
            zout[i] = z[i] + h * (acc + b6 * k[6, i])

    @jit()
    def dense_ros(theta, h, z, k, zout):  # pragma: no cover - compiled
        """2nd-order continuous extension of the Rosenbrock 2(3) step at t + theta*h."""
        c = 1.0 / (1.0 - 2.0 * D_ROS)
        a1 = theta * (1.0 - theta) * c
        a2 = theta * (theta - 2.0 * D_ROS) * c
        for q in out_states:
            zout[q] = z[q] + h * (a1 * k[1, q] + a2 * k[2, q])

    @jit()
    def rk_step(t, h, z, k, p, m, w, lam, cm, tseg, rin, ztmp, znew):  # pragma: no cover - compiled
        """One Dormand-Prince step from (t, z) with k[0] = f(t, z); fills k[1..6] and znew."""
        ns = z.shape[0]
        for i in range(ns):
            ztmp[i] = z[i] + h * A21 * k[0, i]
        f(t + C2 * h, ztmp, p, cp_at(t + C2 * h - tseg, m, w, lam, cm), rin, k[1])
        for i in range(ns):
            ztmp[i] = z[i] + h * (A31 * k[0, i] + A32 * k[1, i])
        f(t + C3 * h, ztmp, p, cp_at(t + C3 * h - tseg, m, w, lam, cm), rin, k[2])
        for i in range(ns):
            ztmp[i] = z[i] + h * (A41 * k[0, i] + A42 * k[1, i] + A43 * k[2, i])
        f(t + C4 * h, ztmp, p, cp_at(t + C4 * h - tseg, m, w, lam, cm), rin, k[3])
        for i in range(ns):
            ztmp[i] = z[i] + h * (A51 * k[0, i] + A52 * k[1, i] + A53 * k[2, i] + A54 * k[3, i])
        f(t + C5 * h, ztmp, p, cp_at(t + C5 * h - tseg, m, w, lam, cm), rin, k[4])
        for i in range(ns):
            ztmp[i] = z[i] + h * (
                A61 * k[0, i] + A62 * k[1, i] + A63 * k[2, i] + A64 * k[3, i] + A65 * k[4, i]
            )
        f(t + h, ztmp, p, cp_at(t + h - tseg, m, w, lam, cm), rin, k[5])
        for i in range(ns):
            znew[i] = z[i] + h * (
                B1 * k[0, i] + B3 * k[2, i] + B4 * k[3, i] + B5 * k[4, i] + B6 * k[5, i]
            )
        f(t + h, znew, p, cp_at(t + h - tseg, m, w, lam, cm), rin, k[6])

    @jit()
    def initial_step(
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
            sc = atol + rtol if logscale[q] else atol + rtol * abs(z[q])
            d0 += (z[q] / sc) ** 2
            d1 += (k[0, q] / sc) ** 2
        d0 = math.sqrt(d0 / ns)
        d1 = math.sqrt(d1 / ns)
        h0 = 0.01 * d0 / d1 if (d0 > 1e-5 and d1 > 1e-5) else 1e-6
        for q in range(ns):
            ztmp[q] = z[q] + h0 * k[0, q]
        f(t + h0, ztmp, p, cp_at(t + h0 - tseg, m, w, lam, cm), rin, k[1])
        d2 = 0.0
        for q in range(ns):
            sc = atol + rtol if logscale[q] else atol + rtol * abs(z[q])
            d2 += ((k[1, q] - k[0, q]) / sc) ** 2
        d2 = math.sqrt(d2 / ns) / h0
        order = 5.0 if method == DOPRI5 else 3.0
        big = max(d1, d2)
        if big <= 1e-15:
            h1 = max(1e-6, h0 * 1e-3)
        else:
            h1 = (0.01 / big) ** (1.0 / order)
        return min(100.0 * h0, h1)

    @jit()
    def ros_step(
        t, h, z, k, p, m, w, lam, cm, tseg, rin, ztmp, znew, jac, wm, rhs, errv
    ):  # pragma: no cover
        """One Rosenbrock 2(3) step (ode23s) with a finite-difference Jacobian.

        Fills k[0] = f(t, z), k[1] = k1, k[2] = k2 (used by the dense output), znew and
        the local error estimate errv. Returns False if W is singular.
        """
        ns = z.shape[0]
        cp_t = cp_at(t - tseg, m, w, lam, cm)
        f(t, z, p, cp_t, rin, k[0])
        dt = 1.5e-8 * max(abs(t), 1.0)
        f(t + dt, z, p, cp_at(t + dt - tseg, m, w, lam, cm), rin, k[6])
        for q in range(ns):
            k[6, q] = (k[6, q] - k[0, q]) / dt  # df/dt
        for j in range(ns):
            for q in range(ns):
                ztmp[q] = z[q]
            dz = 1.5e-8 * max(abs(z[j]), 1.0)
            ztmp[j] += dz
            f(t, ztmp, p, cp_t, rin, k[4])
            for q in range(ns):
                jac[q, j] = (k[4, q] - k[0, q]) / dz
        hd = h * D_ROS
        # k1 = W^-1 (F0 + h d T)
        for q in range(ns):
            for j in range(ns):
                wm[q, j] = (1.0 if q == j else 0.0) - hd * jac[q, j]
            rhs[q] = k[0, q] + hd * k[6, q]
        if not lu_solve(wm, rhs):
            return False
        for q in range(ns):
            k[1, q] = rhs[q]
            ztmp[q] = z[q] + 0.5 * h * k[1, q]
        f(t + 0.5 * h, ztmp, p, cp_at(t + 0.5 * h - tseg, m, w, lam, cm), rin, k[3])
        # k2 = W^-1 (F1 - k1) + k1
        for q in range(ns):
            for j in range(ns):
                wm[q, j] = (1.0 if q == j else 0.0) - hd * jac[q, j]
            rhs[q] = k[3, q] - k[1, q]
        if not lu_solve(wm, rhs):
            return False
        for q in range(ns):
            k[2, q] = rhs[q] + k[1, q]
            znew[q] = z[q] + h * k[2, q]
        f(t + h, znew, p, cp_at(t + h - tseg, m, w, lam, cm), rin, k[4])
        # k3 = W^-1 (F2 - e32 (k2 - F1) - 2 (k1 - F0) + h d T)
        for q in range(ns):
            for j in range(ns):
                wm[q, j] = (1.0 if q == j else 0.0) - hd * jac[q, j]
            rhs[q] = (
                k[4, q] - E32_ROS * (k[2, q] - k[3, q]) - 2.0 * (k[1, q] - k[0, q]) + hd * k[6, q]
            )
        if not lu_solve(wm, rhs):
            return False
        for q in range(ns):
            k[5, q] = rhs[q]
            errv[q] = h / 6.0 * (k[1, q] - 2.0 * k[2, q] + k[5, q])
        return True

    # inlined (numba IR): called at every step (see record)
    @jit(inline="always")
    def integration_step(
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
        ns = n_states
        finite = True
        if method == DOPRI5:
            rk_step(t, hs, z, k, p, m, wv, lam, cm, tseg, rin, ztmp, znew)
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
            finite = ros_step(
                t, hs, z, k, p, m, wv, lam, cm, tseg, rin, ztmp, znew, jac, wmat, rvec, errv
            )
        err = 0.0
        for q in range(ns):
            # an error in log(y) is a relative error in y: scale it by rtol alone
            if logscale[q]:
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

    # inlined (numba IR): called at every grid point (see record)
    @jit(inline="always")
    def state_at(tg, t, t1, hs, z, znew, k, method, zg):  # pragma: no cover - compiled
        """ODE states ``zg`` at ``tg`` in the accepted step (t, t1] of size ``hs``: its end
        exactly, inside it from the method's dense output."""
        if tg == t1:
            for q in range(n_states):
                zg[q] = znew[q]
        elif method == DOPRI5:
            dense((tg - t) / hs, hs, z, k, zg)
        else:
            dense_ros((tg - t) / hs, hs, z, k, zg)

    # inlined (numba IR): called at every grid point, where a call would update the
    # reference counts of its array arguments each time
    @jit(inline="always")
    def record(
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
        outputs(tg, zg, p, cp, o)
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

    @jit()
    def cp_dense(theta, h, t0, z, k, p, method, zg, o):  # pragma: no cover - compiled
        """ODE output cp_out at t0 + theta*h from the continuous extension of one step."""
        if method == DOPRI5:
            dense(theta, h, z, k, zg)
        else:
            dense_ros(theta, h, z, k, zg)
        outputs(t0 + theta * h, zg, p, 0.0, o)
        return o[cp_out]

    @jit()
    def refine_dense(h, t0, z, k, p, method, zg, o):  # pragma: no cover - compiled
        """Golden-section maximisation of the ODE output cp_out over one saved step."""
        a = 0.0
        b = 1.0
        x1 = a + GOLDEN * (b - a)
        x2 = b - GOLDEN * (b - a)
        f1 = cp_dense(x1, h, t0, z, k, p, method, zg, o)
        f2 = cp_dense(x2, h, t0, z, k, p, method, zg, o)
        for _ in range(80):
            if (b - a) * h <= 1e-10 * max(1.0, abs(t0)):
                break
            if f1 < f2:
                a = x1
                x1 = x2
                f1 = f2
                x2 = b - GOLDEN * (b - a)
                f2 = cp_dense(x2, h, t0, z, k, p, method, zg, o)
            else:
                b = x2
                x2 = x1
                f2 = f1
                x1 = a + GOLDEN * (b - a)
                f1 = cp_dense(x1, h, t0, z, k, p, method, zg, o)
        if f1 > f2:
            return t0 + x1 * h, f1
        return t0 + x2 * h, f2

    @jit()
    def ode_peak_at_event(t, z, p, otmp, best, tbest, want_right, lseg, rseg):  # pragma: no cover
        """Candidate Cmax of the ODE output cp_out just after the doses at ``t``.

        Returns the updated ``(best, tbest, want_right)``; a new best point has no step
        before it to refine on (``lseg``), and wants the step after it (``rseg``).
        """
        outputs(t, z, p, 0.0, otmp)  # after the doses at t
        if otmp[cp_out] > best:
            best = otmp[cp_out]
            tbest = t
            lseg[:] = np.nan
            rseg[:] = np.nan
            want_right = True
        return best, tbest, want_right

    # inlined (numba IR): called at every step of an ODE exposure model (see record)
    @jit(inline="always")
    def track_ode_peak(
        t, hs, t1, occ, z, znew, k, p, otmp, best, tbest, want_right, lz, lk, lseg, rz, rk, rseg
    ):  # pragma: no cover - compiled
        """Candidate Cmax of the ODE output cp_out at the end ``t1`` of an accepted step.

        The best step end is bracketed by the step before it (state ``lz``, stages ``lk``;
        ``lseg``: start, size, occasion) and the step after it (``rz``, ``rk``, ``rseg``),
        kept for the refinement on their dense output. Returns the updated
        ``(best, tbest, want_right)``.
        """
        if want_right:
            for q in range(n_states):
                rz[q] = z[q]
                for r in range(7):
                    rk[r, q] = k[r, q]
            rseg[0] = t
            rseg[1] = hs
            rseg[2] = occ
            want_right = False
        outputs(t1, znew, p, 0.0, otmp)
        if otmp[cp_out] > best:
            best = otmp[cp_out]
            tbest = t1
            for q in range(n_states):
                lz[q] = z[q]
                for r in range(7):
                    lk[r, q] = k[r, q]
            lseg[0] = t
            lseg[1] = hs
            lseg[2] = occ
            rseg[:] = np.nan
            want_right = True
        return best, tbest, want_right

    @jit()
    def ode_cmax(
        i, best, tbest, lz, lk, lseg, rz, rk, rseg, pmat, method, zg, otmp
    ):  # pragma: no cover - compiled
        """Exact Cmax of the ODE output cp_out: the best step end or post-dose point,
        refined on the dense output of the steps around it (see :func:`track_ode_peak`)."""
        cmax = best
        tmax = tbest
        if math.isfinite(lseg[0]):
            tr, cr = refine_dense(lseg[1], lseg[0], lz, lk, pmat[i, int(lseg[2])], method, zg, otmp)
            if cr > cmax:
                cmax = cr
                tmax = tr
        if math.isfinite(rseg[0]):
            tr, cr = refine_dense(rseg[1], rseg[0], rz, rk, pmat[i, int(rseg[2])], method, zg, otmp)
            if cr > cmax:
                cmax = cr
                tmax = tr
        return cmax, tmax

    @jit()
    def evaluate_rules(
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
        cp_now = cp_at(0.0, m, wv, lam, cm)
        outputs(t, z, p, cp_now, otmp)
        k_eps = min(n_eval, meas_eps.shape[1] - 1)
        if disc:
            act[0] = ACT_NONE
        else:
            decide(a, t, otmp, wmin, wmax, omin[i], omax[i], meas_eps[i, k_eps], st, act)
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

    @jit()
    def dose(kind, amt, z, m, vinv, rin, rtot):  # pragma: no cover - compiled
        """Give ``amt``: a bolus into its dosing state or the PK modes, or an infusion rate.

        Returns the infusion rates ``(rin, rtot)`` into the IV dosing state of an ODE model
        and into the PK macro's central compartment.
        """
        if kind == EV_ORAL:
            if dose_oral >= 0:
                z[dose_oral] += amt
            else:
                for q in range(m.shape[0]):
                    m[q] += amt * vinv[q, 0]
        elif kind == EV_BOLUS:
            if dose_iv >= 0:
                z[dose_iv] += amt
            else:
                for q in range(m.shape[0]):
                    m[q] += amt * vinv[q, 1]
        elif dose_iv >= 0:
            rin += amt
        else:
            rtot += amt
        return rin, rtot

    @jit()
    def trough(t, z, p, m, wv, lam, cm, otmp):  # pragma: no cover - compiled
        """Concentration at ``t`` before the doses at ``t`` (ODE output cp_out or PK CP)."""
        if cp_out >= 0:
            outputs(t, z, p, 0.0, otmp)
            return otmp[cp_out]
        return cp_at(0.0, m, wv, lam, cm)

    @jit()
    def observe(t, z, p, m, wv, lam, cm, o):  # pragma: no cover - compiled
        """Every output at ``t`` into ``o``, with the events at ``t`` applied so far (an
        observation record: the records before it in file order, not those after)."""
        outputs(t, z, p, cp_at(0.0, m, wv, lam, cm), o)

    # ---- steady state of ODE states (a dataset's SS record): the dose pattern is
    # integrated interval after interval until the state before a dose converges
    auc_state = n_states - 1 if cp_out >= 0 else -1  # the AUC state comes last

    @jit()
    def ss_segment(
        t0, t1, z, k, p, m, u, w, lam, cm, rin, rtol, atol, h_max, method, steps, max_steps, wk
    ):  # pragma: no cover - compiled
        """Integrate the ODE states over [t0, t1] with constant inputs (modal state ``m``
        at t0 with modal infusion ``u``, ``w = u / lam``; rate ``rin`` into the IV dosing
        state), then advance ``m`` exactly to t1. ``wk``: work arrays (ztmp, znew, rvec,
        errv as rows 0-3, jac and wmat stacked below). Returns ``(stat, steps)``."""
        ns = n_states
        ztmp = wk[0]
        znew = wk[1]
        rvec = wk[2]
        errv = wk[3]
        jac = wk[4 : 4 + ns]
        wmat = wk[4 + ns : 4 + 2 * ns]
        stat = OK
        t = t0
        f(t, z, p, cp_at(0.0, m, w, lam, cm), rin, k[0])
        h = min(initial_step(t, z, k, p, m, w, lam, cm, t0, rin, rtol, atol, ztmp, method), h_max)
        nstiff = 0
        nonstiff = 0
        while t < t1 and stat == OK:
            last = False
            hs = min(h, h_max)
            if t + hs >= t1:
                hs = t1 - t
                last = True
            accepted, stat, h, hnew, steps, nstiff, nonstiff = integration_step(
                t,
                hs,
                h,
                z,
                k,
                p,
                m,
                w,
                lam,
                cm,
                t0,
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
            for q in range(ns):
                z[q] = znew[q]
                k[0, q] = k[6, q]
            t = t1 if last else t + hs
            h = hnew
        advance_modes(t1 - t0, m, u, lam, cm)
        return stat, steps

    @jit()
    def ss_equilibrium(z, p, cp, rin, rtol, atol):  # pragma: no cover - compiled
        """Equilibrium of the ODE states under constant inputs (a constant infusion):
        the root of the right-hand side by damped Newton iterations with a
        finite-difference Jacobian (NONMEM's SS6 solves 0 = DADT(A) + R likewise),
        from ``z``. The AUC state is left out. Returns False, ``z`` unspecified, if the
        Jacobian is singular (no unique equilibrium: no elimination, say) or the
        iterations do not converge; the caller then integrates to the equilibrium."""
        ns = n_states
        nr = ns - 1 if auc_state >= 0 else ns
        fz = np.empty(ns)
        ft = np.empty(ns)
        zt = np.empty(ns)
        jac = np.empty((nr, nr))
        dlt = np.empty(nr)
        f(0.0, z, p, cp, rin, fz)
        res = 0.0
        for q in range(nr):
            res += fz[q] ** 2
        for _ in range(50):
            if not math.isfinite(res):
                return False
            for j in range(nr):
                for q in range(ns):
                    zt[q] = z[q]
                dz = 1.5e-8 * max(abs(z[j]), 1.0)
                zt[j] += dz
                f(0.0, zt, p, cp, rin, ft)
                for q in range(nr):
                    jac[q, j] = (ft[q] - fz[q]) / dz
                dlt[j] = -fz[j]
            if not lu_solve(jac, dlt):
                return False
            step = 0.0
            for q in range(nr):
                sc = atol + rtol if logscale[q] else atol + rtol * abs(z[q])
                step += (dlt[q] / sc) ** 2
            step = math.sqrt(step / max(nr, 1))
            if step == 0.0:
                return True
            # the full step, halved until the residual decreases
            frac = 1.0
            accepted = False
            for _ in range(30):
                for q in range(ns):
                    zt[q] = z[q]
                for q in range(nr):
                    zt[q] += frac * dlt[q]
                f(0.0, zt, p, cp, rin, ft)
                rnew = 0.0
                for q in range(nr):
                    rnew += ft[q] ** 2
                if math.isfinite(rnew) and rnew < res:
                    accepted = True
                    break
                frac *= 0.5
            if not accepted:
                return res == 0.0
            for q in range(nr):
                z[q] = zt[q]
                fz[q] = ft[q]
            res = rnew
            # quadratic convergence: the error left is far below the last full step
            if frac == 1.0 and step <= 1e-3:
                return True
        return False

    @jit()
    def ode_steady_state(
        z,
        z0,
        add,
        p,
        mss,
        lam,
        vinv,
        cm,
        tau,
        kind,
        amt,
        dur,
        tlag,
        rtol,
        atol,
        h_max,
        method,
        steps,
        max_steps,
    ):  # pragma: no cover - compiled
        """ODE states ``z`` just before a dose at steady state of a dataset's SS record.

        The pattern (``amt`` every ``tau``: ``kind`` oral, landing ``tlag`` after its
        time, or bolus; or an infusion at rate ``amt`` lasting ``dur``, possibly longer
        than ``tau``, so that ``ceil(dur / tau)`` infusions overlap early in the
        interval; ``tau`` 0: a constant infusion at rate ``amt``) is integrated from
        the initial states ``z0`` (internal scale), one interval after another, until
        the state before a dose converges (mrgsolve's and rxode2's method). The PK
        macro's modes, if any, start every interval at their closed-form steady state
        ``mss`` and are advanced exactly, so the ODE states see the exact periodic PK.
        A constant infusion's equilibrium is solved for by Newton's method
        (``ss_equilibrium``); where that fails it is integrated to, in chunks (from
        :data:`SS_CHUNK0` h, doubled while convergence is slow, up to
        :data:`SS_CHUNK_MAX` h). Integrating there is what Dormand-Prince would find
        stiff: near the equilibrium its steps grow until stability limits them.

        Convergence: ``d``, the weighted RMS change over the last interval (the
        integrator's weights ``atol + rtol |z|``; log-scale states ``atol + rtol``; the
        AUC state is not a state of the pattern and is left as it was), and ``r``, its
        ratio to the change before (the contraction of the interval map), must satisfy
        ``d <= 1`` and ``d r / (1 - r) <= 1``: the remaining distance to the fixed
        point, extrapolated geometrically, is within the tolerance (or ``d`` is
        rounding, ``d rtol <= 1e-13``). After :data:`SS_MAX_INTERVALS` intervals
        without convergence (no elimination, say) the status is ``NO_STEADY_STATE``.

        ``add`` (SS=2): the pattern's contribution ``z_ss - z0`` is added to the
        current state instead of replacing it (NONMEM's superposition, exact for a
        linear model whose initial states are zero; for a nonlinear model an
        approximation, exact only if the current state is the initial one; log-scale
        states combine as ``y y_ss / y0``). Returns ``(stat, steps)``.
        """
        ns = n_states
        nm = mss.shape[0]
        zb = z.copy()
        for q in range(ns):
            z[q] = z0[q]
        k = np.empty((7, ns))
        wk = np.empty((4 + 2 * ns, ns))
        zprev = np.empty(ns)
        m = np.empty(nm)
        u = np.empty(nm)
        w = np.empty(nm)
        stat = OK
        converged = False
        dprev = -1.0
        span = SS_CHUNK0 if tau == 0.0 else tau
        if tau == 0.0:  # a constant infusion: the modes stay at their equilibrium
            for q in range(nm):
                m[q] = mss[q]
            rin = amt if dose_iv >= 0 else 0.0
            modal_input(amt - rin, vinv, lam, u, w)
            converged = ss_equilibrium(z, p, cp_at(0.0, m, w, lam, cm), rin, rtol, atol)
            if not converged:  # integrate to it instead
                for q in range(ns):
                    z[q] = z0[q]
        for _ in range(0 if converged else SS_MAX_INTERVALS):
            for q in range(ns):
                zprev[q] = z[q]
            for q in range(nm):
                m[q] = mss[q]
            if tau == 0.0:
                rin = amt if dose_iv >= 0 else 0.0
                modal_input(amt - rin, vinv, lam, u, w)
                stat, steps = ss_segment(
                    0.0, span, z, k, p, m, u, w, lam, cm, rin, rtol, atol, h_max, method,
                    steps, max_steps, wk,
                )  # fmt: skip
            elif kind == EV_RATE:
                # infusions started 0, 1, ... intervals ago: n1 = ceil(dur / tau) run
                # until dur - (n1 - 1) tau into the interval, one less after that
                n1 = max(1, math.ceil(dur / tau))
                split = min(tau, dur - (n1 - 1) * tau)
                for seg in range(2):
                    a = 0.0 if seg == 0 else split
                    b = split if seg == 0 else tau
                    rate = amt * (n1 - seg)
                    if b <= a or stat != OK:
                        continue
                    if dose_iv >= 0:
                        modal_input(0.0, vinv, lam, u, w)
                        rin = rate
                    else:
                        modal_input(rate, vinv, lam, u, w)
                        rin = 0.0
                    stat, steps = ss_segment(
                        a, b, z, k, p, m, u, w, lam, cm, rin, rtol, atol, h_max, method,
                        steps, max_steps, wk,
                    )  # fmt: skip
            else:
                modal_input(0.0, vinv, lam, u, w)
                td = tlag if kind == EV_ORAL else 0.0
                if td > 0.0:
                    stat, steps = ss_segment(
                        0.0, td, z, k, p, m, u, w, lam, cm, 0.0, rtol, atol, h_max, method,
                        steps, max_steps, wk,
                    )  # fmt: skip
                dose(kind, amt, z, m, vinv, 0.0, 0.0)
                if stat == OK:
                    stat, steps = ss_segment(
                        td, tau, z, k, p, m, u, w, lam, cm, 0.0, rtol, atol, h_max, method,
                        steps, max_steps, wk,
                    )  # fmt: skip
            if stat != OK:
                break
            d = 0.0
            for q in range(ns):
                if q == auc_state:
                    continue
                if logscale[q]:
                    sc = atol + rtol
                else:
                    sc = atol + rtol * max(abs(z[q]), abs(zprev[q]))
                d += ((z[q] - zprev[q]) / sc) ** 2
            d = math.sqrt(d / max(1, ns - (1 if auc_state >= 0 else 0)))
            if not math.isfinite(d):
                stat = NONFINITE
                break
            r = d / dprev if dprev > 0.0 else (0.0 if d == 0.0 else 1.0)
            if d * rtol <= SS_NOISE or (d <= 1.0 and r < 1.0 and d * r <= 1.0 - r):
                converged = True
                break
            if tau == 0.0 and r > 0.5 and span < SS_CHUNK_MAX:
                span *= 2.0  # slow: longer chunks, and a new ratio
                dprev = -1.0
            else:
                dprev = d
        if stat == OK and not converged:
            stat = NO_STEADY_STATE
        for q in range(ns):
            if q == auc_state:
                z[q] = zb[q]
            elif add:
                z[q] += zb[q] - z0[q]
        return stat, steps

    return KernelSteps(
        dense=dense,
        dense_ros=dense_ros,
        rk_step=rk_step,
        initial_step=initial_step,
        ros_step=ros_step,
        integration_step=integration_step,
        state_at=state_at,
        record=record,
        cp_dense=cp_dense,
        refine_dense=refine_dense,
        ode_peak_at_event=ode_peak_at_event,
        track_ode_peak=track_ode_peak,
        ode_cmax=ode_cmax,
        evaluate_rules=evaluate_rules,
        dose=dose,
        trough=trough,
        observe=observe,
        ss_segment=ss_segment,
        ss_equilibrium=ss_equilibrium,
        ode_steady_state=ode_steady_state,
    )
