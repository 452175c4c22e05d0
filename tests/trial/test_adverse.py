"""Tests of vtrial.trial.adverse: the checks of the adverse_events section of a study file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.study.test_config import DELETE, assert_mutation_refused
from vtrial.study.config import load_study
from vtrial.trial.adverse import GRADING_SCALES, AdverseEvent

#: mistakes in the adverse_events section of config/config.yaml, each refused with one problem
#: naming the key path, the rule and the value (see tests/study/test_config.py)
REFUSED_ADVERSE = [
    pytest.param(
        {"adverse_events.neutropenia.grading": "ctcae_v4_anc"},
        ["adverse_events.neutropenia.grading", "must be one of", '"ctcae_v4_anc"'],
        id="grading-enum",
    ),
    pytest.param(
        {"adverse_events.neutropenia.output": DELETE},
        ["adverse_events.neutropenia:", "'output' is required"],
        id="missing-ae-output",
    ),
    pytest.param(
        {"adverse_events.neutropenia.output": "NEUT"},
        ["adverse_events.neutropenia.output", "not a model output", "got 'NEUT'"],
        id="ae-unknown-output",
    ),
    pytest.param(
        {"adverse_events.neutropenia.thresholds": [1.5, 1.0]},
        ["adverse_events.neutropenia:", "needs exactly one of 'grading'", "'thresholds'"],
        id="ae-grading-and-thresholds",
    ),
    pytest.param(
        {"adverse_events.neutropenia.grading": DELETE},
        ["adverse_events.neutropenia:", "needs exactly one of 'grading'"],
        id="ae-no-grading",
    ),
    pytest.param(
        {"adverse_events.neutropenia": {"output": "ANC", "thresholds": [1.0, 1.5, 0.5]}},
        ["adverse_events.neutropenia.thresholds", "strictly decreasing", "[1.0, 1.5, 0.5]"],
        id="thresholds-below-not-decreasing",
    ),
    pytest.param(
        {"adverse_events.tox": {"output": "CP", "thresholds": [8, 4], "direction": "above"}},
        ["adverse_events.tox.thresholds", "strictly increasing", "[8, 4]"],
        id="thresholds-above-not-increasing",
    ),
    pytest.param(
        {
            "adverse_events.tox": {
                "output": "CP",
                "thresholds": [1, 2, 3, 4, 5, 6],
                "direction": "above",
            }
        },
        ["adverse_events.tox.thresholds", "[1, 2, 3, 4, 5, 6]"],
        id="too-many-thresholds",
    ),
    pytest.param(
        {"adverse_events.neutropenia.direction": "above"},
        ["adverse_events.neutropenia.direction", "is set by the built-in grading scale"],
        id="direction-with-grading",
    ),
    pytest.param(
        {"adverse_events.neutropenia": {"output": "ANC", "thresholds": [1.5], "lln": 2.0}},
        ["adverse_events.neutropenia.lln", "only applies to a built-in grading scale"],
        id="lln-with-thresholds",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), REFUSED_ADVERSE)
def test_adverse_mistakes_are_refused(
    tmp_path: Path, changes: dict[str, Any], expected: list[str]
) -> None:
    assert_mutation_refused(tmp_path, changes, expected)


ROOT = Path(__file__).resolve().parents[2]


def test_adverse_events_resolve_grading_scales() -> None:
    study = load_study(ROOT / "config" / "config.yaml")
    for name, raw in study.data["adverse_events"].items():
        ev = study.adverse_events[name]
        assert isinstance(ev, AdverseEvent)
        assert ev.name == name
        if "probabilities" in raw:
            assert ev.drawn
            assert ev.probabilities == tuple(raw["probabilities"])
            with pytest.raises(ValueError, match="graded from probabilities"):
                ev.grading()
        elif "grading" in raw:
            scale = GRADING_SCALES[raw["grading"]]
            thr, direction = ev.grading()
            assert thr[0] == float(raw.get("lln", scale["lln"]))
            assert thr[1:] == [float(x) for x in scale["thresholds"][1:]]
            assert direction == (-1 if scale["direction"] == "below" else 1)
    with pytest.raises(TypeError):
        study.adverse_events["x"] = study.adverse_events[next(iter(study.adverse_events))]  # type: ignore[index]
