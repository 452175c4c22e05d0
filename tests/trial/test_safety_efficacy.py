"""Graded adverse events from probabilities, the QTc scale and RECIST best response in
a simulated study (the categories on hand-checkable trajectories: tests/trial/test_recist.py).

* :mod:`vtrial.trial.adverse`: the drawn grade rule and its keyed uniforms;
* one simulated study (the composed model of
  tests/numerics/test_library_safety_efficacy.py, so the same compiled kernel):
  grade frequencies against the proportional-odds probabilities, placebo
  probabilities, QTc grades, best response against a loop over the kernel's probes,
  chunk invariance, Parquet round trip and the summaries;
* validation of the new study keys (file, key, rule and value in every message).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as sps
from scipy.special import expit

from tests.numerics.test_library_safety_efficacy import COMPONENTS
from vtrial.analysis import stats
from vtrial.analysis.efficacy import efficacy_summary
from vtrial.analysis.safety import safety_summary
from vtrial.errors import ConfigError, DataError
from vtrial.infra.rng import keyed_uniforms
from vtrial.population.sampling import sample_population
from vtrial.report.exposure import plot_exposure_response
from vtrial.report.plots import make_report
from vtrial.run import stages as pipeline
from vtrial.run.chunk import run_population, simulate_patients
from vtrial.run.io import read_parts, write_parquet
from vtrial.study.config import Study, load_study, study_from_dict
from vtrial.trial.adverse import GRADING_SCALES, drawn_grades, event_uniforms
from vtrial.trial.recist import (
    RESPONSE_CATEGORIES,
    assessment_times,
    visit_responses,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA: dict[str, Any] = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())

CR, PR, SD, PD = range(4)


# --------------------------------------------------------------------------- #
# RECIST categories on hand-checkable trajectories
# --------------------------------------------------------------------------- #


# --------------------------------------------------------------------------- #
# Drawn grades
# --------------------------------------------------------------------------- #


def test_drawn_grade_rule() -> None:
    p = np.array([[0.5, 0.2, 0.1, 0.01]] * 6)
    u = np.array([0.6, 0.5, 0.3, 0.15, 0.05, 0.005])
    # u < p_k counted: 0.5 is not < 0.5
    assert drawn_grades(p, u).tolist() == [0, 0, 1, 2, 3, 4]
    # non-monotone probabilities are made non-increasing: P(grade >= 3) <= P(grade >= 2)
    assert drawn_grades([[0.5, 0.1, 0.3]], [0.2]).tolist() == [1]
    assert drawn_grades([[np.nan, 0.1]], [0.05]).tolist() == [0]


def test_event_uniforms_are_rows_of_the_keyed_stream() -> None:
    rep = np.array([1, 0, 1, 0, 1])
    pid = np.array([7, 3, 2, 10, 3])
    u = event_uniforms(42, "diarrhoea", rep, pid)
    for r in (0, 1):
        full = keyed_uniforms(42, "ae:diarrhoea", r, 10, 1)[:, 0]
        np.testing.assert_array_equal(u[rep == r], full[pid[rep == r] - 1])
    with pytest.raises(ValueError, match="patient_id must be >= 1"):
        event_uniforms(42, "x", [0], [0])


# --------------------------------------------------------------------------- #
# One simulated study
# --------------------------------------------------------------------------- #

N_PER_REPLICATE = 4000
# a 50 mg bolus (CP 1 mg/L, V1 50 L) plus a 5 mg/h infusion (CL 5 L/h) for 72 h keep
# CP = exp(-0.1 t) + (1 - exp(-0.1 t)) = 1 mg/L exactly until 72 h, then it washes out
# and the tumours regrow (so some responses are followed by progression)
REGIMEN = [
    {"route": "iv_bolus", "dose": 50.0},
    {"route": "iv_infusion", "dose": 360.0, "duration": 72.0},
]
CP_ON_DRUG = 1.0
END = 168.0
B = {"B1": -0.4, "B2": -1.5, "B3": -2.6, "B4": -4.0}
AE_SLOPE = 1.1
QTC_SLOPE = 45.0  # ms per mg/L: max DQTCF about 45 ms


def study_data() -> dict[str, Any]:
    return {
        "study": {"name": "safety-efficacy", "seed": 7, "replicates": 2},
        "population": {"size": N_PER_REPLICATE},
        "model": {
            "pk": "pk_1cmt",
            "components": copy.deepcopy(COMPONENTS),
            "parameters": {
                **{k: {"value": v} for k, v in B.items()},
                "AE_SLOPE": {"value": AE_SLOPE},
                "QTC_SLOPE": {"value": QTC_SLOPE},
                "W0": {"value": 1.0},
                "K2": {"value": 0.03},
                "K1": {"value": 0.1},
            },
            "iiv": {
                "omega": {"QTCF0": 400.0, "K2": 1.0, "W0": 0.09},
                "distribution": {"QTCF0": "normal"},
            },
        },
        "arms": [
            {"name": "placebo", "regimen": "none"},
            {"name": "infusion", "regimen": REGIMEN},
        ],
        "simulation": {"end": END, "grid": 1.0},
        "adverse_events": {
            "diarrhoea": {"probabilities": ["P_GE1", "P_GE2", "P_GE3", "P_GE4"]},
            "qtc_prolonged": {
                "output": "QTCF",
                "grading": "ctcae_v5_electrocardiogram_qt_corrected_interval_prolonged",
            },
            "dqtcf": {"output": "DQTCF", "thresholds": [30.0, 60.0], "direction": "above"},
        },
        "endpoints": {
            "bor": {
                "type": "best_response",
                "output": "TUMOUR",
                "every": 24,
                "complete_below": 0.02,
                "min_increase": 0.01,
            },
            "orr": {"type": "responder", "endpoint": "bor", "in": ["CR", "PR"]},
            "tumour_change": {
                "type": "percent_change_from_baseline",
                "output": "TUMOUR",
                "at": 168,
            },
        },
        "outputs": {"timecourse": {"every": 24, "outputs": ["TUMOUR", "CP"], "patients": 20}},
        "execution": {"shards": 1, "workers": 1, "chunk_size": 100000},
    }


@pytest.fixture(scope="module")
def study() -> Study:
    return study_from_dict(study_data())


@pytest.fixture(scope="module")
def population(study: Study) -> pd.DataFrame:
    return sample_population(study)


@pytest.fixture(scope="module")
def simulated(study: Study, population: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, Any]:
    return simulate_patients(study, population, threads=1)


def test_study_probe_times_and_kinds(study: Study) -> None:
    probes = study.probe_times()
    assert probes == [0.0, *(24.0 * k for k in range(1, 8))]  # 168 also from `at`
    assert study.endpoint_kinds() == {
        "bor": "categorical",
        "orr": "binary",
        "tumour_change": "continuous",
    }
    assert study.adverse_events["qtc_prolonged"].grading() == ([450.0, 480.0, 500.0], 1)
    with pytest.raises(ValueError, match="graded from probabilities"):
        study.adverse_events["diarrhoea"].grading()


def test_grade_frequencies_match_proportional_odds(
    study: Study, simulated: tuple[pd.DataFrame, pd.DataFrame, Any]
) -> None:
    """Observed grades vs the model's P(grade = j) = p_j - p_{j+1}, per arm.

    Tolerance: each of the 5 category frequencies within 4.5 binomial standard
    errors (sqrt(q (1 - q) / n), n = 4000 patients per arm over both replicates),
    and a chi-square goodness-of-fit p-value > 1e-3 (measured: largest |z| 2.1,
    p = 0.74 placebo and 0.078 on drug). The draws are keyed by the seed, so the test
    is deterministic. The grades are also rebuilt exactly from the keyed uniforms, so
    a rule with the right distribution but other draws (another stream, row or
    comparison) fails too.
    """
    patients = simulated[0]
    assert (patients["solver_status"] == "ok").all()
    cp_max = {"placebo": 0.0, "infusion": CP_ON_DRUG}
    for arm, cp in cp_max.items():
        rows = patients[patients["arm"] == arm]
        p = np.array([expit(B[f"B{k}"] + AE_SLOPE * cp) for k in range(1, 5)])
        # worst P(grade >= 1): the placebo probability without drug, else at CP = 1
        np.testing.assert_allclose(rows["ae_diarrhoea_worst"], p[0], rtol=1e-9)
        expected = -np.diff(np.concatenate([[1.0], p, [0.0]]))
        grades = rows["ae_diarrhoea_grade"].to_numpy(dtype=np.int64)
        n = grades.size
        observed = np.bincount(grades, minlength=5)[:5]
        assert observed.sum() == n
        se = np.sqrt(expected * (1.0 - expected) / n)
        np.testing.assert_array_less(np.abs(observed / n - expected), 4.5 * se)
        assert sps.chisquare(observed, expected * n).pvalue > 1e-3
        assert rows["ae_diarrhoea_time_grade3"].isna().all()
        # exactly the rule: grade = #{k: u < p_k} with the keyed uniform of the patient
        for r in (0, 1):
            sub = rows[rows["replicate"] == r]
            u = keyed_uniforms(study.seed, "ae:diarrhoea", r, N_PER_REPLICATE, 1)[:, 0]
            want = (u[sub["patient_id"].to_numpy() - 1, None] < p[None, :]).sum(axis=1)
            np.testing.assert_array_equal(sub["ae_diarrhoea_grade"].to_numpy(), want)
    # the drug raises every grade probability
    mean = patients.groupby("arm")["ae_diarrhoea_grade"].mean()
    assert mean["infusion"] > mean["placebo"] + 0.3


def test_qtc_grades(
    population: pd.DataFrame, simulated: tuple[pd.DataFrame, pd.DataFrame, Any]
) -> None:
    patients = simulated[0]
    dq = np.where(patients["arm"] == "infusion", QTC_SLOPE * CP_ON_DRUG, 0.0)
    worst = population["QTCF0"].to_numpy() + dq
    np.testing.assert_allclose(patients["ae_qtc_prolonged_worst"], worst, rtol=1e-9)
    want = (worst[:, None] > np.array([450.0, 480.0, 500.0])[None, :]).sum(axis=1)
    np.testing.assert_array_equal(patients["ae_qtc_prolonged_grade"].to_numpy(), want)
    counts = np.bincount(want, minlength=4)
    assert counts.min() > 0  # every grade 0-3 occurs (baseline SD 20 ms, +45 ms on drug)
    # grade 3 crossings are timed on the grid (linear interpolation)
    has_t = patients["ae_qtc_prolonged_time_grade3"].notna().to_numpy()
    np.testing.assert_array_equal(has_t, want >= 3)
    # ICH E14 categories of the change: > 30 ms on drug (45 ms), none on placebo
    dq_grade = patients["ae_dqtcf_grade"].to_numpy()
    np.testing.assert_array_equal(dq_grade, np.where(dq > 30.0, 1, 0))
    assert patients["ae_dqtcf_time_grade3"].isna().all()


def _loop_best_response(base: float, sizes: np.ndarray, cr: float, inc: float) -> str | None:
    """Straightforward per-patient RECIST loop (independent of vtrial.trial.recist)."""
    if not (np.isfinite(base) and base > 0):
        return None
    nadir = base
    best = None
    rank = {"CR": 0, "PR": 1, "SD": 2}
    for k, s in enumerate(sizes):
        if not np.isfinite(s):
            return None
        if s <= cr:
            cat = "CR"
        elif s >= 1.2 * nadir and s - nadir >= inc:
            return "PD" if k == 0 else best
        elif s <= 0.7 * base:
            cat = "PR"
        else:
            cat = "SD"
        if best is None or rank[cat] < rank[best]:
            best = cat
        nadir = min(nadir, s)
    return best


def test_best_response_in_the_patients_table(
    study: Study, population: pd.DataFrame, simulated: tuple[pd.DataFrame, pd.DataFrame, Any]
) -> None:
    patients, timecourse, _ = simulated
    res = run_population(study, population, threads=1)
    probe_t = study.probe_times()
    j = list(study.model.outputs).index("TUMOUR")
    times = assessment_times(study.data["endpoints"]["bor"], END)
    idx = [probe_t.index(t) for t in times]
    want = [
        _loop_best_response(res.probes[i, 0, j], res.probes[i, idx, j], 0.02, 0.01)
        for i in range(len(population))
    ]
    got = [None if pd.isna(v) else str(v) for v in patients["bor"]]
    assert got == want
    assert isinstance(patients["bor"].dtype, pd.CategoricalDtype)
    treated = patients[patients["arm"] == "infusion"]
    # the K2 variability gives every category, and responses followed by progression
    assert set(treated["bor"].astype(str)) == set(RESPONSE_CATEGORIES)
    codes = visit_responses(res.probes[:, 0, j], res.probes[:, idx, j], complete_below=0.02)
    later_pd = (codes == PD).any(axis=1) & (codes[:, 0] != PD)
    assert set(patients.loc[later_pd, "bor"].astype(str)) >= {"CR", "PR", "SD"}
    assert set(patients.loc[patients["arm"] == "placebo", "bor"].astype(str)) == {"PD"}
    orr = patients["bor"].isin(["CR", "PR"]).to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(patients["orr"].to_numpy(), orr)
    # the probes are the model's values at the assessment times (stored every 24 h)
    tc = timecourse[(timecourse["replicate"] == 0) & (timecourse["patient_id"] == 1)]
    row = int(np.flatnonzero((population["replicate"] == 0) & (population["patient_id"] == 1))[0])
    stored = tc.set_index("time")["TUMOUR"]
    for t, i in zip(times, idx, strict=True):
        assert stored[np.float32(t)] == pytest.approx(res.probes[row, i, j], rel=1e-6)


def test_results_do_not_depend_on_chunks(
    study: Study,
    population: pd.DataFrame,
    simulated: tuple[pd.DataFrame, pd.DataFrame, Any],
    tmp_path: Path,
) -> None:
    """Two chunks split inside replicate 0 give the same patients table, also via Parquet."""
    full = simulated[0]
    cut = 1234
    parts = [
        simulate_patients(study, population.iloc[:cut], threads=1)[0],
        simulate_patients(study, population.iloc[cut:], threads=1)[0],
    ]
    joined = pd.concat(parts, ignore_index=True)
    pd.testing.assert_frame_equal(joined, full)
    paths = [tmp_path / f"part-{k}.parquet" for k in range(2)]
    for part, path in zip(parts, paths, strict=True):
        write_parquet(part, path, meta={"test": True})
    back = read_parts(paths)
    pd.testing.assert_frame_equal(back, full, check_dtype=False)
    assert isinstance(back["bor"].dtype, pd.CategoricalDtype)
    assert list(back["bor"].cat.categories) == list(RESPONSE_CATEGORIES)


def test_summaries(study: Study, simulated: tuple[pd.DataFrame, pd.DataFrame, Any]) -> None:
    patients = simulated[0]
    arms = study.arm_names
    eff = efficacy_summary(patients, endpoints=study.endpoint_kinds(), arms=arms, control="placebo")
    names = ["bor=CR", "bor=PR", "bor=SD", "bor=PD", "orr", "tumour_change"]
    assert eff["endpoint"].tolist() == names * 4  # 2 replicates x 2 arms
    for _, row in eff[eff["endpoint"].str.startswith("bor=")].iterrows():
        sel = (patients["replicate"] == row["replicate"]) & (patients["arm"] == row["arm"])
        cat = row["endpoint"].split("=")[1]
        k = int((patients.loc[sel, "bor"] == cat).sum())
        n = int(sel.sum())
        assert (row["kind"], row["n"], row["n_missing"]) == ("binary", n, 0)
        assert row["estimate"] == k / n
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(
            stats.wilson_interval(k, n, 0.95), rel=1e-12
        )
    # ORR = P(CR) + P(PR)
    est = eff.set_index(["replicate", "arm", "endpoint"])["estimate"]
    for r in (0, 1):
        for arm in arms:
            assert est[(r, arm, "orr")] == pytest.approx(
                est[(r, arm, "bor=CR")] + est[(r, arm, "bor=PR")], abs=1e-12
            )
    safety = safety_summary(
        patients.assign(
            **{
                f"ae_{e}_grade": patients[f"ae_{e}_grade"].astype("float64")
                for e in study.data["adverse_events"]
            }
        ),
        events=list(study.data["adverse_events"]),
        arms=arms,
        horizon=END,
    )
    drawn = safety[(safety["event"] == "diarrhoea") & (safety["grade"] == ">=3")]
    assert drawn["median_time_grade3"].isna().all()  # untimed event
    for _, row in drawn.iterrows():
        sel = (patients["replicate"] == row["replicate"]) & (patients["arm"] == row["arm"])
        assert row["count"] == int((patients.loc[sel, "ae_diarrhoea_grade"] >= 3).sum())


def test_pipeline_summaries_and_report(
    study: Study, simulated: tuple[pd.DataFrame, pd.DataFrame, Any], tmp_path: Path
) -> None:
    """The workflow's aggregate and report stages take the new columns as they are."""
    patients, _, bands = simulated
    tables = pipeline.summaries(study, patients, bands)
    eff = tables["efficacy"]
    assert {"bor=CR", "bor=PR", "bor=SD", "bor=PD", "orr"} <= set(eff["endpoint"])
    assert set(tables["safety"]["event"]) == {"diarrhoea", "qtc_prolonged", "dqtcf"}
    paths = make_report(
        tables,
        patients,
        outdir=tmp_path,
        arms=study.arm_names,
        control="placebo",
        units=study.model.output_units,
        events={e: f"ae_{e}_grade" for e in study.data["adverse_events"]},
        exposure_unit="mg/L",
    )
    assert {p.name for p in map(Path, paths)} >= {"forest.png", "safety_diarrhoea.png"}


def test_exposure_response_plot_with_no_event_in_a_bin(tmp_path: Path) -> None:
    # statsmodels' Wilson lower bound for 0 of 150 is 1.7e-18, not 0: the error bar
    # length p - ci_low was negative and matplotlib refused it
    assert stats.wilson_interval(0, 150, 0.95)[0] > 0.0
    n = 150
    patients = pd.DataFrame(
        {
            "solver_status": ["ok"] * n,
            "cmax": np.linspace(1.0, 2.0, n),
            "ae_x_grade": np.zeros(n),
        }
    )
    path = plot_exposure_response(
        patients,
        metric="cmax",
        event_grade_column="ae_x_grade",
        unit="mg/L",
        path=tmp_path / "er.png",
        bins=1,
    )
    assert Path(path).stat().st_size > 0


def test_efficacy_categorical_explicit_categories_and_errors() -> None:
    df = pd.DataFrame(
        {
            "replicate": np.zeros(5, dtype=np.int32),
            "patient_id": np.arange(1, 6),
            "arm": ["a", "a", "a", "b", "b"],
            "solver_status": ["ok", "ok", "ok", "ok", "max_steps"],
            "resp": ["PR", None, "SD", "PR", "XX"],  # plain text; failed row ignored
        }
    )
    out = efficacy_summary(
        df,
        endpoints={"resp": "categorical"},
        arms=["a", "b"],
        control="a",
        categories={"resp": ["PR", "SD"]},
    )
    assert out["endpoint"].tolist() == ["resp=PR", "resp=SD"] * 2
    assert out["n"].tolist() == [2, 2, 1, 1]
    assert out["n_missing"].tolist() == [1, 1, 0, 0]
    assert out["estimate"].tolist() == [0.5, 0.5, 1.0, 0.0]
    assert out["diff"].tolist()[2:] == [0.5, -0.5]
    # default categories: the sorted labels of ok patients
    out = efficacy_summary(
        df.iloc[:4], endpoints={"resp": "categorical"}, arms=["a", "b"], control=None
    )
    assert out["endpoint"].tolist()[:2] == ["resp=PR", "resp=SD"]
    bad = df.assign(solver_status="ok")
    with pytest.raises(DataError, match=r"row 4: resp: categorical endpoint must be one of"):
        efficacy_summary(
            bad,
            endpoints={"resp": "categorical"},
            arms=["a", "b"],
            control=None,
            categories={"resp": ["PR", "SD"]},
        )


# --------------------------------------------------------------------------- #
# Validation of the new keys
# --------------------------------------------------------------------------- #


def _base() -> dict[str, Any]:
    d = copy.deepcopy(DEFAULT_DATA)
    d["model"]["components"]["qtc"] = {"model": "qtc", "links": {"DRUG": "CP"}}
    d["model"]["components"]["diarrhoea_risk"] = {
        "model": "ae_proportional_odds",
        "links": {"DRUG": "CP"},
    }
    d["adverse_events"]["diarrhoea"] = {"probabilities": ["P_GE1", "P_GE2", "P_GE3", "P_GE4"]}
    d["adverse_events"]["qtc"] = {
        "output": "QTCF",
        "grading": "ctcae_v5_electrocardiogram_qt_corrected_interval_prolonged",
    }
    d["endpoints"]["bor"] = {"type": "best_response", "output": "TUMOUR", "every": 1008}
    d["endpoints"]["orr"] = {"type": "responder", "endpoint": "bor", "in": ["CR", "PR"]}
    return d


def _load(tmp_path: Path, data: dict[str, Any]) -> Study:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_study(path)


def test_valid_study_with_new_keys(tmp_path: Path) -> None:
    study = _load(tmp_path, _base())
    assert study.probe_times() == [0.0, 1008.0, 2016.0]
    assert study.endpoint_kinds()["bor"] == "categorical"
    assert "ctcae_v5_electrocardiogram_qt_corrected_interval_prolonged" in GRADING_SCALES


def _edit(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    keys = path.split(".")
    node = out
    for k in keys[:-1]:
        node = node[k]
    if value is None:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return out


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (
            "adverse_events.diarrhoea",
            {"probabilities": ["P_GE1", "P_GE9"]},
            ["adverse_events.diarrhoea.probabilities[1]", "not a model output", "'P_GE9'"],
        ),
        (
            "adverse_events.diarrhoea",
            {"probabilities": ["P_GE2", "P_GE1"]},
            ["adverse_events.diarrhoea.probabilities", "grade order", "['P_GE2', 'P_GE1']"],
        ),
        (
            "adverse_events.diarrhoea",
            {"probabilities": ["P_GE1"], "output": "P_GE1", "thresholds": [0.5]},
            ["adverse_events.diarrhoea:", "takes no ['output', 'thresholds']"],
        ),
        (
            "adverse_events.diarrhoea",
            {"probabilities": ["P_GE1"] * 2},
            ["adverse_events.diarrhoea.probabilities", "non-unique"],
        ),
        (
            "adverse_events.diarrhoea",
            {"probabilities": []},
            ["adverse_events.diarrhoea.probabilities", "should be non-empty"],
        ),
        (
            "adverse_events.diarrhoea",
            {"grading": "ctcae_v5_neutrophil_count_decreased"},
            ["adverse_events.diarrhoea:", "'output' is required"],
        ),
        (
            "model.parameters.B3",
            {"value": -1.0},
            ["adverse_events.diarrhoea:", "B1 > B2 > B3 > B4", "'B3': -1.0"],
        ),
        (
            "adverse_events.qtc.lln",
            460,
            ["adverse_events.qtc.lln", "fixed limits", "got 460"],
        ),
        (
            "endpoints.bor.times",
            [500, 1000],
            ["endpoints.bor:", "exactly one of 'every'", "['every', 'times']"],
        ),
        (
            "endpoints.bor.every",
            None,
            ["endpoints.bor:", "exactly one of 'every'", "got []"],
        ),
        ("endpoints.bor.first", 3000, ["endpoints.bor.first", "<= simulation.end", "3000"]),
        ("endpoints.bor.by", 500, ["endpoints.bor.by", "must be >= first (1008.0)", "500"]),
        ("endpoints.bor.every", 1, ["endpoints.bor.every", "2016 assessments (limit 1000)"]),
        ("endpoints.bor.at", 100, ["endpoints.bor.at", "type best_response takes no 'at'"]),
        ("endpoints.bor.output", "SIZE", ["endpoints.bor.output", "not a model output", "'SIZE'"]),
        ("endpoints.bor.complete_below", -1, ["endpoints.bor.complete_below", ">= 0", "-1"]),
        ("endpoints.orr.in", ["CR", "XX"], ["endpoints.orr.in[1]", "must be one of", '"XX"']),
        (
            "endpoints.orr",
            {"type": "responder", "endpoint": "bor", "below_or_equal": -30},
            ["endpoints.orr.below_or_equal", "'bor' is a best_response", "use 'in'"],
        ),
        (
            "endpoints.orr",
            {"type": "responder", "endpoint": "tumour_change", "in": ["PR"]},
            ["endpoints.orr.in", "only applies to a best_response", "['PR']"],
        ),
        (
            "endpoints.orr",
            {"type": "responder", "endpoint": "bor", "in": ["PR"], "every": 5},
            ["endpoints.orr:", "keys ['every'] only apply to type best_response"],
        ),
        (
            "endpoints.tumour_change.every",
            5,
            ["endpoints.tumour_change:", "keys ['every'] only apply to type best_response"],
        ),
        (
            "endpoints.bor",
            {"type": "best_response", "output": "TUMOUR", "times": [1000, 500]},
            ["endpoints.bor.times", "strictly increasing", "[1000, 500]"],
        ),
        (
            "endpoints.bor",
            {"type": "best_response", "output": "TUMOUR", "times": [1000, 3000]},
            ["endpoints.bor.times", "<= simulation.end", "[3000.0]"],
        ),
        (
            "endpoints.bor",
            {"type": "best_response", "output": "TUMOUR", "times": [0, 100]},
            ["endpoints.bor.times[0]", "must be > 0", "0"],
        ),
        (
            "endpoints.bor",
            {"type": "best_response", "output": "TUMOUR", "times": [100], "first": 10},
            ["endpoints.bor.first", "only applies with 'every'", "10"],
        ),
    ],
)
def test_new_keys_are_validated(tmp_path: Path, path: str, value: Any, expected: list[str]) -> None:
    data = _edit(_base(), path, value)
    file = tmp_path / "study.yaml"
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as info:
        load_study(file)
    lines = [str(p) for p in info.value.problems]
    assert all(line.startswith(f"{file}: ") for line in lines)
    assert any(all(s in line for s in expected) for line in lines), "\n".join(lines)


def test_explicit_times(tmp_path: Path) -> None:
    data = _edit(_base(), "endpoints.bor.every", None)
    data["endpoints"]["bor"]["times"] = [500, 1500.5]
    assert _load(tmp_path, data).probe_times() == [0.0, 500.0, 1500.5, 2016.0]
