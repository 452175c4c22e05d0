"""Messages of JSON-schema errors in the words of the project's problems: the key path
(``arms[1].regimen.dose``), the rule broken and the value found, and for a ``oneOf`` the
errors of the branch the value fits. Used by the study loader and by every entry point
that checks a piece of a study against its schema (``vtrial.simulate``'s regimen).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonschema

from vtrial.model.syntax import suggest

__all__ = ["best_errors", "key_path", "schema_message"]


def key_path(parts: Any) -> str:
    """``arms[1].regimen.dose``: the key path of a schema error, as problems name it."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def schema_message(err: jsonschema.ValidationError) -> str:
    """The rule broken and the value found, in the words of study-file problems."""
    v: Any = err.instance
    shown = json.dumps(v, default=str) if not isinstance(v, Mapping | list) else None
    schema: Mapping[str, Any] = err.schema if isinstance(err.schema, Mapping) else {}
    if err.validator == "additionalProperties":
        props: Mapping[str, Any] = schema.get("properties") or {}
        extra = sorted(set(v) - set(props))
        allowed = sorted(props)
        hints = "".join(suggest(str(k), props) for k in extra)
        return f"unknown key(s) {extra} ({hints}allowed: {allowed})"
    if err.validator == "required":
        return err.message.replace("is a required property", "is required")
    if err.validator == "type":
        return f"must be of type {err.validator_value}, got {shown if shown else type(v).__name__}"
    if err.validator == "oneOf":
        form = f" ({schema['description']})" if "description" in schema else ""
        got = shown if shown else json.dumps(v, default=str)[:200]
        return f"must be {form.strip(' ()') or 'one of the allowed forms'}, got {got}"
    if err.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {
            "minimum": ">=",
            "exclusiveMinimum": ">",
            "maximum": "<=",
            "exclusiveMaximum": "<",
        }[str(err.validator)]
        return f"must be {op} {err.validator_value}, got {shown}"
    if err.validator == "enum":
        return f"must be one of {err.validator_value}, got {shown}"
    if err.validator == "pattern":
        return f"must match {err.validator_value!r}, got {shown}"
    return f"{err.message}"


def best_errors(errors: list[jsonschema.ValidationError]) -> list[jsonschema.ValidationError]:
    """Replace oneOf errors by their most specific sub-errors where one branch fits better."""
    out: list[jsonschema.ValidationError] = []
    for e in errors:
        if e.validator == "oneOf" and e.context:
            # errors of the branches whose form (type/const) the value does not have at all
            # are noise; if the value has the form of some branches, report their errors
            wrong_form = {
                c.relative_schema_path[0]
                for c in e.context
                if c.validator in ("type", "const") and len(c.relative_schema_path) <= 2
            }
            fitting = [c for c in e.context if c.relative_schema_path[0] not in wrong_form]
            if fitting:
                out.extend(best_errors(fitting))
                continue
        out.append(e)
    return out
