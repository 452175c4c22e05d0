"""The reference workload of the benchmark, its accurate reference solution and errors.

Workload (the project's benchmark issue): two-compartment oral PK driving the Friberg
myelosuppression model, 100 mg orally every 24 h for 21 doses, hourly output of CP
and circulating neutrophils (Circ) over 0-1008 h, log-normal inter-individual
variability (omega^2 = 0.09) on KA, CL, V1, MTT and SLOPE; per patient Cmax,
AUC(0-1008 h) and the nadir of Circ on the hourly grid.

Every peer solves the same ODE system (:data:`STATES`): the three PK amounts as ODEs
(depot, central, peripheral), the five Friberg states on the log scale, and the running
AUC (dAUC/dt = CP); doses are applied between integrations, dose to dose. vtrial solves
its own model (exact PK, the Friberg states declared ``positive``, i.e. also on the log
scale). On the linear scale, deep nadirs (below 1e-13 for some of the first 30,000
patients) cannot be resolved relative to their size, and the ``(CIRC0 / CIRC) ** GAMMA``
feedback turns NaN once a state dips below 0.
Outputs at a dose time are taken before that dose (vtrial's convention; CP and Circ
are continuous for oral doses, so the convention does not change any number here).

The reference (:func:`reference`) is scipy's DOP853 at rtol 1e-12, atol 1e-14 with
the exact Cmax located as a root of dA_central/dt (solve_ivp events).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import numpy as np

#: typical values (h, L, mg); F = 1, no lag
TYPICAL: dict[str, float] = {
    "KA": 1.0,
    "CL": 5.0,
    "V1": 50.0,
    "Q2": 10.0,
    "V2": 100.0,
    "F": 1.0,
    "CIRC0": 5.0,
    "MTT": 100.0,
    "GAMMA": 0.17,
    "SLOPE": 0.5,
}
#: parameters with log-normal inter-individual variability, and its variance
IIV: tuple[str, ...] = ("KA", "CL", "V1", "MTT", "SLOPE")
OMEGA2 = 0.09
SEED = 20261122
DOSE = 100.0  # mg, oral
INTERVAL = 24.0  # h
N_DOSES = 21
T_END = 1008.0  # h
GRID = np.arange(0.0, T_END + 1.0)  # hourly output times, 1009 points
DOSE_TIMES = INTERVAL * np.arange(N_DOSES, dtype=np.float64)
#: integration segments: dose to dose, then the last dose to the end
SEGMENTS: tuple[tuple[float, float], ...] = tuple(
    (float(a), float(b)) for a, b in zip(DOSE_TIMES, [*DOSE_TIMES[1:], T_END], strict=True)
)
#: state vector of the peers and of the reference (log_* are natural logarithms)
STATES: tuple[str, ...] = (
    "A_DEPOT",
    "A_CENT",
    "A_PERI",
    "log_PROL",
    "log_TRANSIT1",
    "log_TRANSIT2",
    "log_TRANSIT3",
    "log_CIRC",
    "AUC",
)
NSTATE = len(STATES)
#: states the peers keep at every hour (central amount, log Circ); AUC only at the end
KEEP: tuple[int, int] = (1, 7)
#: per-patient constants handed to the peers' right-hand sides, in this order
PVEC: tuple[str, ...] = ("KA", "CL", "V1", "Q2", "V2", "KTR", "SLOPE", "CIRC0", "GAMMA", "F")


def patients(n: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """Parameters of the first ``n`` patients: name -> array (n,).

    Patient ``i`` is the same for every ``n`` (row ``i`` of one seeded stream of
    standard normal draws), so every engine and batch size sees the same patients.
    """
    eta = np.random.default_rng(seed).standard_normal((n, len(IIV))) * math.sqrt(OMEGA2)
    out = {k: np.full(n, v) for k, v in TYPICAL.items()}
    for j, name in enumerate(IIV):
        out[name] = TYPICAL[name] * np.exp(eta[:, j])
    return out


def param_matrix(params: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per-patient constants in :data:`PVEC` order, shape (n, len(PVEC))."""
    cols = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    cols["KTR"] = 4.0 / cols["MTT"]
    return np.ascontiguousarray(np.column_stack([cols[k] for k in PVEC]))


def initial_state(p: Sequence[float]) -> np.ndarray:
    """State at t = 0 before the first dose (all Friberg states at CIRC0)."""
    y = np.zeros(NSTATE)
    y[3:8] = math.log(p[PVEC.index("CIRC0")])
    return y


def rhs(t: float, y: Sequence[float], p: Sequence[float]) -> list[float]:
    """Right-hand side for one patient (plain floats: fastest for per-patient loops)."""
    ka, cl, v1, q2, v2, ktr, slope, circ0, gamma, _f = p
    a0, a1, a2, zp, z1, z2, z3, zc, _auc = y
    cp = a1 / v1
    return [
        -ka * a0,
        ka * a0 - (cl + q2) / v1 * a1 + q2 / v2 * a2,
        q2 / v1 * a1 - q2 / v2 * a2,
        ktr * ((1.0 - slope * cp) * math.exp(gamma * (math.log(circ0) - zc)) - 1.0),
        ktr * (math.exp(zp - z1) - 1.0),
        ktr * (math.exp(z1 - z2) - 1.0),
        ktr * (math.exp(z2 - z3) - 1.0),
        ktr * (math.exp(z3 - zc) - 1.0),
        cp,
    ]


def rhs_batch(y: np.ndarray, pm: np.ndarray) -> np.ndarray:
    """Right-hand side of many patients at once; ``y`` is (NSTATE, n), ``pm`` (n, P)."""
    ka, cl, v1, q2, v2, ktr, slope, circ0, gamma, _f = pm.T
    a0, a1, a2, zp, z1, z2, z3, zc, _auc = y
    cp = a1 / v1
    dy = np.empty_like(y)
    dy[0] = -ka * a0
    dy[1] = ka * a0 - (cl + q2) / v1 * a1 + q2 / v2 * a2
    dy[2] = q2 / v1 * a1 - q2 / v2 * a2
    dy[3] = ktr * ((1.0 - slope * cp) * np.exp(gamma * (np.log(circ0) - zc)) - 1.0)
    dy[4] = ktr * np.expm1(zp - z1)
    dy[5] = ktr * np.expm1(z1 - z2)
    dy[6] = ktr * np.expm1(z2 - z3)
    dy[7] = ktr * np.expm1(z3 - zc)
    dy[8] = cp
    return dy


@dataclass
class Outputs:
    """What an engine produces for n patients.

    ``cmax_kind`` says whether ``cmax`` is the exact maximum (``"exact"``) or the
    maximum over the hourly grid (``"grid"``); errors compare like with like.
    """

    cp: np.ndarray  # (n, G) hourly CP (mg/L)
    circ: np.ndarray  # (n, G) hourly Circ (10^9/L)
    cmax: np.ndarray  # (n,)
    auc: np.ndarray  # (n,) AUC over [0, 1008] h
    nadir: np.ndarray  # (n,) minimum of Circ on the hourly grid
    ok: np.ndarray  # (n,) bool: solver reported success
    cmax_kind: str = "grid"

    def failed(self) -> np.ndarray:
        """Patients that failed or produced a non-finite value anywhere."""
        finite = (
            np.isfinite(self.cp).all(axis=1)
            & np.isfinite(self.circ).all(axis=1)
            & np.isfinite(self.cmax)
            & np.isfinite(self.auc)
            & np.isfinite(self.nadir)
        )
        return ~(self.ok.astype(bool) & finite)

    def head(self, k: int) -> Outputs:
        """The first ``k`` patients (as float64)."""
        return Outputs(
            cp=np.asarray(self.cp[:k], dtype=np.float64),
            circ=np.asarray(self.circ[:k], dtype=np.float64),
            cmax=np.asarray(self.cmax[:k], dtype=np.float64),
            auc=np.asarray(self.auc[:k], dtype=np.float64),
            nadir=np.asarray(self.nadir[:k], dtype=np.float64),
            ok=np.asarray(self.ok[:k], dtype=bool),
            cmax_kind=self.cmax_kind,
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (for ``np.savez``)."""
        return {
            "cp": self.cp,
            "circ": self.circ,
            "cmax": self.cmax,
            "auc": self.auc,
            "nadir": self.nadir,
            "ok": self.ok,
            "cmax_kind": np.array(self.cmax_kind),
        }

    @classmethod
    def from_arrays(cls, d: Mapping[str, Any]) -> Outputs:
        """Inverse of :meth:`to_arrays`."""
        return cls(
            cp=d["cp"],
            circ=d["circ"],
            cmax=d["cmax"],
            auc=d["auc"],
            nadir=d["nadir"],
            ok=d["ok"],
            cmax_kind=str(d["cmax_kind"]),
        )


def outputs_from_states(
    hourly: np.ndarray, auc: np.ndarray, v1: np.ndarray, ok: np.ndarray | None = None
) -> Outputs:
    """Peers' outputs (grid Cmax) from hourly :data:`KEEP` states (n, 2, G) and AUC (n,)."""
    cp = hourly[:, 0, :] / np.asarray(v1)[:, None]
    circ = np.exp(hourly[:, 1, :])
    return Outputs(
        cp=cp,
        circ=circ,
        cmax=cp.max(axis=1),
        auc=np.asarray(auc, dtype=np.float64),
        nadir=circ.min(axis=1),
        ok=np.ones(cp.shape[0], dtype=bool) if ok is None else ok,
        cmax_kind="grid",
    )


# ---------------------------------------------------------------------------
# reference solution
# ---------------------------------------------------------------------------
@dataclass
class Reference:
    """Accurate solution of the first patients (DOP853, rtol 1e-12, atol 1e-14)."""

    cp: np.ndarray  # (k, G)
    circ: np.ndarray  # (k, G)
    cmax: np.ndarray  # (k,) exact (root of dA_central/dt)
    cmax_grid: np.ndarray  # (k,) on the hourly grid
    auc: np.ndarray  # (k,)
    nadir: np.ndarray  # (k,) on the hourly grid

    @property
    def size(self) -> int:
        return int(self.cmax.size)


def _dcent(t: float, y: Sequence[float], p: Sequence[float]) -> float:
    """dA_central/dt (zero at a maximum of CP)."""
    ka, cl, v1, q2, v2 = p[:5]
    return ka * y[0] - (cl + q2) / v1 * y[1] + q2 / v2 * y[2]


_dcent.direction = -1.0  # type: ignore[attr-defined]


def reference_patient(p: Sequence[float], rtol: float = 1e-12, atol: float = 1e-14) -> np.ndarray:
    """One patient's reference: row of [cp (G), circ (G), cmax, auc]."""
    from scipy.integrate import solve_ivp

    y = initial_state(p)
    v1 = p[PVEC.index("V1")]
    dose = DOSE * p[PVEC.index("F")]
    states = np.empty((NSTATE, GRID.size))
    states[:, 0] = y
    cmax = -np.inf
    for t0, t1 in SEGMENTS:
        y = y.copy()
        y[0] += dose
        i0, i1 = int(t0) + 1, int(t1) + 1
        sol = solve_ivp(
            rhs,
            (t0, t1),
            y,
            method="DOP853",
            t_eval=GRID[i0:i1],
            events=_dcent,
            rtol=rtol,
            atol=atol,
            args=(p,),
        )
        if sol.status != 0:
            raise RuntimeError(f"reference solve failed: {sol.message}")
        states[:, i0:i1] = sol.y
        y = sol.y[:, -1]
        if sol.y_events[0].size:
            cmax = max(cmax, float(sol.y_events[0][:, 1].max()) / v1)
    cp = states[1] / v1
    cmax = max(cmax, float(cp.max()))
    return np.concatenate([cp, np.exp(states[7]), [cmax, states[8, -1]]])


def reference(k: int, workers: int = 2, seed: int = SEED) -> Reference:
    """Reference solution of the first ``k`` patients (in ``workers`` processes)."""
    pm = param_matrix(patients(k, seed))
    rows_in = [tuple(map(float, row)) for row in pm]
    if workers > 1 and k > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            rows = list(pool.map(reference_patient, rows_in))
    else:
        rows = [reference_patient(r) for r in rows_in]
    a = np.array(rows)
    g = GRID.size
    cp, circ = a[:, :g], a[:, g : 2 * g]
    return Reference(
        cp=cp,
        circ=circ,
        cmax=a[:, 2 * g],
        cmax_grid=cp.max(axis=1),
        auc=a[:, 2 * g + 1],
        nadir=circ.min(axis=1),
    )


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------
ERROR_KEYS = ("cmax", "auc", "nadir", "traj")


def errors(out: Outputs, ref: Reference) -> dict[str, float]:
    """Worst relative errors of ``out`` against ``ref`` over the reference patients.

    ``cmax``, ``auc``, ``nadir``: max over patients of |x - x_ref| / |x_ref| (Cmax
    against the exact maximum or the hourly-grid maximum, per ``out.cmax_kind``).
    ``traj``: max over patients and over CP and Circ of max_t |y - y_ref| divided by
    that patient's max_t |y_ref|. ``worst``: the largest of the four. Failed patients
    are left out (they are counted apart); NaN when every patient failed.
    """
    k = ref.size
    o = out.head(k)
    good = ~o.failed()
    res: dict[str, float] = {}
    if not good.any():
        return dict.fromkeys((*ERROR_KEYS, "worst"), math.nan)
    cref = ref.cmax if o.cmax_kind == "exact" else ref.cmax_grid

    def rel(x: np.ndarray, r: np.ndarray) -> float:
        return float(np.max(np.abs(x[good] - r[good]) / np.abs(r[good])))

    res["cmax"] = rel(o.cmax, cref)
    res["auc"] = rel(o.auc, ref.auc)
    res["nadir"] = rel(o.nadir, ref.nadir)
    traj = 0.0
    for y, r in ((o.cp, ref.cp), (o.circ, ref.circ)):
        scale = np.abs(r[good]).max(axis=1)
        traj = max(traj, float(np.max(np.abs(y[good] - r[good]).max(axis=1) / scale)))
    res["traj"] = traj
    res["worst"] = max(res[key] for key in ERROR_KEYS)
    return res
