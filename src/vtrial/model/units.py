"""Units of model parameters: equivalent spellings accepted and converted, others refused.

A study may give a parameter's value in another unit than the model declares
(``CL: {value: 83.3, unit: mL/min}`` for a model in ``L/h``): :func:`conversion`
returns the factor to the model's unit, computed by `pint <https://pint.readthedocs.io>`_,
or says why there is none (different dimensions, with both named). Units pint does not
know (``effect``, ``cells/uL`` spelled oddly) must then be spelled as the model spells
them.
"""

from __future__ import annotations

from functools import cache
from typing import Any

__all__ = ["UnitMismatch", "conversion"]


class UnitMismatch(ValueError):
    """Two units that cannot be converted into each other (the message says why)."""


@cache
def _registry() -> Any:
    import pint  # imported on first use: validation without unit conversions skips it

    return pint.UnitRegistry()


def _quantity(unit: str) -> Any:
    """The unit as a pint quantity (``10^9/L`` has magnitude 1e9), None if unknown."""
    text = unit.strip().replace("·", "*").replace("^", "**")
    if not text:
        return None
    try:
        return _registry().parse_expression(text)
    except Exception:  # pint raises several kinds (undefined unit, syntax): unknown
        return None


def conversion(given: str, declared: str) -> float:
    """The factor that turns a value in ``given`` into one in ``declared``.

    Raises
    ------
    UnitMismatch
        The dimensions differ, or a unit is unknown to pint and the two are not spelled
        the same.

    Examples
    --------
    >>> round(conversion("mL/min", "L/h"), 12)
    0.06
    >>> conversion("L/hr", "L/h")
    1.0
    >>> conversion("mg", "L/h")
    Traceback (most recent call last):
    ...
    vtrial.model.units.UnitMismatch: 'mg' ([mass]) cannot be converted to 'L/h' ...
    """
    if given.strip() == declared.strip():
        return 1.0
    q_given, q_declared = _quantity(given), _quantity(declared)
    if q_given is None or q_declared is None:
        unknown = given if q_given is None else declared
        raise UnitMismatch(
            f"{given!r} cannot be converted to {declared!r}: {unknown!r} is not a known unit "
            "(spell it as the model does)"
        )
    if q_given.dimensionality != q_declared.dimensionality:
        raise UnitMismatch(
            f"{given!r} ({q_given.dimensionality}) cannot be converted to {declared!r} "
            f"({q_declared.dimensionality})"
        )
    return float((q_given / q_declared).to("dimensionless").magnitude)
