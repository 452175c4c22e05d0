"""Tests of vtrial.protocol.arms: the typed arms the study loader builds, against the
study data they come from, and frozen."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vtrial.protocol.arms import Arm, arms_from_data
from vtrial.study.config import load_study

ROOT = Path(__file__).resolve().parents[2]
STUDIES = [*sorted((ROOT / "config" / "studies").glob("*.yaml")), ROOT / "config/config.yaml"]


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_typed_arms_mirror_the_study_data(path: Path) -> None:
    study = load_study(path)
    assert [a.name for a in study.arms] == [a["name"] for a in study.data["arms"]]
    for arm, raw in zip(study.arms, study.data["arms"], strict=True):
        assert arm.ratio == raw["ratio"]
        mod = raw.get("modification")
        assert (arm.modification is None) == (not mod)
        if arm.modification is not None:
            assert [r.when for r in arm.modification.rules] == [r["when"] for r in mod["rules"]]
            assert [r.action for r in arm.modification.rules] == [r["action"] for r in mod["rules"]]
            if mod.get("levels"):
                assert arm.modification.levels == tuple(float(x) for x in mod["levels"])
        assert (arm.adherence is None) == (not raw.get("adherence"))


def test_arm_modification_and_adherence_fields() -> None:
    (arm,) = arms_from_data(
        [
            {
                "name": "titrated",
                "ratio": 2,
                "regimen": {"route": "oral", "dose": 50, "interval": 24, "count": 10},
                "modification": {
                    "decide_at": {"every": 168, "start": 24},
                    "levels": [25, 50, 100],
                    "measure": {"GLU": {"proportional": 0.1}},
                    "rules": [
                        {"when": "GLU > 7", "action": "escalate", "by": 2},
                        {"when": "GLU < 3", "action": "hold", "recheck": 24, "max_hold": 72},
                    ],
                },
                "adherence": {"p_miss": 0.2, "model": "markov", "p_stay_missing": 0.5},
            }
        ]
    )
    assert isinstance(arm, Arm)
    assert (arm.ratio, arm.planned_dose) == (2, 50.0)
    mod = arm.modification
    assert mod is not None
    assert mod.decide_at == (168.0, 24.0)
    assert mod.levels == (25.0, 50.0, 100.0)
    assert [(m.output, m.kind, m.sd) for m in mod.measure] == [("GLU", "proportional", 0.1)]
    assert (mod.rules[0].by, mod.rules[0].max_hold) == (2, None)
    assert (mod.rules[1].recheck, mod.rules[1].max_hold) == (24.0, 72.0)
    adh = arm.adherence
    assert adh is not None
    assert (adh.model, adh.p_stay_missing, adh.missed_dose, adh.late_by) == (
        "markov",
        0.5,
        "skip",
        4.0,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        arm.ratio = 3  # type: ignore[misc]
