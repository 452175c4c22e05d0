"""Tests of vtrial.trial.recist: RECIST 1.1 categories on hand-checkable trajectories,
the best overall response, and assessment schedules."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from vtrial.trial.recist import (
    RESPONSE_CATEGORIES,
    assessment_times,
    best_overall_response,
    response_column,
    visit_responses,
)

CR, PR, SD, PD = range(4)


@pytest.mark.parametrize(
    ("baseline", "sizes", "kw", "visits", "best"),
    [
        pytest.param(100.0, [90.0, 95.0, 85.0], {}, [SD, SD, SD], SD, id="stable"),
        pytest.param(100.0, [60.0, 65.0], {}, [PR, PR], PR, id="partial"),
        # 75 >= 1.2 * 60 (nadir): progression after a partial response -> PR
        pytest.param(100.0, [60.0, 75.0, 50.0], {}, [PR, PD, PR], PR, id="PR-then-PD-is-PR"),
        pytest.param(100.0, [125.0, 50.0], {}, [PD, PR], PD, id="PD-at-first-assessment"),
        # below baseline but >= 20 % above the nadir 80: progression from the nadir
        pytest.param(100.0, [80.0, 97.0], {}, [SD, PD], SD, id="nadir-PD-after-SD"),
        pytest.param(100.0, [50.0, 61.0], {}, [PR, PD], PR, id="nadir-PD-after-PR"),
        # exactly on the limits: -30 % is PR, +20 % is PD
        pytest.param(100.0, [70.0], {}, [PR], PR, id="exactly-30-percent-down"),
        pytest.param(100.0, [120.0], {}, [PD], PD, id="exactly-20-percent-up"),
        pytest.param(100.0, [70.1], {}, [SD], SD, id="just-above-30-percent-down"),
        pytest.param(100.0, [119.9], {}, [SD], SD, id="just-below-20-percent-up"),
        # the baseline is part of the nadir: 110 then 119 is not PD (119 < 1.2 * 100)
        pytest.param(100.0, [110.0, 119.0], {}, [SD, SD], SD, id="baseline-in-nadir"),
        pytest.param(100.0, [40.0, 3.0], {"complete_below": 5.0}, [PR, CR], CR, id="complete"),
        pytest.param(100.0, [40.0, 3.0], {}, [PR, PR], PR, id="no-CR-without-limit"),
        # under the detection limit a size cannot progress (3 -> 4.5 is +50 %)
        pytest.param(100.0, [3.0, 4.5], {"complete_below": 5.0}, [CR, CR], CR, id="CR-not-PD"),
        pytest.param(100.0, [3.0, 7.0], {"complete_below": 5.0}, [CR, PD], CR, id="CR-then-PD"),
        # nadir 10, then 12.5: +25 % but only +2.5 in absolute terms
        pytest.param(20.0, [10.0, 12.5], {"min_increase": 5.0}, [PR, PR], PR, id="min-increase"),
        pytest.param(20.0, [10.0, 12.5], {}, [PR, PD], PR, id="no-min-increase"),
    ],
)
def test_recist_hand_trajectories(
    baseline: float, sizes: list[float], kw: dict[str, Any], visits: list[int], best: int
) -> None:
    codes = visit_responses([baseline], [sizes], **kw)
    assert codes[0].tolist() == visits
    assert int(best_overall_response(codes)[0]) == best


def test_recist_undefined_and_column() -> None:
    base = np.array([100.0, 0.0, np.nan, 100.0, 100.0])
    sizes = np.array(
        [
            [60.0, 80.0],
            [1.0, 1.0],  # baseline 0: no relative change
            [1.0, 1.0],
            [np.nan, 50.0],  # unknown before the first PD: undefined
            [130.0, np.nan],  # PD first: defined whatever follows
        ]
    )
    codes = best_overall_response(visit_responses(base, sizes))
    assert codes.tolist() == [PR, -1, -1, -1, PD]
    col = response_column(codes)
    assert list(col.categories) == list(RESPONSE_CATEGORIES)
    assert col.ordered
    assert [None if pd.isna(v) else v for v in col] == ["PR", None, None, None, "PD"]
    assert best_overall_response(np.empty((2, 0), dtype=np.int8)).tolist() == [-1, -1]


def test_assessment_times() -> None:
    assert assessment_times({"every": 1008}, 4032.0) == [1008.0, 2016.0, 3024.0, 4032.0]
    assert assessment_times({"every": 42, "first": 21, "by": 120}, 500.0) == [21.0, 63.0, 105.0]
    # 0.1-h steps: the last time lands on `by` despite rounding
    t = assessment_times({"every": 0.1, "first": 0.1, "by": 0.3}, 1.0)
    assert t == pytest.approx([0.1, 0.2, 0.3], rel=1e-12)
    assert t[-1] == 0.3
    assert assessment_times({"times": [5, 10.5]}, 20.0) == [5.0, 10.5]
    assert assessment_times({"every": 10, "first": 30, "by": 20}, 50.0) == []
