"""Statistics of the trial layer against scipy/statsmodels and hand computations.

* efficacy_summary's declared tests: Mann-Whitney U and Pearson chi-square against
  scipy (rtol 1e-12), a hand-computed chi-square (2 x 2 table, closed form);
* time-to-event rows: Kaplan-Meier median and its CI against SurvfuncRight, the
  log-rank p-value against survdiff and a hand computation (sum of O - E and of the
  hypergeometric variances), the log-rank hazard ratio exp((O - E) / V) against the
  same hand computation and near the Cox estimate (PHReg), boundary cases;
* safety_summary's median CI and censoring at an end of follow-up (hand KM);
* success per replicate and the probability of success on a constructed case, with
  the Clopper-Pearson interval against beta quantiles (scipy).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.duration.hazard_regression import PHReg
from statsmodels.duration.survfunc import SurvfuncRight, survdiff

from vtrial.analysis.efficacy import efficacy_summary
from vtrial.errors import DataError

ARMS = ["placebo", "drug"]


def two_arm_table(seed: int = 0, n: int = 80, n_rep: int = 3) -> pd.DataFrame:
    """Random two-arm table: a continuous, a binary and a censored time-to-event endpoint."""
    rng = np.random.default_rng(seed)
    m = n * n_rep
    arm = np.tile(np.array(ARMS, dtype=object), m // 2)
    drug = arm == "drug"
    t_event = rng.exponential(np.where(drug, 300.0, 200.0))
    t_cens = rng.uniform(100.0, 500.0, m)
    return pd.DataFrame(
        {
            "replicate": np.repeat(np.arange(n_rep, dtype=np.int32), n),
            "patient_id": np.tile(np.arange(1, n + 1, dtype=np.int64), n_rep),
            "arm": arm,
            "solver_status": "ok",
            "y": rng.normal(np.where(drug, 1.0, 0.0), 2.0),
            "resp": (rng.random(m) < np.where(drug, 0.5, 0.3)).astype(np.float64),
            "pfs": np.minimum(t_event, t_cens),
            "pfs_event": (t_event <= t_cens).astype(np.float64),
        }
    )


def group(df: pd.DataFrame, rep: int, arm: str) -> pd.DataFrame:
    return df[(df["replicate"] == rep) & (df["arm"] == arm)]


KINDS = {"y": "continuous", "resp": "binary", "pfs": "time_to_event"}


def logrank_hand(
    t: np.ndarray, e: np.ndarray, tc: np.ndarray, ec: np.ndarray
) -> tuple[float, float]:
    """O - E of the first group and its variance, summed over the distinct event times:
    E = d n1 / n, V = d (n1 / n)(1 - n1 / n)(n - d) / (n - 1)."""
    time = np.r_[t, tc]
    event = np.r_[e, ec] > 0
    first = np.r_[np.ones(t.size, bool), np.zeros(tc.size, bool)]
    o_e = v = 0.0
    for u in np.unique(time[event]):
        risk = time >= u
        n, n1 = risk.sum(), (risk & first).sum()
        here = (time == u) & event
        d, d1 = here.sum(), (here & first).sum()
        o_e += d1 - d * n1 / n
        if n > 1:
            v += d * (n1 / n) * (1 - n1 / n) * (n - d) / (n - 1)
    return float(o_e), float(v)


# --------------------------------------------------------------------------- #
# Declared tests
# --------------------------------------------------------------------------- #


def test_mann_whitney_and_chi_square_match_scipy() -> None:
    df = two_arm_table()
    out = efficacy_summary(
        df,
        endpoints=KINDS,  # type: ignore[arg-type]
        arms=ARMS,
        control="placebo",
        tests={"y": "mann_whitney", "resp": "chi_square"},
    )
    welch = efficacy_summary(
        df,
        endpoints={"y": "continuous"},
        arms=ARMS,
        control="placebo",
    )
    for rep in range(3):
        x, c = group(df, rep, "drug"), group(df, rep, "placebo")
        row = out[(out["replicate"] == rep) & (out["arm"] == "drug")].set_index("endpoint")
        want = sps.mannwhitneyu(x["y"], c["y"], alternative="two-sided").pvalue
        assert row.loc["y", "p_value"] == pytest.approx(want, rel=1e-12)
        assert row.loc["y", "test"] == "mann_whitney"
        # the difference and its interval stay Welch's
        wrow = welch[(welch["replicate"] == rep) & (welch["arm"] == "drug")].iloc[0]
        for col in ("diff", "diff_ci_low", "diff_ci_high"):
            assert row.loc["y", col] == wrow[col]
        k, kc = int(x["resp"].sum()), int(c["resp"].sum())
        table = [[k, len(x) - k], [kc, len(c) - kc]]
        want = sps.chi2_contingency(table, correction=False).pvalue
        assert row.loc["resp", "p_value"] == pytest.approx(want, rel=1e-12)
        assert row.loc["resp", "test"] == "chi_square"


def test_chi_square_hand_case_and_zero_margin() -> None:
    """[[10, 10], [5, 15]]: chi2 = N (ad - bc)^2 / (r1 r2 c1 c2) = 40 * 100^2 / 150000."""
    resp = np.r_[np.ones(10), np.zeros(10), np.ones(5), np.zeros(15)]
    df = pd.DataFrame(
        {
            "replicate": np.zeros(40, dtype=np.int32),
            "arm": ["drug"] * 20 + ["placebo"] * 20,
            "solver_status": "ok",
            "resp": resp,
        }
    )
    out = efficacy_summary(
        df, endpoints={"resp": "binary"}, arms=ARMS, control="placebo", tests={"resp": "chi_square"}
    )
    chi2 = 40 * (10 * 15 - 10 * 5) ** 2 / (20 * 20 * 15 * 25)
    assert chi2 == pytest.approx(8.0 / 3.0)
    p = out.loc[out["arm"] == "drug", "p_value"].item()
    assert p == pytest.approx(math.erfc(math.sqrt(chi2 / 2)), rel=1e-12)  # chi2(1) tail
    # nobody responds in either arm: a zero margin, the statistic is 0/0
    out = efficacy_summary(
        df.assign(resp=0.0),
        endpoints={"resp": "binary"},
        arms=ARMS,
        control="placebo",
        tests={"resp": "chi_square"},
    )
    assert math.isnan(out.loc[out["arm"] == "drug", "p_value"].item())


def test_unknown_test_for_kind_is_refused() -> None:
    with pytest.raises(ValueError, match=r"tests\['y'\]: a continuous endpoint takes"):
        efficacy_summary(
            two_arm_table(),
            endpoints={"y": "continuous"},
            arms=ARMS,
            control="placebo",
            tests={"y": "logrank"},
        )


# --------------------------------------------------------------------------- #
# Time to event
# --------------------------------------------------------------------------- #


def test_time_to_event_rows_match_statsmodels() -> None:
    df = two_arm_table(seed=4)
    out = efficacy_summary(df, endpoints={"pfs": "time_to_event"}, arms=ARMS, control="placebo")
    assert set(out["kind"]) == {"time_to_event"}
    for rep in range(3):
        x, c = group(df, rep, "drug"), group(df, rep, "placebo")
        for arm, g in (("drug", x), ("placebo", c)):
            row = out[(out["replicate"] == rep) & (out["arm"] == arm)].iloc[0]
            sf = SurvfuncRight(g["pfs"].to_numpy(), g["pfs_event"].to_numpy())
            reached = np.flatnonzero(sf.surv_prob <= 0.5 + 1e-12)
            median = sf.surv_times[reached[0]] if reached.size else math.nan
            np.testing.assert_equal(row["estimate"], median)
            with np.errstate(divide="ignore", invalid="ignore"):
                low, high = sf.quantile_ci(0.5, alpha=0.05)
            np.testing.assert_equal([row["ci_low"], row["ci_high"]], [low, high])
        row = out[(out["replicate"] == rep) & (out["arm"] == "drug")].iloc[0]
        time = np.r_[x["pfs"], c["pfs"]]
        status = np.r_[x["pfs_event"], c["pfs_event"]]
        grp = np.r_[np.ones(len(x)), np.zeros(len(c))]
        assert row["p_value"] == pytest.approx(survdiff(time, status, grp)[1], rel=1e-12)
        o_e, v = logrank_hand(
            x["pfs"].to_numpy(),
            x["pfs_event"].to_numpy(),
            c["pfs"].to_numpy(),
            c["pfs_event"].to_numpy(),
        )
        assert row["p_value"] == pytest.approx(sps.chi2.sf(o_e**2 / v, 1), rel=1e-9)
        z = sps.norm.isf(0.025)
        want = np.exp(o_e / v + np.array([0.0, -z, z]) / math.sqrt(v))
        got = [row["diff"], row["diff_ci_low"], row["diff_ci_high"]]
        assert got == pytest.approx(list(want), rel=1e-10)
        # close to the Cox estimate (measured -0.06 %, -0.4 %, -1.8 % at HR 0.84, 0.65, 0.44)
        fit = PHReg(time, grp[:, None], status=status, ties="breslow").fit()
        assert row["diff"] == pytest.approx(math.exp(fit.params[0]), rel=0.03)
        assert (row["test"], row["method"]) == ("logrank", "km+logrank")
    # the drug arm has the longer times (true hazard ratio 200 / 300)
    hr = out.loc[out["arm"] == "drug", "diff"].to_numpy()
    assert np.all(hr < 1.0)


def test_logrank_hand_computed() -> None:
    """A: events at 1, 3, 5; B: at 2, 4, 6 (no censoring).

    Per event time, E_A = d n_A / n and V = d (n_A / n)(1 - n_A / n)(n - d) / (n - 1):
    O - E = 3 - (1/2 + 2/5 + 1/2 + 1/3 + 1/2 + 0) = 23/30 and
    V = 1/4 + 6/25 + 1/4 + 2/9 + 1/4 = 1.2122..., chi2 = (O - E)^2 / V.
    """
    df = pd.DataFrame(
        {
            "replicate": np.zeros(6, dtype=np.int32),
            "arm": ["drug", "placebo"] * 3,
            "solver_status": "ok",
            "t": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "t_event": 1.0,
        }
    )
    out = efficacy_summary(df, endpoints={"t": "time_to_event"}, arms=ARMS, control="placebo")
    o_e = 3 - (1 / 2 + 2 / 5 + 1 / 2 + 1 / 3 + 1 / 2)
    v = 1 / 4 + 6 / 25 + 1 / 4 + 2 / 9 + 1 / 4
    p = sps.chi2.sf(o_e**2 / v, 1)
    assert p == pytest.approx(0.48622, abs=1e-5)
    row = out[out["arm"] == "drug"].iloc[0]
    assert row["p_value"] == pytest.approx(p, rel=1e-10)
    assert row["diff"] == pytest.approx(math.exp(o_e / v), rel=1e-12)  # 1.8822
    # KM median of A (events 1, 3, 5 of 3): S = 2/3, 1/3 -> first <= 0.5 at 3
    assert row["estimate"] == 3.0


def test_time_to_event_boundaries() -> None:
    base = pd.DataFrame(
        {
            "replicate": np.zeros(8, dtype=np.int32),
            "arm": ["drug"] * 4 + ["placebo"] * 4,
            "solver_status": "ok",
            "t": [10.0, 20.0, 30.0, 40.0, 5.0, 6.0, 7.0, 8.0],
            "t_event": [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0],
        }
    )

    def drug_row(df: pd.DataFrame) -> pd.Series:
        out = efficacy_summary(df, endpoints={"t": "time_to_event"}, arms=ARMS, control="placebo")
        return out[out["arm"] == "drug"].iloc[0]

    row = drug_row(base)  # no event in the arm: hazard ratio < 1, median not reached
    o_e, v = logrank_hand(
        np.array([10.0, 20, 30, 40]),
        np.zeros(4),
        np.array([5.0, 6, 7, 8]),
        np.array([1.0, 1, 1, 0]),
    )
    assert o_e < 0
    assert row["diff"] == pytest.approx(math.exp(o_e / v), rel=1e-12)
    assert row["diff_ci_low"] < row["diff"] < row["diff_ci_high"]
    assert math.isnan(row["estimate"])
    assert 0.0 < row["p_value"] < 0.05
    flipped = base.assign(arm=["placebo"] * 4 + ["drug"] * 4)
    assert drug_row(flipped)["diff"] == pytest.approx(math.exp(-o_e / v), rel=1e-12)
    row = drug_row(base.assign(t_event=0.0))  # no event at all
    assert math.isnan(row["diff"])
    assert math.isnan(row["p_value"])
    # a missing time or indicator is missing; a bad indicator is refused
    row = drug_row(base.assign(t=[np.nan, *base["t"][1:]]))
    assert (row["n"], row["n_missing"]) == (3, 1)
    with pytest.raises(DataError, match="t_event: binary endpoint must be 0/1"):
        drug_row(base.assign(t_event=2.0))
    with pytest.raises(DataError, match="missing column"):
        drug_row(base.drop(columns="t_event"))


# --------------------------------------------------------------------------- #
# Safety: median time to grade >= 3 with its CI, censored at dropout
# --------------------------------------------------------------------------- #


# --------------------------------------------------------------------------- #
# Success and probability of success
# --------------------------------------------------------------------------- #
