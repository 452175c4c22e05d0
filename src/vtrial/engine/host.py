"""Host side of the numerical engine: inputs of the compiled kernel and its results.

:func:`run_kernel` is the single entry point used by the workflow (per chunk of
patients, inside a Dask task) and by :func:`simulate` (the Python API). It

1. evaluates derived constants and initial conditions (vectorised, safe evaluator),
2. diagonalises each patient's linear compartment matrix (exact PK, modal form),
3. calls the generated kernel, which loops over patients in compiled code, with its
   arguments named, ordered and checked by :func:`vtrial.engine.interface.kernel_args`
   against their declaration (:data:`vtrial.engine.interface.KERNEL_ARGS`).

A patient's results depend only on its own parameters and regimen, never on the
other patients of the batch or on the number of threads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from vtrial.engine.codegen import Layout, layout, load_kernel
from vtrial.engine.interface import KERNEL_ARGS, Method, Status, kernel_args
from vtrial.errors import VtrialError
from vtrial.infra.progress import Heartbeat
from vtrial.model.expressions import evaluate
from vtrial.model.spec import Model
from vtrial.protocol.codes import EventKind, Reason
from vtrial.protocol.dosing import SS_COLUMNS, EventTable
from vtrial.protocol.rules import RuleProgram

_log = logging.getLogger("vtrial")


def labels(codes: np.ndarray, table: dict[int, str]) -> np.ndarray:
    """Per-patient labels of kernel codes, vectorised.

    ``table``: :data:`~vtrial.engine.interface.STATUS` or
    :data:`~vtrial.engine.interface.METHODS`.
    """
    lookup = np.array([table[k] for k in range(max(table) + 1)], dtype=object)
    return lookup[np.asarray(codes, dtype=np.int64)]


#: when a grid point at a dose time is taken: before the dose (default) or after it
OUTPUTS_AT_DOSE = ("before", "after")
#: columns of the exact PK metrics
PK_METRICS = ("cmax", "tmax", "auc", "ctrough")
#: relative gap below which two PK eigenvalues are separated (KA nudged), see pk_modes
EIGEN_GAP = 1e-7


@dataclass(frozen=True)
class Tolerances:
    """Integration controls of the ODE states.

    ``rtol``/``atol`` bound the local error per step (for log-scale states the error
    is relative and scaled by ``atol + rtol``); ``max_steps`` bounds attempted steps
    per patient; ``h_max`` (h) bounds the step so no dynamics between outputs is
    stepped over. ``method``: ``auto`` uses the model's choice (``solver: stiff`` in a
    model file selects Rosenbrock 2(3) from the start) and otherwise Dormand-Prince
    5(4), which re-solves a patient with the L-stable Rosenbrock 2(3) method when it
    detects stiffness or fails; ``dopri5`` starts with Dormand-Prince whatever the
    model says (the Rosenbrock retry stays) and ``rosenbrock23`` uses Rosenbrock only.
    """

    rtol: float = 1e-6
    atol: float = 1e-9
    max_steps: int = 200_000
    h_max: float = 24.0
    method: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in ("auto", "dopri5", "rosenbrock23"):
            raise ValueError(
                f"method: must be 'auto', 'dopri5' or 'rosenbrock23', got {self.method!r}"
            )


@dataclass(frozen=True)
class Monitor:
    """First time output ``output`` goes below (``direction=-1``) or above ``threshold``."""

    output: str
    threshold: float
    direction: int = -1


@dataclass
class KernelResult:
    """Per-patient results of one batch (n patients, O outputs).

    Attributes
    ----------
    status : ndarray of int8, (n,)
    nsteps : ndarray of int32, (n,)
    omin, omax, tmin, tmax : ndarray, (n, O)
        Minimum/maximum of each output over the evaluation grid and their times (h).
    probes : ndarray, (n, n_probes, O)
        Every output at the probe times.
    cross : ndarray, (n, n_monitors)
        First crossing time (h, linear interpolation on the grid), NaN if never.
    store : ndarray, (n, n_store_times, n_store_outputs)
        Stored time courses (float32 unless asked otherwise).
    pk : ndarray, (n, 4)
        Exact ``cmax``, ``tmax``, ``auc`` (over the simulated horizon), ``ctrough``.
    method : ndarray of int8, (n,)
        Integration method used (:class:`vtrial.engine.interface.Method`).
    ledger : ndarray, (n, n_slots, 4)
        Dose ledger when asked for (:func:`run_kernel` ``ledger=True``): per planned
        administration its time (h, NaN if not reached), planned and given amount (mg)
        and reason code (:data:`vtrial.protocol.codes.REASONS`); (n, 0, 4) otherwise.
    dose_summary : ndarray, (n, 5) or (n, 0)
        :data:`vtrial.protocol.rules.DOSE_SUMMARY` per patient, with the ledger.
    obs : ndarray, (n, n_obs, O)
        Every output at each observation event (:attr:`EventKind.OBS
        <vtrial.protocol.codes.EventKind>`, whose amount is its row), with the events
        at the same time before it in the event table applied; NaN for a row no event
        fills.
    """

    status: np.ndarray
    nsteps: np.ndarray
    omin: np.ndarray
    omax: np.ndarray
    tmin: np.ndarray
    tmax: np.ndarray
    probes: np.ndarray
    cross: np.ndarray
    store: np.ndarray
    pk: np.ndarray
    method: np.ndarray
    ledger: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 4)))
    dose_summary: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    obs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))


def parameter_matrix(
    model: Model, lay: Layout, params: Mapping[str, Any], n: int, n_occ: int = 1
) -> np.ndarray:
    """Per-patient, per-occasion parameter matrix, shape (n, n_occ, P).

    Columns are the parameters then the derived constants. A parameter given as an
    array of shape (n, n_occ) varies by occasion (inter-occasion variability); scalars
    and arrays of shape (n,) are the same in every occasion.
    """
    env: dict[str, Any] = {}
    for name, p in model.parameters.items():
        v = np.asarray(params.get(name, p.value), dtype=np.float64)
        if v.ndim == 2:
            if v.shape != (n, n_occ):
                raise ValueError(f"{name}: per-occasion values must have shape ({n}, {n_occ})")
        else:
            v = np.broadcast_to(v, (n,))[:, None]
        env[name] = np.broadcast_to(v, (n, n_occ)).ravel()
    size = n * n_occ
    for name, expr in model.derived.items():
        env[name] = np.broadcast_to(evaluate(expr, env, size=size).astype(np.float64), (size,))
    mat = np.column_stack([env[k] for k in lay.param_names]) if lay.param_names else None
    if mat is None:
        return np.zeros((n, n_occ, 0))
    return np.ascontiguousarray(mat.reshape(n, n_occ, len(lay.param_names)))


def initial_states(model: Model, lay: Layout, pmat: np.ndarray) -> np.ndarray:
    """Initial conditions from the first occasion's parameters, shape (n, S).

    ``pmat`` is the (n, P) or (n, n_occ, P) parameter matrix.
    """
    if pmat.ndim == 3:
        pmat = pmat[:, 0, :]
    n = pmat.shape[0]
    env = {k: pmat[:, i] for i, k in enumerate(lay.param_names)}
    cols = [
        np.broadcast_to(evaluate(model.states[s].init, env, size=n).astype(np.float64), (n,))
        for s in lay.state_names
    ]
    if not cols:
        return np.zeros((n, 0))
    return np.ascontiguousarray(np.column_stack(cols))


def pk_modes(
    model: Model, lay: Layout, pmat: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Modal decomposition of each patient's linear compartment system.

    The amounts ``x`` (depot, central, peripherals) obey ``dx/dt = A x + input``.
    With ``A = V diag(lam) V^-1`` (real, negative eigenvalues for mammillary models),
    modal amplitudes ``m = V^-1 x`` evolve independently.

    Parameters
    ----------
    pmat : ndarray, shape (..., P)
        Parameter matrix (any leading shape, e.g. (n,) or (n, n_occ)).

    Returns
    -------
    lam : ndarray, (..., M)
        Eigenvalues (1/h).
    cmode : ndarray, (..., M)
        ``CP = cmode @ m`` (row of V for the central compartment divided by V1).
    vinv : ndarray, (..., M, M)
        ``V^-1``: column 0 (depot) and 1 (central) are the modal amplitudes added per
        unit dose; the whole matrix maps amounts to modes at an occasion change.
    vec : ndarray, (..., M, M)
        ``V``: maps modes back to amounts.

    Patients whose PK parameters are not finite and positive get NaN eigenvalues,
    which :func:`run_kernel` reports as ``invalid_initial``.

    Notes
    -----
    When KA coincides with a disposition eigenvalue (relative gap < ``EIGEN_GAP``)
    the matrix is defective; KA is then nudged by ``4 * EIGEN_GAP`` relative. The
    concentrations change by about ``8 * EIGEN_GAP * k * t`` relative at time ``t``
    (``k`` the eliminating eigenvalue): measured 3.6e-6 at ``k * t = 20``, against the
    exact degenerate solution ``D * KA / V * t * exp(-k t)``.
    """
    lead = pmat.shape[:-1]
    pmat = pmat.reshape(-1, pmat.shape[-1])
    n = pmat.shape[0]
    ncmt = model.pk_compartments
    if ncmt is None:
        z = np.zeros((*lead, 0))
        return z, z.copy(), np.zeros((*lead, 0, 0)), np.zeros((*lead, 0, 0))

    def col(name: str) -> np.ndarray:
        return pmat[:, lay.param_index(name)]

    # patients with unusable PK parameters get a harmless stand-in here and are
    # reported as invalid by run_kernel (they must not break the whole batch)
    names = ["CL", "V1", "KA"] + [
        x for pair in (("Q2", "V2"), ("Q3", "V3"))[: ncmt - 1] for x in pair
    ]
    usable = np.ones(n, dtype=bool)
    for name in names:
        values = col(name)
        usable &= np.isfinite(values) & (values > 0)

    def col_ok(name: str) -> np.ndarray:
        return np.where(usable, col(name), 1.0)

    cl, v1, ka = col_ok("CL"), col_ok("V1"), col_ok("KA").copy()
    size = ncmt + 1
    a = np.zeros((n, size, size))
    # depot 0, central 1, peripherals 2..
    a[:, 1, 1] = -cl / v1
    for j, (qname, vname) in enumerate([("Q2", "V2"), ("Q3", "V3")][: ncmt - 1], start=2):
        qq, vv = col_ok(qname), col_ok(vname)
        a[:, 1, 1] -= qq / v1
        a[:, 1, j] = qq / vv
        a[:, j, 1] = qq / v1
        a[:, j, j] = -qq / vv
    disp = np.linalg.eigvals(a[:, 1:, 1:]).real
    gap = np.abs(disp + ka[:, None]) <= EIGEN_GAP * ka[:, None]
    if gap.any():
        ka = np.where(gap.any(axis=1), ka * (1.0 + 4 * EIGEN_GAP), ka)
    a[:, 0, 0] = -ka
    a[:, 1, 0] = ka
    lam, vec = np.linalg.eig(a)
    if np.abs(lam.imag).max(initial=0.0) > 0 or np.abs(vec.imag).max(initial=0.0) > 0:
        raise VtrialError("non-real PK eigenvalues: check the compartment parameters")
    lam = np.ascontiguousarray(lam.real)
    vec = vec.real
    vinv = np.linalg.inv(vec)
    cmode = vec[:, 1, :] / v1[:, None]
    lam[~usable] = np.nan  # flags the patient as invalid in run_kernel
    m = lam.shape[1]
    return (
        np.ascontiguousarray(lam.reshape(*lead, m)),
        np.ascontiguousarray(cmode.reshape(*lead, m)),
        np.ascontiguousarray(vinv.reshape(*lead, m, m)),
        np.ascontiguousarray(vec.reshape(*lead, m, m)),
    )


def _method_code(model: Model, tol: Tolerances) -> int:
    if tol.method == "rosenbrock23" or (tol.method == "auto" and model.solver == "stiff"):
        return int(Method.ROSENBROCK23)
    return int(Method.DOPRI5)


def run_kernel(
    model: Model,
    params: Mapping[str, Any],
    *,
    n: int,
    events: EventTable,
    arm: np.ndarray,
    dose_scale: np.ndarray,
    grid: np.ndarray,
    store_times: np.ndarray | None = None,
    store_outputs: Sequence[str] = (),
    probe_times: Sequence[float] = (),
    monitors: Sequence[Monitor] = (),
    tolerances: Tolerances | None = None,
    threads: int | None = None,
    store_dtype: type = np.float32,
    rules: RuleProgram | None = None,
    adherence: tuple[np.ndarray, np.ndarray] | None = None,
    assay: np.ndarray | None = None,
    ledger: bool = False,
    n_obs: int = 0,
    outputs_at_dose: str = "before",
) -> KernelResult:
    """Simulate ``n`` patients through the compiled kernel.

    Parameters
    ----------
    model : Model
        Composed model.
    params : mapping
        Parameter name -> scalar, array of shape (n,), or array of shape
        (n, events.n_occ) for a parameter that varies by occasion; missing ones take
        the model's typical value.
    n : int
        Number of patients.
    events : EventTable
        Per-arm dose events (:func:`vtrial.protocol.dosing.event_table`).
    arm : ndarray of int, shape (n,)
        Row of ``events`` for each patient.
    dose_scale : ndarray, shape (n, 3)
        Dose multipliers for ``mg``, ``mg/kg`` and ``mg/m2`` doses (1, weight, BSA).
    grid : ndarray, shape (G,)
        Sorted evaluation times (h); the simulation runs from ``grid[0]`` to ``grid[-1]``.
        Minima, maxima, probes and monitors are evaluated on this grid.
    store_times : ndarray, optional
        Subset of ``grid`` at which ``store_outputs`` are stored (float32).
    probe_times : sequence of float
        Times (members of ``grid``) at which all outputs are recorded.
    monitors : sequence of Monitor
        Threshold crossings to time.
    tolerances : Tolerances, optional
    threads : int, optional
        Threads for this call, each running slices of the patients (default:
        numba's thread count, ``NUMBA_NUM_THREADS``).
    store_dtype : type
        dtype of the stored time courses (float32 for files, float64 for the API).
    rules : RuleProgram, optional
        Dose-modification rules (:func:`vtrial.protocol.rules.rule_program`); ``events`` must
        hold their decision times.
    adherence : (ndarray, ndarray), optional
        Per-patient dose multipliers and time jitter, shape (n, events.n_slots) each
        (:func:`vtrial.protocol.rules.adherence_arrays`).
    assay : ndarray, optional
        Assay errors (standard normals times each measured output's sd, see
        :func:`vtrial.protocol.rules.assay_normals`), shape (n, K, n_measured).
    ledger : bool
        Return the dose ledger and the per-patient dose summary.
    n_obs : int
        Rows of :attr:`KernelResult.obs` per patient: the observation events of
        ``events`` (kind ``OBS``) carry their row (< ``n_obs``) as amount.
    outputs_at_dose : {"before", "after"}
        Whether a grid point at the time of a dose (or any event) is taken before the
        events at that time (mrgsolve's default, vtrial's) or after them (as NONMEM
        reads an observation record that follows its dose record).

    Returns
    -------
    KernelResult
    """
    if n < 0:
        raise ValueError(f"n: must be >= 0, got {n}")
    if outputs_at_dose not in OUTPUTS_AT_DOSE:
        raise ValueError(
            f"outputs_at_dose: must be one of {OUTPUTS_AT_DOSE}, got {outputs_at_dose!r}"
        )
    grid = np.ascontiguousarray(grid, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 2 or np.any(np.diff(grid) <= 0):
        raise ValueError("grid: must be a strictly increasing 1-D array of >= 2 times")
    tol = tolerances or Tolerances()
    lay = layout(model)
    pmat = parameter_matrix(model, lay, params, n, events.n_occ)
    y0 = initial_states(model, lay, pmat)
    lam, cmode, vinv, vec = pk_modes(model, lay, pmat)
    arm = np.ascontiguousarray(arm, dtype=np.int64)
    dose_scale = np.ascontiguousarray(dose_scale, dtype=np.float64)
    if arm.shape != (n,) or dose_scale.shape != (n, 3):
        raise ValueError(f"arm/dose_scale: shapes must be ({n},) and ({n}, 3)")
    if np.any(events.ss[:, 0] > 0) and model.pk_compartments is None:
        raise ValueError("a steady-state start needs a model with a linear PK macro")
    valid = np.arange(events.kind.shape[1]) < events.n[:, None]
    used = {int(k) for k in np.unique(events.kind[valid])}
    na = events.n.size
    ss_ev = events.ss_events if events.ss_events is not None else np.zeros((na, 1, SS_COLUMNS))
    # a regimen infuses into the central compartment (1) only
    ev_cmt = events.cmt if events.cmt is not None else np.where(events.kind == EventKind.RATE, 1, 0)
    rows = events.amount[valid & (events.kind == EventKind.OBS)]
    if rows.size and not (
        np.all(rows == np.floor(rows)) and rows.min() >= 0 and rows.max() < n_obs
    ):
        raise ValueError(f"events: an observation event's row must be an integer in [0, {n_obs})")
    routes = model.routes()
    for kind, route in (
        (EventKind.ORAL, "oral"),
        (EventKind.BOLUS, "iv_bolus"),
        (EventKind.RATE, "iv_infusion"),
    ):
        if kind in used and route not in routes:
            raise ValueError(
                f"regimen: the model takes {list(routes) or 'no'} doses, got a {route} dose "
                "(give the model a PK macro or a dosing section for that route)"
            )

    def positions(times: Sequence[float] | np.ndarray | None) -> tuple[np.ndarray, int]:
        pos = np.full(grid.size, -1, dtype=np.int64)
        if times is None:
            return pos, 0
        idx = np.searchsorted(grid, np.asarray(times, dtype=np.float64))
        ok = (idx < grid.size) & (grid[np.minimum(idx, grid.size - 1)] == np.asarray(times))
        if not np.all(ok):
            raise ValueError("store/probe times must be members of the evaluation grid")
        pos[idx] = np.arange(idx.size)
        return pos, idx.size

    store_pos, n_store = positions(store_times)
    probe_pos, n_probe = positions(list(probe_times))
    outs = lay.output_names
    store_out = np.array([outs.index(o) for o in store_outputs], dtype=np.int64)
    mon_out = np.array([outs.index(m.output) for m in monitors], dtype=np.int64)
    mon_thr = np.array([m.threshold for m in monitors], dtype=np.float64)
    mon_dir = np.array([m.direction for m in monitors], dtype=np.int64)
    no = len(outs)
    # states integrated on the log scale need positive initial values
    pos_cols = [i for i, s in enumerate(lay.state_names) if model.states[s].positive]
    bad = np.zeros(n, dtype=bool)
    if pos_cols:
        bad |= ~(y0[:, pos_cols] > 0).all(axis=1)
    bad |= ~np.isfinite(pmat).all(axis=(1, 2)) | ~np.isfinite(y0).all(axis=1)
    bad |= ~np.isfinite(lam).all(axis=(1, 2)) | ~np.isfinite(cmode).all(axis=(1, 2))
    bad |= ~np.isfinite(vinv).all(axis=(1, 2, 3)) | ~np.isfinite(vec).all(axis=(1, 2, 3))
    run = np.flatnonzero(~bad)
    n_out = (n_probe, len(monitors), n_store, len(store_out), int(n_obs))
    # n_slots is 0 unless a ledger is asked for or adherence needs the slots; patients
    # not simulated (invalid parameters) have no dose given: unknown times and amounts
    n_slots = max(events.n_slots, 1) if (ledger or adherence is not None) else 0
    led = np.zeros((n, n_slots, 4))
    dsum = np.zeros((n, 5 if ledger else 0))
    led[bad] = (np.nan, np.nan, np.nan, Reason.NOT_REACHED)
    dsum[bad] = np.nan

    if not bad.any():
        # the kernel writes every element of its outputs: no fill, no copy
        res = _result(n, no, n_out, np.float64, np.empty)
        sub = res
    else:
        res = _result(n, no, n_out, np.float64, _nan_full)
        res.status[bad] = Status.INVALID_INITIAL
        if run.size == 0:
            res.store = res.store.astype(store_dtype)
            if ledger:
                res.ledger, res.dose_summary = led, dsum
            return res
        sub = _result(run.size, no, n_out, np.float64, np.empty)
    if rules is not None:
        levels, start_level, rule_par = rules.levels, rules.start_level, rules.params
    else:
        levels, start_level = np.full((na, 1), np.nan), np.full(na, -1, dtype=np.int64)
        rule_par = np.zeros((na, 1, 4))
    if adherence is not None:
        adh, jit = (np.ascontiguousarray(x, dtype=np.float64) for x in adherence)
        if adh.shape != (n, n_slots) or jit.shape != (n, n_slots):
            raise ValueError(f"adherence: arrays must have shape ({n}, {n_slots})")
    else:
        adh = jit = np.zeros((n, 0))
    eps = np.zeros((n, 1, 0)) if assay is None else np.ascontiguousarray(assay, dtype=np.float64)
    kern = load_kernel(
        model,
        rules.source if rules is not None else None,
        records=events.cmt is not None
        or bool(used & {EventKind.OBS, EventKind.RESET, EventKind.SS, EventKind.INTO}),
        grid_after=outputs_at_dose == "after",
    )
    sub_led = led if sub is res else np.ascontiguousarray(led[run])
    sub_dsum = dsum if sub is res else np.ascontiguousarray(dsum[run])
    # by name: kernel_args orders them as simulate_batch declares them and checks each
    values = {
        "pmat": np.ascontiguousarray(pmat[run]),
        "y0": np.ascontiguousarray(y0[run]),
        "arm": arm[run],
        "dose_scale": dose_scale[run],
        "lam_all": lam[run],
        "cm_all": cmode[run],
        "vinv_all": vinv[run],
        "vec_all": vec[run],
        "ev_time": events.time,
        "ev_amt": events.amount,
        "ev_kind": events.kind,
        "ev_unit": events.unit,
        "ev_n": events.n,
        "ss_spec": events.ss,
        "ss_unit": events.ss_unit,
        "tlag_idx": lay.param_index("TLAG") if model.takes_doses else -1,
        "f_idx": lay.param_index("F") if model.takes_doses else -1,
        "ev_slot": np.ascontiguousarray(events.slot, dtype=np.int64),
        "ev_pair": np.ascontiguousarray(events.pair, dtype=np.int64),
        "ss_ev": np.ascontiguousarray(ss_ev, dtype=np.float64),
        "ev_cmt": np.ascontiguousarray(ev_cmt, dtype=np.int64),
        "levels": np.ascontiguousarray(levels, dtype=np.float64),
        "start_level": np.ascontiguousarray(start_level, dtype=np.int64),
        "rule_par": np.ascontiguousarray(rule_par, dtype=np.float64),
        "adh": np.ascontiguousarray(adh[run]),
        "jit": np.ascontiguousarray(jit[run]),
        "meas_eps": np.ascontiguousarray(eps[run]),
        "t_grid": grid,
        "store_pos": store_pos,
        "store_out": store_out,
        "probe_pos": probe_pos,
        "mon_out": mon_out,
        "mon_thr": mon_thr,
        "mon_dir": mon_dir,
        "rtol": float(tol.rtol),
        "atol": float(tol.atol),
        "max_steps": int(tol.max_steps),
        "h_max": float(tol.h_max),
        "method0": _method_code(model, tol),
        "status": sub.status,
        "nsteps": sub.nsteps,
        "omin": sub.omin,
        "omax": sub.omax,
        "targmin": sub.tmin,
        "targmax": sub.tmax,
        "probes": sub.probes,
        "cross": sub.cross,
        "store": sub.store,
        "obs": sub.obs,
        "pk_metrics": sub.pk,
        "ledger": sub_led,
        "dsum": sub_dsum,
        "method_used": sub.method,
    }
    dims = {"n": run.size, "P": len(lay.param_names), "S": len(lay.state_names), "O": no}
    args = kernel_args(values, dims)
    _call_kernel(kern, args, run.size, threads, model)
    if sub is not res:
        names = (
            "status",
            "nsteps",
            "omin",
            "omax",
            "tmin",
            "tmax",
            "probes",
            "cross",
            "store",
            "obs",
        )
        for name in (*names, "method", "pk"):
            getattr(res, name)[run] = getattr(sub, name)
        led[run] = sub_led
        dsum[run] = sub_dsum
    if ledger:
        res.ledger = led
        res.dose_summary = dsum
    # the kernel always stores float64 (one compiled specialisation per model whatever
    # the caller wants); files keep float32
    if res.store.dtype != store_dtype:
        res.store = res.store.astype(store_dtype)
    return res


#: positions (in KERNEL_ARGS order) of the arguments with one row per patient
_PER_PATIENT = tuple(k for k, a in enumerate(KERNEL_ARGS) if a.shape[:1] == ("n",))


def _patient_slices(n: int, threads: int) -> list[tuple[int, int]]:
    """Contiguous slices of ``n`` patients: about four per thread, so a slow slice
    (patients with many steps) does not leave the other threads idle."""
    size = max(1, -(-n // (4 * threads)))
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def _call_kernel(kern: Any, args: Sequence[Any], n: int, threads: int | None, model: Model) -> None:
    """Run ``simulate_batch`` over slices of the patients on ``threads`` threads.

    The kernel releases the GIL and each patient writes only its own rows, so
    slices run concurrently give the same bits as one call. ``threads``: default
    numba's thread count (``NUMBA_NUM_THREADS``, :func:`numba.set_num_threads`).
    The first call in a process compiles the kernel (or loads it from the cache):
    it runs alone, inside a :class:`~vtrial.infra.progress.Heartbeat`.
    """
    limit = int(getattr(numba.config, "NUMBA_NUM_THREADS", 1))
    k = numba.get_num_threads() if threads is None else max(1, min(int(threads), limit))
    slices = _patient_slices(n, k) if n > 0 and k > 1 else [(0, n)]

    def call(bounds: tuple[int, int]) -> None:
        a, b = bounds
        part = list(args)
        for pos in _PER_PATIENT:
            part[pos] = part[pos][a:b]
        kern.simulate_batch(*part)

    # a numba dispatcher lists the signatures compiled or loaded in this process
    if not getattr(kern.simulate_batch, "signatures", True):
        with Heartbeat(
            f"kernel of model {'+'.join(c.name for c in model.components)}: "
            "compiling on first use, or loading it from the kernel cache",
            logger=_log,
        ):
            call(slices[0])
        slices = slices[1:]
    if k == 1 or len(slices) <= 1:
        for bounds in slices:
            call(bounds)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=k, thread_name_prefix="vtrial-kernel") as pool:
        for _ in pool.map(call, slices):  # re-raises a slice's exception
            pass


def _nan_full(shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
    return np.full(shape, np.nan, dtype=dtype)


def _result(
    n: int, no: int, n_out: tuple[int, int, int, int, int], store_dtype: Any, alloc: Any
) -> KernelResult:
    """Result arrays for ``n`` patients; ``alloc`` is ``np.empty`` or a NaN fill."""
    n_probe, n_mon, n_store, n_store_out, n_obs = n_out
    return KernelResult(
        status=np.zeros(n, dtype=np.int8),
        nsteps=np.zeros(n, dtype=np.int32),
        omin=alloc((n, no)),
        omax=alloc((n, no)),
        tmin=alloc((n, no)),
        tmax=alloc((n, no)),
        probes=alloc((n, n_probe, no)),
        cross=alloc((n, n_mon)),
        store=alloc((n, n_store, n_store_out), dtype=store_dtype),
        pk=alloc((n, 4)),
        method=np.zeros(n, dtype=np.int8),
        obs=alloc((n, n_obs, no)),
    )
