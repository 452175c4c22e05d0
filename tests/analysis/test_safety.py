"""Tests of vtrial.analysis.safety: grade frequencies, time to grade 3 and its
censoring at dropout, against statsmodels."""

from __future__ import annotations

import numpy as np
import pandas as pd
from statsmodels.duration.survfunc import SurvfuncRight

from vtrial.analysis.safety import SAFETY_COLUMNS, safety_summary


def test_safety_median_ci_and_censoring_at_dropout() -> None:
    """7 patients, first grade >= 3 at 1, 2, 5, 8 h; 3 without (horizon 10 h).

    Without dropout: S = 6/7, 5/7, 4/7, 3/7 -> median 8. If the 3 patients without an
    event drop out at 1.5 h: S(1) = 6/7, 3 at risk at 2 h -> 6/7 * 2/3 = 0.571, 2 at
    risk at 5 h -> 0.286 -> median 5.
    """
    times = np.array([1.0, 2.0, 5.0, 8.0, np.nan, np.nan, np.nan])
    df = pd.DataFrame(
        {
            "replicate": np.zeros(7, dtype=np.int32),
            "arm": "a",
            "solver_status": "ok",
            "ae_x_grade": np.where(np.isnan(times), 0, 3).astype(np.int8),
            "ae_x_time_grade3": times,
            "dropout_time": [np.inf] * 4 + [1.5] * 3,
        }
    )

    def ge3(**kw: str) -> pd.Series:
        out = safety_summary(df, events=["x"], arms=["a"], horizon=10.0, **kw)
        return out.set_index("grade").loc[">=3"]

    plain, censored = ge3(), ge3(censor="dropout_time")
    assert (plain["median_time_grade3"], censored["median_time_grade3"]) == (8.0, 5.0)
    for row, follow in ((plain, [10.0] * 3), (censored, [1.5] * 3)):
        sf = SurvfuncRight(np.r_[times[:4], follow], np.r_[np.ones(4), np.zeros(3)])
        with np.errstate(divide="ignore", invalid="ignore"):
            want = sf.quantile_ci(0.5, alpha=0.05)
        np.testing.assert_equal(
            [row["median_time_grade3_ci_low"], row["median_time_grade3_ci_high"]], want
        )
    assert list(SAFETY_COLUMNS) == list(
        safety_summary(df, events=["x"], arms=["a"], horizon=10.0).columns
    )
