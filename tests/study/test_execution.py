"""Tests of vtrial.study.execution: the checks of the execution section of a study file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.study.test_config import assert_mutation_refused

#: mistakes in the execution section of config/config.yaml, each refused with one problem
#: naming the key path, the rule and the value (see tests/study/test_config.py)
REFUSED_EXECUTION = [
    pytest.param(
        {"execution.workers": 0}, ["execution.workers", "must be >= 1", "got 0"], id="zero-workers"
    ),
    pytest.param(
        {"execution.shards": 2401},
        ["execution.shards", "must be <= the number of patients (2400)", "got 2401"],
        id="more-shards-than-patients",
    ),
    pytest.param(
        {"execution.shards": 4801, "study.replicates": 2},
        ["execution.shards", "must be <= the number of patients (4800)", "got 4801"],
        id="shards-count-replicates",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), REFUSED_EXECUTION)
def test_execution_mistakes_are_refused(
    tmp_path: Path, changes: dict[str, Any], expected: list[str]
) -> None:
    assert_mutation_refused(tmp_path, changes, expected)
