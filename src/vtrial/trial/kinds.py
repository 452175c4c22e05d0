"""Endpoint kinds and the comparison tests each kind takes.

Defined here, at the bottom of the trial layer, because the endpoints that produce
the values (:mod:`vtrial.trial.endpoints`), the study validation and the statistics
that compare arms (:mod:`vtrial.analysis.efficacy`) all need the same definitions.
"""

from __future__ import annotations

from typing import Literal

#: kind of an endpoint's patient-table value
EndpointKind = Literal["continuous", "binary", "categorical", "time_to_event"]

#: comparison tests of :func:`vtrial.analysis.efficacy.efficacy_summary` by endpoint kind
#: (first: the default)
EFFICACY_TESTS: dict[str, tuple[str, ...]] = {
    "continuous": ("welch_t", "mann_whitney"),
    "binary": ("fisher_exact", "chi_square"),
    "categorical": ("fisher_exact", "chi_square"),
    "time_to_event": ("logrank",),
}
