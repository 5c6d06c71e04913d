"""JSON Schema as the grammar engine and the validator read it.

`ENFORCED` is what llguidance enforces, the one list of it (`uniqueItems` on lists of
strings is held beside the grammar, by the decoder: `structune.constrain.distinct`).
`Dialect` is how a schema's own draft reads its keywords, as its validator does.
`map_subschemas` knows where subschemas sit, for every walk over a schema in
`structune.constrain`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# What llguidance enforces (its parser/src/json/schema.rs `IMPLEMENTED`). The one list.
ENFORCED = frozenset(
    {
        "anyOf", "allOf", "$ref", "const", "enum", "type",
        "items", "additionalItems", "prefixItems", "minItems", "maxItems",
        "properties", "additionalProperties", "patternProperties", "required",
        "minProperties", "maxProperties",
        "minLength", "maxLength", "pattern", "format",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    }
)  # fmt: skip

# The formats llguidance enforces (parser/src/json/formats.rs).
ENGINE_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid", "uri"}
)

# Keywords llguidance knows in some draft and refuses: `structune.constrain.rewrite`
# rewrites them, relaxes them, or drops them where the schema's draft does not know them.
REFUSED = frozenset(
    {
        "not", "if", "then", "else", "oneOf", "dependencies", "dependentRequired",
        "dependentSchemas", "uniqueItems", "propertyNames", "contains", "minContains",
        "maxContains", "unevaluatedItems", "unevaluatedProperties", "$recursiveRef",
        "$recursiveAnchor", "$dynamicRef", "$dynamicAnchor",
    }
)  # fmt: skip

# Where subschemas sit: one schema, a list of them, or names mapped to them.
_ONE = (
    "not", "if", "then", "else", "additionalItems", "additionalProperties", "contains",
    "propertyNames", "unevaluatedItems", "unevaluatedProperties", "contentSchema",
)  # fmt: skip

_MANY = ("allOf", "anyOf", "oneOf", "prefixItems")

_NAMED = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


@dataclass(frozen=True)
class Dialect:
    """How the schema's own draft reads it, as its validator does.

    Attributes:
        keywords: the draft's validation keywords.
        formats: the formats its validator checks.
        uri: the draft's `$schema` URI.
        accepts: whether a value is an instance of a schema without `$ref`s.
    """

    keywords: frozenset[str]
    formats: frozenset[str]
    uri: str
    accepts: Callable[[Any, Any], bool]

    @property
    def numeric_exclusive(self) -> bool:
        """Whether `exclusiveMinimum` is a number (draft 6 on), not a flag on `minimum`."""
        return "exclusiveMinimum" in self.keywords

    @property
    def ref_alone(self) -> bool:
        """Whether a `$ref` makes its sibling keywords annotations (drafts 4 to 7)."""
        return not {"$recursiveRef", "$dynamicRef"} & self.keywords


def map_subschemas(node: Mapping[str, Any], fn: Callable[[Any, str], Any]) -> dict[str, Any]:
    """A copy of `node` with each direct subschema replaced by `fn(subschema, where)`, where
    `where` is its JSON pointer relative to `node` (`properties/a`, `anyOf/0`)."""
    out = dict(node)
    for key, value in node.items():
        if key in _ONE or (key == "items" and not isinstance(value, list)):
            out[key] = fn(value, key)
        elif key in _MANY or key == "items":
            if isinstance(value, list):
                out[key] = [fn(v, f"{key}/{i}") for i, v in enumerate(value)]
        elif (key in _NAMED or key == "dependencies") and isinstance(value, Mapping):
            out[key] = {
                name: fn(v, f"{key}/{escape(name)}") if _is_schema(v) else v
                for name, v in value.items()
            }
    return out


def enforced_keywords(schema: Any) -> list[str]:
    """The keywords of `schema` (a rewritten one) that the grammar enforces, sorted."""
    found: set[str] = set()

    def visit(node: Any, where: str) -> Any:
        if isinstance(node, Mapping):
            found.update(k for k in node if k in ENFORCED)
            map_subschemas(node, visit)
        return node

    visit(schema, "#")
    return sorted(found)


def only_enforced(node: Any) -> bool:
    """Whether the grammar enforces all of `node` as it stands."""
    if not isinstance(node, Mapping):
        return True
    if any(k in REFUSED for k in node):
        return False
    if "format" in node and node["format"] not in ENGINE_FORMATS:
        return False
    ok = True

    def visit(sub: Any, where: str) -> Any:
        nonlocal ok
        ok = ok and only_enforced(sub)
        return sub

    map_subschemas(node, visit)
    return ok


def accepts_all(schema: Any) -> bool:
    """Whether `schema` is `true` or `{}`."""
    return schema is True or (isinstance(schema, Mapping) and not schema)


def any_of(parts: list[Any]) -> Any:
    """The schema of values that one of `parts` accepts, as short as it can be written."""
    if any(accepts_all(p) for p in parts):
        return True
    parts = [p for p in parts if p is not False]
    return False if not parts else parts[0] if len(parts) == 1 else {"anyOf": parts}


def all_of(parts: list[Any]) -> Any:
    """The schema of values that all of `parts` accept, as short as it can be written."""
    if any(p is False for p in parts):
        return False
    parts = [p for p in parts if not accepts_all(p)]
    return True if not parts else parts[0] if len(parts) == 1 else {"allOf": parts}


def has_ref(node: Any) -> bool:
    """Whether a `$ref` occurs anywhere in `node`."""
    return "$ref" in json.dumps(node)


def is_ref(node: Any) -> bool:
    """Whether `node` is a schema with a `$ref`."""
    return isinstance(node, Mapping) and isinstance(node.get("$ref"), str)


def _is_schema(value: Any) -> bool:
    return isinstance(value, Mapping | bool)


def mapping(node: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """`node[key]` when it is an object, else an empty one."""
    value = node.get(key)
    return value if isinstance(value, Mapping) else {}


def list_of(node: Mapping[str, Any], key: str) -> list[Any]:
    """`node[key]` when it is a list, else an empty one."""
    value = node.get(key)
    return value if isinstance(value, list) else []


def escape(name: str) -> str:
    """`name` as a JSON pointer segment (RFC 6901)."""
    return name.replace("~", "~0").replace("/", "~1")
