"""Early adverse-event warning (vtrial.run.warning) on the neutropenia example: the
probability of grade >= 3 neutropenia against grades computed here from a tight
scipy solve of the PK and Friberg equations, the warning's table and its keyed draws,
the evaluation on a virtual cohort against the same reference, the scores against
brute-force formulas, and the refusals.

One model (pk_2cmt + friberg) for every simulation in this file: one kernel to compile.
"""

from __future__ import annotations

import doctest
import importlib.util
import itertools
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import integrate, special

import vtrial.run.warning
from tests.conftest import ROOT
from vtrial.errors import ConfigError
from vtrial.infra.rng import keyed_uniforms
from vtrial.run.warning import (
    RESIDUAL_PURPOSE,
    auroc,
    brier_score,
    calibration_table,
    early_warning,
    evaluate_warning,
    planned_candidate,
    subject_records,
    virtual_cohort,
    warning_event,
    warning_risk,
)
from vtrial.study.config import load_study

STUDY = ROOT / "config" / "studies" / "neutropenia_warning.yaml"
DATA = ROOT / "config" / "studies" / "data"
#: CTCAE v5 neutrophil count decreased: grade k below the k-th limit (10^9/L)
LIMITS = np.array([2.0, 1.5, 1.0, 0.5])
#: the typical values of the study file, and its covariate model CL * BSA / 1.85
TV = {"CL": 32.0, "V1": 6.0, "Q2": 5.5, "V2": 11.0}
TV_PD = {"CIRC0": 5.0, "MTT": 89.0, "GAMMA": 0.16, "SLOPE": 10.0}
NAMES = ("CL", "CIRC0", "MTT", "SLOPE")  # the random effects, in OMEGA's order


@pytest.fixture(scope="module")
def study():  # type: ignore[no-untyped-def]
    return load_study(STUDY)


def _solve(
    eta: np.ndarray, bsa: float, doses: list[tuple[float, float, float]], times: np.ndarray
) -> np.ndarray:
    """ANC at ``times`` (sorted) for random effects ``eta`` (CL, CIRC0, MTT, SLOPE):
    two-compartment PK in amounts with zero-order infusions ``(start, mg, hours)`` and
    the Friberg model, by LSODA at rtol 1e-11, the segments cut at every infusion's
    start and end."""
    cl = TV["CL"] * bsa / 1.85 * np.exp(eta[0])
    v1, q, v2 = TV["V1"], TV["Q2"], TV["V2"]
    circ0 = TV_PD["CIRC0"] * np.exp(eta[1])
    ktr = 4.0 / (TV_PD["MTT"] * np.exp(eta[2]))
    slope = TV_PD["SLOPE"] * np.exp(eta[3])
    gamma = TV_PD["GAMMA"]

    def rhs(t: float, y: np.ndarray, rate: float) -> list[float]:
        a1, a2, prol, t1, t2, t3, circ = y
        cp = a1 / v1
        return [
            rate - (cl + q) / v1 * a1 + q / v2 * a2,
            q / v1 * a1 - q / v2 * a2,
            ktr * prol * (1 - slope * cp) * (circ0 / circ) ** gamma - ktr * prol,
            ktr * (prol - t1),
            ktr * (t1 - t2),
            ktr * (t2 - t3),
            ktr * (t3 - circ),
        ]

    cuts = sorted({0.0, float(times[-1]), *(t for s, _, d in doses for t in (s, s + d))})
    y = np.array([0.0, 0.0, *[circ0] * 5])
    out = np.full(times.size, np.nan)
    for a, b in itertools.pairwise(cuts):
        rate = sum(mg / d for s, mg, d in doses if s <= a < s + d)
        inside = (times >= a) & (times <= b)
        at = np.unique(np.r_[times[inside], b])
        sol = integrate.solve_ivp(
            rhs, (a, b), y, method="LSODA", args=(rate,), t_eval=at, rtol=1e-11, atol=1e-12
        )
        assert sol.success
        out[inside] = sol.y[6, np.searchsorted(at, times[inside])]
        y = sol.y[:, -1]
    return out


def _grade(worst: np.ndarray) -> np.ndarray:
    """CTCAE grades of worst counts, each at least 1e-4 (relative) from every limit:
    closer, the engine's and the reference's error could decide the grade."""
    margin = np.min(np.abs(worst[..., None] / LIMITS - 1.0), axis=-1)
    assert np.all(margin > 1e-4), f"a worst count too close to a limit: {worst}"
    return np.sum(worst[..., None] < LIMITS, axis=-1)


def _cycle_times(start: float, end: float, every: float, infusion: float) -> np.ndarray:
    """The forecast's grid over the next cycle: every ``every`` h, the dose's end."""
    return np.unique(np.r_[np.arange(start, end + 1e-9, every), start + infusion, end])


def test_probability_of_grade_3_matches_a_scipy_solve(study) -> None:  # type: ignore[no-untyped-def]
    """Each draw's grade at each dose level is the reference's (its worst ANC on the
    same grid, every limit 1e-4 away); P(grade >= 3) is their share."""
    rec = subject_records(study, 0)
    bsa = float(rec["BSA"].iloc[0])
    plan = planned_candidate(study, rec)
    assert (plan.route, plan.duration, plan.interval) == ("iv_infusion", 1.0, 504.0)
    eta = np.array(
        [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.6], [-0.3, 0.1, 0.1, 0.3], [0.3, 0.2, 0.0, -0.5]]
    )
    table, grades = warning_risk(study, 0, eta, levels=(1.0, 0.5), every=6.0)
    assert table["level"].tolist() == [1.0, 0.5]
    assert table["dose"].tolist() == [plan.dose, plan.dose / 2]
    assert table["start"].tolist() == [504.0, 504.0]
    times = _cycle_times(504.0, 1008.0, 6.0, 1.0)
    for lv, level in enumerate((1.0, 0.5)):
        ref = []
        for e in eta:
            doses = [(0.0, plan.dose, 1.0), (504.0, plan.dose * level, 1.0)]
            ref.append(_solve(e, bsa, doses, times).min())
        g = _grade(np.array(ref))
        np.testing.assert_array_equal(grades[lv], g)
        assert table["p"].iloc[lv] == np.mean(g >= 3)
        assert table["eligible"].iloc[lv] == (np.mean(g >= 3) <= 0.3)
    assert 0 < table["p"].iloc[0] < 1  # the draws do not all agree


def test_early_warning_table_is_keyed_per_subject(study) -> None:  # type: ignore[no-untyped-def]
    """A subject's row is the same alone or with another (its posterior stream is keyed
    by its ID); the warning and the recommendation follow the probabilities."""
    kw = {"n_draws": 40, "n_proposal": 200, "every": 12.0}
    both = early_warning(study, subjects=[0, 2], **kw)
    alone = early_warning(study, subjects=[2], **kw)
    pd.testing.assert_frame_equal(both.iloc[[1]].reset_index(drop=True), alone)
    assert both["ID"].tolist() == [1, 3]
    cols = ["p_grade3", "p_grade3_75", "p_grade3_50"]
    for _, row in both.iterrows():
        p = row[cols].to_numpy(dtype=np.float64)
        assert np.all((p * 40) == np.round(p * 40))  # shares of 40 draws
        assert row["warn"] == (p[0] > 0.3)
        ok = [lv for lv, pl in zip((1.0, 0.75, 0.5), p, strict=True) if pl <= 0.3]
        if ok:
            assert row["recommended_level"] == max(ok)
            assert row["recommended_dose"] == row["dose"] * max(ok)
        else:
            assert np.isnan(row["recommended_dose"])
        assert row["start"] == 504.0
    assert both["warn"].tolist() == [False, True]  # ID 1's day-8 count 2.0, ID 3's 0.71


def test_evaluation_truth_and_data_match_a_scipy_solve(study) -> None:  # type: ignore[no-untyped-def]
    """Virtual patients: the true grade is the reference's worst ANC over cycle 2 at
    the true random effects; the lowest observation is the reference's ANC at the
    template's sampling times with the keyed 15 % proportional error; the scores are
    those of the table."""
    n, seed = 3, 11
    ev = evaluate_warning(study, n, seed=seed, groups=2, n_draws=30, n_proposal=100, every=12.0)
    pt = ev.patients
    assert pt["ID"].tolist() == [1, 2, 3]
    assert pt["template"].tolist() == [1, 2, 3]
    _, _, eta = virtual_cohort(study, n, seed=seed)
    np.testing.assert_array_equal(pt[[f"eta_{k}" for k in NAMES]].to_numpy(), eta)
    times = _cycle_times(504.0, 1008.0, 12.0, 1.0)
    k = 3  # observations per template at most
    eps = special.ndtri(keyed_uniforms(seed, RESIDUAL_PURPOSE, 0, n, k))
    for i in range(n):
        rec = subject_records(study, i)
        bsa, dose = float(rec["BSA"].iloc[0]), float(rec["AMT"].iloc[1])
        worst = _solve(eta[i], bsa, [(0.0, dose, 1.0), (504.0, dose, 1.0)], times).min()
        assert pt["true_grade"].iloc[i] == _grade(np.array([worst]))[0]
        t_obs = rec.loc[rec["EVID"] == 0, "TIME"].to_numpy()
        anc = _solve(eta[i], bsa, [(0.0, dose, 1.0)], np.r_[t_obs, 504.0])[:-1]
        dv = anc * (1.0 + 0.15 * eps[i, : t_obs.size])
        assert pt["worst_observed"].iloc[i] == pytest.approx(dv.min(), rel=1e-7)
    p, y = pt["p_grade3"].to_numpy(), pt["event"].to_numpy()
    assert ev.n_failed == 0
    assert ev.prevalence == y.mean()
    assert ev.brier == brier_score(p, y)
    assert ev.calibration["n"].sum() == n


def test_virtual_cohort_draws_are_keyed_per_patient(study) -> None:  # type: ignore[no-untyped-def]
    small = virtual_cohort(study, 2, seed=5)
    large = virtual_cohort(study, 50, seed=5, observe_until=200.0)
    np.testing.assert_array_equal(small[2], large[2][:2])
    assert large[1][48] == 1  # patient 49 has the history of the first subject
    late = large[0][(large[0]["EVID"] == 0) & (large[0]["TIME"] > 200.0)]
    assert late.empty
    assert large[0]["ID"].nunique() == 50


def _brute_auroc(p: np.ndarray, y: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    pairs = [(a > b) + 0.5 * (a == b) for a in pos for b in neg]
    return float(np.mean(pairs))


def test_scores_match_brute_force() -> None:
    """AUROC against every positive-negative pair (ties one half), to 1e-12; Brier
    against the explicit sum; calibration groups against a loop."""
    rng = np.random.default_rng(3)
    p = np.round(rng.random(57), 1)  # many ties
    y = (rng.random(57) < p).astype(int)
    assert auroc(p, y) == pytest.approx(_brute_auroc(p, y), abs=1e-12)
    assert auroc(p, 1 - y) == pytest.approx(1 - _brute_auroc(p, y), abs=1e-12)
    assert np.isnan(auroc(p, np.ones(57)))
    explicit = sum((a - b) ** 2 for a, b in zip(p, y, strict=True)) / 57
    assert brier_score(p, y) == pytest.approx(explicit, abs=1e-15)
    cal = calibration_table(p, y, groups=10)
    assert cal["n"].tolist() == [6] * 7 + [5] * 3
    order = np.argsort(p, kind="stable")
    start = 0
    for row in cal.itertuples():
        part = order[start : start + row.n]
        start += row.n
        assert row.predicted == pytest.approx(p[part].mean(), abs=1e-15)
        assert row.observed == pytest.approx(y[part].mean(), abs=1e-15)
        assert row.events == y[part].sum()
    with pytest.raises(ValueError, match="probabilities in"):
        brier_score([0.5, np.nan], [0, 1])
    result = doctest.testmod(vtrial.run.warning)  # the docstrings' examples
    assert result.attempted > 0
    assert result.failed == 0


def _variant(tmp_path: Path, text: str, data: str | None = None) -> Path:
    csv = tmp_path / "d.csv"
    csv.write_text(data if data is not None else (DATA / "neutropenia_warning.csv").read_text())
    d = yaml.safe_load(text)
    d["population"]["dataset"]["path"] = str(csv)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(d))
    return tmp_path / "s.yaml"


def test_a_study_without_a_graded_observed_event_is_refused(tmp_path: Path) -> None:
    text = STUDY.read_text().replace(
        "output: ANC\n    grading: ctcae_v5_neutrophil_count_decreased",
        "output: CP\n    thresholds: [5, 10]\n    direction: above",
    )
    study = load_study(_variant(tmp_path, text))
    with pytest.raises(ConfigError, match="adverse_events: no adverse event is graded") as e:
        early_warning(study)
    assert "{'neutropenia': 'CP'}" in str(e.value)
    with pytest.raises(ConfigError, match=r"adverse_events\.nausea: .*got no such entry"):
        warning_event(study, "nausea")
    assert warning_event(study, "neutropenia").output == "CP"  # named: any output


def test_a_dose_without_an_interval_is_refused(tmp_path: Path) -> None:
    data = (DATA / "neutropenia_warning.csv").read_text().replace(",504,0,", ",.,.,", 1)
    study = load_study(_variant(tmp_path, STUDY.read_text(), data))
    with pytest.raises(ConfigError, match=r"\(ID 1\): the last dose record has no II"):
        early_warning(study, subjects=[0])
    assert planned_candidate(study, subject_records(study, 0), interval=504.0).interval == 504.0


def _generator(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    path = DATA / "make_neutropenia_dataset.py"
    spec = importlib.util.spec_from_file_location("make_neutropenia_dataset", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_dataset_is_what_the_script_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The script writes the shipped bytes, with the study file's values."""
    gen = _generator(monkeypatch)
    model = yaml.safe_load(STUDY.read_text())["model"]
    assert {k: v["value"] for k, v in model["parameters"].items()} == gen.TYPICAL == TV | TV_PD
    assert model["parameters"]["CL"]["covariates"] == f"BSA / {gen.BSA_REF}"
    assert model["iiv"]["omega"] == gen.OMEGA
    assert list(gen.OMEGA) == list(NAMES)
    assert model["residual_error"]["ANC"] == {"proportional": gen.PROPORTIONAL}
    out = tmp_path / "d.csv"
    assert gen.main([str(out)]) == 0
    assert out.read_bytes() == (DATA / "neutropenia_warning.csv").read_bytes()
