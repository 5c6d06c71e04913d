"""Distinct list items, held while decoding: a repeated item cannot be written.

A grammar cannot say "unlike every earlier item" (the set of allowed strings changes with
each item), so distinctness is held beside the grammar, as a ban on tokens: while a row
writes a string that is an item of a distinct list (or the keyed field of one, e.g. each
song's `title`), every token that would close the string on a value its list already holds
is masked out. The model then writes another value, or a longer one; it never repeats.

What counts as the same item is `same_item_key`: case-folded, punctuation dropped,
whitespace collapsed ("The City!" and "the city" are one), which implies JSON Schema's
exact `uniqueItems`. A `Distinct` marker also counts an item *near* an earlier one as the
same (`near_duplicate`: "Song of the Wind" and "Songs of the Wind", not "Track 1" and
"Track 2"), as the content metrics do (`structune.evaluate.content`): a student whose exact
repeat is banned otherwise writes the plural or adds a word, which a reader sees as the
same song. `uniqueItems` keeps JSON Schema's meaning (two people may be "Jon Smith" and
"John Smith"); `Distinct(near=False)` asks for that meaning on a marker.

Two ways to ask for it:
- JSON Schema `uniqueItems: true` on an array of strings (plain strings, enums, extracted
  spans);
- `Distinct()` on a Pydantic list of strings, or `Distinct(by="title")` on a list of
  models: distinct by that field (`x-structune-distinct` in the schema). Pydantic then
  also refuses an answer that repeats, so a teacher's repeating answer is recorded invalid.

The lists are found through `properties`, `items`, `anyOf`/`allOf` and local `$ref`s from
the root (`hold_distinct`); a `Distinct` marker anywhere else is refused by name, and a
`uniqueItems` elsewhere (or on numbers or objects) is left to the relax-and-check path
(`structune.constrain.checked`). Every answer is still validated against the full schema
afterwards. The llama.cpp backend has no token hook here: there `uniqueItems` is only
checked, as `structune.constrain.checked` describes.
"""

from __future__ import annotations

import copy
import json
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from difflib import SequenceMatcher
from functools import lru_cache
from typing import Any

from structune.constrain.extractive import MARKER_KEY
from structune.errors import UserError

DISTINCT_KEY = "x-structune-distinct"
NEAR_KEY = "x-structune-distinct-near"  # with it, near items repeat too (`near_duplicate`)
NEAR_DUPLICATE = 0.9
"""difflib ratio from which two normalised list items are one: "the city of night" and
"the city of nights" 0.97, "song for you" and "song for me" 0.78."""
ITEM = "[]"  # a path step into a list's items
_MAX_REFS = 32  # a chain of bare $refs followed this far, no farther
_MAX_VISITS = 10_000  # subschemas a walk looks at, at most (a wide recursive schema)
_QUOTE, _BACKSLASH = ord('"'), ord("\\")
MAX_PROBED = 4096  # tokens probed at one step, at most (~10 µs each)


def same_item_key(text: str) -> str:
    """What two list items must differ in: "The  City!" and "the city" share "the city"."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(c for c in folded if not unicodedata.category(c).startswith("P"))
    return " ".join(kept.split())


_DIGITS = re.compile(r"\d+")


@lru_cache(maxsize=65536)  # the decoder asks the same pairs at every probe of a step
def near_duplicate(a: str, b: str) -> bool:
    """Two normalised strings (`same_item_key`) are near-duplicates: a difflib ratio of at
    least `NEAR_DUPLICATE`, and the same numbers in them."""
    if _DIGITS.findall(a) != _DIGITS.findall(b):
        return False
    matcher = SequenceMatcher(None, a, b)
    return all(
        ratio() >= NEAR_DUPLICATE
        for ratio in (matcher.real_quick_ratio, matcher.quick_ratio, matcher.ratio)
    )  # the quick ratios are upper bounds of the ratio: most pairs stop at the first


def repeats_any(key: str, seen: Collection[str], *, near: bool) -> bool:
    """Whether an item whose `same_item_key` is `key` repeats one of `seen` (keys too)."""
    return key in seen or (near and any(near_duplicate(key, s) for s in seen))


@dataclass(frozen=True)
class Distinct:
    """Pydantic marker: the list's items are distinct (`same_item_key`), or with `by`,
    the items' `by` field is. Held while decoding under a grammar, and checked by Pydantic.

    Example: `songs: Annotated[list[Song], Distinct(by="title")]`.

    Args:
        by: the items' string field that must differ (None: the items, strings).
        near: an item near an earlier one repeats it too (`near_duplicate`).
    """

    by: str | None = None
    near: bool = True

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> Any:
        json_schema = handler(schema)
        near = {NEAR_KEY: True} if self.near else {}
        if self.by is None:
            return {**json_schema, "uniqueItems": True, **near}
        return {**json_schema, DISTINCT_KEY: self.by, **near}

    def _check(self, items: Any) -> Any:
        seen: list[str] = []
        for item in items:
            value = item if self.by is None else _field(item, self.by)
            key = same_item_key(value) if isinstance(value, str) else json.dumps(value)
            if repeats_any(key, seen, near=self.near and isinstance(value, str)):
                what = "item" if self.by is None else f"{self.by}"
                raise ValueError(f"repeats the {what} {value!r}: the items must be distinct")
            seen.append(key)
        return items


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


@dataclass(frozen=True)
class DistinctList:
    """A list held distinct: its place (property names and `ITEM` steps from the root), the
    item field that must differ (None: the items themselves, strings), and what makes a
    string close before its quote is written: the values an enum allows, a `maxLength`
    (there a repeat must be steered off one token earlier)."""

    path: tuple[str, ...]
    by: str | None = None
    values: tuple[str, ...] | None = None  # the strings allowed, when an enum lists them
    max_length: int | None = None  # the strings' maxLength: at it, a string must close
    near: bool = False  # near items repeat too (a `Distinct` marker's default)

    @property
    def value_path(self) -> tuple[str, ...]:
        """Where the strings that must differ sit."""
        return (*self.path, ITEM) if self.by is None else (*self.path, ITEM, self.by)


def hold_distinct(schema: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[DistinctList, ...]]:
    """`schema` without the distinctness the decoder holds, and the lists it holds.

    Raises:
        UserError: a `Distinct` marker the decoder cannot follow, or one whose items have no
            such string field.
    """
    root = dict(schema)
    held: dict[int, list[DistinctList]] = {}  # a list's node → each place it is reached
    budget = [_MAX_VISITS]

    def walk(node: Any, path: tuple[str, ...], inside: frozenset[int]) -> None:
        # A recursive schema is followed once round each cycle, and a wide one only so far:
        # a list held nowhere keeps its uniqueItems, which is then only checked.
        node = _resolved(root, node)
        if not isinstance(node, Mapping) or id(node) in inside or budget[0] <= 0:
            return
        budget[0] -= 1
        inside = inside | {id(node)}
        found = _distinct_list(root, node, path)
        if found is not None:
            held.setdefault(id(node), []).append(found)
        for name, sub in _mapping(node.get("properties")).items():
            walk(sub, (*path, name), inside)
        if isinstance(node.get("items"), Mapping):
            walk(node["items"], (*path, ITEM), inside)
        for key in ("anyOf", "allOf"):
            for branch in node.get(key) or []:
                walk(branch, path, inside)
        if "$ref" in node:
            walk({"$ref": node["$ref"]}, path, inside)

    walk(root, (), frozenset())
    _refuse_unheld_markers(root, held)
    if not held:
        return root, ()
    lists = tuple(dict.fromkeys(place for places in held.values() for place in places))
    return _without(root, set(held)), lists


def _distinct_list(
    root: Mapping[str, Any], node: Mapping[str, Any], path: tuple[str, ...]
) -> DistinctList | None:
    items = _resolved(root, node.get("items"))
    by = node.get(DISTINCT_KEY)
    if by is not None:
        fields = _mapping(items.get("properties")) if isinstance(items, Mapping) else {}
        if not isinstance(by, str) or not _is_string(root, fields.get(by)):
            raise UserError(
                f"{DISTINCT_KEY} {by!r} at {_pointer(path)} names no string field of the "
                "list's items: name one (Distinct(by=...) on a list of models)"
            )
        return _held(root, path, by, fields[by], near=node.get(NEAR_KEY) is True)
    if node.get("uniqueItems") is True and _is_string(root, items):
        return _held(root, path, None, items, near=node.get(NEAR_KEY) is True)
    return None


def _held(
    root: Mapping[str, Any], path: tuple[str, ...], by: str | None, strings: Any, *, near: bool
) -> DistinctList:
    strings = _resolved(root, strings)
    max_length = strings.get("maxLength")
    if not isinstance(max_length, int) or isinstance(max_length, bool):
        max_length = None
    return DistinctList(path, by, _enum(root, strings), max_length, near)


def _is_string(root: Mapping[str, Any], node: Any) -> bool:
    node = _resolved(root, node)
    if not isinstance(node, Mapping):
        return False
    if "enum" in node or "const" in node:
        return _enum(root, node) is not None
    return node.get("type") == "string" or MARKER_KEY in node


def _enum(root: Mapping[str, Any], node: Any) -> tuple[str, ...] | None:
    node = _resolved(root, node)
    if not isinstance(node, Mapping):
        return None
    values = node.get("enum", [node["const"]] if "const" in node else None)
    if isinstance(values, list) and values and all(isinstance(v, str) for v in values):
        return tuple(values)
    return None


def _resolved(root: Mapping[str, Any], node: Any) -> Any:
    """`node`, or the local definition its bare `$ref` points to (None for a remote one,
    or a chain of `$ref`s longer than `_MAX_REFS`)."""
    for _ in range(_MAX_REFS):
        if not (isinstance(node, Mapping) and set(node) == {"$ref"}):
            return node
        ref = node["$ref"]
        if not (isinstance(ref, str) and ref.startswith("#/")):
            return None  # a remote $ref: nothing to follow here
        node = root
        for step in ref[2:].split("/"):
            step = step.replace("~1", "/").replace("~0", "~")
            node = node.get(step) if isinstance(node, Mapping) else None
    return None if isinstance(node, Mapping) and set(node) == {"$ref"} else node


def _refuse_unheld_markers(root: Mapping[str, Any], held: Mapping[int, object]) -> None:
    def visit(node: Any, where: str) -> None:
        if isinstance(node, Mapping):
            marker = next((k for k in (DISTINCT_KEY, NEAR_KEY) if k in node), None)
            if marker is not None and id(node) not in held:
                raise UserError(
                    f"{marker} at {where} sits where the decoder cannot follow it (under "
                    "oneOf, not, additionalProperties, ...): put it on a list reached through "
                    "properties and items"
                )
            for key, value in node.items():
                visit(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{where}/{i}")

    visit(root, "#")


def _without(node: Any, held: set[int]) -> Any:
    """A copy of `node` with the held lists' distinctness keywords left out."""
    if isinstance(node, Mapping):
        dropped = {"uniqueItems", DISTINCT_KEY, NEAR_KEY} if id(node) in held else set()
        return {k: _without(v, held) for k, v in node.items() if k not in dropped}
    if isinstance(node, list):
        return [_without(v, held) for v in node]
    return node


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _pointer(path: tuple[str, ...]) -> str:
    return "#/" + "/".join(path) if path else "#"


# --- decoding ------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def token_bytes(ll_tokenizer: Any) -> tuple[list[bytes], list[int]]:
    """Every token's bytes, and the tokens with a quote in them (the ones that can close a
    string), computed once per tokenizer."""
    texts = [ll_tokenizer.decode_bytes([t]) for t in range(ll_tokenizer.vocab_size)]
    return texts, [t for t, text in enumerate(texts) if _QUOTE in text]


@dataclass
class _Frame:
    is_list: bool
    key: str | None = None  # an object's current key
    expects_key: bool = True
    seen: dict[DistinctList, set[str]] = field(default_factory=dict)  # a list's items so far


class _Repeat(Exception):
    """A probed token would end a held string on a value its list holds already (or, with
    `near`, on one near such a value)."""


class DistinctTracker:
    """One row's answer so far, read as compact JSON, and which tokens would repeat an item.

    Args:
        lists: the lists held distinct (`hold_distinct`).
        texts: each token's bytes (`token_bytes`).
    """

    def __init__(self, lists: Iterable[DistinctList], texts: list[bytes]):
        self.by_value_path = {held.value_path: held for held in lists}
        self.list_paths = {held.path for held in self.by_value_path.values()}
        self.texts = texts
        self.frames: list[_Frame] = []
        self.in_string = self.escaped = self.is_key = False
        self.raw = bytearray()
        self.writing: tuple[DistinctList, _Frame] | None = None  # a held string in progress
        self.probing = False

    def add(self, token: int) -> None:
        """Read the token the row just took."""
        for byte in self.texts[token]:
            if self.in_string:
                self._string_byte(byte)
            else:
                self._structure_byte(byte)

    def repeats(self, candidates: Iterable[int]) -> list[int]:
        """Of `candidates`, the tokens that would end a held string on a value its list
        already holds (a token may open and close a string at once: `"a"`), or, for an
        enum, write a start that only a value it holds already begins with."""
        if self.held_list_open() is None:
            return []
        return [t for t in candidates if self._would_repeat(t)]

    def held_list_open(self) -> DistinctList | None:
        """The innermost held list the answer is inside and has items in, if any."""
        found: DistinctList | None = None
        path: list[str] = []
        for frame in self.frames:
            if frame.is_list and tuple(path) in self.list_paths:
                held = next((h for h, seen in frame.seen.items() if seen), None)
                found = held or found
            path.append(ITEM if frame.is_list else (frame.key or ""))
        return found

    def _would_repeat(self, token: int) -> bool:
        probe = copy.copy(self)
        probe.frames = [replace(f) for f in self.frames]  # `seen` shared: probes only read it
        probe.raw = bytearray(self.raw)
        if self.writing is not None:  # the same frame, in the probe's copy of the frames
            held, frame = self.writing
            probe.writing = held, probe.frames[_index_of(frame, self.frames)]
        probe.probing = True
        try:
            probe.add(token)
        except _Repeat:
            return True
        return probe.in_string and probe._can_only_repeat()

    def _can_only_repeat(self) -> bool:
        """Whether the held string being written can only become a value held already: an
        enum's start that only such values have, or a string at its maxLength."""
        if self.writing is None:
            return False
        held, frame = self.writing
        seen = frame.seen.get(held, set())
        if held.max_length is not None and len(_decoded(self.raw)) >= held.max_length:
            return repeats_any(same_item_key(_decoded(self.raw)), seen, near=held.near)
        if held.values is None:
            return False
        start = bytes(self.raw)
        return not any(
            json.dumps(v, ensure_ascii=False)[1:-1].encode().startswith(start)
            for v in held.values or ()
            if not repeats_any(same_item_key(v), seen, near=held.near)
        )

    def _string_byte(self, byte: int) -> None:
        if self.escaped:
            self.escaped = False
        elif byte == _BACKSLASH:
            self.escaped = True
        elif byte == _QUOTE:
            self.in_string = False
            self._string_done(_decoded(self.raw))
            return
        self.raw.append(byte)

    def _structure_byte(self, byte: int) -> None:
        top = self.frames[-1] if self.frames else None
        char = chr(byte)
        if char == '"':
            self.in_string, self.raw = True, bytearray()
            self.is_key = top is not None and not top.is_list and top.expects_key
            if not self.is_key:
                self.writing = self._held_here()
        elif char in "{[":
            self.frames.append(_Frame(is_list=char == "["))
        elif char in "}]" and self.frames:
            self.frames.pop()
        elif char == ":" and top is not None:
            top.expects_key = False
        elif char == "," and top is not None and not top.is_list:
            top.key, top.expects_key = None, True

    def _string_done(self, text: str) -> None:
        writing, self.writing = self.writing, None
        if self.is_key:
            self.frames[-1].key = text
        elif writing is not None:
            held, frame = writing
            seen = frame.seen.setdefault(held, set())
            if self.probing and repeats_any(same_item_key(text), seen, near=held.near):
                raise _Repeat
            if not self.probing:
                seen.add(same_item_key(text))

    def _held_here(self) -> tuple[DistinctList, _Frame] | None:
        path = tuple(ITEM if f.is_list else (f.key or "") for f in self.frames)
        held = self.by_value_path.get(path)
        if held is None:
            return None
        return held, self.frames[len(held.path)]


def _index_of(frame: _Frame, frames: list[_Frame]) -> int:
    return next(i for i, f in enumerate(frames) if f is frame)


def _decoded(raw: bytes | bytearray) -> str:
    try:
        value = json.loads(b'"' + bytes(raw) + b'"')
    except ValueError:  # a partial escape or UTF-8 sequence: compare what is there
        return bytes(raw).decode("utf-8", "replace")
    return value if isinstance(value, str) else ""


def ban_repeats(tracker: DistinctTracker, allowed: Any, quote_tokens: list[int]) -> None:
    """Mask out of `allowed` (one row's bool tensor) the tokens that would repeat an item,
    unless that leaves nothing: then the answer's check against the schema decides.

    Free strings can only repeat where they close, so only tokens with a quote are probed;
    where an enum or a maxLength closes the string, every token the grammar allows is,
    when there are at most `MAX_PROBED` of them."""
    held = tracker.held_list_open()
    if held is None:
        return
    width = allowed.shape[0]
    closes_early = held.values is not None or held.max_length is not None
    if closes_early and int(allowed.sum()) <= MAX_PROBED:
        open_ = allowed.nonzero().flatten().tolist()
    else:
        open_ = [t for t in quote_tokens if t < width and bool(allowed[t])]
    banned = tracker.repeats(open_)
    if banned and int(allowed.sum()) > len(banned):
        allowed[banned] = False
