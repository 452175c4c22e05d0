"""Tests of vtrial.analysis.success: success of each replicate trial and the
probability of success, on constructed trials with known outcomes (Clopper-Pearson
intervals from scipy's beta quantiles)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from tests.analysis.test_efficacy import ARMS, two_arm_table
from vtrial.analysis import success


def constructed_trials(n_rep: int = 10) -> pd.DataFrame:
    """Replicates 0-6: a large effect in the drug arm (higher y, more responders);
    7: a large effect the *wrong* way; 8-9: no effect (identical arms)."""
    rows = []
    base = np.linspace(-1.0, 1.0, 40)
    for r in range(n_rep):
        shift = 5.0 if r < 7 else (-5.0 if r == 7 else 0.0)
        for arm, y in (("placebo", base), ("drug", base + shift)):
            resp = (y > 0.5).astype(np.float64)
            rows.append(
                pd.DataFrame(
                    {
                        "replicate": np.int32(r),
                        "patient_id": np.arange(1, 41, dtype=np.int64)
                        + (40 if arm == "drug" else 0),
                        "arm": arm,
                        "solver_status": "ok",
                        "y": y,
                        "resp": resp,
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


def test_probability_of_success_constructed_case() -> None:
    df = constructed_trials()
    crit = [
        {
            "name": "y",
            "endpoint": "y",
            "reference": "placebo",
            "test": "welch_t",
            "alpha": 0.05,
            "direction": "greater",
        },
        {
            "name": "resp",
            "endpoint": "resp",
            "reference": "placebo",
            "test": "fisher_exact",
            "alpha": 0.05,
            "direction": "greater",
        },
    ]
    trial = success.trial_table(
        df,
        criteria=[success.SuccessCriterion(**c) for c in crit],
        kinds={"y": "continuous", "resp": "binary"},
        arms=ARMS,
    )
    assert list(trial.columns) == list(success.TRIAL_COLUMNS)
    assert trial["criterion"].tolist() == ["y"] * 10 + ["resp"] * 10 + ["all"] * 10
    y = trial[trial["criterion"] == "y"]
    # replicate 7 is significant the wrong way, 8-9 not significant (p = 1)
    assert y["success"].tolist() == [True] * 7 + [False] * 3
    assert y["p_value"].iloc[7] < 1e-10
    assert y["diff"].iloc[7] == pytest.approx(-5.0)
    assert (y["p_value"].iloc[8:] == 1.0).all()
    np.testing.assert_allclose(y["estimate"] - y["reference_estimate"], y["diff"], atol=1e-12)
    every = trial[trial["criterion"] == "all"]
    both = (
        trial[trial["criterion"] == "y"]["success"].to_numpy()
        & trial[trial["criterion"] == "resp"]["success"].to_numpy()
    )
    np.testing.assert_array_equal(every["success"].to_numpy(), both)

    pos = success.success_table(trial)
    assert list(pos.columns) == list(success.SUCCESS_COLUMNS)
    row = pos.set_index("criterion").loc["y"]
    assert (row["n_replicates"], row["n_success"], row["probability"]) == (10, 7, 0.7)
    # Clopper-Pearson: beta quantiles (k, n - k + 1) and (k + 1, n - k)
    low = sps.beta.ppf(0.025, 7, 4)
    high = sps.beta.ppf(0.975, 8, 3)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), rel=1e-9)
    assert (low, high) == pytest.approx((0.3475, 0.9333), abs=1e-4)
    assert row["method"] == "clopper_pearson"


def test_success_less_direction_and_time_to_event_direction() -> None:
    df = constructed_trials(3)
    less = [
        {
            "name": "y",
            "endpoint": "y",
            "reference": "placebo",
            "test": "mann_whitney",
            "alpha": 0.05,
            "direction": "less",
        }
    ]
    trial = success.trial_table(
        df,
        criteria=[success.SuccessCriterion(**c) for c in less],
        kinds={"y": "continuous"},
        arms=ARMS,
    )
    assert not trial["success"].any()  # the drug arm is higher in every replicate
    tte = two_arm_table(seed=4)
    crit = [
        {
            "name": "pfs",
            "endpoint": "pfs",
            "reference": "placebo",
            "test": "logrank",
            "alpha": 0.5,
            "direction": "greater",
        }
    ]
    trial = success.trial_table(
        tte,
        criteria=[success.SuccessCriterion(**c) for c in crit],
        kinds={"pfs": "time_to_event"},
        arms=ARMS,
    )
    # longer times in the drug arm: hazard ratio < 1 is "greater"
    np.testing.assert_array_equal(
        trial["success"].to_numpy(),
        (trial["p_value"] < 0.5).to_numpy() & (trial["diff"] < 1.0).to_numpy(),
    )
    assert trial["success"].any()
    assert success.success_table(trial.iloc[:0]).empty
