"""Field-level agreement of an answer with a reference answer.

Both are JSON data that validated against the program's output model. Each is flattened
to leaf paths: object keys join with dots, list items share their list's path with `[]`
appended, so an album's song titles all sit at `songs[].title`. At every path the two
sides hold a multiset of leaf values, and a leaf of the answer agrees when an unused leaf
of the reference at the same path equals it: a scalar field is a multiset of one (exact
match), a list matches its items in any order, and a list of objects matches each leaf
path across its items (right titles with wrong lengths earn the titles).

Equal means: strings equal once whitespace runs are collapsed and the ends stripped
(case counts), numbers within a relative tolerance (`rel_tol`, default 1e-6), booleans
and nulls identical; `true` never equals `1`. Matched leaves are true positives, the
answer's other leaves false positives, the reference's other leaves false negatives;
counts add up over paths and answers (micro-averaging). A missing answer (unparsable or
invalid) has no leaves, so every reference leaf is missed.

Pure Python on purpose: it runs on recorded data without a model loaded.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_REL_TOL = 1e-6


@dataclass(frozen=True)
class Counts:
    """Matched, extra and missed leaves, and the precision, recall and F1 they give.

    With nothing on one side the ratio is 1 when the other side is empty too (nothing to
    find, nothing invented) and 0 otherwise, so an empty answer to an empty reference
    agrees fully and a missing answer to a non-empty one scores 0.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp, other_side=self.fn)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn, other_side=self.fp)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


@dataclass(frozen=True)
class Agreement:
    """Counts per leaf path (e.g. `name`, `songs[].title`); `total` sums them."""

    paths: dict[str, Counts] = field(default_factory=dict)

    @property
    def total(self) -> Counts:
        return sum(self.paths.values(), Counts())

    def __add__(self, other: Agreement) -> Agreement:
        paths = dict(self.paths)
        for path, counts in other.paths.items():
            paths[path] = paths.get(path, Counts()) + counts
        return Agreement(paths)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.total.to_dict(),
            "paths": {path: c.to_dict() for path, c in sorted(self.paths.items())},
        }


def agreement(
    answer: Mapping[str, Any] | None,
    reference: Mapping[str, Any],
    *,
    rel_tol: float = DEFAULT_REL_TOL,
) -> Agreement:
    """How far `answer` agrees with `reference`, leaf path by leaf path.

    Args:
        answer: the model's answer as validated JSON data, or None when it had none.
        reference: the reference answer as validated JSON data.
        rel_tol: numbers agree when within this relative tolerance of each other.
    """
    ours = leaf_values(answer) if answer is not None else {}
    theirs = leaf_values(reference)
    paths = {}
    for path in sorted(ours.keys() | theirs.keys()):
        a, r = ours.get(path, []), theirs.get(path, [])
        matched = _matched(a, r, rel_tol)
        paths[path] = Counts(tp=matched, fp=len(a) - matched, fn=len(r) - matched)
    return Agreement(paths)


def combined(agreements: Iterable[Agreement]) -> Agreement:
    """Many answers' agreements added up path by path (micro-averaging)."""
    return sum(agreements, Agreement())


def leaf_values(data: Any, path: str = "") -> dict[str, list[Any]]:
    """Every leaf value of `data` under its path; list items share `path[]`.

    >>> leaf_values({"name": "X", "songs": [{"title": "a"}, {"title": "b"}]})
    {'name': ['X'], 'songs[].title': ['a', 'b']}
    """
    leaves: dict[str, list[Any]] = {}
    if isinstance(data, Mapping):
        for key, value in data.items():
            for sub, values in leaf_values(value, f"{path}.{key}" if path else str(key)).items():
                leaves.setdefault(sub, []).extend(values)
    elif isinstance(data, list):
        for item in data:
            for sub, values in leaf_values(item, f"{path}[]").items():
                leaves.setdefault(sub, []).extend(values)
    else:
        leaves[path] = [data]
    return leaves


def _matched(answer: list[Any], reference: list[Any], rel_tol: float) -> int:
    """The most leaves of `answer` that can be paired with equal leaves of `reference`."""
    numbers_a, others_a = _split_numbers(answer)
    numbers_r, others_r = _split_numbers(reference)
    exact = Counter(map(_key, others_a)) & Counter(map(_key, others_r))
    return sum(exact.values()) + _matched_numbers(numbers_a, numbers_r, rel_tol)


def _split_numbers(values: list[Any]) -> tuple[list[float], list[Any]]:
    # no float(): a model's 400-digit int would overflow it; ints and floats sort together
    numbers = [v for v in values if _is_number(v)]
    return numbers, [v for v in values if not _is_number(v)]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _key(value: Any) -> tuple[str, Any]:
    """A hashable identity under which equal non-number leaves coincide."""
    if isinstance(value, str):
        return ("str", " ".join(value.split()))
    return (type(value).__name__, value)


def _matched_numbers(answer: list[float], reference: list[float], rel_tol: float) -> int:
    """Pairs within tolerance, greedily in sorted order: for a tolerance this small the
    greedy pairing is the largest one."""
    a, r = sorted(answer), sorted(reference)
    i = j = matched = 0
    while i < len(a) and j < len(r):
        if _close(a[i], r[j], rel_tol):
            matched, i, j = matched + 1, i + 1, j + 1
        elif a[i] < r[j]:
            i += 1
        else:
            j += 1
    return matched


def _close(a: float, b: float, rel_tol: float) -> bool:
    try:
        return math.isclose(a, b, rel_tol=rel_tol)
    except OverflowError:  # an int beyond any float: only an equal int agrees
        return a == b


def _ratio(hits: int, total: int, *, other_side: int) -> float:
    if total:
        return hits / total
    return 1.0 if other_side == 0 else 0.0
