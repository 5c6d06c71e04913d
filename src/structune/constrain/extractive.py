"""Extractive fields: string values that must be copied from the program's input.

Mark a field `Annotated[str, Extracted()]`. The marker travels in the JSON Schema as the
extension keyword `x-structune-extract` (`{"source", "mode", "ordered"}`, and `"pattern"`
where set: the shape a copy must have, a surname rather than any span), so it survives
recording, JSONL export and being sent as a schema. It is enforced in two places:

- afterwards, with any model: `check_extracted` looks every marked value of a parsed answer
  up in its source, and `Program.parse` turns what it finds into `InvalidOutput`;
- while decoding, on local models: `bind_sources` puts the source texts into the schema
  (top-level `x-structune-sources`), and `compile_schema` then builds a grammar in which
  a marked string can only be a span of its source (`structune.constrain.extractive_grammar`).

Both sides cut text into the same pieces (`pieces`): in "words" mode, runs of letters and
digits, single other characters, and whitespace runs collapsed to one space (after Unicode
NFC); in "chars" mode, single characters. A value is in its source when its pieces are a
run of the source's pieces; in words mode leading and trailing punctuation and spaces of
the value are ignored, so "(Brown" and "al." match "(Brown et al., 2020)".

`ordered` list items must each be found after the previous item's match, afterwards and,
for a list whose items are the marked strings, while decoding too (a marker deeper inside
list items, e.g. on a field of an object item, is held to its source but its order is only
checked afterwards).
"""

from __future__ import annotations

import bisect
import json
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from structune.errors import UserError

MARKER_KEY = "x-structune-extract"
SOURCES_KEY = "x-structune-sources"

Mode = Literal["words", "chars"]
_MODES = ("words", "chars")


@dataclass(frozen=True)
class Extracted:
    """Marks a string field whose value must be copied from the input.

    Use it as `Annotated[str, Extracted()]`, also inside nested models and list items
    (`list[Annotated[str, Extracted(ordered=True)]]`).

    Args:
        source: the program input variable to copy from; by default any text input.
        mode: "words" copies whole words (punctuation at either end and whitespace are
            forgiven); "chars" copies an exact character span.
        ordered: for list items: each item must come from text after the previous one's.
        pattern: a regular expression (Python `re`) the whole copied string must match,
            e.g. a surname's shape. It lives in the marker, not as JSON Schema's `pattern`,
            so the prompt's schema does not show it and the grammar can enforce it: it
            offers only the source's runs that match, starting and ending on a word or
            punctuation, of at most 16 pieces in words mode and 128 characters in chars mode
            (`source_spans.MAX_PATTERN_PIECES`, `MAX_PATTERN_CHARS`).
    """

    source: str | None = None
    mode: Mode = "words"
    ordered: bool = False
    pattern: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise UserError(f"Extracted(mode=...) must be 'words' or 'chars', got {self.mode!r}")
        if self.source is not None and not (
            isinstance(self.source, str) and self.source.isidentifier()
        ):
            raise UserError(
                f"Extracted(source=...) must name a template variable, got {self.source!r}"
            )
        if not isinstance(self.ordered, bool):
            raise UserError(f"Extracted(ordered=...) must be True or False, got {self.ordered!r}")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except (re.error, TypeError) as exc:
                raise UserError(
                    f"Extracted(pattern=...) must be a regular expression, got "
                    f"{self.pattern!r}: {exc}"
                ) from None

    def to_json(self) -> dict[str, Any]:
        marker = {"source": self.source, "mode": self.mode, "ordered": self.ordered}
        # Written only when set: the schemas (and hashes) of unpatterned markers stay as they were.
        return marker if self.pattern is None else {**marker, "pattern": self.pattern}

    def matches(self, value: str) -> bool:
        """Whether `value` has the marker's `pattern` (any value, without one)."""
        return self.pattern is None or re.fullmatch(self.pattern, value) is not None

    @classmethod
    def from_json(cls, value: Any, where: str = "(root)") -> Extracted:
        """The marker written as `x-structune-extract` in a schema, checked."""
        if not isinstance(value, Mapping) or set(value) - {"source", "mode", "ordered", "pattern"}:
            raise UserError(
                f"{MARKER_KEY} at {where} must be an object with only the keys source, mode, "
                f"ordered and pattern, got {value!r}"
            )
        return cls(**value)

    def __get_pydantic_core_schema__(self, source_type: Any, handler: Any) -> Any:
        schema = handler(source_type)
        if schema.get("type") not in ("str", "int"):
            raise UserError(
                f"Extracted() marks {source_type!r}, but only str and int fields can be copied "
                "from the input; for an optional field write Annotated[str, Extracted()] | None"
            )
        return schema

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> Any:
        schema = handler(core_schema)
        schema[MARKER_KEY] = self.to_json()
        return schema


@dataclass(frozen=True)
class ExtractedField:
    """A marked string in a schema: where it is (`citations[].author`) and its marker."""

    path: str
    marker: Extracted


# --- walking schemas --------------------------------------------------------------------


def resolve(node: Any, root: Mapping[str, Any]) -> Any:
    """`node` with a local `$ref` ("#/$defs/Name") followed; other nodes as they are."""
    seen = set()
    while isinstance(node, Mapping) and "$ref" in node:
        ref = node["$ref"]
        if not (isinstance(ref, str) and ref.startswith("#/")) or ref in seen:
            raise UserError(f"cannot follow $ref {ref!r}: only local references are supported")
        seen.add(ref)
        target: Any = root
        for part in ref[2:].split("/"):
            if not isinstance(target, Mapping) or part not in target:
                raise UserError(f"$ref {ref!r} points at nothing in the schema")
            target = target[part]
        node = target
    return node


def has_extracted(schema: Any) -> bool:
    """Whether `schema` marks any field as extracted (anywhere, `$defs` included)."""
    if isinstance(schema, Mapping):
        return MARKER_KEY in schema or any(has_extracted(v) for v in schema.values())
    if isinstance(schema, list):
        return any(has_extracted(v) for v in schema)
    return False


def extracted_fields(schema: Mapping[str, Any]) -> list[ExtractedField]:
    """Every marked string of `schema`, each reached once.

    Raises:
        UserError: a marker is malformed, sits on something other than a string, or asks
            for `ordered` outside a list's items.
    """
    found: list[ExtractedField] = []
    seen_refs: set[tuple[str, bool, bool]] = set()  # a definition, once per kind of place

    def walk(node: Any, path: str, is_item: bool, in_item: bool = False) -> None:
        """`is_item`: `node` is a list's items; `in_item`: a property of such an object."""
        if not isinstance(node, Mapping):
            return
        ref = node.get("$ref")
        if isinstance(ref, str):
            if (ref, is_item, in_item) in seen_refs:
                return
            seen_refs.add((ref, is_item, in_item))
            walk(resolve(node, schema), path, is_item, in_item)
        if MARKER_KEY in node:
            marker = Extracted.from_json(node[MARKER_KEY], path or "(root)")
            if node.get("type") not in ("string", "integer"):
                raise UserError(
                    f"{path or '(root)'} is marked as extracted but is not a string or an "
                    f"integer (type {node.get('type', 'unspecified')!r}); only those can be "
                    "copied from the input"
                )
            if node["type"] == "integer" and (marker.ordered or marker.pattern is not None):
                raise UserError(
                    f"{path or '(root)'} is an integer marked ordered or with a pattern; only "
                    "strings keep order or have a shape (an integer is one of the source's "
                    "numbers: bound it with ge/le)"
                )
            if marker.ordered and not (is_item or in_item):
                raise UserError(
                    f"{path or '(root)'} is marked ordered, which only applies to list items "
                    "or a field of them: write list[Annotated[str, Extracted(ordered=True)]], "
                    "or mark one field of the list's item model"
                )
            found.append(ExtractedField(path, marker))
        for key, sub in (node.get("properties") or {}).items():
            walk(sub, f"{path}.{key}" if path else key, False, is_item)
        walk(node.get("items"), f"{path}[]", True)
        for sub in node.get("prefixItems") or []:
            walk(sub, f"{path}[]", True)
        walk(node.get("additionalProperties"), f"{path}.*", False)
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in node.get(key) or []:
                walk(sub, path, is_item, in_item)

    walk(schema, "", False)
    return found


# --- sources ----------------------------------------------------------------------------


def select_sources(schema: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, str]:
    """The inputs that the marked fields of `schema` copy from, by name.

    A marker with a `source` needs that input; one without takes every text input.

    Raises:
        UserError: a named source is missing, not text, or empty; or a marker without a
            source finds no text input at all.
    """
    fields = extracted_fields(schema)
    texts = {k: v for k, v in inputs.items() if isinstance(v, str) and v.strip()}
    selected: dict[str, str] = {}
    for f in fields:
        name = f.marker.source
        if name is None:
            if not texts:
                raise UserError(
                    f"{f.path} must be copied from the input, but no input holds any text "
                    f"(inputs: {', '.join(sorted(inputs)) or 'none'})"
                )
            selected.update(texts)
        elif name in texts:
            selected[name] = texts[name]
        elif name not in inputs:
            raise UserError(
                f"{f.path} must be copied from input {name!r}, which is missing "
                f"(inputs: {', '.join(sorted(inputs)) or 'none'}); pass it with the inputs"
            )
        else:
            raise UserError(
                f"{f.path} must be copied from input {name!r}, which is "
                f"{'empty' if isinstance(inputs[name], str) else 'not text'}: give it the text "
                "the values should come from"
            )
    return selected


def bind_sources(schema: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """`schema` carrying the texts its marked fields copy from, ready to compile a grammar.

    A schema without markers comes back unchanged (as a dict).
    """
    if not has_extracted(schema):
        return dict(schema)
    return {**schema, SOURCES_KEY: select_sources(schema, inputs)}


def strip_extractive(schema: Any) -> Any:
    """`schema` without markers or bound sources: for backends that cannot enforce them."""
    if isinstance(schema, Mapping):
        return {
            k: strip_extractive(v) for k, v in schema.items() if k not in (MARKER_KEY, SOURCES_KEY)
        }
    if isinstance(schema, list):
        return [strip_extractive(v) for v in schema]
    return schema


Extraction = Literal["marked", "unordered", "off"]
"""How a grammar holds marked fields: as marked, as copies in any order (`ordered` markers
relaxed), or not at all (a plain JSON grammar; the values are still checked afterwards)."""


def with_extraction(schema: Mapping[str, Any], extraction: Extraction) -> dict[str, Any]:
    """`schema` (bound or not) with its markers kept, relaxed to any order, or removed."""
    if extraction == "off":
        return dict(strip_extractive(schema))
    if extraction == "marked":
        return dict(schema)
    if extraction != "unordered":
        raise UserError(f"extraction must be 'marked', 'unordered' or 'off', got {extraction!r}")

    def relax(node: Any) -> Any:
        if isinstance(node, Mapping):
            return {
                k: {**v, "ordered": False} if k == MARKER_KEY else relax(v) for k, v in node.items()
            }
        if isinstance(node, list):
            return [relax(v) for v in node]
        return node

    return dict(relax(schema))


# --- matching text ----------------------------------------------------------------------

_PIECE = re.compile(r"\s+|\w+|.", re.DOTALL)
_WORD = re.compile(r"\w")


def pieces(text: str, mode: Mode) -> list[str]:
    """`text` cut into the units a value is copied in (see the module docstring)."""
    if mode == "chars":
        return list(text)
    text = unicodedata.normalize("NFC", text)
    return [" " if p[0].isspace() else p for p in _PIECE.findall(text)]


_DIGITS = re.compile(r"(?<!\d)\d+(?!\d)")


def numbers(text: str) -> list[int]:
    """The integers an extracted int can copy from `text`: its runs of digits, in order
    ("2020" in "(Hu et al., 2020a)"; "3.5" gives 3 and 5)."""
    return [int(digits) for digits in _DIGITS.findall(unicodedata.normalize("NFKC", text))]


def _core(value: str, mode: Mode) -> list[str]:
    """The pieces of `value` that must be found: in words mode, without leading and trailing
    punctuation and spaces (only the spaces when the value has no word at all)."""
    units = pieces(value, mode)
    if mode == "chars":
        return units
    kept = [i for i, p in enumerate(units) if _WORD.match(p)] or [
        i for i, p in enumerate(units) if p != " "
    ]
    return units[kept[0] : kept[-1] + 1] if kept else []


class _Source:
    """The pieces of one or more texts, indexed for finding runs; no run spans two texts."""

    def __init__(self, texts: Sequence[str], mode: Mode):
        self.units: list[str | None] = []
        for text in texts:
            self.units.extend(pieces(text, mode))
            self.units.append(None)  # a barrier between texts
        self.starts: dict[str, list[int]] = {}
        for i, unit in enumerate(self.units):
            if unit is not None:
                self.starts.setdefault(unit, []).append(i)
        self.numbers = {n for text in texts for n in numbers(text)}

    def find(self, run: list[str], start: int = 0) -> int | None:
        """Where the first occurrence of `run` at or after `start` ends, or None."""
        if not run:
            return start
        positions = self.starts.get(run[0], [])
        for i in positions[bisect.bisect_left(positions, start) :]:
            if self.units[i : i + len(run)] == run:
                return i + len(run)
        return None


# --- checking answers -------------------------------------------------------------------


def check_extracted(schema: Mapping[str, Any], value: Any, sources: Mapping[str, str]) -> list[str]:
    """The marked values of `value` that are not copied from their source, as messages.

    Args:
        schema: the JSON Schema `value` was validated against.
        value: the parsed answer (plain JSON data).
        sources: input name → text (e.g. the program's inputs).

    Returns:
        One message per problem, naming the field's path and the value, e.g.
        `citations[2].author: "Nemeth" is not in the source`; empty when all is well.

    Raises:
        UserError: a source a marked field needs is missing or empty (see `select_sources`).
    """
    return audit_extracted(schema, value, sources).problems


@dataclass(frozen=True)
class SourceAudit:
    """What checking one answer's marked values found.

    Attributes:
        values: marked string values in the answer.
        missing: those not found in their source at all (invented or misspelt).
        problems: one message per value not found, or found out of order.
    """

    values: int
    missing: int
    problems: list[str]


def audit_extracted(
    schema: Mapping[str, Any], value: Any, sources: Mapping[str, str]
) -> SourceAudit:
    """`check_extracted`, with the counts an evaluation reports."""
    if not has_extracted(schema):
        return SourceAudit(0, 0, [])
    checker = _Checker(schema, select_sources(schema, sources))
    problems = list(checker.problems(schema, value, ""))
    return SourceAudit(checker.values, checker.missing, problems)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "object": (dict,),
    "array": (list,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "null": (type(None),),
}


def _could_be(node: Any, value: Any) -> bool:
    """Whether `value` has a JSON type that `node` (a resolved branch) allows."""
    if not isinstance(node, Mapping) or "type" not in node:
        return True
    types = node["type"] if isinstance(node["type"], list) else [node["type"]]
    if isinstance(value, bool) and "boolean" not in types:
        return False
    return any(isinstance(value, _JSON_TYPES.get(t, ())) for t in types)


def _show(value: str) -> str:
    shown = json.dumps(value, ensure_ascii=False)
    return shown if len(shown) <= 80 else shown[:77] + '…"'


class _Checker:
    def __init__(self, root: Mapping[str, Any], texts: Mapping[str, str]):
        self.root = root
        self.texts = texts
        self.indexes: dict[tuple[str | None, str], _Source] = {}
        self.values = self.missing = 0

    def source(self, marker: Extracted) -> _Source:
        key = (marker.source, marker.mode)
        if key not in self.indexes:
            texts = [self.texts[marker.source]] if marker.source else list(self.texts.values())
            self.indexes[key] = _Source(texts, marker.mode)
        return self.indexes[key]

    def problems(self, node: Any, value: Any, path: str) -> Iterator[str]:
        node = resolve(node, self.root)
        if not isinstance(node, Mapping):
            return
        where = path or "(root)"
        if MARKER_KEY in node and isinstance(value, str):
            marker = Extracted.from_json(node[MARKER_KEY], where)
            self.values += 1
            if self.source(marker).find(_core(value, marker.mode)) is None:
                self.missing += 1
                yield f"{where}: {_show(value)} is not in the {_name(marker)}"
            elif not marker.matches(value):
                yield f"{where}: {_show(value)} does not match the pattern {marker.pattern!r}"
        elif MARKER_KEY in node and isinstance(value, int) and not isinstance(value, bool):
            marker = Extracted.from_json(node[MARKER_KEY], where)
            self.values += 1
            if value not in self.source(marker).numbers:
                self.missing += 1
                yield f"{where}: {value} is not a number in the {_name(marker)}"
        for sub in node.get("allOf") or []:
            yield from self.problems(sub, value, path)
        branches = node.get("anyOf") or node.get("oneOf")
        if branches:
            yield from self.any_branch(branches, value, path)
        if isinstance(value, dict):
            yield from self.object(node, value, path)
        if isinstance(value, list):
            yield from self.array(node, value, path)

    def any_branch(self, branches: list[Any], value: Any, path: str) -> Iterator[str]:
        """Fine when some branch of the value's type is fine; else the first one's problems."""
        before = self.values, self.missing
        results = []  # (problems, counts) per branch the value could take
        for branch in branches:
            if _could_be(resolve(branch, self.root), value):
                self.values, self.missing = before
                problems = list(self.problems(branch, value, path))
                results.append((problems, (self.values, self.missing)))
        self.values, self.missing = before
        if results:
            problems, counts = next((r for r in results if not r[0]), results[0])
            self.values, self.missing = counts
            yield from problems

    def object(self, node: Mapping[str, Any], value: dict[str, Any], path: str) -> Iterator[str]:
        properties = node.get("properties") or {}
        extra = node.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, Mapping) else None)
            if sub is not None:
                yield from self.problems(sub, item, f"{path}.{key}" if path else key)

    def array(self, node: Mapping[str, Any], value: list[Any], path: str) -> Iterator[str]:
        prefix = node.get("prefixItems") or []
        items = node.get("items")
        for i, item in enumerate(value):
            sub = prefix[i] if i < len(prefix) else items
            if sub is not None:
                yield from self.problems(sub, item, f"{path}[{i}]")
        resolved = resolve(items, self.root) if items is not None else None
        if not isinstance(resolved, Mapping):
            return
        rest = list(enumerate(value))[len(prefix) :]
        if MARKER_KEY in resolved:
            marker = Extracted.from_json(resolved[MARKER_KEY], f"{path}[]")
            if marker.ordered:
                yield from self.order(marker, [(f"{path}[{i}]", v) for i, v in rest])
        for key, sub in (resolved.get("properties") or {}).items():
            sub = resolve(sub, self.root)
            if isinstance(sub, Mapping) and MARKER_KEY in sub:
                marker = Extracted.from_json(sub[MARKER_KEY], f"{path}[].{key}")
                if marker.ordered:
                    yield from self.order(
                        marker,
                        [
                            (f"{path}[{i}].{key}", v.get(key))
                            for i, v in rest
                            if isinstance(v, dict)
                        ],
                    )

    def order(self, marker: Extracted, items: list[tuple[str, Any]]) -> Iterator[str]:
        """Each of `items` (where, value) found after the previous one's match (values not in
        the source at all were reported already and are skipped)."""
        source = self.source(marker)
        after, previous = 0, None
        for where, item in items:
            if not isinstance(item, str):
                continue
            run = _core(item, marker.mode)
            if source.find(run) is None:
                continue
            end = source.find(run, after)
            if end is None:
                yield (
                    f"{where}: {_show(item)} is not in the {_name(marker)} after "
                    f"{previous}; items must follow the order of the text"
                )
                continue
            after, previous = end, where


def _name(marker: Extracted) -> str:
    return f"source {marker.source!r}" if marker.source else "source"
