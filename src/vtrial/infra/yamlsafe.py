"""Safe YAML parsing for study and model files.

Study and model files are data: they are parsed with a subclass of
:class:`yaml.SafeLoader` (no tags that construct Python objects) that also refuses
duplicate keys, which plain ``yaml.safe_load`` silently resolves to the last value,
and reads numbers in scientific notation as YAML 1.2 does (``1e6``, ``1.0e6``,
``2.5E-3``: PyYAML's YAML 1.1 resolver wants a dot and a signed exponent, and would
read ``1.0e6`` as text). A syntax error names the file, line and column
(:func:`yaml_problem`).
"""

from __future__ import annotations

import io
import re
from functools import cache
from importlib import resources
from typing import Any

import yaml


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML loader that refuses duplicate keys (plain safe_load keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 floats with an exponent that YAML 1.1 reads as text (no dot, or an unsigned
# exponent): the core schema's float, restricted to the forms PyYAML misses
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str, name: str | None = None) -> Any:
    """Parse YAML safely (no tags that construct objects), refusing duplicate keys and
    reading YAML 1.2 numbers; ``name`` (the file) goes into error messages.

    Examples
    --------
    >>> load_yaml("{B0: 1.0e6, k: 2.5E-3, n: 1e3, m: 1.5}")
    {'B0': 1000000.0, 'k': 0.0025, 'n': 1000.0, 'm': 1.5}
    """
    stream = io.StringIO(text)
    stream.name = name or "<string>"  # PyYAML names the stream in its marks
    return yaml.load(stream, Loader=_StrictLoader)


def yaml_problem(exc: yaml.YAMLError) -> tuple[str, str]:
    """``(where, message)`` of a YAML error, on one line: ``line L, column C`` and what
    was wrong (PyYAML's own text spans several lines, with the marks repeated)."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
    message = "; ".join(str(p) for p in parts if p) or str(exc).splitlines()[0]
    return where, f"not valid YAML: {message}"


@cache
def package_schema(name: str) -> dict[str, Any]:
    """A JSON schema shipped in ``vtrial/schemas`` (``study`` or ``model``), parsed once."""
    text = resources.files("vtrial").joinpath(f"schemas/{name}.schema.yaml").read_text()
    return dict(yaml.safe_load(text))
