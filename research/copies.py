"""Answer strings copied from the prompt, tokenized as the prompt tokenizes them.

A byte-level BPE tokenizer may cut a word differently after a space and after a quote: the
context's " Liang (2021)" is ' Li', 'ang', but the answer's `"author":"Liang"` is 'L',
'iang'. A student copying such an author does not copy tokens, it spells the name again in
other pieces, and a 135M citation student spelled the names it had seen in training and
went wrong on new ones at the first piece: 'L' for the "Li" of "Li & Liang (2021)", then
another L-name (`benchmarks/author_tokens.py`, docs/citation-student.md).

`finetune(..., tokenize=aligned_copies)` trains on another tokenization of the same answer text:
each JSON string value that stands in the prompt after a space is cut as the prompt cuts it
(' Li', 'ang'), its first piece without the space ('Li', 'ang'), so that a copy is the
prompt's pieces, the first without its space. The answer decodes to the same characters, so
nothing changes for its reader, and decoding, plain or under a grammar (llguidance takes any
tokenization of the text it allows), needs nothing new. With SmolLM2's tokenizer the two
cuts seldom differ: the first piece without its space is mostly cut as the answer cuts it
anyway, and a name after a bracket, "(Gliwa", is cut alike in both: 43 of the 1,515 authors
of the citation student's training answers are cut anew (`benchmarks/rag_citations.py
--aligned-copies` prints the count). A given answer prefix (`learn_from`) is refused: it is
located in the answer's usual tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from structune.errors import UserError
from structune.messages import Message
from structune.models.chat import RenderedChat, chat_token_ids
from structune.train.data import (
    IGNORE_INDEX,
    TokenizedExample,
    split_training_chat,
    tokenize_conversation,
)

# A JSON string and the character after it (and spaces): a key where that is ':'.
_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"\s*(:?)')


def copied_values(answer: str, prompt: str) -> list[tuple[int, int]]:
    """Character spans in `answer` (JSON text) of the string values, keys left out, that the
    prompt holds after a space, written without escapes (so the JSON text is the value)."""
    spans = []
    for match in _JSON_STRING.finditer(answer):
        value, is_key = match.group(1), match.group(2)
        if value and not is_key and "\\" not in value and f" {value}" in prompt:
            spans.append(match.span(1))
    return spans


def copy_token_ids(tokenizer: Any, value: str) -> list[int]:
    """`value` cut as the tokenizer cuts it after a space, the first piece without the
    space: the same characters in the tokens a copy from the prompt reads."""
    after_space = tokenizer(f" {value}", add_special_tokens=False)["input_ids"]
    first = tokenizer.decode(after_space[:1])
    if not first.startswith(" "):  # a tokenizer that does not keep the space in the piece
        ids: list[int] = tokenizer(value, add_special_tokens=False)["input_ids"]
        return ids
    head = tokenizer(first[1:], add_special_tokens=False)["input_ids"] if first[1:] else []
    return head + after_space[1:]


def aligned_copies(
    tokenizer: Any, messages: Sequence[Message], *, max_length: int
) -> TokenizedExample:
    """A `finetune` tokenizer (`structune.train.data.ExampleTokenizer`): the usual training
    example with the answer's copied string values cut as the prompt cuts them."""
    if "learn_from" in messages[-1]:
        raise UserError("a given answer prefix (learn_from) cannot train with aligned copies")
    usual = tokenize_conversation(tokenizer, messages, max_length=max_length)
    chat, answer_start = split_training_chat(tokenizer, messages)
    prompt_ids = chat_token_ids(tokenizer, chat, end=answer_start)
    answer_ids = _aligned_answer_ids(
        tokenizer, chat, answer_start, messages[-1]["content"], usual.input_ids[len(prompt_ids) :]
    )
    if len(prompt_ids) + len(answer_ids) > max_length:
        raise UserError(
            f"a training example is {len(prompt_ids) + len(answer_ids)} tokens with its copies "
            f"aligned, over max_length={max_length}; raise max_length"
        )
    return TokenizedExample(prompt_ids + answer_ids, [IGNORE_INDEX] * len(prompt_ids) + answer_ids)


def _aligned_answer_ids(
    tokenizer: Any, chat: RenderedChat, answer_start: int, content: str, usual: list[int]
) -> list[int]:
    """The answer's token ids, up to end-of-turn, with its copied string values cut as the
    prompt cuts them; `usual` (the answer's own ids) where the answer is not found as
    written or would decode otherwise."""
    start = chat.text.find(content, answer_start)
    if start < 0:
        return usual
    ids: list[int] = []
    cut = answer_start
    for a, b in copied_values(content, chat.text[:answer_start]):
        ids += chat_token_ids(tokenizer, chat, start=cut, end=start + a)
        ids += copy_token_ids(tokenizer, content[a:b])
        cut = start + b
    ids += chat_token_ids(tokenizer, chat, start=cut)
    if tokenizer.eos_token_id in ids:  # drop what the template writes after end-of-turn
        ids = ids[: ids.index(tokenizer.eos_token_id) + 1]
    return ids if tokenizer.decode(ids) == tokenizer.decode(usual) else usual
