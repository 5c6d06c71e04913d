"""Exact rewrites of the keywords the grammar engine refuses, and relaxation of the rest.

llguidance enforces most of JSON Schema (`keywords.ENFORCED`) and refuses the rest. Before
a schema compiles, `rewrite_schema` replaces a refused keyword by enforced ones wherever
both accept exactly the same instances:

- `oneOf` whose branches are pairwise disjoint (by type, by `const`/`enum` values, or by a
  required discriminator property with disjoint values: `shapes`) → `anyOf`: no instance
  can match two branches, so "exactly one" is "at least one";
- `dependentRequired`, `dependentSchemas`, `dependencies` → for each trigger property an
  `anyOf` of (the trigger absent) and (the trigger present, with what it requires);
- `not S` → the complement of S written with enforced keywords (`complement`), where it can
  be written; `if`/`then`/`else` → `anyOf` of (if ∧ then) and (not-if ∧ else), likewise;
- `format`: an alias of a format the engine knows (`datetime`, `url`) → that format; a
  format with a regular definition (`json-pointer`) → its `pattern`; a format no validator
  here knows → dropped, as JSON Schema itself treats it (an annotation);
- `propertyNames` of a closed object → the declared names it refuses are forbidden;
  `unevaluatedProperties` beside no applicator → `additionalProperties`; counts of keys
  that the required keys already meet, or `uniqueItems` of at most one item → dropped.

Some rewrites only spare the engine an intersection it cannot make around a circular
`$ref`: a `$ref`'s siblings before 2019-09 (annotations there) are dropped, a `type` that
the branches beside it imply is dropped, and a pattern that matches every property name is
kept off the declared ones, whose own schemas take it instead.

What has no exact rewrite is relaxed: dropped (a `oneOf` that may overlap becomes `anyOf`),
so the grammar accepts a superset of the schema, and listed in `Rewrite.relaxed`: the caller
must check every answer against the full schema (`structune.constrain.checked`).
`uniqueItems` on the lists of strings the decoder holds distinct never reaches here
(`structune.constrain.distinct` takes it out first); any other `uniqueItems` is relaxed.

Keywords are read as the schema's own draft reads them (`keywords.Dialect`): a draft-4
schema's `if` is an annotation there, dropped with a note. `dependencies` is rewritten in
every draft, as llguidance reads it (a 2020-12 validator ignores it: the grammar then holds
what the schema's author meant, a subset of what the validator allows). Children are
rewritten before their parent, and a `not` or `if` over a relaxed child is itself relaxed:
the complement of a superset would be a subset.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from structune.constrain.complement import Complement, other_strings
from structune.constrain.keywords import (
    ENFORCED,
    ENGINE_FORMATS,
    REFUSED,
    Dialect,
    accepts_all,
    all_of,
    any_of,
    escape,
    has_ref,
    list_of,
    map_subschemas,
    mapping,
)
from structune.constrain.shapes import atoms

# Names that real schemas give the formats llguidance knows (draft 3's among them).
FORMAT_ALIASES = {
    "datetime": "date-time",
    "date_time": "date-time",
    "dateTime": "date-time",
    "url": "uri",
    "e-mail": "email",
    "guid": "uuid",
    "ip-address": "ipv4",
    "ipv4-address": "ipv4",
    "ipv6-address": "ipv6",
    "host-name": "hostname",
}

# Formats whose definition is a regular language (RFC 6901 and its relative draft).
FORMAT_PATTERNS = {
    "json-pointer": r"^(?:/(?:[^~/]|~[01])*)*$",
    "relative-json-pointer": r"^(?:0|[1-9][0-9]*)(?:#|(?:/(?:[^~/]|~[01])*)*)$",
}

# Keywords a validator reads inside another one's check, not on their own.
_READ_WITH = {"minContains": "contains", "maxContains": "contains", "then": "if", "else": "if"}

# Keywords whose absence means "anything": one that accepts everything asks nothing.
_OPEN_BY_DEFAULT = (
    "additionalProperties",
    "additionalItems",
    "items",
    "unevaluatedProperties",
    "unevaluatedItems",
    "propertyNames",
)

_APPLICATORS = ("allOf", "anyOf", "oneOf", "$ref", "if", "not", "dependentSchemas", "$dynamicRef")

# llguidance's drafts: another `$schema` makes it refuse the schema.
_ENGINE_DRAFTS = (
    "http://json-schema.org/draft-04/schema",
    "http://json-schema.org/draft-06/schema",
    "http://json-schema.org/draft-07/schema",
    "https://json-schema.org/draft/2019-09/schema",
    "https://json-schema.org/draft/2020-12/schema",
)


@dataclass(frozen=True)
class Note:
    """One keyword at one place of a schema, and what became of it."""

    keyword: str
    path: str
    how: str

    def __str__(self) -> str:
        return f"{self.keyword} at {self.path}: {self.how}"


@dataclass(frozen=True)
class Rewrite:
    """A schema ready for the grammar engine.

    Attributes:
        schema: what the grammar compiles (`False` when the schema admits no value).
        rewritten: keywords replaced by ones that accept exactly the same instances.
        relaxed: keywords dropped or loosened: the grammar accepts more than the schema.
    """

    schema: Any
    rewritten: tuple[Note, ...]
    relaxed: tuple[Note, ...]


def rewrite_schema(schema: Mapping[str, Any], dialect: Dialect) -> Rewrite:
    """`schema` with what llguidance refuses rewritten exactly or relaxed (module docstring)."""
    rewriter = _Rewriter(schema, dialect)
    out = rewriter.schema(schema, "#")
    if isinstance(out, dict):
        out = rewriter.engine_draft(out)
    return Rewrite(out, tuple(rewriter.rewritten), tuple(rewriter.relaxed))


class _Rewriter(Complement):
    def __init__(self, root: Mapping[str, Any], dialect: Dialect):
        super().__init__(root, dialect)
        self.rewritten: list[Note] = []
        self.relaxed: list[Note] = []

    def schema(self, node: Any, path: str) -> Any:
        if not isinstance(node, Mapping):
            return node  # true, false, or malformed: the engine judges
        node = self._ref_alone(node, path)
        out: Any = map_subschemas(node, lambda sub, where: self.schema(sub, f"{path}/{where}"))
        for step in (
            self._no_effect,
            self._format,
            self._dependencies,
            self._if_then_else,
            self._not,
            self._one_of,
            self._implied_type,
            self._pattern_properties,
            self._property_names,
            self._unevaluated,
            self._unique_items,
            self._property_counts,
            self._unenforced,
        ):
            out = step(out, path)
            if out is False:
                return False
        return out

    # --- notes -------------------------------------------------------------------------

    def note(self, keyword: str, path: str, how: str) -> None:
        self.rewritten.append(Note(keyword, path, how))

    def relax(self, keyword: str, path: str, how: str) -> None:
        self.relaxed.append(Note(keyword, path, how))

    def relaxed_under(self, path: str) -> bool:
        return any(n.path == path or n.path.startswith(path + "/") for n in self.relaxed)

    # --- the steps, each on one node whose children are rewritten ----------------------

    def _ref_alone(self, node: Mapping[str, Any], path: str) -> Mapping[str, Any]:
        """Before 2019-09 a `$ref`'s sibling keywords are annotations: drop them (the engine
        would intersect them, and refuses that around a circular reference)."""
        if "$ref" not in node or not self.dialect.ref_alone:
            return node
        ignored = sorted(k for k in node if k != "$ref" and k in self.dialect.keywords)
        if not ignored:
            return node
        self.note("$ref", path, f"{', '.join(ignored)} beside it: no effect in this draft")
        return {k: v for k, v in node.items() if k not in ignored}

    def _no_effect(self, out: dict[str, Any], path: str) -> Any:
        """Drop a subschema that accepts everything where that asks nothing (`items: {}`):
        beside a circular `$ref`, the engine would have to intersect it."""
        for key in _OPEN_BY_DEFAULT:
            if key in out and accepts_all(out[key]):
                del out[key]
        return out

    def _format(self, out: dict[str, Any], path: str) -> Any:
        fmt = out.get("format")
        if not isinstance(fmt, str) or fmt in ENGINE_FORMATS:
            return out
        del out["format"]
        if fmt in FORMAT_ALIASES:
            out["format"] = FORMAT_ALIASES[fmt]
            self.note("format", path, f"{fmt!r} held to {FORMAT_ALIASES[fmt]!r}")
        elif fmt in FORMAT_PATTERNS:
            self.note("format", path, f"{fmt!r} held to its regex")
            return _conjoin(out, {"pattern": FORMAT_PATTERNS[fmt]})
        elif fmt in self.dialect.formats:
            self.relax("format", path, f"{fmt!r} only checked")
        else:
            self.note("format", path, f"{fmt!r} is known to no validator here: an annotation")
        return out

    def _dependencies(self, out: dict[str, Any], path: str) -> Any:
        for key in ("dependencies", "dependentRequired", "dependentSchemas"):
            if key not in out or (key != "dependencies" and key not in self.dialect.keywords):
                continue
            needs = out.pop(key)
            if not isinstance(needs, Mapping):
                self.relax(key, path, "not an object")
                continue
            for name, need in needs.items():
                out = _conjoin(out, _dependency(name, need))
                if out is False:
                    return False
            self.note(key, path, "anyOf [trigger absent, trigger with what it needs]")
        return out

    def _if_then_else(self, out: dict[str, Any], path: str) -> Any:
        if "if" not in out or "if" not in self.dialect.keywords:
            return out
        cond, then, other = out.pop("if"), out.pop("then", True), out.pop("else", True)
        negated = None if self.relaxed_under(f"{path}/if") else self.negate(cond)
        if negated is None:
            self.relax("if", path, "its negation has no grammar: then/else loosened")
            return _conjoin(out, any_of([then, other]))  # a valid answer meets one of them
        self.note("if", path, "anyOf [if and then, not-if and else]")
        return _conjoin(out, any_of([all_of([cond, then]), all_of([negated, other])]))

    def _not(self, out: dict[str, Any], path: str) -> Any:
        if "not" not in out or "not" not in self.dialect.keywords:
            return out
        child = out.pop("not")
        negated = None if self.relaxed_under(f"{path}/not") else self.negate(child)
        if negated is None:
            self.relax("not", path, "its complement has no grammar")
            return out
        self.note("not", path, "its complement")
        return _conjoin(out, negated)

    def _one_of(self, out: dict[str, Any], path: str) -> Any:
        branches = out.get("oneOf")
        if not isinstance(branches, list):
            return out
        del out["oneOf"]
        if self.exclusive(branches, out):
            self.note("oneOf", path, "anyOf: its branches exclude each other")
        else:
            self.relax("oneOf", path, "anyOf: its branches may overlap")
        return _conjoin(out, {"anyOf": branches})

    def _implied_type(self, out: dict[str, Any], path: str) -> Any:
        """Drop a `type` that every `anyOf` branch or the `$ref` implies: the engine cannot
        intersect it with a circular reference."""
        if "type" not in out or not ("anyOf" in out or "$ref" in out):
            return out
        implied = self.shape({k: v for k, v in out.items() if k in ("anyOf", "$ref")}, 0)
        if implied.types and implied.types <= atoms(out["type"]):
            del out["type"]
            self.note("type", path, "implied by what it is combined with")
        return out

    def _pattern_properties(self, out: dict[str, Any], path: str) -> Any:
        """A pattern that matches every name also holds the declared properties: say so in
        their own schemas and keep the pattern off their names, so the engine has nothing to
        intersect (it cannot, around a circular reference). Where both schemas hold a `$ref`,
        the declared one alone is relaxed: the intersection is only checked."""
        patterns, declared = out.get("patternProperties"), out.get("properties")
        if not (isinstance(patterns, Mapping) and isinstance(declared, Mapping) and declared):
            return out
        universal = [p for p in patterns if _matches_every_name(p)]
        if not universal:
            return out
        patterns, declared = dict(patterns), dict(declared)
        for pattern in universal:
            sub = patterns.pop(pattern)
            for name, own in declared.items():
                if _same_schema(own, sub):
                    continue
                if has_ref(own) and has_ref(sub):
                    self.relax(
                        "patternProperties", f"{path}/properties/{escape(name)}", "only checked"
                    )
                else:
                    declared[name] = all_of([own, sub])
            patterns[other_strings(declared)] = sub
            self.note("patternProperties", path, f"{pattern!r} kept off the declared names")
        out["patternProperties"], out["properties"] = patterns, declared
        return out

    def _property_names(self, out: dict[str, Any], path: str) -> Any:
        if "propertyNames" not in out or "propertyNames" not in self.dialect.keywords:
            return out
        names = out.pop("propertyNames")
        declared = out.get("properties", {})
        closed = out.get("additionalProperties") is False and not out.get("patternProperties")
        if not (closed and isinstance(declared, Mapping) and not has_ref(names)):
            self.relax("propertyNames", path, "only checked: the object is open")
            return out
        refused = [n for n in declared if not self.dialect.accepts(names, n)]
        out["properties"] = {**declared, **dict.fromkeys(refused, False)}
        self.note("propertyNames", path, "a closed object: the declared names it refuses are out")
        return out

    def _unevaluated(self, out: dict[str, Any], path: str) -> Any:
        key = "unevaluatedProperties"
        if key not in out or key not in self.dialect.keywords:
            return out
        if "additionalProperties" in out:
            out.pop(key)
            self.note(key, path, "additionalProperties evaluates every property")
        elif not any(k in out for k in _APPLICATORS):
            out["additionalProperties"] = out.pop(key)
            self.note(key, path, "additionalProperties: no applicator beside it")
        return out

    def _unique_items(self, out: dict[str, Any], path: str) -> Any:
        if out.get("uniqueItems") is not True:
            out.pop("uniqueItems", None)  # false asks nothing
        elif isinstance(out.get("maxItems"), int) and out["maxItems"] <= 1:
            del out["uniqueItems"]
            self.note("uniqueItems", path, "at most one item")
        return out

    def _property_counts(self, out: dict[str, Any], path: str) -> Any:
        """llguidance counts the keys of a closed object, or of one whose declared properties
        are all required; elsewhere a count is only checked."""
        required = list_of(out, "required")
        if isinstance(out.get("minProperties"), int) and out["minProperties"] <= len(required):
            del out["minProperties"]
            self.note("minProperties", path, "its required properties are enough")
        declared = mapping(out, "properties")
        if out.get("additionalProperties") is False or set(declared) <= set(required):
            return out
        for key in ("minProperties", "maxProperties"):
            if key in out:
                del out[key]
                self.relax(key, path, "only checked: an open object with optional properties")
        return out

    def _unenforced(self, out: dict[str, Any], path: str) -> Any:
        present = set(out)
        for key in [k for k in out if k in REFUSED and k not in ENFORCED]:
            out.pop(key)
            parent = _READ_WITH.get(key, key)
            if parent not in self.dialect.keywords:
                self.note(key, path, "not a keyword of this schema's draft: no effect")
            elif parent not in present:
                self.note(key, path, f"no effect without {parent}")
            else:
                self.relax(key, path, "only checked")
        return out

    def engine_draft(self, out: dict[str, Any]) -> dict[str, Any]:
        """`$schema` as llguidance knows it (it refuses a URI it does not know)."""
        uri = out.get("$schema")
        if isinstance(uri, str) and uri.rstrip("#") not in _ENGINE_DRAFTS:
            known = self.dialect.uri.rstrip("#")
            if known in _ENGINE_DRAFTS:
                out["$schema"] = self.dialect.uri
            else:
                del out["$schema"]
            self.note("$schema", "#", f"{uri!r} read as {known!r}")
        return out


def _matches_every_name(pattern: str) -> bool:
    """Whether the regex finds a match in every string: it matches the empty one, and has no
    anchor but `^` nor look-around that could make another string fail."""
    if re.search(r"\$|\\[bBAZzG]|\(\?[=!<]", pattern):
        return False
    try:
        return re.search(pattern, "") is not None
    except re.error:
        return False


_ANNOTATIONS = ("title", "description", "$comment", "examples", "default", "readOnly", "writeOnly")


def _same_schema(a: Any, b: Any) -> bool:
    """Whether two schemas are alike but for their annotations."""

    def plain(node: Any) -> Any:
        if isinstance(node, Mapping):
            return {k: plain(v) for k, v in node.items() if k not in _ANNOTATIONS}
        return [plain(v) for v in node] if isinstance(node, list) else node

    return bool(plain(a) == plain(b))


def _dependency(name: str, need: Any) -> Any:
    """`name` absent, or present with what it needs (other keys, or a schema)."""
    if need is True or need == {} or need == []:
        return True
    absent = {"properties": {name: False}}
    if need is False:
        return absent
    if isinstance(need, list):
        return {"anyOf": [absent, {"required": [name, *need]}]}
    return {"anyOf": [absent, {"required": [name], "allOf": [need]}]}


def _conjoin(node: dict[str, Any], extra: Any) -> Any:
    """`node` and `extra` both: a free `anyOf` slot takes it, else `allOf` does."""
    if accepts_all(extra):
        return node
    if extra is False:
        return False
    if isinstance(extra, Mapping) and set(extra) <= {"anyOf", "pattern"}:
        key = next(iter(extra))
        if key not in node:
            node[key] = extra[key]
            return node
    node["allOf"] = [*node.get("allOf", []), extra]
    return node
