"""Every shipped study gives bit-identical tables to the recorded fingerprints.

The record (``tests/data/fingerprints.json``, see :mod:`tests.fingerprint`) was made
before the package was reorganised into layers; a refactoring must not change one
value of one table. A change of results that is intended is recorded anew with
``python -m tests.fingerprint --write`` and explained in its commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fingerprint import RECORD, VARIANTS, compute

RECORDED = json.loads(RECORD.read_text())


def test_record_covers_every_variant() -> None:
    assert sorted(RECORDED) == sorted(VARIANTS)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_tables_match_the_record(variant: str, tmp_path: Path) -> None:
    got = compute(variant, tmp_path)
    expected = RECORDED[variant]
    assert sorted(got) == sorted(expected), "the study writes other tables than recorded"
    changed = sorted(name for name in got if got[name] != expected[name])
    assert not changed, f"{variant}: tables changed from the record: {changed}"
