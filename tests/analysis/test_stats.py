"""Tests of the summary tables against independent computations: the shared statistics
(vtrial.analysis.stats) and the exposure, efficacy, safety and band tables built on them
(vtrial.analysis.exposure, .efficacy, .safety, .bands).

Tolerances: sample moments / percentiles vs numpy rtol 1e-12; Welch and
Newcombe vs hand formulas rtol 1e-10; Wilson vs its closed form rtol 1e-12.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats as sps

from vtrial.analysis import stats
from vtrial.analysis.bands import percentile_bands
from vtrial.analysis.efficacy import efficacy_summary
from vtrial.analysis.exposure import exposure_summary
from vtrial.analysis.safety import GRADE_CATEGORIES, safety_summary
from vtrial.errors import DataError

ARMS = ["placebo", "low", "high"]  # deliberately not alphabetical


# --------------------------------------------------------------------------- #
# Fixtures and independent reference formulas
# --------------------------------------------------------------------------- #


def make_patients(seed: int = 0, n_per_rep: int = 60, n_rep: int = 3) -> pd.DataFrame:
    """Random patients table with failures, missing values and zero exposures."""
    rng = np.random.default_rng(seed)
    n = n_per_rep * n_rep
    arm = rng.choice(ARMS, n)
    status = np.where(rng.random(n) < 0.12, rng.choice(["max_steps", "nonfinite"], n), "ok")
    cmax = rng.lognormal(1.0, 0.6, n)
    cmax[arm == "placebo"] = 0.0
    auc = rng.lognormal(3.0, 0.4, n)
    auc[rng.random(n) < 0.08] = np.nan
    tumour = rng.normal(-10.0, 20.0, n)
    tumour[rng.random(n) < 0.05] = np.nan
    response = (rng.random(n) < np.where(arm == "high", 0.5, 0.2)).astype(np.int8)
    grade = rng.integers(0, 6, n).astype(np.int8)
    t3 = np.where(grade >= 3, rng.uniform(0.0, 500.0, n), np.nan)
    # failed patients may hold garbage: it must never be looked at
    cmax[status != "ok"] = np.nan
    df = pd.DataFrame(
        {
            "replicate": np.repeat(np.arange(n_rep, dtype=np.int32), n_per_rep),
            "patient_id": np.arange(n, dtype=np.int64),
            "arm": arm,
            "solver_status": status,
            "cmax": cmax,
            "auc": auc,
            "tumour_change": tumour,
            "objective_response": response,
            "ae_neutropenia_grade": grade,
            "ae_neutropenia_time_grade3": t3,
        }
    )
    return df


def wilson_hand(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson (1927) score interval, closed form."""
    z = sps.norm.isf((1 - confidence) / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def newcombe_hand(k1: int, n1: int, k2: int, n2: int, confidence: float) -> tuple[float, float]:
    """Newcombe (1998) method 10: hybrid score interval for p1 - p2."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_hand(k1, n1, confidence)
    l2, u2 = wilson_hand(k2, n2, confidence)
    d = p1 - p2
    return (
        d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


def welch_hand(x: np.ndarray, y: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Welch t-test with Welch-Satterthwaite df: (p, ci_low, ci_high) for mean(x)-mean(y)."""
    n1, n2 = len(x), len(y)
    a = np.var(x, ddof=1) / n1
    b = np.var(y, ddof=1) / n2
    se = math.sqrt(a + b)
    df = (a + b) ** 2 / (a**2 / (n1 - 1) + b**2 / (n2 - 1))
    d = float(np.mean(x) - np.mean(y))
    t = d / se
    p = 2 * sps.t.sf(abs(t), df)
    q = sps.t.ppf(0.5 + confidence / 2, df)
    return p, d - q * se, d + q * se


def fisher_hand(a: int, b: int, c: int, d: int) -> float:
    """Two-sided Fisher exact p: sum of hypergeometric P(table) <= P(observed)."""
    r1, r2, c1 = a + b, c + d, a + c
    total = math.comb(r1 + r2, c1)

    def prob(x: int) -> float:
        return math.comb(r1, x) * math.comb(r2, c1 - x) / total

    p_obs = prob(a)
    lo, hi = max(0, c1 - r2), min(r1, c1)
    return sum(prob(x) for x in range(lo, hi + 1) if prob(x) <= p_obs * (1 + 1e-7))


def ok_group(df: pd.DataFrame, rep: int, arm: str) -> pd.DataFrame:
    return df[(df["replicate"] == rep) & (df["arm"] == arm) & (df["solver_status"] == "ok")]


def n_failed(df: pd.DataFrame, rep: int, arm: str) -> int:
    sel = (df["replicate"] == rep) & (df["arm"] == arm) & (df["solver_status"] != "ok")
    return int(sel.sum())


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("p", "name"),
    [(5, "p5"), (50.0, "p50"), (2.5, "p2_5"), (97.5, "p97_5"), (0, "p0"), (100, "p100")],
)
def test_percentile_column(p: float, name: str) -> None:
    assert stats.percentile_column(p) == name


@pytest.mark.parametrize("p", [-1, 100.5, math.nan])
def test_percentile_column_rejects(p: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        stats.percentile_column(p)


@pytest.mark.parametrize(
    ("k", "n", "conf"), [(0, 10, 0.95), (3, 10, 0.95), (10, 10, 0.9), (1, 1, 0.99), (57, 200, 0.8)]
)
def test_wilson_closed_form(k: int, n: int, conf: float) -> None:
    low, high = stats.wilson_interval(k, n, conf)
    ref = wilson_hand(k, n, conf)
    np.testing.assert_allclose([low, high], ref, rtol=1e-12, atol=1e-15)


def test_wilson_empty_and_invalid() -> None:
    assert all(math.isnan(v) for v in stats.wilson_interval(0, 0, 0.95))
    with pytest.raises(ValueError, match="count <= n"):
        stats.wilson_interval(3, 2, 0.95)
    with pytest.raises(ValueError, match="confidence"):
        stats.wilson_interval(1, 2, 1.5)


# --------------------------------------------------------------------------- #
# Exposure
# --------------------------------------------------------------------------- #


def test_exposure_matches_numpy() -> None:
    df = make_patients()
    metrics = ["cmax", "auc"]
    out = exposure_summary(df, metrics=metrics, arms=ARMS)
    assert len(out) == 3 * len(ARMS) * len(metrics)
    for row in out.itertuples(index=False):
        grp = ok_group(df, row.replicate, row.arm)
        raw = grp[row.metric].to_numpy()
        x = raw[np.isfinite(raw)]
        assert row.n == x.size
        assert row.n_missing == int(np.isnan(raw).sum())
        assert row.n_failed == n_failed(df, row.replicate, row.arm)
        np.testing.assert_allclose(row.mean, np.mean(x), rtol=1e-12)
        np.testing.assert_allclose(row.sd, np.std(x, ddof=1), rtol=1e-12)
        for p in stats.PERCENTILES:
            got = getattr(row, stats.percentile_column(p))
            np.testing.assert_allclose(got, np.percentile(x, p), rtol=1e-12)
        assert row.min == x.min()
        assert row.max == x.max()
        pos = x[x > 0]
        if pos.size == 0:  # placebo: all zero
            assert math.isnan(row.gmean)
            assert math.isnan(row.gcv)
        else:
            np.testing.assert_allclose(row.gmean, sps.gmean(pos), rtol=1e-12)
            s = math.log(sps.gstd(pos))  # gstd uses ddof=1
            np.testing.assert_allclose(row.gcv, math.sqrt(math.exp(s * s) - 1) * 100, rtol=1e-10)
    placebo = out[out["arm"] == "placebo"]
    assert (placebo.loc[placebo["metric"] == "cmax", "mean"] == 0).all()


def test_exposure_noninteger_percentiles() -> None:
    df = make_patients(seed=1)
    out = exposure_summary(df, metrics=["auc"], arms=["high"], percentiles=(2.5, 50, 97.5))
    assert [c for c in out.columns if c.startswith("p")] == ["p2_5", "p50", "p97_5"]
    row = out.iloc[0]
    x = ok_group(df, 0, "high")["auc"].dropna().to_numpy()
    np.testing.assert_allclose(
        [row["p2_5"], row["p50"], row["p97_5"]], np.percentile(x, [2.5, 50, 97.5]), rtol=1e-12
    )


def test_exposure_degenerate_groups() -> None:
    df = pd.DataFrame(
        {
            "replicate": np.array([0, 0, 0, 0, 0], dtype=np.int32),
            "patient_id": np.arange(5, dtype=np.int64),
            "arm": ["a", "b", "b", "c", "c"],
            "solver_status": ["ok", "max_steps", "nonfinite", "ok", "ok"],
            "cmax": [2.0, 1.0, 1.0, -1.0, np.nan],
        }
    )
    out = exposure_summary(df, metrics=["cmax"], arms=["a", "b", "c", "empty"])
    a, b, c, e = (out.iloc[i] for i in range(4))
    # n = 1: mean/percentiles defined, sd and gcv not
    assert (a["n"], a["mean"], a["p5"], a["p95"], a["gmean"]) == (1, 2.0, 2.0, 2.0, 2.0)
    assert math.isnan(a["sd"])
    assert math.isnan(a["gcv"])
    # all failed: counted, nothing estimated
    assert (b["n"], b["n_failed"], b["n_missing"]) == (0, 2, 0)
    # one negative value (no geometric mean), one NaN counted as missing
    assert (c["n"], c["n_missing"], c["mean"]) == (1, 1, -1.0)
    assert math.isnan(c["gmean"])
    # arm requested but absent
    assert (e["n"], e["n_failed"], e["n_missing"]) == (0, 0, 0)
    num = ["mean", "sd", "gmean", "gcv", "p5", "p25", "p50", "p75", "p95", "min", "max"]
    assert b[num].isna().all()
    assert e[num].isna().all()


def test_exposure_validation() -> None:
    df = make_patients()
    with pytest.raises(DataError, match="ctrough"):
        exposure_summary(df, metrics=["ctrough"], arms=ARMS)
    with pytest.raises(ValueError, match="duplicated"):
        exposure_summary(df, metrics=["cmax", "cmax"], arms=ARMS)
    with pytest.raises(DataError, match="numeric"):
        exposure_summary(df, metrics=["solver_status"], arms=ARMS)


# --------------------------------------------------------------------------- #
# Ordering, dtypes, determinism
# --------------------------------------------------------------------------- #


def _all_tables(df: pd.DataFrame) -> list[pd.DataFrame]:
    return [
        exposure_summary(df, metrics=["auc", "cmax"], arms=ARMS),
        efficacy_summary(
            df,
            endpoints={"tumour_change": "continuous", "objective_response": "binary"},
            arms=ARMS,
            control="placebo",
        ),
        safety_summary(df, events=["neutropenia"], arms=ARMS, horizon=600.0),
    ]


def test_row_order_and_dtypes() -> None:
    df = make_patients()
    expo, eff, saf = _all_tables(df)
    assert list(expo["replicate"]) == [r for r in range(3) for _ in range(6)]
    assert list(expo["arm"][:6]) == ["placebo", "placebo", "low", "low", "high", "high"]
    assert list(expo["metric"][:4]) == ["auc", "cmax", "auc", "cmax"]
    assert list(eff["endpoint"][:2]) == ["tumour_change", "objective_response"]
    assert list(saf["grade"][:10]) == list(GRADE_CATEGORIES)
    assert len(saf) == 3 * 3 * 10
    for table, text in [
        (expo, ["arm", "metric"]),
        (eff, ["arm", "endpoint", "kind", "test", "method"]),
        (saf, ["arm", "event", "grade"]),
    ]:
        assert isinstance(table.index, pd.RangeIndex)
        assert table["replicate"].dtype == np.int32
        for col in text:
            assert table[col].dtype == object
            assert all(type(v) is str for v in table[col])
        for col in table.columns:
            if col in ("n", "n_failed", "n_missing", "count"):
                assert table[col].dtype == np.int64, col
            elif col not in ["replicate", *text]:
                assert table[col].dtype == np.float64, col
        schema = pa.Table.from_pandas(table, preserve_index=False).schema
        assert schema.field("replicate").type == pa.int32()
        for col in text:
            assert schema.field(col).type == pa.string()


def test_deterministic_under_row_shuffle() -> None:
    df = make_patients(seed=3)
    shuffled = df.sample(frac=1.0, random_state=7).reset_index(drop=True)
    for a, b in zip(_all_tables(df), _all_tables(shuffled), strict=True):
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)
    for a, b in zip(_all_tables(df), _all_tables(df), strict=True):
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_empty_patients_table() -> None:
    df = make_patients().iloc[:0]
    for table in _all_tables(df):
        assert len(table) == 0
        assert table["replicate"].dtype == np.int32


# --------------------------------------------------------------------------- #
# Efficacy
# --------------------------------------------------------------------------- #


def test_continuous_efficacy_vs_hand_welch() -> None:
    df = make_patients(seed=2)
    conf = 0.9
    out = efficacy_summary(
        df, endpoints={"tumour_change": "continuous"}, arms=ARMS, control="placebo", confidence=conf
    )
    for row in out.itertuples(index=False):
        grp = ok_group(df, row.replicate, row.arm)
        raw = grp["tumour_change"].to_numpy()
        x = raw[np.isfinite(raw)]
        assert (row.n, row.n_missing, row.n_failed) == (
            x.size,
            int(np.isnan(raw).sum()),
            n_failed(df, row.replicate, row.arm),
        )
        assert row.kind == "continuous"
        m, se = np.mean(x), np.std(x, ddof=1) / math.sqrt(x.size)
        q = sps.t.ppf(0.5 + conf / 2, x.size - 1)
        np.testing.assert_allclose(row.estimate, m, rtol=1e-12)
        np.testing.assert_allclose([row.ci_low, row.ci_high], [m - q * se, m + q * se], rtol=1e-10)
        if row.arm == "placebo":
            assert (row.test, row.method) == ("", "t")
            assert np.isnan([row.diff, row.diff_ci_low, row.diff_ci_high, row.p_value]).all()
            continue
        ctrl = ok_group(df, row.replicate, "placebo")["tumour_change"].dropna().to_numpy()
        p, lo, hi = welch_hand(x, ctrl, conf)
        assert (row.test, row.method) == ("welch_t", "t+welch")
        np.testing.assert_allclose(row.diff, np.mean(x) - np.mean(ctrl), rtol=1e-12)
        np.testing.assert_allclose(
            [row.p_value, row.diff_ci_low, row.diff_ci_high], [p, lo, hi], rtol=1e-10
        )


def test_binary_efficacy_vs_hand() -> None:
    df = make_patients(seed=4)
    out = efficacy_summary(
        df, endpoints={"objective_response": "binary"}, arms=ARMS, control="placebo"
    )
    for row in out.itertuples(index=False):
        x = ok_group(df, row.replicate, row.arm)["objective_response"].to_numpy()
        k, n = int(x.sum()), x.size
        assert (row.kind, row.n, row.n_missing) == ("binary", n, 0)
        np.testing.assert_allclose(row.estimate, k / n, rtol=1e-15)
        np.testing.assert_allclose([row.ci_low, row.ci_high], wilson_hand(k, n, 0.95), rtol=1e-12)
        if row.arm == "placebo":
            assert (row.test, row.method) == ("", "wilson")
            assert math.isnan(row.p_value)
            continue
        c = ok_group(df, row.replicate, "placebo")["objective_response"].to_numpy()
        kc, nc = int(c.sum()), c.size
        assert (row.test, row.method) == ("fisher_exact", "wilson+newcombe")
        np.testing.assert_allclose(row.diff, k / n - kc / nc, rtol=1e-12)
        np.testing.assert_allclose(
            [row.diff_ci_low, row.diff_ci_high], newcombe_hand(k, n, kc, nc, 0.95), rtol=1e-10
        )
        ref = sps.fisher_exact([[k, n - k], [kc, nc - kc]]).pvalue
        np.testing.assert_allclose(row.p_value, ref, rtol=1e-12)


def _small_binary_table() -> pd.DataFrame:
    # arm "trt": 7/9 responders; arm "ctl": 3/8 responders (one more failed, one NaN)
    resp = [1] * 7 + [0] * 2 + [1] * 3 + [0] * 5 + [1, np.nan]
    arm = ["trt"] * 9 + ["ctl"] * 8 + ["ctl", "ctl"]
    status = ["ok"] * 17 + ["max_steps", "ok"]
    return pd.DataFrame(
        {
            "replicate": np.zeros(19, dtype=np.int32),
            "patient_id": np.arange(19, dtype=np.int64),
            "arm": arm,
            "solver_status": status,
            "orr": np.array(resp, dtype=np.float64),
        }
    )


def test_fisher_small_table_hand_hypergeometric() -> None:
    df = _small_binary_table()
    out = efficacy_summary(df, endpoints={"orr": "binary"}, arms=["ctl", "trt"], control="ctl")
    ctl, trt = out.iloc[0], out.iloc[1]
    assert (ctl["n"], ctl["n_failed"], ctl["n_missing"]) == (8, 1, 1)
    assert (trt["n"], trt["n_failed"], trt["n_missing"]) == (9, 0, 0)
    p = fisher_hand(7, 2, 3, 5)
    np.testing.assert_allclose(trt["p_value"], p, rtol=1e-12)
    np.testing.assert_allclose(trt["diff"], 7 / 9 - 3 / 8, rtol=1e-15)
    np.testing.assert_allclose(
        [trt["diff_ci_low"], trt["diff_ci_high"]], newcombe_hand(7, 9, 3, 8, 0.95), rtol=1e-10
    )


def test_binary_endpoint_as_bool() -> None:
    df = _small_binary_table().dropna()
    df["orr"] = df["orr"].astype(bool)
    out = efficacy_summary(df, endpoints={"orr": "binary"}, arms=["ctl", "trt"], control="ctl")
    assert list(out["n"]) == [8, 9]
    np.testing.assert_allclose(out["estimate"], [3 / 8, 7 / 9], rtol=1e-15)


def test_efficacy_control_none() -> None:
    df = make_patients()
    out = efficacy_summary(
        df,
        endpoints={"tumour_change": "continuous", "objective_response": "binary"},
        arms=ARMS,
        control=None,
    )
    assert out[["diff", "diff_ci_low", "diff_ci_high", "p_value"]].isna().all().all()
    assert (out["test"] == "").all()
    assert set(out["method"]) == {"t", "wilson"}
    assert out["estimate"].notna().all()


def _degenerate_table() -> pd.DataFrame:
    rows = [
        # arm, y (continuous), r (binary)
        *[("ctl", 5.0, 1)] * 4,  # zero variance, all responders
        *[("same", 5.0, 1)] * 3,  # zero variance, same mean as control
        *[("shift", 8.0, 1)] * 3,  # zero variance, different mean
        ("one", 2.0, 0),  # n = 1
        ("spread", 1.0, 0),
        ("spread", 2.0, 0),
        ("spread", 4.0, 1),
    ]
    return pd.DataFrame(
        {
            "replicate": np.zeros(len(rows), dtype=np.int32),
            "patient_id": np.arange(len(rows), dtype=np.int64),
            "arm": [r[0] for r in rows],
            "solver_status": ["ok"] * len(rows),
            "y": [r[1] for r in rows],
            "r": np.array([r[2] for r in rows], dtype=np.int8),
        }
    )


def test_efficacy_degenerate_cases() -> None:
    df = _degenerate_table()
    arms = ["ctl", "same", "shift", "one", "spread", "empty"]
    out = efficacy_summary(
        df, endpoints={"y": "continuous", "r": "binary"}, arms=arms, control="ctl"
    ).set_index(["arm", "endpoint"])
    # zero variance: mean is defined, t-interval is not
    ctl = out.loc[("ctl", "y")]
    assert ctl["estimate"] == 5.0
    assert np.isnan([ctl["ci_low"], ctl["ci_high"]]).all()
    # both groups constant: diff defined, Welch undefined (kept NaN)
    for arm, diff in [("same", 0.0), ("shift", 3.0)]:
        row = out.loc[(arm, "y")]
        assert row["diff"] == diff
        assert row["test"] == "welch_t"
        assert np.isnan([row["p_value"], row["diff_ci_low"], row["diff_ci_high"]]).all()
    # n = 1: estimate and diff defined, intervals not
    one = out.loc[("one", "y")]
    assert (one["n"], one["estimate"], one["diff"]) == (1, 2.0, -3.0)
    assert np.isnan([one["ci_low"], one["p_value"], one["diff_ci_low"]]).all()
    # control constant, arm varying: Welch is well defined (df = n_arm - 1)
    spread = out.loc[("spread", "y")]
    x, c = np.array([1.0, 2.0, 4.0]), np.full(4, 5.0)
    p, lo, hi = welch_hand(x, c, 0.95)
    np.testing.assert_allclose(
        [spread["p_value"], spread["diff_ci_low"], spread["diff_ci_high"]], [p, lo, hi], rtol=1e-10
    )
    # empty arm
    for ep in ["y", "r"]:
        empty = out.loc[("empty", ep)]
        assert empty["n"] == 0
        assert empty[["estimate", "ci_low", "ci_high", "diff", "p_value"]].isna().all()
    # all responders vs all responders: Fisher p = 1, Newcombe defined
    same = out.loc[("same", "r")]
    assert (same["estimate"], same["diff"], same["p_value"]) == (1.0, 0.0, 1.0)
    np.testing.assert_allclose(
        [same["diff_ci_low"], same["diff_ci_high"]], newcombe_hand(3, 3, 4, 4, 0.95), rtol=1e-10
    )
    ctl_r = out.loc[("ctl", "r")]
    np.testing.assert_allclose([ctl_r["ci_low"], ctl_r["ci_high"]], wilson_hand(4, 4, 0.95))
    one_r = out.loc[("one", "r")]
    np.testing.assert_allclose(one_r["p_value"], sps.fisher_exact([[0, 1], [4, 0]]).pvalue)


def test_efficacy_validation() -> None:
    df = make_patients()
    with pytest.raises(ValueError, match="control"):
        efficacy_summary(df, endpoints={"tumour_change": "continuous"}, arms=ARMS, control="nope")
    with pytest.raises(ValueError, match="kind"):
        efficacy_summary(
            df,
            endpoints={"tumour_change": "ordinal"},
            arms=ARMS,
            control=None,
        )
    with pytest.raises(ValueError, match="confidence"):
        efficacy_summary(
            df, endpoints={"tumour_change": "continuous"}, arms=ARMS, control=None, confidence=95
        )
    bad = df.copy()
    bad["objective_response"] = bad["objective_response"].astype(np.float64)
    bad.loc[bad.index[bad["solver_status"] == "ok"][2], "objective_response"] = 2.0
    with pytest.raises(DataError, match="0/1"):
        efficacy_summary(bad, endpoints={"objective_response": "binary"}, arms=ARMS, control=None)


# --------------------------------------------------------------------------- #
# Safety
# --------------------------------------------------------------------------- #


def test_safety_counts_and_wilson() -> None:
    df = make_patients(seed=5)
    out = safety_summary(df, events=["neutropenia"], arms=ARMS, horizon=600.0)
    for row in out.itertuples(index=False):
        g = ok_group(df, row.replicate, row.arm)["ae_neutropenia_grade"].to_numpy()
        if row.grade.startswith(">="):
            count = int((g >= int(row.grade[2:])).sum())
        else:
            count = int((g == int(row.grade)).sum())
        assert (row.n, row.n_failed, row.count) == (
            g.size,
            n_failed(df, row.replicate, row.arm),
            count,
        )
        np.testing.assert_allclose(row.incidence, count / g.size, rtol=1e-15)
        np.testing.assert_allclose(
            [row.ci_low, row.ci_high], wilson_hand(count, g.size, 0.95), rtol=1e-12, atol=1e-15
        )
        if row.grade != ">=3" or count < g.size / 2:  # else KM cannot fall to 0.5
            assert math.isnan(row.median_time_grade3)
        else:
            # no censoring before the horizon: KM is the empirical survival
            # function, so the median is the ceil(n/2)-th event time
            t3 = ok_group(df, row.replicate, row.arm)["ae_neutropenia_time_grade3"]
            events = np.sort(t3.dropna().to_numpy())
            assert row.median_time_grade3 == events[math.ceil(g.size / 2) - 1]


def _ae_table(event_times: list[float], n_none: int) -> pd.DataFrame:
    n = len(event_times) + n_none
    times = np.array([*event_times, *[np.nan] * n_none])
    return pd.DataFrame(
        {
            "replicate": np.zeros(n, dtype=np.int32),
            "patient_id": np.arange(n, dtype=np.int64),
            "arm": ["a"] * n,
            "solver_status": ["ok"] * n,
            "ae_x_grade": np.where(np.isnan(times), 1, 3).astype(np.int8),
            "ae_x_time_grade3": times,
        }
    )


@pytest.mark.parametrize(
    ("event_times", "n_none", "expected"),
    [
        # S = 5/6, 4/6, 3/6 at t = 1, 3, 4: reaches 0.5 exactly at t = 4
        ([1.0, 3.0, 4.0], 3, 4.0),
        # S = 5/6, 4/6, 3/6, 2/6 ...: first <= 0.5 at t = 3
        ([1.0, 2.0, 3.0, 5.0, 6.0], 1, 3.0),
        # tie: 3 of 6 at t = 2 -> S(2) = 0.5
        ([2.0, 2.0, 2.0, 7.0], 2, 2.0),
        # S = 6/7, 5/7, 4/7; the event at t = 12 is after the horizon (10) and
        # censored there, so the curve never reaches 0.5 (it would at t = 12)
        ([2.0, 5.0, 9.0, 12.0], 3, math.nan),
        # no events at all
        ([], 4, math.nan),
    ],
)
def test_km_median_hand(event_times: list[float], n_none: int, expected: float) -> None:
    df = _ae_table(event_times, n_none)
    out = safety_summary(df, events=["x"], arms=["a"], horizon=10.0)
    med = out.set_index("grade")["median_time_grade3"]
    assert med.drop(">=3").isna().all()
    np.testing.assert_equal(med[">=3"], expected)


def test_km_excludes_failed_patients() -> None:
    df = _ae_table([1.0, 3.0, 4.0], 3)
    failed = _ae_table([0.5, 0.6], 0).assign(solver_status="max_steps", patient_id=[10, 11])
    out = safety_summary(
        pd.concat([df, failed], ignore_index=True), events=["x"], arms=["a"], horizon=10.0
    )
    row = out.set_index("grade").loc[">=3"]
    assert (row["n"], row["n_failed"], row["count"], row["median_time_grade3"]) == (6, 2, 3, 4.0)


def test_safety_validation() -> None:
    df = _ae_table([1.0, 3.0], 2)
    with pytest.raises(ValueError, match="horizon"):
        safety_summary(df, events=["x"], arms=["a"], horizon=0.0)
    bad = df.copy()
    bad.loc[0, "ae_x_time_grade3"] = np.nan  # grade 3 without a time
    with pytest.raises(DataError, match="patient_id 0"):
        safety_summary(bad, events=["x"], arms=["a"], horizon=10.0)
    bad = df.copy()
    bad.loc[3, "ae_x_time_grade3"] = 5.0  # time without grade >= 3
    with pytest.raises(DataError, match="finite exactly when"):
        safety_summary(bad, events=["x"], arms=["a"], horizon=10.0)
    bad = df.copy()
    bad["ae_x_grade"] = bad["ae_x_grade"].astype(np.float64)
    bad.loc[2, "ae_x_grade"] = 7
    with pytest.raises(DataError, match="0-5"):
        safety_summary(bad, events=["x"], arms=["a"], horizon=10.0)
    # the same garbage in a failed patient is ignored
    bad.loc[2, "solver_status"] = "nonfinite"
    out = safety_summary(bad, events=["x"], arms=["a"], horizon=10.0)
    assert out["n_failed"].eq(1).all()
    with pytest.raises(DataError, match="ae_y_grade"):
        safety_summary(df, events=["y"], arms=["a"], horizon=10.0)


# --------------------------------------------------------------------------- #
# Percentile bands
# --------------------------------------------------------------------------- #


def make_timecourse(
    n_patients: int, n_times: int, outputs: list[str], seed: int = 0, nan_frac: float = 0.0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    arm = np.repeat(rng.choice(["a", "b", "c", "other"], n_patients), n_times)
    df = pd.DataFrame(
        {
            "replicate": np.repeat(np.arange(n_patients) % 2, n_times).astype(np.int32),
            "patient_id": np.repeat(np.arange(n_patients, dtype=np.int64), n_times),
            "arm": arm,
            "time": np.tile(np.linspace(0.0, 168.0, n_times), n_patients),
        }
    )
    for out in outputs:
        v = rng.lognormal(0.0, 1.0, len(df)).astype(np.float32)
        v[rng.random(len(df)) < nan_frac] = np.nan
        df[out] = v
    return df


def test_percentile_bands_vs_numpy() -> None:
    tc = make_timecourse(60, 7, ["conc", "anc"], seed=1, nan_frac=0.1)
    # arm "c" gets an extra, irregular time point for one patient only
    extra = tc.iloc[[0]].assign(arm="c", time=3.5, conc=np.float32(np.nan), anc=np.float32(2.0))
    tc = pd.concat([tc, extra], ignore_index=True)
    arms = ["c", "a", "b", "missing"]
    out = percentile_bands(tc, outputs=["conc", "anc"], arms=arms, percentiles=(5, 50, 95))
    assert list(out.columns) == ["arm", "output", "time", "n", "p5", "p50", "p95", "mean"]
    expected_keys = [
        (arm, o, t)
        for arm in arms
        for o in ["conc", "anc"]
        for t in sorted(tc.loc[tc["arm"] == arm, "time"].unique())
    ]
    assert list(zip(out["arm"], out["output"], out["time"], strict=True)) == expected_keys
    for row in out.itertuples(index=False):
        sel = (tc["arm"] == row.arm) & (tc["time"] == row.time)
        x = tc.loc[sel, row.output].to_numpy(dtype=np.float64)
        x = x[~np.isnan(x)]
        assert row.n == x.size
        if x.size == 0:
            assert np.isnan([row.p5, row.p50, row.p95, row.mean]).all()
            continue
        np.testing.assert_allclose(
            [row.p5, row.p50, row.p95], np.percentile(x, [5, 50, 95]), rtol=1e-12
        )
        np.testing.assert_allclose(row.mean, np.mean(x), rtol=1e-12)
    c_extra = out[(out["arm"] == "c") & (out["time"] == 3.5)]
    assert list(c_extra["n"]) == [0, 1]
    assert out["time"].dtype == np.float64
    assert out["n"].dtype == np.int64
    assert out["arm"].dtype == object


def test_percentile_bands_empty_and_validation() -> None:
    tc = make_timecourse(4, 3, ["conc"])
    out = percentile_bands(tc, outputs=["conc"], arms=["zzz"])
    assert len(out) == 0
    assert list(out.columns) == ["arm", "output", "time", "n", "p5", "p50", "p95", "mean"]
    with pytest.raises(DataError, match="anc"):
        percentile_bands(tc, outputs=["anc"], arms=["a"])
    bad = tc.assign(time=np.nan)
    with pytest.raises(DataError, match="time"):
        percentile_bands(bad, outputs=["conc"], arms=["a"])
