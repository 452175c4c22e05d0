"""Tests of the typed study specification: the frozen sections the study loader builds
(:mod:`vtrial.protocol.arms`, :class:`vtrial.trial.adverse.AdverseEvent`,
:class:`vtrial.population.sampling.Variability`,
:class:`vtrial.population.uncertainty.Uncertainty`) against the raw study data they
are built from, and their immutability."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from vtrial.population.uncertainty import theta_matrix
from vtrial.protocol.arms import Arm, arms_from_data
from vtrial.study.config import load_study, study_from_dict
from vtrial.trial.adverse import GRADING_SCALES, AdverseEvent

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


def test_variability_and_uncertainty_sections() -> None:
    study = study_from_dict(
        {
            "study": {
                "name": "u",
                "seed": 1,
                "replicates": 2,
                "uncertainty": {
                    "theta": {"parameters": ["CL"], "covariance": [[0.01]]},
                    "omega_df": 50,
                },
            },
            "population": {"size": 4},
            "model": {
                "pk": "pk_1cmt",
                "iiv": {
                    "omega": {"CL": 0.09, "V1": 0.04},
                    "correlations": {"CL~V1": 0.5},
                    "distribution": {"V1": "normal"},
                },
            },
            "arms": [{"name": "a", "regimen": {"route": "oral", "dose": 100}}],
        }
    )
    var = study.variability
    assert var.omega_names == ("CL", "V1")
    expected = np.array([[0.09, 0.5 * np.sqrt(0.09 * 0.04)], [0.5 * np.sqrt(0.09 * 0.04), 0.04]])
    np.testing.assert_allclose(var.omega, expected, rtol=1e-15)
    assert (var.distribution("CL"), var.distribution("V1")) == ("lognormal", "normal")
    assert dict(var.iov) == {}
    unc = study.uncertainty
    assert unc.active
    assert unc.omega_df == 50.0
    assert unc.theta is not None
    assert unc.theta.parameters == ("CL",)
    mat, problems = theta_matrix(unc.theta, study.base_dir)
    assert problems == []
    assert mat.tolist() == [[0.01]]
    plain = study_from_dict({**study.data, "study": {"name": "p", "seed": 1}})
    assert not plain.uncertainty.active
