"""Strict objects: under a grammar, an object gets only the keys its schema declares.

JSON Schema lets an object hold keys it does not declare unless `additionalProperties` says
otherwise, and Pydantic's schemas never say. A grammar that follows the letter lets a
small model pad objects with junk keys until `max_tokens` (the base SmolLM2 under the album
grammar wrote `"type":"integer"` into songs, or one `"description"` key after another).
xgrammar (`strict_mode`, its default), llama.cpp and OpenAI's strict structured outputs
close such objects; so does structune, to the keys they declare or require. Every answer
still validates against the schema as given: a strict answer is one of the answers it allows.

Left as written: an object that states `additionalProperties`, `patternProperties`,
`unevaluatedProperties`, `minProperties` or `maxProperties` itself, one combined with
composition keywords or a `$ref` (closing it could reject keys a sibling subschema
declares), and the members of `allOf`, `if`/`then`/`else`, `not`, `dependentSchemas` and
`dependencies` (and of `anyOf`/`oneOf` beside declared properties) together with the
definitions they refer to, for the same reason. So are the members of a `oneOf` whose
branches may overlap: a closed branch could then match an answer that the other, open
branch matches too, which "exactly one" refuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from structune.constrain.keywords import Dialect
from structune.constrain.shapes import exclusive_branches

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
    "dependencies",
)
_DATA_KEYS = ("const", "enum", "default", "examples")
# Subschemas that are checked together with the object around them, not instead of it.
_SIBLING_KEYS = ("allOf", "if", "then", "else", "not", "dependentSchemas", "dependencies")
_NAMED_KEYS = ("properties", "$defs", "definitions", "dependentSchemas", "dependencies")


def strict_objects(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `schema` in which every object that declares `properties` and says nothing
    about other keys gets `"additionalProperties": false` (see the module docstring)."""
    from structune.constrain.checked import dialect_of

    dialect = dialect_of(schema)
    open_refs = _refs_under_siblings(schema, dialect)
    return _Closer(schema, dialect, open_refs).close(schema, sibling=False)


class _Closer:
    def __init__(self, root: Mapping[str, Any], dialect: Dialect, open_refs: set[str]):
        self.root = root
        self.dialect = dialect
        self.open_refs = open_refs

    def close(self, node: Any, *, sibling: bool) -> Any:
        if isinstance(node, list):
            return [self.close(item, sibling=sibling) for item in node]
        if not isinstance(node, Mapping):
            return node
        closed: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DATA_KEYS:  # values, not schemas
                closed[key] = value
            elif key in _NAMED_KEYS and isinstance(value, Mapping):
                # Names mapped to schemas: close the schemas, not the mapping.
                closed[key] = {
                    name: self.close(
                        sub, sibling=key in _SIBLING_KEYS or f"#/{key}/{name}" in self.open_refs
                    )
                    for name, sub in value.items()
                }
            else:
                together = _together(node, key, self.root, self.dialect, node_too=sibling)
                closed[key] = self.close(value, sibling=together)
        if (
            not sibling
            and isinstance(node.get("properties"), Mapping)
            and not any(key in node for key in _OPEN_KEYS + _COMBINING_KEYS)
        ):
            # A required key the object does not declare stays allowed (as any value).
            required = node.get("required")
            missing = [
                k
                for k in (required if isinstance(required, list) else [])
                if isinstance(k, str) and k not in node["properties"]
            ]
            closed["properties"] = {**closed["properties"], **{k: {} for k in missing}}
            closed["additionalProperties"] = False
        return closed


def _together(
    node: Mapping[str, Any], key: str, root: Mapping[str, Any], dialect: Dialect, *, node_too: bool
) -> bool:
    """Whether the subschemas under `key` are checked together with others (`_checked_with`),
    or are the branches of a node that is (`node_too`): they then meet its siblings too."""
    return _checked_with(node, key, root, dialect) or (node_too and key in ("anyOf", "oneOf"))


def _checked_with(
    node: Mapping[str, Any], key: str, root: Mapping[str, Any], dialect: Dialect
) -> bool:
    """Whether the subschemas under `key` are checked against the same object as `node`'s
    own keywords or each other: always for `allOf` and the like, for `anyOf`/`oneOf`
    members when `node` declares properties of its own (which such a member must then
    accept), and for the members of a `oneOf` that may overlap."""
    if key in _SIBLING_KEYS or (key in ("anyOf", "oneOf") and "properties" in node):
        return True
    return key == "oneOf" and not exclusive_branches(root, node, dialect)


def _refs_under_siblings(schema: Mapping[str, Any], dialect: Dialect) -> set[str]:
    """The `$ref`s checked together with other keywords: written directly under `allOf`
    and the other sibling keywords (or under the branches of such a member), or beside
    `properties`."""
    refs: set[str] = set()
    stack: list[tuple[Any, bool]] = [(schema, False)]
    while stack:
        node, node_too = stack.pop()
        if isinstance(node, list):
            stack.extend((item, node_too) for item in node)
        elif isinstance(node, Mapping):
            if isinstance(node.get("$ref"), str) and ("properties" in node or node_too):
                refs.add(node["$ref"])
            for key, value in node.items():
                if key in _DATA_KEYS:
                    continue
                members = value if isinstance(value, list) else [value]
                together = _together(node, key, schema, dialect, node_too=node_too)
                if together:
                    if key in ("dependentSchemas", "dependencies") and isinstance(value, Mapping):
                        members = list(value.values())
                    refs.update(
                        m["$ref"]
                        for m in members
                        if isinstance(m, Mapping) and isinstance(m.get("$ref"), str)
                    )
                stack.append((value, together))
    return refs
