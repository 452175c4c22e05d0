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

from vtrial.config import Study
from vtrial.dosing import event_table
from vtrial.engine import (
    METHODS,
    PK_METRICS,
    STATUS,
    KernelResult,
    Monitor,
    Tolerances,
    labels,
    run_kernel,
)
from vtrial.models import PK_CONCENTRATION
from vtrial.sketch import Sketch, quantiles, sketch_block

#: columns of the patients table before endpoints and adverse events
ID_COLUMNS = ("replicate", "patient_id", "arm", "solver_status", "n_steps")


def tolerances(study: Study) -> Tolerances:
    """Integration controls of a study."""
    sim = study.data["simulation"]
    return Tolerances(
        rtol=float(sim["rtol"]),
        atol=float(sim["atol"]),
        max_steps=int(sim["max_steps"]),
        h_max=max(float(sim["grid"]), 24.0),
    )


def monitors(study: Study) -> list[Monitor]:
    """Threshold crossings timed by the kernel: grade >= 3 of every adverse event."""
    out = []
    for ev, spec in study.data["adverse_events"].items():
        thr, direction = study.grading(ev)
        if len(thr) >= 3:
            out.append(Monitor(spec["output"], thr[2], direction))
    return out


def run_population(study: Study, pop: pd.DataFrame, *, threads: int | None = None) -> KernelResult:
    """Run the kernel on population rows (no post-processing)."""
    model = study.model
    n = len(pop)
    params = {k: pop[k].to_numpy(dtype=np.float64) for k in model.parameters if k in pop}
    scale = np.ones((n, 3))
    if "weight" in pop:
        scale[:, 1] = pop["weight"].to_numpy(dtype=np.float64)
    if "bsa" in pop:
        scale[:, 2] = pop["bsa"].to_numpy(dtype=np.float64)
    tc = study.data["outputs"]["timecourse"]
    return run_kernel(
        model,
        params,
        n=n,
        events=event_table(study.arm_phases()),
        arm=pop["arm_index"].to_numpy(dtype=np.int64),
        dose_scale=scale,
        grid=study.grid(),
        store_times=study.store_times(),
        store_outputs=list(tc["outputs"]),
        probe_times=study.probe_times(),
        monitors=monitors(study),
        tolerances=tolerances(study),
        threads=threads,
    )


def band_groups(study: Study, arm_index: np.ndarray) -> tuple[np.ndarray, int]:
    """Sketch group id of every stored value, shape (n, S, O): (arm, time, output)."""
    s = study.store_times().size
    o = len(study.data["outputs"]["timecourse"]["outputs"])
    a = len(study.arm_names)
    g = (arm_index.astype(np.int64)[:, None, None] * s + np.arange(s)[None, :, None]) * o
    return g + np.arange(o)[None, None, :], a * s * o


def bands_table(study: Study, sk: Sketch) -> pd.DataFrame:
    """5/50/95 % bands by (arm, output, time) from a merged sketch."""
    times = study.store_times()
    outs = list(study.data["outputs"]["timecourse"]["outputs"])
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
    study: Study, pop: pd.DataFrame, *, threads: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, Sketch]:
    """Simulate population rows; return the patients and time-course tables.

    Parameters
    ----------
    study : Study
    pop : DataFrame
        Rows of the population table (:func:`vtrial.population.sample_population`).
    threads : int, optional
        Numba threads (1 inside Dask workers).

    Returns
    -------
    patients : DataFrame
        One row per patient: ``replicate, patient_id, arm, solver_status, n_steps``,
        exposure ``cmax`` (mg/L), ``tmax`` (h), ``auc`` (mg·h/L, 0 to the end of the
        simulation), ``ctrough`` (mg/L, just before the last dose), then for each
        adverse event ``ae_<E>_grade`` (0-5, null if the solve failed),
        ``ae_<E>_worst`` (nadir or peak of its output), ``ae_<E>_time_grade3`` (h, NaN
        if none), then one column per endpoint (float; responders 0/1).
    timecourse : DataFrame
        Long format: ``replicate, patient_id, arm, time`` and the stored outputs
        (float32), for the patients selected by ``outputs.timecourse.patients``.
    bands : Sketch
        Mergeable quantile sketch of every stored output by (arm, time), over all
        patients whose solve succeeded (see :mod:`vtrial.sketch`).
    """
    res = run_population(study, pop, threads=threads)
    model = study.model
    outs = list(model.outputs)
    n = len(pop)
    ok = res.status == 0
    cols: dict[str, Any] = {
        "replicate": pop["replicate"].to_numpy(dtype=np.int32),
        "patient_id": pop["patient_id"].to_numpy(dtype=np.int64),
        "arm": pop["arm"].to_numpy(dtype=object),
        "solver_status": labels(res.status, STATUS),
        "n_steps": res.nsteps.astype(np.int32),
        "solver": labels(res.method, METHODS),
    }
    # ---- exposure
    exp_out = study.data["exposure"].get("output")
    if exp_out == PK_CONCENTRATION and model.pk_compartments is not None:
        pk = res.pk.copy()
    else:
        pk = np.full((n, 4), np.nan)
        if exp_out is not None:
            j = outs.index(exp_out)
            pk[:, 0] = res.omax[:, j]
            pk[:, 1] = res.tmax[:, j]
    undosed = ok & (pk[:, 0] == 0.0)
    pk[undosed, 1] = np.nan  # no tmax without drug
    for j, name in enumerate(PK_METRICS):
        cols[name] = pk[:, j]
    # ---- adverse events
    mon_index = 0
    for ev, spec in study.data["adverse_events"].items():
        thr, direction = study.grading(ev)
        j = outs.index(spec["output"])
        worst = res.omin[:, j] if direction < 0 else res.omax[:, j]
        thr_arr = np.asarray(thr)
        with np.errstate(invalid="ignore"):
            if direction < 0:
                grade = (worst[:, None] < thr_arr[None, :]).sum(axis=1)
            else:
                grade = (worst[:, None] > thr_arr[None, :]).sum(axis=1)
        graded = pd.array(np.where(ok, grade, 0).astype(np.int8), dtype="Int8")
        graded[~ok] = pd.NA
        cols[f"ae_{ev}_grade"] = graded
        cols[f"ae_{ev}_worst"] = worst
        if len(thr) >= 3:
            cols[f"ae_{ev}_time_grade3"] = res.cross[:, mon_index]
            mon_index += 1
        else:
            cols[f"ae_{ev}_time_grade3"] = np.full(n, np.nan)
    # ---- endpoints
    probe_t = study.probe_times()
    base = probe_t.index(0.0)
    values: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, ep in study.data["endpoints"].items():
            typ = ep["type"]
            if typ == "responder":
                v = values[ep["endpoint"]]
                if "below" in ep:
                    hit = v < ep["below"]
                elif "below_or_equal" in ep:
                    hit = v <= ep["below_or_equal"]
                elif "above" in ep:
                    hit = v > ep["above"]
                else:
                    hit = v >= ep["above_or_equal"]
                val = np.where(np.isfinite(v), hit.astype(np.float64), np.nan)
            else:
                j = outs.index(ep["output"])
                if typ == "minimum":
                    val = res.omin[:, j].copy()
                elif typ == "maximum":
                    val = res.omax[:, j].copy()
                else:
                    at = res.probes[:, probe_t.index(float(ep["at"])), j]
                    b = res.probes[:, base, j]
                    if typ == "value_at":
                        val = at.copy()
                    elif typ == "change_from_baseline":
                        val = at - b
                    else:
                        val = 100.0 * (at / b - 1.0)
            val[~ok] = np.nan
            values[name] = val
            cols[name] = val
    patients = pd.DataFrame(cols)
    # ---- percentile-band sketch over every successful patient
    groups, n_groups = band_groups(study, pop["arm_index"].to_numpy())
    sk = sketch_block(res.store[ok], groups[ok], n_groups)
    # ---- time courses (long) of the selected patients
    keep = study.data["outputs"]["timecourse"]["patients"]
    sel = np.ones(n, dtype=bool) if keep == "all" else cols["patient_id"] <= int(keep)
    times = study.store_times()
    s = times.size
    m = int(sel.sum())
    tc_cols: dict[str, Any] = {
        "replicate": np.repeat(cols["replicate"][sel], s),
        "patient_id": np.repeat(cols["patient_id"][sel], s),
        "arm": np.repeat(cols["arm"][sel], s),
        "time": np.tile(times.astype(np.float32), m),
    }
    for j, o in enumerate(study.data["outputs"]["timecourse"]["outputs"]):
        tc_cols[o] = res.store[sel, :, j].ravel()
    return patients, pd.DataFrame(tc_cols), sk
