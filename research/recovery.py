"""Training answers that go on well after a list gone wrong: a cure for exposure bias.

Trained on the teacher's answers alone, a student only ever continues a perfect list. Yet
decoding freely, every citation student wrote its own imperfect version of a 13-item list
(a work left out, written twice or moved), and some then looped to the token budget
instead of closing, although teacher-forced each closed the teacher's list with
probability 0.87-0.98 (docs/citation-student.md, "The held-out F1 is one answer's").

A recovery example answers a recorded conversation anew: a prefix of its JSON list with
one such mistake written in, then the rest of the teacher's list from the item after the
prefix's last, and the close. The prefix is given, not learned (the final message's
`learn_from`, `structune.train.data`): the student learns what to write after a mistake,
not to make it. This is DAgger's idea with the mistakes drawn by hand rather than sampled
from the student, so that no decoding pass over the training set is needed. Measured on
the citation student (docs/citation-student.md, "Recovery answers"), 48 of them made the
13-item answer parse and close in three of the four runs that used them, where before
it did in five of ten.

`corrected_conversation` is the other half of DAgger: the mistake is the student's own, read
from its answer to a context it never trained on, and the teacher's list goes on from it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from structune.messages import Message
from structune.program import canonical_json

MISTAKES = ("left out", "written twice", "moved")
# What a student's first mistake in a list is, as `corrected_conversation` reads it: an item
# the teacher's list does not hold, one the teacher writes further on (those before it left
# out), one it wrote already, the close before the teacher's list ends, or text that stops
# parsing as the list (malformed, or cut off by the token budget).
STUDENT_MISTAKES = ("not in the list", "left out", "written twice", "closed early", "broken")
_MARK = "structune: the given items end here"


def recovery_conversations(
    conversations: Sequence[Sequence[Message]],
    *,
    count: int,
    min_items: int = 4,
    seed: int = 0,
) -> list[list[Message]]:
    """`count` conversations drawn at random from those whose answer is a JSON object with a
    list of at least `min_items` items, each answered anew: a prefix of the list ending at
    one of its items, with a mistake of `MISTAKES` before that item (given: its final
    message's `learn_from` lies after it), then the list's items after that one and the
    close (learned). Half the prefixes end at the list's last item, so that what is learned
    is the close itself, where students looped; the others anywhere from the second.
    Answers without such a list are not drawn."""
    rng = random.Random(seed)
    drawable = [
        (list(c[:-1]), answer, key)
        for c in conversations
        if (answer := _json_object(c[-1]["content"])) is not None
        and (key := _longest_list(answer, min_items)) is not None
    ]
    if not drawable:
        return []
    made = []
    for prompt, answer, key in (rng.choice(drawable) for _ in range(count)):
        items = answer[key]
        end = len(items) if rng.random() < 0.5 else rng.randint(2, len(items) - 1)
        given = _with_a_mistake(items[:end], rng)
        recovered: Message = {
            "role": "assistant",
            "content": canonical_json({**answer, key: given + items[end:]}),
            "learn_from": _given_end(answer, key, given),
        }
        made.append([*prompt, recovered])
    return made


@dataclass(frozen=True)
class Correction:
    """A teacher's answer written on from a student's first mistake: `conversation` to train
    on, and what the mistake was (one of `STUDENT_MISTAKES`)."""

    conversation: list[Message]
    mistake: str


def corrected_conversation(
    conversation: Sequence[Message], student: str, *, worded: Collection[str] = ("desc",)
) -> Correction | None:
    """The teacher's recorded `conversation` answered anew from the student's first mistake
    in its answer `student` to the same prompt, or None where the student wrote the
    teacher's list (items told apart by all their fields but the `worded` ones, which a
    student may word otherwise: a citation's `desc`) or the teacher's answer holds no list.

    The student's items up to and with its mistaken one are given (`learn_from`), then the
    teacher's list goes on as `recovery_conversations` does: from the item the student left
    out where its item is not in the list or written already, from after the student's item
    where it skipped ahead to it. Where the student closed early or its text broke, its
    right items are given and the teacher's others learned: the mistake lies in text that
    no item holds. Where no item of the student's is right before that, the teacher's whole
    answer is learned. The list is read where canonical JSON opens the teacher's first list
    field (`{"citations":[`), so a field written before it reads as broken text."""
    answer = _json_object(conversation[-1]["content"])
    key = next((k for k, v in (answer or {}).items() if isinstance(v, list)), None)
    if answer is None or key is None:
        return None
    teacher = answer[key]
    written, closed = _items_written(student, key)
    same = partial(_same, worded=worded)
    at = 0  # the teacher's next item
    for n, item in enumerate(written):
        if at < len(teacher) and same(item, teacher[at]):
            at += 1
            continue
        later = next((j for j in range(at + 1, len(teacher)) if same(item, teacher[j])), None)
        if later is not None:
            mistake, at = "left out", later + 1
        elif any(same(item, t) for t in teacher[:at]):
            mistake = "written twice"
        else:
            mistake = "not in the list"
        return _written_on(conversation, answer, key, written[: n + 1], teacher[at:], mistake)
    if closed and at == len(teacher):
        return None
    mistake = "closed early" if closed else "broken"
    return _written_on(conversation, answer, key, written, teacher[at:], mistake)


def _written_on(
    conversation: Sequence[Message],
    answer: dict[str, Any],
    key: str,
    given: list[Any],
    rest: list[Any],
    mistake: str,
) -> Correction:
    corrected: Message = {
        "role": "assistant",
        "content": canonical_json({**answer, key: given + rest}),
    }
    if given:
        corrected["learn_from"] = _given_end(answer, key, given)
    return Correction([*conversation[:-1], corrected], mistake)


def _items_written(text: str, key: str) -> tuple[list[Any], bool]:
    """The items of the list under `key` in a student's JSON `text` as far as they parse,
    and whether the list closed after them. The student learned canonical JSON, so the list
    is looked for where canonical JSON opens it."""
    at = len(head := canonical_json({key: []})[:-2])
    if not text.startswith(head):
        return [], False
    decoder = json.JSONDecoder()
    items: list[Any] = []
    while not text.startswith("]", at):
        try:
            item, at = decoder.raw_decode(text, at)
        except ValueError:
            return items, False
        items.append(item)
        if not text.startswith(",", at):
            return items, text.startswith("]", at)
        at += 1
    return items, not items  # "[]" closes; "[...,]" does not parse


def _same(written: Any, teacher: Any, *, worded: Collection[str]) -> bool:
    """Whether a student's item is the teacher's: equal, objects in all but `worded` fields
    (as strings: a year written "2020" is the year 2020)."""
    if not (isinstance(written, dict) and isinstance(teacher, dict)):
        return bool(written == teacher)
    fields = (teacher.keys() | written.keys()) - set(worded)
    return all(str(written.get(f)) == str(teacher.get(f)) for f in fields)


def _with_a_mistake(items: list[Any], rng: random.Random) -> list[Any]:
    """`items` with one mistake before their last item, which stays last."""
    *before, last = items
    mistake = rng.choice(MISTAKES if len(before) >= 2 else MISTAKES[:2])
    at = rng.randrange(len(before))
    if mistake == "left out":
        del before[at]
    elif mistake == "written twice":
        before.insert(rng.randint(at + 1, len(before)), before[at])
    else:  # moved: after the item that follows it
        at = min(at, len(before) - 2)
        before[at], before[at + 1] = before[at + 1], before[at]
    return [*before, last]


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _longest_list(answer: dict[str, Any], min_items: int) -> str | None:
    lists = [(len(v), k) for k, v in answer.items() if isinstance(v, list) and len(v) >= min_items]
    return max(lists)[1] if lists else None


def _given_end(answer: dict[str, Any], key: str, given: list[Any]) -> int:
    """Where the answer's text leaves the given items: the end of the last one, before the
    comma or bracket that follows it (the student's decision: go on or close)."""
    marked = canonical_json({**answer, key: [*given, _MARK]})
    return marked.index("," + json.dumps(_MARK))
