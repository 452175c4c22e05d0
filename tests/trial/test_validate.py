"""Tests of vtrial.trial.validate: the checks of the endpoints section of a study file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.study.test_config import DELETE, assert_mutation_refused

#: mistakes in the endpoints section of config/config.yaml, each refused with one problem
#: naming the key path, the rule and the value (see tests/study/test_config.py)
REFUSED_VALIDATE = [
    pytest.param(
        {"endpoints.tumour_change.time": 10},
        ["endpoints.tumour_change:", "unknown key(s) ['time']"],
        id="unknown-endpoint",
    ),
    pytest.param(
        {"endpoints.tumour_change.type": "auc"},
        ["endpoints.tumour_change.type", "must be one of", '"auc"'],
        id="endpoint-type-enum",
    ),
    pytest.param(
        {"endpoints.tumour_change.output": "TUMOR"},
        ["endpoints.tumour_change.output", "not a model output", "got 'TUMOR'"],
        id="endpoint-unknown-output",
    ),
    pytest.param(
        {"endpoints.objective_response.endpoint": "tumour_shrinkage"},
        ["endpoints.objective_response.endpoint", "defined before it", "got 'tumour_shrinkage'"],
        id="responder-undefined-endpoint",
    ),
    pytest.param(
        {
            "endpoints": {
                "objective_response": {
                    "type": "responder",
                    "endpoint": "tumour_change",
                    "below": -30,
                },
                "tumour_change": {"type": "minimum", "output": "TUMOUR"},
            }
        },
        ["endpoints.objective_response.endpoint", "defined before it []", "got 'tumour_change'"],
        id="responder-before-its-endpoint",
    ),
    pytest.param(
        {"endpoints.again": {"type": "responder", "endpoint": "objective_response", "above": 0}},
        ["endpoints.again.endpoint", "'objective_response' is binary"],
        id="responder-of-responder",
    ),
    pytest.param(
        {"endpoints.objective_response.above": 10},
        ["endpoints.objective_response:", "needs exactly one of", "['below_or_equal', 'above']"],
        id="responder-two-thresholds",
    ),
    pytest.param(
        {"endpoints.objective_response.at": 100},
        ["endpoints.objective_response:", "a responder takes 'endpoint' and a threshold"],
        id="responder-with-at",
    ),
    pytest.param(
        {"endpoints.tumour_change.at": 3000},
        ["endpoints.tumour_change.at", "must be <= simulation.end (2016.0)", "got 3000"],
        id="at-beyond-end",
    ),
    pytest.param(
        {"endpoints.tumour_change.at": DELETE},
        ["endpoints.tumour_change:", "type percent_change_from_baseline needs 'at'"],
        id="missing-at",
    ),
    pytest.param(
        {"endpoints.nadir": {"type": "minimum", "output": "ANC", "at": 10}},
        ["endpoints.nadir.at", "type minimum takes no 'at'"],
        id="minimum-with-at",
    ),
    pytest.param(
        {"endpoints.tumour_change.below": 3},
        ["endpoints.tumour_change:", "keys ['below'] only apply to type responder"],
        id="threshold-on-continuous",
    ),
    pytest.param(
        {"endpoints.cmax": {"type": "maximum", "output": "CP"}},
        ["endpoints:", "names ['cmax'] are reserved for patient-table columns"],
        id="reserved-endpoint-name",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), REFUSED_VALIDATE)
def test_validate_mistakes_are_refused(
    tmp_path: Path, changes: dict[str, Any], expected: list[str]
) -> None:
    assert_mutation_refused(tmp_path, changes, expected)
