"""Simulating virtual patients of a study: kernel inputs, endpoints, time courses.

:func:`simulate_patients` turns rows of the population table into rows of the
patients table (exposure, adverse-event grades, efficacy endpoints, solver status)
and the long time-course table. It is what every Dask task runs on its chunk, and it
is a pure function of the rows it is given: the same patient gives the same row
whatever chunk, shard, worker or thread count it runs in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from vtrial.analysis.sketch import Sketch, quantiles, sketch_block
from vtrial.data.dataset import Dataset
from vtrial.data.records import RecordEvents
from vtrial.engine.host import (
    PK_METRICS,
    KernelResult,
    Monitor,
    Tolerances,
    labels,
    run_kernel,
)
from vtrial.engine.interface import METHODS, STATUS, Status
from vtrial.model.residual import OBSERVATION_COLUMNS, observe_probes
from vtrial.model.spec import PK_CONCENTRATION
from vtrial.population.sampling import occasion_parameters
from vtrial.protocol.rules import adherence_arrays, assay_normals, ledger_table, summary_columns
from vtrial.run.recorded import patient_records, recorded_inputs, recorded_observations
from vtrial.study.config import Study
from vtrial.trial.adverse import (
    probability_event_columns,
    threshold_grades,
    threshold_gradings,
)
from vtrial.trial.endpoints import TrialLayer, extra_monitors
from vtrial.trial.recist import categories_in

#: columns of the patients table before endpoints and adverse events
ID_COLUMNS = ("replicate", "patient_id", "arm", "solver_status", "n_steps")


def tolerances(study: Study) -> Tolerances:
    """Integration controls of a study."""
    sim = study.simulation
    return Tolerances(
        rtol=sim.rtol, atol=sim.atol, max_steps=sim.max_steps, h_max=max(sim.grid, 24.0)
    )


def monitors(study: Study) -> list[Monitor]:
    """Threshold crossings timed by the kernel: grade >= 3 of every adverse event,
    then those of the trial layer (:func:`vtrial.trial.endpoints.extra_monitors`)."""
    graded = threshold_gradings(study.adverse_events)  # drawn grades cross no threshold
    out = [Monitor(o, thr[2], d) for thr, d, o in graded.values() if len(thr) >= 3]
    return out + extra_monitors(study)[0]


def study_outputs(study: Study, threads: int | None) -> dict[str, Any]:
    """The kernel arguments every run of a study's patients shares: grid, stored time
    courses, probes, monitors, tolerances, threads and the outputs-at-dose convention."""
    return {
        "grid": study.grid(),
        "store_times": study.store_times(),
        "store_outputs": list(study.timecourse.outputs),
        "probe_times": study.probe_times(),
        "monitors": monitors(study),
        "tolerances": tolerances(study),
        "threads": threads,
        "outputs_at_dose": study.simulation.outputs_at_dose,
    }


def run_population(study: Study, pop: pd.DataFrame, *, threads: int | None = None) -> KernelResult:
    """Run the kernel on population rows (no post-processing)."""
    if study.recorded:
        return run_recorded(study, patient_records(study, pop), pop, threads=threads)[0]
    model = study.model
    n = len(pop)
    params: dict[str, np.ndarray] = {
        k: pop[k].to_numpy(dtype=np.float64) for k in model.parameters if k in pop
    }
    params.update(occasion_parameters(study, pop))
    scale = np.ones((n, 3))
    if "weight" in pop:
        scale[:, 1] = pop["weight"].to_numpy(dtype=np.float64)
    if "bsa" in pop:
        scale[:, 2] = pop["bsa"].to_numpy(dtype=np.float64)
    events = study.events()
    arm_index = pop["arm_index"].to_numpy(dtype=np.int64)
    replicate = pop["replicate"].to_numpy(dtype=np.int64)
    patient_id = pop["patient_id"].to_numpy(dtype=np.int64)
    program = study.rule_program
    return run_kernel(
        model,
        params,
        n=n,
        events=events,
        arm=arm_index,
        rules=program,
        adherence=adherence_arrays(
            study.seed, study.arms, events, arm_index, replicate, patient_id
        ),
        assay=assay_normals(study.seed, program, replicate, patient_id),
        ledger=study.has_dose_ledger,
        dose_scale=scale,
        **study_outputs(study, threads),
    )


def run_recorded(
    study: Study, part: Dataset, pop: pd.DataFrame, *, threads: int | None = None
) -> tuple[KernelResult, RecordEvents]:
    """:func:`run_population` of patients simulated as recorded
    (:func:`vtrial.run.recorded.recorded_inputs`): each row its own event table, on
    the study's grid, probes and monitors; also the events (for the observations)."""
    ev, params = recorded_inputs(study, part, pop)
    n = len(pop)
    res = run_kernel(
        study.model,
        params,
        n=n,
        events=ev.table,
        arm=np.arange(n, dtype=np.int64),
        dose_scale=np.ones((n, 3)),
        **study_outputs(study, threads),
        n_obs=ev.n_obs,
    )
    return res, ev


def band_groups(study: Study, arm_index: np.ndarray) -> tuple[np.ndarray, int]:
    """Sketch group id of every stored value, shape (n, S, O): (arm, time, output)."""
    s = study.store_times().size
    o = len(study.timecourse.outputs)
    a = len(study.arm_names)
    g = (arm_index.astype(np.int64)[:, None, None] * s + np.arange(s)[None, :, None]) * o
    return g + np.arange(o)[None, None, :], a * s * o


def bands_table(study: Study, sk: Sketch) -> pd.DataFrame:
    """5/50/95 % bands by (arm, output, time) from a merged sketch."""
    times = study.store_times()
    outs = list(study.timecourse.outputs)
    arms = study.arm_names
    q = quantiles(sk, (0.05, 0.5, 0.95))
    a_idx, t_idx, o_idx = np.unravel_index(
        np.arange(len(arms) * times.size * len(outs)), (len(arms), times.size, len(outs))
    )
    df = pd.DataFrame(
        {
            "arm": np.asarray(arms, dtype=object)[a_idx],
            "output": np.asarray(outs, dtype=object)[o_idx],
            "time": times[t_idx],
            "n": sk.group_n,
            "p5": q[:, 0],
            "p50": q[:, 1],
            "p95": q[:, 2],
        }
    )
    df = df[df["n"] > 0]
    order = np.lexsort((df["time"].to_numpy(), o_idx[df.index], a_idx[df.index]))
    return df.iloc[order].reset_index(drop=True)


def simulate_patients(
    study: Study,
    pop: pd.DataFrame,
    *,
    threads: int | None = None,
    result: KernelResult | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, Sketch]:
    """Simulate population rows; return the patients and time-course tables.

    Parameters
    ----------
    study : Study
    pop : DataFrame
        Rows of the population table (:func:`vtrial.population.sampling.sample_population`).
    threads : int, optional
        Numba threads (1 inside Dask workers).
    result : KernelResult, optional
        The kernel's result for these rows (:func:`run_population`), if already run.

    Returns
    -------
    patients : DataFrame
        One row per patient: ``replicate, patient_id, arm, solver_status, n_steps``,
        ``solver``, ``twin_status`` (only with ``population.dataset.parameters: twins``: the
        fit's status; a patient without an ``ok`` fit is not simulated), exposure ``cmax``
        (mg/L), ``tmax`` (h), ``auc`` (mg·h/L, 0 to the end of the simulation), ``ctrough``
        (mg/L, just before the last dose), then for each adverse event ``ae_<E>_grade``
        (0-5, null if the solve failed), ``ae_<E>_worst`` (nadir or peak of its output; for
        ``probabilities`` the worst P(grade >= 1), see :mod:`vtrial.trial.adverse`),
        ``ae_<E>_time_grade3`` (h, NaN if none or for a drawn grade), then one column per
        endpoint (float; responders 0/1; ``best_response`` an ordered categorical
        CR/PR/SD/PD, null if undefined, see :mod:`vtrial.trial.recist`).
    timecourse : DataFrame
        Long format: ``replicate, patient_id, arm, time`` and the stored outputs
        (float32), for the patients selected by ``outputs.timecourse.patients``.
    bands : Sketch
        Mergeable quantile sketch of every stored output by (arm, time), over all
        patients whose solve succeeded (see :mod:`vtrial.analysis.sketch`).
    """
    res = run_population(study, pop, threads=threads) if result is None else result
    model = study.model
    outs = list(model.outputs)
    n = len(pop)
    ok = res.status == Status.OK
    cols: dict[str, Any] = {
        "replicate": pop["replicate"].to_numpy(dtype=np.int32),
        "patient_id": pop["patient_id"].to_numpy(dtype=np.int64),
        "arm": pop["arm"].to_numpy(dtype=object),
        "solver_status": labels(res.status, STATUS),
        "n_steps": res.nsteps.astype(np.int32),
        "solver": labels(res.method, METHODS),
    }
    if "twin_status" in pop:  # population.dataset.parameters: twins (not ok: not simulated)
        cols["twin_status"] = pop["twin_status"].to_numpy(dtype=object)
    # ---- exposure
    exp_out = study.exposure.output
    if exp_out == PK_CONCENTRATION and (model.pk_compartments is not None or model.ode_exposure):
        pk = res.pk.copy()
    else:
        pk = np.full((n, 4), np.nan)
        if exp_out is not None:
            j = outs.index(exp_out)
            pk[:, 0] = res.omax[:, j]
            pk[:, 1] = res.tmax[:, j]
    if study.has_dose_ledger:  # adaptive dosing / adherence: per-patient dose summary
        cols.update(summary_columns(np.where(ok[:, None], res.dose_summary, np.nan)))
    undosed = ok & (pk[:, 0] == 0.0)
    pk[undosed, 1] = np.nan  # no tmax without drug
    for j, name in enumerate(PK_METRICS):
        cols[name] = pk[:, j]
    # ---- adverse events
    mon_index = 0
    for ev, spec in study.adverse_events.items():
        if spec.probabilities is not None:  # grade drawn from the worst probabilities
            p_idx = [outs.index(o) for o in spec.probabilities]
            cols.update(
                probability_event_columns(
                    study.seed, ev, res.omax[:, p_idx], cols["replicate"], cols["patient_id"], ok
                )
            )
            continue
        thr, direction = spec.grading()
        j = outs.index(str(spec.output))
        worst = res.omin[:, j] if direction < 0 else res.omax[:, j]
        grade = threshold_grades(worst, thr, direction)
        graded = pd.array(np.where(ok, grade, 0).astype(np.int8), dtype="Int8")
        graded[~ok] = pd.NA
        cols[f"ae_{ev}_grade"] = graded
        cols[f"ae_{ev}_worst"] = worst
        if len(thr) >= 3:
            cols[f"ae_{ev}_time_grade3"] = res.cross[:, mon_index]
            mon_index += 1
        else:
            cols[f"ae_{ev}_time_grade3"] = np.full(n, np.nan)
    # ---- dropout, adverse events up to it, trial-layer endpoints (vtrial.trial.endpoints)
    layer = TrialLayer(study, pop, res, cols, ok)
    cols.update(layer.patient_columns(cols))
    # ---- endpoints: responders here, every other type by the trial layer
    values: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, ep in study.endpoints.items():
            if ep.type != "responder":
                new_cols, value = layer.endpoint(name, ep)
                cols.update(new_cols)
                if value is not None:
                    values[name] = value
                continue
            ref = str(ep.endpoint)
            if ep.categories is not None:  # categories of a best_response
                val = categories_in(cols[ref], list(ep.categories))
            else:
                v = values[ref]
                if ep.below is not None:
                    hit = v < ep.below
                elif ep.below_or_equal is not None:
                    hit = v <= ep.below_or_equal
                elif ep.above is not None:
                    hit = v > ep.above
                else:
                    hit = v >= ep.above_or_equal
                val = np.where(np.isfinite(v), hit.astype(np.float64), np.nan)
            val[~ok] = np.nan
            values[name] = val
            cols[name] = val
    patients = pd.DataFrame(cols)
    # ---- percentile-band sketch over every successful patient
    groups, n_groups = band_groups(study, pop["arm_index"].to_numpy())
    sk = sketch_block(res.store[ok], groups[ok], n_groups)
    # ---- time courses (long) of the selected patients
    keep = study.timecourse.patients
    sel = np.ones(n, dtype=bool) if keep is None else cols["patient_id"] <= keep
    times = study.store_times()
    s = times.size
    m = int(sel.sum())
    tc_cols: dict[str, Any] = {
        "replicate": np.repeat(cols["replicate"][sel], s),
        "patient_id": np.repeat(cols["patient_id"][sel], s),
        "arm": np.repeat(cols["arm"][sel], s),
        "time": np.tile(times.astype(np.float32), m),
    }
    for j, o in enumerate(study.timecourse.outputs):
        tc_cols[o] = res.store[sel, :, j].ravel()
    return patients, pd.DataFrame(tc_cols), sk


def observations_table(study: Study, pop: pd.DataFrame, res: KernelResult) -> pd.DataFrame:
    """Sampled observations of population rows from their kernel result.

    Parameters
    ----------
    study : Study
    pop : DataFrame
        Rows of the population table, sorted by ``replicate, patient_id``.
    res : KernelResult
        :func:`run_population` of these rows (``probes`` hold every output at
        :meth:`Study.probe_times`, which include the sampling times).

    Returns
    -------
    DataFrame
        Long format, one row per (patient, sampling time, observed output), sorted by
        ``replicate, patient_id, time, output`` (outputs in name order):
        ``replicate`` (int32), ``patient_id`` (int64), ``arm``, ``time`` (h, float64),
        ``output``, ``ipred`` (float64, the model's value), ``dv`` (float64, observed
        with the output's residual error, see :mod:`vtrial.model.residual`; equal to
        ``ipred`` for an output without one) and ``blq`` (bool, ``dv`` below the
        output's ``lloq``). Patients whose solve failed keep their rows, with NaN
        ``ipred`` and ``dv`` and ``blq`` False. No rows without
        ``outputs.observations``.
    """
    times = study.observations.times
    outs = study.observations.outputs
    n, t, o = len(pop), times.size, len(outs)
    replicate = pop["replicate"].to_numpy(dtype=np.int32)
    patient_id = pop["patient_id"].to_numpy(dtype=np.int64)
    ipred, dv, blq = observe_probes(
        res.probes,
        res.status,
        study.probe_times(),
        list(study.model.outputs),
        times=times,
        observed=outs,
        errors=study.observations.errors,
        seed=study.seed,
        replicate=replicate,
        patient_id=patient_id,
    )
    m = t * o
    return pd.DataFrame(
        {
            "replicate": np.repeat(replicate, m),
            "patient_id": np.repeat(patient_id, m),
            "arm": np.repeat(pop["arm"].to_numpy(dtype=object), m),
            "time": np.tile(np.repeat(times.astype(np.float64), o), n),
            "output": np.tile(np.asarray(outs, dtype=object), n * t),
            "ipred": ipred.ravel(),
            "dv": dv.ravel(),
            "blq": blq.ravel(),
        },
        columns=list(OBSERVATION_COLUMNS),
    )


def doses_table(study: Study, pop: pd.DataFrame, res: KernelResult) -> pd.DataFrame:
    """Dose ledger of population rows: one row per planned administration.

    Columns ``replicate, patient_id, arm, dose_number`` (1..), ``time`` (h, when it
    was given; NaN if never reached), ``planned`` and ``given`` (mg, after dose
    scaling, before bioavailability) and ``reason`` (:data:`vtrial.protocol.codes.REASONS`).
    Empty (same columns) for a study without dose modification or adherence.
    """
    events = study.events()
    arm_index = pop["arm_index"].to_numpy(dtype=np.int64)
    per_arm = (events.slot >= 0).sum(axis=1)
    counts = per_arm[arm_index] if res.ledger.shape[1] else np.zeros(len(pop), dtype=np.int64)
    table = ledger_table(
        res.ledger if res.ledger.shape[1] else np.zeros((len(pop), 0, 4)),
        pop["replicate"].to_numpy(),
        pop["patient_id"].to_numpy(),
        pop["arm"].to_numpy(dtype=object),
        counts,
    )
    return pd.DataFrame(table)


def simulate_chunk(
    study: Study, pop: pd.DataFrame, *, threads: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, Sketch, pd.DataFrame, pd.DataFrame]:
    """:func:`simulate_patients`, :func:`observations_table` and :func:`doses_table`,
    from one kernel run.

    Returns ``patients, timecourse, bands, observations, doses``; a pure function of
    the rows it is given, like :func:`simulate_patients`.
    """
    if study.recorded:
        part = patient_records(study, pop)
        res, ev = run_recorded(study, part, pop, threads=threads)
        observations = recorded_observations(study, part, pop, ev, res)
    else:
        res = run_population(study, pop, threads=threads)
        observations = observations_table(study, pop, res)
    patients, timecourse, bands = simulate_patients(study, pop, threads=threads, result=res)
    return patients, timecourse, bands, observations, doses_table(study, pop, res)
