"""Tests of vtrial.trial.spec: the typed endpoints against the study data they are
built from (every key of every endpoint of the shipped studies and of a hand-written
set covering every type), their kinds, threshold crossings and schedules."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from vtrial.trial.spec import (
    EffectOptions,
    Endpoint,
    effect_options,
    endpoint_from_data,
    endpoints_from_data,
)

ROOT = Path(__file__).resolve().parents[2]
STUDIES = [*sorted((ROOT / "config" / "studies").glob("*.yaml")), ROOT / "config/config.yaml"]
#: key of the study file -> field of Endpoint (the others have the key's name)
RENAMED = {"from": "start", "in": "categories"}

HAND = {
    "v": {"type": "value_at", "output": "CP", "at": 24, "observed": True, "test": "mann_whitney"},
    "auc": {"type": "auec", "output": "E", "from": 0, "to": 48, "every": 2, "above_baseline": True},
    "os": {"type": "time_to_event", "output": "S", "every": 6},
    "fall": {"type": "time_to_event", "output": "ANC", "below": 0.5},
    "rise": {"type": "time_to_event", "output": "QTC", "above": 480},
    "bor": {
        "type": "best_response",
        "output": "T",
        "every": 1008,
        "first": 504,
        "by": 4000,
        "complete_below": 1,
        "min_increase": 5,
    },
    "orr": {"type": "responder", "endpoint": "bor", "in": ["CR", "PR"]},
    "low": {
        "type": "responder",
        "endpoint": "v",
        "below_or_equal": 2,
        "better": "higher",
        "margin": 0.5,
    },
}


def _check(name: str, raw: dict[str, Any], ep: Endpoint) -> None:
    assert ep.name == name
    for key, value in raw.items():
        if key == "description":
            continue
        got = getattr(ep, RENAMED.get(key, key))
        if isinstance(value, list):
            assert list(got) == value, key
        else:
            assert got == value, key


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_key_of_the_shipped_studies(path: Path) -> None:
    from vtrial.study.config import load_study

    study = load_study(path)
    assert list(study.endpoints) == list(study.data["endpoints"])
    for name, raw in study.data["endpoints"].items():
        _check(name, raw, study.endpoints[name])


def test_every_type_and_key() -> None:
    eps = endpoints_from_data(HAND)
    for name, raw in HAND.items():
        _check(name, raw, eps[name])
    kinds = {k: v.kind for k, v in eps.items()}
    assert kinds == {
        "v": "continuous",
        "auc": "continuous",
        "os": "time_to_event",
        "fall": "time_to_event",
        "rise": "time_to_event",
        "bor": "categorical",
        "orr": "binary",
        "low": "binary",
    }
    assert (eps["fall"].crossing, eps["rise"].crossing, eps["os"].crossing) == (
        (0.5, -1),
        (480.0, 1),
        None,
    )
    assert eps["bor"].schedule.until(4000.0) == [504.0, 1512.0, 2520.0, 3528.0]
    assert effect_options(eps["low"]) == EffectOptions("higher", 0.5)
    assert effect_options(eps["v"]) == EffectOptions(None, 0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        eps["v"].at = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        eps["x"] = endpoint_from_data("x", HAND["v"])  # type: ignore[index]
