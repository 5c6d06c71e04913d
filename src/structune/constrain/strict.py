"""Strict objects: under a grammar, an object gets only the keys its schema declares.

JSON Schema lets an object hold keys it does not declare unless `additionalProperties` says
otherwise, and Pydantic's schemas never say. A grammar that follows the letter lets a
small model pad objects with junk keys until `max_tokens` (the base SmolLM2 under the album
grammar wrote `"type":"integer"` into songs, or one `"description"` key after another).
xgrammar (`strict_mode`, its default), llama.cpp and OpenAI's strict structured outputs
close such objects; so does structune. Every answer still validates against the schema as
given: a strict answer is one of the answers it allows.

Left as written: an object that states `additionalProperties`, `patternProperties`,
`unevaluatedProperties`, `minProperties` or `maxProperties` itself, one combined with
composition keywords or a `$ref` (closing it could reject keys a sibling subschema
declares), and the members of `allOf`, `if`/`then`/`else`, `not` and `dependentSchemas`
(and of `anyOf`/`oneOf` beside declared properties) together with the definitions they
refer to, for the same reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Also left open: an object that counts its keys (llguidance enforces min/maxProperties
# on a closed object only when every property is required).
_OPEN_KEYS = (
    "additionalProperties",
    "patternProperties",
    "unevaluatedProperties",
    "minProperties",
    "maxProperties",
)
_COMBINING_KEYS = (
    "$ref",
    "allOf",
    "anyOf",
    "oneOf",
    "if",
    "then",
    "else",
    "not",
    "dependentSchemas",
)
_DATA_KEYS = ("const", "enum", "default", "examples")
# Subschemas that are checked together with the object around them, not instead of it.
_SIBLING_KEYS = ("allOf", "if", "then", "else", "not", "dependentSchemas")


def strict_objects(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `schema` in which every object that declares `properties` and says nothing
    about other keys gets `"additionalProperties": false` (see the module docstring)."""
    open_refs = _refs_under_siblings(schema)
    return _close(schema, open_refs, sibling=False)


def _close(node: Any, open_refs: set[str], *, sibling: bool) -> Any:
    if isinstance(node, list):
        return [_close(item, open_refs, sibling=sibling) for item in node]
    if not isinstance(node, Mapping):
        return node
    closed: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DATA_KEYS:  # values, not schemas
            closed[key] = value
        elif key in ("properties", "$defs", "definitions", "dependentSchemas") and isinstance(
            value, Mapping
        ):
            # Names mapped to schemas: close the schemas, not the mapping.
            closed[key] = {
                name: _close(
                    sub,
                    open_refs,
                    sibling=key == "dependentSchemas" or f"#/{key}/{name}" in open_refs,
                )
                for name, sub in value.items()
            }
        else:
            closed[key] = _close(value, open_refs, sibling=_checked_with(node, key))
    if (
        not sibling
        and isinstance(node.get("properties"), Mapping)
        and not any(key in node for key in _OPEN_KEYS + _COMBINING_KEYS)
    ):
        closed["additionalProperties"] = False
    return closed


def _checked_with(node: Mapping[str, Any], key: str) -> bool:
    """Whether the subschemas under `key` are checked against the same object as `node`'s
    own keywords: always for `allOf` and the like, and for `anyOf`/`oneOf` members when
    `node` declares properties of its own (which such a member must then accept)."""
    return key in _SIBLING_KEYS or (key in ("anyOf", "oneOf") and "properties" in node)


def _refs_under_siblings(schema: Mapping[str, Any]) -> set[str]:
    """The `$ref`s checked together with other keywords: written directly under `allOf`
    and the other sibling keywords, or beside `properties`."""
    refs: set[str] = set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, Mapping):
            if isinstance(node.get("$ref"), str) and "properties" in node:
                refs.add(node["$ref"])
            for key, value in node.items():
                members = value if isinstance(value, list) else [value]
                if _checked_with(node, key):
                    if key == "dependentSchemas" and isinstance(value, Mapping):
                        members = list(value.values())
                    refs.update(
                        m["$ref"]
                        for m in members
                        if isinstance(m, Mapping) and isinstance(m.get("$ref"), str)
                    )
                stack.append(value)
    return refs
