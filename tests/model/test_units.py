"""Parameter units given in a study: equivalent spellings converted (pint), others
refused with both units named."""

from __future__ import annotations

import re

import pytest

from tests.conftest import small_study_data
from vtrial.errors import ConfigError
from vtrial.model.units import UnitMismatch, conversion
from vtrial.study.config import study_from_dict


@pytest.mark.parametrize(
    ("given", "declared", "factor"),
    [
        ("L/hr", "L/h", 1.0),
        ("mL/min", "L/h", 0.06),
        ("L/day", "L/h", 1 / 24),
        ("g", "mg", 1000.0),
        ("ug/mL", "mg/L", 1.0),
        ("1/min", "1/h", 60.0),
        ("10^9/L", "1/nL", 1.0),
    ],
)
def test_equivalent_units_convert(given: str, declared: str, factor: float) -> None:
    assert conversion(given, declared) == pytest.approx(factor, rel=1e-12)


@pytest.mark.parametrize(
    ("given", "declared", "message"),
    [
        ("mg", "L/h", "'mg' ([mass]) cannot be converted to 'L/h'"),
        ("h", "1/h", "cannot be converted to '1/h'"),
        ("efect", "effect", "'efect' is not a known unit (spell it as the model does)"),
    ],
)
def test_incompatible_units_are_refused(given: str, declared: str, message: str) -> None:
    with pytest.raises(UnitMismatch, match=re.escape(message)):
        conversion(given, declared)


def test_a_study_gives_clearance_in_ml_per_min() -> None:
    """``CL: {value: 83.3, unit: mL/min}`` for a model in L/h: 4.998 L/h; a unit of
    another dimension is a problem naming the key, both units and the dimensions."""
    d = small_study_data()
    d["model"]["parameters"]["CL"] = {"value": 83.3, "unit": "mL/min"}
    study = study_from_dict(d)
    assert study.model.parameters["CL"].value == pytest.approx(4.998, rel=1e-12)
    d["model"]["parameters"]["CL"] = {"value": 5.0, "unit": "mg"}
    with pytest.raises(ConfigError) as err:
        study_from_dict(d, source="s.yaml")
    (problem,) = err.value.problems
    assert problem.where == "model.parameters.CL.unit"
    assert problem.message.startswith("the model declares 'L/h', got 'mg': 'mg' ([mass])")
