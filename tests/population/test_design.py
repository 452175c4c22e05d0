"""Trial design: randomization (simple, permuted blocks, stratified), the twin
crossover design and its individual effects, validation, and invariance of the
patients when arms, replicates or scenario changes are made."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.conftest import small_study_data
from tests.study.test_config import assert_reported, refused, write_study
from vtrial.analysis.design import design_tables
from vtrial.analysis.effects import EFFECT_COLUMNS, PREDICTOR_COLUMNS, individual_effects
from vtrial.analysis.sketch import merge
from vtrial.errors import DataError
from vtrial.population.design import strata_codes
from vtrial.population.sampling import sample_population
from vtrial.population.spec import randomization
from vtrial.run.chunk import simulate_patients
from vtrial.run.stages import summaries
from vtrial.study.config import Study, study_from_dict
from vtrial.trial.spec import EffectOptions

#: digests of the population of small_study_data() (and with ratios 2:1:1, 400
#: patients) as sampled before randomization, designs and uncertainty existed
#: (commit 13e3a72): allocation, covariates and parameters must stay bit-identical
GOLDEN_SMALL = "17334113a8f8324f53e308b00af88835345b860b831d55e7150766bf0666c723"
GOLDEN_RATIO = "d8d8f5010fbaac4f38bf98de771f0a99c809ab9aae51a2fa9ead318002f14bd4"
#: columns that identify a patient's draws (covariates, random effects, parameters)
PATIENT_COLUMNS = ["replicate", "patient_id", "sex", "age", "weight", "crcl", "eta_CL", "CL", "V1"]


def digest(pop: pd.DataFrame) -> str:
    """SHA-256 of the identity, allocation, a covariate and some parameter columns."""
    h = hashlib.sha256()
    for c in ("replicate", "patient_id", "arm_index", "weight", "CL", "V1", "eta_KA", "KD0"):
        h.update(np.ascontiguousarray(pop[c].to_numpy()).tobytes())
    h.update("|".join(pop["arm"]).encode())
    return h.hexdigest()


def make(data: dict[str, Any]) -> Study:
    return study_from_dict(data)


def with_randomization(spec: dict[str, Any] | None, **changes: Any) -> dict[str, Any]:
    d = small_study_data(**changes)
    if spec is not None:
        d["randomization"] = spec
    return d


def twin_data(size: int = 40, replicates: int = 2) -> dict[str, Any]:
    d = small_study_data()
    d["population"]["size"] = size
    d["study"]["replicates"] = replicates
    d["study"]["design"] = "twin_crossover"
    d["endpoints"]["tumour_change"].update(better="lower", margin=5)
    d["endpoints"]["objective_response"]["better"] = "higher"
    return d


# ---------------------------------------------------------------------------
# Randomization
# ---------------------------------------------------------------------------


def test_default_allocation_is_bit_identical_to_before() -> None:
    """No randomization key, or the default permuted blocks spelled out, give the
    population sampled before this feature existed (digest of commit 13e3a72)."""
    assert digest(sample_population(make(small_study_data()))) == GOLDEN_SMALL
    explicit = with_randomization({"method": "permuted_block", "block": 6})
    assert digest(sample_population(make(explicit))) == GOLDEN_SMALL
    d = small_study_data()
    d["arms"][0]["ratio"] = 2
    d["population"]["size"] = 400
    assert digest(sample_population(make(d))) == GOLDEN_RATIO
    d["randomization"] = {"method": "permuted_block"}  # default block 2 * 4
    assert randomization(d).block == 8
    assert digest(sample_population(make(d))) == GOLDEN_RATIO


@pytest.mark.parametrize("block", [4, 8, 20])
def test_permuted_blocks_are_exactly_in_ratio(block: int) -> None:
    """Ratios 2:1:1, 1003 patients (the last block incomplete): every complete block
    holds exactly block/4 · (2, 1, 1) patients per arm."""
    d = with_randomization({"method": "permuted_block", "block": block})
    d["arms"][0]["ratio"] = 2
    d["population"]["size"] = 1003
    pop = sample_population(make(d))
    for _, rep in pop.groupby("replicate"):
        arm = rep["arm_index"].to_numpy()
        full = arm[: (arm.size // block) * block].reshape(-1, block)
        counts = np.stack([(full == j).sum(axis=1) for j in range(3)], axis=1)
        assert (counts == np.array([2, 1, 1]) * block // 4).all()
        tail = np.bincount(arm[full.size :], minlength=3)
        assert (tail <= np.array([2, 1, 1]) * block // 4).all()
    # the order within blocks is shuffled, not the same in every block
    assert len({tuple(b) for b in full[:20]}) > 1


def test_stratified_blocks_balance_every_stratum() -> None:
    """5000 patients, strata sex x age [<50, 50-65, >=65) (6 strata), ratio 1:1:1,
    blocks of 6: in each stratum every complete block (the stratum's patients in
    patient order) holds exactly 2 per arm, and the arm counts of a stratum differ by
    at most 2 (one incomplete block). Without stratification the same arms differ by
    more within some stratum."""
    strata = ["sex", {"covariate": "age", "breaks": [50, 65]}]
    d = with_randomization({"method": "stratified", "block": 6, "strata": strata})
    d["population"]["size"] = 5000
    d["study"]["replicates"] = 1
    s = make(d)
    pop = sample_population(s)
    cats = {"sex": ["F", "M"]}
    covs = {c: pop[c].to_numpy() for c in ("sex", "age")}
    codes, labels = strata_codes(randomization(s.data).strata, covs, cats)
    assert labels == [
        "sex=F,age=[-inf,50.0)",
        "sex=F,age=[50.0,65.0)",
        "sex=F,age=[65.0,inf)",
        "sex=M,age=[-inf,50.0)",
        "sex=M,age=[50.0,65.0)",
        "sex=M,age=[65.0,inf)",
    ]
    arm = pop["arm_index"].to_numpy()
    spread = []
    for code in range(6):
        seq = arm[codes == code]
        assert seq.size > 100
        full = seq[: (seq.size // 6) * 6].reshape(-1, 6)
        assert all((np.bincount(b, minlength=3) == 2).all() for b in full)
        counts = np.bincount(seq, minlength=3)
        spread.append(int(counts.max() - counts.min()))
    assert max(spread) <= 2
    plain = sample_population(make(with_randomization(None, population__size=5000)))
    plain = plain[plain["replicate"] == 0]["arm_index"].to_numpy()
    plain_spread = [np.ptp(np.bincount(plain[codes == c], minlength=3)) for c in range(6)]
    assert max(plain_spread) > max(spread)


def test_simple_randomization_matches_the_ratio_on_average() -> None:
    """Simple randomization, ratios 2:1:1, 20000 patients: shares within 5 binomial
    standard errors of 1/2, 1/4, 1/4, and not exact (independent draws)."""
    d = with_randomization({"method": "simple"})
    d["arms"][0]["ratio"] = 2
    d["population"]["size"] = 20000
    d["study"]["replicates"] = 1
    arm = sample_population(make(d))["arm_index"].to_numpy()
    n = arm.size
    share = np.bincount(arm, minlength=3) / n
    expected = np.array([0.5, 0.25, 0.25])
    se = np.sqrt(expected * (1 - expected) / n)
    assert (np.abs(share - expected) < 5 * se).all()
    assert (share != expected).any()


@pytest.mark.parametrize(
    "spec",
    [
        {"method": "simple"},
        {"method": "permuted_block", "block": 9},
        {"method": "stratified", "strata": ["sex", {"covariate": "crcl", "breaks": [60]}]},
    ],
)
def test_allocation_is_deterministic_keyed_and_prefix_stable(spec: dict[str, Any]) -> None:
    """Same study, same allocation; another seed or replicate, another one; more
    patients leave the allocation of the existing ones unchanged."""
    d = with_randomization(spec)
    a = sample_population(make(d))
    assert a.equals(sample_population(make(copy.deepcopy(d))))
    r0 = a[a["replicate"] == 0]["arm_index"].to_numpy()
    r1 = a[a["replicate"] == 1]["arm_index"].to_numpy()
    assert not np.array_equal(r0, r1)
    other = copy.deepcopy(d)
    other["study"]["seed"] += 1
    b = sample_population(make(other))
    assert not np.array_equal(a["arm_index"].to_numpy(), b["arm_index"].to_numpy())
    bigger = copy.deepcopy(d)
    bigger["population"]["size"] = 400
    c = sample_population(make(bigger))
    c = c[c["patient_id"] <= 150].reset_index(drop=True)
    pd.testing.assert_frame_equal(c, a, check_exact=True)


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def test_randomization_problems_reported_at_once(tmp_path: Path) -> None:
    d = small_study_data()
    d["arms"][0]["ratio"] = 2  # sum of ratios 4
    d["randomization"] = {
        "method": "stratified",
        "block": 6,
        "strata": [
            "sex",
            "age",
            {"covariate": "sex", "breaks": [1]},
            {"covariate": "weight", "breaks": [80, 60]},
            "colour",
            {"covariate": "crcl", "breaks": [60]},
            "weight",
        ],
    }
    err = refused(write_study(tmp_path, d))
    assert_reported(err, ["randomization.block", "multiple of the sum of the arm ratios (4", "6"])
    assert_reported(err, ["randomization.strata[1]", "age is continuous", "breaks"])
    assert_reported(err, ["randomization.strata[2]", "repeats strata[0]", "'sex'"])
    assert_reported(err, ["randomization.strata[3].breaks", "increase strictly", "[80, 60]"])
    assert_reported(err, ["randomization.strata[4]", "must name a covariate", "'colour'"])
    assert_reported(err, ["randomization.strata[6]", "repeats strata[3]", "'weight'"])
    assert len(err.problems) == 6
    d["randomization"] = {"method": "simple", "block": 8, "strata": ["sex"]}
    err = refused(write_study(tmp_path, d))
    assert_reported(err, ["randomization.block", "only applies to permuted_block", "8"])
    assert_reported(err, ["randomization.strata", "only applies to method stratified", "sex"])
    d["randomization"] = {"method": "stratified"}
    err = refused(write_study(tmp_path, d))
    assert_reported(err, ["randomization", "needs 'strata'"])
    d["randomization"] = {"method": "stratified", "strata": [{"covariate": "sex", "breaks": [1]}]}
    assert_reported(refused(write_study(tmp_path, d)), ["strata[0].breaks", "sex is categorical"])
    d["randomization"] = {"method": "minimisation"}
    err = refused(write_study(tmp_path, d))
    assert_reported(err, ["randomization.method", "must be one of", "minimisation"])


def test_twin_crossover_problems_reported_at_once(tmp_path: Path) -> None:
    d = small_study_data()
    d["study"]["design"] = "twin_crossover"
    d["study"]["control_arm"] = None
    d["arms"][2]["ratio"] = 3
    d["randomization"] = {"method": "simple"}
    d["endpoints"]["best"] = {
        "type": "best_response",
        "output": "TUMOUR",
        "every": 168,
        "better": "higher",
    }
    err = refused(write_study(tmp_path, d))
    assert_reported(err, ["study.control_arm", "twin_crossover compares", "got null"])
    assert_reported(err, ["arms[2].ratio", "does not apply to study.design twin_crossover", "3"])
    assert_reported(err, ["randomization", "does not apply to study.design", "simple"])
    assert_reported(err, ["endpoints.best.better", "best_response", "'higher'"])
    assert len(err.problems) == 4
    one = small_study_data()
    one["study"].update(design="twin_crossover", control_arm="placebo")
    one["arms"] = one["arms"][:1]
    assert_reported(refused(write_study(tmp_path, one)), ["study.design", "at least 2 arms", "1"])
    one["study"]["design"] = "crossover"
    assert_reported(refused(write_study(tmp_path, one)), ["study.design", "crossover"])
    d = small_study_data()
    d["endpoints"]["tumour_change"].update(better="smaller", margin=-1)
    err = refused(write_study(tmp_path, d))
    assert_reported(err, ["endpoints.tumour_change.better", "lower", "smaller"])
    assert_reported(err, ["endpoints.tumour_change.margin", ">= 0", "-1"])


# ---------------------------------------------------------------------------
# Twin crossover
# ---------------------------------------------------------------------------


def test_twin_population_has_every_patient_under_every_arm() -> None:
    """size x replicates x arms rows, patient-major; a patient's rows are equal but
    for arm and arm_index, and equal to the same patient in a parallel study."""
    s = make(twin_data(size=50))
    pop = sample_population(s)
    assert len(pop) == 50 * 2 * 3
    assert pop["arm"].tolist()[:6] == ["placebo", "100mg_qd", "200mg_qd"] * 2
    assert pop["arm_index"].tolist() == [0, 1, 2] * 100
    assert pop["patient_id"].tolist() == list(np.repeat(np.arange(1, 51), 3)) * 2
    rest = [c for c in pop.columns if c not in ("arm", "arm_index")]
    for k in range(3):
        part = pop[pop["arm_index"] == k][rest].reset_index(drop=True)
        first = pop[pop["arm_index"] == 0][rest].reset_index(drop=True)
        pd.testing.assert_frame_equal(part, first, check_exact=True)
    d = twin_data(size=50)
    d["study"]["design"] = "parallel"
    parallel = sample_population(make(d))
    pd.testing.assert_frame_equal(
        pop[pop["arm_index"] == 0][rest].reset_index(drop=True), parallel[rest], check_exact=True
    )


def test_twin_simulation_is_chunk_invariant_and_paired() -> None:
    """Rows simulated whole or in uneven chunks give identical patients tables; the
    placebo rows are undosed; the mean individual effect equals the difference of the
    arm means of the efficacy summary (no failures, so the pairs are all patients)."""
    s = make(twin_data(size=30))
    pop = sample_population(s)
    whole, _, bands = simulate_patients(s, pop, threads=1)
    parts = [
        simulate_patients(s, pop.iloc[a:b], threads=1)[0] for a, b in ((0, 7), (7, 101), (101, 180))
    ]
    pd.testing.assert_frame_equal(whole, pd.concat(parts, ignore_index=True), check_exact=True)
    assert (whole["solver_status"] == "ok").all()
    assert (whole.loc[whole["arm"] == "placebo", "cmax"] == 0).all()
    assert (whole.loc[whole["arm"] != "placebo", "cmax"] > 0).all()
    tables = design_tables(s, whole, pop)
    eff = tables["individual_effects"]
    assert list(eff.columns) == list(EFFECT_COLUMNS)
    assert list(tables["individual_predictors"].columns) == list(PREDICTOR_COLUMNS)
    assert eff["replicate"].tolist()[:4] == [0, 0, 0, 0]
    assert eff["replicate"].isna().sum() == 4  # pooled: 2 arms x 2 endpoints
    assert (eff.loc[eff["replicate"].notna(), "n"] == 30).all()
    assert (eff.loc[eff["replicate"].isna(), "n"] == 60).all()
    efficacy = summaries(s, whole, merge([bands]))["efficacy"]
    for _, row in eff[eff["replicate"].notna()].iterrows():
        e = efficacy[
            (efficacy["replicate"] == row["replicate"])
            & (efficacy["arm"] == row["arm"])
            & (efficacy["endpoint"] == row["endpoint"])
        ]
        assert row["mean"] == pytest.approx(e["diff"].iloc[0], rel=1e-12, abs=1e-12)
    tumour = eff[(eff["endpoint"] == "tumour_change") & eff["replicate"].isna()]
    # 200 mg shrinks the tumour more than 100 mg, for (nearly) every patient
    assert tumour["mean"].tolist()[1] < tumour["mean"].tolist()[0] < 0
    assert (tumour["frac_benefit"] > 0.8).all()


def _synthetic(n: int = 400, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Two arms of n patients (1 replicate), a planted effect d = 0.5·age + 4·[sex=M]
    + N(0, 1) on a continuous endpoint, and one failed solve."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(20, 80, n)
    sex = rng.choice(np.array(["F", "M"], dtype=object), n)
    base = rng.normal(50, 10, n)
    d = 0.5 * age + 4.0 * (sex == "M") + rng.normal(0, 1, n)
    pid = np.arange(1, n + 1)
    pop = pd.DataFrame({"replicate": 0, "patient_id": pid, "sex": sex, "age": age})
    pop["bmi"] = age / 3 + rng.normal(0, 1, n)
    ctrl = pd.DataFrame({"replicate": 0, "patient_id": pid, "arm": "ctrl", "y": base})
    trt = pd.DataFrame({"replicate": 0, "patient_id": pid, "arm": "drug", "y": base + d})
    patients = pd.concat([trt, ctrl], ignore_index=True)  # any row order
    patients["solver_status"] = "ok"
    patients.loc[0, "solver_status"] = "max_steps"  # patient 1, drug arm
    return patients, pop, d


def test_individual_effects_hand_checked() -> None:
    """Distribution, fractions and the regression against numpy on a planted effect."""
    patients, pop, d = _synthetic()
    eff, pred = individual_effects(
        patients,
        pop,
        arms=["ctrl", "drug"],
        control="ctrl",
        endpoints={"y": EffectOptions("higher", 25.0)},
        kinds={"y": "continuous"},
        covariates=["sex", "age"],
        derived=["bmi"],
        categories={"sex": ["F", "M"]},
    )
    row = eff.iloc[0]
    used = d[1:]  # patient 1 excluded (failed solve)
    assert (row["n"], row["n_excluded"]) == (399, 1)
    assert row["mean"] == pytest.approx(used.mean(), rel=1e-12)
    assert row["sd"] == pytest.approx(used.std(ddof=1), rel=1e-12)
    np.testing.assert_allclose(
        row[["p5", "p25", "p50", "p75", "p95"]].to_numpy(dtype=float),
        np.percentile(used, [5, 25, 50, 75, 95]),
        rtol=1e-12,
    )
    assert row["frac_benefit"] == pytest.approx((used > 25).mean())
    assert row["frac_harm"] == pytest.approx((used < -25).mean())
    assert row["frac_no_change"] == pytest.approx((np.abs(used) <= 25).mean())
    assert row["frac_benefit"] + row["frac_harm"] + row["frac_no_change"] == pytest.approx(1.0)
    # the regression recovers the planted coefficients; R^2 = explained / total
    # variance = (0.25 * 60^2/12 + 16 * 0.25) / (that + 1) = 79 / 80
    assert row["r_squared"] == pytest.approx(79 / 80, abs=0.005)
    assert row["n_terms"] == 2
    p = pred[pred["replicate"] == 0].set_index("covariate")
    assert p.loc["age", "coef"] == pytest.approx(0.5, abs=0.01)
    assert p.loc["sex=M", "coef"] == pytest.approx(4.0, abs=0.3)
    assert p.loc["age", "p_value"] < 1e-100
    assert p.loc["age", "std_coef"] == pytest.approx(
        0.5 * pop["age"][1:].std() / used.std(ddof=1), rel=0.03
    )
    assert not p.loc["bmi", "in_regression"]
    assert np.isnan(p.loc["bmi", "coef"])
    assert p.loc["bmi", "spearman_rho"] > 0.9
    assert p.loc["age", "spearman_rho"] > p.loc["sex=M", "spearman_rho"] > 0
    # one replicate: the pooled rows repeat it
    pooled = eff[eff["replicate"].isna()].drop(columns="replicate").reset_index(drop=True)
    one = eff[eff["replicate"] == 0].drop(columns="replicate").reset_index(drop=True)
    pd.testing.assert_frame_equal(pooled, one)
    # lower is better: benefit and harm swap
    lower = individual_effects(
        patients,
        pop,
        arms=["ctrl", "drug"],
        control="ctrl",
        endpoints={"y": EffectOptions("lower", 25.0)},
        kinds={"y": "continuous"},
        covariates=[],
    )[0].iloc[0]
    assert (lower["frac_benefit"], lower["frac_harm"]) == (row["frac_harm"], row["frac_benefit"])
    undirected = individual_effects(
        patients,
        pop,
        arms=["ctrl", "drug"],
        control="ctrl",
        endpoints={"y": EffectOptions()},
        kinds={"y": "continuous"},
        covariates=[],
    )[0].iloc[0]
    assert np.isnan(undirected["frac_benefit"])
    assert undirected["frac_no_change"] == 0.0


def test_individual_effects_need_every_patient_in_every_arm() -> None:
    patients, pop, _ = _synthetic(n=20)
    with pytest.raises(DataError, match="exactly one row for each of the 20 patients"):
        individual_effects(
            patients.iloc[1:],
            pop,
            arms=["ctrl", "drug"],
            control="ctrl",
            endpoints={"y": EffectOptions()},
            kinds={"y": "continuous"},
            covariates=[],
        )


# ---------------------------------------------------------------------------
# Invariance: arms, replicates and scenario changes keep the existing patients
# ---------------------------------------------------------------------------


def _added_arm(d: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(d)
    out["arms"].append({"name": "300mg_qd", "regimen": {"route": "oral", "dose": 300}})
    return out


@pytest.mark.parametrize(
    "randomization_spec",
    [None, {"method": "simple"}, {"method": "stratified", "strata": ["sex"]}],
)
def test_adding_an_arm_or_replicate_keeps_the_patients(
    randomization_spec: dict[str, Any] | None,
) -> None:
    d = with_randomization(randomization_spec)
    base = sample_population(make(d))
    more = copy.deepcopy(d)
    more["study"]["replicates"] = 3
    pop3 = sample_population(make(more))
    pd.testing.assert_frame_equal(
        pop3[pop3["replicate"] < 2].reset_index(drop=True), base, check_exact=True
    )
    arms = sample_population(make(_added_arm(d)))
    cols = [c for c in base.columns if c not in ("arm", "arm_index")]
    pd.testing.assert_frame_equal(arms[cols], base[cols], check_exact=True)


def test_twin_adding_an_arm_or_replicate_keeps_the_rows() -> None:
    """Twin crossover: a new (last) arm adds a row per patient, the existing
    (patient, arm) rows are unchanged; a new replicate adds rows after the others."""
    d = twin_data(size=30)
    base = sample_population(make(d))
    arms = sample_population(make(_added_arm(d)))
    assert len(arms) == 30 * 2 * 4
    kept = arms[arms["arm"] != "300mg_qd"].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, base, check_exact=True)
    more = copy.deepcopy(d)
    more["study"]["replicates"] = 3
    pop3 = sample_population(make(more))
    pd.testing.assert_frame_equal(
        pop3[pop3["replicate"] < 2].reset_index(drop=True), base, check_exact=True
    )


@pytest.mark.parametrize(
    "scenario",
    [
        "double dose",
        "new adverse event and endpoint",
        "other randomization",
        "twin crossover",
        "execution layout",
    ],
)
def test_scenario_changes_keep_the_patients(scenario: str) -> None:
    """A what-if variant of the study (another regimen, more outputs, another
    allocation or design, another execution layout) has the same patients: the same
    covariates, random effects and individual parameters."""
    d = small_study_data()
    base = sample_population(make(d))
    v = copy.deepcopy(d)
    if scenario == "double dose":
        v["arms"][2]["regimen"]["dose"] = 400
    elif scenario == "new adverse event and endpoint":
        v["adverse_events"]["anc_low"] = {
            "output": "ANC",
            "thresholds": [1.5],
            "direction": "below",
        }
        v["endpoints"]["anc_nadir"] = {"type": "minimum", "output": "ANC"}
    elif scenario == "other randomization":
        v["randomization"] = {"method": "stratified", "block": 3, "strata": ["sex"]}
    elif scenario == "twin crossover":
        v["study"]["design"] = "twin_crossover"
    else:
        v["execution"] = {"shards": 7, "workers": 2, "chunk_size": 5}
    pop = sample_population(make(v))
    if scenario == "twin crossover":
        pop = pop[pop["arm_index"] == 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(pop[PATIENT_COLUMNS], base[PATIENT_COLUMNS], check_exact=True)
    rest = [c for c in base.columns if c not in ("arm", "arm_index")]
    pd.testing.assert_frame_equal(pop[rest], base[rest], check_exact=True)


def test_docstring_examples_of_design() -> None:
    import doctest

    import vtrial.population.design

    result = doctest.testmod(vtrial.population.design, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
