"""Shared fixtures of the engine verification tests.

* ``pk_models``: the three library PK models, built once per session (each distinct
  model compiles its kernel once, ~15 s, then comes from numba's on-disk cache);
* ``record_error``: collects the largest error measured per verification case; the
  table is printed at the end of the run (terminal summary), so the numbers quoted
  in the project's notes can be regenerated with
  ``pytest tests/numerics -q -p no:cacheprovider``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vtrial import build_model
from vtrial.model.spec import Model

#: case -> (largest error measured, tolerance asserted)
_ERRORS: dict[str, tuple[float, float]] = {}


@pytest.fixture(scope="session")
def pk_models() -> dict[int, Model]:
    """``{1: pk_1cmt, 2: pk_2cmt, 3: pk_3cmt}`` with their library typical values."""
    return {n: build_model({"pk": f"pk_{n}cmt"}) for n in (1, 2, 3)}


@pytest.fixture(scope="session")
def record_error() -> Callable[[str, float, float], None]:
    """``record(case, error, tolerance)``: keep the largest error seen for ``case``."""

    def record(case: str, error: float, tolerance: float) -> None:
        old = _ERRORS.get(case)
        if old is None or error > old[0]:
            _ERRORS[case] = (float(error), float(tolerance))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the largest error measured per case (only when some were recorded)."""
    if not _ERRORS:
        return
    tr = terminalreporter
    tr.section("vtrial engine verification: largest error per case")
    width = max(len(k) for k in _ERRORS)
    tr.write_line(f"{'case':<{width}}  {'max error':>10}  {'tolerance':>9}")
    for case in sorted(_ERRORS):
        err, tol = _ERRORS[case]
        tr.write_line(f"{case:<{width}}  {err:10.2e}  {tol:9.0e}")
