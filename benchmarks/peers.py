"""Peer engines on the benchmark workload (same patients, same ODE system, same outputs).

Each engine has ``name``, ``setting`` (a one-line description of how it runs),
``run(params) -> workload.Outputs`` and ``close()``. The constructors import their
optional dependency and raise ``ImportError`` when it is missing; ``run.py`` reports
such an engine as unavailable.

- ``lsoda``: scipy ``solve_ivp(method="LSODA")``, one patient at a time in Python,
  dose to dose, over a ``ProcessPoolExecutor`` of 2 processes.
- ``rk45``: scipy ``solve_ivp(method="RK45")`` on all patients stacked into one
  system with a vectorised numpy right-hand side (one solve per dose interval).
- ``roadrunner``: libroadrunner (CVODE) on an SBML model written here (rate rules),
  dose to dose (the depot amount is set between ``simulate`` calls), one patient at a
  time, over a ``ProcessPoolExecutor`` of 2 processes.
- ``numbalsoda``: numbalsoda's ``lsoda`` with a numba ``cfunc`` right-hand side,
  called per patient inside a ``numba.njit(parallel=True)`` ``prange`` loop.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import numpy as np
import workload as W

_V1 = W.PVEC.index("V1")
_F = W.PVEC.index("F")


def _chunks(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous index ranges covering ``range(n)`` (none empty)."""
    edges = np.linspace(0, n, min(parts, max(n, 1)) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


def _pool(workers: int) -> ProcessPoolExecutor:
    # spawn, not fork: the parent may already run numba or other threads
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"))


# ---------------------------------------------------------------------------
# scipy LSODA, per patient, 2 processes
# ---------------------------------------------------------------------------
Chunk = tuple[np.ndarray, np.ndarray, np.ndarray]


def _gather(parts: list[Chunk], v1: np.ndarray) -> W.Outputs:
    """Outputs from the (hourly KEEP states, AUC, success) of consecutive chunks."""
    hourly, auc, ok = (np.concatenate([p[j] for p in parts]) for j in range(3))
    return W.outputs_from_states(hourly, auc, v1, ok)


def _lsoda_chunk(pm: np.ndarray, rtol: float, atol: float) -> Chunk:
    """Hourly KEEP states (k, 2, G), AUC (k,) and success flags of a chunk of patients."""
    from scipy.integrate import solve_ivp

    k = pm.shape[0]
    keep = list(W.KEEP)
    out = np.empty((k, len(keep), W.GRID.size))
    auc = np.full(k, np.nan)
    ok = np.ones(k, dtype=bool)
    for i in range(k):
        p = tuple(float(x) for x in pm[i])
        y = W.initial_state(p)
        out[i, :, 0] = y[keep]
        dose = W.DOSE * p[_F]
        for t0, t1 in W.SEGMENTS:
            y = y.copy()
            y[0] += dose
            i0, i1 = int(t0) + 1, int(t1) + 1
            sol = solve_ivp(
                W.rhs,
                (t0, t1),
                y,
                method="LSODA",
                t_eval=W.GRID[i0:i1],
                rtol=rtol,
                atol=atol,
                args=(p,),
            )
            if sol.status != 0 or sol.y.shape[1] != i1 - i0:
                ok[i] = False
                out[i, :, i0:] = np.nan
                break
            out[i, :, i0:i1] = sol.y[keep]
            y = sol.y[:, -1]
        else:
            auc[i] = y[8]
    return out, auc, ok


class LsodaEngine:
    """scipy ``solve_ivp(method="LSODA")`` per patient over a process pool."""

    name = "lsoda"

    def __init__(self, rtol: float = 3e-6, atol: float = 3e-8, workers: int = 2):
        import scipy  # noqa: F401 - availability check

        self.rtol, self.atol, self.workers = rtol, atol, workers
        self.pool = _pool(workers)
        self.setting = f"rtol={rtol:g} atol={atol:g}, {workers} processes"

    def run(self, params: Mapping[str, np.ndarray]) -> W.Outputs:
        pm = W.param_matrix(params)
        # a few chunks per process balance patients of unequal cost
        parts = _chunks(pm.shape[0], 4 * self.workers)
        futs = [self.pool.submit(_lsoda_chunk, pm[a:b], self.rtol, self.atol) for a, b in parts]
        return _gather([f.result() for f in futs], pm[:, _V1])

    def close(self) -> None:
        self.pool.shutdown()


# ---------------------------------------------------------------------------
# scipy RK45, all patients stacked into one system
# ---------------------------------------------------------------------------
class Rk45StackedEngine:
    """scipy ``solve_ivp(method="RK45")`` on the stacked system of the whole batch.

    The step size is shared by every patient and the error norm is the RMS over all
    ``9 n`` components, so per-patient errors are diluted: the tolerance needed for a
    given worst error tightens as the batch grows.
    """

    name = "rk45"

    def __init__(self, rtol: float = 1e-5, atol: float = 1e-7):
        import scipy  # noqa: F401 - availability check

        self.rtol, self.atol = rtol, atol
        self.setting = f"rtol={rtol:g} atol={atol:g}, 1 process, stacked"

    def run(self, params: Mapping[str, np.ndarray]) -> W.Outputs:
        pm = W.param_matrix(params)
        n = pm.shape[0]
        y = np.zeros((W.NSTATE, n))
        y[3:8] = np.log(pm[:, W.PVEC.index("CIRC0")])
        hourly = np.empty((len(W.KEEP), n, W.GRID.size))
        hourly[:, :, 0] = y[list(W.KEEP)]
        dose = W.DOSE * pm[:, _F]

        def fun(t: float, yflat: np.ndarray) -> np.ndarray:
            return W.rhs_batch(yflat.reshape(W.NSTATE, n), pm).ravel()

        # trial stages of a too-long step can overflow exp for some patient; the step
        # is then rejected (non-finite error estimate) and retried shorter
        with np.errstate(over="ignore", invalid="ignore"):
            y = self._segments(fun, y, dose, hourly)
        ok = np.full(n, np.isfinite(y).all(), dtype=bool)
        return W.outputs_from_states(hourly.transpose(1, 0, 2), y[8], pm[:, _V1], ok)

    def _segments(
        self, fun: Any, y: np.ndarray, dose: np.ndarray, hourly: np.ndarray
    ) -> np.ndarray:
        """Integrate dose to dose, filling ``hourly`` (2, n, G); final state (NaN on failure)."""
        from scipy.integrate import solve_ivp

        n = y.shape[1]
        keep = list(W.KEEP)
        for t0, t1 in W.SEGMENTS:
            y = y.copy()
            y[0] += dose
            i0, i1 = int(t0) + 1, int(t1) + 1
            sol = solve_ivp(
                fun,
                (t0, t1),
                y.ravel(),
                method="RK45",
                t_eval=W.GRID[i0:i1],
                rtol=self.rtol,
                atol=self.atol,
            )
            if sol.status != 0 or sol.y.shape[1] != i1 - i0:
                hourly[:, :, i0:] = np.nan
                return np.full_like(y, np.nan)
            hourly[:, :, i0:i1] = sol.y.reshape(W.NSTATE, n, i1 - i0)[keep]
            y = sol.y[:, -1].reshape(W.NSTATE, n)
        return y

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------
# libroadrunner, per patient, 2 processes
# ---------------------------------------------------------------------------
def _ci(name: str) -> str:
    return f"<ci>{name}</ci>"


def _cn(value: float) -> str:
    return f"<cn>{value!r}</cn>"


def _apply(op: str, *args: str) -> str:
    return f"<apply><{op}/>{''.join(args)}</apply>"


def sbml_model() -> str:
    """SBML Level 3 text of the workload's ODE system (rate rules on parameters).

    Same states as :data:`workload.STATES`; ``CP`` and ``CIRC`` are assignment rules.
    """
    ka, cl, v1, q2, v2, ktr = (_ci(x) for x in ("KA", "CL", "V1", "Q2", "V2", "KTR"))
    a0, a1, a2 = _ci("A_DEPOT"), _ci("A_CENT"), _ci("A_PERI")
    one = _cn(1.0)

    def transit(src: str, dst: str) -> str:  # KTR * (exp(src - dst) - 1)
        return _apply("times", ktr, _apply("minus", _apply("exp", _apply("minus", src, dst)), one))

    rates = {
        "A_DEPOT": _apply("minus", _apply("times", ka, a0)),
        "A_CENT": _apply(
            "plus",
            _apply("times", ka, a0),
            _apply("minus", _apply("times", _apply("divide", _apply("plus", cl, q2), v1), a1)),
            _apply("times", _apply("divide", q2, v2), a2),
        ),
        "A_PERI": _apply(
            "minus",
            _apply("times", _apply("divide", q2, v1), a1),
            _apply("times", _apply("divide", q2, v2), a2),
        ),
        "log_PROL": _apply(
            "times",
            ktr,
            _apply(
                "minus",
                _apply(
                    "times",
                    _apply("minus", one, _apply("times", _ci("SLOPE"), _ci("CP"))),
                    _apply(
                        "exp",
                        _apply(
                            "times",
                            _ci("GAMMA"),
                            _apply("minus", _apply("ln", _ci("CIRC0")), _ci("log_CIRC")),
                        ),
                    ),
                ),
                one,
            ),
        ),
        "log_TRANSIT1": transit(_ci("log_PROL"), _ci("log_TRANSIT1")),
        "log_TRANSIT2": transit(_ci("log_TRANSIT1"), _ci("log_TRANSIT2")),
        "log_TRANSIT3": transit(_ci("log_TRANSIT2"), _ci("log_TRANSIT3")),
        "log_CIRC": transit(_ci("log_TRANSIT3"), _ci("log_CIRC")),
        "AUC": _ci("CP"),
    }
    assigns = {"CP": _apply("divide", a1, v1), "CIRC": _apply("exp", _ci("log_CIRC"))}
    math_ns = 'xmlns="http://www.w3.org/1998/Math/MathML"'
    params = [
        f'<parameter id="{k}" value="{W.TYPICAL.get(k, 0.04)!r}" constant="false"/>'
        for k in ("KA", "CL", "V1", "Q2", "V2", "KTR", "SLOPE", "CIRC0", "GAMMA")
    ]
    params += [f'<parameter id="{s}" value="0.0" constant="false"/>' for s in W.STATES]
    params += [f'<parameter id="{s}" value="0.0" constant="false"/>' for s in assigns]
    rules = [
        f'<assignmentRule variable="{k}"><math {math_ns}>{v}</math></assignmentRule>'
        for k, v in assigns.items()
    ]
    rules += [
        f'<rateRule variable="{k}"><math {math_ns}>{v}</math></rateRule>' for k, v in rates.items()
    ]
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<sbml xmlns="http://www.sbml.org/sbml/level3/version2/core" level="3" version="2">\n'
        '<model id="pk2cmt_friberg">\n'
        f"<listOfParameters>\n{chr(10).join(params)}\n</listOfParameters>\n"
        f"<listOfRules>\n{chr(10).join(rules)}\n</listOfRules>\n"
        "</model>\n</sbml>\n"
    )


_RR: Any = None  # one RoadRunner per worker process


def _rr_init(rtol: float, atol: float, stiff: bool) -> None:
    global _RR
    import roadrunner

    rr = roadrunner.RoadRunner(sbml_model())
    rr.integrator.relative_tolerance = rtol
    rr.integrator.absolute_tolerance = atol
    rr.integrator.stiff = stiff
    rr.integrator.maximum_num_steps = 100_000
    rr.integrator.variable_step_size = False
    rr.timeCourseSelections = [W.STATES[j] for j in W.KEEP]
    _RR = rr


_RR_PARAMS = ("KA", "CL", "V1", "Q2", "V2", "KTR", "SLOPE", "CIRC0", "GAMMA")


def _rr_chunk(pm: np.ndarray) -> Chunk:
    """Hourly KEEP states (k, 2, G), AUC (k,) and success flags of a chunk of patients."""
    rr = _RR
    k = pm.shape[0]
    keep = list(W.KEEP)
    out = np.full((k, len(keep), W.GRID.size), np.nan)
    auc = np.full(k, np.nan)
    ok = np.ones(k, dtype=bool)
    cols = [W.PVEC.index(name) for name in _RR_PARAMS]
    for i in range(k):
        p = pm[i]
        for name, c in zip(_RR_PARAMS, cols, strict=True):
            rr[name] = float(p[c])
        y0 = W.initial_state(p)
        for s, v in zip(W.STATES, y0, strict=True):
            rr[s] = float(v)
        out[i, :, 0] = y0[keep]
        dose = W.DOSE * float(p[_F])
        try:
            for t0, t1 in W.SEGMENTS:
                rr["A_DEPOT"] = rr["A_DEPOT"] + dose
                i0, i1 = int(t0), int(t1) + 1
                res = rr.simulate(t0, t1, i1 - i0)
                out[i, :, i0 + 1 : i1] = np.asarray(res)[1:].T
            auc[i] = rr["AUC"]
        except RuntimeError:
            ok[i] = False
    return out, auc, ok


class RoadrunnerEngine:
    """libroadrunner (CVODE) per patient over a process pool."""

    name = "roadrunner"

    def __init__(
        self, rtol: float = 3e-6, atol: float = 3e-8, stiff: bool = False, workers: int = 2
    ):
        import roadrunner  # noqa: F401 - availability check

        self.workers = workers
        self.pool = ProcessPoolExecutor(
            workers,
            mp_context=get_context("spawn"),
            initializer=_rr_init,
            initargs=(rtol, atol, stiff),
        )
        method = "BDF" if stiff else "Adams"
        self.setting = f"CVODE {method} rtol={rtol:g} atol={atol:g}, {workers} processes"

    def run(self, params: Mapping[str, np.ndarray]) -> W.Outputs:
        pm = W.param_matrix(params)
        parts = _chunks(pm.shape[0], 4 * self.workers)
        futs = [self.pool.submit(_rr_chunk, pm[a:b]) for a, b in parts]
        return _gather([f.result() for f in futs], pm[:, _V1])

    def close(self) -> None:
        self.pool.shutdown()


# ---------------------------------------------------------------------------
# numbalsoda, per patient inside numba prange
# ---------------------------------------------------------------------------
def _numbalsoda_kernel() -> tuple[Any, int]:
    """Compile the cfunc right-hand side and the parallel driver (no disk cache)."""
    import math

    import numba
    from numbalsoda import lsoda, lsoda_sig

    nstate = W.NSTATE
    npar = len(W.PVEC)

    @numba.cfunc(lsoda_sig)
    def rhs(t, u_, du_, p_):  # pragma: no cover - compiled
        u = numba.carray(u_, (nstate,))
        du = numba.carray(du_, (nstate,))
        p = numba.carray(p_, (npar,))
        ka, cl, v1, q2, v2 = p[0], p[1], p[2], p[3], p[4]
        ktr, slope, circ0, gamma = p[5], p[6], p[7], p[8]
        cp = u[1] / v1
        du[0] = -ka * u[0]
        du[1] = ka * u[0] - (cl + q2) / v1 * u[1] + q2 / v2 * u[2]
        du[2] = q2 / v1 * u[1] - q2 / v2 * u[2]
        du[3] = ktr * ((1.0 - slope * cp) * math.exp(gamma * (math.log(circ0) - u[7])) - 1.0)
        du[4] = ktr * (math.exp(u[3] - u[4]) - 1.0)
        du[5] = ktr * (math.exp(u[4] - u[5]) - 1.0)
        du[6] = ktr * (math.exp(u[5] - u[6]) - 1.0)
        du[7] = ktr * (math.exp(u[6] - u[7]) - 1.0)
        du[8] = cp

    seg = np.array([a for a, _ in W.SEGMENTS] + [W.T_END])
    grid = W.GRID.copy()
    dose_amt = W.DOSE
    i_circ0 = W.PVEC.index("CIRC0")
    i_f = _F
    keep = np.array(W.KEEP)
    i_auc = W.STATES.index("AUC")

    @numba.njit(parallel=True)
    def batch(funcptr, pm, rtol, atol, out, auc, ok):  # pragma: no cover - compiled
        n = pm.shape[0]
        for i in numba.prange(n):
            p = pm[i].copy()
            u = np.zeros(nstate)
            for s in range(3, 8):
                u[s] = math.log(p[i_circ0])
            for s in range(keep.shape[0]):
                out[i, s, 0] = u[keep[s]]
            for j in range(seg.shape[0] - 1):
                u[0] += dose_amt * p[i_f]
                i0 = int(seg[j])
                i1 = int(seg[j + 1]) + 1
                usol, success = lsoda(funcptr, u, grid[i0:i1], data=p, rtol=rtol, atol=atol)
                if not success:
                    ok[i] = False
                    break
                for r in range(1, i1 - i0):
                    for s in range(keep.shape[0]):
                        out[i, s, i0 + r] = usol[r, keep[s]]
                for s in range(nstate):
                    u[s] = usol[i1 - i0 - 1, s]
            if ok[i]:
                auc[i] = u[i_auc]

    return batch, rhs.address


class NumbalsodaEngine:
    """numbalsoda ``lsoda`` (cfunc RHS) per patient in a numba ``prange`` loop."""

    name = "numbalsoda"

    def __init__(self, rtol: float = 3e-6, atol: float = 3e-8, threads: int = 2):
        import numba
        import numbalsoda  # noqa: F401 - availability check

        self.rtol, self.atol = rtol, atol
        self.threads = max(1, min(threads, int(numba.config.NUMBA_NUM_THREADS)))
        self.batch, self.funcptr = _numbalsoda_kernel()
        self.setting = f"rtol={rtol:g} atol={atol:g}, {self.threads} threads"

    def run(self, params: Mapping[str, np.ndarray]) -> W.Outputs:
        import numba

        pm = W.param_matrix(params)
        n = pm.shape[0]
        out = np.full((n, len(W.KEEP), W.GRID.size), np.nan)
        auc = np.full(n, np.nan)
        ok = np.ones(n, dtype=bool)
        numba.set_num_threads(self.threads)
        self.batch(self.funcptr, pm, self.rtol, self.atol, out, auc, ok)
        return W.outputs_from_states(out, auc, pm[:, _V1], ok)

    def close(self) -> None:
        pass


ENGINES: dict[str, type] = {
    "lsoda": LsodaEngine,
    "rk45": Rk45StackedEngine,
    "roadrunner": RoadrunnerEngine,
    "numbalsoda": NumbalsodaEngine,
}


def make(name: str, options: Sequence[float] | None = None) -> Any:
    """Construct peer ``name`` (``options``: rtol, atol); ImportError if unavailable."""
    cls = ENGINES[name]
    if options:
        return cls(*options)
    return cls()
