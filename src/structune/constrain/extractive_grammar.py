"""A JSON Schema with extracted fields → an llguidance Lark grammar (compact JSON).

llguidance's JSON-schema compiler has no hook for "a span of this text", but its Lark
dialect has both pieces: `%regex {"substring_chunks": [...]}` matches any run of the given
chunks, and `%json {...}` inlines a JSON-schema sub-grammar. So the parts of the schema
that lead to a marked string (objects, arrays, unions, `$ref`s) are written as Lark rules,
every part without a marker stays an inline `%json` (the engine's full schema coverage),
and each marked string becomes a terminal `"\\"" SPAN "\\""`. What a copy from the source
looks like in Lark (a span, a pattern's matches, an ordered list of spans) is written by
`source_spans`; this module walks the schema and decides where each copy stands.

Objects are written with their declared properties only, in schema order, and `oneOf` is
written as `anyOf` (validation afterwards still holds the answer to exactly one branch); a
keyword this writer cannot enforce on the path to a marked string is refused by name, never
ignored. Marked strings take no other keyword than `minLength` 1 (non-empty): lengths the
engine counts are those of the escaped text, which differ from the value's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from structune.constrain.extractive import (
    MARKER_KEY,
    SOURCES_KEY,
    Extracted,
    has_extracted,
    numbers,
    resolve,
)
from structune.constrain.source_spans import (
    MAX_ORDERED_PIECES,
    matching_literals,
    ordered_rules,
    seq,
    source_units,
    substring_regex,
)
from structune.errors import UserError

# Keywords that only describe: they never change what is valid.
_ANNOTATIONS = frozenset({
    "title", "description", "default", "examples", "$comment", "deprecated", "readOnly",
    "writeOnly", "$defs", "definitions", "$schema", "$id", "discriminator", SOURCES_KEY,
})  # fmt: skip
_INTEGER_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_STRUCTURE = {
    "object": {"type", "properties", "required", "additionalProperties"},
    "array": {"type", "items", "minItems", "maxItems"},
    "string": {"type", MARKER_KEY, "minLength"},  # marked: a span of the source
    "integer": {"type", MARKER_KEY, *_INTEGER_BOUNDS},  # marked: one of the source's numbers
    "union": {"anyOf", "oneOf"},
    "ref": {"$ref"},
    "all": {"allOf"},
}
_COMPACT = {"whitespace_flexible": False}
# What no text matches: a part the sources cannot fill (a year where the source has none).
# The writer leaves out whatever needs one (a list of such items can only be empty) rather
# than write it: the engine would let the decoder open an item it could never finish, and
# the answer would stop there, unparseable.
_NOTHING = "/[^\\s\\S]/"


def extractive_grammar(schema: Mapping[str, Any], *, prune: bool = True) -> str:
    """The Lark grammar for `schema`, whose marked strings copy from `x-structune-sources`.

    `prune=False` writes every part, those the sources cannot fill too (as rules matching
    nothing): the grammar of the schema's whole shape, which `grammar.py` validates once
    with placeholder sources.

    Raises:
        UserError: the schema has no bound sources, or puts a marked string under a keyword
            this grammar cannot enforce.
    """
    sources = schema.get(SOURCES_KEY)
    if not isinstance(sources, Mapping):
        raise UserError(
            "this schema has extracted fields but no source text to copy from; bind the "
            "texts first with structune.constrain.bind_sources(schema, inputs) (Program.run "
            "and record do this with constrained=True)"
        )
    return _LarkWriter(schema, sources, prune=prune).grammar()


class _LarkWriter:
    def __init__(self, root: Mapping[str, Any], sources: Mapping[str, str], *, prune: bool):
        self.root = root
        self.sources = sources
        self.lines: list[str] = []
        self.names: dict[str, str] = {}  # what a rule or terminal stands for → its name
        self.marked_refs = _marked_refs(root)
        self.prune = prune
        # Expressions and rule names that match nothing, left out where they stand (none
        # when not pruning: then every part is written).
        self.unfillable: set[str] = {_NOTHING} if prune else set()

    def grammar(self) -> str:
        start = self.expr(self.root, "(root)")
        if start in self.unfillable:
            raise UserError(
                "no answer to this schema can be copied from these sources: a required "
                "extracted value has nothing to copy (e.g. a marked integer with none of the "
                "source's numbers in its bounds); decode without constraints, or relax it"
            )
        return "\n".join(["%llguidance {}", f"start: {start}", *self.lines]) + "\n"

    def define(self, key: str, name: str, body: Any) -> str:
        """The name of the rule for `key`, defining it with `body()` the first time."""
        if key not in self.names:
            self.names[key] = name = f"{name}{len(self.names)}"
            written = body()
            if written in self.unfillable:
                self.unfillable.add(name)
            self.lines.append(f"{name}: {written}")
        return self.names[key]

    def expr(self, node: Any, where: str) -> str:
        if node is True:
            node = {}
        if not isinstance(node, Mapping):
            raise UserError(f"the schema at {where} admits no value; nothing can be decoded")
        if not self.marked(node):
            text = json.dumps(self.standalone(node), ensure_ascii=False)
            return self.define(text, "json", lambda: f"%json {text}")
        kind = next((k for k in ("ref", "string", "union", "all") if _is(node, k)), None)
        if kind == "string" and node.get("type") == "integer":
            kind = "integer"  # a marked integer: one of the source's numbers
        kind = kind or node.get("type")
        if not isinstance(kind, str) or kind not in _STRUCTURE:
            raise UserError(
                f"cannot hold {where} to a grammar with extracted fields: its schema has no "
                "type object, array or string; decode without constraints, or give it a type"
            )
        extra = set(node) - _STRUCTURE[kind] - _ANNOTATIONS
        if extra:
            raise UserError(
                f"cannot enforce {', '.join(sorted(extra))} at {where} together with "
                "extracted fields; remove it, or decode without constraints (the answer is "
                "still checked afterwards)"
            )
        if kind == "ref":
            ref = node["$ref"]
            return self.define(ref, "ref", lambda: self.expr(resolve(node, self.root), ref))
        if kind == "string":
            if node.get("minLength", 0) not in (0, 1):
                raise UserError(
                    f"cannot enforce minLength {node['minLength']} at {where} on an extracted "
                    "field (only 1, non-empty); remove it, or decode without constraints"
                )
            marker = Extracted.from_json(node[MARKER_KEY], where)
            return self.span(marker, nonempty=node.get("minLength") == 1)
        if kind == "integer":
            return self.number(Extracted.from_json(node[MARKER_KEY], where), node)
        if kind == "union":
            branches = [self.expr(b, where) for b in node.get("anyOf") or node.get("oneOf") or []]
            fillable = [b for b in branches if b not in self.unfillable]
            return "(" + " | ".join(fillable) + ")" if fillable else _NOTHING
        if kind == "all":
            if len(node["allOf"]) != 1:
                raise UserError(f"cannot enforce allOf at {where} together with extracted fields")
            return self.expr(node["allOf"][0], where)
        if kind == "object":
            return self.object(node, where)
        return self.array(node, where)

    def marked(self, node: Mapping[str, Any]) -> bool:
        """Whether a marker lies under `node`, following `$ref`s."""
        if node.get("$ref") in self.marked_refs:
            return True
        return any(
            key == MARKER_KEY or (key not in ("$defs", "definitions") and _marked_under(v, self))
            for key, v in node.items()
        )

    def standalone(self, node: Mapping[str, Any]) -> dict[str, Any]:
        """`node` as a schema of its own: compact, with the definitions it refers to."""
        sub = {k: v for k, v in node.items() if k != SOURCES_KEY}
        if "$ref" in json.dumps(sub):
            for key in ("$defs", "definitions"):
                if key in self.root:
                    sub[key] = self.root[key]
        return {"x-guidance": _COMPACT, **sub}

    def object(self, node: Mapping[str, Any], where: str) -> str:
        properties: Mapping[str, Any] = node.get("properties") or {}
        required = set(node.get("required") or [])
        extra = node.get("additionalProperties")
        if isinstance(extra, Mapping) and self.marked(extra):
            raise UserError(
                f"cannot enforce extracted values in additionalProperties at {where}; "
                "declare those fields as properties"
            )
        undeclared = [key for key in required if key not in properties]
        if undeclared:
            raise UserError(
                f"cannot enforce required {', '.join(sorted(undeclared))} at {where} together "
                "with extracted fields: declare them under properties"
            )
        members = []
        for key, sub in properties.items():
            value = self.expr(sub, _join(where, key))
            if value in self.unfillable:
                if key in required:
                    return _NOTHING
                continue  # an optional member is left out
            literal = json.dumps(json.dumps(key, ensure_ascii=False) + ":", ensure_ascii=False)
            members.append((f"{literal} {value}", key in required))
        # Built from the last member back: `after` is the rest when a member was already
        # written (each then starts with a comma), `first` when none was; optional members
        # may be left out.
        after = first = ""
        for member, needed in reversed(members):
            if needed:
                first, after = seq(member, after), seq('","', member, after)
            else:
                written = seq(member, after)
                first = f"({written} | {first})" if first else f"({written})?"
                after = seq(f'("," {member})?', after)
        return seq('"{"', first, '"}"')

    def array(self, node: Mapping[str, Any], where: str) -> str:
        low, high = node.get("minItems", 0), node.get("maxItems")
        items = resolve(node.get("items", True), self.root)
        if isinstance(items, Mapping) and MARKER_KEY in items:
            marker = Extracted.from_json(items[MARKER_KEY], f"{where}[]")
            if marker.ordered:
                if low not in (0, 1) or high is not None:
                    raise UserError(
                        f"cannot enforce minItems {low} / maxItems {high} at {where} on an "
                        "ordered extracted list (only minItems 1); remove them, or drop "
                        "ordered=True"
                    )
                return self.ordered(marker, nonempty_list=low == 1)
        ordered_field = _ordered_field(items, self.root) if isinstance(items, Mapping) else None
        if ordered_field is not None:
            if low not in (0, 1) or high is not None:
                raise UserError(
                    f"cannot enforce minItems {low} / maxItems {high} at {where} on a list "
                    f"ordered by {ordered_field}; remove them, or drop ordered=True"
                )
            return self.ordered_objects(items, ordered_field, f"{where}[]", nonempty_list=low == 1)
        if high == 0:
            return '"[" "]"'
        item = self.expr(node.get("items", True), f"{where}[]")
        if item in self.unfillable:
            return '"[" "]"' if low == 0 else _NOTHING
        more_low = max(low - 1, 0)
        if high is None:
            more = f'("," {item})*' if more_low == 0 else f'("," {item}){{{more_low},}}'
        else:
            more = f'("," {item}){{{more_low},{high - 1}}}'
        return seq('"["', seq(item, more) if low >= 1 else f"({item} {more})?", '"]"')

    def span(self, marker: Extracted, *, nonempty: bool) -> str:
        """A terminal: a JSON string whose content is a run of the marker's source."""
        names = [marker.source] if marker.source else list(self.sources)
        if marker.pattern is not None:
            return self.matching_span(marker, names)
        alternatives = [
            self.define(
                f"{marker.mode}:{name}",
                "SOURCE",
                lambda name=name: substring_regex(self.sources[name], marker.mode),
            )
            for name in names
        ]
        content = "(" + " | ".join(alternatives) + ")"
        if nonempty:
            content = f"({content} & /(?s:.+)/)"
        return self.define(
            f"span:{marker.mode}:{nonempty}:{','.join(names)}",
            "SPAN",
            lambda: f'"\\"" {content} "\\""',
        )

    def matching_span(self, marker: Extracted, names: list[str]) -> str:
        """A terminal: a JSON string whose content is one of the source's runs that match
        the marker's pattern; none match: `_NOTHING`."""

        def body() -> str:
            literals = matching_literals(source_units(self.sources, names, marker.mode), marker)
            if not literals:
                return _NOTHING
            return '"\\"" (' + " | ".join(literals) + ') "\\""'

        key = f"matching:{marker.mode}:{marker.pattern}:{','.join(names)}"
        return self.define(key, "MATCHING", body)

    def number(self, marker: Extracted, node: Mapping[str, Any]) -> str:
        """A terminal: one of the integers written in the marker's source within the
        schema's bounds (a year with `minimum` 1800 leaves out page and table numbers); a source
        without any admits none (`_NOTHING`), so a list of such objects can only be empty."""
        names = [marker.source] if marker.source else list(self.sources)
        bounds = {k: node[k] for k in _INTEGER_BOUNDS if k in node}
        found = sorted({
            n for name in names for n in numbers(self.sources[name]) if _within(n, bounds)
        })  # fmt: skip
        if not found and self.prune:
            return _NOTHING
        body = " | ".join(f'"{n}"' for n in found) or _NOTHING
        key = f"number:{','.join(names)}:{json.dumps(bounds, sort_keys=True)}"
        return self.define(key, "NUMBER", lambda: body)

    def ordered_objects(
        self, node: Mapping[str, Any], key: str, where: str, *, nonempty_list: bool
    ) -> str:
        """A list of objects whose `key` values are spans of the source in its order: the
        ordered string list, with the members before `key` opening each item and the
        members after it closing the item."""
        properties: Mapping[str, Any] = node["properties"]
        optional = set(properties) - set(node.get("required") or [])
        if optional:
            raise UserError(
                f"cannot keep the items at {where} in the order of {key}: "
                f"{', '.join(sorted(optional))} optional; make every property of the items "
                "required, or drop ordered=True"
            )
        names = list(properties)
        at = names.index(key)

        values = {n: self.expr(properties[n], _join(where, n)) for n in names if n != key}
        if any(v in self.unfillable for v in values.values()):
            return _NOTHING if nonempty_list else '"[" "]"'

        def member(name: str) -> str:
            literal = json.dumps(json.dumps(name, ensure_ascii=False) + ":", ensure_ascii=False)
            return f"{literal} {values[name]}"

        marked = json.dumps(json.dumps(key, ensure_ascii=False) + ":", ensure_ascii=False)
        opening = seq('"{"', *[seq(member(n), '","') for n in names[:at]], marked)
        closing = seq(*[seq('","', member(n)) for n in names[at + 1 :]], '"}"')
        marker = Extracted.from_json(resolve(properties[key], self.root)[MARKER_KEY], where)
        return self.ordered(marker, nonempty_list=nonempty_list, opening=opening, closing=closing)

    def ordered(
        self, marker: Extracted, *, nonempty_list: bool, opening: str = "", closing: str = ""
    ) -> str:
        """A list whose items are spans of the source in the source's order (`opening` and
        `closing` wrap each span into an object, see `ordered_objects`).

        The rules themselves are `source_spans.ordered_rules`.
        """
        names = [marker.source] if marker.source else list(self.sources)
        key = f"ordered:{marker}:{nonempty_list}:{','.join(names)}:{opening}:{closing}"
        if key in self.names:
            return self.names[key]
        raw = source_units(self.sources, names, marker.mode)
        if len(raw) > MAX_ORDERED_PIECES:
            raise UserError(
                f"the source of the ordered list has {len(raw):,} pieces, more than the "
                f"{MAX_ORDERED_PIECES:,} an ordered grammar takes; shorten it (e.g. smaller "
                "chunks), or drop ordered=True (the order is still checked afterwards)"
            )
        prefix = self.names[key] = f"ordered{len(self.names)}"
        rules, first = ordered_rules(marker, raw, prefix, opening, closing)
        if not first:
            if nonempty_list and not self.prune:
                body = f'"[" {_NOTHING}'  # the placeholder source matches no pattern
            elif nonempty_list:
                raise UserError(
                    "an ordered extracted list must have an item, but its source has no text"
                    + (" that matches the pattern" if marker.pattern is not None else "")
                )
            else:
                body = '"[" "]"'
        else:
            body = f'"[" {first}' if nonempty_list else f'"[" ("]" | {first})'
        self.lines.append(f"{prefix}: {body}")
        self.lines.extend(rules)
        return prefix


def _ordered_field(items: Mapping[str, Any], root: Mapping[str, Any]) -> str | None:
    """The property of a list's object items marked `ordered`, if one is.

    Raises:
        UserError: more than one is.
    """
    items = resolve(items, root)
    properties = items.get("properties") if isinstance(items, Mapping) else None
    if not isinstance(properties, Mapping):
        return None
    resolved = {name: resolve(sub, root) for name, sub in properties.items()}
    ordered = [
        name
        for name, sub in resolved.items()
        if isinstance(sub, Mapping)
        and MARKER_KEY in sub
        and Extracted.from_json(sub[MARKER_KEY], name).ordered
    ]
    if len(ordered) > 1:
        raise UserError(
            f"a list's items can follow the source's order by one field, not {len(ordered)} "
            f"({', '.join(ordered)}); mark only one ordered=True"
        )
    return ordered[0] if ordered else None


def _within(n: int, bounds: Mapping[str, Any]) -> bool:
    return (
        n >= bounds.get("minimum", n)
        and n <= bounds.get("maximum", n)
        and n > bounds.get("exclusiveMinimum", n - 1)
        and n < bounds.get("exclusiveMaximum", n + 1)
    )


def _is(node: Mapping[str, Any], kind: str) -> bool:
    return bool(_STRUCTURE[kind] & set(node)) if kind != "string" else MARKER_KEY in node


def _join(where: str, key: str) -> str:
    return key if where == "(root)" else f"{where}.{key}"


def _marked_under(value: Any, writer: _LarkWriter) -> bool:
    if isinstance(value, Mapping):
        return writer.marked(value)
    if isinstance(value, list):
        return any(_marked_under(v, writer) for v in value)
    return False


def _marked_refs(root: Mapping[str, Any]) -> set[str]:
    """The local `$ref`s whose definitions lead to a marker, directly or through others."""
    defs = {
        f"#/{key}/{name}": body
        for key in ("$defs", "definitions")
        for name, body in (root.get(key) or {}).items()
    }
    marked = {ref for ref, body in defs.items() if has_extracted(body)}
    while True:
        more = {
            ref
            for ref, body in defs.items()
            if ref not in marked and any(f'"{m}"' in json.dumps(body) for m in marked)
        }
        if not more:
            return marked
        marked |= more
