"""Safe YAML parsing for study and model files.

Study and model files are data: they are parsed with a subclass of
:class:`yaml.SafeLoader` (no tags that construct Python objects) that also refuses
duplicate keys, which plain ``yaml.safe_load`` silently resolves to the last value.
"""

from __future__ import annotations

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


def load_yaml(text: str) -> Any:
    """Parse YAML safely (no tags that construct objects), refusing duplicate keys."""
    return yaml.load(text, Loader=_StrictLoader)


@cache
def package_schema(name: str) -> dict[str, Any]:
    """A JSON schema shipped in ``vtrial/schemas`` (``study`` or ``model``), parsed once."""
    text = resources.files("vtrial").joinpath(f"schemas/{name}.schema.yaml").read_text()
    return dict(yaml.safe_load(text))
