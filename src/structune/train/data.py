"""Training data: conversations in, token ids with assistant-only labels out.

A training example is a chat conversation whose last turn is the assistant's answer.
The prompt part is rendered with a generation prompt and tokenized on its own by
`chat_token_ids`, exactly as at inference (message contents never yield control tokens),
and the answer tokens follow; only the answer (up to and including the end-of-turn token)
carries loss. Batches are padded to their longest member, not to a fixed length, and can
be grouped by length to pad less (`training_batches`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from structune.errors import UserError
from structune.hashing import content_hash
from structune.messages import Message
from structune.models.chat import (
    RenderedChat,
    chat_token_ids,
    render_chat,
    render_chat_contents,
)
from structune.train.copies import copied_values, copy_token_ids
from structune.train.decisions import list_decisions, token_weights

IGNORE_INDEX = -100  # labels with this value carry no loss (PyTorch's cross-entropy default)


@dataclass(frozen=True)
class TokenizedExample:
    """A conversation's token ids, its labels (`IGNORE_INDEX` outside the answer) and, where
    some answer tokens weigh more in the loss, a weight per token (None: all 1.0)."""

    input_ids: list[int]
    labels: list[int]
    weights: list[float] | None = None


def dataset_hash(conversations: Sequence[Sequence[Message]]) -> str:
    return content_hash([list(c) for c in conversations], length=16)


def tokenize_conversation(
    tokenizer: Any,
    messages: Sequence[Message],
    *,
    max_length: int,
    decision_weight: float = 1.0,
    aligned_copies: bool = False,
) -> TokenizedExample:
    """Token ids of a whole conversation; labels only on the final assistant answer.

    Where the answer message has `learn_from`, the answer tokens that lie wholly before that
    character carry no loss either: a prefix given, not learned (`structune.train.recovery`).
    With `decision_weight` other than 1, the answer tokens that decide a JSON list's length
    (`structune.train.decisions`) weigh that much in the loss. With `aligned_copies`, the
    answer's string values copied from the prompt are cut as the prompt cuts them
    (`structune.train.copies`).
    """
    if not messages or messages[-1]["role"] != "assistant":
        raise UserError("a training conversation must end with an assistant message")
    prompt = render_chat(tokenizer, messages[:-1], add_generation_prompt=True)
    full = render_chat_contents(tokenizer, messages, add_generation_prompt=False)
    if not full.text.startswith(prompt):
        raise UserError(
            "the chat template renders a conversation differently from its prompt, so the "
            "answer cannot be located; use a model whose template extends the prompt"
        )
    # The two parts are tokenized apart, the prompt exactly as inference tokenizes it.
    prompt_ids = chat_token_ids(tokenizer, full, end=len(prompt))
    answer_ids = chat_token_ids(tokenizer, full, start=len(prompt))
    if aligned_copies:
        answer_ids = _aligned_answer_ids(
            tokenizer, full, len(prompt), messages[-1]["content"], answer_ids
        )
    if tokenizer.eos_token_id in answer_ids:  # drop what the template writes after end-of-turn
        answer_ids = answer_ids[: answer_ids.index(tokenizer.eos_token_id) + 1]
    if len(prompt_ids) + len(answer_ids) > max_length:
        # Cutting it would teach the model to stop mid-answer, without end-of-turn.
        raise UserError(
            f"a training example is {len(prompt_ids) + len(answer_ids)} tokens "
            f"({len(prompt_ids)} prompt), over max_length={max_length}; raise max_length or "
            "shorten the prompt"
        )
    labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids
    if "learn_from" in messages[-1]:
        if aligned_copies:
            raise UserError("a given answer prefix (learn_from) cannot train with aligned_copies")
        given = _given_tokens(tokenizer, full.text[len(prompt) :], answer_ids, messages[-1])
        labels[len(prompt_ids) : len(prompt_ids) + given] = [IGNORE_INDEX] * given
    if decision_weight == 1.0:
        return TokenizedExample(prompt_ids + answer_ids, labels)
    answer_text = full.text[len(prompt) :]
    weights = _decision_weights(
        tokenizer, answer_text, answer_ids, messages[-1]["content"], decision_weight
    )
    if weights is None:
        raise UserError(
            "decision weights need a fast tokenizer that tokenizes the answer as training does "
            "and a chat template that writes the answer as it is; train this model without "
            "--decision-weight"
        )
    return TokenizedExample(prompt_ids + answer_ids, labels, [1.0] * len(prompt_ids) + weights)


def _aligned_answer_ids(
    tokenizer: Any, full: RenderedChat, prompt_end: int, content: str, canonical: list[int]
) -> list[int]:
    """The answer's token ids with its copied string values cut as the prompt cuts them;
    `canonical` where the answer is not found as written or would decode otherwise."""
    start = full.text.find(content, prompt_end)
    if start < 0:
        return canonical
    ids: list[int] = []
    cut = prompt_end
    for a, b in copied_values(content, full.text[:prompt_end]):
        ids += chat_token_ids(tokenizer, full, start=cut, end=start + a)
        ids += copy_token_ids(tokenizer, content[a:b])
        cut = start + b
    ids += chat_token_ids(tokenizer, full, start=cut)
    return ids if tokenizer.decode(ids) == tokenizer.decode(canonical) else canonical


def _given_tokens(tokenizer: Any, answer_text: str, answer_ids: list[int], answer: Message) -> int:
    """How many of the answer's tokens end at or before its character `learn_from`: the
    token that holds that character is learned, so the answer is cut where the model's own
    tokens would cut it ('"}]}' as one token, not '"}' given and ']}' learned)."""
    content, learn_from = answer["content"], answer.get("learn_from", 0)
    start = answer_text.find(content)
    if not 0 < learn_from <= len(content) or start < 0 or not getattr(tokenizer, "is_fast", False):
        raise UserError(
            f"a given answer prefix (learn_from={learn_from}) needs a fast tokenizer, a chat "
            f"template that writes the answer as it is and an offset within its "
            f"{len(content)} characters"
        )
    encoded = tokenizer(answer_text, add_special_tokens=False, return_offsets_mapping=True)
    if encoded["input_ids"][: len(answer_ids)] != answer_ids:
        raise UserError(
            "a given answer prefix (learn_from) needs an answer without control-token text"
        )
    offsets = encoded["offset_mapping"][: len(answer_ids)]
    return sum(1 for _, end in offsets if end <= start + learn_from)


def _decision_weights(
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


def training_batches(
    examples: Sequence[TokenizedExample], *, batch_size: int, seed: int, group_by_length: bool
) -> Iterator[list[TokenizedExample]]:
    """Endless batches, each epoch a new shuffle.

    With `group_by_length`, each window of 8 batches' worth of examples is sorted by length
    before it is cut into batches, so that batches hold similar lengths and pad little.
    Faster, but each batch then holds one kind of example (four empty answers, four long
    lists), and on a small dataset the model learns less per step: on the citation set of
    `benchmarks/trainer_vs_hf.py` (10 steps), final answer loss 0.130 grouped against 0.115
    shuffled for a loop of 124 s instead of 148 (seed 0; over seeds 0-2, run with its
    functions by a one-off script, 0.123 against 0.111). Off by default, as in
    transformers' `Trainer` (`group_by_length`).
    """
    rng = random.Random(seed)
    window = batch_size * 8 if group_by_length else batch_size
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            if group_by_length:
                chunk.sort(key=lambda i: len(examples[i].input_ids))
            batches = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
            rng.shuffle(batches)
            for batch in batches:
                yield [examples[i] for i in batch]


def collate(batch: Sequence[TokenizedExample], *, pad_token_id: int) -> dict[str, Any]:
    """Right-pad a batch to its longest example: tensors of shape (batch, longest), with
    `weights` where an example has them."""
    import torch

    longest = max(len(e.input_ids) for e in batch)
    input_ids = torch.full((len(batch), longest), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), longest), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), longest), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention_mask[row, :n] = 1
    tensors = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
    if any(example.weights is not None for example in batch):
        tensors["weights"] = torch.ones((len(batch), longest))
        for row, example in enumerate(batch):
            if example.weights is not None:
                tensors["weights"][row, : len(example.weights)] = torch.tensor(example.weights)
    return tensors
