"""The Lark text of values copied from a source: spans, pattern matches, ordered lists.

`extractive_grammar` walks a schema and decides where a copy stands; this module writes the
copy. A span is `%regex {"substring_chunks": [...]}` over the source's pieces
(`extractive.pieces`), each JSON-escaped on its own: escaping is per character, so a run of
escaped chunks is exactly the escaped run, and quotes, backslashes, control characters and
non-ASCII text in the source come out as valid JSON (non-ASCII raw, as llguidance's JSON
grammar writes it).

A marker with a `pattern` is written as the source's runs that match it, one literal each
(`_matching_runs`: runs of up to `MAX_PATTERN_PIECES` pieces, checked with Python's `re`,
so the grammar and the check afterwards agree exactly).

A list of `ordered` items is written piece by piece instead (`ordered_rules`): each item is
a span starting after the previous one ends, so the list follows the source, can repeat a
value only where the source repeats it, and cannot loop. Its grammar grows with the source
(a rule per piece; `benchmarks/extractive_grammar.py` times it), so sources past
`MAX_ORDERED_PIECES` are refused.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Mapping, Sequence

from structune.constrain.extractive import Extracted, Mode, pieces

MAX_ORDERED_PIECES = 2_000
"""The most source pieces (words, spaces, punctuation: ~850 words of a paper) an ordered
list is decoded over. Its grammar has a rule per piece, and the engine recurses along them
when it starts a matcher: ~2,800 pieces overflow an 8 MB stack (a crash, not an error)."""

MAX_PATTERN_PIECES = 16
"""The longest run of source pieces (words, spaces, punctuation) a marker's `pattern` is
tried on in words mode (a surname with its particles, "van der Maaten", is 5): every start
times every length is checked in Python."""
MAX_PATTERN_CHARS = 128
"""The same in chars mode, where a piece is one character."""


def seq(*parts: str) -> str:
    """The Lark sequence of `parts`, leaving out the empty ones."""
    return " ".join(p for p in parts if p)


def substring_regex(text: str, mode: Mode) -> str:
    """A terminal body matching any run of `text`'s pieces, JSON-escaped."""
    escaped = [p.translate(_ESCAPES) for p in pieces(text, mode)]  # json.dumps is 10x slower
    return "%regex " + json.dumps({"substring_chunks": escaped}, ensure_ascii=False)


def matching_literals(units: Sequence[str | None], marker: Extracted) -> list[str]:
    """The source's runs that match the marker's pattern, each as a JSON-escaped Lark
    literal, sorted; none when no run matches."""
    runs = _matching_runs(units, marker)
    copies = sorted({copy for ends in runs.values() for copy in ends.values()})
    return [json.dumps(c.translate(_ESCAPES), ensure_ascii=False) for c in copies]


def source_units(sources: Mapping[str, str], names: Sequence[str], mode: Mode) -> list[str | None]:
    """The pieces of the named sources in order, a None barrier after each text."""
    units: list[str | None] = []
    for name in names:
        units += pieces(sources[name], mode)
        units.append(None)
    return units


def ordered_rules(
    marker: Extracted, units: Sequence[str | None], prefix: str, opening: str, closing: str
) -> tuple[list[str], str]:
    """The rules of a list whose items are spans of `units` in their order, named after
    `prefix`, and the list's first item ("" when no item can be copied). `opening` and
    `closing` wrap each span into an object (`extractive_grammar`'s ordered objects).

    One rule set per source position keeps the grammar linear in the source: `s{i}`
    starts an item at a piece at or after i, `c{j}` copies piece j or closes the item
    after piece j-1, `t{j}` ends the list or opens the next item at or after j. Items
    start and end on a piece that is not whitespace, so none is empty; each one
    consumes a piece, so the list cannot loop. Texts of several sources are joined
    with a barrier that no item crosses. With a `pattern`, an item is one of the runs
    that match it instead (`_matching_rules`).
    """
    if marker.pattern is not None:
        return _matching_rules(marker, units, prefix, opening, closing)
    return _piece_rules(units, prefix, opening, closing)


def _piece_rules(
    raw: Sequence[str | None],
    prefix: str,
    opening: str,
    closing: str,
) -> tuple[list[str], str]:
    """The rules of an ordered list copied piece by piece, and its first item."""
    units = [u.translate(_ESCAPES) if u is not None else None for u in raw]
    blank = [u is None or not u.strip() for u in units]
    n = len(units)
    # next_start[i]: the first piece at or after i that an item can start on.
    next_start: list[int | None] = [None] * (n + 1)
    for i in range(n - 1, -1, -1):
        next_start[i] = i if not blank[i] else next_start[i + 1]
    # closable[j]: after copying piece j-1, the item can still be closed, now or later.
    closable = [False] * (n + 1)
    for j in range(n, 0, -1):
        closable[j] = not blank[j - 1] or (j < n and units[j] is not None and closable[j + 1])
    rules: list[str] = []

    def start(i: int | None) -> str:
        return seq(opening, f'"\\"" {prefix}_s{i}') if i is not None else ""

    for i in range(n):
        if next_start[i] == i:
            later = next_start[i + 1]
            alternatives = [f"{json.dumps(units[i], ensure_ascii=False)} {prefix}_c{i + 1}"]
            if later is not None:
                alternatives.append(f"{prefix}_s{later}")
            rules.append(f"{prefix}_s{i}: {' | '.join(alternatives)}")
    for j in range(1, n + 1):
        if not closable[j]:
            continue
        alternatives = []
        if j < n and units[j] is not None and closable[j + 1]:
            alternatives.append(f"{json.dumps(units[j], ensure_ascii=False)} {prefix}_c{j + 1}")
        if not blank[j - 1]:
            alternatives.append(f'"\\"" {prefix}_t{j}')
        rules.append(f"{prefix}_c{j}: {' | '.join(alternatives)}")
        if not blank[j - 1]:
            rules.append(f"{prefix}_t{j}: {_then(closing, start(next_start[j]))}")
    return rules, start(next_start[0])


def _matching_rules(
    marker: Extracted,
    raw: Sequence[str | None],
    prefix: str,
    opening: str,
    closing: str,
) -> tuple[list[str], str]:
    """The rules of an ordered list whose items match the marker's pattern, and its
    first item: `s{k}` is the k-th piece a matching run starts on (copy one of its
    runs, or skip to the next start), `t{j}` follows a run that ends before piece j."""
    runs = _matching_runs(raw, marker)
    starts = sorted(runs)

    def start(at: int) -> str:
        k = bisect.bisect_left(starts, at)
        return seq(opening, f'"\\"" {prefix}_s{k}') if k < len(starts) else ""

    rules = []
    for k, i in enumerate(starts):
        alternatives = [
            f'{json.dumps(copy.translate(_ESCAPES), ensure_ascii=False)} "\\"" {prefix}_t{j}'
            for j, copy in runs[i].items()
        ]
        if k + 1 < len(starts):
            alternatives.append(f"{prefix}_s{k + 1}")
        rules.append(f"{prefix}_s{k}: {' | '.join(alternatives)}")
    for j in sorted({j for ends in runs.values() for j in ends}):
        rules.append(f"{prefix}_t{j}: {_then(closing, start(j))}")
    return rules, start(0)


def _then(closing: str, more: str) -> str:
    """What follows an item of an ordered list: its `closing`, then the list's end or,
    where another item can start, a comma and `more`."""
    tail = f'"]" | "," {more}' if more else '"]"'
    return seq(closing, f"({tail})")


def _matching_runs(units: Sequence[str | None], marker: Extracted) -> dict[int, dict[int, str]]:
    """start → {end: text} of the runs `units[start:end]` whose text matches the marker's
    pattern: at most `MAX_PATTERN_PIECES` pieces (`MAX_PATTERN_CHARS` in chars mode),
    starting and ending on a piece that is not whitespace, within one source text."""
    pattern = re.compile(marker.pattern or "")
    longest = MAX_PATTERN_CHARS if marker.mode == "chars" else MAX_PATTERN_PIECES
    runs: dict[int, dict[int, str]] = {}
    for i, first in enumerate(units):
        if first is None or not first.strip():
            continue
        text = ""
        for j in range(i, min(i + longest, len(units))):
            unit = units[j]
            if unit is None:
                break
            text += unit
            if unit.strip() and pattern.fullmatch(text):
                runs.setdefault(i, {})[j + 1] = text
    return runs


# How JSON writes a character inside a string (as `json.dumps` does); others stay as they are.
_ESCAPES = {c: f"\\u{c:04x}" for c in range(0x20)} | {
    ord('"'): '\\"',
    ord("\\"): "\\\\",
    ord("\b"): "\\b",
    ord("\f"): "\\f",
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}
