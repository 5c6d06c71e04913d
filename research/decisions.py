"""Where a JSON answer decides its own length: each list's open, continue and close.

Most tokens of a structured answer are copied or follow from the format; a few decide how
many items a list holds: the character after `[` (an item, or `]` for an empty list), and
after each item the `,` that continues the list or the `]` that closes it. Each is one token
of hundreds, so the mean loss barely sees it, and a small student that has learned the rest
still stops a list early or repeats its items (the citation student of
`benchmarks/rag_citations.py` did both). `finetune(..., tokenize=DecisionWeights(w))`
weighs these tokens w times in the loss; the loss a run reports is then that weighted one.
Measured there, a weight of 10 made the open decision sharp and the student worse:
continues outnumber closes about 2 to 1 in its answers, and it learned to never close a
citing list (docs/citation-student.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from structune.errors import UserError
from structune.messages import Message
from structune.models.chat import chat_token_ids
from structune.train.data import TokenizedExample, split_training_chat, tokenize_conversation


def list_decisions(answer: str) -> list[int]:
    """Character offsets in `answer` (JSON text) of each list's decisions: the first
    character after every `[`, and every `,` and `]` that ends a list item. Text that is not
    JSON gives the decisions found up to where it stops being JSON (none for plain text)."""
    decisions: list[int] = []
    open_lists: list[bool] = []  # one per open container: True for a list, False an object
    in_string = escaped = after_open = False
    for offset, char in enumerate(answer):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char.isspace():
            continue
        if after_open:  # the first character after `[`: the list's first decision
            decisions.append(offset)
            after_open = False
        elif char in ",]" and open_lists and open_lists[-1]:
            decisions.append(offset)
        if char == '"':
            in_string = True
        elif char in "[{":
            open_lists.append(char == "[")
            after_open = char == "["
        elif char in "]}":
            if not open_lists:
                break  # not JSON from here on
            open_lists.pop()
    return decisions


def token_weights(
    offsets: Sequence[tuple[int, int]], decisions: Sequence[int], weight: float
) -> list[float]:
    """`weight` for each token whose character span `(start, end)` holds a decision, 1.0 for
    the others."""
    targets = sorted(decisions)
    weights = []
    next_target = 0
    for start, end in offsets:
        while next_target < len(targets) and targets[next_target] < start:
            next_target += 1
        holds = next_target < len(targets) and targets[next_target] < end
        weights.append(weight if holds else 1.0)
    return weights


@dataclass(frozen=True)
class DecisionWeights:
    """A `finetune` tokenizer (`structune.train.data.ExampleTokenizer`): the usual training
    example, with each answer token that holds a list decision weighing `weight` in the
    loss and every other token 1.0."""

    weight: float

    def __post_init__(self) -> None:
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise UserError(f"a decision weight must be a positive number, got {self.weight}")

    def __call__(
        self, tokenizer: Any, messages: Sequence[Message], *, max_length: int
    ) -> TokenizedExample:
        example = tokenize_conversation(tokenizer, messages, max_length=max_length)
        if self.weight == 1.0:
            return example
        chat, answer_start = split_training_chat(tokenizer, messages)
        prompt_tokens = len(chat_token_ids(tokenizer, chat, end=answer_start))
        weights = _answer_weights(
            tokenizer,
            chat.text[answer_start:],
            example.input_ids[prompt_tokens:],
            messages[-1]["content"],
            self.weight,
        )
        if weights is None:
            raise UserError(
                "decision weights need a fast tokenizer that tokenizes the answer as training "
                "does and a chat template that writes the answer as it is; train this model "
                "without them"
            )
        return replace(example, weights=[1.0] * prompt_tokens + weights)


def _answer_weights(
    tokenizer: Any, answer_text: str, answer_ids: list[int], content: str, weight: float
) -> list[float] | None:
    """A weight per answer token: `weight` where it holds a list decision, else 1.0; None
    where the tokens' character spans cannot be known."""
    start = answer_text.find(content)
    if not getattr(tokenizer, "is_fast", False) or start < 0:
        return None
    encoded = tokenizer(answer_text, add_special_tokens=False, return_offsets_mapping=True)
    if encoded["input_ids"][: len(answer_ids)] != answer_ids:
        return None  # a content with control-token text, tokenized in pieces (chat_token_ids)
    decisions = [start + offset for offset in list_decisions(content)]
    return token_weights(encoded["offset_mapping"][: len(answer_ids)], decisions, weight)
