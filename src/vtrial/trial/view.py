"""What the trial and analysis layers read of a study: :class:`TrialStudy`.

It extends :class:`vtrial.population.view.PopulationStudy` with the typed adverse
events and the observation and endpoint times; :class:`vtrial.study.config.Study`
implements it (see :mod:`vtrial.population.view`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from vtrial.population.view import PopulationStudy

if TYPE_CHECKING:
    import numpy as np

    from vtrial.trial.adverse import AdverseEvent
    from vtrial.trial.dropout import Dropout
    from vtrial.trial.endpoints import Endpoint
    from vtrial.trial.kinds import EndpointKind


class TrialStudy(PopulationStudy, Protocol):
    """A validated study as the trial and analysis layers see it."""

    @property
    def adverse_events(self) -> Mapping[str, AdverseEvent]:
        """The typed adverse events (name -> event), in study order."""

    @property
    def endpoints(self) -> Mapping[str, Endpoint]:
        """The typed endpoints (name -> endpoint), in study order."""

    @property
    def dropout(self) -> Dropout | None:
        """The typed ``dropout`` section (None without one)."""

    @property
    def end(self) -> float:
        """End of the simulation (h)."""

    @property
    def residual_error(self) -> dict[str, dict[str, float]]:
        """``model.residual_error``: output -> error model."""

    @property
    def observed_outputs(self) -> list[str]:
        """Outputs of ``outputs.observations``, sorted."""

    def observation_times(self) -> np.ndarray:
        """Sampling times of ``outputs.observations`` (h)."""

    def probe_times(self) -> list[float]:
        """Times at which every output is recorded for endpoints (h)."""

    def endpoint_kinds(self) -> dict[str, EndpointKind]:
        """Endpoint name -> kind."""
