"""Adaptive dosing and adherence: hand-checkable protocols.

The test model makes every decision predictable: a 1-compartment IV bolus drug
(V 100 L, CL 5 L/h, so a dose of D mg peaks at D/100 mg/L and is gone, < 1e-10
relative, 504 h later) and a "neutrophil count" ANC = BASE(t) - CP, where BASE is 1
before ``RECOVERY`` hours and 2 after. Neutropenia is graded below 2.0/1.5/1.0/0.5,
so a dose of D gives grade 4 when D/100 * exp(-0.05) > 1.5 (D >= 158 mg) and the
pre-dose ANC at a decision is BASE(t).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import small_study_data
from vtrial.errors import ConfigError
from vtrial.population.sampling import sample_population
from vtrial.protocol.arms import arms_from_data
from vtrial.protocol.rules import REASONS, decision_times
from vtrial.run.chunk import doses_table, run_population, simulate_patients
from vtrial.study.config import study_from_dict

TOX_MODEL = {
    "name": "tox",
    "title": "test toxicity",
    "inputs": {"DRUG": {"unit": "mg/L"}},
    "parameters": {"RECOVERY": {"value": 400.0, "unit": "h"}},
    "outputs": {"ANC": {"expr": "1.0 + (1.0 if t >= RECOVERY else 0.0) - DRUG"}},
}
Q3W = {"route": "iv_bolus", "dose": 300, "interval": 504, "count": 4}


def study_data(tmp_path: Path, arm: dict[str, Any], **sim: Any) -> dict[str, Any]:
    (tmp_path / "tox.yaml").write_text(yaml.safe_dump(TOX_MODEL))
    d = small_study_data()
    d["study"]["replicates"] = 1
    d["study"]["control_arm"] = "control"
    d["population"]["size"] = 4
    d["model"] = {
        "pk": "pk_1cmt",
        "components": {"tox": {"model": str(tmp_path / "tox.yaml"), "links": {"DRUG": "CP"}}},
        "parameters": {"CL": {"value": 5.0}, "V1": {"value": 100.0}},
        "iiv": {"omega": {}},
    }
    d["arms"] = [{"name": "control", "regimen": "none"}, {"name": "treated", **arm}]
    d["adverse_events"] = {
        "neutropenia": {"output": "ANC", "thresholds": [2.0, 1.5, 1.0, 0.5], "direction": "below"}
    }
    d["endpoints"] = {}
    d["outputs"]["timecourse"] = {"every": 24, "outputs": ["CP", "ANC"], "patients": "all"}
    d["simulation"] = {"end": 2100, "grid": 1.0, **sim}
    return d


def treated(d: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    study = study_from_dict(d, source="study.yaml")
    pop = sample_population(study)
    pop = pop[pop["arm"] == "treated"].reset_index(drop=True)
    res = run_population(study, pop, threads=1)
    assert (res.status == 0).all()
    patients, _, _ = simulate_patients(study, pop, threads=1, result=res)
    return patients, doses_table(study, pop, res)


REDUCE_RULES = {
    "decide_at": "doses",
    "levels": [100, 200, 250, 300],
    "rules": [
        {"when": "ANC < 1.5", "action": "hold", "recheck": 168, "max_hold": 504},
        {"when": "grade_neutropenia >= 4 and reductions >= 2", "action": "discontinue"},
        {"when": "grade_neutropenia >= 4", "action": "reduce"},
    ],
}


def test_reduce_then_discontinue_after_two_reductions(tmp_path: Path) -> None:
    arm = {"regimen": Q3W, "modification": REDUCE_RULES}
    d = study_data(tmp_path, arm)
    d["model"]["parameters"]["RECOVERY"] = {"value": 0.0}  # BASE 2: no hold
    patients, doses = treated(d)
    first = doses[doses["patient_id"] == doses["patient_id"].min()]
    # 300 (grade 4) -> reduce to 250 (grade 4) -> reduce to 200 (grade 4, two
    # reductions) -> discontinue: the fourth dose is not given
    assert first["planned"].tolist() == [300.0, 300.0, 300.0, 300.0]
    assert first["given"].tolist() == [300.0, 250.0, 200.0, 0.0]
    assert first["reason"].tolist() == ["as_planned", "reduced", "reduced", "discontinued"]
    assert first["time"].tolist() == [0.0, 504.0, 1008.0, 1512.0]
    p = patients.iloc[0]
    assert p["n_reductions"] == 2
    assert p["n_holds"] == 0
    assert p["time_discontinued"] == 1512.0
    assert p["relative_dose_intensity"] == pytest.approx(750.0 / 1200.0, rel=1e-12)


def test_ledger_of_patients_with_invalid_parameters(tmp_path: Path) -> None:
    """A patient whose parameters are invalid (CL = NaN) is never simulated: the doses
    table still has its planned rows, marked not reached with unknown amounts; the
    others are untouched; a chunk of only such patients works too."""
    arm = {"regimen": Q3W, "modification": REDUCE_RULES}
    d = study_data(tmp_path, arm)
    d["model"]["parameters"]["RECOVERY"] = {"value": 0.0}
    study = study_from_dict(d, source="study.yaml")
    pop = sample_population(study)
    pop = pop[pop["arm"] == "treated"].reset_index(drop=True)
    good = doses_table(study, pop, run_population(study, pop, threads=1))
    poisoned = pop.copy()
    poisoned.loc[0, "CL"] = np.nan
    res = run_population(study, poisoned, threads=1)
    assert res.status[0] == 4
    assert (res.status[1:] == 0).all()
    doses = doses_table(study, poisoned, res)
    first = doses["patient_id"] == pop.loc[0, "patient_id"]
    assert first.sum() == 4
    assert (doses.loc[first, "reason"] == "not_reached").all()
    assert doses.loc[first, ["time", "planned", "given"]].isna().all().all()
    pd.testing.assert_frame_equal(
        doses[~first].reset_index(drop=True), good[~first].reset_index(drop=True)
    )
    assert np.isnan(res.dose_summary[0]).all()
    only_bad = poisoned.iloc[:1]
    lone = doses_table(study, only_bad, run_population(study, only_bad, threads=1))
    assert lone["reason"].tolist() == ["not_reached"] * 4


def test_hold_during_an_infusion_keeps_its_end(tmp_path: Path) -> None:
    """A hold decided while a 100 h infusion runs delays the later doses, not the end
    of the running infusion: exactly the two 300 mg doses enter (AUC = 600 / CL)."""
    regimen = {"route": "iv_infusion", "dose": 300, "duration": 100, "interval": 504, "count": 2}
    rules = {
        "decide_at": {"every": 24},
        "rules": [{"when": "t >= 48 and holds < 1", "action": "hold", "recheck": 168}],
    }
    d = study_data(tmp_path, {"regimen": regimen, "modification": rules})
    patients, doses = treated(d)
    first = doses[doses["patient_id"] == doses["patient_id"].min()]
    assert first["time"].tolist() == [0.0, 504.0 + 168.0]
    assert first["reason"].tolist() == ["as_planned", "delayed"]
    # pk_1cmt, CL 5 L/h: the exact AUC to 2100 h of 600 mg (the rest is < 1e-20)
    np.testing.assert_allclose(patients["auc"], 600.0 / 5.0, rtol=1e-9)


def test_hold_until_recovery_delays_the_schedule(tmp_path: Path) -> None:
    """ANC < 1.5 until 400 h: held at 0, 168 and 336 h, given at 504 h; the later
    doses move by the same 504 h (a cycle delay)."""
    # the rules of the reduction test (one compiled kernel): at 100 mg ANC stays >= 1
    # (grade <= 2), so only the hold acts
    rules = copy.deepcopy(REDUCE_RULES)
    d = study_data(tmp_path, {"regimen": {**Q3W, "dose": 100}, "modification": rules})
    d["simulation"]["end"] = 2100
    patients, doses = treated(d)
    first = doses[doses["patient_id"] == doses["patient_id"].min()]
    assert first["time"].tolist()[:3] == [504.0, 1008.0, 1512.0]
    assert first["reason"].tolist()[:3] == ["delayed", "delayed", "delayed"]
    assert first["given"].tolist()[:3] == [100.0, 100.0, 100.0]
    # the fourth dose would be at 2016 + ... = 2016 h: within the 2100 h horizon
    assert first["time"].tolist()[3] == 2016.0
    p = patients.iloc[0]
    assert p["n_holds"] == 1
    assert p["hours_held"] == 504.0
    assert np.isnan(p["time_discontinued"])
    assert p["n_reductions"] == 0
    # a maximum hold of 336 h is exceeded by the third re-check: discontinued at 336 h
    rules["rules"][0]["max_hold"] = 336
    d = study_data(tmp_path, {"regimen": {**Q3W, "dose": 100}, "modification": rules})
    patients, doses = treated(d)
    assert patients.iloc[0]["time_discontinued"] == 336.0
    assert (doses["reason"] == "discontinued").all()
    assert (doses["given"] == 0.0).all()


def test_titration_to_a_target_trough(tmp_path: Path) -> None:
    """Every 2 weeks the pre-dose CP is compared with a target range; IV q12h dosing
    with slow clearance accumulates, so the dose steps down to the level that keeps
    the trough in range [1, 2] mg/L (the steps are checked against the closed-form
    steady-state troughs)."""
    regimen = {"route": "iv_bolus", "dose": 400, "interval": 12, "count": 168}
    rules = {
        "decide_at": {"every": 336},
        "levels": [25, 50, 100, 200, 400],
        "rules": [
            {"when": "CP > 2.0", "action": "reduce"},
            {"when": "CP < 1.0", "action": "escalate"},
        ],
    }
    d = study_data(tmp_path, {"regimen": regimen, "modification": rules})
    d["model"]["parameters"] = {"CL": {"value": 5.0}, "V1": {"value": 100.0}}
    d["model"]["parameters"]["RECOVERY"] = {"value": 0.0}
    d["adverse_events"] = {}
    patients, doses = treated(d)
    first = doses[doses["patient_id"] == doses["patient_id"].min()]
    # steady-state trough of D every 12 h: D/V e^{-k 12} / (1 - e^{-k 12}), k = 0.05
    r = np.exp(-0.05 * 12)
    trough = {dose: dose / 100 * r / (1 - r) for dose in (25, 50, 100, 200, 400)}
    assert trough[400] > trough[200] > 2.0
    assert 1.0 < trough[100] < 2.0
    # decisions at 336, 672: 400 -> 200 -> 100, then stays (in range)
    given = first.set_index("time")["given"]
    assert given[given.index > 335.9].iloc[0] == 200.0  # first dose after 336 h
    assert given[given.index >= 672].unique().tolist() == [100.0]
    assert patients.iloc[0]["n_reductions"] == 2


def test_adherence_one_equals_no_adherence(tmp_path: Path) -> None:
    regimen = {"route": "oral", "dose": 100, "interval": 24, "count": 60}
    plain = study_data(tmp_path, {"regimen": regimen})
    full = study_data(tmp_path, {"regimen": regimen, "adherence": {"p_miss": 0.0}})
    a, _ = treated(plain)
    b, doses = treated(full)
    for col in ("cmax", "auc", "ctrough", "ae_neutropenia_worst"):
        np.testing.assert_array_equal(a[col].to_numpy(), b[col].to_numpy())
    assert (doses["reason"] == "as_planned").all()
    assert (b["relative_dose_intensity"] == 1.0).all()


def test_missed_dose_share_and_pairing(tmp_path: Path) -> None:
    regimen = {"route": "oral", "dose": 100, "interval": 24, "count": 80}
    d = study_data(tmp_path, {"regimen": regimen, "adherence": {"p_miss": 0.2}})
    d["population"]["size"] = 400
    d["simulation"]["end"] = 80 * 24
    study = study_from_dict(d, source="study.yaml")
    pop = sample_population(study)
    pop = pop[pop["arm"] == "treated"].reset_index(drop=True)
    res = run_population(study, pop, threads=1)
    doses = doses_table(study, pop, res)
    missed = (doses["reason"] == "missed").to_numpy()
    n = missed.size
    share = missed.mean()
    # binomial sampling error: 4 standard errors
    assert abs(share - 0.2) < 4 * np.sqrt(0.2 * 0.8 / n), (share, n)
    # the same patient misses the same doses in another arm (draws keyed by patient)
    d2 = copy.deepcopy(d)
    d2["arms"].append(
        {"name": "other", "regimen": {**regimen, "dose": 50}, "adherence": {"p_miss": 0.2}}
    )
    study2 = study_from_dict(d2, source="study.yaml")
    pop2 = sample_population(study2)
    both = pop2.copy()
    both["arm"] = "other"
    both["arm_index"] = 2
    res2 = run_population(study2, both, threads=1)
    doses2 = doses_table(study2, both, res2)
    m1 = doses.set_index(["patient_id", "dose_number"])["reason"] == "missed"
    m2 = doses2.set_index(["patient_id", "dose_number"])["reason"] == "missed"
    common = m1.index.intersection(m2.index)
    assert len(common) > 1000
    assert (m1[common] == m2[common]).all()


def test_markov_adherence_runs(tmp_path: Path) -> None:
    regimen = {"route": "oral", "dose": 100, "interval": 24, "count": 200}
    adh = {"model": "markov", "p_miss": 0.05, "p_stay_missing": 0.6, "missed_dose": "skip"}
    d = study_data(tmp_path, {"regimen": regimen, "adherence": adh})
    d["population"]["size"] = 200
    d["simulation"]["end"] = 200 * 24
    _, doses = treated(d)
    missed = (doses["reason"] == "missed").to_numpy().reshape(-1, 200)
    # stationary share p / (p + 1 - stay) and mean holiday length 1 / (1 - stay)
    pi = 0.05 / (0.05 + 0.4)
    # 4 SE; successive doses are correlated (lag-1 autocorrelation lam = stay - p_miss),
    # which inflates the variance of the share by (1 + lam) / (1 - lam)
    lam = 0.6 - 0.05
    se = np.sqrt(pi * (1 - pi) / missed.size * (1 + lam) / (1 - lam))
    assert abs(missed.mean() - pi) < 4 * se, (missed.mean(), pi, se)
    # holidays last 1 / (1 - stay) = 2.5 doses on average (geometric, SD sqrt(stay) / 0.4)
    runs = np.concatenate(
        [np.diff(np.flatnonzero(np.diff(np.r_[0, row.astype(int), 0])))[::2] for row in missed]
    )
    se_run = np.sqrt(0.6) / 0.4 / np.sqrt(runs.size)
    assert abs(runs.mean() - 2.5) < 4 * se_run, (runs.mean(), runs.size)


def test_decision_times() -> None:
    reg = {
        "route": "oral",
        "dose": 1,
        "interval": 24,
        "count": 14,
        "cycles": {"length_days": 21, "count": 3},
    }
    rules = [{"when": "t > 0", "action": "discontinue"}]

    def times(decide_at: object) -> list[float]:
        mod = {"decide_at": decide_at, "rules": rules}
        (arm,) = arms_from_data([{"name": "a", "regimen": reg, "modification": mod}])
        assert arm.modification is not None
        return decision_times(arm.modification, arm.phases, 2000)

    assert times("cycles") == [0.0, 504.0, 1008.0]
    assert len(times("doses")) == 42
    assert times({"every": 700, "start": 10}) == [10.0, 710.0, 1410.0]
    assert set(REASONS.values()) >= {"as_planned", "delayed", "reduced", "missed"}


def test_bad_rules_are_reported(tmp_path: Path) -> None:
    mod = {
        "levels": [50, 75],
        "measure": {"ANCX": {"proportional": 0.1}},
        "rules": [
            {"when": "ANC < 1.5", "action": "hold"},
            {"when": "__import__('os')", "action": "reduce"},
            {"when": "grade_nausea >= 3", "action": "discontinue", "recheck": 5},
        ],
    }
    d = study_data(tmp_path, {"regimen": Q3W, "modification": mod})
    with pytest.raises(ConfigError) as info:
        study_from_dict(d, source="study.yaml")
    text = str(info.value)
    assert "arms[1].modification.levels: must contain the arm's planned dose 300" in text
    assert "arms[1].modification.measure.ANCX: not a model output" in text
    assert "arms[1].modification.rules[0].recheck: a hold needs recheck (h) > 0" in text
    assert "arms[1].modification.rules[1].when" in text
    assert "grade_nausea" in text
    assert "arms[1].modification.rules[2].recheck: only a hold has recheck" in text


def test_assay_error_on_the_decision_is_keyed_and_has_the_declared_effect(
    tmp_path: Path,
) -> None:
    """ANC is 1.0 before 400 h: a hold at t = 0 unless the measured ANC (60 % CV
    proportional error) reads >= 1.5, i.e. eps >= 0.833: P = 1 - Phi(0.833) = 0.2023
    of the patients get their first dose on time."""
    from scipy.stats import norm

    for cv, p in ((0.6, 1 - norm.cdf(0.5 / 0.6)),):
        rules = {
            "decide_at": "doses",
            "measure": {"ANC": {"proportional": cv}},
            "rules": [{"when": "ANC < 1.5", "action": "hold", "recheck": 168}],
        }
        d = study_data(tmp_path, {"regimen": {**Q3W, "dose": 100}, "modification": rules})
        d["population"]["size"] = 1200
        study = study_from_dict(d, source="study.yaml")
        pop = sample_population(study)
        pop = pop[pop["arm"] == "treated"].reset_index(drop=True)
        res = run_population(study, pop, threads=1)
        doses = doses_table(study, pop, res)
        first = doses[doses["dose_number"] == 1]
        on_time = (first["time"] == 0.0).to_numpy()
        n = on_time.size
        assert abs(on_time.mean() - p) < 4 * np.sqrt(p * (1 - p) / n), (on_time.mean(), p)
        # keyed per patient: the same decisions whatever the chunking
        half = len(pop) // 2
        parts = [pop.iloc[:half], pop.iloc[half:]]
        split = pd.concat(
            [doses_table(study, q, run_population(study, q, threads=1)) for q in parts],
            ignore_index=True,
        )
        pd.testing.assert_frame_equal(split, doses)


def test_jitter_and_double_next(tmp_path: Path) -> None:
    regimen = {"route": "oral", "dose": 100, "interval": 24, "count": 60}
    adh = {"p_miss": 0.15, "jitter": 2.0, "missed_dose": "double_next"}
    d = study_data(tmp_path, {"regimen": regimen, "adherence": adh})
    d["population"]["size"] = 200
    d["simulation"]["end"] = 60 * 24
    _, doses = treated(d)
    taken = doses[doses["reason"] != "missed"]
    dt = taken["time"].to_numpy() - 24.0 * (taken["dose_number"].to_numpy() - 1)
    assert abs(dt.std() / 2.0 - 1.0) < 4 / np.sqrt(2 * dt.size)  # SD of a normal: 2 h
    # every dose right after a missed one (that is itself taken) is doubled
    by_patient = doses.sort_values(["patient_id", "dose_number"]).groupby("patient_id")
    prev_missed = by_patient["reason"].shift(1) == "missed"
    after = doses.loc[prev_missed.index[prev_missed.to_numpy()]]
    after = after[after["reason"] != "missed"]
    assert len(after) > 50
    assert (after["reason"] == "doubled").all()
    assert (after["given"] == 200.0).all()
