"""``outputs.twins``: the study asks for the twins of its dataset's subjects.

With ``outputs.twins`` the workflow adds a ``twins`` stage: every subject of
``population.dataset`` (recorded doses) gets its random effects estimated from its own
observations (:mod:`vtrial.estimation.map`), shard by shard, into
``twins/part-NNNNN.parquet``, and ``summary/twins.parquet`` sums them up. This module
holds the section's typed form and the checks the study loader makes; what the
estimator needs beyond them (random effects, a residual error of every observed
output, observation records with a likelihood) is checked by
:func:`vtrial.run.twins.twin_problems`, before anything is estimated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["TWIN_METHODS", "TwinOutput", "twin_output_problems"]

#: estimation methods of ``outputs.twins.method``
TWIN_METHODS = ("map",)


@dataclass(frozen=True)
class TwinOutput:
    """``outputs.twins`` of a validated study.

    Attributes
    ----------
    method : str
        ``map``: maximum a posteriori estimates (NONMEM's POSTHOC objective) with
        standard errors from the Laplace approximation.
    """

    method: str = "map"

    @classmethod
    def from_data(cls, outputs: Mapping[str, Any]) -> TwinOutput | None:
        """The section of a validated ``outputs`` mapping; None without ``twins``."""
        spec = outputs.get("twins")
        if spec is None:
            return None
        return cls(method=str(spec.get("method", "map")))


def twin_output_problems(d: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Problems of ``outputs.twins`` in a study (schema-valid, defaults filled): twins
    are estimated from recorded doses and observations, so the study needs
    ``population.dataset`` with ``doses: recorded``.

    Returns
    -------
    list of (where, message)
    """
    if d.get("outputs", {}).get("twins") is None:
        return []
    ds = d["population"].get("dataset")
    if ds is None:
        got = "no population.dataset (the patients are sampled)"
    elif ds.get("doses") != "recorded":
        got = f"population.dataset.doses: {ds.get('doses')!r}"
    else:
        return []
    return [
        (
            "outputs.twins",
            "twins are estimated from each subject's recorded doses and observations: "
            f"it needs population.dataset with doses: recorded, got {got}",
        )
    ]
