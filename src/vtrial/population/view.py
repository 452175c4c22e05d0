"""What the population layer reads of a study: :class:`PopulationStudy`.

The population, protocol and trial modules take a study through narrow structural
interfaces (:class:`typing.Protocol`) declared next to them, never the study class
itself: :class:`vtrial.study.config.Study` implements them, and the layers below the
study loader do not import it (the layer contract of ``pyproject.toml``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from vtrial.model.spec import Model
    from vtrial.population.covariates import Population
    from vtrial.population.design import Design
    from vtrial.population.sampling import Variability
    from vtrial.population.uncertainty import Uncertainty
    from vtrial.protocol.arms import Arm
    from vtrial.protocol.dosing import EventTable


class PopulationStudy(Protocol):
    """A validated study as the population layer sees it (defaults filled)."""

    @property
    def data(self) -> Mapping[str, Any]:
        """The study as plain data (the sections not yet typed)."""

    @property
    def source(self) -> str:
        """The study file (for messages)."""

    @property
    def base_dir(self) -> Path:
        """Folder of the study file (relative paths)."""

    @property
    def seed(self) -> int:
        """Study seed."""

    @property
    def size(self) -> int:
        """Patients per replicate trial."""

    @property
    def replicates(self) -> int:
        """Replicate trials."""

    @property
    def n_patients(self) -> int:
        """Patients in the whole study."""

    @property
    def arms(self) -> tuple[Arm, ...]:
        """The typed arms, in study order."""

    @property
    def arm_names(self) -> list[str]:
        """Arm names, in study order."""

    @property
    def control_arm(self) -> str | None:
        """``study.control_arm``."""

    @property
    def model(self) -> Model:
        """The composed model."""

    @property
    def population(self) -> Population:
        """The typed ``population`` section."""

    @property
    def categories(self) -> Mapping[str, list[str]]:
        """Categorical covariates (sampled, then resampled) -> their labels."""

    @property
    def design(self) -> Design:
        """The typed trial design and randomization."""

    @property
    def variability(self) -> Variability:
        """The typed IIV, IOV and covariate models."""

    @property
    def uncertainty(self) -> Uncertainty:
        """The typed ``study.uncertainty``."""

    def events(self) -> EventTable:
        """Dose, occasion and decision events of every arm."""
