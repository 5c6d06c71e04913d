"""What valid answers say, for any schema: a valid answer is not yet a good one.

An album whose five songs share one title, the same album name for every movie, lengths
lifted from the training answers: all schema-valid. These scores walk the answers' JSON
generically (no field is special) and judge valid answers only, since an invalid answer is
already counted as a failure. Strings are compared once normalised (NFKC, case-folded,
punctuation dropped, whitespace collapsed: `constrain.distinct.same_item_key`, the key the
decoder's distinct ban uses), so "The City" and "the city!" are one value; paths are those
of `agreement.leaf_values` (`songs[].title`).

- Distinct list items: in every list of strings or of objects (an object stands for its
  string leaves, or for its JSON where it has none: a song is its title, whatever its
  length), an item repeats when it equals an earlier item of its list, or is near one
  (`constrain.distinct.near_duplicate`: difflib ratio at least 0.9 and the same numbers in
  it: "Track 1" and "Track 2" stay apart). An answer's distinct ratio is its distinct items
  over its items, all its lists pooled; `all_distinct` counts answers with no repeat.
- Constant values: per path, the most common string or number (booleans and nulls left
  out) over all answers' values there, and its share: `name` at 0.57 means 57% of the
  albums carry one name; 277 in 20 of 128 `songs[].length_seconds` is 0.16. Only paths
  filled by two answers or more. A field with few allowed values (an enum) is constant by
  nature: read it per path.
- Echoed values: answers in which one string fills two different paths (an album named
  after one of its songs).
- Copied values: given the training answers, the share of the answers' non-empty leaf
  strings found verbatim (whitespace collapsed) among the training answers' leaf strings.
- Valid but wrong: given a reference answer per input, the valid answers that disagree
  with it somewhere (`agreement` finds an extra or a missed leaf), over the valid answers
  that have a reference: the rate that validity hides.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from structune.constrain.distinct import near_duplicate, same_item_key
from structune.evaluate.agreement import Agreement, leaf_values


@dataclass(frozen=True)
class TopValue:
    """A path's most common value: `count` of the `total` values there.

    Attributes:
        in_training: the value also fills this path in a training answer; None when the
            training answers are not known.
    """

    value: Any
    count: int
    total: int
    in_training: bool | None = None

    @property
    def share(self) -> float:
        return self.count / self.total if self.total else 0.0


@dataclass(frozen=True)
class ContentScores:
    """Content scores of one model's answers; see the module docstring.

    Attributes:
        answers: valid answers, the ones judged.
        with_lists: of them, answers with a non-empty list of strings or objects.
        all_distinct: of those, answers in which no list item repeats another.
        distinct_ratio: the mean over `with_lists` answers of distinct items / items.
        repeated_exact: list items equal to an earlier item of their list (normalised).
        repeated_near: list items only near an earlier item of their list.
        echoed: answers in which one string fills two different paths.
        top_values: per path filled by two answers or more, its most common value.
        strings: non-empty leaf strings in the answers.
        copied: of them, the ones found in the training answers; None without them.
        judged: valid answers with a reference answer; None without references.
        wrong: of them, the ones that disagree with their reference somewhere.
    """

    answers: int = 0
    with_lists: int = 0
    all_distinct: int = 0
    distinct_ratio: float | None = None
    repeated_exact: int = 0
    repeated_near: int = 0
    echoed: int = 0
    top_values: dict[str, TopValue] = field(default_factory=dict)
    strings: int = 0
    copied: int | None = None
    judged: int | None = None
    wrong: int | None = None

    @property
    def constant(self) -> tuple[str, TopValue] | None:
        """The path whose most common value has the largest share (the first by name on a
        tie), or None when no path is filled by two answers."""
        if not self.top_values:
            return None
        return max(sorted(self.top_values.items()), key=lambda item: item[1].share)

    @property
    def all_distinct_rate(self) -> float | None:
        """The share of answers with lists in which no item repeats."""
        return self.all_distinct / self.with_lists if self.with_lists else None

    @property
    def constant_share(self) -> float | None:
        """The largest share of one value at one path (see `constant`)."""
        return self.constant[1].share if self.constant else None

    @property
    def echoed_rate(self) -> float | None:
        return self.echoed / self.answers if self.answers else None

    @property
    def copied_rate(self) -> float | None:
        return self.copied / self.strings if self.copied is not None and self.strings else None

    @property
    def wrong_rate(self) -> float | None:
        """Valid but wrong, as a share of the valid answers with a reference."""
        return self.wrong / self.judged if self.wrong is not None and self.judged else None

    def to_dict(self) -> dict[str, Any]:
        constant = self.constant
        return {
            **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "top_values"},
            "top_values": {
                path: {**vars(top), "share": top.share}
                for path, top in sorted(self.top_values.items())
            },
            "constant": {"path": constant[0], "share": constant[1].share} if constant else None,
            "all_distinct_rate": self.all_distinct_rate,
            "echoed_rate": self.echoed_rate,
            "copied_rate": self.copied_rate,
            "wrong_rate": self.wrong_rate,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContentScores:
        """The scores `to_dict` wrote (its derived entries ignored)."""
        names = {f.name for f in fields(cls)} - {"top_values"}
        tops = {
            path: TopValue(t["value"], t["count"], t["total"], t.get("in_training"))
            for path, t in data.get("top_values", {}).items()
        }
        return cls(**{k: v for k, v in data.items() if k in names}, top_values=tops)


def content_scores(
    answers: Sequence[Any | None],
    *,
    training_answers: Sequence[Any] | None = None,
    agreements: Sequence[Agreement | None] | None = None,
) -> ContentScores:
    """Score the content of one model's answers, one per input.

    Args:
        answers: each valid answer as JSON data; None for an answer that is not valid.
        training_answers: the answers the model was trained on, as JSON data, for the
            copied share and whether a most common value came from them.
        agreements: each answer's agreement with its input's reference answer (None where
            the input has none), for the valid-but-wrong count.
    """
    valid = [a for a in answers if a is not None]
    repeats = [r for r in map(_list_repeats, valid) if r[0]]
    training = [leaf_values(t) for t in training_answers] if training_answers is not None else None
    strings = [s for a in valid for s in _strings(a)]
    known = {_verbatim(s) for t in training or () for s in _strings_of(t)}
    wrong = (
        valid_but_wrong([a is not None for a in answers], agreements)
        if agreements is not None
        else None
    )
    return ContentScores(
        answers=len(valid),
        with_lists=len(repeats),
        all_distinct=sum(exact + near == 0 for _, exact, near in repeats),
        distinct_ratio=(
            sum((n - exact - near) / n for n, exact, near in repeats) / len(repeats)
            if repeats
            else None
        ),
        repeated_exact=sum(exact for _, exact, _ in repeats),
        repeated_near=sum(near for _, _, near in repeats),
        echoed=sum(map(_echoes, valid)),
        top_values=_top_values(valid, training),
        strings=len(strings),
        copied=sum(_verbatim(s) in known for s in strings) if training is not None else None,
        judged=wrong[1] if wrong is not None else None,
        wrong=wrong[0] if wrong is not None else None,
    )


def valid_but_wrong(
    valid: Sequence[bool], agreements: Sequence[Agreement | None]
) -> tuple[int, int]:
    """(wrong, judged): of the valid answers whose input has a reference (`judged`), those
    whose agreement with it has an extra or a missed leaf."""
    judged = [a for ok, a in zip(valid, agreements, strict=True) if ok and a is not None]
    return sum(bool(a.total.fp or a.total.fn) for a in judged), len(judged)


# Table columns and their widths; `wrong|valid` and `copied` appear only where some model
# has a reference or training answers.
COLUMNS: dict[str, int] = {
    "wrong|valid": 11,  # valid answers that disagree with their reference / those judged
    "all-distinct": 12,  # answers whose list items are all distinct / answers with lists
    "distinct": 8,  # mean distinct ratio of list items
    "const": 6,  # the largest share of one value at one path
    "echo": 7,  # answers with one string in two fields / valid answers
    "copied": 6,  # share of leaf strings found in the training answers
}


def table_columns(contents: Iterable[ContentScores | None]) -> list[str]:
    """The content columns a table of these models' scores shows."""
    present = [c for c in contents if c is not None]
    if not present:
        return []
    wrong = ["wrong|valid"] if any(c.judged is not None for c in present) else []
    copied = ["copied"] if any(c.copied is not None for c in present) else []
    return [*wrong, "all-distinct", "distinct", "const", "echo", *copied]


def table_cells(content: ContentScores | None, names: Sequence[str]) -> list[str]:
    """One model's values in the columns `names`; "-" where it has none."""
    if content is None:
        return ["-"] * len(names)
    c = content
    values = {
        "wrong|valid": f"{c.wrong}/{c.judged}" if c.judged is not None else "-",
        "all-distinct": f"{c.all_distinct}/{c.with_lists}" if c.with_lists else "-",
        "distinct": _two_places(c.distinct_ratio),
        "const": _two_places(c.constant_share),
        "echo": f"{c.echoed}/{c.answers}" if c.answers else "-",
        "copied": _two_places(c.copied_rate),
    }
    return [values[n] for n in names]


def _two_places(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def table_header(names: Sequence[str]) -> str:
    return "".join(f" {n:>{COLUMNS[n]}}" for n in names)


def table_row(content: ContentScores | None, names: Sequence[str]) -> str:
    return "".join(
        f" {cell:>{COLUMNS[n]}}" for n, cell in zip(names, table_cells(content, names), strict=True)
    )


def _list_repeats(data: Any) -> tuple[int, int, int]:
    """(items, exact repeats, near repeats) over the answer's lists of strings or objects."""
    items = exact = close = 0
    for keys in filter(None, map(_item_keys, _lists(data))):
        seen: list[tuple[str, bool]] = []
        for key in keys:
            if key in seen:
                exact += 1
            elif key[1] and any(fuzzy and near_duplicate(key[0], text) for text, fuzzy in seen):
                close += 1
            seen.append(key)
        items += len(keys)
    return items, exact, close


def _lists(data: Any) -> Iterator[list[Any]]:
    if isinstance(data, Mapping):
        for value in data.values():
            yield from _lists(value)
    elif isinstance(data, list):
        yield data
        for item in data:
            yield from _lists(item)


def _item_keys(items: list[Any]) -> list[tuple[str, bool]] | None:
    """Each item as (text to compare, whether nearness applies); None for a list that is
    neither all strings nor all objects (numbers may repeat by right)."""
    if items and all(isinstance(i, str) for i in items):
        return [(same_item_key(i), True) for i in items]
    if items and all(isinstance(i, Mapping) for i in items):
        keys = []
        for item in items:
            texts = [same_item_key(s) for s in _strings_of(leaf_values(item))]
            keys.append(
                (" | ".join(texts), True) if texts else (json.dumps(item, sort_keys=True), False)
            )
        return keys
    return None


def _strings(data: Any) -> list[str]:
    return _strings_of(leaf_values(data))


def _strings_of(leaves: Mapping[str, list[Any]]) -> list[str]:
    """The non-empty string leaves, in path order."""
    return [
        v
        for _, values in sorted(leaves.items())
        for v in values
        if isinstance(v, str) and v.strip()
    ]


def _verbatim(text: str) -> str:
    return " ".join(text.split())


def _echoes(data: Any) -> bool:
    paths: dict[str, set[str]] = {}
    for path, values in leaf_values(data).items():
        for v in values:
            if isinstance(v, str) and same_item_key(v):
                paths.setdefault(same_item_key(v), set()).add(path)
    return any(len(p) > 1 for p in paths.values())


def _top_values(
    answers: list[Any], training: list[dict[str, list[Any]]] | None
) -> dict[str, TopValue]:
    counts: dict[str, Counter[Any]] = {}
    filled: Counter[str] = Counter()
    first: dict[tuple[str, Any], Any] = {}
    for answer in answers:
        for path, values in leaf_values(answer).items():
            keys = [(_value_key(v), v) for v in values if _value_key(v) is not None]
            if keys:
                filled[path] += 1
            for key, value in keys:
                counts.setdefault(path, Counter())[key] += 1
                first.setdefault((path, key), value)
    tops = {}
    for path, counter in counts.items():
        if filled[path] < 2:
            continue
        key, count = counter.most_common(1)[0]
        in_training = (
            any(key in map(_value_key, t.get(path, ())) for t in training)
            if training is not None
            else None
        )
        tops[path] = TopValue(first[path, key], count, sum(counter.values()), in_training)
    return tops


def _value_key(value: Any) -> Any:
    """What two equal values share: a normalised string, or the number itself (277 and
    277.0 are equal and hash alike; no float(), which overflows on a model's 400-digit
    int); None for booleans and nulls, which are left out."""
    if isinstance(value, str):
        return ("str", same_item_key(value))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return ("num", value)
    return None
