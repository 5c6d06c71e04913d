"""The complement of a schema, written with keywords the grammar enforces.

`not S` is a conjunction's negation: S accepts a value when each of its keywords does, so
`not S` is the `anyOf` of each keyword's complement. A keyword's complement is written
where it has one: the other types; the values of a `const`/`enum` left out (the other
types, the other boolean, the open intervals between numbers, and the strings outside a
finite set as a regex, `other_strings`); an object lacking a required key or holding a
property outside its schema; the other side of a bound; `anyOf` and `allOf` swapped, their
members negated; a local `$ref`'s target. `pattern`, `format`, `items` and the like have
none: `negate` answers None, and the caller relaxes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import pairwise
from typing import Any

from structune.constrain.keywords import all_of, any_of, only_enforced
from structune.constrain.shapes import MAX_DEPTH, Refs

TYPES = frozenset({"null", "boolean", "object", "array", "number", "string"})


class Complement(Refs):
    """Negates the subschemas of one schema, read in its dialect."""

    def negate(self, schema: Any, depth: int = 0) -> Any:
        """A schema accepting exactly the values `schema` rejects, or None where none can be
        written with enforced keywords."""
        if schema is True:
            return False
        if schema is False:
            return True
        if not isinstance(schema, Mapping) or depth > MAX_DEPTH:
            return None
        if "$ref" in schema and self.dialect.ref_alone:  # its siblings are annotations
            return self.negate(self.resolve(schema["$ref"], depth + 1), depth + 1)
        parts = []
        for key, value in schema.items():
            if key not in self.dialect.keywords and key != "$ref":
                continue  # an annotation in this draft
            part = self._negate_keyword(key, value, schema, depth)
            if part is None or part is True:
                return part
            parts.append(part)
        return any_of(parts)

    def _negate_keyword(self, key: str, value: Any, schema: Mapping[str, Any], depth: int) -> Any:
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not self.dialect.numeric_exclusive:
            return False  # a flag on minimum/maximum, negated with them
        bound = self._negate_bound(key, value, schema)
        if bound is not None:
            return bound
        if key == "type":
            return other_types(value)
        if key in ("const", "enum"):
            return self._other_values([value] if key == "const" else value)
        if key == "required" and isinstance(value, list):
            return any_of([{"type": "object", "properties": {p: False}} for p in value])
        if key == "properties" and isinstance(value, Mapping):
            return self._negate_properties(value, depth)
        if key in ("anyOf", "allOf") and isinstance(value, list):
            negated = [self.negate(v, depth + 1) for v in value]
            if any(n is None for n in negated):
                return None
            return all_of(negated) if key == "anyOf" else any_of(negated)
        if key == "not":
            return value if only_enforced(value) else None
        if key == "$ref":
            return self.negate(self.resolve(value, depth + 1), depth + 1)
        return None  # pattern, format, items, ...: no complement with enforced keywords

    def _negate_properties(self, properties: Mapping[str, Any], depth: int) -> Any:
        parts = []
        for name, sub in properties.items():
            negated = self.negate(sub, depth + 1)
            if negated is None:
                return None
            if negated is not False:
                parts.append({"type": "object", "required": [name], "properties": {name: negated}})
        return any_of(parts)

    def _negate_bound(self, key: str, value: Any, schema: Mapping[str, Any]) -> Any:
        """The complement of a numeric, length or count bound; None for other keywords."""
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        if key in ("minLength", "minItems"):
            kind = "string" if key == "minLength" else "array"
            low = "maxLength" if kind == "string" else "maxItems"
            return False if value <= 0 else {"type": kind, low: int(value) - 1}
        if key in ("maxLength", "maxItems"):
            high = "minLength" if key == "maxLength" else "minItems"
            return {"type": "string" if key == "maxLength" else "array", high: int(value) + 1}
        flag = {"minimum": "exclusiveMinimum", "maximum": "exclusiveMaximum"}.get(key, "")
        exclusive = not self.dialect.numeric_exclusive and schema.get(flag) is True
        if key == "minimum":
            return {"type": "number", **self._below(value, inclusive=exclusive)}
        if key == "maximum":
            return {"type": "number", **self._above(value, inclusive=exclusive)}
        if key == "exclusiveMinimum":
            return {"type": "number", **self._below(value, inclusive=True)}
        if key == "exclusiveMaximum":
            return {"type": "number", **self._above(value, inclusive=True)}
        return None

    def _below(self, value: float, *, inclusive: bool) -> dict[str, Any]:
        if inclusive:
            return {"maximum": value}
        if self.dialect.numeric_exclusive:
            return {"exclusiveMaximum": value}
        return {"maximum": value, "exclusiveMaximum": True}

    def _above(self, value: float, *, inclusive: bool) -> dict[str, Any]:
        if inclusive:
            return {"minimum": value}
        if self.dialect.numeric_exclusive:
            return {"exclusiveMinimum": value}
        return {"minimum": value, "exclusiveMinimum": True}

    def _other_values(self, values: Any) -> Any:
        """Every JSON value but `values` (of scalars): other types, then the other values of
        each type."""
        if not isinstance(values, list):
            return None
        kinds: dict[str, list[Any]] = {}
        for value in values:
            kinds.setdefault(kind_of(value), []).append(value)
        if "object" in kinds or "array" in kinds:
            return None
        others = sorted(TYPES - kinds.keys())
        parts: list[Any] = [{"type": others}] if others else []
        if "boolean" in kinds:
            rest = [b for b in (False, True) if b not in kinds["boolean"]]
            parts += [{"enum": rest}] if rest else []
        if "string" in kinds:
            parts.append({"type": "string", "pattern": other_strings(kinds["string"])})
        if "number" in kinds:
            parts += self._other_numbers(kinds["number"])
        return any_of(parts)

    def _other_numbers(self, values: list[float]) -> list[dict[str, Any]]:
        """The open intervals between `values`, and beyond them."""
        points = sorted(set(values))
        parts = [{"type": "number", **self._below(points[0], inclusive=False)}]
        for low, high in pairwise(points):
            parts.append(
                {
                    "type": "number",
                    **self._above(low, inclusive=False),
                    **self._below(high, inclusive=False),
                }
            )
        parts.append({"type": "number", **self._above(points[-1], inclusive=False)})
        return parts


def other_types(types: Any) -> Any:
    names = {types} if isinstance(types, str) else set(types) if isinstance(types, list) else None
    if names is None or ("integer" in names and "number" not in names):
        return None  # the numbers that are not integers have no type of their own
    others = sorted(TYPES - names)
    return {"type": others} if others else False


def other_strings(values: Iterable[str]) -> str:
    """A regex (for Python and for llguidance) matching every string but `values`."""
    trie: dict[str, Any] = {}
    for value in values:
        node = trie
        for char in value:
            node = node.setdefault(char, {})
        node[""] = {}  # a value ends here
    return f"^{_other_than(trie)}$"


def _other_than(node: Mapping[str, Any]) -> str:
    chars = sorted(c for c in node if c)
    options = [] if "" in node else [""]  # stopping here is another string
    if chars:
        options.append(f"[^{''.join(_char(c) for c in chars)}][\\s\\S]*")
    else:
        options.append("[\\s\\S]+")
    options += [_char(c) + _other_than(node[c]) for c in chars]
    return "(?:" + "|".join(options) + ")"


def _char(char: str) -> str:
    if char.isascii() and char.isalnum():
        return char
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"
