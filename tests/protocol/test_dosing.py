"""Tests of vtrial.protocol.dosing: the checks of the arms section of a study file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.study.test_config import DELETE, assert_mutation_refused

#: mistakes in the arms section of config/config.yaml, each refused with one problem
#: naming the key path, the rule and the value (see tests/study/test_config.py)
REFUSED_DOSING = [
    pytest.param({"arms[1].rati": 2}, ["arms[1]:", "unknown key(s) ['rati']"], id="unknown-arm"),
    pytest.param(
        {"arms[1].regimen.dosee": 3},
        [
            "arms[1].regimen:",
            "unknown key(s) ['dosee']",
            "(did you mean 'dose'? allowed: ['count', 'cycles', 'dose'",
        ],
        id="unknown-regimen-key",
    ),
    pytest.param(
        {"arms[1].regimen": [{"route": "oral", "dose": 1, "dosee": 3}]},
        ["arms[1].regimen[0]:", "unknown key(s) ['dosee']"],
        id="unknown-phase-key-in-list",
    ),
    pytest.param(
        {"arms[1].regimen.dose": -5},
        ["arms[1].regimen.dose", "must be > 0", "got -5"],
        id="neg-dose",
    ),
    pytest.param(
        {"arms[2].regimen.dose": 0},
        ["arms[2].regimen.dose", "must be > 0", "got 0"],
        id="zero-dose",
    ),
    pytest.param(
        {"arms[1].regimen.route": "subcutaneous"},
        ["arms[1].regimen.route", "must be one of", '"subcutaneous"'],
        id="route-enum",
    ),
    pytest.param(
        {"arms[1].regimen.unit": "mg/kg/day"},
        ["arms[1].regimen.unit", "must be one of", '"mg/kg/day"'],
        id="unit-enum",
    ),
    pytest.param(
        {"arms[1].regimen.count": 0},
        ["arms[1].regimen.count", "must be >= 1", "got 0"],
        id="zero-count",
    ),
    pytest.param({"arms[1].ratio": 0}, ["arms[1].ratio", "must be >= 1", "got 0"], id="zero-ratio"),
    pytest.param({"arms[0].regimen": None}, ["arms[0].regimen", "got null"], id="null-regimen"),
    pytest.param(
        {"arms[0].regimen": "nothing"}, ["arms[0].regimen", '"nothing"'], id="string-regimen"
    ),
    pytest.param({"arms": DELETE}, ["(top level)", "'arms' is required"], id="missing-arms"),
    pytest.param(
        {"arms[1].regimen.route": DELETE},
        ["arms[1].regimen", "'route' is required"],
        id="missing-route",
    ),
    pytest.param({"arms": []}, ["arms", "[]"], id="no-arms"),
    pytest.param(
        {"arms[2].name": "100mg_qd"},
        ["arms[2].name", "arm names must be unique", "'100mg_qd' repeats"],
        id="duplicate-arm-names",
    ),
    pytest.param(
        {"arms[1].regimen.route": "iv_infusion"},
        ["arms[1].regimen.duration", "an iv_infusion needs duration > 0", "got None"],
        id="infusion-without-duration",
    ),
    pytest.param(
        {"arms[1].regimen.duration": 1},
        ["arms[1].regimen.duration", "only an iv_infusion has a duration", "route is oral"],
        id="oral-with-duration",
    ),
    pytest.param(
        {"arms[1].regimen.count": 23},
        [
            "arms[1].regimen.cycles.length_days",
            "23 doses every 24.0 h (the last at 528 h",
            "do not fit in a 21-day cycle",
        ],
        id="cycles-do-not-fit",
    ),
    pytest.param(
        {
            "arms[2].regimen": [
                {"route": "iv_bolus", "dose": 400},
                {
                    "route": "iv_infusion",
                    "dose": 100,
                    "duration": 30,
                    "interval": 24,
                    "count": 7,
                    "cycles": {"length_days": 7, "count": 2},
                },
            ]
        },
        ["arms[2].regimen[1].cycles.length_days", "ending at 174 h", "7-day cycle"],
        id="infusion-cycles-do-not-fit",
    ),
    pytest.param(
        {"arms[1].regimen.unit": "mg/m2", "population.derived": ["bmi", "crcl"]},
        ["arms[1].regimen.unit", "mg/m2 dosing needs the derived covariate 'bsa'"],
        id="mg-m2-without-bsa",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), REFUSED_DOSING)
def test_dosing_mistakes_are_refused(
    tmp_path: Path, changes: dict[str, Any], expected: list[str]
) -> None:
    assert_mutation_refused(tmp_path, changes, expected)
