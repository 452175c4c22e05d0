"""Exception types raised by vtrial.

Every error a user can cause derives from :class:`VtrialError` and from the
matching builtin (``ValueError`` or ``TypeError``), and says *where* (file and
key path or row), *what rule* was broken and *what value* was found, e.g.::

    config/study.yaml: arms[1].regimen.dose: must be > 0, got -5
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class VtrialError(Exception):
    """Base class of all errors raised on purpose by vtrial."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a config, model or data file.

    Parameters
    ----------
    file : str
        The file the problem is in (``"<dict>"`` for in-memory input).
    where : str
        Key path (``arms[1].regimen.dose``) or row/column location.
    message : str
        The rule broken and the value found (``must be > 0, got -5``).
    """

    file: str
    where: str
    message: str

    def __str__(self) -> str:
        loc = f"{self.file}: {self.where}" if self.where else self.file
        return f"{loc}: {self.message}"


def problems_message(problems: list[Problem]) -> str:
    """``N problem(s) found:`` and one indented line per problem."""
    n = len(problems)
    head = f"{n} problem{'s' if n != 1 else ''} found:"
    return "\n".join([head, *(f"  - {p}" for p in problems)])


class ConfigError(VtrialError, ValueError):
    """One or more problems in a study config, reported together."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems: list[Problem] = list(problems)
        super().__init__(problems_message(self.problems))


class ModelError(VtrialError, ValueError):
    """A problem in a model specification (built-in or user file).

    ``problems`` holds ``(where, message)`` pairs when the error concerns a study's
    ``model`` section (``where`` relative to it, e.g. ``components.anc.links.DRUG``).
    """

    def __init__(self, message: str, problems: Iterable[tuple[str, str]] = ()):
        self.problems: list[tuple[str, str]] = list(problems)
        super().__init__(message)


class ExpressionError(VtrialError, ValueError):
    """An expression in a study or model file is not allowed or is malformed.

    Parameters
    ----------
    where : str
        Where the expression comes from (``models/friberg.yaml: odes.PROL``).
    expression : str
        The offending expression text.
    reason : str
        The rule broken.
    """

    def __init__(self, where: str, expression: str, reason: str):
        self.where = where
        self.expression = expression
        self.reason = reason
        super().__init__(f"{where}: {reason} in expression {expression!r}")


class DataError(VtrialError, ValueError):
    """A problem in an input or output data file (Parquet, CSV)."""


class DatasetError(DataError):
    """One or more problems in an input dataset or fitted-model file (a NONMEM-style
    dataset, a ``.ext``/``.cov``/EBE table), reported together; each
    :class:`Problem` names the file, the row (and file line) or key, the column, the
    rule and the value found."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems: list[Problem] = list(problems)
        super().__init__(problems_message(self.problems))


class VerificationError(VtrialError, ValueError):
    """Outputs do not match their manifest or a recomputation."""


class ResourceError(VtrialError, RuntimeError):
    """A task does not fit the resources it was given (e.g. a chunk too large for the
    memory of a Dask worker); the message names the shard and what it needs."""
