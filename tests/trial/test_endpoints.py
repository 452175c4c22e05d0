"""Dropout, AUEC, time to event, observed endpoints and success in simulated studies.

One composed model (``pk_1cmt`` + ``weibull_tte`` with DRUG = CP; one compiled
kernel) without variability, so every placebo patient has the analytic curves
CP = 0 and SURV(t) = exp(-(t / 300)^1.5), and every treated patient the same CP
(100 mg IV bolus every 24 h, CL 5 L/h, V 50 L: CP = 2 exp(-0.1 t) after the first
dose). The patients differ only by their keyed draws: the dropout time (purpose
``dropout``), the time-to-event uniform (``tte:event``) and the residual errors. So
every patient's endpoints can be checked against a closed form:

* AUEC against the analytic integral (regularised incomplete gamma for the Weibull
  survival, exponentials for CP) and the exact trapezoid sum;
* TTE event times against the inversion of SURV at the patient's keyed uniform, and
  their distribution against the survival function (KS test);
* the threshold-crossing TTE and the adverse-event grades at the analytic crossing
  times, counted up to the dropout;
* dropout times against the declared piecewise hazard (KS) and the keyed inversion;
* the censoring rules ``missing`` and ``locf`` on hand-checkable values;
* observed endpoints against the observations table; chunk invariance; validation;
  the aggregate, report and manifest stages with the success tables.
"""

from __future__ import annotations

import copy
import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import special
from scipy import stats as sps

from tests.conftest import ROOT, snakemake_cmd
from vtrial.analysis.sketch import to_frame
from vtrial.errors import ConfigError
from vtrial.infra.rng import patient_uniforms
from vtrial.population.sampling import sample_population
from vtrial.report.forest import forest_rows
from vtrial.run import stages as pipeline
from vtrial.run.chunk import observations_table, run_population, simulate_patients
from vtrial.run.cli import describe, verify
from vtrial.run.io import read_parts, write_parquet
from vtrial.study.config import Study, load_study, study_from_dict
from vtrial.trial.dropout import Hazard, dropout_times

SCALE, SHAPE = 300.0, 1.5  # Weibull event hazard (h)
END = 336.0
N = 3000  # patients per replicate
SEED = 17
DROP_SCALE_H, DROP_SHAPE = 40 * 24.0, 1.2  # dropout hazard
AE_RATIO = 4.0
BETA_AUC = 0.002
VISIT = 48.0


def surv(t: np.ndarray | float) -> np.ndarray:
    return np.exp(-((np.asarray(t, dtype=np.float64) / SCALE) ** SHAPE))


def surv_crossing(p: float) -> float:
    """Time at which the placebo SURV falls to p."""
    return SCALE * (-math.log(p)) ** (1.0 / SHAPE)


T_GRADE = [surv_crossing(p) for p in (0.9, 0.7, 0.5)]  # 66.92, 150.88, 234.97 h


def study_data(censoring: str = "missing") -> dict[str, Any]:
    dropout: dict[str, Any] = {
        "hazard": "weibull",
        "scale_days": DROP_SCALE_H / 24.0,
        "shape": DROP_SHAPE,
        "exposure": {"metric": "auc", "beta": BETA_AUC},
        "adverse_event": {"event": "surv_low", "grade": 3, "hazard_ratio": AE_RATIO},
        "censoring": censoring,
    }
    if censoring == "locf":
        dropout["visits"] = {"every": VISIT}
    return {
        "study": {"name": "trial-layer", "seed": SEED, "replicates": 2, "control_arm": "placebo"},
        "population": {"size": N},
        "model": {
            "pk": "pk_1cmt",
            "components": {"event": {"model": "weibull_tte", "links": {"DRUG": "CP"}}},
            "parameters": {
                "SCALE": {"value": SCALE},
                "SHAPE": {"value": SHAPE},
                "BETA": {"value": -0.5},
            },
            "residual_error": {"CP": {"proportional": 0.2}},
        },
        "arms": [
            {"name": "placebo", "regimen": "none"},
            {
                "name": "drug",
                "regimen": {"route": "iv_bolus", "dose": 100.0, "interval": 24, "count": 14},
            },
        ],
        "simulation": {"end": END, "grid": 1.0},
        "adverse_events": {
            "surv_low": {"output": "SURV", "thresholds": [0.9, 0.7, 0.5], "direction": "below"}
        },
        "endpoints": {
            "surv_auec": {"type": "auec", "output": "SURV", "every": 2},
            "surv_loss": {
                "type": "auec",
                "output": "SURV",
                "to": 168,
                "every": 2,
                "above_baseline": True,
            },
            "cp_auec": {"type": "auec", "output": "CP", "from": 1, "to": 24, "every": 1},
            "event": {"type": "time_to_event", "output": "SURV", "every": 2},
            "half": {"type": "time_to_event", "output": "SURV", "below": 0.5},
            "surv_300": {"type": "value_at", "output": "SURV", "at": 300},
            "surv_change": {"type": "change_from_baseline", "output": "SURV", "at": 300},
            "surv_min": {"type": "minimum", "output": "SURV"},
            "low_300": {"type": "responder", "endpoint": "surv_300", "below": 0.5},
            "cp_obs": {"type": "value_at", "output": "CP", "at": 24, "observed": True},
        },
        "dropout": dropout,
        "success": [
            {"endpoint": "event", "direction": "greater"},
            {"endpoint": "surv_auec", "direction": "greater", "test": "mann_whitney"},
        ],
        "outputs": {
            "timecourse": {"every": 24, "outputs": ["CP", "SURV"], "patients": 3},
            "observations": {"outputs": ["CP"], "times": [0, 24], "every": VISIT, "from": VISIT},
        },
        "execution": {"shards": 1, "workers": 1, "chunk_size": 100000},
    }


Sim = tuple[Study, pd.DataFrame, pd.DataFrame, Any]


def simulate(data: dict[str, Any]) -> Sim:
    study = study_from_dict(data)
    pop = sample_population(study)
    patients, _, bands = simulate_patients(study, pop, threads=1)
    return study, pop, patients, bands


@pytest.fixture(scope="module")
def missing() -> Sim:
    return simulate(study_data("missing"))


@pytest.fixture(scope="module")
def locf() -> Sim:
    return simulate(study_data("locf"))


def placebo(patients: pd.DataFrame) -> pd.DataFrame:
    return patients[patients["arm"] == "placebo"]


# --------------------------------------------------------------------------- #
# AUEC
# --------------------------------------------------------------------------- #


def test_auec_against_analytic_integrals(missing: Sim) -> None:
    """Completers (no dropout before `to`): SURV over [0, 336] (placebo) and CP over
    [1, 24] h (drug), against the trapezoid sum of the closed forms (rtol 1e-6, the
    ODE tolerance) and against the integrals themselves within the trapezoid bound
    (b - a) h^2 max|f''| / 12. Measured: SURV 222.0368 vs 222.0373, |error| 5.1e-4;
    CP 16.2960 vs 16.2824, relative error 8.3e-4 (bound 0.035 absolute)."""
    _, _, patients, _ = missing
    pl = placebo(patients)
    done = pl[pl["dropout_time"] >= END]
    assert len(done) > 500
    grid = np.arange(0.0, END + 1.0, 2.0)
    trap = np.trapezoid(surv(grid), grid)
    np.testing.assert_allclose(done["surv_auec"], trap, rtol=1e-6)
    # int_0^T exp(-(t/s)^k) dt = s Gamma(1 + 1/k) P(1/k, (T/s)^k)
    exact = (
        SCALE * special.gamma(1 + 1 / SHAPE) * special.gammainc(1 / SHAPE, (END / SCALE) ** SHAPE)
    )
    fpp = np.abs(np.gradient(np.gradient(surv(np.arange(0.0, END, 0.01)), 0.01), 0.01)).max()
    bound = END * 2.0**2 * fpp / 12
    assert abs(done["surv_auec"].iloc[0] - exact) < bound
    # above baseline: int (SURV - 1) over [0, 168]
    g168 = np.arange(0.0, 169.0, 2.0)
    np.testing.assert_allclose(
        pl.loc[pl["dropout_time"] >= 168, "surv_loss"],
        np.trapezoid(surv(g168) - 1.0, g168),
        rtol=1e-6,
    )
    # CP of the drug arm from 1 to 24 h (24 h is pre-dose: no jump inside the window)
    drug = patients[(patients["arm"] == "drug") & (patients["dropout_time"] >= 24)]
    t = np.arange(1.0, 25.0)
    np.testing.assert_allclose(drug["cp_auec"], np.trapezoid(2.0 * np.exp(-0.1 * t), t), rtol=1e-6)
    exact_cp = 20.0 * (math.exp(-0.1) - math.exp(-2.4))
    bound_cp = 23.0 * 1.0 * (0.02 * math.exp(-0.1)) / 12
    assert abs(drug["cp_auec"].iloc[0] - exact_cp) < bound_cp
    assert (placebo(patients).loc[lambda d: d["dropout_time"] >= 24, "cp_auec"] == 0.0).all()


# --------------------------------------------------------------------------- #
# Time to event
# --------------------------------------------------------------------------- #


def test_survival_event_times_invert_the_survival_function(missing: Sim) -> None:
    """Placebo: the event time is SURV^-1(u) = s (-log u)^(1/k) for the keyed uniform u
    (purpose tte:event), up to the linear interpolation on the 2 h grid (|SURV(T) - u|
    at most SURV's interpolation error 8.1e-5, measured 5.5e-5; in time at most 0.075 h
    after the first interval, where SURV' -> 0), censored at min(dropout, end). KS test
    of the event times of the patients followed to the end against 1 - SURV(t)
    conditioned on t <= end: N = 1186 events of 1715, measured D = 0.021, p = 0.68."""
    _, _, patients, _ = missing
    pl = placebo(patients)
    u = patient_uniforms(SEED, "tte:event", pl["replicate"].to_numpy(), pl["patient_id"].to_numpy())
    t_exact = SCALE * (-np.log(u)) ** (1.0 / SHAPE)
    follow = np.minimum(pl["dropout_time"].to_numpy(), END)
    event = t_exact <= follow
    np.testing.assert_array_equal(pl["event_event"].to_numpy(), event.astype(float))
    np.testing.assert_allclose(pl.loc[~event, "event"], follow[~event], rtol=1e-12)
    got = pl.loc[event, "event"].to_numpy()
    # linear interpolation of SURV on the 2 h grid: |SURV(T) - u| is at most the
    # interpolation error of SURV (computed on a 0.001 h grid)
    fine = np.arange(0.0, END, 0.001)
    knots = np.arange(0.0, END + 1.0, 2.0)
    interp_err = np.abs(np.interp(fine, knots, surv(knots)) - surv(fine)).max()
    assert np.abs(surv(got) - u[event]).max() <= interp_err * (1 + 1e-3) + 1e-6
    # in time: largest in the first interval (SURV'(0) = 0), small after it
    err = np.abs(got - t_exact[event])
    assert err[t_exact[event] > 2.0].max() < 0.1, err.max()
    # distribution: patients followed to the end (dropout does not depend on u)
    full = pl["dropout_time"].to_numpy() >= END
    times = pl.loc[full & event, "event"].to_numpy()
    f_end = 1.0 - surv(END)
    res = sps.kstest(times, lambda t: (1.0 - surv(t)) / f_end)
    assert res.pvalue > 0.01, res
    # the share of events among them: binomial, within 4 SE
    n_full = int(full.sum())
    assert abs(times.size / n_full - f_end) < 4 * math.sqrt(f_end * (1 - f_end) / n_full)


def test_threshold_crossing_time_to_event(missing: Sim) -> None:
    """SURV < 0.5 at 300 (log 2)^(2/3) = 234.97 h (linear interpolation on the 1 h grid:
    measured |error| 4.0e-5 h), censored at the dropout when it comes first."""
    _, _, patients, _ = missing
    pl = placebo(patients)
    t_star = surv_crossing(0.5)
    d = pl["dropout_time"].to_numpy()
    event = d >= t_star + 0.01
    np.testing.assert_array_equal(pl.loc[event, "half_event"], 1.0)
    np.testing.assert_allclose(pl.loc[event, "half"], t_star, atol=1e-3)
    early = d < t_star - 0.01
    np.testing.assert_array_equal(pl.loc[early, "half_event"], 0.0)
    np.testing.assert_allclose(pl.loc[early, "half"], d[early], rtol=1e-12)


# --------------------------------------------------------------------------- #
# Dropout and censoring
# --------------------------------------------------------------------------- #


def test_dropout_times_follow_the_declared_hazard(missing: Sim) -> None:
    """Placebo (auc 0): H(t) = H0(t) up to the grade-3 onset of surv_low (234.97 h),
    then H0(234.97) + 4 (H0(t) - H0(234.97)), with H0(t) = (t / 960)^1.2.

    Every patient's time is the keyed inversion (drug arm: with its multiplier
    exp(0.002 auc) and onset), exactly; the placebo times within the study follow
    the conditional CDF (KS, N = 1285 of 3000, measured D = 0.026, p = 0.36) and the
    share of patients still in the study is exp(-H(336)) within 4 SE (measured
    0.572 vs 0.559, 1.3 SE); the drug arm (x 1.75 by its AUC) keeps 0.512.
    """
    _, _, patients, _ = missing
    h = Hazard("weibull", scale=DROP_SCALE_H, shape=DROP_SHAPE)
    u = patient_uniforms(
        SEED, "dropout", patients["replicate"].to_numpy(), patients["patient_id"].to_numpy()
    )
    onset = patients["ae_surv_low_time_grade3"].to_numpy()  # NaN after the dropout: no effect
    mult = np.exp(BETA_AUC * patients["auc"].to_numpy())
    want = dropout_times(h, u, multiplier=mult, onset=onset, ratio=AE_RATIO, end=END)
    np.testing.assert_array_equal(np.isinf(patients["dropout_time"]), np.isinf(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(patients["dropout_time"].to_numpy()[fin], want[fin], rtol=1e-12)

    tau = T_GRADE[2]

    def cum(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        h0 = (t / DROP_SCALE_H) ** DROP_SHAPE
        h_tau = (tau / DROP_SCALE_H) ** DROP_SHAPE
        return np.where(t <= tau, h0, h_tau + AE_RATIO * (h0 - h_tau))

    d = placebo(patients)["dropout_time"].to_numpy()
    inside = d[np.isfinite(d)]
    p_end = math.exp(-float(cum(np.array(END))))
    res = sps.kstest(inside, lambda t: (1.0 - np.exp(-cum(t))) / (1.0 - p_end))
    assert res.pvalue > 0.01, res
    stay = np.isinf(d).mean()
    assert abs(stay - p_end) < 4 * math.sqrt(p_end * (1 - p_end) / d.size)
    # the exposure raises the drug arm's dropout
    drug = patients[patients["arm"] == "drug"]
    assert np.isinf(drug["dropout_time"]).mean() < stay - 0.03


def test_adverse_events_are_counted_up_to_the_dropout(missing: Sim) -> None:
    """Placebo SURV crosses 0.9, 0.7, 0.5 at 66.92, 150.88, 234.97 h: the grade is the
    number of those at or before the dropout; the grade-3 time is kept only then."""
    _, _, patients, _ = missing
    pl = placebo(patients)
    d = pl["dropout_time"].to_numpy()
    near = np.min(np.abs(d[:, None] - np.array(T_GRADE)[None, :]), axis=1) < 0.01
    want = (d[:, None] >= np.array(T_GRADE)[None, :]).sum(axis=1)
    np.testing.assert_array_equal(pl["ae_surv_low_grade"].to_numpy()[~near], want[~near])
    assert set(want) == {0, 1, 2, 3}
    t3 = pl["ae_surv_low_time_grade3"].to_numpy()
    np.testing.assert_array_equal(np.isfinite(t3)[~near], (want == 3)[~near])
    np.testing.assert_allclose(t3[np.isfinite(t3)], T_GRADE[2], atol=1e-3)
    # the worst value stays that of the whole simulation
    np.testing.assert_allclose(pl["ae_surv_low_worst"], surv(END), rtol=1e-6)


def test_censoring_missing(missing: Sim) -> None:
    """missing: an endpoint taken after the dropout is NaN (responders follow)."""
    _, _, patients, _ = missing
    pl = placebo(patients)
    d = pl["dropout_time"].to_numpy()
    late = d < 300
    assert 0 < late.sum() < len(pl)
    assert pl.loc[late, ["surv_300", "surv_change", "low_300"]].isna().all().all()
    np.testing.assert_allclose(pl.loc[~late, "surv_300"], math.exp(-1.0), rtol=1e-6)
    np.testing.assert_allclose(pl.loc[~late, "surv_change"], math.exp(-1.0) - 1.0, rtol=1e-6)
    assert (pl.loc[~late, "low_300"] == 1.0).all()
    gone = np.isfinite(d)  # dropped out before the end: no whole-study minimum
    assert pl.loc[gone, "surv_min"].isna().all()
    np.testing.assert_allclose(pl.loc[~gone, "surv_min"], surv(END), rtol=1e-6)
    assert pl.loc[d < END, "surv_auec"].isna().all()


def test_censoring_locf(locf: Sim, missing: Sim) -> None:
    """locf (visits every 48 h): the value at the last visit at or before the dropout,
    baseline if none; e.g. a dropout at 100 h carries SURV(96) forward."""
    _, _, patients, _ = locf
    pl = placebo(patients)
    d = pl["dropout_time"].to_numpy()
    late = d < 300
    v = np.where(late, np.floor(np.minimum(d, 299.0) / VISIT) * VISIT, 300.0)
    np.testing.assert_allclose(pl["surv_300"], surv(v), rtol=1e-6)
    np.testing.assert_allclose(pl["surv_change"], surv(v) - 1.0, rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(pl["low_300"], (surv(v) < 0.5).astype(float))
    assert (v == 0).any()  # some carry the baseline forward
    assert ((v >= 240) & late).any()  # and some a responder value
    # auec: the curve to the last visit, then held at its value
    row = pl[(d > 100) & (d < 140)].iloc[0]
    grid = np.arange(0.0, END + 1.0, 2.0)
    f = np.where(grid > 96.0, surv(96.0), surv(grid))
    assert row["surv_auec"] == pytest.approx(np.trapezoid(f, grid), rel=1e-6)
    # whole-study extremes stay missing; time to event is censored as with missing
    assert pl.loc[np.isfinite(d), "surv_min"].isna().all()
    other = placebo(missing[2])  # the same patients with censoring: missing
    np.testing.assert_array_equal(other["dropout_time"], d)
    assert np.isfinite(d).sum() > 100
    for col in ("event", "event_event"):
        np.testing.assert_array_equal(pl[col], other[col])


# --------------------------------------------------------------------------- #
# Observed endpoints, keyed draws
# --------------------------------------------------------------------------- #


def test_observed_endpoint_is_the_observation(missing: Sim) -> None:
    study, pop, patients, _ = missing
    res = run_population(study, pop, threads=1)
    obs = observations_table(study, pop, res)
    dv = obs[(obs["time"] == 24.0) & (obs["output"] == "CP")].set_index(
        ["replicate", "patient_id"]
    )["dv"]
    keep = patients["dropout_time"].to_numpy() >= 24
    got = patients.set_index(["replicate", "patient_id"])["cp_obs"]
    pd.testing.assert_series_equal(got[keep], dv.loc[got.index][keep], check_names=False)
    assert got[~keep].isna().all()
    drug = patients.loc[keep & (patients["arm"] == "drug").to_numpy(), "cp_obs"]
    # proportional error of 20 % around 2 exp(-2.4) = 0.1814 mg/L (pre-dose at 24 h)
    assert drug.mean() == pytest.approx(2 * math.exp(-2.4), rel=0.02)
    assert drug.std() / drug.mean() == pytest.approx(0.2, rel=0.1)


def test_failed_solves_give_missing_values() -> None:
    data = study_data()
    data["population"]["size"] = 20
    data["simulation"]["max_steps"] = 10  # 336 h with steps <= 24 h: fails
    _, _, patients, _ = simulate(data)
    assert (patients["solver_status"] == "max_steps").all()
    cols = ["dropout_time", "event", "event_event", "half", "half_event", "surv_auec", "cp_obs"]
    assert patients[cols].isna().all().all()
    assert patients["ae_surv_low_grade"].isna().all()


def test_trial_layer_does_not_depend_on_chunks(missing: Sim) -> None:
    study, pop, patients, _ = missing
    cut = 1234
    parts = [
        simulate_patients(study, pop.iloc[:cut], threads=1)[0],
        simulate_patients(study, pop.iloc[cut:], threads=1)[0],
    ]
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), patients)


# --------------------------------------------------------------------------- #
# Summaries, success, report, manifest
# --------------------------------------------------------------------------- #


def test_stages_write_success_tables_and_plots(missing: Sim, tmp_path: Path) -> None:
    study, _, patients, bands = missing
    part = tmp_path / "patients" / "part-00000.parquet"
    write_parquet(patients, part, meta={"test": True})
    band = tmp_path / "bands" / "part-00000.parquet"
    write_parquet(to_frame(bands), band, meta={"test": True})
    names = [*pipeline.SUMMARY_TABLES, "trial", "success"]
    outputs = {name: tmp_path / "summary" / f"{name}.parquet" for name in names}
    rows = pipeline.run_aggregate(study, [part], [band], outputs)
    assert rows["trial"] == 2 * 3  # 2 replicates x (2 criteria + all), one compared arm
    assert rows["success"] == 3
    trial = pd.read_parquet(outputs["trial"])
    assert (tmp_path / "summary" / "trial.csv").exists()
    # the drug lowers the event hazard (BETA < 0): longer times, more area under SURV
    assert trial["success"].all()
    assert (trial.loc[trial["criterion"] == "event", "diff"] < 1.0).all()
    pos = pd.read_parquet(outputs["success"])
    assert (pos["probability"] == 1.0).all()
    eff = pd.read_parquet(outputs["efficacy"])
    tte = eff[eff["endpoint"] == "event"]
    assert set(tte["kind"]) == {"time_to_event"}
    # the efficacy table's row is the trial table's
    row = tte[(tte["replicate"] == 0) & (tte["arm"] == "drug")].iloc[0]
    t0 = trial[(trial["replicate"] == 0) & (trial["criterion"] == "event")].iloc[0]
    assert (row["diff"], row["p_value"]) == (t0["diff"], t0["p_value"])
    safety = pd.read_parquet(outputs["safety"])
    assert {"median_time_grade3_ci_low", "median_time_grade3_ci_high"} <= set(safety.columns)

    # the forest plot shows differences, not hazard ratios
    forest, _ = forest_rows(eff, "placebo", study.arm_names)
    assert {r.endpoint for r in forest} == {
        "surv_auec",
        "surv_loss",
        "cp_auec",
        "surv_300",
        "surv_change",
        "surv_min",
        "low_300",
        "cp_obs",
    }
    outdir = tmp_path / "report"
    paths = pipeline.run_report(study, outputs, [part], outdir)
    got = {p.name for p in paths}
    assert {"km_event.png", "km_half.png", "success.png", "forest.png"} <= got
    assert set(pipeline.report_files(study)) == got
    groups = pipeline.report_groups(study)  # one caption per kind in the HTML report
    for kind, names in groups.items():  # each file under the kind its name starts with
        assert all(n.removesuffix(".png").removeprefix(kind)[:1] in ("", "_") for n in names)
    assert groups["km"] == ["km_event.png", "km_half.png"]
    assert groups["success"] == ["success.png"]
    assert all(k in pipeline.PLOT_KINDS for k in groups)
    for kind in groups:
        assert (ROOT / "workflow" / "report" / f"plot_{kind}.rst").is_file()
    all_outputs = [part, band, *outputs.values(), *paths]
    pipeline.run_manifest(study, all_outputs, tmp_path / "manifest.json")
    assert verify(tmp_path) == []
    text = describe(tmp_path)
    assert "event: median" in text
    assert "hazard ratio vs control" in text
    assert "probability of success (2 replicate trials):" in text
    assert "all: drug (every criterion): 100.0 %" in text
    back = read_parts([part])  # round trip of the new columns (dropout, time to event)
    pd.testing.assert_frame_equal(back, patients.reset_index(drop=True), check_dtype=False)
    back = pd.read_parquet(part)
    assert back["dropout_time"].dtype == np.float64
    assert np.isinf(back["dropout_time"]).any()


def test_workflow_plans_the_success_tables(tmp_path: Path) -> None:
    """Snakemake (dry run) plans trial/success tables in aggregate, the plots in report."""
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study_data(), sort_keys=False))
    cmd = snakemake_cmd(tmp_path, path, "-n")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    for name in (
        "summary/trial.parquet",
        "summary/success.parquet",
        "report/success.png",
        "report/km_event.png",
    ):
        assert name in out, name


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #


def refused(tmp_path: Path, data: dict[str, Any]) -> list[str]:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as info:
        load_study(path)
    lines = [str(p) for p in info.value.problems]
    assert all(line.startswith(f"{path}: ") for line in lines)
    return lines


def change(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(study_data())
    *keys, last = path.split(".")
    node: Any = data
    for k in keys:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("dropout.rate_per_year", 0.3, ["dropout:", "weibull hazard takes", "rate_per_year"]),
        ("dropout.shape", None, ["dropout:", "needs ['scale_days', 'shape']", "missing ['shape']"]),
        ("dropout.hazard", "gompertz", ["dropout.hazard:", "must be one of", "gompertz"]),
        (
            "dropout.adverse_event",
            {"event": "nausea", "hazard_ratio": 2},
            ["dropout.adverse_event.event:", "not an adverse event", "'nausea'"],
        ),
        (
            "dropout.adverse_event",
            {"event": "surv_low", "grade": 4, "hazard_ratio": 2},
            ["dropout.adverse_event.grade:", "3 grade limit(s)", "grade 4"],
        ),
        ("dropout.censoring", "locf", ["dropout.visits:", "locf needs"]),
        ("dropout.visits", {"every": 48}, ["dropout.visits:", "only applies with censoring: locf"]),
        (
            "dropout.exposure",
            {"metric": "tmax", "beta": 1},
            ["dropout.exposure.metric:", "must be one of", "tmax"],
        ),
        ("endpoints.surv_auec.from", 400, ["endpoints.surv_auec.from:", "must be < to", "400"]),
        ("endpoints.surv_auec.to", 500, ["endpoints.surv_auec.to:", "<= simulation.end", "500"]),
        (
            "endpoints.surv_auec.at",
            5,
            ["endpoints.surv_auec:", "do not apply to type auec", "'at'"],
        ),
        (
            "endpoints.surv_auec.every",
            1e-4,
            ["endpoints.surv_auec.every:", "grid times (limit 100000)"],
        ),
        (
            "endpoints.event.output",
            "CP",
            ["endpoints.event.output:", "probability (unit 1)", "CP in mg/L"],
        ),
        ("endpoints.half.above", 0.9, ["endpoints.half:", "at most one of 'below' and 'above'"]),
        (
            "endpoints.half.every",
            3,
            ["endpoints.half:", "do not apply to type time_to_event", "'every'"],
        ),
        (
            "endpoints.surv_300.from",
            3,
            ["endpoints.surv_300:", "only apply to type auec", "'from'"],
        ),
        (
            "endpoints.surv_300.test",
            "logrank",
            ["endpoints.surv_300.test:", "continuous endpoint takes", "'logrank'"],
        ),
        (
            "endpoints.surv_300.observed",
            True,
            ["endpoints.surv_300.observed:", "not in outputs.observations.outputs", "'SURV'"],
        ),
        ("endpoints.cp_obs.at", 30, ["endpoints.cp_obs.observed:", "sampling times", "30.0"]),
        (
            "endpoints.surv_min.observed",
            True,
            ["endpoints.surv_min.observed:", "only applies to types", "minimum"],
        ),
        (
            "endpoints.low_300.endpoint",
            "event",
            ["endpoints.low_300.endpoint:", "time to event", "'event'"],
        ),
        (
            "endpoints.event_event",
            {"type": "minimum", "output": "CP"},
            ["endpoints.event_event:", "clashes with the event column", "'event'"],
        ),
        (
            "endpoints.dropout_time",
            {"type": "minimum", "output": "CP"},
            ["endpoints:", "reserved", "'dropout_time'"],
        ),
        ("success.0.endpoint", "nope", ["success[0].endpoint:", "not an endpoint", "'nope'"]),
        (
            "success.0.test",
            "welch_t",
            ["success[0].test:", "time_to_event endpoint takes", "'welch_t'"],
        ),
        (
            "success.0.compare_to",
            "active",
            ["success[0].compare_to:", "'control' or an arm name", "'active'"],
        ),
        ("success.0.direction", "up", ["success[0].direction:", "must be one of", "up"]),
        ("success.1.endpoint", "event", ["success[1].name:", "repeats success[0]", "'event'"]),
        ("success.0.alpha", 1.5, ["success[0].alpha:", "must be < 1", "1.5"]),
    ],
)
def test_trial_keys_are_validated(
    tmp_path: Path, path: str, value: Any, expected: list[str]
) -> None:
    lines = refused(tmp_path, change(path, value))
    assert any(all(s in line for s in expected) for line in lines), "\n".join(lines)


def test_locf_of_observed_values_needs_sampled_visits(tmp_path: Path) -> None:
    data = study_data("locf")
    data["outputs"]["observations"] = {"outputs": ["CP"], "times": [24, 96]}
    lines = refused(tmp_path, data)
    want = ["endpoints.cp_obs.observed:", "locf carries observations forward", "[0.0, 48.0, 144.0"]
    assert any(all(w in s for w in want) for s in lines), lines


def test_probe_memory_is_bounded(tmp_path: Path) -> None:
    """1e6 patients per Dask task x 181 probe times x 3 outputs x 8 bytes = 4.0 GiB."""
    data = study_data()
    data["population"]["size"] = 1_000_000
    data["execution"]["chunk_size"] = 1_000_000
    lines = refused(tmp_path, data)
    want = "1000000 x 181 x 3 x 8 = 4143 MiB per Dask task (limit 512 MiB)"
    assert any("execution.chunk_size:" in s and want in s for s in lines), lines


def test_several_problems_reported_at_once(tmp_path: Path) -> None:
    data = change("dropout.rate_per_year", 0.3)
    data["endpoints"]["surv_auec"]["from"] = 400
    data["success"][0]["compare_to"] = "active"
    data["study"]["control_arm"] = None
    lines = refused(tmp_path, data)
    assert len(lines) >= 3, lines
    data = study_data()
    data["study"]["control_arm"] = None
    lines = refused(tmp_path, data)
    assert any("success[0].compare_to" in s and "needs study.control_arm" in s for s in lines)


def test_defaults_are_filled() -> None:
    study = study_from_dict(study_data())
    ep = study.data["endpoints"]
    assert (ep["cp_auec"]["above_baseline"], ep["surv_loss"]["from"]) == (False, 0.0)
    assert ep["surv_auec"]["to"] == END
    assert "every" not in ep["half"]  # a threshold crossing is timed by the kernel
    assert study.data["success"][0] == {
        "endpoint": "event",
        "direction": "greater",
        "name": "event",
        "compare_to": "control",
        "alpha": 0.05,
        "test": "logrank",
    }
    assert study.data["dropout"]["adverse_event"]["grade"] == 3
    one = study_data()
    one["success"] = one["success"][0]  # a single criterion is a list of one
    assert len(study_from_dict(one).data["success"]) == 1
    assert study.endpoint_kinds()["event"] == "time_to_event"
    # probe times hold the AUEC and survival grids
    probes = set(study.probe_times())
    assert {0.0, 2.0, 334.0, 336.0, 1.0, 23.0, 300.0} <= probes
