"""What is known of the instances of a subschema: enough to prove two `oneOf` branches
disjoint, so that "exactly one" is "at least one".

A `Shape` gathers a subschema's possible types, its `const`/`enum` values, the keys it
requires and the keys it cannot have (declared `false`, or undeclared in a closed object),
through local `$ref`s and `allOf`. Two branches are disjoint when their types do not meet,
their values do not, or they are objects that require one key with values that do not meet
(a discriminator), or one requires a key the other cannot have.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from structune.constrain.keywords import Dialect, is_ref, mapping

ATOMS = frozenset({"null", "boolean", "object", "array", "string", "integer", "fraction"})

MAX_DEPTH = 8  # `$ref`s followed while negating or comparing branches: recursion stops here


def exclusive_branches(root: Mapping[str, Any], node: Mapping[str, Any], dialect: Dialect) -> bool:
    """Whether no instance can match two branches of `node`'s `oneOf` (`$ref`s resolved in
    `root`): then `oneOf` is `anyOf`."""
    branches = node.get("oneOf")
    return isinstance(branches, list) and Refs(root, dialect).exclusive(branches, node)


class Refs:
    """Local `$ref`s of one schema, and what is known of the instances of its subschemas."""

    def __init__(self, root: Mapping[str, Any], dialect: Dialect):
        self.root = root
        self.dialect = dialect
        base = root.get("$id", root.get("id"))
        self.base = base.rstrip("#") if isinstance(base, str) else None

    def resolve(self, ref: Any, depth: int) -> Any:
        """The schema a local `$ref` points to, or None."""
        if not isinstance(ref, str) or depth > MAX_DEPTH:
            return None
        if self.base and ref.startswith(self.base + "#"):
            ref = ref[len(self.base) :]
        if not ref.startswith("#"):
            return None
        node: Any = self.root
        for part in filter(None, urllib.parse.unquote(ref[1:]).split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node

    def exclusive(self, branches: list[Any], node: Mapping[str, Any]) -> bool:
        """Whether no instance of `node` can match two of `branches`."""
        shapes = [self.shape(b, 0) for b in branches]
        around = self.shape(node, 0).types
        return all(disjoint(a, b, around) for a, b in combinations(shapes, 2))

    def values(self, node: Mapping[str, Any]) -> frozenset[str] | None:
        """The possible values of `node`'s instances (`value_key`s), when `const`/`enum`
        limit them."""
        if "const" in node and "const" in self.dialect.keywords:
            return frozenset({value_key(node["const"])})
        if isinstance(node.get("enum"), list):
            return frozenset(value_key(v) for v in node["enum"])
        return None

    def shape(self, node: Any, depth: int) -> Shape:
        """What is known of the instances of `node`: their types, values, required keys."""
        if node is False:
            return Shape(frozenset())
        if not isinstance(node, Mapping):
            return Shape(ATOMS)
        if "$ref" in node and self.dialect.ref_alone:  # its siblings are annotations
            return self.shape(self.resolve(node["$ref"], depth + 1), depth + 1)
        shape = Shape(atoms(node.get("type")), values=self.values(node)).meet(closure(node))
        if isinstance(node.get("anyOf"), list):
            members = [self.shape(m, depth + 1).types for m in node["anyOf"]]
            shape = shape.meet(Shape(frozenset().union(*members)))
        target = self.resolve(node.get("$ref"), depth + 1) if "$ref" in node else None
        if target is not None:
            shape = shape.meet(self.shape(target, depth + 1))
        for member in node.get("allOf", []) if isinstance(node.get("allOf"), list) else []:
            shape = shape.meet(self.shape(member, depth + 1))
        if isinstance(node.get("properties"), Mapping):
            tags = {}
            for name, sub in node["properties"].items():
                sub = self.resolve(sub.get("$ref"), depth + 1) if is_ref(sub) else sub
                values = self.values(sub) if isinstance(sub, Mapping) else None
                if values is not None:
                    tags[name] = values
            shape = shape.meet(Shape(ATOMS, tags=tags))
        required = node.get("required")
        if isinstance(required, list):
            shape = shape.meet(Shape(ATOMS, required=frozenset(map(str, required))))
        return shape


@dataclass(frozen=True)
class Shape:
    """What every instance of a (sub)schema has in common."""

    types: frozenset[str]  # `ATOMS` it may be
    values: frozenset[str] | None = None  # its possible values (`value_key`), when finite
    required: frozenset[str] = frozenset()  # keys it has, when an object
    tags: Mapping[str, frozenset[str]] | None = None  # key → its possible values
    allowed: frozenset[str] | None = None  # the only keys it may have (a closed object)
    forbids: frozenset[str] = frozenset()  # keys it cannot have (declared `false`)

    def excludes(self, key: str) -> bool:
        """Whether an object of this shape cannot have `key`."""
        return key in self.forbids or (self.allowed is not None and key not in self.allowed)

    def meet(self, other: Shape) -> Shape:
        """What instances of both shapes have in common."""
        if self.values is None or other.values is None:
            values = self.values if other.values is None else other.values
        else:
            values = self.values & other.values
        tags = {**(self.tags or {}), **(other.tags or {})}
        for name in set(self.tags or {}) & set(other.tags or {}):
            tags[name] = (self.tags or {})[name] & (other.tags or {})[name]
        if self.allowed is None or other.allowed is None:
            allowed = self.allowed if other.allowed is None else other.allowed
        else:
            allowed = self.allowed & other.allowed
        return Shape(
            self.types & other.types,
            values,
            self.required | other.required,
            tags,
            allowed,
            self.forbids | other.forbids,
        )


def disjoint(a: Shape, b: Shape, around: frozenset[str]) -> bool:
    """Whether no instance (of the types the node around allows) can be both `a` and `b`."""
    common = a.types & b.types & around
    if not common:
        return True
    if a.values is not None and b.values is not None and not a.values & b.values:
        return True
    if common != {"object"}:
        return False  # a non-object satisfies every key constraint
    tagged = a.required & b.required & set(a.tags or {}) & set(b.tags or {})
    if any(not (a.tags or {})[k] & (b.tags or {})[k] for k in tagged):
        return True
    return any(b.excludes(k) for k in a.required) or any(a.excludes(k) for k in b.required)


def closure(node: Mapping[str, Any]) -> Shape:
    """The keys an object of `node` cannot have: declared `false`, or not declared where
    `node` is closed."""
    declared = mapping(node, "properties")
    forbids = frozenset(name for name, sub in declared.items() if sub is False)
    closed = node.get("additionalProperties") is False and not node.get("patternProperties")
    return Shape(ATOMS, allowed=frozenset(declared) - forbids if closed else None, forbids=forbids)


def atoms(types: Any) -> frozenset[str]:
    """The `ATOMS` a `type` keyword allows (a number is an integer or a fraction)."""
    if types is None:
        return ATOMS
    names = [types] if isinstance(types, str) else types if isinstance(types, list) else []
    found: set[str] = set()
    for name in names:
        found |= {"integer", "fraction"} if name == "number" else {name}
    return frozenset(found & ATOMS)


def value_key(value: Any) -> str:
    """A value as JSON Schema compares it: 1 and 1.0 alike, true and 1 apart."""
    return json.dumps(_normal(value), sort_keys=True)


def _normal(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value
