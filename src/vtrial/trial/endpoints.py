"""Trial layer of the patients table: dropout, AUEC, time to event, observed endpoints.

:class:`TrialLayer` is used by :func:`vtrial.run.chunk.simulate_patients` on each chunk of
patients, after the kernel has run. It is a pure function of the patients' rows and
kernel results (every draw is keyed, see :mod:`vtrial.infra.rng`), so its columns do not
depend on chunks, shards or workers. It adds

* ``dropout_time`` (h; +inf if no dropout by ``simulation.end``, NaN if the solve
  failed) when the study has a ``dropout`` section (:mod:`vtrial.trial.dropout`);
* the endpoint types ``auec`` (area under an output's curve by the trapezoid rule on
  a regular grid of probe times) and ``time_to_event`` (columns ``<name>``, h, and
  ``<name>_event``, 1 event / 0 censored): an event when a survival output falls to a
  keyed uniform (purpose ``tte:<name>``), or when an output crosses a value;
* endpoints on observed values (``observed: true``: the observation with residual
  error, ``dv`` of :func:`vtrial.run.chunk.observations_table`, at the endpoint time);
* the censoring of endpoints at dropout (``dropout.censoring``: ``missing`` or
  ``locf``), and adverse events counted up to the dropout time only;
* every other endpoint type but responders too (value at a time, change from
  baseline, minimum, maximum, best response), so each type has one implementation
  with or without dropout (:meth:`TrialLayer.endpoint`).

The probe times these endpoints need are :func:`trial_probe_times`; the validation of
their keys is :mod:`vtrial.trial.validate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from vtrial.engine.host import Monitor
from vtrial.infra.rng import patient_uniforms
from vtrial.model.residual import observe_probes
from vtrial.trial.adverse import threshold_gradings
from vtrial.trial.dropout import PURPOSE, Dropout, dropout_times
from vtrial.trial.kinds import EFFICACY_TESTS, EndpointKind
from vtrial.trial.recist import (
    UNDEFINED,
    best_overall_response,
    response_column,
    visit_responses,
)
from vtrial.trial.spec import Endpoint

if TYPE_CHECKING:
    from vtrial.engine.host import KernelResult
    from vtrial.trial.spec import TrialStudy
__all__ = [
    "AT_TYPES",
    "DEFAULT_TEST",
    "TESTS",
    "TRIAL_TYPES",
    "TrialLayer",
    "auec_times",
    "censor_events",
    "endpoint_kinds",
    "endpoint_units",
    "extra_monitors",
    "locf_visits",
    "probe_times",
    "survival_event_times",
    "trapezoid",
    "trial_probe_times",
]

FloatArray = npt.NDArray[np.float64]
Kind = EndpointKind

#: endpoint types computed here only
TRIAL_TYPES = ("auec", "time_to_event")
#: endpoint types taken at one time ``at``
AT_TYPES = ("value_at", "change_from_baseline", "percent_change_from_baseline")
#: comparison tests by endpoint kind (the first is the default)
TESTS = EFFICACY_TESTS
DEFAULT_TEST = {kind: tests[0] for kind, tests in TESTS.items()}
#: most points of an ``auec`` or survival ``time_to_event`` time grid
MAX_SERIES_POINTS = 100_000
#: most bytes of the kernel's probes per Dask task (chunk x probe times x outputs x 8)
MAX_PROBE_BYTES = 512 * 2**20
#: patients-table column of the dropout time
DROPOUT_COLUMN = "dropout_time"


# --------------------------------------------------------------------------- #
# Time grids (shared by validation, probe times and computation)
# --------------------------------------------------------------------------- #


def series_times(lo: float, hi: float, every: float) -> FloatArray:
    """``lo, lo + every, ...`` up to ``hi``, and ``hi`` (h), sorted and unique.

    A last point within 1e-9 steps of ``hi`` is taken as ``hi``.

    Examples
    --------
    >>> series_times(0.0, 10.0, 4.0).tolist()
    [0.0, 4.0, 8.0, 10.0]
    >>> series_times(0.0, 2.1, 0.7).tolist()  # 3 * 0.7 = 2.0999999999999996
    [0.0, 0.7, 1.4, 2.1]
    """
    if not hi >= lo:
        return np.empty(0)
    m = int(np.floor((hi - lo) / every + 1e-9))
    pts = lo + every * np.arange(m + 1)
    return np.append(pts[pts < hi - 1e-9 * every], hi)


def auec_times(ep: Endpoint) -> FloatArray:
    """Grid (h) of an ``auec`` endpoint: ``from, from + every, ..., to``."""
    assert ep.to is not None  # defaults filled
    assert ep.every is not None
    return series_times(ep.start, ep.to, ep.every)


def survival_times(ep: Endpoint, end: float) -> FloatArray:
    """Grid (h) of a survival ``time_to_event`` endpoint: ``0, every, ..., end``; empty
    for a threshold crossing (``below``/``above``, timed by the kernel)."""
    if ep.crossing is not None or ep.every is None:
        return np.empty(0)
    return series_times(0.0, end, ep.every)


def locf_visits(dropout: Dropout | None, end: float) -> list[float]:
    """Visit times (h) of ``dropout.visits`` (for ``censoring: locf``), else empty."""
    if dropout is None or dropout.visits is None:
        return []
    return dropout.visits.until(end)


def trial_probe_times(
    endpoints: Mapping[str, Endpoint], dropout: Dropout | None, end: float
) -> set[float]:
    """Probe times (h) the trial layer needs: AUEC and survival grids, LOCF visits."""
    times: set[float] = set()
    for ep in endpoints.values():
        if ep.type == "auec":
            times.update(float(t) for t in auec_times(ep))
        elif ep.type == "time_to_event":
            times.update(float(t) for t in survival_times(ep, end))
    times.update(float(t) for t in locf_visits(dropout, end))
    return times


def probe_times(
    endpoints: Mapping[str, Endpoint],
    dropout: Dropout | None,
    end: float,
    sampling_times: Iterable[float],
) -> list[float]:
    """Times (h) at which the kernel records every output for the endpoints, sorted:
    baseline 0, every endpoint's ``at``, tumour assessments of ``best_response``, the
    observation ``sampling_times``, and the grids of :func:`trial_probe_times`."""
    times = {0.0}
    for ep in endpoints.values():
        if ep.at is not None:
            times.add(ep.at)
        if ep.type == "best_response":  # tumour assessments
            times.update(ep.schedule.until(end))
    times.update(float(t) for t in sampling_times)
    times.update(trial_probe_times(endpoints, dropout, end))  # auec, survival, locf visits
    return sorted(times)


def endpoint_kinds(endpoints: Mapping[str, Endpoint]) -> dict[str, Kind]:
    """Endpoint name -> kind, in study order."""
    return {k: v.kind for k, v in endpoints.items()}


def endpoint_units(
    endpoints: Mapping[str, Endpoint], output_units: Mapping[str, str]
) -> dict[str, str]:
    """Endpoint name -> unit of its patient-table value: ``%`` for a percent change, the
    output's unit for a value, change, minimum or maximum, the output's unit times ``h``
    for an ``auec``, ``h`` for a time to event, ``""`` for a responder or a response
    category."""
    out = {}
    for name, ep in endpoints.items():
        typ, unit = ep.type, output_units.get(str(ep.output or ""), "")
        if typ == "percent_change_from_baseline":
            out[name] = "%"
        elif typ == "auec":
            out[name] = f"{unit}·h" if unit else "h"
        elif typ == "time_to_event":
            out[name] = "h"
        elif typ in ("responder", "best_response"):
            out[name] = ""
        else:
            out[name] = unit
    return out


# --------------------------------------------------------------------------- #
# Pure computations
# --------------------------------------------------------------------------- #


def trapezoid(values: FloatArray, times: FloatArray) -> FloatArray:
    """Area under each row of ``values`` (n, m) over ``times`` (m,), trapezoid rule.

    Examples
    --------
    >>> trapezoid(np.array([[0.0, 2.0, 2.0]]), np.array([0.0, 1.0, 3.0])).tolist()
    [5.0]
    """
    v = np.asarray(values, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    if t.size < 2:
        return np.zeros(v.shape[0])
    return np.asarray(0.5 * ((v[:, 1:] + v[:, :-1]) * np.diff(t)[None, :]).sum(axis=1))


def survival_event_times(surv: FloatArray, times: FloatArray, u: FloatArray) -> FloatArray:
    """First time each patient's survival curve falls to or below its uniform.

    Parameters
    ----------
    surv : ndarray, shape (n, m)
        Survival probability S(t) at ``times`` (non-increasing in t, S(0) = 1).
    times : ndarray, shape (m,)
        Increasing times (h).
    u : ndarray, shape (n,)
        One uniform per patient.

    Returns
    -------
    ndarray, shape (n,)
        The first t with S(t) <= u, linearly interpolated between the two grid times
        around the first grid point where it holds (the first time itself if that is
        the first point); NaN if S stays above u (or is NaN).

    Examples
    --------
    >>> s = np.array([[1.0, 0.6, 0.2], [1.0, 0.9, 0.8]])
    >>> survival_event_times(s, np.array([0.0, 10.0, 20.0]), np.array([0.4, 0.5])).tolist()
    [15.0, nan]
    """
    s = np.asarray(surv, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    uu = np.asarray(u, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        hit = s <= uu[:, None]
    has = hit.any(axis=1)
    k = np.argmax(hit, axis=1)
    out = np.full(s.shape[0], np.nan)
    rows = np.flatnonzero(has)
    kk = k[rows]
    first = kk == 0
    out[rows[first]] = t[0]
    r, j = rows[~first], kk[~first]
    s0, s1 = s[r, j - 1], s[r, j]
    frac = np.where(s0 != s1, (s0 - uu[r]) / np.where(s0 != s1, s0 - s1, 1.0), 1.0)
    out[r] = t[j - 1] + np.clip(frac, 0.0, 1.0) * (t[j] - t[j - 1])
    return out


def censor_events(event_time: FloatArray, horizon: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Observed time and event indicator of a time to event censored at ``horizon``.

    Parameters
    ----------
    event_time : ndarray, shape (n,)
        Time of the event (h), NaN if none was simulated.
    horizon : ndarray, shape (n,)
        End of follow-up of each patient: min(``simulation.end``, dropout time); NaN
        for a patient whose follow-up is unknown (failed solve).

    Returns
    -------
    time, event : ndarray, shape (n,)
        ``time = min(event_time, horizon)``; ``event`` 1.0 if the event happened at
        or before the horizon, 0.0 if censored; both NaN where ``horizon`` is NaN.

    Examples
    --------
    >>> t, e = censor_events(np.array([5.0, np.nan, 9.0]), np.array([8.0, 8.0, 7.0]))
    >>> t.tolist(), e.tolist()
    ([5.0, 8.0, 7.0], [1.0, 0.0, 0.0])
    """
    ev = np.asarray(event_time, dtype=np.float64)
    hz = np.asarray(horizon, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        happened = np.isfinite(ev) & (ev <= hz)
    time = np.where(happened, ev, hz)
    event = happened.astype(np.float64)
    unknown = np.isnan(hz)
    time[unknown] = np.nan
    event[unknown] = np.nan
    return time, event


def last_visit_index(times: FloatArray, visits: FloatArray, dropout: FloatArray) -> np.ndarray:
    """Index into ``times`` of the last visit at or before each dropout time.

    ``visits`` (sorted, members of ``times``) always start with baseline 0: a patient
    who drops out before the first visit carries the baseline forward.
    """
    v = np.asarray(visits, dtype=np.float64)
    pos = np.searchsorted(v, np.nan_to_num(dropout, nan=-1.0), side="right") - 1
    pos = np.clip(pos, 0, v.size - 1)
    return np.searchsorted(np.asarray(times, dtype=np.float64), v[pos])


def _index(times: FloatArray, t: float) -> int:
    i = int(np.searchsorted(times, t))
    if i >= times.size or times[i] != t:
        raise ValueError(f"time {t} is not among the recorded times")
    return i


# --------------------------------------------------------------------------- #
# Kernel monitors
# --------------------------------------------------------------------------- #


def extra_monitors(study: TrialStudy) -> tuple[list[Monitor], dict[tuple[str, ...], int]]:
    """Threshold crossings the trial layer needs, and their positions in that list.

    With a ``dropout`` section, every grade limit of every adverse event graded from
    an output (key ``("ae", event, grade)``), so grades can be counted up to the
    dropout time; and every ``time_to_event`` endpoint with ``below``/``above`` (key
    ``("tte", name)``). :func:`vtrial.run.chunk.monitors` appends them after its own.
    """
    mons: list[Monitor] = []
    keys: dict[tuple[str, ...], int] = {}
    if study.dropout is not None:
        for ev, (thr, direction, output) in threshold_gradings(study.adverse_events).items():
            for k, limit in enumerate(thr, start=1):
                keys[("ae", ev, str(k))] = len(mons)
                mons.append(Monitor(output, limit, direction))
    for name, ep in study.endpoints.items():
        if ep.crossing is not None:
            keys[("tte", name)] = len(mons)
            mons.append(Monitor(str(ep.output), *ep.crossing))
    return mons, keys


# --------------------------------------------------------------------------- #
# Per-chunk computation
# --------------------------------------------------------------------------- #


class TrialLayer:
    """Dropout, censoring and trial-layer endpoints of one chunk of patients.

    Parameters
    ----------
    study : TrialStudy
    pop : DataFrame
        The chunk's rows of the population table.
    res : KernelResult
        The kernel's result for these rows (with :func:`extra_monitors` appended to
        the monitors).
    cols : mapping
        Patients-table columns computed so far (``replicate``, ``patient_id``, the
        exposure metrics).
    ok : ndarray of bool, shape (n,)
        Solves that succeeded.
    """

    def __init__(
        self,
        study: TrialStudy,
        pop: pd.DataFrame,
        res: KernelResult,
        cols: Mapping[str, Any],
        ok: npt.NDArray[np.bool_],
    ) -> None:
        self.study = study
        self.res = res
        self.ok = np.asarray(ok, dtype=bool)
        self.n = len(pop)
        self.outputs = list(study.model.outputs)
        self.probe_t = np.asarray(study.probe_times(), dtype=np.float64)
        self.end = study.end
        self.replicate = np.asarray(cols["replicate"], dtype=np.int64)
        self.patient_id = np.asarray(cols["patient_id"], dtype=np.int64)
        mons, keys = extra_monitors(study)
        self._cross0 = res.cross.shape[1] - len(mons)
        self._keys = keys
        self.spec = study.dropout
        self.dropout = self._dropout_times(cols) if self.spec else None
        self._observed: tuple[FloatArray, list[str], FloatArray] | None = None

    # ---- dropout -------------------------------------------------------------

    def _cross(self, key: tuple[str, ...]) -> FloatArray:
        return np.asarray(self.res.cross[:, self._cross0 + self._keys[key]], dtype=np.float64)

    def _dropout_times(self, cols: Mapping[str, Any]) -> FloatArray:
        spec = self.spec
        assert spec is not None
        u = patient_uniforms(self.study.seed, PURPOSE, self.replicate, self.patient_id)
        mult = np.ones(self.n)
        if spec.exposure is not None:
            metric = np.asarray(cols[spec.exposure.metric], dtype=np.float64)
            with np.errstate(over="ignore", invalid="ignore"):
                mult = np.exp(spec.exposure.beta * metric)
        onset = np.full(self.n, np.inf)
        ratio = 1.0
        if spec.adverse_event is not None:
            ae = spec.adverse_event
            onset = self._cross(("ae", ae.event, str(ae.grade)))
            ratio = ae.hazard_ratio
        t = dropout_times(spec.hazard, u, multiplier=mult, onset=onset, ratio=ratio, end=self.end)
        t[~self.ok] = np.nan
        return t

    def patient_columns(self, cols: Mapping[str, Any]) -> dict[str, Any]:
        """``dropout_time`` and the adverse-event columns counted up to the dropout.

        With a dropout, the grade of an event graded from an output is the number of
        its limits first crossed at or before the dropout time, and
        ``ae_<E>_time_grade3`` is NaN if the grade-3 limit was first crossed after it
        (``ae_<E>_worst`` stays the worst value of the whole simulation). Events graded
        from ``probabilities`` have no onset time and are not changed; nor are patients
        whose dropout time is unknown (failed solve).

        Parameters
        ----------
        cols : mapping
            The patients-table columns computed so far (with ``ae_<E>_grade``).

        Returns
        -------
        dict
            Columns to add or replace (empty without a dropout section).
        """
        if self.dropout is None:
            return {}
        d = self.dropout
        out: dict[str, Any] = {DROPOUT_COLUMN: d}
        known = self.ok & ~np.isnan(d)
        for ev, (thr, _, _) in threshold_gradings(self.study.adverse_events).items():
            crossed = np.column_stack(
                [self._cross(("ae", ev, str(k))) for k in range(1, len(thr) + 1)]
            )
            with np.errstate(invalid="ignore"):
                on_study = crossed <= d[:, None]
            graded = pd.array(cols[f"ae_{ev}_grade"], dtype="Int8").copy()
            graded[known] = on_study.sum(axis=1)[known].astype(np.int8)
            out[f"ae_{ev}_grade"] = graded
            if len(thr) >= 3:
                t3 = crossed[:, 2].copy()
                t3[known & ~on_study[:, 2]] = np.nan
                t3[~self.ok] = np.nan
                out[f"ae_{ev}_time_grade3"] = t3
        return out

    # ---- endpoints -----------------------------------------------------------

    def endpoint(self, name: str, ep: Endpoint) -> tuple[dict[str, Any], FloatArray | None]:
        """Columns of one endpoint and its float values for responders (None if none)."""
        typ = ep.type
        if typ == "best_response":
            return {name: self._best_response(ep)}, None
        if typ == "time_to_event":
            time, event = self._time_to_event(name, ep)
            return {name: time, f"{name}_event": event}, None
        if typ == "auec":
            val = self._auec(ep)
        elif typ in ("minimum", "maximum"):
            j = self.outputs.index(str(ep.output))
            src = self.res.omin if typ == "minimum" else self.res.omax
            val = np.array(src[:, j], dtype=np.float64)
            if self.dropout is not None:  # a whole-study extreme is not known after dropout
                val[~(self.dropout >= self.end)] = np.nan
        else:
            val = self._at_value(ep)
        val[~self.ok] = np.nan
        return {name: val}, val

    def _series(self, ep: Endpoint) -> tuple[FloatArray, FloatArray]:
        """Values (n, m) and times (m,) of the endpoint's output: model or observed."""
        if ep.observed:
            times, outs, dv = self.observed()
            return dv[:, :, outs.index(str(ep.output))], times
        j = self.outputs.index(str(ep.output))
        return np.asarray(self.res.probes[:, :, j], dtype=np.float64), self.probe_t

    def _at_value(self, ep: Endpoint) -> FloatArray:
        values, times = self._series(ep)
        assert ep.at is not None  # required by validation
        at = ep.at
        rows = np.arange(self.n)
        idx = np.full(self.n, _index(times, at))
        d = self.dropout
        if d is not None:
            censored = ~(d >= at)  # dropped out before `at` (or unknown)
            if self.spec is not None and self.spec.censoring == "locf":
                visits = np.array([0.0, *(v for v in locf_visits(self.spec, self.end) if v < at)])
                idx = np.where(censored, last_visit_index(times, visits, d), idx)
                censored = np.isnan(d)
        at_v = values[rows, idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            if ep.type == "value_at":
                val = at_v.copy()
            elif ep.type == "change_from_baseline":
                val = at_v - values[:, _index(times, 0.0)]
            else:
                val = 100.0 * (at_v / values[:, _index(times, 0.0)] - 1.0)
        if d is not None:
            val[censored] = np.nan
        return val

    def _auec(self, ep: Endpoint) -> FloatArray:
        values, times = self._series(ep)
        grid = auec_times(ep)
        idx = np.searchsorted(times, grid)
        f = values[:, idx].copy()
        to = float(grid[-1])
        d = self.dropout
        censored = np.zeros(self.n, dtype=bool)
        if d is not None:
            censored = ~(d >= to)
            if self.spec is not None and self.spec.censoring == "locf":
                visits = np.array([0.0, *(v for v in locf_visits(self.spec, self.end) if v < to)])
                vi = last_visit_index(times, visits, d)
                carried = values[np.arange(self.n), vi]
                after = grid[None, :] > times[vi][:, None]
                rows = censored & ~np.isnan(d)
                f[rows] = np.where(after[rows], carried[rows, None], f[rows])
                censored = np.isnan(d)
        if ep.above_baseline:
            f = f - values[:, _index(times, 0.0)][:, None]
        val = trapezoid(f, grid)
        val[censored] = np.nan
        return val

    def _time_to_event(self, name: str, ep: Endpoint) -> tuple[FloatArray, FloatArray]:
        if ep.crossing is not None:
            ev = self._cross(("tte", name))
        else:
            grid = survival_times(ep, self.end)
            j = self.outputs.index(str(ep.output))
            surv = self.res.probes[:, np.searchsorted(self.probe_t, grid), j]
            u = patient_uniforms(self.study.seed, f"tte:{name}", self.replicate, self.patient_id)
            ev = survival_event_times(surv, grid, u)
        horizon = np.full(self.n, self.end)
        if self.dropout is not None:
            horizon = np.fmin(horizon, self.dropout)  # NaN dropout: unknown follow-up
            horizon[np.isnan(self.dropout)] = np.nan
        horizon[~self.ok] = np.nan
        return censor_events(ev, horizon)

    def _best_response(self, ep: Endpoint) -> pd.Categorical:
        j = self.outputs.index(str(ep.output))
        times = ep.schedule.until(self.end)
        idx = [_index(self.probe_t, t) for t in times]
        codes = visit_responses(
            self.res.probes[:, _index(self.probe_t, 0.0), j],
            self.res.probes[:, idx, j],
            complete_below=ep.complete_below,
            min_increase=ep.min_increase,
        )
        d = self.dropout
        done = np.ones(codes.shape, dtype=bool)
        if d is not None:  # assessments after the dropout are not made
            done = np.asarray(times)[None, :] <= np.nan_to_num(d, nan=-1.0)[:, None]
            codes = np.where(done, codes, 2).astype(np.int8)  # SD never changes the best
        best = best_overall_response(codes)
        if codes.shape[1]:
            best[~done.any(axis=1)] = UNDEFINED  # no assessment before the dropout
        best[~self.ok] = UNDEFINED
        return response_column(best)

    # ---- observations ---------------------------------------------------------

    def observed(self) -> tuple[FloatArray, list[str], FloatArray]:
        """Sampling times, observed outputs and ``dv`` (n, T, O) of this chunk.

        The same values as the ``dv`` column of
        :func:`vtrial.run.chunk.observations_table` (same keyed draws).
        """
        if self._observed is None:
            study = self.study
            times = study.observations.times
            outs = study.observations.outputs
            _, dv, _ = observe_probes(
                self.res.probes,
                self.res.status,
                self.probe_t,
                self.outputs,
                times=times,
                observed=outs,
                errors=study.observations.errors,
                seed=study.seed,
                replicate=self.replicate,
                patient_id=self.patient_id,
            )
            self._observed = (np.asarray(times, dtype=np.float64), list(outs), dv)
        return self._observed
